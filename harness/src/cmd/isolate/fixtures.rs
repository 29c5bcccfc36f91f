//! The host side of the probes (a sleeping process to signal and ptrace, a TCP listener on
//! 127.0.0.1, a SysV shared memory segment, a scratch directory with a file to read) is made
//! by [`Fixtures`] and removed when it is dropped, when the run is interrupted, and on a panic.
//! The segment is marked for removal as soon as the harness has attached it (Linux lets others
//! attach it until the last detach), and the sleeper dies with the harness, so even a SIGKILLed
//! harness leaves neither; scratch directories of dead harnesses are removed at the next start.

use crate::scheduler;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vbench_backends::container::cgroup::Limits;
use vbench_workloads::probes::{Need, Probe, Source};

/// What the probes compare against, read from the host once.
pub(super) struct HostFacts {
    pub(super) root: bool,
    pub(super) hostname: String,
    pub(super) sys_mounted: bool,
    pub(super) iface: Option<String>,
    pub(super) release_agent: Option<PathBuf>,
    pub(super) dev_kvm: bool,
    pub(super) dev_mem: bool,
}

impl HostFacts {
    pub(super) fn gather() -> HostFacts {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let netdev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
        let release_agent = std::fs::read_dir("/sys/fs/cgroup").ok().and_then(|d| {
            let mut v: Vec<PathBuf> = d
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("release_agent"))
                .filter(|p| p.exists())
                .collect();
            v.sort();
            v.into_iter().next()
        });
        HostFacts {
            // SAFETY: geteuid has no preconditions.
            root: unsafe { libc::geteuid() } == 0,
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string(),
            sys_mounted: mountinfo
                .lines()
                .any(|l| l.split(' ').nth(4) == Some("/sys")),
            iface: netdev
                .lines()
                .skip(2)
                .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
                .find(|n| n != "lo"),
            release_agent,
            dev_kvm: Path::new("/dev/kvm").exists(),
            dev_mem: Path::new("/dev/mem").exists(),
        }
    }
}

fn ns_inode(ns: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{ns}"))
        .ok()
        .and_then(|l| {
            let s = l.to_string_lossy().into_owned();
            Some(s.split_once('[')?.1.trim_end_matches(']').to_string())
        })
        .unwrap_or_default()
}

fn boottime_s() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64
}

/// Prefix of scratch directories: `<tmp>/vbench-isolate-<pid>-<n>`.
const SCRATCH_PREFIX: &str = "vbench-isolate-";

/// What must be removed: registered for the panic hook as well as for `Drop`.
#[derive(Default)]
struct Leftovers {
    sleeper: Option<std::process::Child>,
    shm: Option<(i32, usize)>,
    dir: Option<PathBuf>,
}

static LEFTOVERS: Mutex<Option<Leftovers>> = Mutex::new(None);

fn clean_up() {
    let taken = LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut l) = taken {
        if let Some(mut c) = l.sleeper.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((id, addr)) = l.shm.take() {
            // SAFETY: addr is where this process attached segment id; detaching and removing
            // it touches nothing else (IPC_RMID of an already removed id just fails).
            unsafe {
                libc::shmdt(addr as *const libc::c_void);
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
        if let Some(d) = l.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The host side of the probes; everything is removed on drop.
pub(super) struct Fixtures {
    pub(super) host_pid: u32,
    pub(super) port: u16,
    pub(super) accepted: Arc<AtomicU64>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) listener: Option<std::thread::JoinHandle<()>>,
    pub(super) shm_id: i32,
    pub(super) magic: u64,
    pub(super) dir: PathBuf,
    pub(super) secret: PathBuf,
}

static HOOK: std::sync::Once = std::sync::Once::new();

impl Fixtures {
    pub(super) fn new() -> Result<Fixtures> {
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                clean_up();
                prev(info);
            }));
        });
        remove_stale_scratch();
        *LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner()) = Some(Leftovers::default());
        let mut fx = Fixtures {
            host_pid: 0,
            port: 0,
            accepted: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            listener: None,
            shm_id: -1,
            magic: 0,
            dir: PathBuf::new(),
            secret: PathBuf::new(),
        };
        // From here on, an early return drops `fx`, which removes what was made so far.
        let magic = ((std::process::id() as u64) << 32) | (scheduler::now_ms() & 0xffff_ffff) | 1;
        fx.magic = magic;
        let dir = std::env::temp_dir().join(format!(
            "{SCRATCH_PREFIX}{}-{}",
            std::process::id(),
            scheduler::now_ms()
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        with_leftovers(|l| l.dir = Some(dir.clone()));
        fx.dir = dir.clone();
        fx.secret = dir.join("secret");
        std::fs::write(&fx.secret, format!("{magic}\n")).context("writing the host file")?;

        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("3600")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: prctl is async-signal-safe; the sleeper dies with the harness.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting the host sleeper (sleep)")?;
        fx.host_pid = child.id();
        with_leftovers(|l| l.sleeper = Some(child));

        // SAFETY: shmget/shmat/shmctl with integer arguments; the segment is 4096 bytes and
        // the magic is written at its start only after a successful attach.
        unsafe {
            let id = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
            if id < 0 {
                return Err(std::io::Error::last_os_error()).context("shmget");
            }
            let addr = libc::shmat(id, std::ptr::null(), 0);
            if addr as isize == -1 {
                let e = std::io::Error::last_os_error();
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
                return Err(e).context("shmat");
            }
            with_leftovers(|l| l.shm = Some((id, addr as usize)));
            (addr as *mut u64).write_volatile(magic);
            // Removed at the last detach (Linux still lets others attach it until then).
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            fx.shm_id = id;
        }

        let l = TcpListener::bind("127.0.0.1:0").context("binding the loopback listener")?;
        l.set_nonblocking(true)?;
        fx.port = l.local_addr()?.port();
        let (acc, stop) = (fx.accepted.clone(), fx.stop.clone());
        fx.listener = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        acc.fetch_add(1, Ordering::Relaxed);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                        let mut b = [0u8; 64];
                        let _ = s.read(&mut b);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
        Ok(fx)
    }

    pub(super) fn describe(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("host_pid".to_string(), self.host_pid.to_string()),
            ("tcp_port".to_string(), self.port.to_string()),
            (
                "tcp_connections_accepted".to_string(),
                self.accepted.load(Ordering::Relaxed).to_string(),
            ),
            ("shm_id".to_string(), self.shm_id.to_string()),
            ("scratch_dir".to_string(), self.dir.display().to_string()),
        ])
    }
}

