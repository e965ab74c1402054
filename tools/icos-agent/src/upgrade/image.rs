//! The update image `update-img.tar.zst` (made by [`crate::package`]): a zstd-compressed GNU tar
//! holding one ext4 image `<role>.img` for each role of a slot (`boot.img`, `root.img`, `var.img`
//! for the roles of [`crate::layout::ROLES`]) and `VERSION.TXT`.
//!
//! A file is read twice as a stream, never unpacked: once to verify all of it before anything is
//! written (zstd frame checksums, tar headers, member names and types against the roles of the
//! slot it is for, ext4 magics, the version, the SHA-256 of the file), and once to write the
//! images. The second pass computes the SHA-256 again, so that what was written is what was
//! verified even if the file changed in between. A download is read once ([`UpdateImage::stream`]):
//! the same checks are made as the images are written, and the slot counts as installed only once
//! all of them passed.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::{version_line, Slot, UpgradeError};
use crate::hashing::HashingReader;
use crate::layout;
use crate::sparse::{is_zero, read_full};

/// The member holding the version, as rules/private/images.bzl (`upgrade_image`) names it.
const VERSION_MEMBER: &str = "VERSION.TXT";
/// An image member is named after the role of the slot it is written to: `root.img`.
const IMAGE_SUFFIX: &str = ".img";
/// A version is one short line; the bound keeps grubenv, which records it, within 1024 bytes.
const MAX_VERSION_BYTES: u64 = 128;
/// ext4's superblock magic 0xEF53, little-endian at byte 1080 (superblock at 1024, `s_magic` at 56).
const EXT4_MAGIC_OFFSET: usize = 1080;
const EXT4_MAGIC: [u8; 2] = [0x53, 0xEF];

/// The name of the member holding the image of `role`.
pub fn member_name(role: &str) -> String {
    format!("{role}{IMAGE_SUFFIX}")
}

/// What a member of an update is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    /// The image of this role.
    Image(String),
    Version,
}

impl Member {
    fn name(&self) -> String {
        match self {
            Member::Image(role) => member_name(role),
            Member::Version => VERSION_MEMBER.to_owned(),
        }
    }
}

/// Why a member is refused: the archive is malformed, or it is made for other roles than the
/// slot's (an update of another OS).
enum Refusal {
    Invalid(String),
    DoesNotFit(String),
}

