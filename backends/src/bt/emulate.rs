//! Emulation of the sensitive instructions the translator leaves to the dispatcher: syscall
//! (through [`crate::linux_abi`]), cpuid, rdtsc, pushf/popf with a virtual interrupt and trap
//! flag, FS base access, the descriptor-table reads, and the guest's faults for the rest; the
//! helpers that read and write guest registers of every width.

use super::cache::Translator;
use super::dispatch::{crash, Stop};
use super::signals::{gfault, segv, sigreturn, GuestFault, SI_KERNEL};
use super::space::Space;
use super::translate::{is_far, Ctx, GPRS};
use crate::linux_abi::{Abi, Action, GuestMem};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic as M, Register};

/// The guest's virtual CPU state the dispatcher keeps beside the registers (a thread's own).
#[derive(Debug, Clone)]
pub(super) struct Vcpu {
    pub(super) vif: bool,
    pub(super) tsc0: u64,
    /// The guest's trap flag: a SIGTRAP after each instruction (single-stepped by the dispatcher)
    pub(super) tf: bool,
}

pub(super) fn rdtsc() -> u64 {
    // SAFETY: rdtsc is available on every x86-64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// What `cpuid` returns in the guest: the host's, with the hypervisor bit and vbench's leaves.
pub fn virtual_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    if (0x4000_0000..0x4000_0100).contains(&leaf) {
        if leaf == 0x4000_0000 {
            let sig = b"vbenchBTvCPU";
            let w = |i: usize| u32::from_le_bytes(sig[i..i + 4].try_into().expect("4"));
            return [0x4000_0000, w(0), w(4), w(8)];
        }
        return [0; 4];
    }
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    let mut v = [r.eax, r.ebx, r.ecx, r.edx];
    if leaf == 1 {
        v[2] |= 1 << 31;
    }
    v
}

/// Flags `popf` may change in the guest (CF PF AF ZF SF DF OF AC ID).
pub(super) const POPF_MASK: u64 =
    0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x4_0000 | 0x20_0000;

pub(super) fn mnemonic_name(m: iced_x86::Mnemonic) -> String {
    if m == iced_x86::Mnemonic::INVALID {
        return "invalid".into();
    }
    format!("{m:?}").to_lowercase()
}

impl Vcpu {
    /// The state at the guest's first instruction: interrupts (virtually) enabled, no trap
    /// flag, the TSC counting from now, default signal dispositions.
    pub(super) fn new() -> Vcpu {
        Vcpu {
            vif: true,
            tsc0: rdtsc(),
            tf: false,
        }
    }
}

/// Emulates the sensitive (or undecodable) instruction at `ctx.next`; Ok = continue.
pub(super) fn emulate(
    ctx: &mut Ctx,
    space: &Space,
    abi: &mut Abi,
    vcpu: &mut Vcpu,
    tr: &mut Translator,
) -> Result<(), Stop> {
    let pc = ctx.next;
    let i = decoded(tr, space, pc)?;
    tr.counts.emulated(i.mnemonic());
    let next = i.next_ip();
    match i.mnemonic() {
        M::Syscall => return syscall(ctx, space, abi, vcpu, next),
        M::Cpuid => cpuid(&mut ctx.gpr),
        M::Rdtsc | M::Rdtscp => read_tsc(&mut ctx.gpr, vcpu, i.mnemonic() == M::Rdtscp),
        M::Pushfq | M::Pushf => pushf(ctx, space, vcpu, i.mnemonic() == M::Pushf, pc)?,
        M::Popfq | M::Popf => popf(ctx, space, vcpu, i.mnemonic() == M::Popf, pc)?,
        M::Rdfsbase => {
            let r = i.op0_register();
            write_reg(ctx, r, ctx.guest_fs);
        }
        M::Wrfsbase => {
            ctx.guest_fs = read_reg(ctx, i.op0_register());
        }
        M::Sgdt | M::Sidt | M::Sldt | M::Str | M::Smsw => descriptor_table(ctx, space, &i, pc)?,
        _ => return Err(refused(&i, pc)),
    }
    ctx.next = next;
    Ok(())
}

/// The instruction at `pc`, decoded once and kept until the cache is flushed.
fn decoded(tr: &mut Translator, space: &Space, pc: u64) -> Result<Instruction, Stop> {
    if let Some(i) = tr.decoded.get(&pc) {
        return Ok(*i);
    }
    let code = space.code_at(pc);
    let mut d = Decoder::with_ip(64, code, pc, DecoderOptions::NONE);
    let i = d.decode();
    if i.is_invalid() {
        return Err(undecodable(pc, code.len() as u64, d.last_error(), tr));
    }
    tr.decoded.insert(pc, i);
    Ok(i)
}

