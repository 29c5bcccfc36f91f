//! The `kvm` backend: vbench's own micro-VM. One vCPU in 64-bit long mode runs the unmodified
//! static program at CPL3 on identity-mapped guest RAM. A tiny guest kernel (page tables, GDT,
//! TSS, IDT and a `syscall` entry stub written at VM start) answers getpid/gettid inside the
//! guest; every other syscall leaves through one paravirtual hypercall, a jump to guest-physical
//! memory with no memory slot behind it, which the VMM services through [`crate::linux_abi`].
//! With `--kvm-console uart` the stub writes stdout/stderr byte by byte to an emulated 16550
//! UART instead: trap-and-emulate, one exit per register access.
//!
//! The VMM works where `syscall` enters ring 0 (VMX/SVM) and where it stays at ring 3 (nested
//! KVM through kvm_pvm, as on this project's machines); the first syscall tells which, and the
//! mode is recorded in the sample's counters (`kvm.syscall_ring`).
//!
//! Files: [`vm`] sets a VM up, [`exit`] decides what each VM exit means (a pure function,
//! tested with synthetic exits), [`uart`] is the emulated serial port, [`layout`] and `stub`
//! are the guest kernel's tables and code; this file runs the vCPU loop.

/// The system calls the guest kernel answers inside the guest, without a VM exit (where
/// `syscall` stays at CPL3; clock_gettime for the clocks the clock page keeps).
pub const IN_GUEST: [i64; 3] = [libc::SYS_getpid, libc::SYS_gettid, libc::SYS_clock_gettime];

pub mod exit;
pub mod layout;
mod paging;
mod stub;
mod uart;
pub mod vdso;
mod vm;

use crate::linux_abi::{self, Abi, GuestMem, OutsideGuest};
use crate::session::{self, GuestOutputs, GuestRun, GuestStop, PinGuard, Watchdog};
use crate::{Availability, Backend, BackendError, Invocation, Outcome, Stdio};
use exit::{handle_exit, ExitState, Step, VmExit};
use kvm_bindings::{kvm_regs, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd};
use layout::*;
use nix::sys::pthread::{pthread_kill, pthread_self};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::Once;
use std::time::Instant;
use vm_memory::{Bytes, GuestAddress};

/// How the guest's stdout/stderr leave the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// One hypercall per write() (paravirtual).
    Hypercall,
    /// The stub drives an emulated UART: two exits per byte (trap-and-emulate).
    Uart,
}

/// Micro-VM settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KvmConfig {
    /// Guest RAM in bytes (at most 1 GiB).
    pub mem_bytes: u64,
    /// Console path.
    pub console: Console,
}

impl Default for KvmConfig {
    fn default() -> Self {
        KvmConfig {
            mem_bytes: 512 << 20,
            console: Console::Hypercall,
        }
    }
}

/// The guest kernel's code, assembled once per backend: the stub page, the ring-0 page and the
/// vDSO.
#[derive(Debug)]
pub struct GuestCode {
    /// The `syscall` entry page.
    pub stub: stub::Stub,
    /// The ring-0 page (the flush).
    pub kernel: Vec<u8>,
    /// The vDSO image, for [`layout::VDSO`].
    pub vdso: Vec<u8>,
}

/// The KVM backend.
#[derive(Debug, Default)]
pub struct KvmBackend {
    config: KvmConfig,
    /// /dev/kvm, opened once.
    kvm: std::sync::OnceLock<Result<Kvm, String>>,
    /// KVM's supported CPUID table, asked once (the ioctl costs about 0.35 ms here).
    cpuid: std::sync::OnceLock<Result<CpuId, i32>>,
    /// The guest kernel's code for the configured console (assembling costs about 0.7 ms).
    code: std::sync::OnceLock<Result<GuestCode, String>>,
    /// KVM's TSC frequency, kHz.
    tsc_khz: std::sync::OnceLock<Option<u32>>,
}

impl KvmBackend {
    /// A backend with `config`.
    pub fn new(config: KvmConfig) -> Self {
        KvmBackend {
            config,
            kvm: std::sync::OnceLock::new(),
            cpuid: std::sync::OnceLock::new(),
            code: std::sync::OnceLock::new(),
            tsc_khz: std::sync::OnceLock::new(),
        }
    }

