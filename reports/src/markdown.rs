//! Markdown: fits a CI job summary or a lab write-up. Same sections as the HTML page, without
//! the charts.

use crate::compare::{Comparison, NOISE};
use crate::tables::{self, Table};
use crate::view::View;
use std::fmt::Write;
use vbench_results::{Document, RunStatus};

fn esc(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn table(out: &mut String, t: &Table) {
    let row = |out: &mut String, cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| esc(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    };
    row(out, &t.head);
    let _ = writeln!(
        out,
        "|{}|",
        t.head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in &t.rows {
        row(out, r);
    }
    out.push('\n');
}

/// The Markdown report of one run.
pub fn render(doc: &Document) -> String {
    render_with_banner(doc, None)
}

/// [`render`] with a one-line `banner` (in bold) above the status line. The sections are
/// those of the HTML page: benchmarks, isolation, or both with their trade-off first.
pub fn render_with_banner(doc: &Document, banner: Option<&str>) -> String {
    let view = View::new(doc);
    let bench = doc.has_benchmarks();
    let iso = doc.isolation.as_ref();
    let mut o = String::new();
    let what = match (bench, iso.is_some()) {
        (true, true) => "benchmarks and isolation",
        (false, true) => "isolation",
        _ => "benchmarks",
    };
    let _ = writeln!(o, "# vbench report: {what}\n");
    if let Some(b) = banner {
        let _ = writeln!(o, "**{b}**\n");
    }
    if bench || iso.is_none() {
        let bold = doc.status != RunStatus::Complete || !doc.failures.is_empty();
        if bold {
            let _ = writeln!(o, "**{}**\n", view.status_line());
        } else {
            let _ = writeln!(o, "{}\n", view.status_line());
        }
    }
    if let Some(m) = iso {
        let mut line = tables::isolation_status(m);
        if !bench && doc.status != RunStatus::Complete {
            line = format!("INTERRUPTED: the matrix holds the probes completed. {line}");
        }
        if (m.failed_cells() > 0) || (!bench && doc.status != RunStatus::Complete) {
            let _ = writeln!(o, "**{line}**\n");
        } else {
            let _ = writeln!(o, "{line}\n");
        }
    }

    if bench {
        if let Some(t) = crate::tradeoff::table(&crate::tradeoff::points(&view)) {
            let _ = writeln!(o, "## Isolation and performance\n");
            let _ = writeln!(
                o,
                "What each level costs (geometric mean overhead against native per class of workload) and what it contains (share of the isolation probes that applied to it that it kept from the host: contained, or succeeded only inside its own kernel, machine or namespace).\n"
            );
            table(&mut o, &t);
        }
        benchmark_sections(&mut o, &view);
    }

    if let Some(m) = iso {
        if let Some(t) = tables::isolation(doc) {
            let _ = writeln!(o, "## Isolation\n");
            let _ = writeln!(
                o,
                "`vbench isolate`: each probe tries one escape or limit breach. Native is the control: a probe that does not escape there is BROKEN, so every \"contained\" means something; ESCAPED! is an escape the backend must contain.\n"
            );
            table(&mut o, &t);
            if let Some(n) = tables::isolation_notes(doc) {
                table(&mut o, &n);
            }
        }
        if let Some(rows) = crate::popek::classify(m) {
            let _ = writeln!(
                o,
                "## Popek-Goldberg: what each level made of the instructions\n"
            );
            let _ = writeln!(
                o,
                "Each probe ran the instruction at CPL3 on every level; what it observed, against native, decides the class.\n"
            );
            for p in crate::popek::paragraph(m, &rows) {
                let _ = writeln!(o, "{}\n", esc(&p));
            }
            table(&mut o, &tables::pg_classes(m, &rows));
            let _ = writeln!(o, "Raw observations:\n");
            table(&mut o, &tables::pg_observations(&rows));
        }
        if let Some(t) = tables::edge_probes(doc) {
            let _ = writeln!(o, "## Translation and machine-edge probes\n");
            table(&mut o, &t);
        }
    }

    if bench {
        let _ = writeln!(o, "## Failures\n");
        if doc.failures.is_empty() {
            let _ = writeln!(
                o,
                "None: every run exited cleanly and every checksum agreed with native's.\n"
            );
        } else {
            table(&mut o, &tables::failures(doc));
        }
    }

    let _ = writeln!(o, "## Environment\n");
    table(&mut o, &tables::environment(doc));

    let _ = writeln!(o, "## Reproduce\n");
    let _ = writeln!(o, "```sh\n{}\n```", crate::html::reproduce(doc, &view));
    o
}

/// The benchmark sections: backends, overhead, levels, costs, start-up, noise, peers, counters.
fn benchmark_sections(o: &mut String, view: &View) {
    let _ = writeln!(o, "## Backends\n");
    table(o, &tables::backends(view));

    let _ = writeln!(o, "## Overhead against native\n");
    match tables::overhead(view) {
        Some(t) => {
            let _ = writeln!(
                o,
                "Median of the per-round ratios of time per operation (backend / native, same round), with its 95% bootstrap confidence interval.\n"
            );
            table(o, &t);
        }
        None => {
            let _ = writeln!(
                o,
                "No backend other than the native control ran, so there is no overhead to show.\n"
            );
        }
    }

    if let Some(t) = tables::levels(view) {
        let _ = writeln!(o, "## Levels of virtualization\n");
        table(o, &t);
        for p in tables::levels_text(view) {
            let _ = writeln!(o, "{}\n", esc(&p));
        }
    }

    let _ = writeln!(o, "## Cost per operation\n");
    let _ = writeln!(
        o,
        "Median time of one operation of each workload's measured loop; memory passes also show bytes per pass over time.\n"
    );
    table(o, &tables::costs(view));

    if let Some(t) = tables::startup(view) {
        let _ = writeln!(o, "## Start-up latency\n");
        table(o, &t);
    }

    let _ = writeln!(o, "## Noise\n");
    let warnings = view.noise_warnings();
    if warnings.is_empty() {
        let _ = writeln!(
            o,
            "No cell had outliers or a median absolute deviation above 5% of its median.\n"
        );
    } else {
        for w in &warnings {
            let _ = writeln!(o, "- {}", esc(w));
        }
        o.push('\n');
    }

    if let Some(t) = tables::peers(view) {
        let _ = writeln!(o, "## Peers\n");
        let _ = writeln!(o, "{}\n", tables::PEERS_CAPTION);
        table(o, &t);
    }

    if let Some(t) = tables::counters(view) {
        let _ = writeln!(o, "## Backend counters\n");
        let _ = writeln!(o, "Median per run.\n");
        table(o, &t);
    }
}

/// The Markdown report of a comparison.
pub fn render_compare(cmp: &Comparison) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# vbench comparison\n");
    let base = View::new(cmp.base);
    let new = View::new(cmp.new);
    let _ = writeln!(
        o,
        "Base: started {}. {}\n",
        tables::utc(cmp.base.started_unix_ms),
        base.status_line()
    );
    let _ = writeln!(
        o,
        "New: started {}. {}\n",
        tables::utc(cmp.new.started_unix_ms),
        new.status_line()
    );
    let slower = cmp
        .rows
        .iter()
        .filter(|c| c.verdict == crate::compare::ChangeVerdict::Slower)
        .count();
    let faster = cmp
        .rows
        .iter()
        .filter(|c| c.verdict == crate::compare::ChangeVerdict::Faster)
        .count();
    let _ = writeln!(
        o,
        "{} cells compared: {slower} slower, {faster} faster, the rest within noise (a change counts only when its whole 95% interval lies more than {:.0}% from no change).\n",
        cmp.rows.len(),
        NOISE * 100.0
    );
    table(&mut o, &tables::changes(cmp));
    if !cmp.unmatched.is_empty() {
        let _ = writeln!(o, "## Not compared\n");
        for u in &cmp.unmatched {
            let _ = writeln!(o, "- {}", esc(u));
        }
        o.push('\n');
    }
    if cmp.base.environment != cmp.new.environment {
        let _ = writeln!(
            o,
            "**The two runs were made on different machines or conditions**: compare the environments before trusting a change.\n"
        );
        let _ = writeln!(o, "### Base environment\n");
        table(&mut o, &tables::environment(cmp.base));
        let _ = writeln!(o, "### New environment\n");
        table(&mut o, &tables::environment(cmp.new));
    }
    o
}
