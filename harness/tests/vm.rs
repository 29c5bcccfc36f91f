//! The whole-OS VM (`--backend vm`): a real Linux guest under QEMU, booted once for many runs.
//! These tests boot real guests (TCG on this project's machines); CI installs qemu-system-x86
//! and Debian's cloud kernel, and VBENCH_REQUIRE_PRIVILEGED makes a missing one a failure.
//! Each vbench they start carries a marker in its environment, which QEMU inherits, so that
//! the tests find their own QEMU processes (and check that none is left) while others run.

use assert_cmd::Command;
use std::time::{Duration, Instant};
use vbench_backends::Backend;
use vbench_results::load;

fn have_vm() -> bool {
    vbench_testkit::require_or_skip(
        "qemu-system-x86_64 and a guest kernel",
        vbench_backends::vm::VmBackend::new(Default::default())
            .availability()
            .into_result(),
    )
}

/// The vm and busybox-static, the static program the guest runs.
fn have_vm_and_busybox() -> bool {
    have_vm() && vbench_testkit::require_or_skip("busybox", vbench_testkit::file("/bin/busybox"))
}

fn marker(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

fn vbench(mark: &str) -> Command {
    let mut c = Command::cargo_bin("vbench").unwrap();
    c.env("VBENCH_TEST_MARK", mark);
    c
}

/// Processes whose environment carries `mark` and that run `name`.
fn marked(mark: &str, name: &str) -> Vec<u32> {
    let needle = format!("VBENCH_TEST_MARK={mark}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim().starts_with(name)
                && env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes())
        })
        .collect()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn qemu_gone(mark: &str) {
    wait_for("QEMU gone", 10, || marked(mark, "qemu-system").is_empty());
}

#[test]
fn one_boot_runs_the_workloads_with_natives_checksums() {
    if !have_vm() {
        return;
    }
    let mark = marker("workloads");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vm.json");
    let o = vbench(&mark)
        .args(["run", "--backend", "vm", "--quick", "--rounds", "2"])
        .args([
            "-w",
            "intmix",
            "-w",
            "getpid",
            "-w",
            "openclose",
            "-w",
            "pagetouch",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let doc = load(&out).unwrap();
    let mut vm_samples = 0;
    for (i, c) in doc.plan.cells.iter().enumerate() {
        if c.backend != "vm" {
            continue;
        }
        let s = doc.summaries.iter().find(|s| s.cell == i).unwrap();
        assert_eq!(
            s.checksum_matches_native,
            Some(true),
            "{}: {text}",
            c.workload
        );
        for r in doc.samples.iter().filter(|r| r.cell == i) {
            vm_samples += 1;
            let k = &r.sample.counters;
            // one boot served every run, and its time is in each sample
            assert_eq!(k.get("vm.boots"), Some(&1), "{k:?}");
            assert!(k.get("vm.boot_ns").is_some_and(|&b| b > 0), "{k:?}");
            assert_eq!(
                k.get("vm.accel_tcg").or(k.get("vm.accel_kvm")),
                Some(&1),
                "{k:?}"
            );
            assert!(r.sample.startup_ns.is_some(), "fork to exec in the guest");
        }
    }
    assert!(vm_samples >= 8, "{text}");
    assert!(
        doc.environment
            .extra
            .get("vm_guest")
            .is_some_and(|g| g.contains("booted")),
        "{:?}",
        doc.environment.extra
    );
    qemu_gone(&mark);
}

#[test]
fn exec_runs_a_users_static_program_in_the_guest() {
    if !have_vm_and_busybox() {
        return;
    }
    let mark = marker("exec");
    let o = vbench(&mark)
        .args(["exec", "--backend", "vm", "--", "/bin/busybox", "sh", "-c"])
        .arg("echo out; echo err >&2; cat /proc/sys/kernel/osrelease; ls /progs | wc -l; exit 3")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "out", "{out}");
    // the guest's kernel, not necessarily the host's: a release string
    assert!(
        lines[1].chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{out}"
    );
    assert_eq!(lines[2].trim(), "1", "the program is the one stored: {out}");
    assert!(err.contains("err"), "{err}");
    qemu_gone(&mark);
    // a killing signal comes through as natively (128 + n)
    let o = vbench(&mark)
        .args([
            "exec",
            "--backend",
            "vm",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            "kill -SEGV $$",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(139),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    qemu_gone(&mark);
}

#[test]
fn bad_kernels_and_programs_are_clear_errors() {
    if !have_vm() {
        return;
    }
    let mark = marker("bad");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = vbench(&mark).args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // not a kernel
    let (code, err) = run(&[
        "exec",
        "--backend",
        "vm",
        "--vm-kernel",
        "/etc/hostname",
        "--",
        "/bin/busybox",
        "true",
    ]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("/etc/hostname") && err.contains("Linux kernel image"),
        "{err}"
    );
    // a kernel image that is not one QEMU can boot: the boot header is there, the rest is not
    let fake = dir.path().join("vmlinuz-fake");
    let mut k = vec![0u8; 1 << 16];
    k[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&fake, k).unwrap();
    let t = Instant::now();
    let (code, err) = run(&[
        "exec",
        "--backend",
        "vm",
        "--vm-boot-timeout",
        "20",
        "--vm-kernel",
        fake.to_str().unwrap(),
        "--",
        "/bin/busybox",
        "true",
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("vm"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(60), "{err}");
    // a guest that does not reach init in time
    let (code, err) = run(&[
        "exec",
        "--backend",
        "vm",
        "--vm-boot-timeout",
        "1",
        "--",
        "/bin/busybox",
        "true",
    ]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("did not reach vbench's init within 1"),
        "{err}"
    );
    // a dynamically linked program: named, with what to do
    let (code, err) = run(&["exec", "--backend", "vm", "--", "/bin/true"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("dynamically linked") && err.contains("static"),
        "{err}"
    );
    qemu_gone(&mark);
}

#[test]
fn qemu_or_vbench_killed_mid_run_leaves_nothing() {
    if !have_vm_and_busybox() {
        return;
    }
    let bin = assert_cmd::cargo::cargo_bin("vbench");
    let start = |mark: &str| {
        std::process::Command::new(&bin)
            .env("VBENCH_TEST_MARK", mark)
            .args([
                "exec",
                "--backend",
                "vm",
                "--",
                "/bin/busybox",
                "sleep",
                "60",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // QEMU killed: vbench says so and fails
    let mark = marker("qemu-killed");
    let child = start(&mark);
    wait_for("QEMU up", 60, || !marked(&mark, "qemu-system").is_empty());
    std::thread::sleep(Duration::from_secs(8)); // booted and running the sleep
    for pid in marked(&mark, "qemu-system") {
        // SAFETY: kill of a process this test found by its marker.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("QEMU") && err.contains("killed by signal 9"),
        "{err}"
    );
    // vbench killed: QEMU goes with it
    let mark = marker("vbench-killed");
    let mut child = start(&mark);
    wait_for("QEMU up", 60, || !marked(&mark, "qemu-system").is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    qemu_gone(&mark);
    // ^C: the run stops, vbench exits 130, QEMU is gone
    let mark = marker("interrupted");
    let child = start(&mark);
    wait_for("QEMU up", 60, || !marked(&mark, "qemu-system").is_empty());
    std::thread::sleep(Duration::from_secs(8));
    // SAFETY: kill of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    qemu_gone(&mark);
}
