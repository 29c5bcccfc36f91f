//! The translator: the code-cache layout, the hand-assembled context-switch trampolines and
//! the basic-block translator. Everything here produces bytes; nothing here executes them.
//!
//! Layout of the cache mapping (one RWX mapping at [`CACHE_BASE`], so every piece of generated
//! code reaches the context with a rip-relative operand):
//! ```text
//! CTX    the context page: guest registers, scratch slots, FXSAVE areas
//! TRAMP  entry, exit, indirect lookup, fault and kick exits
//! TABLE  the indirect-branch table: 65536 x (-guest address, host address)
//! CODE   translated blocks, bump-allocated
//! ```

use iced_x86::{
    Code, Decoder, DecoderError, DecoderOptions, Encoder, FlowControl, IcedError, Instruction,
    MemoryOperand, Mnemonic, Register,
};

/// Where the cache (context, trampolines, table, code) is mapped.
pub const CACHE_BASE: u64 = 0x6000_0000;
/// Size of the whole cache mapping.
pub const CACHE_SIZE: u64 = 64 << 20;
/// The context page.
pub const CTX: u64 = CACHE_BASE;
/// The trampolines page.
pub const TRAMP: u64 = CACHE_BASE + 0x1000;
/// The indirect-branch table.
pub const TABLE: u64 = CACHE_BASE + 0x2000;
/// Entries of the indirect-branch table (indexed by the low 16 bits of the guest address).
pub const TABLE_ENTRIES: u64 = 1 << 16;
/// First byte of translated code.
pub const CODE: u64 = TABLE + TABLE_ENTRIES * 16;
/// End of translated code.
pub const CODE_END: u64 = CACHE_BASE + CACHE_SIZE;
/// The key of an empty table entry. A table entry holds the complement of its guest address
/// (`!guest`), so the all-zero memory of a fresh (or MADV_DONTNEED) table is empty: only the
/// guest address `u64::MAX`, which no guest can execute, has this key.
pub const EMPTY_KEY: u64 = 0;

/// Room for the guest's XSAVE image in the context page.
pub const XSAVE_BYTES: usize = 3072;

/// Exit reasons left in [`Ctx::info`] (values at or above [`CODE`] are link sites).
pub const INFO_INDIRECT: u64 = 1;
/// The instruction at `next` must be emulated by the dispatcher.
pub const INFO_EMULATE: u64 = 2;
/// A signal hit translated code (see the fault fields).
pub const INFO_FAULT: u64 = 3;
/// The watchdog asked the guest to leave.
pub const INFO_KICK: u64 = 4;

/// The guest's machine state and the slots generated code uses, at [`CTX`] (the running
/// thread's; each guest thread keeps a copy while another runs).
#[derive(Clone)]
#[repr(C, align(64))]
pub struct Ctx {
    /// RAX RCX RDX RBX RSP RBP RSI RDI R8..R15 (iced's register order).
    pub gpr: [u64; 16],
    /// The guest's rflags.
    pub rflags: u64,
    /// The guest rip to continue at.
    pub next: u64,
    /// Why the guest left (INFO_* or a link site).
    pub info: u64,
    /// Scratch: the guest's rax while generated code uses rax.
    pub s_rax: u64,
    /// Scratch: rcx in the lookup.
    pub s_rcx: u64,
    /// Scratch: rdx in the lookup.
    pub s_rdx: u64,
    /// Host address the entry jumps to.
    pub s_tgt: u64,
    /// Host address a lookup hit jumps to (not `s_tgt`: a kick between the lookup's store and
    /// its jump resumes through the entry, which sets `s_tgt`).
    pub l_tgt: u64,
    /// vbench's stack pointer while the guest runs.
    pub host_rsp: u64,
    /// vbench's FS base (its thread-local storage).
    pub host_fs: u64,
    /// The guest's FS base.
    pub guest_fs: u64,
    /// Indirect-branch lookups that stayed in the cache.
    pub hits: u64,
    /// Host rip of the last signal taken in translated code.
    pub fault_host_rip: u64,
    /// si_addr of that signal.
    pub fault_addr: u64,
    /// Its number.
    pub fault_sig: u64,
    /// Scratch: a second temporary of generated code.
    pub s_tmp: u64,
    /// Components the trampolines save with XSAVE (x87, SSE, AVX, AVX-512 as enabled).
    pub xmask: u64,
    /// The answers translated code gives itself: [0] the guest's pid (getpid is answered in
    /// the cache, [`IN_CACHE`]), [1] how many such calls it answered; and the thread's own
    /// ids, for the dispatcher: [2] its host thread id, [3] its signal slot
    /// (`signals::claim`); the rest is padding that keeps the FXSAVE areas aligned.
    pub in_cache: [u64; 5],
    /// The kick exit's scratch: rax at the kick.
    pub k_rax: u64,
    /// The kick exit's copy of `s_rax` at the kick (live when the kick hit the middle of an
    /// expansion that had spilled the guest's rax there): put back when the guest resumes at
    /// the interrupted host instruction.
    pub k_srax: u64,
    /// vbench's x87 control word (bytes 0..2) and MXCSR (bytes 24..28) while the guest runs.
    pub host_fx: [u8; 512],
    /// The guest's XSAVE image (x87, MXCSR, XMM/YMM/ZMM registers), standard format.
    pub guest_xsave: [u8; XSAVE_BYTES],
}

