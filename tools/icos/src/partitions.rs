//! `partitions.csv`, the IC-OS description of a GPT disk: one partition per line,
//! `name,start,size,type,uuid,description`, `#` starting a comment line, fields trimmed.
//!
//! `start` and `size` count 512-byte sectors, or bytes when they carry a unit (`100M`, see
//! [`crate::size`]). `type` is a GPT type GUID or an sfdisk-style shortcut (`L`, `U`, `V`, ...).
//! `uuid` may be empty: the partition UUID is then derived from the build seed as systemd-repart
//! does. The description is free text (it may contain commas) and is not stored on the disk.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::seed::Seed;
use crate::size::parse_size;

/// The logical sector size of the disks described here.
pub const SECTOR_SIZE: u64 = 512;
/// Default partition start alignment in sectors (1 MiB), as sfdisk and IC-OS use.
pub const DEFAULT_ALIGNMENT: u64 = 2048;
/// A GPT partition name holds at most 36 UTF-16 code units.
pub const MAX_NAME_UTF16: usize = 36;
/// The number of entries in the GPT partition arrays written here.
pub const MAX_PARTITIONS: usize = 128;
/// Sectors taken at each end of the disk by the MBR/headers and the 128-entry arrays (1 + 1 + 32
/// at the start, 32 + 1 at the end): the first usable LBA is 34, the last is `sectors - 34`.
pub const FIRST_USABLE_LBA: u64 = 34;
const BACKUP_SECTORS: u64 = 33;

