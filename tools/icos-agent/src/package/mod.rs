//! Deterministic `.tar.zst` packages of (sparse) images: `disk-img.tar.zst` (member `disk.img`),
//! `update-img.tar.zst` (`boot.img`, `root.img`, `var.img`, `VERSION.TXT`) and the `.tzst` files that carry one
//! partition image (`partition.img`) between build steps.
//!
//! The tar is in GNU format. A member with holes (all-zero 4 KiB blocks, see [`crate::sparse`]) is stored
//! as an old-GNU sparse file (type `S`, sparse format 0.0, extension headers after the first four
//! map entries), which GNU tar (plain `-x`), bsdtar and the `tar` crate restore as a sparse file of
//! the right size; a member without holes is a regular file. Every header has the same fixed
//! metadata (mode 0644, owner 0:0, no owner names, mtime 0), so the archive depends only on the
//! member names, their order and their content. It is compressed by multithreaded zstd at a pinned
//! level; zstd's multithreaded output does not depend on the number of workers (>= 1), only on the
//! level and the library version, which Cargo.lock pins (zstd-sys builds its bundled libzstd).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tar::{EntryType, GnuExtSparseHeader, Header};

use crate::io_error::PathIoError;
use crate::output::{write_atomically, write_atomically_via_path, OutputError};
use crate::sparse::{self, CopyError, Extent, SparseMap};

/// The default zstd level: level 10 compresses images with few GB of data several times faster
/// than 19 for a few percent more bytes, and is well within zstd's fast-decompression range.
pub const DEFAULT_LEVEL: i32 = 10;

/// Long-distance matching window: 2^27 bytes = 128 MiB. Disk images repeat content far apart (the
/// same library in two places, the A and B slots); matching across 128 MiB made a 1 GB GuestOS-like
/// disk image 4% smaller for 20% more time. 128 MiB is also the largest window that `zstd -d` and
/// `tar --zstd` decompress without extra flags.
pub const WINDOW_LOG: u32 = 27;

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

/// The four bytes that start a zstd frame, and so every package.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Whether `path` is a package rather than a raw image. A raw filesystem image starts with a boot
/// sector or zeros, never with a zstd frame.
pub fn is_package(path: &Path) -> Result<bool, PackageError> {
    let read_error = |source| PackageError::Io(PathIoError { action: "read", path: path.to_owned(), source });
    let mut file = File::open(path).map_err(read_error)?;
    let mut magic = [0u8; 4];
    let count = sparse::read_full(&mut file, &mut magic).map_err(read_error)?;
    Ok(count == magic.len() && magic == ZSTD_MAGIC)
}

/// The size of the image in the package `archive` (its first member), read from its header.
pub fn image_member_size(archive: &Path) -> Result<u64, PackageError> {
    let mut tar = open_archive(archive)?;
    let mut entries = tar.entries().map_err(|error| bad_archive(archive, error.to_string()))?;
    let entry = first_image_entry(archive, &mut entries)?;
    Ok(entry.size())
}

/// Calls `read` with the size and the content (holes read as zeros) of the one image in the
/// package `archive`, such as a partition's `.tzst` holding `partition.img`. Fails if the package
/// holds more than that one regular or sparse file.
pub fn read_image_member<T, E: From<PackageError>>(
    archive: &Path,
    read: impl FnOnce(u64, &mut dyn io::Read) -> Result<T, E>,
) -> Result<T, E> {
    let mut tar = open_archive(archive)?;
    let mut entries = tar.entries().map_err(|error| bad_archive(archive, error.to_string()))?;
    let mut entry = first_image_entry(archive, &mut entries)?;
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let result = read(entry.size(), &mut entry)?;
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

/// Compression parameters. `threads` changes the speed, never the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionOptions {
    pub level: i32,
    pub threads: u32,
}

impl Default for CompressionOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |count| count.get() as u32);
        CompressionOptions { level: DEFAULT_LEVEL, threads }
    }
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
    if !(1..=22).contains(&options.level) {
        return Err(PackageError::BadLevel { level: options.level });
    }
    if options.threads == 0 {
        return Err(PackageError::BadThreads { threads: options.threads });
    }
    check_members(members)?;
    let compress_error = |source| PackageError::Compress { path: output.to_owned(), source };
    write_atomically(output, |file| {
        let mut encoder = zstd::stream::write::Encoder::new(file, options.level).map_err(compress_error)?;
        encoder.multithread(options.threads).map_err(compress_error)?;
        encoder.include_checksum(true).map_err(compress_error)?;
        encoder.long_distance_matching(true).map_err(compress_error)?;
        encoder.window_log(WINDOW_LOG).map_err(compress_error)?;
        write_tar(&mut encoder, members, output)?;
        encoder.finish().map_err(compress_error)?;
        Ok(())
    })
}

