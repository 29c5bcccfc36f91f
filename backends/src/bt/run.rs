//! The plumbing of one run that is not translation: the watchdog (timeout and cancellation),
//! pinning, the thread's CPU times, the guest's stdio, and the Sample/Outcome built from how
//! the guest stopped. Kept together here, apart from the translator, so that it can give way
//! to one run session shared by every backend.

use super::dispatch::{crash, Stop};
use super::signals::kick_signal;
use super::{invalid, os, BackendError};
use crate::linux_abi::{self, Abi, Output};
use crate::{Invocation, Outcome, Stdio};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vbench_results::{Exit, Sample};

/// Timeout and cancellation make the guest leave through the kick signal.
pub(super) struct Watchdog {
    done: Arc<AtomicBool>,
    kicked: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    /// Watches `inv`'s timeout and cancel flag for the calling thread, which must have the
    /// kick signal's handler installed until [`Watchdog::stop`].
    pub(super) fn start(inv: &Invocation) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let kicked = Arc::new(AtomicBool::new(false));
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let thread = {
            let (done, kicked, cancel, timeout) = (
                done.clone(),
                kicked.clone(),
                inv.cancel.clone(),
                inv.timeout,
            );
            std::thread::spawn(move || {
                let start = Instant::now();
                while !done.load(Ordering::Acquire) {
                    let expired = timeout.is_some_and(|t| start.elapsed() >= t);
                    let cancelled = cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
                    if expired || cancelled {
                        kicked.store(true, Ordering::Release);
                        // SAFETY: the run thread lives until this thread is joined; the kick
                        // signal has a handler installed for the whole run.
                        unsafe { libc::pthread_kill(me, kick_signal()) };
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Watchdog {
            done,
            kicked,
            thread,
        }
    }

    /// Set once the guest must leave.
    pub(super) fn kicked(&self) -> &AtomicBool {
        &self.kicked
    }

    /// Ends the watchdog (joins its thread).
    pub(super) fn stop(self) {
        self.done.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

/// Pins the calling thread to one CPU until dropped (then its old affinity comes back).
pub(super) struct Pin(Option<libc::cpu_set_t>);

impl Pin {
    pub(super) fn to(cpu: Option<usize>) -> Result<Pin, BackendError> {
        let Some(cpu) = cpu else { return Ok(Pin(None)) };
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(invalid(format!("CPU {cpu} is out of range")));
        }
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: zeroed cpu_set_t values are valid; the affinity calls read/write them only.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut old) != 0 {
                return Err(os("sched_getaffinity"));
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size, &set) != 0 {
                return Err(os(&format!("pinning to CPU {cpu}")));
            }
            Ok(Pin(Some(old)))
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: restoring the affinity saved by `Pin::to` for this thread.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old) };
        }
    }
}

/// User and system CPU time of the calling thread, nanoseconds.
pub(super) fn thread_times() -> (u64, u64) {
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the calling thread's usage into `ru`.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

/// The guest's stdout and stderr: captured, or the harness's own.
pub(super) fn outputs(inv: &Invocation) -> [Output; 2] {
    if inv.stdio == Stdio::Capture {
        [
            Output::Capture {
                buf: vec![],
                total: 0,
            },
            Output::Capture {
                buf: vec![],
                total: 0,
            },
        ]
    } else {
        [Output::Inherit(1), Output::Inherit(2)]
    }
}

/// The files the guest may open: the arguments that name one.
pub(super) fn allowed_paths(inv: &Invocation) -> Vec<PathBuf> {
    inv.args
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect()
}

/// How the run went, as the harness records it.
pub(super) struct Finish {
    pub(super) stop: Stop,
    pub(super) wall: Duration,
    /// The run thread's (user, system) CPU times before and after.
    pub(super) times: ((u64, u64), (u64, u64)),
    pub(super) startup: Option<Duration>,
    pub(super) counters: BTreeMap<String, u64>,
}

/// The Outcome of the run: its exit, its captured output and the stderr tail.
pub(super) fn outcome(inv: &Invocation, abi: &mut Abi, f: Finish) -> Outcome {
    let mut stderr_tail = String::new();
    let stop = match f.stop {
        Stop::Fault(f) => crash(f.signal, f.message),
        s => s,
    };
    let exit = match stop {
        Stop::Exited(code) => Exit::Code { code },
        Stop::Crashed { signal, message } => {
            stderr_tail = format!("vbench bt: {message}\n");
            Exit::Signal { signal }
        }
        Stop::Fault(_) | Stop::Kicked => {
            if inv
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                Exit::Interrupted
            } else {
                Exit::Timeout {
                    after_ms: inv.timeout.map_or(0, |t| t.as_millis() as u64),
                }
            }
        }
    };
    if let Some(nr) = abi.first_unsupported {
        stderr_tail.push_str(&format!(
            "vbench bt: first unsupported syscall {nr} ({}) answered with ENOSYS\n",
            linux_abi::syscall_name(nr)
        ));
    }
    let [out, errs] = std::mem::replace(&mut abi.outputs, [Output::Inherit(1), Output::Inherit(2)]);
    let (stdout, stdout_bytes) = match out {
        Output::Capture { buf, total } => (buf, total),
        Output::Inherit(_) => (vec![], 0),
    };
    if let Output::Capture { buf, .. } = errs {
        let guest_err =
            String::from_utf8_lossy(&buf[buf.len().saturating_sub(4096)..]).into_owned();
        stderr_tail = guest_err + &stderr_tail;
    } else if !stderr_tail.is_empty() {
        eprint!("{stderr_tail}");
    }
    let ((u0, s0), (u1, s1)) = f.times;
    Outcome {
        sample: Sample {
            wall_ns: f.wall.as_nanos() as u64,
            user_ns: u1.saturating_sub(u0),
            sys_ns: s1.saturating_sub(s0),
            max_rss_kib: 0,
            exit,
            report: None,
            startup_ns: f.startup.map(|s| s.as_nanos() as u64),
            counters: f.counters,
            stdout_bytes,
            stdout_digest: String::new(),
            stderr_tail,
        },
        stdout,
    }
}
