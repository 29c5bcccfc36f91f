//! The `gvisor` peer: gVisor's `runsc do` (Debian's runsc) running the same program in a
//! sandbox whose system calls are answered by gVisor's user-space kernel (the Sentry), not by
//! the host kernel. It is the user-space-kernel level between the container (host kernel,
//! namespaces) and a VM (a guest kernel on virtual hardware), measured by vbench exactly as the
//! other peers are, so that its figures sit beside the container's and the VMs'.
//!
//! How it runs: `runsc --network=none --ignore-cgroups --platform=<p> do PROGRAM ARGS`. `do`
//! gives the sandbox the host's root read-only under a writable tmpfs overlay, so the program
//! (copied into a per-run directory below [`STATE`] when it is an image in memory) and the
//! files it names are where they are natively. `--ignore-cgroups`: runsc would otherwise make
//! `runsc-<n>` cgroups at the root of every hierarchy, outside vbench's own cgroup, and leave
//! them behind when it is killed; like the other peers it runs under no limits.
//!
//! Nothing is left behind: runsc's scratch directory (`runsc do` makes one in `$TMPDIR`) is the
//! per-run directory, removed after the run; the sandbox and gofer processes are attached to
//! runsc (they die with it, and runsc dies with vbench); directories of a killed vbench are
//! removed when the next one starts ([`remove_stale`]).

use crate::native::run_command;
use crate::peer::on_path;
use crate::{Availability, Backend, BackendError, Invocation, Outcome, Program};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-run directories (`<pid>-<n>`): runsc's `$TMPDIR` and the program's copy.
pub const STATE: &str = "/run/vbench-runsc";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// gVisor's platform: how the Sentry intercepts the program's system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Platform {
    /// ptrace(2): every system call of the program stops it and the Sentry answers it (works
    /// everywhere, the slowest).
    #[default]
    Ptrace,
    /// The Sentry runs the program in a KVM guest of its own (needs /dev/kvm).
    Kvm,
}

impl Platform {
    /// The name runsc takes.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Ptrace => "ptrace",
            Platform::Kvm => "kvm",
        }
    }

    /// Parses a `--gvisor-platform` value.
    pub fn parse(s: &str) -> Result<Platform, String> {
        match s {
            "ptrace" => Ok(Platform::Ptrace),
            "kvm" => Ok(Platform::Kvm),
            _ => Err(format!("unknown gVisor platform {s:?} (ptrace or kvm)")),
        }
    }
}

/// The gVisor peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gvisor {
    platform: Platform,
}

impl Gvisor {
    /// On `platform`.
    pub fn new(platform: Platform) -> Gvisor {
        Gvisor { platform }
    }
}

/// Removes the per-run directories of vbench processes that are gone; returns them.
pub fn remove_stale() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(STATE) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

impl Backend for Gvisor {
    fn name(&self) -> &'static str {
        "gvisor"
    }

    fn describe(&self) -> &'static str {
        "peer: gVisor's runsc do, a user-space kernel (the Sentry)"
    }

    fn is_peer(&self) -> bool {
        true
    }

    fn availability(&self) -> Availability {
        if !nix::unistd::geteuid().is_root() {
            return Availability::Unavailable("not root (runsc do needs root)".into());
        }
        if on_path("runsc").is_none() {
            return Availability::Unavailable(
                "runsc is not installed (Debian package runsc)".into(),
            );
        }
        if self.platform == Platform::Kvm {
            // the Sentry runs in guest ring 0 there, as a guest kernel does: on kvm_pvm it hung
            // (no output in 60 s when tried)
            if let Some(why) = crate::vm::kvm_unusable() {
                return Availability::Unavailable(format!(
                    "gVisor's kvm platform runs its kernel in guest ring 0, and {why}"
                ));
            }
        }
        Availability::Available
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        let runsc = on_path("runsc").ok_or_else(|| BackendError::Unavailable {
            backend: "gvisor",
            reason: "runsc is not installed (Debian package runsc)".into(),
        })?;
        let dir = Path::new(STATE).join(format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let os = |what: String| move |source| BackendError::Os { what, source };
        std::fs::create_dir_all(&dir).map_err(os(format!("making {}", dir.display())))?;
        let result = (|| {
            // the sandbox sees the host's files, not vbench's descriptors: an image in memory
            // becomes a file the sandbox can open
            let program = match &inv.program {
                Program::Path(p) => {
                    std::path::absolute(p).map_err(os(format!("the path of {}", p.display())))?
                }
                Program::Memory(_) => {
                    let p = dir.join("program");
                    std::fs::write(&p, inv.program.bytes()?)
                        .map_err(os(format!("copying the program to {}", p.display())))?;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                        .map_err(os("making the program executable".into()))?;
                    p
                }
            };
            let mut cmd = Command::new(&runsc);
            cmd.env("TMPDIR", &dir)
                .args(["--network=none", "--ignore-cgroups"])
                .arg(format!("--platform={}", self.platform.name()))
                .args(["do", "--quiet"])
                .arg(program)
                .args(&inv.args);
            run_command(cmd, inv)
        })();
        let _ = std::fs::remove_dir_all(&dir);
        let mut out = result?;
        out.sample
            .counters
            .insert(format!("gvisor.platform_{}", self.platform.name()), 1);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_name_themselves() {
        for p in [Platform::Ptrace, Platform::Kvm] {
            assert_eq!(Platform::parse(p.name()), Ok(p));
        }
        let e = Platform::parse("systrap").unwrap_err();
        assert!(e.contains("systrap") && e.contains("ptrace"), "{e}");
    }

    #[test]
    fn a_directory_of_a_live_process_is_not_stale() {
        let mine = Path::new(STATE).join(format!("{}-999999", std::process::id()));
        if std::fs::create_dir_all(&mine).is_err() {
            return; // not root: nothing to sweep either
        }
        let removed = remove_stale();
        assert!(!removed.contains(&mine));
        assert!(mine.exists());
        std::fs::remove_dir(&mine).unwrap();
    }
}
