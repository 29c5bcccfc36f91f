//! Progress of a run's rounds. On a terminal: a bar with an ETA that ticks on its own, so it
//! moves during long cells. Otherwise (CI, a log file): one line per round with the elapsed
//! time and an ETA, so a long run is never silent.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

/// How often the terminal bar redraws while a cell runs.
const TICK: Duration = Duration::from_millis(200);

/// The display of one run.
pub struct Progress {
    bar: ProgressBar,
    lines: bool,
    started: Instant,
    warmup: u32,
    rounds: u32,
}

impl Progress {
    /// A bar on a terminal (`terminal`), else lines; `cells` runs per round.
    pub fn new(warmup: u32, rounds: u32, cells: usize, terminal: bool) -> Progress {
        let bar = if terminal {
            let total = u64::from(warmup + rounds) * cells as u64;
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
            b.enable_steady_tick(TICK);
            b
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            lines: !terminal,
            started: Instant::now(),
            warmup,
            rounds,
        }
    }

    /// A cell of round `round` (counting warm-up rounds from 0) starts.
    pub fn cell(&self, round: u32, workload: &str, backend: &str) {
        if !self.bar.is_hidden() {
            let what = if round < self.warmup {
                "warm-up"
            } else {
                "round"
            };
            self.bar.set_message(format!("{what} {workload} {backend}"));
        }
    }

    /// A cell finished.
    pub fn ran(&self) {
        self.bar.inc(1);
    }

    /// Round `round` (counting warm-up rounds from 0) is complete.
    pub fn round_done(&self, round: u32) {
        if self.lines {
            eprintln!(
                "{}",
                round_line(round, self.warmup, self.rounds, self.started.elapsed())
            );
        }
    }

    /// The run is over: the bar goes away.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `vbench: round 3/10 done, elapsed 12s, ETA 28s` (or `warm-up 1/1`) after round `round`
/// (from 0, warm-up rounds first) completed `elapsed` after the start; the ETA assumes the
/// remaining rounds take as long as the ones so far.
pub fn round_line(round: u32, warmup: u32, rounds: u32, elapsed: Duration) -> String {
    let done = round + 1;
    let left = (warmup + rounds).saturating_sub(done);
    let eta = elapsed.mul_f64(f64::from(left) / f64::from(done));
    let (what, i, n) = if round < warmup {
        ("warm-up", done, warmup)
    } else {
        ("round", done - warmup, rounds)
    };
    format!(
        "vbench: {what} {i}/{n} done, elapsed {}, ETA {}",
        fmt_secs(elapsed),
        fmt_secs(eta)
    )
}

/// `12s`, `11m 30s`, `1h 02m`.
fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_rounds_and_estimate_the_rest() {
        let s = Duration::from_secs;
        assert_eq!(
            round_line(0, 1, 3, s(10)),
            "vbench: warm-up 1/1 done, elapsed 10s, ETA 30s"
        );
        assert_eq!(
            round_line(1, 1, 3, s(20)),
            "vbench: round 1/3 done, elapsed 20s, ETA 20s"
        );
        assert_eq!(
            round_line(3, 1, 3, s(40)),
            "vbench: round 3/3 done, elapsed 40s, ETA 0s"
        );
        assert_eq!(
            round_line(0, 0, 10, s(90)),
            "vbench: round 1/10 done, elapsed 1m 30s, ETA 13m 30s"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_secs(Duration::from_millis(400)), "0s");
        assert_eq!(fmt_secs(Duration::from_secs(59)), "59s");
        assert_eq!(fmt_secs(Duration::from_secs(61)), "1m 01s");
        assert_eq!(fmt_secs(Duration::from_secs(3720)), "1h 02m");
    }
}
