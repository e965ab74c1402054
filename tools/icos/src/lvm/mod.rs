//! LVM2 physical volumes written without lvm2: one physical volume holding one volume group of
//! linear logical volumes at the extents a `volumes.csv` gives, each filled from a raw or packaged
//! image (HostOS's `hostlvm` partition).
//!
//! The output is a function of its inputs only: the PV, VG and LV UUIDs come from the volume
//! table or the build seed, the metadata sequence number is 1, and the creation host and time are
//! parameters (lvm2 would write the host name and the wall-clock time). As in [`crate::gpt_disk`],
//! only the data blocks of the images are written, so a mostly empty volume group stays sparse.
//!
//! The layout is pvcreate's default: label in sector 1, one metadata area from 4 KiB to the first
//! extent at 1 MiB, 4 MiB extents unless told otherwise. `tests/build_root/lvm.rs` checks the
//! result with lvm2 itself (pvck, vgck, lvs, vgcfgbackup, and the volumes read through
//! device-mapper).

mod format;
mod id;
mod metadata;
mod volumes;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use id::{LvmId, LvmIdParseError};
pub use volumes::{
    invalid_lv_name, invalid_name, parse_volumes_csv, read_volumes_csv, VolumeSpec, VolumeTable, VolumesError,
};

use crate::assembly::{package_assembled, Canvas};
use crate::image_source::{ImageSource, ImageSourceError, NamedImage};
use crate::output::{write_atomically, OutputError};
use crate::package::{CompressionOptions, PackageError};
use crate::seed::Seed;
use format::{metadata_area_header, PhysicalVolumeLabel, METADATA_AREA_OFFSET, METADATA_HEADER_SIZE, SECTOR_SIZE};
use metadata::{LogicalVolume, VolumeGroup};

/// pvcreate's default extent size.
pub const DEFAULT_EXTENT_SIZE: u64 = 4 << 20;
/// pvcreate's default start of the first extent (1 MiB), which also sizes the metadata area.
pub const PE_START: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    #[error(transparent)]
    Volumes(#[from] VolumesError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("physical volume size {size} bytes: {problem}")]
    BadSize { size: u64, problem: String },
    #[error("extent size {size} bytes: must be a power of two of at least 4096 bytes")]
    BadExtentSize { size: u64 },
    #[error("volume group name {name:?}: {problem}")]
    BadVolumeGroupName { name: String, problem: String },
    #[error("creation host {host:?}: must be non-empty and hold no control characters")]
    BadCreationHost { host: String },
    #[error("image {path} is for volume {name:?}, which {csv} does not list")]
    UnknownVolume { name: String, path: PathBuf, csv: PathBuf },
    #[error("volume {name:?} is given two images: {first} and {second}")]
    DuplicateImage { name: String, first: PathBuf, second: PathBuf },
    #[error("cannot read image {path}: {source}")]
    ReadImage { path: PathBuf, source: io::Error },
    #[error("image {path} ({image_bytes} bytes) is larger than volume {name:?} ({volume_bytes} bytes, {csv}:{line})")]
    ImageTooLarge { path: PathBuf, image_bytes: u64, name: String, volume_bytes: u64, csv: PathBuf, line: usize },
    #[error("the metadata of volume group {name:?} ({bytes} bytes) does not fit its {capacity}-byte metadata area")]
    MetadataTooLarge { name: String, bytes: u64, capacity: u64 },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Everything but the volume table and the images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvmOptions {
    /// The size of the physical volume in bytes (of the partition that holds it), a multiple of 512.
    pub size: u64,
    pub vg_name: String,
    /// Bytes per physical extent.
    pub extent_size: u64,
    /// The identifiers that `volumes.csv` does not fix derive from it.
    pub seed: Seed,
    /// What lvm2 would record as the host name that created the group and each volume.
    pub creation_host: String,
    /// The creation time of the group and each volume, seconds since 1970.
    pub creation_time: u64,
}

/// A volume group that fills one partition of a disk: the partition, the group's volume table and
/// its options other than the size (the partition's) and the seed (the disk's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionVolumeGroup {
    pub partition: String,
    pub volumes: VolumeTable,
    pub vg_name: String,
    pub extent_size: u64,
    pub creation_host: String,
    pub creation_time: u64,
}

impl PartitionVolumeGroup {
    /// The options of the physical volume that fills a `size`-byte partition of a disk built with `seed`.
    pub fn options(&self, size: u64, seed: Seed) -> LvmOptions {
        LvmOptions {
            size,
            vg_name: self.vg_name.clone(),
            extent_size: self.extent_size,
            seed,
            creation_host: self.creation_host.clone(),
            creation_time: self.creation_time,
        }
    }
}

