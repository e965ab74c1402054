//! Whether this host can run an AMD SEV or SEV-SNP guest, and why not.
//!
//! QEMU finds out too, but only once it starts, after a disk image of gigabytes has been copied,
//! and its message (an ioctl that failed) does not say what the host lacks. A confidential guest
//! needs four layers, checked here bottom up so that the first one missing is the reason: KVM;
//! AMD's KVM module, kvm_amd; SEV or SEV-SNP turned on in it, which takes both the firmware (BIOS)
//! and the kernel; and `/dev/sev`, the AMD Platform Security Processor driver (ccp) through which
//! QEMU launches and measures the guest.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::config::SevKind;
use super::VmError;

/// What a host lacks to run a SEV or SEV-SNP guest.
#[derive(Debug, thiserror::Error)]
pub enum SevHostProblem {
    #[error("cannot open {path} read-write: {source}")]
    NoKvm { path: PathBuf, source: io::Error },
    #[error("kvm_amd is not loaded: not an AMD host with KVM")]
    NoKvmAmd,
    #[error(
        "{path} says {value:?}: {kind} is not enabled (off in the firmware/BIOS, or the kernel could not set it up)"
    )]
    Disabled { path: PathBuf, value: String, kind: SevKind },
    #[error("{path} is missing: a kernel without {kind} support in kvm_amd")]
    NoParameter { path: PathBuf, kind: SevKind },
    #[error("cannot read {path}: {source}")]
    UnreadableParameter { path: PathBuf, source: io::Error },
    #[error("{path} is missing: the AMD PSP driver (ccp) is not loaded")]
    NoSevDevice { path: PathBuf },
}

/// Checks that this host can run a `kind` guest; the error says what it lacks.
pub fn check_sev_host(kind: SevKind) -> Result<(), VmError> {
    check_sev_host_in(Path::new("/"), kind)
}

/// [`check_sev_host`] with `/dev` and `/sys` under `root`, so that tests can fake a host.
fn check_sev_host_in(root: &Path, kind: SevKind) -> Result<(), VmError> {
    sev_host_problem(root, kind).map_or(Ok(()), |reason| Err(VmError::NoSevHost { kind, reason }))
}

