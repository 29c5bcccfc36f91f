//! The lecture's trade-off in one picture: each level of virtualization as a point, its
//! overhead against native across, the share of the isolation probes it keeps from the host up, and its
//! start-up cost in its label. Needs a document with both benchmarks and an isolation matrix
//! (`vbench run --isolate`, or `vbench report RUN.json ISOLATE.json`).

use crate::charts::{self, text_width, Chart, WIDTH};
use crate::tables::Table;
use crate::view::{View, NATIVE};
use crate::{fmt_ns, ReportError};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use vbench_results::ProbeVerdict;

/// The classes whose geometric mean places a level on the overhead axis.
const CLASSES: [&str; 3] = ["cpu", "mem", "sys"];

/// One level on both axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Point<'a> {
    /// The backend (and isolation column) name.
    pub backend: &'a str,
    /// Geometric mean of the per-class geometric means (1 for native).
    pub overhead: f64,
    /// Each class's geometric mean.
    pub per_class: Vec<(&'static str, f64)>,
    /// Probes kept from the host (contained, or succeeded only inside the level's own kernel,
    /// machine or namespace), and probes that applied (contained, escaped or breached).
    pub contained: usize,
    /// See `contained`.
    pub applicable: usize,
    /// Median start-up: the backend's own figure, else wall time outside the loop.
    pub startup_ns: Option<f64>,
}

impl Point<'_> {
    /// Share kept from the host, 0 to 1.
    pub fn share(&self) -> f64 {
        self.contained as f64 / self.applicable.max(1) as f64
    }
}

/// Every level with an overhead (native: 1) and an isolation column of the same name, in the
/// lecture's order.
pub fn points<'a>(view: &View<'a>) -> Vec<Point<'a>> {
    let Some(m) = view.doc.isolation.as_ref() else {
        return Vec::new();
    };
    let startup = view.startup();
    let contained = |b: &str| -> Option<(usize, usize)> {
        let col = m.backends.iter().position(|c| c.name == b)?;
        let mut yes = 0;
        let mut all = 0;
        for r in m
            .probes
            .iter()
            .filter(|r| !crate::tables::is_observation(&r.kind))
        {
            let Some(c) = r.cells.get(col) else { continue };
            match c.verdict {
                ProbeVerdict::Contained => {
                    yes += 1;
                    all += 1;
                }
                ProbeVerdict::Escaped if c.escaped_inside() => {
                    yes += 1;
                    all += 1;
                }
                ProbeVerdict::Escaped | ProbeVerdict::Breach => all += 1,
                _ => {}
            }
        }
        (all > 0).then_some((yes, all))
    };
    let start = |b: &str| -> Option<f64> {
        let s = startup.iter().find(|s| s.backend == b)?;
        s.reported
            .as_ref()
            .or(s.outside_loop.as_ref())
            .map(|s| s.median)
    };
    let mut out = Vec::new();
    if let (true, Some((c, a))) = (view.ran.contains(&NATIVE), contained(NATIVE)) {
        out.push(Point {
            backend: NATIVE,
            overhead: 1.0,
            per_class: Vec::new(),
            contained: c,
            applicable: a,
            startup_ns: start(NATIVE),
        });
    }
    for l in view.levels() {
        let Some((c, a)) = contained(l.backend) else {
            continue;
        };
        let mut per: Vec<(&'static str, f64)> = CLASSES
            .iter()
            .filter_map(|k| l.class(k).map(|o| (o.class, o.geomean)))
            .collect();
        if per.is_empty() {
            per = l.classes.iter().map(|o| (o.class, o.geomean)).collect();
        }
        let Some(first) = per.first() else { continue };
        let overhead = if per.len() == 1 {
            first.1
        } else {
            (per.iter().map(|(_, g)| g.ln()).sum::<f64>() / per.len() as f64).exp()
        };
        out.push(Point {
            backend: l.backend,
            overhead,
            per_class: per,
            contained: c,
            applicable: a,
            startup_ns: start(l.backend),
        });
    }
    out
}

