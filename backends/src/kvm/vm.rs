//! Setting up one micro-VM: guest RAM and its memory slot, the guest kernel's tables and stub,
//! the program image and its stack, and a vCPU in 64-bit long mode at CPL3.

use super::layout::*;
use super::{err, invalid, stub, KvmBackend, PIE_BASE, STACK_SIZE};
use crate::elf::Elf;
use crate::BackendError;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_xcrs, Msrs};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// A VM ready to run its program.
pub struct Machine {
    /// The vCPU (dropped before the VM and the memory).
    pub vcpu: VcpuFd,
    /// The VM.
    pub _vm: VmFd,
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// Registers travel in kvm_run (KVM_CAP_SYNC_REGS).
    pub sync: bool,
    /// Where the program starts once the probe has run.
    pub program_start: kvm_regs,
    /// End of the loaded image (page aligned): the program break starts here.
    pub brk_start: u64,
    /// Top of the mapping area: the lowest address of the ELF interpreter, or of the stack.
    pub mmap_hi: u64,
    /// Host address of guest RAM and its size, for measuring what the guest touched.
    pub host_ram: (*const u8, usize),
    /// The user part of the guest's page tables.
    pub paging: super::paging::Paging,
    /// The stub's clock stores ([start, end)) and the EFAULT return a fault there resumes at.
    pub fixup: ((u64, u64), u64),
    /// The clock page was published (the vDSO and the stub answer the clock in the guest).
    pub clock: bool,
}

/// Checks the configured RAM size.
pub fn check_ram(bytes: u64) -> Result<(), BackendError> {
    if !(16 << 20..=MAX_RAM).contains(&bytes) || !bytes.is_multiple_of(2 << 20) {
        return Err(invalid(format!(
            "guest memory {bytes} bytes: must be a multiple of 2 MiB between 16 MiB and 1 GiB"
        )));
    }
    Ok(())
}

/// What the program's auxiliary vector tells it beyond its headers.
pub struct ProgramAux<'a> {
    /// AT_EXECFN: the path it was started by.
    pub execfn: &'a [u8],
    /// AT_UID, AT_EUID, AT_GID, AT_EGID.
    pub ids: [u64; 4],
}

