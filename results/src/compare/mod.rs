//! The regression gate: compares the overhead ratios of a new run against a baseline.
//!
//! Wall-clock times drift by 10-20% between runs on a shared machine, so the gate never compares
//! absolute times. It compares, for each (workload, backend), the *overhead ratio* against the
//! native control, computed per round from samples of the same round (the drift cancels). For
//! each metric it takes the per-round log ratios of both runs and reports:
//!
//! - the relative change of the ratio, `exp(HL) - 1`, where HL is the Hodges-Lehmann estimate
//!   of the shift of the log ratios (the median of all pairwise differences new - base): robust
//!   to the odd disturbed round like a median, much less noisy than a difference of medians;
//! - a two-sided permutation test (Mann-Whitney rank statistic, exact when the relabelings are
//!   few, Monte Carlo otherwise) of whether the new ratios lie above or below the old, giving a
//!   p-value;
//! - the confidence interval of that change at level `1 - alpha` that inverts the same rank test
//!   (Moses' distribution-free interval, exact up to 10 000 pairs; a bootstrap beyond).
//!
//! A change is a **regression** only when it is significant (`p < alpha`) *and* the whole
//! interval lies above the metric's noise threshold; an **improvement** when significant and the
//! whole interval lies below minus the threshold. Everything else is unchanged (within noise).
//! Inputs the gate cannot judge honestly (different cells, a schema mismatch, no native control,
//! too few rounds for the test to ever be significant) are typed errors, never a pass.

use crate::schema::{Cell, Document, RunStatus};
use crate::stats;
use crate::store::ResultsError;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Default significance level of the permutation test.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Default noise threshold: the relative change of an overhead ratio that is never reported.
/// Calibrated on the project's noisy 2-core machines (`scripts/gate-calibration.sh`): at 5%, 1
/// of 20 gate evaluations of an unchanged build failed, and every one of 10 evaluations of a
/// 10.6% slowdown did; at 10% none of the unchanged ones failed, but only slowdowns of about 19%
/// were caught every time.
pub const DEFAULT_THRESHOLD: f64 = 0.05;
/// Where named baselines live, under the results directory.
pub const BASELINES_SUBDIR: &str = "baselines";
/// Enumerate every relabeling when there are at most this many; sample otherwise.
const EXACT_PERMUTATIONS: f64 = 50_000.0;
/// Random relabelings of the Monte Carlo permutation test.
const SAMPLED_PERMUTATIONS: usize = 10_000;

/// Which of the two documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The baseline.
    Base,
    /// The results being gated.
    New,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Base => "the baseline",
            Side::New => "the current results",
        })
    }
}

/// Why two documents cannot be gated. Each is bad input (exit status 2 in `vbench gate`).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The documents were written with different schema versions.
    #[error("schema mismatch: the baseline has schema version {base}, the current results {new}; record a new baseline with this vbench")]
    SchemaMismatch {
        /// Schema version of the baseline.
        base: u32,
        /// Schema version of the current results.
        new: u32,
    },
    /// A document has no native cell, so it holds no overhead ratios.
    #[error("{side} has no native control cell, so it holds no overhead ratios to gate")]
    NoNativeControl {
        /// Which document.
        side: Side,
    },
    /// The documents measured different cells (workloads, backends or parameters).
    #[error("different workload set: {}{}", list_cells(.only_in_base, .only_in_new), if *.quick_differs { " (one run used --quick and the other did not)" } else { "" })]
    DifferentWorkloads {
        /// Cells only the baseline has, as `workload/backend [args]`.
        only_in_base: Vec<String>,
        /// Cells only the current results have.
        only_in_new: Vec<String>,
        /// Whether one document used quick parameters and the other did not.
        quick_differs: bool,
    },
    /// Neither document has a non-native cell: there is no overhead to gate.
    #[error("nothing to gate: the results hold only native cells; run with --backend container (or bt, kvm, all)")]
    NothingToGate,
    /// A metric has no round in which both it and native succeeded, on one side.
    #[error("{metric}: {side} has no round in which both {backend} and native succeeded")]
    NoPairs {
        /// The metric.
        metric: String,
        /// Its backend.
        backend: String,
        /// Which document.
        side: Side,
    },
    /// Too few rounds for the test ever to reach significance: the gate could never fire.
    #[error("{metric}: too few rounds for a test at alpha {alpha} (baseline {base_n}, current {new_n} paired rounds: the smallest possible p-value is {min_p:.3}); record both runs with --rounds 5 or more")]
    TooFewRounds {
        /// The metric.
        metric: String,
        /// Paired rounds of the baseline.
        base_n: usize,
        /// Paired rounds of the current results.
        new_n: usize,
        /// The smallest p-value the permutation test can give with these counts.
        min_p: f64,
        /// The significance level asked for.
        alpha: f64,
    },
    /// No baseline of that name, and no such file.
    #[error("missing baseline {name:?}: no file {path} (record one with `vbench run --save-baseline {name}`)")]
    MissingBaseline {
        /// The name or path given.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A baseline name that cannot be a file name.
    #[error(
        "invalid baseline name {0:?}: use letters, digits, '.', '_' and '-', not starting with '.'"
    )]
    BadBaselineName(String),
    /// A threshold that is not a percentage or a fraction.
    #[error("invalid threshold {0:?}: write a percentage such as 10% or a fraction such as 0.10 (at most 1)")]
    BadThreshold(String),
    /// A significance level outside (0, 1).
    #[error("invalid alpha {0}: it must lie strictly between 0 and 1")]
    BadAlpha(f64),
    /// The gate configuration file cannot be read or parsed.
    #[error("gate config {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A results file cannot be read.
    #[error(transparent)]
    Results(#[from] ResultsError),
}

