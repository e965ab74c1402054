//! One model for the files of a rootfs tar, an ext4 filesystem and a FAT filesystem, and one
//! comparison of two such trees. Paths are absolute raw bytes (`/`, `/etc/hostname`); every
//! attribute is optional, since not every format has it (FAT has no owners, tar no atime unless
//! PAX carries one), and an attribute that only one side has is a difference too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::escape::{format_time, quote};
use super::report::{Difference, Digest, Side, What};

/// A timestamp: seconds and nanoseconds since 1970; `utc` false for FAT's zone-less local times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub seconds: i64,
    pub nanoseconds: u32,
    pub utc: bool,
}

impl fmt::Display for Time {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&format_time(self.seconds, self.nanoseconds, self.utc))
    }
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    Directory,
    Regular,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    /// Anything else, by a format-specific code (a tar type flag, an inode's file type bits).
    Other(u32),
}

impl NodeType {
    /// From the file type bits of a Unix mode (`S_IFMT`).
    pub fn from_mode(mode: u32) -> NodeType {
        match mode & 0o170000 {
            0o040000 => NodeType::Directory,
            0o100000 => NodeType::Regular,
            0o120000 => NodeType::Symlink,
            0o020000 => NodeType::CharDevice,
            0o060000 => NodeType::BlockDevice,
            0o010000 => NodeType::Fifo,
            0o140000 => NodeType::Socket,
            other => NodeType::Other(other),
        }
    }

    pub fn name(self) -> String {
        match self {
            NodeType::Directory => "directory".into(),
            NodeType::Regular => "regular file".into(),
            NodeType::Symlink => "symbolic link".into(),
            NodeType::CharDevice => "character device".into(),
            NodeType::BlockDevice => "block device".into(),
            NodeType::Fifo => "FIFO".into(),
            NodeType::Socket => "socket".into(),
            NodeType::Other(code) => format!("unknown type {code:#o}"),
        }
    }
}

