//! The `container` backend: the program in fresh namespaces (any of pid, mount, net, uts, ipc,
//! user, cgroup, time), in a minimal root on tmpfs entered with pivot_root, with a small
//! capability set, no_new_privs and a seccomp filter, under cgroup limits.
//!
//! Process model (as crun with `--init`): vbench `clone`s a container init (pid 1 in the new
//! pid namespace). vbench writes its uid/gid maps and moves it into the run's cgroup, then lets
//! it go. Init enters a new cgroup namespace (so its cgroup is the namespace root) and builds
//! the root file system, then a new time namespace with the configured offsets, and forks the
//! payload, which drops privileges, installs the seccomp filter and execs the program. Init
//! reaps every process of the container and forwards the payload's exit to vbench through a
//! report pipe. Killing init (timeout, ^C) kills the whole pid namespace; the cgroup is removed
//! after every run, and stale ones of killed vbench processes at start-up.
//!
//! The child side of `clone` runs without allocating: everything it needs (paths, argv, the
//! seccomp program) is built before the clone, so it is safe even when other threads hold the
//! allocator's lock.
//!
//! Why [`cgroup`] is vbench's own code and not cgroups-rs (the crate the design first named;
//! its fs API of 0.3-0.5 was read for this decision): its `CgroupBuilder` with
//! `hierarchies::auto()` makes the group in every mounted v1 hierarchy, relative to each
//! hierarchy's root, while vbench must create its groups only below the cgroup it itself runs in,
//! which on v1 is a different path per controller (`/proc/self/cgroup`) and only in the
//! controllers a limit needs; the newer releases also pull in zbus for systemd's manager, a large
//! dependency vbench does not use. What vbench needs (create/limit/attach/read stats/remove,
//! v1 and v2, stale clean-up) is about 600 lines, tested against temp-dir fixtures of both
//! layouts.

pub mod cgroup;
mod child;
pub mod explain;
pub mod root;

use crate::session::process::{supervise, Pipes};
use crate::{Availability, Backend, BackendError, Invocation, Outcome, Stdio};
use cgroup::{Layout, Limits};
pub use root::{Rootfs, Volume};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;
use vbench_results::{Exit, Sample};

/// A namespace type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Namespace {
    /// Process ids: the program's init is pid 1 and host processes are invisible.
    Pid,
    /// Mounts: a private tmpfs root entered with pivot_root.
    Mount,
    /// Network: only a loopback interface.
    Net,
    /// Host and domain name.
    Uts,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Users: container root is an unprivileged host uid.
    User,
    /// cgroup view: the run's cgroup is the root.
    Cgroup,
    /// Monotonic and boot-time clocks with an offset.
    Time,
}

impl Namespace {
    /// All eight, in display order.
    pub const ALL: [Namespace; 8] = [
        Namespace::Pid,
        Namespace::Mount,
        Namespace::Net,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::User,
        Namespace::Cgroup,
        Namespace::Time,
    ];

    /// Name as on the command line and in /proc/self/ns.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Pid => "pid",
            Namespace::Mount => "mnt",
            Namespace::Net => "net",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::User => "user",
            Namespace::Cgroup => "cgroup",
            Namespace::Time => "time",
        }
    }

    /// Parses a name (`mount` is accepted for `mnt`).
    pub fn parse(s: &str) -> Option<Namespace> {
        let s = if s == "mount" { "mnt" } else { s };
        Namespace::ALL.into_iter().find(|n| n.name() == s)
    }

    fn clone_flag(self) -> libc::c_int {
        match self {
            Namespace::Pid => libc::CLONE_NEWPID,
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::User => libc::CLONE_NEWUSER,
            Namespace::Cgroup => libc::CLONE_NEWCGROUP,
            Namespace::Time => CLONE_NEWTIME,
        }
    }
}

/// Not in every libc release.
pub const CLONE_NEWTIME: libc::c_int = 0x80;

