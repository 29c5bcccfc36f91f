//! Command-line interface.

use crate::plan::{self, Subject};
use crate::{doctor, scheduler, workload};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use vbench_backends::container::cgroup::Limits;
use vbench_backends::container::{
    parse_bytes, parse_namespaces, ContainerConfig, Namespace, DEFAULT_PIDS,
};
use vbench_backends::kvm::{Console, KvmConfig};
use vbench_backends::{Backend, Invocation, Program, Stdio};
use vbench_results::{Exit, FailureKind, RunStatus};
use vbench_workloads::{ParamKind, TASKS};

#[derive(Parser)]
#[command(
    name = "vbench",
    version,
    about = "Measure what each level of virtualization costs: native, container, binary translation, KVM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark workloads (or your own static binary after `--`) on one or more backends.
    Run(Box<RunArgs>),
    /// Run any static x86-64 binary under one backend, passing its stdio and exit status through.
    Exec(ExecArgs),
    /// List workloads with their parameters, and backends with their availability.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Describe this machine and warn about conditions that make numbers noisy.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Render a results file (or the change between two) as HTML with SVG charts, Markdown and CSV.
    Report(crate::report_cmd::ReportArgs),
    /// Print the summary table of a results file.
    Show {
        /// The results file.
        file: PathBuf,
        /// Print the document as JSON instead (after checking it).
        #[arg(long)]
        json: bool,
    },
    /// Gate results against a baseline: exit 1 when an overhead ratio regressed beyond noise, 2 on bad input.
    Gate(crate::gate_cmd::GateArgs),
    /// Compare the overhead ratios of two results files (the gate's table; exit 0 whatever changed).
    Compare(crate::gate_cmd::CompareArgs),
    /// Run the escape and limit probes on each backend and print what each contained (exit 1 on an escape it must contain or a broken probe).
    Isolate(crate::isolate::IsolateArgs),
    /// Write the embedded workload ELF to a file, to run it with other tools (hyperfine, qemu-user, ...).
    WorkloadElf {
        /// Where to write it (made executable).
        out: PathBuf,
    },
}

const BACKEND_CHOICES: [&str; 7] = [
    "native",
    "container",
    "bt",
    "kvm",
    "all",
    "qemu-user",
    "valgrind",
];

#[derive(Args)]
struct RunArgs {
    /// Backend to run on; repeat for several, or `all` (vbench's four). Native is always added
    /// as the control. The peers `qemu-user` and `valgrind` are measured only when named.
    #[arg(long = "backend", short = 'b', value_parser = BACKEND_CHOICES, default_value = "native")]
    backends: Vec<String>,
    /// Workload to run (see `vbench list`); repeatable. Default: every workload.
    #[arg(long = "workload", short = 'w')]
    workloads: Vec<String>,
    /// Workload class to run: cpu, mem or sys; repeatable.
    #[arg(long = "class", value_parser = ["cpu", "mem", "sys"])]
    classes: Vec<String>,
    /// Measured rounds (each cell runs once per round). Default 10, or 3 with --quick.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rounds: Option<u32>,
    /// Warm-up runs per cell, discarded. Default 1.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    warmup: Option<u32>,
    /// Small parameters and 3 rounds: a fast smoke run.
    #[arg(long)]
    quick: bool,
    /// Results file. Default: vbench-results/run-<UTC time>.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the results document as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also render the HTML/SVG/Markdown/CSV report into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Save the results as the named baseline (vbench-results/baselines/NAME.json).
    #[arg(long, value_name = "NAME", value_parser = crate::gate_cmd::parse_baseline_name)]
    save_baseline: Option<String>,
    /// Gate the results against a named baseline or a baseline file (exit 1 on a regression,
    /// 2 on bad input), as `vbench gate` does.
    #[arg(long, value_name = "NAME|FILE")]
    baseline: Option<String>,
    #[command(flatten)]
    gate: crate::gate_cmd::GateSettings,
    /// Seed of the round shuffles and the bootstrap.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Per-run timeout in seconds; a run over it is killed and reported.
    #[arg(long, default_value_t = 120.0, value_parser = parse_secs)]
    timeout: f64,
    /// Pin every run to this CPU.
    #[arg(long)]
    pin: Option<usize>,
    #[command(flatten)]
    container: ContainerOpts,
    /// Your own static binary and its arguments, instead of the workloads.
    #[arg(last = true)]
    program: Vec<OsString>,
}

