//! `vbench-workload`: the freestanding static x86-64 Linux ELF that every vbench backend runs.
//!
//! No libc, no allocator, no TLS: its own `_start`, raw `syscall` instructions (the vDSO only
//! in `clock_vdso`, found through the auxiliary vector as libc finds it), and only these system
//! calls: read, write, openat, close, mmap, munmap, getpid, clock_gettime,
//! exit_group. The only paths it opens are `/dev/null`, `/dev/zero` and the `path` of the
//! `openclose` task. See the library crate for the command line and the result line.
//! The probes (`vbench_workloads::probes`, implemented in `probe/`, one file per kind) are the
//! exception: each makes the system calls and executes the instructions its escape attempt needs.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::hint::black_box;
use vbench_workloads::{
    fold, kernel, parse_args, sha256, write_usage, Checksum, Invocation, SplitMix64,
};

mod probe;

// The kernel enters here with the stack pointer at argc; the ABI guarantees it is 16-byte
// aligned and the direction flag is clear. Pass it to Rust with a correctly aligned call.
global_asm!(
    ".globl _start",
    ".type _start,@function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    ".size _start, . - _start",
    entry = sym rust_start,
);

/// The auxiliary vector's entry that names the vDSO.
const AT_SYSINFO_EHDR: usize = 33;

/// Where the vDSO is (0: the auxiliary vector named none).
static VDSO: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Seed of all generated data; changing it changes every checksum.
const SEED: u64 = 0x7662_656e_6368_2d31; // "vbench-1"

const PAGE: usize = 4096;

/// Raw Linux x86-64 system calls. Every wrapper returns the result or the errno.
mod sys {
    use core::arch::asm;

    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const MMAP: usize = 9;
    pub const MUNMAP: usize = 11;
    pub const GETPID: usize = 39;
    pub const CLOCK_GETTIME: usize = 228;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;

    pub const AT_FDCWD: isize = -100;
    pub const O_RDONLY: usize = 0;
    pub const O_WRONLY: usize = 1;
    pub const O_CLOEXEC: usize = 0o2000000;
    const PROT_READ: usize = 1;
    const PROT_WRITE: usize = 2;
    const MAP_PRIVATE: usize = 2;
    const MAP_ANONYMOUS: usize = 0x20;
    const MAP_POPULATE: usize = 0x8000;
    pub const CLOCK_MONOTONIC: usize = 1;

    /// A failed system call: its name and errno.
    #[derive(Clone, Copy)]
    pub struct Error {
        pub call: &'static str,
        pub errno: usize,
    }

    /// # Safety
    /// The arguments must be valid for system call `n`; in particular every pointer must be
    /// valid for the access the kernel makes through it.
    #[inline(always)]
    pub unsafe fn syscall6(n: usize, a: [usize; 6]) -> isize {
        let ret: isize;
        // SAFETY: the caller upholds the system call's contract. `syscall` clobbers rcx and
        // r11 only; memory is not marked untouched, so the compiler assumes the kernel may
        // read or write any memory reachable from the arguments.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
                in("r10") a[3], in("r8") a[4], in("r9") a[5],
                lateout("rcx") _, lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    #[inline(always)]
    fn check(call: &'static str, r: isize) -> Result<usize, Error> {
        if (-4095..0).contains(&r) {
            Err(Error {
                call,
                errno: r.unsigned_abs(),
            })
        } else {
            Ok(r as usize)
        }
    }

    #[inline(always)]
    pub fn write(fd: usize, buf: &[u8]) -> Result<usize, Error> {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let r = unsafe { syscall6(WRITE, [fd, buf.as_ptr() as usize, buf.len(), 0, 0, 0]) };
        check("write", r)
    }

    #[inline(always)]
    pub fn read(fd: usize, buf: &mut [u8]) -> Result<usize, Error> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let r = unsafe { syscall6(READ, [fd, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0]) };
        check("read", r)
    }

    /// Opens the NUL-terminated `path` relative to the working directory.
    #[inline(always)]
    pub fn open(path: &core::ffi::CStr, flags: usize) -> Result<usize, Error> {
        let (d, p) = (AT_FDCWD as usize, path.as_ptr() as usize);
        // SAFETY: path is NUL-terminated and valid for reads; no mode is needed without O_CREAT.
        let r = unsafe { syscall6(OPENAT, [d, p, flags, 0, 0, 0]) };
        check("openat", r)
    }

