//! The child side of the container: container init and the payload it forks. Runs right after a
//! raw `clone` and therefore never allocates, never takes a lock, and never returns: every
//! string and table it needs is prepared in [`Spec`] before the clone.

use super::root::{self, Planned, Step};
use super::{ContainerConfig, Fd, Namespace, CLONE_NEWTIME};
use crate::BackendError;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the new root's tmpfs is mounted before pivot_root (inside the private mount namespace),
/// unless the root's plan chose another place ([`root::plan`]).
const STAGE: &str = root::STAGES[0];

/// Capabilities the payload keeps: Docker's default set.
const KEEP_CAPS: [u32; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

/// Syscalls the payload may not make (EPERM), in the spirit of Docker's default profile.
const DENIED: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_ptrace,
    libc::SYS_bpf,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_lookup_dcookie,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
];

/// Namespace flags `clone` may not carry in the payload.
const NS_FLAGS: [libc::c_int; 8] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWCGROUP,
    CLONE_NEWTIME,
];

/// Builds the payload's seccomp filters: the deny list plus namespace-creating `clone` (EPERM),
/// and `clone3` (ENOSYS, whose flags a BPF filter cannot inspect; libc then falls back to clone).
pub fn seccomp_programs() -> Result<[BpfProgram; 2], BackendError> {
    let err = |e: seccompiler::BackendError| BackendError::Invalid(format!("seccomp filter: {e}"));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|s| (*s, vec![])).collect();
    let mut clone_rules = Vec::new();
    for f in NS_FLAGS {
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(f as u64),
            f as u64,
        )
        .map_err(err)?;
        clone_rules.push(SeccompRule::new(vec![cond]).map_err(err)?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(err)?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, vec![])].into(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(err)?;
    let compile = |f: SeccompFilter| {
        BpfProgram::try_from(f).map_err(|e| BackendError::Invalid(format!("seccomp filter: {e}")))
    };
    Ok([compile(deny)?, compile(clone3)?])
}

/// What the parent passes in to build a [`Spec`].
pub struct SpecInput<'a> {
    pub cfg: &'a ContainerConfig,
    pub program_name: &'a str,
    /// The program on the host (None: only in memory).
    pub program_path: Option<&'a Path>,
    pub exec_fallback: PathBuf,
    pub bytes: &'a [u8],
    pub args: &'a [OsString],
    /// The payload's CPU affinity (`--pin`), applied just before exec.
    pub cpu: Option<libc::cpu_set_t>,
    pub go: Fd,
    pub go_w: Fd,
    pub report: Fd,
    pub stdin: Option<Fd>,
    pub stdout: Option<Fd>,
    pub stderr: Option<Fd>,
    pub close_in_child: [Option<Fd>; 3],
    /// The run's cgroup's v1 `tasks` files, opened by vbench: init moves itself in through them
    /// (see [`init`]).
    pub cgroup_tasks: Vec<Fd>,
}

/// Everything the child needs, prepared before the clone.
pub struct Spec {
    cpu: Option<libc::cpu_set_t>,
    user: bool,
    mount: bool,
    pid: bool,
    uts: bool,
    net: bool,
    cgroup: bool,
    time: bool,
    go: Fd,
    go_w: Fd,
    report: Fd,
    stdin: Option<Fd>,
    stdout: Option<Fd>,
    stderr: Option<Fd>,
    close_in_child: [Option<Fd>; 3],
    cgroup_tasks: Vec<Fd>,
    stage: CString,
    stage_opts: CString,
    dirs: [CString; 4],
    dev_targets: [CString; 3],
    dev_sources: [CString; 3],
    prog_staged: Option<CString>,
    /// /proc paths made read-only and hidden ([`PROC_READONLY`], [`PROC_MASKED`]).
    proc_readonly: Vec<CString>,
    proc_masked: Vec<CString>,
    steps: Vec<Planned>,
    workdir: Option<CString>,
    workdir_what: String,
    old_root: CString,
    old_proc: CString,
    proc_: CString,
    root: CString,
    timens_path: CString,
    timens: Vec<u8>,
    hostname: Vec<u8>,
    exec_path: CString,
    bytes_ptr: *const u8,
    bytes_len: usize,
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    seccomp: [BpfProgram; 2],
    /// The payload's stack until it execs (it shares init's memory).
    payload_stack: Vec<u8>,
    cap_last: u32,
    keep_caps: u64,
}

