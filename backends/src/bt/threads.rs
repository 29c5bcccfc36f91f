//! Guest threads, in Valgrind's model: a host thread per guest thread, and one of them at a
//! time runs the guest (translated code, the dispatcher, the ABI) while it holds the baton.
//! The others wait for the baton, or block in a host call of their own with the baton
//! released (futex waits, reads and writes, sleeps, waits for children:
//! [`crate::linux_abi::Action::Block`]), so a thread that waits never stops the rest. The baton
//! passes in FIFO order; a thread that keeps it for a whole slice while another waits (a loop
//! in translated code that makes no call) is kicked out of the cache at its next block
//! boundary. The code cache is shared and holds nothing per thread: the running thread's
//! registers are in the context page ([`CTX`]), the others' in their own copies, swapped with
//! the baton, as is the ABI's per-thread state (signal mask, alternate stack, clear-tid word).
//!
//! Threads run one at a time, so a multi-threaded guest uses one core: what bt measures is the
//! cost of translation, not of parallel execution (DynamoRIO's shared-fragment model, which runs
//! threads in parallel, needs thread-safe linking and cache invalidation; Valgrind serialises
//! its threads in the same way).

use super::cache::Translator;
use super::dispatch::{self, Machine, Stop, Tally};
use super::emulate::{finish_syscall, Vcpu};
use super::signals;
use super::space::Space;
use super::translate::{Ctx, CTX};
use crate::linux_abi::{Abi, Errno, GuestMem, ThreadSpec, ThreadState};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long a thread runs the guest while another waits before it is made to yield.
const SLICE: Duration = Duration::from_millis(10);

/// A thread clone asked for: its first registers and virtual CPU, and the parent's syscall.
pub(super) struct Spawn {
    pub(super) ctx: Box<Ctx>,
    pub(super) vcpu: Vcpu,
    pub(super) spec: ThreadSpec,
    pub(super) nr: u64,
    pub(super) next: u64,
}

impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spawn({:?}, at guest rip {:#x})", self.spec, self.next)
    }
}

/// What the guest's threads share: the translator, the address space, the ABI's process
/// state, and the run's totals.
pub(super) struct World {
    pub(super) tr: Translator,
    pub(super) space: Space,
    pub(super) abi: Abi,
    pub(super) total: Tally,
    pub(super) hits: u64,
    pub(super) in_cache: u64,
    /// Threads the guest started, yields of the baton to a waiting thread, calls made with it
    /// released (`bt.threads_started`, `bt.baton_yields`, `bt.calls_deferred`).
    pub(super) threads_started: u64,
    pub(super) yields: u64,
    pub(super) deferred: u64,
    /// Where the process's report goes.
    pub(super) report: crate::session::forked::Child,
    /// The guest's memory layout as the run began (an execve's new image gets it again).
    pub(super) layout: crate::linux_abi::Layout,
    /// The translator's handlers and its first thread's alternate stack (kept).
    pub(super) _signals: signals::Signals,
}

/// The baton's queue.
struct Baton {
    /// The ticket that holds the baton now; tickets are taken in order.
    serving: u64,
    next: u64,
    /// The host thread that holds it.
    holder: i32,
    /// The host ids of the guest's live threads.
    threads: Vec<i32>,
    /// An execve: every thread but the one that makes it leaves.
    leaving: bool,
}

/// The guest's threads' shared state and the baton that guards it.
pub(super) struct Shared {
    baton: Mutex<Baton>,
    turn: Condvar,
    /// A thread has waited a slice for the baton: its holder yields at its next block
    /// boundary.
    wanted: AtomicBool,
    world: UnsafeCell<World>,
}

// SAFETY: the World is reached only through a `Held`, and there is one at a time (the baton's
// ticket protocol), so no two threads touch it at once; what it holds (descriptors, the maps,
// the translator's tables) may be used from any thread.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

/// The process's one Shared (for [`forking`]).
static SHARED: OnceLock<&'static Shared> = OnceLock::new();

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn lock(m: &Mutex<Baton>) -> MutexGuard<'_, Baton> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The baton, held: the way to the World.
pub(super) struct Held {
    sh: &'static Shared,
}

