//! The probe catalogue: tasks of the workload ELF that each make one escape or limit attempt
//! (or observe one sensitive instruction) and print one line, kept apart from [`crate::TASKS`]
//! so the benchmark tasks and their checksums are untouched.
//!
//! # Command line and result line
//! `vbench-workload PROBE [key=value ...]`, the keys being what the harness prepared on the host
//! (see [`Probe::keys`]). The probe prints exactly one line and exits 0, whatever it observed:
//!
//! ```text
//! VBENCH-PROBE probe=<name> outcome=escaped|contained|observed|error detail=<text>
//! ```
//!
//! `detail` has no spaces (they are written as `_`). A probe that is killed (by a limit) prints
//! nothing; the harness judges such runs itself.
//!
//! ```
//! use vbench_workloads::probes::{parse_line, find, ProbeOutcome, Expect};
//! let l = parse_line("VBENCH-PROBE probe=hostname outcome=escaped detail=vm\n").unwrap();
//! assert_eq!((l.probe, l.outcome, l.detail), ("hostname", ProbeOutcome::Escaped, "vm"));
//! assert_eq!(find("hostname").unwrap().expect("container"), Expect::Contained);
//! ```

use core::fmt;

/// The first word of a probe's result line.
pub const PREFIX: &str = "VBENCH-PROBE";

/// What a probe is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Seeing or reaching something of the host.
    Visibility,
    /// Doing something only the host's root may do.
    Privilege,
    /// Using more of a resource than allowed.
    Limit,
    /// Code that a binary translator or a VM must handle specially (self-modifying code, ...).
    Translation,
    /// An x86 instruction that is sensitive but not privileged (Popek-Goldberg), or CPUID/RDTSC:
    /// the probe records what it returns at CPL3.
    Instruction,
    /// The machine's edges that a VM must contain: addresses outside RAM, system-call pointers
    /// outside memory, MSRs no CPU has, more memory than the machine has. Observed everywhere,
    /// compared against native.
    Vm,
}

impl Kind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Visibility => "visibility",
            Kind::Privilege => "privilege",
            Kind::Limit => "limit",
            Kind::Translation => "translation",
            Kind::Instruction => "instruction",
            Kind::Vm => "vm",
        }
    }
}

/// What a backend must do with a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The attempt must fail (for native: the probe would be pointless there).
    Contained,
    /// The attempt succeeds: on native this is the control that shows the probe works; on other
    /// backends it is a documented permission (the reason says why it is acceptable).
    Escapes,
    /// Nothing is contained or escaped: the probe records an observation (an instruction's value).
    Observe,
    /// The probe means nothing on this backend, for the reason given.
    NotApplicable(&'static str),
}

impl Expect {
    /// Short name: `contained`, `escapes`, `observe`, `n/a`.
    pub fn name(self) -> &'static str {
        match self {
            Expect::Contained => "contained",
            Expect::Escapes => "escapes",
            Expect::Observe => "observe",
            Expect::NotApplicable(_) => "n/a",
        }
    }
}

/// What a probe observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The attempt succeeded.
    Escaped,
    /// The attempt was refused or found nothing of the host.
    Contained,
    /// An observation without a verdict (instruction and translation probes).
    Observed,
    /// The probe could not make its attempt (bad parameter, unexpected failure).
    Error,
}

impl ProbeOutcome {
    /// The word on the result line.
    pub fn name(self) -> &'static str {
        match self {
            ProbeOutcome::Escaped => "escaped",
            ProbeOutcome::Contained => "contained",
            ProbeOutcome::Observed => "observed",
            ProbeOutcome::Error => "error",
        }
    }

    /// The outcome called `s`.
    pub fn parse(s: &str) -> Option<ProbeOutcome> {
        [
            ProbeOutcome::Escaped,
            ProbeOutcome::Contained,
            ProbeOutcome::Observed,
            ProbeOutcome::Error,
        ]
        .into_iter()
        .find(|o| o.name() == s)
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The name, the first argument of the ELF.
    pub name: &'static str,
    /// What it is about.
    pub kind: Kind,
    /// What it tries, in one line.
    pub summary: &'static str,
    /// The `key=value` arguments it needs from the harness.
    pub keys: &'static [&'static str],
    /// Expectation natively (the control).
    pub native: Expect,
    /// Expectation in the container backend.
    pub container: Expect,
    /// Expectation under binary translation.
    pub bt: Expect,
    /// Expectation in the KVM micro-VM.
    pub kvm: Expect,
}

