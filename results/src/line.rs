//! Parsing of the one machine-readable line a workload prints:
//! `VBENCH task=<name> <param>=<value> ... iters=<n> ns=<n> checksum=<hex>`.

use crate::schema::WorkloadReport;
use std::collections::BTreeMap;

/// The first word of a workload's result line.
pub const PREFIX: &str = "VBENCH";

/// A result line that is present but malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    /// A token is not of the form `key=value`.
    #[error("result line token {0:?} is not key=value")]
    Token(String),
    /// A required key is absent.
    #[error("result line lacks `{0}=`")]
    Missing(&'static str),
    /// A numeric key has a value that is not a number.
    #[error("result line value {key}={value:?} is not an unsigned integer")]
    Number {
        /// The key.
        key: &'static str,
        /// The offending value.
        value: String,
    },
    /// The same key appears twice.
    #[error("result line repeats key `{0}`")]
    Duplicate(String),
    /// More than one result line was printed.
    #[error("the program printed more than one result line")]
    Multiple,
}

/// Finds and parses the result line in a workload's standard output.
///
/// Returns `Ok(None)` when the output holds no line starting with `VBENCH ` (a user's own
/// program), and an error when a line is there but malformed or repeated.
///
/// ```
/// let out = "VBENCH task=getpid iters=10 ns=1500 checksum=000000000000000a\n";
/// let r = vbench_results::parse_report(out).unwrap().unwrap();
/// assert_eq!((r.task.as_str(), r.iters, r.ns), ("getpid", 10, 1500));
/// ```
pub fn parse_report(stdout: &str) -> Result<Option<WorkloadReport>, LineError> {
    let mut found = None;
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix(PREFIX).and_then(|r| r.strip_prefix(' ')) else {
            continue;
        };
        if found.is_some() {
            return Err(LineError::Multiple);
        }
        found = Some(parse_fields(rest)?);
    }
    Ok(found)
}

fn parse_fields(rest: &str) -> Result<WorkloadReport, LineError> {
    let mut map = BTreeMap::new();
    let mut order = Vec::new();
    for tok in rest.split_ascii_whitespace() {
        let (k, v) = tok
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| LineError::Token(tok.to_string()))?;
        if map.insert(k.to_string(), v.to_string()).is_some() {
            return Err(LineError::Duplicate(k.to_string()));
        }
        order.push(k.to_string());
    }
    let mut take = |key: &'static str| map.remove(key).ok_or(LineError::Missing(key));
    let task = take("task")?;
    let num = |key: &'static str, value: String| {
        value
            .parse::<u64>()
            .map_err(|_| LineError::Number { key, value })
    };
    let iters = num("iters", take("iters")?)?;
    let ns = num("ns", take("ns")?)?;
    let checksum = take("checksum")?;
    let params = order
        .into_iter()
        .filter_map(|k| map.remove(&k).map(|v| (k, v)))
        .collect();
    Ok(WorkloadReport {
        task,
        params,
        iters,
        ns,
        checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_line_with_params() {
        let out = "noise\nVBENCH task=sha256 size=1048576 iters=4 ns=123456 checksum=00ff\n";
        let r = parse_report(out).unwrap().unwrap();
        assert_eq!(r.task, "sha256");
        assert_eq!(r.iters, 4);
        assert_eq!(r.ns, 123456);
        assert_eq!(r.checksum, "00ff");
        assert_eq!(r.params, vec![("size".to_string(), "1048576".to_string())]);
    }

    #[test]
    fn absent_line_is_none() {
        assert_eq!(parse_report("hello\nVBENCHX task=a\n").unwrap(), None);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(
            parse_report("VBENCH task=a iters=1 ns=2\n").unwrap_err(),
            LineError::Missing("checksum")
        );
        assert!(matches!(
            parse_report("VBENCH task=a iters=x ns=2 checksum=1\n").unwrap_err(),
            LineError::Number { key: "iters", .. }
        ));
        assert!(matches!(
            parse_report("VBENCH task=a bare iters=1 ns=2 checksum=1\n").unwrap_err(),
            LineError::Token(_)
        ));
        assert!(matches!(
            parse_report("VBENCH task=a task=b iters=1 ns=2 checksum=1\n").unwrap_err(),
            LineError::Duplicate(_)
        ));
        let two = "VBENCH task=a iters=1 ns=2 checksum=1\nVBENCH task=a iters=1 ns=2 checksum=1\n";
        assert_eq!(parse_report(two).unwrap_err(), LineError::Multiple);
    }
}
