//! The private files a VM writes to: its disk image and its UEFI variables. A guest writes to its
//! disk from the first boot on, so it always gets a copy: a build output is never modified.
//!
//! Disk images are mostly holes (a 50 GB GuestOS disk holds a few GB of data), so copies keep them:
//! a package is unpacked sparsely, and a raw image is copied region by region as the file system
//! reports data (`SEEK_DATA`/`SEEK_HOLE`), leaving all-zero blocks inside those regions as holes too,
//! like `cp --sparse=always`.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::VmError;
use crate::output::write_atomically;
use crate::package::unpack;

/// The disk image's name in a work dir, and its member name in `disk-img.tar.zst`.
pub const DISK_IMAGE_NAME: &str = "disk.img";
/// The private copy of the UEFI variables in a work dir.
pub const VARS_NAME: &str = "OVMF_VARS.fd";
/// Holes are made at this granularity: the file-system block size of ext4 and tmpfs.
const BLOCK_SIZE: usize = 4096;
const BUFFER_SIZE: usize = 256 * BLOCK_SIZE;

/// Puts a writable copy of `image` in `work_dir` and returns its path: a `.tar.zst` (or `.tzst`)
/// package is unpacked and must hold `disk.img`; anything else is taken as a raw image and copied.
pub fn prepare_disk_image(image: &Path, work_dir: &Path) -> Result<PathBuf, VmError> {
    let target = work_dir.join(DISK_IMAGE_NAME);
    let name = image.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
        let members = unpack(image, work_dir)?;
        if !members.iter().any(|member| member == DISK_IMAGE_NAME) {
            return Err(VmError::NoDiskInPackage { path: image.to_owned(), members: members.join(", ") });
        }
    } else {
        copy_sparse(image, &target)?;
    }
    Ok(target)
}

/// Copies the UEFI variables `template` to `dir`, writable by its owner whatever the template's
/// mode, and returns the copy's path.
pub fn copy_vars(template: &Path, dir: &Path) -> Result<PathBuf, VmError> {
    let target = dir.join(VARS_NAME);
    let write_error = |source| VmError::Write { path: target.clone(), source };
    // A few hundred KiB: read whole, so that a failure is blamed on the right file.
    let bytes = fs::read(template).map_err(|source| VmError::Read { path: template.to_owned(), source })?;
    fs::write(&target, bytes).map_err(write_error)?;
    fs::set_permissions(&target, Permissions::from_mode(0o644)).map_err(write_error)?;
    Ok(target)
}

/// Copies `source` to `target` (replaced atomically, so the source may even be the target) with
/// holes wherever the source has holes or all-zero blocks.
pub fn copy_sparse(source: &Path, target: &Path) -> Result<(), VmError> {
    let read_error = |error| VmError::Read { path: source.to_owned(), source: error };
    let input = File::open(source).map_err(read_error)?;
    let size = input.metadata().map_err(read_error)?.len();
    let regions = data_regions(&input, size).map_err(read_error)?;
    write_atomically(target, |output| {
        let write_error = |error| VmError::Write { path: target.to_owned(), source: error };
        let mut buffer = vec![0u8; BUFFER_SIZE];
        for (start, end) in regions {
            let mut position = start;
            while position < end {
                let want = (end - position).min(BUFFER_SIZE as u64) as usize;
                input.read_exact_at(&mut buffer[..want], position).map_err(read_error)?;
                // Block boundaries are counted from the region start, which file systems align.
                for (index, block) in buffer[..want].chunks(BLOCK_SIZE).enumerate() {
                    if block.iter().any(|&byte| byte != 0) {
                        let offset = position + (index * BLOCK_SIZE) as u64;
                        output.write_all_at(block, offset).map_err(write_error)?;
                    }
                }
                position += want as u64;
            }
        }
        output.set_len(size).map_err(write_error)
    })
}

/// The data regions `(start, end)` of `file` as the file system reports them, in order; the whole
/// file when the file system cannot tell.
fn data_regions(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    // Ok(None): no data at or after `offset`.
    let seek = |offset: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: lseek only reads its integer arguments, and `file` keeps the descriptor open.
        // Moving the file offset is harmless: all reads are positioned.
        let result = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
        if result >= 0 {
            return Ok(Some(result as u64));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(error),
        }
    };
    let mut regions = Vec::new();
    let mut position = 0;
    while position < size {
        let start = match seek(position, libc::SEEK_DATA) {
            Ok(Some(start)) if start < size => start,
            Ok(_) => break,
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return Ok(vec![(0, size)]),
            Err(error) => return Err(error),
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        // A file system that answers nonsense gets the rest of the file copied in full.
        let end = if end > start { end } else { size };
        regions.push((start, end));
        position = end;
    }
    Ok(regions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
