//! Signals: the host handlers that turn a fault (or the watchdog's kick) in translated code
//! into an exit to the dispatcher, and the guest's own signals: delivery of a synchronous
//! fault (or a signal it sent itself) to the guest's handler on an rt_sigframe, as the
//! dispositions in [`crate::linux_abi::SignalState`] say, and rt_sigreturn.

use super::dispatch::Stop;
use super::emulate::{Vcpu, POPF_MASK};
use super::space::Space;
use super::translate::{Ctx, Tramps, CTX};
use super::{os, BackendError};
use crate::linux_abi::sigframe::{self, SigInfo, UserRegs};
use crate::linux_abi::SignalState;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// Bounds of translated code while a run is active (0..0 otherwise), for the signal handler.
static CODE_LO: AtomicU64 = AtomicU64::new(0);
static CODE_HI: AtomicU64 = AtomicU64::new(0);
static FAULT_EXIT: AtomicU64 = AtomicU64::new(0);
static KICK_EXIT: AtomicU64 = AtomicU64::new(0);

/// The signal that makes a guest thread leave translated code: sent by a thread that waits for
/// the baton ([`super::threads`]) or has taken a signal the running thread must deliver.
pub(super) fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

const FAULT_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
];

/// From now on a signal in [code_lo, code_hi) is the guest's: it leaves through the exits of
/// `tramps`.
pub(super) fn arm(tramps: &Tramps, code_lo: u64, code_hi: u64) {
    FAULT_EXIT.store(tramps.fault_exit, Ordering::Release);
    KICK_EXIT.store(tramps.kick_exit, Ordering::Release);
    CODE_LO.store(code_lo, Ordering::Release);
    CODE_HI.store(code_hi, Ordering::Release);
}

/// Translated code now ends at `code_hi`.
pub(super) fn code_grew(code_hi: u64) {
    CODE_HI.store(code_hi, Ordering::Release);
}

/// Asynchronous signals the host handler took for the guest and the dispatcher has not yet
/// delivered (bit n-1 = signal n), with the siginfo each came with (16 words per signal, as
/// the handler saw it): one set for the process ([`PROCESS`]) and one per guest thread, for
/// the signals sent to that thread (tgkill, tkill).
struct Pending {
    /// The host thread whose set this is (0: free).
    tid: AtomicI32,
    bits: AtomicU64,
    infos: [[AtomicU64; 16]; 65],
}

impl Pending {
    const fn new() -> Pending {
        Pending {
            tid: AtomicI32::new(0),
            bits: AtomicU64::new(0),
            infos: [const { [const { AtomicU64::new(0) }; 16] }; 65],
        }
    }

    fn record(&self, sig: i32, info: *const u64) {
        for (i, w) in self.infos[sig as usize].iter().enumerate() {
            // SAFETY: the kernel's siginfo is 128 bytes (16 words).
            w.store(unsafe { *info.add(i) }, Ordering::Relaxed);
        }
        self.bits.fetch_or(1u64 << (sig - 1), Ordering::AcqRel);
    }

    fn take(&self, sig: i32) -> [u64; 16] {
        self.bits.fetch_and(!(1u64 << (sig - 1)), Ordering::AcqRel);
        let mut v = [0u64; 16];
        for (i, w) in v.iter_mut().enumerate() {
            *w = self.infos[sig as usize][i].load(Ordering::Relaxed);
        }
        v
    }
}

/// Guest threads whose signals are kept apart (more share the process's set, where two
/// threads' signals of one number merge into one). 8 KiB of zeroed static memory each, touched
/// only as threads come.
const THREADS: usize = 1024;
static PROCESS: Pending = Pending::new();
static PER_THREAD: [Pending; THREADS] = [const { Pending::new() }; THREADS];
/// How many of [`PER_THREAD`]'s sets were ever claimed (the rest are pages never touched).
static USED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The set of the guest thread `slot` (see [`claim`]), if it has one.
fn own(slot: u64) -> Option<&'static Pending> {
    PER_THREAD.get(slot as usize)
}

/// A set for the signals sent to host thread `tid`; its slot ([`THREADS`]: none was free).
pub(super) fn claim(tid: i32) -> u64 {
    for (i, p) in PER_THREAD.iter().enumerate() {
        if p.tid
            .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            p.bits.store(0, Ordering::Release);
            USED.fetch_max(i + 1, Ordering::AcqRel);
            return i as u64;
        }
    }
    THREADS as u64
}

/// The guest thread of `slot` is gone: its set is free again.
pub(super) fn release(slot: u64) {
    if let Some(p) = own(slot) {
        p.bits.store(0, Ordering::Release);
        p.tid.store(0, Ordering::Release);
    }
}

