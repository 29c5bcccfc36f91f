//! SVG charts, drawn with plotters' SVG backend.
//!
//! plotters is built without font loading: its SVG backend writes every label as an SVG
//! `<text>` element with `font-family="sans-serif"` and leaves the glyphs to whatever displays
//! the file. Layout therefore cannot measure text; it reserves room from a deliberately
//! generous width estimate ([`text_width`]), and the browser check (`.ci/check-report.sh`)
//! verifies that no label leaves its chart.
//!
//! Every chart is a set of horizontal rows (categories: workloads, backends or counters), each
//! holding one mark per series (usually a backend): a bar with an interval whisker, or a box
//! plot. Rows read top to bottom in the order given.

use crate::compare::Comparison;
use crate::view::View;
use crate::{fmt_ns, ReportError};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, KeyPointWeight};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use vbench_results::stats::{median, quantile};
use vbench_results::Document;

/// One rendered chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File stem of its standalone `.svg` and id in the page.
    pub name: String,
    /// The heading it is shown under.
    pub title: String,
    /// One sentence saying what to read from it.
    pub caption: String,
    /// The standalone SVG document.
    pub svg: String,
}

/// Width of every chart, pixels.
pub const WIDTH: u32 = 960;
const FONT: &str = "sans-serif";
const TITLE_PX: f64 = 18.0;
const LABEL_PX: f64 = 13.0;
const TICK_PX: f64 = 12.0;

/// Conservative width of `text` in a sans-serif font of `px` pixels: wider than DejaVu Sans
/// and Liberation Sans set it, so reserved room is never too small.
pub fn text_width(text: &str, px: f64) -> f64 {
    text.chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '|' | '!' | '\'' | ' ' | '(' | ')' => 0.36,
            'm' | 'w' | 'M' | 'W' | '%' | '@' => 0.95,
            c if c.is_uppercase() => 0.75,
            _ => 0.62,
        })
        .sum::<f64>()
        * px
}

/// plotters scales font sizes by 1/1.24 when it writes them; this gives `px` in the SVG.
pub(crate) fn font(px: f64) -> TextStyle<'static> {
    (FONT, px * 1.24).into_font().color(&BLACK)
}

/// The colour of a backend: the one its results document records (from the backend registry),
/// else one by position for documents written before colours were recorded.
pub fn color(docs: &[&Document], backend: &str, index: usize) -> RGBColor {
    docs.iter()
        .flat_map(|d| d.plan.backends.iter())
        .find(|b| b.name == backend)
        .and_then(|b| b.colour.as_deref())
        .and_then(parse_hex)
        .unwrap_or(
            [
                RGBColor(0x76, 0xb7, 0xb2),
                RGBColor(0xb0, 0x7a, 0xa1),
                RGBColor(0x9c, 0x75, 0x5f),
                RGBColor(0xed, 0xc9, 0x48),
            ][index % 4],
        )
}

/// `#rrggbb` as a colour.
fn parse_hex(s: &str) -> Option<RGBColor> {
    let h = s.strip_prefix('#').filter(|h| h.len() == 6)?;
    let byte = |i: usize| u8::from_str_radix(h.get(i..i + 2)?, 16).ok();
    Some(RGBColor(byte(0)?, byte(2)?, byte(4)?))
}

/// What is drawn for one series in one row.
#[derive(Debug, Clone)]
enum Mark {
    /// A bar to `value` with a whisker from `low` to `high`.
    Bar { value: f64, low: f64, high: f64 },
    /// A box plot: quartiles, whiskers, and the points beyond them.
    Box {
        q1: f64,
        median: f64,
        q3: f64,
        low: f64,
        high: f64,
        outliers: Vec<f64>,
    },
}

impl Mark {
    fn extent(&self) -> (f64, f64) {
        match self {
            Mark::Bar { value, low, high } => (value.min(*low), value.max(*high)),
            Mark::Box {
                low,
                high,
                outliers,
                ..
            } => outliers
                .iter()
                .fold((*low, *high), |(a, b), v| (a.min(*v), b.max(*v))),
        }
    }
}