/// The identifiers a physical volume was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvmIdentity {
    pub pv_uuid: LvmId,
    pub vg_uuid: LvmId,
    /// Logical volume UUIDs in table order.
    pub lv_uuids: Vec<LvmId>,
    /// The number of physical extents.
    pub pe_count: u64,
}

/// An LVM identifier from the seed, for `what` (`pv`, `vg` or `lv/NAME`) in volume group `vg_name`.
fn derived_id(seed: &Seed, vg_name: &str, what: &str) -> LvmId {
    LvmId::from_bytes(seed.digest(format!("icos-lvm-uuid/{vg_name}/{what}").as_bytes()))
}

impl LvmIdentity {
    /// The identifiers of the volume group `options` describes with the volumes of `table`.
    pub fn derive(table: &VolumeTable, options: &LvmOptions) -> Self {
        let vg = &options.vg_name;
        LvmIdentity {
            pv_uuid: derived_id(&options.seed, vg, "pv"),
            vg_uuid: derived_id(&options.seed, vg, "vg"),
            lv_uuids: table
                .volumes
                .iter()
                .map(|volume| {
                    volume.uuid.unwrap_or_else(|| derived_id(&options.seed, vg, &format!("lv/{}", volume.name)))
                })
                .collect(),
            pe_count: options.size.saturating_sub(PE_START) / options.extent_size.max(1),
        }
    }
}

/// Per volume in table order, its image (as named on the command line, and opened) if any.
type ImagesByVolume<'a> = Vec<Option<(&'a NamedImage, ImageSource)>>;

/// Checks the options, the layout and that every image fits its volume; returns the identifiers
/// and, per volume in table order, its image if any.
fn plan<'a>(
    table: &VolumeTable,
    images: &'a [NamedImage],
    options: &LvmOptions,
) -> Result<(LvmIdentity, ImagesByVolume<'a>), LvmError> {
    let extent_size = options.extent_size;
    if !extent_size.is_power_of_two() || extent_size < 4096 {
        return Err(LvmError::BadExtentSize { size: extent_size });
    }
    let bad_size = |problem: String| LvmError::BadSize { size: options.size, problem };
    if options.size % SECTOR_SIZE != 0 {
        return Err(bad_size("not a multiple of 512-byte sectors".into()));
    }
    if options.size < PE_START + extent_size {
        return Err(bad_size(format!("too small for the metadata area and one {extent_size}-byte extent")));
    }
    if let Some(problem) = invalid_name(&options.vg_name) {
        return Err(LvmError::BadVolumeGroupName { name: options.vg_name.clone(), problem });
    }
    if options.creation_host.is_empty() || options.creation_host.chars().any(char::is_control) {
        return Err(LvmError::BadCreationHost { host: options.creation_host.clone() });
    }
    let identity = LvmIdentity::derive(table, options);
    table.check_layout(identity.pe_count)?;
    let mut by_volume: ImagesByVolume = vec![None; table.volumes.len()];
    for image in images {
        let index = table.volumes.iter().position(|volume| volume.name == image.name).ok_or_else(|| {
            LvmError::UnknownVolume { name: image.name.clone(), path: image.path.clone(), csv: table.path.clone() }
        })?;
        if let Some((first, _)) = &by_volume[index] {
            return Err(LvmError::DuplicateImage {
                name: image.name.clone(),
                first: first.path.clone(),
                second: image.path.clone(),
            });
        }
        let source = ImageSource::open(&image.path)?;
        if source.size() > table.volumes[index].size * extent_size {
            return Err(too_large(table, index, image, options, source.size()));
        }
        by_volume[index] = Some((image, source));
    }
    Ok((identity, by_volume))
}

fn too_large(
    table: &VolumeTable,
    index: usize,
    image: &NamedImage,
    options: &LvmOptions,
    image_bytes: u64,
) -> LvmError {
    let volume = &table.volumes[index];
    LvmError::ImageTooLarge {
        path: image.path.clone(),
        image_bytes,
        name: volume.name.clone(),
        volume_bytes: volume.size * options.extent_size,
        csv: table.path.clone(),
        line: volume.line,
    }
}

/// The error of placing `image` into volume `index` of `output`, with the table's context.
fn image_error(
    table: &VolumeTable,
    index: usize,
    image: &NamedImage,
    options: &LvmOptions,
    output: &Path,
    error: ImageSourceError,
) -> LvmError {
    match error {
        ImageSourceError::Package(error) => LvmError::Package(error),
        ImageSourceError::Read { path, source } => LvmError::ReadImage { path, source },
        ImageSourceError::Write(source) => LvmError::Write { path: output.to_owned(), source },
        ImageSourceError::TooLarge { size, .. } => too_large(table, index, image, options, size),
    }
}

