//! Tars, read as a stream (they are usually inside zstd): either an archive of images
//! (`update-img.tar.zst`, `disk-img.tar.zst`, a `.tzst`), whose members are compared as nested
//! artifacts, or a root filesystem tar, compared as a file tree.
//!
//! Which one is decided by the members: a tar whose members are all regular or sparse files with
//! plain names (no `/`) is an archive of images; the first member that is anything else (a
//! directory, a link, a nested path) makes it a file tree. Image members are extracted, sparse, to
//! anonymous temporary files as they stream past; file-tree members are only hashed.
//!
//! When neither the members nor the trees differ, the raw headers are compared field by field
//! (ustar layout), then the whole stream: a tar can differ in its encoding alone.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read};

use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::blob::{copy_sparse, Blob, ByteComparison};
use super::error::DiffError;
use super::escape::{escape, format_size, preview, quote, short_hex};
use super::report::{ArtifactDiff, Difference, Side, What};
use super::tree::{compare_fields, compare_trees, FileTree, Node, NodeType, Time};
use super::{bytes_difference, compare_blobs, Context};
use crate::hashing::{HashingReader, StreamDigest};
use crate::rootfs::path::normalize;

/// How many members' raw headers are listed when nothing else explains a difference.
const LISTED_HEADERS: usize = 20;

/// How a tar stream's digest is shown when nothing else explains a difference.
fn describe_stream(stream: &StreamDigest) -> String {
    format!("{}, sha256 {}", format_size(stream.length), short_hex(&stream.sha256))
}

/// One member's metadata as archived, with its PAX records applied.
#[derive(Debug, Clone)]
struct Meta {
    raw_name: Vec<u8>,
    /// Normalized like extraction does: relative, "" for the root.
    path: Vec<u8>,
    entry_type: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Time,
    atime: Option<Time>,
    ctime: Option<Time>,
    user: Vec<u8>,
    group: Vec<u8>,
    link: Option<Vec<u8>>,
    device: (u32, u32),
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    size: u64,
}

impl Meta {
    fn absolute(&self) -> Vec<u8> {
        absolute(&self.path)
    }

    /// Whether this member can be an image in an archive of images.
    fn is_image(&self) -> bool {
        matches!(self.entry_type, EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse)
            && !self.path.is_empty()
            && !self.path.contains(&b'/')
            && !self.raw_name.ends_with(b"/")
    }

    fn type_flag(&self) -> String {
        escape(&[self.entry_type.as_byte()])
    }

    /// Header fields compared between two image members.
    fn header_fields(&self) -> Vec<(String, String)> {
        vec![
            ("type flag".into(), self.type_flag()),
            ("mode".into(), format!("{:04o}", self.mode)),
            ("owner".into(), format!("{}:{}", self.uid, self.gid)),
            ("mtime".into(), self.mtime.to_string()),
            ("user name".into(), quote(&self.user)),
            ("group name".into(), quote(&self.group)),
        ]
    }
}

fn absolute(path: &[u8]) -> Vec<u8> {
    let mut absolute = Vec::with_capacity(path.len() + 1);
    absolute.push(b'/');
    absolute.extend_from_slice(path);
    absolute
}

/// A member's raw header and PAX records, for the last-resort comparison.
#[derive(Debug)]
struct Record {
    path: Vec<u8>,
    header: Vec<u8>,
    pax: Vec<u8>,
}

struct ImageMember {
    meta: Meta,
    blob: Blob,
}

enum Content {
    Images(Vec<ImageMember>),
    Tree(FileTree),
}

/// One side's tar, read.
pub struct TarSide {
    content: Content,
    records: Vec<Record>,
    stream: StreamDigest,
}

impl TarSide {
    pub fn kind(&self) -> &'static str {
        match self.content {
            Content::Images(_) => "tar of images",
            Content::Tree(_) => "rootfs tar",
        }
    }

    pub fn stream(&self) -> StreamDigest {
        self.stream
    }
}

