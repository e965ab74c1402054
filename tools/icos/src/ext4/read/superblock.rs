//! The superblock: the geometry the reader needs, the features it checks, and every field
//! rendered for people (for explaining why two superblocks differ).

use crate::hashing::hex;
use sha2::{Digest, Sha256};

use super::bytes::{u16_at, u32_at, u64_at, u8_at};
use super::time::format_seconds;
use super::Ext4ReadError;

/// The superblock lives at byte 1024 of the filesystem, whatever the block size.
pub(super) const SUPERBLOCK_OFFSET: u64 = 1024;
pub(super) const SUPERBLOCK_SIZE: usize = 1024;
const MAGIC: u16 = 0xEF53;

// Feature bits that change how the filesystem is read.
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_RESIZE_INODE: u32 = 0x10;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;

const COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x40, "lazy_bg"),
    (0x100, "exclude_bitmap"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x4, "btree_dir"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x80, "snapshot"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x800, "replica"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

/// Incompatible features this reader understands: the layout it reads is unchanged by them
/// (casefold changes only name lookups, which a linear directory scan does not do; mmp adds one
/// block; metadata_csum_seed moves a seed this reader, which verifies no checksum, ignores).
const INCOMPAT_READABLE: u32 = 0x2 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x2000 | 0x4000 | 0x20000;
/// Read-only-compatible features this reader refuses although a read-only reader normally may
/// ignore them: bigalloc makes the block bitmaps count clusters, which `block_owners` does not do.
const RO_COMPAT_REFUSED: u32 = 0x200;

/// The parts of the superblock the reader works with, checked for sanity.
#[derive(Debug, Clone)]
pub(super) struct Superblock {
    /// The 1024 bytes as stored, for [`superblock_fields`].
    pub raw: Vec<u8>,
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub block_size: u64,
    pub blocks_per_group: u64,
    pub inodes_per_group: u32,
    pub inode_size: u64,
    pub first_inode: u32,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub reserved_gdt_blocks: u64,
    pub descriptor_size: u64,
    pub first_meta_bg: u64,
    pub journal_inode: u32,
    pub backup_groups: [u32; 2],
    pub group_count: u32,
}

impl Superblock {
    /// Parses and checks the superblock of a filesystem `length` bytes long.
    pub fn parse(raw: Vec<u8>, length: u64) -> Result<Superblock, Ext4ReadError> {
        let not_ext4 = |reason: String| Ext4ReadError::NotExt4 { reason };
        if raw.len() != SUPERBLOCK_SIZE {
            return Err(not_ext4(format!("the superblock is {} bytes, not 1024", raw.len())));
        }
        let magic = u16_at(&raw, 0x38);
        if magic != MAGIC {
            return Err(not_ext4(format!("the magic number at byte 1080 is {magic:#06x}, not {MAGIC:#06x}")));
        }
        let log_block_size = u32_at(&raw, 0x18);
        // 1 KiB to 64 KiB are the block sizes ext4 defines.
        if log_block_size > 6 {
            return Err(not_ext4(format!("s_log_block_size {log_block_size} gives a block size above 64 KiB")));
        }
        let block_size = 1024u64 << log_block_size;
        let feature_compat = u32_at(&raw, 0x5C);
        let feature_incompat = u32_at(&raw, 0x60);
        let feature_ro_compat = u32_at(&raw, 0x64);
        let unreadable = feature_incompat & !INCOMPAT_READABLE;
        if unreadable != 0 {
            return Err(Ext4ReadError::Unsupported { feature: feature_names(unreadable, INCOMPAT_NAMES) });
        }
        if feature_ro_compat & RO_COMPAT_REFUSED != 0 {
            return Err(Ext4ReadError::Unsupported {
                feature: feature_names(feature_ro_compat & RO_COMPAT_REFUSED, RO_COMPAT_NAMES),
            });
        }
        let rev_level = u32_at(&raw, 0x4C);
        // Revision 0 filesystems have fixed 128-byte inodes and 11 as the first ordinary inode.
        let (inode_size, first_inode) =
            if rev_level == 0 { (128, 11) } else { (u64::from(u16_at(&raw, 0x58)), u32_at(&raw, 0x54)) };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
            return Err(not_ext4(format!(
                "the inode size {inode_size} is not a power of two between 128 and the block size {block_size}"
            )));
        }
        // Bitmaps are whole bytes, and groups of fewer than 8 blocks would let a small image
        // claim millions of groups.
        let blocks_per_group_raw = u32_at(&raw, 0x20);
        if blocks_per_group_raw < 8 || blocks_per_group_raw % 8 != 0 {
            return Err(not_ext4(format!("{blocks_per_group_raw} blocks per group is not a positive multiple of 8")));
        }
        let inodes_count = u32_at(&raw, 0x0);
        let blocks_count = hi_lo(&raw, 0x150, 0x4);
        let first_data_block = u64::from(u32_at(&raw, 0x14));
        let blocks_per_group = u64::from(u32_at(&raw, 0x20));
        let inodes_per_group = u32_at(&raw, 0x28);
        // A group's block and inode bitmaps are one block each.
        let bits_per_block = block_size * 8;
        if blocks_per_group == 0 || blocks_per_group > bits_per_block {
            return Err(not_ext4(format!(
                "{blocks_per_group} blocks per group do not fit a {block_size}-byte block bitmap"
            )));
        }
        if inodes_per_group == 0 || u64::from(inodes_per_group) > bits_per_block {
            return Err(not_ext4(format!(
                "{inodes_per_group} inodes per group do not fit a {block_size}-byte inode bitmap"
            )));
        }
        if first_inode < 11 || first_inode > inodes_count {
            return Err(not_ext4(format!(
                "the first ordinary inode {first_inode} is not between 11 and the inode count {inodes_count}"
            )));
        }
        if first_data_block >= blocks_count {
            return Err(not_ext4(format!(
                "the first data block {first_data_block} is not below the block count {blocks_count}"
            )));
        }
        let size = blocks_count.checked_mul(block_size).filter(|&size| size <= length);
        if size.is_none() {
            return Err(not_ext4(format!(
                "{blocks_count} blocks of {block_size} bytes do not fit in the {length} bytes given"
            )));
        }
        let group_count = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        let group_count =
            u32::try_from(group_count).map_err(|_| not_ext4(format!("{group_count} block groups are too many")))?;
        if u64::from(inodes_count) > u64::from(group_count) * u64::from(inodes_per_group) {
            return Err(not_ext4(format!(
                "{inodes_count} inodes do not fit in {group_count} groups of {inodes_per_group}"
            )));
        }
        let descriptor_size = if feature_incompat & INCOMPAT_64BIT != 0 { u64::from(u16_at(&raw, 0xFE)) } else { 32 };
        if descriptor_size < 32 || !descriptor_size.is_power_of_two() || descriptor_size > block_size {
            return Err(not_ext4(format!(
                "the group descriptor size {descriptor_size} is not a power of two between 32 and the block size"
            )));
        }
        let journal_inode = if feature_compat & COMPAT_HAS_JOURNAL != 0 { u32_at(&raw, 0xE0) } else { 0 };
        Ok(Superblock {
            inodes_count,
            blocks_count,
            first_data_block,
            block_size,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            first_inode,
            feature_compat,
            feature_incompat,
            feature_ro_compat,
            reserved_gdt_blocks: u64::from(u16_at(&raw, 0xCE)),
            descriptor_size,
            first_meta_bg: u64::from(u32_at(&raw, 0x104)),
            journal_inode,
            backup_groups: [u32_at(&raw, 0x24C), u32_at(&raw, 0x250)],
            group_count,
            raw,
        })
    }

    pub fn has_huge_file(&self) -> bool {
        self.feature_ro_compat & RO_COMPAT_HUGE_FILE != 0
    }

    pub fn has_resize_inode(&self) -> bool {
        self.feature_compat & COMPAT_RESIZE_INODE != 0
    }

    fn has_meta_bg(&self) -> bool {
        self.feature_incompat & INCOMPAT_META_BG != 0
    }

    pub fn descriptors_per_block(&self) -> u64 {
        self.block_size / self.descriptor_size
    }

    /// Blocks that the group descriptor table takes.
    pub fn descriptor_blocks(&self) -> u64 {
        u64::from(self.group_count).div_ceil(self.descriptors_per_block())
    }

    /// Blocks that one group's inode table takes.
    pub fn inode_table_blocks(&self) -> u64 {
        (u64::from(self.inodes_per_group) * self.inode_size).div_ceil(self.block_size)
    }

    pub fn group_first_block(&self, group: u32) -> u64 {
        self.first_data_block + u64::from(group) * self.blocks_per_group
    }

    /// Whether `group` holds a copy of the superblock (and, without meta_bg, of the group
    /// descriptors): as ext2fs_bg_has_super decides it.
    pub fn has_superblock(&self, group: u32) -> bool {
        if group == 0 {
            return true;
        }
        if self.feature_compat & COMPAT_SPARSE_SUPER2 != 0 {
            return self.backup_groups.contains(&group);
        }
        if group == 1 || self.feature_ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
            return true;
        }
        if group % 2 == 0 {
            return false;
        }
        [3u32, 5, 7].iter().any(|&base| {
            let mut power = base;
            while power < group {
                match power.checked_mul(base) {
                    Some(next) => power = next,
                    None => return false,
                }
            }
            power == group
        })
    }

    /// Where descriptor block `index` of the primary table lies (ext2fs_descriptor_block_loc2):
    /// right after the superblock, or with meta_bg in the first group of its meta group.
    pub fn descriptor_block_location(&self, index: u64) -> u64 {
        if !self.has_meta_bg() || index < self.first_meta_bg {
            return self.first_data_block + 1 + index;
        }
        let group = index.saturating_mul(self.descriptors_per_block());
        match u32::try_from(group) {
            Ok(group) if group < self.group_count => {
                self.group_first_block(group) + u64::from(self.has_superblock(group))
            }
            // Past the last group: a location no valid block has, which the caller rejects.
            _ => self.blocks_count,
        }
    }

    /// The superblock and descriptor copies in `group` as (first block, block count, is the
    /// superblock) runs (ext2fs_super_and_bgd_loc2): the superblock, then the descriptor table
    /// with its reserved growth blocks, or with meta_bg the one descriptor block of the meta
    /// group that this group holds a copy of.
    pub fn group_metadata(&self, group: u32) -> Vec<(u64, u64, bool)> {
        let first = self.group_first_block(group);
        let has_superblock = self.has_superblock(group);
        let mut runs = Vec::new();
        if has_superblock {
            runs.push((first, 1, true));
        }
        let per_block = self.descriptors_per_block();
        let meta_group = u64::from(group) / per_block;
        if !self.has_meta_bg() || meta_group < self.first_meta_bg {
            if has_superblock {
                let blocks = if self.has_meta_bg() {
                    self.first_meta_bg
                } else {
                    self.descriptor_blocks() + self.reserved_gdt_blocks
                };
                runs.push((first + 1, blocks, false));
            }
        } else {
            let position = u64::from(group) % per_block;
            if position == 0 || position == 1 || position == per_block - 1 {
                runs.push((first + u64::from(has_superblock), 1, false));
            }
        }
        runs
    }
}

