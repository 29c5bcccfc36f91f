//! The same small programs on bt and on kvm: both levels must give what a native process gets
//! (exit statuses, output, errnos, the signal a fault kills it with), each naming the fault in
//! its own terms. kvm needs /dev/kvm; every test skips only as `require_or_skip` allows.

mod common;

use common::*;
use iced_x86::code_asm::*;
use std::time::{Duration, Instant};
use vbench_backends::{Invocation, Program};
use vbench_results::Exit;

/// Runs `check` on every usable level.
fn on_each(check: impl Fn(Level)) {
    for level in Level::ALL {
        if level.usable() {
            check(level);
        }
    }
}

#[test]
fn exit_status_after_a_syscall() {
    on_each(|l| {
        let o = run(
            l,
            elf(
                |a| {
                    a.mov(eax, 39)?; // getpid
                    a.syscall()?;
                    a.mov(edi, 42)?;
                    a.mov(eax, 231)?;
                    a.syscall()
                },
                &[],
            ),
        );
        assert_eq!(o.sample.exit, Exit::Code { code: 42 }, "{l:?}");
        assert!(o.sample.startup_ns.unwrap() > 0, "{l:?}");
    });
}

#[test]
fn write_to_stdout_is_captured() {
    on_each(|l| {
        let o = run(
            l,
            elf(
                |a| {
                    a.mov(eax, 1)?;
                    a.mov(edi, 1)?;
                    a.mov(rsi, DATA)?;
                    a.mov(edx, 6)?;
                    a.syscall()?;
                    exit_with(a, rax) // the byte count
                },
                b"hello\n",
            ),
        );
        assert_eq!(o.sample.exit, Exit::Code { code: 6 }, "{l:?}");
        assert_eq!(o.stdout, b"hello\n", "{l:?}");
        assert_eq!(o.sample.stdout_bytes, 6, "{l:?}");
    });
}

#[test]
fn a_page_fault_kills_with_sigsegv_naming_rip_and_address() {
    on_each(|l| {
        let o = run(l, elf(|a| a.mov(rax, qword_ptr(0x10)), &[]));
        let rip = format!("{ENTRY:#x}");
        match l {
            Level::Bt => crashed(
                &o,
                libc::SIGSEGV,
                &[&format!("guest rip {rip}"), "address 0x10"],
            ),
            Level::Kvm => crashed(
                &o,
                libc::SIGSEGV,
                &["#PF", "vector 14", &format!("rip {rip}"), "address 0x10"],
            ),
        }
    });
}

#[test]
fn ud2_is_sigill_and_hlt_is_sigsegv() {
    on_each(|l| {
        let o = run(l, elf(|a| a.ud2(), &[]));
        crashed(
            &o,
            libc::SIGILL,
            &[if l == Level::Kvm { "#UD" } else { "ud2" }],
        );
        let o = run(l, elf(|a| a.hlt(), &[]));
        crashed(
            &o,
            libc::SIGSEGV,
            &[if l == Level::Kvm { "#GP" } else { "hlt" }],
        );
    });
}

#[test]
fn division_by_zero_is_sigfpe() {
    on_each(|l| {
        let o = run(
            l,
            elf(
                |a| {
                    a.xor(ecx, ecx)?;
                    a.div(ecx)
                },
                &[],
            ),
        );
        crashed(&o, libc::SIGFPE, &[]);
    });
}

#[test]
fn a_runaway_guest_is_stopped_by_the_timeout_and_the_next_run_works() {
    on_each(|l| {
        let t = Instant::now();
        let spin = elf(
            |a| {
                let mut top = a.create_label();
                a.set_label(&mut top)?;
                a.jmp(top)
            },
            &[],
        );
        let o = try_run(l, spin, 300).unwrap();
        assert_eq!(o.sample.exit, Exit::Timeout { after_ms: 300 }, "{l:?}");
        assert!(t.elapsed() < Duration::from_secs(10), "{l:?}");
        let o = run(l, elf(|a| exit_with(a, rsp), &[]));
        assert!(matches!(o.sample.exit, Exit::Code { .. }), "{l:?}");
    });
}

