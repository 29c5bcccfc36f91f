//! The `bt` backend: a dynamic binary translator in the DynamoRIO model. Each guest runs in a
//! translator process of its own, forked from the harness ([`crate::session::forked`]): the
//! program is loaded there (at its link addresses, or its ELF interpreter's, beside a guest
//! stack, a program break and an mmap arena), but its code never runs from there: basic blocks are decoded with
//! iced-x86 and re-encoded into a code cache ([`translate`]); direct branches are linked block
//! to block once both sides exist; indirect jumps, calls and returns go through a hash table
//! that stays in the cache on a hit; `syscall`, `cpuid`, `rdtsc`, `pushf`/`popf` and every other
//! sensitive instruction leaves for the dispatcher, which emulates it (syscalls through
//! [`crate::linux_abi`]) or reports it as the guest's fault. Guest FS base is switched with
//! FSGSBASE instructions, so guest code never runs with vbench's thread-local storage.
//! Faults in translated code (a guest segfault) and asynchronous signals the guest handles are
//! signals whose handler redirects translated code to an exit; a fault anywhere else is the
//! translator's own bug, which ends its process and never the harness. The process model
//! (fork, execve, waits, signal dispositions and masks) is the translator process's own: it
//! forks with its code cache, replaces its image at an execve, and mirrors the guest's
//! dispositions and mask onto itself, so default actions are the kernel's.
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
mod threads;
pub mod translate;

pub use emulate::virtual_cpuid;

use crate::linux_abi::{self, Abi};
use crate::session::{self, forked};
use crate::{Availability, Backend, BackendError, Invocation, Outcome};
use cache::Translator;
use dispatch::{Stop, Tally};
use emulate::Vcpu;
use signals::Signals;
use space::{Space, BRK_END, MMAP_HI, MMAP_LO, MMAP_NEAR};
use std::collections::BTreeMap;
use translate::{xsave_mask, CODE};

/// The binary-translation backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct BtBackend;

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
        // everything that reads shared state or may fail clearly is done here, in the harness
        let job = loader::Job::of(inv)?;
        let setup = linux_abi::Setup {
            layout: linux_abi::Layout {
                brk_start: 0,
                brk_limit: BRK_END,
                mmap_lo: MMAP_LO,
                mmap_hi: MMAP_HI,
                mmap_near: MMAP_NEAR,
            },
            outputs: [linux_abi::Output::Inherit(1), linux_abi::Output::Inherit(2)],
            inherit_stdin: true,
            policy: inv.abi,
            allowed: session::allowed_paths(inv),
            delivers_signals: true,
            own_process: true,
            exe: session::guest_exe(inv),
            timer_kick: 0,
        };
        linux_abi::table::entry(0); // its index is built before the fork
        let forked = forked::run_forked(inv, |child| translator_process(child, &job, setup))?;
        if let Some(e) = &forked.report.error {
            return Err(invalid(format!("bt: {e}")));
        }
        let sup = &forked.sup;
        Ok(Outcome {
            sample: vbench_results::Sample {
                wall_ns: forked.wall.as_nanos() as u64,
                user_ns: sup.user_ns,
                sys_ns: sup.sys_ns,
                max_rss_kib: Some(forked::own_peak_kib(&forked)),
                exit: sup.exit,
                report: None,
                startup_ns: forked.report.startup_ns,
                counters: forked.report.counters.clone(),
                stdout_bytes: sup.stdout_bytes,
                stdout_digest: String::new(),
                stderr_tail: String::from_utf8_lossy(&sup.stderr_tail).into_owned(),
                cpu: inv.cpu,
            },
            stdout: forked.sup.stdout,
        })
    }
}

