//! cgroups for the container backend: one interface over cgroup v1 (a hierarchy per controller,
//! as on this project's machines) and v2 (one unified hierarchy). Detection reads marker files
//! under an injectable root, so both layouts are tested against temp-dir fixtures.
//!
//! vbench creates its cgroups only below the cgroup it runs in (per controller on v1), names them
//! `vbench-<pid>-<seq>` so they are recognisably its own, removes them after each run, and removes
//! stale ones whose creating process is gone.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Controllers vbench uses.
pub const CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "cpuset"];
/// Names of the cgroup counters that other crates read (the isolation judge, the container's
/// exit notes).
pub mod counters {
    /// Peak memory of the run's cgroup, bytes.
    pub const MEMORY_PEAK_BYTES: &str = "cgroup.memory_peak_bytes";
    /// Processes the OOM killer killed in the run's cgroup.
    pub const OOM_KILLS: &str = "cgroup.oom_kills";
}

/// Prefix of every cgroup vbench creates.
pub const PREFIX: &str = "vbench-";

/// Errors of cgroup operations; each names the file or directory concerned.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy was found.
    #[error("no usable cgroup hierarchy under {0}")]
    NotFound(PathBuf),
    /// A controller vbench needs for a requested limit is not available.
    #[error("cgroup controller {controller} is not available ({why})")]
    MissingController {
        /// The controller.
        controller: &'static str,
        /// Why.
        why: String,
    },
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Resource limits of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Memory hard limit in bytes (swap disabled).
    pub memory: Option<u64>,
    /// CPU quota as a fraction of one CPU (0.5 = half a CPU).
    pub cpus: Option<f64>,
    /// Maximum number of tasks.
    pub pids: Option<u64>,
    /// CPUs to pin to, in cpuset list syntax ("0", "0-1").
    pub cpuset: Option<String>,
}

/// CFS period used for CPU quotas, microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Which layout the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1: the directory of vbench's own cgroup in each mounted controller hierarchy.
    V1(BTreeMap<&'static str, PathBuf>),
    /// cgroup v2: vbench's own cgroup directory in the unified hierarchy.
    V2(PathBuf),
}

