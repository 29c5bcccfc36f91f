//! The catalogue of vbench workload tasks, shared by the freestanding workload ELF
//! (`vbench-workload`, which parses its argv with [`parse_args`] and prints its result with
//! [`Invocation::write_report`]) and by the host harness (listing, planning).
//!
//! The crate also holds the pure compute kernels the ELF runs ([`kernel`], [`sha256`]), so they
//! can be unit-tested on the host: the ELF itself is `no_std` and has no test harness.
//!
//! # Command line of the ELF
//! `vbench-workload TASK [key=value ...]`: every parameter not given takes its catalogue
//! default; a key given twice takes its last value. Integer values are decimal, optionally
//! followed by `K`, `M` or `G` (binary multiples: `64M` is 67108864).
//!
//! # Result line
//! On success the ELF prints exactly one line to stdout and exits 0:
//!
//! ```text
//! VBENCH task=<name> <param>=<value> ... iters=<n> ns=<loop nanoseconds> checksum=<16 hex digits>
//! ```
//!
//! Parameters appear in catalogue order (`iters` is always the last parameter), integers in
//! decimal. `ns` is the CLOCK_MONOTONIC time of the measured loop, which ran `iters` operations
//! of the task's [`Task::op`] unit. The checksum depends only on the parameters, as long as the
//! system calls answered correctly: the system-call tasks fold what their calls returned (see
//! [`fold`]), so a wrong answer changes it.
//!
//! ```
//! use vbench_workloads::{find, parse_args, Class};
//! let t = find("sieve").unwrap();
//! assert_eq!(t.class, Class::Cpu);
//! let inv = parse_args(["sieve", "iters=3"]).unwrap();
//! assert_eq!(inv.int("iters"), 3);
//! let mut line = String::new();
//! inv.write_report(&mut line, 1234, 0xabc).unwrap();
//! assert!(line.starts_with("VBENCH task=sieve n="));
//! assert!(line.ends_with(" iters=3 ns=1234 checksum=0000000000000abc\n"));
//! ```
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

use core::fmt;

pub mod probes;

/// The first word of the result line.
pub const RESULT_PREFIX: &str = "VBENCH";

/// The most parameters any task has (including `iters`).
pub const MAX_PARAMS: usize = 3;

/// The longest accepted string parameter value, in bytes.
pub const MAX_STR_LEN: usize = 255;

/// What a task mainly exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Computation in registers and caches; no syscalls in the measured loop.
    Cpu,
    /// Memory bandwidth, latency, paging.
    Mem,
    /// System calls.
    Sys,
}

impl Class {
    /// Every class, in catalogue order.
    pub const ALL: [Class; 3] = [Class::Cpu, Class::Mem, Class::Sys];

    /// The lower-case name: `cpu`, `mem` or `sys`.
    pub fn name(&self) -> &'static str {
        match self {
            Class::Cpu => "cpu",
            Class::Mem => "mem",
            Class::Sys => "sys",
        }
    }

    /// The class called `s` (as printed by [`Class::name`]).
    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type of a parameter and its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// An unsigned integer in `min..=max`.
    Int {
        /// The value for a normal run (roughly 50-250 ms of measured loop natively).
        default: u64,
        /// The value for a quick run (roughly 5-30 ms of measured loop natively).
        quick: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A string of 1 to [`MAX_STR_LEN`] printable, non-space ASCII characters.
    Str {
        /// The value for normal and quick runs.
        default: &'static str,
    },
}

/// One parameter of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// The key on the command line and in the result line.
    pub name: &'static str,
    /// Type, default and limits.
    pub kind: ParamKind,
    /// One line of help.
    pub help: &'static str,
}

/// One task of the workload ELF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// The name, the first argument of the ELF.
    pub name: &'static str,
    /// What it mainly exercises.
    pub class: Class,
    /// One line of description.
    pub summary: &'static str,
    /// The unit of one operation of the measured loop (`iters` counts these).
    pub op: &'static str,
    /// The parameters, in the order of the result line; `iters` is the last.
    pub params: &'static [Param],
}

impl Task {
    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        self.params.iter().find(|p| p.name == name)
    }
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const MAX_ITERS: u64 = 1 << 40;

const fn int(
    name: &'static str,
    default: u64,
    quick: u64,
    min: u64,
    max: u64,
    help: &'static str,
) -> Param {
    Param {
        name,
        kind: ParamKind::Int {
            default,
            quick,
            min,
            max,
        },
        help,
    }
}

const fn iters(default: u64, quick: u64, help: &'static str) -> Param {
    int("iters", default, quick, 1, MAX_ITERS, help)
}