/// The points as a table: per class and overall overhead, share contained, start-up.
pub fn table(points: &[Point]) -> Option<Table> {
    if points.len() < 2 {
        return None;
    }
    let classes: Vec<&str> = CLASSES
        .iter()
        .copied()
        .filter(|c| {
            points
                .iter()
                .any(|p| p.per_class.iter().any(|(k, _)| k == c))
        })
        .collect();
    let mut head = vec!["level".to_string()];
    head.extend(classes.iter().map(|c| format!("{c} overhead")));
    head.extend([
        "overall (geomean)".to_string(),
        "kept from the host".to_string(),
        "start-up".to_string(),
    ]);
    let rows = points
        .iter()
        .map(|p| {
            let mut r = vec![p.backend.to_string()];
            for c in &classes {
                r.push(match p.per_class.iter().find(|(k, _)| k == c) {
                    Some((_, g)) => format!("{g:.2}x"),
                    None if p.backend == NATIVE => "1.00x".into(),
                    None => "-".into(),
                });
            }
            r.push(format!("{:.2}x", p.overhead));
            r.push(format!(
                "{:.0}% ({} of {})",
                p.share() * 100.0,
                p.contained,
                p.applicable
            ));
            r.push(p.startup_ns.map(fmt_ns).unwrap_or_else(|| "-".into()));
            r
        })
        .collect();
    Some(Table { head, rows })
}

/// Whether two boxes `[x0, y0, x1, y1]` overlap.
fn overlaps(a: [f64; 4], b: [f64; 4]) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

/// Places each label beside its point: the first position, nearest first (right, left,
/// centred above and below, then further up and down), that stays inside `area` and clear of
/// every point and every label placed before; when none is free, the nearest that stays inside.
/// Returns the text's anchor (left, vertical centre) per label.
fn place(points: &[(f64, f64)], widths: &[f64], h: f64, area: [f64; 4]) -> Vec<(f64, f64)> {
    let mut taken: Vec<[f64; 4]> = points
        .iter()
        .map(|(x, y)| [x - 5.0, y - 5.0, x + 5.0, y + 5.0])
        .collect();
    let mut out = Vec::new();
    for (i, (&(x, y), &w)) in points.iter().zip(widths).enumerate() {
        let mut cands = vec![(x + 10.0, y), (x - 10.0 - w, y)];
        for k in 1..=12 {
            let dy = k as f64 * h;
            for sy in [-dy, dy] {
                cands.extend([
                    (x - w / 2.0, y + sy),
                    (x + 8.0, y + sy),
                    (x - 8.0 - w, y + sy),
                ]);
            }
        }
        let inside = |(lx, ly): (f64, f64)| {
            lx >= area[0] && lx + w <= area[2] && ly - h / 2.0 >= area[1] && ly + h / 2.0 <= area[3]
        };
        let free = |(lx, ly): (f64, f64)| {
            let b = [lx, ly - h / 2.0, lx + w, ly + h / 2.0];
            taken
                .iter()
                .enumerate()
                .all(|(j, t)| j == i || !overlaps(b, *t))
        };
        let at = cands
            .iter()
            .copied()
            .find(|c| inside(*c) && free(*c))
            .or_else(|| cands.iter().copied().find(|c| inside(*c)))
            .unwrap_or((area[0], y));
        taken.push([at.0, at.1 - h / 2.0, at.0 + w, at.1 + h / 2.0]);
        out.push(at);
    }
    out
}

/// The label of a point: name, overhead, share contained, start-up.
fn label(p: &Point) -> String {
    let mut s = format!(
        "{} {:.2}x, {:.0}%",
        p.backend,
        p.overhead,
        p.share() * 100.0
    );
    if let Some(ns) = p.startup_ns {
        s.push_str(&format!(", start-up {}", fmt_ns(ns)));
    }
    s
}

