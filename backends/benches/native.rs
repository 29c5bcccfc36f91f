//! The native backend's per-run cost beside the plainest spawn there is, in one run: a tiny
//! static binary (the workload ELF's `getpid iters=1`, or `/bin/true` without it) run by
//! - `native_backend`: `Native::run`, what `vbench run --backend native` does per sample
//!   (process group, stdout/stderr captured through bounded pipes, pidfd supervision with a
//!   timeout, wait4 for rusage);
//! - `spawn_wait_null`: `std::process::Command` with stdio on /dev/null and a blocking wait,
//!   what hyperfine -N does per run.
//!
//! Run with `[VBENCH_BENCH_WORKLOAD=ELF] cargo bench -p vbench-backends --bench native`
//! (`vbench workload-elf ELF` writes the workload ELF).

use criterion::{criterion_group, criterion_main, Criterion};
use std::process::{Command, Stdio};
use std::time::Duration;
use vbench_backends::native::Native;
use vbench_backends::{Backend, Invocation, Program};

fn program() -> (String, Vec<String>) {
    match std::env::var("VBENCH_BENCH_WORKLOAD") {
        Ok(p) => (p, vec!["getpid".into(), "iters=1".into()]),
        Err(_) => ("/bin/true".into(), vec![]),
    }
}

fn bench(c: &mut Criterion) {
    let (prog, args) = program();
    let mut g = c.benchmark_group("spawn");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    let inv = Invocation {
        timeout: Some(Duration::from_secs(10)),
        ..Invocation::new(
            Program::Path(prog.clone().into()),
            args.iter().map(Into::into).collect(),
        )
    };
    g.bench_function("native_backend", |b| {
        b.iter(|| {
            let o = Native.run(&inv).unwrap();
            assert!(o.sample.succeeded());
        })
    });
    g.bench_function("spawn_wait_null", |b| {
        b.iter(|| {
            let st = Command::new(&prog)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
