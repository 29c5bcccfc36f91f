//! Synthetic results documents for the gate's unit tests.

use crate::schema::{Cell, Document, Plan, Sample, SampleRecord, WorkloadReport, SCHEMA_VERSION};

/// A document with native and container cells for each workload; `ratio(workload, round)`
/// gives the container/native ratio of that round (native takes 100 ns/op).
pub(super) fn doc(workloads: &[&str], rounds: u32, ratio: impl Fn(&str, u32) -> f64) -> Document {
    let mut cells = Vec::new();
    for w in workloads {
        for b in ["native", "container"] {
            cells.push(Cell {
                id: cells.len(),
                workload: w.to_string(),
                class: "cpu".into(),
                backend: b.into(),
                args: vec!["iters=1000".into()],
                op: "step".into(),
            });
        }
    }
    let mut samples = Vec::new();
    for r in 0..rounds {
        // drift: every round is slower or faster as a whole; it cancels in the ratio
        let drift = 1.0 + 0.2 * ((r * 7 % 5) as f64 - 2.0) / 2.0;
        for c in &cells {
            let per_op = 100.0
                * drift
                * if c.backend == "native" {
                    1.0
                } else {
                    ratio(&c.workload, r)
                };
            samples.push(SampleRecord {
                cell: c.id,
                round: r,
                sample: Sample {
                    wall_ns: 1_000_000,
                    report: Some(WorkloadReport {
                        task: c.workload.clone(),
                        params: vec![],
                        iters: 1000,
                        ns: (per_op * 1000.0).round() as u64,
                        checksum: "ab".into(),
                    }),
                    ..Sample::default()
                },
            });
        }
    }
    // through serde, so fields added to the schema later (with defaults) need no change here
    let plan = Plan {
        rounds,
        seed: 1,
        cells,
        ..Plan::default()
    };
    serde_json::from_value(serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "vbench", "version": "0.1.0"},
        "status": "complete",
        "started_unix_ms": 1,
        "finished_unix_ms": 2,
        "environment": {"hostname": "h", "kernel": "k", "cpu_model": "c", "logical_cpus": 2,
                        "hypervisor": null, "kvm": "absent", "cgroup": "v2"},
        "plan": plan,
        "samples": samples,
        "summaries": [],
        "failures": [],
    }))
    .unwrap()
}

/// Small deterministic per-round noise, within +-2%.
pub(super) fn jitter(w: &str, r: u32) -> f64 {
    let h = w.len() as u32 * 31 + r * 17;
    1.0 + ((h % 9) as f64 - 4.0) / 200.0
}
