//! `icos oci`: single-layer OCI archives written from canonical root filesystem tars, their
//! digests, a content-addressed store of them, and pushing and pulling them to and from a
//! registry.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use icos::oci::registry::{present, Credentials, Registry, RegistryError, CA_ENV, REGISTRY_ENV};
use icos::oci::{
    parse_pin, verify_archive, write_archive, ArchiveOptions, Digest, OciError, Pin, Store, DEFAULT_CREATED_BY,
};

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
    /// Write the one layer (a root filesystem tar) of a single-layer image of the store to
    /// standard output, after verifying the whole archive: `| tar -x` unpacks it.
    Layer {
        /// The store directory.
        #[arg(long)]
        store: PathBuf,
        /// The image's (manifest) digest, as a pin names it.
        #[arg(value_name = "sha256:HEX")]
        digest: Digest,
    },
    /// Push images of the store to a registry; print <repository>@<digest> for each.
    ///
    /// An image goes to the repository <prefix>/<name>, where <name> is its name in index.json.
    /// Blobs the registry has are not sent again. Credentials: $ICOS_REGISTRY_USER and
    /// $ICOS_REGISTRY_PASSWORD (HTTP Basic, and for the registry's token server).
    Push(PushArgs),
    /// Pull images by digest from a registry into the store; print <digest> <path> for each.
    ///
    /// Every manifest and blob is checked against its digest. An image the store has already
    /// (verified in full) is not fetched, and then no registry needs to be configured.
    Pull(PullArgs),
}

/// Where the registry is and which CA certificates to trust for it.
#[derive(Args)]
pub struct RegistryArgs {
    /// The registry: http[s]://HOST[:PORT][/PREFIX].
    #[arg(long, env = REGISTRY_ENV, value_name = "URL")]
    registry: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (e.g. a registry's
    /// self-signed certificate).
    #[arg(long, env = CA_ENV, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl RegistryArgs {
    fn connect(&self) -> Result<Registry, RegistryError> {
        let url = self.registry.as_deref().ok_or(RegistryError::NotConfigured)?;
        Registry::new(url, Credentials::from_env()?, self.ca_cert.as_deref())
    }
}

#[derive(Args)]
pub struct PushArgs {
    /// The store directory.
    #[arg(long)]
    store: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Also tag each image TAG in its repository.
    #[arg(long)]
    tag: Option<String>,
    /// The images' (manifest) digests, as pins name them.
    #[arg(required = true, value_name = "sha256:HEX")]
    digests: Vec<Digest>,
}

#[derive(Args)]
pub struct PullArgs {
    /// The store directory (created if missing).
    #[arg(long)]
    store: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
    /// A pin file naming an image (e.g. ic-os/hostos/context/docker-base.dev); may be repeated.
    #[arg(long = "pin", value_name = "FILE")]
    pins: Vec<PathBuf>,
    /// The images as pins name them.
    #[arg(value_name = "NAME@sha256:HEX", required_unless_present = "pins")]
    images: Vec<Pin>,
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
        OciCommand::Layer { store, digest } => {
            Store::new(store).write_layer(&digest, &mut std::io::stdout().lock(), Path::new("standard output"))?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Push(args) => push(args),
        OciCommand::Pull(args) => pull(args),
    }
}

fn push(args: PushArgs) -> Result<ExitCode, Box<dyn Error>> {
    let store = Store::new(args.store);
    let mut registry = args.registry.connect()?;
    for digest in &args.digests {
        let report = registry.push(&store, digest, args.tag.as_deref())?;
        let (count, bytes) = report.uploaded();
        eprintln!(
            "icos: {}@{digest}: uploaded {count} of {} blobs ({bytes} bytes); the registry had the others",
            report.repository,
            report.blobs.len()
        );
        println!("{}@{digest}", report.repository);
    }
    Ok(ExitCode::SUCCESS)
}

fn pull(args: PullArgs) -> Result<ExitCode, Box<dyn Error>> {
    let store = Store::new(args.store);
    let mut pins = args.images;
    for path in &args.pins {
        let text = std::fs::read_to_string(path).map_err(|source| OciError::Read { path: path.clone(), source })?;
        pins.push(parse_pin(&text, path)?);
    }
    // Connected on first need: a store that has every image needs no registry.
    let mut registry = None;
    for pin in &pins {
        if let Some(path) = present(&store, &pin.digest)? {
            eprintln!("icos: {pin}: already in the store, not fetched");
            println!("{} {}", pin.digest, path.display());
            continue;
        }
        let registry = match &mut registry {
            Some(registry) => registry,
            None => registry.insert(args.registry.connect()?),
        };
        let report = registry.fetch(&store, pin)?;
        eprintln!("icos: {pin}: fetched from {} ({} bytes of blobs)", registry.url(), report.bytes);
        println!("{} {}", pin.digest, report.path.display());
    }
    Ok(ExitCode::SUCCESS)
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
