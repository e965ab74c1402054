//! OCI image archives that icos writes itself, and a store that keeps them by digest.
//!
//! `podman save --format oci-archive` is not reproducible (timestamps, history, layer tar
//! metadata), so a base image saved that way cannot be pinned by digest and rebuilt elsewhere.
//! The canonical root filesystem tar (`crate::rootfs`) is reproducible; [`write_archive`] makes it
//! the single layer of an image whose config holds fixed metadata only, so the image's manifest
//! digest is a function of the tree and the options. A pin file ([`parse_pin`]) names that digest,
//! [`verify_archive`] checks an archive against it, and a [`Store`] finds the archive by it;
//! [`registry`] pushes images of a store to a registry and pulls them from one.

pub(crate) mod layout;
mod pin;
mod reference;
pub mod registry;
mod store;
mod write;

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::output::OutputError;

pub use layout::verify_archive;
pub use pin::{format_pin, parse_pin, Pin};
pub use reference::{check_name, Digest, InvalidDigest};
pub use store::Store;
pub use write::{write_archive, ArchiveOptions, DEFAULT_CREATED_BY};

/// An image's identity: the digest and size of its manifest, as index.json records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDigest {
    pub digest: Digest,
    pub size: u64,
}

impl fmt::Display for ImageDigest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.digest.fmt(formatter)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    Input { path: PathBuf, problem: String },
    #[error("{archive}: not a valid OCI archive: {problem}")]
    Corrupt { archive: PathBuf, problem: String },
    #[error("{archive}: blob {blob} ({role}) is damaged: its SHA-256 is {actual}, expected {expected}")]
    Damaged { archive: PathBuf, blob: String, role: String, expected: Digest, actual: Digest },
    #[error("{archive} holds image {actual}, expected {expected}")]
    Mismatch { archive: PathBuf, expected: Digest, actual: Digest },
    #[error("image name {name:?}: {problem}")]
    InvalidName { name: String, problem: String },
    #[error("creation time {seconds}: after 9999-12-31T23:59:59Z, which RFC 3339 cannot write")]
    Created { seconds: u64 },
    #[error("image {digest} is not in the store {store}")]
    NotInStore { store: PathBuf, digest: Digest },
    #[error("cannot add {archive} to the store {store}: {source}")]
    Store { store: PathBuf, archive: PathBuf, source: io::Error },
    #[error("{path}:{line}: {problem}")]
    Pin { path: PathBuf, line: usize, problem: String },
    #[error("{path}: no pin: expected one line <name>@sha256:<64 hex digits>")]
    NoPin { path: PathBuf },
    #[error(transparent)]
    Output(#[from] OutputError),
}

#[cfg(test)]
mod tests;
