//! Supervision of a child process: wait for it through a pidfd while draining its pipes with
//! bounded memory, kill it (and its process group) on timeout or cancellation, and reap it with
//! `wait4` for its resource usage. Shared by every backend that runs the program as a process.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vbench_results::Exit;

/// Captured standard output kept per run; the rest is counted and dropped.
pub const STDOUT_CAP: usize = 1 << 20;
/// Bytes of standard error kept (the last ones).
pub const STDERR_TAIL: usize = 4096;
/// Longest single wait, so cancellation is noticed promptly.
const POLL_SLICE: Duration = Duration::from_millis(50);
/// The first wait while the pipes are not watched; each next one is twice as long. Waits
/// shorter than the scheduler tick were measured to slow a short run by about 20 us on a VM
/// (the timer is reprogrammed on entry and exit), so the first is longer than a tick.
const QUIET_FIRST: Duration = Duration::from_millis(10);
/// Capacity asked for the stdout pipe: a program that prints up to this much never waits for
/// the harness, which drains the pipe when woken (at exit, or after [`QUIET_FIRST`]).
const PIPE_SIZE: libc::c_int = 1 << 20;
/// Bytes drained at one wake-up that make the pipes watched (a quarter of a default pipe).
const BUSY_PIPES: u64 = 16 << 10;

/// What supervising a child produced.
#[derive(Debug, Default)]
pub struct Supervised {
    /// How it ended.
    pub exit: Exit,
    /// CPU time in user mode, ns.
    pub user_ns: u64,
    /// CPU time in kernel mode, ns.
    pub sys_ns: u64,
    /// Peak RSS, KiB.
    pub max_rss_kib: u64,
    /// Captured stdout (bounded).
    pub stdout: Vec<u8>,
    /// All stdout bytes seen.
    pub stdout_bytes: u64,
    /// The tail of stderr.
    pub stderr_tail: Vec<u8>,
    /// All stderr bytes seen.
    pub stderr_bytes: u64,
    /// When the child was reaped.
    pub reaped_at: Option<Instant>,
}

/// Streams to drain while the child runs.
pub struct Pipes {
    /// Read end of the child's stdout.
    pub stdout: Option<OwnedFd>,
    /// Read end of the child's stderr.
    pub stderr: Option<OwnedFd>,
    /// Watch the pipes from the start: the child is known to write a lot.
    pub chatty: bool,
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl with integer arguments on an fd owned by the caller.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Reads what is available on `fd`; returns false at end of file or on error.
fn drain(fd: RawFd, sink: &mut dyn FnMut(&[u8])) -> bool {
    let mut buf = [0u8; 16384];
    loop {
        // SAFETY: reading into a stack buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return false,
            n if n > 0 => sink(&buf[..n as usize]),
            _ => {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => true,
                    _ => false,
                };
            }
        }
    }
}

