//! GPT disk images: the primary and backup headers, every partition entry, each partition's
//! content as a nested artifact, and the bytes that lie in no partition (the protective MBR,
//! gaps).
//!
//! The headers and entries are read here from their on-disk layout (UEFI 2.10, 5.3), not with the
//! `gpt` crate, so that a disk whose CRCs are wrong is still compared (and the bad CRC reported)
//! rather than refused.

use uuid::Uuid;

use super::blob::{Blob, ByteComparison};
use super::error::DiffError;
use super::escape::{escape, quote};
use super::report::{ArtifactDiff, Difference, Side, What};
use super::tree::compare_fields;
use super::{bytes_difference, compare_blobs, Context};

/// More entry bytes than this are not read: the usual array is 16 KiB.
const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// A GPT header, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub revision: u32,
    pub header_size: u32,
    pub header_crc: u32,
    pub header_crc_valid: bool,
    pub current_lba: u64,
    pub backup_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Uuid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// Decodes the header in `sector` (at least 92 bytes); `None` without the signature.
    pub fn parse(sector: &[u8]) -> Option<Header> {
        if sector.len() < 92 || &sector[..8] != b"EFI PART" {
            return None;
        }
        let u32_at = |offset: usize| {
            u32::from_le_bytes([sector[offset], sector[offset + 1], sector[offset + 2], sector[offset + 3]])
        };
        let u64_at = |offset: usize| u64::from(u32_at(offset)) | u64::from(u32_at(offset + 4)) << 32;
        let header_size = u32_at(12);
        let header_crc = u32_at(16);
        // The CRC covers header_size bytes with its own field zeroed.
        let covered = usize::try_from(header_size).unwrap_or(usize::MAX).clamp(92, sector.len());
        let mut copy = sector[..covered].to_vec();
        copy[16..20].fill(0);
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&sector[56..72]);
        Some(Header {
            revision: u32_at(8),
            header_size,
            header_crc,
            header_crc_valid: crc32(&copy) == header_crc,
            current_lba: u64_at(24),
            backup_lba: u64_at(32),
            first_usable_lba: u64_at(40),
            last_usable_lba: u64_at(48),
            disk_guid: Uuid::from_bytes_le(guid),
            entries_lba: u64_at(72),
            entry_count: u32_at(80),
            entry_size: u32_at(84),
            entries_crc: u32_at(88),
        })
    }

    /// The bytes of the partition entry array it describes, capped at [`MAX_ENTRY_BYTES`].
    fn entry_bytes(&self) -> u64 {
        (u64::from(self.entry_count) * u64::from(self.entry_size)).min(MAX_ENTRY_BYTES)
    }

    /// Named fields for comparison; the CRCs say whether they are valid.
    pub fn fields(&self, entries_crc_valid: bool) -> Vec<(String, String)> {
        let crc = |value: u32, valid: bool| format!("{value:#010x}{}", if valid { "" } else { " (invalid)" });
        vec![
            ("revision".into(), format!("{}.{}", self.revision >> 16, self.revision & 0xffff)),
            ("header size".into(), self.header_size.to_string()),
            ("current LBA".into(), self.current_lba.to_string()),
            ("backup LBA".into(), self.backup_lba.to_string()),
            ("first usable LBA".into(), self.first_usable_lba.to_string()),
            ("last usable LBA".into(), self.last_usable_lba.to_string()),
            ("disk GUID".into(), guid_text(&self.disk_guid)),
            ("partition entries LBA".into(), self.entries_lba.to_string()),
            ("number of partition entries".into(), self.entry_count.to_string()),
            ("partition entry size".into(), self.entry_size.to_string()),
            ("header CRC32".into(), crc(self.header_crc, self.header_crc_valid)),
            ("partition entries CRC32".into(), crc(self.entries_crc, entries_crc_valid)),
        ]
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based, as Linux numbers partitions.
    pub number: u32,
    pub type_guid: Uuid,
    pub unique_guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    /// UTF-16LE, up to 36 code units, cut at the first NUL.
    pub name: String,
}

impl Entry {
    pub fn label(&self) -> String {
        format!("partition {} \"{}\"", self.number, escape(self.name.as_bytes()).replace('"', "\\\""))
    }

