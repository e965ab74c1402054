//! ext4 filesystem images from a canonical tar, made by `mke2fs -d <tar>` (e2fsprogs >= 1.47.1).
//!
//! Everything that could vary between hosts is pinned: mke2fs reads a configuration file written
//! here instead of the host's /etc/mke2fs.conf, the feature list, block and inode sizes, journal
//! size and usage type are given explicitly, the environment is cleared, times come from
//! SOURCE_DATE_EPOCH, and the UUID and directory hash seed are given. The image is made in a
//! fresh sparse file which mke2fs is told is zeroed, so it writes only what is in use.

use std::collections::BTreeMap;
use std::env;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

use crate::fs_input::{scan_tar, EntryKind, EntryPath, InputEntry, InputError};
use crate::output::{write_atomically_via_path, OutputError};

pub mod read;

const BLOCK_SIZE: u64 = 4096;
const INODE_SIZE: u64 = 256;
/// One inode per 16 KiB of filesystem, mke2fs's default for ext4.
const BYTES_PER_INODE: u64 = 16384;
const BLOCKS_PER_GROUP: u64 = 32768;
/// Group descriptor size with the 64bit feature.
const GROUP_DESCRIPTOR_SIZE: u64 = 64;
/// Inodes 1 to 10 are reserved and 11 is lost+found.
const FIRST_FREE_INODE: u64 = 12;
/// Below this mke2fs would make no journal.
const MINIMUM_BLOCKS: u64 = 2048;
/// The features of the images: the ext4 defaults of e2fsprogs 1.46 (Debian 12's mkfs.ext4).
/// `metadata_csum_seed` and `orphan_file`, defaults since 1.47, are left out because older GRUB
/// and kernels cannot mount filesystems that have them.
const FEATURES: &str = "has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,\
                        sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum";
/// `mke2fs -d <tar>` and SOURCE_DATE_EPOCH support arrived in 1.47.1.
const MINIMUM_VERSION: (u32, u32, u32) = (1, 47, 1);

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Options {
    /// Size of the image in bytes: a multiple of 4096.
    pub size: u64,
    /// Volume label, at most 16 bytes.
    pub label: String,
    /// Filesystem UUID, normally `FilesystemIds::from_parent(partition UUID).uuid` (`crate::seed`).
    pub uuid: Uuid,
    /// Directory hash seed, normally the filesystem UUID, as systemd-repart sets it.
    pub hash_seed: Uuid,
    /// Every timestamp in the filesystem (seconds since 1970).
    pub source_date_epoch: u64,
    /// The mke2fs program.
    pub mke2fs: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("the size {size} is not a multiple of the {BLOCK_SIZE}-byte block size")]
    UnalignedSize { size: u64 },
    #[error("the size {size} is too small: an ext4 image with a journal needs at least {} bytes (8 MiB)", MINIMUM_BLOCKS * BLOCK_SIZE)]
    TooSmall { size: u64 },
    #[error("the label {label:?} is {} bytes long; an ext4 label holds at most 16", label.len())]
    LabelTooLong { label: String },
    #[error("{input} does not fit in an ext4 filesystem of {available} bytes: it needs about {required} bytes ({} MiB) with metadata and journal", required.div_ceil(1 << 20))]
    NoSpace { input: PathBuf, required: u64, available: u64 },
    #[error("{input} does not fit in an ext4 filesystem of {available} bytes: mke2fs ran out of space ({message}); the estimate was {estimated} bytes, so more than that is needed")]
    Mke2fsNoSpace { input: PathBuf, available: u64, estimated: u64, message: String },
    #[error("{input} has {needed} files, directories and links; an ext4 filesystem of {size} bytes has room for {available} (one inode per {BYTES_PER_INODE} bytes)")]
    TooManyInodes { input: PathBuf, needed: u64, available: u64, size: u64 },
    #[error("mke2fs was not found in PATH, /usr/sbin or /sbin; install e2fsprogs >= 1.47.1 or pass --mke2fs")]
    Mke2fsNotFound,
    #[error("cannot run {mke2fs}: {source}")]
    Mke2fsStart { mke2fs: PathBuf, source: io::Error },
    #[error("{mke2fs} is mke2fs {found}, but {}.{}.{} or newer is needed (for `mke2fs -d <tar>` and SOURCE_DATE_EPOCH)", MINIMUM_VERSION.0, MINIMUM_VERSION.1, MINIMUM_VERSION.2)]
    Mke2fsTooOld { mke2fs: PathBuf, found: String },
    #[error("cannot tell the version of {mke2fs} from `mke2fs -V`: {output:?}")]
    Mke2fsVersionUnknown { mke2fs: PathBuf, output: String },
    #[error("{mke2fs} failed ({status}) to build {output} from {input}: {stderr}")]
    Mke2fsFailed { mke2fs: PathBuf, status: String, output: PathBuf, input: PathBuf, stderr: String },
    #[error("cannot prepare the mke2fs configuration: {source}")]
    Config { source: io::Error },
    #[error("cannot write {output}: {source}")]
    Write { output: PathBuf, source: io::Error },
}