/// Supervises child `pid` until it exits, the timeout passes, or `cancel` is set. When
/// `group` is true the child leads its own process group and the whole group is killed.
pub fn supervise(
    pid: libc::pid_t,
    pipes: Pipes,
    timeout: Option<Duration>,
    cancel: Option<&AtomicBool>,
    group: bool,
) -> io::Result<Supervised> {
    let pidfd = pidfd_open(pid)?;
    let start = Instant::now();
    let mut out = Supervised::default();
    let mut stdout = pipes.stdout;
    let mut stderr = pipes.stderr;
    for fd in stdout.iter().chain(stderr.iter()) {
        set_nonblocking(fd.as_raw_fd());
    }
    if let Some(fd) = &stdout {
        // SAFETY: fcntl with integer arguments on a pipe we own; failure (a lower
        // pipe-max-size) leaves the default capacity, which is still correct, only slower.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    }
    let mut killed: Option<Exit> = None;
    // The pipes are watched only once the child writes enough to fill them: a program that
    // prints a line and exits then wakes the harness once (at its exit) instead of twice, a
    // wake-up that costs tens of microseconds on a virtual machine. Until then the pipes are
    // drained on each wake-up, which come at growing intervals from QUIET_FIRST.
    let mut watch_pipes = pipes.chatty;
    let mut quiet = QUIET_FIRST;
    loop {
        let mut fds = vec![libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if watch_pipes {
            for fd in stdout.iter().chain(stderr.iter()) {
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        let mut slice = if watch_pipes { POLL_SLICE } else { quiet };
        quiet = (quiet * 2).min(POLL_SLICE);
        if let (Some(t), None) = (timeout, killed) {
            slice = slice.min(t.saturating_sub(start.elapsed()));
        }
        let ts = libc::timespec {
            tv_sec: slice.as_secs() as libc::time_t,
            tv_nsec: slice.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` is a valid array of pollfd of the given length, `ts` a valid timeout,
        // and a null signal mask leaves the mask as it is (plain poll with ns resolution).
        let n = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        // Drain the pipes whether or not poll flagged them: cheap, and keeps the child moving.
        let before = out.stdout_bytes + out.stderr_bytes;
        out.drain_pipes(&mut stdout, &mut stderr);
        if out.stdout_bytes + out.stderr_bytes - before >= BUSY_PIPES {
            watch_pipes = true;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            break; // exited (not reaped yet, so the pid cannot be reused under us)
        }
        if killed.is_none() {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                killed = Some(Exit::Interrupted);
            } else if let Some(t) = timeout.filter(|t| start.elapsed() >= *t) {
                killed = Some(Exit::Timeout {
                    after_ms: t.as_millis() as u64,
                });
            }
            if killed.is_some() {
                kill(&pidfd, pid, group);
            }
        }
    }
    // The child is gone; its descendants may still hold the pipes, so do not wait for EOF.
    // In a killed group they are dead or dying: take what is buffered and stop.
    if group {
        // SAFETY: signalling our own child's process group, which still exists until reaped.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value to be overwritten by wait4.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    out.reaped_at = Some(Instant::now());
    out.drain_pipes(&mut stdout, &mut stderr);
    out.user_ns = tv_ns(ru.ru_utime);
    out.sys_ns = tv_ns(ru.ru_stime);
    out.max_rss_kib = ru.ru_maxrss.max(0) as u64;
    out.exit = killed.unwrap_or_else(|| exit_of(status));
    Ok(out)
}

impl Supervised {
    /// Takes what is buffered in the pipes: stdout up to [`STDOUT_CAP`] (the rest counted),
    /// the last [`STDERR_TAIL`] bytes of stderr. A pipe at end of file is closed.
    fn drain_pipes(&mut self, stdout: &mut Option<OwnedFd>, stderr: &mut Option<OwnedFd>) {
        let mut keep_out = |b: &[u8]| {
            self.stdout_bytes += b.len() as u64;
            let room = STDOUT_CAP.saturating_sub(self.stdout.len());
            self.stdout.extend_from_slice(&b[..b.len().min(room)]);
        };
        if stdout
            .as_ref()
            .is_some_and(|fd| !drain(fd.as_raw_fd(), &mut keep_out))
        {
            *stdout = None;
        }
        let tail = &mut self.stderr_tail;
        let err_bytes = &mut self.stderr_bytes;
        let mut keep_err = |b: &[u8]| {
            *err_bytes += b.len() as u64;
            tail.extend_from_slice(b);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        };
        if stderr
            .as_ref()
            .is_some_and(|fd| !drain(fd.as_raw_fd(), &mut keep_err))
        {
            *stderr = None;
        }
    }
}

fn kill(pidfd: &OwnedFd, pid: libc::pid_t, group: bool) {
    // SAFETY: pidfd_send_signal on a pidfd we own; the child is not reaped, so it is ours.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
    if group {
        // SAFETY: the child leads its own group, which exists while the child is unreaped.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

pub(crate) fn tv_ns(tv: libc::timeval) -> u64 {
    (tv.tv_sec.max(0) as u64) * 1_000_000_000 + (tv.tv_usec.max(0) as u64) * 1000
}

/// Decodes a wait status.
pub fn exit_of(status: i32) -> Exit {
    if libc::WIFSIGNALED(status) {
        Exit::Signal {
            signal: libc::WTERMSIG(status),
        }
    } else {
        Exit::Code {
            code: libc::WEXITSTATUS(status),
        }
    }
}
