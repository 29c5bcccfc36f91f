//! Paths, files and directories. Under the host policy every path call is the host's `*at`
//! call relative to the guest's own current directory (a descriptor, so a guest `chdir` never
//! moves the harness); confined, only the files named on the command line open, read-only.

use super::errno::host;
use super::fd::{owned, Fd};
use super::{buf_out, opt_in, Abi, Errno, GuestMem, Policy};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

type A = [u64; 6];
type Sys = Result<i64, Errno>;

const AT_FDCWD: u64 = libc::AT_FDCWD as u32 as u64;

/// An O_PATH descriptor of directory `p` (relative to the harness's current directory).
pub(super) fn open_dir_path(p: &CStr) -> Result<OwnedFd, Errno> {
    // SAFETY: a NUL-terminated path; the result is a fresh descriptor.
    let n = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    host(i64::from(n)).map(owned)
}

impl Abi {
    /// The guest's path at `addr`, as a C string.
    fn path(mem: &dyn GuestMem, addr: u64) -> Result<CString, Errno> {
        let p = Abi::cstring(mem, addr)?;
        CString::new(p).map_err(|_| Errno::EINVAL)
    }

    /// The guest's path at `addr`, when a confined guest may use it (EACCES, counted, if not).
    fn allowed_path(&mut self, mem: &dyn GuestMem, addr: u64) -> Result<CString, Errno> {
        let p = Abi::path(mem, addr)?;
        let named = |a: &PathBuf| a.as_os_str().as_encoded_bytes() == p.as_bytes();
        if !self.allowed.iter().any(named) {
            self.denied_path += 1;
            return Err(Errno::EACCES);
        }
        Ok(p)
    }

    /// The (host directory, path) a path call of the guest acts on: under the host policy
    /// relative to `dirfd`; confined, a named file (dirfd AT_FDCWD or an absolute path).
    fn at(&mut self, mem: &dyn GuestMem, dirfd: u64, addr: u64) -> Result<(i32, CString), Errno> {
        match self.policy {
            Policy::Host => Ok((self.dirfd(dirfd)?, Abi::path(mem, addr)?)),
            Policy::Confined => {
                let p = self.allowed_path(mem, addr)?;
                if dirfd != AT_FDCWD && !p.as_bytes().starts_with(b"/") {
                    return Err(Errno::EINVAL);
                }
                Ok((libc::AT_FDCWD, p))
            }
        }
    }

    fn openat(&mut self, mem: &dyn GuestMem, dirfd: u64, path: u64, flags: u64, mode: u64) -> Sys {
        let (dir, p) = self.at(mem, dirfd, path)?;
        let flags = flags as i32;
        if self.policy == Policy::Confined {
            let write = flags & libc::O_ACCMODE != libc::O_RDONLY
                || flags & (libc::O_CREAT | libc::O_TRUNC) != 0;
            if write && !p.as_bytes().starts_with(b"/dev/") {
                self.denied_path += 1;
                return Err(Errno::EPERM);
            }
        }
        // SAFETY: a NUL-terminated path; the result is a fresh descriptor.
        let n = host(i64::from(unsafe {
            libc::openat(
                dir,
                p.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        }))?;
        let cloexec = flags & libc::O_CLOEXEC != 0;
        self.fds.install_new(n, cloexec)
    }
}

pub(super) fn open(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    abi.openat(mem, AT_FDCWD, a[0], a[1], a[2])
}
pub(super) fn openat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    abi.openat(mem, a[0], a[1], a[2], a[3])
}
pub(super) fn creat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64;
    abi.openat(mem, AT_FDCWD, a[0], flags, a[1])
}

/// The stat a captured output shows: a character device, as a terminal or pipe would be.
fn out_stat(mem: &dyn GuestMem, buf: u64) -> Sys {
    // SAFETY: zeroed stat is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFCHR | 0o620;
    st.st_blksize = 4096;
    super::put(mem, buf, &st)?;
    Ok(0)
}

const STAT: u64 = std::mem::size_of::<libc::stat>() as u64;

pub(super) fn fstat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    match abi.fds.get(a[0])? {
        Fd::Out(_) => out_stat(mem, a[1]),
        Fd::Host(f) => {
            let p = buf_out(mem, a[1], STAT)?;
            // SAFETY: `p` is a checked, writable stat-sized guest buffer.
            host(i64::from(unsafe { libc::fstat(f.as_raw_fd(), p.cast()) }))
        }
    }
}

