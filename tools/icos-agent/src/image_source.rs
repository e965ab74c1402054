//! The content of a partition, volume or package member, wherever it lives: a raw image file, the
//! one image of a package (a partition's `.tzst`, a `disk-img.tar.zst`), or an image assembled
//! from others (a disk). Whatever the kind, an [`ImageSource`] is opened once and then is its
//! size, its data extents (its sparse map) and a sequence of [`Piece`]s that yield its data in
//! order; placing it in a file, or packaging it, goes piece by piece. The pieces of a package with
//! an index are its zstd data frames, which a new package copies instead of compressing again.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::io_error::PathIoError;
use crate::package::frames::{FrameSpan, FrameWriter, PackageIndex};
use crate::package::{self, PackageError};
use crate::sparse::{self, CopyError, Extent, SparseMap, WriteAt};

/// An image named for the partition or volume it fills: the command-line form `NAME=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedImage {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not NAME=PATH")]
pub struct NamedImageParseError {
    text: String,
}

impl NamedImage {
    /// Parses `NAME=PATH`.
    pub fn parse(text: &str) -> Result<Self, NamedImageParseError> {
        match text.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => {
                Ok(NamedImage { name: name.to_owned(), path: PathBuf::from(path) })
            }
            _ => Err(NamedImageParseError { text: text.to_owned() }),
        }
    }
}

/// Why an image could not be read or placed.
#[derive(Debug, thiserror::Error)]
pub enum ImageSourceError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("cannot read image {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// Writing the output failed; the caller knows which output.
    #[error("write: {0}")]
    Write(io::Error),
    /// The image is larger than the caller allowed.
    #[error("image {path} is {size} bytes, more than the {limit} bytes it may take")]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
}

/// A run of an image's data, in the order of its extents.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Data read from `file` at `extents`, which are offsets in the image and in the file alike
    /// (a raw image, or the scratch file an assembly writes its own structures to).
    File { file: Arc<File>, path: PathBuf, extents: Vec<Extent> },
    /// Data already compressed: `frames` of the package `file` decompress to the data of
    /// `extents` (offsets in the image).
    Frames { file: Arc<File>, path: PathBuf, frames: Vec<FrameSpan>, extents: Vec<Extent> },
    /// The one image of a package without an index, read by decompressing the package again.
    Stream { path: PathBuf, map: SparseMap },
}

impl Piece {
    fn extents(&self) -> &[Extent] {
        match self {
            Piece::File { extents, .. } | Piece::Frames { extents, .. } => extents,
            Piece::Stream { map, .. } => &map.extents,
        }
    }

    fn data_bytes(&self) -> u64 {
        self.extents().iter().map(|extent| extent.length).sum()
    }
}

/// An image opened for reading: see the module documentation.
#[derive(Debug, Clone)]
pub struct ImageSource {
    path: PathBuf,
    /// The name of the image in its package; None for a raw or assembled image.
    member: Option<String>,
    map: SparseMap,
    pieces: Vec<Piece>,
}

impl ImageSource {
    /// Opens the image at `path`: a package when it starts with a zstd frame (a raw filesystem
    /// image starts with a boot sector or zeros, never with one), a raw image otherwise.
    pub fn open(path: &Path) -> Result<ImageSource, PackageError> {
        if package::is_package(path)? {
            ImageSource::open_package(path)
        } else {
            ImageSource::open_raw(path)
        }
    }

    /// Opens the raw image file at `path`, reading it once for its map.
    pub fn open_raw(path: &Path) -> Result<ImageSource, PackageError> {
        let read_error = |source| PackageError::Io(PathIoError { action: "read", path: path.to_owned(), source });
        let mut file = File::open(path).map_err(read_error)?;
        let map = sparse::scan(&mut file).map_err(read_error)?;
        let pieces = vec![Piece::File { file: Arc::new(file), path: path.to_owned(), extents: map.extents.clone() }];
        Ok(ImageSource { path: path.to_owned(), member: None, map, pieces })
    }

    /// Opens the one image in the package at `path`. With an index, its map and data frames are
    /// read from the index; without one, the package is decompressed once here for the map.
    pub fn open_package(path: &Path) -> Result<ImageSource, PackageError> {
        let read_error = |source| PackageError::Io(PathIoError { action: "read", path: path.to_owned(), source });
        let file = File::open(path).map_err(read_error)?;
        if let Some(mut index) = PackageIndex::read(&file, path)? {
            if index.members.len() != 1 {
                let names: Vec<&str> = index.members.iter().map(|member| member.name.as_str()).collect();
                let problem = format!("it holds more than one member ({names:?}); an image package holds one");
                return Err(PackageError::BadArchive { path: path.to_owned(), problem });
            }
            let member = index.members.remove(0);
            let map = member.map();
            let pieces = vec![Piece::Frames {
                file: Arc::new(file),
                path: path.to_owned(),
                frames: member.frames,
                extents: map.extents.clone(),
            }];
            return Ok(ImageSource { path: path.to_owned(), member: Some(member.name), map, pieces });
        }
        let (member, map) = package::read_image_member(path, |name, size, reader| {
            Ok::<_, PackageError>((name.to_owned(), sparse::scan_stream(reader, size).map_err(read_error)?))
        })?;
        let pieces = vec![Piece::Stream { path: path.to_owned(), map: map.clone() }];
        Ok(ImageSource { path: path.to_owned(), member: Some(member), map, pieces })
    }