    pub fn fields(&self) -> Vec<(String, String)> {
        vec![
            ("name".into(), quote(self.name.as_bytes())),
            ("type GUID".into(), type_text(&self.type_guid)),
            ("unique GUID".into(), guid_text(&self.unique_guid)),
            ("first LBA".into(), self.first_lba.to_string()),
            ("last LBA".into(), self.last_lba.to_string()),
            ("attributes".into(), format!("{:#018x}", self.attributes)),
        ]
    }

    fn sectors(&self) -> u64 {
        (self.last_lba + 1).saturating_sub(self.first_lba)
    }
}

/// Decodes the used entries (type GUID not zero) of an entry array.
pub fn parse_entries(bytes: &[u8], entry_size: usize) -> Vec<Entry> {
    if entry_size < 128 {
        return Vec::new();
    }
    let mut entries = Vec::new();
    for (index, raw) in bytes.chunks_exact(entry_size).enumerate() {
        if raw[..16].iter().all(|&byte| byte == 0) {
            continue;
        }
        let guid = |offset: usize| {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&raw[offset..offset + 16]);
            Uuid::from_bytes_le(bytes)
        };
        let u64_at = |offset: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&raw[offset..offset + 8]);
            u64::from_le_bytes(bytes)
        };
        let units: Vec<u16> = raw[56..128]
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .take_while(|&unit| unit != 0)
            .collect();
        entries.push(Entry {
            number: index as u32 + 1,
            type_guid: guid(0),
            unique_guid: guid(16),
            first_lba: u64_at(32),
            last_lba: u64_at(40),
            attributes: u64_at(48),
            name: String::from_utf16_lossy(&units),
        });
    }
    entries
}

/// Both headers, the entries, and whether each entry array matches its header's CRC.
#[derive(Debug)]
struct Disk {
    sector: u64,
    primary: Header,
    primary_entries_valid: bool,
    entries: Vec<Entry>,
    backup: Option<(Header, bool, Vec<u8>)>,
}

fn read_disk(blob: &Blob, sector: u64) -> Result<Disk, DiffError> {
    let read = |offset: u64, length: u64| -> Result<Vec<u8>, DiffError> {
        let mut bytes = vec![0u8; usize::try_from(length).unwrap_or(0)];
        let count = blob.read_at(&mut bytes, offset).map_err(|error| DiffError::read(&blob.origin, error))?;
        bytes.truncate(count);
        Ok(bytes)
    };
    let primary = Header::parse(&read(sector, sector)?)
        .ok_or_else(|| DiffError::corrupt(&blob.origin, "GPT disk", "no primary GPT header"))?;
    let entry_bytes = read(primary.entries_lba.saturating_mul(sector), primary.entry_bytes())?;
    let primary_entries_valid = crc32(&entry_bytes) == primary.entries_crc;
    let entries = parse_entries(&entry_bytes, primary.entry_size as usize);
    // The backup is where the primary says; a disk whose backup is missing still compares.
    let backup = Header::parse(&read(primary.backup_lba.saturating_mul(sector), sector)?).map(|backup| {
        let bytes = read(backup.entries_lba.saturating_mul(sector), backup.entry_bytes()).unwrap_or_default();
        let valid = crc32(&bytes) == backup.entries_crc;
        (backup, valid, bytes)
    });
    Ok(Disk { sector, primary, primary_entries_valid, entries, backup })
}

/// Pairs the entries of two tables: by name when every name is unique and not empty on both
/// sides, by entry number otherwise.
pub fn pair_entries<'a>(
    a: &'a [Entry],
    b: &'a [Entry],
) -> (Vec<(&'a Entry, &'a Entry)>, Vec<&'a Entry>, Vec<&'a Entry>) {
    let unique = |entries: &[Entry]| {
        let names: std::collections::BTreeSet<&str> = entries.iter().map(|entry| entry.name.as_str()).collect();
        names.len() == entries.len() && !names.contains("")
    };
    let by_name = unique(a) && unique(b);
    let same = |x: &Entry, y: &Entry| if by_name { x.name == y.name } else { x.number == y.number };
    let mut pairs = Vec::new();
    let mut only_a = Vec::new();
    for entry_a in a {
        match b.iter().find(|entry_b| same(entry_a, entry_b)) {
            Some(entry_b) => pairs.push((entry_a, entry_b)),
            None => only_a.push(entry_a),
        }
    }
    let only_b = b.iter().filter(|entry_b| !a.iter().any(|entry_a| same(entry_a, entry_b))).collect();
    (pairs, only_a, only_b)
}

