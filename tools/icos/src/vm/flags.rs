//! The VM settings on a command line (`icos vm`, `icos-boot-test`): each flag can also come from an
//! `ICOS_QEMU_*` environment variable, and the flag wins.

use std::path::PathBuf;

use clap::{ArgAction, Args};

use super::config::{
    parse_memory, AccelSetting, PortForward, Sev, SevKind, Share, VmConfig, VsockSetting, DEFAULT_CBITPOS,
    DEFAULT_CPUS, DEFAULT_OVMF_CODE, DEFAULT_OVMF_VARS, DEFAULT_QEMU, DEFAULT_REDUCED_PHYS_BITS, DEFAULT_SEV_FIRMWARE,
};
use super::shell::split_args;

/// The VM settings; each can also come from an environment variable, and the flag wins.
#[derive(Args, Clone)]
pub struct VmFlags {
    /// The QEMU binary.
    #[arg(long, env = "ICOS_QEMU_BIN", default_value = DEFAULT_QEMU)]
    qemu: PathBuf,
    /// Guest memory: MiB, or with an M or G suffix (4G).
    #[arg(long, env = "ICOS_QEMU_MEMORY", default_value = "2048", value_parser = parse_memory)]
    memory: u64,
    /// Guest CPUs.
    #[arg(long, env = "ICOS_QEMU_CPUS", default_value_t = DEFAULT_CPUS,
          value_parser = clap::value_parser!(u32).range(1..))]
    cpus: u32,
    /// The QEMU CPU model. Default: host with KVM, max with TCG.
    #[arg(long, env = "ICOS_QEMU_CPU")]
    cpu: Option<String>,
    /// The UEFI firmware code.
    #[arg(long, env = "ICOS_QEMU_OVMF_CODE", default_value = DEFAULT_OVMF_CODE)]
    ovmf_code: PathBuf,
    /// The UEFI variables template; the VM gets a private copy.
    #[arg(long, env = "ICOS_QEMU_OVMF_VARS", default_value = DEFAULT_OVMF_VARS)]
    ovmf_vars: PathBuf,
    /// auto (KVM when a short probe shows that it works, TCG otherwise), kvm or tcg.
    #[arg(long, env = "ICOS_QEMU_ACCEL", default_value = "auto")]
    accel: AccelSetting,
    /// Host ports forwarded to the guest, as a comma-separated list of tcp:HOSTPORT:GUESTPORT or
    /// udp:HOSTPORT:GUESTPORT.
    #[arg(long, env = "ICOS_QEMU_PORT_FORWARDS", value_name = "FORWARDS", value_delimiter = ',')]
    port_forwards: Vec<PortForward>,
    /// The guest's vsock CID: auto (3 when the host has /dev/vhost-vsock, none otherwise), off, or
    /// a CID (an error without /dev/vhost-vsock).
    #[arg(long, env = "ICOS_QEMU_VSOCK_CID", default_value = "auto")]
    vsock_cid: VsockSetting,
    /// Host directories the guest can mount read-only over 9p, as a comma-separated list of
    /// TAG=DIR: `mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt` in the guest.
    #[arg(long, env = "ICOS_QEMU_SHARES", value_name = "SHARES", value_delimiter = ',')]
    shares: Vec<Share>,
    /// More QEMU arguments, appended last: split on whitespace, with shell-like quoting.
    #[arg(long, env = "ICOS_QEMU_EXTRA_ARGS", value_name = "ARGS", allow_hyphen_values = true,
          value_parser = |text: &str| split_args(text).map(ExtraArgs))]
    extra_args: Option<ExtraArgs>,
    /// Run an AMD SEV guest: sev or sev-snp. Needs KVM; the firmware is --sev-firmware.
    #[arg(long, env = "ICOS_QEMU_SEV")]
    sev: Option<SevKind>,
    /// The stateless AmdSev OVMF build that SEV measures.
    #[arg(long, env = "ICOS_QEMU_SEV_FIRMWARE", default_value = DEFAULT_SEV_FIRMWARE, requires = "sev")]
    sev_firmware: PathBuf,
    /// The C-bit position in guest page table entries.
    #[arg(long, env = "ICOS_QEMU_SEV_CBITPOS", default_value_t = DEFAULT_CBITPOS, requires = "sev")]
    sev_cbitpos: u32,
    /// How many physical address bits memory encryption takes away.
    #[arg(long, env = "ICOS_QEMU_SEV_REDUCED_PHYS_BITS", default_value_t = DEFAULT_REDUCED_PHYS_BITS,
          requires = "sev")]
    sev_reduced_phys_bits: u32,
    /// Add the hashes of --sev-kernel, --sev-initrd and --sev-append to the launch measurement.
    #[arg(long, env = "ICOS_QEMU_SEV_KERNEL_HASHES", action = ArgAction::SetTrue, requires = "sev_kernel")]
    sev_kernel_hashes: bool,
    /// A kernel to boot directly instead of from the disk.
    #[arg(long, env = "ICOS_QEMU_SEV_KERNEL", requires = "sev")]
    sev_kernel: Option<PathBuf>,
    /// The initrd of --sev-kernel.
    #[arg(long, env = "ICOS_QEMU_SEV_INITRD", requires = "sev_kernel")]
    sev_initrd: Option<PathBuf>,
    /// The command line of --sev-kernel.
    #[arg(long, env = "ICOS_QEMU_SEV_APPEND", requires = "sev_kernel", allow_hyphen_values = true)]
    sev_append: Option<String>,
}

/// One value that stands for several arguments (a `Vec` field would make clap take several values).
#[derive(Clone)]
struct ExtraArgs(Vec<String>);

impl VmFlags {
    pub fn into_config(self) -> VmConfig {
        let sev = self.sev.map(|kind| Sev {
            kind,
            firmware: self.sev_firmware,
            cbitpos: self.sev_cbitpos,
            reduced_phys_bits: self.sev_reduced_phys_bits,
            kernel_hashes: self.sev_kernel_hashes,
            kernel: self.sev_kernel,
            initrd: self.sev_initrd,
            append: self.sev_append,
        });
        VmConfig {
            qemu: self.qemu,
            memory_mib: self.memory,
            cpus: self.cpus,
            cpu_model: self.cpu,
            ovmf_code: self.ovmf_code,
            ovmf_vars: self.ovmf_vars,
            accel: self.accel,
            port_forwards: self.port_forwards,
            vsock: self.vsock_cid,
            shares: self.shares,
            extra_args: self.extra_args.map(|ExtraArgs(args)| args).unwrap_or_default(),
            sev,
        }
    }
}
