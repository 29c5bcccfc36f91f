//! Privileged integration tests of `vbench` with the KVM backend (needs a usable /dev/kvm;
//! skipped only when it is missing and VBENCH_REQUIRE_PRIVILEGED is unset).

use assert_cmd::Command;
use predicates::prelude::*;
use vbench_backends::kvm::KvmBackend;
use vbench_backends::Backend;
use vbench_results::load;

fn kvm_usable() -> bool {
    let have = KvmBackend::default().availability().into_result();
    vbench_testkit::require_or_skip("a usable /dev/kvm", have)
}

fn vbench() -> Command {
    Command::cargo_bin("vbench").unwrap()
}

#[test]
fn every_workload_computes_the_same_in_the_vm() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    vbench()
        .args([
            "run",
            "--backend",
            "kvm",
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
        .filter(|c| c.backend == "kvm")
        .collect();
    assert_eq!(cells.len(), vbench_workloads::TASKS.len());
    for c in cells {
        let s = doc.summary(c.id).unwrap();
        assert_eq!(s.checksum_matches_native, Some(true), "{}", c.workload);
    }
    let sample = doc
        .samples
        .iter()
        .find(|r| doc.plan.cells[r.cell].backend == "kvm")
        .unwrap();
    for k in [
        vbench_backends::kvm::counters::COLD_START_NS,
        vbench_backends::kvm::counters::SYSCALL_RING,
        vbench_backends::kvm::counters::HYPERCALLS,
    ] {
        assert!(
            sample.sample.counters.contains_key(k),
            "{k} missing: {:?}",
            sample.sample.counters
        );
    }
}

#[test]
fn exec_runs_a_static_binary_built_by_others() {
    if !kvm_usable()
        || !vbench_testkit::require_or_skip("busybox-static", vbench_testkit::file("/bin/busybox"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.txt");
    std::fs::write(&f, "b\na\nc\n").unwrap();
    let native = std::process::Command::new("/bin/busybox")
        .arg("sort")
        .arg(&f)
        .output()
        .unwrap();
    vbench()
        .args(["exec", "--backend", "kvm", "--", "/bin/busybox", "sort"])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::eq(native.stdout));
    // confined, a path the user did not pass stays outside: the check file names /etc/hostname;
    // under the host policy (exec's default) the program reads it as natively
    let sums = dir.path().join("sums");
    std::fs::write(
        &sums,
        "0000000000000000000000000000000000000000000000000000000000000000  /etc/hostname\n",
    )
    .unwrap();
    let check = |abi: &str| {
        vbench()
            .args(["exec", "--backend", "kvm", "--abi", abi, "--"])
            .args(["/bin/busybox", "sha256sum", "-c"])
            .arg(&sums)
            .assert()
            .failure()
    };
    check("confined").stderr(predicate::str::contains(
        "can't open '/etc/hostname': Permission denied",
    ));
    check("host").stdout("/etc/hostname: FAILED\n");
}

#[test]
fn uart_console_gives_the_same_output() {
    if !kvm_usable() {
        return;
    }
    vbench()
        .args([
            "exec",
            "--backend",
            "kvm",
            "--kvm-console",
            "uart",
            "--",
            "/bin/echo",
            "a dynamically linked program",
        ])
        .assert()
        .success()
        .stdout("a dynamically linked program\n");
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("wl");
    vbench().arg("workload-elf").arg(&wl).assert().success();
    let a = vbench()
        .args(["exec", "--backend", "kvm", "--kvm-console", "uart", "--"])
        .arg(&wl)
        .args(["sha256", "size=4096", "iters=3"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let b = std::process::Command::new(&wl)
        .args(["sha256", "size=4096", "iters=3"])
        .output()
        .unwrap()
        .stdout;
    let checksum = |o: &[u8]| {
        String::from_utf8_lossy(o)
            .split("checksum=")
            .nth(1)
            .map(str::to_string)
    };
    assert_eq!(checksum(&a), checksum(&b));
}

#[test]
fn bad_vm_options_are_usage_errors() {
    vbench()
        .args(["run", "--vm-mem", "3M"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--vm-mem"));
    vbench().args(["run", "--vm-mem", "2G"]).assert().code(2);
    vbench()
        .args(["run", "--kvm-console", "serial"])
        .assert()
        .code(2);
}
