//! The launch files of a `-sev` variant: what a host needs to start its image as an SEV-SNP guest
//! by direct kernel boot, and what a verifier compares the guest's attestation report with.
//!
//! An SEV-SNP guest booted by QEMU with `kernel-hashes=on` has no boot loader whose choices the
//! measurement could follow: the host passes the kernel, the initrd and the command line, and the
//! launch digest covers them. So they are taken from the image itself (its boot partition, where
//! GRUB would read them: `/vmlinuz`, `/initrd.img`, and each slot's `BOOT_ARGS_<slot>` from
//! `/boot_args`, root hash included), written out next to the image, and measured for every vCPU
//! configuration the variant supports:
//!
//! - `vmlinuz`, `initrd.img`: the files GRUB would load, symbolic links followed;
//! - `cmdline-<slot>`: the slot's command line, byte for byte as GRUB's `source` gives it and
//!   without a newline, since QEMU's `-append` gets exactly these bytes and the digest hashes
//!   them untrimmed;
//! - `launch-measurements.json`: per slot and configuration, the SEV-SNP launch digest with every
//!   input that went into it (the firmware's SHA-256 and OVMF hash, vCPU count and type, guest
//!   features, the SHA-256 of kernel, initrd and command line).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ext4::read::{Ext4Filesystem, Ext4ReadError};
use crate::hashing::hex;
use crate::image_source::{ImageSource, ImageSourceError};
use crate::io_error::PathIoError;
use crate::output::{write_atomically, write_file_atomically, OutputError, WriteFileError};
use crate::package::PackageError;
use crate::sha256sums::{sha256_file_digest, Sha256SumsError};
use crate::snp::{self, KernelHashes, Launch, Ovmf, SnpError, VcpuType};

/// Where GRUB finds the kernel, the initrd and the command lines on a boot filesystem
/// (ic-os/bootloader/grub.cfg.in).
pub const KERNEL_PATH: &[u8] = b"/vmlinuz";
pub const INITRD_PATH: &[u8] = b"/initrd.img";
pub const BOOT_ARGS_PATH: &[u8] = b"/boot_args";

/// The names of the launch files in the output directory.
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.img";
pub const MEASUREMENTS_FILE: &str = "launch-measurements.json";

/// The command line file of `slot`.
pub fn cmdline_file(slot: &str) -> String {
    format!("cmdline-{slot}")
}

/// The largest `/boot_args` read: a few command lines, not a file to hold in memory at any size.
const MAX_BOOT_ARGS: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SevLaunchError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Image(#[from] ImageSourceError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    WriteFile(#[from] WriteFileError),
    #[error(transparent)]
    Hash(#[from] Sha256SumsError),
    #[error(transparent)]
    Snp(#[from] SnpError),
    #[error("{image}: {source}")]
    Ext4 { image: PathBuf, source: Ext4ReadError },
    #[error("{image}: /boot_args is larger than {MAX_BOOT_ARGS} bytes: not a file of kernel command lines")]
    BootArgsTooLarge { image: PathBuf },
    #[error("{image}: /boot_args line {line}: {problem}")]
    BadBootArgs { image: PathBuf, line: usize, problem: String },
    #[error("{image}: /boot_args sets no BOOT_ARGS_{slot}")]
    NoSlot { image: PathBuf, slot: String },
    #[error("{0:?} is not VCPUS:VCPU_TYPE:GUEST_FEATURES, such as 2:EPYC-v4:0x1")]
    BadConfig(String),
    #[error("no vCPU configuration to measure")]
    NoConfigs,
}

/// One vCPU configuration a variant supports: `VCPUS:VCPU_TYPE:GUEST_FEATURES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuConfig {
    pub vcpus: u32,
    pub vcpu_type: VcpuType,
    pub guest_features: u64,
}

impl FromStr for VcpuConfig {
    type Err = SevLaunchError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SevLaunchError::BadConfig(text.to_owned());
        let mut parts = text.split(':');
        let (Some(vcpus), Some(vcpu_type), Some(features), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let vcpus = vcpus.parse::<u32>().ok().filter(|&count| count > 0).ok_or_else(bad)?;
        let guest_features = snp::parse_guest_features(features).map_err(|_| bad())?;
        Ok(VcpuConfig { vcpus, vcpu_type: vcpu_type.parse()?, guest_features })
    }
}

impl fmt::Display for VcpuConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "{}:{}:{:#x}", self.vcpus, self.vcpu_type.name, self.guest_features)
    }
}

