//! The Linux system-call layer shared by the `kvm` and `bt` backends: the part of a kernel that
//! services a trapped or forwarded syscall of a guest program.
//!
//! It is data in the gVisor model: [`table`] holds one entry per system call (its number from
//! `libc::SYS_*`, its name, what each [`Policy`] does with it, its handler), and [`Abi::syscall`]
//! looks the number up and runs the handler. Handlers check every guest pointer and length
//! against guest memory (through [`GuestMem`]: a bad pointer is EFAULT, never a harness fault),
//! translate the guest's descriptors ([`fd`]) and paths, and then either make the host call or
//! answer themselves. Calls no entry supports get ENOSYS and are counted by number, so the end
//! of a run names every one ([`Abi::unsupported`]).
//!
//! Two policies:
//! - [`Policy::Host`]: the program's calls act on the host as they would natively (any path,
//!   its current directory, writes, pipes, sockets, clocks and sleeps, its environment);
//! - [`Policy::Confined`]: read-only access to the files named on the command line, nothing
//!   else (vbench's own workloads, and the isolation probes' second row).
//!
//! Files: [`table`] (the entries), [`fd`] (descriptors), `fs` (paths, files, directories), `io`
//! (reads, writes, pipes, polling, terminal and socket calls), `mem` (brk, mmap and friends),
//! `process` (identity, limits, signals, clocks, sleeps, exit).

mod errno;
mod exec;
pub mod fd;
mod fs;
mod io;
mod mem;
mod process;
pub mod sigframe;
pub mod table;
pub mod timer;

pub use errno::Errno;
pub use exec::{aux_ids, shebang, ExecRequest};
pub use process::terminates;
pub use table::{Entry, Level};

use fd::{Fd, FdTable};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// A guest address range that is not (wholly) guest memory: the syscall gets EFAULT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutsideGuest;

impl From<OutsideGuest> for Errno {
    fn from(_: OutsideGuest) -> Errno {
        Errno::EFAULT
    }
}

/// Guest memory as the syscall layer sees it. Guest memory of both backends is a host mapping
/// (bt: at the guest's own addresses; kvm: the VM's RAM), so a checked guest range has a host
/// address that host calls may use directly, and whose pages the layer may replace with
/// `mmap(MAP_FIXED)` (anonymous and file mappings).
pub trait GuestMem {
    /// The host address of guest bytes [addr, addr+len), when all of them are guest memory the
    /// guest may read (and, with `write`, write). A write range that holds translated code is
    /// made writable and the translation marked stale.
    fn host_range(&self, addr: u64, len: u64, write: bool) -> Result<*mut u8, OutsideGuest>;

    /// The host address of guest bytes [addr, addr+len) when all of them are the guest's
    /// memory, whatever the guest's protection of them (the mapping calls replace or change
    /// these pages).
    fn host_addr(&self, addr: u64, len: u64) -> Result<*mut u8, OutsideGuest>;

    /// The host pages of [addr, addr+len) were replaced or changed behind the guest's back
    /// (a mapping, an unmapping, MADV_DONTNEED): translations made from them are stale.
    fn changed(&self, addr: u64, len: u64) {
        let _ = (addr, len);
    }

    /// The guest's protection of the whole pages [addr, addr+len) is now `prot` (PROT_NONE when
    /// they were unmapped): the backend records it and returns the protection the host pages
    /// must have (bt enforces the guest's own; kvm keeps its RAM read-write, as a VM's guest
    /// physical memory is whatever the guest's page tables make of it).
    fn protect(&self, addr: u64, len: u64, prot: i32) -> i32 {
        let _ = (addr, len, prot);
        libc::PROT_READ | libc::PROT_WRITE
    }

    /// Whether replacing the host pages of guest memory (mmap(MAP_FIXED) over them) is cheap.
    /// It is for bt's host mappings; for a VM's RAM it makes KVM drop its mappings of them,
    /// which under nested paging costs hundreds of microseconds: the layer then zeroes reused
    /// anonymous pages instead of replacing them.
    fn cheap_remap(&self) -> bool {
        true
    }