/// Type shortcuts, matched without regard to case: sfdisk's one-letter ones and readable names.
const TYPE_ALIASES: &[(&str, &str)] = &[
    ("L", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    ("linux", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    ("U", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
    ("esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
    ("uefi", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
    ("bios", "21686148-6449-6E6F-744E-656564454649"),
    ("bios_boot", "21686148-6449-6E6F-744E-656564454649"),
    ("V", "E6D6D379-F507-44C2-A23C-238F2A3DF928"),
    ("lvm", "E6D6D379-F507-44C2-A23C-238F2A3DF928"),
    ("S", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
    ("swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
];

#[derive(Debug, thiserror::Error)]
pub enum PartitionsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {problem}")]
    Line { path: PathBuf, line: usize, problem: String },
    #[error("{path}:{line}: partition {name:?}: {problem}")]
    Partition { path: PathBuf, line: usize, name: String, problem: String },
    #[error("{path}: describes no partition")]
    Empty { path: PathBuf },
    #[error("{path}: {count} partitions, but a GPT partition array here has {MAX_PARTITIONS} entries")]
    TooMany { path: PathBuf, count: usize },
    #[error("{path}: no partition is named {name:?}; the partitions are {names}")]
    NoSuchPartition { path: PathBuf, name: String, names: String },
}

/// One line of `partitions.csv`; `start` and `size` in sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub line: usize,
    pub name: String,
    pub start: u64,
    pub size: u64,
    pub type_guid: Uuid,
    pub uuid: Option<Uuid>,
    pub description: String,
}

impl PartitionSpec {
    /// The last sector of the partition (inclusive, as GPT stores it).
    pub fn last(&self) -> u64 {
        self.start + self.size - 1
    }
}

/// A parsed `partitions.csv`, partitions in file order (which is their GPT entry order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub path: PathBuf,
    pub partitions: Vec<PartitionSpec>,
}

/// The GPT type GUID that `text` names: a GUID or one of the shortcuts.
pub fn parse_type(text: &str) -> Option<Uuid> {
    TYPE_ALIASES.iter().find(|(alias, _)| alias.eq_ignore_ascii_case(text)).map_or(text, |(_, guid)| guid).parse().ok()
}

/// Sectors, or bytes with a unit that must then be a whole number of sectors.
fn parse_sectors(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text:?} is too large"));
    }
    let bytes = parse_size(text).map_err(|error| format!("{error}, or a number of 512-byte sectors"))?;
    if bytes % SECTOR_SIZE != 0 {
        return Err(format!("{text:?} is not a whole number of {SECTOR_SIZE}-byte sectors"));
    }
    Ok(bytes / SECTOR_SIZE)
}

/// Reads and parses `path`.
pub fn read_partitions_csv(path: &Path) -> Result<PartitionTable, PartitionsError> {
    let text = fs::read_to_string(path).map_err(|source| PartitionsError::Read { path: path.to_owned(), source })?;
    parse_partitions_csv(path, &text)
}

/// Parses the text of a `partitions.csv`; `path` names it in errors. Checks each line on its own
/// and names and UUIDs for duplicates; [`PartitionTable::check_layout`] checks the geometry.
pub fn parse_partitions_csv(path: &Path, text: &str) -> Result<PartitionTable, PartitionsError> {
    let mut partitions: Vec<PartitionSpec> = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw_line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let line_error = |problem: String| PartitionsError::Line { path: path.to_owned(), line, problem };
        let fields: Vec<&str> = trimmed.splitn(6, ',').map(str::trim).collect();
        if fields.len() < 5 {
            return Err(line_error(format!(
                "expected name,start,size,type,uuid[,description], found {} field(s)",
                fields.len()
            )));
        }
        let name = fields[0];
        if name.is_empty() {
            return Err(line_error("the partition name is empty".into()));
        }
        let problem = |problem: String| PartitionsError::Partition {
            path: path.to_owned(),
            line,
            name: name.to_owned(),
            problem,
        };
        let units = name.encode_utf16().count();
        if units > MAX_NAME_UTF16 {
            return Err(problem(format!("the name is {units} UTF-16 units long; GPT allows {MAX_NAME_UTF16}")));
        }
        let start = parse_sectors(fields[1]).map_err(|error| problem(format!("start: {error}")))?;
        let size = parse_sectors(fields[2]).map_err(|error| problem(format!("size: {error}")))?;
        if size == 0 {
            return Err(problem("the size is zero".into()));
        }
        if start.checked_add(size).is_none() {
            return Err(problem("start + size is too large".into()));
        }
        let type_guid = parse_type(fields[3]).ok_or_else(|| {
            let aliases: Vec<&str> = TYPE_ALIASES.iter().map(|(alias, _)| *alias).collect();
            problem(format!(
                "unknown partition type {:?}: expected a GPT type GUID or one of {}",
                fields[3],
                aliases.join(", ")
            ))
        })?;
        let uuid = match fields[4] {
            "" => None,
            text => {
                Some(Uuid::parse_str(text).map_err(|_| problem(format!("the partition UUID {text:?} is not a UUID")))?)
            }
        };
        if let Some(first) = partitions.iter().find(|other| other.name == name) {
            return Err(problem(format!("the name is also used on line {}", first.line)));
        }
        if let Some(first) = partitions.iter().find(|other| uuid.is_some() && other.uuid == uuid) {
            return Err(problem(format!("the UUID is also used by {:?} on line {}", first.name, first.line)));
        }
        partitions.push(PartitionSpec {
            line,
            name: name.to_owned(),
            start,
            size,
            type_guid,
            uuid,
            description: fields.get(5).copied().unwrap_or("").to_owned(),
        });
    }
    if partitions.is_empty() {
        return Err(PartitionsError::Empty { path: path.to_owned() });
    }
    if partitions.len() > MAX_PARTITIONS {
        return Err(PartitionsError::TooMany { path: path.to_owned(), count: partitions.len() });
    }
    Ok(PartitionTable { path: path.to_owned(), partitions })
}

impl PartitionTable {
    fn error(&self, partition: &PartitionSpec, problem: String) -> PartitionsError {
        PartitionsError::Partition {
            path: self.path.clone(),
            line: partition.line,
            name: partition.name.clone(),
            problem,
        }
    }

    /// Checks that every partition starts on a multiple of `alignment` sectors, lies within the
    /// usable area of a disk of `disk_sectors` sectors, and overlaps no other partition.
    pub fn check_layout(&self, disk_sectors: u64, alignment: u64) -> Result<(), PartitionsError> {
        let last_usable = disk_sectors.saturating_sub(BACKUP_SECTORS + 1);
        for partition in &self.partitions {
            if alignment > 1 && partition.start % alignment != 0 {
                return Err(self.error(
                    partition,
                    format!(
                        "start sector {} is not aligned to {alignment} sectors (next aligned start: {})",
                        partition.start,
                        partition.start.next_multiple_of(alignment)
                    ),
                ));
            }
            if partition.start < FIRST_USABLE_LBA || partition.last() > last_usable {
                return Err(self.error(
                    partition,
                    format!(
                        "sectors {}..={} are outside the usable sectors {FIRST_USABLE_LBA}..={last_usable} \
                         of a disk of {disk_sectors} sectors ({} bytes)",
                        partition.start,
                        partition.last(),
                        disk_sectors * SECTOR_SIZE
                    ),
                ));
            }
        }
        let mut by_start: Vec<&PartitionSpec> = self.partitions.iter().collect();
        by_start.sort_by_key(|partition| partition.start);
        for pair in by_start.windows(2) {
            if pair[1].start <= pair[0].last() {
                let (earlier, later) = (pair[0], pair[1]);
                let (first_line, second) = if earlier.line < later.line { (earlier, later) } else { (later, earlier) };
                return Err(self.error(
                    second,
                    format!(
                        "sectors {}..={} overlap partition {:?} (line {}, sectors {}..={})",
                        second.start,
                        second.last(),
                        first_line.name,
                        first_line.line,
                        first_line.start,
                        first_line.last()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The position of partition `name` in the table; the error lists the partitions there are.
    pub fn index_of(&self, name: &str) -> Result<usize, PartitionsError> {
        self.partitions.iter().position(|partition| partition.name == name).ok_or_else(|| {
            let names: Vec<String> = self.partitions.iter().map(|partition| format!("{:?}", partition.name)).collect();
            PartitionsError::NoSuchPartition { path: self.path.clone(), name: name.to_owned(), names: names.join(", ") }
        })
    }

    /// The UUID of the partition named `name`: the one the table gives, or the one derived from
    /// `seed` (see [`PartitionTable::partition_uuids`]).
    pub fn partition_uuid(&self, name: &str, seed: Option<&Seed>) -> Result<Uuid, PartitionsError> {
        let position = self.index_of(name)?;
        match (self.partitions[position].uuid, seed) {
            (Some(uuid), _) => Ok(uuid),
            // All of them, so that a clash is reported as `icos disk` reports it.
            (None, Some(_)) => Ok(self.partition_uuids(seed)?[position]),
            (None, None) => {
                Err(self
                    .error(&self.partitions[position], "the UUID is empty and no seed was given to derive it".into()))
            }
        }
    }

    /// The partition UUIDs in file order: the given one, or one derived from `seed` with the
    /// partition's index among the partitions of its type (in file order, counting those with a
    /// given UUID too), as systemd-repart does.
    pub fn partition_uuids(&self, seed: Option<&Seed>) -> Result<Vec<Uuid>, PartitionsError> {
        let mut seen_of_type: BTreeMap<Uuid, u64> = BTreeMap::new();
        let mut uuids: Vec<Uuid> = Vec::new();
        for partition in &self.partitions {
            let index = seen_of_type.entry(partition.type_guid).or_insert(0);
            let uuid = match (partition.uuid, seed) {
                (Some(uuid), _) => uuid,
                (None, Some(seed)) => seed.partition_uuid(partition.type_guid, *index),
                (None, None) => {
                    return Err(self.error(partition, "the UUID is empty and no seed was given to derive it".into()))
                }
            };
            *index += 1;
            if let Some(position) = uuids.iter().position(|other| *other == uuid) {
                let first = &self.partitions[position];
                return Err(self
                    .error(partition, format!("UUID {uuid} is also used by {:?} on line {}", first.name, first.line)));
            }
            uuids.push(uuid);
        }
        Ok(uuids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GuestOS table from the IC-OS sources (see the reference notes).
    const GUESTOS: &str = "\
# name, start, size, type, uuid, description
esp    ,     2048,   204800, U, B78084E2-3363-1346-8C25-D426F26B8928, EFI system partition
grub   ,   206848,   204800, L, 6788E4CF-F456-104E-9A34-A2C58CFB0EE6, Grub bootloader partition
config ,   411648,   204800, L, A5BA3816-BEAA-D74D-993E-CFA5AA6BA1F6, System config store
A_boot ,   616448,  2097152, L, DDF618FE-7244-B446-A175-3296E6B9D02E, Boot partition for system A
A_root ,  2713600, 20971520, L, 7C0A626E-E5EA-E543-B5C5-300EB8304DB7, Root partition for system A
A_var  , 23685120, 20971520, L, 22D2F5A6-1E39-D247-81CF-90C95C113E21, Mutable data partition for system A
B_boot , 44656640,  2097152, L, D5214E4F-F7B0-B945-9A9B-52B9188DF4C5, Boot partition for system B
B_root , 46753792, 20971520, L, A78BC3A8-376C-054A-96E7-3904B915D0C5, Root partition for system B
B_var  , 67725312, 20971520, L, 2237D1D1-CE96-584E-8EC5-8AE6661FAAE9, Mutable data partition for system B
";

    fn parse(text: &str) -> Result<PartitionTable, PartitionsError> {
        parse_partitions_csv(Path::new("partitions.csv"), text)
    }

    fn message(text: &str, sectors: u64) -> String {
        match parse(text) {
            Ok(table) => table.check_layout(sectors, DEFAULT_ALIGNMENT).unwrap_err().to_string(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn parses_the_guestos_table() {
        let table = parse(GUESTOS).unwrap();
        assert_eq!(table.partitions.len(), 9);
        let esp = &table.partitions[0];
        assert_eq!((esp.name.as_str(), esp.start, esp.size, esp.line), ("esp", 2048, 204800, 2));
        assert_eq!(esp.type_guid, parse_type("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").unwrap());
        assert_eq!(table.partitions[8].description, "Mutable data partition for system B");
        table.check_layout((50u64 << 30) / SECTOR_SIZE, DEFAULT_ALIGNMENT).unwrap();
        assert_eq!(table.partition_uuids(None).unwrap()[1].to_string(), "6788e4cf-f456-104e-9a34-a2c58cfb0ee6");
    }

    #[test]
    fn units_and_shortcuts() {
        let table = parse("a,1M,100M,linux,,x, with, commas\nb,206848,2M,lvm,\n").unwrap();
        assert_eq!((table.partitions[0].start, table.partitions[0].size), (2048, 204800));
        assert_eq!(table.partitions[0].description, "x, with, commas");
        assert_eq!(table.partitions[1].size, 4096);
        assert_eq!(table.partitions[1].type_guid.to_string(), "e6d6d379-f507-44c2-a23c-238f2a3df928");
        assert_eq!(parse_type("bios_boot").unwrap().to_string(), "21686148-6449-6e6f-744e-656564454649");
        assert_eq!(parse_type("u"), parse_type("esp"));
    }

    #[test]
    fn seed_derived_uuids_count_partitions_of_the_same_type() {
        let table = parse("a,2048,2048,L,\nb,4096,2048,U,\nc,6144,2048,L,\n").unwrap();
        let seed: Seed = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c".parse().unwrap();
        let uuids = table.partition_uuids(Some(&seed)).unwrap();
        let linux = parse_type("L").unwrap();
        assert_eq!(uuids[0], seed.partition_uuid(linux, 0));
        assert_eq!(uuids[2], seed.partition_uuid(linux, 1));
        assert_eq!(uuids[1], seed.partition_uuid(parse_type("U").unwrap(), 0));
        let error = table.partition_uuids(None).unwrap_err().to_string();
        assert!(error.contains("partitions.csv:1: partition \"a\"") && error.contains("no seed"), "{error}");
    }

    #[test]
    fn one_partition_s_uuid_by_name() {
        let fixed = "b78084e2-3363-1346-8c25-d426f26b8928";
        let table = parse(&format!("a,2048,2048,L,\nb,4096,2048,L,{fixed}\nc,6144,2048,L,\n")).unwrap();
        let seed: Seed = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c".parse().unwrap();
        // The counter of a type counts the partition with a given UUID too: c is the third.
        assert_eq!(table.partition_uuid("c", Some(&seed)).unwrap(), seed.partition_uuid(parse_type("L").unwrap(), 2));
        assert_eq!(table.partition_uuid("b", Some(&seed)).unwrap().to_string(), fixed);
        assert_eq!(table.partition_uuid("b", None).unwrap().to_string(), fixed);
        let error = table.partition_uuid("c", None).unwrap_err().to_string();
        assert!(error.contains("partitions.csv:3: partition \"c\"") && error.contains("no seed"), "{error}");
        let error = table.partition_uuid("d", Some(&seed)).unwrap_err().to_string();
        assert_eq!(error, "partitions.csv: no partition is named \"d\"; the partitions are \"a\", \"b\", \"c\"");
    }

    #[test]
    fn errors_name_the_file_line_and_partition() {
        let disk = 1 << 20;
        let cases = [
            ("a,2048,2048,L,\nb,3072,2048,L,\n", "partitions.csv:2: partition \"b\": start sector 3072 is not aligned"),
            ("a,2048,4096,L,\nb,4096,2048,L,\n", "partitions.csv:2: partition \"b\": sectors 4096..=6143 overlap partition \"a\" (line 1"),
            ("a,2048,2048,L,\na,4096,2048,L,\n", "partitions.csv:2: partition \"a\": the name is also used on line 1"),
            ("a,2048,2048,X,\n", "partitions.csv:1: partition \"a\": unknown partition type \"X\""),
            ("a,2048,2048,L\n", "partitions.csv:1: expected name,start,size,type,uuid"),
            ("a,2048,12x,L,\n", "partitions.csv:1: partition \"a\": size: \"12x\" is not a size"),
            ("a,1048576,2048,L,\n", "partitions.csv:1: partition \"a\": sectors 1048576..=1050623 are outside"),
            ("a,2048,0,L,\n", "the size is zero"),
            ("a,2048,2048,L,nope\n", "\"nope\" is not a UUID"),
            (
                "a,2048,2048,L,B78084E2-3363-1346-8C25-D426F26B8928\nb,4096,2048,L,b78084e2-3363-1346-8c25-d426f26b8928\n",
                "partitions.csv:2: partition \"b\": the UUID is also used by \"a\" on line 1",
            ),
            (&format!("{},2048,2048,L,\n", "n".repeat(37)), "is 37 UTF-16 units long"),
            ("# only a comment\n", "partitions.csv: describes no partition"),
        ];
        for (text, expected) in cases {
            let error = message(text, disk);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        // The last usable sector is disk sectors - 34.
        let table = parse("a,2048,2048,L,\n").unwrap();
        assert!(table.check_layout(2048 + 2048 + 33 - 1, 2048).is_err());
        table.check_layout(2048 + 2048 + 33, 2048).unwrap();
        // Alignment is a parameter: 1 accepts any start.
        parse("a,2049,2048,L,\n").unwrap().check_layout(disk, 1).unwrap();
    }
}
