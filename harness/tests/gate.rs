//! Integration tests of `vbench gate` and `vbench compare` with the real binary: two runs of
//! the same build pass, a real slowdown (a CPU quota on the container) fails naming the metric,
//! and bad input exits 2 with the reason. The container tests are privileged: skipped only when
//! not root and VBENCH_REQUIRE_PRIVILEGED is unset (CI sets it), by `vbench_testkit`'s rule.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The tests of this file measure, so they run one at a time: a concurrent run competing for
/// the two CPUs would shift the container/native ratio (the container's cgroup gets a fair
/// share as a group, a native process only as one task).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn privileged() -> bool {
    vbench_testkit::require_or_skip("root (the container backend)", vbench_testkit::root())
}

fn vbench() -> Command {
    Command::cargo_bin("vbench").unwrap()
}

/// Runs `vbench run ARGS --out DIR/NAME` and returns the results file.
fn run(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    vbench()
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    out
}

const SAME_BUILD: &[&str] = &[
    "--backend",
    "container",
    "--workload",
    "intmix",
    "--workload",
    "getpid",
    "--workload",
    "sha256",
    "--quick",
    "--rounds",
    "10",
];

#[test]
fn two_runs_of_the_same_build_pass() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let base = run(dir.path(), "base.json", SAME_BUILD);
    let new = run(dir.path(), "new.json", SAME_BUILD);
    // an --out-like path: its folder must exist (a missing one is refused before the work)
    std::fs::create_dir(dir.path().join("ci")).unwrap();
    let junit = dir.path().join("ci/junit.xml");
    // CI's own setting: at the 5% default about 1 in 20 evaluations of 14 metrics (1 in 280
    // metrics) cries wolf on this machine (scripts/gate-calibration.sh), at 10% none did
    vbench()
        .arg("gate")
        .args(["--threshold", "10%"])
        .arg("--baseline")
        .arg(&base)
        .arg(&new)
        .arg("--junit")
        .arg(&junit)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "PASS: no regression in 3 gated metric(s)",
        ));
    let x = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(x.matches("<testcase ").count(), 3, "{x}");
    assert_eq!(x.matches("<failure ").count(), 0, "{x}");
    // compare shows the same table and never fails on a change
    vbench()
        .arg("compare")
        .arg(&base)
        .arg(&new)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("intmix/container"));
}

#[test]
fn a_container_cpu_quota_is_caught_and_named() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    // intmix at its default parameters runs its loop for ~110 ms of CPU, longer than the
    // 100 ms CFS period, so a 0.4-CPU quota throttles it (measured: ~2x slower). Native is
    // unaffected, so the container's overhead ratio rises.
    let common = [
        "--backend",
        "container",
        "--workload",
        "intmix",
        "--rounds",
        "8",
    ];
    let dir = tempfile::tempdir().unwrap();
    let base = run(dir.path(), "base.json", &common);
    let mut slow_args = common.to_vec();
    slow_args.extend(["--cpus", "0.4"]);
    let slow = run(dir.path(), "slow.json", &slow_args);

    // the baseline by name, from the results directory of the working directory
    let named = dir
        .path()
        .join("vbench-results/baselines/before-quota.json");
    std::fs::create_dir_all(named.parent().unwrap()).unwrap();
    std::fs::copy(&base, &named).unwrap();
    let (md, junit, bench) = (
        dir.path().join("summary.md"),
        dir.path().join("junit.xml"),
        dir.path().join("bench.json"),
    );
    vbench()
        .current_dir(dir.path())
        .args(["gate", "--baseline", "before-quota", "--results"])
        .arg(&slow)
        .arg("--markdown")
        .arg(&md)
        .arg("--junit")
        .arg(&junit)
        .arg("--benchmark-json")
        .arg(&bench)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "FAIL: 1 regression(s) of 1 gated metric(s): intmix/container",
        ))
        .stdout(predicate::str::contains("regression: intmix/container"));

    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("| `intmix/container` |"), "{md}");
    assert!(md.contains("**regression**"), "{md}");
    let x = std::fs::read_to_string(junit).unwrap();
    assert!(
        x.contains("name=\"intmix/container overhead\">\n      <failure "),
        "{x}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bench).unwrap()).unwrap();
    assert_eq!(j[0]["name"], "intmix/container overhead");
    assert!(j[0]["value"].as_f64().unwrap() > 1.2, "{j}");

    // the reverse direction is an improvement, which passes
    vbench()
        .arg("gate")
        .arg("--baseline")
        .arg(&slow)
        .arg(&base)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("IMPROVEMENT"));
    // a per-metric threshold from the config file can accept the change
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, "[metrics.\"intmix/*\"]\nthreshold = \"500%\"\n").unwrap();
    vbench()
        .arg("gate")
        .arg("--baseline")
        .arg(&base)
        .arg(&slow)
        .arg("--config")
        .arg(&cfg)
        .assert()
        .code(0);
}

