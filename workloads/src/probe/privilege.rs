//! Privilege probes: what only the host's root may do, each replaced by a permission check
//! that changes nothing (see the module documentation of `probe`).

use super::*;

/// The probes of this family.
pub(super) const PROBES: &[(&str, Impl)] = &[
    ("core_pattern", |_, _| {
        open_for_write("/proc/sys/kernel/core_pattern")
    }),
    ("release_agent", |_, a| {
        open_for_write(a.get("path").unwrap_or(""))
    }),
    ("mount", |_, _| mount()),
    ("mknod_block", |_, a| mknod_block(a)),
    ("dev_kvm", |_, _| verdict("open", open_str("/dev/kvm", 2))),
    ("dev_mem", |_, _| {
        verdict("open", open_str("/dev/mem", sys::O_RDONLY))
    }),
    ("init_module", |_, _| {
        permitted_unless_eperm(
            "init_module",
            call(nr::INIT_MODULE, [0, 0, c"".as_ptr() as usize, 0, 0, 0]),
        )
    }),
    ("ptrace_host", |_, a| ptrace_host(a)),
    ("open_by_handle", |_, _| open_by_handle()),
    // magic1 and magic2 are both wrong: the kernel checks CAP_SYS_BOOT, then the magic.
    ("reboot", |_, _| {
        permitted_unless_eperm("reboot", call(nr::REBOOT, [0, 0, 0, 0, 0, 0]))
    }),
    // nr_segments 0 would unload a loaded image: use 0xffff (> 16) and an invalid flag.
    ("kexec_load", |_, _| {
        permitted_unless_eperm(
            "kexec_load",
            call(nr::KEXEC_LOAD, [0, 0xffff, 0, 0x8000, 0, 0]),
        )
    }),
    ("raw_socket", |_, _| {
        verdict("socket", call(nr::SOCKET, [2, 3 | 0o2000000, 1, 0, 0, 0]))
    }),
    ("host_file", |_, a| host_file(a, "")),
    ("proc_root", |_, a| host_file(a, "root")),
];

fn open_str(path: &str, flags: usize) -> Result<usize, usize> {
    let c = CPath::new(&[path]).ok_or(22usize)?;
    let r = open(&c, flags);
    if let Ok(fd) = r {
        let _ = sys::close(fd);
    }
    r
}

/// For calls given arguments the kernel rejects after its capability check: EPERM means
/// contained, any other error means the check passed.
fn permitted_unless_eperm(what: &str, r: Result<usize, usize>) -> Report {
    match r {
        Err(1) => rep!(Contained, "{what}:EPERM"),
        Err(38) => rep!(Error, "{what}:ENOSYS_not_in_this_kernel"),
        Err(e) => rep!(Escaped, "{what}:{}_after_the_permission_check", errno(e)),
        Ok(v) => rep!(Error, "{what}:unexpectedly_succeeded:{v}"),
    }
}

fn open_for_write(path: &str) -> Report {
    match open_str(path, sys::O_WRONLY) {
        Ok(_) => rep!(Escaped, "open({path},O_WRONLY):ok_nothing_written"),
        Err(e) => verdict("open", Err(e)),
    }
}

fn mount() -> Report {
    // MS_MOVE of a source that does not exist: the kernel checks CAP_SYS_ADMIN (may_mount) and
    // only then looks the source up, so ENOENT means "permitted" and nothing can be moved.
    const MS_MOVE: usize = 8192;
    let src = c"/vbench-probe-no-such-mount-source";
    let r = call(
        nr::MOUNT,
        [
            src.as_ptr() as usize,
            c"/".as_ptr() as usize,
            0,
            MS_MOVE,
            0,
            0,
        ],
    );
    match r {
        Err(2) => rep!(Escaped, "mount(MS_MOVE):ENOENT_after_the_permission_check"),
        Err(e) => rep!(Contained, "mount(MS_MOVE):{}", errno(e)),
        Ok(_) => rep!(Error, "mount(MS_MOVE):unexpectedly_succeeded"),
    }
}

