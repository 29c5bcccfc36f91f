//! Reads, writes, descriptors, pipes, polling, terminal ioctls and sockets. Guest buffers go
//! to the host kernel in place (checked, never copied), except for the captured outputs.

use super::errno::host;
use super::fd::Fd;
use super::MAX_IO;
use super::{buf_in, buf_out, get, opt_in, opt_out, put, Abi, Action, Errno, GuestMem, Policy};
use std::os::fd::AsRawFd;

type A = [u64; 6];
type Sys = Result<i64, Errno>;

pub(super) fn read(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let p = buf_out(mem, a[1], a[2])?;
    // `p` holds a[2] checked, writable guest bytes
    abi.host_call(libc::SYS_read, [fd as u64, p as u64, a[2], 0, 0, 0])
}

/// write: a captured output keeps the bytes; a host descriptor writes them, and a write to a
/// pipe nobody reads raises SIGPIPE, as natively (`yes | head -1` ends).
pub(super) fn write(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    let p = buf_in(mem, a[1], a[2])?;
    match abi.fds.get(a[0])? {
        Fd::Out(i) => {
            let i = *i;
            let mut tmp = vec![0u8; (a[2] as usize).min(MAX_IO)];
            mem.read(a[1], &mut tmp)?;
            abi.outputs[i].put(&tmp);
            Ok(Action::Return(tmp.len() as i64))
        }
        Fd::Host(f) => {
            // `p` holds a[2] checked, readable guest bytes
            let fd = f.as_raw_fd() as u64;
            let r = abi.host_call(libc::SYS_write, [fd, p as u64, a[2], 0, 0, 0]);
            abi.written(r)
        }
    }
}

impl Abi {
    /// The guest's view of a host write's result: EPIPE also raises SIGPIPE (a guest that is
    /// a host process of its own got the host's SIGPIPE already).
    fn written(&mut self, r: Sys) -> Result<Action, Errno> {
        match r {
            Err(Errno::EPIPE) if !self.hosted_process() => {
                Ok(self.raise(libc::SIGPIPE, Errno::EPIPE.ret()))
            }
            r => r.map(Action::Return),
        }
    }
}

pub(super) fn pread64(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let p = buf_out(mem, a[1], a[2])?;
    // `p` holds a[2] checked, writable guest bytes
    abi.host_call(libc::SYS_pread64, [fd as u64, p as u64, a[2], a[3], 0, 0])
}

pub(super) fn pwrite64(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    let fd = abi.fds.host(a[0])?;
    let p = buf_in(mem, a[1], a[2])?;
    // `p` holds a[2] checked, readable guest bytes
    let r = abi.host_call(libc::SYS_pwrite64, [fd as u64, p as u64, a[2], a[3], 0, 0]);
    abi.written(r)
}

/// The guest's iovec array as host iovecs over checked guest buffers.
fn iovecs(mem: &dyn GuestMem, iov: u64, cnt: u64, write: bool) -> Result<Vec<libc::iovec>, Errno> {
    if cnt > libc::UIO_MAXIOV as u64 {
        return Err(Errno::EINVAL);
    }
    let mut v = Vec::with_capacity(cnt as usize);
    for i in 0..cnt {
        let [base, len]: [u64; 2] = get(mem, iov + 16 * i)?;
        let p = if write {
            buf_out(mem, base, len)?
        } else {
            buf_in(mem, base, len)?.cast_mut()
        };
        v.push(libc::iovec {
            iov_base: p.cast(),
            iov_len: len as usize,
        });
    }
    Ok(v)
}

/// readv, preadv, writev and pwritev on host descriptor `fd`, over the iovecs `v` made of the
/// guest's `a[1]`. With other guest threads the call is deferred, with the guest's own array
/// (checked: its memory is at its own addresses then).
fn iov_call(abi: &mut Abi, nr: i64, fd: i32, v: &[libc::iovec], a: A) -> Sys {
    if abi.threads > 1 {
        return abi.host_call(nr, [fd as u64, a[1], a[2], a[3], 0, 0]);
    }
    // SAFETY: every iovec covers checked guest memory, writable where the call writes.
    host(unsafe { libc::syscall(nr, fd, v.as_ptr(), v.len(), a[3], 0) })
}

