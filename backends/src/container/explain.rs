//! Why a program failed in the container, in words a user can act on: a missing ELF
//! interpreter or script interpreter (the minimal root holds only the program), a 32-bit
//! program stopped by the seccomp filter, a kill by the memory limit.

use super::Rootfs;
use vbench_results::Exit;

/// What kind of executable the bytes are, as far as starting it in a container matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramKind {
    /// A `#!` script and its interpreter.
    Script(String),
    /// A dynamically linked 64-bit ELF and its interpreter (PT_INTERP).
    Dynamic(String),
    /// A 32-bit ELF (i386).
    Elf32,
    /// A static 64-bit ELF.
    Static,
    /// Anything else.
    Unknown,
}

/// `len` bytes at `at`, when they are all in the file (no offset arithmetic can overflow).
fn bytes_at(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes_at(b, at, 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes_at(b, at, 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes_at(b, at, 8)?.try_into().ok()?))
}

/// Classifies `bytes`; never trusts a field (a malformed file is `Unknown`).
pub fn kind(bytes: &[u8]) -> ProgramKind {
    if let Some(rest) = bytes.strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let interp = line.split_whitespace().next().unwrap_or_default();
        return ProgramKind::Script(interp.to_string());
    }
    if !bytes.starts_with(b"\x7fELF") {
        return ProgramKind::Unknown;
    }
    match bytes.get(4) {
        Some(1) => return ProgramKind::Elf32,
        Some(2) => {}
        _ => return ProgramKind::Unknown,
    }
    elf64_interp(bytes).map_or(ProgramKind::Unknown, |i| match i {
        Some(i) => ProgramKind::Dynamic(i),
        None => ProgramKind::Static,
    })
}

/// The PT_INTERP path of a 64-bit ELF (`Some(None)` when it has none).
fn elf64_interp(b: &[u8]) -> Option<Option<String>> {
    let phoff = usize::try_from(u64_at(b, 32)?).ok()?;
    let phentsize = usize::from(u16_at(b, 54)?);
    let phnum = usize::from(u16_at(b, 56)?);
    if phentsize < 56 {
        return None;
    }
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(b, ph)? == 3 {
            let off = usize::try_from(u64_at(b, ph.checked_add(8)?)?).ok()?;
            let len = usize::try_from(u64_at(b, ph.checked_add(32)?)?).ok()?;
            let path = bytes_at(b, off, len)?;
            let path = path.split(|c| *c == 0).next().unwrap_or_default();
            return Some(Some(String::from_utf8_lossy(path).into_owned()));
        }
    }
    Some(None)
}

/// Why `execve` of the program failed with `errno` inside the container, when the program's
/// kind explains it better than the errno's text does.
/// `root` is the container's root (`--rootfs`).
pub fn exec_failure(program: &str, bytes: &[u8], errno: i32, root: &Rootfs) -> Option<String> {
    let why = match root {
        Rootfs::Minimal => {
            " (the minimal root holds only the program): use --rootfs host, which shows the \
             host's system directories, or a static build"
                .to_string()
        }
        Rootfs::Host => " (the host root shows the host's /usr, /bin, /sbin, /lib*, /etc)".into(),
        Rootfs::Dir(d) => format!(" (the root directory {})", d.display()),
    };
    match (kind(bytes), errno) {
        (ProgramKind::Dynamic(interp), libc::ENOENT) => Some(format!(
            "{program} is dynamically linked and its ELF interpreter {interp} is not in the \
             container's root{why}"
        )),
        (ProgramKind::Script(interp), libc::ENOENT) => Some(format!(
            "{program} is a script whose interpreter {interp} is not in the container's root{why}"
        )),
        (ProgramKind::Script(interp), libc::ENOEXEC) if interp.is_empty() => Some(format!(
            "{program} is a script whose #! line names no interpreter"
        )),
        (ProgramKind::Unknown, libc::ENOEXEC) => Some(format!(
            "{program} is neither an ELF executable nor a #! script"
        )),
        _ => None,
    }
}

