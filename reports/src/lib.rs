//! Renders a results document. Knows the results schema and nothing of how runs were made.
//!
//! [`write_all`] writes every report of one run into a folder: a self-contained `index.html`
//! (inline CSS and SVG, no network), each chart as a standalone `.svg`, `report.md`, and the CSV
//! exports. [`write_compare`] does the same for the change between two runs.
#![deny(missing_docs)]

pub mod charts;
pub mod ci;
pub mod compare;
pub mod csv;
mod grid;
pub mod html;
pub mod markdown;
pub mod popek;
mod tables;
pub use tables::utc;
pub mod terminal;
mod tradeoff;
mod view;

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod fixture;

use std::path::{Path, PathBuf};
use vbench_results::Document;

/// Errors writing reports. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or the output folder could not be created or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A chart could not be drawn (a bug in the chart code).
    #[error("chart {name}: {message}")]
    Chart {
        /// The chart's file stem.
        name: String,
        /// What plotters reported.
        message: String,
    },
}

/// What [`write_all`] or [`write_compare`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The HTML page.
    pub index: PathBuf,
    /// Every file written, the page included, in the order written.
    pub files: Vec<PathBuf>,
    /// How many charts the page holds.
    pub charts: usize,
}

/// A rendered report: file name to contents.
struct Bundle {
    files: Vec<(String, String)>,
    charts: usize,
}

fn write_bundle(dir: &Path, bundle: Bundle) -> Result<Written, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for (name, text) in bundle.files {
        let path = dir.join(&name);
        std::fs::write(&path, text).map_err(|source| ReportError::Io {
            path: path.clone(),
            source,
        })?;
        files.push(path);
    }
    Ok(Written {
        index: dir.join("index.html"),
        files,
        charts: bundle.charts,
    })
}

/// Renders every report of `doc` into `dir` (created if missing): `index.html`, one `.svg` per
/// chart, `report.md`, `summary.csv` (one row per cell) and `samples.csv` (one row per run).
pub fn write_all(doc: &Document, dir: &Path) -> Result<Written, ReportError> {
    write_all_with_banner(doc, dir, None)
}

/// [`write_all`] with a one-line `banner` at the top of the HTML and Markdown reports.
pub fn write_all_with_banner(
    doc: &Document,
    dir: &Path,
    banner: Option<&str>,
) -> Result<Written, ReportError> {
    let charts = charts::for_document(doc)?;
    let mut files = vec![(
        "index.html".to_string(),
        html::render_with_banner(doc, &charts, banner),
    )];
    for c in &charts {
        files.push((format!("{}.svg", c.name), c.svg.clone()));
    }
    files.push((
        "report.md".into(),
        markdown::render_with_banner(doc, banner),
    ));
    files.push(("summary.csv".into(), csv::summary(doc)));
    files.push(("samples.csv".into(), csv::samples(doc)));
    write_bundle(
        dir,
        Bundle {
            charts: charts.len(),
            files,
        },
    )
}

/// Renders the change from `base` to `new` into `dir`: `index.html`, the charts as `.svg`,
/// `compare.md` and `compare.csv`.
pub fn write_compare(base: &Document, new: &Document, dir: &Path) -> Result<Written, ReportError> {
    let cmp = compare::Comparison::new(base, new);
    let charts = charts::for_comparison(&cmp)?;
    let mut files = vec![(
        "index.html".to_string(),
        html::render_compare(&cmp, &charts),
    )];
    for c in &charts {
        files.push((format!("{}.svg", c.name), c.svg.clone()));
    }
    files.push(("compare.md".into(), markdown::render_compare(&cmp)));
    files.push(("compare.csv".into(), csv::compare(&cmp)));
    write_bundle(
        dir,
        Bundle {
            charts: charts.len(),
            files,
        },
    )
}

/// Formats nanoseconds with a unit that keeps 3-4 significant digits.
pub fn fmt_ns(ns: f64) -> String {
    let a = ns.abs();
    if a < 1e3 {
        format!("{ns:.2} ns")
    } else if a < 1e6 {
        format!("{:.2} us", ns / 1e3)
    } else if a < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn units() {
        assert_eq!(super::fmt_ns(12.345), "12.35 ns");
        assert_eq!(super::fmt_ns(1500.0), "1.50 us");
        assert_eq!(super::fmt_ns(2.5e6), "2.50 ms");
        assert_eq!(super::fmt_ns(3e9), "3.00 s");
    }
}
