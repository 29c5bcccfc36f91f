//! A loader for static x86-64 Linux ELF executables, shared by the `kvm` and `bt` backends:
//! parses and checks the headers and hands out the loadable segments. Every malformed input
//! gives an [`ElfError`] that names the problem; nothing here trusts a field of the file.

/// What is wrong with an ELF file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// Too short or not starting with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// Not ELFCLASS64 little-endian x86-64.
    #[error("not a 64-bit little-endian x86-64 ELF ({0})")]
    WrongKind(&'static str),
    /// Not an executable (ET_EXEC or a static-pie ET_DYN).
    #[error("ELF type {0} is not an executable")]
    NotExecutable(u16),
    /// A header or segment lies outside the file or overflows.
    #[error("malformed ELF: {0}")]
    Malformed(String),
    /// Nothing to load.
    #[error("no loadable segment")]
    NoSegments,
}

/// One PT_LOAD segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address (after the load bias).
    pub vaddr: u64,
    /// Size in memory (bss included).
    pub memsz: u64,
    /// Offset of the file bytes.
    pub offset: u64,
    /// Bytes from the file.
    pub filesz: u64,
    /// PF_R/PF_W/PF_X flags.
    pub flags: u32,
}

/// A parsed executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    /// Entry point (after the load bias).
    pub entry: u64,
    /// Load bias applied (0 for ET_EXEC).
    pub bias: u64,
    /// Loadable segments.
    pub segments: Vec<Segment>,
    /// Address of the program headers in memory (for AT_PHDR).
    pub phdr: u64,
    /// Size of one program header.
    pub phent: u16,
    /// Number of program headers.
    pub phnum: u16,
    /// PT_INTERP: the path of the ELF interpreter of a dynamically linked program.
    pub interp: Option<Vec<u8>>,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, ElfError> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| ElfError::Malformed(format!("header field at {o} beyond the file")))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, ElfError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| ElfError::Malformed(format!("header field at {o} beyond the file")))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, ElfError> {
    b.get(o..o + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| ElfError::Malformed(format!("header field at {o} beyond the file")))
}

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;

