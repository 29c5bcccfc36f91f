//! `vbench isolate`: runs every probe of the workload ELF on every backend, judges each result
//! against the catalogue's expectation (native is the control), prints the matrix and the
//! Popek-Goldberg table, and writes both into a results document.
//!
//! The host side of the probes is in [`fixtures`], the judgement of each run in [`judge`], the
//! terminal rendering in [`render`].

mod fixtures;
mod judge;
mod render;

use crate::{doctor, scheduler, workload};
use anyhow::{Context, Result};
pub(crate) use fixtures::remove_stale_scratch;
use fixtures::{Ctx, Fixtures, HostFacts};
use judge::{control, judge};
pub use render::render;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vbench_backends::container::cgroup::Limits;
use vbench_backends::container::ContainerConfig;
use vbench_backends::{AbiPolicy, Availability, Backend, Invocation, Program, Stdio};
use vbench_results::{
    BackendStatus, Cpl3Class, Document, IsolationMatrix, Plan, ProbeCell, ProbeRow, ProbeVerdict,
    RunStatus, Tool,
};
use vbench_workloads::probes::{
    Cpl3, Expect, Judge, Kind, Probe, Source, CONTAINER_HOST, CONTROL, PROBES,
};

/// `--backend` of isolate ([`probed_backends`]): vbench's own levels from the registry, gVisor (the peer that is a
/// sandbox: the translators qemu-user and valgrind contain nothing, and crun's verdicts would
/// be its default spec's), and `all`.
fn backend_choices() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(probed_backends())
}

/// The names `--backend` of isolate takes.
fn probed_backends() -> Vec<&'static str> {
    let mut v = vbench_backends::registry::own();
    v.push("gvisor");
    v.push(vbench_backends::registry::ALL);
    v
}

/// Options of `vbench isolate`.
#[derive(clap::Args)]
pub struct IsolateArgs {
    /// Backend to probe; repeat for several, or `all`. Native always runs as the control; bt
    /// and kvm run under both ABI policies (columns `bt`, `kvm`: confined; `bt/host`,
    /// `kvm/host`: host).
    #[arg(long = "backend", short = 'b', value_parser = backend_choices(), default_value = "all")]
    backends: Vec<String>,
    // The help lists the catalogue's kinds: see `probe_help`.
    #[arg(long = "probe", short = 'p', help = probe_help())]
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
    #[arg(long, default_value = DEFAULT_MEMORY, value_parser = vbench_backends::container::parse_bytes)]
    memory: u64,
    /// Container CPU quota for the probes, a fraction of one CPU.
    #[arg(long, default_value_t = DEFAULT_CPUS, value_parser = parse_cpus)]
    cpus: f64,
    /// Container task limit for the probes (the fork bomb tries twice this).
    #[arg(long, default_value_t = DEFAULT_PIDS, value_parser = clap::value_parser!(u64).range(4..=2048))]
    pids: u64,
    /// Per-probe timeout in seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_S, value_parser = clap::value_parser!(u64).range(5..=3600))]
    timeout: u64,
}

/// The defaults of `--memory`, `--cpus`, `--pids` and `--timeout` (also `run --isolate`'s).
const DEFAULT_MEMORY: &str = "256M";
const DEFAULT_CPUS: f64 = 0.5;
const DEFAULT_PIDS: u64 = 64;
const DEFAULT_TIMEOUT_S: u64 = 60;

/// The help of `--probe`, with every kind of the catalogue.
fn probe_help() -> String {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    format!(
        "Probe to run, by name or kind ({}); repeatable. Default: every probe",
        kinds.join(", ")
    )
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
    check_memory(&selected, a.memory)?;
    // reserved after the arguments are checked; a run that fails before writing its document
    // takes the reserved (still empty) file away again
    let out = crate::cmd::common::out_target(a.out.as_deref(), "isolate")?;
    let result = probe_all(&a, &selected, &out);
    if result.is_err()
        && out.kind() == crate::cmd::common::OutKind::Replace
        && std::fs::metadata(out.path()).is_ok_and(|m| m.len() == 0)
    {
        let _ = std::fs::remove_file(out.path());
    }
    result
}

