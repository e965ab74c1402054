//! The binary structures of an LVM2 physical volume (lvm2's `lib/format_text/layout.h`, all
//! integers little-endian):
//!
//! - sector 1: the label header (`LABELONE`, its sector number, a CRC of the rest of the sector,
//!   the offset of the PV header, `LVM2 001`), followed by the PV header: the PV UUID, the device
//!   size, a zero-terminated list of data areas, a zero-terminated list of metadata areas, and the
//!   header extension (version 2, flags, an empty list of bootloader areas);
//! - at 4 KiB: the metadata area, opened by a 512-byte header (a CRC of the rest, a magic string,
//!   version 1, its own offset and size, and the location, size and CRC of the metadata text),
//!   then the text itself;
//! - from `pe_start`: the physical extents.
//!
//! Every CRC is lvm2's `calc_crc`: the reflected CRC-32 (polynomial 0xEDB88320) started from
//! 0xF597A6CF, without the final inversion of the usual CRC-32.

use super::id::LvmId;

pub const SECTOR_SIZE: u64 = 512;
/// lvm2 writes its label in the second sector; it looks in the first four.
const LABEL_SECTOR: u64 = 1;
const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// The PV header follows the 32-byte label header.
const PV_HEADER_OFFSET: usize = 32;
/// The label CRC covers the sector from the offset field (byte 20) on.
const LABEL_CRC_START: usize = 20;
/// Version and flag of the PV header extension: the PV belongs to a volume group.
const PV_EXTENSION_VERSION: u32 = 2;
const PV_EXTENSION_USED: u32 = 1;

/// Where the one metadata area starts, as pvcreate puts it.
pub const METADATA_AREA_OFFSET: u64 = 4096;
pub const METADATA_HEADER_SIZE: u64 = 512;
const METADATA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const METADATA_VERSION: u32 = 1;
const INITIAL_CRC: u32 = 0xF597_A6CF;

/// lvm2's `calc_crc(INITIAL_CRC, bytes)`.
pub fn lvm_crc(bytes: &[u8]) -> u32 {
    // crc32fast computes !crc(!initial, bytes); lvm2 leaves out both inversions.
    let mut hasher = crc32fast::Hasher::new_with_initial(!INITIAL_CRC);
    hasher.update(bytes);
    !hasher.finalize()
}

/// A little-endian writer into a fixed buffer.
struct Cursor<'a> {
    bytes: &'a mut [u8],
    position: usize,
}

impl Cursor<'_> {
    fn put(&mut self, value: &[u8]) {
        self.bytes[self.position..self.position + value.len()].copy_from_slice(value);
        self.position += value.len();
    }
    fn u32(&mut self, value: u32) {
        self.put(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }
}

/// What the label sector describes.
pub struct PhysicalVolumeLabel {
    pub pv_uuid: LvmId,
    /// The device size in bytes.
    pub device_size: u64,
    /// Where the first extent starts, in bytes.
    pub pe_start: u64,
    /// The size of the metadata area at [`METADATA_AREA_OFFSET`], header included.
    pub metadata_area_size: u64,
}

impl PhysicalVolumeLabel {
    /// The byte offset of the label sector.
    pub fn offset() -> u64 {
        LABEL_SECTOR * SECTOR_SIZE
    }

    /// The label sector: label header and PV header.
    pub fn sector(&self) -> [u8; SECTOR_SIZE as usize] {
        let mut sector = [0u8; SECTOR_SIZE as usize];
        let mut cursor = Cursor { bytes: &mut sector, position: 0 };
        cursor.put(LABEL_ID);
        cursor.u64(LABEL_SECTOR);
        cursor.u32(0); // the CRC, below
        cursor.u32(PV_HEADER_OFFSET as u32);
        cursor.put(LABEL_TYPE);
        debug_assert_eq!(cursor.position, PV_HEADER_OFFSET);
        cursor.put(self.pv_uuid.as_bytes());
        cursor.u64(self.device_size);
        // Data areas: one from pe_start, size 0 meaning "to the end of the device"; then metadata
        // areas: one. Each list ends with a zero entry.
        for (offset, size) in [(self.pe_start, 0), (0, 0), (METADATA_AREA_OFFSET, self.metadata_area_size), (0, 0)] {
            cursor.u64(offset);
            cursor.u64(size);
        }
        cursor.u32(PV_EXTENSION_VERSION);
        cursor.u32(PV_EXTENSION_USED);
        // The bootloader areas: none, so only the terminating zero entry.
        cursor.u64(0);
        cursor.u64(0);
        let crc = lvm_crc(&sector[LABEL_CRC_START..]);
        sector[16..20].copy_from_slice(&crc.to_le_bytes());
        sector
    }
}