/// Reads the tar stream `reader`; `origin` names it in errors.
pub fn read(reader: &mut dyn Read, origin: &str, context: &Context) -> Result<TarSide, DiffError> {
    let corrupt = |problem: &dyn std::fmt::Display| DiffError::corrupt(origin, "tar", problem);
    let mut hashing = HashingReader::new(reader);
    let mut records = Vec::new();
    let mut images: Option<Vec<ImageMember>> = None;
    let mut tree = FileTree::new();
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries().map_err(|error| corrupt(&error))?;
        for entry in entries {
            let mut entry = entry.map_err(|error| corrupt(&error))?;
            if entry.header().entry_type().is_pax_global_extensions() {
                // Archive-wide defaults (comments, mostly): part of the stream digest only.
                continue;
            }
            let (meta, pax) = parse_entry(&mut entry).map_err(|error| corrupt(&error))?;
            records.push(Record { path: meta.path.clone(), header: entry.header().as_bytes().to_vec(), pax });
            if records.len() == 1 && meta.is_image() {
                images = Some(Vec::new());
            }
            if images.is_some() && !meta.is_image() {
                // Not an archive of images after all: what was extracted becomes files of a tree.
                for member in images.take().unwrap_or_default() {
                    let sha256 = member.blob.sha256().map_err(|error| DiffError::read(&member.blob.origin, error))?;
                    insert(&mut tree, &member.meta, Some(sha256));
                }
            }
            match images.as_mut() {
                Some(images) => {
                    let blob = extract(context, &mut entry, &meta, origin)?;
                    // A later member of the same name replaces the earlier one, as in extraction.
                    images.retain(|member| member.meta.path != meta.path);
                    images.push(ImageMember { meta, blob });
                }
                None => {
                    let sha256 = match meta.entry_type {
                        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                            let member = format!("{origin}: member {}", quote(&meta.raw_name));
                            Some(hash(&mut entry).map_err(|error| DiffError::corrupt(&member, "tar", error))?)
                        }
                        _ => None,
                    };
                    insert(&mut tree, &meta, sha256);
                }
            }
        }
    }
    let stream = hashing.finish().map_err(|error| corrupt(&error))?;
    let content = match images {
        Some(images) => Content::Images(images),
        None => Content::Tree(tree),
    };
    Ok(TarSide { content, records, stream })
}

/// The member's metadata and its PAX records as they were archived.
fn parse_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<(Meta, Vec<u8>)> {
    let raw_name = entry.path_bytes().into_owned();
    let link = entry.link_name_bytes().map(Cow::into_owned);
    let header = entry.header().clone();
    let entry_type = header.entry_type();
    let device = if matches!(entry_type, EntryType::Char | EntryType::Block) {
        (header.device_major()?.unwrap_or(0), header.device_minor()?.unwrap_or(0))
    } else {
        (0, 0)
    };
    let mtime = i64::try_from(header.mtime()?).unwrap_or(i64::MAX);
    let mut meta = Meta {
        path: normalize(&raw_name).unwrap_or_else(|_| raw_name.clone()),
        raw_name,
        entry_type,
        mode: header.mode()? & 0o7777,
        uid: header.uid()?,
        gid: header.gid()?,
        mtime: Time { seconds: mtime, nanoseconds: 0, utc: true },
        atime: None,
        ctime: None,
        user: header.username_bytes().unwrap_or_default().to_vec(),
        group: header.groupname_bytes().unwrap_or_default().to_vec(),
        link,
        device,
        xattrs: BTreeMap::new(),
        size: entry.size(),
    };
    let mut raw = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            let (key, value) = (extension.key_bytes(), extension.value_bytes());
            raw.extend_from_slice(key);
            raw.push(b'=');
            raw.extend_from_slice(value);
            raw.push(b'\n');
            let number = || std::str::from_utf8(value).ok().and_then(|text| text.trim().parse::<u64>().ok());
            match key {
                b"mtime" => meta.mtime = pax_time(value).unwrap_or(meta.mtime),
                b"atime" => meta.atime = pax_time(value),
                b"ctime" => meta.ctime = pax_time(value),
                b"uid" => meta.uid = number().unwrap_or(meta.uid),
                b"gid" => meta.gid = number().unwrap_or(meta.gid),
                b"uname" => meta.user = value.to_vec(),
                b"gname" => meta.group = value.to_vec(),
                _ => {
                    let name = key.strip_prefix(b"SCHILY.xattr.").or_else(|| key.strip_prefix(b"LIBARCHIVE.xattr."));
                    if let Some(name) = name {
                        meta.xattrs.insert(name.to_vec(), value.to_vec());
                    }
                }
            }
        }
    }
    Ok((meta, raw))
}

