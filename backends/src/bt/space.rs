//! The guest's address space: host mappings at the guest's own addresses, the guest's view of
//! their permissions, and the write protection of pages holding translated code.

use super::translate::CACHE_BASE;
use super::{invalid, BackendError};
use crate::linux_abi::{GuestMem, OutsideGuest};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

/// Load address of a static-pie guest.
pub(super) const PIE_BASE: u64 = 0x40_0000;
/// The guest's program break grows from its image up to here (just below the code cache).
pub(super) const BRK_END: u64 = CACHE_BASE;
/// The guest's stack.
pub(super) const STACK_TOP: u64 = 0x7000_0000;
pub(super) const STACK_SIZE: u64 = 8 << 20;
/// The guest's mappings (mmap): a reservation of 62 GiB above the stack, inaccessible until
/// mapped.
pub(super) const MMAP_LO: u64 = STACK_TOP;
pub(super) const MMAP_HI: u64 = 0x10_0000_0000;
/// Mappings go below this first, within reach of the code cache's rip-relative operands
/// (±2 GiB), so that the shared libraries an ELF interpreter maps can be translated.
pub(super) const MMAP_NEAR: u64 = 0xE000_0000;
/// Guest images must lie below this (so the cache reaches them with rip-relative operands).
pub(super) const IMAGE_LIMIT: u64 = 0x4000_0000;
pub(super) const PAGE: u64 = 4096;

pub(super) const R: u8 = 1;
pub(super) const W: u8 = 2;
pub(super) const X: u8 = 4;

/// A guest memory region (page aligned) and its guest permissions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Region {
    pub(super) lo: u64,
    pub(super) hi: u64,
    pub(super) perm: u8,
}

/// Guest memory: host mappings at the guest's own addresses. Unmapped on drop.
pub(super) struct Space {
    /// The guest's regions by start: disjoint, each with one permission.
    regions: RefCell<BTreeMap<u64, Region>>,
    maps: Vec<(u64, u64)>,
    /// Writable guest pages holding translated code, write-protected in the host so that a
    /// write to them (self-modifying code) is seen.
    code_pages: RefCell<BTreeSet<u64>>,
    /// Set when a write through [`GuestMem`] hit a code page: the dispatcher flushes the cache.
    pub(super) stale: Cell<bool>,
}

impl Space {
    /// An empty address space.
    pub(super) fn new() -> Space {
        Space {
            regions: RefCell::new(BTreeMap::new()),
            maps: Vec::new(),
            code_pages: RefCell::new(BTreeSet::new()),
            stale: Cell::new(false),
        }
    }

