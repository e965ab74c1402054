//! `icos measure`: launch measurements of confidential VMs.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use icos::hashing::hex;
use icos::sev_launch::{self, LaunchRequest, VcpuConfig};
use icos::snp::{self, KernelHashes, Launch, Ovmf, VcpuType};

#[derive(Subcommand)]
pub enum MeasureCommand {
    /// Print the SEV-SNP launch digest (SHA-384, hex) of a QEMU guest started from an AmdSev
    /// OVMF, booting KERNEL, INITRD and the command line directly (kernel-hashes=on), as
    /// `sev-snp-measure --mode snp` computes it.
    Snp(SnpArgs),
    /// Write the launch files of a -sev variant into --output-dir: vmlinuz and initrd.img from its
    /// boot partition (where GRUB reads them), cmdline-<SLOT> (BOOT_ARGS_<SLOT> of /boot_args, no
    /// newline), and launch-measurements.json: the SEV-SNP launch digest of each slot and vCPU
    /// configuration, with every input that went into it.
    LaunchFiles(LaunchFilesArgs),
    /// Print the launch digest of the OVMF pages alone (`sev-snp-measure --mode snp:ovmf-hash`).
    OvmfHash {
        /// The OVMF image (for example Debian's /usr/share/ovmf/OVMF.amdsev.fd).
        #[arg(long)]
        ovmf: PathBuf,
    },
}

#[derive(Args)]
pub struct SnpArgs {
    /// The OVMF image (for example Debian's /usr/share/ovmf/OVMF.amdsev.fd).
    #[arg(long)]
    ovmf: PathBuf,
    /// The number of vCPUs (QEMU's -smp; one VMSA each).
    #[arg(long)]
    vcpus: u32,
    /// The QEMU vCPU model, for its CPUID signature: EPYC-v4, EPYC-Milan, EPYC-Genoa ...
    #[arg(long)]
    vcpu_type: VcpuType,
    /// SEV_FEATURES of the guest (0x1 SNPActive; 0x21 adds DebugSwap, on Linux 6.6+ hosts).
    #[arg(long, value_parser = snp::parse_guest_features, default_value = "0x1")]
    guest_features: u64,
    /// The kernel of a direct boot.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The initrd of a direct boot (none: the hash of nothing).
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line, exactly as QEMU's -append gets it (nothing is trimmed).
    #[arg(long, requires = "kernel", allow_hyphen_values = true)]
    append: Option<String>,
}

#[derive(Args)]
pub struct LaunchFilesArgs {
    /// The boot filesystem: a partition's .tzst package or a raw ext4 image.
    #[arg(long)]
    boot_partition: PathBuf,
    /// A slot to measure (repeat for each: --slot A --slot B).
    #[arg(long = "slot", required = true)]
    slots: Vec<String>,
    /// The AmdSev OVMF the host starts the guest with.
    #[arg(long)]
    ovmf: PathBuf,
    /// Where the firmware comes from, recorded for people (such as "ovmf 2026.08+ds-2").
    #[arg(long)]
    ovmf_source: String,
    /// A vCPU configuration to measure, VCPUS:VCPU_TYPE:GUEST_FEATURES (repeat for each), such as
    /// 2:EPYC-v4:0x1.
    #[arg(long = "config", required = true)]
    configs: Vec<VcpuConfig>,
    /// The directory the launch files go to.
    #[arg(long)]
    output_dir: PathBuf,
}

pub fn run(command: MeasureCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        MeasureCommand::Snp(args) => {
            let ovmf = Ovmf::read(&args.ovmf)?;
            let hashes = match &args.kernel {
                Some(kernel) => {
                    Some(KernelHashes::new(kernel, args.initrd.as_deref(), args.append.as_deref().unwrap_or(""))?)
                }
                None => None,
            };
            let launch = Launch {
                vcpus: args.vcpus,
                vcpu_type: args.vcpu_type,
                guest_features: args.guest_features,
                kernel: hashes.as_ref(),
            };
            println!("{}", hex(&snp::launch_digest(&ovmf, &args.ovmf, &launch)?));
        }
        MeasureCommand::LaunchFiles(args) => {
            let record = sev_launch::write_launch_files(&LaunchRequest {
                boot_partition: &args.boot_partition,
                slots: &args.slots,
                firmware: &args.ovmf,
                firmware_source: &args.ovmf_source,
                configs: &args.configs,
                output_dir: &args.output_dir,
            })?;
            for measurement in &record.measurements {
                println!(
                    "{} {}:{}:{} {}",
                    measurement.slot,
                    measurement.vcpus,
                    measurement.vcpu_type,
                    measurement.guest_features,
                    measurement.launch_digest
                );
            }
        }
        MeasureCommand::OvmfHash { ovmf } => println!("{}", hex(&Ovmf::read(&ovmf)?.hash())),
    }
    Ok(ExitCode::SUCCESS)
}
