//! A content-addressed store of OCI archives: the archive of image `sha256:<hex>` is
//! `<dir>/sha256/<hex>.oci.tar`. A pin names an image by digest; the store turns that into a file
//! without trusting whoever put it there, because an archive goes in only once it is verified to
//! be the image its name says.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::layout::{check_archive, Layout};
use super::reference::Digest;
use super::{ImageDigest, OciError};
use crate::rootfs::stream::Section;

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir`, which need not exist yet: [`Store::put`] creates it.
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the archive of image `digest` is, or would be.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(format!("{}.oci.tar", digest.hex()))
    }

    /// Adds the OCI archive `archive` and returns its image's digest. The archive is copied to a
    /// temporary file in the store, the copy is verified (so that what is checked is what stays),
    /// and then renamed into place, read-only: a failure leaves the store as it was, and an entry
    /// that was there (even a damaged one) is replaced.
    pub fn put(&self, archive: &Path) -> Result<ImageDigest, OciError> {
        let store_error = |source| OciError::Store { store: self.dir.clone(), archive: archive.to_owned(), source };
        let dir = self.dir.join("sha256");
        fs::create_dir_all(&dir).map_err(store_error)?;
        let mut source = File::open(archive).map_err(|source| OciError::Read { path: archive.to_owned(), source })?;
        let mut temporary =
            tempfile::Builder::new().prefix(".icos-").suffix(".partial").tempfile_in(&dir).map_err(store_error)?;
        // io::copy between files uses copy_file_range: a reflink where the file system can.
        io::copy(&mut source, temporary.as_file_mut()).map_err(store_error)?;
        // Errors name the archive given: the temporary copy is of no interest.
        let image = check_archive(temporary.as_file(), archive, None, true)?;
        fs::set_permissions(temporary.path(), Permissions::from_mode(0o444)).map_err(store_error)?;
        temporary.persist(self.path(&image.digest)).map_err(|error| store_error(error.error))?;
        Ok(image)
    }

    /// The archive of image `digest`, after a quick check: it is a layout of that image (whose
    /// small manifest is hashed) with every blob present at its size. [`Store::get_verified`]
    /// hashes every blob too.
    pub fn get(&self, digest: &Digest) -> Result<PathBuf, OciError> {
        self.checked(digest, false)
    }

    /// The archive of image `digest`, verified in full (see [`super::verify_archive`]).
    pub fn get_verified(&self, digest: &Digest) -> Result<PathBuf, OciError> {
        self.checked(digest, true)
    }

    /// Writes the one layer of single-layer image `digest` (a root filesystem tar) to `output`
    /// (`output_name` in errors), once the whole archive is verified, so that nothing damaged is
    /// ever written.
    pub fn write_layer(&self, digest: &Digest, output: &mut impl Write, output_name: &Path) -> Result<(), OciError> {
        let path = self.get_verified(digest)?;
        let file = File::open(&path).map_err(|source| OciError::Read { path: path.clone(), source })?;
        let layout = Layout::read(&file, &path)?;
        let mut layer = match layout.layers()?.as_slice() {
            [layer] => Section::new(&file, layer.offset, layer.size),
            layers => {
                return Err(OciError::Input {
                    path,
                    problem: format!("{} layers: only a single-layer image has one root filesystem tar", layers.len()),
                })
            }
        };
        let write_error = |source| OciError::Write { path: output_name.to_owned(), source };
        io::copy(&mut layer, output).map_err(write_error)?;
        output.flush().map_err(write_error)
    }

    fn checked(&self, digest: &Digest, full: bool) -> Result<PathBuf, OciError> {
        let path = self.path(digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(OciError::NotInStore { store: self.dir.clone(), digest: digest.clone() })
            }
            Err(source) => return Err(OciError::Read { path, source }),
        };
        check_archive(&file, &path, Some(digest), full)?;
        Ok(path)
    }
}