fn list_cells(base: &[String], new: &[String]) -> String {
    let mut parts = Vec::new();
    if !base.is_empty() {
        parts.push(format!("only in the baseline: {}", base.join(", ")));
    }
    if !new.is_empty() {
        parts.push(format!("only in the current results: {}", new.join(", ")));
    }
    parts.join("; ")
}

/// A noise threshold: a relative change, as a fraction (0.10 is 10%).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold(pub f64);

impl Threshold {
    /// Parses `10%` (a percentage) or `0.10` (a fraction, below 10).
    pub fn parse(s: &str) -> Result<Self, GateError> {
        let t = s.trim();
        let v = match t.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().ok().map(|v| v / 100.0),
            // a bare 10 is most likely meant as 10%: refuse bare numbers above 1
            None => t.parse::<f64>().ok().filter(|v| *v <= 1.0),
        };
        match v {
            Some(v) if v.is_finite() && v >= 0.0 => Ok(Threshold(v)),
            _ => Err(GateError::BadThreshold(s.to_string())),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", fmt_pct(self.0))
    }
}

fn fmt_pct(fraction: f64) -> String {
    let p = fraction * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round())
    } else {
        format!("{p:.1}")
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Num(v) => v.to_string(),
            Raw::Text(s) => s,
        };
        Threshold::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The gate configuration file (TOML):
///
/// ```toml
/// threshold = "10%"        # default noise threshold of every metric (built in: 5%)
/// alpha = 0.05             # significance level
///
/// [metrics."getpid/container"]
/// threshold = "25%"        # a noisier metric
///
/// [metrics."*/kvm"]        # `*` matches any workload (or backend)
/// threshold = 0.15
///
/// [metrics."sha256/bt"]
/// ignore = true            # reported, never gated
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Default noise threshold.
    pub threshold: Option<Threshold>,
    /// Significance level.
    pub alpha: Option<f64>,
    /// Per-metric settings, keyed by `workload/backend` where either side may be `*`.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricConfig>,
}

/// Settings of one metric (or a pattern of metrics).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Noise threshold of this metric.
    pub threshold: Option<Threshold>,
    /// Report the metric but never fail on it.
    #[serde(default)]
    pub ignore: bool,
}

impl GateConfig {
    /// Parses a configuration; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, GateError> {
        let cfg: GateConfig = toml::from_str(text).map_err(|e| GateError::Config {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        for pattern in cfg.metrics.keys() {
            let ok = pattern
                .split_once('/')
                .is_some_and(|(w, b)| !w.is_empty() && !b.is_empty() && !b.contains('/'));
            if !ok {
                return Err(GateError::Config {
                    path: path.to_path_buf(),
                    message: format!(
                        "metric {pattern:?} is not of the form workload/backend (either may be *)"
                    ),
                });
            }
        }
        Ok(cfg)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, GateError> {
        let text = std::fs::read_to_string(path).map_err(|e| GateError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(path, &text)
    }
}

/// Everything the gate needs besides the two documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Significance level of the permutation test, and `1 -` the confidence of the interval.
    pub alpha: f64,
    /// Noise threshold of metrics the configuration does not name.
    pub threshold: f64,
    /// Per-metric settings from the configuration file.
    pub metrics: BTreeMap<String, MetricConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            alpha: DEFAULT_ALPHA,
            threshold: DEFAULT_THRESHOLD,
            metrics: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// Combines command-line values (which win) with a configuration file and the defaults.
    pub fn new(
        threshold: Option<Threshold>,
        alpha: Option<f64>,
        config: Option<GateConfig>,
    ) -> Result<Self, GateError> {
        let config = config.unwrap_or_default();
        let alpha = alpha.or(config.alpha).unwrap_or(DEFAULT_ALPHA);
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(GateError::BadAlpha(alpha));
        }
        Ok(Settings {
            alpha,
            threshold: threshold
                .or(config.threshold)
                .map_or(DEFAULT_THRESHOLD, |t| t.0),
            metrics: config.metrics,
        })
    }

    /// The configuration entry for a metric: an exact `workload/backend` entry first, then
    /// `workload/*`, then `*/backend`, then `*/*`.
    fn metric(&self, workload: &str, backend: &str) -> Option<(&str, &MetricConfig)> {
        [
            format!("{workload}/{backend}"),
            format!("{workload}/*"),
            format!("*/{backend}"),
            "*/*".to_string(),
        ]
        .into_iter()
        .find_map(|k| self.metrics.get_key_value(&k))
        .map(|(k, v)| (k.as_str(), v))
    }
}

/// What the gate decided for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Significantly slower, beyond the noise threshold.
    Regression,
    /// Significantly faster, beyond the noise threshold.
    Improvement,
    /// Not significant, or not wholly beyond the threshold.
    Unchanged,
    /// Reported but not gated (configuration says `ignore = true`).
    Ignored,
}

impl Verdict {
    /// A lower-case word for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::Improvement => "improvement",
            Verdict::Unchanged => "unchanged",
            Verdict::Ignored => "ignored",
        }
    }
}

/// One run as the gate saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// How the caller named it (a file, a baseline name); empty unless set.
    pub label: String,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Planned rounds.
    pub rounds: u32,
    /// Whether quick parameters were used.
    pub quick: bool,
    /// How far the run got.
    pub status: RunStatus,
    /// The vbench version that wrote it.
    pub tool_version: String,
    /// Host name of the machine.
    pub hostname: String,
}

