//! dm-verity hash trees, written byte for byte as `veritysetup format` (cryptsetup's
//! `lib/verity/`) writes them, so that `veritysetup verify`, `veritysetup open` and the kernel's
//! dm-verity target accept them.
//!
//! The hash device holds, from `hash_offset`: an optional 512-byte superblock (padded to a whole
//! hash block), then the tree, top level first. Level 0 holds the digests of the data blocks and
//! level i those of level i-1's hash blocks; the root hash is the digest of the single top-level
//! block (of data block 0 when there is only one data block). Format 1 hashes `salt || block` and
//! gives each digest a power-of-two slot; format 0 (Chrome OS) hashes `block || salt` and packs
//! the digests. Everything not written is zero: unlike `veritysetup`, which leaves the bytes of a
//! pre-existing hash file alone, the output is always a new file.
//!
//! The known answers in the tests are the vectors of `../shared/notes/verity-and-snp.md`, made with
//! `veritysetup format`; `tests/build_root/verity.rs` compares whole hash devices with the build
//! root's `veritysetup` (cryptsetup 2.8.8) and has it verify ours.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256, Sha512};
use uuid::Uuid;

use crate::io_error::PathIoError;
use crate::output::{write_atomically, OutputError};
use crate::seed::Seed;
use crate::sparse;

/// The size of the superblock at the start of the hash area.
pub const SUPERBLOCK_SIZE: u64 = 512;
const SIGNATURE: &[u8; 8] = b"verity\0\0";
const SUPERBLOCK_VERSION: u32 = 1;
/// The salt field of the superblock.
pub const MAX_SALT_SIZE: usize = 256;
const MIN_BLOCK_SIZE: u32 = 512;
const MAX_BLOCK_SIZE: u32 = 512 * 1024;
/// How much data is read at a time (a whole number of blocks of any supported size).
const READ_SIZE: usize = 4 << 20;

/// What `icos layout --verity-root` writes into each slot's command line where the root hash
/// goes; `icos verity boot-args` fills it in per variant, once its root filesystem is made.
pub const ROOT_HASH_PLACEHOLDER: &str = "@ICOS_VERITY_ROOT_HASH@";

/// The parameters of an OS's verity root: veritysetup's defaults, salt and UUID from the build
/// seed and the role (`root`), so that the images of both slots, and of the upgrade, share one
/// tree.
pub fn root_params(seed: &Seed) -> Params {
    Params::from_seed(seed, "root")
}

/// Where a verity root's hash area starts in a partition of `size` bytes: the filesystem takes
/// the most whole blocks that leave room for the superblock and tree after them. The same for
/// every salt (the tree's shape depends on sizes and digest only).
pub fn root_hash_offset(size: u64) -> Result<u64, VerityError> {
    let params = Params::new(Vec::new(), Uuid::nil());
    Ok(data_blocks_fitting(size, &params)? * u64::from(params.data_block_size))
}

/// `template` (boot_args from `icos layout --verity-root`) with the root hash filled in.
pub fn fill_root_hash(template: &str, template_path: &Path, root_hash_hex: &str) -> Result<String, VerityError> {
    if root_hash_hex.is_empty() || !root_hash_hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(VerityError::BadRootHash(root_hash_hex.to_owned()));
    }
    if !template.contains(ROOT_HASH_PLACEHOLDER) {
        return Err(VerityError::NoPlaceholder { path: template_path.to_owned() });
    }
    Ok(template.replace(ROOT_HASH_PLACEHOLDER, root_hash_hex))
}

/// The digest of the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    /// The name as `veritysetup --hash` and the superblock spell it.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    pub fn digest_size(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a hash algorithm icos writes verity trees with: use sha256 or sha512")]
pub struct UnknownAlgorithm(String);

impl FromStr for HashAlgorithm {
    type Err = UnknownAlgorithm;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "sha256" => Ok(HashAlgorithm::Sha256),
            "sha512" => Ok(HashAlgorithm::Sha512),
            _ => Err(UnknownAlgorithm(name.to_owned())),
        }
    }
}

/// The hash format (`veritysetup --format`, the superblock's `hash_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashType {
    /// 0: Chrome OS, `H(block || salt)`, digests packed.
    ChromeOs = 0,
    /// 1: the normal format, `H(salt || block)`, each digest in a power-of-two slot.
    Normal = 1,
}

