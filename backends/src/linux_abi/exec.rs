//! execve and execveat of a guest that is a host process of its own (bt's translator process):
//! the layer reads the path, argv and envp out of guest memory, opens the program relative to
//! the guest's current directory, resolves `#!` lines as the kernel's binfmt_script does, and
//! hands the backend an [`ExecRequest`] ([`Action::Exec`]); the backend checks the image and
//! replaces the guest's (or gives an errno back when it cannot load it).

use super::{fd::owned, get, Abi, Action, Errno, GuestMem, Policy};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

type A = [u64; 6];
const AT_FDCWD: u64 = libc::AT_FDCWD as u64;

/// Most argv + envp entries read from the guest (the kernel's limit is by bytes; this bounds
/// a hostile guest's request).
const MAX_ARGS: usize = 1 << 16;
/// Interpreters of `#!` scripts followed before ELOOP (the kernel's BINPRM_MAX_RECURSION).
const MAX_SCRIPTS: usize = 4;
/// Longest `#!` line read (the kernel's BINPRM_BUF_SIZE).
const SHEBANG_MAX: usize = 256;

/// A program the guest asked to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The program file, as the guest named it (or its `#!` interpreter's path).
    pub path: PathBuf,
    /// Its bytes: an ELF file (the backend checks it can load it).
    pub bytes: Vec<u8>,
    /// argv, with a script's interpreter line in front.
    pub argv: Vec<Vec<u8>>,
    /// envp.
    pub env: Vec<Vec<u8>>,
    /// The path the guest passed (AT_EXECFN).
    pub execfn: Vec<u8>,
}

impl Abi {
    /// The program the guest asked for with execve, when the call returned [`Action::Exec`].
    pub fn take_exec(&mut self) -> Option<ExecRequest> {
        self.exec.take()
    }

    /// uid, euid, gid, egid as the new program's auxiliary vector gives them.
    pub fn exec_ids(&self) -> [u64; 4] {
        aux_ids(self.policy)
    }

    /// After a successful exec: descriptors marked close-on-exec are closed, caught signals go
    /// back to their default action (ignored ones stay ignored, the mask and pending signals
    /// stay), the alternate stack is gone, and the memory map starts over with `layout`.
    pub fn exec_done(&mut self, layout: super::Layout, exe: PathBuf) {
        self.fds.close_on_exec();
        for a in self.signals.actions.iter_mut() {
            if a[0] > 1 {
                *a = [0; 4];
            }
        }
        self.signals.altstack = [0, 2, 0];
        self.mem = super::mem::Map::new(layout);
        self.exe = Some(exe);
    }

    /// A NULL-terminated array of guest strings (argv or envp) at `addr` (0: empty).
    fn strings(mem: &dyn GuestMem, addr: u64) -> Result<Vec<Vec<u8>>, Errno> {
        let mut v = Vec::new();
        if addr == 0 {
            return Ok(v);
        }
        loop {
            if v.len() >= MAX_ARGS {
                return Err(Errno::E2BIG);
            }
            let p: u64 = get(mem, addr + 8 * v.len() as u64)?;
            if p == 0 {
                return Ok(v);
            }
            v.push(Abi::cstring_any(mem, p)?);
        }
    }

    /// The host file `path` names for the guest (relative to `dirfd`), opened for reading;
    /// `/proc/self/exe` is the guest's own program, not the translator.
    fn open_program(&mut self, dirfd: u64, path: &[u8]) -> Result<(OwnedFd, PathBuf), Errno> {
        let name: PathBuf = match (&self.exe, path) {
            (Some(exe), b"/proc/self/exe") => exe.clone(),
            _ => PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        };
        let c = CString::new(name.as_os_str().as_bytes()).map_err(|_| Errno::ENOENT)?;
        let dir = if name.is_absolute() {
            libc::AT_FDCWD
        } else {
            self.dirfd(dirfd)?
        };
        // SAFETY: a NUL-terminated path; X_OK as the kernel checks it for exec.
        if unsafe { libc::faccessat(dir, c.as_ptr(), libc::X_OK, 0) } != 0 {
            return Err(Errno::last());
        }
        // SAFETY: as above; the descriptor is owned by the result.
        let n = unsafe { libc::openat(dir, c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if n < 0 {
            return Err(Errno::last());
        }
        let fd = owned(i64::from(n));
        let mut st: libc::stat = unsafe_zeroed_stat();
        // SAFETY: a valid descriptor and a stat-sized out-parameter.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(Errno::last());
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EACCES);
        }
        Ok((fd, name))
    }
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: an all-zero stat is a valid value (plain integers).
    unsafe { std::mem::zeroed() }
}