impl RunInfo {
    fn of(doc: &Document) -> Self {
        RunInfo {
            label: String::new(),
            started_unix_ms: doc.started_unix_ms,
            rounds: doc.plan.rounds,
            quick: doc.plan.quick,
            status: doc.status,
            tool_version: doc.tool.version.clone(),
            hostname: doc.environment.hostname.clone(),
        }
    }
}

/// The change of one overhead ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricChange {
    /// `workload/backend`: the name the configuration and every output use.
    pub name: String,
    /// Workload.
    pub workload: String,
    /// Backend.
    pub backend: String,
    /// Arguments of the cell.
    pub args: Vec<String>,
    /// Median overhead ratio (backend / native, per round) of the baseline.
    pub base_median: f64,
    /// Paired rounds of the baseline.
    pub base_n: usize,
    /// Median overhead ratio of the current results.
    pub new_median: f64,
    /// 95% bootstrap interval of the current median ratio.
    pub new_ci: (f64, f64),
    /// Paired rounds of the current results.
    pub new_n: usize,
    /// Relative change of the ratio, `exp(HL) - 1` with HL the Hodges-Lehmann shift of the log
    /// ratios (0.25 is 25% slower).
    pub change: f64,
    /// Confidence interval of `change` at level `1 - alpha` (inverting the rank test), low end.
    pub ci_low: f64,
    /// High end.
    pub ci_high: f64,
    /// Two-sided permutation-test p-value of the change.
    pub p_value: f64,
    /// Noise threshold applied.
    pub threshold: f64,
    /// The configuration entry that set the threshold or `ignore`, if any.
    pub config_key: Option<String>,
    /// The decision.
    pub verdict: Verdict,
}

impl MetricChange {
    /// Whether the permutation test found the change significant at `alpha`.
    pub fn significant(&self, alpha: f64) -> bool {
        self.p_value < alpha
    }
}

/// The gate's judgement of a run against a baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct GateReport {
    /// The baseline.
    pub base: RunInfo,
    /// The results gated.
    pub new: RunInfo,
    /// Significance level used.
    pub alpha: f64,
    /// Default noise threshold used.
    pub threshold: f64,
    /// One entry per (workload, backend) overhead ratio, in the baseline's cell order.
    pub metrics: Vec<MetricChange>,
    /// Things a reader should know (incomplete runs, correctness failures, unused config).
    pub notes: Vec<String>,
}

impl GateReport {
    /// The metrics that regressed.
    pub fn regressions(&self) -> impl Iterator<Item = &MetricChange> {
        self.metrics
            .iter()
            .filter(|m| m.verdict == Verdict::Regression)
    }

    /// The metrics that improved.
    pub fn improvements(&self) -> impl Iterator<Item = &MetricChange> {
        self.metrics
            .iter()
            .filter(|m| m.verdict == Verdict::Improvement)
    }

    /// Whether the gate passes (no regression).
    pub fn passed(&self) -> bool {
        self.regressions().next().is_none()
    }
}

type Key = (String, String, Vec<String>);

fn key(c: &Cell) -> Key {
    (c.workload.clone(), c.backend.clone(), c.args.clone())
}

fn describe(k: &Key) -> String {
    if k.2.is_empty() {
        format!("{}/{}", k.0, k.1)
    } else {
        format!("{}/{} [{}]", k.0, k.1, k.2.join(" "))
    }
}

/// The per-round overhead ratios of `cell` against the native cell of the same workload and
/// arguments, from rounds in which both succeeded (the same pairing as the summaries).
pub fn paired_ratios(doc: &Document, cell: &Cell) -> Vec<f64> {
    let Some(native) = doc
        .plan
        .cells
        .iter()
        .find(|c| c.backend == "native" && c.workload == cell.workload && c.args == cell.args)
    else {
        return Vec::new();
    };
    let by_round = |id: usize| -> BTreeMap<u32, f64> {
        doc.samples
            .iter()
            .filter(|s| s.cell == id && s.sample.succeeded())
            .map(|s| (s.round, s.sample.metric_ns()))
            .collect()
    };
    let base = by_round(native.id);
    by_round(cell.id)
        .into_iter()
        .filter_map(|(r, x)| base.get(&r).filter(|b| **b > 0.0).map(|b| x / b))
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect()
}

fn binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The smallest two-sided p-value the permutation test can give for group sizes `n` and `m`
/// (the observed labelling, and for equal sizes its mirror image, are always as extreme).
pub fn min_p_value(n: usize, m: usize) -> f64 {
    let total = binomial(n + m, n);
    if total <= EXACT_PERMUTATIONS {
        (if n == m { 2.0 } else { 1.0 }) / total
    } else {
        1.0 / (SAMPLED_PERMUTATIONS as f64 + 1.0)
    }
}

fn median_of(v: &[f64]) -> f64 {
    stats::median(v).expect("non-empty")
}

/// The Mann-Whitney statistic: pairs `(x, y)` with `y > x`, ties counting one half.
fn mann_whitney_u(x: &[f64], y: &[f64]) -> f64 {
    let mut u = 0.0;
    for a in x {
        for b in y {
            u += match b.total_cmp(a) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
        }
    }
    u
}