macro_rules! slot {
    ($f:ident) => {
        CTX + std::mem::offset_of!(Ctx, $f) as u64
    };
}

fn gpr_slot(i: usize) -> u64 {
    slot!(gpr) + 8 * i as u64
}

/// The general registers in [`Ctx::gpr`] order.
pub const GPRS: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// A rip-relative memory operand reaching absolute `addr`.
fn rip(addr: u64) -> MemoryOperand {
    MemoryOperand::with_base_displ(Register::RIP, addr as i64)
}

/// Encodes instructions one by one at their final address.
pub struct Emitter {
    /// Address of `buf[0]`.
    pub base: u64,
    /// The bytes so far.
    pub buf: Vec<u8>,
    enc: Encoder,
}

impl Emitter {
    /// An empty emitter for code placed at `base`.
    pub fn new(base: u64) -> Self {
        Emitter {
            base,
            buf: Vec::with_capacity(256),
            enc: Encoder::new(64),
        }
    }
    /// The address the next byte goes to.
    pub fn at(&self) -> u64 {
        self.base + self.buf.len() as u64
    }
    /// Appends one instruction.
    pub fn ins(&mut self, i: Instruction) -> Result<(), IcedError> {
        let at = self.at();
        self.enc.encode(&i, at)?;
        self.buf.extend(self.enc.take_buffer());
        Ok(())
    }
    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// `jmp rel32` to `target`, always five bytes (a link site).
    fn jmp32(&mut self, target: u64) {
        let rel = target.wrapping_sub(self.at() + 5) as i64;
        self.raw(&[0xe9]);
        self.raw(&(rel as i32).to_le_bytes());
    }
    fn patch_jmp32(&mut self, site: u64, target: u64) {
        let o = (site - self.base) as usize;
        let rel = target.wrapping_sub(site + 5) as i64 as i32;
        self.buf[o + 1..o + 5].copy_from_slice(&rel.to_le_bytes());
    }
    fn store(&mut self, addr: u64, r: Register) -> Result<(), IcedError> {
        self.ins(Instruction::with2(Code::Mov_rm64_r64, rip(addr), r)?)
    }
    fn load(&mut self, r: Register, addr: u64) -> Result<(), IcedError> {
        self.ins(Instruction::with2(Code::Mov_r64_rm64, r, rip(addr))?)
    }
    fn imm(&mut self, r: Register, v: u64) -> Result<(), IcedError> {
        if v <= u64::from(u32::MAX) {
            let r32 = match r {
                Register::RAX => Register::EAX,
                Register::RCX => Register::ECX,
                Register::RDX => Register::EDX,
                _ => return self.ins(Instruction::with2(Code::Mov_r64_imm64, r, v)?),
            };
            self.ins(Instruction::with2(Code::Mov_r32_imm32, r32, v as u32)?)
        } else {
            self.ins(Instruction::with2(Code::Mov_r64_imm64, r, v)?)
        }
    }
    fn jmp(&mut self, target: u64) -> Result<(), IcedError> {
        self.ins(Instruction::with_branch(Code::Jmp_rel32_64, target)?)
    }
    fn lea(&mut self, r: Register, m: MemoryOperand) -> Result<(), IcedError> {
        self.ins(Instruction::with2(Code::Lea_r64_m, r, m)?)
    }
}

/// Addresses of the trampolines.
#[derive(Debug, Clone, Copy)]
pub struct Tramps {
    /// `extern "C" fn(*mut Ctx)`: enters the guest at `Ctx::s_tgt`, returns when it exits.
    pub enter: u64,
    /// Saves the guest state and returns from `enter`.
    pub exit: u64,
    /// The miss path of the indirect-branch lookup (rax = guest target, guest rax, rcx and
    /// rdx in their slots).
    pub lookup: u64,
    /// Where a signal handler sends translated code that faulted.
    pub fault_exit: u64,
    /// Where an asynchronous signal sends translated code (every register kept, so the guest
    /// can go on at the very instruction it left).
    pub kick_exit: u64,
}

