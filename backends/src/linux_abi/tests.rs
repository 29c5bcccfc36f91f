use super::testmem::TestMem;
use super::*;

const RW: u64 = (libc::PROT_READ | libc::PROT_WRITE) as u64;
const ANON: u64 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
const AT: u64 = libc::AT_FDCWD as u32 as u64;

fn cap() -> Output {
    Output::Capture {
        buf: vec![],
        total: 0,
    }
}

fn abi_with(policy: Policy, allowed: Vec<PathBuf>) -> (Abi, TestMem) {
    let layout = Layout {
        brk_start: 0x10000,
        brk_limit: 0x20000,
        mmap_lo: 0x20000,
        mmap_hi: 0x40000,
        mmap_near: 0,
    };
    let abi = Abi::new(Setup {
        layout,
        outputs: [cap(), cap()],
        inherit_stdin: false,
        policy,
        allowed,
        delivers_signals: false,
        own_process: false,
        exe: None,
        timer_kick: 0,
    });
    (abi, TestMem::new(0x40000))
}

fn abi() -> (Abi, TestMem) {
    abi_with(Policy::Confined, vec![])
}

fn sys(a: &mut Abi, m: &TestMem, nr: i64, args: &[u64]) -> i64 {
    let mut x = [0u64; 6];
    x[..args.len()].copy_from_slice(args);
    match a.syscall(m, nr as u64, x) {
        Action::Return(v) => v,
        other => panic!("syscall {nr}: {other:?}"),
    }
}

fn stdout(a: &Abi) -> &[u8] {
    match &a.outputs[0] {
        Output::Capture { buf, .. } => buf,
        Output::Inherit(_) => panic!("not captured"),
    }
}

#[test]
fn counters_are_named_once_by_syscall() {
    let (mut a, m) = abi();
    for nr in [39, 39, 228, 96, 201, 56, 600] {
        a.syscall(&m, nr, [1, 0x100, 0, 0, 0, 0]);
    }
    let c = a.counters();
    assert_eq!(c["abi.getpid"], 2);
    assert_eq!(c["abi.clock_gettime"], 1);
    assert_eq!(c["abi.gettimeofday"], 1);
    assert_eq!(c["abi.time"], 1);
    assert_eq!(c["abi.clone"], 1);
    assert_eq!(
        c["abi.other"], 1,
        "numbers beyond the table share one slot: {c:?}"
    );
    assert_eq!(c["abi.enosys"], 2);
    // time() returned the host's wall clock and stored nothing at a null tloc
    assert!(sys(&mut a, &m, libc::SYS_time, &[0]) > 1_700_000_000);
}

#[test]
fn write_checks_guest_pointers() {
    let (mut a, m) = abi();
    m.write(0x100, b"hi\n").unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_write, &[1, 0x100, 3]), 3);
    assert_eq!(stdout(&a), b"hi\n");
    let efault = Errno::EFAULT.ret();
    assert_eq!(sys(&mut a, &m, libc::SYS_write, &[1, 0x3ffff, 10]), efault);
    assert_eq!(
        sys(&mut a, &m, libc::SYS_write, &[1, u64::MAX - 1, 10]),
        efault
    );
    assert_eq!(
        sys(&mut a, &m, libc::SYS_write, &[77, 0x100, 3]),
        Errno::EBADF.ret()
    );
}

#[test]
fn paths_are_confined() {
    let (mut a, m) = abi();
    m.write(0x200, b"/etc/passwd\0").unwrap();
    assert_eq!(
        sys(&mut a, &m, libc::SYS_openat, &[AT, 0x200, 0]),
        Errno::EACCES.ret()
    );
    m.write(0x200, b"/dev/null\0").unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_openat, &[AT, 0x200, 1]), 3);
    assert_eq!(sys(&mut a, &m, libc::SYS_close, &[3]), 0);
    assert_eq!(sys(&mut a, &m, libc::SYS_close, &[3]), Errno::EBADF.ret());
    // writes, creates and directories are the host policy's
    for nr in [libc::SYS_mkdir, libc::SYS_unlink, libc::SYS_chdir] {
        assert_eq!(sys(&mut a, &m, nr, &[0x200, 0o755]), Errno::ENOSYS.ret());
    }
}