fn c(s: impl Into<Vec<u8>>) -> Result<CString, BackendError> {
    CString::new(s).map_err(|_| BackendError::Invalid("a path or argument has a NUL byte".into()))
}

impl Spec {
    pub fn new(i: SpecInput) -> Result<Spec, BackendError> {
        let cfg = i.cfg;
        let base = std::path::Path::new(i.program_name)
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| b"program".to_vec());
        let has = |n| cfg.namespaces.contains(&n);
        let plan = if has(Namespace::Mount) {
            Some(root::plan(&root::Input {
                rootfs: &cfg.rootfs,
                volumes: &cfg.volumes,
                workdir: cfg.workdir.as_deref(),
                program: i.program_path,
                base: &base,
                args: i.args,
            })?)
        } else {
            if !cfg.volumes.is_empty() || matches!(cfg.rootfs, root::Rootfs::Dir(_)) {
                return Err(BackendError::Invalid(
                    "volumes (-v) and --rootfs DIR need the container's own mount namespace (add mnt to --container-ns)".into(),
                ));
            }
            None
        };
        let prog_in_root = match &plan {
            Some(p) => p.exec_path.as_os_str().as_bytes().to_vec(),
            None => [b"/".as_slice(), &base].concat(),
        };
        let stage = plan
            .as_ref()
            .map_or(STAGE, |p| p.stage.as_str())
            .to_string();
        let staged = |p: &str| c(format!("{stage}{p}"));
        // argv[0]: the name the user gave (as natively) where the program is at its own path
        let argv0 = match &plan {
            Some(p) if !p.copy_program && matches!(cfg.rootfs, root::Rootfs::Dir(_)) => {
                p.exec_path.as_os_str().as_bytes().to_vec()
            }
            Some(p) if !p.copy_program => i.program_name.as_bytes().to_vec(),
            _ => base.clone(),
        };
        let mut argv_c = vec![c(argv0)?];
        for a in i.args {
            argv_c.push(c(a.as_bytes())?);
        }
        let envp_c = environment(cfg)?;
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let mut prog_staged = stage.as_bytes().to_vec();
        prog_staged.extend_from_slice(&prog_in_root);
        let copy = plan.as_ref().is_none_or(|p| p.copy_program);
        let workdir = match (&plan, &cfg.workdir) {
            (Some(p), _) => Some(p.workdir.clone()),
            (None, w) => w.clone(),
        };
        let workdir_what = match &workdir {
            Some(w) => format!("the working directory {} in the container", w.display()),
            None => String::new(),
        };
        let steps = plan.map(|p| p.steps).unwrap_or_default();
        // only where container root is vbench's own uid: the minimal root stays as it was
        let own_uid = cfg.root_is_own_uid();
        let protected = |paths: &[&str]| -> Result<Vec<CString>, BackendError> {
            if own_uid && has(Namespace::Mount) {
                paths.iter().map(|p| c(*p)).collect()
            } else {
                Ok(Vec::new())
            }
        };
        let cap_last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        Ok(Spec {
            cpu: i.cpu,
            user: has(Namespace::User),
            mount: has(Namespace::Mount),
            pid: has(Namespace::Pid),
            uts: has(Namespace::Uts),
            net: has(Namespace::Net),
            cgroup: has(Namespace::Cgroup),
            time: has(Namespace::Time),
            go: i.go,
            go_w: i.go_w,
            report: i.report,
            stdin: i.stdin,
            stdout: i.stdout,
            stderr: i.stderr,
            close_in_child: i.close_in_child,
            cgroup_tasks: i.cgroup_tasks,
            stage: c(stage.as_str())?,
            stage_opts: c(format!(
                "mode=755,size={}",
                (i.bytes.len() as u64 + (64 << 20))
            ))?,
            dirs: [
                staged("/proc")?,
                staged("/dev")?,
                staged("/old_root")?,
                staged("/tmp")?,
            ],
            dev_targets: [
                staged("/dev/null")?,
                staged("/dev/zero")?,
                staged("/dev/urandom")?,
            ],
            dev_sources: [c("/dev/null")?, c("/dev/zero")?, c("/dev/urandom")?],
            prog_staged: copy.then(|| c(prog_staged)).transpose()?,
            proc_readonly: protected(&PROC_READONLY)?,
            proc_masked: protected(&PROC_MASKED)?,
            steps,
            workdir: workdir.map(|w| c(w.as_os_str().as_bytes())).transpose()?,
            workdir_what,
            old_root: c("/old_root")?,
            old_proc: c("/old_root/proc")?,
            proc_: c("/proc")?,
            root: c("/")?,
            timens_path: c("/proc/self/timens_offsets")?,
            timens: format!("monotonic {0} 0\nboottime {0} 0\n", cfg.time_offset_secs).into_bytes(),
            hostname: cfg.hostname.as_bytes().to_vec(),
            exec_path: if has(Namespace::Mount) {
                c(prog_in_root)?
            } else {
                c(i.exec_fallback.as_os_str().as_bytes())?
            },
            bytes_ptr: i.bytes.as_ptr(),
            bytes_len: i.bytes.len(),
            argv: ptrs(&argv_c),
            _argv: argv_c,
            envp: ptrs(&envp_c),
            _envp: envp_c,
            seccomp: seccomp_programs()?,
            payload_stack: vec![0; 256 << 10],
            cap_last,
            keep_caps: KEEP_CAPS.iter().fold(0u64, |m, c| m | 1 << c),
        })
    }
}

