//! The tables every text report shows, as plain cells; Markdown and HTML only lay them out.

use crate::compare::Comparison;
use crate::fmt_ns;
use crate::view::{params, throughput_gib_s, View};
use vbench_results::{Document, FailureKind, IsolationMatrix, ProbeVerdict};

/// A table: header and rows of plain text.
pub struct Table {
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Every backend asked for, and whether it ran.
pub fn backends(view: &View) -> Table {
    let rows = view
        .doc
        .plan
        .backends
        .iter()
        .map(|b| {
            let cells = view
                .doc
                .plan
                .cells
                .iter()
                .filter(|c| c.backend == b.name)
                .count();
            let status = if b.available {
                format!("ran ({cells} cells)")
            } else {
                format!(
                    "unavailable: {}",
                    b.reason.as_deref().unwrap_or("no reason given")
                )
            };
            vec![b.name.clone(), status]
        })
        .collect();
    Table {
        head: vec![s("backend"), s("status")],
        rows,
    }
}

/// Overhead ratio against native, workloads by backends; `None` when nothing but native ran.
pub fn overhead(view: &View) -> Option<Table> {
    let others = view.others();
    if others.is_empty() || !view.has_overheads() {
        return None;
    }
    let mut head = vec![s("workload")];
    head.extend(others.iter().map(|b| format!("{b} (95% CI)")));
    let rows = view
        .workloads
        .iter()
        .map(|w| {
            let mut r = vec![w.to_string()];
            for b in &others {
                r.push(match view.summary(w, b) {
                    Some(sm) => match sm.overhead {
                        Some(o) => {
                            format!("{:.2}x [{:.2}, {:.2}]", o.median, o.ci_low, o.ci_high)
                        }
                        None => s("no paired rounds"),
                    },
                    None if view.cell(w, b).is_some() => s("no successful run"),
                    None => s("-"),
                });
            }
            r
        })
        .collect();
    Some(Table { head, rows })
}

/// What the peers table says, in one sentence.
pub const PEERS_CAPTION: &str = "Other people's tools run the same unmodified binary, measured by vbench in the same rounds: beside bt, qemu-user (QEMU's TCG translator in user mode) and valgrind (Valgrind's translator with no instrumentation, --tool=none); beside the container, crun (an OCI runtime running the binary from a bundle with its default spec and the container's limits) and gvisor (gVisor's runsc do: a user-space kernel answers the system calls; no limits). Ratios are per-round medians with 95% intervals; a level's last column is its time per operation over its fastest peer's.";

/// The level of vbench's that a peer stands beside: the container for the sandboxes (crun, an
/// OCI runtime; gVisor), bt for the translators.
pub fn peer_of(peer: &str) -> &'static str {
    match peer {
        "crun" | "gvisor" => "container",
        _ => "bt",
    }
}

