//! FAT32 filesystem images (the ESP and the GRUB partition) from a canonical tar, in pure Rust.
//!
//! Every byte is a function of the inputs: the geometry is chosen from the size alone, the volume
//! id is given, every timestamp is 1980-01-01 00:00:00 (the FAT epoch), and entries are created in
//! sorted order, which fixes the directory layout, the generated 8.3 names and cluster allocation.

pub mod boot_sector;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};
use fscommon::BufStream;

use self::boot_sector::BootSector;
use crate::fs_input::{scan_tar, EntryKind, EntryPath, InputEntry, InputError};
use crate::output::{write_atomically, OutputError};

const SECTOR_SIZE: u64 = 512;
/// fatfs reserves 8 sectors on FAT32 (boot sector, FSInfo, backup boot sector and spares).
const RESERVED_SECTORS: u64 = 8;
const FATS: u64 = 2;
/// Fewer clusters than this make a volume FAT16 by definition (Microsoft's FAT specification).
const FAT32_MIN_CLUSTERS: u64 = 65525;
const DIR_ENTRY_SIZE: u64 = 32;
/// UTF-16 code units of a long name held by one long-file-name directory entry.
const LFN_CHARS_PER_ENTRY: u64 = 13;
const MAX_FILE_SIZE: u64 = u32::MAX as u64;
/// 1980-01-01 encoded as a DOS date (year 0, month 1, day 1): the FAT epoch.
const FAT_EPOCH_DOS_DATE: u16 = (1 << 5) | 1;

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatOptions {
    /// Size of the image in bytes: a multiple of 512.
    pub size: u64,
    /// Volume label: up to 11 characters.
    pub label: String,
    /// Volume id (serial number), normally `FilesystemIds::from_parent(partition UUID).fat_volume_id`
    /// (`crate::seed`).
    pub volume_id: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{input}: {entry} is {kind}; a FAT filesystem holds only regular files and directories")]
    UnsupportedEntry { input: PathBuf, entry: EntryPath, kind: &'static str },
    #[error("{input}: {entry}: the name cannot be stored in FAT: {reason}")]
    BadName { input: PathBuf, entry: EntryPath, reason: String },
    #[error("{input}: {entry} and {other} differ only in letter case, which FAT does not distinguish")]
    CaseCollision { input: PathBuf, entry: EntryPath, other: EntryPath },
    #[error("{input}: {entry} has the same name as the short (8.3) name FAT gave to another entry; rename it")]
    ShortNameCollision { input: PathBuf, entry: EntryPath },
    #[error("{input}: {entry} has {size} bytes; a FAT file holds at most {MAX_FILE_SIZE} bytes")]
    FileTooLarge { input: PathBuf, entry: EntryPath, size: u64 },
    #[error("the size {size} is not a multiple of the {SECTOR_SIZE}-byte sector size")]
    UnalignedSize { size: u64 },
    #[error("a FAT32 filesystem needs at least {minimum} bytes ({} MiB rounded up); the size given is {size} bytes", minimum.div_ceil(1 << 20))]
    TooSmall { size: u64, minimum: u64 },
    #[error("the size {size} is too large: FAT32 with 512-byte sectors ends at {maximum} bytes")]
    TooLarge { size: u64, maximum: u64 },
    #[error("the volume label {label:?} cannot be used: {reason}")]
    BadLabel { label: String, reason: String },
    #[error("{input} does not fit in a FAT32 filesystem of {size} bytes: its content needs {needed} bytes ({} clusters of {cluster_size} bytes) but only {available} bytes ({} clusters) are free", needed / cluster_size, available / cluster_size)]
    NoSpace { input: PathBuf, size: u64, needed: u64, available: u64, cluster_size: u64 },
    #[error("cannot read {input}: {source}")]
    ReadInput { input: PathBuf, source: io::Error },
    #[error("cannot write the FAT filesystem {output}: {source}")]
    Write { output: PathBuf, source: io::Error },
}

/// Builds the FAT32 image `output` from the canonical tar `input`. Returns the number of bytes of
/// clusters the content uses.
pub fn build_fat(input: &Path, output: &Path, options: &FatOptions) -> Result<u64, FatError> {
    let label = encode_label(&options.label)?;
    let geometry = Geometry::for_size(options.size)?;
    let entries = scan_tar(input)?;
    let planned = plan_entries(input, &entries)?;
    let needed = needed_clusters(&planned, geometry.cluster_size) * geometry.cluster_size;
    // Formatting allocates the root directory's first cluster; the rest is free.
    let available = (geometry.clusters - 1) * geometry.cluster_size;
    if needed > available {
        return Err(FatError::NoSpace {
            input: input.to_owned(),
            size: options.size,
            needed,
            available,
            cluster_size: geometry.cluster_size,
        });
    }
    write_atomically(output, |file| {
        let write_error = |source| FatError::Write { output: output.to_owned(), source };
        // A sparse file of the final size: fatfs writes only the metadata and the clusters in use.
        file.set_len(options.size).map_err(write_error)?;
        file.seek(SeekFrom::Start(0)).map_err(write_error)?;
        let format = FormatVolumeOptions::new()
            .bytes_per_sector(SECTOR_SIZE as u16)
            .total_sectors(geometry.total_sectors)
            .bytes_per_cluster(geometry.cluster_size as u32)
            .fat_type(fatfs::FatType::Fat32)
            .fats(FATS as u8)
            .media(0xF8)
            .sectors_per_track(32)
            .heads(64)
            .drive_num(0x80)
            .volume_id(options.volume_id)
            .volume_label(label);
        let mut stream = BufStream::new(&mut *file);
        fatfs::format_volume(&mut stream, format).map_err(write_error)?;
        pin_volume_label_entry_time(&mut stream).map_err(write_error)?;
        // fatfs asserts that the volume starts at the current position.
        stream.seek(SeekFrom::Start(0)).map_err(write_error)?;
        let fs_options = FsOptions::new().update_accessed_date(false).time_provider(&FIXED_TIME);
        let filesystem = FileSystem::new(&mut stream, fs_options).map_err(write_error)?;
        copy_entries(input, &planned, &filesystem).map_err(|error| match error {
            CopyError::Read(source) => FatError::ReadInput { input: input.to_owned(), source },
            CopyError::Write(source) => write_error(source),
            CopyError::ShortNameCollision(entry) => FatError::ShortNameCollision { input: input.to_owned(), entry },
        })?;
        filesystem.unmount().map_err(write_error)?;
        fix_dot_entries(&mut stream).map_err(write_error)?;
        stream.flush().map_err(write_error)?;
        Ok(needed)
    })
}

/// The layout of a FAT32 volume of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    total_sectors: u32,
    cluster_size: u64,
    /// Data clusters, the root directory's included.
    clusters: u64,
}

