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

//!
//! One file per probe family, as the catalogue's kinds group them: [`visibility`],
//! [`privilege`], [`limit`], [`translation`], [`instruction`] and [`vm`]; [`signals`] turns
//! traps into observations for the last three. Each family lists its probes in a table of
//! `(name, implementation)`; [`IMPLEMENTED`] is every table, which `--probes` prints so the
//! harness can check the catalogue against it.

use crate::sys::{self, syscall6};
use core::fmt::{self, Write};
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

/// A probe's implementation: its catalogue entry and its `key=value` arguments in, a verdict
/// out (or it never returns, as `stdout_flood` and `never_exits`).
type Impl = fn(&'static Probe, &Args<'_>) -> Report;

#[macro_use]
mod signals;
mod instruction;
mod limit;
mod privilege;
mod translation;
mod visibility;
mod vm;

/// Every implemented probe, by family.
const IMPLEMENTED: [&[(&str, Impl)]; 6] = [
    visibility::PROBES,
    privilege::PROBES,
    limit::PROBES,
    translation::PROBES,
    instruction::PROBES,
    vm::PROBES,
];

/// The implementation of the probe called `name`.
fn implementation(name: &str) -> Option<Impl> {
    IMPLEMENTED
        .iter()
        .flat_map(|family| family.iter())
        .find_map(|&(n, f)| (n == name).then_some(f))
}

/// Prints the name of every implemented probe, one per line.
pub fn list() {
    let mut o = crate::Out::new(crate::Out::STDOUT);
    for &(name, _) in IMPLEMENTED.iter().flat_map(|family| family.iter()) {
        let _ = writeln!(o, "{name}");
    }
    let _ = o.flush();
}

/// Runs probe `p` with its `key=value` arguments, prints its line and exits 0.
pub fn run(p: &'static Probe, args: &[&str]) -> ! {
    let a = Args(args);
    for k in p.keys() {
        if a.get(k).is_none() {
            print(p, &rep!(Error, "missing_argument_{k}"));
            sys::exit_group(0);
        }
    }
    let r = match implementation(p.name) {
        Some(f) => f(p, &a),
        None => rep!(Error, "probe_{}_not_implemented", p.name),
    };
    print(p, &r);
    sys::exit_group(0)
}
