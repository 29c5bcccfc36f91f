//! One booted guest: the QEMU process, the agent's serial channel (QEMU's stdin and stdout),
//! and the kernel console (a memfd, read back for errors). Every wait has a deadline, watches
//! the cancellation flag and notices QEMU's death; QEMU dies with vbench (PR_SET_PDEATHSIG)
//! and is powered off, or killed, when the guest is dropped.

use super::proto;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What went wrong with a guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// QEMU exited or was killed.
    #[error("QEMU {status} while {when}{detail}")]
    Died {
        /// How it ended.
        status: String,
        /// While doing what.
        when: String,
        /// QEMU's own messages and the console's last lines.
        detail: String,
    },
    /// A deadline passed.
    #[error("{0}")]
    Timeout(String),
    /// The harness asked to stop.
    #[error("interrupted")]
    Cancelled,
    /// The agent said something that is not the protocol, or refused a request.
    #[error("the guest agent: {0}")]
    Protocol(String),
    /// Starting or talking to QEMU failed on the host.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// How to start a guest.
#[derive(Debug, Clone)]
pub struct Boot {
    /// qemu-system-x86_64.
    pub qemu: PathBuf,
    /// The kernel (bzImage).
    pub kernel: PathBuf,
    /// The initramfs (cpio newc).
    pub initramfs: Vec<u8>,
    /// `-accel` and `-cpu` arguments.
    pub accel_args: Vec<String>,
    /// Guest RAM, MiB.
    pub mem_mib: u64,
    /// How long the guest may take to reach the agent's hello.
    pub timeout: Duration,
}

/// What the agent said when it came up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// The guest kernel's release.
    pub release: String,
    /// Online CPUs.
    pub cpus: u64,
    /// MemTotal, KiB.
    pub mem_kib: u64,
}

/// A running guest.
#[derive(Debug)]
pub struct Guest {
    child: Option<Child>,
    to_guest: OwnedFd,
    from_guest: OwnedFd,
    reader: proto::Reader,
    console: File,
    qemu_err: File,
    /// What the agent said.
    pub hello: Hello,
    /// QEMU's start to the agent's hello.
    pub boot: Duration,
}