/// Every task, grouped by class.
pub const TASKS: &[Task] = &[
    // --- cpu ---
    Task {
        name: "intmix",
        class: Class::Cpu,
        summary: "dependent chain of integer xorshift/multiply mixing steps",
        op: "step",
        params: &[iters(30_000_000, 3_000_000, "mixing steps")],
    },
    Task {
        name: "sha256",
        class: Class::Cpu,
        summary: "SHA-256 of a generated buffer, each pass chained into the next",
        op: "pass",
        params: &[
            int("size", MIB, MIB, 64, 64 * MIB, "bytes hashed per pass"),
            iters(20, 2, "passes over the buffer"),
        ],
    },
    Task {
        name: "sieve",
        class: Class::Cpu,
        summary: "sieve of Eratosthenes (one byte per number), counting primes below n",
        op: "pass",
        params: &[
            int(
                "n",
                2 * MIB,
                2 * MIB,
                2,
                GIB,
                "numbers sieved per pass (bytes of memory)",
            ),
            iters(20, 3, "sieve passes"),
        ],
    },
    Task {
        name: "matmul",
        class: Class::Cpu,
        summary: "dense f64 matrix multiply C = A*B (i-k-j loop order)",
        op: "multiply",
        params: &[
            int("n", 128, 128, 1, 2048, "matrix dimension"),
            iters(150, 15, "matrix multiplies"),
        ],
    },
    // --- mem ---
    Task {
        name: "memcopy",
        class: Class::Mem,
        summary: "memcpy (rep movsb) between two pre-faulted buffers larger than the LLC",
        op: "pass",
        params: &[
            int(
                "size",
                64 * MIB,
                64 * MIB,
                4 * KIB,
                4 * GIB,
                "bytes copied per pass (two buffers of this size)",
            ),
            iters(10, 2, "copy passes"),
        ],
    },
    Task {
        name: "triad",
        class: Class::Mem,
        summary: "STREAM triad a[i] = b[i] + s*c[i] over three pre-faulted u64 arrays",
        op: "pass",
        params: &[
            int(
                "size",
                32 * MIB,
                32 * MIB,
                8,
                4 * GIB,
                "bytes per array (rounded down to a multiple of 8)",
            ),
            iters(10, 2, "triad passes"),
        ],
    },
    Task {
        name: "ptrchase",
        class: Class::Mem,
        summary: "dependent loads around a random single cycle (Sattolo) of 64-byte slots",
        op: "access",
        params: &[
            int(
                "size",
                64 * MIB,
                64 * MIB,
                128,
                4 * GIB,
                "working set in bytes (one slot per 64 bytes)",
            ),
            iters(500_000, 50_000, "dependent loads"),
        ],
    },
    Task {
        name: "pagetouch",
        class: Class::Mem,
        summary: "rounds of mmap fresh anonymous memory, write one byte per 4 KiB page, munmap",
        op: "page",
        params: &[
            int(
                "size",
                MIB,
                MIB,
                4 * KIB,
                MIB,
                "bytes mapped per round (at most 1 MiB, so no huge pages)",
            ),
            iters(50_000, 5_000, "pages touched in total"),
        ],
    },
    // --- sys ---
    Task {
        name: "getpid",
        class: Class::Sys,
        summary: "getpid system call",
        op: "call",
        params: &[iters(750_000, 75_000, "calls")],
    },
    Task {
        name: "devnull_write",
        class: Class::Sys,
        summary: "write to /dev/null (opened before the loop)",
        op: "call",
        params: &[
            int("size", 1, 1, 1, MIB, "bytes per write"),
            iters(500_000, 50_000, "write calls"),
        ],
    },
    Task {
        name: "devzero_read",
        class: Class::Sys,
        summary: "read from /dev/zero (opened before the loop), checking the data",
        op: "call",
        params: &[
            int("size", 1, 1, 1, MIB, "bytes per read"),
            iters(500_000, 50_000, "read calls"),
        ],
    },
    Task {
        name: "openclose",
        class: Class::Sys,
        summary: "openat(O_RDONLY) and close of a path; one op is both calls",
        op: "call",
        params: &[
            Param {
                name: "path",
                kind: ParamKind::Str {
                    default: "/dev/null",
                },
                help: "path opened",
            },
            iters(50_000, 5_000, "openat+close pairs"),
        ],
    },
    Task {
        name: "clock",
        class: Class::Sys,
        summary: "clock_gettime(CLOCK_MONOTONIC) as a real system call (no vDSO)",
        op: "call",
        params: &[iters(500_000, 50_000, "calls")],
    },
    Task {
        name: "clock_vdso",
        class: Class::Sys,
        summary: "clock_gettime(CLOCK_MONOTONIC) through the vDSO the auxiliary vector names, as libc calls it (the system call where there is none)",
        op: "call",
        params: &[iters(5_000_000, 500_000, "calls")],
    },
    Task {
        name: "mmap",
        class: Class::Sys,
        summary: "mmap and munmap of anonymous memory, never touched; one op is both calls",
        op: "call",
        params: &[
            int("size", 4 * KIB, 4 * KIB, 1, GIB, "bytes mapped"),
            iters(30_000, 3_000, "mmap+munmap pairs"),
        ],
    },
];

/// The task called `name`.
pub fn find(name: &str) -> Option<&'static Task> {
    TASKS.iter().find(|t| t.name == name)
}

/// Parses a parameter integer: decimal digits, optionally followed by `K`, `M` or `G`
/// (also lower case) for 2^10, 2^20, 2^30. `None` if malformed or above `u64::MAX`.
pub fn parse_int(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], KIB),
        b'm' | b'M' => (&s[..s.len() - 1], MIB),
        b'g' | b'G' => (&s[..s.len() - 1], GIB),
        _ => (s, 1),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    v.checked_mul(mult)
}

/// The value of one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Of a [`ParamKind::Int`] parameter.
    Int(u64),
    /// Of a [`ParamKind::Str`] parameter.
    Str(&'a str),
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// Why a command line was rejected (the ELF prints it with the usage and exits 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgError<'a> {
    /// No task named.
    NoTask,
    /// The first argument names no task.
    UnknownTask(&'a str),
    /// An argument is not of the form `key=value`.
    NotKeyValue(&'a str),
    /// The task has no parameter of that name.
    UnknownKey {
        /// The task.
        task: &'static str,
        /// The key given.
        key: &'a str,
    },
    /// An integer parameter's value is not a number.
    NotANumber {
        /// The parameter.
        key: &'static str,
        /// The value given.
        value: &'a str,
    },
    /// An integer parameter's value is outside its limits.
    OutOfRange {
        /// The parameter.
        key: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A string parameter's value is empty, too long, or has spaces or non-printable bytes.
    BadString {
        /// The parameter.
        key: &'static str,
        /// The value given.
        value: &'a str,
    },
}

impl fmt::Display for ArgError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::NoTask => f.write_str("no task given"),
            ArgError::UnknownTask(t) => write!(f, "unknown task {t:?}"),
            ArgError::NotKeyValue(a) => write!(f, "argument {a:?} is not of the form key=value"),
            ArgError::UnknownKey { task, key } => write!(f, "task {task} has no parameter {key:?}"),
            ArgError::NotANumber { key, value } => {
                write!(f, "{key}={value:?} is not a number (decimal, optional K/M/G suffix)")
            }
            ArgError::OutOfRange { key, value, min, max } => {
                write!(f, "{key}={value} is out of range {min}..={max}")
            }
            ArgError::BadString { key, value } => write!(
                f,
                "{key}={value:?} must be 1 to {MAX_STR_LEN} printable ASCII characters without spaces"
            ),
        }
    }
}