/// A 64-bit count stored as a low half at `lo` and a high half at `hi`.
fn hi_lo(raw: &[u8], hi: usize, lo: usize) -> u64 {
    u64::from(u32_at(raw, hi)) << 32 | u64::from(u32_at(raw, lo))
}

/// Feature bits as names ("inline_data, encrypt"), unknown bits in hex.
fn feature_names(bits: u32, names: &[(u32, &str)]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut known = 0;
    for &(bit, name) in names {
        if bits & bit != 0 {
            out.push(name.to_owned());
            known |= bit;
        }
    }
    if bits & !known != 0 {
        out.push(format!("unknown {:#x}", bits & !known));
    }
    out.join(", ")
}

/// How a superblock field is stored and shown.
#[derive(Debug, Clone, Copy)]
enum Field {
    U8(usize),
    U16(usize),
    /// A 16-bit count that is -1 for "none".
    I16(usize),
    U32(usize),
    U64(usize),
    /// 16 or 32 bits shown in hex (flags, checksums, seeds).
    Hex16(usize),
    Hex32(usize),
    /// A count split in a low half and a high half (lo, hi).
    Split(usize, usize),
    /// Seconds: 32 low bits and 8 high bits (lo, hi).
    Time(usize, usize),
    /// Feature bits with their names.
    Features(usize, &'static [(u32, &'static str)]),
    Uuid(usize),
    /// A NUL-padded string of the given length.
    Text(usize, usize),
    /// Bytes shown in hex.
    Bytes(usize, usize),
    /// A number followed by what it means.
    Named(usize, usize, fn(u64) -> &'static str),
}