/// `syscall`: through the ABI's table; the translator does what the answer asks of the CPU
/// (the FS base, a signal frame, rt_sigreturn's registers), and the host process's signal
/// dispositions and mask follow the guest's.
fn syscall(
    ctx: &mut Ctx,
    space: &Space,
    abi: &mut Abi,
    vcpu: &mut Vcpu,
    next: u64,
) -> Result<(), Stop> {
    let (nr, sig) = (ctx.gpr[0], ctx.gpr[7]);
    let mask = abi.signals.mask;
    let out = syscall_in(ctx, space, abi, vcpu, next);
    if abi.signals.mask != mask {
        super::signals::mirror_mask(abi.signals.mask);
    }
    if nr == libc::SYS_rt_sigaction as u64 && (1..=64).contains(&sig) {
        super::signals::mirror_action(sig as i32, abi.signals.actions[sig as usize][0]);
    }
    out
}

fn syscall_in(
    ctx: &mut Ctx,
    space: &Space,
    abi: &mut Abi,
    vcpu: &mut Vcpu,
    next: u64,
) -> Result<(), Stop> {
    let g = &ctx.gpr;
    let (nr, args) = (g[0], [g[7], g[6], g[2], g[10], g[8], g[9]]);
    let forks = [
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_clone,
        libc::SYS_clone3,
    ];
    let action = if forks.contains(&(nr as i64)) {
        super::threads::forking(|| abi.syscall(space, nr, args))
    } else {
        abi.syscall(space, nr, args)
    };
    let mut deliver = None;
    let r = match action {
        Action::Return(v) => v,
        Action::Exit(code) => return Err(Stop::Exited(code & 0xff)),
        Action::ExitThread(code) => return Err(Stop::ExitThread(code & 0xff)),
        Action::Block => return Err(Stop::Block { nr, next }),
        Action::SetFs(base) => {
            ctx.guest_fs = base;
            0
        }
        Action::Killed(signal) => {
            return Err(Stop::Crashed {
                signal,
                message: format!("killed by signal {signal} (raised by the guest's syscall {nr})"),
            })
        }
        Action::Deliver(signal, ret) => {
            deliver = Some(signal);
            ret
        }
        Action::SigReturn => return sigreturn(ctx, space, vcpu, &mut abi.signals),
        Action::Exec => match abi
            .take_exec()
            .map(|r| super::loader::Job::of_exec(r, abi.exec_ids()))
        {
            Some(Ok(job)) => return Err(Stop::Exec(Box::new(job))),
            Some(Err(e)) => e.ret(),
            None => crate::linux_abi::Errno::EFAULT.ret(),
        },
        Action::Child { stack, tls } => {
            // the translator process forked: this is the child, with the guest's new pid, and
            // one thread
            let pid = abi.pid();
            ctx.in_cache[0] = pid as u64;
            ctx.in_cache[2] = pid as u64;
            ctx.in_cache[3] = super::signals::forget_pending(pid as i32);
            if stack != 0 {
                ctx.gpr[4] = stack;
            }
            if let Some(fs) = tls {
                ctx.guest_fs = fs;
            }
            0
        }
        Action::Thread(spec) => {
            // the new thread's registers: the caller's, returning 0 from the syscall on its own
            // stack, with its own TLS
            let mut child = Box::new(ctx.clone());
            let c = &mut *child;
            c.gpr[0] = 0;
            c.gpr[1] = next;
            c.gpr[11] = c.rflags;
            c.next = next;
            c.info = 0;
            c.hits = 0;
            c.in_cache[1] = 0;
            if spec.stack != 0 {
                c.gpr[4] = spec.stack;
            }
            if let Some(fs) = spec.tls {
                c.guest_fs = fs;
            }
            return Err(Stop::Spawn(Box::new(super::threads::Spawn {
                ctx: child,
                vcpu: vcpu.clone(),
                spec,
                nr,
                next,
            })));
        }
    };
    finish_syscall(ctx, abi, nr, next, r)?;
    match deliver {
        // delivered by the dispatcher as a fault is, at the instruction after the syscall
        Some(signal) => Err(Stop::Fault(GuestFault {
            signal,
            code: -6, // SI_TKILL
            rip: next,
            addr: 0,
            message: format!("guest killed by signal {signal} it sent itself"),
            info: None,
        })),
        None => Ok(()),
    }
}