/// The isolation matrix of `vbench run --isolate`: every probe, the catalogue's default limits
/// and timeout, on those of `backends` (run's `--backend` values) that isolate probes (the
/// peers qemu-user, valgrind and crun are left out: see [`backend_choices`]). Stops early when
/// `cancel` is set; the matrix then holds the probes completed.
pub fn for_run(backends: &[String], cancel: Arc<AtomicBool>) -> Result<IsolationMatrix> {
    let probed = probed_backends();
    let names: Vec<String> = backends
        .iter()
        .filter(|b| probed.contains(&b.as_str()))
        .cloned()
        .collect();
    let a = IsolateArgs {
        backends: names,
        probes: Vec::new(),
        out: None,
        json: false,
        report: None,
        memory: vbench_backends::container::parse_bytes(DEFAULT_MEMORY)
            .map_err(anyhow::Error::msg)?,
        cpus: DEFAULT_CPUS,
        pids: DEFAULT_PIDS,
        timeout: DEFAULT_TIMEOUT_S,
    };
    let selected: Vec<&'static Probe> = PROBES.iter().collect();
    check_memory(&selected, a.memory)?;
    probe_matrix(&a, &selected, cancel)
}

/// Runs the selected probes on the selected backends and writes the document to `out`.
fn probe_all(
    a: &IsolateArgs,
    selected: &[&'static Probe],
    out: &vbench_results::store::OutTarget,
) -> Result<ExitCode> {
    let cancel = crate::cmd::common::install_cancel()?;
    let started = scheduler::now_ms();
    let matrix = probe_matrix(a, selected, cancel.clone())?;
    let interrupted = cancel.load(Ordering::Relaxed);
    let statuses = matrix.backends.clone();
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
        writer: None,
    };
    finish(a, out, &doc, interrupted)
}