impl Geometry {
    /// Picks the cluster size from the volume size like Microsoft's FAT32 table (512 bytes up to
    /// 260 MiB, then 4 KiB up to 8 GiB, 8, 16 and 32 KiB beyond), so that small volumes such as
    /// the 100 MiB ESP still have the 65525 clusters FAT32 requires.
    fn for_size(size: u64) -> Result<Geometry, FatError> {
        if size % SECTOR_SIZE != 0 {
            return Err(FatError::UnalignedSize { size });
        }
        let maximum = u64::from(u32::MAX) / 8 * 8 * SECTOR_SIZE;
        if size > maximum {
            return Err(FatError::TooLarge { size, maximum });
        }
        let cluster_size = match size {
            size if size <= 260 << 20 => 512,
            size if size <= 8 << 30 => 4 << 10,
            size if size <= 16 << 30 => 8 << 10,
            size if size <= 32 << 30 => 16 << 10,
            _ => 32 << 10,
        };
        let total_sectors = size / SECTOR_SIZE;
        let data_clusters = clusters(total_sectors, cluster_size);
        if data_clusters < FAT32_MIN_CLUSTERS {
            let minimum = (total_sectors..)
                .find(|&sectors| clusters(sectors, 512) >= FAT32_MIN_CLUSTERS)
                .map_or(0, |sectors| sectors * SECTOR_SIZE);
            return Err(FatError::TooSmall { size, minimum });
        }
        // Fits: size <= maximum < 2^32 sectors.
        Ok(Geometry { total_sectors: total_sectors as u32, cluster_size, clusters: data_clusters })
    }
}

/// The number of data clusters of a FAT32 volume, computed as fatfs lays it out: 8 reserved
/// sectors, two FATs of 4-byte entries sized for the clusters plus the two reserved entries.
fn clusters(total_sectors: u64, cluster_size: u64) -> u64 {
    let sectors_per_cluster = cluster_size / SECTOR_SIZE;
    let Some(available) = total_sectors.checked_sub(RESERVED_SECTORS) else {
        return 0;
    };
    let entries_per_sector_per_cluster = sectors_per_cluster * SECTOR_SIZE / 4;
    let sectors_per_fat = (available + 2 * sectors_per_cluster).div_ceil(entries_per_sector_per_cluster + FATS);
    available.saturating_sub(FATS * sectors_per_fat) / sectors_per_cluster
}

