//! `icos measure`: launch measurements of confidential VMs.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use icos::hashing::hex;
use icos::snp::{self, KernelHashes, Launch, Ovmf, VcpuType};

#[derive(Subcommand)]
pub enum MeasureCommand {
    /// Print the SEV-SNP launch digest (SHA-384, hex) of a QEMU guest started from an AmdSev
    /// OVMF, booting KERNEL, INITRD and the command line directly (kernel-hashes=on), as
    /// `sev-snp-measure --mode snp` computes it.
    Snp(SnpArgs),
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
    #[arg(long, value_parser = parse_number, default_value = "0x1")]
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

fn parse_number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a number (decimal, or hex with 0x)"))
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
        MeasureCommand::OvmfHash { ovmf } => println!("{}", hex(&Ovmf::read(&ovmf)?.hash())),
    }
    Ok(ExitCode::SUCCESS)
}
