//! `icos container build`: a Dockerfile built with podman in a private store, saved as an OCI
//! archive, exported as a canonical root filesystem tar, or written as a reproducible OCI archive
//! of that tar.

use std::error::Error;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};

use icos::container::{build, ContainerBuild, ContainerOutput};
use icos::rootfs::Replacement;

#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Build a Dockerfile and write the image as an OCI archive or its root filesystem as a tar.
    /// With --canonical-oci-archive, print the image digest.
    Build(BuildArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("result").required(true).args(["oci_archive", "rootfs", "canonical_oci_archive"])))]
#[command(group(ArgGroup::new("canonical").args(["rootfs", "canonical_oci_archive"])))]
pub struct BuildArgs {
    /// The podman program.
    #[arg(long, default_value = "podman")]
    podman: PathBuf,
    #[arg(long)]
    dockerfile: PathBuf,
    /// A build context directory; several are merged in the order given (a file in two of them is
    /// an error).
    #[arg(long = "context", required = true)]
    contexts: Vec<PathBuf>,
    /// A file of a context (its path under the context as given) that is executable (0755) in
    /// the image; every other file of the contexts is 0644, whatever its mode.
    #[arg(long = "executable", value_name = "PATH")]
    executables: Vec<PathBuf>,
    /// A build argument.
    #[arg(long = "build-arg", value_name = "NAME=VALUE", value_parser = parse_pair)]
    build_args: Vec<(String, String)>,
    /// A base image: build argument NAME becomes oci-archive:<absolute PATH>, for `FROM ${NAME}`.
    #[arg(long = "base", value_name = "NAME=PATH", value_parser = parse_pair)]
    base_images: Vec<(String, String)>,
    /// Timestamps in the image and the tar. Default: $SOURCE_DATE_EPOCH, else 0.
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<u64>,
    /// Write the image as an OCI archive here (`podman save`: not reproducible).
    #[arg(long)]
    oci_archive: Option<PathBuf>,
    /// Write the canonical root filesystem (as for --rootfs) as the one layer of an OCI archive
    /// here, reproducibly (as `icos oci write` does), and print the image digest.
    #[arg(long, requires = "name")]
    canonical_oci_archive: Option<PathBuf>,
    /// With --canonical-oci-archive: the image's reference name (e.g. guestos-base).
    #[arg(long, requires = "canonical_oci_archive")]
    name: Option<String>,
    /// Write the canonical root filesystem tar here (machine-id emptied).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// With --rootfs: also write its manifest here.
    #[arg(long, requires = "rootfs")]
    manifest: Option<PathBuf>,
    /// With --rootfs or --canonical-oci-archive: replace DEST with the content of FILE
    /// (/etc/hosts, /etc/hostname, ...).
    #[arg(long = "replace", value_name = "DEST=FILE", requires = "canonical")]
    replacements: Vec<OsString>,
}

pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

pub fn run(command: ContainerCommand) -> Result<ExitCode, Box<dyn Error>> {
    let ContainerCommand::Build(args) = command;
    let replacements = args.replacements.iter().map(|spec| Replacement::parse(spec)).collect::<Result<Vec<_>, _>>()?;
    let container = ContainerBuild {
        podman: args.podman,
        dockerfile: args.dockerfile,
        contexts: args.contexts,
        executables: args.executables,
        build_args: args.build_args,
        base_images: args.base_images.into_iter().map(|(name, path)| (name, PathBuf::from(path))).collect(),
        source_date_epoch: super::rootfs::epoch(args.source_date_epoch)?.unwrap_or(0),
    };
    let output = match (&args.oci_archive, &args.rootfs, &args.canonical_oci_archive, &args.name) {
        (Some(archive), ..) => ContainerOutput::OciArchive(archive),
        (None, Some(tar), ..) => {
            ContainerOutput::Rootfs { tar, manifest: args.manifest.as_deref(), replacements: &replacements }
        }
        (None, None, Some(archive), Some(name)) => {
            ContainerOutput::CanonicalOciArchive { archive, name, replacements: &replacements }
        }
        _ => unreachable!("clap requires one of --oci-archive, --rootfs and --canonical-oci-archive (with --name)"),
    };
    if let Some(image) = build(&container, output)? {
        println!("{image}");
    }
    Ok(ExitCode::SUCCESS)
}