/// Settings of the container backend.
#[derive(Args, Clone)]
struct ContainerOpts {
    /// Namespaces the container gets: a comma-separated list of pid,mnt,net,uts,ipc,user,cgroup,time, or all, or none.
    #[arg(long = "container-ns", default_value = "all", value_parser = parse_ns)]
    container_ns: NsList,
    /// Container memory hard limit (no swap), e.g. 512M, 2G.
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    memory: u64,
    /// Container CPU quota as a fraction of one CPU, e.g. 0.5.
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<f64>,
    /// Container task limit.
    #[arg(long, default_value_t = DEFAULT_PIDS, value_parser = clap::value_parser!(u64).range(1..=4_194_304))]
    pids: u64,
    /// Container cpuset, e.g. 0 or 0-1.
    #[arg(long, value_parser = parse_cpuset)]
    cpuset: Option<String>,
    /// Micro-VM guest RAM, a multiple of 2M between 16M and 1G.
    #[arg(long = "vm-mem", default_value = "512M", value_parser = parse_vm_mem)]
    vm_mem: u64,
    /// Micro-VM console: one hypercall per write, or an emulated UART (an exit per register access).
    #[arg(long = "kvm-console", default_value = "hypercall", value_parser = ["hypercall", "uart"])]
    kvm_console: String,
}

fn parse_vm_mem(s: &str) -> Result<u64, String> {
    let v = parse_bytes(s)?;
    if v.is_multiple_of(2 << 20) && ((16 << 20)..=(1 << 30)).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{s:?}: guest RAM must be a multiple of 2M between 16M and 1G"
        ))
    }
}

impl ContainerOpts {
    fn config(&self) -> vbench_backends::Config {
        vbench_backends::Config {
            container: ContainerConfig {
                namespaces: self.container_ns.0.clone(),
                limits: Limits {
                    memory: Some(self.memory),
                    cpus: self.cpus,
                    pids: Some(self.pids),
                    cpuset: self.cpuset.clone(),
                },
                ..ContainerConfig::default()
            },
            kvm: KvmConfig {
                mem_bytes: self.vm_mem,
                console: if self.kvm_console == "uart" {
                    Console::Uart
                } else {
                    Console::Hypercall
                },
            },
        }
    }
}

/// A parsed `--container-ns` list.
#[derive(Clone)]
struct NsList(Vec<Namespace>);

fn parse_ns(s: &str) -> Result<NsList, String> {
    parse_namespaces(s).map(NsList)
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=1024.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a CPU fraction in [0.01, 1024]")),
    }
}

fn parse_cpuset(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.split(',').all(|part| {
            let mut it = part.splitn(2, '-');
            it.all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a cpuset list like 0 or 0-1 or 0,2"))
    }
}

#[derive(Args)]
struct ExecArgs {
    /// Backend to run on (or a peer: qemu-user, valgrind).
    #[arg(long = "backend", short = 'b', value_parser = ["native", "container", "bt", "kvm", "qemu-user", "valgrind"], default_value = "native")]
    backend: String,
    /// Kill the program after this many seconds (exit status 124).
    #[arg(long, value_parser = parse_secs)]
    timeout: Option<f64>,
    /// Pin to this CPU.
    #[arg(long)]
    pin: Option<usize>,
    /// Print the measurements to stderr when the program ends.
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    container: ContainerOpts,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    program: Vec<OsString>,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 86400]")),
    }
}

