//! Machine-edge probes: what a VM must contain (addresses outside RAM, system-call pointers
//! outside memory, MSRs no CPU has, more memory than the machine has).

use super::signals::guarded;
use super::*;

/// The probes of this family.
pub(super) const PROBES: &[(&str, Impl)] = &[
    ("wild_read", |_, _| wild_read()),
    ("efault_read", |_, _| efault_read()),
    ("unknown_msr", |_, _| unknown_msr()),
    ("huge_mmap", |_, _| huge_mmap()),
];

/// An address far above any RAM this machine or a micro-VM has (64 TiB), never mapped by the
/// loader, the stack or mmap (which place mappings below 2^47 top down, near the stack).
const WILD: usize = 0x4000_0000_0000;

/// A load from [`WILD`]: natively a page fault (SIGSEGV); in a VM a guest-physical address
/// outside guest RAM, which must end as the guest's fault, not as data from elsewhere.
fn wild_read() -> Report {
    guarded("load_64TiB", |t| {
        let v: u64;
        // SAFETY: the load faults (the handler resumes after it): nothing is mapped at WILD.
        unsafe { guard_asm!("mov {v}, [{p}]", p = in(reg) WILD, v = out(reg) v) };
        let _ = write!(t, "read_value={v:#x}");
    })
}

/// read(2) from /dev/zero into [`WILD`] and into a buffer whose end runs past it: the kernel
/// (or a VMM checking guest pointers) must answer EFAULT and nothing else may happen.
fn efault_read() -> Report {
    let Some(zero) = CPath::new(&["/dev/zero"]) else {
        return rep!(Error, "path");
    };
    let fd = match open(&zero, sys::O_RDONLY) {
        Ok(fd) => fd,
        Err(e) => return rep!(Error, "open_/dev/zero:{}", errno(e)),
    };
    let name = |r: Result<usize, usize>| match r {
        Ok(n) => Text::from_fmt(format_args!("ok_{n}")),
        Err(e) => Text::from_fmt(format_args!("{}", errno(e))),
    };
    let wild = name(call(0, [fd, WILD, 64, 0, 0, 0]));
    let top = name(call(0, [fd, WILD - 16, 64, 0, 0, 0]));
    let kernel = name(call(0, [fd, 0xffff_8000_0000_0000, 64, 0, 0, 0]));
    rep!(
        Observed,
        "read_to_64TiB={},read_across_64TiB={},read_to_kernel_half={}",
        wild.as_str(),
        top.as_str(),
        kernel.as_str()
    )
}

/// RDMSR of an MSR that no CPU has: #GP at CPL3 natively; a VM must not pass it to the host.
fn unknown_msr() -> Report {
    guarded("rdmsr_0xc0de0000", |t| {
        let (mut a, mut d): (u64, u64) = (0, 0);
        // SAFETY: rdmsr traps at CPL3 (the handler resumes after it); were it let through, it
        // only reads an MSR into rax/rdx.
        unsafe { guard_asm!("rdmsr", in("ecx") 0xc0de_0000u32, inout("rax") a, inout("rdx") d) };
        let _ = write!(t, "executed,rax={a:#x},rdx={d:#x}");
    })
}

/// mmap of 16 GiB of anonymous memory, never touched: the host overcommits it (MAP_NORESERVE);
/// a micro-VM whose RAM is the memory limit must refuse it inside the guest (ENOMEM).
fn huge_mmap() -> Report {
    const MAP_NORESERVE: usize = 0x4000;
    let len = 16usize << 30;
    match call(9, [0, len, 3, 0x22 | MAP_NORESERVE, usize::MAX, 0]) {
        Ok(p) => {
            let _ = call(11, [p, len, 0, 0, 0, 0]);
            rep!(Observed, "mmap_16GiB=ok")
        }
        Err(e) => rep!(Observed, "mmap_16GiB={}", errno(e)),
    }
}
