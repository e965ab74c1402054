//! `icos disk`: a GPT disk image from a partitions.csv and partition images.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use uuid::Uuid;

use icos::gpt_disk::{build_disk, package_disk, DiskOptions};
use icos::image_source::NamedImage;
use icos::partitions::{read_partitions_csv, DEFAULT_ALIGNMENT};
use icos::seed::Seed;
use icos::size::parse_size;

use crate::lvm::VolumeGroupArgs;
use crate::package::ImageOutputArgs;

#[derive(Args)]
pub struct DiskArgs {
    /// The partition table: name,start,size,type,uuid,description per line, in 512-byte sectors.
    #[arg(long)]
    partitions: PathBuf,
    #[command(flatten)]
    result: ImageOutputArgs,
    /// The size of the disk image, e.g. 50G; a multiple of 512 bytes.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// The build seed that partition UUIDs left empty and the disk GUID are derived from.
    #[arg(long)]
    seed: Option<Seed>,
    /// The disk GUID, instead of the one derived from the seed.
    #[arg(long)]
    disk_guid: Option<Uuid>,
    /// The content of a partition, as NAME=PATH of a raw image or of a package holding one (a
    /// partition's .tzst); other partitions stay zero.
    #[arg(long = "image", value_name = "NAME=PATH", value_parser = NamedImage::parse)]
    images: Vec<NamedImage>,
    /// The partition that holds an LVM volume group (with --volumes, --vg-name): images named after
    /// its logical volumes go into them.
    #[arg(long, requires = "volumes")]
    lvm_partition: Option<String>,
    #[command(flatten)]
    lvm: VolumeGroupArgs,
    /// Partition starts must be multiples of this many sectors.
    #[arg(long, default_value_t = DEFAULT_ALIGNMENT)]
    alignment: u64,
}

pub fn run(args: DiskArgs) -> Result<ExitCode, Box<dyn Error>> {
    let table = read_partitions_csv(&args.partitions)?;
    let lvm = match (args.lvm.given(), &args.lvm_partition, args.seed) {
        (true, Some(partition), Some(_)) => Some(args.lvm.in_partition(partition)?),
        (false, None, _) => None,
        _ => return Err("a volume group needs --volumes, --vg-name, --lvm-partition and --seed".into()),
    };
    let options =
        DiskOptions { size: args.size, alignment: args.alignment, seed: args.seed, disk_guid: args.disk_guid, lvm };
    args.result.write_assembled(
        "disk.img",
        |disk| {
            build_disk(disk, &table, &args.images, &options)?;
            Ok(())
        },
        |package, member, compression| {
            package_disk(package, member, &table, &args.images, &options, compression)?;
            Ok(())
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
