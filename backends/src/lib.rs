//! Execution backends: one [`Backend`] trait, implemented once per level of virtualization.
//! Every backend runs the same program bytes and returns a [`vbench_results::Sample`].
#![deny(missing_docs)]

pub mod bt;
pub mod container;
pub mod crun;
pub mod elf;
pub mod gvisor;
pub mod kvm;
pub mod linux_abi;
pub use linux_abi::Policy as AbiPolicy;
pub mod native;
pub mod peer;
pub mod program;
pub mod registry;
pub mod session;
pub mod tiny_elf;
pub mod vm;

pub use program::Program;

use std::ffi::OsString;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use vbench_results::Sample;

/// Whether a backend can run on this machine, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// It can run here.
    Available,
    /// It cannot; the reason names what is missing (e.g. "no /dev/kvm", "not root").
    Unavailable(String),
}

impl Availability {
    /// True when available.
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available)
    }

    /// `Ok(())` when available, else the reason (what `vbench_testkit::require_or_skip` takes).
    pub fn into_result(self) -> Result<(), String> {
        match self {
            Availability::Available => Ok(()),
            Availability::Unavailable(why) => Err(why),
        }
    }
}

/// Where a run's standard streams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// stdin is /dev/null; stdout is captured (bounded) for the result line; stderr keeps its tail.
    Capture,
    /// All three are the harness's own (`vbench exec`).
    Inherit,
}

/// One run to make.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// What to run.
    pub program: Program,
    /// Its arguments, after argv\[0\].
    pub args: Vec<OsString>,
    /// Kill the run after this long.
    pub timeout: Option<Duration>,
    /// Standard streams.
    pub stdio: Stdio,
    /// Pin the run to this CPU.
    pub cpu: Option<usize>,
    /// Set by the harness on SIGINT/SIGTERM: the backend kills the run and returns promptly.
    pub cancel: Option<Arc<AtomicBool>>,
    /// The run is expected to write more output than a pipe holds (the harness learned it from
    /// an earlier run of the same cell): the backend drains it as it comes. Otherwise output is
    /// drained when the run ends (or when it turns out to be large), which spares a short run a
    /// wake-up of the harness.
    pub chatty: bool,
    /// What the guest's system calls may do on the host (bt and kvm; the other backends run
    /// the program on the host kernel itself).
    pub abi: AbiPolicy,
}

impl Invocation {
    /// A captured run of `program` with `args` and no timeout, pinning or cancellation.
    pub fn new(program: Program, args: Vec<OsString>) -> Self {
        Invocation {
            program,
            args,
            timeout: None,
            stdio: Stdio::Capture,
            cpu: None,
            cancel: None,
            chatty: false,
            abi: AbiPolicy::Confined,
        }
    }
}

/// What a run produced: the measurements and the captured standard output.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Measurements (the harness fills `report` from `stdout`).
    pub sample: Sample,
    /// Captured standard output, at most [`session::STDOUT_CAP`] bytes (empty for `Stdio::Inherit`).
    pub stdout: Vec<u8>,
}

/// Errors a backend returns when it could not run the program at all. A program that ran and
/// failed is not an error: its exit is in the sample.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run here.
    #[error("backend {backend} is unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An operating-system call of the backend failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The argument is not acceptable to this backend.
    #[error("{0}")]
    Invalid(String),
}

/// A level of virtualization that can run a static x86-64 Linux program.
pub trait Backend: Send + Sync {
    /// Short name used on the command line and in results (`native`, `container`, `bt`, `kvm`).
    fn name(&self) -> &'static str;
    /// One line saying what the backend is.
    fn describe(&self) -> &'static str;
    /// Whether it can run here, with the reason when not.
    fn availability(&self) -> Availability;
    /// True for a peer tool measured beside vbench's backends (qemu-user, valgrind): selected
    /// only by name, never by `all`.
    fn is_peer(&self) -> bool {
        false
    }
    /// Runs the program once and measures it.
    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError>;
    /// What this backend's samples tell about the host, as (key, text) pairs for the results'
    /// environment (e.g. where `syscall` lands in a kvm guest). Each backend reads only its own
    /// counters, so the scheduler knows no backend's counter names.
    fn environment_notes(&self, samples: &[&Sample]) -> Vec<(String, String)> {
        let _ = samples;
        Vec::new()
    }
}

/// Every backend vbench knows, in display order: its own four, then the peers.
pub fn all() -> Vec<Box<dyn Backend>> {
    all_with(&Config::default())
}

/// Settings of the backends that have any.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The container backend's.
    pub container: container::ContainerConfig,
    /// The micro-VM's.
    pub kvm: kvm::KvmConfig,
    /// The whole-OS VM's.
    pub vm: vm::VmConfig,
    /// gVisor's platform.
    pub gvisor: gvisor::Platform,
}

/// Every backend, configured, in the registry's order: its own levels, then the peers.
pub fn all_with(cfg: &Config) -> Vec<Box<dyn Backend>> {
    registry::REGISTRY.iter().map(|e| (e.make)(cfg)).collect()
}