#[test]
fn dup2_moves_a_file_onto_stdin_sharing_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.txt");
    std::fs::write(&f, b"abcdef").unwrap();
    let (mut a, m) = abi_with(Policy::Confined, vec![f.clone()]);
    let path = format!("{}\0", f.display());
    m.write(0x200, path.as_bytes()).unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_openat, &[AT, 0x200, 0]), 3);
    // busybox's xmove_fd: dup2(fd, 0) then close(fd)
    assert_eq!(sys(&mut a, &m, libc::SYS_dup2, &[3, 0]), 0);
    assert_eq!(sys(&mut a, &m, libc::SYS_close, &[3]), 0);
    assert_eq!(sys(&mut a, &m, libc::SYS_read, &[0, 0x300, 3]), 3);
    // dup shares the offset with the descriptor it copies
    assert_eq!(sys(&mut a, &m, libc::SYS_dup, &[0]), 3);
    assert_eq!(sys(&mut a, &m, libc::SYS_read, &[3, 0x303, 8]), 3);
    let mut got = [0u8; 6];
    m.read(0x300, &mut got).unwrap();
    assert_eq!(&got, b"abcdef");
    assert_eq!(sys(&mut a, &m, libc::SYS_dup2, &[3, 3]), 3);
    assert_eq!(
        sys(&mut a, &m, libc::SYS_dup3, &[3, 3, 0]),
        Errno::EINVAL.ret()
    );
    assert_eq!(sys(&mut a, &m, libc::SYS_dup2, &[9, 4]), Errno::EBADF.ret());
    assert_eq!(
        sys(&mut a, &m, libc::SYS_dup2, &[3, 5000]),
        Errno::EBADF.ret()
    );
    // stat of an allowed path gives its size; other paths stay hidden
    assert_eq!(sys(&mut a, &m, libc::SYS_stat, &[0x200, 0x1000]), 0);
    let st: libc::stat = get(&m, 0x1000).unwrap();
    assert_eq!(st.st_size, 6);
    m.write(0x200, b"/etc/passwd\0").unwrap();
    assert_eq!(
        sys(&mut a, &m, libc::SYS_newfstatat, &[AT, 0x200, 0x1000, 0]),
        Errno::EACCES.ret()
    );
}

#[test]
fn anonymous_memory_is_zeroed_reused_and_bounded() {
    let (mut a, m) = abi();
    let p = sys(
        &mut a,
        &m,
        libc::SYS_mmap,
        &[0, 0x8000, RW, ANON, u64::MAX, 0],
    );
    assert_eq!(p, 0x38000);
    m.write(p as u64, b"dirty").unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_munmap, &[p as u64, 0x8000]), 0);
    // glibc and Go pass the fd -1 as a 32-bit int: 0xffffffff in the register
    let q = sys(
        &mut a,
        &m,
        libc::SYS_mmap,
        &[0, 0x8000, RW, ANON, 0xffff_ffff, 0],
    );
    assert_eq!(q, p);
    let mut b = [1u8; 5];
    m.read(q as u64, &mut b).unwrap();
    assert_eq!(b, [0; 5]);
    // beyond what is left: ENOMEM, inside the guest
    assert_eq!(
        sys(
            &mut a,
            &m,
            libc::SYS_mmap,
            &[0, 0x100000, RW, ANON, u64::MAX, 0]
        ),
        Errno::ENOMEM.ret()
    );
    // a free hint is honoured; MAP_FIXED outside the area is refused
    assert_eq!(
        sys(
            &mut a,
            &m,
            libc::SYS_mmap,
            &[0x21000, 0x1000, RW, ANON, u64::MAX, 0]
        ),
        0x21000
    );
    let fixed = ANON | libc::MAP_FIXED as u64;
    assert_eq!(
        sys(
            &mut a,
            &m,
            libc::SYS_mmap,
            &[0x1000, 0x1000, RW, fixed, u64::MAX, 0]
        ),
        Errno::ENOMEM.ret()
    );
    // mprotect of an unmapped part of the area: ENOMEM, as natively
    assert_eq!(
        sys(&mut a, &m, libc::SYS_mprotect, &[0x22000, 0x1000, 1]),
        Errno::ENOMEM.ret()
    );
    assert_eq!(
        sys(&mut a, &m, libc::SYS_mprotect, &[0x21000, 0x1000, 1]),
        0
    );
}

