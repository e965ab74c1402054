//! Directory blocks, read linearly: every block is a chain of `ext4_dir_entry_2` records.
//!
//! Hash-indexed (htree) directories need no special case: the index root hides in the `..`
//! entry, whose record spans the rest of block 0, and index nodes are one record with inode 0
//! spanning their block; the metadata_csum tail is a 12-byte record with inode 0. Records with
//! inode 0 are unused space, so skipping them leaves exactly the names.

use super::bytes::{printable, slice_at, u16_at, u32_at, u8_at};

/// Inode number, record length, name length and file type.
const HEADER_SIZE: usize = 8;

/// A record length as stored: 16 bits, which for 64 KiB blocks cannot say 65536, so there the
/// low 2 bits (always 0 in a length, which is a multiple of 4) carry bits 16 and 17
/// (ext2fs_get_rec_len).
fn record_length(stored: u16, block_size: usize) -> usize {
    let stored = usize::from(stored);
    if block_size < 65536 {
        return stored;
    }
    if stored == 65535 || stored == 0 {
        return block_size;
    }
    (stored & 65532) | ((stored & 3) << 16)
}

/// Appends the (name, inode) entries of one directory block to `entries`, leaving out `.`,
/// `..` and unused records. Errors describe what is wrong, for the caller to place.
pub(super) fn parse_block(block: &[u8], entries: &mut Vec<(Vec<u8>, u32)>) -> Result<(), String> {
    let mut position = 0;
    while position < block.len() {
        let Some(header) = slice_at(block, position, HEADER_SIZE) else {
            return Err(format!("the entry at byte {position} has no room for its 8-byte header"));
        };
        let inode = u32_at(header, 0);
        let length = record_length(u16_at(header, 4), block.len());
        let name_length = usize::from(u8_at(header, 6));
        // Lengths must be multiples of 4 and stay inside the block, or the chain is broken;
        // a length of 0 would also never end.
        if length < HEADER_SIZE || length % 4 != 0 || length > block.len() - position {
            return Err(format!(
                "the entry at byte {position} has the record length {length}, which does not fit the {}-byte block",
                block.len()
            ));
        }
        if inode != 0 {
            if HEADER_SIZE + name_length > length {
                return Err(format!(
                    "the entry at byte {position} has a {name_length}-byte name in a {length}-byte record"
                ));
            }
            let name = &block[position + HEADER_SIZE..position + HEADER_SIZE + name_length];
            if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                return Err(format!(
                    "the entry at byte {position} has the name \"{}\", which is empty or holds '/' or NUL",
                    printable(name)
                ));
            }
            if name != b"." && name != b".." {
                entries.push((name.to_vec(), inode));
            }
        }
        position += length;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(inode: u32, length: u16, name: &[u8], file_type: u8) -> Vec<u8> {
        let mut bytes = inode.to_le_bytes().to_vec();
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.push(name.len() as u8);
        bytes.push(file_type);
        bytes.extend_from_slice(name);
        bytes.resize(usize::from(length), 0);
        bytes
    }

    fn parse(block: &[u8]) -> Result<Vec<(Vec<u8>, u32)>, String> {
        let mut entries = Vec::new();
        parse_block(block, &mut entries).map(|()| entries)
    }

    #[test]
    fn linear_block_with_checksum_tail() {
        let block = [
            record(2, 12, b".", 2),
            record(2, 12, b"..", 2),
            record(12, 16, b"hostname", 1),
            record(0, 12, b"", 0),
            record(13, 1024 - 52 - 12, b"passwd", 1),
            // The metadata_csum tail: inode 0, length 12, name length 0, type 0xDE.
            record(0, 12, b"", 0xDE),
        ]
        .concat();
        assert_eq!(block.len(), 1024);
        assert_eq!(parse(&block).unwrap(), [(b"hostname".to_vec(), 12), (b"passwd".to_vec(), 13)]);
    }

    #[test]
    fn htree_index_blocks_hold_no_names() {
        // dx_root: `.`, then `..` spanning the block with the index inside its record.
        let mut root = [record(5, 12, b".", 2), record(2, 1012, b"..", 2)].concat();
        root[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(parse(&root).unwrap(), []);
        // dx_node: one unused record spanning the block.
        let mut node = record(0, 1024, b"", 0);
        node[12..20].copy_from_slice(&[9; 8]);
        assert_eq!(parse(&node).unwrap(), []);
    }

    #[test]
    fn broken_records_are_errors() {
        let cases = [
            (record(12, 0, b"", 1), "record length 0"),
            (record(12, 10, b"a", 1), "record length 10"),
            ([record(12, 1020, b"a", 1), vec![0; 4]].concat(), "no room"),
            ([record(12, 1012, b"a", 1), record(12, 16, b"b", 1)].concat(), "does not fit"),
            (record(12, 12, b"abcdefgh", 1), "8-byte name in a 12-byte record"),
            (record(12, 1024, b"a/b", 1), "holds '/'"),
            (record(12, 1024, b"", 1), "empty"),
        ];
        for (mut block, expected) in cases {
            block.resize(1024, 0);
            let error = parse(&block).unwrap_err();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn record_lengths_of_64k_blocks() {
        assert_eq!(record_length(4096, 4096), 4096);
        assert_eq!(record_length(0, 65536), 65536);
        assert_eq!(record_length(65535, 65536), 65536);
        assert_eq!(record_length(65532 | 1, 65536), 65532 + 65536);
        assert_eq!(record_length(12, 65536), 12);
    }
}
