//! The guest-program suite shared by the tests of the in-process levels (bt and kvm): tiny
//! static programs assembled with iced-x86 into one tiny ELF (`vbench_backends::tiny_elf`),
//! and the one way to run them on a level, so both levels are held to the same expectations.
#![allow(dead_code)] // each test crate uses a part of it

use iced_x86::code_asm::*;
use std::time::Duration;
use vbench_backends::bt::BtBackend;
use vbench_backends::kvm::KvmBackend;
use vbench_backends::{tiny_elf, Backend, BackendError, Invocation, Outcome, Program};
use vbench_results::Exit;

/// Where tiny programs are loaded and their code starts.
pub const BASE: u64 = tiny_elf::BASE;
/// The address of the first instruction.
pub const ENTRY: u64 = tiny_elf::BASE + tiny_elf::CODE;
/// The data area passed to [`elf`].
pub const DATA: u64 = tiny_elf::DATA;

/// The levels that run guest code in vbench's own process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The binary translator.
    Bt,
    /// The micro-VM.
    Kvm,
}

impl Level {
    /// Both, in display order.
    pub const ALL: [Level; 2] = [Level::Bt, Level::Kvm];

    /// The backend.
    pub fn backend(self) -> Box<dyn Backend> {
        match self {
            Level::Bt => Box::new(BtBackend),
            Level::Kvm => Box::new(KvmBackend::default()),
        }
    }

    /// Whether tests may run on it here (skipping only as `require_or_skip` allows).
    pub fn usable(self) -> bool {
        let b = self.backend();
        let have = b.availability().into_result();
        vbench_testkit::require_or_skip(&format!("the {} backend", b.name()), have)
    }
}

/// A tiny static ELF running the assembled code, with `data` at [`DATA`].
pub fn elf(
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    data: &[u8],
) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    build(&mut a).unwrap();
    tiny_elf::build(&a.assemble(ENTRY).unwrap(), data)
}

/// `exit_group(r)`.
pub fn exit_with(a: &mut CodeAssembler, r: AsmRegister64) -> Result<(), IcedError> {
    a.mov(rdi, r)?;
    a.mov(eax, 231)?;
    a.syscall()
}

/// `exit_group(-rax)`: a negative errno in rax becomes the exit status.
pub fn exit_with_errno(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rdi, rax)?;
    a.neg(rdi)?;
    a.mov(eax, 231)?;
    a.syscall()
}

/// Runs `image` on `level` with a timeout.
pub fn try_run(level: Level, image: Vec<u8>, timeout_ms: u64) -> Result<Outcome, BackendError> {
    let p = Program::from_bytes("guest", image).unwrap();
    let mut inv = Invocation::new(p, vec![]);
    inv.timeout = Some(Duration::from_millis(timeout_ms));
    level.backend().run(&inv)
}

/// Runs `image` on `level` (20 s timeout).
pub fn run(level: Level, image: Vec<u8>) -> Outcome {
    try_run(level, image, 20_000).unwrap()
}

/// Checks that the run died of `signal` and that its stderr tail holds every needle.
pub fn crashed(o: &Outcome, signal: i32, needles: &[&str]) {
    assert_eq!(
        o.sample.exit,
        Exit::Signal { signal },
        "{}",
        o.sample.stderr_tail
    );
    for n in needles {
        assert!(
            o.sample.stderr_tail.contains(n),
            "{n:?} not in {:?}",
            o.sample.stderr_tail
        );
    }
}