/// Parses a comma-separated namespace list (`all` for every type, `none` for none).
pub fn parse_namespaces(s: &str) -> Result<Vec<Namespace>, String> {
    match s.trim() {
        "all" => return Ok(Namespace::ALL.to_vec()),
        "none" | "" => return Ok(vec![]),
        _ => {}
    }
    let mut v = Vec::new();
    for part in s.split(',') {
        let n = Namespace::parse(part.trim()).ok_or_else(|| {
            format!(
                "unknown namespace {part:?}; namespaces are {} (or all, none)",
                Namespace::ALL.map(Namespace::name).join(",")
            )
        })?;
        if !v.contains(&n) {
            v.push(n);
        }
    }
    v.sort();
    Ok(v)
}

/// Parses a byte size with an optional K/M/G suffix (binary).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n >= 1 << 20)
        .ok_or_else(|| format!("{s:?} is not a size of at least 1M (e.g. 512M, 2G)"))
}

/// Container settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerConfig {
    /// Namespaces to create.
    pub namespaces: Vec<Namespace>,
    /// cgroup limits.
    pub limits: Limits,
    /// First host uid/gid that container ids map to (container root = this uid).
    pub id_base: u32,
    /// Offset of CLOCK_MONOTONIC and CLOCK_BOOTTIME inside the time namespace, seconds.
    pub time_offset_secs: i64,
    /// Host name inside the uts namespace.
    pub hostname: String,
    /// The root file system (with the mnt namespace).
    pub rootfs: Rootfs,
    /// Bind mounts (`-v`).
    pub volumes: Vec<Volume>,
    /// The program's working directory (`-w`); default: the current directory with the
    /// `host` root, `/` otherwise.
    pub workdir: Option<std::path::PathBuf>,
    /// The program gets vbench's environment (a user's program, as natively) instead of a
    /// fixed PATH and HOME (vbench's workloads).
    pub inherit_env: bool,
    /// `KEY=VALUE` settings on top (`-e`).
    pub env: Vec<std::ffi::OsString>,
}

/// Default memory limit of a run.
pub const DEFAULT_MEMORY: u64 = 1 << 30;
/// Default task limit of a run.
pub const DEFAULT_PIDS: u64 = 256;

impl Default for ContainerConfig {
    fn default() -> Self {
        ContainerConfig {
            namespaces: Namespace::ALL.to_vec(),
            limits: Limits {
                memory: Some(DEFAULT_MEMORY),
                cpus: None,
                pids: Some(DEFAULT_PIDS),
                cpuset: None,
            },
            id_base: 100_000,
            time_offset_secs: 1_000_000,
            hostname: "vbench".into(),
            rootfs: Rootfs::Minimal,
            volumes: Vec::new(),
            workdir: None,
            inherit_env: false,
            env: Vec::new(),
        }
    }
}

impl ContainerConfig {
    fn has(&self, n: Namespace) -> bool {
        self.namespaces.contains(&n)
    }

    /// Whether container root is vbench's own uid (the container shows host files: the host
    /// root, a root directory, volumes) rather than an unused host uid (the minimal root).
    pub fn root_is_own_uid(&self) -> bool {
        self.rootfs != Rootfs::Minimal || !self.volumes.is_empty()
    }
}

