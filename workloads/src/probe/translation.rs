//! Translation probes: code a binary translator or a VM must handle specially
//! (self-modifying code, a syscall in data, a jump into an instruction, the 32-bit gates, the
//! trap flag).

use super::signals::{catch_signals, guarded, trapped, RESUME, TRAPS};
use super::*;
use core::arch::{asm, global_asm};
use core::sync::atomic::Ordering::SeqCst;

/// The probes of this family.
pub(super) const PROBES: &[(&str, Impl)] = &[
    ("smc", |_, _| smc()),
    ("hidden_syscall", |_, _| hidden_syscall()),
    ("mid_insn_jump", |_, _| mid_insn_jump()),
    ("int80", |_, _| int80()),
    ("far_jump32", |_, _| far_jump32()),
    ("popf_tf", |_, _| popf_tf()),
];

fn rwx_page() -> Result<*mut u8, usize> {
    // PROT_READ|WRITE|EXEC, MAP_PRIVATE|MAP_ANONYMOUS
    call(9, [0, 4096, 7, 0x22, usize::MAX, 0]).map(|p| p as *mut u8)
}

fn smc() -> Report {
    let page = match rwx_page() {
        Ok(p) => p,
        Err(e) => return rep!(Error, "mmap_rwx:{}", errno(e)),
    };
    let code = [0xb8u8, 1, 0, 0, 0, 0xc3]; // mov eax, 1; ret
                                           // SAFETY: the page is 4096 writable bytes; a function pointer into it is called only after
                                           // it holds the complete code above, which follows the C ABI (returns in eax).
    let (first, second) = unsafe {
        core::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len());
        let f: extern "C" fn() -> u32 = core::mem::transmute(page);
        let first = f();
        page.add(1).write_volatile(2); // now mov eax, 2
        (first, f())
    };
    rep!(Observed, "first={first},after_patch={second}")
}

fn hidden_syscall() -> Report {
    let page = match rwx_page() {
        Ok(p) => p,
        Err(e) => return rep!(Error, "mmap_rwx:{}", errno(e)),
    };
    let ret: usize;
    // SAFETY: the page gets `syscall; ret`, called with rax = getpid: it clobbers rcx, r11
    // (syscall) and returns to us; the call needs the stack, so no `nostack`.
    unsafe {
        core::ptr::copy_nonoverlapping([0x0fu8, 0x05, 0xc3].as_ptr(), page, 3);
        asm!("call {f}", f = in(reg) page, inlateout("rax") 39usize => ret,
             out("rcx") _, out("r11") _);
    }
    let pid = sys::getpid().unwrap_or(0);
    rep!(Observed, "getpid_via_data={},matches={}", ret, ret == pid)
}

global_asm!(
    ".text",
    ".globl vbench_mid_insn",
    "vbench_mid_insn:",
    ".byte 0x48, 0xb8", // movabs rax, imm64 whose bytes are ...
    ".globl vbench_mid_insn_inner",
    "vbench_mid_insn_inner:",
    ".byte 0xb8, 0x2a, 0x00, 0x00, 0x00", // ... mov eax, 42 when entered here,
    ".byte 0xc3",                         // ... ret
    ".byte 0x90, 0x90",
    "ret",
);

extern "C" {
    fn vbench_mid_insn() -> u64;
    fn vbench_mid_insn_inner() -> u64;
}

fn mid_insn_jump() -> Report {
    // SAFETY: both entry points are complete functions of the C ABI defined above.
    let (outer, inner) = unsafe { (vbench_mid_insn(), vbench_mid_insn_inner()) };
    rep!(Observed, "from_start={outer:#x},from_middle={inner}")
}

fn int80() -> Report {
    guarded("int_0x80(getpid=20)", |t| {
        let mut r: usize = 20;
        // SAFETY: int 0x80 with eax = 20 (getpid of the 32-bit ABI) takes no pointers; if it
        // traps, the handler resumes after it.
        unsafe {
            guard_asm!("int 0x80", inout("rax") r, out("rcx") _, out("r11") _);
        }
        let _ = write!(t, "eax={}", r as u32 as i32);
    })
}

global_asm!(
    ".bss",
    ".balign 16",
    "vbench_low_stack:",
    ".zero 65536",
    "vbench_low_stack_top:",
    "vbench_saved_rsp:",
    ".zero 8",
    ".text",
    ".globl vbench_far32",
    "vbench_far32:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + vbench_saved_rsp], rsp",
    "lea rsp, [rip + vbench_low_stack_top]",
    "push 0x23",
    "lea rax, [rip + vbench_far32_in32]",
    "push rax",
    ".byte 0x48, 0xcb", // retfq: to 0x23:in32
    ".code32",
    "vbench_far32_in32:",
    "mov eax, 7",
    ".byte 0x40",       // inc eax in 32-bit mode (a REX prefix in 64-bit mode)
    ".byte 0x8c, 0xca", // mov edx, cs
    ".byte 0x6a, 0x33", // push 0x33
    ".byte 0x68",       // push imm32 ...
    ".long vbench_far32_back",
    ".byte 0xcb", // retf: to 0x33:back
    ".code64",
    "vbench_far32_back:",
    "mov rsp, [rip + vbench_saved_rsp]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "mov eax, eax",
    "shl rdx, 32",
    "or rax, rdx",
    "ret",
    ".globl vbench_far32_fail",
    "vbench_far32_fail:",
    "mov rsp, [rip + vbench_saved_rsp]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "mov rax, -1",
    "ret",
);

extern "C" {
    fn vbench_far32() -> u64;
    fn vbench_far32_fail();
}

fn far_jump32() -> Report {
    catch_signals();
    RESUME.store(vbench_far32_fail as *const () as usize, SeqCst);
    // SAFETY: vbench_far32 saves the callee-saved registers and the stack pointer, runs three
    // instructions in the 32-bit code segment on a stack below 4 GiB (this executable is not
    // position independent: its .bss is there), returns to 64-bit mode and restores everything;
    // a trap resumes at vbench_far32_fail, which restores the same way.
    let v = unsafe { vbench_far32() };
    RESUME.store(0, SeqCst);
    match trapped() {
        Some(sig) => rep!(Observed, "far_jump_to_0x23:trapped_{sig}"),
        None => rep!(
            Observed,
            "in_32bit:7_then_0x40=>eax={},cs={:#x}",
            v as u32,
            (v >> 32) as u16
        ),
    }
}

fn popf_tf() -> Report {
    catch_signals();
    TRAPS.store(0, SeqCst);
    // SAFETY: sets TF with popf; the SIGTRAP after the next instruction is caught by the handler,
    // which clears TF in the saved flags; the stack is balanced.
    unsafe {
        asm!(
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "nop",
            "nop",
            "nop"
        );
    }
    let traps = TRAPS.load(SeqCst);
    let sig = trapped().unwrap_or("none");
    rep!(Observed, "traps={traps},signal={sig}")
}
