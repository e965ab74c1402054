//! bazel-cache-check: reads the JSON execution log of a build and checks where its image actions
//! came from. By default the build ran in a fresh output base sharing a cache with an earlier
//! build, and every image action must have come from that cache and may be cached remotely; with
//! `--remote-execution` the build ran with --config=rbe from a fresh output base, and every image
//! action must have run on the remote executor. Exit status: 0 passed, 1 failed, 2 on an error.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use icos::exec_log::{check, read_exec_log, Expectation};

#[derive(Parser)]
#[command(
    name = "bazel-cache-check",
    version,
    about = "Check that a build's image actions all came from the cache, or all ran remotely"
)]
struct Args {
    /// The build's --execution_log_json_file.
    exec_log: PathBuf,
    /// Every image action must have run on the remote executor (--config=rbe), instead of coming
    /// from the cache.
    #[arg(long)]
    remote_execution: bool,
    /// Label prefix (leading @ removed) of the targets whose actions build images; repeat for
    /// several. The defaults: the OS packages, and the pinned base images' repositories (named
    /// by Bazel 7 and Bazel 8).
    #[arg(
        long = "image-packages",
        value_name = "LABEL_PREFIX",
        default_values = ["//ic-os/", "_main~base_images~", "_main+base_images+"]
    )]
    image_packages: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let path = args.exec_log.display().to_string();
    let spawns = match File::open(&args.exec_log)
        .map_err(|error| format!("cannot read {path}: {error}"))
        .and_then(|file| read_exec_log(std::io::BufReader::new(file), &path).map_err(|error| error.to_string()))
    {
        Ok(spawns) => spawns,
        Err(error) => {
            eprintln!("bazel-cache-check: {error}");
            return ExitCode::from(2);
        }
    };
    let (expectation, shown, success) = if args.remote_execution {
        (Expectation::RemoteExecution, "ran on the remote executor", "every image action ran remotely")
    } else {
        (Expectation::CacheHit, "from the cache", "a shared cache serves every image action")
    };
    let report = check(&spawns, &args.image_packages, expectation);
    let runners: Vec<String> = report.by_runner.iter().map(|(runner, count)| format!("{count} {runner}")).collect();
    println!("bazel-cache-check: {} spawns: {}", spawns.len(), runners.join(", "));
    println!(
        "bazel-cache-check: image actions (targets under {}): {} of {} {shown}",
        args.image_packages.join(", "),
        report.image_passed,
        report.image_actions
    );
    // Other actions are not checked: one line per kind of finding, with a count and an example.
    let mut others: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (spawn, problem) in &report.others {
        let entry =
            others.entry(format!("{} {problem}", spawn.mnemonic)).or_insert_with(|| (0, spawn.target_label.clone()));
        entry.0 += 1;
    }
    for (finding, (count, example)) in &others {
        println!("bazel-cache-check: note: {count} actions outside the image packages: {finding} (such as {example})");
    }
    for (spawn, problem) in &report.problems {
        println!(
            "bazel-cache-check: FAIL {} {} ({}): {problem}",
            spawn.mnemonic, spawn.target_label, spawn.progress_message
        );
    }
    if report.passed() {
        println!("bazel-cache-check: passed: {success}");
        ExitCode::SUCCESS
    } else {
        if report.image_actions == 0 {
            println!("bazel-cache-check: FAIL: the log has no image action, so it proves nothing");
        }
        ExitCode::from(1)
    }
}
