//! The children of a vbench that a SIGKILL of it leaves behind, found by the next vbench.
//!
//! Every child gets PR_SET_PDEATHSIG, but the children of that child (a shell's background
//! job) do not. So while a child runs, its process group is recorded in a small file of this
//! vbench's own, `<dir>/<pid>.pgids` ([`dir`]): a header with vbench's pid, start time and
//! boot id, then one fixed-size record per running child (process group, pid, an upper bound
//! of its start time), blanked when the child is reaped; the file is removed when vbench ends
//! ([`close`]). At start-up [`sweep`] reads the files whose vbench is gone, SIGKILLs the
//! processes still in the recorded groups that started after that vbench did (so a reused pid
//! is not mistaken for them), and removes the files.
//!
//! Recording costs one `pwrite` when a child starts and one when it is reaped (no allocation,
//! no read of /proc); a failure of this bookkeeping never fails a run: it is reported once.
//!
//! Only groups that vbench owns are recorded: a child that leads its own group (captured
//! runs), or vbench's own group when vbench leads it (`exec` started by a shell with job
//! control). A child left in the group of whoever started vbench is not recorded: that group
//! holds other processes, and killing it would kill them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// Environment variable that overrides [`dir`].
pub const DIR_ENV: &str = "VBENCH_RUNTIME_DIR";
/// Bytes of the header line.
const HEADER: usize = 128;
/// Bytes of one record line: `pgid pid ticks`, space-padded, newline-terminated.
const RECORD: usize = 44;

/// Where the registry files are: `$VBENCH_RUNTIME_DIR`, else `/run/vbench` for root, else
/// `$XDG_RUNTIME_DIR/vbench`, else `/tmp/vbench-<uid>`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DIR_ENV) {
        return d.into();
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/vbench");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(x) if !x.is_empty() => Path::new(&x).join("vbench"),
        _ => PathBuf::from(format!("/tmp/vbench-{uid}")),
    }
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 5: process group.
    pub pgrp: i32,
    /// Field 22: start time, clock ticks after boot.
    pub start_ticks: u64,
    /// Field 3 is `Z`: exited, not yet reaped.
    pub zombie: bool,
}

/// Reads `/proc/<pid>/stat` (into a stack buffer); `None` when there is no such process.
pub fn stat(pid: i32) -> Option<Stat> {
    let mut path = [0u8; 32];
    let mut w = &mut path[..];
    write!(w, "/proc/{pid}/stat").ok()?;
    let len = 32 - w.len();
    let path = std::str::from_utf8(&path[..len]).ok()?;
    let mut buf = [0u8; 1024];
    let mut f = File::open(path).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    parse_stat(std::str::from_utf8(&buf[..n]).ok()?)
}

/// Parses the text of `/proc/<pid>/stat` (the command name, in parentheses, may hold spaces
/// and parentheses: the fields start after the last `)`).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace(); // field 3 onwards
    let state = f.next()?;
    let pgrp = f.nth(1)?.parse().ok()?; // field 5
    let start_ticks = f.nth(16)?.parse().ok()?; // field 22
    Some(Stat {
        pgrp,
        start_ticks,
        zombie: state == "Z",
    })
}

/// `/proc/sys/kernel/random/boot_id`, trimmed.
pub fn boot_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(s.trim().to_string())
}

/// Whether process `pid` exists and started at `start_ticks` (not a later process that
/// reuses its pid).
pub fn alive(pid: u32, start_ticks: u64) -> bool {
    stat(pid as i32).is_some_and(|s| s.start_ticks == start_ticks && !s.zombie)
}

/// Clock ticks since boot now: an upper bound of the start time of a process that exists.
fn now_ticks(tck: u64) -> u64 {
    // nix's clock_gettime needs its `time` feature, which this crate does not enable: libc.
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer (the vDSO: no syscall).
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return u64::MAX;
    }
    t.tv_sec.max(0) as u64 * tck + t.tv_nsec.max(0) as u64 * tck / 1_000_000_000
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

struct Registry {
    owner: u32,
    tck: u64,
    path: PathBuf,
    file: File,
    /// Which record slots are in use.
    slots: Mutex<Vec<bool>>,
}

static REGISTRY: OnceLock<Option<Registry>> = OnceLock::new();
static WARNED: AtomicBool = AtomicBool::new(false);

fn warn_once(what: &str, e: &dyn std::fmt::Display) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "vbench: warning: {what}: {e}; children that outlive a killed vbench will not be \
             found by the next one"
        );
    }
}