impl Field {
    /// The bytes the field covers: (offset, length) runs.
    #[cfg(test)]
    fn ranges(self) -> Vec<(usize, usize)> {
        match self {
            Field::U8(offset) => vec![(offset, 1)],
            Field::U16(offset) | Field::I16(offset) | Field::Hex16(offset) => vec![(offset, 2)],
            Field::U32(offset) | Field::Hex32(offset) | Field::Features(offset, _) => {
                vec![(offset, 4)]
            }
            Field::U64(offset) => vec![(offset, 8)],
            Field::Split(lo, hi) => vec![(lo, 4), (hi, 4)],
            Field::Time(lo, hi) => vec![(lo, 4), (hi, 1)],
            Field::Uuid(offset) => vec![(offset, 16)],
            Field::Text(offset, length) | Field::Bytes(offset, length) => vec![(offset, length)],
            Field::Named(offset, length, _) => vec![(offset, length)],
        }
    }

    fn render(self, raw: &[u8]) -> String {
        match self {
            Field::U8(offset) => u8_at(raw, offset).to_string(),
            Field::U16(offset) => u16_at(raw, offset).to_string(),
            Field::I16(offset) => (u16_at(raw, offset) as i16).to_string(),
            Field::U32(offset) => u32_at(raw, offset).to_string(),
            Field::U64(offset) => u64_at(raw, offset).to_string(),
            Field::Hex16(offset) => format!("{:#06x}", u16_at(raw, offset)),
            Field::Hex32(offset) => format!("{:#010x}", u32_at(raw, offset)),
            Field::Split(lo, hi) => hi_lo(raw, hi, lo).to_string(),
            Field::Time(lo, hi) => {
                // Superblock times are unsigned: 40 bits of seconds since 1970.
                let seconds = i64::from(u8_at(raw, hi)) << 32 | i64::from(u32_at(raw, lo));
                format!("{seconds} ({})", format_seconds(seconds))
            }
            Field::Features(offset, names) => {
                let bits = u32_at(raw, offset);
                format!("{bits:#010x} ({})", feature_names(bits, names))
            }
            Field::Uuid(offset) => format_uuid(&raw[offset..offset + 16]),
            Field::Text(offset, length) => {
                let bytes = &raw[offset..offset + length];
                // Trailing NULs are padding; anything else, even after a NUL, is shown.
                let end = bytes.iter().rposition(|&byte| byte != 0).map_or(0, |last| last + 1);
                format!("\"{}\"", bytes[..end].escape_ascii())
            }
            Field::Bytes(offset, length) => {
                let bytes = &raw[offset..offset + length];
                if bytes.iter().all(|&byte| byte == 0) {
                    format!("{length} zero bytes")
                } else if length <= 128 {
                    hex(bytes)
                } else {
                    format!("sha256 {}", hex(&Sha256::digest(bytes)))
                }
            }
            Field::Named(offset, length, meaning) => {
                let value = match length {
                    1 => u64::from(u8_at(raw, offset)),
                    2 => u64::from(u16_at(raw, offset)),
                    _ => u64::from(u32_at(raw, offset)),
                };
                match meaning(value) {
                    "" => value.to_string(),
                    text => format!("{value} ({text})"),
                }
            }
        }
    }
}