/// Writes `parts` to the report pipe (no allocation).
unsafe fn say(s: &Spec, parts: &[&[u8]]) {
    for p in parts {
        // SAFETY: writing a valid slice to a pipe fd we hold.
        unsafe { libc::write(s.report, p.as_ptr().cast(), p.len()) };
    }
}

fn fmt_u64(mut v: u64, buf: &mut [u8; 24]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Reports a failed step with errno and exits.
unsafe fn fail(s: &Spec, what: &str) -> ! {
    // SAFETY: reading errno of this thread.
    let errno = unsafe { *libc::__errno_location() };
    let mut buf = [0u8; 24];
    // SAFETY: strerror returns a pointer to a NUL-terminated static string.
    let msg = unsafe { std::ffi::CStr::from_ptr(libc::strerror(errno)) };
    // SAFETY: see `say`.
    unsafe {
        say(
            s,
            &[
                b"E",
                what.as_bytes(),
                b": ",
                msg.to_bytes(),
                b" (errno ",
                fmt_u64(errno as u64, &mut buf),
                b")\n",
            ],
        );
        libc::_exit(127)
    }
}

/// `fail`s when a system call returned a negative value; used only inside the child's unsafe
/// blocks.
macro_rules! check {
    ($s:expr, $e:expr, $what:expr) => {
        if $e < 0 {
            fail($s, $what)
        }
    };
}

/// Reports that init reached phase `tag` of the start-up now (CLOCK_MONOTONIC, ns; init itself
/// stays in vbench's time namespace).
unsafe fn stamp(s: &Spec, tag: &[u8]) {
    let mut buf = [0u8; 24];
    // SAFETY: see `say`.
    unsafe { say(s, &[tag, fmt_u64(monotonic_ns(), &mut buf), b"\n"]) };
}

/// CLOCK_MONOTONIC now, nanoseconds (in the caller's time namespace).
pub(super) fn monotonic_ns() -> u64 {
    crate::session::clock_ns(libc::CLOCK_MONOTONIC)
}

/// Container init. Never returns.
///
/// # Safety
/// Must be called only in the child of a fork-like clone, with `s` built for it.
pub unsafe fn init(s: &Spec) -> ! {
    // SAFETY: (whole function) raw system calls on fds and NUL-terminated strings prepared in
    // `s`, in a single-threaded child that owns its copy of the address space.
    unsafe {
        for fd in s.close_in_child.iter().flatten() {
            libc::close(*fd);
        }
        libc::close(s.go_w);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // Into the run's cgroup (v1), while vbench writes the id maps. Moving one's own single
        // thread (`0` to `tasks`) is the one migration the kernel makes without its global
        // threadgroup lock, whose write side waits for an RCU grace period: 5-18 ms when vbench
        // moved the process in, on a machine whose previous migration was long enough ago. The
        // files were opened by vbench (root), whose credentials the kernel checks.
        for fd in &s.cgroup_tasks {
            if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(s, "moving container init into the run's cgroup");
            }
            libc::close(*fd);
        }
        stamp(s, b"C");
        let mut b = 0u8;
        if libc::read(s.go, (&mut b as *mut u8).cast(), 1) != 1 {
            libc::_exit(1); // vbench gave up on us (or died)
        }
        libc::close(s.go);
        stamp(s, b"G");
        if s.user {
            // Become the namespace's root (host uid `id_base`): files we create must be owned
            // by an id that is mapped in the namespace.
            // Raw syscalls: glibc's wrappers broadcast the change to every thread it believes the
            // process has (a copy of the parent's thread list after our raw clone) and wait for
            // them forever.
            check!(
                s,
                libc::syscall(libc::SYS_setresgid, 0, 0, 0) as i32,
                "setresgid(0) in the user namespace"
            );
            check!(
                s,
                libc::syscall(libc::SYS_setresuid, 0, 0, 0) as i32,
                "setresuid(0) in the user namespace"
            );
            // Changing ids made us non-dumpable, which gives /proc/self to the host's root.
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        }
        if s.cgroup {
            check!(
                s,
                libc::unshare(libc::CLONE_NEWCGROUP),
                "unshare(CLONE_NEWCGROUP)"
            );
        }
        if s.mount {
            build_root(s);
        }
        if s.net {
            loopback_up(s);
        }
        if let Some(w) = &s.workdir {
            check!(s, libc::chdir(w.as_ptr()), &s.workdir_what);
        }
        if s.uts {
            check!(
                s,
                libc::sethostname(s.hostname.as_ptr().cast(), s.hostname.len()),
                "sethostname"
            );
        }
        if s.time {
            check!(s, libc::unshare(CLONE_NEWTIME), "unshare(CLONE_NEWTIME)");
            let fd = libc::open(s.timens_path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check!(s, fd, "open /proc/self/timens_offsets");
            let n = libc::write(fd, s.timens.as_ptr().cast(), s.timens.len());
            check!(s, n as i32, "writing the time namespace's offsets");
            libc::close(fd);
        }
        stamp(s, b"R");
        for (from, to) in [(s.stdin, 0), (s.stdout, 1), (s.stderr, 2)] {
            if let Some(fd) = from {
                check!(s, libc::dup2(fd, to), "dup2");
                libc::close(fd);
            }
        }
        // The payload: a vfork-like clone on a stack of its own (init's memory shared until
        // the payload execs, and init waits until then): no copy of init's page tables, which
        // are a copy of all of vbench's. No libc fork, whose atfork handlers could take locks.
        let top = s.payload_stack.as_ptr().add(s.payload_stack.len()) as usize & !15;
        let child = libc::clone(
            payload_entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            s as *const Spec as *mut libc::c_void,
        );
        check!(s, child, "fork of the payload");
        // Init keeps no copy of the output pipes: the payload alone holds them.
        libc::close(1);
        libc::close(2);
        let mut buf = [0u8; 24];
        loop {
            let mut st = 0;
            let w = libc::waitpid(-1, &mut st, 0);
            if w < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(126);
            }
            if w == child {
                if libc::WIFSIGNALED(st) {
                    let sig = libc::WTERMSIG(st);
                    say(s, &[b"K", fmt_u64(sig as u64, &mut buf), b"\n"]);
                    libc::_exit(128 + sig);
                }
                let code = libc::WEXITSTATUS(st);
                say(s, &[b"X", fmt_u64(code as u64, &mut buf), b"\n"]);
                libc::_exit(code);
            }
        }
    }
}

