//! The syscall policy shared by the `kvm` and `bt` backends: the part of a "kernel" that
//! services a trapped or forwarded syscall of a guest program. It decides which syscalls a guest
//! may make, checks every guest pointer and length against guest memory (through
//! [`GuestMem`]), confines paths to the ones the user passed, and forwards or emulates. Unknown
//! syscalls get ENOSYS and are counted; the first one is remembered so it can be named.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// A guest address range that is not (wholly) guest memory: the syscall gets EFAULT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutsideGuest;

/// Guest memory as the syscall layer sees it: checked copies in and out.
pub trait GuestMem {
    /// Copies guest memory at `addr` into `buf`; `Err` when any byte is outside guest memory.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutsideGuest>;
    /// Copies `data` to guest memory at `addr`; `Err` when any byte is outside guest memory.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), OutsideGuest>;
    /// Makes `len` bytes at `addr` read as zero, as fresh anonymous memory does (mmap, brk).
    /// The default writes zeros; a backend whose guest memory is its own process's may hand
    /// the pages back to the host instead, so they are faulted in again, zero-filled, when the
    /// guest touches them, as fresh memory is natively.
    fn zero(&self, addr: u64, len: u64) -> Result<(), OutsideGuest> {
        let z = vec![0u8; (len as usize).min(MAX_IO)];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(z.len() as u64) as usize;
            self.write(addr + off, &z[..n])?;
            off += n as u64;
        }
        Ok(())
    }
}

/// What the guest's "kernel" must do after a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Return this value in rax (negative errno on failure).
    Return(i64),
    /// The program exited with this status.
    Exit(i32),
    /// Set the FS base register, then return 0 (arch_prctl(ARCH_SET_FS)).
    SetFs(u64),
}

/// Where guest stdout/stderr go.
#[derive(Debug)]
pub enum Output {
    /// Kept in memory up to a cap (the rest counted): the harness reads the result line.
    Capture {
        /// Bytes kept.
        buf: Vec<u8>,
        /// Bytes written in all.
        total: u64,
    },
    /// Passed to the host's own stream.
    Inherit(i32),
}

/// Syscall numbers counted one by one (x86-64 Linux has fewer than 512).
const COUNTED_NRS: usize = 512;

/// Stdout bytes kept in capture mode.
pub const CAPTURE_CAP: usize = 1 << 20;

impl Output {
    /// Appends guest output.
    pub fn put(&mut self, data: &[u8]) {
        match self {
            Output::Capture { buf, total } => {
                *total += data.len() as u64;
                let room = CAPTURE_CAP.saturating_sub(buf.len());
                buf.extend_from_slice(&data[..data.len().min(room)]);
            }
            Output::Inherit(fd) => {
                // SAFETY: writing a valid slice to a host fd we were given; errors are ignored
                // as they would be for a closed terminal.
                unsafe { libc::write(*fd, data.as_ptr().cast(), data.len()) };
            }
        }
    }
}

enum Fd {
    Stdin(bool),
    Out(usize),
    File(std::fs::File),
}

impl Fd {
    /// A second descriptor for the same open file (dup): a host file is duplicated on the host,
    /// so the two share their offset as they would under Linux.
    fn try_clone(&self) -> Result<Fd, i64> {
        Ok(match self {
            Fd::Stdin(inherit) => Fd::Stdin(*inherit),
            Fd::Out(i) => Fd::Out(*i),
            Fd::File(f) => Fd::File(
                f.try_clone()
                    .map_err(|err| -(err.raw_os_error().unwrap_or(e::EMFILE as i32) as i64))?,
            ),
        })
    }
}

/// Linux error numbers used here.
mod e {
    pub const EPERM: i64 = 1;
    pub const ENOENT: i64 = 2;
    pub const EBADF: i64 = 9;
    pub const ENOMEM: i64 = 12;
    pub const EACCES: i64 = 13;
    pub const EFAULT: i64 = 14;
    pub const EINVAL: i64 = 22;
    pub const EMFILE: i64 = 24;
    pub const ENOTTY: i64 = 25;
    pub const ENAMETOOLONG: i64 = 36;
    pub const ENOSYS: i64 = 38;
    pub const ENODEV: i64 = 19;
}

/// Largest single read/write/copy the layer performs for a guest.
const MAX_IO: usize = 1 << 20;
const PAGE: u64 = 4096;

