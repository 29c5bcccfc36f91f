//! VM-exit handling as a pure function, in the Firecracker model: the vCPU loop decodes each
//! exit of kvm-ioctls into a [`VmExit`] (reading registers where the exit needs them), and
//! [`handle_exit`] decides what the VMM does next, as a [`Step`], with no ioctl of its own. The
//! unit tests below feed it synthetic exits.

use super::layout::{fault_vector, HYPERCALL};
use super::uart;
use crate::linux_abi::sigframe::{self, SigInfo, UserRegs};
use crate::linux_abi::{Abi, Action, GuestMem};
use crate::session::GuestStop;
use kvm_bindings::kvm_regs;
use std::collections::BTreeMap;

/// A VM exit, with what handling it needs.
#[derive(Debug)]
pub enum VmExit<'a> {
    /// KVM_EXIT_INTERNAL_ERROR. On this VMM that is the guest reaching a page with no memory
    /// behind it: the hypercall entry or an exception vector's slot (told apart by rip).
    InternalError {
        /// The guest's registers.
        regs: kvm_regs,
    },
    /// A write to a device's register (the UART).
    MmioWrite {
        /// The address.
        addr: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// A read of a device's register (the UART).
    MmioRead {
        /// The address.
        addr: u64,
        /// Where the value goes.
        data: &'a mut [u8],
    },
    /// An access to guest-physical memory where there is neither RAM nor a device.
    MmioOutside {
        /// The address.
        addr: u64,
        /// Guest rip, for messages.
        rip: u64,
    },
    /// A triple fault.
    Shutdown {
        /// Guest rip.
        rip: u64,
    },
    /// `hlt` (the guest has no interrupts to wait for).
    Hlt {
        /// Guest rip.
        rip: u64,
    },
    /// KVM_EXIT_INTR.
    Intr,
    /// KVM_RUN returned EINTR/EAGAIN: a signal (the watchdog's kick) interrupted it.
    Interrupted,
    /// Any other exit, by name.
    Other {
        /// kvm-ioctls' name of it.
        what: String,
        /// Guest rip.
        rip: u64,
    },
}

/// What the VMM does after an exit.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Enter the guest again as it is.
    Resume,
    /// The guest's first syscall (the probe): the caller finds out which ring `syscall`
    /// entered, records it in [`ExitState::ring`] and starts the program.
    Probe,
    /// A forwarded syscall was serviced: write these registers back (return value, rip and
    /// rflags as sysret sets them) and, when given, the new FS base; then resume.
    Return {
        /// The registers to set.
        regs: kvm_regs,
        /// arch_prctl(ARCH_SET_FS).
        fs_base: Option<u64>,
        /// The syscall this returns from (None: into a signal handler, or out of one), which
        /// starts again if a signal interrupted it and the handler asks for SA_RESTART.
        syscall: Option<u64>,
    },
    /// The guest took exception `vector`: the caller reads its frame and stops the run.
    Fault(u8),
    /// The run is over.
    Stop(GuestStop),
}

/// The kinds of exit the VMM counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counted {
    /// KVM_EXIT_INTERNAL_ERROR of any reason.
    InternalError,
    /// Forwarded syscalls (hypercalls) after the probe.
    Hypercall,
    /// Exceptions the guest took.
    GuestFault,
    /// Accesses to the UART's registers.
    MmioUart,
    /// Bytes out of the UART.
    UartByte,
    /// KVM_EXIT_INTR.
    Intr,
    /// KVM_RUN interrupted by a signal.
    Signal,
    /// Signals delivered to the guest's handlers.
    SignalDelivered,
}

impl Counted {
    const ALL: [Counted; 8] = [
        Counted::InternalError,
        Counted::Hypercall,
        Counted::GuestFault,
        Counted::MmioUart,
        Counted::UartByte,
        Counted::Intr,
        Counted::Signal,
        Counted::SignalDelivered,
    ];

    /// The counter's name in results.
    pub fn name(self) -> &'static str {
        match self {
            Counted::InternalError => "kvm.exits.internal_error",
            Counted::Hypercall => super::counters::HYPERCALLS,
            Counted::GuestFault => "kvm.guest_faults",
            Counted::MmioUart => "kvm.exits.mmio_uart",
            Counted::UartByte => "kvm.uart_bytes",
            Counted::Intr => "kvm.exits.intr",
            Counted::Signal => "kvm.exits.signal",
            Counted::SignalDelivered => "kvm.signals_delivered",
        }
    }
}

