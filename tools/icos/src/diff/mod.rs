//! `icos diff A B`: what differs between two builds of the same artifact, for release engineers
//! whose rebuild does not match the published hashes.
//!
//! A and B are two files or two directories. Directories are compared file by file (same relative
//! name, recursively; symbolic links followed, loops cut); a file on one side only is a difference.
//! Each pair of files is an artifact, and so is everything found inside one: a tar member, a
//! partition of a disk image, the content of a compressed stream.
//!
//! An artifact is recognised by its content, never by its name ([`mod@detect`]): zstd or gzip
//! (read as a stream), a tar (an archive of images, or a root filesystem tar), a GPT disk, ext4,
//! FAT, or plain bytes. Two artifacts with the same bytes are equal without being parsed; the byte comparison
//! reads only the data blocks of sparse files ([`blob`]). Artifacts that differ are taken apart
//! as deep as their kind allows, and the report ([`report`]) names every difference found there:
//! a GPT field or partition entry, a file with what differs about it (content, size, permissions,
//! owner, a time, an xattr, link target, device numbers), a superblock or boot-sector field, and
//! finally the byte ranges that no difference reported explains, with what the structure says is
//! there (for ext4, the owner of each block).
//!
//! Nested images are extracted, sparse, to anonymous files in a private temporary directory
//! (under `TMPDIR`), which is removed when the comparison ends.

pub mod blob;
mod compress;
pub mod detect;
pub mod error;
pub mod escape;
mod ext4;
mod fat;
pub mod gpt;
pub mod report;
mod tar;
pub mod tree;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use error::DiffError;
pub use report::{ArtifactDiff, ByteRange, ByteRanges, Difference, Digest, Report, Side, What};

use blob::{Blob, ByteComparison};
use detect::{detect, Kind, HEAD};
use escape::quote;
use tree::{compare_trees, FileTree, Node, NodeType};

/// Texts up to this size are shown whole when they differ.
const TEXT_LIMIT: u64 = 4096;

/// Compares `a` and `b`: two files or two directories.
pub fn diff(a: &Path, b: &Path) -> Result<Report, DiffError> {
    let metadata_a = fs::metadata(a).map_err(|source| DiffError::Open { path: a.to_owned(), source })?;
    let metadata_b = fs::metadata(b).map_err(|source| DiffError::Open { path: b.to_owned(), source })?;
    let context = Context::new()?;
    let mut report = Report {
        a: a.to_owned(),
        b: b.to_owned(),
        directories: false,
        differences: Vec::new(),
        artifacts: Vec::new(),
        compared: 0,
    };
    match (file_kind(&metadata_a), file_kind(&metadata_b)) {
        ("a directory", "a directory") => {
            report.directories = true;
            compare_directories(&context, a, b, &mut report)?;
        }
        ("a file", "a file") => {
            let blob_a = open_file(a)?;
            let blob_b = open_file(b)?;
            report.compared = 1;
            let name = report::top_name(a, b);
            report.artifacts.extend(compare_blobs(&context, &name, &blob_a, &blob_b)?);
        }
        ("a file" | "a directory", "a file" | "a directory") => {
            return Err(DiffError::Mismatch {
                a: a.to_owned(),
                kind_a: file_kind(&metadata_a),
                b: b.to_owned(),
                kind_b: file_kind(&metadata_b),
            })
        }
        ("a file" | "a directory", kind) => return Err(DiffError::NotComparable { path: b.to_owned(), kind }),
        (kind, _) => return Err(DiffError::NotComparable { path: a.to_owned(), kind }),
    }
    Ok(report)
}

fn file_kind(metadata: &fs::Metadata) -> &'static str {
    if metadata.is_dir() {
        "a directory"
    } else if metadata.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

fn open_file(path: &Path) -> Result<Blob, DiffError> {
    Blob::open(path, path.display().to_string()).map_err(|source| DiffError::Open { path: path.to_owned(), source })
}

/// Where nested artifacts are extracted, and counters for fresh names there.
pub struct Context {
    directory: tempfile::TempDir,
    counter: Cell<u64>,
}

impl Context {
    fn new() -> Result<Context, DiffError> {
        let directory = tempfile::Builder::new()
            .prefix("icos-diff.")
            .tempdir()
            .map_err(|source| DiffError::Temporary { source })?;
        Ok(Context { directory, counter: Cell::new(0) })
    }