#[test]
fn a_file_maps_privately_and_shared_and_mremap_keeps_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data");
    std::fs::write(&f, vec![7u8; 8192]).unwrap();
    let (mut a, m) = abi_with(Policy::Host, vec![]);
    m.write(0x200, format!("{}\0", f.display()).as_bytes())
        .unwrap();
    let fd = sys(
        &mut a,
        &m,
        libc::SYS_openat,
        &[AT, 0x200, libc::O_RDWR as u64],
    ) as u64;
    let private = sys(&mut a, &m, libc::SYS_mmap, &[0, 8192, RW, 2, fd, 0]) as u64;
    let shared = sys(&mut a, &m, libc::SYS_mmap, &[0, 4096, RW, 1, fd, 4096]) as u64;
    let mut b = [0u8; 2];
    m.read(private + 4095, &mut b).unwrap();
    assert_eq!(b, [7, 7]);
    m.write(private, b"p").unwrap();
    m.write(shared, b"s").unwrap();
    assert_eq!(
        sys(
            &mut a,
            &m,
            libc::SYS_msync,
            &[shared, 4096, libc::MS_SYNC as u64]
        ),
        0
    );
    let on_disk = std::fs::read(&f).unwrap();
    assert_eq!(
        (on_disk[0], on_disk[4096]),
        (7, b's'),
        "private stays, shared reaches the file"
    );
    // growing a mapping with no room after it moves it, bytes and all
    let moved = sys(&mut a, &m, libc::SYS_mremap, &[private, 8192, 16384, 1, 0]) as u64;
    assert_ne!(moved, private);
    m.read(moved, &mut b).unwrap();
    assert_eq!(b, [b'p', 7]);
    assert_eq!(
        sys(&mut a, &m, libc::SYS_mremap, &[moved, 16384, 20000, 0, 0]),
        Errno::ENOMEM.ret()
    );
    // a captured output cannot be mapped
    assert_eq!(
        sys(&mut a, &m, libc::SYS_mmap, &[0, 4096, RW, 2, 1, 0]),
        Errno::ENODEV.ret()
    );
}

#[test]
fn brk_moves_within_its_limit() {
    let (mut a, m) = abi();
    assert_eq!(sys(&mut a, &m, libc::SYS_brk, &[0]), 0x10000);
    assert_eq!(sys(&mut a, &m, libc::SYS_brk, &[0x18000]), 0x18000);
    assert_eq!(sys(&mut a, &m, libc::SYS_brk, &[0x90000]), 0x18000);
}

#[test]
fn unknown_syscalls_are_enosys_and_every_one_is_listed() {
    let (mut a, m) = abi();
    for nr in [libc::SYS_clone, libc::SYS_clone, libc::SYS_fork, 600] {
        assert_eq!(sys(&mut a, &m, nr, &[]), Errno::ENOSYS.ret());
    }
    assert_eq!(
        a.unsupported().as_deref(),
        Some("clone (56) x 2, fork (57) x 1, syscall 600 x 1")
    );
    assert_eq!(a.counters()["abi.enosys"], 4);
    assert_eq!(a.syscall(&m, 231, [7, 0, 0, 0, 0, 0]), Action::Exit(7));
}

