//! The VM settings on a command line (`icos vm`, `icos-boot-test`): each flag can also come from an
//! `ICOS_QEMU_*` environment variable, and the flag wins.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Args};

use super::config::{
    parse_memory, AccelSetting, DirectBoot, PortForward, Sev, SevKind, Share, VmConfig, VsockSetting, DEFAULT_CBITPOS,
    DEFAULT_CPUS, DEFAULT_OVMF_CODE, DEFAULT_OVMF_VARS, DEFAULT_QEMU, DEFAULT_REDUCED_PHYS_BITS, DEFAULT_SEV_FIRMWARE,
};
use super::shell::split_args;
use super::VmError;
use crate::io_error::PathIoError;

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
    /// The QEMU CPU model. Default: host with KVM, max,-svm with TCG.
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
    /// A kernel to boot directly: the firmware starts it instead of the disk's boot loader.
    #[arg(long, env = "ICOS_QEMU_KERNEL")]
    kernel: Option<PathBuf>,
    /// The initrd of --kernel.
    #[arg(long, env = "ICOS_QEMU_INITRD", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The command line of --kernel.
    #[arg(long, env = "ICOS_QEMU_APPEND", requires = "kernel", allow_hyphen_values = true)]
    append: Option<String>,
    /// A file holding the command line of --kernel, byte for byte: nothing is trimmed, not even a
    /// final newline, since an SEV-SNP launch measurement hashes the exact command line.
    #[arg(long, env = "ICOS_QEMU_APPEND_FILE", value_name = "FILE", requires = "kernel", conflicts_with = "append")]
    append_file: Option<PathBuf>,
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
    /// Add the hashes of --kernel, --initrd and the command line to the launch measurement.
    #[arg(long, env = "ICOS_QEMU_SEV_KERNEL_HASHES", action = ArgAction::SetTrue, requires_all = ["sev", "kernel"])]
    sev_kernel_hashes: bool,
    /// Drop the --sev settings and keep the rest: the same direct boot, if any, under the UEFI
    /// firmware of --ovmf-code, with the accelerator of --accel. For hosts without SEV.
    #[arg(long, env = "ICOS_QEMU_NO_SEV", action = ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    no_sev: bool,
}

/// One value that stands for several arguments (a `Vec` field would make clap take several values).
#[derive(Clone)]
struct ExtraArgs(Vec<String>);

impl VmFlags {
    /// Starts slot A of a variant's SEV-SNP launch files (`dir`, the `sev-launch/` that
    /// `sev_launch_files` makes: vmlinuz, initrd.img, cmdline-A and launch-measurements.json) as the
    /// guest they were measured for, as `launch-local-vm` of a -sev variant does: SEV-SNP with the
    /// hashes of the kernel, initrd and command line, by direct boot, with the vCPU count and model of
    /// slot A's first measurement, the one launchers start. --no-sev still drops the SEV settings.
    pub fn with_sev_launch(mut self, dir: &Path) -> Result<VmFlags, VmError> {
        let path = dir.join(crate::sev_launch::MEASUREMENTS_FILE);
        let text = fs::read_to_string(&path).map_err(PathIoError::with("read", &path))?;
        let bad = |problem: &str| VmError::BadConfig { problem: format!("{}: {problem}", path.display()) };
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|error| bad(&error.to_string()))?;
        let first = json["measurements"]
            .as_array()
            .and_then(|measurements| measurements.iter().find(|measurement| measurement["slot"] == "A"))
            .ok_or_else(|| bad("no measurement of slot A"))?;
        let vcpus = first["vcpus"].as_u64().and_then(|count| u32::try_from(count).ok()).filter(|&count| count > 0);
        let vcpu_type = first["vcpu_type"].as_str();
        let (Some(vcpus), Some(vcpu_type)) = (vcpus, vcpu_type) else {
            return Err(bad("slot A's measurement has no vcpus and vcpu_type"));
        };
        self.cpus = vcpus;
        self.cpu = Some(vcpu_type.to_owned());
        self.kernel = Some(dir.join("vmlinuz"));
        self.initrd = Some(dir.join("initrd.img"));
        self.append = None;
        self.append_file = Some(dir.join("cmdline-A"));
        self.sev = Some(SevKind::SevSnp);
        self.sev_kernel_hashes = true;
        Ok(self)
    }

    /// The configuration; reads the --append-file.
    pub fn into_config(self) -> Result<VmConfig, VmError> {
        // clap refuses --append with --append-file.
        let append = match &self.append_file {
            Some(path) => Some(read_append_file(path)?),
            None => self.append,
        };
        let direct_boot = self.kernel.map(|kernel| DirectBoot { kernel, initrd: self.initrd, append });
        let sev = self.sev.filter(|_| !self.no_sev).map(|kind| Sev {
            kind,
            firmware: self.sev_firmware,
            cbitpos: self.sev_cbitpos,
            reduced_phys_bits: self.sev_reduced_phys_bits,
            kernel_hashes: self.sev_kernel_hashes,
        });
        Ok(VmConfig {
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
            direct_boot,
            sev,
            config_disk: None,
            tcg_single_thread: false,
        })
    }
}