/// The state of one guest process: fds, program break, anonymous mappings, counters.
pub struct Abi {
    fds: Vec<Option<Fd>>,
    /// Standard output and standard error.
    pub outputs: [Output; 2],
    allowed: Vec<PathBuf>,
    brk_start: u64,
    brk: u64,
    brk_limit: u64,
    mmap_lo: u64,
    mmap_hi: u64,
    maps: BTreeMap<u64, u64>,
    /// Calls by syscall number (the last slot counts every larger number): counted into a fixed
    /// array on the hot path, named once at the end by [`Abi::counters`].
    calls: Box<[u64; COUNTED_NRS]>,
    /// Calls answered with ENOSYS.
    enosys: u64,
    /// Paths refused by the confinement.
    denied_path: u64,
    /// The first syscall number answered with ENOSYS.
    pub first_unsupported: Option<u64>,
}

/// Memory regions the guest's program break and anonymous mappings may use.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Initial program break (end of the loaded image, page aligned).
    pub brk_start: u64,
    /// Highest program break.
    pub brk_limit: u64,
    /// Lowest address of anonymous mappings.
    pub mmap_lo: u64,
    /// Highest (exclusive) address of anonymous mappings.
    pub mmap_hi: u64,
}

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

impl Abi {
    /// A process with stdin (`inherit_stdin`: the host's, else empty), the two outputs, and
    /// read access to `allowed` paths (plus /dev/null, /dev/zero, /dev/urandom).
    pub fn new(
        layout: Layout,
        outputs: [Output; 2],
        inherit_stdin: bool,
        mut allowed: Vec<PathBuf>,
    ) -> Abi {
        allowed.extend(["/dev/null", "/dev/zero", "/dev/urandom"].map(PathBuf::from));
        Abi {
            fds: vec![
                Some(Fd::Stdin(inherit_stdin)),
                Some(Fd::Out(0)),
                Some(Fd::Out(1)),
            ],
            outputs,
            allowed,
            brk_start: layout.brk_start,
            brk: layout.brk_start,
            brk_limit: layout.brk_limit,
            mmap_lo: layout.mmap_lo,
            mmap_hi: layout.mmap_hi,
            maps: BTreeMap::new(),
            calls: Box::new([0; COUNTED_NRS]),
            enosys: 0,
            denied_path: 0,
            first_unsupported: None,
        }
    }

