//! The isolation matrix and the Popek-Goldberg table of a `vbench isolate` document appear in
//! the Markdown and HTML reports, and documents without one show neither.

mod common;

use std::collections::BTreeMap;
use vbench_results::{
    BackendStatus, Cpl3Class, Document, IsolationMatrix, ProbeCell, ProbeRow, ProbeVerdict,
};

fn cell(backend: &str, verdict: ProbeVerdict, note: &str, detail: &str) -> ProbeCell {
    ProbeCell {
        backend: backend.into(),
        expect: String::new(),
        verdict,
        note: note.into(),
        outcome: None,
        detail: detail.into(),
        exit: None,
        counters: BTreeMap::new(),
    }
}

fn matrix() -> IsolationMatrix {
    let backends = ["native", "container"]
        .map(|b| BackendStatus {
            name: b.into(),
            available: true,
            reason: None,
            peer: false,
            colour: None,
        })
        .to_vec();
    let row = |probe: &str, kind: &str, cells| ProbeRow {
        probe: probe.into(),
        kind: kind.into(),
        summary: String::new(),
        cpl3: (kind == "instruction").then_some(Cpl3Class::Sensitive),
        cells,
    };
    IsolationMatrix {
        backends,
        probes: vec![
            row(
                "hostname",
                "visibility",
                vec![
                    cell("native", ProbeVerdict::Escaped, "", "nodename=h"),
                    cell(
                        "container",
                        ProbeVerdict::Breach,
                        "escaped where it must be contained",
                        "nodename=h",
                    ),
                ],
            ),
            row(
                "memory",
                "limit",
                vec![
                    cell("native", ProbeVerdict::Escaped, "", "touched=512MiB"),
                    cell(
                        "container",
                        ProbeVerdict::Contained,
                        "peak 100.0% of the limit",
                        "",
                    ),
                ],
            ),
            row(
                "sgdt",
                "instruction",
                vec![
                    cell(
                        "native",
                        ProbeVerdict::Observed,
                        "",
                        "sgdt:base=0xfffffffffffe0000",
                    ),
                    cell(
                        "container",
                        ProbeVerdict::Observed,
                        "",
                        "sgdt:base=0xfffffffffffe0000",
                    ),
                ],
            ),
        ],
        fixtures: BTreeMap::new(),
        limits: BTreeMap::new(),
    }
}

#[test]
fn matrix_and_popek_goldberg_table_are_rendered() {
    let mut doc = common::document();
    doc.isolation = Some(matrix());
    let md = vbench_reports::markdown::render(&doc);
    assert!(md.contains("## Isolation"), "{md}");
    assert!(
        md.contains("| hostname | visibility | escaped | ESCAPED! |"),
        "{md}"
    );
    assert!(
        md.contains("| memory | limit | escaped | contained |"),
        "{md}"
    );
    assert!(md.contains("peak 100.0% of the limit"), "{md}");
    assert!(md.contains("## Popek-Goldberg"), "{md}");
    assert!(
        md.contains("| sgdt | native, container | sgdt:base=0xfffffffffffe0000 |"),
        "{md}"
    );
    assert!(
        md.contains("| sgdt | sensitive, unprivileged | silently different (sensitive, unprivileged) | silently different (sensitive, unprivileged) |"),
        "{md}"
    );
    // benchmarks and isolation together: the trade-off first, the reproduce line says both
    assert!(
        md.starts_with("# vbench report: benchmarks and isolation"),
        "{md}"
    );
    let trade = md
        .find("## Isolation and performance")
        .expect("trade-off section");
    assert!(trade < md.find("## Backends").unwrap());
    assert!(
        md.contains("| container |") && md.contains("50% (1 of 2)"),
        "{md}"
    );
    assert!(md.contains(" --isolate\n```"), "{md}");
    let html = vbench_reports::html::render(&doc, &[]);
    assert!(html.contains("id=\"isolation\""), "{html}");
    assert!(html.contains("href=\"#popek-goldberg\""));
    assert!(
        html.contains("<tr class=\"details\">"),
        "raw observations under each row"
    );
}

/// The isolation document of `vbench isolate` alone: no benchmark section, no empty table, no
/// "0 rounds planned".
fn isolation_only() -> Document {
    let mut doc = common::document();
    doc.plan.cells.clear();
    doc.samples.clear();
    doc.summaries.clear();
    doc.failures.clear();
    doc.status = vbench_results::RunStatus::Complete;
    doc.isolation = Some(matrix());
    doc
}