/// uid, euid, gid, egid for a program's auxiliary vector under `policy`: the host's, or root
/// of its own machine confined.
pub fn aux_ids(policy: Policy) -> [u64; 4] {
    match policy {
        // SAFETY: these calls have no preconditions.
        Policy::Host => unsafe {
            [
                u64::from(libc::getuid()),
                u64::from(libc::geteuid()),
                u64::from(libc::getgid()),
                u64::from(libc::getegid()),
            ]
        },
        Policy::Confined => [0; 4],
    }
}

/// Parses a `#!` line: the interpreter and its one optional argument (everything after the
/// first blank, trimmed, as Linux passes it).
pub fn shebang(head: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next()?;
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let line: &[u8] = {
        let s = line.iter().position(|b| !blank(b)).unwrap_or(line.len());
        let e = line.iter().rposition(|b| !blank(b)).map_or(s, |e| e + 1);
        &line[s..e.max(s)]
    };
    if line.is_empty() {
        return None;
    }
    match line.iter().position(blank) {
        None => Some((line.to_vec(), None)),
        Some(i) => {
            let arg = &line[i..];
            let s = arg.iter().position(|b| !blank(b)).unwrap_or(arg.len());
            let arg = &arg[s..];
            Some((line[..i].to_vec(), (!arg.is_empty()).then(|| arg.to_vec())))
        }
    }
}

fn read_all(fd: OwnedFd) -> Result<Vec<u8>, Errno> {
    let mut f = std::fs::File::from(fd);
    let mut b = Vec::new();
    f.read_to_end(&mut b)
        .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(b)
}

fn execveat(
    abi: &mut Abi,
    mem: &dyn GuestMem,
    dirfd: u64,
    a: [u64; 3],
    flags: u64,
) -> Result<Action, Errno> {
    if abi.policy != Policy::Host {
        return Err(Errno::ENOSYS);
    }
    if flags & !(libc::AT_EMPTY_PATH as u64 | libc::AT_SYMLINK_NOFOLLOW as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    let execfn = Abi::cstring_any(mem, a[0])?;
    let mut argv = Abi::strings(mem, a[1])?;
    let env = Abi::strings(mem, a[2])?;
    if execfn.is_empty() {
        return Err(Errno::ENOENT);
    }
    let mut target = execfn.clone();
    for _ in 0..=MAX_SCRIPTS {
        let (fd, path) = abi.open_program(dirfd, &target)?;
        let bytes = read_all(fd)?;
        if bytes.starts_with(b"\x7fELF") {
            abi.exec = Some(ExecRequest {
                path,
                bytes,
                argv,
                env,
                execfn,
            });
            return Ok(Action::Exec);
        }
        let head = &bytes[..bytes.len().min(SHEBANG_MAX)];
        let Some((interp, arg)) = shebang(head) else {
            return Err(Errno::ENOEXEC);
        };
        // the script's argv: interpreter, its argument, the script's path, the rest
        let mut next = vec![interp.clone()];
        next.extend(arg);
        next.push(target.clone());
        next.extend(argv.into_iter().skip(1));
        argv = next;
        target = interp;
    }
    Err(Errno::ELOOP)
}

/// execve(path, argv, envp).
pub(super) fn execve(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    execveat(abi, mem, AT_FDCWD, [a[0], a[1], a[2]], 0)
}

/// execveat(dirfd, path, argv, envp, flags) (AT_EMPTY_PATH is not supported: ENOENT).
pub(super) fn execveat_(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    execveat(abi, mem, a[0], [a[1], a[2], a[3]], a[4])
}

#[cfg(test)]
mod tests {
    use super::shebang;

    #[test]
    fn shebang_lines_split_as_linux_splits_them() {
        let s = |l: &[u8]| {
            shebang(l).map(|(i, a)| {
                (
                    String::from_utf8(i).unwrap(),
                    a.map(|a| String::from_utf8(a).unwrap()),
                )
            })
        };
        assert_eq!(s(b"#!/bin/sh\necho"), Some(("/bin/sh".into(), None)));
        assert_eq!(
            s(b"#! /usr/bin/env  python3 -u \n"),
            Some(("/usr/bin/env".into(), Some("python3 -u".into())))
        );
        assert_eq!(
            s(b"#!\t/bin/bash -e"),
            Some(("/bin/bash".into(), Some("-e".into())))
        );
        assert_eq!(s(b"#!   \n"), None);
        assert_eq!(s(b"echo hi"), None);
    }
}