/// The asynchronous signals taken for the process and for the thread of `slot`, not yet
/// delivered.
pub(super) fn pending(slot: u64) -> u64 {
    PROCESS.bits.load(Ordering::Acquire) | own(slot).map_or(0, |p| p.bits.load(Ordering::Acquire))
}

/// Takes pending signal `sig` (its siginfo): the thread's own first.
pub(super) fn take(sig: i32, slot: u64) -> [u64; 16] {
    match own(slot) {
        Some(p) if p.bits.load(Ordering::Acquire) & (1u64 << (sig - 1)) != 0 => p.take(sig),
        _ => PROCESS.take(sig),
    }
}

/// A forked child starts with no pending signal, as natively, and one thread (`tid`): its
/// slot.
pub(super) fn forget_pending(tid: i32) -> u64 {
    PROCESS.bits.store(0, Ordering::Release);
    // the sets ever claimed, written only where set: a store to each set's page would copy it
    // in every forked child
    for p in &PER_THREAD[..USED.load(Ordering::Acquire)] {
        if p.tid.load(Ordering::Acquire) != 0 || p.bits.load(Ordering::Acquire) != 0 {
            p.bits.store(0, Ordering::Release);
            p.tid.store(0, Ordering::Release);
        }
    }
    HOLDER.store(tid, Ordering::Release);
    claim(tid)
}

/// The host thread that runs the guest now (holds [`super::threads`]' baton).
static HOLDER: AtomicI32 = AtomicI32::new(0);

/// Host thread `tid` runs the guest from now on.
pub(super) fn set_holder(tid: i32) {
    HOLDER.store(tid, Ordering::Release);
}

/// Makes host thread `tid` leave translated code (or its host call, with EINTR) at once.
pub(super) fn kick(tid: i32) {
    let (nr, pid, sig) = (libc::SYS_tgkill, std::process::id(), kick_signal());
    // The system call itself, not libc's syscall(): on_async kicks from a signal handler
    // that may have interrupted a trampoline while the guest's FS base is loaded, and libc
    // would store a failure (ESRCH: the thread is gone, which is ignored) in errno, through FS.
    // SAFETY: tgkill takes integers only and touches no memory of this process; syscall
    // clobbers rcx and r11 and returns in rax.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => _,
            in("rdi") pid,
            in("rsi") tid,
            in("rdx") sig,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        )
    };
}

/// Host handler of a signal the guest handles: records it and, when it interrupted translated
/// code, sends that code to the kick exit, so the dispatcher delivers it at once. Elsewhere (the
/// dispatcher, a host call it makes for the guest, which the signal interrupts with EINTR) the
/// dispatcher sees it before it next enters the cache.
extern "C" fn on_async(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo (128 bytes) and ucontext_t for an SA_SIGINFO
    // handler; the context page is mapped while CODE_HI is non-zero and the guest's thread is
    // stopped here.
    unsafe {
        let words = info as *const u64;
        // sent to this thread (tgkill, tkill): its own set, when it has one
        let tid = libc::syscall(libc::SYS_gettid) as i32;
        let mine = if (*info).si_code == SI_TKILL {
            PER_THREAD[..USED.load(Ordering::Acquire)]
                .iter()
                .find(|p| p.tid.load(Ordering::Acquire) == tid)
        } else {
            None
        };
        mine.unwrap_or(&PROCESS).record(sig, words);
        let uc = &mut *(uc as *mut libc::ucontext_t);
        let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
        if CODE_LO.load(Ordering::Acquire) <= rip && rip < CODE_HI.load(Ordering::Acquire) {
            // translated code runs only on the thread that holds the baton: the context page
            // is this thread's
            let ctx = CTX as *mut Ctx;
            (*ctx).fault_host_rip = rip;
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] = KICK_EXIT.load(Ordering::Acquire) as i64;
        } else if mine.is_none() {
            // the process's signal, taken by a thread that waits: the one that runs the
            // guest delivers it, now
            let holder = HOLDER.load(Ordering::Acquire);
            if holder != 0 && holder != tid {
                kick(holder);
            }
        }
    }
}

/// The host disposition that stands for the guest's `handler` of `sig` (SIG_DFL and SIG_IGN as
/// they are, so default actions and ignoring are the kernel's own; a handler becomes
/// [`on_async`]). The faults the translator handles itself keep its handler.
pub(super) fn mirror_action(sig: i32, handler: u64) {
    if FAULT_SIGNALS.contains(&sig)
        || sig == libc::SIGKILL
        || sig == libc::SIGSTOP
        || sig == kick_signal()
    {
        return;
    }
    // SAFETY: installing a disposition; on_async is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = match handler {
            0 => libc::SIG_DFL,
            1 => libc::SIG_IGN,
            _ => on_async as *const () as usize,
        };
        // no SA_RESTART: a host call the signal interrupts returns EINTR to the dispatcher,
        // which restarts the guest's call after its handler when the guest asked for that
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Mirrors every disposition of `actions` (after an execve).
pub(super) fn mirror_all(actions: &[[u64; 4]; 65]) {
    for (sig, a) in actions.iter().enumerate().skip(1) {
        mirror_action(sig as i32, a[0]);
    }
}

