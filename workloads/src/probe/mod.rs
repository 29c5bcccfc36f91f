//! The probes of `vbench_workloads::probes`: each makes one escape or limit attempt with raw
//! system calls, or executes one sensitive instruction, and prints one `VBENCH-PROBE` line.
//!
//! Harmlessness when run as root on the host (the native control): nothing here changes the
//! host. Privileged writes are replaced by a permission check that has no effect: sysctl and
//! release_agent files are only *opened* for writing; mount moves a source that does not
//! exist; reboot and kexec_load get invalid magic/flags (the kernel checks the capability
//! first, then rejects the arguments); init_module gets an empty image; ptrace only seizes
//! (the tracee is never stopped and is detached when the probe exits); the device node and the
//! big file are made in the harness's scratch directory and removed; forked children are
//! killed and reaped before the probe ends.

use crate::sys::{self, syscall6};
use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use vbench_workloads::probes::{write_line, Probe, ProbeOutcome};

/// The most `key=value` arguments a probe accepts.
pub const MAX_ARGS: usize = 8;

const MIB: usize = 1 << 20;

// ---- system calls ----

mod nr {
    pub const OPEN: usize = 2;
    pub const SHMAT: usize = 30;
    pub const NANOSLEEP: usize = 35;
    pub const SOCKET: usize = 41;
    pub const CONNECT: usize = 42;
    pub const FORK: usize = 57;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const UNAME: usize = 63;
    pub const SHMDT: usize = 67;
    pub const READLINK: usize = 89;
    pub const PTRACE: usize = 101;
    pub const PRCTL: usize = 157;
    pub const MOUNT: usize = 165;
    pub const REBOOT: usize = 169;
    pub const INIT_MODULE: usize = 175;
    pub const GETDENTS64: usize = 217;
    pub const KEXEC_LOAD: usize = 246;
    pub const MKNODAT: usize = 259;
    pub const UNLINKAT: usize = 263;
    pub const RT_SIGACTION: usize = 13;
    pub const NAME_TO_HANDLE_AT: usize = 303;
    pub const OPEN_BY_HANDLE_AT: usize = 304;
}

/// A raw system call: the result or the errno.
fn call(n: usize, a: [usize; 6]) -> Result<usize, usize> {
    // SAFETY: every caller passes arguments valid for system call `n`: pointers to live
    // buffers of the sizes given, NUL-terminated paths, or plain integers.
    let r = unsafe { syscall6(n, a) };
    if (-4095..0).contains(&r) {
        Err(r.unsigned_abs())
    } else {
        Ok(r as usize)
    }
}

fn errno(e: usize) -> &'static str {
    match e {
        3 => "ESRCH",
        8 => "ENOEXEC",
        17 => "EEXIST",
        27 => "EFBIG",
        43 => "EIDRM",
        93 => "EPROTONOSUPPORT",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        101 => "ENETUNREACH",
        111 => "ECONNREFUSED",
        116 => "ESTALE",
        _ => sys::errno_name(e),
    }
}

/// A NUL-terminated copy of a path (paths of at most 255 bytes).
struct CPath([u8; 256]);

impl CPath {
    fn new(parts: &[&str]) -> Option<CPath> {
        let mut b = [0u8; 256];
        let mut n = 0;
        for p in parts {
            if n + p.len() >= b.len() || p.as_bytes().contains(&0) {
                return None;
            }
            b[n..n + p.len()].copy_from_slice(p.as_bytes());
            n += p.len();
        }
        Some(CPath(b))
    }

    fn ptr(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

fn open(path: &CPath, flags: usize) -> Result<usize, usize> {
    call(
        nr::OPEN,
        [path.ptr(), flags | sys::O_CLOEXEC, 0o600, 0, 0, 0],
    )
}

/// Reads a whole (small) file into `buf`; returns the bytes read.
fn read_file<'b>(path: &CPath, buf: &'b mut [u8]) -> Result<&'b [u8], usize> {
    let fd = open(path, sys::O_RDONLY)?;
    let mut n = 0;
    while n < buf.len() {
        match sys::read(fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.errno == 4 => {}
            Err(e) => {
                let _ = sys::close(fd);
                return Err(e.errno);
            }
        }
    }
    let _ = sys::close(fd);
    Ok(&buf[..n])
}

// ---- output ----

/// A fixed-size text buffer; what does not fit is dropped.
struct Text {
    len: usize,
    buf: [u8; 768],
}

impl Text {
    fn new() -> Text {
        Text {
            len: 0,
            buf: [0; 768],
        }
    }

