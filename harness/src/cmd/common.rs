//! What several commands share: the cancel flag, the backend and program lookups, usage errors,
//! the machine's CPUs, and where results go (`--out` or the default results file).

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vbench_backends::container::cgroup::Layout;
use vbench_backends::session::process::registry;
use vbench_backends::{Backend, Program};
pub use vbench_results::store::{OutKind, OutTarget};
use vbench_results::{Document, RunStatus, Writer};

/// vbench's own results folder: the only parent of an `--out` that is created when missing.
pub const RESULTS_DIR: &str = "vbench-results";

/// A bad argument found after clap parsed the command line: `main` prints it and exits 2,
/// as clap does for its own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Exit status of a usage error (clap's).
pub const EXIT_USAGE: u8 = 2;

/// What a killed vbench left behind, removed at the start of every command that runs
/// anything (`run`, `exec`, `isolate`): the processes its children left in the process groups
/// it recorded, its cgroups and isolate's scratch directories. Costs a few directory reads
/// when nothing is stale; a failure is never an error.
pub fn clean_stale() {
    let swept = registry::sweep();
    if let Some(&(_, by)) = swept.killed.first() {
        eprintln!(
            "vbench: killed {} leftover process(es) of an earlier vbench (pid {by}) that was killed",
            swept.killed.len()
        );
    }
    for d in vbench_backends::gvisor::remove_stale() {
        eprintln!("vbench: removed {} of an earlier run", d.display());
    }
    // crun's containers first: deleting one removes its cgroups
    for id in vbench_backends::crun::remove_stale() {
        eprintln!("vbench: deleted stale crun container {id} of an earlier run");
    }
    if let Ok(layout) = Layout::host() {
        for p in layout.remove_stale() {
            eprintln!(
                "vbench: removed stale cgroup {} of an earlier run",
                p.display()
            );
        }
    }
    crate::cmd::isolate::remove_stale_scratch();
    registry::init();
}

/// The sentence `show` and `report` print for a run whose vbench was killed.
pub const KILLED: &str = "this run did not finish (vbench was killed)";

/// This process as the writer of a results document.
pub fn this_writer() -> Option<Writer> {
    let pid = std::process::id();
    Some(Writer {
        pid,
        start_ticks: registry::stat(pid as i32)?.start_ticks,
        boot_id: registry::boot_id().unwrap_or_default(),
    })
}

/// Whether `doc` says it is still being written but the process writing it is gone (or is
/// another process under the same pid, or the machine rebooted since). False for a finished
/// run and for a file that does not record its writer.
pub fn writer_gone(doc: &Document) -> bool {
    let Some(w) = doc
        .writer
        .as_ref()
        .filter(|_| doc.status == RunStatus::Running)
    else {
        return false;
    };
    let rebooted = registry::boot_id().is_some_and(|b| !w.boot_id.is_empty() && b != w.boot_id);
    rebooted || !registry::alive(w.pid, w.start_ticks)
}

/// The signal that cancelled the run (0: none yet).
static CANCELLED_BY: std::sync::OnceLock<Arc<std::sync::atomic::AtomicUsize>> =
    std::sync::OnceLock::new();

/// A flag set by SIGINT, SIGTERM and SIGHUP (which of them is kept for [`interrupted_exit`]).
pub fn install_cancel() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let by = CANCELLED_BY.get_or_init(|| Arc::new(std::sync::atomic::AtomicUsize::new(0)));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_usize(sig, by.clone(), sig as usize)
            .context("installing signal handler")?;
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handler")?;
    }
    Ok(flag)
}

/// The exit status of a cancelled vbench: 128 + the signal that cancelled it, as a shell
/// reports a program that signal ended (130 for ^C, 143 for SIGTERM, 129 for SIGHUP).
pub fn interrupted_exit() -> u8 {
    let sig = CANCELLED_BY
        .get()
        .map_or(0, |b| b.load(std::sync::atomic::Ordering::Relaxed));
    match sig {
        0 => 130,
        s => (128 + s.min(127)) as u8,
    }
}

/// Index of the backend named `name` (clap restricts the names to the registry's).
pub fn backend_index(all: &[Box<dyn Backend>], name: &str) -> usize {
    all.iter()
        .position(|b| b.name() == name)
        .expect("clap restricts backend names")
}