/// The host mask that stands for the guest's blocked mask, so a signal it blocks stays
/// pending in the host kernel (and does not interrupt its calls) until it unblocks it.
pub(super) fn mirror_mask(mask: u64) {
    let mut set = crate::linux_abi::host_sigset(mask);
    // SAFETY: a valid set, for the calling thread (the guest thread's own); the kick is never
    // blocked (a thread must leave translated code for the others to run).
    unsafe {
        libc::sigdelset(&mut set, kick_signal());
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
}

/// The alternate signal stack of a guest thread's host thread (each needs its own: the
/// handlers must never run on the guest's stack); removed on drop.
pub(super) struct AltStack {
    stack: Vec<u8>,
}

impl AltStack {
    pub(super) fn new() -> Result<AltStack, BackendError> {
        let mut stack = vec![0u8; 256 << 10];
        let ss = libc::stack_t {
            ss_sp: stack.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: stack.len(),
        };
        // SAFETY: the buffer lives as long as the returned value, which disables the
        // alternate stack before freeing it.
        if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
            return Err(os("sigaltstack"));
        }
        Ok(AltStack { stack })
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let ss = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: disabling this thread's alternate stack before its buffer goes.
        unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
        let _ = self.stack.len();
    }
}

/// Signal handler: redirects translated code that faulted (or was kicked) to an exit.
extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t for an SA_SIGINFO handler; the context page
    // is mapped while CODE_HI is non-zero (set after mapping, cleared before unmapping), and
    // the guest thread is stopped in this handler, so nothing else writes it.
    unsafe {
        if (*info).si_code <= 0 && sig != kick_signal() {
            // sent by kill, tgkill or sigqueue, not a fault: the guest's asynchronous signal
            return on_async(sig, info, uc);
        }
        let uc = &mut *(uc as *mut libc::ucontext_t);
        let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
        let lo = CODE_LO.load(Ordering::Acquire);
        let hi = CODE_HI.load(Ordering::Acquire);
        if lo <= rip && rip < hi {
            let ctx = CTX as *mut Ctx;
            let kick = sig == kick_signal();
            (*ctx).fault_host_rip = rip;
            (*ctx).fault_sig = sig as u32 as u64 | (((*info).si_code as u32 as u64) << 32);
            (*ctx).fault_addr = if kick { 0 } else { (*info).si_addr() as u64 };
            let to = if kick { &KICK_EXIT } else { &FAULT_EXIT };
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] = to.load(Ordering::Acquire) as i64;
            return;
        }
        if sig == kick_signal() {
            return; // the dispatcher sees the flag
        }
        // not the guest's: vbench's own bug. Default action on return (the fault repeats).
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Signal dispositions and the alternate stack of a run; restored on drop.
pub(super) struct Signals {
    old: Vec<(libc::c_int, libc::sigaction)>,
    old_stack: libc::stack_t,
    stack: Vec<u8>,
}

impl Signals {
    /// Installs the handlers and the alternate stack for this thread's run.
    pub(super) fn install() -> Result<Signals, BackendError> {
        let mut stack = vec![0u8; 256 << 10];
        // SAFETY: zeroed sigaction/stack_t are valid out-parameters; the alternate stack is a
        // live buffer owned by the returned value, which restores the old one before freeing it.
        unsafe {
            let mut old_stack: libc::stack_t = std::mem::zeroed();
            let ss = libc::stack_t {
                ss_sp: stack.as_mut_ptr().cast(),
                ss_flags: 0,
                ss_size: stack.len(),
            };
            if libc::sigaltstack(&ss, &mut old_stack) != 0 {
                return Err(os("sigaltstack"));
            }
            let mut s = Signals {
                old: Vec::new(),
                old_stack,
                stack,
            };
            for sig in FAULT_SIGNALS.iter().copied().chain([kick_signal()]) {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
                libc::sigemptyset(&mut sa.sa_mask);
                if sig == kick_signal() {
                    // Kicks queue (a real-time signal): blocked during the handler, queued
                    // ones are taken one after another, never as a nest of frames that
                    // overflows the alternate stack.
                    sa.sa_flags &= !libc::SA_NODEFER;
                    libc::sigaddset(&mut sa.sa_mask, sig);
                }
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut old) != 0 {
                    return Err(os("sigaction"));
                }
                s.old.push((sig, old));
            }
            // the kick must be deliverable to this thread
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, kick_signal());
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(s)
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: restoring dispositions and the alternate stack saved by `install`; the
        // alternate stack buffer is freed only after it is no longer installed.
        unsafe {
            for (sig, old) in &self.old {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
            let mut cur: libc::stack_t = std::mem::zeroed();
            libc::sigaltstack(&self.old_stack, &mut cur);
        }
        let _ = self.stack.len();
    }
}