    /// The counters by name (`abi.<syscall>` per syscall made, `abi.enosys`,
    /// `abi.denied_path`), made once when the run ends.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut m: BTreeMap<String, u64> = self
            .calls
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(nr, n)| {
                let name = match syscall_name(nr as u64) {
                    "?" if nr == COUNTED_NRS - 1 => "abi.other".to_string(),
                    "?" => format!("abi.sys_{nr}"),
                    name => format!("abi.{name}"),
                };
                (name, *n)
            })
            .collect();
        for (k, v) in [
            ("abi.enosys", self.enosys),
            ("abi.denied_path", self.denied_path),
        ] {
            if v > 0 {
                m.insert(k.into(), v);
            }
        }
        m
    }

    fn cstring(mem: &dyn GuestMem, addr: u64) -> Result<Vec<u8>, i64> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            // Read byte-wise near the end of memory, chunk-wise otherwise.
            if mem.read(addr + out.len() as u64, &mut chunk).is_err() {
                let mut b = [0u8; 1];
                mem.read(addr + out.len() as u64, &mut b)
                    .map_err(|_| -e::EFAULT)?;
                if b[0] == 0 {
                    return Ok(out);
                }
                out.push(b[0]);
            } else if let Some(n) = chunk.iter().position(|c| *c == 0) {
                out.extend_from_slice(&chunk[..n]);
                return Ok(out);
            } else {
                out.extend_from_slice(&chunk);
            }
            if out.len() > 4096 {
                return Err(-e::ENAMETOOLONG);
            }
        }
    }

    /// Services syscall `nr` with arguments `a` (rdi, rsi, rdx, r10, r8, r9).
    pub fn syscall(&mut self, mem: &dyn GuestMem, nr: u64, a: [u64; 6]) -> Action {
        use Action::Return as R;
        self.calls[(nr as usize).min(COUNTED_NRS - 1)] += 1;
        let r = |v: Result<i64, i64>| R(v.unwrap_or_else(|err| err));
        match nr {
            0 => r(self.read(mem, a[0], a[1], a[2])),
            1 => r(self.write(mem, a[0], a[1], a[2])),
            2 => r(self.open(mem, a[0], a[1])),
            257 => {
                // openat: only AT_FDCWD or absolute paths
                if a[0] as i32 != libc::AT_FDCWD {
                    return R(-e::EINVAL);
                }
                r(self.open(mem, a[1], a[2]))
            }
            3 => match self.fds.get_mut(a[0] as usize) {
                Some(slot @ Some(_)) => {
                    *slot = None;
                    R(0)
                }
                _ => R(-e::EBADF),
            },
            5 => r(self.fstat(mem, a[0], a[1])),
            262 if a[3] as i32 & libc::AT_EMPTY_PATH != 0 => r(self.fstat(mem, a[0], a[2])),
            4 | 6 => r(self.stat_path(mem, a[0], a[1], nr == 6)),
            262 => {
                // newfstatat of a path: only AT_FDCWD or absolute paths, like openat
                if a[0] as i32 != libc::AT_FDCWD {
                    return R(-e::EINVAL);
                }
                let nofollow = a[3] as i32 & libc::AT_SYMLINK_NOFOLLOW != 0;
                r(self.stat_path(mem, a[1], a[2], nofollow))
            }
            32 => r(self.dup(a[0], None, 0)),
            33 if a[0] == a[1] => match self.fds.get(a[0] as usize) {
                Some(Some(_)) => R(a[0] as i64),
                _ => R(-e::EBADF),
            },
            33 => r(self.dup(a[0], Some(a[1]), 0)),
            292 if a[0] == a[1] => R(-e::EINVAL),
            292 if a[2] & !(libc::O_CLOEXEC as u64) != 0 => R(-e::EINVAL),
            292 => r(self.dup(a[0], Some(a[1]), a[2])),
            8 => r(self.lseek(a[0], a[1] as i64, a[2] as i32)),
            9 => r(self.mmap(mem, a[0], a[1], a[2], a[3], a[4] as i64)),
            11 => r(self.munmap(a[0], a[1])),
            10 | 28 => R(0), // mprotect, madvise: all guest memory is RW here
            12 => r(self.brk(mem, a[0])),
            16 => R(-e::ENOTTY),
            20 => r(self.writev(mem, a[0], a[1], a[2])),
            39 | 186 => R(1),
            102 | 104 | 107 | 108 => R(0), // get[e]uid, get[e]gid: root of its own machine
            60 | 231 => Action::Exit(a[0] as i32),
            63 => r(self.uname(mem, a[0])),
            158 => match a[0] {
                0x1002 => Action::SetFs(a[1]),
                _ => R(-e::EINVAL),
            },
            218 => R(1),                 // set_tid_address
            273 | 13 | 14 | 131 => R(0), // set_robust_list, rt_sigaction, rt_sigprocmask, sigaltstack
            228 => r(self.clock_gettime(mem, a[0], a[1])),
            x if x == libc::SYS_gettimeofday as u64 => r(Self::gettimeofday(mem, a[0], a[1])),
            x if x == libc::SYS_time as u64 => r(Self::time(mem, a[0])),
            318 => r(self.getrandom(mem, a[0], a[1])),
            72 => R(0), // fcntl: no flags to report
            // rseq: libc registers it when available and copes with ENOSYS, as on old kernels
            334 => R(-e::ENOSYS),
            _ => {
                self.enosys += 1;
                self.first_unsupported.get_or_insert(nr);
                R(-e::ENOSYS)
            }
        }
    }

    /// The guest's path at `path`, when it is one the guest may use (EACCES, counted, if not).
    fn allowed_path(&mut self, mem: &dyn GuestMem, path: u64) -> Result<PathBuf, i64> {
        let p = Self::cstring(mem, path)?;
        let p = PathBuf::from(String::from_utf8_lossy(&p).into_owned());
        if !self.allowed.contains(&p) {
            self.denied_path += 1;
            return Err(-e::EACCES);
        }
        Ok(p)
    }

    fn open(&mut self, mem: &dyn GuestMem, path: u64, flags: u64) -> Result<i64, i64> {
        let p = self.allowed_path(mem, path)?;
        let acc = flags as i32 & libc::O_ACCMODE;
        let is_dev = p.starts_with("/dev/");
        if acc != libc::O_RDONLY && !is_dev {
            self.denied_path += 1;
            return Err(-e::EPERM);
        }
        let f = std::fs::OpenOptions::new()
            .read(acc != libc::O_WRONLY)
            .write(acc != libc::O_RDONLY)
            .open(&p)
            .map_err(|err| -(err.raw_os_error().unwrap_or(e::ENOENT as i32) as i64))?;
        let slot = match self.fds.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.fds.len() < 1024 => {
                self.fds.push(None);
                self.fds.len() - 1
            }
            None => return Err(-e::EMFILE),
        };
        self.fds[slot] = Some(Fd::File(f));
        Ok(slot as i64)
    }

    fn read(&mut self, mem: &dyn GuestMem, fd: u64, buf: u64, len: u64) -> Result<i64, i64> {
        let n = (len as usize).min(MAX_IO);
        let mut tmp = vec![0u8; n];
        let got = match self.fds.get_mut(fd as usize) {
            Some(Some(Fd::File(f))) => f
                .read(&mut tmp)
                .map_err(|err| -(err.raw_os_error().unwrap_or(5) as i64))?,
            Some(Some(Fd::Stdin(true))) => std::io::stdin().read(&mut tmp).map_err(|_| -5)?,
            Some(Some(Fd::Stdin(false))) => 0,
            Some(Some(Fd::Out(_))) => return Err(-e::EBADF),
            _ => return Err(-e::EBADF),
        };
        mem.write(buf, &tmp[..got]).map_err(|_| -e::EFAULT)?;
        Ok(got as i64)
    }

    fn write(&mut self, mem: &dyn GuestMem, fd: u64, buf: u64, len: u64) -> Result<i64, i64> {
        let n = (len as usize).min(MAX_IO);
        let mut tmp = vec![0u8; n];
        mem.read(buf, &mut tmp).map_err(|_| -e::EFAULT)?;
        match self.fds.get_mut(fd as usize) {
            Some(Some(Fd::Out(i))) => {
                let i = *i;
                self.outputs[i].put(&tmp);
                Ok(n as i64)
            }
            Some(Some(Fd::File(f))) => f
                .write(&tmp)
                .map(|w| w as i64)
                .map_err(|err| -(err.raw_os_error().unwrap_or(5) as i64)),
            _ => Err(-e::EBADF),
        }
    }

    fn writev(&mut self, mem: &dyn GuestMem, fd: u64, iov: u64, cnt: u64) -> Result<i64, i64> {
        if cnt > 1024 {
            return Err(-e::EINVAL);
        }
        let mut total = 0i64;
        for i in 0..cnt {
            let mut v = [0u8; 16];
            mem.read(iov + 16 * i, &mut v).map_err(|_| -e::EFAULT)?;
            let base = u64::from_le_bytes(v[..8].try_into().expect("8"));
            let len = u64::from_le_bytes(v[8..].try_into().expect("8"));
            if len == 0 {
                continue;
            }
            total += self.write(mem, fd, base, len)?;
        }
        Ok(total)
    }

    fn fstat(&mut self, mem: &dyn GuestMem, fd: u64, buf: u64) -> Result<i64, i64> {
        // SAFETY: zeroed stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let host_fd = match self.fds.get(fd as usize) {
            Some(Some(Fd::File(f))) => f.as_raw_fd(),
            Some(Some(_)) => {
                // a character device, like a terminal or pipe would be
                st.st_mode = libc::S_IFCHR | 0o620;
                st.st_blksize = 4096;
                -1
            }
            _ => return Err(-e::EBADF),
        };
        // SAFETY: fstat on a host fd we own, with a valid out-pointer.
        if host_fd >= 0 && unsafe { libc::fstat(host_fd, &mut st) } != 0 {
            return Err(-e::EBADF);
        }
        Self::put_stat(mem, buf, &st)
    }

    /// stat/lstat/newfstatat of a path: allowed paths only, answered from the host's file.
    fn stat_path(
        &mut self,
        mem: &dyn GuestMem,
        path: u64,
        buf: u64,
        nofollow: bool,
    ) -> Result<i64, i64> {
        let p = self.allowed_path(mem, path)?;
        let c = std::ffi::CString::new(p.into_os_string().into_encoded_bytes())
            .map_err(|_| -e::EINVAL)?;
        // SAFETY: zeroed stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        let rc = unsafe {
            if nofollow {
                libc::lstat(c.as_ptr(), &mut st)
            } else {
                libc::stat(c.as_ptr(), &mut st)
            }
        };
        if rc != 0 {
            return Err(-(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(e::ENOENT as i32) as i64));
        }
        Self::put_stat(mem, buf, &st)
    }

    fn put_stat(mem: &dyn GuestMem, buf: u64, st: &libc::stat) -> Result<i64, i64> {
        // SAFETY: libc::stat is plain old data; viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (st as *const libc::stat).cast::<u8>(),
                std::mem::size_of::<libc::stat>(),
            )
        };
        mem.write(buf, bytes).map_err(|_| -e::EFAULT)?;
        Ok(0)
    }

    /// dup (`to` None: the lowest free descriptor), dup2 and dup3 (`to`: that descriptor,
    /// closed first). Descriptors carry no close-on-exec state here: the guest never execs.
    fn dup(&mut self, from: u64, to: Option<u64>, _flags: u64) -> Result<i64, i64> {
        let new = match self.fds.get(from as usize) {
            Some(Some(f)) => f.try_clone()?,
            _ => return Err(-e::EBADF),
        };
        let slot = match to {
            Some(t) if t >= 1024 => return Err(-e::EBADF),
            Some(t) => {
                let t = t as usize;
                if self.fds.len() <= t {
                    self.fds.resize_with(t + 1, || None);
                }
                t
            }
            None => match self.fds.iter().position(Option::is_none) {
                Some(i) => i,
                None if self.fds.len() < 1024 => {
                    self.fds.push(None);
                    self.fds.len() - 1
                }
                None => return Err(-e::EMFILE),
            },
        };
        self.fds[slot] = Some(new);
        Ok(slot as i64)
    }

    fn lseek(&mut self, fd: u64, off: i64, whence: i32) -> Result<i64, i64> {
        match self.fds.get(fd as usize) {
            Some(Some(Fd::File(f))) => {
                // SAFETY: lseek on a host fd we own.
                let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
                if r < 0 {
                    Err(-e::EINVAL)
                } else {
                    Ok(r)
                }
            }
            Some(Some(_)) => Err(-29), // ESPIPE
            _ => Err(-e::EBADF),
        }
    }

    fn brk(&mut self, mem: &dyn GuestMem, want: u64) -> Result<i64, i64> {
        if want >= self.brk_start && want <= self.brk_limit {
            if want > self.brk {
                mem.zero(self.brk, want - self.brk)
                    .map_err(|_| self.brk as i64)?;
            }
            self.brk = want;
        }
        Ok(self.brk as i64)
    }

    /// Anonymous private mappings from a first-fit allocator over guest RAM, top down.
    fn mmap(
        &mut self,
        mem: &dyn GuestMem,
        addr: u64,
        len: u64,
        _prot: u64,
        flags: u64,
        _fd: i64,
    ) -> Result<i64, i64> {
        // Linux ignores the fd of an anonymous mapping: glibc and Go pass the int -1, which
        // arrives as 0xffffffff in the 64-bit register (comparing it with -1 refused them all)
        let anon = flags as i32 & libc::MAP_ANONYMOUS != 0;
        if !anon {
            return Err(-e::ENODEV);
        }
        if flags as i32 & libc::MAP_FIXED != 0 {
            return Err(-e::EINVAL);
        }
        let _ = addr;
        let len = page_up(len).filter(|l| *l > 0).ok_or(-e::EINVAL)?;
        // walk the gaps from the top
        let mut top = self.mmap_hi;
        let mut found = None;
        for (&start, &l) in self.maps.iter().rev() {
            if top - (start + l) >= len {
                found = Some(top - len);
                break;
            }
            top = start;
        }
        if found.is_none() && top >= self.mmap_lo + len {
            found = Some(top - len);
        }
        let at = found.ok_or(-e::ENOMEM)?;
        mem.zero(at, len).map_err(|_| -e::ENOMEM)?;
        self.maps.insert(at, len);
        Ok(at as i64)
    }

    fn munmap(&mut self, addr: u64, len: u64) -> Result<i64, i64> {
        if !addr.is_multiple_of(PAGE) {
            return Err(-e::EINVAL);
        }
        let len = page_up(len).ok_or(-e::EINVAL)?;
        let end = addr.checked_add(len).ok_or(-e::EINVAL)?;
        // trim every mapping that overlaps [addr, end)
        let overlapping: Vec<(u64, u64)> = self
            .maps
            .range(..end)
            .filter(|(s, l)| **s + **l > addr)
            .map(|(s, l)| (*s, *l))
            .collect();
        for (s, l) in overlapping {
            self.maps.remove(&s);
            if s < addr {
                self.maps.insert(s, addr - s);
            }
            if s + l > end {
                self.maps.insert(end, s + l - end);
            }
        }
        Ok(0)
    }

    fn uname(&mut self, mem: &dyn GuestMem, buf: u64) -> Result<i64, i64> {
        let mut u = [0u8; 65 * 6];
        for (i, f) in [
            "Linux",
            "vbench-vm",
            "6.1.0-vbench",
            "#1 vbench micro-VM",
            "x86_64",
            "",
        ]
        .iter()
        .enumerate()
        {
            u[i * 65..i * 65 + f.len()].copy_from_slice(f.as_bytes());
        }
        mem.write(buf, &u).map_err(|_| -e::EFAULT)?;
        Ok(0)
    }

    fn clock_gettime(&mut self, mem: &dyn GuestMem, clk: u64, tp: u64) -> Result<i64, i64> {
        if clk > 11 {
            return Err(-e::EINVAL);
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer; the clock id was range-checked.
        if unsafe { libc::clock_gettime(clk as libc::clockid_t, &mut ts) } != 0 {
            return Err(-e::EINVAL);
        }
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&ts.tv_sec.to_le_bytes());
        b[8..].copy_from_slice(&ts.tv_nsec.to_le_bytes());
        mem.write(tp, &b).map_err(|_| -e::EFAULT)?;
        Ok(0)
    }

    /// The host's wall clock, as CLOCK_REALTIME.
    fn realtime() -> libc::timespec {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer; CLOCK_REALTIME always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        ts
    }

    /// gettimeofday(tv, tz): the wall clock in seconds and microseconds; a non-null `tz` gets
    /// UTC (minutes west 0, no DST), as the kernel's timezone is on most hosts.
    fn gettimeofday(mem: &dyn GuestMem, tv: u64, tz: u64) -> Result<i64, i64> {
        let ts = Self::realtime();
        if tv != 0 {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&ts.tv_sec.to_le_bytes());
            b[8..].copy_from_slice(&(ts.tv_nsec / 1000).to_le_bytes());
            mem.write(tv, &b).map_err(|_| -e::EFAULT)?;
        }
        if tz != 0 {
            mem.write(tz, &[0u8; 8]).map_err(|_| -e::EFAULT)?;
        }
        Ok(0)
    }

    /// time(tloc): the wall clock in seconds, also stored at a non-null `tloc`.
    fn time(mem: &dyn GuestMem, tloc: u64) -> Result<i64, i64> {
        let now = Self::realtime().tv_sec;
        if tloc != 0 {
            mem.write(tloc, &now.to_le_bytes())
                .map_err(|_| -e::EFAULT)?;
        }
        Ok(now)
    }

    fn getrandom(&mut self, mem: &dyn GuestMem, buf: u64, len: u64) -> Result<i64, i64> {
        let n = (len as usize).min(MAX_IO);
        let mut tmp = vec![0u8; n];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut tmp))
            .map_err(|_| -e::EINVAL)?;
        mem.write(buf, &tmp).map_err(|_| -e::EFAULT)?;
        Ok(n as i64)
    }
}