    /// Copies guest memory at `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutsideGuest> {
        let p = self.host_range(addr, buf.len() as u64, false)?;
        // SAFETY: host_range checked that the range is readable guest memory, mapped.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` to guest memory at `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), OutsideGuest> {
        let p = self.host_range(addr, data.len() as u64, true)?;
        // SAFETY: host_range checked that the range is writable guest memory, mapped.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// Makes `len` bytes at `addr` read as zero, as fresh memory does (brk).
    fn zero(&self, addr: u64, len: u64) -> Result<(), OutsideGuest> {
        let p = self.host_range(addr, len, true)?;
        // SAFETY: host_range checked that the range is writable guest memory, mapped.
        unsafe { std::ptr::write_bytes(p, 0, len as usize) };
        Ok(())
    }
}

/// What the system calls of a guest may do on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// As natively: the host's files, directories, pipes, sockets, clocks, environment.
    Host,
    /// Only the files named on the command line, read-only; nothing else of the host.
    #[default]
    Confined,
}

impl Policy {
    /// Both, in the order `list --syscalls` and `isolate` show them.
    pub const ALL: [Policy; 2] = [Policy::Host, Policy::Confined];

    /// The name on the command line (`--abi`).
    pub fn name(self) -> &'static str {
        match self {
            Policy::Host => "host",
            Policy::Confined => "confined",
        }
    }

    /// The policy named `s`.
    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// What the guest's "kernel" must do after a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Return this value in rax (negative errno on failure).
    Return(i64),
    /// The program exited with this status.
    Exit(i32),
    /// Set the FS base register, then return 0 (arch_prctl(ARCH_SET_FS)).
    SetFs(u64),
    /// The program is killed by this signal (a signal's default action, e.g. abort()'s
    /// SIGABRT or a write to a closed pipe's SIGPIPE).
    Killed(i32),
    /// Deliver this signal to the guest's handler; the call itself returns the value first.
    Deliver(i32, i64),
    /// rt_sigreturn: the backend restores the registers from the signal frame.
    SigReturn,
    /// execve: the backend replaces the guest's program with [`Abi::take_exec`]'s, or
    /// returns the errno it cannot load it with.
    Exec,
    /// The guest's process forked (fork, vfork, clone of a process) and this is the child: the
    /// call returns 0, on `stack` when it is not 0, with FS base `tls` when given.
    Child {
        /// The child's stack pointer (clone's second argument), 0 to keep the parent's.
        stack: u64,
        /// CLONE_SETTLS's FS base.
        tls: Option<u64>,
    },
    /// clone (or clone3) of a thread: the backend starts one; the call returns its id.
    Thread(ThreadSpec),
    /// exit of one thread (not exit_group): the process ends only with its last thread.
    ExitThread(i32),
    /// A call that may block, which the backend makes itself ([`Abi::take_deferred`]) without
    /// holding what the guest's other threads need.
    Block,
}

/// A new thread, as clone asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSpec {
    /// clone's flags.
    pub flags: u64,
    /// Its stack pointer (0: the parent's).
    pub stack: u64,
    /// CLONE_PARENT_SETTID's word (0: none).
    pub parent_tid: u64,
    /// CLONE_CHILD_SETTID's word (0: none).
    pub child_tid: u64,
    /// CLONE_CHILD_CLEARTID's word: zeroed and woken at the thread's exit (0: none).
    pub clear_tid: u64,
    /// CLONE_SETTLS's FS base.
    pub tls: Option<u64>,
}

/// What a deferred call's handler does with its result, back in the guest's state: the
/// guest's value (a new descriptor installed, results copied back into guest memory).
pub type Post = Box<dyn FnOnce(&mut Abi, &dyn GuestMem, i64) -> Result<i64, Errno> + Send>;

/// A host call a handler checked and prepared, to be made by the backend with no lock held
/// (a guest thread waiting in it must not stop the others): its number and arguments, all of
/// them already host values. Host buffers its pointers point into are owned by `post` (heap
/// buffers, which moving does not move).
pub struct Deferred {
    /// The host system call.
    pub nr: i64,
    /// Its arguments.
    pub args: [u64; 6],
    /// Room for a value the call reads (an argument may point here: a Box keeps it in place).
    pub scratch: [u64; 2],
    /// What becomes of the result ([`Abi::complete`]).
    post: Option<Post>,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Deferred({}, {:x?})", self.nr, self.args)
    }
}