/// Native-only runs need no privileges; edited copies of them make the bad inputs.
#[test]
fn bad_inputs_exit_2_with_the_reason() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = run(
        d,
        "a.json",
        &["--workload", "getpid", "--quick", "--rounds", "2"],
    );
    let b = run(
        d,
        "b.json",
        &["--workload", "clock", "--quick", "--rounds", "2"],
    );
    let gate = |base: &Path, new: &Path, why: &str| {
        vbench()
            .current_dir(d)
            .arg("gate")
            .arg("--baseline")
            .arg(base)
            .arg(new)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("vbench gate: bad input: "))
            .stderr(predicate::str::contains(why.to_string()));
    };
    // missing baseline, by name and by path
    vbench()
        .current_dir(d)
        .args(["gate", "--baseline", "main"])
        .arg(&a)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "missing baseline \"main\": no file vbench-results/baselines/main.json",
        ));
    gate(&d.join("nope.json"), &a, "missing baseline");
    // different workload set
    gate(
        &a,
        &b,
        "different workload set: only in the baseline: getpid/native",
    );
    // only native cells: nothing to gate
    gate(&a, &a, "nothing to gate");
    // schema mismatch
    let text = std::fs::read_to_string(&a).unwrap();
    let old = d.join("old.json");
    std::fs::write(
        &old,
        text.replacen("\"schema_version\": 1", "\"schema_version\": 0", 1),
    )
    .unwrap();
    gate(&old, &a, "schema mismatch");
    // a file with no native control
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["plan"]["cells"][0]["backend"] = "container".into();
    let no_native = d.join("no-native.json");
    std::fs::write(&no_native, doc.to_string()).unwrap();
    gate(
        &a,
        &no_native,
        "the current results has no native control cell",
    );
    // a malformed file, and a missing one
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{ nope").unwrap();
    gate(&a, &bad, "bad.json: line 1");
    gate(&a, &d.join("absent.json"), "absent.json");
    // compare refuses the same inputs with the same status
    vbench()
        .arg("compare")
        .arg(&a)
        .arg(&b)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("different workload set"));
    // usage errors
    vbench()
        .args(["gate", "--baseline", "x", "--threshold", "10"])
        .arg(&a)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid threshold"));
    vbench()
        .args(["gate", "--baseline", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("RESULTS"));
}

#[test]
fn too_few_rounds_is_refused_not_passed() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--backend", "container", "--workload", "getpid", "--quick"];
    let a = run(dir.path(), "a.json", &args);
    let refused = |base: &Path, new: &Path| {
        vbench()
            .arg("gate")
            .arg("--baseline")
            .arg(base)
            .arg(new)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "getpid/container: cannot judge: too few rounds",
            ))
            .stderr(predicate::str::contains("--rounds 5 or more"));
    };
    refused(&a, &a);
    // 2 rounds against 5 once passed with a 95% interval of [-100%, +inf%]
    let two = run(
        dir.path(),
        "two.json",
        &[&args[..], &["--rounds", "2"]].concat(),
    );
    let five = run(
        dir.path(),
        "five.json",
        &[&args[..], &["--rounds", "5"]].concat(),
    );
    refused(&five, &two);
    refused(&two, &five);
}

