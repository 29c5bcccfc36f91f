//! Command-line interface.
//!
//! Only the argument definitions, their value parsers and the dispatch live here; each
//! command is a module under [`crate::cmd`].

use crate::cmd;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use vbench_backends::container::cgroup::Limits;
use vbench_backends::container::{
    parse_bytes, parse_namespaces, ContainerConfig, Namespace, DEFAULT_PIDS,
};
use vbench_backends::container::{Rootfs, Volume};
use vbench_backends::kvm::{Console, KvmConfig};

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
        /// List the system calls bt and kvm support, per backend and --abi policy, instead.
        #[arg(long)]
        syscalls: bool,
    },
    /// Describe this machine and warn about conditions that make numbers noisy.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Render a results file (or the change between two) as HTML with SVG charts, Markdown and CSV.
    Report(cmd::report::ReportArgs),
    /// Print the summary table of a results file.
    Show {
        /// The results file.
        file: PathBuf,
        /// Print the document as JSON instead (after checking it).
        #[arg(long)]
        json: bool,
    },
    /// Gate results against a baseline: exit 1 when an overhead ratio regressed beyond noise, 2 on bad input.
    Gate(crate::cmd::gate::GateArgs),
    /// Compare the overhead ratios of two results files (the gate's table; exit 0 whatever changed).
    Compare(crate::cmd::gate::CompareArgs),
    /// Run the escape and limit probes on each backend and print what each contained (exit 1 on an escape it must contain or a broken probe).
    Isolate(crate::cmd::isolate::IsolateArgs),
    /// Write the embedded workload ELF to a file, to run it with other tools (hyperfine, qemu-user, ...).
    WorkloadElf {
        /// Where to write it (made executable).
        out: PathBuf,
    },
}

/// `--backend` of run: every backend of the registry, and `all`.
fn backend_choices() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(vbench_backends::registry::choices())
}

/// `--backend` of exec: one backend of the registry.
fn one_backend() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(vbench_backends::registry::names())
}

#[derive(Args)]
pub struct RunArgs {
    /// Backend to run on; repeat for several, or `all` (vbench's four). Native is always added
    /// as the control. The peers `qemu-user`, `valgrind` (beside bt) and `crun` (beside the container) are measured only when named.
    #[arg(long = "backend", short = 'b', value_parser = backend_choices(), default_value = "native")]
    pub backends: Vec<String>,
    /// Workload to run (see `vbench list`); repeatable. Default: every workload.
    #[arg(long = "workload", short = 'w', value_parser = parse_workload)]
    pub workloads: Vec<String>,
    /// Workload class to run: cpu, mem or sys; repeatable.
    #[arg(long = "class", value_parser = ["cpu", "mem", "sys"])]
    pub classes: Vec<String>,
    /// Measured rounds (each cell runs once per round). Default 10, or 3 with --quick.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rounds: Option<u32>,
    /// Warm-up runs per cell, discarded. Default 1.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub warmup: Option<u32>,
    /// Small parameters and 3 rounds: a fast smoke run.
    #[arg(long)]
    pub quick: bool,
    /// Size each workload before the rounds so that one sample takes about this long on its
    /// slowest backend (a quarter of it with --quick); never more iterations than the
    /// catalogue's default (or quick) size; 0: those sizes as they are.
    #[arg(long, value_name = "MS", default_value_t = crate::sizing::DEFAULT_SAMPLE_MS, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub sample_ms: u64,
    /// Results file. Default: vbench-results/run-<UTC time>.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the results document as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also render the HTML/SVG/Markdown/CSV report into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// After the benchmarks, also probe what each backend contains (what `vbench isolate` does,
    /// with its default limits), into the same results file and report: one document with the
    /// trade-off between overhead and isolation. Peers other than gvisor are not probed.
    #[arg(long, conflicts_with = "program")]
    pub isolate: bool,
    /// Save the results as the named baseline (vbench-results/baselines/NAME.json).
    #[arg(long, value_name = "NAME", value_parser = crate::cmd::gate::parse_baseline_name)]
    pub save_baseline: Option<String>,
    /// Gate the results against a named baseline or a baseline file (exit 1 on a regression,
    /// 2 on bad input), as `vbench gate` does.
    #[arg(long, value_name = "NAME|FILE")]
    pub baseline: Option<String>,
    #[command(flatten)]
    pub gate: crate::cmd::gate::GateSettings,
    /// Seed of the round shuffles and the bootstrap.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub seed: u64,
    /// Per-run timeout in seconds; a run over it is killed and reported.
    #[arg(long, default_value_t = 120.0, allow_negative_numbers = true, value_parser = parse_secs)]
    pub timeout: f64,
    /// Pin every run to this CPU.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_cpu)]
    pub pin: Option<usize>,
    /// What a program's system calls may do on the host under bt and kvm: `host` (as natively:
    /// any file, directory, pipe, socket, its environment) or `confined` (only the files named
    /// on the command line, read-only). Default: host for a program of yours, confined for
    /// vbench's own workloads.
    #[arg(long, value_parser = parse_abi)]
    pub abi: Option<vbench_backends::AbiPolicy>,
    #[command(flatten)]
    pub container: ContainerOpts,
    #[command(flatten)]
    pub files: ContainerFiles,
    /// The container's working directory (Docker's -w; here -w is --workload). Default: the
    /// current directory with the host root, / otherwise.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Your own static binary and its arguments, instead of the workloads.
    #[arg(last = true)]
    pub program: Vec<OsString>,
}