impl Elf {
    /// Parses `bytes`. A static-pie (ET_DYN) executable is placed at `pie_base`.
    pub fn parse(bytes: &[u8], pie_base: u64) -> Result<Elf, ElfError> {
        if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        if bytes[4] != 2 {
            return Err(ElfError::WrongKind("not ELFCLASS64"));
        }
        if bytes[5] != 1 {
            return Err(ElfError::WrongKind("not little-endian"));
        }
        if u16_at(bytes, 18)? != 62 {
            return Err(ElfError::WrongKind("machine is not x86-64"));
        }
        let etype = u16_at(bytes, 16)?;
        let bias = match etype {
            2 => 0,
            3 => pie_base,
            t => return Err(ElfError::NotExecutable(t)),
        };
        let entry = u64_at(bytes, 24)?;
        let phoff = u64_at(bytes, 32)?;
        let phent = u16_at(bytes, 54)?;
        let phnum = u16_at(bytes, 56)?;
        if phent != 56 {
            return Err(ElfError::Malformed(format!(
                "program header size {phent}, expected 56"
            )));
        }
        let table_end = phoff
            .checked_add(u64::from(phent) * u64::from(phnum))
            .filter(|e| *e <= bytes.len() as u64)
            .ok_or_else(|| ElfError::Malformed("program header table beyond the file".into()))?;
        let _ = table_end;
        let mut segments = Vec::new();
        let mut phdr = None;
        let mut interp = None;
        for i in 0..usize::from(phnum) {
            let o = phoff as usize + i * 56;
            let ptype = u32_at(bytes, o)?;
            match ptype {
                PT_INTERP => {
                    let (off, len) = (u64_at(bytes, o + 8)?, u64_at(bytes, o + 32)?);
                    let path = off
                        .checked_add(len)
                        .filter(|e| *e <= bytes.len() as u64 && len > 1 && len < 4096)
                        .map(|_| &bytes[off as usize..(off + len) as usize])
                        .ok_or_else(|| ElfError::Malformed("PT_INTERP beyond the file".into()))?;
                    // the path ends at its NUL
                    let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())];
                    if path.is_empty() {
                        return Err(ElfError::Malformed("PT_INTERP is empty".into()));
                    }
                    interp = Some(path.to_vec());
                }
                PT_PHDR => phdr = Some(u64_at(bytes, o + 16)?.wrapping_add(bias)),
                PT_LOAD => {
                    let seg = Segment {
                        flags: u32_at(bytes, o + 4)?,
                        offset: u64_at(bytes, o + 8)?,
                        vaddr: u64_at(bytes, o + 16)?.checked_add(bias).ok_or_else(|| {
                            ElfError::Malformed(format!("segment {i} address overflows"))
                        })?,
                        filesz: u64_at(bytes, o + 32)?,
                        memsz: u64_at(bytes, o + 40)?,
                    };
                    if seg.filesz > seg.memsz {
                        return Err(ElfError::Malformed(format!(
                            "segment {i} has filesz > memsz"
                        )));
                    }
                    if seg
                        .offset
                        .checked_add(seg.filesz)
                        .is_none_or(|e| e > bytes.len() as u64)
                    {
                        return Err(ElfError::Malformed(format!(
                            "segment {i} lies beyond the end of the file"
                        )));
                    }
                    if seg.vaddr.checked_add(seg.memsz).is_none() {
                        return Err(ElfError::Malformed(format!(
                            "segment {i} wraps the address space"
                        )));
                    }
                    segments.push(seg);
                }
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(ElfError::NoSegments);
        }
        let mut sorted: Vec<&Segment> = segments.iter().collect();
        sorted.sort_by_key(|s| s.vaddr);
        for w in sorted.windows(2) {
            // segments share a page at most where one ends and the next begins (as linkers lay
            // them out), never a byte
            if w[0].vaddr + w[0].memsz > w[1].vaddr {
                return Err(ElfError::Malformed(format!(
                    "segments at {:#x} and {:#x} overlap",
                    w[0].vaddr, w[1].vaddr
                )));
            }
        }
        let entry_at = entry.wrapping_add(bias);
        if !segments
            .iter()
            .any(|s| s.flags & 1 != 0 && (s.vaddr..s.vaddr + s.memsz).contains(&entry_at))
        {
            return Err(ElfError::Malformed(format!(
                "entry point {entry_at:#x} is not inside an executable segment"
            )));
        }
        let phdr = phdr.unwrap_or_else(|| {
            segments
                .iter()
                .find(|s| s.offset <= phoff && phoff < s.offset + s.filesz)
                .map(|s| s.vaddr + (phoff - s.offset))
                .unwrap_or(0)
        });
        Ok(Elf {
            entry: entry.wrapping_add(bias),
            bias,
            segments,
            phdr,
            phent,
            phnum,
            interp,
        })
    }

    /// The ELF interpreter this program names (PT_INTERP), read and checked to be what the
    /// kernel loads as one: a shared object (ET_DYN) with no interpreter of its own. Its
    /// bytes; None for a static program.
    pub fn read_interpreter(&self) -> Result<Option<Vec<u8>>, String> {
        use std::os::unix::ffi::OsStrExt;
        let Some(path) = &self.interp else {
            return Ok(None);
        };
        let shown = String::from_utf8_lossy(path).into_owned();
        let bytes = std::fs::read(std::ffi::OsStr::from_bytes(path))
            .map_err(|e| format!("its ELF interpreter {shown}: {e}"))?;
        // any base: an ET_EXEC keeps a bias of 0
        let ie =
            Elf::parse(&bytes, 1 << 30).map_err(|e| format!("its ELF interpreter {shown}: {e}"))?;
        if ie.interp.is_some() || ie.bias == 0 {
            return Err(format!(
                "its ELF interpreter {shown} is not a self-contained shared object"
            ));
        }
        Ok(Some(bytes))
    }

    /// The lowest and highest (exclusive) addresses the segments occupy.
    pub fn extent(&self) -> (u64, u64) {
        let lo = self.segments.iter().map(|s| s.vaddr).min().unwrap_or(0);
        let hi = self
            .segments
            .iter()
            .map(|s| s.vaddr + s.memsz)
            .max()
            .unwrap_or(0);
        (lo, hi)
    }
}

/// What the auxiliary vector says beyond the program's own headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Aux<'a> {
    /// AT_SYSINFO_EHDR: where the vDSO is (0: none).
    pub sysinfo_ehdr: u64,
    /// AT_BASE: where the ELF interpreter is loaded (0: none).
    pub base: u64,
    /// AT_ENTRY: the program's entry (0: the `elf` one's).
    pub entry: u64,
    /// AT_EXECFN: the path the program was started by (none: not given).
    pub execfn: Option<&'a [u8]>,
    /// AT_UID, AT_EUID, AT_GID, AT_EGID.
    pub ids: [u64; 4],
    /// AT_HWCAP, AT_HWCAP2.
    pub hwcap: [u64; 2],
}

/// The host's AT_HWCAP and AT_HWCAP2: the guest runs on the same CPU.
pub fn host_hwcap() -> [u64; 2] {
    // SAFETY: getauxval has no preconditions.
    unsafe {
        [
            libc::getauxval(libc::AT_HWCAP),
            libc::getauxval(libc::AT_HWCAP2),
        ]
    }
}

