//! Loading a guest: its ELF image at its link addresses, the program break, stack and mmap
//! arena beside it, the initial stack (argv, envp, auxv) and the initial registers.

use super::space::{
    Space, BRK_END, IMAGE_LIMIT, MMAP_HI, MMAP_LO, PAGE, PIE_BASE, R, STACK_SIZE, STACK_TOP, W, X,
};
use super::translate::{Ctx, CTX, XSAVE_BYTES};
use super::{invalid, os, BackendError};
use crate::elf::Elf;
use crate::linux_abi::GuestMem;
use crate::Invocation;
use std::os::unix::ffi::OsStrExt;

/// A loaded guest, ready for its first instruction.
pub(super) struct Guest {
    /// The end of the image: where the program break starts.
    pub(super) image_end: u64,
    /// Where the program break must stop.
    pub(super) brk_end: u64,
    pub(super) entry: u64,
    /// The initial stack pointer (argc, argv, envp, auxv above it).
    pub(super) rsp: u64,
}

/// What a guest program is started with: its name, ELF bytes, argv and environment.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) name: String,
    pub(super) bytes: Vec<u8>,
    pub(super) argv: Vec<Vec<u8>>,
    pub(super) env: Vec<Vec<u8>>,
    /// The path the program was started by (AT_EXECFN).
    pub(super) execfn: Vec<u8>,
    /// The ELF interpreter's bytes, for a dynamically linked program.
    pub(super) interp: Option<Vec<u8>>,
    /// uid, euid, gid, egid for the auxiliary vector.
    pub(super) ids: [u64; 4],
}

/// Where a dynamically linked program's ELF interpreter is loaded; its program break stops
/// below it.
pub(super) const INTERP_BASE: u64 = 0x3800_0000;

/// The interpreter a program names, read and checked (a static-pie ELF without an interpreter
/// of its own that fits above [`INTERP_BASE`]).
fn interpreter(elf: &Elf) -> Result<Option<Vec<u8>>, String> {
    let Some(bytes) = elf.read_interpreter()? else {
        return Ok(None);
    };
    let shown = String::from_utf8_lossy(elf.interp.as_deref().unwrap_or_default()).into_owned();
    let ie =
        Elf::parse(&bytes, INTERP_BASE).map_err(|e| format!("its ELF interpreter {shown}: {e}"))?;
    check_extent(&ie).map_err(|e| format!("its ELF interpreter {shown}: {e}"))?;
    Ok(Some(bytes))
}

impl Job {
    /// `inv`'s program, checked to be an ELF the translator can load (in the harness, before
    /// the translator process is forked, so a bad file is the harness's clear error).
    pub(super) fn of(inv: &Invocation) -> Result<Job, BackendError> {
        let bytes = inv.program.bytes()?.into_owned();
        let name = inv.program.name();
        let elf = Elf::parse(&bytes, PIE_BASE).map_err(|e| invalid(format!("{name}: {e}")))?;
        check_extent(&elf).map_err(|e| invalid(format!("{name}: {e}")))?;
        let interp = interpreter(&elf).map_err(|e| invalid(format!("{name}: {e}")))?;
        let argv = crate::session::guest_argv(inv);
        Ok(Job {
            execfn: crate::session::guest_execfn(inv, &argv),
            name,
            bytes,
            argv,
            env: crate::session::guest_env(inv),
            interp,
            ids: crate::linux_abi::aux_ids(inv.abi),
        })
    }

    /// The program an execve asked for, when the translator can load it (else the errno the
    /// guest's execve returns: ENOEXEC for an ELF it cannot run, as the kernel's; ENOENT when
    /// its interpreter is missing).
    pub(super) fn of_exec(
        req: crate::linux_abi::ExecRequest,
        ids: [u64; 4],
    ) -> Result<Job, crate::linux_abi::Errno> {
        use crate::linux_abi::Errno;
        let elf = Elf::parse(&req.bytes, PIE_BASE).map_err(|_| Errno::ENOEXEC)?;
        check_extent(&elf).map_err(|_| Errno::ENOEXEC)?;
        let interp = match &elf.interp {
            None => None,
            Some(p) if !std::path::Path::new(std::ffi::OsStr::from_bytes(p)).exists() => {
                return Err(Errno::ENOENT)
            }
            Some(_) => Some(
                interpreter(&elf)
                    .map_err(|_| Errno::ENOEXEC)?
                    .unwrap_or_default(),
            ),
        };
        Ok(Job {
            name: req.path.display().to_string(),
            bytes: req.bytes,
            argv: req.argv,
            env: req.env,
            execfn: req.execfn,
            interp,
            ids,
        })
    }
}