/// Compares two GPT disks with `sector`-byte sectors.
pub fn compare(
    context: &Context,
    name: &str,
    a: &Blob,
    b: &Blob,
    sector: u64,
    bytes: &ByteComparison,
) -> Result<ArtifactDiff, DiffError> {
    let disk_a = read_disk(a, sector)?;
    let disk_b = read_disk(b, sector)?;
    let label = super::detect::Kind::Gpt { sector }.label();
    let mut diff = ArtifactDiff::new(name, label, label);
    let (pairs, only_a, only_b) = pair_entries(&disk_a.entries, &disk_b.entries);
    let mut differing_partitions = Vec::new();
    let mut entries_differ = !only_a.is_empty() || !only_b.is_empty();
    for (entry_a, entry_b) in pairs {
        let label = entry_a.label();
        let fields = compare_fields("GPT entry ", &entry_a.fields(), &entry_b.fields(), &[]);
        entries_differ |= !fields.is_empty();
        let window = |blob: &Blob, entry: &Entry| {
            blob.window(
                entry.first_lba.saturating_mul(sector),
                entry.sectors().saturating_mul(sector),
                format!("{}: {label}", blob.origin),
            )
        };
        let (part_a, part_b) = (window(a, entry_a), window(b, entry_b));
        let child = compare_blobs(context, &label, &part_a, &part_b)?;
        if child.is_none() && fields.is_empty() {
            continue;
        }
        if child.is_some() {
            differing_partitions.push(entry_a.number);
        }
        let mut child = match child {
            Some(child) => child,
            None => context.identical_artifact(&label, &part_a, &part_b)?,
        };
        child.differences.splice(0..0, fields);
        diff.children.push(child);
    }
    for (side, entries) in [(Side::A, only_a), (Side::B, only_b)] {
        for entry in entries {
            diff.differences.push(Difference::here(What::OnlyIn {
                side,
                item: Some(entry.label()),
                description: format!(
                    "sectors {}..={}, type {}",
                    entry.first_lba,
                    entry.last_lba,
                    type_text(&entry.type_guid)
                ),
            }));
        }
    }
    let primary_a = disk_a.primary.fields(disk_a.primary_entries_valid);
    let primary_b = disk_b.primary.fields(disk_b.primary_entries_valid);
    let mut headers = compare_fields("GPT header ", &primary_a, &primary_b, &["CRC32"]);
    match (&disk_a.backup, &disk_b.backup) {
        (Some((backup_a, valid_a, raw_a)), Some((backup_b, valid_b, raw_b))) => {
            let backup = compare_fields(
                "backup GPT header ",
                &backup_a.fields(*valid_a),
                &backup_b.fields(*valid_b),
                &["CRC32"],
            );
            // A field that differs in the primary differs in the backup too: say it once.
            let said: Vec<String> = headers
                .iter()
                .filter_map(|difference| match &difference.what {
                    What::Field { name, .. } => Some(name.trim_start_matches("GPT header ").to_owned()),
                    _ => None,
                })
                .collect();
            let already_said = |name: &str| said.iter().any(|field| name.ends_with(field.as_str()));
            headers.extend(backup.into_iter().filter(|difference| !difference.field_name().is_some_and(already_said)));
            if raw_a != raw_b && !entries_differ {
                headers.push(Difference::field(
                    "backup partition entries (the primary entries are the same)",
                    Some(format!("{} bytes, crc32 {:#010x}", raw_a.len(), crc32(raw_a))),
                    Some(format!("{} bytes, crc32 {:#010x}", raw_b.len(), crc32(raw_b))),
                ));
            }
        }
        (backup_a, backup_b) if backup_a.is_some() != backup_b.is_some() => {
            let present = |backup: &Option<(Header, bool, Vec<u8>)>| {
                Some(if backup.is_some() { "present" } else { "missing" }.to_owned())
            };
            headers.push(Difference::field("backup GPT header", present(backup_a), present(backup_b)));
        }
        _ => {}
    }
    let structure_differs = entries_differ
        || headers.iter().any(|difference| !difference.field_name().is_some_and(|name| name.contains("CRC32")));
    if structure_differs {
        // The CRCs changed because what they cover did.
        headers.retain(|difference| !difference.field_name().is_some_and(|name| name.contains("CRC32")));
    }
    let header_differs = structure_differs || !headers.is_empty();
    diff.differences.extend(headers);
    let regions = regions(&disk_a, &differing_partitions, header_differs);
    diff.differences.push(bytes_difference(bytes, a, b, |start, end| split_by_regions(start, end, &regions))?);
    Ok(diff)
}