/// Pads the label to the 11 bytes of the boot sector and the root directory's label entry.
fn encode_label(label: &str) -> Result<[u8; 11], FatError> {
    let bad = |reason: &str| FatError::BadLabel { label: label.to_owned(), reason: reason.to_owned() };
    if label.is_empty() || label.len() > 11 {
        return Err(bad("a FAT label has 1 to 11 characters"));
    }
    if label.starts_with(' ') {
        return Err(bad("a FAT label cannot start with a space"));
    }
    for character in label.chars() {
        let allowed =
            character.is_ascii_uppercase() || character.is_ascii_digit() || " !#$%&'()-@^_`{}~".contains(character);
        if !allowed {
            return Err(bad(if character.is_ascii_lowercase() {
                "FAT labels are upper case (write it in capitals)"
            } else {
                "only A-Z, 0-9, space and !#$%&'()-@^_`{}~ are allowed"
            }));
        }
    }
    let mut encoded = [b' '; 11];
    encoded[..label.len()].copy_from_slice(label.as_bytes());
    Ok(encoded)
}

/// Returns every timestamp as 1980-01-01 00:00:00, the smallest FAT time, like SOURCE_DATE_EPOCH=0
/// does for the ext4 images: fatfs would otherwise read the local clock.
#[derive(Debug)]
struct FixedTime;

static FIXED_TIME: FixedTime = FixedTime;

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        Date { year: 1980, month: 1, day: 1 }
    }
    fn get_current_date_time(&self) -> DateTime {
        DateTime { date: self.get_current_date(), time: Time { hour: 0, min: 0, sec: 0, millis: 0 } }
    }
}

/// fatfs writes the volume label entry of the root directory with all dates 0 (not a valid
/// date); set its creation, access and modification dates to the FAT epoch like every other entry.
fn pin_volume_label_entry_time(disk: &mut (impl Read + Write + Seek)) -> io::Result<()> {
    let volume = RawVolume::read(disk)?;
    let root = volume.cluster_offset(volume.root_cluster);
    let mut entry = [0u8; DIR_ENTRY_SIZE as usize];
    disk.seek(SeekFrom::Start(root))?;
    disk.read_exact(&mut entry)?;
    if entry[11] != ATTRIBUTE_VOLUME_ID {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the freshly formatted root has no volume label entry"));
    }
    let date = FAT_EPOCH_DOS_DATE.to_le_bytes();
    for offset in [16, 18, 24] {
        entry[offset..offset + 2].copy_from_slice(&date);
    }
    disk.seek(SeekFrom::Start(root))?;
    disk.write_all(&entry)
}

const ATTRIBUTE_DIRECTORY: u8 = 0x10;
const ATTRIBUTE_LONG_NAME: u8 = 0x0F;
const ATTRIBUTE_VOLUME_ID: u8 = 0x08;
const DELETED_ENTRY: u8 = 0xE5;

/// The raw on-disk layout of the FAT32 volume, read from its boot sector.
struct RawVolume {
    cluster_size: u64,
    fat_offset: u64,
    data_offset: u64,
    total_clusters: u64,
    root_cluster: u32,
}

impl RawVolume {
    fn read(disk: &mut (impl Read + Seek)) -> io::Result<RawVolume> {
        let mut boot = [0u8; 512];
        disk.seek(SeekFrom::Start(0))?;
        disk.read_exact(&mut boot)?;
        let sector = BootSector::parse(&boot).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "the boot sector names no sector or cluster size")
        })?;
        Ok(RawVolume {
            cluster_size: sector.cluster_size(),
            fat_offset: sector.fat_start(),
            data_offset: sector.data_start(),
            total_clusters: sector.clusters(),
            root_cluster: sector.root_cluster,
        })
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * self.cluster_size
    }

    /// The clusters of the chain starting at `first`, in order.
    fn chain(&self, disk: &mut (impl Read + Seek), first: u32) -> io::Result<Vec<u32>> {
        let mut clusters = Vec::new();
        let mut cluster = first;
        while (2..0x0FFF_FFF8).contains(&cluster) {
            if clusters.len() as u64 > self.total_clusters {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a cluster chain loops"));
            }
            clusters.push(cluster);
            let mut entry = [0u8; 4];
            disk.seek(SeekFrom::Start(self.fat_offset + u64::from(cluster) * 4))?;
            disk.read_exact(&mut entry)?;
            cluster = u32::from_le_bytes(entry) & 0x0FFF_FFFF;
        }
        Ok(clusters)
    }
}

