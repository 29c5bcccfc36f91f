//! The plain-text table printed at the end of `vbench run`.

use crate::fmt_ns;
use std::fmt::Write;
use vbench_results::{Document, FailureKind, RunStatus};

/// Renders the summary table, unavailable backends, and failures of `doc`.
pub fn render(doc: &Document) -> String {
    let header = [
        "workload",
        "backend",
        "n",
        "time/op",
        "+-MAD",
        "95% CI",
        "vs native",
        "checksum",
    ];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for cell in &doc.plan.cells {
        let Some(s) = doc.summary(cell.id) else {
            rows.push([
                cell.workload.clone(),
                cell.backend.clone(),
                "0".into(),
                "no successful run".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            continue;
        };
        let unit = if s.metric == "wall_ns" {
            "run"
        } else {
            cell.op.as_str()
        };
        let overhead = match s.overhead {
            Some(o) => format!("{:.2}x [{:.2}, {:.2}]", o.median, o.ci_low, o.ci_high),
            None if cell.backend == "native" => "1 (control)".into(),
            None => "-".into(),
        };
        let checksum = match (
            &s.checksum,
            s.checksum_matches_native,
            s.checksum_consistent,
        ) {
            (_, _, false) => "DIFFERS BETWEEN RUNS".into(),
            (_, Some(false), _) => "MISMATCH".into(),
            (Some(c), Some(true), _) => format!("{} ok", short(c)),
            (Some(c), None, _) => short(c),
            (None, _, _) => "-".into(),
        };
        rows.push([
            cell.workload.clone(),
            cell.backend.clone(),
            s.n.to_string(),
            format!("{}/{unit}", fmt_ns(s.median_ns)),
            fmt_ns(s.mad_ns),
            format!("[{}, {}]", fmt_ns(s.ci_low_ns), fmt_ns(s.ci_high_ns)),
            overhead,
            checksum,
        ]);
    }
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{c:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(
        &mut out,
        &rule.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for r in &rows {
        line(&mut out, &r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // Start-up, separate from the steady-state table: backend-measured set-up time of each run
    // (clone to exec for containers, cold start for VMs).
    let mut startups: Vec<(&str, Vec<f64>)> = Vec::new();
    for r in &doc.samples {
        let (Some(ns), Some(cell)) = (r.sample.startup_ns, doc.cell(r.cell)) else {
            continue;
        };
        match startups.iter_mut().find(|(b, _)| *b == cell.backend) {
            Some((_, v)) => v.push(ns as f64),
            None => startups.push((&cell.backend, vec![ns as f64])),
        }
    }
    for (backend, v) in &startups {
        let med = vbench_results::stats::median(v).unwrap_or(0.0);
        let max = v.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "{backend} start-up: median {} (max {}) over {} runs",
            fmt_ns(med),
            fmt_ns(max),
            v.len()
        );
    }
    // the backends that measure no start-up of their own (native, the peers): launch and exit as
    // the wall time outside the measured loop, so crun's or gVisor's sits beside the container's
    for st in crate::view::View::new(doc).startup() {
        if let (None, Some(o), Some(w)) = (&st.reported, &st.outside_loop, st.reference) {
            let _ = writeln!(
                out,
                "{} launch and exit (wall outside the loop of {w}): median {} (max {}) over {} runs",
                st.backend,
                fmt_ns(o.median),
                fmt_ns(o.max),
                o.n
            );
        }
    }
    for b in doc.plan.backends.iter().filter(|b| !b.available) {
        let _ = writeln!(
            out,
            "{}: unavailable: {}",
            b.name,
            b.reason.as_deref().unwrap_or("unknown reason")
        );
    }
    let mismatches = doc
        .failures
        .iter()
        .filter(|f| f.kind == FailureKind::ChecksumMismatch)
        .count();
    if mismatches > 0 {
        let _ = writeln!(
            out,
            "\n!!! CORRECTNESS FAILURE: {mismatches} checksum mismatch(es): a backend computed something different !!!"
        );
    }
    for f in &doc.failures {
        let round = f.round.map(|r| format!(" (round {r})")).unwrap_or_default();
        let _ = writeln!(out, "FAILED{round}: {}", f.message);
    }
    if doc.status == RunStatus::Interrupted {
        let _ = writeln!(
            out,
            "\nrun interrupted: results hold the completed rounds only"
        );
    }
    out
}

fn short(c: &str) -> String {
    c.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn backends_without_a_start_up_of_their_own_show_launch_and_exit() {
        let doc = crate::fixture::document();
        let out = super::render(&doc);
        let line = out
            .lines()
            .find(|l| l.starts_with("native launch and exit (wall outside the loop of "))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("median") && line.contains("runs"), "{line}");
        // a backend that reports its own start-up is not repeated as launch and exit
        for l in out.lines().filter(|l| l.contains(" start-up: median")) {
            let b = l.split(' ').next().unwrap();
            assert!(!out.contains(&format!("{b} launch and exit")), "{out}");
        }
    }
}
