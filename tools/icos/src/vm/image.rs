//! The private files a VM writes to: its disk image and its UEFI variables. A guest writes to its
//! disk from the first boot on, so it always gets a copy: a build output is never modified.
//!
//! Disk images are mostly holes (a 50 GB GuestOS disk holds a few GB of data), so copies keep them:
//! whatever the image is, a raw file or a `disk-img.tar.zst`, it is opened as an [`ImageSource`]
//! and only its data blocks are written (a package's data frames are decompressed straight into
//! the copy), like `cp --sparse=always`.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::VmError;
use crate::image_source::{ImageSource, ImageSourceError};
use crate::io_error::PathIoError;
use crate::output::write_atomically;

/// The disk image's name in a work dir, and its member name in `disk-img.tar.zst`.
pub const DISK_IMAGE_NAME: &str = "disk.img";
/// The private copy of the UEFI variables in a work dir.
pub const VARS_NAME: &str = "OVMF_VARS.fd";

/// Puts a writable copy of `image` in `work_dir` and returns its path: a package (a `.tar.zst`
/// whatever its name) must hold `disk.img` alone; anything else is taken as a raw image.
pub fn prepare_disk_image(image: &Path, work_dir: &Path) -> Result<PathBuf, VmError> {
    let target = work_dir.join(DISK_IMAGE_NAME);
    let source = ImageSource::open(image)?;
    if let Some(member) = source.member_name().filter(|&name| name != DISK_IMAGE_NAME) {
        return Err(VmError::NoDiskInPackage { path: image.to_owned(), members: member.to_owned() });
    }
    write_sparse(&source, &target)?;
    Ok(target)
}

/// Copies the UEFI variables `template` to `dir`, writable by its owner whatever the template's
/// mode, and returns the copy's path.
pub fn copy_vars(template: &Path, dir: &Path) -> Result<PathBuf, VmError> {
    let target = dir.join(VARS_NAME);
    let write_error = |source: io::Error| PathIoError::with("write", &target)(source);
    // A few hundred KiB: read whole, so that a failure is blamed on the right file.
    let bytes = fs::read(template).map_err(PathIoError::with("read", template))?;
    fs::write(&target, bytes).map_err(write_error)?;
    fs::set_permissions(&target, Permissions::from_mode(0o644)).map_err(write_error)?;
    Ok(target)
}

/// Copies the raw image `source` to `target` (replaced atomically, so the source may even be the
/// target) with holes wherever the source has holes or all-zero blocks.
pub fn copy_sparse(source: &Path, target: &Path) -> Result<(), VmError> {
    write_sparse(&ImageSource::open_raw(source)?, target)
}

/// Writes the data blocks of `source` to a new file `target` (replaced atomically), of its size.
fn write_sparse(source: &ImageSource, target: &Path) -> Result<(), VmError> {
    write_atomically(target, |output: &mut File| {
        source.write_file(output).map_err(|error| match error {
            ImageSourceError::Write(error) => PathIoError::with("write", target)(error).into(),
            other => VmError::Image(other),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    /// A 64 MiB file with a few scattered bytes, a run of explicitly written zeros, and a size
    /// that ends in a hole in the middle of a block.
    fn holey_file(path: &Path) -> u64 {
        let file = File::create(path).unwrap();
        for (offset, bytes) in [(100, &b"boot"[..]), (3 * 4096 - 2, b"edge"), (40 << 20, b"far")] {
            file.write_all_at(bytes, offset).unwrap();
        }
        file.write_all_at(&vec![0u8; 1 << 20], 50 << 20).unwrap();
        let size = (64 << 20) + 1234;
        file.set_len(size).unwrap();
        size
    }

    #[test]
    fn sparse_copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.img");
        let size = holey_file(&source);
        let target = dir.path().join("copy.img");
        copy_sparse(&source, &target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), fs::read(&source).unwrap());
        let metadata = fs::metadata(&target).unwrap();
        assert_eq!(metadata.len(), size);
        // Four data blocks (the "edge" write straddles two); file systems may allocate a little more
        // metadata, but not the megabyte of written zeros.
        assert!(metadata.blocks() * 512 <= 64 * 1024, "{} bytes allocated", metadata.blocks() * 512);
        assert_eq!(metadata.mode() & 0o777, 0o644);
    }

    #[test]
    fn copy_onto_itself_and_missing_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        holey_file(&path);
        let before = fs::read(&path).unwrap();
        copy_sparse(&path, &path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), before);
        let error = copy_sparse(&dir.path().join("absent.img"), &path).unwrap_err().to_string();
        assert!(error.contains("cannot read") && error.contains("absent.img"), "{error}");
    }

    #[test]
    fn raw_images_and_packages_are_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let raw = dir.path().join("built.img");
        fs::write(&raw, b"raw disk").unwrap();
        let disk = prepare_disk_image(&raw, &work).unwrap();
        assert_eq!((disk.clone(), fs::read(&disk).unwrap()), (work.join("disk.img"), b"raw disk".to_vec()));

        let package = dir.path().join("disk-img.tar.zst");
        let member = |name: &str| crate::package::Member::file(name, raw.clone());
        let options = crate::package::CompressionOptions { level: 1, threads: 1 };
        crate::package::package(&package, &[member("disk.img")], options).unwrap();
        fs::remove_file(&disk).unwrap();
        assert_eq!(prepare_disk_image(&package, &work).unwrap(), disk);
        assert_eq!(fs::read(&disk).unwrap(), b"raw disk");
        assert_eq!(fs::read(&raw).unwrap(), b"raw disk");

        let other = dir.path().join("update-img.tar.zst");
        crate::package::package(&other, &[member("boot.img")], options).unwrap();
        let error = prepare_disk_image(&other, &work).unwrap_err().to_string();
        assert!(error.contains("has no disk.img (members: boot.img)"), "{error}");
    }

    #[test]
    fn vars_copy_is_writable() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template.fd");
        fs::write(&template, b"vars").unwrap();
        fs::set_permissions(&template, Permissions::from_mode(0o444)).unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let copy = copy_vars(&template, &work).unwrap();
        assert_eq!(copy, work.join("OVMF_VARS.fd"));
        assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o777, 0o644);
        let error = copy_vars(&dir.path().join("absent.fd"), &work).unwrap_err().to_string();
        assert!(error.contains("cannot read") && error.contains("absent.fd"), "{error}");
    }
}
