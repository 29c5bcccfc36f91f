//! The guest's signal frame, as Linux builds it on x86-64: delivery of a signal to the guest's
//! handler on an rt_sigframe and rt_sigreturn from it. One implementation for the backends
//! that run handlers (bt in its translator process, kvm in its micro-VM); each hands over the
//! guest's registers as [`UserRegs`] and writes the result back into its own CPU state.
//!
//! The frame, from the new stack pointer up: the return address (the handler's sa_restorer),
//! the ucontext (flags, link, the alternate stack, the general registers, rip, rflags, the
//! segment word, err, trapno, oldmask, cr2, fpstate = 0, reserved, the mask to restore), then
//! the siginfo. It sits below the 128-byte red zone, 16-byte aligned as a call would leave it,
//! or at the top of the alternate stack for an SA_ONSTACK handler.

use super::{GuestMem, SignalState, UNBLOCKABLE};

/// The guest's user registers at the point a signal interrupts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserRegs {
    /// RAX RCX RDX RBX RSP RBP RSI RDI R8..R15.
    pub gpr: [u64; 16],
    /// Where the guest goes on.
    pub rip: u64,
    /// Its rflags.
    pub rflags: u64,
}

/// What the handler is told of the signal.
#[derive(Debug, Clone, Copy)]
pub struct SigInfo<'a> {
    /// The signal.
    pub signal: i32,
    /// si_code.
    pub code: i32,
    /// si_addr (the fault address).
    pub addr: u64,
    /// The whole siginfo as the host gave it, for an asynchronous signal.
    pub info: Option<&'a [u64; 16]>,
}

const RAX: usize = 0;
const RDX: usize = 2;
const RSP: usize = 4;
const RSI: usize = 6;
const RDI: usize = 7;
/// The ucontext's register order: R8..R15, RDI, RSI, RBP, RBX, RDX, RAX, RCX, RSP.
const UC_ORDER: [usize; 16] = [8, 9, 10, 11, 12, 13, 14, 15, 7, 6, 5, 3, 2, 0, 1, 4];
const FRAME: u64 = 440;
/// Offset of the general registers in the ucontext (after flags, link and the stack).
const UC_GREGS: u64 = 40;
/// Offset of uc_sigmask in the ucontext.
const UC_SIGMASK: u64 = 296;
/// Offset of the siginfo in the frame.
const INFO: u64 = 8 + 304;

/// si_code of faults the kernel raises itself (#GP, int n, int3).
pub const SI_KERNEL: i32 = 0x80;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
/// SA_RESTART: a call the handler interrupted starts again when it returns.
pub const SA_RESTART: u64 = 0x1000_0000;

/// Calls a handler interrupted with EINTR starts again after an SA_RESTART handler (the
/// kernel's ERESTARTSYS ones; poll, select, sleeps and waits for signals return EINTR).
pub const RESTARTABLE: [i64; 22] = [
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_ioctl,
    libc::SYS_futex,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_flock,
    libc::SYS_fcntl,
];

/// Whether the guest has a handler of its own for `signal` (not SIG_DFL, not SIG_IGN, and one
/// it can return from: x86-64 requires SA_RESTORER).
pub fn has_handler(sigs: &SignalState, signal: i32) -> bool {
    sigs.actions
        .get(signal as usize)
        .is_some_and(|[h, flags, ..]| *h > 1 && flags & SA_RESTORER != 0)
}

