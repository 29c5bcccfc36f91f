//! Guest memory for unit tests: a host mapping whose guest addresses are offsets into it, as
//! the kvm backend's RAM is.

use super::{GuestMem, OutsideGuest};

/// `len` bytes of guest memory at guest address 0 (page 0 included).
pub(crate) struct TestMem {
    base: *mut u8,
    len: u64,
}

impl TestMem {
    pub(crate) fn new(len: u64) -> TestMem {
        // SAFETY: a fresh private anonymous mapping; checked before use, unmapped on drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "test memory");
        TestMem {
            base: p.cast(),
            len,
        }
    }
}

impl Drop for TestMem {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in new; nothing refers to it afterwards.
        unsafe { libc::munmap(self.base.cast(), self.len as usize) };
    }
}

impl GuestMem for TestMem {
    fn host_range(&self, addr: u64, len: u64, _write: bool) -> Result<*mut u8, OutsideGuest> {
        self.host_addr(addr, len)
    }
    fn host_addr(&self, addr: u64, len: u64) -> Result<*mut u8, OutsideGuest> {
        match addr.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.base.wrapping_add(addr as usize)),
            _ => Err(OutsideGuest),
        }
    }
}
