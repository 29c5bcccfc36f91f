//! Integration tests of `vbench` with the binary-translation backend (no privileges needed).

use assert_cmd::Command;
use vbench_backends::bt::BtBackend;
use vbench_backends::Backend;
use vbench_results::load;

fn vbench() -> Command {
    Command::cargo_bin("vbench").unwrap()
}

#[test]
fn every_workload_computes_the_same_under_the_translator() {
    let have = BtBackend.availability().into_result();
    if !vbench_testkit::require_or_skip("the bt backend", have) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    vbench()
        .args([
            "run",
            "--backend",
            "bt",
            "--quick",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let doc = load(&out).unwrap();
    assert!(doc.failures.is_empty(), "{:?}", doc.failures);
    let cells: Vec<_> = doc
        .plan
        .cells
        .iter()
        .filter(|c| c.backend == "bt")
        .collect();
    assert_eq!(cells.len(), vbench_workloads::TASKS.len());
    for c in cells {
        let s = doc.summary(c.id).unwrap();
        assert_eq!(s.checksum_matches_native, Some(true), "{}", c.workload);
    }
    let sample = doc
        .samples
        .iter()
        .find(|r| doc.plan.cells[r.cell].backend == "bt")
        .unwrap();
    for k in [
        "bt.blocks_translated",
        "bt.cache_bytes",
        "bt.links",
        "bt.indirect_hits",
        "bt.indirect_misses",
        "bt.dispatcher_entries",
        "bt.emulated.syscall",
        "bt.invalidations",
    ] {
        assert!(
            sample.sample.counters.contains_key(k),
            "{k} missing: {:?}",
            sample.sample.counters
        );
    }
    assert!(sample.sample.startup_ns.is_some());
}