    /// A path in the private directory that does not exist yet.
    fn fresh_path(&self) -> PathBuf {
        let number = self.counter.get() + 1;
        self.counter.set(number);
        self.directory.path().join(format!("member-{number}"))
    }

    /// A file without a name, deleted when closed: it needs no cleaning up, even on an error.
    fn anonymous_file(&self) -> Result<File, DiffError> {
        tempfile::tempfile_in(self.directory.path()).map_err(|source| DiffError::Temporary { source })
    }

    /// The entry for an artifact whose bytes are equal but whose description differs (a tar
    /// member's header, a partition's GPT entry): its kinds, no differences yet.
    fn identical_artifact(&self, name: &str, a: &Blob, b: &Blob) -> Result<ArtifactDiff, DiffError> {
        let head_a = a.head(HEAD).map_err(|error| DiffError::read(&a.origin, error))?;
        let head_b = b.head(HEAD).map_err(|error| DiffError::read(&b.origin, error))?;
        Ok(ArtifactDiff::new(name, label(detect(&head_a), a), label(detect(&head_b), b)))
    }
}

/// A kind for people; plain bytes that are all zeros (an empty partition) say so.
fn label(kind: Kind, blob: &Blob) -> &'static str {
    match kind {
        Kind::Opaque if blob.data_extents().is_empty() => "zeros",
        _ => kind.label(),
    }
}

/// Compares two artifacts; `None` when their bytes are equal.
fn compare_blobs(context: &Context, name: &str, a: &Blob, b: &Blob) -> Result<Option<ArtifactDiff>, DiffError> {
    let bytes = blob::compare(a, b).map_err(|(side, error)| match side {
        Side::A => DiffError::read(&a.origin, error),
        Side::B => DiffError::read(&b.origin, error),
    })?;
    if bytes.identical() {
        return Ok(None);
    }
    let head_a = a.head(HEAD).map_err(|error| DiffError::read(&a.origin, error))?;
    let head_b = b.head(HEAD).map_err(|error| DiffError::read(&b.origin, error))?;
    let (kind_a, kind_b) = (detect(&head_a), detect(&head_b));
    if kind_a != kind_b {
        return different_kinds(context, name, (a, kind_a), (b, kind_b)).map(Some);
    }
    let mut diff = match kind_a {
        Kind::Zstd | Kind::Gzip => compress::compare(context, name, a, b, kind_a)?,
        Kind::Xz => {
            return Err(DiffError::Unsupported {
                artifact: a.origin.clone(),
                problem: "is xz-compressed, which icos diff does not read: decompress both sides first".into(),
            })
        }
        Kind::Tar => {
            let side_a = tar::read(&mut BufReader::with_capacity(1 << 20, a.reader()), &a.origin, context)?;
            let side_b = tar::read(&mut BufReader::with_capacity(1 << 20, b.reader()), &b.origin, context)?;
            tar::compare(context, name, side_a, side_b, "", Some((&bytes, a, b)))?
        }
        Kind::Gpt { sector } => gpt::compare(context, name, a, b, sector, &bytes)?,
        Kind::Ext4 => ext4::compare(name, a, b, &bytes)?,
        Kind::Fat => fat::compare(name, a, b, &bytes)?,
        Kind::Empty | Kind::Opaque => opaque(name, a, b, &bytes)?,
    };
    // Whatever the structure says, the bytes differ: never report such a pair as equal.
    if diff.is_empty() {
        diff.differences.push(bytes_difference(&bytes, a, b, |start, end| vec![(start, end, None, false)])?);
    }
    Ok(Some(diff))
}