pub fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => run(*a),
        Command::Gate(a) => crate::gate_cmd::gate(a),
        Command::Compare(a) => crate::gate_cmd::compare(a),
        Command::Exec(a) => exec(a),
        Command::List { json } => list(json),
        Command::Doctor { json } => {
            let r = doctor::report();
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", doctor::render(&r));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(a) => crate::report_cmd::run(a),
        Command::Isolate(a) => crate::isolate::run(a),
        Command::Show { file, json } => {
            let doc = vbench_results::load(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", vbench_reports::terminal::render(&doc));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::WorkloadElf { out } => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&out, workload::ELF)
                .with_context(|| format!("writing {}", out.display()))?;
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", out.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn backend_index(all: &[Box<dyn Backend>], name: &str) -> usize {
    all.iter()
        .position(|b| b.name() == name)
        .expect("clap restricts backend names")
}

/// A user's program: it must exist and be a file.
fn user_program(path: &OsString) -> Result<Program> {
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p).with_context(|| format!("program {}", p.display()))?;
    if !meta.is_file() {
        bail!("program {} is not a file", p.display());
    }
    Ok(Program::Path(p))
}

fn install_cancel() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handler")?;
    }
    Ok(flag)
}

fn default_out() -> PathBuf {
    // "YYYY-MM-DD HH:MM:SS UTC" -> "YYYYMMDD-HHMMSS"
    let digits: String = vbench_reports::utc(scheduler::now_ms())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    PathBuf::from(format!(
        "vbench-results/run-{}-{}.json",
        &digits[..8],
        &digits[8..14]
    ))
}

