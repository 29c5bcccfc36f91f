//! What this machine is and what will make its numbers noisy, in the spirit of pyperf's
//! `system show`. The same facts go into every results file's environment.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use vbench_results::Environment;

/// The machine's facts plus warnings about conditions that make measurements noisy.
#[derive(Debug, Serialize)]
pub struct Report {
    pub environment: Environment,
    pub namespaces: Vec<String>,
    pub warnings: Vec<String>,
}

fn read_trim(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// The hypervisor signature from CPUID leaf 0x40000000, when the hypervisor bit is set.
fn hypervisor() -> Option<String> {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    if leaf1.ecx & (1 << 31) == 0 {
        return None;
    }
    let h = core::arch::x86_64::__cpuid(0x4000_0000);
    let mut sig = Vec::new();
    for r in [h.ebx, h.ecx, h.edx] {
        sig.extend_from_slice(&r.to_le_bytes());
    }
    let name = String::from_utf8_lossy(&sig)
        .trim_end_matches('\0')
        .to_string();
    Some(match name.as_str() {
        "KVMKVMKVM" => "KVM (KVMKVMKVM)".into(),
        "" => "unknown".into(),
        other => other.to_string(),
    })
}

/// `/dev/kvm` state and flavour.
pub fn kvm_flavour(cpuinfo: &str) -> String {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    let file = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return "absent (no /dev/kvm)".into(),
        Err(e) => return format!("unusable (/dev/kvm: {e})"),
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an integer.
    let api = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    // /proc/modules is absent when modules are built in; /sys/module lists both kinds.
    let has = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    let flags = cpuinfo_field(cpuinfo, "flags").unwrap_or_default();
    let flag = |f: &str| flags.split_whitespace().any(|x| x == f);
    let kind = if has("kvm_pvm") {
        "pvm (nested through kvm_pvm: ring 0 emulated, syscall stays at ring 3)"
    } else if flag("vmx") || has("kvm_intel") {
        "vmx (Intel VT-x)"
    } else if flag("svm") || has("kvm_amd") {
        "svm (AMD-V)"
    } else {
        "unknown flavour"
    };
    format!("usable, API {api}, {kind}")
}

/// cgroup layout from statfs of /sys/fs/cgroup and /sys/fs/cgroup/unified.
pub fn cgroup_layout() -> String {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let fstype = |p: &str| -> Option<i64> {
        let c = std::ffi::CString::new(p).ok()?;
        // SAFETY: zeroed statfs is a valid out-buffer.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid NUL-terminated path and out-pointer.
        (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
    };
    match fstype("/sys/fs/cgroup") {
        Some(CGROUP2_SUPER_MAGIC) => "v2 (unified)".into(),
        Some(_) => {
            let v1: Vec<String> = fs::read_dir("/sys/fs/cgroup")
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n != "unified")
                        .collect()
                })
                .unwrap_or_default();
            if fstype("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) {
                format!(
                    "hybrid (v1 controllers, empty cgroup2 at unified): {}",
                    sorted(v1)
                )
            } else {
                format!("v1: {}", sorted(v1))
            }
        }
        None => "none (/sys/fs/cgroup not mounted)".into(),
    }
}

fn sorted(mut v: Vec<String>) -> String {
    v.sort();
    v.join(",")
}