    #[inline(always)]
    pub fn close(fd: usize) -> Result<usize, Error> {
        // SAFETY: close takes no pointers; closing a descriptor this program opened.
        let r = unsafe { syscall6(CLOSE, [fd, 0, 0, 0, 0, 0]) };
        check("close", r)
    }

    /// Maps `len` bytes of fresh private anonymous read-write memory; `populate` asks the
    /// kernel to fault it all in now (MAP_POPULATE, a hint that changes no results).
    #[inline(always)]
    pub fn mmap_anon(len: usize, populate: bool) -> Result<*mut u8, Error> {
        let populate = if populate { MAP_POPULATE } else { 0 };
        let (prot, flags) = (
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | populate,
        );
        // SAFETY: a new anonymous mapping at an address the kernel chooses (hint 0, no
        // MAP_FIXED) cannot overlap anything this program uses; fd -1 as anonymous maps want.
        let r = unsafe { syscall6(MMAP, [0, len, prot, flags, usize::MAX, 0]) };
        check("mmap", r).map(|a| a as *mut u8)
    }

    /// # Safety
    /// `[addr, addr+len)` must be memory that nothing refers to any more.
    #[inline(always)]
    pub unsafe fn munmap(addr: *mut u8, len: usize) -> Result<usize, Error> {
        // SAFETY: the caller guarantees nothing refers to the range.
        let r = unsafe { syscall6(MUNMAP, [addr as usize, len, 0, 0, 0, 0]) };
        check("munmap", r)
    }

    #[inline(always)]
    pub fn getpid() -> Result<usize, Error> {
        // SAFETY: getpid takes no arguments.
        let r = unsafe { syscall6(GETPID, [0; 6]) };
        check("getpid", r)
    }

    /// The clock's reading in nanoseconds.
    #[inline(always)]
    pub fn clock_gettime(clock: usize) -> Result<u64, Error> {
        let mut ts = [0i64; 2];
        // SAFETY: ts is a writable struct timespec (two 64-bit fields).
        let r = unsafe { syscall6(CLOCK_GETTIME, [clock, ts.as_mut_ptr() as usize, 0, 0, 0, 0]) };
        check("clock_gettime", r)?;
        Ok((ts[0] as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts[1] as u64))
    }

    pub fn exit_group(code: usize) -> ! {
        // SAFETY: exit_group takes no pointers and does not return.
        unsafe {
            asm!("syscall", in("rax") EXIT_GROUP, in("rdi") code, options(noreturn, nostack));
        }
    }

    pub fn errno_name(e: usize) -> &'static str {
        match e {
            1 => "EPERM",
            2 => "ENOENT",
            4 => "EINTR",
            5 => "EIO",
            6 => "ENXIO",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            19 => "ENODEV",
            20 => "ENOTDIR",
            21 => "EISDIR",
            22 => "EINVAL",
            23 => "ENFILE",
            24 => "EMFILE",
            28 => "ENOSPC",
            30 => "EROFS",
            36 => "ENAMETOOLONG",
            38 => "ENOSYS",
            40 => "ELOOP",
            _ => "?",
        }
    }
}

/// A buffered writer to a file descriptor, for the result line, usage and error messages.
struct Out {
    fd: usize,
    len: usize,
    buf: [u8; 1024],
}

impl Out {
    const STDOUT: usize = 1;
    const STDERR: usize = 2;

    fn new(fd: usize) -> Self {
        Out {
            fd,
            len: 0,
            buf: [0; 1024],
        }
    }

