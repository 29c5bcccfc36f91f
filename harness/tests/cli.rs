//! Integration tests that run the real `vbench` binary.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;
use std::time::{Duration, Instant};
use vbench_results::{load, FailureKind, RunStatus};

fn vbench() -> Command {
    Command::cargo_bin("vbench").unwrap()
}

fn no_temporaries(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn unknown_backend_is_a_usage_error() {
    vbench()
        .args(["run", "--backend", "vmware"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("invalid value 'vmware'")
                .and(predicate::str::contains("native")),
        );
}

#[test]
fn bad_numbers_are_usage_errors() {
    vbench()
        .args(["run", "--rounds", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--rounds"));
    vbench().args(["run", "--timeout", "-1"]).assert().code(2);
    vbench()
        .args(["exec"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("PROGRAM"));
}

#[test]
fn unknown_workload_names_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    vbench()
        .current_dir(dir.path())
        .args(["run", "--workload", "nope"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("unknown workload \"nope\"")
                .and(predicate::str::contains("sha256")),
        );
    // nothing was written for a refused run
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn missing_program_is_named() {
    vbench()
        .args(["run", "--", "/nonexistent/prog"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/nonexistent/prog"));
}

#[test]
fn quick_native_run_covers_every_class_with_stable_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    vbench()
        .args(["run", "--backend", "native", "--quick", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("time/op"));
    let doc = load(&out).unwrap();
    assert_eq!(doc.status, RunStatus::Complete);
    assert!(doc.failures.is_empty(), "{:?}", doc.failures);
    for class in ["cpu", "mem", "sys"] {
        assert!(
            doc.plan.cells.iter().any(|c| c.class == class),
            "no {class} cell"
        );
    }
    assert_eq!(doc.summaries.len(), doc.plan.cells.len());
    for s in &doc.summaries {
        assert_eq!(s.n, 3);
        assert!(s.checksum_consistent && s.checksum.is_some());
        assert_eq!(s.metric, "loop_ns_per_op");
        assert!(s.ci_low_ns <= s.median_ns && s.median_ns <= s.ci_high_ns);
    }
    no_temporaries(dir.path());
}

#[test]
fn unavailable_backends_are_reported_not_invented() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let assert = vbench()
        .args([
            "run",
            "--backend",
            "all",
            "--quick",
            "--rounds",
            "2",
            "--workload",
            "getpid",
            "--json",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let printed: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let doc = load(&out).unwrap();
    assert_eq!(
        printed["plan"]["cells"].as_array().unwrap().len(),
        doc.plan.cells.len()
    );
    for b in &doc.plan.backends {
        if !b.available {
            assert!(b.reason.as_deref().is_some_and(|r| !r.is_empty()));
            assert!(
                doc.plan.cells.iter().all(|c| c.backend != b.name),
                "{} has cells",
                b.name
            );
        }
    }
    assert_eq!(doc.plan.backends.len(), 4);
}

#[test]
fn own_program_is_benchmarked_by_wall_time_and_output_digest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    vbench()
        .args(["run", "--rounds", "3", "--warmup", "0", "--out"])
        .arg(&out)
        .args(["--", "/bin/echo", "hello"])
        .assert()
        .success()
        .stdout(predicate::str::contains("custom:echo"));
    let doc = load(&out).unwrap();
    let s = &doc.summaries[0];
    assert_eq!(s.metric, "wall_ns");
    // FNV-1a 64 of "hello\n", computed independently here
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"hello\n" {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    assert_eq!(s.checksum.as_deref(), Some(format!("{h:016x}").as_str()));
    assert!(doc.samples.iter().all(|r| r.sample.stdout_bytes == 6));
}

#[test]
fn a_threaded_program_under_bt_reports_its_threads() {
    let have = vbench_backends::Backend::availability(&vbench_backends::bt::BtBackend);
    if !vbench_testkit::require_or_skip("the bt backend", have.into_result()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/c/manythreads.c");
    let bin = dir.path().join("manythreads");
    vbench_testkit::gcc_static(&src, &bin);
    let out = dir.path().join("r.json");
    vbench()
        .args([
            "run",
            "--backend",
            "bt",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--out",
        ])
        .arg(&out)
        .arg("--")
        .arg(&bin)
        .assert()
        .success();
    let doc = load(&out).unwrap();
    let bt = doc
        .samples
        .iter()
        .find(|r| doc.plan.cells[r.cell].backend == "bt")
        .expect("a bt sample");
    let c = &bt.sample.counters;
    // its 200 threads, each woken from a futex wait (deferred calls) at least once
    assert_eq!(c.get("bt.threads_started"), Some(&200), "{c:?}");
    assert!(
        c.get("bt.calls_deferred").is_some_and(|n| *n >= 200),
        "{c:?}"
    );
    assert!(bt.sample.stdout_bytes > 0);
}

#[test]
fn failing_program_is_recorded_as_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    vbench()
        .args(["run", "--rounds", "2", "--warmup", "0", "--out"])
        .arg(&out)
        .args(["--", "/bin/sh", "-c", "exit 4"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("exit status 4"));
    let doc = load(&out).unwrap();
    assert_eq!(doc.failures.len(), 2);
    assert!(doc.failures.iter().all(|f| f.kind == FailureKind::BadExit));
}

#[test]
fn exec_passes_stdio_and_status_through() {
    vbench()
        .args(["exec", "--", "/bin/sh", "-c", "read x; echo got $x; exit 7"])
        .write_stdin("abc\n")
        .assert()
        .code(7)
        .stdout("got abc\n");
    vbench()
        .args(["exec", "--", "/bin/sh", "-c", "kill -TERM $$"])
        .assert()
        .code(128 + 15)
        .stderr(predicate::str::contains("signal 15"));
}

#[test]
fn exec_timeout_kills_and_reports() {
    let t = Instant::now();
    vbench()
        .args(["exec", "--timeout", "0.3", "--", "/bin/sleep", "20"])
        .assert()
        .code(124)
        .stderr(predicate::str::contains("timed out"));
    assert!(t.elapsed() < Duration::from_secs(15));
}

#[test]
fn exec_refuses_unavailable_backend_with_reason() {
    let all = vbench_backends::all();
    for b in all.iter().filter(|b| !b.availability().is_available()) {
        vbench()
            .args(["exec", "--backend", b.name(), "--", "/bin/true"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("unavailable"));
    }
}

#[test]
fn list_and_doctor() {
    vbench()
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("sha256").and(predicate::str::contains("native")));
    let out = vbench()
        .args(["list", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["workloads"].as_array().unwrap().len(),
        vbench_workloads::TASKS.len()
    );
    vbench()
        .arg("doctor")
        .assert()
        .success()
        .stdout(predicate::str::contains("/dev/kvm").and(predicate::str::contains("cgroup")));
}

#[test]
fn workload_elf_validates_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let elf = dir.path().join("wl");
    vbench().arg("workload-elf").arg(&elf).assert().success();
    let bytes = std::fs::read(&elf).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    Command::new(&elf)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("usage"));
    Command::new(&elf)
        .arg("nosuchtask")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nosuchtask"));
    Command::new(&elf)
        .args(["getpid", "iters=abc"])
        .assert()
        .code(2);
    Command::new(&elf)
        .args(["getpid", "bogus=1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bogus"));
    Command::new(&elf)
        .args(["getpid", "iters=1000"])
        .assert()
        .success()
        .stdout(
            predicate::str::is_match(
                r"^VBENCH task=getpid iters=1000 ns=\d+ checksum=[0-9a-f]{16}\n$",
            )
            .unwrap(),
        );
}

#[test]
fn show_refuses_malformed_results_naming_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"schema_version\": 1,\n  \"tool\": [\n").unwrap();
    vbench()
        .arg("show")
        .arg(&bad)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.json").and(predicate::str::contains("line ")));
    let newer = dir.path().join("newer.json");
    std::fs::write(&newer, "{\"schema_version\": 999}").unwrap();
    vbench()
        .arg("show")
        .arg(&newer)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("newer"));
}

#[test]
fn sigint_leaves_a_valid_partial_file_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let bin = assert_cmd::cargo::cargo_bin("vbench");
    let mut child = std::process::Command::new(bin)
        .args([
            "run",
            "--workload",
            "getpid",
            "--workload",
            "intmix",
            "--quick",
            "--rounds",
            "100000",
            "--out",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // wait until at least one round is on disk
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(doc) = load(&out) {
            if !doc.samples.is_empty() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no round completed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let doc = load(&out).unwrap();
    assert_eq!(doc.status, RunStatus::Interrupted);
    assert!(!doc.summaries.is_empty());
    no_temporaries(dir.path());
    // the workload it was running is gone too: no orphaned workload process (other tests'
    // workloads running in parallel still have their vbench as parent)
    let orphans = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let cmd = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string));
            cmd.starts_with("vbench-workload\0") && ppid.as_deref() == Some("1")
        })
        .count();
    assert_eq!(
        orphans, 0,
        "a workload process survived the interrupted run"
    );
}

#[test]
fn workloads_are_sized_to_the_sample_time_on_their_slowest_backend() {
    let dir = tempfile::tempdir().unwrap();
    let iters_of = |file: &std::path::Path| -> u64 {
        let doc = vbench_results::load(file).unwrap();
        let c = &doc.plan.cells[0];
        c.args
            .iter()
            .find_map(|a| a.strip_prefix("iters=")?.parse().ok())
            .unwrap()
    };
    let default = vbench_workloads::find("getpid")
        .and_then(|t| t.param("iters"))
        .map(|p| match p.kind {
            vbench_workloads::ParamKind::Int { default, .. } => default,
            _ => unreachable!(),
        })
        .unwrap();
    // 1 ms per sample: far fewer calls than the default, said on stderr, recorded in the cell
    let small = dir.path().join("small.json");
    let out = vbench()
        .args([
            "run",
            "--workload",
            "getpid",
            "--rounds",
            "2",
            "--sample-ms",
            "1",
            "--out",
        ])
        .arg(&small)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = iters_of(&small);
    assert!(n < default, "{n} of {default}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("getpid: iters {default} -> {n}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = vbench_results::load(&small).unwrap();
    assert!(doc
        .samples
        .iter()
        .all(|s| s.sample.report.as_ref().unwrap().iters == n));
    // 0: the catalogue's defaults
    let full = dir.path().join("full.json");
    vbench()
        .args([
            "run",
            "--workload",
            "getpid",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--sample-ms",
            "0",
            "--out",
        ])
        .arg(&full)
        .assert()
        .success();
    assert_eq!(iters_of(&full), default);
}

#[test]
fn list_syscalls_shows_the_table_per_backend_and_policy() {
    let out = vbench().args(["list", "--syscalls"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("openat"),
        "257 openat host named files host named files"
    );
    assert_eq!(
        row("getpid"),
        "39 getpid in cache in cache in guest in guest"
    );
    // bt's guest is a host process of its own: it forks on the host; kvm's cannot
    assert!(row("clone").starts_with("56 clone host ENOSYS ENOSYS ENOSYS (creates a process"));
    assert_eq!(row("wait4"), "61 wait4 host emulated emulated emulated");
    assert!(row("socket").ends_with("(confined: no network)"));
    let json = vbench()
        .args(["list", "--syscalls", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&json.get_output().stdout).unwrap();
    let mkdir = v["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "mkdir")
        .unwrap();
    assert_eq!(mkdir["nr"], 83);
    assert_eq!(mkdir["bt/host"]["support"], "host");
    assert_eq!(mkdir["kvm/confined"]["support"], "ENOSYS");
    assert!(mkdir["kvm/confined"]["reason"]
        .as_str()
        .unwrap()
        .contains("confined"));
    // a reader that goes away early is not an error
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vbench"))
        .args(["list", "--syscalls"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn abi_takes_host_or_confined() {
    vbench()
        .args(["exec", "--abi", "open", "--", "/bin/true"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "\"open\" is not a policy: host or confined",
        ));
}
