//! Renders reports without the `vbench` CLI, for checking the page in a browser:
//!
//! ```sh
//! cargo run -p vbench-reports --example render -- RESULTS.json DIR
//! cargo run -p vbench-reports --example render -- --synthetic DIR
//! ```
//!
//! `--synthetic` renders the test fixture: native plus container, bt (unavailable) and kvm,
//! with counters, failures and an interrupted status, so every chart kind is drawn; its
//! comparison with a slower second run goes into `DIR/compare`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, dir] if flag == "--synthetic" => {
            let dir = Path::new(dir);
            let (base, new) = (common::document(), common::newer());
            vbench_reports::write_all(&base, dir)
                .and_then(|_| vbench_reports::write_compare(&base, &new, &dir.join("compare")))
                .map_err(|e| e.to_string())
        }
        [file, dir] => vbench_results::load(Path::new(file))
            .map_err(|e| e.to_string())
            .and_then(|doc| {
                vbench_reports::write_all(&doc, Path::new(dir)).map_err(|e| e.to_string())
            }),
        _ => Err("usage: render (RESULTS.json | --synthetic) DIR".into()),
    };
    match result {
        Ok(w) => {
            println!("{}", w.index.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("render: {e}");
            ExitCode::FAILURE
        }
    }
}