impl Held {
    pub(super) fn world(&mut self) -> &mut World {
        // SAFETY: this Held is the only one (see `Shared`), and the reference it gives out
        // borrows it.
        unsafe { &mut *self.sh.world.get() }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut b = lock(&self.sh.baton);
        b.serving += 1;
        self.sh.wanted.store(false, Ordering::Release);
        drop(b);
        self.sh.turn.notify_all();
    }
}

impl Shared {
    /// The shared state of a guest whose first thread is the calling one, which holds the
    /// baton.
    pub(super) fn start(world: World) -> (&'static Shared, Held) {
        let me = gettid();
        let sh: &'static Shared = Box::leak(Box::new(Shared {
            baton: Mutex::new(Baton {
                serving: 0,
                next: 1,
                holder: me,
                threads: vec![me],
                leaving: false,
            }),
            turn: Condvar::new(),
            wanted: AtomicBool::new(false),
            world: UnsafeCell::new(world),
        }));
        let _ = SHARED.set(sh);
        signals::set_holder(me);
        (sh, Held { sh })
    }

    /// Waits for the baton (kicking a holder that keeps it for more than a slice); with it,
    /// how many threads the guest has and whether they must leave (an execve).
    fn acquire(&'static self) -> (Held, usize, bool) {
        let me = gettid();
        let mut b = lock(&self.baton);
        let ticket = b.next;
        b.next += 1;
        while b.serving != ticket {
            let (holder, serving) = (b.holder, b.serving);
            let (g, to) = self
                .turn
                .wait_timeout(b, SLICE)
                .unwrap_or_else(|e| e.into_inner());
            b = g;
            // only the next in line kicks: every waiter's kick would be queued (the kick is a
            // real-time signal) and delivered to the holder in one burst
            if to.timed_out() && b.serving == serving && ticket == serving + 1 {
                self.wanted.store(true, Ordering::Release);
                signals::kick(holder);
            }
        }
        b.holder = me;
        let (threads, leaving) = (b.threads.len(), b.leaving);
        drop(b);
        signals::set_holder(me);
        (Held { sh: self }, threads, leaving)
    }

    fn threads(&self) -> usize {
        lock(&self.baton).threads.len()
    }

    /// Host thread `tid` is gone.
    fn remove(&self, tid: i32) {
        lock(&self.baton).threads.retain(|t| *t != tid);
    }
}

/// Runs `f` (a fork) so that the child starts with a baton of its own, held by its one
/// thread: the baton's lock is held across the fork, so that no other thread holds it in the
/// child's copy.
pub(super) fn forking<R>(f: impl FnOnce() -> R) -> R {
    let Some(sh) = SHARED.get() else {
        return f();
    };
    let mut b = lock(&sh.baton);
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let r = f();
    // SAFETY: as above.
    if unsafe { libc::getpid() } != parent {
        let me = gettid();
        b.threads = vec![me];
        b.holder = me;
        b.next = b.serving + 1;
        b.leaving = false;
        sh.wanted.store(false, Ordering::Release);
    }
    drop(b);
    r
}

/// A guest thread's own state while it does not run.
pub(super) struct GuestThread {
    /// Its registers (the context page's copy).
    pub(super) ctx: Box<Ctx>,
    pub(super) vcpu: Vcpu,
    /// The ABI's per-thread state.
    pub(super) state: ThreadState,
}

/// The context page: the running thread's registers.
pub(super) fn ctx_page() -> &'static mut Ctx {
    // SAFETY: the context page is mapped read-write at CTX for the whole run, is page aligned
    // and holds a Ctx; only the thread that holds the baton uses it.
    unsafe { &mut *(CTX as *mut Ctx) }
}

