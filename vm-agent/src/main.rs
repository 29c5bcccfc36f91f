//! `vbench-vm-agent`: the init (PID 1) of the vm backend's guest, a real Linux booted by QEMU
//! from an initramfs that vbench builds. It mounts /proc, /sys, /dev and /tmp, says hello on the
//! second serial port (/dev/ttyS1; the first is the kernel's console), and then serves the
//! host's requests one at a time (frames of `backends/src/vm/proto.rs`): store a program, run
//! it (fork, execve, its output streamed back, wait4 with its resource usage), power off.
//!
//! It is linked statically (glibc, `+crt-static`) so that the initramfs needs nothing else.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

#[path = "../../backends/src/vm/proto.rs"]
#[allow(dead_code)]
mod proto;

use proto::{Done, Ended, Exec};

/// Where programs are kept: the first in the initramfs, the others as the host sends them (the
/// initramfs is the guest's root, a writable tmpfs).
const PROGS: &str = "/progs";

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "vbench-vm-agent is the init of vbench's vm guest (PID 1 of a QEMU guest); \
             it is not run by hand"
        );
        std::process::exit(2);
    }
    if let Err(e) = serve() {
        eprintln!("vbench-vm-agent: {e}");
    }
    power_off();
}

fn serve() -> io::Result<()> {
    for (src, dst, fs) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("dev", "/dev", "devtmpfs"),
        ("tmp", "/tmp", "tmpfs"),
    ] {
        let _ = std::fs::create_dir_all(dst);
        mount(src, dst, fs)?;
    }
    let tty = open_port("/dev/ttyS1")?;
    let mut port = Port {
        tty: std::fs::File::from(tty),
        reader: proto::Reader::default(),
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_default();
    port.send(&proto::encode(
        proto::HELLO,
        &[
            release.trim().as_bytes(),
            cpus.to_string().as_bytes(),
            mem.as_bytes(),
        ],
    ))?;
    loop {
        let (kind, payload) = port.recv()?;
        match kind {
            proto::PROGRAM => {
                let reply = store(&payload);
                match reply {
                    Ok(()) => port.send(&proto::encode(proto::OK, &[]))?,
                    Err(e) => port.send(&proto::encode(proto::FAIL, &[e.as_bytes()]))?,
                }
            }
            proto::EXEC => match Exec::decode(&payload) {
                Ok(x) => run(&mut port, &x)?,
                Err(e) => port.send(&proto::encode(proto::FAIL, &[e.as_bytes()]))?,
            },
            proto::HALT => return Ok(()),
            k => {
                let why = format!("unknown request kind {k:#04x}");
                port.send(&proto::encode(proto::FAIL, &[why.as_bytes()]))?;
            }
        }
    }
}

fn store(payload: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let f = proto::fields(payload)?;
    let [key, bytes] = f.as_slice() else {
        return Err("a program frame has a key and the bytes".into());
    };
    let key = std::str::from_utf8(key)
        .ok()
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or("a program key is letters and digits")?;
    let path = format!("{PROGS}/{key}");
    std::fs::write(&path, bytes).map_err(|e| format!("writing {path}: {e}"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {path}: {e}"))
}

/// The host's channel: the serial port in raw mode.
struct Port {
    tty: std::fs::File,
    reader: proto::Reader,
}

impl Port {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.tty.write_all(frame)
    }

    /// Blocks for the next frame.
    fn recv(&mut self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            if let Some(f) = self.reader.next_frame().map_err(io::Error::other)? {
                return Ok(f);
            }
            self.fill()?;
        }
    }

    /// Reads what is there (blocking for at least one byte).
    fn fill(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        let n = self.tty.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other("the host's serial port closed"));
        }
        self.reader.push(&buf[..n]);
        Ok(())
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn mount(src: &str, dst: &str, fs: &str) -> io::Result<()> {
    let (s, d, t) = (cstr(src), cstr(dst), cstr(fs));
    // SAFETY: valid C strings; no data argument.
    let r = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mount {fs} on {dst}: {e}"),
        ));
    }
    Ok(())
}

fn open_port(path: &str) -> io::Result<OwnedFd> {
    let p = cstr(path);
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("open {path}: {e}")));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; t is a valid termios.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: t is a valid termios.
    unsafe { libc::cfmakeraw(&mut t) };
    t.c_cflag |= libc::CLOCAL | libc::CREAD;
    t.c_cflag &= !libc::CRTSCTS;
    // SAFETY: fd is open; t is a valid termios.
    if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [0; 2];
    // SAFETY: p has room for two descriptors.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn c_list(items: &[Vec<u8>]) -> Result<Vec<CString>, String> {
    items
        .iter()
        .map(|a| CString::new(a.clone()).map_err(|_| "an argument holds a NUL byte".to_string()))
        .collect()
}

