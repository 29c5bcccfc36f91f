//! One module per command; what they share is in [`common`].

pub mod common;
pub mod doctor;
pub mod exec;
pub mod gate;
pub mod isolate;
pub mod list;
pub mod report;
pub mod run;
pub mod show;
pub mod workload_elf;
