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
    /// Every kind, in catalogue order.
    pub const ALL: [Kind; 6] = [
        Kind::Visibility,
        Kind::Privilege,
        Kind::Limit,
        Kind::Translation,
        Kind::Instruction,
        Kind::Vm,
    ];

    /// The kind called `s` (as printed by [`Kind::name`]).
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether its probes record an observation instead of escaping or being contained.
    pub fn observes(self) -> bool {
        matches!(self, Kind::Translation | Kind::Instruction | Kind::Vm)
    }

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
    /// The attempt succeeds by this level's design and reaches the host, for the reason given
    /// (which the verdict's note carries): e.g. gVisor's `runsc do` showing the host's files.
    Permitted(&'static str),
    /// The attempt succeeds, but inside this level's own kernel, machine or namespace, not on
    /// the host (the reason, in the verdict's note, says where): e.g. root of a guest kernel
    /// acting on that kernel. The host is kept from it as if it were contained.
    Inside(&'static str),
}

impl Expect {
    /// Short name: `contained`, `escapes`, `inside`, `observe`, `n/a`.
    pub fn name(self) -> &'static str {
        match self {
            Expect::Contained => "contained",
            Expect::Escapes | Expect::Permitted(_) => "escapes",
            Expect::Inside(_) => "inside",
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

/// The backend whose run is every probe's control: where each escape must succeed, so that
/// "contained" elsewhere means something.
pub const CONTROL: &str = "native";

/// What each backend must do with a probe: the expectation of every backend not named, and the
/// exceptions by backend name, so a new backend needs no entry in any probe that expects of it
/// what it expects of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectations {
    /// The expectation of every backend that [`Expectations::on`] does not name.
    pub default: Expect,
    /// Exceptions, by backend name.
    pub on: &'static [(&'static str, Expect)],
}

impl Expectations {
    /// The expectation on the backend called `backend`.
    pub fn get(&self, backend: &str) -> Expect {
        let named = |name: &str| self.on.iter().find_map(|&(b, e)| (b == name).then_some(e));
        named(backend)
            .or_else(|| {
                (backend == CONTAINER_HOST)
                    .then(|| named("container"))
                    .flatten()
            })
            .unwrap_or(self.default)
    }
}

/// Where the harness takes the value of one of a probe's arguments from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This text.
    Text(&'static str),
    /// The pid of the harness's sleeping host process (a fixture).
    HostPid,
    /// The host's node name.
    Hostname,
    /// The port of the harness's TCP listener on host 127.0.0.1 (a fixture).
    Port,
    /// A host network interface other than `lo` (see [`Need::Interface`]).
    Interface,
    /// The id of the harness's SysV shared memory segment (a fixture).
    ShmId,
    /// The magic number in the segment and in the host file (a fixture).
    Magic,
    /// The inode of the harness's own namespace of this type (`/proc/self/ns/<type>`).
    Namespace(&'static str),
    /// The host's CLOCK_BOOTTIME in whole seconds.
    BootSeconds,
    /// A cgroup v1 `release_agent` file of the host (see [`Need::ReleaseAgent`]).
    ReleaseAgent,
    /// The path of the host file holding the magic number (a fixture).
    HostFile,
    /// A directory to write in: the harness's scratch directory on the [`CONTROL`], the
    /// backend's own `/tmp` elsewhere.
    ScratchDir,
    /// This multiple of the memory limit, in MiB.
    MemoryLimitMib(u64),
    /// This multiple of the task limit.
    TaskLimit(u64),
    /// The CPU quota, a fraction of one CPU with three decimals.
    CpuQuota,
}

/// One `key=value` argument of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    /// The key.
    pub key: &'static str,
    /// Where the harness takes the value from.
    pub from: Source,
}

const fn arg(key: &'static str, from: Source) -> Arg {
    Arg { key, from }
}

/// A host condition without which a probe means nothing on any backend (the control could
/// not show anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// vbench runs as root.
    Root,
    /// The host has a `/sys` mount.
    SysMount,
    /// The host has a network interface besides `lo`.
    Interface,
    /// The host has a cgroup v1 hierarchy with a `release_agent`.
    ReleaseAgent,
    /// The host has `/dev/kvm`.
    DevKvm,
    /// The host has `/dev/mem`.
    DevMem,
}

