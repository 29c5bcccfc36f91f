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

pub mod layout;
mod stub;

use crate::elf::Elf;
use crate::linux_abi::{self, Abi, Action, GuestMem, Output, OutsideGuest};
use crate::{Availability, Backend, BackendError, Invocation, Outcome, Stdio};
use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_xcrs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuExit, VcpuFd};
use layout::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};
use vbench_results::{Exit, Sample};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

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

/// The KVM backend.
#[derive(Debug, Default)]
pub struct KvmBackend {
    config: KvmConfig,
    /// /dev/kvm, opened once.
    kvm: std::sync::OnceLock<Result<Kvm, String>>,
    /// KVM's supported CPUID table, asked once (the ioctl costs about 0.35 ms here).
    cpuid: std::sync::OnceLock<Result<CpuId, i32>>,
    /// The assembled guest stub for the configured console (assembling costs about 0.7 ms).
    stub: std::sync::OnceLock<Result<Vec<u8>, String>>,
}

impl KvmBackend {
    /// A backend with `config`.
    pub fn new(config: KvmConfig) -> Self {
        KvmBackend {
            config,
            kvm: std::sync::OnceLock::new(),
            cpuid: std::sync::OnceLock::new(),
            stub: std::sync::OnceLock::new(),
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

    fn stub_code(&self) -> Result<&[u8], BackendError> {
        self.stub
            .get_or_init(|| {
                stub::assemble(self.config.console)
                    .map_err(|e| format!("assembling the guest stub: {e}"))
            })
            .as_deref()
            .map_err(|e| invalid(e.clone()))
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
const KICK: libc::c_int = libc::SIGUSR2;

struct Mem<'a>(&'a GuestMemoryMmap);

impl GuestMem for Mem<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutsideGuest> {
        self.0
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| OutsideGuest)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), OutsideGuest> {
        self.0
            .write_slice(data, GuestAddress(addr))
            .map_err(|_| OutsideGuest)
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

fn user_seg(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 3,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

static KICK_HANDLER: Once = Once::new();

extern "C" fn on_kick(_: libc::c_int) {}

/// Installs a no-op handler (without SA_RESTART) for the signal that kicks a vCPU out of KVM_RUN.
fn install_kick_handler() {
    KICK_HANDLER.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that does nothing is valid; installing it
        // only changes the disposition of a signal vbench uses for nothing else.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(KICK, &sa, std::ptr::null_mut());
        }
    });
}

/// Why the run stopped.
enum Stop {
    Exited(i32),
    Crashed { signal: i32, message: String },
    Kicked,
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

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        let t_create = Instant::now();
        let cfg = &self.config;
        if cfg.mem_bytes < (16 << 20)
            || cfg.mem_bytes > MAX_RAM
            || !cfg.mem_bytes.is_multiple_of(2 << 20)
        {
            return Err(invalid(format!(
                "guest memory {} bytes: must be a multiple of 2 MiB between 16 MiB and 1 GiB",
                cfg.mem_bytes
            )));
        }
        let bytes = inv.program.bytes()?;
        let elf = Elf::parse(&bytes, PIE_BASE)
            .map_err(|e| invalid(format!("{}: {e}", inv.program.name())))?;
        let ram = cfg.mem_bytes;
        let (lo, hi) = elf.extent();
        let stack_lo = ram - STACK_SIZE;
        if lo < LOAD_MIN || hi > stack_lo / 2 {
            return Err(invalid(format!(
                "{}: segments at {lo:#x}..{hi:#x} do not fit the guest ({LOAD_MIN:#x}..{:#x} with {} MiB of RAM)",
                inv.program.name(),
                stack_lo / 2,
                ram >> 20
            )));
        }

