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

#[test]
fn peers_compute_what_native_computes() {
    if !installed("qemu-x86_64") || !installed("valgrind") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("peers.json");
    let o = vbench()
        .args([
            "run",
            "--backend",
            "bt",
            "--backend",
            "qemu-user",
            "--backend",
            "valgrind",
        ])
        .args([
            "--workload",
            "intmix",
            "--workload",
            "getpid",
            "--quick",
            "--rounds",
            "3",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let doc = load(&out).unwrap();
    let peers: Vec<&str> = doc
        .plan
        .backends
        .iter()
        .filter(|b| b.peer)
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(peers, ["qemu-user", "valgrind"]);
    for peer in peers {
        for w in ["intmix", "getpid"] {
            let (i, _) = doc
                .plan
                .cells
                .iter()
                .enumerate()
                .find(|(_, c)| c.backend == peer && c.workload == w)
                .unwrap_or_else(|| panic!("no cell {w}/{peer}"));
            let s = doc.summaries.iter().find(|s| s.cell == i).unwrap();
            assert_eq!(s.checksum_matches_native, Some(true), "{w}/{peer}: {text}");
            let o = s.overhead.expect("an overhead against native");
            assert!(o.median > 0.0, "{w}/{peer}");
        }
    }
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