fn check_members(members: &[Member]) -> Result<(), PackageError> {
    if members.is_empty() {
        return Err(PackageError::NoMembers);
    }
    let mut names = BTreeSet::new();
    for member in members {
        check_member_name(&member.name)?;
        if !names.insert(member.name.as_str()) {
            return Err(PackageError::DuplicateMember { name: member.name.clone() });
        }
    }
    Ok(())
}

/// Writes the uncompressed tar stream of `members` to `writer`; `output` names it in errors.
pub fn write_tar<W: Write>(writer: &mut W, members: &[Member], output: &Path) -> Result<(), PackageError> {
    check_members(members)?;
    let write_error = |source| PackageError::Io(PathIoError { action: "write", path: output.to_owned(), source });
    for member in members {
        let read_error = |source| PackageError::Io(PathIoError { action: "read", path: member.path.clone(), source });
        let copy_error = |error| match error {
            CopyError::Read(source) => read_error(source),
            CopyError::Write(source) => write_error(source),
        };
        let write_headers = |writer: &mut W, map: &SparseMap| {
            let headers = member_headers(&member.name, map)
                .map_err(|source| PackageError::Header { name: member.name.clone(), source })?;
            headers.iter().try_for_each(|header| writer.write_all(header)).map_err(write_error)
        };
        let map = if member.packaged {
            // Two passes over the packaged image: the tar header holds the sparse map, which is
            // only known once the whole content has been read.
            let map =
                read_image_member(&member.path, |size, reader| sparse::scan_stream(reader, size).map_err(read_error))?;
            write_headers(writer, &map)?;
            read_image_member(&member.path, |size, reader| {
                if size != map.size {
                    return Err(PackageError::Changed { path: member.path.clone() });
                }
                sparse::write_extents_of_stream(reader, &map, writer).map_err(copy_error)
            })?;
            map
        } else {
            let mut file = File::open(&member.path).map_err(read_error)?;
            let map = sparse::scan(&mut file).map_err(read_error)?;
            write_headers(writer, &map)?;
            copy_extents(&mut file, &member.path, &map, writer, output)?;
            map
        };
        let padding = map.data_bytes().next_multiple_of(TAR_BLOCK) - map.data_bytes();
        writer.write_all(&[0u8; TAR_BLOCK as usize][..padding as usize]).map_err(write_error)?;
    }
    // The end-of-archive marker: two zero blocks.
    writer.write_all(&[0u8; 2 * TAR_BLOCK as usize]).map_err(write_error)
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

/// Streams the data extents of `file` to `writer`, failing if the file no longer matches `map`.
fn copy_extents(
    file: &mut File,
    path: &Path,
    map: &SparseMap,
    writer: &mut impl Write,
    output: &Path,
) -> Result<(), PackageError> {
    let read_error = |source| PackageError::Io(PathIoError { action: "read", path: path.to_owned(), source });
    let mut buffer = vec![0u8; 1 << 20];
    for extent in &map.extents {
        file.seek(SeekFrom::Start(extent.offset)).map_err(read_error)?;
        let mut remaining = extent.length;
        while remaining > 0 {
            let want = remaining.min(buffer.len() as u64) as usize;
            let count = sparse::read_full(file, &mut buffer[..want]).map_err(read_error)?;
            if count < want {
                return Err(PackageError::Changed { path: path.to_owned() });
            }
            writer
                .write_all(&buffer[..count])
                .map_err(|source| PackageError::Io(PathIoError { action: "write", path: output.to_owned(), source }))?;
            remaining -= count as u64;
        }
    }
    if file.metadata().map_err(read_error)?.len() != map.size {
        return Err(PackageError::Changed { path: path.to_owned() });
    }
    Ok(())
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

    fn tar_of(members: &[Member]) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_tar(&mut bytes, members, Path::new("test.tar")).unwrap();
        bytes
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
        assert!(matches!(check_members(&twice), Err(PackageError::DuplicateMember { .. })));
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
        assert_eq!(image_member_size(&partition).unwrap(), 64 * 4096 + 100);
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
        let error = read_image_member(&two, |_, reader| {
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
        let error = image_member_size(&garbage).unwrap_err().to_string();
        assert!(error.contains("garbage.tzst") && error.contains("not a valid package"), "{error}");
    }
}