/// Two artifacts of different kinds. When one or both are compressed, their contents are
/// compared too: `root.tar` and `root.tar.zst` may hold the same tar, and if not, what differs
/// in it is what matters.
fn different_kinds(
    context: &Context,
    name: &str,
    (a, kind_a): (&Blob, Kind),
    (b, kind_b): (&Blob, Kind),
) -> Result<ArtifactDiff, DiffError> {
    let (label_a, label_b) = (label(kind_a, a), label(kind_b, b));
    let mut diff = ArtifactDiff::new(name, label_a, label_b);
    diff.differences.push(Difference::here(What::ArtifactKind { a: label_a.into(), b: label_b.into() }));
    let compressed = |kind: Kind| matches!(kind, Kind::Zstd | Kind::Gzip);
    if !compressed(kind_a) && !compressed(kind_b) {
        if a.length != b.length {
            diff.differences.push(Difference::here(What::Size { a: a.length, b: b.length }));
        }
        return Ok(diff);
    }
    let content = |blob: &Blob, kind: Kind| {
        if compressed(kind) {
            compress::decompress_blob(context, blob, kind)
        } else {
            Ok(blob.clone())
        }
    };
    let (inner_a, inner_b) = (content(a, kind_a)?, content(b, kind_b)?);
    let inner = match compare_blobs(context, name, &inner_a, &inner_b)? {
        Some(inner) => inner,
        None => context.identical_artifact(name, &inner_a, &inner_b)?,
    };
    let prefix = |kind: Kind| if compressed(kind) { format!("{} ", kind.label()) } else { String::new() };
    diff.kind_a = format!("{}{}", prefix(kind_a), inner.kind_a);
    diff.kind_b = format!("{}{}", prefix(kind_b), inner.kind_b);
    if inner.is_empty() {
        let digest = |blob: &Blob| -> Result<String, DiffError> {
            let sha256 = blob.sha256().map_err(|error| DiffError::read(&blob.origin, error))?;
            Ok(format!("{}, sha256 {}", escape::format_size(blob.length), escape::short_hex(&sha256)))
        };
        diff.differences.push(Difference::field(
            "content (identical once decompressed)",
            Some(digest(&inner_a)?),
            Some(digest(&inner_b)?),
        ));
    } else {
        diff.children.extend(inner.children);
        diff.differences.extend(inner.differences);
    }
    Ok(diff)
}

/// Annotated pieces no longer than this are checked against the bytes again (see
/// [`bytes_difference`]).
const REFINED_PIECE: u64 = 64 << 10;

/// The byte ranges of `bytes` (a comparison of `a` and `b`) as a difference; `annotate` cuts each
/// range into pieces with what is there and whether a difference above explains it.
///
/// Ranges merge differing spans up to 4 KiB apart, so a piece cut from one may hold no differing
/// byte at all (the sectors between a boot sector and its backup): small pieces are read again,
/// dropped when equal and cut to their first and last differing byte otherwise.
fn bytes_difference(
    bytes: &ByteComparison,
    a: &Blob,
    b: &Blob,
    mut annotate: impl FnMut(u64, u64) -> Vec<(u64, u64, Option<String>, bool)>,
) -> Result<Difference, DiffError> {
    let mut ranges = Vec::new();
    for &(start, end) in &bytes.ranges.ranges {
        for (offset, stop, region, explained) in annotate(start, end) {
            let piece = if stop - offset <= REFINED_PIECE { refine(a, b, offset, stop)? } else { Some((offset, stop)) };
            if let Some((offset, stop)) = piece {
                ranges.push(ByteRange { offset, length: stop - offset, region, explained });
            }
        }
    }
    Ok(Difference::here(What::Bytes(ByteRanges {
        size_a: bytes.size_a,
        size_b: bytes.size_b,
        differing_bytes: bytes.differing_bytes,
        range_count: bytes.ranges.count,
        ranges,
        note: None,
    })))
}

/// The part of `start..end` from its first to its last differing byte; `None` if none differs.
fn refine(a: &Blob, b: &Blob, start: u64, end: u64) -> Result<Option<(u64, u64)>, DiffError> {
    let length = usize::try_from(end - start).unwrap_or(0);
    let (mut bytes_a, mut bytes_b) = (vec![0u8; length], vec![0u8; length]);
    let read_a = a.read_at(&mut bytes_a, start).map_err(|error| DiffError::read(&a.origin, error))?;
    let read_b = b.read_at(&mut bytes_b, start).map_err(|error| DiffError::read(&b.origin, error))?;
    let common = read_a.min(read_b);
    let differs = |index: &usize| bytes_a[*index] != bytes_b[*index];
    let first = (0..common).find(differs);
    let last = (0..common).rev().find(differs);
    Ok(match (first, last) {
        (Some(first), Some(last)) => Some((start + first as u64, start + last as u64 + 1)),
        _ => None,
    })
}

