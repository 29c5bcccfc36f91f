//! The results of a vbench run: a versioned serde schema, atomic storage, the parser for the
//! workload's result line, and the statistics (median, MAD, bootstrap confidence intervals,
//! paired overhead ratios) that summaries are made of.
#![deny(missing_docs)]

pub mod compare;
pub mod line;
pub mod schema;
pub mod stats;
pub mod store;

pub use line::{parse_report, LineError};
pub use schema::*;
pub use store::{load, write_atomic, ResultsError};
