//! Sparse files described by their content, not by how the host happened to allocate them.
//!
//! A block is a hole when its 4096 bytes are all zero. The map is computed by reading the whole
//! content, so a file written densely (explicit zeros) and one written with holes, on tmpfs or on
//! ext4 with any block size, give the same map and hence the same archive bytes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The granularity of sparse maps and of the holes left in written files.
pub const BLOCK_SIZE: u64 = 4096;

/// How much is read at a time: a whole number of blocks.
const BUFFER_SIZE: usize = 256 * BLOCK_SIZE as usize;

/// A run of data (not all-zero) bytes in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
}

/// The data extents of a file, in order, merged when adjacent; everything else reads as zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseMap {
    pub size: u64,
    pub extents: Vec<Extent>,
}

impl SparseMap {
    /// The number of bytes in data extents.
    pub fn data_bytes(&self) -> u64 {
        self.extents.iter().map(|extent| extent.length).sum()
    }

    /// Whether some part of the file is a hole.
    pub fn has_holes(&self) -> bool {
        self.data_bytes() != self.size
    }

    fn push_data(&mut self, offset: u64, length: u64) {
        match self.extents.last_mut() {
            Some(last) if last.offset + last.length == offset => last.length += length,
            _ => self.extents.push(Extent { offset, length }),
        }
    }
}

/// Whether `bytes` are all zero. OR-folding has no early exit, so it vectorises well.
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |accumulator, byte| accumulator | byte) == 0
}

