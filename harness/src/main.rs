//! `vbench`: runs identical workloads natively, in a container, under binary translation and
//! in a micro-VM, and measures what each level of virtualization costs.

mod cli;
mod cmd;
mod doctor;
#[cfg(test)]
mod fake;
mod measure;
mod plan;
mod progress;
mod scheduler;
mod sizing;
mod workload;

use std::process::ExitCode;

fn main() -> ExitCode {
    let result = cli::main();
    // this vbench's record of its running children: none run any more
    vbench_backends::session::process::registry::close();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vbench: error: {}", error_chain(&e));
            if e.downcast_ref::<cmd::common::UsageError>().is_some() {
                ExitCode::from(cmd::common::EXIT_USAGE)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The error and its causes joined by ": ", each cause once: a cause whose text the message
/// before it already ends with (an error type that prints its source and also returns it as
/// `source()`) is not printed again.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source and also returns it (as `#[error("{path}: {source}")]`).
    #[derive(Debug)]
    struct Twice(std::io::Error);

    impl std::fmt::Display for Twice {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "/ro/x.json: {}", self.0)
        }
    }

    impl std::error::Error for Twice {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(libc::EROFS);
        let e = anyhow::Error::new(Twice(io)).context("writing results");
        let text = error_chain(&e);
        assert_eq!(text.matches("os error 30").count(), 1, "{text}");
        assert!(text.starts_with("writing results: /ro/x.json: "), "{text}");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}