#[test]
fn an_isolation_document_shows_only_isolation() {
    let doc = isolation_only();
    let md = vbench_reports::markdown::render(&doc);
    assert!(md.starts_with("# vbench report: isolation\n"), "{md}");
    for absent in [
        "rounds planned",
        "## Backends",
        "## Overhead",
        "## Cost per operation",
        "## Noise",
        "## Failures",
        "## Isolation and performance",
        "no backend other than",
    ] {
        assert!(!md.contains(absent), "{absent} in {md}");
    }
    assert!(md.contains("**Isolation: 3 probes on 2 backends (2 escape or limit probes, 1 observations): 1 contained, 2 escaped by design, 0 n/a; ISOLATION FAILURE: 1 escaped where they must be contained.**"), "{md}");
    assert!(
        md.contains("```sh\nvbench isolate --backend container\n```"),
        "{md}"
    );

    let dir = tempfile::tempdir().unwrap();
    let w = vbench_reports::write_all(&doc, dir.path()).unwrap();
    let page = std::fs::read_to_string(&w.index).unwrap();
    assert!(!page.contains("rounds planned") && !page.contains("id=\"backends\""));
    assert!(
        page.contains("id=\"chart-isolation\"") && page.contains("id=\"chart-popek-goldberg\"")
    );
    assert!(
        !page.contains("id=\"chart-tradeoff\""),
        "no benchmarks, no trade-off"
    );
    assert_eq!(w.charts, 2);
    // every grid cell has a text label and a hover title with its reason
    let grid = std::fs::read_to_string(dir.path().join("isolation.svg")).unwrap();
    assert_eq!(grid.matches("<title>").count(), 4, "2 probes x 2 backends");
    assert!(grid.contains("<title>hostname on container: ESCAPED!: escaped where it must be contained [nodename=h]</title>"), "{grid}");
    for label in ["by design", "ESCAPED!", "contained"] {
        assert!(grid.contains(&format!(">{label}</text>")), "{label}");
    }
    assert!(page.contains("How to read this:"));
    assert!(page.contains("@media print"));
}

#[test]
fn a_combined_document_draws_the_tradeoff() {
    let mut doc = common::document();
    let mut m = matrix();
    // the trade-off needs native and two more levels in both halves
    m.backends.push(BackendStatus {
        name: "kvm".into(),
        ..m.backends[1].clone()
    });
    for r in &mut m.probes {
        let mut c = r.cells[1].clone();
        c.backend = "kvm".into();
        r.cells.push(c);
    }
    doc.isolation = Some(m);
    let dir = tempfile::tempdir().unwrap();
    let w = vbench_reports::write_all(&doc, dir.path()).unwrap();
    let page = std::fs::read_to_string(&w.index).unwrap();
    assert!(page.contains("id=\"chart-tradeoff\""), "{page}");
    let svg = std::fs::read_to_string(dir.path().join("tradeoff.svg")).unwrap();
    for level in ["native 1.00x", "container ", "kvm "] {
        assert!(svg.contains(level), "{level} in {svg}");
    }
    assert!(page.find("id=\"tradeoff\"").unwrap() < page.find("id=\"backends\"").unwrap());
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains("| kvm |") && md.contains("50% (1 of 2)"),
        "{md}"
    );

    // an escape that stays inside the level's own kernel keeps the host from it
    let mut m = doc.isolation.take().unwrap();
    let c = &mut m.probes[0].cells[2];
    c.verdict = ProbeVerdict::Escaped;
    c.expect = "inside".into();
    doc.isolation = Some(m);
    let w = vbench_reports::write_all(&doc, dir.path()).unwrap();
    assert!(w.charts > 0);
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("100% (2 of 2)"), "{md}");
    let grid = std::fs::read_to_string(dir.path().join("isolation.svg")).unwrap();
    assert!(
        grid.contains(">inside</text>") && grid.contains("inside: succeeded only"),
        "{grid}"
    );
}

/// bt and kvm's columns under the host policy (`bt/host`) are columns like any other.
#[test]
fn host_policy_columns_are_rendered() {
    let mut m = matrix();
    m.backends[1].name = "bt/host".into();
    for r in &mut m.probes {
        r.cells[1].backend = "bt/host".into();
    }
    let mut doc = common::document();
    doc.isolation = Some(m);
    let md = vbench_reports::markdown::render(&doc);
    assert!(md.contains("| probe | kind | native | bt/host |"), "{md}");
    assert!(md.contains("| hostname | bt/host | ESCAPED! |"), "{md}");
    let html = vbench_reports::html::render(&doc, &[]);
    assert!(html.contains("<th>bt/host</th>"), "{html}");
}

#[test]
fn documents_without_isolation_show_none() {
    let doc = common::document();
    let md = vbench_reports::markdown::render(&doc);
    assert!(!md.contains("Isolation") && !md.contains("Popek"));
}
