//! `vbench list`: workloads with their parameters, backends with their availability.

use anyhow::Result;
use std::process::ExitCode;
use vbench_backends::linux_abi::table::TABLE;
use vbench_backends::linux_abi::{Entry, Level};
use vbench_backends::AbiPolicy;
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

/// How `backend` (bt or kvm) answers `e` under `policy`, and why when it refuses.
fn support(backend: &str, e: &Entry, policy: AbiPolicy) -> (String, Option<&'static str>) {
    // bt's guest is a host process of its own (its translator process); kvm's shares the VMM's
    let level = e.level_in(policy, backend == "bt");
    if backend == "kvm" && vbench_backends::kvm::IN_GUEST.contains(&e.nr) {
        return ("in guest".into(), None);
    }
    if backend == "bt" && vbench_backends::bt::translate::IN_CACHE.contains(&e.nr) {
        return ("in cache".into(), None);
    }
    let why = match level {
        Level::Refused(why) => Some(why),
        _ => None,
    };
    (level.label().into(), why)
}

/// Runs `vbench list --syscalls`: the system-call table of bt and kvm, per policy.
pub fn syscalls(json: bool) -> Result<ExitCode> {
    use std::fmt::Write as _;
    let mut o = String::new();
    let backends = ["bt", "kvm"];
    let mut rows: Vec<&Entry> = TABLE.iter().collect();
    rows.sort_by_key(|e| e.nr);
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|e| {
                let mut m = serde_json::Map::new();
                m.insert("nr".into(), e.nr.into());
                m.insert("name".into(), e.name().into());
                for b in backends {
                    for p in AbiPolicy::ALL {
                        let (label, why) = support(b, e, p);
                        m.insert(
                            format!("{b}/{}", p.name()),
                            serde_json::json!({"support": label, "reason": why}),
                        );
                    }
                }
                serde_json::Value::Object(m)
            })
            .collect();
        writeln!(
            o,
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "syscalls": v }))?
        )?;
        return print(&o);
    }
    writeln!(
        o,
        "system calls of bt and kvm guests, per backend and --abi policy:"
    )?;
    writeln!(
        o,
        "  host        the host kernel makes it (guest pointers, descriptors and paths translated)"
    )?;
    writeln!(
        o,
        "  emulated    vbench answers it (the guest's own pid, signals, limits, memory map)"
    )?;
    writeln!(
        o,
        "  named files the host kernel makes it on the files named on the command line only"
    )?;
    writeln!(
        o,
        "  in guest    kvm's guest kernel answers it without leaving the VM"
    )?;
    writeln!(
        o,
        "  in cache    bt's translated code answers it without leaving the code cache"
    )?;
    writeln!(
        o,
        "  ENOSYS      refused, for the reason given; any other number is refused too"
    )?;
    writeln!(o)?;
    let cols: Vec<String> = backends
        .iter()
        .flat_map(|b| AbiPolicy::ALL.map(|p| format!("{b}/{}", p.name())))
        .collect();
    writeln!(
        o,
        "  {:>3}  {:<18} {}",
        "nr",
        "syscall",
        cols.iter()
            .map(|c| format!("{c:<13}"))
            .collect::<String>()
            .trim_end()
    )?;
    for e in rows {
        let mut reasons: Vec<&str> = Vec::new();
        let mut cells = String::new();
        for b in backends {
            for p in AbiPolicy::ALL {
                let (label, why) = support(b, e, p);
                cells.push_str(&format!("{label:<13}"));
                if let Some(w) = why.filter(|w| !reasons.contains(w)) {
                    reasons.push(w);
                }
            }
        }
        let note = if reasons.is_empty() {
            String::new()
        } else {
            format!("  ({})", reasons.join("; "))
        };
        writeln!(
            o,
            "  {:>3}  {:<18} {}{note}",
            e.nr,
            e.name(),
            cells.trim_end()
        )?;
    }
    let supported = TABLE
        .iter()
        .filter(|e| !matches!(e.host, Level::Refused(_)))
        .count();
    writeln!(o)?;
    writeln!(
        o,
        "{} entries; {supported} supported under --abi host, {} under --abi confined",
        TABLE.len(),
        TABLE
            .iter()
            .filter(|e| !matches!(e.confined, Level::Refused(_)))
            .count()
    )?;
    print(&o)
}

/// Writes `o` to stdout; a reader that went away (`| head`) is not an error.
fn print(o: &str) -> Result<ExitCode> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(o.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