fn run(a: RunArgs) -> Result<ExitCode> {
    let all = vbench_backends::all_with(&a.container.config());
    let mut requested: Vec<usize> = Vec::new();
    let mut add = |i: usize| {
        if !requested.contains(&i) {
            requested.push(i);
        }
    };
    add(backend_index(&all, "native")); // the control
    for b in &a.backends {
        if b == "all" {
            (0..all.len())
                .filter(|&i| !all[i].is_peer())
                .for_each(&mut add);
        } else {
            add(backend_index(&all, b));
        }
    }
    let subject = if let Some((prog, args)) = a.program.split_first() {
        if !a.workloads.is_empty() || !a.classes.is_empty() {
            bail!("--workload/--class select built-in workloads; they cannot be combined with a program after `--`");
        }
        Subject::Custom {
            program: user_program(prog)?,
            args: args.to_vec(),
        }
    } else {
        Subject::Tasks {
            program: workload::program()?,
            tasks: plan::select_tasks(&a.workloads, &a.classes)?,
            quick: a.quick,
        }
    };
    let plan = plan::build(&subject, &all, &requested);
    for b in plan.backends.iter().filter(|b| !b.available) {
        eprintln!(
            "{}: unavailable: {}",
            b.name,
            b.reason.as_deref().unwrap_or("unknown")
        );
    }
    let out = a.out.unwrap_or_else(default_out);
    let cancel = install_cancel()?;
    let sched = scheduler::Schedule {
        rounds: a.rounds.unwrap_or(if a.quick { 3 } else { 10 }),
        warmup: a.warmup.unwrap_or(1),
        quick: a.quick,
        seed: a.seed,
        timeout: Duration::from_secs_f64(a.timeout),
        cpu: a.pin,
        cancel,
        out: &out,
    };
    let doc = scheduler::run(&plan, &all, &sched, doctor::report().environment)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", vbench_reports::terminal::render(&doc));
    }
    eprintln!("results written to {}", out.display());
    if let Some(dir) = &a.report {
        let w = vbench_reports::write_all(&doc, dir)
            .with_context(|| format!("rendering the report into {}", dir.display()))?;
        eprintln!("report written to {}", w.index.display());
    }
    if let Some(name) = &a.save_baseline {
        let p = crate::gate_cmd::save_baseline(&doc, name)?;
        eprintln!("baseline saved to {}", p.display());
    }
    if let Some(b) = &a.baseline {
        let base = match crate::gate_cmd::load_baseline(b) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("vbench gate: bad input: {e:#}");
                return Ok(ExitCode::from(crate::gate_cmd::EXIT_BAD_INPUT));
            }
        };
        let gated =
            crate::gate_cmd::gate_documents(&base, b, &doc, &out.display().to_string(), &a.gate);
        if doc.failures.is_empty() {
            return Ok(gated);
        }
    }
    Ok(if doc.status == RunStatus::Interrupted {
        ExitCode::from(130)
    } else if doc
        .failures
        .iter()
        .any(|f| f.kind == FailureKind::ChecksumMismatch)
    {
        ExitCode::from(3)
    } else if !doc.failures.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn exec(a: ExecArgs) -> Result<ExitCode> {
    let all = vbench_backends::all_with(&a.container.config());
    let backend = &all[backend_index(&all, &a.backend)];
    if let vbench_backends::Availability::Unavailable(why) = backend.availability() {
        bail!("backend {} is unavailable: {why}", backend.name());
    }
    let (prog, args) = a.program.split_first().expect("clap requires a program");
    let cancel = install_cancel()?;
    let inv = Invocation {
        program: user_program(prog)?,
        args: args.to_vec(),
        timeout: a.timeout.map(Duration::from_secs_f64),
        stdio: Stdio::Inherit,
        cpu: a.pin,
        cancel: Some(cancel),
        chatty: false,
    };
    let out = backend.run(&inv)?;
    let s = &out.sample;
    if a.stats {
        eprintln!(
            "vbench: {} on {}: {}, wall {}, user {}, sys {}, max rss {}",
            inv.program.name(),
            backend.name(),
            s.exit,
            vbench_reports::fmt_ns(s.wall_ns as f64),
            vbench_reports::fmt_ns(s.user_ns as f64),
            vbench_reports::fmt_ns(s.sys_ns as f64),
            s.max_rss_kib
                .map_or("not measured".to_string(), |k| format!("{k} KiB"))
        );
    }
    Ok(ExitCode::from(match s.exit {
        Exit::Code { code } => code as u8,
        Exit::Signal { signal } => {
            eprintln!("vbench: {} was {}", inv.program.name(), s.exit);
            (128 + signal) as u8
        }
        Exit::Timeout { .. } => {
            eprintln!("vbench: {} {}", inv.program.name(), s.exit);
            124
        }
        Exit::Interrupted => 130,
    }))
}

fn list(json: bool) -> Result<ExitCode> {
    let all = vbench_backends::all();
    if json {
        let tasks: Vec<_> = TASKS
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "class": t.class.name(), "op": t.op, "summary": t.summary,
                    "params": t.params.iter().map(|p| match p.kind {
                        ParamKind::Int { default, quick, min, max } => serde_json::json!({
                            "name": p.name, "default": default, "quick": quick, "min": min, "max": max, "help": p.help }),
                        ParamKind::Str { default } => serde_json::json!({
                            "name": p.name, "default": default, "help": p.help }),
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        let backends: Vec<_> = all
            .iter()
            .map(|b| {
                let av = b.availability();
                serde_json::json!({
                    "name": b.name(), "describe": b.describe(), "available": av.is_available(),
                    "reason": match av { vbench_backends::Availability::Unavailable(r) => Some(r), _ => None },
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"workloads": tasks, "backends": backends})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("workloads (parameters: name=default, quick value in parentheses):");
    for t in TASKS {
        let params: Vec<String> = t
            .params
            .iter()
            .map(|p| match p.kind {
                ParamKind::Int { default, quick, .. } => format!("{}={default} ({quick})", p.name),
                ParamKind::Str { default } => format!("{}={default}", p.name),
            })
            .collect();
        println!(
            "  {:<14} {:<4} per {:<9} {}",
            t.name,
            t.class.name(),
            t.op,
            t.summary
        );
        println!("  {:<14} {}", "", params.join("  "));
    }
    println!("\nbackends:");
    for b in &all {
        let status = match b.availability() {
            vbench_backends::Availability::Available => "available".to_string(),
            vbench_backends::Availability::Unavailable(r) => format!("unavailable: {r}"),
        };
        println!("  {:<10} {:<58} {}", b.name(), b.describe(), status);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_out_is_dated() {
        let p = default_out().display().to_string();
        assert!(
            p.starts_with("vbench-results/run-20") && p.ends_with(".json"),
            "{p}"
        );
    }

    #[test]
    fn seconds_are_checked() {
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("abc").is_err());
        assert_eq!(parse_secs("1.5"), Ok(1.5));
    }
}
