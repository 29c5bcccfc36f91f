//! Link arguments for the freestanding workload ELF: no C start files, no libc, a static
//! executable that is not position independent (nothing runs relocations before `_start`).
//! They apply to the bin target only; the catalogue library and its unit tests link normally.
fn main() {
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
