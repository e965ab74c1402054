//! `icos package` and `icos unpack`: deterministic .tar.zst packages of sparse images.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use icos::package::{package, parse_member, unpack, CompressionOptions, Member, PackageError, DEFAULT_LEVEL};

#[derive(Args)]
pub struct PackageArgs {
    /// The .tar.zst (or .tzst) file to create.
    #[arg(short, long)]
    output: PathBuf,
    /// A member, as NAME=PATH, stored in the order given; files with all-zero 4 KiB blocks are
    /// stored sparse.
    #[arg(long = "member", value_name = "NAME=PATH", required_unless_present = "image_members", value_parser = parse_member)]
    members: Vec<Member>,
    /// A member whose content is the one image inside the package PACKAGE (a partition's .tzst),
    /// as NAME=PACKAGE, stored sparse like a file. These members come first, in the order given.
    #[arg(long = "image-member", value_name = "NAME=PACKAGE", value_parser = parse_image_member)]
    image_members: Vec<Member>,
    /// The zstd compression level (1 to 22).
    #[arg(long, default_value_t = DEFAULT_LEVEL)]
    level: i32,
    /// zstd worker threads (at least 1; the output does not depend on it). Default: one per CPU.
    #[arg(long)]
    threads: Option<u32>,
}

#[derive(Args)]
pub struct UnpackArgs {
    /// The .tar.zst package to extract.
    #[arg(short, long)]
    input: PathBuf,
    /// The existing directory to write the members to, with holes for all-zero blocks.
    #[arg(long)]
    output_dir: PathBuf,
}

pub fn run(args: PackageArgs) -> Result<ExitCode, Box<dyn Error>> {
    let mut options = CompressionOptions { level: args.level, ..CompressionOptions::default() };
    if let Some(threads) = args.threads {
        options.threads = threads;
    }
    let members: Vec<Member> = args.image_members.into_iter().chain(args.members).collect();
    package(&args.output, &members, options)?;
    Ok(ExitCode::SUCCESS)
}

fn parse_image_member(text: &str) -> Result<Member, PackageError> {
    parse_member(text).map(|member| Member::packaged_image(member.name, member.path))
}

pub fn run_unpack(args: UnpackArgs) -> Result<ExitCode, Box<dyn Error>> {
    for name in unpack(&args.input, &args.output_dir)? {
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where an image command writes its image: the raw image, a package of it, or both.
#[derive(Args)]
#[group(required = true, multiple = true)]
pub struct ImageOutputArgs {
    /// The image to create.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also (or, without --output, only) write this package: a .tar.zst (.tzst) holding the image
    /// as its one sparse member, as `icos package` does. Without --output the raw image is a
    /// temporary file, so a build step never keeps (or has Bazel hash and cache) gigabytes of
    /// holes: Bazel's disk and remote caches do not keep them.
    #[arg(long)]
    package: Option<PathBuf>,
}

impl ImageOutputArgs {
    /// Writes the raw image that `build` makes to --output, or packages it as `member` of
    /// --package, or both. Without --output the raw image lives in a temporary directory next to
    /// the package.
    pub fn write(
        &self,
        member: &str,
        build: impl FnOnce(&Path) -> Result<(), Box<dyn Error>>,
    ) -> Result<(), Box<dyn Error>> {
        let scratch;
        let raw = match (&self.output, &self.package) {
            (Some(output), _) => output.to_owned(),
            (None, Some(archive)) => {
                let parent = archive.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
                scratch = tempfile::Builder::new().prefix(".icos-image-").tempdir_in(parent)?;
                scratch.path().join(member)
            }
            (None, None) => return Err("give --output, --package or both".into()),
        };
        build(&raw)?;
        if let Some(archive) = &self.package {
            package(archive, &[Member::file(member, raw)], CompressionOptions::default())?;
        }
        Ok(())
    }

    /// As [`ImageOutputArgs::write`] for an image that is assembled from others: with --package
    /// alone, `package` writes the package directly (copying the frames of packaged images)
    /// instead of a raw image that is compressed again.
    pub fn write_assembled(
        &self,
        member: &str,
        build: impl FnOnce(&Path) -> Result<(), Box<dyn Error>>,
        package: impl FnOnce(&Path, &str, CompressionOptions) -> Result<(), Box<dyn Error>>,
    ) -> Result<(), Box<dyn Error>> {
        match (&self.output, &self.package) {
            (None, Some(archive)) => package(archive, member, CompressionOptions::default()),
            _ => self.write(member, build),
        }
    }
}
