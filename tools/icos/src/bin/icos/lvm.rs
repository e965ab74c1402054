//! `icos lvm`: an LVM2 physical volume holding one volume group, from a volumes.csv and images.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use icos::image_source::NamedImage;
use icos::lvm::{
    build_lvm, package_lvm, read_volumes_csv, LvmOptions, PartitionVolumeGroup, VolumeTable, DEFAULT_EXTENT_SIZE,
};
use icos::seed::Seed;
use icos::size::parse_size;

use crate::package::ImageOutputArgs;

#[derive(Args)]
#[command(mut_arg("volumes", |arg| arg.required(true)), mut_arg("vg_name", |arg| arg.required(true)))]
pub struct LvmArgs {
    #[command(flatten)]
    group: VolumeGroupArgs,
    #[command(flatten)]
    result: ImageOutputArgs,
    /// The size of the physical volume, e.g. 20G; a multiple of 512 bytes.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// The build seed the PV, VG and LV UUIDs that volumes.csv does not fix are derived from.
    #[arg(long)]
    seed: Seed,
    /// The content of a logical volume, as NAME=PATH of a raw image or of a package holding one
    /// (a partition's .tzst); other volumes stay zero.
    #[arg(long = "image", value_name = "NAME=PATH", value_parser = NamedImage::parse)]
    images: Vec<NamedImage>,
}

/// What lvm2 would record as the host that created the volume group: a fixed name, not this host's.
const DEFAULT_CREATION_HOST: &str = "icos";

/// An LVM volume group of linear logical volumes: `icos lvm`, and `icos disk` with a volume group
/// in one of its partitions.
#[derive(Args)]
pub struct VolumeGroupArgs {
    /// The logical volumes: name,start,size,uuid,description per line, start and size in extents
    /// (or with a unit, in whole extents); an empty uuid is derived from the seed.
    #[arg(long, requires = "vg_name")]
    volumes: Option<PathBuf>,
    /// The name of the volume group.
    #[arg(long, requires = "volumes")]
    vg_name: Option<String>,
    // No default values here: `icos disk` takes these options only with a volume group, and clap
    // would count a default as given.
    /// The size of a physical extent: a power of two of at least 4K [default: 4M].
    #[arg(long, value_parser = parse_size)]
    extent_size: Option<u64>,
    /// The host name recorded as creator of the group and its volumes [default: icos].
    #[arg(long)]
    creation_host: Option<String>,
    /// The creation time recorded in the metadata; default: $SOURCE_DATE_EPOCH, else 0.
    #[arg(long)]
    source_date_epoch: Option<u64>,
}

impl VolumeGroupArgs {
    /// Whether these options describe a volume group.
    pub fn given(&self) -> bool {
        self.volumes.is_some()
    }

    /// The volume table and the options of the volume group on `size` bytes with `seed`.
    pub fn read(&self, size: u64, seed: Seed) -> Result<(VolumeTable, LvmOptions), Box<dyn Error>> {
        let group = self.in_partition("")?;
        let options = group.options(size, seed);
        Ok((group.volumes, options))
    }

    /// The volume group that fills partition `partition` of a disk.
    pub fn in_partition(&self, partition: &str) -> Result<PartitionVolumeGroup, Box<dyn Error>> {
        let (Some(volumes), Some(vg_name)) = (&self.volumes, &self.vg_name) else {
            return Err("a volume group needs --volumes and --vg-name".into());
        };
        let extent_size = self.extent_size.unwrap_or(DEFAULT_EXTENT_SIZE);
        Ok(PartitionVolumeGroup {
            partition: partition.to_owned(),
            volumes: read_volumes_csv(volumes, extent_size)?,
            vg_name: vg_name.clone(),
            extent_size,
            creation_host: self.creation_host.clone().unwrap_or_else(|| DEFAULT_CREATION_HOST.to_owned()),
            creation_time: crate::rootfs::epoch(self.source_date_epoch)?.unwrap_or(0),
        })
    }
}

pub fn run(args: LvmArgs) -> Result<ExitCode, Box<dyn Error>> {
    let (table, options) = args.group.read(args.size, args.seed)?;
    args.result.write_assembled(
        "partition.img",
        |image| {
            build_lvm(image, &table, &args.images, &options)?;
            Ok(())
        },
        |package, member, compression| {
            package_lvm(package, member, &table, &args.images, &options, compression)?;
            Ok(())
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
