//! A guest in a process of its own that the backend forks from the harness (bt's translator
//! process): the child runs the backend's code on a copy of the harness's memory, the harness
//! supervises it as it supervises a native program (pipes, timeout, ^C, its process group,
//! wait4's resource usage), and what the child has to say besides its exit (counters, start-up,
//! a set-up error) comes back as a [`Report`] through a memory file both share.
//!
//! The harness may have other threads when it forks. The child has only the forking thread;
//! glibc's `fork()` takes and resets its allocator's locks around the fork, so the child may
//! allocate. Everything else that could be held by another thread (the environment's lock,
//! lazily initialised statics) is read or initialised before the fork by the caller.
//!
//! The child never returns into the harness's code: it ends with `_exit`, or by the signal its
//! guest died of (so the harness sees the same wait status as natively); a panic in it is
//! caught and becomes exit status 101.

use super::pin;
use super::process::{supervise, Pipes, Supervised};
use crate::{BackendError, Invocation, Stdio};
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What the child says besides its exit: written once, before it exits.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Backend counters.
    pub counters: BTreeMap<String, u64>,
    /// From the start of the run (before the fork) to the guest's first instruction.
    pub startup_ns: Option<u64>,
    /// The child could not set the guest up: what failed.
    pub error: Option<String>,
}

impl Report {
    /// The report as text: one `key\tvalue` line per item (counter names hold no tab or
    /// newline; an error's newlines are escaped).
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::new();
        for (k, v) in &self.counters {
            s.push_str(&format!("c\t{k}\t{v}\n"));
        }
        if let Some(t) = self.startup_ns {
            s.push_str(&format!("s\t{t}\n"));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(
                "e\t{}\n",
                e.replace('\\', "\\\\").replace('\n', "\\n")
            ));
        }
        s.into_bytes()
    }

    /// Parses [`Report::encode`]'s text; a malformed line is an error naming it.
    pub fn decode(b: &[u8]) -> Result<Report, String> {
        let text = std::str::from_utf8(b).map_err(|_| "the report is not UTF-8".to_string())?;
        let mut r = Report::default();
        for line in text.lines() {
            let bad = || format!("malformed report line {line:?}");
            let mut f = line.splitn(3, '\t');
            match (f.next(), f.next(), f.next()) {
                (Some("c"), Some(k), Some(v)) => {
                    r.counters
                        .insert(k.to_string(), v.parse().map_err(|_| bad())?);
                }
                (Some("s"), Some(v), None) => r.startup_ns = Some(v.parse().map_err(|_| bad())?),
                (Some("e"), Some(v), None) => {
                    r.error = Some(v.replace("\\n", "\n").replace("\\\\", "\\"));
                }
                _ => return Err(bad()),
            }
        }
        Ok(r)
    }
}

/// What the child gets: where to write its report, and when the run started.
pub struct Child {
    report: std::fs::File,
    /// The start of the run, taken in the harness just before the fork.
    pub t0: Instant,
    /// The child's own pid (the guest's first process).
    pub pid: i32,
}

impl Child {
    /// Another handle on the same report (for a thread of the child that may end it).
    pub fn share(&self) -> std::io::Result<Child> {
        Ok(Child {
            report: self.report.try_clone()?,
            t0: self.t0,
            pid: self.pid,
        })
    }

    /// Writes the report (once; a second call replaces the first).
    pub fn report(&mut self, r: &Report) {
        let _ = self.report.set_len(0);
        let _ = self.report.rewind();
        let _ = self.report.write_all(&r.encode());
    }
}

/// How the child ended, as the harness saw it, with its report.
pub struct Forked {
    /// What supervision measured (exit, times, peak RSS, outputs).
    pub sup: Supervised,
    /// Fork to reaping.
    pub wall: Duration,
    /// The child's report (empty when it died before writing one).
    pub report: Report,
    /// The harness's resident memory at the fork, KiB: pages the child's peak RSS counts
    /// although they are the harness's (the child is a copy of it).
    pub inherited_rss_kib: u64,
}

