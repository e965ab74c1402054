//! `icos diff A B`: every difference between two artifacts or two directories of artifacts.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use icos::diff::diff;

/// Without --json, at most this many differences are printed unless --max-differences says
/// otherwise.
const DEFAULT_HUMAN_MAX: usize = 1000;

#[derive(Args)]
pub struct DiffArgs {
    /// The first artifact (the reference, e.g. the published one), or a directory of them.
    a: PathBuf,
    /// The second artifact (e.g. the rebuild), or a directory of them.
    b: PathBuf,
    /// Print one JSON document instead of the report for people.
    #[arg(long)]
    json: bool,
    /// Show at most N differences and count the rest (default: 1000 for people, all in JSON).
    #[arg(long, value_name = "N")]
    max_differences: Option<usize>,
}

/// Exit status 0 when identical, 1 when different; errors (exit 2) go back to main.
pub fn run(args: DiffArgs) -> Result<ExitCode, Box<dyn Error>> {
    let report = diff(&args.a, &args.b)?;
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&report.json(args.max_differences))?;
        text.push('\n');
        text
    } else {
        report.human(Some(args.max_differences.unwrap_or(DEFAULT_HUMAN_MAX)))
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(if report.is_identical() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
