//! Atomic writing and checked reading of results documents.

use crate::schema::{Document, SCHEMA_VERSION};
use serde::Deserialize;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors reading or writing a results file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// The file could not be read, created, written or renamed. The cause is part of the
    /// message (and therefore not also returned as `source()`, which would print it twice).
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The path cannot take an output: a directory, a socket, a block device, a symlink to
    /// nothing, or a file in a folder that does not exist.
    #[error("{path}: {reason}")]
    Refused {
        /// The path as given.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// The file is not valid JSON, or does not match the schema.
    #[error("{path}: line {line}, column {column}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The file was written by a newer vbench.
    #[error("{path}: schema version {found} is newer than this vbench understands ({SCHEMA_VERSION}); upgrade vbench to read it")]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
    },
    /// The document could not be serialised (a bug).
    #[error("{path}: cannot serialise results: {source}")]
    Serialize {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ResultsError + '_ {
    move |error| ResultsError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn malformed(path: &Path, e: serde_json::Error) -> ResultsError {
    ResultsError::Malformed {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        // serde_json appends " at line L column C"; the variant carries the position itself
        message: match e.to_string().rsplit_once(" at line ") {
            Some((msg, _)) => msg.to_string(),
            None => e.to_string(),
        },
    }
}

/// Parses a document from text; `path` only names the source in errors.
pub fn parse(path: &Path, text: &str) -> Result<Document, ResultsError> {
    #[derive(Deserialize)]
    struct Version {
        schema_version: u32,
    }
    // Read the version first, so a newer file is refused as newer and not as malformed.
    let version: Version = serde_json::from_str(text).map_err(|e| malformed(path, e))?;
    if version.schema_version > SCHEMA_VERSION {
        return Err(ResultsError::Newer {
            path: path.to_path_buf(),
            found: version.schema_version,
        });
    }
    serde_json::from_str(text).map_err(|e| malformed(path, e))
}

/// Reads and checks a results file.
pub fn load(path: &Path) -> Result<Document, ResultsError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    parse(path, &text)
}

fn document_bytes(path: &Path, doc: &Document) -> Result<Vec<u8>, ResultsError> {
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|source| ResultsError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes `doc` to `path` atomically: a temporary file in the same directory, flushed to disk,
/// then renamed over `path`. Readers see the old file or the new one, never a half-written one;
/// on any error the temporary file is removed.
pub fn write_atomic(path: &Path, doc: &Document) -> Result<(), ResultsError> {
    let bytes = document_bytes(path, doc)?;
    let dir = parent_dir(path);
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    replace_file(path, &bytes, None)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to a temporary beside `path` (with `mode`, if given), then renames it over
/// `path`.
fn replace_file(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), ResultsError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results.json".into());
    remove_stale_temporaries(&dir, &name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        if let Some(mode) = mode {
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io(&tmp))?;
        }
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// How an [`OutTarget`] is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    /// A regular file, or a path that does not exist yet: a temporary beside it renamed over it.
    Replace,
    /// A character device or a pipe (`/dev/null`, a FIFO): opened and written through.
    Stream,
    /// This process's standard output (`-`, `/dev/stdout`).
    Stdout,
    /// This process's standard error (`/dev/stderr`).
    Stderr,
}

/// Where an output (`--out`) goes, checked before any work is done. A regular file (a symlink
/// to one is followed: the target is replaced, not the link) or a path that does not exist is
/// replaced atomically; a character device, a pipe or `-` is written through; anything else
/// (a directory, a socket, a block device, a dangling symlink, a folder that does not exist)
/// is refused, naming the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutTarget {
    /// The path as given.
    shown: PathBuf,
    /// What is written: the symlink's target for a symlink to a regular file.
    real: PathBuf,
    kind: OutKind,
}

