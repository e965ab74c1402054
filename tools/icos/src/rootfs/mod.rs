//! Canonical root filesystems: from the tar that `podman export` writes, or from an OCI image
//! archive, to a tar whose bytes depend only on the files, their metadata and
//! `SOURCE_DATE_EPOCH`, and from there to the boot, root and var trees of an image, each with a
//! manifest that says exactly what it holds.
//!
//! Rules of the canonical tar (`write.rs` documents the header scheme): paths sorted by bytes, with
//! an explicit entry for the root (`./`) and every directory; numeric owners, no user or group
//! names; mtimes clamped to `min(mtime, SOURCE_DATE_EPOCH)`; `SCHILY.xattr.*` xattrs kept;
//! hard links kept (the first path of an inode in byte order holds the content, the others link to
//! it); devices and FIFOs kept, sockets dropped; symlinks verbatim, never followed. Names are raw
//! bytes throughout. Duplicate members: the last one wins, as in extraction.
//!
//! Pipeline: one pass over the input keeps an index of metadata in memory ([`tree::Tree`]) while
//! contents stay in the input (uncompressed tars, read back by offset) or go to an anonymous spool
//! file ([`store::Store`]); writing walks the sorted index and copies contents. Memory grows with
//! the number of entries, never with their size.

pub mod edit;
pub mod manifest;
mod oci;
pub(crate) mod path;
mod read;
pub mod split;
pub mod store;
pub(crate) mod stream;
pub mod tree;
mod write;

use std::fs::File;
use std::io::{self, BufWriter};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::oci::layout::is_oci_archive;
use crate::oci::OciError;
use crate::output::{write_atomically, OutputError};

pub use edit::{Injection, Replacement};
pub use manifest::{parse_manifest, write_manifest, ManifestRecord};
pub use read::EntryProblem;
pub use split::{Split, View, MOUNT_POINTS};
use store::Store;
use stream::{detect_compression, read_section, Compression, StreamKind};
use tree::Tree;
use write::{walk, TarWriter};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid tar archive ({location}): {detail}")]
    Corrupt { path: PathBuf, location: String, detail: String },
    #[error("{path}: entry {entry}: {problem}")]
    Entry { path: PathBuf, entry: String, problem: EntryProblem },
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("cannot use the temporary spool file: {0}")]
    Spool(io::Error),
    #[error("{spec:?}: {problem}")]
    Spec { spec: String, problem: String },
    #[error("image path {path}: {problem}")]
    Edit { path: String, problem: String },
    #[error("image path {entry}: {what} does not fit in a tar header")]
    Unrepresentable { entry: String, what: String },
    #[error("cannot write image path {entry}: {source}")]
    Copy { entry: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// What the input file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// An OCI archive if it is a tar with `oci-layout` and `index.json` at its top, else a tar.
    Auto,
    /// A root filesystem tar, plain, gzip or zstd (`podman export`, or a canonical tar).
    Tar,
    /// An OCI image archive (`podman save --format oci-archive`).
    OciArchive,
}

/// A root filesystem read into memory as an index, with its contents in a [`Store`].
#[derive(Debug)]
pub struct Rootfs {
    tree: Tree,
    store: Store,
}

impl Rootfs {
    /// Reads `input`. Any damage (truncation, a bad checksum, a blob that does not match its
    /// digest) or an entry that could escape the root is an error naming the file and entry.
    pub fn read(input: &Path, format: InputFormat) -> Result<Rootfs, RootfsError> {
        let read_error = |source| RootfsError::Read { path: input.to_owned(), source };
        let file = File::open(input).map_err(read_error)?;
        let length = file.metadata().map_err(read_error)?.len();
        let mut magic = [0u8; 4];
        let magic_len = file.read_at(&mut magic, 0).map_err(read_error)?;
        let compressed = detect_compression(&magic[..magic_len]) != Compression::None;
        let format = match format {
            InputFormat::Auto if !compressed && is_oci_archive(&file) => InputFormat::OciArchive,
            InputFormat::Auto => InputFormat::Tar,
            other => other,
        };
        let mut tree = Tree::new();
        let mut store = Store::with_input(file.try_clone().map_err(read_error)?);
        match format {
            InputFormat::OciArchive => oci::read_oci_archive(&file, input, &mut tree, &mut store)?,
            _ => {
                let kind = StreamKind { input, whiteouts: false, label: String::new(), hash: false };
                read_section(&file, 0, length, &mut tree, &mut store, kind)?;
            }
        }
        Ok(Rootfs { tree, store })
    }

