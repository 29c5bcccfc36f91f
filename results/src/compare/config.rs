//! The gate's configuration: noise thresholds, the significance level, and the `gate.toml`
//! file that sets them per metric.

use super::GateError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Default significance level of the permutation test.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Default noise threshold: the relative change of an overhead ratio that is never reported.
/// Calibrated on the project's noisy 2-core machines (`scripts/gate-calibration.sh`): at 5%, 1
/// of 20 gate evaluations of an unchanged build failed, and every one of 10 evaluations of a
/// 10.6% slowdown did; at 10% none of the unchanged ones failed, but only slowdowns of about 19%
/// were caught every time.
pub const DEFAULT_THRESHOLD: f64 = 0.05;

/// A noise threshold: a relative change, as a fraction (0.10 is 10%).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold(pub f64);

impl Threshold {
    /// Parses `10%` (a percentage) or `0.10` (a fraction, below 10).
    pub fn parse(s: &str) -> Result<Self, GateError> {
        let t = s.trim();
        let v = match t.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().ok().map(|v| v / 100.0),
            // a bare 10 is most likely meant as 10%: refuse bare numbers above 1
            None => t.parse::<f64>().ok().filter(|v| *v <= 1.0),
        };
        match v {
            Some(v) if v.is_finite() && v >= 0.0 => Ok(Threshold(v)),
            _ => Err(GateError::BadThreshold(s.to_string())),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", fmt_pct(self.0))
    }
}

fn fmt_pct(fraction: f64) -> String {
    let p = fraction * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round())
    } else {
        format!("{p:.1}")
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Num(v) => v.to_string(),
            Raw::Text(s) => s,
        };
        Threshold::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The gate configuration file (TOML):
///
/// ```toml
/// threshold = "10%"        # default noise threshold of every metric (built in: 5%)
/// alpha = 0.05             # significance level
///
/// [metrics."getpid/container"]
/// threshold = "25%"        # a noisier metric
///
/// [metrics."*/kvm"]        # `*` matches any workload (or backend)
/// threshold = 0.15
///
/// [metrics."sha256/bt"]
/// ignore = true            # reported, never gated
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Default noise threshold.
    pub threshold: Option<Threshold>,
    /// Significance level.
    pub alpha: Option<f64>,
    /// Per-metric settings, keyed by `workload/backend` where either side may be `*`.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricConfig>,
}

/// Settings of one metric (or a pattern of metrics).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Noise threshold of this metric.
    pub threshold: Option<Threshold>,
    /// Report the metric but never fail on it.
    #[serde(default)]
    pub ignore: bool,
}

impl GateConfig {
    /// Parses a configuration; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, GateError> {
        let cfg: GateConfig = toml::from_str(text).map_err(|e| GateError::Config {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        for pattern in cfg.metrics.keys() {
            let ok = pattern
                .split_once('/')
                .is_some_and(|(w, b)| !w.is_empty() && !b.is_empty() && !b.contains('/'));
            if !ok {
                return Err(GateError::Config {
                    path: path.to_path_buf(),
                    message: format!(
                        "metric {pattern:?} is not of the form workload/backend (either may be *)"
                    ),
                });
            }
        }
        Ok(cfg)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, GateError> {
        let text = std::fs::read_to_string(path).map_err(|e| GateError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(path, &text)
    }
}

/// Whether the configuration entry `pattern` (`workload/backend`, either side may be `*`)
/// matches the metric of `workload` on `backend`.
pub fn pattern_matches(pattern: &str, workload: &str, backend: &str) -> bool {
    pattern
        .split_once('/')
        .is_some_and(|(w, b)| (w == "*" || w == workload) && (b == "*" || b == backend))
}

/// Everything the gate needs besides the two documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Significance level of the permutation test, and `1 -` the confidence of the interval.
    pub alpha: f64,
    /// Noise threshold of metrics the configuration does not name.
    pub threshold: f64,
    /// Per-metric settings from the configuration file.
    pub metrics: BTreeMap<String, MetricConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            alpha: DEFAULT_ALPHA,
            threshold: DEFAULT_THRESHOLD,
            metrics: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// Combines command-line values (which win) with a configuration file and the defaults.
    pub fn new(
        threshold: Option<Threshold>,
        alpha: Option<f64>,
        config: Option<GateConfig>,
    ) -> Result<Self, GateError> {
        let config = config.unwrap_or_default();
        let alpha = alpha.or(config.alpha).unwrap_or(DEFAULT_ALPHA);
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(GateError::BadAlpha(alpha));
        }
        Ok(Settings {
            alpha,
            threshold: threshold
                .or(config.threshold)
                .map_or(DEFAULT_THRESHOLD, |t| t.0),
            metrics: config.metrics,
        })
    }

    /// The configuration entry for a metric: an exact `workload/backend` entry first, then
    /// `workload/*`, then `*/backend`, then `*/*`.
    pub(super) fn metric(&self, workload: &str, backend: &str) -> Option<(&str, &MetricConfig)> {
        [
            format!("{workload}/{backend}"),
            format!("{workload}/*"),
            format!("*/{backend}"),
            "*/*".to_string(),
        ]
        .into_iter()
        .find_map(|k| self.metrics.get_key_value(&k))
        .map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_and_thresholds_are_errors() {
        let e = GateConfig::parse(Path::new("g.toml"), "treshold = 1").unwrap_err();
        assert!(e.to_string().starts_with("gate config g.toml: "), "{e}");
        let e = GateConfig::parse(Path::new("g.toml"), "[metrics.intmix]\nthreshold = 0.1");
        assert!(e.unwrap_err().to_string().contains("workload/backend"));
        let e = GateConfig::parse(Path::new("g.toml"), "threshold = \"ten\"").unwrap_err();
        assert!(e.to_string().contains("invalid threshold"), "{e}");
        assert_eq!(Threshold::parse("10%").unwrap(), Threshold(0.1));
        assert_eq!(Threshold::parse("0.25").unwrap(), Threshold(0.25));
        assert!(Threshold::parse("10").is_err());
        assert!(Threshold::parse("-1%").is_err());
        assert_eq!(Threshold(0.1).to_string(), "10%");
        assert!(matches!(
            Settings::new(None, Some(1.5), None),
            Err(GateError::BadAlpha(_))
        ));
    }
}