pub(super) fn readv(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let v = iovecs(mem, a[1], a[2], true)?;
    iov_call(abi, libc::SYS_readv, fd, &v, a)
}

pub(super) fn preadv(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let v = iovecs(mem, a[1], a[2], true)?;
    iov_call(abi, libc::SYS_preadv, fd, &v, a)
}

pub(super) fn writev(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    let v = iovecs(mem, a[1], a[2], false)?;
    match abi.fds.get(a[0])? {
        Fd::Out(i) => {
            let i = *i;
            let mut n = 0;
            for k in 0..a[2] {
                let [base, len]: [u64; 2] = get(mem, a[1] + 16 * k)?;
                let mut tmp = vec![0u8; len as usize];
                mem.read(base, &mut tmp)?;
                abi.outputs[i].put(&tmp);
                n += tmp.len();
            }
            Ok(Action::Return(n as i64))
        }
        Fd::Host(f) => {
            let fd = f.as_raw_fd();
            let r = iov_call(abi, libc::SYS_writev, fd, &v, a);
            abi.written(r)
        }
    }
}

pub(super) fn pwritev(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    let fd = abi.fds.host(a[0])?;
    let v = iovecs(mem, a[1], a[2], false)?;
    let r = iov_call(abi, libc::SYS_pwritev, fd, &v, a);
    abi.written(r)
}

pub(super) fn lseek(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    match abi.fds.get(a[0])? {
        Fd::Out(_) => Err(Errno::ESPIPE),
        // SAFETY: lseek on a host descriptor the guest owns.
        Fd::Host(f) => host(unsafe { libc::lseek(f.as_raw_fd(), a[1] as i64, a[2] as i32) }),
    }
}

pub(super) fn close(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    abi.fds.close(a[0]).map(|_| 0)
}

pub(super) fn dup(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    let new = abi.fds.dup_of(a[0])?;
    abi.fds.install(new, false, 0).map(|n| n as i64)
}

pub(super) fn dup2(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    if a[0] == a[1] {
        abi.fds.get(a[0])?;
        return Ok(a[0] as i64);
    }
    dup_to(abi, a[0], a[1], false)
}

pub(super) fn dup3(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    if a[0] == a[1] || a[2] & !(libc::O_CLOEXEC as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    dup_to(abi, a[0], a[1], a[2] != 0)
}

fn dup_to(abi: &mut Abi, from: u64, to: u64, cloexec: bool) -> Sys {
    let new = abi.fds.dup_of(from)?;
    let to = usize::try_from(to)
        .ok()
        .filter(|t| *t < super::fd::MAX_FDS)
        .ok_or(Errno::EBADF)?;
    abi.fds.put(to, new, cloexec);
    Ok(to as i64)
}

/// fcntl: descriptor flags are the guest's, status flags and locks the host file's.
pub(super) fn fcntl(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let (fd, cmd, arg) = (a[0], a[1] as i32, a[2]);
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let min = usize::try_from(arg)
                .ok()
                .filter(|m| *m < super::fd::MAX_FDS)
                .ok_or(Errno::EINVAL)?;
            let new = abi.fds.dup_of(fd)?;
            let n = abi.fds.install(new, cmd == libc::F_DUPFD_CLOEXEC, min)?;
            Ok(n as i64)
        }
        libc::F_GETFD => Ok(i64::from(abi.fds.cloexec(fd)?)),
        libc::F_SETFD => abi
            .fds
            .set_cloexec(fd, arg & libc::FD_CLOEXEC as u64 != 0)
            .map(|_| 0),
        libc::F_GETFL | libc::F_SETFL => match abi.fds.get(fd)? {
            Fd::Out(_) if cmd == libc::F_GETFL => Ok(i64::from(libc::O_WRONLY)),
            Fd::Out(_) => Ok(0),
            // SAFETY: F_GETFL/F_SETFL take an integer argument.
            Fd::Host(f) => host(i64::from(unsafe { libc::fcntl(f.as_raw_fd(), cmd, arg) })),
        },
        _ if abi.policy == Policy::Confined => Err(Errno::EINVAL),
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => {
            let fd = abi.fds.host(fd)?;
            let p = buf_out(mem, arg, std::mem::size_of::<libc::flock>() as u64)?;
            // SAFETY: `p` is a checked, writable struct flock of the guest.
            host(i64::from(unsafe { libc::fcntl(fd, cmd, p) }))
        }
        libc::F_GETPIPE_SZ | libc::F_SETPIPE_SZ | libc::F_GETLEASE | libc::F_SETLEASE => {
            let fd = abi.fds.host(fd)?;
            // SAFETY: these commands take an integer argument.
            host(i64::from(unsafe { libc::fcntl(fd, cmd, arg) }))
        }
        _ => Err(Errno::EINVAL),
    }
}

