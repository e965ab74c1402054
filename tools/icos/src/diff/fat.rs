//! FAT filesystems (the ESP and the GRUB partition): the boot sector and FSInfo fields, and the
//! files read with `fatfs`, which wants a read-write device: it gets a [`super::blob::BlobReader`] whose writes
//! fail, with access-date updates off so that reading never tries to write.

use std::io::{self, Read};

use fatfs::{Date, DateTime, Dir, FileAttributes, FileSystem, FsOptions, ReadWriteSeek};
use fscommon::BufStream;
use sha2::{Digest as _, Sha256};

use super::blob::{Blob, ByteComparison};
use super::bytes_difference;
use super::error::DiffError;
use super::escape::{quote, short_hex};
use super::report::{ArtifactDiff, Difference};
use super::tree::{compare_fields, compare_trees, FileTree, Node, NodeType, Time};
use crate::calendar::days_from_civil;
use crate::fat::boot_sector::BootSector;

/// Deeper directories than this mean a corrupt volume whose directories loop.
const MAX_DEPTH: usize = 64;
/// More entries than this in one volume mean the same.
const MAX_ENTRIES: usize = 1 << 20;

/// Compares two FAT filesystems.
pub fn compare(name: &str, a: &Blob, b: &Blob, bytes: &ByteComparison) -> Result<ArtifactDiff, DiffError> {
    let (fields_a, tree_a) = read_volume(a)?;
    let (fields_b, tree_b) = read_volume(b)?;
    let mut diff = ArtifactDiff::new(name, "FAT", "FAT");
    diff.differences.extend(compare_trees(&tree_a, &tree_b).differences);
    let files_differ = !diff.differences.is_empty();
    let fields = compare_fields("FAT ", &fields_a, &fields_b, &[]);
    let mut names = fields.iter().filter_map(Difference::field_name).filter_map(|name| name.strip_prefix("FAT "));
    let boot_sector = names.clone().any(|name| BOOT_SECTOR_FIELDS.contains(&name));
    let fs_info = names.any(|name| name.starts_with("FSInfo"));
    let explanation = Explanation { files: files_differ, boot_sector, fs_info: files_differ || fs_info };
    diff.differences.extend(fields);
    let head_a = a.head(512).map_err(|error| DiffError::read(&a.origin, error))?;
    let layout = Layout::parse(&head_a);
    let mut fat_a = None;
    let mut fat_b = None;
    let mut annotate = |start: u64, end: u64| -> Vec<(u64, u64, Option<String>, bool)> {
        let Some(layout) = &layout else { return vec![(start, end, None, explanation.files)] };
        // The first FAT of each side, read once, tells free clusters from used ones.
        let fat_a = fat_a.get_or_insert_with(|| layout.first_fat(a));
        let fat_b = fat_b.get_or_insert_with(|| layout.first_fat(b));
        let mut pieces: Vec<(u64, u64, Region)> = Vec::new();
        let mut position = start;
        while position < end {
            let (region, region_end) = layout.region(position, fat_a, fat_b);
            let stop = end.min(region_end);
            match pieces.last_mut() {
                Some(last) if last.1 == position && last.2.can_absorb(&region) => {
                    last.2.absorb(&region);
                    last.1 = stop;
                }
                _ => pieces.push((position, stop, region)),
            }
            position = stop;
        }
        pieces
            .into_iter()
            .map(|(start, stop, region)| (start, stop, Some(region.describe()), region.explained(&explanation)))
            .collect()
    };
    diff.differences.push(bytes_difference(bytes, a, b, &mut annotate)?);
    Ok(diff)
}

/// Boot-sector field names, as [`boot_sector_fields`] gives them.
const BOOT_SECTOR_FIELDS: &[&str] = &[
    "OEM name",
    "bytes per sector",
    "sectors per cluster",
    "reserved sectors",
    "number of FATs",
    "root directory entries",
    "total sectors",
    "media",
    "sectors per FAT",
    "sectors per track",
    "heads",
    "hidden sectors",
    "FAT32 flags",
    "FAT32 version",
    "root directory cluster",
    "FSInfo sector",
    "backup boot sector",
    "drive number",
    "status flags",
    "boot signature",
    "volume id",
    "volume label",
    "file system type",
    "boot code",
];

