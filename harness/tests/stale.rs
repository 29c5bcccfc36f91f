//! What a SIGKILLed vbench leaves behind: its results file, which `show` and `report` must
//! call unfinished; the processes its children left, its cgroups, both removed by the next
//! vbench that runs anything.

use assert_cmd::Command;
use predicates::prelude::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use vbench_backends::container::cgroup::Layout;
use vbench_backends::session::process::registry;
use vbench_results::RunStatus;

const KILLED: &str = "this run did not finish (vbench was killed)";
const BIN: &str = env!("CARGO_BIN_EXE_vbench");

/// The tests of this file one at a time: each vbench start cleans what the others staged.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn vbench(runtime: &Path) -> Command {
    let mut c = Command::cargo_bin("vbench").unwrap();
    c.env(registry::DIR_ENV, runtime);
    c
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigkill(child: &mut std::process::Child) {
    // SAFETY: kill on the pid of our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
}

#[test]
fn a_killed_run_is_called_unfinished_by_show_and_report() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.json");
    let mut run = std::process::Command::new(BIN)
        .args(["run", "--rounds", "3", "--warmup", "0", "--out"])
        .arg(&file)
        .args(["--", "/bin/sleep", "5"])
        .env(registry::DIR_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the results file", Duration::from_secs(20), || {
        vbench_results::load(&file).is_ok()
    });
    let doc = vbench_results::load(&file).unwrap();
    assert_eq!(doc.status, RunStatus::Running);
    assert_eq!(doc.writer.as_ref().map(|w| w.pid), Some(run.id()));
    // while its vbench runs, the file is a run in progress
    vbench(dir.path())
        .arg("show")
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::contains(KILLED).not());
    sigkill(&mut run);
    vbench(dir.path())
        .arg("show")
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::contains(KILLED));
    vbench(dir.path())
        .args(["show", "--json"])
        .arg(&file)
        .assert()
        .success()
        .stderr(predicate::str::contains(KILLED));
    let out = dir.path().join("report");
    vbench(dir.path())
        .arg("report")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains(KILLED));
    for page in ["report.md", "index.html"] {
        let text = std::fs::read_to_string(out.join(page)).unwrap();
        assert!(text.contains(KILLED), "{page} has no banner");
    }
}

/// The live processes of process group `pgid`, as (pid, parent pid).
fn group(pgid: i32) -> Vec<(i32, i32)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let f: Vec<&str> = text[text.rfind(')').unwrap() + 2..].split(' ').collect();
        // fields 3 (state), 4 (ppid), 5 (pgrp)
        if f[2].parse() == Ok(pgid) && f[0] != "Z" {
            v.push((pid, f[1].parse().unwrap()));
        }
    }
    v
}

/// Kills what a failed test would leave.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: killpg with a group this test made (vbench's own, led by it).
        unsafe { libc::killpg(self.0, libc::SIGKILL) };
    }
}

#[test]
fn survivors_of_a_killed_exec_are_killed_by_the_next_start() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // as a shell with job control starts it: vbench leads its own process group
    let mut exec = std::process::Command::new(BIN)
        .args(["exec", "--", "/bin/sh", "-c", "sleep 300 & sleep 300"])
        .env(registry::DIR_ENV, dir.path())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pgid = exec.id() as i32;
    let _cleanup = KillGroup(pgid);
    let registry_file = dir.path().join(format!("{pgid}.pgids"));
    // vbench, sh and the background sleep at least (sh may exec the last sleep itself)
    wait_for("the shell's sleeps", Duration::from_secs(20), || {
        group(pgid).len() >= 3
    });
    let text = std::fs::read_to_string(&registry_file).unwrap();
    assert!(
        text.lines()
            .skip(1)
            .any(|l| l.starts_with(&format!("{pgid} "))),
        "the child's group is recorded: {text:?}"
    );
    let direct: Vec<i32> = group(pgid)
        .into_iter()
        .filter(|&(_, ppid)| ppid == pgid)
        .map(|(pid, _)| pid)
        .collect();
    assert!(!direct.is_empty());
    sigkill(&mut exec);
    // the child vbench spawned dies with it (PR_SET_PDEATHSIG) ...
    wait_for("the direct child's death", Duration::from_secs(10), || {
        let left = group(pgid);
        direct.iter().all(|d| left.iter().all(|(p, _)| p != d))
    });
    // ... what that child forked does not
    let survivors = group(pgid);
    assert!(
        !survivors.is_empty(),
        "the background sleep outlives vbench"
    );
    assert!(registry_file.exists());
    vbench(dir.path())
        .args(["exec", "--", "/bin/sh", "-c", "exit 0"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "leftover process(es) of an earlier vbench",
        ));
    wait_for("the survivors' death", Duration::from_secs(10), || {
        group(pgid).is_empty()
    });
    let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "registry files left: {left:?}");
}

#[test]
fn stale_cgroups_are_removed_by_a_native_run() {
    let _serial = serial();
    if !vbench_testkit::require_or_skip("root, to make cgroups", vbench_testkit::root()) {
        return;
    }
    let Ok(layout) = Layout::host() else {
        assert!(
            !vbench_testkit::skips_forbidden(),
            "no cgroup hierarchy on this host"
        );
        return;
    };
    // a pid that cannot be alive: above the kernel's pid_max
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stale: Vec<PathBuf> = layout
        .parents()
        .into_iter()
        .map(|p| p.join(format!("vbench-{}-0", max + 2)))
        .collect();
    for d in &stale {
        std::fs::create_dir(d).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    vbench(dir.path())
        .args([
            "run",
            "--backend",
            "native",
            "--workload",
            "getpid",
            "--quick",
        ])
        .arg("--out")
        .arg(dir.path().join("r.json"))
        .assert()
        .success()
        .stderr(predicate::str::contains("removed stale cgroup"));
    for d in &stale {
        assert!(!d.exists(), "{} still there", d.display());
    }
}
