//! repro-check: rebuild a commit's OS images from a clean clone and compare them with published
//! hashes or files, with the inputs their build records name. Exit status: 0 when every published
//! file is reproduced, 1 when one differs, 2 on an error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Parser};

use icos::repro::{
    check_records, current_build_root, find_records, repro_check, Expected, ImageRef, Repository, ReproCheckOptions,
    Verdict,
};

#[derive(Parser)]
#[command(
    name = "repro-check",
    version,
    about = "Rebuild a commit's images in a clean clone and compare them with the published ones",
    group(ArgGroup::new("expected").required(true).args(["sha256sums", "published"]))
)]
struct Args {
    /// The commit to rebuild (any revision git understands) [default: the build record's commit,
    /// else HEAD].
    #[arg(long)]
    commit: Option<String>,
    /// The build record of the published image (what built it) [default: build-record.json next
    /// to the SHA256SUMS, or in the published directory of each image]. Its build root must be
    /// the one this runs in (ci/tools/repro-check enters it), its commit is the default --commit,
    /// and the recorded inputs that differ here are listed.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// The published SHA256SUMS of the image: hashes only.
    #[arg(long, value_name = "FILE")]
    sha256sums: Option<PathBuf>,
    /// A directory of published files (for several --image: one <os>/<variant>/ subdirectory
    /// each); files that differ are explained by `icos diff`.
    #[arg(long, value_name = "DIR")]
    published: Option<PathBuf>,
    /// The image to rebuild, as <os>/<variant>; repeat for several.
    #[arg(long = "image", value_name = "OS/VARIANT", default_value = "guestos/dev", value_parser = ImageRef::parse)]
    images: Vec<ImageRef>,
    /// The working tree whose commit is checked (default: the one this runs from).
    #[arg(long, value_name = "DIR")]
    repository: Option<PathBuf>,
    /// Check the commit even though the working tree has changes it does not contain.
    #[arg(long)]
    allow_dirty: bool,
    /// Where the clone and its Bazel output base go (emptied first) [default: $TMPDIR/icos-repro-check-<commit>].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the clone and its output base afterwards.
    #[arg(long)]
    keep: bool,
    /// Fetch first, then build in a network namespace with no network.
    #[arg(long)]
    offline: bool,
    /// The Bazel program.
    #[arg(long, default_value = "bazel", value_name = "PROGRAM")]
    bazel: PathBuf,
    /// An extra `bazel build` argument, e.g. --jobs=1; repeat for several.
    #[arg(long = "bazel-build-arg", value_name = "ARG", allow_hyphen_values = true)]
    build_args: Vec<String>,
    /// The most differences each diff report lists.
    #[arg(long, default_value_t = 200)]
    max_differences: usize,
}

/// Under `bazel run` the program runs in its runfiles; relative paths mean the caller's directory.
fn from_caller(path: PathBuf) -> PathBuf {
    match std::env::var_os("BUILD_WORKING_DIRECTORY") {
        Some(dir) if path.is_relative() => Path::new(&dir).join(path),
        _ => path,
    }
}

fn run(args: Args) -> Result<Verdict, Box<dyn std::error::Error>> {
    let start = args
        .repository
        .map(from_caller)
        .or_else(|| std::env::var_os("BUILD_WORKSPACE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let repository = Repository::containing(&start)?;
    let expected = match (args.sha256sums, args.published) {
        (Some(sums), _) => Expected::Sha256Sums(from_caller(sums)),
        (None, Some(dir)) => Expected::Published(from_caller(dir)),
        (None, None) => unreachable!("clap requires one of --sha256sums and --published"),
    };
    let records = find_records(&expected, &args.images, args.record.map(from_caller).as_deref())?;
    let recorded_commit =
        records.iter().flatten().map(|record| record.commit.clone()).find(|commit| commit != "unknown");
    let commit = repository.resolve(args.commit.or(recorded_commit).as_deref().unwrap_or("HEAD"))?;
    check_records(&records, &args.images, &commit, &current_build_root())?;
    if args.allow_dirty {
        if let Err(dirty) = repository.check_clean(&commit) {
            eprintln!("repro-check: warning (--allow-dirty): {dirty}");
        }
    } else {
        repository.check_clean(&commit)?;
    }
    let work_dir = args
        .work_dir
        .map(from_caller)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("icos-repro-check-{}", &commit[..12.min(commit.len())])));
    let options = ReproCheckOptions {
        repository: repository.root.to_string_lossy().into_owned(),
        commit,
        images: args.images,
        expected,
        work_dir,
        keep: args.keep,
        offline: args.offline,
        bazel: args.bazel,
        build_args: args.build_args,
        max_differences: args.max_differences,
        records,
    };
    Ok(repro_check(&options)?)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(Verdict::Reproduced) => {
            println!("repro-check: every published file was reproduced");
            ExitCode::SUCCESS
        }
        Ok(Verdict::Differs) => {
            println!("repro-check: the rebuild differs from the published files");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("repro-check: {error}");
            ExitCode::from(2)
        }
    }
}
