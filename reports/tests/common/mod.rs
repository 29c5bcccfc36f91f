//! A synthetic results document with native and three other backends (one unavailable), backend
//! counters, failures and an interrupted status: what the reports must cope with once every
//! backend exists. Shared by the unit tests (through `#[path]`) and the golden tests.
//! Summaries are computed here by simple formulas, so the golden files do not move when the
//! statistics in `vbench-results` change.
#![allow(dead_code)]

use std::collections::BTreeMap;
use vbench_results::{
    BackendStatus, Cell, CellSummary, Document, Environment, Exit, Failure, FailureKind, Plan,
    Ratio, RunStatus, Sample, SampleRecord, Tool, WorkloadReport,
};

const BACKENDS: [(&str, Option<&str>); 4] = [
    ("native", None),
    ("container", None),
    ("bt", Some("not built yet (issue #5)")),
    ("kvm", None),
];

/// A workload of the fixture.
struct W {
    name: &'static str,
    class: &'static str,
    op: &'static str,
    args: &'static [&'static str],
    /// Native time per operation.
    ns: f64,
    iters: u64,
}

const WORKLOADS: [W; 3] = [
    W {
        name: "getpid",
        class: "sys",
        op: "call",
        args: &["getpid", "iters=1000"],
        ns: 150.0,
        iters: 1000,
    },
    W {
        name: "memcopy",
        class: "mem",
        op: "pass",
        args: &["memcopy", "size=67108864", "iters=2"],
        ns: 12.5e6,
        iters: 2,
    },
    W {
        name: "intmix",
        class: "cpu",
        op: "step",
        args: &["intmix", "iters=3000"],
        ns: 3.5,
        iters: 3000,
    },
];

fn workload(name: &str) -> &'static W {
    WORKLOADS.iter().find(|w| w.name == name).unwrap()
}

fn factor(backend: &str, workload: &str) -> f64 {
    match (backend, workload) {
        ("native", _) => 1.0,
        ("container", _) => 1.05,
        ("kvm", "getpid") => 0.9, // answered inside the guest kernel
        ("kvm", _) => 1.02,
        _ => 1.0,
    }
}

