//! Golden test of the Popek-Goldberg classification: the observations `vbench isolate` made of
//! the instruction probes on native, container, bt and kvm on the development machine (AMD,
//! UMIP, KVM nested through kvm_pvm), in `tests/data/instructions.json`, must give the classes
//! and the paragraph in `tests/golden/popek-goldberg.txt`. After an intended change, regenerate
//! with `UPDATE_GOLDEN=1 cargo test -p vbench-reports --test popek` and review the diff.

use std::path::PathBuf;
use vbench_reports::popek::{classify, paragraph, PgCell, PgClass};
use vbench_results::IsolationMatrix;

fn matrix() -> IsolationMatrix {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/instructions.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn classification_of_todays_observations() {
    let m = matrix();
    let rows = classify(&m).unwrap();
    let mut out = String::new();
    let names: Vec<&str> = m.backends.iter().map(|b| b.name.as_str()).collect();
    out.push_str(&format!("{:<14}{}\n", "", names.join(" | ")));
    for r in &rows {
        let cells: Vec<&str> = r.cells.iter().map(PgCell::label).collect();
        out.push_str(&format!("{:<14}{}\n", r.row.probe, cells.join(" | ")));
    }
    out.push('\n');
    for p in paragraph(&m, &rows) {
        out.push_str(&p);
        out.push_str("\n\n");
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/popek-goldberg.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(out, want, "UPDATE_GOLDEN=1 rewrites {}", path.display());

    // the cases the issue names, independent of the golden file's wording
    let class = |probe: &str, backend: &str| {
        let r = rows.iter().find(|r| r.row.probe == probe).unwrap();
        let i = names.iter().position(|n| *n == backend).unwrap();
        r.cells[i].clone()
    };
    use PgClass::*;
    for (probe, backend, want) in [
        ("popf", "native", Silent),
        ("popf", "container", Silent),
        ("popf", "kvm", Silent),
        ("popf", "bt", Virtualized),
        ("sgdt", "native", Traps),
        ("sgdt", "bt", Virtualized),
        ("sgdt", "kvm", Virtualized),
        ("hlt", "native", Traps),
        ("hlt", "bt", Traps),
        ("hlt", "kvm", Killed),
        ("int3", "kvm", Killed),
        ("rdmsr", "kvm", Killed),
        ("port_in", "kvm", Killed),
        ("cli", "kvm", Killed),
        ("far_call", "bt", Killed),
        ("cpuid", "bt", Virtualized),
        ("cpuid", "container", Same),
        ("rdtsc", "kvm", Same),
        ("pushf", "bt", Silent),
    ] {
        assert_eq!(
            class(probe, backend),
            PgCell::Class(want),
            "{probe} on {backend}"
        );
    }
}
