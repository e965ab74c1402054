//! Deterministic `.tar.zst` packages of (sparse) images: `disk-img.tar.zst` (member `disk.img`),
//! `update-img.tar.zst` (`boot.img`, `root.img`, `var.img`, `VERSION.TXT`) and the `.tzst` files that carry one
//! partition image (`partition.img`) between build steps.
//!
//! The tar is in GNU format. A member with holes (all-zero 4 KiB blocks, see [`crate::sparse`]) is stored
//! as an old-GNU sparse file (type `S`, sparse format 0.0, extension headers after the first four
//! map entries), which GNU tar (plain `-x`), bsdtar and the `tar` crate restore as a sparse file of
//! the right size; a member without holes is a regular file. Every header has the same fixed
//! metadata (mode 0644, owner 0:0, no owner names, mtime 0), so the archive depends only on the
//! member names, their order and their content. It is compressed as zstd frames (see [`frames`]):
//! each member's data in frames of its own, by multithreaded zstd at a pinned level, whose output
//! does not depend on the number of workers (>= 1), only on the level and the library version,
//! which Cargo.lock pins (zstd-sys builds its bundled libzstd); an index at the end says where each
//! member's data frames are, so that a package made from packages copies them as they are.

pub mod frames;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use tar::{EntryType, GnuExtSparseHeader, Header};

pub use self::frames::CompressionOptions;
use self::frames::{FrameWriter, ZSTD_MAGIC};
use crate::image_source::ImageSource;
use crate::io_error::PathIoError;
use crate::output::{write_atomically, write_atomically_via_path, OutputError};
use crate::sparse::{self, Extent, SparseMap};

/// The default zstd level: level 10 compresses images with few GB of data several times faster
/// than 19 for a few percent more bytes, and is well within zstd's fast-decompression range.
pub const DEFAULT_LEVEL: i32 = 10;

/// Long-distance matching window: 2^27 bytes = 128 MiB. Disk images repeat content far apart (the
/// same library in two places, the A and B slots); matching across 128 MiB made a 1 GB GuestOS-like
/// disk image 4% smaller for 20% more time. 128 MiB is also the largest window that `zstd -d` and
/// `tar --zstd` decompress without extra flags.
pub const WINDOW_LOG: u32 = 27;

/// The match finder's hash and chain tables at the default level: 2^24 entries each, where level
/// 10's own are 2^22 and 2^21. On GuestOS dev's root partition (410 MB of data) the data frames came
/// out 0.7 % smaller for about 1.1 s more on 2 cores, more than level 12 saves for its 2.1 s.
/// Decompression does not use these tables. Other levels keep zstd's tables.
pub const DEFAULT_LEVEL_TABLE_LOG: u32 = 24;

/// Tar's record unit.
const TAR_BLOCK: u64 = 512;
/// Map entries in the main old-GNU header and in each extension header.
const MAIN_SPARSE_ENTRIES: usize = 4;
const EXTENSION_SPARSE_ENTRIES: usize = 21;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("member name {name:?}: {problem}")]
    BadMemberName { name: String, problem: &'static str },
    #[error("member {name:?}: cannot make its tar header: {source}")]
    Header { name: String, source: io::Error },
    #[error("member name {name:?} is given twice")]
    DuplicateMember { name: String },
    #[error("a package needs at least one member")]
    NoMembers,
    #[error("zstd level {level} is out of range: use 1 to 22")]
    BadLevel { level: i32 },
    #[error("zstd needs at least one worker thread, not {threads}")]
    BadThreads { threads: u32 },
    #[error("{path} changed while it was being packaged")]
    Changed { path: PathBuf },
    #[error("{path}: cannot compress: {source}")]
    Compress { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid package: {problem}")]
    BadArchive { path: PathBuf, problem: String },
}

/// One file to put in a package: its member name and where its content is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub path: PathBuf,
    /// `path` is itself a package holding one image (a partition's `.tzst`), and the member is that
    /// image: a build step that gets partitions as packages repackages them without unpacking.
    pub packaged: bool,
}

impl Member {
    /// A member whose content is the file at `path`.
    pub fn file(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Member { name: name.into(), path: path.into(), packaged: false }
    }

    /// A member whose content is the one image inside the package at `path`.
    pub fn packaged_image(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Member { name: name.into(), path: path.into(), packaged: true }
    }
}