/// What the reported differences account for.
struct Explanation {
    /// Files differ: the FATs, directories and clusters in use changed with them.
    files: bool,
    boot_sector: bool,
    fs_info: bool,
}

/// Where the parts of a FAT volume are, from its boot sector (Microsoft's FAT specification).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    sector: u64,
    fat_start: u64,
    fat_bytes: u64,
    fats: u64,
    root_start: u64,
    root_bytes: u64,
    data_start: u64,
    cluster_size: u64,
    clusters: u64,
    entry_bits: u64,
    fs_info: Option<u64>,
    backup_boot: Option<u64>,
}

/// More FAT bytes than this are not read to tell free clusters (64 MiB: a 16 GiB FAT32 volume).
const MAX_FAT_BYTES: u64 = 64 << 20;

impl Layout {
    fn parse(boot: &[u8]) -> Option<Layout> {
        let sector = BootSector::parse(boot)?;
        let clusters = sector.clusters();
        let entry_bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        let bytes = sector.bytes_per_sector;
        let sector_offset = |number: u64| (sector.fat32 && number != 0 && number != 0xffff).then_some(number * bytes);
        Some(Layout {
            sector: bytes,
            fat_start: sector.fat_start(),
            fat_bytes: sector.fat_bytes(),
            fats: sector.fats,
            root_start: sector.root_start(),
            root_bytes: sector.root_bytes(),
            data_start: sector.data_start(),
            cluster_size: sector.cluster_size(),
            clusters,
            entry_bits,
            fs_info: sector_offset(sector.fs_info_sector),
            backup_boot: sector_offset(sector.backup_boot_sector),
        })
    }

    /// The first FAT's bytes (empty if they cannot be read).
    fn first_fat(&self, blob: &Blob) -> Vec<u8> {
        let mut fat = vec![0u8; usize::try_from(self.fat_bytes.min(MAX_FAT_BYTES)).unwrap_or(0)];
        match blob.read_at(&mut fat, self.fat_start) {
            Ok(count) => fat.truncate(count),
            Err(_) => fat.clear(),
        }
        fat
    }

    /// Whether `cluster` is free in `fat`; unknown (`None`) past what was read.
    fn is_free(&self, fat: &[u8], cluster: u64) -> Option<bool> {
        let byte = |index: u64| fat.get(usize::try_from(index).ok()?).copied();
        let entry = match self.entry_bits {
            12 => {
                let offset = cluster * 3 / 2;
                let pair = u16::from(byte(offset)?) | u16::from(byte(offset + 1)?) << 8;
                u32::from(if cluster % 2 == 0 { pair & 0xfff } else { pair >> 4 })
            }
            16 => u32::from(byte(cluster * 2)?) | u32::from(byte(cluster * 2 + 1)?) << 8,
            _ => {
                let offset = cluster * 4;
                (u32::from(byte(offset)?)
                    | u32::from(byte(offset + 1)?) << 8
                    | u32::from(byte(offset + 2)?) << 16
                    | u32::from(byte(offset + 3)?) << 24)
                    & 0x0fff_ffff
            }
        };
        Some(entry == 0)
    }