/// Bytes without a known structure: short texts are shown, anything else by its ranges.
fn opaque(name: &str, a: &Blob, b: &Blob, bytes: &ByteComparison) -> Result<ArtifactDiff, DiffError> {
    let label = |blob: &Blob| if blob.length == 0 { Kind::Empty.label() } else { Kind::Opaque.label() };
    let mut diff = ArtifactDiff::new(name, label(a), label(b));
    if a.length <= TEXT_LIMIT && b.length <= TEXT_LIMIT {
        let text_a = a.head(TEXT_LIMIT as usize).map_err(|error| DiffError::read(&a.origin, error))?;
        let text_b = b.head(TEXT_LIMIT as usize).map_err(|error| DiffError::read(&b.origin, error))?;
        let is_text = |bytes: &[u8]| std::str::from_utf8(bytes).is_ok() && !bytes.contains(&0);
        if is_text(&text_a) && is_text(&text_b) {
            diff.differences.push(Difference::here(What::Text { a: text_a, b: text_b }));
            return Ok(diff);
        }
    }
    diff.differences.push(bytes_difference(bytes, a, b, |start, end| vec![(start, end, None, false)])?);
    Ok(diff)
}

/// Compares two directory trees file by file.
fn compare_directories(context: &Context, a: &Path, b: &Path, report: &mut Report) -> Result<(), DiffError> {
    let files_a = list_files(a)?;
    let files_b = list_files(b)?;
    // Which names exist where and as what, through the tree comparison (types only: contents are
    // compared as artifacts below).
    let as_tree = |files: &BTreeMap<Vec<u8>, bool>| -> FileTree {
        files
            .iter()
            .map(|(path, &is_dir)| {
                (path.clone(), Node::new(if is_dir { NodeType::Directory } else { NodeType::Regular }))
            })
            .collect()
    };
    report.differences = compare_trees(&as_tree(&files_a), &as_tree(&files_b)).differences;
    for (path, &is_dir) in &files_a {
        if is_dir || files_b.get(path) != Some(&false) {
            continue;
        }
        let relative = Path::new(std::ffi::OsStr::from_bytes(path));
        let blob_a = open_file(&a.join(relative))?;
        let blob_b = open_file(&b.join(relative))?;
        report.compared += 1;
        report.artifacts.extend(compare_blobs(context, &quote(path), &blob_a, &blob_b)?);
    }
    Ok(())
}

/// The files and directories below `root` by relative path (bytes), `true` for directories.
/// Symbolic links are followed; a link to a directory that contains it is not entered again.
fn list_files(root: &Path) -> Result<BTreeMap<Vec<u8>, bool>, DiffError> {
    let mut files = BTreeMap::new();
    let mut ancestors = Vec::new();
    walk_directory(root, Vec::new(), &mut ancestors, &mut files)?;
    Ok(files)
}

fn walk_directory(
    directory: &Path,
    relative: Vec<u8>,
    ancestors: &mut Vec<(u64, u64)>,
    files: &mut BTreeMap<Vec<u8>, bool>,
) -> Result<(), DiffError> {
    let open_error = |source: io::Error| DiffError::Open { path: directory.to_owned(), source };
    let metadata = fs::metadata(directory).map_err(open_error)?;
    let identity = (metadata.dev(), metadata.ino());
    if ancestors.contains(&identity) {
        return Ok(());
    }
    ancestors.push(identity);
    let mut entries: Vec<fs::DirEntry> =
        fs::read_dir(directory).map_err(open_error)?.collect::<Result<_, _>>().map_err(open_error)?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let mut name = relative.clone();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(entry.file_name().as_bytes());
        let metadata = fs::metadata(&path).map_err(|source| DiffError::Open { path: path.clone(), source })?;
        if metadata.is_dir() {
            files.insert(name.clone(), true);
            walk_directory(&path, name, ancestors, files)?;
        } else if metadata.is_file() {
            files.insert(name, false);
        } else {
            return Err(DiffError::NotComparable { path, kind: "a special file" });
        }
    }
    ancestors.pop();
    Ok(())
}