/// Assembles the trampolines for [`TRAMP`]; returns their bytes and addresses. `xmask` is the
/// set of XSAVE components the context switch saves (see [`xsave_mask`]).
pub fn trampolines(xmask: u64) -> Result<(Vec<u8>, Tramps), IcedError> {
    use Register::*;
    let mut e = Emitter::new(TRAMP);
    // --- exit: rax = info, guest rax in s_rax, guest rsp and flags live
    let exit = e.at();
    e.store(slot!(info), RAX)?;
    e.store(gpr_slot(4), RSP)?;
    e.load(RSP, slot!(host_rsp))?;
    e.ins(Instruction::with(Code::Pushfq))?;
    e.ins(Instruction::with1(Code::Pop_rm64, rip(slot!(rflags)))?)?;
    e.ins(Instruction::with1(Code::Pushq_imm32, 0x202i32)?)?;
    e.ins(Instruction::with(Code::Popfq))?; // clears DF, AC, TF for vbench's code
    e.load(RAX, slot!(s_rax))?;
    for (i, r) in GPRS.iter().enumerate() {
        if *r != RSP {
            e.store(gpr_slot(i), *r)?;
        }
    }
    // every exit saves the whole vector state: the guest may have live YMM registers anywhere
    e.load(RAX, slot!(xmask))?;
    e.imm(RDX, 0)?;
    // XSAVEOPT writes only what the guest changed since the entry's XRSTOR of the same area
    let xsave = if xsaveopt() {
        Code::Xsaveopt64_mem
    } else {
        Code::Xsave64_mem
    };
    e.ins(Instruction::with1(xsave, rip(slot!(guest_xsave)))?)?;
    if xmask & 4 != 0 {
        e.ins(Instruction::with(Code::VEX_Vzeroupper))?;
    }
    // vbench's x87/SSE registers are caller-saved: only its control words come back
    e.ins(Instruction::with1(Code::Fldcw_m2byte, rip(slot!(host_fx)))?)?;
    e.ins(Instruction::with1(
        Code::Ldmxcsr_m32,
        rip(slot!(host_fx) + 24),
    )?)?;
    e.load(RAX, slot!(host_fs))?;
    e.ins(Instruction::with1(Code::Wrfsbase_r64, RAX)?)?;
    e.lea(RSP, MemoryOperand::with_base_displ(RSP, 8))?;
    for r in [R15, R14, R13, R12, RBP, RBX] {
        e.ins(Instruction::with1(Code::Pop_r64, r)?)?;
    }
    e.ins(Instruction::with(Code::Retnq))?;

    // --- enter(ctx): System V call from vbench
    let enter = e.at();
    for r in [RBX, RBP, R12, R13, R14, R15] {
        e.ins(Instruction::with1(Code::Push_r64, r)?)?;
    }
    e.lea(RSP, MemoryOperand::with_base_displ(RSP, -8))?;
    e.store(slot!(host_rsp), RSP)?;
    e.ins(Instruction::with1(Code::Rdfsbase_r64, RAX)?)?;
    e.store(slot!(host_fs), RAX)?;
    e.ins(Instruction::with1(
        Code::Fnstcw_m2byte,
        rip(slot!(host_fx)),
    )?)?;
    e.ins(Instruction::with1(
        Code::Stmxcsr_m32,
        rip(slot!(host_fx) + 24),
    )?)?;
    e.load(RAX, slot!(xmask))?;
    e.imm(RDX, 0)?;
    e.ins(Instruction::with1(
        Code::Xrstor64_mem,
        rip(slot!(guest_xsave)),
    )?)?;
    e.load(RAX, slot!(guest_fs))?;
    e.ins(Instruction::with1(Code::Wrfsbase_r64, RAX)?)?;
    e.ins(Instruction::with1(Code::Push_rm64, rip(slot!(rflags)))?)?;
    e.ins(Instruction::with(Code::Popfq))?;
    for (i, r) in GPRS.iter().enumerate() {
        if *r != RSP && *r != RAX {
            e.load(*r, gpr_slot(i))?;
        }
    }
    e.load(RSP, gpr_slot(4))?;
    e.load(RAX, gpr_slot(0))?;
    e.ins(Instruction::with1(Code::Jmp_rm64, rip(slot!(s_tgt)))?)?;

    // --- miss tail of the inlined lookups: rax = guest target, guest rax/rcx/rdx in slots
    let lookup = e.at();
    e.load(RCX, slot!(s_rcx))?;
    e.load(RDX, slot!(s_rdx))?;
    e.store(slot!(next), RAX)?;
    e.imm(RAX, INFO_INDIRECT)?;
    e.jmp(exit)?;

    // --- fault and kick exits: every guest register still live
    let fault_exit = e.at();
    e.store(slot!(s_rax), RAX)?;
    e.imm(RAX, INFO_FAULT)?;
    e.jmp(exit)?;
    // the kick may land anywhere in translated code, also where s_rax holds the guest's rax:
    // it is kept in k_srax, so the guest can resume at the very host instruction it left
    let kick_exit = e.at();
    e.store(slot!(k_rax), RAX)?;
    e.load(RAX, slot!(s_rax))?;
    e.store(slot!(k_srax), RAX)?;
    e.load(RAX, slot!(k_rax))?;
    e.store(slot!(s_rax), RAX)?;
    e.imm(RAX, INFO_KICK)?;
    e.jmp(exit)?;
    assert!(e.buf.len() < 0x1000, "trampolines fit their page");
    Ok((
        e.buf,
        Tramps {
            enter,
            exit,
            lookup,
            fault_exit,
            kick_exit,
        },
    ))
}

