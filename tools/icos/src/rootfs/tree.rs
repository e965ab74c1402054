//! The in-memory index of a root filesystem: metadata only, file contents stay in the
//! [`Store`](super::store::Store). Paths map to inode numbers so that hard links share one inode,
//! as they do after extraction.

use std::collections::BTreeMap;

use super::path::display;
use super::store::Content;

/// Owner, permissions, time and extended attributes of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits including setuid, setgid and sticky (`0o7777` at most), no file type.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch, before clamping to `SOURCE_DATE_EPOCH`.
    pub mtime: u64,
    /// Extended attributes by name (`security.capability`, `security.selinux`, ...).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Metadata {
    /// `mode` owned by root with time 0 and no xattrs: what icos gives whatever it creates.
    pub fn root_owned(mode: u32) -> Metadata {
        Metadata { mode, uid: 0, gid: 0, mtime: 0, xattrs: BTreeMap::new() }
    }
}

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File(Content),
    /// The target bytes exactly as archived; never resolved.
    Symlink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub kind: Kind,
    pub meta: Metadata,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Directory
    }
}

/// Why a path cannot be put into the tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeProblem {
    #[error("its parent {} is not a directory (it is never followed as a symlink)", display(.0))]
    ParentNotDirectory(Vec<u8>),
    #[error("the root of the image must be a directory")]
    RootNotDirectory,
}

/// An inode that is never changed: a 0755 root-owned directory with time 0, the root of a tree
/// that has no explicit root entry and of a split-off tree whose mount point is missing.
pub const DEFAULT_DIRECTORY: usize = 0;

/// Paths (sorted by bytes) to inodes, plus the root directory's inode.
#[derive(Debug)]
pub struct Tree {
    pub(crate) inodes: Vec<Inode>,
    pub(crate) entries: BTreeMap<Vec<u8>, usize>,
    pub(crate) root: usize,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    /// An empty tree whose root is a 0755 root-owned directory.
    pub fn new() -> Tree {
        let root = Inode { kind: Kind::Directory, meta: Metadata::root_owned(0o755) };
        Tree { inodes: vec![root], entries: BTreeMap::new(), root: DEFAULT_DIRECTORY }
    }

    pub fn add_inode(&mut self, inode: Inode) -> usize {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    pub fn inode(&self, id: usize) -> &Inode {
        &self.inodes[id]
    }

    /// The inode at `path` ("" is the root).
    pub fn lookup(&self, path: &[u8]) -> Option<usize> {
        if path.is_empty() {
            Some(self.root)
        } else {
            self.entries.get(path).copied()
        }
    }

    /// Puts inode `id` at `path` as extracting a tar member does: missing parents are created as
    /// 0755 root-owned directories, a directory over a directory keeps the children, anything else
    /// replaces what was there (with its subtree).
    pub fn insert(&mut self, path: Vec<u8>, id: usize) -> Result<(), TreeProblem> {
        let is_dir = self.inodes[id].is_dir();
        if path.is_empty() {
            if !is_dir {
                return Err(TreeProblem::RootNotDirectory);
            }
            self.root = id;
            return Ok(());
        }
        self.ensure_parents(&path)?;
        if let Some(&old) = self.entries.get(&path) {
            if self.inodes[old].is_dir() && !is_dir {
                self.remove_descendants(&path);
            }
        }
        self.entries.insert(path, id);
        Ok(())
    }

    /// Creates the missing ancestors of `path`; fails if one is not a directory.
    pub fn ensure_parents(&mut self, path: &[u8]) -> Result<(), TreeProblem> {
        for (index, _) in path.iter().enumerate().filter(|(_, &byte)| byte == b'/') {
            let parent = &path[..index];
            match self.entries.get(parent) {
                Some(&id) if self.inodes[id].is_dir() => {}
                Some(_) => return Err(TreeProblem::ParentNotDirectory(parent.to_vec())),
                None => {
                    let id = self.add_inode(Inode { kind: Kind::Directory, meta: Metadata::root_owned(0o755) });
                    self.entries.insert(parent.to_vec(), id);
                }
            }
        }
        Ok(())
    }

    /// Removes `path` and everything below it (a whiteout). The root itself is never removed.
    pub fn remove(&mut self, path: &[u8]) {
        self.remove_descendants(path);
        self.entries.remove(path);
    }

    /// Removes everything below `path`, keeping `path` (an opaque directory).
    pub fn remove_descendants(&mut self, path: &[u8]) {
        if path.is_empty() {
            self.entries.clear();
            return;
        }
        let mut prefix = path.to_vec();
        prefix.push(b'/');
        // All keys starting with `prefix` are contiguous in byte order.
        let doomed: Vec<Vec<u8>> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, _)| key.clone())
            .collect();
        for key in doomed {
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tree: &mut Tree) -> usize {
        tree.add_inode(Inode { kind: Kind::Fifo, meta: Metadata::root_owned(0o644) })
    }