    fn flush(&mut self) -> Result<(), sys::Error> {
        let mut done = 0;
        while done < self.len {
            match sys::write(self.fd, &self.buf[done..self.len]) {
                Ok(0) => {
                    return Err(sys::Error {
                        call: "write",
                        errno: 5,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.errno == 4 => {}
                Err(e) => {
                    self.len = 0;
                    return Err(e);
                }
            }
        }
        self.len = 0;
        Ok(())
    }
}

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush().map_err(|_| fmt::Error)?;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Reports a failed system call on stderr (with `detail`, e.g. the path, if not empty) and
/// exits 1.
#[cold]
fn die(e: sys::Error, detail: &str) -> ! {
    let mut o = Out::new(Out::STDERR);
    let (open, close) = if detail.is_empty() {
        ("", "")
    } else {
        ("(", ")")
    };
    let _ = writeln!(
        o,
        "vbench-workload: {}{open}{detail}{close} failed: errno {} ({})",
        e.call,
        e.errno,
        sys::errno_name(e.errno)
    );
    let _ = o.flush();
    sys::exit_group(1)
}

trait OrDie<T> {
    fn or_die(self) -> T;
}

impl<T> OrDie<T> for Result<T, sys::Error> {
    #[inline(always)]
    fn or_die(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => die(e, ""),
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut o = Out::new(Out::STDERR);
    let _ = writeln!(o, "vbench-workload: internal error: {info}");
    let _ = o.flush();
    sys::exit_group(101)
}

/// Never called (panics abort), but the prebuilt `core` refers to it in debug builds.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

// ---- the memory functions the compiler calls; written so that they cannot call themselves ----

/// # Safety
/// As C `memcpy`: `dest` and `src` valid for `n` bytes, not overlapping.
#[no_mangle]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; the direction flag is clear (ABI).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// As C `memmove`: `dest` and `src` valid for `n` bytes, possibly overlapping.
#[no_mangle]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest is below src or the ranges do not overlap: a forward copy is safe.
        // SAFETY: as memcpy; a forward byte copy reads each source byte before it is overwritten.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
                 options(nostack, preserves_flags));
        }
    } else {
        // dest overlaps the end of src: copy backwards, then restore the direction flag.
        // SAFETY: n > 0 here (the difference is < n), so the last-byte pointers are in range.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _, options(nostack));
        }
    }
    dest
}

/// # Safety
/// As C `memset`: `dest` valid for writes of `n` bytes.
#[no_mangle]
unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; the direction flag is clear (ABI).
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// As C `memcmp`: `a` and `b` valid for reads of `n` bytes.
#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees n readable bytes. Volatile reads keep the
        // compiler from recognising this loop as a call to memcmp itself.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// As C `bcmp`: `a` and `b` valid for reads of `n` bytes.
#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// As C `strlen`: `s` points to a NUL-terminated string.
#[no_mangle]
unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: every byte up to the NUL is readable. Volatile reads keep the compiler from
    // recognising this loop as a call to strlen itself (it does, for a plain loop).
    while unsafe { s.add(n).read_volatile() } != 0 {
        n += 1;
    }
    n
}

// ---- entry and argument handling ----

/// # Safety
/// `sp` is the initial stack pointer set up by Linux: argc, then argc pointers to
/// NUL-terminated strings, then NULL.
unsafe extern "C" fn rust_start(sp: *const usize) -> ! {
    // SAFETY: the caller passes the initial stack, which starts with argc.
    let argc = unsafe { sp.read() };
    // SAFETY: argv follows argc on the initial stack.
    let argv = unsafe { sp.add(1) } as *const *const u8;
    // SAFETY: the initial stack holds argv's argc pointers and NULL, then envp up to its NULL,
    // then the auxiliary vector's (type, value) pairs up to AT_NULL.
    unsafe {
        let mut p = sp.add(argc + 2);
        while p.read() != 0 {
            p = p.add(1);
        }
        p = p.add(1);
        while p.read() != 0 {
            if p.read() == AT_SYSINFO_EHDR {
                VDSO.store(p.add(1).read(), core::sync::atomic::Ordering::Relaxed);
            }
            p = p.add(2);
        }
    }
    let arg = |i: usize| -> Option<&'static str> {
        // SAFETY: i < argc, so argv[i] is a pointer to a NUL-terminated string that lives
        // (unchanged, since nothing here writes it) until the process exits.
        let bytes = unsafe { c_string(argv.add(i).read()) };
        core::str::from_utf8(bytes).ok()
    };
    for i in 1..argc {
        if arg(i).is_none() {
            usage_error(format_args!("argument {i} is not valid UTF-8"));
        }
    }
    if argc >= 2 && matches!(arg(1), Some("--help" | "-h")) {
        let mut o = Out::new(Out::STDOUT);
        let _ = write_usage(&mut o);
        let _ = o.flush();
        sys::exit_group(0);
    }
    if argc == 2 && arg(1) == Some("--probes") {
        probe::list();
        sys::exit_group(0);
    }
    if argc >= 2 {
        if let Some(p) = vbench_workloads::probes::find(arg(1).unwrap_or("")) {
            let mut args = [""; probe::MAX_ARGS];
            if argc - 2 > probe::MAX_ARGS {
                usage_error(format_args!(
                    "probe {} takes at most {} arguments",
                    p.name,
                    probe::MAX_ARGS
                ));
            }
            for (i, a) in args.iter_mut().enumerate().take(argc - 2) {
                *a = arg(i + 2).unwrap_or("");
            }
            probe::run(p, &args[..argc - 2]);
        }
    }
    let inv = match parse_args((1..argc).map(|i| arg(i).unwrap_or(""))) {
        Ok(inv) => inv,
        Err(e) => usage_error(format_args!("{e}")),
    };
    let (ns, checksum) = run(&inv);
    let mut o = Out::new(Out::STDOUT);
    if inv.write_report(&mut o, ns, checksum).is_err() {
        die(
            sys::Error {
                call: "write",
                errno: 5,
            },
            "(stdout)",
        );
    }
    if let Err(e) = o.flush() {
        die(e, "stdout");
    }
    sys::exit_group(0)
}