    fn from_fmt(a: fmt::Arguments<'_>) -> Text {
        let mut t = Text::new();
        let _ = t.write_fmt(a);
        t
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// A verdict and its detail.
struct Report {
    outcome: ProbeOutcome,
    detail: Text,
}

fn report(outcome: ProbeOutcome, detail: fmt::Arguments<'_>) -> Report {
    let mut t = Text::new();
    let _ = t.write_fmt(detail);
    Report { outcome, detail: t }
}

macro_rules! rep {
    ($o:ident, $($a:tt)*) => { report(ProbeOutcome::$o, format_args!($($a)*)) };
}

/// Escaped when the call succeeded, contained when it failed with an errno that means "denied"
/// (EPERM, EACCES, ENOENT, EROFS, ENXIO, ENODEV), an error otherwise.
fn verdict(what: &str, r: Result<usize, usize>) -> Report {
    match r {
        Ok(_) => rep!(Escaped, "{what}:ok"),
        Err(e @ (1 | 2 | 6 | 13 | 19 | 30)) => rep!(Contained, "{what}:{}", errno(e)),
        Err(e) => rep!(Error, "{what}:{}", errno(e)),
    }
}

fn print(p: &Probe, r: &Report) {
    let mut o = crate::Out::new(crate::Out::STDOUT);
    let _ = write_line(&mut o, p.name, r.outcome, r.detail.as_str());
    let _ = o.flush();
}

// ---- arguments ----

struct Args<'a>(&'a [&'a str]);

impl<'a> Args<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().rev().find_map(|a| {
            let (k, v) = a.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

fn num(s: &str) -> Option<u64> {
    vbench_workloads::parse_int(s)
}

/// Runs probe `p` with its `key=value` arguments, prints its line and exits 0.
pub fn run(p: &'static Probe, args: &[&str]) -> ! {
    let a = Args(args);
    for k in p.keys {
        if a.get(k).is_none() {
            print(p, &rep!(Error, "missing_argument_{k}"));
            sys::exit_group(0);
        }
    }
    let r = match p.name {
        "proc_list" => proc_list(&a),
        "signal_host" => signal_host(&a),
        "hostname" => hostname(&a),
        "mounts" => mounts(&a),
        "tcp_loopback" => tcp_loopback(&a),
        "net_ifaces" => net_ifaces(&a),
        "sysv_shm" => sysv_shm(&a),
        "host_root" => host_root(),
        "cgroup_ns" => same_ns(&a, "cgroup"),
        "pid_ns" => same_ns(&a, "pid"),
        "ipc_ns" => same_ns(&a, "ipc"),
        "time_ns" => time_ns(&a),
        "core_pattern" => open_for_write("/proc/sys/kernel/core_pattern"),
        "release_agent" => open_for_write(a.get("path").unwrap_or("")),
        "mount" => mount(),
        "mknod_block" => mknod_block(&a),
        "dev_kvm" => verdict("open", open_str("/dev/kvm", 2)),
        "dev_mem" => verdict("open", open_str("/dev/mem", sys::O_RDONLY)),
        "init_module" => permitted_unless_eperm(
            "init_module",
            call(nr::INIT_MODULE, [0, 0, c"".as_ptr() as usize, 0, 0, 0]),
        ),
        "ptrace_host" => ptrace_host(&a),
        "open_by_handle" => open_by_handle(),
        // magic1 and magic2 are both wrong: the kernel checks CAP_SYS_BOOT, then the magic.
        "reboot" => permitted_unless_eperm("reboot", call(nr::REBOOT, [0, 0, 0, 0, 0, 0])),
        // nr_segments 0 would unload a loaded image: use 0xffff (> 16) and an invalid flag.
        "kexec_load" => permitted_unless_eperm(
            "kexec_load",
            call(nr::KEXEC_LOAD, [0, 0xffff, 0, 0x8000, 0, 0]),
        ),
        "raw_socket" => verdict("socket", call(nr::SOCKET, [2, 3 | 0o2000000, 1, 0, 0, 0])),
        "host_file" => host_file(&a, ""),
        "proc_root" => host_file(&a, "root"),
        "memory" => memory(&a),
        "fork_bomb" => fork_bomb(&a),
        "cpu_quota" => cpu_quota(&a),
        "stdout_flood" => stdout_flood(p),
        "file_size" => file_size(&a),
        "smc" => smc(),
        "hidden_syscall" => hidden_syscall(),
        "mid_insn_jump" => mid_insn_jump(),
        "int80" => int80(),
        "far_jump32" => far_jump32(),
        "popf_tf" => popf_tf(),
        "sgdt" => sgdt_sidt(false),
        "sidt" => sgdt_sidt(true),
        "sldt" => sldt_str(false),
        "str" => sldt_str(true),
        "smsw" => smsw(),
        "pushf" => pushf(),
        "popf" => popf(),
        "lar" => lar_lsl(false),
        "lsl" => lar_lsl(true),
        "verr" => verr(),
        "mov_sreg" => mov_sreg(),
        "push_pop_sreg" => push_pop_sreg(),
        "far_call" => far_call(),
        "int3" => int3(),
        "cpuid" => cpuid(),
        "rdmsr" => privileged("rdmsr"),
        "hlt" => privileged("hlt"),
        "cli" => privileged("cli"),
        "port_in" => privileged("port_in"),
        "never_exits" => never_exits(),
        "rdtsc" => rdtsc(),
        "wild_read" => wild_read(),
        "efault_read" => efault_read(),
        "unknown_msr" => unknown_msr(),
        "huge_mmap" => huge_mmap(),
        other => rep!(Error, "probe_{other}_not_implemented"),
    };
    print(p, &r);
    sys::exit_group(0)
}

fn open_str(path: &str, flags: usize) -> Result<usize, usize> {
    let c = CPath::new(&[path]).ok_or(22usize)?;
    let r = open(&c, flags);
    if let Ok(fd) = r {
        let _ = sys::close(fd);
    }
    r
}

/// For calls given arguments the kernel rejects after its capability check: EPERM means
/// contained, any other error means the check passed.
fn permitted_unless_eperm(what: &str, r: Result<usize, usize>) -> Report {
    match r {
        Err(1) => rep!(Contained, "{what}:EPERM"),
        Err(38) => rep!(Error, "{what}:ENOSYS_not_in_this_kernel"),
        Err(e) => rep!(Escaped, "{what}:{}_after_the_permission_check", errno(e)),
        Ok(v) => rep!(Error, "{what}:unexpectedly_succeeded:{v}"),
    }
}

// ---- visibility ----

fn proc_list(a: &Args<'_>) -> Report {
    let host = a.get("host_pid").unwrap_or("");
    let Some(dir) = CPath::new(&["/proc"]) else {
        return rep!(Error, "path");
    };
    let fd = match open(&dir, sys::O_RDONLY | 0o200000) {
        Ok(fd) => fd,
        Err(e) => return rep!(Contained, "open_/proc:{}", errno(e)),
    };
    let (mut pids, mut seen) = (0u64, false);
    let mut buf = [0u8; 4096];
    loop {
        let n = match call(
            nr::GETDENTS64,
            [fd, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        ) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = sys::close(fd);
                return rep!(Error, "getdents64:{}", errno(e));
            }
        };
        let mut off = 0;
        while off + 19 < n {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
                pids += 1;
                seen |= name == host.as_bytes();
            }
            off += reclen.max(1);
        }
    }
    let _ = sys::close(fd);
    if seen {
        rep!(Escaped, "pids={pids},host_pid_{host}_listed")
    } else {
        rep!(Contained, "pids={pids},host_pid_{host}_absent")
    }
}

fn signal_host(a: &Args<'_>) -> Report {
    let Some(pid) = a.get("host_pid").and_then(num) else {
        return rep!(Error, "bad_host_pid");
    };
    // SIGCONT: delivered like any signal, but a sleeping process just goes on sleeping.
    match call(nr::KILL, [pid as usize, 18, 0, 0, 0, 0]) {
        Ok(_) => rep!(Escaped, "kill({pid},SIGCONT):ok"),
        Err(e) => rep!(Contained, "kill({pid},SIGCONT):{}", errno(e)),
    }
}

fn hostname(a: &Args<'_>) -> Report {
    let mut u = [0u8; 6 * 65];
    if let Err(e) = call(nr::UNAME, [u.as_mut_ptr() as usize, 0, 0, 0, 0, 0]) {
        return rep!(Error, "uname:{}", errno(e));
    }
    let node = &u[65..130];
    let node = &node[..node.iter().position(|&b| b == 0).unwrap_or(65)];
    let node = core::str::from_utf8(node).unwrap_or("?");
    if Some(node) == a.get("hostname") {
        rep!(Escaped, "nodename={node}")
    } else {
        rep!(Contained, "nodename={node}")
    }
}

/// Maps a file of at most 1 MiB: /proc files are read in full.
fn big_buf() -> &'static mut [u8] {
    crate::alloc(MIB)
}

fn mounts(a: &Args<'_>) -> Report {
    let mnt = a.get("mnt").unwrap_or("");
    let Some(p) = CPath::new(&["/proc/self/mountinfo"]) else {
        return rep!(Error, "path");
    };
    let buf = big_buf();
    let text = match read_file(&p, buf) {
        Ok(t) => core::str::from_utf8(t).unwrap_or(""),
        Err(e) => return rep!(Contained, "mountinfo:{}", errno(e)),
    };
    let n = text.lines().count();
    if text.lines().any(|l| l.split(' ').nth(4) == Some(mnt)) {
        rep!(Escaped, "mounts={n},host_mount_{mnt}_visible")
    } else {
        rep!(Contained, "mounts={n},host_mount_{mnt}_absent")
    }
}

fn tcp_loopback(a: &Args<'_>) -> Report {
    let Some(port) = a.get("port").and_then(num).filter(|p| *p < 65536) else {
        return rep!(Error, "bad_port");
    };
    let fd = match call(nr::SOCKET, [2, 1 | 0o2000000, 0, 0, 0, 0]) {
        Ok(fd) => fd,
        Err(e) => return rep!(Contained, "socket:{}", errno(e)),
    };
    let mut sa = [0u8; 16];
    sa[0..2].copy_from_slice(&2u16.to_ne_bytes());
    sa[2..4].copy_from_slice(&(port as u16).to_be_bytes());
    sa[4..8].copy_from_slice(&[127, 0, 0, 1]);
    let r = call(nr::CONNECT, [fd, sa.as_ptr() as usize, 16, 0, 0, 0]);
    let r = match r {
        Ok(_) => {
            let _ = sys::write(fd, b"vbench-probe\n");
            rep!(Escaped, "connect(127.0.0.1:{port}):ok")
        }
        Err(e) => rep!(Contained, "connect(127.0.0.1:{port}):{}", errno(e)),
    };
    let _ = sys::close(fd);
    r
}

