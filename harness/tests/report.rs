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

#[test]
fn a_run_and_an_isolation_make_one_document() {
    let dir = tempfile::tempdir().unwrap();
    vbench()
        .current_dir(dir.path())
        .args(["run", "--quick", "--rounds", "1", "--workload", "getpid"])
        .args(["--backend", "bt", "--out", "r.json"])
        .assert()
        .success();
    vbench()
        .current_dir(dir.path())
        .args(["isolate", "--backend", "bt", "--probe", "hostname"])
        .args(["--probe", "popf", "--probe", "sgdt", "--out", "i.json"])
        .assert()
        .success();
    vbench()
        .current_dir(dir.path())
        .args(["report", "r.json", "i.json"])
        .assert()
        .success()
        .stdout(predicate::str::ends_with("r-i-report/index.html\n"));
    let md = std::fs::read_to_string(dir.path().join("r-i-report/report.md")).unwrap();
    assert!(
        md.starts_with("# vbench report: benchmarks and isolation"),
        "{md}"
    );
    for section in [
        "## Overhead against native",
        "## Isolation",
        "## Popek-Goldberg",
    ] {
        assert!(md.contains(section), "{section} in {md}");
    }
    assert!(md.contains("popf at CPL3 left IF set natively"), "{md}");
    let page = std::fs::read_to_string(dir.path().join("r-i-report/index.html")).unwrap();
    assert!(
        page.contains("id=\"chart-isolation\"") && page.contains("id=\"chart-popek-goldberg\"")
    );

    // the isolation alone: only its sections
    vbench()
        .current_dir(dir.path())
        .args(["report", "i.json"])
        .assert()
        .success();
    let md = std::fs::read_to_string(dir.path().join("i-report/report.md")).unwrap();
    assert!(md.starts_with("# vbench report: isolation\n"), "{md}");
    assert!(
        !md.contains("rounds planned") && !md.contains("## Overhead"),
        "{md}"
    );
    assert!(md.contains("vbench isolate --backend bt"), "{md}");

    // pairs that are not one of each
    for (args, says) in [
        (["report", "i.json", "r.json"], "i.json holds no benchmarks"),
        (
            ["report", "r.json", "r.json"],
            "r.json holds no isolation matrix",
        ),
    ] {
        let o = vbench()
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{err}");
    }
    assert!(!dir.path().join("i-r-report").exists() && !dir.path().join("r-r-report").exists());
}

/// `run --isolate`: benchmarks, then every probe on the same backends, in one results file and
/// one report that opens with the trade-off. Privileged: the container needs root.
#[test]
fn run_isolate_writes_one_document_with_the_tradeoff() {
    if !vbench_testkit::require_or_skip("run --isolate with the container", vbench_testkit::root())
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    vbench()
        .current_dir(dir.path())
        .args(["run", "--quick", "--rounds", "1", "--workload", "getpid"])
        .args([
            "--workload",
            "intmix",
            "--backend",
            "container",
            "--backend",
            "bt",
        ])
        .args([
            "--backend",
            "qemu-user",
            "--isolate",
            "--out",
            "r.json",
            "--report",
            "rep",
        ])
        .assert()
        .success();
    let doc = vbench_results::load(&dir.path().join("r.json")).unwrap();
    assert!(!doc.samples.is_empty());
    let m = doc.isolation.expect("an isolation matrix");
    let cols: Vec<&str> = m.backends.iter().map(|b| b.name.as_str()).collect();
    // qemu-user is a peer isolate does not probe
    assert_eq!(
        cols,
        ["native", "container", "container/host", "bt", "bt/host"]
    );
    let page = std::fs::read_to_string(dir.path().join("rep/index.html")).unwrap();
    assert!(
        page.contains("id=\"chart-tradeoff\""),
        "native, container and bt on both axes"
    );
    let md = std::fs::read_to_string(dir.path().join("rep/report.md")).unwrap();
    assert!(
        md.contains("## Isolation and performance") && md.contains("--isolate\n```"),
        "{md}"
    );
}

/// Starts `run --backend bt --isolate` and sends `sig` a second after the probes began; the
/// results file it leaves.
fn interrupt_isolation(dir: &Path, sig: libc::c_int) -> (std::process::ExitStatus, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vbench"))
        .current_dir(dir)
        .args(["run", "--quick", "--rounds", "1", "--workload", "getpid"])
        .args(["--backend", "bt", "--isolate", "--out", "r.json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("vbench ended before probing: {said}");
        }
        said.push_str(&line);
        if line.contains("probing what each backend contains") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    (child.wait().unwrap(), said + &rest)
}

#[test]
fn an_interrupted_isolation_keeps_the_benchmarks_and_the_probes_done() {
    let dir = tempfile::tempdir().unwrap();
    let (status, said) = interrupt_isolation(dir.path(), libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{said}");
    let doc = vbench_results::load(&dir.path().join("r.json")).unwrap();
    assert_eq!(doc.status, vbench_results::RunStatus::Interrupted);
    assert!(!doc.samples.is_empty(), "the benchmarks are kept");
    let m = doc.isolation.expect("the probes done so far");
    assert!(
        m.probes.len() < vbench_workloads::probes::PROBES.len(),
        "stopped early: {} probes",
        m.probes.len()
    );

    // killed outright: the file says the run did not finish
    let (status, said) = interrupt_isolation(dir.path(), libc::SIGKILL);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{said}"
    );
    let doc = vbench_results::load(&dir.path().join("r.json")).unwrap();
    assert_eq!(doc.status, vbench_results::RunStatus::Running);
    assert!(doc.isolation.is_none() && !doc.samples.is_empty());
    vbench()
        .current_dir(dir.path())
        .args(["show", "r.json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("vbench was killed"));
}