/// What `veritysetup format` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub algorithm: HashAlgorithm,
    pub hash_type: HashType,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    /// How many data blocks the tree covers; `None`: the whole data file, which must then be a
    /// whole number of blocks (veritysetup would silently leave a partial last block unverified).
    pub data_blocks: Option<u64>,
    pub salt: Vec<u8>,
    /// The UUID in the superblock (not part of the root hash).
    pub uuid: Uuid,
    pub superblock: bool,
    /// Where the hash area (superblock, then tree) starts in the hash file, in bytes.
    pub hash_offset: u64,
}

impl Params {
    /// veritysetup's defaults (sha256, format 1, 4096-byte blocks, a superblock at offset 0) with
    /// the given salt and UUID, which veritysetup would otherwise make up at random.
    pub fn new(salt: Vec<u8>, uuid: Uuid) -> Self {
        Params {
            algorithm: HashAlgorithm::Sha256,
            hash_type: HashType::Normal,
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: None,
            salt,
            uuid,
            superblock: true,
            hash_offset: 0,
        }
    }

    /// The defaults with a 32-byte salt (veritysetup's size) and a UUID derived from `seed` for
    /// the verity device called `name`: the same seed and name always give the same tree, and
    /// other names (or seeds) other salts.
    pub fn from_seed(seed: &Seed, name: &str) -> Self {
        let salt = seed.digest(format!("verity-salt:{name}").as_bytes()).to_vec();
        Params::new(salt, seed.derived_uuid(format!("verity-uuid:{name}").as_bytes()))
    }

    fn check(&self) -> Result<(), VerityError> {
        for (what, size) in [("data", self.data_block_size), ("hash", self.hash_block_size)] {
            if !size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size) {
                return Err(VerityError::BlockSize { what, size });
            }
        }
        if self.salt.len() > MAX_SALT_SIZE {
            return Err(VerityError::SaltSize(self.salt.len()));
        }
        if self.hash_offset % SUPERBLOCK_SIZE != 0
            || (!self.superblock && self.hash_offset % u64::from(self.hash_block_size) != 0)
        {
            return Err(VerityError::HashOffset { offset: self.hash_offset, superblock: self.superblock });
        }
        if (self.hash_block_size as usize) < self.algorithm.digest_size() * 2 {
            return Err(VerityError::BlockSize { what: "hash", size: self.hash_block_size });
        }
        Ok(())
    }
}

/// Where the tree lies and what it hashes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub data_blocks: u64,
    /// The hash block (counted from the start of the hash file) of the top level: the kernel
    /// table's `<hash_start_block>`.
    pub hash_start_block: u64,
    /// The hash blocks of the tree, the superblock's not counted (veritysetup's "Hash blocks").
    pub hash_blocks: u64,
    /// The size of the hash file: up to the end of the tree.
    pub hash_file_size: u64,
    pub root_hash: Vec<u8>,
}

impl Tree {
    pub fn root_hash_hex(&self) -> String {
        crate::hashing::hex(&self.root_hash)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("the {what} block size {size} is not a power of two from 512 to 524288 bytes (and at least two digests)")]
    BlockSize { what: &'static str, size: u32 },
    #[error("a salt of {0} bytes is longer than the superblock's 256")]
    SaltSize(usize),
    #[error(
        "the hash offset {offset} is not a multiple of {}",
        if *superblock { "512 bytes" } else { "the hash block size (there is no superblock)" }
    )]
    HashOffset { offset: u64, superblock: bool },
    #[error(
        "{path} is {size} bytes, not a whole number of {block_size}-byte data blocks: its last {} bytes would not be \
         verified (give the number of data blocks to cover explicitly)",
        size % u64::from(*block_size)
    )]
    PartialBlock { path: PathBuf, size: u64, block_size: u32 },
    #[error("{path} has {available} data blocks of {block_size} bytes, fewer than the {requested} to verify")]
    TooFewBlocks { path: PathBuf, available: u64, requested: u64, block_size: u32 },
    #[error("{path} has no data block to verify")]
    NoData { path: PathBuf },
    #[error("the hash area would end beyond 2^64 bytes")]
    TooLarge,
    #[error("the hash tree of {path} would end at byte {end}, beyond the {size} bytes it must fit in")]
    DoesNotFit { path: PathBuf, end: u64, size: u64 },
    #[error("{0:?} is not a root hash: expected hex digits")]
    BadRootHash(String),
    #[error("{path} has no {ROOT_HASH_PLACEHOLDER} to put the root hash in (is it boot_args of `icos layout --verity-root`?)")]
    NoPlaceholder { path: PathBuf },
}

/// A hasher of blocks with the salt already absorbed where the format puts it.
#[derive(Clone)]
enum BlockHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

