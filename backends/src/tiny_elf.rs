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

#[cfg(test)]
mod tests {
    #[test]
    fn images_parse_with_the_shared_loader() {
        let img = super::build(&[0xf4], b"data");
        let e = crate::elf::Elf::parse(&img, 0).unwrap();
        assert_eq!(e.entry, super::BASE + super::CODE);
        assert_eq!(e.segments[0].filesz, img.len() as u64);
    }
}
