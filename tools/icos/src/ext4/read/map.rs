//! Where an inode's content lies: its extent tree, or the block map of inodes without extents
//! (ext2/ext3 style, which an ext4 filesystem may still hold).
//!
//! Every block number is checked against the filesystem before it is read, logical ranges must
//! increase, and every tree block may be visited once, so a corrupt or hostile tree ends in an
//! error rather than a crash or an endless walk.

use std::collections::HashSet;

use super::bytes::{u16_at, u32_at};
use super::{Ext4ReadError, Problem};

const EXTENT_MAGIC: u16 = 0xF30A;
/// The kernel's EXT4_MAX_EXTENT_DEPTH.
const MAX_EXTENT_DEPTH: u16 = 5;
/// Extent lengths above this mark uninitialised extents (allocated, reading as zeros).
const INITIALIZED_MAX_LENGTH: u16 = 32768;
/// Logical block numbers are 32 bits wide in an extent.
const LOGICAL_LIMIT: u64 = 1 << 32;
const HEADER_SIZE: usize = 12;
const ENTRY_SIZE: usize = 12;
/// i_block: 12 direct block pointers, then one single, double and triple indirect.
const DIRECT_BLOCKS: usize = 12;

/// Contiguous blocks of content: `length` blocks from logical block `logical` of the file lie
/// at block `physical` of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    /// False for uninitialised extents, whose blocks read as zeros whatever they hold.
    pub initialized: bool,
}

/// An inode's content blocks in logical order, and the blocks that map them (extent tree index
/// and leaf blocks, or indirect blocks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BlockMap {
    pub runs: Vec<Run>,
    pub tree_blocks: Vec<u64>,
}

/// The block numbers a map may use.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub block_size: u64,
    /// The first block after the primary superblock: no file may map that one or those before.
    pub first_valid: u64,
    pub blocks_count: u64,
}

impl Geometry {
    /// Checks that `count` blocks from `start` lie inside the filesystem.
    pub fn check(&self, start: u64, count: u64) -> Result<(), String> {
        let end = start.saturating_add(count);
        if start < self.first_valid || end > self.blocks_count {
            return Err(if count == 1 {
                format!(
                    "block {start} lies outside the filesystem's blocks {}..{}",
                    self.first_valid, self.blocks_count
                )
            } else {
                format!(
                    "blocks {start}..{end} lie outside the filesystem's blocks {}..{}",
                    self.first_valid, self.blocks_count
                )
            });
        }
        Ok(())
    }
}

/// Reads one whole block of the filesystem.
pub(super) type ReadBlock<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), Ext4ReadError> + 'a;

/// Collects runs in logical order, merging neighbours.
struct Builder<'g, 'r, 'a> {
    geometry: &'g Geometry,
    read_block: &'r mut ReadBlock<'a>,
    map: BlockMap,
    visited: HashSet<u64>,
    /// The first logical block not yet mapped: the next run must not start before it.
    next_logical: u64,
}

impl<'g, 'r, 'a> Builder<'g, 'r, 'a> {
    fn new(geometry: &'g Geometry, read_block: &'r mut ReadBlock<'a>) -> Self {
        Builder { geometry, read_block, map: BlockMap::default(), visited: HashSet::new(), next_logical: 0 }
    }
}

