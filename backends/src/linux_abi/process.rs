//! The guest process's own calls: identity, limits, scheduling, signals it sends itself,
//! clocks and sleeps, system information, exit.

use super::errno::host;
use super::{buf_out, get, opt_out, put, Abi, Action, Errno, GuestMem, Policy, ThreadSpec};
use std::time::Duration;

type A = [u64; 6];
type Sys = Result<i64, Errno>;

impl Abi {
    /// Whether `pid` (of kill, tgkill, prlimit...) names the guest itself (or its group).
    fn is_self(&self, pid: u64) -> bool {
        let pid = pid as i32 as i64;
        pid == 0 || pid == self.pid || pid == -self.pid
    }
}

pub(super) fn getpid(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    Ok(abi.pid)
}

/// The parent of the machine's first process is "nobody" (0), as init's is.
pub(super) fn getppid(_: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    Ok(0)
}

/// get[e]uid, get[e]gid: the host's under the host policy, root of its own machine confined.
pub(super) fn getuid(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    // SAFETY: getuid has no preconditions.
    Ok(host_or_root(abi, || unsafe { libc::getuid() }))
}
pub(super) fn geteuid(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    // SAFETY: geteuid has no preconditions.
    Ok(host_or_root(abi, || unsafe { libc::geteuid() }))
}
pub(super) fn getgid(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    // SAFETY: getgid has no preconditions.
    Ok(host_or_root(abi, || unsafe { libc::getgid() }))
}
pub(super) fn getegid(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    // SAFETY: getegid has no preconditions.
    Ok(host_or_root(abi, || unsafe { libc::getegid() }))
}

fn host_or_root(abi: &Abi, f: impl Fn() -> u32) -> i64 {
    match abi.policy {
        Policy::Host => i64::from(f()),
        Policy::Confined => 0,
    }
}

/// getresuid/getresgid(r, e, s): three ids written.
pub(super) fn getresuid(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let id = getuid(abi, mem, a)? as u32;
    for p in &a[..3] {
        put(mem, *p, &id)?;
    }
    Ok(0)
}
pub(super) fn getresgid(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let id = getgid(abi, mem, a)? as u32;
    for p in &a[..3] {
        put(mem, *p, &id)?;
    }
    Ok(0)
}

/// getgroups(size, list): the host's supplementary groups (none, confined).
pub(super) fn getgroups(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if abi.policy == Policy::Confined {
        return Ok(0);
    }
    let size = a[0] as i32;
    if size < 0 {
        return Err(Errno::EINVAL);
    }
    let p = opt_out(mem, a[1], size as u64 * 4)?;
    // SAFETY: `p` has room for `size` gids (checked guest memory), or size is 0.
    host(i64::from(unsafe { libc::getgroups(size, p.cast()) }))
}

/// getpgrp, getpgid(self), getsid(self): the guest leads its own group and session.
pub(super) fn getpgid(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    if abi.is_self(a[0]) {
        Ok(abi.pid)
    } else {
        Err(Errno::ESRCH)
    }
}
pub(super) fn getpgrp(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    Ok(abi.pid)
}
/// setpgid(self, self or 0) and setsid: the guest already leads its group and session.
pub(super) fn setpgid(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    if abi.is_self(a[0]) && (a[1] == 0 || abi.is_self(a[1])) {
        Ok(0)
    } else {
        Err(Errno::ESRCH)
    }
}
pub(super) fn setsid(_: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    Err(Errno::EPERM) // already a process-group leader
}

/// wait4 and waitid: the guest has no children (yet).
pub(super) fn wait(_: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    Err(Errno::ECHILD)
}

pub(super) fn exit(_: &mut Abi, _: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    Ok(Action::Exit(a[0] as i32))
}

/// exit of a guest that is a host process of its own: the calling thread's (exit_group ends
/// them all).
pub(super) fn host_exit(_: &mut Abi, _: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    Ok(Action::ExitThread(a[0] as i32))
}

/// gettid: the host thread's id (each guest thread is one).
pub(super) fn host_gettid(_: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    // SAFETY: gettid has no preconditions.
    Ok(i64::from(unsafe { libc::gettid() }))
}

/// set_tid_address(word): the word the thread's exit clears and wakes; its id.
pub(super) fn host_set_tid_address(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    abi.clear_tid = a[0];
    host_gettid(abi, mem, a)
}

/// set_robust_list(head, len): the host's, for the thread's host thread, so that the kernel
/// releases the guest's robust mutexes when the thread dies, as natively.
pub(super) fn host_set_robust_list(_: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    // SAFETY: the kernel only records the pointer (it reads the list, fault-safe, at the
    // thread's exit).
    host(unsafe { libc::syscall(libc::SYS_set_robust_list, a[0], a[1]) })
}

/// sched_yield: the host's, and, with other guest threads, a chance for them to run.
pub(super) fn host_sched_yield(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    abi.host_call(libc::SYS_sched_yield, [0; 6])
}

/// FUTEX_LOCK_PI2 (Linux 5.14; not in libc).
const FUTEX_LOCK_PI2: i32 = 13;

