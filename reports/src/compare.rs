//! The change between two runs, cell by cell, as the report shows it.
//!
//! Cells are matched by workload, backend and arguments. The change of a cell is the ratio of
//! the new median to the base median; its interval divides the ends of the two 95% confidence
//! intervals crosswise (new low / base high, new high / base low), which is conservative. A
//! change is called faster or slower only when that interval lies wholly beyond
//! [`NOISE`] on one side of 1; otherwise it is reported as within noise.

use vbench_results::{Cell, CellSummary, Document};

/// Changes smaller than this fraction are never called a difference.
pub const NOISE: f64 = 0.02;

/// The two runs and their matched cells.
pub struct Comparison<'a> {
    /// The earlier run.
    pub base: &'a Document,
    /// The later run.
    pub new: &'a Document,
    /// Cells present in both, in the new run's order.
    pub rows: Vec<Change<'a>>,
    /// Cells of the new run without a match (or a summary) in the base, and vice versa.
    pub unmatched: Vec<String>,
}

/// The verdict on one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeVerdict {
    /// Faster beyond the noise threshold.
    Faster,
    /// Slower beyond the noise threshold.
    Slower,
    /// The interval includes a change smaller than the threshold.
    Noise,
}

impl ChangeVerdict {
    /// Lower-case word for tables.
    pub fn word(self) -> &'static str {
        match self {
            ChangeVerdict::Faster => "faster",
            ChangeVerdict::Slower => "SLOWER",
            ChangeVerdict::Noise => "within noise",
        }
    }
}

/// One matched cell.
pub struct Change<'a> {
    /// The new run's cell.
    pub cell: &'a Cell,
    /// The base run's summary.
    pub base: &'a CellSummary,
    /// The new run's summary.
    pub new: &'a CellSummary,
    /// New median / base median.
    pub ratio: f64,
    /// Conservative interval of the ratio.
    pub low: f64,
    /// Conservative interval of the ratio.
    pub high: f64,
    /// What to make of it.
    pub verdict: ChangeVerdict,
}

impl<'a> Comparison<'a> {
    /// Matches the cells of `base` and `new`.
    pub fn new(base: &'a Document, new: &'a Document) -> Self {
        let mut rows = Vec::new();
        let mut unmatched = Vec::new();
        for cell in &new.plan.cells {
            let twin = base.plan.cells.iter().find(|c| c.same_work(cell));
            let (Some(twin), Some(ns)) = (twin, new.summary(cell.id)) else {
                unmatched.push(format!(
                    "{} on {}: only in the new run, or no successful run there",
                    cell.workload, cell.backend
                ));
                continue;
            };
            let Some(bs) = base.summary(twin.id) else {
                unmatched.push(format!(
                    "{} on {}: no successful run in the base run",
                    cell.workload, cell.backend
                ));
                continue;
            };
            if bs.median_ns <= 0.0 || bs.ci_low_ns <= 0.0 {
                unmatched.push(format!(
                    "{} on {}: base median is zero",
                    cell.workload, cell.backend
                ));
                continue;
            }
            let ratio = ns.median_ns / bs.median_ns;
            let low = ns.ci_low_ns / bs.ci_high_ns;
            let high = ns.ci_high_ns / bs.ci_low_ns;
            let verdict = if low > 1.0 + NOISE {
                ChangeVerdict::Slower
            } else if high < 1.0 - NOISE {
                ChangeVerdict::Faster
            } else {
                ChangeVerdict::Noise
            };
            rows.push(Change {
                cell,
                base: bs,
                new: ns,
                ratio,
                low,
                high,
                verdict,
            });
        }
        for cell in &base.plan.cells {
            let present = new.plan.cells.iter().any(|c| c.same_work(cell));
            if !present {
                unmatched.push(format!(
                    "{} on {}: only in the base run",
                    cell.workload, cell.backend
                ));
            }
        }
        Comparison {
            base,
            new,
            rows,
            unmatched,
        }
    }

    /// Backends with at least one matched cell, in the new run's plan order.
    pub fn backends(&self) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for c in &self.rows {
            if !out.contains(&c.cell.backend.as_str()) {
                out.push(&c.cell.backend);
            }
        }
        out
    }

    /// Workloads with at least one matched cell, in order.
    pub fn workloads(&self) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for c in &self.rows {
            if !out.contains(&c.cell.workload.as_str()) {
                out.push(&c.cell.workload);
            }
        }
        out
    }

    /// The matched change of `workload` on `backend`.
    pub fn change(&self, workload: &str, backend: &str) -> Option<&Change<'a>> {
        self.rows
            .iter()
            .find(|c| c.cell.workload == workload && c.cell.backend == backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn a_slowdown_is_found_and_the_rest_is_noise() {
        let (base, new) = (fixture::document(), fixture::newer());
        let cmp = Comparison::new(&base, &new);
        assert!(cmp.unmatched.is_empty(), "{:?}", cmp.unmatched);
        let slow: Vec<_> = cmp
            .rows
            .iter()
            .filter(|c| c.verdict != ChangeVerdict::Noise)
            .map(|c| (c.cell.workload.as_str(), c.cell.backend.as_str(), c.verdict))
            .collect();
        assert_eq!(slow, [("getpid", "container", ChangeVerdict::Slower)]);
        let same = Comparison::new(&base, &base);
        assert!(same.rows.iter().all(|c| c.verdict == ChangeVerdict::Noise));
    }
}
