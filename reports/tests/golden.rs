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
    assert_eq!(w.charts, 5);
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

/// Writes the synthetic report to `$VBENCH_SYNTHETIC_REPORT` when set, to look at it.
#[test]
fn synthetic_report_for_inspection() {
    if let Some(dir) = std::env::var_os("VBENCH_SYNTHETIC_REPORT") {
        vbench_reports::write_all(&common::document(), std::path::Path::new(&dir)).unwrap();
        let (base, new) = (common::document(), common::newer());
        vbench_reports::write_compare(&base, &new, &std::path::Path::new(&dir).join("compare"))
            .unwrap();
    }
}