impl Probe {
    /// The expectation on the backend called `backend`; n/a for a backend not known here.
    pub fn expect(&self, backend: &str) -> Expect {
        match backend {
            "native" => self.native,
            "container" => self.container,
            "bt" => self.bt,
            "kvm" => self.kvm,
            _ => Expect::NotApplicable("unknown backend"),
        }
    }
}

/// bt and kvm share the host kernel's view only through `linux_abi`; until they land their
/// expectations are what the design requires of them.
const GUEST: Expect = Expect::Contained;

/// bt is a host process like native: limits come from running it inside a container.
const NO_BT_LIMITS: Expect =
    Expect::NotApplicable("bt enforces no resource limits: it is an ordinary host process");

const fn escape(
    name: &'static str,
    kind: Kind,
    summary: &'static str,
    keys: &'static [&'static str],
) -> Probe {
    Probe {
        name,
        kind,
        summary,
        keys,
        native: Expect::Escapes,
        container: Expect::Contained,
        bt: GUEST,
        kvm: GUEST,
    }
}

const fn observe(name: &'static str, kind: Kind, summary: &'static str) -> Probe {
    Probe {
        name,
        kind,
        summary,
        keys: &[],
        native: Expect::Observe,
        container: Expect::Observe,
        bt: Expect::Observe,
        kvm: Expect::Observe,
    }
}

const fn with_container(p: Probe, container: Expect) -> Probe {
    Probe { container, ..p }
}

const fn everywhere(p: Probe, e: Expect) -> Probe {
    Probe {
        native: e,
        container: e,
        bt: e,
        kvm: e,
        ..p
    }
}

use Kind::*;