/// The mke2fs in PATH, /usr/sbin or /sbin (which a non-root PATH often lacks).
pub fn find_mke2fs() -> Result<PathBuf, Ext4Error> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join("mke2fs"))
        .find(|candidate| candidate.is_file())
        .ok_or(Ext4Error::Mke2fsNotFound)
}

/// Checks that `mke2fs` is e2fsprogs 1.47.1 or newer; returns the version it reports.
pub fn check_mke2fs_version(mke2fs: &Path) -> Result<String, Ext4Error> {
    let output = pinned_command(mke2fs)
        .arg("-V")
        .output()
        .map_err(|source| Ext4Error::Mke2fsStart { mke2fs: mke2fs.to_owned(), source })?;
    // mke2fs prints "mke2fs 1.47.4 (6-Mar-2025)" on stderr.
    let text = format!("{}{}", String::from_utf8_lossy(&output.stderr), String::from_utf8_lossy(&output.stdout));
    let unknown = || Ext4Error::Mke2fsVersionUnknown { mke2fs: mke2fs.to_owned(), output: text.trim().to_owned() };
    let found = text
        .lines()
        .find_map(|line| line.strip_prefix("mke2fs "))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(unknown)?
        .to_owned();
    let version = parse_version(&found).ok_or_else(unknown)?;
    if version < MINIMUM_VERSION {
        return Err(Ext4Error::Mke2fsTooOld { mke2fs: mke2fs.to_owned(), found });
    }
    Ok(found)
}