/// Runs the selected probes on the selected backends: the matrix.
fn probe_matrix(
    a: &IsolateArgs,
    selected: &[&'static Probe],
    cancel: Arc<AtomicBool>,
) -> Result<IsolationMatrix> {
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
    cfg.container = container.clone();
    let mut all = vbench_backends::all_with(&cfg);
    // the container's second column: the host root that a user's program gets
    all.push(Box::new(vbench_backends::container::Container::new(
        ContainerConfig {
            rootfs: vbench_backends::container::Rootfs::Host,
            ..container
        },
    )));
    let cols = columns(&all, &a.backends);
    let statuses: Vec<BackendStatus> = cols.iter().map(|c| status(&*all[c.index], c)).collect();
    let fx = Fixtures::new().context("preparing the host fixtures")?;
    let host = HostFacts::gather();
    let runner = Runner {
        program: workload::program()?,
        ctx: Ctx {
            fx: &fx,
            host: &host,
            limits: &limits,
        },
        timeout: Duration::from_secs(a.timeout),
        cancel: cancel.clone(),
    };
    let mut rows = Vec::new();
    for p in selected {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let mut cells: Vec<ProbeCell> = cols
            .iter()
            .zip(&statuses)
            .map(|(col, st)| runner.cell(p, &*all[col.index], col, st))
            .collect();
        control(&mut cells);
        rows.push(ProbeRow {
            probe: p.name.to_string(),
            kind: p.kind.name().to_string(),
            summary: p.summary.to_string(),
            cpl3: p.cpl3.map(|c| match c {
                Cpl3::Sensitive => Cpl3Class::Sensitive,
                Cpl3::Privileged => Cpl3Class::Privileged,
                Cpl3::Unrestricted => Cpl3Class::Unrestricted,
            }),
            cells,
        });
    }
    drop(runner);
    let matrix = IsolationMatrix {
        backends: statuses,
        probes: rows,
        fixtures: fx.describe(),
        limits: BTreeMap::from([
            ("memory_bytes".to_string(), a.memory.to_string()),
            ("cpus".to_string(), a.cpus.to_string()),
            ("pids".to_string(), a.pids.to_string()),
        ]),
    };
    drop(fx);
    Ok(matrix)
}

/// Writes the document, prints the matrix (or the JSON) and the report; the exit code.
fn finish(
    a: &IsolateArgs,
    out: &vbench_results::store::OutTarget,
    doc: &Document,
    interrupted: bool,
) -> Result<ExitCode> {
    out.write_document(doc)
        .with_context(|| format!("writing {}", out.path().display()))?;
    let m = doc.isolation.as_ref().expect("an isolation document");
    if a.json {
        println!("{}", serde_json::to_string_pretty(doc)?);
    } else {
        print!("{}", render(m));
    }
    eprintln!("results written to {}", out.path().display());
    if let Some(dir) = &a.report {
        let w = vbench_reports::write_all(doc, dir)
            .with_context(|| format!("rendering the report into {}", dir.display()))?;
        eprintln!("report written to {}", w.index.display());
    }
    let failed = m.failed_cells();
    Ok(if interrupted {
        ExitCode::from(crate::cmd::common::interrupted_exit())
    } else if failed > 0 {
        eprintln!("vbench isolate: {failed} cell(s) escaped where they must be contained or are broken probes");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A probe whose argument is a multiple of the memory limit touches that much natively, on the
/// host itself: keep that well inside what the host has.
fn check_memory(selected: &[&Probe], memory: u64) -> Result<()> {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let l = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024);
    let Some(av) = available else {
        return Ok(());
    };
    for p in selected {
        for a in p.args {
            if let Source::MemoryLimitMib(times) = a.from {
                if times * memory > av / 2 {
                    anyhow::bail!(
                        "--memory {memory} would make the {} probe touch {} bytes natively, more than half of the {av} bytes available",
                        p.name,
                        times * memory
                    );
                }
            }
        }
    }
    Ok(())
}

/// The backends whose guests' system calls go through `linux_abi` under an [`AbiPolicy`]: each
/// gets a column per policy.
const ABI_BACKENDS: [&str; 2] = ["bt", "kvm"];

/// One column of the matrix: a backend (its index in `all`) and, for bt and kvm, the policy of
/// their guests' system calls. The confined column keeps the backend's name (what vbench's own
/// workloads run under); the host column, what `exec` and `run -- PROGRAM` run under, is
/// `<backend>/host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Column {
    index: usize,
    backend: &'static str,
    abi: AbiPolicy,
    /// The container with the host root (the last backend of `all`).
    host_root: bool,
}

impl Column {
    /// The column's name: in the matrix, in every cell, and the key of its expectations.
    fn name(&self) -> String {
        if self.host_root {
            return CONTAINER_HOST.to_string();
        }
        match self.abi {
            AbiPolicy::Confined => self.backend.to_string(),
            p => format!("{}/{}", self.backend, p.name()),
        }
    }

    /// Whether the run sees the host's file system (native, and the host policy).
    fn host_fs(&self) -> bool {
        self.backend == CONTROL || self.abi == AbiPolicy::Host
    }
}

/// The columns: the control first, then the backends named (`all`: every one that is not a
/// peer), each once; bt and kvm confined and then under the host policy.
fn columns(all: &[Box<dyn Backend>], names: &[String]) -> Vec<Column> {
    let mut idx: Vec<usize> = vec![index(all, CONTROL)];
    for b in names {
        let add: Vec<usize> = if b == "all" {
            (0..all.len())
                .filter(|&i| vbench_backends::registry::in_all(all[i].name()))
                .collect()
        } else {
            vec![index(all, b)]
        };
        for i in add {
            if !idx.contains(&i) {
                idx.push(i);
            }
        }
    }
    let host_root = all.len() - 1;
    idx.into_iter()
        .filter(|&i| i != host_root)
        .flat_map(|index| {
            let backend = all[index].name();
            if backend == "container" {
                return vec![
                    Column {
                        index,
                        backend,
                        abi: AbiPolicy::Confined,
                        host_root: false,
                    },
                    Column {
                        index: host_root,
                        backend,
                        abi: AbiPolicy::Confined,
                        host_root: true,
                    },
                ];
            }
            let policies: &[AbiPolicy] = if ABI_BACKENDS.contains(&backend) {
                &[AbiPolicy::Confined, AbiPolicy::Host]
            } else {
                &[AbiPolicy::Confined]
            };
            policies
                .iter()
                .map(move |&abi| Column {
                    index,
                    backend,
                    abi,
                    host_root: false,
                })
                .collect()
        })
        .collect()
}

/// Whether `b` can run here (printed when it cannot, once per backend), under the name of
/// column `col`.
fn status(b: &dyn Backend, col: &Column) -> BackendStatus {
    let av = b.availability();
    if let Availability::Unavailable(r) = &av {
        if col.abi == AbiPolicy::Confined && !col.host_root {
            eprintln!("{}: unavailable: {r}", b.name());
        }
    }
    BackendStatus {
        name: col.name(),
        available: av.is_available(),
        reason: match av {
            Availability::Unavailable(r) => Some(r),
            Availability::Available => None,
        },
        peer: false,
        colour: vbench_backends::registry::colour(b.name()).map(Into::into),
    }
}

/// What every probe run shares.
struct Runner<'a> {
    program: Program,
    ctx: Ctx<'a>,
    /// The per-probe timeout (`--timeout`), unless the catalogue sets one.
    timeout: Duration,
    cancel: Arc<AtomicBool>,
}

impl Runner<'_> {
    /// Probe `p` on backend `b` in column `col`: judged, or why it did not run.
    fn cell(&self, p: &Probe, b: &dyn Backend, col: &Column, st: &BackendStatus) -> ProbeCell {
        let name = col.name();
        let expect = p.expect(&name);
        let cell = |verdict, note: String| ProbeCell {
            backend: name.clone(),
            expect: expect.name().to_string(),
            verdict,
            note,
            outcome: None,
            detail: String::new(),
            exit: None,
            counters: BTreeMap::new(),
        };
        if let Some(why) = self.ctx.not_applicable(p) {
            return cell(ProbeVerdict::NotApplicable, why);
        }
        if let Expect::NotApplicable(why) = expect {
            return cell(ProbeVerdict::NotApplicable, why.to_string());
        }
        if !st.available {
            return cell(
                ProbeVerdict::Unavailable,
                st.reason.clone().unwrap_or_default(),
            );
        }
        let timeout = match p.judge {
            Judge::Timeout { ms } => Duration::from_millis(ms),
            _ => self.timeout,
        };
        let inv = Invocation {
            program: self.program.clone(),
            args: self.ctx.args(p, col.host_fs()),
            timeout: Some(timeout),
            stdio: Stdio::Capture,
            cpu: None,
            cancel: Some(self.cancel.clone()),
            // a flood is expected to flood: drain it from the start
            chatty: matches!(p.judge, Judge::StdoutFlood { .. }),
            abi: col.abi,
        };
        let tries = if name == CONTROL {
            p.control_attempts
        } else {
            1
        };
        let mut c = cell(ProbeVerdict::Broken, String::new());
        for attempt in 1..=tries {
            c = match b.run(&inv) {
                Ok(out) => judge(p, &name, expect, &out, &self.ctx),
                Err(e) => cell(ProbeVerdict::Broken, format!("backend error: {e}")),
            };
            if c.verdict != ProbeVerdict::Broken || self.cancel.load(Ordering::Relaxed) {
                if attempt > 1 {
                    c.note = format!("escaped on attempt {attempt} (the machine is busy)");
                }
                break;
            }
        }
        c.expect = expect.name().to_string();
        c
    }
}

