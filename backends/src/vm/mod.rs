//! The `vm` backend: whole-machine virtualization with a real operating system. The program runs
//! in a Linux guest (Debian's kernel, or `--vm-kernel`) booted by QEMU (`qemu-system-x86_64`)
//! from an initramfs that vbench makes in memory: vbench's own init (the agent, crate
//! `vbench-vm-agent`, statically linked) and the first program to run. Accelerated by KVM
//! where /dev/kvm gives a hardware-assisted VM that boots a Linux kernel; otherwise by TCG,
//! QEMU's binary translator, which translates the whole guest OS (ring 0 included): the
//! VMware-style row of the lecture.
//!
//! One boot serves many runs: the guest stays up while the backend lives, and each run is a
//! request to the agent over the guest's second serial port (see [`proto`]). Programs are
//! sent once and kept in the guest by content. The agent forks and execs the program and
//! measures it with the guest's clock (wall, start-up as fork to execve, CPU times, peak RSS),
//! so a run's figures do not include the serial line. Boot time (QEMU started to the agent's
//! hello) is a figure of its own: counter `vm.boot_ns` in every sample of that boot.
//!
//! The guest holds only the initramfs: a static program of the user's runs there, with /proc,
//! /sys, /dev and /tmp, but none of the host's files. Nothing is left behind: the initramfs and
//! console are memfds, QEMU dies with vbench (PR_SET_PDEATHSIG) and is powered off (or killed)
//! when the backend is dropped.

pub mod cpio;
pub mod guest;
pub mod proto;

use crate::peer::on_path;
use crate::session::{guest_argv, guest_env, STDERR_TAIL, STDOUT_CAP};
use crate::{Availability, Backend, BackendError, Invocation, Outcome, Stdio};
use guest::{Boot, Flow, Guest, GuestError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vbench_results::{Exit, Sample};

/// The agent: the guest's /init.
pub const AGENT_ELF: &[u8] = include_bytes!(env!("VBENCH_VM_AGENT_ELF"));

/// Where Debian's kernels are.
const BOOT_DIR: &str = "/boot";

/// Which accelerator to ask QEMU for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM where it gives a hardware-assisted VM that boots Linux, else TCG.
    #[default]
    Auto,
    /// KVM, even where it is not expected to boot.
    Kvm,
    /// TCG: QEMU's binary translator.
    Tcg,
}

impl AccelChoice {
    /// Parses `--vm-accel`.
    pub fn parse(s: &str) -> Result<AccelChoice, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(format!("unknown accelerator {s:?} (auto, kvm or tcg)")),
        }
    }
}

/// The accelerator a guest runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware-assisted.
    Kvm,
    /// Binary translation of the whole guest.
    Tcg,
}

impl Accel {
    /// Its name in results.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn args(self) -> Vec<String> {
        match self {
            // QEMU 7.2 cannot set IA32_ARCH_CAPABILITIES on some nested hosts: leave it out
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host,-arch-capabilities"]
                .map(String::from)
                .to_vec(),
            Accel::Tcg => ["-accel", "tcg"].map(String::from).to_vec(),
        }
    }
}

/// Why KVM cannot host a booting Linux guest here, or `None` when it can.
pub fn kvm_unusable() -> Option<String> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Some("no usable /dev/kvm".into());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw {
        let pvm = Path::new("/sys/module/kvm_pvm").exists();
        return Some(format!(
            "the CPU shows no VMX/SVM{}: KVM here cannot run a guest kernel in ring 0 at \
             hardware speed (a Linux guest did not reach init in 240 s when tried)",
            if pvm {
                " (/dev/kvm is kvm_pvm, nested KVM that emulates guest ring 0)"
            } else {
                ""
            }
        ));
    }
    None
}

/// The settings of the vm backend.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The guest kernel; default the newest /boot/vmlinuz-*.
    pub kernel: Option<PathBuf>,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// The accelerator.
    pub accel: AccelChoice,
    /// How long a boot may take to reach the agent.
    pub boot_timeout: Duration,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            kernel: None,
            mem_bytes: 512 << 20,
            accel: AccelChoice::Auto,
            boot_timeout: Duration::from_secs(120),
        }
    }
}

