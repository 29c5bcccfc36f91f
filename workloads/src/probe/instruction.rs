//! Instruction probes (Popek-Goldberg): x86 instructions that are sensitive but not
//! privileged, CPUID and RDTSC, and privileged ones for contrast; each records what it does at
//! CPL3.

use super::signals::{catch_signals, guarded, trapped, RESUME, SICODE};
use super::*;
use core::arch::{asm, global_asm};
use core::sync::atomic::Ordering::SeqCst;

/// The probes of this family.
pub(super) const PROBES: &[(&str, Impl)] = &[
    ("sgdt", |_, _| sgdt_sidt(false)),
    ("sidt", |_, _| sgdt_sidt(true)),
    ("sldt", |_, _| sldt_str(false)),
    ("smsw", |_, _| smsw()),
    ("str", |_, _| sldt_str(true)),
    ("pushf", |_, _| pushf()),
    ("popf", |_, _| popf()),
    ("lar", |_, _| lar_lsl(false)),
    ("lsl", |_, _| lar_lsl(true)),
    ("verr", |_, _| verr()),
    ("mov_sreg", |_, _| mov_sreg()),
    ("push_pop_sreg", |_, _| push_pop_sreg()),
    ("far_call", |_, _| far_call()),
    ("int3", |_, _| int3()),
    ("cpuid", |_, _| cpuid()),
    ("rdmsr", |_, _| privileged("rdmsr")),
    ("hlt", |_, _| privileged("hlt")),
    ("cli", |_, _| privileged("cli")),
    ("port_in", |_, _| privileged("port_in")),
    ("rdtsc", |_, _| rdtsc()),
];

fn sgdt_sidt(idt: bool) -> Report {
    let name = if idt { "sidt" } else { "sgdt" };
    guarded(name, |t| {
        let mut d = [0u8; 10];
        // SAFETY: stores 10 bytes (limit, base) into d; may trap (UMIP), then resumes after it.
        unsafe {
            if idt {
                guard_asm!("sidt [{p}]", p = in(reg) d.as_mut_ptr());
            } else {
                guard_asm!("sgdt [{p}]", p = in(reg) d.as_mut_ptr());
            }
        }
        let limit = u16::from_le_bytes([d[0], d[1]]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[2..10]);
        let base = u64::from_le_bytes(b);
        // The values Linux's UMIP emulation returns (arch/x86/kernel/umip.c).
        let dummy = base
            == if idt {
                0xffff_ffff_ffff_0000
            } else {
                0xffff_ffff_fffe_0000
            };
        let _ = write!(t, "base={base:#x},limit={limit:#x}");
        if dummy && limit == 0 {
            let _ = write!(t, ",kernel_UMIP_dummy");
        }
    })
}

fn sldt_str(tr: bool) -> Report {
    let name = if tr { "str" } else { "sldt" };
    guarded(name, |t| {
        let mut v: u64 = 0xdead;
        // SAFETY: stores a selector into a register; may trap (UMIP), then resumes after it.
        unsafe {
            if tr {
                guard_asm!("str {v:x}", v = inout(reg) v);
            } else {
                guard_asm!("sldt {v:x}", v = inout(reg) v);
            }
        }
        let _ = write!(t, "selector={:#x}", v & 0xffff);
    })
}

fn smsw() -> Report {
    guarded("smsw", |t| {
        let mut v: u64 = 0xdead_0000;
        // SAFETY: stores the machine status word into a register; may trap (UMIP).
        unsafe {
            guard_asm!("smsw {v:e}", v = inout(reg) v);
        }
        let _ = write!(t, "msw={:#x}", v as u32);
    })
}

fn pushf() -> Report {
    let f: u64;
    // SAFETY: pushes and pops the flags register; the stack is balanced.
    unsafe { asm!("pushfq", "pop {f}", f = out(reg) f) };
    rep!(
        Observed,
        "rflags={f:#x},IF={},IOPL={}",
        (f >> 9) & 1,
        (f >> 12) & 3
    )
}

fn popf() -> Report {
    let (before, after): (u64, u64);
    // SAFETY: pops flags with IF cleared (ignored at CPL3 with IOPL 0), then reads them back;
    // the arithmetic flags are restored from `before` and the stack is balanced.
    unsafe {
        asm!(
            "pushfq",
            "pop {b}",
            "mov {t}, {b}",
            "and {t}, -513", // ~0x200: IF cleared
            "push {t}",
            "popfq",
            "pushfq",
            "pop {a}",
            "push {b}",
            "popfq",
            b = out(reg) before, a = out(reg) after, t = out(reg) _,
        )
    };
    rep!(
        Observed,
        "IF_before={},IF_after_popf_clearing_it={},silently_ignored={}",
        (before >> 9) & 1,
        (after >> 9) & 1,
        (after >> 9) & 1 == 1
    )
}

fn cs() -> u64 {
    let v: u64;
    // SAFETY: reads the CS selector.
    unsafe { asm!("mov {v:x}, cs", v = out(reg) v, options(nomem, nostack)) };
    v & 0xffff
}

