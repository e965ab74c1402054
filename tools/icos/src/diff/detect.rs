//! What an artifact is, told from its first bytes, never from its name.

/// How many bytes [`detect`] looks at: enough for a GPT header on 4 KiB sectors.
pub const HEAD: usize = 8192;

const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const GPT_SIGNATURE: &[u8] = b"EFI PART";
/// The ext2/3/4 superblock starts at byte 1024; its magic is at offset 0x38 in it.
const EXT4_MAGIC_OFFSET: usize = 1024 + 0x38;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Zstd,
    Gzip,
    /// Recognised, but not something this tool can open.
    Xz,
    Tar,
    /// A GPT disk with this logical sector size.
    Gpt {
        sector: u64,
    },
    Ext4,
    Fat,
    Empty,
    Opaque,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Zstd => "zstd-compressed",
            Kind::Gzip => "gzip-compressed",
            Kind::Xz => "xz-compressed",
            Kind::Tar => "tar",
            Kind::Gpt { sector: 4096 } => "GPT disk (4096-byte sectors)",
            Kind::Gpt { .. } => "GPT disk",
            Kind::Ext4 => "ext4",
            Kind::Fat => "FAT",
            Kind::Empty => "empty",
            Kind::Opaque => "bytes",
        }
    }
}

/// The kind of the artifact whose first bytes are `head` (at least [`HEAD`] of them unless the
/// artifact is shorter). Compression first, then GPT before FAT, because the protective MBR of a
/// GPT disk has the same 0x55AA signature as a FAT boot sector.
pub fn detect(head: &[u8]) -> Kind {
    if head.is_empty() {
        Kind::Empty
    } else if head.starts_with(ZSTD_MAGIC) {
        Kind::Zstd
    } else if head.starts_with(GZIP_MAGIC) {
        Kind::Gzip
    } else if head.starts_with(XZ_MAGIC) {
        Kind::Xz
    } else if at(head, 512, GPT_SIGNATURE) {
        Kind::Gpt { sector: 512 }
    } else if at(head, 4096, GPT_SIGNATURE) {
        Kind::Gpt { sector: 4096 }
    } else if at(head, EXT4_MAGIC_OFFSET, &[0x53, 0xef]) {
        Kind::Ext4
    } else if is_tar(head) {
        Kind::Tar
    } else if is_fat(head) {
        Kind::Fat
    } else {
        Kind::Opaque
    }
}

fn at(head: &[u8], offset: usize, expected: &[u8]) -> bool {
    head.get(offset..offset + expected.len()) == Some(expected)
}

/// A ustar or GNU tar header with a valid checksum: the sum of its bytes with the checksum field
/// counted as spaces.
fn is_tar(head: &[u8]) -> bool {
    let Some(header) = head.get(..512) else { return false };
    if &header[257..262] != b"ustar" {
        return false;
    }
    let field = String::from_utf8_lossy(&header[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8) else {
        return false;
    };
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(index, &byte)| if (148..156).contains(&index) { 32 } else { u32::from(byte) })
        .sum();
    sum == stored
}

/// A FAT boot sector: the 0x55AA signature, a sector size and cluster size that FAT allows, and
/// the file-system type string of FAT12/16 (offset 54) or FAT32 (offset 82).
fn is_fat(head: &[u8]) -> bool {
    let Some(boot) = head.get(..512) else { return false };
    let bytes_per_sector = u16::from_le_bytes([boot[11], boot[12]]);
    let sectors_per_cluster = boot[13];
    boot[510..512] == [0x55, 0xaa]
        && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && sectors_per_cluster.is_power_of_two()
        && (boot[54..57] == *b"FAT" || boot[82..87] == *b"FAT32")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_content() {
        assert_eq!(detect(b""), Kind::Empty);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Kind::Zstd);
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Kind::Gzip);
        assert_eq!(detect(b"\xfd7zXZ\0rest"), Kind::Xz);
        assert_eq!(detect(b"hello\n"), Kind::Opaque);

        let mut disk = vec![0u8; HEAD];
        disk[510] = 0x55;
        disk[511] = 0xaa;
        disk[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(detect(&disk), Kind::Gpt { sector: 512 });
        let mut disk4k = vec![0u8; HEAD];
        disk4k[4096..4104].copy_from_slice(b"EFI PART");
        assert_eq!(detect(&disk4k), Kind::Gpt { sector: 4096 });

        let mut ext4 = vec![0u8; HEAD];
        ext4[1080] = 0x53;
        ext4[1081] = 0xef;
        assert_eq!(detect(&ext4), Kind::Ext4);

        let mut fat = vec![0u8; 512];
        fat[11..13].copy_from_slice(&512u16.to_le_bytes());
        fat[13] = 8;
        fat[82..87].copy_from_slice(b"FAT32");
        fat[510] = 0x55;
        fat[511] = 0xaa;
        assert_eq!(detect(&fat), Kind::Fat);
        // The same sector without a file-system type string is just bytes (an MBR).
        fat[82..87].fill(0);
        assert_eq!(detect(&fat), Kind::Opaque);

        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_path("a").unwrap();
        header.set_size(1);
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        let mut tar = builder.into_inner().unwrap();
        assert_eq!(detect(&tar), Kind::Tar);
        tar[0] ^= 1;
        assert_eq!(detect(&tar), Kind::Opaque, "a bad checksum is not a tar");
    }
}