/// The metadata area header for one copy of the metadata `text` stored right after it. `text`
/// is what lvm2 stores: the metadata followed by a NUL byte.
pub fn metadata_area_header(metadata_area_size: u64, text: &[u8]) -> [u8; METADATA_HEADER_SIZE as usize] {
    let mut header = [0u8; METADATA_HEADER_SIZE as usize];
    let mut cursor = Cursor { bytes: &mut header, position: 0 };
    cursor.u32(0); // the CRC, below
    cursor.put(METADATA_MAGIC);
    cursor.u32(METADATA_VERSION);
    cursor.u64(METADATA_AREA_OFFSET);
    cursor.u64(metadata_area_size);
    // raw_locns: the text (offset from the area's start, size, CRC, flags), then the zero entry.
    cursor.u64(METADATA_HEADER_SIZE);
    cursor.u64(text.len() as u64);
    cursor.u32(lvm_crc(text));
    cursor.u32(0);
    let crc = lvm_crc(&header[4..]);
    header[..4].copy_from_slice(&crc.to_le_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lvm2's calc_crc written bit by bit, independently of crc32fast.
    fn bitwise_calc_crc(initial: u32, bytes: &[u8]) -> u32 {
        let mut state = initial;
        for &byte in bytes {
            state ^= u32::from(byte);
            for _ in 0..8 {
                state = if state & 1 != 0 { (state >> 1) ^ 0xEDB8_8320 } else { state >> 1 };
            }
        }
        state
    }

    #[test]
    fn lvm_crc_is_lvm2s_calc_crc() {
        // The bitwise reference is the usual CRC-32 once started from and inverted with all ones.
        assert_eq!(!bitwise_calc_crc(!0, b"123456789"), 0xCBF4_3926);
        let long: Vec<u8> = (0..5000u32).map(|n| (n * 7 + n / 13) as u8).collect();
        for input in [&b""[..], b"LABELONE", b"123456789", &long] {
            assert_eq!(lvm_crc(input), bitwise_calc_crc(INITIAL_CRC, input));
        }
    }

    #[test]
    fn label_sector_layout() {
        let label = PhysicalVolumeLabel {
            pv_uuid: "2Ryq3EmXTJdgLrc0s5Fq!#9h3ZbTWuHl".parse().unwrap(),
            device_size: 100 << 20,
            pe_start: 1 << 20,
            metadata_area_size: (1 << 20) - 4096,
        };
        let sector = label.sector();
        assert_eq!(&sector[..8], b"LABELONE");
        assert_eq!(u64::from_le_bytes(sector[8..16].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(sector[16..20].try_into().unwrap()), lvm_crc(&sector[20..]));
        assert_eq!(u32::from_le_bytes(sector[20..24].try_into().unwrap()), 32);
        assert_eq!(&sector[24..32], b"LVM2 001");
        assert_eq!(&sector[32..64], b"2Ryq3EmXTJdgLrc0s5Fq!#9h3ZbTWuHl");
        let u64_at = |offset: usize| u64::from_le_bytes(sector[offset..offset + 8].try_into().unwrap());
        assert_eq!(u64_at(64), 100 << 20);
        assert_eq!([u64_at(72), u64_at(80), u64_at(88), u64_at(96)], [1 << 20, 0, 0, 0]);
        assert_eq!([u64_at(104), u64_at(112), u64_at(120), u64_at(128)], [4096, (1 << 20) - 4096, 0, 0]);
        assert_eq!(&sector[136..144], &[2, 0, 0, 0, 1, 0, 0, 0]);
        assert!(sector[144..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn metadata_header_layout() {
        let header = metadata_area_header(1044480, b"vg {\n}\n\0");
        assert_eq!(u32::from_le_bytes(header[..4].try_into().unwrap()), lvm_crc(&header[4..]));
        assert_eq!(&header[4..20], b" LVM2 x[5A%r0N*>");
        let u64_at = |offset: usize| u64::from_le_bytes(header[offset..offset + 8].try_into().unwrap());
        assert_eq!([u64_at(24), u64_at(32), u64_at(40), u64_at(48)], [4096, 1044480, 512, 8]);
        assert_eq!(u32::from_le_bytes(header[56..60].try_into().unwrap()), lvm_crc(b"vg {\n}\n\0"));
        assert!(header[64..].iter().all(|&byte| byte == 0));
    }
}