fn ss() -> u64 {
    let v: u64;
    // SAFETY: reads the SS selector.
    unsafe { asm!("mov {v:x}, ss", v = out(reg) v, options(nomem, nostack)) };
    v & 0xffff
}

fn lar_lsl(lsl: bool) -> Report {
    let name = if lsl { "lsl" } else { "lar" };
    let mut t = Text::new();
    // user CS, user SS, kernel CS (0x10), null selector
    for sel in [cs(), ss(), 0x10, 0] {
        let (v, ok): (u64, u8);
        // SAFETY: LAR/LSL only read the descriptor table; ZF tells whether the selector was
        // accessible, v is undefined otherwise (preset to 0).
        unsafe {
            if lsl {
                asm!("xor {v:e}, {v:e}", "lsl {v:e}, {s:e}", "setz {ok}",
                     v = out(reg) v, s = in(reg) sel, ok = out(reg_byte) ok, options(nomem, nostack));
            } else {
                asm!("xor {v:e}, {v:e}", "lar {v:e}, {s:e}", "setz {ok}",
                     v = out(reg) v, s = in(reg) sel, ok = out(reg_byte) ok, options(nomem, nostack));
            }
        }
        if ok == 1 {
            let _ = write!(t, "{sel:#x}=>{:#x};", v as u32);
        } else {
            let _ = write!(t, "{sel:#x}=>ZF0;");
        }
    }
    rep!(Observed, "{name}:{}", t.as_str())
}

fn verr() -> Report {
    let mut t = Text::new();
    for sel in [cs(), ss(), 0x10] {
        let (r, w): (u8, u8);
        // SAFETY: VERR/VERW only read the descriptor table and set ZF.
        unsafe {
            asm!("verr {s:x}", "setz {r}", "verw {s:x}", "setz {w}",
                 s = in(reg) sel, r = out(reg_byte) r, w = out(reg_byte) w, options(nomem, nostack));
        }
        let _ = write!(t, "{sel:#x}:r={r},w={w};");
    }
    rep!(Observed, "{}", t.as_str())
}

fn mov_sreg() -> Report {
    let (c, s, d, e, f, g): (u64, u64, u64, u64, u64, u64);
    // SAFETY: reads the six segment selectors.
    unsafe {
        asm!("mov {c:x}, cs", "mov {s:x}, ss", "mov {d:x}, ds", "mov {e:x}, es",
             "mov {f:x}, fs", "mov {g:x}, gs",
             c = out(reg) c, s = out(reg) s, d = out(reg) d, e = out(reg) e, f = out(reg) f,
             g = out(reg) g, options(nomem, nostack));
    }
    let m = 0xffff;
    rep!(
        Observed,
        "cs={:#x},ss={:#x},ds={:#x},es={:#x},fs={:#x},gs={:#x},cpl={}",
        c & m,
        s & m,
        d & m,
        e & m,
        f & m,
        g & m,
        c & 3
    )
}

fn push_pop_sreg() -> Report {
    guarded("push_pop", |t| {
        let (popped, ds_after): (u64, u64);
        // SAFETY: pushes FS and pops it back (same selector, same base: this program has no
        // TLS); loads DS with the null selector (allowed in 64-bit mode) and restores it. A trap
        // resumes after the sequence with the stack pointer where it was before the push,
        // because the push and pop are balanced before anything can trap.
        unsafe {
            guard_asm!(
                "push fs\n pop fs\n mov {p:x}, fs\n mov {o:x}, ds\n xor {z:e}, {z:e}\n mov ds, {z:x}\n mov {q:x}, ds\n mov ds, {o:x}",
                p = out(reg) popped, o = out(reg) _, z = out(reg) _, q = out(reg) ds_after,
            );
        }
        let _ = write!(
            t,
            "fs_after_push_pop={:#x},ds_after_null_load={:#x}",
            popped & 0xffff,
            ds_after & 0xffff
        );
    })
}

global_asm!(
    ".data",
    ".balign 16",
    "vbench_farcall_ptr32:", // m16:32
    ".long vbench_farcall_target32",
    ".word 0x33",
    ".balign 16",
    "vbench_farcall_ptr64:", // m16:64
    ".quad vbench_farcall_target64",
    ".word 0x33",
    ".text",
    // u64 vbench_farcall(usize *resume, int wide): a far call through memory to 0x33:target,
    // 32- or 64-bit operand size; returns CS seen in the callee | 0x10000, or -1 if it trapped
    // (the trap handler resumes at vbench_farcall_fail, with the stack as it was at the call).
    ".globl vbench_farcall",
    "vbench_farcall:",
    "lea rdx, [rip + vbench_farcall_fail]",
    "mov [rdi], rdx",
    "test esi, esi",
    "jnz vbench_farcall_wide",
    "lea rax, [rip + vbench_farcall_ptr32]",
    ".byte 0xff, 0x18", // call far [rax] (m16:32)
    "ret",
    "vbench_farcall_wide:",
    "lea rax, [rip + vbench_farcall_ptr64]",
    ".byte 0x48, 0xff, 0x18", // rex.w call far [rax] (m16:64; AMD ignores REX.W here)
    "ret",
    "vbench_farcall_fail:",
    "mov rax, -1",
    "ret",
    "vbench_farcall_target32:",
    ".byte 0x8c, 0xc8", // mov eax, cs
    "or eax, 0x10000",
    ".byte 0xcb", // retf (32-bit operand size)
    "vbench_farcall_target64:",
    ".byte 0x8c, 0xc8", // mov eax, cs
    "or eax, 0x10000",
    ".byte 0x48, 0xcb", // rex.w retf
);

