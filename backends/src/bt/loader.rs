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
    /// The file the bytes were read from, when there is one: its pages are mapped rather than
    /// copied (as the kernel maps an executable).
    pub(super) path: Option<std::path::PathBuf>,
    pub(super) argv: Vec<Vec<u8>>,
    pub(super) env: Vec<Vec<u8>>,
    /// The path the program was started by (AT_EXECFN).
    pub(super) execfn: Vec<u8>,
    /// The ELF interpreter's bytes, for a dynamically linked program.
    pub(super) interp: Option<Vec<u8>>,
    /// The interpreter's file.
    pub(super) interp_path: Option<std::path::PathBuf>,
    /// uid, euid, gid, egid for the auxiliary vector.
    pub(super) ids: [u64; 4],
}

/// Where a dynamically linked program's ELF interpreter is loaded; its program break stops
/// below it.
pub(super) const INTERP_BASE: u64 = 0x3800_0000;

/// The interpreter a program names, read and checked (a static-pie ELF without an interpreter
/// of its own that fits above [`INTERP_BASE`]).
fn interpreter(elf: &Elf) -> Result<Option<Vec<u8>>, String> {
    let Some(path) = &elf.interp else {
        return Ok(None);
    };
    let shown = String::from_utf8_lossy(path).into_owned();
    let bytes = std::fs::read(std::ffi::OsStr::from_bytes(path))
        .map_err(|e| format!("its ELF interpreter {shown}: {e}"))?;
    let ie =
        Elf::parse(&bytes, INTERP_BASE).map_err(|e| format!("its ELF interpreter {shown}: {e}"))?;
    if ie.interp.is_some() || ie.bias == 0 {
        return Err(format!(
            "its ELF interpreter {shown} is not a self-contained shared object"
        ));
    }
    check_extent(&ie).map_err(|e| format!("its ELF interpreter {shown}: {e}"))?;
    Ok(Some(bytes))
}