    /// Maps `len` fresh bytes at `lo` (exactly there), kept until the Space drops.
    pub(super) fn map(&mut self, lo: u64, len: u64, prot: i32) -> Result<*mut u8, BackendError> {
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
    pub(super) fn protect_code(&self, lo: u64, hi: u64) {
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
    pub(super) fn unprotect_code(&self, lo: u64, hi: u64) -> bool {
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
    pub(super) fn resident_bytes(&self) -> u64 {
        let mut total = 0;
        let mut vec = Vec::new();
        // the regions the guest can reach (its inaccessible reservations are never resident)
        let regions: Vec<(u64, u64)> = self
            .regions
            .borrow()
            .values()
            .map(|r| (r.lo, r.hi - r.lo))
            .collect();
        for (lo, len) in regions {
            let pages = len.div_ceil(PAGE) as usize;
            vec.clear();
            vec.resize(pages, 0u8);
            // SAFETY: [lo, lo+len) is a region of a mapping this Space made; `vec` has one byte
            // per page.
            if unsafe { libc::mincore(lo as *mut libc::c_void, len as usize, vec.as_mut_ptr()) }
                == 0
            {
                total += vec.iter().filter(|b| *b & 1 != 0).count() as u64 * PAGE;
            }
        }
        total
    }

    fn find(&self, addr: u64) -> Option<Region> {
        self.regions
            .borrow()
            .range(..=addr)
            .next_back()
            .map(|(_, r)| *r)
            .filter(|r| addr < r.hi)
    }

    /// Gives [lo, hi) the guest permission `perm` (0: no access), splitting the regions it
    /// overlaps.
    pub(super) fn set_perm(&self, lo: u64, hi: u64, perm: u8) {
        let mut regions = self.regions.borrow_mut();
        let over: Vec<u64> = regions
            .range(..hi)
            .filter(|(_, r)| r.hi > lo)
            .map(|(s, _)| *s)
            .collect();
        for s in over {
            let r = regions.remove(&s).expect("listed");
            if r.lo < lo {
                regions.insert(r.lo, Region { hi: lo, ..r });
            }
            if r.hi > hi {
                regions.insert(hi, Region { lo: hi, ..r });
            }
        }
        if perm != 0 && lo < hi {
            regions.insert(lo, Region { lo, hi, perm });
        }
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

    /// Whether [addr, addr+len) lies in the guest memory this Space reserved (not the cache).
    fn reserved(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.maps
            .iter()
            .any(|&(lo, l)| lo != CACHE_BASE && lo <= addr && end <= lo + l)
    }

    /// The executable guest bytes from `pc` to the end of its region (at most 4 KiB).
    pub(super) fn code_at(&self, pc: u64) -> &[u8] {
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

impl Space {
    /// Unmaps all of the guest's memory and forgets its regions, keeping the code cache's
    /// mapping (execve: a new image comes).
    pub(super) fn clear_guest(&mut self) {
        let keep = |lo: u64| lo == CACHE_BASE;
        for (lo, len) in self.maps.iter().filter(|(lo, _)| !keep(*lo)) {
            // SAFETY: unmapping guest mappings this Space made; the translator holds no
            // reference into them across an exec.
            unsafe { libc::munmap(*lo as *mut libc::c_void, *len as usize) };
        }
        self.maps.retain(|(lo, _)| keep(*lo));
        self.regions.borrow_mut().clear();
        self.code_pages.borrow_mut().clear();
        self.stale.set(false);
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
    fn host_range(&self, addr: u64, len: u64, write: bool) -> Result<*mut u8, OutsideGuest> {
        if !self.check(addr, len, if write { W } else { R }) {
            return Err(OutsideGuest);
        }
        if write && !self.code_pages.borrow().is_empty() && self.unprotect_code(addr, addr + len) {
            self.stale.set(true);
        }
        Ok(addr as *mut u8)
    }

    fn host_addr(&self, addr: u64, len: u64) -> Result<*mut u8, OutsideGuest> {
        if self.reserved(addr, len) {
            Ok(addr as *mut u8)
        } else {
            Err(OutsideGuest)
        }
    }

    /// The guest's protection becomes the host's: a write to a read-only mapping faults in
    /// translated code as it does natively. (x86 pages that can be executed can be read.)
    fn protect(&self, addr: u64, len: u64, prot: i32) -> i32 {
        let perm = (if prot & libc::PROT_READ != 0 { R } else { 0 })
            | (if prot & libc::PROT_WRITE != 0 {
                R | W
            } else {
                0
            })
            | (if prot & libc::PROT_EXEC != 0 {
                R | X
            } else {
                0
            });
        self.set_perm(addr, addr + len, perm);
        match perm {
            0 => libc::PROT_NONE,
            p if p & W != 0 => libc::PROT_READ | libc::PROT_WRITE,
            _ => libc::PROT_READ,
        }
    }

    /// Pages replaced under translated code: their translations are stale, and they are no
    /// longer write-protected by the cache.
    fn changed(&self, addr: u64, len: u64) {
        let hit: Vec<u64> = self
            .code_pages
            .borrow()
            .range((addr & !(PAGE - 1))..addr.saturating_add(len))
            .copied()
            .collect();
        if !hit.is_empty() {
            let mut cp = self.code_pages.borrow_mut();
            for p in hit {
                cp.remove(&p);
            }
            self.stale.set(true);
        }
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
            let p = self.host_range(addr, len, true)?;
            // SAFETY: host_range checked the range is writable guest memory.
            unsafe { std::ptr::write_bytes(p, 0, len as usize) };
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