/// A part of the disk: where it is, what it is called, and whether a difference reported above
/// accounts for bytes differing in it.
type Region = (u64, u64, String, bool);

/// The regions of disk `disk`, sorted: MBR, headers, entry arrays, partitions.
fn regions(disk: &Disk, differing_partitions: &[u32], header_differs: bool) -> Vec<Region> {
    let sector = disk.sector;
    let mut regions: Vec<Region> = vec![
        (0, 512.min(sector), "protective MBR".into(), false),
        (sector, 2 * sector, "primary GPT header".into(), header_differs),
    ];
    let entries_start = disk.primary.entries_lba.saturating_mul(sector);
    regions.push((
        entries_start,
        entries_start + disk.primary.entry_bytes(),
        "primary partition entries".into(),
        header_differs,
    ));
    if let Some((backup, _, _)) = &disk.backup {
        let start = backup.entries_lba.saturating_mul(sector);
        regions.push((start, start + backup.entry_bytes(), "backup partition entries".into(), header_differs));
        let start = backup.current_lba.saturating_mul(sector);
        regions.push((start, start + sector, "backup GPT header".into(), header_differs));
    }
    for entry in &disk.entries {
        let start = entry.first_lba.saturating_mul(sector);
        let end = start.saturating_add(entry.sectors().saturating_mul(sector));
        regions.push((start, end, entry.label(), differing_partitions.contains(&entry.number)));
    }
    regions.sort_by_key(|region| (region.0, region.1));
    regions
}

/// Cuts `start..end` at region edges: each piece is named by its region, or "outside any
/// partition" (never explained: nothing should be written there).
fn split_by_regions(start: u64, end: u64, regions: &[Region]) -> Vec<(u64, u64, Option<String>, bool)> {
    let mut pieces = Vec::new();
    let mut position = start;
    while position < end {
        let inside = regions.iter().find(|region| region.0 <= position && position < region.1);
        match inside {
            Some((_, region_end, label, explained)) => {
                let stop = end.min(*region_end);
                pieces.push((position, stop, Some(label.clone()), *explained));
                position = stop;
            }
            None => {
                let next = regions.iter().map(|region| region.0).filter(|&begin| begin > position).min().unwrap_or(end);
                let stop = end.min(next);
                pieces.push((position, stop, Some("outside any partition".to_owned()), false));
                position = stop;
            }
        }
    }
    pieces
}

fn guid_text(guid: &Uuid) -> String {
    guid.hyphenated().to_string().to_uppercase()
}

