//! Renders the regression gate's judgement ([`GateReport`]) for people and for CI systems:
//! a terminal table, a Markdown summary (fits a CI job summary), JUnit XML (one test case per
//! gated metric, a `<failure>` for each regression) and the JSON array that
//! github-action-benchmark reads with `tool: customSmallerIsBetter`.

use serde::Serialize;
use std::fmt::Write;
use vbench_results::compare::{GateReport, GateVerdict, MetricChange};

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn ci(m: &MetricChange) -> String {
    format!("[{}, {}]", pct(m.ci_low), pct(m.ci_high))
}

fn p(v: f64) -> String {
    if v < 0.001 {
        "<0.001".into()
    } else {
        format!("{v:.3}")
    }
}

fn threshold(t: f64) -> String {
    format!("{:.0}%", t * 100.0)
}

fn headline(r: &GateReport) -> String {
    let reg = r.regressions().count();
    let imp = r.improvements().count();
    if reg > 0 {
        let names: Vec<&str> = r.regressions().map(|m| m.name.as_str()).collect();
        format!(
            "FAIL: {reg} regression(s) of {} gated metric(s): {}",
            r.metrics.len(),
            names.join(", ")
        )
    } else {
        format!(
            "PASS: no regression in {} gated metric(s){}",
            r.metrics.len(),
            if imp > 0 {
                format!(", {imp} improvement(s)")
            } else {
                String::new()
            }
        )
    }
}

fn explain(m: &MetricChange, alpha: f64) -> String {
    let sig = if m.significant(alpha) {
        "significant"
    } else {
        "not significant"
    };
    format!(
        "{}: overhead {:.3}x -> {:.3}x ({} {}, p={} {sig} at alpha {alpha}; threshold {})",
        m.name,
        m.base_median,
        m.new_median,
        pct(m.change),
        ci(m),
        p(m.p_value),
        threshold(m.threshold)
    )
}