struct Salted {
    prefix: BlockHasher,
    /// Format 0 appends the salt after the block.
    suffix: Option<Vec<u8>>,
}

impl Salted {
    fn new(params: &Params) -> Self {
        let mut prefix = match params.algorithm {
            HashAlgorithm::Sha256 => BlockHasher::Sha256(Sha256::new()),
            HashAlgorithm::Sha512 => BlockHasher::Sha512(Sha512::new()),
        };
        let suffix = match params.hash_type {
            HashType::Normal => {
                match &mut prefix {
                    BlockHasher::Sha256(hasher) => hasher.update(&params.salt),
                    BlockHasher::Sha512(hasher) => hasher.update(&params.salt),
                }
                None
            }
            HashType::ChromeOs => Some(params.salt.clone()),
        };
        Salted { prefix, suffix }
    }

    /// Writes the digest of `block` into `out` (digest size bytes).
    fn digest_into(&self, block: &[u8], out: &mut [u8]) {
        let suffix = self.suffix.as_deref().unwrap_or_default();
        match self.prefix.clone() {
            BlockHasher::Sha256(mut hasher) => {
                hasher.update(block);
                hasher.update(suffix);
                out.copy_from_slice(&hasher.finalize());
            }
            BlockHasher::Sha512(mut hasher) => {
                hasher.update(block);
                hasher.update(suffix);
                out.copy_from_slice(&hasher.finalize());
            }
        }
    }
}

/// The shape of a tree: where each level goes, as cryptsetup's `verity_hash.c` lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    /// Digests per hash block: a power of two.
    per_block_bits: u32,
    /// The bytes a digest takes in a hash block.
    slot_size: usize,
    /// Per level, from 0 (the data blocks' digests): its first hash block and its block count.
    levels: Vec<(u64, u64)>,
    /// The hash block right after the tree.
    end_block: u64,
    first_block: u64,
}

impl Layout {
    fn new(params: &Params, data_blocks: u64) -> Result<Self, VerityError> {
        let digest_size = params.algorithm.digest_size();
        let per_block_bits = (params.hash_block_size as usize / digest_size).ilog2();
        let slot_size = match params.hash_type {
            HashType::Normal => digest_size.next_power_of_two(),
            HashType::ChromeOs => digest_size,
        };
        let hash_block_size = u64::from(params.hash_block_size);
        let first_block = if params.superblock {
            (params.hash_offset + SUPERBLOCK_SIZE).div_ceil(hash_block_size)
        } else {
            params.hash_offset / hash_block_size
        };
        let mut level_count = 0;
        while per_block_bits * level_count < 64 && (data_blocks - 1) >> (per_block_bits * level_count) != 0 {
            level_count += 1;
        }
        let mut levels = vec![(0, 0); level_count as usize];
        let mut position = first_block;
        for level in (0..level_count).rev() {
            let shift = (level + 1) * per_block_bits;
            let size = if shift >= 64 { 1 } else { data_blocks.div_ceil(1 << shift) };
            levels[level as usize] = (position, size);
            position = position.checked_add(size).ok_or(VerityError::TooLarge)?;
        }
        position.checked_mul(hash_block_size).ok_or(VerityError::TooLarge)?;
        Ok(Layout { per_block_bits, slot_size, levels, end_block: position, first_block })
    }

    fn per_block(&self) -> usize {
        1 << self.per_block_bits
    }
}

/// Hashes `count` blocks of `block_size` bytes, given in order to `push`, into hash blocks.
struct LevelWriter<'a> {
    hasher: &'a Salted,
    digest_size: usize,
    slot_size: usize,
    per_block: usize,
    hash_block_size: usize,
    blocks: Vec<u8>,
    in_block: usize,
}

impl<'a> LevelWriter<'a> {
    fn new(hasher: &'a Salted, params: &Params, layout: &Layout, hash_blocks: u64) -> Self {
        LevelWriter {
            hasher,
            digest_size: params.algorithm.digest_size(),
            slot_size: layout.slot_size,
            per_block: layout.per_block(),
            hash_block_size: params.hash_block_size as usize,
            blocks: Vec::with_capacity(hash_blocks as usize * params.hash_block_size as usize),
            in_block: 0,
        }
    }

    fn push_digest(&mut self, digest: &[u8]) {
        if self.in_block == 0 {
            self.blocks.resize(self.blocks.len() + self.hash_block_size, 0);
        }
        let start = self.blocks.len() - self.hash_block_size + self.in_block * self.slot_size;
        self.blocks[start..start + self.digest_size].copy_from_slice(digest);
        self.in_block = (self.in_block + 1) % self.per_block;
    }

