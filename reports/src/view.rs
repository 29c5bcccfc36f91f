//! Derived views of a document that several renderers share: which backends ran, the
//! workloads in plan order, per-cell sample sets, start-up estimates, counters.

use std::collections::BTreeMap;
use vbench_results::stats::median;
use vbench_results::{Cell, CellSummary, Document, FailureKind, RunStatus, Sample};

/// The name of the control backend every overhead is measured against.
pub const NATIVE: &str = "native";

/// The levels of virtualization in the lecture's order, from the one closest to the hardware
/// (the container shares the host's kernel) to the one furthest (a whole OS on a VMM), each
/// peer beside the level it stands for.
pub const LEVEL_ORDER: [&str; 8] = [
    "container",
    "crun",
    "gvisor",
    "bt",
    "qemu-user",
    "valgrind",
    "kvm",
    "vm",
];

/// The classes a level's overheads are given for, in order (`all` last: every workload).
pub const LEVEL_CLASSES: [&str; 5] = ["cpu", "mem", "sys", "custom", "all"];

/// The classes of [`LEVEL_CLASSES`] that any of `levels` has a figure for.
pub fn classes_of(levels: &[Level]) -> Vec<&'static str> {
    LEVEL_CLASSES
        .into_iter()
        .filter(|c| levels.iter().any(|l| l.class(c).is_some()))
        .collect()
}

/// One level's overheads by class: see [`View::levels`].
pub struct Level<'a> {
    pub backend: &'a str,
    pub classes: Vec<ClassOverhead>,
}

/// The overhead of one class of workloads on one level.
pub struct ClassOverhead {
    /// `cpu`, `mem`, `sys`, `custom` or `all`.
    pub class: &'static str,
    /// Geometric mean of the workloads' median ratios.
    pub geomean: f64,
    /// The smallest ratio.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// How many workloads.
    pub n: usize,
}

impl Level<'_> {
    /// The class's figure, when it has one.
    pub fn class(&self, class: &str) -> Option<&ClassOverhead> {
        self.classes.iter().find(|c| c.class == class)
    }
}

/// A document seen through the questions a report asks of it.
pub struct View<'a> {
    pub doc: &'a Document,
    /// Backends that have at least one cell, in plan order.
    pub ran: Vec<&'a str>,
    /// Workloads in the order of their first cell.
    pub workloads: Vec<&'a str>,
}

impl<'a> View<'a> {
    pub fn new(doc: &'a Document) -> Self {
        let mut ran: Vec<&str> = Vec::new();
        for b in &doc.plan.backends {
            if doc.plan.cells.iter().any(|c| c.backend == b.name) {
                ran.push(&b.name);
            }
        }
        let mut workloads: Vec<&str> = Vec::new();
        for c in &doc.plan.cells {
            if !ran.contains(&c.backend.as_str()) {
                ran.push(&c.backend);
            }
            if !workloads.contains(&c.workload.as_str()) {
                workloads.push(&c.workload);
            }
        }
        View {
            doc,
            ran,
            workloads,
        }
    }