fn net_ifaces(a: &Args<'_>) -> Report {
    let want = a.get("iface").unwrap_or("");
    let Some(p) = CPath::new(&["/proc/net/dev"]) else {
        return rep!(Error, "path");
    };
    let buf = big_buf();
    let text = match read_file(&p, buf) {
        Ok(t) => core::str::from_utf8(t).unwrap_or(""),
        Err(e) => return rep!(Contained, "/proc/net/dev:{}", errno(e)),
    };
    let mut names = Text::new();
    let mut seen = false;
    for l in text.lines().skip(2) {
        if let Some((name, _)) = l.split_once(':') {
            let name = name.trim();
            let _ = write!(names, "{}{name}", if names.len == 0 { "" } else { "," });
            seen |= name == want;
        }
    }
    if seen {
        rep!(Escaped, "ifaces={}", names.as_str())
    } else {
        rep!(Contained, "ifaces={}", names.as_str())
    }
}

fn sysv_shm(a: &Args<'_>) -> Report {
    let (Some(id), Some(magic)) = (a.get("shm_id").and_then(num), a.get("magic").and_then(num))
    else {
        return rep!(Error, "bad_shm_id_or_magic");
    };
    const SHM_RDONLY: usize = 0o10000;
    let addr = match call(nr::SHMAT, [id as usize, 0, SHM_RDONLY, 0, 0, 0]) {
        Ok(p) => p,
        Err(e) => return rep!(Contained, "shmat({id}):{}", errno(e)),
    };
    // SAFETY: shmat mapped the segment (at least one page, the harness made 4096 bytes) at
    // addr, readable; the read is volatile because another process may write it.
    let v = unsafe { (addr as *const u64).read_volatile() };
    let _ = call(nr::SHMDT, [addr, 0, 0, 0, 0, 0]);
    if v == magic {
        rep!(Escaped, "shmat({id}):magic_read")
    } else {
        rep!(Contained, "shmat({id}):other_segment_{v:x}")
    }
}

fn field<'t>(text: &'t str, key: &str) -> &'t str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or("")
}

fn host_root() -> Report {
    let (Some(st), Some(map)) = (
        CPath::new(&["/proc/self/status"]),
        CPath::new(&["/proc/self/uid_map"]),
    ) else {
        return rep!(Error, "path");
    };
    let (mut b1, mut b2) = ([0u8; 4096], [0u8; 512]);
    let status = match read_file(&st, &mut b1) {
        Ok(t) => core::str::from_utf8(t).unwrap_or(""),
        Err(e) => return rep!(Contained, "status:{}", errno(e)),
    };
    let map = match read_file(&map, &mut b2) {
        Ok(t) => core::str::from_utf8(t).unwrap_or(""),
        Err(e) => return rep!(Contained, "uid_map:{}", errno(e)),
    };
    let uid = field(status, "Uid:")
        .split_whitespace()
        .next()
        .unwrap_or("?");
    let cap = field(status, "CapEff:");
    let caps = u64::from_str_radix(cap, 16).unwrap_or(0);
    let mut m = map.split_whitespace();
    let (m0, m1, m2) = (m.next(), m.next(), m.next());
    let initial_ns = m0 == Some("0") && m1 == Some("0") && m2 == Some("4294967295");
    let sys_admin = caps & (1 << 21) != 0;
    let detail = format_args!(
        "uid={uid},capeff={cap},uid_map={}:{}:{}",
        m0.unwrap_or("-"),
        m1.unwrap_or("-"),
        m2.unwrap_or("-")
    );
    if uid == "0" && initial_ns && sys_admin {
        report(ProbeOutcome::Escaped, detail)
    } else {
        report(ProbeOutcome::Contained, detail)
    }
}

/// The inode of /proc/self/ns/<ns>, from its link text `name:[inode]`.
fn ns_inode(ns: &str) -> Result<u64, usize> {
    let p = CPath::new(&["/proc/self/ns/", ns]).ok_or(22usize)?;
    let mut b = [0u8; 64];
    let n = call(
        nr::READLINK,
        [p.ptr(), b.as_mut_ptr() as usize, b.len(), 0, 0, 0],
    )?;
    let t = core::str::from_utf8(&b[..n]).unwrap_or("");
    t.split_once('[')
        .and_then(|(_, r)| r.strip_suffix(']'))
        .and_then(num)
        .ok_or(22)
}

fn same_ns(a: &Args<'_>, ns: &str) -> Report {
    let host = a.get("ns").and_then(num).unwrap_or(0);
    let mine = match ns_inode(ns) {
        Ok(i) => i,
        Err(e) => return rep!(Contained, "readlink_ns_{ns}:{}", errno(e)),
    };
    let mut extra = Text::new();
    if ns == "cgroup" {
        let mut b = [0u8; 2048];
        if let Some(p) = CPath::new(&["/proc/self/cgroup"]) {
            if let Ok(t) = read_file(&p, &mut b) {
                let first = core::str::from_utf8(t).unwrap_or("").lines().next();
                let _ = write!(extra, ",cgroup={}", first.unwrap_or(""));
            }
        }
    }
    if mine == host {
        rep!(Escaped, "{ns}:[{mine}]_is_the_host's{}", extra.as_str())
    } else {
        rep!(
            Contained,
            "{ns}:[{mine}]_host_{ns}:[{host}]{}",
            extra.as_str()
        )
    }
}

fn time_ns(a: &Args<'_>) -> Report {
    let host = a.get("boot_s").and_then(num).unwrap_or(0) as i64;
    let boot = match sys::clock_gettime(7) {
        Ok(t) => (t / 1_000_000_000) as i64,
        Err(e) => return rep!(Error, "clock_gettime(BOOTTIME):{}", errno(e.errno)),
    };
    let d = boot - host;
    if d.abs() < 60 {
        rep!(Escaped, "boottime_minus_host={d}s")
    } else {
        rep!(Contained, "boottime_minus_host={d}s")
    }
}

// ---- privilege ----

fn open_for_write(path: &str) -> Report {
    match open_str(path, sys::O_WRONLY) {
        Ok(_) => rep!(Escaped, "open({path},O_WRONLY):ok_nothing_written"),
        Err(e) => verdict("open", Err(e)),
    }
}

fn mount() -> Report {
    // MS_MOVE of a source that does not exist: the kernel checks CAP_SYS_ADMIN (may_mount) and
    // only then looks the source up, so ENOENT means "permitted" and nothing can be moved.
    const MS_MOVE: usize = 8192;
    let src = c"/vbench-probe-no-such-mount-source";
    let r = call(
        nr::MOUNT,
        [
            src.as_ptr() as usize,
            c"/".as_ptr() as usize,
            0,
            MS_MOVE,
            0,
            0,
        ],
    );
    match r {
        Err(2) => rep!(Escaped, "mount(MS_MOVE):ENOENT_after_the_permission_check"),
        Err(e) => rep!(Contained, "mount(MS_MOVE):{}", errno(e)),
        Ok(_) => rep!(Error, "mount(MS_MOVE):unexpectedly_succeeded"),
    }
}

fn mknod_block(a: &Args<'_>) -> Report {
    let Some(p) = CPath::new(&[a.get("dir").unwrap_or(""), "/vbench-probe-blk"]) else {
        return rep!(Error, "path");
    };
    const S_IFBLK: usize = 0o060000;
    let dev = 7 << 8; // loop0, never opened
    match call(
        nr::MKNODAT,
        [sys::AT_FDCWD as usize, p.ptr(), S_IFBLK | 0o600, dev, 0, 0],
    ) {
        Ok(_) => {
            let removed = call(nr::UNLINKAT, [sys::AT_FDCWD as usize, p.ptr(), 0, 0, 0, 0]);
            rep!(
                Escaped,
                "mknod(b_7:0):ok,removed={}",
                if removed.is_ok() { "yes" } else { "NO" }
            )
        }
        Err(e @ (1 | 13 | 30)) => rep!(Contained, "mknod(b_7:0):{}", errno(e)),
        Err(e) => rep!(Error, "mknod(b_7:0):{}", errno(e)),
    }
}

