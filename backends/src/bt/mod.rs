//! The `bt` backend: a dynamic binary translator in the DynamoRIO model. The guest program is
//! loaded into vbench's own process (at its link addresses, beside a guest stack, a program
//! break and an mmap arena), but its code never runs from there: basic blocks are decoded with
//! iced-x86 and re-encoded into a code cache ([`translate`]); direct branches are linked block
//! to block once both sides exist; indirect jumps, calls and returns go through a hash table
//! that stays in the cache on a hit; `syscall`, `cpuid`, `rdtsc`, `pushf`/`popf` and every other
//! sensitive instruction leaves for the dispatcher, which emulates it (syscalls through
//! [`crate::linux_abi`]) or reports it as the guest's fault. Guest FS base is switched with
//! FSGSBASE instructions, so guest code never runs with vbench's thread-local storage.
//! Faults in translated code (a guest segfault) and the watchdog's kick are signals whose
//! handler redirects translated code to an exit; a fault anywhere else is vbench's own bug.

pub mod translate;

use crate::elf::Elf;
use crate::linux_abi::{self, Abi, Action, GuestMem, Output, OutsideGuest};
use crate::{Availability, Backend, BackendError, Invocation, Outcome, Stdio};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use translate::*;
use vbench_results::{Exit, Sample};

/// The binary-translation backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct BtBackend;

/// Load address of a static-pie guest.
const PIE_BASE: u64 = 0x40_0000;
/// The guest's program break may grow this far beyond its image.
const BRK_SIZE: u64 = 256 << 20;
/// The guest's stack.
const STACK_TOP: u64 = 0x7000_0000;
const STACK_SIZE: u64 = 8 << 20;
/// The guest's anonymous mappings.
const MMAP_LO: u64 = 0x1_0000_0000;
const MMAP_HI: u64 = 0x2_0000_0000;
/// Guest images must lie below this (so the cache reaches them with rip-relative operands).
const IMAGE_LIMIT: u64 = 0x4000_0000;
const PAGE: u64 = 4096;

const R: u8 = 1;
const W: u8 = 2;
const X: u8 = 4;

/// One run at a time per process: the guest's addresses and the signal handlers are global.
static RUN_LOCK: Mutex<()> = Mutex::new(());
/// Bounds of translated code while a run is active (0..0 otherwise), for the signal handler.
static CODE_LO: AtomicU64 = AtomicU64::new(0);
static CODE_HI: AtomicU64 = AtomicU64::new(0);
static FAULT_EXIT: AtomicU64 = AtomicU64::new(0);
static KICK_EXIT: AtomicU64 = AtomicU64::new(0);

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

const FAULT_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
];

fn invalid(msg: String) -> BackendError {
    BackendError::Invalid(msg)
}

fn os(what: &str) -> BackendError {
    BackendError::Os {
        what: format!("bt: {what}"),
        source: std::io::Error::last_os_error(),
    }
}

/// Whether the kernel lets user code use rdfsbase/wrfsbase (HWCAP2_FSGSBASE).
fn has_fsgsbase() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_HWCAP2) & 2 != 0 }
}

/// A guest memory region (page aligned) and its guest permissions.
#[derive(Debug, Clone, Copy)]
struct Region {
    lo: u64,
    hi: u64,
    perm: u8,
}

/// Guest memory: host mappings at the guest's own addresses. Unmapped on drop.
struct Space {
    regions: Vec<Region>,
    maps: Vec<(u64, u64)>,
    /// Writable guest pages holding translated code, write-protected in the host so that a
    /// write to them (self-modifying code) is seen.
    code_pages: RefCell<BTreeSet<u64>>,
    /// Set when a write through [`GuestMem`] hit a code page: the dispatcher flushes the cache.
    stale: Cell<bool>,
}

