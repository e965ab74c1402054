//! Writing an image to a partition or logical volume as a stream, in 1 MiB chunks: runs of
//! all-zero 4 KiB blocks are zeroed with `fallocate` rather than written, which a block device
//! (device-mapper passes it down) turns into WRITE ZEROES that may deallocate, so that the mostly
//! empty file systems of an update cost little I/O and a thin or virtual disk stays thin. The old
//! content of the target is junk that must not show through: every byte up to the image's length
//! is either written or zeroed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::sparse::{is_zero, read_full, CopyError, BLOCK_SIZE};

/// How much is read and judged at a time: a whole number of blocks.
const CHUNK_SIZE: usize = 1 << 20;
/// Zeros for targets that can only be written.
static ZEROS: [u8; CHUNK_SIZE] = [0; CHUNK_SIZE];

/// Where an image is written: positioned writes, and zeroing of ranges.
pub trait Target {
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Makes `length` bytes at `offset` read as zeros. Both are multiples of [`BLOCK_SIZE`].
    fn zero(&mut self, offset: u64, length: u64) -> io::Result<()>;
}

/// How a device zeroes ranges: the best method it supports, found by trying them in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zeroing {
    /// `FALLOC_FL_PUNCH_HOLE`: on a block device WRITE ZEROES that may unmap (Linux never lets it
    /// fall back to writing), on a file a hole. A virtual disk (QEMU with `discard=unmap`) keeps
    /// its holes; with ZERO_RANGE first, an upgrade allocated all 5 GB of the inactive slot.
    PunchHole,
    /// `FALLOC_FL_ZERO_RANGE`: WRITE ZEROES that keep the blocks allocated, or written zeros.
    ZeroRange,
    /// Writing zeros, which works everywhere.
    WriteZeros,
}

impl Zeroing {
    /// The method to try when this one is not supported.
    fn fallback(self) -> Option<Zeroing> {
        match self {
            Zeroing::PunchHole => Some(Zeroing::ZeroRange),
            Zeroing::ZeroRange => Some(Zeroing::WriteZeros),
            Zeroing::WriteZeros => None,
        }
    }
}

/// Whether `error` says that the device or file system lacks a zeroing method, rather than that
/// zeroing failed.
fn unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
}

/// Zeroes with `method`, and with the methods after it while the one tried is unsupported;
/// `method` is left at the one that worked, so that later calls start there.
fn zero_with_fallback(method: &mut Zeroing, mut zero_once: impl FnMut(Zeroing) -> io::Result<()>) -> io::Result<()> {
    loop {
        match zero_once(*method) {
            Err(error) if unsupported(&error) => match method.fallback() {
                Some(next) => *method = next,
                None => return Err(error),
            },
            result => return result,
        }
    }
}

/// Makes `length` bytes at `offset` of `file` read as zeros with exactly `method`.
fn zero_once(file: &File, method: Zeroing, offset: u64, length: u64) -> io::Result<()> {
    let mode = match method {
        Zeroing::PunchHole => libc::FALLOC_FL_PUNCH_HOLE,
        Zeroing::ZeroRange => libc::FALLOC_FL_ZERO_RANGE,
        Zeroing::WriteZeros => {
            let mut done = 0;
            while done < length {
                let count = (length - done).min(CHUNK_SIZE as u64) as usize;
                FileExt::write_all_at(file, &ZEROS[..count], offset + done)?;
                done += count as u64;
            }
            return Ok(());
        }
    };
    // KEEP_SIZE: a regular file never grows (a block device cannot anyway).
    fallocate(file, mode | libc::FALLOC_FL_KEEP_SIZE, offset, length)
}

/// Makes ranges of a file or block device read as zeros with the best method it supports, found
/// on first use and kept.
#[derive(Debug)]
pub struct Zeroer {
    zeroing: Zeroing,
}

impl Default for Zeroer {
    fn default() -> Self {
        Zeroer { zeroing: Zeroing::PunchHole }
    }
}

impl Zeroer {
    /// Makes `length` bytes at `offset` of `file` read as zeros; on a block device both must be
    /// multiples of its logical block size.
    pub fn zero(&mut self, file: &File, offset: u64, length: u64) -> io::Result<()> {
        zero_with_fallback(&mut self.zeroing, |method| zero_once(file, method, offset, length))
    }
}

/// The device node of a partition or logical volume (a regular file in tests), opened for writing.
pub struct Device {
    file: File,
    zeroer: Zeroer,
}

