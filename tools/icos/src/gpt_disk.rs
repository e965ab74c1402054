//! GPT disk images from a `partitions.csv` and partition images.
//!
//! The output is a protective MBR, the primary and backup GPT headers with 128-entry partition
//! arrays (written by the `gpt` crate, which computes both CRC32s), and each partition image at
//! its offset. Nothing else is written: only the data extents of the images (their sparse maps,
//! see [`crate::sparse`]) are copied and the file is extended with `set_len`, so the
//! image stays sparse. [`package_disk`] writes the disk as a package instead, copying the
//! compressed frames of packaged partition images (see [`crate::assembly`]). Every identifier comes from the
//! table, `--disk-guid` or the build seed, so the bytes are a function of the inputs only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use gpt::partition_types::{OperatingSystem, Type};
use gpt::GptConfig;
use uuid::Uuid;

use crate::assembly::{package_assembled, Canvas};
use crate::image_source::{ImageSource, ImageSourceError, NamedImage};
use crate::lvm::{write_lvm_at, LvmError, LvmOptions, PartitionVolumeGroup};
use crate::output::{write_atomically, OutputError};
use crate::package::{CompressionOptions, PackageError};
use crate::partitions::{PartitionTable, PartitionsError, FIRST_USABLE_LBA, SECTOR_SIZE};
use crate::seed::Seed;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Partitions(#[from] PartitionsError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("disk size {size} bytes: {problem}")]
    BadSize { size: u64, problem: String },
    #[error("alignment must be at least 1 sector")]
    BadAlignment,
    #[error("no disk GUID: give one or a seed to derive it from")]
    NoDiskGuid,
    #[error(transparent)]
    Lvm(#[from] LvmError),
    #[error("the LVM volume group needs a seed for its UUIDs")]
    NoLvmSeed,
    #[error("partition {name:?} of {csv} holds the LVM volume group, so it takes no image ({path}): give images for its volumes")]
    ImageForLvmPartition { name: String, csv: PathBuf, path: PathBuf },
    #[error("image {path} is for partition {name:?}, which {csv} does not list (nor a volume table)")]
    UnknownPartition { name: String, path: PathBuf, csv: PathBuf },
    #[error("partition {name:?} is given two images: {first} and {second}")]
    DuplicateImage { name: String, first: PathBuf, second: PathBuf },
    #[error("cannot read image {path}: {source}")]
    ReadImage { path: PathBuf, source: io::Error },
    #[error(
        "image {path} ({image_bytes} bytes) is larger than partition {name:?} ({partition_bytes} bytes, {csv}:{line})"
    )]
    ImageTooLarge { path: PathBuf, image_bytes: u64, name: String, partition_bytes: u64, csv: PathBuf, line: usize },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot write the partition table of {path}: {problem}")]
    Gpt { path: PathBuf, problem: String },
}

/// Everything but the partition table and the images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    /// The size of the disk image in bytes, a multiple of 512.
    pub size: u64,
    /// Partition starts must be multiples of this many sectors.
    pub alignment: u64,
    pub seed: Option<Seed>,
    /// Overrides the seed-derived disk GUID.
    pub disk_guid: Option<Uuid>,
    /// An LVM volume group inside one of the partitions, whose volumes images may fill.
    pub lvm: Option<PartitionVolumeGroup>,
}

/// The identifiers a disk was built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIdentity {
    pub disk_guid: Uuid,
    /// Partition UUIDs in table order.
    pub partition_uuids: Vec<Uuid>,
}

