//! Views of a tree, and the split by mount point: the boot tree (`/boot` re-rooted), the root
//! tree (everything, but only the empty mount-point directories of `/boot`, `/var`, `/run`,
//! `/tmp`, `/dev`, `/proc` and `/sys`), and the var tree (`/var` re-rooted).
//!
//! A hard link whose names fall into different trees becomes an independent copy in each tree:
//! each tree is its own filesystem, where the link cannot exist, and the content is the same.

use super::path::display;
use super::tree::{Kind, Tree, DEFAULT_DIRECTORY};
use super::RootfsError;

/// Paths (sorted, relative to the view's root) with their inodes, plus the root's inode.
#[derive(Debug)]
pub struct View<'a> {
    pub(crate) root: usize,
    pub(crate) entries: Vec<(&'a [u8], usize)>,
}

impl View<'_> {
    /// The number of entries below the root.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The three trees a root filesystem is split into.
#[derive(Debug)]
pub struct Split<'a> {
    pub boot: View<'a>,
    pub root: View<'a>,
    pub var: View<'a>,
}

/// Mount points whose contents stay out of the root tree (the directories themselves stay).
pub const MOUNT_POINTS: [&str; 7] = ["boot", "dev", "proc", "run", "sys", "tmp", "var"];

pub(crate) fn whole(tree: &Tree) -> View<'_> {
    View { root: tree.root, entries: tree.entries.iter().map(|(path, &id)| (path.as_slice(), id)).collect() }
}

/// `dir` re-rooted; a missing `dir` gives an empty tree with a 0755 root-owned root.
fn subtree<'a>(tree: &'a Tree, dir: &str) -> Result<View<'a>, RootfsError> {
    let root = match tree.entries.get(dir.as_bytes()) {
        None => DEFAULT_DIRECTORY,
        Some(&id) if tree.inode(id).kind == Kind::Directory => id,
        Some(_) => {
            return Err(RootfsError::Edit {
                path: display(dir.as_bytes()),
                problem: "cannot be split off: it is not a directory".into(),
            })
        }
    };
    let prefix = format!("{dir}/");
    let entries = tree
        .entries
        .range(prefix.as_bytes().to_vec()..)
        .take_while(|(path, _)| path.starts_with(prefix.as_bytes()))
        .map(|(path, &id)| (&path[prefix.len()..], id))
        .collect();
    Ok(View { root, entries })
}

pub(crate) fn split(tree: &Tree) -> Result<Split<'_>, RootfsError> {
    let in_mount_point = |path: &[u8]| match path.iter().position(|&byte| byte == b'/') {
        Some(slash) => MOUNT_POINTS.iter().any(|mount| mount.as_bytes() == &path[..slash]),
        None => false,
    };
    let root = View {
        root: tree.root,
        entries: tree
            .entries
            .iter()
            .filter(|(path, _)| !in_mount_point(path))
            .map(|(path, &id)| (path.as_slice(), id))
            .collect(),
    };
    Ok(Split { boot: subtree(tree, "boot")?, root, var: subtree(tree, "var")? })
}
