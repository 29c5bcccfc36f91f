//! The compatibility suite: real programs nobody here wrote (Debian's static shells, busybox,
//! e2fsck) and small C programs built here with glibc and with musl, each run natively and
//! under every backend through the real `vbench exec`, comparing stdout and exit status (and
//! stderr where a case says so) byte for byte.
//!
//! The cases and what is known to fail where are data: `compat/cases.txt` (its header is the
//! format). The suite is strict both ways: a failure that is not listed fails it, and so does a
//! listed failure that now passes. Every run gets a fresh copy of `compat/fixture/`, so runs
//! cannot see each other's files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The backends every case runs on (the container with `vbench exec`'s default root, the host
/// root: the host's system directories read-only, the case's directory read-write).
const BACKENDS: &[&str] = &["bt", "kvm", "qemu-user", "container"];

/// What every run sees, native and under vbench alike.
const ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/bin:/bin"),
    ("HOME", "/root"),
    ("LC_ALL", "C"),
    ("TZ", "UTC"),
    ("VBENCH_COMPAT", "hello"),
];

/// Issues that a known failure may name; `peer` is a peer tool's own bug (allowed on peers only).
const ISSUES: &[&str] = &["13", "14", "15", "16", "peer"];

/// The backends that are other people's tools.
const PEERS: &[&str] = &["qemu-user"];

/// The fixture's mtimes: 2020-01-01 00:00:00 UTC.
const FIXTURE_MTIME: u64 = 1_577_836_800;

/// Jobs run at once (the machine has two cores; most jobs wait on a translator or a VM).
const PARALLEL: usize = 3;

#[derive(Debug, Default)]
struct Case {
    name: String,
    needs: Vec<String>,
    setup: Vec<Vec<String>>,
    steps: Vec<Vec<String>>,
    stderr: bool,
    min_wall: Option<f64>,
    known: BTreeMap<String, (String, String)>,
}

/// Splits a line into words as a shell would: whitespace separates, `'...'` is literal,
/// `"..."` groups (with `\"` and `\\`).
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated \"".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn parse(text: &str) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = |e: String| format!("cases.txt line {}: {e}", i + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        if key == "case" {
            if rest.is_empty() || cases.iter().any(|c| c.name == rest) {
                return Err(at(format!("a case needs a new name, not `{rest}`")));
            }
            cases.push(Case {
                name: rest.to_string(),
                ..Case::default()
            });
            continue;
        }
        let case = cases
            .last_mut()
            .ok_or_else(|| at("a line before the first case".into()))?;
        match key {
            "needs" => case.needs.push(rest.to_string()),
            "setup" => case.setup.push(words(rest).map_err(at)?),
            "run" => case.steps.push(words(rest).map_err(at)?),
            "stderr" => case.stderr = true,
            "min-wall" => {
                let s: f64 = rest.parse().map_err(|e| at(format!("min-wall: {e}")))?;
                case.min_wall = Some(s);
            }
            "known" => {
                let mut it = rest.splitn(3, char::is_whitespace);
                let (b, issue, why) = (it.next(), it.next(), it.next());
                let (Some(b), Some(issue), Some(why)) = (b, issue, why) else {
                    return Err(at("known BACKEND ISSUE WHY".into()));
                };
                if !BACKENDS.contains(&b) {
                    return Err(at(format!("unknown backend {b}")));
                }
                if !ISSUES.contains(&issue) {
                    return Err(at(format!("issue {issue} is not one of {ISSUES:?}")));
                }
                if issue == "peer" && !PEERS.contains(&b) {
                    return Err(at(format!(
                        "{b} is not a peer: name the issue that fixes it"
                    )));
                }
                if case
                    .known
                    .insert(b.to_string(), (issue.to_string(), why.trim().to_string()))
                    .is_some()
                {
                    return Err(at(format!("{b} is listed twice")));
                }
            }
            _ => return Err(at(format!("unknown key `{key}`"))),
        }
    }
    for c in &cases {
        if c.steps.iter().any(|s| s.is_empty()) || c.steps.is_empty() {
            return Err(format!("case {}: needs run lines with a program", c.name));
        }
    }
    Ok(cases)
}