/// vbench's levels beside the peer tools that ran: each one's overhead against native, and for
/// each level its time over its fastest peer's; `None` when no peer ran.
pub fn peers(view: &View) -> Option<Table> {
    let peers = view.peers();
    if peers.is_empty() {
        return None;
    }
    // (level if it ran, its peers), bt's group first
    let groups: Vec<(Option<&str>, Vec<&str>)> = ["bt", "container"]
        .into_iter()
        .map(|level| {
            let ps: Vec<&str> = peers
                .iter()
                .copied()
                .filter(|p| peer_of(p) == level)
                .collect();
            (view.ran.iter().copied().find(|b| *b == level), ps)
        })
        .filter(|(_, ps)| !ps.is_empty())
        .collect();
    let mut head = vec![s("workload")];
    for (level, ps) in &groups {
        head.extend(level.iter().chain(ps).map(|b| format!("{b} vs native")));
        if let Some(l) = level {
            head.push(format!("{l} / fastest peer"));
        }
    }
    let overhead = |w: &str, b: &str| match view
        .summary(w, b)
        .and_then(|sm| sm.overhead.map(|o| (sm, o)))
    {
        Some((sm, o)) => format!(
            "{:.2}x [{:.2}, {:.2}]{}",
            o.median,
            o.ci_low,
            o.ci_high,
            if sm.checksum_matches_native == Some(false) {
                " WRONG RESULT"
            } else {
                ""
            }
        ),
        None => s("-"),
    };
    let rows = view
        .workloads
        .iter()
        .map(|w| {
            let mut r = vec![w.to_string()];
            for (level, ps) in &groups {
                for b in level.iter().chain(ps) {
                    r.push(overhead(w, b));
                }
                let Some(l) = level else { continue };
                let fastest = ps
                    .iter()
                    .filter_map(|p| view.summary(w, p).map(|sm| sm.median_ns))
                    .fold(f64::INFINITY, f64::min);
                r.push(match view.summary(w, l) {
                    Some(me) if fastest.is_finite() && fastest > 0.0 => {
                        let q = me.median_ns / fastest;
                        let word = if (q - 1.0).abs() < 0.005 {
                            "even".to_string()
                        } else if q < 1.0 {
                            format!("{l} faster")
                        } else {
                            format!("{l} slower")
                        };
                        format!("{q:.2}x ({word})")
                    }
                    _ => s("-"),
                });
            }
            r
        })
        .collect();
    Some(Table { head, rows })
}

/// lmbench-style absolute costs: one row per workload, one column per backend that ran.
pub fn costs(view: &View) -> Table {
    let mut head = vec![s("workload"), s("class"), s("per"), s("parameters")];
    head.extend(view.ran.iter().map(|b| b.to_string()));
    let rows = view
        .workloads
        .iter()
        .map(|w| {
            let first = view.first_cell(w).expect("a workload has a cell");
            let mut r = vec![
                w.to_string(),
                first.class.clone(),
                if first.op.is_empty() {
                    s("run")
                } else {
                    first.op.clone()
                },
                params(first),
            ];
            for b in &view.ran {
                r.push(match (view.cell(w, b), view.summary(w, b)) {
                    (Some(c), Some(sm)) => {
                        let mut v = fmt_ns(sm.median_ns);
                        if let Some(gib) = throughput_gib_s(c, sm.median_ns) {
                            v.push_str(&format!(" ({gib:.2} GiB/s)"));
                        }
                        if sm.checksum_matches_native == Some(false) || !sm.checksum_consistent {
                            v.push_str(" WRONG RESULT");
                        }
                        v
                    }
                    (Some(_), None) => s("failed"),
                    (None, _) => s("-"),
                });
            }
            r
        })
        .collect();
    Table { head, rows }
}

/// Start-up latency per backend; `None` when no backend has a measure of it.
pub fn startup(view: &View) -> Option<Table> {
    let st = view.startup();
    if st
        .iter()
        .all(|s| s.reported.is_none() && s.outside_loop.is_none())
    {
        return None;
    }
    let reference = st.iter().find_map(|s| s.reference).unwrap_or("-");
    let spread = |sp: &Option<crate::view::Spread>| match sp {
        Some(x) => format!(
            "{} [{}, {}] n={}",
            fmt_ns(x.median),
            fmt_ns(x.min),
            fmt_ns(x.max),
            x.n
        ),
        None => s("-"),
    };
    Some(Table {
        head: vec![
            s("backend"),
            s("reported by the backend: median [min, max]"),
            format!("wall time outside the measured loop of {reference}: median [min, max]"),
        ],
        rows: st
            .iter()
            .map(|x| {
                vec![
                    x.backend.to_string(),
                    spread(&x.reported),
                    spread(&x.outside_loop),
                ]
            })
            .collect(),
    })
}

/// Backend counters per cell (median per run); `None` when no sample has any.
pub fn counters(view: &View) -> Option<Table> {
    let names: Vec<String> = view.counters().into_keys().collect();
    if names.is_empty() {
        return None;
    }
    let mut head = vec![s("workload"), s("backend")];
    head.extend(names.iter().cloned());
    let mut rows = Vec::new();
    for c in &view.doc.plan.cells {
        let m = view.cell_counters(c.id);
        if m.is_empty() {
            continue;
        }
        let mut r = vec![c.workload.clone(), c.backend.clone()];
        for n in &names {
            r.push(match m.get(n.as_str()) {
                Some(v) => format!("{v}"),
                None => s("-"),
            });
        }
        rows.push(r);
    }
    Some(Table { head, rows })
}