impl Device {
    /// Opens the existing `path`, never creating it. A block device is opened with `O_EXCL`, which
    /// Linux refuses while the partition is mounted or otherwise claimed: writing under a mounted
    /// file system would corrupt it. (Without `O_CREAT`, `O_EXCL` is defined for block devices only,
    /// so other files are opened without it.)
    pub fn open(path: &Path) -> io::Result<Device> {
        let mut options = OpenOptions::new();
        options.write(true);
        if fs::metadata(path)?.file_type().is_block_device() {
            options.custom_flags(libc::O_EXCL);
        }
        Ok(Device { file: options.open(path)?, zeroer: Zeroer::default() })
    }

    /// Writes all of `reader` from offset 0 and syncs the device; returns the bytes written.
    pub fn write_image(&mut self, reader: &mut dyn Read) -> Result<u64, CopyError> {
        let written = copy_image(&mut &mut *reader, self)?;
        self.file.sync_all().map_err(CopyError::Write)?;
        Ok(written)
    }
}

/// `fallocate(2)`, retried when interrupted.
fn fallocate(file: &File, mode: libc::c_int, offset: u64, length: u64) -> io::Result<()> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "offset or length beyond off_t");
    let offset = libc::off_t::try_from(offset).map_err(|_| too_large())?;
    let length = libc::off_t::try_from(length).map_err(|_| too_large())?;
    loop {
        // SAFETY: fallocate reads only its integer arguments; the descriptor belongs to `file`,
        // which outlives the call.
        if unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, length) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

impl Target for Device {
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, bytes, offset)
    }

    fn zero(&mut self, offset: u64, length: u64) -> io::Result<()> {
        self.zeroer.zero(&self.file, offset, length)
    }
}

