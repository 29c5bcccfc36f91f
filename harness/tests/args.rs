//! Bad arguments are usage errors (exit 2) found before anything runs, and their messages name
//! what is valid on this machine. These run the real `vbench` binary.

use assert_cmd::Command;
use predicates::prelude::*;

fn vbench() -> Command {
    Command::cargo_bin("vbench").unwrap()
}

/// This process's CPUs in the kernel's list notation (`0-1`), as vbench must name them.
fn allowed_list() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().unwrap().get()
}

/// `vbench ARGS` is refused with exit 2 at once (nothing runs: the run asked for is long),
/// and stderr holds every one of `needles`; nothing is written in the working directory.
fn refused(args: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let assert = vbench()
        .current_dir(dir.path())
        .args(args)
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "{args:?} wrote something"
    );
}

const LONG: [&str; 5] = ["run", "--workload", "getpid", "--rounds", "100000"];

fn long_with(extra: &[&str]) -> Vec<String> {
    LONG.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn refused_run(extra: &[&str], needles: &[&str]) {
    let args = long_with(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, needles);
}

#[test]
fn cpus_that_do_not_exist_are_usage_errors_naming_the_valid_range() {
    let valid = allowed_list();
    let beyond = (cpu_count() + 97).to_string();
    refused_run(
        &["--pin", &beyond],
        &["--pin", &format!("CPU {beyond}"), &valid],
    );
    refused_run(
        &["--cpuset", &beyond],
        &["--cpuset", &format!("CPU {beyond}"), &valid],
    );
    refused_run(&["--cpuset", "1-0"], &["--cpuset", "empty range", &valid]);
    let too_many = (cpu_count() * 50).to_string();
    refused_run(
        &["--cpus", &too_many],
        &[
            "--cpus",
            "more than this machine has",
            &cpu_count().to_string(),
        ],
    );
    refused(
        &["exec", "--pin", &beyond, "--", "/bin/true"],
        &["--pin", &valid],
    );
}

#[test]
fn negative_numbers_get_a_message_that_fits() {
    for (opt, needle) in [
        ("--timeout", "seconds"),
        ("--pin", "CPU"),
        ("--rounds", "1..=100000"),
        ("--cpus", "CPU"),
    ] {
        let assert = vbench()
            .args(["run", opt, "-1"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(opt).and(predicate::str::contains(needle)));
        let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert!(!err.contains("'-- -1'"), "{opt}: {err}");
    }
}

#[test]
fn unknown_workloads_and_conflicts_are_usage_errors() {
    refused(
        &["run", "--workload", "nope"],
        &["unknown workload \"nope\"", "sha256"],
    );
    refused(
        &["run", "--workload", "getpid", "--", "/bin/true"],
        &["cannot be combined"],
    );
}
