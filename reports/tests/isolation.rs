//! The isolation matrix and the Popek-Goldberg table of a `vbench isolate` document appear in
//! the Markdown and HTML reports, and documents without one show neither.

mod common;

use std::collections::BTreeMap;
use vbench_results::{BackendStatus, IsolationMatrix, ProbeCell, ProbeRow, ProbeVerdict};

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
        md.contains("| sgdt | sgdt:base=0xfffffffffffe0000 |"),
        "{md}"
    );
    let html = vbench_reports::html::render(&doc, &[]);
    assert!(html.contains("id=\"isolation\""), "{html}");
    assert!(html.contains("ESCAPED!"));
    assert!(html.contains("href=\"#popek-goldberg\""));
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
