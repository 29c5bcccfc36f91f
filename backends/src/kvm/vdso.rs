//! The guest's vDSO and clock page, as Linux gives every process: a small ELF shared object
//! mapped into the guest and named by AT_SYSINFO_EHDR, whose `__vdso_clock_gettime`,
//! `__vdso_gettimeofday`, `__vdso_time`, `__vdso_getcpu` and `__vdso_clock_getres` (version
//! LINUX_2.6) read the clock without a `syscall`: the guest's TSC, scaled by the clock page the
//! VMM publishes (kvmclock's idea: a base TSC, the CLOCK_MONOTONIC nanoseconds at it, a
//! multiplier from KVM's TSC frequency, and the offsets of CLOCK_REALTIME and CLOCK_BOOTTIME).
//! glibc, musl and Go find these functions through the ELF dynamic section (DT_HASH with one
//! bucket, DT_SYMTAB, DT_STRTAB, DT_VERSYM, DT_VERDEF). A clock the page cannot answer, or a
//! page the VMM left invalid, falls back to the real system call.
//!
//! The same reading routine answers the raw `clock_gettime` syscall inside the guest
//! (`stub`), so both the vDSO path and the syscall path stay in the guest.

use super::layout::CLOCK;
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

/// Offsets of the clock page's fields (u64 each).
pub mod page {
    /// Sequence count: odd while the VMM rewrites the page.
    pub const SEQ: u64 = 0;
    /// The guest TSC the page's time is measured from.
    pub const BASE_TSC: u64 = 8;
    /// CLOCK_MONOTONIC at BASE_TSC, ns.
    pub const BASE_NS: u64 = 16;
    /// ns per TSC tick, times 2^32.
    pub const MULT: u64 = 24;
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, ns (wrapping).
    pub const REALTIME: u64 = 32;
    /// CLOCK_BOOTTIME - CLOCK_MONOTONIC, ns.
    pub const BOOTTIME: u64 = 40;
    /// 1: the page is valid (0: every call falls back to the syscall).
    pub const VALID: u64 = 48;
}

/// What the VMM writes into the clock page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPage {
    /// The guest TSC at the instant of `base_ns`.
    pub base_tsc: u64,
    /// CLOCK_MONOTONIC then, ns.
    pub base_ns: u64,
    /// ns per tick times 2^32.
    pub mult: u64,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, ns.
    pub realtime: u64,
    /// CLOCK_BOOTTIME - CLOCK_MONOTONIC, ns.
    pub boottime: u64,
}

impl ClockPage {
    /// The multiplier for a TSC of `khz` kHz.
    pub fn mult_of(khz: u32) -> u64 {
        ((1_000_000u128 << 32) / u128::from(khz.max(1))) as u64
    }