/// Stores bytes into guest memory at a guest address (for [`initial_stack`]).
pub type WriteGuest<'a> = &'a mut dyn FnMut(u64, &[u8]) -> Result<(), String>;

/// Builds the Linux initial process stack (argv, envp, auxv, AT_RANDOM bytes, platform string)
/// below `top` through `write(addr, bytes)`, which stores into guest memory; returns the initial
/// rsp (16-byte aligned, pointing at argc). Shared by the `kvm` and `bt` backends.
pub fn initial_stack(
    top: u64,
    elf: &Elf,
    argv: &[Vec<u8>],
    env: &[&[u8]],
    aux: &Aux<'_>,
    write: WriteGuest<'_>,
) -> Result<u64, String> {
    fn push(write: WriteGuest<'_>, sp: &mut u64, b: &[u8], nul: bool) -> Result<u64, String> {
        *sp = sp
            .checked_sub(b.len() as u64 + u64::from(nul))
            .ok_or_else(|| "initial stack: out of room".to_string())?;
        write(*sp, b)?;
        if nul {
            write(*sp + b.len() as u64, &[0])?;
        }
        Ok(*sp)
    }
    let mut sp = top;
    let arg_ptrs: Vec<u64> = argv
        .iter()
        .map(|a| push(write, &mut sp, a, true))
        .collect::<Result<_, _>>()?;
    let env_ptrs: Vec<u64> = env
        .iter()
        .map(|a| push(write, &mut sp, a, true))
        .collect::<Result<_, _>>()?;
    let execfn = match aux.execfn {
        Some(f) => push(write, &mut sp, f, true)?,
        None => 0,
    };
    let platform = push(write, &mut sp, b"x86_64", true)?;
    let mut rnd = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd));
    let random = push(write, &mut sp, &rnd, false)?;
    let entry = if aux.entry != 0 { aux.entry } else { elf.entry };
    let mut auxv: Vec<(u64, u64)> = Vec::new();
    if aux.sysinfo_ehdr != 0 {
        auxv.push((33, aux.sysinfo_ehdr)); // first, as Linux's ARCH_DLINFO puts it
    }
    auxv.extend([
        (16, aux.hwcap[0]),
        (6, 4096),
        (17, 100),
        (3, elf.phdr),
        (4, u64::from(elf.phent)),
        (5, u64::from(elf.phnum)),
        (7, aux.base),
        (8, 0),
        (9, entry),
        (11, aux.ids[0]),
        (12, aux.ids[1]),
        (13, aux.ids[2]),
        (14, aux.ids[3]),
        (23, 0),
        (25, random),
        (26, aux.hwcap[1]),
    ]);
    if execfn != 0 {
        auxv.push((31, execfn));
    }
    auxv.push((15, platform));
    let mut words: Vec<u64> = vec![argv.len() as u64];
    words.extend(&arg_ptrs);
    words.push(0);
    words.extend(&env_ptrs);
    words.push(0);
    for (k, v) in auxv {
        words.push(k);
        words.push(v);
    }
    words.push(0);
    words.push(0);
    sp = sp
        .checked_sub(8 * words.len() as u64)
        .ok_or_else(|| "initial stack: out of room".to_string())?
        & !15;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    write(sp, &bytes)?;
    Ok(sp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid ELF: one PT_LOAD of the whole 0x80-byte file at 0x400000.
    pub(crate) fn tiny() -> Vec<u8> {
        let mut b = vec![0u8; 0x80];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes());
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[24..32].copy_from_slice(&0x400078u64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let p = 64;
        b[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[p + 4..p + 8].copy_from_slice(&5u32.to_le_bytes());
        b[p + 16..p + 24].copy_from_slice(&0x400000u64.to_le_bytes());
        b[p + 32..p + 40].copy_from_slice(&0x80u64.to_le_bytes());
        b[p + 40..p + 48].copy_from_slice(&0x1000u64.to_le_bytes());
        b
    }

    #[test]
    fn parses_a_minimal_executable() {
        let e = Elf::parse(&tiny(), 0).unwrap();
        assert_eq!(e.entry, 0x400078);
        assert_eq!(e.segments.len(), 1);
        assert_eq!(e.phdr, 0x400040);
        assert_eq!(e.extent(), (0x400000, 0x401000));
    }

    #[test]
    fn every_malformation_is_named() {
        assert_eq!(Elf::parse(b"hello", 0), Err(ElfError::NotElf));
        let mut b = tiny();
        b[4] = 1;
        assert!(matches!(Elf::parse(&b, 0), Err(ElfError::WrongKind(_))));
        let mut b = tiny();
        b[18] = 3;
        assert!(matches!(Elf::parse(&b, 0), Err(ElfError::WrongKind(_))));
        let mut b = tiny();
        b[16] = 1;
        assert_eq!(Elf::parse(&b, 0), Err(ElfError::NotExecutable(1)));
        let mut b = tiny();
        b[64 + 32..64 + 40].copy_from_slice(&0x1000u64.to_le_bytes()); // filesz beyond file
        assert!(
            matches!(Elf::parse(&b, 0), Err(ElfError::Malformed(m)) if m.contains("filesz > memsz") || m.contains("beyond"))
        );
        // a second program header, PT_INTERP, naming "/ld.so" after the table
        let mut b = tiny();
        b.resize(0x100, 0);
        b[56..58].copy_from_slice(&2u16.to_le_bytes());
        b[120..124].copy_from_slice(&PT_INTERP.to_le_bytes());
        b[128..136].copy_from_slice(&0xb0u64.to_le_bytes());
        b[152..160].copy_from_slice(&7u64.to_le_bytes());
        b[0xb0..0xb7].copy_from_slice(b"/ld.so\0");
        assert_eq!(
            Elf::parse(&b, 0).unwrap().interp.as_deref(),
            Some(&b"/ld.so"[..])
        );
        let missing = Elf::parse(&b, 0).unwrap().read_interpreter().unwrap_err();
        assert!(
            missing.contains("its ELF interpreter /ld.so") && missing.contains("No such file"),
            "{missing}"
        );
        // an interpreter that is itself a program with an interpreter is refused
        let dir = tempfile::tempdir().unwrap();
        let ld = dir.path().join("ld.so");
        std::fs::write(&ld, &b).unwrap();
        let path = ld.to_str().unwrap().as_bytes();
        let mut named = Elf::parse(&b, 0).unwrap();
        named.interp = Some(path.to_vec());
        let e = named.read_interpreter().unwrap_err();
        assert!(e.contains("not a self-contained shared object"), "{e}");
        let mut b = tiny();
        b[56..58].copy_from_slice(&100u16.to_le_bytes());
        assert!(matches!(Elf::parse(&b, 0), Err(ElfError::Malformed(_))));
        let mut b = tiny();
        b[64..68].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Elf::parse(&b, 0), Err(ElfError::NoSegments));
    }

    #[test]
    fn initial_stack_holds_argc_argv_env_and_auxv() {
        let e = Elf::parse(&tiny(), 0).unwrap();
        let mut mem = vec![0u8; 4096];
        let base = 0x1000u64;
        let sp = initial_stack(
            base + 4096,
            &e,
            &[b"prog".to_vec(), b"a1".to_vec()],
            &[b"K=V"],
            &Aux::default(),
            &mut |a, d| {
                let o = (a - base) as usize;
                mem[o..o + d.len()].copy_from_slice(d);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(sp % 16, 0);
        let w = |a: u64| {
            let o = (a - base) as usize;
            u64::from_le_bytes(mem[o..o + 8].try_into().unwrap())
        };
        assert_eq!(w(sp), 2);
        let argv0 = w(sp + 8) - base;
        assert_eq!(&mem[argv0 as usize..argv0 as usize + 5], b"prog\0");
        assert_eq!(w(sp + 24), 0);
        assert_eq!(w(sp + 40), 0);
        let mut auxv = std::collections::BTreeMap::new();
        let mut at = sp + 48;
        while w(at) != 0 {
            auxv.insert(w(at), w(at + 8));
            at += 16;
        }
        assert_eq!(auxv[&3], e.phdr);
        assert_eq!(auxv[&9], e.entry);
        assert_eq!(auxv[&7], 0, "no interpreter");
        assert!(initial_stack(16, &e, &[], &[], &Aux::default(), &mut |_, _| Ok(())).is_err());
    }

    #[test]
    fn overlapping_segments_and_stray_entry_points_are_refused() {
        // a second PT_LOAD overlapping the first
        let mut b = tiny();
        b[56..58].copy_from_slice(&2u16.to_le_bytes());
        b.resize(0x80 + 56, 0);
        b.copy_within(64..120, 120);
        let e = Elf::parse(&b, 0).unwrap_err();
        assert!(
            matches!(&e, ElfError::Malformed(m) if m.contains("overlap")),
            "{e}"
        );
        // entry outside every segment
        let mut b = tiny();
        b[24..32].copy_from_slice(&0x900000u64.to_le_bytes());
        let e = Elf::parse(&b, 0).unwrap_err();
        assert!(
            matches!(&e, ElfError::Malformed(m) if m.contains("entry point")),
            "{e}"
        );
        // entry in a segment that is not executable
        let mut b = tiny();
        b[68..72].copy_from_slice(&6u32.to_le_bytes());
        assert!(Elf::parse(&b, 0).is_err());
    }

    #[test]
    fn truncated_files_never_panic() {
        let b = tiny();
        for n in 0..b.len() {
            let _ = Elf::parse(&b[..n], 0);
        }
    }
}