fn ids(inv_policy: crate::AbiPolicy) -> [u64; 4] {
    match inv_policy {
        // SAFETY: these calls have no preconditions.
        crate::AbiPolicy::Host => unsafe {
            [
                u64::from(libc::getuid()),
                u64::from(libc::geteuid()),
                u64::from(libc::getgid()),
                u64::from(libc::getegid()),
            ]
        },
        crate::AbiPolicy::Confined => [0; 4],
    }
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
            execfn: inv
                .program
                .path()
                .map_or_else(|| argv[0].clone(), |p| p.as_os_str().as_bytes().to_vec()),
            name,
            bytes,
            path: inv.program.path().map(|p| p.to_path_buf()),
            argv,
            env: crate::session::guest_env(inv),
            interp_path: elf
                .interp
                .as_ref()
                .map(|p| std::ffi::OsStr::from_bytes(p).into()),
            interp,
            ids: ids(inv.abi),
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
            path: Some(req.path),
            argv: req.argv,
            env: req.env,
            execfn: req.execfn,
            interp_path: elf
                .interp
                .as_ref()
                .map(|p| std::ffi::OsStr::from_bytes(p).into()),
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
    let image_end = load_image(space, &elf, bytes, job.path.as_deref())
        .map_err(|e| invalid(format!("{}: {e}", job.name)))?;
    let (entry, base, brk_end) = match &job.interp {
        None => (elf.entry, 0, BRK_END),
        Some(ib) => {
            let ie = Elf::parse(ib, INTERP_BASE)
                .map_err(|e| invalid(format!("{}'s interpreter: {e}", job.name)))?;
            load_image(space, &ie, ib, job.interp_path.as_deref())
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
    // SAFETY: getauxval has no preconditions.
    let hwcap = unsafe {
        [
            libc::getauxval(libc::AT_HWCAP),
            libc::getauxval(libc::AT_HWCAP2),
        ]
    };
    let aux = crate::elf::Aux {
        base,
        entry: elf.entry,
        execfn: Some(&job.execfn),
        ids: job.ids,
        hwcap,
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

/// Maps the file pages of `elf`'s segments over the image's reservation (private, so writes
/// stay the guest's) and zeroes what follows each segment's file bytes on its last page, as
/// the kernel loads an executable: text is then page cache, shared and never copied (a fork of
/// the translator copies no page table entries for it). False, with nothing changed, when the
/// file is not the one parsed or its segments cannot be mapped (a page shared by two segments
/// at different file offsets): the caller copies the bytes instead.
fn map_segments(elf: &Elf, bytes: &[u8], file: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(file) else {
        return false;
    };
    // the file must still be what was parsed: its length and first page
    let mut head = vec![0u8; bytes.len().min(PAGE as usize)];
    let same = f.metadata().is_ok_and(|m| m.len() == bytes.len() as u64)
        && std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).is_ok()
        && head == bytes[..head.len()];
    let delta = |s: &crate::elf::Segment| s.vaddr.wrapping_sub(s.offset);
    let mut segs: Vec<&crate::elf::Segment> =
        elf.segments.iter().filter(|s| s.filesz > 0).collect();
    segs.sort_by_key(|s| s.vaddr);
    let congruent = segs.iter().all(|s| delta(s) % PAGE == 0)
        && segs.windows(2).all(|w| {
            let a_end = (w[0].vaddr + w[0].memsz + PAGE - 1) & !(PAGE - 1);
            a_end <= (w[1].vaddr & !(PAGE - 1)) || delta(w[0]) == delta(w[1])
        });
    if !same || !congruent {
        return false;
    }
    let anon = |start: u64, end: u64| {
        // SAFETY: replaces pages of the image's reservation with zeroed anonymous memory.
        unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                (end - start) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        }
    };
    let range = |s: &crate::elf::Segment| {
        (
            s.vaddr & !(PAGE - 1),
            (s.vaddr + s.filesz + PAGE - 1) & !(PAGE - 1),
        )
    };
    for (i, s) in segs.iter().enumerate() {
        let (start, end) = range(s);
        // SAFETY: replaces pages of the image's own reservation (inside [lo, hi), checked by
        // check_extent) with a private mapping of the file at the matching, page-aligned offset.
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                (end - start) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                f.as_raw_fd(),
                (s.offset & !(PAGE - 1)) as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            // back to zeroed memory everywhere this tried, for the copy that follows
            for t in &segs[..=i] {
                let (a, b) = range(t);
                anon(a, b);
            }
            return false;
        }
    }
    // what follows the file bytes on pages that now show the file is zeroed (the rest of the
    // segment's own last file page, and its bss on the first page of the next segment when
    // it reaches into it); the next segment's own bytes are left alone
    for (i, s) in segs.iter().enumerate() {
        let (tail, end) = (s.vaddr + s.filesz, s.vaddr + s.memsz);
        let next = segs.get(i + 1).map_or(u64::MAX, |n| n.vaddr);
        let own_page_end = (tail + PAGE - 1) & !(PAGE - 1);
        let zero = |a: u64, b: u64| {
            if a < b {
                // SAFETY: [a, b) lies in the image reservation, mapped read-write above.
                unsafe { std::ptr::write_bytes(a as *mut u8, 0, (b - a) as usize) };
            }
        };
        // to the end of the page, as the kernel's padzero does (ld.so's own early allocator
        // takes the rest of the page after its bss as zeroed memory)
        zero(tail, own_page_end.min(next));
        if next != u64::MAX {
            zero((next & !(PAGE - 1)).max(tail), end.min(next));
        }
    }
    true
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
fn load_image(
    space: &mut Space,
    elf: &Elf,
    bytes: &[u8],
    file: Option<&std::path::Path>,
) -> Result<u64, BackendError> {
    let (lo, hi) = check_extent(elf)?;
    space.map(lo, hi - lo, libc::PROT_READ | libc::PROT_WRITE)?;
    let mapped = file.is_some_and(|f| map_segments(elf, bytes, f));
    let mut perms = vec![0u8; ((hi - lo) / PAGE) as usize];
    for s in &elf.segments {
        if !mapped {
            let data = &bytes[s.offset as usize..(s.offset + s.filesz) as usize];
            // SAFETY: the segment lies inside [lo, hi), just mapped read-write.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), s.vaddr as *mut u8, data.len()) };
        }
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