    /// The page's bytes (seq 0: stable; valid).
    pub fn bytes(&self) -> [u8; 56] {
        let mut b = [0u8; 56];
        for (at, v) in [
            (page::SEQ, 0),
            (page::BASE_TSC, self.base_tsc),
            (page::BASE_NS, self.base_ns),
            (page::MULT, self.mult),
            (page::REALTIME, self.realtime),
            (page::BOOTTIME, self.boottime),
            (page::VALID, 1),
        ] {
            b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// CLOCK_MONOTONIC (ns) at guest TSC `tsc`, as the guest computes it.
    pub fn monotonic_at(&self, tsc: u64) -> u64 {
        let d = u128::from(tsc.wrapping_sub(self.base_tsc)) * u128::from(self.mult);
        self.base_ns.wrapping_add((d >> 32) as u64)
    }
}

/// Where the exported functions are, relative to the image (for tests and the stub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entries {
    /// The reading routine the stub calls: edi = clock id in, rax = ns out, CF set when the
    /// clock is not one the page answers. Clobbers rax, rdx, r8, r9 and the flags.
    pub read_clock: u64,
    /// `__vdso_clock_gettime`.
    pub clock_gettime: u64,
}

const CODE: u64 = 0x400;
const NSEC: i32 = 1_000_000_000;

/// The assembled functions: their bytes, the exported ones by name (offsets in the image), and
/// the entries the VMM uses.
struct Code {
    text: Vec<u8>,
    funcs: Vec<(&'static str, u64)>,
    entries: Entries,
}

/// Assembles the functions at guest address `base + CODE`.
fn code(base: u64) -> Result<Code, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let at = |off: u64| qword_ptr(CLOCK + off);
    // read_clock
    let mut read = a.create_label();
    let mut unsupported = a.create_label();
    let mut mono = a.create_label();
    let mut real = a.create_label();
    let mut boot = a.create_label();
    let mut retry = a.create_label();
    a.set_label(&mut read)?;
    a.cmp(at(page::VALID), 0)?;
    a.je(unsupported)?;
    a.cmp(edi, libc::CLOCK_MONOTONIC)?;
    a.je(mono)?;
    a.cmp(edi, libc::CLOCK_MONOTONIC_RAW)?;
    a.je(mono)?;
    a.cmp(edi, libc::CLOCK_REALTIME)?;
    a.je(real)?;
    a.cmp(edi, libc::CLOCK_BOOTTIME)?;
    a.je(boot)?;
    a.jmp(unsupported)?;
    a.set_label(&mut mono)?;
    a.xor(r9d, r9d)?;
    a.jmp(retry)?;
    a.set_label(&mut real)?;
    a.mov(r9, at(page::REALTIME))?;
    a.jmp(retry)?;
    a.set_label(&mut boot)?;
    a.mov(r9, at(page::BOOTTIME))?;
    a.set_label(&mut retry)?;
    a.mov(r8d, dword_ptr(CLOCK + page::SEQ))?;
    a.test(r8d, 1)?;
    a.jnz(retry)?;
    a.rdtsc()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    a.sub(rax, at(page::BASE_TSC))?;
    a.mul(at(page::MULT))?; // rdx:rax = ticks * mult
    a.shrd(rax, rdx, 32)?;
    a.add(rax, at(page::BASE_NS))?;
    a.add(rax, r9)?;
    a.cmp(r8d, dword_ptr(CLOCK + page::SEQ))?;
    a.jne(retry)?;
    a.clc()?;
    a.ret()?;
    a.set_label(&mut unsupported)?;
    a.stc()?;
    a.ret()?;

    // __vdso_clock_gettime(clockid, ts)
    let mut cgt = a.create_label();
    let mut cgt_sys = a.create_label();
    a.set_label(&mut cgt)?;
    a.call(read)?;
    a.jc(cgt_sys)?;
    a.xor(edx, edx)?;
    a.mov(ecx, NSEC)?;
    a.div(rcx)?;
    a.mov(qword_ptr(rsi), rax)?;
    a.mov(qword_ptr(rsi + 8), rdx)?;
    a.xor(eax, eax)?;
    a.ret()?;
    a.set_label(&mut cgt_sys)?;
    a.mov(eax, libc::SYS_clock_gettime as u32)?;
    a.syscall()?;
    a.ret()?;

    // __vdso_gettimeofday(tv, tz)
    let mut gtod = a.create_label();
    let mut gtod_tz = a.create_label();
    let mut gtod_done = a.create_label();
    let mut gtod_sys = a.create_label();
    a.set_label(&mut gtod)?;
    a.test(rdi, rdi)?;
    a.jz(gtod_tz)?;
    a.mov(r10, rdi)?;
    a.xor(edi, edi)?; // CLOCK_REALTIME
    a.call(read)?;
    a.mov(rdi, r10)?;
    a.jc(gtod_sys)?;
    a.xor(edx, edx)?;
    a.mov(ecx, NSEC)?;
    a.div(rcx)?;
    a.mov(qword_ptr(rdi), rax)?;
    a.mov(rax, rdx)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 1000)?;
    a.div(rcx)?;
    a.mov(qword_ptr(rdi + 8), rax)?;
    a.set_label(&mut gtod_tz)?;
    a.test(rsi, rsi)?;
    a.jz(gtod_done)?;
    a.mov(qword_ptr(rsi), 0)?; // minutes west 0, no DST: the kernel's default sys_tz
    a.set_label(&mut gtod_done)?;
    a.xor(eax, eax)?;
    a.ret()?;
    a.set_label(&mut gtod_sys)?;
    a.mov(eax, libc::SYS_gettimeofday as u32)?;
    a.syscall()?;
    a.ret()?;