    /// An image of `size` bytes made of `pieces`, whose extents are in order and do not
    /// overlap: its map is theirs, merged where they touch.
    pub fn assembled(path: &Path, size: u64, pieces: Vec<Piece>) -> ImageSource {
        let mut map = SparseMap { size, extents: Vec::new() };
        for extent in pieces.iter().flat_map(|piece| piece.extents()) {
            match map.extents.last_mut() {
                Some(last) if last.offset + last.length == extent.offset => last.length += extent.length,
                _ => map.extents.push(*extent),
            }
        }
        ImageSource { path: path.to_owned(), member: None, map, pieces }
    }

    /// What messages call the image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name of the image inside its package (such as `disk.img`), for a packaged image.
    pub fn member_name(&self) -> Option<&str> {
        self.member.as_deref()
    }

    pub fn size(&self) -> u64 {
        self.map.size
    }

    pub fn map(&self) -> &SparseMap {
        &self.map
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Fails with [`ImageSourceError::TooLarge`] when the image is larger than `limit` bytes.
    pub fn check_fits(&self, limit: u64) -> Result<(), ImageSourceError> {
        if self.size() > limit {
            return Err(ImageSourceError::TooLarge { path: self.path.clone(), size: self.size(), limit });
        }
        Ok(())
    }

    /// Writes the data blocks of the image into `output` at `offset`, leaving its holes
    /// unwritten (holes in a new file). Fails before writing anything when the image is larger
    /// than `limit` bytes.
    pub fn copy_at(&self, output: &mut impl WriteAt, offset: u64, limit: u64) -> Result<(), ImageSourceError> {
        self.check_fits(limit)?;
        for piece in &self.pieces {
            let read_error = |path: &Path| {
                let path = path.to_owned();
                move |source| ImageSourceError::Read { path: path.clone(), source }
            };
            match piece {
                Piece::File { file, path, extents } => read_extents(file, extents, read_error(path), |at, bytes| {
                    output.write_all_at(bytes, offset + at).map_err(ImageSourceError::Write)
                })?,
                Piece::Frames { file, path, frames, extents } => {
                    let mut placed = ExtentWriter::new(&mut *output, offset, extents);
                    let result = decompress_frames(file, path, frames, &mut placed);
                    if let Some(error) = placed.error.take() {
                        return Err(ImageSourceError::Write(error));
                    }
                    result?;
                    placed.finish().map_err(read_error(path))?;
                }
                Piece::Stream { path, map } => {
                    package::read_image_member(path, |_, size, reader| {
                        if size != map.size {
                            return Err(PackageError::Changed { path: path.clone() }.into());
                        }
                        sparse::copy_stream_at(reader, size, &mut *output, offset).map_err(|error| match error {
                            CopyError::Read(source) => ImageSourceError::Read { path: path.clone(), source },
                            CopyError::Write(source) => ImageSourceError::Write(source),
                        })
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Writes the image's data into the package being written: copies the frames of packaged
    /// pieces, compresses the others.
    pub(crate) fn write_data(&self, writer: &mut FrameWriter<'_>) -> Result<(), PackageError> {
        for piece in &self.pieces {
            match piece {
                Piece::File { file, path, extents } => {
                    writer.compress_data(piece.data_bytes(), |output| {
                        read_extents(
                            file,
                            extents,
                            |source| changed_or(path, source),
                            |_, bytes| output.write_all(bytes).map_err(|source| compress_error(path, source)),
                        )
                    })?;
                }
                Piece::Frames { file, path, frames, .. } => writer.copy_frames(file, path, frames)?,
                Piece::Stream { path, map } => {
                    writer.compress_data(piece.data_bytes(), |output| {
                        package::read_image_member(path, |_, size, reader| {
                            if size != map.size {
                                return Err(PackageError::Changed { path: path.clone() });
                            }
                            sparse::write_extents_of_stream(reader, map, output).map_err(|error| match error {
                                CopyError::Read(source) => changed_or(path, source),
                                CopyError::Write(source) => compress_error(path, source),
                            })
                        })
                    })?;
                }
            }
        }
        Ok(())
    }

    /// A file holding the image, for readers that need random access: the raw image itself, or
    /// the image written sparse into a new file in `scratch` (removed when the file is closed).
    pub fn to_file(&self, scratch: &Path) -> Result<File, ImageSourceError> {
        if let [Piece::File { path, .. }] = self.pieces.as_slice() {
            if path == &self.path {
                return File::open(path).map_err(|source| ImageSourceError::Read { path: path.clone(), source });
            }
        }
        let create_error = |source| ImageSourceError::Read { path: scratch.to_owned(), source };
        let file = tempfile::tempfile_in(scratch).map_err(create_error)?;
        self.write_file(&file)?;
        Ok(file)
    }

    /// Makes the empty file `file` the image: its data blocks written, its holes left as holes,
    /// its length the image's size.
    pub fn write_file(&self, file: &File) -> Result<(), ImageSourceError> {
        self.copy_at(&mut sparse::AtOffsets(file), 0, u64::MAX)?;
        file.set_len(self.size()).map_err(ImageSourceError::Write)
    }
}

/// Reads the `extents` of `file` in parts of at most 1 MiB and hands each to `data` with its
/// offset.
fn read_extents<E>(
    file: &File,
    extents: &[Extent],
    read_error: impl Fn(io::Error) -> E,
    mut data: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut buffer = vec![0u8; 1 << 20];
    for extent in extents {
        let mut done = 0;
        while done < extent.length {
            let want = (extent.length - done).min(buffer.len() as u64) as usize;
            file.read_exact_at(&mut buffer[..want], extent.offset + done).map_err(&read_error)?;
            data(extent.offset + done, &buffer[..want])?;
            done += want as u64;
        }
    }
    Ok(())
}

fn changed_or(path: &Path, source: io::Error) -> PackageError {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        PackageError::Changed { path: path.to_owned() }
    } else {
        PackageError::Io(PathIoError { action: "read", path: path.to_owned(), source })
    }
}

fn compress_error(path: &Path, source: io::Error) -> PackageError {
    PackageError::Compress { path: path.to_owned(), source }
}

/// Decompresses `frames` of the package `file` into `output`, checking each frame's checksum and
/// that it holds the bytes it declares.
fn decompress_frames(
    file: &File,
    path: &Path,
    frames: &[FrameSpan],
    output: &mut impl Write,
) -> Result<(), ImageSourceError> {
    let bad = |problem: String| PackageError::BadArchive { path: path.to_owned(), problem };
    for frame in frames {
        let mut reader = file;
        reader
            .seek(SeekFrom::Start(frame.offset))
            .map_err(|source| ImageSourceError::Read { path: path.to_owned(), source })?;
        let mut decoder = zstd::stream::read::Decoder::new(reader.take(frame.length))
            .map_err(|error| bad(error.to_string()))?
            .single_frame();
        let copied = io::copy(&mut decoder, output)
            .map_err(|error| bad(format!("frame at offset {}: {error}", frame.offset)))?;
        if copied != frame.content {
            return Err(
                bad(format!("frame at offset {} holds {copied} bytes, not {}", frame.offset, frame.content)).into()
            );
        }
    }
    Ok(())
}

/// Writes a data stream to the extents it is the data of, at `base` in `output`.
struct ExtentWriter<'a, W: WriteAt> {
    output: &'a mut W,
    base: u64,
    extents: std::slice::Iter<'a, Extent>,
    current: Option<Extent>,
    error: Option<io::Error>,
}

impl<'a, W: WriteAt> ExtentWriter<'a, W> {
    fn new(output: &'a mut W, base: u64, extents: &'a [Extent]) -> Self {
        let mut extents = extents.iter();
        let current = extents.next().copied();
        ExtentWriter { output, base, extents, current, error: None }
    }

    /// Fails when the stream was shorter than the extents.
    fn finish(self) -> io::Result<()> {
        match self.current {
            Some(_) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the data ended before its extents")),
            None => Ok(()),
        }
    }
}

impl<W: WriteAt> Write for ExtentWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let Some(extent) = self.current.as_mut() else {
            return Err(io::Error::other("more data than its extents hold"));
        };
        let count = (bytes.len() as u64).min(extent.length) as usize;
        if let Err(error) = self.output.write_all_at(&bytes[..count], self.base + extent.offset) {
            // Kept for the caller, which tells it apart from a damaged frame.
            self.error = Some(error);
            return Err(io::Error::other("the output cannot be written"));
        }
        extent.offset += count as u64;
        extent.length -= count as u64;
        if extent.length == 0 {
            self.current = self.extents.next().copied();
        }
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
