//! The system-call table: one entry per call, its number (`libc::SYS_*`), name, what each
//! policy does with it and its handler. The one source of syscall names in vbench.

use super::{exec, fs, io, mem, process as p, Abi, Action, Errno, GuestMem, Policy};
use std::sync::LazyLock;

type A = [u64; 6];

/// What a policy does with a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The host kernel makes it, with the guest's pointers, descriptors and paths translated.
    Host,
    /// vbench answers it itself (the guest's own state: its pid, signals, limits, memory map).
    Emulated,
    /// The host kernel makes it, on the files named on the command line only, read-only.
    Confined,
    /// Answered with ENOSYS, for this reason.
    Refused(&'static str),
}

impl Level {
    /// A short label for `vbench list --syscalls`.
    pub fn label(self) -> &'static str {
        match self {
            Level::Host => "host",
            Level::Emulated => "emulated",
            Level::Confined => "named files",
            Level::Refused(_) => "ENOSYS",
        }
    }
}

#[derive(Clone, Copy)]
enum Handler {
    Val(fn(&mut Abi, &dyn GuestMem, A) -> Result<i64, Errno>),
    Act(fn(&mut Abi, &dyn GuestMem, A) -> Result<Action, Errno>),
    Nr(fn(&mut Abi, &dyn GuestMem, i64, A) -> Result<i64, Errno>),
    None,
}

/// One system call.
#[derive(Clone, Copy)]
pub struct Entry {
    /// Its x86-64 number.
    pub nr: i64,
    sym: &'static str,
    /// What the host policy does with it.
    pub host: Level,
    /// What the confined policy does with it.
    pub confined: Level,
    handler: Handler,
    /// What the host policy does with it instead when the guest is a host process of its own
    /// (bt's translator process), and the handler that does it: the calls of the process
    /// model (fork, wait, signals to other processes) then act on the host as natively.
    own: Option<(Level, Handler)>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name(), self.nr)
    }
}

impl Entry {
    /// Its name (`read`, `openat`, ...).
    pub fn name(&self) -> &'static str {
        self.sym.trim_start_matches("SYS_")
    }

    /// What `policy` does with it for a guest that shares the backend's process (kvm).
    pub fn level(&self, policy: Policy) -> Level {
        self.level_in(policy, false)
    }

    /// What `policy` does with it; `own_process`: for a guest that is a host process of its
    /// own (bt).
    pub fn level_in(&self, policy: Policy, own_process: bool) -> Level {
        match (policy, self.own) {
            (Policy::Host, Some((level, _))) if own_process => level,
            (Policy::Host, _) => self.host,
            (Policy::Confined, _) => self.confined,
        }
    }

    pub(super) fn call(&self, abi: &mut Abi, mem: &dyn GuestMem, a: A) -> Result<Action, Errno> {
        let handler = match self.own {
            Some((_, h)) if abi.hosted_process() => h,
            _ => self.handler,
        };
        match handler {
            Handler::Val(f) => f(abi, mem, a).map(Action::Return),
            Handler::Act(f) => f(abi, mem, a),
            Handler::Nr(f) => f(abi, mem, self.nr, a).map(Action::Return),
            Handler::None => Err(Errno::ENOSYS),
        }
    }
}

use Level::{Confined as C, Emulated as E, Host as H};

const NO_NET: Level = Level::Refused("confined: no network");
const NO_HOST: Level = Level::Refused("confined: no access to the host's files");
const PROCESSES: Level = Level::Refused(
    "creates a process or thread: a confined guest, and one sharing its VMM's process, is one process",
);
const EXEC: Level = Level::Refused(
    "replaces the program: a confined guest, and one sharing its VMM's process, runs one program",
);
const ASYNC: Level = Level::Refused(
    "POSIX timers: only for a guest that is a process of its own (alarm and setitimer are emulated)",
);
const IDENTITY: Level =
    Level::Refused("changes the identity of the process the guest shares with vbench");

