//! Why two documents cannot be gated: every case is bad input (exit status 2 in `vbench gate`).

use crate::store::ResultsError;
use std::fmt;
use std::path::PathBuf;

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
    /// Too few rounds to judge: the test could never be significant, or the interval of the
    /// change is unbounded. Never a pass.
    #[error("{metric}: cannot judge: too few rounds (baseline {base_n}, current {new_n} paired rounds: {why}); record both runs with --rounds 5 or more")]
    TooFewRounds {
        /// The metric.
        metric: String,
        /// Paired rounds of the baseline.
        base_n: usize,
        /// Paired rounds of the current results.
        new_n: usize,
        /// What these counts cannot give.
        why: TooFew,
    },
    /// A `[metrics."PATTERN"]` entry of the configuration that matches no gated metric (a typo
    /// would otherwise silently disable a threshold).
    #[error("gate config entry [metrics.{pattern:?}] matches no metric of the compared runs; their metrics are {}", .metrics.join(", "))]
    UnmatchedConfig {
        /// The entry's `workload/backend` pattern.
        pattern: String,
        /// The gated metrics, `workload/backend`.
        metrics: Vec<String>,
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

/// Why a metric's rounds are too few to judge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TooFew {
    /// The smallest p-value the permutation test can give is not below alpha.
    NeverSignificant {
        /// The smallest p-value the permutation test can give with these counts.
        min_p: f64,
        /// The significance level asked for.
        alpha: f64,
    },
    /// The confidence interval of the change is unbounded (or not finite).
    Unbounded {
        /// Confidence level of the interval, as a fraction.
        level: f64,
        /// Low end of the relative change.
        low: f64,
        /// High end.
        high: f64,
    },
}

impl fmt::Display for TooFew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TooFew::NeverSignificant { min_p, alpha } => write!(
                f,
                "the smallest possible p-value is {min_p:.3}, not below alpha {alpha}"
            ),
            TooFew::Unbounded { level, low, high } => write!(
                f,
                "the {:.0}% interval of the change, [{:+.1}%, {:+.1}%], is unbounded",
                level * 100.0,
                low * 100.0,
                high * 100.0
            ),
        }
    }
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
