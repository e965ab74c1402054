//! Manifests: one JSON object per line for every entry of a tree, in the tree's order, so that
//! two images can be compared entry by entry (`diff` of two manifests, or `icos diff`).
//!
//! Fields, in this order, absent when they do not apply:
//! `path` (absolute, `/` for the root), `path_hex` (all the path's bytes in hex, present only when
//! the path is not UTF-8; `path` then shows each bad byte as U+FFFD), `type` (`dir`, `file`,
//! `hardlink`, `symlink`, `char`, `block`, `fifo`), `mode` (four octal digits), `uid`, `gid`,
//! `mtime` (clamped, as written to the tar), `size` and `sha256` (files), `target` and
//! `target_hex` (symlinks verbatim, hard links as the absolute path of the first name of the
//! inode), `major` and `minor` (devices), `xattrs` (name to hex value).

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::path::hex;
use super::tree::Kind;
use super::write::Emitted;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: String,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// Text for JSON plus the raw bytes in hex when they are not UTF-8, so nothing is lost.
fn lossless(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), Some(hex(bytes))),
    }
}

fn absolute(path: &[u8]) -> Vec<u8> {
    let mut absolute = b"/".to_vec();
    absolute.extend_from_slice(path);
    absolute
}

pub(crate) fn record(entry: &Emitted<'_>) -> ManifestRecord {
    let meta = &entry.inode.meta;
    let (path, path_hex) = lossless(&absolute(entry.path));
    let mut record = ManifestRecord {
        path,
        path_hex,
        kind: String::new(),
        mode: format!("{:04o}", meta.mode),
        uid: meta.uid,
        gid: meta.gid,
        mtime: entry.mtime,
        size: None,
        sha256: None,
        target: None,
        target_hex: None,
        major: None,
        minor: None,
        xattrs: meta.xattrs.iter().map(|(name, value)| (name.clone(), hex(value))).collect(),
    };
    let mut target = |bytes: &[u8]| {
        let (text, raw) = lossless(bytes);
        record.target = Some(text);
        record.target_hex = raw;
    };
    let kind = match (&entry.inode.kind, entry.link) {
        (Kind::Directory, _) => "dir",
        (_, Some(first)) => {
            target(&absolute(first));
            "hardlink"
        }
        (Kind::Symlink(link), None) => {
            target(link);
            "symlink"
        }
        (Kind::File(content), None) => {
            record.size = Some(content.size);
            record.sha256 = Some(hex(&content.sha256));
            "file"
        }
        (Kind::CharDevice { major, minor }, None) | (Kind::BlockDevice { major, minor }, None) => {
            record.major = Some(*major);
            record.minor = Some(*minor);
            if matches!(entry.inode.kind, Kind::CharDevice { .. }) {
                "char"
            } else {
                "block"
            }
        }
        (Kind::Fifo, None) => "fifo",
    };
    record.kind = kind.to_owned();
    record
}

/// Writes `records` as JSON lines.
pub fn write_manifest(records: &[ManifestRecord], out: &mut dyn Write) -> io::Result<()> {
    for record in records {
        serde_json::to_writer(&mut *out, record)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads JSON lines written by [`write_manifest`].
pub fn parse_manifest(text: &str) -> Result<Vec<ManifestRecord>, (usize, serde_json::Error)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(index, line)| serde_json::from_str(line).map_err(|error| (index + 1, error)))
        .collect()
}