macro_rules! e {
    ($sym:ident, $h:expr, $c:expr, $kind:ident $f:expr) => {
        Entry {
            nr: libc::$sym,
            sym: stringify!($sym),
            host: $h,
            confined: $c,
            handler: Handler::$kind($f),
            own: None,
        }
    };
    ($sym:ident, $h:expr, $c:expr, $kind:ident $f:expr; own $okind:ident $of:expr) => {
        Entry {
            nr: libc::$sym,
            sym: stringify!($sym),
            host: $h,
            confined: $c,
            handler: Handler::$kind($f),
            own: Some((Level::Host, Handler::$okind($of))),
        }
    };
    ($sym:ident, refused $why:expr) => {
        Entry {
            nr: libc::$sym,
            sym: stringify!($sym),
            host: $why,
            confined: $why,
            handler: Handler::None,
            own: None,
        }
    };
    ($sym:ident, refused $why:expr; own $okind:ident $of:expr) => {
        Entry {
            nr: libc::$sym,
            sym: stringify!($sym),
            host: $why,
            confined: $why,
            handler: Handler::None,
            own: Some((Level::Host, Handler::$okind($of))),
        }
    };
}

/// Every system call vbench knows, supported or not.
pub static TABLE: &[Entry] = &[
    // ---- descriptors and I/O
    e!(SYS_read, H, H, Val io::read),
    e!(SYS_write, H, H, Act io::write),
    e!(SYS_pread64, H, H, Val io::pread64),
    e!(SYS_pwrite64, H, H, Act io::pwrite64),
    e!(SYS_readv, H, H, Val io::readv),
    e!(SYS_writev, H, H, Act io::writev),
    e!(SYS_preadv, H, H, Val io::preadv),
    e!(SYS_pwritev, H, H, Act io::pwritev),
    e!(SYS_lseek, H, H, Val io::lseek),
    e!(SYS_close, E, E, Val io::close),
    e!(SYS_dup, E, E, Val io::dup),
    e!(SYS_dup2, E, E, Val io::dup2),
    e!(SYS_dup3, E, E, Val io::dup3),
    e!(SYS_fcntl, H, C, Val io::fcntl),
    e!(SYS_ioctl, H, E, Val io::ioctl),
    e!(SYS_pipe, H, H, Val io::pipe),
    e!(SYS_pipe2, H, H, Val io::pipe2),
    e!(SYS_poll, H, H, Val io::poll),
    e!(SYS_ppoll, H, H, Val io::ppoll),
    e!(SYS_sendfile, H, H, Act io::sendfile),
    e!(SYS_copy_file_range, H, NO_HOST, Val io::copy_file_range),
    e!(SYS_fsync, H, NO_HOST, Nr io::fd_ints),
    e!(SYS_fdatasync, H, NO_HOST, Nr io::fd_ints),
    e!(SYS_syncfs, H, NO_HOST, Nr io::fd_ints),
    e!(SYS_ftruncate, H, NO_HOST, Nr io::fd_ints),
    e!(SYS_fallocate, H, NO_HOST, Nr io::fd_ints),
    e!(SYS_fadvise64, H, H, Nr io::fd_ints),
    e!(SYS_flock, H, NO_HOST, Nr io::fd_ints),
    e!(SYS_fchmod, H, NO_HOST, Nr io::fd_ints),
    e!(SYS_fchown, H, NO_HOST, Nr io::fd_ints),
    e!(SYS_select, H, H, Val io::select),
    e!(SYS_pselect6, H, H, Val io::pselect6),
    e!(SYS_epoll_create1, H, H, Nr io::new_event_fd),
    e!(SYS_epoll_ctl, H, H, Val io::epoll_ctl),
    e!(SYS_epoll_wait, H, H, Val io::epoll_wait),
    e!(SYS_epoll_pwait, H, H, Val io::epoll_wait),
    e!(SYS_eventfd2, H, H, Nr io::new_event_fd),
    e!(SYS_timerfd_create, H, H, Nr io::new_event_fd),
    e!(SYS_timerfd_settime, H, H, Val io::timerfd_settime),
    e!(SYS_timerfd_gettime, H, H, Val io::timerfd_gettime),
    // ---- paths, files, directories
    e!(SYS_open, H, C, Val fs::open),
    e!(SYS_openat, H, C, Val fs::openat),
    e!(SYS_creat, H, NO_HOST, Val fs::creat),
    e!(SYS_stat, H, C, Val fs::stat),
    e!(SYS_lstat, H, C, Val fs::lstat),
    e!(SYS_fstat, H, H, Val fs::fstat),
    e!(SYS_newfstatat, H, C, Val fs::newfstatat),
    e!(SYS_statx, H, C, Val fs::statx),
    e!(SYS_access, H, C, Val fs::access),
    e!(SYS_faccessat, H, C, Val fs::faccessat_),
    e!(SYS_faccessat2, H, C, Val fs::faccessat2),
    e!(SYS_getdents64, H, H, Val fs::getdents64),
    e!(SYS_getcwd, E, E, Val fs::getcwd),
    e!(SYS_chdir, E, NO_HOST, Val fs::chdir),
    e!(SYS_fchdir, E, NO_HOST, Val fs::fchdir),
    e!(SYS_mkdir, H, NO_HOST, Val fs::mkdir),
    e!(SYS_mkdirat, H, NO_HOST, Val fs::mkdirat),
    e!(SYS_mknod, H, NO_HOST, Val fs::mknod),
    e!(SYS_mknodat, H, NO_HOST, Val fs::mknodat),
    e!(SYS_rmdir, H, NO_HOST, Val fs::rmdir),
    e!(SYS_unlink, H, NO_HOST, Val fs::unlink),
    e!(SYS_unlinkat, H, NO_HOST, Val fs::unlinkat),
    e!(SYS_rename, H, NO_HOST, Val fs::rename),
    e!(SYS_renameat, H, NO_HOST, Val fs::renameat),
    e!(SYS_renameat2, H, NO_HOST, Val fs::renameat2),
    e!(SYS_link, H, NO_HOST, Val fs::link),
    e!(SYS_linkat, H, NO_HOST, Val fs::linkat),
    e!(SYS_symlink, H, NO_HOST, Val fs::symlink),
    e!(SYS_symlinkat, H, NO_HOST, Val fs::symlinkat_),
    e!(SYS_readlink, H, C, Val fs::readlink),
    e!(SYS_readlinkat, H, C, Val fs::readlinkat_),
    e!(SYS_chmod, H, NO_HOST, Val fs::chmod),
    e!(SYS_fchmodat, H, NO_HOST, Val fs::fchmodat),
    e!(SYS_chown, H, NO_HOST, Val fs::chown),
    e!(SYS_lchown, H, NO_HOST, Val fs::lchown),
    e!(SYS_fchownat, H, NO_HOST, Val fs::fchownat),
    e!(SYS_truncate, H, NO_HOST, Val fs::truncate),
    e!(SYS_utimensat, H, NO_HOST, Val fs::utimensat),
    e!(SYS_utimes, H, NO_HOST, Val fs::utimes),
    e!(SYS_statfs, H, NO_HOST, Val fs::statfs),
    e!(SYS_fstatfs, H, H, Val fs::fstatfs),
    e!(SYS_sync, H, NO_HOST, Val fs::sync),
    e!(SYS_umask, E, E, Val p::umask),
    e!(SYS_getxattr, E, E, Val p::no_xattrs),
    e!(SYS_lgetxattr, E, E, Val p::no_xattrs),
    e!(SYS_fgetxattr, E, E, Val p::no_xattrs),
    e!(SYS_listxattr, E, E, Val p::no_xattrs),
    e!(SYS_llistxattr, E, E, Val p::no_xattrs),
    e!(SYS_flistxattr, E, E, Val p::no_xattrs),
    // ---- memory
    e!(SYS_brk, E, E, Val mem::brk),
    e!(SYS_mmap, E, E, Val mem::mmap),
    e!(SYS_munmap, E, E, Val mem::munmap),
    e!(SYS_mprotect, E, E, Val mem::mprotect),
    e!(SYS_mremap, E, E, Val mem::mremap),
    e!(SYS_madvise, E, E, Val mem::madvise),
    e!(SYS_msync, H, H, Val mem::msync),
    e!(SYS_mincore, H, H, Val mem::mincore),
    e!(SYS_mlock, E, E, Val p::nothing),
    e!(SYS_munlock, E, E, Val p::nothing),
    e!(SYS_mlockall, E, E, Val p::nothing),
    e!(SYS_munlockall, E, E, Val p::nothing),
    // ---- the process
    e!(SYS_getpid, E, E, Val p::getpid),
    e!(SYS_gettid, E, E, Val p::getpid; own Val p::host_gettid),
    e!(SYS_getppid, E, E, Val p::getppid; own Val p::host_getppid),
    e!(SYS_getuid, H, E, Val p::getuid),
    e!(SYS_geteuid, H, E, Val p::geteuid),
    e!(SYS_getgid, H, E, Val p::getgid),
    e!(SYS_getegid, H, E, Val p::getegid),
    e!(SYS_getresuid, H, E, Val p::getresuid),
    e!(SYS_getresgid, H, E, Val p::getresgid),
    e!(SYS_getgroups, H, E, Val p::getgroups),
    e!(SYS_getpgrp, E, E, Val p::getpgrp; own Nr p::host_ints),
    e!(SYS_getpgid, E, E, Val p::getpgid; own Nr p::host_ints),
    e!(SYS_getsid, E, E, Val p::getpgid; own Nr p::host_ints),
    e!(SYS_setpgid, E, E, Val p::setpgid; own Nr p::host_ints),
    e!(SYS_setsid, E, E, Val p::setsid; own Nr p::host_ints),
    e!(SYS_setuid, refused IDENTITY),
    e!(SYS_setgid, refused IDENTITY),
    e!(SYS_setreuid, refused IDENTITY),
    e!(SYS_setregid, refused IDENTITY),
    e!(SYS_setresuid, refused IDENTITY),
    e!(SYS_setresgid, refused IDENTITY),
    e!(SYS_setgroups, refused IDENTITY),
    e!(SYS_exit, E, E, Act p::exit; own Act p::host_exit),
    e!(SYS_exit_group, E, E, Act p::exit),
    e!(SYS_wait4, E, E, Val p::wait; own Val p::wait4),
    e!(SYS_waitid, E, E, Val p::wait; own Val p::waitid),
    e!(SYS_fork, refused PROCESSES; own Act p::fork),
    e!(SYS_vfork, refused PROCESSES; own Act p::fork),
    e!(SYS_clone, refused PROCESSES; own Act p::clone),
    e!(SYS_clone3, refused PROCESSES; own Act p::clone3),
    e!(SYS_execve, refused EXEC; own Act exec::execve),
    e!(SYS_execveat, refused EXEC; own Act exec::execveat_),
    e!(SYS_set_tid_address, E, E, Val p::set_tid_address; own Val p::host_set_tid_address),
    e!(SYS_set_robust_list, E, E, Val p::nothing; own Val p::host_set_robust_list),
    e!(SYS_rseq, E, E, Val p::enosys),
    e!(SYS_futex, E, E, Val p::futex; own Val p::host_futex),
    e!(SYS_arch_prctl, E, E, Act p::arch_prctl),
    e!(SYS_prctl, E, E, Val p::prctl),
    e!(SYS_uname, H, E, Val p::uname),
    e!(SYS_sysinfo, H, H, Val p::sysinfo),
    e!(SYS_getrusage, H, H, Val p::getrusage),
    e!(SYS_times, H, H, Val p::times),
    e!(SYS_getrlimit, E, E, Val p::getrlimit),
    e!(SYS_setrlimit, E, E, Val p::setrlimit),
    e!(SYS_prlimit64, E, E, Val p::prlimit64),
    e!(SYS_sched_getaffinity, H, H, Val p::sched_getaffinity),
    e!(SYS_sched_setaffinity, H, NO_HOST, Val p::sched_setaffinity),
    e!(SYS_sched_yield, H, H, Val p::nothing; own Val p::host_sched_yield),
    e!(SYS_getcpu, H, H, Val p::getcpu),
    e!(SYS_getpriority, H, H, Val p::getpriority),
    e!(SYS_getrandom, H, H, Val p::getrandom),
    // ---- signals
    e!(SYS_kill, E, E, Act p::kill; own Nr p::host_signal),
    e!(SYS_tkill, E, E, Act p::tkill; own Nr p::host_signal),
    e!(SYS_tgkill, E, E, Act p::tgkill; own Nr p::host_signal),
    e!(SYS_rt_sigaction, E, E, Val p::rt_sigaction),
    e!(SYS_rt_sigprocmask, E, E, Act p::rt_sigprocmask),
    e!(SYS_rt_sigpending, E, E, Val p::rt_sigpending; own Val p::host_sigpending),
    e!(SYS_sigaltstack, E, E, Val p::sigaltstack),
    e!(SYS_rt_sigreturn, E, E, Act p::rt_sigreturn),
    e!(SYS_pause, H, H, Val p::pause),
    e!(SYS_rt_sigsuspend, E, E, Act p::sigsuspend; own Val p::host_sigsuspend),
    e!(SYS_alarm, E, E, Val p::alarm; own Nr p::host_ints),
    e!(SYS_setitimer, E, E, Val p::setitimer; own Val p::host_setitimer),
    e!(SYS_getitimer, E, E, Val p::getitimer; own Val p::host_getitimer),
    e!(SYS_timer_create, refused ASYNC),
    // ---- clocks and sleeps
    e!(SYS_clock_gettime, H, H, Val p::clock_gettime),
    e!(SYS_clock_getres, H, H, Val p::clock_getres),
    e!(SYS_gettimeofday, H, H, Val p::gettimeofday),
    e!(SYS_time, H, H, Val p::time),
    e!(SYS_nanosleep, H, H, Val p::nanosleep),
    e!(SYS_clock_nanosleep, H, H, Val p::clock_nanosleep),
    // ---- sockets
    e!(SYS_socket, H, NO_NET, Val io::socket),
    e!(SYS_socketpair, H, NO_NET, Val io::socketpair),
    e!(SYS_connect, H, NO_NET, Nr io::sockaddr_in),
    e!(SYS_bind, H, NO_NET, Nr io::sockaddr_in),
    e!(SYS_listen, H, NO_NET, Nr io::fd_ints),
    e!(SYS_shutdown, H, NO_NET, Nr io::fd_ints),
    e!(SYS_accept, H, NO_NET, Val io::accept),
    e!(SYS_accept4, H, NO_NET, Val io::accept4),
    e!(SYS_getsockname, H, NO_NET, Nr io::sockname),
    e!(SYS_getpeername, H, NO_NET, Nr io::sockname),
    e!(SYS_sendto, H, NO_NET, Act io::sendto),
    e!(SYS_recvfrom, H, NO_NET, Val io::recvfrom),
    e!(SYS_sendmsg, H, NO_NET, Nr io::msg),
    e!(SYS_recvmsg, H, NO_NET, Nr io::msg),
    e!(SYS_setsockopt, H, NO_NET, Val io::setsockopt),
    e!(SYS_getsockopt, H, NO_NET, Val io::getsockopt),
];