/// The synthetic document.
pub fn document() -> Document {
    let mut cells = Vec::new();
    for w in &WORKLOADS {
        for (b, reason) in BACKENDS {
            if reason.is_some() {
                continue;
            }
            cells.push(Cell {
                id: cells.len(),
                workload: w.name.into(),
                class: w.class.into(),
                backend: b.into(),
                args: w.args.iter().map(|s| s.to_string()).collect(),
                op: w.op.into(),
            });
        }
    }
    let rounds = 4u32;
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for round in 0..rounds {
        for c in &cells {
            let (base, iters) = (workload(&c.workload).ns, workload(&c.workload).iters);
            // round-to-round noise of -2%..+3%, and one outlier on container getpid
            let mut noise = 1.0 + [0.0, 0.03, -0.02, 0.01][round as usize];
            if c.backend == "container" && c.workload == "getpid" && round == 3 {
                noise = 1.6;
            }
            let per_op = base * factor(&c.backend, &c.workload) * noise;
            let loop_ns = (per_op * iters as f64).round() as u64;
            let startup = match c.backend.as_str() {
                "native" => 400_000,
                "container" => 9_000_000,
                "kvm" => 35_000_000,
                _ => 0,
            };
            let mut counters = BTreeMap::new();
            match c.backend.as_str() {
                "kvm" => {
                    counters.insert("vm_exits.hypercall".to_string(), 12 + u64::from(round));
                    counters.insert("vm_exits.io".to_string(), 3);
                }
                "container" => {
                    counters.insert("cgroup.nr_throttled".to_string(), u64::from(round % 2));
                }
                _ => {}
            }
            let exit = if c.backend == "kvm" && c.workload == "intmix" && round == 2 {
                failures.push(Failure {
                    cell: c.id,
                    round: Some(round),
                    kind: FailureKind::BadExit,
                    message: "intmix on kvm: killed by signal 11".into(),
                });
                Exit::Signal { signal: 11 }
            } else {
                Exit::Code { code: 0 }
            };
            let checksum = if c.backend == "kvm" && c.workload == "memcopy" {
                "00000000deadbeef"
            } else {
                "0123456789abcdef"
            };
            samples.push(SampleRecord {
                cell: c.id,
                round,
                sample: Sample {
                    wall_ns: loop_ns + startup,
                    user_ns: loop_ns,
                    sys_ns: 1000,
                    max_rss_kib: Some(4096),
                    exit,
                    report: Some(WorkloadReport {
                        task: c.workload.clone(),
                        params: Vec::new(),
                        iters,
                        ns: loop_ns,
                        checksum: checksum.into(),
                    }),
                    startup_ns: (c.backend != "native").then_some(startup / 2),
                    counters,
                    stdout_bytes: 64,
                    stdout_digest: "aaaaaaaaaaaaaaaa".into(),
                    stderr_tail: String::new(),
                    cpu: None,
                },
            });
        }
    }
    let summaries: Vec<CellSummary> = cells
        .iter()
        .map(|c| {
            let base = workload(&c.workload).ns;
            let f = factor(&c.backend, &c.workload);
            let median = base * f * 1.005;
            let n = if c.backend == "kvm" && c.workload == "intmix" {
                3
            } else {
                4
            };
            let memcopy_kvm = c.backend == "kvm" && c.workload == "memcopy";
            CellSummary {
                cell: c.id,
                n,
                metric: "loop_ns_per_op".into(),
                median_ns: median,
                mad_ns: median * 0.015,
                ci_low_ns: median * 0.98,
                ci_high_ns: median * 1.03,
                outliers: usize::from(c.backend == "container" && c.workload == "getpid"),
                wall_median_ns: median * 1000.0,
                checksum: Some(
                    if memcopy_kvm {
                        "00000000deadbeef"
                    } else {
                        "0123456789abcdef"
                    }
                    .into(),
                ),
                checksum_consistent: true,
                checksum_matches_native: (c.backend != "native").then_some(!memcopy_kvm),
                overhead: (c.backend != "native").then_some(Ratio {
                    median: f,
                    ci_low: f * 0.97,
                    ci_high: f * 1.04,
                    pairs: n,
                }),
            }
        })
        .collect();
    if let Some(c) = cells
        .iter()
        .find(|c| c.backend == "kvm" && c.workload == "memcopy")
    {
        failures.push(Failure {
            cell: c.id,
            round: None,
            kind: FailureKind::ChecksumMismatch,
            message:
                "memcopy on kvm: checksum 00000000deadbeef differs from native's 0123456789abcdef"
                    .into(),
        });
    }
    Document {
        schema_version: vbench_results::SCHEMA_VERSION,
        tool: Tool {
            name: "vbench".into(),
            version: "0.1.0".into(),
        },
        status: RunStatus::Interrupted,
        started_unix_ms: 1_700_000_000_000,
        finished_unix_ms: Some(1_700_000_060_000),
        environment: Environment {
            hostname: "testhost".into(),
            kernel: "Linux 6.1.0 x86_64".into(),
            cpu_model: "Example CPU @ 3.0GHz".into(),
            logical_cpus: 8,
            hypervisor: None,
            kvm: "usable, API 12, vmx".into(),
            cgroup: "v2".into(),
            extra: BTreeMap::from([("governor".to_string(), "performance".to_string())]),
        },
        plan: Plan {
            rounds,
            warmup: 1,
            quick: true,
            seed: 7,
            timeout_ms: 120_000,
            backends: BACKENDS
                .iter()
                .map(|(b, r)| BackendStatus {
                    name: b.to_string(),
                    available: r.is_none(),
                    reason: r.map(str::to_string),
                    peer: false,
                    colour: colour(b),
                })
                .collect(),
            cells,
        },
        samples,
        summaries,
        failures,
        isolation: None,
        writer: None,
    }
}

/// A second run of the same plan where container got 20% slower on getpid and nothing else
/// changed, for comparison tests.
pub fn newer() -> Document {
    let mut d = document();
    d.status = RunStatus::Complete;
    let ids: Vec<usize> = d
        .plan
        .cells
        .iter()
        .filter(|c| c.backend == "container" && c.workload == "getpid")
        .map(|c| c.id)
        .collect();
    for s in d.summaries.iter_mut().filter(|s| ids.contains(&s.cell)) {
        s.median_ns *= 1.2;
        s.ci_low_ns *= 1.2;
        s.ci_high_ns *= 1.2;
    }
    d
}

/// The colours the backend registry gives (what `vbench run` records in each document).
pub fn colour(backend: &str) -> Option<String> {
    let c = match backend {
        "native" => "#4e79a7",
        "container" => "#f28e2b",
        "bt" => "#59a14f",
        "kvm" => "#e15759",
        "qemu-user" => "#9c755f",
        "valgrind" => "#b07aa1",
        _ => return None,
    };
    Some(c.into())
}
