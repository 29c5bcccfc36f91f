//! The `crun` peer: Debian's crun (an OCI runtime in C, what podman uses) running the same
//! program from an OCI bundle, measured by vbench exactly as its own container is, so that the
//! two sit side by side in one table. The bundle is crun's own default spec (`crun spec`: pid,
//! network, ipc, uts and mount namespaces, its capability set, masked and read-only paths), with
//! the program copied into a read-only root, the container's memory and task limits (and CPU
//! quota) as OCI resources, and a cgroup below vbench's own.
//!
//! crun 1.8 refuses a host whose v1 controllers sit beside an empty cgroup2 (this project's
//! machines: "cgroups in hybrid mode not supported"). There crun runs in a mount namespace of
//! its own in which that empty cgroup2 is unmounted, so that it sees a plain v1 host, as
//! `scripts/container-startup.sh` does; `describe` and the availability say so.
//!
//! Nothing is left behind: the bundle is removed after each run, crun's state lives in
//! [`STATE`], and a container of a killed vbench (its state and cgroups) is deleted with
//! `crun delete -f` when the next vbench starts ([`remove_stale`]).

use crate::container::cgroup::{Layout, Limits};
use crate::native::run_command;
use crate::peer::on_path;
use crate::{Availability, Backend, BackendError, Invocation, Outcome};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// crun's state directory for vbench's containers (`crun --root`).
pub const STATE: &str = "/run/vbench-crun";

/// Container ids and cgroup names: `vbench-<pid>-<n>`, as the container backend's cgroups, so
/// that stale ones are recognised the same way; `n` counts from here to keep them apart.
const SEQ_BASE: u64 = 1 << 40;
static SEQ: AtomicU64 = AtomicU64::new(SEQ_BASE);

/// The hybrid layout's empty cgroup2, unmounted for crun.
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// The crun peer.
#[derive(Debug)]
pub struct Crun {
    limits: Limits,
    /// crun's default spec, made once.
    template: OnceLock<Result<serde_json::Value, String>>,
}

impl Crun {
    /// With the container's limits.
    pub fn new(limits: Limits) -> Crun {
        Crun {
            limits,
            template: OnceLock::new(),
        }
    }

    fn template(&self, crun: &Path) -> Result<serde_json::Value, BackendError> {
        self.template
            .get_or_init(|| default_spec(crun))
            .clone()
            .map_err(BackendError::Invalid)
    }
}

/// Whether the host is hybrid: v1 controllers and an empty cgroup2 at [`UNIFIED`] (looked at
/// once: the layout does not change under a running vbench).
fn hybrid() -> bool {
    static HYBRID: OnceLock<bool> = OnceLock::new();
    *HYBRID.get_or_init(|| {
        matches!(Layout::host(), Ok(Layout::V1(_)))
            && std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
                m.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.get(4) == Some(&UNIFIED) && l.contains(" - cgroup2 ")
                })
            })
    })
}