/// fatfs 0.3 gives the `.` and `..` entries of a new directory long-name entries of their own,
/// so they land in slots 1 and 3, and points `..` of the root's children at cluster 2. The
/// FAT specification (and fsck.fat) wants `.` in slot 0, `..` in slot 1 and `..` pointing at
/// cluster 0 for the root: rewrite every directory's first four slots as `.`, `..` and two
/// deleted entries.
fn fix_dot_entries(disk: &mut (impl Read + Write + Seek)) -> io::Result<()> {
    let volume = RawVolume::read(disk)?;
    let unexpected =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected fatfs layout: {what}"));
    // (first cluster of a directory, whether its parent is the root)
    let mut pending = vec![(volume.root_cluster, None)];
    while let Some((first, parent_is_root)) = pending.pop() {
        let mut content = Vec::new();
        for cluster in volume.chain(disk, first)? {
            let mut data = vec![0u8; volume.cluster_size as usize];
            disk.seek(SeekFrom::Start(volume.cluster_offset(cluster)))?;
            disk.read_exact(&mut data)?;
            content.extend_from_slice(&data);
        }
        for entry in content.chunks_exact(DIR_ENTRY_SIZE as usize) {
            let attributes = entry[11];
            if entry[0] == 0 {
                break;
            }
            let is_subdirectory = entry[0] != DELETED_ENTRY
                && attributes != ATTRIBUTE_LONG_NAME
                && attributes & ATTRIBUTE_VOLUME_ID == 0
                && attributes & ATTRIBUTE_DIRECTORY != 0
                && entry[0] != b'.';
            if is_subdirectory {
                let cluster = u32::from(u16::from_le_bytes([entry[20], entry[21]])) << 16
                    | u32::from(u16::from_le_bytes([entry[26], entry[27]]));
                pending.push((cluster, Some(first == volume.root_cluster)));
            }
        }
        let Some(parent_is_root) = parent_is_root else {
            continue;
        };
        let slot = |index: usize| &content[index * 32..(index + 1) * 32];
        if content.len() < 4 * 32
            || slot(0)[11] != ATTRIBUTE_LONG_NAME
            || &slot(1)[..11] != b".          "
            || slot(2)[11] != ATTRIBUTE_LONG_NAME
            || &slot(3)[..11] != b"..         "
        {
            return Err(unexpected("a new directory does not start with long-name, `.`, long-name, `..`"));
        }
        let mut fixed = [0u8; 4 * 32];
        fixed[..32].copy_from_slice(slot(1));
        fixed[32..64].copy_from_slice(slot(3));
        if parent_is_root {
            for offset in [32 + 20, 32 + 21, 32 + 26, 32 + 27] {
                fixed[offset] = 0;
            }
        }
        fixed[64] = DELETED_ENTRY;
        fixed[96] = DELETED_ENTRY;
        disk.seek(SeekFrom::Start(volume.cluster_offset(first)))?;
        disk.write_all(&fixed)?;
    }
    Ok(())
}

/// An input entry that FAT can hold, with its name.
struct Planned<'a> {
    path: &'a EntryPath,
    name: &'a str,
    kind: FatKind,
}

enum FatKind {
    Directory,
    /// `size` bytes at `data_offset` in the tar.
    File {
        size: u64,
        data_offset: u64,
    },
}

/// Checks what FAT cannot hold before anything is written; returns the entries sorted by path, the
/// order in which they are created.
fn plan_entries<'a>(input: &Path, entries: &'a [InputEntry]) -> Result<Vec<Planned<'a>>, FatError> {
    let mut planned = Vec::with_capacity(entries.len());
    let mut upper_names: HashMap<(Option<EntryPath>, String), &EntryPath> = HashMap::new();
    for entry in entries {
        let kind = match entry.kind {
            EntryKind::Directory => FatKind::Directory,
            EntryKind::File { size, data_offset } => {
                if size > MAX_FILE_SIZE {
                    return Err(FatError::FileTooLarge { input: input.to_owned(), entry: entry.path.clone(), size });
                }
                FatKind::File { size, data_offset }
            }
            _ => {
                return Err(FatError::UnsupportedEntry {
                    input: input.to_owned(),
                    entry: entry.path.clone(),
                    kind: entry.kind.description(),
                })
            }
        };
        let name = long_name(&entry.path).map_err(|reason| FatError::BadName {
            input: input.to_owned(),
            entry: entry.path.clone(),
            reason,
        })?;
        let key = (entry.path.parent(), name.to_uppercase());
        if let Some(other) = upper_names.insert(key, &entry.path) {
            return Err(FatError::CaseCollision {
                input: input.to_owned(),
                entry: entry.path.clone(),
                other: other.clone(),
            });
        }
        planned.push(Planned { path: &entry.path, name, kind });
    }
    planned.sort_by(|a, b| a.path.cmp(b.path));
    Ok(planned)
}

