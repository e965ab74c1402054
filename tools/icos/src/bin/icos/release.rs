//! `icos release`: signed release bundles of a published variant (`icos::release`).

use std::error::Error;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use icos::release::fetch::{fetch, FetchEvent};
use icos::release::{bundle_inputs, open_signer, package, public_key_pem, read_public_key, verify, verify_directory};
use icos::size::mebibytes;
use icos::vm::VmFlags;

use crate::vm::{run_vm, RunArgs, WorkArgs};

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Bundle a variant's published files (a directory goes in under its name, with its files)
    /// with a manifest signed by KEY, into one tar. A step after `bazel build`: the private key
    /// never enters the build.
    Package {
        /// The Ed25519 private key: a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`), or
        /// a key in a PKCS#11 token named by a `pkcs11:` URI (RFC 7512) with its module-path and
        /// pin-source or pin-value, such as
        /// 'pkcs11:token=icos-release;object=release?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin'.
        #[arg(long, value_name = "KEY")]
        key: String,
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
    /// Write the public half of a signing key (a PEM file or a pkcs11: URI, as `package --key`
    /// takes) as SPKI PEM: the file that images trust (//ic-os/components/release-keys:prod) and
    /// `verify --public-key` reads.
    PublicKey {
        #[arg(long, value_name = "KEY")]
        key: String,
        /// The file to write (standard output without it).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check a bundle, or a directory it was unpacked into: its manifest's signature against the
    /// public keys, then every file's size and SHA-256 (in one pass through a bundle), and that
    /// it holds nothing else. Exit status 2, naming the file, when anything does not match.
    Verify {
        /// A trusted Ed25519 public key, SPKI PEM (`openssl pkey -pubout`); repeatable.
        #[arg(long = "public-key", value_name = "KEY", required = true)]
        public_keys: Vec<PathBuf>,
        /// Also write the bundle's files under DIR (a new directory; removed again on failure).
        #[arg(long, value_name = "DIR")]
        unpack: Option<PathBuf>,
        bundle: PathBuf,
    },
    /// Download a bundle over HTTP(S) with progress on stderr, resuming a transfer that breaks
    /// off (also one of an earlier fetch, kept in DIR.download), then verify it and unpack it
    /// into DIR.
    Fetch {
        /// A trusted Ed25519 public key, SPKI PEM; repeatable.
        #[arg(long = "public-key", value_name = "KEY", required = true)]
        public_keys: Vec<PathBuf>,
        /// The directory to unpack into (new).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// More CA certificates (PEM) to trust for HTTPS, besides the system's.
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
        url: String,
    },
    /// Verify an unpacked bundle (fetch, verify --unpack) and boot its disk-img.tar.zst as
    /// `icos vm run` does, with the same VM settings; a bundle with sev-launch/ (a -sev variant) as
    /// its launcher does: slot A as the SEV-SNP guest its launch files were measured for (--no-sev
    /// boots the same kernel, initrd and command line without SEV).
    Start(Box<StartArgs>),
}

#[derive(Args)]
pub struct StartArgs {
    /// A trusted Ed25519 public key, SPKI PEM; repeatable.
    #[arg(long = "public-key", value_name = "KEY", required = true)]
    public_keys: Vec<PathBuf>,
    /// The unpacked bundle.
    dir: PathBuf,
    #[command(flatten)]
    work: WorkArgs,
    #[command(flatten)]
    vm: VmFlags,
}

/// What `start` boots.
const DISK_IMAGE: &str = "disk-img.tar.zst";
/// The launch files of a -sev variant in a bundle (`icos_build`'s `sev-launch`).
const SEV_LAUNCH: &str = "sev-launch";

fn file_count(count: usize) -> String {
    format!("{count} file{}", if count == 1 { "" } else { "s" })
}

fn report(event: FetchEvent) {
    let of = |total: Option<u64>| total.map(|total| format!(" of {}", mebibytes(total))).unwrap_or_default();
    match event {
        FetchEvent::Transfer { from: 0, total } => eprintln!("icos: downloading{}", of(total)),
        FetchEvent::Transfer { from, total } => eprintln!("icos: resuming at {}{}", mebibytes(from), of(total)),
        FetchEvent::Progress { bytes, total } => eprintln!("icos: {}{}", mebibytes(bytes), of(total)),
        FetchEvent::Interrupted { bytes, problem } => {
            eprintln!("icos: the transfer broke off at {} ({problem})", mebibytes(bytes))
        }
        FetchEvent::Downloaded { bytes, elapsed } => {
            eprintln!("icos: downloaded {} in {:.1} s; verifying", mebibytes(bytes), elapsed.as_secs_f64())
        }
    }
}

pub fn run(command: ReleaseCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        ReleaseCommand::Package { key, os, variant, version_file, output, files } => {
            let key = open_signer(&key)?;
            let version = fs::read_to_string(&version_file)
                .map_err(|error| format!("cannot read {}: {error}", version_file.display()))?;
            let inputs = bundle_inputs(&files)?;
            let manifest = package(&os, &variant, version.trim_end(), &inputs, key.as_ref(), &output)?;
            println!(
                "{}: {} {} {}, {}, signed",
                output.display(),
                manifest.os,
                manifest.variant,
                manifest.version,
                file_count(manifest.files.len())
            );
        }
        ReleaseCommand::PublicKey { key, output } => {
            let pem = public_key_pem(&open_signer(&key)?.public_key());
            match output {
                Some(path) => icos::output::write_file_atomically(&path, pem.as_bytes())?,
                None => print!("{pem}"),
            }
        }
        ReleaseCommand::Fetch { public_keys, output, ca_cert, url } => {
            let keys = public_keys.iter().map(|path| read_public_key(path)).collect::<Result<Vec<_>, _>>()?;
            let manifest = fetch(&url, &keys, &output, ca_cert.as_deref(), &mut report)?;
            println!(
                "{}: {} {} {}, signature and {} verified, unpacked",
                output.display(),
                manifest.os,
                manifest.variant,
                manifest.version,
                file_count(manifest.files.len())
            );
        }
        ReleaseCommand::Start(args) => {
            let StartArgs { public_keys, dir, work, vm } = *args;
            let keys = public_keys.iter().map(|path| read_public_key(path)).collect::<Result<Vec<_>, _>>()?;
            let manifest = verify_directory(&dir, &keys)?;
            let disk_image = dir.join(DISK_IMAGE);
            let holds = |path: &str| manifest.files.iter().any(|file| file.path == path);
            if !holds(DISK_IMAGE) {
                return Err(format!("{}: the bundle has no {DISK_IMAGE} to boot", dir.display()).into());
            }
            // A -sev variant's bundle carries the launch files its guest is started from.
            let sev_launch = holds(&format!("{SEV_LAUNCH}/{}", icos::sev_launch::MEASUREMENTS_FILE));
            eprintln!(
                "icos: {}: {} {} {}, signature and {} verified; booting {DISK_IMAGE}{}",
                dir.display(),
                manifest.os,
                manifest.variant,
                manifest.version,
                file_count(manifest.files.len()),
                if sev_launch { format!(", slot A as the SEV-SNP guest of {SEV_LAUNCH}/") } else { String::new() }
            );
            let vm = if sev_launch { vm.with_sev_launch(&dir.join(SEV_LAUNCH))? } else { vm };
            return run_vm(RunArgs { disk_image, work, vm });
        }
        ReleaseCommand::Verify { public_keys, unpack, bundle } => {
            let keys = public_keys.iter().map(|path| read_public_key(path)).collect::<Result<Vec<_>, _>>()?;
            let manifest = if bundle.is_dir() && unpack.is_none() {
                verify_directory(&bundle, &keys)?
            } else {
                verify(&bundle, &keys, unpack.as_deref())?
            };
            println!(
                "{}: {} {} {}, signature and {} verified",
                bundle.display(),
                manifest.os,
                manifest.variant,
                manifest.version,
                file_count(manifest.files.len())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