/// What to make the launch files of.
#[derive(Debug, Clone)]
pub struct LaunchRequest<'a> {
    /// The boot filesystem: a partition's `.tzst` package or a raw ext4 image.
    pub boot_partition: &'a Path,
    /// The slots to measure, such as A and B.
    pub slots: &'a [String],
    /// The AmdSev OVMF the host starts the guest with.
    pub firmware: &'a Path,
    /// What the firmware is, for people (such as "ovmf 2026.08+ds-2", the Debian package).
    pub firmware_source: &'a str,
    pub configs: &'a [VcpuConfig],
    pub output_dir: &'a Path,
}

/// `launch-measurements.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchMeasurements {
    /// How the guest is started: QEMU, SEV-SNP, direct boot with kernel-hashes=on.
    pub vmm: &'static str,
    pub firmware: FirmwareRecord,
    pub kernel: FileRecord,
    pub initrd: FileRecord,
    pub measurements: Vec<Measurement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirmwareRecord {
    pub source: String,
    pub sha256: String,
    /// The launch digest of the firmware pages alone (`sev-snp-measure --mode snp:ovmf-hash`).
    pub ovmf_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    pub file: String,
    pub sha256: String,
}

/// One launch digest and everything it was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measurement {
    pub slot: String,
    pub cmdline_file: String,
    pub cmdline: String,
    /// SHA-256 of the command line with the NUL QEMU adds, as the SEV hashes table holds it.
    pub cmdline_sha256: String,
    pub vcpus: u32,
    pub vcpu_type: String,
    pub guest_features: String,
    /// SHA-384, hex: what the attestation report's MEASUREMENT field holds.
    pub launch_digest: String,
}

