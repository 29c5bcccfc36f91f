//! The guest's memory map: the program break and the mappings. Mappings live in the guest's
//! mapping area, whose host pages the layer replaces with real host mappings at the guest's
//! address (`mmap(MAP_FIXED)` over the backend's own reservation): anonymous memory, private and
//! shared file mappings, with the protections the backend enforces ([`GuestMem::protect`]).
//! An unmapped page of the area is a placeholder (inaccessible to the guest), so the area is
//! never a hole another mapping of the host process could land in.

use super::errno::host;
use super::{Abi, Errno, GuestMem, Layout, PAGE};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

type A = [u64; 6];
type Sys = Result<i64, Errno>;

/// One guest mapping.
#[derive(Debug, Clone)]
struct Mapping {
    len: u64,
    prot: i32,
    /// MAP_SHARED or MAP_PRIVATE (and MAP_ANONYMOUS).
    flags: i32,
    /// The file and the offset of the mapping's first byte.
    file: Option<(Arc<OwnedFd>, u64)>,
}

/// The guest's program break and mappings.
#[derive(Debug)]
pub(super) struct Map {
    brk_start: u64,
    brk: u64,
    brk_limit: u64,
    lo: u64,
    hi: u64,
    near: u64,
    maps: BTreeMap<u64, Mapping>,
}

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

/// The flags passed on to the host's mmap (placement flags are the layer's).
const PASSED: i32 = libc::MAP_SHARED
    | libc::MAP_PRIVATE
    | libc::MAP_SHARED_VALIDATE
    | libc::MAP_ANONYMOUS
    | libc::MAP_NORESERVE
    | libc::MAP_POPULATE;

impl Map {
    pub(super) fn new(l: Layout) -> Map {
        Map {
            brk_start: l.brk_start,
            brk: l.brk_start,
            brk_limit: l.brk_limit,
            lo: l.mmap_lo,
            hi: l.mmap_hi,
            near: l.mmap_near,
            maps: BTreeMap::new(),
        }
    }

    /// Whether any mapping has pages that may fault with SIGBUS: a file's (past the file's
    /// end) or shared anonymous memory's (a shmem object, which mremap can grow past its
    /// size).
    pub(super) fn has_files(&self) -> bool {
        self.maps
            .values()
            .any(|m| m.file.is_some() || m.flags & libc::MAP_SHARED != 0)
    }

    /// The mappings overlapping [a, end), cut to it: (start, mapping) pieces.
    fn cut(&mut self, a: u64, end: u64) -> Vec<(u64, Mapping)> {
        let over: Vec<u64> = self
            .maps
            .range(..end)
            .filter(|(s, m)| **s + m.len > a)
            .map(|(s, _)| *s)
            .collect();
        let mut out = Vec::new();
        for s in over {
            let m = self.maps.remove(&s).expect("listed");
            let e = s + m.len;
            let piece = |from: u64, to: u64| Mapping {
                len: to - from,
                file: m.file.as_ref().map(|(f, o)| (f.clone(), o + (from - s))),
                ..m.clone()
            };
            if s < a {
                self.maps.insert(s, piece(s, a));
            }
            if e > end {
                self.maps.insert(end, piece(end, e));
            }
            let (ps, pe) = (s.max(a), e.min(end));
            out.push((ps, piece(ps, pe)));
        }
        out
    }

    /// Whether [a, end) lies in the mapping area and above the break.
    fn in_area(&self, a: u64, end: u64) -> bool {
        a >= self.lo.max(self.floor()) && end <= self.hi && a < end
    }

    /// The lowest address mappings may use: above the program break when they share a range.
    fn floor(&self) -> u64 {
        if self.brk_limit > self.lo {
            page_up(self.brk).unwrap_or(self.brk)
        } else {
            self.lo
        }
    }

    fn is_free(&self, a: u64, end: u64) -> bool {
        self.in_area(a, end)
            && self
                .maps
                .range(..end)
                .next_back()
                .is_none_or(|(s, m)| s + m.len <= a)
    }

    /// A free range of `len` bytes, highest first (below the layout's `mmap_near` first).
    fn find_free(&self, len: u64) -> Option<u64> {
        if self.near > self.lo && self.near < self.hi {
            if let Some(a) = self.find_free_below(self.near, len) {
                return Some(a);
            }
        }
        self.find_free_below(self.hi, len)
    }