    fn push(&mut self, block: &[u8]) {
        let mut digest = [0u8; 64];
        let digest = &mut digest[..self.digest_size];
        self.hasher.digest_into(block, digest);
        self.push_digest(digest);
    }
}

/// Writes the superblock and hash tree of the first data blocks of `data_path` to a new file
/// `hash_path` (replacing it only once it is complete) and returns where the tree lies and its
/// root hash. Holes of the data file are not read: an all-zero block's digest is computed once.
pub fn format(data_path: &Path, hash_path: &Path, params: &Params) -> Result<Tree, VerityError> {
    let data = File::open(data_path).map_err(PathIoError::with("open", data_path))?;
    let computed = compute(&data, data_path, params)?;
    write_atomically(hash_path, |file| -> Result<(), VerityError> {
        // Zero up to the end of the tree, as holes: the gaps before the superblock, between it and
        // the tree, and after a partial last level.
        file.set_len(computed.tree.hash_file_size).map_err(PathIoError::with("write", hash_path))?;
        computed.write(file, hash_path, params)
    })?;
    Ok(computed.tree)
}

/// Appends the superblock and hash tree of `image` to the image itself, right after its data (the
/// hash offset is the data size, which must be whole blocks): one file that `veritysetup open
/// IMAGE NAME IMAGE ROOT_HASH --hash-offset=SIZE` opens. `params.hash_offset` and
/// `params.data_blocks` are set from the image; the file then ends at `file_size` (a partition's
/// size: the tree must end within it), the rest a hole.
pub fn append(image_path: &Path, params: &Params, file_size: u64) -> Result<(Tree, Params), VerityError> {
    let image =
        File::options().read(true).write(true).open(image_path).map_err(PathIoError::with("open", image_path))?;
    let size = image.metadata().map_err(PathIoError::with("read the size of", image_path))?.len();
    let block_size = u64::from(params.data_block_size);
    if size % block_size != 0 {
        return Err(VerityError::PartialBlock {
            path: image_path.to_owned(),
            size,
            block_size: params.data_block_size,
        });
    }
    let params = Params { hash_offset: size, data_blocks: Some(size / block_size), superblock: true, ..params.clone() };
    let computed = compute(&image, image_path, &params)?;
    if computed.tree.hash_file_size > file_size {
        return Err(VerityError::DoesNotFit {
            path: image_path.to_owned(),
            end: computed.tree.hash_file_size,
            size: file_size,
        });
    }
    image.set_len(file_size).map_err(PathIoError::with("write", image_path))?;
    computed.write(&image, image_path, &params)?;
    Ok((computed.tree, params))
}

/// The most whole data blocks whose hash area, appended right after them (as [`append`] does),
/// still ends within `total_size` bytes; 0 when not even one block fits.
pub fn data_blocks_fitting(total_size: u64, params: &Params) -> Result<u64, VerityError> {
    params.check()?;
    let block_size = u64::from(params.data_block_size);
    let fits = |blocks: u64| -> Result<bool, VerityError> {
        let params = Params { hash_offset: blocks * block_size, superblock: true, ..params.clone() };
        let end = Layout::new(&params, blocks)?.end_block.checked_mul(u64::from(params.hash_block_size));
        Ok(end.is_some_and(|end| end <= total_size))
    };
    // The hash area grows with the data, so the blocks that fit are a prefix of 1, 2, ...
    let (mut fitting, mut too_many) = (0, total_size / block_size + 1);
    while too_many - fitting > 1 {
        let middle = fitting + (too_many - fitting) / 2;
        if fits(middle)? {
            fitting = middle;
        } else {
            too_many = middle;
        }
    }
    Ok(fitting)
}

/// A tree computed in memory, to be written.
struct Computed {
    tree: Tree,
    layout: Layout,
    /// The hash blocks of each level, from level 0.
    levels: Vec<Vec<u8>>,
}

impl Computed {
    fn write(&self, file: &File, path: &Path, params: &Params) -> Result<(), VerityError> {
        let write_error = || PathIoError::with("write", path);
        if params.superblock {
            file.write_all_at(&superblock(params, self.tree.data_blocks), params.hash_offset).map_err(write_error())?;
        }
        let hash_block_size = u64::from(params.hash_block_size);
        for (blocks, &(start, _)) in self.levels.iter().zip(&self.layout.levels) {
            file.write_all_at(blocks, start * hash_block_size).map_err(write_error())?;
        }
        Ok(())
    }
}