/// Delivers `f` to the guest's handler: writes the frame of `regs` (rip and rflags as the
/// guest sees them) to its stack and makes `regs` the handler's entry: rdi = signal, rsi =
/// &siginfo, rdx = &ucontext, rax = 0, TF and DF clear. During the handler the signal (unless
/// SA_NODEFER) and the handler's sa_mask are blocked; SA_RESETHAND resets the disposition.
/// False when the guest has no handler for it, or the frame cannot be written (the guest then
/// dies of the signal, as natively).
pub fn deliver(
    regs: &mut UserRegs,
    mem: &dyn GuestMem,
    sigs: &mut SignalState,
    f: &SigInfo,
) -> bool {
    if !has_handler(sigs, f.signal) {
        return false;
    }
    let [handler, flags, restorer, sa_mask] = sigs.actions[f.signal as usize];
    let g = regs.gpr;
    let [ss_sp, ss_flags, ss_size] = sigs.altstack;
    let on_alt = ss_flags & 2 == 0 && ss_size > 0 && g[RSP] > ss_sp && g[RSP] <= ss_sp + ss_size;
    let top = if flags & SA_ONSTACK != 0 && ss_flags & 2 == 0 && ss_size > 0 && !on_alt {
        ss_sp + ss_size
    } else {
        g[RSP].wrapping_sub(128)
    };
    let frame = (top.wrapping_sub(FRAME) & !15).wrapping_sub(8);
    let (uc, info) = (frame + 8, frame + INFO);
    let old_mask = sigs.saved_mask.take().unwrap_or(sigs.mask);
    let mut b: Vec<u8> = Vec::with_capacity(FRAME as usize);
    let mut q = |v: u64| b.extend(v.to_le_bytes());
    q(restorer);
    q(0); // uc_flags
    q(0); // uc_link
    q(ss_sp); // uc_stack: the alternate stack as sigaltstack would report it
    q(if on_alt { 1 } else { ss_flags });
    q(ss_size);
    for r in UC_ORDER {
        q(g[r]);
    }
    q(regs.rip);
    q(regs.rflags);
    q(0x2b << 48 | 0x33); // cs, gs, fs, ss
    let trapno = match f.signal {
        libc::SIGILL => 6,
        libc::SIGTRAP => 3,
        libc::SIGFPE => 0,
        _ if f.code == SI_KERNEL => 13,
        _ => 14,
    };
    for v in [0, trapno, 0, f.addr, 0, 0, 0, 0, 0, 0, 0, 0, 0, old_mask] {
        q(v); // err, trapno, oldmask, cr2, fpstate, reserved[8], uc_sigmask
    }
    match f.info {
        Some(words) => words.iter().for_each(|w| q(*w)),
        None => {
            q(f.signal as u32 as u64); // si_signo, si_errno 0
            q(f.code as u32 as u64); // si_code
            q(f.addr); // si_addr
        }
    }
    b.resize(FRAME as usize, 0);
    if mem.write(frame, &b).is_err() {
        return false;
    }
    let own = if flags & SA_NODEFER != 0 {
        0
    } else {
        1u64 << (f.signal - 1)
    };
    sigs.mask = (old_mask | sa_mask | own) & !UNBLOCKABLE;
    if flags & SA_RESETHAND != 0 {
        sigs.actions[f.signal as usize] = [0; 4];
    }
    regs.gpr[RDI] = f.signal as u64;
    regs.gpr[RSI] = info;
    regs.gpr[RDX] = uc;
    regs.gpr[RAX] = 0;
    regs.gpr[RSP] = frame;
    regs.rflags &= !0x500; // TF, DF
    regs.rip = handler;
    true
}

