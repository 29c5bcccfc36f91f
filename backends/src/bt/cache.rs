//! The code cache: the mapping that holds the context page, the trampolines, the indirect
//! branch table and the translated blocks; the map from guest to host addresses; block
//! lookup (translating on a miss), linking support, and flushing on invalidation.

use super::counters::{Counter, Counts};
use super::dispatch::{crash, Stop};
use super::signals;
use super::space::Space;
use super::translate::{
    link_target, patch_link, trampolines, translate_n, xsave_mask, NoBlock, Tramps, CACHE_BASE,
    CACHE_SIZE, CODE, CODE_END, EMPTY_KEY, TABLE, TABLE_ENTRIES, TRAMP,
};
use super::{invalid, BackendError};
use std::collections::{BTreeMap, HashMap};

/// The translator's state for one run: the cache mapping, translated blocks, counts.
pub(super) struct Translator {
    pub(super) tramps: Tramps,
    /// The XSAVE components the trampolines save and restore.
    pub(super) xmask: u64,
    pub(super) cursor: u64,
    blocks: HashMap<u64, u64, FastHash>,
    /// host address of each translated instruction -> guest address
    pub(super) host_to_guest: BTreeMap<u64, u64>,
    /// what the translator, the dispatcher and the emulator counted (named at the end)
    pub(super) counts: Counts,
    /// decoded sensitive instructions by guest address
    pub(super) decoded: HashMap<u64, iced_x86::Instruction, FastHash>,
    /// cache flushes so far
    pub(super) generation: u64,
    /// The next block is the one guest instruction that wrote to its own code: translated
    /// alone, without protecting its page, and not kept.
    pub(super) single: bool,
    /// The link sites patched to jump straight to their target block, with where each jumped
    /// before (its slow stub), for [`Translator::unlink_all`].
    linked: HashMap<u64, u64>,
}

/// A multiplicative hasher for u64 keys (guest addresses): the dispatcher's maps
/// are looked up on every exit, where SipHash would be a measurable share of the cost.
#[derive(Default, Clone, Copy)]
pub(super) struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// The hasher of [`FastHash`].
pub(super) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

impl Translator {
    /// Maps the cache into `space` and writes the trampolines into it; no block yet.
    pub(super) fn new(space: &mut Space) -> Result<Translator, BackendError> {
        let xmask = xsave_mask().ok_or_else(|| BackendError::Unavailable {
            backend: "bt",
            reason: "no usable XSAVE".into(),
        })?;
        let (tcode, tramps) =
            trampolines(xmask).map_err(|e| invalid(format!("assembling the trampolines: {e}")))?;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        space.map(CACHE_BASE, CACHE_SIZE, rw | libc::PROT_EXEC)?;
        let mut tr = Translator {
            tramps,
            xmask,
            cursor: CODE,
            blocks: HashMap::default(),
            host_to_guest: BTreeMap::new(),
            counts: Counts::new(),
            decoded: HashMap::default(),
            generation: 0,
            single: false,
            linked: HashMap::new(),
        };
        let o = (TRAMP - CACHE_BASE) as usize;
        tr.cache()[o..o + tcode.len()].copy_from_slice(&tcode);
        tr.flush();
        tr.generation = 0;
        Ok(tr)
    }

    pub(super) fn cache(&mut self) -> &mut [u8] {
        // SAFETY: the cache mapping [CACHE_BASE, CODE_END) lives for the whole run (owned by
        // the Space); only the dispatcher thread writes it, while no guest code runs.
        unsafe { std::slice::from_raw_parts_mut(CACHE_BASE as *mut u8, CACHE_SIZE as usize) }
    }

    fn table_set(&mut self, guest: u64, host: u64) {
        let i = (guest & (TABLE_ENTRIES - 1)) as usize;
        let o = (TABLE - CACHE_BASE) as usize + 16 * i;
        let c = self.cache();
        c[o..o + 8].copy_from_slice(&(!guest).to_le_bytes());
        c[o + 8..o + 16].copy_from_slice(&host.to_le_bytes());
    }

