//! What every backend's run shares, written once: the watchdog and timeout, pinning, the
//! capture of standard streams with bounded buffers, the guest's argv/envp and the paths it
//! may read, the mapping from how a guest stopped to an [`Exit`], the stderr tail, and
//! resource usage.
//!
//! Backends that run the program as a host process (native, container, peers) supervise it
//! with [`process::supervise`]; backends that run the guest inside the harness's own thread
//! (bt, kvm) use a [`watchdog::Watchdog`], [`GuestOutputs`] and [`guest_outcome`].

pub mod forked;
pub mod pin;
pub mod process;
pub mod watchdog;

use crate::linux_abi::Output;
use crate::{Invocation, Outcome, Stdio};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use vbench_results::{Exit, Sample};

pub use pin::{check_cpu, PinGuard};
pub use process::{STDERR_TAIL, STDOUT_CAP};
pub use watchdog::Watchdog;

/// The environment a confined in-process guest gets.
pub const CONFINED_ENV: [&[u8]; 2] = [b"PATH=/bin", b"HOME=/"];

/// The environment of an in-process guest: vbench's own under the host policy (as the program
/// would have natively), a fixed one confined.
pub fn guest_env(inv: &Invocation) -> Vec<Vec<u8>> {
    match inv.abi {
        crate::AbiPolicy::Host => std::env::vars_os()
            .map(|(k, v)| {
                let mut e = k.into_encoded_bytes();
                e.push(b'=');
                e.extend(v.into_encoded_bytes());
                e
            })
            .collect(),
        crate::AbiPolicy::Confined => CONFINED_ENV.iter().map(|e| e.to_vec()).collect(),
    }
}

/// argv of the guest: the program's name, then the invocation's arguments.
pub fn guest_argv(inv: &Invocation) -> Vec<Vec<u8>> {
    let mut argv: Vec<Vec<u8>> = vec![inv.program.name().into_bytes()];
    argv.extend(
        inv.args
            .iter()
            .map(|a| std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()).to_vec()),
    );
    argv
}

/// Clock `id` now, nanoseconds. Async-signal-safe (one clock_gettime), so a forked or cloned
/// child may call it.
pub fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// AT_EXECFN: the path the guest program was started by (its file's, else its argv[0]).
pub fn guest_execfn(inv: &Invocation, argv: &[Vec<u8>]) -> Vec<u8> {
    inv.program.path().map_or_else(
        || argv[0].clone(),
        |p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec(),
    )
}

/// What `/proc/self/exe` names for the guest: its program's file, resolved as the kernel
/// names it (/bin/busybox is /usr/bin/busybox).
pub fn guest_exe(inv: &Invocation) -> Option<PathBuf> {
    inv.program
        .path()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// The files a confined guest may read: its arguments that name regular files.
pub fn allowed_paths(inv: &Invocation) -> Vec<PathBuf> {
    inv.args
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect()
}

/// How an in-process guest stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestStop {
    /// exit or exit_group with this status (already masked to 8 bits by the caller or not).
    Exited(i32),
    /// It crashed; the signal a native process would have died of, and what happened.
    Crashed {
        /// The signal.
        signal: i32,
        /// What happened, for the stderr tail.
        message: String,
    },
    /// The watchdog stopped it (timeout or cancellation).
    Kicked,
}

/// A guest's standard output and error, captured (bounded) or passed to the harness's own.
pub struct GuestOutputs;

impl GuestOutputs {
    /// The two outputs for `stdio`.
    pub fn for_stdio(stdio: Stdio) -> [Output; 2] {
        match stdio {
            Stdio::Capture => [
                Output::Capture {
                    buf: vec![],
                    total: 0,
                },
                Output::Capture {
                    buf: vec![],
                    total: 0,
                },
            ],
            Stdio::Inherit => [Output::Inherit(1), Output::Inherit(2)],
        }
    }
}

/// The signals the harness handles (^C, SIGTERM, SIGHUP: they cancel a run).
pub const HARNESS_SIGNALS: [nix::sys::signal::Signal; 3] = [
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGHUP,
];

/// Blocks [`HARNESS_SIGNALS`] in the calling thread until dropped. A thread that runs guest
/// code in the harness's own process (bt) holds it, so the harness's handlers never run on a
/// thread whose FS base (thread-local storage) is the guest's; the kernel hands the signals to
/// another thread (the watchdog unblocks them in its own).
pub struct HarnessSignalsBlocked(nix::sys::signal::SigSet);

impl HarnessSignalsBlocked {
    fn set() -> nix::sys::signal::SigSet {
        let mut set = nix::sys::signal::SigSet::empty();
        for s in HARNESS_SIGNALS {
            set.add(s);
        }
        set
    }