/// Two-sided permutation test (Mann-Whitney rank statistic) of whether `y` tends to lie above
/// or below `x`: the share of relabelings of the pooled values whose statistic is at least as
/// far from its null centre as the observed one. Exact when the relabelings are few, else
/// sampled (deterministic for a `seed`). Ranks make it robust to the odd disturbed round.
pub fn permutation_p_value(x: &[f64], y: &[f64], seed: u64) -> f64 {
    let centre = (x.len() * y.len()) as f64 / 2.0;
    let observed = (mann_whitney_u(x, y) - centre).abs();
    let pooled: Vec<f64> = x.iter().chain(y).copied().collect();
    let (n, total) = (x.len(), pooled.len());
    // half-integers are exact in f64, so no tolerance is needed
    let extreme = |gx: &[f64], gy: &[f64]| (mann_whitney_u(gx, gy) - centre).abs() >= observed;
    if binomial(total, n) <= EXACT_PERMUTATIONS {
        let mut gx = Vec::with_capacity(n);
        let mut gy = Vec::with_capacity(total - n);
        let mut idx: Vec<usize> = (0..n).collect();
        let (mut hits, mut count) = (0u64, 0u64);
        loop {
            gx.clear();
            gy.clear();
            let mut next = 0;
            for (i, v) in pooled.iter().enumerate() {
                if next < n && idx[next] == i {
                    gx.push(*v);
                    next += 1;
                } else {
                    gy.push(*v);
                }
            }
            count += 1;
            hits += u64::from(extreme(&gx, &gy));
            // next combination in lexicographic order
            let Some(i) = (0..n).rev().find(|&i| idx[i] < total - n + i) else {
                break;
            };
            idx[i] += 1;
            for j in i + 1..n {
                idx[j] = idx[j - 1] + 1;
            }
        }
        hits as f64 / count as f64
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut perm = pooled.clone();
        let mut hits = 0u64;
        for _ in 0..SAMPLED_PERMUTATIONS {
            perm.shuffle(&mut rng);
            hits += u64::from(extreme(&perm[..n], &perm[n..]));
        }
        (hits + 1) as f64 / (SAMPLED_PERMUTATIONS as f64 + 1.0)
    }
}

/// All pairwise differences `y_j - x_i`, sorted.
fn pairwise_differences(x: &[f64], y: &[f64]) -> Vec<f64> {
    let mut d: Vec<f64> = y
        .iter()
        .flat_map(|b| x.iter().map(move |a| b - a))
        .collect();
    d.sort_by(f64::total_cmp);
    d
}

/// The Hodges-Lehmann estimate of the shift from `x` to `y`: the median of all pairwise
/// differences `y_j - x_i`. As robust as the medians (an odd disturbed round barely moves it)
/// but far less noisy than the difference of two medians of a few rounds.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> f64 {
    let d: Vec<f64> = y
        .iter()
        .flat_map(|b| x.iter().map(move |a| b - a))
        .collect();
    median_of(&d)
}

/// Largest `n * m` for which [`shift_ci`] uses the exact distribution.
const EXACT_SHIFT_CI: usize = 10_000;

/// The null distribution of the Mann-Whitney statistic for group sizes `n` and `m` (no ties):
/// `counts[u]` relabelings give `U = u`, for `u` in `0..=n*m`.
fn mann_whitney_null(n: usize, m: usize) -> Vec<f64> {
    // f[a] holds the counts for sizes (a, b) as b grows; with b = 0, U is always 0
    let mut f: Vec<Vec<f64>> = vec![vec![1.0]; n + 1];
    for b in 1..=m {
        let mut g: Vec<Vec<f64>> = Vec::with_capacity(n + 1);
        g.push(vec![1.0]);
        for a in 1..=n {
            // the largest pooled value is either a y (above all `a` x's: adds a) or an x (adds 0)
            let mut v = vec![0.0; a * b + 1];
            for (u, c) in f[a].iter().enumerate() {
                v[u + a] += c;
            }
            for (u, c) in g[a - 1].iter().enumerate() {
                v[u] += c;
            }
            g.push(v);
        }
        f = g;
    }
    f.pop().expect("n + 1 entries")
}

