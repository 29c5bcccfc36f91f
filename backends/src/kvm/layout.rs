//! The guest's physical (= virtual, identity-mapped) memory layout and the tables that set up
//! 64-bit long mode: page tables, GDT, TSS, IDT. Pure functions over a byte image, so they are
//! unit-tested without KVM.

/// Guest page-table root.
pub const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
/// The page directory of guest RAM (2 MiB entries, or a table of the pool).
pub const PD0: u64 = 0x3000;
/// The page table of the first 2 MiB (4 KiB pages: the guest kernel's, then user RAM).
pub const PT0: u64 = 0x4000;
const PD_SPECIAL: u64 = 0x5000;
const PD_UART: u64 = 0xB000;
/// The page directory of the UART window (written at VM start with the other tables).
pub const PD_UART_PAGE: u64 = PD_UART;
/// Global descriptor table.
pub const GDT: u64 = 0x6000;
/// Interrupt descriptor table (256 gates).
pub const IDT: u64 = 0x7000;
/// 64-bit task-state segment.
pub const TSS: u64 = 0x8000;
/// Guest-kernel code reached by `syscall` (user-executable, read-only).
pub const STUB: u64 = 0x9000;
/// Guest-kernel data: counters the stub keeps (user-writable).
pub const KDATA: u64 = 0xA000;
/// The runs of page-table entries the VMM changed, for the guest kernel's ring-0 flush to
/// write again ([`super::paging`]): a count, then (address, entries) pairs. Supervisor-only.
pub const PT_RUNS: u64 = 0xD000;
/// The guest kernel's ring-0 code (the flush), supervisor-only.
pub const KCODE: u64 = 0xE000;
/// The exception whose handler is the guest kernel's ring-0 code: #GP, which the flush
/// trampoline raises on purpose (nested KVM here answers a software interrupt from CPL3 with
/// #UD). A #GP anywhere else goes on to the VMM as the guest's fault.
pub const GP_VECTOR: u8 = 13;
/// The clock page the VMM publishes for the vDSO ([`super::vdso`]): user-readable.
pub const CLOCK: u64 = 0xF000;
/// The vDSO (two pages, user-readable and executable), named by AT_SYSINFO_EHDR.
pub const VDSO: u64 = 0x10000;
/// Pages the vDSO may take.
pub const VDSO_PAGES: u64 = 2;
/// Top of the ring-0 stack exceptions are delivered on.
pub const RSP0: u64 = 0x20000;
/// Page-table pages for 2 MiB user pages split into 4 KiB ones ([`super::paging`]):
/// supervisor-only, from here to [`PT_POOL_END`].
pub const PT_POOL: u64 = 0x20000;
/// End of the page-table pool (224 pages: 448 MiB of split pages).
pub const PT_POOL_END: u64 = LOAD_MIN;
/// Lowest address a program may be loaded at.
pub const LOAD_MIN: u64 = 0x10_0000;
/// Guest-physical addresses with no memory behind them, mapped so that reaching them exits:
/// the hypercall entry and the exception handlers (one 16-byte slot per vector).
pub const HYPERCALL: u64 = 0x8000_0000;
/// First exception handler slot.
pub const FAULT_BASE: u64 = 0x8000_1000;
/// The emulated 16550 UART's registers (THR at +0, LSR at +5). Below 2 GiB, so the stub can
/// address it with a 32-bit displacement.
pub const UART: u64 = 0x7000_0000;
/// Largest guest RAM (one page directory of 2 MiB pages).
pub const MAX_RAM: u64 = 1 << 30;

/// Kernel code, kernel data, user data, user code selectors (Linux's layout).
pub const KERNEL_CS: u16 = 0x10;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x18;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x2b;
/// User code selector (RPL 3).
pub const USER_CS: u16 = 0x33;
/// TSS selector.
pub const TSS_SEL: u16 = 0x40;

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 0x80;

