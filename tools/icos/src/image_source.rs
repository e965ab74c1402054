//! The content of a partition or volume: a raw image file, or a package holding one (a
//! partition's `.tzst`, as the build keeps filesystem images: compressed, so that caches do not
//! store holes). The disk and LVM writers both place such images at an offset of their output,
//! copying only data blocks so that the output stays sparse.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::package::{self, PackageError};
use crate::sparse::{self, CopyError};

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

/// Why an image could not be placed.
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

/// The size of the image at `path`: the file's length, or the size of the image in the package.
pub fn image_size(path: &Path) -> Result<u64, ImageSourceError> {
    if package::is_package(path)? {
        Ok(package::image_member_size(path)?)
    } else {
        let metadata =
            std::fs::metadata(path).map_err(|source| ImageSourceError::Read { path: path.to_owned(), source })?;
        Ok(metadata.len())
    }
}

/// Writes the data blocks of the image at `path` into `output` at `offset`, leaving its zero
/// blocks unwritten (holes in a new file). Fails with [`ImageSourceError::TooLarge`] before
/// writing anything when the image is larger than `limit` bytes.
pub fn copy_image_at(path: &Path, output: &mut File, offset: u64, limit: u64) -> Result<(), ImageSourceError> {
    let read_error = |source| ImageSourceError::Read { path: path.to_owned(), source };
    let copy_error = |error| match error {
        CopyError::Read(source) => read_error(source),
        CopyError::Write(source) => ImageSourceError::Write(source),
    };
    let fits = |size: u64| {
        if size > limit {
            Err(ImageSourceError::TooLarge { path: path.to_owned(), size, limit })
        } else {
            Ok(())
        }
    };
    if package::is_package(path)? {
        package::read_image_member(path, |size, reader| {
            fits(size)?;
            sparse::copy_stream_at(reader, size, output, offset).map_err(copy_error)
        })
    } else {
        let mut source = File::open(path).map_err(read_error)?;
        let map = sparse::scan(&mut source).map_err(read_error)?;
        fits(map.size)?;
        sparse::copy_extents_at(&mut source, &map, output, offset).map_err(copy_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{package, CompressionOptions, Member};
    use std::fs;
    use std::os::unix::fs::FileExt;

    #[test]
    fn named_images_parse_as_name_equals_path() {
        assert_eq!(
            NamedImage::parse("A_root=out/partition root.tzst").unwrap(),
            NamedImage { name: "A_root".into(), path: PathBuf::from("out/partition root.tzst") }
        );
        for bad in ["A_root", "=x", "A_root="] {
            assert!(NamedImage::parse(bad).unwrap_err().to_string().contains("NAME=PATH"), "{bad}");
        }
    }

    #[test]
    fn raw_and_packaged_images_land_alike_and_oversized_ones_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("image.img");
        fs::write(&raw, [vec![0u8; 8192], vec![0x5A; 4000]].concat()).unwrap();
        let packaged = dir.path().join("image.tzst");
        package(&packaged, &[Member::file("partition.img", &raw)], CompressionOptions { level: 3, threads: 1 })
            .unwrap();
        assert_eq!(image_size(&raw).unwrap(), 12192);
        assert_eq!(image_size(&packaged).unwrap(), 12192);
        for source in [&raw, &packaged] {
            let mut output = tempfile::tempfile().unwrap();
            output.set_len(1 << 20).unwrap();
            copy_image_at(source, &mut output, 4096, 12192).unwrap();
            let mut bytes = vec![0u8; 20000];
            output.read_exact_at(&mut bytes, 0).unwrap();
            assert!(bytes[..4096 + 8192].iter().all(|&byte| byte == 0));
            assert!(bytes[4096 + 8192..4096 + 12192].iter().all(|&byte| byte == 0x5A));
            let mut untouched = tempfile::tempfile().unwrap();
            let error = copy_image_at(source, &mut untouched, 0, 12191).unwrap_err();
            assert!(matches!(error, ImageSourceError::TooLarge { size: 12192, limit: 12191, .. }), "{error}");
            assert_eq!(untouched.metadata().unwrap().len(), 0);
        }
    }
}