impl Deferred {
    /// Makes the call: its result, or -errno.
    pub fn call(&self) -> i64 {
        let a = self.args;
        // SAFETY: the handler that prepared the call checked every pointer among its
        // arguments, as for a call of its own; `scratch` lives with `self`.
        let rc = unsafe { libc::syscall(self.nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        match errno::host(rc) {
            Ok(v) => v,
            Err(e) => e.ret(),
        }
    }
}

/// What of the ABI's state is a thread's own: its signal mask, the mask rt_sigsuspend replaced,
/// its alternate signal stack, and the word its exit clears (set_tid_address). The backend
/// swaps it in when the thread runs ([`Abi::switch_thread`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadState {
    /// Blocked signals.
    pub mask: u64,
    /// rt_sigsuspend's saved mask.
    pub saved_mask: Option<u64>,
    /// sigaltstack: sp, flags, size.
    pub altstack: [u64; 3],
    /// CLONE_CHILD_CLEARTID / set_tid_address.
    pub clear_tid: u64,
}

impl ThreadState {
    /// A new thread's: the mask of the thread that made it, no alternate stack (Linux disables
    /// it for a thread), `clear_tid` from clone.
    pub fn new_thread(parent_mask: u64, clear_tid: u64) -> ThreadState {
        ThreadState {
            mask: parent_mask,
            saved_mask: None,
            altstack: [0, 2, 0], // SS_DISABLE
            clear_tid,
        }
    }
}

/// Where guest stdout/stderr go.
#[derive(Debug)]
pub enum Output {
    /// Kept in memory up to a cap (the rest counted): the harness reads the result line.
    Capture {
        /// Bytes kept.
        buf: Vec<u8>,
        /// Bytes written in all.
        total: u64,
    },
    /// Passed to the host's own stream.
    Inherit(i32),
}

/// Syscall numbers counted one by one (x86-64 Linux has fewer than 512).
pub const COUNTED_NRS: usize = 512;

/// Stdout bytes kept in capture mode.
pub const CAPTURE_CAP: usize = 1 << 20;

impl Output {
    /// Appends guest output.
    pub fn put(&mut self, data: &[u8]) {
        match self {
            Output::Capture { buf, total } => {
                *total += data.len() as u64;
                let room = CAPTURE_CAP.saturating_sub(buf.len());
                buf.extend_from_slice(&data[..data.len().min(room)]);
            }
            Output::Inherit(fd) => {
                // SAFETY: writing a valid slice to a host fd we were given; errors are ignored
                // as they would be for a closed terminal.
                unsafe { libc::write(*fd, data.as_ptr().cast(), data.len()) };
            }
        }
    }
}

/// Largest single copy through a bounce buffer the layer makes for a guest.
const MAX_IO: usize = 1 << 20;
const PAGE: u64 = 4096;

/// Memory regions the guest's program break and anonymous mappings may use.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Initial program break (end of the loaded image, page aligned).
    pub brk_start: u64,
    /// Highest program break (it also stops below the lowest mapping).
    pub brk_limit: u64,
    /// Lowest address of mappings (they also stop above the program break).
    pub mmap_lo: u64,
    /// Highest (exclusive) address of mappings.
    pub mmap_hi: u64,
    /// Mappings without an address go below this first, while there is room (0: anywhere):
    /// bt places them within reach of its code cache's rip-relative operands, so the shared
    /// libraries an ELF interpreter maps can be translated.
    pub mmap_near: u64,
}

