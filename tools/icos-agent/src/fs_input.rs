//! The input of the filesystem builders (`ext4`, `fat`): a canonical rootfs tar, scanned once up
//! front so that a bad entry or a filesystem that is too small is reported before any output is
//! written, and so that the builders can read file contents by offset in a chosen order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use tar::EntryType;

/// Why a tar could not be used as filesystem input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid tar (truncated or corrupt?): {source}")]
    Malformed { path: PathBuf, source: io::Error },
    #[error("{path}: {entry}: the data of this entry ends at byte {end} but the file has {length} bytes: the tar is truncated")]
    Truncated { path: PathBuf, entry: EntryPath, end: u64, length: u64 },
    #[error("{path}: {entry}: {problem}")]
    BadEntry { path: PathBuf, entry: EntryPath, problem: String },
    #[error("{path}: {entry} appears twice")]
    Duplicate { path: PathBuf, entry: EntryPath },
    #[error("{path}: {entry}: its parent directory {parent} is not in the tar (canonical tars list every parent directory before its content)")]
    MissingParent { path: PathBuf, entry: EntryPath, parent: EntryPath },
    #[error("{path}: {entry}: hard link to {target}, which is not a regular file earlier in the tar")]
    BadHardLink { path: PathBuf, entry: EntryPath, target: EntryPath },
}

/// The path of a tar entry as components relative to the root (empty for the root itself).
/// Components are raw bytes: Linux file names need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryPath(pub Vec<Vec<u8>>);

impl EntryPath {
    /// The directory holding this entry; `None` for the root.
    pub fn parent(&self) -> Option<EntryPath> {
        let (_, parent) = self.0.split_last()?;
        Some(EntryPath(parent.to_vec()))
    }

    /// The last component; `None` for the root.
    pub fn name(&self) -> Option<&[u8]> {
        self.0.last().map(Vec::as_slice)
    }
}

impl fmt::Display for EntryPath {
    /// Shows `/a/b`, with newlines, control characters and bytes that are not UTF-8 escaped so an
    /// error message stays on one line and says exactly which name is meant.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return formatter.write_str("/");
        }
        for component in &self.0 {
            formatter.write_str("/")?;
            match std::str::from_utf8(component) {
                Ok(text) => write!(formatter, "{}", text.escape_debug())?,
                Err(_) => write!(formatter, "{}", component.escape_ascii())?,
            }
        }
        Ok(())
    }
}

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    /// A regular file whose `size` bytes start at byte `data_offset` of the tar.
    File {
        size: u64,
        data_offset: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Another name for the regular file `target`, listed earlier.
    HardLink {
        target: EntryPath,
    },
    CharDevice,
    BlockDevice,
    Fifo,
}

impl EntryKind {
    /// How the kind is named in error messages.
    pub fn description(&self) -> &'static str {
        match self {
            EntryKind::Directory => "a directory",
            EntryKind::File { .. } => "a regular file",
            EntryKind::Symlink { .. } => "a symbolic link",
            EntryKind::HardLink { .. } => "a hard link",
            EntryKind::CharDevice => "a character device",
            EntryKind::BlockDevice => "a block device",
            EntryKind::Fifo => "a FIFO",
        }
    }
}

/// One entry of the input tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputEntry {
    pub path: EntryPath,
    pub kind: EntryKind,
    /// Extended attributes from PAX `SCHILY.xattr.<name>` records: (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The entries of `tar_path`, sorted by path components, checked: every entry's parent directory
