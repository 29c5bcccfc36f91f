//! The watchdog of an in-process guest (bt, kvm): a thread that sleeps until the run ends, its
//! timeout passes or the harness cancels it, and then kicks the guest out of its loop.
//!
//! It sleeps on a condition variable, so the end of a run wakes it at once: the run's wall time
//! never includes a sleep step of the watchdog, and a run's thread never waits for it. The
//! cancellation flag is set from a signal handler (which cannot notify a condvar), so while a
//! run has a cancellation flag the watchdog also looks at it every [`CANCEL_POLL`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vbench_results::Exit;

/// How often a cancellation flag is looked at.
pub const CANCEL_POLL: Duration = Duration::from_millis(20);
/// How often a guest that did not leave yet is kicked again.
const REKICK: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Shared {
    done: Mutex<bool>,
    wake: Condvar,
    /// Set before the first kick: the loop that runs the guest checks it between entries.
    kicked: AtomicBool,
    /// Why it kicked.
    cause: Mutex<Option<Exit>>,
}

/// A running watchdog; stopped (and its thread joined) by [`Watchdog::stop`] or on drop.
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Watches a run that may take `timeout` and may be cancelled through `cancel`; `kick`
    /// makes the guest leave its loop (it is called again every few ms until the run stops).
    /// Without a timeout and a cancellation flag no thread is started.
    pub fn start(
        timeout: Option<Duration>,
        cancel: Option<Arc<AtomicBool>>,
        kick: impl Fn() + Send + 'static,
    ) -> Watchdog {
        let shared = Arc::new(Shared::default());
        let thread = (timeout.is_some() || cancel.is_some()).then(|| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("vbench-watchdog".into())
                .spawn(move || {
                    // the harness's signals are blocked in a thread that runs a guest; this
                    // thread takes them (their handler sets `cancel`, which it watches)
                    super::HarnessSignalsBlocked::unblock_in_this_thread();
                    watch(&shared, timeout, cancel.as_deref(), &kick)
                })
                .expect("spawning the watchdog thread")
        });
        Watchdog { shared, thread }
    }

    /// Whether the guest was told to stop.
    pub fn kicked(&self) -> bool {
        self.shared.kicked.load(Ordering::Acquire)
    }

    /// The flag a guest loop reads between entries (set before the first kick).
    pub fn flag(&self) -> &AtomicBool {
        &self.shared.kicked
    }

    /// How a kicked run ended (interrupted or timed out); `None` when it was not kicked.
    pub fn cause(&self) -> Option<Exit> {
        *self.shared.cause.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the watch: wakes the thread at once and joins it.
    pub fn stop(&mut self) {
        *self.shared.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(shared: &Shared, timeout: Option<Duration>, cancel: Option<&AtomicBool>, kick: &dyn Fn()) {
    let start = Instant::now();
    let mut done = shared.done.lock().unwrap_or_else(|p| p.into_inner());
    while !*done {
        if !shared.kicked.load(Ordering::Acquire) {
            let cause = if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                Some(Exit::Interrupted)
            } else {
                timeout
                    .filter(|t| start.elapsed() >= *t)
                    .map(|t| Exit::Timeout {
                        after_ms: t.as_millis() as u64,
                    })
            };
            if let Some(c) = cause {
                *shared.cause.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                shared.kicked.store(true, Ordering::Release);
            }
        }
        let wait = if shared.kicked.load(Ordering::Acquire) {
            kick();
            REKICK
        } else {
            let left = timeout.map_or(Duration::MAX, |t| t.saturating_sub(start.elapsed()));
            if cancel.is_some() {
                left.min(CANCEL_POLL)
            } else {
                left
            }
        };
        done = shared
            .wake
            .wait_timeout(done, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn stopping_wakes_it_at_once() {
        // a long timeout and a cancellation flag: the watchdog sleeps in CANCEL_POLL steps;
        // stopping must not wait for the step to end. Measured as a ratio against the step so
        // that a loaded machine does not make the test flaky.
        let cancel = Arc::new(AtomicBool::new(false));
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let mut w = Watchdog::start(Some(Duration::from_secs(60)), Some(cancel.clone()), || {});
            std::thread::sleep(Duration::from_millis(1));
            let t = Instant::now();
            w.stop();
            worst = worst.max(t.elapsed());
            assert!(!w.kicked());
            assert_eq!(w.cause(), None);
        }
        // the old watchdog slept in fixed 5-10 ms steps and was joined before wall time was
        // read; a condvar wake-up takes microseconds
        assert!(worst < CANCEL_POLL / 2, "stop took {worst:?}");
    }

    #[test]
    fn a_timeout_kicks_until_stopped_and_says_why() {
        let kicks = Arc::new(AtomicU32::new(0));
        let k = kicks.clone();
        let mut w = Watchdog::start(Some(Duration::from_millis(30)), None, move || {
            k.fetch_add(1, Ordering::Relaxed);
        });
        let t = Instant::now();
        while !w.kicked() {
            assert!(t.elapsed() < Duration::from_secs(10), "never kicked");
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        w.stop();
        assert!(
            kicks.load(Ordering::Relaxed) >= 2,
            "kicked again while running"
        );
        assert_eq!(w.cause(), Some(Exit::Timeout { after_ms: 30 }));
    }

    #[test]
    fn cancellation_kicks_and_says_interrupted() {
        let cancel = Arc::new(AtomicBool::new(false));
        let mut w = Watchdog::start(None, Some(cancel.clone()), || {});
        cancel.store(true, Ordering::Relaxed);
        let t = Instant::now();
        while !w.kicked() {
            assert!(t.elapsed() < Duration::from_secs(10), "never kicked");
            std::thread::yield_now();
        }
        w.stop();
        assert_eq!(w.cause(), Some(Exit::Interrupted));
    }

    #[test]
    fn without_timeout_or_cancel_there_is_no_thread() {
        let w = Watchdog::start(None, None, || unreachable!());
        assert!(w.thread.is_none());
    }
}
