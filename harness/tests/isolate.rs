//! Integration tests of `vbench isolate`: the native control must show every escape its
//! probes attempt (so a "contained" elsewhere means something), the container must contain
//! them, the limits must be accurate, and the host fixtures must be gone afterwards.
//! The container test is privileged: skipped only when not root and VBENCH_REQUIRE_PRIVILEGED
//! is unset (CI sets it).

use assert_cmd::Command;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use vbench_results::{load, IsolationMatrix, ProbeCell, ProbeVerdict};

fn privileged() -> bool {
    vbench_testkit::require_or_skip("a privileged isolate test", vbench_testkit::root())
}

/// The runs of this file go one at a time: the CPU probe measures shares of the machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn isolate(args: &[&str]) -> (IsolationMatrix, String, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("iso.json");
    let o = Command::cargo_bin("vbench")
        .unwrap()
        .arg("isolate")
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let doc = load(&out).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (
        doc.isolation.expect("an isolation matrix"),
        text,
        o.status.code(),
    )
}

fn cell<'m>(m: &'m IsolationMatrix, probe: &str, backend: &str) -> &'m ProbeCell {
    m.probes
        .iter()
        .find(|r| r.probe == probe)
        .unwrap_or_else(|| panic!("no row {probe}"))
        .cells
        .iter()
        .find(|c| c.backend == backend)
        .unwrap_or_else(|| panic!("no cell {probe}/{backend}"))
}

/// The host fixtures named in the matrix no longer exist.
fn assert_fixtures_gone(m: &IsolationMatrix) {
    let f = &m.fixtures;
    let pid = &f["host_pid"];
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_ne!(
        comm.trim(),
        "sleep",
        "the host sleeper {pid} is still running"
    );
    let shm = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let id = &f["shm_id"];
    assert!(
        !shm.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(id.as_str())),
        "SysV segment {id} is left:\n{shm}"
    );
    assert!(
        !Path::new(&f["scratch_dir"]).exists(),
        "scratch dir {} is left",
        f["scratch_dir"]
    );
    let port: u16 = f["tcp_port"].parse().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the listener on port {port} is still open"
    );
}