    /// A free range of `len` bytes that ends at or below `cap`, highest first.
    fn find_free_below(&self, cap: u64, len: u64) -> Option<u64> {
        let floor = self.lo.max(self.floor());
        let mut top = cap;
        for (&s, m) in self.maps.range(..cap).rev() {
            if top >= s + m.len && top - (s + m.len) >= len {
                return Some(top - len);
            }
            top = top.min(s);
        }
        (top >= floor.checked_add(len)?).then(|| top - len)
    }

    /// The highest break allowed: the limit, and below the lowest mapping in a shared range.
    fn break_limit(&self) -> u64 {
        let lowest = self.maps.keys().next().copied().unwrap_or(u64::MAX);
        self.brk_limit.min(if self.brk_limit > self.lo {
            lowest
        } else {
            u64::MAX
        })
    }
}

/// Host pages of the guest's [a, a+len) as `prot` wants them, fresh: anonymous (`file`
/// None, zero-filled) or a mapping of `file` at `off`.
fn place(
    mem: &dyn GuestMem,
    a: u64,
    len: u64,
    prot: i32,
    flags: i32,
    file: Option<(i32, u64)>,
) -> Result<(), Errno> {
    let host_ptr = mem.host_addr(a, len)?;
    let host_prot = mem.protect(a, len, prot);
    let (fd, off, kind) = match file {
        Some((fd, off)) => (fd, off as i64, flags & PASSED & !libc::MAP_ANONYMOUS),
        None => (
            -1,
            0,
            (flags & PASSED & !(libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE))
                | libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE,
        ),
    };
    let shared_anon = file.is_none() && flags & libc::MAP_SHARED != 0;
    let kind = if shared_anon {
        (kind & !libc::MAP_PRIVATE) | libc::MAP_SHARED
    } else {
        kind
    };
    // SAFETY: [host_ptr, host_ptr+len) is the backend's own reservation for guest memory
    // (host_addr checked it), which nothing of the harness uses; MAP_FIXED replaces its pages.
    let p = unsafe {
        libc::mmap(
            host_ptr.cast(),
            len as usize,
            host_prot,
            kind | libc::MAP_FIXED,
            fd,
            off,
        )
    };
    if p == libc::MAP_FAILED {
        let err = Errno::last();
        unmap_pages(mem, a, len);
        return Err(err);
    }
    mem.changed(a, len);
    Ok(())
}

/// The guest unmapped `m` at `a`. Where replacing host pages is costly (kvm), a private
/// anonymous mapping's pages only become inaccessible to the guest's calls: they are zeroed
/// when mapped again, as a kernel zeroes a page before it hands it out.
fn unmap_piece(mem: &dyn GuestMem, a: u64, m: &Mapping) {
    if m.is_plain() && !mem.cheap_remap() {
        mem.protect(a, m.len, libc::PROT_NONE);
    } else {
        unmap_pages(mem, a, m.len);
    }
}

impl Mapping {
    /// Private anonymous memory: nothing but its bytes.
    fn is_plain(&self) -> bool {
        self.file.is_none() && self.flags & libc::MAP_SHARED == 0
    }
}

/// Fresh placeholder pages [a, a+len) become private anonymous memory with `prot`.
fn reuse_fresh(mem: &dyn GuestMem, a: u64, len: u64, prot: i32) -> Result<(), Errno> {
    let host_ptr = mem.host_addr(a, len)?;
    let before = mem.protect(a, len, libc::PROT_NONE);
    let host_prot = mem.protect(a, len, prot);
    if host_prot != before {
        // SAFETY: the backend's own reservation for guest memory (host_addr checked it); only
        // its protection changes.
        if unsafe { libc::mprotect(host_ptr.cast(), len as usize, host_prot) } != 0 {
            let err = Errno::last();
            mem.protect(a, len, libc::PROT_NONE);
            return Err(err);
        }
    }
    Ok(())
}