/// ioctl: the terminal's requests (and FIONREAD, FIONBIO) on host descriptors, under the host
/// policy; nothing is a terminal when confined.
pub(super) fn ioctl(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = match abi.fds.get(a[0])? {
        Fd::Out(_) => return Err(Errno::ENOTTY),
        Fd::Host(f) => f.as_raw_fd(),
    };
    if abi.policy == Policy::Confined {
        return Err(Errno::ENOTTY);
    }
    let req = a[1] as libc::Ioctl;
    // the size of the argument each request reads or writes (None: an integer argument)
    let (size, out): (Option<u64>, bool) = match req {
        libc::TCGETS => (Some(36), true),
        libc::TCSETS | libc::TCSETSW | libc::TCSETSF => (Some(36), false),
        libc::TIOCGWINSZ => (Some(8), true),
        libc::TIOCSWINSZ => (Some(8), false),
        libc::TIOCGPGRP | libc::TIOCGSID | libc::FIONREAD | libc::TIOCOUTQ => (Some(4), true),
        libc::TIOCSPGRP | libc::FIONBIO => (Some(4), false),
        libc::TCFLSH | libc::TCXONC | libc::TCSBRK | libc::TIOCSCTTY | libc::TIOCNOTTY => {
            (None, false)
        }
        libc::FIOCLEX | libc::FIONCLEX => {
            abi.fds.set_cloexec(a[0], req == libc::FIOCLEX)?;
            return Ok(0);
        }
        _ => return Err(Errno::ENOTTY),
    };
    let arg = match size {
        Some(n) if out => buf_out(mem, a[2], n)? as u64,
        Some(n) => buf_in(mem, a[2], n)? as u64,
        None => a[2],
    };
    // SAFETY: the argument is an integer or a checked guest buffer of the request's size.
    host(i64::from(unsafe { libc::ioctl(fd, req, arg) }))
}

/// pipe and pipe2: a host pipe whose two ends are the guest's.
pub(super) fn pipe2(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let flags = a[1] as i32;
    if flags & !(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_DIRECT) != 0 {
        return Err(Errno::EINVAL);
    }
    buf_out(mem, a[0], 8)?;
    let mut p = [0i32; 2];
    // SAFETY: a valid two-int out-buffer.
    if unsafe { libc::pipe2(p.as_mut_ptr(), (flags & !libc::O_CLOEXEC) | libc::O_CLOEXEC) } != 0 {
        return Err(Errno::last());
    }
    let ends = abi.fds.install_pair(p, flags & libc::O_CLOEXEC != 0)?;
    put(mem, a[0], &ends)?;
    Ok(0)
}

pub(super) fn pipe(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    pipe2(abi, mem, [a[0], 0, 0, 0, 0, 0])
}

