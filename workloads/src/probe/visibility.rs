//! Visibility probes: seeing or reaching something of the host (its processes, hostname,
//! mounts, network, SysV IPC, user and other namespaces, clocks).

use super::*;

/// The probes of this family.
pub(super) const PROBES: &[(&str, Impl)] = &[
    ("proc_list", |_, a| proc_list(a)),
    ("signal_host", |_, a| signal_host(a)),
    ("hostname", |_, a| hostname(a)),
    ("mounts", |_, a| mounts(a)),
    ("tcp_loopback", |_, a| tcp_loopback(a)),
    ("net_ifaces", |_, a| net_ifaces(a)),
    ("sysv_shm", |_, a| sysv_shm(a)),
    ("host_root", |_, _| host_root()),
    ("cgroup_ns", |_, a| same_ns(a, "cgroup")),
    ("pid_ns", |_, a| same_ns(a, "pid")),
    ("ipc_ns", |_, a| same_ns(a, "ipc")),
    ("time_ns", |_, a| time_ns(a)),
];

fn proc_list(a: &Args<'_>) -> Report {
    let host = a.get("host_pid").unwrap_or("");
    let Some(dir) = CPath::new(&["/proc"]) else {
        return rep!(Error, "path");
    };
    let fd = match open(&dir, sys::O_RDONLY | 0o200000) {
        Ok(fd) => fd,
        Err(e) => return rep!(Contained, "open_/proc:{}", errno(e)),
    };
    let (mut pids, mut seen) = (0u64, false);
    let mut buf = [0u8; 4096];
    loop {
        let n = match call(
            nr::GETDENTS64,
            [fd, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        ) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = sys::close(fd);
                return rep!(Error, "getdents64:{}", errno(e));
            }
        };
        let mut off = 0;
        while off + 19 < n {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
                pids += 1;
                seen |= name == host.as_bytes();
            }
            off += reclen.max(1);
        }
    }
    let _ = sys::close(fd);
    if seen {
        rep!(Escaped, "pids={pids},host_pid_{host}_listed")
    } else {
        rep!(Contained, "pids={pids},host_pid_{host}_absent")
    }
}

fn signal_host(a: &Args<'_>) -> Report {
    let Some(pid) = a.get("host_pid").and_then(num) else {
        return rep!(Error, "bad_host_pid");
    };
    // SIGCONT: delivered like any signal, but a sleeping process just goes on sleeping.
    match call(nr::KILL, [pid as usize, 18, 0, 0, 0, 0]) {
        Ok(_) => rep!(Escaped, "kill({pid},SIGCONT):ok"),
        Err(e) => rep!(Contained, "kill({pid},SIGCONT):{}", errno(e)),
    }
}

fn hostname(a: &Args<'_>) -> Report {
    let mut u = [0u8; 6 * 65];
    if let Err(e) = call(nr::UNAME, [u.as_mut_ptr() as usize, 0, 0, 0, 0, 0]) {
        return rep!(Error, "uname:{}", errno(e));
    }
    let node = &u[65..130];
    let node = &node[..node.iter().position(|&b| b == 0).unwrap_or(65)];
    let node = core::str::from_utf8(node).unwrap_or("?");
    if Some(node) == a.get("hostname") {
        rep!(Escaped, "nodename={node}")
    } else {
        rep!(Contained, "nodename={node}")
    }
}

/// Maps a file of at most 1 MiB: /proc files are read in full.
fn big_buf() -> &'static mut [u8] {
    crate::alloc(MIB)
}

fn mounts(a: &Args<'_>) -> Report {
    let mnt = a.get("mnt").unwrap_or("");
    let Some(p) = CPath::new(&["/proc/self/mountinfo"]) else {
        return rep!(Error, "path");
    };
    let buf = big_buf();
    let text = match read_file(&p, buf) {
        Ok(t) => core::str::from_utf8(t).unwrap_or(""),
        Err(e) => return rep!(Contained, "mountinfo:{}", errno(e)),
    };
    let n = text.lines().count();
    if text.lines().any(|l| l.split(' ').nth(4) == Some(mnt)) {
        rep!(Escaped, "mounts={n},host_mount_{mnt}_visible")
    } else {
        rep!(Contained, "mounts={n},host_mount_{mnt}_absent")
    }
}

fn tcp_loopback(a: &Args<'_>) -> Report {
    let Some(port) = a.get("port").and_then(num).filter(|p| *p < 65536) else {
        return rep!(Error, "bad_port");
    };
    let fd = match call(nr::SOCKET, [2, 1 | 0o2000000, 0, 0, 0, 0]) {
        Ok(fd) => fd,
        Err(e) => return rep!(Contained, "socket:{}", errno(e)),
    };
    let mut sa = [0u8; 16];
    sa[0..2].copy_from_slice(&2u16.to_ne_bytes());
    sa[2..4].copy_from_slice(&(port as u16).to_be_bytes());
    sa[4..8].copy_from_slice(&[127, 0, 0, 1]);
    let r = call(nr::CONNECT, [fd, sa.as_ptr() as usize, 16, 0, 0, 0]);
    let r = match r {
        Ok(_) => {
            let _ = sys::write(fd, b"vbench-probe\n");
            rep!(Escaped, "connect(127.0.0.1:{port}):ok")
        }
        Err(e) => rep!(Contained, "connect(127.0.0.1:{port}):{}", errno(e)),
    };
    let _ = sys::close(fd);
    r
}