extern "C" {
    fn vbench_farcall(resume: *mut usize, wide: i32) -> u64;
}

fn far_call() -> Report {
    catch_signals();
    let mut t = Text::new();
    for (wide, name) in [(0, "m16:32"), (1, "m16:64")] {
        // SAFETY: vbench_farcall follows the C ABI; it makes a far call to a target in this
        // program's code segment, which returns with a far return of the same operand size. A
        // trap of the far call resumes at its fail label, which returns normally.
        let v = unsafe { vbench_farcall(RESUME.as_ptr(), wide) };
        RESUME.store(0, SeqCst);
        match trapped() {
            Some(sig) => {
                let _ = write!(t, "{name}:trapped_{sig};");
            }
            None => {
                let _ = write!(t, "{name}:returned_cs_in_callee={:#x};", v & 0xffff);
            }
        }
    }
    rep!(Observed, "far_call_to_0x33:{}", t.as_str())
}

fn int3() -> Report {
    catch_signals();
    // SAFETY: INT3 raises SIGTRAP (the handler returns after it); INT 0x81 has no DPL3 gate and
    // raises #GP, SIGSEGV, after which the handler resumes at the label.
    unsafe { asm!("int3", "nop") };
    let a = trapped().unwrap_or("none");
    let a_code = SICODE.load(SeqCst) as i32;
    // SAFETY: as above.
    unsafe { guard_asm!("int 0x81",) };
    let b = trapped().unwrap_or("none");
    let b_code = SICODE.load(SeqCst) as i32;
    rep!(Observed, "int3:{a}({a_code}),int_0x81:{b}({b_code})")
}

fn cpuid() -> Report {
    use core::arch::x86_64::__cpuid;
    // CPUID exists on every x86-64 CPU.
    let l0 = __cpuid(0);
    let l1 = __cpuid(1);
    let mut vendor = [0u8; 12];
    vendor[0..4].copy_from_slice(&l0.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&l0.edx.to_le_bytes());
    vendor[8..12].copy_from_slice(&l0.ecx.to_le_bytes());
    let hv = (l1.ecx >> 31) & 1;
    let mut hv_vendor = [b'-'; 12];
    if hv == 1 {
        let h = __cpuid(0x4000_0000);
        hv_vendor[0..4].copy_from_slice(&h.ebx.to_le_bytes());
        hv_vendor[4..8].copy_from_slice(&h.ecx.to_le_bytes());
        hv_vendor[8..12].copy_from_slice(&h.edx.to_le_bytes());
    }
    let s = |b: &[u8]| -> Text {
        let mut t = Text::new();
        for &c in b {
            let _ = t.write_char(if c.is_ascii_graphic() { c as char } else { '.' });
        }
        t
    };
    rep!(
        Observed,
        "vendor={},max_leaf={},hypervisor_bit={hv},hypervisor={},family_model={:#x}",
        s(&vendor).as_str(),
        l0.eax,
        s(&hv_vendor).as_str(),
        l1.eax
    )
}

fn rdtsc() -> Report {
    use core::arch::x86_64::_rdtsc;
    // SAFETY: RDTSC exists on every x86-64 CPU; CR4.TSD would trap it, which Linux does not
    // set for ordinary processes.
    let t0 = unsafe { _rdtsc() };
    let w0 = crate::now_ns();
    let mut w = w0;
    while w - w0 < 20_000_000 {
        w = crate::now_ns();
    }
    // SAFETY: as above.
    let t1 = unsafe { _rdtsc() };
    let mhz = (t1.wrapping_sub(t0)) * 1000 / (w - w0).max(1);
    rep!(
        Observed,
        "monotonic={},rate_MHz_vs_CLOCK_MONOTONIC={mhz}",
        t1 > t0
    )
}

/// Executes one privileged instruction at CPL3; the kernel must refuse it (#GP, SIGSEGV).
fn privileged(name: &str) -> Report {
    guarded(name, |t| {
        let (mut a, mut d): (u64, u64) = (0, 0);
        // SAFETY: each instruction traps at CPL3 (the handler resumes after it); if a backend
        // let one through, RDMSR only reads the TSC MSR into rax/rdx, HLT waits for an interrupt,
        // CLI clears IF of this program alone, and IN reads the POST diagnostics port 0x80.
        unsafe {
            match name {
                "rdmsr" => guard_asm!("rdmsr", in("ecx") 0x10u32, inout("rax") a, inout("rdx") d),
                "hlt" => guard_asm!("hlt",),
                "cli" => guard_asm!("cli",),
                _ => guard_asm!("in al, 0x80", inout("rax") a),
            }
        }
        let _ = write!(t, "executed,rax={a:#x},rdx={d:#x}");
    })
}
