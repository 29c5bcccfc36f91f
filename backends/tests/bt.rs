//! Tests of the binary-translation backend: tiny static programs assembled here run under the
//! translator, in this process, without privileges.

mod common;

use common::{crashed, elf, exit_with, Level, BASE, DATA};
use iced_x86::code_asm::*;
use std::time::Duration;
use vbench_backends::bt::BtBackend;
use vbench_backends::{Backend, Invocation, Outcome, Program};
use vbench_results::Exit;

/// Whether the translator can run here (skips only as `vbench_testkit::require_or_skip` allows).
fn usable() -> bool {
    Level::Bt.usable()
}

fn elf_raw(code: &[u8], data: &[u8]) -> Vec<u8> {
    vbench_backends::tiny_elf::build(code, data)
}

fn run_for(image: Vec<u8>, timeout_ms: u64) -> Outcome {
    let p = Program::from_bytes("guest", image).unwrap();
    let mut inv = Invocation::new(p, vec![]);
    inv.timeout = Some(Duration::from_millis(timeout_ms));
    BtBackend.run(&inv).unwrap()
}

fn run(image: Vec<u8>) -> Outcome {
    run_for(image, 20_000)
}

#[test]
fn exit_status_counters_and_startup() {
    if !usable() {
        return;
    }
    let o = run(elf(
        |a| {
            a.mov(eax, 39)?;
            a.syscall()?;
            a.mov(edi, 42)?;
            a.mov(eax, 231)?;
            a.syscall()
        },
        &[],
    ));
    assert_eq!(o.sample.exit, Exit::Code { code: 42 });
    let c = &o.sample.counters;
    assert!(c["bt.blocks_translated"] >= 2, "{c:?}");
    assert!(c["bt.cache_bytes"] > 0);
    // getpid is answered in the code cache; exit_group leaves for the dispatcher
    assert_eq!(c["bt.syscalls_in_cache"], 1, "{c:?}");
    assert_eq!(c["bt.emulated.syscall"], 1, "{c:?}");
    assert!(c["bt.dispatcher_entries"] >= 2);
    assert!(o.sample.startup_ns.unwrap() > 0);
}