fn with_leftovers(f: impl FnOnce(&mut Leftovers)) {
    let mut g = LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Leftovers::default));
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
        clean_up();
    }
}

/// Removes scratch directories of vbench processes that no longer exist (also at the start of
/// every command that runs anything: [`crate::cmd::common::clean_stale`]).
pub(crate) fn remove_stale_scratch() {
    let Ok(d) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in d.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

// ---- arguments ----

pub(super) struct Ctx<'a> {
    pub(super) fx: &'a Fixtures,
    pub(super) host: &'a HostFacts,
    pub(super) limits: &'a Limits,
}

impl Ctx<'_> {
    /// A host condition without which the probe means nothing on any backend: the first of
    /// the catalogue's needs that the host lacks.
    pub(super) fn not_applicable(&self, p: &Probe) -> Option<String> {
        let h = self.host;
        p.needs
            .iter()
            .find(|&&n| match n {
                Need::Root => !h.root,
                Need::SysMount => !h.sys_mounted,
                Need::Interface => h.iface.is_none(),
                Need::ReleaseAgent => h.release_agent.is_none(),
                Need::DevKvm => !h.dev_kvm,
                Need::DevMem => !h.dev_mem,
            })
            .map(|n| n.reason().to_string())
    }

    /// The value of an argument taken from `from`, for a run that sees the host's file system
    /// (`host_fs`: native, and bt and kvm under the host policy) or a file system of its own.
    fn value(&self, from: Source, host_fs: bool) -> String {
        let (fx, h, lim) = (self.fx, self.host, self.limits);
        match from {
            Source::Text(t) => t.to_string(),
            Source::HostPid => fx.host_pid.to_string(),
            Source::Hostname => h.hostname.clone(),
            Source::Port => fx.port.to_string(),
            Source::Interface => h.iface.clone().unwrap_or_default(),
            Source::ShmId => fx.shm_id.to_string(),
            Source::Magic => fx.magic.to_string(),
            Source::Namespace(ns) => ns_inode(ns),
            Source::BootSeconds => boottime_s().to_string(),
            Source::ReleaseAgent => h
                .release_agent
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            Source::HostFile => fx.secret.display().to_string(),
            // the harness's scratch directory where the run writes into the host's file system
            // (so nothing is left in the host's /tmp); elsewhere the backend's own /tmp
            Source::ScratchDir if host_fs => fx.dir.display().to_string(),
            Source::ScratchDir => "/tmp".to_string(),
            Source::MemoryLimitMib(times) => {
                ((times * lim.memory.unwrap_or(256 << 20)) >> 20).to_string()
            }
            Source::TaskLimit(times) => (times * lim.pids.unwrap_or(64)).to_string(),
            Source::CpuQuota => format!("{:.3}", lim.cpus.unwrap_or(1.0)),
        }
    }

    /// The probe's command line, for a run that sees the host's file system (`host_fs`) or not.
    pub(super) fn args(&self, p: &Probe, host_fs: bool) -> Vec<OsString> {
        std::iter::once(p.name.to_string())
            .chain(
                p.args
                    .iter()
                    .map(|a| format!("{}={}", a.key, self.value(a.from, host_fs))),
            )
            .map(OsString::from)
            .collect()
    }
}

