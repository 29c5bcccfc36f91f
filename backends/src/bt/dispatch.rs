//! The dispatch loop (DynamoRIO's `dispatch.c`): find or translate the block at the guest's
//! next address, link the exit the guest left through, enter the cache, and handle the exit
//! it comes back with: an indirect-branch miss, an instruction to emulate, a fault, a kick.

use super::cache::Translator;
use super::counters::Counter;
use super::emulate::{emulate, Vcpu};
use super::signals::{self, deliver, GuestFault};
use super::space::Space;
use super::translate::{Ctx, CODE, CODE_END, INFO_EMULATE, INFO_FAULT, INFO_INDIRECT, INFO_KICK};
use crate::linux_abi::Abi;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why the guest stopped.
#[derive(Debug)]
pub(super) enum Stop {
    Exited(i32),
    Crashed {
        signal: i32,
        message: String,
    },
    /// A fault the guest may handle itself (a handler installed with rt_sigaction).
    Fault(GuestFault),
    /// Another guest thread waits to run: this one lets it (at a block boundary).
    Yield,
    /// execve of a program the translator can load: the translator process replaces the
    /// guest's image with it.
    Exec(Box<super::loader::Job>),
    /// Syscall `nr` (its `syscall` instruction ends at `next`) is to be made with nothing held
    /// ([`crate::linux_abi::Action::Block`]).
    Block {
        nr: u64,
        next: u64,
    },
    /// clone of a thread.
    Spawn(Box<super::threads::Spawn>),
    /// exit of the running thread.
    ExitThread(i32),
}

/// The guest dies of `signal`.
pub(super) fn crash(signal: i32, message: String) -> Stop {
    Stop::Crashed { signal, message }
}

/// What the loop counted.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Time from the start of the run to the first entry into translated code.
    pub(super) startup: Option<Duration>,
    pub(super) entries: u64,
    pub(super) misses: u64,
    pub(super) links: u64,
}

impl Tally {
    /// Adds `t` (a later stretch of the same process, after an execve).
    pub(super) fn add(&mut self, t: &Tally) {
        self.startup = self.startup.or(t.startup);
        self.entries += t.entries;
        self.misses += t.misses;
        self.links += t.links;
    }
}

/// The guest and everything the dispatcher works on.
pub(super) struct Machine<'a> {
    pub(super) ctx: &'a mut Ctx,
    pub(super) space: &'a Space,
    pub(super) abi: &'a mut Abi,
    pub(super) vcpu: &'a mut Vcpu,
    pub(super) tr: &'a mut Translator,
}

/// What an exit handler tells the loop.
enum Next {
    /// Go on with the guest (the trap flag's step, if any, is checked).
    Run,
    /// Go on at once (a signal was just delivered).
    Resume,
    Stop(Stop),
}

/// Runs the guest until it stops; `kicked`: another thread waits to run (the guest yields at
/// its next block boundary); `t0` the start of the run (for the start-up time).
pub(super) fn dispatch(m: &mut Machine, kicked: &AtomicBool, t0: Instant) -> (Stop, Tally) {
    // SAFETY: `enter` points at the entry trampoline written into the executable cache by
    // Translator::new; it follows the System V ABI (saves callee-saved registers, FS base and
    // FPU state and restores them before returning).
    let enter: extern "C" fn(*mut Ctx) = unsafe { std::mem::transmute(m.tr.tramps.enter) };
    let mut tally = Tally::default();
    // where to go on in the middle of translated code, after a kick that was not at an
    // instruction boundary
    let mut resume: Option<u64> = None;
    let stop = loop {
        if resume.is_none() && kicked.load(Ordering::Acquire) {
            break Stop::Yield;
        }
        let pc = m.ctx.next;
        // the guest's trap flag: run one instruction, then deliver SIGTRAP
        let stepping = m.vcpu.tf;
        let host = match resume.take() {
            Some(h) => h,
            None => {
                if let Err(s) = deliver_async(m) {
                    break s;
                }
                if m.ctx.next != pc {
                    continue; // a handler's frame was pushed: start over at the handler
                }
                let generation = m.tr.generation;
                m.tr.single |= stepping;
                let host = match m.tr.block(m.space, pc) {
                    Ok(h) => h,
                    Err(s) => break s,
                };
                let site = m.ctx.info;
                if (CODE..CODE_END).contains(&site) && m.tr.generation == generation {
                    m.tr.link(site, host);
                    tally.links += 1;
                }
                host
            }
        };
        m.ctx.info = 0;
        m.ctx.s_tgt = host;
        tally.entries += 1;
        tally.startup.get_or_insert_with(|| t0.elapsed());
        enter(m.ctx);
        let next = match m.ctx.info {
            INFO_INDIRECT => {
                tally.misses += 1;
                Next::Run
            }
            INFO_EMULATE => on_emulate(m),
            INFO_FAULT => on_fault(m),
            INFO_KICK => {
                // an asynchronous signal: at an instruction boundary the guest's state is
                // whole and the signal is delivered there; elsewhere the guest goes on at the
                // very host instruction it left, with every link and indirect-branch entry
                // undone, so it is back at the next block boundary
                let h = m.ctx.fault_host_rip;
                match m.tr.host_to_guest.get(&h) {
                    Some(g) => m.ctx.next = *g,
                    None => {
                        m.ctx.s_rax = m.ctx.k_srax;
                        m.tr.unlink_all();
                        m.tr.counts.add(Counter::SignalUnlinks, 1);
                        resume = Some(h);
                    }
                }
                Next::Resume
            }
            _ => Next::Run, // a link site: linked on the next turn
        };
        match next {
            Next::Run => {}
            Next::Resume => continue,
            Next::Stop(s) => break s,
        }
        if stepping && m.vcpu.tf {
            if let Err(s) = trap_after_step(m, pc) {
                break s;
            }
        }
    };
    (stop, tally)
}

