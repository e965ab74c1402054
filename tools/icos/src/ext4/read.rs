//! A read-only ext4 reader, for telling which file of a filesystem image differs and how.
//!
//! It reads what `icos diff` needs and nothing more: every path reachable from the root with
//! its inode's metadata, extended attributes and a SHA-256 of its content, the superblock's
//! fields, and what each block holds; and, for the launch files of `-sev` variants, the content
//! of one regular file by path. It writes nothing, replays no journal and verifies no
//! checksum (two images that differ only in a checksum still differ in the checksum's bytes).
//!
//! The image is untrusted input: every block number, offset and length read from it is checked
//! before use, tree walks remember what they visited, and problems are errors
//! ([`Ext4ReadError::Corrupt`]) naming the inode and path, never a crash or an endless loop.
//! The work is bounded too: one call reads at most 16 times the filesystem's size on behalf of
//! inodes (content with holes, directory and tree blocks; [`Ext4ReadError::TooLarge`] beyond)
//! and walks at most 8 paths per inode.
//!
//! Features whose layout it cannot read are refused on opening ([`Ext4ReadError::Unsupported`]):
//! inline_data, encrypt, ea_inode, bigalloc, compression, dirdata, journal_dev, and
//! needs_recovery (a journal to replay first, which this reader does not do).
//!
//! Reads are positioned (`seek` then `read_exact`) and of whole structures: an inode at a time,
//! a block or up to a MiB of contiguous file content at a time, through one reused buffer, so
//! that a file of any size is hashed in constant memory.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

mod bytes;
mod directory;
mod inode;
mod map;
mod owners;
mod superblock;
mod time;
mod xattr;

use bytes::{printable, u16_at, u32_at};
use inode::{Inode, InodeFormat, EXTENTS_FL, INLINE_DATA_FL, S_IFBLK, S_IFCHR, S_IFLNK, S_IFREG};
use map::{BlockMap, Geometry};
use superblock::{Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};

/// One inode reached from the root directory, by path. Hard links give one entry per path,
/// same `inode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Entry {
    /// Absolute, raw bytes: `b"/"` for the root, `b"/etc/hostname"`; no trailing slash.
    pub path: Vec<u8>,
    pub inode: u32,
    /// Raw i_mode: file type bits and permission bits (setuid, setgid and sticky included).
    pub mode: u16,
    /// Full 32-bit owner (high halves included).
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    /// i_flags.
    pub flags: u32,
    pub atime: Ext4Time,
    pub ctime: Ext4Time,
    pub mtime: Ext4Time,
    /// Creation time, only when i_extra_isize covers it.
    pub crtime: Option<Ext4Time>,
    /// (major, minor) of character and block devices.
    pub device: Option<(u32, u32)>,
    /// Symbolic links' targets, fast (in i_block) and slow (in a block).
    pub symlink_target: Option<Vec<u8>>,
    /// Extended attributes in the inode and in its attribute block, with full names
    /// ("user.x", "security.capability", "system.posix_acl_access", "system.data"), sorted by
    /// name. Values as stored: POSIX ACLs in ext4's compact on-disk format.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Regular files: SHA-256 of the `size` bytes of content, holes and uninitialised extents
    /// reading as zeros.
    pub sha256: Option<[u8; 32]>,
}

/// An inode timestamp with the extra epoch bits decoded: seconds since 1970 (negative before)
/// and nanoseconds (0 when the inode has no room for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ext4Time {
    pub seconds: i64,
    pub nanoseconds: u32,
}