/// rt_sigreturn: the registers, rip, rflags (as saved: the caller keeps what the guest may not
/// change) and the blocked mask from the ucontext at the guest's stack pointer. Err: the
/// address of a ucontext the guest cannot read.
pub fn sigreturn(
    regs: &mut UserRegs,
    mem: &dyn GuestMem,
    sigs: &mut SignalState,
) -> Result<(), u64> {
    let uc = regs.gpr[RSP];
    let mut b = [0u8; 18 * 8];
    mem.read(uc.wrapping_add(UC_GREGS), &mut b)
        .map_err(|_| uc)?;
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8"));
    let mut m = [0u8; 8];
    mem.read(uc.wrapping_add(UC_SIGMASK), &mut m)
        .map_err(|_| uc)?;
    for (i, r) in UC_ORDER.into_iter().enumerate() {
        regs.gpr[r] = w(i);
    }
    regs.rip = w(16);
    regs.rflags = w(17);
    sigs.mask = u64::from_le_bytes(m) & !UNBLOCKABLE;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux_abi::testmem::TestMem;

    fn state(handler: u64, flags: u64) -> SignalState {
        let mut s = SignalState::default();
        s.actions[libc::SIGUSR1 as usize] = [handler, flags | SA_RESTORER, 0x1234, 1 << 1];
        s
    }

    #[test]
    fn a_frame_round_trips_through_sigreturn() {
        let mem = TestMem::new(0x10000);
        let mut sigs = state(0x4000, 0);
        sigs.mask = 1 << 4;
        let mut regs = UserRegs {
            gpr: std::array::from_fn(|i| 100 + i as u64),
            rip: 0x5555,
            rflags: 0x246 | 0x400,
        };
        regs.gpr[RSP] = 0x9000;
        let before = regs;
        let f = SigInfo {
            signal: libc::SIGUSR1,
            code: 0,
            addr: 0,
            info: None,
        };
        assert!(deliver(&mut regs, &mem, &mut sigs, &f));
        assert_eq!(regs.rip, 0x4000);
        assert_eq!(regs.gpr[RDI], libc::SIGUSR1 as u64);
        // below the red zone, aligned as after a call, the restorer on top
        let sp = regs.gpr[RSP];
        assert!(sp < 0x9000 - 128 && (sp + 8).is_multiple_of(16), "{sp:#x}");
        let mut ret = [0u8; 8];
        mem.read(sp, &mut ret).unwrap();
        assert_eq!(u64::from_le_bytes(ret), 0x1234);
        assert_eq!(regs.rflags & 0x400, 0, "DF clear in the handler");
        // the handler blocks its own signal and sa_mask, on top of the old mask
        let own = 1u64 << (libc::SIGUSR1 - 1);
        assert_eq!(sigs.mask, (1 << 4) | (1 << 1) | own);
        // the restorer's `ret` popped the return address: rsp is the ucontext
        regs.gpr[RSP] = sp + 8;
        regs.gpr[RAX] = 15;
        sigreturn(&mut regs, &mem, &mut sigs).unwrap();
        assert_eq!(regs, before);
        assert_eq!(sigs.mask, 1 << 4);
    }

    #[test]
    fn no_handler_no_restorer_or_no_stack_is_not_delivered() {
        let mem = TestMem::new(0x10000);
        let f = SigInfo {
            signal: libc::SIGUSR1,
            code: 0,
            addr: 0,
            info: None,
        };
        let mut regs = UserRegs::default();
        regs.gpr[RSP] = 0x9000;
        let mut dfl = SignalState::default();
        assert!(!deliver(&mut regs, &mem, &mut dfl, &f));
        let mut no_restorer = state(0x4000, 0);
        no_restorer.actions[libc::SIGUSR1 as usize][1] = 0;
        assert!(!deliver(&mut regs, &mem, &mut no_restorer, &f));
        // a stack pointer outside guest memory
        regs.gpr[RSP] = 1 << 40;
        assert!(!deliver(&mut regs, &mem, &mut state(0x4000, 0), &f));
        assert_eq!(sigreturn(&mut regs, &mem, &mut dfl), Err(1 << 40));
    }

    #[test]
    fn an_onstack_handler_runs_on_the_alternate_stack_once() {
        let mem = TestMem::new(0x10000);
        let mut sigs = state(0x4000, SA_ONSTACK | SA_NODEFER | SA_RESETHAND);
        sigs.altstack = [0x2000, 0, 0x1000];
        let f = SigInfo {
            signal: libc::SIGUSR1,
            code: 0,
            addr: 0,
            info: None,
        };
        let mut regs = UserRegs::default();
        regs.gpr[RSP] = 0x9000;
        assert!(deliver(&mut regs, &mem, &mut sigs, &f));
        assert!((0x2000..0x3000).contains(&regs.gpr[RSP]));
        assert_eq!(sigs.mask & (1 << (libc::SIGUSR1 - 1)), 0, "SA_NODEFER");
        assert!(!has_handler(&sigs, libc::SIGUSR1), "SA_RESETHAND");
    }
}
