//! What the disk and volume-group writers write into: a [`Canvas`]. For a raw image it is the
//! output file, and every placed image is copied into it. For a package it is a scratch file that
//! takes only what the writers make themselves (partition tables, LVM metadata) and the images that
//! are not compressed yet; packaged images are only noted with their offsets, and the package
//! copies their compressed frames. Both give the same image bytes: [`Canvas::into_image`] yields
//! the extents a scan of the raw image would find, so the package's tar stream is the same too.

use std::fs::File;
use std::path::Path;

use crate::image_source::{ImageSource, ImageSourceError, Piece};
use crate::io_error::PathIoError;
use crate::package::{package_images, CompressionOptions, PackageError};
use crate::sparse::{self, Extent, BLOCK_SIZE};

/// See the module documentation.
pub struct Canvas<'a> {
    file: &'a mut File,
    /// Images to be packaged as their frames, with their offsets; `None` for a raw image.
    framed: Option<Vec<(u64, ImageSource)>>,
}

impl<'a> Canvas<'a> {
    /// Everything is written into `file`, the raw image.
    pub fn raw(file: &'a mut File) -> Self {
        Canvas { file, framed: None }
    }

    /// `scratch` takes what is not compressed yet; see [`Canvas::into_image`].
    pub fn for_package(scratch: &'a mut File) -> Self {
        Canvas { file: scratch, framed: Some(Vec::new()) }
    }

    /// The file that the writers' own structures go to, at their offsets in the image.
    pub fn file(&mut self) -> &mut File {
        self.file
    }

    /// Puts `source` at `offset`, failing before writing anything when it is larger than
    /// `limit` bytes.
    pub fn place(&mut self, source: &ImageSource, offset: u64, limit: u64) -> Result<(), ImageSourceError> {
        source.check_fits(limit)?;
        match &mut self.framed {
            Some(framed) if frames_fit_blocks(source, offset) => {
                framed.push((offset, source.clone()));
                Ok(())
            }
            _ => source.copy_at(&mut sparse::AtOffsets(self.file), offset, limit),
        }
    }

    /// The image the canvas holds (named `path` in messages): the data of the scratch file and
    /// the frames of the placed images, in the order of their offsets.
    pub fn into_image(self, path: &Path) -> Result<ImageSource, PackageError> {
        let read_error = PathIoError::with("read", path);
        let own = sparse::scan(self.file).map_err(read_error)?;
        let mut framed = self.framed.unwrap_or_default();
        framed.sort_by_key(|(offset, _)| *offset);
        let file = std::sync::Arc::new(self.file.try_clone().map_err(PathIoError::with("read", path))?);
        let mut pieces = Vec::new();
        let mut own_extents = own.extents.iter().copied().peekable();
        let own_piece = |extents: Vec<Extent>| Piece::File { file: file.clone(), path: path.to_owned(), extents };
        for (offset, source) in framed {
            let end = offset + source.size();
            let mut before = Vec::new();
            while let Some(extent) = own_extents.next_if(|extent| extent.offset < end) {
                if extent.offset + extent.length > offset {
                    let problem = format!(
                        "{} bytes written at offset {} overlap image {} at offset {offset}",
                        extent.length,
                        extent.offset,
                        source.path().display()
                    );
                    return Err(PackageError::BadArchive { path: path.to_owned(), problem });
                }
                before.push(extent);
            }
            if !before.is_empty() {
                pieces.push(own_piece(before));
            }
            if let [Piece::Frames { file, path, frames, extents }] = source.pieces() {
                pieces.push(Piece::Frames {
                    file: file.clone(),
                    path: path.clone(),
                    frames: frames.clone(),
                    extents: extents
                        .iter()
                        .map(|extent| Extent { offset: offset + extent.offset, ..*extent })
                        .collect(),
                });
            }
        }
        let rest: Vec<Extent> = own_extents.collect();
        if !rest.is_empty() {
            pieces.push(own_piece(rest));
        }
        Ok(ImageSource::assembled(path, own.size, pieces))
    }
}

/// Lets `write` put an image on a canvas whose scratch file lies next to `output`, then writes it
/// as the one sparse member `member` of the package `output` (atomically), copying the frames of
/// the packaged images placed on it. Returns what `write` returned.
pub fn package_assembled<T, E: From<PackageError>>(
    output: &Path,
    member: &str,
    compression: CompressionOptions,
    write: impl FnOnce(&mut Canvas<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let directory = output.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut scratch = tempfile::tempfile_in(directory).map_err(|source| {
        PackageError::Io(PathIoError { action: "create a scratch file next to", path: output.to_owned(), source })
    })?;
    let mut canvas = Canvas::for_package(&mut scratch);
    let value = write(&mut canvas)?;
    let image = canvas.into_image(&output.join(member))?;
    package_images(output, &[(member, image)], compression)?;
    Ok(value)
}

/// Whether `source`'s frames can go into a package as they are with `source` at `offset`: it is
/// one run of frames, and its blocks are the image's blocks (at a block-aligned offset, with no
/// data in a last partial block, which the image's block would share with what follows).
fn frames_fit_blocks(source: &ImageSource, offset: u64) -> bool {
    let whole_blocks = source.size() / BLOCK_SIZE * BLOCK_SIZE;
    let data_end = source.map().extents.last().map_or(0, |last| last.offset + last.length);
    matches!(source.pieces(), [Piece::Frames { .. }]) && offset % BLOCK_SIZE == 0 && data_end <= whole_blocks
}