/// Checks everything that can be checked without writing: the disk size, the layout, the UUIDs
/// and that each image fits its partition. Returns the identifiers and, per partition in table
/// order, its image if any.
fn plan<'a>(table: &PartitionTable, images: &'a [NamedImage], options: &DiskOptions) -> Result<Plan<'a>, DiskError> {
    if options.alignment == 0 {
        return Err(DiskError::BadAlignment);
    }
    let bad_size = |problem: &str| DiskError::BadSize { size: options.size, problem: problem.to_owned() };
    if options.size % SECTOR_SIZE != 0 {
        return Err(bad_size("not a multiple of 512-byte sectors"));
    }
    let sectors = options.size / SECTOR_SIZE;
    if sectors < 2 * FIRST_USABLE_LBA {
        return Err(bad_size("too small for the GPT headers and partition arrays"));
    }
    table.check_layout(sectors, options.alignment)?;
    let partition_uuids = table.partition_uuids(options.seed.as_ref())?;
    let disk_guid = match (options.disk_guid, &options.seed) {
        (Some(guid), _) => guid,
        (None, Some(seed)) => seed.disk_guid(),
        (None, None) => return Err(DiskError::NoDiskGuid),
    };
    let mut by_partition: Vec<Option<(&NamedImage, ImageSource)>> = vec![None; table.partitions.len()];
    let mut volume_images: Vec<NamedImage> = Vec::new();
    let lvm_partition = match &options.lvm {
        Some(lvm) => {
            if options.seed.is_none() {
                return Err(DiskError::NoLvmSeed);
            }
            Some(table.index_of(&lvm.partition)?)
        }
        None => None,
    };
    for image in images {
        if let Some(lvm) = &options.lvm {
            if lvm.volumes.volume(&image.name).is_some() {
                volume_images.push(image.clone());
                continue;
            }
        }
        let index = table.partitions.iter().position(|partition| partition.name == image.name).ok_or_else(|| {
            DiskError::UnknownPartition { name: image.name.clone(), path: image.path.clone(), csv: table.path.clone() }
        })?;
        if Some(index) == lvm_partition {
            return Err(DiskError::ImageForLvmPartition {
                name: image.name.clone(),
                csv: table.path.clone(),
                path: image.path.clone(),
            });
        }
        if let Some((first, _)) = &by_partition[index] {
            return Err(DiskError::DuplicateImage {
                name: image.name.clone(),
                first: first.path.clone(),
                second: image.path.clone(),
            });
        }
        let source = ImageSource::open(&image.path)?;
        check_fits(table, index, image, source.size())?;
        by_partition[index] = Some((image, source));
    }
    let lvm = match (&options.lvm, lvm_partition, &options.seed) {
        (Some(lvm), Some(index), Some(seed)) => Some(PlannedLvm {
            offset: table.partitions[index].start * SECTOR_SIZE,
            images: volume_images,
            options: lvm.options(table.partitions[index].size * SECTOR_SIZE, *seed),
        }),
        _ => None,
    };
    Ok(Plan { identity: DiskIdentity { disk_guid, partition_uuids }, by_partition, lvm })
}

/// What [`plan`] found: the identifiers, each partition's image, and the volume group to write.
struct Plan<'a> {
    identity: DiskIdentity,
    by_partition: Vec<Option<(&'a NamedImage, ImageSource)>>,
    lvm: Option<PlannedLvm>,
}

struct PlannedLvm {
    offset: u64,
    images: Vec<NamedImage>,
    options: LvmOptions,
}

/// The error of placing `image` into partition `index` of `output`, with the table's context.
fn image_error(
    table: &PartitionTable,
    index: usize,
    image: &NamedImage,
    output: &Path,
    error: ImageSourceError,
) -> DiskError {
    match error {
        ImageSourceError::Package(error) => DiskError::Package(error),
        ImageSourceError::Read { path, source } => DiskError::ReadImage { path, source },
        ImageSourceError::Write(source) => DiskError::Write { path: output.to_owned(), source },
        ImageSourceError::TooLarge { size, .. } => too_large(table, index, image, size),
    }
}

fn too_large(table: &PartitionTable, index: usize, image: &NamedImage, image_bytes: u64) -> DiskError {
    let partition = &table.partitions[index];
    DiskError::ImageTooLarge {
        path: image.path.clone(),
        image_bytes,
        name: partition.name.clone(),
        partition_bytes: partition.size * SECTOR_SIZE,
        csv: table.path.clone(),
        line: partition.line,
    }
}

fn check_fits(table: &PartitionTable, index: usize, image: &NamedImage, image_bytes: u64) -> Result<(), DiskError> {
    if image_bytes > table.partitions[index].size * SECTOR_SIZE {
        return Err(too_large(table, index, image, image_bytes));
    }
    Ok(())
}

