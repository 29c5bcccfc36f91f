//! The peer backends, qemu-user and valgrind, run the same workload ELF through the same
//! harness: the same checksums as native, overheads against native, stdio passed through by
//! `vbench exec`; `--backend all` does not select them. CI installs both tools
//! (VBENCH_REQUIRE_PRIVILEGED makes a missing one a failure instead of a skip).

use assert_cmd::Command;
use vbench_results::load;

fn installed(tool: &str) -> bool {
    vbench_testkit::require_or_skip(tool, vbench_testkit::on_path(tool))
}

fn vbench() -> Command {
    Command::cargo_bin("vbench").unwrap()
}

/// `vbench run` of intmix and getpid on `backends` (quick, 3 rounds): the document, after checking
/// that every peer's cells computed what native computed; and the peers that ran.
fn run_peers(backends: &[&str]) -> (vbench_results::Document, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("peers.json");
    let mut cmd = vbench();
    cmd.arg("run");
    for b in backends {
        cmd.args(["--backend", b]);
    }
    let o = cmd
        .args(["--workload", "intmix", "--workload", "getpid", "--quick"])
        .args(["--rounds", "3", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let doc = load(&out).unwrap();
    let peers: Vec<String> = doc
        .plan
        .backends
        .iter()
        .filter(|b| b.peer)
        .map(|b| b.name.clone())
        .collect();
    for peer in &peers {
        for w in ["intmix", "getpid"] {
            let (i, _) = doc
                .plan
                .cells
                .iter()
                .enumerate()
                .find(|(_, c)| c.backend == *peer && c.workload == w)
                .unwrap_or_else(|| panic!("no cell {w}/{peer}: {text}"));
            let s = doc.summaries.iter().find(|s| s.cell == i).unwrap();
            assert_eq!(s.checksum_matches_native, Some(true), "{w}/{peer}: {text}");
            let o = s.overhead.expect("an overhead against native");
            assert!(o.median > 0.0, "{w}/{peer}");
        }
    }
    (doc, peers)
}

#[test]
fn peers_compute_what_native_computes() {
    if !installed("qemu-x86_64") || !installed("valgrind") {
        return;
    }
    let (doc, peers) = run_peers(&["bt", "qemu-user", "valgrind"]);
    assert_eq!(peers, ["qemu-user", "valgrind"]);
    // the report has its peers section
    let md = vbench_reports::markdown::render(&doc);
    assert!(md.contains("## Peers"), "{md}");
}

#[test]
fn exec_under_a_peer_passes_stdio_and_status_through() {
    if !installed("valgrind") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("wl");
    vbench().arg("workload-elf").arg(&wl).assert().success();
    let o = vbench()
        .args(["exec", "--backend", "valgrind", "--"])
        .arg(&wl)
        .args(["getpid", "iters=10"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("VBENCH task=getpid iters=10 "),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // bad arguments: the workload's usage error and exit status 2 come through the peer
    let o = vbench()
        .args(["exec", "--backend", "valgrind", "--"])
        .arg(&wl)
        .arg("no-such-task")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn all_means_vbench_s_own_backends() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.json");
    vbench()
        .args([
            "run",
            "--backend",
            "all",
            "--workload",
            "getpid",
            "--quick",
            "--rounds",
            "1",
        ])
        .args(["--warmup", "0", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let doc = load(&out).unwrap();
    let names: Vec<&str> = doc.plan.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["native", "container", "bt", "kvm"]);
}

/// crun beside the container: the same checksums, a Peers table grouping it with the container,
/// stdio and status through `exec`, and nothing left in crun's state directory or the cgroups.
#[test]
fn crun_runs_the_workloads_beside_the_container() {
    if !installed("crun") || !vbench_testkit::require_or_skip("root (crun)", vbench_testkit::root())
    {
        return;
    }
    let (doc, peers) = run_peers(&["container", "crun"]);
    assert_eq!(peers, ["crun"]);
    let md = vbench_reports::markdown::render(&doc);
    assert!(
        md.contains("| container vs native | crun vs native | container / fastest peer |"),
        "{md}"
    );
    // exec: output and status through crun
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("wl");
    vbench().arg("workload-elf").arg(&wl).assert().success();
    let o = vbench()
        .args(["exec", "--backend", "crun", "--"])
        .arg(&wl)
        .arg("no-such-task")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // nothing of this test's vbench processes is left: no state, no bundle, no cgroup
    let left: Vec<String> = std::fs::read_dir(vbench_backends::crun::STATE)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let alive = |name: &str| {
        name.split('-')
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    assert!(left.iter().all(|n| alive(n)), "left behind: {left:?}");
    let cgroups: Vec<String> = vbench_backends::container::cgroup::Layout::host()
        .unwrap()
        .parents()
        .iter()
        .flat_map(|p| std::fs::read_dir(p).unwrap().filter_map(|e| e.ok()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vbench-") && !alive(n))
        .collect();
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
}

/// gVisor beside the container: the same checksums, the Peers table grouping it with the
/// container, stdio and status through `exec`, and nothing left: no per-run directory, no
/// runsc cgroup (runsc runs with --ignore-cgroups).
#[test]
fn gvisor_runs_the_workloads_beside_the_container() {
    if !installed("runsc")
        || !vbench_testkit::require_or_skip("root (runsc)", vbench_testkit::root())
    {
        return;
    }
    let runsc_cgroups = || -> Vec<String> {
        std::fs::read_dir("/sys/fs/cgroup/memory")
            .or_else(|_| std::fs::read_dir("/sys/fs/cgroup"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("runsc-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = runsc_cgroups();
    let (doc, peers) = run_peers(&["container", "gvisor"]);
    assert_eq!(peers, ["gvisor"]);
    let md = vbench_reports::markdown::render(&doc);
    assert!(md.contains("gvisor vs native"), "{md}");
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("wl");
    vbench().arg("workload-elf").arg(&wl).assert().success();
    let o = vbench()
        .args(["exec", "--backend", "gvisor", "--"])
        .arg(&wl)
        .args(["getpid", "iters=10"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("VBENCH task=getpid iters=10 "));
    let o = vbench()
        .args(["exec", "--backend", "gvisor", "--"])
        .arg(&wl)
        .arg("no-such-task")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let left: Vec<String> = std::fs::read_dir(vbench_backends::gvisor::STATE)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.split('-')
                        .next()
                        .and_then(|p| p.parse::<u32>().ok())
                        .is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let new: Vec<String> = runsc_cgroups()
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    assert!(new.is_empty(), "runsc cgroups: {new:?}");
}

/// A vbench killed while gVisor runs: runsc, its sandbox and gofer go with it, and the next
/// vbench removes the per-run directory it left.
#[test]
fn a_killed_vbench_leaves_no_gvisor_behind() {
    if !installed("runsc")
        || !vbench_testkit::require_or_skip("root (runsc)", vbench_testkit::root())
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("wl");
    vbench().arg("workload-elf").arg(&wl).assert().success();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vbench"))
        .args(["exec", "--backend", "gvisor", "--"])
        .arg(&wl)
        .args(["intmix", "iters=100G"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run_dir = format!("{}/{}-", vbench_backends::gvisor::STATE, child.id());
    // runsc's processes name their scratch directory, inside the per-run one, on their command line
    let runsc_procs = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let st = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let zombie = st
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'));
                !zombie && String::from_utf8_lossy(&cmd).contains(&run_dir)
            })
            .collect()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while runsc_procs().len() < 2 {
        assert!(
            std::time::Instant::now() < until,
            "gVisor's sandbox did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !runsc_procs().is_empty() {
        assert!(
            std::time::Instant::now() < until,
            "left running: {:?}",
            runsc_procs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // the next vbench that runs anything sweeps the directory
    let o = vbench()
        .args(["exec", "--backend", "native", "--"])
        .arg(&wl)
        .args(["getpid", "iters=1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let left: Vec<_> = std::fs::read_dir(vbench_backends::gvisor::STATE)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    format!(
                        "{}/{}",
                        vbench_backends::gvisor::STATE,
                        e.file_name().to_string_lossy()
                    )
                    .starts_with(&run_dir)
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