/// A PAX time: decimal seconds, maybe negative, maybe with a fraction.
fn pax_time(value: &[u8]) -> Option<Time> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let whole: i64 = whole.parse().ok()?;
    let digits: String = fraction.chars().take(9).collect();
    if !digits.chars().all(|digit| digit.is_ascii_digit()) {
        return None;
    }
    let nanoseconds: u32 = if digits.is_empty() { 0 } else { format!("{digits:0<9}").parse().ok()? };
    let (seconds, nanoseconds) = match (negative, nanoseconds) {
        (false, _) => (whole, nanoseconds),
        (true, 0) => (-whole, 0),
        // -1.25 is 1.25 s before the epoch: second -2 plus 0.75 s.
        (true, _) => (-whole - 1, 1_000_000_000 - nanoseconds),
    };
    Some(Time { seconds, nanoseconds, utc: true })
}

fn hash(reader: &mut dyn Read) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => hasher.update(&buffer[..count]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(hasher.finalize().into())
}

/// Puts a member into the tree as extracting it would: a hard link takes its target's node.
fn insert(tree: &mut FileTree, meta: &Meta, sha256: Option<[u8; 32]>) {
    let path = meta.absolute();
    if meta.entry_type == EntryType::Link {
        let target = meta.link.as_deref().unwrap_or_default();
        let target = absolute(&normalize(target).unwrap_or_else(|_| target.to_vec()));
        let mut node = tree.get(&target).cloned().unwrap_or_else(|| Node::new(NodeType::Regular));
        node.other.retain(|(name, _)| *name != "hard link to");
        node.other.push(("hard link to", quote(&target)));
        tree.insert(path, node);
        return;
    }
    let node_type = match meta.entry_type {
        EntryType::Regular if meta.raw_name.ends_with(b"/") => NodeType::Directory,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => NodeType::Regular,
        EntryType::Directory => NodeType::Directory,
        EntryType::Symlink => NodeType::Symlink,
        EntryType::Char => NodeType::CharDevice,
        EntryType::Block => NodeType::BlockDevice,
        EntryType::Fifo => NodeType::Fifo,
        other => NodeType::Other(u32::from(other.as_byte())),
    };
    let mut node = Node::new(node_type);
    node.permissions = Some(meta.mode);
    node.owner = Some((meta.uid, meta.gid));
    match node_type {
        NodeType::Regular => {
            node.size = Some(meta.size);
            node.sha256 = sha256;
        }
        NodeType::Symlink => node.link_target = Some(meta.link.clone().unwrap_or_default()),
        NodeType::CharDevice | NodeType::BlockDevice => node.device = Some(meta.device),
        _ => {}
    }
    node.times.push(("mtime", meta.mtime));
    if let Some(atime) = meta.atime {
        node.times.push(("atime", atime));
    }
    if let Some(ctime) = meta.ctime {
        node.times.push(("ctime", ctime));
    }
    node.xattrs = meta.xattrs.clone();
    node.other.push(("tar type flag", meta.type_flag()));
    if !meta.user.is_empty() {
        node.other.push(("user name", quote(&meta.user)));
    }
    if !meta.group.is_empty() {
        node.other.push(("group name", quote(&meta.group)));
    }
    tree.insert(path, node);
}

/// Extracts an image member to an anonymous temporary file, holes kept as holes.
fn extract<R: Read>(
    context: &Context,
    entry: &mut tar::Entry<'_, R>,
    meta: &Meta,
    origin: &str,
) -> Result<Blob, DiffError> {
    let member = format!("{origin}: member {}", quote(&meta.path));
    let corrupt = |error: io::Error| DiffError::corrupt(&member, "tar member", error);
    let file = if meta.entry_type == EntryType::GNUSparse {
        // The tar crate seeks over the holes of a sparse member when it writes the file itself;
        // reading the member would produce every zero of it. It needs a path, which is removed
        // as soon as the file is open.
        let path = context.fresh_path();
        entry.unpack(&path).map_err(corrupt)?;
        let file = File::open(&path).map_err(|source| DiffError::Temporary { source })?;
        fs::remove_file(&path).map_err(|source| DiffError::Temporary { source })?;
        file
    } else {
        let file = context.anonymous_file()?;
        copy_sparse(entry, &file).map_err(|error| match error.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::Other => corrupt(error),
            _ => DiffError::Temporary { source: error },
        })?;
        file
    };
    Blob::from_file(file, member.clone()).map_err(|source| DiffError::Temporary { source })
}