    /// Peer tools (qemu-user, valgrind) that ran.
    pub fn peers(&self) -> Vec<&'a str> {
        self.ran
            .iter()
            .copied()
            .filter(|b| {
                self.doc
                    .plan
                    .backends
                    .iter()
                    .any(|s| s.name == *b && s.peer)
            })
            .collect()
    }

    /// Backends other than native that ran.
    pub fn others(&self) -> Vec<&'a str> {
        self.ran.iter().copied().filter(|b| *b != NATIVE).collect()
    }

    /// The cell of `workload` on `backend`.
    pub fn cell(&self, workload: &str, backend: &str) -> Option<&'a Cell> {
        self.doc
            .plan
            .cells
            .iter()
            .find(|c| c.workload == workload && c.backend == backend)
    }

    /// The summary of `workload` on `backend`.
    pub fn summary(&self, workload: &str, backend: &str) -> Option<&'a CellSummary> {
        self.cell(workload, backend)
            .and_then(|c| self.doc.summary(c.id))
    }

    /// The successful samples of a cell.
    pub fn ok_samples(&self, cell: usize) -> Vec<&'a Sample> {
        self.doc
            .samples
            .iter()
            .filter(|s| s.cell == cell && s.sample.succeeded())
            .map(|s| &s.sample)
            .collect()
    }

    /// The first cell of a workload (any backend), for its class, op and arguments.
    pub fn first_cell(&self, workload: &str) -> Option<&'a Cell> {
        self.doc.plan.cells.iter().find(|c| c.workload == workload)
    }

    /// Whether any cell has an overhead ratio to draw.
    pub fn has_overheads(&self) -> bool {
        self.doc.summaries.iter().any(|s| s.overhead.is_some())
    }

    /// Each level's overhead per class of workload (cpu, mem, sys, then `all`): the geometric
    /// mean of its workloads' median overhead ratios, with the smallest and largest, in the
    /// lecture's order of levels ([`LEVEL_ORDER`], then any other backend). Levels without an
    /// overhead are left out.
    pub fn levels(&self) -> Vec<Level<'a>> {
        let mut order: Vec<&'a str> = self.others();
        order.sort_by_key(|b| {
            LEVEL_ORDER
                .iter()
                .position(|l| l == b)
                .unwrap_or(LEVEL_ORDER.len())
        });
        order
            .into_iter()
            .filter_map(|b| {
                let per: Vec<(&'a str, f64)> = self
                    .workloads
                    .iter()
                    .filter_map(|w| {
                        let c = self.cell(w, b)?;
                        let o = self.summary(w, b)?.overhead?;
                        (o.median > 0.0).then_some((c.class.as_str(), o.median))
                    })
                    .collect();
                if per.is_empty() {
                    return None;
                }
                let mut classes = Vec::new();
                for class in LEVEL_CLASSES {
                    let v: Vec<f64> = per
                        .iter()
                        .filter(|(c, _)| class == "all" || *c == class)
                        .map(|(_, r)| *r)
                        .collect();
                    if v.is_empty() || (class == "all" && classes.len() < 2) {
                        continue;
                    }
                    let geomean = (v.iter().map(|r| r.ln()).sum::<f64>() / v.len() as f64).exp();
                    classes.push(ClassOverhead {
                        class,
                        geomean,
                        min: v.iter().copied().fold(f64::INFINITY, f64::min),
                        max: v.iter().copied().fold(0.0, f64::max),
                        n: v.len(),
                    });
                }
                Some(Level {
                    backend: b,
                    classes,
                })
            })
            .collect()
    }

    /// Start-up cost per backend that ran: see [`Startup`].
    pub fn startup(&self) -> Vec<Startup<'a>> {
        // The workload whose native runs spend the least time outside the measured loop is
        // the closest thing to an empty program: its outside-loop time is launch plus exit.
        let outside = |cell: usize| -> Vec<f64> {
            self.ok_samples(cell)
                .iter()
                .filter_map(|s| {
                    s.report
                        .as_ref()
                        .map(|r| s.wall_ns.saturating_sub(r.ns) as f64)
                })
                .collect()
        };
        let reference = self
            .workloads
            .iter()
            .filter_map(|w| {
                let c = self.cell(w, NATIVE).or_else(|| self.first_cell(w))?;
                let m = median(&outside(c.id))?;
                Some((*w, m))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(w, _)| w);
        self.ran
            .iter()
            .map(|b| {
                let reported: Vec<f64> = self
                    .doc
                    .plan
                    .cells
                    .iter()
                    .filter(|c| c.backend == *b)
                    .flat_map(|c| self.ok_samples(c.id))
                    .filter_map(|s| s.startup_ns.map(|v| v as f64))
                    .collect();
                let outside_loop = reference
                    .and_then(|w| self.cell(w, b))
                    .map(|c| outside(c.id))
                    .unwrap_or_default();
                Startup {
                    backend: b,
                    reported: Spread::of(&reported),
                    outside_loop: Spread::of(&outside_loop),
                    reference,
                }
            })
            .collect()
    }

    /// Counter name to (backend to median per run), for counters any sample reported.
    pub fn counters(&self) -> BTreeMap<String, BTreeMap<&'a str, f64>> {
        let mut per: BTreeMap<String, BTreeMap<&'a str, Vec<f64>>> = BTreeMap::new();
        for rec in &self.doc.samples {
            let Some(cell) = self.doc.cell(rec.cell) else {
                continue;
            };
            for (k, v) in &rec.sample.counters {
                per.entry(k.clone())
                    .or_default()
                    .entry(cell.backend.as_str())
                    .or_default()
                    .push(*v as f64);
            }
        }
        per.into_iter()
            .map(|(k, m)| {
                (
                    k,
                    m.into_iter()
                        .filter_map(|(b, v)| Some((b, median(&v)?)))
                        .collect(),
                )
            })
            .collect()
    }

    /// Counter name to median per run, for one cell.
    pub fn cell_counters(&self, cell: usize) -> BTreeMap<&'a str, f64> {
        let mut per: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for rec in self.doc.samples.iter().filter(|r| r.cell == cell) {
            for (k, v) in &rec.sample.counters {
                per.entry(k.as_str()).or_default().push(*v as f64);
            }
        }
        per.into_iter()
            .filter_map(|(k, v)| Some((k, median(&v)?)))
            .collect()
    }

    /// Cells whose samples are noisy: outliers, or a MAD above 5% of the median.
    pub fn noise_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.doc.plan.cells {
            let Some(s) = self.doc.summary(c.id) else {
                continue;
            };
            let rel = if s.median_ns > 0.0 {
                s.mad_ns / s.median_ns
            } else {
                0.0
            };
            let mut why = Vec::new();
            if s.outliers > 0 {
                why.push(format!(
                    "{} outlier(s) beyond 3 scaled MADs of {} samples",
                    s.outliers, s.n
                ));
            }
            if rel > 0.05 {
                why.push(format!("MAD is {:.1}% of the median", rel * 100.0));
            }
            if !why.is_empty() {
                out.push(format!(
                    "{} on {}: {}",
                    c.workload,
                    c.backend,
                    why.join("; ")
                ));
            }
        }
        out
    }

    /// One-line status of the run, for the top of every report.
    pub fn status_line(&self) -> String {
        let d = self.doc;
        let runs = d.samples.len();
        let mismatches = d
            .failures
            .iter()
            .filter(|f| f.kind == FailureKind::ChecksumMismatch)
            .count();
        let status = match d.status {
            RunStatus::Complete => "complete".to_string(),
            RunStatus::Running => {
                "STILL RUNNING when written: the file holds the rounds completed so far".into()
            }
            RunStatus::Interrupted => {
                "INTERRUPTED: the results hold the completed rounds only".into()
            }
        };
        let mut s = format!(
            "Run {status}; {} rounds planned, {runs} measured runs, {} failure(s)",
            d.plan.rounds,
            d.failures.len()
        );
        if mismatches > 0 {
            s.push_str(&format!(
                "; CORRECTNESS FAILURE: {mismatches} checksum mismatch(es)"
            ));
        }
        s.push('.');
        s
    }

    /// The command that reproduces the run's plan.
    pub fn reproduce(&self) -> String {
        let d = self.doc;
        let mut cmd = String::from("vbench run");
        for b in &d.plan.backends {
            if b.name != NATIVE {
                cmd.push_str(&format!(" --backend {}", b.name));
            }
        }
        let custom = d
            .plan
            .cells
            .iter()
            .find(|c| c.class == "custom")
            .map(|c| (c.workload.trim_start_matches("custom:"), &c.args));
        if custom.is_none() {
            for w in &self.workloads {
                cmd.push_str(&format!(" --workload {w}"));
            }
        }
        if d.plan.quick {
            cmd.push_str(" --quick");
        }
        cmd.push_str(&format!(
            " --rounds {} --warmup {} --seed {} --timeout {}",
            d.plan.rounds,
            d.plan.warmup,
            d.plan.seed,
            d.plan.timeout_ms as f64 / 1000.0
        ));
        if let Some((prog, args)) = custom {
            cmd.push_str(&format!(" -- {prog}"));
            for a in args {
                cmd.push(' ');
                cmd.push_str(a);
            }
        }
        cmd
    }
}

