//! `icos rootfs`: canonical root filesystem tars, their split by mount point, and manifests.

use std::env;
use std::error::Error;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use icos::rootfs::{write_manifest_file, Injection, InputFormat, Replacement, Rootfs, View};

#[derive(Subcommand)]
pub enum RootfsCommand {
    /// Write the canonical tar of a `podman export` tar or an OCI image archive.
    Canonicalize(CanonicalizeArgs),
    /// Split a root filesystem tar into its boot, root and var trees (each a canonical tar).
    Split(SplitArgs),
    /// Write the manifest (JSON lines) of a root filesystem tar.
    Manifest(ManifestArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// An OCI archive if the tar holds `oci-layout` and `index.json`, else a root filesystem tar.
    Auto,
    /// A root filesystem tar (plain, gzip or zstd).
    Tar,
    /// An OCI image archive (`podman save --format oci-archive`).
    OciArchive,
}

impl From<Format> for InputFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Auto => InputFormat::Auto,
            Format::Tar => InputFormat::Tar,
            Format::OciArchive => InputFormat::OciArchive,
        }
    }
}

#[derive(Args)]
struct InputArgs {
    /// The input tar or OCI archive.
    #[arg(short, long)]
    input: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,
}

#[derive(Args)]
pub struct CanonicalizeArgs {
    /// The input tar or OCI archive; without it the tree starts empty (only `/`), for trees made
    /// of injected files alone.
    #[arg(short, long)]
    input: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// The canonical tar to create.
    #[arg(short, long)]
    output: PathBuf,
    /// Also write the manifest of the output here.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Clamp mtimes to this time (seconds). Default: $SOURCE_DATE_EPOCH, else 0.
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<u64>,
    /// Replace (or create) DEST with the content of FILE, keeping an existing file's mode, owner
    /// and xattrs (else 0644 root). For /etc/hosts, /etc/hostname, /etc/resolv.conf.
    #[arg(long = "replace", value_name = "DEST=FILE")]
    replacements: Vec<OsString>,
    /// Make /etc/machine-id an empty 0444 root-owned file.
    #[arg(long)]
    empty_machine_id: bool,
    /// Put FILE at DEST with octal MODE and numeric UID and GID; missing parents become 0755
    /// root directories. DEST is absolute and ends at the first '='. Applied after --replace.
    #[arg(long = "inject", value_name = "MODE:UID:GID:DEST=FILE")]
    injections: Vec<OsString>,
}

#[derive(Args)]
pub struct SplitArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The tar of /boot, re-rooted (/boot/vmlinuz becomes /vmlinuz).
    #[arg(long)]
    boot: Option<PathBuf>,
    /// The tar of / without the contents of /boot, /var, /run, /tmp, /dev, /proc and /sys.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The tar of /var, re-rooted.
    #[arg(long)]
    var: Option<PathBuf>,
    #[arg(long)]
    boot_manifest: Option<PathBuf>,
    #[arg(long)]
    root_manifest: Option<PathBuf>,
    #[arg(long)]
    var_manifest: Option<PathBuf>,
    /// Clamp mtimes to this time (seconds). Default: $SOURCE_DATE_EPOCH, else mtimes are kept.
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<u64>,
}

#[derive(Args)]
pub struct ManifestArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The manifest to create.
    #[arg(short, long)]
    output: PathBuf,
}

/// `--source-date-epoch`, else a non-empty `SOURCE_DATE_EPOCH` in the environment.
pub fn epoch(flag: Option<u64>) -> Result<Option<u64>, Box<dyn Error>> {
    if flag.is_some() {
        return Ok(flag);
    }
    match env::var("SOURCE_DATE_EPOCH") {
        Ok(value) if !value.is_empty() => value
            .parse()
            .map(Some)
            .map_err(|_| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds").into()),
        _ => Ok(None),
    }
}

fn read(input: &InputArgs) -> Result<Rootfs, Box<dyn Error>> {
    Ok(Rootfs::read(&input.input, input.format.into())?)
}

pub fn run(command: RootfsCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        RootfsCommand::Canonicalize(args) => canonicalize(args),
        RootfsCommand::Split(args) => split(args),
        RootfsCommand::Manifest(args) => {
            let rootfs = read(&args.input)?;
            write_manifest_file(&args.output, &rootfs.manifest(&rootfs.whole(), None))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn canonicalize(args: CanonicalizeArgs) -> Result<ExitCode, Box<dyn Error>> {
    // Parse every spec before the (long) read, so a typo fails at once.
    let replacements = args.replacements.iter().map(|spec| Replacement::parse(spec)).collect::<Result<Vec<_>, _>>()?;
    let injections = args.injections.iter().map(|spec| Injection::parse(spec)).collect::<Result<Vec<_>, _>>()?;
    let epoch = epoch(args.source_date_epoch)?.unwrap_or(0);
    let mut rootfs = match &args.input {
        Some(input) => Rootfs::read(input, args.format.into())?,
        None => Rootfs::empty(),
    };
    for replacement in &replacements {
        rootfs.replace(replacement)?;
    }
    if args.empty_machine_id {
        rootfs.empty_machine_id()?;
    }
    for injection in &injections {
        rootfs.inject(injection)?;
    }
    write_tree(&rootfs, &rootfs.whole(), Some(epoch), &args.output, args.manifest.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

fn split(args: SplitArgs) -> Result<ExitCode, Box<dyn Error>> {
    let wanted =
        [(&args.boot, &args.boot_manifest), (&args.root, &args.root_manifest), (&args.var, &args.var_manifest)];
    if wanted.iter().all(|(tar, manifest)| tar.is_none() && manifest.is_none()) {
        return Err("nothing to write: give at least one of --boot, --root, --var or their manifests".into());
    }
    let epoch = epoch(args.source_date_epoch)?;
    let rootfs = read(&args.input)?;
    let split = rootfs.split()?;
    for ((tar, manifest), view) in wanted.into_iter().zip([&split.boot, &split.root, &split.var]) {
        match tar {
            Some(tar) => write_tree(&rootfs, view, epoch, tar, manifest.as_deref())?,
            None => {
                if let Some(manifest) = manifest {
                    write_manifest_file(manifest, &rootfs.manifest(view, epoch))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_tree(
    rootfs: &Rootfs,
    view: &View<'_>,
    epoch: Option<u64>,
    tar: &Path,
    manifest: Option<&Path>,
) -> Result<(), Box<dyn Error>> {
    rootfs.write_tar_file(view, epoch, tar, manifest)?;
    Ok(())
}
