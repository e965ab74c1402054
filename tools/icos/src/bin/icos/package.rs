//! `icos package` and `icos unpack`: deterministic .tar.zst packages of sparse images.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use icos::package::{package, parse_member, unpack, CompressionOptions, Member, DEFAULT_LEVEL};

#[derive(Args)]
pub struct PackageArgs {
    /// The .tar.zst (or .tzst) file to create.
    #[arg(short, long)]
    output: PathBuf,
    /// A member, as NAME=PATH, stored in the order given; files with all-zero 4 KiB blocks are
    /// stored sparse.
    #[arg(long = "member", value_name = "NAME=PATH", required = true, value_parser = parse_member)]
    members: Vec<Member>,
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
    package(&args.output, &args.members, options)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_unpack(args: UnpackArgs) -> Result<ExitCode, Box<dyn Error>> {
    for name in unpack(&args.input, &args.output_dir)? {
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}