/// futex of a guest that is a host process of its own: the host's, on the guest's words
/// (shared with its other threads, and with other processes through shared mappings). The
/// waits are deferred when the guest has other threads.
pub(super) fn host_futex(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let cmd = a[1] as i32 & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);
    mem.host_range(a[0], 4, false)?;
    // which commands take a timeout (a[3] a pointer) and which a second word (a[4])
    let (timeout, second) = match cmd {
        libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET | libc::FUTEX_LOCK_PI | FUTEX_LOCK_PI2 => {
            (true, false)
        }
        libc::FUTEX_WAIT_REQUEUE_PI => (true, true),
        libc::FUTEX_REQUEUE
        | libc::FUTEX_CMP_REQUEUE
        | libc::FUTEX_WAKE_OP
        | libc::FUTEX_CMP_REQUEUE_PI => (false, true),
        libc::FUTEX_WAKE
        | libc::FUTEX_WAKE_BITSET
        | libc::FUTEX_UNLOCK_PI
        | libc::FUTEX_TRYLOCK_PI => (false, false),
        _ => return Err(Errno::ENOSYS),
    };
    if timeout && a[3] != 0 {
        mem.host_range(a[3], 16, false)?;
    }
    if second {
        mem.host_range(a[4], 4, false)?;
    }
    if timeout {
        abi.host_call(libc::SYS_futex, a)
    } else {
        // SAFETY: the words (and any timeout) are checked guest memory.
        host(unsafe { libc::syscall(libc::SYS_futex, a[0], a[1], a[2], a[3], a[4], a[5]) })
    }
}

/// set_tid_address: the thread's id.
pub(super) fn set_tid_address(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    Ok(abi.pid)
}

/// Calls with nothing to do for a single-threaded guest: set_robust_list, sched_yield,
/// mlock and friends.
pub(super) fn nothing(_: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    Ok(0)
}

/// rseq: refused, as on kernels without it; libc then works without it.
pub(super) fn enosys(_: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    Err(Errno::ENOSYS)
}

/// arch_prctl's ARCH_SET_FS (asm/prctl.h; not in libc).
const ARCH_SET_FS: i32 = 0x1002;

/// arch_prctl: ARCH_SET_FS only (the FS base is the backend's to set).
pub(super) fn arch_prctl(_: &mut Abi, _: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    match a[0] as i32 {
        ARCH_SET_FS => Ok(Action::SetFs(a[1])),
        _ => Err(Errno::EINVAL),
    }
}

