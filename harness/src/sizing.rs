//! Sizing, the way hyperfine sizes its runs: before the rounds, each catalogue workload runs
//! once per backend at its quick size, and its `iters` is then chosen so that one sample takes
//! about a target time (`--sample-ms`) on its *slowest* backend, never more than the catalogue's
//! default. Without it the syscall-bound workloads on kvm (one VM exit per call, ~40-170 us on
//! nested KVM) took minutes per sample and most of `vbench run --backend all`.
//!
//! All backends of a workload get the same size, not each cell its own: the checksums prove that
//! every level computed the same thing, which needs the same arguments on every level. The chosen
//! `iters` is in each cell's arguments and in each result line, so comparisons stay per
//! operation.

use crate::measure::run_once;
use crate::plan::RunPlan;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vbench_backends::{Backend, Invocation, Stdio};
use vbench_workloads::ParamKind;

/// The sample time aimed at on the slowest backend of each workload.
pub const DEFAULT_SAMPLE_MS: u64 = 200;
/// With `--quick` the target is this fraction of `--sample-ms` (200 ms: 50 ms, above what the
/// quick sizes take natively, so only levels far slower than native are cut down), and the
/// calibration runs at a tenth of the quick size.
pub const QUICK_DIVISOR: u64 = 4;

/// What sizing did to one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Resized {
    /// The workload.
    pub workload: String,
    /// Its iterations before and after.
    pub from: u64,
    /// After.
    pub to: u64,
    /// The backend that set the size and its time per operation, ns.
    pub slowest: (String, f64),
}

/// The iterations that make a sample of `target_ns` at `ns_per_op`, within `min..=default`.
pub fn choose_iters(ns_per_op: f64, target_ns: f64, min: u64, default: u64) -> u64 {
    if !(ns_per_op.is_finite() && ns_per_op > 0.0) {
        return default;
    }
    let want = (target_ns / ns_per_op).floor();
    if want >= default as f64 {
        default
    } else {
        round_down_125(want as u64).clamp(min.max(1), default)
    }
}

/// `n` rounded down to 1, 2 or 5 times a power of ten: the calibration run is one noisy
/// sample, and a coarse size makes two runs of the same build choose the same one.
fn round_down_125(n: u64) -> u64 {
    let mut p = 1u64;
    while p.saturating_mul(10) <= n {
        p *= 10;
    }
    [5, 2, 1]
        .into_iter()
        .map(|m| m * p)
        .find(|v| *v <= n)
        .unwrap_or(n)
}

/// The value of `key=` in `args`.
fn arg_value(args: &[String], key: &str) -> Option<u64> {
    args.iter()
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// `args` with `key=value`.
fn with_arg(args: &[String], key: &str, value: u64) -> Vec<String> {
    args.iter()
        .map(
            |a| match a.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
                Some(_) => format!("{key}={value}"),
                None => a.clone(),
            },
        )
        .collect()
}

