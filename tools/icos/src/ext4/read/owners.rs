//! What each block of the filesystem holds ([`Ext4Filesystem::block_owners`]): group metadata
//! by position, the journal and the resize inode, every reachable inode's blocks, reserved
//! inodes that hold blocks, and for the rest the block bitmaps.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek};

use super::bytes::u32_at;
use super::inode::{S_IFDIR, S_IFLNK, S_IFREG};
use super::map::{BlockMap, Geometry};
use super::{BlockOwner, Ext4Filesystem, Ext4ReadError, Subject, ROOT_INODE};

/// Inodes 1 to 10 are reserved (EXT4_GOOD_OLD_FIRST_INO).
const FIRST_ORDINARY_INODE: u32 = 11;
const RESIZE_INODE: u32 = 7;
/// The resize inode's i_block[EXT2_DIND_BLOCK].
const DOUBLE_INDIRECT_INDEX: usize = 13;
// bg_flags
const BLOCK_UNINIT: u16 = 0x2;
// Group descriptor checksums (gdt_csum or metadata_csum) are what make bg_flags trustworthy.
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// Owners found so far for the blocks asked about.
struct Claims {
    /// Sorted and deduplicated.
    blocks: Vec<u64>,
    owners: Vec<Option<BlockOwner>>,
}

impl Claims {
    fn new(mut blocks: Vec<u64>) -> Claims {
        blocks.sort_unstable();
        blocks.dedup();
        let owners = vec![None; blocks.len()];
        Claims { blocks, owners }
    }

    /// Gives `count` blocks from `start` to `owner` (called with the block number), where no
    /// earlier claim did: the walk claims metadata first, so a corrupt file that maps a bitmap
    /// does not hide what the block is.
    fn claim(&mut self, start: u64, count: u64, mut owner: impl FnMut(u64) -> BlockOwner) {
        let end = start.saturating_add(count);
        let mut index = self.blocks.partition_point(|&block| block < start);
        while index < self.blocks.len() && self.blocks[index] < end {
            if self.owners[index].is_none() {
                self.owners[index] = Some(owner(self.blocks[index]));
            }
            index += 1;
        }
    }

    fn claim_map(&mut self, map: &BlockMap, owner: impl Fn() -> BlockOwner) {
        for run in &map.runs {
            self.claim(run.physical, run.length, |_| owner());
        }
        for &block in &map.tree_blocks {
            self.claim(block, 1, |_| owner());
        }
    }

    /// Records that `path` uses the attribute block `block`.
    fn add_xattr_user(&mut self, block: u64, path: &[u8]) {
        let Ok(index) = self.blocks.binary_search(&block) else {
            return;
        };
        match &mut self.owners[index] {
            owner @ None => *owner = Some(BlockOwner::ExtendedAttributes { paths: vec![path.to_vec()] }),
            Some(BlockOwner::ExtendedAttributes { paths }) => paths.push(path.to_vec()),
            Some(_) => {}
        }
    }

    fn owner(&self, block: u64) -> BlockOwner {
        self.blocks
            .binary_search(&block)
            .ok()
            .and_then(|index| self.owners[index].clone())
            .unwrap_or(BlockOwner::Unknown)
    }
}