/// Writes the disk image `output` (atomically) and returns the identifiers it carries.
pub fn build_disk(
    output: &Path,
    table: &PartitionTable,
    images: &[NamedImage],
    options: &DiskOptions,
) -> Result<DiskIdentity, DiskError> {
    let plan = plan(table, images, options)?;
    write_atomically(output, |file| write_disk(&mut Canvas::raw(file), output, table, &plan, options))
}

/// Writes the disk image as the one sparse member `member` of the package `output` (atomically),
/// copying the compressed frames of packaged partition images, and returns its identifiers. The
/// member is byte for byte the image [`build_disk`] writes.
pub fn package_disk(
    output: &Path,
    member: &str,
    table: &PartitionTable,
    images: &[NamedImage],
    options: &DiskOptions,
    compression: CompressionOptions,
) -> Result<DiskIdentity, DiskError> {
    let plan = plan(table, images, options)?;
    package_assembled(output, member, compression, |canvas| write_disk(canvas, output, table, &plan, options))
}

/// Writes the planned disk into `canvas`; `output` names it in errors.
fn write_disk(
    canvas: &mut Canvas<'_>,
    output: &Path,
    table: &PartitionTable,
    plan: &Plan<'_>,
    options: &DiskOptions,
) -> Result<DiskIdentity, DiskError> {
    let write_error = |source| DiskError::Write { path: output.to_owned(), source };
    // The volume group first: it checks its table and images before writing anything.
    if let (Some(planned), Some(disk_lvm)) = (&plan.lvm, &options.lvm) {
        write_lvm_at(canvas, planned.offset, output, &disk_lvm.volumes, &planned.images, &planned.options)?;
    }
    for (index, image) in plan.by_partition.iter().enumerate() {
        let Some((image, source)) = image else { continue };
        let partition = &table.partitions[index];
        canvas
            .place(source, partition.start * SECTOR_SIZE, partition.size * SECTOR_SIZE)
            .map_err(|error| image_error(table, index, image, output, error))?;
    }
    canvas.file().set_len(options.size).map_err(write_error)?;
    write_gpt(canvas.file(), output, table, &plan.identity)?;
    Ok(plan.identity.clone())
}

