//! `icos ext4` and `icos fat`: filesystem images from a canonical rootfs tar.

use std::env;
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args};
use uuid::Uuid;

use icos::ext4::{build_ext4, find_mke2fs, Ext4Options};
use icos::fat::{build_fat, FatOptions};
use icos::seed::Seed;
use icos::size::parse_size;

use crate::package::raw_or_packaged;

#[derive(Args)]
#[command(group(ArgGroup::new("result").required(true).multiple(true).args(["output", "package"])))]
pub struct Ext4Args {
    /// The canonical rootfs tar to copy into the filesystem.
    #[arg(short, long)]
    input: PathBuf,
    /// The image to create.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also (or, without --output, only) write this package: a .tzst holding the image as
    /// partition.img, as `icos package` does. Build caches then hold the compressed filesystem,
    /// not gigabytes of zeros (Bazel's disk and remote caches do not keep holes).
    #[arg(long)]
    package: Option<PathBuf>,
    /// The size of the image, e.g. 3G; a multiple of 4096 bytes.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// The volume label (at most 16 bytes).
    #[arg(long, default_value = "")]
    label: String,
    /// The build seed the filesystem UUID and hash seed are derived from.
    #[arg(long)]
    seed: Option<Seed>,
    /// The partition name the identifiers are derived for (with --seed).
    #[arg(long)]
    partition_name: Option<String>,
    /// The filesystem UUID, instead of the one derived from the seed.
    #[arg(long)]
    uuid: Option<Uuid>,
    /// The directory hash seed, instead of the one derived from the seed.
    #[arg(long)]
    hash_seed: Option<Uuid>,
    /// Every timestamp in the filesystem; default: $SOURCE_DATE_EPOCH, else 0.
    #[arg(long)]
    source_date_epoch: Option<u64>,
    /// The mke2fs program (e2fsprogs >= 1.47.1); default: mke2fs in PATH, /usr/sbin or /sbin.
    #[arg(long)]
    mke2fs: Option<PathBuf>,
}

#[derive(Args)]
pub struct FatArgs {
    /// The tar of regular files and directories to copy into the filesystem.
    #[arg(short, long)]
    input: PathBuf,
    /// The image to create.
    #[arg(short, long)]
    output: PathBuf,
    /// The size of the image, e.g. 100M; a multiple of 512 bytes, at least 33 MiB (FAT32).
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// The volume label: up to 11 characters, upper case.
    #[arg(long)]
    label: String,
    /// The build seed the volume id is derived from.
    #[arg(long)]
    seed: Option<Seed>,
    /// The partition name the volume id is derived for (with --seed).
    #[arg(long)]
    partition_name: Option<String>,
    /// The volume id as 8 hex digits (1234ABCD or 1234-ABCD), instead of the derived one.
    #[arg(long, value_parser = parse_volume_id)]
    volume_id: Option<u32>,
}

/// A derived identifier needs both the seed and the partition name.
fn seed_and_name<'a>(
    seed: &'a Option<Seed>,
    partition_name: &'a Option<String>,
    what: &str,
) -> Result<(&'a Seed, &'a str), String> {
    match (seed, partition_name) {
        (Some(seed), Some(name)) => Ok((seed, name)),
        _ => Err(format!("{what} is derived from --seed and --partition-name; give both, or give {what} explicitly")),
    }
}

pub fn run_ext4(args: Ext4Args) -> Result<ExitCode, Box<dyn Error>> {
    let uuid = match args.uuid {
        Some(uuid) => uuid,
        None => {
            let (seed, name) = seed_and_name(&args.seed, &args.partition_name, "--uuid")?;
            seed.filesystem_uuid(name)
        }
    };
    let hash_seed = match args.hash_seed {
        Some(hash_seed) => hash_seed,
        None => {
            let (seed, name) = seed_and_name(&args.seed, &args.partition_name, "--hash-seed")?;
            seed.ext4_hash_seed(name)
        }
    };
    let source_date_epoch = match args.source_date_epoch {
        Some(epoch) => epoch,
        None => match env::var("SOURCE_DATE_EPOCH") {
            Ok(value) => value.parse().map_err(|_| {
                format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds since 1970")
            })?,
            Err(_) => 0,
        },
    };
    let mke2fs = match args.mke2fs {
        Some(path) => path,
        None => find_mke2fs()?,
    };
    let options = Ext4Options {
        size: args.size,
        label: args.label,
        uuid,
        hash_seed,
        source_date_epoch,
        mke2fs,
    };
    raw_or_packaged(args.output.as_deref(), args.package.as_deref(), "partition.img", |image| {
        build_ext4(&args.input, image, &options)?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_fat(args: FatArgs) -> Result<ExitCode, Box<dyn Error>> {
    let volume_id = match args.volume_id {
        Some(volume_id) => volume_id,
        None => {
            let (seed, name) = seed_and_name(&args.seed, &args.partition_name, "--volume-id")?;
            seed.fat_volume_id(name)
        }
    };
    let options = FatOptions {
        size: args.size,
        label: args.label,
        volume_id,
    };
    build_fat(&args.input, &args.output, &options)?;
    Ok(ExitCode::SUCCESS)
}

fn parse_volume_id(value: &str) -> Result<u32, String> {
    let digits: String = value.chars().filter(|&c| c != '-').collect();
    if digits.len() != 8 {
        return Err(format!(
            "{value:?} is not a volume id: expected 8 hex digits such as 1234ABCD"
        ));
    }
    u32::from_str_radix(&digits, 16).map_err(|_| {
        format!("{value:?} is not a volume id: expected 8 hex digits such as 1234ABCD")
    })
}