impl Need {
    /// Why the probe is n/a when the host lacks this.
    pub fn reason(self) -> &'static str {
        match self {
            Need::Root => "vbench is not root: the native control cannot escape",
            Need::SysMount => "the host has no /sys mount to look for",
            Need::Interface => "the host has no interface besides lo",
            Need::ReleaseAgent => "the host has no cgroup v1 hierarchy",
            Need::DevKvm => "the host has no /dev/kvm",
            Need::DevMem => "the host has no /dev/mem",
        }
    }
}

/// How the harness judges a run of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    /// By the probe's own line, against the expectation.
    Line,
    /// The probe writes its line, then floods stdout with this many bytes: contained when the
    /// harness kept a bounded part of them.
    StdoutFlood {
        /// Bytes the probe writes after its line.
        bytes: u64,
    },
    /// The probe never ends: contained when the harness's timeout, this short, killed it.
    Timeout {
        /// The run's timeout in milliseconds.
        ms: u64,
    },
    /// By the line; but a SIGKILL without a line off the control is the memory limit's OOM
    /// kill: contained, with the cgroup's peak against the limit.
    OomKill,
}

/// What the harness adds to a contained verdict under a limit: how close the limit was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accuracy {
    /// Nothing.
    None,
    /// The measured share of one CPU (detail `share=`) against the CPU quota.
    CpuShare,
    /// The children forked (detail `forked=`) against the task limit.
    Tasks,
}

/// One probe: what it tries, what the harness must prepare for it and how its runs are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The name, the first argument of the ELF.
    pub name: &'static str,
    /// What it is about.
    pub kind: Kind,
    /// What it tries, in one line.
    pub summary: &'static str,
    /// The `key=value` arguments it needs from the harness.
    pub args: &'static [Arg],
    /// What the host must have for the probe to mean anything.
    pub needs: &'static [Need],
    /// What each backend must do with it.
    pub expect: Expectations,
    /// How the harness judges a run.
    pub judge: Judge,
    /// What the harness adds to a contained verdict under a limit.
    pub accuracy: Accuracy,
    /// Runs of the control until it escapes (more than one for a probe whose control depends
    /// on what else the machine runs).
    pub control_attempts: u32,
    /// For an instruction probe, what the x86 architecture makes of it at CPL3 (Popek and
    /// Goldberg's classes); `None` for every other probe.
    pub cpl3: Option<Cpl3>,
}

/// What x86 makes of an instruction at CPL3, in Popek and Goldberg's terms: what a report
/// compares each level's observation against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpl3 {
    /// Sensitive (it reads or changes privileged state) but not privileged: it completes at
    /// CPL3 without a trap, so a trap-and-emulate VMM never sees it (Robin and Irvine's list).
    Sensitive,
    /// Privileged: it faults at CPL3, so a VMM can trap and emulate it.
    Privileged,
    /// Neither: an ordinary instruction whose result a level may still change (CPUID, RDTSC,
    /// INT3).
    Unrestricted,
}

impl Cpl3 {
    /// Lower-case name, as results documents record it.
    pub fn name(self) -> &'static str {
        match self {
            Cpl3::Sensitive => "sensitive",
            Cpl3::Privileged => "privileged",
            Cpl3::Unrestricted => "unrestricted",
        }
    }
}

impl Probe {
    /// The expectation on the backend called `backend`: [`OWN_KERNEL`]'s where it names the
    /// pair, else the probe's own.
    pub fn expect(&self, backend: &str) -> Expect {
        OWN_KERNEL
            .iter()
            .find_map(|&(b, p, e)| (b == backend && p == self.name).then_some(e))
            .unwrap_or_else(|| self.expect.get(backend))
    }

    /// The keys of its arguments.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> {
        self.args.iter().map(|a| a.key)
    }
}

/// bt's column under the host policy of its guest's system calls (`--abi host`, what `exec` and
/// `run -- PROGRAM` use); the column named `bt` is the confined policy.
pub const BT_HOST: &str = "bt/host";
/// kvm's column under the host policy; the column named `kvm` is the confined policy.
pub const KVM_HOST: &str = "kvm/host";
/// The container's column with the host root (`--rootfs host`, what `exec` and `run -- PROGRAM`
/// use); the column named `container` has the minimal root. Where a probe names no expectation
/// of its own for it, the container's holds.
pub const CONTAINER_HOST: &str = "container/host";