    /// What stays the same from one VM to the next is made once per backend and reused, so a
    /// VM's cold start is the VM's own cost: the supported CPUID table and the guest stub.
    fn supported_cpuid(&self, kvm: &Kvm) -> Result<&CpuId, BackendError> {
        self.cpuid
            .get_or_init(|| {
                kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                    .map_err(|e| e.errno())
            })
            .as_ref()
            .map_err(|errno| BackendError::Os {
                what: "KVM: supported CPUID".into(),
                source: std::io::Error::from_raw_os_error(*errno),
            })
    }

    fn guest_code(&self) -> Result<&GuestCode, BackendError> {
        self.code
            .get_or_init(|| {
                let make = || -> Result<GuestCode, iced_x86::IcedError> {
                    let (vdso, entries) = vdso::image(VDSO)?;
                    Ok(GuestCode {
                        stub: stub::assemble(self.config.console, VDSO + entries.read_clock)?,
                        kernel: stub::assemble_kernel()?,
                        vdso,
                    })
                };
                let code = make().map_err(|e| format!("assembling the guest kernel: {e}"))?;
                if code.vdso.len() as u64 > VDSO_PAGES * 4096 {
                    return Err(format!(
                        "the vDSO takes {} bytes, more than its {VDSO_PAGES} pages",
                        code.vdso.len()
                    ));
                }
                Ok(code)
            })
            .as_ref()
            .map_err(|e| invalid(e.clone()))
    }

    /// KVM's TSC frequency (kHz), asked once: the clock page's scale (None: the guest's clock
    /// calls leave the guest).
    fn tsc_khz(&self, vcpu: &VcpuFd) -> Option<u32> {
        *self
            .tsc_khz
            .get_or_init(|| vcpu.get_tsc_khz().ok().filter(|k| *k > 0))
    }

    fn kvm(&self) -> Result<&Kvm, String> {
        self.kvm
            .get_or_init(|| Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}")))
            .as_ref()
            .map_err(Clone::clone)
    }
}

const STACK_SIZE: u64 = 8 << 20;
const PIE_BASE: u64 = 0x40_0000;
const KICK: Signal = Signal::SIGUSR2;

/// Names of the kvm backend's counters that other crates read.
pub mod counters {
    /// The ring `syscall` entered in the guest (0 with VMX/SVM, 3 under kvm_pvm).
    pub const SYSCALL_RING: &str = "kvm.syscall_ring";
    /// Syscalls forwarded to the VMM (hypercalls), after the probe.
    pub const HYPERCALLS: &str = "kvm.hypercalls";
    /// VM creation to the program's first instruction, ns.
    pub const COLD_START_NS: &str = "kvm.cold_start_ns";
    /// Syscalls the guest stub answered inside the guest.
    pub const GUEST_SYSCALLS: &str = "kvm.guest_syscalls";
    /// Of them, clock_gettime (from the clock page; the vDSO's calls make no syscall at all).
    pub const GUEST_CLOCK_GETTIME: &str = "kvm.guest_syscalls.clock_gettime";
    /// 1: the VMM published the clock page (the vDSO and the stub answer clocks in the guest).
    pub const CLOCK_PAGE: &str = "kvm.clock_page";
    /// Guest RAM configured, bytes.
    pub const GUEST_RAM_BYTES: &str = "kvm.guest_ram_bytes";
    /// Returns to the guest through its kernel's ring-0 flush of changed page-table entries.
    pub const PT_FLUSHES: &str = "kvm.pt_flushes";
    /// Page faults on a page-table entry changed without a flush yet (resumed through one).
    pub const PT_STALE_FAULTS: &str = "kvm.pt_stale_faults";
    /// 2 MiB guest pages split into 4 KiB pages for a protection change.
    pub const PT_SPLITS: &str = "kvm.pt_splits";
    /// Protection changes not enforced: the page-table pool was used up.
    pub const PT_UNENFORCED: &str = "kvm.pt_unenforced";
    /// Guest RAM the guest touched (resident on the host at the end), bytes.
    pub const GUEST_RAM_TOUCHED_BYTES: &str = "kvm.guest_ram_touched_bytes";
}