/// The running thread stops: its registers and ABI state go to its own copies.
fn switch_out(w: &mut World, me: &mut GuestThread) {
    let ctx = ctx_page();
    w.hits += std::mem::take(&mut ctx.hits);
    w.in_cache += std::mem::take(&mut ctx.in_cache[1]);
    (*me.ctx).clone_from(ctx);
    w.abi.switch_thread(&mut me.state);
}

/// Thread `me` runs next.
fn switch_in(w: &mut World, me: &mut GuestThread, threads: usize) {
    ctx_page().clone_from(&me.ctx);
    w.abi.switch_thread(&mut me.state);
    w.abi.set_threads(threads);
}

/// How a thread's run ended.
pub(super) enum End {
    /// The process ends (exit_group, the last thread's exit, a fatal signal) or replaces its
    /// image (execve): with the baton held.
    Process(Held, Stop),
    /// This thread is gone; the process goes on.
    Thread,
}

/// Runs guest thread `me` (switched in, holding the baton) until its process ends or it does.
pub(super) fn run(sh: &'static Shared, mut held: Held, me: &mut GuestThread, t0: Instant) -> End {
    loop {
        let w = held.world();
        let ctx = ctx_page();
        let mut machine = Machine {
            ctx,
            space: &w.space,
            abi: &mut w.abi,
            vcpu: &mut me.vcpu,
            tr: &mut w.tr,
        };
        let (stop, tally) = dispatch::dispatch(&mut machine, &sh.wanted, t0);
        w.total.add(&tally);
        match stop {
            Stop::Yield => {
                w.yields += 1;
                switch_out(w, me);
                drop(held);
                let Some(h) = rejoin(sh, me) else {
                    return End::Thread;
                };
                held = h;
            }
            Stop::Block { nr, next } => {
                let d = w.abi.take_deferred();
                w.deferred += 1;
                let slot = ctx_page().in_cache[3];
                switch_out(w, me);
                drop(held);
                // a signal the guest takes already waits: the call is not made, as the kernel
                // checks for signals before it sleeps
                let r = match &d {
                    _ if signals::pending(slot) & !me.state.mask != 0 => Errno::EINTR.ret(),
                    Some(d) => d.call(),
                    None => Errno::EFAULT.ret(),
                };
                let Some(h) = rejoin(sh, me) else {
                    return End::Thread;
                };
                held = h;
                let w = held.world();
                let r = match d {
                    Some(d) => w.abi.complete(&w.space, *d, r),
                    None => r,
                };
                if let Err(s) = finish_syscall(ctx_page(), &w.abi, nr, next, r) {
                    return End::Process(held, s);
                }
            }
            Stop::Spawn(s) => {
                let Spawn {
                    ctx,
                    vcpu,
                    spec,
                    nr,
                    next,
                } = *s;
                let r = match spawn(sh, w, ctx, vcpu, spec, t0) {
                    Ok(tid) => {
                        w.threads_started += 1;
                        // from now on this thread's calls that may block are deferred too
                        w.abi.set_threads(sh.threads());
                        for p in [spec.parent_tid, spec.child_tid] {
                            if p != 0 {
                                let _ = w.space.write(p, &(tid as u32).to_le_bytes());
                            }
                        }
                        i64::from(tid)
                    }
                    Err(e) => e.ret(),
                };
                if let Err(stop) = finish_syscall(ctx_page(), &w.abi, nr, next, r) {
                    return End::Process(held, stop);
                }
            }
            Stop::ExitThread(code) => {
                if sh.threads() == 1 {
                    return End::Process(held, Stop::Exited(code));
                }
                leave(sh, held, me);
                return End::Thread;
            }
            Stop::Exec(job) => {
                let held = evict_others(sh, held, me);
                return End::Process(held, Stop::Exec(job));
            }
            s => return End::Process(held, s),
        }
    }
}

/// Waits for the baton again and switches `me` in; None: the thread must leave (another
/// made an execve), and has.
fn rejoin(sh: &'static Shared, me: &mut GuestThread) -> Option<Held> {
    let (mut held, threads, leaving) = sh.acquire();
    switch_in(held.world(), me, threads);
    if leaving {
        leave(sh, held, me);
        return None;
    }
    Some(held)
}

