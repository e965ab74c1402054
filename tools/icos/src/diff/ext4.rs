//! ext4 filesystems, read with [`crate::ext4::read`]: every path with its inode's metadata and
//! content digest, the superblock's fields, and for the byte ranges that differ, which block
//! holds what (an inode table, a file's data, unused space), so that each range is either
//! explained by a difference reported above or listed.
//!
//! Inode numbers are compared only when both sides have the same paths: when a file is added,
//! every later inode number moves, and listing them all would bury the one difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::blob::{Blob, BlobReader, ByteComparison};
use super::bytes_difference;
use super::error::DiffError;
use super::escape::quote;
use super::report::{ArtifactDiff, What};
use super::tree::{compare_fields, compare_trees, FileTree, Node, NodeType, Time};
use crate::ext4::read::{BlockOwner, Ext4Entry, Ext4Filesystem, Ext4Time};

/// At most this many differing blocks are attributed to their owners (1 GiB of 4 KiB blocks):
/// the owners of more are not worth the memory when that much differs.
const ATTRIBUTED_BLOCKS: usize = 1 << 18;

/// Compares two ext4 filesystems.
pub fn compare(name: &str, a: &Blob, b: &Blob, bytes: &ByteComparison) -> Result<ArtifactDiff, DiffError> {
    let mut filesystem_a = open(a)?;
    let mut filesystem_b = open(b)?;
    let entries_a = filesystem_a.entries().map_err(|source| ext4_error(a, source))?;
    let entries_b = filesystem_b.entries().map_err(|source| ext4_error(b, source))?;
    let paths_a: BTreeSet<&[u8]> = entries_a.iter().map(|entry| entry.path.as_slice()).collect();
    let paths_b: BTreeSet<&[u8]> = entries_b.iter().map(|entry| entry.path.as_slice()).collect();
    let with_inodes = paths_a == paths_b;
    let tree_a = to_tree(&entries_a, with_inodes);
    let tree_b = to_tree(&entries_b, with_inodes);

    let mut diff = ArtifactDiff::new(name, "ext4", "ext4");
    let comparison = compare_trees(&tree_a, &tree_b);
    // When a file's content changed or a file came or went, mke2fs allocates everything after
    // it differently: other files' data, their extents in the inode tables, directories.
    let allocation_changed = comparison.differences.iter().any(|difference| {
        matches!(difference.what, What::Content { .. } | What::Size { .. } | What::OnlyIn { .. } | What::Type { .. })
    });
    diff.differences.extend(comparison.differences);
    let fields_a = filesystem_a.superblock_fields();
    let fields_b = filesystem_b.superblock_fields();
    diff.differences.extend(compare_fields("superblock ", &fields_a, &fields_b, &["checksum"]));
    let field_differs = |name: &str| {
        let value = |fields: &[(String, String)]| {
            fields.iter().find(|(other, _)| other == name).map(|(_, value)| value.clone())
        };
        value(&fields_a) != value(&fields_b)
    };
    let causes = Causes {
        anything: !diff.is_empty(),
        allocation_changed,
        reseeded: field_differs("uuid") || field_differs("checksum_seed"),
        rehashed: field_differs("hash_seed"),
    };
    let explanation = Explanation::new(&comparison.differing_paths, &entries_a, &entries_b, causes);
    let block_size = filesystem_a.block_size().max(1);
    // A filesystem may be smaller than its partition: what lies after it belongs to no block.
    let block_count = |fields: &[(String, String)]| {
        fields.iter().find(|(name, _)| name == "blocks_count").and_then(|(_, value)| value.parse::<u64>().ok())
    };
    let end_block = block_count(&filesystem_a.superblock_fields())
        .max(block_count(&filesystem_b.superblock_fields()))
        .unwrap_or(u64::MAX);
    let mut blocks = Vec::new();
    for &(start, end) in &bytes.ranges.ranges {
        for block in start / block_size..end.div_ceil(block_size).min(end_block) {
            if blocks.len() >= ATTRIBUTED_BLOCKS {
                break;
            }
            blocks.push(block);
        }
    }
    let owners_a: HashMap<u64, BlockOwner> =
        filesystem_a.block_owners(&blocks).map_err(|source| ext4_error(a, source))?.into_iter().collect();
    let owners_b: HashMap<u64, BlockOwner> =
        filesystem_b.block_owners(&blocks).map_err(|source| ext4_error(b, source))?.into_iter().collect();
    diff.differences.push(bytes_difference(bytes, a, b, |start, end| {
        // Consecutive blocks whose owners are alike (one group's inode table, data of files
        // laid out one after another) make one piece.
        let mut pieces: Vec<(u64, u64, Run, Run, bool)> = Vec::new();
        for block in start / block_size..end.div_ceil(block_size) {
            let piece_start = start.max(block * block_size);
            let piece_end = end.min((block + 1) * block_size);
            let (owner_a, owner_b) = (owners_a.get(&block), owners_b.get(&block));
            let after_end = block >= end_block;
            let explained = match (owner_a, owner_b) {
                _ if after_end => false,
                (Some(owner_a), Some(owner_b)) => explanation.explains(owner_a) || explanation.explains(owner_b),
                _ => explanation.causes.anything,
            };
            let (run_a, run_b) = (Run::of(owner_a, after_end), Run::of(owner_b, after_end));
            if let Some(last) = pieces.last_mut() {
                if last.1 == piece_start
                    && last.4 == explained
                    && last.2.can_absorb(&run_a)
                    && last.3.can_absorb(&run_b)
                {
                    last.2.absorb(run_a);
                    last.3.absorb(run_b);
                    last.1 = piece_end;
                    continue;
                }
            }
            pieces.push((piece_start, piece_end, run_a, run_b, explained));
        }
        pieces
            .into_iter()
            .map(|(start, end, run_a, run_b, explained)| {
                let (text_a, text_b) = (run_a.describe(), run_b.describe());
                let region = if text_a == text_b { text_a } else { format!("A: {text_a}; B: {text_b}") };
                (start, end, Some(region), explained)
            })
            .collect()
    })?);
    let mut notes = Vec::new();
    if causes.allocation_changed {
        notes.push("file contents or the set of files changed, so later blocks may be allocated differently");
    }
    if causes.reseeded {
        notes.push("the UUID or checksum seed changed, and with it every metadata checksum");
    }
    if causes.rehashed {
        notes.push("the directory hash seed changed, and with it every hashed directory");
    }
    if let Some(What::Bytes(ranges)) = diff.differences.last_mut().map(|difference| &mut difference.what) {
        if !notes.is_empty() {
            ranges.note = Some(notes.join("; "));
        }
    }
    Ok(diff)
}