/// A guest that waits in a system call (pause, a futex wait with no timeout: the backend waits
/// on the host for it) is stopped by the timeout as a spinning one is, also when it has an
/// interval timer of its own that fires meanwhile.
#[test]
fn a_guest_blocked_in_a_call_is_stopped_by_the_timeout() {
    on_each(|l| {
        for with_timer in [false, true] {
            let t = Instant::now();
            let wait = elf(
                |a| {
                    if with_timer {
                        // SIGALRM ignored, then setitimer(ITIMER_REAL, every 50 ms)
                        a.mov(qword_ptr(DATA), 1)?; // SIG_IGN
                        a.mov(eax, 13)?;
                        a.mov(edi, 14)?;
                        a.mov(esi, DATA as u32)?;
                        a.xor(edx, edx)?;
                        a.mov(r10d, 8)?;
                        a.syscall()?;
                        a.mov(qword_ptr(DATA + 32), 0)?;
                        a.mov(qword_ptr(DATA + 40), 50_000)?;
                        a.mov(qword_ptr(DATA + 48), 0)?;
                        a.mov(qword_ptr(DATA + 56), 50_000)?;
                        a.mov(eax, 38)?;
                        a.xor(edi, edi)?;
                        a.mov(esi, (DATA + 32) as u32)?;
                        a.xor(edx, edx)?;
                        a.syscall()?;
                    }
                    // futex(&word, FUTEX_WAIT, 0, NULL): waits for ever
                    a.mov(eax, 202)?;
                    a.mov(edi, (DATA + 64) as u32)?;
                    a.xor(esi, esi)?;
                    a.xor(edx, edx)?;
                    a.xor(r10d, r10d)?;
                    a.syscall()?;
                    a.mov(eax, 34)?; // pause
                    a.syscall()?;
                    exit_with(a, rax)
                },
                &[0u8; 72],
            );
            let o = try_run(l, wait, 300).unwrap();
            assert_eq!(
                o.sample.exit,
                Exit::Timeout { after_ms: 300 },
                "{l:?}, timer {with_timer}: {}",
                o.sample.stderr_tail
            );
            assert!(t.elapsed() < Duration::from_secs(10), "{l:?}");
        }
    });
}

#[test]
fn a_pointer_outside_guest_memory_is_efault() {
    on_each(|l| {
        let o = run(
            l,
            elf(
                |a| {
                    a.mov(eax, 1)?;
                    a.mov(edi, 1)?;
                    a.mov(rsi, 0x7fff_0000_0000u64)?;
                    a.mov(edx, 16)?;
                    a.syscall()?;
                    exit_with_errno(a)
                },
                &[],
            ),
        );
        assert_eq!(o.sample.exit, Exit::Code { code: libc::EFAULT }, "{l:?}");
    });
}

#[test]
fn an_unsupported_syscall_is_enosys_and_named() {
    on_each(|l| {
        let o = run(
            l,
            elf(
                |a| {
                    for nr in [56, 56, 600] {
                        a.mov(eax, nr)?; // clone twice, then a number no table has
                        a.syscall()?;
                    }
                    exit_with_errno(a)
                },
                &[],
            ),
        );
        assert_eq!(o.sample.exit, Exit::Code { code: libc::ENOSYS }, "{l:?}");
        assert!(
            o.sample.stderr_tail.contains(
                "unsupported syscalls answered with ENOSYS: clone (56) x 2, syscall 600 x 1"
            ),
            "{l:?}: {}",
            o.sample.stderr_tail
        );
    });
}

