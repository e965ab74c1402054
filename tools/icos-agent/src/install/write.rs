//! Writing images onto the target disk and reading them back: only the data blocks of an image
//! are written, each write is recorded, and after a flush the recorded ranges are read again from
//! the disk and compared. The image's holes are not written but zeroed with the upgrade writer's
//! [`Zeroer`] (punching a hole first, which a virtual disk with `discard=unmap` turns into a hole
//! of its own and an SSD into a deallocation): a blank or thin disk stays sparse, and the old
//! content of a reused disk cannot show through where a filesystem expects zeros.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::image_source::{ImageSource, ImageSourceError};
use crate::io_error::PathIoError;
use crate::sparse::{copy_stream_at, CopyError, WriteAt};
use crate::upgrade::Zeroer;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Image(ImageSourceError),
    #[error("{image}: its image has {size} bytes, more than the {limit} bytes of {region}")]
    TooLarge { image: PathBuf, size: u64, limit: u64, region: String },
    #[error("writing {image} to {target}: {source}")]
    Copy { image: PathBuf, target: PathBuf, source: CopyError },
    #[error(transparent)]
    Device(#[from] PathIoError),
    #[error("{target}: {region} reads back differently from what was written ({written} bytes in {extents} extents)")]
    ReadBack { target: PathBuf, region: String, written: u64, extents: usize },
}

/// What was written of one image: where, and the SHA-256 of the bytes in order.
#[derive(Debug, Clone)]
pub struct Written {
    pub region: String,
    pub extents: Vec<(u64, u64)>,
    pub digest: [u8; 32],
}

impl Written {
    pub fn bytes(&self) -> u64 {
        self.extents.iter().map(|(_, length)| length).sum()
    }
}

/// Writes `file` at its offsets and records every write.
struct RecordingTarget<'a> {
    file: &'a File,
    extents: Vec<(u64, u64)>,
    hasher: Sha256,
}

impl WriteAt for RecordingTarget<'_> {
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)?;
        self.hasher.update(bytes);
        match self.extents.last_mut() {
            Some((start, length)) if *start + *length == offset => *length += bytes.len() as u64,
            _ => self.extents.push((offset, bytes.len() as u64)),
        }
        Ok(())
    }
}

/// Writes the data blocks of `image` (the disk of a `disk-img.tar.zst`, whose data frames are
/// decompressed straight to the target) to `target` at `offset`, and zeroes its holes; `region`
/// of `limit` bytes must hold it.
pub fn write_image(
    image: &ImageSource,
    target_path: &Path,
    target: &File,
    offset: u64,
    limit: u64,
    region: &str,
) -> Result<Written, WriteError> {
    let mut recorder = RecordingTarget { file: target, extents: Vec::new(), hasher: Sha256::new() };
    image.copy_at(&mut recorder, offset, limit).map_err(|error| match error {
        ImageSourceError::TooLarge { path, size, limit } => {
            WriteError::TooLarge { image: path, size, limit, region: region.to_owned() }
        }
        ImageSourceError::Write(source) => WriteError::Copy {
            image: image.path().to_owned(),
            target: target_path.to_owned(),
            source: CopyError::Write(source),
        },
        other => WriteError::Image(other),
    })?;
    zero_gaps(target_path, target, offset, image.size(), &recorder.extents)?;
    Ok(Written { region: region.to_owned(), extents: recorder.extents, digest: recorder.hasher.finalize().into() })
}

/// Zeroes the parts of `size` bytes at `offset` that `extents` (in order, inside it) do not cover.
fn zero_gaps(
    target_path: &Path,
    target: &File,
    offset: u64,
    size: u64,
    extents: &[(u64, u64)],
) -> Result<(), WriteError> {
    let mut zeroer = Zeroer::default();
    let mut position = offset;
    for &(start, length) in extents.iter().chain([(offset + size, 0)].iter()) {
        if start > position {
            zeroer
                .zero(target, position, start - position)
                .map_err(PathIoError::with("zero the image's holes on", target_path))?;
        }
        position = start + length;
    }
    Ok(())
}

