//! `icos ext4` and `icos fat`: filesystem images from a canonical rootfs tar.

use std::env;
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uuid::Uuid;

use icos::ext4::{build_ext4, find_mke2fs, Ext4Options};
use icos::fat::{build_fat, FatOptions};
use icos::partitions::read_partitions_csv;
use icos::seed::{FilesystemIds, Seed};
use icos::size::parse_size;

use crate::package::ImageOutputArgs;

#[derive(Args)]
pub struct Ext4Args {
    /// The canonical rootfs tar to copy into the filesystem.
    #[arg(short, long)]
    input: PathBuf,
    #[command(flatten)]
    result: ImageOutputArgs,
    /// The size of the image, e.g. 3G; a multiple of 4096 bytes.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// The volume label (at most 16 bytes).
    #[arg(long, default_value = "")]
    label: String,
    #[command(flatten)]
    parent: ParentArgs,
    /// The filesystem UUID, instead of the one derived from the partition's UUID.
    #[arg(long, conflicts_with_all = PARENT_ARGS)]
    uuid: Option<Uuid>,
    /// The directory hash seed; default: the filesystem UUID, as systemd-repart sets it.
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
    #[command(flatten)]
    parent: ParentArgs,
    /// The volume id as 8 hex digits (1234ABCD or 1234-ABCD), instead of the one derived from the
    /// partition's UUID.
    #[arg(long, value_parser = parse_volume_id, conflicts_with_all = PARENT_ARGS)]
    volume_id: Option<u32>,
}

/// The options that name the UUID the filesystem identifiers derive from.
const PARENT_ARGS: [&str; 4] = ["partition_uuid", "partitions", "partition_name", "seed"];

/// The UUID of the partition the filesystem is for: its identifiers derive from it as
/// systemd-repart derives them (`icos::seed::FilesystemIds::from_parent`).
#[derive(Args)]
struct ParentArgs {
    /// The UUID of the partition (or logical volume) the filesystem is for.
    #[arg(long, conflicts_with_all = ["partitions", "partition_name", "seed"])]
    partition_uuid: Option<Uuid>,
    /// The partition table (partitions.csv) that gives the partition's UUID, or lets it be derived
    /// from --seed as `icos disk` derives it.
    #[arg(long, requires = "partition_name")]
    partitions: Option<PathBuf>,
    /// The partition the filesystem is for, in --partitions.
    #[arg(long, requires = "partitions")]
    partition_name: Option<String>,
    /// The build seed, needed when the partition's UUID is empty in --partitions.
    #[arg(long, requires = "partitions")]
    seed: Option<Seed>,
}

impl ParentArgs {
    /// The identifiers derived from the partition's UUID; `instead` is the option that gives them
    /// explicitly, named when nothing to derive them from was given.
    fn filesystem_ids(&self, instead: &str) -> Result<FilesystemIds, Box<dyn Error>> {
        let parent = match (self.partition_uuid, &self.partitions, &self.partition_name) {
            (Some(uuid), _, _) => uuid,
            (None, Some(partitions), Some(name)) => {
                read_partitions_csv(partitions)?.partition_uuid(name, self.seed.as_ref())?
            }
            _ => {
                return Err(format!(
                    "the filesystem identifiers derive from the UUID of its partition: give --partition-uuid, \
                     or --partitions and --partition-name (and --seed when the partition's UUID is derived), \
                     or {instead}"
                )
                .into())
            }
        };
        Ok(FilesystemIds::from_parent(parent))
    }
}

pub fn run_ext4(args: Ext4Args) -> Result<ExitCode, Box<dyn Error>> {
    let ids = match args.uuid {
        Some(uuid) => FilesystemIds::from_uuid(uuid),
        None => args.parent.filesystem_ids("--uuid")?,
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
        uuid: ids.uuid,
        hash_seed: args.hash_seed.unwrap_or(ids.ext4_hash_seed),
        source_date_epoch,
        mke2fs,
    };
    args.result.write("partition.img", |image| {
        build_ext4(&args.input, image, &options)?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_fat(args: FatArgs) -> Result<ExitCode, Box<dyn Error>> {
    let volume_id = match args.volume_id {
        Some(volume_id) => volume_id,
        None => args.parent.filesystem_ids("--volume-id")?.fat_volume_id,
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