/// prctl: the thread's name, dumpability and parent-death signal.
pub(super) fn prctl(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    match a[0] as i32 {
        libc::PR_SET_NAME => {
            let name = Abi::cstring(mem, a[1])?;
            abi.misc.name = name.into_iter().take(15).collect();
            Ok(0)
        }
        libc::PR_GET_NAME => {
            let mut b = [0u8; 16];
            b[..abi.misc.name.len()].copy_from_slice(&abi.misc.name);
            mem.write(a[1], &b)?;
            Ok(0)
        }
        libc::PR_GET_DUMPABLE => Ok(1),
        libc::PR_SET_DUMPABLE | libc::PR_SET_PDEATHSIG | libc::PR_SET_NO_NEW_PRIVS => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

/// uname: the host's under the host policy; a fixed machine, confined.
pub(super) fn uname(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if abi.policy == Policy::Host {
        let p = buf_out(mem, a[0], std::mem::size_of::<libc::utsname>() as u64)?;
        // SAFETY: `p` points to a checked, writable utsname-sized guest buffer.
        return host(i64::from(unsafe { libc::uname(p.cast()) }));
    }
    let mut u = [0u8; 65 * 6];
    for (i, f) in [
        "Linux",
        "vbench-vm",
        "6.1.0-vbench",
        "#1 vbench micro-VM",
        "x86_64",
        "",
    ]
    .iter()
    .enumerate()
    {
        u[i * 65..i * 65 + f.len()].copy_from_slice(f.as_bytes());
    }
    mem.write(a[0], &u)?;
    Ok(0)
}

/// sysinfo: the host's (uptime, memory, load).
pub(super) fn sysinfo(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let p = buf_out(mem, a[0], std::mem::size_of::<libc::sysinfo>() as u64)?;
    // SAFETY: `p` points to a checked, writable sysinfo-sized guest buffer.
    host(i64::from(unsafe { libc::sysinfo(p.cast()) }))
}

/// getrusage: the guest's thread (RUSAGE_SELF and RUSAGE_THREAD: the guest runs on the
/// calling host thread); RUSAGE_CHILDREN is empty.
pub(super) fn getrusage(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let size = std::mem::size_of::<libc::rusage>() as u64;
    let p = buf_out(mem, a[1], size)?;
    match a[0] as i32 {
        libc::RUSAGE_SELF | libc::RUSAGE_THREAD => {
            // SAFETY: `p` points to a checked, writable rusage-sized guest buffer.
            host(i64::from(unsafe {
                libc::getrusage(libc::RUSAGE_THREAD, p.cast())
            }))
        }
        libc::RUSAGE_CHILDREN => {
            // zero bytes are an empty rusage
            mem.write(a[1], &[0u8; std::mem::size_of::<libc::rusage>()])?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// times(buf): the guest thread's CPU time in clock ticks; returns ticks since boot.
pub(super) fn times(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    // SAFETY: a zeroed rusage is a valid out-buffer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as i64;
    let ticks = |t: libc::timeval| t.tv_sec * hz + t.tv_usec * hz / 1_000_000;
    if a[0] != 0 {
        put(
            mem,
            a[0],
            &[ticks(ru.ru_utime), ticks(ru.ru_stime), 0i64, 0i64],
        )?;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Ok(ts.tv_sec * hz + ts.tv_nsec * hz / 1_000_000_000)
}

/// Limits are the guest's own: they start as the host's and setrlimit changes the guest's
/// copy (a guest lowering RLIMIT_NOFILE must not limit the harness).
pub(super) fn prlimit64(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if !abi.is_self(a[0]) {
        return Err(Errno::ESRCH);
    }
    limit(abi, mem, a[1], a[2], a[3])
}
pub(super) fn getrlimit(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    limit(abi, mem, a[0], 0, a[1])
}
pub(super) fn setrlimit(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    limit(abi, mem, a[0], a[1], 0)
}

/// Resource limits Linux has (RLIMIT_AS .. RLIMIT_RTTIME).
const RLIMITS: usize = 16;

fn limit(abi: &mut Abi, mem: &dyn GuestMem, res: u64, new: u64, old: u64) -> Sys {
    let r = usize::try_from(res)
        .ok()
        .filter(|r| *r < RLIMITS)
        .ok_or(Errno::EINVAL)?;
    let cur = abi.misc.limit(r);
    if old != 0 {
        put(mem, old, &cur)?;
    }
    if new != 0 {
        let want: [u64; 2] = get(mem, new)?;
        if want[0] > want[1] {
            return Err(Errno::EINVAL);
        }
        // SAFETY: geteuid has no preconditions.
        if want[1] > cur[1] && unsafe { libc::geteuid() } != 0 {
            return Err(Errno::EPERM);
        }
        abi.misc.limits[r] = Some(want);
    }
    Ok(0)
}

/// sched_getaffinity(self): the CPUs the guest's thread may run on (one, when pinned).
pub(super) fn sched_getaffinity(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if !abi.is_self(a[0]) {
        return Err(Errno::ESRCH);
    }
    let p = buf_out(mem, a[2], a[1])?;
    // SAFETY: `p` holds a[1] checked, writable guest bytes; the raw call writes at most that.
    host(unsafe { libc::syscall(libc::SYS_sched_getaffinity, 0, a[1], p) })
}

/// sched_setaffinity(self): moves the guest's thread, as natively.
pub(super) fn sched_setaffinity(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if !abi.is_self(a[0]) {
        return Err(Errno::ESRCH);
    }
    let p = super::buf_in(mem, a[2], a[1])?;
    // SAFETY: `p` holds a[1] checked, readable guest bytes.
    host(unsafe { libc::syscall(libc::SYS_sched_setaffinity, 0, a[1], p) })
}

/// getcpu(cpu, node, cache): where the guest's thread runs now.
pub(super) fn getcpu(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let cpu = opt_out(mem, a[0], 4)?;
    let node = opt_out(mem, a[1], 4)?;
    // SAFETY: each pointer is null or a checked, writable 4-byte guest buffer.
    host(unsafe { libc::syscall(libc::SYS_getcpu, cpu, node, 0) })
}

/// getpriority(PRIO_PROCESS, self): the kernel's 40 - nice encoding.
pub(super) fn getpriority(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    if a[0] as i32 != libc::PRIO_PROCESS as i32 || !abi.is_self(a[1]) {
        return Err(Errno::ESRCH);
    }
    // SAFETY: the raw call takes no pointers.
    host(unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, 0) })
}

/// getrandom(buf, len, flags): the host's.
pub(super) fn getrandom(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let p = buf_out(mem, a[0], a[1])?;
    // SAFETY: `p` holds a[1] checked, writable guest bytes.
    host(unsafe { libc::syscall(libc::SYS_getrandom, p, a[1], a[2]) })
}

/// The guest's CPU-time clocks are its thread's (the harness shares the host process).
fn clock_id(clk: u64) -> Result<libc::clockid_t, Errno> {
    let c = clk as i32;
    match c {
        libc::CLOCK_PROCESS_CPUTIME_ID => Ok(libc::CLOCK_THREAD_CPUTIME_ID),
        0..=11 => Ok(c),
        _ => Err(Errno::EINVAL),
    }
}

/// clock_gettime: the host's clocks.
pub(super) fn clock_gettime(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let clk = clock_id(a[0])?;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; the clock id was range-checked.
    if unsafe { libc::clock_gettime(clk, &mut ts) } != 0 {
        return Err(Errno::last());
    }
    put(mem, a[1], &[ts.tv_sec, ts.tv_nsec])?;
    Ok(0)
}

/// clock_getres: the host's.
pub(super) fn clock_getres(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let clk = clock_id(a[0])?;
    let p = opt_out(mem, a[1], 16)?;
    // SAFETY: `p` is null or a checked, writable timespec. The system call, not glibc's
    // clock_getres, whose vDSO stores with plain writes: a SIGBUS where the guest's pointer is
    // a file page past its end, where the kernel's copy is EFAULT.
    host(unsafe { libc::syscall(libc::SYS_clock_getres, clk, p) })
}

/// The host's wall clock, as CLOCK_REALTIME.
fn realtime() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts
}

/// gettimeofday(tv, tz): the wall clock in seconds and microseconds; a non-null `tz` gets
/// UTC (minutes west 0, no DST), as the kernel's timezone is on most hosts.
pub(super) fn gettimeofday(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let ts = realtime();
    if a[0] != 0 {
        put(mem, a[0], &[ts.tv_sec, ts.tv_nsec / 1000])?;
    }
    if a[1] != 0 {
        put(mem, a[1], &0u64)?;
    }
    Ok(0)
}

/// time(tloc): the wall clock in seconds, also stored at a non-null `tloc`.
pub(super) fn time(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let now = realtime().tv_sec;
    if a[0] != 0 {
        put(mem, a[0], &now)?;
    }
    Ok(now)
}

/// nanosleep(req, rem): a real sleep. The watchdog's kick interrupts it (EINTR), so a timed
/// out or cancelled guest stops promptly.
pub(super) fn nanosleep(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let req = buf_in_ts(mem, a[0])?;
    let rem = opt_out(mem, a[1], 16)?;
    abi.host_call(libc::SYS_nanosleep, [req as u64, rem as u64, 0, 0, 0, 0])
}

/// clock_nanosleep(clock, flags, req, rem): a real sleep, relative or absolute.
pub(super) fn clock_nanosleep(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let clk = clock_id(a[0])?;
    let req = buf_in_ts(mem, a[2])?;
    let rem = opt_out(mem, a[3], 16)?;
    let args = [clk as u64, a[1] & 0xffff_ffff, req as u64, rem as u64, 0, 0];
    abi.host_call(libc::SYS_clock_nanosleep, args)
}

fn buf_in_ts(mem: &dyn GuestMem, addr: u64) -> Result<*const u8, Errno> {
    super::buf_in(mem, addr, 16)
}

/// rt_sigsuspend(mask, size) of a guest that is a host process of its own: the host's, with
/// the guest's mask, atomically; the mask it replaced comes back when the handler that ended
/// the wait returns ([`super::SignalState::saved_mask`]).
pub(super) fn host_sigsuspend(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if a[1] != 8 {
        return Err(Errno::EINVAL);
    }
    let new: u64 = get(mem, a[0])?;
    let set = super::host_sigset(new);
    abi.signals.saved_mask = Some(abi.signals.mask);
    abi.signals.mask = new & !super::UNBLOCKABLE;
    // SAFETY: sigset_t's first 8 bytes are the kernel's 64-signal set.
    let kernel_set: u64 = unsafe { std::ptr::read((&set as *const libc::sigset_t).cast()) };
    // returns when a handler has run: EINTR, always
    let args = [0, 8, 0, 0, 0, 0];
    abi.host_call_with(libc::SYS_rt_sigsuspend, args, [kernel_set, 0], Some(0))
}

/// pause: wait for a signal (EINTR).
pub(super) fn pause(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    abi.host_call(libc::SYS_pause, [0; 6])?;
    Err(Errno::EINTR)
}

/// rt_sigsuspend(mask, size) of a guest sharing the backend's process: the guest's mask
/// becomes `mask` until a signal's handler returns (the frame restores the old one). A
/// pending signal the new mask lets through is taken at once; else the VMM waits for a host
/// signal (the guest's timer, whose SIGALRM the backend then delivers, or the watchdog's kick).
pub(super) fn sigsuspend(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    if a[1] != 8 {
        return Err(Errno::EINVAL);
    }
    let new: u64 = get(mem, a[0])?;
    let old = abi.signals.mask;
    abi.signals.mask = new & !super::UNBLOCKABLE;
    abi.signals.saved_mask = Some(old);
    let ready = abi.signals.pending & !abi.signals.mask;
    if ready != 0 {
        let sig = ready.trailing_zeros() as i32 + 1;
        abi.signals.pending &= !(1u64 << (sig - 1));
        let act = abi.raise(sig, -i64::from(libc::EINTR));
        if !matches!(act, Action::Deliver(..)) {
            abi.signals.mask = old;
            abi.signals.saved_mask = None;
        }
        return Ok(act);
    }
    abi.host_call(libc::SYS_pause, [0; 6])?;
    Err(Errno::EINTR)
}

/// The guest's interval timer, made at its first use.
fn real_timer(abi: &mut Abi) -> Result<&super::timer::RealTimer, Errno> {
    if abi.timer.is_none() {
        abi.timer = Some(super::timer::RealTimer::new(abi.timer_kick)?);
    }
    Ok(abi.timer.as_ref().expect("made"))
}

fn timeval_of(d: Duration) -> [i64; 2] {
    [d.as_secs() as i64, i64::from(d.subsec_micros())]
}

fn duration_of(tv: [i64; 2]) -> Result<Duration, Errno> {
    if tv[0] < 0 || !(0..1_000_000).contains(&tv[1]) {
        return Err(Errno::EINVAL);
    }
    Ok(Duration::new(tv[0] as u64, tv[1] as u32 * 1000))
}

/// alarm(seconds): a guest that is a process of its own has the host's; one sharing the
/// backend's process, its ITIMER_REAL, one-shot. The seconds that were left (rounded as Linux
/// does).
pub(super) fn alarm(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if abi.own_process {
        return host_ints(abi, mem, libc::SYS_alarm, a); // its own process's timer
    }
    let secs = a[0] as u32;
    let (left, _) = real_timer(abi)?.set(Duration::from_secs(u64::from(secs)), Duration::ZERO);
    let mut s = left.as_secs();
    if left.subsec_micros() >= 500_000 || (s == 0 && !left.is_zero()) {
        s += 1;
    }
    Ok(s as i64)
}

/// setitimer(which, new, old) of a guest sharing the backend's process: ITIMER_REAL only (its
/// virtual and profiling timers count CPU time the VMM cannot tell apart: EINVAL).
pub(super) fn setitimer(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if abi.own_process {
        return host_setitimer(abi, mem, a);
    }
    if a[0] != libc::ITIMER_REAL as u64 {
        return Err(Errno::EINVAL);
    }
    let new: [i64; 4] = if a[1] != 0 { get(mem, a[1])? } else { [0; 4] };
    let (interval, value) = (
        duration_of([new[0], new[1]])?,
        duration_of([new[2], new[3]])?,
    );
    let (left, old_interval) = real_timer(abi)?.set(value, interval);
    if a[2] != 0 {
        let [i0, i1] = timeval_of(old_interval);
        let [v0, v1] = timeval_of(left);
        put(mem, a[2], &[i0, i1, v0, v1])?;
    }
    Ok(0)
}

/// getitimer(which, value) of a guest sharing the backend's process.
pub(super) fn getitimer(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if abi.own_process {
        return host_getitimer(abi, mem, a);
    }
    if a[0] != libc::ITIMER_REAL as u64 {
        return Err(Errno::EINVAL);
    }
    let (left, interval) = match &abi.timer {
        Some(t) => t.get(),
        None => (Duration::ZERO, Duration::ZERO),
    };
    let [i0, i1] = timeval_of(interval);
    let [v0, v1] = timeval_of(left);
    put(mem, a[1], &[i0, i1, v0, v1])?;
    Ok(0)
}

/// futex of a single-threaded guest: WAIT on a changed word is EAGAIN, WAIT on its value
/// sleeps for the timeout (or until the watchdog's kick), WAKE wakes nobody.
pub(super) fn futex(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let op = a[1] as i32 & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);
    match op {
        libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET => {
            let word: u32 = get(mem, a[0])?;
            if word != a[2] as u32 {
                return Err(Errno::EAGAIN);
            }
            if a[3] == 0 {
                // SAFETY: pause has no preconditions; the kick interrupts it.
                unsafe { libc::pause() };
                return Err(Errno::EINTR);
            }
            let ts: [i64; 2] = get(mem, a[3])?;
            let t = libc::timespec {
                tv_sec: ts[0],
                tv_nsec: ts[1],
            };
            let (clk, flags) = if op == libc::FUTEX_WAIT_BITSET {
                (libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME)
            } else {
                (libc::CLOCK_MONOTONIC, 0)
            };
            // SAFETY: a valid timespec; the remaining-time pointer may be null.
            match unsafe { libc::clock_nanosleep(clk, flags, &t, std::ptr::null_mut()) } {
                0 => Err(Errno(libc::ETIMEDOUT)),
                e => Err(Errno(e)),
            }
        }
        libc::FUTEX_WAKE | libc::FUTEX_WAKE_BITSET => Ok(0),
        _ => Err(Errno::ENOSYS),
    }
}

/// The default action of a signal: false = ignore, true = terminate (with or without core).
pub fn terminates(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGCONT
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    )
}

impl Abi {
    /// A signal raised at the guest itself (kill, tgkill, a write to a closed pipe, its timer):
    /// blocked (then pending) or ignored, delivered to its handler (the call returns `ret`
    /// first), or its default action.
    pub fn raise(&mut self, sig: i32, ret: i64) -> Action {
        let [handler, ..] = self.signals.actions[sig as usize];
        let bit = 1u64 << (sig - 1);
        if sig == libc::SIGKILL {
            return Action::Killed(sig);
        }
        if self.signals.mask & bit != 0 {
            // blocked: pending until the guest unblocks it (rt_sigprocmask delivers it then)
            self.signals.pending |= bit;
            return Action::Return(ret);
        }
        match handler {
            1 => Action::Return(ret), // SIG_IGN
            0 if terminates(sig) => Action::Killed(sig),
            0 => Action::Return(ret),
            _ if self.delivers_signals => Action::Deliver(sig, ret),
            _ => Action::Killed(sig),
        }
    }
}

fn signal(sig: u64) -> Result<i32, Errno> {
    match sig {
        0..=64 => Ok(sig as i32),
        _ => Err(Errno::EINVAL),
    }
}

/// kill(pid, sig): to the guest itself (its pid, 0 or its group), else ESRCH: the guest's
/// machine has no other process.
pub(super) fn kill(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    let sig = signal(a[1])?;
    if !abi.is_self(a[0]) && a[0] as i32 != -1 {
        return Err(Errno::ESRCH);
    }
    Ok(if sig == 0 {
        Action::Return(0)
    } else {
        abi.raise(sig, 0)
    })
}

/// tkill(tid, sig) and tgkill(tgid, tid, sig).
pub(super) fn tkill(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    kill(abi, mem, a)
}
pub(super) fn tgkill(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    if !abi.is_self(a[0]) {
        return Err(Errno::ESRCH);
    }
    kill(abi, mem, [a[1], a[2], 0, 0, 0, 0])
}

/// rt_sigaction(sig, act, oldact, sigsetsize): the guest's dispositions (the backend delivers).
pub(super) fn rt_sigaction(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let sig = a[0] as usize;
    if !(1..=64).contains(&sig) || a[3] != 8 {
        return Err(Errno::EINVAL);
    }
    let new: Option<[u64; 4]> = if a[1] != 0 {
        Some(get(mem, a[1])?)
    } else {
        None
    };
    if new.is_some() && (sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize) {
        return Err(Errno::EINVAL);
    }
    if a[2] != 0 {
        put(mem, a[2], &abi.signals.actions[sig])?;
    }
    if let Some(n) = new {
        abi.signals.actions[sig] = n;
    }
    Ok(0)
}

/// rt_sigprocmask(how, set, oldset, sigsetsize): the guest's blocked mask; a pending signal
/// it unblocks is delivered (or acted on) as the call returns.
pub(super) fn rt_sigprocmask(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    if a[3] != 8 {
        return Err(Errno::EINVAL);
    }
    let set: Option<u64> = if a[1] != 0 {
        Some(get(mem, a[1])?)
    } else {
        None
    };
    if a[2] != 0 {
        put(mem, a[2], &abi.signals.mask)?;
    }
    if let Some(s) = set {
        abi.signals.mask = match a[0] as i32 {
            libc::SIG_BLOCK => abi.signals.mask | s,
            libc::SIG_UNBLOCK => abi.signals.mask & !s,
            libc::SIG_SETMASK => s,
            _ => return Err(Errno::EINVAL),
        } & !super::UNBLOCKABLE;
    }
    let ready = abi.signals.pending & !abi.signals.mask;
    if ready != 0 {
        let sig = ready.trailing_zeros() as i32 + 1;
        abi.signals.pending &= !(1u64 << (sig - 1));
        return Ok(abi.raise(sig, 0));
    }
    Ok(Action::Return(0))
}

/// rt_sigpending: the blocked signals sent to the guest.
pub(super) fn rt_sigpending(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    put(mem, a[0], &abi.signals.pending)?;
    Ok(0)
}

/// sigaltstack(new, old): the guest's alternate signal stack.
pub(super) fn sigaltstack(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let new: Option<[u64; 3]> = if a[0] != 0 {
        Some(get(mem, a[0])?)
    } else {
        None
    };
    if a[1] != 0 {
        put(mem, a[1], &abi.signals.altstack)?;
    }
    if let Some(n) = new {
        abi.signals.altstack = n;
    }
    Ok(0)
}

/// rt_sigreturn: the backend's, when it delivered the signal.
pub(super) fn rt_sigreturn(abi: &mut Abi, _: &dyn GuestMem, _: A) -> Result<Action, Errno> {
    Ok(if abi.delivers_signals {
        Action::SigReturn
    } else {
        Action::Killed(libc::SIGSEGV)
    })
}

/// umask: the guest's, applied to the host process while the guest runs (restored when the
/// guest's state is dropped).
pub(super) fn umask(abi: &mut Abi, _: &dyn GuestMem, a: A) -> Sys {
    // SAFETY: umask has no preconditions.
    let old = unsafe { libc::umask((a[0] & 0o777) as libc::mode_t) };
    abi.misc.harness_umask.get_or_insert(old);
    Ok(i64::from(old))
}

/// The rest of a guest process's state: its name, its resource limits, the harness's umask
/// to restore.
#[derive(Debug, Default)]
pub(super) struct Misc {
    pub(super) name: Vec<u8>,
    /// setrlimit's values; None: the host's.
    pub(super) limits: [Option<[u64; 2]>; RLIMITS],
    pub(super) harness_umask: Option<libc::mode_t>,
}

impl Misc {
    /// The guest's limit `r`: its own, or the host process's.
    pub(super) fn limit(&self, r: usize) -> [u64; 2] {
        if let Some(l) = self.limits[r] {
            return l;
        }
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid out-pointer; `r` is below RLIM_NLIMITS.
        unsafe { libc::getrlimit(r as _, &mut l) };
        [l.rlim_cur, l.rlim_max]
    }
}

impl Drop for Misc {
    fn drop(&mut self) {
        if let Some(m) = self.harness_umask {
            // SAFETY: umask has no preconditions.
            unsafe { libc::umask(m) };
        }
    }
}

// ---- the process model of a guest that is a host process of its own (bt's translator)

/// getppid: the host's (the translator's parent is the guest's parent).
pub(super) fn host_getppid(_: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    // SAFETY: getppid has no preconditions.
    Ok(i64::from(unsafe { libc::getppid() }))
}

/// fork and vfork: the translator process forks, code cache and all. vfork is a fork (as in
/// QEMU): the parent is not suspended and the child does not share its memory, which a
/// program using vfork as POSIX allows (exec or _exit at once) cannot tell apart.
pub(super) fn fork(abi: &mut Abi, mem: &dyn GuestMem, _: A) -> Result<Action, Errno> {
    abi.fork_process(mem, 0, [0; 3], None)
}

/// clone(flags, stack, parent_tid, child_tid, tls): a new process (a fork, with clone's stack,
/// TLS and tid words honoured) or a new thread ([`Action::Thread`]).
pub(super) fn clone(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    let c = CloneArgs {
        flags: a[0],
        stack: a[1],
        parent_tid: a[2],
        child_tid: a[3],
        tls: a[4],
    };
    c.start(abi, mem, libc::SYS_clone as u64)
}

/// clone3(args, size): clone with its arguments in a struct. What it adds to clone (pidfds, a
/// chosen tid, a cgroup) is refused with ENOSYS, so that libc falls back to clone.
pub(super) fn clone3(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
    const VER0: u64 = 64; // CLONE_ARGS_SIZE_VER0
    if a[1] < VER0 || a[1] > 4096 {
        return Err(Errno::EINVAL);
    }
    let w: [u64; 8] = get(mem, a[0])?;
    let [flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls] = w;
    // set_tid and cgroup (version 1 and 2 of the struct) must be unused
    if a[1] > VER0 {
        let mut rest = vec![0u8; (a[1] - VER0) as usize];
        mem.read(a[0] + VER0, &mut rest)?;
        if rest.iter().any(|b| *b != 0) {
            return Ok(abi.refuse(libc::SYS_clone3 as u64));
        }
    }
    // (the pidfd word means something only with CLONE_PIDFD: glibc fills it in always)
    let _ = pidfd;
    if flags & (libc::CLONE_PIDFD as u64) != 0 || exit_signal > 64 {
        return Ok(abi.refuse(libc::SYS_clone3 as u64));
    }
    if flags & 0xff != 0 {
        return Err(Errno::EINVAL); // the exit signal has a field of its own
    }
    let c = CloneArgs {
        flags: flags | exit_signal,
        // clone3's stack is the lowest address of the area, clone's its top
        stack: if stack == 0 { 0 } else { stack + stack_size },
        parent_tid,
        child_tid,
        tls,
    };
    c.start(abi, mem, libc::SYS_clone3 as u64)
}

/// clone's arguments.
struct CloneArgs {
    flags: u64,
    stack: u64,
    parent_tid: u64,
    child_tid: u64,
    tls: u64,
}

impl CloneArgs {
    fn start(&self, abi: &mut Abi, mem: &dyn GuestMem, nr: u64) -> Result<Action, Errno> {
        let flags = self.flags as i32;
        let has = |f: i32| flags & f != 0;
        let namespaces = libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWCGROUP;
        // as the kernel checks them: a thread shares the handlers, which share the memory
        if (has(libc::CLONE_THREAD) && !has(libc::CLONE_SIGHAND))
            || (has(libc::CLONE_SIGHAND) && !has(libc::CLONE_VM))
        {
            return Err(Errno::EINVAL);
        }
        if has(namespaces) && (has(libc::CLONE_THREAD) || has(libc::CLONE_VM)) {
            return Err(Errno::EINVAL);
        }
        if has(namespaces) {
            return Ok(abi.refuse(nr)); // new namespaces: the container's business
        }
        let tls = has(libc::CLONE_SETTLS).then_some(self.tls);
        let word = |f: i32, p: u64| if has(f) { p } else { 0 };
        if has(libc::CLONE_THREAD) {
            for p in [self.parent_tid, self.child_tid] {
                if p != 0 {
                    mem.host_range(p, 4, true)?;
                }
            }
            return Ok(Action::Thread(ThreadSpec {
                flags: self.flags,
                stack: self.stack,
                parent_tid: word(libc::CLONE_PARENT_SETTID, self.parent_tid),
                child_tid: word(libc::CLONE_CHILD_SETTID, self.child_tid),
                clear_tid: word(libc::CLONE_CHILD_CLEARTID, self.child_tid),
                tls,
            }));
        }
        if (has(libc::CLONE_VM) && !has(libc::CLONE_VFORK)) || has(libc::CLONE_SIGHAND) {
            // a process sharing its parent's memory or handlers: not a thread, not a fork
            return Ok(abi.refuse(nr));
        }
        if flags & 0xff != libc::SIGCHLD && flags & 0xff != 0 {
            return Err(Errno::EINVAL);
        }
        let tids = [
            word(libc::CLONE_PARENT_SETTID, self.parent_tid),
            word(libc::CLONE_CHILD_SETTID, self.child_tid),
            0,
        ];
        abi.fork_process(mem, self.stack, tids, tls)
    }
}

impl Abi {
    /// Forks the guest's process: the parent gets the child's pid, the child
    /// [`Action::Child`]. `tids`: where the child's id is written (parent's memory, child's).
    fn fork_process(
        &mut self,
        mem: &dyn GuestMem,
        stack: u64,
        tids: [u64; 3],
        tls: Option<u64>,
    ) -> Result<Action, Errno> {
        for &p in &tids[..2] {
            if p != 0 {
                mem.host_range(p, 4, true)?;
            }
        }
        // SAFETY: the translator process has one thread; the child continues in this call
        // with a copy of everything.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Errno::last());
        }
        let child = if pid == 0 {
            // SAFETY: getpid has no preconditions.
            unsafe { libc::getpid() }
        } else {
            pid
        };
        for &p in &tids[..2] {
            if p != 0 {
                put(mem, p, &(child as u32))?;
            }
        }
        if pid > 0 {
            return Ok(Action::Return(i64::from(pid)));
        }
        self.pid = i64::from(child);
        // the child's notes at its exit are its own
        self.unsupported.clear();
        Ok(Action::Child { stack, tls })
    }
}

