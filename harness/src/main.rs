//! `vbench`: runs identical workloads natively, in a container, under binary translation and
//! in a micro-VM, and measures what each level of virtualization costs.

mod cli;
mod doctor;
mod gate_cmd;
mod isolate;
mod measure;
mod plan;
mod report_cmd;
mod scheduler;
mod workload;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vbench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
