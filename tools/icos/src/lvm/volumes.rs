//! `volumes.csv`: the logical volumes of an LVM volume group, one per line,
//! `name,start,size,uuid,description`, `#` starting a comment line, fields trimmed (the IC-OS
//! HostOS format).
//!
//! `start` and `size` count physical extents, or bytes when they carry a unit (`1G`, see
//! [`crate::size`]) that must then be a whole number of extents. `uuid` may be empty: the LV UUID
//! is then derived from the build seed. The description is free text (it may contain commas).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::id::LvmId;
use crate::size::parse_size;

/// The longest LVM name (lvm2's NAME_LEN less its terminating NUL).
pub const MAX_NAME_LEN: usize = 127;

/// Parts of names that lvm2 keeps for its own hidden volumes (`apply_lvname_restrictions`).
const RESERVED_LV_PREFIXES: &[&str] = &["snapshot", "pvmove"];
const RESERVED_LV_INFIXES: &[&str] = &[
    "_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_imeta", "_iorig", "_mimage", "_mlog", "_pmspare", "_rimage",
    "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
];

#[derive(Debug, thiserror::Error)]
pub enum VolumesError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {problem}")]
    Line { path: PathBuf, line: usize, problem: String },
    #[error("{path}:{line}: volume {name:?}: {problem}")]
    Volume { path: PathBuf, line: usize, name: String, problem: String },
    #[error("{path}: describes no logical volume")]
    Empty { path: PathBuf },
}

/// One line of `volumes.csv`; `start` and `size` in extents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub line: usize,
    pub name: String,
    pub start: u64,
    pub size: u64,
    pub uuid: Option<LvmId>,
    pub description: String,
}

impl VolumeSpec {
    /// The extent after the volume's last one.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// A parsed `volumes.csv`, volumes in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeTable {
    pub path: PathBuf,
    pub volumes: Vec<VolumeSpec>,
}

/// Why `name` cannot name an LVM volume group or logical volume, if it cannot (lvm2's
/// `validate_name`: letters, digits and `+_.-`, not starting with `-`, not `.` or `..`).
pub fn invalid_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("the name is {} bytes long; LVM allows {MAX_NAME_LEN}", name.len()));
    }
    if name.starts_with('-') {
        return Some("the name starts with '-'".into());
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not a name"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "+_.-".contains(*c))) {
        return Some(format!("{bad:?} is not allowed: LVM names hold letters, digits, '+', '_', '.' and '-'"));
    }
    None
}

/// [`invalid_name`], plus the names lvm2 keeps for its own logical volumes.
pub fn invalid_lv_name(name: &str) -> Option<String> {
    if let Some(problem) = invalid_name(name) {
        return Some(problem);
    }
    if let Some(prefix) = RESERVED_LV_PREFIXES.iter().find(|prefix| name.starts_with(*prefix)) {
        return Some(format!("names starting with {prefix:?} are reserved by LVM"));
    }
    if let Some(infix) = RESERVED_LV_INFIXES.iter().find(|infix| name.contains(*infix)) {
        return Some(format!("names containing {infix:?} are reserved by LVM"));
    }
    None
}

/// Extents, or bytes with a unit that must then be a whole number of extents.
fn parse_extents(text: &str, extent_size: u64) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text:?} is too large"));
    }
    let bytes = parse_size(text).map_err(|error| format!("{error}, or a number of extents"))?;
    if bytes % extent_size != 0 {
        return Err(format!("{text:?} is not a whole number of {extent_size}-byte extents"));
    }
    Ok(bytes / extent_size)
}

/// Reads and parses `path`; `extent_size` (bytes) converts sizes given with a unit.
pub fn read_volumes_csv(path: &Path, extent_size: u64) -> Result<VolumeTable, VolumesError> {
    let text = fs::read_to_string(path).map_err(|source| VolumesError::Read { path: path.to_owned(), source })?;
    parse_volumes_csv(path, &text, extent_size)
}

/// Parses the text of a `volumes.csv`; `path` names it in errors. Checks each line, and names
/// and UUIDs for duplicates; [`VolumeTable::check_layout`] checks the extents.
pub fn parse_volumes_csv(path: &Path, text: &str, extent_size: u64) -> Result<VolumeTable, VolumesError> {
    let mut volumes: Vec<VolumeSpec> = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw_line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed.splitn(5, ',').map(str::trim).collect();
        if fields.len() < 4 {
            return Err(VolumesError::Line {
                path: path.to_owned(),
                line,
                problem: format!("expected name,start,size,uuid[,description], found {} field(s)", fields.len()),
            });
        }
        let name = fields[0];
        let problem =
            |problem: String| VolumesError::Volume { path: path.to_owned(), line, name: name.to_owned(), problem };
        if let Some(reason) = invalid_lv_name(name) {
            return Err(problem(reason));
        }
        let start = parse_extents(fields[1], extent_size).map_err(|error| problem(format!("start: {error}")))?;
        let size = parse_extents(fields[2], extent_size).map_err(|error| problem(format!("size: {error}")))?;
        if size == 0 {
            return Err(problem("the size is zero".into()));
        }
        if start.checked_add(size).is_none() {
            return Err(problem("start + size is too large".into()));
        }
        let uuid = match fields[3] {
            "" => None,
            text => Some(text.parse::<LvmId>().map_err(|error| problem(format!("uuid: {error}")))?),
        };
        if let Some(first) = volumes.iter().find(|volume| volume.name == name) {
            return Err(problem(format!("the name is used before, on line {}", first.line)));
        }
        if let Some(first) = volumes.iter().find(|volume| uuid.is_some() && volume.uuid == uuid) {
            return Err(problem(format!("the UUID is used before, by {:?} on line {}", first.name, first.line)));
        }
        volumes.push(VolumeSpec {
            line,
            name: name.to_owned(),
            start,
            size,
            uuid,
            description: fields.get(4).copied().unwrap_or_default().to_owned(),
        });
    }
    if volumes.is_empty() {
        return Err(VolumesError::Empty { path: path.to_owned() });
    }
    Ok(VolumeTable { path: path.to_owned(), volumes })
}

