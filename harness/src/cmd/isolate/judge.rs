//! Judging one run of a probe against the catalogue's expectation, and the native control's
//! say over the other columns.

use super::fixtures::Ctx;
use vbench_backends::container::cgroup::counters as cgroup_counters;
use vbench_backends::Outcome;
use vbench_results::{Exit, ProbeCell, ProbeVerdict};
use vbench_workloads::probes::{self, Accuracy, Expect, Judge, Probe, ProbeOutcome, CONTROL};

/// The number after `key=` in a probe's detail.
fn detail_num(detail: &str, key: &str) -> Option<f64> {
    let i = detail.find(&format!("{key}="))? + key.len() + 1;
    let rest = &detail[i..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The harness keeps at most this much of a probe's stdout.
const STDOUT_KEPT: usize = 1 << 20;

/// Judges one run of probe `p` on `backend`: by what the harness measured itself where the
/// catalogue says so, else by the probe's line; then the limit's accuracy.
pub(super) fn judge(
    p: &Probe,
    backend: &str,
    expect: Expect,
    out: &Outcome,
    ctx: &Ctx<'_>,
) -> ProbeCell {
    let s = &out.sample;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = probes::parse_line(&text);
    let mut c = ProbeCell {
        backend: backend.to_string(),
        expect: expect.name().to_string(),
        verdict: ProbeVerdict::Broken,
        note: String::new(),
        outcome: line.ok().map(|l| l.outcome.name().to_string()),
        detail: line.map(|l| l.detail.to_string()).unwrap_or_default(),
        exit: Some(s.exit),
        counters: s.counters.clone(),
    };
    let killed = matches!(s.exit, Exit::Signal { signal: 9 });
    match p.judge {
        Judge::StdoutFlood { bytes } => {
            (c.verdict, c.note) = flood(out, line.is_ok(), bytes);
            return c;
        }
        Judge::Timeout { .. } => {
            (c.verdict, c.note) = match s.exit {
                Exit::Timeout { after_ms } => (
                    ProbeVerdict::Contained,
                    format!("the harness killed it after {after_ms} ms"),
                ),
                e => (ProbeVerdict::Broken, format!("it ended by itself: {e}")),
            };
            return c;
        }
        Judge::OomKill if killed && line.is_err() && backend != CONTROL => {
            oom_killed(&mut c, out, ctx);
            return c;
        }
        Judge::OomKill | Judge::Line => {}
    }
    if let (Expect::Observe, Err(_), Exit::Signal { signal }) = (expect, line, s.exit) {
        if backend != CONTROL {
            // What the backend did to the instruction is the observation (e.g. seccomp's
            // SIGSYS for the i386 syscall ABI); natively a probe always prints its line.
            c.verdict = ProbeVerdict::Observed;
            c.detail = format!("killed_by_{}", signal_name(signal));
            c.note = s.stderr_tail.trim().to_string();
            return c;
        }
    }
    let l = match line {
        Ok(l) => l,
        Err(e) => {
            c.note = format!(
                "no valid probe line ({e}); {}; stderr: {}",
                s.exit,
                s.stderr_tail.trim()
            );
            return c;
        }
    };
    if l.probe != p.name {
        c.note = format!("the line names probe {}", l.probe);
        return c;
    }
    (c.verdict, c.note) = by_line(expect, backend, l.outcome, l.detail);
    if c.verdict == ProbeVerdict::Contained && backend.split('/').next() == Some(LIMITED) {
        if let Some(note) = accuracy(p.accuracy, &c.detail, ctx) {
            c.note = note;
        }
    }
    c
}

/// The backend the limits (`--memory`, `--cpus`, `--pids`) are set on (both its columns).
const LIMITED: &str = "container";

/// A probe that floods stdout with `bytes` after its line: contained when the harness kept a
/// bounded part.
fn flood(out: &Outcome, has_line: bool, bytes: u64) -> (ProbeVerdict, String) {
    let s = &out.sample;
    if !has_line || s.stdout_bytes < bytes {
        (
            ProbeVerdict::Broken,
            format!("the probe wrote only {} bytes", s.stdout_bytes),
        )
    } else if out.stdout.len() <= STDOUT_KEPT {
        (
            ProbeVerdict::Contained,
            format!(
                "the harness kept {} of {} bytes",
                out.stdout.len(),
                s.stdout_bytes
            ),
        )
    } else {
        (
            ProbeVerdict::Breach,
            format!("the harness buffered {} bytes", out.stdout.len()),
        )
    }
}

/// A probe killed by the memory limit: contained, with the cgroup's peak against the limit and
/// what the probe had touched.
fn oom_killed(c: &mut ProbeCell, out: &Outcome, ctx: &Ctx<'_>) {
    let s = &out.sample;
    let peak = s.counters.get(cgroup_counters::MEMORY_PEAK_BYTES).copied();
    let ooms = s
        .counters
        .get(cgroup_counters::OOM_KILLS)
        .copied()
        .unwrap_or(0);
    let limit = ctx.limits.memory.unwrap_or(0);
    c.verdict = ProbeVerdict::Contained;
    // the probe's last progress line: anonymous memory it had touched when killed
    let touched = s
        .stderr_tail
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("vbench-probe memory touched_kib="))
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let (Some(kib), true) = (touched, limit > 0) {
        c.counters
            .insert("probe.touched_bytes_at_kill".into(), kib * 1024);
        c.detail = format!("touched_at_kill={kib}KiB");
    }
    c.note = match peak {
        Some(pk) if limit > 0 => format!(
            "killed (SIGKILL, {ooms} OOM kill(s)); cgroup peak {pk} B = {:.1}% of the {limit} B limit{}",
            pk as f64 * 100.0 / limit as f64,
            touched.map_or(String::new(), |kib| format!(
                "; the probe had touched {} B = {:.1}% of it",
                kib * 1024,
                (kib * 1024) as f64 * 100.0 / limit as f64
            ))
        ),
        _ => format!("killed (SIGKILL, {ooms} OOM kill(s))"),
    };
}

/// The verdict and note of a probe line with `outcome` and `detail` on `backend`.
fn by_line(
    expect: Expect,
    backend: &str,
    outcome: ProbeOutcome,
    detail: &str,
) -> (ProbeVerdict, String) {
    use ProbeOutcome as O;
    match (expect, outcome) {
        (
            Expect::Contained | Expect::Escapes | Expect::Permitted(_) | Expect::Inside(_),
            O::Error,
        ) if backend != CONTROL && detail.contains("ENOSYS") => (
            ProbeVerdict::Contained,
            "the backend does not offer this system call (ENOSYS)".to_string(),
        ),
        (_, O::Error) => (
            ProbeVerdict::Broken,
            "the probe reported an error".to_string(),
        ),
        (Expect::Observe, O::Observed) => (ProbeVerdict::Observed, String::new()),
        (Expect::Observe, o) => (
            ProbeVerdict::Broken,
            format!("an observation probe said {o}"),
        ),
        (_, O::Observed) => (
            ProbeVerdict::Broken,
            "the probe gave no verdict where one is expected".to_string(),
        ),
        (Expect::Escapes, O::Escaped) => (ProbeVerdict::Escaped, String::new()),
        (Expect::Permitted(why) | Expect::Inside(why), O::Escaped) => {
            (ProbeVerdict::Escaped, why.to_string())
        }
        (Expect::Permitted(_) | Expect::Inside(_), O::Contained) => (
            ProbeVerdict::Contained,
            "contained although allowed".to_string(),
        ),
        (Expect::Escapes, O::Contained) if backend == CONTROL => (
            ProbeVerdict::Broken,
            "the native control did not escape: the probe proves nothing".to_string(),
        ),
        (Expect::Escapes, O::Contained) => (
            ProbeVerdict::Contained,
            "contained although allowed".to_string(),
        ),
        (Expect::Contained, O::Contained) => (ProbeVerdict::Contained, String::new()),
        (Expect::Contained, O::Escaped) => (
            ProbeVerdict::Breach,
            "escaped where it must be contained".to_string(),
        ),
        (Expect::NotApplicable(r), _) => (ProbeVerdict::NotApplicable, r.to_string()),
    }
}

/// How close a contained probe came to its limit, from its `detail`.
fn accuracy(what: Accuracy, detail: &str, ctx: &Ctx<'_>) -> Option<String> {
    let lim = ctx.limits;
    match what {
        Accuracy::None => None,
        Accuracy::CpuShare => {
            let (share, q) = (detail_num(detail, "share")?, lim.cpus?);
            Some(format!(
                "measured share {share:.3} vs quota {q:.3} (difference {:+.3})",
                share - q
            ))
        }
        Accuracy::Tasks => {
            let (n, max) = (detail_num(detail, "forked")?, lim.pids?);
            Some(format!(
                "fork failed after {n} children: {} tasks with container init and the probe, pids limit {max}",
                n as u64 + 2
            ))
        }
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        4 => "SIGILL".into(),
        5 => "SIGTRAP".into(),
        7 => "SIGBUS".into(),
        9 => "SIGKILL".into(),
        11 => "SIGSEGV".into(),
        31 => "SIGSYS".into(),
        n => format!("signal_{n}"),
    }
}

/// The native column is the control: when it is broken, a "contained" elsewhere means nothing.
/// A probe whose system call the host kernel lacks (ENOSYS natively) is n/a everywhere.
pub(super) fn control(cells: &mut [ProbeCell]) {
    let Some(native) = cells.iter().find(|c| c.backend == CONTROL) else {
        return;
    };
    if native.verdict == ProbeVerdict::Broken && native.detail.contains("ENOSYS") {
        let why = format!("the host kernel lacks this system call ({})", native.detail);
        for c in cells.iter_mut() {
            c.verdict = ProbeVerdict::NotApplicable;
            c.note = why.clone();
        }
        return;
    }
    if native.verdict == ProbeVerdict::Broken {
        for c in cells
            .iter_mut()
            .filter(|c| c.verdict == ProbeVerdict::Contained)
        {
            c.verdict = ProbeVerdict::Broken;
            c.note = "the native control is broken, so this result means nothing".to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::with_test_ctx;
    use super::*;
    use std::collections::BTreeMap;
    use vbench_results::Sample;

    fn ctx_run(p: &str, backend: &str, stdout: &str, exit: Exit) -> ProbeCell {
        let probe = probes::find(p).unwrap();
        let out = Outcome {
            sample: Sample {
                exit,
                stdout_bytes: stdout.len() as u64,
                ..Sample::default()
            },
            stdout: stdout.as_bytes().to_vec(),
        };
        with_test_ctx(true, |ctx| {
            judge(probe, backend, probe.expect(backend), &out, ctx)
        })
    }

    const OK: Exit = Exit::Code { code: 0 };

    #[test]
    fn verdicts_follow_expectations() {
        let esc = "VBENCH-PROBE probe=hostname outcome=escaped detail=nodename=h\n";
        let con = "VBENCH-PROBE probe=hostname outcome=contained detail=nodename=vbench\n";
        assert_eq!(
            ctx_run("hostname", "native", esc, OK).verdict,
            ProbeVerdict::Escaped
        );
        assert_eq!(
            ctx_run("hostname", "native", con, OK).verdict,
            ProbeVerdict::Broken
        );
        assert_eq!(
            ctx_run("hostname", "container", con, OK).verdict,
            ProbeVerdict::Contained
        );
        let b = ctx_run("hostname", "container", esc, OK);
        assert_eq!(b.verdict, ProbeVerdict::Breach);
        assert!(b.verdict.fails());
        // an allowed escape (raw sockets keep CAP_NET_RAW in the container)
        let raw = "VBENCH-PROBE probe=raw_socket outcome=escaped detail=socket:ok\n";
        assert_eq!(
            ctx_run("raw_socket", "container", raw, OK).verdict,
            ProbeVerdict::Escaped
        );
        // errors, missing lines and wrong names are broken probes
        let err = "VBENCH-PROBE probe=hostname outcome=error detail=uname:EFAULT\n";
        assert_eq!(
            ctx_run("hostname", "container", err, OK).verdict,
            ProbeVerdict::Broken
        );
        let none = ctx_run("hostname", "native", "", Exit::Signal { signal: 11 });
        assert_eq!(none.verdict, ProbeVerdict::Broken);
        assert!(none.note.contains("signal 11"), "{}", none.note);
        let other = "VBENCH-PROBE probe=mounts outcome=escaped detail=x\n";
        assert_eq!(
            ctx_run("hostname", "native", other, OK).verdict,
            ProbeVerdict::Broken
        );
        // observations
        let obs = "VBENCH-PROBE probe=sgdt outcome=observed detail=sgdt:base=0x0\n";
        let c = ctx_run("sgdt", "native", obs, OK);
        assert_eq!(
            (c.verdict, c.detail.as_str()),
            (ProbeVerdict::Observed, "sgdt:base=0x0")
        );
        // a backend that kills the probe for the instruction: that is the observation
        let sys = ctx_run("int80", "container", "", Exit::Signal { signal: 31 });
        assert_eq!(sys.verdict, ProbeVerdict::Observed);
        assert_eq!(sys.detail, "killed_by_SIGSYS");
        // natively the probe must always print its line
        let nat = ctx_run("int80", "native", "", Exit::Signal { signal: 31 });
        assert_eq!(nat.verdict, ProbeVerdict::Broken);
    }

    #[test]
    fn harness_judged_limits() {
        // an OOM-killed memory probe is contained, with the peak against the limit
        let mut killed = ctx_run("memory", "container", "", Exit::Signal { signal: 9 });
        assert_eq!(killed.verdict, ProbeVerdict::Contained);
        assert!(killed.note.contains("killed"), "{}", killed.note);
        // natively nothing limits it: a kill there is a broken control
        killed = ctx_run("memory", "native", "", Exit::Signal { signal: 9 });
        assert_eq!(killed.verdict, ProbeVerdict::Broken);
        // a flood that did not flood is broken
        let short = "VBENCH-PROBE probe=stdout_flood outcome=observed detail=x\n";
        assert_eq!(
            ctx_run("stdout_flood", "native", short, OK).verdict,
            ProbeVerdict::Broken
        );
        let q = "VBENCH-PROBE probe=cpu_quota outcome=contained detail=share=0.497,cpu_ns=1,wall_ns=2\n";
        let c = ctx_run("cpu_quota", "container", q, OK);
        assert_eq!(c.verdict, ProbeVerdict::Contained);
        assert!(c.note.contains("-0.003"), "{}", c.note);
    }

    #[test]
    fn a_broken_control_voids_contained_results() {
        let cell = |b: &str, v| ProbeCell {
            backend: b.into(),
            expect: String::new(),
            verdict: v,
            note: String::new(),
            outcome: None,
            detail: String::new(),
            exit: None,
            counters: BTreeMap::new(),
        };
        let mut cells = vec![
            cell("native", ProbeVerdict::Broken),
            cell("container", ProbeVerdict::Contained),
        ];
        control(&mut cells);
        assert_eq!(cells[1].verdict, ProbeVerdict::Broken);
        let mut cells = vec![
            cell("native", ProbeVerdict::Broken),
            cell("container", ProbeVerdict::Contained),
        ];
        cells[0].detail = "init_module:ENOSYS_not_in_this_kernel".into();
        control(&mut cells);
        assert!(cells
            .iter()
            .all(|c| c.verdict == ProbeVerdict::NotApplicable));
    }

    #[test]
    fn numbers_in_details() {
        assert_eq!(
            detail_num("forked=62_of_128,fork:EAGAIN", "forked"),
            Some(62.0)
        );
        assert_eq!(detail_num("share=0.501,cpu", "share"), Some(0.501));
    }
}