impl Space {
    fn map(&mut self, lo: u64, len: u64, prot: i32) -> Result<*mut u8, BackendError> {
        // SAFETY: a fresh anonymous mapping at a fixed address that must not replace anything
        // (MAP_FIXED_NOREPLACE); the result is checked before use.
        let p = unsafe {
            libc::mmap(
                lo as *mut libc::c_void,
                len as usize,
                prot,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(BackendError::Os {
                what: format!("bt: mapping guest memory at {lo:#x}+{len:#x}"),
                source: std::io::Error::last_os_error(),
            });
        }
        if p as u64 != lo {
            // SAFETY: unmapping the mapping just made, which nothing uses.
            unsafe { libc::munmap(p, len as usize) };
            return Err(invalid(format!(
                "bt: the kernel placed guest memory at {p:?} instead of {lo:#x}"
            )));
        }
        self.maps.push((lo, len));
        Ok(p.cast())
    }

    /// Write-protects the writable guest pages of [lo, hi) that hold translated code.
    fn protect_code(&self, lo: u64, hi: u64) {
        let mut p = lo & !(PAGE - 1);
        while p < hi {
            if self.find(p).is_some_and(|r| r.perm & W != 0)
                && self.code_pages.borrow_mut().insert(p)
            {
                // SAFETY: a page of a guest region this Space mapped; only its protection changes.
                unsafe { libc::mprotect(p as *mut libc::c_void, PAGE as usize, libc::PROT_READ) };
            }
            p += PAGE;
        }
    }

    /// Makes the code pages in [lo, hi) writable again; true when there was any.
    fn unprotect_code(&self, lo: u64, hi: u64) -> bool {
        let pages: Vec<u64> = self
            .code_pages
            .borrow()
            .range((lo & !(PAGE - 1))..hi)
            .copied()
            .collect();
        for p in &pages {
            self.code_pages.borrow_mut().remove(p);
            // SAFETY: a writable guest page this Space mapped and protected in protect_code.
            unsafe {
                libc::mprotect(
                    *p as *mut libc::c_void,
                    PAGE as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
        }
        !pages.is_empty()
    }

    /// Bytes of guest memory (not the code cache) resident in the host now, from mincore.
    fn resident_bytes(&self) -> u64 {
        let mut total = 0;
        let mut vec = Vec::new();
        for &(lo, len) in self.maps.iter().filter(|(lo, _)| *lo != CACHE_BASE) {
            let pages = len.div_ceil(PAGE) as usize;
            vec.clear();
            vec.resize(pages, 0u8);
            // SAFETY: [lo, lo+len) is a mapping this Space made; `vec` has one byte per page.
            if unsafe { libc::mincore(lo as *mut libc::c_void, len as usize, vec.as_mut_ptr()) }
                == 0
            {
                total += vec.iter().filter(|b| *b & 1 != 0).count() as u64 * PAGE;
            }
        }
        total
    }

    fn find(&self, addr: u64) -> Option<&Region> {
        self.regions.iter().find(|r| r.lo <= addr && addr < r.hi)
    }

    /// Whether [addr, addr+len) is guest memory with `perm`.
    fn check(&self, addr: u64, len: u64, perm: u8) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let mut a = addr;
        while a < end {
            match self.find(a) {
                Some(r) if r.perm & perm == perm => a = r.hi,
                _ => return false,
            }
        }
        true
    }

    /// The executable guest bytes from `pc` to the end of its region (at most 4 KiB).
    fn code_at(&self, pc: u64) -> &[u8] {
        match self.find(pc) {
            Some(r) if r.perm & X != 0 => {
                let n = (r.hi - pc).min(4096);
                // SAFETY: [pc, pc+n) lies in a guest region that this Space mapped readable and
                // keeps mapped while it lives.
                unsafe { std::slice::from_raw_parts(pc as *const u8, n as usize) }
            }
            _ => &[],
        }
    }
}

impl Drop for Space {
    fn drop(&mut self) {
        for (lo, len) in self.maps.drain(..) {
            // SAFETY: unmapping mappings this Space made; no reference into them outlives it.
            unsafe { libc::munmap(lo as *mut libc::c_void, len as usize) };
        }
    }
}

impl GuestMem for Space {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutsideGuest> {
        if !self.check(addr, buf.len() as u64, R) {
            return Err(OutsideGuest);
        }
        // SAFETY: the range was checked to be readable guest memory mapped by this Space.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), OutsideGuest> {
        if !self.check(addr, data.len() as u64, W) {
            return Err(OutsideGuest);
        }
        if !self.code_pages.borrow().is_empty()
            && self.unprotect_code(addr, addr + data.len() as u64)
        {
            self.stale.set(true);
        }
        // SAFETY: the range was checked to be writable guest memory (mapped read-write).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        Ok(())
    }

    /// Whole pages go back to the host (MADV_DONTNEED on this private anonymous mapping), so
    /// the guest's first touch of fresh memory faults as it does natively, and its RSS falls
    /// when it frees; partial pages, and pages holding translated code (whose write must
    /// invalidate the cache), are written.
    fn zero(&self, addr: u64, len: u64) -> Result<(), OutsideGuest> {
        let end = addr.checked_add(len).ok_or(OutsideGuest)?;
        if !self.check(addr, len, W) {
            return Err(OutsideGuest);
        }
        let (lo, hi) = ((addr + PAGE - 1) & !(PAGE - 1), end & !(PAGE - 1));
        let has_code = lo < hi && self.code_pages.borrow().range(lo..hi).next().is_some();
        if lo >= hi || has_code {
            let z = vec![0u8; len.min(1 << 20) as usize];
            let mut off = 0;
            while off < len {
                let n = (len - off).min(z.len() as u64) as usize;
                self.write(addr + off, &z[..n])?;
                off += n as u64;
            }
            return Ok(());
        }
        self.write(addr, &vec![0u8; (lo - addr) as usize])?;
        self.write(hi, &vec![0u8; (end - hi) as usize])?;
        // SAFETY: [lo, hi) is whole pages of a private anonymous guest mapping this Space made
        // and checked writable; dropping them only makes them read as zero again.
        if unsafe {
            libc::madvise(
                lo as *mut libc::c_void,
                (hi - lo) as usize,
                libc::MADV_DONTNEED,
            )
        } != 0
        {
            return Err(OutsideGuest);
        }
        Ok(())
    }
}

/// Loads the program's segments; returns the regions and the end of the image.
fn load_image(space: &mut Space, elf: &Elf, bytes: &[u8]) -> Result<u64, BackendError> {
    let (lo, hi) = elf.extent();
    let lo = lo & !(PAGE - 1);
    let hi = (hi + PAGE - 1) & !(PAGE - 1);
    if lo < 0x1_0000 || hi + BRK_SIZE > IMAGE_LIMIT {
        return Err(invalid(format!(
            "segments at {lo:#x}..{hi:#x} do not fit the translator's guest area (64 KiB..{:#x})",
            IMAGE_LIMIT - BRK_SIZE
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
        if perms[i] != 0 {
            space.regions.push(Region {
                lo: rlo,
                hi: rhi,
                perm: perms[i],
            });
        }
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

/// Signal handler: redirects translated code that faulted (or was kicked) to an exit.
extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t for an SA_SIGINFO handler; the context page
    // is mapped while CODE_HI is non-zero (set after mapping, cleared before unmapping), and
    // the guest thread is stopped in this handler, so nothing else writes it.
    unsafe {
        let uc = &mut *(uc as *mut libc::ucontext_t);
        let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
        let lo = CODE_LO.load(Ordering::Acquire);
        let hi = CODE_HI.load(Ordering::Acquire);
        if lo <= rip && rip < hi {
            let ctx = CTX as *mut Ctx;
            let kick = sig == kick_signal();
            (*ctx).fault_host_rip = rip;
            (*ctx).fault_sig = sig as u32 as u64 | (((*info).si_code as u32 as u64) << 32);
            (*ctx).fault_addr = if kick { 0 } else { (*info).si_addr() as u64 };
            let to = if kick { &KICK_EXIT } else { &FAULT_EXIT };
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] = to.load(Ordering::Acquire) as i64;
            return;
        }
        if sig == kick_signal() {
            return; // the dispatcher sees the flag
        }
        // not the guest's: vbench's own bug. Default action on return (the fault repeats).
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Signal dispositions and the alternate stack of a run; restored on drop.
struct Signals {
    old: Vec<(libc::c_int, libc::sigaction)>,
    old_stack: libc::stack_t,
    stack: Vec<u8>,
}

impl Signals {
    fn install() -> Result<Signals, BackendError> {
        let mut stack = vec![0u8; 256 << 10];
        // SAFETY: zeroed sigaction/stack_t are valid out-parameters; the alternate stack is a
        // live buffer owned by the returned value, which restores the old one before freeing it.
        unsafe {
            let mut old_stack: libc::stack_t = std::mem::zeroed();
            let ss = libc::stack_t {
                ss_sp: stack.as_mut_ptr().cast(),
                ss_flags: 0,
                ss_size: stack.len(),
            };
            if libc::sigaltstack(&ss, &mut old_stack) != 0 {
                return Err(os("sigaltstack"));
            }
            let mut s = Signals {
                old: Vec::new(),
                old_stack,
                stack,
            };
            for sig in FAULT_SIGNALS.iter().copied().chain([kick_signal()]) {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut old) != 0 {
                    return Err(os("sigaction"));
                }
                s.old.push((sig, old));
            }
            // the kick must be deliverable to this thread
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, kick_signal());
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(s)
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: restoring dispositions and the alternate stack saved by `install`; the
        // alternate stack buffer is freed only after it is no longer installed.
        unsafe {
            for (sig, old) in &self.old {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
            let mut cur: libc::stack_t = std::mem::zeroed();
            libc::sigaltstack(&self.old_stack, &mut cur);
        }
        let _ = self.stack.len();
    }
}

/// Why the guest stopped.
#[derive(Debug)]
enum Stop {
    Exited(i32),
    Crashed {
        signal: i32,
        message: String,
    },
    /// A fault the guest may handle itself (a handler installed with rt_sigaction).
    Fault(GuestFault),
    Kicked,
}

/// A synchronous signal of the guest, with what its handler would see.
#[derive(Debug)]
struct GuestFault {
    signal: i32,
    code: i32,
    /// Where the guest resumes when the handler returns.
    rip: u64,
    addr: u64,
    message: String,
}

fn gfault(signal: i32, code: i32, rip: u64, addr: u64, message: String) -> Stop {
    Stop::Fault(GuestFault {
        signal,
        code,
        rip,
        addr,
        message,
    })
}

/// si_code of faults the kernel raises itself (#GP, int n, int3).
const SI_KERNEL: i32 = 0x80;
const SA_RESTORER: u64 = 0x0400_0000;

/// Delivers `f` to the guest's handler, Linux-style: an rt_sigframe (return address = the
/// handler's restorer, ucontext with the registers, siginfo) below the red zone; false when
/// the guest has no handler for it (it then dies of the signal).
fn deliver(ctx: &mut Ctx, space: &Space, vcpu: &mut Vcpu, f: &GuestFault) -> bool {
    let Some(&[handler, flags, restorer, _mask]) = vcpu.actions.get(f.signal as usize) else {
        return false;
    };
    if handler <= 1 || flags & SA_RESTORER == 0 {
        return false;
    }
    let g = ctx.gpr;
    let frame = (g[4].wrapping_sub(128 + 440) & !15).wrapping_sub(8);
    let (uc, info) = (frame + 8, frame + 8 + 304);
    let mut b: Vec<u8> = Vec::with_capacity(440);
    let mut q = |v: u64| b.extend(v.to_le_bytes());
    q(restorer);
    for _ in 0..5 {
        q(0); // uc_flags, uc_link, uc_stack
    }
    for r in [8, 9, 10, 11, 12, 13, 14, 15, 7, 6, 5, 3, 2, 0, 1, 4] {
        q(g[r]);
    }
    q(f.rip);
    q((ctx.rflags & !0x300) | (u64::from(vcpu.tf) << 8) | (u64::from(vcpu.vif) << 9));
    q(0x2b << 48 | 0x33); // cs, gs, fs, ss
    let trapno = match f.signal {
        libc::SIGILL => 6,
        libc::SIGTRAP => 3,
        libc::SIGFPE => 0,
        _ if f.code == SI_KERNEL => 13,
        _ => 14,
    };
    for v in [0, trapno, 0, f.addr, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] {
        q(v); // err, trapno, oldmask, cr2, fpstate, reserved[8], uc_sigmask
    }
    q(f.signal as u32 as u64);
    q(f.code as u32 as u64);
    q(f.addr);
    b.resize(440, 0);
    if space.write(frame, &b).is_err() {
        return false;
    }
    ctx.gpr[7] = f.signal as u64;
    ctx.gpr[6] = info;
    ctx.gpr[2] = uc;
    ctx.gpr[0] = 0;
    ctx.gpr[4] = frame;
    ctx.rflags &= !0x500; // TF, DF
    vcpu.tf = false;
    ctx.next = handler;
    true
}

/// rt_sigreturn: the registers from the ucontext at the guest's rsp.
fn sigreturn(ctx: &mut Ctx, space: &Space, vcpu: &mut Vcpu) -> Result<(), Stop> {
    let uc = ctx.gpr[4];
    let mut b = [0u8; 18 * 8];
    space
        .read(uc + 40, &mut b)
        .map_err(|_| segv(ctx.next, uc))?;
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8"));
    for (i, r) in [8, 9, 10, 11, 12, 13, 14, 15, 7, 6, 5, 3, 2, 0, 1, 4]
        .into_iter()
        .enumerate()
    {
        ctx.gpr[r] = w(i);
    }
    ctx.next = w(16);
    ctx.rflags = (ctx.rflags & !POPF_MASK) | (w(17) & POPF_MASK) | 2;
    vcpu.tf = w(17) & 0x100 != 0;
    Ok(())
}

fn crash(signal: i32, message: String) -> Stop {
    Stop::Crashed { signal, message }
}

/// The translator's state for one run: the cache mapping, translated blocks, counters.
struct Translator {
    tramps: Tramps,
    cursor: u64,
    blocks: HashMap<u64, u64, FastHash>,
    /// host address of each translated instruction -> guest address
    host_to_guest: BTreeMap<u64, u64>,
    counters: BTreeMap<String, u64>,
    /// emulated instructions by mnemonic (named at the end of the run)
    emulated: HashMap<iced_x86::Mnemonic, u64, FastHash>,
    /// decoded sensitive instructions by guest address
    decoded: HashMap<u64, iced_x86::Instruction, FastHash>,
    /// cache flushes so far
    generation: u64,
    /// The next block is the one guest instruction that wrote to its own code: translated
    /// alone, without protecting its page, and not kept.
    single: bool,
}

/// A multiplicative hasher for u64 keys (guest addresses, mnemonics): the dispatcher's maps
/// are looked up on every exit, where SipHash would be a measurable share of the cost.
#[derive(Default, Clone, Copy)]
struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// The hasher of [`FastHash`].
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

impl Translator {
    fn bump(&mut self, k: &str) {
        *self.counters.entry(k.to_string()).or_default() += 1;
    }

    fn cache(&mut self) -> &mut [u8] {
        // SAFETY: the cache mapping [CACHE_BASE, CODE_END) lives for the whole run (owned by
        // the Space); only the dispatcher thread writes it, while no guest code runs.
        unsafe { std::slice::from_raw_parts_mut(CACHE_BASE as *mut u8, CACHE_SIZE as usize) }
    }

    fn table_set(&mut self, guest: u64, host: u64) {
        let i = (guest & (TABLE_ENTRIES - 1)) as usize;
        let o = (TABLE - CACHE_BASE) as usize + 16 * i;
        let c = self.cache();
        c[o..o + 8].copy_from_slice(&guest.wrapping_neg().to_le_bytes());
        c[o + 8..o + 16].copy_from_slice(&host.to_le_bytes());
    }

    /// Forgets every translation (cache full).
    fn flush(&mut self) {
        self.generation += 1;
        self.blocks.clear();
        self.decoded.clear();
        self.host_to_guest.clear();
        self.cursor = CODE;
        let t = (TABLE - CACHE_BASE) as usize;
        let c = self.cache();
        for e in c[t..t + 16 * TABLE_ENTRIES as usize].chunks_exact_mut(16) {
            e[..8].copy_from_slice(&EMPTY_KEY.to_le_bytes());
        }
    }

    /// The host address of the translation of `pc`, translating it if needed.
    fn block(&mut self, space: &Space, pc: u64) -> Result<u64, Stop> {
        if !self.single {
            if let Some(h) = self.blocks.get(&pc) {
                return Ok(*h);
            }
        }
        if self.cursor + 0x4000 > CODE_END {
            self.flush();
        }
        let single = std::mem::take(&mut self.single);
        let max = if single { 1 } else { 64 };
        let b = translate_n(pc, space.code_at(pc), self.cursor, &self.tramps, max).map_err(|e| match e
        {
            NoBlock::NotExecutable => crash(
                libc::SIGSEGV,
                format!("guest crashed: SIGSEGV at guest rip {pc:#x}, address {pc:#x} (not executable guest memory)"),
            ),
            NoBlock::Encode(m) => crash(
                libc::SIGILL,
                format!("bt: cannot translate the block at guest rip {pc:#x}: {m}"),
            ),
        })?;
        let at = self.cursor;
        let o = (at - CACHE_BASE) as usize;
        self.cache()[o..o + b.bytes.len()].copy_from_slice(&b.bytes);
        self.cursor = (at + b.bytes.len() as u64 + 15) & !15;
        self.host_to_guest.extend(b.map.iter().copied());
        if single {
            CODE_HI.store(self.cursor, Ordering::Release);
            return Ok(at);
        }
        space.protect_code(pc, b.guest_end);
        self.blocks.insert(pc, at);
        self.table_set(pc, at);
        self.bump("bt.blocks_translated");
        *self.counters.entry("bt.guest_instrs".into()).or_default() += b.guest_instrs as u64;
        CODE_HI.store(self.cursor, Ordering::Release);
        Ok(at)
    }

    fn guest_rip_of(&self, host: u64) -> Option<u64> {
        self.host_to_guest
            .range(..=host)
            .next_back()
            .map(|(_, g)| *g)
    }
}

/// The guest's virtual CPU state the dispatcher keeps beside the registers.
struct Vcpu {
    vif: bool,
    tsc0: u64,
    /// rt_sigaction state: handler, flags, restorer, mask per signal
    actions: Vec<[u64; 4]>,
    /// The guest's trap flag: a SIGTRAP after each instruction (single-stepped by the dispatcher)
    tf: bool,
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc is available on every x86-64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// What `cpuid` returns in the guest: the host's, with the hypervisor bit and vbench's leaves.
pub fn virtual_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    if (0x4000_0000..0x4000_0100).contains(&leaf) {
        if leaf == 0x4000_0000 {
            let sig = b"vbenchBTvCPU";
            let w = |i: usize| u32::from_le_bytes(sig[i..i + 4].try_into().expect("4"));
            return [0x4000_0000, w(0), w(4), w(8)];
        }
        return [0; 4];
    }
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    let mut v = [r.eax, r.ebx, r.ecx, r.edx];
    if leaf == 1 {
        v[2] |= 1 << 31;
    }
    v
}

/// Flags `popf` may change in the guest (CF PF AF ZF SF DF OF AC ID).
const POPF_MASK: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x4_0000 | 0x20_0000;

fn mnemonic_name(m: iced_x86::Mnemonic) -> String {
    if m == iced_x86::Mnemonic::INVALID {
        return "invalid".into();
    }
    format!("{m:?}").to_lowercase()
}

/// Emulates the sensitive (or undecodable) instruction at `ctx.next`; Ok = continue.
fn emulate(
    ctx: &mut Ctx,
    space: &Space,
    abi: &mut Abi,
    vcpu: &mut Vcpu,
    tr: &mut Translator,
) -> Result<(), Stop> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic as M};
    let pc = ctx.next;
    let i = match tr.decoded.get(&pc) {
        Some(i) => *i,
        None => {
            let code = space.code_at(pc);
            let mut d = Decoder::with_ip(64, code, pc, DecoderOptions::NONE);
            let i = d.decode();
            if i.is_invalid() {
                return Err(undecodable(pc, code.len() as u64, d.last_error(), tr));
            }
            tr.decoded.insert(pc, i);
            i
        }
    };
    *tr.emulated.entry(i.mnemonic()).or_default() += 1;
    let next = i.next_ip();
    let kind = || mnemonic_name(i.mnemonic());
    let g = &mut ctx.gpr;
    match i.mnemonic() {
        M::Syscall if g[0] == 15 => return sigreturn(ctx, space, vcpu),
        M::Syscall if g[0] == 13 => {
            // rt_sigaction: signals are the translator's to deliver
            let (sig, act, old) = (g[7] as usize, g[6], g[2]);
            let r: i64 = if !(1..=64).contains(&sig) || sig == 9 || sig == 19 {
                -22
            } else if old != 0
                && space
                    .write(old, &vcpu.actions[sig].map(u64::to_le_bytes).concat())
                    .is_err()
            {
                -14
            } else if act != 0 {
                let mut b = [0u8; 32];
                if space.read(act, &mut b).is_err() {
                    -14
                } else {
                    for (k, v) in vcpu.actions[sig].iter_mut().enumerate() {
                        *v = u64::from_le_bytes(b[k * 8..k * 8 + 8].try_into().expect("8"));
                    }
                    0
                }
            } else {
                0
            };
            let g = &mut ctx.gpr;
            g[0] = r as u64;
            g[1] = next;
            g[11] = ctx.rflags;
        }
        M::Syscall => {
            let args = [g[7], g[6], g[2], g[10], g[8], g[9]];
            let r = match abi.syscall(space, g[0], args) {
                Action::Return(v) => v,
                Action::Exit(code) => return Err(Stop::Exited(code & 0xff)),
                Action::SetFs(base) => {
                    ctx.guest_fs = base;
                    0
                }
            };
            let g = &mut ctx.gpr;
            g[0] = r as u64;
            g[1] = next;
            g[11] = ctx.rflags;
        }
        M::Cpuid => {
            let v = virtual_cpuid(g[0] as u32, g[1] as u32);
            g[0] = u64::from(v[0]);
            g[3] = u64::from(v[1]);
            g[1] = u64::from(v[2]);
            g[2] = u64::from(v[3]);
        }
        M::Rdtsc | M::Rdtscp => {
            let t = rdtsc().wrapping_sub(vcpu.tsc0);
            g[0] = t & 0xffff_ffff;
            g[2] = t >> 32;
            if i.mnemonic() == M::Rdtscp {
                g[1] = 0;
            }
        }
        M::Pushfq | M::Pushf => {
            let size = if i.mnemonic() == M::Pushf { 2 } else { 8 };
            let v = (ctx.rflags & !0x300)
                | (u64::from(vcpu.tf) << 8)
                | (u64::from(vcpu.vif) << 9)
                | 2;
            let sp = g[4].wrapping_sub(size);
            space
                .write(sp, &v.to_le_bytes()[..size as usize])
                .map_err(|_| segv(pc, sp))?;
            ctx.gpr[4] = sp;
        }
        M::Popfq | M::Popf => {
            let size = if i.mnemonic() == M::Popf { 2 } else { 8 };
            let mut b = [0u8; 8];
            let sp = g[4];
            space
                .read(sp, &mut b[..size as usize])
                .map_err(|_| segv(pc, sp))?;
            let v = u64::from_le_bytes(b);
            let mask = if size == 2 { POPF_MASK & 0xffff } else { POPF_MASK };
            vcpu.vif = v & 0x200 != 0;
            vcpu.tf = v & 0x100 != 0;
            ctx.rflags = (ctx.rflags & !mask) | (v & mask) | 2;
            ctx.gpr[4] = sp + size;
        }
        M::Rdfsbase => {
            let r = i.op0_register();
            write_reg(ctx, r, ctx.guest_fs);
        }
        M::Wrfsbase => {
            ctx.guest_fs = read_reg(ctx, i.op0_register());
        }
        M::Sgdt | M::Sidt | M::Sldt | M::Str | M::Smsw => {
            // a virtual machine's tables: fixed, made-up values
            let (base, limit): (u64, u16) = match i.mnemonic() {
                M::Sgdt => (0xffff_fe00_0000_1000, 0x7f),
                M::Sidt => (0xffff_fe00_0000_0000, 0xfff),
                M::Sldt => (0, 0),
                M::Str => (0, 0x40),
                _ => (0, 0x33),
            };
            let bytes: Vec<u8> = if matches!(i.mnemonic(), M::Sgdt | M::Sidt) {
                let mut v = limit.to_le_bytes().to_vec();
                v.extend(base.to_le_bytes());
                v
            } else {
                limit.to_le_bytes().to_vec()
            };
            if i.op0_kind() == iced_x86::OpKind::Memory {
                let regs = ctx.gpr;
                let fs = ctx.guest_fs;
                let addr = i
                    .virtual_address(0, 0, |r, _, _| match r {
                        iced_x86::Register::FS => Some(fs),
                        iced_x86::Register::ES
                        | iced_x86::Register::CS
                        | iced_x86::Register::SS
                        | iced_x86::Register::DS
                        | iced_x86::Register::GS => Some(0),
                        r => Some(reg_value(&regs, r)),
                    })
                    .unwrap_or(0);
                space.write(addr, &bytes).map_err(|_| segv(pc, addr))?;
            } else if i.mnemonic() == M::Smsw && i.op0_register().size() >= 4 {
                // a register gets all of CR0's low half: PG AM WP NE ET MP PE
                write_reg(ctx, i.op0_register(), 0x8005_0033);
            } else {
                write_reg(ctx, i.op0_register(), u64::from(limit));
            }
        }
        M::Int3 => {
            return Err(gfault(
                libc::SIGTRAP,
                SI_KERNEL,
                next, // a trap: the handler returns after the int3
                0,
                format!("guest crashed: SIGTRAP (int3) at guest rip {pc:#x}"),
            ))
        }
        M::Int if i.immediate8() == 0x80 => {
            return Err(crash(
                libc::SIGSEGV,
                format!("guest crashed: SIGSEGV at guest rip {pc:#x}: int 0x80 (32-bit system call) is refused"),
            ))
        }
        M::Ud0 | M::Ud1 | M::Ud2 | M::Sysenter | M::Sysexit | M::Sysret => {
            return Err(gfault(
                libc::SIGILL,
                2, // ILL_ILLOPN
                pc,
                pc,
                format!("guest crashed: SIGILL ({}) at guest rip {pc:#x}", kind()),
            ))
        }
        _ if is_far(&i) || matches!(i.mnemonic(), M::Retf | M::Iret | M::Iretd | M::Iretq) => {
            return Err(crash(
                libc::SIGSEGV,
                format!("guest crashed: SIGSEGV at guest rip {pc:#x}: far transfer ({}) to another code segment is refused", kind()),
            ))
        }
        _ => {
            return Err(gfault(
                libc::SIGSEGV,
                SI_KERNEL,
                pc,
                0,
                format!("guest crashed: SIGSEGV ({}: privileged or unsupported) at guest rip {pc:#x}", kind()),
            ))
        }
    }
    ctx.next = next;
    Ok(())
}

/// The guest's crash for bytes at `pc` that do not decode (`len` executable bytes there).
fn undecodable(pc: u64, len: u64, err: iced_x86::DecoderError, tr: &mut Translator) -> Stop {
    if err == iced_x86::DecoderError::NoMoreBytes {
        let end = pc + len;
        return crash(
            libc::SIGSEGV,
            format!("guest crashed: SIGSEGV at guest rip {pc:#x}, address {end:#x} (instruction runs off executable memory)"),
        );
    }
    *tr.emulated.entry(iced_x86::Mnemonic::INVALID).or_default() += 1;
    gfault(
        libc::SIGILL,
        2,
        pc,
        pc,
        format!("guest crashed: SIGILL (invalid opcode) at guest rip {pc:#x}"),
    )
}

fn segv(pc: u64, addr: u64) -> Stop {
    gfault(
        libc::SIGSEGV,
        1, // SEGV_MAPERR
        pc,
        addr,
        format!("guest crashed: SIGSEGV at guest rip {pc:#x}, address {addr:#x}"),
    )
}

fn reg_index(r: iced_x86::Register) -> Option<usize> {
    let full = r.full_register();
    GPRS.iter().position(|g| *g == full)
}

fn reg_value(gpr: &[u64; 16], r: iced_x86::Register) -> u64 {
    let Some(ix) = reg_index(r) else { return 0 };
    let v = gpr[ix];
    match r.size() {
        4 => v & 0xffff_ffff,
        2 => v & 0xffff,
        1 => v & 0xff,
        _ => v,
    }
}

fn read_reg(ctx: &Ctx, r: iced_x86::Register) -> u64 {
    reg_value(&ctx.gpr, r)
}

fn write_reg(ctx: &mut Ctx, r: iced_x86::Register, v: u64) {
    let Some(ix) = reg_index(r) else { return };
    ctx.gpr[ix] = match r.size() {
        4 => v & 0xffff_ffff,
        2 => (ctx.gpr[ix] & !0xffff) | (v & 0xffff),
        _ => v,
    };
}

impl Backend for BtBackend {
    fn name(&self) -> &'static str {
        "bt"
    }

    fn describe(&self) -> &'static str {
        "the same binary under vbench's dynamic binary translator"
    }

    fn availability(&self) -> Availability {
        if !cfg!(target_arch = "x86_64") {
            Availability::Unavailable("the translator needs an x86-64 host".into())
        } else if xsave_mask().is_none() {
            Availability::Unavailable("no XSAVE (or its state is too large)".into())
        } else if !has_fsgsbase() {
            Availability::Unavailable("the kernel does not enable FSGSBASE (Linux >= 5.9)".into())
        } else {
            Availability::Available
        }
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        if !has_fsgsbase() {
            return Err(BackendError::Unavailable {
                backend: "bt",
                reason: "the kernel does not enable FSGSBASE".into(),
            });
        }
        let _lock = RUN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let _pin = Pin::to(inv.cpu)?;
        let t0 = Instant::now();
        let bytes = inv.program.bytes()?;
        let elf = Elf::parse(&bytes, PIE_BASE)
            .map_err(|e| invalid(format!("{}: {e}", inv.program.name())))?;
        let mut space = Space {
            regions: Vec::new(),
            maps: Vec::new(),
            code_pages: RefCell::new(BTreeSet::new()),
            stale: Cell::new(false),
        };
        let image_end = load_image(&mut space, &elf, &bytes)
            .map_err(|e| invalid(format!("{}: {e}", inv.program.name())))?;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        space.map(image_end, BRK_SIZE, rw)?;
        space.map(STACK_TOP - STACK_SIZE, STACK_SIZE, rw)?;
        space.map(MMAP_LO, MMAP_HI - MMAP_LO, rw)?;
        // linux_abi keeps no protections for anonymous mappings, so the guest may run code it
        // wrote there (a JIT, a patched trampoline); writes over such code invalidate it
        for (lo, hi, perm) in [
            (image_end, image_end + BRK_SIZE, R | W),
            (STACK_TOP - STACK_SIZE, STACK_TOP, R | W),
            (MMAP_LO, MMAP_HI, R | W | X),
        ] {
            space.regions.push(Region { lo, hi, perm });
        }
        space.map(CACHE_BASE, CACHE_SIZE, rw | libc::PROT_EXEC)?;

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
            &[b"PATH=/bin", b"HOME=/"],
            &mut |a, d| {
                space
                    .write(a, d)
                    .map_err(|_| "outside the stack".to_string())
            },
        )
        .map_err(|e| invalid(format!("initial stack: {e}")))?;

        let xmask = xsave_mask().ok_or_else(|| BackendError::Unavailable {
            backend: "bt",
            reason: "no usable XSAVE".into(),
        })?;
        let (tcode, tramps) =
            trampolines(xmask).map_err(|e| invalid(format!("assembling the trampolines: {e}")))?;
        let mut tr = Translator {
            tramps,
            cursor: CODE,
            blocks: HashMap::default(),
            host_to_guest: BTreeMap::new(),
            counters: BTreeMap::new(),
            emulated: HashMap::default(),
            decoded: HashMap::default(),
            generation: 0,
            single: false,
        };
        {
            let o = (TRAMP - CACHE_BASE) as usize;
            tr.cache()[o..o + tcode.len()].copy_from_slice(&tcode);
            tr.flush();
            tr.generation = 0;
        }
        // SAFETY: the context page is mapped read-write at CTX for the whole run, is suitably
        // aligned (page aligned), and zero bytes are a valid Ctx (plain integers and arrays).
        let ctx: &mut Ctx = unsafe { &mut *(CTX as *mut Ctx) };
        ctx.gpr = [0; 16];
        ctx.gpr[4] = rsp;
        ctx.rflags = 0x202;
        ctx.next = elf.entry;
        // a fresh FPU/SSE state: default control words, MXCSR 0x1f80
        // XSTATE_BV = 0: x87 and vector registers start in their initial state; MXCSR 0x1f80
        ctx.guest_xsave = [0; XSAVE_BYTES];
        ctx.guest_xsave[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        ctx.xmask = xmask;
        // SAFETY: `enter` points at the entry trampoline just written into the executable
        // cache; it follows the System V ABI (saves callee-saved registers, FS base and FPU
        // state and restores them before returning).
        let enter: extern "C" fn(*mut Ctx) = unsafe { std::mem::transmute(tramps.enter) };

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
        let mut abi = Abi::new(
            linux_abi::Layout {
                brk_start: image_end,
                brk_limit: image_end + BRK_SIZE,
                mmap_lo: MMAP_LO,
                mmap_hi: MMAP_HI,
            },
            outputs,
            !capture,
            allowed,
        );

        let signals = Signals::install()?;
        FAULT_EXIT.store(tramps.fault_exit, Ordering::Release);
        KICK_EXIT.store(tramps.kick_exit, Ordering::Release);
        CODE_LO.store(CODE, Ordering::Release);
        CODE_HI.store(tr.cursor, Ordering::Release);

        // watchdog: timeout and cancellation make the guest leave through the kick signal
        let done = Arc::new(AtomicBool::new(false));
        let kicked = Arc::new(AtomicBool::new(false));
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
                    if expired || cancelled {
                        kicked.store(true, Ordering::Release);
                        // SAFETY: the run thread lives until this thread is joined; the kick
                        // signal has a handler installed for the whole run.
                        unsafe { libc::pthread_kill(me, kick_signal()) };
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };

        let ru0 = thread_times();
        let mut vcpu = Vcpu {
            vif: true,
            tsc0: rdtsc(),
            actions: vec![[0; 4]; 65],
            tf: false,
        };
        let mut startup = None;
        let mut entries = 0u64;
        let mut misses = 0u64;
        let mut links = 0u64;
        let stop = loop {
            if kicked.load(Ordering::Acquire) {
                break Stop::Kicked;
            }
            let pc = ctx.next;
            let generation = tr.generation;
            // the guest's trap flag: run one instruction, then deliver SIGTRAP
            let stepping = vcpu.tf;
            tr.single |= stepping;
            let host = match tr.block(&space, pc) {
                Ok(h) => h,
                Err(s) => break s,
            };
            let site = ctx.info;
            if (CODE..CODE_END).contains(&site) && tr.generation == generation {
                patch_link(tr.cache(), site, host);
                links += 1;
            }
            ctx.info = 0;
            ctx.s_tgt = host;
            entries += 1;
            startup.get_or_insert_with(|| t0.elapsed());
            enter(ctx);
            match ctx.info {
                INFO_INDIRECT => misses += 1,
                INFO_EMULATE => {
                    match emulate(ctx, &space, &mut abi, &mut vcpu, &mut tr) {
                        Ok(()) => {}
                        Err(Stop::Fault(f)) if deliver(ctx, &space, &mut vcpu, &f) => {
                            *tr.counters
                                .entry("bt.signals_delivered".into())
                                .or_default() += 1;
                        }
                        Err(Stop::Fault(f)) => break crash(f.signal, f.message),
                        Err(s) => break s,
                    }
                    if space.stale.take() {
                        tr.flush(); // a syscall wrote over translated code
                    }
                }
                INFO_FAULT
                    if ctx.fault_sig as u32 == libc::SIGSEGV as u32
                        && space.unprotect_code(ctx.fault_addr, ctx.fault_addr + 1) =>
                {
                    // self-modifying code: the guest wrote to a page it executes. Forget every
                    // translation and run the writing instruction again, now unprotected.
                    match tr.host_to_guest.get(&ctx.fault_host_rip) {
                        Some(g) => {
                            ctx.next = *g;
                            tr.flush();
                            tr.single = true;
                        }
                        None => {
                            break crash(
                                libc::SIGSEGV,
                                "bt: a write to translated code from an instruction that cannot be restarted".into(),
                            )
                        }
                    }
                }
                INFO_FAULT => {
                    let host = ctx.fault_host_rip;
                    let sig = ctx.fault_sig as u32 as i32;
                    let code = (ctx.fault_sig >> 32) as u32 as i32;
                    let grip = tr.guest_rip_of(host).unwrap_or(0);
                    let name = match sig {
                        libc::SIGSEGV => "SIGSEGV",
                        libc::SIGBUS => "SIGBUS",
                        libc::SIGILL => "SIGILL",
                        libc::SIGFPE => "SIGFPE",
                        libc::SIGTRAP => "SIGTRAP",
                        _ => "signal",
                    };
                    let mut m = format!("guest crashed: {name} at guest rip {grip:#x}");
                    if matches!(sig, libc::SIGSEGV | libc::SIGBUS) {
                        m.push_str(&format!(", address {:#x}", ctx.fault_addr));
                    }
                    if std::env::var_os("VBENCH_BT_DEBUG").is_some() {
                        m.push_str(&format!(" (host rip {host:#x}) registers {:x?}", ctx.gpr));
                    }
                    // a precise fault (at the start of a translated instruction) may be handled
                    let f = GuestFault {
                        signal: sig,
                        code,
                        rip: grip,
                        addr: ctx.fault_addr,
                        message: m,
                    };
                    if tr.host_to_guest.get(&host) == Some(&grip)
                        && deliver(ctx, &space, &mut vcpu, &f)
                    {
                        *tr.counters
                            .entry("bt.signals_delivered".into())
                            .or_default() += 1;
                        continue;
                    }
                    break crash(sig, f.message);
                }
                INFO_KICK => break Stop::Kicked,
                _ => {} // a link site: linked on the next turn
            }
            if stepping && vcpu.tf {
                let f = GuestFault {
                    signal: libc::SIGTRAP,
                    code: 2, // TRAP_TRACE
                    rip: ctx.next,
                    addr: 0,
                    message: format!(
                        "guest crashed: SIGTRAP (trap flag) after the instruction at guest rip {pc:#x}"
                    ),
                };
                if !deliver(ctx, &space, &mut vcpu, &f) {
                    break crash(f.signal, f.message);
                }
                *tr.counters
                    .entry("bt.signals_delivered".into())
                    .or_default() += 1;
            }
        };
        CODE_HI.store(0, Ordering::Release);
        CODE_LO.store(0, Ordering::Release);
        done.store(true, Ordering::Release);
        let _ = watchdog.join();
        drop(signals);
        let ru1 = thread_times();
        let wall = t0.elapsed();

        let mut counters = std::mem::take(&mut tr.counters);
        counters.insert("bt.cache_bytes".into(), tr.cursor - CODE);
        counters.insert("bt.links".into(), links);
        counters.insert("bt.indirect_hits".into(), ctx.hits);
        counters.insert("bt.indirect_misses".into(), misses);
        counters.insert("bt.dispatcher_entries".into(), entries);
        counters.insert("bt.invalidations".into(), tr.generation);
        for (m, n) in &tr.emulated {
            counters.insert(format!("bt.emulated.{}", mnemonic_name(*m)), *n);
        }
        counters.extend(abi.counters());
        counters.insert(
            "bt.guest_resident_bytes_at_exit".into(),
            space.resident_bytes(),
        );
        drop(space);

        let mut stderr_tail = String::new();
        let stop = match stop {
            Stop::Fault(f) => crash(f.signal, f.message),
            s => s,
        };
        let exit = match stop {
            Stop::Exited(code) => Exit::Code { code },
            Stop::Crashed { signal, message } => {
                stderr_tail = format!("vbench bt: {message}\n");
                Exit::Signal { signal }
            }
            Stop::Fault(_) | Stop::Kicked => {
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
                "vbench bt: first unsupported syscall {nr} ({}) answered with ENOSYS\n",
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
                user_ns: ru1.0.saturating_sub(ru0.0),
                sys_ns: ru1.1.saturating_sub(ru0.1),
                max_rss_kib: None,
                exit,
                report: None,
                startup_ns: startup.map(|s| s.as_nanos() as u64),
                counters,
                stdout_bytes,
                stdout_digest: String::new(),
                stderr_tail,
                cpu: inv.cpu,
            },
            stdout,
        })
    }
}

/// Pins the calling thread to one CPU until dropped (then its old affinity comes back).
struct Pin(Option<libc::cpu_set_t>);

impl Pin {
    fn to(cpu: Option<usize>) -> Result<Pin, BackendError> {
        let Some(cpu) = cpu else { return Ok(Pin(None)) };
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(invalid(format!("CPU {cpu} is out of range")));
        }
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: zeroed cpu_set_t values are valid; the affinity calls read/write them only.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut old) != 0 {
                return Err(os("sched_getaffinity"));
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size, &set) != 0 {
                return Err(os(&format!("pinning to CPU {cpu}")));
            }
            Ok(Pin(Some(old)))
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: restoring the affinity saved by `Pin::to` for this thread.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old) };
        }
    }
}

/// User and system CPU time of the calling thread, nanoseconds.
fn thread_times() -> (u64, u64) {
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the calling thread's usage into `ru`.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_sets_the_hypervisor_bit_and_names_vbench() {
        assert_ne!(virtual_cpuid(1, 0)[2] & (1 << 31), 0);
        let v = virtual_cpuid(0x4000_0000, 0);
        let mut s = Vec::new();
        for w in &v[1..] {
            s.extend(w.to_le_bytes());
        }
        assert_eq!(&s, b"vbenchBTvCPU");
    }

    #[test]
    fn registers_of_every_size_are_read_and_written() {
        let mut gpr = [0u64; 16];
        gpr[0] = 0x1122_3344_5566_7788;
        assert_eq!(reg_value(&gpr, iced_x86::Register::EAX), 0x5566_7788);
        assert_eq!(reg_value(&gpr, iced_x86::Register::AX), 0x7788);
        assert_eq!(reg_value(&gpr, iced_x86::Register::R15), 0);
    }
}