    // __vdso_time(t)
    let mut time = a.create_label();
    let mut time_ret = a.create_label();
    let mut time_sys = a.create_label();
    a.set_label(&mut time)?;
    a.mov(r10, rdi)?;
    a.xor(edi, edi)?;
    a.call(read)?;
    a.mov(rdi, r10)?;
    a.jc(time_sys)?;
    a.xor(edx, edx)?;
    a.mov(ecx, NSEC)?;
    a.div(rcx)?;
    a.test(rdi, rdi)?;
    a.jz(time_ret)?;
    a.mov(qword_ptr(rdi), rax)?;
    a.set_label(&mut time_ret)?;
    a.ret()?;
    a.set_label(&mut time_sys)?;
    a.mov(eax, libc::SYS_time as u32)?;
    a.syscall()?;
    a.ret()?;

    // __vdso_getcpu(cpu, node, cache): the guest's one vCPU, node 0
    let mut getcpu = a.create_label();
    let mut gc_node = a.create_label();
    let mut gc_done = a.create_label();
    a.set_label(&mut getcpu)?;
    a.test(rdi, rdi)?;
    a.jz(gc_node)?;
    a.mov(dword_ptr(rdi), 0)?;
    a.set_label(&mut gc_node)?;
    a.test(rsi, rsi)?;
    a.jz(gc_done)?;
    a.mov(dword_ptr(rsi), 0)?;
    a.set_label(&mut gc_done)?;
    a.xor(eax, eax)?;
    a.ret()?;

    // __vdso_clock_getres(clockid, res): 1 ns for the clocks the page answers
    let mut getres = a.create_label();
    let mut gr_sys = a.create_label();
    let mut gr_done = a.create_label();
    a.set_label(&mut getres)?;
    a.call(read)?;
    a.jc(gr_sys)?;
    a.test(rsi, rsi)?;
    a.jz(gr_done)?;
    a.mov(qword_ptr(rsi), 0)?;
    a.mov(qword_ptr(rsi + 8), 1)?;
    a.set_label(&mut gr_done)?;
    a.xor(eax, eax)?;
    a.ret()?;
    a.set_label(&mut gr_sys)?;
    a.mov(eax, libc::SYS_clock_getres as u32)?;
    a.syscall()?;
    a.ret()?;

