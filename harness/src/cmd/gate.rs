//! `vbench gate` and `vbench compare`: the regression gate on overhead ratios, and named
//! baselines (`vbench-results/baselines/NAME.json`). The statistics live in
//! [`vbench_results::compare`], the renderers in [`vbench_reports::ci`]; this is the glue.
//!
//! Exit status of the gate: 0 no regression, 1 a regression (named on stdout), 2 bad input
//! (missing baseline, different workload set, schema mismatch, ...), with the reason on stderr.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vbench_results::compare::{self, GateConfig, GateReport, Settings, Threshold};
use vbench_results::store::OutTarget;
use vbench_results::Document;

/// The results directory that default results files and named baselines live under.
pub const RESULTS_DIR: &str = "vbench-results";

/// Exit status of a gate that found a regression.
pub const EXIT_REGRESSION: u8 = 1;
/// Exit status of a gate given input it cannot judge.
pub const EXIT_BAD_INPUT: u8 = 2;

/// How to judge and where to write the CI outputs; shared by `gate`, `compare` and
/// `run --baseline`.
#[derive(Args, Clone, Debug, Default)]
pub struct GateSettings {
    /// Noise threshold: a change of an overhead ratio whose confidence interval is not wholly
    /// beyond it is never a regression. A percentage (10%) or a fraction (0.10). [default: 5%]
    #[arg(long, value_parser = parse_threshold)]
    pub threshold: Option<Threshold>,
    /// Significance level of the permutation test; the interval is at 1 - alpha. [default: 0.05]
    #[arg(long, value_parser = parse_alpha)]
    pub alpha: Option<f64>,
    /// TOML file with the default threshold, alpha, and per-metric thresholds, e.g.
    /// `[metrics."getpid/container"] threshold = "25%"` (`*` matches any workload or backend).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write JUnit XML here: one test case per gated metric, a failure per regression.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write github-action-benchmark JSON (tool: customSmallerIsBetter) here.
    #[arg(long = "benchmark-json", value_name = "FILE")]
    pub benchmark_json: Option<PathBuf>,
}

/// `vbench gate`.
#[derive(Args, Clone, Debug)]
pub struct GateArgs {
    /// The baseline: a file, or a name saved with `vbench run --save-baseline NAME`.
    #[arg(long, value_name = "FILE|NAME")]
    pub baseline: String,
    /// The results file to judge.
    #[arg(value_name = "RESULTS", required_unless_present = "results")]
    pub file: Option<PathBuf>,
    /// The results file to judge (instead of the positional argument).
    #[arg(long = "results", value_name = "RESULTS", conflicts_with = "file")]
    pub results: Option<PathBuf>,
    #[command(flatten)]
    pub settings: GateSettings,
}

/// `vbench compare`.
#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// The older results: a file or a baseline name.
    #[arg(value_name = "BASE")]
    pub base: String,
    /// The newer results file.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
    #[command(flatten)]
    pub settings: GateSettings,
}

fn parse_threshold(s: &str) -> Result<Threshold, String> {
    Threshold::parse(s).map_err(|e| e.to_string())
}

/// clap's parser of `--save-baseline NAME`: an invalid name is a usage error before the run.
pub fn parse_baseline_name(s: &str) -> Result<String, String> {
    compare::validate_baseline_name(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_alpha(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("{s:?} is not a significance level in (0, 1)")),
    }
}

/// Saves `doc` as baseline `name` (atomically), returning its path.
pub fn save_baseline(doc: &Document, name: &str) -> Result<PathBuf> {
    let path = compare::baseline_path(Path::new(RESULTS_DIR), name)?;
    vbench_results::write_atomic(&path, doc)?;
    Ok(path)
}

/// Loads a baseline by name (`vbench-results/baselines/NAME.json`) or by path.
pub fn load_baseline(name_or_path: &str) -> Result<Document> {
    let path = compare::resolve_baseline(Path::new(RESULTS_DIR), name_or_path)?;
    Ok(vbench_results::load(&path)?)
}

/// Renders a gate report in one CI format.
type Renderer = fn(&GateReport) -> String;

/// Judges `new` against `base`, prints the table, writes the requested CI outputs, and returns
/// the report. Errors are bad input.
pub fn evaluate(
    base: &Document,
    base_label: &str,
    new: &Document,
    new_label: &str,
    s: &GateSettings,
) -> Result<GateReport> {
    let config = s.config.as_deref().map(GateConfig::load).transpose()?;
    let settings = Settings::new(s.threshold, s.alpha, config)?;
    let mut report = compare::compare(base, new, &settings)?;
    report.base.label = base_label.to_string();
    report.new.label = new_label.to_string();
    print!("{}", vbench_reports::ci::text(&report));
    let outputs: [(&Option<PathBuf>, Renderer); 3] = [
        (&s.markdown, vbench_reports::ci::markdown),
        (&s.junit, vbench_reports::ci::junit),
        (&s.benchmark_json, vbench_reports::ci::benchmark_json),
    ];
    for (path, render) in outputs {
        if let Some(path) = path {
            // as --out: atomically over a regular file, through a device or pipe, else refused
            OutTarget::resolve(path, Path::new(crate::cmd::common::RESULTS_DIR))?
                .write_bytes(render(&report).as_bytes(), None)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(report)
}

/// Checks the output paths before any work, as `--out` is checked.
fn check_outputs(s: &GateSettings) -> Result<()> {
    crate::cmd::common::check_outputs(
        [&s.markdown, &s.junit, &s.benchmark_json]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path),
    )
}

/// The gate's exit status for an evaluation: 0 pass, 1 regression, 2 bad input (the reason
/// printed to stderr).
pub fn exit_status(what: &str, outcome: Result<GateReport>) -> ExitCode {
    match outcome {
        Ok(r) if r.passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_REGRESSION),
        Err(e) => {
            eprintln!("vbench {what}: bad input: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// Judges a run against a baseline document in memory (for `vbench run --baseline NAME`).
pub fn gate_documents(
    base: &Document,
    base_label: &str,
    new: &Document,
    new_label: &str,
    s: &GateSettings,
) -> ExitCode {
    exit_status("gate", evaluate(base, base_label, new, new_label, s))
}

/// `vbench gate --baseline FILE|NAME RESULTS`.
pub fn gate(a: GateArgs) -> Result<ExitCode> {
    check_outputs(&a.settings)?;
    let outcome = (|| {
        let path = a
            .file
            .or(a.results)
            .ok_or_else(|| anyhow!("no results file to judge"))?;
        let base = load_baseline(&a.baseline)?;
        let new = vbench_results::load(&path)?;
        evaluate(
            &base,
            &a.baseline,
            &new,
            &path.display().to_string(),
            &a.settings,
        )
    })();
    Ok(exit_status("gate", outcome))
}

/// `vbench compare BASE NEW`: the gate's table, exit 0 whatever changed (2 on bad input).
pub fn compare(a: CompareArgs) -> Result<ExitCode> {
    check_outputs(&a.settings)?;
    let outcome = (|| {
        let base = load_baseline(&a.base)?;
        let new = vbench_results::load(&a.new)?;
        evaluate(
            &base,
            &a.base,
            &new,
            &a.new.display().to_string(),
            &a.settings,
        )
    })();
    Ok(match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => exit_status("compare", Err(e)),
    })
}