/// `1.47.1`, `1.47.1-rc2` or `1.48` as (major, minor, patch).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let numeric = text.split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?;
    let mut parts = numeric.split('.').map(str::parse::<u32>);
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// Builds the ext4 image `output` from the canonical tar `input`. Returns the estimated number
/// of bytes the content takes, metadata and journal included.
pub fn build_ext4(input: &Path, output: &Path, options: &Ext4Options) -> Result<u64, Ext4Error> {
    if options.size % BLOCK_SIZE != 0 {
        return Err(Ext4Error::UnalignedSize { size: options.size });
    }
    let blocks = options.size / BLOCK_SIZE;
    if blocks < MINIMUM_BLOCKS {
        return Err(Ext4Error::TooSmall { size: options.size });
    }
    if options.label.len() > 16 {
        return Err(Ext4Error::LabelTooLong { label: options.label.clone() });
    }
    check_mke2fs_version(&options.mke2fs)?;
    let entries = scan_tar(input)?;
    let layout = Layout::for_blocks(blocks);
    let inodes_needed = entries.iter().filter(|entry| !matches!(entry.kind, EntryKind::HardLink { .. })).count() as u64;
    if inodes_needed > layout.free_inodes() {
        return Err(Ext4Error::TooManyInodes {
            input: input.to_owned(),
            needed: inodes_needed,
            available: layout.free_inodes(),
            size: options.size,
        });
    }
    let data = data_blocks(input, &entries).map_err(|source| InputError::Read { path: input.to_owned(), source })?;
    let required = (layout.metadata_blocks() + content_blocks(&entries) + data) * BLOCK_SIZE;
    if required > options.size {
        return Err(Ext4Error::NoSpace { input: input.to_owned(), required, available: options.size });
    }

    let config_dir = tempfile::tempdir().map_err(|source| Ext4Error::Config { source })?;
    let config = config_dir.path().join("mke2fs.conf");
    fs::write(&config, MKE2FS_CONF).map_err(|source| Ext4Error::Config { source })?;

    let write_error = |source| Ext4Error::Write { output: output.to_owned(), source };
    let input_path = absolute(input).map_err(|source| InputError::Read { path: input.to_owned(), source })?;
    write_atomically_via_path(output, |file, temporary| {
        // A sparse file of the final size: with assume_storage_prezeroed mke2fs writes only
        // metadata and data, never zeros.
        file.set_len(options.size).map_err(write_error)?;
        let result = pinned_command(&options.mke2fs)
            .env("MKE2FS_CONFIG", &config)
            .env("SOURCE_DATE_EPOCH", options.source_date_epoch.to_string())
            .env("E2FSPROGS_FAKE_TIME", options.source_date_epoch.to_string())
            .args(mke2fs_arguments(options, &layout))
            .arg("-d")
            .arg(&input_path)
            .arg(temporary)
            .arg(blocks.to_string())
            .output()
            .map_err(|source| Ext4Error::Mke2fsStart { mke2fs: options.mke2fs.clone(), source })?;
        if result.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&result.stderr).trim().to_owned();
        let out_of_space = ["Could not allocate block", "No space left", "Could not allocate inode"]
            .iter()
            .any(|symptom| stderr.contains(symptom));
        if out_of_space {
            return Err(Ext4Error::Mke2fsNoSpace {
                input: input.to_owned(),
                available: options.size,
                estimated: required,
                message: last_line(&stderr).to_owned(),
            });
        }
        Err(Ext4Error::Mke2fsFailed {
            mke2fs: options.mke2fs.clone(),
            status: result.status.to_string(),
            output: output.to_owned(),
            input: input.to_owned(),
            stderr: if stderr.contains("libarchive") {
                format!("{stderr} (mke2fs loads libarchive at run time: install libarchive13)")
            } else {
                stderr
            },
        })
    })?;
    Ok(required)
}

/// The options of mke2fs: everything that shapes the filesystem is explicit, so neither the
/// configuration file nor the defaults of another e2fsprogs version matter.
fn mke2fs_arguments(options: &Ext4Options, layout: &Layout) -> Vec<String> {
    let extended = [
        format!("hash_seed={}", options.hash_seed),
        "root_owner=0:0".to_owned(),
        // The output is a fresh sparse file: no need to write zeros, which keeps it sparse.
        "assume_storage_prezeroed=1".to_owned(),
        "lazy_itable_init=1".to_owned(),
        "lazy_journal_init=1".to_owned(),
        "nodiscard".to_owned(),
    ];
    let journal_mib = (layout.journal_blocks * BLOCK_SIZE) >> 20;
    ["-q", "-F", "-t", "ext4", "-T", "default", "-r", "1", "-m", "5", "-e", "continue", "-G", "16"]
        .map(str::to_owned)
        .into_iter()
        .chain([
            format!("-b{BLOCK_SIZE}"),
            format!("-I{INODE_SIZE}"),
            format!("-i{BYTES_PER_INODE}"),
            format!("-g{BLOCKS_PER_GROUP}"),
            format!("-Onone,{FEATURES}"),
            format!("-Jsize={journal_mib}"),
            format!("-E{}", extended.join(",")),
            format!("-U{}", options.uuid),
            "-L".to_owned(),
            options.label.clone(),
        ])
        .collect()
}

/// A command whose environment holds only what is set here: no locale, time zone or
/// configuration of the caller reaches the tool. The locale is C.UTF-8 (built into glibc since
/// 2.35) because libarchive refuses PAX `path` records, which are UTF-8, under plain C.
fn pinned_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command.env_clear().env("LC_ALL", "C.UTF-8").env("TZ", "UTC").env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command
}

