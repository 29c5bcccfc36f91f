//! What the container's root file system holds beyond the minimal root (a tmpfs with the
//! program, /proc, three /dev nodes and /tmp): the host's system directories or the entries of
//! a root directory of the user's, read-only; the volumes (`-v`); the current directory and
//! the paths named on the command line. Planned here, in the parent, as a list of steps that
//! the cloned child carries out with raw system calls and no allocation
//! ([`super::child::build_root`]).
//!
//! The root is built on a tmpfs mounted over a host directory inside the container's private
//! mount namespace (the stage, then entered with pivot_root): /tmp, unless a bind source is
//! below it (a test's temporary directory, a user's scratch files), which the tmpfs would hide;
//! then the first of [`STAGES`] that no source is in. (A source cannot be passed as an fd opened
//! before the clone: the kernel refuses to bind a mount of another mount namespace.)

use crate::BackendError;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The container's root file system (`--rootfs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Rootfs {
    /// A tmpfs with the program, /proc, /dev/{null,zero,urandom}, /tmp and an /etc naming
    /// root: vbench's own workloads and the isolation probes.
    #[default]
    Minimal,
    /// The minimal root plus the host's system directories read-only (/usr, /bin, /sbin,
    /// /lib*, /etc), the current directory read-write (the working directory) and the paths
    /// named on the command line.
    Host,
    /// The minimal root plus every entry of this directory (a root file system: debootstrap
    /// output, an unpacked OCI image), read-only.
    Dir(PathBuf),
}

impl Rootfs {
    /// Parses `minimal`, `host` or a directory (which must exist).
    pub fn parse(s: &str) -> Result<Rootfs, String> {
        match s {
            "minimal" => Ok(Rootfs::Minimal),
            "host" => Ok(Rootfs::Host),
            "" => Err("--rootfs is minimal, host or a directory".into()),
            dir => {
                let p = PathBuf::from(dir);
                let meta = std::fs::metadata(&p).map_err(|e| {
                    format!("--rootfs {dir}: {e} (the choices are minimal, host or a directory holding a root file system)")
                })?;
                if !meta.is_dir() {
                    return Err(format!("--rootfs {dir}: not a directory"));
                }
                if !["bin", "usr"].iter().any(|d| p.join(d).exists()) {
                    return Err(format!(
                        "--rootfs {dir}: has neither bin nor usr: not a root file system"
                    ));
                }
                Ok(Rootfs::Dir(
                    std::path::absolute(&p).map_err(|e| e.to_string())?,
                ))
            }
        }
    }

    /// `minimal`, `host` or the directory.
    pub fn label(&self) -> String {
        match self {
            Rootfs::Minimal => "minimal".into(),
            Rootfs::Host => "host".into(),
            Rootfs::Dir(d) => d.display().to_string(),
        }
    }
}

/// A bind mount into the container (`-v HOST[:CONTAINER][:ro|:rw]`, Docker's syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host path (absolute).
    pub host: PathBuf,
    /// Where it appears in the container (absolute).
    pub container: PathBuf,
    /// Mounted read-only.
    pub readonly: bool,
}

impl Volume {
    /// Parses `HOST[:CONTAINER][:ro|:rw]`; a relative HOST is taken from the current
    /// directory, and HOST must exist.
    pub fn parse(s: &str) -> Result<Volume, String> {
        let mut parts: Vec<&str> = s.split(':').collect();
        let mut readonly = false;
        if parts.len() > 1 {
            match *parts.last().unwrap() {
                "ro" => {
                    readonly = true;
                    parts.pop();
                }
                "rw" => {
                    parts.pop();
                }
                _ => {}
            }
        }
        let (host, container) = match parts[..] {
            [h] => (h, h),
            [h, c] => (h, c),
            _ => {
                return Err(format!(
                    "volume {s:?}: expected HOST[:CONTAINER][:ro|:rw] (paths with ':' cannot be volumes)"
                ))
            }
        };
        if host.is_empty() || container.is_empty() {
            return Err(format!("volume {s:?}: an empty path"));
        }
        let hp = Path::new(host);
        if let Err(e) = std::fs::metadata(hp) {
            return Err(format!("volume {s:?}: host path {host}: {e}"));
        }
        let cp = Path::new(container);
        if !cp.is_absolute() && container != host {
            return Err(format!(
                "volume {s:?}: the container path {container} must be absolute"
            ));
        }
        let host = std::path::absolute(hp).map_err(|e| format!("volume {s:?}: {e}"))?;
        let container = if cp.is_absolute() {
            normalize(cp)
        } else {
            normalize(&host)
        };
        if container == Path::new("/") {
            return Err(format!(
                "volume {s:?}: cannot be mounted over the container's root (use --rootfs DIR)"
            ));
        }
        Ok(Volume {
            host: normalize(&host),
            container,
            readonly,
        })
    }
}

