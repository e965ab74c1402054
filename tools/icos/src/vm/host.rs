//! The choices that depend on the host: the accelerator and the vsock device.
//!
//! A `/dev/kvm` that opens is not enough to pick KVM: on some hosts (nested virtualization, odd
//! CPU models) QEMU starts, prints `KVM internal error. Suberror: 1` as soon as the firmware runs,
//! and then hangs instead of exiting. So `auto` runs OVMF under KVM for a few seconds first, and
//! falls back to TCG, which is slow but works everywhere, when anything about KVM goes wrong.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::config::{AccelSetting, VmConfig, VsockSetting, MIN_GUEST_CID};
use super::image::copy_vars;
use super::qemu::kvm_probe_argv;
use super::VmError;

/// How long the KVM probe runs OVMF: the failure shows within a second; OVMF runs for minutes
/// without a disk, so a QEMU still running without complaint after this works.
pub const PROBE_TIME: Duration = Duration::from_secs(3);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const KVM_DEVICE: &str = "/dev/kvm";
const VSOCK_DEVICE: &str = "/dev/vhost-vsock";

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What [`resolve_host`] decided for the settings that depend on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChoices {
    pub accel: Accel,
    /// Why that accelerator, for the one line a launcher prints about it.
    pub accel_reason: String,
    /// The guest CID of the vsock device, if the guest gets one.
    pub vsock_cid: Option<u32>,
}

/// Decides the accelerator (running the KVM probe for `auto`, which takes [`PROBE_TIME`] when KVM
/// works) and the vsock device, and checks that the shared directories exist.
///
/// An SEV guest gets KVM without a probe: SEV runs under KVM only, and the probe, which runs the
/// normal OVMF, says nothing about SEV; whether the host can run the guest is
/// [`check_sev_host`](super::sev_host::check_sev_host)'s question.
pub fn resolve_host(config: &VmConfig) -> Result<HostChoices, VmError> {
    let (accel, accel_reason) = match (config.accel, config.sev.is_some()) {
        (AccelSetting::Tcg, true) => return Err(VmError::SevNeedsKvm),
        (_, true) => (Accel::Kvm, "SEV needs KVM".to_owned()),
        (AccelSetting::Kvm, false) => (Accel::Kvm, "asked for".to_owned()),
        (AccelSetting::Tcg, false) => (Accel::Tcg, "asked for".to_owned()),
        (AccelSetting::Auto, false) => match probe_kvm(config) {
            Ok(()) => (Accel::Kvm, format!("KVM ran OVMF for {PROBE_TIME:?} without errors")),
            Err(why) => (Accel::Tcg, format!("KVM does not work here: {why}")),
        },
    };
    let has_vsock = Path::new(VSOCK_DEVICE).exists();
    let vsock_cid = match config.vsock {
        VsockSetting::Off => None,
        VsockSetting::Auto => has_vsock.then_some(MIN_GUEST_CID),
        VsockSetting::Cid(cid) if has_vsock => Some(cid),
        VsockSetting::Cid(cid) => return Err(VmError::NoVsock { cid }),
    };
    for share in &config.shares {
        if !share.path.is_dir() {
            return Err(VmError::ShareNotADirectory { tag: share.tag.clone(), path: share.path.clone() });
        }
    }
    Ok(HostChoices { accel, accel_reason, vsock_cid })
}