/// is present, no path appears twice, hard links point to earlier regular files, no path leaves
/// the root. The root directory entry (`./`), if present, is left out: the builders make the root.
pub fn scan_tar(tar_path: &Path) -> Result<Vec<InputEntry>, InputError> {
    let read_error = |source| InputError::Read { path: tar_path.to_owned(), source };
    let malformed = |source| InputError::Malformed { path: tar_path.to_owned(), source };
    let file = File::open(tar_path).map_err(read_error)?;
    let length = file.metadata().map_err(read_error)?.len();
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    let mut entries: BTreeMap<EntryPath, InputEntry> = BTreeMap::new();
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let path = parse_path(tar_path, &entry.path_bytes())?;
        let bad_entry =
            |problem: String| InputError::BadEntry { path: tar_path.to_owned(), entry: path.clone(), problem };
        let kind = match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                let data_offset = entry.raw_file_position();
                let end = data_offset.saturating_add(entry.size());
                if end > length {
                    return Err(InputError::Truncated { path: tar_path.to_owned(), entry: path, end, length });
                }
                EntryKind::File { size: entry.size(), data_offset }
            }
            EntryType::Directory => EntryKind::Directory,
            EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|name| name.into_owned()).unwrap_or_default();
                if target.is_empty() {
                    return Err(bad_entry("a symbolic link with an empty target".to_owned()));
                }
                EntryKind::Symlink { target }
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().map(|name| name.into_owned()).unwrap_or_default();
                EntryKind::HardLink { target: parse_path(tar_path, &target)? }
            }
            EntryType::Char => EntryKind::CharDevice,
            EntryType::Block => EntryKind::BlockDevice,
            EntryType::Fifo => EntryKind::Fifo,
            other => {
                return Err(bad_entry(format!(
                    "unsupported tar entry type {:?} (type flag {:?}); a canonical tar holds only files, \
                     directories, links, devices and FIFOs",
                    other,
                    char::from(other.as_byte())
                )))
            }
        };
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(malformed)? {
            for extension in extensions {
                let extension = extension.map_err(malformed)?;
                if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), extension.value_bytes().to_vec()));
                }
            }
        }
        if path.0.is_empty() {
            if kind != EntryKind::Directory {
                return Err(bad_entry(format!("the root must be a directory, not {}", kind.description())));
            }
            continue;
        }
        let input = InputEntry { path: path.clone(), kind, xattrs };
        if entries.insert(path.clone(), input).is_some() {
            return Err(InputError::Duplicate { path: tar_path.to_owned(), entry: path });
        }
    }
    check_tree(tar_path, &entries)?;
    Ok(entries.into_values().collect())
}