struct Series {
    name: String,
    color: RGBColor,
    marks: Vec<Option<Mark>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
}

struct Spec {
    name: String,
    title: String,
    caption: String,
    x_desc: String,
    rows: Vec<String>,
    series: Vec<Series>,
    /// A vertical reference line and its legend text.
    reference: Option<(f64, String)>,
    scale: Scale,
    /// Tick label for a value on the axis.
    fmt: fn(f64) -> String,
    /// Bars start at this value (0 for linear, the axis minimum for log when `None`).
    zero: Option<f64>,
}

fn chart_err(name: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Chart {
        name: name.to_string(),
        message,
    }
}

/// A linear f64 axis whose tick marks are exactly the given values (plotters' own
/// `WithKeyPoints` loses the default label formatting the mesh needs).
pub(crate) struct Axis {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Axis {
    /// The axis over `range` with tick marks at `ticks`.
    pub(crate) fn new(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Axis {
        Axis {
            inner: range.into(),
            ticks,
        }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.ticks.clone(),
            KeyPointWeight::Any => Vec::new(),
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Round-number ticks covering `[lo, hi]`, and the axis range they span.
fn linear_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64, f64) {
    let span = (hi - lo).max(f64::EPSILON * hi.abs().max(1.0));
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 7.0)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let end = (hi / step).ceil() * step;
    let mut ticks = Vec::new();
    let mut i = 0;
    loop {
        let t = start + step * i as f64;
        if t > end + step * 1e-9 {
            break;
        }
        ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        i += 1;
    }
    (ticks, start, end)
}

/// Ticks at 1, 2, 5 per decade (or 1 per decade over many decades), in log10 space.
pub(crate) fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64, f64) {
    let a = lo.log10().floor();
    let b = hi.log10().ceil().max(a + 1.0);
    let decades = (b - a) as i32;
    let mults: &[f64] = if decades <= 2 {
        &[1.0, 2.0, 5.0]
    } else if decades <= 4 {
        &[1.0, 3.0]
    } else {
        &[1.0]
    };
    let mut ticks = Vec::new();
    for d in 0..=decades {
        for m in mults {
            let v = (a + d as f64) + m.log10();
            if v <= b + 1e-9 {
                ticks.push(v);
            }
        }
    }
    (ticks, a, b)
}

/// Labels longer than this many characters are shortened with an ellipsis, so that a long
/// custom program name cannot squeeze the plot away.
const MAX_LABEL: usize = 40;

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_LABEL - 1).collect();
        t.push('\u{2026}');
        t
    }
}

