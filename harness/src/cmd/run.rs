//! `vbench run`: benchmark workloads (or a user's program) on one or more backends.

use crate::cli::RunArgs;
use crate::cmd::common::{
    backend_index, check_outputs, install_cancel, out_target, user_program, OutKind, UsageError,
};
use crate::plan::{self, Subject};
use crate::{doctor, scheduler, workload};
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::time::Duration;
use vbench_backends::Backend;
use vbench_results::{Document, FailureKind, RunStatus};

/// Runs `vbench run`.
pub fn run(a: RunArgs) -> Result<ExitCode> {
    let mut cfg = a.container.config();
    a.files.apply(&mut cfg, &a.workdir, !a.program.is_empty());
    let all = vbench_backends::all_with(&cfg);
    let requested = requested_backends(&all, &a.backends);
    if a.files.given(&a.workdir) && !requested.iter().any(|&i| all[i].name() == "container") {
        return Err(UsageError(
            "--rootfs, -v/--volume, -e/--env and --workdir set up the container backend, which this run does not include (add --backend container)".into(),
        )
        .into());
    }
    let subject = subject(&a)?;
    // checked (and a default file reserved) before anything runs
    if a.baseline.is_some() {
        let g = &a.gate;
        check_outputs(
            [&g.markdown, &g.junit, &g.benchmark_json]
                .into_iter()
                .flatten()
                .map(|p| p.as_path()),
        )?;
    }
    let out = out_target(a.out.as_deref(), "run")?;
    let mut plan = plan::build(&subject, &all, &requested);
    for b in plan.backends.iter().filter(|b| !b.available) {
        eprintln!(
            "{}: unavailable: {}",
            b.name,
            b.reason.as_deref().unwrap_or("unknown")
        );
    }
    let cancel = install_cancel()?;
    let abi = a.abi.unwrap_or(if a.program.is_empty() {
        vbench_backends::AbiPolicy::Confined
    } else {
        vbench_backends::AbiPolicy::Host
    });
    if a.sample_ms > 0 {
        let target_ms = if a.quick {
            a.sample_ms / crate::sizing::QUICK_DIVISOR
        } else {
            a.sample_ms
        };
        let resized = crate::sizing::size(
            &mut plan,
            &all,
            Duration::from_millis(target_ms.max(1)),
            a.quick,
            Duration::from_secs_f64(a.timeout),
            a.pin,
            abi,
            &cancel,
        );
        for r in &resized {
            eprintln!(
                "vbench: {}: iters {} -> {} (a sample of about {} ms on {}, {:.0} ns per op)",
                r.workload, r.from, r.to, target_ms, r.slowest.0, r.slowest.1
            );
        }
    }
    let sched = scheduler::Schedule {
        rounds: a.rounds.unwrap_or(if a.quick { 3 } else { 10 }),
        warmup: a.warmup.unwrap_or(1),
        quick: a.quick,
        seed: a.seed,
        timeout: Duration::from_secs_f64(a.timeout),
        cpu: a.pin,
        abi,
        cancel,
        out: &out,
        more_follows: a.isolate,
    };
    let mut doc = scheduler::run(&plan, &all, &sched, doctor::report().environment)?;
    drop(all);
    let mut isolation_failed = false;
    if a.isolate {
        if doc.status != RunStatus::Interrupted {
            eprintln!("vbench: probing what each backend contains (vbench isolate)");
            let m = crate::cmd::isolate::for_run(&a.backends, sched.cancel.clone())?;
            isolation_failed = m.failed_cells() > 0;
            if sched.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                doc.status = RunStatus::Interrupted;
            }
            doc.isolation = Some(m);
            doc.finished_unix_ms = Some(scheduler::now_ms());
        }
        out.write_document(&doc)
            .with_context(|| format!("writing {}", out.path().display()))?;
    }
    let to_stdout = out.kind() == OutKind::Stdout;
    if a.json && !to_stdout {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if to_stdout {
        // stdout carries the document (`--out -`): the table goes to stderr
        eprint!("{}", vbench_reports::terminal::render(&doc));
    } else {
        print!("{}", vbench_reports::terminal::render(&doc));
    }
    if let Some(m) = doc.isolation.as_ref().filter(|_| !a.json || to_stdout) {
        let text = crate::cmd::isolate::render(m);
        if to_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    eprintln!("results written to {}", out.path().display());
    if let Some(dir) = &a.report {
        let w = vbench_reports::write_all(&doc, dir)
            .with_context(|| format!("rendering the report into {}", dir.display()))?;
        eprintln!("report written to {}", w.index.display());
    }
    if let Some(name) = &a.save_baseline {
        let p = crate::cmd::gate::save_baseline(&doc, name)?;
        eprintln!("baseline saved to {}", p.display());
    }
    if let Some(b) = &a.baseline {
        let base = match crate::cmd::gate::load_baseline(b) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("vbench gate: bad input: {e:#}");
                return Ok(ExitCode::from(crate::cmd::gate::EXIT_BAD_INPUT));
            }
        };
        let shown = out.path().display().to_string();
        let gated = crate::cmd::gate::gate_documents(&base, b, &doc, &shown, &a.gate);
        if doc.failures.is_empty() {
            return Ok(gated);
        }
    }
    if isolation_failed && doc.status != RunStatus::Interrupted && doc.failures.is_empty() {
        eprintln!(
            "vbench run --isolate: cells escaped where they must be contained or are broken probes"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(exit_status(&doc))
}

/// Indexes into `all` of the backends named on the command line, native (the control) first.
fn requested_backends(all: &[Box<dyn Backend>], names: &[String]) -> Vec<usize> {
    let mut requested: Vec<usize> = Vec::new();
    let mut add = |i: usize| {
        if !requested.contains(&i) {
            requested.push(i);
        }
    };
    add(backend_index(all, "native")); // the control
    for b in names {
        if b == "all" {
            (0..all.len())
                .filter(|&i| vbench_backends::registry::in_all(all[i].name()))
                .for_each(&mut add);
        } else {
            add(backend_index(all, b));
        }
    }
    requested
}

/// What to run: the user's program after `--`, or the selected catalogue tasks.
fn subject(a: &RunArgs) -> Result<Subject> {
    Ok(if let Some((prog, args)) = a.program.split_first() {
        if !a.workloads.is_empty() || !a.classes.is_empty() {
            return Err(UsageError(
                "--workload/--class select built-in workloads; they cannot be combined with a program after `--`".into(),
            )
            .into());
        }
        Subject::Custom {
            program: user_program(prog)?,
            args: args.to_vec(),
        }
    } else {
        Subject::Tasks {
            program: workload::program()?,
            tasks: plan::select_tasks(&a.workloads, &a.classes)?,
            quick: a.quick,
        }
    })
}

/// 128 + the signal when interrupted (130 for ^C), 3 on a checksum mismatch, 1 on any other
/// failure, else 0.
fn exit_status(doc: &Document) -> ExitCode {
    if doc.status == RunStatus::Interrupted {
        ExitCode::from(crate::cmd::common::interrupted_exit())
    } else if doc
        .failures
        .iter()
        .any(|f| f.kind == FailureKind::ChecksumMismatch)
    {
        ExitCode::from(3)
    } else if !doc.failures.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