    /// Blocks them, keeping the old mask.
    pub fn new() -> HarnessSignalsBlocked {
        let mut old = nix::sys::signal::SigSet::empty();
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&Self::set()),
            Some(&mut old),
        );
        HarnessSignalsBlocked(old)
    }

    /// Unblocks them in the calling thread (a thread started by one that blocked them).
    pub fn unblock_in_this_thread() {
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
            Some(&Self::set()),
            None,
        );
    }
}

impl Default for HarnessSignalsBlocked {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HarnessSignalsBlocked {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.0),
            None,
        );
    }
}

/// CPU time of the calling thread (user, system), nanoseconds.
pub fn thread_times() -> (u64, u64) {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    getrusage(UsageWho::RUSAGE_THREAD).map_or((0, 0), |ru| {
        let ns = |t: nix::sys::time::TimeVal| t.num_nanoseconds().max(0) as u64;
        (ns(ru.user_time()), ns(ru.system_time()))
    })
}

/// Bytes of `[addr, addr+len)` resident in the host now (mincore); `addr` page aligned and
/// the range one mapping of the caller.
pub fn resident_bytes(addr: *const u8, len: usize) -> u64 {
    const PAGE: usize = 4096;
    let mut vec = vec![0u8; len.div_ceil(PAGE)];
    // nix has no mincore (0.30): libc.
    // SAFETY: the caller passes a range it has mapped; `vec` holds one byte per page.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    vec.iter().filter(|b| *b & 1 != 0).count() as u64 * PAGE as u64
}

/// What an in-process guest's run measured, besides its outputs.
pub struct GuestRun {
    /// Backend name, for messages ("vbench bt: ...").
    pub backend: &'static str,
    /// How it stopped.
    pub stop: GuestStop,
    /// Wall time of the run, read before the watchdog was joined.
    pub wall: Duration,
    /// CPU time of the thread that ran the guest, (user, system) ns.
    pub times: (u64, u64),
    /// Peak memory of the guest in KiB, where it is measured.
    pub max_rss_kib: Option<u64>,
    /// Start-up latency.
    pub startup: Option<Duration>,
    /// Backend counters.
    pub counters: BTreeMap<String, u64>,
    /// Notes for the stderr tail (unsupported syscalls, ...), one per line.
    pub notes: Vec<String>,
}

/// What the guest's system-call layer has to say at the end of a run (every syscall it
/// answered with ENOSYS, with counts), and its outputs, taken out of it for the Outcome.
pub fn take_abi_results(abi: &mut crate::linux_abi::Abi) -> (Vec<String>, [Output; 2]) {
    let notes = abi
        .unsupported()
        .map(|list| format!("unsupported syscalls answered with ENOSYS: {list}"))
        .into_iter()
        .collect();
    let outputs = std::mem::replace(&mut abi.outputs, GuestOutputs::for_stdio(Stdio::Inherit));
    (notes, outputs)
}

/// Maps a guest's stop to its exit: a kicked guest ended for the watchdog's reason.
pub fn exit_of(stop: &GuestStop, watchdog_cause: Option<Exit>) -> Exit {
    match stop {
        GuestStop::Exited(code) => Exit::Code { code: *code },
        GuestStop::Crashed { signal, .. } => Exit::Signal { signal: *signal },
        GuestStop::Kicked => watchdog_cause.unwrap_or(Exit::Interrupted),
    }
}

/// Writes vbench's own lines to its stderr, which a guest that inherited it shares: the guest
/// may have made it non-blocking (F_SETFL O_NONBLOCK acts on the shared open file), so EAGAIN
/// waits for room (up to 10 s in all) instead of failing, and no error panics as `eprint!`
/// does (it killed vbench after a guest had done that).
pub fn write_stderr(b: &[u8]) {
    write_all_waiting(2, b, Duration::from_secs(10));
}

fn write_all_waiting(fd: i32, mut b: &[u8], patience: Duration) {
    let start = std::time::Instant::now();
    while !b.is_empty() {
        // SAFETY: writes the bytes of a valid slice.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n > 0 {
            b = &b[n as usize..];
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) if start.elapsed() < patience => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 100) };
            }
            _ => return,
        }
    }
}