/// Loads `job`'s program into `space` (which holds no guest memory) with its ELF interpreter,
/// stack, break and mmap arena.
pub(super) fn load(space: &mut Space, job: &Job) -> Result<Guest, BackendError> {
    let bytes = &job.bytes;
    let elf = Elf::parse(bytes, PIE_BASE).map_err(|e| invalid(format!("{}: {e}", job.name)))?;
    let image_end =
        load_image(space, &elf, bytes).map_err(|e| invalid(format!("{}: {e}", job.name)))?;
    let (entry, base, brk_end) = match &job.interp {
        None => (elf.entry, 0, BRK_END),
        Some(ib) => {
            let ie = Elf::parse(ib, INTERP_BASE)
                .map_err(|e| invalid(format!("{}'s interpreter: {e}", job.name)))?;
            load_image(space, &ie, ib)
                .map_err(|e| invalid(format!("{}'s interpreter: {e}", job.name)))?;
            (ie.entry, INTERP_BASE, INTERP_BASE)
        }
    };
    if image_end >= brk_end {
        return Err(invalid(format!(
            "{}: the image ends at {image_end:#x}, above its program break's end {brk_end:#x}",
            job.name
        )));
    }
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // the break's whole range is reserved read-write (its pages cost nothing until touched);
    // the mapping area is reserved inaccessible: linux_abi maps into it with the guest's
    // protections, which the host enforces
    space.map(image_end, brk_end - image_end, rw)?;
    space.map(STACK_TOP - STACK_SIZE, STACK_SIZE, rw)?;
    space.map(MMAP_LO, MMAP_HI - MMAP_LO, libc::PROT_NONE)?;
    space.set_perm(image_end, brk_end, R | W);
    space.set_perm(STACK_TOP - STACK_SIZE, STACK_TOP, R | W);
    let aux = crate::elf::Aux {
        sysinfo_ehdr: 0, // no vDSO: its clock calls are the host's, through the ABI
        base,
        entry: elf.entry,
        execfn: Some(&job.execfn),
        ids: job.ids,
        hwcap: crate::elf::host_hwcap(),
    };
    let rsp = crate::elf::initial_stack(
        STACK_TOP,
        &elf,
        &job.argv,
        &job.env.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        &aux,
        &mut |a, d| {
            space
                .write(a, d)
                .map_err(|_| "outside the stack".to_string())
        },
    )
    .map_err(|e| invalid(format!("initial stack: {e}")))?;
    Ok(Guest {
        image_end,
        brk_end,
        entry,
        rsp,
    })
}

/// The guest's registers at its first instruction, in the context page (mapped by the
/// translator's cache, which must exist).
pub(super) fn initial_context(guest: &Guest, xmask: u64) -> &'static mut Ctx {
    // SAFETY: the context page is mapped read-write at CTX for the whole run, is suitably
    // aligned (page aligned), and zero bytes are a valid Ctx (plain integers and arrays).
    let ctx: &mut Ctx = unsafe { &mut *(CTX as *mut Ctx) };
    ctx.gpr = [0; 16];
    ctx.guest_fs = 0;
    ctx.gpr[4] = guest.rsp;
    ctx.rflags = 0x202;
    ctx.next = guest.entry;
    // a fresh FPU/SSE state: default control words, MXCSR 0x1f80
    // XSTATE_BV = 0: x87 and vector registers start in their initial state; MXCSR 0x1f80
    ctx.guest_xsave = [0; XSAVE_BYTES];
    ctx.guest_xsave[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    ctx.xmask = xmask;
    ctx
}

/// The page-aligned extent of the image, checked to fit the translator's guest area.
fn check_extent(elf: &Elf) -> Result<(u64, u64), BackendError> {
    let (lo, hi) = elf.extent();
    let lo = lo & !(PAGE - 1);
    let hi = (hi + PAGE - 1) & !(PAGE - 1);
    if lo < 0x1_0000 || hi > IMAGE_LIMIT {
        return Err(invalid(format!(
            "segments at {lo:#x}..{hi:#x} do not fit the translator's guest area (64 KiB..{IMAGE_LIMIT:#x})"
        )));
    }
    Ok((lo, hi))
}

/// Loads the program's segments; returns the regions and the end of the image.
fn load_image(space: &mut Space, elf: &Elf, bytes: &[u8]) -> Result<u64, BackendError> {
    let (lo, hi) = check_extent(elf)?;
    space.map(lo, hi - lo, libc::PROT_READ | libc::PROT_WRITE)?;
    let mut perms = vec![0u8; ((hi - lo) / PAGE) as usize];
    for s in &elf.segments {
        let data = &bytes[s.offset as usize..(s.offset + s.filesz) as usize];
        // SAFETY: the segment lies inside [lo, hi), just mapped read-write.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), s.vaddr as *mut u8, data.len()) };
        let p = (if s.flags & 4 != 0 { R } else { 0 })
            | (if s.flags & 2 != 0 { W } else { 0 })
            | (if s.flags & 1 != 0 { X } else { 0 });
        let first = (s.vaddr & !(PAGE - 1)) - lo;
        let last = s.vaddr + s.memsz;
        let mut a = first;
        while lo + a < last {
            perms[(a / PAGE) as usize] |= p | R;
            a += PAGE;
        }
    }
    // one region per run of equal permissions; pages without write access become read-only
    let mut i = 0;
    while i < perms.len() {
        let mut j = i;
        while j < perms.len() && perms[j] == perms[i] {
            j += 1;
        }
        let (rlo, rhi) = (lo + i as u64 * PAGE, lo + j as u64 * PAGE);
        space.set_perm(rlo, rhi, perms[i]);
        let prot = match perms[i] {
            0 => libc::PROT_NONE,
            p if p & W != 0 => libc::PROT_READ | libc::PROT_WRITE,
            _ => libc::PROT_READ,
        };
        // SAFETY: changing the protection of pages of the image mapping made above.
        if unsafe { libc::mprotect(rlo as *mut libc::c_void, (rhi - rlo) as usize, prot) } != 0 {
            return Err(os("mprotect of the guest image"));
        }
        i = j;
    }
    Ok(hi)
}
