//! `icos base-image`: pinned base images built from an OS's context directory (package lists,
//! lock, pin), and the summary of a re-pin for its pull request.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use icos::base_image::{
    build, read_lock, read_pin, summary, write_lock_and_pin, BaseImageSpec, Mode, Variant, DEFAULT_MIRROR,
    DEFAULT_SOURCE_DATE_EPOCH, DEFAULT_SUITE,
};
use icos::oci::Store;

#[derive(Subcommand)]
pub enum BaseImageCommand {
    /// Build an OS's base image from its Dockerfile.base, package lists and lock, check that it
    /// holds exactly the locked packages, put it into the store and print its digest.
    Build(BuildArgs),
    /// Print what changed between two locks, as Markdown.
    Summary {
        /// The lock before.
        #[arg(long)]
        old: PathBuf,
        /// The lock after.
        #[arg(long)]
        new: PathBuf,
        /// The heading, e.g. "GuestOS dev".
        #[arg(long)]
        title: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    Dev,
    Prod,
}

impl From<VariantArg> for Variant {
    fn from(variant: VariantArg) -> Self {
        match variant {
            VariantArg::Dev => Variant::Dev,
            VariantArg::Prod => Variant::Prod,
        }
    }
}

#[derive(Args)]
pub struct BuildArgs {
    /// The OS's context directory: packages.common, packages.<variant>, packages.<variant>.lock and
    /// the pin docker-base.<variant>.
    #[arg(long)]
    context: PathBuf,
    /// The OS's Dockerfile.base.
    #[arg(long)]
    dockerfile: PathBuf,
    /// The OS's name: the image is <OS>-base-<VARIANT>.
    #[arg(long)]
    os: String,
    #[arg(long, value_enum)]
    variant: VariantArg,
    /// The Debian suite to bootstrap.
    #[arg(long, default_value = DEFAULT_SUITE)]
    suite: String,
    /// The Debian archive to install from (default http://deb.debian.org/debian), e.g. a snapshot
    /// (http://snapshot.debian.org/archive/debian/20250901T000000Z) to rebuild an older lock. The
    /// image does not depend on it, only on the packages it serves. An empty value is no value, as
    /// for ci/container/container-run.sh.
    #[arg(long, env = "ICOS_DEBIAN_MIRROR")]
    mirror: Option<String>,
    /// The image's timestamps. Not taken from $SOURCE_DATE_EPOCH: the pin depends on it, so it is
    /// the same for every build unless given here.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SOURCE_DATE_EPOCH)]
    source_date_epoch: u64,
    /// Make a new lock from the newest packages, build from it, and rewrite the lock and the pin.
    #[arg(long)]
    relock: bool,
    /// Exit 1 unless the image is the one the pin file docker-base.<VARIANT> names.
    #[arg(long, conflicts_with = "relock")]
    check_pin: bool,
    /// The OCI store to put the image into (created if missing).
    #[arg(long)]
    store: PathBuf,
    #[arg(long, default_value = "podman")]
    podman: PathBuf,
    #[arg(long, default_value = "mmdebstrap")]
    mmdebstrap: PathBuf,
    /// Keep the image archive and the logs of failed steps here. Default: a temporary directory
    /// in the store, removed afterwards.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

pub fn run(command: BaseImageCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        BaseImageCommand::Build(args) => run_build(args),
        BaseImageCommand::Summary { old, new, title } => {
            print!("{}", summary(&title, &read_lock(&old)?, &read_lock(&new)?));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_build(args: BuildArgs) -> Result<ExitCode, Box<dyn Error>> {
    let (work_dir, _temporary) = work_dir(&args.store, args.work_dir, ".icos-base-image-")?;
    let spec = BaseImageSpec {
        os: args.os,
        context: args.context,
        variant: args.variant.into(),
        dockerfile: args.dockerfile,
        suite: args.suite,
        mirror: args.mirror.filter(|mirror| !mirror.is_empty()).unwrap_or_else(|| DEFAULT_MIRROR.to_owned()),
        source_date_epoch: args.source_date_epoch,
        podman: args.podman,
        mmdebstrap: args.mmdebstrap,
        work_dir,
        mode: if args.relock { Mode::Relock } else { Mode::Locked },
    };
    // Read now: a pin file that cannot be read must not cost a build.
    let pinned = if args.check_pin { Some(read_pin(&spec)?) } else { None };
    let built = build(&spec)?;
    let image = Store::new(&args.store).put(&built.archive)?;
    if args.relock {
        write_lock_and_pin(&spec, &built)?;
    }
    println!("{image}");
    match pinned {
        Some(pin) if pin != built.pin() => {
            eprintln!(
                "icos: {} pins {pin}, but the build gives {}: the image is not reproducible from its inputs, \
                 or they changed without a re-pin; re-pin with `ci/container/container-run.sh ci/base-images/rebuild`",
                spec.pin_path().display(),
                built.pin()
            );
            Ok(ExitCode::from(1))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The work directory of an image build: `given`, or a temporary directory in the store (created
/// with it), removed when the returned guard drops.
pub fn work_dir(
    store: &Path,
    given: Option<PathBuf>,
    prefix: &str,
) -> Result<(PathBuf, Option<tempfile::TempDir>), Box<dyn Error>> {
    fs::create_dir_all(store).map_err(|error| format!("cannot create the store {}: {error}", store.display()))?;
    if let Some(dir) = given {
        return Ok((dir, None));
    }
    let temporary = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(store)
        .map_err(|error| format!("cannot create a work directory in {}: {error}", store.display()))?;
    Ok((temporary.path().to_owned(), Some(temporary)))
}
