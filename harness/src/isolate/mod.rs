//! `vbench isolate`: runs every probe of the workload ELF on every backend, judges each result
//! against the catalogue's expectation (native is the control), prints the matrix and the
//! Popek-Goldberg table, and writes both into a results document.
//!
//! The host side of the probes (a sleeping process to signal and ptrace, a TCP listener on
//! 127.0.0.1, a SysV shared memory segment, a scratch directory with a file to read) is made
//! by [`Fixtures`] and removed when it is dropped, when the run is interrupted, and on a panic.
//! The segment is marked for removal as soon as the harness has attached it (Linux lets others
//! attach it until the last detach), and the sleeper dies with the harness, so even a SIGKILLed
//! harness leaves neither; scratch directories of dead harnesses are removed at the next start.

use crate::{doctor, scheduler, workload};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vbench_backends::container::cgroup::Limits;
use vbench_backends::container::ContainerConfig;
use vbench_backends::{Availability, Backend, Invocation, Outcome, Stdio};
use vbench_results::{
    BackendStatus, Document, Exit, IsolationMatrix, Plan, ProbeCell, ProbeRow, ProbeVerdict,
    RunStatus, Tool,
};
use vbench_workloads::probes::{self, Expect, Kind, Probe, PROBES};

/// How long the `never_exits` probe runs before the harness must kill it.
const NEVER_EXITS_TIMEOUT_MS: u64 = 2000;

const BACKEND_CHOICES: [&str; 5] = ["native", "container", "bt", "kvm", "all"];

/// Options of `vbench isolate`.
#[derive(clap::Args)]
pub struct IsolateArgs {
    /// Backend to probe; repeat for several, or `all`. Native always runs as the control.
    #[arg(long = "backend", short = 'b', value_parser = BACKEND_CHOICES, default_value = "all")]
    backends: Vec<String>,
    /// Probe to run, by name or kind (visibility, privilege, limit, translation, instruction);
    /// repeatable. Default: every probe.
    #[arg(long = "probe", short = 'p')]
    probes: Vec<String>,
    /// Results file. Default: vbench-results/isolate-<UTC time>.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the results document as JSON on stdout instead of the matrix.
    #[arg(long)]
    json: bool,
    /// Also render the HTML/Markdown report (with the matrix) into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Container memory limit for the probes (the memory probe touches twice this).
    #[arg(long, default_value = "256M", value_parser = vbench_backends::container::parse_bytes)]
    memory: u64,
    /// Container CPU quota for the probes, a fraction of one CPU.
    #[arg(long, default_value_t = 0.5, value_parser = parse_cpus)]
    cpus: f64,
    /// Container task limit for the probes (the fork bomb tries twice this).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(4..=2048))]
    pids: u64,
    /// Per-probe timeout in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
    timeout: u64,
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        // the native control must be able to exceed it by 0.15 of a CPU with 8 spinners
        Ok(v) if (0.05..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a CPU fraction in [0.05, 1]")),
    }
}

