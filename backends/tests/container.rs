//! Privileged tests of the container backend: real namespaces, cgroups and processes.
//! They skip only when not root *and* VBENCH_REQUIRE_PRIVILEGED is unset; CI sets it.

use std::ffi::OsString;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use vbench_backends::container::cgroup::Limits;
use vbench_backends::container::{Container, ContainerConfig, Namespace};
use vbench_backends::{Backend, Invocation, Outcome, Program};
use vbench_results::Exit;

const BUSYBOX: &str = "/bin/busybox";

/// Containers of these tests run one at a time: the limit tests measure shares of the machine,
/// and the clean-up test counts this process's cgroups.
static SERIAL: Mutex<()> = Mutex::new(());

/// Whether privileged tests can run (then holding the serialising lock); panics when they
/// cannot but are required.
fn privileged() -> Option<MutexGuard<'static, ()>> {
    use vbench_testkit::{both, file, require_or_skip, root};
    require_or_skip("a privileged container test", both(root(), file(BUSYBOX)))
        .then(|| SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

fn container(cfg: ContainerConfig) -> Container {
    let c = Container::new(cfg);
    assert!(c.availability().is_available(), "{:?}", c.availability());
    c
}

fn busybox(c: &Container, args: &[&str]) -> Outcome {
    let mut inv = Invocation::new(
        Program::Path(BUSYBOX.into()),
        args.iter().map(OsString::from).collect(),
    );
    inv.timeout = Some(Duration::from_secs(60));
    c.run(&inv).unwrap()
}

fn sh(c: &Container, script: &str) -> (String, Outcome) {
    let o = busybox(c, &["sh", "-c", script]);
    (String::from_utf8_lossy(&o.stdout).into_owned(), o)
}

fn host_sh(script: &str) -> String {
    let o = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pid_namespace_hides_host_processes() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    // a glob, not a pipeline: no extra processes while /proc is listed
    let (out, o) = sh(&c, "echo self=$$; cd /proc; echo [0-9]*");
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    // init is pid 1, the payload pid 2; nothing else exists
    assert!(out.starts_with("self=2\n"), "{out}");
    assert_eq!(out.lines().nth(1).unwrap().trim(), "1 2", "{out}");
    assert!(o.sample.startup_ns.unwrap() > 0);
    assert!(o.sample.counters.contains_key("container.clone_to_exec_ns"));
}

#[test]
fn uts_mount_net_and_root_are_isolated() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let host_name = host_sh("hostname");
    // container init sets the name inside the uts namespace (the payload lacks CAP_SYS_ADMIN)
    let (out, o) = sh(&c, "hostname; ls /; ip -o link 2>&1 || ifconfig -a");
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("vbench"));
    assert_ne!(host_name.trim(), "vbench");
    assert_eq!(
        host_sh("hostname"),
        host_name,
        "hostname leaked to the host"
    );
    // the root holds only what vbench put there
    let rest: Vec<&str> = lines.collect();
    let root: Vec<&str> = rest
        .iter()
        .take_while(|l| !l.contains(':'))
        .copied()
        .collect();
    assert_eq!(root, ["busybox", "dev", "etc", "proc", "tmp"], "{out}");
    let links = rest[root.len()..].join("\n");
    // only the loopback interface, up (as Docker brings it up)
    assert!(links.contains("lo: <LOOPBACK,UP"), "{links}");
    assert!(
        !links.contains("eth") && !links.contains("ens"),
        "host interface visible: {links}"
    );
}

#[test]
fn user_namespace_maps_root_to_unprivileged_uid() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let (out, o) = sh(
        &c,
        "id -u; cat /proc/self/uid_map; touch /tmp/x && stat -c %u /tmp/x",
    );
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "0");
    assert_eq!(
        l[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
}

#[test]
fn cgroup_and_time_namespaces() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let (out, o) = sh(&c, "cat /proc/self/cgroup; cat /proc/uptime");
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    for l in out.lines().filter(|l| l.contains(":/")) {
        let path = l.rsplit(':').next().unwrap();
        assert_eq!(path, "/", "cgroup namespace root not at /: {l}");
    }
    let inner_up: f64 = out
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let host_up: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        inner_up - host_up > 999_000.0,
        "boottime offset not seen inside: {inner_up} vs {host_up}"
    );
}