/// `p` with `.` and `..` resolved lexically (absolute paths).
pub(super) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// The host's system directories the `host` root shows (those that exist; a symlink, as
/// /bin -> usr/bin on a merged-/usr system, is recreated as the same symlink).
const HOST_DIRS: [&str; 8] = [
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc",
];

/// Entries of a `--rootfs DIR` that the container makes itself.
const OWN_ENTRIES: [&str; 4] = ["proc", "dev", "sys", "tmp"];

/// /etc of the minimal root: the container's root user has a name, as in every image.
const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n";
const GROUP: &[u8] = b"root:x:0:\n";

/// One step of building the root; paths are below the stage (where the root is built).
pub(super) enum Step {
    /// A directory (an existing one is fine).
    Dir { path: CString, mode: u32 },
    /// An empty file, a mount point (an existing one is fine).
    File { path: CString },
    /// A symlink.
    Symlink { target: CString, path: CString },
    /// A new file with these bytes.
    Write { path: CString, data: &'static [u8] },
    /// A bind mount of `src` (`/proc/self/fd/N`); read-only with these flags kept (a
    /// remount may not clear the flags of the mount it copies in a user namespace).
    Bind {
        src: CString,
        dst: CString,
        ro: Option<libc::c_ulong>,
    },
}

/// A step and what it does, in words for an error.
pub(super) struct Planned {
    pub step: Step,
    pub what: String,
}

/// Where the program is and how the root is entered.
pub(super) struct Plan {
    pub steps: Vec<Planned>,
    /// Where the root is built.
    pub stage: String,
    /// The path the payload execs, in the container.
    pub exec_path: PathBuf,
    /// The program's bytes are written into the root at `exec_path` (it is not reachable
    /// otherwise).
    pub copy_program: bool,
    /// The payload's working directory in the container.
    pub workdir: PathBuf,
}

/// What the root is planned from.
pub(super) struct Input<'a> {
    pub rootfs: &'a Rootfs,
    pub volumes: &'a [Volume],
    pub workdir: Option<&'a Path>,
    /// The program on the host (None: it exists only in memory).
    pub program: Option<&'a Path>,
    /// Its file name, for a copy at the root.
    pub base: &'a [u8],
    pub args: &'a [std::ffi::OsString],
}

/// Host directories the root may be built on, in order of preference.
pub(super) const STAGES: [&str; 6] = ["/tmp", "/mnt", "/media", "/srv", "/opt", "/run"];

fn cstr(p: impl AsRef<[u8]>) -> Result<CString, BackendError> {
    CString::new(p.as_ref().to_vec())
        .map_err(|_| BackendError::Invalid("a path has a NUL byte".into()))
}

/// The statvfs flags of `p` as the mount flags a read-only remount must keep.
fn locked_flags(p: &Path) -> libc::c_ulong {
    let Ok(c) = cstr(p.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a live out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let mut f = 0;
    for (st_flag, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            f |= ms;
        }
    }
    f
}

struct Builder<'a> {
    stage: &'a str,
    steps: Vec<Planned>,
    /// The bind sources (canonical host paths).
    sources: Vec<PathBuf>,
    /// Container paths bound from the same host path (what a later path may already reach).
    covered: Vec<PathBuf>,
}