/// The whole-OS VM's column: the program in a Linux guest of its own under QEMU.
pub const VM: &str = "vm";
/// gVisor's column: the program on gVisor's user-space kernel (`runsc do`).
pub const GVISOR: &str = "gvisor";

const GUEST_ROOT: Expect = Expect::Inside(
    "the guest's root acting on the guest's own kernel and virtual devices: the VM boundary, \
     not a lack of privilege, is what contains it",
);
const GUEST_NAMESPACE: Expect = Expect::NotApplicable(
    "another kernel: the guest's initial namespaces carry the same well-known inode numbers as \
     the host's (every kernel numbers them alike), so the comparison cannot tell them apart",
);
const VM_BOUNDS: Expect = Expect::Inside(
    "the guest kernel sets no limit of its own: the VM as a whole is what is bounded (one vCPU, \
     --vm-mem of RAM, a disk-less RAM root)",
);
const OWN_SYSFS: Expect = Expect::NotApplicable(
    "/sys there is that kernel's own sysfs, not the host's: a mount point's name cannot tell",
);
const NO_GVISOR_LIMITS: Expect = Expect::NotApplicable(
    "gVisor runs here without cgroups (runsc --ignore-cgroups; like the other peers, no limits \
     are set)",
);

/// Levels that run the program on a kernel of their own (the whole-OS VM's guest Linux,
/// gVisor's Sentry): where a probe's attempt lands on that kernel, not the host's, and so
/// means something else than on the levels that share the host's kernel. (backend, probe,
/// expectation); [`Probe::expect`] takes these first.
pub const OWN_KERNEL: &[(&str, &str, Expect)] = &[
    (VM, "pid_ns", GUEST_NAMESPACE),
    (VM, "ipc_ns", GUEST_NAMESPACE),
    (VM, "cgroup_ns", GUEST_NAMESPACE),
    (VM, "mounts", OWN_SYSFS),
    (
        VM,
        "host_root",
        Expect::Inside("root of the guest's own kernel, with all its capabilities"),
    ),
    (VM, "mknod_block", GUEST_ROOT),
    (VM, "mount", GUEST_ROOT),
    (VM, "core_pattern", GUEST_ROOT),
    (VM, "open_by_handle", GUEST_ROOT),
    (VM, "reboot", GUEST_ROOT),
    (VM, "raw_socket", GUEST_ROOT),
    (VM, "fork_bomb", VM_BOUNDS),
    (VM, "cpu_quota", VM_BOUNDS),
    (VM, "file_size", VM_BOUNDS),
    (GVISOR, "mounts", OWN_SYSFS),
    (
        GVISOR,
        "host_root",
        Expect::Inside("root of gVisor's kernel (the Sentry), not of the host's"),
    ),
    (
        GVISOR,
        "mknod_block",
        Expect::Inside("the node is made in gVisor's own file system; no host device is reached"),
    ),
    (
        GVISOR,
        "hostname",
        Expect::Permitted("runsc do gives the sandbox the host's hostname"),
    ),
    (
        GVISOR,
        "host_file",
        Expect::Permitted(
            "runsc do shows the host's root read-only under a tmpfs overlay, as container/host does",
        ),
    ),
    (GVISOR, "fork_bomb", NO_GVISOR_LIMITS),
    (GVISOR, "cpu_quota", NO_GVISOR_LIMITS),
    (GVISOR, "memory", NO_GVISOR_LIMITS),
    (GVISOR, "file_size", NO_GVISOR_LIMITS),
];

/// An escape that the host policy makes as the program would natively: bt and kvm guests under
/// it act on the host with the host process's identity (its files, sockets, /proc, uid and
/// capabilities, namespaces, clocks), so they contain what qemu-user does, nothing but the
/// sensitive instructions. Everywhere else (the container, bt and kvm confined to the files on
/// the command line) it must be contained.
const ESCAPES_NATIVELY: Expectations = Expectations {
    default: Expect::Contained,
    on: &[
        (CONTROL, Expect::Escapes),
        (BT_HOST, Expect::Escapes),
        (KVM_HOST, Expect::Escapes),
    ],
};