/// What a block of the filesystem holds; for explaining byte ranges that differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOwner {
    /// A primary or backup superblock, including block 0 with the boot sector area.
    Superblock,
    /// A primary or backup group descriptor table, and reserved GDT blocks (resize_inode).
    GroupDescriptors,
    BlockBitmap {
        group: u32,
    },
    InodeBitmap {
        group: u32,
    },
    /// Part of a group's inode table, holding inodes `first_inode..=last_inode`.
    InodeTable {
        group: u32,
        first_inode: u32,
        last_inode: u32,
    },
    Journal,
    /// Data or extent-tree (or indirect) block of a regular file or slow symbolic link, by its
    /// first path when hard-linked. Reserved inodes that hold blocks but have no path (quota
    /// files, the bad blocks list) get a name in angle brackets: `<inode 3: user quota>`.
    FileData {
        path: Vec<u8>,
    },
    /// A directory block, htree index blocks included.
    Directory {
        path: Vec<u8>,
    },
    /// An extended attribute block, with the paths of every inode that uses it.
    ExtendedAttributes {
        paths: Vec<Vec<u8>>,
    },
    /// The resize inode's double indirect block (the reserved GDT blocks it lists are
    /// [`BlockOwner::GroupDescriptors`]).
    ResizeInode,
    /// Not allocated according to the block bitmap.
    Unused,
    /// Allocated, but nothing reachable claims it (an orphan inode's blocks, an MMP block), or
    /// outside the filesystem.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum Ext4ReadError {
    #[error("cannot read {length} bytes at byte {offset} of the image: {source}")]
    Io {
        offset: u64,
        length: u64,
        #[source]
        source: io::Error,
    },
    #[error("not an ext4 filesystem: {reason}")]
    NotExt4 { reason: String },
    #[error("the filesystem uses {feature}, which this ext4 reader cannot read")]
    Unsupported { feature: String },
    #[error("corrupt ext4 filesystem: inode {inode} ({path}): {problem}")]
    Corrupt { inode: u32, path: String, problem: String },
    /// Reading inode `inode` would take what one call reads (content hashed, holes included,
    /// and directory and tree blocks) past `limit`, 16 times the filesystem's size: sparse
    /// files that large, or metadata that maps the same blocks again and again, would keep the
    /// reader busy for hours.
    #[error("inode {inode} ({path}) would take the bytes read past {limit}, 16 times the size of the filesystem: its sparse files or corrupt block maps are too large to read in reasonable time")]
    TooLarge { inode: u32, path: String, limit: u64 },
    /// Corruption outside any inode: group descriptors, bitmaps.
    #[error("corrupt ext4 filesystem: {problem}")]
    CorruptMetadata { problem: String },
    /// [`Ext4Filesystem::read_file`] found no regular file at the path.
    #[error("{path}: {problem}")]
    NotAFile { path: String, problem: String },
}

/// An error found by a part of the reader that does not know which inode it is working for;
/// the caller turns it into [`Ext4ReadError::Corrupt`] with the inode and path.
#[derive(Debug)]
enum Problem {
    Corrupt(String),
    Fail(Ext4ReadError),
}

impl From<Ext4ReadError> for Problem {
    fn from(error: Ext4ReadError) -> Problem {
        Problem::Fail(error)
    }
}

/// The inode being read and the path it was reached by, for error messages.
#[derive(Debug, Clone, Copy)]
struct Subject<'a> {
    inode: u32,
    path: &'a [u8],
}

impl Subject<'_> {
    fn corrupt(&self, problem: impl Into<String>) -> Ext4ReadError {
        Ext4ReadError::Corrupt { inode: self.inode, path: printable(self.path), problem: problem.into() }
    }

    fn too_large(&self, limit: u64) -> Ext4ReadError {
        Ext4ReadError::TooLarge { inode: self.inode, path: printable(self.path), limit }
    }

    fn place(&self, problem: Problem) -> Ext4ReadError {
        match problem {
            Problem::Corrupt(text) => self.corrupt(text),
            Problem::Fail(error) => error,
        }
    }
}

