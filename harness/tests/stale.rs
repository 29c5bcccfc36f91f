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

/// The live processes as (pid, parent pid, process group).
fn processes() -> Vec<(i32, i32, i32)> {
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
        if f[0] != "Z" {
            v.push((pid, f[1].parse().unwrap(), f[2].parse().unwrap()));
        }
    }
    v
}

/// The live processes of process group `pgid`, as (pid, parent pid).
fn group(pgid: i32) -> Vec<(i32, i32)> {
    processes()
        .into_iter()
        .filter(|p| p.2 == pgid)
        .map(|p| (p.0, p.1))
        .collect()
}

/// Kills what a failed test would leave.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: killpg with a group this test made (vbench's own, or its child's).
        unsafe { libc::killpg(self.0, libc::SIGKILL) };
    }
}

/// Starts `vbench ARGS -- /bin/sh -c 'sleep 300 & sleep 300'` as a shell with job control
/// does (vbench leads its own process group), SIGKILLs it once the sleeps run, checks that
/// only what PR_SET_PDEATHSIG cannot reach (the shell's background job) survives, then that
/// the next vbench that runs something kills the survivors and removes the registry files.
fn survivors_are_killed_by_the_next_start(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut vb = std::process::Command::new(BIN)
        .args(args)
        .args(["--", "/bin/sh", "-c", "sleep 300 & sleep 300"])
        .env(registry::DIR_ENV, dir.path())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let me = vb.id() as i32;
    let _vbench_group = KillGroup(me);
    // the child's group: vbench's own (exec) or the child's (a captured run)
    let mut pgid = 0;
    wait_for("the shell's sleeps", Duration::from_secs(20), || {
        let all = processes();
        let Some(child) = all.iter().find(|p| p.1 == me) else {
            return false;
        };
        pgid = child.2;
        // both sleeps exist (dash may fork the last one or exec it): the group no longer grows
        let sleeping = |p: &&(i32, i32, i32)| {
            std::fs::read_to_string(format!("/proc/{}/comm", p.0)).is_ok_and(|c| c == "sleep\n")
        };
        all.iter()
            .filter(|p| p.2 == pgid && p.0 != me)
            .filter(sleeping)
            .count()
            >= 2
    });
    let _child_group = KillGroup(pgid);
    let text = std::fs::read_to_string(dir.path().join(format!("{me}.pgids"))).unwrap();
    assert!(
        text.lines()
            .skip(1)
            .any(|l| l.starts_with(&format!("{pgid} "))),
        "the child's group is recorded: {text:?}"
    );
    let direct: Vec<i32> = group(pgid)
        .into_iter()
        .filter(|&(_, ppid)| ppid == me)
        .map(|(pid, _)| pid)
        .collect();
    assert!(!direct.is_empty());
    // a vbench that is alive keeps its children, whatever another vbench's start does
    let before = group(pgid).len();
    vbench(dir.path())
        .args(["exec", "--", "/bin/sh", "-c", "exit 0"])
        .assert()
        .success()
        .stderr(predicate::str::contains("leftover").not());
    assert_eq!(
        group(pgid).len(),
        before,
        "a live vbench's group was touched"
    );
    sigkill(&mut vb);
    // the child vbench spawned dies with it (PR_SET_PDEATHSIG) ...
    wait_for("the direct child's death", Duration::from_secs(10), || {
        let left = group(pgid);
        direct.iter().all(|d| left.iter().all(|(p, _)| p != d))
    });
    // ... what that child forked does not
    assert!(
        !group(pgid).is_empty(),
        "the background sleep outlives vbench"
    );
    vbench(dir.path())
        .args(["exec", "--", "/bin/sh", "-c", "exit 0"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "leftover process(es) of an earlier vbench (pid {me})"
        )));
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
fn survivors_of_a_killed_exec_are_killed_by_the_next_start() {
    let _serial = serial();
    survivors_are_killed_by_the_next_start(&["exec"]);
}

#[test]
fn survivors_of_a_killed_run_are_killed_by_the_next_start() {
    let _serial = serial();
    survivors_are_killed_by_the_next_start(&[
        "run",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--timeout",
        "600",
        "--out",
        "/dev/null",
    ]);
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