    /// The region holding byte `offset`, and where that region ends.
    fn region(&self, offset: u64, fat_a: &[u8], fat_b: &[u8]) -> (Region, u64) {
        let sector_end = (offset / self.sector + 1) * self.sector;
        if offset < self.sector {
            return (Region::BootSector, self.sector);
        }
        if offset < self.fat_start {
            let region = if Some(offset / self.sector * self.sector) == self.backup_boot {
                Region::BootSector
            } else if self.fs_info.is_some_and(|fs_info| {
                let start = offset / self.sector * self.sector;
                start == fs_info || Some(start) == self.backup_boot.map(|backup| backup + fs_info)
            }) {
                Region::FsInfo
            } else {
                Region::Reserved
            };
            return (region, sector_end);
        }
        if offset < self.root_start {
            let index = (offset - self.fat_start) / self.fat_bytes.max(1);
            return (Region::Fat { first: index + 1, last: index + 1 }, self.fat_start + (index + 1) * self.fat_bytes);
        }
        if offset < self.data_start {
            return (Region::RootDirectory, self.data_start);
        }
        let cluster = (offset - self.data_start) / self.cluster_size;
        if cluster >= self.clusters {
            return (Region::AfterEnd, u64::MAX);
        }
        let number = cluster + 2;
        let free = match (self.is_free(fat_a, number), self.is_free(fat_b, number)) {
            (Some(true), Some(true)) => Some(true),
            (Some(false), _) | (_, Some(false)) => Some(false),
            _ => None,
        };
        (Region::Clusters { first: number, last: number, free }, self.data_start + (cluster + 1) * self.cluster_size)
    }
}

/// A part of a FAT volume, for naming byte ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Region {
    BootSector,
    FsInfo,
    Reserved,
    /// FAT copies, 1-based.
    Fat {
        first: u64,
        last: u64,
    },
    RootDirectory,
    /// Data clusters (numbered from 2) and whether they are free on both sides (`None`: unknown).
    Clusters {
        first: u64,
        last: u64,
        free: Option<bool>,
    },
    AfterEnd,
}

impl Region {
    fn can_absorb(&self, next: &Region) -> bool {
        match (self, next) {
            (Region::Fat { .. }, Region::Fat { .. }) => true,
            (Region::Clusters { free, .. }, Region::Clusters { free: other, .. }) => free == other,
            (first, second) => first == second,
        }
    }

    fn absorb(&mut self, next: &Region) {
        match (self, next) {
            (Region::Fat { last, .. }, Region::Fat { last: next, .. })
            | (Region::Clusters { last, .. }, Region::Clusters { last: next, .. }) => *last = (*last).max(*next),
            _ => {}
        }
    }

    fn describe(&self) -> String {
        let range = |first: u64, last: u64| if first == last { first.to_string() } else { format!("{first}-{last}") };
        match self {
            Region::BootSector => "boot sector".into(),
            Region::FsInfo => "FSInfo sector".into(),
            Region::Reserved => "reserved sectors".into(),
            Region::Fat { first, last } if first == last => format!("FAT {first}"),
            Region::Fat { first, last } => format!("FATs {first}-{last}"),
            Region::RootDirectory => "root directory".into(),
            Region::Clusters { first, last, free } => {
                let state = match free {
                    Some(true) => "free",
                    Some(false) => "in use",
                    None => "unknown",
                };
                let noun = if first == last { "cluster" } else { "clusters" };
                format!("{noun} {} ({state})", range(*first, *last))
            }
            Region::AfterEnd => "after the last cluster".into(),
        }
    }

    fn explained(&self, explanation: &Explanation) -> bool {
        match self {
            Region::BootSector => explanation.boot_sector,
            Region::FsInfo => explanation.fs_info,
            Region::Fat { .. } | Region::RootDirectory => explanation.files,
            Region::Clusters { free, .. } => *free != Some(true) && explanation.files,
            Region::Reserved | Region::AfterEnd => false,
        }
    }
}