/// The XSAVE components to switch: x87, SSE, AVX and AVX-512 as far as XCR0 enables them, and
/// whether their standard-format image fits [`XSAVE_BYTES`].
pub fn xsave_mask() -> Option<u64> {
    let c1 = core::arch::x86_64::__cpuid_count(1, 0);
    if c1.ecx & (1 << 27) == 0 {
        return None; // no OSXSAVE
    }
    // SAFETY: xgetbv is available when CPUID reports OSXSAVE, checked above.
    let xcr0 = unsafe { core::arch::x86_64::_xgetbv(0) };
    let mask = xcr0 & 0xe7;
    // the size of the standard image for the highest component in the mask
    let mut size = 576u32;
    for c in 2..8u32 {
        if mask & (1 << c) != 0 {
            let l = core::arch::x86_64::__cpuid_count(0xd, c);
            size = size.max(l.ebx + l.eax);
        }
    }
    (size as usize <= XSAVE_BYTES).then_some(mask)
}

/// Whether the CPU has XSAVEOPT.
fn xsaveopt() -> bool {
    core::arch::x86_64::__cpuid_count(0xd, 1).eax & 1 != 0
}

/// Instructions the guest may not execute directly: the dispatcher emulates them or reports
/// them as the guest's fault.
pub fn is_sensitive(i: &Instruction) -> bool {
    use Mnemonic::*;
    matches!(
        i.mnemonic(),
        Syscall
            | Sysenter
            | Sysexit
            | Sysret
            | Cpuid
            | Rdtsc
            | Rdtscp
            | Pushf
            | Pushfq
            | Pushfd
            | Popf
            | Popfq
            | Popfd
            | Sgdt
            | Sidt
            | Sldt
            | Smsw
            | Str
            | Int
            | Int1
            | Int3
            | Into
            | Ud0
            | Ud1
            | Ud2
            | Hlt
            | In
            | Out
            | Insb
            | Insw
            | Insd
            | Outsb
            | Outsw
            | Outsd
            | Iret
            | Iretd
            | Iretq
            | Retf
            | Rdfsbase
            | Wrfsbase
            | Cli
            | Sti
            | Xbegin
            | Xabort
            | Xend
    ) || is_far(i)
        || matches!(
            i.flow_control(),
            FlowControl::Interrupt | FlowControl::Exception
        )
}

/// A far jmp/call (to another code segment).
pub fn is_far(i: &Instruction) -> bool {
    matches!(
        i.code(),
        Code::Jmp_m1616
            | Code::Jmp_m1632
            | Code::Jmp_m1664
            | Code::Call_m1616
            | Code::Call_m1632
            | Code::Call_m1664
            | Code::Jmp_ptr1616
            | Code::Jmp_ptr1632
            | Code::Call_ptr1616
            | Code::Call_ptr1632
    )
}

/// Why no block could be made at a guest address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoBlock {
    /// The instruction bytes are not in executable guest memory.
    NotExecutable,
    /// The generated code did not encode (e.g. a rip-relative operand out of reach).
    Encode(String),
}

/// A translated block, ready to be copied into the cache at the address it was made for.
#[derive(Debug, Default)]
pub struct Block {
    /// The code.
    pub bytes: Vec<u8>,
    /// (host address, guest instruction address) of each translated instruction.
    pub map: Vec<(u64, u64)>,
    /// Guest instructions translated.
    pub guest_instrs: usize,
    /// End (exclusive) of the guest bytes the block was made from.
    pub guest_end: u64,
}

/// Longest block, in guest instructions.
const MAX_BLOCK: usize = 64;

/// The memory operand of `i` as a standalone operand (rip-relative ones keep their target).
fn mem_of(i: &Instruction) -> MemoryOperand {
    MemoryOperand::new(
        i.memory_base(),
        i.memory_index(),
        i.memory_index_scale(),
        i.memory_displacement64() as i64,
        i.memory_displ_size(),
        false,
        i.segment_prefix(),
    )
}

/// Decodes the guest code at `pc` (whose executable bytes are `code`, starting at `pc`) and
/// translates one basic block for the host address `at`.
pub fn translate(pc: u64, code: &[u8], at: u64, t: &Tramps) -> Result<Block, NoBlock> {
    translate_n(pc, code, at, t, MAX_BLOCK)
}

/// [`translate`] with at most `max` guest instructions in the block.
pub fn translate_n(
    pc: u64,
    code: &[u8],
    at: u64,
    t: &Tramps,
    max: usize,
) -> Result<Block, NoBlock> {
    // a one-instruction block leaves for the dispatcher even on an indirect branch (no lookup
    // that could run on into other blocks): it is how single steps and restarts are made
    let step = max == 1;
    let enc = |e: IcedError| NoBlock::Encode(e.to_string());
    let Scan {
        body,
        last,
        stop_at,
    } = scan(pc, code, max);
    if body.is_empty() && last.is_none() && stop_at == Some(pc) {
        if code.is_empty() {
            return Err(NoBlock::NotExecutable);
        }
        let slow = emulation_block(pc, at, t).map_err(enc)?;
        // a single step (the guest's trap flag) must stop after the syscall: no fast path
        if !step && code.starts_with(&[0x0f, 0x05]) && bmi2() {
            return in_cache_syscall(pc, at, t, &slow).map_err(enc);
        }
        return Ok(slow);
    }
    let mut e = Emitter::new(at);
    let mut map = Vec::with_capacity(body.len() + 1);
    for i in &body {
        map.push((e.at(), i.ip()));
        e.ins(*i).map_err(enc)?;
    }
    let n = body.len() + usize::from(last.is_some());
    let Some(i) = last else {
        let next = stop_at.unwrap_or_else(|| body.last().map_or(pc, |i| i.next_ip()));
        link_exit(&mut e, next, t).map_err(enc)?;
        return Ok(Block {
            bytes: e.buf,
            map,
            guest_instrs: n,
            guest_end: body.last().map_or(pc + 1, |i| i.next_ip()),
        });
    };
    if translated_in_place(&i) {
        map.push((e.at(), i.ip()));
    }
    end_block(&mut e, &i, t, step).map_err(enc)?;
    Ok(Block {
        bytes: e.buf,
        map,
        guest_instrs: n,
        guest_end: i.next_ip(),
    })
}

