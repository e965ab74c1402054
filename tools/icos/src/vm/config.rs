//! What a VM is made of: QEMU, memory, CPUs, firmware, accelerator, network, vsock, shares, a
//! kernel booted directly and confidential computing. Every setting that comes from a user is parsed here, with an error that
//! says what was expected, so that a typo fails before QEMU starts.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::VmError;

pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";
pub const DEFAULT_MEMORY_MIB: u64 = 2048;
pub const DEFAULT_CPUS: u32 = 2;
/// Debian's `ovmf` package: the 4 MiB UEFI firmware, code and variables template.
pub const DEFAULT_OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const DEFAULT_OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Debian's `ovmf` package: the stateless AmdSev build, which SEV measures as a whole.
pub const DEFAULT_SEV_FIRMWARE: &str = "/usr/share/ovmf/OVMF.amdsev.fd";
/// The lowest guest CID: 0 to 2 are the hypervisor, the local loopback and the host.
pub const MIN_GUEST_CID: u32 = 3;
/// The C-bit position and physical address reduction of current AMD EPYC CPUs (CPUID 0x8000001F).
pub const DEFAULT_CBITPOS: u32 = 51;
pub const DEFAULT_REDUCED_PHYS_BITS: u32 = 1;
/// QEMU's limit on a 9p mount tag (MAX_TAG_LEN - 1).
const MAX_TAG_LEN: usize = 31;
/// A guest bigger than 1 TiB is a typo, not a test VM.
const MAX_MEMORY_MIB: u64 = 1 << 20;

/// Everything about a VM except the disk image and where its private files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The QEMU binary, looked up in PATH when it has no '/'.
    pub qemu: PathBuf,
    pub memory_mib: u64,
    pub cpus: u32,
    /// The `-cpu` model; `None` picks `host` with KVM and `max` with TCG (OVMF faults under TCG
    /// with QEMU's default model).
    pub cpu_model: Option<String>,
    /// UEFI firmware, mapped read-only as the first pflash device (not used with SEV).
    pub ovmf_code: PathBuf,
    /// The UEFI variables template that each VM gets a private, writable copy of.
    pub ovmf_vars: PathBuf,
    pub accel: AccelSetting,
    pub port_forwards: Vec<PortForward>,
    pub vsock: VsockSetting,
    pub shares: Vec<Share>,
    /// Appended to QEMU's arguments last, so they can add devices or override earlier options.
    pub extra_args: Vec<String>,
    /// A kernel that the firmware boots instead of the disk's boot loader, with or without SEV.
    pub direct_boot: Option<DirectBoot>,
    pub sev: Option<Sev>,
    /// A raw image attached read-only as the second disk: the configuration a host hands its
    /// guest (HostOS's GuestOS).
    pub config_disk: Option<PathBuf>,
    /// Under TCG, run every vCPU in one thread (`-accel tcg,thread=single`) instead of one thread
    /// each: slower, but without the multi-threaded TCG code in which QEMU 11.1 can abort.
    pub tcg_single_thread: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            qemu: PathBuf::from(DEFAULT_QEMU),
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
            cpu_model: None,
            ovmf_code: PathBuf::from(DEFAULT_OVMF_CODE),
            ovmf_vars: PathBuf::from(DEFAULT_OVMF_VARS),
            accel: AccelSetting::Auto,
            port_forwards: Vec::new(),
            vsock: VsockSetting::Auto,
            shares: Vec::new(),
            extra_args: Vec::new(),
            config_disk: None,
            tcg_single_thread: false,
            direct_boot: None,
            sev: None,
        }
    }
}

/// Parses a memory size into MiB: a plain number is MiB (as QEMU's `-m` reads it), `M`/`MiB` and
/// `G`/`GiB` (either case) are powers of 1024: `2048`, `512M`, `4G`.
pub fn parse_memory(text: &str) -> Result<u64, VmError> {
    let bad = |problem| VmError::BadMemory { value: text.to_owned(), problem };
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let expected =
        "expected MiB as a number, or a number with an M or G suffix (powers of 1024), such as 2048, 512M or 4G";
    if digits.is_empty() {
        return Err(bad(expected));
    }
    let factor = match suffix.to_ascii_lowercase().as_str() {
        "" | "m" | "mib" => 1,
        "g" | "gib" => 1024,
        _ => return Err(bad(expected)),
    };
    let too_large = || bad("is larger than 1 TiB");
    let mib = digits.parse::<u64>().map_err(|_| too_large())?.checked_mul(factor).ok_or_else(too_large)?;
    if mib == 0 {
        return Err(bad("a VM needs some memory"));
    }
    if mib > MAX_MEMORY_MIB {
        return Err(too_large());
    }
    Ok(mib)
}

/// Which accelerator to use: `Auto` takes KVM only when a probe shows that it runs a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelSetting {
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for AccelSetting {
    type Err = VmError;

    fn from_str(text: &str) -> Result<Self, VmError> {
        match text {
            "auto" => Ok(AccelSetting::Auto),
            "kvm" => Ok(AccelSetting::Kvm),
            "tcg" => Ok(AccelSetting::Tcg),
            _ => Err(VmError::BadAccel { value: text.to_owned() }),
        }
    }
}