/// A short name for common syscall numbers, for messages.
pub fn syscall_name(nr: u64) -> &'static str {
    match nr {
        0 => "read",
        1 => "write",
        2 => "open",
        3 => "close",
        4 => "stat",
        5 => "fstat",
        7 => "poll",
        9 => "mmap",
        12 => "brk",
        16 => "ioctl",
        21 => "access",
        22 => "pipe",
        32 => "dup",
        33 => "dup2",
        41 => "socket",
        56 => "clone",
        57 => "fork",
        59 => "execve",
        61 => "wait4",
        62 => "kill",
        79 => "getcwd",
        80 => "chdir",
        89 => "readlink",
        97 => "getrlimit",
        202 => "futex",
        217 => "getdents64",
        262 => "newfstatat",
        267 => "readlinkat",
        302 => "prlimit64",
        334 => "rseq",
        8 => "lseek",
        10 => "mprotect",
        11 => "munmap",
        13 => "rt_sigaction",
        14 => "rt_sigprocmask",
        20 => "writev",
        28 => "madvise",
        39 => "getpid",
        60 => "exit",
        63 => "uname",
        72 => "fcntl",
        96 => "gettimeofday",
        102 => "getuid",
        104 => "getgid",
        107 => "geteuid",
        108 => "getegid",
        131 => "sigaltstack",
        158 => "arch_prctl",
        186 => "gettid",
        201 => "time",
        218 => "set_tid_address",
        228 => "clock_gettime",
        231 => "exit_group",
        257 => "openat",
        273 => "set_robust_list",
        292 => "dup3",
        318 => "getrandom",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Mem(RefCell<Vec<u8>>);
    impl GuestMem for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutsideGuest> {
            let m = self.0.borrow();
            let s = m
                .get(addr as usize..(addr as usize).checked_add(buf.len()).ok_or(OutsideGuest)?)
                .ok_or(OutsideGuest)?;
            buf.copy_from_slice(s);
            Ok(())
        }
        fn write(&self, addr: u64, data: &[u8]) -> Result<(), OutsideGuest> {
            let mut m = self.0.borrow_mut();
            m.get_mut(
                addr as usize
                    ..(addr as usize)
                        .checked_add(data.len())
                        .ok_or(OutsideGuest)?,
            )
            .ok_or(OutsideGuest)?
            .copy_from_slice(data);
            Ok(())
        }
    }

    fn abi() -> (Abi, Mem) {
        let layout = Layout {
            brk_start: 0x10000,
            brk_limit: 0x20000,
            mmap_lo: 0x20000,
            mmap_hi: 0x40000,
        };
        let outs = [
            Output::Capture {
                buf: vec![],
                total: 0,
            },
            Output::Capture {
                buf: vec![],
                total: 0,
            },
        ];
        (
            Abi::new(layout, outs, false, vec![]),
            Mem(RefCell::new(vec![0u8; 0x40000])),
        )
    }

    #[test]
    fn counters_are_named_once_by_syscall() {
        let (mut a, m) = abi();
        for nr in [39, 39, 228, 96, 201, 56, 600] {
            a.syscall(&m, nr, [1, 0x100, 0, 0, 0, 0]);
        }
        let c = a.counters();
        assert_eq!(c["abi.getpid"], 2);
        assert_eq!(c["abi.clock_gettime"], 1);
        assert_eq!(c["abi.gettimeofday"], 1);
        assert_eq!(c["abi.time"], 1);
        assert_eq!(c["abi.clone"], 1);
        assert_eq!(
            c["abi.other"], 1,
            "numbers beyond the table share one slot: {c:?}"
        );
        assert_eq!(c["abi.enosys"], 2);
        // time() returned the host's wall clock and stored nothing at a null tloc
        assert!(matches!(a.syscall(&m, 201, [0; 6]), Action::Return(t) if t > 1_700_000_000));
    }

    #[test]
    fn write_checks_guest_pointers() {
        let (mut a, m) = abi();
        m.write(0x100, b"hi\n").unwrap();
        assert_eq!(a.syscall(&m, 1, [1, 0x100, 3, 0, 0, 0]), Action::Return(3));
        let Output::Capture { buf, .. } = &a.outputs[0] else {
            panic!()
        };
        assert_eq!(buf, b"hi\n");
        assert_eq!(
            a.syscall(&m, 1, [1, 0x3ffff, 10, 0, 0, 0]),
            Action::Return(-e::EFAULT)
        );
        assert_eq!(
            a.syscall(&m, 1, [1, u64::MAX - 1, 10, 0, 0, 0]),
            Action::Return(-e::EFAULT)
        );
        assert_eq!(
            a.syscall(&m, 1, [77, 0x100, 3, 0, 0, 0]),
            Action::Return(-e::EBADF)
        );
    }

    #[test]
    fn paths_are_confined() {
        let (mut a, m) = abi();
        m.write(0x200, b"/etc/passwd\0").unwrap();
        assert_eq!(
            a.syscall(&m, 257, [libc::AT_FDCWD as u64, 0x200, 0, 0, 0, 0]),
            Action::Return(-e::EACCES)
        );
        m.write(0x200, b"/dev/null\0").unwrap();
        assert_eq!(
            a.syscall(&m, 257, [libc::AT_FDCWD as u64, 0x200, 1, 0, 0, 0]),
            Action::Return(3)
        );
        assert_eq!(a.syscall(&m, 3, [3, 0, 0, 0, 0, 0]), Action::Return(0));
        assert_eq!(
            a.syscall(&m, 3, [3, 0, 0, 0, 0, 0]),
            Action::Return(-e::EBADF)
        );
    }

    #[test]
    fn dup2_moves_a_file_onto_stdin_sharing_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.txt");
        std::fs::write(&f, b"abcdef").unwrap();
        let (_, m) = abi();
        let layout = Layout {
            brk_start: 0x10000,
            brk_limit: 0x20000,
            mmap_lo: 0x20000,
            mmap_hi: 0x40000,
        };
        let cap = || Output::Capture {
            buf: vec![],
            total: 0,
        };
        let mut a = Abi::new(layout, [cap(), cap()], false, vec![f.clone()]);
        let path = format!("{}\0", f.display());
        m.write(0x200, path.as_bytes()).unwrap();
        let at = libc::AT_FDCWD as u64;
        assert_eq!(
            a.syscall(&m, 257, [at, 0x200, 0, 0, 0, 0]),
            Action::Return(3)
        );
        // busybox's xmove_fd: dup2(fd, 0) then close(fd)
        assert_eq!(a.syscall(&m, 33, [3, 0, 0, 0, 0, 0]), Action::Return(0));
        assert_eq!(a.syscall(&m, 3, [3, 0, 0, 0, 0, 0]), Action::Return(0));
        assert_eq!(a.syscall(&m, 0, [0, 0x300, 3, 0, 0, 0]), Action::Return(3));
        // dup shares the offset with the descriptor it copies
        assert_eq!(a.syscall(&m, 32, [0, 0, 0, 0, 0, 0]), Action::Return(3));
        assert_eq!(a.syscall(&m, 0, [3, 0x303, 8, 0, 0, 0]), Action::Return(3));
        let mut got = [0u8; 6];
        m.read(0x300, &mut got).unwrap();
        assert_eq!(&got, b"abcdef");
        assert_eq!(a.syscall(&m, 33, [3, 3, 0, 0, 0, 0]), Action::Return(3));
        assert_eq!(
            a.syscall(&m, 292, [3, 3, 0, 0, 0, 0]),
            Action::Return(-e::EINVAL)
        );
        assert_eq!(
            a.syscall(&m, 33, [9, 4, 0, 0, 0, 0]),
            Action::Return(-e::EBADF)
        );
        assert_eq!(
            a.syscall(&m, 33, [3, 5000, 0, 0, 0, 0]),
            Action::Return(-e::EBADF)
        );
        // stat of an allowed path gives its size; other paths stay hidden
        assert_eq!(
            a.syscall(&m, 4, [0x200, 0x1000, 0, 0, 0, 0]),
            Action::Return(0)
        );
        let mut st = [0u8; std::mem::size_of::<libc::stat>()];
        m.read(0x1000, &mut st).unwrap();
        // SAFETY: libc::stat is plain old data, any bytes are a valid value.
        let st: libc::stat = unsafe { std::ptr::read_unaligned(st.as_ptr().cast()) };
        assert_eq!(st.st_size, 6);
        m.write(0x200, b"/etc/passwd\0").unwrap();
        assert_eq!(
            a.syscall(&m, 262, [at, 0x200, 0x1000, 0, 0, 0]),
            Action::Return(-e::EACCES)
        );
    }

    #[test]
    fn anonymous_memory_is_zeroed_reused_and_bounded() {
        let (mut a, m) = abi();
        let Action::Return(p) = a.syscall(&m, 9, [0, 0x8000, 3, 0x22, u64::MAX, 0]) else {
            panic!()
        };
        assert_eq!(p, 0x38000);
        m.write(p as u64, b"dirty").unwrap();
        assert_eq!(
            a.syscall(&m, 11, [p as u64, 0x8000, 0, 0, 0, 0]),
            Action::Return(0)
        );
        let Action::Return(q) = a.syscall(&m, 9, [0, 0x8000, 3, 0x22, u64::MAX, 0]) else {
            panic!()
        };
        assert_eq!(q, p);
        let mut b = [1u8; 5];
        m.read(q as u64, &mut b).unwrap();
        assert_eq!(b, [0; 5]);
        // beyond what is left: ENOMEM, inside the guest
        assert_eq!(
            a.syscall(&m, 9, [0, 0x100000, 3, 0x22, u64::MAX, 0]),
            Action::Return(-e::ENOMEM)
        );
        // file-backed: refused
        assert_eq!(
            a.syscall(&m, 9, [0, 0x1000, 3, 0x2, 3, 0]),
            Action::Return(-e::ENODEV)
        );
    }

    #[test]
    fn brk_moves_within_its_limit() {
        let (mut a, m) = abi();
        assert_eq!(
            a.syscall(&m, 12, [0, 0, 0, 0, 0, 0]),
            Action::Return(0x10000)
        );
        assert_eq!(
            a.syscall(&m, 12, [0x18000, 0, 0, 0, 0, 0]),
            Action::Return(0x18000)
        );
        assert_eq!(
            a.syscall(&m, 12, [0x90000, 0, 0, 0, 0, 0]),
            Action::Return(0x18000)
        );
    }

    #[test]
    fn unknown_syscalls_are_enosys_and_named() {
        let (mut a, m) = abi();
        assert_eq!(a.syscall(&m, 56, [0; 6]), Action::Return(-e::ENOSYS));
        assert_eq!(a.first_unsupported, Some(56));
        assert_eq!(syscall_name(56), "clone");
        assert_eq!(a.counters()["abi.enosys"], 1);
        assert_eq!(a.syscall(&m, 231, [7, 0, 0, 0, 0, 0]), Action::Exit(7));
    }
}
