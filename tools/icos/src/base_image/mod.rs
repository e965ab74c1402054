//! Reproducible, pinned base images.
//!
//! An OS's base image (`<os>-base-<variant>`) is a pure function of its Dockerfile.base, its
//! package lists, its package lock, the bootstrap suite, SOURCE_DATE_EPOCH and the state of the
//! Debian archive. Its OCI archive is written canonically, so the image's digest is a function of
//! the same inputs, and a pin file names the image by that digest. Everything an OS needs for it
//! lives in the OS's context directory (`ic-os/<os>/context/`):
//!
//! - `packages.common`, `packages.<variant>`: what Dockerfile.base installs (by name);
//! - `packages.<variant>.lock`: every package in the image, `name=version` (generated);
//! - `docker-base.<variant>`: the pin, `<os>-base-<variant>@sha256:<digest>` (generated).
//!
//! [`build()`] builds an image from these and fails unless the image holds exactly the locked
//! packages; relocking makes a new lock from what the archive serves now. `ci/base-images/rebuild`
//! re-pins every OS that way, and [`summary()`] says what changed, for the pull request.

mod build;
mod dpkg;
mod lock;
mod summary;

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::container::ContainerError;
use crate::oci::OciError;
use crate::output::OutputError;
use crate::rootfs::RootfsError;

pub(crate) use build::{archive_bootstrap, log_tail};
pub use build::{
    build, read_pin, write_lock_and_pin, BaseImageSpec, BuiltImage, Mode, DEFAULT_MIRROR, DEFAULT_SOURCE_DATE_EPOCH,
    DEFAULT_SUITE,
};
pub use dpkg::{compare_versions, installed_in_archive, installed_in_tar};
pub use lock::{diff, format_lock, parse_lock, read_lock, read_package_list, write_lock, Difference, Lock, Requested};
pub use summary::summary;

/// A variant of an OS's base image: dev images carry debugging tools that prod images lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Dev,
    Prod,
}

impl fmt::Display for Variant {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Variant::Dev => "dev",
            Variant::Prod => "prod",
        })
    }
}

/// A built image whose packages are not its lock.
#[derive(Debug)]
pub struct Mismatch {
    pub image: String,
    pub lock: PathBuf,
    /// `old` is the locked version, `new` the built one.
    pub differences: Vec<Difference>,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.differences.len();
        writeln!(
            formatter,
            "{} does not match its lock {}: {count} package{} differ (locked → built):",
            self.image,
            self.lock.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for difference in &self.differences {
            let locked = difference.old.as_deref().unwrap_or("(not locked)");
            let built = difference.new.as_deref().unwrap_or("(not installed)");
            writeln!(formatter, "  {}: {locked} → {built}", difference.name)?;
        }
        formatter.write_str(&self.hint)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {problem}")]
    Syntax { path: PathBuf, line: usize, problem: String },
    #[error("{path}: no lock: make it with ci/base-images/rebuild")]
    NoLock { path: PathBuf },
    #[error(
        "{} ({}:{}) is not in the lock {lock}: re-pin with ci/base-images/rebuild",
        .package.name, .package.list.display(), .package.line
    )]
    NotLocked { package: Requested, lock: PathBuf },
    #[error("{path}: var/lib/dpkg/status:{line}: {problem}")]
    Status { path: PathBuf, line: usize, problem: String },
    #[error("{path}: {problem}")]
    Image { path: PathBuf, problem: String },
    #[error("cannot start {program}: {source}")]
    Start { program: PathBuf, source: io::Error },
    #[error("mmdebstrap of {suite} from {mirror} failed ({status}); its last output lines:\n{log}")]
    Bootstrap { suite: String, mirror: String, status: String, log: String },
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    /// A container build failed; `hint` (empty, or a line of its own) says what that may mean.
    #[error("{source}{hint}")]
    Container { source: Box<ContainerError>, hint: String },
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

impl From<ContainerError> for BaseImageError {
    fn from(source: ContainerError) -> Self {
        BaseImageError::Container { source: Box::new(source), hint: String::new() }
    }
}
