//! The versioned results document. Every field a report or a gate reads is here; bump
//! [`SCHEMA_VERSION`] on any change that an older reader would misread.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema version this crate writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One results file: what ran, where, every raw sample, and the summaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Always [`SCHEMA_VERSION`] when written by this crate.
    pub schema_version: u32,
    /// The program that wrote the file.
    pub tool: Tool,
    /// Whether the run finished or was cut short.
    pub status: RunStatus,
    /// Wall-clock start of the run, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Wall-clock end of the run (or of the last completed round for a partial file).
    pub finished_unix_ms: Option<u64>,
    /// The machine the run measured.
    pub environment: Environment,
    /// What was planned.
    pub plan: Plan,
    /// Every measured (non-warm-up) sample, in the order they ran.
    pub samples: Vec<SampleRecord>,
    /// One summary per cell that has samples.
    pub summaries: Vec<CellSummary>,
    /// Correctness failures and failed runs, loudly reported.
    pub failures: Vec<Failure>,
    /// What each backend contained, from `vbench isolate` (absent in benchmark runs; older
    /// readers ignore it, so the schema version is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationMatrix>,
    /// The process that writes the file while the run goes on, so that a reader can tell a
    /// run in progress from one whose vbench was killed (absent in older files and in
    /// documents written once at the end; older readers ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<Writer>,
}

/// The process writing a document: its pid, when it started and in which boot, so that a
/// reused pid or a reboot is not mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// Process id.
    pub pid: u32,
    /// Its start time: field 22 of `/proc/<pid>/stat`, clock ticks after boot.
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` of the boot it ran in.
    pub boot_id: String,
}

/// The probe x backend matrix of `vbench isolate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IsolationMatrix {
    /// The backends in column order, available or not.
    pub backends: Vec<BackendStatus>,
    /// One row per probe, in catalogue order.
    pub probes: Vec<ProbeRow>,
    /// What the harness prepared on the host for the probes (host pid, port, shm id, scratch
    /// directory, ...), all removed when the run ended.
    #[serde(default)]
    pub fixtures: BTreeMap<String, String>,
    /// The limits the container backend ran the probes under.
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

/// One probe on every backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRow {
    /// Probe name.
    pub probe: String,
    /// `visibility`, `privilege`, `limit`, `translation` or `instruction`.
    pub kind: String,
    /// What it tries.
    pub summary: String,
    /// For an instruction probe, what x86 makes of the instruction at CPL3 (absent in other
    /// probes and in older documents; older readers ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpl3: Option<Cpl3Class>,
    /// One cell per backend of [`IsolationMatrix::backends`], same order.
    pub cells: Vec<ProbeCell>,
}

/// What x86 makes of an instruction at CPL3, in Popek and Goldberg's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cpl3Class {
    /// Sensitive but not privileged: it completes at CPL3 without a trap.
    Sensitive,
    /// Privileged: it faults at CPL3.
    Privileged,
    /// Neither (CPUID, RDTSC, INT3).
    Unrestricted,
}

/// One probe on one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeCell {
    /// Backend name.
    pub backend: String,
    /// The catalogue's expectation: `contained`, `escapes`, `inside` (the attempt succeeds
    /// only inside the level's own kernel, machine or namespace), `observe` or `n/a`.
    pub expect: String,
    /// The judgement.
    pub verdict: ProbeVerdict,
    /// Why: the n/a reason, what made a probe broken, or the harness's own measurement.
    #[serde(default)]
    pub note: String,
    /// The outcome the probe printed, if it printed a line.
    pub outcome: Option<String>,
    /// The probe's detail text (observed values).
    #[serde(default)]
    pub detail: String,
    /// How the probe's process ended, when it ran.
    pub exit: Option<Exit>,
    /// Backend counters of the run (cgroup peaks, limit hits, ...).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

/// The judgement of one probe on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeVerdict {
    /// The attempt failed, as it must.
    Contained,
    /// The attempt succeeded where that is expected (the native control, or a documented
    /// permission).
    Escaped,
    /// The attempt succeeded where it must be contained: an isolation failure.
    Breach,
    /// An observation (instruction and translation probes).
    Observed,
    /// The probe does not apply here (see the note).
    NotApplicable,
    /// The probe did not do what it must: the native control did not escape, it printed no
    /// valid line, or it reported an error. Its other results mean nothing.
    Broken,
    /// The backend could not run here or could not start the probe.
    Unavailable,
}

impl ProbeVerdict {
    /// The word in the matrix.
    pub fn label(self) -> &'static str {
        match self {
            ProbeVerdict::Contained => "contained",
            ProbeVerdict::Escaped => "escaped",
            ProbeVerdict::Breach => "ESCAPED!",
            ProbeVerdict::Observed => "observed",
            ProbeVerdict::NotApplicable => "n/a",
            ProbeVerdict::Broken => "BROKEN",
            ProbeVerdict::Unavailable => "-",
        }
    }

    /// Whether this verdict fails `vbench isolate`.
    pub fn fails(self) -> bool {
        matches!(self, ProbeVerdict::Breach | ProbeVerdict::Broken)
    }
}

