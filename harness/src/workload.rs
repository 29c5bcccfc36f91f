//! The embedded workload ELF and its catalogue.

use anyhow::{Context, Result};
use vbench_backends::Program;

/// The freestanding workload binary, built by build.rs from the `workloads` crate.
pub static ELF: &[u8] = include_bytes!(env!("VBENCH_WORKLOAD_ELF"));

/// The workload as a runnable program, held in a sealed memfd.
pub fn program() -> Result<Program> {
    Program::from_bytes("vbench-workload", ELF.to_vec())
        .context("loading the embedded workload ELF")
}