/// What the paths of a run of blocks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Data,
    Directory,
    Attributes,
}

/// Consecutive blocks of one side with owners of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    Single(BlockOwner),
    Bitmaps {
        inode: bool,
        groups: (u32, u32),
    },
    InodeTables {
        groups: (u32, u32),
        inodes: (u32, u32),
    },
    /// Blocks of files or directories: the first and last path and how many paths.
    Paths {
        kind: PathKind,
        first: Vec<u8>,
        last: Vec<u8>,
        count: usize,
    },
    NotAttributed,
    AfterEnd,
}

impl Run {
    fn of(owner: Option<&BlockOwner>, after_end: bool) -> Run {
        let paths =
            |kind: PathKind, path: &[u8]| Run::Paths { kind, first: path.to_vec(), last: path.to_vec(), count: 1 };
        match owner {
            _ if after_end => Run::AfterEnd,
            None => Run::NotAttributed,
            Some(BlockOwner::BlockBitmap { group }) => Run::Bitmaps { inode: false, groups: (*group, *group) },
            Some(BlockOwner::InodeBitmap { group }) => Run::Bitmaps { inode: true, groups: (*group, *group) },
            Some(BlockOwner::InodeTable { group, first_inode, last_inode }) => {
                Run::InodeTables { groups: (*group, *group), inodes: (*first_inode, *last_inode) }
            }
            Some(BlockOwner::FileData { path }) => paths(PathKind::Data, path),
            Some(BlockOwner::Directory { path }) => paths(PathKind::Directory, path),
            Some(BlockOwner::ExtendedAttributes { paths: users }) => {
                paths(PathKind::Attributes, users.first().map_or(&b""[..], Vec::as_slice))
            }
            Some(other) => Run::Single(other.clone()),
        }
    }

    fn can_absorb(&self, next: &Run) -> bool {
        match (self, next) {
            (Run::Bitmaps { inode, .. }, Run::Bitmaps { inode: other, .. }) => inode == other,
            (Run::InodeTables { .. }, Run::InodeTables { .. }) => true,
            (Run::Paths { kind, .. }, Run::Paths { kind: other, .. }) => kind == other,
            (first, second) => first == second,
        }
    }