/// One path's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node_type: NodeType,
    /// Permission bits with setuid, setgid and sticky (`0o7777` at most).
    pub permissions: Option<u32>,
    /// (uid, gid)
    pub owner: Option<(u64, u64)>,
    pub size: Option<u64>,
    pub sha256: Option<[u8; 32]>,
    pub link_target: Option<Vec<u8>>,
    pub device: Option<(u32, u32)>,
    /// By name, in the format's order: mtime, atime, ctime, crtime for ext4; modified, created,
    /// accessed for FAT; mtime (and PAX atime, ctime) for tar.
    pub times: Vec<(&'static str, Time)>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Format-specific attributes by name (FAT attributes, inode flags, links, tar user name,
    /// "hard link to"), compared as text.
    pub other: Vec<(&'static str, String)>,
}

impl Node {
    pub fn new(node_type: NodeType) -> Node {
        Node {
            node_type,
            permissions: None,
            owner: None,
            size: None,
            sha256: None,
            link_target: None,
            device: None,
            times: Vec::new(),
            xattrs: BTreeMap::new(),
            other: Vec::new(),
        }
    }

    /// What it is, for "only in A (...)".
    pub fn describe(&self) -> String {
        match (self.node_type, self.size, &self.link_target) {
            (NodeType::Regular, Some(size), _) => format!("regular file, {size} bytes"),
            (NodeType::Symlink, _, Some(target)) => format!("symbolic link to {}", quote(target)),
            (kind, _, _) => kind.name(),
        }
    }
}

/// Paths to nodes, sorted by bytes.
pub type FileTree = BTreeMap<Vec<u8>, Node>;

/// What [`compare_trees`] found, with what the byte-range annotation needs to know.
#[derive(Debug, Default)]
pub struct TreeComparison {
    pub differences: Vec<Difference>,
    /// Every path with a difference (a path only on one side included).
    pub differing_paths: BTreeSet<Vec<u8>>,
}

/// Compares two trees path by path, in byte order. A directory on one side only is reported once
/// with the number of entries below it, not entry by entry.
pub fn compare_trees(a: &FileTree, b: &FileTree) -> TreeComparison {
    let mut result = TreeComparison::default();
    let side_of = |path: &[u8]| match (a.contains_key(path), b.contains_key(path)) {
        (true, false) => Some(Side::A),
        (false, true) => Some(Side::B),
        _ => None,
    };
    // A path on one side only is counted into its topmost ancestor that is on that side only
    // (ancestors on neither side, as in a tar without directory entries, are looked through).
    let top_of = |path: &[u8], side: Side| -> Option<Vec<u8>> {
        let mut top = None;
        let mut current = path;
        while let Some(ancestor) = parent(current) {
            match side_of(ancestor) {
                Some(other) if other != side => break,
                Some(_) => top = Some(ancestor.to_vec()),
                None if a.contains_key(ancestor) => break,
                None => {}
            }
            current = ancestor;
        }
        top
    };
    let mut below: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for path in a.keys().chain(b.keys()) {
        let Some(side) = side_of(path) else { continue };
        if let Some(top) = top_of(path, side) {
            *below.entry(top).or_default() += 1;
        }
    }
    let paths: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    for path in paths {
        match (a.get(path), b.get(path)) {
            (Some(node_a), Some(node_b)) => {
                let before = result.differences.len();
                compare_nodes(path, node_a, node_b, &mut result.differences);
                if result.differences.len() > before {
                    result.differing_paths.insert(path.clone());
                }
            }
            (Some(node), None) | (None, Some(node)) => {
                result.differing_paths.insert(path.clone());
                let side = if a.contains_key(path) { Side::A } else { Side::B };
                if top_of(path, side).is_some() {
                    continue;
                }
                let description = match below.get(path) {
                    Some(count) => format!("{} with {count} entries below it", node.describe()),
                    None => node.describe(),
                };
                result.differences.push(Difference::at(path, What::OnlyIn { side, item: None, description }));
            }
            (None, None) => {}
        }
    }
    result
}

/// The directory holding `path`; `None` for the root.
fn parent(path: &[u8]) -> Option<&[u8]> {
    let slash = path.iter().rposition(|&byte| byte == b'/')?;
    if path.len() <= 1 {
        None
    } else if slash == 0 {
        Some(b"/")
    } else {
        Some(&path[..slash])
    }
}

/// Whether `path` is strictly below the directory `directory`.
pub fn is_below(path: &[u8], directory: &[u8]) -> bool {
    if directory == b"/" {
        return path.len() > 1 && path.starts_with(b"/");
    }
    path.len() > directory.len() + 1 && path.starts_with(directory) && path[directory.len()] == b'/'
}

/// The differences of one path present on both sides.
fn compare_nodes(path: &[u8], a: &Node, b: &Node, out: &mut Vec<Difference>) {
    let mut push = |what: What| out.push(Difference::at(path, what));
    if a.node_type != b.node_type {
        // Everything else follows from the type; listing it would only add noise.
        push(What::Type { a: a.describe(), b: b.describe() });
        return;
    }
    match a.node_type {
        NodeType::Regular => {
            let sizes_differ = a.size != b.size;
            let digests_differ = a.sha256.is_some() && b.sha256.is_some() && a.sha256 != b.sha256;
            if sizes_differ || digests_differ {
                push(What::Content {
                    a: Digest { sha256: a.sha256, size: a.size.unwrap_or(0) },
                    b: Digest { sha256: b.sha256, size: b.size.unwrap_or(0) },
                });
            }
        }
        // A symlink's size is its target's length: the target difference says it all.
        NodeType::Symlink => {}
        _ => {
            if let (Some(size_a), Some(size_b)) = (a.size, b.size) {
                if size_a != size_b {
                    push(What::Size { a: size_a, b: size_b });
                }
            }
        }
    }
    if a.link_target != b.link_target {
        push(What::LinkTarget {
            a: a.link_target.clone().unwrap_or_default(),
            b: b.link_target.clone().unwrap_or_default(),
        });
    }
    if a.device != b.device {
        push(What::Device { a: a.device.unwrap_or((0, 0)), b: b.device.unwrap_or((0, 0)) });
    }
    if a.permissions != b.permissions {
        match (a.permissions, b.permissions) {
            (Some(mode_a), Some(mode_b)) => push(What::Permissions { a: mode_a, b: mode_b }),
            (mode_a, mode_b) => push(What::Field {
                name: "permissions".into(),
                a: mode_a.map(|mode| format!("{mode:04o}")),
                b: mode_b.map(|mode| format!("{mode:04o}")),
            }),
        }
    }
    if a.owner != b.owner {
        match (a.owner, b.owner) {
            (Some(owner_a), Some(owner_b)) => push(What::Owner { a: owner_a, b: owner_b }),
            (owner_a, owner_b) => push(What::Field {
                name: "owner".into(),
                a: owner_a.map(|(uid, gid)| format!("{uid}:{gid}")),
                b: owner_b.map(|(uid, gid)| format!("{uid}:{gid}")),
            }),
        }
    }
    for name in ordered_union(a.times.iter().map(|(name, _)| *name), b.times.iter().map(|(name, _)| *name)) {
        let time_a = a.times.iter().find(|(other, _)| *other == name).map(|(_, time)| *time);
        let time_b = b.times.iter().find(|(other, _)| *other == name).map(|(_, time)| *time);
        if time_a != time_b {
            push(What::Time { name: name.to_owned(), a: time_a, b: time_b });
        }
    }
    let xattr_names: BTreeSet<&Vec<u8>> = a.xattrs.keys().chain(b.xattrs.keys()).collect();
    for name in xattr_names {
        let (value_a, value_b) = (a.xattrs.get(name), b.xattrs.get(name));
        if value_a != value_b {
            push(What::Xattr { name: name.clone(), a: value_a.cloned(), b: value_b.cloned() });
        }
    }
    for name in ordered_union(a.other.iter().map(|(name, _)| *name), b.other.iter().map(|(name, _)| *name)) {
        let value_a = a.other.iter().find(|(other, _)| *other == name).map(|(_, value)| value.clone());
        let value_b = b.other.iter().find(|(other, _)| *other == name).map(|(_, value)| value.clone());
        if value_a != value_b {
            push(What::Field { name: name.to_owned(), a: value_a, b: value_b });
        }
    }
}

/// The names of `a` in order, then those only in `b`.
fn ordered_union<'a>(a: impl Iterator<Item = &'a str>, b: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut names: Vec<&str> = a.collect();
    for name in b {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Compares two lists of named fields (a superblock, a FAT boot sector, a GPT header), each name
/// prefixed with `prefix`. Fields named in `consequences` (checksums) are reported only when no
/// other field differs: they change whenever anything else does.
pub fn compare_fields(
    prefix: &str,
    a: &[(String, String)],
    b: &[(String, String)],
    consequences: &[&str],
) -> Vec<Difference> {
    let names = ordered_union(a.iter().map(|(name, _)| name.as_str()), b.iter().map(|(name, _)| name.as_str()));
    let value = |fields: &[(String, String)], name: &str| {
        fields.iter().find(|(other, _)| other == name).map(|(_, value)| value.clone())
    };
    let mut primary = Vec::new();
    let mut secondary = Vec::new();
    for name in names {
        let (value_a, value_b) = (value(a, name), value(b, name));
        if value_a != value_b {
            let difference = Difference::field(format!("{prefix}{name}"), value_a, value_b);
            if consequences.iter().any(|consequence| name.contains(consequence)) {
                secondary.push(difference);
            } else {
                primary.push(difference);
            }
        }
    }
    if primary.is_empty() {
        secondary
    } else {
        primary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &[u8]) -> Node {
        use sha2::{Digest as _, Sha256};
        let mut node = Node::new(NodeType::Regular);
        node.size = Some(content.len() as u64);
        node.sha256 = Some(Sha256::digest(content).into());
        node.permissions = Some(0o644);
        node.owner = Some((0, 0));
        node
    }

    fn directory() -> Node {
        let mut node = Node::new(NodeType::Directory);
        node.permissions = Some(0o755);
        node.owner = Some((0, 0));
        node
    }

    fn tree(entries: &[(&[u8], Node)]) -> FileTree {
        entries.iter().map(|(path, node)| (path.to_vec(), node.clone())).collect()
    }

    fn kinds(comparison: &TreeComparison) -> Vec<String> {
        comparison
            .differences
            .iter()
            .map(|difference| {
                let what = match &difference.what {
                    What::OnlyIn { side, description, .. } => format!("only {} {description}", side.letter()),
                    What::Content { .. } => "content".into(),
                    What::Permissions { a, b } => format!("mode {a:o} {b:o}"),
                    What::Owner { a, b } => format!("owner {a:?} {b:?}"),
                    What::Xattr { name, a, b } => format!("xattr {} {a:?} {b:?}", quote(name)),
                    What::Time { name, .. } => format!("time {name}"),
                    What::Type { a, b } => format!("type {a} / {b}"),
                    What::LinkTarget { .. } => "link".into(),
                    What::Field { name, a, b } => format!("{name} {a:?} {b:?}"),
                    other => format!("{other:?}"),
                };
                format!("{}: {what}", quote(difference.path.as_deref().unwrap_or_default()))
            })
            .collect()
    }

    #[test]
    fn reports_each_kind_of_difference_per_path_in_order() {
        let mut owned = file(b"x");
        owned.owner = Some((1000, 1000));
        let mut with_xattr = file(b"x");
        with_xattr.xattrs.insert(b"user.a".to_vec(), b"1".to_vec());
        let mut timed = file(b"x");
        timed.times.push(("mtime", Time { seconds: 5, nanoseconds: 0, utc: true }));
        let mut symlink = Node::new(NodeType::Symlink);
        symlink.link_target = Some(b"target".to_vec());
        let a = tree(&[
            (b"/", directory()),
            (b"/content", file(b"one")),
            (b"/mode", file(b"x")),
            (b"/owner", file(b"x")),
            (b"/xattr", file(b"x")),
            (b"/time", file(b"x")),
            (b"/type", file(b"x")),
            (b"/only a", file(b"x")),
        ]);
        let mut mode = file(b"x");
        mode.permissions = Some(0o755);
        let b = tree(&[
            (b"/", directory()),
            (b"/content", file(b"two!")),
            (b"/mode", mode),
            (b"/owner", owned),
            (b"/xattr", with_xattr),
            (b"/time", timed),
            (b"/type", symlink),
            (b"/\xff", file(b"x")),
        ]);
        let comparison = compare_trees(&a, &b);
        assert_eq!(
            kinds(&comparison),
            [
                "/content: content",
                "/mode: mode 644 755",
                "\"/only a\": only A regular file, 1 bytes",
                "/owner: owner (0, 0) (1000, 1000)",
                "/time: time mtime",
                "/type: type regular file, 1 bytes / symbolic link to target",
                "/xattr: xattr user.a None Some([49])",
                "\"/\\xff\": only B regular file, 1 bytes",
            ]
        );
        assert!(comparison.differing_paths.contains(&b"/mode"[..]));
        assert!(!comparison.differing_paths.contains(&b"/"[..]));
        assert!(compare_trees(&a, &a).differences.is_empty());
    }

    #[test]
    fn a_directory_on_one_side_is_reported_once() {
        let a = tree(&[
            (b"/", directory()),
            (b"/d", directory()),
            (b"/d/x", file(b"")),
            (b"/d/y/z", file(b"")),
            (b"/e", file(b"")),
        ]);
        let b = tree(&[(b"/", directory()), (b"/e", file(b""))]);
        let comparison = compare_trees(&a, &b);
        assert_eq!(kinds(&comparison), ["/d: only A directory with 2 entries below it"]);
        assert!(comparison.differing_paths.contains(&b"/d/x"[..]));
        // The other way round, and a sibling sharing the prefix is not swallowed.
        // "/d x" sorts between "/d" and "/d/x" and is on both sides.
        let b = tree(&[
            (b"/", directory()),
            (b"/d", directory()),
            (b"/d x", file(b"")),
            (b"/d/x", file(b"")),
            (b"/d-x", file(b"")),
        ]);
        let a = tree(&[(b"/", directory()), (b"/d x", file(b""))]);
        assert_eq!(
            kinds(&compare_trees(&a, &b)),
            ["/d: only B directory with 1 entries below it", "/d-x: only B regular file, 0 bytes"]
        );
        assert_eq!(parent(b"/a/b"), Some(&b"/a"[..]));
        assert_eq!(parent(b"/a"), Some(&b"/"[..]));
        assert_eq!(parent(b"/"), None);
    }

    #[test]
    fn fields_report_checksums_only_when_nothing_else_differs() {
        let fields = |count: &str, checksum: &str| {
            vec![("free blocks".to_owned(), count.to_owned()), ("checksum".to_owned(), checksum.to_owned())]
        };
        let differences = compare_fields("superblock ", &fields("1", "a"), &fields("2", "b"), &["checksum"]);
        assert_eq!(differences, [Difference::field("superblock free blocks", Some("1".into()), Some("2".into()))]);
        let differences = compare_fields("", &fields("1", "a"), &fields("1", "b"), &["checksum"]);
        assert_eq!(differences, [Difference::field("checksum", Some("a".into()), Some("b".into()))]);
        let only_b = compare_fields("", &[], &fields("1", "a")[..1], &[]);
        assert_eq!(only_b, [Difference::field("free blocks", None, Some("1".into()))]);
    }

    #[test]
    fn below_means_strictly_inside() {
        assert!(is_below(b"/a/b", b"/a"));
        assert!(!is_below(b"/a-b", b"/a"));
        assert!(!is_below(b"/a", b"/a"));
        assert!(is_below(b"/a", b"/"));
        assert!(!is_below(b"/", b"/"));
    }
}