/// Compares two tars read by [`read`]. `prefix` qualifies the kinds ("zstd-compressed ");
/// `bytes` is the byte comparison, with the two sides, when the tars are files themselves (not
/// inside a stream).
/// Returns an empty diff when nothing, not even the stream, differs.
pub fn compare(
    context: &Context,
    name: &str,
    a: TarSide,
    b: TarSide,
    prefix: &str,
    bytes: Option<(&ByteComparison, &Blob, &Blob)>,
) -> Result<ArtifactDiff, DiffError> {
    let mut diff = ArtifactDiff::new(name, &format!("{prefix}{}", a.kind()), &format!("{prefix}{}", b.kind()));
    match (&a.content, &b.content) {
        (Content::Images(members_a), Content::Images(members_b)) => {
            compare_images(context, members_a, members_b, &mut diff)?;
        }
        (Content::Tree(tree_a), Content::Tree(tree_b)) => {
            diff.differences.extend(compare_trees(tree_a, tree_b).differences);
        }
        _ => {
            diff.differences.push(Difference::here(What::ArtifactKind { a: a.kind().into(), b: b.kind().into() }));
            return Ok(diff);
        }
    }
    let display = |path: &[u8]| match &a.content {
        Content::Images(_) => quote(path),
        Content::Tree(_) => quote(&absolute(path)),
    };
    let order_a: Vec<&[u8]> = a.records.iter().map(|record| record.path.as_slice()).collect();
    let order_b: Vec<&[u8]> = b.records.iter().map(|record| record.path.as_slice()).collect();
    if let Some(difference) = order_difference(&order_a, &order_b, display) {
        diff.differences.push(difference);
    }
    if diff.is_empty() {
        diff.differences.extend(header_differences(&a.records, &b.records, display));
    }
    if diff.is_empty() && a.stream != b.stream {
        diff.differences.push(Difference::field(
            "tar stream (no member or header explains it: padding or trailing blocks)",
            Some(describe_stream(&a.stream)),
            Some(describe_stream(&b.stream)),
        ));
        if let Some((bytes, blob_a, blob_b)) = bytes {
            diff.differences
                .push(bytes_difference(bytes, blob_a, blob_b, |start, end| vec![(start, end, None, false)])?);
        }
    }
    Ok(diff)
}

fn compare_images(
    context: &Context,
    members_a: &[ImageMember],
    members_b: &[ImageMember],
    diff: &mut ArtifactDiff,
) -> Result<(), DiffError> {
    for member_a in members_a {
        let name = quote(&member_a.meta.path);
        let Some(member_b) = members_b.iter().find(|member| member.meta.path == member_a.meta.path) else {
            diff.differences.push(Difference::here(What::OnlyIn {
                side: Side::A,
                item: Some(format!("member {name}")),
                description: format_size(member_a.blob.length),
            }));
            continue;
        };
        let headers =
            compare_fields("tar header ", &member_a.meta.header_fields(), &member_b.meta.header_fields(), &[]);
        let child = compare_blobs(context, &name, &member_a.blob, &member_b.blob)?;
        if child.is_none() && headers.is_empty() {
            continue;
        }
        let mut child = match child {
            Some(child) => child,
            None => context.identical_artifact(&name, &member_a.blob, &member_b.blob)?,
        };
        child.differences.splice(0..0, headers);
        diff.children.push(child);
    }
    for member_b in members_b {
        if !members_a.iter().any(|member| member.meta.path == member_b.meta.path) {
            diff.differences.push(Difference::here(What::OnlyIn {
                side: Side::B,
                item: Some(format!("member {}", quote(&member_b.meta.path))),
                description: format_size(member_b.blob.length),
            }));
        }
    }
    Ok(())
}

/// The members present on both sides, in archive order: a difference when the orders differ (or
/// one side repeats a member).
fn order_difference(a: &[&[u8]], b: &[&[u8]], display: impl Fn(&[u8]) -> String) -> Option<Difference> {
    let in_a: BTreeSet<&[u8]> = a.iter().copied().collect();
    let in_b: BTreeSet<&[u8]> = b.iter().copied().collect();
    let common_a: Vec<&[u8]> = a.iter().copied().filter(|path| in_b.contains(path)).collect();
    let common_b: Vec<&[u8]> = b.iter().copied().filter(|path| in_a.contains(path)).collect();
    if common_a == common_b {
        return None;
    }
    let index = common_a.iter().zip(&common_b).position(|(x, y)| x != y).unwrap_or(common_a.len().min(common_b.len()));
    let at = |common: &[&[u8]]| {
        Some(match common.get(index) {
            Some(path) => format!("{} at position {}", display(path), index + 1),
            None => format!("nothing at position {}", index + 1),
        })
    };
    Some(Difference::field("member order (of the members on both sides)", at(&common_a), at(&common_b)))
}