/// # Safety
/// `p` points to a NUL-terminated string that outlives the returned slice and is not written.
unsafe fn c_string(p: *const u8) -> &'static [u8] {
    // SAFETY: the caller guarantees a NUL-terminated string.
    let n = unsafe { strlen(p) };
    // SAFETY: the n bytes before the NUL are readable and, per the caller, live and unchanged.
    unsafe { core::slice::from_raw_parts(p, n) }
}

#[cold]
fn usage_error(problem: fmt::Arguments<'_>) -> ! {
    let mut o = Out::new(Out::STDERR);
    let _ = writeln!(o, "vbench-workload: error: {problem}");
    let _ = write_usage(&mut o);
    let _ = o.flush();
    sys::exit_group(2)
}

// ---- memory ----

/// Fresh zero-filled anonymous memory of `len` bytes (at least one), never unmapped, already
/// faulted in so that set-up, not the measured loop, pays for the page faults.
fn alloc(len: usize) -> &'static mut [u8] {
    let p = sys::mmap_anon(len.max(1), true).or_die();
    // SAFETY: the kernel just mapped len readable, writable, zeroed bytes at p, page aligned,
    // that nothing else refers to; they are never unmapped, so 'static is right.
    unsafe { core::slice::from_raw_parts_mut(p, len) }
}

/// Fresh memory for `n` values of a plain integer or float type (all bit patterns valid).
fn alloc_of<T: Copy>(n: usize) -> &'static mut [T] {
    let bytes = n
        .checked_mul(core::mem::size_of::<T>())
        .expect("size overflow");
    let b = alloc(bytes);
    // SAFETY: page-aligned memory (alignment enough for any primitive) of n*size_of::<T>()
    // zeroed bytes; T is only instantiated with integers and floats, for which zero bytes and
    // all other bit patterns are valid values.
    unsafe { core::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<T>(), n) }
}

/// Copies with `rep movsb`: the copy cannot be optimised away or turned into something else.
fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    // SAFETY: both slices are valid for n bytes and cannot overlap (one is &mut).
    unsafe {
        memcpy(dst.as_mut_ptr(), src.as_ptr(), n);
    }
}

fn now_ns() -> u64 {
    sys::clock_gettime(sys::CLOCK_MONOTONIC).or_die()
}

fn usize_param(inv: &Invocation<'_>, name: &str) -> usize {
    usize::try_from(inv.int(name)).expect("parameter exceeds the address space")
}

// ---- tasks: each returns (ns of the measured loop, checksum) ----

fn run(inv: &Invocation<'_>) -> (u64, u64) {
    let iters = inv.int("iters");
    match inv.task.name {
        "intmix" => intmix(iters),
        "sha256" => sha256_task(usize_param(inv, "size"), iters),
        "sieve" => sieve(usize_param(inv, "n"), iters),
        "matmul" => matmul(usize_param(inv, "n"), iters),
        "memcopy" => memcopy(usize_param(inv, "size"), iters),
        "triad" => triad(usize_param(inv, "size"), iters),
        "ptrchase" => ptrchase(usize_param(inv, "size"), iters),
        "pagetouch" => pagetouch(usize_param(inv, "size"), iters),
        "getpid" => getpid(iters),
        "devnull_write" => devnull_write(usize_param(inv, "size"), iters),
        "devzero_read" => devzero_read(usize_param(inv, "size"), iters),
        "openclose" => openclose(inv.str("path"), iters),
        "clock" => clock(iters),
        "clock_vdso" => clock_vdso(iters),
        "mmap" => mmap(usize_param(inv, "size"), iters),
        other => panic!("task {other} is in the catalogue but not implemented"),
    }
}