/// A task and the values of all its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invocation<'a> {
    /// The task.
    pub task: &'static Task,
    values: [Value<'a>; MAX_PARAMS],
}

impl<'a> Invocation<'a> {
    fn with(task: &'static Task, quick: bool) -> Self {
        let mut values = [Value::Int(0); MAX_PARAMS];
        for (v, p) in values.iter_mut().zip(task.params) {
            *v = match p.kind {
                ParamKind::Int {
                    default, quick: q, ..
                } => Value::Int(if quick { q } else { default }),
                ParamKind::Str { default } => Value::Str(default),
            };
        }
        Invocation { task, values }
    }

    /// `task` with every parameter at its default.
    pub fn defaults(task: &'static Task) -> Self {
        Self::with(task, false)
    }

    /// `task` with every parameter at its quick value.
    pub fn quick(task: &'static Task) -> Self {
        Self::with(task, true)
    }

    /// Sets parameter `key` from its command-line text.
    pub fn set(&mut self, key: &'a str, text: &'a str) -> Result<(), ArgError<'a>> {
        let task = self.task;
        let Some(i) = task.params.iter().position(|p| p.name == key) else {
            return Err(ArgError::UnknownKey {
                task: task.name,
                key,
            });
        };
        let p = &task.params[i];
        self.values[i] = match p.kind {
            ParamKind::Int { min, max, .. } => {
                let v = parse_int(text).ok_or(ArgError::NotANumber {
                    key: p.name,
                    value: text,
                })?;
                if v < min || v > max {
                    return Err(ArgError::OutOfRange {
                        key: p.name,
                        value: v,
                        min,
                        max,
                    });
                }
                Value::Int(v)
            }
            ParamKind::Str { .. } => {
                let ok = !text.is_empty()
                    && text.len() <= MAX_STR_LEN
                    && text.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    return Err(ArgError::BadString {
                        key: p.name,
                        value: text,
                    });
                }
                Value::Str(text)
            }
        };
        Ok(())
    }

    /// The parameters and their values, in catalogue order.
    pub fn values(&self) -> impl Iterator<Item = (&'static Param, Value<'a>)> + '_ {
        self.task.params.iter().zip(self.values.iter().copied())
    }

    /// The value of integer parameter `name`.
    ///
    /// # Panics
    /// If the task has no integer parameter `name` (a programming error).
    pub fn int(&self, name: &str) -> u64 {
        match self.values().find(|(p, _)| p.name == name) {
            Some((_, Value::Int(v))) => v,
            _ => panic!("task has no integer parameter {name}"),
        }
    }

    /// The value of string parameter `name`.
    ///
    /// # Panics
    /// If the task has no string parameter `name` (a programming error).
    pub fn str(&self, name: &str) -> &'a str {
        match self.values().find(|(p, _)| p.name == name) {
            Some((_, Value::Str(v))) => v,
            _ => panic!("task has no string parameter {name}"),
        }
    }

    /// Writes the result line (with its final newline); see the crate documentation.
    pub fn write_report<W: fmt::Write + ?Sized>(
        &self,
        w: &mut W,
        ns: u64,
        checksum: u64,
    ) -> fmt::Result {
        write!(w, "{RESULT_PREFIX} task={}", self.task.name)?;
        for (p, v) in self.values() {
            write!(w, " {}={v}", p.name)?;
        }
        writeln!(w, " ns={ns} checksum={checksum:016x}")
    }
}

/// Parses the arguments after the program name: `TASK [key=value ...]`.
pub fn parse_args<'a, I>(args: I) -> Result<Invocation<'a>, ArgError<'a>>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut args = args.into_iter();
    let name = args.next().ok_or(ArgError::NoTask)?;
    let task = find(name).ok_or(ArgError::UnknownTask(name))?;
    let mut inv = Invocation::defaults(task);
    for a in args {
        let (k, v) = a.split_once('=').ok_or(ArgError::NotKeyValue(a))?;
        inv.set(k, v)?;
    }
    Ok(inv)
}

/// Writes the usage text of the ELF, listing every task and parameter.
pub fn write_usage<W: fmt::Write + ?Sized>(w: &mut W) -> fmt::Result {
    w.write_str(
        "usage: vbench-workload TASK [key=value ...]\n\
         \x20      vbench-workload --help\n\
         \x20      vbench-workload --probes    (the probes it implements, one per line)\n\
         Runs one task and prints one line:\n\
         \x20 VBENCH task=NAME PARAM=VALUE ... iters=N ns=LOOP_NANOSECONDS checksum=HEX16\n\
         Integers are decimal with an optional K/M/G (binary) suffix. Parameters not given take\n\
         the default shown (quick value in parentheses, min..max in brackets).\n\
         Exit status: 0 ok, 1 a system call failed, 2 bad arguments, 101 internal error.\n\
         tasks:\n",
    )?;
    for t in TASKS {
        writeln!(
            w,
            "  {:<14}{:<4} per {:<9}{}",
            t.name,
            t.class.name(),
            t.op,
            t.summary
        )?;
        for p in t.params {
            match p.kind {
                ParamKind::Int {
                    default,
                    quick,
                    min,
                    max,
                } => writeln!(
                    w,
                    "      {}={default} ({quick}) [{min}..{max}]  {}",
                    p.name, p.help
                )?,
                ParamKind::Str { default } => {
                    writeln!(w, "      {}={default}  {}", p.name, p.help)?
                }
            }
        }
    }
    Ok(())
}

