//! The control: the program as a plain child process.

use crate::session::pin;
use crate::session::process::{supervise, Pipes};
use crate::{Availability, Backend, BackendError, Invocation, Outcome, Stdio};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;
use vbench_results::Sample;

/// Runs the program as an ordinary child process (posix_spawn where possible).
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn describe(&self) -> &'static str {
        "a plain process: the control"
    }

    fn availability(&self) -> Availability {
        Availability::Available
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        let mut cmd = Command::new(inv.program.exec_path());
        cmd.arg0(inv.program.name()).args(&inv.args);
        run_command(cmd, inv)
    }
}

/// Runs `cmd` as the child process of `inv` and measures it: its own process group, stdio
/// captured (bounded) or inherited as `inv` says, optional pinning, timeout and cancellation.
/// Shared with the peer backends, which run a tool with the program as its argument.
pub(crate) fn run_command(mut cmd: Command, inv: &Invocation) -> Result<Outcome, BackendError> {
    let capture = inv.stdio == Stdio::Capture;
    if capture {
        // Its own process group, so a timeout kills everything it forked and the
        // terminal's ^C reaches vbench (which then cancels the run) and not the child.
        cmd.process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    }
    let cpu = inv.cpu.map(pin::one_cpu_set).transpose()?;
    // SAFETY: getpid has no preconditions (read before the fork, for the child's check).
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid, sched_setaffinity on a set made before the
    // fork); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // the child dies with vbench, even when vbench is SIGKILLed: checked against a
            // parent that already died between the fork and the prctl
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            if let Some(set) = &cpu {
                pin::apply(set)?;
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| BackendError::Spawn {
        program: inv.program.name(),
        source,
    })?;
    let pipes = Pipes {
        stdout: child.stdout.take().map(Into::into),
        stderr: child.stderr.take().map(Into::into),
        chatty: inv.chatty,
    };
    let sup = supervise(
        child.id() as libc::pid_t,
        pipes,
        inv.timeout,
        inv.cancel.as_deref(),
        capture,
    )
    .map_err(|source| BackendError::Os {
        what: format!("supervising {}", inv.program.name()),
        source,
    })?;
    let wall = sup.reaped_at.unwrap_or_else(Instant::now) - start;
    Ok(Outcome {
        sample: Sample {
            wall_ns: wall.as_nanos() as u64,
            user_ns: sup.user_ns,
            sys_ns: sup.sys_ns,
            max_rss_kib: Some(sup.max_rss_kib),
            exit: sup.exit,
            report: None,
            startup_ns: None,
            counters: Default::default(),
            stdout_bytes: sup.stdout_bytes,
            stdout_digest: String::new(),
            stderr_tail: String::from_utf8_lossy(&sup.stderr_tail).into_owned(),
            cpu: inv.cpu,
        },
        stdout: sup.stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Program;
    use std::time::Duration;
    use vbench_results::Exit;

    fn sh(script: &str) -> Invocation {
        Invocation::new(
            Program::Path("/bin/sh".into()),
            vec!["-c".into(), script.into()],
        )
    }

    #[test]
    fn captures_stdout_status_and_time() {
        let out = Native.run(&sh("echo hi; echo err >&2; exit 3")).unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.sample.stderr_tail, "err\n");
        assert_eq!(out.sample.exit, Exit::Code { code: 3 });
        assert!(out.sample.wall_ns > 0);
        assert!(out.sample.max_rss_kib.unwrap() > 0);
    }

    #[test]
    fn reports_signals() {
        let out = Native.run(&sh("kill -SEGV $$")).unwrap();
        assert_eq!(
            out.sample.exit,
            Exit::Signal {
                signal: libc::SIGSEGV
            }
        );
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let mut inv = sh("sleep 30 & sleep 30; wait");
        inv.timeout = Some(Duration::from_millis(200));
        let t = Instant::now();
        let out = Native.run(&inv).unwrap();
        assert_eq!(out.sample.exit, Exit::Timeout { after_ms: 200 });
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn flood_is_bounded() {
        // unwatched pipes at first (the harness learns the run is chatty), then drained as
        // they fill; and watched from the start when the harness already knows
        for chatty in [false, true] {
            let mut inv = sh("head -c 5000000 /dev/zero; echo tail >&2");
            inv.chatty = chatty;
            let out = Native.run(&inv).unwrap();
            assert_eq!(out.sample.stdout_bytes, 5_000_000, "chatty {chatty}");
            assert_eq!(out.stdout.len(), crate::session::STDOUT_CAP);
            assert_eq!(out.sample.stderr_tail, "tail\n");
            assert_eq!(out.sample.exit, Exit::Code { code: 0 });
        }
    }

    #[test]
    fn a_short_run_with_a_line_of_output_loses_nothing() {
        // the common case: the pipes are not watched, output is drained at exit
        let out = Native.run(&sh("echo line; echo err >&2")).unwrap();
        assert_eq!(out.stdout, b"line\n");
        assert_eq!(out.sample.stderr_tail, "err\n");
    }

    #[test]
    fn pinning_restricts_affinity() {
        let mut inv = sh("grep Cpus_allowed_list /proc/self/status");
        inv.cpu = Some(0);
        let out = Native.run(&inv).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "Cpus_allowed_list:\t0"
        );
        assert_eq!(out.sample.cpu, Some(0));
    }

    #[test]
    fn the_child_dies_with_its_parent() {
        // the run's child has PR_SET_PDEATHSIG = SIGKILL, which exec keeps: asked from the
        // program itself with prctl(PR_GET_PDEATHSIG)
        let script = "exec python3 -c 'import ctypes; l=ctypes.CDLL(None); s=ctypes.c_int(); l.prctl(2, ctypes.byref(s)); print(s.value)'";
        let out = Native.run(&sh(script)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            libc::SIGKILL.to_string(),
            "PR_GET_PDEATHSIG: {}",
            out.sample.stderr_tail
        );
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let inv = Invocation::new(Program::Path("/nonexistent/prog".into()), vec![]);
        let e = Native.run(&inv).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/prog"), "{e}");
    }
}