/// The guest instructions of one block.
struct Scan {
    /// Straight-line instructions, copied as they are.
    body: Vec<Instruction>,
    /// The control transfer that ends the block, if one does.
    last: Option<Instruction>,
    /// Where the block stops before an instruction the dispatcher must see (or that does
    /// not decode, or at the end of `code`).
    stop_at: Option<u64>,
}

/// Decodes at most `max` instructions of a block from `code` at `pc`.
fn scan(pc: u64, code: &[u8], max: usize) -> Scan {
    let mut dec = Decoder::with_ip(64, code, pc, DecoderOptions::NONE);
    let mut s = Scan {
        body: Vec::new(),
        last: None,
        stop_at: None,
    };
    while s.body.len() < max {
        if !dec.can_decode() {
            s.stop_at = Some(dec.ip());
            break;
        }
        let i = dec.decode();
        if i.is_invalid() || dec.last_error() != DecoderError::None || is_sensitive(&i) {
            s.stop_at = Some(i.ip());
            break;
        }
        if i.flow_control() == FlowControl::Next {
            s.body.push(i);
        } else {
            s.last = Some(i);
            break;
        }
    }
    s
}

/// The system calls translated code answers itself, without leaving the cache (as kvm's guest
/// kernel answers them inside the guest): getpid, whose answer is the same in every thread
/// (gettid is not: each guest thread is a host thread).
pub const IN_CACHE: [i64; 1] = [libc::SYS_getpid];

/// Whether the CPU has BMI2 (pext/pdep, rorx: flag-free bit moves the in-cache answer needs).
fn bmi2() -> bool {
    std::arch::is_x86_feature_detected!("bmi2")
}

/// A `syscall` at `pc` whose number is one of [`IN_CACHE`] is answered in the cache: rax gets
/// the pid, rcx the return address and r11 the flags, as sysret leaves them, and the block
/// links on to the next instruction. Any other number leaves for the dispatcher (`slow`). No
/// guest flag changes on the way: the tests are `lea` + `jrcxz` (rcx and r11 are the syscall's
/// to clobber), and r11 is built from lahf/seto with BMI2's flag-free pext/pdep. (DF is not in
/// r11: the ABI has it clear at every call.)
fn in_cache_syscall(pc: u64, at: u64, t: &Tramps, slow: &Block) -> Result<Block, IcedError> {
    let rcx_m = |d: i64| MemoryOperand::with_base_displ(Register::RAX, d);
    // the prefix's length does not depend on where jrcxz goes (rel8 either way)
    let prefix = |e: &mut Emitter, fast: u64| -> Result<(), IcedError> {
        for nr in IN_CACHE {
            e.ins(Instruction::with2(
                Code::Lea_r64_m,
                Register::RCX,
                rcx_m(-nr),
            )?)?;
            e.ins(Instruction::with_branch(Code::Jrcxz_rel8_64, fast)?)?;
        }
        Ok(())
    };
    let mut probe = Emitter::new(at);
    prefix(&mut probe, at)?;
    let slow_at = at + probe.buf.len() as u64;
    let slow_bytes = emulation_code(pc, slow_at, t)?;
    let fast = slow_at + slow_bytes.len() as u64;
    let mut e = Emitter::new(at);
    prefix(&mut e, fast)?;
    e.raw(&slow_bytes);
    debug_assert_eq!(e.at(), fast);
    e.ins(Instruction::with(Code::Lahf))?;
    e.ins(Instruction::with1(Code::Seto_rm8, Register::AL)?)?;
    e.ins(Instruction::with2(
        Code::Mov_r32_rm32,
        Register::R11D,
        Register::EAX,
    )?)?;
    e.ins(Instruction::with2(Code::Add_rm8_imm8, Register::AL, 0x7f)?)?; // OF back
    e.ins(Instruction::with(Code::Sahf))?; // SF ZF AF PF CF back
    e.ins(Instruction::with3(
        Code::VEX_Rorx_r32_rm32_imm8,
        Register::R11D,
        Register::R11D,
        8,
    )?)?;
    e.ins(Instruction::with2(
        Code::Mov_r32_imm32,
        Register::ECX,
        0x0100_00ff,
    )?)?;
    e.ins(Instruction::with3(
        Code::VEX_Pext_r32_r32_rm32,
        Register::R11D,
        Register::R11D,
        Register::ECX,
    )?)?;
    e.ins(Instruction::with2(
        Code::Mov_r32_imm32,
        Register::ECX,
        0x8ff,
    )?)?;
    e.ins(Instruction::with3(
        Code::VEX_Pdep_r32_r32_rm32,
        Register::R11D,
        Register::R11D,
        Register::ECX,
    )?)?;
    e.lea(
        Register::R11,
        MemoryOperand::with_base_displ(Register::R11, 0x200), // IF
    )?;
    e.load(Register::RAX, slot!(in_cache))?;
    e.load(Register::RCX, slot!(in_cache) + 8)?;
    e.lea(
        Register::RCX,
        MemoryOperand::with_base_displ(Register::RCX, 1),
    )?;
    e.store(slot!(in_cache) + 8, Register::RCX)?;
    e.imm(Register::RCX, pc + 2)?;
    link_exit(&mut e, pc + 2, t)?;
    Ok(Block {
        bytes: e.buf,
        map: slow.map.clone(),
        guest_instrs: 0,
        guest_end: pc + 2,
    })
}