/// A running checksum: FNV-1a over 64-bit words (each word is one FNV step, not eight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Self::new()
    }
}

impl Checksum {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// The empty checksum.
    pub const fn new() -> Self {
        Checksum(Self::OFFSET)
    }

    /// Mixes in one word.
    #[inline]
    pub fn word(&mut self, w: u64) -> &mut Self {
        self.0 = (self.0 ^ w).wrapping_mul(Self::PRIME);
        self
    }

    /// Mixes in words.
    pub fn words(&mut self, ws: &[u64]) -> &mut Self {
        for &w in ws {
            self.word(w);
        }
        self
    }

    /// Mixes in bytes, eight at a time (little-endian, the tail zero-padded), then the length.
    pub fn bytes(&mut self, bs: &[u8]) {
        let mut chunks = bs.chunks_exact(8);
        for c in &mut chunks {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            self.word(u64::from_le_bytes(a));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut a = [0u8; 8];
            a[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(a));
        }
        self.word(bs.len() as u64);
    }

    /// The value, finalised with a murmur3-style avalanche.
    pub fn value(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// What the system-call tasks fold into their checksums: properties of the answers the calls
/// gave that are the same on every correct backend (byte counts, descriptors, clock order, the
/// contents of fresh memory, the pid compared with the first answer), never the answers'
/// values themselves where those differ between backends (a pid is 2 in a container, an
/// address or a clock reading differs from run to run). A backend that answers a call wrongly
/// changes the checksum; every correct one gets the same.
pub mod fold {
    use super::Checksum;

    /// Marks what each task folds, so two tasks whose counts coincide still differ.
    const GETPID: u64 = 1;
    const READ_WRITE: u64 = 2;
    const OPEN_CLOSE: u64 = 3;
    const CLOCK: u64 = 4;
    const MMAP: u64 = 5;

    /// getpid: every answer must be positive and equal to the first.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Pids {
        first: Option<usize>,
        calls: u64,
        same: u64,
        positive: u64,
    }

    impl Pids {
        /// Records one answer.
        #[inline(always)]
        pub fn add(&mut self, pid: usize) {
            let first = *self.first.get_or_insert(pid);
            self.calls += 1;
            self.same += u64::from(pid == first);
            self.positive += u64::from(pid > 0);
        }

        /// Folds the counts (not the pid) into `c`.
        pub fn fold(&self, c: &mut Checksum) {
            c.words(&[GETPID, self.calls, self.same, self.positive]);
        }
    }

    /// read or write of `size` bytes per call on a descriptor opened before the loop: each call
    /// must move all `size` bytes, and the descriptor must not be one of stdin, stdout, stderr.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Transfers {
        size: usize,
        fd_is_new: bool,
        calls: u64,
        bytes: u64,
        full: u64,
    }

    impl Transfers {
        /// Transfers of `size` bytes on descriptor `fd`.
        pub fn new(fd: usize, size: usize) -> Self {
            Transfers {
                size,
                fd_is_new: fd > 2,
                calls: 0,
                bytes: 0,
                full: 0,
            }
        }

        /// Records what one call returned: the bytes it moved.
        #[inline(always)]
        pub fn add(&mut self, n: usize) {
            self.calls += 1;
            self.bytes += n as u64;
            self.full += u64::from(n == self.size);
        }

        /// Folds the counts into `c`.
        pub fn fold(&self, c: &mut Checksum) {
            c.words(&[READ_WRITE, u64::from(self.fd_is_new), self.calls])
                .words(&[self.bytes, self.full]);
        }
    }

    /// openat and close in a loop: every open must return the same new descriptor (the lowest
    /// free one, freed again by the close) and every close 0.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Reopens {
        first: Option<usize>,
        calls: u64,
        same_fd: u64,
        new_fd: u64,
        closed: u64,
    }

    impl Reopens {
        /// Records one pair: the descriptor openat returned and what close returned.
        #[inline(always)]
        pub fn add(&mut self, fd: usize, close: usize) {
            let first = *self.first.get_or_insert(fd);
            self.calls += 1;
            self.same_fd += u64::from(fd == first);
            self.new_fd += u64::from(fd > 2);
            self.closed += u64::from(close == 0);
        }

        /// Folds the counts (not the descriptor) into `c`.
        pub fn fold(&self, c: &mut Checksum) {
            c.words(&[OPEN_CLOSE, self.calls, self.same_fd, self.new_fd])
                .word(self.closed);
        }
    }

    /// clock_gettime(CLOCK_MONOTONIC) in a loop: no reading may be below the one before it,
    /// and the clock must have moved between the first and the last.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Clock {
        start: u64,
        prev: u64,
        calls: u64,
        backwards: u64,
    }

    impl Clock {
        /// Readings that follow `start`, the reading before the loop.
        pub fn new(start: u64) -> Self {
            Clock {
                start,
                prev: start,
                calls: 0,
                backwards: 0,
            }
        }

        /// Records one reading, in nanoseconds.
        #[inline(always)]
        pub fn add(&mut self, t: u64) {
            self.calls += 1;
            self.backwards += u64::from(t < self.prev);
            self.prev = t;
        }

        /// Folds the count of calls, of non-monotonic steps (0 on a correct clock) and whether
        /// the clock moved; never a reading.
        pub fn fold(&self, c: &mut Checksum) {
            c.words(&[CLOCK, self.calls, self.backwards])
                .word(u64::from(self.prev > self.start));
        }
    }

    /// mmap and munmap of anonymous memory: every address must be page aligned and not null,
    /// every munmap must return 0, and fresh pages (checked once, outside the measured loop)
    /// must read zero and keep what is written to them.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Maps {
        calls: u64,
        aligned: u64,
        unmapped: u64,
        pages: u64,
        zero: u64,
        kept: u64,
    }

    impl Maps {
        /// Records one pair: the address mmap returned and what munmap returned.
        #[inline(always)]
        pub fn add(&mut self, addr: usize, munmap: usize) {
            self.calls += 1;
            self.aligned += u64::from(addr != 0 && addr.is_multiple_of(4096));
            self.unmapped += u64::from(munmap == 0);
        }

        /// Records one checked page of a fresh mapping: whether it read zero before it was
        /// written, and whether it read back what was written.
        pub fn page(&mut self, was_zero: bool, kept: bool) {
            self.pages += 1;
            self.zero += u64::from(was_zero);
            self.kept += u64::from(kept);
        }

        /// Folds the counts (not the addresses) into `c`.
        pub fn fold(&self, c: &mut Checksum) {
            c.words(&[MMAP, self.calls, self.aligned, self.unmapped])
                .words(&[self.pages, self.zero, self.kept]);
        }
    }
}