/// Every probe.
pub const PROBES: &[Probe] = &[
    // --- visibility ---
    escape(
        "proc_list",
        Visibility,
        "list /proc and look for the harness's host process",
        &["host_pid"],
    ),
    escape(
        "signal_host",
        Visibility,
        "send SIGCONT (harmless) to a sleeping host process",
        &["host_pid"],
    ),
    escape(
        "hostname",
        Visibility,
        "uname(2) node name equals the host's",
        &["hostname"],
    ),
    escape(
        "mounts",
        Visibility,
        "a host mount point appears in /proc/self/mountinfo",
        &["mnt"],
    ),
    escape(
        "tcp_loopback",
        Visibility,
        "connect to the harness's TCP listener on host 127.0.0.1",
        &["port"],
    ),
    escape(
        "net_ifaces",
        Visibility,
        "a host network interface appears in /proc/net/dev",
        &["iface"],
    ),
    escape(
        "sysv_shm",
        Visibility,
        "attach the harness's SysV shared memory segment and read its magic",
        &["shm_id", "magic"],
    ),
    escape(
        "host_root",
        Visibility,
        "uid 0 in the initial user namespace with every capability",
        &[],
    ),
    escape(
        "cgroup_ns",
        Visibility,
        "the cgroup namespace is the host's (and /proc/self/cgroup shows host paths)",
        &["ns"],
    ),
    Probe {
        bt: Expect::NotApplicable(
            "bt passes the host's clocks through: it has no time namespace to offset them",
        ),
        kvm: Expect::NotApplicable(
            "the VMM answers clock_gettime from the host's clocks: the micro-VM offers no clock offset",
        ),
        ..escape(
            "time_ns",
            Visibility,
            "CLOCK_BOOTTIME within 60 s of the host's",
            &["boot_s"],
        )
    },
    escape(
        "pid_ns",
        Visibility,
        "the pid namespace is the host's",
        &["ns"],
    ),
    escape(
        "ipc_ns",
        Visibility,
        "the IPC namespace is the host's",
        &["ns"],
    ),
    // --- privilege ---
    escape(
        "core_pattern",
        Privilege,
        "open /proc/sys/kernel/core_pattern for writing (nothing is written)",
        &[],
    ),
    escape(
        "release_agent",
        Privilege,
        "open a cgroup v1 release_agent for writing (CVE-2022-0492; nothing written)",
        &["path"],
    ),
    escape(
        "mount",
        Privilege,
        "mount(2) of a nonexistent file system type: ENODEV means permitted, nothing mounted",
        &[],
    ),
    escape(
        "mknod_block",
        Privilege,
        "mknod a block device node (loop0) in a scratch directory, then remove it",
        &["dir"],
    ),
    escape("dev_kvm", Privilege, "open /dev/kvm read-write", &[]),
    escape("dev_mem", Privilege, "open /dev/mem read-only", &[]),
    escape(
        "init_module",
        Privilege,
        "init_module with an empty image: ENOEXEC means permitted, nothing loaded",
        &[],
    ),
    escape(
        "ptrace_host",
        Privilege,
        "PTRACE_SEIZE a host process (never stopped; detached at exit)",
        &["host_pid"],
    ),
    escape(
        "open_by_handle",
        Privilege,
        "open_by_handle_at on the root file system (the shocker escape)",
        &[],
    ),
    escape(
        "reboot",
        Privilege,
        "reboot(2) with invalid magic: EINVAL means permitted, nothing happens",
        &[],
    ),
    escape(
        "kexec_load",
        Privilege,
        "kexec_load with invalid flags: EINVAL means permitted, nothing loaded",
        &[],
    ),
    with_container(
        escape("raw_socket", Privilege, "open an AF_INET raw socket", &[]),
        Expect::Escapes, // CAP_NET_RAW as in Docker's default set, in the container's own net ns
    ),
    escape(
        "host_file",
        Privilege,
        "read a host file by its path",
        &["path", "magic"],
    ),
    escape(
        "proc_root",
        Privilege,
        "read a host file through /proc/<host pid>/root",
        &["host_pid", "path", "magic"],
    ),
    // --- limits ---
    Probe {
        bt: NO_BT_LIMITS,
        ..escape(
            "memory",
            Limit,
            "touch `mb` MiB of anonymous memory",
            &["mb"],
        )
    },
    Probe {
        bt: NO_BT_LIMITS,
        ..escape(
            "fork_bomb",
            Limit,
            "fork up to `n` sleeping children (bounded), count the successes, kill them",
            &["n"],
        )
    },
    Probe {
        bt: NO_BT_LIMITS,
        kvm: Expect::NotApplicable("the VMM sets no CPU quota"),
        ..escape(
            "cpu_quota",
            Limit,
            "spin for `ms` ms; escaped when the share of one CPU is 0.15 above `quota`",
            &["ms", "quota"],
        )
    },
    everywhere(
        escape(
            "stdout_flood",
            Limit,
            "write 100 MiB to stdout after the result line; the harness must stay bounded",
            &[],
        ),
        Expect::Contained,
    ),
    everywhere(
        escape(
            "never_exits",
            Limit,
            "spin forever: the harness's timeout must end it",
            &[],
        ),
        Expect::Contained,
    ),
    escape(
        "file_size",
        Limit,
        "write a `mb` MiB file into a scratch directory, then remove it",
        &["dir", "mb"],
    ),
    // --- translation ---
    observe(
        "smc",
        Translation,
        "self-modifying code: patch an immediate and call again",
    ),
    observe(
        "hidden_syscall",
        Translation,
        "a syscall instruction in data, jumped to",
    ),
    observe(
        "mid_insn_jump",
        Translation,
        "jump into the middle of an instruction",
    ),
    observe(
        "int80",
        Translation,
        "int 0x80 (the 32-bit syscall gate) from 64-bit code",
    ),
    observe(
        "far_jump32",
        Translation,
        "far return to the 32-bit code segment 0x23 and back to 0x33",
    ),
    observe(
        "popf_tf",
        Translation,
        "set the trap flag with popf: one SIGTRAP after the next instruction",
    ),
    // --- Popek-Goldberg: sensitive but unprivileged instructions, plus CPUID and RDTSC ---
    observe("sgdt", Instruction, "SGDT: GDT base and limit"),
    observe("sidt", Instruction, "SIDT: IDT base and limit"),
    observe("sldt", Instruction, "SLDT: LDT selector"),
    observe("smsw", Instruction, "SMSW: low bits of CR0"),
    observe("str", Instruction, "STR: task register selector"),
    observe("pushf", Instruction, "PUSHF: IF and IOPL as seen at CPL3"),
    observe("popf", Instruction, "POPF clearing IF: silently ignored?"),
    observe("lar", Instruction, "LAR of the user code selector"),
    observe("lsl", Instruction, "LSL of the user data selector"),
    observe(
        "verr",
        Instruction,
        "VERR/VERW of the user and kernel code selectors",
    ),
    observe("mov_sreg", Instruction, "MOV from CS, SS, DS, ES, FS, GS"),
    observe(
        "push_pop_sreg",
        Instruction,
        "PUSH FS / POP FS and MOV to DS of the null selector",
    ),
    observe(
        "far_call",
        Instruction,
        "far CALL through memory to CS:label and far RET",
    ),
    observe("int3", Instruction, "INT3 and INT 0x81 (no gate at DPL3)"),
    observe(
        "cpuid",
        Instruction,
        "CPUID: vendor, hypervisor bit and hypervisor vendor",
    ),
    // privileged instructions, for contrast: these must trap at CPL3
    observe("rdmsr", Instruction, "RDMSR of the TSC MSR (privileged)"),
    observe("hlt", Instruction, "HLT (privileged)"),
    observe("cli", Instruction, "CLI with IOPL 0 (IOPL-sensitive)"),
    observe(
        "port_in",
        Instruction,
        "IN from port 0x80 without I/O permission",
    ),
    observe(
        "rdtsc",
        Instruction,
        "RDTSC: monotonic, and its rate against CLOCK_MONOTONIC",
    ),
    // --- the machine's edges ---
    observe(
        "wild_read",
        Vm,
        "load from 64 TiB: an address (guest-physical in a VM) outside any RAM",
    ),
    observe(
        "efault_read",
        Vm,
        "read(2) into 64 TiB, across it and into the kernel half: EFAULT, nothing else",
    ),
    observe(
        "unknown_msr",
        Vm,
        "RDMSR of MSR 0xc0de0000, which no CPU has",
    ),
    observe(
        "huge_mmap",
        Vm,
        "mmap 16 GiB (MAP_NORESERVE, untouched): beyond a VM's RAM",
    ),
];