/// mke2fs is run with the input path as given; make it absolute so that the child's working
/// directory cannot matter.
fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    Ok(env::current_dir()?.join(path))
}

fn last_line(text: &str) -> &str {
    text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("").trim()
}

/// The configuration mke2fs reads instead of /etc/mke2fs.conf, so the host's copy cannot change
/// the result; the command line repeats the values that matter.
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0
\thash_alg = half_md4
\tflex_bg_size = 16
\terrors = continue
\tlazy_itable_init = true
\tlazy_journal_init = true
\tdiscard = false

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// The fixed part of an ext4 filesystem of a given number of 4 KiB blocks, computed as mke2fs
/// lays it out for the options above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    blocks: u64,
    groups: u64,
    inodes_per_group: u64,
    journal_blocks: u64,
}

impl Layout {
    fn for_blocks(blocks: u64) -> Layout {
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let inodes = blocks * BLOCK_SIZE / BYTES_PER_INODE;
        // mke2fs rounds the inodes of a group up to fill whole inode table blocks.
        let inodes_per_block = BLOCK_SIZE / INODE_SIZE;
        let inodes_per_group = inodes.div_ceil(groups).div_ceil(inodes_per_block) * inodes_per_block;
        Layout { blocks, groups, inodes_per_group, journal_blocks: journal_blocks(blocks) }
    }

    fn free_inodes(&self) -> u64 {
        (self.groups * self.inodes_per_group).saturating_sub(FIRST_FREE_INODE - 1)
    }

    /// Superblocks and group descriptors (with room to grow, for resize_inode) in the groups
    /// holding backups, bitmaps and inode tables of every group, the journal, the root
    /// directory, lost+found (16 KiB) and the resize inode's indirect block.
    fn metadata_blocks(&self) -> u64 {
        let descriptors_per_block = BLOCK_SIZE / GROUP_DESCRIPTOR_SIZE;
        let descriptor_blocks = self.groups.div_ceil(descriptors_per_block);
        // resize_inode reserves descriptors for growth to 1024 times the size, up to 2^32 blocks.
        let max_blocks = (self.blocks * 1024).min(u64::from(u32::MAX));
        let reserved_descriptor_blocks = (max_blocks.div_ceil(BLOCKS_PER_GROUP).div_ceil(descriptors_per_block))
            .saturating_sub(descriptor_blocks)
            .min(BLOCK_SIZE / 4);
        let backups = (0..self.groups).filter(|&group| has_superblock_backup(group)).count() as u64;
        let inode_table_blocks = self.groups * self.inodes_per_group * INODE_SIZE / BLOCK_SIZE;
        backups * (1 + descriptor_blocks + reserved_descriptor_blocks)
            + self.groups * 2
            + inode_table_blocks
            + self.journal_blocks
            + 1
            + 4
            + 1
    }
}

/// With sparse_super, groups 0, 1 and the powers of 3, 5 and 7 hold superblock backups.
fn has_superblock_backup(group: u64) -> bool {
    if group <= 1 {
        return true;
    }
    [3, 5, 7].iter().any(|&base| {
        let mut power = base;
        while power < group {
            power *= base;
        }
        power == group
    })
}

/// The journal size e2fsprogs picks by default (ext2fs_default_journal_size), passed explicitly
/// so that a later e2fsprogs with other defaults makes the same image.
fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        0..32768 => 1024,
        32768..262144 => 4096,
        262144..524288 => 8192,
        524288..4194304 => 16384,
        4194304..8388608 => 32768,
        8388608..16777216 => 65536,
        16777216..33554432 => 131072,
        _ => 262144,
    }
}

