//! Atomic writing and checked reading of results documents.

use crate::schema::{Document, SCHEMA_VERSION};
use serde::Deserialize;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors reading or writing a results file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// The file could not be read, created, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
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
    move |source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
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

/// Writes `doc` to `path` atomically: a temporary file in the same directory, flushed to disk,
/// then renamed over `path`. Readers see the old file or the new one, never a half-written one;
/// on any error the temporary file is removed.
pub fn write_atomic(path: &Path, doc: &Document) -> Result<(), ResultsError> {
    let bytes = serde_json::to_vec_pretty(doc).map_err(|source| ResultsError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results.json".into());
    remove_stale_temporaries(&dir, &name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.write_all(b"\n").map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
}