/// Writes the launch files of `request` into its output directory (each file whole or not at
/// all) and returns what `launch-measurements.json` says.
pub fn write_launch_files(request: &LaunchRequest) -> Result<LaunchMeasurements, SevLaunchError> {
    if request.configs.is_empty() {
        return Err(SevLaunchError::NoConfigs);
    }
    let image_path = request.boot_partition;
    // The reader needs random access: a packaged image is written sparse into an unnamed file next
    // to the outputs.
    let file = ImageSource::open(image_path)?.to_file(request.output_dir)?;
    let length = file.metadata().map_err(PathIoError::with("read", image_path))?.len();
    let ext4_error = |source| SevLaunchError::Ext4 { image: image_path.to_owned(), source };
    let mut filesystem = Ext4Filesystem::open(file, 0, length).map_err(ext4_error)?;

    let kernel_path = request.output_dir.join(KERNEL_FILE);
    let initrd_path = request.output_dir.join(INITRD_FILE);
    let kernel_sha256 = copy_out(&mut filesystem, KERNEL_PATH, &kernel_path, image_path)?;
    let initrd_sha256 = copy_out(&mut filesystem, INITRD_PATH, &initrd_path, image_path)?;
    let mut boot_args = Vec::new();
    let mut too_large = false;
    filesystem
        .read_file(BOOT_ARGS_PATH, &mut |bytes| {
            too_large |= boot_args.len() + bytes.len() > MAX_BOOT_ARGS;
            if !too_large {
                boot_args.extend_from_slice(bytes);
            }
        })
        .map_err(ext4_error)?;
    if too_large {
        return Err(SevLaunchError::BootArgsTooLarge { image: image_path.to_owned() });
    }
    // Closes the scratch copy of a packaged image, whose space is freed with it.
    drop(filesystem);
    let command_lines = parse_boot_args(&boot_args, image_path)?;

    let ovmf = Ovmf::read(request.firmware)?;
    let firmware = FirmwareRecord {
        source: request.firmware_source.to_owned(),
        sha256: hex(&sha256_file_digest(request.firmware)?),
        ovmf_hash: hex(&ovmf.hash()),
    };
    let mut measurements = Vec::new();
    for slot in request.slots {
        let cmdline = command_lines
            .get(slot)
            .ok_or_else(|| SevLaunchError::NoSlot { image: image_path.to_owned(), slot: slot.clone() })?;
        let cmdline_file = cmdline_file(slot);
        write_file_atomically(&request.output_dir.join(&cmdline_file), cmdline.as_bytes())?;
        // The digests taken while the files were written: neither is read again.
        let hashes = KernelHashes::from_digests(kernel_sha256, initrd_sha256, cmdline)?;
        for config in request.configs {
            let launch = Launch {
                vcpus: config.vcpus,
                vcpu_type: config.vcpu_type,
                guest_features: config.guest_features,
                kernel: Some(&hashes),
            };
            measurements.push(Measurement {
                slot: slot.clone(),
                cmdline_file: cmdline_file.clone(),
                cmdline: cmdline.clone(),
                cmdline_sha256: hex(&hashes.cmdline),
                vcpus: config.vcpus,
                vcpu_type: config.vcpu_type.name.to_owned(),
                guest_features: format!("{:#x}", config.guest_features),
                launch_digest: hex(&snp::launch_digest(&ovmf, request.firmware, &launch)?),
            });
        }
    }
    let record = LaunchMeasurements {
        vmm: "QEMU, SEV-SNP, direct kernel boot with kernel-hashes=on",
        firmware,
        kernel: FileRecord { file: KERNEL_FILE.to_owned(), sha256: hex(&kernel_sha256) },
        initrd: FileRecord { file: INITRD_FILE.to_owned(), sha256: hex(&initrd_sha256) },
        measurements,
    };
    let mut json = serde_json::to_string_pretty(&record).expect("a launch record serializes");
    json.push('\n');
    write_file_atomically(&request.output_dir.join(MEASUREMENTS_FILE), json.as_bytes())?;
    Ok(record)
}

/// Copies the regular file at `path` of the filesystem to `output`, returning its SHA-256.
fn copy_out(
    filesystem: &mut Ext4Filesystem<File>,
    path: &[u8],
    output: &Path,
    image: &Path,
) -> Result<[u8; 32], SevLaunchError> {
    write_atomically(output, |file| -> Result<[u8; 32], SevLaunchError> {
        let mut hasher = Sha256::new();
        let mut write_error = None;
        filesystem
            .read_file(path, &mut |bytes| {
                if write_error.is_none() {
                    hasher.update(bytes);
                    write_error = file.write_all(bytes).err();
                }
            })
            .map_err(|source| SevLaunchError::Ext4 { image: image.to_owned(), source })?;
        if let Some(error) = write_error {
            return Err(PathIoError::with("write", output)(error).into());
        }
        Ok(hasher.finalize().into())
    })
}

