//! `icos oci`: single-layer OCI archives written from canonical root filesystem tars, their
//! digests, and a content-addressed store of them.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use icos::oci::{verify_archive, write_archive, ArchiveOptions, Digest, OciError, Store, DEFAULT_CREATED_BY};

#[derive(Subcommand)]
pub enum OciCommand {
    /// Write a single-layer OCI archive from a canonical rootfs tar; print the image digest.
    Write(WriteArgs),
    /// Verify an OCI archive and print its image digest (its manifest's, which a pin names).
    Digest { archive: PathBuf },
    /// Verify an OCI archive and check that it is image DIGEST: exit 1 if it is another image.
    Verify {
        archive: PathBuf,
        /// The image's (manifest) digest, as a pin names it.
        #[arg(long, value_name = "sha256:HEX")]
        digest: Digest,
    },
    /// A content-addressed store of OCI archives: <STORE>/sha256/<hex>.oci.tar.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Args)]
pub struct WriteArgs {
    /// The canonical root filesystem tar (`icos rootfs canonicalize`): the image's one layer.
    #[arg(long)]
    rootfs: PathBuf,
    /// The OCI archive to create.
    #[arg(short, long)]
    output: PathBuf,
    /// The image's reference name in index.json (e.g. guestos-base); not part of the digest.
    #[arg(long)]
    name: String,
    /// What the config's one history entry says made the image.
    #[arg(long, default_value = DEFAULT_CREATED_BY)]
    created_by: String,
    /// The image's default command, one --cmd per argument.
    #[arg(long = "cmd", value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// A label of the image.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = super::container::parse_pair)]
    labels: Vec<(String, String)>,
    /// The image's creation time (seconds). Default: $SOURCE_DATE_EPOCH, else 0.
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<u64>,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Verify an OCI archive and copy it into the store; print its digest and its path there.
    Put {
        /// The store directory (created if missing).
        #[arg(long)]
        store: PathBuf,
        archive: PathBuf,
    },
    /// Print the path of image DIGEST in the store (exit 2 if it is not there).
    Path {
        /// The store directory.
        #[arg(long)]
        store: PathBuf,
        /// The image's (manifest) digest, as a pin names it.
        #[arg(value_name = "sha256:HEX")]
        digest: Digest,
        /// Hash every blob, not only the manifest (blobs are always checked for their size).
        #[arg(long)]
        verify: bool,
    },
}

pub fn run(command: OciCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        OciCommand::Write(args) => write(args),
        OciCommand::Digest { archive } => {
            println!("{}", verify_archive(&archive, None)?);
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Verify { archive, digest } => match verify_archive(&archive, Some(&digest)) {
            Ok(_) => {
                println!("{}: OK", archive.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(error @ OciError::Mismatch { .. }) => {
                eprintln!("icos: {error}");
                Ok(ExitCode::from(1))
            }
            Err(error) => Err(error.into()),
        },
        OciCommand::Store(StoreCommand::Put { store, archive }) => {
            let store = Store::new(store);
            let image = store.put(&archive)?;
            println!("{image} {}", store.path(&image.digest).display());
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Store(StoreCommand::Path { store, digest, verify }) => {
            let store = Store::new(store);
            let path = if verify { store.get_verified(&digest)? } else { store.get(&digest)? };
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write(args: WriteArgs) -> Result<ExitCode, Box<dyn Error>> {
    let mut labels = BTreeMap::new();
    for (key, value) in args.labels {
        if labels.insert(key.clone(), value).is_some() {
            return Err(format!("--label {key} is given twice").into());
        }
    }
    let options = ArchiveOptions {
        name: args.name,
        created: super::rootfs::epoch(args.source_date_epoch)?.unwrap_or(0),
        created_by: args.created_by,
        cmd: (!args.cmd.is_empty()).then_some(args.cmd),
        labels,
    };
    println!("{}", write_archive(&args.rootfs, &args.output, &options)?);
    Ok(ExitCode::SUCCESS)
}