/// Hashes the data blocks `params` asks for and builds every level of the tree.
fn compute(data: &File, data_path: &Path, params: &Params) -> Result<Computed, VerityError> {
    params.check()?;
    let size = data.metadata().map_err(PathIoError::with("read the size of", data_path))?.len();
    let block_size = u64::from(params.data_block_size);
    let available = size / block_size;
    let data_blocks = match params.data_blocks {
        None if size % block_size != 0 => {
            return Err(VerityError::PartialBlock {
                path: data_path.to_owned(),
                size,
                block_size: params.data_block_size,
            })
        }
        None => available,
        Some(requested) if requested > available => {
            return Err(VerityError::TooFewBlocks {
                path: data_path.to_owned(),
                available,
                requested,
                block_size: params.data_block_size,
            })
        }
        Some(requested) => requested,
    };
    if data_blocks == 0 {
        return Err(VerityError::NoData { path: data_path.to_owned() });
    }
    let layout = Layout::new(params, data_blocks)?;
    let hasher = Salted::new(params);

    // Level 0 (or, for a single data block, the root) from the data.
    let first_level_blocks = layout.levels.first().map_or(1, |&(_, size)| size);
    let mut level = LevelWriter::new(&hasher, params, &layout, first_level_blocks);
    hash_data(data, data_path, data_blocks, params.data_block_size as usize, &mut level)?;
    let mut levels = Vec::with_capacity(layout.levels.len());
    let root_hash = if layout.levels.is_empty() {
        level.blocks[..params.algorithm.digest_size()].to_vec()
    } else {
        let mut below = level.blocks;
        for &(_, size) in &layout.levels[1..] {
            let mut upper = LevelWriter::new(&hasher, params, &layout, size);
            for block in below.chunks(params.hash_block_size as usize) {
                upper.push(block);
            }
            levels.push(below);
            below = upper.blocks;
        }
        let mut root = vec![0u8; params.algorithm.digest_size()];
        hasher.digest_into(&below, &mut root);
        levels.push(below);
        root
    };
    let tree = Tree {
        data_blocks,
        hash_start_block: layout.first_block,
        hash_blocks: layout.end_block - layout.first_block,
        hash_file_size: layout.end_block * u64::from(params.hash_block_size),
        root_hash,
    };
    Ok(Computed { tree, layout, levels })
}

/// Feeds the first `count` blocks of `data` to `level`, reading only the regions the file system
/// holds data in.
fn hash_data(
    data: &File,
    path: &Path,
    count: u64,
    block_size: usize,
    level: &mut LevelWriter,
) -> Result<(), VerityError> {
    let read_error = || PathIoError::with("read", path);
    let end = count * block_size as u64;
    let zero_block = vec![0u8; block_size];
    let mut zero_digest = vec![0u8; level.digest_size];
    level.hasher.digest_into(&zero_block, &mut zero_digest);
    let mut buffer = vec![0u8; READ_SIZE];
    let mut position = 0u64;
    let push_zero_blocks = |level: &mut LevelWriter, from: u64, to: u64| {
        for _ in (from / block_size as u64)..(to / block_size as u64) {
            level.push_digest(&zero_digest);
        }
    };
    for (start, region_end) in sparse::data_regions(data, end).map_err(read_error())? {
        // Whole blocks that lie before the region are holes.
        let start = start / block_size as u64 * block_size as u64;
        if start > position {
            push_zero_blocks(level, position, start);
            position = start;
        }
        let region_end = region_end.next_multiple_of(block_size as u64).min(end);
        while position < region_end {
            let length = (region_end - position).min(READ_SIZE as u64) as usize;
            data.read_exact_at(&mut buffer[..length], position).map_err(read_error())?;
            for block in buffer[..length].chunks(block_size) {
                level.push(block);
            }
            position += length as u64;
        }
    }
    push_zero_blocks(level, position, end);
    Ok(())
}