/// Runs `vbench isolate`.
pub fn run(a: IsolateArgs) -> Result<ExitCode> {
    let selected = select(&a.probes)?;
    // The memory probe touches twice the limit natively, on the host itself: keep that well
    // inside what the host has.
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let l = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024);
    if let Some(av) = available {
        if selected.iter().any(|p| p.name == "memory") && 2 * a.memory > av / 2 {
            anyhow::bail!(
                "--memory {} would make the memory probe touch {} bytes natively, more than half of the {av} bytes available",
                a.memory,
                2 * a.memory
            );
        }
    }
    let limits = Limits {
        memory: Some(a.memory),
        cpus: Some(a.cpus),
        pids: Some(a.pids),
        cpuset: None,
    };
    // Other backends keep their defaults (whatever settings they grow).
    let mut cfg = vbench_backends::Config::default();
    let container = ContainerConfig {
        limits: limits.clone(),
        ..ContainerConfig::default()
    };
    cfg.container = container;
    let all = vbench_backends::all_with(&cfg);
    let mut cols: Vec<usize> = vec![index(&all, "native")];
    for b in &a.backends {
        let add: Vec<usize> = if b == "all" {
            (0..all.len()).filter(|&i| !all[i].is_peer()).collect()
        } else {
            vec![index(&all, b)]
        };
        for i in add {
            if !cols.contains(&i) {
                cols.push(i);
            }
        }
    }
    let statuses: Vec<BackendStatus> = cols
        .iter()
        .map(|&i| {
            let av = all[i].availability();
            if let Availability::Unavailable(r) = &av {
                eprintln!("{}: unavailable: {r}", all[i].name());
            }
            BackendStatus {
                name: all[i].name().to_string(),
                available: av.is_available(),
                reason: match av {
                    Availability::Unavailable(r) => Some(r),
                    Availability::Available => None,
                },
                peer: false,
            }
        })
        .collect();
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, cancel.clone()).context("installing signal handler")?;
    }
    let started = scheduler::now_ms();
    let program = workload::program()?;
    let fx = Fixtures::new().context("preparing the host fixtures")?;
    let host = HostFacts::gather();
    let ctx = Ctx {
        fx: &fx,
        host: &host,
        limits: &limits,
    };
    let mut rows = Vec::new();
    for p in &selected {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let mut cells: Vec<ProbeCell> = Vec::new();
        for (&i, st) in cols.iter().zip(&statuses) {
            let b = &all[i];
            let expect = p.expect(b.name());
            let cell = |verdict, note: String| ProbeCell {
                backend: b.name().to_string(),
                expect: expect.name().to_string(),
                verdict,
                note,
                outcome: None,
                detail: String::new(),
                exit: None,
                counters: BTreeMap::new(),
            };
            if let Some(why) = ctx.not_applicable(p) {
                cells.push(cell(ProbeVerdict::NotApplicable, why));
                continue;
            }
            if let Expect::NotApplicable(why) = expect {
                cells.push(cell(ProbeVerdict::NotApplicable, why.to_string()));
                continue;
            }
            if !st.available {
                cells.push(cell(
                    ProbeVerdict::Unavailable,
                    st.reason.clone().unwrap_or_default(),
                ));
                continue;
            }
            let timeout = if p.name == "never_exits" {
                Duration::from_millis(NEVER_EXITS_TIMEOUT_MS)
            } else {
                Duration::from_secs(a.timeout)
            };
            let inv = Invocation {
                program: program.clone(),
                args: ctx.args(p, b.name()),
                timeout: Some(timeout),
                stdio: Stdio::Capture,
                cpu: None,
                cancel: Some(cancel.clone()),
                // the flood is expected to flood: drain it from the start
                chatty: p.name == "stdout_flood",
            };
            // A CPU share depends on what else the machine runs: a native control that could
            // not show the spinner above the quota gets up to two more tries.
            let tries = if p.name == "cpu_quota" && b.name() == "native" {
                3
            } else {
                1
            };
            let mut c = cell(ProbeVerdict::Broken, String::new());
            for attempt in 1..=tries {
                c = match b.run(&inv) {
                    Ok(out) => judge(p, b.name(), expect, &out, &ctx),
                    Err(e) => cell(ProbeVerdict::Broken, format!("backend error: {e}")),
                };
                if c.verdict != ProbeVerdict::Broken || cancel.load(Ordering::Relaxed) {
                    if attempt > 1 {
                        c.note = format!("escaped on attempt {attempt} (the machine is busy)");
                    }
                    break;
                }
            }
            c.expect = expect.name().to_string();
            cells.push(c);
        }
        control(&mut cells);
        rows.push(ProbeRow {
            probe: p.name.to_string(),
            kind: p.kind.name().to_string(),
            summary: p.summary.to_string(),
            cells,
        });
    }
    let interrupted = cancel.load(Ordering::Relaxed);
    let matrix = IsolationMatrix {
        backends: statuses.clone(),
        probes: rows,
        fixtures: fx.describe(),
        limits: BTreeMap::from([
            ("memory_bytes".to_string(), a.memory.to_string()),
            ("cpus".to_string(), a.cpus.to_string()),
            ("pids".to_string(), a.pids.to_string()),
        ]),
    };
    drop(fx);
    let doc = Document {
        schema_version: vbench_results::SCHEMA_VERSION,
        tool: Tool {
            name: "vbench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        status: if interrupted {
            RunStatus::Interrupted
        } else {
            RunStatus::Complete
        },
        started_unix_ms: started,
        finished_unix_ms: Some(scheduler::now_ms()),
        environment: doctor::report().environment,
        plan: Plan {
            timeout_ms: a.timeout * 1000,
            backends: statuses,
            ..Plan::default()
        },
        samples: vec![],
        summaries: vec![],
        failures: vec![],
        isolation: Some(matrix),
    };
    let out = a.out.unwrap_or_else(default_out);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    vbench_results::write_atomic(&out, &doc)
        .with_context(|| format!("writing {}", out.display()))?;
    let m = doc.isolation.as_ref().expect("set above");
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(m));
    }
    eprintln!("results written to {}", out.display());
    if let Some(dir) = &a.report {
        let w = vbench_reports::write_all(&doc, dir)
            .with_context(|| format!("rendering the report into {}", dir.display()))?;
        eprintln!("report written to {}", w.index.display());
    }
    let failed = m
        .probes
        .iter()
        .flat_map(|r| &r.cells)
        .filter(|c| c.verdict.fails())
        .count();
    Ok(if interrupted {
        ExitCode::from(130)
    } else if failed > 0 {
        eprintln!("vbench isolate: {failed} cell(s) escaped where they must be contained or are broken probes");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn index(all: &[Box<dyn Backend>], name: &str) -> usize {
    all.iter()
        .position(|b| b.name() == name)
        .expect("clap restricts backend names")
}

fn default_out() -> PathBuf {
    let digits: String = vbench_reports::utc(scheduler::now_ms())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    PathBuf::from(format!(
        "vbench-results/isolate-{}-{}.json",
        &digits[..8],
        &digits[8..14]
    ))
}

/// The probes named (or of the kinds named) in `sel`; every probe when empty.
fn select(sel: &[String]) -> Result<Vec<&'static Probe>> {
    if sel.is_empty() {
        return Ok(PROBES.iter().collect());
    }
    let mut v: Vec<&'static Probe> = Vec::new();
    for s in sel {
        let found: Vec<&'static Probe> = PROBES
            .iter()
            .filter(|p| p.name == s || p.kind.name() == s)
            .collect();
        if found.is_empty() {
            anyhow::bail!(
                "unknown probe or kind {s:?}; probes are: {}",
                PROBES.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            );
        }
        for p in found {
            if !v.iter().any(|q| q.name == p.name) {
                v.push(p);
            }
        }
    }
    // catalogue order
    v.sort_by_key(|p| PROBES.iter().position(|q| q.name == p.name));
    Ok(v)
}

// ---- host facts and fixtures ----

/// What the probes compare against, read from the host once.
struct HostFacts {
    root: bool,
    hostname: String,
    sys_mounted: bool,
    iface: Option<String>,
    release_agent: Option<PathBuf>,
    dev_kvm: bool,
    dev_mem: bool,
}

impl HostFacts {
    fn gather() -> HostFacts {
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
struct Fixtures {
    host_pid: u32,
    port: u16,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
    shm_id: i32,
    magic: u64,
    dir: PathBuf,
    secret: PathBuf,
}

static HOOK: std::sync::Once = std::sync::Once::new();

impl Fixtures {
    fn new() -> Result<Fixtures> {
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

    fn describe(&self) -> BTreeMap<String, String> {
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

/// Removes scratch directories of vbench processes that no longer exist.
fn remove_stale_scratch() {
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

// ---- arguments and judgement ----

struct Ctx<'a> {
    fx: &'a Fixtures,
    host: &'a HostFacts,
    limits: &'a Limits,
}

impl Ctx<'_> {
    /// A host condition without which the probe means nothing on any backend.
    fn not_applicable(&self, p: &Probe) -> Option<String> {
        let h = self.host;
        let root_needed = p.kind == Kind::Privilege || p.name == "host_root";
        let why = match p.name {
            _ if root_needed && !h.root => "vbench is not root: the native control cannot escape",
            "mounts" if !h.sys_mounted => "the host has no /sys mount to look for",
            "net_ifaces" if h.iface.is_none() => "the host has no interface besides lo",
            "release_agent" if h.release_agent.is_none() => "the host has no cgroup v1 hierarchy",
            "dev_kvm" if !h.dev_kvm => "the host has no /dev/kvm",
            "dev_mem" if !h.dev_mem => "the host has no /dev/mem",
            _ => return None,
        };
        Some(why.to_string())
    }

    /// The probe's command line on `backend`.
    fn args(&self, p: &Probe, backend: &str) -> Vec<OsString> {
        let (fx, h) = (self.fx, self.host);
        let mut v: Vec<String> = vec![p.name.to_string()];
        for &k in p.keys {
            let val = match k {
                "host_pid" => fx.host_pid.to_string(),
                "hostname" => h.hostname.clone(),
                "mnt" => "/sys".to_string(),
                "port" => fx.port.to_string(),
                "iface" => h.iface.clone().unwrap_or_default(),
                "shm_id" => fx.shm_id.to_string(),
                "magic" => fx.magic.to_string(),
                "ns" => ns_inode(p.name.trim_end_matches("_ns")),
                "boot_s" => boottime_s().to_string(),
                "path" if p.name == "release_agent" => h
                    .release_agent
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                "path" => fx.secret.display().to_string(),
                // the scratch directory is the host's; elsewhere the backend's own /tmp
                "dir" if backend == "native" => fx.dir.display().to_string(),
                "dir" => "/tmp".to_string(),
                "mb" if p.name == "memory" => {
                    ((2 * self.limits.memory.unwrap_or(256 << 20)) >> 20).to_string()
                }
                "mb" => "96".to_string(), // over the container's 64 MiB of tmpfs
                "n" => (2 * self.limits.pids.unwrap_or(64)).to_string(),
                "ms" => "1000".to_string(),
                "quota" => format!("{:.3}", self.limits.cpus.unwrap_or(1.0)),
                other => unreachable!("probe key {other} has no fixture"),
            };
            v.push(format!("{k}={val}"));
        }
        v.into_iter().map(OsString::from).collect()
    }
}

/// The number after `key=` in a probe's detail.
fn detail_num(detail: &str, key: &str) -> Option<f64> {
    let i = detail.find(&format!("{key}="))? + key.len() + 1;
    let rest = &detail[i..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Judges one run of probe `p` on `backend`.
fn judge(p: &Probe, backend: &str, expect: Expect, out: &Outcome, ctx: &Ctx<'_>) -> ProbeCell {
    let s = &out.sample;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = probes::parse_line(&text);
    let mut c = ProbeCell {
        backend: backend.to_string(),
        expect: expect.name().to_string(),
        verdict: ProbeVerdict::Broken,
        note: String::new(),
        outcome: line.ok().map(|l| l.outcome.name().to_string()),
        detail: line.map(|l| l.detail.to_string()).unwrap_or_default(),
        exit: Some(s.exit),
        counters: s.counters.clone(),
    };
    let killed = matches!(s.exit, Exit::Signal { signal: 9 });
    // probes the harness judges from what it measured itself
    match p.name {
        "stdout_flood" => {
            let want = 100 << 20;
            let bounded = out.stdout.len() <= 1 << 20;
            (c.verdict, c.note) = if line.is_err() || s.stdout_bytes < want {
                (
                    ProbeVerdict::Broken,
                    format!("the probe wrote only {} bytes", s.stdout_bytes),
                )
            } else if bounded {
                (
                    ProbeVerdict::Contained,
                    format!(
                        "the harness kept {} of {} bytes",
                        out.stdout.len(),
                        s.stdout_bytes
                    ),
                )
            } else {
                (
                    ProbeVerdict::Breach,
                    format!("the harness buffered {} bytes", out.stdout.len()),
                )
            };
            return c;
        }
        "never_exits" => {
            (c.verdict, c.note) = match s.exit {
                Exit::Timeout { after_ms } => (
                    ProbeVerdict::Contained,
                    format!("the harness killed it after {after_ms} ms"),
                ),
                e => (ProbeVerdict::Broken, format!("it ended by itself: {e}")),
            };
            return c;
        }
        "memory" if killed && line.is_err() && backend != "native" => {
            let peak = s.counters.get("cgroup.memory_peak_bytes").copied();
            let ooms = s.counters.get("cgroup.oom_kills").copied().unwrap_or(0);
            let limit = ctx.limits.memory.unwrap_or(0);
            c.verdict = ProbeVerdict::Contained;
            // the probe's last progress line: anonymous memory it had touched when killed
            let touched = s
                .stderr_tail
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("vbench-probe memory touched_kib="))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let (Some(kib), true) = (touched, limit > 0) {
                c.counters
                    .insert("probe.touched_bytes_at_kill".into(), kib * 1024);
                c.detail = format!("touched_at_kill={kib}KiB");
            }
            c.note = match peak {
                Some(pk) if limit > 0 => format!(
                    "killed (SIGKILL, {ooms} OOM kill(s)); cgroup peak {pk} B = {:.1}% of the {limit} B limit{}",
                    pk as f64 * 100.0 / limit as f64,
                    touched.map_or(String::new(), |kib| format!(
                        "; the probe had touched {} B = {:.1}% of it",
                        kib * 1024,
                        (kib * 1024) as f64 * 100.0 / limit as f64
                    ))
                ),
                _ => format!("killed (SIGKILL, {ooms} OOM kill(s))"),
            };
            return c;
        }
        _ => {}
    }
    if let (Expect::Observe, Err(_), Exit::Signal { signal }) = (expect, line, s.exit) {
        if backend != "native" {
            // What the backend did to the instruction is the observation (e.g. seccomp's
            // SIGSYS for the i386 syscall ABI); natively a probe always prints its line.
            c.verdict = ProbeVerdict::Observed;
            c.detail = format!("killed_by_{}", signal_name(signal));
            c.note = s.stderr_tail.trim().to_string();
            return c;
        }
    }
    let Ok(l) = line else {
        c.note = format!(
            "no valid probe line ({}); {}; stderr: {}",
            line.unwrap_err(),
            s.exit,
            s.stderr_tail.trim()
        );
        return c;
    };
    if l.probe != p.name {
        c.note = format!("the line names probe {}", l.probe);
        return c;
    }
    use probes::ProbeOutcome as O;
    (c.verdict, c.note) = match (expect, l.outcome) {
        (Expect::Contained | Expect::Escapes, O::Error)
            if backend != "native" && l.detail.contains("ENOSYS") =>
        {
            (
                ProbeVerdict::Contained,
                "the backend does not offer this system call (ENOSYS)".to_string(),
            )
        }
        (_, O::Error) => (
            ProbeVerdict::Broken,
            "the probe reported an error".to_string(),
        ),
        (Expect::Observe, O::Observed) => (ProbeVerdict::Observed, String::new()),
        (Expect::Observe, o) => (
            ProbeVerdict::Broken,
            format!("an observation probe said {o}"),
        ),
        (_, O::Observed) => (
            ProbeVerdict::Broken,
            "the probe gave no verdict where one is expected".to_string(),
        ),
        (Expect::Escapes, O::Escaped) => (ProbeVerdict::Escaped, String::new()),
        (Expect::Escapes, O::Contained) if backend == "native" => (
            ProbeVerdict::Broken,
            "the native control did not escape: the probe proves nothing".to_string(),
        ),
        (Expect::Escapes, O::Contained) => (
            ProbeVerdict::Contained,
            "contained although allowed".to_string(),
        ),
        (Expect::Contained, O::Contained) => (ProbeVerdict::Contained, String::new()),
        (Expect::Contained, O::Escaped) => (
            ProbeVerdict::Breach,
            "escaped where it must be contained".to_string(),
        ),
        (Expect::NotApplicable(r), _) => (ProbeVerdict::NotApplicable, r.to_string()),
    };
    // limit accuracy, where the backend enforces the limit
    // (the limits are the container backend's)
    if c.verdict == ProbeVerdict::Contained && backend == "container" {
        let lim = ctx.limits;
        match p.name {
            "cpu_quota" => {
                if let (Some(share), Some(q)) = (detail_num(&c.detail, "share"), lim.cpus) {
                    c.note = format!(
                        "measured share {share:.3} vs quota {q:.3} (difference {:+.3})",
                        share - q
                    );
                }
            }
            "fork_bomb" => {
                if let (Some(n), Some(max)) = (detail_num(&c.detail, "forked"), lim.pids) {
                    c.note = format!(
                        "fork failed after {n} children: {} tasks with container init and the probe, pids limit {max}",
                        n as u64 + 2
                    );
                }
            }
            _ => {}
        }
    }
    c
}

fn signal_name(sig: i32) -> String {
    match sig {
        4 => "SIGILL".into(),
        5 => "SIGTRAP".into(),
        7 => "SIGBUS".into(),
        9 => "SIGKILL".into(),
        11 => "SIGSEGV".into(),
        31 => "SIGSYS".into(),
        n => format!("signal_{n}"),
    }
}

/// The native column is the control: when it is broken, a "contained" elsewhere means nothing.
/// A probe whose system call the host kernel lacks (ENOSYS natively) is n/a everywhere.
fn control(cells: &mut [ProbeCell]) {
    let Some(native) = cells.iter().find(|c| c.backend == "native") else {
        return;
    };
    if native.verdict == ProbeVerdict::Broken && native.detail.contains("ENOSYS") {
        let why = format!("the host kernel lacks this system call ({})", native.detail);
        for c in cells.iter_mut() {
            c.verdict = ProbeVerdict::NotApplicable;
            c.note = why.clone();
        }
        return;
    }
    if native.verdict == ProbeVerdict::Broken {
        for c in cells
            .iter_mut()
            .filter(|c| c.verdict == ProbeVerdict::Contained)
        {
            c.verdict = ProbeVerdict::Broken;
            c.note = "the native control is broken, so this result means nothing".to_string();
        }
    }
}

// ---- rendering ----

/// Kinds of probes that record an observation instead of a verdict.
fn is_observation(kind: &str) -> bool {
    matches!(kind, "translation" | "instruction" | "vm")
}

/// The matrix, the Popek-Goldberg table and the notes, as terminal text.
pub fn render(m: &IsolationMatrix) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let names: Vec<&str> = m.backends.iter().map(|b| b.name.as_str()).collect();
    let verdict_rows: Vec<&ProbeRow> = m
        .probes
        .iter()
        .filter(|r| !is_observation(&r.kind))
        .collect();
    let w0 = m
        .probes
        .iter()
        .map(|r| r.probe.len())
        .max()
        .unwrap_or(5)
        .max(5);
    if !verdict_rows.is_empty() {
        let _ = write!(o, "{:<w0$}  {:<11}", "probe", "kind");
        for n in &names {
            let _ = write!(o, "  {n:<10}");
        }
        o.push('\n');
    }
    for r in &verdict_rows {
        let _ = write!(o, "{:<w0$}  {:<11}", r.probe, r.kind);
        for c in &r.cells {
            let _ = write!(o, "  {:<10}", c.verdict.label());
        }
        o.push('\n');
    }
    let pg: Vec<&ProbeRow> = m
        .probes
        .iter()
        .filter(|r| is_observation(&r.kind))
        .collect();
    if !pg.is_empty() {
        let _ = writeln!(
            o,
            "\nPopek-Goldberg, translation and machine-edge probes: what each backend observed at CPL3"
        );
        for r in &pg {
            let native = r.cells.iter().find(|c| c.backend == "native");
            for c in &r.cells {
                let v = match c.verdict {
                    ProbeVerdict::Observed => {
                        let differs = native.is_some_and(|n| {
                            n.backend != c.backend
                                && n.verdict == ProbeVerdict::Observed
                                && n.detail != c.detail
                        });
                        format!("{}{}", c.detail, if differs { "  (≠ native)" } else { "" })
                    }
                    v => format!("{} {}", v.label(), c.note),
                };
                let _ = writeln!(o, "{:<w0$}  {:<10}  {v}", r.probe, c.backend);
            }
        }
    }
    let notes: Vec<(&ProbeRow, &ProbeCell)> = m
        .probes
        .iter()
        .flat_map(|r| r.cells.iter().map(move |c| (r, c)))
        .filter(|(r, c)| {
            !c.note.is_empty() && c.verdict != ProbeVerdict::Unavailable && !is_observation(&r.kind)
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(o, "\nnotes:");
        for (r, c) in notes {
            let _ = writeln!(
                o,
                "  {} on {}: {}: {}{}",
                r.probe,
                c.backend,
                c.verdict.label(),
                c.note,
                if c.detail.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", c.detail)
                }
            );
        }
    }
    for b in m.backends.iter().filter(|b| !b.available) {
        let _ = writeln!(
            o,
            "{}: unavailable: {}",
            b.name,
            b.reason.as_deref().unwrap_or("")
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use vbench_results::Sample;

    fn ctx_run(p: &str, backend: &str, stdout: &str, exit: Exit) -> ProbeCell {
        let probe = probes::find(p).unwrap();
        let out = Outcome {
            sample: Sample {
                exit,
                stdout_bytes: stdout.len() as u64,
                ..Sample::default()
            },
            stdout: stdout.as_bytes().to_vec(),
        };
        let host = HostFacts {
            root: true,
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
            magic: 1,
            dir: "/nonexistent".into(),
            secret: "/nonexistent/secret".into(),
        };
        let limits = Limits {
            memory: Some(256 << 20),
            cpus: Some(0.5),
            pids: Some(64),
            cpuset: None,
        };
        let ctx = Ctx {
            fx: &fx,
            host: &host,
            limits: &limits,
        };
        let c = judge(probe, backend, probe.expect(backend), &out, &ctx);
        std::mem::forget(fx); // owns nothing; keep Drop from clearing a real run's leftovers
        c
    }

    const OK: Exit = Exit::Code { code: 0 };

    #[test]
    fn verdicts_follow_expectations() {
        let esc = "VBENCH-PROBE probe=hostname outcome=escaped detail=nodename=h\n";
        let con = "VBENCH-PROBE probe=hostname outcome=contained detail=nodename=vbench\n";
        assert_eq!(
            ctx_run("hostname", "native", esc, OK).verdict,
            ProbeVerdict::Escaped
        );
        assert_eq!(
            ctx_run("hostname", "native", con, OK).verdict,
            ProbeVerdict::Broken
        );
        assert_eq!(
            ctx_run("hostname", "container", con, OK).verdict,
            ProbeVerdict::Contained
        );
        let b = ctx_run("hostname", "container", esc, OK);
        assert_eq!(b.verdict, ProbeVerdict::Breach);
        assert!(b.verdict.fails());
        // an allowed escape (raw sockets keep CAP_NET_RAW in the container)
        let raw = "VBENCH-PROBE probe=raw_socket outcome=escaped detail=socket:ok\n";
        assert_eq!(
            ctx_run("raw_socket", "container", raw, OK).verdict,
            ProbeVerdict::Escaped
        );
        // errors, missing lines and wrong names are broken probes
        let err = "VBENCH-PROBE probe=hostname outcome=error detail=uname:EFAULT\n";
        assert_eq!(
            ctx_run("hostname", "container", err, OK).verdict,
            ProbeVerdict::Broken
        );
        let none = ctx_run("hostname", "native", "", Exit::Signal { signal: 11 });
        assert_eq!(none.verdict, ProbeVerdict::Broken);
        assert!(none.note.contains("signal 11"), "{}", none.note);
        let other = "VBENCH-PROBE probe=mounts outcome=escaped detail=x\n";
        assert_eq!(
            ctx_run("hostname", "native", other, OK).verdict,
            ProbeVerdict::Broken
        );
        // observations
        let obs = "VBENCH-PROBE probe=sgdt outcome=observed detail=sgdt:base=0x0\n";
        let c = ctx_run("sgdt", "native", obs, OK);
        assert_eq!(
            (c.verdict, c.detail.as_str()),
            (ProbeVerdict::Observed, "sgdt:base=0x0")
        );
        // a backend that kills the probe for the instruction: that is the observation
        let sys = ctx_run("int80", "container", "", Exit::Signal { signal: 31 });
        assert_eq!(sys.verdict, ProbeVerdict::Observed);
        assert_eq!(sys.detail, "killed_by_SIGSYS");
        // natively the probe must always print its line
        let nat = ctx_run("int80", "native", "", Exit::Signal { signal: 31 });
        assert_eq!(nat.verdict, ProbeVerdict::Broken);
    }

    #[test]
    fn harness_judged_limits() {
        // an OOM-killed memory probe is contained, with the peak against the limit
        let mut killed = ctx_run("memory", "container", "", Exit::Signal { signal: 9 });
        assert_eq!(killed.verdict, ProbeVerdict::Contained);
        assert!(killed.note.contains("killed"), "{}", killed.note);
        // natively nothing limits it: a kill there is a broken control
        killed = ctx_run("memory", "native", "", Exit::Signal { signal: 9 });
        assert_eq!(killed.verdict, ProbeVerdict::Broken);
        // a flood that did not flood is broken
        let short = "VBENCH-PROBE probe=stdout_flood outcome=observed detail=x\n";
        assert_eq!(
            ctx_run("stdout_flood", "native", short, OK).verdict,
            ProbeVerdict::Broken
        );
        let q = "VBENCH-PROBE probe=cpu_quota outcome=contained detail=share=0.497,cpu_ns=1,wall_ns=2\n";
        let c = ctx_run("cpu_quota", "container", q, OK);
        assert_eq!(c.verdict, ProbeVerdict::Contained);
        assert!(c.note.contains("-0.003"), "{}", c.note);
    }

    #[test]
    fn a_broken_control_voids_contained_results() {
        let cell = |b: &str, v| ProbeCell {
            backend: b.into(),
            expect: String::new(),
            verdict: v,
            note: String::new(),
            outcome: None,
            detail: String::new(),
            exit: None,
            counters: BTreeMap::new(),
        };
        let mut cells = vec![
            cell("native", ProbeVerdict::Broken),
            cell("container", ProbeVerdict::Contained),
        ];
        control(&mut cells);
        assert_eq!(cells[1].verdict, ProbeVerdict::Broken);
        let mut cells = vec![
            cell("native", ProbeVerdict::Broken),
            cell("container", ProbeVerdict::Contained),
        ];
        cells[0].detail = "init_module:ENOSYS_not_in_this_kernel".into();
        control(&mut cells);
        assert!(cells
            .iter()
            .all(|c| c.verdict == ProbeVerdict::NotApplicable));
    }

    #[test]
    fn probe_selection_and_arguments() {
        assert_eq!(select(&[]).unwrap().len(), PROBES.len());
        let v = select(&["limit".into(), "hostname".into()]).unwrap();
        assert_eq!(v[0].name, "hostname");
        assert!(v.iter().any(|p| p.name == "fork_bomb"));
        assert!(select(&["nope".into()]).is_err());
        assert_eq!(
            detail_num("forked=62_of_128,fork:EAGAIN", "forked"),
            Some(62.0)
        );
        assert_eq!(detail_num("share=0.501,cpu", "share"), Some(0.501));
    }
}