/// The guest kernel to boot, and where it came from.
pub fn find_kernel(cfg: &VmConfig) -> Result<(PathBuf, &'static str), String> {
    if let Some(k) = &cfg.kernel {
        guest::check_kernel(k)?;
        return Ok((k.clone(), "--vm-kernel"));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(BOOT_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("vmlinuz-"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by(|a, b| version_order(a, b));
    let Some(k) = found.pop() else {
        return Err(format!(
            "no guest kernel: no {BOOT_DIR}/vmlinuz-*; install Debian's linux-image-cloud-amd64 \
             or give --vm-kernel PATH"
        ));
    };
    guest::check_kernel(&k)?;
    Ok((k, "the host's /boot"))
}

/// Orders `vmlinuz-6.1.0-9-…` before `vmlinuz-6.1.0-10-…`: digit runs compare as numbers.
fn version_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    fn key(p: &Path) -> Vec<(u64, String)> {
        let s = p.to_string_lossy();
        let mut v = Vec::new();
        let mut num = String::new();
        let mut text = String::new();
        for ch in s.chars() {
            if ch.is_ascii_digit() {
                if !text.is_empty() {
                    v.push((0, std::mem::take(&mut text)));
                }
                num.push(ch);
            } else {
                if !num.is_empty() {
                    v.push((num.parse().unwrap_or(u64::MAX), String::new()));
                    num.clear();
                }
                text.push(ch);
            }
        }
        if !num.is_empty() {
            v.push((num.parse().unwrap_or(u64::MAX), String::new()));
        }
        if !text.is_empty() {
            v.push((0, text));
        }
        v
    }
    key(a).cmp(&key(b))
}

/// A program's key in the guest: FNV-1a 64 of its bytes.
fn key_of(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("p{h:016x}")
}

/// The initramfs: the agent as /init, the mount points, and `first` in /progs.
pub fn initramfs(first: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut a = cpio::Archive::default();
    for d in ["dev", "proc", "sys", "tmp", "progs"] {
        a.dir(d);
    }
    a.file("init", 0o755, AGENT_ELF);
    if let Some((key, bytes)) = first {
        // the initramfs is the guest's root, a writable tmpfs: the agent keeps programs there
        a.file(&format!("progs/{key}"), 0o755, bytes);
    }
    a.finish()
}

/// The guest that serves the runs, with what it holds.
#[derive(Debug)]
struct Live {
    guest: Guest,
    accel: Accel,
    /// Keys of the programs the guest holds.
    programs: HashSet<String>,
    /// How many boots this backend made (1 for the first).
    boots: u64,
}

/// The vm backend. Dropping it powers its guest off (killed after a grace period).
#[derive(Debug, Default)]
pub struct VmBackend {
    config: VmConfig,
    live: Mutex<Option<Live>>,
    /// What the last boot said, for the results' environment.
    booted: Mutex<Option<String>>,
}

impl VmBackend {
    /// With `config`.
    pub fn new(config: VmConfig) -> VmBackend {
        VmBackend {
            config,
            ..VmBackend::default()
        }
    }

    /// The accelerator this backend asks for, and why when it is not the one asked for.
    pub fn accel(&self) -> (Accel, Option<String>) {
        match self.config.accel {
            AccelChoice::Tcg => (Accel::Tcg, None),
            AccelChoice::Kvm => (Accel::Kvm, None),
            AccelChoice::Auto => match kvm_unusable() {
                None => (Accel::Kvm, None),
                Some(why) => (
                    Accel::Tcg,
                    Some(format!("kvm acceleration unavailable: {why}")),
                ),
            },
        }
    }

    fn boot(
        &self,
        first: (&str, &[u8]),
        cancel: Option<&std::sync::atomic::AtomicBool>,
        boots: u64,
    ) -> Result<Live, BackendError> {
        let unavailable = |reason: String| BackendError::Unavailable {
            backend: "vm",
            reason,
        };
        let qemu = on_path("qemu-system-x86_64").ok_or_else(|| {
            unavailable(
                "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)".into(),
            )
        })?;
        let (kernel, _) = find_kernel(&self.config).map_err(unavailable)?;
        let (accel, _) = self.accel();
        let boot = Boot {
            qemu,
            kernel,
            initramfs: initramfs(Some(first)),
            accel_args: accel.args(),
            mem_mib: self.config.mem_bytes >> 20,
            timeout: self.config.boot_timeout,
        };
        let guest = Guest::boot(&boot, cancel).map_err(|e| match e {
            GuestError::Cancelled => BackendError::Invalid("interrupted while booting".into()),
            GuestError::Timeout(t) if accel == Accel::Kvm => BackendError::Invalid(format!(
                "{t}\n(-accel kvm: where KVM cannot run a guest kernel, use --vm-accel tcg)"
            )),
            e => BackendError::Invalid(format!("booting the vm guest: {e}")),
        })?;
        *self.booted.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
            "Linux {} under QEMU {} ({} CPU, {} MiB), booted to vbench's init in {:.2} s",
            guest.hello.release,
            accel.name(),
            guest.hello.cpus,
            guest.hello.mem_kib / 1024,
            guest.boot.as_secs_f64()
        ));
        let mut programs = HashSet::new();
        programs.insert(first.0.to_string());
        Ok(Live {
            guest,
            accel,
            programs,
            boots,
        })
    }
}

