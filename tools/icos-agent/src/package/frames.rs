//! A package as a sequence of zstd frames with an index, so that the data of an image is
//! compressed once in a whole build: a package made from other packages copies their data frames
//! byte for byte instead of decompressing and compressing them again.
//!
//! Layout: the data of every member is in frames of its own (none for a member that is all
//! holes), each carrying its content size; tar headers, padding and the end-of-archive marker are
//! in small frames between them. The package ends with the index: a zstd skippable frame (which
//! `zstd -d`, GNU tar and libzstd skip) holding, per member, its size, its data extents and the
//! byte ranges of its data frames. Concatenated, the frames decompress to the plain tar stream, so
//! the package is an ordinary `.tar.zst`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use zstd::stream::raw::CParameter;

use super::{PackageError, DEFAULT_LEVEL, DEFAULT_LEVEL_TABLE_LOG, WINDOW_LOG};
use crate::io_error::PathIoError;
use crate::sparse::{Extent, SparseMap};

/// The magic number of the index's skippable frame (zstd reserves 0x184D2A50 to 0x184D2A5F).
const INDEX_FRAME_MAGIC: u32 = 0x184D_2A5E;
/// The last bytes of a package with an index, after the index's JSON and its length.
const INDEX_TAG: &[u8; 8] = b"icosidx1";
/// Magic, frame size; then the JSON; then its length (u32 LE) and the tag.
const INDEX_FRAME_HEADER: u64 = 8;
const INDEX_TRAILER: u64 = 4 + INDEX_TAG.len() as u64;
/// An index larger than this is not one of ours.
const INDEX_LIMIT: u64 = 64 << 20;

/// The four bytes that start a zstd frame.
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// A zstd frame in a package: where it is, and how many bytes it decompresses to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameSpan {
    pub offset: u64,
    pub length: u64,
    pub content: u64,
}

/// What the index says of one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberIndex {
    pub name: String,
    /// The member's size, holes included.
    pub size: u64,
    /// Its data extents as (offset, length), in order.
    pub extents: Vec<(u64, u64)>,
    /// The frames whose content, concatenated, is the data of `extents`.
    pub frames: Vec<FrameSpan>,
}