/// The committed CI baseline (10 rounds of every --quick workload on container and native).
fn ci_baseline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/baseline-ci.json")
}

/// A copy of the CI baseline that keeps only its first `rounds` rounds: real measurements,
/// no container run needed.
fn first_rounds_of_ci_baseline(dir: &Path, rounds: u32) -> PathBuf {
    let text = std::fs::read_to_string(ci_baseline()).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["plan"]["rounds"] = rounds.into();
    doc["samples"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["round"].as_u64().unwrap() < u64::from(rounds));
    let out = dir.join(format!("ci-{rounds}-rounds.json"));
    std::fs::write(&out, doc.to_string()).unwrap();
    out
}

#[test]
fn two_rounds_on_either_side_exit_2_not_pass() {
    let dir = tempfile::tempdir().unwrap();
    let two = first_rounds_of_ci_baseline(dir.path(), 2);
    let five = first_rounds_of_ci_baseline(dir.path(), 5);
    for (base, new) in [(&five, &two), (&two, &five)] {
        vbench()
            .arg("gate")
            .arg("--baseline")
            .arg(base)
            .arg(new)
            .assert()
            .code(2)
            .stdout(predicate::str::contains("PASS").not())
            .stderr(predicate::str::contains(
                "vbench gate: bad input: intmix/container: cannot judge: too few rounds (baseline ",
            ))
            .stderr(predicate::str::contains(
                "the smallest possible p-value is 0.095, not below alpha 0.05",
            ));
    }
    // five rounds on each side can be judged
    vbench()
        .arg("gate")
        .arg("--baseline")
        .arg(&five)
        .arg(&five)
        .assert()
        .code(0);
}

#[test]
fn the_committed_ci_baseline_is_gateable() {
    let base = ci_baseline();
    vbench()
        .arg("gate")
        .arg("--baseline")
        .arg(&base)
        .arg(&base)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("PASS"));
    // with CI's own configuration, every entry of which names a metric of the CI run
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/gate-ci.toml");
    vbench()
        .arg("gate")
        .arg("--config")
        .arg(&config)
        .arg("--baseline")
        .arg(&base)
        .arg(&base)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "PASS: no regression in 15 gated metric(s)",
        ))
        .stdout(predicate::str::contains("note:").not());
}

#[test]
fn a_config_entry_that_matches_no_metric_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gate.toml");
    // a typo that once silently left matmul at the default threshold
    std::fs::write(
        &config,
        "[metrics.\"matmul/container\"]\nthreshold = \"25%\"\n[metrics.\"matmull/container\"]\nthreshold = \"25%\"\n",
    )
    .unwrap();
    let base = ci_baseline();
    vbench()
        .arg("gate")
        .arg("--config")
        .arg(&config)
        .arg("--baseline")
        .arg(&base)
        .arg(&base)
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains(
            "vbench gate: bad input: gate config entry [metrics.\"matmull/container\"] matches no metric of the compared runs; their metrics are intmix/container, sha256/container, sieve/container, matmul/container, ",
        ));
}

#[test]
fn an_invalid_save_baseline_name_fails_before_the_run() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    for bad in ["../escape", ".hidden", "two words"] {
        vbench()
            .current_dir(dir.path())
            .args(["run", "--workload", "getpid", "--quick", "--rounds", "1"])
            .args(["--save-baseline", bad, "--out"])
            .arg(&out)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!(
                "invalid baseline name {bad:?}"
            )))
            .stderr(predicate::str::contains("results written").not());
        assert!(
            !out.exists(),
            "the run started with --save-baseline {bad:?}"
        );
    }
    assert!(!dir.path().join("vbench-results").exists());
    // a valid name is saved after the run
    vbench()
        .current_dir(dir.path())
        .args(["run", "--workload", "getpid", "--quick", "--rounds", "1"])
        .args(["--save-baseline", "ok-1.0", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("baseline saved to"));
    assert!(out.exists());
    assert!(dir
        .path()
        .join("vbench-results/baselines/ok-1.0.json")
        .is_file());
}