/// The translator process (forked by [`BtBackend::run`]): loads the guest, translates and runs
/// it until it exits, replacing its image at each execve, reports its counters, and ends as
/// the guest ended (its exit status, or the signal it died of). Its first thread runs the
/// guest's first thread; each thread the guest starts is a host thread of its own
/// ([`threads`]). Returns only when set-up fails: the exit status for the caller's `_exit`.
fn translator_process(
    child: &mut forked::Child,
    job: &loader::Job,
    mut setup: linux_abi::Setup,
) -> i32 {
    let t0 = child.t0;
    let mut space = Space::new();
    let layout = setup.layout;
    let prepared = (|| {
        let tr = Translator::new(&mut space)?;
        let guest = loader::load(&mut space, job)?;
        setup.layout.brk_start = guest.image_end;
        setup.layout.brk_limit = guest.brk_end;
        let signals = Signals::install()?;
        let report = child
            .share()
            .map_err(|e| invalid(format!("bt: the report file: {e}")))?;
        Ok::<_, BackendError>((guest, tr, signals, report))
    })();
    let (guest, tr, signals, report) = match prepared {
        Ok(p) => p,
        Err(e) => {
            child.report(&forked::Report {
                error: Some(e.to_string()),
                ..Default::default()
            });
            return 126;
        }
    };
    let ctx = loader::initial_context(&guest, tr.xmask);
    let abi = Abi::new(setup);
    // translated code answers getpid itself (translate::IN_CACHE); the thread's own ids
    let pid = abi.pid() as u64;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    ctx.in_cache = [pid, 0, tid as u64, signals::claim(tid), 0];
    signals::arm(&tr.tramps, CODE, tr.cursor);
    let world = threads::World {
        tr,
        space,
        abi,
        total: Tally::default(),
        hits: 0,
        in_cache: 0,
        threads_started: 0,
        yields: 0,
        deferred: 0,
        report,
        layout,
        _signals: signals,
    };
    let (sh, held) = threads::Shared::start(world);
    let mut me = threads::GuestThread {
        ctx: Box::new(ctx.clone()),
        vcpu: Vcpu::new(),
        state: linux_abi::ThreadState::default(),
    };
    threads::drive(sh, held, &mut me, t0);
    // the guest's first thread exited and others run on: the process ends with the last
    threads::park()
}

/// The process ends as its guest did (`stop`): the first process reports, and the translator
/// exits with the guest's status or dies of its signal. Nothing is torn down (no unmapping of
/// the guest's memory and the cache, no freeing of the translator's tables), which the kernel
/// does at once at exit: a guest that forks and exits often (a shell) pays for that on every
/// child.
fn end_process(mut held: threads::Held, stop: Stop) -> ! {
    let w = held.world();
    // only the guest's first process reports (its forked children share the report file)
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } == w.report.pid {
        let ctx = threads::ctx_page();
        let own = (w.hits + ctx.hits, w.in_cache + ctx.in_cache[1]);
        let mut counters = counters(&w.tr, &w.total, own, &w.abi, &w.space);
        for (k, v) in [
            ("bt.threads_started", w.threads_started),
            ("bt.baton_yields", w.yields),
            ("bt.calls_deferred", w.deferred),
        ] {
            if v > 0 {
                counters.insert(k.into(), v);
            }
        }
        w.report.report(&forked::Report {
            counters,
            startup_ns: w.total.startup.map(|d| d.as_nanos() as u64),
            error: None,
        });
    }
    if let Some(list) = w.abi.unsupported() {
        forked::child_note(
            "bt",
            &format!("unsupported syscalls answered with ENOSYS: {list}"),
        );
    }
    match stop {
        Stop::Exited(code) => forked::exit_now(code & 0xff),
        Stop::Crashed { signal, message }
        | Stop::Fault(signals::GuestFault {
            signal, message, ..
        }) => {
            if !message.starts_with("killed by signal") {
                forked::child_note("bt", &message);
            }
            forked::die_of(signal)
        }
        _ => forked::exit_now(125),
    }
}

/// execve's point of no return, in the process's one thread left: the old image goes, the
/// new one must load.
fn exec(
    mut held: threads::Held,
    me: &mut threads::GuestThread,
    job: &loader::Job,
) -> threads::Held {
    let w = held.world();
    w.tr.flush();
    w.space.clear_guest();
    let guest = match loader::load(&mut w.space, job) {
        Ok(g) => g,
        Err(e) => {
            forked::child_note("bt", &format!("execve of {}: {e}", job.name));
            forked::die_of(libc::SIGKILL);
        }
    };
    w.abi.exec_done(
        linux_abi::Layout {
            brk_start: guest.image_end,
            brk_limit: guest.brk_end,
            ..w.layout
        },
        std::fs::canonicalize(&job.name).unwrap_or_else(|_| job.name.clone().into()),
    );
    signals::mirror_all(&w.abi.signals.actions);
    // the thread's ids (in_cache) stay; everything else starts afresh
    loader::initial_context(&guest, w.tr.xmask);
    me.vcpu = Vcpu::new();
    held
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