impl Builder<'_, '_, '_> {
    fn push(&mut self, logical: u64, physical: u64, length: u64, initialized: bool) -> Result<(), Problem> {
        if logical < self.next_logical {
            return Err(Problem::Corrupt(format!(
                "the extents overlap or are out of order: logical block {logical} comes after block {}",
                self.next_logical - 1
            )));
        }
        let end = logical + length;
        if end > LOGICAL_LIMIT {
            return Err(Problem::Corrupt(format!(
                "logical blocks {logical}..{end} go past the 2^32 blocks a file may have"
            )));
        }
        self.geometry
            .check(physical, length)
            .map_err(|problem| Problem::Corrupt(format!("logical block {logical}: {problem}")))?;
        self.next_logical = end;
        if let Some(last) = self.map.runs.last_mut() {
            if last.logical + last.length == logical
                && last.physical + last.length == physical
                && last.initialized == initialized
            {
                last.length += length;
                return Ok(());
            }
        }
        self.map.runs.push(Run { logical, physical, length, initialized });
        Ok(())
    }

    /// Reads tree block `block`, which must lie in the filesystem and not have been read yet.
    fn read_tree_block(&mut self, block: u64, what: &str) -> Result<Vec<u8>, Problem> {
        self.geometry.check(block, 1).map_err(|problem| Problem::Corrupt(format!("{what}: {problem}")))?;
        if !self.visited.insert(block) {
            return Err(Problem::Corrupt(format!("{what}: block {block} is used twice in the same tree")));
        }
        self.map.tree_blocks.push(block);
        let mut buffer = vec![0u8; self.geometry.block_size as usize];
        (self.read_block)(block, &mut buffer)?;
        Ok(buffer)
    }

    /// One extent tree node: `node` is i_block (the root) or a whole tree block.
    /// `depth`: what the parent says this node's depth must be (None for the root).
    fn extent_node(&mut self, node: &[u8], depth: Option<u16>, location: &str) -> Result<(), Problem> {
        let corrupt = |problem: String| Problem::Corrupt(format!("{location}: {problem}"));
        if node.len() < HEADER_SIZE {
            return Err(corrupt(format!("{} bytes cannot hold an extent header", node.len())));
        }
        let magic = u16_at(node, 0);
        if magic != EXTENT_MAGIC {
            return Err(corrupt(format!("the extent header magic is {magic:#06x}, not {EXTENT_MAGIC:#06x}")));
        }
        let entries = usize::from(u16_at(node, 2));
        let max = usize::from(u16_at(node, 4));
        let node_depth = u16_at(node, 6);
        if entries > max || HEADER_SIZE + entries * ENTRY_SIZE > node.len() {
            return Err(corrupt(format!(
                "{entries} extent entries (at most {max}) do not fit in {} bytes",
                node.len()
            )));
        }
        match depth {
            None if node_depth > MAX_EXTENT_DEPTH => {
                return Err(corrupt(format!(
                    "the extent tree depth {node_depth} is above the maximum {MAX_EXTENT_DEPTH}"
                )))
            }
            Some(expected) if node_depth != expected => {
                return Err(corrupt(format!("the node has depth {node_depth} where its parent says {expected}")))
            }
            _ => {}
        }
        let entry = |index: usize| &node[HEADER_SIZE + index * ENTRY_SIZE..][..ENTRY_SIZE];
        if node_depth == 0 {
            for index in 0..entries {
                let leaf = entry(index);
                let logical = u64::from(u32_at(leaf, 0));
                let raw_length = u16_at(leaf, 4);
                let physical = u64::from(u16_at(leaf, 6)) << 32 | u64::from(u32_at(leaf, 8));
                let (length, initialized) = if raw_length > INITIALIZED_MAX_LENGTH {
                    (raw_length - INITIALIZED_MAX_LENGTH, false)
                } else {
                    (raw_length, true)
                };
                if length == 0 {
                    return Err(corrupt(format!("the extent at logical block {logical} is empty")));
                }
                self.push(logical, physical, u64::from(length), initialized).map_err(|problem| match problem {
                    Problem::Corrupt(text) => corrupt(text),
                    other => other,
                })?;
            }
            return Ok(());
        }
        // Index entries must increase before any child is read.
        for index in 1..entries {
            let first_logical = u32_at(entry(index), 0);
            if first_logical <= u32_at(entry(index - 1), 0) {
                return Err(corrupt(format!(
                    "index entry {index} starts at logical block {first_logical}, not after the previous one"
                )));
            }
        }
        for index in 0..entries {
            let index_entry = entry(index);
            let child = u64::from(u16_at(index_entry, 8)) << 32 | u64::from(u32_at(index_entry, 4));
            let child_location = format!("extent tree block {child}");
            let block = self.read_tree_block(child, location)?;
            self.extent_node(&block, Some(node_depth - 1), &child_location)?;
        }
        Ok(())
    }

    /// An indirect block at `level` (1: it lists data blocks; 2 and 3: it lists indirect blocks
    /// of the level below) whose first entry maps logical block `logical`.
    fn indirect(&mut self, block: u64, level: u32, logical: u64) -> Result<(), Problem> {
        let what = format!("the level-{level} indirect block for logical block {logical}");
        let buffer = self.read_tree_block(block, &what)?;
        let per_block = self.geometry.block_size / 4;
        let span = per_block.pow(level - 1);
        for index in 0..per_block {
            let pointer = u64::from(u32_at(&buffer, index as usize * 4));
            if pointer == 0 {
                continue;
            }
            let child_logical = logical + index * span;
            if level == 1 {
                self.push(child_logical, pointer, 1, true)?;
            } else {
                self.indirect(pointer, level - 1, child_logical)?;
            }
        }
        Ok(())
    }
}

