//! zstd- and gzip-compressed artifacts, decompressed as streams (multi-threaded zstd is only for
//! writing). A compressed tar is read straight from the stream; anything else is decompressed,
//! sparse, into an anonymous temporary file and compared as what it turns out to be. When the
//! decompressed content is identical, what differs is the compression: its frame header fields
//! (window size, checksum flag, ...) and the compressed bytes.

use std::io::{self, Cursor, Read};

use super::blob::{copy_sparse, Blob};
use super::detect::{detect, Kind, HEAD};
use super::error::DiffError;
use super::escape::{format_size, short_hex};
use super::report::{ArtifactDiff, Difference, What};
use super::tar;
use super::tree::compare_fields;
use super::{compare_blobs, Context};

/// Reads through to a decompressor and remembers whether it failed, so that a corrupt stream is
/// told from a temporary file that cannot be written.
struct Watched<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buffer).inspect_err(|_| self.failed = true)
    }
}

fn decoder(blob: &Blob, kind: Kind) -> Result<Box<dyn Read>, DiffError> {
    let reader = io::BufReader::with_capacity(1 << 20, blob.reader());
    match kind {
        Kind::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|error| DiffError::corrupt(&blob.origin, "zstd stream", error))?;
            // Accept any window a zstd encoder can write (icos packages use 2^27).
            decoder.window_log_max(31).map_err(|error| DiffError::corrupt(&blob.origin, "zstd stream", error))?;
            Ok(Box::new(decoder))
        }
        _ => Ok(Box::new(flate2::read::MultiGzDecoder::new(reader))),
    }
}

fn stream_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Zstd => "zstd stream",
        _ => "gzip stream",
    }
}

/// Compares two artifacts compressed the same way (`kind`).
pub fn compare(context: &Context, name: &str, a: &Blob, b: &Blob, kind: Kind) -> Result<ArtifactDiff, DiffError> {
    let prefix = format!("{} ", kind.label());
    let mut stream_a = Watched { inner: decoder(a, kind)?, failed: false };
    let mut stream_b = Watched { inner: decoder(b, kind)?, failed: false };
    let head_a = read_head(&mut stream_a, a, kind)?;
    let head_b = read_head(&mut stream_b, b, kind)?;
    let (inner_a, inner_b) = (detect(&head_a), detect(&head_b));
    if inner_a != inner_b {
        let mut diff =
            ArtifactDiff::new(name, &format!("{prefix}{}", inner_a.label()), &format!("{prefix}{}", inner_b.label()));
        diff.differences
            .push(Difference::here(What::ArtifactKind { a: inner_a.label().into(), b: inner_b.label().into() }));
        return Ok(diff);
    }
    if inner_a == Kind::Tar {
        let side_a = tar::read(&mut Cursor::new(head_a).chain(stream_a), &a.origin, context)?;
        let side_b = tar::read(&mut Cursor::new(head_b).chain(stream_b), &b.origin, context)?;
        let same_content = side_a.stream() == side_b.stream();
        let mut diff = tar::compare(context, name, side_a, side_b, &prefix, None)?;
        if diff.is_empty() && same_content {
            diff.differences.extend(compression_differences(a, b, kind)?);
        }
        return Ok(diff);
    }
    let blob_a = decompress(context, head_a, stream_a, a, kind)?;
    let blob_b = decompress(context, head_b, stream_b, b, kind)?;
    match compare_blobs(context, name, &blob_a, &blob_b)? {
        Some(mut diff) => {
            diff.kind_a = format!("{prefix}{}", diff.kind_a);
            diff.kind_b = format!("{prefix}{}", diff.kind_b);
            Ok(diff)
        }
        None => {
            let label = format!("{prefix}{}", inner_a.label());
            let mut diff = ArtifactDiff::new(name, &label, &label);
            diff.differences.extend(compression_differences(a, b, kind)?);
            Ok(diff)
        }
    }
}

/// The whole decompressed content of `blob`, in an anonymous sparse temporary file.
pub fn decompress_blob(context: &Context, blob: &Blob, kind: Kind) -> Result<Blob, DiffError> {
    let mut stream = Watched { inner: decoder(blob, kind)?, failed: false };
    let head = read_head(&mut stream, blob, kind)?;
    decompress(context, head, stream, blob, kind)
}

/// The first [`HEAD`] decompressed bytes (fewer if the content is shorter).
fn read_head(stream: &mut impl Read, blob: &Blob, kind: Kind) -> Result<Vec<u8>, DiffError> {
    let mut head = vec![0u8; HEAD];
    let count = crate::sparse::read_full(stream, &mut head)
        .map_err(|error| DiffError::corrupt(&blob.origin, stream_kind(kind), error))?;
    head.truncate(count);
    Ok(head)
}

/// Decompresses the rest of `stream` after `head` into an anonymous sparse temporary file.
fn decompress(
    context: &Context,
    head: Vec<u8>,
    stream: Watched<Box<dyn Read>>,
    blob: &Blob,
    kind: Kind,
) -> Result<Blob, DiffError> {
    let file = context.anonymous_file()?;
    let mut reader = Cursor::new(head).chain(stream);
    if let Err(error) = copy_sparse(&mut reader, &file) {
        let (_, stream) = reader.get_ref();
        return Err(if stream.failed {
            DiffError::corrupt(&blob.origin, stream_kind(kind), error)
        } else {
            DiffError::Temporary { source: error }
        });
    }
    Blob::from_file(file, format!("{} (decompressed)", blob.origin)).map_err(|source| DiffError::Temporary { source })
}

