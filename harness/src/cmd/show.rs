//! `vbench show`: the summary table of a results file.

use crate::cmd::common::{writer_gone, KILLED};
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

/// Runs `vbench show`. A run whose vbench was killed (the file still says `running` and its
/// writer is gone) is shown as it is, with [`KILLED`] after the table (on stderr with
/// `--json`, which keeps stdout the document); the exit status is 0 as for any file shown,
/// finished or not: it says whether the file could be shown, not how the run went.
pub fn show(file: &Path, json: bool) -> Result<ExitCode> {
    let doc = vbench_results::load(file)?;
    let killed = writer_gone(&doc);
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        if killed {
            eprintln!("vbench: {}: {KILLED}", file.display());
        }
    } else {
        print!("{}", vbench_reports::terminal::render(&doc));
        if killed {
            println!("\n{KILLED}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