/// Makes [a, a+len) placeholder pages again: inaccessible to the guest, reserved in the host.
fn unmap_pages(mem: &dyn GuestMem, a: u64, len: u64) {
    let Ok(host_ptr) = mem.host_addr(a, len) else {
        return;
    };
    let host_prot = mem.protect(a, len, libc::PROT_NONE);
    // SAFETY: as in `place`: the backend's own reservation, replaced by fresh anonymous pages.
    unsafe {
        libc::mmap(
            host_ptr.cast(),
            len as usize,
            host_prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    mem.changed(a, len);
}

pub(super) fn brk(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let m = &mut abi.mem;
    let want = a[0];
    if want >= m.brk_start && want <= m.break_limit() {
        if want > m.brk {
            // the break's new pages are read-write, also where a mapping was unmapped
            // (kvm's pages stay in place, with its protection of them)
            let (from, to) = (page_up(m.brk), page_up(want));
            if let (Some(from), Some(to)) = (from, to) {
                if to > from {
                    mem.protect(from, to - from, libc::PROT_READ | libc::PROT_WRITE);
                }
            }
            if mem.zero(m.brk, want - m.brk).is_err() {
                return Ok(m.brk as i64);
            }
        }
        m.brk = want;
    }
    Ok(m.brk as i64)
}

pub(super) fn mmap(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let (addr, prot, flags, off) = (a[0], a[2] as i32, a[3] as i32, a[5]);
    let len = page_up(a[1]).filter(|l| *l > 0).ok_or(Errno::EINVAL)?;
    if !off.is_multiple_of(PAGE) || flags & (libc::MAP_SHARED | libc::MAP_PRIVATE) == 0 {
        return Err(Errno::EINVAL);
    }
    // Linux ignores the fd of an anonymous mapping: glibc and Go pass the int -1, which arrives
    // as 0xffffffff in the 64-bit register
    let anon = flags & libc::MAP_ANONYMOUS != 0;
    let file = if anon {
        None
    } else {
        let fd = super::io::keep(abi, a[4]).map_err(|e| {
            if e == Errno::EBADF && abi.fds.get(a[4]).is_ok() {
                Errno::ENODEV // a captured output cannot be mapped
            } else {
                e
            }
        })?;
        Some((Arc::new(fd), off))
    };
    let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
    let m = &mut abi.mem;
    let at = if fixed {
        let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
        if !addr.is_multiple_of(PAGE) {
            return Err(Errno::EINVAL);
        }
        if !m.in_area(addr, end) {
            return Err(Errno::ENOMEM);
        }
        if flags & libc::MAP_FIXED_NOREPLACE != 0 && !m.is_free(addr, end) {
            return Err(Errno::EEXIST);
        }
        addr
    } else if addr.is_multiple_of(PAGE)
        && addr != 0
        && addr.checked_add(len).is_some_and(|e| m.is_free(addr, e))
    {
        addr // the hint is free: use it, as Linux does
    } else {
        m.find_free(len).ok_or(Errno::ENOMEM)?
    };
    let pieces = m.cut(at, at + len);
    let host_file = file.as_ref().map(|(f, o)| (f.as_raw_fd(), *o));
    let private_anon = file.is_none()
        && flags & (libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE | libc::MAP_POPULATE) == 0;
    if private_anon && !mem.cheap_remap() {
        // kvm: guest RAM stays where it is; file pages under it are detached first
        for (ps, p) in pieces.iter().filter(|(_, p)| !p.is_plain()) {
            unmap_pages(mem, *ps, p.len);
        }
        mem.protect(at, len, prot);
        mem.zero(at, len)?;
    } else if private_anon && pieces.is_empty() {
        // unmapped pages of the area are fresh placeholder pages (zero, never touched): the
        // new mapping only needs its protection, which spares the host a mapping change
        // (and the TLB shootdown of a multi-threaded process that comes with it)
        reuse_fresh(mem, at, len, prot)?;
    } else {
        place(mem, at, len, prot, flags, host_file)?;
    }
    abi.mem.maps.insert(
        at,
        Mapping {
            len,
            prot,
            flags: flags & (libc::MAP_SHARED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS),
            file,
        },
    );
    Ok(at as i64)
}

pub(super) fn munmap(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if !a[0].is_multiple_of(PAGE) {
        return Err(Errno::EINVAL);
    }
    let len = page_up(a[1]).filter(|l| *l > 0).ok_or(Errno::EINVAL)?;
    let end = a[0].checked_add(len).ok_or(Errno::EINVAL)?;
    for (s, m) in abi.mem.cut(a[0], end) {
        unmap_piece(mem, s, &m);
    }
    Ok(0)
}

/// mprotect: the backend enforces the new protection (bt in the host's page tables; kvm's
/// guest RAM stays writable). In the mapping area every page must be mapped (ENOMEM).
pub(super) fn mprotect(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if !a[0].is_multiple_of(PAGE) {
        return Err(Errno::EINVAL);
    }
    let prot = a[2] as i32;
    if prot & !(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let len = page_up(a[1]).ok_or(Errno::ENOMEM)?;
    if len == 0 {
        return Ok(0);
    }
    let end = a[0].checked_add(len).ok_or(Errno::ENOMEM)?;
    let host_ptr = mem.host_addr(a[0], len).map_err(|_| Errno::ENOMEM)?;
    let m = &mut abi.mem;
    if a[0] < m.hi && end > m.lo {
        // the covered part of the area must be mapped, without gaps
        let mut at = a[0].max(m.lo);
        for (s, mp) in m.maps.range(..end) {
            if s + mp.len <= at {
                continue;
            }
            if *s > at {
                return Err(Errno::ENOMEM);
            }
            at = s + mp.len;
        }
        if at < end.min(m.hi) {
            return Err(Errno::ENOMEM);
        }
        for (s, mut mp) in m.cut(a[0], end) {
            mp.prot = prot;
            m.maps.insert(s, mp);
        }
    }
    let host_prot = mem.protect(a[0], len, prot);
    // SAFETY: guest memory the backend reserved (host_addr checked); only its protection changes.
    host(i64::from(unsafe {
        libc::mprotect(host_ptr.cast(), len as usize, host_prot)
    }))?;
    mem.changed(a[0], len);
    Ok(0)
}

/// mremap(old, old_len, new_len, flags, new_addr): shrink in place, grow in place when the
/// pages after it are free, else move (MREMAP_MAYMOVE, MREMAP_FIXED) with the host's mremap.
pub(super) fn mremap(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let (old, flags) = (a[0], a[3] as i32);
    if !old.is_multiple_of(PAGE) || flags & !(libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & libc::MREMAP_FIXED != 0 && flags & libc::MREMAP_MAYMOVE == 0 {
        return Err(Errno::EINVAL);
    }
    let old_len = page_up(a[1]).filter(|l| *l > 0).ok_or(Errno::EINVAL)?;
    let new_len = page_up(a[2]).filter(|l| *l > 0).ok_or(Errno::EINVAL)?;
    // a range that wraps around the address space is no mapping's (the kernel: EFAULT)
    let old_end = old.checked_add(old_len).ok_or(Errno::EFAULT)?;
    let m = &mut abi.mem;
    let (&s, mp) = m.maps.range(..=old).next_back().ok_or(Errno::EFAULT)?;
    if s + mp.len < old_end {
        return Err(Errno::EFAULT);
    }
    let mp = mp.clone();
    if flags & libc::MREMAP_FIXED == 0 {
        if new_len <= old_len {
            for (ps, p) in m.cut(old + new_len, old + old_len) {
                unmap_piece(mem, ps, &p);
            }
            return Ok(old as i64);
        }
        // a size past the end of the address space is never free (nor found when moving)
        let (tail, tail_end) = (old_end, old.saturating_add(new_len));
        if s + mp.len == tail && m.is_free(tail, tail_end) {
            let file = mp
                .file
                .as_ref()
                .map(|(f, o)| (f.as_raw_fd(), o + (tail - s)));
            place(mem, tail, tail_end - tail, mp.prot, mp.flags, file)?;
            m.maps.get_mut(&s).expect("found").len += tail_end - tail;
            return Ok(old as i64);
        }
        if flags & libc::MREMAP_MAYMOVE == 0 {
            return Err(Errno::ENOMEM);
        }
    }
    let to = if flags & libc::MREMAP_FIXED != 0 {
        let to = a[4];
        let end = to.checked_add(new_len).ok_or(Errno::EINVAL)?;
        if !to.is_multiple_of(PAGE) || (to < old_end && old < end) {
            return Err(Errno::EINVAL);
        }
        if !m.in_area(to, end) {
            return Err(Errno::ENOMEM);
        }
        for (ps, p) in m.cut(to, end) {
            unmap_piece(mem, ps, &p);
        }
        to
    } else {
        m.find_free(new_len).ok_or(Errno::ENOMEM)?
    };
    let (from_host, to_host) = (mem.host_addr(old, old_len)?, mem.host_addr(to, new_len)?);
    mem.protect(to, new_len, mp.prot);
    // SAFETY: both ranges are guest memory the backend reserved; the host moves the pages (and
    // their protections) from one to the other, replacing the target's placeholder.
    let p = unsafe {
        libc::mremap(
            from_host.cast(),
            old_len as usize,
            new_len as usize,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to_host,
        )
    };
    if p == libc::MAP_FAILED {
        let err = Errno::last();
        mem.protect(to, new_len, libc::PROT_NONE);
        return Err(err);
    }
    let moved = m.cut(old, old_end);
    unmap_pages(mem, old, old_len);
    mem.changed(to, new_len);
    let file = mp.file.as_ref().map(|(f, o)| (f.clone(), o + (old - s)));
    drop(moved);
    m.maps.insert(
        to,
        Mapping {
            len: new_len,
            prot: mp.prot,
            flags: mp.flags,
            file,
        },
    );
    Ok(to as i64)
}

/// madvise: the advice that changes what memory holds (DONTNEED, FREE) and the hints, by the
/// host on the guest's pages; the rest (DONTFORK, MERGEABLE...) is accepted and ignored.
pub(super) fn madvise(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if !a[0].is_multiple_of(PAGE) {
        return Err(Errno::EINVAL);
    }
    let len = page_up(a[1]).ok_or(Errno::EINVAL)?;
    if len == 0 {
        return Ok(0);
    }
    let advice = a[2] as i32;
    match advice {
        libc::MADV_DONTNEED
        | libc::MADV_FREE
        | libc::MADV_WILLNEED
        | libc::MADV_NORMAL
        | libc::MADV_RANDOM
        | libc::MADV_SEQUENTIAL
        | libc::MADV_HUGEPAGE
        | libc::MADV_NOHUGEPAGE => {
            let p = mem.host_addr(a[0], len).map_err(|_| Errno::ENOMEM)?;
            // SAFETY: guest memory the backend reserved; the advice is one that only changes
            // the guest's own pages.
            host(i64::from(unsafe {
                libc::madvise(p.cast(), len as usize, advice)
            }))?;
            mem.changed(a[0], len);
            Ok(0)
        }
        _ => Ok(0),
    }
}

/// msync: the host's, on the guest's pages.
pub(super) fn msync(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if !a[0].is_multiple_of(PAGE) {
        return Err(Errno::EINVAL);
    }
    let len = page_up(a[1]).ok_or(Errno::ENOMEM)?;
    let p = mem.host_addr(a[0], len).map_err(|_| Errno::ENOMEM)?;
    // SAFETY: guest memory the backend reserved; msync writes nothing the guest cannot see.
    host(i64::from(unsafe {
        libc::msync(p.cast(), len as usize, a[2] as i32)
    }))
}

/// mincore: which of the guest's pages are resident on the host.
pub(super) fn mincore(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if !a[0].is_multiple_of(PAGE) {
        return Err(Errno::EINVAL);
    }
    let len = page_up(a[1]).ok_or(Errno::ENOMEM)?;
    let p = mem.host_addr(a[0], len).map_err(|_| Errno::ENOMEM)?;
    let v = super::buf_out(mem, a[2], len / PAGE)?;
    // SAFETY: guest memory the backend reserved, and a checked guest vector of a byte per page.
    host(i64::from(unsafe {
        libc::mincore(p.cast(), len as usize, v)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ranges_come_from_the_top_and_pieces_keep_their_file_offsets() {
        let mut m = Map::new(Layout {
            brk_start: 0x1000,
            brk_limit: 0x2000,
            mmap_lo: 0x10000,
            mmap_hi: 0x20000,
            mmap_near: 0,
        });
        assert_eq!(m.find_free(0x4000), Some(0x1c000));
        m.maps.insert(
            0x1c000,
            Mapping {
                len: 0x4000,
                prot: 1,
                flags: libc::MAP_PRIVATE,
                file: None,
            },
        );
        assert_eq!(m.find_free(0x4000), Some(0x18000));
        assert!(m.is_free(0x10000, 0x1c000));
        assert!(!m.is_free(0x1b000, 0x1d000));
        assert!(!m.is_free(0x8000, 0x9000), "outside the area");
        let pieces = m.cut(0x1d000, 0x1e000);
        assert_eq!(pieces.len(), 1);
        assert_eq!(
            m.maps.keys().copied().collect::<Vec<_>>(),
            [0x1c000, 0x1e000]
        );
        assert_eq!(m.find_free(0x10001), None);
    }
}