/// The roles of `slot`, for messages: `boot, root, var`.
fn role_list(slot: &layout::Slot) -> String {
    slot.members.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// The member name of `entry`, which must be a regular or sparse file.
fn entry_name(entry: &tar::Entry<'_, impl Read>) -> Result<String, String> {
    let raw = entry.path_bytes();
    let name = String::from_utf8_lossy(&raw).into_owned();
    let kind = entry.header().entry_type();
    if kind != EntryType::Regular && kind != EntryType::GNUSparse {
        return Err(format!("member {name} is not a regular or sparse file ({kind:?})"));
    }
    Ok(name)
}

/// Identifies `entry`: VERSION.TXT, or the image of one of the roles of `slot`.
fn identify(entry: &tar::Entry<'_, impl Read>, slot: &layout::Slot) -> Result<Member, Refusal> {
    let name = entry_name(entry).map_err(Refusal::Invalid)?;
    if name == VERSION_MEMBER {
        return Ok(Member::Version);
    }
    match name.strip_suffix(IMAGE_SUFFIX) {
        Some(role) if slot.members.contains_key(role) => Ok(Member::Image(role.to_owned())),
        Some(role) => Err(Refusal::DoesNotFit(format!(
            "unexpected member {name:?}: slot {} has no role {role:?} (its roles: {})",
            slot.name,
            role_list(slot)
        ))),
        None => Err(Refusal::Invalid(format!(
            "unexpected member {name:?}: an update holds <role>{IMAGE_SUFFIX} for each role of the slot and \
             {VERSION_MEMBER}"
        ))),
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
    /// The images in archive order: the role each is for, and its size.
    pub images: Vec<(String, u64)>,
}

/// An update image: a whole file, or a stretch of one (the member of a release bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// The file that holds it.
    pub file: PathBuf,
    /// Where in the file it starts, and its length; all of the file when `None`.
    pub section: Option<(u64, u64)>,
    /// What messages call it: the file, or `<bundle>:update-img.tar.zst`.
    pub name: PathBuf,
}

impl ImageFile {
    /// All of the file at `path`.
    pub fn whole(path: &Path) -> ImageFile {
        ImageFile { file: path.to_owned(), section: None, name: path.to_owned() }
    }
}

type Archive<R> = tar::Archive<zstd::stream::read::Decoder<'static, BufReader<HashingReader<R>>>>;

fn archive<R: Read>(reader: R, path: &Path) -> Result<Archive<R>, UpgradeError> {
    let decoder = zstd::stream::read::Decoder::new(HashingReader::new(reader))
        .map_err(|source| UpgradeError::Read { path: path.to_owned(), source })?;
    Ok(tar::Archive::new(decoder))
}

fn open(image: &ImageFile) -> Result<Archive<Take<File>>, UpgradeError> {
    let read_error = |source| UpgradeError::Read { path: image.name.clone(), source };
    let mut file = File::open(&image.file).map_err(read_error)?;
    let (start, length) = image.section.unwrap_or((0, u64::MAX));
    file.seek(SeekFrom::Start(start)).map_err(read_error)?;
    archive(file.take(length), &image.name)
}

/// Reads what the tar reader left: the rest of the zstd stream, whose frame checksum is checked
/// only at its end, including the padding after the tar's end marker, which must be zeros. The
/// decoder stops only at the end of the stream (it decodes a next frame, refuses anything else),
/// so the returned SHA-256 and size are those of the whole file.
fn finish<R: Read>(archive: Archive<R>, path: &Path) -> Result<(String, u64), UpgradeError> {
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
    let digest = decoder
        .finish()
        .into_inner()
        .finish()
        .map_err(|source| UpgradeError::Read { path: path.to_owned(), source })?;
    Ok((digest.sha256_hex(), digest.length))
}

impl UpdateImage {
    /// Reads all of `image` once and checks it for `slot`, the slot it is to be written to: a
    /// zstd stream with valid checksums of a tar whose members are exactly one ext4 image per role
    /// of the slot (`<role>.img`) and VERSION.TXT (one line), each once. Only the first bytes of
    /// each image are looked at; the rest is decompressed and checked without producing the zeros
    /// of sparse members' holes.
    pub fn verify(image: &ImageFile, slot: &layout::Slot) -> Result<UpdateImage, UpgradeError> {
        Self::read_checked(open(image)?, &image.name, slot, |_, _, _| Ok(()))
    }

    /// Reads an update image from `stream` (a download) in one pass, checking it as
    /// [`UpdateImage::verify`] does, and hands each image to `copy` with its role and size as a
    /// reader of all its bytes as it comes. The checks that need all of it (the SHA-256, the
    /// frame checksum at its end, a role left out) are made after the last image was handed on:
    /// what `copy` wrote may be used only when this returns `Ok`.
    pub fn stream(
        stream: impl Read,
        path: &Path,
        slot: &layout::Slot,
        copy: impl FnMut(&str, u64, &mut dyn Read) -> Result<(), UpgradeError>,
    ) -> Result<UpdateImage, UpgradeError> {
        Self::read_checked(archive(stream, path)?, path, slot, copy)
    }

    fn read_checked<R: Read>(
        mut archive: Archive<R>,
        path: &Path,
        slot: &layout::Slot,
        mut on_image: impl FnMut(&str, u64, &mut dyn Read) -> Result<(), UpgradeError>,
    ) -> Result<UpdateImage, UpgradeError> {
        let bad = |problem: String| UpgradeError::BadImage { path: path.to_owned(), problem };
        let does_not_fit =
            |problem: String| UpgradeError::DoesNotFit { path: path.to_owned(), slot: slot.name.clone(), problem };
        let mut seen = Vec::new();
        let mut images = Vec::new();
        let mut version = None;
        for entry in archive.entries().map_err(|error| bad(error.to_string()))? {
            let mut entry = entry.map_err(|error| bad(error.to_string()))?;
            let member = identify(&entry, slot).map_err(|refusal| match refusal {
                Refusal::Invalid(problem) => bad(problem),
                Refusal::DoesNotFit(problem) => does_not_fit(problem),
            })?;
            if seen.contains(&member) {
                return Err(bad(format!("member {} is given twice", member.name())));
            }
            seen.push(member.clone());
            match member {
                Member::Image(role) => {
                    let mut head = [0u8; EXT4_MAGIC_OFFSET + EXT4_MAGIC.len()];
                    let count = read_full(&mut entry, &mut head).map_err(|error| bad(error.to_string()))?;
                    if count < head.len() || head[EXT4_MAGIC_OFFSET..] != EXT4_MAGIC {
                        return Err(bad(format!(
                            "{} is not an ext4 image: no superblock magic at byte {EXT4_MAGIC_OFFSET}",
                            member_name(&role)
                        )));
                    }
                    let size = entry.size();
                    on_image(&role, size, &mut (&head[..]).chain(&mut entry))?;
                    images.push((role, size));
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
        // Every role is written: a role left out would keep the old system's file system next to
        // the new ones of the others.
        for (role, target) in &slot.members {
            if !seen.contains(&Member::Image(role.clone())) {
                return Err(does_not_fit(format!(
                    "member {} is missing: slot {} has a {role} target ({})",
                    member_name(role),
                    slot.name,
                    target.name
                )));
            }
        }
        let version = version.ok_or_else(|| bad(format!("member {VERSION_MEMBER} is missing")))?;
        Ok(UpdateImage { sha256, compressed_size, version, images })
    }

    /// Reads `path` again and hands each image to `copy` with its role and size, as a reader of
    /// all its bytes (the holes of sparse members read as zeros). Fails with
    /// [`UpgradeError::ImageChanged`] when the file is no longer the one verified: before an
    /// image whose name or size changed, else at the end, by the SHA-256.
    pub fn copy_images(
        &self,
        image: &ImageFile,
        slot: Slot,
        mut copy: impl FnMut(&str, u64, &mut dyn Read) -> Result<(), UpgradeError>,
    ) -> Result<(), UpgradeError> {
        let path = &image.name;
        let changed = || UpgradeError::ImageChanged { path: path.to_owned(), slot };
        let read_error = |source| UpgradeError::Read { path: path.to_owned(), source };
        let mut archive = open(image)?;
        let mut expected = self.images.iter();
        for entry in archive.entries().map_err(read_error)? {
            let mut entry = entry.map_err(read_error)?;
            let name = entry_name(&entry).map_err(|_| changed())?;
            if name == VERSION_MEMBER {
                continue;
            }
            match expected.next() {
                Some((role, size)) if member_name(role) == name && *size == entry.size() => {
                    copy(role, *size, &mut entry)?;
                }
                _ => return Err(changed()),
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
    use crate::layout::{Location, Target};
    use crate::package::{package, CompressionOptions, Member as PackageMember};
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::PathBuf;

    /// Slot `name` with `roles`, each on a partition named `<name>_<role>`.
    fn slot(name: &str, roles: &[&str]) -> layout::Slot {
        let members: BTreeMap<String, Target> = roles
            .iter()
            .zip(1u32..)
            .map(|(role, number)| {
                let target = Target {
                    name: format!("{name}_{role}"),
                    location: Location::Partition { number, uuid: uuid::Uuid::nil() },
                    offset: u64::from(number) << 20,
                    size: 1 << 20,
                    filesystem_parent: uuid::Uuid::nil(),
                };
                (role.to_string(), target)
            })
            .collect();
        layout::Slot { name: name.into(), members }
    }

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
        let members: Vec<PackageMember> = members.iter().map(|(name, path)| PackageMember::file(*name, path)).collect();
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
        let verified = UpdateImage::verify(&ImageFile::whole(&path), &slot("B", &["boot", "root"])).unwrap();
        assert_eq!(verified.version, "1.2.3");
        assert_eq!(verified.images, [("boot".to_owned(), 64 << 10), ("root".to_owned(), 256 << 10)]);
        assert_eq!(verified.compressed_size, fs::metadata(&path).unwrap().len());
        let mut copied = Vec::new();
        verified
            .copy_images(&ImageFile::whole(&path), Slot::B, |role, size, reader| {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).unwrap();
                assert_eq!(bytes.len() as u64, size);
                copied.push((role.to_owned(), bytes));
                Ok(())
            })
            .unwrap();
        assert_eq!(copied[0], ("boot".to_owned(), fs::read(&boot).unwrap()));
        assert_eq!(copied[1], ("root".to_owned(), fs::read(&root).unwrap()));
    }

    #[test]
    fn a_changed_file_is_noticed_by_the_second_pass() {
        let dir = tempfile::tempdir().unwrap();
        let boot = image(dir.path(), "boot", 64 << 10, true);
        let root = image(dir.path(), "root", 64 << 10, true);
        let version = dir.path().join("version");
        fs::write(&version, "1\n").unwrap();
        let path = update(dir.path(), &[("boot.img", &boot), ("root.img", &root), ("VERSION.TXT", &version)]);
        let verified = UpdateImage::verify(&ImageFile::whole(&path), &slot("A", &["boot", "root"])).unwrap();
        fs::write(&version, "2\n").unwrap();
        update(dir.path(), &[("boot.img", &boot), ("root.img", &root), ("VERSION.TXT", &version)]);
        let result = verified.copy_images(&ImageFile::whole(&path), Slot::A, |_, _, _| Ok(()));
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
        let var = image(dir.path(), "var", 8192, true);
        let cases: [(&[(&str, &Path)], &str); 8] = [
            (
                &[("boot.img", &ext4), ("VERSION.TXT", &version)],
                "member root.img is missing: slot B has a root target (B_root)",
            ),
            (&[("boot.img", &ext4), ("root.img", &ext4)], "member VERSION.TXT is missing"),
            (&[("boot.img", &ext4), ("root.img", &other), ("VERSION.TXT", &version)], "root.img is not an ext4"),
            (&[("boot.img", &tiny), ("root.img", &ext4), ("VERSION.TXT", &version)], "boot.img is not an ext4"),
            (&[("boot.img", &ext4), ("root.img", &ext4), ("VERSION.TXT", &two_lines)], "more than one line"),
            (
                &[("boot.img", &ext4), ("disk.img", &ext4)],
                "the update does not fit slot B: unexpected member \"disk.img\": slot B has no role \"disk\" \
                 (its roles: boot, root)",
            ),
            (&[("boot.img", &ext4), ("README", &version)], "not a valid update image: unexpected member \"README\""),
            // var.img is an image of a known role, but slot B has none.
            (
                &[("boot.img", &ext4), ("root.img", &ext4), ("var.img", &var), ("VERSION.TXT", &version)],
                "slot B has no role \"var\"",
            ),
        ];
        for (members, expected) in cases {
            let path = update(dir.path(), members);
            let error =
                UpdateImage::verify(&ImageFile::whole(&path), &slot("B", &["boot", "root"])).unwrap_err().to_string();
            assert!(error.contains(expected), "{members:?}: {error}");
        }
        // `icos package` refuses a member given twice; an update made otherwise may hold one.
        let ext4_bytes = fs::read(&ext4).unwrap();
        for (name, bytes) in [("boot.img", &ext4_bytes[..]), ("VERSION.TXT", b"1\n")] {
            let mut builder = tar::Builder::new(Vec::new());
            for _ in 0..2 {
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                builder.append_data(&mut header, name, bytes).unwrap();
            }
            let path = dir.path().join("twice.tar.zst");
            fs::write(&path, zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap()).unwrap();
            let error =
                UpdateImage::verify(&ImageFile::whole(&path), &slot("B", &["boot", "root"])).unwrap_err().to_string();
            assert!(error.contains(&format!("member {name} is given twice")), "{error}");
        }
        // The roles come from the slot: with var, an update without var.img does not fit.
        let path = update(dir.path(), &[("boot.img", &ext4), ("root.img", &ext4), ("VERSION.TXT", &version)]);
        let error = UpdateImage::verify(&ImageFile::whole(&path), &slot("A", &["boot", "root", "var"]))
            .unwrap_err()
            .to_string();
        assert!(
            error
                .contains("the update does not fit slot A: member var.img is missing: slot A has a var target (A_var)"),
            "{error}"
        );
    }

    #[test]
    fn trailing_data_after_the_tar_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ext4 = image(dir.path(), "ext4", 8192, true);
        let version = dir.path().join("version");
        fs::write(&version, "1\n").unwrap();
        let members = [("boot.img", ext4.clone()), ("root.img", ext4), ("VERSION.TXT", version)]
            .map(|(name, path)| PackageMember::file(name, path));
        let package = dir.path().join("members.tar.zst");
        crate::package::package(&package, &members, crate::package::CompressionOptions { level: 1, threads: 1 })
            .unwrap();
        let mut tar = zstd::decode_all(File::open(&package).unwrap()).unwrap();
        tar.extend_from_slice(b"hidden");
        let path = dir.path().join("update-img.tar.zst");
        fs::write(&path, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        let error =
            UpdateImage::verify(&ImageFile::whole(&path), &slot("B", &["boot", "root"])).unwrap_err().to_string();
        assert!(error.contains("data follows the end of the tar archive"), "{error}");
    }
}