/// Whether `path` is a package rather than a raw image. A raw filesystem image starts with a boot
/// sector or zeros, never with a zstd frame.
pub fn is_package(path: &Path) -> Result<bool, PackageError> {
    let read_error = |source| PackageError::Io(PathIoError { action: "read", path: path.to_owned(), source });
    let mut file = File::open(path).map_err(read_error)?;
    let mut magic = [0u8; 4];
    let count = sparse::read_full(&mut file, &mut magic).map_err(read_error)?;
    Ok(count == magic.len() && magic == ZSTD_MAGIC)
}

/// Calls `read` with the name, the size and the content (holes read as zeros) of the one image in
/// the package `archive`, such as a partition's `.tzst` holding `partition.img`. Fails if the
/// package holds more than that one regular or sparse file.
pub fn read_image_member<T, E: From<PackageError>>(
    archive: &Path,
    read: impl FnOnce(&str, u64, &mut dyn io::Read) -> Result<T, E>,
) -> Result<T, E> {
    let mut tar = open_archive(archive)?;
    let mut entries = tar.entries().map_err(|error| bad_archive(archive, error.to_string()))?;
    let mut entry = first_image_entry(archive, &mut entries)?;
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let result = read(&name, entry.size(), &mut entry)?;
    drop(entry);
    if let Some(next) = entries.next() {
        let next = next.map_err(|error| bad_archive(archive, error.to_string()))?;
        let problem = format!(
            "it holds more than one member ({:?} after {name:?}); an image package holds one",
            String::from_utf8_lossy(&next.path_bytes())
        );
        return Err(bad_archive(archive, problem).into());
    }
    Ok(result)
}

fn bad_archive(archive: &Path, problem: String) -> PackageError {
    PackageError::BadArchive { path: archive.to_owned(), problem }
}

fn open_archive(
    archive: &Path,
) -> Result<tar::Archive<zstd::stream::read::Decoder<'static, io::BufReader<File>>>, PackageError> {
    let file = File::open(archive)
        .map_err(|source| PackageError::Io(PathIoError { action: "read", path: archive.to_owned(), source }))?;
    let decoder = zstd::stream::read::Decoder::new(file).map_err(|error| bad_archive(archive, error.to_string()))?;
    Ok(tar::Archive::new(decoder))
}

fn first_image_entry<'a, R: io::Read>(
    archive: &Path,
    entries: &mut tar::Entries<'a, R>,
) -> Result<tar::Entry<'a, R>, PackageError> {
    let entry = entries
        .next()
        .ok_or_else(|| bad_archive(archive, "it holds no members".into()))?
        .map_err(|error| bad_archive(archive, error.to_string()))?;
    let kind = entry.header().entry_type();
    if kind != EntryType::Regular && kind != EntryType::GNUSparse {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        return Err(bad_archive(archive, format!("member {name:?} is not a regular or sparse file ({kind:?})")));
    }
    Ok(entry)
}

/// Checks that `name` is a plain file name that fits a tar header's 100-byte name field.
pub fn check_member_name(name: &str) -> Result<(), PackageError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name == "." || name == ".." || name.contains('/') {
        Some("must be a plain file name, without '/'")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name.len() > 100 {
        Some("is longer than the 100 bytes of a tar header")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(PackageError::BadMemberName { name: name.to_owned(), problem }),
        None => Ok(()),
    }
}

/// Writes `output`, a zstd-compressed tar holding `members` in the given order.
pub fn package(output: &Path, members: &[Member], options: CompressionOptions) -> Result<(), PackageError> {
    check_options(options)?;
    check_members(members.iter().map(|member| member.name.as_str()))?;
    let mut sources = Vec::with_capacity(members.len());
    for member in members {
        let source =
            if member.packaged { ImageSource::open_package(&member.path) } else { ImageSource::open_raw(&member.path) };
        sources.push((member.name.as_str(), source?));
    }
    package_images(output, &sources, options)
}