/// How a guest starts: its memory layout, outputs, stdin, policy and named files.
#[derive(Debug)]
pub struct Setup {
    /// Program break and mapping area.
    pub layout: Layout,
    /// Standard output and error.
    pub outputs: [Output; 2],
    /// stdin is the host's (else /dev/null).
    pub inherit_stdin: bool,
    /// What the guest's calls may do on the host.
    pub policy: Policy,
    /// The files named on the command line (all a confined guest may open).
    pub allowed: Vec<PathBuf>,
    /// Whether the backend delivers signals to guest handlers ([`Action::Deliver`]).
    pub delivers_signals: bool,
    /// The guest is a host process of its own (bt's translator process), not a part of the
    /// harness's or the VMM's: under the host policy it forks, waits and signals other
    /// processes on the host ([`table::Entry::level_in`]).
    pub own_process: bool,
    /// The guest program's file, when it has one: what `/proc/self/exe` means to the guest.
    pub exe: Option<PathBuf>,
    /// For a guest sharing the backend's process: the address of a byte its interval timer
    /// sets to 1 when it fires (kvm_run.immediate_exit), 0 for none ([`timer`]).
    pub timer_kick: u64,
}

/// The guest's signal state: dispositions (handler, flags, restorer, mask per signal), the
/// blocked mask and the alternate stack.
#[derive(Debug, Clone)]
pub struct SignalState {
    /// rt_sigaction's `struct sigaction` per signal number (1..=64).
    pub actions: [[u64; 4]; 65],
    /// Blocked signals.
    pub mask: u64,
    /// Blocked signals sent to the guest, delivered when it unblocks them.
    pub pending: u64,
    /// sigaltstack: sp, flags, size.
    pub altstack: [u64; 3],
    /// The mask rt_sigsuspend replaced, restored when the handler that ended it returns (it
    /// goes into that handler's signal frame).
    pub saved_mask: Option<u64>,
}

impl Default for SignalState {
    /// A new process's: every disposition SIG_DFL, nothing blocked or pending, no alternate
    /// stack.
    fn default() -> Self {
        SignalState {
            actions: [[0; 4]; 65],
            mask: 0,
            pending: 0,
            altstack: [0, 2, 0], // SS_DISABLE
            saved_mask: None,
        }
    }
}

/// SIGKILL and SIGSTOP, which no mask blocks (bit n-1 = signal n).
pub const UNBLOCKABLE: u64 = (1u64 << (libc::SIGKILL - 1)) | (1u64 << (libc::SIGSTOP - 1));

/// Signals the guest's mask never blocks in the host process: the faults a translator must
/// see to tell the guest's faults from its own.
pub const NEVER_BLOCKED_IN_HOST: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
];

/// The host signal set that stands for the guest's blocked mask `mask` (bit n-1 = signal n),
/// less [`NEVER_BLOCKED_IN_HOST`].
pub fn host_sigset(mask: u64) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in 1..=64 {
            if mask & (1u64 << (sig - 1)) != 0 && !NEVER_BLOCKED_IN_HOST.contains(&sig) {
                libc::sigaddset(&mut set, sig);
            }
        }
        set
    }
}

/// The state of one guest process: descriptors, current directory, memory map, signals,
/// counters.
pub struct Abi {
    policy: Policy,
    pid: i64,
    fds: FdTable,
    /// Standard output and standard error.
    pub outputs: [Output; 2],
    allowed: Vec<PathBuf>,
    /// The guest's current directory (host policy): a descriptor of it, so that a `chdir` of
    /// the guest never moves the harness.
    cwd: Option<OwnedFd>,
    mem: mem::Map,
    misc: process::Misc,
    /// The guest's signals (bt delivers them through this state).
    pub signals: SignalState,
    delivers_signals: bool,
    own_process: bool,
    /// ITIMER_REAL of a guest sharing the backend's process, made at its first use.
    timer: Option<timer::RealTimer>,
    timer_kick: u64,
    /// The guest program's file (`/proc/self/exe` to the guest).
    exe: Option<PathBuf>,
    /// The program execve asked for, until the backend takes it.
    exec: Option<ExecRequest>,
    /// Calls by syscall number (the last slot counts every larger number): counted into a fixed
    /// array on the hot path, named once at the end by [`Abi::counters`].
    calls: Box<[u64; COUNTED_NRS]>,
    /// Calls answered with ENOSYS because no entry supports them, by number.
    unsupported: BTreeMap<u64, u64>,
    /// Paths refused by the confinement.
    denied_path: u64,
    /// The guest's threads: above one, calls that may block are deferred ([`Action::Block`]).
    threads: usize,
    /// The call a handler deferred, until the backend takes it.
    deferred: Option<Box<Deferred>>,
    /// The running thread's set_tid_address word (its [`ThreadState::clear_tid`]).
    clear_tid: u64,
}