fn fstatat(abi: &mut Abi, mem: &dyn GuestMem, dirfd: u64, path: u64, buf: u64, flags: i32) -> Sys {
    if flags & libc::AT_EMPTY_PATH != 0 && Abi::cstring(mem, path)?.is_empty() {
        return fstat(abi, mem, [dirfd, buf, 0, 0, 0, 0]);
    }
    let (dir, p) = abi.at(mem, dirfd, path)?;
    let out = buf_out(mem, buf, STAT)?;
    // SAFETY: a NUL-terminated path and a checked, writable stat-sized guest buffer.
    host(i64::from(unsafe {
        libc::fstatat(dir, p.as_ptr(), out.cast(), flags)
    }))
}

pub(super) fn stat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    fstatat(abi, mem, AT_FDCWD, a[0], a[1], 0)
}
pub(super) fn lstat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    fstatat(abi, mem, AT_FDCWD, a[0], a[1], libc::AT_SYMLINK_NOFOLLOW)
}
pub(super) fn newfstatat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    fstatat(abi, mem, a[0], a[1], a[2], a[3] as i32)
}

pub(super) fn statx(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let out = buf_out(mem, a[4], 256)?;
    let flags = a[2] as i32;
    let empty = flags & libc::AT_EMPTY_PATH != 0 && Abi::cstring(mem, a[1])?.is_empty();
    let (dir, p) = if empty {
        (abi.fds.host(a[0])?, CString::default())
    } else {
        abi.at(mem, a[0], a[1])?
    };
    // SAFETY: a NUL-terminated path and a checked, writable 256-byte statx buffer.
    host(unsafe { libc::syscall(libc::SYS_statx, dir, p.as_ptr(), flags, a[3], out) })
}

fn faccessat(
    abi: &mut Abi,
    mem: &dyn GuestMem,
    dirfd: u64,
    path: u64,
    mode: u64,
    flags: i32,
) -> Sys {
    let (dir, p) = abi.at(mem, dirfd, path)?;
    if abi.policy == Policy::Confined && mode as i32 & libc::W_OK != 0 {
        return Err(Errno::EACCES);
    }
    // SAFETY: a NUL-terminated path.
    host(unsafe { libc::syscall(libc::SYS_faccessat2, dir, p.as_ptr(), mode, flags) })
}

pub(super) fn access(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    faccessat(abi, mem, AT_FDCWD, a[0], a[1], 0)
}
pub(super) fn faccessat_(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    faccessat(abi, mem, a[0], a[1], a[2], 0)
}
pub(super) fn faccessat2(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    faccessat(abi, mem, a[0], a[1], a[2], a[3] as i32)
}

pub(super) fn getdents64(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let p = buf_out(mem, a[1], a[2])?;
    // SAFETY: `p` holds a[2] checked, writable guest bytes.
    host(unsafe { libc::syscall(libc::SYS_getdents64, fd, p, a[2]) })
}

/// getcwd(buf, size): the guest's current directory; returns the length with the NUL.
pub(super) fn getcwd(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let path = match &abi.cwd {
        Some(c) => std::fs::read_link(format!("/proc/self/fd/{}", c.as_raw_fd()))
            .map_err(|e| Errno::of(&e))?,
        None => PathBuf::from("/"),
    };
    let mut b = path.into_os_string().into_encoded_bytes();
    b.push(0);
    if b.len() as u64 > a[1] {
        return Err(Errno(libc::ERANGE));
    }
    mem.write(a[0], &b)?;
    Ok(b.len() as i64)
}