fn open() -> Option<Registry> {
    let owner = std::process::id();
    let dir = dir();
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir);
    if let Err(e) = made {
        warn_once(&format!("cannot create {}", dir.display()), &e);
        return None;
    }
    let path = dir.join(format!("{owner}.pgids"));
    let header = format!(
        "vbench {owner} {} {}",
        stat(owner as i32).map_or(0, |s| s.start_ticks),
        boot_id().unwrap_or_default()
    );
    let mut line = [b' '; HEADER];
    line[HEADER - 1] = b'\n';
    let n = header.len().min(HEADER - 1);
    line[..n].copy_from_slice(&header.as_bytes()[..n]);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|f| f.write_all_at(&line, 0).map(|()| f));
    match file {
        Ok(file) => Some(Registry {
            owner,
            tck: clk_tck(),
            path,
            file,
            slots: Mutex::new(Vec::new()),
        }),
        Err(e) => {
            warn_once(&format!("cannot write {}", path.display()), &e);
            None
        }
    }
}

/// Creates this vbench's registry file now (else at the first child), so that the first
/// measured run does not pay for it.
pub fn init() {
    REGISTRY.get_or_init(open);
}

/// A child's record; dropping it (after the child is reaped) blanks the record.
#[derive(Debug)]
#[must_use = "the record is blanked when this is dropped"]
pub struct Entry(Option<usize>);

/// Records child `pid` (just spawned, not reaped) when its process group is one vbench owns.
pub fn register(pid: libc::pid_t) -> Entry {
    let Some(r) = REGISTRY.get_or_init(open) else {
        return Entry(None);
    };
    if std::process::id() != r.owner {
        return Entry(None); // a forked copy of vbench: the file is its parent's
    }
    let Ok(pgid) = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))) else {
        return Entry(None);
    };
    let pgid = pgid.as_raw();
    if pgid != pid && pgid as u32 != r.owner {
        return Entry(None); // the group of whoever started vbench
    }
    let ticks = now_ticks(r.tck);
    let slot = {
        let mut s = r.slots.lock().unwrap_or_else(|e| e.into_inner());
        let i = s.iter().position(|used| !used).unwrap_or(s.len());
        if i == s.len() {
            s.push(true);
        } else {
            s[i] = true;
        }
        i
    };
    let mut rec = [b' '; RECORD];
    rec[RECORD - 1] = b'\n';
    let _ = write!(&mut rec[..RECORD - 1], "{pgid} {pid} {ticks}");
    match r.file.write_all_at(&rec, offset(slot)) {
        Ok(()) => Entry(Some(slot)),
        Err(e) => {
            warn_once(&format!("cannot write {}", r.path.display()), &e);
            free(r, slot);
            Entry(None)
        }
    }
}

fn offset(slot: usize) -> u64 {
    (HEADER + slot * RECORD) as u64
}

fn free(r: &Registry, slot: usize) {
    let mut s = r.slots.lock().unwrap_or_else(|e| e.into_inner());
    s[slot] = false;
}

impl Drop for Entry {
    fn drop(&mut self) {
        let (Some(slot), Some(Some(r))) = (self.0, REGISTRY.get()) else {
            return;
        };
        let mut blank = [b' '; RECORD];
        blank[RECORD - 1] = b'\n';
        if let Err(e) = r.file.write_all_at(&blank, offset(slot)) {
            warn_once(&format!("cannot write {}", r.path.display()), &e);
        }
        free(r, slot);
    }
}

/// Removes this vbench's registry file (at its normal end).
pub fn close() {
    if let Some(Some(r)) = REGISTRY.get() {
        if std::process::id() == r.owner {
            let _ = std::fs::remove_file(&r.path);
        }
    }
}

/// What [`sweep`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Processes killed, with the pid of the dead vbench that left them.
    pub killed: Vec<(i32, u32)>,
    /// Registry files removed.
    pub files: usize,
}

/// A record of a dead vbench's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    pgid: i32,
    child: i32,
    ticks: u64,
}

/// A parsed registry file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    pid: u32,
    start_ticks: u64,
    boot_id: String,
    records: Vec<Record>,
}

fn parse(text: &str) -> Option<Parsed> {
    let mut lines = text.lines();
    let mut h = lines.next()?.split_ascii_whitespace();
    if h.next()? != "vbench" {
        return None;
    }
    let pid = h.next()?.parse().ok()?;
    let start_ticks = h.next()?.parse().ok()?;
    let boot_id = h.next().unwrap_or("").to_string();
    let records = lines
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            Some(Record {
                pgid: f.next()?.parse().ok()?,
                child: f.next()?.parse().ok()?,
                ticks: f.next()?.parse().ok()?,
            })
        })
        .collect();
    Some(Parsed {
        pid,
        start_ticks,
        boot_id,
        records,
    })
}