/// The 512-byte superblock (`struct verity_sb` of cryptsetup's `lib/verity/verity.c`).
fn superblock(params: &Params, data_blocks: u64) -> [u8; SUPERBLOCK_SIZE as usize] {
    let mut block = [0u8; SUPERBLOCK_SIZE as usize];
    block[0x00..0x08].copy_from_slice(SIGNATURE);
    block[0x08..0x0c].copy_from_slice(&SUPERBLOCK_VERSION.to_le_bytes());
    block[0x0c..0x10].copy_from_slice(&(params.hash_type as u32).to_le_bytes());
    block[0x10..0x20].copy_from_slice(params.uuid.as_bytes());
    let name = params.algorithm.name().as_bytes();
    block[0x20..0x20 + name.len()].copy_from_slice(name);
    block[0x40..0x44].copy_from_slice(&params.data_block_size.to_le_bytes());
    block[0x44..0x48].copy_from_slice(&params.hash_block_size.to_le_bytes());
    block[0x48..0x50].copy_from_slice(&data_blocks.to_le_bytes());
    block[0x50..0x52].copy_from_slice(&(params.salt.len() as u16).to_le_bytes());
    block[0x58..0x58 + params.salt.len()].copy_from_slice(&params.salt);
    block
}

/// Parses a salt as `veritysetup --salt` takes it: hexadecimal, or `-` for none.
pub fn parse_salt(text: &str) -> Result<Vec<u8>, String> {
    if text == "-" {
        return Ok(Vec::new());
    }
    if text.len() % 2 != 0 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a salt: expected an even number of hex digits, or - for none"));
    }
    let salt: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).expect("checked hex digits"))
        .collect();
    if salt.len() > MAX_SALT_SIZE {
        return Err(format!("a salt of {} bytes is longer than the superblock's {MAX_SALT_SIZE}", salt.len()));
    }
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn salt_0_to_31() -> Vec<u8> {
        (0u8..32).collect()
    }

    fn vector_uuid() -> Uuid {
        Uuid::parse_str("12345678-1234-5678-9abc-def012345678").unwrap()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        crate::hashing::hex(&Sha256::digest(bytes))
    }

    /// Formats `data` with `params` in a temporary directory; returns the tree and hash file.
    fn format_bytes(data: &[u8], params: &Params) -> (Tree, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("data"), data).unwrap();
        let tree = format(&dir.path().join("data"), &dir.path().join("hash"), params).unwrap();
        (tree, fs::read(dir.path().join("hash")).unwrap())
    }

    // Vectors V1 to V3 of the shared note: `veritysetup format data hash --salt=000102…1f
    // --uuid=12345678-1234-5678-9abc-def012345678` (V3: `--salt=- --uuid=0…0`) on a fresh file.
    #[test]
    fn vector_v1_patterned_mebibyte() {
        let data: Vec<u8> = (0..1 << 20).map(|index: u32| (index.wrapping_mul(7).wrapping_add(3)) as u8).collect();
        assert_eq!(sha256_hex(&data), "172c15dc2e12b50e523d8e657cbe7fbb11c1053252bbf1e1431077d57d8128fd");
        let (tree, hash) = format_bytes(&data, &Params::new(salt_0_to_31(), vector_uuid()));
        assert_eq!(tree.root_hash_hex(), "496ccf9ff686e57cb1c0c1892e4f6932f6b07b788df599fbb963c3bc409010ca");
        assert_eq!(hash.len(), 16384);
        assert_eq!(sha256_hex(&hash), "91993e48a5f417415475c30c1a641d703a4655de3ff7ee535375867bccdaece9");
        assert_eq!((tree.data_blocks, tree.hash_start_block, tree.hash_blocks), (256, 1, 3));
        assert_eq!(tree.hash_file_size, 16384);
    }

    #[test]
    fn vector_v2_zero_mebibyte() {
        let (tree, hash) = format_bytes(&vec![0; 1 << 20], &Params::new(salt_0_to_31(), vector_uuid()));
        assert_eq!(tree.root_hash_hex(), "7722fefaac5735743fbbc956822bd9be4d8475282267a65a652b459ffa7b9606");
        assert_eq!(sha256_hex(&hash), "663cc225674903b3f5fb52ba64a0a7f148dfdfaa3c7d3216506871906169b6e7");
    }

    #[test]
    fn vector_v3_no_salt_nil_uuid() {
        let (tree, hash) = format_bytes(&vec![0; 1 << 20], &Params::new(Vec::new(), Uuid::nil()));
        assert_eq!(tree.root_hash_hex(), "5d98121f8aeff2a38a3fffee013f85980078507a0ffbd99e5a8d616ecfe7db6a");
        assert_eq!(sha256_hex(&hash), "d009f8ee3fd87b119e07f532346aeb72508ebad89ebe4cc3ebe6450f55fe2ad0");
    }

    #[test]
    fn superblock_fields_match_the_vector() {
        let block = superblock(&Params::new(salt_0_to_31(), vector_uuid()), 256);
        let expected_start = "7665726974790000010000000100000012345678123456789abcdef012345678\
                              7368613235360000000000000000000000000000000000000000000000000000\
                              0010000000100000000100000000000020000000000000000001020304050607";
        assert_eq!(crate::hashing::hex(&block[..0x60]), expected_start);
        assert!(block[0x78..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn one_block_has_no_levels_and_hashes_the_block() {
        let params = Params::new(salt_0_to_31(), vector_uuid());
        let block: Vec<u8> = (0..4096u32).map(|index| index as u8).collect();
        let (tree, hash) = format_bytes(&block, &params);
        let mut expected = Sha256::new();
        expected.update(salt_0_to_31());
        expected.update(&block);
        assert_eq!(tree.root_hash, expected.finalize().to_vec());
        assert_eq!((tree.hash_start_block, tree.hash_blocks, hash.len()), (1, 0, 4096));
    }

    #[test]
    fn level_sizes_follow_cryptsetup() {
        let params = Params::new(Vec::new(), Uuid::nil());
        let sizes =
            |blocks| Layout::new(&params, blocks).unwrap().levels.iter().map(|&(_, size)| size).collect::<Vec<_>>();
        assert_eq!(sizes(1), Vec::<u64>::new());
        assert_eq!(sizes(128), vec![1]);
        assert_eq!(sizes(129), vec![2, 1]);
        assert_eq!(sizes(16385), vec![129, 2, 1]);
        let layout = Layout::new(&params, 16385).unwrap();
        // Top level first: [129, 2, 1] lie at blocks 4, 2 and 1 after the superblock block.
        assert_eq!(layout.levels, vec![(4, 129), (2, 2), (1, 1)]);
        assert_eq!(layout.end_block * 4096, 544768);
    }

    #[test]
    fn without_superblock_the_tree_starts_at_the_offset() {
        let mut params = Params::new(Vec::new(), Uuid::nil());
        params.superblock = false;
        assert_eq!(Layout::new(&params, 129).unwrap().levels, vec![(1, 2), (0, 1)]);
        params.hash_offset = 1 << 20;
        assert_eq!(Layout::new(&params, 200).unwrap().levels, vec![(257, 2), (256, 1)]);
    }

    #[test]
    fn holes_hash_like_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let sparse_path = dir.path().join("sparse");
        let file = File::create(&sparse_path).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(b"data in the middle", 20 << 20).unwrap();
        file.write_all_at(b"and at the end", (64 << 20) - 100).unwrap();
        drop(file);
        let mut dense = vec![0u8; 64 << 20];
        dense[20 << 20..(20 << 20) + 18].copy_from_slice(b"data in the middle");
        dense[(64 << 20) - 100..(64 << 20) - 86].copy_from_slice(b"and at the end");
        fs::write(dir.path().join("dense"), &dense).unwrap();
        let params = Params::new(salt_0_to_31(), vector_uuid());
        let sparse_tree = format(&sparse_path, &dir.path().join("sparse.hash"), &params).unwrap();
        let dense_tree = format(&dir.path().join("dense"), &dir.path().join("dense.hash"), &params).unwrap();
        assert_eq!(sparse_tree, dense_tree);
        assert_eq!(fs::read(dir.path().join("sparse.hash")).unwrap(), fs::read(dir.path().join("dense.hash")).unwrap());
    }

    #[test]
    fn partial_last_block_is_refused_unless_blocks_are_given() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("data"), vec![1u8; 4096 * 3 + 10]).unwrap();
        let mut params = Params::new(Vec::new(), Uuid::nil());
        let error = format(&dir.path().join("data"), &dir.path().join("hash"), &params).unwrap_err();
        assert!(error.to_string().contains("last 10 bytes would not be verified"), "{error}");
        assert!(!dir.path().join("hash").exists());
        params.data_blocks = Some(3);
        assert_eq!(format(&dir.path().join("data"), &dir.path().join("hash"), &params).unwrap().data_blocks, 3);
        params.data_blocks = Some(4);
        let error = format(&dir.path().join("data"), &dir.path().join("hash"), &params).unwrap_err();
        assert!(error.to_string().contains("fewer than the 4 to verify"), "{error}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut params = Params::new(Vec::new(), Uuid::nil());
        params.data_block_size = 3000;
        assert!(params.check().unwrap_err().to_string().contains("data block size 3000"));
        let mut params = Params::new(vec![0; 257], Uuid::nil());
        assert!(params.check().is_err());
        params.salt.clear();
        params.hash_offset = 100;
        assert!(params.check().unwrap_err().to_string().contains("hash offset 100"));
        assert!("sha1".parse::<HashAlgorithm>().unwrap_err().to_string().contains("sha256 or sha512"));
    }

    #[test]
    fn salts_parse_like_veritysetup() {
        assert_eq!(parse_salt("-").unwrap(), Vec::<u8>::new());
        assert_eq!(parse_salt("00ff10").unwrap(), vec![0, 255, 16]);
        assert!(parse_salt("abc").is_err());
        assert!(parse_salt("zz").is_err());
        assert!(parse_salt(&"00".repeat(257)).is_err());
    }

    #[test]
    fn seed_derivation_is_stable_and_separates_names() {
        let seed: Seed = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c".parse().unwrap();
        let root = Params::from_seed(&seed, "root");
        assert_eq!(root, Params::from_seed(&seed, "root"));
        assert_eq!(root.salt.len(), 32);
        assert_eq!(root.uuid.get_version_num(), 4);
        let other = Params::from_seed(&seed, "other");
        assert_ne!(root.salt, other.salt);
        assert_ne!(root.uuid, other.uuid);
    }

    #[test]
    fn appended_tree_equals_a_separate_hash_file_at_that_offset() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300 * 4096u32).map(|index| (index * 7 + 3) as u8).collect();
        let image = dir.path().join("image");
        fs::write(&image, &data).unwrap();
        let params = Params::new(salt_0_to_31(), vector_uuid());
        let (tree, used) = append(&image, &params, 320 * 4096).unwrap();
        assert_eq!((used.hash_offset, used.data_blocks), (300 * 4096, Some(300)));
        let separate = Params { hash_offset: 300 * 4096, data_blocks: Some(300), ..params.clone() };
        let expected = format(&dir.path().join("image"), &dir.path().join("hash"), &separate);
        // `image` now holds its tree too; the data part is unchanged, so the trees agree.
        let expected = expected.unwrap();
        assert_eq!(tree, expected);
        let appended = fs::read(&image).unwrap();
        let hash = fs::read(dir.path().join("hash")).unwrap();
        assert_eq!(appended.len(), 320 * 4096);
        assert_eq!(&appended[..data.len()], &data[..]);
        assert_eq!(&appended[data.len()..hash.len()], &hash[data.len()..]);
        assert!(appended[hash.len()..].iter().all(|&byte| byte == 0));
        // A tree that does not fit in the size given is refused.
        fs::write(&image, &data).unwrap();
        let error = append(&image, &params, 304 * 4096).unwrap_err();
        assert!(error.to_string().contains("would end at byte 1249280"), "{error}");
    }

    #[test]
    fn the_fitting_data_leaves_room_for_exactly_its_tree() {
        let params = Params::new(salt_0_to_31(), vector_uuid());
        for total in [8192u64, 1 << 20, 10 << 30, (10 << 30) + 12345] {
            let blocks = data_blocks_fitting(total, &params).unwrap();
            let end = |blocks: u64| {
                let placed = Params { hash_offset: blocks * 4096, ..params.clone() };
                Layout::new(&placed, blocks).unwrap().end_block * 4096
            };
            assert!(end(blocks) <= total, "{blocks} blocks overflow {total}");
            assert!(end(blocks + 1) > total, "{} blocks would fit {total} too", blocks + 1);
        }
        assert_eq!(data_blocks_fitting(4096, &params).unwrap(), 0);
    }

    #[test]
    fn root_hashes_fill_their_placeholder_only() {
        let path = Path::new("boot_args");
        let filled =
            fill_root_hash("A=\"x=@ICOS_VERITY_ROOT_HASH@\"\nB=\"@ICOS_VERITY_ROOT_HASH@\"", path, "ab12").unwrap();
        assert_eq!(filled, "A=\"x=ab12\"\nB=\"ab12\"");
        assert!(fill_root_hash("no placeholder", path, "ab12").unwrap_err().to_string().contains("boot_args has no"));
        assert!(fill_root_hash("@ICOS_VERITY_ROOT_HASH@", path, "ab 12").is_err());
    }

    #[test]
    fn the_root_offset_leaves_room_for_the_tree() {
        // 10 GiB: 2 621 440 blocks in all; the tree of the data takes 1/128 of it, and more.
        let offset = root_hash_offset(10 << 30).unwrap();
        assert_eq!(offset % 4096, 0);
        assert!(offset < 10 << 30 && offset > (10 << 30) - (100 << 20), "{offset}");
    }
}