/// Builds the outcome of an in-process guest's run: the exit, the captured stdout, and the
/// stderr tail (the guest's own stderr, then the backend's message and notes). With inherited
/// streams the backend's lines go to the harness's stderr.
pub fn guest_outcome(
    inv: &Invocation,
    run: GuestRun,
    watchdog_cause: Option<Exit>,
    outputs: [Output; 2],
) -> Outcome {
    let exit = exit_of(&run.stop, watchdog_cause);
    let mut ours = String::new();
    if let GuestStop::Crashed { message, .. } = &run.stop {
        ours.push_str(&format!("vbench {}: {message}\n", run.backend));
    }
    for n in &run.notes {
        ours.push_str(&format!("vbench {}: {n}\n", run.backend));
    }
    let [out, errs] = outputs;
    let (stdout, stdout_bytes) = match out {
        Output::Capture { buf, total } => (buf, total),
        Output::Inherit(_) => (vec![], 0),
    };
    let stderr_tail = match errs {
        Output::Capture { buf, .. } => {
            let mut tail = buf[buf.len().saturating_sub(STDERR_TAIL)..].to_vec();
            tail.extend_from_slice(ours.as_bytes());
            String::from_utf8_lossy(&tail).into_owned()
        }
        Output::Inherit(_) => {
            write_stderr(ours.as_bytes());
            ours
        }
    };
    Outcome {
        sample: Sample {
            wall_ns: run.wall.as_nanos() as u64,
            user_ns: run.times.0,
            sys_ns: run.times.1,
            max_rss_kib: run.max_rss_kib,
            exit,
            report: None,
            startup_ns: run.startup.map(|s| s.as_nanos() as u64),
            counters: run.counters,
            stdout_bytes,
            stdout_digest: String::new(),
            stderr_tail,
            cpu: inv.cpu,
        },
        stdout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Program;

    fn inv() -> Invocation {
        Invocation::new(
            Program::Path("/x/prog".into()),
            vec!["/etc/hostname".into()],
        )
    }

    #[test]
    fn a_kicked_guest_ends_for_the_watchdogs_reason() {
        let t = Exit::Timeout { after_ms: 5 };
        assert_eq!(exit_of(&GuestStop::Kicked, Some(t)), t);
        assert_eq!(exit_of(&GuestStop::Exited(3), None), Exit::Code { code: 3 });
        let c = GuestStop::Crashed {
            signal: 11,
            message: "x".into(),
        };
        assert_eq!(exit_of(&c, None), Exit::Signal { signal: 11 });
    }

    #[test]
    fn our_lines_reach_a_stderr_the_guest_made_non_blocking() {
        // found by harness/tests/abi_fuzz.rs: a guest's fcntl(2, F_SETFL, O_NONBLOCK) made
        // vbench's closing eprint! fail with EAGAIN on a full pipe, and panic
        let mut p = [0i32; 2];
        // SAFETY: a two-int array for the pipe's ends.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
        let [r, w] = p;
        let line = vec![b'x'; 200_000]; // more than a pipe holds
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut got = 0;
            let mut buf = [0u8; 65536];
            while got < 200_000 {
                // SAFETY: reads into a valid buffer.
                let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    got += n as usize;
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            got
        });
        write_all_waiting(w, &line, Duration::from_secs(10));
        assert_eq!(reader.join().unwrap(), 200_000);
        // a closed reader: an error, not a panic (nor a wait)
        // SAFETY: closing the descriptors this test made.
        unsafe { libc::close(r) };
        write_all_waiting(w, b"lost\n", Duration::from_secs(10));
        // SAFETY: as above.
        unsafe { libc::close(w) };
    }

    #[test]
    fn the_outcome_keeps_guest_stderr_then_our_message() {
        let mut outputs = GuestOutputs::for_stdio(Stdio::Capture);
        outputs[0].put(b"line\n");
        outputs[1].put(b"guest said\n");
        let run = GuestRun {
            backend: "bt",
            stop: GuestStop::Crashed {
                signal: libc::SIGSEGV,
                message: "guest crashed".into(),
            },
            wall: Duration::from_millis(2),
            times: (1, 2),
            max_rss_kib: None,
            startup: None,
            counters: BTreeMap::new(),
            notes: vec!["unsupported syscalls: foo x 2".into()],
        };
        let mut i = inv();
        i.cpu = Some(0);
        let o = guest_outcome(&i, run, None, outputs);
        assert_eq!(o.stdout, b"line\n");
        assert_eq!(o.sample.stdout_bytes, 5);
        assert_eq!(
            o.sample.stderr_tail,
            "guest said\nvbench bt: guest crashed\nvbench bt: unsupported syscalls: foo x 2\n"
        );
        assert_eq!(o.sample.cpu, Some(0));
        assert_eq!(o.sample.max_rss_kib, None);
        assert_eq!((o.sample.user_ns, o.sample.sys_ns), (1, 2));
    }

    #[test]
    fn argv_and_allowed_paths() {
        let i = inv();
        assert_eq!(
            guest_argv(&i),
            vec![b"/x/prog".to_vec(), b"/etc/hostname".to_vec()]
        );
        let allowed = allowed_paths(&i);
        assert_eq!(
            allowed.len(),
            usize::from(std::path::Path::new("/etc/hostname").is_file())
        );
    }
}