fn invalid(e: GuestError) -> BackendError {
    BackendError::Invalid(format!("vm: {e}"))
}

impl Backend for VmBackend {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn describe(&self) -> &'static str {
        "a real Linux guest under QEMU (KVM if it boots, else TCG)"
    }

    fn availability(&self) -> Availability {
        if on_path("qemu-system-x86_64").is_none() {
            return Availability::Unavailable(
                "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)".into(),
            );
        }
        match find_kernel(&self.config) {
            Ok(_) => Availability::Available,
            Err(why) => Availability::Unavailable(why),
        }
    }

    fn environment_notes(&self, samples: &[&Sample]) -> Vec<(String, String)> {
        let mut notes = Vec::new();
        if samples.is_empty() {
            return notes;
        }
        if let Some(b) = self.booted.lock().ok().and_then(|b| b.clone()) {
            notes.push(("vm_guest".to_string(), b));
        }
        if let (_, Some(why)) = self.accel() {
            notes.push(("vm_accel".to_string(), format!("tcg ({why})")));
        }
        notes
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        let bytes = inv.program.bytes()?;
        let name = inv.program.name();
        match crate::elf::Elf::parse(&bytes, 0) {
            Ok(e) if e.interp.is_some() => {
                return Err(BackendError::Invalid(format!(
                    "{name} is dynamically linked (interpreter {}): the vm guest holds only \
                     vbench's init and the program, so give a static program",
                    String::from_utf8_lossy(e.interp.as_deref().unwrap_or_default())
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(BackendError::Invalid(format!("{name}: {e}"))),
        }
        let key = key_of(&bytes);
        let cancel = inv.cancel.as_deref();
        let mut slot = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut counters = std::collections::BTreeMap::new();
        // a guest that died between runs (or was never booted) is booted afresh
        let alive = slot.as_mut().is_some_and(|l| l.guest.alive());
        let boots = match slot.as_ref() {
            Some(l) if alive => l.boots,
            Some(l) => l.boots + 1,
            None => 1,
        };
        if !alive {
            *slot = None;
            *slot = Some(self.boot((&key, &bytes), cancel, boots)?);
            counters.insert("vm.booted_for_this_run".to_string(), 1);
        }
        let live = slot.as_mut().expect("booted");
        if !live.programs.contains(&key) {
            let frame = proto::encode(proto::PROGRAM, &[key.as_bytes(), &bytes]);
            // the serial line moves tens of KiB per second: a generous deadline by size
            let deadline = Instant::now() + Duration::from_secs(30 + bytes.len() as u64 / 8192);
            let r = live.guest.exchange(
                &frame,
                Some(deadline),
                cancel,
                "sending the program",
                false,
                |kind, _| match kind {
                    proto::OK => Ok(Flow::Stop),
                    k => Err(format!("unexpected frame {k:#04x} after a program")),
                },
            );
            if let Err(e) = r {
                return finish_error(&mut slot, e);
            }
            live.programs.insert(key.clone());
            counters.insert("vm.program_sent_bytes".to_string(), bytes.len() as u64);
        }
        let exec = proto::Exec {
            key: key.clone().into_bytes(),
            timeout_ms: inv.timeout.map_or(0, |t| t.as_millis().max(1) as u64),
            argv: guest_argv(inv),
            env: guest_env(inv),
            // captured: what the harness keeps is all that crosses the serial line
            out_cap: if inv.stdio == Stdio::Capture {
                STDOUT_CAP as u64
            } else {
                0
            },
        };
        let mut stdout = Vec::new();
        let mut stderr_tail: Vec<u8> = Vec::new();
        let mut done = None;
        let inherit = inv.stdio == Stdio::Inherit;
        // the agent enforces the run's timeout; this backstop catches a guest that hangs
        let deadline = inv
            .timeout
            .map(|t| Instant::now() + t + Duration::from_secs(60));
        let sent_at = Instant::now();
        let r = live.guest.exchange(
            &exec.encode(),
            deadline,
            cancel,
            "running the program",
            false,
            |kind, payload| {
                let field =
                    || proto::fields(&payload).map(|f| f.into_iter().next().unwrap_or_default());
                match kind {
                    proto::STDOUT => {
                        let b = field()?;
                        if inherit {
                            use std::io::Write;
                            let mut o = std::io::stdout().lock();
                            let _ = o.write_all(&b).and_then(|_| o.flush());
                        } else {
                            let room = STDOUT_CAP.saturating_sub(stdout.len());
                            stdout.extend_from_slice(&b[..b.len().min(room)]);
                        }
                        Ok(Flow::More)
                    }
                    proto::STDERR => {
                        let b = field()?;
                        if inherit {
                            use std::io::Write;
                            let _ = std::io::stderr().write_all(&b);
                        } else {
                            stderr_tail.extend_from_slice(&b);
                            let excess = stderr_tail.len().saturating_sub(STDERR_TAIL);
                            stderr_tail.drain(..excess);
                        }
                        Ok(Flow::More)
                    }
                    proto::DONE => {
                        done = Some(proto::Done::decode(&payload)?);
                        Ok(Flow::Stop)
                    }
                    k => Err(format!("unexpected frame {k:#04x} during a run")),
                }
            },
        );
        let roundtrip = sent_at.elapsed();
        if let Err(e) = r {
            return finish_error(&mut slot, e);
        }
        let done = done.expect("the exchange stops at done");
        let exit = match done.ended {
            proto::Ended::Code(c) => Exit::Code { code: c },
            proto::Ended::Signal(s) => Exit::Signal { signal: s },
            proto::Ended::Timeout => Exit::Timeout {
                after_ms: exec.timeout_ms,
            },
            proto::Ended::NotStarted(why) => {
                return Err(BackendError::Invalid(format!(
                    "vm: the guest could not start {name}: {why}"
                )))
            }
        };
        let live = slot.as_ref().expect("still up");
        counters.insert("vm.boot_ns".to_string(), live.guest.boot.as_nanos() as u64);
        counters.insert(format!("vm.accel_{}", live.accel.name()), 1);
        counters.insert("vm.boots".to_string(), live.boots);
        counters.insert(
            "vm.host_roundtrip_ns".to_string(),
            roundtrip.as_nanos() as u64,
        );
        Ok(Outcome {
            sample: Sample {
                wall_ns: done.wall_ns,
                user_ns: done.user_ns,
                sys_ns: done.sys_ns,
                max_rss_kib: Some(done.max_rss_kib),
                exit,
                report: None,
                startup_ns: done.startup_ns,
                counters,
                stdout_bytes: done.stdout_bytes,
                stdout_digest: String::new(),
                stderr_tail: String::from_utf8_lossy(&stderr_tail).into_owned(),
                cpu: None,
            },
            stdout,
        })
    }
}

/// The outcome of a run whose exchange with the guest failed: an interrupted run is a sample
/// (as on every backend); anything else is an error, and a guest that is not well is dropped
/// (the next run boots a new one).
fn finish_error(slot: &mut Option<Live>, e: GuestError) -> Result<Outcome, BackendError> {
    match e {
        GuestError::Cancelled => {
            *slot = None;
            Ok(Outcome {
                sample: Sample {
                    exit: Exit::Interrupted,
                    ..Sample::default()
                },
                stdout: Vec::new(),
            })
        }
        GuestError::Protocol(_) if slot.as_mut().is_some_and(|l| l.guest.alive()) => {
            Err(invalid(e))
        }
        e => {
            if let Some(l) = slot.as_mut() {
                l.guest.kill();
            }
            *slot = None;
            Err(invalid(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sort_by_version() {
        let mut v: Vec<PathBuf> = [
            "vmlinuz-6.1.0-10-amd64",
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-5.10.0-30-amd64",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(v.last().unwrap(), Path::new("vmlinuz-6.1.0-10-amd64"));
        assert_eq!(v[0], Path::new("vmlinuz-5.10.0-30-amd64"));
    }

    #[test]
    fn a_given_kernel_that_is_not_one_is_refused_by_name() {
        let cfg = VmConfig {
            kernel: Some("/etc/hostname".into()),
            ..VmConfig::default()
        };
        let e = find_kernel(&cfg).unwrap_err();
        assert!(e.contains("/etc/hostname"), "{e}");
        assert!(!VmBackend::new(cfg).availability().is_available());
    }

    #[test]
    fn the_initramfs_holds_the_agent_and_the_first_program() {
        let img = initramfs(Some(("pabc", b"\x7fELF...")));
        let find = |needle: &[u8]| img.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"init\0") && find(b"progs/pabc\0") && find(b"progs\0"));
        assert!(find(&AGENT_ELF[..64]), "the agent's bytes");
        assert_eq!(key_of(b"a"), key_of(b"a"));
        assert_ne!(key_of(b"a"), key_of(b"b"));
    }

    #[test]
    fn accelerators_parse() {
        assert_eq!(AccelChoice::parse("tcg"), Ok(AccelChoice::Tcg));
        assert!(AccelChoice::parse("hvf").unwrap_err().contains("hvf"));
        let b = VmBackend::new(VmConfig {
            accel: AccelChoice::Tcg,
            ..VmConfig::default()
        });
        assert_eq!(b.accel(), (Accel::Tcg, None));
    }
}
