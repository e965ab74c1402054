//! Extended attributes: in the inode after its extra fields, and in one block that i_file_acl
//! names (which inodes with equal attributes may share).
//!
//! Both places hold a list of `ext4_xattr_entry` records ended by 4 zero bytes; the values lie
//! elsewhere in the same area, at offsets from the first entry (in the inode) or from the start
//! of the block. Values are returned as stored: POSIX ACLs in ext4's compact format, as
//! `debugfs ea_list` shows them (the kernel expands them for getxattr).

use super::bytes::{slice_at, u16_at, u32_at, u8_at};
use super::{Ext4ReadError, Problem};

const MAGIC: u32 = 0xEA02_0000;
/// Magic, reference count, block count, hash, checksum and reserved words.
const BLOCK_HEADER_SIZE: usize = 32;
const ENTRY_HEADER_SIZE: usize = 16;

/// Attributes as (full name, value) pairs.
pub(super) type Attributes = Vec<(Vec<u8>, Vec<u8>)>;

/// Name prefixes by e_name_index (the kernel's ext4_xattr_handler_map).
fn prefix(index: u8) -> Option<&'static str> {
    Some(match index {
        0 => "",
        1 => "user.",
        2 => "system.posix_acl_access",
        3 => "system.posix_acl_default",
        4 => "trusted.",
        6 => "security.",
        7 => "system.",
        8 => "system.richacl",
        _ => return None,
    })
}

/// The full attribute name: the prefix that the index stands for and the stored rest.
fn full_name(index: u8, suffix: &[u8]) -> Vec<u8> {
    let mut name = match prefix(index) {
        Some(prefix) => prefix.as_bytes().to_vec(),
        // Unknown to this reader: keep the index visible rather than guess a namespace.
        None => format!("(name index {index})").into_bytes(),
    };
    name.extend_from_slice(suffix);
    name
}

/// The attributes in the inode: `area` is what follows the inode's extra fields. No magic
/// number there means no attributes.
pub(super) fn in_inode(area: &[u8]) -> Result<Attributes, Problem> {
    if area.len() < 4 || u32_at(area, 0) != MAGIC {
        return Ok(Vec::new());
    }
    let entries = &area[4..];
    parse_entries(entries, 0, entries).map_err(|problem| match problem {
        Problem::Corrupt(text) => Problem::Corrupt(format!("in-inode extended attributes: {text}")),
        other => other,
    })
}

/// The attributes in an extended attribute block.
pub(super) fn in_block(block: &[u8], number: u64) -> Result<Attributes, Problem> {
    let corrupt = |text: String| Problem::Corrupt(format!("extended attribute block {number}: {text}"));
    if block.len() < BLOCK_HEADER_SIZE + 4 {
        return Err(corrupt(format!("{} bytes are too few", block.len())));
    }
    let magic = u32_at(block, 0);
    if magic != MAGIC {
        return Err(corrupt(format!("the magic number is {magic:#010x}, not {MAGIC:#010x}")));
    }
    let blocks = u32_at(block, 8);
    if blocks != 1 {
        return Err(corrupt(format!("the header says it spans {blocks} blocks, not 1")));
    }
    parse_entries(block, BLOCK_HEADER_SIZE, block).map_err(|problem| match problem {
        Problem::Corrupt(text) => corrupt(text),
        other => other,
    })
}