/// What a frame handler wants next.
pub enum Flow {
    /// More frames.
    More,
    /// Done: stop reading.
    Stop,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GuestError {
    let what = what.into();
    move |source| GuestError::Io { what, source }
}

fn memfd(name: &std::ffi::CStr) -> Result<File, GuestError> {
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io_err("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl with integer arguments on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

impl Guest {
    /// Starts QEMU and waits for the agent's hello.
    pub fn boot(b: &Boot, cancel: Option<&AtomicBool>) -> Result<Guest, GuestError> {
        use std::io::Write;
        let mut initrd = memfd(c"vbench-initramfs")?;
        initrd
            .write_all(&b.initramfs)
            .map_err(io_err("writing the initramfs"))?;
        let console = memfd(c"vbench-vm-console")?;
        let qemu_err = memfd(c"vbench-qemu-stderr")?;
        let (initrd_fd, console_fd) = (initrd.as_raw_fd(), console.as_raw_fd());
        let mut cmd = Command::new(&b.qemu);
        cmd.args(&b.accel_args)
            .args(["-m", &b.mem_mib.to_string(), "-smp", "1"])
            .args(["-display", "none", "-monitor", "none", "-nodefaults"])
            .args(["-no-user-config", "-no-reboot"])
            .arg("-kernel")
            .arg(&b.kernel)
            .args(["-initrd", &format!("/proc/self/fd/{initrd_fd}")])
            .args(["-append", "console=ttyS0 quiet panic=-1 rdinit=/init"])
            .args([
                "-chardev",
                &format!("file,id=con,path=/proc/self/fd/{console_fd}"),
            ])
            .args(["-serial", "chardev:con"])
            .args(["-chardev", "stdio,id=agent,signal=off"])
            .args(["-serial", "chardev:agent"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(
                qemu_err
                    .try_clone()
                    .map_err(io_err("duplicating a memfd"))?,
            )
            // ^C at the terminal reaches vbench, which stops the guest, and not QEMU itself
            .process_group(0);
        // SAFETY: getpid has no preconditions (read before the fork, for the child's check).
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the child between fork and exec and makes only
        // async-signal-safe calls (fcntl, prctl, getppid, _exit); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // the initramfs and console memfds are for QEMU: drop close-on-exec
                for fd in [initrd_fd, console_fd] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // QEMU dies with vbench, even when vbench is SIGKILLed
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("starting {}", b.qemu.display())))?;
        drop(initrd);
        let to_guest: OwnedFd = child.stdin.take().expect("piped").into();
        let from_guest: OwnedFd = child.stdout.take().expect("piped").into();
        set_nonblocking(&to_guest);
        set_nonblocking(&from_guest);
        let mut g = Guest {
            child: Some(child),
            to_guest,
            from_guest,
            reader: proto::Reader::default(),
            console,
            qemu_err,
            hello: Hello::default(),
            boot: Duration::ZERO,
        };
        let deadline = start + b.timeout;
        let mut hello = None;
        g.exchange(
            &[],
            Some(deadline),
            cancel,
            "booting",
            true,
            |kind, payload| {
                if kind != proto::HELLO {
                    return Err(format!("the first frame is {kind:#04x}, not hello"));
                }
                let f = proto::fields(&payload)?;
                let text = |i: usize| f.get(i).map(|v| String::from_utf8_lossy(v).into_owned());
                hello = Some(Hello {
                    release: text(0).unwrap_or_default(),
                    cpus: text(1).and_then(|v| v.parse().ok()).unwrap_or(0),
                    mem_kib: text(2).and_then(|v| v.parse().ok()).unwrap_or(0),
                });
                Ok(Flow::Stop)
            },
        )
        .map_err(|e| match e {
            GuestError::Timeout(_) => GuestError::Timeout(format!(
                "the guest did not reach vbench's init within {:.0?} (kernel {}){}",
                b.timeout,
                b.kernel.display(),
                g.console_tail()
            )),
            e => e,
        })?;
        g.hello = hello.unwrap_or_default();
        g.boot = start.elapsed();
        Ok(g)
    }

    /// Whether QEMU still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `out`, then hands each frame that arrives to `on_frame` until it says stop.
    /// `deadline` bounds the whole exchange; `cancel` and QEMU's death end it early.
    pub fn exchange(
        &mut self,
        out: &[u8],
        deadline: Option<Instant>,
        cancel: Option<&AtomicBool>,
        when: &str,
        skip_noise: bool,
        mut on_frame: impl FnMut(u8, Vec<u8>) -> Result<Flow, String>,
    ) -> Result<(), GuestError> {
        let mut sent = 0;
        loop {
            loop {
                if skip_noise {
                    self.reader.skip_noise();
                }
                match self.reader.next_frame() {
                    Ok(Some((kind, payload))) => {
                        if kind == proto::FAIL {
                            let why = proto::fields(&payload)
                                .ok()
                                .and_then(|f| f.into_iter().next())
                                .unwrap_or_default();
                            return Err(GuestError::Protocol(
                                String::from_utf8_lossy(&why).into_owned(),
                            ));
                        }
                        match on_frame(kind, payload).map_err(GuestError::Protocol)? {
                            Flow::More => continue,
                            Flow::Stop => return Ok(()),
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(GuestError::Protocol(e)),
                }
            }
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                self.kill();
                return Err(GuestError::Cancelled);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(GuestError::Timeout(format!("{when}: no answer in time")));
            }
            // wake at least every 50 ms for the cancellation flag
            let wait = deadline
                .map(|d| d - now)
                .unwrap_or(Duration::MAX)
                .min(Duration::from_millis(50));
            let mut fds = vec![libc::pollfd {
                fd: self.from_guest.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if sent < out.len() {
                fds.push(libc::pollfd {
                    fd: self.to_guest.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                });
            }
            // SAFETY: fds is a valid array of pollfd.
            let n = unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    wait.as_millis().max(1) as i32,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_err("poll on QEMU's pipes")(e));
            }
            if fds.len() > 1 && fds[1].revents != 0 {
                // SAFETY: writing from a valid slice to a descriptor we own.
                let w = unsafe {
                    libc::write(
                        self.to_guest.as_raw_fd(),
                        out[sent..].as_ptr().cast(),
                        out.len() - sent,
                    )
                };
                if w > 0 {
                    sent += w as usize;
                } else if w < 0
                    && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
                {
                    return Err(self.died(when));
                }
            }
            if fds[0].revents != 0 {
                let mut buf = [0u8; 65536];
                // SAFETY: reading into a valid buffer from a descriptor we own.
                let r = unsafe {
                    libc::read(
                        self.from_guest.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if r > 0 {
                    self.reader.push(&buf[..r as usize]);
                } else if r == 0
                    || std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
                {
                    return Err(self.died(when));
                }
            }
        }
    }

    /// The error for QEMU gone (reaped here), with its messages and the console's tail.
    fn died(&mut self, when: &str) -> GuestError {
        let status = match self.child.as_mut().map(|c| {
            // its stdout closed: it is exiting; give it a moment
            let until = Instant::now() + Duration::from_secs(2);
            loop {
                match c.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => break None,
                }
            }
        }) {
            Some(Some(s)) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(c), _) => format!("exited with status {c}"),
                    (_, Some(sig)) => format!("was killed by signal {sig}"),
                    _ => format!("ended ({s})"),
                }
            }
            _ => "closed the guest's channel".to_string(),
        };
        let mut detail = String::new();
        let err = read_all(&mut self.qemu_err);
        if !err.trim().is_empty() {
            detail.push_str(&format!("; QEMU said: {}", last_lines(&err, 5)));
        }
        detail.push_str(&self.console_tail());
        self.kill();
        GuestError::Died {
            status,
            when: when.to_string(),
            detail,
        }
    }

    /// The kernel console's last lines, as `; the console's last lines: ...`, or nothing.
    pub fn console_tail(&mut self) -> String {
        let text = read_all(&mut self.console);
        let text = text.replace('\r', "");
        let tail = last_lines(&text, 8);
        if tail.trim().is_empty() {
            String::new()
        } else {
            format!("; the guest console's last lines:\n{tail}")
        }
    }

    /// Kills QEMU and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks the agent to power off and waits for QEMU to go (killed after `grace`).
    pub fn halt(&mut self, grace: Duration) {
        if self.alive() {
            let frame = proto::encode(proto::HALT, &[]);
            // SAFETY: writing from a valid slice to a descriptor we own.
            unsafe {
                libc::write(
                    self.to_guest.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                )
            };
            let until = Instant::now() + grace;
            while self.alive() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
    }

    /// QEMU's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.halt(Duration::from_secs(3));
    }
}

fn read_all(f: &mut File) -> String {
    let mut s = Vec::new();
    let _ = f.rewind();
    let _ = f.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether `path` is a Linux kernel image QEMU can boot directly (x86 boot protocol: `HdrS` at
/// offset 0x202).
pub fn check_kernel(path: &Path) -> Result<(), String> {
    let mut f =
        File::open(path).map_err(|e| format!("the guest kernel {}: {e}", path.display()))?;
    let mut head = [0u8; 0x206];
    f.read_exact(&mut head).map_err(|_| {
        format!(
            "the guest kernel {} is too short to be a Linux kernel image",
            path.display()
        )
    })?;
    if &head[0x202..0x206] != b"HdrS" {
        return Err(format!(
            "{} is not a Linux kernel image (no x86 boot header `HdrS` at 0x202; give a bzImage \
             such as /boot/vmlinuz-*)",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_kernel_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinuz");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let e = check_kernel(&p).unwrap_err();
        assert!(
            e.contains("not a Linux kernel image") && e.contains("vmlinuz"),
            "{e}"
        );
        std::fs::write(&p, b"short").unwrap();
        assert!(check_kernel(&p).unwrap_err().contains("too short"));
        let e = check_kernel(&dir.path().join("none")).unwrap_err();
        assert!(e.contains("none"), "{e}");
        let mut k = vec![0u8; 4096];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::write(&p, k).unwrap();
        assert!(check_kernel(&p).is_ok());
    }

    #[test]
    fn only_the_last_lines_are_kept() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("", 2), "");
    }
}