/// The entry's name as a VFAT long name, or why it cannot be one. The allowed characters are
/// those of the VFAT specification that fatfs accepts (it refuses characters beyond U+FFFF).
fn long_name(path: &EntryPath) -> Result<&str, String> {
    let name = std::str::from_utf8(path.name().unwrap_or_default())
        .map_err(|_| "it is not valid UTF-8 (FAT stores names as UTF-16)".to_owned())?;
    if name.encode_utf16().count() > 255 {
        return Err("it is longer than the 255 UTF-16 characters of a FAT long name".to_owned());
    }
    for character in name.chars() {
        let allowed = match character {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '\u{80}'..='\u{FFFF}' => true,
            _ => "$%'-_@~`!(){}.^#& +,;=[]".contains(character),
        };
        if !allowed {
            let shown = character.escape_debug();
            return Err(if character.is_control() || (character as u32) < 0x20 {
                format!("it contains the control character '{shown}'")
            } else if u32::from(character) > 0xFFFF {
                format!("it contains '{shown}', outside the Basic Multilingual Plane")
            } else {
                format!("it contains '{shown}' (FAT forbids \" * / : < > ? \\ | and control characters)")
            });
        }
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("it ends with a dot or a space, which FAT implementations strip".to_owned());
    }
    Ok(name)
}