/// What exit handling keeps between exits.
pub struct ExitState {
    /// The guest process's system-call state.
    pub abi: Abi,
    /// The ring `syscall` enters on this host, once the probe found out.
    pub ring: Option<u8>,
    /// Exits by kind, indexed by [`Counted`]: a fixed array on the hot path.
    pub counts: [u64; Counted::ALL.len()],
    /// Returns to the guest through the ring-0 flush of its page tables.
    pub flushes: u64,
    /// Page faults on an entry the VMM had changed without a flush yet (the guest resumed
    /// through one).
    pub stale_faults: u64,
    /// The rip of the last of them, so that a second fault there is taken as real.
    pub last_stale: Option<u64>,
}

impl ExitState {
    /// Fresh state around `abi`.
    pub fn new(abi: Abi) -> ExitState {
        ExitState {
            abi,
            ring: None,
            counts: [0; Counted::ALL.len()],
            flushes: 0,
            stale_faults: 0,
            last_stale: None,
        }
    }

    /// Counts one `c`.
    pub fn bump(&mut self, c: Counted) {
        self.counts[c as usize] += 1;
    }

    /// The counters by name, made once at the end of the run (hypercalls always, the rest when
    /// they happened).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        Counted::ALL
            .iter()
            .filter(|c| **c == Counted::Hypercall || self.counts[**c as usize] > 0)
            .map(|c| (c.name().to_string(), self.counts[*c as usize]))
            .collect()
    }
}

fn crashed(signal: i32, message: String) -> Step {
    Step::Stop(GuestStop::Crashed { signal, message })
}

/// Decides what to do after `exit`. `kicked` says whether the watchdog stopped the run.
pub fn handle_exit(st: &mut ExitState, mem: &dyn GuestMem, exit: VmExit, kicked: bool) -> Step {
    match exit {
        VmExit::InternalError { regs } => {
            st.bump(Counted::InternalError);
            if regs.rip == HYPERCALL {
                if st.ring.is_none() {
                    return Step::Probe;
                }
                st.bump(Counted::Hypercall);
                syscall(st, mem, regs)
            } else if let Some(v) = fault_vector(regs.rip) {
                st.bump(Counted::GuestFault);
                Step::Fault(v)
            } else {
                crashed(
                    libc::SIGSEGV,
                    format!("KVM internal error at guest rip {:#x}", regs.rip),
                )
            }
        }
        VmExit::MmioWrite { addr, data } if uart::claims(addr) => {
            st.bump(Counted::MmioUart);
            if uart::write(addr, data, &mut st.abi.outputs[0]) {
                st.bump(Counted::UartByte);
            }
            Step::Resume
        }
        VmExit::MmioRead { addr, data } if uart::claims(addr) => {
            st.bump(Counted::MmioUart);
            uart::read(addr, data);
            Step::Resume
        }
        VmExit::MmioRead { addr, .. } | VmExit::MmioWrite { addr, .. } => crashed(
            libc::SIGBUS,
            format!("guest accessed guest-physical address {addr:#x}, which no device claims"),
        ),
        VmExit::MmioOutside { addr, rip } => crashed(
            libc::SIGBUS,
            format!(
                "guest accessed guest-physical address {addr:#x} outside its RAM (rip {rip:#x})"
            ),
        ),
        VmExit::Shutdown { rip } => crashed(
            libc::SIGSEGV,
            format!("guest triple fault (shutdown) near rip {rip:#x}"),
        ),
        VmExit::Hlt { rip } => {
            crashed(libc::SIGSEGV, format!("guest executed hlt at rip {rip:#x}"))
        }
        VmExit::Intr => {
            st.bump(Counted::Intr);
            Step::Resume
        }
        VmExit::Interrupted => {
            st.bump(Counted::Signal);
            if kicked {
                Step::Stop(GuestStop::Kicked)
            } else {
                Step::Resume
            }
        }
        VmExit::Other { what, rip } => crashed(
            libc::SIGSEGV,
            format!("unexpected VM exit {what} at guest rip {rip:#x}"),
        ),
    }
}

