//! The guest kernel's page tables for user memory, kept by the VMM as a guest kernel keeps its
//! own: user RAM starts as 2 MiB read-write pages; a protection change that does not cover a
//! whole 2 MiB page splits it into 4 KiB pages (a page-table page from a pool in low guest
//! memory), so mprotect, munmap and PROT_NONE act on the guest's own accesses as natively (a
//! write to a read-only page is a #PF, which the VMM turns into SIGSEGV), and the syscall
//! layer's accesses to guest memory are checked against the same entries (EFAULT).
//!
//! The entries live in guest RAM, so the guest's TLB (and, on a host with shadow paging, the
//! host's shadow of these tables) must be told when they change: [`Paging::take_runs`] lists
//! what changed, and the vCPU loop resumes the guest through its kernel's ring-0 flush of
//! them (`stub::assemble_kernel`).

use super::layout::{LOAD_MIN, PD0, PT0, PT_POOL, PT_POOL_END};
use std::cell::{Cell, RefCell};

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 0x80;
const FLAGS: u64 = P | RW | US;
const HUGE: u64 = 2 << 20;
const PAGE: u64 = 4096;

/// The user part of the guest's page tables, in guest RAM at `base` (the VMM's mapping).
pub struct Paging {
    base: *mut u8,
    ram: u64,
    /// Next free page of the page-table pool.
    next: Cell<u64>,
    /// Entries changed since the last flush, as runs of (first entry's address, entries).
    runs: RefCell<Vec<(u64, u64)>>,
    /// Whether one of them took a permission away (only that needs a flush before the guest
    /// runs again: an access a stale entry refuses faults, and the VMM flushes then).
    reduced: Cell<bool>,
    /// 2 MiB pages split, for the counters.
    splits: Cell<u64>,
    /// Protection changes the pool was too small for (left as they were: not enforced).
    unsplit: Cell<u64>,
}

/// The entry flags of a protection: none is absent, read (or exec: x86 pages that execute
/// can be read) is read-only, write is read-write.
fn flags_of(prot: i32) -> u64 {
    if prot & libc::PROT_WRITE != 0 {
        P | RW | US
    } else if prot & (libc::PROT_READ | libc::PROT_EXEC) != 0 {
        P | US
    } else {
        0
    }
}

impl Paging {
    /// The tables of a VM whose `ram` bytes are mapped at `base`, as
    /// [`super::layout::page_tables`] wrote them.
    pub fn new(base: *mut u8, ram: u64) -> Paging {
        Paging {
            base,
            ram,
            next: Cell::new(PT_POOL),
            runs: RefCell::new(Vec::new()),
            reduced: Cell::new(false),
            splits: Cell::new(0),
            unsplit: Cell::new(0),
        }
    }

