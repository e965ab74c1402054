//! Reading one tar stream (a `podman export` tar or one OCI layer) into the [`Tree`]: names are
//! normalized, hard links resolved to the inode they name, OCI whiteouts applied, contents hashed
//! and either left in place in the input or spooled.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::Path;

use tar::EntryType;

use super::path::{display, normalize, quote, split_parent};
use super::store::Store;
use super::tree::{Inode, Kind, Metadata, Tree, TreeProblem};
use super::RootfsError;

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT: &[u8] = b".wh.";

/// Why one archive member cannot be taken into the image.
#[derive(Debug, thiserror::Error)]
pub enum EntryProblem {
    #[error("its path has a '..' component, which could escape the root")]
    Escapes,
    #[error("its hard-link target {0} has a '..' component, which could escape the root")]
    LinkEscapes(String),
    #[error("it is a hard link to {0}, which does not exist earlier in the archive")]
    LinkTargetMissing(String),
    #[error("it is a hard link to the directory {0}")]
    LinkToDirectory(String),
    #[error("it is a link without a target")]
    MissingLinkTarget,
    #[error("unsupported tar entry type {0:?}")]
    Unsupported(char),
    #[error("PAX sparse files (GNU.sparse.* records) are not supported")]
    PaxSparse,
    #[error("bad header: {0}")]
    Header(String),
    #[error("cannot read its content: {0}")]
    Content(io::Error),
    #[error(transparent)]
    Tree(#[from] TreeProblem),
}

/// One tar stream to read and how.
pub(crate) struct Layer<'a> {
    /// The input file, for messages.
    pub input: &'a Path,
    /// Where in the input file this stream is, when it is stored there uncompressed: contents then
    /// stay in place and are read back by offset instead of being spooled.
    pub base: Option<u64>,
    /// Whether `.wh.` names are OCI whiteouts (layers) or ordinary names (plain tars).
    pub whiteouts: bool,
    /// Describes the stream in messages, e.g. "layer 2 (sha256:...)".
    pub label: String,
}

enum Op {
    Put { path: Vec<u8>, id: usize },
    Whiteout(Vec<u8>),
    Opaque(Vec<u8>),
}

/// Counts the bytes read and notes whether the stream ended, so that a tar that stops without its
/// end-of-archive blocks (cut off exactly at a member boundary) is told from a complete one.
struct Counting<'a> {
    inner: &'a mut dyn Read,
    count: u64,
    eof: bool,
}

impl Read for Counting<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buffer)?;
        if count == 0 && !buffer.is_empty() {
            self.eof = true;
        }
        self.count += count as u64;
        Ok(count)
    }
}

/// Reads the tar `stream` into `tree`, as extracting it over the tree would.
pub(crate) fn read_tar(
    tree: &mut Tree,
    store: &mut Store,
    stream: &mut dyn Read,
    layer: &Layer<'_>,
) -> Result<(), RootfsError> {
    let mut counting = Counting { inner: stream, count: 0, eof: false };
    let mut ops = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut counting);
        let mut local: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut offset = 0;
        let entries = archive.entries().map_err(|error| corrupt(layer, 0, &error))?;
        for entry in entries {
            let mut entry = entry.map_err(|error| corrupt(layer, offset, &error))?;
            offset = entry.raw_header_position();
            if let Some(op) = read_entry(tree, store, &mut local, &mut entry, layer)? {
                ops.push(op);
            }
        }
    }
    if counting.eof {
        return Err(RootfsError::Corrupt {
            path: layer.input.to_owned(),
            location: format!("{}at byte {}", layer_prefix(layer), counting.count),
            detail: "the archive is truncated: it ends without the end-of-archive blocks".into(),
        });
    }
    // Whiteouts hide what lower layers had; they never touch this layer's own members.
    for op in &ops {
        match op {
            Op::Opaque(dir) => tree.remove_descendants(dir),
            Op::Whiteout(path) => tree.remove(path),
            Op::Put { .. } => {}
        }
    }
    for op in ops {
        if let Op::Put { path, id } = op {
            let entry = display(&path);
            tree.insert(path, id).map_err(|problem| RootfsError::Entry {
                path: layer.input.to_owned(),
                entry: format!("{}{entry}", layer_prefix(layer)),
                problem: problem.into(),
            })?;
        }
    }
    Ok(())
}

fn layer_prefix(layer: &Layer<'_>) -> String {
    if layer.label.is_empty() {
        String::new()
    } else {
        format!("{}, ", layer.label)
    }
}

fn corrupt(layer: &Layer<'_>, offset: u64, error: &io::Error) -> RootfsError {
    RootfsError::Corrupt {
        path: layer.input.to_owned(),
        location: format!("{}after byte {offset}", layer_prefix(layer)),
        detail: error.to_string(),
    }
}

