//! The Popek-Goldberg table as a classification: for every instruction probe and level, what
//! the level made of the instruction, judged from the observations against native's, with the
//! raw observations kept beside it, and a paragraph written from the same data.
//!
//! The classes:
//! - **traps (privileged)**: the instruction faulted at CPL3 and the program's handler got the
//!   signal, or the kernel answered the fault itself (UMIP's dummy GDT/IDT base): a VMM that
//!   traps and emulates sees it.
//! - **same result as native**: it completed and gave what it gives natively.
//! - **virtualized by the VMM/translator**: it completed with a different result on a level
//!   that has its own machine (a translator's virtual CPU, a VM's descriptor tables, a sandbox's
//!   kernel): the guest saw the level's state, not the host's.
//! - **silently different (sensitive, unprivileged)**: a sensitive instruction completed at
//!   CPL3 without a trap, so it read or ignored privileged state and nobody could intervene;
//!   also a different result on a level that shares the host's kernel.
//! - **killed**: the level ended the program where natively it goes on (a signal natively
//!   delivered to its handler kills it there, or the level refuses the instruction).

use vbench_results::{Cpl3Class, IsolationMatrix, ProbeCell, ProbeRow, ProbeVerdict};

/// The native control's column name.
const NATIVE: &str = "native";

/// What a level made of one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgClass {
    /// Faulted at CPL3 and was seen (signal or kernel emulation).
    Traps,
    /// Completed as natively.
    Same,
    /// Completed with the level's own state.
    Virtualized,
    /// Completed silently at CPL3 although sensitive, or differently on the host's kernel.
    Silent,
    /// The program was killed where natively it is not.
    Killed,
}

impl PgClass {
    /// Every class, in the legend's order.
    pub const ALL: [PgClass; 5] = [
        PgClass::Traps,
        PgClass::Same,
        PgClass::Virtualized,
        PgClass::Silent,
        PgClass::Killed,
    ];

    /// The full label.
    pub fn label(self) -> &'static str {
        match self {
            PgClass::Traps => "traps (privileged)",
            PgClass::Same => "same result as native",
            PgClass::Virtualized => "virtualized by the VMM/translator",
            PgClass::Silent => "silently different (sensitive, unprivileged)",
            PgClass::Killed => "killed",
        }
    }

    /// A one-word label that fits a cell.
    pub fn short(self) -> &'static str {
        match self {
            PgClass::Traps => "traps",
            PgClass::Same => "same",
            PgClass::Virtualized => "virtualized",
            PgClass::Silent => "silent",
            PgClass::Killed => "killed",
        }
    }

    /// Fill colour of its cell (light enough for black text; the label carries the meaning).
    pub fn colour(self) -> &'static str {
        match self {
            PgClass::Traps => "#a0cbe8",
            PgClass::Same => "#e3e3e3",
            PgClass::Virtualized => "#8cd17d",
            PgClass::Silent => "#f1ce63",
            PgClass::Killed => "#ff9d9a",
        }
    }
}

/// One cell of the classification: a class, or why there is none (the verdict's label: n/a,
/// not run, BROKEN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgCell {
    /// Classified.
    Class(PgClass),
    /// Not observed.
    None(&'static str),
}

impl PgCell {
    /// The text of the cell.
    pub fn label(&self) -> &'static str {
        match self {
            PgCell::Class(c) => c.label(),
            PgCell::None(s) => s,
        }
    }
}

/// One instruction on every level.
#[derive(Debug, Clone)]
pub struct PgRow<'a> {
    /// The probe.
    pub row: &'a ProbeRow,
    /// One per column of the matrix.
    pub cells: Vec<PgCell>,
    /// The distinct raw observations, each with the columns that made it, in column order.
    pub observations: Vec<(Vec<&'a str>, &'a str)>,
}

/// The classification of every instruction probe (`kind` = `instruction`), or `None` when the
/// matrix has none or no native column to compare with.
pub fn classify(m: &IsolationMatrix) -> Option<Vec<PgRow<'_>>> {
    let native = m.backends.iter().position(|b| b.name == NATIVE)?;
    let rows: Vec<PgRow> = m
        .probes
        .iter()
        .filter(|r| r.kind == "instruction")
        .map(|r| {
            let n = r.cells.get(native);
            let cells = r
                .cells
                .iter()
                .map(|c| classify_cell(r, c, n))
                .collect::<Vec<_>>();
            let mut observations: Vec<(Vec<&str>, &str)> = Vec::new();
            for c in &r.cells {
                if c.verdict != ProbeVerdict::Observed {
                    continue;
                }
                match observations.iter_mut().find(|(_, d)| *d == c.detail) {
                    Some((cols, _)) => cols.push(&c.backend),
                    None => observations.push((vec![&c.backend], &c.detail)),
                }
            }
            PgRow {
                row: r,
                cells,
                observations,
            }
        })
        .collect();
    (!rows.is_empty()).then_some(rows)
}