fn ptrace_host(a: &Args<'_>) -> Report {
    let Some(pid) = a.get("host_pid").and_then(num) else {
        return rep!(Error, "bad_host_pid");
    };
    const PTRACE_SEIZE: usize = 0x4206;
    match call(nr::PTRACE, [PTRACE_SEIZE, pid as usize, 0, 0, 0, 0]) {
        Ok(_) => rep!(Escaped, "ptrace(SEIZE,{pid}):ok"),
        Err(e) => rep!(Contained, "ptrace(SEIZE,{pid}):{}", errno(e)),
    }
}

fn open_by_handle() -> Report {
    let Some(root) = CPath::new(&["/"]) else {
        return rep!(Error, "path");
    };
    let mount_fd = match open(&root, sys::O_RDONLY | 0o200000) {
        Ok(fd) => fd,
        Err(e) => return rep!(Contained, "open(/):{}", errno(e)),
    };
    // struct file_handle: handle_bytes, handle_type, then the handle.
    let mut fh = [0u32; 2 + 32];
    fh[0] = 128;
    let mut mount_id = 0i32;
    let how = match call(
        nr::NAME_TO_HANDLE_AT,
        [
            sys::AT_FDCWD as usize,
            root.ptr(),
            fh.as_mut_ptr() as usize,
            &mut mount_id as *mut i32 as usize,
            0,
            0,
        ],
    ) {
        Ok(_) => "name_to_handle_at",
        Err(_) => {
            // The shocker forgery: an ext4 FILEID_INO32_GEN handle of inode 2, the root.
            fh = [0; 34];
            fh[0] = 8;
            fh[1] = 1;
            fh[2] = 2;
            "forged_ino2"
        }
    };
    let r = call(
        nr::OPEN_BY_HANDLE_AT,
        [
            mount_fd,
            fh.as_ptr() as usize,
            sys::O_RDONLY | sys::O_CLOEXEC,
            0,
            0,
            0,
        ],
    );
    let _ = sys::close(mount_fd);
    match r {
        Ok(fd) => {
            let _ = sys::close(fd);
            rep!(Escaped, "open_by_handle_at({how}):ok")
        }
        Err(e) => rep!(Contained, "open_by_handle_at({how}):{}", errno(e)),
    }
}

fn host_file(a: &Args<'_>, via: &str) -> Report {
    let path = a.get("path").unwrap_or("");
    let magic = a.get("magic").unwrap_or("");
    let mut pidbuf = Text::new();
    if !via.is_empty() {
        let _ = write!(pidbuf, "/proc/{}/root", a.get("host_pid").unwrap_or("0"));
    }
    let Some(p) = CPath::new(&[pidbuf.as_str(), path]) else {
        return rep!(Error, "path_too_long");
    };
    let mut b = [0u8; 256];
    match read_file(&p, &mut b) {
        Ok(t) if t.trim_ascii() == magic.as_bytes() => {
            rep!(Escaped, "read({}{path}):magic", pidbuf.as_str())
        }
        Ok(_) => rep!(Contained, "read({}{path}):other_content", pidbuf.as_str()),
        Err(e) => rep!(Contained, "read({}{path}):{}", pidbuf.as_str(), errno(e)),
    }
}

// ---- limits ----

fn memory(a: &Args<'_>) -> Report {
    let mb = a.get("mb").and_then(num).unwrap_or(0) as usize;
    let p = match sys::mmap_anon(mb * MIB, false) {
        Ok(p) => p,
        Err(e) => return rep!(Contained, "mmap({mb}MiB):{}", errno(e.errno)),
    };
    for i in (0..mb * MIB).step_by(4096) {
        // SAFETY: i < mb MiB, inside the fresh private mapping that nothing else refers to.
        unsafe { p.add(i).write_volatile(1) };
        if i % MIB == 0 {
            // Progress on stderr, whose tail the harness keeps: what was touched when a limit
            // killed the probe.
            let mut t = Text::new();
            let _ = writeln!(t, "vbench-probe memory touched_kib={}", i / 1024);
            let _ = sys::write(2, t.as_str().as_bytes());
        }
    }
    rep!(Escaped, "touched={mb}MiB")
}

fn fork_bomb(a: &Args<'_>) -> Report {
    const MAX: usize = 4096;
    let n = (a.get("n").and_then(num).unwrap_or(0) as usize).min(MAX);
    let mut pids = [0usize; MAX];
    let (mut forked, mut err) = (0, 0);
    while forked < n {
        match call(nr::FORK, [0; 6]) {
            Ok(0) => {
                // The child: die with the parent, else sleep 30 s (the parent kills it first).
                let _ = call(nr::PRCTL, [1, 9, 0, 0, 0, 0]);
                let ts = [30i64, 0];
                let _ = call(nr::NANOSLEEP, [ts.as_ptr() as usize, 0, 0, 0, 0, 0]);
                sys::exit_group(0);
            }
            Ok(pid) => {
                pids[forked] = pid;
                forked += 1;
            }
            Err(e) => {
                err = e;
                break;
            }
        }
    }
    for &pid in &pids[..forked] {
        let _ = call(nr::KILL, [pid, 9, 0, 0, 0, 0]);
    }
    for _ in 0..forked {
        let _ = call(nr::WAIT4, [usize::MAX, 0, 0, 0, 0, 0]);
    }
    if forked == n {
        rep!(Escaped, "forked={forked}_of_{n}")
    } else {
        rep!(Contained, "forked={forked}_of_{n},fork:{}", errno(err))
    }
}