/// Guest RAM as the syscall layer sees it: the guest's user memory above the guest kernel's
/// structures (which are supervisor-only in its page tables), identity-mapped, at an offset in
/// the VMM's mapping of guest RAM. The guest's page tables ([`paging`]) say what the guest
/// may read and write: the layer's accesses for it are checked against them (EFAULT, as a
/// kernel's copy to or from user memory), and its protection changes are made in them.
struct Mem<'a> {
    base: *mut u8,
    ram: u64,
    paging: &'a paging::Paging,
}

impl Mem<'_> {
    fn of(host_ram: (*const u8, usize), paging: &paging::Paging) -> Mem<'_> {
        Mem {
            base: host_ram.0.cast_mut(),
            ram: host_ram.1 as u64,
            paging,
        }
    }
}

impl GuestMem for Mem<'_> {
    fn host_range(&self, addr: u64, len: u64, write: bool) -> Result<*mut u8, OutsideGuest> {
        let p = self.host_addr(addr, len)?;
        if self.paging.allows(addr, len, write) {
            Ok(p)
        } else {
            Err(OutsideGuest)
        }
    }

    fn host_addr(&self, addr: u64, len: u64) -> Result<*mut u8, OutsideGuest> {
        match addr.checked_add(len) {
            Some(end) if addr >= LOAD_MIN && end <= self.ram => {
                Ok(self.base.wrapping_add(addr as usize))
            }
            _ => Err(OutsideGuest),
        }
    }

    fn protect(&self, addr: u64, len: u64, prot: i32) -> i32 {
        self.paging.protect(addr, len, prot);
        // guest RAM stays read-write on the host: the guest's page tables protect it
        libc::PROT_READ | libc::PROT_WRITE
    }

    /// The kernel's zeroing of pages it hands out, whatever the guest's protection of them.
    fn zero(&self, addr: u64, len: u64) -> Result<(), OutsideGuest> {
        let p = self.host_addr(addr, len)?;
        // SAFETY: host_addr checked that the range is guest RAM, which the VMM maps read-write.
        unsafe { std::ptr::write_bytes(p, 0, len as usize) };
        Ok(())
    }

    fn cheap_remap(&self) -> bool {
        false
    }
}