fn killed(c: &ProbeCell) -> bool {
    c.detail.starts_with("killed_by_")
}

/// The fault reached the program's handler, or the kernel answered it (UMIP).
fn trapped(c: &ProbeCell) -> bool {
    ["trapped_", "SIGTRAP(", "traps=1", "kernel_UMIP_dummy"]
        .iter()
        .any(|m| c.detail.contains(m))
}

/// Levels that run the program on the host's own kernel, with no machine of their own.
fn shares_host_kernel(backend: &str) -> bool {
    backend == NATIVE || backend.starts_with("container") || backend == "crun"
}

/// The observation reduced to what the probe is about: PUSHF's IF and IOPL (the other flags
/// are whatever the code before left), RDTSC's rate to 2%.
fn same_observation(probe: &str, a: &str, b: &str) -> bool {
    match probe {
        "pushf" => {
            let keep = |s: &str| -> Vec<String> {
                s.split(',')
                    .filter(|t| t.starts_with("IF=") || t.starts_with("IOPL="))
                    .map(String::from)
                    .collect()
            };
            keep(a) == keep(b)
        }
        "rdtsc" => {
            let parse = |s: &str| -> Option<(bool, f64)> {
                let mut mono = None;
                let mut rate = None;
                for t in s.split(',') {
                    if let Some(v) = t.strip_prefix("monotonic=") {
                        mono = Some(v == "true");
                    } else if let Some(v) = t.strip_prefix("rate_MHz_vs_CLOCK_MONOTONIC=") {
                        rate = v.parse::<f64>().ok();
                    }
                }
                Some((mono?, rate?))
            };
            match (parse(a), parse(b)) {
                (Some((ma, ra)), Some((mb, rb))) => {
                    ma == mb && (ra - rb).abs() <= 0.02 * ra.abs().max(rb.abs())
                }
                _ => a == b,
            }
        }
        _ => a == b,
    }
}

fn classify_cell(r: &ProbeRow, c: &ProbeCell, native: Option<&ProbeCell>) -> PgCell {
    match c.verdict {
        ProbeVerdict::Observed => {}
        ProbeVerdict::NotApplicable => return PgCell::None("n/a"),
        ProbeVerdict::Unavailable => return PgCell::None("not run"),
        _ => return PgCell::None("BROKEN"),
    }
    let n = native.filter(|n| n.verdict == ProbeVerdict::Observed);
    let same = n.is_some_and(|n| same_observation(&r.probe, &c.detail, &n.detail));
    if killed(c) {
        return PgCell::Class(if same { PgClass::Same } else { PgClass::Killed });
    }
    if trapped(c) {
        return PgCell::Class(PgClass::Traps);
    }
    let sensitive = r.cpl3 == Some(Cpl3Class::Sensitive);
    PgCell::Class(if same || n.is_none() {
        if sensitive {
            PgClass::Silent
        } else {
            PgClass::Same
        }
    } else if shares_host_kernel(&c.backend) {
        PgClass::Silent
    } else {
        PgClass::Virtualized
    })
}

/// The tokens of `detail` that `native` does not have (`key=value` pieces split at `,` and
/// `;`): what the level changed.
fn changed<'a>(detail: &'a str, native: &str) -> Vec<&'a str> {
    let split =
        |s: &'a str| -> Vec<&'a str> { s.split([',', ';']).filter(|t| !t.is_empty()).collect() };
    let theirs: Vec<&str> = native.split([',', ';']).collect();
    split(detail)
        .into_iter()
        .filter(|t| !theirs.contains(t))
        .collect()
}

fn list(v: &[&str]) -> String {
    match v.len() {
        0 => String::new(),
        1 => v[0].to_string(),
        _ => format!("{} and {}", v[..v.len() - 1].join(", "), v[v.len() - 1]),
    }
}

