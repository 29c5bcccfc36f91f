//! Signals: traps of the instruction, translation and machine-edge probes become
//! observations. [`guarded`] and `guard_asm!` resume after a trapping instruction.

use super::*;
use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// Where a trapped instruction resumes (0: let the signal kill the probe).
pub(super) static RESUME: AtomicUsize = AtomicUsize::new(0);
/// The last signal caught, its si_code and fault address.
static SIGNO: AtomicUsize = AtomicUsize::new(0);
pub(super) static SICODE: AtomicUsize = AtomicUsize::new(0);
pub(super) static TRAPS: AtomicUsize = AtomicUsize::new(0);

global_asm!(
    ".globl vbench_probe_restorer",
    "vbench_probe_restorer:",
    "mov eax, 15", // rt_sigreturn
    "syscall",
    "ud2",
);

extern "C" {
    fn vbench_probe_restorer();
}

/// The handler of SIGSEGV, SIGILL, SIGTRAP and SIGBUS: records the signal, clears the trap flag,
/// and continues at RESUME when set.
extern "C" fn on_signal(sig: i32, info: *mut u8, uc: *mut u8) {
    // SAFETY: the kernel passes a siginfo_t (si_code at offset 8) and a ucontext_t whose
    // mcontext starts at offset 40; gregs RIP and EFLAGS are entries 16 and 17.
    unsafe {
        SIGNO.store(sig as usize, SeqCst);
        SICODE.store((info.add(8) as *const i32).read() as usize, SeqCst);
        TRAPS.fetch_add(1, SeqCst);
        let rip = uc.add(40 + 16 * 8) as *mut usize;
        let efl = uc.add(40 + 17 * 8) as *mut usize;
        efl.write(efl.read() & !0x100);
        let r = RESUME.load(SeqCst);
        if sig != 5 && r != 0 {
            rip.write(r);
        }
    }
}

pub(super) fn catch_signals() {
    const SA_SIGINFO: usize = 4;
    const SA_RESTORER: usize = 0x0400_0000;
    const SA_NODEFER: usize = 0x4000_0000;
    let act = [
        on_signal as *const () as usize,
        SA_SIGINFO | SA_RESTORER | SA_NODEFER,
        vbench_probe_restorer as *const () as usize,
        0,
    ];
    for sig in [4usize, 5, 7, 11] {
        let _ = call(nr::RT_SIGACTION, [sig, act.as_ptr() as usize, 0, 8, 0, 0]);
    }
}

/// What the last guarded instruction did: `ok` or the signal that trapped it.
pub(super) fn trapped() -> Option<&'static str> {
    let s = SIGNO.swap(0, SeqCst);
    let name = match s {
        0 => return None,
        4 => "SIGILL",
        5 => "SIGTRAP",
        7 => "SIGBUS",
        11 => "SIGSEGV",
        _ => "signal",
    };
    Some(name)
}

/// Runs `f` with the signal handlers installed and reports "trapped" if it trapped.
pub(super) fn guarded(what: &str, f: impl FnOnce(&mut Text)) -> Report {
    catch_signals();
    let mut t = Text::new();
    f(&mut t);
    match trapped() {
        // what the instruction would have stored is meaningless after a trap
        Some(sig) => rep!(
            Observed,
            "{what}:trapped_{sig}_si_code={}",
            SICODE.load(SeqCst) as i32
        ),
        None => rep!(Observed, "{what}:{}", t.as_str()),
    }
}

/// Executes one possibly-trapping instruction: `$insn` between a label the signal handler
/// resumes at. Operands as in `asm!`.
macro_rules! guard_asm {
    ($insn:literal, $($ops:tt)*) => {
        ::core::arch::asm!(
            "lea {resume_tmp}, [rip + 2f]",
            "mov [{resume_at}], {resume_tmp}",
            $insn,
            "2:",
            resume_tmp = out(reg) _,
            resume_at = in(reg) $crate::probe::signals::RESUME.as_ptr(),
            $($ops)*
        )
    };
}