/// A note on how the program ended, when the exit alone would mislead: a kill by the memory
/// limit (`oom_kills` from the cgroup), or SIGSYS from the seccomp filter for a 32-bit program.
pub fn exit_note(
    bytes: &[u8],
    exit: &Exit,
    oom_kills: u64,
    memory_limit: Option<u64>,
) -> Option<String> {
    match exit {
        Exit::Signal { signal } if *signal == libc::SIGKILL && oom_kills > 0 => {
            Some(match memory_limit {
                Some(m) => format!("killed by the memory limit ({m} bytes, --memory)"),
                None => "killed by the out-of-memory killer".to_string(),
            })
        }
        Exit::Signal { signal } if *signal == libc::SIGSYS => Some(match kind(bytes) {
            ProgramKind::Elf32 => "killed by SIGSYS: the container's seccomp filter admits \
                                   x86-64 system calls only, and this is a 32-bit (i386) program"
                .to_string(),
            _ => "killed by SIGSYS: a system call the container's seccomp filter does not admit \
                  (another architecture's calling convention?)"
                .to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit ELF header with one PT_INTERP program header pointing at `interp`.
    fn elf64(interp: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
        let ptype: u32 = if interp.is_some() { 3 } else { 1 };
        b[64..68].copy_from_slice(&ptype.to_le_bytes());
        if let Some(i) = interp {
            b[64 + 8..64 + 16].copy_from_slice(&0x100u64.to_le_bytes());
            b[64 + 32..64 + 40].copy_from_slice(&(i.len() as u64 + 1).to_le_bytes());
            b[0x100..0x100 + i.len()].copy_from_slice(i.as_bytes());
        }
        b
    }

    #[test]
    fn kinds() {
        assert_eq!(
            kind(b"#!/bin/sh -e\necho"),
            ProgramKind::Script("/bin/sh".into())
        );
        let ld = "/lib64/ld-linux-x86-64.so.2";
        assert_eq!(kind(&elf64(Some(ld))), ProgramKind::Dynamic(ld.into()));
        assert_eq!(kind(&elf64(None)), ProgramKind::Static);
        let mut e32 = elf64(None);
        e32[4] = 1;
        assert_eq!(kind(&e32), ProgramKind::Elf32);
        assert_eq!(kind(b"hello"), ProgramKind::Unknown);
        // a program-header table beyond the file is not trusted
        let mut bad = elf64(Some(ld));
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(kind(&bad), ProgramKind::Unknown);
    }

    #[test]
    fn exec_failures_name_the_missing_interpreter() {
        let ld = "/lib64/ld-linux-x86-64.so.2";
        let m = exec_failure(
            "/usr/bin/id",
            &elf64(Some(ld)),
            libc::ENOENT,
            &Rootfs::Minimal,
        )
        .unwrap();
        assert!(m.contains("dynamically linked") && m.contains(ld), "{m}");
        assert!(m.contains("--rootfs host"), "{m}");
        let m = exec_failure("x.sh", b"#!/usr/bin/python3\n", libc::ENOENT, &Rootfs::Host).unwrap();
        assert!(
            m.contains("script") && m.contains("/usr/bin/python3"),
            "{m}"
        );
        assert_eq!(
            exec_failure("p", &elf64(None), libc::ENOENT, &Rootfs::Minimal),
            None
        );
    }

    #[test]
    fn exit_notes() {
        let kill = Exit::Signal {
            signal: libc::SIGKILL,
        };
        assert_eq!(
            exit_note(b"", &kill, 1, Some(64 << 20)).unwrap(),
            "killed by the memory limit (67108864 bytes, --memory)"
        );
        assert_eq!(exit_note(b"", &kill, 0, Some(1)), None);
        let mut e32 = elf64(None);
        e32[4] = 1;
        let sys = Exit::Signal {
            signal: libc::SIGSYS,
        };
        assert!(exit_note(&e32, &sys, 0, None)
            .unwrap()
            .contains("32-bit (i386)"));
        assert_eq!(exit_note(b"", &Exit::Code { code: 0 }, 3, None), None);
    }
}
