//! The icos command line: thin wrappers that parse arguments and call the `icos` library.
//! Exit status: 0 on success, 1 when a check finds a difference, 2 on an error.

mod base_image;
mod build_record;
mod build_root;
mod container;
mod diff;
mod disk;
mod fs;
mod grubenv;
mod layout;
mod lvm;
mod measure;
mod oci;
mod package;
mod release;
mod rootfs;
mod verity;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use icos::sha256sums::{check_sha256sums, write_sha256sums, CheckStatus};

#[derive(Parser)]
#[command(name = "icos", version, about = "Deterministic building blocks of icos disk images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write or check a SHA256SUMS file in the format of `sha256sum`.
    #[command(subcommand)]
    Sha256sums(Sha256SumsCommand),
    /// Write a GPT disk image from a partitions.csv and partition images.
    Disk(disk::DiskArgs),
    /// Compare two disk images, update images, partition images or rootfs tars (or two
    /// directories of them) and report every difference; exit 1 when they differ.
    ///
    /// Artifacts are recognised by content (zstd, gzip, tar, GPT, ext4, FAT, else bytes), taken
    /// apart as deep as their kind allows and reported most specific first: tar members and
    /// partitions, files (content, size, permissions, owner, times, xattrs, link target,
    /// device), header and superblock fields, then the byte ranges nothing above explains.
    /// Directories are compared file by file under the same relative names. Exit status: 0
    /// identical, 1 different, 2 error.
    Diff(diff::DiffArgs),
    /// Write a deterministic .tar.zst of (sparse) images, e.g. disk-img.tar.zst or a .tzst.
    Package(package::PackageArgs),
    /// Extract a .tar.zst package, restoring sparse images with holes.
    Unpack(package::UnpackArgs),
    /// Resolve an OS's layout (partitions, LVM volumes, boot slots) into layout.json (for the
    /// build rules and the upgrade agent), the slots' kernel command lines and grub.cfg.
    Layout(layout::LayoutArgs),
    /// Write an LVM2 physical volume holding one volume group of linear logical volumes, from a
    /// volumes.csv and images (raw or packaged) for the volumes.
    Lvm(lvm::LvmArgs),
    /// Write an ext4 image from a canonical rootfs tar (with mke2fs -d).
    Ext4(fs::Ext4Args),
    /// Write a FAT32 image (ESP, GRUB partition) from a tar of files and directories.
    Fat(fs::FatArgs),
    /// Canonical root filesystem tars: canonicalize, split by mount point, manifest.
    #[command(subcommand)]
    Rootfs(rootfs::RootfsCommand),
    /// Container builds with podman in a private store: OCI archives and canonical rootfs tars.
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// Pinned base images: build one from its package lists and lock (or relock it), and
    /// summarise a re-pin.
    #[command(subcommand)]
    BaseImage(base_image::BaseImageCommand),
    /// Build records: what built a published image (commit, build root, base images, host tool
    /// versions, icos version), next to its SHA256SUMS.
    #[command(subcommand)]
    BuildRecord(build_record::BuildRecordCommand),
    #[command(subcommand)]
    BuildRoot(build_root::BuildRootCommand),
    /// Reproducible single-layer OCI archives, their digests, and a store of them by digest.
    #[command(subcommand)]
    Oci(oci::OciCommand),
    /// GRUB environment blocks: the A/B boot state that grub.cfg reads and writes.
    #[command(subcommand)]
    Grubenv(grubenv::GrubEnvCommand),
    /// Boot disk images in QEMU (OVMF, KVM when it works, TCG otherwise).
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Launch measurements of confidential VMs (AMD SEV-SNP).
    #[command(subcommand)]
    Measure(measure::MeasureCommand),
    /// Signed release bundles of a published variant: package, verify, fetch, start.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// dm-verity hash trees, byte for byte as veritysetup writes them.
    #[command(subcommand)]
    Verity(verity::VerityCommand),
}

#[derive(Subcommand)]
enum Sha256SumsCommand {
    /// List FILES by file name and SHA-256, sorted by name.
    Write {
        /// The SHA256SUMS file to create.
        #[arg(short, long)]
        output: PathBuf,
        /// The published files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check the files listed in SUMS, looked up next to it.
    Check {
        /// The SHA256SUMS file.
        sums: PathBuf,
    },
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Command::Disk(args) => disk::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Layout(args) => layout::run(args),
        Command::Lvm(args) => lvm::run(args),
        Command::Ext4(args) => fs::run_ext4(args),
        Command::Fat(args) => fs::run_fat(args),
        Command::Rootfs(command) => rootfs::run(command),
        Command::Container(command) => container::run(command),
        Command::BaseImage(command) => base_image::run(command),
        Command::BuildRecord(command) => build_record::run(command),
        Command::BuildRoot(command) => build_root::run(command),
        Command::Oci(command) => oci::run(command),
        Command::Grubenv(command) => grubenv::run(command),
        Command::Vm(command) => vm::run(command),
        Command::Verity(command) => verity::run(command),
        Command::Release(command) => release::run(command),
        Command::Measure(command) => measure::run(command),
        Command::Package(args) => package::run(args),
        Command::Unpack(args) => package::run_unpack(args),
        Command::Sha256sums(Sha256SumsCommand::Write { output, files }) => {
            write_sha256sums(&output, &files)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sha256sums(Sha256SumsCommand::Check { sums }) => {
            let mut all_ok = true;
            for file in check_sha256sums(&sums)? {
                match file.status {
                    CheckStatus::Ok => println!("{}: OK", file.name),
                    CheckStatus::Missing => {
                        all_ok = false;
                        println!("{}: MISSING", file.name);
                    }
                    CheckStatus::Mismatch { actual } => {
                        all_ok = false;
                        println!("{}: FAILED (expected {}, found {actual})", file.name, file.expected);
                    }
                }
            }
            Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("icos: error: {error}");
            ExitCode::from(2)
        }
    }
}
