//! The guest kernel's `syscall` entry, assembled with iced-x86 at VM start. It runs where
//! `syscall` lands on hosts where the instruction stays at CPL3 (nested KVM through kvm_pvm):
//! getpid/gettid are answered in the guest; with the UART console, write(1|2) is done byte by
//! byte through the emulated UART; everything else jumps to the hypercall page.

use super::layout::{HYPERCALL, KDATA, STUB, UART};
use super::Console;
use iced_x86::code_asm::*;

/// Offset in the stub page of the hypercall target the stub jumps through.
const SLOT: u64 = 0xf00;
/// Offset of the probe the vCPU starts at: one `syscall`, so the VMM sees which ring it enters
/// before the program runs.
pub const PROBE: u64 = 0xe00;

/// Where in KDATA the VMM publishes the guest's pid (getpid and gettid answer it).
pub const PID: u64 = 16;

/// Machine code for the stub page (code at offset 0, the jump slot at [`SLOT`]).
pub fn assemble(console: Console) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut fast = a.create_label();
    let mut fwd = a.create_label();
    let mut ret = a.create_label();
    for nr in super::IN_GUEST {
        a.cmp(rax, nr as i32)?; // getpid, gettid
        a.je(fast)?;
    }
    if console == Console::Uart {
        let mut uart = a.create_label();
        let mut lp = a.create_label();
        let mut wait = a.create_label();
        let mut done = a.create_label();
        a.cmp(rax, 1)?;
        a.jne(fwd)?;
        a.cmp(rdi, 1)?;
        a.je(uart)?;
        a.cmp(rdi, 2)?;
        a.jne(fwd)?;
        a.set_label(&mut uart)?;
        a.lea(rsp, ptr(rsp - 128))?; // keep the red zone
        a.push(rsi)?;
        a.push(rdx)?;
        a.push(rbx)?;
        a.set_label(&mut lp)?;
        a.test(rdx, rdx)?;
        a.jz(done)?;
        a.set_label(&mut wait)?;
        a.mov(bl, byte_ptr(UART + 5))?; // LSR
        a.test(bl, 0x20)?;
        a.jz(wait)?;
        a.mov(bl, byte_ptr(rsi))?;
        a.mov(byte_ptr(UART), bl)?; // THR
        a.inc(rsi)?;
        a.dec(rdx)?;
        a.jmp(lp)?;
        a.set_label(&mut done)?;
        a.pop(rbx)?;
        a.pop(rdx)?;
        a.pop(rsi)?;
        a.lea(rsp, ptr(rsp + 128))?;
        a.mov(rax, rdx)?;
        a.inc(qword_ptr(KDATA + 8))?;
        a.jmp(ret)?;
    }
    a.set_label(&mut fwd)?;
    a.jmp(qword_ptr(STUB + SLOT))?;
    a.set_label(&mut fast)?;
    a.mov(rax, qword_ptr(KDATA + PID))?; // the guest's pid, as the VMM published it
    a.inc(qword_ptr(KDATA))?;
    a.set_label(&mut ret)?;
    // return as sysret would, without touching the red zone: restore rflags from r11
    a.lea(rsp, ptr(rsp - 128))?;
    a.push(r11)?;
    a.popfq()?;
    a.lea(rsp, ptr(rsp + 128))?;
    a.jmp(rcx)?;
    let mut code = a.assemble(STUB)?;
    assert!(code.len() < PROBE as usize, "stub overlaps the probe");
    code.resize(PROBE as usize, 0xcc);
    code.extend_from_slice(&[0x0f, 0x05, 0x0f, 0x0b]); // syscall; ud2
    code.resize(SLOT as usize, 0xcc);
    code.extend_from_slice(&HYPERCALL.to_le_bytes());
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

    /// The stub's code (up to the int3 padding), decoded.
    fn decode(code: &[u8]) -> Vec<Instruction> {
        let end = code[..PROBE as usize]
            .iter()
            .rposition(|b| *b != 0xcc)
            .map_or(0, |p| p + 1);
        let mut d = Decoder::with_ip(64, &code[..end], STUB, DecoderOptions::NONE);
        let mut out = Vec::new();
        while d.can_decode() {
            let i = d.decode();
            assert!(!i.is_invalid(), "invalid instruction at {:#x}", i.ip());
            out.push(i);
        }
        out
    }

    /// Whether some instruction accesses memory at `addr` (absolute or rip-relative).
    fn touches(ins: &[Instruction], addr: u64) -> bool {
        ins.iter().any(|i| {
            (0..i.op_count()).any(|o| i.op_kind(o) == OpKind::Memory)
                && i.memory_base() != Register::RSP
                && (i.memory_displacement64() == addr || i.ip_rel_memory_address() == addr)
        })
    }

    #[test]
    fn the_stub_page_is_laid_out_and_decodes_as_intended() {
        for c in [Console::Hypercall, Console::Uart] {
            let code = assemble(c).unwrap();
            assert_eq!(code.len(), SLOT as usize + 8, "{c:?}");
            // the jump slot holds the hypercall page, the probe is `syscall; ud2`
            assert_eq!(&code[SLOT as usize..], &HYPERCALL.to_le_bytes());
            assert_eq!(
                &code[PROBE as usize..PROBE as usize + 4],
                &[0x0f, 0x05, 0x0f, 0x0b]
            );
            assert!(code[PROBE as usize + 4..SLOT as usize]
                .iter()
                .all(|b| *b == 0xcc));
            let ins = decode(&code);
            // getpid and gettid are answered in the guest: compared first, counted in KDATA
            let cmps: Vec<u64> = ins
                .iter()
                .filter(|i| i.mnemonic() == Mnemonic::Cmp && i.op0_register() == Register::RAX)
                .map(|i| i.immediate(1))
                .collect();
            assert_eq!(&cmps[..2], &[39, 186], "{c:?}");
            assert!(touches(&ins, KDATA), "{c:?}: the in-guest syscall counter");
            // everything else leaves through the slot; the return is to rcx, as sysret's
            assert!(
                ins.iter()
                    .any(|i| i.mnemonic() == Mnemonic::Jmp && touches(&[*i], STUB + SLOT)),
                "{c:?}: no jump through the slot"
            );
            let last = ins.last().unwrap();
            assert_eq!(
                (last.mnemonic(), last.op0_register()),
                (Mnemonic::Jmp, Register::RCX),
                "{c:?}"
            );
            assert!(
                ins.iter().any(|i| i.mnemonic() == Mnemonic::Popfq),
                "{c:?}: rflags from r11"
            );
            // only the UART console drives the UART (LSR at +5, THR at +0)
            let uart = touches(&ins, UART) && touches(&ins, UART + 5);
            assert_eq!(uart, c == Console::Uart, "{c:?}");
            assert_eq!(
                touches(&ins, KDATA + 8),
                c == Console::Uart,
                "{c:?}: UART write counter"
            );
        }
    }
}