/// Sizes every catalogue workload of `plan` for `target` per sample on its slowest backend;
/// returns what changed. A workload whose calibration run fails keeps its size (the rounds
/// then report the failure). Stops early when `cancel` is set.
#[allow(clippy::too_many_arguments)] // the run's settings a calibration run shares
pub fn size(
    plan: &mut RunPlan,
    backends: &[Box<dyn Backend>],
    target: Duration,
    quick_run: bool,
    timeout: Duration,
    cpu: Option<usize>,
    abi: vbench_backends::AbiPolicy,
    cancel: &Arc<AtomicBool>,
) -> Vec<Resized> {
    let mut workloads: Vec<String> = Vec::new();
    for cp in plan.cells.iter().filter(|c| c.expects_report) {
        if !workloads.contains(&cp.cell.workload) {
            workloads.push(cp.cell.workload.clone());
        }
    }
    let mut changed = Vec::new();
    for w in workloads {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let Some(task) = vbench_workloads::find(&w) else {
            continue;
        };
        let Some(ParamKind::Int {
            default,
            quick,
            min,
            ..
        }) = task.param("iters").map(|p| p.kind)
        else {
            continue;
        };
        let cells: Vec<usize> = (0..plan.cells.len())
            .filter(|&i| plan.cells[i].cell.workload == w)
            .collect();
        let current = arg_value(&plan.cells[cells[0]].cell.args, "iters").unwrap_or(default);
        let calibration = if quick_run {
            (quick / 10).max(min).max(1)
        } else {
            quick
        };
        if calibration >= current {
            continue; // already at (or below) the calibration size
        }
        let mut slowest: Option<(String, f64)> = None;
        for &i in &cells {
            let cp = &plan.cells[i];
            let args = with_arg(&cp.cell.args, "iters", calibration);
            let inv = Invocation {
                program: cp.program.clone(),
                args: args.iter().map(OsString::from).collect(),
                timeout: Some(timeout),
                stdio: Stdio::Capture,
                cpu,
                cancel: Some(cancel.clone()),
                chatty: false,
                abi,
            };
            let per_op = run_once(backends[cp.backend].as_ref(), &inv, true)
                .ok()
                .and_then(|s| s.report)
                .filter(|r| r.iters > 0)
                .map(|r| r.ns as f64 / r.iters as f64);
            match per_op {
                Some(ns) if slowest.as_ref().is_none_or(|(_, m)| ns > *m) => {
                    slowest = Some((cp.cell.backend.clone(), ns));
                }
                Some(_) => {}
                None => {
                    slowest = None; // a failed calibration: keep the size
                    break;
                }
            }
        }
        let Some((backend, ns)) = slowest else {
            continue;
        };
        let to = choose_iters(ns, target.as_nanos() as f64, min, current);
        if to < current {
            for &i in &cells {
                let cp = &mut plan.cells[i];
                cp.cell.args = with_arg(&cp.cell.args, "iters", to);
                cp.argv = cp.cell.args.iter().map(OsString::from).collect();
            }
            changed.push(Resized {
                workload: w,
                from: current,
                to,
                slowest: (backend, ns),
            });
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_fill_the_target_within_the_catalogue_limits() {
        // 170 us per call on the slowest backend, 200 ms wanted: 1176 calls, rounded to 1000
        assert_eq!(choose_iters(170_000.0, 200e6, 1, 500_000), 1000);
        // 43 us: 4651, rounded to 2000; 320 us: 625, to 500
        assert_eq!(choose_iters(43_000.0, 200e6, 1, 750_000), 2000);
        assert_eq!(choose_iters(320_000.0, 200e6, 1, 30_000), 500);
        assert_eq!(round_down_125(7), 5);
        assert_eq!(round_down_125(10), 10);
        assert_eq!(round_down_125(0), 0);
        // fast enough at the default: the default stays
        assert_eq!(choose_iters(100.0, 200e6, 1, 500_000), 500_000);
        // never below the task's minimum, never 0
        assert_eq!(choose_iters(1e12, 200e6, 10, 500_000), 10);
        assert_eq!(choose_iters(1e12, 200e6, 0, 500_000), 1);
        // nonsense measurements keep the default
        assert_eq!(choose_iters(0.0, 200e6, 1, 7), 7);
        assert_eq!(choose_iters(f64::NAN, 200e6, 1, 7), 7);
    }

    #[test]
    fn arguments_are_rewritten_in_place() {
        let args: Vec<String> = ["getpid", "size=1", "iters=500000"]
            .map(String::from)
            .to_vec();
        assert_eq!(arg_value(&args, "iters"), Some(500_000));
        assert_eq!(arg_value(&args, "size"), Some(1));
        assert_eq!(arg_value(&args, "nope"), None);
        assert_eq!(
            with_arg(&args, "iters", 42),
            ["getpid", "size=1", "iters=42"].map(String::from).to_vec()
        );
    }
}
