//! VM-exit handling as a pure function, in the Firecracker model: the vCPU loop decodes each
//! exit of kvm-ioctls into a [`VmExit`] (reading registers where the exit needs them), and
//! [`handle_exit`] decides what the VMM does next, as a [`Step`], with no ioctl of its own. The
//! unit tests below feed it synthetic exits.

use super::layout::{fault_vector, HYPERCALL};
use super::uart;
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
}

impl Counted {
    const ALL: [Counted; 7] = [
        Counted::InternalError,
        Counted::Hypercall,
        Counted::GuestFault,
        Counted::MmioUart,
        Counted::UartByte,
        Counted::Intr,
        Counted::Signal,
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
}

impl ExitState {
    /// Fresh state around `abi`.
    pub fn new(abi: Abi) -> ExitState {
        ExitState {
            abi,
            ring: None,
            counts: [0; Counted::ALL.len()],
        }
    }

    fn bump(&mut self, c: Counted) {
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
        // the micro-VM does not deliver signals to guest handlers (Setup::delivers_signals)
        Action::Deliver(..) | Action::SigReturn => {
            return crashed(
                libc::SIGSEGV,
                "signal handlers are not run in the micro-VM".into(),
            )
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
    Step::Return { regs, fs_base }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::layout::{FAULT_BASE, UART};
    use crate::linux_abi::testmem::TestMem;
    use crate::linux_abi::{Layout, Output, Setup};

    fn state() -> (ExitState, TestMem) {
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
            delivers_signals: false,
            own_process: false,
            exe: None,
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
        let Step::Return { regs, fs_base } = step else {
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
}