/// Confidence interval, at level `1 - alpha`, of the shift from `x` to `y`: the distribution-free
/// interval that inverts the Mann-Whitney test (Moses), `[D(k), D(nm + 1 - k)]` over the sorted
/// pairwise differences `D`, exact for `n * m` up to 10 000; a percentile bootstrap of the
/// Hodges-Lehmann estimate beyond. Unbounded when the groups are too small for level `1 - alpha`.
pub fn shift_ci(x: &[f64], y: &[f64], alpha: f64, seed: u64) -> (f64, f64) {
    let (n, m) = (x.len(), y.len());
    if n * m <= EXACT_SHIFT_CI {
        let counts = mann_whitney_null(n, m);
        let total: f64 = counts.iter().sum();
        let mut cdf = 0.0;
        let mut below = None; // the largest u with P(U <= u) <= alpha / 2
        for (u, c) in counts.iter().enumerate() {
            cdf += c / total;
            if cdf > alpha / 2.0 * (1.0 + 1e-9) {
                break;
            }
            below = Some(u);
        }
        let Some(u) = below else {
            return (f64::NEG_INFINITY, f64::INFINITY);
        };
        let d = pairwise_differences(x, y);
        return (d[u], d[d.len() - 1 - u]);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut bx = vec![0.0; n];
    let mut by = vec![0.0; m];
    let mut shifts = Vec::with_capacity(stats::BOOTSTRAP_RESAMPLES);
    for _ in 0..stats::BOOTSTRAP_RESAMPLES {
        for b in bx.iter_mut() {
            *b = x[rng.gen_range(0..n)];
        }
        for b in by.iter_mut() {
            *b = y[rng.gen_range(0..m)];
        }
        shifts.push(hodges_lehmann(&bx, &by));
    }
    shifts.sort_by(f64::total_cmp);
    let idx = |q: f64| ((q * (shifts.len() - 1) as f64).round() as usize).min(shifts.len() - 1);
    (shifts[idx(alpha / 2.0)], shifts[idx(1.0 - alpha / 2.0)])
}

fn seed_of(base: &Document, new: &Document, name: &str) -> u64 {
    // FNV-1a of the metric name, so every metric gets its own stream, reproducibly
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h ^ base.plan.seed.rotate_left(21) ^ new.plan.seed.rotate_left(42)
}

/// Judges `new` against `base`. See the module documentation for the rule.
pub fn compare(
    base: &Document,
    new: &Document,
    settings: &Settings,
) -> Result<GateReport, GateError> {
    if !(settings.alpha > 0.0 && settings.alpha < 1.0) {
        return Err(GateError::BadAlpha(settings.alpha));
    }
    if base.schema_version != new.schema_version {
        return Err(GateError::SchemaMismatch {
            base: base.schema_version,
            new: new.schema_version,
        });
    }
    for (side, doc) in [(Side::Base, base), (Side::New, new)] {
        if !doc.plan.cells.iter().any(|c| c.backend == "native") {
            return Err(GateError::NoNativeControl { side });
        }
    }
    let keys = |d: &Document| d.plan.cells.iter().map(key).collect::<BTreeSet<Key>>();
    let (kb, kn) = (keys(base), keys(new));
    if kb != kn {
        let (ob, on): (Vec<&Key>, Vec<&Key>) =
            (kb.difference(&kn).collect(), kn.difference(&kb).collect());
        // name cells by workload/backend; add the arguments only where they are the difference
        let name = |k: &Key, other: &[&Key]| {
            if other.iter().any(|o| o.0 == k.0 && o.1 == k.1) {
                describe(k)
            } else {
                format!("{}/{}", k.0, k.1)
            }
        };
        return Err(GateError::DifferentWorkloads {
            only_in_base: ob.iter().map(|k| name(k, &on)).collect(),
            only_in_new: on.iter().map(|k| name(k, &ob)).collect(),
            quick_differs: base.plan.quick != new.plan.quick,
        });
    }
    let gated: Vec<&Cell> = base
        .plan
        .cells
        .iter()
        .filter(|c| c.backend != "native")
        .collect();
    if gated.is_empty() {
        return Err(GateError::NothingToGate);
    }
    // names are workload/backend; the arguments join in only if that is ambiguous
    let mut name_count: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in &gated {
        *name_count
            .entry((c.workload.clone(), c.backend.clone()))
            .or_default() += 1;
    }

    let mut metrics = Vec::new();
    let mut used_keys = BTreeSet::new();
    for cell in gated {
        let name = if name_count[&(cell.workload.clone(), cell.backend.clone())] > 1 {
            describe(&key(cell))
        } else {
            format!("{}/{}", cell.workload, cell.backend)
        };
        let new_cell = new
            .plan
            .cells
            .iter()
            .find(|c| key(c) == key(cell))
            .expect("same key sets");
        let (rb, rn) = (paired_ratios(base, cell), paired_ratios(new, new_cell));
        for (side, r) in [(Side::Base, &rb), (Side::New, &rn)] {
            if r.is_empty() {
                return Err(GateError::NoPairs {
                    metric: name,
                    backend: cell.backend.clone(),
                    side,
                });
            }
        }
        let min_p = min_p_value(rb.len(), rn.len());
        if min_p >= settings.alpha {
            return Err(GateError::TooFewRounds {
                metric: name,
                base_n: rb.len(),
                new_n: rn.len(),
                min_p,
                alpha: settings.alpha,
            });
        }
        let (x, y): (Vec<f64>, Vec<f64>) = (
            rb.iter().map(|r| r.ln()).collect(),
            rn.iter().map(|r| r.ln()).collect(),
        );
        let seed = seed_of(base, new, &name);
        let d = hodges_lehmann(&x, &y);
        let p_value = permutation_p_value(&x, &y, seed);
        let (lo, hi) = shift_ci(&x, &y, settings.alpha, seed.rotate_left(7));
        let (ci_low, ci_high) = (lo.exp_m1(), hi.exp_m1());
        let config = settings.metric(&cell.workload, &cell.backend);
        if let Some((k, _)) = config {
            used_keys.insert(k.to_string());
        }
        let threshold = config
            .and_then(|(_, m)| m.threshold)
            .map_or(settings.threshold, |t| t.0);
        let significant = p_value < settings.alpha;
        let verdict = if config.is_some_and(|(_, m)| m.ignore) {
            Verdict::Ignored
        } else if significant && ci_low > threshold {
            Verdict::Regression
        } else if significant && ci_high < -threshold {
            Verdict::Improvement
        } else {
            Verdict::Unchanged
        };
        metrics.push(MetricChange {
            name,
            workload: cell.workload.clone(),
            backend: cell.backend.clone(),
            args: cell.args.clone(),
            base_median: median_of(&rb),
            base_n: rb.len(),
            new_median: median_of(&rn),
            new_ci: stats::bootstrap_median_ci(&rn, seed.rotate_left(13)).expect("non-empty"),
            new_n: rn.len(),
            change: d.exp_m1(),
            ci_low,
            ci_high,
            p_value,
            threshold,
            config_key: config.map(|(k, _)| k.to_string()),
            verdict,
        });
    }

    let mut notes = Vec::new();
    for k in settings.metrics.keys().filter(|k| !used_keys.contains(*k)) {
        notes.push(format!("config entry {k:?} matches no gated metric"));
    }
    for (side, doc) in [(Side::Base, base), (Side::New, new)] {
        if doc.status != RunStatus::Complete {
            notes.push(format!(
                "{side} is not a complete run (status {:?}); only its completed rounds are compared",
                doc.status
            ));
        }
        if !doc.failures.is_empty() {
            notes.push(format!(
                "{side} has {} failure(s) (failed runs or checksum mismatches): see `vbench show`",
                doc.failures.len()
            ));
        }
    }
    if base.environment.hostname != new.environment.hostname {
        notes.push(format!(
            "the runs come from different machines ({} and {}): ratios transfer between machines only roughly",
            base.environment.hostname, new.environment.hostname
        ));
    }
    Ok(GateReport {
        base: RunInfo::of(base),
        new: RunInfo::of(new),
        alpha: settings.alpha,
        threshold: settings.threshold,
        metrics,
        notes,
    })
}

/// The file of baseline `name` under the results directory `results_dir`.
pub fn baseline_path(results_dir: &Path, name: &str) -> Result<PathBuf, GateError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(GateError::BadBaselineName(name.to_string()));
    }
    Ok(results_dir
        .join(BASELINES_SUBDIR)
        .join(format!("{name}.json")))
}