/// A user's program: it must exist and be a file.
pub fn user_program(path: &OsString) -> Result<Program> {
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p).with_context(|| format!("program {}", p.display()))?;
    if !meta.is_file() {
        bail!("program {} is not a file", p.display());
    }
    Ok(Program::Path(p))
}

/// `--out PATH` checked before any work is done, or with no `--out` a fresh results file
/// `vbench-results/<prefix>-<UTC time>[-N].json`, created exclusively so that two runs that
/// start in the same second never share (and overwrite) one file.
pub fn out_target(out: Option<&Path>, prefix: &str) -> Result<OutTarget> {
    match out {
        Some(p) => Ok(OutTarget::resolve(p, Path::new(RESULTS_DIR))?),
        None => Ok(OutTarget::create_unique(
            Path::new(RESULTS_DIR),
            &default_stem(prefix),
            "json",
        )?),
    }
}

/// Checks every path that a command will write after its work (`--junit`, `--markdown`, ...)
/// as [`out_target`] checks `--out`, so that a bad one fails before the work, not after it.
pub fn check_outputs<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    for p in paths {
        OutTarget::resolve(p, Path::new(RESULTS_DIR))?;
    }
    Ok(())
}

/// `<prefix>-YYYYMMDD-HHMMSS` of now (UTC).
pub fn default_stem(prefix: &str) -> String {
    // "YYYY-MM-DD HH:MM:SS UTC" -> "YYYYMMDD-HHMMSS"
    let digits: String = vbench_reports::utc(crate::scheduler::now_ms())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("{prefix}-{}-{}", &digits[..8], &digits[8..14])
}

/// The CPUs this process may run on (its affinity mask), ascending: the run session's, so the
/// CLI and the backends agree on what `--pin` may name.
pub use vbench_backends::session::pin::{allowed_cpus, cpu_list};

#[cfg(test)]
mod tests {
    use super::*;

    fn running(writer: Option<Writer>) -> Document {
        let mut doc: Document = serde_json::from_str(
            r#"{"schema_version":1,"tool":{"name":"vbench","version":"0"},"status":"running",
            "started_unix_ms":0,"finished_unix_ms":null,"environment":{"hostname":"","kernel":"",
            "cpu_model":"","logical_cpus":1,"hypervisor":null,"kvm":"","cgroup":""},
            "plan":{"rounds":1,"warmup":0,"quick":false,"seed":0,"timeout_ms":0,"backends":[],
            "cells":[]},"samples":[],"summaries":[],"failures":[]}"#,
        )
        .expect("a file without a writer still loads");
        assert_eq!(doc.writer, None);
        doc.writer = writer;
        doc
    }

    #[test]
    fn a_gone_writer_is_told_from_a_live_one() {
        let me = this_writer().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(!writer_gone(&running(Some(me.clone()))), "this process");
        assert!(
            !writer_gone(&running(None)),
            "no writer recorded: cannot tell"
        );
        let reused = Writer {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(writer_gone(&running(Some(reused))), "a reused pid");
        let rebooted = Writer {
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
            ..me.clone()
        };
        assert!(writer_gone(&running(Some(rebooted))), "another boot");
        let dead = Writer {
            pid: u32::MAX,
            ..me.clone()
        };
        assert!(writer_gone(&running(Some(dead.clone()))), "no such process");
        let mut done = running(Some(dead));
        done.status = RunStatus::Complete;
        assert!(!writer_gone(&done), "a finished run");
    }

    #[test]
    fn default_stem_is_dated() {
        let s = default_stem("run");
        assert!(
            s.starts_with("run-20") && s.len() == "run-YYYYMMDD-HHMMSS".len(),
            "{s}"
        );
    }

    #[test]
    fn outputs_are_checked_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("a.xml");
        let bad = dir.path().join("no/such/b.xml");
        assert!(check_outputs([ok.as_path()]).is_ok());
        let e = check_outputs([ok.as_path(), bad.as_path()]).unwrap_err();
        assert!(format!("{e:#}").contains("no/such"), "{e:#}");
        assert!(check_outputs([dir.path()]).is_err(), "a directory");
    }

    #[test]
    fn cpu_lists_are_compressed() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(cpu_list(&[1]), "1");
        assert_eq!(cpu_list(&[0, 2, 3]), "0,2-3");
        assert_eq!(cpu_list(&[]), "");
    }

    #[test]
    fn this_process_may_run_somewhere() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }
}