/// Clusters the content takes: file data, plus the directory entries of every directory (a
/// short entry and the long-name entries fatfs always writes, `.` and `..` included). The root
/// directory's first cluster, holding the volume label, is allocated by formatting already.
fn needed_clusters(entries: &[Planned<'_>], cluster_size: u64) -> u64 {
    let slots = |name: &str| 1 + (name.encode_utf16().count() as u64).div_ceil(LFN_CHARS_PER_ENTRY);
    // Directory entry bytes per directory; the root starts with its volume label entry.
    let mut directory_bytes: BTreeMap<EntryPath, u64> = BTreeMap::new();
    directory_bytes.insert(EntryPath(Vec::new()), DIR_ENTRY_SIZE);
    let mut file_clusters = 0;
    for entry in entries {
        match entry.kind {
            FatKind::Directory => {
                directory_bytes.insert(entry.path.clone(), (slots(".") + slots("..")) * DIR_ENTRY_SIZE);
            }
            FatKind::File { size, .. } => file_clusters += size.div_ceil(cluster_size),
        }
        let parent = entry.path.parent().unwrap_or_else(|| EntryPath(Vec::new()));
        *directory_bytes.entry(parent).or_default() += slots(entry.name) * DIR_ENTRY_SIZE;
    }
    let directory_clusters: u64 = directory_bytes.values().map(|bytes| bytes.div_ceil(cluster_size).max(1)).sum();
    // The root's first cluster exists already.
    file_clusters + directory_clusters - 1
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    ShortNameCollision(EntryPath),
}

/// Creates the entries in the planned (sorted) order, reading file contents from the tar by offset.
fn copy_entries<T: fatfs::ReadWriteSeek>(
    input: &Path,
    entries: &[Planned<'_>],
    filesystem: &FileSystem<T>,
) -> Result<(), CopyError> {
    let mut tar = BufReader::with_capacity(1 << 20, File::open(input).map_err(CopyError::Read)?);
    let mut directories = HashMap::new();
    directories.insert(EntryPath(Vec::new()), filesystem.root_dir());
    for entry in entries {
        let parent_path = entry.path.parent().unwrap_or_else(|| EntryPath(Vec::new()));
        // Sorted order creates every parent (checked by scan_tar) before its content.
        let parent = directories
            .get(&parent_path)
            .ok_or_else(|| CopyError::Write(io::Error::other(format!("{parent_path} was not created first"))))?
            .clone();
        // fatfs opens an existing entry instead of creating one when the name matches another
        // entry's generated 8.3 name (like `PROGRA~1`): that would merge two files.
        if entry.name.contains('~')
            && parent.iter().any(|existing| {
                existing.is_ok_and(|existing| existing.short_file_name().eq_ignore_ascii_case(entry.name))
            })
        {
            return Err(CopyError::ShortNameCollision(entry.path.clone()));
        }
        match entry.kind {
            FatKind::File { size, data_offset } => {
                let mut file = parent.create_file(entry.name).map_err(CopyError::Write)?;
                tar.seek(SeekFrom::Start(data_offset)).map_err(CopyError::Read)?;
                let mut data = (&mut tar).take(size);
                copy_stream(&mut data, &mut file)?;
                if data.limit() != 0 {
                    let error = io::Error::new(io::ErrorKind::UnexpectedEof, "the tar changed while it was read");
                    return Err(CopyError::Read(error));
                }
                file.flush().map_err(CopyError::Write)?;
            }
            FatKind::Directory => {
                let directory = parent.create_dir(entry.name).map_err(CopyError::Write)?;
                directories.insert(entry.path.clone(), directory);
            }
        }
    }
    Ok(())
}

/// `io::copy`, telling read errors (the tar) from write errors (the image) apart.
fn copy_stream(reader: &mut impl Read, writer: &mut impl Write) -> Result<(), CopyError> {
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let count = match reader.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(CopyError::Read(error)),
        };
        writer.write_all(&buffer[..count]).map_err(CopyError::Write)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs_input::{canonical_tar, TarEntry};
    use tar::EntryType;

    const SIZE: u64 = 40 << 20;

    fn options() -> FatOptions {
        FatOptions { size: SIZE, label: "ESP".to_owned(), volume_id: 0x1234_abcd }
    }

    fn esp_tar() -> Vec<u8> {
        canonical_tar(&[
            (b"./", EntryType::Directory, b""),
            (b"./EFI/", EntryType::Directory, b""),
            (b"./EFI/BOOT/", EntryType::Directory, b""),
            (b"./EFI/BOOT/BOOTX64.EFI", EntryType::Regular, &[0x4d; 70_000]),
            (b"./grub/", EntryType::Directory, b""),
            (b"./grub/grub.cfg", EntryType::Regular, b"set timeout=0\n"),
            (b"./grub/grubenv", EntryType::Regular, &[b'#'; 1024]),
            (b"./grub/a long name with spaces, \xc3\xa9t\xc3\xa9.txt", EntryType::Regular, b"long"),
            (b"./grub/empty", EntryType::Regular, b""),
        ])
        .unwrap()
    }

    fn build(tar: &[u8], options: &FatOptions) -> (tempfile::TempDir, Result<PathBuf, FatError>) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.tar");
        std::fs::write(&input, tar).unwrap();
        let output = dir.path().join("out.img");
        let result = build_fat(&input, &output, options).map(|_| output);
        (dir, result)
    }

    fn read(filesystem: &FileSystem<File>, path: &str) -> Vec<u8> {
        let mut data = Vec::new();
        filesystem.root_dir().open_file(path).unwrap().read_to_end(&mut data).unwrap();
        data
    }

    #[test]
    fn content_label_volume_id_and_times_read_back() {
        let (_dir, output) = build(&esp_tar(), &options());
        let output = output.unwrap();
        assert_eq!(std::fs::metadata(&output).unwrap().len(), SIZE);
        let filesystem = FileSystem::new(File::open(&output).unwrap(), FsOptions::new()).unwrap();
        assert_eq!(filesystem.fat_type(), fatfs::FatType::Fat32);
        assert_eq!(filesystem.volume_id(), 0x1234_abcd);
        assert_eq!(filesystem.volume_label(), "ESP");
        assert_eq!(filesystem.read_volume_label_from_root_dir().unwrap().as_deref(), Some("ESP"));
        assert_eq!(read(&filesystem, "EFI/BOOT/BOOTX64.EFI"), vec![0x4d; 70_000]);
        assert_eq!(read(&filesystem, "grub/grub.cfg"), b"set timeout=0\n");
        assert_eq!(read(&filesystem, "grub/a long name with spaces, été.txt"), b"long");
        assert_eq!(read(&filesystem, "grub/empty"), b"");
        let names: Vec<String> =
            filesystem.root_dir().open_dir("grub").unwrap().iter().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(names, [".", "..", "a long name with spaces, été.txt", "empty", "grub.cfg", "grubenv"]);
        let epoch = FIXED_TIME.get_current_date_time();
        for dir in ["/", "EFI", "EFI/BOOT", "grub"] {
            let dir = if dir == "/" { filesystem.root_dir() } else { filesystem.root_dir().open_dir(dir).unwrap() };
            for entry in dir.iter() {
                let entry = entry.unwrap();
                assert_eq!(entry.created(), epoch, "{}", entry.file_name());
                assert_eq!(entry.modified(), epoch, "{}", entry.file_name());
                assert_eq!(entry.accessed(), epoch.date, "{}", entry.file_name());
            }
        }
        assert!(!filesystem.read_status_flags().unwrap().dirty());
    }

    #[test]
    fn needed_space_is_exactly_what_fatfs_allocates() {
        let names: Vec<Vec<u8>> =
            (0..40).map(|i| format!("d/a rather long file name number {i:03}.conf").into_bytes()).collect();
        let mut entries: Vec<TarEntry> = vec![(b"d/", EntryType::Directory, b"")];
        entries.extend(names.iter().map(|name| (name.as_slice(), EntryType::Regular, &b"x"[..])));
        let tar = canonical_tar(&entries).unwrap();
        for (dir, result) in [build(&esp_tar(), &options()), build(&tar, &options())] {
            let output = result.unwrap();
            let needed = build_fat(&dir.path().join("in.tar"), &output, &options()).unwrap();
            let filesystem = FileSystem::new(File::open(&output).unwrap(), FsOptions::new()).unwrap();
            let stats = filesystem.stats().unwrap();
            assert_eq!(Geometry::for_size(SIZE).unwrap().clusters, u64::from(stats.total_clusters()));
            assert_eq!(needed / 512, u64::from(stats.total_clusters() - 1 - stats.free_clusters()));
        }
    }

    #[test]
    fn label_entry_has_the_fat_epoch_date() {
        let (_dir, output) = build(&esp_tar(), &options());
        let image = std::fs::read(output.unwrap()).unwrap();
        let sectors_per_fat = u32::from_le_bytes(image[36..40].try_into().unwrap()) as usize;
        let root = (8 + 2 * sectors_per_fat) * 512;
        assert_eq!(&image[root..root + 11], b"ESP        ");
        assert_eq!(image[root + 11], 0x08);
        for offset in [16, 18, 24] {
            assert_eq!(&image[root + offset..root + offset + 2], &FAT_EPOCH_DOS_DATE.to_le_bytes());
        }
    }

    #[test]
    fn dot_entries_come_first_and_dotdot_of_root_children_is_cluster_0() {
        let (_dir, output) = build(&esp_tar(), &options());
        let mut image = File::open(output.unwrap()).unwrap();
        let volume = RawVolume::read(&mut image).unwrap();
        let filesystem = FileSystem::new(File::open(_dir.path().join("out.img")).unwrap(), FsOptions::new()).unwrap();
        let names: Vec<String> =
            filesystem.root_dir().open_dir("EFI").unwrap().iter().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [".", "..", "BOOT"]);
        drop(filesystem);
        let mut root = vec![0u8; volume.cluster_size as usize];
        image.seek(SeekFrom::Start(volume.cluster_offset(volume.root_cluster))).unwrap();
        image.read_exact(&mut root).unwrap();
        // Root: label, then the long-name and short entries of EFI.
        let efi = root.chunks_exact(32).find(|entry| &entry[..11] == b"EFI        ").unwrap();
        let efi_cluster =
            u32::from(u16::from_le_bytes([efi[26], efi[27]])) | u32::from(u16::from_le_bytes([efi[20], efi[21]])) << 16;
        let mut dir = vec![0u8; 128];
        image.seek(SeekFrom::Start(volume.cluster_offset(efi_cluster))).unwrap();
        image.read_exact(&mut dir).unwrap();
        assert_eq!(&dir[..11], b".          ");
        assert_eq!(u16::from_le_bytes([dir[26], dir[27]]), efi_cluster as u16);
        assert_eq!(&dir[32..43], b"..         ");
        assert_eq!(&dir[32 + 20..32 + 22], &[0, 0]);
        assert_eq!(&dir[32 + 26..32 + 28], &[0, 0]);
        assert_eq!((dir[64], dir[96]), (DELETED_ENTRY, DELETED_ENTRY));
    }

    #[test]
    fn same_input_same_bytes() {
        let (_dir1, first) = build(&esp_tar(), &options());
        let (_dir2, second) = build(&esp_tar(), &options());
        assert!(std::fs::read(first.unwrap()).unwrap() == std::fs::read(second.unwrap()).unwrap());
    }

    #[test]
    fn geometry_minimum_matches_fatfs() {
        let error = Geometry::for_size(32 << 20).unwrap_err();
        let FatError::TooSmall { minimum, .. } = error else { panic!("{error}") };
        assert!(error.to_string().contains("needs at least"), "{error}");
        let geometry = Geometry::for_size(minimum).unwrap();
        let mut disk = io::Cursor::new(vec![0u8; minimum as usize]);
        let format = |geometry: Geometry| {
            FormatVolumeOptions::new()
                .total_sectors(geometry.total_sectors)
                .bytes_per_cluster(geometry.cluster_size as u32)
        };
        fatfs::format_volume(&mut disk, format(geometry)).unwrap();
        disk.set_position(0);
        let filesystem = FileSystem::new(&mut disk, FsOptions::new()).unwrap();
        assert_eq!(filesystem.fat_type(), fatfs::FatType::Fat32);
        drop(filesystem);
        // One sector less would make fatfs fall back to FAT16.
        let smaller = Geometry { total_sectors: geometry.total_sectors - 1, ..geometry };
        let mut disk = io::Cursor::new(vec![0u8; minimum as usize - 512]);
        assert!(fatfs::format_volume(&mut disk, format(smaller)).is_err());
        assert!(matches!(Geometry::for_size(minimum - 512), Err(FatError::TooSmall { .. })));
    }

    #[test]
    fn cluster_counts_match_fatfs_for_each_cluster_size() {
        for size in [100u64 << 20, 300 << 20, (9 << 30) + 512] {
            let geometry = Geometry::for_size(size).unwrap();
            let mut disk = tempfile::tempfile().unwrap();
            disk.set_len(size).unwrap();
            let format = FormatVolumeOptions::new()
                .total_sectors(geometry.total_sectors)
                .bytes_per_cluster(geometry.cluster_size as u32);
            fatfs::format_volume(&mut disk, format).unwrap();
            disk.seek(SeekFrom::Start(0)).unwrap();
            let filesystem = FileSystem::new(&mut disk, FsOptions::new()).unwrap();
            assert_eq!(filesystem.fat_type(), fatfs::FatType::Fat32);
            let stats = filesystem.stats().unwrap();
            assert_eq!(u64::from(stats.total_clusters()), geometry.clusters, "{size}");
        }
    }

    #[test]
    fn cluster_sizes_follow_the_size() {
        assert_eq!(Geometry::for_size(100 << 20).unwrap().cluster_size, 512);
        assert_eq!(Geometry::for_size(261 << 20).unwrap().cluster_size, 4096);
        assert_eq!(Geometry::for_size(9 << 30).unwrap().cluster_size, 8192);
        assert_eq!(Geometry::for_size(64 << 30).unwrap().cluster_size, 32768);
        assert!(matches!(Geometry::for_size((100 << 20) + 1), Err(FatError::UnalignedSize { .. })));
        assert!(matches!(Geometry::for_size(3 << 40), Err(FatError::TooLarge { .. })));
    }

    fn assert_error(tar: &[u8], options: &FatOptions, expected: &[&str]) {
        let (dir, result) = build(tar, options);
        let error = result.unwrap_err().to_string();
        for text in expected {
            assert!(error.contains(text), "{error:?} lacks {text:?}");
        }
        let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["in.tar"], "{error}");
    }

    #[test]
    fn entries_fat_cannot_hold_are_named() {
        let dir: TarEntry = (b"d/", EntryType::Directory, b"");
        let cases: [(&[TarEntry], &[&str]); 8] = [
            (
                &[dir, (b"d/l", EntryType::Symlink, b"x")],
                &["/d/l is a symbolic link", "only regular files and directories"],
            ),
            (&[dir, (b"d/f", EntryType::Regular, b""), (b"d/h", EntryType::Link, b"d/f")], &["/d/h is a hard link"]),
            (&[(b"null", EntryType::Char, b"")], &["/null is a character device"]),
            (&[(b"a:b", EntryType::Regular, b"")], &["/a:b: the name cannot be stored in FAT", "':'"]),
            (&[(b"a\nb", EntryType::Regular, b"")], &["/a\\nb", "control character"]),
            (&[(b"\xff", EntryType::Regular, b"")], &["/\\xff", "not valid UTF-8"]),
            (
                &[(b"Grub.cfg", EntryType::Regular, b""), (b"grub.CFG", EntryType::Regular, b"")],
                &["/grub.CFG and /Grub.cfg differ only in letter case"],
            ),
            (
                &[(b"a b.txt", EntryType::Regular, b"1"), (b"ab~1.txt", EntryType::Regular, b"2")],
                &["/ab~1.txt has the same name as the short (8.3) name"],
            ),
        ];
        for (entries, expected) in cases {
            assert_error(&canonical_tar(entries).unwrap(), &options(), expected);
        }
    }

    #[test]
    fn content_too_large_says_needed_and_available() {
        let big = vec![1u8; 39 << 20];
        let tar = canonical_tar(&[(b"big", EntryType::Regular, &big), (b"more", EntryType::Regular, &big[..2 << 20])])
            .unwrap();
        assert_error(
            &tar,
            &options(),
            &[
                "does not fit in a FAT32 filesystem of 41943040 bytes",
                "needs 42991616 bytes (83968 clusters of 512 bytes)",
                "bytes (",
                "are free",
            ],
        );
    }

    #[test]
    fn bad_sizes_and_labels_leave_nothing() {
        let tar = esp_tar();
        assert_error(&tar, &FatOptions { size: 16 << 20, ..options() }, &["needs at least", "33 MiB"]);
        assert_error(
            &tar,
            &FatOptions { size: (40 << 20) + 100, ..options() },
            &["not a multiple of the 512-byte sector"],
        );
        assert_error(&tar, &FatOptions { label: "esp".to_owned(), ..options() }, &["\"esp\"", "upper case"]);
        assert_error(&tar, &FatOptions { label: "TWELVE CHARS".to_owned(), ..options() }, &["1 to 11 characters"]);
        assert_error(&tar, &FatOptions { label: "A/B".to_owned(), ..options() }, &["only A-Z"]);
    }
}