/// The probe called `name`.
pub fn find(name: &str) -> Option<&'static Probe> {
    PROBES.iter().find(|p| p.name == name)
}

/// A parsed probe result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The probe's name.
    pub probe: &'a str,
    /// What it observed.
    pub outcome: ProbeOutcome,
    /// Free text without spaces.
    pub detail: &'a str,
}

/// Why a probe line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// No line starts with [`PREFIX`].
    Missing,
    /// A field is missing or malformed; names the field.
    Field(&'static str),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Missing => write!(f, "no {PREFIX} line"),
            LineError::Field(k) => write!(f, "{PREFIX} line has no valid {k}="),
        }
    }
}

/// Finds and parses the first probe line in `out` (other lines are ignored).
pub fn parse_line(out: &str) -> Result<Line<'_>, LineError> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(PREFIX).filter(|r| r.starts_with(' ')))
        .ok_or(LineError::Missing)?;
    let field = |k: &'static str| {
        line.split(' ')
            .find_map(|w| w.strip_prefix(k).and_then(|w| w.strip_prefix('=')))
            .ok_or(LineError::Field(k))
    };
    let probe = field("probe")?;
    let outcome = ProbeOutcome::parse(field("outcome")?).ok_or(LineError::Field("outcome"))?;
    let detail = field("detail")?;
    if probe.is_empty() {
        return Err(LineError::Field("probe"));
    }
    Ok(Line {
        probe,
        outcome,
        detail,
    })
}

