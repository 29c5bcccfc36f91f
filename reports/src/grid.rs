//! Coloured grids as inline SVG: the isolation matrix (probe x backend) and the Popek-Goldberg
//! classification (instruction x level).
//!
//! Written directly rather than with plotters: a grid is rectangles and centred labels in pixel
//! positions, and every cell needs a `<title>` (its reason, shown on hover), which plotters'
//! SVG backend cannot emit. The layout reserves room with the same conservative text width as
//! the charts ([`crate::charts::text_width`]) and the browser check verifies it. Every cell
//! carries a text label, so the grid reads in grey print and without colour vision.

use crate::charts::{text_width, Chart, WIDTH};
use crate::html::esc;
use crate::popek::{PgCell, PgClass, PgRow};
use std::fmt::Write;
use vbench_results::{IsolationMatrix, ProbeVerdict};

/// One cell: its label, fill colour and hover text.
struct Cell {
    label: &'static str,
    fill: &'static str,
    title: String,
}

/// Rows under a heading.
struct Group {
    name: String,
    rows: Vec<(String, Vec<Cell>)>,
}

const TITLE_PX: f64 = 18.0;
const HEAD_PX: f64 = 12.0;
const CELL_PX: f64 = 11.0;
const ROW_H: f64 = 22.0;

/// A column's name on up to two lines, split after its `/` (`bt/host` -> `bt`, `/host`).
fn head_lines(name: &str) -> Vec<String> {
    match name.find('/') {
        Some(i) => vec![name[..i].to_string(), name[i..].to_string()],
        None => vec![name.to_string()],
    }
}

fn draw(title: &str, columns: &[String], groups: &[Group], legend: &[(&str, &str)]) -> String {
    let row_label_w = groups
        .iter()
        .flat_map(|g| {
            g.rows
                .iter()
                .map(|(r, _)| text_width(r, HEAD_PX))
                .chain([text_width(&g.name, 13.0) - 40.0])
        })
        .fold(60.0, f64::max)
        + 40.0;
    let mut col_w: f64 = columns
        .iter()
        .flat_map(|c| head_lines(c))
        .map(|l| text_width(&l, HEAD_PX) + 10.0)
        .chain(
            groups
                .iter()
                .flat_map(|g| &g.rows)
                .flat_map(|(_, cells)| cells)
                .map(|c| text_width(c.label, CELL_PX) + 10.0),
        )
        .fold(48.0, f64::max);
    let width = (row_label_w + col_w * columns.len() as f64 + 20.0).max(WIDTH as f64);
    // spread the columns over the width, up to a comfortable size
    let spare = (width - 20.0 - row_label_w) / columns.len().max(1) as f64;
    col_w = col_w.max(spare.min(130.0));

    // legend lines, wrapped
    let mut legend_pos: Vec<(f64, f64, &str, &str)> = Vec::new();
    let (mut x, mut y) = (20.0, 48.0);
    for (label, fill) in legend {
        let w = 14.0 + 6.0 + text_width(label, HEAD_PX) + 24.0;
        if x + w > width - 20.0 && x > 20.0 {
            x = 20.0;
            y += 22.0;
        }
        legend_pos.push((x, y, label, fill));
        x += w;
    }
    let head_top = y + 26.0;
    let head_h = 2.0 * 16.0 + 6.0;
    let mut top = head_top + head_h;
    let nrows: usize = groups.iter().map(|g| g.rows.len()).sum();
    let height = (top + groups.len() as f64 * 26.0 + nrows as f64 * ROW_H + 16.0).ceil();

    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">",
        w = width.ceil(),
        h = height
    );
    let _ = writeln!(
        o,
        "<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{height}\" fill=\"#ffffff\"/>",
        width.ceil()
    );
    let _ = writeln!(
        o,
        "<text x=\"{}\" y=\"26\" font-size=\"{TITLE_PX}\" text-anchor=\"middle\">{}</text>",
        width / 2.0,
        esc(title)
    );
    for (x, y, label, fill) in &legend_pos {
        let _ = writeln!(
            o,
            "<rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"{fill}\" stroke=\"#666666\"/><text x=\"{}\" y=\"{}\" font-size=\"{HEAD_PX}\">{}</text>",
            y - 11.0,
            x + 20.0,
            y,
            esc(label)
        );
    }
    for (i, c) in columns.iter().enumerate() {
        let cx = row_label_w + col_w * (i as f64 + 0.5);
        for (j, line) in head_lines(c).iter().enumerate() {
            let _ = writeln!(
                o,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"{HEAD_PX}\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>",
                head_top + 14.0 + 16.0 * j as f64,
                esc(line)
            );
        }
    }
    for g in groups {
        let _ = writeln!(
            o,
            "<text x=\"20\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\" font-style=\"italic\">{}</text>",
            top + 18.0,
            esc(&g.name)
        );
        top += 26.0;
        for (label, cells) in &g.rows {
            let _ = writeln!(
                o,
                "<text x=\"28\" y=\"{:.1}\" font-size=\"{HEAD_PX}\">{}</text>",
                top + 15.5,
                esc(label)
            );
            for (i, c) in cells.iter().enumerate() {
                let x = row_label_w + col_w * i as f64;
                let _ = writeln!(
                    o,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" stroke=\"#ffffff\" stroke-width=\"2\"><title>{}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{CELL_PX}\" text-anchor=\"middle\" pointer-events=\"none\">{}</text>",
                    x,
                    top,
                    col_w,
                    ROW_H,
                    c.fill,
                    esc(&c.title),
                    x + col_w / 2.0,
                    top + 15.0,
                    esc(c.label)
                );
            }
            top += ROW_H;
        }
    }
    o.push_str("</svg>\n");
    o
}