/// An escape that needs more than one process or a call the ABI table refuses under both
/// policies (ENOSYS: fork, clone, mount, ptrace, reboot, module and kexec loading, SysV IPC,
/// file handles), or another process of the host (a bt or kvm guest is one process: kill and
/// tgkill of any pid but its own are ESRCH): contained everywhere but on the control, the host
/// policy included.
const ESCAPES_ON_CONTROL: Expectations = Expectations {
    default: Expect::Contained,
    on: &[(CONTROL, Expect::Escapes)],
};

/// An escape that needs another host process: bt's guest under the host policy is a host
/// process of its own (its translator process), which signals other processes as natively;
/// kvm's shares its VMM's process and stays one process.
const ESCAPES_ON_CONTROL_AND_BT_HOST: Expectations = Expectations {
    default: Expect::Contained,
    on: &[(CONTROL, Expect::Escapes), (BT_HOST, Expect::Escapes)],
};

/// [`ESCAPES_ON_CONTROL`] for `p`: an escape the host policy contains too.
const fn one_process(p: Probe) -> Probe {
    Probe {
        expect: ESCAPES_ON_CONTROL,
        ..p
    }
}

/// bt is a host process like native: limits come from running it inside a container.
const NO_BT_LIMITS: Expect =
    Expect::NotApplicable("bt enforces no resource limits: it is an ordinary host process");

/// The host policy writes into the host's file system as the program would natively.
const NO_HOST_FILE_LIMIT: Expect = Expect::NotApplicable(
    "the host policy writes into the host's file system as natively: no size limit but the host's",
);

const fn escape(
    name: &'static str,
    kind: Kind,
    summary: &'static str,
    args: &'static [Arg],
) -> Probe {
    Probe {
        name,
        kind,
        summary,
        args,
        needs: &[],
        expect: ESCAPES_NATIVELY,
        judge: Judge::Line,
        accuracy: Accuracy::None,
        control_attempts: 1,
        cpl3: None,
    }
}

/// An escape that only the host's root may make.
const fn privilege(name: &'static str, summary: &'static str, args: &'static [Arg]) -> Probe {
    Probe {
        needs: &[Need::Root],
        ..escape(name, Privilege, summary, args)
    }
}

const fn observe(name: &'static str, kind: Kind, summary: &'static str) -> Probe {
    Probe {
        expect: Expectations {
            default: Expect::Observe,
            on: &[],
        },
        ..escape(name, kind, summary, &[])
    }
}

/// An instruction probe, observed everywhere, with what x86 makes of the instruction at CPL3.
const fn instruction(name: &'static str, cpl3: Cpl3, summary: &'static str) -> Probe {
    Probe {
        cpl3: Some(cpl3),
        ..observe(name, Instruction, summary)
    }
}

/// Contained everywhere, the control included: the harness itself must contain it.
const CONTAINED_EVERYWHERE: Expectations = Expectations {
    default: Expect::Contained,
    on: &[],
};

use Kind::*;
use Source::*;

