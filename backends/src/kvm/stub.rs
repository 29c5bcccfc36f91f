//! The guest kernel's `syscall` entry, assembled with iced-x86 at VM start. It runs where
//! `syscall` lands on hosts where the instruction stays at CPL3 (nested KVM through kvm_pvm):
//! getpid/gettid are answered in the guest, and clock_gettime from the clock page (through the
//! vDSO's reading routine; a store to a bad pointer faults, and the VMM resumes the stub at its
//! EFAULT return, as a kernel's exception table does for a copy to user memory); with the UART
//! console, write(1|2) is done byte by byte through the emulated UART; everything else jumps to
//! the hypercall page.

use super::layout::{FAULT_BASE, GP_VECTOR, HYPERCALL, KCODE, KDATA, PT_RUNS, STUB, UART};
use super::Console;
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

/// Offset in the stub page of the hypercall target the stub jumps through.
const SLOT: u64 = 0xf00;
/// Offset of the probe the vCPU starts at: one `syscall`, so the VMM sees which ring it enters
/// before the program runs.
pub const PROBE: u64 = 0xe00;

/// Where in KDATA the VMM publishes the guest's pid (getpid and gettid answer it).
pub const PID: u64 = 16;
/// Where in KDATA the VMM leaves the guest's return address when it resumes the guest through
/// the flush trampoline.
pub const RET: u64 = 24;
/// Where in KDATA the stub counts the clock_gettime calls it answered.
pub const CLOCK_CALLS: u64 = 32;

/// The assembled stub page and where its clock path's stores are.
#[derive(Debug, Clone)]
pub struct Stub {
    /// The page's bytes.
    pub code: Vec<u8>,
    /// Guest addresses [start, end) of the stores of clock_gettime's result to the caller's
    /// timespec: a fault there is the call's EFAULT.
    pub stores: (u64, u64),
    /// Where the stub returns EFAULT from.
    pub efault: u64,
}
/// Offset in the stub page of the flush trampoline: a `mov cr3, rax` that raises #GP at CPL3,
/// whose handler is the ring-0 flush of the page-table entries the VMM changed, then on to the
/// return address at KDATA + RET.
pub const FLUSH: u64 = 0xd00;
/// Length of the trampoline's faulting instruction (`mov cr3, rax`), which the flush skips.
const FLUSH_INSN: u64 = 3;