fn sev_host_problem(root: &Path, kind: SevKind) -> Option<SevHostProblem> {
    let kvm = root.join("dev/kvm");
    if let Err(source) = OpenOptions::new().read(true).write(true).open(&kvm) {
        return Some(SevHostProblem::NoKvm { path: kvm, source });
    }
    let kvm_amd = root.join("sys/module/kvm_amd");
    if !kvm_amd.is_dir() {
        return Some(SevHostProblem::NoKvmAmd);
    }
    let parameter = kvm_amd.join("parameters").join(match kind {
        SevKind::Sev => "sev",
        SevKind::SevSnp => "sev_snp",
    });
    match fs::read_to_string(&parameter) {
        // A bool parameter reads Y or N; kernels before 5.16 had integer ones, 1 or 0.
        Ok(value) if matches!(value.trim(), "Y" | "1") => {}
        Ok(value) => return Some(SevHostProblem::Disabled { path: parameter, value: value.trim().to_owned(), kind }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Some(SevHostProblem::NoParameter { path: parameter, kind });
        }
        Err(source) => return Some(SevHostProblem::UnreadableParameter { path: parameter, source }),
    }
    let sev_device = root.join("dev/sev");
    if !sev_device.exists() {
        return Some(SevHostProblem::NoSevDevice { path: sev_device });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host tree with every layer of a `kind` host in place.
    fn capable_host(kind: SevKind) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let parameters = root.path().join("sys/module/kvm_amd/parameters");
        fs::create_dir_all(&parameters).unwrap();
        fs::create_dir_all(root.path().join("dev")).unwrap();
        fs::write(root.path().join("dev/kvm"), b"").unwrap();
        fs::write(root.path().join("dev/sev"), b"").unwrap();
        let name = if kind == SevKind::SevSnp { "sev_snp" } else { "sev" };
        fs::write(parameters.join(name), b"Y\n").unwrap();
        root
    }

    fn problem(root: &Path, kind: SevKind) -> SevHostProblem {
        match check_sev_host_in(root, kind) {
            Err(VmError::NoSevHost { kind: reported, reason }) => {
                assert_eq!(reported, kind);
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_capable_host_passes() {
        for kind in [SevKind::Sev, SevKind::SevSnp] {
            let root = capable_host(kind);
            check_sev_host_in(root.path(), kind).unwrap();
            // An integer parameter of an older kernel.
            let name = if kind == SevKind::SevSnp { "sev_snp" } else { "sev" };
            fs::write(root.path().join("sys/module/kvm_amd/parameters").join(name), b"1\n").unwrap();
            check_sev_host_in(root.path(), kind).unwrap();
        }
    }

    #[test]
    fn each_missing_layer_is_the_reason_in_order() {
        let root = capable_host(SevKind::SevSnp);
        let path = |relative: &str| root.path().join(relative);

        // SEV alone is a different parameter, which this host lacks.
        let reason = problem(root.path(), SevKind::Sev);
        assert!(
            matches!(&reason, SevHostProblem::NoParameter { path: p, kind: SevKind::Sev }
                if *p == path("sys/module/kvm_amd/parameters/sev")),
            "{reason:?}"
        );

        fs::remove_file(path("dev/sev")).unwrap();
        let reason = problem(root.path(), SevKind::SevSnp);
        assert!(matches!(&reason, SevHostProblem::NoSevDevice { path: p } if *p == path("dev/sev")), "{reason:?}");
        assert!(reason.to_string().ends_with("/dev/sev is missing: the AMD PSP driver (ccp) is not loaded"));

        let parameter = path("sys/module/kvm_amd/parameters/sev_snp");
        fs::write(&parameter, b"N\n").unwrap();
        let reason = problem(root.path(), SevKind::SevSnp);
        assert!(
            matches!(&reason, SevHostProblem::Disabled { path: p, value, kind: SevKind::SevSnp }
                if *p == parameter && value == "N"),
            "{reason:?}"
        );
        assert_eq!(
            reason.to_string(),
            format!(
                "{} says \"N\": SEV-SNP is not enabled (off in the firmware/BIOS, or the kernel could not set it up)",
                parameter.display()
            )
        );

        fs::remove_file(&parameter).unwrap();
        fs::create_dir(&parameter).unwrap();
        let reason = problem(root.path(), SevKind::SevSnp);
        assert!(
            matches!(&reason, SevHostProblem::UnreadableParameter { path: p, .. } if *p == parameter),
            "{reason:?}"
        );

        fs::remove_dir(&parameter).unwrap();
        let reason = problem(root.path(), SevKind::SevSnp);
        assert!(matches!(&reason, SevHostProblem::NoParameter { path: p, .. } if *p == parameter), "{reason:?}");
        assert!(reason.to_string().ends_with("is missing: a kernel without SEV-SNP support in kvm_amd"), "{reason}");

        fs::remove_dir_all(path("sys/module/kvm_amd")).unwrap();
        let reason = problem(root.path(), SevKind::SevSnp);
        assert!(matches!(reason, SevHostProblem::NoKvmAmd), "{reason:?}");
        assert_eq!(reason.to_string(), "kvm_amd is not loaded: not an AMD host with KVM");

        fs::remove_file(path("dev/kvm")).unwrap();
        let reason = problem(root.path(), SevKind::SevSnp);
        assert!(matches!(&reason, SevHostProblem::NoKvm { path: p, .. } if *p == path("dev/kvm")), "{reason:?}");
        assert!(reason.to_string().starts_with(&format!("cannot open {} read-write: ", path("dev/kvm").display())));
    }

    #[test]
    fn the_refusal_says_what_boots_without_sev() {
        let error = check_sev_host_in(Path::new("/nonexistent"), SevKind::SevSnp).unwrap_err().to_string();
        assert!(
            error.starts_with("this host cannot run an SEV-SNP guest: cannot open /nonexistent/dev/kvm"),
            "{error}"
        );
        assert!(error.ends_with("--no-sev boots the same kernel, initrd and command line without SEV"), "{error}");
    }

    /// This machine has no SEV-SNP (the development and CI hosts are Intel, or lack /dev/kvm in a
    /// sandbox): the check must refuse, for a reason that the host's files confirm.
    #[test]
    fn this_host_runs_no_sev_snp_guest() {
        let reason = match check_sev_host(SevKind::SevSnp) {
            Err(VmError::NoSevHost { kind: SevKind::SevSnp, reason }) => reason,
            other => panic!("expected this host to be refused for SEV-SNP, got {other:?}"),
        };
        match &reason {
            SevHostProblem::NoKvm { path, .. } => assert_eq!(path, Path::new("/dev/kvm")),
            SevHostProblem::NoKvmAmd => assert!(!Path::new("/sys/module/kvm_amd").exists()),
            SevHostProblem::Disabled { path, value, .. } => {
                assert_eq!(path, Path::new("/sys/module/kvm_amd/parameters/sev_snp"));
                assert!(value != "Y" && value != "1", "{value}");
            }
            SevHostProblem::NoParameter { path, .. } => {
                assert_eq!(path, Path::new("/sys/module/kvm_amd/parameters/sev_snp"));
                assert!(!path.exists());
            }
            SevHostProblem::NoSevDevice { path } => assert!(path == Path::new("/dev/sev") && !path.exists()),
            SevHostProblem::UnreadableParameter { .. } => panic!("an unexpected reason: {reason}"),
        }
    }
}