const ROOT_INODE: u32 = 2;
/// At most this many paths per inode (plus [`MAX_LINKS`]) are walked: far more than hard
/// links give in practice, far less than a corrupt directory tree can name.
const PATHS_PER_INODE: u64 = 8;
/// The most links an inode may have (EXT4_LINK_MAX).
const MAX_LINKS: u64 = 65000;
/// Contiguous content is read this much at a time (a multiple of every block size).
const BUFFER_SIZE: usize = 1 << 20;
/// What one call may read on behalf of inodes, in times the filesystem's size: the content of
/// every file (holes included, as they are hashed as zeros) and every directory and tree block.
/// A valid filesystem reads at most its size plus sparse files' holes; corrupt or hostile
/// metadata (sizes of terabytes, many inodes mapping the same blocks) is stopped here rather
/// than read for hours.
const READ_BUDGET_FACTOR: u64 = 16;
/// Holes are hashed from this, in pieces.
static ZEROS: [u8; 65536] = [0; 65536];
/// Longest symbolic link target read (Linux allows 4095 bytes; this leaves room for others
/// without letting a corrupt size allocate gigabytes).
const MAX_SYMLINK_TARGET: u64 = 65536;
/// How many symbolic links [`Ext4Filesystem::read_file`] follows, as Linux (MAXSYMLINKS).
const MAX_SYMLINK_HOPS: u32 = 40;
/// Fast symbolic links keep their target in the 60 bytes of i_block.
const FAST_SYMLINK_MAX: u64 = 59;

const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_LARGEDIR: u32 = 0x4000;

/// The group descriptor fields the reader uses.
#[derive(Debug, Clone, Copy)]
struct GroupDescriptor {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
}

impl GroupDescriptor {
    /// `raw`: one descriptor, 32 bytes, or 64 and more with the high halves.
    fn parse(raw: &[u8]) -> GroupDescriptor {
        let wide = raw.len() >= 64;
        let field = |lo: usize, hi: usize| {
            let high = if wide { u64::from(u32_at(raw, hi)) } else { 0 };
            high << 32 | u64::from(u32_at(raw, lo))
        };
        GroupDescriptor {
            block_bitmap: field(0x0, 0x20),
            inode_bitmap: field(0x4, 0x24),
            inode_table: field(0x8, 0x28),
            flags: u16_at(raw, 0x12),
        }
    }
}

/// Positioned reads inside the filesystem's byte range of the reader.
struct Disk<R> {
    reader: R,
    offset: u64,
    length: u64,
    /// Bytes still to be read on behalf of inodes in this call (see [`READ_BUDGET_FACTOR`]).
    budget: u64,
}

impl<R: Read + Seek> Disk<R> {
    fn budget_limit(&self) -> u64 {
        self.length.saturating_mul(READ_BUDGET_FACTOR)
    }

    /// Takes `bytes` from the budget; false when it does not hold that many.
    fn charge(&mut self, bytes: u64) -> bool {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                true
            }
            None => false,
        }
    }

    /// Fills `buffer` from byte `position` of the filesystem.
    fn read_at(&mut self, position: u64, buffer: &mut [u8]) -> Result<(), Ext4ReadError> {
        let length = buffer.len() as u64;
        if position.checked_add(length).is_none_or(|end| end > self.length) {
            return Err(Ext4ReadError::CorruptMetadata {
                problem: format!(
                    "a read of {length} bytes at byte {position} goes past the end of the {}-byte filesystem",
                    self.length
                ),
            });
        }
        let offset = self.offset.saturating_add(position);
        self.reader
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.reader.read_exact(buffer))
            .map_err(|source| Ext4ReadError::Io { offset, length, source })
    }
}

/// An ext4 filesystem at byte `offset` of a reader, `length` bytes long (so a partition inside
/// a disk image reads as well as a filesystem image).
pub struct Ext4Filesystem<R> {
    disk: Disk<R>,
    superblock: Superblock,
    groups: Vec<GroupDescriptor>,
    /// Reused for file contents and directory blocks: hashing allocates nothing per file.
    buffer: Vec<u8>,
}