/// The map of an inode whose i_block holds an extent tree.
pub(super) fn extent_map(
    root: &[u8; 60],
    geometry: &Geometry,
    read_block: &mut ReadBlock<'_>,
) -> Result<BlockMap, Problem> {
    let mut builder = Builder::new(geometry, read_block);
    builder.extent_node(root, None, "the extent tree root in the inode")?;
    Ok(builder.map)
}

/// The map of an inode whose i_block holds block pointers: 12 direct, then a single, a double
/// and a triple indirect block.
pub(super) fn indirect_map(
    pointers: &[u8; 60],
    geometry: &Geometry,
    read_block: &mut ReadBlock<'_>,
) -> Result<BlockMap, Problem> {
    let mut builder = Builder::new(geometry, read_block);
    for index in 0..DIRECT_BLOCKS {
        let pointer = u64::from(u32_at(pointers, index * 4));
        if pointer != 0 {
            builder.push(index as u64, pointer, 1, true)?;
        }
    }
    let per_block = geometry.block_size / 4;
    let mut logical = DIRECT_BLOCKS as u64;
    for level in 1..=3u32 {
        let pointer = u64::from(u32_at(pointers, (DIRECT_BLOCKS + level as usize - 1) * 4));
        if pointer != 0 {
            builder.indirect(pointer, level, logical)?;
        }
        logical += per_block.pow(level);
    }
    Ok(builder.map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const GEOMETRY: Geometry = Geometry { block_size: 1024, first_valid: 2, blocks_count: 1000 };

    fn header(entries: u16, max: u16, depth: u16) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&EXTENT_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&entries.to_le_bytes());
        bytes.extend_from_slice(&max.to_le_bytes());
        bytes.extend_from_slice(&depth.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes
    }

    fn leaf(logical: u32, length: u16, physical: u64) -> Vec<u8> {
        let mut bytes = logical.to_le_bytes().to_vec();
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&((physical >> 32) as u16).to_le_bytes());
        bytes.extend_from_slice(&(physical as u32).to_le_bytes());
        bytes
    }

    fn index(logical: u32, child: u64) -> Vec<u8> {
        let mut bytes = logical.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(child as u32).to_le_bytes());
        bytes.extend_from_slice(&((child >> 32) as u16).to_le_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes
    }

    fn root(parts: &[Vec<u8>]) -> [u8; 60] {
        let mut root = [0u8; 60];
        let bytes = parts.concat();
        root[..bytes.len()].copy_from_slice(&bytes);
        root
    }

    fn block(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut block = parts.concat();
        block.resize(1024, 0);
        block
    }

    fn map(root: &[u8; 60], blocks: &HashMap<u64, Vec<u8>>, extents: bool) -> Result<BlockMap, String> {
        let mut read = |number: u64, buffer: &mut [u8]| {
            buffer.copy_from_slice(blocks.get(&number).map_or(&[0u8; 1024][..], |b| &b[..]));
            Ok(())
        };
        let result =
            if extents { extent_map(root, &GEOMETRY, &mut read) } else { indirect_map(root, &GEOMETRY, &mut read) };
        result.map_err(|problem| match problem {
            Problem::Corrupt(text) => text,
            Problem::Fail(error) => error.to_string(),
        })
    }

    fn run(logical: u64, physical: u64, length: u64, initialized: bool) -> Run {
        Run { logical, physical, length, initialized }
    }

    #[test]
    fn leaves_in_the_inode_with_uninitialised_extents() {
        let root = root(&[header(3, 4, 0), leaf(0, 2, 100), leaf(2, 32768 + 3, 102), leaf(10, 1, 50)]);
        let map = map(&root, &HashMap::new(), true).unwrap();
        assert_eq!(map.runs, [run(0, 100, 2, true), run(2, 102, 3, false), run(10, 50, 1, true)]);
        assert!(map.tree_blocks.is_empty());
        // Exactly 32768 blocks is still an initialised extent.
        let root = self::root(&[header(1, 4, 0), leaf(0, 32768, 0x1_0000_0000)]);
        let error = self::map(&root, &HashMap::new(), true).unwrap_err();
        assert!(error.contains("outside the filesystem"), "{error}");
    }

    #[test]
    fn index_nodes_down_to_leaves() {
        let root = root(&[header(2, 4, 1), index(0, 10), index(100, 11)]);
        let blocks = HashMap::from([
            (10, block(&[header(2, 84, 0), leaf(0, 1, 200), leaf(1, 1, 201)])),
            (11, block(&[header(1, 84, 0), leaf(100, 4, 300)])),
        ]);
        let map = map(&root, &blocks, true).unwrap();
        assert_eq!(map.runs, [run(0, 200, 2, true), run(100, 300, 4, true)]);
        assert_eq!(map.tree_blocks, [10, 11]);
    }

    #[test]
    fn corrupt_trees_are_errors() {
        type Case = ([u8; 60], HashMap<u64, Vec<u8>>, &'static str);
        let cases: Vec<Case> = vec![
            (root(&[vec![0; 12]]), HashMap::new(), "magic"),
            (root(&[header(5, 5, 0)]), HashMap::new(), "do not fit"),
            (root(&[header(1, 4, 6)]), HashMap::new(), "depth 6"),
            (root(&[header(2, 4, 0), leaf(5, 1, 100), leaf(5, 1, 101)]), HashMap::new(), "overlap"),
            (root(&[header(1, 4, 0), leaf(1, 0, 100)]), HashMap::new(), "empty"),
            (root(&[header(1, 4, 0), leaf(0, 1, 1)]), HashMap::new(), "outside"),
            (root(&[header(1, 4, 0), leaf(u32::MAX, 2, 100)]), HashMap::new(), "2^32"),
            // A child that claims the wrong depth.
            (
                root(&[header(1, 4, 2), index(0, 10)]),
                HashMap::from([(10, block(&[header(0, 84, 0)]))]),
                "depth 0 where its parent says 1",
            ),
            // The same child twice: would otherwise multiply the walk.
            (
                root(&[header(2, 4, 1), index(0, 10), index(5, 10)]),
                HashMap::from([(10, block(&[header(0, 84, 0)]))]),
                "used twice",
            ),
            (root(&[header(2, 4, 1), index(5, 10), index(5, 11)]), HashMap::new(), "not after the previous"),
        ];
        for (root, blocks, expected) in cases {
            let error = map(&root, &blocks, true).unwrap_err();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn block_maps_with_indirect_blocks() {
        let mut pointers = [0u8; 60];
        pointers[0..4].copy_from_slice(&100u32.to_le_bytes());
        pointers[4..8].copy_from_slice(&101u32.to_le_bytes());
        pointers[44..48].copy_from_slice(&200u32.to_le_bytes());
        pointers[48..52].copy_from_slice(&20u32.to_le_bytes());
        pointers[52..56].copy_from_slice(&21u32.to_le_bytes());
        let mut single = vec![0u8; 1024];
        single[0..4].copy_from_slice(&300u32.to_le_bytes());
        single[4..8].copy_from_slice(&301u32.to_le_bytes());
        let mut double = vec![0u8; 1024];
        double[4..8].copy_from_slice(&22u32.to_le_bytes());
        let mut leaf = vec![0u8; 1024];
        leaf[8..12].copy_from_slice(&400u32.to_le_bytes());
        let blocks = HashMap::from([(20, single), (21, double), (22, leaf)]);
        let map = map(&pointers, &blocks, false).unwrap();
        // Logical 12 + 256 is where the double indirect block starts; its second entry maps
        // 256 blocks further, and the third pointer in there two more.
        assert_eq!(
            map.runs,
            [run(0, 100, 2, true), run(11, 200, 1, true), run(12, 300, 2, true), run(12 + 256 + 256 + 2, 400, 1, true)]
        );
        assert_eq!(map.tree_blocks, [20, 21, 22]);
        // An indirect block that lists itself.
        let mut looping = vec![0u8; 1024];
        looping[0..4].copy_from_slice(&21u32.to_le_bytes());
        let blocks = HashMap::from([(21, looping)]);
        let mut pointers = [0u8; 60];
        pointers[52..56].copy_from_slice(&21u32.to_le_bytes());
        let error = self::map(&pointers, &blocks, false).unwrap_err();
        assert!(error.contains("used twice"), "{error}");
    }
}