#[test]
fn host_policy_writes_files_in_its_own_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let harness_cwd = std::env::current_dir().unwrap();
    let (mut a, m) = abi_with(Policy::Host, vec![]);
    m.write(0x200, format!("{}\0", dir.path().display()).as_bytes())
        .unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_chdir, &[0x200]), 0);
    assert_eq!(
        std::env::current_dir().unwrap(),
        harness_cwd,
        "the harness did not move"
    );
    m.write(0x300, b"sub\0").unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_mkdir, &[0x300, 0o755]), 0);
    assert_eq!(sys(&mut a, &m, libc::SYS_chdir, &[0x300]), 0);
    let n = sys(&mut a, &m, libc::SYS_getcwd, &[0x400, 4096]);
    let mut cwd = vec![0u8; n as usize - 1];
    m.read(0x400, &mut cwd).unwrap();
    assert_eq!(
        PathBuf::from(String::from_utf8(cwd).unwrap()),
        dir.path().canonicalize().unwrap().join("sub")
    );
    m.write(0x300, b"out.txt\0").unwrap();
    let flags = (libc::O_CREAT | libc::O_WRONLY) as u64;
    let fd = sys(&mut a, &m, libc::SYS_open, &[0x300, flags, 0o644]) as u64;
    assert_eq!(fd, 3);
    m.write(0x500, b"hello").unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_write, &[fd, 0x500, 5]), 5);
    assert_eq!(
        std::fs::read(dir.path().join("sub/out.txt")).unwrap(),
        b"hello"
    );
    // a missing path is ENOENT (not the confinement's EACCES)
    m.write(0x300, b"missing\0").unwrap();
    assert_eq!(
        sys(&mut a, &m, libc::SYS_open, &[0x300, 0]),
        Errno::ENOENT.ret()
    );
    // the directory lists through getdents64
    m.write(0x300, b".\0").unwrap();
    let d = sys(
        &mut a,
        &m,
        libc::SYS_open,
        &[0x300, libc::O_DIRECTORY as u64],
    ) as u64;
    let n = sys(&mut a, &m, libc::SYS_getdents64, &[d, 0x1000, 4096]);
    let mut ents = vec![0u8; n as usize];
    m.read(0x1000, &mut ents).unwrap();
    assert!(ents.windows(7).any(|w| w == b"out.txt"));
}

#[test]
fn a_pipe_carries_bytes_and_a_closed_one_raises_sigpipe() {
    let (mut a, m) = abi_with(Policy::Host, vec![]);
    assert_eq!(sys(&mut a, &m, libc::SYS_pipe2, &[0x100, 0]), 0);
    let [r, w]: [i32; 2] = get(&m, 0x100).unwrap();
    assert_eq!((r, w), (3, 4));
    m.write(0x200, b"abc").unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_write, &[4, 0x200, 3]), 3);
    assert_eq!(sys(&mut a, &m, libc::SYS_read, &[3, 0x300, 10]), 3);
    assert_eq!(sys(&mut a, &m, libc::SYS_close, &[3]), 0);
    // the default action of SIGPIPE kills; with SIG_IGN the write gets EPIPE
    assert_eq!(
        a.syscall(&m, libc::SYS_write as u64, [4, 0x200, 3, 0, 0, 0]),
        Action::Killed(libc::SIGPIPE)
    );
    put(&m, 0x400, &[1u64, 0, 0, 0]).unwrap();
    assert_eq!(
        sys(&mut a, &m, libc::SYS_rt_sigaction, &[13, 0x400, 0, 8]),
        0
    );
    assert_eq!(
        sys(&mut a, &m, libc::SYS_write, &[4, 0x200, 3]),
        Errno::EPIPE.ret()
    );
}

#[test]
fn signals_sent_to_itself_take_their_default_action() {
    let (mut a, m) = abi_with(Policy::Host, vec![]);
    let abrt = libc::SIGABRT as u64;
    let me = a.pid() as u64;
    assert_eq!(
        me,
        u64::from(std::process::id()),
        "the host's pid, as natively"
    );
    assert_eq!(
        a.syscall(&m, libc::SYS_tgkill as u64, [me, me, abrt, 0, 0, 0]),
        Action::Killed(libc::SIGABRT)
    );
    // another process: there is none on the guest's machine
    assert_eq!(
        sys(&mut a, &m, libc::SYS_kill, &[4242, 9]),
        Errno::ESRCH.ret()
    );
    // an ignored default (SIGCHLD) and a blocked signal do nothing
    assert_eq!(
        sys(&mut a, &m, libc::SYS_kill, &[me, libc::SIGCHLD as u64]),
        0
    );
    put(&m, 0x100, &(1u64 << (libc::SIGTERM - 1))).unwrap();
    assert_eq!(
        sys(&mut a, &m, libc::SYS_rt_sigprocmask, &[0, 0x100, 0, 8]),
        0
    );
    assert_eq!(
        sys(&mut a, &m, libc::SYS_kill, &[0, libc::SIGTERM as u64]),
        0
    );
    assert_eq!(
        a.syscall(&m, libc::SYS_kill as u64, [me, 9, 0, 0, 0, 0]),
        Action::Killed(libc::SIGKILL)
    );
}