        let kvm = self.kvm().map_err(|reason| BackendError::Unavailable {
            backend: "kvm",
            reason,
        })?;
        let vm = kvm.create_vm().map_err(err("create VM"))?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram as usize)])
            .map_err(|e| invalid(format!("guest memory: {e}")))?;
        let host = mem
            .get_host_address(GuestAddress(0))
            .map_err(|e| invalid(format!("guest memory: {e}")))?;
        // Huge pages make the guest's first touch of memory cheap (one fault per 2 MiB), but each
        // costs zeroing 2 MiB on the host: keep the kernel structures, the usual load addresses
        // and the initial stack on small pages so cold start stays short.
        let (huge_lo, huge_hi) = (4u64 << 20, ram - (2 << 20));
        // SAFETY: advising the kernel about part of a mapping vm-memory owns; no memory is
        // accessed and the range lies inside the mapping.
        unsafe {
            libc::madvise(
                host.add(huge_lo as usize).cast(),
                (huge_hi - huge_lo) as usize,
                libc::MADV_HUGEPAGE,
            )
        };
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram,
            userspace_addr: host as u64,
        };
        // SAFETY: the region is backed by `mem`, which outlives the VM (dropped after it below).
        unsafe { vm.set_user_memory_region(region) }.map_err(err("set memory region"))?;

        // kernel structures
        let mut low = vec![0u8; RSP0 as usize];
        page_tables(&mut low, ram);
        gdt_tss(&mut low);
        idt(&mut low);
        // only the pages that hold something: fresh guest RAM is already zero
        for (from, to) in [(PML4, STUB), (PD_UART_PAGE, PD_UART_PAGE + 0x1000)] {
            mem.write_slice(&low[from as usize..to as usize], GuestAddress(from))
                .map_err(|e| invalid(format!("guest memory: {e}")))?;
        }
        let code = self.stub_code()?;
        mem.write_slice(code, GuestAddress(STUB))
            .map_err(|e| invalid(format!("guest memory: {e}")))?;

        // program image
        for s in &elf.segments {
            let data = &bytes[s.offset as usize..(s.offset + s.filesz) as usize];
            mem.write_slice(data, GuestAddress(s.vaddr))
                .map_err(|e| invalid(format!("loading segment: {e}")))?;
        }
        let mut argv: Vec<Vec<u8>> = vec![inv.program.name().into_bytes()];
        argv.extend(
            inv.args
                .iter()
                .map(|a| std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()).to_vec()),
        );
        let rsp = crate::elf::initial_stack(
            ram,
            &elf,
            &argv,
            &[b"PATH=/bin", b"HOME=/"],
            &mut |at, b| {
                mem.write_slice(b, GuestAddress(at))
                    .map_err(|e| e.to_string())
            },
        )
        .map_err(invalid)?;

        // vCPU
        let mut vcpu = vm.create_vcpu(0).map_err(err("create vCPU"))?;
        // With KVM_CAP_SYNC_REGS the registers travel in kvm_run: no GET/SET_REGS ioctl per exit.
        let sync = kvm.check_extension(Cap::SyncRegs);
        if sync {
            vcpu.set_sync_valid_reg(SyncReg::Register);
        }
        let cpuid = self.supported_cpuid(kvm)?;
        vcpu.set_cpuid2(cpuid).map_err(err("set CPUID"))?;
        let mut sregs = vcpu.get_sregs().map_err(err("get sregs"))?;
        sregs.cr0 = 0x8005_0033; // PE MP ET NE WP AM PG
        sregs.cr3 = PML4;
        sregs.cr4 = (1 << 5) | (1 << 9) | (1 << 10) | (1 << 18); // PAE OSFXSR OSXMMEXCPT OSXSAVE
        sregs.efer = 0x501; // SCE LME LMA
        sregs.gdt.base = GDT;
        sregs.gdt.limit = GDT_LIMIT;
        sregs.idt.base = IDT;
        sregs.idt.limit = IDT_LIMIT;
        sregs.cs = user_seg(USER_CS, true);
        let ds = user_seg(USER_DS, false);
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (ds, ds, ds, ds, ds);
        sregs.tr = kvm_segment {
            base: TSS,
            limit: 0x67,
            selector: TSS_SEL,
            type_: 0xb,
            present: 1,
            ..Default::default()
        };
        vcpu.set_sregs(&sregs).map_err(err("set sregs"))?;
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].value = 0x7; // XCR0: x87, SSE, AVX state
        vcpu.set_xcrs(&xcrs).map_err(err("set XCR0"))?;
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu).map_err(err("set FPU"))?;
        // LSTAR starts on the hypercall page: the first syscall shows which ring it enters.
        set_msrs(&vcpu, HYPERCALL)?;
        // start at the probe: its syscall shows the ring before the program runs
        vcpu.set_regs(&kvm_regs {
            rip: STUB + stub::PROBE,
            rsp,
            rflags: 0x2,
            ..Default::default()
        })
        .map_err(err("set regs"))?;
        let program_start = kvm_regs {
            rip: elf.entry,
            rsp,
            rflags: 0x2, // IF clear: no interrupts are ever injected
            ..Default::default()
        };

        let capture = inv.stdio == Stdio::Capture;
        let outputs = if capture {
            [
                Output::Capture {
                    buf: vec![],
                    total: 0,
                },
                Output::Capture {
                    buf: vec![],
                    total: 0,
                },
            ]
        } else {
            [Output::Inherit(1), Output::Inherit(2)]
        };
        let allowed = inv
            .args
            .iter()
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_file())
            .collect();
        let brk_start = (hi + 0xfff) & !0xfff;
        let mut abi = Abi::new(
            linux_abi::Layout {
                brk_start,
                brk_limit: stack_lo / 2,
                mmap_lo: stack_lo / 2,
                mmap_hi: stack_lo,
            },
            outputs,
            !capture,
            allowed,
        );

        // watchdog: timeout and cancellation kick the vCPU out of KVM_RUN
        install_kick_handler();
        let done = Arc::new(AtomicBool::new(false));
        let kicked = Arc::new(AtomicBool::new(false));
        let run_ptr = vcpu.get_kvm_run() as *mut kvm_bindings::kvm_run as usize;
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let watchdog = {
            let (done, kicked, cancel, timeout) = (
                done.clone(),
                kicked.clone(),
                inv.cancel.clone(),
                inv.timeout,
            );
            std::thread::spawn(move || {
                let start = Instant::now();
                while !done.load(Ordering::Acquire) {
                    let expired = timeout.is_some_and(|t| start.elapsed() >= t);
                    let cancelled = cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
                    if expired || cancelled || kicked.load(Ordering::Relaxed) {
                        kicked.store(true, Ordering::Relaxed);
                        // SAFETY: the vCPU (and its kvm_run mapping) outlives this thread, which
                        // is joined before the vCPU is dropped; immediate_exit is a plain u8
                        // that KVM reads on entry. The signal has a no-op handler.
                        unsafe {
                            std::ptr::write_volatile(
                                std::ptr::addr_of_mut!(
                                    (*(run_ptr as *mut kvm_bindings::kvm_run)).immediate_exit
                                ),
                                1,
                            );
                            libc::pthread_kill(me, KICK);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };

        let startup = t_create.elapsed();
        let mut counters: BTreeMap<String, u64> = BTreeMap::new();
        let bump =
            |c: &mut BTreeMap<String, u64>, k: &str| *c.entry(k.to_string()).or_default() += 1;
        let gm = Mem(&mem);
        let mut ring: Option<u8> = None;
        let stop = loop {
            match vcpu.run() {
                Ok(VcpuExit::InternalError) => {
                    bump(&mut counters, "kvm.exits.internal_error");
                    let mut regs = if sync {
                        vcpu.sync_regs().regs
                    } else {
                        vcpu.get_regs().map_err(err("get regs"))?
                    };
                    if regs.rip == HYPERCALL {
                        bump(&mut counters, "kvm.hypercalls");
                        if ring.is_none() {
                            // the probe's syscall: which ring does `syscall` enter here?
                            let mut s = vcpu.get_sregs().map_err(err("get sregs"))?;
                            ring = Some(s.cs.dpl);
                            counters.insert("kvm.syscall_ring".into(), u64::from(s.cs.dpl));
                            if s.cs.dpl == 3 {
                                // syscall stays at CPL3 here: route it through the stub, which
                                // answers getpid/gettid (and drives the UART) inside the guest
                                set_msrs(&vcpu, STUB)?;
                            } else {
                                s.cs = user_seg(USER_CS, true);
                                s.ss = user_seg(USER_DS, false);
                                vcpu.set_sregs(&s).map_err(err("set sregs"))?;
                            }
                            vcpu.set_regs(&program_start).map_err(err("set regs"))?;
                            counters.insert("kvm.hypercalls".into(), 0);
                            continue;
                        }
                        if ring == Some(0) {
                            // back to user mode, as sysret would
                            let mut s = vcpu.get_sregs().map_err(err("get sregs"))?;
                            s.cs = user_seg(USER_CS, true);
                            s.ss = user_seg(USER_DS, false);
                            vcpu.set_sregs(&s).map_err(err("set sregs"))?;
                        }
                        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
                        let result = match abi.syscall(&gm, regs.rax, args) {
                            Action::Return(v) => v,
                            Action::Exit(code) => break Stop::Exited(code & 0xff),
                            Action::SetFs(base) => {
                                let mut s = vcpu.get_sregs().map_err(err("get sregs"))?;
                                s.fs.base = base;
                                vcpu.set_sregs(&s).map_err(err("set sregs"))?;
                                0
                            }
                        };
                        regs.rax = result as u64;
                        regs.rip = regs.rcx;
                        regs.rflags = regs.r11;
                        if sync {
                            vcpu.sync_regs_mut().regs = regs;
                            vcpu.set_sync_dirty_reg(SyncReg::Register);
                        } else {
                            vcpu.set_regs(&regs).map_err(err("set regs"))?;
                        }
                    } else if let Some(v) = fault_vector(regs.rip) {
                        bump(&mut counters, "kvm.guest_faults");
                        break fault(&vcpu, &mem, &regs, v)?;
                    } else {
                        break Stop::Crashed {
                            signal: libc::SIGSEGV,
                            message: format!("KVM internal error at guest rip {:#x}", regs.rip),
                        };
                    }
                }
                Ok(VcpuExit::MmioWrite(addr, data)) if (UART..UART + 8).contains(&addr) => {
                    bump(&mut counters, "kvm.exits.mmio_uart");
                    if addr == UART {
                        bump(&mut counters, "kvm.uart_bytes");
                        let b = data.first().copied().unwrap_or(0);
                        abi.outputs[0].put(&[b]);
                    }
                }
                Ok(VcpuExit::MmioRead(addr, data)) if (UART..UART + 8).contains(&addr) => {
                    bump(&mut counters, "kvm.exits.mmio_uart");
                    data.fill(0);
                    if addr == UART + 5 {
                        data[0] = 0x60; // LSR: transmitter holding register and line empty
                    }
                }
                Ok(VcpuExit::MmioRead(addr, _)) | Ok(VcpuExit::MmioWrite(addr, _)) => {
                    let regs = vcpu.get_regs().map_err(err("get regs"))?;
                    break Stop::Crashed {
                        signal: libc::SIGBUS,
                        message: format!(
                            "guest accessed guest-physical address {addr:#x} outside its RAM (rip {:#x})",
                            regs.rip
                        ),
                    };
                }
                Ok(VcpuExit::Shutdown) => {
                    let regs = vcpu.get_regs().map_err(err("get regs"))?;
                    break Stop::Crashed {
                        signal: libc::SIGSEGV,
                        message: format!("guest triple fault (shutdown) near rip {:#x}", regs.rip),
                    };
                }
                Ok(VcpuExit::Hlt) => {
                    let regs = vcpu.get_regs().map_err(err("get regs"))?;
                    break Stop::Crashed {
                        signal: libc::SIGSEGV,
                        message: format!("guest executed hlt at rip {:#x}", regs.rip),
                    };
                }
                Ok(VcpuExit::Intr) => bump(&mut counters, "kvm.exits.intr"),
                Ok(other) => {
                    let what = format!("{other:?}");
                    let regs = vcpu.get_regs().map_err(err("get regs"))?;
                    break Stop::Crashed {
                        signal: libc::SIGSEGV,
                        message: format!("unexpected VM exit {what} at guest rip {:#x}", regs.rip),
                    };
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    bump(&mut counters, "kvm.exits.signal");
                    if kicked.load(Ordering::Relaxed) {
                        break Stop::Kicked;
                    }
                }
                Err(e) => {
                    done.store(true, Ordering::Release);
                    let _ = watchdog.join();
                    return Err(err("KVM_RUN")(e));
                }
            }
        };
        done.store(true, Ordering::Release);
        let _ = watchdog.join();
        let wall = t_create.elapsed();

        // the stub's own counters
        let mut k = [0u8; 16];
        if mem.read_slice(&mut k, GuestAddress(KDATA)).is_ok() {
            counters.insert(
                "kvm.guest_syscalls".into(),
                u64::from_le_bytes(k[..8].try_into().expect("8")),
            );
        }
        counters.extend(abi.counters.clone());
        counters.insert("kvm.cold_start_ns".into(), startup.as_nanos() as u64);
        counters.insert("kvm.guest_ram_bytes".into(), ram);

        let mut stderr_tail = String::new();
        let exit = match stop {
            Stop::Exited(code) => Exit::Code { code },
            Stop::Crashed { signal, message } => {
                stderr_tail = format!("vbench kvm: {message}\n");
                Exit::Signal { signal }
            }
            Stop::Kicked => {
                if inv
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Relaxed))
                {
                    Exit::Interrupted
                } else {
                    Exit::Timeout {
                        after_ms: inv.timeout.map_or(0, |t| t.as_millis() as u64),
                    }
                }
            }
        };
        if let Some(nr) = abi.first_unsupported {
            stderr_tail.push_str(&format!(
                "vbench kvm: first unsupported syscall {nr} ({}) answered with ENOSYS\n",
                linux_abi::syscall_name(nr)
            ));
        }
        let [out, errs] =
            std::mem::replace(&mut abi.outputs, [Output::Inherit(1), Output::Inherit(2)]);
        let (stdout, stdout_bytes) = match out {
            Output::Capture { buf, total } => (buf, total),
            Output::Inherit(_) => (vec![], 0),
        };
        if let Output::Capture { buf, .. } = errs {
            let guest_err =
                String::from_utf8_lossy(&buf[buf.len().saturating_sub(4096)..]).into_owned();
            stderr_tail = guest_err + &stderr_tail;
        } else if !stderr_tail.is_empty() {
            eprint!("{stderr_tail}");
        }
        Ok(Outcome {
            sample: Sample {
                wall_ns: wall.as_nanos() as u64,
                user_ns: 0,
                sys_ns: 0,
                max_rss_kib: 0,
                exit,
                report: None,
                startup_ns: Some(startup.as_nanos() as u64),
                counters,
                stdout_bytes,
                stdout_digest: String::new(),
                stderr_tail,
            },
            stdout,
        })
    }
}

fn set_msrs(vcpu: &VcpuFd, lstar: u64) -> Result<(), BackendError> {
    let entries = [
        kvm_msr_entry {
            index: 0xC000_0081, // STAR: kernel CS 0x10, sysret base 0x23
            data: (0x23u64 << 48) | (u64::from(KERNEL_CS) << 32),
            ..Default::default()
        },
        kvm_msr_entry {
            index: 0xC000_0082, // LSTAR
            data: lstar,
            ..Default::default()
        },
        kvm_msr_entry {
            index: 0xC000_0084, // SFMASK: keep flags (the stub may run at CPL3)
            data: 0,
            ..Default::default()
        },
    ];
    let msrs = Msrs::from_entries(&entries).map_err(|e| invalid(format!("MSR list: {e:?}")))?;
    let n = vcpu.set_msrs(&msrs).map_err(err("set MSRs"))?;
    if n != entries.len() {
        return Err(invalid(format!(
            "KVM accepted {n} of {} MSRs",
            entries.len()
        )));
    }
    Ok(())
}

/// Decodes an exception the guest took: vector, guest rip, error code, fault address.
fn fault(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    regs: &kvm_regs,
    vector: u8,
) -> Result<Stop, BackendError> {
    let sregs = vcpu.get_sregs().map_err(err("get sregs"))?;
    let mut frame = [0u64; 6];
    for (i, w) in frame.iter_mut().enumerate() {
        *w = mem
            .read_obj(GuestAddress(regs.rsp + 8 * i as u64))
            .unwrap_or(0);
    }
    let (code, rip) = if has_error_code(vector) {
        (Some(frame[0]), frame[1])
    } else {
        (None, frame[0])
    };
    let (name, signal) = vector_name(vector);
    let mut message = format!("guest crashed: {name} (vector {vector}) at rip {rip:#x}");
    if vector == 14 {
        message.push_str(&format!(", address {:#x}", sregs.cr2));
    }
    if let Some(c) = code {
        message.push_str(&format!(", error code {c:#x}"));
    }
    Ok(Stop::Crashed { signal, message })
}
