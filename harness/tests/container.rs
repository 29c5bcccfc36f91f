//! Privileged integration tests of `vbench` with the container backend: real namespaces and
//! cgroups. Skipped only when not root and VBENCH_REQUIRE_PRIVILEGED is unset (CI sets it).

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vbench_backends::container::cgroup::Layout;
use vbench_results::{load, RunStatus};

const BUSYBOX: &str = "/bin/busybox";

fn privileged() -> bool {
    use vbench_testkit::{both, file, require_or_skip, root};
    require_or_skip("a privileged container test", both(root(), file(BUSYBOX)))
}

fn vbench() -> Command {
    Command::cargo_bin("vbench").unwrap()
}

/// cgroups named after `pid` in any hierarchy vbench uses.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("vbench-{pid}-");
    Layout::host()
        .unwrap()
        .parents()
        .into_iter()
        .flat_map(|p| {
            std::fs::read_dir(p)
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.path())
        })
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect()
}

#[test]
fn every_workload_computes_the_same_in_the_container() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    vbench()
        .args([
            "run",
            "--backend",
            "container",
            "--quick",
            "--rounds",
            "2",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("container"));
    let doc = load(&out).unwrap();
    assert!(doc.failures.is_empty(), "{:?}", doc.failures);
    let containers: Vec<_> = doc
        .plan
        .cells
        .iter()
        .filter(|c| c.backend == "container")
        .collect();
    assert_eq!(containers.len(), vbench_workloads::TASKS.len());
    for c in containers {
        let s = doc.summary(c.id).unwrap();
        assert_eq!(s.checksum_matches_native, Some(true), "{}", c.workload);
        assert!(s.overhead.is_some());
    }
    let startups: Vec<_> = doc
        .samples
        .iter()
        .filter(|r| doc.plan.cells[r.cell].backend == "container")
        .map(|r| r.sample.startup_ns.unwrap())
        .collect();
    assert!(startups.iter().all(|s| *s > 0));
}

