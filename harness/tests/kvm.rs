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

/// The clock as a guest kernel gives it: a vDSO in the auxiliary vector whose calls make no
/// syscall, the raw clock_gettime answered in the guest (counted, EFAULT for a bad pointer),
/// both within a millisecond of a clock the host answers, and the program's output is
/// native's.
#[test]
fn the_guest_reads_the_clock_through_its_vdso_and_clock_page() {
    if !kvm_usable() || !vbench_testkit::require_or_skip("gcc", vbench_testkit::on_path("gcc")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("clock");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kvm/clock.c");
    vbench_testkit::gcc_static(&src, &bin);
    let native = std::process::Command::new(&bin).output().unwrap();
    assert!(native.status.success(), "{native:?}");
    let out = dir.path().join("r.json");
    let run = vbench()
        .args([
            "run",
            "--backend",
            "kvm",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--out",
        ])
        .arg(&out)
        .arg("--")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let doc = load(&out).unwrap();
    let s = doc
        .samples
        .iter()
        .find(|r| doc.plan.cells[r.cell].backend == "kvm")
        .unwrap();
    use vbench_backends::kvm::counters;
    assert_eq!(
        s.sample.counters[counters::CLOCK_PAGE],
        1,
        "{:?}",
        s.sample.counters
    );
    // where syscall stays at CPL3 (here) the stub answers the raw calls of the clocks the
    // page keeps: 3 per round and the bad pointer's; CLOCK_TAI's 2 leave the guest
    if s.sample.counters[counters::SYSCALL_RING] == 3 {
        assert_eq!(
            s.sample.counters[counters::GUEST_CLOCK_GETTIME],
            7,
            "{:?}",
            s.sample.counters
        );
        assert_eq!(s.sample.counters["abi.clock_gettime"], 2);
    }
    let exec = vbench()
        .args(["exec", "--backend", "kvm", "--"])
        .arg(&bin)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout),
        String::from_utf8_lossy(&native.stdout),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
    assert!(exec.status.success());
}

/// The micro-VM's vDSO image is found by the workload ELF's own reader (the glibc and musl way:
/// program headers, dynamic section, DT_HASH, LINUX_2.6), at the entry the VMM knows.
#[test]
fn the_vdso_image_is_read_as_the_c_libraries_read_it() {
    let (img, entries) = vbench_backends::kvm::vdso::image(0x10000).unwrap();
    let base = img.as_ptr() as usize;
    for name in [
        "__vdso_clock_gettime",
        "__vdso_gettimeofday",
        "__vdso_time",
        "__vdso_getcpu",
        "__vdso_clock_getres",
    ] {
        // SAFETY: img is a whole ELF image in memory, alive for the call.
        let at = unsafe { vbench_workloads::vdso::symbol(base, name.as_bytes()) };
        assert!(
            at.is_some_and(|a| a > base && a < base + img.len()),
            "{name}"
        );
    }
    // SAFETY: as above.
    let cgt = unsafe { vbench_workloads::vdso::symbol(base, b"__vdso_clock_gettime") };
    assert_eq!(cgt, Some(base + entries.clock_gettime as usize));
}