/// Resolves a baseline given by name or by path: an existing file, or anything that looks like a
/// path (contains `/` or ends in `.json`), is a path; otherwise it is a name under
/// `results_dir/baselines/`. A missing file is [`GateError::MissingBaseline`].
pub fn resolve_baseline(results_dir: &Path, name_or_path: &str) -> Result<PathBuf, GateError> {
    let as_path = Path::new(name_or_path);
    let path = if as_path.is_file() || name_or_path.contains('/') || name_or_path.ends_with(".json")
    {
        as_path.to_path_buf()
    } else {
        baseline_path(results_dir, name_or_path)?
    };
    if !path.is_file() {
        return Err(GateError::MissingBaseline {
            name: name_or_path.to_string(),
            path,
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Exit, Plan, Sample, SampleRecord, WorkloadReport, SCHEMA_VERSION};

    /// A document with native and container cells for each workload; `ratio(workload, round)`
    /// gives the container/native ratio of that round (native takes 100 ns/op).
    fn doc(workloads: &[&str], rounds: u32, ratio: impl Fn(&str, u32) -> f64) -> Document {
        let mut cells = Vec::new();
        for w in workloads {
            for b in ["native", "container"] {
                cells.push(Cell {
                    id: cells.len(),
                    workload: w.to_string(),
                    class: "cpu".into(),
                    backend: b.into(),
                    args: vec!["iters=1000".into()],
                    op: "step".into(),
                });
            }
        }
        let mut samples = Vec::new();
        for r in 0..rounds {
            // drift: every round is slower or faster as a whole; it cancels in the ratio
            let drift = 1.0 + 0.2 * ((r * 7 % 5) as f64 - 2.0) / 2.0;
            for c in &cells {
                let per_op = 100.0
                    * drift
                    * if c.backend == "native" {
                        1.0
                    } else {
                        ratio(&c.workload, r)
                    };
                samples.push(SampleRecord {
                    cell: c.id,
                    round: r,
                    sample: Sample {
                        wall_ns: 1_000_000,
                        report: Some(WorkloadReport {
                            task: c.workload.clone(),
                            params: vec![],
                            iters: 1000,
                            ns: (per_op * 1000.0).round() as u64,
                            checksum: "ab".into(),
                        }),
                        ..Sample::default()
                    },
                });
            }
        }
        // through serde, so fields added to the schema later (with defaults) need no change here
        let plan = Plan {
            rounds,
            seed: 1,
            cells,
            ..Plan::default()
        };
        serde_json::from_value(serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "vbench", "version": "0.1.0"},
            "status": "complete",
            "started_unix_ms": 1,
            "finished_unix_ms": 2,
            "environment": {"hostname": "h", "kernel": "k", "cpu_model": "c", "logical_cpus": 2,
                            "hypervisor": null, "kvm": "absent", "cgroup": "v2"},
            "plan": plan,
            "samples": samples,
            "summaries": [],
            "failures": [],
        }))
        .unwrap()
    }

    /// Small deterministic per-round noise, within +-2%.
    fn jitter(w: &str, r: u32) -> f64 {
        let h = w.len() as u32 * 31 + r * 17;
        1.0 + ((h % 9) as f64 - 4.0) / 200.0
    }

    #[test]
    fn unchanged_runs_pass() {
        let base = doc(&["intmix", "getpid"], 10, |w, r| 1.2 * jitter(w, r));
        let new = doc(&["intmix", "getpid"], 10, |w, r| 1.2 * jitter(w, r + 3));
        let rep = compare(&base, &new, &Settings::default()).unwrap();
        assert_eq!(rep.metrics.len(), 2);
        assert!(rep.passed());
        assert!(rep.metrics.iter().all(|m| m.verdict == Verdict::Unchanged));
        assert_eq!(rep.metrics[0].name, "intmix/container");
        assert!((rep.metrics[0].base_median - 1.2).abs() < 0.03);
    }

    #[test]
    fn a_clear_slowdown_is_a_regression_and_named() {
        let base = doc(&["intmix", "getpid"], 10, |w, r| 1.2 * jitter(w, r));
        let new = doc(&["intmix", "getpid"], 10, |w, r| {
            (if w == "intmix" { 1.5 } else { 1.2 }) * jitter(w, r + 1)
        });
        let rep = compare(&base, &new, &Settings::default()).unwrap();
        let reg: Vec<_> = rep.regressions().map(|m| m.name.as_str()).collect();
        assert_eq!(reg, ["intmix/container"]);
        let m = &rep.metrics[0];
        assert!((m.change - 0.25).abs() < 0.04, "{}", m.change);
        assert!(m.ci_low > 0.10 && m.ci_low <= m.change && m.change <= m.ci_high);
        assert!(m.p_value < 0.05);
        assert_eq!(rep.metrics[1].verdict, Verdict::Unchanged);
        assert!(!rep.passed());
    }

    #[test]
    fn a_significant_change_inside_the_threshold_is_not_a_regression() {
        // 3% slower, very consistently: significant, but the interval is not beyond 5%
        let base = doc(&["intmix"], 10, |_, _| 1.0);
        let new = doc(&["intmix"], 10, |_, _| 1.03);
        let rep = compare(&base, &new, &Settings::default()).unwrap();
        let m = &rep.metrics[0];
        assert!(m.significant(0.05));
        assert_eq!(m.verdict, Verdict::Unchanged);
        // with a 2% threshold it is one
        let s = Settings::new(Some(Threshold::parse("2%").unwrap()), None, None).unwrap();
        assert_eq!(
            compare(&base, &new, &s).unwrap().metrics[0].verdict,
            Verdict::Regression
        );
    }

    #[test]
    fn a_large_but_noisy_change_is_not_significant() {
        // half the new rounds are fast, half slow: the median moves but the test cannot tell
        let base = doc(&["intmix"], 6, |_, r| if r % 2 == 0 { 1.0 } else { 2.0 });
        let new = doc(&["intmix"], 6, |_, r| if r % 3 == 0 { 1.0 } else { 2.0 });
        let rep = compare(&base, &new, &Settings::default()).unwrap();
        assert_eq!(
            rep.metrics[0].verdict,
            Verdict::Unchanged,
            "{:?}",
            rep.metrics[0]
        );
    }

    #[test]
    fn improvements_are_symmetric() {
        let base = doc(&["intmix"], 10, |w, r| 1.5 * jitter(w, r));
        let new = doc(&["intmix"], 10, |w, r| 1.2 * jitter(w, r));
        let rep = compare(&base, &new, &Settings::default()).unwrap();
        assert_eq!(rep.metrics[0].verdict, Verdict::Improvement);
        assert!(rep.passed());
        assert_eq!(rep.improvements().count(), 1);
    }

    #[test]
    fn per_metric_thresholds_and_ignore_from_toml() {
        let cfg = GateConfig::parse(
            Path::new("gate.toml"),
            r#"
threshold = "10%"
alpha = 0.01
[metrics."intmix/container"]
threshold = "40%"
[metrics."*/container"]
threshold = 0.05
[metrics."getpid/*"]
ignore = true
[metrics."nope/kvm"]
threshold = "1%"
"#,
        )
        .unwrap();
        let s = Settings::new(None, None, Some(cfg)).unwrap();
        assert_eq!(s.alpha, 0.01);
        let base = doc(&["intmix", "getpid", "sha256"], 10, jitter);
        let new = doc(&["intmix", "getpid", "sha256"], 10, |w, r| {
            1.25 * jitter(w, r)
        });
        let rep = compare(&base, &new, &s).unwrap();
        let v: Vec<_> = rep
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.threshold, m.verdict))
            .collect();
        assert_eq!(
            v,
            [
                ("intmix/container", 0.40, Verdict::Unchanged),
                ("getpid/container", 0.10, Verdict::Ignored),
                ("sha256/container", 0.05, Verdict::Regression),
            ]
        );
        assert!(rep.notes.iter().any(|n| n.contains("nope/kvm")));
        // the command line wins over the file
        let s = Settings::new(None, Some(0.2), None).unwrap();
        assert_eq!(s.alpha, 0.2);
    }

    #[test]
    fn bad_config_and_thresholds_are_errors() {
        let e = GateConfig::parse(Path::new("g.toml"), "treshold = 1").unwrap_err();
        assert!(e.to_string().starts_with("gate config g.toml: "), "{e}");
        let e = GateConfig::parse(Path::new("g.toml"), "[metrics.intmix]\nthreshold = 0.1");
        assert!(e.unwrap_err().to_string().contains("workload/backend"));
        let e = GateConfig::parse(Path::new("g.toml"), "threshold = \"ten\"").unwrap_err();
        assert!(e.to_string().contains("invalid threshold"), "{e}");
        assert_eq!(Threshold::parse("10%").unwrap(), Threshold(0.1));
        assert_eq!(Threshold::parse("0.25").unwrap(), Threshold(0.25));
        assert!(Threshold::parse("10").is_err());
        assert!(Threshold::parse("-1%").is_err());
        assert_eq!(Threshold(0.1).to_string(), "10%");
        assert!(matches!(
            Settings::new(None, Some(1.5), None),
            Err(GateError::BadAlpha(_))
        ));
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let s = Settings::default();
        let base = doc(&["intmix", "getpid"], 10, |_, _| 1.0);

        let other = doc(&["intmix", "sha256"], 10, |_, _| 1.0);
        let e = compare(&base, &other, &s).unwrap_err();
        assert!(matches!(e, GateError::DifferentWorkloads { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("only in the baseline: getpid/container, getpid/native;"),
            "{msg}"
        );
        assert!(
            msg.contains("only in the current results: sha256/container"),
            "{msg}"
        );

        let mut more = base.clone();
        more.plan.cells[1].args = vec!["iters=5".into()];
        let msg = compare(&base, &more, &s).unwrap_err().to_string();
        assert!(
            msg.contains("only in the current results: intmix/container [iters=5]"),
            "{msg}"
        );

        let mut newer = base.clone();
        newer.schema_version += 1;
        assert!(matches!(
            compare(&base, &newer, &s),
            Err(GateError::SchemaMismatch { .. })
        ));

        let mut no_native = base.clone();
        no_native.plan.cells.retain(|c| c.backend != "native");
        let e = compare(&base, &no_native, &s).unwrap_err();
        assert!(
            matches!(e, GateError::NoNativeControl { side: Side::New }),
            "{e}"
        );

        let mut only_native = base.clone();
        only_native.plan.cells.retain(|c| c.backend == "native");
        let e = compare(&only_native, &only_native, &s).unwrap_err();
        assert!(matches!(e, GateError::NothingToGate), "{e}");

        let short = doc(&["intmix", "getpid"], 3, |_, _| 1.0);
        let e = compare(&short, &short, &s).unwrap_err();
        assert!(matches!(e, GateError::TooFewRounds { .. }), "{e}");
        assert!(e.to_string().contains("--rounds 5"), "{e}");

        let mut failed = base.clone();
        for smp in failed.samples.iter_mut().filter(|x| x.cell == 1) {
            smp.sample.exit = Exit::Signal { signal: 9 };
        }
        let e = compare(&base, &failed, &s).unwrap_err();
        assert!(
            matches!(
                e,
                GateError::NoPairs {
                    side: Side::New,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn permutation_test_exact_and_sampled() {
        // completely separated groups of 5: p = 2 / C(10, 5)
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [6.0, 7.0, 8.0, 9.0, 10.0];
        let p = permutation_p_value(&x, &y, 1);
        assert!((p - 2.0 / 252.0).abs() < 1e-12, "{p}");
        assert_eq!(min_p_value(5, 5), p);
        // identical groups: p = 1
        assert_eq!(permutation_p_value(&x, &x, 1), 1.0);
        // large groups take the sampled path and stay deterministic
        let xs: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let ys: Vec<f64> = (0..30).map(|i| i as f64 + 20.0).collect();
        let p = permutation_p_value(&xs, &ys, 3);
        assert!(p < 0.001, "{p}");
        assert_eq!(p, permutation_p_value(&xs, &ys, 3));
        assert!(min_p_value(3, 3) > 0.05);
        assert!(min_p_value(4, 4) < 0.05);
    }

    #[test]
    fn shift_estimate_and_interval() {
        // n = m = 10 at 95%: the interval is [D(24), D(77)] of the 100 sorted differences
        let counts = mann_whitney_null(10, 10);
        assert_eq!(counts.len(), 101);
        assert_eq!(counts.iter().sum::<f64>(), 184_756.0);
        assert_eq!(mann_whitney_null(2, 2), [1.0, 1.0, 2.0, 1.0, 1.0]);
        let x: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let y: Vec<f64> = (0..10).map(|i| i as f64 + 0.5).collect();
        let d = pairwise_differences(&x, &y);
        assert_eq!(shift_ci(&x, &y, 0.05, 1), (d[23], d[76]));
        assert_eq!(hodges_lehmann(&x, &y), 0.5);
        // an outlier round moves the estimate little
        let mut y2 = y.clone();
        y2[9] = 1000.0;
        assert!((hodges_lehmann(&x, &y2) - 0.5).abs() <= 0.5);
        // too few values for 95%: unbounded
        assert_eq!(
            shift_ci(&[1.0, 2.0], &[3.0, 4.0], 0.05, 1).0,
            f64::NEG_INFINITY
        );
        // large groups take the bootstrap and bracket the estimate
        let xs: Vec<f64> = (0..101).map(|i| (i % 13) as f64).collect();
        let ys: Vec<f64> = xs.iter().map(|v| v + 2.0).collect();
        let (lo, hi) = shift_ci(&xs, &ys, 0.05, 3);
        assert!(lo <= 2.0 && 2.0 <= hi && hi - lo < 4.0, "{lo} {hi}");
    }

    #[test]
    fn baselines_by_name_or_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = baseline_path(dir.path(), "main").unwrap();
        assert_eq!(p, dir.path().join("baselines/main.json"));
        assert!(matches!(
            baseline_path(dir.path(), "../x"),
            Err(GateError::BadBaselineName(_))
        ));
        let e = resolve_baseline(dir.path(), "main").unwrap_err();
        assert!(matches!(e, GateError::MissingBaseline { .. }));
        assert!(e.to_string().contains("--save-baseline main"), "{e}");
        let d = doc(&["intmix"], 5, |_, _| 1.0);
        crate::write_atomic(&p, &d).unwrap();
        assert_eq!(resolve_baseline(dir.path(), "main").unwrap(), p);
        let s = p.display().to_string();
        assert_eq!(resolve_baseline(Path::new("/elsewhere"), &s).unwrap(), p);
        assert!(resolve_baseline(dir.path(), "nope.json").is_err());
    }
}