/// Writes a probe line; spaces and control characters of `detail` become `_`.
pub fn write_line<W: fmt::Write + ?Sized>(
    w: &mut W,
    probe: &str,
    outcome: ProbeOutcome,
    detail: &str,
) -> fmt::Result {
    write!(
        w,
        "{PREFIX} probe={probe} outcome={} detail=",
        outcome.name()
    )?;
    if detail.is_empty() {
        w.write_char('-')?;
    }
    for c in detail.chars() {
        w.write_char(if c.is_ascii_graphic() { c } else { '_' })?;
    }
    w.write_char('\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn catalogue_is_sound() {
        assert!(PROBES.len() >= 40, "{}", PROBES.len());
        let mut names = HashSet::new();
        for p in PROBES {
            assert!(names.insert(p.name), "duplicate probe {}", p.name);
            assert!(crate::find(p.name).is_none(), "{} is also a task", p.name);
            assert!(p
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            // native is the control: every escape probe must escape there
            match p.kind {
                Kind::Translation | Kind::Instruction | Kind::Vm => {
                    assert_eq!(p.native, Expect::Observe, "{}", p.name)
                }
                _ => assert!(
                    matches!(p.native, Expect::Escapes | Expect::Contained),
                    "{}",
                    p.name
                ),
            }
            for k in p.keys {
                assert!(!k.contains(['=', ' ']), "{}", p.name);
            }
        }
        assert_eq!(
            find("raw_socket").unwrap().expect("container"),
            Expect::Escapes
        );
        assert_eq!(
            find("stdout_flood").unwrap().expect("native"),
            Expect::Contained
        );
        assert!(matches!(
            find("sgdt").unwrap().expect("vm"),
            Expect::NotApplicable(_)
        ));
    }

    #[test]
    fn lines_round_trip() {
        let mut s = String::new();
        write_line(
            &mut s,
            "mounts",
            ProbeOutcome::Contained,
            "seen 3 mounts\tno /sys",
        )
        .unwrap();
        assert_eq!(
            s,
            "VBENCH-PROBE probe=mounts outcome=contained detail=seen_3_mounts_no_/sys\n"
        );
        let text = format!("noise\n{s}more\n");
        let l = parse_line(&text).unwrap();
        assert_eq!(l.probe, "mounts");
        assert_eq!(l.outcome, ProbeOutcome::Contained);
        assert_eq!(l.detail, "seen_3_mounts_no_/sys");
        let mut e = String::new();
        write_line(&mut e, "x", ProbeOutcome::Error, "").unwrap();
        assert_eq!(parse_line(&e).unwrap().detail, "-");
    }

    #[test]
    fn bad_lines() {
        assert_eq!(parse_line(""), Err(LineError::Missing));
        assert_eq!(parse_line("VBENCH task=x"), Err(LineError::Missing));
        assert_eq!(
            parse_line("VBENCH-PROBE probe=x outcome=maybe detail=y"),
            Err(LineError::Field("outcome"))
        );
        assert_eq!(
            parse_line("VBENCH-PROBE probe=x outcome=escaped"),
            Err(LineError::Field("detail"))
        );
        assert_eq!(
            parse_line("VBENCH-PROBE-X probe=x outcome=escaped detail=y"),
            Err(LineError::Missing)
        );
    }
}