/// `crun delete -f id`: kills the container and removes its state and cgroups.
fn delete(crun: &Path, hybrid: bool, id: &str) {
    let _ = crun_command(crun, hybrid)
        .args(["delete", "-f", id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// A `crun` command; on a hybrid host it runs where the empty cgroup2 is unmounted.
fn crun_command(crun: &Path, hybrid: bool) -> Command {
    let mut cmd = Command::new(crun);
    cmd.arg("--root").arg(STATE);
    if hybrid {
        // SAFETY: the closure runs in the child between fork and exec and makes only raw
        // system calls on static strings; it allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let null = std::ptr::null::<libc::c_char>();
                if libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

/// crun's default spec (`crun spec` in a scratch directory).
fn default_spec(crun: &Path) -> Result<serde_json::Value, String> {
    let dir = scratch("spec").map_err(|e| format!("crun spec: {e}"))?;
    let res = (|| {
        let o = Command::new(crun)
            .arg("spec")
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("crun spec: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "crun spec failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| format!("crun spec's config.json: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("crun spec's config.json: {e}"))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// A fresh directory below [`STATE`] named after this process.
fn scratch(what: &str) -> std::io::Result<PathBuf> {
    let d = Path::new(STATE).join(format!(
        "bundle-{}-{what}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The cgroup path (relative to each hierarchy's root) that a run's container gets: below
/// vbench's own (on v1, its memory cgroup's; crun uses the one path in every hierarchy).
fn cgroups_path(id: &str) -> String {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = own
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, ctrls, path) = (p.next()?, p.next()?, p.next()?);
            (ctrls.split(',').any(|c| c == "memory") || ctrls.is_empty()).then_some(path)
        })
        .unwrap_or("/");
    format!("{}/{id}", rel.trim_end_matches('/'))
}

/// The bundle's config.json: the template with this run's program, arguments, environment,
/// limits and cgroup.
fn spec(
    template: &serde_json::Value,
    argv: Vec<String>,
    env: Vec<String>,
    limits: &Limits,
    cgroups: &str,
) -> serde_json::Value {
    use serde_json::json;
    let mut s = template.clone();
    s["process"]["terminal"] = json!(false);
    s["process"]["args"] = json!(argv);
    s["process"]["env"] = json!(env);
    s["process"]["cwd"] = json!("/");
    s["hostname"] = json!("vbench");
    s["root"] = json!({"path": "rootfs", "readonly": true});
    let mut res = serde_json::Map::new();
    if let Some(m) = limits.memory {
        res.insert("memory".into(), json!({"limit": m, "swap": m}));
    }
    if let Some(p) = limits.pids {
        res.insert("pids".into(), json!({"limit": p}));
    }
    if let Some(c) = limits.cpus {
        let period = crate::container::cgroup::CPU_PERIOD_US;
        res.insert(
            "cpu".into(),
            json!({"quota": ((c * period as f64).round() as i64).max(1000), "period": period}),
        );
    }
    if let Some(cs) = &limits.cpuset {
        let cpu = res.entry("cpu").or_insert_with(|| json!({}));
        cpu["cpus"] = json!(cs);
    }
    s["linux"]["resources"] = serde_json::Value::Object(res);
    s["linux"]["cgroupsPath"] = json!(cgroups);
    s
}

/// Deletes the containers of vbench processes that are gone (killed before they could); returns
/// their ids.
pub fn remove_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(STATE) else {
        return Vec::new();
    };
    let crun = on_path("crun");
    let hybrid = hybrid();
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix("vbench-")
            .or_else(|| name.strip_prefix("bundle-"))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = owner else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if name.starts_with("bundle-") {
            let _ = std::fs::remove_dir_all(e.path());
            continue;
        }
        if let Some(crun) = &crun {
            delete(crun, hybrid, &name);
        }
        if !e.path().exists() {
            removed.push(name);
        }
    }
    removed
}

impl Backend for Crun {
    fn name(&self) -> &'static str {
        "crun"
    }

    fn describe(&self) -> &'static str {
        "peer: crun, an OCI runtime (its default spec, our limits)"
    }

    fn is_peer(&self) -> bool {
        true
    }

    fn availability(&self) -> Availability {
        if !nix::unistd::geteuid().is_root() {
            return Availability::Unavailable("not root (crun run needs root)".into());
        }
        let Some(crun) = on_path("crun") else {
            return Availability::Unavailable("crun is not installed (Debian package crun)".into());
        };
        if let Err(e) = self.template(&crun) {
            return Availability::Unavailable(e.to_string());
        }
        Availability::Available
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        let crun = on_path("crun").ok_or_else(|| BackendError::Unavailable {
            backend: "crun",
            reason: "crun is not installed (Debian package crun)".into(),
        })?;
        let template = self.template(&crun)?;
        let bytes = inv.program.bytes()?;
        let id = format!(
            "vbench-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let bundle = scratch("run").map_err(|source| BackendError::Os {
            what: format!("making the OCI bundle in {STATE}"),
            source,
        })?;
        let hybrid = hybrid();
        let result = (|| {
            let base = Path::new(&inv.program.name())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "program".into());
            let rootfs = bundle.join("rootfs");
            let os = |what: &str| {
                let what = what.to_string();
                move |source| BackendError::Os { what, source }
            };
            std::fs::create_dir_all(&rootfs).map_err(os("making the bundle's rootfs"))?;
            let prog = rootfs.join(&base);
            std::fs::write(&prog, &bytes).map_err(os("copying the program into the bundle"))?;
            std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755))
                .map_err(os("making the program executable"))?;
            let mut argv = vec![format!("/{base}")];
            for a in &inv.args {
                argv.push(a.to_str().map(str::to_string).ok_or_else(|| {
                    BackendError::Invalid("crun: an argument is not UTF-8".into())
                })?);
            }
            let env: Vec<String> = crate::session::guest_env(inv)
                .into_iter()
                .map(|kv| String::from_utf8_lossy(&kv).into_owned())
                .collect();
            let config = spec(&template, argv, env, &self.limits, &cgroups_path(&id));
            std::fs::write(
                bundle.join("config.json"),
                serde_json::to_vec(&config).expect("a JSON value serializes"),
            )
            .map_err(os("writing the bundle's config.json"))?;
            let mut cmd = crun_command(&crun, hybrid);
            cmd.arg("run").arg("--bundle").arg(&bundle).arg(&id);
            run_command(cmd, inv)
        })();
        // a run killed by its timeout (or ^C) leaves the container behind: delete it
        if Path::new(STATE).join(&id).exists() {
            delete(&crun, hybrid, &id);
        }
        let _ = std::fs::remove_dir_all(&bundle);
        let mut out = result?;
        if hybrid {
            out.sample
                .counters
                .insert("crun.hybrid_cgroup2_unmounted".into(), 1);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_carries_the_run_and_the_limits() {
        let t = serde_json::json!({"process": {"terminal": true, "args": ["sh"]},
                                   "root": {"path": "rootfs"}, "linux": {"namespaces": []}});
        let limits = Limits {
            memory: Some(1 << 30),
            cpus: Some(0.5),
            pids: Some(64),
            cpuset: Some("0".into()),
        };
        let s = spec(
            &t,
            vec!["/wl".into(), "getpid".into()],
            vec!["PATH=/bin".into()],
            &limits,
            "/vbench-1-2",
        );
        assert_eq!(s["process"]["args"], serde_json::json!(["/wl", "getpid"]));
        assert_eq!(s["process"]["terminal"], false);
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 1u64 << 30);
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 64);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(s["linux"]["resources"]["cpu"]["cpus"], "0");
        assert_eq!(s["linux"]["cgroupsPath"], "/vbench-1-2");
        // the template's own settings stay
        assert_eq!(s["linux"]["namespaces"], serde_json::json!([]));
    }

    #[test]
    fn a_container_cgroup_is_named_for_the_stale_sweep() {
        let p = cgroups_path("vbench-7-1099511627776");
        assert!(p.ends_with("/vbench-7-1099511627776"), "{p}");
        assert!(p.starts_with('/'), "{p}");
    }
}