#[test]
fn arch_prctl_sets_the_fs_base() {
    on_each(|l| {
        // arch_prctl(ARCH_SET_FS, DATA); exit(fs:[0])
        let o = run(
            l,
            elf(
                |a| {
                    a.mov(eax, 158)?;
                    a.mov(edi, 0x1002)?;
                    a.mov(rsi, DATA)?;
                    a.syscall()?;
                    a.mov(edi, dword_ptr(0).fs())?;
                    a.mov(eax, 231)?;
                    a.syscall()
                },
                &[77, 0, 0, 0],
            ),
        );
        assert_eq!(
            o.sample.exit,
            Exit::Code { code: 77 },
            "{l:?}: {}",
            o.sample.stderr_tail
        );
    });
}

/// Bad programs are refused with a reason: not an ELF, or a dynamically linked one whose ELF
/// interpreter is missing (both levels load the interpreter of one that has it).
#[test]
fn malformed_programs_and_missing_interpreters_are_refused_with_a_reason() {
    on_each(|l| {
        let b = l.backend();
        let p = Program::from_bytes("junk", b"not an elf at all".to_vec()).unwrap();
        let e = b.run(&Invocation::new(p, vec![])).unwrap_err();
        assert!(e.to_string().contains("not an ELF"), "{l:?}: {e}");
        // /bin/ls naming an interpreter that is not there (same length, one byte changed)
        let mut ls = std::fs::read("/bin/ls").unwrap();
        let ld = b"/lib64/ld-linux-x86-64.so.2\0";
        let at = ls
            .windows(ld.len())
            .position(|w| w == ld)
            .expect("ls names ld.so");
        ls[at + ld.len() - 2] = b'X';
        let p = Program::from_bytes("ls-x", ls).unwrap();
        let e = b.run(&Invocation::new(p, vec![])).unwrap_err().to_string();
        assert!(
            e.contains("its ELF interpreter /lib64/ld-linux-x86-64.so.X")
                && e.contains("No such file"),
            "{l:?}: {e}"
        );
    });
}

#[test]
fn every_sample_records_cpu_time_and_the_pinned_cpu() {
    on_each(|l| {
        let cpu = vbench_backends::session::pin::allowed_cpus()[0];
        let p = Program::from_bytes("g", elf(|a| exit_with(a, rsp), &[])).unwrap();
        let mut inv = Invocation::new(p, vec![]);
        inv.cpu = Some(cpu);
        let o = l.backend().run(&inv).unwrap();
        assert_eq!(o.sample.cpu, Some(cpu), "{l:?}");
        assert!(o.sample.wall_ns > 0, "{l:?}");
    });
}

#[test]
fn anonymous_mmap_ignores_the_fd_as_linux_does() {
    // glibc and Go pass fd as the int -1: 0xffffffff in r8, not the 64-bit -1
    on_each(|l| {
        for fd in [u64::MAX, 0xffff_ffff, 3] {
            let o = run(
                l,
                elf(
                    |a| {
                        a.mov(eax, 9)?; // mmap(0, 8192, RW, PRIVATE|ANONYMOUS, fd, 0)
                        a.xor(edi, edi)?;
                        a.mov(esi, 8192)?;
                        a.mov(edx, 3)?;
                        a.mov(r10d, 0x22)?;
                        a.mov(r8, fd)?;
                        a.xor(r9d, r9d)?;
                        a.syscall()?;
                        a.mov(byte_ptr(rax + 4096), 7)?; // the memory is there and writable
                        a.movzx(edi, byte_ptr(rax + 4096))?;
                        a.mov(eax, 231)?;
                        a.syscall()
                    },
                    &[],
                ),
            );
            assert_eq!(
                o.sample.exit,
                Exit::Code { code: 7 },
                "{l:?} fd {fd:#x}: {}",
                o.sample.stderr_tail
            );
        }
    });
}