/// Writes `output` holding the images `members` (name, content) in the given order: the data of
/// packaged images is copied as the frames it already is, the rest is compressed.
pub fn package_images(
    output: &Path,
    members: &[(&str, ImageSource)],
    options: CompressionOptions,
) -> Result<(), PackageError> {
    check_options(options)?;
    check_members(members.iter().map(|(name, _)| *name))?;
    write_atomically(output, |file| {
        let mut writer = FrameWriter::new(file, output, options);
        for (name, source) in members {
            let map = source.map();
            let headers = member_headers(name, map)
                .map_err(|source| PackageError::Header { name: (*name).to_owned(), source })?;
            headers.iter().for_each(|header| writer.structure(header));
            writer.begin_member(name, map)?;
            source.write_data(&mut writer)?;
            let padding = map.data_bytes().next_multiple_of(TAR_BLOCK) - map.data_bytes();
            writer.structure(&[0u8; TAR_BLOCK as usize][..padding as usize]);
        }
        // The end-of-archive marker: two zero blocks.
        writer.structure(&[0u8; 2 * TAR_BLOCK as usize]);
        writer.finish()
    })
}

fn check_options(options: CompressionOptions) -> Result<(), PackageError> {
    if !(1..=22).contains(&options.level) {
        return Err(PackageError::BadLevel { level: options.level });
    }
    if options.threads == 0 {
        return Err(PackageError::BadThreads { threads: options.threads });
    }
    Ok(())
}

fn check_members<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), PackageError> {
    let mut seen = BTreeSet::new();
    for name in names {
        check_member_name(name)?;
        if !seen.insert(name) {
            return Err(PackageError::DuplicateMember { name: name.to_owned() });
        }
    }
    if seen.is_empty() {
        return Err(PackageError::NoMembers);
    }
    Ok(())
}

/// The 512-byte header blocks of one member: the GNU header, then the sparse extension headers.
fn member_headers(name: &str, map: &SparseMap) -> io::Result<Vec<[u8; TAR_BLOCK as usize]>> {
    let mut header = Header::new_gnu();
    header.set_path(name)?;
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(map.data_bytes());
    if !map.has_holes() {
        header.set_entry_type(EntryType::Regular);
        header.set_cksum();
        return Ok(vec![*header.as_bytes()]);
    }
    header.set_entry_type(EntryType::GNUSparse);
    let mut entries = map.extents.clone();
    // A file ending in a hole ends its map with an empty entry at its size, as GNU tar writes it:
    // that is what makes extractors give the file its full length.
    if entries.last().map_or(0, |last| last.offset + last.length) < map.size {
        entries.push(Extent { offset: map.size, length: 0 });
    }
    let (main, rest) = entries.split_at(entries.len().min(MAIN_SPARSE_ENTRIES));
    let gnu = header.as_gnu_mut().ok_or_else(|| io::Error::other("not a GNU header"))?;
    gnu.set_real_size(map.size);
    for (slot, extent) in gnu.sparse.iter_mut().zip(main) {
        slot.set_offset(extent.offset);
        slot.set_length(extent.length);
    }
    gnu.set_is_extended(!rest.is_empty());
    header.set_cksum();
    let mut blocks = vec![*header.as_bytes()];
    let chunks: Vec<&[Extent]> = rest.chunks(EXTENSION_SPARSE_ENTRIES).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        let mut extension = GnuExtSparseHeader::new();
        for (slot, extent) in extension.sparse.iter_mut().zip(chunk.iter()) {
            slot.set_offset(extent.offset);
            slot.set_length(extent.length);
        }
        extension.set_is_extended(index + 1 < chunks.len());
        blocks.push(*extension.as_bytes());
    }
    Ok(blocks)
}

/// Extracts every member of the `.tar.zst` package `archive` into `output_dir`, each file written
/// atomically, the holes of sparse members left as holes. Returns the member names in archive order.
pub fn unpack(archive: &Path, output_dir: &Path) -> Result<Vec<String>, PackageError> {
    let bad = |problem: String| bad_archive(archive, problem);
    let mut tar = open_archive(archive)?;
    let mut names = Vec::new();
    for entry in tar.entries().map_err(|error| bad(error.to_string()))? {
        let mut entry = entry.map_err(|error| bad(error.to_string()))?;
        let name =
            String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| bad("a member name is not UTF-8".into()))?;
        check_member_name(&name)?;
        let kind = entry.header().entry_type();
        if kind != EntryType::Regular && kind != EntryType::GNUSparse {
            return Err(bad(format!("member {name:?} is not a regular or sparse file ({kind:?})")));
        }
        if names.contains(&name) {
            return Err(PackageError::DuplicateMember { name });
        }
        let path = output_dir.join(&name);
        let size = entry.size();
        write_atomically_via_path(&path, |_, temporary| {
            // The tar crate seeks over the holes of a sparse member when it writes the file itself,
            // where reading the member would produce every zero byte of it (50 GB for a disk).
            // It creates the file anew, so the placeholder goes first.
            fs::remove_file(temporary)
                .map_err(|source| PackageError::Io(PathIoError { action: "write", path: path.clone(), source }))?;
            entry.unpack(temporary).map_err(|error| bad(format!("member {name:?}: {error}")))?;
            let written = fs::metadata(temporary)
                .map_err(|source| PackageError::Io(PathIoError { action: "write", path: path.clone(), source }))?
                .len();
            if written != size {
                return Err(bad(format!("member {name:?} is truncated")));
            }
            Ok(())
        })?;
        names.push(name);
    }
    if names.is_empty() {
        return Err(bad("it holds no members".into()));
    }
    Ok(names)
}