impl<R: Read + Seek> Ext4Filesystem<R> {
    /// Opens the filesystem: checks the superblock (magic, block size, geometry, features this
    /// reader cannot read) and reads the group descriptors.
    pub fn open(reader: R, offset: u64, length: u64) -> Result<Self, Ext4ReadError> {
        let mut disk = Disk { reader, offset, length, budget: length.saturating_mul(READ_BUDGET_FACTOR) };
        if length < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
            return Err(Ext4ReadError::NotExt4 { reason: format!("{length} bytes are too few to hold a superblock") });
        }
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        disk.read_at(SUPERBLOCK_OFFSET, &mut raw)?;
        let superblock = Superblock::parse(raw, length)?;
        let groups = read_group_descriptors(&mut disk, &superblock)?;
        Ok(Ext4Filesystem { disk, superblock, groups, buffer: Vec::new() })
    }

    pub fn block_size(&self) -> u64 {
        self.superblock.block_size
    }

    /// The reader, given back.
    pub fn into_inner(self) -> R {
        self.disk.reader
    }

    /// Every field of the primary superblock in on-disk order, as (name, value rendered for
    /// people), e.g. ("uuid", "…"), ("wtime", "1700000000 (2023-11-14 22:13:20 UTC)"). The
    /// fields cover all 1024 bytes, so two superblocks that differ in any byte differ in at
    /// least one field; the `reserved` area is shown as a SHA-256 when it is not all zeros.
    pub fn superblock_fields(&self) -> Vec<(String, String)> {
        superblock::superblock_fields(&self.superblock.raw)
    }

    /// Every path reachable from the root, depth first and sorted by name bytes within a
    /// directory, the root first; `.` and `..` left out.
    pub fn entries(&mut self) -> Result<Vec<Ext4Entry>, Ext4ReadError> {
        self.disk.budget = self.disk.budget_limit();
        let mut entries: Vec<Ext4Entry> = Vec::new();
        // Inode → index of its first entry, for hard links: their content is hashed once.
        let mut linked: HashMap<u32, usize> = HashMap::new();
        self.walk(|filesystem, path, inode| {
            if !inode.is_directory() && inode.links > 1 {
                if let Some(&first) = linked.get(&inode.number) {
                    let mut entry = entries[first].clone();
                    entry.path = path.to_vec();
                    entries.push(entry);
                    return Ok(());
                }
                linked.insert(inode.number, entries.len());
            }
            let entry = filesystem.entry(path, inode)?;
            entries.push(entry);
            Ok(())
        })?;
        Ok(entries)
    }

    /// Feeds the content of the regular file at absolute `path` to `sink`, following symbolic
    /// links the way the kernel resolves them inside this filesystem (relative targets from the
    /// link's directory, absolute ones from this filesystem's root, `..` stopping at the root,
    /// at most [`MAX_SYMLINK_HOPS`] links), as a boot loader reading `/vmlinuz` does.
    pub fn read_file(&mut self, path: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), Ext4ReadError> {
        self.disk.budget = self.disk.budget_limit();
        let not_a_file = |problem: String| Ext4ReadError::NotAFile { path: printable(path), problem };
        if path.first() != Some(&b'/') {
            return Err(not_a_file("the path is not absolute".into()));
        }
        // Components still to resolve, the next one last; the inodes and paths from the root to
        // where the resolution stands.
        let mut pending: Vec<Vec<u8>> = components(path).rev().collect();
        let mut stack: Vec<(u32, Vec<u8>)> = vec![(ROOT_INODE, b"/".to_vec())];
        let mut hops = 0;
        while let Some(name) = pending.pop() {
            let (current, resolved) = stack.last().cloned().expect("the stack always holds the root");
            let inode = self.read_inode(current, &resolved)?;
            if !inode.is_directory() {
                return Err(not_a_file(format!("{} is not a directory", printable(&resolved))));
            }
            if name == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let subject = Subject { inode: current, path: &resolved };
            let children = self.read_directory(&subject, &inode)?;
            let Ok(found) = children.binary_search_by(|(child, _)| child.as_slice().cmp(&name)) else {
                return Err(not_a_file(format!("{} has no entry {}", printable(&resolved), printable(&name))));
            };
            let child = children[found].1;
            let mut child_path = resolved.clone();
            if child_path != b"/" {
                child_path.push(b'/');
            }
            child_path.extend_from_slice(&name);
            let child_inode = self.read_inode(child, &child_path)?;
            if child_inode.file_type() == S_IFLNK {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(not_a_file(format!("more than {MAX_SYMLINK_HOPS} symbolic links to follow")));
                }
                let target = self.symlink_target(&Subject { inode: child, path: &child_path }, &child_inode)?;
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                pending.extend(components(&target).rev());
                continue;
            }
            stack.push((child, child_path));
        }
        let (current, resolved) = stack.pop().expect("the stack always holds the root");
        let inode = self.read_inode(current, &resolved)?;
        if inode.file_type() != S_IFREG {
            return Err(not_a_file(format!("{} is not a regular file (mode {:#o})", printable(&resolved), inode.mode)));
        }
        let subject = Subject { inode: current, path: &resolved };
        let map = self.block_map(&subject, &inode)?;
        self.read_content(&subject, &map, inode.size, sink)
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            block_size: self.superblock.block_size,
            first_valid: self.superblock.first_data_block + 1,
            blocks_count: self.superblock.blocks_count,
        }
    }

    fn inode_format(&self) -> InodeFormat {
        InodeFormat {
            block_size: self.superblock.block_size,
            huge_file: self.superblock.has_huge_file(),
            large_dir: self.superblock.feature_incompat & INCOMPAT_LARGEDIR != 0,
            bits64: self.superblock.feature_incompat & INCOMPAT_64BIT != 0,
        }
    }

    /// Reads inode `number`, reached by `path`, with one positioned read.
    fn read_inode(&mut self, number: u32, path: &[u8]) -> Result<Inode, Ext4ReadError> {
        let subject = Subject { inode: number, path };
        let superblock = &self.superblock;
        if number == 0 || number > superblock.inodes_count {
            return Err(subject.corrupt(format!(
                "the inode number is outside the filesystem's inodes 1..={}",
                superblock.inodes_count
            )));
        }
        let index = number - 1;
        let group = index / superblock.inodes_per_group;
        let within = u64::from(index % superblock.inodes_per_group);
        let table = self
            .groups
            .get(group as usize)
            .map(|descriptor| descriptor.inode_table)
            .ok_or_else(|| subject.corrupt(format!("there is no block group {group}")))?;
        self.geometry()
            .check(table, superblock.inode_table_blocks())
            .map_err(|problem| subject.corrupt(format!("the inode table of group {group}: {problem}")))?;
        let position = table * superblock.block_size + within * superblock.inode_size;
        let mut raw = vec![0u8; superblock.inode_size as usize];
        let format = self.inode_format();
        self.disk.read_at(position, &mut raw)?;
        Inode::parse(number, &raw, format).map_err(|problem| subject.corrupt(problem))
    }

    /// Where the inode's content lies.
    fn block_map(&mut self, subject: &Subject, inode: &Inode) -> Result<BlockMap, Ext4ReadError> {
        if inode.flags & INLINE_DATA_FL != 0 {
            return Err(Ext4ReadError::Unsupported {
                feature: format!("inline_data (inode {}, {})", subject.inode, printable(subject.path)),
            });
        }
        let geometry = self.geometry();
        let block_size = geometry.block_size;
        let disk = &mut self.disk;
        let mut read_block = |block: u64, buffer: &mut [u8]| {
            if !disk.charge(block_size) {
                return Err(subject.too_large(disk.budget_limit()));
            }
            disk.read_at(block * block_size, buffer)
        };
        let map = if inode.flags & EXTENTS_FL != 0 {
            map::extent_map(&inode.block, &geometry, &mut read_block)
        } else {
            map::indirect_map(&inode.block, &geometry, &mut read_block)
        };
        map.map_err(|problem| subject.place(problem))
    }

    /// Feeds the `size` bytes of content that `map` describes to `sink`, in order, zeros for
    /// holes and uninitialised extents, through the reused buffer.
    fn read_content(
        &mut self,
        subject: &Subject,
        map: &BlockMap,
        size: u64,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Ext4ReadError> {
        let block_size = self.superblock.block_size;
        // Beyond what 2^32 logical blocks hold, a size is corrupt, and hashing its zeros
        // would take practically forever.
        let max_size = block_size << 32;
        if size > max_size {
            return Err(
                subject.corrupt(format!("the size {size} is above the largest possible ext4 file of {max_size} bytes"))
            );
        }
        // Holes are hashed as zeros, so they count as read.
        self.charge(subject, size)?;
        if self.buffer.len() < BUFFER_SIZE {
            self.buffer = vec![0u8; BUFFER_SIZE];
        }
        let mut position = 0u64;
        for run in &map.runs {
            let start = run.logical * block_size;
            if start >= size {
                break;
            }
            // The map builders keep runs in order without overlap.
            feed_zeros(start.saturating_sub(position), sink);
            let length = (run.length * block_size).min(size - start);
            if run.initialized {
                let mut done = 0;
                while done < length {
                    let chunk = (length - done).min(BUFFER_SIZE as u64) as usize;
                    let buffer = &mut self.buffer[..chunk];
                    self.disk.read_at(run.physical * block_size + done, buffer)?;
                    sink(buffer);
                    done += chunk as u64;
                }
            } else {
                feed_zeros(length, sink);
            }
            position = start + length;
        }
        feed_zeros(size.saturating_sub(position), sink);
        Ok(())
    }

    /// Takes `bytes` read for `subject` from the budget of this call.
    fn charge(&mut self, subject: &Subject, bytes: u64) -> Result<(), Ext4ReadError> {
        if self.disk.charge(bytes) {
            Ok(())
        } else {
            Err(subject.too_large(self.disk.budget_limit()))
        }
    }

    /// Whether the symbolic link's target is in i_block: no extent tree and no data block, as
    /// the kernel's ext4_inode_is_fast_symlink decides.
    fn is_fast_symlink(&self, inode: &Inode) -> bool {
        inode.flags & (EXTENTS_FL | INLINE_DATA_FL) == 0
            && inode.data_blocks_in_sectors(self.superblock.block_size) == 0
    }

    fn symlink_target(&mut self, subject: &Subject, inode: &Inode) -> Result<Vec<u8>, Ext4ReadError> {
        if self.is_fast_symlink(inode) {
            if inode.size > FAST_SYMLINK_MAX {
                return Err(subject.corrupt(format!(
                    "the symbolic link has no data block but a {}-byte target, more than i_block holds",
                    inode.size
                )));
            }
            return Ok(inode.block[..inode.size as usize].to_vec());
        }
        if inode.size > MAX_SYMLINK_TARGET {
            return Err(subject.corrupt(format!(
                "the symbolic link target is {} bytes long, more than {MAX_SYMLINK_TARGET}",
                inode.size
            )));
        }
        let map = self.block_map(subject, inode)?;
        let mut target = Vec::with_capacity(inode.size as usize);
        self.read_content(subject, &map, inode.size, &mut |bytes| target.extend_from_slice(bytes))?;
        Ok(target)
    }

    fn content_sha256(&mut self, subject: &Subject, inode: &Inode) -> Result<[u8; 32], Ext4ReadError> {
        let map = self.block_map(subject, inode)?;
        let mut hasher = Sha256::new();
        self.read_content(subject, &map, inode.size, &mut |bytes| hasher.update(bytes))?;
        Ok(hasher.finalize().into())
    }

    /// The inode's extended attributes, in the inode and in its block, sorted by name.
    fn xattrs(&mut self, subject: &Subject, inode: &Inode) -> Result<xattr::Attributes, Ext4ReadError> {
        let mut attributes = xattr::in_inode(&inode.xattr_area).map_err(|problem| subject.place(problem))?;
        if inode.xattr_block != 0 {
            self.geometry()
                .check(inode.xattr_block, 1)
                .map_err(|problem| subject.corrupt(format!("extended attribute block: {problem}")))?;
            let block_size = self.superblock.block_size;
            self.charge(subject, block_size)?;
            if self.buffer.len() < BUFFER_SIZE {
                self.buffer = vec![0u8; BUFFER_SIZE];
            }
            let block = &mut self.buffer[..block_size as usize];
            self.disk.read_at(inode.xattr_block * block_size, block)?;
            let in_block = xattr::in_block(block, inode.xattr_block).map_err(|problem| subject.place(problem))?;
            attributes.extend(in_block);
        }
        attributes.sort();
        Ok(attributes)
    }

    /// The (name, inode) entries of a directory, sorted by name.
    fn read_directory(&mut self, subject: &Subject, inode: &Inode) -> Result<Vec<(Vec<u8>, u32)>, Ext4ReadError> {
        let map = self.block_map(subject, inode)?;
        let block_size = self.superblock.block_size;
        let blocks = inode.size.div_ceil(block_size);
        if self.buffer.len() < BUFFER_SIZE {
            self.buffer = vec![0u8; BUFFER_SIZE];
        }
        let mut children = Vec::new();
        for run in &map.runs {
            // Uninitialised extents hold no entries; blocks past i_size are not part of the
            // directory.
            if !run.initialized || run.logical >= blocks {
                continue;
            }
            let count = run.length.min(blocks - run.logical);
            let mut done = 0;
            while done < count {
                let chunk = (count - done).min(BUFFER_SIZE as u64 / block_size);
                self.charge(subject, chunk * block_size)?;
                let buffer = &mut self.buffer[..(chunk * block_size) as usize];
                self.disk.read_at((run.physical + done) * block_size, buffer)?;
                for (index, block) in buffer.chunks_exact(block_size as usize).enumerate() {
                    directory::parse_block(block, &mut children).map_err(|problem| {
                        let offset = done + index as u64;
                        subject.corrupt(format!(
                            "directory block {} (block {} of the filesystem): {problem}",
                            run.logical + offset,
                            run.physical + offset
                        ))
                    })?;
                }
                done += chunk;
            }
        }
        children.sort_unstable();
        for pair in children.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(
                    subject.corrupt(format!("the directory has two entries named \"{}\"", printable(&pair[0].0)))
                );
            }
        }
        Ok(children)
    }

    /// The entry for `inode`, reached by `path`.
    fn entry(&mut self, path: &[u8], inode: &Inode) -> Result<Ext4Entry, Ext4ReadError> {
        let subject = Subject { inode: inode.number, path };
        let xattrs = self.xattrs(&subject, inode)?;
        let (mut device, mut symlink_target, mut sha256) = (None, None, None);
        match inode.file_type() {
            S_IFCHR | S_IFBLK => device = Some(inode.device()),
            S_IFLNK => symlink_target = Some(self.symlink_target(&subject, inode)?),
            S_IFREG => sha256 = Some(self.content_sha256(&subject, inode)?),
            _ => {}
        }
        Ok(Ext4Entry {
            path: path.to_vec(),
            inode: inode.number,
            mode: inode.mode,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            links: inode.links,
            flags: inode.flags,
            atime: inode.atime,
            ctime: inode.ctime,
            mtime: inode.mtime,
            crtime: inode.crtime,
            device,
            symlink_target,
            xattrs,
            sha256,
        })
    }

    /// Calls `visit` with every path reachable from the root and its inode: depth first, sorted
    /// by name within a directory, the root first. The walk keeps its own stack (deep trees
    /// cannot overflow the call stack) and remembers every directory, so a loop or a directory
    /// reached twice is an error rather than an endless walk.
    fn walk(
        &mut self,
        mut visit: impl FnMut(&mut Self, &[u8], &Inode) -> Result<(), Ext4ReadError>,
    ) -> Result<(), Ext4ReadError> {
        let mut directories: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut stack: Vec<(Vec<u8>, u32)> = vec![(b"/".to_vec(), ROOT_INODE)];
        // Paths are kept in memory by the callers: directories that name the same inodes
        // over and over (legal only as hard links, which are few) must not exhaust it.
        let max_paths = u64::from(self.superblock.inodes_count) * PATHS_PER_INODE + MAX_LINKS;
        let mut paths = 0u64;
        while let Some((path, number)) = stack.pop() {
            let subject = Subject { inode: number, path: &path };
            paths += 1;
            if paths > max_paths {
                return Err(subject.corrupt(format!(
                    "the directories name more than {max_paths} paths, {PATHS_PER_INODE} per inode"
                )));
            }
            let inode = self.read_inode(number, &path)?;
            if number == ROOT_INODE && path == b"/" && !inode.is_directory() {
                return Err(subject.corrupt(format!("the root inode is not a directory (mode {:#o})", inode.mode)));
            }
            if inode.is_directory() {
                if let Some(first) = directories.get(&number) {
                    return Err(subject.corrupt(format!(
                        "the directory is also reached as {}: a directory hard link or a loop",
                        printable(first)
                    )));
                }
                directories.insert(number, path.clone());
            }
            visit(self, &path, &inode)?;
            if !inode.is_directory() {
                continue;
            }
            let children = self.read_directory(&subject, &inode)?;
            for (name, child) in children.into_iter().rev() {
                let mut child_path = Vec::with_capacity(path.len() + 1 + name.len());
                if path != b"/" {
                    child_path.extend_from_slice(&path);
                }
                child_path.push(b'/');
                child_path.extend_from_slice(&name);
                stack.push((child_path, child));
            }
        }
        Ok(())
    }
}

