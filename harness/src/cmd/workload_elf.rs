//! `vbench workload-elf`: the embedded workload ELF, written out to run it with other tools.

use crate::cmd::common::out_target;
use crate::workload;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

/// Runs `vbench workload-elf OUT`. A file is written atomically and made executable; a device
/// or a pipe (`/dev/null`, `-`) is written through and keeps its mode.
pub fn workload_elf(out: &Path) -> Result<ExitCode> {
    let target = out_target(Some(out), "workload")?;
    target
        .write_bytes(workload::ELF, Some(0o755))
        .with_context(|| format!("writing the workload ELF to {}", out.display()))?;
    Ok(ExitCode::SUCCESS)
}