    /// Links the exit at `site` to the block at `host`.
    pub(super) fn link(&mut self, site: u64, host: u64) {
        // where it jumps unlinked: its slow stub, which is not always the next instruction
        // (a jcc's taken site has its stub after the fall-through's)
        let slow = link_target(self.cache(), site);
        self.linked.entry(site).or_insert(slow);
        patch_link(self.cache(), site, host);
    }

    /// Undoes every link and empties the indirect-branch table, so that translated code leaves
    /// for the dispatcher at its next block boundary (an asynchronous signal is waiting); they
    /// are made again as the guest runs on.
    pub(super) fn unlink_all(&mut self) {
        for (site, slow) in std::mem::take(&mut self.linked) {
            patch_link(self.cache(), site, slow);
        }
        self.forget_keys();
    }

    /// Empties every entry of the indirect-branch table by its key only: the guest resumes in
    /// the middle of translated code after an unlink, perhaps in a lookup that matched a key
    /// already, whose next load is the entry's host address, which must still be there.
    fn forget_keys(&mut self) {
        let table =
            &mut self.cache()[(TABLE - CACHE_BASE) as usize..][..(16 * TABLE_ENTRIES) as usize];
        for e in table.chunks_exact_mut(16) {
            if e[..8].iter().any(|b| *b != 0) {
                e[..8].copy_from_slice(&EMPTY_KEY.to_le_bytes());
            }
        }
    }

    /// Empties the indirect-branch table: its pages go back to the kernel, and read as zero
    /// ([`EMPTY_KEY`]) until an entry is written. A fresh table costs no memory, and a forked
    /// translator process does not copy it.
    fn clear_table(&mut self) {
        // SAFETY: the table lies in the cache's private anonymous mapping, page aligned; no
        // translated code runs while the dispatcher empties it.
        unsafe {
            libc::madvise(
                TABLE as *mut libc::c_void,
                (16 * TABLE_ENTRIES) as usize,
                libc::MADV_DONTNEED,
            )
        };
        debug_assert_eq!(self.cache()[(TABLE - CACHE_BASE) as usize], EMPTY_KEY as u8);
    }

    /// Forgets every translation (cache full).
    pub(super) fn flush(&mut self) {
        self.linked.clear();
        self.generation += 1;
        self.blocks.clear();
        self.decoded.clear();
        self.host_to_guest.clear();
        self.cursor = CODE;
        self.clear_table();
    }

    /// The host address of the translation of `pc`, translating it if needed.
    pub(super) fn block(&mut self, space: &Space, pc: u64) -> Result<u64, Stop> {
        if !self.single {
            if let Some(&h) = self.blocks.get(&pc) {
                // (again) in the indirect-branch table, which unlink_all may have emptied
                self.table_set(pc, h);
                return Ok(h);
            }
        }
        if self.cursor + 0x4000 > CODE_END {
            self.flush();
        }
        let single = std::mem::take(&mut self.single);
        let max = if single { 1 } else { 64 };
        let b = translate_n(pc, space.code_at(pc), self.cursor, &self.tramps, max).map_err(|e| match e
        {
            NoBlock::NotExecutable => crash(
                libc::SIGSEGV,
                format!("guest crashed: SIGSEGV at guest rip {pc:#x}, address {pc:#x} (not executable guest memory)"),
            ),
            NoBlock::Encode(m) => crash(
                libc::SIGILL,
                format!("bt: cannot translate the block at guest rip {pc:#x}: {m}"),
            ),
        })?;
        let at = self.cursor;
        let o = (at - CACHE_BASE) as usize;
        self.cache()[o..o + b.bytes.len()].copy_from_slice(&b.bytes);
        self.cursor = (at + b.bytes.len() as u64 + 15) & !15;
        self.host_to_guest.extend(b.map.iter().copied());
        if single {
            signals::code_grew(self.cursor);
            return Ok(at);
        }
        space.protect_code(pc, b.guest_end);
        self.blocks.insert(pc, at);
        self.table_set(pc, at);
        self.counts.add(Counter::BlocksTranslated, 1);
        self.counts.add(Counter::GuestInstrs, b.guest_instrs as u64);
        signals::code_grew(self.cursor);
        Ok(at)
    }

    pub(super) fn guest_rip_of(&self, host: u64) -> Option<u64> {
        self.host_to_guest
            .range(..=host)
            .next_back()
            .map(|(_, g)| *g)
    }
}