/// Writes the protective MBR and both GPT headers and partition arrays. The `gpt` crate sizes
/// them from the file length, so the file must already have its final length.
fn write_gpt(file: &mut File, output: &Path, table: &PartitionTable, identity: &DiskIdentity) -> Result<(), DiskError> {
    let gpt_error = |problem: String| DiskError::Gpt { path: output.to_owned(), problem };
    let mut disk = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, Some(identity.disk_guid))
        .map_err(|error| gpt_error(error.to_string()))?;
    let entries: BTreeMap<u32, Partition> = table
        .partitions
        .iter()
        .zip(&identity.partition_uuids)
        .zip(1u32..)
        .map(|((partition, uuid), number)| {
            let entry = Partition {
                part_type_guid: Type { guid: partition.type_guid, os: OperatingSystem::None },
                part_guid: *uuid,
                first_lba: partition.start,
                last_lba: partition.last(),
                flags: 0,
                name: partition.name.clone(),
            };
            (number, entry)
        })
        .collect();
    disk.update_partitions(entries).map_err(|error| gpt_error(error.to_string()))?;
    disk.write().map_err(|error| gpt_error(error.to_string()))?;
    let sectors =
        file.metadata().map_err(|source| DiskError::Write { path: output.to_owned(), source })?.len() / SECTOR_SIZE;
    // The protective partition covers the disk after LBA 0, capped at what MBR can express.
    let protective_sectors = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    ProtectiveMBR::with_lb_size(protective_sectors)
        .overwrite_lba0(file)
        .map_err(|error| gpt_error(error.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitions::parse_partitions_csv;
    use std::fs;
    use std::io::{Seek, SeekFrom};

    fn options(size: u64) -> DiskOptions {
        DiskOptions {
            size,
            alignment: 2048,
            seed: Some("6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c".parse().unwrap()),
            disk_guid: None,
            lvm: None,
        }
    }

    #[test]
    fn writes_headers_images_and_holes_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let table = parse_partitions_csv(Path::new("p.csv"), "esp,2048,2048,U,\nroot,4096,4096,L,\n").unwrap();
        let esp = dir.path().join("esp.img");
        fs::write(&esp, [vec![0u8; 8192], vec![0xAB; 100]].concat()).unwrap();
        let images = [NamedImage { name: "esp".into(), path: esp }];
        let first = dir.path().join("a.img");
        let second = dir.path().join("b.img");
        let identity = build_disk(&first, &table, &images, &options(8 << 20)).unwrap();
        build_disk(&second, &table, &images, &options(8 << 20)).unwrap();
        let bytes = fs::read(&first).unwrap();
        assert_eq!(bytes, fs::read(&second).unwrap());
        assert_eq!(bytes.len(), 8 << 20);
        assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
        assert_eq!(&bytes[512..520], b"EFI PART");
        assert_eq!(&bytes[(8 << 20) - 512..(8 << 20) - 504], b"EFI PART");
        let esp_offset = 2048 * 512;
        assert_eq!(&bytes[esp_offset + 8192..esp_offset + 8292], &[0xAB; 100]);
        assert_eq!(identity.disk_guid, options(0).seed.unwrap().disk_guid());
        // The disk GUID is stored mixed-endian at offset 56 of the header.
        assert_eq!(&bytes[512 + 56..512 + 72], &identity.disk_guid.to_bytes_le());
    }

    #[test]
    fn a_packaged_image_gives_the_same_disk_as_the_raw_image_and_is_checked_to_fit() {
        use crate::package::{package, CompressionOptions, Member};
        let dir = tempfile::tempdir().unwrap();
        let table = parse_partitions_csv(Path::new("p.csv"), "esp,2048,2048,U,\nroot,4096,4096,L,\n").unwrap();
        let raw = dir.path().join("root.img");
        fs::write(&raw, [vec![0u8; 8192], vec![0xCD; 5000], vec![0u8; 9000], vec![1u8; 3]].concat()).unwrap();
        let packaged = dir.path().join("partition-root.tzst");
        package(&packaged, &[Member::file("partition.img", &raw)], CompressionOptions { level: 3, threads: 1 })
            .unwrap();
        let from_raw = dir.path().join("raw.disk");
        let from_package = dir.path().join("packaged.disk");
        build_disk(&from_raw, &table, &[NamedImage { name: "root".into(), path: raw }], &options(8 << 20)).unwrap();
        let images = [NamedImage { name: "root".into(), path: packaged.clone() }];
        build_disk(&from_package, &table, &images, &options(8 << 20)).unwrap();
        assert_eq!(fs::read(&from_raw).unwrap(), fs::read(&from_package).unwrap());
        // Too large for esp (1 MiB): the error names the package, before anything is written.
        let big = dir.path().join("big.img");
        File::create(&big).unwrap().set_len(2048 * 512 + 4096).unwrap();
        let big_package = dir.path().join("partition-big.tzst");
        package(&big_package, &[Member::file("partition.img", &big)], CompressionOptions { level: 3, threads: 1 })
            .unwrap();
        let output = dir.path().join("too-large.disk");
        let images = [NamedImage { name: "esp".into(), path: big_package }];
        let error = build_disk(&output, &table, &images, &options(8 << 20)).unwrap_err().to_string();
        assert!(error.contains("partition-big.tzst") && error.contains("larger than partition \"esp\""), "{error}");
        assert!(!output.exists());
    }

    #[test]
    fn refuses_images_that_do_not_fit_or_have_no_partition() {
        let dir = tempfile::tempdir().unwrap();
        let table = parse_partitions_csv(Path::new("p.csv"), "esp,2048,2048,U,\n").unwrap();
        let big = dir.path().join("big.img");
        let mut file = File::create(&big).unwrap();
        file.seek(SeekFrom::Start(2048 * 512)).unwrap();
        file.set_len(2048 * 512 + 1).unwrap();
        let output = dir.path().join("disk.img");
        let images = [NamedImage { name: "esp".into(), path: big.clone() }];
        let error = build_disk(&output, &table, &images, &options(4 << 20)).unwrap_err().to_string();
        assert!(
            error.contains("1048577 bytes") && error.contains("1048576 bytes") && error.contains("p.csv:1"),
            "{error}"
        );
        let images = [NamedImage { name: "nope".into(), path: big }];
        let error = build_disk(&output, &table, &images, &options(4 << 20)).unwrap_err().to_string();
        assert!(error.contains("\"nope\""), "{error}");
        let no_ids = DiskOptions { seed: None, ..options(4 << 20) };
        assert!(build_disk(&output, &table, &[], &no_ids).is_err());
        assert!(!output.exists());
    }

    /// The tar stream of a package: what `zstd -d` makes of it.
    fn tar_stream(path: &Path) -> Vec<u8> {
        zstd::decode_all(File::open(path).unwrap()).unwrap()
    }

    #[test]
    fn a_packaged_disk_copies_the_partition_frames_and_holds_the_raw_disk() {
        use crate::package::{package, CompressionOptions, Member};
        let dir = tempfile::tempdir().unwrap();
        let compression = CompressionOptions { level: 3, threads: 2 };
        // esp is raw (compressed with the disk), root packaged and block-aligned (its frames are
        // copied), odd packaged at an offset that is not (decompressed and compressed again).
        let table = parse_partitions_csv(Path::new("p.csv"), "esp,2048,2048,U,\nroot,4096,4096,L,\nodd,8193,2047,L,\n")
            .unwrap();
        let esp = dir.path().join("esp.img");
        fs::write(&esp, [vec![0u8; 8192], vec![0xAB; 100]].concat()).unwrap();
        let packaged = |name: &str, content: Vec<u8>| {
            let raw = dir.path().join(format!("{name}.img"));
            fs::write(&raw, content).unwrap();
            let path = dir.path().join(format!("partition-{name}.tzst"));
            package(&path, &[Member::file("partition.img", &raw)], compression).unwrap();
            path
        };
        let root = packaged("root", [vec![0u8; 8192], vec![0xCD; 49152], vec![0u8; 90112], vec![1u8; 4096]].concat());
        let odd = packaged("odd", [vec![7u8; 5000], vec![0u8; 10000], vec![9u8; 3]].concat());
        let images = [
            NamedImage { name: "esp".into(), path: esp },
            NamedImage { name: "root".into(), path: root.clone() },
            NamedImage { name: "odd".into(), path: odd },
        ];
        let options = DiskOptions { alignment: 1, ..options(8 << 20) };
        let raw = dir.path().join("disk.img");
        build_disk(&raw, &table, &images, &options).unwrap();
        let assembled = dir.path().join("disk-img.tar.zst");
        package_disk(&assembled, "disk.img", &table, &images, &options, compression).unwrap();
        let reference = dir.path().join("reference.tar.zst");
        package(&reference, &[Member::file("disk.img", &raw)], compression).unwrap();
        assert!(tar_stream(&assembled) == tar_stream(&reference), "the tar streams differ");
        // root's data frame went in as it was.
        let frame_of = |path: &Path| {
            let source = ImageSource::open(path).unwrap();
            let crate::image_source::Piece::Frames { frames, .. } = &source.pieces()[0] else { panic!("no frames") };
            let bytes = fs::read(path).unwrap();
            frames
                .iter()
                .map(|frame| bytes[frame.offset as usize..(frame.offset + frame.length) as usize].to_vec())
                .collect::<Vec<_>>()
        };
        let root_frame = frame_of(&root).concat();
        let disk = fs::read(&assembled).unwrap();
        assert!(disk.windows(root_frame.len()).any(|window| window == root_frame), "root's frame was not copied");
        // The disk package is itself an image source with frames: a disk of it is the same disk.
        let unpacked = dir.path().join("unpacked");
        fs::create_dir(&unpacked).unwrap();
        crate::package::unpack(&assembled, &unpacked).unwrap();
        assert!(fs::read(unpacked.join("disk.img")).unwrap() == fs::read(&raw).unwrap());
        // A failure leaves no package.
        let too_small = DiskOptions { size: 4 << 20, ..options.clone() };
        let failed = dir.path().join("failed.tar.zst");
        assert!(package_disk(&failed, "disk.img", &table, &images, &too_small, compression).is_err());
        assert!(!failed.exists());
    }
}