/// The marker a handler returns when it deferred its host call ([`Abi::host_call`]); never
/// seen by the guest.
pub(crate) const DEFERRED: Errno = Errno(100_000);

/// A confined guest's process id: it is the first process of its own machine. (Under the host
/// policy a guest has the host process's pid, as natively a program never is pid 1: sash, for
/// one, refuses to `exit` as init.)
pub const CONFINED_PID: i64 = 1;

impl Abi {
    /// A process set up as `s` says: fds 0-2 open, the current directory the harness's (host
    /// policy).
    pub fn new(s: Setup) -> Abi {
        let mut fds = FdTable::default();
        let stdin = if s.inherit_stdin {
            fd::dup_host(0).ok()
        } else {
            std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
        };
        if let Some(f) = stdin {
            fds.put(0, Fd::Host(f), false);
        }
        for (i, out) in s.outputs.iter().enumerate() {
            let fd = match out {
                Output::Inherit(n) => match fd::dup_host(*n) {
                    Ok(f) => Fd::Host(f),
                    Err(_) => continue,
                },
                Output::Capture { .. } => Fd::Out(i),
            };
            fds.put(i + 1, fd, false);
        }
        let mut allowed = s.allowed;
        allowed.extend(["/dev/null", "/dev/zero", "/dev/urandom"].map(PathBuf::from));
        let cwd = (s.policy == Policy::Host)
            .then(|| fs::open_dir_path(c".").ok())
            .flatten();
        Abi {
            policy: s.policy,
            pid: match s.policy {
                Policy::Host => i64::from(std::process::id()),
                Policy::Confined => CONFINED_PID,
            },
            fds,
            outputs: s.outputs,
            allowed,
            cwd,
            mem: mem::Map::new(s.layout),
            misc: process::Misc::default(),
            signals: SignalState::default(),
            delivers_signals: s.delivers_signals,
            own_process: s.own_process,
            timer: None,
            timer_kick: s.timer_kick,
            exe: s.exe,
            exec: None,
            calls: Box::new([0; COUNTED_NRS]),
            unsupported: BTreeMap::new(),
            denied_path: 0,
            threads: 1,
            deferred: None,
            clear_tid: 0,
        }
    }