fn mknod_block(a: &Args<'_>) -> Report {
    let Some(p) = CPath::new(&[a.get("dir").unwrap_or(""), "/vbench-probe-blk"]) else {
        return rep!(Error, "path");
    };
    const S_IFBLK: usize = 0o060000;
    let dev = 7 << 8; // loop0, never opened
    match call(
        nr::MKNODAT,
        [sys::AT_FDCWD as usize, p.ptr(), S_IFBLK | 0o600, dev, 0, 0],
    ) {
        Ok(_) => {
            let removed = call(nr::UNLINKAT, [sys::AT_FDCWD as usize, p.ptr(), 0, 0, 0, 0]);
            rep!(
                Escaped,
                "mknod(b_7:0):ok,removed={}",
                if removed.is_ok() { "yes" } else { "NO" }
            )
        }
        Err(e @ (1 | 13 | 30)) => rep!(Contained, "mknod(b_7:0):{}", errno(e)),
        Err(e) => rep!(Error, "mknod(b_7:0):{}", errno(e)),
    }
}

fn ptrace_host(a: &Args<'_>) -> Report {
    let Some(pid) = a.get("host_pid").and_then(num) else {
        return rep!(Error, "bad_host_pid");
    };
    const PTRACE_SEIZE: usize = 0x4206;
    match call(nr::PTRACE, [PTRACE_SEIZE, pid as usize, 0, 0, 0, 0]) {
        Ok(_) => rep!(Escaped, "ptrace(SEIZE,{pid}):ok"),
        Err(e) => rep!(Contained, "ptrace(SEIZE,{pid}):{}", errno(e)),
    }
}

fn open_by_handle() -> Report {
    let Some(root) = CPath::new(&["/"]) else {
        return rep!(Error, "path");
    };
    let mount_fd = match open(&root, sys::O_RDONLY | 0o200000) {
        Ok(fd) => fd,
        Err(e) => return rep!(Contained, "open(/):{}", errno(e)),
    };
    // struct file_handle: handle_bytes, handle_type, then the handle.
    let mut fh = [0u32; 2 + 32];
    fh[0] = 128;
    let mut mount_id = 0i32;
    let how = match call(
        nr::NAME_TO_HANDLE_AT,
        [
            sys::AT_FDCWD as usize,
            root.ptr(),
            fh.as_mut_ptr() as usize,
            &mut mount_id as *mut i32 as usize,
            0,
            0,
        ],
    ) {
        Ok(_) => "name_to_handle_at",
        Err(_) => {
            // The shocker forgery: an ext4 FILEID_INO32_GEN handle of inode 2, the root.
            fh = [0; 34];
            fh[0] = 8;
            fh[1] = 1;
            fh[2] = 2;
            "forged_ino2"
        }
    };
    let r = call(
        nr::OPEN_BY_HANDLE_AT,
        [
            mount_fd,
            fh.as_ptr() as usize,
            sys::O_RDONLY | sys::O_CLOEXEC,
            0,
            0,
            0,
        ],
    );
    let _ = sys::close(mount_fd);
    match r {
        Ok(fd) => {
            let _ = sys::close(fd);
            rep!(Escaped, "open_by_handle_at({how}):ok")
        }
        Err(e) => rep!(Contained, "open_by_handle_at({how}):{}", errno(e)),
    }
}

fn host_file(a: &Args<'_>, via: &str) -> Report {
    let path = a.get("path").unwrap_or("");
    let magic = a.get("magic").unwrap_or("");
    let mut pidbuf = Text::new();
    if !via.is_empty() {
        let _ = write!(pidbuf, "/proc/{}/root", a.get("host_pid").unwrap_or("0"));
    }
    let Some(p) = CPath::new(&[pidbuf.as_str(), path]) else {
        return rep!(Error, "path_too_long");
    };
    let mut b = [0u8; 256];
    match read_file(&p, &mut b) {
        Ok(t) if t.trim_ascii() == magic.as_bytes() => {
            rep!(Escaped, "read({}{path}):magic", pidbuf.as_str())
        }
        Ok(_) => rep!(Contained, "read({}{path}):other_content", pidbuf.as_str()),
        Err(e) => rep!(Contained, "read({}{path}):{}", pidbuf.as_str(), errno(e)),
    }
}