impl MemberIndex {
    pub fn map(&self) -> SparseMap {
        SparseMap {
            size: self.size,
            extents: self.extents.iter().map(|&(offset, length)| Extent { offset, length }).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageIndex {
    pub members: Vec<MemberIndex>,
}

impl PackageIndex {
    /// Reads the index at the end of the package `file` (named `path` in errors): `None` for a
    /// `.tar.zst` without one. An index that does not agree with the package is an error.
    pub fn read(file: &File, path: &Path) -> Result<Option<PackageIndex>, PackageError> {
        use std::os::unix::fs::FileExt;
        let read_error = PathIoError::with("read", path);
        let bad = |problem: String| PackageError::BadArchive { path: path.to_owned(), problem };
        let length = file.metadata().map_err(read_error)?.len();
        if length < INDEX_FRAME_HEADER + INDEX_TRAILER {
            return Ok(None);
        }
        let mut trailer = [0u8; INDEX_TRAILER as usize];
        file.read_exact_at(&mut trailer, length - INDEX_TRAILER).map_err(PathIoError::with("read", path))?;
        if &trailer[4..] != INDEX_TAG {
            return Ok(None);
        }
        let json_length = u64::from(u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]));
        if json_length > INDEX_LIMIT || json_length + INDEX_FRAME_HEADER + INDEX_TRAILER > length {
            return Err(bad(format!("its index claims {json_length} bytes")));
        }
        let start = length - INDEX_TRAILER - json_length - INDEX_FRAME_HEADER;
        let mut header = [0u8; INDEX_FRAME_HEADER as usize];
        file.read_exact_at(&mut header, start).map_err(PathIoError::with("read", path))?;
        let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let frame_size = u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
        if magic != INDEX_FRAME_MAGIC || frame_size != json_length + INDEX_TRAILER {
            return Err(bad("its index frame is damaged".into()));
        }
        let mut json = vec![0u8; json_length as usize];
        file.read_exact_at(&mut json, start + INDEX_FRAME_HEADER).map_err(PathIoError::with("read", path))?;
        let index: PackageIndex =
            serde_json::from_slice(&json).map_err(|error| bad(format!("its index is not valid: {error}")))?;
        index.check(file, path, start)?;
        Ok(Some(index))
    }

    /// Checks that every member's extents are ordered and inside it, that its frames hold as
    /// many bytes as its extents, and that each frame lies before the index and starts with a
    /// zstd frame header that declares that content size.
    fn check(&self, file: &File, path: &Path, index_start: u64) -> Result<(), PackageError> {
        use std::os::unix::fs::FileExt;
        let bad = |problem: String| PackageError::BadArchive { path: path.to_owned(), problem };
        for member in &self.members {
            let mut end = 0;
            for &(offset, length) in &member.extents {
                if offset < end || length == 0 || offset.checked_add(length).is_none_or(|stop| stop > member.size) {
                    return Err(bad(format!("its index gives member {:?} a bad extent", member.name)));
                }
                end = offset + length;
            }
            let data: u64 = member.extents.iter().map(|&(_, length)| length).sum();
            let framed: u64 = member.frames.iter().map(|frame| frame.content).sum();
            if data != framed {
                return Err(bad(format!(
                    "its index gives member {:?} {data} bytes of data in frames of {framed} bytes",
                    member.name
                )));
            }
            for frame in &member.frames {
                if frame.offset.checked_add(frame.length).is_none_or(|stop| stop > index_start) {
                    return Err(bad(format!("its index puts a frame of {:?} outside the package", member.name)));
                }
                let mut header = [0u8; 18];
                let count = (frame.length as usize).min(header.len());
                file.read_exact_at(&mut header[..count], frame.offset).map_err(PathIoError::with("read", path))?;
                let declared = zstd::zstd_safe::get_frame_content_size(&header[..count]);
                if header[..4] != ZSTD_MAGIC || !matches!(declared, Ok(Some(size)) if size == frame.content) {
                    return Err(bad(format!(
                        "its index points at no frame of {} bytes at offset {} (member {:?})",
                        frame.content, frame.offset, member.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Compression parameters. `threads` changes the speed, never the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionOptions {
    pub level: i32,
    pub threads: u32,
}

impl Default for CompressionOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |count| count.get() as u32);
        CompressionOptions { level: super::DEFAULT_LEVEL, threads }
    }
}

/// Writes a package frame by frame into `file` from its start: small frames for the tar
/// structure, data frames compressed here or copied from another package, the index at the end.
pub(crate) struct FrameWriter<'a> {
    file: &'a mut File,
    path: &'a Path,
    options: CompressionOptions,
    /// Where the next frame goes.
    position: u64,
    /// Tar structure waiting for its small frame.
    pending: Vec<u8>,
    members: Vec<MemberIndex>,
}

impl<'a> FrameWriter<'a> {
    pub fn new(file: &'a mut File, path: &'a Path, options: CompressionOptions) -> Self {
        FrameWriter { file, path, options, position: 0, pending: Vec::new(), members: Vec::new() }
    }

    fn write_error(&self) -> impl Fn(io::Error) -> PackageError + '_ {
        move |source| PackageError::Io(PathIoError { action: "write", path: self.path.to_owned(), source })
    }

    fn compress_error(&self) -> impl Fn(io::Error) -> PackageError + '_ {
        move |source| PackageError::Compress { path: self.path.to_owned(), source }
    }

    /// Adds tar structure (headers, padding) to the next small frame.
    pub fn structure(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Compresses what [`FrameWriter::structure`] collected into one frame, in one thread (the
    /// bytes do not depend on it).
    fn flush_structure(&mut self) -> Result<(), PackageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.pending);
        let frame = self.compress_small(&bytes)?;
        self.file.write_all(&frame).map_err(self.write_error())?;
        self.position += frame.len() as u64;
        Ok(())
    }

    fn compress_small(&self, bytes: &[u8]) -> Result<Vec<u8>, PackageError> {
        let mut encoder =
            zstd::stream::write::Encoder::new(Vec::new(), self.options.level).map_err(self.compress_error())?;
        encoder.include_checksum(true).map_err(self.compress_error())?;
        encoder.set_pledged_src_size(Some(bytes.len() as u64)).map_err(self.compress_error())?;
        encoder.write_all(bytes).map_err(self.compress_error())?;
        encoder.finish().map_err(self.compress_error())
    }

    /// Starts the index entry of the member whose data comes next.
    pub fn begin_member(&mut self, name: &str, map: &SparseMap) -> Result<(), PackageError> {
        self.flush_structure()?;
        self.members.push(MemberIndex {
            name: name.to_owned(),
            size: map.size,
            extents: map.extents.iter().map(|extent| (extent.offset, extent.length)).collect(),
            frames: Vec::new(),
        });
        Ok(())
    }

    /// Compresses `content` bytes that `fill` writes as one data frame of the current member:
    /// multithreaded, long-distance matching over a 128 MiB window, at the default level wider
    /// match-finder tables, the size in the header.
    /// `fill` reports its own read errors; a short count is an error.
    pub fn compress_data(
        &mut self,
        content: u64,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), PackageError>,
    ) -> Result<(), PackageError> {
        if content == 0 {
            return Ok(());
        }
        self.flush_structure()?;
        let start = self.position;
        let options = self.options;
        let path = self.path.to_owned();
        let compress_error = |source| PackageError::Compress { path: path.clone(), source };
        let mut counted = CountingWriter { inner: &mut *self.file, count: 0 };
        let mut encoder = zstd::stream::write::Encoder::new(&mut counted, options.level).map_err(compress_error)?;
        encoder.multithread(options.threads).map_err(compress_error)?;
        encoder.include_checksum(true).map_err(compress_error)?;
        encoder.long_distance_matching(true).map_err(compress_error)?;
        encoder.window_log(WINDOW_LOG).map_err(compress_error)?;
        if options.level == DEFAULT_LEVEL {
            encoder.set_parameter(CParameter::HashLog(DEFAULT_LEVEL_TABLE_LOG)).map_err(compress_error)?;
            encoder.set_parameter(CParameter::ChainLog(DEFAULT_LEVEL_TABLE_LOG)).map_err(compress_error)?;
        }
        encoder.set_pledged_src_size(Some(content)).map_err(compress_error)?;
        let mut limited = LengthCheck { inner: &mut encoder, written: 0, limit: content };
        fill(&mut limited)?;
        if limited.written != content {
            return Err(PackageError::Changed { path: self.path.to_owned() });
        }
        encoder.finish().map_err(compress_error)?;
        let length = counted.count;
        self.position += length;
        self.push_frame(FrameSpan { offset: start, length, content });
        Ok(())
    }

    /// Copies data frames of the current member from the package `source` (named `source_path`)
    /// as they are.
    pub fn copy_frames(&mut self, source: &File, source_path: &Path, frames: &[FrameSpan]) -> Result<(), PackageError> {
        self.flush_structure()?;
        let read_error =
            |source| PackageError::Io(PathIoError { action: "read", path: source_path.to_owned(), source });
        for frame in frames {
            let mut reader = source;
            reader.seek(SeekFrom::Start(frame.offset)).map_err(read_error)?;
            // File to file: std copies in the kernel (copy_file_range) where it can.
            let copied = io::copy(&mut reader.take(frame.length), &mut *self.file).map_err(read_error)?;
            if copied != frame.length {
                return Err(PackageError::Changed { path: source_path.to_owned() });
            }
            let span = FrameSpan { offset: self.position, length: frame.length, content: frame.content };
            self.position += frame.length;
            self.push_frame(span);
        }
        Ok(())
    }

    fn push_frame(&mut self, span: FrameSpan) {
        if let Some(member) = self.members.last_mut() {
            member.frames.push(span);
        }
    }

    /// Writes the last small frame and the index.
    pub fn finish(mut self) -> Result<(), PackageError> {
        self.flush_structure()?;
        let json = serde_json::to_vec(&PackageIndex { members: std::mem::take(&mut self.members) })
            .map_err(|error| self.compress_error()(io::Error::other(error)))?;
        let json_length =
            u32::try_from(json.len()).map_err(|_| self.compress_error()(io::Error::other("index too large")))?;
        let mut frame = Vec::with_capacity(json.len() + 20);
        frame.extend_from_slice(&INDEX_FRAME_MAGIC.to_le_bytes());
        frame.extend_from_slice(&(json_length + INDEX_TRAILER as u32).to_le_bytes());
        frame.extend_from_slice(&json);
        frame.extend_from_slice(&json_length.to_le_bytes());
        frame.extend_from_slice(INDEX_TAG);
        self.file.write_all(&frame).map_err(self.write_error())
    }
}

/// Counts the bytes written through it.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let count = self.inner.write(bytes)?;
        self.count += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Refuses to take more than `limit` bytes: a data frame holds exactly the size it declares.
struct LengthCheck<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for LengthCheck<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.written + bytes.len() as u64 > self.limit {
            return Err(io::Error::other("more data than the frame declares"));
        }
        let count = self.inner.write(bytes)?;
        self.written += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