fn net_ifaces(a: &Args<'_>) -> Report {
    let want = a.get("iface").unwrap_or("");
    let Some(p) = CPath::new(&["/proc/net/dev"]) else {
        return rep!(Error, "path");
    };
    let buf = big_buf();
    let text = match read_file(&p, buf) {
        Ok(t) => core::str::from_utf8(t).unwrap_or(""),
        Err(e) => return rep!(Contained, "/proc/net/dev:{}", errno(e)),
    };
    let mut names = Text::new();
    let mut seen = false;
    for l in text.lines().skip(2) {
        if let Some((name, _)) = l.split_once(':') {
            let name = name.trim();
            let _ = write!(names, "{}{name}", if names.len == 0 { "" } else { "," });
            seen |= name == want;
        }
    }
    if seen {
        rep!(Escaped, "ifaces={}", names.as_str())
    } else {
        rep!(Contained, "ifaces={}", names.as_str())
    }
}

fn sysv_shm(a: &Args<'_>) -> Report {
    let (Some(id), Some(magic)) = (a.get("shm_id").and_then(num), a.get("magic").and_then(num))
    else {
        return rep!(Error, "bad_shm_id_or_magic");
    };
    const SHM_RDONLY: usize = 0o10000;
    let addr = match call(nr::SHMAT, [id as usize, 0, SHM_RDONLY, 0, 0, 0]) {
        Ok(p) => p,
        Err(e) => return rep!(Contained, "shmat({id}):{}", errno(e)),
    };
    // SAFETY: shmat mapped the segment (at least one page, the harness made 4096 bytes) at
    // addr, readable; the read is volatile because another process may write it.
    let v = unsafe { (addr as *const u64).read_volatile() };
    let _ = call(nr::SHMDT, [addr, 0, 0, 0, 0, 0]);
    if v == magic {
        rep!(Escaped, "shmat({id}):magic_read")
    } else {
        rep!(Contained, "shmat({id}):other_segment_{v:x}")
    }
}

fn field<'t>(text: &'t str, key: &str) -> &'t str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or("")
}

fn host_root() -> Report {
    let (Some(st), Some(map)) = (
        CPath::new(&["/proc/self/status"]),
        CPath::new(&["/proc/self/uid_map"]),
    ) else {
        return rep!(Error, "path");
    };
    let (mut b1, mut b2) = ([0u8; 4096], [0u8; 512]);
    let status = match read_file(&st, &mut b1) {
        Ok(t) => core::str::from_utf8(t).unwrap_or(""),
        Err(e) => return rep!(Contained, "status:{}", errno(e)),
    };
    let map = match read_file(&map, &mut b2) {
        Ok(t) => core::str::from_utf8(t).unwrap_or(""),
        Err(e) => return rep!(Contained, "uid_map:{}", errno(e)),
    };
    let uid = field(status, "Uid:")
        .split_whitespace()
        .next()
        .unwrap_or("?");
    let cap = field(status, "CapEff:");
    let caps = u64::from_str_radix(cap, 16).unwrap_or(0);
    let mut m = map.split_whitespace();
    let (m0, m1, m2) = (m.next(), m.next(), m.next());
    let initial_ns = m0 == Some("0") && m1 == Some("0") && m2 == Some("4294967295");
    let sys_admin = caps & (1 << 21) != 0;
    let detail = format_args!(
        "uid={uid},capeff={cap},uid_map={}:{}:{}",
        m0.unwrap_or("-"),
        m1.unwrap_or("-"),
        m2.unwrap_or("-")
    );
    if uid == "0" && initial_ns && sys_admin {
        report(ProbeOutcome::Escaped, detail)
    } else {
        report(ProbeOutcome::Contained, detail)
    }
}

/// The inode of /proc/self/ns/<ns>, from its link text `name:[inode]`.
fn ns_inode(ns: &str) -> Result<u64, usize> {
    let p = CPath::new(&["/proc/self/ns/", ns]).ok_or(22usize)?;
    let mut b = [0u8; 64];
    let n = call(
        nr::READLINK,
        [p.ptr(), b.as_mut_ptr() as usize, b.len(), 0, 0, 0],
    )?;
    let t = core::str::from_utf8(&b[..n]).unwrap_or("");
    t.split_once('[')
        .and_then(|(_, r)| r.strip_suffix(']'))
        .and_then(num)
        .ok_or(22)
}

fn same_ns(a: &Args<'_>, ns: &str) -> Report {
    let host = a.get("ns").and_then(num).unwrap_or(0);
    let mine = match ns_inode(ns) {
        Ok(i) => i,
        Err(e) => return rep!(Contained, "readlink_ns_{ns}:{}", errno(e)),
    };
    let mut extra = Text::new();
    if ns == "cgroup" {
        let mut b = [0u8; 2048];
        if let Some(p) = CPath::new(&["/proc/self/cgroup"]) {
            if let Ok(t) = read_file(&p, &mut b) {
                let first = core::str::from_utf8(t).unwrap_or("").lines().next();
                let _ = write!(extra, ",cgroup={}", first.unwrap_or(""));
            }
        }
    }
    if mine == host {
        rep!(Escaped, "{ns}:[{mine}]_is_the_host's{}", extra.as_str())
    } else {
        rep!(
            Contained,
            "{ns}:[{mine}]_host_{ns}:[{host}]{}",
            extra.as_str()
        )
    }
}

fn time_ns(a: &Args<'_>) -> Report {
    let host = a.get("boot_s").and_then(num).unwrap_or(0) as i64;
    let boot = match sys::clock_gettime(7) {
        Ok(t) => (t / 1_000_000_000) as i64,
        Err(e) => return rep!(Error, "clock_gettime(BOOTTIME):{}", errno(e.errno)),
    };
    let d = boot - host;
    if d.abs() < 60 {
        rep!(Escaped, "boottime_minus_host={d}s")
    } else {
        rep!(Contained, "boottime_minus_host={d}s")
    }
}