/// poll and ppoll: the guest's pollfd array with its descriptors translated (a captured
/// output is always writable). `nr` and `rest` are the host call that waits, after its first
/// two arguments (the host array and its length).
fn poll_fds(abi: &mut Abi, mem: &dyn GuestMem, fds: u64, n: u64, nr: i64, rest: [u64; 4]) -> Sys {
    if n > super::fd::MAX_FDS as u64 {
        return Err(Errno::EINVAL);
    }
    let guest: Vec<[i32; 2]> = (0..n)
        .map(|i| get(mem, fds + 8 * i))
        .collect::<Result<_, _>>()?;
    buf_out(mem, fds, n * 8)?;
    let mut hostfds: Vec<libc::pollfd> = Vec::with_capacity(n as usize);
    let mut ready_out = 0;
    for g in &guest {
        let (fd, events) = (g[0], g[1] as i16);
        let host_fd = if fd < 0 {
            -1
        } else {
            match abi.fds.get(fd as u64) {
                Ok(Fd::Host(f)) => f.as_raw_fd(),
                Ok(Fd::Out(_)) => {
                    ready_out += 1;
                    -1
                }
                Err(_) => -1,
            }
        };
        hostfds.push(libc::pollfd {
            fd: host_fd,
            events,
            revents: 0,
        });
    }
    let at = hostfds.as_mut_ptr() as u64;
    // something is ready now (a captured output): poll the rest without waiting
    let (nr, args) = if ready_out > 0 {
        (libc::SYS_poll, [at, n, 0, 0, 0, 0])
    } else {
        (nr, [at, n, rest[0], rest[1], rest[2], rest[3]])
    };
    let post: super::Post = Box::new(move |abi, mem, rc| {
        let mut ready = super::errno::raw(rc)?;
        let mut guest = guest;
        for (g, h) in guest.iter_mut().zip(&hostfds) {
            let fd = g[0];
            let mut rev = h.revents;
            if fd >= 0 {
                match abi.fds.get(fd as u64) {
                    Ok(Fd::Out(_)) => {
                        rev = (g[1] as i16) & libc::POLLOUT;
                        ready += i64::from(rev != 0);
                    }
                    Err(_) => {
                        rev = libc::POLLNVAL;
                        ready += 1;
                    }
                    Ok(Fd::Host(_)) => {}
                }
            }
            g[1] = (g[1] & 0xffff) | (i32::from(rev as u16) << 16);
        }
        for (i, g) in guest.iter().enumerate() {
            put(mem, fds + 8 * i as u64, g)?;
        }
        Ok(ready)
    });
    abi.host_call_then(nr, args, post, mem)
}

pub(super) fn poll(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    poll_fds(
        abi,
        mem,
        a[0],
        a[1],
        libc::SYS_poll,
        [a[2] & 0xffff_ffff, 0, 0, 0],
    )
}

/// ppoll: the system call itself, not glibc's ppoll, which copies the timespec with a plain
/// load (a SIGBUS where the guest's pointer is a file page past its end, which the kernel's
/// copy makes EFAULT); the kernel's update of the remaining time is what the guest's own ppoll
/// sees natively. The guest's signal mask is not applied to the host thread (its signals are
/// not the host's).
pub(super) fn ppoll(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let ts = opt_in(mem, a[2], 16)?;
    poll_fds(abi, mem, a[0], a[1], libc::SYS_ppoll, [ts as u64, 0, 8, 0])
}

