//! The peers section: when qemu-user or valgrind ran beside bt, the Markdown and HTML reports
//! show each one's overhead against native and bt's time over the fastest peer's; without
//! peers there is no such section.

mod common;

/// The synthetic document with its container column renamed bt and its kvm column a peer.
fn with_peer() -> vbench_results::Document {
    let mut doc = common::document();
    let rename = |name: &mut String| match name.as_str() {
        "container" => *name = "bt".into(),
        "kvm" => *name = "qemu-user".into(),
        _ => {}
    };
    doc.plan.backends.retain(|b| b.name != "bt");
    for b in &mut doc.plan.backends {
        rename(&mut b.name);
        b.peer = b.name == "qemu-user";
    }
    for c in &mut doc.plan.cells {
        rename(&mut c.backend);
    }
    doc
}

#[test]
fn peers_are_shown_beside_bt() {
    let doc = with_peer();
    let md = vbench_reports::markdown::render(&doc);
    let at = md.find("## Peers").expect("a peers section");
    let section = &md[at..md[at + 3..].find("\n## ").map_or(md.len(), |e| at + 3 + e)];
    assert!(
        section.contains("| workload | bt vs native | qemu-user vs native | bt / fastest peer |"),
        "{section}"
    );
    // every workload ran on both: each row has a ratio in both columns and the comparison
    for w in ["getpid", "memcopy", "intmix"] {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| {w} |")))
            .unwrap_or_else(|| panic!("no row {w}:\n{section}"));
        assert_eq!(row.matches("x [").count(), 2, "{row}");
        assert!(
            row.contains("bt faster") || row.contains("bt slower"),
            "{row}"
        );
    }
    let html = vbench_reports::html::render(&doc, &[]);
    assert!(
        html.contains("<section id=\"peers\">"),
        "no peers section in the HTML"
    );
    assert!(
        html.contains("href=\"#peers\""),
        "no peers entry in the HTML contents"
    );
}

#[test]
fn no_peers_no_section() {
    let doc = common::document();
    assert!(!vbench_reports::markdown::render(&doc).contains("## Peers"));
}
