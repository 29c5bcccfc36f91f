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
    }
    Ok(ExitCode::SUCCESS)
}