/// Entry index by syscall number.
static BY_NR: LazyLock<Box<[u16; super::COUNTED_NRS]>> = LazyLock::new(|| {
    let mut t = Box::new([u16::MAX; super::COUNTED_NRS]);
    for (i, e) in TABLE.iter().enumerate() {
        t[e.nr as usize] = i as u16;
    }
    t
});

/// The entry of syscall `nr`.
pub fn entry(nr: u64) -> Option<&'static Entry> {
    let i = *BY_NR.get(usize::try_from(nr).ok()?)?;
    TABLE.get(usize::from(i))
}

/// The name of syscall `nr`, when the table knows it.
pub fn name(nr: u64) -> Option<&'static str> {
    entry(nr).map(Entry::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_and_names_are_the_kernels() {
        let mut seen = std::collections::BTreeSet::new();
        for e in TABLE {
            assert!(seen.insert(e.nr), "{} twice", e.name());
            assert!((e.nr as usize) < crate::linux_abi::COUNTED_NRS);
            assert_eq!(entry(e.nr as u64).map(Entry::name), Some(e.name()));
        }
        assert_eq!(name(0), Some("read"));
        assert_eq!(name(libc::SYS_clone as u64), Some("clone"));
        assert_eq!(name(libc::SYS_newfstatat as u64), Some("newfstatat"));
        assert_eq!(name(600), None);
        assert_eq!(name(u64::MAX), None);
    }
}
