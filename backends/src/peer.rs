//! Peers: other people's tools that run the same unmodified static program one level removed
//! from the hardware, measured by vbench exactly as its own backends are, so that their figures
//! sit beside bt's in one table. `qemu-user` runs the program under `qemu-x86_64` (QEMU's TCG
//! binary translator, user mode); `valgrind` under `valgrind --tool=none` (Valgrind's
//! translator with no instrumentation). Neither is selected by `--backend all`: they are the
//! yardstick, not levels of virtualization vbench provides.

use crate::native::run_command;
use crate::{Availability, Backend, BackendError, Invocation, Outcome, Program};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// `qemu-x86_64`.
    QemuUser,
    /// `valgrind --tool=none`.
    Valgrind,
}

/// A peer tool as a backend.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub PeerKind);

impl PeerKind {
    fn tool(self) -> &'static str {
        match self {
            PeerKind::QemuUser => "qemu-x86_64",
            PeerKind::Valgrind => "valgrind",
        }
    }

    /// Arguments between the tool and the program.
    fn prefix(self) -> &'static [&'static str] {
        match self {
            PeerKind::QemuUser => &[],
            // -q: only the program's own output; no error exit code of valgrind's own
            PeerKind::Valgrind => &["--tool=none", "-q"],
        }
    }

    fn package(self) -> &'static str {
        match self {
            PeerKind::QemuUser => "qemu-user",
            PeerKind::Valgrind => "valgrind",
        }
    }
}

/// The first `name` on PATH that is an executable file.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl Backend for Peer {
    fn name(&self) -> &'static str {
        match self.0 {
            PeerKind::QemuUser => "qemu-user",
            PeerKind::Valgrind => "valgrind",
        }
    }

    fn describe(&self) -> &'static str {
        match self.0 {
            PeerKind::QemuUser => "peer: qemu-x86_64, QEMU's TCG translator in user mode",
            PeerKind::Valgrind => "peer: valgrind --tool=none, Valgrind's bare translator",
        }
    }

    fn is_peer(&self) -> bool {
        true
    }

    fn availability(&self) -> Availability {
        match on_path(self.0.tool()) {
            Some(_) => Availability::Available,
            None => Availability::Unavailable(format!(
                "{} is not installed (Debian package {})",
                self.0.tool(),
                self.0.package()
            )),
        }
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        let tool = on_path(self.0.tool()).ok_or_else(|| BackendError::Unavailable {
            backend: self.name(),
            reason: format!("{} is not installed", self.0.tool()),
        })?;
        // The tool opens the program by path. An image in memory is handed over as an
        // inherited descriptor (a copy of its sealed memfd without close-on-exec, closed
        // here after the spawn), so nothing is written to disk.
        let (path, _inherited) = match &inv.program {
            Program::Path(p) => (p.clone(), None),
            Program::Memory(m) => {
                // F_DUPFD, not F_DUPFD_CLOEXEC: the tool inherits it
                let fd =
                    nix::fcntl::fcntl(m.fd(), nix::fcntl::FcntlArg::F_DUPFD(3)).map_err(|e| {
                        BackendError::Os {
                            what: format!("passing {} to {}", inv.program.name(), self.0.tool()),
                            source: e.into(),
                        }
                    })?;
                // SAFETY: a fresh descriptor that nothing else owns.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                (PathBuf::from(format!("/proc/self/fd/{fd}")), Some(owned))
            }
        };
        let mut cmd = Command::new(tool);
        cmd.args(self.0.prefix()).arg(path).args(&inv.args);
        run_command(cmd, inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_unavailable_with_the_package_to_install() {
        assert!(on_path("sh").is_some());
        assert!(on_path("vbench-no-such-tool").is_none());
        for k in [PeerKind::QemuUser, PeerKind::Valgrind] {
            let p = Peer(k);
            assert!(p.is_peer());
            if let Availability::Unavailable(why) = p.availability() {
                assert!(why.contains(k.package()), "{why}");
            }
        }
    }
}