#[test]
fn write_to_stdout_through_a_loop_calls_and_returns() {
    if !usable() {
        return;
    }
    // write "hello\n" three times from a called function (rbx counts down), then once more
    // through an indirect call whose target is in memory
    let mut a = CodeAssembler::new(64).unwrap();
    let mut f = a.create_label();
    let mut top = a.create_label();
    a.mov(ebx, 3).unwrap();
    a.set_label(&mut top).unwrap();
    a.call(f).unwrap();
    a.dec(ebx).unwrap();
    a.jnz(top).unwrap();
    a.mov(rax, DATA + 8).unwrap();
    a.call(qword_ptr(rax)).unwrap();
    a.mov(edi, 0).unwrap();
    a.mov(eax, 231).unwrap();
    a.syscall().unwrap();
    a.set_label(&mut f).unwrap();
    a.mov(eax, 1).unwrap();
    a.mov(edi, 1).unwrap();
    a.mov(rsi, DATA).unwrap();
    a.mov(edx, 6).unwrap();
    a.syscall().unwrap();
    a.ret().unwrap();
    let r = a
        .assemble_options(
            BASE + 0x78,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .unwrap();
    let f_addr = r.label_ip(&f).unwrap();
    let data = [b"hello\n\0\0".as_slice(), &f_addr.to_le_bytes()].concat();
    let o = run(elf_raw(&r.inner.code_buffer, &data));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    assert_eq!(o.stdout, b"hello\n".repeat(4));
    let c = &o.sample.counters;
    assert!(c["bt.links"] >= 1, "{c:?}");
    assert!(
        c["bt.indirect_hits"] + c["bt.indirect_misses"] >= 4,
        "{c:?}"
    );
}

#[test]
fn jumping_outside_executable_memory_is_a_segfault_at_the_target() {
    if !usable() {
        return;
    }
    // jump to a non-executable address: the dispatcher refuses to translate it
    let o = run(elf(
        |a| {
            a.mov(rax, 0x1234_5000u64)?;
            a.jmp(rax)
        },
        &[],
    ));
    crashed(&o, libc::SIGSEGV, &["guest rip 0x12345000"]);
}

#[test]
fn ud2_int3_int80_hlt_and_far_transfers_are_the_guests_faults() {
    if !usable() {
        return;
    }
    let at = format!("guest rip {:#x}", BASE + 0x79);
    let o = run(elf(|a| a.nop().and_then(|_| a.ud2()), &[]));
    crashed(&o, libc::SIGILL, &["ud2", &at]);
    let o = run(elf(|a| a.nop().and_then(|_| a.int3()), &[]));
    crashed(&o, libc::SIGTRAP, &["int3", &at]);
    let o = run(elf(|a| a.nop().and_then(|_| a.int(0x80)), &[]));
    crashed(&o, libc::SIGSEGV, &["int 0x80", &at]);
    let o = run(elf(|a| a.nop().and_then(|_| a.hlt()), &[]));
    crashed(&o, libc::SIGSEGV, &["hlt", &at]);
    let o = run(elf(|a| a.nop().and_then(|_| a.out(dx, al)), &[]));
    crashed(&o, libc::SIGSEGV, &["out", &at]);
    let o = run(elf(
        |a| a.nop().and_then(|_| a.db(&[0x48, 0xff, 0x2c, 0x24])),
        &[],
    ));
    crashed(&o, libc::SIGSEGV, &["far transfer", &at]);
    let o = run(elf(|a| a.nop().and_then(|_| a.db(&[0x48, 0xcb])), &[]));
    crashed(&o, libc::SIGSEGV, &["far transfer", &at]);
}

#[test]
fn garbage_bytes_are_an_invalid_opcode_of_the_guest() {
    if !usable() {
        return;
    }
    // nop; then bytes that decode to nothing valid in 64-bit mode
    let o = run(elf_raw(&[0x90, 0x06, 0x06], &[]));
    crashed(
        &o,
        libc::SIGILL,
        &["invalid opcode", &format!("guest rip {:#x}", BASE + 0x79)],
    );
}

#[test]
fn cpuid_shows_the_hypervisor_bit_and_vbench_leaf() {
    if !usable() {
        return;
    }
    // exit status = hypervisor bit (1) + 2 * (leaf 0x40000000 ebx == "vben")
    let o = run(elf(
        |a| {
            a.mov(eax, 1)?;
            a.cpuid()?;
            a.shr(ecx, 31)?;
            a.mov(r12d, ecx)?;
            a.mov(eax, 0x4000_0000)?;
            a.cpuid()?;
            a.xor(r13d, r13d)?;
            a.cmp(ebx, i32::from_le_bytes(*b"vben"))?;
            a.sete(r13b)?;
            a.lea(rdi, ptr(r12 + r13 * 2))?;
            a.mov(eax, 231)?;
            a.syscall()
        },
        &[],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 3 },
        "{}",
        o.sample.stderr_tail
    );
    assert_eq!(o.sample.counters["bt.emulated.cpuid"], 2);
}

#[test]
fn popf_keeps_a_virtual_interrupt_flag_and_rdtsc_is_virtual() {
    if !usable() {
        return;
    }
    // clear IF with popf and read it back: natively it stays set at CPL3
    let o = run(elf(
        |a| {
            a.pushfq()?;
            a.pop(rax)?;
            a.and(rax, !0x200i32)?;
            a.push(rax)?;
            a.popfq()?;
            a.pushfq()?;
            a.pop(rbx)?;
            a.shr(rbx, 9)?;
            a.and(ebx, 1)?; // 0: IF reads back clear
            a.rdtsc()?;
            a.shl(rdx, 32)?;
            a.or(rax, rdx)?;
            a.mov(rcx, 1u64 << 50)?; // a virtual TSC starts near zero
            a.cmp(rax, rcx)?;
            a.setb(bl)?;
            a.movzx(edi, bl)?;
            a.mov(eax, 231)?;
            a.syscall()
        },
        &[],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 1 },
        "{}",
        o.sample.stderr_tail
    );
    let c = &o.sample.counters;
    assert_eq!(c["bt.emulated.pushfq"], 2);
    assert_eq!(c["bt.emulated.popfq"], 1);
    assert_eq!(c["bt.emulated.rdtsc"], 1);
}

#[test]
fn sgdt_sees_a_virtual_table() {
    if !usable() {
        return;
    }
    let o = run(elf(
        |a| {
            a.mov(rax, DATA)?;
            a.sgdt(ptr(rax))?;
            a.movzx(edi, word_ptr(rax))?; // the limit
            a.mov(eax, 231)?;
            a.syscall()
        },
        &[0u8; 16],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0x7f },
        "{}",
        o.sample.stderr_tail
    );
}

#[test]
fn sse_state_survives_exits() {
    if !usable() {
        return;
    }
    // xmm0 = 5.0; a syscall (dispatcher runs Rust code); cvttsd2si edi, xmm0
    let o = run(elf(
        |a| {
            a.mov(eax, 5)?;
            a.cvtsi2sd(xmm0, eax)?;
            a.mov(eax, 39)?;
            a.syscall()?;
            a.cvttsd2si(edi, xmm0)?;
            a.mov(eax, 231)?;
            a.syscall()
        },
        &[],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 5 },
        "{}",
        o.sample.stderr_tail
    );
}

#[test]
fn ymm_registers_survive_exits() {
    if !usable() || !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    // ymm0 = all ones; a syscall and a block link in between; vptest: CF = all ones still
    let o = run(elf(
        |a| {
            a.vpcmpeqb(ymm0, ymm0, ymm0)?;
            a.mov(eax, 39)?;
            a.syscall()?;
            a.vpcmpeqb(ymm1, ymm1, ymm1)?;
            a.vptest(ymm0, ymm1)?;
            a.setb(dil)?;
            a.movzx(edi, dil)?;
            a.mov(eax, 231)?;
            a.syscall()
        },
        &[],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 1 },
        "{}",
        o.sample.stderr_tail
    );
}

/// Runs a static program (a file) under the translator and natively; returns both stdouts.
fn both(prog: &str, args: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let inv = Invocation::new(
        Program::Path(prog.into()),
        args.iter().map(std::ffi::OsString::from).collect(),
    );
    let o = BtBackend.run(&inv).unwrap();
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{args:?}: {}",
        o.sample.stderr_tail
    );
    let native = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (o.stdout, native.stdout)
}