#[test]
fn time_and_gettimeofday_give_the_wall_clock() {
    // before: ENOSYS, so `date` printed 1970. The guest exits with (time() - seconds of
    // gettimeofday), which is 0 or 1 when both read the same host wall clock; the test also
    // checks the value time() stored against the host's clock.
    on_each(|l| {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let o = run(
            l,
            elf(
                |a| {
                    a.mov(eax, libc::SYS_gettimeofday as u32)?;
                    a.mov(rdi, DATA)?; // struct timeval at DATA
                    a.mov(rsi, DATA + 16)?; // struct timezone at DATA+16
                    a.syscall()?;
                    a.mov(eax, libc::SYS_time as u32)?;
                    a.mov(rdi, DATA + 32)?; // time_t at DATA+32
                    a.syscall()?;
                    a.sub(rax, qword_ptr(DATA))?;
                    a.mov(rdi, rax)?;
                    // print the stored time_t so the test can read it
                    a.mov(eax, 1)?;
                    a.push(rdi)?;
                    a.mov(edi, 1)?;
                    a.mov(rsi, DATA + 32)?;
                    a.mov(edx, 8)?;
                    a.syscall()?;
                    a.pop(rdi)?;
                    a.mov(eax, 231)?;
                    a.syscall()
                },
                &[0xee; 48],
            ),
        );
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            matches!(o.sample.exit, Exit::Code { code: 0 | 1 }),
            "{l:?}: {:?} {}",
            o.sample.exit,
            o.sample.stderr_tail
        );
        let stored = u64::from_le_bytes(o.stdout[..8].try_into().unwrap());
        assert!(
            (before..=after).contains(&stored),
            "{l:?}: {stored} not in {before}..={after}"
        );
    });
}

#[test]
fn getpid_keeps_the_flags_and_sets_rcx_and_r11_as_syscall_does() {
    on_each(|l| {
        // flags set before the syscall survive it (CF, ZF, OF here), rcx is the address after
        // it and r11 holds the flags: exit status = CF | ZF<<1 | OF<<2 | (rcx ok)<<3 |
        // (r11's CF, ZF and OF as before)<<4, and the pid is the same on a second call
        let o = run(
            l,
            elf(
                |a| {
                    let mut after = a.create_label();
                    a.mov(eax, 0x7fff_ffff)?;
                    a.add(eax, 1)?; // OF=1, SF=1, ZF=0, CF=0
                    a.stc()?; // CF=1
                    a.mov(eax, 39)?; // getpid (mov keeps the flags)
                    a.syscall()?;
                    a.set_label(&mut after)?;
                    a.mov(r12, rax)?;
                    a.setc(bl)?;
                    a.seto(r15b)?;
                    a.movzx(r13d, bl)?;
                    a.movzx(r14d, r15b)?;
                    a.shl(r14d, 2)?;
                    a.or(r13d, r14d)?;
                    a.lea(r14, ptr(after))?;
                    a.cmp(rcx, r14)?;
                    a.sete(bl)?;
                    a.movzx(r14d, bl)?;
                    a.shl(r14d, 3)?;
                    a.or(r13d, r14d)?;
                    a.and(r11d, 0x801)?; // OF and CF as syscall saved them
                    a.cmp(r11d, 0x801)?;
                    a.sete(bl)?;
                    a.movzx(r14d, bl)?;
                    a.shl(r14d, 4)?;
                    a.or(r13d, r14d)?;
                    a.mov(eax, 186)?; // gettid: the same id
                    a.syscall()?;
                    a.cmp(rax, r12)?;
                    a.sete(bl)?;
                    a.movzx(r14d, bl)?;
                    a.shl(r14d, 5)?;
                    a.or(r13d, r14d)?;
                    exit_with(a, r13)
                },
                &[],
            ),
        );
        assert_eq!(o.sample.exit, Exit::Code { code: 0b11_1101 }, "{l:?}");
        if l == Level::Bt {
            // getpid only: gettid leaves the cache (each guest thread's is its own)
            assert_eq!(o.sample.counters.get("bt.syscalls_in_cache"), Some(&1));
        }
    });
}