fn err(what: &str) -> impl FnOnce(kvm_ioctls::Error) -> BackendError + '_ {
    move |e| BackendError::Os {
        what: format!("KVM: {what}"),
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

fn invalid(msg: String) -> BackendError {
    BackendError::Invalid(msg)
}

static KICK_HANDLER: Once = Once::new();

extern "C" fn on_kick(_: libc::c_int) {}

/// Installs a no-op handler (without SA_RESTART) for the signal that kicks a vCPU out of KVM_RUN.
fn install_kick_handler() {
    KICK_HANDLER.call_once(|| {
        let sa = SigAction::new(
            SigHandler::Handler(on_kick),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing (so it is async-signal-safe), and the signal is
        // used by vbench for nothing else.
        let _ = unsafe { sigaction(KICK, &sa) };
    });
}

/// The watchdog's kick: KVM leaves KVM_RUN at once (immediate_exit, and a signal for a vCPU
/// already inside).
fn kicker(vcpu: &mut VcpuFd) -> impl Fn() + Send + 'static {
    let run_ptr = vcpu.get_kvm_run() as *mut kvm_bindings::kvm_run as usize;
    let me = pthread_self();
    move || {
        // SAFETY: the vCPU (and its kvm_run mapping) outlives the watchdog, which is stopped
        // (joined) before the vCPU is dropped; immediate_exit is a plain u8 that KVM reads on
        // entry.
        unsafe {
            std::ptr::write_volatile(
                std::ptr::addr_of_mut!((*(run_ptr as *mut kvm_bindings::kvm_run)).immediate_exit),
                1,
            );
        }
        // the vCPU thread lives until the watchdog is joined; the signal has a no-op handler
        let _ = pthread_kill(me, KICK);
    }
}

impl Backend for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn describe(&self) -> &'static str {
        "the same binary in vbench's micro-VM on KVM"
    }

    fn availability(&self) -> Availability {
        match Kvm::new() {
            Ok(k) if k.get_api_version() == 12 => Availability::Available,
            Ok(k) => Availability::Unavailable(format!(
                "KVM API version {} (need 12)",
                k.get_api_version()
            )),
            Err(e) => Availability::Unavailable(format!("cannot open /dev/kvm: {e}")),
        }
    }

    fn environment_notes(&self, samples: &[&vbench_results::Sample]) -> Vec<(String, String)> {
        samples
            .iter()
            .find_map(|s| s.counters.get(counters::SYSCALL_RING))
            .map(|ring| {
                let mode = if *ring == 3 {
                    "stays at CPL3 (nested KVM, e.g. kvm_pvm): every forwarded syscall is a nested VM exit"
                } else {
                    "enters CPL0 (hardware-assisted VMX/SVM)"
                };
                vec![("kvm_guest_syscall".to_string(), mode.to_string())]
            })
            .unwrap_or_default()
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        let t_create = Instant::now();
        let ram = self.config.mem_bytes;
        vm::check_ram(ram)?;
        let _pin = PinGuard::to(inv.cpu)?; // the vCPU runs on this thread
        let bytes = inv.program.bytes()?;
        let kvm = self.kvm().map_err(|reason| BackendError::Unavailable {
            backend: "kvm",
            reason,
        })?;
        let argv = session::guest_argv(inv);
        let execfn = session::guest_execfn(inv, &argv);
        let mut m = vm::build(
            self,
            kvm,
            ram,
            &inv.program.name(),
            &bytes,
            &argv,
            &session::guest_env(inv)
                .iter()
                .map(Vec::as_slice)
                .collect::<Vec<_>>(),
            &vm::ProgramAux {
                execfn: &execfn,
                ids: linux_abi::aux_ids(inv.abi),
            },
        )?;
        // the break grows up and mappings down through one range: either may take what the
        // other has not
        let abi = Abi::new(linux_abi::Setup {
            layout: linux_abi::Layout {
                brk_start: m.brk_start,
                brk_limit: m.mmap_hi,
                mmap_lo: m.brk_start,
                mmap_hi: m.mmap_hi,
                mmap_near: 0,
            },
            outputs: GuestOutputs::for_stdio(inv.stdio),
            inherit_stdin: inv.stdio == Stdio::Inherit,
            policy: inv.abi,
            allowed: session::allowed_paths(inv),
            delivers_signals: true,
            own_process: false,
            exe: session::guest_exe(inv),
            timer_kick: std::ptr::addr_of_mut!(m.vcpu.get_kvm_run().immediate_exit) as u64,
        });
        // getpid and gettid are answered in the guest, from the pid the stub reads here
        m.mem
            .write_slice(&abi.pid().to_le_bytes(), GuestAddress(KDATA + stub::PID))
            .map_err(|e| invalid(format!("guest memory: {e}")))?;
        let mut st = ExitState::new(abi);
        install_kick_handler();
        let mut watchdog = Watchdog::start(inv.timeout, inv.cancel.clone(), kicker(&mut m.vcpu));
        let startup = t_create.elapsed();
        let times0 = session::thread_times();
        let stop = vcpu_loop(&mut m, &mut st, &watchdog);
        let wall = t_create.elapsed();
        let times1 = session::thread_times();
        watchdog.stop();
        let stop = stop?;

        let mut counters = st.counters();
        if let Some(ring) = st.ring {
            counters.insert(counters::SYSCALL_RING.into(), u64::from(ring));
        }
        // the guest kernel's own counts (the guest could overwrite them: they are its own)
        let kdata = |off: u64| {
            let mut k = [0u8; 8];
            m.mem
                .read_slice(&mut k, GuestAddress(KDATA + off))
                .map_or(0, |_| u64::from_le_bytes(k))
        };
        let (pids, clocks) = (kdata(0), kdata(stub::CLOCK_CALLS));
        counters.insert(counters::GUEST_SYSCALLS.into(), pids.wrapping_add(clocks));
        counters.insert(counters::GUEST_CLOCK_GETTIME.into(), clocks);
        counters.insert(counters::CLOCK_PAGE.into(), u64::from(m.clock));
        counters.extend(st.abi.counters());
        counters.insert(counters::COLD_START_NS.into(), startup.as_nanos() as u64);
        let (splits, unsplit) = m.paging.stats();
        for (name, n) in [
            (counters::PT_FLUSHES, st.flushes),
            (counters::PT_STALE_FAULTS, st.stale_faults),
            (counters::PT_SPLITS, splits),
            (counters::PT_UNENFORCED, unsplit),
        ] {
            if n > 0 {
                counters.insert(name.into(), n);
            }
        }
        counters.insert(counters::GUEST_RAM_BYTES.into(), ram);
        let touched = session::resident_bytes(m.host_ram.0, m.host_ram.1);
        counters.insert(counters::GUEST_RAM_TOUCHED_BYTES.into(), touched);
        let (notes, outputs) = session::take_abi_results(&mut st.abi);
        let run = GuestRun {
            backend: "kvm",
            stop,
            wall,
            times: (
                times1.0.saturating_sub(times0.0),
                times1.1.saturating_sub(times0.1),
            ),
            // the guest's memory is its RAM: what it touched of it, plus nothing else of the
            // VMM's (the VMM's own RSS is the harness's)
            max_rss_kib: Some(touched / 1024),
            startup: Some(startup),
            counters,
            notes,
        };
        Ok(session::guest_outcome(inv, run, watchdog.cause(), outputs))
    }
}