/// Spins until CLOCK_MONOTONIC reaches `until_ns`.
fn spin_until(until_ns: u64) {
    let mut x = 1u64;
    while crate::now_ns() < until_ns {
        for _ in 0..10_000 {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// CPU time of the reaped children, nanoseconds (getrusage(RUSAGE_CHILDREN)).
fn children_cpu_ns() -> u64 {
    let mut ru = [0i64; 18];
    let _ = call(98, [usize::MAX, ru.as_mut_ptr() as usize, 0, 0, 0, 0]);
    let tv = |s: i64, us: i64| (s as u64) * 1_000_000_000 + (us as u64) * 1000;
    tv(ru[0], ru[1]) + tv(ru[2], ru[3])
}

fn cpu_quota(a: &Args<'_>) -> Report {
    // SPINNERS processes spin for `ms`: the share of one CPU they got together is what a quota
    // caps. Several, so that a loaded machine still shows the native control above the quota.
    const SPINNERS: usize = 8;
    let ms = a.get("ms").and_then(num).unwrap_or(1000);
    const CPUTIME: usize = 2; // CLOCK_PROCESS_CPUTIME_ID
    let (w0, c0, k0) = (
        crate::now_ns(),
        sys::clock_gettime(CPUTIME).unwrap_or(0),
        children_cpu_ns(),
    );
    let until = w0 + ms * 1_000_000;
    let mut kids = 0;
    for _ in 0..SPINNERS - 1 {
        match call(nr::FORK, [0; 6]) {
            Ok(0) => {
                let _ = call(nr::PRCTL, [1, 9, 0, 0, 0, 0]);
                spin_until(until);
                sys::exit_group(0);
            }
            Ok(_) => kids += 1,
            Err(_) => break,
        }
    }
    spin_until(until);
    for _ in 0..kids {
        let _ = call(nr::WAIT4, [usize::MAX, 0, 0, 0, 0, 0]);
    }
    let w = crate::now_ns();
    let c = sys::clock_gettime(CPUTIME).unwrap_or(0) - c0 + (children_cpu_ns() - k0);
    let permille = c * 1000 / (w - w0).max(1);
    let (whole, frac) = (permille / 1000, permille % 1000);
    // Escaped: clearly more than the quota (by 0.15 of a CPU, capped at 0.9).
    let quota = a.get("quota").and_then(|q| {
        let (i, f) = q.split_once('.').unwrap_or((q, "0"));
        let f3 = (f.bytes().chain(core::iter::repeat(b'0')).take(3)).try_fold(0u64, |v, b| {
            b.is_ascii_digit().then(|| v * 10 + u64::from(b - b'0'))
        })?;
        Some(num(i)? * 1000 + f3)
    });
    let Some(quota) = quota else {
        return rep!(Error, "bad_quota");
    };
    let outcome = if permille >= (quota + 150).min(900) {
        ProbeOutcome::Escaped
    } else {
        ProbeOutcome::Contained
    };
    report(
        outcome,
        format_args!(
            "share={whole}.{frac:03},cpu_ns={c},wall_ns={},processes={}",
            w - w0,
            kids + 1
        ),
    )
}

fn stdout_flood(p: &Probe) -> ! {
    // The result line first, then the flood: the harness keeps the head of stdout only.
    print(p, &rep!(Observed, "flood_of_104857600_bytes_follows"));
    let mut line = [b'x'; 4096];
    line[4095] = b'\n';
    for _ in 0..(100 * MIB / 4096) {
        if sys::write(1, &line).is_err() {
            sys::exit_group(1);
        }
    }
    sys::exit_group(0)
}

fn ignore_signal(sig: usize) {
    let act = [1usize, 0, 0, 0]; // SIG_IGN, no flags, no restorer, empty mask
    let _ = call(nr::RT_SIGACTION, [sig, act.as_ptr() as usize, 0, 8, 0, 0]);
}

fn file_size(a: &Args<'_>) -> Report {
    let mb = a.get("mb").and_then(num).unwrap_or(0) as usize;
    let Some(p) = CPath::new(&[a.get("dir").unwrap_or(""), "/vbench-probe-big"]) else {
        return rep!(Error, "path");
    };
    ignore_signal(25); // SIGXFSZ: see EFBIG instead of dying
    const O_CREAT_EXCL_TRUNC: usize = 0o100 | 0o200 | 0o1000;
    let fd = match open(&p, sys::O_WRONLY | O_CREAT_EXCL_TRUNC) {
        Ok(fd) => fd,
        Err(e @ (1 | 2 | 13 | 30 | 38)) => return rep!(Contained, "create:{}", errno(e)),
        Err(e) => return rep!(Error, "create:{}", errno(e)),
    };
    let chunk = [0x5au8; 65536];
    let (mut written, mut err) = (0usize, 0usize);
    while written < mb * MIB {
        match sys::write(fd, &chunk) {
            Ok(n) => written += n,
            Err(e) if e.errno == 4 => {}
            Err(e) => {
                err = e.errno;
                break;
            }
        }
    }
    let _ = sys::close(fd);
    let _ = call(nr::UNLINKAT, [sys::AT_FDCWD as usize, p.ptr(), 0, 0, 0, 0]);
    if err == 0 {
        rep!(Escaped, "wrote={}MiB", written / MIB)
    } else {
        rep!(
            Contained,
            "wrote={}KiB,write:{}",
            written / 1024,
            errno(err)
        )
    }
}

// ---- signals: traps become observations ----

/// Where a trapped instruction resumes (0: let the signal kill the probe).
static RESUME: AtomicUsize = AtomicUsize::new(0);
/// The last signal caught, its si_code and fault address.
static SIGNO: AtomicUsize = AtomicUsize::new(0);
static SICODE: AtomicUsize = AtomicUsize::new(0);
static TRAPS: AtomicUsize = AtomicUsize::new(0);

global_asm!(
    ".globl vbench_probe_restorer",
    "vbench_probe_restorer:",
    "mov eax, 15", // rt_sigreturn
    "syscall",
    "ud2",
);

extern "C" {
    fn vbench_probe_restorer();
}

/// The handler of SIGSEGV, SIGILL, SIGTRAP and SIGBUS: records the signal, clears the trap flag,
/// and continues at RESUME when set.
extern "C" fn on_signal(sig: i32, info: *mut u8, uc: *mut u8) {
    // SAFETY: the kernel passes a siginfo_t (si_code at offset 8) and a ucontext_t whose
    // mcontext starts at offset 40; gregs RIP and EFLAGS are entries 16 and 17.
    unsafe {
        SIGNO.store(sig as usize, SeqCst);
        SICODE.store((info.add(8) as *const i32).read() as usize, SeqCst);
        TRAPS.fetch_add(1, SeqCst);
        let rip = uc.add(40 + 16 * 8) as *mut usize;
        let efl = uc.add(40 + 17 * 8) as *mut usize;
        efl.write(efl.read() & !0x100);
        let r = RESUME.load(SeqCst);
        if sig != 5 && r != 0 {
            rip.write(r);
        }
    }
}

fn catch_signals() {
    const SA_SIGINFO: usize = 4;
    const SA_RESTORER: usize = 0x0400_0000;
    const SA_NODEFER: usize = 0x4000_0000;
    let act = [
        on_signal as *const () as usize,
        SA_SIGINFO | SA_RESTORER | SA_NODEFER,
        vbench_probe_restorer as *const () as usize,
        0,
    ];
    for sig in [4usize, 5, 7, 11] {
        let _ = call(nr::RT_SIGACTION, [sig, act.as_ptr() as usize, 0, 8, 0, 0]);
    }
}

/// What the last guarded instruction did: `ok` or the signal that trapped it.
fn trapped() -> Option<&'static str> {
    let s = SIGNO.swap(0, SeqCst);
    let name = match s {
        0 => return None,
        4 => "SIGILL",
        5 => "SIGTRAP",
        7 => "SIGBUS",
        11 => "SIGSEGV",
        _ => "signal",
    };
    Some(name)
}

/// Runs `f` with the signal handlers installed and reports "trapped" if it trapped.
fn guarded(what: &str, f: impl FnOnce(&mut Text)) -> Report {
    catch_signals();
    let mut t = Text::new();
    f(&mut t);
    match trapped() {
        // what the instruction would have stored is meaningless after a trap
        Some(sig) => rep!(
            Observed,
            "{what}:trapped_{sig}_si_code={}",
            SICODE.load(SeqCst) as i32
        ),
        None => rep!(Observed, "{what}:{}", t.as_str()),
    }
}

/// Executes one possibly-trapping instruction: `$insn` between a label the signal handler
/// resumes at. Operands as in `asm!`.
macro_rules! guard_asm {
    ($insn:literal, $($ops:tt)*) => {
        asm!(
            "lea {resume_tmp}, [rip + 2f]",
            "mov [{resume_at}], {resume_tmp}",
            $insn,
            "2:",
            resume_tmp = out(reg) _,
            resume_at = in(reg) RESUME.as_ptr(),
            $($ops)*
        )
    };
}

// ---- translation ----

fn rwx_page() -> Result<*mut u8, usize> {
    // PROT_READ|WRITE|EXEC, MAP_PRIVATE|MAP_ANONYMOUS
    call(9, [0, 4096, 7, 0x22, usize::MAX, 0]).map(|p| p as *mut u8)
}

fn smc() -> Report {
    let page = match rwx_page() {
        Ok(p) => p,
        Err(e) => return rep!(Error, "mmap_rwx:{}", errno(e)),
    };
    let code = [0xb8u8, 1, 0, 0, 0, 0xc3]; // mov eax, 1; ret
                                           // SAFETY: the page is 4096 writable bytes; a function pointer into it is called only after
                                           // it holds the complete code above, which follows the C ABI (returns in eax).
    let (first, second) = unsafe {
        core::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len());
        let f: extern "C" fn() -> u32 = core::mem::transmute(page);
        let first = f();
        page.add(1).write_volatile(2); // now mov eax, 2
        (first, f())
    };
    rep!(Observed, "first={first},after_patch={second}")
}

fn hidden_syscall() -> Report {
    let page = match rwx_page() {
        Ok(p) => p,
        Err(e) => return rep!(Error, "mmap_rwx:{}", errno(e)),
    };
    let ret: usize;
    // SAFETY: the page gets `syscall; ret`, called with rax = getpid: it clobbers rcx, r11
    // (syscall) and returns to us; the call needs the stack, so no `nostack`.
    unsafe {
        core::ptr::copy_nonoverlapping([0x0fu8, 0x05, 0xc3].as_ptr(), page, 3);
        asm!("call {f}", f = in(reg) page, inlateout("rax") 39usize => ret,
             out("rcx") _, out("r11") _);
    }
    let pid = sys::getpid().unwrap_or(0);
    rep!(Observed, "getpid_via_data={},matches={}", ret, ret == pid)
}

global_asm!(
    ".text",
    ".globl vbench_mid_insn",
    "vbench_mid_insn:",
    ".byte 0x48, 0xb8", // movabs rax, imm64 whose bytes are ...
    ".globl vbench_mid_insn_inner",
    "vbench_mid_insn_inner:",
    ".byte 0xb8, 0x2a, 0x00, 0x00, 0x00", // ... mov eax, 42 when entered here,
    ".byte 0xc3",                         // ... ret
    ".byte 0x90, 0x90",
    "ret",
);

extern "C" {
    fn vbench_mid_insn() -> u64;
    fn vbench_mid_insn_inner() -> u64;
}

fn mid_insn_jump() -> Report {
    // SAFETY: both entry points are complete functions of the C ABI defined above.
    let (outer, inner) = unsafe { (vbench_mid_insn(), vbench_mid_insn_inner()) };
    rep!(Observed, "from_start={outer:#x},from_middle={inner}")
}

fn int80() -> Report {
    guarded("int_0x80(getpid=20)", |t| {
        let mut r: usize = 20;
        // SAFETY: int 0x80 with eax = 20 (getpid of the 32-bit ABI) takes no pointers; if it
        // traps, the handler resumes after it.
        unsafe {
            guard_asm!("int 0x80", inout("rax") r, out("rcx") _, out("r11") _);
        }
        let _ = write!(t, "eax={}", r as u32 as i32);
    })
}

global_asm!(
    ".bss",
    ".balign 16",
    "vbench_low_stack:",
    ".zero 65536",
    "vbench_low_stack_top:",
    "vbench_saved_rsp:",
    ".zero 8",
    ".text",
    ".globl vbench_far32",
    "vbench_far32:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + vbench_saved_rsp], rsp",
    "lea rsp, [rip + vbench_low_stack_top]",
    "push 0x23",
    "lea rax, [rip + vbench_far32_in32]",
    "push rax",
    ".byte 0x48, 0xcb", // retfq: to 0x23:in32
    ".code32",
    "vbench_far32_in32:",
    "mov eax, 7",
    ".byte 0x40",       // inc eax in 32-bit mode (a REX prefix in 64-bit mode)
    ".byte 0x8c, 0xca", // mov edx, cs
    ".byte 0x6a, 0x33", // push 0x33
    ".byte 0x68",       // push imm32 ...
    ".long vbench_far32_back",
    ".byte 0xcb", // retf: to 0x33:back
    ".code64",
    "vbench_far32_back:",
    "mov rsp, [rip + vbench_saved_rsp]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "mov eax, eax",
    "shl rdx, 32",
    "or rax, rdx",
    "ret",
    ".globl vbench_far32_fail",
    "vbench_far32_fail:",
    "mov rsp, [rip + vbench_saved_rsp]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "mov rax, -1",
    "ret",
);

extern "C" {
    fn vbench_far32() -> u64;
    fn vbench_far32_fail();
}

fn far_jump32() -> Report {
    catch_signals();
    RESUME.store(vbench_far32_fail as *const () as usize, SeqCst);
    // SAFETY: vbench_far32 saves the callee-saved registers and the stack pointer, runs three
    // instructions in the 32-bit code segment on a stack below 4 GiB (this executable is not
    // position independent: its .bss is there), returns to 64-bit mode and restores everything;
    // a trap resumes at vbench_far32_fail, which restores the same way.
    let v = unsafe { vbench_far32() };
    RESUME.store(0, SeqCst);
    match trapped() {
        Some(sig) => rep!(Observed, "far_jump_to_0x23:trapped_{sig}"),
        None => rep!(
            Observed,
            "in_32bit:7_then_0x40=>eax={},cs={:#x}",
            v as u32,
            (v >> 32) as u16
        ),
    }
}

fn popf_tf() -> Report {
    catch_signals();
    TRAPS.store(0, SeqCst);
    // SAFETY: sets TF with popf; the SIGTRAP after the next instruction is caught by the handler,
    // which clears TF in the saved flags; the stack is balanced.
    unsafe {
        asm!(
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "nop",
            "nop",
            "nop"
        );
    }
    let traps = TRAPS.load(SeqCst);
    let sig = trapped().unwrap_or("none");
    rep!(Observed, "traps={traps},signal={sig}")
}

// ---- Popek-Goldberg ----

fn sgdt_sidt(idt: bool) -> Report {
    let name = if idt { "sidt" } else { "sgdt" };
    guarded(name, |t| {
        let mut d = [0u8; 10];
        // SAFETY: stores 10 bytes (limit, base) into d; may trap (UMIP), then resumes after it.
        unsafe {
            if idt {
                guard_asm!("sidt [{p}]", p = in(reg) d.as_mut_ptr());
            } else {
                guard_asm!("sgdt [{p}]", p = in(reg) d.as_mut_ptr());
            }
        }
        let limit = u16::from_le_bytes([d[0], d[1]]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[2..10]);
        let base = u64::from_le_bytes(b);
        // The values Linux's UMIP emulation returns (arch/x86/kernel/umip.c).
        let dummy = base
            == if idt {
                0xffff_ffff_ffff_0000
            } else {
                0xffff_ffff_fffe_0000
            };
        let _ = write!(t, "base={base:#x},limit={limit:#x}");
        if dummy && limit == 0 {
            let _ = write!(t, ",kernel_UMIP_dummy");
        }
    })
}

fn sldt_str(tr: bool) -> Report {
    let name = if tr { "str" } else { "sldt" };
    guarded(name, |t| {
        let mut v: u64 = 0xdead;
        // SAFETY: stores a selector into a register; may trap (UMIP), then resumes after it.
        unsafe {
            if tr {
                guard_asm!("str {v:x}", v = inout(reg) v);
            } else {
                guard_asm!("sldt {v:x}", v = inout(reg) v);
            }
        }
        let _ = write!(t, "selector={:#x}", v & 0xffff);
    })
}

fn smsw() -> Report {
    guarded("smsw", |t| {
        let mut v: u64 = 0xdead_0000;
        // SAFETY: stores the machine status word into a register; may trap (UMIP).
        unsafe {
            guard_asm!("smsw {v:e}", v = inout(reg) v);
        }
        let _ = write!(t, "msw={:#x}", v as u32);
    })
}

fn pushf() -> Report {
    let f: u64;
    // SAFETY: pushes and pops the flags register; the stack is balanced.
    unsafe { asm!("pushfq", "pop {f}", f = out(reg) f) };
    rep!(
        Observed,
        "rflags={f:#x},IF={},IOPL={}",
        (f >> 9) & 1,
        (f >> 12) & 3
    )
}

fn popf() -> Report {
    let (before, after): (u64, u64);
    // SAFETY: pops flags with IF cleared (ignored at CPL3 with IOPL 0), then reads them back;
    // the arithmetic flags are restored from `before` and the stack is balanced.
    unsafe {
        asm!(
            "pushfq",
            "pop {b}",
            "mov {t}, {b}",
            "and {t}, -513", // ~0x200: IF cleared
            "push {t}",
            "popfq",
            "pushfq",
            "pop {a}",
            "push {b}",
            "popfq",
            b = out(reg) before, a = out(reg) after, t = out(reg) _,
        )
    };
    rep!(
        Observed,
        "IF_before={},IF_after_popf_clearing_it={},silently_ignored={}",
        (before >> 9) & 1,
        (after >> 9) & 1,
        (after >> 9) & 1 == 1
    )
}

fn cs() -> u64 {
    let v: u64;
    // SAFETY: reads the CS selector.
    unsafe { asm!("mov {v:x}, cs", v = out(reg) v, options(nomem, nostack)) };
    v & 0xffff
}

fn ss() -> u64 {
    let v: u64;
    // SAFETY: reads the SS selector.
    unsafe { asm!("mov {v:x}, ss", v = out(reg) v, options(nomem, nostack)) };
    v & 0xffff
}

fn lar_lsl(lsl: bool) -> Report {
    let name = if lsl { "lsl" } else { "lar" };
    let mut t = Text::new();
    // user CS, user SS, kernel CS (0x10), null selector
    for sel in [cs(), ss(), 0x10, 0] {
        let (v, ok): (u64, u8);
        // SAFETY: LAR/LSL only read the descriptor table; ZF tells whether the selector was
        // accessible, v is undefined otherwise (preset to 0).
        unsafe {
            if lsl {
                asm!("xor {v:e}, {v:e}", "lsl {v:e}, {s:e}", "setz {ok}",
                     v = out(reg) v, s = in(reg) sel, ok = out(reg_byte) ok, options(nomem, nostack));
            } else {
                asm!("xor {v:e}, {v:e}", "lar {v:e}, {s:e}", "setz {ok}",
                     v = out(reg) v, s = in(reg) sel, ok = out(reg_byte) ok, options(nomem, nostack));
            }
        }
        if ok == 1 {
            let _ = write!(t, "{sel:#x}=>{:#x};", v as u32);
        } else {
            let _ = write!(t, "{sel:#x}=>ZF0;");
        }
    }
    rep!(Observed, "{name}:{}", t.as_str())
}

fn verr() -> Report {
    let mut t = Text::new();
    for sel in [cs(), ss(), 0x10] {
        let (r, w): (u8, u8);
        // SAFETY: VERR/VERW only read the descriptor table and set ZF.
        unsafe {
            asm!("verr {s:x}", "setz {r}", "verw {s:x}", "setz {w}",
                 s = in(reg) sel, r = out(reg_byte) r, w = out(reg_byte) w, options(nomem, nostack));
        }
        let _ = write!(t, "{sel:#x}:r={r},w={w};");
    }
    rep!(Observed, "{}", t.as_str())
}

fn mov_sreg() -> Report {
    let (c, s, d, e, f, g): (u64, u64, u64, u64, u64, u64);
    // SAFETY: reads the six segment selectors.
    unsafe {
        asm!("mov {c:x}, cs", "mov {s:x}, ss", "mov {d:x}, ds", "mov {e:x}, es",
             "mov {f:x}, fs", "mov {g:x}, gs",
             c = out(reg) c, s = out(reg) s, d = out(reg) d, e = out(reg) e, f = out(reg) f,
             g = out(reg) g, options(nomem, nostack));
    }
    let m = 0xffff;
    rep!(
        Observed,
        "cs={:#x},ss={:#x},ds={:#x},es={:#x},fs={:#x},gs={:#x},cpl={}",
        c & m,
        s & m,
        d & m,
        e & m,
        f & m,
        g & m,
        c & 3
    )
}

fn push_pop_sreg() -> Report {
    guarded("push_pop", |t| {
        let (popped, ds_after): (u64, u64);
        // SAFETY: pushes FS and pops it back (same selector, same base: this program has no
        // TLS); loads DS with the null selector (allowed in 64-bit mode) and restores it. A trap
        // resumes after the sequence with the stack pointer where it was before the push,
        // because the push and pop are balanced before anything can trap.
        unsafe {
            guard_asm!(
                "push fs\n pop fs\n mov {p:x}, fs\n mov {o:x}, ds\n xor {z:e}, {z:e}\n mov ds, {z:x}\n mov {q:x}, ds\n mov ds, {o:x}",
                p = out(reg) popped, o = out(reg) _, z = out(reg) _, q = out(reg) ds_after,
            );
        }
        let _ = write!(
            t,
            "fs_after_push_pop={:#x},ds_after_null_load={:#x}",
            popped & 0xffff,
            ds_after & 0xffff
        );
    })
}

global_asm!(
    ".data",
    ".balign 16",
    "vbench_farcall_ptr32:", // m16:32
    ".long vbench_farcall_target32",
    ".word 0x33",
    ".balign 16",
    "vbench_farcall_ptr64:", // m16:64
    ".quad vbench_farcall_target64",
    ".word 0x33",
    ".text",
    // u64 vbench_farcall(usize *resume, int wide): a far call through memory to 0x33:target,
    // 32- or 64-bit operand size; returns CS seen in the callee | 0x10000, or -1 if it trapped
    // (the trap handler resumes at vbench_farcall_fail, with the stack as it was at the call).
    ".globl vbench_farcall",
    "vbench_farcall:",
    "lea rdx, [rip + vbench_farcall_fail]",
    "mov [rdi], rdx",
    "test esi, esi",
    "jnz vbench_farcall_wide",
    "lea rax, [rip + vbench_farcall_ptr32]",
    ".byte 0xff, 0x18", // call far [rax] (m16:32)
    "ret",
    "vbench_farcall_wide:",
    "lea rax, [rip + vbench_farcall_ptr64]",
    ".byte 0x48, 0xff, 0x18", // rex.w call far [rax] (m16:64; AMD ignores REX.W here)
    "ret",
    "vbench_farcall_fail:",
    "mov rax, -1",
    "ret",
    "vbench_farcall_target32:",
    ".byte 0x8c, 0xc8", // mov eax, cs
    "or eax, 0x10000",
    ".byte 0xcb", // retf (32-bit operand size)
    "vbench_farcall_target64:",
    ".byte 0x8c, 0xc8", // mov eax, cs
    "or eax, 0x10000",
    ".byte 0x48, 0xcb", // rex.w retf
);

extern "C" {
    fn vbench_farcall(resume: *mut usize, wide: i32) -> u64;
}

fn far_call() -> Report {
    catch_signals();
    let mut t = Text::new();
    for (wide, name) in [(0, "m16:32"), (1, "m16:64")] {
        // SAFETY: vbench_farcall follows the C ABI; it makes a far call to a target in this
        // program's code segment, which returns with a far return of the same operand size. A
        // trap of the far call resumes at its fail label, which returns normally.
        let v = unsafe { vbench_farcall(RESUME.as_ptr(), wide) };
        RESUME.store(0, SeqCst);
        match trapped() {
            Some(sig) => {
                let _ = write!(t, "{name}:trapped_{sig};");
            }
            None => {
                let _ = write!(t, "{name}:returned_cs_in_callee={:#x};", v & 0xffff);
            }
        }
    }
    rep!(Observed, "far_call_to_0x33:{}", t.as_str())
}

fn int3() -> Report {
    catch_signals();
    // SAFETY: INT3 raises SIGTRAP (the handler returns after it); INT 0x81 has no DPL3 gate and
    // raises #GP, SIGSEGV, after which the handler resumes at the label.
    unsafe { asm!("int3", "nop") };
    let a = trapped().unwrap_or("none");
    let a_code = SICODE.load(SeqCst) as i32;
    // SAFETY: as above.
    unsafe { guard_asm!("int 0x81",) };
    let b = trapped().unwrap_or("none");
    let b_code = SICODE.load(SeqCst) as i32;
    rep!(Observed, "int3:{a}({a_code}),int_0x81:{b}({b_code})")
}

fn cpuid() -> Report {
    use core::arch::x86_64::__cpuid;
    // CPUID exists on every x86-64 CPU.
    let l0 = __cpuid(0);
    let l1 = __cpuid(1);
    let mut vendor = [0u8; 12];
    vendor[0..4].copy_from_slice(&l0.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&l0.edx.to_le_bytes());
    vendor[8..12].copy_from_slice(&l0.ecx.to_le_bytes());
    let hv = (l1.ecx >> 31) & 1;
    let mut hv_vendor = [b'-'; 12];
    if hv == 1 {
        let h = __cpuid(0x4000_0000);
        hv_vendor[0..4].copy_from_slice(&h.ebx.to_le_bytes());
        hv_vendor[4..8].copy_from_slice(&h.ecx.to_le_bytes());
        hv_vendor[8..12].copy_from_slice(&h.edx.to_le_bytes());
    }
    let s = |b: &[u8]| -> Text {
        let mut t = Text::new();
        for &c in b {
            let _ = t.write_char(if c.is_ascii_graphic() { c as char } else { '.' });
        }
        t
    };
    rep!(
        Observed,
        "vendor={},max_leaf={},hypervisor_bit={hv},hypervisor={},family_model={:#x}",
        s(&vendor).as_str(),
        l0.eax,
        s(&hv_vendor).as_str(),
        l1.eax
    )
}

fn rdtsc() -> Report {
    use core::arch::x86_64::_rdtsc;
    // SAFETY: RDTSC exists on every x86-64 CPU; CR4.TSD would trap it, which Linux does not
    // set for ordinary processes.
    let t0 = unsafe { _rdtsc() };
    let w0 = crate::now_ns();
    let mut w = w0;
    while w - w0 < 20_000_000 {
        w = crate::now_ns();
    }
    // SAFETY: as above.
    let t1 = unsafe { _rdtsc() };
    let mhz = (t1.wrapping_sub(t0)) * 1000 / (w - w0).max(1);
    rep!(
        Observed,
        "monotonic={},rate_MHz_vs_CLOCK_MONOTONIC={mhz}",
        t1 > t0
    )
}

/// Executes one privileged instruction at CPL3; the kernel must refuse it (#GP, SIGSEGV).
fn privileged(name: &str) -> Report {
    guarded(name, |t| {
        let (mut a, mut d): (u64, u64) = (0, 0);
        // SAFETY: each instruction traps at CPL3 (the handler resumes after it); if a backend
        // let one through, RDMSR only reads the TSC MSR into rax/rdx, HLT waits for an interrupt,
        // CLI clears IF of this program alone, and IN reads the POST diagnostics port 0x80.
        unsafe {
            match name {
                "rdmsr" => guard_asm!("rdmsr", in("ecx") 0x10u32, inout("rax") a, inout("rdx") d),
                "hlt" => guard_asm!("hlt",),
                "cli" => guard_asm!("cli",),
                _ => guard_asm!("in al, 0x80", inout("rax") a),
            }
        }
        let _ = write!(t, "executed,rax={a:#x},rdx={d:#x}");
    })
}

// ---- the machine's edges: what a VM must contain ----

/// An address far above any RAM this machine or a micro-VM has (64 TiB), never mapped by the
/// loader, the stack or mmap (which place mappings below 2^47 top down, near the stack).
const WILD: usize = 0x4000_0000_0000;

/// A load from [`WILD`]: natively a page fault (SIGSEGV); in a VM a guest-physical address
/// outside guest RAM, which must end as the guest's fault, not as data from elsewhere.
fn wild_read() -> Report {
    guarded("load_64TiB", |t| {
        let v: u64;
        // SAFETY: the load faults (the handler resumes after it): nothing is mapped at WILD.
        unsafe { guard_asm!("mov {v}, [{p}]", p = in(reg) WILD, v = out(reg) v) };
        let _ = write!(t, "read_value={v:#x}");
    })
}

/// read(2) from /dev/zero into [`WILD`] and into a buffer whose end runs past it: the kernel
/// (or a VMM checking guest pointers) must answer EFAULT and nothing else may happen.
fn efault_read() -> Report {
    let Some(zero) = CPath::new(&["/dev/zero"]) else {
        return rep!(Error, "path");
    };
    let fd = match open(&zero, sys::O_RDONLY) {
        Ok(fd) => fd,
        Err(e) => return rep!(Error, "open_/dev/zero:{}", errno(e)),
    };
    let name = |r: Result<usize, usize>| match r {
        Ok(n) => Text::from_fmt(format_args!("ok_{n}")),
        Err(e) => Text::from_fmt(format_args!("{}", errno(e))),
    };
    let wild = name(call(0, [fd, WILD, 64, 0, 0, 0]));
    let top = name(call(0, [fd, WILD - 16, 64, 0, 0, 0]));
    let kernel = name(call(0, [fd, 0xffff_8000_0000_0000, 64, 0, 0, 0]));
    rep!(
        Observed,
        "read_to_64TiB={},read_across_64TiB={},read_to_kernel_half={}",
        wild.as_str(),
        top.as_str(),
        kernel.as_str()
    )
}

/// RDMSR of an MSR that no CPU has: #GP at CPL3 natively; a VM must not pass it to the host.
fn unknown_msr() -> Report {
    guarded("rdmsr_0xc0de0000", |t| {
        let (mut a, mut d): (u64, u64) = (0, 0);
        // SAFETY: rdmsr traps at CPL3 (the handler resumes after it); were it let through, it
        // only reads an MSR into rax/rdx.
        unsafe { guard_asm!("rdmsr", in("ecx") 0xc0de_0000u32, inout("rax") a, inout("rdx") d) };
        let _ = write!(t, "executed,rax={a:#x},rdx={d:#x}");
    })
}

/// mmap of 16 GiB of anonymous memory, never touched: the host overcommits it (MAP_NORESERVE);
/// a micro-VM whose RAM is the memory limit must refuse it inside the guest (ENOMEM).
fn huge_mmap() -> Report {
    const MAP_NORESERVE: usize = 0x4000;
    let len = 16usize << 30;
    match call(9, [0, len, 3, 0x22 | MAP_NORESERVE, usize::MAX, 0]) {
        Ok(p) => {
            let _ = call(11, [p, len, 0, 0, 0, 0]);
            rep!(Observed, "mmap_16GiB=ok")
        }
        Err(e) => rep!(Observed, "mmap_16GiB={}", errno(e)),
    }
}

fn never_exits() -> Report {
    let mut x = 1u64;
    loop {
        x = core::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
    }
}
