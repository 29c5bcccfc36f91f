//! Test helpers shared by every crate of vbench (a dev-dependency only).
//!
//! The one rule for tests that need a capability (root, /dev/kvm, an installed tool): such a
//! test may skip only when the capability is absent *and* `VBENCH_REQUIRE_PRIVILEGED` is not
//! set. CI sets it, so there a missing capability fails the test instead of passing silently.
#![deny(missing_docs)]

/// The variable that turns every skip into a failure.
pub const REQUIRE_VAR: &str = "VBENCH_REQUIRE_PRIVILEGED";

/// Whether skips are forbidden in this environment.
pub fn skips_forbidden() -> bool {
    std::env::var_os(REQUIRE_VAR).is_some_and(|v| !v.is_empty())
}

/// Decides whether a test that needs `what` may run: `have` is `Ok(())` when the capability is
/// here, or the reason it is not. Returns true to run; returns false (after saying so on
/// stderr) to skip; panics when the capability is missing but skips are forbidden.
///
/// ```
/// if !vbench_testkit::require_or_skip("a root shell", Ok(())) {
///     return;
/// }
/// ```
pub fn require_or_skip(what: &str, have: Result<(), String>) -> bool {
    decide(what, have, skips_forbidden())
}

fn decide(what: &str, have: Result<(), String>, forbidden: bool) -> bool {
    match have {
        Ok(()) => true,
        Err(why) if forbidden => {
            panic!("{what} is required ({REQUIRE_VAR} is set) but {why}")
        }
        Err(why) => {
            eprintln!("skipping: {what} is needed but {why}");
            false
        }
    }
}

/// `Ok(())` when running as root, else the reason.
pub fn root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { geteuid() } == 0 {
        Ok(())
    } else {
        Err("the tests do not run as root".into())
    }
}

/// `Ok(())` when `path` exists (an installed tool, a device), else the reason.
pub fn file(path: &str) -> Result<(), String> {
    if std::path::Path::new(path).exists() {
        Ok(())
    } else {
        Err(format!("{path} does not exist"))
    }
}

/// `Ok(())` when a program called `name` is on PATH, else the reason.
pub fn on_path(name: &str) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join(name).is_file()) {
        Ok(())
    } else {
        Err(format!("{name} is not on PATH (install it)"))
    }
}

/// Both capabilities, the first missing one's reason otherwise.
pub fn both(a: Result<(), String>, b: Result<(), String>) -> Result<(), String> {
    a.and(b)
}

extern "C" {
    fn geteuid() -> u32;
}

/// Builds the C program `src` with `gcc -static -O2 -Wall -pthread` into `out`; panics with
/// gcc's messages when it fails (a test's own program that does not build is the test's bug).
pub fn gcc_static(src: &std::path::Path, out: &std::path::Path) {
    let o = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-pthread", "-o"])
        .arg(out)
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("gcc for {}: {e}", src.display()));
    assert!(
        o.status.success(),
        "gcc {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_runs_absent_skips_unless_forbidden() {
        assert!(decide("x", Ok(()), true));
        assert!(decide("x", Ok(()), false));
        assert!(!decide("x", Err("gone".into()), false));
        let forbidden = std::panic::catch_unwind(|| decide("x", Err("gone".into()), true));
        let msg = *forbidden.unwrap_err().downcast::<String>().unwrap();
        assert!(
            msg.contains("x is required") && msg.contains("gone"),
            "{msg}"
        );
    }

    #[test]
    fn capability_checks_name_what_is_missing() {
        assert_eq!(
            file("/nonexistent/tool").unwrap_err(),
            "/nonexistent/tool does not exist"
        );
        assert!(on_path("surely-no-such-program-here").is_err());
        assert!(file("/").is_ok());
        assert!(both(Ok(()), Err("b".into())).unwrap_err() == "b");
    }
}
