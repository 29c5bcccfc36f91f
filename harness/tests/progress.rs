//! The progress display of `vbench run`: one line per round when stderr is not a terminal, a
//! bar with an ETA that ticks during a long cell on a terminal. These run the real binary.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn without_a_terminal_each_round_prints_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let assert = Command::cargo_bin("vbench")
        .unwrap()
        .args([
            "run",
            "--workload",
            "getpid",
            "--quick",
            "--rounds",
            "3",
            "--warmup",
            "1",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    let line = regex_lite(r"^vbench: (warm-up|round) \d+/\d+ done, elapsed \d+s, ETA \d+s$");
    let progress: Vec<&str> = err.lines().filter(|l| line.eval(l)).collect();
    assert_eq!(
        progress.len(),
        4,
        "one line per warm-up and measured round: {err}"
    );
    assert!(progress[0].starts_with("vbench: warm-up 1/1 done"), "{err}");
    assert!(progress[3].starts_with("vbench: round 3/3 done"), "{err}");
}

fn regex_lite(re: &str) -> impl Predicate<str> {
    predicate::str::is_match(re).unwrap()
}

#[test]
fn on_a_terminal_the_bar_shows_an_eta_and_ticks_during_a_long_cell() {
    if !vbench_testkit::require_or_skip(
        "script(1) for a pseudo-terminal",
        vbench_testkit::file("/usr/bin/script"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("vbench");
    let cmd = format!(
        "{} run --rounds 1 --warmup 0 --out {} -- /bin/sleep 1.5",
        bin.display(),
        dir.path().join("r.json").display()
    );
    let out = std::process::Command::new("/usr/bin/script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ETA"), "{text}");
    // the one cell runs 1.5 s: the bar is redrawn at 00:00:01 while it is still at 0/1
    let ticked = text
        .split(['\r', '\n'])
        .any(|frame| frame.contains("[00:00:01]") && frame.contains(" 0/1 "));
    assert!(ticked, "the bar did not tick during the cell: {text}");
}