impl Builder<'_> {
    fn staged(&self, p: &Path) -> Result<CString, BackendError> {
        let mut v = self.stage.as_bytes().to_vec();
        v.extend_from_slice(p.as_os_str().as_bytes());
        cstr(v)
    }

    fn push(&mut self, step: Step, what: String) {
        self.steps.push(Planned { step, what });
    }

    /// The directories above `p`, in the root.
    fn parents(&mut self, p: &Path) -> Result<(), BackendError> {
        let mut acc = PathBuf::from("/");
        let comps: Vec<_> = p.components().skip(1).collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            acc.push(c);
            let path = self.staged(&acc)?;
            self.push(
                Step::Dir { path, mode: 0o755 },
                format!("creating {} in the container", acc.display()),
            );
        }
        Ok(())
    }

    /// Binds host `src` at container path `dst` (mount point and its parents made).
    fn bind(
        &mut self,
        src: &Path,
        dst: &Path,
        readonly: bool,
        what: String,
    ) -> Result<(), BackendError> {
        let meta = std::fs::metadata(src)
            .map_err(|e| BackendError::Invalid(format!("{what}: {}: {e}", src.display())))?;
        let canon = std::fs::canonicalize(src)
            .map_err(|e| BackendError::Invalid(format!("{what}: {}: {e}", src.display())))?;
        self.parents(dst)?;
        let path = self.staged(dst)?;
        if meta.is_dir() {
            self.push(
                Step::Dir {
                    path: path.clone(),
                    mode: 0o755,
                },
                format!("creating the mount point {} ({what})", dst.display()),
            );
        } else {
            self.push(
                Step::File { path: path.clone() },
                format!("creating the mount point {} ({what})", dst.display()),
            );
        }
        let ro = readonly.then(|| locked_flags(src));
        self.push(
            Step::Bind {
                src: cstr(canon.as_os_str().as_bytes())?,
                dst: path,
                ro,
            },
            what,
        );
        self.sources.push(canon);
        Ok(())
    }

    /// Whether container path `p` (the same host path) is reachable through a bind already.
    fn reaches(&self, p: &Path) -> bool {
        let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        self.covered
            .iter()
            .any(|c| p.starts_with(c) || canon.starts_with(c))
    }

    /// An entry of a root directory (`from/name`): a symlink as it is, else bound read-only.
    fn entry(&mut self, from: &Path, name: &str) -> Result<(), BackendError> {
        let src = from.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&src) else {
            return Ok(());
        };
        let dst = Path::new("/").join(name);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| {
                BackendError::Invalid(format!("reading the symlink {}: {e}", src.display()))
            })?;
            let path = self.staged(&dst)?;
            self.push(
                Step::Symlink {
                    target: cstr(target.as_os_str().as_bytes())?,
                    path,
                },
                format!("creating the symlink {}", dst.display()),
            );
            return Ok(());
        }
        if !meta.is_dir() && !meta.is_file() {
            return Ok(());
        }
        self.bind(
            &src,
            &dst,
            true,
            format!("binding {} read-only", src.display()),
        )?;
        self.covered.push(dst);
        Ok(())
    }
}

/// Whether `p` is in a file system the container makes its own.
fn own_tree(p: &Path) -> bool {
    ["/proc", "/sys", "/dev"].iter().any(|d| p.starts_with(d))
}

/// Plans the root for `i`, on the first stage that hides no bind source.
pub(super) fn plan(i: &Input) -> Result<Plan, BackendError> {
    for stage in STAGES {
        if !Path::new(stage).is_dir() {
            continue;
        }
        let (p, sources) = plan_at(i, stage)?;
        let st = Path::new(stage);
        if !sources
            .iter()
            .any(|s| s.starts_with(st) || st.starts_with(s))
        {
            return Ok(p);
        }
    }
    Err(BackendError::Invalid(format!(
        "the container's root cannot be built: every place for it ({}) is, holds or is below a path bound into it",
        STAGES.join(", ")
    )))
}