/// Blocks the file contents take: mke2fs leaves blocks that are all zeros as holes, so only the
/// others count. Reads the contents in tar order.
fn data_blocks(input: &Path, entries: &[InputEntry]) -> io::Result<u64> {
    let mut files: Vec<(u64, u64)> = entries
        .iter()
        .filter_map(|entry| match entry.kind {
            EntryKind::File { size, data_offset } if size > 0 => Some((data_offset, size)),
            _ => None,
        })
        .collect();
    files.sort_unstable();
    let mut tar = BufReader::with_capacity(1 << 20, File::open(input)?);
    let mut position = 0u64;
    let mut block = vec![0u8; BLOCK_SIZE as usize];
    let mut blocks = 0;
    for (data_offset, size) in files {
        // Forward within the buffer when the next file follows closely, as it does in a tar.
        if data_offset >= position && data_offset - position < (1 << 20) {
            tar.seek_relative((data_offset - position) as i64)?;
        } else {
            tar.seek(SeekFrom::Start(data_offset))?;
        }
        let mut left = size;
        while left > 0 {
            let chunk = &mut block[..left.min(BLOCK_SIZE) as usize];
            tar.read_exact(chunk)?;
            if chunk.iter().any(|&byte| byte != 0) {
                blocks += 1;
            }
            left -= chunk.len() as u64;
        }
        position = data_offset + size;
    }
    Ok(blocks)
}

/// Blocks the entries take beyond the fixed layout and file data: directory blocks, symbolic
/// links too long for the inode, and extended attributes that do not fit in the inode.
fn content_blocks(entries: &[InputEntry]) -> u64 {
    let mut directories: BTreeMap<EntryPath, DirectoryBlocks> = BTreeMap::new();
    let mut root = DirectoryBlocks::new();
    root.add(b"lost+found");
    directories.insert(EntryPath(Vec::new()), root);
    let mut blocks = 0;
    for entry in entries {
        match &entry.kind {
            EntryKind::Directory => {
                directories.insert(entry.path.clone(), DirectoryBlocks::new());
            }
            // Targets of up to 59 bytes live in the inode ("fast" symbolic links).
            EntryKind::Symlink { target } if target.len() >= 60 => blocks += 1,
            _ => {}
        }
        if !matches!(entry.kind, EntryKind::HardLink { .. }) && !fits_in_inode(&entry.xattrs) {
            blocks += 1;
        }
        let parent = entry.path.parent().unwrap_or_else(|| EntryPath(Vec::new()));
        directories.entry(parent).or_insert_with(DirectoryBlocks::new).add(entry.path.name().unwrap_or_default());
    }
    let directory_blocks: u64 = directories.values().map(|directory| directory.blocks).sum();
    // The root directory's first block is part of the fixed layout.
    blocks + directory_blocks - 1
}

/// The blocks of a linear directory as libext2fs fills it: entries never span blocks, and with
/// metadata_csum each block ends in a 12-byte checksum tail.
struct DirectoryBlocks {
    blocks: u64,
    used: u64,
}

impl DirectoryBlocks {
    const USABLE: u64 = BLOCK_SIZE - 12;

    /// A directory holding `.` and `..`.
    fn new() -> DirectoryBlocks {
        DirectoryBlocks { blocks: 1, used: dirent_size(b".") + dirent_size(b"..") }
    }

    fn add(&mut self, name: &[u8]) {
        let size = dirent_size(name);
        if self.used + size > Self::USABLE {
            self.blocks += 1;
            self.used = 0;
        }
        self.used += size;
    }
}

/// An ext4 directory entry: 8 bytes of header and the name padded to 4 bytes.
fn dirent_size(name: &[u8]) -> u64 {
    8 + (name.len() as u64).div_ceil(4) * 4
}