/// Runs one request: fork, execve in the child, output streamed to the host as it comes, the
/// end (with resource usage) reported.
fn run(port: &mut Port, x: &Exec) -> io::Result<()> {
    let not_started = |port: &mut Port, why: String| {
        port.send(
            &Done {
                ended: Ended::NotStarted(why),
                wall_ns: 0,
                startup_ns: None,
                user_ns: 0,
                sys_ns: 0,
                max_rss_kib: 0,
                stdout_bytes: 0,
            }
            .encode(),
        )
    };
    let key = String::from_utf8_lossy(&x.key).into_owned();
    let path = cstr(&format!("{PROGS}/{key}"));
    let (argv, env) = match (c_list(&x.argv), c_list(&x.env)) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return not_started(port, e),
    };
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // the child writes its clock just before execve, and errno if execve fails
    let (stamp_r, stamp_w) = pipe()?;
    let null = std::fs::File::open("/dev/null")?;
    let start = monotonic_ns();
    let started = Instant::now();
    // SAFETY: the agent is single-threaded; the child only makes async-signal-safe calls on
    // memory prepared before the fork, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return not_started(port, format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child: raw system calls on descriptors and pointers made above.
        unsafe {
            libc::setpgid(0, 0);
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(out_w.as_raw_fd(), 1);
            libc::dup2(err_w.as_raw_fd(), 2);
            let t = monotonic_ns();
            libc::write(stamp_w.as_raw_fd(), (&t as *const u64).cast(), 8);
            libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(stamp_w.as_raw_fd(), (&errno as *const i32).cast(), 4);
            libc::_exit(127);
        }
    }
    drop((out_w, err_w, stamp_w, null));
    // SAFETY: pidfd_open of our unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let deadline = (x.timeout_ms > 0).then(|| started + Duration::from_millis(x.timeout_ms));
    let mut stamp = Vec::new();
    let mut open = [Some(out_r), Some(err_r), Some(stamp_r)];
    let mut timed_out = false;
    let mut exited = false;
    let cap = x.out_cap as usize;
    let mut stdout_bytes = 0usize;
    let mut err_tail: Vec<u8> = Vec::new();
    while !exited || open[0].is_some() || open[1].is_some() {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut which = Vec::new();
        for (i, fd) in open.iter().enumerate() {
            if let Some(fd) = fd {
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(i);
            }
        }
        if !exited {
            fds.push(libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            which.push(3);
        }
        let wait_ms = match deadline {
            _ if exited => 1000, // the program ended: what it forked gets a moment
            _ if timed_out => 100,
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis() as i32,
            None => -1,
        };
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            if exited {
                // descendants hold the pipes: they go with the run's process group
                // SAFETY: kill of the run's process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                open[0] = None;
                open[1] = None;
                continue;
            }
            timed_out = true;
            // SAFETY: kill of the run's process group and of the child itself.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
            continue;
        }
        for (p, &i) in fds.iter().zip(&which) {
            if p.revents == 0 {
                continue;
            }
            if i == 3 {
                exited = true;
                continue;
            }
            let fd = open[i].as_ref().expect("polled").as_raw_fd();
            let mut buf = [0u8; 4096];
            // SAFETY: buf is valid for its length.
            let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                open[i] = None;
                continue;
            }
            let got = &buf[..r as usize];
            match i {
                0 => {
                    // capped: what is past the cap is counted, not sent
                    let room = if cap == 0 {
                        got.len()
                    } else {
                        cap.saturating_sub(stdout_bytes).min(got.len())
                    };
                    stdout_bytes += got.len();
                    if room > 0 {
                        port.send(&proto::encode(proto::STDOUT, &[&got[..room]]))?;
                    }
                }
                1 if cap == 0 => port.send(&proto::encode(proto::STDERR, &[got]))?,
                1 => {
                    err_tail.extend_from_slice(got);
                    let excess = err_tail.len().saturating_sub(proto::ERR_TAIL);
                    err_tail.drain(..excess);
                }
                _ => stamp.extend_from_slice(got),
            }
        }
    }
    if !err_tail.is_empty() {
        port.send(&proto::encode(proto::STDERR, &[&err_tail]))?;
    }
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 of our child with valid pointers.
    unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall_ns = monotonic_ns() - start;
    // SAFETY: kill of whatever is left of the run's process group.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    // orphans of earlier runs were re-parented to init
    // SAFETY: waitpid with WNOHANG on any child.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    let startup_ns = (stamp.len() >= 8)
        .then(|| u64::from_ne_bytes(stamp[..8].try_into().expect("8 bytes")).saturating_sub(start));
    let ended = if stamp.len() >= 12 {
        let errno = i32::from_ne_bytes(stamp[8..12].try_into().expect("4 bytes"));
        Ended::NotStarted(format!("execve: {}", io::Error::from_raw_os_error(errno)))
    } else if timed_out {
        Ended::Timeout
    } else if libc::WIFSIGNALED(status) {
        Ended::Signal(libc::WTERMSIG(status))
    } else {
        Ended::Code(libc::WEXITSTATUS(status))
    };
    port.send(
        &Done {
            ended,
            wall_ns,
            startup_ns,
            user_ns: tv(ru.ru_utime),
            sys_ns: tv(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss.max(0) as u64,
            stdout_bytes: stdout_bytes as u64,
        }
        .encode(),
    )
}

fn power_off() -> ! {
    // SAFETY: sync and reboot have no memory preconditions; PID 1 may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot returns only on failure: PID 1 exiting panics the kernel, and QEMU's
    // -no-reboot turns that into an exit too
    std::process::exit(1);
}
