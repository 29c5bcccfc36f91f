//! Builds the freestanding workload ELF (crate `vbench-workloads`, always optimised) with a
//! nested cargo into its own target directory, so `include_bytes!` can embed it in `vbench`:
//! a plain `cargo build`, `cargo run` or `cargo test` needs no manual step.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let workloads = root.join("workloads");
    for f in ["Cargo.toml", "build.rs", "src"] {
        println!("cargo:rerun-if-changed={}", workloads.join(f).display());
    }
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out; share one workload build per target dir.
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_root = out_dir
        .ancestors()
        .nth(4)
        .map(PathBuf::from)
        .unwrap_or_else(|| out_dir.clone());
    let target_dir = target_root.join("workload-elf");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "vbench-workloads",
            "--bin",
            "vbench-workload",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's wrappers and flags (clippy, coverage, sanitizers) are not for the
        // freestanding ELF.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("cannot run cargo to build the workload ELF");
    assert!(status.success(), "building the workload ELF failed");
    let elf = target_dir.join("release").join("vbench-workload");
    println!("cargo:rustc-env=VBENCH_WORKLOAD_ELF={}", elf.display());
}
