//! Artifacts as byte ranges of files, compared without reading their holes.
//!
//! A [`Blob`] is a window of a file (a whole file, a partition of a disk image, a tar member
//! extracted to a temporary file) with the file's sparse map ([`crate::sparse::scan`]),
//! so that two multi-GiB images that are mostly zeros are compared by reading their data blocks
//! only: where both sides are zero by the maps, they are equal without being read.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::report::Side;
use crate::sparse::{self, SparseMap, BLOCK_SIZE};

/// How much is read at a time.
const CHUNK: u64 = 1 << 20;
/// Differing spans closer than this are one range: ranges are exact at their edges and 4 KiB
/// granular in between.
const MERGE_GAP: u64 = 4096;
/// How many ranges are kept for the report and for annotation; the rest are only counted.
pub const KEPT_RANGES: usize = 1000;

/// A window of a file.
#[derive(Debug, Clone)]
pub struct Blob {
    pub file: Arc<File>,
    /// The data extents of the whole file.
    pub map: Arc<SparseMap>,
    pub offset: u64,
    pub length: u64,
    /// Where it comes from, for error messages: the file and the chain of members and partitions.
    pub origin: String,
}

impl Blob {
    /// The whole file at `path`. The error is the one of opening or scanning it.
    pub fn open(path: &Path, origin: String) -> io::Result<Blob> {
        Blob::from_file(File::open(path)?, origin)
    }

    pub fn from_file(mut file: File, origin: String) -> io::Result<Blob> {
        let map = sparse::scan(&mut file)?;
        let length = map.size;
        Ok(Blob { file: Arc::new(file), map: Arc::new(map), offset: 0, length, origin })
    }

    /// The part `offset..offset + length` of this blob, cut at its end.
    pub fn window(&self, offset: u64, length: u64, origin: String) -> Blob {
        let offset = offset.min(self.length);
        let length = length.min(self.length - offset);
        Blob { file: Arc::clone(&self.file), map: Arc::clone(&self.map), offset: self.offset + offset, length, origin }
    }

    /// Reads up to `buffer.len()` bytes at `position` (relative), fewer only at the end.
    pub fn read_at(&self, buffer: &mut [u8], position: u64) -> io::Result<usize> {
        if position >= self.length {
            return Ok(0);
        }
        let want = buffer.len().min(usize::try_from(self.length - position).unwrap_or(usize::MAX));
        let mut filled = 0;
        while filled < want {
            match self.file.read_at(&mut buffer[filled..want], self.offset + position + filled as u64) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than expected")),
                Ok(count) => filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(filled)
    }

    /// The first `count` bytes (fewer if the blob is shorter).
    pub fn head(&self, count: usize) -> io::Result<Vec<u8>> {
        let mut buffer = vec![0u8; count.min(usize::try_from(self.length).unwrap_or(usize::MAX))];
        let read = self.read_at(&mut buffer, 0)?;
        buffer.truncate(read);
        Ok(buffer)
    }

    /// The data extents of the window, relative to its start, cut to it.
    pub fn data_extents(&self) -> Vec<(u64, u64)> {
        let end = self.offset + self.length;
        self.map
            .extents
            .iter()
            .filter(|extent| extent.offset < end && extent.offset + extent.length > self.offset)
            .map(|extent| {
                let start = extent.offset.max(self.offset) - self.offset;
                let stop = (extent.offset + extent.length).min(end) - self.offset;
                (start, stop)
            })
            .collect()
    }

    /// A `Read + Seek` over the window with its own position.
    pub fn reader(&self) -> BlobReader {
        BlobReader { blob: self.clone(), position: 0 }
    }

    /// SHA-256 of the window, holes hashed as zeros without being read.
    pub fn sha256(&self) -> io::Result<[u8; 32]> {
        let mut hasher = Sha256::new();
        let zeros = vec![0u8; CHUNK as usize];
        let mut buffer = vec![0u8; CHUNK as usize];
        let mut position = 0;
        let hash_zeros = |hasher: &mut Sha256, mut count: u64| {
            while count > 0 {
                let step = count.min(CHUNK);
                hasher.update(&zeros[..step as usize]);
                count -= step;
            }
        };
        for (start, end) in self.data_extents() {
            hash_zeros(&mut hasher, start - position);
            let mut at = start;
            while at < end {
                let want = (end - at).min(CHUNK) as usize;
                let read = self.read_at(&mut buffer[..want], at)?;
                hasher.update(&buffer[..read]);
                at += read as u64;
            }
            position = end;
        }
        hash_zeros(&mut hasher, self.length - position);
        Ok(hasher.finalize().into())
    }
}

/// `Read + Seek` over a [`Blob`]; never writes (`Write` fails), which is what fatfs, which wants
/// a read-write device, needs to be safe on an input.
#[derive(Debug)]
pub struct BlobReader {
    blob: Blob,
    position: u64,
}

impl Read for BlobReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.blob.read_at(buffer, self.position)?;
        self.position += count as u64;
        Ok(count)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        let target = match position {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.blob.length.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the artifact"))?;
        self.position = target;
        Ok(target)
    }
}