/// The boot-sector fields and the file tree of the FAT volume in `blob`.
pub fn read_volume(blob: &Blob) -> Result<(Vec<(String, String)>, FileTree), DiffError> {
    let corrupt = |error: &dyn std::fmt::Display| DiffError::corrupt(&blob.origin, "FAT filesystem", error);
    let boot = blob.head(512).map_err(|error| DiffError::read(&blob.origin, error))?;
    let mut fields = boot_sector_fields(&boot);
    let options = FsOptions::new().update_accessed_date(false);
    let filesystem = FileSystem::new(BufStream::new(blob.reader()), options).map_err(|error| corrupt(&error))?;
    fields.push(("FAT type".into(), format!("{:?}", filesystem.fat_type())));
    let stats = filesystem.stats().map_err(|error| corrupt(&error))?;
    fields.push(("cluster size".into(), stats.cluster_size().to_string()));
    fields.push(("total clusters".into(), stats.total_clusters().to_string()));
    fields.push(("free clusters".into(), stats.free_clusters().to_string()));
    let label = filesystem.read_volume_label_from_root_dir_as_bytes().map_err(|error| corrupt(&error))?;
    fields.push((
        "volume label (root directory entry)".into(),
        label.map_or_else(|| "(none)".into(), |label| quote(&label)),
    ));
    if let Some(fs_info) = fs_info_fields(blob, &boot) {
        fields.extend(fs_info);
    }
    let mut tree = FileTree::new();
    tree.insert(b"/".to_vec(), Node::new(NodeType::Directory));
    walk(&filesystem.root_dir(), b"", 0, &mut tree).map_err(|error| corrupt(&error))?;
    Ok((fields, tree))
}

fn walk<T: ReadWriteSeek>(dir: &Dir<'_, T>, path: &[u8], depth: usize, tree: &mut FileTree) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "directories nest too deep (a loop?)"));
    }
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        if tree.len() >= MAX_ENTRIES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many directory entries (a loop?)"));
        }
        let mut child = path.to_vec();
        child.push(b'/');
        child.extend_from_slice(name.as_bytes());
        let mut node = Node::new(if entry.is_dir() { NodeType::Directory } else { NodeType::Regular });
        node.times.push(("modified", date_time(entry.modified())));
        node.times.push(("created", date_time(entry.created())));
        node.times.push(("accessed", date(entry.accessed())));
        node.other.push(("FAT attributes", attributes(entry.attributes())));
        node.other.push(("short name", quote(entry.short_file_name_as_bytes())));
        if entry.is_dir() {
            tree.insert(child.clone(), node);
            walk(&entry.to_dir(), &child, depth + 1, tree)?;
        } else {
            node.size = Some(entry.len());
            let mut file = entry.to_file();
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                let count = file.read(&mut buffer)?;
                if count == 0 {
                    break;
                }
                hasher.update(&buffer[..count]);
            }
            node.sha256 = Some(hasher.finalize().into());
            tree.insert(child, node);
        }
    }
    Ok(())
}

fn date(date: Date) -> Time {
    let days = days_from_civil(i64::from(date.year), u32::from(date.month), u32::from(date.day));
    Time { seconds: days * 86_400, nanoseconds: 0, utc: false }
}

fn date_time(value: DateTime) -> Time {
    let time = value.time;
    let seconds =
        date(value.date).seconds + i64::from(time.hour) * 3600 + i64::from(time.min) * 60 + i64::from(time.sec);
    Time { seconds, nanoseconds: u32::from(time.millis) * 1_000_000, utc: false }
}

fn attributes(attributes: FileAttributes) -> String {
    let names = [
        (FileAttributes::READ_ONLY, "read-only"),
        (FileAttributes::HIDDEN, "hidden"),
        (FileAttributes::SYSTEM, "system"),
        (FileAttributes::VOLUME_ID, "volume-id"),
        (FileAttributes::DIRECTORY, "directory"),
        (FileAttributes::ARCHIVE, "archive"),
    ];
    let set: Vec<&str> = names.iter().filter(|(flag, _)| attributes.contains(*flag)).map(|(_, name)| *name).collect();
    if set.is_empty() {
        "none".into()
    } else {
        set.join(",")
    }
}