/// Writes the physical volume `output` (atomically, sparse) and returns its identifiers.
pub fn build_lvm(
    output: &Path,
    table: &VolumeTable,
    images: &[NamedImage],
    options: &LvmOptions,
) -> Result<LvmIdentity, LvmError> {
    let write_error = |source| LvmError::Write { path: output.to_owned(), source };
    write_atomically(output, |file: &mut File| {
        let mut canvas = Canvas::raw(file);
        let identity = write_lvm_at(&mut canvas, 0, output, table, images, options)?;
        canvas.file().set_len(options.size).map_err(write_error)?;
        Ok(identity)
    })
}

/// Writes the physical volume as the one sparse member `member` of the package `output`
/// (atomically), copying the compressed frames of packaged volume images; the member is byte for
/// byte the volume [`build_lvm`] writes.
pub fn package_lvm(
    output: &Path,
    member: &str,
    table: &VolumeTable,
    images: &[NamedImage],
    options: &LvmOptions,
    compression: CompressionOptions,
) -> Result<LvmIdentity, LvmError> {
    package_assembled(output, member, compression, |canvas| {
        let identity = write_lvm_at(canvas, 0, output, table, images, options)?;
        canvas.file().set_len(options.size).map_err(|source| LvmError::Write { path: output.to_owned(), source })?;
        Ok(identity)
    })
}

