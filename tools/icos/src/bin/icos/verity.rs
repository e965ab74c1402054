//! `icos verity`: dm-verity hash trees, as `veritysetup` writes them.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use uuid::Uuid;

use icos::io_error::PathIoError;
use icos::output::write_file_atomically;
use icos::seed::Seed;
use icos::verity::{self, HashAlgorithm, HashType, Params};

#[derive(Subcommand)]
pub enum VerityCommand {
    /// Write the superblock and hash tree of DATA to the new file HASH and print the root hash,
    /// byte for byte as `veritysetup format DATA HASH` with the same options writes them.
    ///
    /// The salt and UUID come from --seed and --name (reproducible, distinct per device), or are
    /// given with --salt and --uuid; icos never makes them up at random.
    Format(FormatArgs),
    /// Fill the root hash of a verity root (from `icos ext4 --verity-root-hash`) into boot_args
    /// made by `icos layout --verity-root`.
    BootArgs {
        /// The boot_args with the placeholder.
        #[arg(long)]
        template: PathBuf,
        /// The file holding the root hash.
        #[arg(long)]
        root_hash_file: PathBuf,
        /// The boot_args to write.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Args)]
pub struct FormatArgs {
    /// The data image (an ext4 filesystem, say); holes are not read.
    data: PathBuf,
    /// The hash file to create (replaced only once complete).
    hash: PathBuf,
    /// The build seed to derive the salt (32 bytes) and UUID from.
    #[arg(long, requires = "name", conflicts_with_all = ["salt", "uuid"])]
    seed: Option<Seed>,
    /// The device's name under the seed (for example the partition name `root`).
    #[arg(long, requires = "seed")]
    name: Option<String>,
    /// The salt in hex, or - for none (veritysetup --salt).
    #[arg(long, value_parser = parse_salt, required_unless_present = "seed")]
    salt: Option<Salt>,
    /// The UUID in the superblock (veritysetup --uuid).
    #[arg(long, required_unless_present_any = ["seed", "no_superblock"])]
    uuid: Option<Uuid>,
    /// The hash algorithm: sha256 or sha512.
    #[arg(long = "hash", default_value = "sha256")]
    algorithm: HashAlgorithm,
    /// The hash format: 1 (normal) or 0 (Chrome OS).
    #[arg(long = "format", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    hash_format: u8,
    #[arg(long, default_value_t = 4096)]
    data_block_size: u32,
    #[arg(long, default_value_t = 4096)]
    hash_block_size: u32,
    /// How many data blocks to cover (default: the whole of DATA, which must be whole blocks).
    #[arg(long)]
    data_blocks: Option<u64>,
    /// Where the hash area starts in HASH, in bytes (a multiple of 512).
    #[arg(long, default_value_t = 0)]
    hash_offset: u64,
    /// Write no superblock: the salt and sizes must then be given to whoever opens the device.
    #[arg(long)]
    no_superblock: bool,
    /// Also write the root hash to this file, in hex without a newline (as veritysetup does).
    #[arg(long)]
    root_hash_file: Option<PathBuf>,
}

/// A salt as one argument (clap would take a bare `Vec<u8>` for a list of numbers).
#[derive(Clone)]
struct Salt(Vec<u8>);

fn parse_salt(text: &str) -> Result<Salt, String> {
    verity::parse_salt(text).map(Salt)
}

pub fn run(command: VerityCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        VerityCommand::Format(args) => {
            let mut params = match (&args.seed, &args.name) {
                (Some(seed), Some(name)) => Params::from_seed(seed, name),
                _ => Params::new(args.salt.map(|salt| salt.0).unwrap_or_default(), args.uuid.unwrap_or_else(Uuid::nil)),
            };
            params.algorithm = args.algorithm;
            params.hash_type = if args.hash_format == 0 { HashType::ChromeOs } else { HashType::Normal };
            params.data_block_size = args.data_block_size;
            params.hash_block_size = args.hash_block_size;
            params.data_blocks = args.data_blocks;
            params.hash_offset = args.hash_offset;
            params.superblock = !args.no_superblock;
            let tree = verity::format(&args.data, &args.hash, &params)?;
            if let Some(path) = &args.root_hash_file {
                // As veritysetup's --root-hash-file: hex, no newline.
                write_file_atomically(path, tree.root_hash_hex().as_bytes())?;
            }
            println!("{}", tree.root_hash_hex());
        }
        VerityCommand::BootArgs { template, root_hash_file, output } => {
            let read = |path: &Path| fs::read_to_string(path).map_err(PathIoError::with("read", path));
            let filled = verity::fill_root_hash(&read(&template)?, &template, read(&root_hash_file)?.trim())?;
            write_file_atomically(&output, filled.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