/// Builds a VM with `ram` bytes of RAM around the program `bytes` (an ELF executable, static
/// or with an ELF interpreter, which is loaded as the kernel loads it: below the stack, its
/// entry the first instruction, AT_BASE and AT_ENTRY in the auxiliary vector), its stack
/// holding `argv` and `envp`.
#[allow(clippy::too_many_arguments)]
pub fn build(
    be: &KvmBackend,
    kvm: &Kvm,
    ram: u64,
    name: &str,
    bytes: &[u8],
    argv: &[Vec<u8>],
    envp: &[&[u8]],
    pa: &ProgramAux,
) -> Result<Machine, BackendError> {
    let elf = Elf::parse(bytes, PIE_BASE).map_err(|e| invalid(format!("{name}: {e}")))?;
    let interp = elf
        .read_interpreter()
        .map_err(|e| invalid(format!("{name}: {e}")))?;
    let (lo, hi) = elf.extent();
    let stack_lo = ram - STACK_SIZE;
    // the interpreter sits below the stack, 2 MiB aligned; the mappings go below it
    let ie = match &interp {
        Some(ib) => {
            let (l, h) = Elf::parse(ib, 0)
                .map_err(|e| invalid(format!("{name}'s interpreter: {e}")))?
                .extent();
            let base = (stack_lo - (h - l) - (2 << 20)) & !((2 << 20) - 1);
            Some(Elf::parse(ib, base).map_err(|e| invalid(format!("{name}'s interpreter: {e}")))?)
        }
        None => None,
    };
    let top = ie.as_ref().map_or(stack_lo, |ie| ie.extent().0);
    if lo < LOAD_MIN || hi > top / 2 {
        return Err(invalid(format!(
            "{name}: segments at {lo:#x}..{hi:#x} do not fit the guest ({LOAD_MIN:#x}..{:#x} with {} MiB of RAM)",
            top / 2,
            ram >> 20
        )));
    }
    let vm = kvm.create_vm().map_err(err("create VM"))?;
    let (mem, host_ram) = guest_ram(&vm, ram)?;
    let code = be.guest_code()?;
    write_kernel(&mem, ram, code)?;
    let images = std::iter::once((&elf, bytes)).chain(ie.as_ref().zip(interp.as_deref()));
    for (e, b) in images {
        for s in &e.segments {
            let data = &b[s.offset as usize..(s.offset + s.filesz) as usize];
            mem.write_slice(data, GuestAddress(s.vaddr))
                .map_err(|e| invalid(format!("loading segment: {e}")))?;
        }
    }
    let aux = crate::elf::Aux {
        sysinfo_ehdr: VDSO,
        base: ie.as_ref().map_or(0, |ie| ie.bias),
        entry: elf.entry,
        execfn: Some(pa.execfn),
        ids: pa.ids,
        hwcap: crate::elf::host_hwcap(),
    };
    let rsp = crate::elf::initial_stack(ram, &elf, argv, envp, &aux, &mut |at, b| {
        mem.write_slice(b, GuestAddress(at))
            .map_err(|e| e.to_string())
    })
    .map_err(invalid)?;
    let (vcpu, sync) = vcpu(be, kvm, &vm, rsp)?;
    let clock = publish_clock(&mem, &vcpu, be.tsc_khz(&vcpu))?;
    Ok(Machine {
        vcpu,
        _vm: vm,
        mem,
        sync,
        program_start: kvm_regs {
            rip: ie.as_ref().map_or(elf.entry, |ie| ie.entry),
            rsp,
            rflags: 0x2, // IF clear: no interrupts are ever injected
            ..Default::default()
        },
        brk_start: (hi + 0xfff) & !0xfff,
        mmap_hi: top & !0xfff,
        host_ram,
        paging: super::paging::Paging::new(host_ram.0.cast_mut(), ram),
        fixup: (code.stub.stores, code.stub.efault),
        clock,
    })
}

/// Publishes the clock page: the guest's TSC now (IA32_TSC, read between two host readings of
/// CLOCK_MONOTONIC), scaled by KVM's TSC frequency; the offsets of CLOCK_REALTIME and
/// CLOCK_BOOTTIME. False (the page stays invalid: the guest's clock calls leave it) when KVM
/// gives no TSC frequency or no TSC.
fn publish_clock(
    mem: &GuestMemoryMmap,
    vcpu: &VcpuFd,
    khz: Option<u32>,
) -> Result<bool, BackendError> {
    let Some(khz) = khz else {
        return Ok(false);
    };
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: 0x10, // IA32_TSC
        ..Default::default()
    }])
    .map_err(|e| invalid(format!("MSR list: {e:?}")))?;
    let before = crate::session::clock_ns(libc::CLOCK_MONOTONIC);
    let n = vcpu.get_msrs(&mut msrs).map_err(err("get IA32_TSC"))?;
    let after = crate::session::clock_ns(libc::CLOCK_MONOTONIC);
    if n != 1 {
        return Ok(false);
    }
    let mono = crate::session::clock_ns(libc::CLOCK_MONOTONIC);
    let real = crate::session::clock_ns(libc::CLOCK_REALTIME);
    let boot = crate::session::clock_ns(libc::CLOCK_BOOTTIME);
    let page = super::vdso::ClockPage {
        base_tsc: msrs.as_slice()[0].data,
        base_ns: before + (after - before) / 2,
        mult: super::vdso::ClockPage::mult_of(khz),
        realtime: real.wrapping_sub(mono),
        boottime: boot.saturating_sub(mono),
    };
    mem.write_slice(&page.bytes(), GuestAddress(CLOCK))
        .map_err(|e| invalid(format!("guest memory: {e}")))?;
    Ok(true)
}

