//! Limit probes: using more of a resource (memory, tasks, CPU, stdout, time, file size) than
//! a backend allows.

use super::*;

/// The probes of this family.
pub(super) const PROBES: &[(&str, Impl)] = &[
    ("memory", |_, a| memory(a)),
    ("fork_bomb", |_, a| fork_bomb(a)),
    ("cpu_quota", |_, a| cpu_quota(a)),
    ("stdout_flood", |p, _| stdout_flood(p)),
    ("never_exits", |_, _| never_exits()),
    ("file_size", |_, a| file_size(a)),
];

fn memory(a: &Args<'_>) -> Report {
    let mb = a.get("mb").and_then(num).unwrap_or(0) as usize;
    let p = match sys::mmap_anon(mb * MIB, false) {
        Ok(p) => p,
        Err(e) => return rep!(Contained, "mmap({mb}MiB):{}", errno(e.errno)),
    };
    for i in (0..mb * MIB).step_by(4096) {
        // SAFETY: i < mb MiB, inside the fresh private mapping that nothing else refers to.
        unsafe { p.add(i).write_volatile(1) };
        if i % MIB == 0 {
            // Progress on stderr, whose tail the harness keeps: what was touched when a limit
            // killed the probe.
            let mut t = Text::new();
            let _ = writeln!(t, "vbench-probe memory touched_kib={}", i / 1024);
            let _ = sys::write(2, t.as_str().as_bytes());
        }
    }
    rep!(Escaped, "touched={mb}MiB")
}

fn fork_bomb(a: &Args<'_>) -> Report {
    const MAX: usize = 4096;
    let n = (a.get("n").and_then(num).unwrap_or(0) as usize).min(MAX);
    let mut pids = [0usize; MAX];
    let (mut forked, mut err) = (0, 0);
    while forked < n {
        match call(nr::FORK, [0; 6]) {
            Ok(0) => {
                // The child: die with the parent, else sleep 30 s (the parent kills it first).
                let _ = call(nr::PRCTL, [1, 9, 0, 0, 0, 0]);
                let ts = [30i64, 0];
                let _ = call(nr::NANOSLEEP, [ts.as_ptr() as usize, 0, 0, 0, 0, 0]);
                sys::exit_group(0);
            }
            Ok(pid) => {
                pids[forked] = pid;
                forked += 1;
            }
            Err(e) => {
                err = e;
                break;
            }
        }
    }
    for &pid in &pids[..forked] {
        let _ = call(nr::KILL, [pid, 9, 0, 0, 0, 0]);
    }
    for _ in 0..forked {
        let _ = call(nr::WAIT4, [usize::MAX, 0, 0, 0, 0, 0]);
    }
    if forked == n {
        rep!(Escaped, "forked={forked}_of_{n}")
    } else {
        rep!(Contained, "forked={forked}_of_{n},fork:{}", errno(err))
    }
}