fn plan_at(i: &Input, stage: &str) -> Result<(Plan, Vec<PathBuf>), BackendError> {
    let mut b = Builder {
        stage,
        steps: Vec::new(),
        sources: Vec::new(),
        covered: Vec::new(),
    };
    let cwd = std::env::current_dir().ok().filter(|d| d != Path::new("/"));
    match i.rootfs {
        Rootfs::Minimal => {
            let etc = b.staged(Path::new("/etc"))?;
            b.push(
                Step::Dir {
                    path: etc,
                    mode: 0o755,
                },
                "creating /etc in the container".into(),
            );
            for (name, data) in [("/etc/passwd", PASSWD), ("/etc/group", GROUP)] {
                let path = b.staged(Path::new(name))?;
                b.push(
                    Step::Write { path, data },
                    format!("writing {name} in the container"),
                );
            }
        }
        Rootfs::Host => {
            for d in HOST_DIRS {
                b.entry(Path::new("/"), d)?;
            }
        }
        Rootfs::Dir(dir) => {
            let rd = std::fs::read_dir(dir)
                .map_err(|e| BackendError::Invalid(format!("--rootfs {}: {e}", dir.display())))?;
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !OWN_ENTRIES.contains(&n.as_str()))
                .collect();
            names.sort();
            for n in names {
                b.entry(dir, &n)?;
            }
        }
    }
    if *i.rootfs != Rootfs::Minimal {
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let path = b.staged(&Path::new("/dev").join(name))?;
            b.push(
                Step::Symlink {
                    target: cstr(target)?,
                    path,
                },
                format!("creating /dev/{name}"),
            );
        }
    }

    // the program: where it is reachable, else a copy at the root
    let mut copy_program = true;
    let mut exec_path = Path::new("/").join(std::ffi::OsStr::from_bytes(i.base));
    if let Some(p) = i.program {
        let abs = normalize(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
        match i.rootfs {
            Rootfs::Host => {
                if !b.reaches(&abs) && !cwd.as_deref().is_some_and(|c| abs.starts_with(c)) {
                    b.bind(
                        &abs,
                        &abs,
                        true,
                        format!("binding the program {}", abs.display()),
                    )?;
                }
                exec_path = abs;
                copy_program = false;
            }
            Rootfs::Dir(dir) => {
                // the program as the root directory has it (named inside or below it)
                let there = match abs.strip_prefix(dir) {
                    Ok(rel) => Path::new("/").join(rel),
                    Err(_) => abs.clone(),
                };
                if dir
                    .join(there.strip_prefix("/").unwrap_or(&there))
                    .is_file()
                {
                    exec_path = there;
                    copy_program = false;
                }
            }
            Rootfs::Minimal => {}
        }
    }

    let mut workdir = PathBuf::from("/");
    if *i.rootfs == Rootfs::Host {
        if let Some(cwd) = cwd.as_deref().filter(|c| !own_tree(c)) {
            b.bind(
                cwd,
                cwd,
                false,
                format!("binding the current directory {}", cwd.display()),
            )?;
            b.covered.push(cwd.to_path_buf());
            workdir = cwd.to_path_buf();
        }
        // the paths named on the command line: an existing one, or the directory a new one
        // would be made in
        for a in i.args {
            if !a.as_bytes().contains(&b'/') {
                continue;
            }
            let p = Path::new(a);
            let abs = match &cwd {
                Some(c) if p.is_relative() => normalize(&c.join(p)),
                _ if p.is_relative() => continue,
                _ => normalize(p),
            };
            let target = if abs.exists() {
                abs
            } else {
                match abs.parent() {
                    Some(d) if d.is_dir() => d.to_path_buf(),
                    _ => continue,
                }
            };
            if target == Path::new("/")
                || target.parent() == Some(Path::new("/"))
                || own_tree(&target)
                || b.reaches(&target)
            {
                continue;
            }
            b.bind(
                &target,
                &target,
                false,
                format!("binding {} (named on the command line)", target.display()),
            )?;
            b.covered.push(target);
        }
    }
    // the volumes last, the shallowest first, so that a deeper one is not hidden
    let mut vols: Vec<&Volume> = i.volumes.iter().collect();
    vols.sort_by_key(|v| v.container.components().count());
    for v in vols {
        b.bind(
            &v.host,
            &v.container,
            v.readonly,
            format!(
                "binding volume {} at {}{}",
                v.host.display(),
                v.container.display(),
                if v.readonly { " read-only" } else { "" }
            ),
        )?;
    }
    if let Some(w) = i.workdir {
        workdir = normalize(w);
    }
    Ok((
        Plan {
            steps: b.steps,
            stage: stage.to_string(),
            exec_path,
            copy_program,
            workdir,
        },
        b.sources,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_as_docker_writes_them() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().to_str().unwrap();
        let v = Volume::parse(&format!("{h}:/data:ro")).unwrap();
        assert_eq!(
            (v.host.as_path(), v.container.as_path(), v.readonly),
            (d.path(), Path::new("/data"), true)
        );
        let v = Volume::parse(&format!("{h}:/data/../x:rw")).unwrap();
        assert_eq!(
            (v.container.as_path(), v.readonly),
            (Path::new("/x"), false)
        );
        let v = Volume::parse(h).unwrap();
        assert_eq!(v.container, d.path());
        let e = Volume::parse("/no/such/dir:/data").unwrap_err();
        assert!(
            e.contains("/no/such/dir") && e.contains("No such file"),
            "{e}"
        );
        let e = Volume::parse(&format!("{h}:data")).unwrap_err();
        assert!(e.contains("must be absolute"), "{e}");
        let e = Volume::parse(&format!("{h}:/a:/b")).unwrap_err();
        assert!(e.contains("HOST[:CONTAINER]"), "{e}");
        let e = Volume::parse(&format!("{h}:/")).unwrap_err();
        assert!(e.contains("root"), "{e}");
    }

    #[test]
    fn root_choices_parse() {
        assert_eq!(Rootfs::parse("minimal"), Ok(Rootfs::Minimal));
        assert_eq!(Rootfs::parse("host"), Ok(Rootfs::Host));
        let e = Rootfs::parse("/no/such/root").unwrap_err();
        assert!(
            e.contains("/no/such/root") && e.contains("minimal, host"),
            "{e}"
        );
        let d = tempfile::tempdir().unwrap();
        let e = Rootfs::parse(d.path().to_str().unwrap()).unwrap_err();
        assert!(e.contains("not a root file system"), "{e}");
        std::fs::create_dir(d.path().join("usr")).unwrap();
        assert_eq!(
            Rootfs::parse(d.path().to_str().unwrap()),
            Ok(Rootfs::Dir(d.path().to_path_buf()))
        );
    }

    #[test]
    fn the_host_root_shows_system_directories_the_program_and_named_paths() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data.txt");
        std::fs::write(&data, "x").unwrap();
        let args = [data.clone().into_os_string(), "plain-word".into()];
        let p = plan(&Input {
            rootfs: &Rootfs::Host,
            volumes: &[],
            workdir: None,
            program: Some(Path::new("/bin/sh")),
            base: b"sh",
            args: &args,
        })
        .unwrap();
        let binds: Vec<String> = p
            .steps
            .iter()
            .filter(|s| matches!(s.step, Step::Bind { .. }))
            .map(|s| s.what.clone())
            .collect();
        assert!(
            binds.iter().any(|w| w == "binding /usr read-only"),
            "{binds:?}"
        );
        assert!(
            binds.iter().any(|w| w == "binding /etc read-only"),
            "{binds:?}"
        );
        // /bin/sh is reached through /usr (or /bin): no bind of its own, no copy
        assert!(
            !binds.iter().any(|w| w.contains("the program")),
            "{binds:?}"
        );
        assert!(!p.copy_program);
        assert_eq!(p.exec_path, Path::new("/bin/sh"));
        let named = format!("binding {} (named on the command line)", data.display());
        let in_cwd = std::env::current_dir().is_ok_and(|c| data.starts_with(c));
        assert!(in_cwd || binds.contains(&named), "{binds:?}");
        // built where no source is hidden
        assert!(!data.starts_with(&p.stage), "{}", p.stage);
    }
}
