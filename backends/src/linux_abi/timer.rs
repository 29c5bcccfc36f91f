//! The real-time interval timer (ITIMER_REAL: alarm, setitimer, getitimer) of a guest that
//! shares the backend's host process (kvm's VMM runs in the harness). A host alarm would
//! signal the whole harness; instead each guest gets a POSIX timer that signals only the
//! thread that runs it ([`timer_signal`], without SA_RESTART, so a host call the VMM is
//! blocked in for the guest returns EINTR). The handler only counts the expiry in the timer's
//! slot and sets the guest's kick byte (kvm_run.immediate_exit: a vCPU about to enter the guest
//! leaves at once), and the backend turns the count into the guest's SIGALRM at its next exit.
//!
//! Slots are static, so a signal still queued when a timer is deleted finds a slot whose
//! generation has moved on and does nothing.

use super::Errno;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

/// The host signal of the guests' timers.
pub fn timer_signal() -> libc::c_int {
    libc::SIGRTMIN() + 6
}

struct Slot {
    used: AtomicBool,
    generation: AtomicU32,
    fired: AtomicU32,
    /// Address of the byte the handler sets to 1 (0: none).
    kick: AtomicU64,
}

const SLOTS: usize = 64;
static TIMERS: [Slot; SLOTS] = [const {
    Slot {
        used: AtomicBool::new(false),
        generation: AtomicU32::new(0),
        fired: AtomicU32::new(0),
        kick: AtomicU64::new(0),
    }
}; SLOTS];

static HANDLER: Once = Once::new();

extern "C" fn on_timer(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; a timer's carries
    // the sigev_value it was created with.
    let v = unsafe { (*info).si_value().sival_ptr } as u64;
    let (slot, generation) = ((v >> 32) as usize, v as u32);
    let Some(s) = TIMERS.get(slot) else { return };
    if s.generation.load(Ordering::Acquire) != generation {
        return; // a timer deleted since: its slot serves another guest now
    }
    s.fired.fetch_add(1, Ordering::AcqRel);
    let kick = s.kick.load(Ordering::Acquire);
    if kick != 0 {
        // SAFETY: the kick byte outlives the timer (the backend deletes the timer first), and
        // the slot's generation says this is that timer.
        unsafe { std::ptr::write_volatile(kick as *mut u8, 1) };
    }
}

fn install_handler() {
    HANDLER.call_once(|| {
        // SAFETY: the handler only uses atomics and one volatile byte store (async-signal
        // safe); the signal is vbench's own.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_timer as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO; // no SA_RESTART: blocked host calls return EINTR
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(timer_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// A guest's ITIMER_REAL, signalling the thread that created it.
#[derive(Debug)]
pub struct RealTimer {
    slot: usize,
    generation: u32,
    id: libc::timer_t,
}

fn to_timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

fn of_timespec(t: libc::timespec) -> Duration {
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl RealTimer {
    /// A stopped timer of the calling thread; when it fires, the byte at `kick` (if not 0) is
    /// set to 1. EAGAIN when every slot is taken.
    pub fn new(kick: u64) -> Result<RealTimer, Errno> {
        install_handler();
        let slot = TIMERS
            .iter()
            .position(|s| {
                s.used
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .ok_or(Errno::EAGAIN)?;
        let s = &TIMERS[slot];
        let generation = s.generation.fetch_add(1, Ordering::AcqRel) + 1;
        s.fired.store(0, Ordering::Release);
        s.kick.store(kick, Ordering::Release);
        // SAFETY: a zeroed sigevent is valid; the fields set are those SIGEV_THREAD_ID reads.
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_THREAD_ID;
        ev.sigev_signo = timer_signal();
        ev.sigev_value = libc::sigval {
            sival_ptr: (((slot as u64) << 32) | u64::from(generation)) as *mut libc::c_void,
        };
        // SAFETY: gettid has no preconditions.
        ev.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: a valid sigevent and an out-parameter for the id.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) } != 0 {
            let e = Errno::last();
            s.generation.fetch_add(1, Ordering::AcqRel);
            s.used.store(false, Ordering::Release);
            return Err(e);
        }
        Ok(RealTimer {
            slot,
            generation,
            id,
        })
    }

    /// Arms the timer to fire after `value` (zero: stops it), then every `interval`; the
    /// time that was left and the interval that was set.
    pub fn set(&self, value: Duration, interval: Duration) -> (Duration, Duration) {
        let new = libc::itimerspec {
            it_interval: to_timespec(interval),
            it_value: to_timespec(value),
        };
        // SAFETY: a zeroed itimerspec is a valid out-parameter.
        let mut old: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: the timer is this object's, alive; both structures are valid.
        unsafe { libc::timer_settime(self.id, 0, &new, &mut old) };
        (of_timespec(old.it_value), of_timespec(old.it_interval))
    }

    /// The time left and the interval.
    pub fn get(&self) -> (Duration, Duration) {
        // SAFETY: as in `set`.
        let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: the timer is alive; a valid out-parameter.
        unsafe { libc::timer_gettime(self.id, &mut cur) };
        (of_timespec(cur.it_value), of_timespec(cur.it_interval))
    }

    /// How many times it fired since the last call.
    pub fn take_fired(&self) -> u32 {
        TIMERS[self.slot].fired.swap(0, Ordering::AcqRel)
    }

    /// Fires once more after `after`, keeping the interval: for an expiry the backend could not
    /// deliver yet (the guest was in its kernel's code).
    pub fn again_after(&self, after: Duration) {
        let (left, interval) = self.get();
        if left.is_zero() || left > after {
            self.set(after, interval);
        }
    }
}

impl Drop for RealTimer {
    fn drop(&mut self) {
        // SAFETY: the timer is this object's and is deleted once.
        unsafe { libc::timer_delete(self.id) };
        let s = &TIMERS[self.slot];
        debug_assert_eq!(s.generation.load(Ordering::Acquire), self.generation);
        s.generation.fetch_add(1, Ordering::AcqRel);
        s.kick.store(0, Ordering::Release);
        s.used.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_fires_on_its_thread_interrupts_a_wait_and_sets_the_kick() {
        let mut kick = Box::new(0u8);
        let t = RealTimer::new(&mut *kick as *mut u8 as u64).unwrap();
        assert_eq!(t.get().0, Duration::ZERO);
        t.set(Duration::from_millis(20), Duration::ZERO);
        assert!(t.get().0 > Duration::ZERO);
        // a host wait is interrupted: EINTR, not a restart
        // SAFETY: pause has no preconditions; the timer's signal ends it.
        let r = unsafe { libc::pause() };
        assert_eq!(r, -1);
        assert_eq!(t.take_fired(), 1);
        assert_eq!(t.take_fired(), 0);
        // SAFETY: the box is alive; the handler wrote the byte with a volatile store.
        let kicked = unsafe { std::ptr::read_volatile(&*kick) };
        assert_eq!(kicked, 1);
        // the time left and the interval come back when it is set again
        t.set(Duration::from_secs(100), Duration::from_secs(7));
        let (left, interval) = t.set(Duration::ZERO, Duration::ZERO);
        assert!(left > Duration::from_secs(99) && interval == Duration::from_secs(7));
        let slot = t.slot;
        drop(t);
        assert!(!TIMERS[slot].used.load(Ordering::Acquire));
    }
}