/// Parses `NAME=PATH`, the command-line form of a member.
pub fn parse_member(text: &str) -> Result<Member, PackageError> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| PackageError::BadMemberName { name: text.to_owned(), problem: "expected NAME=PATH" })?;
    check_member_name(name)?;
    Ok(Member::file(name, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;

    /// The tar stream of a package of `members`.
    fn tar_of(members: &[Member]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("test.tar.zst");
        package(&output, members, CompressionOptions { level: 1, threads: 1 }).unwrap();
        zstd::decode_all(File::open(&output).unwrap()).unwrap()
    }

    fn image(dir: &Path, name: &str, blocks: &[(u64, u8)], size: u64) -> Member {
        let path = dir.join(name);
        let mut content = vec![0u8; size as usize];
        for &(block, value) in blocks {
            let start = (block * sparse::BLOCK_SIZE) as usize;
            content[start..start + 4096].fill(value);
        }
        fs::write(&path, content).unwrap();
        Member::file(name, path)
    }

    #[test]
    fn the_tar_crate_reads_back_sparse_and_regular_members() {
        let dir = tempfile::tempdir().unwrap();
        // 30 data runs need the main header and two extension headers.
        let blocks: Vec<(u64, u8)> = (0..30).map(|index| (index * 2 + 1, index as u8 + 1)).collect();
        let members = [
            image(dir.path(), "disk.img", &blocks, 70 * 4096),
            image(dir.path(), "zeros.img", &[], 5 * 4096 + 3),
            Member::file("VERSION.TXT", dir.path().join("VERSION.TXT")),
        ];
        fs::write(&members[2].path, b"1.2.3\n").unwrap();
        let bytes = tar_of(&members);
        let mut archive = tar::Archive::new(&bytes[..]);
        for (entry, member) in archive.entries().unwrap().zip(&members) {
            let mut entry = entry.unwrap();
            assert_eq!(entry.path_bytes().as_ref(), member.name.as_bytes());
            let header = entry.header();
            assert_eq!(
                (header.mode().unwrap(), header.uid().unwrap(), header.gid().unwrap(), header.mtime().unwrap()),
                (0o644, 0, 0, 0)
            );
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            assert_eq!(content, fs::read(&member.path).unwrap(), "{}", member.name);
        }
        // Only data is stored: 30 blocks plus headers and the end marker.
        assert!(bytes.len() < 31 * 4096 + 10 * 512, "{}", bytes.len());
    }

    #[test]
    fn member_names_are_plain_and_unique() {
        assert!(check_member_name("disk.img").is_ok());
        for bad in ["", "..", "a/b", &"x".repeat(101)] {
            assert!(check_member_name(bad).is_err(), "{bad:?}");
        }
        let member = parse_member("disk.img=some/where.img").unwrap();
        assert_eq!(member.path, PathBuf::from("some/where.img"));
        assert!(parse_member("noequals").is_err());
        let twice = [member.clone(), member];
        assert!(matches!(
            check_members(twice.iter().map(|member| member.name.as_str())),
            Err(PackageError::DuplicateMember { .. })
        ));
    }

    #[test]
    fn thread_count_does_not_change_the_bytes_and_unpack_restores_holes() {
        let dir = tempfile::tempdir().unwrap();
        // Enough data (incompressible-ish) for several zstd jobs would be slow; a few MiB suffices
        // to exercise the multithreaded path.
        let path = dir.path().join("disk.img");
        let mut content = vec![0u8; 8 << 20];
        let mut state = 1u32;
        for chunk in content[..3 << 20].chunks_mut(4) {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            chunk.copy_from_slice(&(state >> 8).to_le_bytes());
        }
        fs::write(&path, &content).unwrap();
        let members = [Member::file("disk.img", path)];
        let mut outputs = Vec::new();
        for threads in [1, 2, 4] {
            let output = dir.path().join(format!("out{threads}.tar.zst"));
            package(&output, &members, CompressionOptions { level: 3, threads }).unwrap();
            outputs.push(fs::read(&output).unwrap());
        }
        assert!(outputs.iter().all(|bytes| bytes == &outputs[0]));
        let unpacked = dir.path().join("unpacked");
        fs::create_dir(&unpacked).unwrap();
        let names = unpack(&dir.path().join("out1.tar.zst"), &unpacked).unwrap();
        assert_eq!(names, ["disk.img"]);
        assert_eq!(fs::read(unpacked.join("disk.img")).unwrap(), content);
    }

    #[test]
    fn bad_parameters_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.tar.zst");
        let members = [Member::file("disk.img", dir.path().join("absent.img"))];
        let error = package(&output, &members, CompressionOptions::default()).unwrap_err();
        assert!(error.to_string().contains("absent.img"), "{error}");
        let level = CompressionOptions { level: 0, threads: 1 };
        assert!(matches!(package(&output, &members, level), Err(PackageError::BadLevel { .. })));
        assert!(!output.exists());
    }

    #[test]
    fn an_image_from_a_package_is_stored_as_the_image_file_itself_would_be() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path(), "partition.img", &[(1, 7), (2, 8), (40, 9)], 64 * 4096 + 100);
        let partition = dir.path().join("partition-root.tzst");
        package(&partition, std::slice::from_ref(&raw), CompressionOptions { level: 3, threads: 1 }).unwrap();
        assert!(is_package(&partition).unwrap());
        assert!(!is_package(&raw.path).unwrap());
        assert_eq!(read_image_member(&partition, |_, size, _| Ok::<_, PackageError>(size)).unwrap(), 64 * 4096 + 100);
        let version = dir.path().join("VERSION.TXT");
        fs::write(&version, b"1.2.3\n").unwrap();
        let from_file = tar_of(&[Member::file("root.img", &raw.path), Member::file("VERSION.TXT", &version)]);
        let from_package =
            tar_of(&[Member::packaged_image("root.img", &partition), Member::file("VERSION.TXT", &version)]);
        assert_eq!(from_file, from_package);
    }

    #[test]
    fn an_image_package_must_hold_one_regular_or_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = image(dir.path(), "boot.img", &[(0, 1)], 4096);
        let second = image(dir.path(), "root.img", &[(0, 2)], 4096);
        let two = dir.path().join("two.tzst");
        package(&two, &[first.clone(), second], CompressionOptions { level: 3, threads: 1 }).unwrap();
        let error = read_image_member(&two, |_, _, reader| {
            io::copy(reader, &mut io::sink())
                .map_err(|source| PackageError::Io(PathIoError { action: "read", path: two.clone(), source }))
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("two.tzst") && error.contains("more than one member"), "{error}");
        let error = is_package(&dir.path().join("absent.tzst")).unwrap_err().to_string();
        assert!(error.contains("absent.tzst"), "{error}");
        let garbage = dir.path().join("garbage.tzst");
        fs::write(&garbage, [&ZSTD_MAGIC[..], b"not a frame"].concat()).unwrap();
        assert!(is_package(&garbage).unwrap());
        let error = read_image_member(&garbage, |_, size, _| Ok::<_, PackageError>(size)).unwrap_err().to_string();
        assert!(error.contains("garbage.tzst") && error.contains("not a valid package"), "{error}");
    }

    /// The compressed bytes of each data frame of each member, from the package's index.
    fn data_frames(path: &Path) -> Vec<(String, Vec<Vec<u8>>)> {
        use std::os::unix::fs::FileExt;
        let file = File::open(path).unwrap();
        let index = frames::PackageIndex::read(&file, path).unwrap().expect("an index");
        let read = |span: &frames::FrameSpan| {
            let mut bytes = vec![0u8; span.length as usize];
            file.read_exact_at(&mut bytes, span.offset).unwrap();
            bytes
        };
        index.members.iter().map(|member| (member.name.clone(), member.frames.iter().map(read).collect())).collect()
    }

    #[test]
    fn packaged_images_are_copied_as_their_frames_and_the_result_is_a_plain_tar_zst() {
        let dir = tempfile::tempdir().unwrap();
        let root = image(dir.path(), "root.img", &[(1, 7), (2, 8), (40, 9)], 64 * 4096);
        let boot = image(dir.path(), "boot.img", &[(0, 3)], 8 * 4096);
        let options = CompressionOptions { level: 3, threads: 2 };
        let partition = |member: &Member| {
            let path = dir.path().join(format!("partition-{}.tzst", member.name));
            package(&path, &[Member::file("partition.img", &member.path)], options).unwrap();
            path
        };
        let (root_package, boot_package) = (partition(&root), partition(&boot));
        let version = dir.path().join("VERSION.TXT");
        fs::write(&version, b"1.2.3\n").unwrap();
        let update = dir.path().join("update-img.tar.zst");
        let members = [
            Member::packaged_image("boot.img", &boot_package),
            Member::packaged_image("root.img", &root_package),
            Member::file("VERSION.TXT", &version),
        ];
        package(&update, &members, options).unwrap();
        // The data frames are the partition packages' own, byte for byte.
        let frames = data_frames(&update);
        assert_eq!(frames[0].1, data_frames(&boot_package)[0].1);
        assert_eq!(frames[1].1, data_frames(&root_package)[0].1);
        assert_eq!(frames[2].0, "VERSION.TXT");
        // Decompressed, it is the tar of the raw images; the tar crate reads it.
        let expected = tar_of(&[
            Member::file("boot.img", &boot.path),
            Member::file("root.img", &root.path),
            Member::file("VERSION.TXT", &version),
        ]);
        assert_eq!(zstd::decode_all(File::open(&update).unwrap()).unwrap(), expected);
        let unpacked = dir.path().join("unpacked");
        fs::create_dir(&unpacked).unwrap();
        assert_eq!(unpack(&update, &unpacked).unwrap(), ["boot.img", "root.img", "VERSION.TXT"]);
        assert_eq!(fs::read(unpacked.join("root.img")).unwrap(), fs::read(&root.path).unwrap());
        // A member of zeros has no data frame; its package is still read back.
        let zeros = image(dir.path(), "zeros.img", &[], 4 * 4096);
        let empty = dir.path().join("zeros.tzst");
        package(&empty, std::slice::from_ref(&zeros), options).unwrap();
        assert!(data_frames(&empty)[0].1.is_empty());
        let source = ImageSource::open(&empty).unwrap();
        assert_eq!((source.size(), source.map().extents.len()), (4 * 4096, 0));
    }

    #[test]
    fn a_package_without_an_index_is_read_by_decompressing_it_and_a_damaged_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path(), "partition.img", &[(1, 7), (5, 9)], 8 * 4096);
        let options = CompressionOptions { level: 3, threads: 1 };
        let indexed = dir.path().join("indexed.tzst");
        package(&indexed, std::slice::from_ref(&raw), options).unwrap();
        // A .tar.zst as zstd makes it: one frame, no index.
        let plain = dir.path().join("plain.tzst");
        fs::write(&plain, zstd::encode_all(&tar_of(std::slice::from_ref(&raw))[..], 3).unwrap()).unwrap();
        for path in [&indexed, &plain] {
            let source = ImageSource::open(path).unwrap();
            assert_eq!(source.map(), &sparse::scan(&mut File::open(&raw.path).unwrap()).unwrap());
            let output = tempfile::tempfile().unwrap();
            source.write_file(&output).unwrap();
            let mut copied = vec![0u8; source.size() as usize];
            std::os::unix::fs::FileExt::read_exact_at(&output, &mut copied, 0).unwrap();
            assert!(copied == fs::read(&raw.path).unwrap(), "{}", path.display());
        }
        // An index whose frame is not where it says is refused, naming the package.
        let mut bytes = fs::read(&indexed).unwrap();
        let key = b"\"offset\":";
        let at = bytes.windows(key.len()).position(|window| window == key).unwrap() + key.len();
        // Offset 0, the frame of the tar header, padded with spaces to keep the index's length.
        let digits = bytes[at..].iter().take_while(|byte| byte.is_ascii_digit()).count();
        bytes[at..at + digits].fill(b' ');
        bytes[at] = b'0';
        let damaged = dir.path().join("damaged.tzst");
        fs::write(&damaged, &bytes).unwrap();
        let error = ImageSource::open(&damaged).unwrap_err().to_string();
        assert!(error.contains("damaged.tzst") && error.contains("points at no frame"), "{error}");
    }
}
