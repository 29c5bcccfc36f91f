//! CSV exports (RFC 4180): one row per cell, one row per run, one row per compared cell.
//! Times are in nanoseconds, unrounded; empty fields mean "not measured".

use crate::compare::Comparison;
use crate::view::params;
use vbench_results::{Document, Exit};

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn line(out: &mut String, cells: &[String]) {
    let cells: Vec<String> = cells.iter().map(|c| field(c)).collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// One row per cell, with its summary (empty when no run succeeded).
pub fn summary(doc: &Document) -> String {
    let mut out = String::new();
    line(
        &mut out,
        &[
            "workload",
            "class",
            "backend",
            "op",
            "params",
            "n",
            "metric",
            "median_ns",
            "mad_ns",
            "ci_low_ns",
            "ci_high_ns",
            "outliers",
            "wall_median_ns",
            "overhead",
            "overhead_ci_low",
            "overhead_ci_high",
            "checksum",
            "checksum_consistent",
            "checksum_matches_native",
        ]
        .map(String::from),
    );
    for c in &doc.plan.cells {
        let s = doc.summary(c.id);
        let o = s.and_then(|s| s.overhead);
        line(
            &mut out,
            &[
                c.workload.clone(),
                c.class.clone(),
                c.backend.clone(),
                c.op.clone(),
                params(c),
                s.map(|s| s.n).unwrap_or(0).to_string(),
                opt(s.map(|s| &s.metric)),
                opt(s.map(|s| s.median_ns)),
                opt(s.map(|s| s.mad_ns)),
                opt(s.map(|s| s.ci_low_ns)),
                opt(s.map(|s| s.ci_high_ns)),
                opt(s.map(|s| s.outliers)),
                opt(s.map(|s| s.wall_median_ns)),
                opt(o.map(|o| o.median)),
                opt(o.map(|o| o.ci_low)),
                opt(o.map(|o| o.ci_high)),
                opt(s.and_then(|s| s.checksum.as_ref())),
                opt(s.map(|s| s.checksum_consistent)),
                opt(s.and_then(|s| s.checksum_matches_native)),
            ],
        );
    }
    out
}

/// One row per measured run; counters as `name=value` pairs joined by `;`.
pub fn samples(doc: &Document) -> String {
    let mut out = String::new();
    line(
        &mut out,
        &[
            "workload",
            "backend",
            "round",
            "exit",
            "wall_ns",
            "user_ns",
            "sys_ns",
            "max_rss_kib",
            "loop_ns",
            "iters",
            "ns_per_op",
            "startup_ns",
            "checksum",
            "counters",
        ]
        .map(String::from),
    );
    for r in &doc.samples {
        let c = doc.cell(r.cell);
        let s = &r.sample;
        line(
            &mut out,
            &[
                opt(c.map(|c| &c.workload)),
                opt(c.map(|c| &c.backend)),
                r.round.to_string(),
                match s.exit {
                    Exit::Code { code } => format!("code {code}"),
                    Exit::Signal { signal } => format!("signal {signal}"),
                    Exit::Timeout { after_ms } => format!("timeout {after_ms} ms"),
                    Exit::Interrupted => "interrupted".into(),
                },
                s.wall_ns.to_string(),
                s.user_ns.to_string(),
                s.sys_ns.to_string(),
                s.max_rss_kib.map(|k| k.to_string()).unwrap_or_default(),
                opt(s.report.as_ref().map(|r| r.ns)),
                opt(s.report.as_ref().map(|r| r.iters)),
                opt(s.metric_loop()),
                opt(s.startup_ns),
                opt(s.checksum()),
                s.counters
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(";"),
            ],
        );
    }
    out
}

/// One row per compared cell.
pub fn compare(cmp: &Comparison) -> String {
    let mut out = String::new();
    line(
        &mut out,
        &[
            "workload",
            "backend",
            "params",
            "base_median_ns",
            "new_median_ns",
            "ratio",
            "ratio_low",
            "ratio_high",
            "verdict",
        ]
        .map(String::from),
    );
    for c in &cmp.rows {
        line(
            &mut out,
            &[
                c.cell.workload.clone(),
                c.cell.backend.clone(),
                params(c.cell),
                c.base.median_ns.to_string(),
                c.new.median_ns.to_string(),
                c.ratio.to_string(),
                c.low.to_string(),
                c.high.to_string(),
                c.verdict.word().to_string(),
            ],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_quoted_when_needed() {
        assert_eq!(super::field("a,b"), "\"a,b\"");
        assert_eq!(super::field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(super::field("plain"), "plain");
    }
}