/// The names of `path` between slashes, `.` and empty ones left out.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&byte| byte == b'/').filter(|name| !name.is_empty() && *name != b".").map(<[u8]>::to_vec)
}

/// Feeds `count` zero bytes to `sink`.
fn feed_zeros(mut count: u64, sink: &mut dyn FnMut(&[u8])) {
    while count > 0 {
        let piece = count.min(ZEROS.len() as u64) as usize;
        sink(&ZEROS[..piece]);
        count -= piece as u64;
    }
}

/// Reads the group descriptor table (each of its blocks where the superblock says it lies).
fn read_group_descriptors<R: Read + Seek>(
    disk: &mut Disk<R>,
    superblock: &Superblock,
) -> Result<Vec<GroupDescriptor>, Ext4ReadError> {
    let block_size = superblock.block_size;
    let mut block = vec![0u8; block_size as usize];
    let per_block = superblock.descriptors_per_block();
    let size = superblock.descriptor_size as usize;
    let mut groups = Vec::with_capacity(superblock.group_count as usize);
    for index in 0..superblock.descriptor_blocks() {
        let location = superblock.descriptor_block_location(index);
        if location <= superblock.first_data_block || location >= superblock.blocks_count {
            return Err(Ext4ReadError::CorruptMetadata {
                problem: format!("group descriptor block {index} would be at block {location}, outside the filesystem"),
            });
        }
        disk.read_at(location * block_size, &mut block)?;
        let remaining = u64::from(superblock.group_count) - index * per_block;
        for raw in block.chunks_exact(size).take(remaining.min(per_block) as usize) {
            groups.push(GroupDescriptor::parse(raw));
        }
    }
    Ok(groups)
}