/// The first instruction needs the dispatcher: a block that only exits to it.
fn emulation_block(pc: u64, at: u64, t: &Tramps) -> Result<Block, IcedError> {
    Ok(Block {
        bytes: emulation_code(pc, at, t)?,
        map: vec![(at, pc)],
        guest_instrs: 0,
        guest_end: pc + 1,
    })
}

/// The code of [`emulation_block`].
fn emulation_code(pc: u64, at: u64, t: &Tramps) -> Result<Vec<u8>, IcedError> {
    let mut e = Emitter::new(at);
    e.store(slot!(s_rax), Register::RAX)?;
    e.imm(Register::RAX, pc)?;
    e.store(slot!(next), Register::RAX)?;
    e.imm(Register::RAX, INFO_EMULATE)?;
    e.jmp(t.exit)?;
    Ok(e.buf)
}

/// Whether the control transfer `i` is translated in the block (rather than emulated by
/// the dispatcher, so that no host code stands for it).
fn translated_in_place(i: &Instruction) -> bool {
    matches!(
        i.flow_control(),
        FlowControl::UnconditionalBranch
            | FlowControl::ConditionalBranch
            | FlowControl::Call
            | FlowControl::IndirectBranch
            | FlowControl::IndirectCall
            | FlowControl::Return
    )
}

/// Emits the translation of the control transfer `i` that ends a block.
fn end_block(e: &mut Emitter, i: &Instruction, t: &Tramps, step: bool) -> Result<(), IcedError> {
    match i.flow_control() {
        FlowControl::UnconditionalBranch => link_exit(e, i.near_branch_target(), t),
        FlowControl::ConditionalBranch if i.is_jcc_short_or_near() => near_jcc(e, i, t),
        FlowControl::ConditionalBranch => short_jcc(e, i, t),
        FlowControl::Call => {
            push_return(e, i.next_ip()).and_then(|_| link_exit(e, i.near_branch_target(), t))
        }
        FlowControl::IndirectBranch | FlowControl::IndirectCall => indirect(e, i, t, step),
        FlowControl::Return => ret(e, i, t, step),
        // anything else that transfers control goes to the dispatcher as an emulation
        _ => link_exit(e, i.ip(), t),
    }
}

/// jcc rel32 (its rel32 is the taken link site), then the fall-through link site.
fn near_jcc(e: &mut Emitter, i: &Instruction, t: &Tramps) -> Result<(), IcedError> {
    let jcc = e.at();
    e.ins(Instruction::with_branch(
        i.code().as_near_branch(),
        jcc + 6,
    )?)?;
    assert_eq!(e.at(), jcc + 6, "jcc rel32 is six bytes");
    let taken_site = jcc + 1; // patch_link writes site+1..site+5, relative to site+5
    let fall_site = e.at();
    e.jmp32(fall_site + 5);
    slow_stub(e, fall_site, i.next_ip(), t)?;
    let taken_slow = e.at();
    e.patch_jmp32(taken_site, taken_slow);
    slow_stub(e, taken_site, i.near_branch_target(), t)
}

/// A branch with no rel32 form (jrcxz, loop): its short form over two link sites.
fn short_jcc(e: &mut Emitter, i: &Instruction, t: &Tramps) -> Result<(), IcedError> {
    let mut c = *i;
    c.as_short_branch();
    let here = e.at();
    c.set_near_branch64(here);
    let mut probe = Encoder::new(64);
    let len = probe.encode(&c, here)? as u64;
    c.set_near_branch64(here + len + 5);
    e.ins(c)?;
    let fall_site = e.at();
    e.jmp32(0);
    let taken_site = e.at();
    e.jmp32(0);
    let fall_slow = e.at();
    slow_stub(e, fall_site, i.next_ip(), t)?;
    let taken_slow = e.at();
    slow_stub(e, taken_site, i.near_branch_target(), t)?;
    e.patch_jmp32(fall_site, fall_slow);
    e.patch_jmp32(taken_site, taken_slow);
    Ok(())
}