/// The command lines `/boot_args` sets, by slot: lines `BOOT_ARGS_<slot>="<command line>"`, as
/// `icos layout` and `icos verity boot-args` write them, comments and blank lines aside. What
/// GRUB's `source` would expand or unquote (`"`, `\`, `$`) is refused rather than guessed at.
pub fn parse_boot_args(text: &[u8], image: &Path) -> Result<BTreeMap<String, String>, SevLaunchError> {
    let mut command_lines = BTreeMap::new();
    let bad = |line: usize, problem: String| SevLaunchError::BadBootArgs { image: image.to_owned(), line, problem };
    let text = std::str::from_utf8(text).map_err(|error| {
        let line = 1 + text[..error.valid_up_to()].iter().filter(|&&byte| byte == b'\n').count();
        bad(line, "not UTF-8".into())
    })?;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(bad(number, format!("{line:?} is not NAME=\"VALUE\"")));
        };
        let Some(slot) = name.strip_prefix("BOOT_ARGS_").filter(|slot| !slot.is_empty()) else {
            return Err(bad(number, format!("{name:?} is not BOOT_ARGS_<slot>")));
        };
        let Some(value) = value.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) else {
            return Err(bad(number, format!("the value of {name} is not in double quotes")));
        };
        if let Some(special) = value.chars().find(|c| matches!(c, '"' | '\\' | '$')) {
            return Err(bad(number, format!("the value of {name} holds {special:?}, which GRUB would interpret")));
        }
        if command_lines.insert(slot.to_owned(), value.to_owned()).is_some() {
            return Err(bad(number, format!("{name} is set twice")));
        }
    }
    Ok(command_lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_args_as_icos_layout_writes_them() {
        let text = b"# Kernel arguments of each slot\n\
                     BOOT_ARGS_A=\"root=/dev/mapper/vroot icos.verity_root_hash=ab12 ro console=ttyS0,115200\"\n\
                     BOOT_ARGS_B=\" spaced  \"\n";
        let lines = parse_boot_args(text, Path::new("boot.img")).unwrap();
        assert_eq!(lines["A"], "root=/dev/mapper/vroot icos.verity_root_hash=ab12 ro console=ttyS0,115200");
        // Kept as GRUB would pass it: the measurement hashes these bytes.
        assert_eq!(lines["B"], " spaced  ");
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn boot_args_that_grub_would_interpret_are_refused() {
        for (text, message) in [
            (&b"BOOT_ARGS_A=\"a $x\"\n"[..], "line 1: the value of BOOT_ARGS_A holds '$'"),
            (b"\nBOOT_ARGS_A=unquoted\n", "line 2: the value of BOOT_ARGS_A is not in double quotes"),
            (b"set x=1\n", "\"set x\" is not BOOT_ARGS_<slot>"),
            (b"linux /vmlinuz\n", "is not NAME=\"VALUE\""),
            (b"BOOT_ARGS_A=\"a\"\nBOOT_ARGS_A=\"b\"\n", "line 2: BOOT_ARGS_A is set twice"),
            (b"BOOT_ARGS_A=\"a\\\"b\"\n", "holds '\\\\'"),
            (b"\xff", "not UTF-8"),
        ] {
            let error = parse_boot_args(text, Path::new("p.tzst")).unwrap_err().to_string();
            assert!(error.starts_with("p.tzst: /boot_args line") && error.contains(message), "{error}");
        }
    }

    #[test]
    fn vcpu_configs() {
        let config: VcpuConfig = "2:EPYC-v4:0x1".parse().unwrap();
        assert_eq!((config.vcpus, config.vcpu_type.name, config.guest_features), (2, "EPYC-v4", 1));
        assert_eq!(config.to_string(), "2:EPYC-v4:0x1");
        assert_eq!("4:EPYC-Milan:33".parse::<VcpuConfig>().unwrap().guest_features, 0x21);
        for bad in ["2:EPYC-v4", "0:EPYC-v4:0x1", "2:EPYC-v4:0x1:x", "x:EPYC-v4:1", "2:EPYC-v4:0xzz"] {
            let error = bad.parse::<VcpuConfig>().unwrap_err().to_string();
            assert!(error.contains("is not VCPUS:VCPU_TYPE:GUEST_FEATURES"), "{bad}: {error}");
        }
        assert!(matches!(
            "2:Pentium:0x1".parse::<VcpuConfig>(),
            Err(SevLaunchError::Snp(SnpError::UnknownVcpuType(_)))
        ));
    }
}
