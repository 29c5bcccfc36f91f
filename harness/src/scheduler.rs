//! Warm-up, then interleaved rounds: every cell runs once per round, in a freshly shuffled
//! order, so drift of the machine hits every backend alike. The results file is rewritten
//! atomically at the start, after a completed round when the last write is older than
//! [`SAVE_EVERY`], and at the end (also of an interrupted run), so it is always a valid file.

use crate::measure::run_once;
use crate::plan::{CellPlan, RunPlan};
use crate::progress::Progress;
use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vbench_backends::{Backend, Invocation, Stdio};
use vbench_results::{
    stats, store::OutTarget, Document, Environment, Failure, FailureKind, Plan, RunStatus, Sample,
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
    /// What bt's and kvm's guests may do on the host.
    pub abi: vbench_backends::AbiPolicy,
    pub cancel: Arc<AtomicBool>,
    /// Where the results go; a device or pipe gets only the final document.
    pub out: &'a OutTarget,
    /// The caller adds to the document and writes it again (`run --isolate`): a device or pipe
    /// then gets nothing from here, so that it receives one document, and a file keeps the
    /// status `running` until the caller's write.
    pub more_follows: bool,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the plan and returns the final document (also written to `sched.out`). `backends`
/// are the ones the plan's cells index (the registry in production, a scripted fake in tests).
pub fn run(
    plan: &RunPlan,
    backends: &[Box<dyn Backend>],
    sched: &Schedule,
    environment: Environment,
) -> Result<Document> {
    let mut doc = new_document(plan, sched, environment);
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
    let progress = Progress::new(
        sched.warmup,
        sched.rounds,
        plan.cells.len(),
        std::io::stderr().is_terminal(),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(sched.seed);
    let mut run_failures: Vec<Failure> = Vec::new();
    let cancelled = || sched.cancel.load(Ordering::Relaxed);
    // Cells whose last run wrote more than a pipe holds: their output is drained as it comes.
    let mut chatty = vec![false; plan.cells.len()];
    let mut order: Vec<usize> = (0..plan.cells.len()).collect();
    'rounds: for round in 0..sched.warmup + sched.rounds {
        let warm = round < sched.warmup;
        order.shuffle(&mut rng);
        for &i in &order {
            if cancelled() {
                break 'rounds;
            }
            let cp = &plan.cells[i];
            progress.cell(round, &cp.cell.workload, &cp.cell.backend);
            let result = run_once(
                backends[cp.backend].as_ref(),
                &invocation(cp, sched, chatty[i]),
                cp.expects_report,
            );
            if let Ok(s) = &result {
                chatty[i] = s.stdout_bytes > CHATTY_BYTES;
            }
            progress.ran();
            if cancelled() {
                break 'rounds; // this run was killed by the interruption: not a sample
            }
            let measured_round = (!warm).then(|| round - sched.warmup);
            record(&mut doc, &mut run_failures, i, cp, measured_round, result);
        }
        progress.round_done(round);
        if partial_saves && !warm && saved_at.elapsed() >= SAVE_EVERY {
            finish(&mut doc, backends, &run_failures, sched.seed);
            save(&doc)?;
            saved_at = Instant::now();
        }
    }
    progress.finish();
    doc.status = if cancelled() {
        RunStatus::Interrupted
    } else {
        RunStatus::Complete
    };
    finish(&mut doc, backends, &run_failures, sched.seed);
    if !sched.more_follows {
        save(&doc)?;
    } else if partial_saves {
        // still running: a vbench killed before the caller's final write shows as killed
        let status = std::mem::replace(&mut doc.status, RunStatus::Running);
        save(&doc)?;
        doc.status = status;
    }
    Ok(doc)
}

/// The document of a run that is starting: its plan, no samples yet.
fn new_document(plan: &RunPlan, sched: &Schedule, environment: Environment) -> Document {
    Document {
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
        writer: crate::cmd::common::this_writer(),
    }
}

fn invocation(cp: &CellPlan, sched: &Schedule, chatty: bool) -> Invocation {
    Invocation {
        program: cp.program.clone(),
        args: cp.argv.clone(),
        timeout: Some(sched.timeout),
        stdio: Stdio::Capture,
        cpu: sched.cpu,
        cancel: Some(sched.cancel.clone()),
        chatty,
        abi: sched.abi,
    }
}

/// Records the run of cell `i`: its sample (measured rounds only), and a failure when it
/// exited badly or could not run.
fn record(
    doc: &mut Document,
    run_failures: &mut Vec<Failure>,
    i: usize,
    cp: &CellPlan,
    measured_round: Option<u32>,
    result: Result<Sample, String>,
) {
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

fn finish(doc: &mut Document, backends: &[Box<dyn Backend>], run_failures: &[Failure], seed: u64) {
    let (summaries, checksum_failures) = stats::summarize(&doc.plan.cells, &doc.samples, seed);
    doc.summaries = summaries;
    doc.failures = run_failures
        .iter()
        .cloned()
        .chain(checksum_failures)
        .collect();
    doc.finished_unix_ms = Some(now_ms());
    // What each backend's samples tell about the host (e.g. where `syscall` lands in a kvm
    // guest): each backend reads its own counters.
    for b in backends {
        let samples: Vec<&vbench_results::Sample> = doc
            .samples
            .iter()
            .filter(|r| {
                doc.plan
                    .cells
                    .get(r.cell)
                    .is_some_and(|c| c.backend == b.name())
            })
            .map(|r| &r.sample)
            .collect();
        if samples.is_empty() {
            continue;
        }
        for (k, v) in b.environment_notes(&samples) {
            doc.environment.extra.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Reply, Scripted};
    use crate::plan::CellPlan;
    use vbench_backends::Program;
    use vbench_results::{BackendStatus, Cell};

    /// `n` cells of the fake backend; cell `k` runs with argv `["c<k>"]`.
    fn plan(n: usize) -> RunPlan {
        let cells = (0..n)
            .map(|k| CellPlan {
                cell: Cell {
                    id: k,
                    workload: format!("w{k}"),
                    class: "custom".into(),
                    backend: "fake".into(),
                    args: vec![format!("c{k}")],
                    op: "run".into(),
                },
                backend: 0,
                program: Program::Path("/nonexistent/fake-program".into()),
                argv: vec![format!("c{k}").into()],
                expects_report: false,
            })
            .collect();
        RunPlan {
            cells,
            backends: vec![BackendStatus {
                name: "fake".into(),
                available: true,
                reason: None,
                peer: false,
                colour: None,
            }],
        }
    }

    struct Run {
        doc: Document,
        on_disk: Document,
        calls: Vec<String>,
    }

    /// Runs `n` cells of `fake` for `warmup` + `rounds` rounds with `seed`, into a temp file.
    fn run_fake(fake: Scripted, n: usize, warmup: u32, rounds: u32, seed: u64) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let out = OutTarget::resolve(&path, std::path::Path::new("vbench-results")).unwrap();
        let sched = Schedule {
            rounds,
            warmup,
            quick: false,
            seed,
            timeout: Duration::from_secs(5),
            cpu: None,
            abi: vbench_backends::AbiPolicy::Confined,
            cancel: fake.cancel_flag(),
            out: &out,
            more_follows: false,
        };
        let calls = fake.calls_handle();
        let backends: Vec<Box<dyn Backend>> = vec![Box::new(fake)];
        let doc = run(&plan(n), &backends, &sched, Environment::default()).unwrap();
        let on_disk = vbench_results::load(&path).unwrap();
        let calls = calls.lock().unwrap().clone();
        Run {
            doc,
            on_disk,
            calls,
        }
    }

    #[test]
    fn the_order_is_shuffled_deterministically_by_seed() {
        let a = run_fake(Scripted::ok(), 6, 1, 4, 7).calls;
        let b = run_fake(Scripted::ok(), 6, 1, 4, 7).calls;
        let c = run_fake(Scripted::ok(), 6, 1, 4, 8).calls;
        assert_eq!(a, b, "same seed, same order");
        assert_ne!(a, c, "another seed, another order");
        let rounds: Vec<&[String]> = a.chunks(6).collect();
        assert!(
            rounds.windows(2).any(|w| w[0] != w[1]),
            "each round is shuffled anew: {rounds:?}"
        );
        let identity: Vec<String> = (0..6).map(|k| format!("c{k}")).collect();
        assert!(rounds.iter().any(|r| *r != identity.as_slice()));
    }

    #[test]
    fn every_cell_runs_exactly_once_per_round() {
        let (n, warmup, rounds) = (5, 2, 4);
        let r = run_fake(Scripted::ok(), n, warmup, rounds, 1);
        assert_eq!(r.calls.len(), n * (warmup + rounds) as usize);
        for round in r.calls.chunks(n) {
            let mut cells = round.to_vec();
            cells.sort();
            let expect: Vec<String> = (0..n).map(|k| format!("c{k}")).collect();
            assert_eq!(cells, expect, "a round runs every cell once");
        }
        // warm-up runs are not samples; each measured (cell, round) is one sample
        let mut seen: Vec<(usize, u32)> = r.doc.samples.iter().map(|s| (s.cell, s.round)).collect();
        seen.sort();
        let expect: Vec<(usize, u32)> = (0..n)
            .flat_map(|c| (0..rounds).map(move |k| (c, k)))
            .collect();
        assert_eq!(seen, expect);
        assert_eq!(r.doc.status, RunStatus::Complete);
        assert!(r.doc.failures.is_empty(), "{:?}", r.doc.failures);
        assert_eq!(r.on_disk, r.doc, "the file holds the final document");
    }

    #[test]
    fn a_failing_run_is_recorded_and_the_run_goes_on() {
        // c2's second run cannot start; c3's first run exits 1
        let fake = Scripted::new(|tag, nth| match (tag, nth) {
            ("c2", 1) => Reply::Error("no such thing"),
            ("c3", 0) => Reply::Exit(1),
            _ => Reply::Ok,
        });
        let r = run_fake(fake, 5, 0, 3, 1);
        assert_eq!(r.calls.len(), 15, "every run after the failures still ran");
        assert_eq!(r.doc.status, RunStatus::Complete);
        let err = r
            .doc
            .failures
            .iter()
            .find(|f| f.kind == FailureKind::Error)
            .expect("the error is recorded");
        assert_eq!((err.cell, err.round), (2, Some(1)));
        assert!(err.message.contains("w2 on fake") && err.message.contains("no such thing"));
        let bad = r
            .doc
            .failures
            .iter()
            .find(|f| f.kind == FailureKind::BadExit)
            .expect("the bad exit is recorded");
        assert_eq!((bad.cell, bad.round), (3, Some(0)));
        // the error gave no sample; the bad exit did (it ran and was measured)
        assert_eq!(r.doc.samples.len(), 14);
        assert!(!r.doc.samples.iter().any(|s| s.cell == 2 && s.round == 1));
        assert_eq!(r.on_disk.failures, r.doc.failures);
    }

    #[test]
    fn cancellation_mid_round_stops_cleanly_with_the_completed_rounds_saved() {
        // 4 cells, no warm-up: calls 0-7 are rounds 0 and 1; call 9 is round 2's second run
        let fake = Scripted::ok().cancel_during(9);
        let r = run_fake(fake, 4, 0, 10, 1);
        assert_eq!(r.calls.len(), 10, "nothing ran after the interruption");
        for doc in [&r.doc, &r.on_disk] {
            assert_eq!(doc.status, RunStatus::Interrupted);
            for round in 0..2 {
                let n = doc.samples.iter().filter(|s| s.round == round).count();
                assert_eq!(n, 4, "round {round} is complete");
            }
            // round 2: the run before the interruption; the interrupted run is no sample
            assert_eq!(doc.samples.iter().filter(|s| s.round == 2).count(), 1);
            assert!(doc.samples.iter().all(|s| s.round <= 2));
            assert!(doc.failures.is_empty(), "{:?}", doc.failures);
            assert!(!doc.summaries.is_empty());
        }
    }
}
