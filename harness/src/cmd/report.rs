//! `vbench report`: renders a results file (or the change between two) into a folder of
//! reports: a self-contained `index.html` with inline SVG charts, each chart as `.svg`,
//! Markdown and CSV.

use crate::cmd::common::{writer_gone, KILLED};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `vbench report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The results file to report on (written by `vbench run` or `vbench isolate`).
    #[arg(required_unless_present = "compare", conflicts_with = "compare")]
    pub file: Option<PathBuf>,
    /// An isolation results file (written by `vbench isolate`) to render together with FILE's
    /// benchmarks in one document.
    #[arg(value_name = "ISOLATION", conflicts_with = "compare")]
    pub isolation: Option<PathBuf>,
    /// Show the change between two results files instead: BASE then NEW.
    #[arg(long, num_args = 2, value_names = ["BASE", "NEW"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Folder to write the reports into (created if missing). Default: beside the results
    /// file, named after it (`run.json` -> `run-report/`; with --compare, `NEW-vs-BASE/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Loads a results file; a run whose vbench was killed is said so on stderr (and the report
/// carries a banner), and is reported all the same with exit status 0: the report of the
/// rounds it completed is still what was asked for.
fn load(path: &Path) -> Result<vbench_results::Document> {
    let doc = vbench_results::load(path).context("cannot read the results file")?;
    if writer_gone(&doc) {
        eprintln!("vbench: {}: {KILLED}", path.display());
    }
    Ok(doc)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results".into())
}

fn beside(path: &Path, name: String) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(name),
        _ => PathBuf::from(name),
    }
}

/// The benchmarks of `run` (from `run_path`) with the isolation matrix of `iso` (from
/// `iso_path`): one document. Refuses a pair that is not one of each.
fn merge(
    mut run: vbench_results::Document,
    run_path: &Path,
    iso: vbench_results::Document,
    iso_path: &Path,
) -> Result<vbench_results::Document> {
    if !run.has_benchmarks() {
        anyhow::bail!(
            "{} holds no benchmarks (it was written by `vbench isolate`?): give the results of `vbench run` first, then the isolation results",
            run_path.display()
        );
    }
    if run.isolation.is_some() {
        anyhow::bail!(
            "{} already holds an isolation matrix (it was written by `vbench run --isolate`): report it alone",
            run_path.display()
        );
    }
    let Some(m) = iso.isolation else {
        anyhow::bail!(
            "{} holds no isolation matrix: give the results of `vbench isolate`",
            iso_path.display()
        );
    };
    if run.environment.hostname != iso.environment.hostname {
        eprintln!(
            "vbench: warning: {} was made on {:?} and {} on {:?}: the two halves are from different machines",
            run_path.display(),
            run.environment.hostname,
            iso_path.display(),
            iso.environment.hostname
        );
    }
    run.isolation = Some(m);
    Ok(run)
}

/// Runs `vbench report`.
pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let written = match (&args.compare, &args.file) {
        (Some(pair), _) => {
            let (base_path, new_path) = (&pair[0], &pair[1]);
            let base = load(base_path)?;
            let new = load(new_path)?;
            let out = args.out.clone().unwrap_or_else(|| {
                beside(
                    new_path,
                    format!("{}-vs-{}", stem(new_path), stem(base_path)),
                )
            });
            vbench_reports::write_compare(&base, &new, &out)
                .with_context(|| format!("writing the comparison into {}", out.display()))?
        }
        (None, Some(file)) => {
            let mut doc = load(file)?;
            if let Some(iso) = &args.isolation {
                doc = merge(doc, file, load(iso)?, iso)?;
            }
            let out = args.out.clone().unwrap_or_else(|| match &args.isolation {
                Some(iso) => beside(file, format!("{}-{}-report", stem(file), stem(iso))),
                None => beside(file, format!("{}-report", stem(file))),
            });
            let banner = writer_gone(&doc).then_some(KILLED);
            vbench_reports::write_all_with_banner(&doc, &out, banner)
                .with_context(|| format!("writing the report into {}", out.display()))?
        }
        (None, None) => unreachable!("clap requires a file or --compare"),
    };
    let bytes: u64 = written
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "vbench: wrote {} files ({} charts, {:.1} KiB) in {:.0} ms",
        written.files.len(),
        written.charts,
        bytes as f64 / 1024.0,
        start.elapsed().as_secs_f64() * 1e3
    );
    println!("{}", written.index.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReportArgs,
    }

    fn parse(v: &[&str]) -> Result<ReportArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("report").chain(v.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn arguments() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        assert!(parse(&[]).is_err(), "a file or --compare is required");
        assert!(parse(&["a.json", "--compare", "b.json", "c.json"]).is_err());
        assert!(
            parse(&["--compare", "b.json"]).is_err(),
            "--compare takes two"
        );
        let a = parse(&["--compare", "b.json", "c.json", "--out", "d"]).unwrap();
        assert_eq!(a.compare.unwrap().len(), 2);
        assert_eq!(a.out.unwrap(), PathBuf::from("d"));
    }

    #[test]
    fn default_folders_sit_beside_the_results() {
        assert_eq!(
            beside(
                Path::new("x/run.json"),
                format!("{}-report", stem(Path::new("x/run.json")))
            ),
            PathBuf::from("x/run-report")
        );
        assert_eq!(
            beside(Path::new("run.json"), "r".into()),
            PathBuf::from("r")
        );
    }

    #[test]
    fn a_malformed_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"schema_version\": 1, \"tool\": 3}").unwrap();
        let e = run(parse(&[bad.to_str().unwrap()]).unwrap()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.starts_with("cannot read the results file: "), "{msg}");
        assert!(msg.contains("bad.json: line 1, column"), "{msg}");
        assert!(!dir.path().join("bad-report").exists(), "nothing written");
    }

    #[test]
    fn an_empty_run_still_renders() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty.json");
        let doc = vbench_results::Document {
            schema_version: vbench_results::SCHEMA_VERSION,
            tool: vbench_results::Tool {
                name: "vbench".into(),
                version: "0".into(),
            },
            status: vbench_results::RunStatus::Interrupted,
            started_unix_ms: 0,
            finished_unix_ms: None,
            environment: Default::default(),
            plan: Default::default(),
            samples: Vec::new(),
            summaries: Vec::new(),
            failures: Vec::new(),
            isolation: None,
            writer: None,
        };
        vbench_results::write_atomic(&file, &doc).unwrap();
        run(parse(&[file.to_str().unwrap()]).unwrap()).unwrap();
        let page = std::fs::read_to_string(dir.path().join("empty-report/index.html")).unwrap();
        assert!(page.contains("INTERRUPTED"));
        assert!(page.contains("data-charts=\"0\""));
    }
}