#[test]
fn ipc_namespace_hides_host_segments() {
    let Some(_serial) = privileged() else {
        return;
    };
    // a SysV segment on the host, removed when the guard drops (also if the test panics)
    struct Segment(i32);
    impl Drop for Segment {
        fn drop(&mut self) {
            // SAFETY: removing the segment this test created.
            unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
    // SAFETY: shmget with constant arguments; the guard removes the segment.
    let seg = Segment(unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) });
    let id = seg.0;
    assert!(id >= 0);
    let c = container(ContainerConfig::default());
    let (out, _) = sh(&c, "cat /proc/sysvipc/shm");
    drop(seg);
    assert!(
        !out.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(&id.to_string())),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn seccomp_and_capabilities_are_applied() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let (out, o) = sh(&c, "mount -t tmpfs x /tmp 2>&1; echo rc=$?; grep -E 'CapBnd|NoNewPrivs|Seccomp:' /proc/self/status");
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    assert!(
        out.contains("rc=1") || out.contains("rc=255"),
        "mount was not refused: {out}"
    );
    assert!(
        out.to_lowercase().contains("permission denied") || out.contains("not permitted"),
        "{out}"
    );
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
}

#[test]
fn memory_limit_oom_kills_with_peak_near_the_limit() {
    let Some(_serial) = privileged() else {
        return;
    };
    let limit = 64u64 << 20;
    let c = container(ContainerConfig {
        limits: Limits {
            memory: Some(limit),
            ..ContainerConfig::default().limits
        },
        ..ContainerConfig::default()
    });
    // a workload that keeps allocating: busybox dd reading into a growing buffer
    let o = busybox(
        &c,
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
        ],
    );
    let peak = o.sample.counters["cgroup.memory_peak_bytes"];
    assert!(
        o.sample.counters["cgroup.oom_kills"] >= 1,
        "{:?}",
        o.sample.counters
    );
    assert!(!o.sample.succeeded());
    assert!(
        (peak as f64) >= 0.95 * limit as f64 && peak <= limit,
        "peak {peak} vs limit {limit}"
    );
}

#[test]
fn cpu_quota_of_half_a_cpu_gives_half_a_cpu() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig {
        limits: Limits {
            cpus: Some(0.5),
            ..ContainerConfig::default().limits
        },
        ..ContainerConfig::default()
    });
    // spin for 2 s of wall time, then stop
    let o = busybox(&c, &["timeout", "2", "sh", "-c", "while :; do :; done"]);
    let cpu = o.sample.counters["cgroup.cpu_usage_ns"] as f64;
    let wall = o.sample.wall_ns as f64;
    let share = cpu / wall;
    assert!(
        o.sample.counters["cgroup.cpu_throttled_periods"] > 0,
        "{:?}",
        o.sample.counters
    );
    assert!(
        (0.45..=0.55).contains(&share),
        "share {share:.3} with a 0.5 quota ({cpu} ns cpu in {wall} ns)"
    );
}

#[test]
fn pids_limit_makes_the_next_fork_fail() {
    let Some(_serial) = privileged() else {
        return;
    };
    let n = 10;
    let c = container(ContainerConfig {
        limits: Limits {
            pids: Some(n),
            ..ContainerConfig::default().limits
        },
        ..ContainerConfig::default()
    });
    // init + this shell + sleepers: forks succeed until the cgroup holds n tasks; the shell
    // prints how many it started and dies at the first failed fork
    let (out, o) = sh(&c, "i=0; while :; do sleep 5 & i=$((i+1)); echo $i; done");
    let started: u64 = out.lines().last().unwrap_or("0").parse().unwrap();
    assert_eq!(started, n - 2, "{out}");
    assert!(
        o.sample.stderr_tail.contains("can't fork"),
        "{}",
        o.sample.stderr_tail
    );
    assert_eq!(o.sample.counters["cgroup.pids_peak"], n);
    assert!(o.sample.counters["cgroup.pids_limit_hits"] >= 1);
}

#[test]
fn mounts_inside_are_invisible_outside() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let during = std::thread::scope(|scope| {
        let h = scope.spawn(|| sh(&c, "sleep 1; cat /proc/self/mountinfo"));
        std::thread::sleep(Duration::from_millis(500));
        let during = std::fs::read_to_string("/proc/1/mountinfo").unwrap();
        let (inside, o) = h.join().unwrap();
        assert!(o.sample.succeeded());
        // inside, the root is the tmpfs container init mounted
        let root = inside
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .unwrap();
        assert!(root.contains(" - tmpfs "), "{root}");
        during
    });
    let now = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(before, now, "the host's mount table changed");
    assert!(
        !during
            .lines()
            .any(|l| l.contains("size=") && l.contains("/tmp ") && l.contains(" - tmpfs ")),
        "{during}"
    );
}