/// The end of syscall `nr` (its instruction ends at `next`) with result `r`: rax, rcx and r11
/// as sysret leaves them, or, when a signal interrupted the host's call (EINTR), the call again
/// after the guest's handler if it asked for SA_RESTART, and at once if the signal was not the
/// guest's (another thread's kick: natively nothing interrupts the call).
pub(super) fn finish_syscall(
    ctx: &mut Ctx,
    abi: &Abi,
    nr: u64,
    next: u64,
    r: i64,
) -> Result<(), Stop> {
    if r == -i64::from(libc::EINTR) {
        let ready = super::signals::pending(ctx.in_cache[3]) & !abi.signals.mask;
        let sig = ready.trailing_zeros() as usize + 1;
        let restart = match ready {
            // nothing the guest takes: a kick interrupted a call that waits (a pause or
            // sigsuspend that ends with EINTR has the guest's signal pending)
            0 => true,
            _ => {
                crate::linux_abi::sigframe::RESTARTABLE.contains(&(nr as i64))
                    && abi.signals.actions[sig][1] & super::signals::SA_RESTART != 0
            }
        };
        if restart {
            // its frame is at the syscall instruction itself
            ctx.next = next - 2;
            return Ok(());
        }
    }
    let g = &mut ctx.gpr;
    g[0] = r as u64;
    g[1] = next;
    g[11] = ctx.rflags;
    ctx.next = next;
    Ok(())
}

/// `cpuid`: leaf eax, subleaf ecx; results in eax, ebx, ecx, edx (zero-extended).
fn cpuid(g: &mut [u64; 16]) {
    let v = virtual_cpuid(g[0] as u32, g[1] as u32);
    g[0] = u64::from(v[0]);
    g[3] = u64::from(v[1]);
    g[1] = u64::from(v[2]);
    g[2] = u64::from(v[3]);
}

/// `rdtsc`/`rdtscp`: the guest's TSC counts from its start, in edx:eax (zero-extended).
fn read_tsc(g: &mut [u64; 16], vcpu: &Vcpu, rdtscp: bool) {
    let t = rdtsc().wrapping_sub(vcpu.tsc0);
    g[0] = t & 0xffff_ffff;
    g[2] = t >> 32;
    if rdtscp {
        g[1] = 0;
    }
}

/// The guest's rflags as `pushf` shows them: the virtual trap and interrupt flags.
fn guest_rflags(ctx: &Ctx, vcpu: &Vcpu) -> u64 {
    (ctx.rflags & !0x300) | (u64::from(vcpu.tf) << 8) | (u64::from(vcpu.vif) << 9) | 2
}

fn pushf(ctx: &mut Ctx, space: &Space, vcpu: &Vcpu, word: bool, pc: u64) -> Result<(), Stop> {
    let size = if word { 2 } else { 8 };
    let v = guest_rflags(ctx, vcpu);
    let sp = ctx.gpr[4].wrapping_sub(size);
    space
        .write(sp, &v.to_le_bytes()[..size as usize])
        .map_err(|_| segv(pc, sp))?;
    ctx.gpr[4] = sp;
    Ok(())
}

fn popf(ctx: &mut Ctx, space: &Space, vcpu: &mut Vcpu, word: bool, pc: u64) -> Result<(), Stop> {
    let size = if word { 2 } else { 8 };
    let mut b = [0u8; 8];
    let sp = ctx.gpr[4];
    space
        .read(sp, &mut b[..size as usize])
        .map_err(|_| segv(pc, sp))?;
    let v = u64::from_le_bytes(b);
    let mask = if size == 2 {
        POPF_MASK & 0xffff
    } else {
        POPF_MASK
    };
    vcpu.vif = v & 0x200 != 0;
    vcpu.tf = v & 0x100 != 0;
    ctx.rflags = (ctx.rflags & !mask) | (v & mask) | 2;
    ctx.gpr[4] = sp + size;
    Ok(())
}