/// wait4(pid, status, options, rusage): the host's, into the guest's memory.
pub(super) fn wait4(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let status = opt_out(mem, a[1], 4)?;
    let ru = opt_out(mem, a[3], std::mem::size_of::<libc::rusage>() as u64)?;
    let args = [a[0], status as u64, a[2], ru as u64, 0, 0];
    abi.host_call(libc::SYS_wait4, args)
}

/// waitid(idtype, id, infop, options, rusage): the host's, into the guest's memory.
pub(super) fn waitid(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let info = opt_out(mem, a[2], std::mem::size_of::<libc::siginfo_t>() as u64)?;
    let ru = opt_out(mem, a[4], std::mem::size_of::<libc::rusage>() as u64)?;
    // the raw call: its fifth argument, rusage, is not in libc's waitid
    abi.host_call(
        libc::SYS_waitid,
        [a[0], a[1], info as u64, a[3], ru as u64, 0],
    )
}

/// kill(pid, sig), tkill(tid, sig) and tgkill(tgid, tid, sig): the host's, to the guest itself
/// too: its process's dispositions and mask are the guest's (the backend mirrors them), so the
/// signal is blocked, ignored, delivered to its handler or acted on by the kernel as natively.
pub(super) fn host_signal(_: &mut Abi, _: &dyn GuestMem, nr: i64, a: A) -> Sys {
    signal(if nr == libc::SYS_tgkill { a[2] } else { a[1] })?;
    // SAFETY: these calls take integers only.
    host(unsafe { libc::syscall(nr, a[0], a[1], a[2]) })
}