/// Machine code for the stub page (code at offset 0, the jump slot at [`SLOT`]); `read_clock`
/// is the guest address of the vDSO's reading routine.
pub fn assemble(console: Console, read_clock: u64) -> Result<Stub, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut fast = a.create_label();
    let mut fwd = a.create_label();
    let mut ret = a.create_label();
    let mut clock = a.create_label();
    for nr in [libc::SYS_getpid, libc::SYS_gettid] {
        a.cmp(rax, nr as i32)?;
        a.je(fast)?;
    }
    a.cmp(rax, libc::SYS_clock_gettime as i32)?;
    a.je(clock)?;
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
    // clock_gettime(clockid, ts): only rax, rcx and r11 may change, as across a syscall
    let mut stores = a.create_label();
    let mut stores_end = a.create_label();
    let mut out = a.create_label();
    let mut efault = a.create_label();
    let mut not_here = a.create_label();
    let saved = [rdx, r8, r9, rcx, r11];
    a.set_label(&mut clock)?;
    a.lea(rsp, ptr(rsp - 128))?; // keep the red zone
    for r in saved {
        a.push(r)?;
    }
    a.call(read_clock)?;
    a.jc(not_here)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 1_000_000_000)?;
    a.div(rcx)?;
    a.set_label(&mut stores)?;
    a.mov(qword_ptr(rsi), rax)?;
    a.mov(qword_ptr(rsi + 8), rdx)?;
    a.set_label(&mut stores_end)?;
    a.xor(eax, eax)?;
    a.set_label(&mut out)?;
    for r in saved.iter().rev() {
        a.pop(*r)?;
    }
    a.lea(rsp, ptr(rsp + 128))?;
    a.inc(qword_ptr(KDATA + CLOCK_CALLS))?;
    a.jmp(ret)?;
    a.set_label(&mut efault)?;
    a.mov(rax, -i64::from(libc::EFAULT))?;
    a.jmp(out)?;
    a.set_label(&mut not_here)?; // a clock the page does not answer: the VMM's
    for r in saved.iter().rev() {
        a.pop(*r)?;
    }
    a.lea(rsp, ptr(rsp + 128))?;
    a.mov(eax, libc::SYS_clock_gettime as u32)?;
    a.jmp(fwd)?;
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
    let r = a.assemble_options(STUB, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
    let (stores, efault) = (
        (r.label_ip(&stores)?, r.label_ip(&stores_end)?),
        r.label_ip(&efault)?,
    );
    let mut code = r.inner.code_buffer;
    assert!(
        code.len() < FLUSH as usize,
        "stub overlaps the flush trampoline"
    );
    code.resize(FLUSH as usize, 0xcc);
    let mut t = CodeAssembler::new(64)?;
    t.mov(cr3, rax)?;
    t.jmp(qword_ptr(KDATA + RET))?;
    code.extend(t.assemble(STUB + FLUSH)?);
    assert!(
        code.len() < PROBE as usize,
        "flush trampoline overlaps the probe"
    );
    code.resize(PROBE as usize, 0xcc);
    code.extend_from_slice(&[0x0f, 0x05, 0x0f, 0x0b]); // syscall; ud2
    code.resize(SLOT as usize, 0xcc);
    code.extend_from_slice(&HYPERCALL.to_le_bytes());
    Ok(Stub {
        code,
        stores,
        efault,
    })
}