/// Runs the vCPU until the guest stops: each exit is decoded, handed to [`handle_exit`], and
/// the step it returns is carried out.
fn vcpu_loop(
    m: &mut vm::Machine,
    st: &mut ExitState,
    watchdog: &Watchdog,
) -> Result<GuestStop, BackendError> {
    loop {
        let step = enter(m, st, watchdog.kicked())?;
        match step {
            Step::Resume => {
                if let Some(stop) = alarm_between(m, st, watchdog)? {
                    return Ok(stop);
                }
            }
            Step::Probe => probe(m, st)?,
            Step::Return {
                mut regs,
                fs_base,
                syscall,
            } => {
                if let Some(stop) = take_alarm(m, st, &mut regs, syscall, watchdog) {
                    return Ok(stop);
                }
                if st.ring == Some(0) || fs_base.is_some() {
                    let mut s = m.vcpu.get_sregs().map_err(err("get sregs"))?;
                    if st.ring == Some(0) {
                        vm::to_user_mode(&mut s); // as sysret would
                    }
                    if let Some(base) = fs_base {
                        s.fs.base = base;
                    }
                    m.vcpu.set_sregs(&s).map_err(err("set sregs"))?;
                }
                let regs = through_flush(m, st, regs, false)?;
                set_regs(&mut m.vcpu, m.sync, regs)?;
            }
            Step::Fault(v) => {
                if let Some(stop) = on_fault(m, st, v)? {
                    return Ok(stop);
                }
            }
            Step::Stop(s) => return Ok(s),
        }
    }
}