/// Calls of the host that take integers only, passed as they are: alarm (its SIGALRM comes to
/// the guest as any asynchronous signal), and getpgrp, getpgid, getsid, setpgid and setsid (the
/// host's process groups and sessions).
pub(super) fn host_ints(_: &mut Abi, _: &dyn GuestMem, nr: i64, a: A) -> Sys {
    // SAFETY: a call that takes integers only (extra arguments are ignored).
    host(unsafe { libc::syscall(nr, a[0], a[1]) })
}

/// setitimer(which, new, old): the host's interval timers.
pub(super) fn host_setitimer(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let new = super::buf_in(mem, a[1], 32)?;
    let old = opt_out(mem, a[2], 32)?;
    // SAFETY: checked guest itimervals (32 bytes), the old one possibly null.
    host(unsafe { libc::syscall(libc::SYS_setitimer, a[0], new, old) })
}

/// getitimer(which, value).
pub(super) fn host_getitimer(_: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    let out = buf_out(mem, a[1], 32)?;
    // SAFETY: a checked, writable guest itimerval.
    host(unsafe { libc::syscall(libc::SYS_getitimer, a[0], out) })
}

/// getxattr and listxattr (path, link and descriptor forms): no extended attributes, as on a
/// file system without them (ENOTSUP; `ls -l` then shows no ACL mark).
pub(super) fn no_xattrs(_: &mut Abi, _: &dyn GuestMem, _: A) -> Sys {
    Err(Errno(libc::EOPNOTSUPP))
}

/// rt_sigpending(set, size) of a guest that is a host process of its own: the blocked signals
/// pending in the host kernel (the process's mask is the guest's), with those sent through the
/// emulated path.
pub(super) fn host_sigpending(abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Sys {
    if a[1] != 8 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: a zeroed sigset_t is a valid out-parameter; sigismember reads it.
    let pending = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        (1..=64).fold(0u64, |m, sig| {
            if libc::sigismember(&set, sig) == 1 {
                m | 1u64 << (sig - 1)
            } else {
                m
            }
        })
    };
    put(mem, a[0], &(pending | abi.signals.pending))?;
    Ok(0)
}
