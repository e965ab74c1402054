//! The update image `update-img.tar.zst` (made by [`crate::package`]): a zstd-compressed GNU tar
//! holding the ext4 images `boot.img`, `root.img` and, optionally, `var.img`, and `VERSION.TXT`.
//!
//! It is read twice as a stream, never unpacked: once to verify all of it before anything is
//! written (zstd frame checksums, tar headers, member names and types, ext4 magics, the version, the
//! SHA-256 of the file), and once to write the images. The second pass computes the SHA-256 again,
//! so that what was written is what was verified even if the file changed in between.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::{version_line, Slot, UpgradeError};
use crate::package::sparse::{is_zero, read_full};

/// The member holding the version, as rules/private/images.bzl (`upgrade_image`) names it.
const VERSION_MEMBER: &str = "VERSION.TXT";
/// A version is one short line; the bound keeps grubenv, which records it, within 1024 bytes.
const MAX_VERSION_BYTES: u64 = 128;
/// ext4's superblock magic 0xEF53, little-endian at byte 1080 (superblock at 1024, `s_magic` at 56).
const EXT4_MAGIC_OFFSET: usize = 1080;
const EXT4_MAGIC: [u8; 2] = [0x53, 0xEF];

/// The file-system images of an update, each written to its partition of the inactive slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Boot,
    Root,
    Var,
}

impl ImageKind {
    const ALL: [ImageKind; 3] = [ImageKind::Boot, ImageKind::Root, ImageKind::Var];

    pub fn member(self) -> &'static str {
        match self {
            ImageKind::Boot => "boot.img",
            ImageKind::Root => "root.img",
            ImageKind::Var => "var.img",
        }
    }

    /// The partition of `slot` the image goes to, such as `B_root`.
    pub fn partition(self, slot: Slot) -> String {
        let suffix = match self {
            ImageKind::Boot => "boot",
            ImageKind::Root => "root",
            ImageKind::Var => "var",
        };
        format!("{slot}_{suffix}")
    }

    /// Whether an update must hold it: without `var.img` the var partition is left as it is.
    fn required(self) -> bool {
        self != ImageKind::Var
    }
}

/// What a member of an update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Image(ImageKind),
    Version,
}

impl Member {
    fn name(self) -> &'static str {
        match self {
            Member::Image(kind) => kind.member(),
            Member::Version => VERSION_MEMBER,
        }
    }

    /// Identifies `entry`, which must be a regular or sparse file with one of the known names.
    fn of(entry: &tar::Entry<'_, impl Read>) -> Result<Member, String> {
        let name = entry.path_bytes();
        let member = ImageKind::ALL
            .into_iter()
            .map(Member::Image)
            .chain([Member::Version])
            .find(|member| member.name().as_bytes() == name.as_ref())
            .ok_or_else(|| {
                format!(
                    "unexpected member {:?}: an update holds boot.img, root.img, var.img (optional) and {VERSION_MEMBER}",
                    String::from_utf8_lossy(&name)
                )
            })?;
        let kind = entry.header().entry_type();
        if kind != EntryType::Regular && kind != EntryType::GNUSparse {
            return Err(format!("member {} is not a regular or sparse file ({kind:?})", member.name()));
        }
        Ok(member)
    }
}

/// A verified update image.
#[derive(Debug)]
pub struct UpdateImage {
    /// The SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// The size of the file.
    pub compressed_size: u64,
    pub version: String,
    /// The images in archive order, with their sizes.
    pub images: Vec<(ImageKind, u64)>,
}

/// Passes the bytes of the file through while hashing and counting them.
struct HashingReader {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl Read for HashingReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.file.read(buffer)?;
        self.hasher.update(&buffer[..count]);
        self.bytes += count as u64;
        Ok(count)
    }
}

type Archive = tar::Archive<zstd::stream::read::Decoder<'static, BufReader<HashingReader>>>;

fn open(path: &Path) -> Result<Archive, UpgradeError> {
    let read_error = |source| UpgradeError::Read { path: path.to_owned(), source };
    let file = File::open(path).map_err(read_error)?;
    let reader = HashingReader { file, hasher: Sha256::new(), bytes: 0 };
    let decoder = zstd::stream::read::Decoder::new(reader).map_err(read_error)?;
    Ok(tar::Archive::new(decoder))
}

/// Reads what the tar reader left: the rest of the zstd stream, whose frame checksum is checked
/// only at its end, including the padding after the tar's end marker, which must be zeros. The
/// decoder stops only at the end of the file (it decodes a next frame, refuses anything else), so
/// the returned SHA-256 and size are those of the whole file.
fn finish(archive: Archive, path: &Path) -> Result<(String, u64), UpgradeError> {
    let bad = |problem: String| UpgradeError::BadImage { path: path.to_owned(), problem };
    let mut decoder = archive.into_inner();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let count = read_full(&mut decoder, &mut buffer).map_err(|error| bad(error.to_string()))?;
        if !is_zero(&buffer[..count]) {
            return Err(bad("data follows the end of the tar archive".into()));
        }
        if count < buffer.len() {
            break;
        }
    }
    let hashing = decoder.finish().into_inner();
    Ok((format!("{:x}", hashing.hasher.finalize()), hashing.bytes))
}

