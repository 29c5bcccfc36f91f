//! The guest's file descriptors: its own numbers (lowest free first, as Linux gives them), each
//! either a host descriptor the ABI opened for it, or one of the two captured outputs. The
//! harness's own descriptors are never reachable from the guest.

use super::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most descriptors a guest may hold (RLIMIT_NOFILE's usual soft limit).
pub const MAX_FDS: usize = 1024;

/// What a guest descriptor refers to.
#[derive(Debug)]
pub enum Fd {
    /// A host descriptor (a file, directory, pipe, socket, the terminal).
    Host(OwnedFd),
    /// Captured standard output (0) or error (1).
    Out(usize),
}

#[derive(Debug)]
struct Slot {
    fd: Fd,
    cloexec: bool,
}

/// The guest's descriptor table.
#[derive(Debug, Default)]
pub struct FdTable {
    slots: Vec<Option<Slot>>,
}

/// `fcntl(F_DUPFD)`-style duplicate of a host descriptor, close-on-exec in the host.
pub fn dup_host(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor number has no memory effects; the new
    // descriptor, when there is one, is owned by nobody else.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `n` is a fresh descriptor this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Takes ownership of a descriptor a host call just returned.
pub fn owned(n: i64) -> OwnedFd {
    // SAFETY: the caller passes a fresh descriptor a successful host call returned.
    unsafe { OwnedFd::from_raw_fd(n as RawFd) }
}

impl FdTable {
    /// The entry of guest descriptor `n`.
    pub fn get(&self, n: u64) -> Result<&Fd, Errno> {
        self.slots
            .get(usize::try_from(n).map_err(|_| Errno::EBADF)?)
            .and_then(Option::as_ref)
            .map(|s| &s.fd)
            .ok_or(Errno::EBADF)
    }

    /// The host descriptor behind guest descriptor `n` (EBADF for a captured output: the
    /// calls that accept those handle them first).
    pub fn host(&self, n: u64) -> Result<RawFd, Errno> {
        match self.get(n)? {
            Fd::Host(f) => Ok(f.as_raw_fd()),
            Fd::Out(_) => Err(Errno::EBADF),
        }
    }

    /// Installs `fd` at the lowest free number at or above `min`.
    pub fn install(&mut self, fd: Fd, cloexec: bool, min: usize) -> Result<u64, Errno> {
        let n = (min..MAX_FDS)
            .find(|&i| self.slots.get(i).is_none_or(Option::is_none))
            .ok_or(Errno::EMFILE)?;
        self.put(n, fd, cloexec);
        Ok(n as u64)
    }

    /// A descriptor a host call just returned (`n`) becomes the guest's lowest free one.
    pub fn install_new(&mut self, n: i64, cloexec: bool) -> Result<i64, Errno> {
        self.install(Fd::Host(owned(n)), cloexec, 0)
            .map(|g| g as i64)
    }

    /// The two ends a host call just returned (pipe, socketpair) become the guest's; on failure
    /// neither stays.
    pub fn install_pair(&mut self, ends: [i32; 2], cloexec: bool) -> Result<[i32; 2], Errno> {
        let (x, y) = (owned(i64::from(ends[0])), owned(i64::from(ends[1])));
        let gx = self.install(Fd::Host(x), cloexec, 0)?;
        let gy = self.install(Fd::Host(y), cloexec, 0).inspect_err(|_| {
            let _ = self.close(gx);
        })?;
        Ok([gx as i32, gy as i32])
    }

    /// Installs `fd` at number `n`, closing what was there.
    pub fn put(&mut self, n: usize, fd: Fd, cloexec: bool) {
        if self.slots.len() <= n {
            self.slots.resize_with(n + 1, || None);
        }
        self.slots[n] = Some(Slot { fd, cloexec });
    }

    /// Closes guest descriptor `n`.
    pub fn close(&mut self, n: u64) -> Result<(), Errno> {
        let slot = self
            .slots
            .get_mut(usize::try_from(n).map_err(|_| Errno::EBADF)?)
            .ok_or(Errno::EBADF)?;
        slot.take().map(drop).ok_or(Errno::EBADF)
    }

    /// A second descriptor for the same open file (shared offset and status flags).
    pub fn dup_of(&self, n: u64) -> Result<Fd, Errno> {
        Ok(match self.get(n)? {
            Fd::Host(f) => Fd::Host(dup_host(f.as_raw_fd())?),
            Fd::Out(i) => Fd::Out(*i),
        })
    }

    /// The close-on-exec flag of `n`.
    pub fn cloexec(&self, n: u64) -> Result<bool, Errno> {
        self.get(n)?;
        Ok(self.slots[n as usize].as_ref().is_some_and(|s| s.cloexec))
    }

    /// Closes every descriptor marked close-on-exec (a successful execve).
    pub fn close_on_exec(&mut self) {
        for s in &mut self.slots {
            if s.as_ref().is_some_and(|s| s.cloexec) {
                *s = None;
            }
        }
    }

    /// Sets the close-on-exec flag of `n`.
    pub fn set_cloexec(&mut self, n: u64, on: bool) -> Result<(), Errno> {
        self.get(n)?;
        if let Some(s) = self.slots[n as usize].as_mut() {
            s.cloexec = on;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_lowest_free_and_closed_ones_are_bad() {
        let mut t = FdTable::default();
        for want in 0..3 {
            assert_eq!(t.install(Fd::Out(0), false, 0), Ok(want));
        }
        t.close(1).unwrap();
        assert_eq!(t.close(1), Err(Errno::EBADF));
        assert_eq!(t.install(Fd::Out(1), true, 0), Ok(1));
        assert!(t.cloexec(1).unwrap());
        assert_eq!(t.install(Fd::Out(1), false, 10), Ok(10));
        assert_eq!(t.get(5).err(), Some(Errno::EBADF));
        assert_eq!(
            t.host(0),
            Err(Errno::EBADF),
            "a captured output has no host fd"
        );
        assert_eq!(t.get(u64::MAX).err(), Some(Errno::EBADF));
    }
}