pub(super) fn chdir(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let (dir, p) = abi.at(mem, AT_FDCWD, a[0])?;
    // SAFETY: a NUL-terminated path; the result is a fresh descriptor.
    let n = host(i64::from(unsafe {
        libc::openat(
            dir,
            p.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    }))?;
    abi.cwd = Some(owned(n));
    Ok(0)
}

pub(super) fn fchdir(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    // SAFETY: reopening a descriptor the guest owns through /proc; a fresh descriptor.
    let n = host(i64::from(unsafe {
        libc::openat(
            fd,
            c".".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    }))?;
    abi.cwd = Some(owned(n));
    Ok(0)
}

/// A path call with one path and integer arguments, as its `*at` form: `(nr, dirfd
/// argument index or None for AT_FDCWD, path argument index)`.
fn path_ints(
    abi: &mut Abi,
    mem: &dyn GuestMem,
    nr: i64,
    dirfd: Option<usize>,
    path: usize,
    a: A,
) -> Sys {
    let (dir, p) = abi.at(mem, dirfd.map_or(AT_FDCWD, |i| a[i]), a[path])?;
    let rest: Vec<u64> = a[path + 1..].to_vec();
    // SAFETY: a NUL-terminated path and integer arguments.
    host(unsafe { libc::syscall(nr, dir, p.as_ptr(), rest[0], rest[1], rest[2]) })
}

pub(super) fn mkdir(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(abi, mem, libc::SYS_mkdirat, None, 0, a)
}
pub(super) fn mkdirat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(abi, mem, libc::SYS_mkdirat, Some(0), 1, a)
}
pub(super) fn mknodat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(abi, mem, libc::SYS_mknodat, Some(0), 1, a)
}
pub(super) fn mknod(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(abi, mem, libc::SYS_mknodat, None, 0, a)
}
pub(super) fn rmdir(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let a = [a[0], libc::AT_REMOVEDIR as u64, 0, 0, 0, 0];
    path_ints(abi, mem, libc::SYS_unlinkat, None, 0, a)
}
pub(super) fn unlink(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(abi, mem, libc::SYS_unlinkat, None, 0, [a[0], 0, 0, 0, 0, 0])
}
pub(super) fn unlinkat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(abi, mem, libc::SYS_unlinkat, Some(0), 1, a)
}
pub(super) fn chmod(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(
        abi,
        mem,
        libc::SYS_fchmodat,
        None,
        0,
        [a[0], a[1], 0, 0, 0, 0],
    )
}
pub(super) fn fchmodat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(
        abi,
        mem,
        libc::SYS_fchmodat,
        Some(0),
        1,
        [a[0], a[1], a[2], 0, 0, 0],
    )
}
pub(super) fn chown(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(
        abi,
        mem,
        libc::SYS_fchownat,
        None,
        0,
        [a[0], a[1], a[2], 0, 0, 0],
    )
}
pub(super) fn lchown(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let nofollow = libc::AT_SYMLINK_NOFOLLOW as u64;
    path_ints(
        abi,
        mem,
        libc::SYS_fchownat,
        None,
        0,
        [a[0], a[1], a[2], nofollow, 0, 0],
    )
}
pub(super) fn fchownat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    path_ints(abi, mem, libc::SYS_fchownat, Some(0), 1, a)
}
pub(super) fn truncate(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let (dir, p) = abi.at(mem, AT_FDCWD, a[0])?;
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = host(i64::from(unsafe {
        libc::openat(dir, p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC)
    }))
    .map(owned)?;
    // SAFETY: ftruncate on a descriptor just opened.
    host(i64::from(unsafe {
        libc::ftruncate(fd.as_raw_fd(), a[1] as i64)
    }))
}

/// utimensat(dirfd, path or NULL, times, flags).
pub(super) fn utimensat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let times = opt_in(mem, a[2], 32)?;
    if a[1] == 0 {
        let fd = abi.fds.host(a[0])?;
        // SAFETY: `times` is null or a checked guest timespec[2].
        return host(unsafe {
            libc::syscall(libc::SYS_utimensat, fd, std::ptr::null::<u8>(), times, a[3])
        });
    }
    let (dir, p) = abi.at(mem, a[0], a[1])?;
    // SAFETY: a NUL-terminated path; `times` is null or a checked guest timespec[2].
    host(unsafe { libc::syscall(libc::SYS_utimensat, dir, p.as_ptr(), times, a[3]) })
}

/// utimes(path, timeval[2]) and utime(path, utimbuf): as utimensat.
pub(super) fn utimes(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let (dir, p) = abi.at(mem, AT_FDCWD, a[0])?;
    let tv = opt_in(mem, a[1], 32)?;
    // SAFETY: a NUL-terminated path; `tv` is null or a checked guest timeval[2].
    host(unsafe { libc::syscall(libc::SYS_futimesat, dir, p.as_ptr(), tv) })
}