/// The content of `path` as a kernel command line, unchanged: an SEV-SNP launch measurement hashes
/// the exact bytes QEMU gets, and the files the build writes end without a newline, so trimming one
/// here would make a different guest than the one the build measured.
fn read_append_file(path: &Path) -> Result<String, VmError> {
    let bytes = fs::read(path).map_err(PathIoError::with("read", path))?;
    let bad = |problem| VmError::BadAppendFile { path: path.to_owned(), problem };
    // A NUL cannot be in a program argument; QEMU's own terminating NUL follows the text.
    if bytes.contains(&0) {
        return Err(bad("has a NUL byte, which no program argument can carry"));
    }
    String::from_utf8(bytes).map_err(|_| bad("is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        vm: VmFlags,
    }

    /// The configuration of `args` with no ICOS_QEMU_* variable from the test's environment.
    fn parse(args: &[&str]) -> Result<VmConfig, String> {
        let mut command = <Cli as clap::CommandFactory>::command();
        command = command.mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(["test"].iter().chain(args)).map_err(|error| error.to_string())?;
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).map_err(|error| error.to_string())?;
        cli.vm.into_config().map_err(|error| error.to_string())
    }

    #[test]
    fn direct_boot_without_sev() {
        let config = parse(&["--kernel", "/k", "--initrd", "/i", "--append", "-- console=ttyS0"]).unwrap();
        assert_eq!(
            config.direct_boot,
            Some(DirectBoot {
                kernel: "/k".into(),
                initrd: Some("/i".into()),
                append: Some("-- console=ttyS0".into())
            })
        );
        assert_eq!(config.sev, None);
        assert_eq!(parse(&[]).unwrap().direct_boot, None);
        for lonely in [&["--initrd", "/i"][..], &["--append", "quiet"], &["--append-file", "/f"]] {
            let error = parse(lonely).unwrap_err();
            assert!(error.contains("--kernel"), "{lonely:?}: {error}");
        }
    }

    #[test]
    fn the_append_file_is_taken_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdline");
        let text = "  console=ttyS0 root=PARTUUID=1234 dm-mod.create=\"vroot,,,ro,0 8 verity 1\"\n";
        fs::write(&file, text).unwrap();
        let file_arg = file.to_str().unwrap();
        let config = parse(&["--kernel", "/k", "--append-file", file_arg]).unwrap();
        assert_eq!(config.direct_boot.unwrap().append.as_deref(), Some(text));

        let error = parse(&["--kernel", "/k", "--append-file", file_arg, "--append", "quiet"]).unwrap_err();
        assert!(error.contains("cannot be used with"), "{error}");

        fs::write(&file, b"console=ttyS0 \xff").unwrap();
        let error = parse(&["--kernel", "/k", "--append-file", file_arg]).unwrap_err();
        assert_eq!(error, format!("{file_arg}: the kernel command line is not UTF-8"));
        fs::write(&file, b"console=ttyS0\0quiet").unwrap();
        let error = parse(&["--kernel", "/k", "--append-file", file_arg]).unwrap_err();
        assert!(error.starts_with(&format!("{file_arg}: the kernel command line has a NUL byte")), "{error}");
        let missing = dir.path().join("missing");
        let error = parse(&["--kernel", "/k", "--append-file", missing.to_str().unwrap()]).unwrap_err();
        assert!(error.starts_with(&format!("cannot read {}: ", missing.display())), "{error}");
    }

    #[test]
    fn sev_with_kernel_hashes_and_no_sev() {
        let sev = ["--sev", "sev-snp", "--sev-cbitpos", "47", "--kernel", "/k", "--sev-kernel-hashes"];
        let config = parse(&sev).unwrap();
        assert_eq!(config.sev, Some(Sev { cbitpos: 47, kernel_hashes: true, ..Sev::new(SevKind::SevSnp) }));
        // --no-sev keeps everything but the SEV settings.
        let without = parse(&[&sev[..], &["--no-sev"]].concat()).unwrap();
        assert_eq!(without, VmConfig { sev: None, ..config });
        assert!(without.direct_boot.is_some());
        // Alone, it changes nothing.
        assert_eq!(parse(&["--no-sev"]).unwrap(), parse(&[]).unwrap());
        for (args, missing) in [
            (&["--sev-kernel-hashes", "--kernel", "/k"][..], "--sev"),
            (&["--sev", "sev", "--sev-kernel-hashes"], "--kernel"),
        ] {
            let error = parse(args).unwrap_err();
            assert!(error.contains(missing), "{args:?}: {error}");
        }
    }
}
