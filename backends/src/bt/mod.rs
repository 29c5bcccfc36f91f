//! The `bt` backend: a dynamic binary translator in the DynamoRIO model. The guest program is
//! loaded into vbench's own process (at its link addresses, beside a guest stack, a program
//! break and an mmap arena), but its code never runs from there: basic blocks are decoded with
//! iced-x86 and re-encoded into a code cache ([`translate`]); direct branches are linked block
//! to block once both sides exist; indirect jumps, calls and returns go through a hash table
//! that stays in the cache on a hit; `syscall`, `cpuid`, `rdtsc`, `pushf`/`popf` and every other
//! sensitive instruction leaves for the dispatcher, which emulates it (syscalls through
//! [`crate::linux_abi`]) or reports it as the guest's fault. Guest FS base is switched with
//! FSGSBASE instructions, so guest code never runs with vbench's thread-local storage.
//! Faults in translated code (a guest segfault) and the watchdog's kick are signals whose
//! handler redirects translated code to an exit; a fault anywhere else is vbench's own bug.
//!
//! The parts, after DynamoRIO's `core/`: `space` (the guest's address space), `loader`
//! (image, stack, first registers), `cache` (the code cache and block lookup), `dispatch`
//! (the loop, one handler per exit kind), `emulate` (sensitive instructions, registers),
//! `signals` (host handlers and guest signal delivery), `counters` (fixed slots, named at
//! the end). The plumbing every backend shares (watchdog, pinning, stdio, the Outcome) is the
//! run session's ([`crate::session`]).

mod cache;
mod counters;
mod dispatch;
mod emulate;
mod loader;
mod signals;
mod space;
pub mod translate;

pub use emulate::virtual_cpuid;

use crate::linux_abi::{self, Abi};
use crate::session::{self, GuestOutputs, GuestRun, GuestStop, PinGuard, Watchdog};
use crate::{Availability, Backend, BackendError, Invocation, Outcome};
use cache::Translator;
use dispatch::{Machine, Stop, Tally};
use emulate::Vcpu;
use signals::Signals;
use space::{Space, BRK_END, MMAP_HI, MMAP_LO};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;
use translate::{xsave_mask, CODE};

/// The binary-translation backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct BtBackend;

/// One run at a time per process: the guest's addresses and the signal handlers are global.
static RUN_LOCK: Mutex<()> = Mutex::new(());

fn invalid(msg: String) -> BackendError {
    BackendError::Invalid(msg)
}

fn os(what: &str) -> BackendError {
    BackendError::Os {
        what: format!("bt: {what}"),
        source: std::io::Error::last_os_error(),
    }
}

/// Whether the kernel lets user code use rdfsbase/wrfsbase (HWCAP2_FSGSBASE).
fn has_fsgsbase() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_HWCAP2) & 2 != 0 }
}