/// The minimal root: a tmpfs holding the program, a fresh /proc and three device nodes bound
/// from the host, entered with pivot_root; the old root is detached.
unsafe fn build_root(s: &Spec) {
    // SAFETY: (whole function) as in `init`.
    unsafe {
        let null = std::ptr::null::<libc::c_char>();
        check!(
            s,
            libc::mount(
                null,
                s.root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            "making / private"
        );
        check!(
            s,
            libc::mount(
                c"tmpfs".as_ptr(),
                s.stage.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                s.stage_opts.as_ptr().cast()
            ),
            "mounting the root tmpfs"
        );
        for (i, d) in s.dirs.iter().enumerate() {
            let mode = if i == 3 { 0o1777 } else { 0o755 };
            check!(s, libc::mkdir(d.as_ptr(), mode), "mkdir in the new root");
        }
        for (t, src) in s.dev_targets.iter().zip(&s.dev_sources) {
            let fd = libc::open(
                t.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o666,
            );
            check!(s, fd, "creating a /dev node's mount point");
            libc::close(fd);
            check!(
                s,
                libc::mount(
                    src.as_ptr(),
                    t.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null()
                ),
                "binding a /dev node"
            );
        }
        if let Some(prog) = &s.prog_staged {
            let fd = libc::open(
                prog.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o755,
            );
            check!(s, fd, "creating the program in the new root");
            let mut off = 0;
            while off < s.bytes_len {
                let n = libc::write(fd, s.bytes_ptr.add(off).cast(), s.bytes_len - off);
                check!(s, n as i32, "writing the program into the new root");
                off += n as usize;
            }
            libc::close(fd);
        }
        for p in &s.steps {
            run_step(s, p);
        }
        check!(s, libc::chdir(s.stage.as_ptr()), "chdir to the new root");
        check!(
            s,
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c"old_root".as_ptr()) as i32,
            "pivot_root"
        );
        check!(s, libc::chdir(s.root.as_ptr()), "chdir /");
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(
            c"proc".as_ptr(),
            s.proc_.as_ptr(),
            c"proc".as_ptr(),
            flags,
            std::ptr::null(),
        ) < 0
        {
            // Without a pid namespace of our own the kernel refuses a new proc instance in a user
            // namespace; bind the host's instead (it shows host processes, as configured).
            if s.pid {
                fail(s, "mounting /proc");
            }
            check!(
                s,
                libc::mount(
                    s.old_proc.as_ptr(),
                    s.proc_.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null()
                ),
                "binding the host's /proc"
            );
        }
        check!(
            s,
            libc::umount2(s.old_root.as_ptr(), libc::MNT_DETACH),
            "detaching the old root"
        );
        check!(s, libc::rmdir(s.old_root.as_ptr()), "removing /old_root");
        for p in &s.proc_readonly {
            protect(s, p, false);
        }
        for p in &s.proc_masked {
            protect(s, p, true);
        }
    }
}