/// A plain-text table for the terminal, with the verdict first.
pub fn text(r: &GateReport) -> String {
    let mut rows = vec![[
        "metric".to_string(),
        "baseline".into(),
        "current".into(),
        "change".into(),
        format!("{:.0}% CI", (1.0 - r.alpha) * 100.0),
        "p".into(),
        "threshold".into(),
        "verdict".into(),
    ]];
    for m in &r.metrics {
        rows.push([
            m.name.clone(),
            format!("{:.3}x", m.base_median),
            format!("{:.3}x", m.new_median),
            pct(m.change),
            ci(m),
            p(m.p_value),
            threshold(m.threshold),
            m.verdict.as_str().to_uppercase(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "{}", rule.join("  "));
        }
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(out, "{}", headline(r));
    for m in r.regressions() {
        let _ = writeln!(out, "  regression: {}", explain(m, r.alpha));
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A Markdown summary: verdict, the rule applied, and one table row per gated metric.
pub fn markdown(r: &GateReport) -> String {
    let mut out = String::new();
    let icon = if r.passed() { "✅" } else { "❌" };
    let _ = writeln!(out, "## vbench gate: {icon} {}\n", headline(r));
    let _ = writeln!(
        out,
        "Overhead ratios (backend / native, paired per round) of **{}** against the baseline **{}**. \
         A regression is a change that is significant (permutation test, alpha {}) *and* whose whole \
         {:.0}% confidence interval lies beyond the noise threshold (default {}).\n",
        md_escape(label(&r.new.label, "current results")),
        md_escape(label(&r.base.label, "baseline")),
        r.alpha,
        (1.0 - r.alpha) * 100.0,
        threshold(r.threshold)
    );
    let _ = writeln!(
        out,
        "| metric | baseline | current | change | {:.0}% CI | p | threshold | verdict |",
        (1.0 - r.alpha) * 100.0
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---:|---:|---|");
    for m in &r.metrics {
        let verdict = match m.verdict {
            GateVerdict::Regression => "❌ **regression**",
            GateVerdict::Improvement => "🚀 improvement",
            GateVerdict::Unchanged => "unchanged",
            GateVerdict::Ignored => "ignored",
        };
        let _ = writeln!(
            out,
            "| `{}` | {:.3}x | {:.3}x | {} | {} | {} | {} | {verdict} |",
            md_escape(&m.name),
            m.base_median,
            m.new_median,
            pct(m.change),
            ci(m),
            p(m.p_value),
            threshold(m.threshold)
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out);
        for n in &r.notes {
            let _ = writeln!(out, "- note: {}", md_escape(n));
        }
    }
    let _ = writeln!(
        out,
        "\nBaseline: {} rounds{}, vbench {}. Current: {} rounds{}, vbench {}.",
        r.base.rounds,
        if r.base.quick { " (quick)" } else { "" },
        r.base.tool_version,
        r.new.rounds,
        if r.new.quick { " (quick)" } else { "" },
        r.new.tool_version
    );
    out
}

fn label<'a>(l: &'a str, fallback: &'a str) -> &'a str {
    if l.is_empty() {
        fallback
    } else {
        l
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // characters XML 1.0 cannot hold at all
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testcase>` per gated metric (classname `vbench.gate.<backend>`), a
/// `<failure>` for each regression, `<skipped>` for ignored metrics.
pub fn junit(r: &GateReport) -> String {
    let failures = r.regressions().count();
    let skipped = r
        .metrics
        .iter()
        .filter(|m| m.verdict == GateVerdict::Ignored)
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"vbench gate\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        r.metrics.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"vbench gate: overhead ratios against {}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        xml_escape(label(&r.base.label, "baseline")),
        r.metrics.len()
    );
    for m in &r.metrics {
        let _ = write!(
            out,
            "    <testcase classname=\"vbench.gate.{}\" name=\"{} overhead\"",
            xml_escape(&m.backend),
            xml_escape(&m.name)
        );
        let detail = xml_escape(&explain(m, r.alpha));
        match m.verdict {
            GateVerdict::Regression => {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{} regressed by {}\" type=\"regression\">{detail}</failure>\n    </testcase>",
                    xml_escape(&m.name),
                    pct(m.change)
                );
            }
            GateVerdict::Ignored => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"ignored by the gate configuration\"/>\n      <system-out>{detail}</system-out>\n    </testcase>"
                );
            }
            GateVerdict::Unchanged | GateVerdict::Improvement => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>{detail}</system-out>\n    </testcase>"
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// One entry of github-action-benchmark's `customSmallerIsBetter` array, fields in its order.
#[derive(Serialize)]
struct BenchmarkEntry {
    name: String,
    unit: &'static str,
    /// Rounded to 6 decimals; `null` when not finite.
    value: Option<f64>,
    range: String,
    extra: String,
}

impl BenchmarkEntry {
    fn of(m: &MetricChange) -> Self {
        let half = (m.new_ci.1 - m.new_ci.0) / 2.0;
        BenchmarkEntry {
            name: format!("{} overhead", m.name),
            unit: "x native",
            value: Some((m.new_median * 1e6).round() / 1e6).filter(|v| v.is_finite()),
            range: format!("± {half:.4}"),
            extra: format!(
                "{}; {} rounds; baseline {:.4}x; change {} {}; p={}",
                m.verdict.as_str(),
                m.new_n,
                m.base_median,
                pct(m.change),
                ci(m),
                p(m.p_value)
            ),
        }
    }
}

/// The JSON array github-action-benchmark reads with `tool: customSmallerIsBetter`: one entry
/// per gated metric (one per line), `value` the current median overhead ratio (smaller is
/// better), `range` the half-width of its 95% interval, `extra` the gate's verdict and numbers.
pub fn benchmark_json(r: &GateReport) -> String {
    let entries: Vec<String> = r
        .metrics
        .iter()
        .map(|m| {
            let entry = serde_json::to_string(&BenchmarkEntry::of(m))
                .expect("a struct of strings and numbers always serializes");
            format!("  {entry}")
        })
        .collect();
    format!("[\n{}\n]\n", entries.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vbench_results::compare::RunInfo;
    use vbench_results::RunStatus;

    fn metric(name: &str, change: f64, verdict: GateVerdict) -> MetricChange {
        let (workload, backend) = name.split_once('/').unwrap();
        MetricChange {
            name: name.into(),
            workload: workload.into(),
            backend: backend.into(),
            args: vec![],
            base_median: 1.2,
            base_n: 10,
            new_median: 1.2 * (1.0 + change),
            new_ci: (1.1, 1.3),
            new_n: 10,
            change,
            ci_low: change - 0.05,
            ci_high: change + 0.05,
            p_value: if verdict == GateVerdict::Unchanged {
                0.4
            } else {
                0.0001
            },
            threshold: 0.1,
            config_key: None,
            verdict,
        }
    }

    fn report(metrics: Vec<MetricChange>) -> GateReport {
        let info = RunInfo {
            label: "main <&>".into(),
            started_unix_ms: 0,
            rounds: 10,
            quick: true,
            status: RunStatus::Complete,
            tool_version: "0.1.0".into(),
            hostname: "h".into(),
        };
        GateReport {
            base: info.clone(),
            new: RunInfo {
                label: "new.json".into(),
                ..info
            },
            alpha: 0.05,
            threshold: 0.1,
            metrics,
            notes: vec!["a \"note\"".into()],
        }
    }

    fn sample() -> GateReport {
        report(vec![
            metric("intmix/container", 0.4, GateVerdict::Regression),
            metric("getpid/container", 0.01, GateVerdict::Unchanged),
            metric("sha256/kvm", -0.3, GateVerdict::Improvement),
            metric("brk/bt", 0.0, GateVerdict::Ignored),
        ])
    }

    #[test]
    fn text_names_the_regression() {
        let t = text(&sample());
        assert!(t.contains("FAIL: 1 regression(s) of 4 gated metric(s): intmix/container"));
        assert!(t.contains("  regression: intmix/container: overhead 1.200x -> 1.680x (+40.0%"));
        assert!(t.contains("note: a \"note\""));
        let pass = text(&report(vec![metric("a/b", 0.0, GateVerdict::Unchanged)]));
        assert!(
            pass.contains("PASS: no regression in 1 gated metric(s)"),
            "{pass}"
        );
    }

    #[test]
    fn markdown_has_one_row_per_metric() {
        let md = markdown(&sample());
        assert!(md.starts_with("## vbench gate: ❌ FAIL"), "{md}");
        assert_eq!(md.matches("\n| `").count(), 4, "{md}");
        assert!(md.contains("| `intmix/container` | 1.200x | 1.680x | +40.0% | [+35.0%, +45.0%] | <0.001 | 10% | ❌ **regression** |"), "{md}");
        assert!(md.contains("🚀 improvement"));
    }

    #[test]
    fn junit_has_one_testcase_per_metric_and_failures_for_regressions() {
        let x = junit(&sample());
        assert_eq!(x.matches("<testcase ").count(), 4);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert_eq!(x.matches("<skipped ").count(), 1);
        assert!(x.contains("tests=\"4\" failures=\"1\" errors=\"0\" skipped=\"1\""));
        assert!(x.contains("against main &lt;&amp;&gt;"), "{x}");
        assert!(x.contains(
            "<testcase classname=\"vbench.gate.container\" name=\"intmix/container overhead\">\n      <failure message=\"intmix/container regressed by +40.0%\""
        ), "{x}");
        // every opened element is closed
        assert_eq!(
            x.matches("<testcase ").count(),
            x.matches("</testcase>").count()
        );
        assert_eq!(xml_escape("a\u{1}b'"), "a?b&apos;");
    }

    #[test]
    fn benchmark_json_is_the_custom_smaller_is_better_array() {
        let j = benchmark_json(&sample());
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 4);
        assert_eq!(arr[0]["name"], "intmix/container overhead");
        assert_eq!(arr[0]["unit"], "x native");
        assert_eq!(arr[0]["value"], 1.68);
        assert_eq!(arr[0]["range"], "± 0.1000");
        assert!(arr[0]["extra"]
            .as_str()
            .unwrap()
            .starts_with("regression; 10 rounds"));
        assert_eq!(benchmark_json(&report(vec![])), "[\n\n]\n");
    }

    #[test]
    fn benchmark_json_parses_back_whatever_the_names_hold() {
        let odd = "we\"ird\\name\n\t\u{1}\u{7f}é\u{2028}/back\\\"end";
        let mut m = metric("a/b", 0.1, GateVerdict::Regression);
        m.name = odd.into();
        m.new_median = f64::NAN;
        let mut plain = metric("c/d", 0.0, GateVerdict::Unchanged);
        plain.name = "c\\\"/d".into();
        let j = benchmark_json(&report(vec![m, plain]));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v[0]["name"], format!("{odd} overhead"));
        assert_eq!(v[0]["value"], serde_json::Value::Null);
        assert!(v[0]["extra"].as_str().unwrap().starts_with("regression;"));
        assert_eq!(v[1]["name"], "c\\\"/d overhead");
        assert_eq!(v[1]["value"], 1.2);
        assert_eq!(v[1]["unit"], "x native");
        // one entry per line, fields in github-action-benchmark's order
        assert_eq!(j.lines().count(), 4, "{j}");
        assert!(
            j.lines()
                .nth(2)
                .unwrap()
                .starts_with(r#"  {"name":"c\\\"/d"#),
            "{j}"
        );
    }
}
