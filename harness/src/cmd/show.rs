//! `vbench show`: the summary table of a results file.

use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

/// Runs `vbench show`.
pub fn show(file: &Path, json: bool) -> Result<ExitCode> {
    let doc = vbench_results::load(file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", vbench_reports::terminal::render(&doc));
    }
    Ok(ExitCode::SUCCESS)
}
