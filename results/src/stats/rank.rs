//! Rank statistics for comparing two groups of values: the Mann-Whitney permutation test, the
//! Hodges-Lehmann shift estimate and the Moses confidence interval that inverts the same test.
//! The gate ([`crate::compare`]) applies them to the per-round log overhead ratios of two runs.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Enumerate every relabeling when there are at most this many; sample otherwise.
const EXACT_PERMUTATIONS: f64 = 50_000.0;
/// Random relabelings of the Monte Carlo permutation test.
const SAMPLED_PERMUTATIONS: usize = 10_000;

fn binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The smallest two-sided p-value the permutation test can give for group sizes `n` and `m`:
/// the observed labelling and its mirror image (every value of one group below every value of
/// the other, and above) are equally far from the null centre, whatever the sizes, so at best
/// 2 of the `C(n + m, n)` relabelings are as extreme. The sampled test cannot go below
/// `1 / (samples + 1)`.
pub fn min_p_value(n: usize, m: usize) -> f64 {
    let total = binomial(n + m, n);
    if total <= EXACT_PERMUTATIONS {
        (2.0 / total).min(1.0)
    } else {
        1.0 / (SAMPLED_PERMUTATIONS as f64 + 1.0)
    }
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
    crate::stats::median(&d).expect("non-empty")
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
    let mut shifts = Vec::with_capacity(crate::stats::BOOTSTRAP_RESAMPLES);
    for _ in 0..crate::stats::BOOTSTRAP_RESAMPLES {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_smallest_p_value_is_attained_and_counts_both_extremes_for_any_sizes() {
        // 2 and 5 completely separated values: 2 of the C(7, 2) = 21 relabelings are as extreme
        let (x, y) = ([1.0, 2.0], [3.0, 4.0, 5.0, 6.0, 7.0]);
        let p = permutation_p_value(&x, &y, 1);
        assert!((p - 2.0 / 21.0).abs() < 1e-12, "{p}");
        assert_eq!(min_p_value(2, 5), p);
        assert_eq!(min_p_value(5, 2), permutation_p_value(&y, &x, 1));
        // the reverse order is the other extreme, just as likely
        assert_eq!(
            permutation_p_value(&x, &y, 1),
            permutation_p_value(&y, &x, 1)
        );
        for (n, m) in [(1, 1), (1, 4), (2, 2), (3, 4), (2, 9)] {
            let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let y: Vec<f64> = (0..m).map(|i| (100 + i) as f64).collect();
            assert_eq!(min_p_value(n, m), permutation_p_value(&x, &y, 1), "{n} {m}");
        }
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
}
