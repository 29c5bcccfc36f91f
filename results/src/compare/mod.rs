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
//! too few rounds for the test ever to be significant or for the interval to be bounded, a
//! configuration entry that matches no metric) are typed errors ([`GateError`]), never a pass.
//!
//! The parts: [`config`] (`gate.toml`, thresholds, [`Settings`]), [`baseline`] (named baselines),
//! [`GateError`], this judgement, and the rank statistics in [`crate::stats::rank`].

pub mod baseline;
pub mod config;
mod error;
#[cfg(test)]
mod testdoc;

pub use baseline::{baseline_path, resolve_baseline, validate_baseline_name, BASELINES_SUBDIR};
pub use config::{
    pattern_matches, GateConfig, MetricConfig, Settings, Threshold, DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
};
pub use error::{GateError, Side, TooFew};

use crate::schema::{Cell, Document, RunStatus};
use crate::stats::{self, rank};
use std::collections::{BTreeMap, BTreeSet};

/// What the gate decided for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateVerdict {
    /// Significantly slower, beyond the noise threshold.
    Regression,
    /// Significantly faster, beyond the noise threshold.
    Improvement,
    /// Not significant, or not wholly beyond the threshold.
    Unchanged,
    /// Reported but not gated (configuration says `ignore = true`).
    Ignored,
}

impl GateVerdict {
    /// A lower-case word for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            GateVerdict::Regression => "regression",
            GateVerdict::Improvement => "improvement",
            GateVerdict::Unchanged => "unchanged",
            GateVerdict::Ignored => "ignored",
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
    pub verdict: GateVerdict,
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
            .filter(|m| m.verdict == GateVerdict::Regression)
    }

    /// The metrics that improved.
    pub fn improvements(&self) -> impl Iterator<Item = &MetricChange> {
        self.metrics
            .iter()
            .filter(|m| m.verdict == GateVerdict::Improvement)
    }

    /// Whether the gate passes (no regression).
    pub fn passed(&self) -> bool {
        self.regressions().next().is_none()
    }
}

type Key = (String, String, Vec<String>);