/// Checks that parents are directories in the tar and that hard links point to regular files
/// that come earlier in the tar's canonical (sorted) order.
fn check_tree(tar_path: &Path, entries: &BTreeMap<EntryPath, InputEntry>) -> Result<(), InputError> {
    let mut directories: BTreeSet<&EntryPath> = BTreeSet::new();
    for (path, entry) in entries {
        if let Some(parent) = path.parent() {
            if !parent.0.is_empty() && !directories.contains(&parent) {
                return Err(InputError::MissingParent { path: tar_path.to_owned(), entry: path.clone(), parent });
            }
        }
        match &entry.kind {
            EntryKind::Directory => {
                directories.insert(path);
            }
            EntryKind::HardLink { target } => {
                let target_is_earlier_file = target < path
                    && matches!(entries.get(target).map(|target| &target.kind), Some(EntryKind::File { .. }));
                if !target_is_earlier_file {
                    return Err(InputError::BadHardLink {
                        path: tar_path.to_owned(),
                        entry: path.clone(),
                        target: target.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Splits a tar path into components: `./a/b/`, `a/b` and `/a/b` all name the same entry.
fn parse_path(tar_path: &Path, raw: &[u8]) -> Result<EntryPath, InputError> {
    let mut components = Vec::new();
    for component in raw.split(|&byte| byte == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                return Err(InputError::BadEntry {
                    path: tar_path.to_owned(),
                    entry: EntryPath(vec![raw.to_vec()]),
                    problem: "a path with a `..` component would leave the filesystem root".to_owned(),
                })
            }
            name => components.push(name.to_vec()),
        }
    }
    Ok(EntryPath(components))
}

/// An entry of [`canonical_tar`]: its path, its kind, and its data (a regular file) or link target
/// (a symbolic or hard link).
pub type TarEntry<'a> = (&'a [u8], EntryType, &'a [u8]);

/// A tar of `entries` in their order, as canonical tars are: owner 0, mtime 0, mode 0755 for a
/// directory and 0644 otherwise, a name longer than the header's 100 bytes in a PAX record. The
/// installer makes its configuration filesystem's input with it, and tests their tars.
pub fn canonical_tar(entries: &[TarEntry]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for &(path, kind, data) in entries {
        if path.len() > 100 {
            builder.append_pax_extensions([("path", path)])?;
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let short = &path[..path.len().min(100)];
        header.as_ustar_mut().expect("a ustar header").name[..short.len()].copy_from_slice(short);
        let body: &[u8] = if matches!(kind, EntryType::Symlink | EntryType::Link) {
            header.set_link_name_literal(data)?;
            b""
        } else {
            data
        };
        header.set_size(body.len() as u64);
        header.set_cksum();
        builder.append(&header, body)?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    fn path(text: &str) -> EntryPath {
        EntryPath(text.split('/').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()).collect())
    }

    #[test]
    fn scans_sorted_with_kinds_offsets_and_without_the_root() {
        let tar = canonical_tar(&[
            (b"./", EntryType::Directory, b""),
            (b"./b/", EntryType::Directory, b""),
            (b"./b/file", EntryType::Regular, b"hello"),
            (b"./a", EntryType::Symlink, b"b/file"),
            (b"./b/link", EntryType::Link, b"./b/file"),
            (b"./c", EntryType::Fifo, b""),
        ])
        .unwrap();
        let file = write_temp(&tar);
        let entries = scan_tar(file.path()).unwrap();
        let paths: Vec<String> = entries.iter().map(|entry| entry.path.to_string()).collect();
        assert_eq!(paths, ["/a", "/b", "/b/file", "/b/link", "/c"]);
        assert_eq!(entries[0].kind, EntryKind::Symlink { target: b"b/file".to_vec() });
        let EntryKind::File { size, data_offset } = entries[2].kind else { panic!("{:?}", entries[2]) };
        assert_eq!(&tar[data_offset as usize..][..size as usize], b"hello");
        assert_eq!(entries[3].kind, EntryKind::HardLink { target: path("b/file") });
        assert_eq!(entries[4].kind, EntryKind::Fifo);
    }

    #[test]
    fn missing_parent_duplicate_and_dotdot_are_errors() {
        let cases: [(&[TarEntry], &str); 4] = [
            (&[(b"a/b", EntryType::Regular, b"")], "/a/b: its parent directory /a is not in the tar"),
            (&[(b"a", EntryType::Regular, b""), (b"./a", EntryType::Regular, b"")], "/a appears twice"),
            (&[(b"../x", EntryType::Regular, b"")], "would leave the filesystem root"),
            (&[(b"l", EntryType::Link, b"nowhere")], "/l: hard link to /nowhere"),
        ];
        for (entries, expected) in cases {
            let file = write_temp(&canonical_tar(entries).unwrap());
            let error = scan_tar(file.path()).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(error.contains(&file.path().display().to_string()), "{error}");
        }
    }

    #[test]
    fn truncated_tar_is_reported() {
        let tar = canonical_tar(&[(b"big", EntryType::Regular, &[7u8; 5000])]).unwrap();
        let file = write_temp(&tar[..2048]);
        let error = scan_tar(file.path()).unwrap_err().to_string();
        assert!(error.contains("truncated"), "{error}");
    }

    #[test]
    fn names_are_displayed_escaped_on_one_line() {
        let name = EntryPath(vec![b"dir".to_vec(), b"new\nline \xff".to_vec()]);
        assert_eq!(name.to_string(), "/dir/new\\nline \\xff");
        assert_eq!(EntryPath(Vec::new()).to_string(), "/");
    }
}
