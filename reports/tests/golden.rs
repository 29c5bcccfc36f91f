//! Golden tests: the Markdown and CSV of a synthetic document (native plus three backends, one
//! unavailable, with counters, failures and an interrupted status) must match the files in
//! `tests/golden/` byte for byte. After an intended change, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test -p vbench-reports --test golden` and review the diff.

mod common;

use std::path::PathBuf;

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from {} at line {}:\nexpected: {:?}\nactual:   {:?}\n(UPDATE_GOLDEN=1 rewrites it)",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn markdown() {
    check(
        "report.md",
        &vbench_reports::markdown::render(&common::document()),
    );
}

#[test]
fn markdown_compare() {
    let (base, new) = (common::document(), common::newer());
    let cmp = vbench_reports::compare::Comparison::new(&base, &new);
    check(
        "compare.md",
        &vbench_reports::markdown::render_compare(&cmp),
    );
}

#[test]
fn summary_csv() {
    check(
        "summary.csv",
        &vbench_reports::csv::summary(&common::document()),
    );
}

#[test]
fn samples_csv() {
    check(
        "samples.csv",
        &vbench_reports::csv::samples(&common::document()),
    );
}

#[test]
fn compare_csv() {
    let (base, new) = (common::document(), common::newer());
    let cmp = vbench_reports::compare::Comparison::new(&base, &new);
    check("compare.csv", &vbench_reports::csv::compare(&cmp));
}

#[test]
fn write_all_writes_every_file() {
    let dir = std::env::temp_dir().join(format!("vbench-golden-{}", std::process::id()));
    let w = vbench_reports::write_all(&common::document(), &dir).unwrap();
    assert_eq!(w.index, dir.join("index.html"));
    assert_eq!(w.charts, 6);
    for f in &w.files {
        assert!(std::fs::metadata(f).unwrap().len() > 0, "{}", f.display());
    }
    let names: Vec<String> = w
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "index.html",
            "overhead.svg",
            "levels.svg",
            "cost.svg",
            "startup.svg",
            "distribution.svg",
            "counters.svg",
            "report.md",
            "summary.csv",
            "samples.csv"
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The bundles written to disk hold what the golden renderings hold, and every chart the page
/// names is a file of the bundle. (To look at the synthetic report in a browser:
/// `cargo run -p vbench-reports --example render -- --synthetic DIR`.)
#[test]
fn written_bundles_match_the_goldens_and_link_their_charts() {
    let dir = tempfile::tempdir().unwrap();
    let w = vbench_reports::write_all(&common::document(), dir.path()).unwrap();
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    check("report.md", &read("report.md"));
    check("summary.csv", &read("summary.csv"));
    check("samples.csv", &read("samples.csv"));
    let svgs: Vec<_> = w
        .files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "svg"))
        .collect();
    assert_eq!(svgs.len(), w.charts);
    assert!(w.charts >= 3, "{} charts", w.charts);
    let page = read("index.html");
    for svg in &svgs {
        let name = svg.file_name().unwrap().to_string_lossy();
        assert!(
            page.contains(name.as_ref()),
            "index.html does not link {name}"
        );
        let body = std::fs::read_to_string(svg).unwrap();
        assert!(
            body.starts_with("<svg") && body.trim_end().ends_with("</svg>"),
            "{name}"
        );
    }
    let (base, new) = (common::document(), common::newer());
    let c = vbench_reports::write_compare(&base, &new, &dir.path().join("compare")).unwrap();
    check(
        "compare.md",
        &std::fs::read_to_string(dir.path().join("compare/compare.md")).unwrap(),
    );
    assert!(c.index.exists());
}