fn index(all: &[Box<dyn Backend>], name: &str) -> usize {
    all.iter()
        .position(|b| b.name() == name)
        .expect("clap restricts backend names")
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
            return Err(crate::cmd::common::UsageError(format!(
                "unknown probe or kind {s:?}; probes are: {}",
                PROBES.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            ))
            .into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_selection() {
        assert_eq!(select(&[]).unwrap().len(), PROBES.len());
        let v = select(&["limit".into(), "hostname".into()]).unwrap();
        assert_eq!(v[0].name, "hostname");
        assert!(v.iter().any(|p| p.name == "fork_bomb"));
        assert!(select(&["nope".into()]).is_err());
    }

    #[test]
    fn bt_and_kvm_get_a_column_per_policy() {
        let mut all = vbench_backends::all_with(&vbench_backends::Config::default());
        all.push(Box::new(vbench_backends::container::Container::new(
            ContainerConfig::default(),
        )));
        let names = |sel: &[&str]| -> Vec<String> {
            let sel: Vec<String> = sel.iter().map(|s| s.to_string()).collect();
            columns(&all, &sel).iter().map(Column::name).collect()
        };
        assert_eq!(names(&["bt"]), ["native", "bt", "bt/host"]);
        assert_eq!(
            names(&["container"]),
            ["native", "container", "container/host"]
        );
        let every = names(&["all"]);
        for n in [
            "native",
            "container",
            "container/host",
            "bt",
            "bt/host",
            "kvm",
            "kvm/host",
        ] {
            assert!(every.iter().any(|c| c == n), "{n} in {every:?}");
        }
        // each host column right after its confined one
        let at = |n: &str| every.iter().position(|c| c == n).unwrap();
        assert_eq!(at("bt/host"), at("bt") + 1);
        assert_eq!(at("kvm/host"), at("kvm") + 1);
        assert_eq!(at("container/host"), at("container") + 1);
        let cols = columns(&all, &["kvm".to_string()]);
        assert!(cols[2].host_fs() && !cols[1].host_fs() && cols[0].host_fs());
        assert_eq!(cols[2].abi, AbiPolicy::Host);
    }
}