/// A synchronous signal of the guest, with what its handler would see.
#[derive(Debug)]
pub(super) struct GuestFault {
    pub(super) signal: i32,
    pub(super) code: i32,
    /// Where the guest resumes when the handler returns.
    pub(super) rip: u64,
    pub(super) addr: u64,
    pub(super) message: String,
    /// The whole siginfo, for an asynchronous signal (the handler gets it as it came).
    pub(super) info: Option<Box<[u64; 16]>>,
}

pub(super) fn gfault(signal: i32, code: i32, rip: u64, addr: u64, message: String) -> Stop {
    Stop::Fault(GuestFault {
        signal,
        code,
        rip,
        addr,
        message,
        info: None,
    })
}

pub(super) fn segv(pc: u64, addr: u64) -> Stop {
    gfault(
        libc::SIGSEGV,
        1, // SEGV_MAPERR
        pc,
        addr,
        format!("guest crashed: SIGSEGV at guest rip {pc:#x}, address {addr:#x}"),
    )
}

pub(super) use crate::linux_abi::sigframe::{SA_RESTART, SI_KERNEL};
/// si_code of a signal sent by tkill or tgkill.
const SI_TKILL: i32 = -6;

/// The guest's registers as the signal frame holds them: the emulated TF and IF in rflags.
fn user_regs(ctx: &Ctx, vcpu: &Vcpu, rip: u64) -> UserRegs {
    UserRegs {
        gpr: ctx.gpr,
        rip,
        rflags: (ctx.rflags & !0x300) | (u64::from(vcpu.tf) << 8) | (u64::from(vcpu.vif) << 9),
    }
}

/// Delivers `f` to the guest's handler on an rt_sigframe
/// ([`crate::linux_abi::sigframe::deliver`]). False when the guest has no handler for it (it
/// then dies of the signal, or ignores it).
pub(super) fn deliver(
    ctx: &mut Ctx,
    space: &Space,
    vcpu: &mut Vcpu,
    sigs: &mut SignalState,
    f: &GuestFault,
) -> bool {
    let mut regs = user_regs(ctx, vcpu, f.rip);
    let info = SigInfo {
        signal: f.signal,
        code: f.code,
        addr: f.addr,
        info: f.info.as_deref(),
    };
    if !sigframe::deliver(&mut regs, space, sigs, &info) {
        return false;
    }
    ctx.gpr = regs.gpr;
    ctx.rflags &= !0x500; // TF, DF
    vcpu.tf = false;
    ctx.next = regs.rip;
    true
}

/// rt_sigreturn: the registers and the blocked mask from the ucontext at the guest's rsp.
pub(super) fn sigreturn(
    ctx: &mut Ctx,
    space: &Space,
    vcpu: &mut Vcpu,
    sigs: &mut SignalState,
) -> Result<(), Stop> {
    let mut regs = user_regs(ctx, vcpu, ctx.next);
    sigframe::sigreturn(&mut regs, space, sigs).map_err(|uc| segv(ctx.next, uc))?;
    ctx.gpr = regs.gpr;
    ctx.next = regs.rip;
    ctx.rflags = (ctx.rflags & !POPF_MASK) | (regs.rflags & POPF_MASK) | 2;
    vcpu.tf = regs.rflags & 0x100 != 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every waiting thread may kick the holder, and a kick is a real-time signal, so kicks
    /// queue: a burst of them must be taken one after another. Delivered all at once (each
    /// handler frame on top of the last), 2000 kicks overflow the 256 KiB alternate stack.
    #[test]
    fn a_burst_of_queued_kicks_is_taken_one_at_a_time() {
        std::thread::spawn(|| {
            let _signals = Signals::install().expect("install the handlers");
            let tid = gettid_raw();
            // SAFETY: plain signal-mask calls on this thread with a local set.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, kick_signal());
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                for _ in 0..2000 {
                    kick(tid);
                }
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        })
        .join()
        .expect("the thread survives the burst");
    }

    fn gettid_raw() -> i32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::syscall(libc::SYS_gettid) as i32 }
    }
}