/// The ustar header layout, for naming the raw fields that differ.
const HEADER_FIELDS: [(&str, usize, usize); 17] = [
    ("name", 0, 100),
    ("mode", 100, 108),
    ("uid", 108, 116),
    ("gid", 116, 124),
    ("size", 124, 136),
    ("mtime", 136, 148),
    ("checksum", 148, 156),
    ("type flag", 156, 157),
    ("link name", 157, 257),
    ("magic", 257, 263),
    ("version", 263, 265),
    ("user name", 265, 297),
    ("group name", 297, 329),
    ("device major", 329, 337),
    ("device minor", 337, 345),
    ("prefix (GNU: times and sparse map)", 345, 500),
    ("padding", 500, 512),
];

/// The raw header fields and PAX records that differ between members at the same position, when
/// nothing decoded differs: number encodings, format magic, padding.
fn header_differences(a: &[Record], b: &[Record], display: impl Fn(&[u8]) -> String) -> Vec<Difference> {
    let mut differences = Vec::new();
    let mut members = 0;
    for (record_a, record_b) in a.iter().zip(b) {
        if record_a.header == record_b.header && record_a.pax == record_b.pax {
            continue;
        }
        members += 1;
        if members > LISTED_HEADERS {
            break;
        }
        let subject = display(&record_a.path);
        let mut fields = Vec::new();
        for (field, start, end) in HEADER_FIELDS {
            let (value_a, value_b) = (&record_a.header[start..end], &record_b.header[start..end]);
            if value_a != value_b {
                fields.push(Difference::field(
                    format!("{subject}: tar header {field}"),
                    Some(preview(trim_nul(value_a), 60)),
                    Some(preview(trim_nul(value_b), 60)),
                ));
            }
        }
        // The checksum follows from the other fields.
        if fields.len() > 1 {
            fields.retain(|difference| !difference.field_name().is_some_and(|name| name.ends_with("checksum")));
        }
        if record_a.pax != record_b.pax {
            fields.push(Difference::field(
                format!("{subject}: PAX records"),
                Some(preview(&record_a.pax, 120)),
                Some(preview(&record_b.pax, 120)),
            ));
        }
        differences.extend(fields);
    }
    differences
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&byte| byte != 0).map_or(0, |last| last + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_fractions_and_negatives() {
        assert_eq!(pax_time(b"1700000000"), Some(Time { seconds: 1_700_000_000, nanoseconds: 0, utc: true }));
        assert_eq!(pax_time(b"1.5"), Some(Time { seconds: 1, nanoseconds: 500_000_000, utc: true }));
        assert_eq!(pax_time(b"-1.25"), Some(Time { seconds: -2, nanoseconds: 750_000_000, utc: true }));
        assert_eq!(pax_time(b"x"), None);
    }

    #[test]
    fn order_differences_ignore_members_on_one_side() {
        let display = |path: &[u8]| quote(path);
        assert_eq!(order_difference(&[b"a", b"b", b"c"], &[b"a", b"c"], display), None);
        let difference = order_difference(&[b"a", b"b"], &[b"b", b"a"], display).unwrap();
        assert_eq!(
            difference,
            Difference::field(
                "member order (of the members on both sides)",
                Some("a at position 1".into()),
                Some("b at position 1".into())
            )
        );
    }

    #[test]
    fn header_fields_are_named() {
        let mut header = tar::Header::new_ustar();
        header.set_path("x").unwrap();
        header.set_cksum();
        let mut gnu = tar::Header::new_gnu();
        gnu.set_path("x").unwrap();
        gnu.set_cksum();
        let record =
            |header: &tar::Header| Record { path: b"x".to_vec(), header: header.as_bytes().to_vec(), pax: Vec::new() };
        let differences = header_differences(&[record(&header)], &[record(&gnu)], quote);
        let names: Vec<String> = differences
            .iter()
            .map(|difference| match &difference.what {
                What::Field { name, .. } => name.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["x: tar header magic", "x: tar header version"]);
    }
}