    /// A tree holding only the root directory (0755, root-owned), to be filled by injections:
    /// how Bazel-built files become a partition of their own (the ESP, the GRUB partition).
    pub fn empty() -> Rootfs {
        Rootfs { tree: Tree::new(), store: Store::default() }
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The whole tree.
    pub fn whole(&self) -> View<'_> {
        split::whole(&self.tree)
    }

    /// The boot, root and var trees (see [`split`]).
    pub fn split(&self) -> Result<Split<'_>, RootfsError> {
        split::split(&self.tree)
    }

    pub fn replace(&mut self, replacement: &Replacement) -> Result<(), RootfsError> {
        edit::replace(&mut self.tree, &mut self.store, replacement)
    }

    pub fn inject(&mut self, injection: &Injection) -> Result<(), RootfsError> {
        edit::inject(&mut self.tree, &mut self.store, injection)
    }

    pub fn empty_machine_id(&mut self) -> Result<(), RootfsError> {
        edit::empty_machine_id(&mut self.tree, &mut self.store)
    }

    /// The manifest of `view` with mtimes clamped to `epoch` (if any), without writing a tar.
    pub fn manifest(&self, view: &View<'_>, epoch: Option<u64>) -> Vec<ManifestRecord> {
        let mut records = Vec::with_capacity(view.len() + 1);
        let result: Result<(), std::convert::Infallible> = walk(&self.tree, view, epoch, |entry| {
            records.push(manifest::record(entry));
            Ok(())
        });
        match result {
            Ok(()) => records,
            Err(never) => match never {},
        }
    }

    /// Writes the canonical tar of `view` to `out`, returning its manifest.
    pub fn write_tar(
        &self,
        view: &View<'_>,
        epoch: Option<u64>,
        out: &mut dyn io::Write,
    ) -> Result<Vec<ManifestRecord>, RootfsError> {
        let mut records = Vec::with_capacity(view.len() + 1);
        let mut writer = TarWriter { out, store: &self.store };
        walk(&self.tree, view, epoch, |entry| {
            writer.entry(entry)?;
            records.push(manifest::record(entry));
            Ok::<(), RootfsError>(())
        })?;
        writer.finish().map_err(|source| RootfsError::Copy { entry: "(end of archive)".into(), source })?;
        Ok(records)
    }

    /// Writes the canonical tar of `view` to the file `output`, and its manifest to `manifest`
    /// if given. Each file is all or nothing, and the tar is only put in place once the manifest
    /// is written.
    pub fn write_tar_file(
        &self,
        view: &View<'_>,
        epoch: Option<u64>,
        output: &Path,
        manifest: Option<&Path>,
    ) -> Result<Vec<ManifestRecord>, RootfsError> {
        write_atomically(output, |file| {
            let mut buffered = BufWriter::with_capacity(1 << 20, file);
            let records = self.write_tar(view, epoch, &mut buffered)?;
            buffered
                .into_inner()
                .map_err(|error| RootfsError::Write { path: output.to_owned(), source: error.into_error() })?;
            if let Some(manifest) = manifest {
                write_manifest_file(manifest, &records)?;
            }
            Ok(records)
        })
    }
}

/// Writes `records` as a JSON-lines manifest file, all or nothing.
pub fn write_manifest_file(output: &Path, records: &[ManifestRecord]) -> Result<(), RootfsError> {
    write_atomically(output, |file| {
        let mut buffered = BufWriter::new(file);
        write_manifest(records, &mut buffered).map_err(|source| RootfsError::Write { path: output.to_owned(), source })
    })
}

#[cfg(test)]
mod tests;