    fn absorb(&mut self, next: Run) {
        match (self, next) {
            (Run::Bitmaps { groups, .. }, Run::Bitmaps { groups: more, .. }) => {
                *groups = (groups.0.min(more.0), groups.1.max(more.1));
            }
            (Run::InodeTables { groups, inodes }, Run::InodeTables { groups: more_groups, inodes: more_inodes }) => {
                *groups = (groups.0.min(more_groups.0), groups.1.max(more_groups.1));
                *inodes = (inodes.0.min(more_inodes.0), inodes.1.max(more_inodes.1));
            }
            (Run::Paths { last, count, .. }, Run::Paths { first: next, .. }) if *last != next => {
                *count += 1;
                *last = next;
            }
            _ => {}
        }
    }

    fn describe(&self) -> String {
        let groups = |(first, last): (u32, u32), one: &str, many: &str| {
            if first == last {
                format!("{one} {first}")
            } else {
                format!("{many} {first}-{last}")
            }
        };
        match self {
            Run::Single(owner) => describe(owner),
            Run::Bitmaps { inode, groups: range } => {
                let what = if *inode { "inode" } else { "block" };
                groups(*range, &format!("{what} bitmap of group"), &format!("{what} bitmaps of groups"))
            }
            Run::InodeTables { groups: range, inodes } => format!(
                "{} (inodes {}-{})",
                groups(*range, "inode table of group", "inode tables of groups"),
                inodes.0,
                inodes.1
            ),
            Run::Paths { kind, first, last, count } => {
                let (one, many) = match kind {
                    PathKind::Data => ("data of", "files"),
                    PathKind::Directory => ("directory", "directories"),
                    PathKind::Attributes => ("extended attributes of", "files' extended attributes"),
                };
                if *count == 1 {
                    format!("{one} {}", quote(first))
                } else if *kind == PathKind::Data {
                    format!("data of {count} files ({} … {})", quote(first), quote(last))
                } else {
                    format!("{count} {many} ({} … {})", quote(first), quote(last))
                }
            }
            Run::NotAttributed => "not attributed (too many differing blocks)".into(),
            Run::AfterEnd => "after the end of the filesystem".into(),
        }
    }
}

fn open(blob: &Blob) -> Result<Ext4Filesystem<BlobReader>, DiffError> {
    Ext4Filesystem::open(blob.reader(), 0, blob.length).map_err(|source| ext4_error(blob, source))
}

fn ext4_error(blob: &Blob, source: crate::ext4::read::Ext4ReadError) -> DiffError {
    DiffError::Ext4 { artifact: blob.origin.clone(), source }
}

fn time(time: Ext4Time) -> Time {
    Time { seconds: time.seconds, nanoseconds: time.nanoseconds, utc: true }
}

/// The entries as a tree; hard links after the first path of an inode say which path that is.
fn to_tree(entries: &[Ext4Entry], with_inodes: bool) -> FileTree {
    let mut first_path: HashMap<u32, &[u8]> = HashMap::new();
    let mut tree = FileTree::new();
    for entry in entries {
        let mode = u32::from(entry.mode);
        let node_type = NodeType::from_mode(mode);
        let mut node = Node::new(node_type);
        node.permissions = Some(mode & 0o7777);
        node.owner = Some((u64::from(entry.uid), u64::from(entry.gid)));
        node.size = Some(entry.size);
        node.sha256 = entry.sha256;
        node.link_target = entry.symlink_target.clone();
        node.device = entry.device;
        node.times.push(("mtime", time(entry.mtime)));
        node.times.push(("atime", time(entry.atime)));
        node.times.push(("ctime", time(entry.ctime)));
        if let Some(crtime) = entry.crtime {
            node.times.push(("crtime", time(crtime)));
        }
        node.xattrs = entry.xattrs.iter().cloned().collect();
        node.other.push(("inode flags", format!("{:#010x}", entry.flags)));
        node.other.push(("links", entry.links.to_string()));
        if node_type != NodeType::Directory {
            let first = *first_path.entry(entry.inode).or_insert(entry.path.as_slice());
            if first != entry.path.as_slice() {
                node.other.push(("hard link to", quote(first)));
            }
        }
        if with_inodes {
            node.other.push(("inode", entry.inode.to_string()));
        }
        tree.insert(entry.path.clone(), node);
    }
    tree
}

/// What the reported differences account for, to tell explained byte ranges from the rest.
struct Explanation {
    /// Paths with a difference, and their parent directories.
    paths: BTreeSet<Vec<u8>>,
    parents: BTreeSet<Vec<u8>>,
    /// The inode numbers of those paths, on either side.
    inodes: BTreeSet<u32>,
    causes: Causes,
}