/// Reads until `buffer` is full or the input ends; returns the number of bytes read.
pub fn read_full(reader: &mut (impl Read + ?Sized), buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Scans `file` and returns its sparse map at `BLOCK_SIZE` granularity (the last block may be
/// shorter). The file system's own holes are skipped unread, as a hint only: every block that
/// touches a region the file system reports as data is read and judged by its content, so the map
/// equals that of a full scan.
pub fn scan(file: &mut File) -> io::Result<SparseMap> {
    let size = file.metadata()?.len();
    let mut map = SparseMap { size, extents: Vec::new() };
    let mut scanned_to = 0;
    for (start, end) in allocation::data_regions(file, size)? {
        let start = (start / BLOCK_SIZE * BLOCK_SIZE).max(scanned_to);
        let end = end.next_multiple_of(BLOCK_SIZE).min(size);
        if start < end {
            scan_range(file, start, end, &mut map)?;
            scanned_to = end;
        }
    }
    Ok(map)
}

/// Adds the data blocks of `start..end` (`start` block-aligned) to `map`.
fn scan_range(file: &mut File, start: u64, end: u64, map: &mut SparseMap) -> io::Result<()> {
    file.seek(SeekFrom::Start(start))?;
    add_data_blocks(file, start, end, map)
}

/// Adds the data blocks that `reader` yields for `start..end` to `map`.
fn add_data_blocks(reader: &mut (impl Read + ?Sized), start: u64, end: u64, map: &mut SparseMap) -> io::Result<()> {
    for_each_data_block(
        reader,
        start,
        end,
        |error| error,
        |position, block| {
            map.push_data(position, block.len() as u64);
            Ok(())
        },
    )
}

/// Reads `reader` from `start` (block-aligned) to `end` and calls `data` with the position and
/// bytes of every block that is not all zero; `read_error` wraps the errors of reading.
fn for_each_data_block<E>(
    reader: &mut (impl Read + ?Sized),
    start: u64,
    end: u64,
    read_error: impl Fn(io::Error) -> E,
    mut data: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut buffer = vec![0u8; BUFFER_SIZE];
    let mut position = start;
    while position < end {
        let want = (end - position).min(BUFFER_SIZE as u64) as usize;
        if read_full(reader, &mut buffer[..want]).map_err(&read_error)? < want {
            return Err(read_error(io::Error::new(io::ErrorKind::UnexpectedEof, "the content ended early")));
        }
        for block in buffer[..want].chunks(BLOCK_SIZE as usize) {
            if !is_zero(block) {
                data(position, block)?;
            }
            position += block.len() as u64;
        }
    }
    Ok(())
}

/// The sparse map of the `size` bytes that `reader` yields (a stream in which holes read as
/// zeros, such as a package member): the map [`scan`] gives for the same content in a file.
pub fn scan_stream(reader: &mut (impl Read + ?Sized), size: u64) -> io::Result<SparseMap> {
    let mut map = SparseMap { size, extents: Vec::new() };
    add_data_blocks(reader, 0, size, &mut map)?;
    Ok(map)
}

/// Copies the blocks of the `size` bytes that `reader` yields that are not all zero into `output`
/// at `offset`; the zero blocks are not written (holes in a new file), as [`copy_extents_at`] does.
pub fn copy_stream_at(
    reader: &mut (impl Read + ?Sized),
    size: u64,
    output: &mut impl WriteAt,
    offset: u64,
) -> Result<(), CopyError> {
    for_each_data_block(reader, 0, size, CopyError::Read, |position, block| {
        output.write_all_at(block, offset + position).map_err(CopyError::Write)
    })
}

/// Writes the bytes of `map`'s extents to `writer`, reading the content sequentially from
/// `reader` (which yields the whole content, holes as zeros): the data part of a sparse tar member.
pub fn write_extents_of_stream(
    reader: &mut (impl Read + ?Sized),
    map: &SparseMap,
    writer: &mut (impl Write + ?Sized),
) -> Result<(), CopyError> {
    let mut position = 0;
    for extent in &map.extents {
        let skipped =
            io::copy(&mut (&mut *reader).take(extent.offset - position), &mut io::sink()).map_err(CopyError::Read)?;
        let copied = copy_exactly(reader, extent.length, writer)?;
        if skipped != extent.offset - position || copied != extent.length {
            return Err(CopyError::Read(io::Error::new(io::ErrorKind::UnexpectedEof, "the content ended early")));
        }
        position = extent.offset + extent.length;
    }
    Ok(())
}

/// Copies up to `length` bytes from `reader` to `writer`; returns how many there were.
fn copy_exactly(
    reader: &mut (impl Read + ?Sized),
    length: u64,
    writer: &mut (impl Write + ?Sized),
) -> Result<u64, CopyError> {
    let mut buffer = vec![0u8; BUFFER_SIZE];
    let mut done = 0;
    while done < length {
        let want = (length - done).min(BUFFER_SIZE as u64) as usize;
        let count = read_full(reader, &mut buffer[..want]).map_err(CopyError::Read)?;
        writer.write_all(&buffer[..count]).map_err(CopyError::Write)?;
        done += count as u64;
        if count < want {
            break;
        }
    }
    Ok(done)
}

/// Copies the data extents of `source` (described by `map`) into `output` at `offset`; the rest
/// of the region is left as it is (holes in a new file).
pub fn copy_extents_at(
    source: &mut File,
    map: &SparseMap,
    output: &mut impl WriteAt,
    offset: u64,
) -> Result<(), CopyError> {
    let mut buffer = vec![0u8; BUFFER_SIZE];
    for extent in &map.extents {
        source.seek(SeekFrom::Start(extent.offset)).map_err(CopyError::Read)?;
        let mut done = 0;
        while done < extent.length {
            let want = (extent.length - done).min(BUFFER_SIZE as u64) as usize;
            let count = read_full(source, &mut buffer[..want]).map_err(CopyError::Read)?;
            if count < want {
                return Err(CopyError::Read(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank")));
            }
            output.write_all_at(&buffer[..count], offset + extent.offset + done).map_err(CopyError::Write)?;
            done += count as u64;
        }
    }
    Ok(())
}

pub use allocation::data_regions;

/// Where the file system says a file has data (`SEEK_DATA`/`SEEK_HOLE`, which std does not
/// expose: `libc::lseek`).
mod allocation {
    use std::fs::File;
    use std::io;

    /// The data regions `(start, end)` of `file`, in order; the whole file when the file system
    /// cannot tell.
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    pub fn data_regions(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
        use std::os::unix::io::AsRawFd;

        use libc::{lseek, EINVAL, ENXIO, SEEK_DATA, SEEK_HOLE};

        // Ok(None): no data at or after `offset` (ENXIO).
        let seek = |offset: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
            let offset = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: lseek only reads its integer arguments; the descriptor is owned by `file`,
            // which outlives the call. Moving the file offset is harmless: callers seek before
            // every read.
            let result = unsafe { lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
            if result >= 0 {
                return Ok(Some(result as u64));
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(ENXIO) => Ok(None),
                _ => Err(error),
            }
        };
        let mut regions = Vec::new();
        let mut position = 0;
        while position < size {
            let start = match seek(position, SEEK_DATA) {
                Ok(Some(start)) if start < size => start,
                Ok(_) => break,
                Err(error) if error.raw_os_error() == Some(EINVAL) => return Ok(vec![(0, size)]),
                Err(error) => return Err(error),
            };
            let end = seek(start, SEEK_HOLE)?.unwrap_or(size).min(size);
            // A file system that answers nonsense gets its file read in full from here.
            let end = if end > start { end } else { size };
            regions.push((start, end));
            position = end;
        }
        Ok(regions)
    }

    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    pub fn data_regions(_file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
        Ok(vec![(0, size)])
    }
}

/// Which side of a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("read: {0}")]
    Read(io::Error),
    #[error("write: {0}")]
    Write(io::Error),
}

/// Positioned writes: lets the sparse copy work on files and on in-memory buffers in tests.
pub trait WriteAt {
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()>;
}

impl<T: Write + Seek> WriteAt for T {
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.seek(SeekFrom::Start(offset))?;
        self.write_all(bytes)
    }
}

/// A file written at offsets (`pwrite`), leaving its position alone.
pub struct AtOffsets<'a>(pub &'a File);

impl WriteAt for AtOffsets<'_> {
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self.0, bytes, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Cursor;
    use std::os::unix::fs::MetadataExt;

    fn content() -> Vec<u8> {
        // hole, data, two-block hole, data straddling into a short last block.
        let mut bytes = vec![0u8; 4096 * 5 + 100];
        bytes[4096 + 7] = 1;
        bytes[4096 * 4 + 4095] = 2;
        bytes[4096 * 5 + 99] = 3;
        bytes
    }

    #[test]
    fn map_is_the_same_for_dense_and_sparse_files() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = content();
        let dense_path = dir.path().join("dense");
        std::fs::write(&dense_path, &bytes).unwrap();
        let sparse_path = dir.path().join("sparse");
        let mut sparse = File::create(&sparse_path).unwrap();
        copy_stream_at(&mut &bytes[..], bytes.len() as u64, &mut sparse, 0).unwrap();
        sparse.set_len(bytes.len() as u64).unwrap();
        assert_eq!(std::fs::read(&sparse_path).unwrap(), bytes);
        let dense_map = scan(&mut File::open(&dense_path).unwrap()).unwrap();
        let sparse_map = scan(&mut File::open(&sparse_path).unwrap()).unwrap();
        assert_eq!(dense_map, sparse_map);
        assert_eq!(
            dense_map.extents,
            [Extent { offset: 4096, length: 4096 }, Extent { offset: 4096 * 4, length: 4096 + 100 }]
        );
        assert_eq!(dense_map.size, bytes.len() as u64);
        assert!(dense_map.has_holes());
        // Three data blocks of 4 KiB at most were allocated, whatever the file system.
        assert!(std::fs::metadata(&sparse_path).unwrap().blocks() * 512 < bytes.len() as u64);
    }

    /// The map by reading every byte, without file-system hints.
    fn full_scan(bytes: &[u8]) -> SparseMap {
        let mut map = SparseMap { size: bytes.len() as u64, extents: Vec::new() };
        for (index, block) in bytes.chunks(BLOCK_SIZE as usize).enumerate() {
            if !is_zero(block) {
                map.push_data(index as u64 * BLOCK_SIZE, block.len() as u64);
            }
        }
        map
    }

    #[test]
    fn hinted_scan_equals_a_full_scan() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holey");
        // Small writes at odd offsets, one across a block boundary, one far out, zeros written
        // explicitly into a region, and a size that ends mid-block after a hole.
        let writes: [(u64, &[u8]); 5] = [
            (100, b"a"),
            (3 * 4096 - 2, b"bcde"),
            (40 << 20, b"far"),
            (50 << 20, &[0u8; 8192]),
            ((60 << 20) + 9, b"z"),
        ];
        let file = File::create(&path).unwrap();
        for (offset, bytes) in writes {
            file.write_all_at(bytes, offset).unwrap();
        }
        file.set_len((64 << 20) + 1234).unwrap();
        let map = scan(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(map, full_scan(&fs::read(&path).unwrap()));
        assert_eq!(map.extents.len(), 4, "{map:?}");
    }

    #[test]
    fn copy_writes_at_the_offset_and_nothing_for_zeros() {
        let mut output = Cursor::new(vec![9u8; 3 * 4096]);
        let input = [vec![0u8; 4096], vec![5u8; 10]].concat();
        copy_stream_at(&mut &input[..], input.len() as u64, &mut output, 4096).unwrap();
        let written = output.into_inner();
        assert!(written[4096..8192].iter().all(|&byte| byte == 9), "zero block was written");
        assert_eq!(&written[8192..8202], &[5u8; 10]);
    }

    #[test]
    fn empty_and_dense_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let map = scan(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!((map.size, map.extents.len(), map.has_holes()), (0, 0, false));
        std::fs::write(&path, vec![1u8; 10000]).unwrap();
        let map = scan(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(map.extents, [Extent { offset: 0, length: 10000 }]);
        assert!(!map.has_holes());
    }
}