impl UpdateImage {
    /// Reads all of `path` once and checks it: a zstd stream with valid checksums of a tar whose
    /// members are exactly boot.img, root.img, optionally var.img (ext4 images) and VERSION.TXT
    /// (one line), each once. Only the first bytes of each image are looked at; the rest is
    /// decompressed and checked without producing the zeros of sparse members' holes.
    pub fn verify(path: &Path) -> Result<UpdateImage, UpgradeError> {
        let bad = |problem: String| UpgradeError::BadImage { path: path.to_owned(), problem };
        let mut archive = open(path)?;
        let mut seen = Vec::new();
        let mut images = Vec::new();
        let mut version = None;
        for entry in archive.entries().map_err(|error| bad(error.to_string()))? {
            let mut entry = entry.map_err(|error| bad(error.to_string()))?;
            let member = Member::of(&entry).map_err(bad)?;
            if seen.contains(&member) {
                return Err(bad(format!("member {} is given twice", member.name())));
            }
            seen.push(member);
            match member {
                Member::Image(kind) => {
                    let mut head = [0u8; EXT4_MAGIC_OFFSET + EXT4_MAGIC.len()];
                    let count = read_full(&mut entry, &mut head).map_err(|error| bad(error.to_string()))?;
                    if count < head.len() || head[EXT4_MAGIC_OFFSET..] != EXT4_MAGIC {
                        return Err(bad(format!(
                            "{} is not an ext4 image: no superblock magic at byte {EXT4_MAGIC_OFFSET}",
                            kind.member()
                        )));
                    }
                    images.push((kind, entry.size()));
                }
                Member::Version => {
                    if entry.size() > MAX_VERSION_BYTES {
                        return Err(bad(format!(
                            "{VERSION_MEMBER} is {} bytes: a version is one line of at most {MAX_VERSION_BYTES}",
                            entry.size()
                        )));
                    }
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes).map_err(|error| bad(error.to_string()))?;
                    let line = version_line(&bytes).map_err(|problem| bad(format!("{VERSION_MEMBER}: {problem}")))?;
                    version = Some(line);
                }
            }
        }
        let (sha256, compressed_size) = finish(archive, path)?;
        for kind in ImageKind::ALL {
            if kind.required() && !seen.contains(&Member::Image(kind)) {
                return Err(bad(format!("member {} is missing", kind.member())));
            }
        }
        let version = version.ok_or_else(|| bad(format!("member {VERSION_MEMBER} is missing")))?;
        Ok(UpdateImage { sha256, compressed_size, version, images })
    }

    /// Reads `path` again and hands each image to `copy` with its size, as a reader of all its
    /// bytes (the holes of sparse members read as zeros). Fails with [`UpgradeError::ImageChanged`]
    /// when the file is no longer the one verified: before an image whose size changed, else at
    /// the end, by the SHA-256.
    pub fn copy_images(
        &self,
        path: &Path,
        slot: Slot,
        mut copy: impl FnMut(ImageKind, u64, &mut dyn Read) -> Result<(), UpgradeError>,
    ) -> Result<(), UpgradeError> {
        let changed = || UpgradeError::ImageChanged { path: path.to_owned(), slot };
        let read_error = |source| UpgradeError::Read { path: path.to_owned(), source };
        let mut archive = open(path)?;
        let mut expected = self.images.iter();
        for entry in archive.entries().map_err(read_error)? {
            let mut entry = entry.map_err(read_error)?;
            match Member::of(&entry) {
                Ok(Member::Image(kind)) => {
                    if expected.next() != Some(&(kind, entry.size())) {
                        return Err(changed());
                    }
                    copy(kind, entry.size(), &mut entry)?;
                }
                Ok(Member::Version) => {}
                Err(_) => return Err(changed()),
            }
        }
        let (sha256, _) = finish(archive, path)?;
        if expected.next().is_some() || sha256 != self.sha256 {
            return Err(changed());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{package, CompressionOptions, Member as PackageMember};
    use std::fs;
    use std::path::PathBuf;

    /// A sparse file of `size` bytes with the ext4 magic (unless `ext4` is false) and some data.
    fn image(dir: &Path, name: &str, size: u64, ext4: bool) -> PathBuf {
        use std::os::unix::fs::FileExt;
        let path = dir.join(name);
        let file = File::create(&path).unwrap();
        file.set_len(size).unwrap();
        if ext4 {
            file.write_all_at(&EXT4_MAGIC, EXT4_MAGIC_OFFSET as u64).unwrap();
        }
        file.write_all_at(b"data", size / 2).unwrap();
        path
    }

    fn update(dir: &Path, members: &[(&str, &Path)]) -> PathBuf {
        let members: Vec<PackageMember> = members
            .iter()
            .map(|(name, path)| PackageMember::file(*name, path))
            .collect();
        let output = dir.join("update-img.tar.zst");
        package(&output, &members, CompressionOptions { level: 3, threads: 1 }).unwrap();
        output
    }

    #[test]
    fn verify_lists_the_images_and_the_copy_reads_them_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let boot = image(dir.path(), "boot", 64 << 10, true);
        let root = image(dir.path(), "root", 256 << 10, true);
        let version = dir.path().join("version");
        fs::write(&version, "1.2.3\n").unwrap();
        let path = update(dir.path(), &[("boot.img", &boot), ("VERSION.TXT", &version), ("root.img", &root)]);
        let verified = UpdateImage::verify(&path).unwrap();
        assert_eq!(verified.version, "1.2.3");
        assert_eq!(verified.images, [(ImageKind::Boot, 64 << 10), (ImageKind::Root, 256 << 10)]);
        assert_eq!(verified.compressed_size, fs::metadata(&path).unwrap().len());
        let mut copied = Vec::new();
        verified
            .copy_images(&path, Slot::B, |kind, size, reader| {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).unwrap();
                assert_eq!(bytes.len() as u64, size);
                copied.push((kind, bytes));
                Ok(())
            })
            .unwrap();
        assert_eq!(copied[0], (ImageKind::Boot, fs::read(&boot).unwrap()));
        assert_eq!(copied[1], (ImageKind::Root, fs::read(&root).unwrap()));
    }

    #[test]
    fn a_changed_file_is_noticed_by_the_second_pass() {
        let dir = tempfile::tempdir().unwrap();
        let boot = image(dir.path(), "boot", 64 << 10, true);
        let root = image(dir.path(), "root", 64 << 10, true);
        let version = dir.path().join("version");
        fs::write(&version, "1\n").unwrap();
        let path = update(dir.path(), &[("boot.img", &boot), ("root.img", &root), ("VERSION.TXT", &version)]);
        let verified = UpdateImage::verify(&path).unwrap();
        fs::write(&version, "2\n").unwrap();
        update(dir.path(), &[("boot.img", &boot), ("root.img", &root), ("VERSION.TXT", &version)]);
        let result = verified.copy_images(&path, Slot::A, |_, _, _| Ok(()));
        assert!(matches!(result, Err(UpgradeError::ImageChanged { slot: Slot::A, .. })), "{result:?}");
    }

    #[test]
    fn members_must_be_known_unique_complete_and_ext4() {
        let dir = tempfile::tempdir().unwrap();
        let ext4 = image(dir.path(), "ext4", 8192, true);
        let other = image(dir.path(), "other", 8192, false);
        let tiny = dir.path().join("tiny");
        fs::write(&tiny, [1u8; 100]).unwrap();
        let version = dir.path().join("version");
        fs::write(&version, "1\n").unwrap();
        let two_lines = dir.path().join("two-lines");
        fs::write(&two_lines, "1\n2\n").unwrap();
        let cases: [(&[(&str, &Path)], &str); 6] = [
            (&[("boot.img", &ext4), ("VERSION.TXT", &version)], "member root.img is missing"),
            (&[("boot.img", &ext4), ("root.img", &ext4)], "member VERSION.TXT is missing"),
            (&[("boot.img", &ext4), ("root.img", &other), ("VERSION.TXT", &version)], "root.img is not an ext4"),
            (&[("boot.img", &tiny), ("root.img", &ext4), ("VERSION.TXT", &version)], "boot.img is not an ext4"),
            (&[("boot.img", &ext4), ("root.img", &ext4), ("VERSION.TXT", &two_lines)], "more than one line"),
            (&[("boot.img", &ext4), ("disk.img", &ext4)], "unexpected member \"disk.img\""),
        ];
        for (members, expected) in cases {
            let path = update(dir.path(), members);
            let error = UpdateImage::verify(&path).unwrap_err().to_string();
            assert!(error.contains(expected), "{members:?}: {error}");
        }
    }

    #[test]
    fn trailing_data_after_the_tar_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ext4 = image(dir.path(), "ext4", 8192, true);
        let version = dir.path().join("version");
        fs::write(&version, "1\n").unwrap();
        let members = [("boot.img", ext4.clone()), ("root.img", ext4), ("VERSION.TXT", version)]
            .map(|(name, path)| PackageMember::file(name, path));
        let mut tar = Vec::new();
        crate::package::write_tar(&mut tar, &members, Path::new("test.tar")).unwrap();
        tar.extend_from_slice(b"hidden");
        let path = dir.path().join("update-img.tar.zst");
        fs::write(&path, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        let error = UpdateImage::verify(&path).unwrap_err().to_string();
        assert!(error.contains("data follows the end of the tar archive"), "{error}");
    }
}
