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
