//! Named baselines: `vbench run --save-baseline NAME` saves under
//! `vbench-results/baselines/NAME.json`, and the gate takes a name or a path.

use super::GateError;
use std::path::{Path, PathBuf};

/// Where named baselines live, under the results directory.
pub const BASELINES_SUBDIR: &str = "baselines";

/// Checks that `name` can name a baseline file: letters, digits, `.`, `_` and `-`, not empty
/// and not starting with `.`. `vbench run --save-baseline` checks it before the run starts.
pub fn validate_baseline_name(name: &str) -> Result<(), GateError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(GateError::BadBaselineName(name.to_string()))
    }
}

/// The file of baseline `name` under the results directory `results_dir`.
pub fn baseline_path(results_dir: &Path, name: &str) -> Result<PathBuf, GateError> {
    validate_baseline_name(name)?;
    Ok(results_dir
        .join(BASELINES_SUBDIR)
        .join(format!("{name}.json")))
}

/// Resolves a baseline given by name or by path: an existing file, or anything that looks like a
/// path (contains `/` or ends in `.json`), is a path; otherwise it is a name under
/// `results_dir/baselines/`. A missing file is [`GateError::MissingBaseline`].
pub fn resolve_baseline(results_dir: &Path, name_or_path: &str) -> Result<PathBuf, GateError> {
    let as_path = Path::new(name_or_path);
    let path = if as_path.is_file() || name_or_path.contains('/') || name_or_path.ends_with(".json")
    {
        as_path.to_path_buf()
    } else {
        baseline_path(results_dir, name_or_path)?
    };
    if !path.is_file() {
        return Err(GateError::MissingBaseline {
            name: name_or_path.to_string(),
            path,
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::testdoc::doc;

    #[test]
    fn baselines_by_name_or_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = baseline_path(dir.path(), "main").unwrap();
        assert_eq!(p, dir.path().join("baselines/main.json"));
        assert!(matches!(
            baseline_path(dir.path(), "../x"),
            Err(GateError::BadBaselineName(_))
        ));
        for bad in ["", ".hidden", "a/b", "a b", "tab\t", "ü"] {
            let e = validate_baseline_name(bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid baseline name"), "{e}");
        }
        for good in ["main", "v1.2_rc-3", "x.json"] {
            validate_baseline_name(good).unwrap();
        }
        let e = resolve_baseline(dir.path(), "main").unwrap_err();
        assert!(matches!(e, GateError::MissingBaseline { .. }));
        assert!(e.to_string().contains("--save-baseline main"), "{e}");
        let d = doc(&["intmix"], 5, |_, _| 1.0);
        crate::write_atomic(&p, &d).unwrap();
        assert_eq!(resolve_baseline(dir.path(), "main").unwrap(), p);
        let s = p.display().to_string();
        assert_eq!(resolve_baseline(Path::new("/elsewhere"), &s).unwrap(), p);
        assert!(resolve_baseline(dir.path(), "nope.json").is_err());
    }
}
