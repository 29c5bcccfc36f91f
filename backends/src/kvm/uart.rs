//! The emulated 16550 UART: trap-and-emulate, one VM exit per register access. The guest stub
//! drives it with `--kvm-console uart` (it polls LSR, then writes THR, for every byte).

use super::layout::UART;
use crate::linux_abi::Output;

/// Transmitter holding register (write: a byte out).
const THR: u64 = 0;
/// Line status register (read).
const LSR: u64 = 5;
/// LSR: transmitter holding register empty and transmitter empty.
const LSR_IDLE: u8 = 0x60;

/// Whether `addr` is one of the UART's eight registers.
pub fn claims(addr: u64) -> bool {
    (UART..UART + 8).contains(&addr)
}

/// A write to register `addr`: a byte to THR goes to `out`. Returns whether a byte went out.
pub fn write(addr: u64, data: &[u8], out: &mut Output) -> bool {
    if addr - UART != THR {
        return false;
    }
    out.put(&[data.first().copied().unwrap_or(0)]);
    true
}

/// A read of register `addr`: LSR says the line is idle, every other register reads 0.
pub fn read(addr: u64, data: &mut [u8]) {
    data.fill(0);
    if addr - UART == LSR {
        if let Some(b) = data.first_mut() {
            *b = LSR_IDLE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thr_writes_bytes_and_lsr_reads_idle() {
        let mut out = Output::Capture {
            buf: vec![],
            total: 0,
        };
        assert!(claims(UART) && claims(UART + 7) && !claims(UART + 8) && !claims(UART - 1));
        assert!(write(UART, b"h", &mut out));
        assert!(!write(UART + 1, b"x", &mut out), "IER is not THR");
        assert!(write(UART, &[], &mut out), "an empty access writes 0");
        let Output::Capture { buf, .. } = &out else {
            unreachable!()
        };
        assert_eq!(buf, b"h\0");
        let mut d = [0xffu8; 1];
        read(UART + 5, &mut d);
        assert_eq!(d, [0x60]);
        read(UART + 2, &mut d);
        assert_eq!(d, [0]);
    }
}