/// What changed across the whole filesystem and so touches blocks that no path names.
#[derive(Debug, Clone, Copy, Default)]
struct Causes {
    /// Anything at all was reported: the superblock, group descriptors and bitmaps change with
    /// any allocation.
    anything: bool,
    /// Blocks were allocated differently (see [`compare`]): every block of metadata or content
    /// may have moved.
    allocation_changed: bool,
    /// The UUID or checksum seed differs: so does every metadata checksum (inodes, directory
    /// blocks, bitmaps, the journal superblock's copy of the UUID).
    reseeded: bool,
    /// The directory hash seed differs: so does every hashed directory.
    rehashed: bool,
}

impl Explanation {
    fn new(paths: &BTreeSet<Vec<u8>>, a: &[Ext4Entry], b: &[Ext4Entry], causes: Causes) -> Explanation {
        let mut inodes = BTreeSet::new();
        let by_path = |entries: &[Ext4Entry]| -> BTreeMap<Vec<u8>, u32> {
            entries.iter().map(|entry| (entry.path.clone(), entry.inode)).collect()
        };
        for map in [by_path(a), by_path(b)] {
            inodes.extend(paths.iter().filter_map(|path| map.get(path).copied()));
        }
        let parents = paths
            .iter()
            .filter_map(|path| {
                let slash = path.iter().rposition(|&byte| byte == b'/')?;
                Some(if slash == 0 { b"/".to_vec() } else { path[..slash].to_vec() })
            })
            .collect();
        Explanation { paths: paths.clone(), parents, inodes, causes }
    }

    fn explains(&self, owner: &BlockOwner) -> bool {
        let Causes { anything, allocation_changed: moved, reseeded, rehashed } = self.causes;
        match owner {
            BlockOwner::Superblock
            | BlockOwner::GroupDescriptors
            | BlockOwner::BlockBitmap { .. }
            | BlockOwner::InodeBitmap { .. } => anything,
            BlockOwner::InodeTable { first_inode, last_inode, .. } => {
                moved || reseeded || self.inodes.range(*first_inode..=*last_inode).next().is_some()
            }
            BlockOwner::FileData { path } => moved || self.paths.contains(path),
            BlockOwner::Directory { path } => {
                moved || reseeded || rehashed || self.paths.contains(path) || self.parents.contains(path)
            }
            BlockOwner::ExtendedAttributes { paths } => {
                moved || reseeded || paths.iter().any(|path| self.paths.contains(path))
            }
            BlockOwner::Journal => reseeded,
            BlockOwner::ResizeInode | BlockOwner::Unused | BlockOwner::Unknown => false,
        }
    }
}

