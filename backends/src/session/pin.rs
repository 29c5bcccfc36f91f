//! Pinning a run to one CPU, the same way on every backend: the native and peer child before
//! exec, the container's payload before exec, bt's translating thread and kvm's vCPU thread.

use crate::BackendError;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The calling thread, for the affinity calls.
fn me() -> Pid {
    Pid::from_raw(0)
}

/// The CPUs this thread may run on (its affinity mask), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(me()) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// `cpus` as a compact list ("0-3,6").
pub fn cpu_list(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Checks that `cpu` is one this process may run on; the error names it and the valid CPUs.
pub fn check_cpu(cpu: usize) -> Result<(), String> {
    let allowed = allowed_cpus();
    if allowed.contains(&cpu) {
        Ok(())
    } else {
        Err(format!(
            "CPU {cpu} does not exist or is not available to vbench (available: {})",
            cpu_list(&allowed)
        ))
    }
}

/// The affinity set of one CPU (checked), made before a fork so that the child only has to
/// apply it with [`apply`].
pub fn one_cpu_set(cpu: usize) -> Result<CpuSet, BackendError> {
    check_cpu(cpu).map_err(BackendError::Invalid)?;
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| BackendError::Invalid(format!("CPU {cpu}: {e}")))?;
    Ok(set)
}

/// The same set as libc's type, for the container's post-clone child, which calls libc only.
pub fn one_cpu_set_raw(cpu: usize) -> Result<libc::cpu_set_t, BackendError> {
    check_cpu(cpu).map_err(BackendError::Invalid)?;
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET sets one bit below CPU_SETSIZE
    // (check_cpu accepted only CPUs of our own mask, which are below it).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    Ok(set)
}

/// Applies `set` to the calling thread. Allocation-free and async-signal-safe: usable between
/// fork and exec.
pub fn apply(set: &CpuSet) -> std::io::Result<()> {
    sched_setaffinity(me(), set).map_err(std::io::Error::from)
}

/// Pins the calling thread to one CPU until dropped; then its old affinity comes back.
pub struct PinGuard(Option<CpuSet>);

impl PinGuard {
    /// Pins the calling thread to `cpu` (nothing for `None`).
    pub fn to(cpu: Option<usize>) -> Result<PinGuard, BackendError> {
        let Some(cpu) = cpu else {
            return Ok(PinGuard(None));
        };
        let set = one_cpu_set(cpu)?;
        let old = sched_getaffinity(me()).map_err(|e| BackendError::Os {
            what: "reading the thread's CPU affinity".into(),
            source: e.into(),
        })?;
        apply(&set).map_err(|source| BackendError::Os {
            what: format!("pinning to CPU {cpu}"),
            source,
        })?;
        Ok(PinGuard(Some(old)))
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = apply(old);
        }
    }
}

/// The CPU the calling thread is allowed on when it is exactly one (a pinned thread).
pub fn current_single_cpu() -> Option<usize> {
    match allowed_cpus()[..] {
        [one] => Some(one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_compact() {
        assert_eq!(cpu_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(cpu_list(&[0, 2, 3, 7]), "0,2-3,7");
        assert_eq!(cpu_list(&[5]), "5");
    }

    #[test]
    fn a_cpu_that_does_not_exist_is_refused_with_the_valid_range() {
        let e = check_cpu(4000).unwrap_err();
        assert!(e.contains("CPU 4000") && e.contains("available: 0"), "{e}");
        assert!(check_cpu(allowed_cpus()[0]).is_ok());
        assert!(PinGuard::to(Some(100_000)).is_err());
    }

    #[test]
    fn a_guard_pins_and_restores() {
        let before = allowed_cpus();
        let cpu = *before.last().unwrap();
        std::thread::spawn(move || {
            let g = PinGuard::to(Some(cpu)).unwrap();
            assert_eq!(current_single_cpu(), Some(cpu));
            drop(g);
            if before.len() > 1 {
                assert_eq!(current_single_cpu(), None);
            }
        })
        .join()
        .unwrap();
    }
}
