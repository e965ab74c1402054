//! Inodes: the fields of `struct ext4_inode` that the reader reports or follows.

use super::bytes::{u16_at, u32_at};
use super::Ext4Time;

/// The fixed part of every inode; the extra fields (i_extra_isize bytes) and in-inode extended
/// attributes follow it when the inode size is larger.
pub(super) const BASE_INODE_SIZE: usize = 128;

pub(super) const S_IFMT: u16 = 0xF000;
pub(super) const S_IFCHR: u16 = 0x2000;
pub(super) const S_IFDIR: u16 = 0x4000;
pub(super) const S_IFBLK: u16 = 0x6000;
pub(super) const S_IFREG: u16 = 0x8000;
pub(super) const S_IFLNK: u16 = 0xA000;

/// i_blocks counts file system blocks rather than 512-byte sectors (with huge_file).
const HUGE_FILE_FL: u32 = 0x4_0000;
/// i_block holds an extent tree rather than a block map.
pub(super) const EXTENTS_FL: u32 = 0x8_0000;
/// The content is in i_block and the system.data attribute.
pub(super) const INLINE_DATA_FL: u32 = 0x1000_0000;

/// What the superblock says about how inodes are laid out.
#[derive(Debug, Clone, Copy)]
pub(super) struct InodeFormat {
    pub block_size: u64,
    /// huge_file: i_blocks has a high half, and may count blocks rather than sectors.
    pub huge_file: bool,
    /// large_dir: directories use i_size_high too.
    pub large_dir: bool,
    /// 64bit: block numbers, so i_file_acl, have a high half.
    pub bits64: bool,
}

/// One inode as read from its inode table.
#[derive(Debug, Clone)]
pub(super) struct Inode {
    pub number: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    pub atime: Ext4Time,
    pub ctime: Ext4Time,
    pub mtime: Ext4Time,
    pub crtime: Option<Ext4Time>,
    /// Space the inode takes, in 512-byte units, its extended attribute block included.
    pub sectors: u64,
    /// The 60 bytes of i_block: extent tree root, block map, device number or a short
    /// symbolic link target.
    pub block: [u8; 60],
    /// The block holding extended attributes that do not fit in the inode, or 0.
    pub xattr_block: u64,
    /// The bytes after the extra fields, where in-inode extended attributes live.
    pub xattr_area: Vec<u8>,
}

impl Inode {
    /// Parses the `raw` bytes of inode `number` (the filesystem's inode size, at least 128).
    pub fn parse(number: u32, raw: &[u8], format: InodeFormat) -> Result<Inode, String> {
        if raw.len() < BASE_INODE_SIZE {
            return Err(format!("the inode is {} bytes, less than 128", raw.len()));
        }
        let room = raw.len() - BASE_INODE_SIZE;
        // Inodes of 128 bytes have no extra fields at all.
        let extra_size = if room >= 2 { usize::from(u16_at(raw, 0x80)) } else { 0 };
        if extra_size > room {
            return Err(format!("i_extra_isize {extra_size} is larger than the {room} bytes after the base inode"));
        }
        // An extra field exists when i_extra_isize covers it entirely.
        let extra = |offset: usize| (offset + 4 <= BASE_INODE_SIZE + extra_size).then(|| u32_at(raw, offset));
        let flags = u32_at(raw, 0x20);
        let sectors_lo = u64::from(u32_at(raw, 0x1C));
        let sectors = if format.huge_file {
            let count = u64::from(u16_at(raw, 0x74)) << 32 | sectors_lo;
            if flags & HUGE_FILE_FL != 0 {
                count.saturating_mul(format.block_size / 512)
            } else {
                count
            }
        } else {
            sectors_lo
        };
        let mode = u16_at(raw, 0x0);
        // i_size_high was i_dir_acl for directories before large_dir (the kernel's ext4_isize).
        let size_high = if mode & S_IFMT == S_IFREG || format.large_dir { u64::from(u32_at(raw, 0x6C)) } else { 0 };
        // The high half of i_file_acl counts only with 64-bit block numbers.
        let xattr_block_high = if format.bits64 { u64::from(u16_at(raw, 0x76)) } else { 0 };
        let mut block = [0u8; 60];
        block.copy_from_slice(&raw[0x28..0x28 + 60]);
        Ok(Inode {
            number,
            mode,
            uid: u32::from(u16_at(raw, 0x78)) << 16 | u32::from(u16_at(raw, 0x2)),
            gid: u32::from(u16_at(raw, 0x7A)) << 16 | u32::from(u16_at(raw, 0x18)),
            size: size_high << 32 | u64::from(u32_at(raw, 0x4)),
            links: u16_at(raw, 0x1A),
            flags,
            atime: Ext4Time::decode(u32_at(raw, 0x8), extra(0x8C)),
            ctime: Ext4Time::decode(u32_at(raw, 0xC), extra(0x84)),
            mtime: Ext4Time::decode(u32_at(raw, 0x10), extra(0x88)),
            crtime: extra(0x90).map(|seconds| Ext4Time::decode(seconds, extra(0x94))),
            sectors,
            block,
            xattr_block: xattr_block_high << 32 | u64::from(u32_at(raw, 0x68)),
            xattr_area: raw[BASE_INODE_SIZE + extra_size..].to_vec(),
        })
    }