/// Settings of the container backend.
#[derive(Args, Clone)]
pub struct ContainerOpts {
    /// Namespaces the container gets: a comma-separated list of pid,mnt,net,uts,ipc,user,cgroup,time, or all, or none.
    #[arg(long = "container-ns", default_value = "all", value_parser = parse_ns)]
    pub container_ns: NsList,
    /// Container memory hard limit (no swap), e.g. 512M, 2G.
    #[arg(long, default_value = "1G", allow_negative_numbers = true, value_parser = parse_bytes)]
    pub memory: u64,
    /// Container CPU quota as a fraction of one CPU, e.g. 0.5.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Container task limit.
    #[arg(long, default_value_t = DEFAULT_PIDS, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=4_194_304))]
    pub pids: u64,
    /// Container cpuset, e.g. 0 or 0-1.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_cpuset)]
    pub cpuset: Option<String>,
    /// Guest RAM of the micro-VM (kvm) and of the whole-OS VM (vm), a multiple of 2M between 16M and 1G.
    #[arg(long = "vm-mem", default_value = "512M", allow_negative_numbers = true, value_parser = parse_vm_mem)]
    pub vm_mem: u64,
    /// The whole-OS VM's guest kernel (a bzImage); default: the newest /boot/vmlinuz-*
    /// (Debian's linux-image-cloud-amd64 provides one).
    #[arg(long = "vm-kernel", value_name = "PATH")]
    pub vm_kernel: Option<PathBuf>,
    /// The whole-OS VM's accelerator: kvm (hardware-assisted), tcg (QEMU's binary translation of
    /// the whole guest), or auto (kvm where the CPU offers VMX/SVM to a booting kernel, else tcg).
    #[arg(long = "vm-accel", default_value = "auto", value_parser = vbench_backends::vm::AccelChoice::parse)]
    pub vm_accel: vbench_backends::vm::AccelChoice,
    /// How long the whole-OS VM may take to boot to vbench's init, in seconds.
    #[arg(long = "vm-boot-timeout", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub vm_boot_timeout: u64,
    /// gVisor's platform: ptrace (works everywhere) or kvm.
    #[arg(long = "gvisor-platform", default_value = "ptrace", value_parser = vbench_backends::gvisor::Platform::parse)]
    pub gvisor_platform: vbench_backends::gvisor::Platform,
    /// Micro-VM console: one hypercall per write, or an emulated UART (an exit per register access).
    #[arg(long = "kvm-console", default_value = "hypercall", value_parser = ["hypercall", "uart"])]
    pub kvm_console: String,
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
    pub fn config(&self) -> vbench_backends::Config {
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
            vm: vbench_backends::vm::VmConfig {
                kernel: self.vm_kernel.clone(),
                mem_bytes: self.vm_mem,
                accel: self.vm_accel,
                boot_timeout: std::time::Duration::from_secs(self.vm_boot_timeout),
            },
            gvisor: self.gvisor_platform,
        }
    }
}