/// Spins until CLOCK_MONOTONIC reaches `until_ns`.
fn spin_until(until_ns: u64) {
    let mut x = 1u64;
    while crate::now_ns() < until_ns {
        for _ in 0..10_000 {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// CPU time of the reaped children, nanoseconds (getrusage(RUSAGE_CHILDREN)).
fn children_cpu_ns() -> u64 {
    let mut ru = [0i64; 18];
    let _ = call(98, [usize::MAX, ru.as_mut_ptr() as usize, 0, 0, 0, 0]);
    let tv = |s: i64, us: i64| (s as u64) * 1_000_000_000 + (us as u64) * 1000;
    tv(ru[0], ru[1]) + tv(ru[2], ru[3])
}

fn cpu_quota(a: &Args<'_>) -> Report {
    // SPINNERS processes spin for `ms`: the share of one CPU they got together is what a quota
    // caps. Several, so that a loaded machine still shows the native control above the quota.
    const SPINNERS: usize = 8;
    let ms = a.get("ms").and_then(num).unwrap_or(1000);
    const CPUTIME: usize = 2; // CLOCK_PROCESS_CPUTIME_ID
    let (w0, c0, k0) = (
        crate::now_ns(),
        sys::clock_gettime(CPUTIME).unwrap_or(0),
        children_cpu_ns(),
    );
    let until = w0 + ms * 1_000_000;
    let mut kids = 0;
    for _ in 0..SPINNERS - 1 {
        match call(nr::FORK, [0; 6]) {
            Ok(0) => {
                let _ = call(nr::PRCTL, [1, 9, 0, 0, 0, 0]);
                spin_until(until);
                sys::exit_group(0);
            }
            Ok(_) => kids += 1,
            Err(_) => break,
        }
    }
    spin_until(until);
    for _ in 0..kids {
        let _ = call(nr::WAIT4, [usize::MAX, 0, 0, 0, 0, 0]);
    }
    let w = crate::now_ns();
    let c = sys::clock_gettime(CPUTIME).unwrap_or(0) - c0 + (children_cpu_ns() - k0);
    let permille = c * 1000 / (w - w0).max(1);
    let (whole, frac) = (permille / 1000, permille % 1000);
    // Escaped: clearly more than the quota (by 0.15 of a CPU, capped at 0.9).
    let quota = a.get("quota").and_then(|q| {
        let (i, f) = q.split_once('.').unwrap_or((q, "0"));
        let f3 = (f.bytes().chain(core::iter::repeat(b'0')).take(3)).try_fold(0u64, |v, b| {
            b.is_ascii_digit().then(|| v * 10 + u64::from(b - b'0'))
        })?;
        Some(num(i)? * 1000 + f3)
    });
    let Some(quota) = quota else {
        return rep!(Error, "bad_quota");
    };
    let outcome = if permille >= (quota + 150).min(900) {
        ProbeOutcome::Escaped
    } else {
        ProbeOutcome::Contained
    };
    report(
        outcome,
        format_args!(
            "share={whole}.{frac:03},cpu_ns={c},wall_ns={},processes={}",
            w - w0,
            kids + 1
        ),
    )
}

fn stdout_flood(p: &Probe) -> ! {
    // The result line first, then the flood: the harness keeps the head of stdout only.
    print(p, &rep!(Observed, "flood_of_104857600_bytes_follows"));
    let mut line = [b'x'; 4096];
    line[4095] = b'\n';
    for _ in 0..(100 * MIB / 4096) {
        if sys::write(1, &line).is_err() {
            sys::exit_group(1);
        }
    }
    sys::exit_group(0)
}

fn ignore_signal(sig: usize) {
    let act = [1usize, 0, 0, 0]; // SIG_IGN, no flags, no restorer, empty mask
    let _ = call(nr::RT_SIGACTION, [sig, act.as_ptr() as usize, 0, 8, 0, 0]);
}

fn file_size(a: &Args<'_>) -> Report {
    let mb = a.get("mb").and_then(num).unwrap_or(0) as usize;
    let Some(p) = CPath::new(&[a.get("dir").unwrap_or(""), "/vbench-probe-big"]) else {
        return rep!(Error, "path");
    };
    ignore_signal(25); // SIGXFSZ: see EFBIG instead of dying
    const O_CREAT_EXCL_TRUNC: usize = 0o100 | 0o200 | 0o1000;
    let fd = match open(&p, sys::O_WRONLY | O_CREAT_EXCL_TRUNC) {
        Ok(fd) => fd,
        Err(e @ (1 | 2 | 13 | 30 | 38)) => return rep!(Contained, "create:{}", errno(e)),
        Err(e) => return rep!(Error, "create:{}", errno(e)),
    };
    let chunk = [0x5au8; 65536];
    let (mut written, mut err) = (0usize, 0usize);
    while written < mb * MIB {
        match sys::write(fd, &chunk) {
            Ok(n) => written += n,
            Err(e) if e.errno == 4 => {}
            Err(e) => {
                err = e.errno;
                break;
            }
        }
    }
    let _ = sys::close(fd);
    let _ = call(nr::UNLINKAT, [sys::AT_FDCWD as usize, p.ptr(), 0, 0, 0, 0]);
    if err == 0 {
        rep!(Escaped, "wrote={}MiB", written / MIB)
    } else {
        rep!(
            Contained,
            "wrote={}KiB,write:{}",
            written / 1024,
            errno(err)
        )
    }
}

fn never_exits() -> Report {
    let mut x = 1u64;
    loop {
        x = core::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
    }
}