/// The guest's interval timer fired: SIGALRM, raised at the guest as it stands in `at` (the
/// return from `syscall`, when given: a call its host side was interrupted in starts again
/// after an SA_RESTART handler, and at once when no handler runs, as natively nothing would
/// have interrupted it). Some: the signal ended the run.
fn take_alarm(
    m: &mut vm::Machine,
    st: &mut ExitState,
    at: &mut kvm_regs,
    syscall: Option<u64>,
    watchdog: &Watchdog,
) -> Option<GuestStop> {
    // the kick byte first, then the count: an expiry after this one stays counted and kicked
    clear_kick(m, watchdog);
    if st.abi.timer_fired() == 0 {
        return None;
    }
    let interrupted = syscall.filter(|_| at.rax as i64 == -i64::from(libc::EINTR));
    match st.abi.raise(libc::SIGALRM, at.rax as i64) {
        linux_abi::Action::Deliver(signal, _) => {
            let mut from = *at;
            if let Some(nr) = interrupted {
                let restart = st.abi.signals.actions[signal as usize][1]
                    & linux_abi::sigframe::SA_RESTART
                    != 0;
                if restart && linux_abi::sigframe::RESTARTABLE.contains(&(nr as i64)) {
                    from.rip -= 2; // the syscall instruction
                    from.rax = nr;
                }
            }
            let info = linux_abi::sigframe::SigInfo {
                signal,
                code: linux_abi::sigframe::SI_KERNEL,
                addr: 0,
                info: None,
            };
            let gm = Mem::of(m.host_ram, &m.paging);
            if !exit::deliver(&mut from, &gm, &mut st.abi.signals, &info) {
                return Some(GuestStop::Crashed {
                    signal: libc::SIGSEGV,
                    message: "the guest's stack cannot take the frame of SIGALRM".into(),
                });
            }
            st.bump(exit::Counted::SignalDelivered);
            *at = from;
        }
        linux_abi::Action::Killed(signal) => {
            return Some(GuestStop::Crashed {
                signal,
                message: format!("killed by signal {signal} (its interval timer)"),
            })
        }
        _ => {
            // ignored, or blocked (now pending): the call goes on
            if let Some(nr) = interrupted {
                at.rip -= 2;
                at.rax = nr;
                if let Some(mask) = st.abi.signals.saved_mask.take() {
                    st.abi.signals.mask = mask; // a sigsuspend starts again from the old mask
                }
            }
        }
    }
    None
}

/// The guest's timer kicked the vCPU out (kvm_run.immediate_exit): the byte is cleared so the
/// guest runs again, unless the watchdog kicked too (its kick must stop the run; it sets its
/// flag before the byte, so the flag read after the clear tells).
fn clear_kick(m: &mut vm::Machine, watchdog: &Watchdog) {
    let run = m.vcpu.get_kvm_run();
    run.immediate_exit = 0;
    if watchdog.kicked() {
        run.immediate_exit = 1;
    }
}

/// [`take_alarm`] for a guest interrupted in its own code (a vCPU kicked out of KVM_RUN). In
/// the guest kernel's ring-0 code the signal waits: the timer fires again 1 ms later.
fn alarm_between(
    m: &mut vm::Machine,
    st: &mut ExitState,
    watchdog: &Watchdog,
) -> Result<Option<GuestStop>, BackendError> {
    if st.ring.is_none() {
        return Ok(None); // the probe has not run yet
    }
    let sregs = m.vcpu.get_sregs().map_err(err("get sregs"))?;
    if sregs.cs.dpl != 3 {
        clear_kick(m, watchdog);
        if st.abi.timer_fired() > 0 {
            st.abi
                .timer_again_after(std::time::Duration::from_millis(1));
        }
        return Ok(None);
    }
    let mut regs = m.vcpu.get_regs().map_err(err("get regs"))?;
    let before = regs;
    let stop = take_alarm(m, st, &mut regs, None, watchdog);
    if stop.is_none() && regs != before {
        let regs = through_flush(m, st, regs, false)?;
        m.vcpu.set_regs(&regs).map_err(err("set regs"))?;
    }
    Ok(stop)
}

/// Most runs of changed entries the flush takes from PT_RUNS (a count, then pairs, in a page).
const MAX_RUNS: usize = 255;

/// Where the VMM took a permission away in the guest's page tables (or `force`), the guest
/// resumes through its kernel's ring-0 flush of the changed entries, which then goes on to
/// `regs.rip`.
fn through_flush(
    m: &vm::Machine,
    st: &mut ExitState,
    mut regs: kvm_regs,
    force: bool,
) -> Result<kvm_regs, BackendError> {
    let runs = m.paging.take_runs(MAX_RUNS, force);
    if runs.is_empty() {
        return Ok(regs);
    }
    let mut list = Vec::with_capacity(8 + 16 * runs.len());
    list.extend((runs.len() as u64).to_le_bytes());
    for (at, n) in runs {
        list.extend(at.to_le_bytes());
        list.extend(n.to_le_bytes());
    }
    let put = |b: &[u8], at: u64| {
        m.mem
            .write_slice(b, GuestAddress(at))
            .map_err(|e| invalid(format!("guest memory: {e}")))
    };
    put(&list, PT_RUNS)?;
    put(&regs.rip.to_le_bytes(), KDATA + stub::RET)?;
    regs.rip = STUB + stub::FLUSH;
    st.flushes += 1;
    Ok(regs)
}