/// Whether process `pid` (with `st`) is a survivor of `rec`, recorded by the dead vbench `v`.
fn survivor(v: &Parsed, rec: &Record, pid: i32, st: &Stat) -> bool {
    if st.pgrp != rec.pgid || st.zombie || st.start_ticks < v.start_ticks {
        return false;
    }
    if pid == rec.pgid {
        // the group's leader: the recorded child itself (vbench's own pid is not alive)
        return pid == rec.child && st.start_ticks <= rec.ticks;
    }
    // A pid that still names a process group is never handed out again, so while the group
    // has members its leader's pid is the recorded one's or nobody's.
    match stat(rec.pgid) {
        None => true,
        Some(leader) => rec.pgid == rec.child && leader.start_ticks <= rec.ticks,
    }
}

/// Kills the survivors recorded by every vbench that is gone and removes their files; cheap
/// when there is nothing (one directory read).
pub fn sweep() -> Swept {
    let mut out = Swept::default();
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return out;
    };
    let me = std::process::id();
    let mut dead: Vec<(PathBuf, Parsed)> = Vec::new();
    let mut boot: Option<Option<String>> = None;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".pgids"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let Some(p) = parse(&text) else {
            let _ = std::fs::remove_file(e.path());
            out.files += 1;
            continue;
        };
        let this_boot = boot.get_or_insert_with(boot_id);
        let same_boot = this_boot.as_deref().is_none_or(|b| b == p.boot_id);
        if same_boot && alive(p.pid, p.start_ticks) {
            continue;
        }
        if same_boot && !p.records.is_empty() {
            dead.push((e.path(), p));
        } else {
            let _ = std::fs::remove_file(e.path());
            out.files += 1;
        }
    }
    if dead.is_empty() {
        return out;
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for e in procs.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Some(st) = stat(pid) else {
                continue;
            };
            let by = dead
                .iter()
                .find(|(_, v)| v.records.iter().any(|r| survivor(v, r, pid, &st)));
            if let Some((_, v)) = by {
                let target = nix::unistd::Pid::from_raw(pid);
                if nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL).is_ok() {
                    out.killed.push((pid, v.pid));
                }
            }
        }
    }
    for (path, _) in dead {
        let _ = std::fs::remove_file(path);
        out.files += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_the_command_name() {
        let text = "42 (a b) c) S 1 40 40 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.pgrp, 40);
        assert_eq!(s.start_ticks, 123456);
        assert!(!s.zombie);
        assert!(parse_stat("42 (x) Z 1 2").is_none(), "too short");
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(alive(std::process::id(), me.start_ticks));
        assert!(
            !alive(std::process::id(), me.start_ticks + 1),
            "a reused pid"
        );
        assert!(me.start_ticks <= now_ticks(clk_tck()));
    }

    #[test]
    fn files_are_parsed_and_blank_records_skipped() {
        let mut text = String::from("vbench 7 100 abc");
        text.push_str(&" ".repeat(HEADER - 1 - text.len()));
        text.push('\n');
        text.push_str(&format!("{:<43}\n", "12 12 150"));
        text.push_str(&format!("{:<43}\n", ""));
        text.push_str(&format!("{:<43}\n", "7 13 160"));
        let p = parse(&text).unwrap();
        assert_eq!((p.pid, p.start_ticks, p.boot_id.as_str()), (7, 100, "abc"));
        assert_eq!(
            p.records,
            vec![
                Record {
                    pgid: 12,
                    child: 12,
                    ticks: 150
                },
                Record {
                    pgid: 7,
                    child: 13,
                    ticks: 160
                }
            ]
        );
        assert!(parse("other 1 2 3\n").is_none());
    }

    #[test]
    fn only_processes_started_after_the_dead_vbench_are_survivors() {
        let v = Parsed {
            pid: u32::MAX,
            start_ticks: 100,
            boot_id: String::new(),
            records: vec![],
        };
        // a group led by vbench itself (gone; its pid free): members that started later
        let rec = Record {
            pgid: i32::MAX,
            child: 5,
            ticks: 150,
        };
        let st = |pgrp, start_ticks| Stat {
            pgrp,
            start_ticks,
            zombie: false,
        };
        assert!(survivor(&v, &rec, 9, &st(i32::MAX, 200)));
        assert!(!survivor(&v, &rec, 9, &st(i32::MAX, 99)), "older: not ours");
        assert!(!survivor(&v, &rec, 9, &st(3, 200)), "another group");
        let zombie = Stat {
            zombie: true,
            ..st(i32::MAX, 200)
        };
        assert!(!survivor(&v, &rec, 9, &zombie));
        // a group led by the child: its leader counts only if it started before the record
        let led = Record {
            pgid: 77,
            child: 77,
            ticks: 150,
        };
        assert!(survivor(&v, &led, 77, &st(77, 120)));
        assert!(!survivor(&v, &led, 77, &st(77, 151)), "a reused pid");
    }
}