/// sgdt, sidt, sldt, str, smsw: a virtual machine's tables, fixed made-up values.
fn descriptor_table(ctx: &mut Ctx, space: &Space, i: &Instruction, pc: u64) -> Result<(), Stop> {
    let (base, limit): (u64, u16) = match i.mnemonic() {
        M::Sgdt => (0xffff_fe00_0000_1000, 0x7f),
        M::Sidt => (0xffff_fe00_0000_0000, 0xfff),
        M::Sldt => (0, 0),
        M::Str => (0, 0x40),
        _ => (0, 0x33),
    };
    let bytes: Vec<u8> = if matches!(i.mnemonic(), M::Sgdt | M::Sidt) {
        let mut v = limit.to_le_bytes().to_vec();
        v.extend(base.to_le_bytes());
        v
    } else {
        limit.to_le_bytes().to_vec()
    };
    if i.op0_kind() == iced_x86::OpKind::Memory {
        let regs = ctx.gpr;
        let fs = ctx.guest_fs;
        let addr = i
            .virtual_address(0, 0, |r, _, _| match r {
                Register::FS => Some(fs),
                Register::ES | Register::CS | Register::SS | Register::DS | Register::GS => Some(0),
                r => Some(reg_value(&regs, r)),
            })
            .unwrap_or(0);
        space.write(addr, &bytes).map_err(|_| segv(pc, addr))?;
    } else if i.mnemonic() == M::Smsw && i.op0_register().size() >= 4 {
        // a register gets all of CR0's low half: PG AM WP NE ET MP PE
        write_reg(ctx, i.op0_register(), 0x8005_0033);
    } else {
        write_reg(ctx, i.op0_register(), u64::from(limit));
    }
    Ok(())
}

/// The guest's fault for a sensitive instruction that is not emulated.
fn refused(i: &Instruction, pc: u64) -> Stop {
    let kind = || mnemonic_name(i.mnemonic());
    match i.mnemonic() {
        M::Int3 => gfault(
            libc::SIGTRAP,
            SI_KERNEL,
            i.next_ip(), // a trap: the handler returns after the int3
            0,
            format!("guest crashed: SIGTRAP (int3) at guest rip {pc:#x}"),
        ),
        M::Int if i.immediate8() == 0x80 => crash(
            libc::SIGSEGV,
            format!("guest crashed: SIGSEGV at guest rip {pc:#x}: int 0x80 (32-bit system call) is refused"),
        ),
        M::Ud0 | M::Ud1 | M::Ud2 | M::Sysenter | M::Sysexit | M::Sysret => gfault(
            libc::SIGILL,
            2, // ILL_ILLOPN
            pc,
            pc,
            format!("guest crashed: SIGILL ({}) at guest rip {pc:#x}", kind()),
        ),
        _ if is_far(i) || matches!(i.mnemonic(), M::Retf | M::Iret | M::Iretd | M::Iretq) => crash(
            libc::SIGSEGV,
            format!("guest crashed: SIGSEGV at guest rip {pc:#x}: far transfer ({}) to another code segment is refused", kind()),
        ),
        _ => gfault(
            libc::SIGSEGV,
            SI_KERNEL,
            pc,
            0,
            format!("guest crashed: SIGSEGV ({}: privileged or unsupported) at guest rip {pc:#x}", kind()),
        ),
    }
}

/// The guest's crash for bytes at `pc` that do not decode (`len` executable bytes there).
fn undecodable(pc: u64, len: u64, err: iced_x86::DecoderError, tr: &mut Translator) -> Stop {
    if err == iced_x86::DecoderError::NoMoreBytes {
        let end = pc + len;
        return crash(
            libc::SIGSEGV,
            format!("guest crashed: SIGSEGV at guest rip {pc:#x}, address {end:#x} (instruction runs off executable memory)"),
        );
    }
    tr.counts.emulated(M::INVALID);
    gfault(
        libc::SIGILL,
        2,
        pc,
        pc,
        format!("guest crashed: SIGILL (invalid opcode) at guest rip {pc:#x}"),
    )
}

/// Where a general register of any width lives in `ctx.gpr`: the index of its 64-bit
/// register, the offset of its low bit there (8 for AH, CH, DH, BH, 0 otherwise) and the mask
/// of its width. None for anything that is not a general register.
fn reg_slot(r: Register) -> Option<(usize, u32, u64)> {
    let shift = match r {
        Register::AH | Register::CH | Register::DH | Register::BH => 8,
        _ => 0,
    };
    let full = r.full_register();
    let ix = GPRS.iter().position(|g| *g == full)?;
    let mask = match r.size() {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    };
    Some((ix, shift, mask))
}

/// The value of register `r` (any width) in `gpr`; 0 for a register that is not general.
fn reg_value(gpr: &[u64; 16], r: Register) -> u64 {
    let Some((ix, shift, mask)) = reg_slot(r) else {
        return 0;
    };
    (gpr[ix] >> shift) & mask
}

fn read_reg(ctx: &Ctx, r: Register) -> u64 {
    reg_value(&ctx.gpr, r)
}

fn write_reg(ctx: &mut Ctx, r: Register, v: u64) {
    set_reg(&mut ctx.gpr, r, v);
}