/// An indirect jmp or call: the target in rax (the return address pushed), then the lookup.
fn indirect(e: &mut Emitter, i: &Instruction, t: &Tramps, step: bool) -> Result<(), IcedError> {
    use Register::RAX;
    e.store(slot!(s_rax), RAX)?;
    if i.op0_kind() == iced_x86::OpKind::Memory {
        e.ins(Instruction::with2(Code::Mov_r64_rm64, RAX, mem_of(i))?)?;
    } else {
        e.ins(Instruction::with2(
            Code::Mov_r64_rm64,
            RAX,
            i.op0_register(),
        )?)?;
    }
    if i.flow_control() == FlowControl::IndirectCall {
        if i.next_ip() <= 0x7fff_ffff {
            e.ins(Instruction::with1(Code::Pushq_imm32, i.next_ip() as i32)?)?;
        } else {
            e.store(slot!(s_tmp), RAX)?;
            e.imm(RAX, i.next_ip())?;
            e.ins(Instruction::with1(Code::Push_r64, RAX)?)?;
            e.load(RAX, slot!(s_tmp))?;
        }
    }
    if step {
        to_dispatcher(e, t)
    } else {
        lookup(e, t)
    }
}

/// ret (ret imm16): the return address popped into rax, then the lookup.
fn ret(e: &mut Emitter, i: &Instruction, t: &Tramps, step: bool) -> Result<(), IcedError> {
    use Register::{RAX, RSP};
    e.store(slot!(s_rax), RAX)?;
    e.ins(Instruction::with1(Code::Pop_r64, RAX)?)?;
    if i.code() == Code::Retnq_imm16 {
        e.lea(
            RSP,
            MemoryOperand::with_base_displ(RSP, i64::from(i.immediate16())),
        )?;
    }
    if step {
        to_dispatcher(e, t)
    } else {
        lookup(e, t)
    }
}

/// The indirect-branch lookup, inlined at each indirect site (so each has its own, better
/// predicted, indirect jump). On entry rax = guest target and the guest's rax is in `s_rax`;
/// flags are not touched.
fn lookup(e: &mut Emitter, t: &Tramps) -> Result<(), IcedError> {
    use Register::*;
    e.store(slot!(s_rcx), RCX)?;
    e.store(slot!(s_rdx), RDX)?;
    e.ins(Instruction::with2(Code::Movzx_r32_rm16, ECX, AX)?)?;
    e.lea(RCX, MemoryOperand::with_base_index(RCX, RCX))?;
    e.lea(RDX, rip(TABLE))?;
    e.lea(
        RDX,
        MemoryOperand::with_base_index_scale_displ_size(RDX, RCX, 8, 0, 0),
    )?;
    e.ins(Instruction::with2(
        Code::Mov_r64_rm64,
        RCX,
        MemoryOperand::with_base(RDX),
    )?)?;
    // !guest + target + 1 is zero exactly when the entry is the target's
    e.lea(
        RCX,
        MemoryOperand::with_base_index_scale_displ_size(RCX, RAX, 1, 1, 1),
    )?;
    e.raw(&[0xe3, 5]); // jrcxz hit
    e.jmp32(t.lookup);
    e.ins(Instruction::with2(
        Code::Mov_r64_rm64,
        RDX,
        MemoryOperand::with_base_displ(RDX, 8),
    )?)?;
    e.store(slot!(l_tgt), RDX)?;
    e.load(RCX, slot!(hits))?;
    e.lea(RCX, MemoryOperand::with_base_displ(RCX, 1))?;
    e.store(slot!(hits), RCX)?;
    e.load(RCX, slot!(s_rcx))?;
    e.load(RDX, slot!(s_rdx))?;
    e.load(RAX, slot!(s_rax))?;
    e.ins(Instruction::with1(Code::Jmp_rm64, rip(slot!(l_tgt)))?)
}

/// Leaves for the dispatcher with rax = guest target (the lookup's miss path).
fn to_dispatcher(e: &mut Emitter, t: &Tramps) -> Result<(), IcedError> {
    e.store(slot!(s_rcx), Register::RCX)?;
    e.store(slot!(s_rdx), Register::RDX)?;
    e.jmp(t.lookup)
}

/// Pushes the guest return address `ret` without touching flags or registers.
fn push_return(e: &mut Emitter, ret: u64) -> Result<(), IcedError> {
    if ret <= 0x7fff_ffff {
        e.ins(Instruction::with1(Code::Pushq_imm32, ret as i32)?)
    } else {
        e.store(slot!(s_tmp), Register::RAX)?;
        e.imm(Register::RAX, ret)?;
        e.ins(Instruction::with1(Code::Push_r64, Register::RAX)?)?;
        e.load(Register::RAX, slot!(s_tmp))
    }
}

/// A link site (a five-byte jmp, patched once the target is translated) and its slow path.
fn link_exit(e: &mut Emitter, target: u64, t: &Tramps) -> Result<(), IcedError> {
    let site = e.at();
    e.jmp32(site + 5);
    slow_stub(e, site, target, t)
}

