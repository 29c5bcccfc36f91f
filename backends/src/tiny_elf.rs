//! Minimal static x86-64 ELF images built from machine code: one read-write-execute segment
//! holding the code (at the entry point) and a data area. Tests, benches and probes use them to
//! run exact instruction sequences on every backend.

/// Where the image is loaded.
pub const BASE: u64 = 0x40_0000;
/// Offset of the entry point (the code) in the image.
pub const CODE: u64 = 0x78;
/// Address of the data area (`data` passed to [`build`]).
pub const DATA: u64 = BASE + 0x800;
/// Bytes of zeroed memory after the data (bss), usable as scratch space.
pub const BSS: u64 = 0x1000;

/// An ELF whose code (assembled for address `BASE + CODE`) is followed by `data` at [`DATA`]
/// and [`BSS`] zeroed bytes. Panics when the code exceeds its 1928-byte slot.
pub fn build(code: &[u8], data: &[u8]) -> Vec<u8> {
    assert!(
        CODE as usize + code.len() <= 0x800,
        "code too long for a tiny ELF"
    );
    let mut b = vec![0u8; 0x800 + data.len()];
    b[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    b[0x800..].copy_from_slice(data);
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1; // version
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[24..32].copy_from_slice(&(BASE + CODE).to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    b[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    b[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    b[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let len = b.len() as u64;
    let p = 64;
    b[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b[p + 4..p + 8].copy_from_slice(&7u32.to_le_bytes()); // RWX
    b[p + 16..p + 24].copy_from_slice(&BASE.to_le_bytes());
    b[p + 24..p + 32].copy_from_slice(&BASE.to_le_bytes());
    b[p + 32..p + 40].copy_from_slice(&len.to_le_bytes());
    b[p + 40..p + 48].copy_from_slice(&(len + BSS).to_le_bytes());
    b[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    b
}

/// Where [`build_i386`] loads its image.
pub const BASE_I386: u32 = 0x0804_8000;

/// A minimal static 32-bit (i386) ELF whose one R+X segment holds `code` at its entry point:
/// for what a 64-bit-only level does with another architecture's program.
pub fn build_i386(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 0x34;
    const PHDR: usize = 0x20;
    let mut b = vec![0u8; EHDR + PHDR];
    b[..4].copy_from_slice(b"\x7fELF");
    (b[4], b[5], b[6]) = (1, 1, 1); // 32-bit, little-endian, version
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    let entry = BASE_I386 + (EHDR + PHDR) as u32;
    b[24..28].copy_from_slice(&entry.to_le_bytes());
    b[28..32].copy_from_slice(&(EHDR as u32).to_le_bytes()); // phoff
    b[40..42].copy_from_slice(&(EHDR as u16).to_le_bytes()); // ehsize
    b[42..44].copy_from_slice(&(PHDR as u16).to_le_bytes()); // phentsize
    b[44..46].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let size = (EHDR + PHDR + code.len()) as u32;
    let ph = EHDR;
    b[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b[ph + 8..ph + 12].copy_from_slice(&BASE_I386.to_le_bytes()); // vaddr
    b[ph + 12..ph + 16].copy_from_slice(&BASE_I386.to_le_bytes()); // paddr
    b[ph + 16..ph + 20].copy_from_slice(&size.to_le_bytes()); // filesz
    b[ph + 20..ph + 24].copy_from_slice(&size.to_le_bytes()); // memsz
    b[ph + 24..ph + 28].copy_from_slice(&5u32.to_le_bytes()); // R X
    b[ph + 28..ph + 32].copy_from_slice(&0x1000u32.to_le_bytes());
    b.extend_from_slice(code);
    b
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_i386_image_is_refused_by_the_64_bit_loader_as_the_wrong_kind() {
        let b = super::build_i386(&[0xcd, 0x80]);
        assert_eq!(b[4], 1);
        assert!(matches!(
            crate::elf::Elf::parse(&b, super::BASE),
            Err(crate::elf::ElfError::WrongKind(_))
        ));
    }

    #[test]
    fn images_parse_with_the_shared_loader() {
        let img = super::build(&[0xf4], b"data");
        let e = crate::elf::Elf::parse(&img, 0).unwrap();
        assert_eq!(e.entry, super::BASE + super::CODE);
        assert_eq!(e.segments[0].filesz, img.len() as u64);
    }
}