/// Delivers the first pending asynchronous signal the guest does not block: to its handler
/// (a frame at `ctx.next`), or its default action when its disposition changed since the host
/// took it (the host's own default action applies otherwise).
fn deliver_async(m: &mut Machine) -> Result<(), Stop> {
    let slot = m.ctx.in_cache[3];
    let ready = signals::pending(slot) & !m.abi.signals.mask;
    if ready == 0 {
        if let Some(old) = m.abi.signals.saved_mask.take() {
            m.abi.signals.mask = old; // rt_sigsuspend woke for nothing the guest handles
            signals::mirror_mask(old);
        }
        return Ok(());
    }
    let sig = ready.trailing_zeros() as i32 + 1;
    let info = signals::take(sig, slot);
    let f = GuestFault {
        signal: sig,
        code: (info[1] & 0xffff_ffff) as u32 as i32,
        rip: m.ctx.next,
        addr: 0,
        message: format!("killed by signal {sig}"),
        info: Some(Box::new(info)),
    };
    let handler = m.abi.signals.actions[sig as usize][0];
    if deliver(m.ctx, m.space, m.vcpu, &mut m.abi.signals, &f) {
        // the exit the guest left through leads to where it was going, not to the handler
        m.ctx.info = 0;
        m.tr.counts.add(Counter::SignalsDelivered, 1);
        signals::mirror_mask(m.abi.signals.mask);
        signals::mirror_action(sig, m.abi.signals.actions[sig as usize][0]);
        return Ok(());
    }
    match handler {
        0 if crate::linux_abi::terminates(sig) => Err(crash(sig, f.message)),
        _ => Ok(()),
    }
}

/// The guest left to have an instruction emulated.
fn on_emulate(m: &mut Machine) -> Next {
    match emulate(m.ctx, m.space, m.abi, m.vcpu, m.tr) {
        Ok(()) => {}
        Err(Stop::Fault(f)) if deliver(m.ctx, m.space, m.vcpu, &mut m.abi.signals, &f) => {
            m.tr.counts.add(Counter::SignalsDelivered, 1);
        }
        Err(Stop::Fault(f)) => return Next::Stop(crash(f.signal, f.message)),
        Err(s) => return Next::Stop(s),
    }
    if m.space.stale.take() {
        m.tr.flush(); // a syscall wrote over translated code
    }
    Next::Run
}

/// A signal hit translated code: self-modifying code, or the guest's fault.
fn on_fault(m: &mut Machine) -> Next {
    let ctx = &mut *m.ctx;
    if ctx.fault_sig as u32 == libc::SIGSEGV as u32
        && m.space.unprotect_code(ctx.fault_addr, ctx.fault_addr + 1)
    {
        // self-modifying code: the guest wrote to a page it executes. Forget every
        // translation and run the writing instruction again, now unprotected.
        return match m.tr.host_to_guest.get(&ctx.fault_host_rip) {
            Some(g) => {
                ctx.next = *g;
                m.tr.flush();
                m.tr.single = true;
                Next::Run
            }
            None => Next::Stop(crash(
                libc::SIGSEGV,
                "bt: a write to translated code from an instruction that cannot be restarted"
                    .into(),
            )),
        };
    }
    let host = ctx.fault_host_rip;
    let f = guest_fault(ctx, m.tr);
    // a precise fault (at the start of a translated instruction) may be handled
    if m.tr.host_to_guest.get(&host) == Some(&f.rip)
        && deliver(ctx, m.space, m.vcpu, &mut m.abi.signals, &f)
    {
        m.tr.counts.add(Counter::SignalsDelivered, 1);
        return Next::Resume;
    }
    Next::Stop(crash(f.signal, f.message))
}

/// The guest's view of the signal the host handler recorded in `ctx`.
fn guest_fault(ctx: &Ctx, tr: &Translator) -> GuestFault {
    let host = ctx.fault_host_rip;
    let sig = ctx.fault_sig as u32 as i32;
    let code = (ctx.fault_sig >> 32) as u32 as i32;
    let grip = tr.guest_rip_of(host).unwrap_or(0);
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTRAP => "SIGTRAP",
        _ => "signal",
    };
    let mut message = format!("guest crashed: {name} at guest rip {grip:#x}");
    if matches!(sig, libc::SIGSEGV | libc::SIGBUS) {
        message.push_str(&format!(", address {:#x}", ctx.fault_addr));
    }
    if std::env::var_os("VBENCH_BT_DEBUG").is_some() {
        message.push_str(&format!(" (host rip {host:#x}) registers {:x?}", ctx.gpr));
    }
    GuestFault {
        signal: sig,
        code,
        rip: grip,
        addr: ctx.fault_addr,
        message,
        info: None,
    }
}

/// The guest's trap flag was set for the instruction at `pc`: its SIGTRAP.
fn trap_after_step(m: &mut Machine, pc: u64) -> Result<(), Stop> {
    let f = GuestFault {
        signal: libc::SIGTRAP,
        code: 2, // TRAP_TRACE
        rip: m.ctx.next,
        addr: 0,
        message: format!(
            "guest crashed: SIGTRAP (trap flag) after the instruction at guest rip {pc:#x}"
        ),
        info: None,
    };
    if !deliver(m.ctx, m.space, m.vcpu, &mut m.abi.signals, &f) {
        return Err(crash(f.signal, f.message));
    }
    m.tr.counts.add(Counter::SignalsDelivered, 1);
    Ok(())
}