impl fmt::Display for AccelSetting {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(match self {
            AccelSetting::Auto => "auto",
            AccelSetting::Kvm => "kvm",
            AccelSetting::Tcg => "tcg",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A host port that QEMU's user-mode network forwards to a guest port: `tcp:8080:80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub protocol: Protocol,
    pub host_port: u16,
    pub guest_port: u16,
}

impl FromStr for PortForward {
    type Err = VmError;

    fn from_str(text: &str) -> Result<Self, VmError> {
        let bad = |problem: String| VmError::BadPortForward { value: text.to_owned(), problem };
        let parts: Vec<&str> = text.split(':').collect();
        let [protocol, host, guest] = parts[..] else {
            return Err(bad("expected tcp:HOSTPORT:GUESTPORT or udp:HOSTPORT:GUESTPORT".into()));
        };
        let protocol = match protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(bad(format!("the protocol {protocol:?} is neither tcp nor udp"))),
        };
        let port = |text: &str| match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(bad(format!("{text:?} is not a port number (1 to 65535)"))),
        };
        Ok(PortForward { protocol, host_port: port(host)?, guest_port: port(guest)? })
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "{}:{}:{}", self.protocol, self.host_port, self.guest_port)
    }
}

/// Whether the guest gets a vsock device, and its CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VsockSetting {
    /// CID [`MIN_GUEST_CID`] when the host has `/dev/vhost-vsock`, none otherwise.
    Auto,
    Off,
    /// This CID, and an error when the host has no vsock.
    Cid(u32),
}

impl FromStr for VsockSetting {
    type Err = VmError;

    fn from_str(text: &str) -> Result<Self, VmError> {
        match text {
            "auto" => return Ok(VsockSetting::Auto),
            "off" => return Ok(VsockSetting::Off),
            _ => {}
        }
        let bad = |problem| VmError::BadVsock { value: text.to_owned(), problem };
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(bad("expected auto, off or a guest CID (3 to 4294967294)"));
        }
        match text.parse::<u32>() {
            // u32::MAX is VMADDR_CID_ANY.
            Ok(cid) if (MIN_GUEST_CID..u32::MAX).contains(&cid) => Ok(VsockSetting::Cid(cid)),
            _ => Err(bad("a guest CID is 3 to 4294967294: 0 to 2 are reserved for the host side")),
        }
    }
}

impl fmt::Display for VsockSetting {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        match self {
            VsockSetting::Auto => formatter.write_str("auto"),
            VsockSetting::Off => formatter.write_str("off"),
            VsockSetting::Cid(cid) => write!(formatter, "{cid}"),
        }
    }
}

/// A host directory that the guest can mount read-only over 9p:
/// `mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub path: PathBuf,
}

impl Share {
    /// A share, with its tag checked.
    pub fn new(tag: &str, path: impl Into<PathBuf>) -> Result<Share, VmError> {
        let bad = |problem| VmError::BadShare { value: tag.to_owned(), problem };
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(bad("a mount tag has 1 to 31 characters"));
        }
        if !tag.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"_.-".contains(&byte)) {
            return Err(bad("a mount tag has only letters, digits, '_', '.' and '-'"));
        }
        let path = path.into();
        if path.as_os_str().is_empty() {
            return Err(bad("the directory is empty"));
        }
        Ok(Share { tag: tag.to_owned(), path })
    }
}

/// Parses `TAG=DIR`.
impl FromStr for Share {
    type Err = VmError;

    fn from_str(text: &str) -> Result<Self, VmError> {
        let (tag, path) = text
            .split_once('=')
            .ok_or_else(|| VmError::BadShare { value: text.to_owned(), problem: "expected TAG=DIR" })?;
        Share::new(tag, path).map_err(|error| match error {
            VmError::BadShare { problem, .. } => VmError::BadShare { value: text.to_owned(), problem },
            other => other,
        })
    }
}

/// A kernel, initrd and command line that QEMU hands to the firmware (`-kernel`, `-initrd`,
/// `-append`), which boots them instead of the disk's boot loader. SEV can measure all three
/// ([`Sev::kernel_hashes`]); without SEV, OVMF boots them the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The kernel command line, exactly as QEMU gets it: an SEV-SNP launch measurement hashes
    /// these bytes, so nothing may be added or trimmed on the way.
    pub append: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevKind {
    /// SEV (with SEV-ES when the policy asks for it).
    Sev,
    /// SEV-SNP: guest memory must come from a shared memfd backend.
    SevSnp,
}

impl FromStr for SevKind {
    type Err = VmError;

    fn from_str(text: &str) -> Result<Self, VmError> {
        match text {
            "sev" => Ok(SevKind::Sev),
            "sev-snp" => Ok(SevKind::SevSnp),
            _ => Err(VmError::BadSevKind { value: text.to_owned() }),
        }
    }
}

/// The name AMD gives the technology, for messages (the flag values are lower case).
impl fmt::Display for SevKind {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(match self {
            SevKind::Sev => "SEV",
            SevKind::SevSnp => "SEV-SNP",
        })
    }
}