/// Gathers the environment and the warnings.
pub fn report() -> Report {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // SAFETY: zeroed utsname is a valid out-buffer for uname.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::uname(&mut uts) };
    let cstr = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut extra = BTreeMap::new();
    let governor = read_trim("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
    extra.insert(
        "governor".to_string(),
        governor
            .clone()
            .unwrap_or_else(|| "none (no cpufreq: frequency set by the host)".into()),
    );
    let smt = read_trim("/sys/devices/system/cpu/smt/active");
    let siblings = cpuinfo_field(&cpuinfo, "siblings");
    let cores = cpuinfo_field(&cpuinfo, "cpu cores");
    extra.insert(
        "smt".into(),
        match (&smt, &siblings, &cores) {
            (Some(a), _, _) => format!("active={a}"),
            (None, Some(s), Some(c)) => format!("siblings={s} cores={c}"),
            _ => "unknown".into(),
        },
    );
    if let Some(t) = read_trim("/sys/devices/system/cpu/intel_pstate/no_turbo") {
        extra.insert("turbo".into(), if t == "1" { "off" } else { "on" }.into());
    }
    extra.insert(
        "aslr".into(),
        read_trim("/proc/sys/kernel/randomize_va_space").unwrap_or_else(|| "unknown".into()),
    );
    let load = read_trim("/proc/loadavg").unwrap_or_default();
    extra.insert("loadavg".into(), load.clone());
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    extra.insert("euid".into(), euid.to_string());
    let flags = cpuinfo_field(&cpuinfo, "flags").unwrap_or_default();
    let want = [
        "fsgsbase",
        "umip",
        "avx512f",
        "vmx",
        "svm",
        "constant_tsc",
        "nonstop_tsc",
    ];
    let have: Vec<&str> = want
        .iter()
        .copied()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    extra.insert("cpu_flags".into(), have.join(","));
    extra.insert(
        "perf_event_paranoid".into(),
        read_trim("/proc/sys/kernel/perf_event_paranoid").unwrap_or_else(|| "unknown".into()),
    );

    let environment = Environment {
        hostname: cstr(&uts.nodename),
        kernel: format!(
            "{} {} {}",
            cstr(&uts.sysname),
            cstr(&uts.release),
            cstr(&uts.machine)
        ),
        cpu_model: cpuinfo_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
        logical_cpus: logical,
        hypervisor: hypervisor(),
        kvm: kvm_flavour(&cpuinfo),
        cgroup: cgroup_layout(),
        extra,
    };
    let mut namespaces: Vec<String> = fs::read_dir("/proc/self/ns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    namespaces.sort();

    let mut warnings = Vec::new();
    if let Some(h) = &environment.hypervisor {
        warnings.push(format!(
            "running under a hypervisor ({h}): the host schedules these CPUs, so expect steal time and drift"
        ));
    }
    if logical <= 2 {
        warnings.push(format!(
            "only {logical} logical CPUs: the harness, the workload and system tasks compete; compare ratios from one run, not absolute times across runs"
        ));
    }
    if let Some(g) = &governor {
        if g != "performance" {
            warnings.push(format!("CPU frequency governor is {g:?}, not \"performance\": clock speed varies with load"));
        }
    }
    if smt.as_deref() == Some("1") {
        warnings
            .push("SMT is active: a sibling hyperthread shares the core's execution units".into());
    }
    if environment.extra.get("turbo").map(String::as_str) == Some("on") {
        warnings.push("turbo boost is on: frequency depends on temperature and load".into());
    }
    if let Some(l1) = load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
    {
        if l1 > 0.5 * logical as f64 {
            warnings.push(format!(
                "1-minute load average is {l1:.2}: other work is running on this machine"
            ));
        }
    }
    if environment.kvm.contains("pvm") {
        warnings.push("KVM is nested through kvm_pvm: every guest syscall forwarded to the VMM costs a nested VM exit (a true cost of nested virtualization)".into());
    }
    if euid != 0 {
        warnings.push(
            "not root: the container backend's cgroups and some namespaces need privileges".into(),
        );
    }
    Report {
        environment,
        namespaces,
        warnings,
    }
}

/// Renders the report as text.
pub fn render(r: &Report) -> String {
    let e = &r.environment;
    let mut s = String::new();
    let mut kv = |k: &str, v: &str| s.push_str(&format!("{k:<20} {v}\n"));
    kv("cpu", &e.cpu_model);
    kv("logical cpus", &e.logical_cpus.to_string());
    kv("kernel", &e.kernel);
    kv("hostname", &e.hostname);
    kv(
        "hypervisor",
        e.hypervisor.as_deref().unwrap_or("none (bare metal)"),
    );
    kv("/dev/kvm", &e.kvm);
    kv("cgroup", &e.cgroup);
    kv("namespaces", &r.namespaces.join(","));
    for (k, v) in &e.extra {
        kv(k, v);
    }
    if r.warnings.is_empty() {
        s.push_str("\nno conditions found that make numbers noisy\n");
    } else {
        s.push_str("\nwarnings (conditions that make numbers noisy):\n");
        for w in &r.warnings {
            s.push_str(&format!("  - {w}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_fields() {
        let c = "processor\t: 0\nmodel name\t: Test CPU @ 2GHz\nflags\t\t: fpu vmx\n";
        assert_eq!(
            cpuinfo_field(c, "model name").as_deref(),
            Some("Test CPU @ 2GHz")
        );
        assert_eq!(cpuinfo_field(c, "nope"), None);
    }

    #[test]
    fn report_facts_match_the_kernels_own_sources() {
        // each fact is checked against an independent source, not only for being present
        let r = report();
        let e = &r.environment;
        let osrelease = read_trim("/proc/sys/kernel/osrelease").unwrap();
        // `uname -srm`: the release from /proc, then the machine
        assert_eq!(
            e.kernel,
            format!("Linux {osrelease} {}", std::env::consts::ARCH)
        );
        assert_eq!(e.hostname, read_trim("/proc/sys/kernel/hostname").unwrap());
        let online = read_trim("/sys/devices/system/cpu/online").unwrap();
        let cpus: usize = online
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
                None => 1,
            })
            .sum();
        assert!(
            e.logical_cpus >= 1 && e.logical_cpus <= cpus,
            "{} of {cpus}",
            e.logical_cpus
        );
        let mut ns: Vec<String> = fs::read_dir("/proc/self/ns")
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        ns.sort();
        let mut got = r.namespaces.clone();
        got.sort();
        assert_eq!(got, ns, "the namespace types this kernel has");
        for n in ["pid", "mnt", "net", "uts", "ipc", "user", "cgroup"] {
            assert!(got.iter().any(|g| g == n), "{n} missing from {got:?}");
        }
        let kvm_present = std::path::Path::new("/dev/kvm").exists();
        assert_eq!(e.kvm.starts_with("absent"), !kvm_present, "kvm: {}", e.kvm);
    }

    #[test]
    fn render_shows_every_fact_and_every_warning() {
        let mut r = report();
        r.environment.cpu_model = "Model X".into();
        r.environment.logical_cpus = 7;
        r.environment.kvm = "pvm (nested)".into();
        r.warnings = vec!["turbo is on".into(), "loadavg 3.5".into()];
        let text = render(&r);
        for line in [
            "cpu                  Model X",
            "logical cpus         7",
            "/dev/kvm             pvm (nested)",
            "warnings (conditions that make numbers noisy):",
            "  - turbo is on",
            "  - loadavg 3.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        assert!(!text.contains("no conditions found"));
        r.warnings.clear();
        assert!(render(&r).contains("\nno conditions found that make numbers noisy\n"));
    }
}