/// rt_sigaction(sig, {handler, SA_SIGINFO|SA_RESTORER, restorer}, NULL, 8), the sigaction
/// built at DATA.
fn sigaction(
    a: &mut CodeAssembler,
    sig: u32,
    handler: CodeLabel,
    restorer: CodeLabel,
) -> Result<(), IcedError> {
    a.lea(rax, ptr(handler))?;
    a.mov(qword_ptr(DATA), rax)?;
    a.mov(qword_ptr(DATA + 8), 0x0400_0004)?;
    a.lea(rax, ptr(restorer))?;
    a.mov(qword_ptr(DATA + 16), rax)?;
    a.mov(eax, 13)?;
    a.mov(edi, sig)?;
    a.mov(esi, DATA as u32)?;
    a.xor(edx, edx)?;
    a.mov(r10d, 8)?;
    a.syscall()
}

/// The restorer at `label`: rt_sigreturn.
fn rt_sigreturn(a: &mut CodeAssembler, label: &mut CodeLabel) -> Result<(), IcedError> {
    a.set_label(label)?;
    a.mov(eax, 15)?;
    a.syscall()
}

#[test]
fn a_guest_signal_handler_sees_the_fault_and_resumes() {
    on_each(|l| {
        // rt_sigaction(SIGSEGV, {handler, SA_SIGINFO|SA_RESTORER, restorer}); load from 0x10;
        // the handler puts si_addr + signo into the saved rbx and resumes past the load
        let o = run(
            l,
            elf(
                |a| {
                    let mut handler = a.create_label();
                    let mut restorer = a.create_label();
                    let mut resume = a.create_label();
                    sigaction(a, 11, handler, restorer)?;
                    a.mov(rax, qword_ptr(0x10))?;
                    a.set_label(&mut resume)?;
                    exit_with(a, rbx)?;
                    a.set_label(&mut handler)?;
                    a.mov(rax, qword_ptr(rsi + 16))?;
                    a.add(rax, rdi)?;
                    a.mov(qword_ptr(rdx + 40 + 11 * 8), rax)?;
                    a.lea(rax, ptr(resume))?;
                    a.mov(qword_ptr(rdx + 40 + 16 * 8), rax)?;
                    a.ret()?;
                    rt_sigreturn(a, &mut restorer)
                },
                &[0u8; 32],
            ),
        );
        assert_eq!(
            o.sample.exit,
            Exit::Code { code: 0x10 + 11 },
            "{l:?}: {}",
            o.sample.stderr_tail
        );
        let delivered = match l {
            Level::Bt => "bt.signals_delivered",
            Level::Kvm => "kvm.signals_delivered",
        };
        assert_eq!(o.sample.counters[delivered], 1, "{l:?}");
    });
}

#[test]
fn popf_setting_the_trap_flag_traps_once_after_the_next_instruction() {
    on_each(|l| {
        // SIGTRAP handler counts in the saved rbx and clears TF in the saved rflags
        let o = run(
            l,
            elf(
                |a| {
                    let mut handler = a.create_label();
                    let mut restorer = a.create_label();
                    sigaction(a, 5, handler, restorer)?;
                    a.xor(ebx, ebx)?;
                    a.pushfq()?;
                    a.or(qword_ptr(rsp), 0x100)?;
                    a.popfq()?;
                    a.nop()?;
                    a.nop()?;
                    a.nop()?;
                    exit_with(a, rbx)?;
                    a.set_label(&mut handler)?;
                    a.add(qword_ptr(rdx + 40 + 11 * 8), 1)?;
                    a.and(qword_ptr(rdx + 40 + 17 * 8), !0x100)?;
                    a.ret()?;
                    rt_sigreturn(a, &mut restorer)
                },
                &[0u8; 32],
            ),
        );
        assert_eq!(
            o.sample.exit,
            Exit::Code { code: 1 },
            "{l:?}: {}",
            o.sample.stderr_tail
        );
    });
}