/// Leaves for the dispatcher with `next = target` and `info = site`.
fn slow_stub(e: &mut Emitter, site: u64, target: u64, t: &Tramps) -> Result<(), IcedError> {
    e.store(slot!(s_rax), Register::RAX)?;
    e.imm(Register::RAX, target)?;
    e.store(slot!(next), Register::RAX)?;
    e.lea(Register::RAX, rip(site))?;
    e.jmp(t.exit)
}

/// Rewrites the link site at `site` (inside `cache`, mapped at [`CACHE_BASE`]) to jump to `target`.
pub fn patch_link(cache: &mut [u8], site: u64, target: u64) {
    let o = (site - CACHE_BASE) as usize;
    let rel = target.wrapping_sub(site + 5) as i64 as i32;
    cache[o + 1..o + 5].copy_from_slice(&rel.to_le_bytes());
}

/// Where the link site at `site` (inside `cache`) jumps now.
pub fn link_target(cache: &[u8], site: u64) -> u64 {
    let o = (site - CACHE_BASE) as usize;
    let rel = i32::from_le_bytes(cache[o + 1..o + 5].try_into().expect("four bytes"));
    (site + 5).wrapping_add(rel as i64 as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tramps() -> Tramps {
        trampolines(xsave_mask().unwrap_or(3)).unwrap().1
    }

    #[test]
    fn context_layout_fits_its_page_and_aligns_fxsave() {
        assert!(std::mem::size_of::<Ctx>() <= 0x1000);
        assert_eq!(std::mem::offset_of!(Ctx, guest_xsave) % 64, 0);
        assert_eq!(std::mem::offset_of!(Ctx, host_fx) % 16, 0);
        const { assert!(CODE < CODE_END) };
    }

    #[test]
    fn straight_line_code_ends_in_a_link_site() {
        // mov eax, 1; add eax, 2; jmp back to start
        let code = [0xb8, 1, 0, 0, 0, 0x83, 0xc0, 0x02, 0xeb, 0xf6];
        let b = translate(0x40_0000, &code, CODE, &tramps()).unwrap();
        assert_eq!(b.guest_instrs, 3);
        assert_eq!(&b.bytes[..8], &code[..8]);
        assert_eq!(b.bytes[8], 0xe9, "link site after the body");
        assert_eq!(b.map[2], (CODE + 8, 0x40_0008));
    }

    #[test]
    fn sensitive_first_instruction_becomes_an_emulation_exit() {
        for code in [
            &[0x0f, 0x05][..],
            &[0x0f, 0xa2],
            &[0x0f, 0x0b],
            &[0xcc],
            &[0xff, 0xff],
        ] {
            let b = translate(0x1000, code, CODE, &tramps()).unwrap();
            assert_eq!(b.guest_instrs, 0, "{code:x?}");
        }
        assert_eq!(
            translate(0x1000, &[], CODE, &tramps()).unwrap_err(),
            NoBlock::NotExecutable
        );
    }

    #[test]
    fn a_jcc_taken_site_unlinked_jumps_to_its_own_stub_not_the_next_instruction() {
        // cmp eax, 0; je +0x10. Found with Go under threads: unlinking wrote site+5 back into
        // the jcc's rel32, which is the fall-through's site, so a taken je fell through.
        let code = [0x83, 0xf8, 0x00, 0x74, 0x10];
        let b = translate(0x40_0000, &code, CODE, &tramps()).unwrap();
        let mut cache = vec![0u8; (CODE - CACHE_BASE) as usize + b.bytes.len()];
        cache[(CODE - CACHE_BASE) as usize..].copy_from_slice(&b.bytes);
        let mut d = Decoder::with_ip(64, &b.bytes, CODE, DecoderOptions::NONE);
        let jcc = d.iter().find(|i| i.is_jcc_near()).expect("a near jcc");
        let site = jcc.ip() + 1;
        let stub = link_target(&cache, site);
        assert_ne!(stub, site + 5, "the fall-through site");
        // the stub leaves with next = the branch's target
        let at = (stub - CODE) as usize;
        let mut d = Decoder::with_ip(64, &b.bytes[at..], stub, DecoderOptions::NONE);
        let targets: Vec<u64> = d.iter().take(3).map(|i| i.immediate64()).collect();
        assert!(targets.contains(&0x40_0015), "{targets:x?}");
        // linking and unlinking as the translator does give the stub back
        patch_link(&mut cache, site, CODE);
        assert_eq!(link_target(&cache, site), CODE);
        patch_link(&mut cache, site, stub);
        assert_eq!(link_target(&cache, site), stub);
    }

    #[test]
    fn rip_relative_operands_are_relocated() {
        // lea rax, [rip+0x10] at 0x40_0000 -> target 0x40_0017
        let code = [0x48, 0x8d, 0x05, 0x10, 0, 0, 0, 0x0f, 0x05];
        let b = translate(0x40_0000, &code, CODE, &tramps()).unwrap();
        let mut d = Decoder::with_ip(64, &b.bytes, CODE, DecoderOptions::NONE);
        let i = d.decode();
        assert_eq!(i.memory_displacement64(), 0x40_0017);
        assert_eq!(b.guest_instrs, 1);
    }
}