/// A partition type GUID, with its name when it is a well-known one.
fn type_text(guid: &Uuid) -> String {
    let text = guid_text(guid);
    let name = match text.as_str() {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => Some("EFI System"),
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => Some("Linux filesystem"),
        "21686148-6449-6E6F-744E-656564454649" => Some("BIOS boot"),
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => Some("Linux swap"),
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => Some("Linux LVM"),
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => Some("Linux RAID"),
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => Some("Linux root (x86-64)"),
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => Some("Microsoft basic data"),
        _ => None,
    };
    match name {
        Some(name) => format!("{text} ({name})"),
        None => text,
    }
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 128-byte entry.
    fn entry(type_guid: &str, unique: &str, first: u64, last: u64, name: &str) -> Vec<u8> {
        let mut raw = vec![0u8; 128];
        raw[..16].copy_from_slice(&Uuid::parse_str(type_guid).unwrap().to_bytes_le());
        raw[16..32].copy_from_slice(&Uuid::parse_str(unique).unwrap().to_bytes_le());
        raw[32..40].copy_from_slice(&first.to_le_bytes());
        raw[40..48].copy_from_slice(&last.to_le_bytes());
        for (index, unit) in name.encode_utf16().enumerate() {
            raw[56 + 2 * index..58 + 2 * index].copy_from_slice(&unit.to_le_bytes());
        }
        raw
    }

    /// A header sector for `entries` (128 entries of 128 bytes), with valid CRCs.
    fn header(disk_guid: &str, entries: &[u8]) -> Vec<u8> {
        let mut array = entries.to_vec();
        array.resize(128 * 128, 0);
        let mut raw = vec![0u8; 512];
        raw[..8].copy_from_slice(b"EFI PART");
        raw[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        raw[12..16].copy_from_slice(&92u32.to_le_bytes());
        raw[24..32].copy_from_slice(&1u64.to_le_bytes());
        raw[32..40].copy_from_slice(&4095u64.to_le_bytes());
        raw[40..48].copy_from_slice(&34u64.to_le_bytes());
        raw[48..56].copy_from_slice(&4062u64.to_le_bytes());
        raw[56..72].copy_from_slice(&Uuid::parse_str(disk_guid).unwrap().to_bytes_le());
        raw[72..80].copy_from_slice(&2u64.to_le_bytes());
        raw[80..84].copy_from_slice(&128u32.to_le_bytes());
        raw[84..88].copy_from_slice(&128u32.to_le_bytes());
        raw[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
        let crc = crc32(&raw[..92]);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        raw
    }

    const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    const U1: &str = "11111111-2222-3333-4444-555555555555";
    const U2: &str = "66666666-7777-8888-9999-aaaaaaaaaaaa";

    #[test]
    fn headers_decode_with_crc_checks() {
        let entries = [entry(ESP, U1, 2048, 4095, "esp"), entry(LINUX, U2, 4096, 8191, "A_root")].concat();
        let raw = header(U1, &entries);
        let parsed = Header::parse(&raw).unwrap();
        assert!(parsed.header_crc_valid);
        assert_eq!(parsed.disk_guid, Uuid::parse_str(U1).unwrap());
        assert_eq!((parsed.first_usable_lba, parsed.last_usable_lba, parsed.entry_count), (34, 4062, 128));
        let mut broken = raw.clone();
        broken[40] ^= 1;
        let broken = Header::parse(&broken).unwrap();
        assert!(!broken.header_crc_valid);
        assert!(Header::parse(&raw[..91]).is_none());
        let fields = broken.fields(true);
        assert!(
            fields.iter().any(|(name, value)| name == "header CRC32" && value.ends_with("(invalid)")),
            "{fields:?}"
        );
    }

    #[test]
    fn entries_decode_and_pair_by_name() {
        let a =
            parse_entries(&[entry(ESP, U1, 2048, 4095, "esp"), entry(LINUX, U2, 4096, 8191, "A_root")].concat(), 128);
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].name, "A_root");
        assert_eq!(a[1].label(), "partition 2 \"A_root\"");
        // B has the same partitions in the other order, one with another GUID and end.
        let mut raw_b =
            [vec![0u8; 128], entry(LINUX, U1, 4096, 9000, "A_root"), entry(ESP, U1, 2048, 4095, "esp")].concat();
        raw_b.extend(vec![0u8; 128]);
        let b = parse_entries(&raw_b, 128);
        assert_eq!(b.iter().map(|entry| entry.number).collect::<Vec<_>>(), [2, 3]);
        let (pairs, only_a, only_b) = pair_entries(&a, &b);
        assert!(only_a.is_empty() && only_b.is_empty());
        assert_eq!(pairs.len(), 2);
        let (root_a, root_b) = pairs[1];
        let differences = compare_fields("GPT entry ", &root_a.fields(), &root_b.fields(), &[]);
        let names: Vec<&str> = differences
            .iter()
            .map(|difference| match &difference.what {
                What::Field { name, .. } => name.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(names, ["GPT entry unique GUID", "GPT entry last LBA"]);
        assert_eq!(type_text(&root_a.type_guid), format!("{LINUX} (Linux filesystem)"));
        // Duplicate names: paired by number instead.
        let dup = parse_entries(&[entry(LINUX, U1, 1, 2, "x"), entry(LINUX, U2, 3, 4, "x")].concat(), 128);
        let (pairs, _, only_b) = pair_entries(&dup, &b);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].0.number, pairs[0].1.number), (2, 2));
        assert_eq!(only_b.len(), 1);
    }

    #[test]
    fn ranges_are_cut_at_region_edges() {
        let regions: Vec<Region> =
            vec![(0, 512, "protective MBR".into(), false), (1024, 2048, "partition 1 esp".into(), true)];
        assert_eq!(
            split_by_regions(400, 1500, &regions),
            [
                (400, 512, Some("protective MBR".into()), false),
                (512, 1024, Some("outside any partition".into()), false),
                (1024, 1500, Some("partition 1 esp".into()), true),
            ]
        );
        assert_eq!(split_by_regions(3000, 3001, &regions), [(3000, 3001, Some("outside any partition".into()), false)]);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