impl Write for BlobReader {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "the artifacts being compared are read only"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The outcome of comparing two blobs byte by byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteComparison {
    pub size_a: u64,
    pub size_b: u64,
    pub differing_bytes: u64,
    pub ranges: RangeCollector,
}

impl ByteComparison {
    pub fn identical(&self) -> bool {
        self.size_a == self.size_b && self.ranges.count == 0
    }
}

/// Differing spans, merged when less than 4 KiB apart, the first [`KEPT_RANGES`] kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeCollector {
    /// (start, end), sorted.
    pub ranges: Vec<(u64, u64)>,
    /// All ranges, kept or not.
    pub count: u64,
    /// The end of the last range, kept or not.
    last_end: Option<u64>,
}

impl RangeCollector {
    /// Adds the span `start..end`, which must not start before the previous one.
    pub fn push(&mut self, start: u64, end: u64) {
        if let Some(last_end) = self.last_end {
            if start <= last_end + MERGE_GAP {
                if self.ranges.len() as u64 == self.count {
                    if let Some(last) = self.ranges.last_mut() {
                        last.1 = last.1.max(end);
                    }
                }
                self.last_end = Some(last_end.max(end));
                return;
            }
        }
        self.count += 1;
        if self.ranges.len() < KEPT_RANGES {
            self.ranges.push((start, end));
        }
        self.last_end = Some(end);
    }
}

/// Compares `a` and `b` over their common length; reads only where either has data. An error
/// says which side could not be read.
pub fn compare(a: &Blob, b: &Blob) -> Result<ByteComparison, (Side, io::Error)> {
    let common = a.length.min(b.length);
    let candidates = union(&a.data_extents(), &b.data_extents(), common);
    let mut result =
        ByteComparison { size_a: a.length, size_b: b.length, differing_bytes: 0, ranges: RangeCollector::default() };
    let mut buffer_a = vec![0u8; CHUNK as usize];
    let mut buffer_b = vec![0u8; CHUNK as usize];
    for (start, end) in candidates {
        let mut position = start;
        while position < end {
            let want = (end - position).min(CHUNK) as usize;
            let short = || io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than expected");
            let read_a = a.read_at(&mut buffer_a[..want], position).map_err(|error| (Side::A, error))?;
            if read_a != want {
                return Err((Side::A, short()));
            }
            let read_b = b.read_at(&mut buffer_b[..want], position).map_err(|error| (Side::B, error))?;
            if read_b != want {
                return Err((Side::B, short()));
            }
            if buffer_a[..want] != buffer_b[..want] {
                diff_chunk(&buffer_a[..want], &buffer_b[..want], position, &mut result);
            }
            position += want as u64;
        }
    }
    Ok(result)
}

/// Adds the differing spans of one chunk, block by block.
fn diff_chunk(a: &[u8], b: &[u8], base: u64, result: &mut ByteComparison) {
    for (index, (block_a, block_b)) in a.chunks(BLOCK_SIZE as usize).zip(b.chunks(BLOCK_SIZE as usize)).enumerate() {
        if block_a == block_b {
            continue;
        }
        let differing: Vec<usize> =
            block_a.iter().zip(block_b).enumerate().filter(|(_, (x, y))| x != y).map(|(at, _)| at).collect();
        let (Some(&first), Some(&last)) = (differing.first(), differing.last()) else { continue };
        result.differing_bytes += differing.len() as u64;
        let block_start = base + index as u64 * BLOCK_SIZE;
        result.ranges.push(block_start + first as u64, block_start + last as u64 + 1);
    }
}

