//! Turning a byte range of the input file into a tar stream: optional hashing of the raw bytes
//! (OCI blobs are verified against their digest), and gzip or zstd decompression detected by the
//! stream's magic number rather than trusted from a media type.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::read::{read_tar, Layer};
use super::store::Store;
use super::tree::Tree;
use super::RootfsError;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

pub(crate) fn detect_compression(magic: &[u8]) -> Compression {
    if magic.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if magic.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// `len` bytes of `file` from `offset`, read by position so that several sections can be open.
pub(crate) struct Section<'a> {
    file: &'a File,
    position: u64,
    end: u64,
}

impl<'a> Section<'a> {
    pub(crate) fn new(file: &'a File, offset: u64, len: u64) -> Section<'a> {
        Section { file, position: offset, end: offset.saturating_add(len) }
    }
}

impl Read for Section<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.position).unwrap_or(usize::MAX);
        let want = buffer.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let count = self.file.read_at(&mut buffer[..want], self.position)?;
        if count == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than its archive says"));
        }
        self.position += count as u64;
        Ok(count)
    }
}

struct Hashing<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buffer)?;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buffer[..count]);
        }
        Ok(count)
    }
}

/// What to call a stream in messages and whether its names may be whiteouts.
pub(crate) struct StreamKind<'a> {
    pub input: &'a Path,
    pub whiteouts: bool,
    pub label: String,
    /// Hash the raw (compressed) bytes, to check an OCI blob digest.
    pub hash: bool,
}

/// Reads the (possibly compressed) tar at `offset..offset + len` of `file` into `tree`, then
/// reads the raw bytes to their end. Returns their SHA-256 when `kind.hash` asks for it.
pub(crate) fn read_section(
    file: &File,
    offset: u64,
    len: u64,
    tree: &mut Tree,
    store: &mut Store,
    kind: StreamKind<'_>,
) -> Result<Option<[u8; 32]>, RootfsError> {
    let input = kind.input;
    let read_error = |source| RootfsError::Read { path: input.to_owned(), source };
    let hasher = kind.hash.then(Sha256::new);
    let mut raw = BufReader::with_capacity(1 << 20, Hashing { inner: Section::new(file, offset, len), hasher });
    let compression = detect_compression(raw.fill_buf().map_err(read_error)?);
    let layer = Layer {
        input,
        // Uncompressed members lie in the input file as they are: leave them there.
        base: (compression == Compression::None).then_some(offset),
        whiteouts: kind.whiteouts,
        label: kind.label,
    };
    let decompress_error = |source: io::Error| RootfsError::Corrupt {
        path: input.to_owned(),
        location: if layer.label.is_empty() {
            "decompressing".into()
        } else {
            format!("{}, decompressing", layer.label)
        },
        detail: source.to_string(),
    };
    match compression {
        Compression::None => read_tar(tree, store, &mut raw, &layer)?,
        Compression::Gzip => {
            let mut decoder = flate2::read::MultiGzDecoder::new(&mut raw);
            read_tar(tree, store, &mut decoder, &layer)?;
            // The rest of the stream (padding after the end blocks) must decompress too: this
            // checks the gzip trailer.
            io::copy(&mut decoder, &mut io::sink()).map_err(decompress_error)?;
        }
        Compression::Zstd => {
            let mut decoder = zstd::Decoder::with_buffer(&mut raw).map_err(decompress_error)?;
            read_tar(tree, store, &mut decoder, &layer)?;
            io::copy(&mut decoder, &mut io::sink()).map_err(decompress_error)?;
        }
    }
    io::copy(&mut raw, &mut io::sink()).map_err(read_error)?;
    Ok(raw.into_inner().hasher.map(|hasher| hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_compression_by_magic() {
        assert_eq!(detect_compression(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(detect_compression(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(detect_compression(b"etc/"), Compression::None);
        assert_eq!(detect_compression(b""), Compression::None);
    }

    #[test]
    fn a_section_reads_its_range_and_reports_a_short_file() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let mut text = String::new();
        Section::new(&file, 2, 5).read_to_string(&mut text).unwrap();
        assert_eq!(text, "23456");
        let error = Section::new(&file, 8, 5).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