fn intmix(iters: u64) -> (u64, u64) {
    let t0 = now_ns();
    let x = black_box(kernel::intmix(black_box(SEED), black_box(iters)));
    let ns = now_ns() - t0;
    let mut c = Checksum::new();
    c.word(x);
    (ns, c.value())
}

fn sha256_task(size: usize, iters: u64) -> (u64, u64) {
    let buf = alloc(size);
    SplitMix64::new(SEED).fill(buf);
    let mut c = Checksum::new();
    let t0 = now_ns();
    for _ in 0..iters {
        let d = sha256::digest(black_box(&*buf));
        // Chain the passes: the next pass hashes a buffer that starts with this digest.
        buf[..32].copy_from_slice(&d);
        c.bytes(&d);
    }
    let ns = now_ns() - t0;
    (ns, c.value())
}

fn sieve(n: usize, iters: u64) -> (u64, u64) {
    let flags = alloc(n);
    flags.fill(1); // fault the pages in before timing
    let mut c = Checksum::new();
    let t0 = now_ns();
    for _ in 0..iters {
        c.word(kernel::sieve(black_box(&mut *flags)));
    }
    let ns = now_ns() - t0;
    (ns, c.value())
}

fn matmul(n: usize, iters: u64) -> (u64, u64) {
    let (a, b, m) = (
        alloc_of::<f64>(n * n),
        alloc_of::<f64>(n * n),
        alloc_of::<f64>(n * n),
    );
    let mut rng = SplitMix64::new(SEED);
    for x in a.iter_mut().chain(b.iter_mut()) {
        *x = rng.signed_unit();
    }
    let mut c = Checksum::new();
    let t0 = now_ns();
    for _ in 0..iters {
        kernel::matmul(n, black_box(&*a), black_box(&*b), black_box(&mut *m));
        c.word(m[0].to_bits());
    }
    let ns = now_ns() - t0;
    for x in m.iter() {
        c.word(x.to_bits());
    }
    (ns, c.value())
}