/// Writes the whole of `bytes` (a small image made here, such as a configuration filesystem) at
/// `offset`, skipping its all-zero blocks like [`write_image`].
pub fn write_bytes(
    bytes: &[u8],
    target_path: &Path,
    target: &File,
    offset: u64,
    region: &str,
) -> Result<Written, WriteError> {
    let mut recorder = RecordingTarget { file: target, extents: Vec::new(), hasher: Sha256::new() };
    copy_stream_at(&mut &bytes[..], bytes.len() as u64, &mut recorder, offset).map_err(|source| WriteError::Copy {
        image: PathBuf::from(region),
        target: target_path.to_owned(),
        source,
    })?;
    Ok(Written { region: region.to_owned(), extents: recorder.extents, digest: recorder.hasher.finalize().into() })
}

/// Flushes `target` to the disk and drops its cached pages, so that a read after this comes from
/// the disk rather than from what was just written into the page cache.
pub fn flush(target_path: &Path, target: &File) -> Result<(), WriteError> {
    target.sync_all().map_err(PathIoError::with("flush", target_path))?;
    // SAFETY: the descriptor is owned by `target`, which outlives the call; the advice only drops
    // clean cached pages of it.
    let result = unsafe { libc::posix_fadvise(target.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if result != 0 {
        return Err(
            PathIoError::with("drop the cached pages of", target_path)(io::Error::from_raw_os_error(result)).into()
        );
    }
    Ok(())
}

/// Reads `written`'s extents from `target` again and compares their SHA-256 with what was written.
pub fn read_back(target_path: &Path, target: &File, written: &Written) -> Result<(), WriteError> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for &(start, length) in &written.extents {
        let mut done = 0;
        while done < length {
            let count = (length - done).min(buffer.len() as u64) as usize;
            target
                .read_exact_at(&mut buffer[..count], start + done)
                .map_err(PathIoError::with("read back from", target_path))?;
            hasher.update(&buffer[..count]);
            done += count as u64;
        }
    }
    if <[u8; 32]>::from(hasher.finalize()) != written.digest {
        return Err(WriteError::ReadBack {
            target: target_path.to_owned(),
            region: written.region.clone(),
            written: written.bytes(),
            extents: written.extents.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{package, CompressionOptions, Member};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn only_data_blocks_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.img");
        let mut content = vec![0u8; 64 << 10];
        content[8192..8200].copy_from_slice(b"HOSTOS!!");
        content[40 << 10] = 7;
        std::fs::write(&raw, &content).unwrap();
        let archive = dir.path().join("disk-img.tar.zst");
        package(&archive, &[Member::file("disk.img", &raw)], CompressionOptions { level: 3, threads: 1 }).unwrap();

        let target_path = dir.path().join("target");
        let target = File::options().create(true).truncate(true).read(true).write(true).open(&target_path).unwrap();
        // A reused disk: its old content must not show through the image's holes.
        target.write_all_at(&vec![0xAA; 4096 + (64 << 10)], 0).unwrap();
        target.set_len(1 << 20).unwrap();
        let image = ImageSource::open_package(&archive).unwrap();
        let written = write_image(&image, &target_path, &target, 4096, 1 << 20, "the disk").unwrap();
        assert_eq!(written.extents, [(4096 + 8192, 4096), (4096 + (40 << 10), 4096)]);
        assert_eq!(written.bytes(), 8192);
        flush(&target_path, &target).unwrap();
        read_back(&target_path, &target, &written).unwrap();
        // The holes were zeroed by punching holes: only the data blocks and the old content
        // outside the image's region (its first 4096 bytes) are allocated.
        assert!(std::fs::metadata(&target_path).unwrap().blocks() * 512 <= 12 << 10);
        let mut read = vec![0u8; 64 << 10];
        target.read_exact_at(&mut read, 4096).unwrap();
        assert_eq!(read, content);
        let mut before = vec![0u8; 4096];
        target.read_exact_at(&mut before, 0).unwrap();
        assert!(before.iter().all(|&byte| byte == 0xAA));

        // Something else changes a written byte: the read-back says where.
        target.write_all_at(b"X", 4096 + (40 << 10)).unwrap();
        let error = read_back(&target_path, &target, &written).unwrap_err().to_string();
        assert!(
            error.ends_with("the disk reads back differently from what was written (8192 bytes in 2 extents)"),
            "{error}"
        );

        let error = write_image(&image, &target_path, &target, 0, 32 << 10, "the guestos volume").unwrap_err();
        assert!(
            error.to_string().ends_with("its image has 65536 bytes, more than the 32768 bytes of the guestos volume"),
            "{error}"
        );
    }
}