/// What the classification shows, in sentences generated from it: what the host CPU does
/// with the sensitive instructions, then what each level did differently. Every name and count
/// comes from `rows`.
pub fn paragraph(m: &IsolationMatrix, rows: &[PgRow]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(native) = m.backends.iter().position(|b| b.name == NATIVE) else {
        return out;
    };
    let of = |role: Cpl3Class, class: PgClass, col: usize| -> Vec<&str> {
        rows.iter()
            .filter(|r| r.row.cpl3 == Some(role) && r.cells[col] == PgCell::Class(class))
            .map(|r| r.row.probe.as_str())
            .collect()
    };
    let sensitive = rows
        .iter()
        .filter(|r| r.row.cpl3 == Some(Cpl3Class::Sensitive))
        .count();
    let silent = of(Cpl3Class::Sensitive, PgClass::Silent, native);
    let trapping = of(Cpl3Class::Sensitive, PgClass::Traps, native);
    let is_umip = |p: &&str| {
        rows.iter()
            .any(|r| r.row.probe == *p && r.row.cells[native].detail.contains("kernel_UMIP_dummy"))
    };
    let umip: Vec<&str> = trapping.iter().copied().filter(is_umip).collect();
    let signalled: Vec<&str> = trapping.iter().copied().filter(|p| !is_umip(p)).collect();
    if sensitive > 0 {
        let mut s = format!(
            "Natively, {} of the {sensitive} sensitive instructions probed completed at CPL3 without a trap ({}): sensitive but not privileged, so a VMM that relies on trap-and-emulate never sees them.",
            silent.len(),
            list(&silent)
        );
        if !umip.is_empty() {
            s.push_str(&format!(
                " {} faulted instead and the kernel answered with a dummy value: this CPU's UMIP makes {} privileged.",
                list(&umip),
                if umip.len() == 1 { "it" } else { "them" }
            ));
        }
        if !signalled.is_empty() {
            s.push_str(&format!(
                " {} faulted in at least one of its forms and the program's handler got the signal.",
                list(&signalled)
            ));
        }
        out.push(s);
    }
    let privileged = rows
        .iter()
        .filter(|r| r.row.cpl3 == Some(Cpl3Class::Privileged))
        .count();
    let trapped = of(Cpl3Class::Privileged, PgClass::Traps, native);
    if privileged > 0 {
        out.push(format!(
            "The privileged instructions, for contrast: natively {} of {privileged} trapped ({}), the behaviour trap-and-emulate needs.",
            trapped.len(),
            list(&trapped)
        ));
    }
    if let Some(popf) = rows.iter().find(|r| r.row.probe == "popf") {
        let native_detail = popf.row.cells[native].detail.as_str();
        if native_detail.contains("silently_ignored=true") {
            let same: Vec<&str> = m
                .backends
                .iter()
                .enumerate()
                .filter(|(i, _)| popf.row.cells[*i].detail == native_detail)
                .map(|(_, b)| b.name.as_str())
                .filter(|b| *b != NATIVE)
                .collect();
            let emulated: Vec<&str> = m
                .backends
                .iter()
                .enumerate()
                .filter(|(i, _)| popf.cells[*i] == PgCell::Class(PgClass::Virtualized))
                .filter(|(i, _)| {
                    popf.row.cells[*i]
                        .detail
                        .contains("IF_after_popf_clearing_it=0")
                })
                .map(|(_, b)| b.name.as_str())
                .collect();
            let mut s = format!(
                "popf at CPL3 left IF set natively{}: sensitive but not privileged.",
                if same.is_empty() {
                    String::new()
                } else {
                    format!(" and on {}", list(&same))
                }
            );
            if !emulated.is_empty() {
                s.push_str(&format!(
                    " Under {} the level emulated it and the guest saw IF cleared.",
                    list(&emulated)
                ));
            }
            out.push(s);
        }
    }
    for (i, b) in m.backends.iter().enumerate() {
        if i == native {
            continue;
        }
        let with = |class: PgClass| -> Vec<String> {
            rows.iter()
                .filter(|r| r.cells[i] == PgCell::Class(class))
                .map(|r| {
                    let c = &r.row.cells[i];
                    let n = &r.row.cells[native];
                    match class {
                        PgClass::Virtualized => {
                            let ch = changed(&c.detail, &n.detail);
                            if ch.is_empty() || ch.len() > 2 {
                                r.row.probe.clone()
                            } else {
                                format!("{} ({})", r.row.probe, ch.join(", "))
                            }
                        }
                        _ => r.row.probe.clone(),
                    }
                })
                .collect()
        };
        let virt = with(PgClass::Virtualized);
        let killed = with(PgClass::Killed);
        let differ: Vec<String> = rows
            .iter()
            .filter(|r| {
                r.cells[i] == PgCell::Class(PgClass::Silent)
                    && r.cells[native] != PgCell::Class(PgClass::Silent)
            })
            .map(|r| r.row.probe.clone())
            .collect();
        let run = rows
            .iter()
            .filter(|r| matches!(r.cells[i], PgCell::Class(_)))
            .count();
        if run == 0 {
            continue;
        }
        let mut parts = Vec::new();
        let refs = |v: &[String]| list(&v.iter().map(String::as_str).collect::<Vec<_>>());
        if !virt.is_empty() {
            parts.push(format!("gave its own machine's answer for {}", refs(&virt)));
        }
        if !killed.is_empty() {
            parts.push(format!(
                "killed the program on {} where natively it goes on",
                refs(&killed)
            ));
        }
        if !differ.is_empty() {
            parts.push(format!(
                "silently gave a result other than native's for {}",
                refs(&differ)
            ));
        }
        let rest = run - virt.len() - killed.len() - differ.len();
        out.push(if parts.is_empty() {
            format!("{}: all {run} instructions behaved as natively.", b.name)
        } else {
            format!(
                "{}: {}; the other {rest} of {run} behaved as natively.",
                b.name,
                parts.join("; ")
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vbench_results::BackendStatus;

    fn cell(b: &str, detail: &str) -> ProbeCell {
        ProbeCell {
            backend: b.into(),
            expect: "observe".into(),
            verdict: ProbeVerdict::Observed,
            note: String::new(),
            outcome: None,
            detail: detail.into(),
            exit: None,
            counters: BTreeMap::new(),
        }
    }

    fn matrix(rows: Vec<(&str, Cpl3Class, [&str; 3])>) -> IsolationMatrix {
        let names = ["native", "container", "bt"];
        IsolationMatrix {
            backends: names
                .iter()
                .map(|n| BackendStatus {
                    name: n.to_string(),
                    available: true,
                    reason: None,
                    peer: false,
                    colour: None,
                })
                .collect(),
            probes: rows
                .into_iter()
                .map(|(p, c, d)| ProbeRow {
                    probe: p.into(),
                    kind: "instruction".into(),
                    summary: String::new(),
                    cpl3: Some(c),
                    cells: names.iter().zip(d).map(|(n, d)| cell(n, d)).collect(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn classes_follow_the_observations() {
        let m = matrix(vec![
            (
                "popf",
                Cpl3Class::Sensitive,
                [
                    "IF_before=1,IF_after_popf_clearing_it=1,silently_ignored=true",
                    "IF_before=1,IF_after_popf_clearing_it=1,silently_ignored=true",
                    "IF_before=1,IF_after_popf_clearing_it=0,silently_ignored=false",
                ],
            ),
            (
                "hlt",
                Cpl3Class::Privileged,
                [
                    "hlt:trapped_SIGSEGV_si_code=128",
                    "hlt:trapped_SIGSEGV_si_code=128",
                    "killed_by_SIGSEGV",
                ],
            ),
            (
                "pushf",
                Cpl3Class::Sensitive,
                [
                    "rflags=0x206,IF=1,IOPL=0",
                    "rflags=0x206,IF=1,IOPL=0",
                    "rflags=0x202,IF=1,IOPL=0",
                ],
            ),
            (
                "cpuid",
                Cpl3Class::Unrestricted,
                ["hypervisor=KVM", "hypervisor=other", "hypervisor=vbench"],
            ),
        ]);
        let rows = classify(&m).unwrap();
        let classes: Vec<Vec<&str>> = rows
            .iter()
            .map(|r| r.cells.iter().map(PgCell::label).collect())
            .collect();
        use PgClass::*;
        let want = |v: [PgClass; 3]| v.map(PgClass::label).to_vec();
        assert_eq!(classes[0], want([Silent, Silent, Virtualized]));
        assert_eq!(classes[1], want([Traps, Traps, Killed]));
        // PUSHF: only IF and IOPL count
        assert_eq!(classes[2], want([Silent, Silent, Silent]));
        // a different answer on the host's own kernel is not virtualization
        assert_eq!(classes[3], want([Same, Silent, Virtualized]));
        assert_eq!(rows[0].observations.len(), 2);
        assert_eq!(rows[0].observations[0].0, ["native", "container"]);

        let text = paragraph(&m, &rows).join("\n");
        assert!(
            text.contains("popf at CPL3 left IF set natively and on container: sensitive but not privileged. Under bt the level emulated it and the guest saw IF cleared."),
            "{text}"
        );
        assert!(text.contains("Natively, 2 of the 2 sensitive instructions probed completed at CPL3 without a trap (popf and pushf)"), "{text}");
        assert!(text.contains("bt: gave its own machine's answer for popf (IF_after_popf_clearing_it=0, silently_ignored=false) and cpuid (hypervisor=vbench); killed the program on hlt where natively it goes on; the other 1 of 4 behaved as natively."), "{text}");
        assert!(text.contains("container: silently gave a result other than native's for cpuid; the other 3 of 4 behaved as natively."), "{text}");
    }

    #[test]
    fn unobserved_cells_say_why() {
        let mut m = matrix(vec![("sgdt", Cpl3Class::Sensitive, ["a", "a", "b"])]);
        m.probes[0].cells[1].verdict = ProbeVerdict::Unavailable;
        m.probes[0].cells[2].verdict = ProbeVerdict::NotApplicable;
        let rows = classify(&m).unwrap();
        assert_eq!(rows[0].cells[1], PgCell::None("not run"));
        assert_eq!(rows[0].cells[2], PgCell::None("n/a"));
        m.backends[0].name = "x".into();
        assert!(classify(&m).is_none(), "no native column, no comparison");
    }
}
