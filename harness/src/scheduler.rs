//! Warm-up, then interleaved rounds: every cell runs once per round, in a freshly shuffled
//! order, so drift of the machine hits every backend alike. The results file is rewritten
//! atomically at the start, after a completed round when the last write is older than
//! [`SAVE_EVERY`], and at the end (also of an interrupted run), so it is always a valid file.

use crate::measure::run_once;
use crate::plan::RunPlan;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vbench_backends::{Backend, Invocation, Stdio};
use vbench_results::{
    stats, store::OutTarget, Document, Environment, Failure, FailureKind, Plan, RunStatus,
    SampleRecord, Tool, SCHEMA_VERSION,
};

/// Least time between two writes of the partial results (writing after every round would
/// make a many-round run of a short program quadratic in the file size).
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Output above which a cell's next run has its output drained as it comes (a quarter of the
/// stdout pipe the backends give a run).
const CHATTY_BYTES: u64 = 256 << 10;

/// How to schedule.
pub struct Schedule<'a> {
    pub rounds: u32,
    pub warmup: u32,
    pub quick: bool,
    pub seed: u64,
    pub timeout: Duration,
    pub cpu: Option<usize>,
    pub cancel: Arc<AtomicBool>,
    /// Where the results go; a device or pipe gets only the final document.
    pub out: &'a OutTarget,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the plan and returns the final document (also written to `sched.out`).
pub fn run(
    plan: &RunPlan,
    backends: &[Box<dyn Backend>],
    sched: &Schedule,
    environment: Environment,
) -> Result<Document> {
    let mut doc = Document {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "vbench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        status: RunStatus::Running,
        started_unix_ms: now_ms(),
        finished_unix_ms: None,
        environment,
        plan: Plan {
            rounds: sched.rounds,
            warmup: sched.warmup,
            quick: sched.quick,
            seed: sched.seed,
            timeout_ms: sched.timeout.as_millis() as u64,
            backends: plan.backends.clone(),
            cells: plan.cells.iter().map(|c| c.cell.clone()).collect(),
        },
        samples: Vec::new(),
        summaries: Vec::new(),
        failures: Vec::new(),
        isolation: None,
    };
    let save = |doc: &Document| {
        sched
            .out
            .write_document(doc)
            .with_context(|| "writing results")
    };
    let partial_saves = !sched.out.is_stream();
    if partial_saves {
        save(&doc)?;
    }
    let mut saved_at = Instant::now();

    let total = u64::from(sched.warmup + sched.rounds) * plan.cells.len() as u64;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(sched.seed);
    let mut run_failures: Vec<Failure> = Vec::new();
    let cancelled = || sched.cancel.load(Ordering::Relaxed);
    // Cells whose last run wrote more than a pipe holds: their output is drained as it comes.
    let mut chatty = vec![false; plan.cells.len()];
    let invocation = |i: usize, chatty: bool| Invocation {
        program: plan.cells[i].program.clone(),
        args: plan.cells[i].argv.clone(),
        timeout: Some(sched.timeout),
        stdio: Stdio::Capture,
        cpu: sched.cpu,
        cancel: Some(sched.cancel.clone()),
        chatty,
    };
    let mut order: Vec<usize> = (0..plan.cells.len()).collect();
    'rounds: for round in 0..sched.warmup + sched.rounds {
        let warm = round < sched.warmup;
        order.shuffle(&mut rng);
        for &i in &order {
            if cancelled() {
                break 'rounds;
            }
            let cp = &plan.cells[i];
            bar.set_message(format!(
                "{} {} {}",
                if warm { "warm-up" } else { "round" },
                cp.cell.workload,
                cp.cell.backend
            ));
            let result = run_once(
                backends[cp.backend].as_ref(),
                &invocation(i, chatty[i]),
                cp.expects_report,
            );
            if let Ok(s) = &result {
                chatty[i] = s.stdout_bytes > CHATTY_BYTES;
            }
            bar.inc(1);
            if cancelled() {
                break 'rounds; // this run was killed by the interruption: not a sample
            }
            let measured_round = (!warm).then(|| round - sched.warmup);
            match result {
                Ok(sample) => {
                    if !sample.succeeded() {
                        let tail = sample.stderr_tail.trim();
                        run_failures.push(Failure {
                            cell: i,
                            round: measured_round,
                            kind: FailureKind::BadExit,
                            message: format!(
                                "{} on {}: {}{}",
                                cp.cell.workload,
                                cp.cell.backend,
                                sample.exit,
                                if tail.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {tail}")
                                }
                            ),
                        });
                    }
                    if let Some(r) = measured_round {
                        doc.samples.push(SampleRecord {
                            cell: i,
                            round: r,
                            sample,
                        });
                    }
                }
                Err(message) => run_failures.push(Failure {
                    cell: i,
                    round: measured_round,
                    kind: FailureKind::Error,
                    message: format!("{} on {}: {message}", cp.cell.workload, cp.cell.backend),
                }),
            }
        }
        if partial_saves && !warm && saved_at.elapsed() >= SAVE_EVERY {
            finish(&mut doc, &run_failures, sched.seed);
            save(&doc)?;
            saved_at = Instant::now();
        }
    }
    bar.finish_and_clear();
    doc.status = if cancelled() {
        RunStatus::Interrupted
    } else {
        RunStatus::Complete
    };
    finish(&mut doc, &run_failures, sched.seed);
    save(&doc)?;
    Ok(doc)
}

fn finish(doc: &mut Document, run_failures: &[Failure], seed: u64) {
    let (summaries, checksum_failures) = stats::summarize(&doc.plan.cells, &doc.samples, seed);
    doc.summaries = summaries;
    doc.failures = run_failures
        .iter()
        .cloned()
        .chain(checksum_failures)
        .collect();
    doc.finished_unix_ms = Some(now_ms());
    // What the micro-VM found out about this host: where `syscall` lands in a guest.
    if let Some(ring) = doc
        .samples
        .iter()
        .find_map(|r| r.sample.counters.get("kvm.syscall_ring"))
    {
        let mode = if *ring == 3 {
            "stays at CPL3 (nested KVM, e.g. kvm_pvm): every forwarded syscall is a nested VM exit"
        } else {
            "enters CPL0 (hardware-assisted VMX/SVM)"
        };
        doc.environment
            .extra
            .insert("kvm_guest_syscall".into(), mode.into());
    }
}
