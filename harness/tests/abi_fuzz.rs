//! The syscall layer under garbage: `compat/c/abi_fuzz.c` makes random raw system calls
//! (numbers from the linux_abi table and beyond it, arguments from pools of small ints, fds,
//! random flags, lengths, scratch and garbage pointers, relative paths) under the real
//! `vbench exec`, on bt and kvm, with both policies. Every run must end as the program ends it
//! (exit 0, its summary with its canary pages intact: no write outside the buffers it passed),
//! never with a vbench crash, panic or hang, and must leave nothing outside its own directory.
//!
//! Each run has a fixed seed (reproducible) plus one from the clock (printed on failure), so
//! repeated runs explore further. To replay one: `abi_fuzz SEED N trace` prints each call
//! before it is made.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Calls per run, and the fixed seeds: every (backend, policy) gets two runs (a fixed seed and
/// one from the clock), so each backend makes 4 x CALLS calls in all.
const CALLS: u64 = 100_000;
const FIXED_SEEDS: [u64; 4] = [1, 2, 3, 4];

/// Runs at once (two cores; kvm's calls are VM exits, 100k of them take ~20 s in debug).
const PARALLEL: usize = 2;

fn build(bin: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/c/abi_fuzz.c");
    vbench_testkit::gcc_static(&src, bin);
}

/// Each entry of `dir` (not recursive): name -> (mode, mtime, size).
fn listing(dir: &Path) -> BTreeMap<String, (u32, i64, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            // the run directory's own mode and times are the program's to change (fchmodat
            // of "" with AT_EMPTY_PATH, and its entries change its mtime)
            if name == "run" {
                (name, (0, 0, 0))
            } else {
                (name, (m.mode(), m.mtime(), m.size()))
            }
        })
        .collect()
}

/// Every symlink under `dir` that points outside it (absolute, or through "..").
fn escaping_links(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            if t.is_absolute() || t.components().any(|c| c.as_os_str() == "..") {
                out.push(p);
            }
        } else if m.is_dir() {
            escaping_links(&p, out);
        }
    }
}

/// One run in a fresh directory; the reason it failed, if it did.
fn run(vbench: &Path, bin: &Path, backend: &str, policy: &str, seed: u64) -> Result<(), String> {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(bin, dir.join("abi_fuzz")).unwrap();
    let before = listing(top.path());
    let parent_mtime = std::fs::metadata(top.path()).unwrap().mtime_nsec();
    let what = format!("{backend} --abi {policy}: abi_fuzz {seed} {CALLS}");
    // stdin is a pipe with nothing behind it, stdout and stderr are pipes: the program's
    // fchmod, ftruncate, linkat... on descriptors 0-2 reach nothing of the host
    let mut child = Command::new(vbench)
        .args([
            "exec",
            "--backend",
            backend,
            "--abi",
            policy,
            "--timeout",
            "120",
        ])
        .args(["--", "./abi_fuzz", &seed.to_string(), &CALLS.to_string()])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start vbench: {e}"))?;
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let summary = stdout.lines().find(|l| l.starts_with("fuzz: "));
    let mut why = Vec::new();
    if !o.status.success() {
        why.push(format!("vbench exited with {}", o.status));
    }
    match summary {
        Some(s) if s.ends_with("canaries intact") => eprintln!("{what}: {s}"),
        Some(s) => why.push(format!("summary `{s}`")),
        None => why.push("no summary line".into()),
    }
    if summary.is_some_and(|s| !s.ends_with("canaries intact")) || summary.is_none() {
        let tail = &o.stdout[o.stdout.len().saturating_sub(120)..];
        why.push(format!(
            "stdout has {} bytes, ending {:?}",
            o.stdout.len(),
            String::from_utf8_lossy(tail)
        ));
    }
    if listing(top.path()) != before
        || std::fs::metadata(top.path()).unwrap().mtime_nsec() != parent_mtime
    {
        why.push(format!(
            "the directory above the run's changed: {:?} -> {:?}",
            before,
            listing(top.path())
        ));
    }
    let mut links = Vec::new();
    escaping_links(&dir, &mut links);
    if !links.is_empty() {
        why.push(format!("symlinks out of the run's directory: {links:?}"));
    }
    if why.is_empty() {
        return Ok(());
    }
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("unsupported syscalls answered with ENOSYS"))
        .filter(|l| {
            l.starts_with("vbench")
                || l.starts_with("abi_fuzz")
                || l.contains("panicked")
                || l.contains("error")
        })
        .take(5)
        .collect();
    Err(format!(
        "{what}: {}; stderr: {notes:?} (replay: add `trace` to abi_fuzz's arguments)",
        why.join("; ")
    ))
}

#[test]
fn garbage_syscalls_get_errnos_never_a_crash_or_a_stray_write() {
    let all = vbench_backends::all();
    let mut backends = Vec::new();
    for b in ["bt", "kvm"] {
        let backend = all.iter().find(|x| x.name() == b).unwrap();
        if vbench_testkit::require_or_skip(
            &format!("the {b} backend"),
            backend.availability().into_result(),
        ) {
            backends.push(b);
        }
    }
    if !vbench_testkit::require_or_skip("gcc (the fuzzer is C)", vbench_testkit::on_path("gcc"))
        || backends.is_empty()
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("abi_fuzz");
    build(&bin);
    let vbench = PathBuf::from(env!("CARGO_BIN_EXE_vbench"));
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007;
    let started = Instant::now();
    // (backend, policy, seed): a fixed seed and one from the clock for each pair
    let mut jobs = Vec::new();
    for (i, &b) in backends.iter().enumerate() {
        for (j, p) in ["host", "confined"].into_iter().enumerate() {
            let k = 2 * i + j;
            jobs.push((b, p, FIXED_SEEDS[k]));
            jobs.push((b, p, clock + k as u64));
        }
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(String, Result<(), String>)>> = Mutex::default();
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                while let Some(&(b, p, seed)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = run(&vbench, &bin, b, p, seed);
                    done.lock().unwrap().push((format!("{b} {p}"), r));
                }
            });
        }
    });
    let mut calls: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    for (k, r) in done.into_inner().unwrap() {
        match r {
            Ok(()) => *calls.entry(k).or_default() += CALLS,
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "calls made (clock seed {clock}): {calls:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of the runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