fn read_entry(
    tree: &mut Tree,
    store: &mut Store,
    local: &mut HashMap<Vec<u8>, usize>,
    entry: &mut tar::Entry<'_, &mut Counting<'_>>,
    layer: &Layer<'_>,
) -> Result<Option<Op>, RootfsError> {
    let raw_name = entry.path_bytes().into_owned();
    let fail = |problem: EntryProblem| RootfsError::Entry {
        path: layer.input.to_owned(),
        entry: format!("{}{}", layer_prefix(layer), quote(&raw_name)),
        problem,
    };
    let header = entry.header().clone();
    let entry_type = header.entry_type();
    if entry_type.is_pax_global_extensions() {
        // Global records carry archive-wide defaults such as comments; none of them is metadata
        // that a canonical tree keeps.
        return Ok(None);
    }
    let path = normalize(&raw_name).map_err(|_| fail(EntryProblem::Escapes))?;
    let bad_header = |error: io::Error| fail(EntryProblem::Header(error.to_string()));
    let mode = header.mode().map_err(bad_header)?;
    if mode & S_IFMT == S_IFSOCK {
        // Sockets are created by running programs; an image cannot usefully hold one.
        return Ok(None);
    }
    if layer.whiteouts {
        let (parent, name) = split_parent(&path);
        if name == OPAQUE {
            return Ok(Some(Op::Opaque(parent.to_vec())));
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            if hidden.starts_with(WHITEOUT) {
                // Other `.wh..wh.` names are AUFS bookkeeping, not part of the tree.
                return Ok(None);
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(fail(EntryProblem::Escapes));
            }
            let mut target = parent.to_vec();
            if !target.is_empty() {
                target.push(b'/');
            }
            target.extend_from_slice(hidden);
            return Ok(Some(Op::Whiteout(target)));
        }
    }
    let mut xattrs = BTreeMap::new();
    if let Some(extensions) = entry.pax_extensions().map_err(bad_header)? {
        for extension in extensions {
            let extension = extension.map_err(bad_header)?;
            let key = extension.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                let name = String::from_utf8(name.to_vec())
                    .map_err(|_| fail(EntryProblem::Header("an xattr name is not UTF-8".into())))?;
                xattrs.insert(name, extension.value_bytes().to_vec());
            } else if key.starts_with(b"GNU.sparse.") {
                return Err(fail(EntryProblem::PaxSparse));
            }
        }
    }
    let meta = Metadata {
        mode: mode & 0o7777,
        uid: header.uid().map_err(bad_header)?,
        gid: header.gid().map_err(bad_header)?,
        mtime: header.mtime().map_err(bad_header)?,
        xattrs,
    };
    let link_name = entry.link_name_bytes().map(|name| name.into_owned());
    let device = || -> Result<(u32, u32), RootfsError> {
        let major = header.device_major().map_err(bad_header)?.unwrap_or(0);
        let minor = header.device_minor().map_err(bad_header)?.unwrap_or(0);
        Ok((major, minor))
    };
    let kind = match entry_type {
        EntryType::Link => {
            let target = link_name.ok_or_else(|| fail(EntryProblem::MissingLinkTarget))?;
            let target = normalize(&target).map_err(|_| fail(EntryProblem::LinkEscapes(quote(&target))))?;
            let id = local
                .get(&target)
                .copied()
                .or_else(|| tree.lookup(&target))
                .ok_or_else(|| fail(EntryProblem::LinkTargetMissing(display(&target))))?;
            if tree.inode(id).is_dir() {
                return Err(fail(EntryProblem::LinkToDirectory(display(&target))));
            }
            local.insert(path.clone(), id);
            return Ok(Some(Op::Put { path, id }));
        }
        // Old tars mark directories by a trailing slash on a regular member.
        EntryType::Regular if raw_name.ends_with(b"/") => Kind::Directory,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            let in_place = match layer.base {
                Some(base) if !entry_type.is_gnu_sparse() => Some(base + entry.raw_file_position()),
                _ => None,
            };
            let size = entry.size();
            let content = match in_place {
                Some(offset) => Store::hash_in_place(entry, offset, size),
                None => store.spool(entry),
            };
            Kind::File(content.map_err(|error| fail(EntryProblem::Content(error)))?)
        }
        EntryType::Symlink => Kind::Symlink(link_name.ok_or_else(|| fail(EntryProblem::MissingLinkTarget))?),
        EntryType::Directory => Kind::Directory,
        EntryType::Char => {
            let (major, minor) = device()?;
            Kind::CharDevice { major, minor }
        }
        EntryType::Block => {
            let (major, minor) = device()?;
            Kind::BlockDevice { major, minor }
        }
        EntryType::Fifo => Kind::Fifo,
        other => return Err(fail(EntryProblem::Unsupported(char::from(other.as_byte())))),
    };
    let id = tree.add_inode(Inode { kind, meta });
    local.insert(path.clone(), id);
    Ok(Some(Op::Put { path, id }))
}