#[test]
fn container_root_is_an_unprivileged_uid_on_the_host() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let uid = std::thread::scope(|scope| {
        let h = scope.spawn(|| busybox(&c, &["sleep", "2"]));
        let mut uid = None;
        for _ in 0..150 {
            std::thread::sleep(Duration::from_millis(10));
            uid = std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok())
                .find_map(|e| {
                    let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                    if cmd != b"busybox\x00sleep\x002\x00" {
                        return None;
                    }
                    let status = std::fs::read_to_string(e.path().join("status")).ok()?;
                    status
                        .lines()
                        .find(|l| l.starts_with("Uid:"))
                        .map(str::to_string)
                });
            if uid.is_some() {
                break;
            }
        }
        assert!(h.join().unwrap().sample.succeeded());
        uid.expect("the container's process was not seen from the host")
    });
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["100000"; 4],
        "{uid}"
    );
}

fn assert_no_cgroups_of_this_process() {
    let mine = format!("vbench-{}-", std::process::id());
    for parent in vbench_backends::container::cgroup::Layout::host()
        .unwrap()
        .parents()
    {
        let left: Vec<_> = std::fs::read_dir(&parent)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&mine))
            .collect();
        assert!(
            left.is_empty(),
            "left behind in {}: {left:?}",
            parent.display()
        );
    }
}

#[test]
fn a_crash_leaves_nothing_behind() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let (_, o) = sh(&c, "sleep 30 & kill -SEGV $$");
    assert_eq!(
        o.sample.exit,
        Exit::Signal {
            signal: libc::SIGSEGV
        }
    );
    assert_no_cgroups_of_this_process();
    // the background sleeper died with the pid namespace
    let sleepers = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0030\x00"))
        .count();
    assert_eq!(sleepers, 0);
}

#[test]
fn timeout_kills_the_container_and_removes_its_cgroup() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let mut inv = Invocation::new(
        Program::Path(BUSYBOX.into()),
        vec!["sleep".into(), "30".into()],
    );
    inv.timeout = Some(Duration::from_millis(300));
    let o = c.run(&inv).unwrap();
    assert_eq!(o.sample.exit, Exit::Timeout { after_ms: 300 });
    assert_no_cgroups_of_this_process();
}

#[test]
fn selected_namespaces_only() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig {
        namespaces: vec![Namespace::Mount, Namespace::Uts],
        ..ContainerConfig::default()
    });
    let (out, o) = sh(&c, "id -u; hostname");
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    assert_eq!(out, "0\nvbench\n");
}

#[test]
fn exit_status_and_signals_pass_through() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let (_, o) = sh(&c, "exit 5");
    assert_eq!(o.sample.exit, Exit::Code { code: 5 });
    let (_, o) = sh(&c, "kill -SEGV $$");
    assert_eq!(
        o.sample.exit,
        Exit::Signal {
            signal: libc::SIGSEGV
        }
    );
    let inv = Invocation::new(Program::Path("/nonexistent".into()), vec![]);
    assert!(c.run(&inv).is_err());
}

#[test]
fn the_payload_is_pinned_to_the_cpu_asked_for() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    let cpu = *vbench_backends::session::pin::allowed_cpus()
        .last()
        .unwrap();
    let mut inv = Invocation::new(
        Program::Path(BUSYBOX.into()),
        ["sh", "-c", "grep Cpus_allowed_list /proc/self/status"]
            .iter()
            .map(OsString::from)
            .collect(),
    );
    inv.timeout = Some(Duration::from_secs(60));
    inv.cpu = Some(cpu);
    let o = c.run(&inv).unwrap();
    assert_eq!(
        o.sample.exit,
        Exit::Code { code: 0 },
        "{}",
        o.sample.stderr_tail
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("Cpus_allowed_list:\t{cpu}")
    );
    assert_eq!(o.sample.cpu, Some(cpu));
    inv.cpu = Some(4095);
    let e = c.run(&inv).unwrap_err().to_string();
    assert!(e.contains("CPU 4095"), "{e}");
}