/// What one run (all the steps of a case, in one copy) gave.
#[derive(Debug, Default)]
struct Outcome {
    stdout: String,
    stderr: String,
    statuses: Vec<i32>,
    wall: Duration,
    /// vbench's own stderr lines (unsupported syscalls, errors).
    notes: Vec<String>,
}

fn status_of(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .unwrap_or_else(|| 128 + s.signal().unwrap_or_default())
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for src in entries {
        let dst = to.join(src.file_name().unwrap());
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Every file's and directory's mtime (and atime) to the fixture's fixed time, children first.
fn set_times(path: &Path) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            set_times(&e.unwrap().path());
        }
    }
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(FIXTURE_MTIME);
    let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
    std::fs::File::open(path).unwrap().set_times(times).unwrap();
}

struct Suite {
    vbench: PathBuf,
    fixture: PathBuf,
    bin: PathBuf,
    work: PathBuf,
}

impl Suite {
    fn argv(&self, step: &[String]) -> Vec<String> {
        let bin = self.bin.to_str().unwrap();
        step.iter().map(|w| w.replace("{bin}", bin)).collect()
    }

    /// Runs `case` on `backend` ("native" or one of BACKENDS) in a fresh copy of the fixture.
    fn run(&self, case: &Case, backend: &str) -> Result<Outcome, String> {
        let dir = self.work.join(&case.name).join(backend);
        copy_tree(&self.fixture, &dir);
        for s in &case.setup {
            let argv = self.argv(s);
            let o = Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("setup {argv:?}: {e}"))?;
            if !o.status.success() {
                panic!(
                    "case {}: setup {argv:?} failed: {}",
                    case.name,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        set_times(&dir);
        let mut out = Outcome::default();
        let start = Instant::now();
        for step in &case.steps {
            let argv = self.argv(step);
            let mut cmd = if backend == "native" {
                Command::new(&argv[0])
            } else {
                let mut c = Command::new(&self.vbench);
                c.args(["exec", "--backend", backend, "--timeout", "60", "--"])
                    .arg(&argv[0]);
                c
            };
            cmd.args(&argv[1..])
                .current_dir(&dir)
                .env_clear()
                .envs(ENV.iter().copied())
                .stdin(Stdio::null());
            let o = cmd
                .output()
                .map_err(|e| format!("cannot start {argv:?}: {e}"))?;
            out.statuses.push(status_of(o.status));
            out.stdout += &String::from_utf8_lossy(&o.stdout);
            for line in String::from_utf8_lossy(&o.stderr).lines() {
                if backend != "native" && line.starts_with("vbench") {
                    if !out.notes.iter().any(|n| n == line) {
                        out.notes.push(line.to_string());
                    }
                } else {
                    out.stderr += line;
                    out.stderr.push('\n');
                }
            }
        }
        out.wall = start.elapsed();
        let d = dir.to_str().unwrap();
        let b = self.bin.to_str().unwrap();
        for s in [&mut out.stdout, &mut out.stderr] {
            *s = s.replace(d, "<dir>").replace(b, "<bin>");
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(out)
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 100;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        s.chars().take(MAX).collect::<String>() + "..."
    }
}

/// The first difference between two texts, by line.
fn first_difference(what: &str, native: &str, got: &str) -> Option<String> {
    if native == got {
        return None;
    }
    let (n, g): (Vec<_>, Vec<_>) = (native.lines().collect(), got.lines().collect());
    for i in 0..n.len().max(g.len()) {
        match (n.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => continue,
            (a, b) => {
                let show =
                    |x: Option<&&str>| x.map_or("(nothing)".into(), |s| format!("`{}`", clip(s)));
                return Some(format!(
                    "{what} line {}: {} (native {})",
                    i + 1,
                    show(b),
                    show(a)
                ));
            }
        }
    }
    Some(format!("{what} differs in line endings"))
}

/// Why `got` is not what native gave, or None when it is: the first differing exit status,
/// the first differing line of stdout (and of stderr when the case compares it), a wall time
/// below the case's minimum, then vbench's own notes.
fn judge(case: &Case, native: &Outcome, got: &Outcome) -> Option<String> {
    let mut why = Vec::new();
    if let Some(i) = (0..native.statuses.len()).find(|&i| native.statuses[i] != got.statuses[i]) {
        why.push(format!(
            "step {} `{}` exit status {} (native {})",
            i + 1,
            clip(&case.steps[i].join(" ")),
            got.statuses[i],
            native.statuses[i]
        ));
    }
    why.extend(first_difference("stdout", &native.stdout, &got.stdout));
    if case.stderr {
        why.extend(first_difference("stderr", &native.stderr, &got.stderr));
    }
    if let Some(min) = case.min_wall {
        if got.wall.as_secs_f64() < min {
            why.push(format!(
                "took {:.3} s, less than {min} s",
                got.wall.as_secs_f64()
            ));
        }
    }
    if why.is_empty() {
        return None;
    }
    if !case.stderr {
        if let Some(first) = got.stderr.lines().next() {
            why.push(format!("stderr `{}`", clip(first)));
        }
    }
    why.extend(got.notes.iter().map(|n| clip(n)));
    Some(why.join("; "))
}

/// Builds every c/*.c with gcc and musl-gcc into `bin` (NAME-gcc, NAME-musl).
fn build_c(src: &Path, bin: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let mut sources: Vec<_> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    std::thread::scope(|s| {
        for cc in [("gcc", "gcc"), ("musl-gcc", "musl")] {
            let sources = &sources;
            s.spawn(move || {
                for p in sources {
                    let out = bin.join(format!(
                        "{}-{}",
                        p.file_stem().unwrap().to_str().unwrap(),
                        cc.1
                    ));
                    let o = Command::new(cc.0)
                        .args(["-static", "-O2", "-Wall", "-o"])
                        .arg(&out)
                        .arg(p)
                        .output()
                        .unwrap();
                    assert!(
                        o.status.success(),
                        "{} {}: {}",
                        cc.0,
                        p.display(),
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
            });
        }
    });
}

/// A case (its index among the runnable ones) on a backend ("native" included).
type Job = (usize, &'static str);

#[derive(Debug)]
enum Cell {
    Ok,
    Fail,
    NotRun,
}

#[test]
fn real_programs_behave_as_they_do_natively() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    let cases = parse(&std::fs::read_to_string(root.join("cases.txt")).unwrap()).unwrap();
    let started = Instant::now();

    // Which backends and tools are here.
    let all = vbench_backends::all();
    let mut backends = Vec::new();
    for &b in BACKENDS {
        let backend = all.iter().find(|x| x.name() == b).unwrap();
        if vbench_testkit::require_or_skip(
            &format!("the {b} backend"),
            backend.availability().into_result(),
        ) {
            backends.push(b);
        }
    }
    let have_cc = vbench_testkit::require_or_skip(
        "gcc and musl-gcc (the C cases)",
        vbench_testkit::both(
            vbench_testkit::on_path("gcc"),
            vbench_testkit::on_path("musl-gcc"),
        ),
    );
    let runnable: Vec<&Case> = cases
        .iter()
        .filter(|c| {
            let c_case = c.steps.iter().any(|s| s[0].contains("{bin}"));
            (!c_case || have_cc)
                && c.needs.iter().all(|n| {
                    vbench_testkit::require_or_skip(
                        &format!("{n} (case {})", c.name),
                        vbench_testkit::file(n),
                    )
                })
        })
        .collect();

    let work = tempfile::tempdir().unwrap();
    let suite = Suite {
        vbench: PathBuf::from(env!("CARGO_BIN_EXE_vbench")),
        fixture: root.join("fixture"),
        bin: work.path().join("bin"),
        work: work.path().join("runs"),
    };
    if have_cc {
        build_c(&root.join("c"), &suite.bin);
    }

    // Every (case, backend) job, native included, on a few threads.
    let mut jobs = Vec::new();
    for i in 0..runnable.len() {
        jobs.push((i, "native"));
        for &b in &backends {
            jobs.push((i, b));
        }
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<Job, Result<Outcome, String>>> = Mutex::default();
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                while let Some(&(i, b)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = suite.run(runnable[i], b);
                    results.lock().unwrap().insert((i, b), r);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();

    // Judge each against native and against the known failures.
    let mut grid: Vec<Vec<Cell>> = Vec::new();
    let mut unexpected = Vec::new();
    let mut details = String::new();
    for (i, c) in runnable.iter().enumerate() {
        let native = match results.remove(&(i, "native")).unwrap() {
            Ok(n) => n,
            Err(e) => panic!("case {}: natively: {e}", c.name),
        };
        if let Some(min) = c.min_wall {
            assert!(
                native.wall.as_secs_f64() >= min,
                "case {}: natively it took {:?}, less than its min-wall {min} s",
                c.name,
                native.wall
            );
        }
        let mut row = Vec::new();
        for &b in BACKENDS {
            let Some(r) = results.remove(&(i, b)) else {
                row.push(Cell::NotRun);
                continue;
            };
            let verdict = match r {
                Ok(got) => judge(c, &native, &got),
                Err(e) => Some(e),
            };
            match (&verdict, c.known.get(b)) {
                (None, Some((issue, _))) => unexpected.push(format!(
                    "{} on {b}: now passes: remove the known failure (issue {issue})",
                    c.name
                )),
                (Some(why), None) => unexpected.push(format!("{} on {b}: FAIL: {why}", c.name)),
                _ => {}
            }
            if let Some(why) = &verdict {
                let issue = c
                    .known
                    .get(b)
                    .map_or("UNEXPECTED".to_string(), |(n, _)| format!("known #{n}"));
                let _ = writeln!(details, "  {} on {b} ({issue}): {why}", c.name);
            }
            row.push(if verdict.is_some() {
                Cell::Fail
            } else {
                Cell::Ok
            });
        }
        grid.push(row);
    }

    // The table.
    let width = runnable.iter().map(|c| c.name.len()).max().unwrap_or(4);
    let mut table = format!("{:width$}", "case");
    for b in BACKENDS {
        let _ = write!(table, "  {b:11}");
    }
    table.push('\n');
    for (c, row) in runnable.iter().zip(&grid) {
        let _ = write!(table, "{:width$}", c.name);
        for (b, cell) in BACKENDS.iter().zip(row) {
            let text = match cell {
                Cell::Ok if c.known.contains_key(*b) => "NOW PASSES".to_string(),
                Cell::Ok => "ok".to_string(),
                Cell::NotRun => "-".to_string(),
                Cell::Fail => match c.known.get(*b) {
                    Some((n, _)) => format!("known #{n}"),
                    None => "FAIL".to_string(),
                },
            };
            let _ = write!(table, "  {text:11}");
        }
        table.push('\n');
    }
    eprintln!(
        "{table}\nfailures (vs native):\n{details}\n{} cases, {} skipped, on {backends:?}, in {:.1} s",
        runnable.len(),
        cases.len() - runnable.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        unexpected.is_empty(),
        "{} unexpected results:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}

#[test]
fn the_case_format_parses_quotes_and_rejects_mistakes() {
    assert_eq!(
        words(r#"a 'b c' "d \"e\"" f'g'"#).unwrap(),
        ["a", "b c", "d \"e\"", "fg"]
    );
    assert!(words("'open").is_err());
    let ok = parse("case x\nrun /bin/a 1\nknown bt 13 why not\n").unwrap();
    assert_eq!(ok[0].known["bt"], ("13".into(), "why not".into()));
    for bad in [
        "run /bin/a",
        "case x\n",
        "case x\nrun a\ncase x\nrun b",
        "case x\nrun a\nknown bt 99 no such issue",
        "case x\nrun a\nknown valgrind 13 not a suite backend",
        "case x\nrun a\ncontainer",
        "case x\nrun a\nknown bt 13 one\nknown bt 13 two",
        "case x\nrun a\nknown bt peer bt is ours",
        "case x\nrun a\nfrobnicate",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}
