//! Supervision of a child process: wait for it through a pidfd while draining its pipes with
//! bounded memory, kill it (and its process group) on timeout or cancellation, and reap it with
//! `wait4` for its resource usage. Shared by every backend that runs the program as a process.
//! While a child runs its process group is in this vbench's [`registry`], so that what it
//! leaves behind when vbench is SIGKILLed is found by the next vbench.

pub mod registry;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
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

/// nix has no pidfd_open (0.30): the raw syscall.
fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn set_nonblocking(fd: &OwnedFd) {
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd, FcntlArg::F_SETFL(flags));
    }
}

/// Reads what is available on `fd`; returns false at end of file or on error.
fn drain(fd: &OwnedFd, sink: &mut dyn FnMut(&[u8])) -> bool {
    let mut buf = [0u8; 16384];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return false,
            Ok(n) => sink(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return true,
            Err(_) => return false,
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
    // blanked when this returns, after the child is reaped
    let _registered = registry::register(pid);
    let start = Instant::now();
    let mut out = Supervised::default();
    let mut stdout = pipes.stdout;
    let mut stderr = pipes.stderr;
    for fd in stdout.iter().chain(stderr.iter()) {
        set_nonblocking(fd);
    }
    if let Some(fd) = &stdout {
        // failure (a lower pipe-max-size) leaves the default capacity: correct, only slower
        let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    let mut killed: Option<Exit> = None;
    // The pipes are watched only once the child writes enough to fill them: a program that
    // prints a line and exits then wakes the harness once (at its exit) instead of twice, a
    // wake-up that costs tens of microseconds on a virtual machine. Until then the pipes are
    // drained on each wake-up, which come at growing intervals from QUIET_FIRST.
    let mut watch_pipes = pipes.chatty;
    let mut quiet = QUIET_FIRST;
    loop {
        let mut slice = if watch_pipes { POLL_SLICE } else { quiet };
        quiet = (quiet * 2).min(POLL_SLICE);
        if let (Some(t), None) = (timeout, killed) {
            slice = slice.min(t.saturating_sub(start.elapsed()));
        }
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if watch_pipes {
            fds.extend(
                stdout
                    .iter()
                    .chain(stderr.iter())
                    .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
            );
        }
        // ns resolution, no signal-mask change
        match ppoll(&mut fds, Some(slice.into()), None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let exited = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        drop(fds);
        // Drain the pipes whether or not poll flagged them: cheap, and keeps the child moving.
        let before = out.stdout_bytes + out.stderr_bytes;
        out.drain_pipes(&mut stdout, &mut stderr);
        if out.stdout_bytes + out.stderr_bytes - before >= BUSY_PIPES {
            watch_pipes = true;
        }
        if exited {
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
        // our own child's process group, which exists until the child is reaped
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let mut status = 0;
    // nix has no wait4 (the child's rusage comes with it): libc.
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
        if stdout.as_ref().is_some_and(|fd| !drain(fd, &mut keep_out)) {
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
        if stderr.as_ref().is_some_and(|fd| !drain(fd, &mut keep_err)) {
            *stderr = None;
        }
    }
}

fn kill(pidfd: &OwnedFd, pid: libc::pid_t, group: bool) {
    // nix has no pidfd_send_signal (0.30): the raw syscall.
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
        // the child leads its own group, which exists while the child is unreaped
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
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