/// The running thread ends: its clear-tid word is zeroed and woken (as the kernel does at a
/// thread's exit), its signal set freed; the baton passes on.
fn leave(sh: &'static Shared, mut held: Held, me: &mut GuestThread) {
    let w = held.world();
    let word = w.abi.clear_tid();
    if word != 0 && w.space.write(word, &0u32.to_le_bytes()).is_ok() {
        // SAFETY: FUTEX_WAKE on a checked guest word; it takes no other pointer.
        unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, 1, 0, 0, 0) };
    }
    signals::release(ctx_page().in_cache[3]);
    switch_out(w, me); // the next thread's switch_in gives the ABI the new count
    sh.remove(gettid());
    drop(held);
}

/// Before an execve: every other thread leaves (each is kicked out of what it waits in, and
/// leaves when it next has the baton); the baton comes back when they are gone.
fn evict_others(sh: &'static Shared, mut held: Held, me: &mut GuestThread) -> Held {
    let others: Vec<i32> = {
        let mut b = lock(&sh.baton);
        let me = gettid();
        b.leaving = true;
        b.threads.iter().copied().filter(|t| *t != me).collect()
    };
    if others.is_empty() {
        lock(&sh.baton).leaving = false;
        return held;
    }
    switch_out(held.world(), me);
    drop(held);
    while sh.threads() > 1 {
        for t in &others {
            signals::kick(*t);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mut held, threads, _) = sh.acquire();
    lock(&sh.baton).leaving = false;
    switch_in(held.world(), me, threads);
    held
}

/// Starts the host thread of a new guest thread (registers `ctx`): its id once it is
/// registered. It runs when it gets the baton, after its parent lets go.
fn spawn(
    sh: &'static Shared,
    w: &mut World,
    ctx: Box<Ctx>,
    vcpu: Vcpu,
    spec: ThreadSpec,
    t0: Instant,
) -> Result<i32, Errno> {
    let state = ThreadState::new_thread(w.abi.signals.mask, spec.clear_tid);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let started = std::thread::Builder::new()
        .name("bt-guest".into())
        .stack_size(8 << 20)
        .spawn(move || {
            let tid = gettid();
            let alt = signals::AltStack::new();
            if alt.is_err() {
                let _ = tx.send(None);
                return;
            }
            // registered before the parent goes on (it holds the baton meanwhile)
            lock(&sh.baton).threads.push(tid);
            let _ = tx.send(Some(tid));
            let mut me = GuestThread { ctx, vcpu, state };
            me.ctx.in_cache[2] = tid as u64;
            me.ctx.in_cache[3] = signals::claim(tid);
            let Some(held) = rejoin(sh, &mut me) else {
                return;
            };
            let body = std::panic::AssertUnwindSafe(|| drive(sh, held, &mut me, t0));
            if std::panic::catch_unwind(body).is_err() {
                crate::session::forked::exit_now(101); // the translator's bug ends its process
            }
            drop(alt);
        });
    // detached: the host thread ends with its guest thread
    drop(started.map_err(|_| Errno::EAGAIN)?);
    rx.recv().ok().flatten().ok_or(Errno::EAGAIN)
}

/// Runs guest thread `me` until the process ends (then it does not return: see
/// [`super::end_process`]) or the thread does. An execve goes on in this thread, the
/// process's only one then.
pub(super) fn drive(sh: &'static Shared, mut held: Held, me: &mut GuestThread, t0: Instant) {
    loop {
        match run(sh, held, me, t0) {
            End::Thread => return,
            End::Process(h, Stop::Exec(job)) => held = super::exec(h, me, &job),
            End::Process(h, stop) => super::end_process(h, stop),
        }
    }
}

/// The process's first host thread, once its guest thread is gone while others run: it waits
/// for the process to end (its return would end it).
pub(super) fn park() -> ! {
    loop {
        // SAFETY: pause has no preconditions; the handlers that interrupt it return.
        unsafe { libc::pause() };
    }
}
