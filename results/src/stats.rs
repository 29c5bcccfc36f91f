//! Robust statistics: median, MAD, percentile-bootstrap confidence intervals, the rank tests of
//! the gate ([`rank`]), and the summaries of a run (per-cell statistics, overhead ratios paired
//! by round, checksum checks).

pub mod rank;

use crate::schema::{Cell, CellSummary, Failure, FailureKind, Ratio, SampleRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Bootstrap resamples used for every interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Confidence level of every interval.
pub const CONFIDENCE: f64 = 0.95;
/// Scale that makes the MAD a consistent estimator of the standard deviation for normal data.
pub const MAD_SCALE: f64 = 1.4826;

/// The median of `xs` (NaN-free), or `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    Some(median_in_place(&mut v))
}

/// The median of a non-empty slice, reordering it (linear time: the bootstrap's hot path).
fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    let (lower, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    if n % 2 == 1 {
        mid
    } else {
        let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (below + mid) / 2.0
    }
}

/// The linearly interpolated quantile of `xs` (NaN-free) at `q` in [0, 1] (clamped): the value
/// at position `q * (n - 1)` of the sorted values, interpolated between its neighbours (R's and
/// NumPy's default); `quantile(xs, 0.5)` is the [`median`]. `None` when empty.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(s[lo] + (s[hi] - s[lo]) * (pos - lo as f64))
}

/// The (unscaled) median absolute deviation of `xs` around its median.
pub fn mad(xs: &[f64]) -> Option<f64> {
    let m = median(xs)?;
    let dev: Vec<f64> = xs.iter().map(|x| (x - m).abs()).collect();
    median(&dev)
}

/// Number of values further than 3 scaled MADs from the median.
pub fn outliers(xs: &[f64]) -> usize {
    let (Some(m), Some(d)) = (median(xs), mad(xs)) else {
        return 0;
    };
    let limit = 3.0 * MAD_SCALE * d;
    if limit == 0.0 {
        return 0;
    }
    xs.iter().filter(|x| (*x - m).abs() > limit).count()
}

/// Percentile-bootstrap confidence interval (at [`CONFIDENCE`]) of the median of `xs`.
/// Deterministic for a given `seed`. A single value gives a zero-width interval.
pub fn bootstrap_median_ci(xs: &[f64], seed: u64) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    if xs.len() == 1 {
        return Some((xs[0], xs[0]));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut buf = vec![0.0; xs.len()];
    let mut meds = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        for b in buf.iter_mut() {
            *b = xs[rng.gen_range(0..xs.len())];
        }
        meds.push(median_in_place(&mut buf));
    }
    meds.sort_by(f64::total_cmp);
    let alpha = (1.0 - CONFIDENCE) / 2.0;
    let idx = |q: f64| ((q * (meds.len() - 1) as f64).round() as usize).min(meds.len() - 1);
    Some((meds[idx(alpha)], meds[idx(1.0 - alpha)]))
}

/// A ratio's median and bootstrap interval from paired values.
pub fn ratio(pairs: &[(f64, f64)], seed: u64) -> Option<Ratio> {
    let ratios: Vec<f64> = pairs
        .iter()
        .filter(|(_, base)| *base > 0.0)
        .map(|(x, base)| x / base)
        .collect();
    let median = median(&ratios)?;
    let (ci_low, ci_high) = bootstrap_median_ci(&ratios, seed)?;
    Some(Ratio {
        median,
        ci_low,
        ci_high,
        pairs: ratios.len(),
    })
}