/// sendfile(out, in, offset, count): in the host, or through a bounce buffer to a captured
/// output (busybox cat uses it).
pub(super) fn sendfile(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    let inp = abi.fds.host(a[1])?;
    let off = opt_out(mem, a[2], 8)?;
    match abi.fds.get(a[0])? {
        Fd::Host(f) => {
            // SAFETY: `off` is null or a checked, writable guest off_t.
            let rc = unsafe { libc::sendfile(f.as_raw_fd(), inp, off.cast(), a[3] as usize) };
            abi.written(host(rc as i64))
        }
        Fd::Out(i) => {
            let i = *i;
            let mut tmp = vec![0u8; (a[3] as usize).min(MAX_IO)];
            let n = if off.is_null() {
                // SAFETY: a valid buffer of tmp.len() bytes.
                unsafe { libc::read(inp, tmp.as_mut_ptr().cast(), tmp.len()) }
            } else {
                let o: i64 = get(mem, a[2])?;
                // SAFETY: a valid buffer of tmp.len() bytes.
                let n = unsafe { libc::pread(inp, tmp.as_mut_ptr().cast(), tmp.len(), o) };
                if n > 0 {
                    put(mem, a[2], &(o + n as i64))?;
                }
                n
            };
            let n = host(n as i64)?;
            abi.outputs[i].put(&tmp[..n as usize]);
            Ok(Action::Return(n))
        }
    }
}

pub(super) fn copy_file_range(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let (fin, fout) = (abi.fds.host(a[0])?, abi.fds.host(a[2])?);
    let (oin, oout) = (opt_out(mem, a[1], 8)?, opt_out(mem, a[3], 8)?);
    // SAFETY: the offsets are null or checked, writable guest off_t values.
    host(unsafe { libc::syscall(libc::SYS_copy_file_range, fin, oin, fout, oout, a[4], a[5]) })
}

/// Calls that take a descriptor and integers only: fsync, fdatasync, ftruncate, fallocate,
/// fadvise64, flock, fchmod, fchown, syncfs, listen, shutdown.
pub(super) fn fd_ints(abi: &mut Abi, _: &dyn GuestMem, nr: i64, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    // SAFETY: these calls take integer arguments only.
    host(unsafe { libc::syscall(nr, fd, a[1], a[2], a[3]) })
}

// ---- sockets (host policy only) ----

pub(super) fn socket(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    let cloexec = a[1] as i32 & libc::SOCK_CLOEXEC != 0;
    // SAFETY: socket takes integers; the result is a fresh descriptor.
    let fd = host(i64::from(unsafe {
        libc::socket(a[0] as i32, a[1] as i32 | libc::SOCK_CLOEXEC, a[2] as i32)
    }))?;
    abi.fds.install_new(fd, cloexec)
}

pub(super) fn socketpair(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    buf_out(mem, a[3], 8)?;
    let mut sv = [0i32; 2];
    let cloexec = a[1] as i32 & libc::SOCK_CLOEXEC != 0;
    // SAFETY: a valid two-int out-buffer.
    if unsafe {
        libc::socketpair(
            a[0] as i32,
            a[1] as i32 | libc::SOCK_CLOEXEC,
            a[2] as i32,
            sv.as_mut_ptr(),
        )
    } != 0
    {
        return Err(Errno::last());
    }
    let ends = abi.fds.install_pair(sv, cloexec)?;
    put(mem, a[3], &ends)?;
    Ok(0)
}

/// connect and bind: a socket address of the given length.
pub(super) fn sockaddr_in(abi: &mut Abi, mem: &dyn GuestMem, nr: i64, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let sa = buf_in(mem, a[1], a[2])?;
    if nr == libc::SYS_connect {
        // may wait for the peer
        return abi.host_call(nr, [fd as u64, sa as u64, a[2], 0, 0, 0]);
    }
    // SAFETY: `sa` holds a[2] checked, readable guest bytes.
    host(unsafe { libc::syscall(nr, fd, sa, a[2]) })
}

/// A socket address out-buffer with its in/out length: (address, length pointer).
fn sockaddr_out(mem: &dyn GuestMem, sa: u64, len: u64) -> Result<(*mut u8, *mut u8), Errno> {
    if sa == 0 {
        return Ok((std::ptr::null_mut(), opt_out(mem, len, 4)?));
    }
    let n: u32 = get(mem, len)?;
    Ok((buf_out(mem, sa, u64::from(n))?, buf_out(mem, len, 4)?))
}