/// The program that wrote a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    /// `vbench`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// How far a run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still running: the file holds the rounds completed so far.
    Running,
    /// Every planned round completed.
    Complete,
    /// Stopped by a signal (SIGINT/SIGTERM); the file holds the completed rounds.
    Interrupted,
}

/// The machine and its conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// Host name.
    pub hostname: String,
    /// `uname -sr`.
    pub kernel: String,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs online.
    pub logical_cpus: usize,
    /// Whether the CPU reports running under a hypervisor, and which one if known.
    pub hypervisor: Option<String>,
    /// /dev/kvm state and flavour (e.g. `vmx`, `svm`, `pvm (nested)`, `absent`).
    pub kvm: String,
    /// cgroup layout (`v1`, `v2`, `hybrid`, `none`).
    pub cgroup: String,
    /// Further facts (governor, SMT, ...), name to value.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// The plan of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Measured rounds; each cell runs once per round.
    pub rounds: u32,
    /// Warm-up runs per cell, discarded.
    pub warmup: u32,
    /// Whether the quick parameter set was used.
    pub quick: bool,
    /// Seed of the round shuffles and the bootstrap.
    pub seed: u64,
    /// Per-run timeout in milliseconds.
    pub timeout_ms: u64,
    /// Every backend asked for, available or not.
    pub backends: Vec<BackendStatus>,
    /// The cells: workload x backend.
    pub cells: Vec<Cell>,
}

/// A backend's availability as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Backend name.
    pub name: String,
    /// Whether it could run here.
    pub available: bool,
    /// Why not, when it could not.
    pub reason: Option<String>,
    /// A peer tool measured beside vbench's own backends (qemu-user, valgrind).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peer: bool,
    /// Its colour in reports (`#rrggbb`, from the backend registry); documents written before
    /// colours were recorded have none and get one by position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colour: Option<String>,
}

/// One workload on one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// Index into [`Plan::cells`].
    pub id: usize,
    /// Workload name (catalogue task, or `custom:<file name>`).
    pub workload: String,
    /// `cpu`, `mem`, `sys`, or `custom`.
    pub class: String,
    /// Backend name.
    pub backend: String,
    /// The arguments the program ran with (after the program itself).
    pub args: Vec<String>,
    /// What one operation is (`call`, `pass`, `page`, ...; `run` for custom programs).
    pub op: String,
}

impl Cell {
    /// The arguments that say what work an operation is: all but `iters=`, the number of
    /// operations (which `vbench run` sizes per run; the metrics are per operation, so runs of
    /// different sizes compare).
    pub fn work_args(&self) -> Vec<&str> {
        self.args
            .iter()
            .map(String::as_str)
            .filter(|a| !a.starts_with("iters="))
            .collect()
    }

    /// Whether `other` is the same workload, backend and work (sizes aside).
    pub fn same_work(&self, other: &Cell) -> bool {
        self.workload == other.workload
            && self.backend == other.backend
            && self.work_args() == other.work_args()
    }
}

/// One run of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// Cell id.
    pub cell: usize,
    /// Round number, from 0.
    pub round: u32,
    /// What the run measured.
    pub sample: Sample,
}

/// What a backend measured for one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall time from start of launch to reaping, nanoseconds.
    pub wall_ns: u64,
    /// User CPU time, nanoseconds.
    pub user_ns: u64,
    /// System CPU time, nanoseconds.
    pub sys_ns: u64,
    /// Peak resident set size, KiB; absent where the backend cannot measure it (a guest run
    /// inside the harness's own process shares its RSS).
    #[serde(default)]
    pub max_rss_kib: Option<u64>,
    /// How the program ended.
    pub exit: Exit,
    /// The workload's own result line, when it printed one.
    pub report: Option<WorkloadReport>,
    /// Backend-specific start-up latency (e.g. clone to exec, VM create to first instruction).
    pub startup_ns: Option<u64>,
    /// Backend counters (VM exits by kind, translated blocks, cgroup throttling, ...).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Bytes the program wrote to standard output.
    pub stdout_bytes: u64,
    /// FNV-1a 64 of the captured standard output, as 16 hex digits: the checksum of a program
    /// that prints no result line.
    #[serde(default)]
    pub stdout_digest: String,
    /// The last bytes of standard error (bounded), for diagnosis.
    #[serde(default)]
    pub stderr_tail: String,
    /// The CPU the run was pinned to (`--pin`), on every backend alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<usize>,
}