/// An exit whose decoding needs the vCPU's registers, read once kvm_run is no longer borrowed.
enum Deferred {
    InternalError,
    MmioOutside(u64),
    Shutdown,
    Hlt,
    Other(String),
}

/// Enters the guest once and decides what its exit means. UART accesses (the hot exits of
/// the trap-and-emulate console) are handled while kvm_run's data is borrowed; the others are
/// decoded after reading the registers they need.
fn enter(m: &mut vm::Machine, st: &mut ExitState, kicked: bool) -> Result<Step, BackendError> {
    let gm = Mem::of(m.host_ram, &m.paging);
    let deferred = match m.vcpu.run() {
        Ok(VcpuExit::MmioWrite(addr, data)) if uart::claims(addr) => {
            return Ok(handle_exit(
                st,
                &gm,
                VmExit::MmioWrite { addr, data },
                kicked,
            ))
        }
        Ok(VcpuExit::MmioRead(addr, data)) if uart::claims(addr) => {
            return Ok(handle_exit(
                st,
                &gm,
                VmExit::MmioRead { addr, data },
                kicked,
            ))
        }
        Ok(VcpuExit::InternalError) => Deferred::InternalError,
        Ok(VcpuExit::MmioWrite(addr, _)) | Ok(VcpuExit::MmioRead(addr, _)) => {
            Deferred::MmioOutside(addr)
        }
        Ok(VcpuExit::Shutdown) => Deferred::Shutdown,
        Ok(VcpuExit::Hlt) => Deferred::Hlt,
        Ok(VcpuExit::Intr) => return Ok(handle_exit(st, &gm, VmExit::Intr, kicked)),
        Ok(other) => Deferred::Other(format!("{other:?}")),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            return Ok(handle_exit(st, &gm, VmExit::Interrupted, kicked))
        }
        Err(e) => return Err(err("KVM_RUN")(e)),
    };
    let regs = if m.sync && matches!(deferred, Deferred::InternalError) {
        m.vcpu.sync_regs().regs
    } else {
        m.vcpu.get_regs().map_err(err("get regs"))?
    };
    let rip = regs.rip;
    let exit = match deferred {
        Deferred::InternalError => VmExit::InternalError { regs },
        Deferred::MmioOutside(addr) => VmExit::MmioOutside { addr, rip },
        Deferred::Shutdown => VmExit::Shutdown { rip },
        Deferred::Hlt => VmExit::Hlt { rip },
        Deferred::Other(what) => VmExit::Other { what, rip },
    };
    Ok(handle_exit(st, &gm, exit, kicked))
}

fn set_regs(vcpu: &mut VcpuFd, sync: bool, regs: kvm_regs) -> Result<(), BackendError> {
    if sync {
        vcpu.sync_regs_mut().regs = regs;
        vcpu.set_sync_dirty_reg(SyncReg::Register);
        Ok(())
    } else {
        vcpu.set_regs(&regs).map_err(err("set regs"))
    }
}

/// The probe's syscall: which ring does `syscall` enter on this host? At CPL3 (kvm_pvm) the
/// syscalls go through the stub, which answers getpid/gettid (and drives the UART) inside the
/// guest; at CPL0 straight to the hypercall page. Then the program starts.
fn probe(m: &mut vm::Machine, st: &mut ExitState) -> Result<(), BackendError> {
    let mut s = m.vcpu.get_sregs().map_err(err("get sregs"))?;
    st.ring = Some(s.cs.dpl);
    if s.cs.dpl == 3 {
        vm::set_msrs(&m.vcpu, STUB)?;
    } else {
        vm::to_user_mode(&mut s);
        m.vcpu.set_sregs(&s).map_err(err("set sregs"))?;
    }
    m.vcpu.set_regs(&m.program_start).map_err(err("set regs"))
}