/// The fill of an escape that stays inside the level's own kernel, machine or namespace.
const INSIDE_FILL: &str = "#b5e3d8";

/// A cell's hover text: `probe on backend: what`, then the cell's note and the probe's detail.
fn hover(probe: &str, c: &vbench_results::ProbeCell, what: &str) -> String {
    let mut title = format!("{probe} on {}: {what}", c.backend);
    if !c.note.is_empty() {
        title.push_str(&format!(": {}", c.note));
    }
    if !c.detail.is_empty() {
        title.push_str(&format!(" [{}]", c.detail));
    }
    title
}

/// The isolation matrix's label, colour and legend text for a verdict.
fn verdict_cell(v: ProbeVerdict) -> (&'static str, &'static str) {
    match v {
        ProbeVerdict::Contained => ("contained", "#8cd17d"),
        ProbeVerdict::Escaped => ("by design", "#c9c3e6"),
        ProbeVerdict::Breach => ("ESCAPED!", "#ff6f6b"),
        ProbeVerdict::NotApplicable => ("n/a", "#eeeeee"),
        ProbeVerdict::Broken => ("BROKEN", "#f5a25a"),
        ProbeVerdict::Unavailable => ("not run", "#ffffff"),
        ProbeVerdict::Observed => ("observed", "#e3e3e3"),
    }
}

const VERDICT_LEGEND: [(ProbeVerdict, &str); 6] = [
    (ProbeVerdict::Contained, "contained"),
    (
        ProbeVerdict::Escaped,
        "escaped by design (the native control, or a documented permission)",
    ),
    (ProbeVerdict::Breach, "ESCAPED! (must be contained)"),
    (ProbeVerdict::NotApplicable, "n/a"),
    (ProbeVerdict::Broken, "BROKEN probe"),
    (ProbeVerdict::Unavailable, "not run (backend unavailable)"),
];