/// Calls with two paths: rename(at)(2), link(at), symlink(at).
#[allow(clippy::too_many_arguments)] // a raw two-path call: both (dirfd, path) pairs and flags
fn two_paths(
    abi: &mut Abi,
    mem: &dyn GuestMem,
    nr: i64,
    d1: u64,
    p1: u64,
    d2: u64,
    p2: u64,
    flags: u64,
) -> Sys {
    let (dir1, a) = abi.at(mem, d1, p1)?;
    let (dir2, b) = abi.at(mem, d2, p2)?;
    // SAFETY: NUL-terminated paths and integer arguments.
    host(unsafe { libc::syscall(nr, dir1, a.as_ptr(), dir2, b.as_ptr(), flags) })
}

pub(super) fn rename(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    two_paths(
        abi,
        mem,
        libc::SYS_renameat2,
        AT_FDCWD,
        a[0],
        AT_FDCWD,
        a[1],
        0,
    )
}
pub(super) fn renameat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    two_paths(abi, mem, libc::SYS_renameat2, a[0], a[1], a[2], a[3], 0)
}
pub(super) fn renameat2(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    two_paths(abi, mem, libc::SYS_renameat2, a[0], a[1], a[2], a[3], a[4])
}
pub(super) fn link(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    two_paths(
        abi,
        mem,
        libc::SYS_linkat,
        AT_FDCWD,
        a[0],
        AT_FDCWD,
        a[1],
        0,
    )
}
pub(super) fn linkat(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    two_paths(abi, mem, libc::SYS_linkat, a[0], a[1], a[2], a[3], a[4])
}

/// symlink(target, linkpath): the target is stored as written, never resolved.
pub(super) fn symlinkat(
    abi: &mut Abi,
    mem: &dyn GuestMem,
    dirfd: u64,
    target: u64,
    path: u64,
) -> Sys {
    let t = Abi::path(mem, target)?;
    let (dir, p) = abi.at(mem, dirfd, path)?;
    // SAFETY: NUL-terminated paths.
    host(i64::from(unsafe {
        libc::symlinkat(t.as_ptr(), dir, p.as_ptr())
    }))
}
pub(super) fn symlink(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    symlinkat(abi, mem, AT_FDCWD, a[0], a[1])
}
pub(super) fn symlinkat_(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    symlinkat(abi, mem, a[1], a[0], a[2])
}

fn readlinkat(abi: &mut Abi, mem: &dyn GuestMem, dirfd: u64, path: u64, buf: u64, len: u64) -> Sys {
    let (dir, p) = abi.at(mem, dirfd, path)?;
    let out = buf_out(mem, buf, len)?;
    if let (true, Some(exe), b"/proc/self/exe") = (abi.hosted_process(), &abi.exe, p.as_bytes()) {
        // the guest's program, not the translator running it
        let b = exe.as_os_str().as_encoded_bytes();
        let n = b.len().min(len as usize);
        mem.write(buf, &b[..n])?;
        return Ok(n as i64);
    }
    // SAFETY: a NUL-terminated path and `len` checked, writable guest bytes.
    host(unsafe { libc::readlinkat(dir, p.as_ptr(), out.cast(), len as usize) } as i64)
}
pub(super) fn readlink(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    readlinkat(abi, mem, AT_FDCWD, a[0], a[1], a[2])
}
pub(super) fn readlinkat_(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    readlinkat(abi, mem, a[0], a[1], a[2], a[3])
}

/// statfs(path, buf) and fstatfs(fd, buf).
pub(super) fn statfs(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let (dir, p) = abi.at(mem, AT_FDCWD, a[0])?;
    // SAFETY: a NUL-terminated path; the descriptor is closed when dropped.
    let fd = host(i64::from(unsafe {
        libc::openat(dir, p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC)
    }))
    .map(owned)?;
    fstatfs_host(mem, fd.as_raw_fd(), a[1])
}
pub(super) fn fstatfs(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    fstatfs_host(mem, fd, a[1])
}
fn fstatfs_host(mem: &dyn GuestMem, fd: i32, buf: u64) -> Sys {
    let out = buf_out(mem, buf, std::mem::size_of::<libc::statfs>() as u64)?;
    // SAFETY: a checked, writable statfs-sized guest buffer.
    host(i64::from(unsafe { libc::fstatfs(fd, out.cast()) }))
}

/// sync: the host's.
pub(super) fn sync(_: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    Ok(0)
}