/// Writes `v` to register `r` as the CPU does: an 8- or 16-bit write keeps the rest of the
/// 64-bit register, a 32-bit write zero-extends, a 64-bit write replaces it.
fn set_reg(gpr: &mut [u64; 16], r: Register, v: u64) {
    let Some((ix, shift, mask)) = reg_slot(r) else {
        return;
    };
    gpr[ix] = if mask == 0xffff_ffff {
        v & mask
    } else {
        (gpr[ix] & !(mask << shift)) | ((v & mask) << shift)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_sets_the_hypervisor_bit_and_names_vbench() {
        assert_ne!(virtual_cpuid(1, 0)[2] & (1 << 31), 0);
        let v = virtual_cpuid(0x4000_0000, 0);
        let mut s = Vec::new();
        for w in &v[1..] {
            s.extend(w.to_le_bytes());
        }
        assert_eq!(&s, b"vbenchBTvCPU");
    }

    use Register::*;

    /// Every general register by width, each list in [`GPRS`] order; the high bytes apart.
    const LOW8: [Register; 16] = [
        AL, CL, DL, BL, SPL, BPL, SIL, DIL, R8L, R9L, R10L, R11L, R12L, R13L, R14L, R15L,
    ];
    const HIGH8: [Register; 4] = [AH, CH, DH, BH];
    const W16: [Register; 16] = [
        AX, CX, DX, BX, SP, BP, SI, DI, R8W, R9W, R10W, R11W, R12W, R13W, R14W, R15W,
    ];
    const W32: [Register; 16] = [
        EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI, R8D, R9D, R10D, R11D, R12D, R13D, R14D, R15D,
    ];

    /// (register, index in gpr, bit offset, mask of its bits at that offset)
    fn every_register() -> Vec<(Register, usize, u32, u64)> {
        let mut all = Vec::new();
        for i in 0..16 {
            all.push((LOW8[i], i, 0, 0xff));
            all.push((W16[i], i, 0, 0xffff));
            all.push((W32[i], i, 0, 0xffff_ffff));
            all.push((GPRS[i], i, 0, u64::MAX));
        }
        for (i, r) in HIGH8.into_iter().enumerate() {
            all.push((r, i, 8, 0xff));
        }
        all
    }

    /// Registers holding distinct bytes everywhere.
    fn pattern() -> [u64; 16] {
        std::array::from_fn(|i| 0x0102_0304_0506_0708u64.wrapping_mul(i as u64 + 1) ^ 0xa5)
    }

    #[test]
    fn the_tables_cover_every_general_register() {
        let gprs: Vec<Register> = Register::values().filter(|r| r.is_gpr()).collect();
        assert_eq!(gprs.len(), every_register().len());
        for r in gprs {
            assert!(every_register().iter().any(|e| e.0 == r), "{r:?}");
        }
    }

    #[test]
    fn registers_of_every_width_are_read() {
        let gpr = pattern();
        for (r, ix, shift, mask) in every_register() {
            assert_eq!(reg_value(&gpr, r), (gpr[ix] >> shift) & mask, "{r:?}");
        }
        assert_eq!(reg_value(&gpr, AH), (gpr[0] >> 8) & 0xff);
        assert_eq!(reg_value(&gpr, EAX), gpr[0] & 0xffff_ffff);
        assert_eq!(reg_value(&gpr, XMM0), 0, "not a general register");
    }

    #[test]
    fn registers_of_every_width_are_written() {
        let v = 0xfedc_ba98_7654_3210u64;
        for (r, ix, shift, mask) in every_register() {
            let mut gpr = pattern();
            set_reg(&mut gpr, r, v);
            let mut want = pattern();
            want[ix] = if mask == 0xffff_ffff {
                v & mask // a 32-bit write zero-extends to 64 bits
            } else {
                (want[ix] & !(mask << shift)) | ((v & mask) << shift)
            };
            assert_eq!(gpr, want, "{r:?}: {gpr:#x?}");
            assert_eq!(reg_value(&gpr, r), v & mask, "{r:?} reads back");
        }
        let mut gpr = [0x1111_1111_1111_1111u64; 16];
        set_reg(&mut gpr, BH, 0xab);
        assert_eq!(gpr[3], 0x1111_1111_1111_ab11);
        set_reg(&mut gpr, SIL, 0xcd);
        assert_eq!(gpr[6], 0x1111_1111_1111_11cd);
        set_reg(&mut gpr, XMM0, 0xcd);
        assert!(gpr
            .iter()
            .enumerate()
            .all(|(i, v)| matches!(i, 3 | 6) || *v == 0x1111_1111_1111_1111));
    }
}