/// SplitMix64, the deterministic generator of all workload data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started at `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (multiply-shift; `n` must be non-zero).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A float in `[-1, 1)`.
    #[inline]
    pub fn signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 52) as f64) - 1.0
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let r = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&r[..rest.len()]);
        }
    }
}

/// Finding a function in the vDSO, the ELF image the kernel (or a VMM's guest kernel) maps
/// into a process and names in AT_SYSINFO_EHDR, as libc does: the dynamic section through the
/// program headers, then DT_HASH's chains, matching the name and, when the image has
/// versions, LINUX_2.6.
pub mod vdso {
    fn at<T: Copy>(base: usize, off: usize) -> T {
        // SAFETY: the caller of `symbol` vouches that `base` is a mapped ELF image; every
        // offset read comes from its own headers and tables.
        unsafe { core::ptr::read_unaligned((base + off) as *const T) }
    }

    fn name_is(base: usize, strtab: usize, off: u32, want: &[u8]) -> bool {
        (0..=want.len()).all(|i| {
            let c: u8 = at(base, strtab + off as usize + i);
            if i == want.len() {
                c == 0
            } else {
                c == want[i]
            }
        })
    }

    /// The SysV ELF hash, DT_HASH's.
    pub fn elf_hash(name: &[u8]) -> u32 {
        let mut h: u32 = 0;
        for &c in name {
            h = (h << 4).wrapping_add(u32::from(c));
            let g = h & 0xf000_0000;
            if g != 0 {
                h ^= g >> 24;
            }
            h &= !g;
        }
        h
    }

    /// The address of function `name` in the vDSO image at `base`, when it exports it.
    ///
    /// # Safety
    /// `base` must be the process's AT_SYSINFO_EHDR: a mapped, well-formed ELF image.
    pub unsafe fn symbol(base: usize, name: &[u8]) -> Option<usize> {
        if at::<[u8; 4]>(base, 0) != *b"\x7fELF" {
            return None;
        }
        let (phoff, phnum): (u64, u16) = (at(base, 32), at(base, 56));
        let mut load = None;
        let mut dynamic = None;
        for i in 0..phnum.min(16) as usize {
            let ph = phoff as usize + 56 * i;
            let (kind, off, vaddr): (u32, u64, u64) =
                (at(base, ph), at(base, ph + 8), at(base, ph + 16));
            match kind {
                1 if load.is_none() => {
                    load = Some(base.wrapping_add(off as usize).wrapping_sub(vaddr as usize))
                }
                2 => dynamic = Some(off as usize),
                _ => {}
            }
        }
        let (bias, dynamic) = (load?, dynamic?);
        let (mut hash, mut symtab, mut strtab, mut versym, mut verdef) = (0, 0, 0, 0, 0);
        for i in 0..64 {
            let (tag, val): (u64, u64) =
                (at(base, dynamic + 16 * i), at(base, dynamic + 16 * i + 8));
            let v = (bias + val as usize).wrapping_sub(base);
            match tag {
                0 => break,
                4 => hash = v,
                5 => strtab = v,
                6 => symtab = v,
                0x6fff_fff0 => versym = v,
                0x6fff_fffc => verdef = v,
                _ => {}
            }
        }
        if hash == 0 || symtab == 0 || strtab == 0 {
            return None;
        }
        // the index of LINUX_2.6 among the version definitions, when there are any
        let mut version = None;
        if verdef != 0 {
            let mut d = verdef;
            for _ in 0..16 {
                let (flags, ndx, aux, next): (u16, u16, u32, u32) = (
                    at(base, d + 2),
                    at(base, d + 4),
                    at(base, d + 12),
                    at(base, d + 16),
                );
                let vname: u32 = at(base, d + aux as usize);
                if flags & 1 == 0 && name_is(base, strtab, vname, b"LINUX_2.6") {
                    version = Some(ndx);
                    break;
                }
                if next == 0 {
                    break;
                }
                d += next as usize;
            }
        }
        let (nbucket, nchain): (u32, u32) = (at(base, hash), at(base, hash + 4));
        if nbucket == 0 {
            return None;
        }
        let mut i: u32 = at(base, hash + 8 + 4 * (elf_hash(name) % nbucket) as usize);
        for _ in 0..nchain {
            if i == 0 || i >= nchain {
                break;
            }
            let sym = symtab + 24 * i as usize;
            let (st_name, info, shndx, value): (u32, u8, u16, u64) = (
                at(base, sym),
                at(base, sym + 4),
                at(base, sym + 6),
                at(base, sym + 8),
            );
            let ver_ok = match (versym, version) {
                (0, _) | (_, None) => true,
                (vs, Some(v)) => at::<u16>(base, vs + 2 * i as usize) & 0x7fff == v,
            };
            if info & 0xf == 2 && shndx != 0 && ver_ok && name_is(base, strtab, st_name, name) {
                return Some(bias + value as usize);
            }
            i = at(base, hash + 8 + 4 * nbucket as usize + 4 * i as usize);
        }
        None
    }
}

