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

/// A loaded guest, ready for its first instruction.
pub(super) struct Guest {
    pub(super) space: Space,
    /// The end of the image: where the program break starts.
    pub(super) image_end: u64,
    pub(super) entry: u64,
    /// The initial stack pointer (argc, argv, envp, auxv above it).
    pub(super) rsp: u64,
}

/// Loads `inv`'s program into a fresh address space with its stack, break and mmap arena.
pub(super) fn load(inv: &Invocation) -> Result<Guest, BackendError> {
    let bytes = inv.program.bytes()?;
    let elf = Elf::parse(&bytes, PIE_BASE)
        .map_err(|e| invalid(format!("{}: {e}", inv.program.name())))?;
    let mut space = Space::new();
    let image_end = load_image(&mut space, &elf, &bytes)
        .map_err(|e| invalid(format!("{}: {e}", inv.program.name())))?;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // the break's whole range is reserved read-write (its pages cost nothing until touched);
    // the mapping area is reserved inaccessible: linux_abi maps into it with the guest's
    // protections, which the host enforces
    space.map(image_end, BRK_END - image_end, rw)?;
    space.map(STACK_TOP - STACK_SIZE, STACK_SIZE, rw)?;
    space.map(MMAP_LO, MMAP_HI - MMAP_LO, libc::PROT_NONE)?;
    space.set_perm(image_end, BRK_END, R | W);
    space.set_perm(STACK_TOP - STACK_SIZE, STACK_TOP, R | W);

    let env = crate::session::guest_env(inv);
    let mut argv: Vec<Vec<u8>> = vec![inv.program.name().into_bytes()];
    argv.extend(
        inv.args
            .iter()
            .map(|a| std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()).to_vec()),
    );
    let rsp = crate::elf::initial_stack(
        STACK_TOP,
        &elf,
        &argv,
        &env.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        &mut |a, d| {
            space
                .write(a, d)
                .map_err(|_| "outside the stack".to_string())
        },
    )
    .map_err(|e| invalid(format!("initial stack: {e}")))?;
    Ok(Guest {
        space,
        image_end,
        entry: elf.entry,
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

/// Loads the program's segments; returns the regions and the end of the image.
fn load_image(space: &mut Space, elf: &Elf, bytes: &[u8]) -> Result<u64, BackendError> {
    let (lo, hi) = elf.extent();
    let lo = lo & !(PAGE - 1);
    let hi = (hi + PAGE - 1) & !(PAGE - 1);
    if lo < 0x1_0000 || hi > IMAGE_LIMIT {
        return Err(invalid(format!(
            "segments at {lo:#x}..{hi:#x} do not fit the translator's guest area (64 KiB..{IMAGE_LIMIT:#x})"
        )));
    }
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