/// getsockname and getpeername.
pub(super) fn sockname(abi: &mut Abi, mem: &dyn GuestMem, nr: i64, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let (sa, len) = sockaddr_out(mem, a[1], a[2])?;
    // SAFETY: checked guest buffers of the lengths the kernel is told.
    host(unsafe { libc::syscall(nr, fd, sa, len) })
}

pub(super) fn accept4(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let (sa, len) = sockaddr_out(mem, a[1], a[2])?;
    let cloexec = a[3] as i32 & libc::SOCK_CLOEXEC != 0;
    // checked guest buffers; the result is a fresh descriptor, the guest's lowest free one
    let flags = (a[3] as i32 | libc::SOCK_CLOEXEC) as u64;
    let args = [fd as u64, sa as u64, len as u64, flags, 0, 0];
    let post: super::Post = Box::new(move |abi, _, n| {
        let n = super::errno::raw(n)?;
        abi.fds.install_new(n, cloexec)
    });
    abi.host_call_then(libc::SYS_accept4, args, post, mem)
}

pub(super) fn accept(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    accept4(abi, mem, [a[0], a[1], a[2], 0, 0, 0])
}

pub(super) fn sendto(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    let fd = abi.fds.host(a[0])?;
    let buf = buf_in(mem, a[1], a[2])?;
    let sa = opt_in(mem, a[4], a[5])?;
    // checked guest buffers of the lengths given
    let args = [fd as u64, buf as u64, a[2], a[3], sa as u64, a[5]];
    let r = abi.host_call(libc::SYS_sendto, args);
    abi.written(r)
}

pub(super) fn recvfrom(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let buf = buf_out(mem, a[1], a[2])?;
    let (sa, len) = sockaddr_out(mem, a[4], a[5])?;
    // checked guest buffers of the lengths given
    let args = [fd as u64, buf as u64, a[2], a[3], sa as u64, len as u64];
    abi.host_call(libc::SYS_recvfrom, args)
}

pub(super) fn setsockopt(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let v = buf_in(mem, a[3], a[4])?;
    // SAFETY: a checked guest buffer of the length given.
    host(unsafe { libc::syscall(libc::SYS_setsockopt, fd, a[1], a[2], v, a[4]) })
}

pub(super) fn getsockopt(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let (v, len) = sockaddr_out(mem, a[3], a[4])?;
    // SAFETY: checked guest buffers of the lengths the kernel is told.
    host(unsafe { libc::syscall(libc::SYS_getsockopt, fd, a[1], a[2], v, len) })
}

/// sendmsg and recvmsg without ancillary data (passing descriptors would hand the guest host
/// descriptor numbers): the message's name and iovecs translated.
pub(super) fn msg(abi: &mut Abi, mem: &dyn GuestMem, nr: i64, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let m: [u64; 7] = get(mem, a[1])?; // name, namelen, iov, iovlen, control, controllen, flags
    if m[5] != 0 {
        return Err(Errno::EINVAL);
    }
    let recv = nr == libc::SYS_recvmsg;
    let namelen = m[1] & 0xffff_ffff;
    let name = if recv {
        opt_out(mem, m[0], namelen)?
    } else {
        opt_in(mem, m[0], namelen)?.cast_mut()
    };
    let mut iov = iovecs(mem, m[2], m[3], recv)?;
    if abi.threads > 1 {
        // deferred, with the guest's own header (checked: its memory is at its own addresses
        // then), which the kernel updates as natively
        return abi.host_call(nr, [fd as u64, a[1], a[2], 0, 0, 0]);
    }
    // SAFETY: a zeroed msghdr is valid; its buffers are checked guest memory.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = name.cast();
    h.msg_namelen = namelen as u32;
    h.msg_iov = iov.as_mut_ptr();
    h.msg_iovlen = iov.len();
    // SAFETY: `h` describes checked guest buffers.
    let rc = host(unsafe { libc::syscall(nr, fd, &mut h, a[2]) })?;
    if recv {
        put(mem, a[1] + 8, &h.msg_namelen)?;
        put(mem, a[1] + 48, &h.msg_flags)?;
    }
    Ok(rc)
}