/// Writes the physical volume into `canvas` from byte `offset` on (the partition that holds it in
/// a disk image, which `output` names in errors), writing only data blocks; everything is checked
/// before the first byte is written. Returns the identifiers.
pub fn write_lvm_at(
    canvas: &mut Canvas<'_>,
    offset: u64,
    output: &Path,
    table: &VolumeTable,
    images: &[NamedImage],
    options: &LvmOptions,
) -> Result<LvmIdentity, LvmError> {
    let (identity, by_volume) = plan(table, images, options)?;
    let metadata_area_size = PE_START - METADATA_AREA_OFFSET;
    let group = VolumeGroup {
        name: &options.vg_name,
        id: identity.vg_uuid,
        seqno: 1,
        extent_sectors: options.extent_size / SECTOR_SIZE,
        pv_id: identity.pv_uuid,
        dev_sectors: options.size / SECTOR_SIZE,
        pe_start_sectors: PE_START / SECTOR_SIZE,
        pe_count: identity.pe_count,
        logical_volumes: table
            .volumes
            .iter()
            .zip(&identity.lv_uuids)
            .map(|(volume, id)| LogicalVolume {
                name: &volume.name,
                id: *id,
                start: volume.start,
                extents: volume.size,
            })
            .collect(),
        creation_host: &options.creation_host,
        creation_time: options.creation_time,
    };
    let text = group.text();
    let capacity = metadata_area_size - METADATA_HEADER_SIZE;
    if text.len() as u64 > capacity {
        return Err(LvmError::MetadataTooLarge { name: options.vg_name.clone(), bytes: text.len() as u64, capacity });
    }
    let label = PhysicalVolumeLabel {
        pv_uuid: identity.pv_uuid,
        device_size: options.size,
        pe_start: PE_START,
        metadata_area_size,
    };
    let write_error = |source| LvmError::Write { path: output.to_owned(), source };
    for (index, image) in by_volume.iter().enumerate() {
        let Some((image, source)) = image else { continue };
        let volume = &table.volumes[index];
        let volume_offset = offset + PE_START + volume.start * options.extent_size;
        canvas
            .place(source, volume_offset, volume.size * options.extent_size)
            .map_err(|error| image_error(table, index, image, options, output, error))?;
    }
    let file = canvas.file();
    file.write_all_at(&label.sector(), offset + PhysicalVolumeLabel::offset()).map_err(write_error)?;
    file.write_all_at(&metadata_area_header(metadata_area_size, &text), offset + METADATA_AREA_OFFSET)
        .map_err(write_error)?;
    file.write_all_at(&text, offset + METADATA_AREA_OFFSET + METADATA_HEADER_SIZE).map_err(write_error)?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn options(size: u64) -> LvmOptions {
        LvmOptions {
            size,
            vg_name: "hostlvm".into(),
            extent_size: DEFAULT_EXTENT_SIZE,
            seed: "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c".parse().unwrap(),
            creation_host: "icos".into(),
            creation_time: 0,
        }
    }

    fn table(text: &str) -> VolumeTable {
        parse_volumes_csv(Path::new("volumes.csv"), text, DEFAULT_EXTENT_SIZE).unwrap()
    }

    #[test]
    fn writes_label_metadata_and_images_sparse_and_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let table = table("config,0,1,\nA_boot,1,2,\nguestos,5,10,\n");
        let boot = dir.path().join("boot.img");
        fs::write(&boot, [vec![0u8; 4096], vec![0xB0; 5000]].concat()).unwrap();
        let images = [NamedImage { name: "A_boot".into(), path: boot }];
        let first = dir.path().join("a.pv");
        let second = dir.path().join("b.pv");
        let size = 100 << 20;
        let identity = build_lvm(&first, &table, &images, &options(size)).unwrap();
        build_lvm(&second, &table, &images, &options(size)).unwrap();
        let bytes = fs::read(&first).unwrap();
        assert_eq!(bytes, fs::read(&second).unwrap());
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(&bytes[512..520], b"LABELONE");
        assert_eq!(&bytes[544..576], identity.pv_uuid.as_bytes());
        assert_eq!(&bytes[4100..4116], b" LVM2 x[5A%r0N*>");
        let text_start = 4096 + 512;
        assert!(bytes[text_start..].starts_with(format!("hostlvm {{\nid = \"{}\"", identity.vg_uuid).as_bytes()));
        let boot_at = (PE_START + DEFAULT_EXTENT_SIZE) as usize;
        assert!(bytes[boot_at..boot_at + 4096].iter().all(|&byte| byte == 0));
        assert!(bytes[boot_at + 4096..boot_at + 9096].iter().all(|&byte| byte == 0xB0));
        assert_eq!(identity.pe_count, 24);
        assert_eq!(identity.lv_uuids.len(), 3);
        assert_ne!(identity.lv_uuids[0], identity.lv_uuids[1]);
        // Sparse: the metadata and the image's data block, not 100 MiB.
        assert!(fs::metadata(&first).unwrap().blocks() * 512 < 1 << 20);
    }

    #[test]
    fn identifiers_come_from_the_table_or_the_seed_and_the_group_name() {
        let fixed: LvmId = "0123ab-cdef-GHIJ-klmn-OPQR-stuv-wxyz01".parse().unwrap();
        let table = table(&format!("a,0,1,{fixed}\nb,1,1,\n"));
        let identity = LvmIdentity::derive(&table, &options(100 << 20));
        assert_eq!(identity.lv_uuids[0], fixed);
        let other_group = LvmIdentity::derive(&table, &LvmOptions { vg_name: "other".into(), ..options(100 << 20) });
        assert_ne!(identity.pv_uuid, other_group.pv_uuid);
        assert_ne!(identity.vg_uuid, other_group.vg_uuid);
        assert_ne!(identity.lv_uuids[1], other_group.lv_uuids[1]);
        assert_ne!(identity.pv_uuid, identity.vg_uuid);
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("pv.img");
        let big = dir.path().join("big.img");
        File::create(&big).unwrap().set_len(DEFAULT_EXTENT_SIZE + 1).unwrap();
        let cases: Vec<(VolumeTable, Vec<NamedImage>, LvmOptions, &str)> = vec![
            (
                table("a,0,1,\n"),
                vec![NamedImage { name: "a".into(), path: big.clone() }],
                options(100 << 20),
                "(4194305 bytes) is larger than volume \"a\" (4194304 bytes, volumes.csv:1)",
            ),
            (
                table("a,0,1,\n"),
                vec![NamedImage { name: "b".into(), path: big.clone() }],
                options(100 << 20),
                "volume \"b\", which volumes.csv does not list",
            ),
            (
                table("a,0,30,\n"),
                vec![],
                options(100 << 20),
                "volumes.csv:1: volume \"a\": extents 0..30 lie beyond the physical volume, which has 24 extents",
            ),
            (table("a,0,1,\n"), vec![], options((100 << 20) + 1), "not a multiple of 512-byte sectors"),
            (table("a,0,1,\n"), vec![], options(2 << 20), "too small"),
            (
                table("a,0,1,\n"),
                vec![],
                LvmOptions { vg_name: "host lvm".into(), ..options(100 << 20) },
                "volume group name",
            ),
            (table("a,0,1,\n"), vec![], LvmOptions { extent_size: 3 << 20, ..options(100 << 20) }, "power of two"),
            (
                table("a,0,1,\n"),
                vec![],
                LvmOptions { creation_host: "a\nb".into(), ..options(100 << 20) },
                "creation host",
            ),
        ];
        for (table, images, options, expected) in cases {
            let error = build_lvm(&output, &table, &images, &options).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "only big.img is left");
        }
    }
}