impl Sample {
    /// Whether the program exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.exit == Exit::Code { code: 0 }
    }

    /// The per-operation time of the measured loop when the workload reported one, else the
    /// wall time of the whole run (custom programs): the statistic summaries are built on.
    pub fn metric_ns(&self) -> f64 {
        self.metric_loop().unwrap_or(self.wall_ns as f64)
    }

    /// The workload's own per-operation time, when it printed a result line.
    pub fn metric_loop(&self) -> Option<f64> {
        match &self.report {
            Some(r) if r.iters > 0 => Some(r.ns as f64 / r.iters as f64),
            _ => None,
        }
    }

    /// What identifies the result: the workload's checksum, else the digest of its output.
    pub fn checksum(&self) -> Option<&str> {
        match &self.report {
            Some(r) => Some(&r.checksum),
            None if !self.stdout_digest.is_empty() => Some(&self.stdout_digest),
            None => None,
        }
    }
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Exit {
    /// Exited with a status code.
    Code {
        /// The status.
        code: i32,
    },
    /// Killed by a signal it did not handle.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// Killed by the harness after the per-run timeout.
    Timeout {
        /// The timeout that expired, milliseconds.
        after_ms: u64,
    },
    /// Killed by the harness because the run was interrupted.
    Interrupted,
}

impl Default for Exit {
    fn default() -> Self {
        Exit::Code { code: 0 }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code { code } => write!(f, "exit status {code}"),
            Exit::Signal { signal } => write!(f, "killed by signal {signal}"),
            Exit::Timeout { after_ms } => write!(f, "timed out after {after_ms} ms"),
            Exit::Interrupted => write!(f, "interrupted"),
        }
    }
}

/// The result line a workload printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadReport {
    /// Task name.
    pub task: String,
    /// Task parameters other than `iters`, in the order printed.
    pub params: Vec<(String, String)>,
    /// Operations in the measured loop.
    pub iters: u64,
    /// Nanoseconds the measured loop took.
    pub ns: u64,
    /// Checksum of what the task computed.
    pub checksum: String,
}

/// Statistics of one cell over its rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    /// Cell id.
    pub cell: usize,
    /// Successful samples summarised.
    pub n: usize,
    /// `loop_ns_per_op` (workload's own timing) or `wall_ns` (custom programs).
    pub metric: String,
    /// Median of the metric, nanoseconds.
    pub median_ns: f64,
    /// Median absolute deviation, nanoseconds (unscaled).
    pub mad_ns: f64,
    /// Bootstrap 95% confidence interval of the median, low end.
    pub ci_low_ns: f64,
    /// Bootstrap 95% confidence interval of the median, high end.
    pub ci_high_ns: f64,
    /// Samples further than 3 scaled MADs from the median.
    pub outliers: usize,
    /// Median wall time of a whole run, nanoseconds.
    pub wall_median_ns: f64,
    /// The checksum when every sample agreed, else `None`.
    pub checksum: Option<String>,
    /// Whether every sample of this cell printed the same checksum.
    pub checksum_consistent: bool,
    /// Whether the checksum equals the native cell's (None for native itself or without one).
    pub checksum_matches_native: Option<bool>,
    /// Overhead against native from paired samples of the same rounds.
    pub overhead: Option<Ratio>,
}

/// A ratio with its bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Median of the per-round ratios.
    pub median: f64,
    /// 95% interval, low end.
    pub ci_low: f64,
    /// 95% interval, high end.
    pub ci_high: f64,
    /// Rounds in which both sides succeeded.
    pub pairs: usize,
}

/// A failed run or a correctness failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Cell id.
    pub cell: usize,
    /// Round, when the failure belongs to one run.
    pub round: Option<u32>,
    /// What kind of failure.
    pub kind: FailureKind,
    /// Human-readable detail.
    pub message: String,
}

/// Kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The checksum differs from native's or between rounds: the backend computed something else.
    ChecksumMismatch,
    /// The program exited non-zero, by a signal, or timed out.
    BadExit,
    /// The backend could not run the program at all, or its output was malformed.
    Error,
}

impl Document {
    /// The cell with the given id.
    pub fn cell(&self, id: usize) -> Option<&Cell> {
        self.plan.cells.get(id).filter(|c| c.id == id)
    }

    /// The summary of the given cell.
    pub fn summary(&self, id: usize) -> Option<&CellSummary> {
        self.summaries.iter().find(|s| s.cell == id)
    }

    /// Whether the document holds benchmarks (a plan of cells or samples): the document of
    /// `vbench isolate` holds none.
    pub fn has_benchmarks(&self) -> bool {
        !self.plan.cells.is_empty() || !self.samples.is_empty()
    }
}

impl IsolationMatrix {
    /// Cells whose verdict fails `vbench isolate` (breaches and broken probes).
    pub fn failed_cells(&self) -> usize {
        self.probes
            .iter()
            .flat_map(|r| &r.cells)
            .filter(|c| c.verdict.fails())
            .count()
    }
}

impl ProbeCell {
    /// Whether the attempt succeeded only inside the level's own kernel, machine or namespace
    /// (escaped where the catalogue expects `inside`): the host was not reached.
    pub fn escaped_inside(&self) -> bool {
        self.verdict == ProbeVerdict::Escaped && self.expect == "inside"
    }
}