/// What Docker makes read-only in /proc: the kernel's global settings. Where the container's
/// root is vbench's own user (the host root, a root directory, volumes), a writable
/// /proc/sys/kernel/core_pattern would let the program run a command of its choice on the
/// host; elsewhere container root is an unused host uid, which may not write them anyway.
const PROC_READONLY: [&str; 6] = [
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
    "/proc/asound",
];

/// What Docker hides in /proc (an empty read-only tmpfs over a directory, /dev/null over a
/// file): what the kernel shows of itself.
const PROC_MASKED: [&str; 7] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/acpi",
    "/proc/scsi",
    "/proc/latency_stats",
];

/// Makes `path` read-only (bound over itself) or hides it; a path this kernel lacks is fine.
unsafe fn protect(s: &Spec, path: &CString, mask: bool) {
    // SAFETY: (whole function) as in `init`.
    unsafe {
        let null = std::ptr::null::<libc::c_char>();
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(path.as_ptr(), &mut st) < 0 {
            return;
        }
        let dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let keep = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let r = if mask && dir {
            libc::mount(
                c"tmpfs".as_ptr(),
                path.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | keep,
                c"size=0".as_ptr().cast(),
            )
        } else if mask {
            libc::mount(
                c"/dev/null".as_ptr(),
                path.as_ptr(),
                null,
                libc::MS_BIND,
                std::ptr::null(),
            )
        } else {
            let r = libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            );
            if r < 0 {
                r
            } else {
                libc::mount(
                    null,
                    path.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep,
                    std::ptr::null(),
                )
            }
        };
        if r < 0 {
            say(s, &[b"Eprotecting ", path.as_bytes(), b"\n"]);
            libc::_exit(127);
        }
    }
}

/// Brings the new network namespace's loopback interface up, as Docker does: a program may
/// talk to itself over 127.0.0.1 (the namespace has no other interface).
unsafe fn loopback_up(s: &Spec) {
    // SAFETY: (whole function) a socket and two ioctls on a zeroed ifreq on this stack.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check!(s, fd, "a socket to bring up the loopback interface");
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *b as libc::c_char;
        }
        check!(
            s,
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr),
            "reading the loopback interface's flags"
        );
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check!(
            s,
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr),
            "bringing the loopback interface up"
        );
        libc::close(fd);
    }
}