/// Guest RAM, registered as memory slot 0.
fn guest_ram(vm: &VmFd, ram: u64) -> Result<(GuestMemoryMmap, (*const u8, usize)), BackendError> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram as usize)])
        .map_err(|e| invalid(format!("guest memory: {e}")))?;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| invalid(format!("guest memory: {e}")))?;
    // Huge pages make the guest's first touch of memory cheap (one fault per 2 MiB), but each
    // costs zeroing 2 MiB on the host: keep the kernel structures, the usual load addresses
    // and the initial stack on small pages so cold start stays short.
    let (huge_lo, huge_hi) = (4u64 << 20, ram - (2 << 20));
    if let Some(at) = std::ptr::NonNull::new(host.wrapping_add(huge_lo as usize).cast()) {
        // SAFETY: advising the kernel about part of a mapping vm-memory owns; no memory is
        // accessed and the range lies inside the mapping. Failure only costs speed.
        let _ = unsafe {
            nix::sys::mman::madvise(
                at,
                (huge_hi - huge_lo) as usize,
                nix::sys::mman::MmapAdvise::MADV_HUGEPAGE,
            )
        };
    }
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: ram,
        userspace_addr: host as u64,
    };
    // SAFETY: the region is backed by `mem`, which the caller keeps alive as long as the VM
    // (Machine drops the vCPU and the VM before the memory).
    unsafe { vm.set_user_memory_region(region) }.map_err(err("set memory region"))?;
    Ok((mem, (host as *const u8, ram as usize)))
}

/// The guest kernel: page tables, GDT, TSS, IDT, the syscall stub and the ring-0 code.
fn write_kernel(
    mem: &GuestMemoryMmap,
    ram: u64,
    code: &super::GuestCode,
) -> Result<(), BackendError> {
    let mut low = vec![0u8; RSP0 as usize];
    page_tables(&mut low, ram);
    gdt_tss(&mut low);
    idt(&mut low);
    // only the pages that hold something: fresh guest RAM is already zero
    for (from, to) in [(PML4, STUB), (PD_UART_PAGE, PD_UART_PAGE + 0x1000)] {
        mem.write_slice(&low[from as usize..to as usize], GuestAddress(from))
            .map_err(|e| invalid(format!("guest memory: {e}")))?;
    }
    for (bytes, at) in [
        (&code.stub.code, STUB),
        (&code.kernel, KCODE),
        (&code.vdso, VDSO),
    ] {
        mem.write_slice(bytes, GuestAddress(at))
            .map_err(|e| invalid(format!("guest memory: {e}")))?;
    }
    Ok(())
}

/// CPL3 again after the guest kernel's ring 0 (the user code and stack segments).
pub fn to_user_mode(sregs: &mut kvm_sregs) {
    sregs.cs = user_seg(USER_CS, true);
    sregs.ss = user_seg(USER_DS, false);
}

/// A user code or data segment (flat, DPL 3).
pub fn user_seg(selector: u16, code: bool) -> kvm_segment {
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

/// The vCPU in long mode at CPL3, starting at the stub's probe (its syscall shows the ring
/// before the program runs).
fn vcpu(be: &KvmBackend, kvm: &Kvm, vm: &VmFd, rsp: u64) -> Result<(VcpuFd, bool), BackendError> {
    let mut vcpu = vm.create_vcpu(0).map_err(err("create vCPU"))?;
    // With KVM_CAP_SYNC_REGS the registers travel in kvm_run: no GET/SET_REGS ioctl per exit.
    let sync = kvm.check_extension(Cap::SyncRegs);
    if sync {
        vcpu.set_sync_valid_reg(SyncReg::Register);
    }
    vcpu.set_cpuid2(be.supported_cpuid(kvm)?)
        .map_err(err("set CPUID"))?;
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
    vcpu.set_regs(&kvm_regs {
        rip: STUB + stub::PROBE,
        rsp,
        rflags: 0x2,
        ..Default::default()
    })
    .map_err(err("set regs"))?;
    Ok((vcpu, sync))
}

/// STAR, LSTAR (where `syscall` goes) and SFMASK.
pub fn set_msrs(vcpu: &VcpuFd, lstar: u64) -> Result<(), BackendError> {
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
