//! Integration tests of `vbench report`, running the real binary.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn vbench() -> Command {
    Command::cargo_bin("vbench").unwrap()
}

fn nothing_written(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "bad.json" && n != "new.json")
        .collect();
    assert!(left.is_empty(), "written despite the error: {left:?}");
}

#[test]
fn a_malformed_results_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    // valid JSON, wrong shape
    std::fs::write(&bad, "{\n  \"schema_version\": 1,\n  \"tool\": 3\n}\n").unwrap();
    vbench()
        .current_dir(dir.path())
        .args(["report", "bad.json"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(
            predicate::str::starts_with(
                "vbench: error: cannot read the results file: bad.json: line 3, column",
            )
            .and(predicate::str::contains("invalid type")),
        );
    // not JSON at all
    std::fs::write(&bad, "results: yes\n").unwrap();
    vbench()
        .current_dir(dir.path())
        .args(["report", "bad.json", "--out", "rep"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.json: line 1, column 1"));
    nothing_written(dir.path());
}

#[test]
fn missing_newer_and_compared_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    vbench()
        .current_dir(dir.path())
        .args(["report", "nope.json"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "cannot read the results file: nope.json: No such file",
        ));
    std::fs::write(dir.path().join("new.json"), "{\"schema_version\": 99}").unwrap();
    vbench()
        .current_dir(dir.path())
        .args(["report", "new.json"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("schema version 99 is newer"));
    vbench()
        .current_dir(dir.path())
        .args(["report", "--compare", "nope.json", "new.json"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nope.json"));
    nothing_written(dir.path());
}

#[test]
fn usage_errors() {
    vbench().args(["report"]).assert().code(2);
    vbench()
        .args(["report", "--compare", "a.json"])
        .assert()
        .code(2);
    vbench()
        .args(["report", "a.json", "--compare", "b.json", "c.json"])
        .assert()
        .code(2);
}

#[test]
fn a_real_run_is_reported_and_compared() {
    let dir = tempfile::tempdir().unwrap();
    vbench()
        .current_dir(dir.path())
        .args(["run", "--quick", "--rounds", "2", "--workload", "getpid"])
        .args(["--workload", "intmix", "--out", "r.json"])
        .assert()
        .success();
    vbench()
        .current_dir(dir.path())
        .args(["report", "r.json"])
        .assert()
        .success()
        .stdout(predicate::str::ends_with("r-report/index.html\n"));
    for f in [
        "index.html",
        "cost.svg",
        "distribution.svg",
        "report.md",
        "summary.csv",
        "samples.csv",
    ] {
        let p = dir.path().join("r-report").join(f);
        assert!(std::fs::metadata(&p).unwrap().len() > 0, "{}", p.display());
    }
    let page = std::fs::read_to_string(dir.path().join("r-report/index.html")).unwrap();
    assert!(page.contains("getpid") && page.contains("<svg"));
    vbench()
        .current_dir(dir.path())
        .args(["report", "--compare", "r.json", "r.json", "--out", "cmp"])
        .assert()
        .success();
    let md = std::fs::read_to_string(dir.path().join("cmp/compare.md")).unwrap();
    assert!(md.contains("0 slower, 0 faster"), "{md}");
}
