//! Privileged tests of the KVM backend: real VMs running tiny static programs assembled here.
//! They skip only when /dev/kvm is unusable and VBENCH_REQUIRE_PRIVILEGED is unset. What bt
//! and kvm share (exit, output, faults, timeouts, errnos) is in `guests.rs`; this file holds
//! what only a VM has (ring detection, the UART, guest RAM).

mod common;

use common::{elf, exit_with_errno as exit_with_rax, Level, BASE};
use iced_x86::code_asm::*;
use std::time::Duration;
use vbench_backends::kvm::{Console, KvmBackend, KvmConfig};
use vbench_backends::{Backend, Invocation, Outcome, Program};
use vbench_results::Exit;

fn kvm_usable() -> bool {
    Level::Kvm.usable()
}

fn run_with(cfg: KvmConfig, image: Vec<u8>, timeout_ms: u64) -> Outcome {
    let p = Program::from_bytes("guest", image).unwrap();
    let mut inv = Invocation::new(p, vec![]);
    inv.timeout = Some(Duration::from_millis(timeout_ms));
    KvmBackend::new(cfg).run(&inv).unwrap()
}

fn run(image: Vec<u8>) -> Outcome {
    run_with(KvmConfig::default(), image, 20_000)
}

#[test]
fn exit_status_and_ring_detection() {
    if !kvm_usable() {
        return;
    }
    let o = run(elf(
        |a| {
            a.mov(eax, 39)?; // getpid: answered in the guest where the stub is used
            a.syscall()?;
            a.mov(edi, 42)?;
            a.mov(eax, 231)?;
            a.syscall()
        },
        &[],
    ));
    assert_eq!(o.sample.exit, Exit::Code { code: 42 });
    let ring = o.sample.counters[vbench_backends::kvm::counters::SYSCALL_RING];
    assert!(ring == 0 || ring == 3);
    assert!(o.sample.counters[vbench_backends::kvm::counters::COLD_START_NS] > 0);
}

fn hello() -> Vec<u8> {
    elf(
        |a| {
            a.mov(eax, 1)?;
            a.mov(edi, 1)?;
            a.mov(rsi, BASE + 0x800)?;
            a.mov(edx, 6)?;
            a.syscall()?;
            a.mov(edi, 0)?;
            a.mov(eax, 231)?;
            a.syscall()
        },
        b"hello\n",
    )
}

#[test]
fn console_by_hypercall_and_by_uart() {
    if !kvm_usable() {
        return;
    }
    let o = run(hello());
    assert_eq!(o.stdout, b"hello\n");
    assert_eq!(o.sample.counters.get("kvm.uart_bytes"), None);
    let o = run_with(
        KvmConfig {
            console: Console::Uart,
            ..KvmConfig::default()
        },
        hello(),
        20_000,
    );
    assert_eq!(o.stdout, b"hello\n");
    if o.sample.counters[vbench_backends::kvm::counters::SYSCALL_RING] == 3 {
        // one THR write and at least one LSR read per byte: trap-and-emulate
        assert_eq!(o.sample.counters["kvm.uart_bytes"], 6);
        assert!(o.sample.counters["kvm.exits.mmio_uart"] >= 12);
    }
}

#[test]
fn access_outside_ram_is_reported() {
    if !kvm_usable() {
        return;
    }
    let o = run(elf(|a| a.mov(byte_ptr(0x7000_0100), al), &[]));
    assert_eq!(
        o.sample.exit,
        Exit::Signal {
            signal: libc::SIGBUS
        }
    );
    assert!(
        o.sample.stderr_tail.contains("outside its RAM"),
        "{}",
        o.sample.stderr_tail
    );
}

#[test]
fn allocation_beyond_guest_ram_fails_inside_with_enomem() {
    if !kvm_usable() {
        return;
    }
    let o = run_with(
        KvmConfig {
            mem_bytes: 64 << 20,
            ..KvmConfig::default()
        },
        elf(
            |a| {
                a.mov(eax, 9)?;
                a.xor(edi, edi)?;
                a.mov(esi, 128 << 20)?;
                a.mov(edx, 3)?;
                a.mov(r10d, 0x22)?;
                a.mov(r8, -1i64)?;
                a.xor(r9d, r9d)?;
                a.syscall()?;
                exit_with_rax(a)
            },
            &[],
        ),
        20_000,
    );
    assert_eq!(o.sample.exit, Exit::Code { code: 12 });
}

#[test]
fn the_vcpu_thread_is_pinned_and_its_cpu_time_and_memory_are_measured() {
    if !kvm_usable() {
        return;
    }
    let cpus = vbench_backends::session::pin::allowed_cpus();
    let cpu = *cpus.last().unwrap();
    // the guest spins until the watchdog stops it; meanwhile the test reads the affinity of
    // the thread that runs the vCPU
    let image = elf(
        |a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.jmp(top)
        },
        &[],
    );
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let p = Program::from_bytes("spin", image).unwrap();
        let mut inv = Invocation::new(p, vec![]);
        inv.timeout = Some(Duration::from_millis(600));
        inv.cpu = Some(cpu);
        KvmBackend::default().run(&inv).unwrap()
    });
    let tid = tid_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    let o = runner.join().unwrap();
    assert_eq!(
        allowed,
        cpu.to_string(),
        "the vCPU thread runs on the pinned CPU"
    );
    assert_eq!(o.sample.exit, Exit::Timeout { after_ms: 600 });
    assert_eq!(o.sample.cpu, Some(cpu));
    // 600 ms of spinning in the guest is CPU time of the vCPU thread (user or system,
    // depending on how the host accounts guest time), not 0 as before
    assert!(
        o.sample.user_ns + o.sample.sys_ns > 100_000_000,
        "cpu time {} + {}",
        o.sample.user_ns,
        o.sample.sys_ns
    );
    let touched = o.sample.counters[vbench_backends::kvm::counters::GUEST_RAM_TOUCHED_BYTES];
    assert!(touched > 0 && touched < 512 << 20, "{touched}");
    assert_eq!(o.sample.max_rss_kib, Some(touched / 1024));
}

#[test]
fn a_cpu_that_does_not_exist_is_refused_before_the_vm_starts() {
    if !kvm_usable() {
        return;
    }
    let p = Program::from_bytes("g", elf(|a| a.hlt(), &[])).unwrap();
    let mut inv = Invocation::new(p, vec![]);
    inv.cpu = Some(4095);
    let e = KvmBackend::default().run(&inv).unwrap_err().to_string();
    assert!(e.contains("CPU 4095") && e.contains("available"), "{e}");
}