/// Services a forwarded syscall: number in rax, arguments in rdi, rsi, rdx, r10, r8, r9; the
/// return to user mode is sysret's (rip from rcx, rflags from r11).
fn syscall(st: &mut ExitState, mem: &dyn GuestMem, mut regs: kvm_regs) -> Step {
    let nr = regs.rax;
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    let (result, fs_base) = match st.abi.syscall(mem, regs.rax, args) {
        Action::Return(v) => (v, None),
        Action::Exit(code) => return Step::Stop(GuestStop::Exited(code & 0xff)),
        Action::SetFs(base) => (0, Some(base)),
        Action::Killed(signal) => {
            return crashed(
                signal,
                format!(
                    "killed by signal {signal} (raised by the guest's syscall {})",
                    regs.rax
                ),
            )
        }
        // a signal the guest sent itself (kill, raise, a write to a closed pipe), or one it
        // unblocked: the call returns `ret` into the handler's frame
        Action::Deliver(signal, ret) => {
            regs.rax = ret as u64;
            regs.rip = regs.rcx;
            regs.rflags = regs.r11;
            let info = SigInfo {
                signal,
                code: 0, // SI_USER
                addr: 0,
                info: None,
            };
            st.bump(Counted::SignalDelivered);
            return match deliver(&mut regs, mem, &mut st.abi.signals, &info) {
                true => Step::Return {
                    regs,
                    fs_base: None,
                    syscall: None,
                },
                false => crashed(
                    libc::SIGSEGV,
                    format!("the guest's stack cannot take the frame of signal {signal}"),
                ),
            };
        }
        Action::SigReturn => {
            let mut u = user_regs(&regs);
            if let Err(uc) = sigframe::sigreturn(&mut u, mem, &mut st.abi.signals) {
                return crashed(
                    libc::SIGSEGV,
                    format!("rt_sigreturn: no signal frame at {uc:#x}"),
                );
            }
            // the flags a program may set (Linux's FIX_EFLAGS); IF stays as the guest kernel has it
            u.rflags = (regs.r11 & !FIX_EFLAGS) | (u.rflags & FIX_EFLAGS) | 2;
            set_user_regs(&mut regs, &u);
            return Step::Return {
                regs,
                fs_base: None,
                syscall: None,
            };
        }
        // fork, threads and deferred calls are a process of its own's (Setup::own_process),
        // which the micro-VM is not
        Action::Child { .. }
        | Action::Exec
        | Action::Thread(_)
        | Action::ExitThread(_)
        | Action::Block => {
            return crashed(
                libc::SIGSEGV,
                "fork, execve or a thread in the micro-VM's own process".into(),
            )
        }
    };
    regs.rax = result as u64;
    regs.rip = regs.rcx;
    regs.rflags = regs.r11;
    Step::Return {
        regs,
        fs_base,
        syscall: Some(nr),
    }
}

/// The rflags bits rt_sigreturn takes from the frame (Linux's FIX_EFLAGS: AC, RF, OF, DF, TF,
/// SF, ZF, AF, PF, CF).
pub const FIX_EFLAGS: u64 = 0x50dd5;

/// The guest's registers in the signal frame's terms.
pub fn user_regs(r: &kvm_regs) -> UserRegs {
    UserRegs {
        gpr: [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ],
        rip: r.rip,
        rflags: r.rflags,
    }
}

