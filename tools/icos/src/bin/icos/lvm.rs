//! `icos lvm`: an LVM2 physical volume holding one volume group, from a volumes.csv and images.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use icos::image_source::NamedImage;
use icos::lvm::{build_lvm, read_volumes_csv, LvmOptions, DEFAULT_EXTENT_SIZE};
use icos::seed::Seed;
use icos::size::parse_size;

use crate::package::ImageOutputArgs;

#[derive(Args)]
pub struct LvmArgs {
    /// The logical volumes: name,start,size,uuid,description per line, start and size in extents
    /// (or with a unit, in whole extents); an empty uuid is derived from the seed.
    #[arg(long)]
    volumes: PathBuf,
    #[command(flatten)]
    result: ImageOutputArgs,
    /// The size of the physical volume, e.g. 20G; a multiple of 512 bytes.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// The name of the volume group.
    #[arg(long)]
    vg_name: String,
    /// The size of a physical extent: a power of two of at least 4K.
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_EXTENT_SIZE)]
    extent_size: u64,
    /// The build seed the PV, VG and LV UUIDs that volumes.csv does not fix are derived from.
    #[arg(long)]
    seed: Seed,
    /// The host name recorded as creator of the group and its volumes.
    #[arg(long, default_value = "icos")]
    creation_host: String,
    /// The creation time recorded in the metadata; default: $SOURCE_DATE_EPOCH, else 0.
    #[arg(long)]
    source_date_epoch: Option<u64>,
    /// The content of a logical volume, as NAME=PATH of a raw image or of a package holding one
    /// (a partition's .tzst); other volumes stay zero.
    #[arg(long = "image", value_name = "NAME=PATH", value_parser = NamedImage::parse)]
    images: Vec<NamedImage>,
}

pub fn run(args: LvmArgs) -> Result<ExitCode, Box<dyn Error>> {
    let table = read_volumes_csv(&args.volumes, args.extent_size)?;
    let options = LvmOptions {
        size: args.size,
        vg_name: args.vg_name,
        extent_size: args.extent_size,
        seed: args.seed,
        creation_host: args.creation_host,
        creation_time: crate::rootfs::epoch(args.source_date_epoch)?.unwrap_or(0),
    };
    args.result.write("partition.img", |image| {
        build_lvm(image, &table, &args.images, &options)?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