/// What differs when only the compression does: the frame or member header fields, then the
/// compressed bytes themselves.
fn compression_differences(a: &Blob, b: &Blob, kind: Kind) -> Result<Vec<Difference>, DiffError> {
    let head_a = a.head(64).map_err(|error| DiffError::read(&a.origin, error))?;
    let head_b = b.head(64).map_err(|error| DiffError::read(&b.origin, error))?;
    let (fields_a, fields_b, prefix) = match kind {
        Kind::Zstd => (zstd_frame_fields(&head_a), zstd_frame_fields(&head_b), "zstd frame "),
        _ => (gzip_header_fields(&head_a), gzip_header_fields(&head_b), "gzip header "),
    };
    let mut differences = compare_fields(prefix, &fields_a, &fields_b, &[]);
    let describe = |blob: &Blob| -> Result<String, DiffError> {
        let sha256 = blob.sha256().map_err(|error| DiffError::read(&blob.origin, error))?;
        Ok(format!("{}, sha256 {}", format_size(blob.length), short_hex(&sha256)))
    };
    differences.push(Difference::field(
        "compressed bytes (the decompressed content is identical: compression level or parameters differ)",
        Some(describe(a)?),
        Some(describe(b)?),
    ));
    Ok(differences)
}

/// The header fields of the first zstd frame (RFC 8878, 3.1.1.1).
pub fn zstd_frame_fields(head: &[u8]) -> Vec<(String, String)> {
    let Some(&descriptor) = head.get(4) else { return Vec::new() };
    let content_size_flag = descriptor >> 6;
    let single_segment = descriptor & 0x20 != 0;
    let checksum = descriptor & 0x04 != 0;
    let dictionary_bytes = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let mut position = 5;
    let mut fields = vec![
        ("single segment".to_owned(), single_segment.to_string()),
        ("content checksum".to_owned(), checksum.to_string()),
    ];
    if !single_segment {
        if let Some(&window) = head.get(position) {
            let log = 10 + u32::from(window >> 3);
            let base = 1u64 << log;
            let size = base + base / 8 * u64::from(window & 7);
            fields.push(("window size".to_owned(), format_size(size)));
        }
        position += 1;
    }
    let little_endian = |bytes: &[u8]| bytes.iter().rev().fold(0u64, |value, &byte| value << 8 | u64::from(byte));
    if let Some(bytes) = head.get(position..position + dictionary_bytes) {
        if dictionary_bytes > 0 {
            fields.push(("dictionary id".to_owned(), little_endian(bytes).to_string()));
        }
    }
    position += dictionary_bytes;
    let size_bytes = match (content_size_flag, single_segment) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let content_size = match head.get(position..position + size_bytes) {
        Some(bytes) if size_bytes == 2 => Some(little_endian(bytes) + 256),
        Some(bytes) if size_bytes > 0 => Some(little_endian(bytes)),
        _ => None,
    };
    fields.push(("content size".to_owned(), content_size.map_or_else(|| "not recorded".to_owned(), format_size)));
    fields
}

/// The fixed fields of a gzip member header (RFC 1952, 2.3.1).
pub fn gzip_header_fields(head: &[u8]) -> Vec<(String, String)> {
    if head.len() < 10 {
        return Vec::new();
    }
    let mtime = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    vec![
        ("flags".to_owned(), format!("{:#04x}", head[3])),
        ("mtime".to_owned(), mtime.to_string()),
        ("extra flags".to_owned(), format!("{:#04x}", head[8])),
        ("OS".to_owned(), head[9].to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields.iter().find(|(other, _)| other == name).map(|(_, value)| value.as_str())
    }

    #[test]
    fn zstd_frame_fields_follow_the_encoder_settings() {
        let data = vec![7u8; 100_000];
        let plain = zstd::bulk::compress(&data, 3).unwrap();
        let fields = zstd_frame_fields(&plain);
        assert_eq!(field(&fields, "content size"), Some("100000 bytes (97.7 KiB)"));
        assert_eq!(field(&fields, "content checksum"), Some("false"));

        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.window_log(20).unwrap();
        io::Write::write_all(&mut encoder, &data).unwrap();
        let fields = zstd_frame_fields(&encoder.finish().unwrap());
        assert_eq!(field(&fields, "content checksum"), Some("true"));
        assert_eq!(field(&fields, "window size"), Some("1048576 bytes (1.0 MiB)"));
        assert_eq!(field(&fields, "content size"), Some("not recorded"));
    }

    #[test]
    fn gzip_header_fields_show_the_mtime() {
        let mut header = flate2::GzBuilder::new().mtime(1234).write(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut header, b"x").unwrap();
        let bytes = header.finish().unwrap();
        assert_eq!(field(&gzip_header_fields(&bytes), "mtime"), Some("1234"));
    }
}