/// A block owner for people.
fn describe(owner: &BlockOwner) -> String {
    match owner {
        BlockOwner::Superblock => "superblock".into(),
        BlockOwner::GroupDescriptors => "group descriptors".into(),
        BlockOwner::BlockBitmap { group } => format!("block bitmap of group {group}"),
        BlockOwner::InodeBitmap { group } => format!("inode bitmap of group {group}"),
        BlockOwner::InodeTable { group, first_inode, last_inode } => {
            format!("inode table of group {group} (inodes {first_inode}-{last_inode})")
        }
        BlockOwner::Journal => "journal".into(),
        BlockOwner::FileData { path } => format!("data of {}", quote(path)),
        BlockOwner::Directory { path } => format!("directory {}", quote(path)),
        BlockOwner::ExtendedAttributes { paths } => {
            let names: Vec<String> = paths.iter().take(3).map(|path| quote(path)).collect();
            let more = if paths.len() > 3 { format!(" and {} more", paths.len() - 3) } else { String::new() };
            format!("extended attributes of {}{more}", names.join(", "))
        }
        BlockOwner::ResizeInode => "resize inode".into(),
        BlockOwner::Unused => "unused blocks".into(),
        BlockOwner::Unknown => "allocated, owner unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &[u8], inode: u32, mode: u16) -> Ext4Entry {
        let zero = Ext4Time { seconds: 0, nanoseconds: 0 };
        Ext4Entry {
            path: path.to_vec(),
            inode,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            links: 1,
            flags: 0,
            atime: zero,
            ctime: zero,
            mtime: zero,
            crtime: None,
            device: None,
            symlink_target: None,
            xattrs: Vec::new(),
            sha256: None,
        }
    }

    #[test]
    fn hard_links_name_their_first_path_and_inodes_are_optional() {
        let entries = [entry(b"/", 2, 0o40755), entry(b"/a", 12, 0o100644), entry(b"/b", 12, 0o100644)];
        let tree = to_tree(&entries, false);
        assert!(!tree[&b"/a".to_vec()].other.iter().any(|(name, _)| *name == "hard link to"));
        assert!(tree[&b"/b".to_vec()].other.contains(&("hard link to", "/a".to_owned())));
        assert!(!tree[&b"/b".to_vec()].other.iter().any(|(name, _)| *name == "inode"));
        assert!(to_tree(&entries, true)[&b"/b".to_vec()].other.contains(&("inode", "12".to_owned())));
    }

    #[test]
    fn owners_are_explained_by_the_differences_that_touch_them() {
        let a = [entry(b"/", 2, 0o40755), entry(b"/etc", 12, 0o40755), entry(b"/etc/hostname", 13, 0o100644)];
        let paths: BTreeSet<Vec<u8>> = [b"/etc/hostname".to_vec()].into();
        let causes = Causes { anything: true, ..Causes::default() };
        let explanation = Explanation::new(&paths, &a, &a, causes);
        assert!(explanation.explains(&BlockOwner::FileData { path: b"/etc/hostname".to_vec() }));
        assert!(explanation.explains(&BlockOwner::Directory { path: b"/etc".to_vec() }));
        assert!(!explanation.explains(&BlockOwner::Directory { path: b"/".to_vec() }));
        assert!(explanation.explains(&BlockOwner::InodeTable { group: 0, first_inode: 1, last_inode: 16 }));
        assert!(!explanation.explains(&BlockOwner::InodeTable { group: 1, first_inode: 17, last_inode: 32 }));
        assert!(explanation.explains(&BlockOwner::BlockBitmap { group: 0 }));
        assert!(!explanation.explains(&BlockOwner::Unused));
        assert!(!explanation.explains(&BlockOwner::Journal));
        let nothing = Explanation::new(&BTreeSet::new(), &a, &a, Causes::default());
        assert!(!nothing.explains(&BlockOwner::Superblock));
        let moved = Explanation::new(&paths, &a, &a, Causes { allocation_changed: true, ..causes });
        assert!(moved.explains(&BlockOwner::FileData { path: b"/usr/bin/other".to_vec() }));
        assert!(moved.explains(&BlockOwner::InodeTable { group: 1, first_inode: 17, last_inode: 32 }));
        assert!(!moved.explains(&BlockOwner::Unused));
        assert!(!moved.explains(&BlockOwner::Journal));
        let reseeded = Explanation::new(&BTreeSet::new(), &a, &a, Causes { reseeded: true, ..causes });
        assert!(reseeded.explains(&BlockOwner::Journal));
        assert!(reseeded.explains(&BlockOwner::Directory { path: b"/lost+found".to_vec() }));
        assert!(!reseeded.explains(&BlockOwner::FileData { path: b"/etc/hostname".to_vec() }));
        assert_eq!(
            describe(&BlockOwner::InodeTable { group: 3, first_inode: 24577, last_inode: 32768 }),
            "inode table of group 3 (inodes 24577-32768)"
        );
        assert_eq!(describe(&BlockOwner::FileData { path: b"/usr/bin/foo".to_vec() }), "data of /usr/bin/foo");
    }

    #[test]
    fn runs_merge_alike_owners() {
        let table = |group, first| {
            Run::of(Some(&BlockOwner::InodeTable { group, first_inode: first, last_inode: first + 15 }), false)
        };
        let mut run = table(0, 1);
        assert!(run.can_absorb(&table(0, 17)));
        run.absorb(table(0, 17));
        run.absorb(table(1, 8193));
        assert_eq!(run.describe(), "inode tables of groups 0-1 (inodes 1-8208)");
        let data = |path: &[u8]| Run::of(Some(&BlockOwner::FileData { path: path.to_vec() }), false);
        let mut run = data(b"/a");
        run.absorb(data(b"/a"));
        assert_eq!(run.describe(), "data of /a");
        run.absorb(data(b"/b c"));
        run.absorb(data(b"/d"));
        assert_eq!(run.describe(), "data of 3 files (/a … /d)");
        assert!(!run.can_absorb(&Run::of(Some(&BlockOwner::Directory { path: b"/".to_vec() }), false)));
        assert!(!run.can_absorb(&Run::of(Some(&BlockOwner::Unused), false)));
        assert_eq!(Run::of(Some(&BlockOwner::Unused), true).describe(), "after the end of the filesystem");
    }
}
