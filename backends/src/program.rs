//! The program a backend runs: a file the user named, or bytes held in memory (the embedded
//! workload ELF), which native and container backends execute from a sealed memfd so that no
//! file is ever written to disk.

use crate::BackendError;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A static x86-64 Linux program.
#[derive(Debug, Clone)]
pub enum Program {
    /// A file on disk.
    Path(PathBuf),
    /// An image held in memory.
    Memory(Arc<MemoryImage>),
}

/// An executable image in memory, backed by a sealed, close-on-exec memfd.
#[derive(Debug)]
pub struct MemoryImage {
    name: String,
    bytes: Vec<u8>,
    fd: OwnedFd,
}

impl MemoryImage {
    /// The sealed, close-on-exec memfd holding the image.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Program {
    /// Holds `bytes` as an executable image named `name` (the name shown as argv\[0\]).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Program, BackendError> {
        let os = |what: &str| {
            let what = format!("{what} for {name}");
            move |source| BackendError::Os { what, source }
        };
        let cname = CString::new(name)
            .map_err(|_| BackendError::Invalid(format!("program name {name:?} has a NUL byte")))?;
        // SAFETY: memfd_create reads the NUL-terminated name and returns a new fd or -1.
        let raw = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(os("memfd_create")(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut file = File::from(fd);
        file.write_all(&bytes).map_err(os("writing memfd"))?;
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on an fd we own, with integer arguments only.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(os("sealing memfd")(std::io::Error::last_os_error()));
        }
        Ok(Program::Memory(Arc::new(MemoryImage {
            name: name.to_string(),
            bytes,
            fd: file.into(),
        })))
    }

    /// The program's name for argv\[0\] and messages.
    pub fn name(&self) -> String {
        match self {
            Program::Path(p) => p.display().to_string(),
            Program::Memory(m) => m.name.clone(),
        }
    }

    /// A path that `execve` accepts for this program in this process and its children.
    pub fn exec_path(&self) -> PathBuf {
        match self {
            Program::Path(p) => p.clone(),
            Program::Memory(m) => PathBuf::from(format!("/proc/self/fd/{}", m.fd.as_raw_fd())),
        }
    }

    /// The program's bytes (read from disk for a path).
    pub fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>, BackendError> {
        match self {
            Program::Path(p) => std::fs::read(p)
                .map(std::borrow::Cow::Owned)
                .map_err(|source| BackendError::Os {
                    what: format!("reading {}", p.display()),
                    source,
                }),
            Program::Memory(m) => Ok(std::borrow::Cow::Borrowed(&m.bytes)),
        }
    }

    /// The path, for a program on disk.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Program::Path(p) => Some(p),
            Program::Memory(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_image_is_sealed_and_readable_through_its_path() {
        let p = Program::from_bytes("img", b"hello".to_vec()).unwrap();
        assert_eq!(std::fs::read(p.exec_path()).unwrap(), b"hello");
        assert_eq!(&*p.bytes().unwrap(), b"hello");
        // sealed: no one can change what the backends execute
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(p.exec_path())
            .unwrap();
        assert!(f.write_all(b"x").is_err());
        assert_eq!(p.name(), "img");
    }
}