/// `u` into the vCPU's registers.
pub fn set_user_regs(r: &mut kvm_regs, u: &UserRegs) {
    let g = u.gpr;
    (r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi) =
        (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
    (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15) =
        (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
    r.rip = u.rip;
    r.rflags = u.rflags;
}

/// Delivers `info` to the guest's handler from the user state in `regs`, which become the
/// handler's entry. False: no handler, or the frame does not fit the guest's stack.
pub fn deliver(
    regs: &mut kvm_regs,
    mem: &dyn GuestMem,
    sigs: &mut crate::linux_abi::SignalState,
    info: &SigInfo,
) -> bool {
    let mut u = user_regs(regs);
    if !sigframe::deliver(&mut u, mem, sigs, info) {
        return false;
    }
    set_user_regs(regs, &u);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::layout::{FAULT_BASE, UART};
    use crate::linux_abi::testmem::TestMem;
    use crate::linux_abi::{Layout, Output, Setup};

    fn state() -> (ExitState, TestMem) {
        state_with(false)
    }

    fn state_with(delivers_signals: bool) -> (ExitState, TestMem) {
        let abi = Abi::new(Setup {
            layout: Layout {
                brk_start: 0x8000,
                brk_limit: 0x9000,
                mmap_lo: 0xa000,
                mmap_hi: 0xc000,
                mmap_near: 0,
            },
            outputs: crate::session::GuestOutputs::for_stdio(crate::Stdio::Capture),
            inherit_stdin: false,
            policy: crate::AbiPolicy::Confined,
            allowed: vec![],
            delivers_signals,
            own_process: false,
            exe: None,
            timer_kick: 0,
        });
        (ExitState::new(abi), TestMem::new(0x10000))
    }

    fn hypercall(nr: u64, args: [u64; 3]) -> VmExit<'static> {
        VmExit::InternalError {
            regs: kvm_regs {
                rip: HYPERCALL,
                rax: nr,
                rdi: args[0],
                rsi: args[1],
                rdx: args[2],
                rcx: 0x40_1234,
                r11: 0x246,
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_first_hypercall_is_the_probe_and_is_not_counted() {
        let (mut st, mem) = state();
        assert_eq!(
            handle_exit(&mut st, &mem, hypercall(39, [0; 3]), false),
            Step::Probe
        );
        assert_eq!(st.counters()[Counted::Hypercall.name()], 0);
    }

    #[test]
    fn a_write_hypercall_is_serviced_and_returns_as_sysret_would() {
        let (mut st, mem) = state();
        st.ring = Some(3);
        mem.write(0x100, b"hello").unwrap();
        let step = handle_exit(&mut st, &mem, hypercall(1, [1, 0x100, 5]), false);
        let Step::Return { regs, fs_base, .. } = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            (regs.rax, regs.rip, regs.rflags, fs_base),
            (5, 0x40_1234, 0x246, None)
        );
        let Output::Capture { buf, .. } = &st.abi.outputs[0] else {
            unreachable!()
        };
        assert_eq!(buf, b"hello");
        // a pointer outside guest RAM is EFAULT for the guest, not a VMM error
        let Step::Return { regs, .. } =
            handle_exit(&mut st, &mem, hypercall(1, [1, 1 << 40, 5]), false)
        else {
            panic!()
        };
        assert_eq!(regs.rax as i64, -(libc::EFAULT as i64));
        assert_eq!(st.counters()[Counted::Hypercall.name()], 2);
    }

    #[test]
    fn exit_group_stops_with_the_low_byte_and_arch_prctl_sets_fs() {
        let (mut st, mem) = state();
        st.ring = Some(0);
        assert_eq!(
            handle_exit(&mut st, &mem, hypercall(231, [0x1_07, 0, 0]), false),
            Step::Stop(GuestStop::Exited(7))
        );
        let step = handle_exit(&mut st, &mem, hypercall(158, [0x1002, 0x7000, 0]), false);
        assert!(
            matches!(
                step,
                Step::Return {
                    fs_base: Some(0x7000),
                    ..
                }
            ),
            "{step:?}"
        );
    }

    #[test]
    fn exception_slots_are_faults_and_other_internal_errors_crash() {
        let (mut st, mem) = state();
        let at = |rip| VmExit::InternalError {
            regs: kvm_regs {
                rip,
                ..Default::default()
            },
        };
        assert_eq!(
            handle_exit(&mut st, &mem, at(FAULT_BASE + 14 * 16), false),
            Step::Fault(14)
        );
        let step = handle_exit(&mut st, &mem, at(0x1234), false);
        assert!(
            matches!(&step, Step::Stop(GuestStop::Crashed { signal, message }) if *signal == libc::SIGSEGV && message.contains("0x1234")),
            "{step:?}"
        );
        assert_eq!(st.counters()["kvm.guest_faults"], 1);
        assert_eq!(st.counters()["kvm.exits.internal_error"], 2);
    }

    #[test]
    fn uart_bytes_go_to_stdout_and_other_mmio_is_a_bus_error() {
        let (mut st, mem) = state();
        let mut lsr = [0u8; 1];
        let read = VmExit::MmioRead {
            addr: UART + 5,
            data: &mut lsr,
        };
        assert_eq!(handle_exit(&mut st, &mem, read, false), Step::Resume);
        assert_eq!(lsr, [0x60]);
        for b in b"ok" {
            let w = VmExit::MmioWrite {
                addr: UART,
                data: std::slice::from_ref(b),
            };
            assert_eq!(handle_exit(&mut st, &mem, w, false), Step::Resume);
        }
        let Output::Capture { buf, .. } = &st.abi.outputs[0] else {
            unreachable!()
        };
        assert_eq!(buf, b"ok");
        let c = st.counters();
        assert_eq!((c["kvm.exits.mmio_uart"], c["kvm.uart_bytes"]), (3, 2));
        let far = VmExit::MmioOutside {
            addr: 0xdead_0000,
            rip: 0x40_0000,
        };
        let step = handle_exit(&mut st, &mem, far, false);
        assert!(
            matches!(&step, Step::Stop(GuestStop::Crashed { signal, message }) if *signal == libc::SIGBUS && message.contains("0xdead0000")),
            "{step:?}"
        );
    }

    #[test]
    fn a_signal_resumes_unless_the_watchdog_kicked() {
        let (mut st, mem) = state();
        assert_eq!(
            handle_exit(&mut st, &mem, VmExit::Interrupted, false),
            Step::Resume
        );
        assert_eq!(
            handle_exit(&mut st, &mem, VmExit::Interrupted, true),
            Step::Stop(GuestStop::Kicked)
        );
        assert_eq!(
            handle_exit(&mut st, &mem, VmExit::Intr, false),
            Step::Resume
        );
        let hlt = handle_exit(&mut st, &mem, VmExit::Hlt { rip: 0x9000 }, false);
        assert!(matches!(hlt, Step::Stop(GuestStop::Crashed { .. })));
        assert_eq!(st.counters()["kvm.exits.signal"], 2);
    }

    #[test]
    fn a_signal_the_guest_sends_itself_runs_its_handler_and_sigreturn_resumes_the_call() {
        let (mut st, mem) = state_with(true);
        st.ring = Some(3);
        // rt_sigaction(SIGUSR1, {handler 0x5000, SA_RESTORER, restorer 0x5100}, NULL, 8)
        let act: [u64; 4] = [0x5000, 0x0400_0000, 0x5100, 0];
        let b: Vec<u8> = act.iter().flat_map(|v| v.to_le_bytes()).collect();
        mem.write(0x200, &b).unwrap();
        let mut call = hypercall(13, [libc::SIGUSR1 as u64, 0x200, 0]);
        if let VmExit::InternalError { regs } = &mut call {
            regs.r10 = 8;
        }
        assert!(matches!(
            handle_exit(&mut st, &mem, call, false),
            Step::Return { .. }
        ));
        // kill(0, SIGUSR1) from a guest whose stack is at 0xf000
        let mut kill = hypercall(62, [0, libc::SIGUSR1 as u64, 0]);
        if let VmExit::InternalError { regs } = &mut kill {
            regs.rsp = 0xf000;
            regs.rbx = 0x77;
        }
        let Step::Return { regs: h, .. } = handle_exit(&mut st, &mem, kill, false) else {
            panic!("not delivered")
        };
        assert_eq!((h.rip, h.rdi), (0x5000, libc::SIGUSR1 as u64));
        assert!(h.rsp < 0xf000 - 128);
        assert_eq!(st.counters()["kvm.signals_delivered"], 1);
        // the handler returns to the restorer, whose rt_sigreturn finds the frame at rsp
        let mut ret = hypercall(15, [0; 3]);
        if let VmExit::InternalError { regs } = &mut ret {
            regs.rsp = h.rsp + 8;
            regs.r11 = 0x202;
        }
        let Step::Return { regs: back, .. } = handle_exit(&mut st, &mem, ret, false) else {
            panic!("no sigreturn")
        };
        // kill returned 0 at the instruction after its syscall, with the guest's registers
        assert_eq!(
            (back.rip, back.rax, back.rsp, back.rbx),
            (0x40_1234, 0, 0xf000, 0x77)
        );
        assert_eq!(back.rflags & 0x2, 0x2);
        // a sigreturn with no frame under it is the guest's crash, not the VMM's
        let mut bad = hypercall(15, [0; 3]);
        if let VmExit::InternalError { regs } = &mut bad {
            regs.rsp = 1 << 40;
        }
        assert!(matches!(
            handle_exit(&mut st, &mem, bad, false),
            Step::Stop(GuestStop::Crashed { signal, .. }) if signal == libc::SIGSEGV
        ));
    }
}