/// Start-up cost of one backend.
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(v: &[f64]) -> Option<Spread> {
        Some(Spread {
            median: median(v)?,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }
}

/// Start-up latency of a backend, two ways.
pub struct Startup<'a> {
    pub backend: &'a str,
    /// What the backend itself reported (clone to exec, VM create to first instruction, ...).
    pub reported: Option<Spread>,
    /// Wall time minus the measured loop, for the reference workload: launch, set-up and exit.
    pub outside_loop: Option<Spread>,
    /// The workload `outside_loop` was measured on.
    pub reference: Option<&'a str>,
}

/// Throughput in GiB/s for a pass over a `size=` bytes buffer, when the cell has one.
pub fn throughput_gib_s(cell: &Cell, ns_per_op: f64) -> Option<f64> {
    if cell.op != "pass" || ns_per_op <= 0.0 {
        return None;
    }
    let size: f64 = cell
        .args
        .iter()
        .find_map(|a| a.strip_prefix("size="))?
        .parse()
        .ok()?;
    Some(size / (1u64 << 30) as f64 / (ns_per_op / 1e9))
}

/// The arguments of a cell other than the task name.
pub fn params(cell: &Cell) -> String {
    let skip = usize::from(cell.args.first() == Some(&cell.workload));
    cell.args[skip..].join(" ")
}