/// An AMD SEV or SEV-SNP guest: firmware is a single measured `-bios` image, and a kernel booted
/// directly ([`VmConfig::direct_boot`]) can be measured with it (`kernel-hashes=on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sev {
    pub kind: SevKind,
    /// The stateless AmdSev OVMF build.
    pub firmware: PathBuf,
    pub cbitpos: u32,
    pub reduced_phys_bits: u32,
    /// Adds the hashes of kernel, initrd and command line to the launch measurement; needs a
    /// direct boot.
    pub kernel_hashes: bool,
}

impl Sev {
    /// A `kind` guest with the default firmware and CPU parameters.
    pub fn new(kind: SevKind) -> Sev {
        Sev {
            kind,
            firmware: PathBuf::from(DEFAULT_SEV_FIRMWARE),
            cbitpos: DEFAULT_CBITPOS,
            reduced_phys_bits: DEFAULT_REDUCED_PHYS_BITS,
            kernel_hashes: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_mib_or_suffixed() {
        assert_eq!(parse_memory("2048").unwrap(), 2048);
        assert_eq!(parse_memory("512M").unwrap(), 512);
        assert_eq!(parse_memory("4G").unwrap(), 4096);
        assert_eq!(parse_memory("4g").unwrap(), 4096);
        assert_eq!(parse_memory("1GiB").unwrap(), 1024);
        for bad in ["", "G", "4 G", "4GB", "1.5G", "-1", "4T", "0x10"] {
            let error = parse_memory(bad).unwrap_err().to_string();
            assert!(error.contains("such as 2048, 512M or 4G"), "{bad:?}: {error}");
        }
        assert!(parse_memory("0").unwrap_err().to_string().contains("needs some memory"));
        assert!(parse_memory("2000G").unwrap_err().to_string().contains("larger than 1 TiB"));
        assert!(parse_memory("99999999999999999999").unwrap_err().to_string().contains("larger"));
    }

    #[test]
    fn port_forwards_are_checked() {
        let forward: PortForward = "tcp:8080:80".parse().unwrap();
        assert_eq!(forward, PortForward { protocol: Protocol::Tcp, host_port: 8080, guest_port: 80 });
        assert_eq!(forward.to_string(), "tcp:8080:80");
        assert_eq!("udp:5353:53".parse::<PortForward>().unwrap().protocol, Protocol::Udp);
        let cases = [
            ("8080:80", "expected tcp:HOSTPORT:GUESTPORT"),
            ("tcp:8080:80:1", "expected tcp:HOSTPORT:GUESTPORT"),
            ("sctp:1:2", "\"sctp\" is neither tcp nor udp"),
            ("tcp:0:22", "\"0\" is not a port number"),
            ("tcp:2222:65536", "\"65536\" is not a port number"),
            ("tcp::22", "\"\" is not a port number"),
        ];
        for (text, message) in cases {
            let error = text.parse::<PortForward>().unwrap_err().to_string();
            assert!(error.contains(message) && error.contains(text), "{text:?}: {error}");
        }
    }

    #[test]
    fn vsock_settings() {
        assert_eq!("auto".parse::<VsockSetting>().unwrap(), VsockSetting::Auto);
        assert_eq!("off".parse::<VsockSetting>().unwrap(), VsockSetting::Off);
        assert_eq!("42".parse::<VsockSetting>().unwrap(), VsockSetting::Cid(42));
        for bad in ["2", "4294967295", "99999999999"] {
            let error = bad.parse::<VsockSetting>().unwrap_err().to_string();
            assert!(error.contains("0 to 2 are reserved"), "{bad}: {error}");
        }
        for bad in ["", "on", "-3", "+3"] {
            let error = bad.parse::<VsockSetting>().unwrap_err().to_string();
            assert!(error.contains("expected auto, off or a guest CID"), "{bad}: {error}");
        }
    }

    #[test]
    fn shares_and_other_words() {
        let share: Share = "src=/work/main".parse().unwrap();
        assert_eq!(share, Share { tag: "src".into(), path: PathBuf::from("/work/main") });
        for (bad, message) in [
            ("nodir", "expected TAG=DIR"),
            ("=/tmp", "1 to 31 characters"),
            ("a b=/tmp", "only letters"),
            ("tag=", "directory is empty"),
        ] {
            let error = bad.parse::<Share>().unwrap_err().to_string();
            assert!(error.contains(message) && error.contains(bad), "{bad}: {error}");
        }
        assert!(Share::new(&"x".repeat(32), "/tmp").is_err());
        assert_eq!("sev-snp".parse::<SevKind>().unwrap(), SevKind::SevSnp);
        assert_eq!("sev".parse::<SevKind>().unwrap().to_string(), "SEV");
        assert_eq!(SevKind::SevSnp.to_string(), "SEV-SNP");
        assert!("snp".parse::<SevKind>().is_err());
        assert_eq!("tcg".parse::<AccelSetting>().unwrap(), AccelSetting::Tcg);
        assert!("hvf".parse::<AccelSetting>().unwrap_err().to_string().contains("auto, kvm or tcg"));
    }
}