/// Every probe.
pub const PROBES: &[Probe] = &[
    // --- visibility ---
    escape(
        "proc_list",
        Visibility,
        "list /proc and look for the harness's host process",
        &[arg("host_pid", HostPid)],
    ),
    Probe {
        expect: ESCAPES_ON_CONTROL_AND_BT_HOST,
        ..escape(
            "signal_host",
            Visibility,
            "send SIGCONT (harmless) to a sleeping host process",
            &[arg("host_pid", HostPid)],
        )
    },
    escape(
        "hostname",
        Visibility,
        "uname(2) node name equals the host's",
        &[arg("hostname", Hostname)],
    ),
    Probe {
        needs: &[Need::SysMount],
        ..escape(
            "mounts",
            Visibility,
            "a host mount point appears in /proc/self/mountinfo",
            &[arg("mnt", Text("/sys"))],
        )
    },
    escape(
        "tcp_loopback",
        Visibility,
        "connect to the harness's TCP listener on host 127.0.0.1",
        &[arg("port", Port)],
    ),
    Probe {
        needs: &[Need::Interface],
        ..escape(
            "net_ifaces",
            Visibility,
            "a host network interface appears in /proc/net/dev",
            &[arg("iface", Interface)],
        )
    },
    // the ABI table has no SysV IPC (shmget, shmat: ENOSYS under both policies)
    one_process(escape(
        "sysv_shm",
        Visibility,
        "attach the harness's SysV shared memory segment and read its magic",
        &[arg("shm_id", ShmId), arg("magic", Magic)],
    )),
    Probe {
        needs: &[Need::Root],
        ..escape(
            "host_root",
            Visibility,
            "uid 0 in the initial user namespace with every capability",
            &[],
        )
    },
    escape(
        "cgroup_ns",
        Visibility,
        "the cgroup namespace is the host's (and /proc/self/cgroup shows host paths)",
        &[arg("ns", Namespace("cgroup"))],
    ),
    Probe {
        expect: Expectations {
            default: Expect::Contained,
            on: &[
                (CONTROL, Expect::Escapes),
                // the host policy passes the host's clocks through, as natively
                (BT_HOST, Expect::Escapes),
                (KVM_HOST, Expect::Escapes),
                (
                    "bt",
                    Expect::NotApplicable(
                        "bt passes the host's clocks through: it has no time namespace to offset them",
                    ),
                ),
                (
                    "kvm",
                    Expect::NotApplicable(
                        "the VMM answers clock_gettime from the host's clocks: the micro-VM offers no clock offset",
                    ),
                ),
            ],
        },
        ..escape(
            "time_ns",
            Visibility,
            "CLOCK_BOOTTIME within 60 s of the host's",
            &[arg("boot_s", BootSeconds)],
        )
    },
    escape(
        "pid_ns",
        Visibility,
        "the pid namespace is the host's",
        &[arg("ns", Namespace("pid"))],
    ),
    escape(
        "ipc_ns",
        Visibility,
        "the IPC namespace is the host's",
        &[arg("ns", Namespace("ipc"))],
    ),
    // --- privilege ---
    privilege(
        "core_pattern",
        "open /proc/sys/kernel/core_pattern for writing (nothing is written)",
        &[],
    ),
    Probe {
        needs: &[Need::Root, Need::ReleaseAgent],
        ..privilege(
            "release_agent",
            "open a cgroup v1 release_agent for writing (CVE-2022-0492; nothing written)",
            &[arg("path", ReleaseAgent)],
        )
    },
    one_process(privilege(
            "mount",
            "mount(2) of a nonexistent file system type: ENODEV means permitted, nothing mounted",
            &[],
    )),
    privilege(
        "mknod_block",
        "mknod a block device node (loop0) in a scratch directory, then remove it",
        &[arg("dir", ScratchDir)],
    ),
    Probe {
        needs: &[Need::Root, Need::DevKvm],
        ..privilege("dev_kvm", "open /dev/kvm read-write", &[])
    },
    Probe {
        needs: &[Need::Root, Need::DevMem],
        ..privilege("dev_mem", "open /dev/mem read-only", &[])
    },
    one_process(privilege(
            "init_module",
            "init_module with an empty image: ENOEXEC means permitted, nothing loaded",
            &[],
    )),
    one_process(privilege(
            "ptrace_host",
            "PTRACE_SEIZE a host process (never stopped; detached at exit)",
            &[arg("host_pid", HostPid)],
    )),
    one_process(privilege(
            "open_by_handle",
            "open_by_handle_at on the root file system (the shocker escape)",
            &[],
    )),
    one_process(privilege(
            "reboot",
            "reboot(2) with invalid magic: EINVAL means permitted, nothing happens",
            &[],
    )),
    one_process(privilege(
            "kexec_load",
            "kexec_load with invalid flags: EINVAL means permitted, nothing loaded",
            &[],
    )),
    Probe {
        expect: Expectations {
            default: Expect::Contained,
            // CAP_NET_RAW as in Docker's default set, in the container's own net ns; the host
            // policy opens it with the host process's capabilities, as natively
            on: &[
                (CONTROL, Expect::Escapes),
                (
                    "container",
                    Expect::Inside(
                        "CAP_NET_RAW, as in Docker's default set, in the container's own network \
                         namespace: only its loopback is reached",
                    ),
                ),
                (BT_HOST, Expect::Escapes),
                (KVM_HOST, Expect::Escapes),
            ],
        },
        ..privilege("raw_socket", "open an AF_INET raw socket", &[])
    },
    // the host root binds the paths named on the command line, as the user asked: the file
    // is the program's by design there
    Probe {
        expect: Expectations {
            default: Expect::Contained,
            on: &[
                (CONTROL, Expect::Escapes),
                (BT_HOST, Expect::Escapes),
                (KVM_HOST, Expect::Escapes),
                (CONTAINER_HOST, Expect::Escapes),
            ],
        },
        ..privilege(
            "host_file",
            "read a host file by its path",
            &[arg("path", HostFile), arg("magic", Magic)],
        )
    },
    privilege(
        "proc_root",
        "read a host file through /proc/<host pid>/root",
        &[arg("host_pid", HostPid), arg("path", HostFile), arg("magic", Magic)],
    ),
    // --- limits ---
    Probe {
        expect: Expectations {
            default: Expect::Contained,
            // kvm's guest RAM is its limit under either policy
            on: &[
                (CONTROL, Expect::Escapes),
                ("bt", NO_BT_LIMITS),
                (BT_HOST, NO_BT_LIMITS),
            ],
        },
        judge: Judge::OomKill,
        ..escape(
            "memory",
            Limit,
            "touch `mb` MiB of anonymous memory",
            &[arg("mb", MemoryLimitMib(2))],
        )
    },
    Probe {
        expect: Expectations {
            default: Expect::Contained,
            // bt's guest forks on the host under the host policy (its translator process
            // forks); kvm's host policy refuses fork (ENOSYS: the guest is one process)
            on: &[
                (CONTROL, Expect::Escapes),
                ("bt", NO_BT_LIMITS),
                (BT_HOST, NO_BT_LIMITS),
            ],
        },
        accuracy: Accuracy::Tasks,
        ..escape(
            "fork_bomb",
            Limit,
            "fork up to `n` sleeping children (bounded), count the successes, kill them",
            &[arg("n", TaskLimit(2))],
        )
    },
    Probe {
        expect: Expectations {
            default: Expect::Contained,
            on: &[
                (CONTROL, Expect::Escapes),
                ("bt", NO_BT_LIMITS),
                (BT_HOST, NO_BT_LIMITS),
                ("kvm", Expect::NotApplicable("the VMM sets no CPU quota")),
                (KVM_HOST, Expect::NotApplicable("the VMM sets no CPU quota")),
            ],
        },
        accuracy: Accuracy::CpuShare,
        // A CPU share depends on what else the machine runs: a control that could not show
        // the spinners above the quota gets up to two more tries.
        control_attempts: 3,
        ..escape(
            "cpu_quota",
            Limit,
            "spin for `ms` ms; escaped when the share of one CPU is 0.15 above `quota`",
            &[arg("ms", Text("1000")), arg("quota", CpuQuota)],
        )
    },
    Probe {
        expect: CONTAINED_EVERYWHERE,
        judge: Judge::StdoutFlood { bytes: 100 << 20 },
        ..escape(
            "stdout_flood",
            Limit,
            "write 100 MiB to stdout after the result line; the harness must stay bounded",
            &[],
        )
    },
    Probe {
        expect: CONTAINED_EVERYWHERE,
        judge: Judge::Timeout { ms: 2000 },
        ..escape(
            "never_exits",
            Limit,
            "spin forever: the harness's timeout must end it",
            &[],
        )
    },
    Probe {
        expect: Expectations {
            default: Expect::Contained,
            on: &[
                (CONTROL, Expect::Escapes),
                (BT_HOST, NO_HOST_FILE_LIMIT),
                (KVM_HOST, NO_HOST_FILE_LIMIT),
                (
                    CONTAINER_HOST,
                    Expect::NotApplicable(
                        "the host root binds the current directory read-write: what the program writes there (in /tmp when run from /tmp) is the host's disk, which only the container's own tmpfs limits",
                    ),
                ),
            ],
        },
        ..escape(
            "file_size",
            Limit,
            "write a `mb` MiB file into a scratch directory, then remove it",
            // 96 MiB: over the container's 64 MiB of tmpfs
            &[arg("dir", ScratchDir), arg("mb", Text("96"))],
        )
    },
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
    instruction("sgdt", Cpl3::Sensitive, "SGDT: GDT base and limit"),
    instruction("sidt", Cpl3::Sensitive, "SIDT: IDT base and limit"),
    instruction("sldt", Cpl3::Sensitive, "SLDT: LDT selector"),
    instruction("smsw", Cpl3::Sensitive, "SMSW: low bits of CR0"),
    instruction("str", Cpl3::Sensitive, "STR: task register selector"),
    instruction("pushf", Cpl3::Sensitive, "PUSHF: IF and IOPL as seen at CPL3"),
    instruction("popf", Cpl3::Sensitive, "POPF clearing IF: silently ignored?"),
    instruction("lar", Cpl3::Sensitive, "LAR of the user code selector"),
    instruction("lsl", Cpl3::Sensitive, "LSL of the user data selector"),
    instruction(
        "verr",
        Cpl3::Sensitive,
        "VERR/VERW of the user and kernel code selectors",
    ),
    instruction("mov_sreg", Cpl3::Sensitive, "MOV from CS, SS, DS, ES, FS, GS"),
    instruction(
        "push_pop_sreg",
        Cpl3::Sensitive,
        "PUSH FS / POP FS and MOV to DS of the null selector",
    ),
    instruction(
        "far_call",
        Cpl3::Sensitive,
        "far CALL through memory to CS:label and far RET",
    ),
    instruction("int3", Cpl3::Unrestricted, "INT3 and INT 0x81 (no gate at DPL3)"),
    instruction(
        "cpuid",
        Cpl3::Unrestricted,
        "CPUID: vendor, hypervisor bit and hypervisor vendor",
    ),
    // privileged instructions, for contrast: these must trap at CPL3
    instruction("rdmsr", Cpl3::Privileged, "RDMSR of the TSC MSR (privileged)"),
    instruction("hlt", Cpl3::Privileged, "HLT (privileged)"),
    instruction("cli", Cpl3::Privileged, "CLI with IOPL 0 (IOPL-sensitive)"),
    instruction(
        "port_in",
        Cpl3::Privileged,
        "IN from port 0x80 without I/O permission",
    ),
    instruction(
        "rdtsc",
        Cpl3::Unrestricted,
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
    fn exactly_the_instruction_probes_carry_a_cpl3_class() {
        for p in PROBES {
            assert_eq!(p.cpl3.is_some(), p.kind == Kind::Instruction, "{}", p.name);
        }
        assert_eq!(find("popf").unwrap().cpl3, Some(Cpl3::Sensitive));
        assert_eq!(find("hlt").unwrap().cpl3, Some(Cpl3::Privileged));
        assert_eq!(find("cpuid").unwrap().cpl3, Some(Cpl3::Unrestricted));
        assert_eq!(Cpl3::Sensitive.name(), "sensitive");
    }

    #[test]
    fn own_kernel_exceptions_name_real_probes_once_and_win() {
        let mut seen = HashSet::new();
        for &(b, p, e) in OWN_KERNEL {
            assert!([VM, GVISOR].contains(&b), "{b}");
            assert!(seen.insert((b, p)), "{b}/{p} twice");
            let probe = find(p).unwrap_or_else(|| panic!("no probe {p}"));
            assert_eq!(probe.expect(b), e);
            if let Expect::Permitted(why) | Expect::Inside(why) | Expect::NotApplicable(why) = e {
                assert!(why.len() > 20, "{b}/{p}: a reason");
            }
        }
        // a pair not in the table keeps the probe's own expectation
        assert_eq!(find("proc_list").unwrap().expect(VM), Expect::Contained);
        assert_eq!(Expect::Permitted("x").name(), "escapes");
        assert_eq!(Expect::Inside("x").name(), "inside");
        // the guest's root on its own kernel stays inside; gVisor showing the host's files
        // does not
        assert!(matches!(
            find("mount").unwrap().expect(VM),
            Expect::Inside(_)
        ));
        assert!(matches!(
            find("host_file").unwrap().expect(GVISOR),
            Expect::Permitted(_)
        ));
    }

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
            // the control: every escape probe must escape there, every observation observe
            let control = p.expect(CONTROL);
            if p.kind.observes() {
                assert_eq!(control, Expect::Observe, "{}", p.name)
            } else {
                assert!(
                    matches!(control, Expect::Escapes | Expect::Contained),
                    "{}",
                    p.name
                );
            }
            let mut keys = HashSet::new();
            for k in p.keys() {
                assert!(!k.contains(['=', ' ']), "{}", p.name);
                assert!(keys.insert(k), "{}: duplicate key {k}", p.name);
            }
            assert!(
                p.keys().count() <= 8,
                "{}: more than the ELF accepts",
                p.name
            );
            let mut backends = HashSet::new();
            for (b, _) in p.expect.on {
                assert!(backends.insert(b), "{}: {b} named twice", p.name);
            }
            // only the host's root can show a privilege escape
            if p.kind == Kind::Privilege {
                assert!(p.needs.contains(&Need::Root), "{}", p.name);
            }
            assert!(p.control_attempts >= 1, "{}", p.name);
        }
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
            assert!(
                PROBES.iter().any(|p| p.kind == k),
                "no probe of kind {}",
                k.name()
            );
        }
        assert!(matches!(
            find("raw_socket").unwrap().expect("container"),
            Expect::Inside(_)
        ));
        assert_eq!(
            find("stdout_flood").unwrap().expect("native"),
            Expect::Contained
        );
        assert_eq!(
            find("time_ns").unwrap().expect("container"),
            Expect::Contained
        );
        assert!(matches!(
            find("time_ns").unwrap().expect("kvm"),
            Expect::NotApplicable(_)
        ));
    }

    #[test]
    fn the_containers_host_root_column_is_the_containers_but_for_named_files() {
        assert_eq!(
            find("host_file").unwrap().expect(CONTAINER_HOST),
            Expect::Escapes
        );
        assert!(matches!(
            find("file_size").unwrap().expect(CONTAINER_HOST),
            Expect::NotApplicable(_)
        ));
        for p in PROBES {
            if !["host_file", "file_size"].contains(&p.name) {
                assert_eq!(
                    p.expect(CONTAINER_HOST),
                    p.expect("container"),
                    "{}",
                    p.name
                );
            }
        }
    }

    #[test]
    fn the_host_policy_escapes_as_natively_but_stays_one_process() {
        for host in [BT_HOST, KVM_HOST] {
            let confined = &host[..host.len() - "/host".len()];
            for p in [
                "proc_list",
                "hostname",
                "tcp_loopback",
                "host_file",
                "raw_socket",
            ] {
                let p = find(p).unwrap();
                assert_eq!(p.expect(host), Expect::Escapes, "{} on {host}", p.name);
                assert_eq!(p.expect(confined), Expect::Contained, "{}", p.name);
            }
            // what the ABI table refuses under both policies
            for p in ["sysv_shm", "mount", "ptrace_host"] {
                let p = find(p).unwrap();
                assert_eq!(p.expect(host), Expect::Contained, "{} on {host}", p.name);
            }
            for p in ["cpu_quota", "file_size"] {
                let e = find(p).unwrap().expect(host);
                assert!(
                    matches!(e, Expect::NotApplicable(_)),
                    "{p} on {host}: {e:?}"
                );
            }
            assert_eq!(find("sgdt").unwrap().expect(host), Expect::Observe);
        }
        // bt's guest is a host process of its own: it signals and forks as natively; kvm's is
        // one process
        assert_eq!(
            find("signal_host").unwrap().expect(BT_HOST),
            Expect::Escapes
        );
        assert_eq!(
            find("signal_host").unwrap().expect(KVM_HOST),
            Expect::Contained
        );
        assert!(matches!(
            find("fork_bomb").unwrap().expect(BT_HOST),
            Expect::NotApplicable(_)
        ));
        assert_eq!(
            find("fork_bomb").unwrap().expect(KVM_HOST),
            Expect::Contained
        );
        // kvm's guest RAM is its memory limit under either policy; bt has none
        assert_eq!(find("memory").unwrap().expect(KVM_HOST), Expect::Contained);
        assert_eq!(
            find("memory").unwrap().expect(BT_HOST),
            find("memory").unwrap().expect("bt")
        );
        // whatever escapes on the host columns escapes on the control
        for p in PROBES {
            for host in [BT_HOST, KVM_HOST] {
                if p.expect(host) == Expect::Escapes {
                    assert_eq!(p.expect(CONTROL), Expect::Escapes, "{}", p.name);
                }
            }
        }
    }

    #[test]
    fn a_backend_not_named_gets_the_default() {
        // a new backend needs no entry: it is expected what the others are
        let sgdt = find("sgdt").unwrap();
        assert_eq!(sgdt.expect("a-new-backend"), Expect::Observe);
        let mounts = find("mounts").unwrap();
        assert_eq!(mounts.expect("a-new-backend"), Expect::Contained);
        assert_eq!(mounts.expect(CONTROL), Expect::Escapes);
        let e = Expectations {
            default: Expect::Contained,
            on: &[("x", Expect::Observe)],
        };
        assert_eq!(
            (e.get("x"), e.get("y")),
            (Expect::Observe, Expect::Contained)
        );
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