/// SHA-256 (FIPS 180-4), written here because the ELF has no dependencies.
pub mod sha256 {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// The initial hash value.
    pub const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    /// Processes one 64-byte block.
    pub fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }

    /// The SHA-256 digest of `data`.
    pub fn digest(data: &[u8]) -> [u8; 32] {
        let mut state = H0;
        let mut blocks = data.chunks_exact(64);
        for b in &mut blocks {
            let mut block = [0u8; 64];
            block.copy_from_slice(b);
            compress(&mut state, &block);
        }
        let rest = blocks.remainder();
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let len = if rest.len() < 56 { 64 } else { 128 };
        tail[len - 8..len].copy_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
        for b in tail[..len].chunks_exact(64) {
            let mut block = [0u8; 64];
            block.copy_from_slice(b);
            compress(&mut state, &block);
        }
        let mut out = [0u8; 32];
        for (o, s) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        out
    }
}

/// The compute kernels of the CPU tasks (pure functions, unit-tested on the host).
pub mod kernel {
    /// `steps` dependent xorshift/multiply mixing steps starting from `x`.
    pub fn intmix(mut x: u64, steps: u64) -> u64 {
        for i in 0..steps {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i);
        }
        x
    }

    /// Sieves `flags` (one byte per number, 1 = prime) and returns the number of primes below
    /// `flags.len()`.
    pub fn sieve(flags: &mut [u8]) -> u64 {
        let n = flags.len();
        flags.fill(1);
        for f in flags.iter_mut().take(2) {
            *f = 0;
        }
        let mut i = 2;
        while i * i < n {
            if flags[i] != 0 {
                let mut j = i * i;
                while j < n {
                    flags[j] = 0;
                    j += i;
                }
            }
            i += 1;
        }
        flags.iter().map(|&f| u64::from(f)).sum()
    }

    /// `c = a * b` for row-major `n`x`n` matrices (i-k-j order, no fused multiply-add, so the
    /// result bits are the same wherever the same code runs).
    pub fn matmul(n: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
        let (a, b, c) = (&a[..n * n], &b[..n * n], &mut c[..n * n]);
        c.fill(0.0);
        for (ci, ai) in c.chunks_exact_mut(n).zip(a.chunks_exact(n)) {
            for (&aik, bk) in ai.iter().zip(b.chunks_exact(n)) {
                for (cij, &bkj) in ci.iter_mut().zip(bk) {
                    *cij += aik * bkj;
                }
            }
        }
    }

    /// Overwrites `next` with a random single cycle through all its indexes (Sattolo's
    /// algorithm): following `next` from any index visits every index before returning.
    pub fn sattolo(next: &mut [u32], rng: &mut super::SplitMix64) {
        for (i, v) in next.iter_mut().enumerate() {
            *v = i as u32;
        }
        for i in (1..next.len()).rev() {
            let j = rng.below(i as u64) as usize;
            next.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_hosts_vdso_clock_is_found_and_answers() {
        // AT_SYSINFO_EHDR from /proc/self/auxv: (type, value) pairs of u64
        let auxv = std::fs::read("/proc/self/auxv").unwrap();
        let base = auxv
            .chunks_exact(16)
            .map(|p| {
                let w = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().unwrap());
                (w(0), w(8))
            })
            .find(|(t, _)| *t == 33)
            .map(|(_, v)| v as usize)
            .expect("Linux gives every process a vDSO");
        // SAFETY: the kernel's AT_SYSINFO_EHDR of this process.
        let f = unsafe { vdso::symbol(base, b"__vdso_clock_gettime") }.expect("exported");
        // SAFETY: as above.
        let none = unsafe { vdso::symbol(base, b"__vdso_nothing_like_it") };
        assert_eq!(none, None);
        type Cgt = unsafe extern "C" fn(i32, *mut [i64; 2]) -> i32;
        // SAFETY: the vDSO's clock_gettime has clock_gettime(2)'s C signature.
        let f: Cgt = unsafe { std::mem::transmute::<usize, Cgt>(f) };
        let (mut a, mut b) = ([0i64; 2], [0i64; 2]);
        // SAFETY: writable timespecs; CLOCK_MONOTONIC is 1.
        let (ra, rb) = unsafe { (f(1, &mut a), f(1, &mut b)) };
        assert_eq!((ra, rb), (0, 0));
        assert!(b >= a && a[0] > 0, "{a:?} {b:?}");
        // not an ELF: nothing found
        let junk = [0u8; 256];
        // SAFETY: a readable buffer that is not an ELF image (only its magic is read).
        let none = unsafe { vdso::symbol(junk.as_ptr() as usize, b"__vdso_time") };
        assert_eq!(none, None);
    }

    #[test]
    fn names_are_unique_and_params_sound() {
        let mut names = HashSet::new();
        for t in TASKS {
            assert!(names.insert(t.name), "duplicate task {}", t.name);
            assert!(!t.name.contains(['=', ' ']), "{}", t.name);
            assert!(t.params.len() <= MAX_PARAMS, "{}", t.name);
            assert_eq!(
                t.params.last().map(|p| p.name),
                Some("iters"),
                "{}: iters last",
                t.name
            );
            let mut pn = HashSet::new();
            for p in t.params {
                assert!(pn.insert(p.name), "{}: duplicate param {}", t.name, p.name);
                assert!(!p.help.is_empty());
                match p.kind {
                    ParamKind::Int {
                        default,
                        quick,
                        min,
                        max,
                    } => {
                        assert!(min <= max, "{}.{}", t.name, p.name);
                        assert!(
                            (min..=max).contains(&default),
                            "{}.{} default",
                            t.name,
                            p.name
                        );
                        assert!((min..=max).contains(&quick), "{}.{} quick", t.name, p.name);
                        assert!(quick <= default, "{}.{} quick > default", t.name, p.name);
                    }
                    ParamKind::Str { default } => {
                        let mut inv = Invocation::defaults(t);
                        inv.set(p.name, default).unwrap();
                    }
                }
            }
        }
        for c in Class::ALL {
            assert!(TASKS.iter().any(|t| t.class == c), "no task of class {c}");
        }
    }

    #[test]
    fn find_and_class_parse() {
        for t in TASKS {
            assert_eq!(find(t.name), Some(t));
            assert_eq!(Class::parse(t.class.name()), Some(t.class));
        }
        assert_eq!(find("nope"), None);
        assert_eq!(find(""), None);
        assert_eq!(Class::parse("gpu"), None);
        assert_eq!(find("getpid").unwrap().op, "call");
    }

    #[test]
    fn integers() {
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("123"), Some(123));
        assert_eq!(parse_int("4k"), Some(4096));
        assert_eq!(parse_int("64M"), Some(64 << 20));
        assert_eq!(parse_int("2G"), Some(2 << 30));
        assert_eq!(parse_int("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "K",
            "-1",
            "+1",
            "1.5",
            "0x10",
            "1 ",
            "12a",
            "18446744073709551616",
            "17179869184G",
        ] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn argument_parsing() {
        let inv = parse_args(["sieve"]).unwrap();
        assert_eq!(inv, Invocation::defaults(find("sieve").unwrap()));
        let inv = parse_args(["sieve", "n=1000", "iters=7", "iters=9"]).unwrap();
        assert_eq!((inv.int("n"), inv.int("iters")), (1000, 9));
        let inv = parse_args(["openclose", "path=/etc/hostname"]).unwrap();
        assert_eq!(inv.str("path"), "/etc/hostname");

        assert_eq!(parse_args::<[&str; 0]>([]), Err(ArgError::NoTask));
        assert_eq!(parse_args(["nope"]), Err(ArgError::UnknownTask("nope")));
        assert_eq!(parse_args(["sieve", "n"]), Err(ArgError::NotKeyValue("n")));
        assert_eq!(
            parse_args(["sieve", "size=1"]),
            Err(ArgError::UnknownKey {
                task: "sieve",
                key: "size"
            })
        );
        assert_eq!(
            parse_args(["sieve", "iters=x"]),
            Err(ArgError::NotANumber {
                key: "iters",
                value: "x"
            })
        );
        assert!(matches!(
            parse_args(["sieve", "iters=0"]),
            Err(ArgError::OutOfRange { value: 0, .. })
        ));
        assert!(matches!(
            parse_args(["openclose", "path="]),
            Err(ArgError::BadString { .. })
        ));
        assert!(matches!(
            parse_args(["openclose", "path=a b"]),
            Err(ArgError::BadString { .. })
        ));
        let long = "x".repeat(MAX_STR_LEN + 1);
        assert!(matches!(
            parse_args(["openclose", long.as_str()]),
            Err(ArgError::NotKeyValue(_))
        ));
        let long = format!("path={long}");
        assert!(matches!(
            parse_args(["openclose", long.as_str()]),
            Err(ArgError::BadString { .. })
        ));
        let e = parse_args(["sieve", "n=1"]).unwrap_err().to_string();
        assert!(e.contains("n=1") && e.contains("out of range"), "{e}");
    }

    #[test]
    fn report_line() {
        for t in TASKS {
            for inv in [Invocation::defaults(t), Invocation::quick(t)] {
                let mut s = String::new();
                inv.write_report(&mut s, 42, 0xdead_beef).unwrap();
                assert!(s.ends_with('\n') && s.matches('\n').count() == 1);
                let words: Vec<&str> = s.split_whitespace().collect();
                assert_eq!(words[0], RESULT_PREFIX);
                assert_eq!(words[1], format!("task={}", t.name));
                let keys: Vec<&str> = words[2..]
                    .iter()
                    .map(|w| w.split_once('=').unwrap().0)
                    .collect();
                let mut want: Vec<&str> = t.params.iter().map(|p| p.name).collect();
                want.extend(["ns", "checksum"]);
                assert_eq!(keys, want);
                assert_eq!(words.last().unwrap(), &"checksum=00000000deadbeef");
            }
        }
        let mut s = String::new();
        parse_args(["memcopy", "size=1M", "iters=2"])
            .unwrap()
            .write_report(&mut s, 5, 1)
            .unwrap();
        assert_eq!(
            s,
            "VBENCH task=memcopy size=1048576 iters=2 ns=5 checksum=0000000000000001\n"
        );
    }

    #[test]
    fn usage_lists_every_task() {
        let mut s = String::new();
        write_usage(&mut s).unwrap();
        for t in TASKS {
            assert!(s.contains(t.name), "{}", t.name);
        }
    }

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_known_digests() {
        assert_eq!(
            hex(&sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256::digest(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(&sha256::digest(&vec![b'a'; 1_000_000])),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn kernels() {
        let mut f = vec![0u8; 100];
        assert_eq!(kernel::sieve(&mut f), 25);
        let mut f = vec![0u8; 1_000_000];
        assert_eq!(kernel::sieve(&mut f), 78_498);
        assert_eq!(kernel::sieve(&mut []), 0);
        assert_eq!(kernel::sieve(&mut [0; 3]), 1);

        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut c = [9.0; 4];
        kernel::matmul(2, &a, &b, &mut c);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);

        assert_eq!(kernel::intmix(1, 0), 1);
        assert_ne!(kernel::intmix(1, 10), kernel::intmix(2, 10));

        let mut next = vec![0u32; 1000];
        kernel::sattolo(&mut next, &mut SplitMix64::new(7));
        let (mut i, mut steps) = (0usize, 0);
        loop {
            i = next[i] as usize;
            steps += 1;
            if i == 0 {
                break;
            }
        }
        assert_eq!(steps, 1000, "one cycle through every slot");
    }

    /// The checksum of one fold.
    fn sum(f: impl FnOnce(&mut Checksum)) -> u64 {
        let mut c = Checksum::new();
        f(&mut c);
        c.value()
    }

    #[test]
    fn pids_fold_the_comparison_with_the_first_answer_not_the_pid() {
        let run = |pids: &[usize]| {
            let mut f = fold::Pids::default();
            pids.iter().for_each(|&p| f.add(p));
            sum(|c| f.fold(c))
        };
        let good = run(&[2, 2, 2, 2]);
        // every backend's own pid gives the same checksum (native, container pid 2, ...)
        assert_eq!(run(&[4711, 4711, 4711, 4711]), good);
        // one wrong answer, a wrong first answer, a zero pid or a missing call change it
        assert_ne!(run(&[2, 2, 3, 2]), good);
        assert_ne!(run(&[3, 2, 2, 2]), good);
        assert_ne!(run(&[0, 0, 0, 0]), good);
        assert_ne!(run(&[2, 2, 2]), good);
    }

    #[test]
    fn transfers_fold_the_byte_counts_and_the_descriptor() {
        let run = |fd: usize, size: usize, ns: &[usize]| {
            let mut f = fold::Transfers::new(fd, size);
            ns.iter().for_each(|&n| f.add(n));
            sum(|c| f.fold(c))
        };
        let good = run(3, 8, &[8, 8, 8]);
        assert_eq!(run(7, 8, &[8, 8, 8]), good, "any new descriptor");
        assert_ne!(run(3, 8, &[8, 7, 8]), good, "a short transfer");
        assert_ne!(run(3, 8, &[8, 8, 8, 8]), good, "one call more");
        assert_ne!(
            run(1, 8, &[8, 8, 8]),
            good,
            "stdout handed out as the new descriptor"
        );
        // a short count made up by a long one keeps the total but not the full-call count
        assert_ne!(run(3, 8, &[8, 4, 12]), good);
    }

    #[test]
    fn reopens_fold_the_descriptors_and_the_closes() {
        let run = |pairs: &[(usize, usize)]| {
            let mut f = fold::Reopens::default();
            pairs.iter().for_each(|&(fd, r)| f.add(fd, r));
            sum(|c| f.fold(c))
        };
        let good = run(&[(3, 0), (3, 0), (3, 0)]);
        assert_eq!(run(&[(5, 0), (5, 0), (5, 0)]), good);
        assert_ne!(run(&[(3, 0), (4, 0), (3, 0)]), good, "a descriptor leaked");
        assert_ne!(run(&[(3, 0), (3, 1), (3, 0)]), good, "a close answered 1");
        assert_ne!(run(&[(0, 0), (0, 0), (0, 0)]), good, "stdin handed out");
    }

    #[test]
    fn clock_folds_monotonicity_and_the_count_not_the_readings() {
        let run = |start: u64, ts: &[u64]| {
            let mut f = fold::Clock::new(start);
            ts.iter().for_each(|&t| f.add(t));
            sum(|c| f.fold(c))
        };
        let good = run(100, &[100, 150, 150, 400]);
        assert_eq!(
            run(7, &[9, 10, 11, 12]),
            good,
            "other readings, same properties"
        );
        assert_ne!(run(100, &[100, 90, 150, 400]), good, "a step backwards");
        assert_ne!(
            run(100, &[100, 100, 100, 100]),
            good,
            "a clock that stands still"
        );
        assert_ne!(run(100, &[100, 150, 400]), good, "a call fewer");
    }

    #[test]
    fn maps_fold_alignment_unmaps_and_the_fresh_pages() {
        let run = |pairs: &[(usize, usize)], pages: &[(bool, bool)]| {
            let mut f = fold::Maps::default();
            pairs.iter().for_each(|&(a, r)| f.add(a, r));
            pages.iter().for_each(|&(z, k)| f.page(z, k));
            sum(|c| f.fold(c))
        };
        let ok = [(true, true); 2];
        let good = run(&[(0x7000_0000, 0), (0x7000_1000, 0)], &ok);
        assert_eq!(
            run(&[(0x1000, 0), (0x1000, 0)], &ok),
            good,
            "any aligned addresses"
        );
        assert_ne!(
            run(&[(0x7000_0010, 0), (0x7000_1000, 0)], &ok),
            good,
            "unaligned"
        );
        assert_ne!(run(&[(0, 0), (0x7000_1000, 0)], &ok), good, "null");
        assert_ne!(
            run(&[(0x1000, 1), (0x1000, 0)], &ok),
            good,
            "munmap answered 1"
        );
        let dirty = [(false, true), (true, true)];
        assert_ne!(
            run(&[(0x1000, 0), (0x1000, 0)], &dirty),
            good,
            "a fresh page not zero"
        );
        let lost = [(true, true), (true, false)];
        assert_ne!(
            run(&[(0x1000, 0), (0x1000, 0)], &lost),
            good,
            "a write not kept"
        );
    }

    #[test]
    fn the_system_call_folds_differ_from_each_other() {
        let mut p = fold::Pids::default();
        p.add(1);
        let mut t = fold::Clock::new(0);
        t.add(1);
        // one call each, all correct: still different checksums
        assert_ne!(sum(|c| p.fold(c)), sum(|c| t.fold(c)));
    }

    #[test]
    fn checksum_and_rng_are_fixed() {
        // The values are part of the result format: a change here changes every checksum.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        let mut c = Checksum::new();
        c.bytes(b"abc");
        let v = c.value();
        let mut d = Checksum::new();
        d.word(0x0063_6261);
        d.word(3);
        assert_eq!(v, d.value());
        assert_ne!(Checksum::new().value(), v);
        for _ in 0..1000 {
            let x = r.signed_unit();
            assert!((-1.0..1.0).contains(&x));
            assert!(r.below(10) < 10);
        }
    }
}
