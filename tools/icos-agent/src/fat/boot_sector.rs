//! The boot sector of a FAT volume (the BIOS parameter block, Microsoft's FAT specification),
//! parsed once for the writer ([`super`]) and for `icos diff`.

/// The fields of a boot sector that say where everything is, in sectors and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSector {
    pub bytes_per_sector: u64,
    pub sectors_per_cluster: u64,
    pub reserved_sectors: u64,
    pub fats: u64,
    /// Root directory entries (FAT12/16; 0 on FAT32, whose root is a cluster chain).
    pub root_entries: u64,
    pub total_sectors: u64,
    pub sectors_per_fat: u64,
    /// FAT32's layout: the 16-bit sectors-per-FAT field is 0.
    pub fat32: bool,
    /// FAT32: the first cluster of the root directory, the FSInfo and backup boot sectors.
    pub root_cluster: u32,
    pub fs_info_sector: u64,
    pub backup_boot_sector: u64,
}

fn u16_at(boot: &[u8], offset: usize) -> u64 {
    u64::from(u16::from_le_bytes([boot[offset], boot[offset + 1]]))
}

fn u32_at(boot: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([boot[offset], boot[offset + 1], boot[offset + 2], boot[offset + 3]])
}

impl BootSector {
    /// The boot sector in `boot` (its first 512 bytes); `None` when it is shorter or names no
    /// sector or cluster size.
    pub fn parse(boot: &[u8]) -> Option<BootSector> {
        if boot.len() < 512 {
            return None;
        }
        let fat32 = u16_at(boot, 22) == 0;
        let sector = BootSector {
            bytes_per_sector: u16_at(boot, 11),
            sectors_per_cluster: u64::from(boot[13]),
            reserved_sectors: u16_at(boot, 14),
            fats: u64::from(boot[16]),
            root_entries: u16_at(boot, 17),
            total_sectors: match u16_at(boot, 19) {
                0 => u64::from(u32_at(boot, 32)),
                small => small,
            },
            sectors_per_fat: if fat32 { u64::from(u32_at(boot, 36)) } else { u16_at(boot, 22) },
            fat32,
            root_cluster: if fat32 { u32_at(boot, 44) } else { 0 },
            fs_info_sector: if fat32 { u16_at(boot, 48) } else { 0 },
            backup_boot_sector: if fat32 { u16_at(boot, 50) } else { 0 },
        };
        (sector.bytes_per_sector != 0 && sector.sectors_per_cluster != 0).then_some(sector)
    }

    pub fn cluster_size(&self) -> u64 {
        self.sectors_per_cluster * self.bytes_per_sector
    }

    /// Byte offset of the first FAT.
    pub fn fat_start(&self) -> u64 {
        self.reserved_sectors * self.bytes_per_sector
    }

    /// Bytes of one FAT.
    pub fn fat_bytes(&self) -> u64 {
        self.sectors_per_fat * self.bytes_per_sector
    }

    /// Byte offset of the FAT12/16 root directory (the data region on FAT32).
    pub fn root_start(&self) -> u64 {
        self.fat_start() + self.fats * self.fat_bytes()
    }

    /// Bytes of the FAT12/16 root directory, whole sectors (0 on FAT32).
    pub fn root_bytes(&self) -> u64 {
        (self.root_entries * 32).next_multiple_of(self.bytes_per_sector)
    }

    /// Byte offset of cluster 2, the first of the data region.
    pub fn data_start(&self) -> u64 {
        self.root_start() + self.root_bytes()
    }

    /// The number of data clusters.
    pub fn clusters(&self) -> u64 {
        (self.total_sectors * self.bytes_per_sector).saturating_sub(self.data_start()) / self.cluster_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat32_and_fat16_layouts() {
        let mut boot = [0u8; 512];
        boot[11..13].copy_from_slice(&512u16.to_le_bytes());
        boot[13] = 1;
        boot[14..16].copy_from_slice(&32u16.to_le_bytes());
        boot[16] = 2;
        boot[32..36].copy_from_slice(&204800u32.to_le_bytes());
        boot[36..40].copy_from_slice(&1576u32.to_le_bytes());
        boot[44..48].copy_from_slice(&2u32.to_le_bytes());
        boot[48..50].copy_from_slice(&1u16.to_le_bytes());
        boot[50..52].copy_from_slice(&6u16.to_le_bytes());
        let fat32 = BootSector::parse(&boot).unwrap();
        assert!(fat32.fat32);
        assert_eq!((fat32.fat_start(), fat32.data_start(), fat32.root_bytes()), (32 * 512, (32 + 2 * 1576) * 512, 0));
        assert_eq!(fat32.clusters(), 204800 - 32 - 2 * 1576);
        assert_eq!((fat32.root_cluster, fat32.fs_info_sector, fat32.backup_boot_sector), (2, 1, 6));
        boot[17..19].copy_from_slice(&512u16.to_le_bytes());
        boot[19..21].copy_from_slice(&20000u16.to_le_bytes());
        boot[22..24].copy_from_slice(&20u16.to_le_bytes());
        let fat16 = BootSector::parse(&boot).unwrap();
        assert!(!fat16.fat32);
        assert_eq!((fat16.total_sectors, fat16.sectors_per_fat, fat16.root_bytes()), (20000, 20, 512 * 32));
        assert_eq!(fat16.fs_info_sector, 0);
        boot[13] = 0;
        assert_eq!(BootSector::parse(&boot), None);
        assert_eq!(BootSector::parse(&boot[..511]), None);
    }
}