/// A duplicate of the host descriptor behind guest descriptor `fd`, which stays open while the
/// guest's table changes (a file mapping keeps its file).
pub(super) fn keep(abi: &Abi, fd: u64) -> Result<std::os::fd::OwnedFd, Errno> {
    super::fd::dup_host(abi.fds.host(fd)?)
}

// ---- event descriptors and multiplexing ----

/// eventfd2(initval, flags), epoll_create1(flags), timerfd_create(clock, flags): a fresh host
/// descriptor of the guest's (close-on-exec in the host; the guest's flag as it asked).
pub(super) fn new_event_fd(abi: &mut Abi, _: &dyn GuestMem, nr: i64, a: A) -> Sys {
    let (arg0, flags) = match nr {
        libc::SYS_epoll_create1 => (a[0], a[0]),
        _ => (a[0], a[1]),
    };
    let cloexec = flags as i32 & libc::O_CLOEXEC != 0;
    let n = if nr == libc::SYS_epoll_create1 {
        // SAFETY: integer arguments only; the result is a fresh descriptor.
        host(unsafe { libc::syscall(nr, arg0 | libc::O_CLOEXEC as u64) })?
    } else {
        // SAFETY: integer arguments only; the result is a fresh descriptor.
        host(unsafe { libc::syscall(nr, arg0, flags | libc::O_CLOEXEC as u64) })?
    };
    abi.fds.install_new(n, cloexec)
}

/// epoll_ctl(epfd, op, fd, event): both descriptors translated; the event's data is the
/// guest's own (the kernel hands it back untouched).
pub(super) fn epoll_ctl(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let ep = abi.fds.host(a[0])?;
    let fd = abi.fds.host(a[2])?;
    let ev = opt_in(mem, a[3], 12)?;
    // SAFETY: `ev` is null or a checked 12-byte epoll_event of the guest.
    host(unsafe { libc::syscall(libc::SYS_epoll_ctl, ep, a[1], fd, ev) })
}

/// epoll_wait and epoll_pwait(epfd, events, maxevents, timeout[, sigmask]): the guest's signal
/// mask is not the host thread's, so the wait takes none.
pub(super) fn epoll_wait(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let ep = abi.fds.host(a[0])?;
    let max = a[2] as i32;
    if max <= 0 || max > 1 << 20 {
        return Err(Errno::EINVAL);
    }
    let evs = buf_out(mem, a[1], max as u64 * 12)?;
    // `evs` has room for `max` 12-byte events of the guest
    let args = [ep as u64, evs as u64, max as u64, a[3] & 0xffff_ffff, 0, 0];
    abi.host_call(libc::SYS_epoll_wait, args)
}

/// timerfd_settime(fd, flags, new, old) and timerfd_gettime(fd, cur).
pub(super) fn timerfd_settime(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let new = buf_in(mem, a[2], 32)?;
    let old = opt_out(mem, a[3], 32)?;
    // SAFETY: checked guest itimerspecs (32 bytes each; `old` may be null).
    host(unsafe { libc::syscall(libc::SYS_timerfd_settime, fd, a[1], new, old) })
}
pub(super) fn timerfd_gettime(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let fd = abi.fds.host(a[0])?;
    let cur = buf_out(mem, a[1], 32)?;
    // SAFETY: a checked, writable guest itimerspec.
    host(unsafe { libc::syscall(libc::SYS_timerfd_gettime, fd, cur) })
}

