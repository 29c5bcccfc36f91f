//! `vbench list`: workloads with their parameters, backends with their availability.

use anyhow::Result;
use std::process::ExitCode;
use vbench_workloads::{ParamKind, TASKS};

/// Runs `vbench list`.
pub fn list(json: bool) -> Result<ExitCode> {
    let all = vbench_backends::all();
    if json {
        let tasks: Vec<_> = TASKS
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "class": t.class.name(), "op": t.op, "summary": t.summary,
                    "params": t.params.iter().map(|p| match p.kind {
                        ParamKind::Int { default, quick, min, max } => serde_json::json!({
                            "name": p.name, "default": default, "quick": quick, "min": min, "max": max, "help": p.help }),
                        ParamKind::Str { default } => serde_json::json!({
                            "name": p.name, "default": default, "help": p.help }),
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        let backends: Vec<_> = all
            .iter()
            .map(|b| {
                let av = b.availability();
                serde_json::json!({
                    "name": b.name(), "describe": b.describe(), "available": av.is_available(),
                    "reason": match av { vbench_backends::Availability::Unavailable(r) => Some(r), _ => None },
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"workloads": tasks, "backends": backends})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("workloads (parameters: name=default, quick value in parentheses):");
    for t in TASKS {
        let params: Vec<String> = t
            .params
            .iter()
            .map(|p| match p.kind {
                ParamKind::Int { default, quick, .. } => format!("{}={default} ({quick})", p.name),
                ParamKind::Str { default } => format!("{}={default}", p.name),
            })
            .collect();
        println!(
            "  {:<14} {:<4} per {:<9} {}",
            t.name,
            t.class.name(),
            t.op,
            t.summary
        );
        println!("  {:<14} {}", "", params.join("  "));
    }
    println!("\nbackends:");
    for b in &all {
        let status = match b.availability() {
            vbench_backends::Availability::Available => "available".to_string(),
            vbench_backends::Availability::Unavailable(r) => format!("unavailable: {r}"),
        };
        println!("  {:<10} {:<58} {}", b.name(), b.describe(), status);
    }
    Ok(ExitCode::SUCCESS)
}