/// Carries out one step of the root's plan ([`root::plan`]).
unsafe fn run_step(s: &Spec, p: &Planned) {
    // SAFETY: (whole function) as in `init`.
    unsafe {
        let exists = || *libc::__errno_location() == libc::EEXIST;
        match &p.step {
            Step::Dir { path, mode } => {
                if libc::mkdir(path.as_ptr(), *mode) < 0 && !exists() {
                    fail(s, &p.what);
                }
            }
            Step::File { path } => {
                if libc::mknod(path.as_ptr(), libc::S_IFREG | 0o644, 0) < 0 && !exists() {
                    fail(s, &p.what);
                }
            }
            Step::Symlink { target, path } => {
                check!(s, libc::symlink(target.as_ptr(), path.as_ptr()), &p.what);
            }
            Step::Write { path, data } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                check!(s, fd, &p.what);
                if libc::write(fd, data.as_ptr().cast(), data.len()) != data.len() as isize {
                    fail(s, &p.what);
                }
                libc::close(fd);
            }
            Step::Bind { src, dst, ro } => {
                let null = std::ptr::null::<libc::c_char>();
                check!(
                    s,
                    libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        null,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null()
                    ),
                    &p.what
                );
                if let Some(keep) = ro {
                    check!(
                        s,
                        libc::mount(
                            null,
                            dst.as_ptr(),
                            null,
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep,
                            std::ptr::null()
                        ),
                        &p.what
                    );
                }
            }
        }
    }
}

/// The payload's environment: vbench's own (a user's program, as natively) or a fixed one
/// (vbench's workloads), then the `-e` settings.
fn environment(cfg: &ContainerConfig) -> Result<Vec<CString>, BackendError> {
    let mut env: Vec<(OsString, OsString)> = if cfg.inherit_env {
        std::env::vars_os().collect()
    } else {
        vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), "/".into()),
        ]
    };
    for kv in &cfg.env {
        let (k, v) = match kv.as_bytes().iter().position(|b| *b == b'=') {
            Some(i) => (
                OsString::from(std::ffi::OsStr::from_bytes(&kv.as_bytes()[..i])),
                OsString::from(std::ffi::OsStr::from_bytes(&kv.as_bytes()[i + 1..])),
            ),
            None => continue,
        };
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    env.into_iter()
        .map(|(k, v)| c([k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect()
}

/// The payload's entry on its own stack: `arg` is init's [`Spec`].
extern "C" fn payload_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: init passes its own Spec, alive (init waits, CLONE_VFORK) until the payload
    // execs or exits, which `payload` always does.
    unsafe { payload(&*(arg as *const Spec)) }
}

/// The payload: drop privileges, install seccomp, exec. Never returns.
unsafe fn payload(s: &Spec) -> ! {
    // SAFETY: (whole function) as in `init`.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if let Some(set) = &s.cpu {
            check!(
                s,
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set),
                "pinning the program to its CPU (--pin; is the CPU in --cpuset?)"
            );
        }
        for cap in 0..=s.cap_last {
            if s.keep_caps & (1 << cap) == 0 {
                check!(
                    s,
                    libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0),
                    "dropping a capability from the bounding set"
                );
            }
        }
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let lo = s.keep_caps as u32;
        let hi = (s.keep_caps >> 32) as u32;
        let mut hdr = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [
            Data {
                effective: lo,
                permitted: lo,
                inheritable: 0,
            },
            Data {
                effective: hi,
                permitted: hi,
                inheritable: 0,
            },
        ];
        check!(
            s,
            libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) as i32,
            "capset"
        );
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        check!(
            s,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "no_new_privs"
        );
        for prog in &s.seccomp {
            if seccompiler::apply_filter(prog).is_err() {
                fail(s, "installing the seccomp filter");
            }
        }
        let mut buf = [0u8; 24];
        // still in init's time namespace: a CLONE_VM child enters the new one at its exec
        let t = monotonic_ns();
        say(s, &[b"S", fmt_u64(t, &mut buf), b"\n"]);
        libc::execve(s.exec_path.as_ptr(), s.argv.as_ptr(), s.envp.as_ptr());
        fail(s, "execve of the program")
    }
}