/// The union of two lists of ranges, widened to whole 4 KiB blocks of the blob (so that every
/// chunk read starts on a block boundary and blocks are the same in every chunk) and cut at
/// `limit`.
fn union(a: &[(u64, u64)], b: &[(u64, u64)], limit: u64) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a
        .iter()
        .chain(b)
        .filter(|&&(start, _)| start < limit)
        .map(|&(start, end)| (start / BLOCK_SIZE * BLOCK_SIZE, end.next_multiple_of(BLOCK_SIZE).min(limit)))
        .collect();
    all.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (start, end) in all {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Copies `reader` into the new file `file`, leaving all-zero 4 KiB blocks as holes, and sets
/// its length. Returns the number of bytes copied. Used for decompressed images, which are
/// mostly zeros: they stay small on disk.
pub fn copy_sparse(reader: &mut impl Read, file: &File) -> io::Result<u64> {
    let mut buffer = vec![0u8; CHUNK as usize];
    let mut position = 0u64;
    loop {
        let count = sparse::read_full(reader, &mut buffer)?;
        for (index, block) in buffer[..count].chunks(BLOCK_SIZE as usize).enumerate() {
            if !sparse::is_zero(block) {
                file.write_all_at(block, position + index as u64 * BLOCK_SIZE)?;
            }
        }
        position += count as u64;
        if count < buffer.len() {
            break;
        }
    }
    file.set_len(position)?;
    Ok(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(bytes: &[u8]) -> Blob {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        Blob::from_file(file, "test".into()).unwrap()
    }

    #[test]
    fn ranges_merge_when_close_and_are_capped() {
        let mut ranges = RangeCollector::default();
        ranges.push(10, 11);
        ranges.push(100, 200);
        ranges.push(4200, 4201);
        ranges.push(8400, 8401);
        assert_eq!(ranges.ranges, [(10, 4201), (8400, 8401)]);
        assert_eq!(ranges.count, 2);
        ranges.push(8401, 8500);
        assert_eq!(ranges.ranges, [(10, 4201), (8400, 8500)]);
        let mut many = RangeCollector::default();
        for index in 0..(KEPT_RANGES as u64 + 5) {
            many.push(index * 100_000, index * 100_000 + 1);
        }
        assert_eq!(many.ranges.len(), KEPT_RANGES);
        assert_eq!(many.count, KEPT_RANGES as u64 + 5);
        // A span merging into a range past the cap does not change the kept ones.
        many.push((KEPT_RANGES as u64 + 4) * 100_000 + 2, (KEPT_RANGES as u64 + 4) * 100_000 + 9);
        assert_eq!(many.count, KEPT_RANGES as u64 + 5);
        assert_eq!(
            many.ranges.last(),
            Some(&((KEPT_RANGES as u64 - 1) * 100_000, (KEPT_RANGES as u64 - 1) * 100_000 + 1))
        );
    }

    #[test]
    fn compares_exact_ranges_and_skips_common_holes() {
        let mut a = vec![0u8; 64 * 1024];
        a[100] = 1;
        a[40_000..40_010].fill(7);
        let mut b = a.clone();
        b[101] = 2;
        b[40_005] = 8;
        b[60_000] = 9;
        let result = compare(&blob(&a), &blob(&b)).unwrap();
        assert!(!result.identical());
        assert_eq!(result.ranges.ranges, [(101, 102), (40_005, 40_006), (60_000, 60_001)]);
        assert_eq!(result.differing_bytes, 3);
        assert!(compare(&blob(&a), &blob(&a)).unwrap().identical());
        let shorter = compare(&blob(&a), &blob(&a[..1000])).unwrap();
        assert!(!shorter.identical());
        assert_eq!(shorter.ranges.count, 0);
    }

    #[test]
    fn windows_compare_relative_to_their_start() {
        let mut bytes = vec![0u8; 3 * 8192];
        bytes[8192 + 5] = 1;
        bytes[2 * 8192 + 6] = 1;
        let whole = blob(&bytes);
        let first = whole.window(8192, 8192, "first".into());
        let second = whole.window(2 * 8192, 100_000, "second".into());
        assert_eq!(second.length, 8192);
        let result = compare(&first, &second).unwrap();
        assert_eq!(result.ranges.ranges, [(5, 7)]);
        assert_eq!(result.differing_bytes, 2);
        assert_eq!(first.head(8).unwrap(), [0, 0, 0, 0, 0, 1, 0, 0]);
        let mut reader = first.reader();
        reader.seek(SeekFrom::Start(4)).unwrap();
        let mut two = [0u8; 2];
        reader.read_exact(&mut two).unwrap();
        assert_eq!(two, [0, 1]);
        assert!(reader.write(b"x").is_err());
    }

    #[test]
    fn sparse_copy_and_hash_agree_with_the_bytes() {
        let mut bytes = vec![0u8; 3 * 4096 + 10];
        bytes[5000] = 3;
        bytes[3 * 4096 + 9] = 4;
        let file = tempfile::tempfile().unwrap();
        assert_eq!(copy_sparse(&mut &bytes[..], &file).unwrap(), bytes.len() as u64);
        let copy = Blob::from_file(file, "copy".into()).unwrap();
        assert_eq!(copy.length, bytes.len() as u64);
        assert!(compare(&copy, &blob(&bytes)).unwrap().identical());
        assert_eq!(copy.sha256().unwrap(), <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(
            copy.window(4096, 4096, "w".into()).sha256().unwrap(),
            <[u8; 32]>::from(Sha256::digest(&bytes[4096..8192]))
        );
    }
}
