//! What the translator and the dispatcher count while the guest runs: fixed slots indexed by
//! [`Counter`] and by the emulated instruction's mnemonic, so counting on the hot path is one
//! add; they are named once, when the run ends.

use super::emulate::mnemonic_name;
use iced_x86::Mnemonic;
use std::collections::BTreeMap;

/// An event the translator counts, by its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counter {
    /// Blocks translated into the cache (not the single-instruction ones that are not kept).
    BlocksTranslated = 0,
    /// Guest instructions in those blocks.
    GuestInstrs,
    /// Signals delivered to a guest handler.
    SignalsDelivered,
    /// Asynchronous signals that came in the middle of translated code, off an instruction
    /// boundary: every link was undone to reach the next boundary.
    SignalUnlinks,
}

/// The results' name of each [`Counter`], in slot order.
const NAMES: [&str; 4] = [
    "bt.blocks_translated",
    "bt.guest_instrs",
    "bt.signals_delivered",
    "bt.signal_unlinks",
];

/// The counts of one run.
pub(super) struct Counts {
    by_counter: [u64; NAMES.len()],
    /// Bit `c` set once `c` was counted (by any amount, even 0).
    counted: u32,
    /// Emulated instructions by `Mnemonic as usize` (INVALID: bytes that do not decode).
    emulated: Box<[u64]>,
}

impl Counts {
    pub(super) fn new() -> Counts {
        Counts {
            by_counter: [0; NAMES.len()],
            counted: 0,
            emulated: vec![0; Mnemonic::values().len()].into_boxed_slice(),
        }
    }

    /// Counts `n` events of `c`.
    #[inline]
    pub(super) fn add(&mut self, c: Counter, n: u64) {
        self.by_counter[c as usize] += n;
        self.counted |= 1 << c as u32;
    }

    /// Counts one emulated instruction.
    #[inline]
    pub(super) fn emulated(&mut self, m: Mnemonic) {
        self.emulated[m as usize] += 1;
    }

    /// The counts by name (`bt.blocks_translated`, `bt.emulated.syscall`, ...); a counter
    /// that was never counted is absent.
    pub(super) fn named(&self) -> BTreeMap<String, u64> {
        let fixed = NAMES
            .iter()
            .zip(self.by_counter)
            .enumerate()
            .filter(|(c, _)| self.counted & (1 << c) != 0)
            .map(|(_, (name, n))| (name.to_string(), n));
        let emulated = Mnemonic::values()
            .zip(self.emulated.iter().copied())
            .filter(|(_, n)| *n != 0)
            .map(|(m, n)| (format!("bt.emulated.{}", mnemonic_name(m)), n));
        fixed.chain(emulated).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_named_as_the_results_know_them_and_zeros_are_left_out() {
        let mut c = Counts::new();
        assert!(c.named().is_empty());
        c.add(Counter::BlocksTranslated, 1);
        c.add(Counter::GuestInstrs, 5);
        c.add(Counter::GuestInstrs, 2);
        c.emulated(Mnemonic::Syscall);
        c.emulated(Mnemonic::Syscall);
        c.emulated(Mnemonic::Rdtscp);
        c.emulated(Mnemonic::INVALID);
        let want: BTreeMap<String, u64> = [
            ("bt.blocks_translated", 1),
            ("bt.guest_instrs", 7),
            ("bt.emulated.syscall", 2),
            ("bt.emulated.rdtscp", 1),
            ("bt.emulated.invalid", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(c.named(), want);
        c.add(Counter::SignalsDelivered, 0);
        assert_eq!(c.named()["bt.signals_delivered"], 0, "counted, by nothing");
    }

    #[test]
    fn every_counter_has_its_name() {
        for (c, name) in [
            (Counter::BlocksTranslated, "bt.blocks_translated"),
            (Counter::GuestInstrs, "bt.guest_instrs"),
            (Counter::SignalsDelivered, "bt.signals_delivered"),
            (Counter::SignalUnlinks, "bt.signal_unlinks"),
        ] {
            assert_eq!(NAMES[c as usize], name);
        }
    }
}