/// A cell's identity across runs: the sizes `vbench run` chose (`iters=`) aside, as the
/// compared metrics are per operation.
fn key(c: &Cell) -> Key {
    (
        c.workload.clone(),
        c.backend.clone(),
        c.work_args().into_iter().map(String::from).collect(),
    )
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

fn median_of(v: &[f64]) -> f64 {
    stats::median(v).expect("non-empty")
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
    check_comparable(base, new)?;
    let gated = gated_cells(base)?;
    check_config_entries(&gated, settings)?;
    let mut metrics = Vec::new();
    for (name, cell) in gated {
        let new_cell = new
            .plan
            .cells
            .iter()
            .find(|c| key(c) == key(cell))
            .expect("same key sets");
        metrics.push(judge(base, new, name, cell, new_cell, settings)?);
    }
    let notes = notes(base, new, settings, &metrics);
    Ok(GateReport {
        base: RunInfo::of(base),
        new: RunInfo::of(new),
        alpha: settings.alpha,
        threshold: settings.threshold,
        metrics,
        notes,
    })
}

/// Whether the two documents can be gated at all: the same schema, a native control in each,
/// and the same cells.
fn check_comparable(base: &Document, new: &Document) -> Result<(), GateError> {
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
    Ok(())
}

/// The baseline's non-native cells with their metric names: `workload/backend`, with the
/// arguments joining in only where that name is ambiguous.
fn gated_cells(base: &Document) -> Result<Vec<(String, &Cell)>, GateError> {
    let gated: Vec<&Cell> = base
        .plan
        .cells
        .iter()
        .filter(|c| c.backend != "native")
        .collect();
    if gated.is_empty() {
        return Err(GateError::NothingToGate);
    }
    let mut name_count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for c in &gated {
        *name_count
            .entry((c.workload.as_str(), c.backend.as_str()))
            .or_default() += 1;
    }
    Ok(gated
        .into_iter()
        .map(|cell| {
            let name = if name_count[&(cell.workload.as_str(), cell.backend.as_str())] > 1 {
                describe(&key(cell))
            } else {
                format!("{}/{}", cell.workload, cell.backend)
            };
            (name, cell)
        })
        .collect())
}

/// Every `[metrics."PATTERN"]` entry must match a gated metric: a typo must not silently
/// disable a threshold.
fn check_config_entries(gated: &[(String, &Cell)], settings: &Settings) -> Result<(), GateError> {
    let unmatched = settings.metrics.keys().find(|pattern| {
        !gated
            .iter()
            .any(|(_, c)| pattern_matches(pattern, &c.workload, &c.backend))
    });
    match unmatched {
        Some(pattern) => Err(GateError::UnmatchedConfig {
            pattern: pattern.clone(),
            metrics: gated.iter().map(|(name, _)| name.clone()).collect(),
        }),
        None => Ok(()),
    }
}

/// Whether a metric with these rounds can be judged at `alpha`: the permutation test must be
/// able to reach significance (`min_p < alpha`) and the interval of the shift of the log ratios
/// (`log_interval`, once known) must be bounded, also as a relative change.
fn judgeable(min_p: f64, alpha: f64, log_interval: Option<(f64, f64)>) -> Result<(), TooFew> {
    if min_p >= alpha {
        return Err(TooFew::NeverSignificant { min_p, alpha });
    }
    if let Some((lo, hi)) = log_interval {
        let (low, high) = (lo.exp_m1(), hi.exp_m1());
        if ![lo, hi, low, high].iter().all(|v| v.is_finite()) {
            return Err(TooFew::Unbounded {
                level: 1.0 - alpha,
                low,
                high,
            });
        }
    }
    Ok(())
}

/// Judges one metric: the baseline's `cell` against the current results' `new_cell`.
fn judge(
    base: &Document,
    new: &Document,
    name: String,
    cell: &Cell,
    new_cell: &Cell,
    settings: &Settings,
) -> Result<MetricChange, GateError> {
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
    let min_p = rank::min_p_value(rb.len(), rn.len());
    let too_few = |why| GateError::TooFewRounds {
        metric: name.clone(),
        base_n: rb.len(),
        new_n: rn.len(),
        why,
    };
    judgeable(min_p, settings.alpha, None).map_err(too_few)?;
    let (x, y): (Vec<f64>, Vec<f64>) = (
        rb.iter().map(|r| r.ln()).collect(),
        rn.iter().map(|r| r.ln()).collect(),
    );
    let seed = seed_of(base, new, &name);
    let d = rank::hodges_lehmann(&x, &y);
    let p_value = rank::permutation_p_value(&x, &y, seed);
    let (lo, hi) = rank::shift_ci(&x, &y, settings.alpha, seed.rotate_left(7));
    judgeable(min_p, settings.alpha, Some((lo, hi))).map_err(too_few)?;
    let (ci_low, ci_high) = (lo.exp_m1(), hi.exp_m1());
    let config = settings.metric(&cell.workload, &cell.backend);
    let threshold = config
        .and_then(|(_, m)| m.threshold)
        .map_or(settings.threshold, |t| t.0);
    let significant = p_value < settings.alpha;
    let verdict = if config.is_some_and(|(_, m)| m.ignore) {
        GateVerdict::Ignored
    } else if significant && ci_low > threshold {
        GateVerdict::Regression
    } else if significant && ci_high < -threshold {
        GateVerdict::Improvement
    } else {
        GateVerdict::Unchanged
    };
    Ok(MetricChange {
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
    })
}

/// What a reader of the judgement should know: unused configuration entries, incomplete runs,
/// failures, different machines.
fn notes(
    base: &Document,
    new: &Document,
    settings: &Settings,
    metrics: &[MetricChange],
) -> Vec<String> {
    let mut notes = Vec::new();
    let used: BTreeSet<&str> = metrics
        .iter()
        .filter_map(|m| m.config_key.as_deref())
        .collect();
    for k in settings
        .metrics
        .keys()
        .filter(|k| !used.contains(k.as_str()))
    {
        notes.push(format!(
            "config entry {k:?} is overridden by a more specific entry for every metric it matches"
        ));
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
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::testdoc::{doc, jitter};
    use crate::schema::Exit;
    use std::path::Path;

    #[test]
    fn unchanged_runs_pass() {
        let base = doc(&["intmix", "getpid"], 10, |w, r| 1.2 * jitter(w, r));
        let new = doc(&["intmix", "getpid"], 10, |w, r| 1.2 * jitter(w, r + 3));
        let rep = compare(&base, &new, &Settings::default()).unwrap();
        assert_eq!(rep.metrics.len(), 2);
        assert!(rep.passed());
        assert!(rep
            .metrics
            .iter()
            .all(|m| m.verdict == GateVerdict::Unchanged));
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
        assert_eq!(rep.metrics[1].verdict, GateVerdict::Unchanged);
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
        assert_eq!(m.verdict, GateVerdict::Unchanged);
        // with a 2% threshold it is one
        let s = Settings::new(Some(Threshold::parse("2%").unwrap()), None, None).unwrap();
        assert_eq!(
            compare(&base, &new, &s).unwrap().metrics[0].verdict,
            GateVerdict::Regression
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
            GateVerdict::Unchanged,
            "{:?}",
            rep.metrics[0]
        );
    }

    #[test]
    fn improvements_are_symmetric() {
        let base = doc(&["intmix"], 10, |w, r| 1.5 * jitter(w, r));
        let new = doc(&["intmix"], 10, |w, r| 1.2 * jitter(w, r));
        let rep = compare(&base, &new, &Settings::default()).unwrap();
        assert_eq!(rep.metrics[0].verdict, GateVerdict::Improvement);
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
[metrics."intmix/*"]
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
                ("intmix/container", 0.40, GateVerdict::Unchanged),
                ("getpid/container", 0.10, GateVerdict::Ignored),
                ("sha256/container", 0.05, GateVerdict::Regression),
            ]
        );
        // a pattern that matches, but only where a more specific entry wins, is pointed out
        assert!(
            rep.notes
                .iter()
                .any(|n| n.contains("\"intmix/*\" is overridden by a more specific entry")),
            "{:?}",
            rep.notes
        );
        // the command line wins over the file
        let s = Settings::new(None, Some(0.2), None).unwrap();
        assert_eq!(s.alpha, 0.2);
    }

    #[test]
    fn a_config_entry_that_matches_no_metric_is_an_error_naming_it() {
        let base = doc(&["intmix", "getpid"], 10, jitter);
        let config = |text: &str| {
            let cfg = GateConfig::parse(Path::new("gate.toml"), text).unwrap();
            Settings::new(None, None, Some(cfg)).unwrap()
        };
        // a typo, a backend that did not run, a workload that did not run
        for typo in ["intmxi/container", "*/kvm", "sha256/*", "intmix/native"] {
            let s = config(&format!("[metrics.\"{typo}\"]\nthreshold = \"50%\"\n"));
            let e = compare(&base, &base, &s).unwrap_err();
            assert!(matches!(e, GateError::UnmatchedConfig { .. }), "{e}");
            assert_eq!(
                e.to_string(),
                format!(
                    "gate config entry [metrics.\"{typo}\"] matches no metric of the compared runs; \
                     their metrics are intmix/container, getpid/container"
                )
            );
        }
        // patterns that match something are fine
        let s = config(
            "[metrics.\"*/container\"]\nignore = true\n[metrics.\"getpid/*\"]\nthreshold = 0.2\n",
        );
        assert!(compare(&base, &base, &s).unwrap().passed());
    }

    #[test]
    fn two_rounds_on_either_side_cannot_be_judged() {
        // 2 rounds against 5: the test can never reach p < 0.05 (at best 2/21), and the 95%
        // interval is unbounded; this used to PASS with an interval of [-100%, +inf%]
        let s = Settings::default();
        let five = doc(&["intmix"], 5, jitter);
        let two = doc(&["intmix"], 2, |w, r| 2.0 * jitter(w, r));
        for (base, new) in [(&five, &two), (&two, &five)] {
            let e = compare(base, new, &s).unwrap_err();
            assert!(
                matches!(
                    e,
                    GateError::TooFewRounds {
                        why: TooFew::NeverSignificant { .. },
                        ..
                    }
                ),
                "{e}"
            );
            assert!(
                e.to_string()
                    .starts_with("intmix/container: cannot judge: too few rounds (baseline "),
                "{e}"
            );
        }
    }

    #[test]
    fn every_judgement_has_a_bounded_interval_or_is_refused() {
        for alpha in [0.05, 0.01, 0.2] {
            let s = Settings::new(None, Some(alpha), None).unwrap();
            for n in 1..=9 {
                for m in [1, 2, 3, 4, 5, 7, 10] {
                    let base = doc(&["intmix"], n, jitter);
                    let new = doc(&["intmix"], m, |w, r| 1.5 * jitter(w, r));
                    match compare(&base, &new, &s) {
                        Ok(rep) => {
                            let c = &rep.metrics[0];
                            assert!(
                                c.ci_low.is_finite() && c.ci_high.is_finite() && c.ci_low > -1.0,
                                "{n} vs {m} at {alpha}: {c:?}"
                            );
                            // a clear 50% slowdown is caught whenever it can be judged
                            assert_eq!(c.verdict, GateVerdict::Regression, "{n} vs {m}");
                        }
                        Err(GateError::TooFewRounds { .. }) => {
                            assert!(rank::min_p_value(n as usize, m as usize) >= alpha)
                        }
                        Err(e) => panic!("{n} vs {m}: {e}"),
                    }
                }
            }
        }
        // 2 rounds against 10 can be judged: at best p = 2/66
        let base = doc(&["intmix"], 10, jitter);
        let new = doc(&["intmix"], 2, |w, r| 1.5 * jitter(w, r));
        let rep = compare(&base, &new, &Settings::default()).unwrap();
        assert_eq!(rep.metrics[0].verdict, GateVerdict::Regression);
    }

    #[test]
    fn an_unbounded_interval_is_never_judged() {
        assert_eq!(judgeable(0.01, 0.05, Some((-0.1, 0.2))), Ok(()));
        let why = judgeable(0.01, 0.05, Some((f64::NEG_INFINITY, f64::INFINITY))).unwrap_err();
        assert_eq!(
            why.to_string(),
            "the 95% interval of the change, [-100.0%, +inf%], is unbounded"
        );
        assert!(judgeable(0.01, 0.05, Some((0.0, 800.0))).is_err());
        assert!(judgeable(0.01, 0.05, Some((f64::NAN, 0.0))).is_err());
        let why = judgeable(0.1, 0.05, None).unwrap_err();
        assert_eq!(
            why.to_string(),
            "the smallest possible p-value is 0.100, not below alpha 0.05"
        );
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

        // other work (a different size= of buffer) is another cell ...
        let mut more = base.clone();
        more.plan.cells[1].args = vec!["size=5".into(), "iters=1000".into()];
        let msg = compare(&base, &more, &s).unwrap_err().to_string();
        assert!(
            msg.contains("only in the current results: intmix/container [size=5]"),
            "{msg}"
        );
        // ... another number of operations is the same cell: the metric is per operation
        let mut resized = base.clone();
        for c in &mut resized.plan.cells {
            c.args = vec!["iters=77".into()];
        }
        assert!(compare(&base, &resized, &s).is_ok());

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
}
