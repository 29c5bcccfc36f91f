//! What several commands share: the cancel flag, the backend and program lookups, usage errors,
//! the machine's CPUs, and where results go (`--out` or the default results file).

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vbench_backends::{Backend, Program};
pub use vbench_results::store::{OutKind, OutTarget};

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

/// A flag set by SIGINT, SIGTERM and SIGHUP.
pub fn install_cancel() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handler")?;
    }
    Ok(flag)
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