#[test]
fn busybox_static_applets_match_native_byte_for_byte() {
    let bb = "/bin/busybox";
    if !usable() || !vbench_testkit::require_or_skip("busybox", vbench_testkit::file(bb)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("in.bin");
    let txt = dir.path().join("in.txt");
    let mut x = 0x1234_5678u32;
    let bytes: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(&bin, &bytes).unwrap();
    let text: String = bytes
        .chunks(7)
        .map(|c| format!("{} line {}\n", c[0] as u32 * 7919 % 1000, c[1]))
        .collect();
    std::fs::write(&txt, text).unwrap();
    let (bin, txt) = (bin.to_str().unwrap(), txt.to_str().unwrap());
    for args in [
        vec!["sha256sum", bin],
        vec!["md5sum", bin],
        vec!["sort", txt],
        vec!["sort", "-n", txt],
        vec!["wc", txt],
        vec!["sed", "s/line/LINE/g", txt],
        vec!["gzip", "-c", txt],
    ] {
        let (bt, native) = both(bb, &args);
        assert!(!native.is_empty(), "{args:?}");
        assert!(bt == native, "{args:?}: output differs from native");
    }
}

#[test]
fn self_modifying_code_runs_in_its_new_form() {
    if !usable() {
        return;
    }
    // ebx += imm of `mov eax, 2`; then the program rewrites that immediate to 40 and loops:
    // 2 + 40 = 42 only when the rewritten instruction is translated again
    let o = run(elf(
        |a| {
            let mut patched = a.create_label();
            let mut done = a.create_label();
            a.xor(ebx, ebx)?;
            a.xor(ecx, ecx)?;
            a.set_label(&mut patched)?;
            a.mov(eax, 2)?;
            a.add(ebx, eax)?;
            a.inc(ecx)?;
            a.cmp(ecx, 2)?;
            a.je(done)?;
            a.lea(rdx, ptr(patched))?;
            a.mov(dword_ptr(rdx + 1), 40)?;
            a.jmp(patched)?;
            a.set_label(&mut done)?;
            exit_with(a, rbx)
        },
        &[],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 42 },
        "{}",
        o.sample.stderr_tail
    );
    assert!(o.sample.counters["bt.invalidations"] >= 1);
}

#[test]
fn pinning_applies_to_the_run_only() {
    if !usable() {
        return;
    }
    let p = Program::from_bytes("guest", elf(|a| exit_with(a, rsp).map(|_| ()), &[])).unwrap();
    let mut inv = Invocation::new(p, vec![]);
    inv.cpu = Some(0);
    let before = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let o = BtBackend.run(&inv).unwrap();
    assert!(matches!(o.sample.exit, Exit::Code { .. }));
    let after = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let allowed = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Cpus_allowed_list"))
            .unwrap()
            .to_string()
    };
    assert_eq!(allowed(&before), allowed(&after));
    inv.cpu = Some(100_000);
    assert!(BtBackend.run(&inv).is_err());
}