/// Failures, correctness first.
pub fn failures(doc: &Document) -> Table {
    let mut f: Vec<_> = doc.failures.iter().collect();
    f.sort_by_key(|f| f.kind != FailureKind::ChecksumMismatch);
    Table {
        head: vec![
            s("kind"),
            s("workload"),
            s("backend"),
            s("round"),
            s("detail"),
        ],
        rows: f
            .iter()
            .map(|f| {
                let cell = doc.cell(f.cell);
                vec![
                    match f.kind {
                        FailureKind::ChecksumMismatch => s("WRONG RESULT (checksum)"),
                        FailureKind::BadExit => s("bad exit"),
                        FailureKind::Error => s("error"),
                    },
                    cell.map(|c| c.workload.clone()).unwrap_or_default(),
                    cell.map(|c| c.backend.clone()).unwrap_or_default(),
                    f.round.map(|r| r.to_string()).unwrap_or_else(|| s("all")),
                    f.message.clone(),
                ]
            })
            .collect(),
    }
}

/// The machine.
pub fn environment(doc: &Document) -> Table {
    let e = &doc.environment;
    let mut rows = vec![
        vec![s("host"), e.hostname.clone()],
        vec![s("kernel"), e.kernel.clone()],
        vec![
            s("CPU"),
            format!("{} ({} logical CPUs)", e.cpu_model, e.logical_cpus),
        ],
        vec![
            s("hypervisor"),
            e.hypervisor
                .clone()
                .unwrap_or_else(|| s("none detected (bare metal)")),
        ],
        vec![s("KVM"), e.kvm.clone()],
        vec![s("cgroups"), e.cgroup.clone()],
    ];
    rows.extend(e.extra.iter().map(|(k, v)| vec![k.clone(), v.clone()]));
    rows.push(vec![
        s("vbench"),
        format!("{} {}", doc.tool.name, doc.tool.version),
    ]);
    rows.push(vec![s("started"), utc(doc.started_unix_ms)]);
    if let Some(f) = doc.finished_unix_ms {
        rows.push(vec![
            s("duration"),
            format!(
                "{:.1} s",
                f.saturating_sub(doc.started_unix_ms) as f64 / 1e3
            ),
        ]);
    }
    rows.push(vec![
        s("plan"),
        format!(
            "{} rounds, {} warm-up, seed {}, timeout {} s{}",
            doc.plan.rounds,
            doc.plan.warmup,
            doc.plan.seed,
            doc.plan.timeout_ms as f64 / 1e3,
            if doc.plan.quick {
                ", quick parameters"
            } else {
                ""
            }
        ),
    ]);
    Table {
        head: vec![s("what"), s("value")],
        rows,
    }
}

