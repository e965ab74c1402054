//! `icos release`: signed release bundles of a published variant (`icos::release`).

use std::error::Error;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use icos::release::{bundle_inputs, package, read_public_key, read_signing_key, verify};

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Bundle a variant's published files (a directory goes in under its name, with its files)
    /// with a manifest signed by KEY, into one tar. A step after `bazel build`: the private key
    /// never enters the build.
    Package {
        /// The Ed25519 private key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The OS, such as guestos.
        #[arg(long)]
        os: String,
        /// The variant, such as dev.
        #[arg(long)]
        variant: String,
        /// The variant's version.txt.
        #[arg(long, value_name = "FILE")]
        version_file: PathBuf,
        /// The bundle to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The files and directories to bundle: disk-img.tar.zst, update-img.tar.zst, SHA256SUMS,
        /// build-record.json, sev-launch ...
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Check a bundle: its manifest's signature against the public keys, then every file's size
    /// and SHA-256, in one pass. Exit status 2, naming the file, when anything does not match.
    Verify {
        /// A trusted Ed25519 public key, SPKI PEM (`openssl pkey -pubout`); repeatable.
        #[arg(long = "public-key", value_name = "KEY", required = true)]
        public_keys: Vec<PathBuf>,
        /// Also write the bundle's files under DIR (a new directory; removed again on failure).
        #[arg(long, value_name = "DIR")]
        unpack: Option<PathBuf>,
        bundle: PathBuf,
    },
}

pub fn run(command: ReleaseCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        ReleaseCommand::Package { key, os, variant, version_file, output, files } => {
            let key = read_signing_key(&key)?;
            let version = fs::read_to_string(&version_file)
                .map_err(|error| format!("cannot read {}: {error}", version_file.display()))?;
            let inputs = bundle_inputs(&files)?;
            let manifest = package(&os, &variant, version.trim_end(), &inputs, &key, &output)?;
            println!(
                "{}: {} {} {}, {} files, signed",
                output.display(),
                manifest.os,
                manifest.variant,
                manifest.version,
                manifest.files.len()
            );
        }
        ReleaseCommand::Verify { public_keys, unpack, bundle } => {
            let keys = public_keys.iter().map(|path| read_public_key(path)).collect::<Result<Vec<_>, _>>()?;
            let manifest = verify(&bundle, &keys, unpack.as_deref())?;
            println!(
                "{}: {} {} {}, signature and {} files verified",
                bundle.display(),
                manifest.os,
                manifest.variant,
                manifest.version,
                manifest.files.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
