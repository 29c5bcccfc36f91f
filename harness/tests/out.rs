//! Where `--out` writes: a regular file (or a symlink to one) is replaced atomically, a device
//! or a pipe is written through, anything else is refused before any work is done; default
//! results names never collide. These run the real `vbench` binary.

use assert_cmd::Command;
use predicates::prelude::*;
use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use vbench_results::{load, RunStatus};

fn vbench() -> Command {
    Command::cargo_bin("vbench").unwrap()
}

/// A short, real run: one native cell, one round.
fn short_run(cmd: &mut Command) -> &mut Command {
    cmd.args([
        "run",
        "--workload",
        "getpid",
        "--quick",
        "--rounds",
        "1",
        "--warmup",
        "0",
    ])
}

/// Makes a device node (as `mknod`): `kind` is `libc::S_IFCHR` or `libc::S_IFBLK`.
fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) -> Result<(), String> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o666, libc::makedev(major, minor)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("mknod failed: {}", std::io::Error::last_os_error()))
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn out_dash_writes_the_document_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = short_run(vbench().current_dir(dir.path()))
        .args(["--out", "-"])
        .assert()
        .success()
        .stderr(predicate::str::contains("results written to -"))
        .get_output()
        .stdout
        .clone();
    let doc = vbench_results::store::parse(Path::new("-"), &String::from_utf8(out).unwrap())
        .expect("stdout is the results document");
    assert_eq!(doc.status, RunStatus::Complete);
    assert!(entries(dir.path()).is_empty(), "no file named '-'");
}

#[test]
fn out_dev_stdout_and_dev_null_are_written_through() {
    let out = short_run(&mut vbench())
        .args(["--out", "/dev/stdout"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("\"schema_version\""));
    assert!(std::fs::symlink_metadata("/dev/stdout")
        .unwrap()
        .file_type()
        .is_symlink());
    short_run(&mut vbench())
        .args(["--out", "/dev/null"])
        .assert()
        .success();
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

#[test]
fn a_character_device_is_written_through_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    // a second /dev/null (1:3), so that the old behaviour cannot harm the real one
    if !vbench_testkit::require_or_skip("mknod", mknod(&null, libc::S_IFCHR, 1, 3)) {
        return;
    }
    let mode = std::fs::metadata(&null).unwrap().permissions().mode();
    short_run(&mut vbench())
        .arg("--out")
        .arg(&null)
        .assert()
        .success();
    vbench().arg("workload-elf").arg(&null).assert().success();
    let meta = std::fs::metadata(&null).unwrap();
    assert!(meta.file_type().is_char_device(), "the node was replaced");
    assert_eq!(meta.permissions().mode(), mode, "workload-elf chmodded it");
    assert_eq!(entries(dir.path()), ["null"]);
}

#[test]
fn a_symlink_to_a_file_replaces_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.json");
    let link = dir.path().join("link.json");
    std::fs::write(&real, "old").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    short_run(&mut vbench())
        .arg("--out")
        .arg(&link)
        .assert()
        .success();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(load(&real).unwrap().status, RunStatus::Complete);
}

#[test]
fn unusable_outputs_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let dangling = dir.path().join("dangling.json");
    std::os::unix::fs::symlink(dir.path().join("gone/x.json"), &dangling).unwrap();
    let mut cases = vec![
        (sock.clone(), "is a socket"),
        (dir.path().join("sub"), "is a directory"),
        (dir.path().join("no/such/r.json"), "does not exist"),
        (dangling.clone(), "symlink"),
    ];
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let blk = dir.path().join("blk");
    if vbench_testkit::require_or_skip("mknod", mknod(&blk, libc::S_IFBLK, 7, 250)) {
        cases.push((blk.clone(), "is a block device"));
    }
    let before = entries(dir.path());
    for (path, why) in &cases {
        // a run with every round: refused at once, or this would take a long while
        vbench()
            .args(["run", "--workload", "getpid", "--rounds", "100000", "--out"])
            .arg(path)
            .timeout(std::time::Duration::from_secs(20))
            .assert()
            .code(1)
            .stderr(
                predicate::str::contains(path.to_string_lossy().as_ref())
                    .and(predicate::str::contains(*why))
                    .and(predicate::str::contains("os error").not()),
            );
        vbench()
            .arg("workload-elf")
            .arg(path)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(*why));
    }
    assert_eq!(entries(dir.path()), before, "something was written");
    assert!(std::fs::symlink_metadata(&sock)
        .unwrap()
        .file_type()
        .is_socket());
}

#[test]
fn an_os_error_is_printed_once() {
    // /proc takes no new files: the write of the results fails with ENOENT
    short_run(&mut vbench())
        .args(["--out", "/proc/vbench-test.json"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("/proc/")
                .and(predicate::str::contains("(os error 2)").count(1)),
        );
}

#[test]
fn default_results_files_of_simultaneous_runs_are_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("vbench");
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&bin)
                .current_dir(dir.path())
                .args([
                    "run",
                    "--workload",
                    "getpid",
                    "--quick",
                    "--rounds",
                    "1",
                    "--warmup",
                    "0",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut reported = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        let path = err
            .lines()
            .find_map(|l| l.strip_prefix("results written to "))
            .unwrap_or_else(|| panic!("no results line in {err}"))
            .to_string();
        reported.push(path);
    }
    let mut unique = reported.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "two runs reported one file: {reported:?}");
    for p in &reported {
        assert!(p.starts_with("vbench-results/run-"), "{p}");
        assert_eq!(
            load(&dir.path().join(p)).unwrap().status,
            RunStatus::Complete
        );
    }
    assert_eq!(entries(&dir.path().join("vbench-results")).len(), 3);
}

#[test]
fn a_gate_output_of_run_is_checked_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("no/such/junit.xml");
    vbench()
        .current_dir(dir.path())
        .args([
            "run",
            "--workload",
            "getpid",
            "--rounds",
            "100000",
            "--baseline",
            "main",
            "--junit",
        ])
        .arg(&junit)
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("no/such").and(predicate::str::contains("does not exist")),
        );
    assert!(
        entries(dir.path()).is_empty(),
        "nothing ran, nothing was written"
    );
}

#[test]
fn a_pipe_is_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader_path = fifo.clone();
    std::thread::spawn(move || {
        let text = std::fs::read_to_string(&reader_path);
        let _ = tx.send(text);
    });
    short_run(&mut vbench())
        .arg("--out")
        .arg(&fifo)
        .assert()
        .success();
    let text = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("vbench wrote into the pipe")
        .unwrap();
    let doc = vbench_results::store::parse(&fifo, &text).unwrap();
    assert_eq!(doc.status, RunStatus::Complete);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(entries(dir.path()), ["fifo"]);
}