impl VolumeTable {
    /// Checks that every volume lies within the `extents` extents of the physical volume and that
    /// no two overlap.
    pub fn check_layout(&self, extents: u64) -> Result<(), VolumesError> {
        for (index, volume) in self.volumes.iter().enumerate() {
            if volume.end() > extents {
                let problem = format!(
                    "extents {}..{} lie beyond the physical volume, which has {extents} extents",
                    volume.start,
                    volume.end()
                );
                return Err(self.volume_error(volume, problem));
            }
            // A table has a handful of volumes: comparing each with those before it is enough.
            let earlier = &self.volumes[..index];
            if let Some(first) = earlier.iter().find(|other| other.start < volume.end() && volume.start < other.end()) {
                let problem = format!(
                    "extents {}..{} overlap {:?} (line {}, extents {}..{})",
                    volume.start,
                    volume.end(),
                    first.name,
                    first.line,
                    first.start,
                    first.end()
                );
                return Err(self.volume_error(volume, problem));
            }
        }
        Ok(())
    }

    /// The volume called `name`.
    pub fn volume(&self, name: &str) -> Option<&VolumeSpec> {
        self.volumes.iter().find(|volume| volume.name == name)
    }

    pub(crate) fn volume_error(&self, volume: &VolumeSpec, problem: String) -> VolumesError {
        VolumesError::Volume { path: self.path.clone(), line: volume.line, name: volume.name.clone(), problem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB4: u64 = 4 << 20;

    fn parse(text: &str) -> Result<VolumeTable, VolumesError> {
        parse_volumes_csv(Path::new("volumes.csv"), text, MIB4)
    }

    #[test]
    fn parses_extents_units_uuids_comments_and_descriptions() {
        let table = parse(
            "# name, start, size, uuid, description\n\
             config, 0, 25, , Config, with a comma\n\
             \n\
             A_boot, 25, 1G, 0123ab-cdef-GHIJ-klmn-OPQR-stuv-wxyz01, Boot of A\n",
        )
        .unwrap();
        assert_eq!(table.volumes.len(), 2);
        assert_eq!(table.volumes[0].name, "config");
        assert_eq!((table.volumes[0].start, table.volumes[0].size, table.volumes[0].line), (0, 25, 2));
        assert_eq!(table.volumes[0].description, "Config, with a comma");
        assert_eq!(table.volumes[0].uuid, None);
        assert_eq!((table.volumes[1].start, table.volumes[1].size), (25, 256));
        assert_eq!(table.volumes[1].uuid.unwrap().to_string(), "0123ab-cdef-GHIJ-klmn-OPQR-stuv-wxyz01");
        table.check_layout(281).unwrap();
    }

    #[test]
    fn bad_lines_name_the_line_and_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("a,0,1\n", "volumes.csv:1: expected name,start,size,uuid"),
            ("-a,0,1,\n", "volumes.csv:1: volume \"-a\": the name starts with '-'"),
            ("a b,0,1,\n", "' ' is not allowed"),
            ("snapshot1,0,1,\n", "reserved by LVM"),
            ("x_tmeta,0,1,\n", "reserved by LVM"),
            ("a,0,0,\n", "the size is zero"),
            ("a,0,3M,\n", "not a whole number of 4194304-byte extents"),
            ("a,x,1,\n", "start: "),
            ("a,0,1,not-an-id\n", "uuid: "),
            ("a,0,1,\nb,1,1,\na,2,1,\n", "volumes.csv:3: volume \"a\": the name is used before, on line 1"),
            (
                "a,0,1,0123ab-cdef-GHIJ-klmn-OPQR-stuv-wxyz01\nb,1,1,0123abcdefGHIJklmnOPQRstuvwxyz01\n",
                "volumes.csv:2: volume \"b\": the UUID is used before",
            ),
            ("# only a comment\n", "describes no logical volume"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn layout_errors_name_both_volumes_and_the_physical_volume_size() {
        let overlap = parse("a,0,10,\nb,20,5,\nc,9,2,\n").unwrap();
        let error = overlap.check_layout(100).unwrap_err().to_string();
        assert!(
            error.contains("volumes.csv:3: volume \"c\": extents 9..11 overlap \"a\" (line 1, extents 0..10)"),
            "{error}"
        );
        let beyond = parse("a,0,10,\nb,10,91,\n").unwrap();
        let error = beyond.check_layout(100).unwrap_err().to_string();
        assert!(
            error.contains(
                "volumes.csv:2: volume \"b\": extents 10..101 lie beyond the physical volume, which has 100 extents"
            ),
            "{error}"
        );
        parse("a,0,10,\nb,10,90,\n").unwrap().check_layout(100).unwrap();
    }
}