#[test]
fn descriptor_table_reads_see_the_virtual_machine() {
    if !usable() {
        return;
    }
    // smsw, str, sldt into registers; sidt into memory; exit(smsw_low8 ^ str ^ sldt ^ idt_limit_low8)
    let o = run(elf(
        |a| {
            a.smsw(eax)?;
            a.str(ebx)?;
            a.sldt(ecx)?;
            a.mov(rdx, DATA)?;
            a.sidt(ptr(rdx))?;
            a.movzx(edx, byte_ptr(rdx))?;
            a.xor(eax, ebx)?;
            a.xor(eax, ecx)?;
            a.xor(eax, edx)?;
            a.movzx(edi, al)?;
            a.mov(eax, 231)?;
            a.syscall()
        },
        &[0u8; 16],
    ));
    // 0x33 ^ 0x40 ^ 0 ^ 0xff
    assert_eq!(
        o.sample.exit,
        Exit::Code {
            code: 0x33 ^ 0x40 ^ 0xff
        },
        "{}",
        o.sample.stderr_tail
    );
    for k in ["smsw", "str", "sldt", "sidt"] {
        assert_eq!(o.sample.counters[&format!("bt.emulated.{k}")], 1, "{k}");
    }
}

#[test]
fn rdtscp_sysenter_and_int_n() {
    if !usable() {
        return;
    }
    let o = run(elf(
        |a| {
            a.mov(ecx, 77)?;
            a.rdtscp()?; // ecx = TSC_AUX = 0
            exit_with(a, rcx)
        },
        &[],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    let at = format!("guest rip {:#x}", BASE + 0x79);
    let o = run(elf(|a| a.nop().and_then(|_| a.sysenter()), &[]));
    crashed(&o, libc::SIGILL, &["sysenter", &at]);
    let o = run(elf(|a| a.nop().and_then(|_| a.int(0x81)), &[]));
    crashed(&o, libc::SIGSEGV, &["int", &at]);
}

#[test]
fn code_written_to_anonymous_memory_runs_and_can_be_patched() {
    if !usable() {
        return;
    }
    // page = mmap(RWX); page <- mov eax, 1; ret; r12 = page(); page[1] = 2; exit(r12 * 10 + page())
    let o = run(elf(
        |a| {
            a.xor(edi, edi)?;
            a.mov(esi, 4096)?;
            a.mov(edx, 7)?;
            a.mov(r10d, 0x22)?;
            a.mov(r8, -1i64)?;
            a.xor(r9d, r9d)?;
            a.mov(eax, 9)?;
            a.syscall()?;
            a.mov(rbx, rax)?;
            a.mov(rcx, 0xc300_0000_01b8_u64)?;
            a.mov(qword_ptr(rbx), rcx)?;
            a.call(rbx)?;
            a.imul_3(r12d, eax, 10)?;
            a.mov(byte_ptr(rbx + 1), 2)?;
            a.call(rbx)?;
            a.add(eax, r12d)?;
            exit_with(a, rax)
        },
        &[],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 12 },
        "{}",
        o.sample.stderr_tail
    );
    assert!(o.sample.counters["bt.invalidations"] >= 1);
}

#[test]
fn freed_memory_comes_back_zeroed_and_untouched_memory_is_not_resident() {
    if !usable() {
        return;
    }
    // p = mmap(64 MiB); p[0] = p[64 MiB - 1] = 7; munmap(p); q = mmap(64 MiB) (the same range);
    // exit(q[0] + q[64 MiB - 1] + (q == p ? 100 : 0))
    let len = 64u32 << 20;
    let mmap = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.xor(edi, edi)?;
        a.mov(esi, len)?;
        a.mov(edx, 3)?;
        a.mov(r10d, 0x22)?;
        a.mov(r8, -1i64)?;
        a.xor(r9d, r9d)?;
        a.mov(eax, 9)?;
        a.syscall()
    };
    let o = run(elf(
        |a| {
            mmap(a)?;
            a.mov(rbx, rax)?;
            a.mov(byte_ptr(rbx), 7)?;
            a.mov(byte_ptr(rbx + (len - 1)), 7)?;
            a.mov(rdi, rbx)?;
            a.mov(esi, len)?;
            a.mov(eax, 11)?;
            a.syscall()?;
            mmap(a)?;
            a.xor(r12d, r12d)?;
            a.cmp(rax, rbx)?;
            let mut differ = a.create_label();
            a.jne(differ)?;
            a.mov(r12d, 100)?;
            a.set_label(&mut differ)?;
            a.movzx(ecx, byte_ptr(rax))?;
            a.add(r12d, ecx)?;
            a.movzx(ecx, byte_ptr(rax + (len - 1)))?;
            a.add(r12d, ecx)?;
            exit_with(a, r12)
        },
        &[],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 100 },
        "the same range, read back as zero: {}",
        o.sample.stderr_tail
    );
    // 64 MiB were mapped twice and touched at two pages each time: freed pages went back to
    // the host, so the guest ends with its image, its stack and two pages resident
    let resident = o.sample.counters["bt.guest_resident_bytes_at_exit"];
    assert!(resident < 1 << 20, "{resident} bytes resident at exit");
}

#[test]
fn emulated_register_writes_keep_or_zero_extend_the_rest_as_the_cpu_does() {
    if !usable() {
        return;
    }
    // Each emulated instruction writes a register of one width over a pattern: a 16-bit write
    // keeps bits 16..64, a 32-bit write zero-extends, a 64-bit write replaces; the registers
    // are then stored and written to stdout.
    const P: u64 = 0x1122_3344_5566_7788;
    let o = run(elf(
        |a| {
            for r in [rax, rbx, rcx, rdx, rdi, r8, r9] {
                a.mov(r, P)?;
            }
            a.smsw(ax)?;
            a.smsw(ebx)?;
            a.str(cx)?;
            a.sldt(edx)?;
            a.mov(rsi, 0x7fff_1234_5678u64)?;
            a.wrfsbase(rsi)?;
            a.rdfsbase(edi)?;
            a.rdfsbase(r8)?;
            a.smsw(r9)?;
            a.mov(r10, DATA)?;
            for (k, r) in [rax, rbx, rcx, rdx, rdi, r8, r9].into_iter().enumerate() {
                a.mov(qword_ptr(r10 + 8 * k as i32), r)?;
            }
            a.mov(eax, 1)?;
            a.mov(edi, 1)?;
            a.mov(rsi, r10)?;
            a.mov(edx, 56)?;
            a.syscall()?;
            a.mov(edi, 0)?;
            a.mov(eax, 231)?;
            a.syscall()
        },
        &[0u8; 56],
    ));
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    let got: Vec<u64> = o
        .stdout
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want = [
        (P & !0xffff) | 0x33, // smsw ax
        0x8005_0033,          // smsw ebx
        (P & !0xffff) | 0x40, // str cx
        0,                    // sldt edx
        0x1234_5678,          // rdfsbase edi
        0x7fff_1234_5678,     // rdfsbase r8
        0x8005_0033,          // smsw r9
    ];
    assert_eq!(got, want, "{got:#x?}");
}