/// What the container shows of files, and its environment: Docker's -v and -e, and the root.
#[derive(Args, Clone, Default)]
pub struct ContainerFiles {
    /// The container's root: `minimal` (a tmpfs with only the program, /proc, /dev/null, zero,
    /// urandom, /tmp), `host` (the minimal root plus the host's /usr, /bin, /sbin, /lib*, /etc
    /// read-only, the current directory read-write as the working directory, and the paths named
    /// on the command line), or a directory holding a root file system (its entries read-only).
    /// Default: host for a program of yours, minimal for vbench's workloads.
    #[arg(long, value_name = "minimal|host|DIR", value_parser = Rootfs::parse)]
    pub rootfs: Option<Rootfs>,
    /// Bind a host path into the container: HOST[:CONTAINER][:ro|:rw] (Docker's syntax;
    /// CONTAINER defaults to HOST); repeatable.
    #[arg(long = "volume", short = 'v', value_name = "HOST[:CONTAINER][:ro|:rw]", value_parser = Volume::parse)]
    pub volumes: Vec<Volume>,
    /// Set KEY=VALUE in the container's environment, or pass KEY through from vbench's;
    /// repeatable. A program of yours gets vbench's environment with these on top, as natively.
    #[arg(long = "env", short = 'e', value_name = "KEY[=VALUE]", value_parser = parse_env)]
    pub env: Vec<OsString>,
}

impl ContainerFiles {
    /// Whether any option was given.
    pub fn given(&self, workdir: &Option<PathBuf>) -> bool {
        self.rootfs.is_some()
            || !self.volumes.is_empty()
            || !self.env.is_empty()
            || workdir.is_some()
    }

    /// Applies the options to `cfg`: for a program of the user's (`user`: the host root and
    /// vbench's environment by default) or for vbench's workloads (the minimal root).
    pub fn apply(&self, cfg: &mut vbench_backends::Config, workdir: &Option<PathBuf>, user: bool) {
        let c = &mut cfg.container;
        c.rootfs = self
            .rootfs
            .clone()
            .unwrap_or(if user { Rootfs::Host } else { Rootfs::Minimal });
        c.volumes = self.volumes.clone();
        c.env = self.env.clone();
        c.workdir = workdir.clone();
        c.inherit_env = user;
    }
}

/// `KEY=VALUE`, or `KEY` (vbench's value passed through; left unset when vbench has none).
fn parse_env(s: &str) -> Result<OsString, String> {
    let key = s.split_once('=').map_or(s, |(k, _)| k);
    if key.is_empty() || key.bytes().any(|b| b == 0) {
        return Err(format!("{s:?} is not KEY=VALUE or KEY"));
    }
    if s.contains('=') {
        return Ok(s.into());
    }
    Ok(match std::env::var_os(key) {
        Some(v) => {
            let mut kv = OsString::from(format!("{key}="));
            kv.push(v);
            kv
        }
        // no '=': nothing to set
        None => OsString::from(key),
    })
}

/// A parsed `--container-ns` list.
#[derive(Clone)]
pub struct NsList(pub Vec<Namespace>);

fn parse_ns(s: &str) -> Result<NsList, String> {
    parse_namespaces(s).map(NsList)
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    check_cpus(s, cmd::common::allowed_cpus().len())
}

fn check_cpus(s: &str, have: usize) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.01 && v <= have as f64 => Ok(v),
        Ok(v) if v > have as f64 => Err(format!(
            "{s} CPUs is more than this machine has: the quota must be between 0.01 and {have}"
        )),
        _ => Err(format!(
            "{s:?} is not a CPU fraction between 0.01 and {have}"
        )),
    }
}

fn parse_cpuset(s: &str) -> Result<String, String> {
    check_cpuset(s, &cmd::common::allowed_cpus())
}

/// A cpuset list (`0`, `0-1`, `0,2`) whose every CPU is one this process may run on.
fn check_cpuset(s: &str, allowed: &[usize]) -> Result<String, String> {
    let valid = cmd::common::cpu_list(allowed);
    let number = |n: &str| {
        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse::<usize>().ok())
            .flatten()
    };
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (number(a), number(b)),
            None => (number(part), number(part)),
        };
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Err(format!("{s:?} is not a cpuset list like 0 or 0-1 or 0,2"));
        };
        if lo > hi {
            return Err(format!(
                "{part:?} is an empty range (its start is above its end); this machine's CPUs are {valid}"
            ));
        }
        if let Some(cpu) = (lo..=hi).find(|c| !allowed.contains(c)) {
            return Err(format!(
                "CPU {cpu} does not exist here (or vbench may not use it); this machine's CPUs are {valid}"
            ));
        }
    }
    Ok(s.to_string())
}

fn parse_cpu(s: &str) -> Result<usize, String> {
    check_cpu(s, &cmd::common::allowed_cpus())
}