/// The changes of a comparison, one row per matched cell.
pub fn changes(cmp: &Comparison) -> Table {
    Table {
        head: vec![
            s("workload"),
            s("backend"),
            s("base"),
            s("new"),
            s("new / base (95% interval)"),
            s("verdict"),
        ],
        rows: cmp
            .rows
            .iter()
            .map(|c| {
                vec![
                    c.cell.workload.clone(),
                    c.cell.backend.clone(),
                    fmt_ns(c.base.median_ns),
                    fmt_ns(c.new.median_ns),
                    format!("{:.3}x [{:.3}, {:.3}]", c.ratio, c.low, c.high),
                    c.verdict.word().to_string(),
                ]
            })
            .collect(),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time in milliseconds.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The isolation matrix of `vbench isolate`: probes by backends, one verdict per cell; `None`
/// when the document has none. Observation probes are in [`popek_goldberg`] instead.
pub fn isolation(doc: &Document) -> Option<Table> {
    let m = doc.isolation.as_ref()?;
    let mut head = vec![s("probe"), s("kind")];
    head.extend(m.backends.iter().map(|b| b.name.clone()));
    let rows: Vec<Vec<String>> = m
        .probes
        .iter()
        .filter(|r| !is_observation(&r.kind))
        .map(|r| {
            let mut row = vec![r.probe.clone(), r.kind.clone()];
            row.extend(r.cells.iter().map(|c| c.verdict.label().to_string()));
            row
        })
        .collect();
    (!rows.is_empty()).then_some(Table { head, rows })
}

pub(crate) fn is_observation(kind: &str) -> bool {
    matches!(kind, "instruction" | "translation" | "vm")
}

/// One line on the isolation matrix: probes, backends and the count of each verdict.
pub fn isolation_status(m: &IsolationMatrix) -> String {
    let count = |v: ProbeVerdict| {
        m.probes
            .iter()
            .filter(|r| !is_observation(&r.kind))
            .flat_map(|r| &r.cells)
            .filter(|c| c.verdict == v)
            .count()
    };
    let observations = m.probes.iter().filter(|r| is_observation(&r.kind)).count();
    let mut s = format!(
        "Isolation: {} probes on {} backends ({} escape or limit probes, {observations} observations): {} contained, {} escaped by design, {} n/a",
        m.probes.len(),
        m.backends.len(),
        m.probes.len() - observations,
        count(ProbeVerdict::Contained),
        count(ProbeVerdict::Escaped),
        count(ProbeVerdict::NotApplicable),
    );
    let breach = count(ProbeVerdict::Breach);
    let broken = m
        .probes
        .iter()
        .flat_map(|r| &r.cells)
        .filter(|c| c.verdict == ProbeVerdict::Broken)
        .count();
    if breach > 0 {
        s.push_str(&format!(
            "; ISOLATION FAILURE: {breach} escaped where they must be contained"
        ));
    }
    if broken > 0 {
        s.push_str(&format!("; {broken} BROKEN probe run(s)"));
    }
    s.push('.');
    s
}

/// The `vbench isolate` command that makes the same matrix: its backends (the columns, less the
/// control and the second columns of the same backend) and its limits.
pub fn isolate_command(m: &IsolationMatrix) -> String {
    let mut cmd = String::from("vbench isolate");
    let mut seen: Vec<&str> = Vec::new();
    for b in &m.backends {
        let base = b.name.split('/').next().unwrap_or(&b.name);
        if base != crate::view::NATIVE && !seen.contains(&base) {
            seen.push(base);
            cmd.push_str(&format!(" --backend {base}"));
        }
    }
    for (key, flag) in [
        ("memory_bytes", "memory"),
        ("cpus", "cpus"),
        ("pids", "pids"),
    ] {
        if let Some(v) = m.limits.get(key) {
            cmd.push_str(&format!(" --{flag} {v}"));
        }
    }
    cmd
}

/// What each backend observed for the translation and machine-edge probes, beside native's:
/// `= native` where it is native's observation; `None` without any.
pub fn edge_probes(doc: &Document) -> Option<Table> {
    let m = doc.isolation.as_ref()?;
    let native = m
        .backends
        .iter()
        .position(|b| b.name == crate::view::NATIVE);
    let mut head = vec![s("probe")];
    head.extend(m.backends.iter().map(|b| b.name.clone()));
    let rows: Vec<Vec<String>> = m
        .probes
        .iter()
        .filter(|r| matches!(r.kind.as_str(), "translation" | "vm"))
        .map(|r| {
            let n = native.and_then(|i| r.cells.get(i));
            let mut row = vec![r.probe.clone()];
            row.extend(r.cells.iter().enumerate().map(|(i, c)| {
                if c.verdict != ProbeVerdict::Observed {
                    format!("{} {}", c.verdict.label(), c.note)
                        .trim()
                        .to_string()
                } else if Some(i) != native
                    && n.is_some_and(|n| {
                        n.verdict == ProbeVerdict::Observed && n.detail == c.detail
                    })
                {
                    s("= native")
                } else {
                    c.detail.clone()
                }
            }));
            row
        })
        .collect();
    (!rows.is_empty()).then_some(Table { head, rows })
}

/// The Popek-Goldberg classification as a table: instruction, what x86 makes of it, one class
/// per level.
pub fn pg_classes(m: &IsolationMatrix, rows: &[crate::popek::PgRow]) -> Table {
    let mut head = vec![s("instruction"), s("at CPL3")];
    head.extend(m.backends.iter().map(|b| b.name.clone()));
    Table {
        head,
        rows: rows
            .iter()
            .map(|r| {
                let mut v = vec![r.row.probe.clone(), cpl3_name(r.row.cpl3).to_string()];
                v.extend(r.cells.iter().map(|c| c.label().to_string()));
                v
            })
            .collect(),
    }
}

/// What x86 makes of an instruction at CPL3, in words.
pub fn cpl3_name(c: Option<vbench_results::Cpl3Class>) -> &'static str {
    match c {
        Some(vbench_results::Cpl3Class::Sensitive) => "sensitive, unprivileged",
        Some(vbench_results::Cpl3Class::Privileged) => "privileged",
        Some(vbench_results::Cpl3Class::Unrestricted) => "neither",
        None => "-",
    }
}

/// The raw observations behind the classification: each distinct one with the levels that
/// made it.
pub fn pg_observations(rows: &[crate::popek::PgRow]) -> Table {
    Table {
        head: vec![s("instruction"), s("levels"), s("observation")],
        rows: rows
            .iter()
            .flat_map(|r| {
                r.observations
                    .iter()
                    .map(|(cols, d)| vec![r.row.probe.clone(), cols.join(", "), d.to_string()])
            })
            .collect(),
    }
}

/// Every isolation cell with something to say: n/a reasons, broken probes, breaches, limit
/// accuracy.
pub fn isolation_notes(doc: &Document) -> Option<Table> {
    let m = doc.isolation.as_ref()?;
    let rows: Vec<Vec<String>> = m
        .probes
        .iter()
        .filter(|r| !is_observation(&r.kind))
        .flat_map(|r| {
            r.cells
                .iter()
                .filter(|c| !c.note.is_empty() && c.verdict != ProbeVerdict::Unavailable)
                .map(|c| {
                    vec![
                        r.probe.clone(),
                        c.backend.clone(),
                        c.verdict.label().to_string(),
                        c.note.clone(),
                        c.detail.clone(),
                    ]
                })
        })
        .collect();
    (!rows.is_empty()).then_some(Table {
        head: vec![
            s("probe"),
            s("backend"),
            s("verdict"),
            s("note"),
            s("probe said"),
        ],
        rows,
    })
}

/// The lecture's levels side by side: each level's overhead per class of workload (geometric
/// mean of its workloads' median ratios, smallest and largest); `None` unless at least two
/// levels besides native have overheads.
pub fn levels(view: &View) -> Option<Table> {
    let levels = view.levels();
    if levels.len() < 2 {
        return None;
    }
    let classes = crate::view::classes_of(&levels);
    let mut head = vec![s("level")];
    head.extend(classes.iter().map(|c| format!("{c}: geomean [min, max]")));
    let rows = levels
        .iter()
        .map(|l| {
            let mut r = vec![l.backend.to_string()];
            for c in &classes {
                r.push(match l.class(c) {
                    Some(o) => format!("{:.2}x [{:.2}, {:.2}] n={}", o.geomean, o.min, o.max, o.n),
                    None => s("-"),
                });
            }
            r
        })
        .collect();
    Some(Table { head, rows })
}

/// What the levels table shows, and how it compares with the published shape, in sentences
/// computed from the run's figures (a comparison is made only for the levels that ran).
pub fn levels_text(view: &View) -> Vec<String> {
    let levels = view.levels();
    if levels.len() < 2 {
        return Vec::new();
    }
    let get = |b: &str, c: &str| {
        levels
            .iter()
            .find(|l| l.backend == b)
            .and_then(|l| l.class(c))
    };
    let x = |v: f64| format!("{v:.2}x");
    let mut out = Vec::new();
    for (class, what) in [
        ("cpu", "CPU-bound work"),
        ("mem", "memory-bound work"),
        ("sys", "system calls"),
    ] {
        let mut v: Vec<(&str, f64)> = levels
            .iter()
            .filter_map(|l| Some((l.backend, l.class(class)?.geomean)))
            .collect();
        if v.len() < 2 {
            continue;
        }
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        let list: Vec<String> = v.iter().map(|(b, g)| format!("{b} {}", x(*g))).collect();
        out.push(format!(
            "For {what}, from the cheapest level to the dearest (geometric means over native): {}.",
            list.join(", ")
        ));
    }
    let verdict = |ok: bool| if ok { "agrees" } else { "differs" };
    if let (Some(cpu), Some(mem), Some(sys)) = (
        get("container", "cpu"),
        get("container", "mem"),
        get("container", "sys"),
    ) {
        let near = |g: f64| (0.9..=1.15).contains(&g);
        out.push(format!(
            "Felter et al. (IBM, ISPASS 2015) found containers at native speed for CPU and memory \
             and a small cost on system calls and I/O. This run {}: the container's cpu {}, mem \
             {}, sys {} (vbench's container puts a seccomp filter in front of every system call).",
            verdict(near(cpu.geomean) && near(mem.geomean)),
            x(cpu.geomean),
            x(mem.geomean),
            x(sys.geomean)
        ));
    }
    if let (Some(cpu), Some(sys)) = (get("kvm", "cpu"), get("kvm", "sys")) {
        out.push(format!(
            "Barham et al. (Xen, SOSP 2003): a paravirtual guest runs compute at native speed and \
             pays for each request to the VMM. vbench's micro-VM forwards each system call to its \
             VMM by hypercall; this run {} in shape: kvm's cpu {}, sys {}.",
            verdict(cpu.geomean <= 1.3 && sys.geomean >= 2.0),
            x(cpu.geomean),
            x(sys.geomean)
        ));
    }
    if let (Some(bt), Some(kvm)) = (get("bt", "sys"), get("kvm", "sys")) {
        out.push(format!(
            "Adams & Agesen (ASPLOS 2006): a software VMM's binary translation ran system-call-heavy \
             work faster than first-generation hardware virtualization, whose exits were costly. \
             This run {}: bt's sys {} against kvm's {} (each of kvm's exits is a real VM exit, \
             nested on some hosts).",
            verdict(bt.geomean < kvm.geomean),
            x(bt.geomean),
            x(kvm.geomean)
        ));
    }
    if let (Some(cpu), Some(sys)) = (get("vm", "cpu"), get("vm", "sys")) {
        let tcg = view.doc.samples.iter().any(|r| {
            view.doc.cell(r.cell).is_some_and(|c| c.backend == "vm")
                && r.sample.counters.contains_key("vm.accel_tcg")
        });
        out.push(if tcg {
            format!(
                "The whole-OS VM ran under TCG, QEMU's translation of the whole guest, its kernel \
                 included (the VMware-style row): CPU work from {} to {} (plain integer code \
                 translates well, floating point and string instructions become helper calls), \
                 while a system call stays inside the guest ({}), where vbench's micro-VM leaves it.",
                x(cpu.min),
                x(cpu.max),
                x(sys.geomean)
            )
        } else {
            format!(
                "The whole-OS VM ran hardware-assisted (KVM): CPU work {} and system calls {}, \
                 answered by the guest's own kernel.",
                x(cpu.geomean),
                x(sys.geomean)
            )
        });
    }
    if let (Some(g), Some(c)) = (get("gvisor", "sys"), get("container", "sys")) {
        out.push(format!(
            "Young et al. (HotCloud 2019, \"The true cost of containing\"): gVisor's system calls \
             cost many times a container's, its compute does not. This run {}: gvisor's sys {} \
             against the container's {}.",
            verdict(g.geomean > 3.0 * c.geomean),
            x(g.geomean),
            x(c.geomean)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }
}