/// The BIOS parameter block and extended boot record, by name (FAT32 or FAT12/16 layout).
pub fn boot_sector_fields(boot: &[u8]) -> Vec<(String, String)> {
    let Some(sector) = BootSector::parse(boot) else {
        return Vec::new();
    };
    let u16_at = |offset: usize| u16::from_le_bytes([boot[offset], boot[offset + 1]]);
    let u32_at =
        |offset: usize| u32::from_le_bytes([boot[offset], boot[offset + 1], boot[offset + 2], boot[offset + 3]]);
    let fat32 = sector.fat32;
    let mut fields: Vec<(String, String)> = vec![
        ("OEM name".into(), quote(&boot[3..11])),
        ("bytes per sector".into(), sector.bytes_per_sector.to_string()),
        ("sectors per cluster".into(), sector.sectors_per_cluster.to_string()),
        ("reserved sectors".into(), sector.reserved_sectors.to_string()),
        ("number of FATs".into(), sector.fats.to_string()),
        ("root directory entries".into(), sector.root_entries.to_string()),
        ("total sectors".into(), sector.total_sectors.to_string()),
        ("media".into(), format!("{:#04x}", boot[21])),
        ("sectors per FAT".into(), sector.sectors_per_fat.to_string()),
        ("sectors per track".into(), u16_at(24).to_string()),
        ("heads".into(), u16_at(26).to_string()),
        ("hidden sectors".into(), u32_at(28).to_string()),
    ];
    // The extended boot record: at 36 on FAT12/16, at 64 on FAT32 after the FAT32 fields.
    let ebr = if fat32 {
        fields.extend([
            ("FAT32 flags".into(), format!("{:#06x}", u16_at(40))),
            ("FAT32 version".into(), u16_at(42).to_string()),
            ("root directory cluster".into(), sector.root_cluster.to_string()),
            ("FSInfo sector".into(), sector.fs_info_sector.to_string()),
            ("backup boot sector".into(), sector.backup_boot_sector.to_string()),
        ]);
        64
    } else {
        36
    };
    fields.extend([
        ("drive number".into(), format!("{:#04x}", boot[ebr])),
        ("status flags".into(), format!("{:#04x}", boot[ebr + 1])),
        ("boot signature".into(), format!("{:#04x}", boot[ebr + 2])),
        ("volume id".into(), format!("{:08X}", u32_at(ebr + 3))),
        ("volume label".into(), quote(&boot[ebr + 7..ebr + 18])),
        ("file system type".into(), quote(&boot[ebr + 18..ebr + 26])),
        ("boot code".into(), format!("sha256 {}", short_hex(&Sha256::digest(&boot[ebr + 26..510])))),
    ]);
    fields
}