#[test]
fn sleeps_really_sleep() {
    let (mut a, m) = abi_with(Policy::Host, vec![]);
    put(&m, 0x100, &[0i64, 30_000_000]).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(sys(&mut a, &m, libc::SYS_nanosleep, &[0x100, 0]), 0);
    assert!(t.elapsed() >= std::time::Duration::from_millis(30));
    assert_eq!(
        sys(&mut a, &m, libc::SYS_nanosleep, &[0x3fff8, 0]),
        Errno::EFAULT.ret()
    );
}

#[test]
fn limits_are_the_guests_own() {
    let (mut a, m) = abi_with(Policy::Host, vec![]);
    let nofile = libc::RLIMIT_NOFILE as u64;
    assert_eq!(
        sys(&mut a, &m, libc::SYS_prlimit64, &[0, nofile, 0, 0x100]),
        0
    );
    let [cur, max]: [u64; 2] = get(&m, 0x100).unwrap();
    assert!(cur > 0 && cur <= max);
    put(&m, 0x200, &[16u64, max]).unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_setrlimit, &[nofile, 0x200]), 0);
    assert_eq!(sys(&mut a, &m, libc::SYS_getrlimit, &[nofile, 0x100]), 0);
    assert_eq!(get::<[u64; 2]>(&m, 0x100).unwrap(), [16, max]);
    let mut host = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut host) };
    assert_eq!(host.rlim_cur, cur, "the harness keeps its own limit");
    assert_eq!(
        sys(&mut a, &m, libc::SYS_prlimit64, &[4242, nofile, 0, 0x100]),
        Errno::ESRCH.ret()
    );
}

#[test]
fn mremap_of_lengths_past_the_end_of_the_address_space_is_an_errno() {
    // found by harness/tests/abi_fuzz.rs: old + old_len and old + new_len overflowed (a panic
    // in debug builds, a wrapped range in release)
    let (mut a, m) = abi();
    let p = sys(
        &mut a,
        &m,
        libc::SYS_mmap,
        &[0, 8192, RW, ANON, u64::MAX, 0],
    ) as u64;
    assert!(p >= 0x20000, "{p:#x}");
    let huge = u64::MAX - 4095;
    let maymove = libc::MREMAP_MAYMOVE as u64;
    assert_eq!(
        sys(&mut a, &m, libc::SYS_mremap, &[p, huge, 4096, 0, 0]),
        Errno::EFAULT.ret()
    );
    assert_eq!(
        sys(&mut a, &m, libc::SYS_mremap, &[p, 4096, huge, 0, 0]),
        Errno::ENOMEM.ret()
    );
    assert_eq!(
        sys(&mut a, &m, libc::SYS_mremap, &[p, 8192, huge, maymove, 0]),
        Errno::ENOMEM.ret()
    );
    // the mapping is still whole
    assert_eq!(sys(&mut a, &m, libc::SYS_munmap, &[p, 8192]), 0);
}