fn format_uuid(bytes: &[u8]) -> String {
    let text = hex(bytes);
    if text.len() != 32 {
        return text;
    }
    format!("{}-{}-{}-{}-{}", &text[..8], &text[8..12], &text[12..16], &text[16..20], &text[20..])
}

fn block_size_meaning(value: u64) -> &'static str {
    match value {
        0 => "1024-byte blocks",
        1 => "2048-byte blocks",
        2 => "4096-byte blocks",
        3 => "8192-byte blocks",
        4 => "16384-byte blocks",
        5 => "32768-byte blocks",
        6 => "65536-byte blocks",
        _ => "",
    }
}

fn state_meaning(value: u64) -> &'static str {
    match value {
        0 => "not clean",
        1 => "clean",
        2 => "not clean, with errors",
        3 => "clean, with errors",
        _ => "",
    }
}

fn errors_meaning(value: u64) -> &'static str {
    match value {
        1 => "continue",
        2 => "remount read-only",
        3 => "panic",
        _ => "",
    }
}

fn creator_os_meaning(value: u64) -> &'static str {
    match value {
        0 => "Linux",
        1 => "Hurd",
        2 => "Masix",
        3 => "FreeBSD",
        4 => "Lites",
        _ => "",
    }
}

fn rev_level_meaning(value: u64) -> &'static str {
    match value {
        0 => "original",
        1 => "dynamic",
        _ => "",
    }
}