/// si_code and si_addr Linux gives the signal of exception `vector` at `rip` (`code`: the
/// error code, `cr2`: the fault address).
fn fault_info(vector: u8, code: Option<u64>, rip: u64, cr2: u64) -> (i32, u64) {
    match vector {
        // SEGV_ACCERR for a present page, SEGV_MAPERR for an absent one
        14 => (if code.unwrap_or(0) & 1 != 0 { 2 } else { 1 }, cr2),
        0 => (1, rip),       // FPE_INTDIV
        6 => (2, rip),       // ILL_ILLOPN
        1 => (2, rip),       // TRAP_TRACE
        17 => (1, cr2),      // BUS_ADRALN
        16 | 19 => (7, rip), // FPE_FLTINV
        _ => (linux_abi::sigframe::SI_KERNEL, 0),
    }
}

/// An exception the guest took. Its frame on the ring-0 stack gives the user state it
/// interrupted. A page fault that the page tables now allow was a stale entry: the guest
/// resumes through a flush. Otherwise the fault's signal goes to the program's handler, as
/// Linux delivers it (a blocked or ignored fault kills, as natively); with no handler the run
/// stops with the fault's signal.
fn on_fault(
    m: &mut vm::Machine,
    st: &mut ExitState,
    vector: u8,
) -> Result<Option<GuestStop>, BackendError> {
    let regs = m.vcpu.get_regs().map_err(err("get regs"))?;
    let mut sregs = m.vcpu.get_sregs().map_err(err("get sregs"))?;
    let mut frame = [0u64; 6];
    for (i, w) in frame.iter_mut().enumerate() {
        *w = m
            .mem
            .read_obj(GuestAddress(regs.rsp + 8 * i as u64))
            .unwrap_or(0);
    }
    let (code, [rip, cs, rflags, rsp, _ss]) = if has_error_code(vector) {
        (
            Some(frame[0]),
            [frame[1], frame[2], frame[3], frame[4], frame[5]],
        )
    } else {
        (None, [frame[0], frame[1], frame[2], frame[3], frame[4]])
    };
    let (name, signal) = vector_name(vector);
    let mut message = format!("guest crashed: {name} (vector {vector}) at rip {rip:#x}");
    if vector == 14 {
        message.push_str(&format!(", address {:#x}", sregs.cr2));
    }
    if let Some(c) = code {
        message.push_str(&format!(", error code {c:#x}"));
    }
    let crashed = Ok(Some(GuestStop::Crashed { signal, message }));
    if cs & 3 != 3 {
        return crashed; // the guest kernel's own fault
    }
    let mut user = kvm_regs {
        rip,
        rsp,
        rflags,
        ..regs
    };
    let ((stores, stores_end), efault) = m.fixup;
    let fixup = matches!(vector, 13 | 14) && (stores..stores_end).contains(&rip);
    let stale = vector == 14
        && code.is_some_and(|c| {
            let gm = Mem::of(m.host_ram, &m.paging);
            gm.host_range(sregs.cr2, 1, c & 2 != 0).is_ok()
        });
    if fixup {
        // the stub's store to the caller's buffer: the call returns EFAULT (its exception table)
        user.rip = efault;
    } else if stale && st.last_stale != Some(rip) {
        // a retry that faults again at the same place is a real fault
        st.last_stale = Some(rip);
        st.stale_faults += 1;
    } else {
        st.last_stale = None;
        let (si_code, addr) = fault_info(vector, code, rip, sregs.cr2);
        let sigs = &mut st.abi.signals;
        let bit = 1u64 << (signal - 1);
        if sigs.mask & bit != 0 || sigs.actions[signal as usize][0] == 1 {
            return crashed; // blocked or ignored: the kernel forces the default action
        }
        let info = linux_abi::sigframe::SigInfo {
            signal,
            code: si_code,
            addr,
            info: None,
        };
        let gm = Mem::of(m.host_ram, &m.paging);
        if !exit::deliver(&mut user, &gm, sigs, &info) {
            return crashed;
        }
        st.bump(exit::Counted::SignalDelivered);
    }
    vm::to_user_mode(&mut sregs); // as iretq would
    m.vcpu.set_sregs(&sregs).map_err(err("set sregs"))?;
    let user = through_flush(m, st, user, stale)?;
    set_regs(&mut m.vcpu, m.sync, user)?;
    Ok(None)
}