    pub fn file_type(&self) -> u16 {
        self.mode & S_IFMT
    }

    pub fn is_directory(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    /// i_block as 15 little-endian 32-bit words.
    pub fn block_word(&self, index: usize) -> u32 {
        u32_at(&self.block, index * 4)
    }

    /// Data blocks the inode holds, its extended attribute block excepted (which the kernel's
    /// ext4_inode_is_fast_symlink looks at).
    pub fn data_blocks_in_sectors(&self, block_size: u64) -> u64 {
        let xattr_sectors = if self.xattr_block != 0 { block_size / 512 } else { 0 };
        self.sectors.saturating_sub(xattr_sectors)
    }

    /// (major, minor) of a character or block device: the old 16-bit encoding in i_block[0]
    /// when it is not 0, else the new 32-bit one in i_block[1] (the kernel's old/new_decode_dev).
    pub fn device(&self) -> (u32, u32) {
        let old = self.block_word(0);
        if old != 0 {
            return ((old >> 8) & 0xff, old & 0xff);
        }
        let new = self.block_word(1);
        ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: InodeFormat = InodeFormat { block_size: 4096, huge_file: true, large_dir: false, bits64: true };

    fn raw_inode(size: usize, extra_isize: u16) -> Vec<u8> {
        let mut raw = vec![0u8; size];
        raw[0..2].copy_from_slice(&0o100644u16.to_le_bytes());
        raw[2..4].copy_from_slice(&0x86a0u16.to_le_bytes());
        raw[0x78..0x7A].copy_from_slice(&1u16.to_le_bytes());
        raw[0x18..0x1A].copy_from_slice(&0x0d40u16.to_le_bytes());
        raw[0x7A..0x7C].copy_from_slice(&3u16.to_le_bytes());
        raw[4..8].copy_from_slice(&5u32.to_le_bytes());
        raw[0x6C..0x70].copy_from_slice(&1u32.to_le_bytes());
        raw[0x10..0x14].copy_from_slice(&0x1234u32.to_le_bytes());
        if size > 128 {
            raw[0x80..0x82].copy_from_slice(&extra_isize.to_le_bytes());
            raw[0x88..0x8C].copy_from_slice(&7u32.to_le_bytes());
            raw[0x90..0x94].copy_from_slice(&10u32.to_le_bytes());
            raw[0x94..0x98].copy_from_slice(&(3u32 << 2).to_le_bytes());
        }
        raw
    }

    #[test]
    fn fields_with_high_halves() {
        let inode = Inode::parse(12, &raw_inode(256, 32), FORMAT).unwrap();
        assert_eq!(inode.mode, 0o100644);
        assert_eq!(inode.uid, 100_000);
        assert_eq!(inode.gid, 200_000);
        assert_eq!(inode.size, (1 << 32) + 5);
        assert_eq!(inode.mtime, Ext4Time::decode(0x1234, Some(7)));
        assert_eq!(inode.crtime, Some(Ext4Time { seconds: 10, nanoseconds: 3 }));
        assert_eq!(inode.xattr_area.len(), 256 - 128 - 32);
    }

    #[test]
    fn extra_fields_only_where_i_extra_isize_reaches() {
        // 20 bytes reach crtime but not crtime_extra.
        let inode = Inode::parse(12, &raw_inode(256, 20), FORMAT).unwrap();
        assert_eq!(inode.crtime, Some(Ext4Time::decode(10, None)));
        let inode = Inode::parse(12, &raw_inode(256, 16), FORMAT).unwrap();
        assert_eq!(inode.crtime, None);
        assert_eq!(inode.mtime, Ext4Time::decode(0x1234, Some(7)));
        let inode = Inode::parse(12, &raw_inode(128, 0), FORMAT).unwrap();
        assert_eq!(inode.crtime, None);
        assert_eq!(inode.mtime, Ext4Time::decode(0x1234, None));
        assert!(inode.xattr_area.is_empty());
        let error = Inode::parse(12, &raw_inode(256, 200), FORMAT).unwrap_err();
        assert!(error.contains("i_extra_isize 200"), "{error}");
    }

    #[test]
    fn device_numbers_in_both_encodings() {
        let mut inode = Inode::parse(12, &raw_inode(256, 32), FORMAT).unwrap();
        inode.block[0..4].copy_from_slice(&0x0405u32.to_le_bytes());
        assert_eq!(inode.device(), (4, 5));
        inode.block[0..4].copy_from_slice(&0u32.to_le_bytes());
        // 259:70000 as `debugfs stat` shows it: "(hex 103:11170)".
        let new: u32 = (70000 & 0xff) | (259 << 8) | ((70000 & !0xff) << 12);
        inode.block[4..8].copy_from_slice(&new.to_le_bytes());
        assert_eq!(inode.device(), (259, 70000));
    }
}