/// Without privileges (or with them): the native control escapes or observes on every probe that
/// applies, so none of them silently does nothing.
#[test]
fn native_control_shows_every_escape() {
    let _serial = serial();
    let (m, text, code) = isolate(&["--backend", "native"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(m.backends.len(), 1);
    for r in &m.probes {
        let c = &r.cells[0];
        let ok = match c.expect.as_str() {
            "escapes" | "inside" => c.verdict == ProbeVerdict::Escaped,
            "observe" => c.verdict == ProbeVerdict::Observed && !c.detail.is_empty(),
            "contained" => c.verdict == ProbeVerdict::Contained,
            _ => false,
        } || c.verdict == ProbeVerdict::NotApplicable && !c.note.is_empty();
        assert!(ok, "{}: {c:?}\n{text}", r.probe);
    }
    // the escapes were real: the listener saw the connection
    assert_eq!(m.fixtures["tcp_connections_accepted"], "1", "{text}");
    let sgdt = cell(&m, "sgdt", "native");
    assert!(sgdt.detail.contains("base=0x"), "{sgdt:?}");
    // the translation probes really exercised what bt must reproduce
    for (probe, want) in [
        ("smc", "first=1,after_patch=2"),
        ("hidden_syscall", "matches=true"),
        ("mid_insn_jump", "from_middle=42"),
        ("far_jump32", "eax=8,cs=0x23"),
        ("popf_tf", "traps=1,signal=SIGTRAP"),
        ("int3", "int3:SIGTRAP"),
        ("popf", "silently_ignored=true"),
        ("mov_sreg", "cpl=3"),
        ("hlt", "trapped_SIGSEGV"),
        ("wild_read", "load_64TiB:trapped_SIGSEGV"),
        (
            "efault_read",
            "read_to_64TiB=EFAULT,read_across_64TiB=EFAULT,read_to_kernel_half=EFAULT",
        ),
        ("unknown_msr", "trapped_SIGSEGV"),
        ("huge_mmap", "mmap_16GiB=ok"),
    ] {
        let c = cell(&m, probe, "native");
        assert!(c.detail.contains(want), "{probe}: {c:?}");
    }
    assert!(text.contains("Popek-Goldberg"), "{text}");
    assert_fixtures_gone(&m);
}

/// The machine-edge probes in the micro-VM: an address outside guest RAM is the guest's page
/// fault, which its kernel delivers to the probe's SIGSEGV handler as Linux does (SEGV_MAPERR),
/// a syscall pointer outside it is EFAULT, an unknown MSR is the guest's #GP (SIGSEGV with
/// SI_KERNEL, as natively), and guest RAM is the memory limit.
#[test]
fn the_vm_contains_the_machine_edges() {
    if !vbench_testkit::require_or_skip("/dev/kvm", vbench_testkit::file("/dev/kvm")) {
        return;
    }
    let _serial = serial();
    let (m, text, code) = isolate(&["--backend", "kvm", "--probe", "vm"]);
    assert_eq!(code, Some(0), "{text}");
    let wild = cell(&m, "wild_read", "kvm");
    assert_eq!(
        wild.detail, "load_64TiB:trapped_SIGSEGV_si_code=1",
        "{wild:?}"
    );
    assert_eq!(wild.detail, cell(&m, "wild_read", "native").detail);
    let efault = cell(&m, "efault_read", "kvm");
    assert_eq!(
        efault.detail,
        "read_to_64TiB=EFAULT,read_across_64TiB=EFAULT,read_to_kernel_half=EFAULT"
    );
    let msr = cell(&m, "unknown_msr", "kvm");
    assert_eq!(
        msr.detail, "rdmsr_0xc0de0000:trapped_SIGSEGV_si_code=128",
        "{msr:?}"
    );
    assert_eq!(cell(&m, "huge_mmap", "kvm").detail, "mmap_16GiB=ENOMEM");
    // native ran as the control and saw the host's answers
    assert_eq!(cell(&m, "huge_mmap", "native").detail, "mmap_16GiB=ok");
}

#[test]
fn container_contains_what_native_shows() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let (m, text, code) = isolate(&["--backend", "container"]);
    assert_eq!(code, Some(0), "{text}");
    let must = [
        "proc_list",
        "signal_host",
        "hostname",
        "mounts",
        "tcp_loopback",
        "net_ifaces",
        "sysv_shm",
        "host_root",
        "cgroup_ns",
        "time_ns",
        "pid_ns",
        "ipc_ns",
        "core_pattern",
        "mount",
        "mknod_block",
        "ptrace_host",
        "open_by_handle",
        "reboot",
        "host_file",
        "proc_root",
        "memory",
        "fork_bomb",
        "cpu_quota",
        "file_size",
    ];
    for p in must {
        let (n, c) = (cell(&m, p, "native"), cell(&m, p, "container"));
        if n.verdict == ProbeVerdict::NotApplicable {
            eprintln!("{p}: n/a on this host: {}", n.note);
            continue;
        }
        assert_eq!(
            n.verdict,
            ProbeVerdict::Escaped,
            "{p} native: {n:?}\n{text}"
        );
        assert_eq!(
            c.verdict,
            ProbeVerdict::Contained,
            "{p} container: {c:?}\n{text}"
        );
    }
    // only the native probe reached the listener
    assert_eq!(m.fixtures["tcp_connections_accepted"], "1", "{text}");
    // a documented permission: CAP_NET_RAW in the container's own network namespace
    assert_eq!(
        cell(&m, "raw_socket", "container").verdict,
        ProbeVerdict::Escaped
    );
    let flood = cell(&m, "stdout_flood", "container");
    assert_eq!(flood.verdict, ProbeVerdict::Contained, "{flood:?}");

    // limit accuracy
    let limit: f64 = m.limits["memory_bytes"].parse().unwrap();
    let mem = cell(&m, "memory", "container");
    let peak = mem.counters["cgroup.memory_peak_bytes"] as f64;
    assert!(
        (peak / limit - 1.0).abs() <= 0.05,
        "peak {peak} vs limit {limit}: {mem:?}"
    );
    assert!(mem.counters["cgroup.oom_kills"] >= 1, "{mem:?}");
    // independent of the cgroup's own accounting: what the probe had touched when killed
    let touched = mem.counters["probe.touched_bytes_at_kill"] as f64;
    assert!(
        touched <= limit && touched / limit >= 0.95,
        "touched {touched} vs limit {limit}: {mem:?}"
    );
    let pids: u64 = m.limits["pids"].parse().unwrap();
    let fork = cell(&m, "fork_bomb", "container");
    let forked = fork.detail["forked=".len()..]
        .split('_')
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert_eq!(
        forked + 2,
        pids,
        "init + probe + children = the pids limit: {fork:?}"
    );
    let quota: f64 = m.limits["cpus"].parse().unwrap();
    let cpu = cell(&m, "cpu_quota", "container");
    let share: f64 = cpu.detail["share=".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // 0.05 on a quiet machine; allow 0.1 when other tests load it
    assert!(
        (share - quota).abs() <= 0.1,
        "share {share} vs {quota}: {cpu:?}"
    );

    // the instruction probes ran in the container too
    assert_eq!(
        cell(&m, "sgdt", "container").verdict,
        ProbeVerdict::Observed,
        "{text}"
    );
    assert_fixtures_gone(&m);
}

/// bt and kvm run every probe under both policies of their guests' system calls: the confined
/// columns keep the backends' names, the host columns (`bt/host`, `kvm/host`) escape wherever the
/// program escapes natively, except where it needs a second process or a call the ABI table
/// refuses; and every such verdict is the catalogue's expectation.
#[test]
fn bt_and_kvm_run_under_both_policies() {
    let _serial = serial();
    let kvm = vbench_testkit::file("/dev/kvm").is_ok();
    let mut args = vec!["--backend", "bt"];
    if kvm {
        args.extend(["--backend", "kvm"]);
    }
    for p in ["visibility", "privilege", "fork_bomb", "file_size", "sgdt"] {
        args.extend(["--probe", p]);
    }
    let (m, text, code) = isolate(&args);
    assert_eq!(code, Some(0), "every verdict is the expected one:\n{text}");
    let names: Vec<&str> = m.backends.iter().map(|b| b.name.as_str()).collect();
    let want: &[&str] = if kvm {
        &["native", "bt", "bt/host", "kvm", "kvm/host"]
    } else {
        &["native", "bt", "bt/host"]
    };
    assert_eq!(names, want, "{text}");
    assert!(text.lines().next().unwrap().contains("bt/host"), "{text}");
    for r in &m.probes {
        let cells: Vec<&str> = r.cells.iter().map(|c| c.backend.as_str()).collect();
        assert_eq!(cells, want, "{}", r.probe);
    }
    let root = vbench_testkit::root().is_ok();
    let mut reached = 1; // the native control
    for b in m
        .backends
        .iter()
        .filter(|b| b.available && b.name != "native")
    {
        let Some(confined) = b.name.strip_suffix("/host") else {
            continue;
        };
        let host = b.name.as_str();
        reached += 1;
        let v = |p: &str, col: &str| cell(&m, p, col).verdict;
        // as natively: the host's node name, processes, loopback and files
        for p in ["hostname", "proc_list", "tcp_loopback", "pid_ns"] {
            assert_eq!(v(p, host), ProbeVerdict::Escaped, "{p} on {host}\n{text}");
            assert_eq!(v(p, confined), ProbeVerdict::Contained, "{p} on {confined}");
        }
        if root {
            assert_eq!(v("host_file", host), ProbeVerdict::Escaped, "{text}");
            assert_eq!(v("host_file", confined), ProbeVerdict::Contained);
            // the guest is one process: no other to trace, no mount
            for p in ["ptrace_host", "mount"] {
                assert_eq!(v(p, host), ProbeVerdict::Contained, "{p} on {host}\n{text}");
            }
        }
        let sig = cell(&m, "signal_host", host);
        let fork = cell(&m, "fork_bomb", host);
        if host == "bt/host" {
            // a host process of its own (the translator's): it signals and forks as natively
            assert_eq!(sig.verdict, ProbeVerdict::Escaped, "{sig:?}");
            assert!(sig.detail.contains(":ok"), "{sig:?}");
            assert_eq!(fork.verdict, ProbeVerdict::NotApplicable, "{fork:?}");
        } else {
            // no other process to signal (ESRCH) and none to fork (ENOSYS)
            assert_eq!(sig.verdict, ProbeVerdict::Contained, "{sig:?}");
            assert!(sig.detail.contains("ESRCH"), "{sig:?}");
            assert_eq!(fork.verdict, ProbeVerdict::Contained, "{fork:?}");
            assert!(fork.detail.contains("ENOSYS"), "{fork:?}");
        }
        let size = cell(&m, "file_size", host);
        assert_eq!(size.verdict, ProbeVerdict::NotApplicable, "{size:?}");
        assert!(size.note.contains("host policy"), "{size:?}");
        assert_eq!(v("sgdt", host), ProbeVerdict::Observed);
    }
    // the host columns' connections were real
    assert_eq!(
        m.fixtures["tcp_connections_accepted"],
        reached.to_string(),
        "{text}"
    );
    assert_fixtures_gone(&m);
}

#[test]
fn unknown_probe_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::cargo_bin("vbench")
        .unwrap()
        .current_dir(dir.path())
        .args(["isolate", "--backend", "native", "--probe", "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(walk(dir.path()).is_empty(), "nothing written");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown probe"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn interrupted_run_leaves_no_fixtures() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("iso.json");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vbench"))
        .args([
            "isolate",
            "--backend",
            "native",
            "--probe",
            "limit",
            "--out",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // the limit probes take seconds: interrupt in the middle
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let doc = load(&out).unwrap();
    assert_eq!(doc.status, vbench_results::RunStatus::Interrupted);
    assert_fixtures_gone(&doc.isolation.unwrap());
}

#[test]
fn too_big_a_memory_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::cargo_bin("vbench")
        .unwrap()
        .current_dir(dir.path())
        .args(["isolate", "--backend", "native", "--memory", "100000G"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("more than half"), "{err}");
    // refused before any file is reserved: no empty results file is left behind
    let left: Vec<_> = walk(dir.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Every regular file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Pids of the children of `pid` named `comm`.
fn children_named(pid: u32, comm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ..."
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            head.ends_with(&format!("({comm}"))
                && rest.split(' ').nth(1) == Some(pid.to_string().as_str())
        })
        .collect()
}

#[test]
fn a_killed_harness_leaves_no_process_or_segment_and_its_scratch_dir_goes_at_the_next_start() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vbench"))
        .args([
            "isolate",
            "--backend",
            "native",
            "--probe",
            "limit",
            "--out",
        ])
        .arg(dir.path().join("iso.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let sleepers = children_named(pid, "sleep");
    assert_eq!(sleepers.len(), 1, "the host sleeper of {pid}");
    let segments = |cpid: u32| -> usize {
        std::fs::read_to_string("/proc/sysvipc/shm")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(4) == Some(cpid.to_string().as_str()))
            .count()
    };
    assert_eq!(segments(pid), 1, "the SysV segment of {pid}");
    let scratch: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("vbench-isolate-{pid}-"))
        })
        .collect();
    assert_eq!(scratch.len(), 1, "the scratch dir of {pid}");
    child.kill().unwrap(); // SIGKILL: no clean-up code runs
    child.wait().unwrap();
    // the sleeper dies with the harness, the segment at its last detach
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        !Path::new(&format!("/proc/{}", sleepers[0])).exists()
    });
    assert!(gone, "sleeper {} outlived the harness", sleepers[0]);
    assert_eq!(segments(pid), 0, "the SysV segment outlived the harness");
    // the scratch directory is removed by the next run
    assert!(scratch[0].exists());
    let (_, text, code) = isolate(&["--backend", "native", "--probe", "hostname"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        !scratch[0].exists(),
        "{} was not removed",
        scratch[0].display()
    );
}

/// `--probe` names every kind of the catalogue, `vm` included.
#[test]
fn help_lists_every_probe_kind() {
    let o = Command::cargo_bin("vbench")
        .unwrap()
        .args(["isolate", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    let line = help
        .lines()
        .find(|l| l.contains("--probe"))
        .unwrap_or_else(|| panic!("no --probe in\n{help}"));
    let kinds: Vec<&str> = vbench_workloads::probes::Kind::ALL
        .iter()
        .map(|k| k.name())
        .collect();
    assert_eq!(kinds.len(), 6);
    assert!(kinds.contains(&"vm"));
    for k in kinds {
        assert!(
            line.contains(&format!("{k},")) || line.contains(&format!("{k})")),
            "kind {k} missing from: {line}"
        );
    }
}

/// Every probe of the catalogue has an implementation in the embedded ELF, and the ELF
/// implements nothing the catalogue lacks.
#[test]
fn every_catalogue_probe_is_implemented_in_the_elf() {
    let o = std::process::Command::new(env!("VBENCH_WORKLOAD_ELF"))
        .arg("--probes")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    let mut implemented: Vec<&str> = text.lines().collect();
    implemented.sort_unstable();
    let n = implemented.len();
    implemented.dedup();
    assert_eq!(implemented.len(), n, "a probe implemented twice");
    let mut catalogue: Vec<&str> = vbench_workloads::probes::PROBES
        .iter()
        .map(|p| p.name)
        .collect();
    catalogue.sort_unstable();
    let missing: Vec<_> = catalogue
        .iter()
        .filter(|p| !implemented.contains(p))
        .collect();
    let extra: Vec<_> = implemented
        .iter()
        .filter(|p| !catalogue.contains(p))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not implemented: {missing:?}; not in the catalogue: {extra:?}"
    );
}