/// Tick labels of times: `100 ns` rather than `100.00 ns`.
fn fmt_ns_tick(ns: f64) -> String {
    let s = fmt_ns(ns);
    match s.split_once(' ') {
        Some((num, unit)) if num.contains('.') => {
            format!("{} {unit}", num.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => s,
    }
}

fn render(spec: &Spec) -> Result<Chart, ReportError> {
    let err = chart_err(&spec.name);
    let rows: Vec<String> = spec.rows.iter().map(|r| shorten(r)).collect();
    let nrows = spec.rows.len().max(1);
    let nser = spec.series.len().max(1);
    let band_px = 16.0;
    let row_px = (nser as f64 * band_px + 14.0).max(30.0);
    let legend_entries: Vec<(String, RGBColor)> = spec
        .series
        .iter()
        .map(|s| (shorten(&s.name), s.color))
        .collect();

    // legend rows: wrap within the width
    let mut legend_lines: Vec<Vec<(f64, &str, RGBColor)>> = vec![Vec::new()];
    let mut x = 20.0;
    for (name, c) in &legend_entries {
        let w = 12.0 + 6.0 + text_width(name, LABEL_PX) + 22.0;
        if x + w > WIDTH as f64 - 20.0 && x > 20.0 {
            legend_lines.push(Vec::new());
            x = 20.0;
        }
        legend_lines
            .last_mut()
            .expect("one line")
            .push((x, name.as_str(), *c));
        x += w;
    }
    let top = 36.0 + 22.0 * legend_lines.len() as f64 + 8.0;
    let label_w = rows
        .iter()
        .map(|r| text_width(r, LABEL_PX))
        .fold(60.0, f64::max)
        + 20.0;
    let bottom = 60.0;
    let height = (top + nrows as f64 * row_px + bottom).ceil() as u32;

    // x range from the data
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in &spec.series {
        for m in s.marks.iter().flatten() {
            let (a, b) = m.extent();
            lo = lo.min(a);
            hi = hi.max(b);
        }
    }
    if let Some((r, _)) = &spec.reference {
        lo = lo.min(*r);
        hi = hi.max(*r);
    }
    if spec.scale == Scale::Linear {
        if let Some(z) = spec.zero {
            lo = lo.min(z);
            hi = hi.max(z);
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let (ticks, x0, x1) = match spec.scale {
        Scale::Linear => linear_ticks(lo, hi),
        Scale::Log => {
            let lo = if lo > 0.0 { lo } else { hi.max(1.0) / 10.0 };
            log_ticks(lo, hi.max(lo * 1.0001))
        }
    };
    let tx = |v: f64| match spec.scale {
        Scale::Linear => v,
        Scale::Log if v > 0.0 => v.log10(),
        Scale::Log => f64::MIN,
    };
    let untx = |v: f64| match spec.scale {
        Scale::Linear => v,
        Scale::Log => 10f64.powf(v),
    };
    let clamp = |v: f64| tx(v).clamp(x0, x1);
    let base = match (spec.scale, spec.zero) {
        (Scale::Linear, z) => z.unwrap_or(0.0).clamp(x0, x1),
        (Scale::Log, Some(z)) => clamp(z),
        (Scale::Log, None) => x0,
    };
    // the widest tick label must fit at the right edge
    let right = ticks
        .iter()
        .map(|t| text_width(&(spec.fmt)(untx(*t)), TICK_PX) / 2.0)
        .fold(24.0, f64::max)
        + 8.0;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        root.draw(&Text::new(
            spec.title.clone(),
            (WIDTH as i32 / 2, 10),
            font(TITLE_PX).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(|e| err(e.to_string()))?;
        for (i, line) in legend_lines.iter().enumerate() {
            let y = 40 + 22 * i as i32;
            for (x, name, c) in line {
                let x = *x as i32;
                root.draw(&Rectangle::new([(x, y), (x + 12, y + 12)], c.filled()))
                    .map_err(|e| err(e.to_string()))?;
                root.draw(&Text::new(
                    name.to_string(),
                    (x + 18, y + 6),
                    font(LABEL_PX).pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(|e| err(e.to_string()))?;
            }
        }
        let xr = Axis {
            inner: (x0..x1).into(),
            ticks: ticks.clone(),
        };
        let mut chart = ChartBuilder::on(&root)
            .margin_top(top as u32)
            .margin_right(right as u32)
            .margin_left(8)
            .x_label_area_size(bottom as u32 - 8)
            .y_label_area_size(label_w as u32)
            .build_cartesian_2d(xr, 0f64..nrows as f64)
            .map_err(|e| err(e.to_string()))?;
        let fmt = |v: &f64| (spec.fmt)(untx(*v));
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_label_formatter(&fmt)
            .x_desc(spec.x_desc.clone())
            .label_style(font(TICK_PX))
            .axis_desc_style(font(LABEL_PX))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
            .draw()
            .map_err(|e| err(e.to_string()))?;

        // row labels and separators
        for (i, r) in rows.iter().enumerate() {
            let yc = nrows as f64 - i as f64 - 0.5;
            let (px, py) = chart.backend_coord(&(x0, yc));
            root.draw(&Text::new(
                r.clone(),
                (px - 8, py),
                font(LABEL_PX).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(|e| err(e.to_string()))?;
            if i > 0 {
                let y = nrows as f64 - i as f64;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x0, y), (x1, y)],
                        RGBColor(0xee, 0xee, 0xee),
                    )))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        if let Some((r, _)) = &spec.reference {
            let x = clamp(*r);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, nrows as f64)],
                    BLACK.stroke_width(1),
                )))
                .map_err(|e| err(e.to_string()))?;
        }
        let band = 0.8 / nser as f64;
        for (si, s) in spec.series.iter().enumerate() {
            for (ri, m) in s.marks.iter().enumerate() {
                let Some(m) = m else { continue };
                let top = nrows as f64 - ri as f64 - 0.1 - si as f64 * band;
                let (y_hi, y_lo) = (top - band * 0.1, top - band * 0.9);
                let yc = (y_hi + y_lo) / 2.0;
                let whisker = |a: f64, b: f64| {
                    let (a, b) = (clamp(a), clamp(b));
                    let cap = band * 0.25;
                    vec![
                        PathElement::new(vec![(a, yc), (b, yc)], BLACK.stroke_width(1)),
                        PathElement::new(vec![(a, yc - cap), (a, yc + cap)], BLACK.stroke_width(1)),
                        PathElement::new(vec![(b, yc - cap), (b, yc + cap)], BLACK.stroke_width(1)),
                    ]
                };
                match m {
                    Mark::Bar { value, low, high } => {
                        chart
                            .draw_series(std::iter::once(Rectangle::new(
                                [(base, y_hi), (clamp(*value), y_lo)],
                                s.color.filled(),
                            )))
                            .map_err(|e| err(e.to_string()))?;
                        if high > low {
                            chart
                                .draw_series(whisker(*low, *high))
                                .map_err(|e| err(e.to_string()))?;
                        }
                    }
                    Mark::Box {
                        q1,
                        median,
                        q3,
                        low,
                        high,
                        outliers,
                    } => {
                        chart
                            .draw_series(whisker(*low, *high))
                            .map_err(|e| err(e.to_string()))?;
                        chart
                            .draw_series([
                                Rectangle::new(
                                    [(clamp(*q1), y_hi), (clamp(*q3), y_lo)],
                                    s.color.mix(0.45).filled(),
                                ),
                                Rectangle::new(
                                    [(clamp(*q1), y_hi), (clamp(*q3), y_lo)],
                                    s.color.stroke_width(1),
                                ),
                            ])
                            .map_err(|e| err(e.to_string()))?;
                        chart
                            .draw_series(std::iter::once(PathElement::new(
                                vec![(clamp(*median), y_hi), (clamp(*median), y_lo)],
                                BLACK.stroke_width(2),
                            )))
                            .map_err(|e| err(e.to_string()))?;
                        chart
                            .draw_series(
                                outliers
                                    .iter()
                                    .map(|v| Circle::new((clamp(*v), yc), 3, s.color.filled())),
                            )
                            .map_err(|e| err(e.to_string()))?;
                    }
                }
            }
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(Chart {
        name: spec.name.clone(),
        title: spec.title.clone(),
        caption: spec.caption.clone(),
        svg: tidy_font_sizes(&svg),
    })
}

/// plotters writes font sizes as `size / 1.24` with full float noise (`13.000000000000002`);
/// rounds them to two decimals.
pub(crate) fn tidy_font_sizes(svg: &str) -> String {
    const KEY: &str = "font-size=\"";
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(i) = rest.find(KEY) {
        out.push_str(&rest[..i + KEY.len()]);
        rest = &rest[i + KEY.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        match rest[..end].parse::<f64>() {
            Ok(v) => {
                let t = format!("{v:.2}");
                out.push_str(t.trim_end_matches('0').trim_end_matches('.'));
            }
            Err(_) => out.push_str(&rest[..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

pub(crate) fn fmt_ratio(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}x")
    } else if v >= 10.0 {
        format!("{v:.1}x")
    } else {
        format!("{v:.2}x")
    }
}

fn fmt_count(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_pct(v: f64) -> String {
    format!("{v:+.0}%")
}

/// Log scale when the data spans more than `ratio` between its ends.
fn scale_for(values: impl Iterator<Item = f64>, ratio: f64) -> Scale {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    if lo.is_finite() && hi / lo > ratio {
        Scale::Log
    } else {
        Scale::Linear
    }
}

fn backend_series(
    view: &View,
    backends: &[&str],
    f: impl Fn(&str, &str) -> Option<Mark>,
) -> Vec<Series> {
    backends
        .iter()
        .map(|b| Series {
            name: b.to_string(),
            color: color(
                &[view.doc],
                b,
                view.ran.iter().position(|x| x == b).unwrap_or(0),
            ),
            marks: view.workloads.iter().map(|w| f(w, b)).collect(),
        })
        .filter(|s| s.marks.iter().any(Option::is_some))
        .collect()
}

/// A chart of ratios against native: the line at 1x, a log scale when they span more than 8x.
fn ratio_spec(
    name: &str,
    title: &str,
    caption: &str,
    x_desc: &str,
    rows: Vec<String>,
    series: Vec<Series>,
) -> Spec {
    let scale = scale_for(
        series
            .iter()
            .flat_map(|s| s.marks.iter().flatten().map(|m| m.extent().1)),
        8.0,
    );
    Spec {
        name: name.into(),
        title: title.into(),
        caption: caption.into(),
        x_desc: x_desc.into(),
        rows,
        series,
        reference: Some((1.0, "native".into())),
        scale,
        fmt: fmt_ratio,
        zero: Some(if scale == Scale::Log { 1.0 } else { 0.0 }),
    }
}

/// Drops rows where no series has a mark.
fn prune(rows: &mut Vec<String>, series: &mut [Series]) {
    let keep: Vec<bool> = (0..rows.len())
        .map(|i| series.iter().any(|s| s.marks[i].is_some()))
        .collect();
    let mut k = keep.iter();
    rows.retain(|_| *k.next().expect("same length"));
    for s in series {
        let mut k = keep.iter();
        s.marks.retain(|_| *k.next().expect("same length"));
    }
}

/// The charts of one run, in page order. A chart without data is left out, never drawn empty.
pub fn for_document(doc: &Document) -> Result<Vec<Chart>, ReportError> {
    let view = View::new(doc);
    let mut specs = Vec::new();

    // 1. overhead against native
    let others = view.others();
    let mut series = backend_series(&view, &others, |w, b| {
        let o = view.summary(w, b)?.overhead?;
        Some(Mark::Bar {
            value: o.median,
            low: o.ci_low,
            high: o.ci_high,
        })
    });
    let mut rows: Vec<String> = view.workloads.iter().map(|w| w.to_string()).collect();
    if !series.is_empty() {
        prune(&mut rows, &mut series);
        specs.push(ratio_spec(
            "overhead",
            "Overhead against native (time per operation)",
            "Each bar is a backend's median time per operation divided by native's in the same round; the whisker is its 95% confidence interval, and the black line at 1x is native: a bar whose whisker crosses the line is not measurably slower.",
            "overhead ratio (backend / native, x)",
            rows,
            series,
        ));
    }

    // 1b. the levels side by side, per class of workload
    let levels = view.levels();
    if levels.len() >= 2 {
        let classes = crate::view::classes_of(&levels);
        let series: Vec<Series> = levels
            .iter()
            .map(|l| Series {
                name: l.backend.to_string(),
                color: color(
                    &[view.doc],
                    l.backend,
                    view.ran.iter().position(|x| *x == l.backend).unwrap_or(0),
                ),
                marks: classes
                    .iter()
                    .map(|c| {
                        l.class(c).map(|o| Mark::Bar {
                            value: o.geomean,
                            low: o.min,
                            high: o.max,
                        })
                    })
                    .collect(),
            })
            .collect();
        specs.push(ratio_spec(
            "levels",
            "The levels of virtualization side by side",
            "Each bar is a level's geometric mean overhead over the workloads of a class (time per operation against native in the same round); the whisker spans the class's cheapest and dearest workload. Levels are in the lecture's order: container and its peers, the binary translators, the micro-VM, the whole-OS VM.",
            "overhead ratio (level / native, x)",
            classes.iter().map(|c| c.to_string()).collect(),
            series,
        ));
    }

    // 2. absolute cost per operation, every backend
    let ran = view.ran.clone();
    let mut series = backend_series(&view, &ran, |w, b| {
        let s = view.summary(w, b)?;
        Some(Mark::Bar {
            value: s.median_ns,
            low: s.ci_low_ns,
            high: s.ci_high_ns,
        })
    });
    let mut rows: Vec<String> = view
        .workloads
        .iter()
        .map(|w| match view.first_cell(w) {
            Some(c) => format!("{w} (per {})", c.op),
            None => w.to_string(),
        })
        .collect();
    if !series.is_empty() {
        prune(&mut rows, &mut series);
        specs.push(Spec {
            name: "cost".into(),
            title: "Absolute cost per operation".into(),
            caption: "Median time of one operation of each workload's measured loop (log scale, so costs from nanoseconds to milliseconds share one axis); whiskers are 95% confidence intervals.".into(),
            x_desc: "time per operation (log scale)".into(),
            rows,
            series,
            reference: None,
            scale: Scale::Log,
            fmt: fmt_ns_tick,
            zero: None,
        });
    }

    // 3. start-up latency
    let startup = view.startup();
    let reference = startup.iter().find_map(|s| s.reference);
    let mut series = Vec::new();
    let spread = |s: &Option<crate::view::Spread>| {
        s.as_ref().map(|s| Mark::Bar {
            value: s.median,
            low: s.min,
            high: s.max,
        })
    };
    let reported: Vec<Option<Mark>> = startup.iter().map(|s| spread(&s.reported)).collect();
    if reported.iter().any(Option::is_some) {
        series.push(Series {
            name: "start-up reported by the backend".into(),
            color: RGBColor(0x76, 0xb7, 0xb2),
            marks: reported,
        });
    }
    let outside: Vec<Option<Mark>> = startup.iter().map(|s| spread(&s.outside_loop)).collect();
    if let (true, Some(_)) = (outside.iter().any(Option::is_some), reference) {
        series.push(Series {
            name: "wall time minus the measured loop".into(),
            color: RGBColor(0x4e, 0x79, 0xa7),
            marks: outside,
        });
    }
    if !series.is_empty() {
        let mut rows: Vec<String> = startup.iter().map(|s| s.backend.to_string()).collect();
        prune(&mut rows, &mut series);
        let scale = scale_for(
            series
                .iter()
                .flat_map(|s| s.marks.iter().flatten().map(|m| m.extent().1)),
            20.0,
        );
        specs.push(Spec {
            name: "startup".into(),
            title: "Start-up latency per backend".into(),
            caption: format!("Median cost of getting a program running and reaped on each backend (whiskers span the fastest and slowest run): process spawn for native, container creation, translator warm-up, VM cold start; the wall-time bars are measured on {}, the workload with the least time outside its loop.", reference.unwrap_or("no workload")),
            x_desc: "latency".into(),
            rows,
            series,
            reference: None,
            scale,
            fmt: fmt_ns_tick,
            zero: None,
        });
    }

    // 4. distributions, relative to each cell's median
    let mut series = backend_series(&view, &ran, |w, b| {
        let c = view.cell(w, b)?;
        let v: Vec<f64> = view
            .ok_samples(c.id)
            .iter()
            .map(|s| s.metric_ns())
            .collect();
        let m = median(&v)?;
        if m <= 0.0 {
            return None;
        }
        let rel: Vec<f64> = v.iter().map(|x| (x / m - 1.0) * 100.0).collect();
        let q1 = quantile(&rel, 0.25)?;
        let q3 = quantile(&rel, 0.75)?;
        let fence = 1.5 * (q3 - q1);
        let inside: Vec<f64> = rel
            .iter()
            .copied()
            .filter(|x| *x >= q1 - fence && *x <= q3 + fence)
            .collect();
        Some(Mark::Box {
            q1,
            median: 0.0,
            q3,
            low: inside.iter().copied().fold(q1, f64::min),
            high: inside.iter().copied().fold(q3, f64::max),
            outliers: rel
                .iter()
                .copied()
                .filter(|x| *x < q1 - fence || *x > q3 + fence)
                .collect(),
        })
    });
    let mut rows: Vec<String> = view.workloads.iter().map(|w| w.to_string()).collect();
    if !series.is_empty() {
        prune(&mut rows, &mut series);
        specs.push(Spec {
            name: "distribution".into(),
            title: "Run-to-run spread of each measurement".into(),
            caption: "Box plots of every run's time per operation as a deviation from its own median (box: middle half of runs; whiskers: 1.5 interquartile ranges; dots: runs beyond them): wide boxes or dots mean noisy numbers.".into(),
            x_desc: "deviation from the cell's median (%)".into(),
            rows,
            series,
            reference: Some((0.0, "median".into())),
            scale: Scale::Linear,
            fmt: fmt_pct,
            zero: None,
        });
    }

    // 5. backend counters
    let counters = view.counters();
    if !counters.is_empty() {
        let rows: Vec<String> = counters.keys().cloned().collect();
        let series: Vec<Series> = ran
            .iter()
            .enumerate()
            .map(|(i, b)| Series {
                name: b.to_string(),
                color: color(&[view.doc], b, i),
                marks: counters
                    .values()
                    .map(|m| {
                        m.get(b).map(|v| Mark::Bar {
                            value: *v,
                            low: *v,
                            high: *v,
                        })
                    })
                    .collect(),
            })
            .filter(|s| s.marks.iter().any(Option::is_some))
            .collect();
        let scale = scale_for(
            series
                .iter()
                .flat_map(|s| s.marks.iter().flatten().map(|m| m.extent().1)),
            20.0,
        );
        let log_ok = series
            .iter()
            .all(|s| s.marks.iter().flatten().all(|m| m.extent().0 > 0.0));
        specs.push(Spec {
            name: "counters".into(),
            title: "Backend counters per run".into(),
            caption: "Median count per run of each event a backend reported, over all its workloads (VM exits by reason, translated blocks, cgroup throttling): what the backend spent its overhead on.".into(),
            x_desc: "events per run (median)".into(),
            rows,
            series,
            reference: None,
            scale: if log_ok { scale } else { Scale::Linear },
            fmt: fmt_count,
            zero: None,
        });
    }

    let mut charts = specs.iter().map(render).collect::<Result<Vec<_>, _>>()?;
    charts.extend(crate::tradeoff::chart(
        &view,
        &crate::tradeoff::points(&view),
    )?);
    if let Some(m) = &doc.isolation {
        charts.extend(crate::grid::isolation(m));
        if let Some(rows) = crate::popek::classify(m) {
            charts.push(crate::grid::popek_goldberg(m, &rows));
        }
    }
    Ok(charts)
}

/// The charts of a comparison.
pub fn for_comparison(cmp: &Comparison) -> Result<Vec<Chart>, ReportError> {
    let backends = cmp.backends();
    let mut rows: Vec<String> = cmp.workloads().iter().map(|w| w.to_string()).collect();
    let mut series: Vec<Series> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| Series {
            name: b.to_string(),
            color: color(&[cmp.new, cmp.base], b, i),
            marks: cmp
                .workloads()
                .iter()
                .map(|w| {
                    cmp.change(w, b).map(|c| Mark::Bar {
                        value: c.ratio,
                        low: c.low,
                        high: c.high,
                    })
                })
                .collect(),
        })
        .collect();
    if series.is_empty() {
        return Ok(Vec::new());
    }
    prune(&mut rows, &mut series);
    let scale = scale_for(
        series.iter().flat_map(|s| {
            s.marks
                .iter()
                .flatten()
                .flat_map(|m| [m.extent().0, m.extent().1])
        }),
        8.0,
    );
    let spec = Spec {
        name: "change".into(),
        title: "Change from the base run (time per operation)".into(),
        caption: "Each bar is the new run's median time per operation divided by the base run's, with a conservative 95% interval; the black line at 1x is no change, left of it is faster, right of it slower.".into(),
        x_desc: "new / base (x)".into(),
        rows,
        series,
        reference: Some((1.0, "no change".into())),
        scale,
        fmt: fmt_ratio,
        zero: Some(if scale == Scale::Log { 1.0 } else { 0.0 }),
    };
    Ok(vec![render(&spec)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use crate::view::NATIVE;

    #[test]
    fn labels() {
        assert_eq!(fmt_ns_tick(100.0), "100 ns");
        assert_eq!(fmt_ns_tick(2500.0), "2.5 us");
        assert_eq!(shorten("short"), "short");
        assert_eq!(shorten(&"x".repeat(50)).chars().count(), MAX_LABEL);
    }

    #[test]
    fn font_sizes_are_tidied() {
        assert_eq!(
            tidy_font_sizes(
                r#"<text font-size="13.000000000000002">a</text><text font-size="12.5">"#
            ),
            r#"<text font-size="13">a</text><text font-size="12.5">"#
        );
    }

    #[test]
    fn ticks_are_round() {
        let (t, a, b) = linear_ticks(0.0, 1.07);
        assert_eq!(a, 0.0);
        assert!((b - 1.2).abs() < 1e-9, "{b}");
        assert_eq!(t.len(), 7);
        let (t, a, b) = log_ticks(150.0, 2e7);
        assert_eq!((a, b), (2.0, 8.0));
        assert_eq!(t.len(), 7);
    }

    #[test]
    fn every_chart_of_a_full_run_is_drawn() {
        let doc = fixture::document();
        let charts = for_document(&doc).unwrap();
        let names: Vec<&str> = charts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "overhead",
                "levels",
                "cost",
                "startup",
                "distribution",
                "counters"
            ]
        );
        for c in &charts {
            assert!(c.svg.starts_with("<svg"), "{}", c.name);
            assert!(c.svg.contains("font-family=\"sans-serif\""), "{}", c.name);
            assert!(c.svg.contains(&c.title), "{}", c.name);
            assert!(
                !c.svg.contains("NaN") && !c.svg.contains("inf"),
                "{}",
                c.name
            );
        }
        // the unavailable backend has no data and appears in no legend
        assert!(!charts[0].svg.contains("\nbt\n"));
        assert!(charts[0].svg.contains("\nkvm\n"));
    }

    #[test]
    fn a_native_only_run_has_no_overhead_or_counter_chart() {
        let mut doc = fixture::document();
        let keep: Vec<usize> = doc
            .plan
            .cells
            .iter()
            .filter(|c| c.backend == NATIVE)
            .map(|c| c.id)
            .collect();
        doc.samples.retain(|s| keep.contains(&s.cell));
        doc.summaries.retain(|s| keep.contains(&s.cell));
        doc.plan.cells.retain(|c| keep.contains(&c.id));
        let charts = for_document(&doc).unwrap();
        let names: Vec<&str> = charts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cost", "startup", "distribution"]);
    }

    #[test]
    fn an_empty_document_draws_nothing() {
        let mut doc = fixture::document();
        doc.samples.clear();
        doc.summaries.clear();
        doc.plan.cells.clear();
        assert!(for_document(&doc).unwrap().is_empty());
    }
}