fn memcopy(size: usize, iters: u64) -> (u64, u64) {
    let (src, dst) = (alloc(size), alloc(size));
    // A cheap pattern (SplitMix64 output for 64 MiB would take longer); any tail stays zero.
    for (i, chunk) in src.chunks_exact_mut(8).enumerate() {
        let w = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ SEED;
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    dst.fill(0); // fault the pages in before timing
    let t0 = now_ns();
    for pass in 0..iters {
        src[0] = pass as u8;
        copy_bytes(dst, src);
    }
    let ns = now_ns() - t0;
    let mut c = Checksum::new();
    c.bytes(dst);
    (ns, c.value())
}

fn triad(size: usize, iters: u64) -> (u64, u64) {
    let n = size / 8;
    let (a, b, cc) = (alloc_of::<u64>(n), alloc_of::<u64>(n), alloc_of::<u64>(n));
    for (i, (y, z)) in b.iter_mut().zip(cc.iter_mut()).enumerate() {
        *y = i as u64;
        *z = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    a.fill(1); // fault the pages in before timing
    let mut c = Checksum::new();
    let t0 = now_ns();
    for pass in 0..iters {
        // The scalar changes with the pass, so the result shows how many passes ran.
        let s = black_box(3 + pass);
        let (a, b, cc) = (black_box(&mut *a), black_box(&*b), black_box(&*cc));
        for ((x, &y), &z) in a.iter_mut().zip(b).zip(cc) {
            *x = y.wrapping_add(s.wrapping_mul(z));
        }
        c.word(a.last().copied().unwrap_or(0));
    }
    let ns = now_ns() - t0;
    c.words(a);
    (ns, c.value())
}

fn ptrchase(size: usize, iters: u64) -> (u64, u64) {
    const SLOT_WORDS: usize = 64 / 8;
    let slots = (size / 64).max(2);
    // The cycle is built in a compact array (fast to shuffle), then spread over the slots.
    let next = alloc_of::<u32>(slots);
    kernel::sattolo(next, &mut SplitMix64::new(SEED));
    let mem = alloc_of::<u64>(slots * SLOT_WORDS);
    for (slot, &nx) in mem.chunks_exact_mut(SLOT_WORDS).zip(next.iter()) {
        slot[0] = nx as u64 * SLOT_WORDS as u64;
    }
    let mem = black_box(&*mem);
    let (mut at, mut sum) = (0usize, 0u64);
    let t0 = now_ns();
    for _ in 0..iters {
        at = mem[at] as usize;
        sum = sum.wrapping_add(at as u64);
    }
    let ns = now_ns() - t0;
    let mut c = Checksum::new();
    c.word(at as u64);
    c.word(sum);
    (ns, c.value())
}

fn pagetouch(size: usize, iters: u64) -> (u64, u64) {
    let per_round = size.div_ceil(PAGE) as u64;
    let (mut left, mut bad, mut sum) = (iters, 0u64, 0u64);
    let t0 = now_ns();
    while left > 0 {
        let pages = left.min(per_round) as usize;
        let len = pages * PAGE;
        let p = sys::mmap_anon(len, false).or_die();
        for i in 0..pages {
            let v = (i as u8) | 1;
            // SAFETY: page i of the fresh len-byte mapping: bytes i*PAGE and i*PAGE+1 are in
            // it, and nothing else refers to it. Volatile, so every page really is written.
            let (w, z) = unsafe {
                let q = p.add(i * PAGE);
                q.write_volatile(v);
                (q.read_volatile(), q.add(1).read_volatile())
            };
            bad += u64::from(w != v || z != 0);
            sum = sum.wrapping_add(u64::from(w));
        }
        // SAFETY: the mapping was made above and no reference into it outlives the loop.
        unsafe { sys::munmap(p, len) }.or_die();
        left -= pages as u64;
    }
    let ns = now_ns() - t0;
    let mut c = Checksum::new();
    c.word(iters);
    c.word(bad);
    c.word(sum);
    (ns, c.value())
}

fn getpid(iters: u64) -> (u64, u64) {
    let mut pids = fold::Pids::default();
    let t0 = now_ns();
    for _ in 0..iters {
        // The pid itself differs between backends (2 in a container): fold how the answers
        // compare with the first, not the answer.
        pids.add(sys::getpid().or_die());
    }
    let ns = now_ns() - t0;
    let mut c = Checksum::new();
    pids.fold(&mut c);
    (ns, c.value())
}

fn devnull_write(size: usize, iters: u64) -> (u64, u64) {
    let buf = alloc(size);
    SplitMix64::new(SEED).fill(buf);
    let fd = sys::open(c"/dev/null", sys::O_WRONLY | sys::O_CLOEXEC)
        .unwrap_or_else(|e| die(e, "/dev/null"));
    let mut writes = fold::Transfers::new(fd, size);
    let t0 = now_ns();
    for _ in 0..iters {
        writes.add(sys::write(fd, buf).or_die());
    }
    let ns = now_ns() - t0;
    sys::close(fd).or_die();
    let mut c = Checksum::new();
    writes.fold(&mut c);
    (ns, c.value())
}

fn devzero_read(size: usize, iters: u64) -> (u64, u64) {
    let buf = alloc(size);
    buf.fill(0xa5);
    let fd = sys::open(c"/dev/zero", sys::O_RDONLY | sys::O_CLOEXEC)
        .unwrap_or_else(|e| die(e, "/dev/zero"));
    let mut reads = fold::Transfers::new(fd, size);
    let mut nonzero = 0u64;
    let last = size - 1;
    let t0 = now_ns();
    for _ in 0..iters {
        // Poison the ends so the check below sees whether this read delivered zeros.
        buf[0] = 0xa5;
        buf[last] = 0xa5;
        let n = sys::read(fd, buf).or_die();
        reads.add(n);
        nonzero += u64::from(n != size || buf[0] != 0 || buf[last] != 0);
    }
    let ns = now_ns() - t0;
    sys::close(fd).or_die();
    let mut c = Checksum::new();
    reads.fold(&mut c);
    c.word(nonzero);
    c.bytes(buf);
    (ns, c.value())
}

fn openclose(path: &str, iters: u64) -> (u64, u64) {
    // The catalogue limits the path to 255 printable bytes, so it fits with its NUL.
    let mut z = [0u8; vbench_workloads::MAX_STR_LEN + 1];
    z[..path.len()].copy_from_slice(path.as_bytes());
    let cpath = core::ffi::CStr::from_bytes_until_nul(&z).expect("path has a NUL");
    let mut pairs = fold::Reopens::default();
    let t0 = now_ns();
    for _ in 0..iters {
        let fd = sys::open(cpath, sys::O_RDONLY | sys::O_CLOEXEC).unwrap_or_else(|e| die(e, path));
        pairs.add(fd, sys::close(fd).or_die());
    }
    let ns = now_ns() - t0;
    let mut c = Checksum::new();
    pairs.fold(&mut c);
    (ns, c.value())
}

fn clock(iters: u64) -> (u64, u64) {
    let t0 = now_ns();
    let mut readings = fold::Clock::new(t0);
    for _ in 0..iters {
        readings.add(sys::clock_gettime(sys::CLOCK_MONOTONIC).or_die());
    }
    let ns = now_ns() - t0;
    let mut c = Checksum::new();
    readings.fold(&mut c);
    (ns, c.value())
}

/// clock_gettime as libc makes it: through the vDSO's `__vdso_clock_gettime` when the
/// auxiliary vector names a vDSO that has it (no system call), else the system call.
fn clock_vdso(iters: u64) -> (u64, u64) {
    type ClockGettime = unsafe extern "C" fn(i32, *mut [i64; 2]) -> i32;
    let base = VDSO.load(core::sync::atomic::Ordering::Relaxed);
    let f = (base != 0)
        // SAFETY: base is the AT_SYSINFO_EHDR the kernel (or the VMM) gave this process.
        .then(|| unsafe { vbench_workloads::vdso::symbol(base, b"__vdso_clock_gettime") })
        .flatten()
        // SAFETY: the vDSO's clock_gettime has the C signature of clock_gettime(2).
        .map(|a| unsafe { core::mem::transmute::<usize, ClockGettime>(a) });
    let read = || match f {
        Some(f) => {
            let mut ts = [0i64; 2];
            // SAFETY: a writable timespec; the vDSO function is the C library's clock_gettime.
            if unsafe { f(sys::CLOCK_MONOTONIC as i32, &mut ts) } != 0 {
                die(
                    sys::Error {
                        call: "__vdso_clock_gettime",
                        errno: 22,
                    },
                    "CLOCK_MONOTONIC",
                );
            }
            (ts[0] as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(ts[1] as u64)
        }
        None => sys::clock_gettime(sys::CLOCK_MONOTONIC).or_die(),
    };
    let t0 = now_ns();
    let mut readings = fold::Clock::new(read());
    for _ in 0..iters {
        readings.add(read());
    }
    let ns = now_ns() - t0;
    let mut c = Checksum::new();
    readings.fold(&mut c);
    (ns, c.value())
}

/// Pages of one fresh mapping checked after the measured loop of `mmap` (the loop itself
/// never touches its memory).
const MMAP_CHECKED_PAGES: usize = 256;

fn mmap(size: usize, iters: u64) -> (u64, u64) {
    let mut maps = fold::Maps::default();
    let t0 = now_ns();
    for _ in 0..iters {
        let p = sys::mmap_anon(size, false).or_die();
        // SAFETY: the mapping was just made and nothing refers to it.
        let r = unsafe { sys::munmap(p, size) }.or_die();
        maps.add(p as usize, r);
    }
    let ns = now_ns() - t0;
    // Outside the measured loop: fresh pages read zero and keep what is written.
    let len = size.min(MMAP_CHECKED_PAGES * PAGE);
    let p = sys::mmap_anon(len, false).or_die();
    for off in (0..len).step_by(PAGE) {
        let v = ((off / PAGE) as u8) | 1;
        // SAFETY: off < len, inside the fresh len-byte mapping that nothing else refers to.
        // Volatile, so every page really is read and written.
        let (was, now) = unsafe {
            let q = p.add(off);
            let was = q.read_volatile();
            q.write_volatile(v);
            (was, q.read_volatile())
        };
        maps.page(was == 0, now == v);
    }
    // SAFETY: the mapping was made above and no reference into it outlives the loop.
    let r = unsafe { sys::munmap(p, len) }.or_die();
    maps.add(p as usize, r);
    let mut c = Checksum::new();
    maps.fold(&mut c);
    (ns, c.value())
}