/// The entries from byte `first` of `area` on, with value offsets counted from the start of
/// `values`.
fn parse_entries(area: &[u8], first: usize, values: &[u8]) -> Result<Attributes, Problem> {
    let corrupt = |text: String| Problem::Corrupt(text);
    let mut attributes = Vec::new();
    let mut position = first;
    loop {
        // Every record starts on a 4-byte boundary and is at least 16 bytes long, so the walk
        // moves forward and ends at the end of the area at the latest.
        let Some(head) = slice_at(area, position, 4) else {
            return Err(corrupt(format!("the list has no end marker before byte {}", area.len())));
        };
        if u32_at(head, 0) == 0 {
            return Ok(attributes);
        }
        let Some(entry) = slice_at(area, position, ENTRY_HEADER_SIZE) else {
            return Err(corrupt(format!("the entry at byte {position} is cut off")));
        };
        let name_length = usize::from(u8_at(entry, 0));
        let index = u8_at(entry, 1);
        let value_offset = usize::from(u16_at(entry, 2));
        let value_inode = u32_at(entry, 4);
        let value_size = u32_at(entry, 8) as usize;
        let Some(suffix) = slice_at(area, position + ENTRY_HEADER_SIZE, name_length) else {
            return Err(corrupt(format!("the name of the entry at byte {position} is cut off")));
        };
        let name = full_name(index, suffix);
        if value_inode != 0 {
            // ea_inode: large values in inodes of their own; the filesystem check refuses the
            // feature, so this is an inode that claims it without the filesystem having it.
            return Err(Problem::Fail(Ext4ReadError::Unsupported {
                feature: format!(
                    "ea_inode (the value of {} is in inode {value_inode})",
                    String::from_utf8_lossy(&name)
                ),
            }));
        }
        let value = if value_size == 0 {
            Vec::new()
        } else {
            match slice_at(values, value_offset, value_size) {
                Some(value) => value.to_vec(),
                None => {
                    return Err(corrupt(format!(
                        "the {value_size}-byte value of {} at offset {value_offset} is outside the {} bytes of values",
                        String::from_utf8_lossy(&name),
                        values.len()
                    )))
                }
            }
        };
        attributes.push((name, value));
        position += (ENTRY_HEADER_SIZE + name_length).div_ceil(4) * 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u8, name: &[u8], value_offset: u16, value_size: u32) -> Vec<u8> {
        let mut bytes = vec![name.len() as u8, index];
        bytes.extend_from_slice(&value_offset.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&value_size.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(name);
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        bytes
    }

    fn problem_text(problem: Problem) -> String {
        match problem {
            Problem::Corrupt(text) => text,
            Problem::Fail(error) => error.to_string(),
        }
    }

    #[test]
    fn attributes_in_the_inode() {
        // 96 bytes after a 256-byte inode's 32 bytes of extra fields.
        let mut area = MAGIC.to_le_bytes().to_vec();
        area.extend(entry(1, b"foo", 80, 3));
        area.extend(entry(2, b"", 84, 4));
        area.extend([0; 4]);
        area.resize(96, 0);
        // Value offsets count from the first entry, which is 4 bytes in.
        area[84..87].copy_from_slice(b"bar");
        area[88..92].copy_from_slice(&[1, 0, 0, 0]);
        let attributes = in_inode(&area).map_err(problem_text).unwrap();
        assert_eq!(
            attributes,
            [(b"user.foo".to_vec(), b"bar".to_vec()), (b"system.posix_acl_access".to_vec(), vec![1, 0, 0, 0])]
        );
        assert!(in_inode(&[0; 96]).map_err(problem_text).unwrap().is_empty());
        assert!(in_inode(&[]).map_err(problem_text).unwrap().is_empty());
    }

    #[test]
    fn attributes_in_a_block() {
        let mut block = vec![0u8; 1024];
        block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        block[4..8].copy_from_slice(&1u32.to_le_bytes());
        block[8..12].copy_from_slice(&1u32.to_le_bytes());
        let entries = [entry(6, b"capability", 1000, 20), entry(7, b"data", 0, 0), entry(9, b"x", 0, 0)].concat();
        block[32..32 + entries.len()].copy_from_slice(&entries);
        block[1000..1020].copy_from_slice(&[7; 20]);
        let attributes = in_block(&block, 9).map_err(problem_text).unwrap();
        assert_eq!(
            attributes,
            [
                (b"security.capability".to_vec(), vec![7; 20]),
                (b"system.data".to_vec(), vec![]),
                (b"(name index 9)x".to_vec(), vec![])
            ]
        );
    }

    #[test]
    fn corrupt_lists_are_errors() {
        let mut block = vec![0u8; 1024];
        block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        block[8..12].copy_from_slice(&1u32.to_le_bytes());
        let mut outside = block.clone();
        let bad = entry(1, b"big", 1020, 8);
        outside[32..32 + bad.len()].copy_from_slice(&bad);
        let error = problem_text(in_block(&outside, 9).unwrap_err());
        assert!(error.contains("outside the 1024 bytes"), "{error}");
        // Entries up to the very end and no end marker.
        let mut endless = block.clone();
        for position in (32..1024).step_by(20) {
            let record = entry(1, b"abcd", 0, 0);
            let end = (position + 20).min(1024);
            endless[position..end].copy_from_slice(&record[..end - position]);
        }
        let error = problem_text(in_block(&endless, 9).unwrap_err());
        assert!(error.contains("cut off") || error.contains("end marker"), "{error}");
        let mut wrong = block.clone();
        wrong[8] = 2;
        let error = problem_text(in_block(&wrong, 9).unwrap_err());
        assert!(error.contains("spans 2 blocks"), "{error}");
        let mut ea_inode = block;
        let mut record = entry(1, b"big", 0, 100_000);
        record[4..8].copy_from_slice(&77u32.to_le_bytes());
        ea_inode[32..32 + record.len()].copy_from_slice(&record);
        let error = problem_text(in_block(&ea_inode, 9).unwrap_err());
        assert!(error.contains("ea_inode"), "{error}");
    }
}