/// Whether the extended attributes fit in the 256-byte inode's free space (96 bytes after the
/// 128-byte base inode and 32 bytes of extra fields): a 4-byte header, then per attribute a
/// 16-byte entry with the name (minus its namespace prefix) and the value, each padded to 4.
fn fits_in_inode(xattrs: &[(Vec<u8>, Vec<u8>)]) -> bool {
    if xattrs.is_empty() {
        return true;
    }
    let used: u64 = xattrs
        .iter()
        .map(|(name, value)| {
            let short_name = ["user.", "security.", "trusted.", "system.posix_acl_access", "system.posix_acl_default"]
                .iter()
                .find_map(|prefix| name.strip_prefix(prefix.as_bytes()))
                .unwrap_or(name);
            16 + (short_name.len() as u64).div_ceil(4) * 4 + (value.len() as u64).div_ceil(4) * 4
        })
        .sum();
    4 + used + 4 <= INODE_SIZE - 128 - 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("1.47.4"), Some((1, 47, 4)));
        assert_eq!(parse_version("1.47.1-rc2"), Some((1, 47, 1)));
        assert_eq!(parse_version("1.48"), Some((1, 48, 0)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("1.47.0").unwrap() < MINIMUM_VERSION);
        assert!(parse_version("1.47.1").unwrap() >= MINIMUM_VERSION);
    }

    #[test]
    fn superblock_backup_groups() {
        let groups: Vec<u64> = (0..100).filter(|&group| has_superblock_backup(group)).collect();
        assert_eq!(groups, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn mke2fs_command_line_is_pinned() {
        let options = Ext4Options {
            size: 3 << 30,
            label: "root_a".to_owned(),
            uuid: Uuid::from_u128(1),
            hash_seed: Uuid::from_u128(2),
            source_date_epoch: 0,
            mke2fs: PathBuf::from("mke2fs"),
        };
        let arguments = mke2fs_arguments(&options, &Layout::for_blocks(3 << 18)).join(" ");
        assert_eq!(
            arguments,
            "-q -F -t ext4 -T default -r 1 -m 5 -e continue -G 16 -b4096 -I256 -i16384 -g32768 \
             -Onone,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,\
             sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum -Jsize=64 \
             -Ehash_seed=00000000-0000-0000-0000-000000000002,root_owner=0:0,\
             assume_storage_prezeroed=1,lazy_itable_init=1,lazy_journal_init=1,nodiscard \
             -U00000000-0000-0000-0000-000000000001 -L root_a"
        );
    }

    #[test]
    fn layout_of_a_3_gib_root() {
        let layout = Layout::for_blocks(3 << 18);
        assert_eq!(layout.groups, 24);
        assert_eq!(layout.inodes_per_group, 8192);
        assert_eq!(layout.journal_blocks, 16384);
        assert_eq!(layout.free_inodes(), 24 * 8192 - 11);
    }

    fn version_script(dir: &Path, version: &str) -> PathBuf {
        let script = dir.join("mke2fs");
        fs::write(&script, format!("#!/bin/sh\necho 'mke2fs {version} (5-Feb-2023)' >&2\necho '\tUsing EXT2FS Library version {version}' >&2\n")).unwrap();
        fs::set_permissions(&script, Permissions::from_mode(0o755)).unwrap();
        script
    }

    #[test]
    fn old_mke2fs_is_refused_with_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let script = version_script(dir.path(), "1.47.0");
        let error = check_mke2fs_version(&script).unwrap_err().to_string();
        assert!(error.contains("is mke2fs 1.47.0, but 1.47.1 or newer is needed"), "{error}");
        let script = version_script(dir.path(), "1.47.2");
        assert_eq!(check_mke2fs_version(&script).unwrap(), "1.47.2");
    }

    #[test]
    fn zero_blocks_are_holes_and_not_counted() {
        use crate::fs_input::canonical_tar;
        let mut sparse = vec![0u8; 3 * 4096 + 100];
        sparse[5000] = 1;
        let mut tail = vec![1u8; 4096];
        tail.extend_from_slice(&[0u8; 100]);
        let tar = canonical_tar(&[
            (b"sparse", tar::EntryType::Regular, &sparse),
            (b"tail", tar::EntryType::Regular, &tail),
            (b"full", tar::EntryType::Regular, &[7u8; 10_000]),
            (b"empty", tar::EntryType::Regular, b""),
        ])
        .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &tar).unwrap();
        let entries = scan_tar(file.path()).unwrap();
        assert_eq!(data_blocks(file.path(), &entries).unwrap(), 1 + 1 + 3);
    }

    #[test]
    fn xattrs_in_the_inode_or_a_block() {
        let capability = (b"security.capability".to_vec(), vec![0u8; 20]);
        assert!(fits_in_inode(std::slice::from_ref(&capability)));
        assert!(!fits_in_inode(&[(b"user.big".to_vec(), vec![0u8; 100])]));
        assert!(fits_in_inode(&[]));
    }
}