impl Layout {
    /// Detects the layout under `root` (normally /sys/fs/cgroup) from `self_cgroup` (the text of
    /// /proc/self/cgroup). v2 is used when `root` itself is a unified hierarchy; otherwise every
    /// v1 controller hierarchy found under `root/<controller>` is used (an empty cgroup2 mounted
    /// beside them, as on hybrid hosts, has no controllers and is ignored).
    pub fn detect(root: &Path, self_cgroup: &str) -> Result<Layout, CgroupError> {
        if root.join("cgroup.controllers").is_file() {
            let rel = self_cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            return Ok(Layout::V2(join_rel(root, rel)));
        }
        let mut dirs = BTreeMap::new();
        for controller in CONTROLLERS {
            let mount = root.join(controller);
            if !mount.join("tasks").is_file() {
                continue;
            }
            let rel = self_cgroup
                .lines()
                .find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                    ctrls.split(',').any(|c| c == controller).then_some(path)
                })
                .unwrap_or("/");
            dirs.insert(controller, join_rel(&mount, rel));
        }
        if dirs.is_empty() {
            return Err(CgroupError::NotFound(root.to_path_buf()));
        }
        Ok(Layout::V1(dirs))
    }

    /// Detects the host's layout.
    pub fn host() -> Result<Layout, CgroupError> {
        let p = Path::new("/proc/self/cgroup");
        let text = fs::read_to_string(p).map_err(io_err(p))?;
        Layout::detect(Path::new("/sys/fs/cgroup"), &text)
    }

    /// `v1` or `v2`.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::V1(_) => "v1",
            Layout::V2(_) => "v2",
        }
    }

    /// The parent directories vbench creates its cgroups in.
    pub fn parents(&self) -> Vec<PathBuf> {
        match self {
            Layout::V1(m) => m.values().cloned().collect(),
            Layout::V2(p) => vec![p.clone()],
        }
    }

    fn has(&self, controller: &'static str) -> Result<(), CgroupError> {
        match self {
            Layout::V1(m) if !m.contains_key(controller) => Err(CgroupError::MissingController {
                controller,
                why: "no v1 hierarchy for it is mounted".into(),
            }),
            Layout::V2(p) => {
                let v2name = if controller == "cpuacct" {
                    "cpu"
                } else {
                    controller
                };
                let avail = fs::read_to_string(p.join("cgroup.controllers")).unwrap_or_default();
                if avail.split_whitespace().any(|c| c == v2name) {
                    Ok(())
                } else {
                    Err(CgroupError::MissingController {
                        controller,
                        why: format!("not in {}/cgroup.controllers", p.display()),
                    })
                }
            }
            _ => Ok(()),
        }
    }

    /// Creates cgroup `name` below vbench's own cgroup with `limits` applied.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let mut cg = Cgroup {
            layout: self.name(),
            dirs: BTreeMap::new(),
        };
        // On any error, what was created so far is removed when `cg` drops.
        match self {
            Layout::V1(m) => {
                for (ctrl, parent) in m {
                    let dir = parent.join(name);
                    fs::create_dir(&dir).map_err(io_err(&dir))?;
                    cg.dirs.insert(ctrl, dir);
                }
                let dir = |c: &'static str| cg.dirs.get(c).cloned();
                if let Some(d) = dir("cpuset") {
                    // A v1 cpuset accepts no task until cpus and mems are set.
                    let parent = d.parent().expect("below a parent").to_path_buf();
                    let cpus = match &limits.cpuset {
                        Some(c) => c.clone(),
                        None => read_str(&parent.join("cpuset.cpus"))?,
                    };
                    write(&d.join("cpuset.cpus"), &cpus)?;
                    write(
                        &d.join("cpuset.mems"),
                        &read_str(&parent.join("cpuset.mems"))?,
                    )?;
                } else if limits.cpuset.is_some() {
                    self.has("cpuset")?;
                }
                if let Some(bytes) = limits.memory {
                    self.has("memory")?;
                    let d = dir("memory").expect("checked");
                    write(&d.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    // No swap: memsw limit equal to the memory limit, where swap accounting exists.
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes.to_string())?;
                    }
                    let swappiness = d.join("memory.swappiness");
                    if swappiness.exists() {
                        write(&swappiness, "0")?;
                    }
                }
                if let Some(cpus) = limits.cpus {
                    self.has("cpu")?;
                    let d = dir("cpu").expect("checked");
                    write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&d.join("cpu.cfs_quota_us"), &quota_us(cpus).to_string())?;
                }
                if let Some(n) = limits.pids {
                    self.has("pids")?;
                    write(
                        &dir("pids").expect("checked").join("pids.max"),
                        &n.to_string(),
                    )?;
                }
            }
            Layout::V2(parent) => {
                let mut wanted = vec![];
                if limits.memory.is_some() {
                    wanted.push("memory");
                }
                if limits.cpus.is_some() {
                    wanted.push("cpu");
                }
                if limits.pids.is_some() {
                    wanted.push("pids");
                }
                if limits.cpuset.is_some() {
                    wanted.push("cpuset");
                }
                // Enable what is available (for statistics), requiring what a limit needs.
                let avail =
                    fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
                let enable: Vec<String> = ["memory", "cpu", "pids", "cpuset"]
                    .iter()
                    .filter(|c| avail.split_whitespace().any(|a| a == **c))
                    .map(|c| format!("+{c}"))
                    .collect();
                for w in &wanted {
                    self.has(w)?;
                }
                if !enable.is_empty() {
                    write(&parent.join("cgroup.subtree_control"), &enable.join(" ")).map_err(|e| match e {
                        CgroupError::Io { path, source } if source.raw_os_error() == Some(libc::EBUSY) => {
                            CgroupError::Io {
                                path,
                                source: io::Error::new(
                                    io::ErrorKind::ResourceBusy,
                                    "cannot enable controllers: vbench's cgroup has processes (cgroup v2's no-internal-processes rule); run vbench in a cgroup of its own (e.g. systemd-run --scope)",
                                ),
                            }
                        }
                        other => other,
                    })?;
                }
                let d = parent.join(name);
                fs::create_dir(&d).map_err(io_err(&d))?;
                cg.dirs.insert("unified", d.clone());
                if let Some(bytes) = limits.memory {
                    write(&d.join("memory.max"), &bytes.to_string())?;
                    let swap = d.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, "0")?;
                    }
                }
                if let Some(cpus) = limits.cpus {
                    write(
                        &d.join("cpu.max"),
                        &format!("{} {CPU_PERIOD_US}", quota_us(cpus)),
                    )?;
                }
                if let Some(n) = limits.pids {
                    write(&d.join("pids.max"), &n.to_string())?;
                }
                if let Some(c) = &limits.cpuset {
                    write(&d.join("cpuset.cpus"), c)?;
                }
            }
        }
        Ok(cg)
    }

    /// Removes cgroups named `vbench-<pid>-*` whose creating process no longer exists (left by
    /// an earlier run that was killed), first killing any task still in them. Returns the paths
    /// removed.
    pub fn remove_stale(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for parent in self.parents() {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = owner_pid(&name) else {
                    continue;
                };
                if Path::new(&format!("/proc/{pid}")).exists() {
                    continue;
                }
                let dir = e.path();
                kill_tasks(&dir);
                if remove_dir_retrying(&dir).is_ok() {
                    removed.push(dir);
                }
            }
        }
        removed
    }
}