/// The FSInfo sector's counts, on FAT32.
fn fs_info_fields(blob: &Blob, boot: &[u8]) -> Option<Vec<(String, String)>> {
    let boot_sector = BootSector::parse(boot).filter(|sector| sector.fat32)?;
    let offset = boot_sector.fs_info_sector * boot_sector.bytes_per_sector;
    let mut sector = [0u8; 512];
    let count = blob.read_at(&mut sector, offset).ok()?;
    if count < 512 || &sector[..4] != b"RRaA" {
        return None;
    }
    let u32_at = |offset: usize| {
        u32::from_le_bytes([sector[offset], sector[offset + 1], sector[offset + 2], sector[offset + 3]])
    };
    Some(vec![
        ("FSInfo free cluster count".into(), u32_at(488).to_string()),
        ("FSInfo next free cluster".into(), u32_at(492).to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fat::{build_fat, FatOptions};
    use crate::fs_input::canonical_tar;
    use tar::EntryType;

    fn image(content: &[u8], volume_id: u32) -> (tempfile::TempDir, Blob) {
        let tar = tempfile::NamedTempFile::new().unwrap();
        let bytes = canonical_tar(&[
            (b"./", EntryType::Directory, b""),
            (b"./EFI/", EntryType::Directory, b""),
            (b"./EFI/BOOT/", EntryType::Directory, b""),
            (b"./EFI/BOOT/grub.cfg", EntryType::Regular, content),
            (b"./long file name.txt", EntryType::Regular, b"x"),
        ])
        .unwrap();
        std::fs::write(tar.path(), bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("esp.img");
        let options = FatOptions { size: 40 << 20, label: "EFI".into(), volume_id };
        build_fat(tar.path(), &output, &options).unwrap();
        let blob = Blob::open(&output, "esp.img".into()).unwrap();
        (dir, blob)
    }

    #[test]
    fn reads_files_times_and_boot_fields() {
        let (_dir, blob) = image(b"set timeout=5\n", 0x1234_5678);
        let (fields, tree) = read_volume(&blob).unwrap();
        let paths: Vec<String> = tree.keys().map(|path| quote(path)).collect();
        assert_eq!(paths, ["/", "/EFI", "/EFI/BOOT", "/EFI/BOOT/grub.cfg", "\"/long file name.txt\""]);
        let grub = &tree[&b"/EFI/BOOT/grub.cfg".to_vec()];
        assert_eq!(grub.size, Some(14));
        assert_eq!(grub.times[0].1.to_string(), "1980-01-01T00:00:00");
        let field = |name: &str| fields.iter().find(|(other, _)| other == name).map(|(_, value)| value.clone());
        assert_eq!(field("volume id").as_deref(), Some("12345678"));
        assert_eq!(field("FAT type").as_deref(), Some("Fat32"));
        assert_eq!(field("volume label").as_deref(), Some("\"EFI        \""));
    }

    #[test]
    fn differing_volumes_name_the_file_and_the_volume_id() {
        let (_one, a) = image(b"set timeout=5\n", 1);
        let (_two, b) = image(b"set timeout=6\n", 2);
        let bytes = super::super::blob::compare(&a, &b).unwrap();
        let diff = compare("esp.img", &a, &b, &bytes).unwrap();
        let text = format!("{:?}", diff.differences);
        assert_eq!(diff.differences[0].path.as_deref(), Some(&b"/EFI/BOOT/grub.cfg"[..]), "{text}");
        assert!(matches!(&diff.differences[0].what, super::super::report::What::Content { .. }), "{text}");
        assert!(text.contains("\"FAT volume id\""), "{text}");
        let Some(super::super::report::What::Bytes(ranges)) = diff.differences.last().map(|d| &d.what) else {
            panic!("{text}")
        };
        let regions: Vec<(&str, bool)> =
            ranges.ranges.iter().map(|range| (range.region.as_deref().unwrap_or(""), range.explained)).collect();
        // The volume id is in the boot sector and its backup; the file's cluster is in use.
        assert_eq!(regions.first(), Some(&("boot sector", true)), "{regions:?}");
        assert!(regions.iter().any(|(region, explained)| region.ends_with("(in use)") && *explained), "{regions:?}");
    }

    #[test]
    fn layout_names_regions_and_free_clusters() {
        let (_dir, blob) = image(b"x", 1);
        let boot = blob.head(512).unwrap();
        let layout = Layout::parse(&boot).unwrap();
        assert_eq!((layout.sector, layout.cluster_size, layout.entry_bits, layout.fats), (512, 512, 32, 2));
        let fat = layout.first_fat(&blob);
        let explanation = Explanation { files: false, boot_sector: false, fs_info: false };
        let (region, end) = layout.region(0, &fat, &fat);
        assert_eq!((region, end), (Region::BootSector, 512));
        assert_eq!(layout.region(512, &fat, &fat).0, Region::FsInfo);
        assert_eq!(layout.region(6 * 512, &fat, &fat).0, Region::BootSector);
        assert_eq!(layout.region(2 * 512, &fat, &fat).0, Region::Reserved);
        let (second_fat, _) = layout.region(layout.fat_start + layout.fat_bytes, &fat, &fat);
        assert_eq!(second_fat.describe(), "FAT 2");
        // Cluster 2 is the root directory's; the last cluster is free.
        let (root, _) = layout.region(layout.data_start, &fat, &fat);
        assert_eq!(root, Region::Clusters { first: 2, last: 2, free: Some(false) });
        let last = layout.data_start + (layout.clusters - 1) * layout.cluster_size;
        let (free, _) = layout.region(last, &fat, &fat);
        assert_eq!(free.describe(), format!("cluster {} (free)", layout.clusters + 1));
        assert!(!free.explained(&Explanation { files: true, ..explanation }));
        assert_eq!(layout.region(layout.data_start + layout.clusters * 512, &fat, &fat).0, Region::AfterEnd);
    }
}