impl<R: Read + Seek> Ext4Filesystem<R> {
    /// What each of `blocks` holds, as (block, owner) in the order given. The metadata is
    /// walked once for all of them: group metadata by position, the journal and resize inode,
    /// every reachable inode's blocks, reserved inodes that hold blocks, then the block bitmaps
    /// for blocks nothing claimed.
    pub fn block_owners(&mut self, blocks: &[u64]) -> Result<Vec<(u64, BlockOwner)>, Ext4ReadError> {
        let mut claims = Claims::new(blocks.to_vec());
        if claims.blocks.is_empty() {
            return Ok(Vec::new());
        }
        self.disk.budget = self.disk.budget_limit();
        self.claim_group_metadata(&mut claims);
        self.claim_journal_and_resize_inode(&mut claims)?;
        let mut mapped: HashSet<u32> = HashSet::new();
        let geometry = self.geometry();
        self.walk(|filesystem, path, inode| {
            let subject = Subject { inode: inode.number, path };
            if inode.xattr_block != 0 {
                geometry
                    .check(inode.xattr_block, 1)
                    .map_err(|problem| subject.corrupt(format!("extended attribute block: {problem}")))?;
                claims.add_xattr_user(inode.xattr_block, path);
            }
            // A hard link's blocks belong to its first path.
            if !mapped.insert(inode.number) {
                return Ok(());
            }
            let owner = match inode.file_type() {
                S_IFDIR => BlockOwner::Directory { path: path.to_vec() },
                S_IFREG => BlockOwner::FileData { path: path.to_vec() },
                S_IFLNK if !filesystem.is_fast_symlink(inode) => BlockOwner::FileData { path: path.to_vec() },
                // Devices, FIFOs, sockets and fast symbolic links hold no blocks.
                _ => return Ok(()),
            };
            let map = filesystem.block_map(&subject, inode)?;
            claims.claim_map(&map, || owner.clone());
            Ok(())
        })?;
        self.claim_hidden_inodes(&mut claims, &mapped)?;
        self.claim_by_bitmaps(&mut claims)?;
        Ok(blocks.iter().map(|&block| (block, claims.owner(block))).collect())
    }

    /// Superblock copies, descriptor tables, bitmaps and inode tables, by position.
    fn claim_group_metadata(&self, claims: &mut Claims) {
        let superblock = &self.superblock;
        // Before a 1 KiB-block filesystem's superblock (block 1) lies the boot sector's block.
        claims.claim(0, superblock.first_data_block, |_| BlockOwner::Superblock);
        let table_blocks = superblock.inode_table_blocks();
        let inodes_per_block = superblock.block_size / superblock.inode_size;
        let inodes_per_group = u64::from(superblock.inodes_per_group);
        for (group, descriptor) in (0..superblock.group_count).zip(&self.groups) {
            for (start, count, is_superblock) in superblock.group_metadata(group) {
                claims.claim(start, count, |_| {
                    if is_superblock {
                        BlockOwner::Superblock
                    } else {
                        BlockOwner::GroupDescriptors
                    }
                });
            }
            claims.claim(descriptor.block_bitmap, 1, |_| BlockOwner::BlockBitmap { group });
            claims.claim(descriptor.inode_bitmap, 1, |_| BlockOwner::InodeBitmap { group });
            let table = descriptor.inode_table;
            let group_first = u64::from(group) * inodes_per_group;
            claims.claim(table, table_blocks, |block| {
                let first = group_first + (block - table) * inodes_per_block + 1;
                let last = (first + inodes_per_block - 1).min(group_first + inodes_per_group);
                BlockOwner::InodeTable {
                    group,
                    first_inode: u32::try_from(first).unwrap_or(u32::MAX),
                    last_inode: u32::try_from(last).unwrap_or(u32::MAX),
                }
            });
        }
    }

    fn claim_journal_and_resize_inode(&mut self, claims: &mut Claims) -> Result<(), Ext4ReadError> {
        let journal = self.superblock.journal_inode;
        if journal != 0 {
            let path = format!("<inode {journal}: journal>").into_bytes();
            let inode = self.read_inode(journal, &path)?;
            let map = self.block_map(&Subject { inode: journal, path: &path }, &inode)?;
            claims.claim_map(&map, || BlockOwner::Journal);
        }
        if self.superblock.has_resize_inode() {
            let path = b"<inode 7: resize inode>";
            let inode = self.read_inode(RESIZE_INODE, path)?;
            let block = u64::from(inode.block_word(DOUBLE_INDIRECT_INDEX));
            if block != 0 {
                self.geometry().check(block, 1).map_err(|problem| {
                    Subject { inode: RESIZE_INODE, path }.corrupt(format!("double indirect block: {problem}"))
                })?;
                claims.claim(block, 1, |_| BlockOwner::ResizeInode);
            }
        }
        Ok(())
    }