    /// How many threads the guest has now (the backend says so as they come and go).
    pub fn set_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }

    /// Makes host call `nr` now, or, when the guest has other threads, defers it to the
    /// backend ([`Action::Block`]): a handler's way to make a call that may block. Its
    /// pointer arguments must be checked, and hold for the guest's own memory as it is
    /// (the backends with threads map guest memory at its own addresses).
    fn host_call(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, Errno> {
        self.host_call_with(nr, args, [0; 2], None)
    }

    /// [`Abi::host_call`] with a value the call reads: argument `at` becomes a pointer to
    /// `scratch` (kept in place with the deferred call).
    fn host_call_with(
        &mut self,
        nr: i64,
        args: [u64; 6],
        scratch: [u64; 2],
        at: Option<usize>,
    ) -> Result<i64, Errno> {
        let mut d = Box::new(Deferred {
            nr,
            args,
            scratch,
            post: None,
        });
        if let Some(i) = at {
            d.args[i] = d.scratch.as_ptr() as u64;
        }
        let (r, _) = self.defer_or_call(d)?;
        errno::raw(r)
    }

    /// [`Abi::host_call`] of a call with `post` to turn its result into the guest's (run at
    /// once, or by [`Abi::complete`] when deferred); `post` owns the host buffers the call's
    /// pointers point into.
    fn host_call_then(
        &mut self,
        nr: i64,
        args: [u64; 6],
        post: Post,
        mem: &dyn GuestMem,
    ) -> Result<i64, Errno> {
        let d = Box::new(Deferred {
            nr,
            args,
            scratch: [0; 2],
            post: Some(post),
        });
        let (r, d) = self.defer_or_call(d)?;
        self.finish(*d, mem, r)
    }

    /// Defers `d` when the guest has other threads ([`DEFERRED`]); else makes it: its raw
    /// result (or -errno), and `d` back.
    fn defer_or_call(&mut self, d: Box<Deferred>) -> Result<(i64, Box<Deferred>), Errno> {
        if self.threads > 1 {
            self.deferred = Some(d);
            return Err(DEFERRED);
        }
        Ok((d.call(), d))
    }

    /// What call `d`'s handler makes of its raw result `r`.
    fn finish(&mut self, d: Deferred, mem: &dyn GuestMem, r: i64) -> Result<i64, Errno> {
        match d.post {
            Some(post) => post(self, mem, r),
            None => errno::raw(r),
        }
    }

    /// The guest's value of deferred call `d`, which returned `r`: what its handler makes of it.
    pub fn complete(&mut self, mem: &dyn GuestMem, d: Deferred, r: i64) -> i64 {
        match self.guarded(mem, |abi, mem| abi.finish(d, mem, r)) {
            Ok(v) => v,
            Err(e) => e.ret(),
        }
    }

    /// Runs `f` on guest memory `mem`, made fault-safe ([`FaultSafe`]) while the guest has
    /// mappings whose pages may fault.
    fn guarded<R>(
        &mut self,
        mem: &dyn GuestMem,
        f: impl FnOnce(&mut Abi, &dyn GuestMem) -> R,
    ) -> R {
        if self.mem.has_files() {
            f(self, &FaultSafe(mem))
        } else {
            f(self, mem)
        }
    }

    /// The call [`Action::Block`] asked the backend to make.
    pub fn take_deferred(&mut self) -> Option<Box<Deferred>> {
        self.deferred.take()
    }

    /// Swaps the running thread's own state ([`ThreadState`]) with `t`: the backend puts the
    /// thread that runs next in, and keeps the one that stops.
    pub fn switch_thread(&mut self, t: &mut ThreadState) {
        let s = &mut self.signals;
        std::mem::swap(&mut s.mask, &mut t.mask);
        std::mem::swap(&mut s.saved_mask, &mut t.saved_mask);
        std::mem::swap(&mut s.altstack, &mut t.altstack);
        std::mem::swap(&mut self.clear_tid, &mut t.clear_tid);
    }

    /// The running thread's set_tid_address word.
    pub fn clear_tid(&self) -> u64 {
        self.clear_tid
    }

    /// How many times the guest's interval timer fired since the last call (a guest sharing
    /// the backend's process: the backend raises SIGALRM for it, [`Abi::raise`]).
    pub fn timer_fired(&self) -> u32 {
        self.timer.as_ref().map_or(0, timer::RealTimer::take_fired)
    }

    /// An expiry the backend could not deliver yet is tried again after `after`.
    pub fn timer_again_after(&self, after: std::time::Duration) {
        if let Some(t) = &self.timer {
            t.again_after(after);
        }
    }

    /// The guest's process id (getpid, gettid).
    pub fn pid(&self) -> i64 {
        self.pid
    }

    /// The policy this guest runs under.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The guest is a host process of its own under the host policy: the process model's
    /// calls act on the host.
    pub fn hosted_process(&self) -> bool {
        self.own_process && self.policy == Policy::Host
    }

    /// Services syscall `nr` with arguments `a` (rdi, rsi, rdx, r10, r8, r9).
    pub fn syscall(&mut self, mem: &dyn GuestMem, nr: u64, a: [u64; 6]) -> Action {
        self.calls[(nr as usize).min(COUNTED_NRS - 1)] += 1;
        let Some(e) = table::entry(nr) else {
            return self.refuse(nr);
        };
        if matches!(e.level_in(self.policy, self.own_process), Level::Refused(_)) {
            return self.refuse(nr);
        }
        match self.guarded(mem, |abi, mem| e.call(abi, mem, a)) {
            Ok(act) => act,
            Err(DEFERRED) => Action::Block,
            Err(err) => Action::Return(err.ret()),
        }
    }

    pub(crate) fn refuse(&mut self, nr: u64) -> Action {
        *self.unsupported.entry(nr).or_insert(0) += 1;
        Action::Return(Errno::ENOSYS.ret())
    }

    /// The counters by name (`abi.<syscall>` per syscall made, `abi.enosys`,
    /// `abi.denied_path`), made once when the run ends.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut m: BTreeMap<String, u64> = self
            .calls
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(nr, n)| {
                let name = match table::name(nr as u64) {
                    Some(name) => format!("abi.{name}"),
                    None if nr == COUNTED_NRS - 1 => "abi.other".to_string(),
                    None => format!("abi.sys_{nr}"),
                };
                (name, *n)
            })
            .collect();
        let enosys = self.unsupported.values().sum::<u64>();
        for (k, v) in [
            ("abi.enosys", enosys),
            ("abi.denied_path", self.denied_path),
        ] {
            if v > 0 {
                m.insert(k.into(), v);
            }
        }
        m
    }

    /// The calls answered with ENOSYS because no entry supports them, as "name x N, ...",
    /// most frequent first; None when there was none.
    pub fn unsupported(&self) -> Option<String> {
        if self.unsupported.is_empty() {
            return None;
        }
        let mut v: Vec<(u64, u64)> = self.unsupported.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(
            v.iter()
                .map(|(nr, n)| match table::name(*nr) {
                    Some(name) => format!("{name} ({nr}) x {n}"),
                    None => format!("syscall {nr} x {n}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// The guest's NUL-terminated string at `addr` (at most PATH_MAX bytes), scanned in place.
    fn cstring(mem: &dyn GuestMem, addr: u64) -> Result<Vec<u8>, Errno> {
        Abi::cstring_max(mem, addr, libc::PATH_MAX as u64)
    }

    /// An argument or environment string of execve (at most MAX_ARG_STRLEN, 128 KiB).
    fn cstring_any(mem: &dyn GuestMem, addr: u64) -> Result<Vec<u8>, Errno> {
        Abi::cstring_max(mem, addr, 32 * PAGE)
    }

    fn cstring_max(mem: &dyn GuestMem, addr: u64, max: u64) -> Result<Vec<u8>, Errno> {
        /// Bytes copied at a time: a path is seldom longer, and a chunk never crosses a page.
        const CHUNK: u64 = 256;
        let mut at = addr;
        let mut out = Vec::new();
        let mut chunk = [0u8; CHUNK as usize];
        while (at - addr) < max {
            // never past the end of this page, so a string near the end of memory is found;
            // copied through `read` (never plain loads), which is fault-safe where it must be
            let room = (PAGE - at % PAGE).min(max - (at - addr)).min(CHUNK);
            let s = &mut chunk[..room as usize];
            mem.read(at, s)?;
            match s.iter().position(|c| *c == 0) {
                Some(n) => {
                    out.extend_from_slice(&s[..n]);
                    return Ok(out);
                }
                None => out.extend_from_slice(s),
            }
            at = at.checked_add(room).ok_or(Errno::EFAULT)?;
        }
        Err(Errno::ENAMETOOLONG)
    }

    /// The host descriptor a `*at` call's `dirfd` means: the guest's current directory for
    /// AT_FDCWD, else the guest descriptor's.
    fn dirfd(&self, dirfd: u64) -> Result<i32, Errno> {
        if dirfd as i32 == libc::AT_FDCWD {
            return Ok(self.cwd.as_ref().map_or(libc::AT_FDCWD, |c| c.as_raw_fd()));
        }
        self.fds.host(dirfd)
    }
}

/// Host address of a guest buffer the kernel will read (`len` may be 0: any address).
fn buf_in(mem: &dyn GuestMem, addr: u64, len: u64) -> Result<*const u8, Errno> {
    if len == 0 {
        return Ok(std::ptr::NonNull::<u8>::dangling().as_ptr());
    }
    Ok(mem.host_range(addr, len, false)?.cast_const())
}

/// Host address of a guest buffer the kernel will write.
fn buf_out(mem: &dyn GuestMem, addr: u64, len: u64) -> Result<*mut u8, Errno> {
    if len == 0 {
        return Ok(std::ptr::NonNull::<u8>::dangling().as_ptr());
    }
    Ok(mem.host_range(addr, len, true)?)
}

/// Like [`buf_in`], with the null pointer passed through as null.
fn opt_in(mem: &dyn GuestMem, addr: u64, len: u64) -> Result<*const u8, Errno> {
    if addr == 0 {
        Ok(std::ptr::null())
    } else {
        buf_in(mem, addr, len)
    }
}

/// Like [`buf_out`], with the null pointer passed through as null.
fn opt_out(mem: &dyn GuestMem, addr: u64, len: u64) -> Result<*mut u8, Errno> {
    if addr == 0 {
        Ok(std::ptr::null_mut())
    } else {
        buf_out(mem, addr, len)
    }
}

/// Reads a plain value of type `T` from the guest.
fn get<T: Copy>(mem: &dyn GuestMem, addr: u64) -> Result<T, Errno> {
    // SAFETY: T is plain data (integers and arrays of them, as every caller uses), so zero
    // bytes, and any bytes read over them, are a valid value.
    let mut v: T = unsafe { std::mem::zeroed() };
    // SAFETY: the bytes of `v`, which nothing else refers to while the slice lives.
    let b = unsafe {
        std::slice::from_raw_parts_mut((&mut v as *mut T).cast::<u8>(), std::mem::size_of::<T>())
    };
    mem.read(addr, b)?;
    Ok(v)
}

/// Guest memory whose bytes the layer itself reads and writes through the kernel
/// (`process_vm_readv`/`process_vm_writev` on this process) rather than with plain loads and
/// stores, so that a page nothing backs (a file mapping past the end of its file, which the
/// guest may truncate at any time) is EFAULT, as the kernel's own copies make it, instead of
/// a SIGBUS that kills vbench. [`Abi::syscall`] uses it while the guest has file mappings.
struct FaultSafe<'a>(&'a dyn GuestMem);

impl FaultSafe<'_> {
    /// Copies `len` bytes between this process's `local` and guest memory at `remote`.
    fn copy(local: *mut u8, remote: *mut u8, len: usize, write: bool) -> Result<(), OutsideGuest> {
        if len == 0 {
            return Ok(());
        }
        let l = libc::iovec {
            iov_base: local.cast(),
            iov_len: len,
        };
        let r = libc::iovec {
            iov_base: remote.cast(),
            iov_len: len,
        };
        // SAFETY: both iovecs describe memory of this process (`remote` a checked guest range);
        // the kernel copies between them and fails, without a signal, where a page cannot be
        // had.
        let n = unsafe {
            if write {
                libc::process_vm_writev(libc::getpid(), &l, 1, &r, 1, 0)
            } else {
                libc::process_vm_readv(libc::getpid(), &l, 1, &r, 1, 0)
            }
        };
        if n == len as isize {
            Ok(())
        } else {
            Err(OutsideGuest)
        }
    }
}

impl GuestMem for FaultSafe<'_> {
    fn host_range(&self, addr: u64, len: u64, write: bool) -> Result<*mut u8, OutsideGuest> {
        self.0.host_range(addr, len, write)
    }
    fn host_addr(&self, addr: u64, len: u64) -> Result<*mut u8, OutsideGuest> {
        self.0.host_addr(addr, len)
    }
    fn changed(&self, addr: u64, len: u64) {
        self.0.changed(addr, len)
    }
    fn protect(&self, addr: u64, len: u64, prot: i32) -> i32 {
        self.0.protect(addr, len, prot)
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutsideGuest> {
        let p = self.0.host_range(addr, buf.len() as u64, false)?;
        FaultSafe::copy(buf.as_mut_ptr(), p, buf.len(), false)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), OutsideGuest> {
        let p = self.0.host_range(addr, data.len() as u64, true)?;
        FaultSafe::copy(data.as_ptr().cast_mut(), p, data.len(), true)
    }
    // zero is the backend's: the program break, where no file is ever mapped
    fn zero(&self, addr: u64, len: u64) -> Result<(), OutsideGuest> {
        self.0.zero(addr, len)
    }
}

/// Writes a plain value of type `T` to the guest.
fn put<T: Copy>(mem: &dyn GuestMem, addr: u64, v: &T) -> Result<(), Errno> {
    // SAFETY: T is plain data (no padding is read as anything but bytes), viewed as bytes.
    let b = unsafe {
        std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
    };
    mem.write(addr, b)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod testmem;

#[cfg(test)]
mod tests;