fn hash_version_meaning(value: u64) -> &'static str {
    match value {
        0 => "legacy",
        1 => "half_md4",
        2 => "tea",
        3 => "legacy, unsigned",
        4 => "half_md4, unsigned",
        5 => "tea, unsigned",
        6 => "siphash",
        _ => "",
    }
}

fn checksum_type_meaning(value: u64) -> &'static str {
    match value {
        1 => "crc32c",
        _ => "",
    }
}

fn encoding_meaning(value: u64) -> &'static str {
    match value {
        1 => "utf8",
        _ => "",
    }
}

/// Every field of the superblock in on-disk order (a split field where its low half is), named
/// as in the kernel's `struct ext4_super_block` without the `s_` prefix. Together the fields
/// cover all 1024 bytes exactly once (a unit test checks it), so two superblocks that differ
/// in any byte differ in a rendered field.
const FIELDS: &[(&str, Field)] = &[
    ("inodes_count", Field::U32(0x0)),
    ("blocks_count", Field::Split(0x4, 0x150)),
    ("r_blocks_count", Field::Split(0x8, 0x154)),
    ("free_blocks_count", Field::Split(0xC, 0x158)),
    ("free_inodes_count", Field::U32(0x10)),
    ("first_data_block", Field::U32(0x14)),
    ("log_block_size", Field::Named(0x18, 4, block_size_meaning)),
    ("log_cluster_size", Field::U32(0x1C)),
    ("blocks_per_group", Field::U32(0x20)),
    ("clusters_per_group", Field::U32(0x24)),
    ("inodes_per_group", Field::U32(0x28)),
    ("mtime", Field::Time(0x2C, 0x275)),
    ("wtime", Field::Time(0x30, 0x274)),
    ("mnt_count", Field::U16(0x34)),
    ("max_mnt_count", Field::I16(0x36)),
    ("magic", Field::Hex16(0x38)),
    ("state", Field::Named(0x3A, 2, state_meaning)),
    ("errors", Field::Named(0x3C, 2, errors_meaning)),
    ("minor_rev_level", Field::U16(0x3E)),
    ("lastcheck", Field::Time(0x40, 0x277)),
    ("checkinterval", Field::U32(0x44)),
    ("creator_os", Field::Named(0x48, 4, creator_os_meaning)),
    ("rev_level", Field::Named(0x4C, 4, rev_level_meaning)),
    ("def_resuid", Field::U16(0x50)),
    ("def_resgid", Field::U16(0x52)),
    ("first_ino", Field::U32(0x54)),
    ("inode_size", Field::U16(0x58)),
    ("block_group_nr", Field::U16(0x5A)),
    ("feature_compat", Field::Features(0x5C, COMPAT_NAMES)),
    ("feature_incompat", Field::Features(0x60, INCOMPAT_NAMES)),
    ("feature_ro_compat", Field::Features(0x64, RO_COMPAT_NAMES)),
    ("uuid", Field::Uuid(0x68)),
    ("volume_name", Field::Text(0x78, 16)),
    ("last_mounted", Field::Text(0x88, 64)),
    ("algorithm_usage_bitmap", Field::Hex32(0xC8)),
    ("prealloc_blocks", Field::U8(0xCC)),
    ("prealloc_dir_blocks", Field::U8(0xCD)),
    ("reserved_gdt_blocks", Field::U16(0xCE)),
    ("journal_uuid", Field::Uuid(0xD0)),
    ("journal_inum", Field::U32(0xE0)),
    ("journal_dev", Field::Hex32(0xE4)),
    ("last_orphan", Field::U32(0xE8)),
    ("hash_seed", Field::Uuid(0xEC)),
    ("def_hash_version", Field::Named(0xFC, 1, hash_version_meaning)),
    ("jnl_backup_type", Field::U8(0xFD)),
    ("desc_size", Field::U16(0xFE)),
    ("default_mount_opts", Field::Hex32(0x100)),
    ("first_meta_bg", Field::U32(0x104)),
    ("mkfs_time", Field::Time(0x108, 0x276)),
    ("jnl_blocks", Field::Bytes(0x10C, 68)),
    ("min_extra_isize", Field::U16(0x15C)),
    ("want_extra_isize", Field::U16(0x15E)),
    ("flags", Field::Hex32(0x160)),
    ("raid_stride", Field::U16(0x164)),
    ("mmp_update_interval", Field::U16(0x166)),
    ("mmp_block", Field::U64(0x168)),
    ("raid_stripe_width", Field::U32(0x170)),
    ("log_groups_per_flex", Field::U8(0x174)),
    ("checksum_type", Field::Named(0x175, 1, checksum_type_meaning)),
    ("encryption_level", Field::U8(0x176)),
    ("reserved_pad", Field::U8(0x177)),
    ("kbytes_written", Field::U64(0x178)),
    ("snapshot_inum", Field::U32(0x180)),
    ("snapshot_id", Field::U32(0x184)),
    ("snapshot_r_blocks_count", Field::U64(0x188)),
    ("snapshot_list", Field::U32(0x190)),
    ("error_count", Field::U32(0x194)),
    ("first_error_time", Field::Time(0x198, 0x278)),
    ("first_error_ino", Field::U32(0x19C)),
    ("first_error_block", Field::U64(0x1A0)),
    ("first_error_func", Field::Text(0x1A8, 32)),
    ("first_error_line", Field::U32(0x1C8)),
    ("last_error_time", Field::Time(0x1CC, 0x279)),
    ("last_error_ino", Field::U32(0x1D0)),
    ("last_error_line", Field::U32(0x1D4)),
    ("last_error_block", Field::U64(0x1D8)),
    ("last_error_func", Field::Text(0x1E0, 32)),
    ("mount_opts", Field::Text(0x200, 64)),
    ("usr_quota_inum", Field::U32(0x240)),
    ("grp_quota_inum", Field::U32(0x244)),
    ("overhead_clusters", Field::U32(0x248)),
    ("backup_bgs", Field::Bytes(0x24C, 8)),
    ("encrypt_algos", Field::Bytes(0x254, 4)),
    ("encrypt_pw_salt", Field::Bytes(0x258, 16)),
    ("lpf_ino", Field::U32(0x268)),
    ("prj_quota_inum", Field::U32(0x26C)),
    ("checksum_seed", Field::Hex32(0x270)),
    ("first_error_errcode", Field::U8(0x27A)),
    ("last_error_errcode", Field::U8(0x27B)),
    ("encoding", Field::Named(0x27C, 2, encoding_meaning)),
    ("encoding_flags", Field::Hex16(0x27E)),
    ("orphan_file_inum", Field::U32(0x280)),
    ("reserved", Field::Bytes(0x284, 376)),
    ("checksum", Field::Hex32(0x3FC)),
];