impl Backend for BtBackend {
    fn name(&self) -> &'static str {
        "bt"
    }

    fn describe(&self) -> &'static str {
        "the same binary under vbench's dynamic binary translator"
    }

    fn availability(&self) -> Availability {
        if !cfg!(target_arch = "x86_64") {
            Availability::Unavailable("the translator needs an x86-64 host".into())
        } else if xsave_mask().is_none() {
            Availability::Unavailable("no XSAVE (or its state is too large)".into())
        } else if !has_fsgsbase() {
            Availability::Unavailable("the kernel does not enable FSGSBASE (Linux >= 5.9)".into())
        } else {
            Availability::Available
        }
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        if !has_fsgsbase() {
            return Err(BackendError::Unavailable {
                backend: "bt",
                reason: "the kernel does not enable FSGSBASE".into(),
            });
        }
        let _lock = RUN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let _pin = PinGuard::to(inv.cpu)?;
        let t0 = Instant::now();
        let mut guest = loader::load(inv)?;
        let mut tr = Translator::new(&mut guest.space)?;
        let ctx = loader::initial_context(&guest, tr.xmask);
        let mut abi = Abi::new(linux_abi::Setup {
            layout: linux_abi::Layout {
                brk_start: guest.image_end,
                brk_limit: BRK_END,
                mmap_lo: MMAP_LO,
                mmap_hi: MMAP_HI,
            },
            outputs: GuestOutputs::for_stdio(inv.stdio),
            inherit_stdin: inv.stdio == crate::Stdio::Inherit,
            policy: inv.abi,
            allowed: session::allowed_paths(inv),
            delivers_signals: true,
        });
        // translated code answers getpid and gettid itself (translate::IN_CACHE)
        ctx.in_cache = [abi.pid() as u64, 0, 0, 0, 0, 0, 0, 0];

        // The harness's own signals (^C, SIGTERM, SIGHUP) must never run their handler on this
        // thread while translated code runs with the guest's FS base: they are blocked here
        // and taken by the watchdog's thread, which sets the cancel flag and kicks the guest.
        let blocked = session::HarnessSignalsBlocked::new();
        let signals = Signals::install()?;
        signals::arm(&tr.tramps, CODE, tr.cursor);
        let mut watchdog = Watchdog::start(inv.timeout, inv.cancel.clone(), kicker());
        let ru0 = session::thread_times();
        let mut vcpu = Vcpu::new();
        let mut machine = Machine {
            ctx,
            space: &guest.space,
            abi: &mut abi,
            vcpu: &mut vcpu,
            tr: &mut tr,
        };
        let (stop, tally) = dispatch::dispatch(&mut machine, watchdog.flag(), t0);
        let (hits, in_cache) = (machine.ctx.hits, machine.ctx.in_cache[1]);
        signals::disarm();
        let wall = t0.elapsed();
        let ru1 = session::thread_times();
        watchdog.stop();
        drop(signals);
        drop(blocked);

        let counters = counters(&tr, &tally, (hits, in_cache), &abi, &guest.space);
        drop(guest);
        let stop = match stop {
            Stop::Exited(code) => GuestStop::Exited(code),
            Stop::Crashed { signal, message } => GuestStop::Crashed { signal, message },
            Stop::Fault(f) => GuestStop::Crashed {
                signal: f.signal,
                message: f.message,
            },
            Stop::Kicked => GuestStop::Kicked,
        };
        let (notes, outputs) = session::take_abi_results(&mut abi);
        let run = GuestRun {
            backend: "bt",
            stop,
            wall,
            times: (ru1.0.saturating_sub(ru0.0), ru1.1.saturating_sub(ru0.1)),
            // the guest shares the harness's process: its peak RSS is not the guest's
            max_rss_kib: None,
            startup: tally.startup,
            counters,
            notes,
        };
        Ok(session::guest_outcome(inv, run, watchdog.cause(), outputs))
    }
}

/// The watchdog's kick: the kick signal, whose handler sends translated code to its exit.
fn kicker() -> impl Fn() + Send + 'static {
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    move || {
        // libc, not nix: nix's Signal has no real-time signals.
        // SAFETY: the run thread lives until the watchdog is stopped (joined); the kick signal
        // has its handler installed for the whole run.
        unsafe { libc::pthread_kill(me, signals::kick_signal()) };
    }
}

/// The run's counters, named: the translator's, the dispatcher's and the ABI's.
fn counters(
    tr: &Translator,
    tally: &Tally,
    (hits, in_cache): (u64, u64),
    abi: &Abi,
    space: &Space,
) -> BTreeMap<String, u64> {
    let mut counters = tr.counts.named();
    counters.insert("bt.cache_bytes".into(), tr.cursor - CODE);
    counters.insert("bt.links".into(), tally.links);
    counters.insert("bt.indirect_hits".into(), hits);
    counters.insert("bt.indirect_misses".into(), tally.misses);
    counters.insert("bt.dispatcher_entries".into(), tally.entries);
    counters.insert("bt.invalidations".into(), tr.generation);
    if in_cache > 0 {
        counters.insert("bt.syscalls_in_cache".into(), in_cache);
    }
    counters.extend(abi.counters());
    counters.insert(
        "bt.guest_resident_bytes_at_exit".into(),
        space.resident_bytes(),
    );
    counters
}