/// select and pselect6: the guest's fd_sets (up to `nfds` bits) translated to host descriptor
/// sets and back; a captured output is always writable.
fn select_sets(abi: &mut Abi, mem: &dyn GuestMem, a: A, nr: i64, timeout: u64, sixth: u64) -> Sys {
    let nfds = a[0] as i32;
    if !(0..=super::fd::MAX_FDS as i32).contains(&nfds) {
        return Err(Errno::EINVAL);
    }
    let bytes = (nfds as u64).div_ceil(64) * 8;
    let mut guest: [Vec<u8>; 3] = Default::default();
    for (k, set) in guest.iter_mut().enumerate() {
        if a[1 + k] != 0 {
            *set = vec![0u8; bytes as usize];
            mem.read(a[1 + k], set)?;
        }
    }
    let bit = |s: &[u8], i: usize| s.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
    // the host's sets and a zero timeout, in a box the call's pointers point into
    // SAFETY: zeroed fd_sets are empty sets.
    let mut hs: Box<([libc::fd_set; 3], [i64; 2])> =
        Box::new((unsafe { std::mem::zeroed() }, [0; 2]));
    let mut map: Vec<(usize, i32)> = Vec::new(); // guest fd -> host fd
    let mut hmax = -1;
    let mut out_ready: Vec<usize> = Vec::new();
    for g in 0..nfds as usize {
        let wanted: Vec<usize> = (0..3).filter(|k| bit(&guest[*k], g)).collect();
        if wanted.is_empty() {
            continue;
        }
        match abi.fds.get(g as u64)? {
            Fd::Out(_) => out_ready.push(g),
            Fd::Host(f) => {
                let h = f.as_raw_fd();
                if h >= libc::FD_SETSIZE as i32 {
                    return Err(Errno::EINVAL);
                }
                for k in &wanted {
                    // SAFETY: `h` is below FD_SETSIZE.
                    unsafe { libc::FD_SET(h, &mut hs.0[*k]) };
                }
                map.push((g, h));
                hmax = hmax.max(h);
            }
        }
    }
    let sets: Vec<u64> = (0..3)
        .map(|k| {
            if a[1 + k] == 0 {
                0
            } else {
                &mut hs.0[k] as *mut libc::fd_set as u64
            }
        })
        .collect();
    let n = (hmax + 1) as u64;
    let (nr, args) = if out_ready.iter().any(|g| bit(&guest[1], *g)) {
        // something is ready now: poll the rest without waiting
        let zero = hs.1.as_ptr() as u64;
        (libc::SYS_select, [n, sets[0], sets[1], sets[2], zero, 0])
    } else {
        (nr, [n, sets[0], sets[1], sets[2], timeout, sixth])
    };
    let post: super::Post = Box::new(move |_, mem, rc| {
        super::errno::raw(rc)?;
        let (hs, mut guest) = (hs, guest);
        let mut ready = 0;
        for set in guest.iter_mut() {
            set.iter_mut().for_each(|b| *b = 0);
        }
        for (k, set) in guest.iter_mut().enumerate() {
            if a[1 + k] == 0 {
                continue;
            }
            for &(g, h) in &map {
                // SAFETY: `h` is below FD_SETSIZE.
                if unsafe { libc::FD_ISSET(h, &hs.0[k]) } {
                    set[g / 8] |= 1 << (g % 8);
                    ready += 1;
                }
            }
            if k == 1 {
                for &g in &out_ready {
                    set[g / 8] |= 1 << (g % 8);
                    ready += 1;
                }
            }
            mem.write(a[1 + k], set)?;
        }
        Ok(ready)
    });
    abi.host_call_then(nr, args, post, mem)
}

pub(super) fn select(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    // the system call, not glibc's select, which converts the timeval with plain loads (see
    // ppoll)
    let tv = opt_out(mem, a[4], 16)?;
    select_sets(abi, mem, a, libc::SYS_select, tv as u64, 0)
}

pub(super) fn pselect6(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    // the guest's signal mask is not the host thread's: none is applied (a null sixth
    // argument); the system call, not glibc's pselect, which copies the timespec with a
    // plain load (see ppoll)
    let ts = opt_in(mem, a[4], 16)?;
    select_sets(abi, mem, a, libc::SYS_pselect6, ts as u64, 0)
}