    let r = a.assemble_options(
        base + CODE,
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let off = |l: &CodeLabel| r.label_ip(l).map(|ip| ip - base);
    let funcs = vec![
        ("__vdso_clock_gettime", off(&cgt)?),
        ("__vdso_gettimeofday", off(&gtod)?),
        ("__vdso_time", off(&time)?),
        ("__vdso_getcpu", off(&getcpu)?),
        ("__vdso_clock_getres", off(&getres)?),
    ];
    let entries = Entries {
        read_clock: off(&read)?,
        clock_gettime: off(&cgt)?,
    };
    Ok(Code {
        text: r.inner.code_buffer,
        funcs,
        entries,
    })
}

pub use vbench_workloads::vdso::elf_hash;

/// The vDSO image for guest address `base` (one page-aligned PT_LOAD at offset 0 = vaddr 0,
/// so every address in it is an offset from where it is mapped): its bytes and entries.
pub fn image(base: u64) -> Result<(Vec<u8>, Entries), IcedError> {
    let Code {
        text,
        funcs,
        entries,
    } = code(base)?;
    // string table: "", soname, version, the names
    let mut strtab = vec![0u8];
    let mut add = |s: &str| {
        let at = strtab.len() as u32;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        at
    };
    let soname = add("linux-vdso.so.1");
    let version = add("LINUX_2.6");
    let names: Vec<u32> = funcs.iter().map(|(n, _)| add(n)).collect();
    let nsyms = funcs.len() + 1;
    // layout: ehdr 0x40, phdrs (2 x 56) at 0x40, then tables from 0x100, code at CODE
    const DYN: usize = 0x100;
    const NDYN: usize = 10;
    let hash = DYN + NDYN * 16;
    let hash_len = 4 * (2 + 1 + nsyms);
    let symtab = (hash + hash_len + 7) & !7;
    let strs = symtab + 24 * nsyms;
    let versym = (strs + strtab.len() + 1) & !1;
    let verdef = (versym + 2 * nsyms + 3) & !3;
    let verdef_len = 2 * (20 + 8);
    assert!(
        verdef + verdef_len <= CODE as usize,
        "vDSO tables overlap its code"
    );
    let total = (CODE as usize + text.len()).next_multiple_of(4096);
    let mut b = vec![0u8; total];
    let put16 =
        |b: &mut Vec<u8>, at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    // ELF header: ET_DYN, x86-64, no section headers
    b[..16].copy_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    put16(&mut b, 16, 3);
    put16(&mut b, 18, 62);
    put32(&mut b, 20, 1);
    put64(&mut b, 24, 0); // no entry
    put64(&mut b, 32, 0x40); // phoff
    put16(&mut b, 52, 64);
    put16(&mut b, 54, 56);
    put16(&mut b, 56, 2);
    put16(&mut b, 58, 64);
    // PT_LOAD (R+X) of the whole image, PT_DYNAMIC
    let ph = |b: &mut Vec<u8>, at: usize, kind: u32, flags: u32, off: u64, len: u64, align: u64| {
        put32(b, at, kind);
        put32(b, at + 4, flags);
        put64(b, at + 8, off);
        put64(b, at + 16, off);
        put64(b, at + 24, off);
        put64(b, at + 32, len);
        put64(b, at + 40, len);
        put64(b, at + 48, align);
    };
    ph(&mut b, 0x40, 1, 5, 0, total as u64, 4096);
    ph(&mut b, 0x40 + 56, 2, 4, DYN as u64, (NDYN * 16) as u64, 8);
    // dynamic section
    let dyns: [(u64, u64); NDYN] = [
        (4, hash as u64),             // DT_HASH
        (5, strs as u64),             // DT_STRTAB
        (6, symtab as u64),           // DT_SYMTAB
        (10, strtab.len() as u64),    // DT_STRSZ
        (11, 24),                     // DT_SYMENT
        (14, u64::from(soname)),      // DT_SONAME
        (0x6fff_fff0, versym as u64), // DT_VERSYM
        (0x6fff_fffc, verdef as u64), // DT_VERDEF
        (0x6fff_fffd, 2),             // DT_VERDEFNUM
        (0, 0),                       // DT_NULL
    ];
    for (i, (tag, v)) in dyns.iter().enumerate() {
        put64(&mut b, DYN + 16 * i, *tag);
        put64(&mut b, DYN + 16 * i + 8, *v);
    }
    // DT_HASH: one bucket holding symbol 1, each symbol chained to the next
    put32(&mut b, hash, 1);
    put32(&mut b, hash + 4, nsyms as u32);
    put32(&mut b, hash + 8, 1);
    for i in 0..nsyms {
        let next = if i == 0 || i + 1 == nsyms { 0 } else { i + 1 };
        put32(&mut b, hash + 12 + 4 * i, next as u32);
    }
    // symbols: global functions (section index 1: defined)
    for (i, ((_, off), name)) in funcs.iter().zip(&names).enumerate() {
        let at = symtab + 24 * (i + 1);
        put32(&mut b, at, *name);
        b[at + 4] = 0x12; // STB_GLOBAL, STT_FUNC
        put16(&mut b, at + 6, 1);
        put64(&mut b, at + 8, *off);
        put64(&mut b, at + 16, 16);
    }
    b[strs..strs + strtab.len()].copy_from_slice(&strtab);
    // versions: the base (the soname) and LINUX_2.6, which every symbol has
    put16(&mut b, versym, 0);
    for i in 1..nsyms {
        put16(&mut b, versym + 2 * i, 2);
    }
    for (i, (flags, ndx, name, n)) in [
        (1u16, 1u16, soname, "linux-vdso.so.1"),
        (0, 2, version, "LINUX_2.6"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = verdef + 28 * i;
        put16(&mut b, at, 1); // vd_version
        put16(&mut b, at + 2, flags);
        put16(&mut b, at + 4, ndx);
        put16(&mut b, at + 6, 1); // vd_cnt
        put32(&mut b, at + 8, elf_hash(n.as_bytes()));
        put32(&mut b, at + 12, 20); // vd_aux: right after it
        put32(&mut b, at + 16, if i == 0 { 28 } else { 0 }); // vd_next
        put32(&mut b, at + 20, name); // vda_name
        put32(&mut b, at + 24, 0); // vda_next
    }
    b[CODE as usize..CODE as usize + text.len()].copy_from_slice(&text);
    Ok((b, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vDSO symbol lookup as musl and Go do it: program headers, the dynamic section,
    /// DT_HASH's chain, the name, the version.
    fn lookup(img: &[u8], want: &str) -> Option<u64> {
        let r16 = |at: usize| u16::from_le_bytes(img[at..at + 2].try_into().unwrap());
        let r32 = |at: usize| u32::from_le_bytes(img[at..at + 4].try_into().unwrap());
        let r64 = |at: usize| u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
        let phoff = r64(32) as usize;
        let dynoff = (0..r16(56) as usize)
            .map(|i| phoff + 56 * i)
            .find(|ph| r32(*ph) == 2)
            .map(|ph| r64(ph + 8) as usize)?;
        let mut tags = std::collections::BTreeMap::new();
        for i in 0.. {
            let (t, v) = (r64(dynoff + 16 * i), r64(dynoff + 16 * i + 8));
            if t == 0 {
                break;
            }
            tags.insert(t, v as usize);
        }
        let (hash, sym, strs, versym, verdef) = (
            tags[&4],
            tags[&6],
            tags[&5],
            tags[&0x6fff_fff0],
            tags[&0x6fff_fffc],
        );
        let name_at = |off: usize| {
            let s = &img[strs + off..];
            std::str::from_utf8(&s[..s.iter().position(|c| *c == 0).unwrap()]).unwrap()
        };
        // the LINUX_2.6 definition's index
        let mut d = verdef;
        let ver = loop {
            if r16(d + 2) & 1 == 0
                && r32(d + 8) == elf_hash(b"LINUX_2.6")
                && name_at(r32(d + r32(d + 12) as usize) as usize) == "LINUX_2.6"
            {
                break r16(d + 4);
            }
            assert_ne!(r32(d + 16), 0, "no LINUX_2.6");
            d += r32(d + 16) as usize;
        };
        let nbucket = r32(hash) as usize;
        let mut i = r32(hash + 8 + 4 * (elf_hash(want.as_bytes()) as usize % nbucket)) as usize;
        while i != 0 {
            let s = sym + 24 * i;
            if name_at(r32(s) as usize) == want
                && img[s + 4] == 0x12
                && r16(s + 6) != 0
                && r16(versym + 2 * i) & 0x7fff == ver
            {
                return Some(r64(s + 8));
            }
            i = r32(hash + 8 + 4 * nbucket + 4 * i) as usize;
        }
        None
    }

    #[test]
    fn the_hash_is_the_sysv_one() {
        // the values Go's runtime keys its vDSO lookups by
        assert_eq!(elf_hash(b"LINUX_2.6"), 0x3ae75f6);
        assert_eq!(elf_hash(b"__vdso_clock_gettime"), 0xd35ec75);
        assert_eq!(elf_hash(b"__vdso_gettimeofday"), 0x315ca59);
    }

    #[test]
    fn every_function_is_found_as_the_c_libraries_find_it() {
        let (img, e) = image(0x10000).unwrap();
        assert_eq!(&img[..4], b"\x7fELF");
        assert!(img.len().is_multiple_of(4096));
        for f in [
            "__vdso_clock_gettime",
            "__vdso_gettimeofday",
            "__vdso_time",
            "__vdso_getcpu",
            "__vdso_clock_getres",
        ] {
            let at = lookup(&img, f).unwrap_or_else(|| panic!("{f} not found"));
            assert!(at >= CODE && (at as usize) < img.len(), "{f} at {at:#x}");
        }
        assert_eq!(lookup(&img, "__vdso_nothing"), None);
        assert_eq!(lookup(&img, "__vdso_clock_gettime"), Some(e.clock_gettime));
    }

    #[test]
    fn the_page_scales_ticks_to_nanoseconds() {
        // 2.5 GHz: 2.5 ticks per ns
        let p = ClockPage {
            base_tsc: 1000,
            base_ns: 5_000,
            mult: ClockPage::mult_of(2_500_000),
            realtime: 0,
            boottime: 0,
        };
        assert_eq!(p.monotonic_at(1000), 5_000);
        assert_eq!(
            p.monotonic_at(1000 + 2_500_000_000),
            5_000 + 1_000_000_000 - 1
        );
        // an hour later, still within a microsecond
        let hour = 3600 * 2_500_000_000u64;
        let ns = p.monotonic_at(1000 + hour) as i64 - 5_000;
        assert!((ns - 3_600_000_000_000).abs() < 1_000, "{ns}");
        let b = p.bytes();
        assert_eq!(
            &b[page::VALID as usize..page::VALID as usize + 8],
            &1u64.to_le_bytes()
        );
    }
}
