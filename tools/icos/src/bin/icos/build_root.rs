//! `icos build-root`: the build root as a pinned OCI image made from ci/container's package list
//! and lock (see `icos::build_root`), and its unpacking into a directory.

use std::error::Error;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use icos::base_image::{Mode, DEFAULT_MIRROR};
use icos::build_root::{build, read_pin, write_lock_and_pin, BuildRootSpec, DEFAULT_SOURCE_DATE_EPOCH, DEFAULT_SUITE};
use icos::oci::Store;

#[derive(Subcommand)]
pub enum BuildRootCommand {
    /// Build the build root from packages.txt and packages.lock with mmdebstrap, check that it
    /// holds exactly the locked packages, put it into the store and print its digest.
    Build(BuildArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// The directory with packages.txt, packages.lock and the pin build-root.pin.
    #[arg(long, default_value = "ci/container")]
    dir: PathBuf,
    #[arg(long, default_value = DEFAULT_SUITE)]
    suite: String,
    /// The Debian archive to install from. The image does not depend on it, only on the packages
    /// it serves. An empty value is no value, as for ci/container/container-run.sh.
    #[arg(long, env = "ICOS_DEBIAN_MIRROR")]
    mirror: Option<String>,
    /// CA certificates (PEM) that cargo trusts while it downloads cargo-bazel's crates, such as
    /// the host's bundle behind a TLS proxy. Not kept in the image.
    #[arg(long)]
    ca_certificates: Option<PathBuf>,
    /// Make a new lock from the newest packages, build from it twice (the two builds must be the
    /// same image), and rewrite the lock and the pin.
    #[arg(long)]
    relock: bool,
    /// Exit 1 unless the image is the one build-root.pin names.
    #[arg(long, conflicts_with = "relock")]
    check_pin: bool,
    /// The OCI store to put the image into (created if missing).
    #[arg(long)]
    store: PathBuf,
    #[arg(long, default_value = "mmdebstrap")]
    mmdebstrap: PathBuf,
    /// Keep the image archive and the logs of failed steps here. Default: a temporary directory
    /// in the store, removed afterwards.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

pub fn run(command: BuildRootCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        BuildRootCommand::Build(args) => run_build(args),
    }
}

fn run_build(args: BuildArgs) -> Result<ExitCode, Box<dyn Error>> {
    let (work_dir, _temporary) = super::base_image::work_dir(&args.store, args.work_dir, ".icos-build-root-")?;
    let pin_path = args.dir.join("build-root.pin");
    let spec = BuildRootSpec {
        packages: args.dir.join("packages.txt"),
        lock: args.dir.join("packages.lock"),
        suite: args.suite,
        mirror: args.mirror.filter(|mirror| !mirror.is_empty()).unwrap_or_else(|| DEFAULT_MIRROR.to_owned()),
        source_date_epoch: DEFAULT_SOURCE_DATE_EPOCH,
        mmdebstrap: args.mmdebstrap,
        ca_certificates: args.ca_certificates,
        work_dir,
        mode: if args.relock { Mode::Relock } else { Mode::Locked },
    };
    // A pin that cannot be read fails before the (long) build.
    let expected = if args.check_pin { Some(read_pin(&pin_path)?) } else { None };
    let built = build(&spec)?;
    let image = Store::new(&args.store).put(&built.archive)?;
    fs::remove_file(&built.archive).map_err(|error| format!("cannot remove {}: {error}", built.archive.display()))?;
    if args.relock {
        write_lock_and_pin(&spec.lock, &pin_path, &built)?;
    }
    println!("{}", image.digest);
    if let Some(pin) = expected {
        if pin.digest != image.digest {
            eprintln!(
                "icos: the build root rebuilt from {} is {}, but {} pins {}: the lock made other bytes here \
                 (another mmdebstrap, or a file that differs from one build to the next); where the pinned \
                 image is available, compare the two with `icos diff`",
                spec.lock.display(),
                image.digest,
                pin_path.display(),
                pin.digest
            );
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
