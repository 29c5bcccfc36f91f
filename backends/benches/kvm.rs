//! The costs the KVM backend is made of, measured by the guest itself (clock_gettime around a
//! loop of N operations) so VM creation is not counted:
//! - `exit_floor`: a write to the UART's scratch register, the cheapest exit there is (the VMM
//!   only counts it): what any trap to the VMM costs at least;
//! - `hypercall`: a syscall the VMM services (getuid), through the guest's syscall entry;
//! - `in_guest_syscall`: getpid, answered inside the guest;
//! - `cold_start`: create VM, memory, vCPU and registers until the first guest instruction
//!   (the sample's `startup_ns`).
//!
//! Run with `cargo bench -p vbench-backends --bench kvm` (needs /dev/kvm).

use criterion::{criterion_group, criterion_main, Criterion};
use iced_x86::code_asm::*;
use std::time::Duration;
use vbench_backends::kvm::{layout::UART, KvmBackend, KvmConfig};
use vbench_backends::{tiny_elf, Backend, Invocation, Program};

/// A guest that times `iters` repetitions of `op` and writes the two timespecs to stdout.
fn timed_loop(iters: u64, op: fn(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let buf = tiny_elf::DATA;
    let clock = |a: &mut CodeAssembler, at: u64| -> Result<(), IcedError> {
        a.mov(eax, 228)?;
        a.mov(edi, 1)?;
        a.mov(rsi, at)?;
        a.syscall()
    };
    (|| -> Result<(), IcedError> {
        clock(&mut a, buf)?;
        a.mov(rbx, iters)?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        op(&mut a)?;
        a.dec(rbx)?;
        a.jnz(top)?;
        clock(&mut a, buf + 16)?;
        a.mov(eax, 1)?;
        a.mov(edi, 1)?;
        a.mov(rsi, buf)?;
        a.mov(edx, 32)?;
        a.syscall()?;
        a.xor(edi, edi)?;
        a.mov(eax, 231)?;
        a.syscall()
    })()
    .unwrap();
    tiny_elf::build(
        &a.assemble(tiny_elf::BASE + tiny_elf::CODE).unwrap(),
        &[0u8; 32],
    )
}

fn guest_time(backend: &KvmBackend, image: Vec<u8>) -> Duration {
    let p = Program::from_bytes("bench", image).unwrap();
    let out = backend.run(&Invocation::new(p, vec![])).unwrap();
    assert!(out.sample.succeeded(), "{}", out.sample.stderr_tail);
    let w = |i: usize| i64::from_le_bytes(out.stdout[i..i + 8].try_into().unwrap());
    let ns = (w(16) - w(0)) * 1_000_000_000 + (w(24) - w(8));
    Duration::from_nanos(ns.max(0) as u64)
}

fn bench(c: &mut Criterion) {
    let backend = KvmBackend::default();
    if let vbench_backends::Availability::Unavailable(why) = backend.availability() {
        eprintln!("kvm benches skipped: {why}");
        return;
    }
    let mut g = c.benchmark_group("kvm");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("exit_floor", |b| {
        b.iter_custom(|n| {
            guest_time(
                &backend,
                timed_loop(n.max(1), |a| a.mov(byte_ptr(UART + 7), al)),
            )
        })
    });
    g.bench_function("hypercall", |b| {
        b.iter_custom(|n| {
            guest_time(
                &backend,
                timed_loop(n.max(1), |a| {
                    a.mov(eax, 102)?;
                    a.syscall()
                }),
            )
        })
    });
    g.bench_function("in_guest_syscall", |b| {
        b.iter_custom(|n| {
            guest_time(
                &backend,
                timed_loop(n.max(1), |a| {
                    a.mov(eax, 39)?;
                    a.syscall()
                }),
            )
        })
    });
    let exit_now = tiny_elf::build(&[0xb8, 0xe7, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05], &[]); // exit_group(0)
    for (name, mem) in [("cold_start", 512u64 << 20), ("cold_start_64m", 64 << 20)] {
        let backend = KvmBackend::new(KvmConfig {
            mem_bytes: mem,
            ..KvmConfig::default()
        });
        g.bench_function(name, |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        let p = Program::from_bytes("bench", exit_now.clone()).unwrap();
                        let out = backend.run(&Invocation::new(p, vec![])).unwrap();
                        Duration::from_nanos(out.sample.startup_ns.unwrap())
                    })
                    .sum()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
