//! Builds the vm backend's guest init (crate `vbench-vm-agent`) with a nested cargo into its
//! own target directory, linked statically (`+crt-static`) so that the initramfs vbench makes
//! needs no shared libraries, and hands its path to `include_bytes!`.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for f in [
        "vm-agent/Cargo.toml",
        "vm-agent/src",
        "backends/src/vm/proto.rs",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out; one agent build per target dir.
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_root = out_dir
        .ancestors()
        .nth(4)
        .map(PathBuf::from)
        .unwrap_or_else(|| out_dir.clone());
    let target_dir = target_root.join("vm-agent");
    let triple = "x86_64-unknown-linux-gnu";
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "vbench-vm-agent"])
        .args(["--target", triple])
        .arg("--target-dir")
        .arg(&target_dir)
        // the outer build's wrappers and flags are not for the guest's init
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Ctarget-feature=+crt-static\x1f-Cstrip=symbols",
        )
        .status()
        .expect("cannot run cargo to build the vm guest's init");
    assert!(status.success(), "building the vm guest's init failed");
    let elf = target_dir
        .join(triple)
        .join("release")
        .join("vbench-vm-agent");
    println!("cargo:rustc-env=VBENCH_VM_AGENT_ELF={}", elf.display());
}