/// Builds one summary per cell with successful samples, and the checksum failures: a cell
/// whose rounds disagree, or whose checksum differs from the native cell of the same workload.
pub fn summarize(
    cells: &[Cell],
    samples: &[SampleRecord],
    seed: u64,
) -> (Vec<CellSummary>, Vec<Failure>) {
    // cell id -> round -> sample (only successful runs count)
    let mut ok: BTreeMap<usize, BTreeMap<u32, &SampleRecord>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.sample.succeeded()) {
        ok.entry(s.cell).or_default().insert(s.round, s);
    }
    let native_of = |cell: &Cell| {
        cells
            .iter()
            .find(|c| c.backend == "native" && c.workload == cell.workload && c.args == cell.args)
    };
    let checksum_of = |id: usize| -> (Option<String>, bool) {
        let Some(rounds) = ok.get(&id) else {
            return (None, true);
        };
        let mut sums = rounds
            .values()
            .filter_map(|s| s.sample.checksum().map(str::to_string));
        let first = sums.next();
        let consistent = sums.all(|c| Some(&c) == first.as_ref());
        (if consistent { first } else { None }, consistent)
    };

    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    for cell in cells {
        let Some(rounds) = ok.get(&cell.id) else {
            continue;
        };
        let values: Vec<f64> = rounds.values().map(|s| s.sample.metric_ns()).collect();
        let walls: Vec<f64> = rounds.values().map(|s| s.sample.wall_ns as f64).collect();
        let seed = seed ^ (cell.id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let median_ns = median(&values).expect("non-empty");
        let (ci_low_ns, ci_high_ns) = bootstrap_median_ci(&values, seed).expect("non-empty");
        let (checksum, consistent) = checksum_of(cell.id);
        if !consistent {
            failures.push(Failure {
                cell: cell.id,
                round: None,
                kind: FailureKind::ChecksumMismatch,
                message: format!(
                    "{} on {}: checksums differ between rounds",
                    cell.workload, cell.backend
                ),
            });
        }
        let native = native_of(cell).filter(|n| n.id != cell.id);
        let mut matches_native = None;
        let mut overhead = None;
        if let Some(native) = native {
            let (native_sum, _) = checksum_of(native.id);
            if let (Some(mine), Some(theirs)) = (&checksum, &native_sum) {
                matches_native = Some(mine == theirs);
                if mine != theirs {
                    failures.push(Failure {
                        cell: cell.id,
                        round: None,
                        kind: FailureKind::ChecksumMismatch,
                        message: format!(
                            "{} on {}: checksum {mine} differs from native's {theirs}",
                            cell.workload, cell.backend
                        ),
                    });
                }
            }
            if let Some(base) = ok.get(&native.id) {
                let pairs: Vec<(f64, f64)> = rounds
                    .iter()
                    .filter_map(|(r, s)| {
                        base.get(r)
                            .map(|b| (s.sample.metric_ns(), b.sample.metric_ns()))
                    })
                    .collect();
                overhead = ratio(&pairs, seed.rotate_left(17));
            }
        }
        summaries.push(CellSummary {
            cell: cell.id,
            n: values.len(),
            metric: if rounds.values().all(|s| s.sample.report.is_some()) {
                "loop_ns_per_op".into()
            } else {
                "wall_ns".into()
            },
            median_ns,
            mad_ns: mad(&values).expect("non-empty"),
            ci_low_ns,
            ci_high_ns,
            outliers: outliers(&values),
            wall_median_ns: median(&walls).expect("non-empty"),
            checksum,
            checksum_matches_native: matches_native,
            checksum_consistent: consistent,
            overhead,
        });
    }
    (summaries, failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Sample, WorkloadReport};

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(mad(&[1.0, 2.0, 3.0, 4.0, 100.0]), Some(1.0));
        assert_eq!(outliers(&[1.0, 2.0, 3.0, 4.0, 100.0]), 1);
        assert_eq!(outliers(&[5.0, 5.0, 5.0]), 0);
    }

    #[test]
    fn quantiles_interpolate_between_neighbours() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[0.0, 10.0], 0.25), Some(2.5));
        let xs = [7.0, 1.0, 3.0, 5.0];
        assert_eq!(quantile(&xs, 0.0), Some(1.0));
        assert_eq!(quantile(&xs, 1.0), Some(7.0));
        assert_eq!(quantile(&xs, 0.75), Some(5.5));
        // out-of-range q is clamped, a single value is every quantile
        assert_eq!(quantile(&xs, -1.0), Some(1.0));
        assert_eq!(quantile(&xs, 2.0), Some(7.0));
        assert_eq!(quantile(&[4.0], 0.3), Some(4.0));
        // the middle quantile is the median, for odd and even counts
        for v in [&[3.0, 1.0, 2.0][..], &[4.0, 1.0, 2.0, 3.0], &[9.0, 2.0]] {
            assert_eq!(quantile(v, 0.5), median(v), "{v:?}");
        }
    }

    #[test]
    fn bootstrap_interval_brackets_the_median_and_is_deterministic() {
        let xs: Vec<f64> = (0..50).map(|i| 100.0 + (i % 7) as f64).collect();
        let (lo, hi) = bootstrap_median_ci(&xs, 7).unwrap();
        let m = median(&xs).unwrap();
        assert!(lo <= m && m <= hi, "{lo} <= {m} <= {hi}");
        assert!(lo >= 100.0 && hi <= 106.0);
        assert_eq!(bootstrap_median_ci(&xs, 7), Some((lo, hi)));
        assert_eq!(bootstrap_median_ci(&[5.0], 1), Some((5.0, 5.0)));
    }

    fn cell(id: usize, backend: &str) -> Cell {
        Cell {
            id,
            workload: "w".into(),
            class: "cpu".into(),
            backend: backend.into(),
            args: vec![],
            op: "call".into(),
        }
    }

    fn rec(cell: usize, round: u32, ns: u64, sum: &str) -> SampleRecord {
        SampleRecord {
            cell,
            round,
            sample: Sample {
                wall_ns: ns * 10,
                report: Some(WorkloadReport {
                    task: "w".into(),
                    params: vec![],
                    iters: 10,
                    ns,
                    checksum: sum.into(),
                }),
                ..Sample::default()
            },
        }
    }

    #[test]
    fn overhead_is_paired_by_round_and_checksums_are_checked() {
        let cells = vec![cell(0, "native"), cell(1, "bt"), cell(2, "kvm")];
        let mut samples = Vec::new();
        for r in 0..5 {
            // drift that hits both sides alike in a round cancels in the ratio
            let drift = 1000 * (r as u64 + 1);
            samples.push(rec(0, r, drift, "aa"));
            samples.push(rec(1, r, 2 * drift, "aa"));
            samples.push(rec(2, r, drift, "bb"));
        }
        let (sums, fails) = summarize(&cells, &samples, 1);
        assert_eq!(sums.len(), 3);
        let bt = &sums[1];
        let o = bt.overhead.unwrap();
        assert_eq!((o.median, o.ci_low, o.ci_high, o.pairs), (2.0, 2.0, 2.0, 5));
        assert_eq!(bt.checksum_matches_native, Some(true));
        assert_eq!(sums[0].overhead, None);
        assert_eq!(sums[2].checksum_matches_native, Some(false));
        assert_eq!(fails.len(), 1);
        assert_eq!(fails[0].cell, 2);
        assert_eq!(fails[0].kind, FailureKind::ChecksumMismatch);
    }

    #[test]
    fn failed_runs_are_left_out_and_inconsistent_rounds_flagged() {
        let cells = vec![cell(0, "native")];
        let mut bad = rec(0, 2, 5, "zz");
        bad.sample.exit = crate::schema::Exit::Signal { signal: 9 };
        let samples = vec![rec(0, 0, 10, "aa"), rec(0, 1, 12, "ab"), bad];
        let (sums, fails) = summarize(&cells, &samples, 1);
        assert_eq!(sums[0].n, 2);
        assert!(!sums[0].checksum_consistent);
        assert_eq!(sums[0].checksum, None);
        assert_eq!(fails.len(), 1);
    }
}