/// The guest kernel's ring-0 code: the #GP handler. A #GP raised by the flush trampoline's
/// instruction is the flush: it writes each run of page-table entries listed at PT_RUNS
/// again, onto itself (`rep movsq` with source = destination), reloads CR3 and returns after
/// the instruction. Where the host shadows the guest's page tables (nested KVM here), the
/// guest's own writes are what the host traps and re-reads (a write the VMM made from outside
/// is invisible to it); with hardware paging the CR3 reload flushes the guest's TLB. Every
/// register and the flags are as they were when it returns. Any other #GP goes on to its
/// exception slot, which exits to the VMM as the guest's fault.
pub fn assemble_kernel() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut lp = a.create_label();
    let mut done = a.create_label();
    let mut flush = a.create_label();
    // the frame: error code, rip, cs, rflags, rsp, ss
    a.cmp(qword_ptr(rsp + 8), (STUB + FLUSH) as i32)?;
    a.je(flush)?;
    a.jmp(FAULT_BASE + 16 * u64::from(GP_VECTOR))?;
    a.set_label(&mut flush)?;
    a.add(rsp, 8)?; // the error code
    a.add(qword_ptr(rsp), FLUSH_INSN as i32)?;
    for r in [rax, rcx, rsi, rdi, rbx, rdx] {
        a.push(r)?;
    }
    a.mov(rbx, PT_RUNS + 8)?;
    a.mov(rdx, qword_ptr(PT_RUNS))?;
    a.cld()?;
    a.set_label(&mut lp)?;
    a.test(rdx, rdx)?;
    a.jz(done)?;
    a.mov(rdi, qword_ptr(rbx))?;
    a.mov(rsi, rdi)?;
    a.mov(rcx, qword_ptr(rbx + 8))?;
    a.rep().movsq()?;
    a.add(rbx, 16)?;
    a.dec(rdx)?;
    a.jmp(lp)?;
    a.set_label(&mut done)?;
    a.mov(qword_ptr(PT_RUNS), 0)?;
    a.mov(rax, cr3)?;
    a.mov(cr3, rax)?;
    for r in [rdx, rbx, rdi, rsi, rcx, rax] {
        a.pop(r)?;
    }
    a.iretq()?;
    a.assemble(KCODE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

    /// The code at `ip` in `code`, up to the int3 padding, decoded.
    fn decode_at(code: &[u8], ip: u64) -> Vec<Instruction> {
        let end = code.iter().rposition(|b| *b != 0xcc).map_or(0, |p| p + 1);
        let mut d = Decoder::with_ip(64, &code[..end], ip, DecoderOptions::NONE);
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
            let code = assemble(c, 0x10400).unwrap().code;
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
            let ins = decode_at(&code[..FLUSH as usize], STUB);
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

    #[test]
    fn the_flush_is_entered_by_a_fault_of_the_trampoline_and_keeps_the_registers() {
        let code = assemble(Console::Hypercall, 0x10400).unwrap().code;
        let t = decode_at(&code[FLUSH as usize..PROBE as usize], STUB + FLUSH);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0].len() as u64, FLUSH_INSN);
        assert_eq!(
            (t[0].mnemonic(), t[0].op0_register()),
            (Mnemonic::Mov, Register::CR3)
        );
        assert!(t[1].mnemonic() == Mnemonic::Jmp && touches(&t[1..], KDATA + RET));
        let k = assemble_kernel().unwrap();
        let ins = decode_at(&k, KCODE);
        // only the trampoline's #GP is the flush; any other goes on to the VMM
        assert_eq!(ins[0].mnemonic(), Mnemonic::Cmp);
        assert_eq!(ins[0].immediate(1), STUB + FLUSH);
        let onward = ins.iter().find(|i| i.mnemonic() == Mnemonic::Jmp).unwrap();
        assert_eq!(
            onward.near_branch_target(),
            FAULT_BASE + 16 * u64::from(GP_VECTOR)
        );
        assert!(ins
            .iter()
            .any(|i| i.mnemonic() == Mnemonic::Movsq && i.has_rep_prefix()));
        assert!(touches(&ins, PT_RUNS), "the list of runs");
        assert_eq!(ins.last().unwrap().mnemonic(), Mnemonic::Iretq);
        // what it pushes it pops, in reverse
        let regs = |m| {
            ins.iter()
                .filter(|i| i.mnemonic() == m)
                .map(|i| i.op0_register())
                .collect::<Vec<_>>()
        };
        let mut popped = regs(Mnemonic::Pop);
        popped.reverse();
        assert_eq!(regs(Mnemonic::Push), popped);
        assert!(regs(Mnemonic::Push).contains(&Register::RAX));
    }

    #[test]
    fn clock_gettime_is_answered_through_the_vdso_routine_with_an_efault_return() {
        let st = assemble(Console::Hypercall, 0x10400).unwrap();
        let ins = decode_at(&st.code[..FLUSH as usize], STUB);
        let cmps: Vec<u64> = ins
            .iter()
            .filter(|i| i.mnemonic() == Mnemonic::Cmp && i.op0_register() == Register::RAX)
            .map(|i| i.immediate(1))
            .collect();
        assert_eq!(cmps, [39, 186, 228]);
        assert!(ins
            .iter()
            .any(|i| i.mnemonic() == Mnemonic::Call && i.near_branch_target() == 0x10400));
        // the stores to the caller's timespec are exactly the fault range
        let stores: Vec<_> = ins
            .iter()
            .filter(|i| (st.stores.0..st.stores.1).contains(&i.ip()))
            .collect();
        assert_eq!(stores.len(), 2);
        assert!(stores
            .iter()
            .all(|i| i.mnemonic() == Mnemonic::Mov && i.memory_base() == Register::RSI));
        let e = ins.iter().find(|i| i.ip() == st.efault).unwrap();
        assert_eq!(e.immediate(1) as i64, -i64::from(libc::EFAULT));
        assert!(
            touches(&ins, KDATA + CLOCK_CALLS),
            "the in-guest clock counter"
        );
    }
}