/// A CPU to pin to: one this process may run on.
fn check_cpu(s: &str, allowed: &[usize]) -> Result<usize, String> {
    let valid = cmd::common::cpu_list(allowed);
    match s.parse::<usize>() {
        Ok(cpu) if allowed.contains(&cpu) => Ok(cpu),
        Ok(cpu) => Err(format!(
            "CPU {cpu} does not exist here (or vbench may not use it); this machine's CPUs are {valid}"
        )),
        Err(_) => Err(format!("{s:?} is not a CPU number; this machine's CPUs are {valid}")),
    }
}

/// A catalogue workload's name.
fn parse_workload(s: &str) -> Result<String, String> {
    if vbench_workloads::find(s).is_some() {
        Ok(s.to_string())
    } else {
        let known: Vec<&str> = vbench_workloads::TASKS.iter().map(|t| t.name).collect();
        Err(format!(
            "unknown workload {s:?}; known workloads: {}",
            known.join(", ")
        ))
    }
}

#[derive(Args)]
pub struct ExecArgs {
    /// Backend to run on (or a peer: qemu-user, valgrind, crun).
    #[arg(long = "backend", short = 'b', value_parser = one_backend(), default_value = "native")]
    pub backend: String,
    /// Kill the program after this many seconds (exit status 124).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_secs)]
    pub timeout: Option<f64>,
    /// Pin to this CPU.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_cpu)]
    pub pin: Option<usize>,
    /// Print the measurements to stderr when the program ends.
    #[arg(long)]
    pub stats: bool,
    /// What a program's system calls may do on the host under bt and kvm: `host` (as natively:
    /// any file, directory, pipe, socket, its environment) or `confined` (only the files named
    /// on the command line, read-only). Default: host.
    #[arg(long, value_parser = parse_abi)]
    pub abi: Option<vbench_backends::AbiPolicy>,
    #[command(flatten)]
    pub container: ContainerOpts,
    #[command(flatten)]
    pub files: ContainerFiles,
    /// The container's working directory. Default: the current directory with the host root,
    /// / otherwise.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub program: Vec<OsString>,
}

fn parse_abi(s: &str) -> Result<vbench_backends::AbiPolicy, String> {
    vbench_backends::AbiPolicy::parse(s)
        .ok_or_else(|| format!("{s:?} is not a policy: host or confined"))
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 86400]")),
    }
}

/// Parses the command line and runs the command.
pub fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Run(_) | Command::Exec(_) | Command::Isolate(_)
    ) {
        cmd::common::clean_stale();
    }
    match cli.command {
        Command::Run(a) => cmd::run::run(*a),
        Command::Gate(a) => crate::cmd::gate::gate(a),
        Command::Compare(a) => crate::cmd::gate::compare(a),
        Command::Exec(a) => cmd::exec::exec(a),
        Command::List {
            json,
            syscalls: true,
        } => cmd::list::syscalls(json),
        Command::List {
            json,
            syscalls: false,
        } => cmd::list::list(json),
        Command::Doctor { json } => cmd::doctor::doctor(json),
        Command::Report(a) => cmd::report::run(a),
        Command::Isolate(a) => crate::cmd::isolate::run(a),
        Command::Show { file, json } => cmd::show::show(&file, json),
        Command::WorkloadElf { out } => cmd::workload_elf::workload_elf(&out),
    }
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
    fn cpus_are_checked_against_the_machine() {
        let two = [0, 1];
        assert_eq!(check_cpu("1", &two), Ok(1));
        let e = check_cpu("99", &two).unwrap_err();
        assert!(e.contains("CPU 99") && e.contains("0-1"), "{e}");
        assert_eq!(check_cpuset("0-1", &two), Ok("0-1".into()));
        assert_eq!(check_cpuset("0,1", &two), Ok("0,1".into()));
        let e = check_cpuset("99", &two).unwrap_err();
        assert!(e.contains("CPU 99") && e.contains("0-1"), "{e}");
        let e = check_cpuset("1-0", &two).unwrap_err();
        assert!(e.contains("empty range") && e.contains("0-1"), "{e}");
        assert!(check_cpuset("a", &two).is_err());
        assert!(check_cpuset("", &two).is_err());
        assert_eq!(check_cpus("0.5", 2), Ok(0.5));
        assert_eq!(check_cpus("2", 2), Ok(2.0));
        let e = check_cpus("100", 2).unwrap_err();
        assert!(
            e.contains("more than this machine has") && e.contains(" 2"),
            "{e}"
        );
        assert!(check_cpus("0", 2).is_err());
    }

    #[test]
    fn seconds_are_checked() {
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("abc").is_err());
        assert_eq!(parse_secs("1.5"), Ok(1.5));
    }
}