/// The superblock's fields as (name, value for people), in on-disk order.
pub(super) fn superblock_fields(raw: &[u8]) -> Vec<(String, String)> {
    if raw.len() != SUPERBLOCK_SIZE {
        return vec![("superblock".to_owned(), hex(raw))];
    }
    FIELDS.iter().map(|&(name, field)| (name.to_owned(), field.render(raw))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cover_every_byte_once() {
        let mut covered = [0u8; SUPERBLOCK_SIZE];
        for &(name, field) in FIELDS {
            for (offset, length) in field.ranges() {
                for byte in &mut covered[offset..offset + length] {
                    *byte += 1;
                    assert_eq!(*byte, 1, "{name} overlaps another field at {offset:#x}");
                }
            }
        }
        let missing: Vec<usize> = (0..SUPERBLOCK_SIZE).filter(|&i| covered[i] == 0).collect();
        assert!(missing.is_empty(), "bytes no field covers: {missing:x?}");
    }

    #[test]
    fn fields_are_in_on_disk_order() {
        let starts: Vec<usize> = FIELDS.iter().map(|(_, field)| field.ranges()[0].0).collect();
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        assert_eq!(starts, sorted);
    }

    #[test]
    fn any_changed_byte_changes_a_field() {
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        raw[0x38] = 0x53;
        raw[0x39] = 0xEF;
        let base = superblock_fields(&raw);
        for offset in 0..SUPERBLOCK_SIZE {
            let mut changed = raw.clone();
            changed[offset] ^= 0x41;
            assert_ne!(superblock_fields(&changed), base, "byte {offset:#x}");
        }
    }

    #[test]
    fn fields_render_for_people() {
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        raw[0x4..0x8].copy_from_slice(&786432u32.to_le_bytes());
        raw[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        raw[0x30..0x34].copy_from_slice(&1_700_000_000u32.to_le_bytes());
        raw[0x274] = 1;
        raw[0x5C..0x60].copy_from_slice(&0x3cu32.to_le_bytes());
        raw[0x60..0x64].copy_from_slice(&0x8_0000u32.to_le_bytes());
        raw[0x68..0x78].copy_from_slice(&[0x11; 16]);
        raw[0x78..0x7D].copy_from_slice(b"root\xff");
        raw[0xFC] = 1;
        raw[0x300] = 0xab;
        let fields = superblock_fields(&raw);
        let get = |name: &str| fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.clone()).unwrap();
        assert_eq!(get("blocks_count"), (786432u64 + (1 << 32)).to_string());
        assert_eq!(get("wtime"), "5994967296 (2159-12-22 04:41:36 UTC)");
        assert_eq!(get("feature_compat"), "0x0000003c (has_journal, ext_attr, resize_inode, dir_index)");
        assert_eq!(get("feature_incompat"), "0x00080000 (unknown 0x80000)");
        assert_eq!(get("uuid"), "11111111-1111-1111-1111-111111111111");
        assert_eq!(get("volume_name"), "\"root\\xff\"");
        assert_eq!(get("def_hash_version"), "1 (half_md4)");
        assert_eq!(get("log_block_size"), "0 (1024-byte blocks)");
        assert_eq!(get("mkfs_time"), "0 (1970-01-01 00:00:00 UTC)");
        assert!(get("reserved").starts_with("sha256 "), "{}", get("reserved"));
        assert_eq!(get("jnl_blocks"), "68 zero bytes");
        assert_eq!(fields.first().unwrap().0, "inodes_count");
        assert_eq!(fields.last().unwrap().0, "checksum");
    }

    fn superblock(blocks: u64, sparse: bool) -> Superblock {
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        raw[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        raw[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes());
        raw[0x4..0x8].copy_from_slice(&(blocks as u32).to_le_bytes());
        raw[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
        raw[0x28..0x2C].copy_from_slice(&8192u32.to_le_bytes());
        raw[0x0..0x4].copy_from_slice(&(8192 * blocks.div_ceil(32768) as u32).to_le_bytes());
        raw[0x4C] = 1;
        raw[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        raw[0x54] = 11;
        raw[0x5C] = 0x10;
        raw[0x64] = u8::from(sparse);
        raw[0xCE] = 7;
        Superblock::parse(raw, blocks * 4096).unwrap()
    }

    #[test]
    fn sparse_super_backup_groups() {
        let superblock = superblock(100 * 32768, true);
        let groups: Vec<u32> = (0..100).filter(|&g| superblock.has_superblock(g)).collect();
        assert_eq!(groups, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
        assert!(!superblock.has_superblock(u32::MAX));
        let dense = self::superblock(4 * 32768, false);
        assert!((0..4).all(|g| dense.has_superblock(g)));
    }

    #[test]
    fn group_metadata_locations() {
        let superblock = superblock(24 * 32768, true);
        assert_eq!(superblock.group_count, 24);
        assert_eq!(superblock.descriptor_blocks(), 1);
        assert_eq!(superblock.inode_table_blocks(), 512);
        assert_eq!(superblock.descriptor_block_location(0), 1);
        assert_eq!(superblock.group_metadata(0), [(0, 1, true), (1, 8, false)]);
        assert_eq!(superblock.group_metadata(3), [(3 * 32768, 1, true), (3 * 32768 + 1, 8, false)]);
        assert_eq!(superblock.group_metadata(2), []);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let mut raw = superblock(32768, true).raw;
        raw[0x62] = 0x1; // encrypt (0x10000)
        raw[0x61] = 0x80; // inline_data (0x8000)
        let error = Superblock::parse(raw.clone(), 32768 * 4096).unwrap_err();
        assert!(
            matches!(&error, Ext4ReadError::Unsupported { feature } if feature == "inline_data, encrypt"),
            "{error}"
        );
        let mut bad_magic = superblock(32768, true).raw;
        bad_magic[0x38] = 0;
        let error = Superblock::parse(bad_magic, 32768 * 4096).unwrap_err();
        assert!(error.to_string().contains("magic"), "{error}");
        let error = Superblock::parse(superblock(32768, true).raw, 32767 * 4096).unwrap_err();
        assert!(error.to_string().contains("do not fit"), "{error}");
    }
}