#[test]
fn a_file_mapping_past_the_end_of_its_file_is_efault_not_sigbus() {
    // found by harness/tests/abi_fuzz.rs: a guest maps a file, truncates it, then passes a
    // pointer into the mapping to a call whose argument vbench reads itself (getpeername's
    // length, setrlimit's limits): the plain load was a SIGBUS that killed vbench
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data");
    std::fs::write(&f, vec![7u8; 4096]).unwrap();
    let (mut a, m) = abi_with(Policy::Host, vec![]);
    m.write(0x200, format!("{}\0", f.display()).as_bytes())
        .unwrap();
    let fd = sys(
        &mut a,
        &m,
        libc::SYS_openat,
        &[AT, 0x200, libc::O_RDWR as u64],
    ) as u64;
    let shared = sys(&mut a, &m, libc::SYS_mmap, &[0, 4096, RW, 1, fd, 0]) as u64;
    assert_eq!(sys(&mut a, &m, libc::SYS_setrlimit, &[7, shared]), 0);
    assert_eq!(sys(&mut a, &m, libc::SYS_ftruncate, &[fd, 0]), 0);
    let efault = Errno::EFAULT.ret();
    assert_eq!(sys(&mut a, &m, libc::SYS_setrlimit, &[7, shared]), efault);
    assert_eq!(sys(&mut a, &m, libc::SYS_getrlimit, &[7, shared]), efault);
    assert_eq!(
        sys(&mut a, &m, libc::SYS_getpeername, &[0, 0x300, shared]),
        efault
    );
    assert_eq!(sys(&mut a, &m, libc::SYS_uname, &[shared]), efault);
    // a path (read by vbench, a page at a time), and a ppoll timeout (which glibc's ppoll
    // copies with a plain load: the layer makes the system call itself)
    assert_eq!(
        sys(&mut a, &m, libc::SYS_mkdirat, &[AT, shared + 100, 0o700]),
        efault
    );
    assert_eq!(
        sys(&mut a, &m, libc::SYS_ppoll, &[0x300, 0, shared, 0, 8]),
        efault
    );
    assert_eq!(
        sys(&mut a, &m, libc::SYS_clock_getres, &[1, shared]),
        efault
    );
    // shared anonymous memory grown by mremap: its new pages lie past the end of its shmem
    // object (the fuzzer found this one too)
    let (mut a, m) = abi_with(Policy::Host, vec![]);
    let anon = (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64;
    let shm = sys(
        &mut a,
        &m,
        libc::SYS_mmap,
        &[0, 4096, RW, anon, u64::MAX, 0],
    ) as u64;
    let grown = sys(&mut a, &m, libc::SYS_mremap, &[shm, 4096, 8192, 1, 0]) as u64;
    assert!(grown < 1 << 47, "mremap: {grown:#x}");
    assert_eq!(sys(&mut a, &m, libc::SYS_uname, &[grown + 4096]), efault);
    assert_eq!(
        sys(&mut a, &m, libc::SYS_mkdirat, &[AT, grown + 4096, 0o700]),
        efault
    );
}

#[test]
fn select_epoll_and_eventfd_see_the_guests_descriptors() {
    let (mut a, m) = abi_with(Policy::Host, vec![]);
    assert_eq!(sys(&mut a, &m, libc::SYS_pipe2, &[0x100, 0]), 0);
    let [r, w]: [i32; 2] = get(&m, 0x100).unwrap();
    m.write(0x200, b"x").unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_write, &[w as u64, 0x200, 1]), 1);
    // select(r+1, {r}, {1}, NULL, {0,0}): the pipe is readable, the captured stdout writable
    put(&m, 0x300, &(1u64 << r)).unwrap();
    put(&m, 0x308, &(1u64 << 1)).unwrap();
    put(&m, 0x310, &[0i64, 0]).unwrap();
    let n = sys(
        &mut a,
        &m,
        libc::SYS_select,
        &[r as u64 + 1, 0x300, 0x308, 0, 0x310],
    );
    assert_eq!(n, 2);
    assert_eq!(get::<u64>(&m, 0x300).unwrap(), 1 << r);
    assert_eq!(get::<u64>(&m, 0x308).unwrap(), 1 << 1);
    // epoll: the event's data comes back as the guest gave it
    let ep = sys(
        &mut a,
        &m,
        libc::SYS_epoll_create1,
        &[libc::O_CLOEXEC as u64],
    ) as u64;
    m.write(0x400, &[1, 0, 0, 0]).unwrap(); // EPOLLIN
    put(&m, 0x404, &0x1234_5678_u64).unwrap();
    assert_eq!(
        sys(&mut a, &m, libc::SYS_epoll_ctl, &[ep, 1, r as u64, 0x400]),
        0
    );
    assert_eq!(sys(&mut a, &m, libc::SYS_epoll_wait, &[ep, 0x500, 4, 0]), 1);
    assert_eq!(get::<u64>(&m, 0x504).unwrap(), 0x1234_5678);
    assert_eq!(
        sys(&mut a, &m, libc::SYS_epoll_wait, &[ep, 0x3fffc, 4, 0]),
        Errno::EFAULT.ret()
    );
    // eventfd: a counter the guest writes and reads
    let ev = sys(&mut a, &m, libc::SYS_eventfd2, &[0, 0]) as u64;
    put(&m, 0x600, &5u64).unwrap();
    assert_eq!(sys(&mut a, &m, libc::SYS_write, &[ev, 0x600, 8]), 8);
    assert_eq!(sys(&mut a, &m, libc::SYS_read, &[ev, 0x608, 8]), 8);
    assert_eq!(get::<u64>(&m, 0x608).unwrap(), 5);
}