/// Copies all of `reader` to `target` from offset 0: runs of all-zero blocks are zeroed (merged
/// across chunks, so a long hole is one call), the rest is written. A last block shorter than
/// [`BLOCK_SIZE`] is always written, keeping zeroed ranges aligned as block devices need them.
/// Returns the number of bytes copied.
pub fn copy_image(reader: &mut impl Read, target: &mut impl Target) -> Result<u64, CopyError> {
    let block_size = BLOCK_SIZE as usize;
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let mut position = 0u64;
    // The zero run not zeroed yet: (offset, length).
    let mut zeros: Option<(u64, u64)> = None;
    loop {
        let count = read_full(reader, &mut buffer).map_err(CopyError::Read)?;
        // The start in `buffer` of the data run being collected.
        let mut data: Option<usize> = None;
        for (index, block) in buffer[..count].chunks(block_size).enumerate() {
            let start = index * block_size;
            if block.len() == block_size && is_zero(block) {
                if let Some(run) = data.take() {
                    target.write_all_at(&buffer[run..start], position + run as u64).map_err(CopyError::Write)?;
                }
                match &mut zeros {
                    Some((_, length)) => *length += BLOCK_SIZE,
                    None => zeros = Some((position + start as u64, BLOCK_SIZE)),
                }
            } else {
                if let Some((offset, length)) = zeros.take() {
                    target.zero(offset, length).map_err(CopyError::Write)?;
                }
                data.get_or_insert(start);
            }
        }
        if let Some(run) = data {
            target.write_all_at(&buffer[run..count], position + run as u64).map_err(CopyError::Write)?;
        }
        position += count as u64;
        if count < buffer.len() {
            break;
        }
    }
    if let Some((offset, length)) = zeros {
        target.zero(offset, length).map_err(CopyError::Write)?;
    }
    Ok(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = BLOCK_SIZE as usize;

    /// Records the calls, and applies them to an in-memory device full of junk.
    struct Recorder {
        content: Vec<u8>,
        calls: Vec<(&'static str, u64, u64)>,
    }

    impl Target for Recorder {
        fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
            self.calls.push(("write", offset, bytes.len() as u64));
            self.content[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
            Ok(())
        }

        fn zero(&mut self, offset: u64, length: u64) -> io::Result<()> {
            self.calls.push(("zero", offset, length));
            self.content[offset as usize..(offset + length) as usize].fill(0);
            Ok(())
        }
    }

    #[test]
    fn zero_runs_are_merged_across_chunks_and_data_runs_written() {
        // data block, then zeros from block 1 across the chunk boundary to 2 blocks into the next
        // chunk, a data block, a zero block, and a short zero block at the end.
        let length = CHUNK_SIZE + 4 * BLOCK + 100;
        let mut image = vec![0u8; length];
        image[7] = 1;
        image[CHUNK_SIZE + 2 * BLOCK + 5] = 2;
        let mut recorder = Recorder { content: vec![0xA5; length + BLOCK], calls: Vec::new() };
        assert_eq!(copy_image(&mut &image[..], &mut recorder).unwrap(), length as u64);
        let chunk = CHUNK_SIZE as u64;
        let block = BLOCK_SIZE;
        assert_eq!(
            recorder.calls,
            [
                ("write", 0, block),
                ("zero", block, chunk + block),
                ("write", chunk + 2 * block, block),
                ("zero", chunk + 3 * block, block),
                ("write", chunk + 4 * block, 100),
            ]
        );
        assert_eq!(&recorder.content[..length], &image[..]);
        assert!(recorder.content[length..].iter().all(|&byte| byte == 0xA5), "wrote past the image");
    }

    /// A device that zeroes with exactly one method: an unsupported method fails the copy
    /// instead of falling back, so the test knows which method ran.
    struct OneMethod<'a> {
        device: &'a mut Device,
        method: Zeroing,
    }

    impl Target for OneMethod<'_> {
        fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
            self.device.write_all_at(bytes, offset)
        }

        fn zero(&mut self, offset: u64, length: u64) -> io::Result<()> {
            zero_once(&self.device.file, self.method, offset, length)
        }
    }

    #[test]
    fn every_zeroing_method_leaves_zeros_over_junk_on_real_files() {
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if Path::new("/dev/shm").is_dir() {
            dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        let mut image = vec![0u8; 3 * CHUNK_SIZE + 3 * BLOCK];
        image[..BLOCK].fill(1);
        image[2 * CHUNK_SIZE..2 * CHUNK_SIZE + 10].fill(2);
        let junk_length = image.len() + 2 * BLOCK;
        let mut ran = Vec::new();
        for dir in &dirs {
            for method in [Zeroing::ZeroRange, Zeroing::PunchHole, Zeroing::WriteZeros] {
                let path = dir.path().join("device");
                fs::write(&path, vec![0xA5u8; junk_length]).unwrap();
                let mut device = Device::open(&path).unwrap();
                match copy_image(&mut &image[..], &mut OneMethod { device: &mut device, method }) {
                    Ok(copied) => assert_eq!(copied, image.len() as u64),
                    Err(CopyError::Write(error)) if unsupported(&error) => {
                        // Reported, not hidden: the method is untested on this file system.
                        eprintln!("{method:?} is not supported in {:?}: {error}", dir.path());
                        continue;
                    }
                    Err(error) => panic!("{method:?} in {:?}: {error:?}", dir.path()),
                }
                let content = fs::read(&path).unwrap();
                assert_eq!(content.len(), junk_length, "{method:?} changed the size");
                assert!(content[..image.len()] == image[..], "{method:?} in {:?}", dir.path());
                assert!(content[image.len()..].iter().all(|&byte| byte == 0xA5));
                eprintln!("{method:?} ran in {:?}", dir.path());
                ran.push(method);
            }
        }
        // Writing zeros works everywhere, and punching holes, what block devices and thin disks
        // need, on every file system a test runs on (ext4, xfs, btrfs, tmpfs, overlayfs).
        assert!(ran.contains(&Zeroing::WriteZeros), "{ran:?}");
        assert!(ran.contains(&Zeroing::PunchHole), "{ran:?}");
    }

    #[test]
    fn an_unsupported_zeroing_method_falls_back_to_the_next_and_stays_there() {
        let unsupported_error = || io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        let mut method = Zeroing::PunchHole;
        let mut tried = Vec::new();
        zero_with_fallback(&mut method, |candidate| {
            tried.push(candidate);
            if candidate == Zeroing::WriteZeros {
                Ok(())
            } else {
                Err(unsupported_error())
            }
        })
        .unwrap();
        assert_eq!(tried, [Zeroing::PunchHole, Zeroing::ZeroRange, Zeroing::WriteZeros]);
        assert_eq!(method, Zeroing::WriteZeros);

        // ENOSYS is "unsupported" too; the method that works is kept.
        let mut method = Zeroing::PunchHole;
        let mut tried = Vec::new();
        zero_with_fallback(&mut method, |candidate| {
            tried.push(candidate);
            match candidate {
                Zeroing::PunchHole => Err(io::Error::from_raw_os_error(libc::ENOSYS)),
                _ => Ok(()),
            }
        })
        .unwrap();
        assert_eq!((tried.as_slice(), method), (&[Zeroing::PunchHole, Zeroing::ZeroRange][..], Zeroing::ZeroRange));

        // Any other error is a failure to zero, returned as it is, without a fallback.
        let mut method = Zeroing::PunchHole;
        let error = zero_with_fallback(&mut method, |_| Err(io::Error::from_raw_os_error(libc::EIO))).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EIO));
        assert_eq!(method, Zeroing::PunchHole);
    }

    #[test]
    fn a_missing_device_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vda8");
        assert_eq!(Device::open(&path).err().map(|error| error.kind()), Some(io::ErrorKind::NotFound));
        assert!(!path.exists());
    }
}