fn refused(path: &Path, reason: impl Into<String>) -> ResultsError {
    ResultsError::Refused {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl OutTarget {
    /// Checks `path`. A missing parent folder is refused unless it is `own_dir` (vbench's own
    /// results folder), which is created when written.
    pub fn resolve(path: &Path, own_dir: &Path) -> Result<OutTarget, ResultsError> {
        use std::os::unix::fs::FileTypeExt;
        let target = |kind, p: &Path| OutTarget {
            shown: path.to_path_buf(),
            real: p.to_path_buf(),
            kind,
        };
        let text = path.as_os_str().to_string_lossy();
        match text.as_ref() {
            "-" | "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" => {
                return Ok(target(OutKind::Stdout, path))
            }
            "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" => {
                return Ok(target(OutKind::Stderr, path))
            }
            _ => {}
        }
        match fs::metadata(path) {
            Ok(m) => {
                let ft = m.file_type();
                if ft.is_file() {
                    let real = fs::canonicalize(path).map_err(io(path))?;
                    Ok(target(OutKind::Replace, &real))
                } else if ft.is_char_device() || ft.is_fifo() {
                    Ok(target(OutKind::Stream, path))
                } else if ft.is_dir() {
                    Err(refused(path, "is a directory, not a file"))
                } else if ft.is_socket() {
                    Err(refused(path, "is a socket; an output must be a regular file, a character device or a pipe"))
                } else if ft.is_block_device() {
                    Err(refused(path, "is a block device; an output must be a regular file, a character device or a pipe"))
                } else {
                    Err(refused(
                        path,
                        "is not a regular file, a character device or a pipe",
                    ))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if fs::symlink_metadata(path).is_ok() {
                    return Err(refused(path, "is a symlink to a path that does not exist"));
                }
                let parent = parent_dir(path);
                // `./vbench-results` is vbench's own folder as much as `vbench-results`
                let own = |p: &Path| {
                    p.components()
                        .filter(|c| *c != std::path::Component::CurDir)
                        .eq(own_dir.components())
                };
                if parent.is_dir() || own(&parent) {
                    Ok(target(OutKind::Replace, path))
                } else {
                    Err(refused(
                        path,
                        format!("the folder {} does not exist", parent.display()),
                    ))
                }
            }
            Err(e) => Err(io(path)(e)),
        }
    }

    /// A new file `dir/STEM.EXT`, or `dir/STEM-2.EXT`, ... when that exists: created exclusively
    /// (empty), so that no other writer picks the same name; `dir` is created when missing.
    pub fn create_unique(dir: &Path, stem: &str, ext: &str) -> Result<OutTarget, ResultsError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        for n in 1..=10_000u32 {
            let name = if n == 1 {
                format!("{stem}.{ext}")
            } else {
                format!("{stem}-{n}.{ext}")
            };
            let path = dir.join(name);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => {
                    return Ok(OutTarget {
                        shown: path.clone(),
                        real: path,
                        kind: OutKind::Replace,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Err(refused(dir, format!("no free name {stem}-N.{ext} left")))
    }

    /// The path as given (for messages).
    pub fn path(&self) -> &Path {
        &self.shown
    }

    /// How it is written.
    pub fn kind(&self) -> OutKind {
        self.kind
    }

    /// True when written through (device, pipe, stdio): partial results are not written to it,
    /// only the final document.
    pub fn is_stream(&self) -> bool {
        self.kind != OutKind::Replace
    }

    /// Writes a results document.
    pub fn write_document(&self, doc: &Document) -> Result<(), ResultsError> {
        self.write_bytes(&document_bytes(&self.shown, doc)?, None)
    }

    /// Writes `bytes`; `mode` sets the permissions of a replaced file (a device or pipe keeps
    /// its own).
    pub fn write_bytes(&self, bytes: &[u8], mode: Option<u32>) -> Result<(), ResultsError> {
        let shown = self.shown.as_path();
        match self.kind {
            OutKind::Replace => {
                let dir = parent_dir(&self.real);
                fs::create_dir_all(&dir).map_err(io(&dir))?;
                replace_file(&self.real, bytes, mode)
            }
            OutKind::Stream => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .open(&self.real)
                    .map_err(io(shown))?;
                f.write_all(bytes).map_err(io(shown))
            }
            OutKind::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)
                    .and_then(|()| out.flush())
                    .map_err(io(shown))
            }
            OutKind::Stderr => std::io::stderr().lock().write_all(bytes).map_err(io(shown)),
        }
    }
}

/// Removes `.NAME.tmp.PID` files left by writers that were killed mid-write (their PID is
/// gone), so an interrupted run leaves nothing behind once the file is written again.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::*;

    pub(crate) fn sample_doc() -> Document {
        Document {
            schema_version: SCHEMA_VERSION,
            tool: Tool {
                name: "vbench".into(),
                version: "0.1.0".into(),
            },
            status: RunStatus::Complete,
            started_unix_ms: 1,
            finished_unix_ms: Some(2),
            environment: Environment::default(),
            plan: Plan {
                rounds: 1,
                cells: vec![Cell {
                    id: 0,
                    workload: "getpid".into(),
                    class: "sys".into(),
                    backend: "native".into(),
                    args: vec!["iters=10".into()],
                    op: "call".into(),
                }],
                ..Plan::default()
            },
            samples: vec![SampleRecord {
                cell: 0,
                round: 0,
                sample: Sample {
                    wall_ns: 5,
                    exit: Exit::Timeout { after_ms: 3 },
                    counters: [("x".to_string(), 1)].into(),
                    ..Sample::default()
                },
            }],
            summaries: vec![],
            failures: vec![Failure {
                cell: 0,
                round: Some(0),
                kind: FailureKind::BadExit,
                message: "m".into(),
            }],
            isolation: None,
            writer: None,
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/r.json");
        let doc = sample_doc();
        write_atomic(&p, &doc).unwrap();
        assert_eq!(load(&p).unwrap(), doc);
        // only the file itself is left, no temporaries
        let names: Vec<_> = fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn temporaries_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        let dead = dir.path().join(format!(".r.json.tmp.{}", u32::MAX));
        let other = dir.path().join(".other.json.tmp.1");
        fs::write(&dead, "half").unwrap();
        fs::write(&other, "not ours").unwrap();
        write_atomic(&p, &sample_doc()).unwrap();
        assert!(!dead.exists());
        assert!(other.exists());
    }

    #[test]
    fn malformed_file_names_file_and_position() {
        let p = Path::new("bad.json");
        let e = parse(p, "{\n  \"schema_version\": 1,\n  \"tool\": 7\n}").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("bad.json: line 3"), "{s}");
        let e = parse(p, "{ not json").unwrap_err();
        assert!(matches!(e, ResultsError::Malformed { line: 1, .. }), "{e}");
    }

    #[test]
    fn newer_schema_is_refused_as_newer() {
        let text = format!(
            "{{\"schema_version\": {}, \"future\": true}}",
            SCHEMA_VERSION + 1
        );
        let e = parse(Path::new("n.json"), &text).unwrap_err();
        assert!(matches!(e, ResultsError::Newer { .. }), "{e}");
        assert!(e.to_string().contains("newer"));
    }

    #[test]
    fn missing_file_is_named() {
        let e = load(Path::new("/nonexistent/x.json")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/x.json: "), "{e}");
    }

    #[test]
    fn an_os_error_is_printed_once() {
        use std::error::Error;
        let e = load(Path::new("/nonexistent/x.json")).unwrap_err();
        // the cause is in the message, so it must not also be the source (printers of the
        // chain, such as anyhow's {:#}, would print it twice)
        assert!(e.source().is_none(), "{e}");
        assert_eq!(e.to_string().matches("os error").count(), 1, "{e}");
    }

    #[test]
    fn out_targets_by_file_type() {
        let dir = tempfile::tempdir().unwrap();
        let own = Path::new("vbench-results");
        let file = dir.path().join("r.json");
        fs::write(&file, "old").unwrap();
        let t = OutTarget::resolve(&file, own).unwrap();
        assert_eq!(t.kind(), OutKind::Replace);
        let t = OutTarget::resolve(&dir.path().join("new.json"), own).unwrap();
        assert_eq!(t.kind(), OutKind::Replace);
        for p in ["-", "/dev/stdout"] {
            assert_eq!(
                OutTarget::resolve(Path::new(p), own).unwrap().kind(),
                OutKind::Stdout
            );
        }
        let null = OutTarget::resolve(Path::new("/dev/null"), own).unwrap();
        assert_eq!(null.kind(), OutKind::Stream);
        let e = OutTarget::resolve(dir.path(), own).unwrap_err().to_string();
        assert!(
            e.contains("is a directory") && e.contains(&*dir.path().to_string_lossy()),
            "{e}"
        );
        let e = OutTarget::resolve(&dir.path().join("no/such/r.json"), own)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        // vbench's own folder is created when written
        let t = OutTarget::resolve(&own.join("x.json"), own).unwrap();
        assert_eq!(t.kind(), OutKind::Replace);
        let t = OutTarget::resolve(Path::new("./vbench-results/x.json"), own).unwrap();
        assert_eq!(t.kind(), OutKind::Replace);
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere/x"), &dangling).unwrap();
        let e = OutTarget::resolve(&dangling, own).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = OutTarget::resolve(&sock, own).unwrap_err().to_string();
        assert!(e.contains("is a socket"), "{e}");
    }

    #[test]
    fn a_symlink_to_a_file_replaces_the_target_not_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let t = OutTarget::resolve(&link, Path::new("vbench-results")).unwrap();
        t.write_document(&sample_doc()).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(load(&real).unwrap(), sample_doc());
        assert_eq!(t.path(), link.as_path());
    }

    #[test]
    fn a_stream_is_written_through_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let before = fs::metadata("/dev/null").unwrap();
        let t = OutTarget::resolve(Path::new("/dev/null"), Path::new("vbench-results")).unwrap();
        t.write_bytes(b"x", Some(0o755)).unwrap();
        let after = fs::metadata("/dev/null").unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(after.file_type().is_char_device());
        assert_eq!(before.permissions().mode(), after.permissions().mode());
    }

    #[test]
    fn unique_names_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let a = OutTarget::create_unique(dir.path(), "run-1", "json").unwrap();
        let b = OutTarget::create_unique(dir.path(), "run-1", "json").unwrap();
        assert_ne!(a.path(), b.path());
        assert!(b.path().ends_with("run-1-2.json"), "{}", b.path().display());
        assert!(a.path().exists() && b.path().exists());
    }
}
