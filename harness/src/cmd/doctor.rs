//! `vbench doctor`: this machine and the conditions that make numbers noisy.

use crate::doctor;
use anyhow::Result;
use std::process::ExitCode;

/// Runs `vbench doctor`.
pub fn doctor(json: bool) -> Result<ExitCode> {
    let r = doctor::report();
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", doctor::render(&r));
        // the whole-OS VM's defaults (--vm-kernel and --vm-accel change them per run)
        let vm = vbench_backends::vm::VmConfig::default();
        let kernel = match vbench_backends::vm::find_kernel(&vm) {
            Ok((k, from)) => format!("{} (from {from})", k.display()),
            Err(why) => why,
        };
        let accel = match vbench_backends::vm::kvm_unusable() {
            None => "kvm (hardware-assisted)".to_string(),
            Some(why) => format!("tcg (kvm acceleration unavailable: {why})"),
        };
        println!("\nwhole-OS VM (--backend vm), by default:");
        println!("  {:<18} {kernel}", "guest kernel");
        println!("  {:<18} {accel}", "accelerator");
    }
    Ok(ExitCode::SUCCESS)
}