/// Runs `f` with fixtures that own nothing (pid 1, port 1, a nonexistent directory) on a host
/// with /sys, an `eth0`, /dev/kvm, no /dev/mem and no cgroup v1, as root or not.
#[cfg(test)]
pub(super) fn with_test_ctx<R>(root: bool, f: impl FnOnce(&Ctx<'_>) -> R) -> R {
    let host = HostFacts {
        root,
        hostname: "h".into(),
        sys_mounted: true,
        iface: Some("eth0".into()),
        release_agent: None,
        dev_kvm: true,
        dev_mem: false,
    };
    let fx = Fixtures {
        host_pid: 1,
        port: 1,
        accepted: Arc::default(),
        stop: Arc::default(),
        listener: None,
        shm_id: 1,
        magic: 7,
        dir: "/nonexistent".into(),
        secret: "/nonexistent/secret".into(),
    };
    let limits = Limits {
        memory: Some(256 << 20),
        cpus: Some(0.5),
        pids: Some(64),
        cpuset: None,
    };
    let r = f(&Ctx {
        fx: &fx,
        host: &host,
        limits: &limits,
    });
    std::mem::forget(fx); // owns nothing; keep Drop from clearing a real run's leftovers
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use vbench_workloads::probes::{find, CONTROL, PROBES};

    /// The probe's arguments on the matrix column called `column`.
    fn args(ctx: &Ctx<'_>, probe: &str, column: &str) -> Vec<String> {
        let p = find(probe).unwrap();
        ctx.args(p, [CONTROL, "bt/host", "kvm/host"].contains(&column))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn arguments_come_from_the_catalogue_sources() {
        with_test_ctx(true, |ctx| {
            assert_eq!(args(ctx, "sgdt", "kvm"), ["sgdt"]);
            assert_eq!(args(ctx, "memory", "container"), ["memory", "mb=512"]);
            assert_eq!(args(ctx, "fork_bomb", "container"), ["fork_bomb", "n=128"]);
            assert_eq!(
                args(ctx, "cpu_quota", "container"),
                ["cpu_quota", "ms=1000", "quota=0.500"]
            );
            assert_eq!(
                args(ctx, "proc_root", "bt"),
                [
                    "proc_root",
                    "host_pid=1",
                    "path=/nonexistent/secret",
                    "magic=7"
                ]
            );
            // the scratch directory is the host's for the runs on the host's file system only
            assert_eq!(
                args(ctx, "file_size", CONTROL),
                ["file_size", "dir=/nonexistent", "mb=96"]
            );
            assert_eq!(
                args(ctx, "file_size", "container"),
                ["file_size", "dir=/tmp", "mb=96"]
            );
            assert_eq!(
                args(ctx, "file_size", "bt"),
                ["file_size", "dir=/tmp", "mb=96"]
            );
            assert_eq!(
                args(ctx, "file_size", "kvm/host"),
                ["file_size", "dir=/nonexistent", "mb=96"]
            );
            assert_eq!(args(ctx, "mounts", "container"), ["mounts", "mnt=/sys"]);
            let ns = args(ctx, "pid_ns", "container");
            assert_eq!(ns[1], format!("ns={}", ns_inode("pid")));
            // every probe gets exactly its catalogue keys
            for p in PROBES {
                let got = ctx.args(p, false);
                assert_eq!(got.len(), 1 + p.args.len(), "{}", p.name);
                for (a, k) in got[1..].iter().zip(p.keys()) {
                    assert!(
                        a.to_str().unwrap().starts_with(&format!("{k}=")),
                        "{}",
                        p.name
                    );
                }
            }
        });
    }

    #[test]
    fn host_needs_make_probes_not_applicable() {
        with_test_ctx(true, |ctx| {
            let na = |name: &str| ctx.not_applicable(find(name).unwrap());
            assert_eq!(na("mounts"), None);
            assert_eq!(na("dev_kvm"), None);
            assert_eq!(na("dev_mem").as_deref(), Some("the host has no /dev/mem"));
            assert_eq!(
                na("release_agent").as_deref(),
                Some("the host has no cgroup v1 hierarchy")
            );
            assert_eq!(na("sgdt"), None);
        });
        with_test_ctx(false, |ctx| {
            let na = |name: &str| ctx.not_applicable(find(name).unwrap());
            let not_root = Some("vbench is not root: the native control cannot escape");
            // every privilege probe, and host_root, needs root; the first need unmet is named
            assert_eq!(na("mount").as_deref(), not_root);
            assert_eq!(na("dev_mem").as_deref(), not_root);
            assert_eq!(na("host_root").as_deref(), not_root);
            assert_eq!(na("hostname"), None);
        });
    }
}
