//! The isolation matrix, the Popek-Goldberg table and the notes as terminal text.

use vbench_results::{IsolationMatrix, ProbeCell, ProbeRow, ProbeVerdict};
use vbench_workloads::probes::{Kind, CONTROL};

/// Whether a row's kind (as written in the document) records an observation, not a verdict.
fn is_observation(kind: &str) -> bool {
    Kind::parse(kind).is_some_and(Kind::observes)
}

/// The matrix, the Popek-Goldberg table and the notes, as terminal text.
pub fn render(m: &IsolationMatrix) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let names: Vec<&str> = m.backends.iter().map(|b| b.name.as_str()).collect();
    let verdict_rows: Vec<&ProbeRow> = m
        .probes
        .iter()
        .filter(|r| !is_observation(&r.kind))
        .collect();
    let w0 = m
        .probes
        .iter()
        .map(|r| r.probe.len())
        .max()
        .unwrap_or(5)
        .max(5);
    if !verdict_rows.is_empty() {
        let _ = write!(o, "{:<w0$}  {:<11}", "probe", "kind");
        for n in &names {
            let _ = write!(o, "  {n:<10}");
        }
        o.push('\n');
    }
    for r in &verdict_rows {
        let _ = write!(o, "{:<w0$}  {:<11}", r.probe, r.kind);
        for c in &r.cells {
            // an escape that stays inside the level's own kernel or namespace says so
            let label = if c.escaped_inside() {
                "inside"
            } else {
                c.verdict.label()
            };
            let _ = write!(o, "  {label:<10}");
        }
        o.push('\n');
    }
    let pg: Vec<&ProbeRow> = m
        .probes
        .iter()
        .filter(|r| is_observation(&r.kind))
        .collect();
    if !pg.is_empty() {
        let _ = writeln!(
            o,
            "\nPopek-Goldberg, translation and machine-edge probes: what each backend observed at CPL3"
        );
        for r in &pg {
            let native = r.cells.iter().find(|c| c.backend == CONTROL);
            for c in &r.cells {
                let v = match c.verdict {
                    ProbeVerdict::Observed => {
                        let differs = native.is_some_and(|n| {
                            n.backend != c.backend
                                && n.verdict == ProbeVerdict::Observed
                                && n.detail != c.detail
                        });
                        format!("{}{}", c.detail, if differs { "  (≠ native)" } else { "" })
                    }
                    v => format!("{} {}", v.label(), c.note),
                };
                let _ = writeln!(o, "{:<w0$}  {:<10}  {v}", r.probe, c.backend);
            }
        }
    }
    let notes: Vec<(&ProbeRow, &ProbeCell)> = m
        .probes
        .iter()
        .flat_map(|r| r.cells.iter().map(move |c| (r, c)))
        .filter(|(r, c)| {
            !c.note.is_empty() && c.verdict != ProbeVerdict::Unavailable && !is_observation(&r.kind)
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(o, "\nnotes:");
        for (r, c) in notes {
            let _ = writeln!(
                o,
                "  {} on {}: {}: {}{}",
                r.probe,
                c.backend,
                c.verdict.label(),
                c.note,
                if c.detail.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", c.detail)
                }
            );
        }
    }
    for b in m.backends.iter().filter(|b| !b.available) {
        let _ = writeln!(
            o,
            "{}: unavailable: {}",
            b.name,
            b.reason.as_deref().unwrap_or("")
        );
    }
    o
}