/// The pid in a name `vbench-<pid>-<seq>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, seq) = rest.split_once('-')?;
    seq.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn quota_us(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

fn join_rel(base: &Path, rel: &str) -> PathBuf {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

fn read_str(p: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(io_err(p))
}

fn write(p: &Path, v: &str) -> Result<(), CgroupError> {
    fs::write(p, v).map_err(io_err(p))
}

fn kill_tasks(dir: &Path) {
    for _ in 0..50 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn remove_dir_retrying(dir: &Path) -> Result<(), CgroupError> {
    // Right after the last task exits the kernel may still report the cgroup busy.
    let mut last = None;
    for i in 0..100 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(if i < 10 { 1 } else { 10 }));
    }
    Err(CgroupError::Io {
        path: dir.to_path_buf(),
        source: last.expect("at least one attempt"),
    })
}

/// A cgroup vbench created: one directory per v1 controller, or one unified directory.
/// Dropping it removes the directories.
#[derive(Debug)]
pub struct Cgroup {
    layout: &'static str,
    dirs: BTreeMap<&'static str, PathBuf>,
}

impl Cgroup {
    /// Moves process `pid` (and so its future children) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for d in self.dirs.values() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The v1 `tasks` file of each directory (empty on v2, which has none).
    pub fn tasks_files(&self) -> Vec<PathBuf> {
        self.dirs
            .values()
            .map(|d| d.join("tasks"))
            .filter(|p| p.is_file())
            .collect()
    }

    /// The directories, controller to path.
    pub fn dirs(&self) -> &BTreeMap<&'static str, PathBuf> {
        &self.dirs
    }

    /// Reads what the cgroup accounted: CPU usage, peak memory, memory limit hits and OOM kills,
    /// CPU throttling, and the pids peak, as `cgroup.*` counters.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let mut c = BTreeMap::new();
        let num = |p: PathBuf| -> Option<u64> { fs::read_to_string(p).ok()?.trim().parse().ok() };
        let keyed = |p: PathBuf| -> BTreeMap<String, u64> {
            fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_string(), v.trim().parse().ok()?))
                })
                .collect()
        };
        if self.layout == "v1" {
            if let Some(d) = self.dirs.get("memory") {
                if let Some(v) = num(d.join("memory.max_usage_in_bytes")) {
                    c.insert(counters::MEMORY_PEAK_BYTES.into(), v);
                }
                if let Some(v) = num(d.join("memory.failcnt")) {
                    c.insert("cgroup.memory_limit_hits".into(), v);
                }
                if let Some(v) = keyed(d.join("memory.oom_control")).get("oom_kill") {
                    c.insert(counters::OOM_KILLS.into(), *v);
                }
            }
            if let Some(d) = self.dirs.get("cpuacct") {
                if let Some(v) = num(d.join("cpuacct.usage")) {
                    c.insert("cgroup.cpu_usage_ns".into(), v);
                }
            }
            if let Some(d) = self.dirs.get("cpu") {
                let s = keyed(d.join("cpu.stat"));
                for (k, name) in [
                    ("nr_periods", "cgroup.cpu_periods"),
                    ("nr_throttled", "cgroup.cpu_throttled_periods"),
                    ("throttled_time", "cgroup.cpu_throttled_ns"),
                ] {
                    if let Some(v) = s.get(k) {
                        c.insert(name.into(), *v);
                    }
                }
            }
            if let Some(d) = self.dirs.get("pids") {
                if let Some(v) = num(d.join("pids.peak")) {
                    c.insert("cgroup.pids_peak".into(), v);
                }
                if let Some(v) = keyed(d.join("pids.events")).get("max") {
                    c.insert("cgroup.pids_limit_hits".into(), *v);
                }
            }
        } else if let Some(d) = self.dirs.get("unified") {
            if let Some(v) = num(d.join("memory.peak")) {
                c.insert(counters::MEMORY_PEAK_BYTES.into(), v);
            }
            let ev = keyed(d.join("memory.events"));
            if let Some(v) = ev.get("max") {
                c.insert("cgroup.memory_limit_hits".into(), *v);
            }
            if let Some(v) = ev.get("oom_kill") {
                c.insert(counters::OOM_KILLS.into(), *v);
            }
            let s = keyed(d.join("cpu.stat"));
            for (k, name, scale) in [
                ("usage_usec", "cgroup.cpu_usage_ns", 1000),
                ("nr_periods", "cgroup.cpu_periods", 1),
                ("nr_throttled", "cgroup.cpu_throttled_periods", 1),
                ("throttled_usec", "cgroup.cpu_throttled_ns", 1000),
            ] {
                if let Some(v) = s.get(k) {
                    c.insert(name.into(), v * scale);
                }
            }
            if let Some(v) = num(d.join("pids.peak")) {
                c.insert("cgroup.pids_peak".into(), v);
            }
            if let Some(v) = keyed(d.join("pids.events")).get("max") {
                c.insert("cgroup.pids_limit_hits".into(), *v);
            }
        }
        c
    }

    /// Kills any task left and removes the directories.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.remove_all()
    }

    fn remove_all(&mut self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for (_, d) in std::mem::take(&mut self.dirs) {
            kill_tasks(&d);
            if let Err(e) = remove_dir_retrying(&d) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.remove_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path, content: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// A v1 fixture shaped like this project's hosts: memory has its own nested cgroup.
    fn v1_fixture(root: &Path) -> String {
        for c in CONTROLLERS {
            touch(&root.join(c).join("tasks"), "");
        }
        let mem = root.join("memory/process_api/abc");
        fs::create_dir_all(&mem).unwrap();
        touch(&root.join("cpuset/cpuset.cpus"), "0-1\n");
        touch(&root.join("cpuset/cpuset.mems"), "0\n");
        "8:pids:/\n4:memory:/process_api/abc\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n".into()
    }

    #[test]
    fn detects_v1_per_controller_paths() {
        let t = tempfile::tempdir().unwrap();
        let self_cg = v1_fixture(t.path());
        let l = Layout::detect(t.path(), &self_cg).unwrap();
        let Layout::V1(m) = &l else { panic!("{l:?}") };
        assert_eq!(m["memory"], t.path().join("memory/process_api/abc"));
        assert_eq!(m["cpu"], t.path().join("cpu"));
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn v1_create_writes_limits_and_removes() {
        let t = tempfile::tempdir().unwrap();
        let self_cg = v1_fixture(t.path());
        let l = Layout::detect(t.path(), &self_cg).unwrap();
        let limits = Limits {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            pids: Some(16),
            cpuset: Some("1".into()),
        };
        let cg = l.create("vbench-1-0", &limits).unwrap();
        let mem = t.path().join("memory/process_api/abc/vbench-1-0");
        assert_eq!(
            fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap(),
            "67108864"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("cpu/vbench-1-0/cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("pids/vbench-1-0/pids.max")).unwrap(),
            "16"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("cpuset/vbench-1-0/cpuset.cpus")).unwrap(),
            "1"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("cpuset/vbench-1-0/cpuset.mems")).unwrap(),
            "0"
        );
        touch(&mem.join("memory.max_usage_in_bytes"), "1234\n");
        touch(
            &mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        touch(
            &t.path().join("cpu/vbench-1-0/cpu.stat"),
            "nr_periods 10\nnr_throttled 4\nthrottled_time 999\n",
        );
        let s = cg.stats();
        assert_eq!(s["cgroup.memory_peak_bytes"], 1234);
        assert_eq!(s["cgroup.oom_kills"], 2);
        assert_eq!(s["cgroup.cpu_throttled_periods"], 4);
        assert_eq!(s["cgroup.cpu_throttled_ns"], 999);
        // a fixture's files make rmdir fail (real cgroupfs has no removable files); clear them
        for d in cg.dirs().values() {
            for e in fs::read_dir(d).unwrap() {
                fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
        cg.remove().unwrap();
        assert!(!mem.exists());
    }

    #[test]
    fn detects_v2_and_enables_controllers() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        touch(
            &root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        );
        let own = root.join("user.slice/me");
        touch(&own.join("cgroup.controllers"), "cpuset cpu memory pids\n");
        touch(&own.join("cgroup.subtree_control"), "");
        let l = Layout::detect(root, "0::/user.slice/me\n").unwrap();
        assert_eq!(l, Layout::V2(own.clone()));
        let limits = Limits {
            memory: Some(1 << 30),
            cpus: Some(1.5),
            pids: Some(100),
            cpuset: None,
        };
        let cg = l.create("vbench-2-0", &limits).unwrap();
        let d = own.join("vbench-2-0");
        assert_eq!(
            fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids +cpuset"
        );
        assert_eq!(
            fs::read_to_string(d.join("memory.max")).unwrap(),
            "1073741824"
        );
        assert_eq!(
            fs::read_to_string(d.join("cpu.max")).unwrap(),
            "150000 100000"
        );
        assert_eq!(fs::read_to_string(d.join("pids.max")).unwrap(), "100");
        touch(
            &d.join("memory.events"),
            "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n",
        );
        touch(
            &d.join("cpu.stat"),
            "usage_usec 5\nnr_periods 3\nnr_throttled 2\nthrottled_usec 4\n",
        );
        let s = cg.stats();
        assert_eq!(s["cgroup.memory_limit_hits"], 7);
        assert_eq!(s["cgroup.oom_kills"], 1);
        assert_eq!(s["cgroup.cpu_usage_ns"], 5000);
        assert_eq!(s["cgroup.cpu_throttled_ns"], 4000);
        std::mem::forget(cg); // fixture files keep the directory from being removed
    }

    #[test]
    fn v2_missing_controller_is_named() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("cgroup.controllers"), "cpu\n");
        let l = Layout::detect(t.path(), "0::/\n").unwrap();
        let e = l
            .create(
                "vbench-3-0",
                &Limits {
                    pids: Some(5),
                    ..Limits::default()
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("pids"), "{e}");
    }

    #[test]
    fn nothing_mounted_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            Layout::detect(t.path(), ""),
            Err(CgroupError::NotFound(_))
        ));
    }

    #[test]
    fn stale_names_are_recognised() {
        assert_eq!(owner_pid("vbench-123-4"), Some(123));
        assert_eq!(owner_pid("vbench-x-4"), None);
        assert_eq!(owner_pid("other-123-4"), None);
        assert_eq!(owner_pid("vbench-123"), None);
    }
}
