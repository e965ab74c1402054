//! `icos ext4` and `icos fat`: filesystem images from a canonical rootfs tar.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uuid::Uuid;

use icos::ext4::{build_ext4, find_mke2fs, Ext4Options};
use icos::fat::{build_fat, FatOptions};
use icos::layout::Layout;
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
    /// The size of the image, e.g. 3G; a multiple of 4096 bytes. Default: the size of the
    /// --target in --layout.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
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
    /// Make a verity root: the filesystem leaves room at the end of the image for its dm-verity
    /// superblock and hash tree, which follow it (salt and UUID from this build seed), and the
    /// root hash goes to --verity-root-hash.
    #[arg(long, requires = "verity_root_hash")]
    verity_seed: Option<Seed>,
    /// Where to write the verity root's root hash (hex, no newline).
    #[arg(long, requires = "verity_seed")]
    verity_root_hash: Option<PathBuf>,
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
    /// Default: the size of the --target in --layout.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
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
const PARENT_ARGS: [&str; 6] = ["partition_uuid", "partitions", "partition_name", "seed", "layout", "target"];

/// The UUID of the partition the filesystem is for: its identifiers derive from it as
/// systemd-repart derives them (`icos::seed::FilesystemIds::from_parent`).
#[derive(Args)]
struct ParentArgs {
    /// The resolved layout of the OS (`icos layout --layout-json`), with --target: the
    /// filesystem's identifiers derive from the target's UUID, and its size is the target's.
    #[arg(long, requires = "target", conflicts_with_all = ["partition_uuid", "partitions"])]
    layout: Option<PathBuf>,
    /// The partition or logical volume of --layout the filesystem is for.
    #[arg(long, requires = "layout")]
    target: Option<String>,
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

/// What the filesystem is for: the UUID its identifiers derive from and, from a layout, its size.
struct Parent {
    uuid: Uuid,
    size: Option<u64>,
}

impl ParentArgs {
    /// The partition or volume the filesystem is for; `instead` is the option that gives the
    /// identifiers explicitly, named when nothing to derive them from was given.
    fn parent(&self, instead: &str) -> Result<Parent, Box<dyn Error>> {
        if let (Some(layout_path), Some(name)) = (&self.layout, &self.target) {
            let layout = Layout::read(layout_path)?;
            let target = layout.target(name).ok_or_else(|| {
                let names: Vec<&str> = layout.targets.iter().map(|target| target.name.as_str()).collect();
                format!(
                    "{}: no partition or volume is named {name:?}; there are {}",
                    layout_path.display(),
                    names.join(", ")
                )
            })?;
            return Ok(Parent { uuid: target.filesystem_parent, size: Some(target.size) });
        }
        let uuid = match (self.partition_uuid, &self.partitions, &self.partition_name) {
            (Some(uuid), _, _) => uuid,
            (None, Some(partitions), Some(name)) => {
                read_partitions_csv(partitions)?.partition_uuid(name, self.seed.as_ref())?
            }
            _ => {
                return Err(format!(
                    "the filesystem identifiers derive from the UUID of its partition: give --layout and --target, \
                     --partition-uuid, or --partitions and --partition-name (and --seed when the partition's UUID is \
                     derived), or {instead}"
                )
                .into())
            }
        };
        Ok(Parent { uuid, size: None })
    }

    /// The UUID the identifiers derive from (when `derive` says they are needed) and the size:
    /// `size`, else the target's.
    fn resolve(&self, derive: bool, size: Option<u64>, instead: &str) -> Result<(Option<Uuid>, u64), Box<dyn Error>> {
        match (derive, size) {
            (false, Some(size)) => Ok((None, size)),
            _ => {
                let parent = self.parent(instead)?;
                let size = size
                    .or(parent.size)
                    .ok_or("give --size, or --layout and --target to take the size of the target")?;
                Ok((derive.then_some(parent.uuid), size))
            }
        }
    }
}

pub fn run_ext4(args: Ext4Args) -> Result<ExitCode, Box<dyn Error>> {
    let (parent, size) = args.parent.resolve(args.uuid.is_none(), args.size, "--uuid")?;
    let ids = match (args.uuid, parent) {
        (Some(uuid), _) => FilesystemIds::from_uuid(uuid),
        (None, Some(parent)) => FilesystemIds::from_parent(parent),
        (None, None) => return Err("give --uuid or what it derives from".into()),
    };
    let source_date_epoch = crate::rootfs::epoch(args.source_date_epoch)?.unwrap_or(0);
    let mke2fs = match args.mke2fs {
        Some(path) => path,
        None => find_mke2fs()?,
    };
    // A verity root: the filesystem is as large as leaves room for its tree in the partition.
    let verity = args.verity_seed.as_ref().map(icos::verity::root_params);
    let image_size = size;
    let size = match verity {
        Some(_) => match icos::verity::root_hash_offset(size)? {
            0 => return Err(format!("{size} bytes leave no room for a verity root's filesystem and hash tree").into()),
            offset => offset,
        },
        None => size,
    };
    let options = Ext4Options {
        size,
        label: args.label,
        uuid: ids.uuid,
        hash_seed: args.hash_seed.unwrap_or(ids.ext4_hash_seed),
        source_date_epoch,
        mke2fs,
    };
    let mut root_hash = None;
    args.result.write("partition.img", |image| {
        build_ext4(&args.input, image, &options)?;
        if let Some(params) = &verity {
            // The image fills its partition, as every filesystem image does: the tree, then a hole.
            root_hash = Some(icos::verity::append(image, params, image_size)?.0.root_hash_hex());
        }
        Ok(())
    })?;
    if let (Some(path), Some(root_hash)) = (&args.verity_root_hash, root_hash) {
        // As veritysetup's --root-hash-file: hex, no newline.
        icos::output::write_file_atomically(path, root_hash.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_fat(args: FatArgs) -> Result<ExitCode, Box<dyn Error>> {
    let (parent, size) = args.parent.resolve(args.volume_id.is_none(), args.size, "--volume-id")?;
    let volume_id = match (args.volume_id, parent) {
        (Some(volume_id), _) => volume_id,
        (None, Some(parent)) => FilesystemIds::from_parent(parent).fat_volume_id,
        (None, None) => return Err("give --volume-id or what it derives from".into()),
    };
    let options = FatOptions { size, label: args.label, volume_id };
    build_fat(&args.input, &args.output, &options)?;
    Ok(ExitCode::SUCCESS)
}

fn parse_volume_id(value: &str) -> Result<u32, String> {
    let digits: String = value.chars().filter(|&c| c != '-').collect();
    if digits.len() != 8 {
        return Err(format!("{value:?} is not a volume id: expected 8 hex digits such as 1234ABCD"));
    }
    u32::from_str_radix(&digits, 16)
        .map_err(|_| format!("{value:?} is not a volume id: expected 8 hex digits such as 1234ABCD"))
}