    /// Reserved inodes and inodes the superblock names (quota files, the orphan file) that no
    /// path reaches but that hold blocks.
    fn claim_hidden_inodes(&mut self, claims: &mut Claims, reached: &HashSet<u32>) -> Result<(), Ext4ReadError> {
        let raw = &self.superblock.raw;
        let mut hidden: BTreeMap<u32, &str> = BTreeMap::new();
        let reserved_names =
            [(1, "bad blocks"), (3, "user quota"), (4, "group quota"), (5, "boot loader"), (6, "undelete directory")];
        // The inodes ext4 reserves (a corrupt first_ino must not make this a long walk).
        let reserved_end = self.superblock.first_inode.min(FIRST_ORDINARY_INODE);
        for number in 1..reserved_end {
            let name =
                reserved_names.iter().find(|(reserved, _)| *reserved == number).map_or("reserved", |(_, name)| name);
            hidden.insert(number, name);
        }
        for (offset, name) in [
            (0x240, "user quota"),
            (0x244, "group quota"),
            (0x26C, "project quota"),
            (0x280, "orphan file"),
            (0x180, "snapshot"),
        ] {
            let number = u32_at(raw, offset);
            if number != 0 && number <= self.superblock.inodes_count {
                hidden.insert(number, name);
            }
        }
        // Found already, or with owners of their own.
        for number in [ROOT_INODE, RESIZE_INODE, self.superblock.journal_inode] {
            hidden.remove(&number);
        }
        for (number, name) in hidden {
            if reached.contains(&number) {
                continue;
            }
            let path = format!("<inode {number}: {name}>").into_bytes();
            let inode = self.read_inode(number, &path)?;
            // Unused reserved inodes are zeros: nothing to claim.
            if inode.sectors == 0 {
                continue;
            }
            let subject = Subject { inode: number, path: &path };
            if inode.xattr_block != 0 {
                claims.add_xattr_user(inode.xattr_block, &path);
            }
            let map = self.block_map(&subject, &inode)?;
            claims.claim_map(&map, || BlockOwner::FileData { path: path.clone() });
        }
        Ok(())
    }

    /// Blocks nothing claimed: free or allocated to something unreachable, by the block bitmap
    /// of their group (read once per group; the blocks are sorted).
    fn claim_by_bitmaps(&mut self, claims: &mut Claims) -> Result<(), Ext4ReadError> {
        let superblock = &self.superblock;
        let trust_flags = superblock.feature_ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0;
        let block_size = superblock.block_size;
        let mut bitmap = vec![0u8; block_size as usize];
        let mut loaded: Option<u32> = None;
        for index in 0..claims.blocks.len() {
            let block = claims.blocks[index];
            if claims.owners[index].is_some() || block < superblock.first_data_block || block >= superblock.blocks_count
            {
                continue;
            }
            let relative = block - superblock.first_data_block;
            let group = (relative / superblock.blocks_per_group) as u32;
            let bit = (relative % superblock.blocks_per_group) as usize;
            let Some(descriptor) = self.groups.get(group as usize) else {
                continue;
            };
            // A group whose bitmap was never written has no blocks but its metadata, which
            // is claimed already.
            if trust_flags && descriptor.flags & BLOCK_UNINIT != 0 {
                claims.owners[index] = Some(BlockOwner::Unused);
                continue;
            }
            if loaded != Some(group) {
                let location = descriptor.block_bitmap;
                Geometry {
                    block_size,
                    first_valid: superblock.first_data_block + 1,
                    blocks_count: superblock.blocks_count,
                }
                .check(location, 1)
                .map_err(|problem| Ext4ReadError::CorruptMetadata {
                    problem: format!("the block bitmap of group {group}: {problem}"),
                })?;
                self.disk.read_at(location * block_size, &mut bitmap)?;
                loaded = Some(group);
            }
            // blocks_per_group is at most 8 bits per bitmap byte, checked on opening.
            let used = bitmap.get(bit / 8).is_some_and(|byte| byte >> (bit % 8) & 1 == 1);
            claims.owners[index] = Some(if used { BlockOwner::Unknown } else { BlockOwner::Unused });
        }
        Ok(())
    }
}