    fn dir(tree: &mut Tree, mode: u32) -> usize {
        tree.add_inode(Inode { kind: Kind::Directory, meta: Metadata::root_owned(mode) })
    }

    fn paths(tree: &Tree) -> Vec<&[u8]> {
        tree.entries.keys().map(Vec::as_slice).collect()
    }

    #[test]
    fn creates_missing_parents_as_0755_root_directories() {
        let mut tree = Tree::new();
        let id = file(&mut tree);
        tree.insert(b"a/b/c".to_vec(), id).unwrap();
        assert_eq!(paths(&tree), [&b"a"[..], b"a/b", b"a/b/c"]);
        let parent = tree.inode(tree.lookup(b"a/b").unwrap());
        assert!(parent.is_dir());
        assert_eq!(parent.meta, Metadata::root_owned(0o755));
    }

    #[test]
    fn directory_over_directory_keeps_children_and_takes_new_metadata() {
        let mut tree = Tree::new();
        let id = file(&mut tree);
        tree.insert(b"d/f".to_vec(), id).unwrap();
        let d = dir(&mut tree, 0o700);
        tree.insert(b"d".to_vec(), d).unwrap();
        assert_eq!(paths(&tree), [&b"d"[..], b"d/f"]);
        assert_eq!(tree.inode(tree.lookup(b"d").unwrap()).meta.mode, 0o700);
    }

    #[test]
    fn a_file_over_a_directory_drops_the_subtree() {
        let mut tree = Tree::new();
        let id = file(&mut tree);
        tree.insert(b"d/f".to_vec(), id).unwrap();
        tree.insert(b"d-x".to_vec(), id).unwrap();
        let replacement = file(&mut tree);
        tree.insert(b"d".to_vec(), replacement).unwrap();
        assert_eq!(paths(&tree), [&b"d"[..], b"d-x"]);
    }

    #[test]
    fn parents_that_are_not_directories_are_refused() {
        let mut tree = Tree::new();
        let id = file(&mut tree);
        tree.insert(b"lib".to_vec(), id).unwrap();
        let error = tree.insert(b"lib/x".to_vec(), id).unwrap_err();
        assert_eq!(error, TreeProblem::ParentNotDirectory(b"lib".to_vec()));
        assert_eq!(tree.insert(Vec::new(), id).unwrap_err(), TreeProblem::RootNotDirectory);
    }

    #[test]
    fn remove_takes_the_subtree_and_spares_siblings_sharing_a_prefix() {
        let mut tree = Tree::new();
        let id = file(&mut tree);
        for path in [&b"a/x"[..], b"a/y/z", b"a-b", b"ab"] {
            tree.insert(path.to_vec(), id).unwrap();
        }
        tree.remove_descendants(b"a");
        assert_eq!(paths(&tree), [&b"a"[..], b"a-b", b"ab"]);
        tree.remove(b"a");
        assert_eq!(paths(&tree), [&b"a-b"[..], b"ab"]);
        tree.remove_descendants(b"");
        assert!(paths(&tree).is_empty());
    }
}