/// Runs QEMU with KVM on OVMF (no disk, no output devices) for [`PROBE_TIME`]; `Err` says why KVM
/// cannot be used.
fn probe_kvm(config: &VmConfig) -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .map_err(|error| format!("cannot open {KVM_DEVICE} read-write: {error}"))?;
    let scratch = tempfile::Builder::new()
        .prefix("icos-kvm-probe-")
        .tempdir()
        .map_err(|error| format!("cannot create a temporary directory: {error}"))?;
    let vars = copy_vars(&config.ovmf_vars, scratch.path()).map_err(|error| error.to_string())?;
    let stderr_path = scratch.path().join("stderr");
    let stderr =
        File::create(&stderr_path).map_err(|error| format!("cannot create {}: {error}", stderr_path.display()))?;
    let argv = kvm_probe_argv(config, &vars).map_err(|error| error.to_string())?;
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", config.qemu.display()))?;
    let started = Instant::now();
    let verdict = loop {
        // The status first: once QEMU has exited, the stderr read next is complete.
        let status = child.try_wait();
        let stderr_text =
            fs::read(&stderr_path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
        if let Some(line) = stderr_text.lines().find(|line| line.to_ascii_lowercase().contains("kvm")) {
            break Err(format!("QEMU reported {:?}", line.trim()));
        }
        match status {
            Ok(Some(status)) if status.success() => break Ok(()),
            Ok(Some(status)) => {
                let last = stderr_text.lines().last().unwrap_or("no message").trim().to_owned();
                break Err(format!("QEMU exited ({status}): {last}"));
            }
            Ok(None) if started.elapsed() >= PROBE_TIME => break Ok(()),
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(error) => break Err(format!("cannot check on QEMU: {error}")),
        }
    };
    // Ends the probe whatever happened; a QEMU that exited already makes kill fail harmlessly.
    let _ = child.kill();
    let _ = child.wait();
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::config::{Sev, SevKind, Share};

    fn tcg_config() -> VmConfig {
        VmConfig { accel: AccelSetting::Tcg, vsock: VsockSetting::Off, ..VmConfig::default() }
    }

    #[test]
    fn forced_choices_do_not_probe() {
        let choices = resolve_host(&tcg_config()).unwrap();
        assert_eq!(choices, HostChoices { accel: Accel::Tcg, accel_reason: "asked for".into(), vsock_cid: None });
        let kvm = VmConfig { accel: AccelSetting::Kvm, ..tcg_config() };
        assert_eq!(resolve_host(&kvm).unwrap().accel, Accel::Kvm);
    }

    #[test]
    fn sev_takes_kvm_without_probing() {
        // The QEMU that the probe would start does not exist: a probe would fall back to TCG.
        let sev = VmConfig {
            accel: AccelSetting::Auto,
            qemu: "/nonexistent/qemu-system-x86_64".into(),
            sev: Some(Sev::new(SevKind::SevSnp)),
            ..tcg_config()
        };
        let choices = resolve_host(&sev).unwrap();
        assert_eq!(choices, HostChoices { accel: Accel::Kvm, accel_reason: "SEV needs KVM".into(), vsock_cid: None });
        let kvm = VmConfig { accel: AccelSetting::Kvm, ..sev.clone() };
        assert_eq!(resolve_host(&kvm).unwrap().accel_reason, "SEV needs KVM");
        let tcg = VmConfig { accel: AccelSetting::Tcg, ..sev };
        assert!(matches!(resolve_host(&tcg), Err(VmError::SevNeedsKvm)));
    }

    #[test]
    fn auto_falls_back_to_tcg_with_a_reason() {
        // A QEMU that cannot start stands for any broken KVM: the probe must say why.
        let dir = tempfile::tempdir().unwrap();
        let vars = dir.path().join("vars.fd");
        fs::write(&vars, b"vars").unwrap();
        let config = VmConfig {
            accel: AccelSetting::Auto,
            qemu: "/nonexistent/qemu-system-x86_64".into(),
            ovmf_vars: vars,
            ..tcg_config()
        };
        let choices = resolve_host(&config).unwrap();
        assert_eq!(choices.accel, Accel::Tcg);
        assert!(choices.accel_reason.starts_with("KVM does not work here: "), "{}", choices.accel_reason);
    }

    #[test]
    fn vsock_and_shares_are_checked_against_the_host() {
        let has_vsock = Path::new(VSOCK_DEVICE).exists();
        let auto = resolve_host(&VmConfig { vsock: VsockSetting::Auto, ..tcg_config() }).unwrap();
        assert_eq!(auto.vsock_cid, has_vsock.then_some(3));
        let forced = resolve_host(&VmConfig { vsock: VsockSetting::Cid(7), ..tcg_config() });
        match forced {
            Ok(choices) => assert!(has_vsock && choices.vsock_cid == Some(7)),
            Err(error) => {
                assert!(!has_vsock);
                assert!(error.to_string().contains("no /dev/vhost-vsock"), "{error}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let shares = vec![Share::new("ok", dir.path()).unwrap(), Share::new("gone", dir.path().join("gone")).unwrap()];
        let error = resolve_host(&VmConfig { shares, ..tcg_config() }).unwrap_err().to_string();
        assert!(error.contains("\"gone\"") && error.contains("is not a directory"), "{error}");
    }
}
