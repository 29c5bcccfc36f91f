//! One measured run: call the backend, then read the workload's result line from its output.

use vbench_backends::{Backend, Invocation};
use vbench_results::{parse_report, Sample};

/// FNV-1a 64 of `bytes` as 16 hex digits.
pub fn fnv1a_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Runs `inv` on `backend`. Returns the sample, or a message when the backend could not run
/// it or its output is malformed (`expects_report`: the program must print a result line).
pub fn run_once(
    backend: &dyn Backend,
    inv: &Invocation,
    expects_report: bool,
) -> Result<Sample, String> {
    let out = backend.run(inv).map_err(|e| e.to_string())?;
    let mut sample = out.sample;
    sample.stdout_digest = fnv1a_hex(&out.stdout);
    if !sample.succeeded() {
        return Ok(sample);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_report(&text) {
        Ok(Some(r)) => sample.report = Some(r),
        Ok(None) if expects_report => {
            return Err(format!(
                "{} exited 0 but printed no result line (stdout: {:?})",
                inv.program.name(),
                text.chars().take(200).collect::<String>()
            ))
        }
        Ok(None) => {}
        Err(e) => return Err(format!("{}: {e}", inv.program.name())),
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
    }
}