fn put(img: &mut [u8], at: u64, v: u64) {
    img[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes page tables for `ram` bytes of RAM into `img` (which covers at least the low 64 KiB):
/// 4 KiB pages for the first 2 MiB with page 0 absent (null pointers fault) and the kernel
/// structures supervisor-only, 2 MiB user pages above, and 2 MiB windows onto the unbacked
/// hypercall/fault page and the UART.
pub fn page_tables(img: &mut [u8], ram: u64) {
    put(img, PML4, PDPT | P | RW | US);
    put(img, PDPT, PD0 | P | RW | US);
    put(img, PDPT + 2 * 8, PD_SPECIAL | P | RW | US); // 2 GiB: hypercall + fault handlers
    put(img, PDPT + 8, PD_UART | P | RW | US); // 1-2 GiB: the UART window
    put(img, PD0, PT0 | P | RW | US);
    for i in 1..512u64 {
        let addr = i * 4096;
        let flags =
            if addr == STUB || addr == CLOCK || (VDSO..VDSO + VDSO_PAGES * 4096).contains(&addr) {
                P | US // user may read and execute, not write
            } else if addr == KDATA || addr >= LOAD_MIN {
                P | RW | US
            } else {
                P | RW // page tables, GDT, IDT, TSS, ring-0 stack, table pool: supervisor only
            };
        put(img, PT0 + i * 8, addr | flags);
    }
    for i in 1..ram.div_ceil(2 << 20) {
        put(img, PD0 + i * 8, (i << 21) | P | RW | US | PS);
    }
    put(img, PD_SPECIAL, HYPERCALL | P | RW | US | PS);
    put(
        img,
        PD_UART + ((UART - (1 << 30)) >> 21) * 8,
        UART | P | RW | US | PS,
    );
}

fn seg_desc(access: u8, flags: u8) -> u64 {
    // base 0, limit 0xfffff
    0xffff | (0xf << 48) | (u64::from(access) << 40) | (u64::from(flags) << 52)
}

/// Writes the GDT (null, -, kernel code, kernel data, user32 code, user data, user code, -,
/// TSS) and the TSS with RSP0.
pub fn gdt_tss(img: &mut [u8]) {
    put(img, GDT + 0x10, seg_desc(0x9b, 0xa)); // kernel code, L
    put(img, GDT + 0x18, seg_desc(0x93, 0xc)); // kernel data
    put(img, GDT + 0x20, seg_desc(0xfb, 0xc)); // user code 32
    put(img, GDT + 0x28, seg_desc(0xf3, 0xc)); // user data
    put(img, GDT + 0x30, seg_desc(0xfb, 0xa)); // user code 64
    let limit = 0x67u64;
    let lo = limit | ((TSS & 0xff_ffff) << 16) | (0x89u64 << 40) | (((TSS >> 24) & 0xff) << 56);
    put(img, GDT + u64::from(TSS_SEL), lo);
    put(img, GDT + u64::from(TSS_SEL) + 8, TSS >> 32);
    put(img, TSS + 4, RSP0); // rsp0
    img[TSS as usize + 0x66..TSS as usize + 0x68].copy_from_slice(&0x68u16.to_le_bytes());
    // no I/O bitmap
}

/// GDT limit.
pub const GDT_LIMIT: u16 = 0x4f;

fn gate(img: &mut [u8], vector: u64, target: u64, dpl: u64) {
    let lo = (target & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | ((0x8e | dpl << 5) << 40) // present, DPL, 64-bit interrupt gate
        | (((target >> 16) & 0xffff) << 48);
    put(img, IDT + 16 * vector, lo);
    put(img, IDT + 16 * vector + 8, target >> 32);
}

/// Writes the interrupt gates: exception `v` (0-31) goes to `FAULT_BASE + 16 * v` on the
/// ring-0 stack, except #GP, which goes to the guest kernel's code at [`KCODE`]. As in Linux,
/// user code may raise #BP (int3) and #OF (into) itself: their gates are DPL 3.
pub fn idt(img: &mut [u8]) {
    for v in 0..32u64 {
        let target = if v == u64::from(GP_VECTOR) {
            KCODE
        } else {
            FAULT_BASE + 16 * v
        };
        gate(img, v, target, if matches!(v, 3 | 4) { 3 } else { 0 });
    }
}

/// IDT limit (32 gates).
pub const IDT_LIMIT: u16 = 32 * 16 - 1;

/// The exception vector whose handler slot is `rip`, if it is one.
pub fn fault_vector(rip: u64) -> Option<u8> {
    (FAULT_BASE..FAULT_BASE + 32 * 16)
        .contains(&rip)
        .then(|| ((rip - FAULT_BASE) / 16) as u8)
        .filter(|_| (rip - FAULT_BASE).is_multiple_of(16))
}

/// Whether the CPU pushes an error code for `vector`.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Mnemonic and the signal Linux would deliver for `vector`.
pub fn vector_name(vector: u8) -> (&'static str, i32) {
    match vector {
        0 => ("#DE divide error", libc::SIGFPE),
        1 => ("#DB debug", libc::SIGTRAP),
        3 => ("#BP breakpoint", libc::SIGTRAP),
        4 => ("#OF overflow", libc::SIGSEGV),
        5 => ("#BR bound range", libc::SIGSEGV),
        6 => ("#UD invalid opcode", libc::SIGILL),
        7 => ("#NM device not available", libc::SIGFPE),
        8 => ("#DF double fault", libc::SIGSEGV),
        13 => ("#GP general protection", libc::SIGSEGV),
        14 => ("#PF page fault", libc::SIGSEGV),
        16 => ("#MF x87 floating point", libc::SIGFPE),
        17 => ("#AC alignment check", libc::SIGBUS),
        18 => ("#MC machine check", libc::SIGBUS),
        19 => ("#XM SIMD floating point", libc::SIGFPE),
        _ => ("exception", libc::SIGSEGV),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(img: &[u8], at: u64) -> u64 {
        u64::from_le_bytes(img[at as usize..at as usize + 8].try_into().unwrap())
    }

    #[test]
    fn tables_map_ram_and_guard_the_kernel() {
        let mut img = vec![0u8; 0x20000];
        page_tables(&mut img, 64 << 20);
        assert_eq!(get(&img, PT0), 0, "page 0 must be absent");
        assert_eq!(get(&img, PT0 + 8 * (STUB / 4096)) & (RW | US), US);
        assert_eq!(get(&img, PT0 + 8 * (PML4 / 4096)) & US, 0);
        assert_eq!(
            get(&img, PT0 + 8 * (PT_POOL / 4096)) & US,
            0,
            "the table pool"
        );
        assert_eq!(get(&img, PT0 + 8 * (LOAD_MIN / 4096)) & (RW | US), RW | US);
        assert_eq!(get(&img, PD0 + 8), (1 << 21) | P | RW | US | PS);
        assert_eq!(get(&img, PD0 + 8 * 32), 0, "nothing past 64 MiB");
        assert_eq!(get(&img, PD_SPECIAL) & !0xfff, HYPERCALL);
    }

    #[test]
    fn gates_and_vectors_round_trip() {
        let mut img = vec![0u8; 0x20000];
        idt(&mut img);
        for v in (0..32u8).filter(|v| *v != GP_VECTOR) {
            let lo = get(&img, IDT + 16 * u64::from(v));
            let target = (lo & 0xffff)
                | (((lo >> 48) & 0xffff) << 16)
                | (get(&img, IDT + 16 * u64::from(v) + 8) << 32);
            assert_eq!(fault_vector(target), Some(v));
        }
        assert_eq!(fault_vector(HYPERCALL), None);
        let lo = get(&img, IDT + 16 * u64::from(GP_VECTOR));
        assert_eq!((lo & 0xffff) | (((lo >> 48) & 0xffff) << 16), KCODE);
        assert_eq!((lo >> 45) & 3, 0, "user code may not raise #GP");
        assert_eq!(
            (get(&img, IDT + 16 * 3) >> 45) & 3,
            3,
            "int3 is user code's"
        );
        assert_eq!(fault_vector(FAULT_BASE + 3), None);
        assert!(has_error_code(14) && !has_error_code(6));
    }
}