fn os(what: &'static str) -> impl Fn(std::io::Error) -> BackendError {
    move |source| BackendError::Os {
        what: what.into(),
        source,
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// Forks the child that runs `body` for `inv` and supervises it as a native program is: its
/// own process group and captured streams (or the harness's, with [`Stdio::Inherit`]), pinned
/// to `inv.cpu`, killed with its group on timeout or cancellation. `body` must not return
/// control to the harness: it runs in the child and ends it with its return value as the exit
/// status (or dies of a signal itself).
pub fn run_forked(
    inv: &Invocation,
    body: impl FnOnce(&mut Child) -> i32,
) -> Result<Forked, BackendError> {
    let capture = inv.stdio == Stdio::Capture;
    // nix's memfd needs a feature this crate does not enable: libc.
    // SAFETY: memfd_create takes a NUL-terminated name and flags and returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"vbench-report".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(os("memfd_create for the child's report")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| os("pipe")(e.into()));
    let (out, err) = if capture {
        (Some(pipe()?), Some(pipe()?))
    } else {
        (None, None)
    };
    let devnull = if capture {
        Some(OwnedFd::from(
            std::fs::File::open("/dev/null").map_err(os("opening /dev/null"))?,
        ))
    } else {
        None
    };
    let cpu = inv.cpu.map(pin::one_cpu_set).transpose()?;
    let inherited_rss_kib = rss_kib();
    // SAFETY: getpid has no preconditions (read before the fork, for the child's check).
    let parent = unsafe { libc::getpid() };
    let t0 = Instant::now();
    // SAFETY: fork (glibc's, which resets the allocator's locks in the child). The child runs
    // only `child_main`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os("fork")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let stdio = [
            devnull.as_ref().map(AsRawFd::as_raw_fd),
            out.as_ref().map(|p| p.1.as_raw_fd()),
            err.as_ref().map(|p| p.1.as_raw_fd()),
        ];
        let report = std::fs::File::from(memfd.try_clone().unwrap_or_else(|_| {
            // SAFETY: _exit ends the child without running the harness's code.
            unsafe { libc::_exit(126) }
        }));
        child_main(parent, capture, stdio, cpu.as_ref(), report, t0, body);
    }
    if capture {
        // also in the parent, so the group exists before anything signals it
        let _ = nix::unistd::setpgid(
            nix::unistd::Pid::from_raw(pid),
            nix::unistd::Pid::from_raw(pid),
        );
    }
    let (out_r, err_r) = (out.map(|p| p.0), err.map(|p| p.0));
    drop(devnull);
    let pipes = Pipes {
        stdout: out_r,
        stderr: err_r,
        chatty: inv.chatty,
    };
    let sup =
        supervise(pid, pipes, inv.timeout, inv.cancel.as_deref(), capture).map_err(|source| {
            BackendError::Os {
                what: format!("supervising {}", inv.program.name()),
                source,
            }
        })?;
    let wall = sup.reaped_at.unwrap_or_else(Instant::now) - t0;
    let mut f = std::fs::File::from(memfd);
    let mut text = Vec::new();
    let _ = f.rewind();
    f.read_to_end(&mut text)
        .map_err(os("reading the child's report"))?;
    let report = Report::decode(&text).map_err(|e| {
        BackendError::Invalid(format!("the {} child's report: {e}", inv.program.name()))
    })?;
    Ok(Forked {
        sup,
        wall,
        report,
        inherited_rss_kib,
    })
}

/// The child: its own group (captured runs), death with the harness, its standard streams,
/// default signal dispositions and an empty mask, the CPU; then `body`.
fn child_main(
    parent: libc::pid_t,
    capture: bool,
    stdio: [Option<i32>; 3],
    cpu: Option<&nix::sched::CpuSet>,
    report: std::fs::File,
    t0: Instant,
    body: impl FnOnce(&mut Child) -> i32,
) -> ! {
    // SAFETY: plain calls on this (the child's only) thread; _exit never returns.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
            || libc::getppid() != parent
        {
            libc::_exit(137);
        }
        if capture {
            libc::setpgid(0, 0);
        }
        for (i, fd) in stdio.iter().enumerate() {
            if let Some(fd) = fd {
                if libc::dup2(*fd, i as i32) < 0 {
                    libc::_exit(126);
                }
            }
        }
        // the dispositions and mask a freshly executed program starts with
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    if let Some(set) = cpu {
        if pin::apply(set).is_err() {
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(126) };
        }
    }
    let mut child = Child {
        report,
        t0,
        pid: std::process::id() as i32,
    };
    let code =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut child))).unwrap_or(101);
    // SAFETY: _exit ends the child without running the harness's exit handlers.
    unsafe { libc::_exit(code) }
}

/// Ends the calling process at once with `code` (no destructor runs: the kernel frees
/// everything).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Ends the calling process by `signal` as the kernel would have ended the guest natively (the
/// harness then sees the same wait status), without a core dump of the translator; exits with
/// 128 + signal when the signal does not end it.
pub fn die_of(signal: i32) -> ! {
    // SAFETY: plain calls on the current process; _exit never returns.
    unsafe {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal)
    }
}

/// The peak RSS of a forked child less what it inherited from the harness (KiB).
pub fn own_peak_kib(f: &Forked) -> u64 {
    f.sup.max_rss_kib.saturating_sub(f.inherited_rss_kib)
}

/// Writes the child's own lines (vbench's messages about its guest) to its stderr.
pub fn child_note(backend: &str, line: &str) {
    super::write_stderr(format!("vbench {backend}: {line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_bad_lines_are_named() {
        let mut r = Report::default();
        r.counters.insert("bt.links".into(), 7);
        r.startup_ns = Some(123);
        r.error = Some("two\nlines \\ here".into());
        assert_eq!(Report::decode(&r.encode()).unwrap(), r);
        assert_eq!(Report::decode(b"").unwrap(), Report::default());
        let e = Report::decode(b"c\tx\tnot-a-number\n").unwrap_err();
        assert!(e.contains("not-a-number"), "{e}");
        assert!(Report::decode(b"zz\n").is_err());
    }
}