/// The chart, or `None` unless native and at least two other levels have both figures.
pub fn chart(view: &View, points: &[Point]) -> Result<Option<Chart>, ReportError> {
    if points.len() < 3 {
        return Ok(None);
    }
    let name = "tradeoff";
    let err = |e: String| ReportError::Chart {
        name: name.into(),
        message: e,
    };
    let height = 560u32;
    let hi = points.iter().map(|p| p.overhead).fold(1.0, f64::max);
    let lo = points.iter().map(|p| p.overhead).fold(1.0, f64::min);
    // the data's span with room for the labels, ticks at 1-2-5 (or per decade) inside it
    let (x0, x1) = ((lo.min(1.0) / 1.5).log10(), (hi * 1.5).log10());
    let ticks: Vec<f64> = charts::log_ticks(10f64.powf(x0), 10f64.powf(x1))
        .0
        .into_iter()
        .filter(|t| *t >= x0 && *t <= x1)
        .collect();
    let labels: Vec<String> = points.iter().map(label).collect();
    let title = "Isolation against overhead: the levels of virtualization";
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        root.draw(&Text::new(
            title,
            (WIDTH as i32 / 2, 10),
            charts::font(18.0).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(|e| err(e.to_string()))?;
        let xr = charts::Axis::new(x0..x1, ticks);
        let yr = charts::Axis::new(-5.0..112.0, vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        let mut chart = ChartBuilder::on(&root)
            .margin_top(44)
            .margin_right(30)
            .margin_left(8)
            .x_label_area_size(52)
            .y_label_area_size(70)
            .build_cartesian_2d(xr, yr)
            .map_err(|e| err(e.to_string()))?;
        let fx = |v: &f64| charts::fmt_ratio(10f64.powf(*v));
        let fy = |v: &f64| format!("{v:.0}%");
        chart
            .configure_mesh()
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .x_desc("overhead against native (geometric mean of the cpu, mem and sys classes, log scale)")
            .y_desc("probes kept from the host")
            .label_style(charts::font(12.0))
            .axis_desc_style(charts::font(13.0))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let px: Vec<(f64, f64)> = points
            .iter()
            .map(|p| {
                let (x, y) = chart.backend_coord(&(p.overhead.log10(), p.share() * 100.0));
                (x as f64, y as f64)
            })
            .collect();
        let (ax, ay) = chart.backend_coord(&(x0, 112.0));
        let (bx, by) = chart.backend_coord(&(x1, -5.0));
        let widths: Vec<f64> = labels.iter().map(|l| text_width(l, 12.0)).collect();
        let at = place(
            &px,
            &widths,
            16.0,
            [
                ax as f64 + 2.0,
                ay as f64 + 2.0,
                bx as f64 - 2.0,
                by as f64 - 2.0,
            ],
        );
        for (i, p) in points.iter().enumerate() {
            let c = charts::color(&[view.doc], p.backend, i);
            let (x, y) = (px[i].0 as i32, px[i].1 as i32);
            root.draw(&Rectangle::new(
                [(x - 5, y - 5), (x + 5, y + 5)],
                c.filled(),
            ))
            .map_err(|e| err(e.to_string()))?;
            root.draw(&Rectangle::new(
                [(x - 5, y - 5), (x + 5, y + 5)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(e.to_string()))?;
            root.draw(&Text::new(
                labels[i].clone(),
                (at[i].0 as i32, at[i].1 as i32),
                charts::font(12.0).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(Some(Chart {
        name: name.into(),
        title: title.into(),
        caption: "Each point is a level: across, what it costs (its geometric mean overhead over the cpu, mem and sys classes of workloads, native = 1x); up, the share of the isolation probes that applied to it that it kept from the host (contained, or succeeded only inside its own kernel, machine or namespace, as a guest's root on its own guest kernel). The label adds its median start-up. Up and to the left is better; the table below gives each class.".into(),
        svg: charts::tidy_font_sizes(&svg),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_avoid_each_other_and_stay_inside() {
        let pts = [
            (100.0, 100.0),
            (104.0, 102.0),
            (108.0, 98.0),
            (890.0, 100.0),
        ];
        let w = [120.0, 120.0, 120.0, 120.0];
        let area = [50.0, 50.0, 900.0, 500.0];
        let at = place(&pts, &w, 16.0, area);
        let boxes: Vec<[f64; 4]> = at
            .iter()
            .zip(w)
            .map(|(a, w)| [a.0, a.1 - 8.0, a.0 + w, a.1 + 8.0])
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            assert!(a[0] >= area[0] && a[2] <= area[2], "{i} inside: {a:?}");
            for b in &boxes[i + 1..] {
                assert!(!overlaps(*a, *b), "{a:?} {b:?}");
            }
        }
        // the right-most point's label goes to its left
        assert!(at[3].0 < 890.0);
    }
}