    fn entry(&self, at: u64) -> u64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= self.ram);
        // SAFETY: `at` is an 8-byte aligned page-table entry inside guest RAM (the page
        // directory or a pool page), which `base` maps for `ram` bytes.
        unsafe { std::ptr::read_volatile(self.base.add(at as usize).cast::<u64>()) }
    }

    /// Writes an entry that changes, and records it for the flush.
    fn set_entry(&self, at: u64, v: u64) {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= self.ram);
        let old = self.entry(at);
        if old == v {
            return;
        }
        let lost = old & FLAGS & !(v & FLAGS);
        if old & P != 0 && (v & P == 0 || lost != 0) {
            self.reduced.set(true);
        }
        // SAFETY: as in `entry`; the VMM is the only writer while the vCPU is out of KVM_RUN.
        unsafe { std::ptr::write_volatile(self.base.add(at as usize).cast::<u64>(), v) };
        let mut runs = self.runs.borrow_mut();
        if runs.iter().any(|(s, n)| (*s..*s + n * 8).contains(&at)) {
            return;
        }
        match runs.last_mut() {
            Some((start, n)) if *start + *n * 8 == at => *n += 1,
            _ => runs.push((at, 1)),
        }
    }

    /// The page directory entry of the 2 MiB page holding `addr`.
    fn pde_at(addr: u64) -> u64 {
        PD0 + (addr >> 21) * 8
    }

    /// The page-table page a split directory entry points at, when it is the first 2 MiB's or
    /// one of the pool's (the VMM follows nothing else).
    fn table_of(pde: u64) -> Option<u64> {
        let t = pde & 0x000f_ffff_ffff_f000;
        let ours = t == PT0 || (PT_POOL..PT_POOL_END).contains(&t);
        (pde & P != 0 && pde & PS == 0 && ours).then_some(t)
    }

    /// The flags the guest's accesses to the 4 KiB page at `addr` get.
    fn flags_at(&self, addr: u64) -> u64 {
        let pde = self.entry(Self::pde_at(addr));
        match Self::table_of(pde) {
            Some(t) => self.entry(t + ((addr >> 12) & 511) * 8) & FLAGS,
            None if pde & PS != 0 => pde & FLAGS,
            None => 0,
        }
    }

    /// Whether the guest may read (and, with `write`, write) all of [addr, addr+len), by its
    /// page tables. The caller has checked that the range lies in user RAM.
    pub fn allows(&self, addr: u64, len: u64, write: bool) -> bool {
        let need = if write { P | RW | US } else { P | US };
        let end = addr + len;
        let mut at = addr & !(PAGE - 1);
        while at < end {
            if self.flags_at(at) & need != need {
                return false;
            }
            let pde = self.entry(Self::pde_at(at));
            // a whole 2 MiB page answers for all of itself
            at = if pde & PS != 0 {
                (at | (HUGE - 1)) + 1
            } else {
                at + PAGE
            };
        }
        true
    }

    /// Sets the guest's protection of the whole pages [addr, addr+len) (in user RAM).
    pub fn protect(&self, addr: u64, len: u64, prot: i32) {
        let flags = flags_of(prot);
        let end = (addr + len).min(self.ram);
        let mut at = addr.max(LOAD_MIN) & !(PAGE - 1);
        while at < end {
            let huge_end = (at | (HUGE - 1)) + 1;
            let pde_at = Self::pde_at(at);
            let pde = self.entry(pde_at);
            if at.is_multiple_of(HUGE) && end >= huge_end && Self::table_of(pde).is_none() {
                // the whole 2 MiB page: its directory entry
                self.set_entry(pde_at, (at & !(HUGE - 1)) | PS | flags);
                at = huge_end;
                continue;
            }
            let Some(table) = Self::table_of(pde).or_else(|| self.split(pde_at, pde)) else {
                self.unsplit.set(self.unsplit.get() + 1);
                at = huge_end;
                continue;
            };
            let stop = end.min(huge_end);
            while at < stop {
                self.set_entry(table + ((at >> 12) & 511) * 8, at | flags);
                at += PAGE;
            }
        }
    }

    /// Splits the 2 MiB page of directory entry `pde_at` into 512 pages with its flags; the
    /// table, or None when the pool is used up.
    fn split(&self, pde_at: u64, pde: u64) -> Option<u64> {
        let table = self.next.get();
        if table + PAGE > PT_POOL_END {
            return None;
        }
        self.next.set(table + PAGE);
        let base = (pde_at - PD0) / 8 * HUGE;
        let flags = if pde & PS != 0 { pde & FLAGS } else { 0 };
        for i in 0..512 {
            self.set_entry(table + i * 8, (base + i * PAGE) | flags);
        }
        self.set_entry(pde_at, table | P | RW | US);
        self.splits.set(self.splits.get() + 1);
        Some(table)
    }

    /// The runs of entries changed since the last flush, for the guest kernel's flush, when one
    /// of them took a permission away or `force` (empty: no flush is needed yet). More than
    /// `max` runs become the whole of the tables the VMM keeps.
    pub fn take_runs(&self, max: usize, force: bool) -> Vec<(u64, u64)> {
        if !self.reduced.replace(false) && !force {
            return Vec::new();
        }
        let mut runs = std::mem::take(&mut *self.runs.borrow_mut());
        if runs.len() > max {
            runs = vec![(PD0, 512), (PT0, 512)];
            if self.next.get() > PT_POOL {
                runs.push((PT_POOL, (self.next.get() - PT_POOL) / 8));
            }
        }
        runs
    }

    /// (2 MiB pages split, protection changes not enforced for want of table pages).
    pub fn stats(&self) -> (u64, u64) {
        (self.splits.get(), self.unsplit.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::layout::page_tables;

    fn tables(ram: u64) -> (Vec<u8>, Paging) {
        let mut img = vec![0u8; ram as usize];
        page_tables(&mut img, ram);
        let p = Paging::new(img.as_mut_ptr(), ram);
        (img, p)
    }

    #[test]
    fn protections_split_a_huge_page_and_are_checked() {
        let (_img, p) = tables(16 << 20);
        let a = 4 << 20;
        assert!(p.allows(a, 8192, true));
        assert!(p.take_runs(8, false).is_empty());
        p.protect(a, 4096, libc::PROT_READ);
        // the split's table (512 entries written in a row, the first one again) and its
        // directory entry
        let pd = PD0 + 2 * 8;
        assert_eq!(p.take_runs(8, false), vec![(PT_POOL, 512), (pd, 1)]);
        assert!(p.allows(a, 4096, false));
        assert!(!p.allows(a, 4096, true));
        assert!(
            !p.allows(a, 8192, true),
            "a range that reaches a read-only page"
        );
        assert!(
            p.allows(a + 4096, (2 << 20) - 4096, true),
            "the rest of the page"
        );
        p.protect(a + 4096, 4096, libc::PROT_NONE);
        assert!(!p.allows(a + 4096, 1, false));
        assert_eq!(p.take_runs(8, false), vec![(PT_POOL + 8, 1)]);
        assert_eq!(p.stats(), (1, 0));
        // back to read-write everywhere: the same table, no new split, and no flush needed
        p.protect(a, 2 << 20, libc::PROT_READ | libc::PROT_WRITE);
        assert!(p.take_runs(8, false).is_empty());
        assert_eq!(p.take_runs(8, true), vec![(PT_POOL, 2)], "unless forced");
        assert!(p.allows(a, 2 << 20, true));
        assert_eq!(p.stats(), (1, 0));
        // a whole 2 MiB page changes its directory entry only
        p.protect(6 << 20, 2 << 20, libc::PROT_NONE);
        assert!(!p.allows((6 << 20) + 100, 1, false));
        assert!(p.allows(a, 2 << 20, false) && !p.allows(a, (2 << 20) + 1, false));
        assert_eq!(p.stats(), (1, 0));
        // an unchanged protection is not a change; runs of changes are merged
        p.take_runs(8, false);
        p.protect(6 << 20, 2 << 20, libc::PROT_NONE);
        assert!(p.take_runs(8, false).is_empty());
        p.protect(a + 8192, 3 * 4096, libc::PROT_NONE);
        p.protect(a + 5 * 4096, 4096, libc::PROT_READ);
        assert_eq!(p.take_runs(8, false), vec![(PT_POOL + 16, 4)]);
        // too many runs: the whole tables
        for i in 0..5 {
            p.protect(a + i * 8192, 4096, libc::PROT_NONE);
        }
        assert_eq!(
            p.take_runs(2, false),
            vec![(PD0, 512), (PT0, 512), (PT_POOL, 512)]
        );
    }

    #[test]
    fn a_used_up_pool_leaves_pages_as_they_were() {
        let ram = 1 << 30;
        let (_img, p) = tables(ram);
        let pool = (PT_POOL_END - PT_POOL) / PAGE;
        for i in 0..pool + 3 {
            p.protect((4 << 20) + i * HUGE, 4096, libc::PROT_READ);
        }
        assert_eq!(p.stats(), (pool, 3));
        let last = (4 << 20) + (pool + 1) * HUGE;
        assert!(p.allows(last, 4096, true), "not split: still read-write");
    }
}