/// The isolation matrix as a grid: one row per escape or limit probe, grouped by kind, one
/// column per backend; `None` without such probes.
pub fn isolation(m: &IsolationMatrix) -> Option<Chart> {
    let mut groups: Vec<Group> = Vec::new();
    for r in m
        .probes
        .iter()
        .filter(|r| !crate::tables::is_observation(&r.kind))
    {
        if groups.last().is_none_or(|g| g.name != r.kind) {
            groups.push(Group {
                name: r.kind.clone(),
                rows: Vec::new(),
            });
        }
        let cells = r
            .cells
            .iter()
            .map(|c| {
                let (label, fill) = if c.escaped_inside() {
                    ("inside", INSIDE_FILL)
                } else {
                    verdict_cell(c.verdict)
                };
                let title = hover(&r.probe, c, c.verdict.label());
                Cell { label, fill, title }
            })
            .collect();
        groups
            .last_mut()
            .expect("pushed")
            .rows
            .push((r.probe.clone(), cells));
    }
    if groups.is_empty() {
        return None;
    }
    let cells = || {
        m.probes
            .iter()
            .filter(|r| !crate::tables::is_observation(&r.kind))
            .flat_map(|r| &r.cells)
    };
    let present: Vec<ProbeVerdict> = cells()
        .filter(|c| !c.escaped_inside())
        .map(|c| c.verdict)
        .collect();
    let mut legend: Vec<(&str, &str)> = VERDICT_LEGEND
        .iter()
        .filter(|(v, _)| present.contains(v))
        .map(|(v, text)| (*text, verdict_cell(*v).1))
        .collect();
    if cells().any(|c| c.escaped_inside()) {
        legend.insert(
            1.min(legend.len()),
            (
                "inside: succeeded only in the level's own kernel or namespace",
                INSIDE_FILL,
            ),
        );
    }
    let columns: Vec<String> = m.backends.iter().map(|b| b.name.clone()).collect();
    let title = "What each level contains: probe x backend";
    Some(Chart {
        name: "isolation".into(),
        title: title.into(),
        caption: "Each row is one attempt to see or reach the host, to act as its root, or to exceed a limit; each column a backend. Native is the control, where every attempt must succeed (\u{201c}by design\u{201d}) for a \u{201c}contained\u{201d} elsewhere to mean something; \u{201c}inside\u{201d} is an attempt that succeeded only on the level's own kernel, machine or namespace (a guest's root on its guest kernel), never reaching the host; ESCAPED! is an isolation failure. Hover over a cell for its reason; the table below lists every reason.".into(),
        svg: draw(title, &columns, &groups, &legend),
    })
}

/// The Popek-Goldberg classification as a grid: one row per instruction, grouped by what x86
/// makes of it at CPL3, one column per level.
pub fn popek_goldberg(m: &IsolationMatrix, rows: &[PgRow]) -> Chart {
    let mut groups: Vec<Group> = Vec::new();
    for r in rows {
        let name = match r.row.cpl3 {
            Some(vbench_results::Cpl3Class::Sensitive) => "sensitive, unprivileged",
            Some(vbench_results::Cpl3Class::Privileged) => "privileged (for contrast)",
            Some(vbench_results::Cpl3Class::Unrestricted) => "neither (CPUID, RDTSC, INT3)",
            None => "instructions (their class at CPL3 not recorded)",
        };
        let cells = r
            .cells
            .iter()
            .zip(&r.row.cells)
            .map(|(pc, c)| {
                let (label, fill) = match pc {
                    PgCell::Class(k) => (k.short(), k.colour()),
                    PgCell::None(s) => (*s, "#ffffff"),
                };
                let title = hover(&r.row.probe, c, pc.label());
                Cell { label, fill, title }
            })
            .collect();
        match groups.iter_mut().find(|g| g.name == name) {
            Some(g) => g.rows.push((r.row.probe.clone(), cells)),
            None => groups.push(Group {
                name: name.into(),
                rows: vec![(r.row.probe.clone(), cells)],
            }),
        }
    }
    let labels: Vec<String> = PgClass::ALL
        .iter()
        .map(|c| {
            if c.label().starts_with(c.short()) {
                c.label().to_string()
            } else {
                format!("{}: {}", c.short(), c.label())
            }
        })
        .collect();
    let legend: Vec<(&str, &str)> = PgClass::ALL
        .iter()
        .zip(&labels)
        .filter(|(c, _)| rows.iter().any(|r| r.cells.contains(&PgCell::Class(**c))))
        .map(|(c, l)| (l.as_str(), c.colour()))
        .collect();
    let columns: Vec<String> = m.backends.iter().map(|b| b.name.clone()).collect();
    let title = "What each level made of the instructions at CPL3";
    Chart {
        name: "popek-goldberg".into(),
        title: title.into(),
        caption: "Each row is one x86 instruction run at CPL3, each column a level; the cell says what the level made of it, judged from what the probe observed against native. \u{201c}silent\u{201d} on a sensitive instruction is Popek and Goldberg's problem: it ran without a trap, so a trap-and-emulate VMM could not intervene. Hover over a cell for the raw observation; the table below lists them.".into(),
        svg: draw(title, &columns, &groups, &legend),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_split_after_the_slash() {
        assert_eq!(head_lines("bt/host"), ["bt", "/host"]);
        assert_eq!(head_lines("native"), ["native"]);
    }
}