#[test]
fn exec_timeout_leaves_no_cgroup_and_no_process() {
    if !privileged() {
        return;
    }
    let bin = assert_cmd::cargo::cargo_bin("vbench");
    let t = Instant::now();
    let child = std::process::Command::new(bin)
        .args([
            "exec",
            "--backend",
            "container",
            "--timeout",
            "0.5",
            "--",
            BUSYBOX,
            "sleep",
            "30",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(cgroups_of(pid), Vec::<PathBuf>::new());
}

#[test]
fn exec_passes_output_and_status_through_the_container() {
    if !privileged() {
        return;
    }
    vbench()
        .args([
            "exec",
            "--backend",
            "container",
            "--",
            BUSYBOX,
            "sh",
            "-c",
            "echo pid=$$ host=$(hostname); exit 3",
        ])
        .assert()
        .code(3)
        .stdout("pid=2 host=vbench\n");
}

#[test]
fn interrupted_container_run_cleans_up() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let bin = assert_cmd::cargo::cargo_bin("vbench");
    let mut child = std::process::Command::new(bin)
        .args([
            "run",
            "--backend",
            "container",
            "--workload",
            "intmix",
            "--quick",
            "--rounds",
            "100000",
            "--out",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !load(&out).is_ok_and(|d| !d.samples.is_empty()) {
        assert!(Instant::now() < deadline, "no round completed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(load(&out).unwrap().status, RunStatus::Interrupted);
    assert_eq!(cgroups_of(child.id()), Vec::<PathBuf>::new());
}

#[test]
fn stale_cgroups_of_killed_runs_are_removed_at_start_up() {
    if !privileged() {
        return;
    }
    // a pid that cannot be alive: above the kernel's pid_max
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stale: Vec<PathBuf> = Layout::host()
        .unwrap()
        .parents()
        .into_iter()
        .map(|p| p.join(format!("vbench-{}-0", max + 1)))
        .collect();
    for d in &stale {
        std::fs::create_dir(d).unwrap();
    }
    vbench()
        .args(["exec", "--backend", "container", "--", BUSYBOX, "true"])
        .assert()
        .success()
        .stderr(predicate::str::contains("removed stale cgroup"));
    for d in &stale {
        assert!(!d.exists(), "{} still there", d.display());
    }
}

#[test]
fn bad_container_options_are_usage_errors() {
    vbench()
        .args(["run", "--container-ns", "pid,vm"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown namespace \"vm\""));
    vbench()
        .args(["run", "--cpus", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--cpus"));
    vbench()
        .args(["run", "--memory", "12"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--memory"));
    vbench()
        .args(["run", "--cpuset", "a-b"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cpuset"));
}

#[test]
fn harness_killed_mid_run_leaves_nothing_after_the_next_start() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let bin = assert_cmd::cargo::cargo_bin("vbench");
    let mut child = std::process::Command::new(&bin)
        .args([
            "run",
            "--backend",
            "container",
            "--workload",
            "sieve",
            "--rounds",
            "100000",
            "--out",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !load(&out).is_ok_and(|d| !d.samples.is_empty()) {
        assert!(Instant::now() < deadline, "no round completed");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100)); // likely mid-run of a container now
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    // the container's processes die with their parent (PR_SET_PDEATHSIG) ...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let orphans = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string));
                cmd.starts_with(b"vbench-workload\x00sieve") && ppid.as_deref() == Some("1")
            })
            .count();
        if orphans == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{orphans} container processes outlived the killed harness"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... its cgroup may remain, and the next start removes it
    vbench()
        .args(["exec", "--backend", "container", "--", BUSYBOX, "true"])
        .assert()
        .success();
    assert_eq!(cgroups_of(child.id()), Vec::<PathBuf>::new());
    // the results file is the last complete write: valid, and still saying it was running
    assert_eq!(load(&out).unwrap().status, RunStatus::Running);
    let temps: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(temps.len() <= 1, "{temps:?}");
}

/// Mount points of this (the host's) mount namespace.
fn host_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect()
}

#[test]
fn volumes_workdir_env_and_the_host_root_work_as_docker_users_expect() {
    if !privileged() {
        return;
    }
    let before = host_mounts();
    let dir = tempfile::tempdir().unwrap();
    let (data, work) = (dir.path().join("data"), dir.path().join("work"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(data.join("in.txt"), "from the host\n").unwrap();
    std::fs::write(work.join("here.txt"), "in the current directory\n").unwrap();
    // the host root (exec's default): the current directory read-write and the working
    // directory, the host's tools, a dynamically linked program (/bin/ls), vbench's environment
    // plus -e, a read-only and a read-write volume
    let script = "pwd; cat here.txt; cat /in/in.txt; echo new > made.txt; \
                  { echo no > /in/x; } 2>/dev/null || echo read-only; echo out > /out/w.txt; \
                  /bin/ls /in; echo \"$VBENCH_T $SET $PASSED\"; id -un";
    vbench()
        .current_dir(&work)
        .env("VBENCH_T", "inherited")
        .env("PASSED", "through")
        .args(["exec", "--backend", "container", "-e", "SET=by-e", "-e", "PASSED"])
        .arg("-v")
        .arg(format!("{}:/in:ro", data.display()))
        .arg("-v")
        .arg(format!("{}:/out", data.display()))
        .args(["--", "/bin/sh", "-c", script])
        .assert()
        .success()
        .stdout(format!(
            "{}\nin the current directory\nfrom the host\nread-only\nin.txt\nw.txt\ninherited by-e through\nroot\n",
            work.display()
        ));
    assert_eq!(
        std::fs::read_to_string(work.join("made.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("w.txt")).unwrap(),
        "out\n"
    );
    // -w, and the minimal root: only the program, root named in /etc/passwd; a program of the
    // user's gets vbench's environment whatever the root
    vbench()
        .current_dir(&work)
        .env("VBENCH_T", "kept")
        .args([
            "exec",
            "--backend",
            "container",
            "--rootfs",
            "minimal",
            "-w",
            "/tmp",
        ])
        .args([
            "--",
            BUSYBOX,
            "sh",
            "-c",
            "pwd; ls /; id -un; echo $VBENCH_T",
        ])
        .assert()
        .success()
        .stdout("/tmp\nbusybox\ndev\netc\nproc\ntmp\nroot\nkept\n");
    // a root directory of the user's, read-only, its own programs
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    vbench()
        .args(["exec", "--backend", "container", "--rootfs"])
        .arg(&root)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "ls /bin; { echo x > /bin/y; } 2>/dev/null || echo read-only",
        ])
        .assert()
        .success()
        .stdout("busybox\nsh\nread-only\n");
    // the errors name the problem
    vbench()
        .args([
            "exec",
            "--backend",
            "container",
            "-v",
            "/no/such/dir:/d",
            "--",
            BUSYBOX,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("host path /no/such/dir"));
    vbench()
        .args([
            "exec",
            "--backend",
            "container",
            "-w",
            "/no/such/dir",
            "--",
            BUSYBOX,
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "the working directory /no/such/dir in the container",
        ));
    vbench()
        .args([
            "exec",
            "--backend",
            "container",
            "--rootfs",
            "minimal",
            "--",
            "/bin/ls",
        ])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("ELF interpreter")
                .and(predicate::str::contains("--rootfs host")),
        );
    vbench()
        .args([
            "exec",
            "--backend",
            "native",
            "-e",
            "A=b",
            "--",
            BUSYBOX,
            "true",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("set up the container backend"));
    vbench()
        .args([
            "exec",
            "--backend",
            "container",
            "--container-ns",
            "pid,user",
            "-v",
        ])
        .arg(&data)
        .args(["--", BUSYBOX, "true"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("mount namespace"));
    // nothing of it is mounted on the host
    assert_eq!(host_mounts(), before);
}

#[test]
fn a_killed_harness_leaves_no_volume_mounted() {
    if !privileged() {
        return;
    }
    let before = host_mounts();
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("vbench");
    let mut child = std::process::Command::new(&bin)
        .current_dir(dir.path())
        .args(["exec", "--backend", "container", "-v"])
        .arg(format!("{}:/vol", dir.path().display()))
        .args(["--", "/bin/sh", "-c", "touch /vol/started; exec sleep 60"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path().join("started").exists() {
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    // the mounts lived in the container's mount namespace only, which dies with its processes
    assert_eq!(host_mounts(), before);
    // the next start removes its cgroup
    vbench()
        .args(["exec", "--backend", "container", "--", BUSYBOX, "true"])
        .assert()
        .success();
    assert_eq!(cgroups_of(child.id()), Vec::<PathBuf>::new());
}

#[test]
fn run_of_a_users_program_takes_the_containers_files_options() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "data\n").unwrap();
    let out = dir.path().join("r.json");
    // the program reads a volume and an -e setting; its digest is the same on both backends
    // only when the container sees the same bytes as native
    vbench()
        .current_dir(dir.path())
        .env("GREETING", "hello")
        .args([
            "run",
            "--backend",
            "container",
            "--rounds",
            "2",
            "-e",
            "GREETING",
        ])
        .arg("-v")
        .arg(format!(
            "{}:{}:ro",
            dir.path().display(),
            dir.path().display()
        ))
        .args(["--workdir"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .args(["--", "/bin/sh", "-c", "cat in.txt; echo $GREETING"])
        .assert()
        .success();
    let doc = load(&out).unwrap();
    assert!(doc.failures.is_empty(), "{:?}", doc.failures);
    let s = doc
        .summaries
        .iter()
        .find(|s| doc.plan.cells[s.cell].backend == "container")
        .unwrap();
    assert_eq!(s.checksum_matches_native, Some(true));
    // they set up the container: a run without it says so
    vbench()
        .args(["run", "--backend", "bt", "-e", "A=b", "--", BUSYBOX, "true"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("add --backend container"));
}