/// The container backend.
#[derive(Debug)]
pub struct Container {
    config: ContainerConfig,
    layout: OnceLock<Result<Layout, String>>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Container {
    /// A container backend with `config`.
    pub fn new(config: ContainerConfig) -> Self {
        Container {
            config,
            layout: OnceLock::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ContainerConfig {
        &self.config
    }

    /// The host's cgroup layout, detected once; stale cgroups of killed runs are removed then.
    fn layout(&self) -> Result<&Layout, String> {
        self.layout
            .get_or_init(|| {
                let l = Layout::host().map_err(|e| e.to_string())?;
                for p in l.remove_stale() {
                    eprintln!(
                        "vbench: removed stale cgroup {} of an earlier run",
                        p.display()
                    );
                }
                Ok(l)
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

fn os(what: &str) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Os {
        what: what.to_string(),
        source,
    }
}

impl Backend for Container {
    fn name(&self) -> &'static str {
        "container"
    }

    fn describe(&self) -> &'static str {
        "the same binary in fresh namespaces under cgroup limits"
    }

    fn availability(&self) -> Availability {
        if !nix::unistd::geteuid().is_root() {
            return Availability::Unavailable("not root (cgroups and namespaces need root)".into());
        }
        for n in &self.config.namespaces {
            let p = format!("/proc/self/ns/{}", n.name());
            if !std::path::Path::new(&p).exists() {
                return Availability::Unavailable(format!(
                    "kernel has no {} namespace ({p} missing)",
                    n.name()
                ));
            }
        }
        match self.layout() {
            Ok(_) => Availability::Available,
            Err(e) => Availability::Unavailable(format!("cgroups: {e}")),
        }
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        let layout = self.layout().map_err(|reason| BackendError::Unavailable {
            backend: "container",
            reason,
        })?;
        let cfg = &self.config;
        // checked before anything is created
        let cpu = inv
            .cpu
            .map(crate::session::pin::one_cpu_set_raw)
            .transpose()?;
        let bytes = inv.program.bytes()?;
        let name = format!(
            "{}{}-{}",
            cgroup::PREFIX,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let cg = layout
            .create(&name, &cfg.limits)
            .map_err(|e| BackendError::Os {
                what: "creating the run's cgroup".into(),
                source: std::io::Error::other(e.to_string()),
            })?;

        let (go_r, go_w) = pipe().map_err(os("pipe"))?;
        let (rep_r, rep_w) = pipe().map_err(os("pipe"))?;
        let capture = inv.stdio == Stdio::Capture;
        let (out_pipe, err_pipe) = if capture {
            (
                Some(pipe().map_err(os("pipe"))?),
                Some(pipe().map_err(os("pipe"))?),
            )
        } else {
            (None, None)
        };
        let dev_null = std::fs::File::open("/dev/null").map_err(os("/dev/null"))?;
        // v1: init moves itself into the cgroup through these (no grace period; see child.rs)
        let tasks: Vec<std::fs::File> = cg
            .tasks_files()
            .iter()
            .map(|p| std::fs::OpenOptions::new().write(true).open(p))
            .collect::<Result<_, _>>()
            .map_err(os("opening the run's cgroup's tasks files"))?;
        let spec = child::Spec::new(child::SpecInput {
            cfg,
            program_name: &inv.program.name(),
            program_path: inv.program.path(),
            exec_fallback: inv.program.exec_path(),
            bytes: &bytes,
            args: &inv.args,
            cpu,
            go: go_r.as_raw_fd(),
            go_w: go_w.as_raw_fd(),
            report: rep_w.as_raw_fd(),
            stdin: capture.then(|| dev_null.as_raw_fd()),
            stdout: out_pipe.as_ref().map(|p| p.1.as_raw_fd()),
            stderr: err_pipe.as_ref().map(|p| p.1.as_raw_fd()),
            close_in_child: [
                Some(rep_r.as_raw_fd()),
                out_pipe.as_ref().map(|p| p.0.as_raw_fd()),
                err_pipe.as_ref().map(|p| p.0.as_raw_fd()),
            ],
            cgroup_tasks: tasks.iter().map(|f| f.as_raw_fd()).collect(),
        })?;

        let flags = cfg
            .namespaces
            .iter()
            .filter(|n| !matches!(n, Namespace::Cgroup | Namespace::Time)) // entered by init
            .fold(0, |f, n| f | n.clone_flag());
        let clone_ns = child::monotonic_ns();
        let start = Instant::now();
        // Raw clone, not nix: nix's clone needs a new stack and a callback, and the child must
        // continue on a copy of this stack into `child::init`, which uses raw libc only (no
        // allocation, no locks) because other threads of vbench may hold them at the clone.
        // SAFETY: a fork-like clone (no new stack: the child continues on a copy of ours). The
        // child runs only `child::init`, which never returns and does not allocate.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0,
                0,
                0,
                0,
            )
        };
        if pid < 0 {
            return Err(os("clone")(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: we are the freshly cloned child; `spec` was built for it.
            unsafe { child::init(&spec) }
        }
        let pid = pid as libc::pid_t;
        drop(go_r);
        drop(rep_w);
        let (out_r, err_r) = (out_pipe.map(|p| p.0), err_pipe.map(|p| p.0));
        // (the write ends of stdout/stderr dropped with the tuples' second halves)
        let released = release(cfg, pid, &cg, &go_w);
        drop(go_w);
        if let Err(e) = released {
            // our own unreaped child
            let child = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            return Err(e);
        }
        let sup = supervise(
            pid,
            Pipes {
                stdout: out_r,
                stderr: err_r,
                chatty: inv.chatty,
            },
            inv.timeout,
            inv.cancel.as_deref(),
            false,
        )
        .map_err(os("supervising the container"))?;
        let wall = sup.reaped_at.unwrap_or_else(Instant::now) - start;
        let mut report = String::new();
        let _ = std::fs::File::from(rep_r).read_to_string(&mut report);
        let mut counters: BTreeMap<String, u64> = cg.stats();
        drop(cg.remove());
        let (exit, startup_ns) = read_report(&report, sup.exit, clone_ns, |errno| {
            explain::exec_failure(&inv.program.name(), &bytes, errno, &cfg.rootfs)
        })?;
        if let Some(d) = startup_ns {
            counters.insert("container.clone_to_exec_ns".into(), d);
            counters.extend(phases(&report, clone_ns));
        }
        let mut stderr_tail = String::from_utf8_lossy(&sup.stderr_tail).into_owned();
        let oom_kills = counters
            .get(cgroup::counters::OOM_KILLS)
            .copied()
            .unwrap_or(0);
        if let Some(note) = explain::exit_note(&bytes, &exit, oom_kills, cfg.limits.memory) {
            if !capture {
                eprintln!("vbench container: {note}");
            }
            stderr_tail.push_str(&format!("vbench container: {note}\n"));
        }
        Ok(Outcome {
            sample: Sample {
                wall_ns: wall.as_nanos() as u64,
                user_ns: sup.user_ns,
                sys_ns: sup.sys_ns,
                max_rss_kib: Some(sup.max_rss_kib),
                exit,
                report: None,
                startup_ns,
                counters,
                stdout_bytes: sup.stdout_bytes,
                stdout_digest: String::new(),
                stderr_tail,
                cpu: inv.cpu,
            },
            stdout: sup.stdout,
        })
    }
}

/// Lets the cloned init go: its uid/gid maps (user namespace), its cgroup, then the go byte.
fn release(
    cfg: &ContainerConfig,
    pid: libc::pid_t,
    cg: &cgroup::Cgroup,
    go_w: &OwnedFd,
) -> Result<(), BackendError> {
    if cfg.has(Namespace::User) {
        // With the minimal root, container root is an unused host uid. Where the container
        // shows host files (the host root, a root directory, volumes), its root is vbench's
        // own user, as rootless podman makes it: the files it creates in the current directory
        // are yours, and it reads what you can read.
        let map = |own: u32| {
            if !cfg.root_is_own_uid() {
                format!("0 {} 65536\n", cfg.id_base)
            } else {
                format!("0 {own} 1\n1 {} 65535\n", cfg.id_base + 1)
            }
        };
        let w = |f: &str, v: &str| {
            std::fs::write(format!("/proc/{pid}/{f}"), v)
                .map_err(os("writing the user namespace's id maps"))
        };
        w("setgroups", "deny")?;
        w("uid_map", &map(nix::unistd::geteuid().as_raw()))?;
        w("gid_map", &map(nix::unistd::getegid().as_raw()))?;
    }
    // v2: vbench moves it (on v1 init moved itself)
    if cg.tasks_files().is_empty() {
        cg.add(pid).map_err(|e| BackendError::Os {
            what: "moving the container into its cgroup".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    if nix::unistd::write(go_w, b"g") != Ok(1) {
        return Err(os("releasing the container")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Reads init's report pipe: a set-up error (`E`, explained by `explain_exec` when execve of
/// the program failed), the program's start (`S`, CLOCK_MONOTONIC ns), and how the payload
/// ended (`X` code, `K` signal), which replaces init's own exit. Returns the exit and the
/// clone-to-exec time.
fn read_report(
    report: &str,
    mut exit: Exit,
    clone_ns: u64,
    explain_exec: impl Fn(i32) -> Option<String>,
) -> Result<(Exit, Option<u64>), BackendError> {
    let mut startup_ns = None;
    let ended = |e: &Exit| matches!(e, Exit::Code { .. } | Exit::Signal { .. });
    for line in report.lines() {
        if let Some(msg) = line.strip_prefix('E') {
            let errno = msg
                .rsplit_once("(errno ")
                .and_then(|(_, e)| e.trim_end_matches(')').parse().ok())
                .unwrap_or(0);
            if msg.starts_with("execve of the program") {
                if let Some(why) = explain_exec(errno) {
                    return Err(BackendError::Invalid(why));
                }
            }
            return Err(BackendError::Os {
                what: "container set-up".into(),
                source: std::io::Error::other(msg.to_string()),
            });
        } else if let Some(v) = line.strip_prefix('S').and_then(|v| v.parse::<u64>().ok()) {
            startup_ns = Some(v.saturating_sub(clone_ns));
        } else if let Some(v) = line.strip_prefix('X').and_then(|v| v.parse().ok()) {
            if ended(&exit) {
                exit = Exit::Code { code: v };
            }
        } else if let Some(v) = line.strip_prefix('K').and_then(|v| v.parse().ok()) {
            if ended(&exit) {
                exit = Exit::Signal { signal: v };
            }
        }
    }
    if startup_ns.is_none() && ended(&exit) {
        return Err(BackendError::Os {
            what: "container set-up".into(),
            source: std::io::Error::other(format!(
                "container init ended ({exit}) before the program started"
            )),
        });
    }
    Ok((exit, startup_ns))
}

/// The start-up's phases from init's stamps (`C` running after the clone and in the run's
/// cgroup, `G` released by
/// vbench, `R` its namespaces and root made; `S` the program's exec), as counters.
fn phases(report: &str, clone_ns: u64) -> Vec<(String, u64)> {
    let at = |tag: char| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(tag)?.parse::<u64>().ok())
    };
    let mut out = Vec::new();
    let mut prev = clone_ns;
    for (tag, name) in [
        ('C', "clone"),
        ('G', "release"),
        ('R', "namespaces_and_root"),
        ('S', "payload_to_exec"),
    ] {
        let Some(t) = at(tag) else { break };
        out.push((
            format!("container.startup.{name}_ns"),
            t.saturating_sub(prev),
        ));
        prev = t;
    }
    out
}

/// Raw fd helper for the child module.
pub(crate) type Fd = RawFd;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_reports_are_read() {
        let none = |_| None;
        let (exit, start) = read_report("S1500\nX3\n", Exit::Code { code: 0 }, 1000, none).unwrap();
        assert_eq!((exit, start), (Exit::Code { code: 3 }, Some(500)));
        let (exit, _) = read_report("S1\nK9\n", Exit::Code { code: 0 }, 0, none).unwrap();
        assert_eq!(exit, Exit::Signal { signal: 9 });
        // a timeout stays a timeout whatever init says of the payload
        let t = Exit::Timeout { after_ms: 5 };
        assert_eq!(read_report("S1\nK9\n", t, 0, none).unwrap().0, t);
        let e = read_report(
            "Eexecve of the program: No such file (errno 2)\n",
            Exit::Code { code: 127 },
            0,
            |n| (n == 2).then(|| "explained".to_string()),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "explained");
        let e = read_report("", Exit::Code { code: 1 }, 0, none).unwrap_err();
        assert!(e.to_string().contains("before the program started"), "{e}");
    }

    #[test]
    fn start_up_phases_are_read_from_the_stamps() {
        let p = phases("C1100\nG1500\nR4500\nS5000\nX0\n", 1000);
        assert_eq!(
            p,
            [
                ("container.startup.clone_ns".to_string(), 100),
                ("container.startup.release_ns".to_string(), 400),
                ("container.startup.namespaces_and_root_ns".to_string(), 3000),
                ("container.startup.payload_to_exec_ns".to_string(), 500),
            ]
        );
        assert_eq!(phases("C1100\n", 1000).len(), 1);
    }

    #[test]
    fn namespace_lists() {
        assert_eq!(parse_namespaces("all").unwrap().len(), 8);
        assert_eq!(parse_namespaces("none").unwrap(), vec![]);
        assert_eq!(
            parse_namespaces("net,pid,mount,pid").unwrap(),
            vec![Namespace::Pid, Namespace::Mount, Namespace::Net]
        );
        let e = parse_namespaces("pid,vm").unwrap_err();
        assert!(e.contains("\"vm\"") && e.contains("cgroup"), "{e}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert!(parse_bytes("12").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }
}