/// A minimal static i386 ELF: `_exit(0)` through `int 0x80`.
fn elf32_exit0() -> Vec<u8> {
    vbench_backends::tiny_elf::build_i386(&[
        0xb8, 1, 0, 0, 0, // mov eax, 1 (exit)
        0x31, 0xdb, // xor ebx, ebx
        0xcd, 0x80, // int 0x80
    ])
}

#[test]
fn failures_are_explained_in_words_a_user_can_act_on() {
    let Some(_serial) = privileged() else {
        return;
    };
    let c = container(ContainerConfig::default());
    // a dynamically linked program: its ELF interpreter is missing, not "the program"
    let dynamic = ["/usr/bin/id", "/bin/ls", "/usr/bin/env"]
        .into_iter()
        .find(|p| {
            std::fs::read(p).is_ok_and(|b| {
                matches!(
                    vbench_backends::container::explain::kind(&b),
                    vbench_backends::container::explain::ProgramKind::Dynamic(_)
                )
            })
        })
        .expect("a dynamically linked program on the host");
    let e = c
        .run(&Invocation::new(Program::Path(dynamic.into()), vec![]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dynamically linked") && e.contains("ELF interpreter"),
        "{e}"
    );
    // a script whose interpreter is not in the root
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hello.sh");
    std::fs::write(&script, "#!/bin/bash\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let e = c
        .run(&Invocation::new(Program::Path(script), vec![]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("script") && e.contains("/bin/bash"), "{e}");
    // an i386 program: execve works, its first int 0x80 is killed by the seccomp filter
    let o = c
        .run(&Invocation::new(
            Program::from_bytes("i386", elf32_exit0()).unwrap(),
            vec![],
        ))
        .unwrap();
    assert_eq!(
        o.sample.exit,
        Exit::Signal {
            signal: libc::SIGSYS
        }
    );
    assert!(
        o.sample.stderr_tail.contains("32-bit (i386)"),
        "{}",
        o.sample.stderr_tail
    );
}

#[test]
fn a_kill_by_the_memory_limit_says_so() {
    let Some(_serial) = privileged() else {
        return;
    };
    use iced_x86::code_asm::*;
    let limit = 32u64 << 20;
    let c = container(ContainerConfig {
        limits: Limits {
            memory: Some(limit),
            ..ContainerConfig::default().limits
        },
        ..ContainerConfig::default()
    });
    // mmap 256 MiB and touch every page: the program itself is what the OOM killer kills
    let mut a = CodeAssembler::new(64).unwrap();
    let mut top = a.create_label();
    a.mov(eax, 9).unwrap(); // mmap
    a.xor(edi, edi).unwrap();
    a.mov(esi, 256 << 20).unwrap();
    a.mov(edx, 3).unwrap(); // PROT_READ | PROT_WRITE
    a.mov(r10d, 0x22).unwrap(); // MAP_PRIVATE | MAP_ANONYMOUS
    a.mov(r8, -1i64).unwrap();
    a.xor(r9d, r9d).unwrap();
    a.syscall().unwrap();
    a.mov(rbx, rax).unwrap();
    a.mov(rcx, (256u64 << 20) / 4096).unwrap();
    a.set_label(&mut top).unwrap();
    a.mov(byte_ptr(rbx), 1).unwrap();
    a.add(rbx, 4096).unwrap();
    a.dec(rcx).unwrap();
    a.jnz(top).unwrap();
    a.mov(eax, 231).unwrap();
    a.xor(edi, edi).unwrap();
    a.syscall().unwrap();
    let code = a
        .assemble(vbench_backends::tiny_elf::BASE + vbench_backends::tiny_elf::CODE)
        .unwrap();
    let image = vbench_backends::tiny_elf::build(&code, &[]);
    let mut inv = Invocation::new(Program::from_bytes("hog", image).unwrap(), vec![]);
    inv.timeout = Some(Duration::from_secs(60));
    let o = c.run(&inv).unwrap();
    assert_eq!(
        o.sample.exit,
        Exit::Signal {
            signal: libc::SIGKILL
        }
    );
    assert!(
        o.sample
            .stderr_tail
            .contains(&format!("killed by the memory limit ({limit} bytes")),
        "{}",
        o.sample.stderr_tail
    );
}
