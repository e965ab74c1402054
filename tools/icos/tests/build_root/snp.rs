//! `icos measure snp` against virtee's `sev-snp-measure` 0.0.13 (PyPI), run from its wheel by the
//! build root's python3 on Debian's AmdSev firmware `/usr/share/ovmf/OVMF.amdsev.fd`: the same
//! launch digest for every combination of vCPU count, vCPU type, guest features, initrd and
//! command line, and for the OVMF pages alone; and `icos measure launch-files` on a boot filesystem
//! made by mke2fs, whose every launch digest sev-snp-measure recomputes. Bazel fetches the wheel
//! (`@sev_snp_measure_wheel`); a plain `cargo test` needs `SEV_SNP_MEASURE_WHEEL` set to it.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::common::{directory_entries, icos, run, tool_command};

const OVMF: &str = "/usr/share/ovmf/OVMF.amdsev.fd";

/// The sha256 of the OVMF.amdsev.fd the recorded digests below were made with (Debian's ovmf
/// 2026.08+ds-2, in the pinned build root).
const RECORDED_OVMF_SHA256: &str = "3e4fd0b3fe3b2dbe481c3d9e99418a034174f26cbe1f55aa212b0f18c12d2d6f";

fn wheel() -> PathBuf {
    let wheel = env::var_os("SEV_SNP_MEASURE_WHEEL").expect(
        "SEV_SNP_MEASURE_WHEEL names no sev-snp-measure wheel: Bazel sets it (@sev_snp_measure_wheel); \
         with cargo, set it to sev_snp_measure-0.0.13-py3-none-any.whl from PyPI",
    );
    fs::canonicalize(&wheel).unwrap_or_else(|error| panic!("{wheel:?}: {error}"))
}

/// Runs the sev-snp-measure command line from its wheel; returns what it printed, trimmed.
fn sev_snp_measure(args: &[&str]) -> String {
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", wheel())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-c")
        .arg("import sys; from sevsnpmeasure.cli import main; sys.argv[0] = 'sev-snp-measure'; main()")
        .args(args);
    String::from_utf8(run(&mut command).stdout).unwrap().trim().to_owned()
}

fn icos_measure(args: &[&str]) -> String {
    String::from_utf8(run(icos().arg("measure").args(args)).stdout).unwrap().trim().to_owned()
}

/// The synthetic kernel and initrd of the shared note (`k.bin`, `i.bin`).
fn kernel_and_initrd(dir: &Path) -> (PathBuf, PathBuf) {
    let kernel = dir.join("k.bin");
    let initrd = dir.join("i.bin");
    fs::write(&kernel, (0..65536u32).map(|i| (i * 13 + 5) as u8).collect::<Vec<_>>()).unwrap();
    fs::write(&initrd, (0..8192u32).map(|i| (i * 29 + 11) as u8).collect::<Vec<_>>()).unwrap();
    (kernel, initrd)
}

#[test]
fn launch_digests_match_sev_snp_measure() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = kernel_and_initrd(dir.path());
    let (kernel, initrd) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    assert_eq!(
        icos_measure(&["ovmf-hash", "--ovmf", OVMF]),
        sev_snp_measure(&["--mode", "snp:ovmf-hash", "--ovmf", OVMF])
    );
    let boots: [&[&str]; 5] = [
        &["--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0 root=/dev/vda"],
        // Trailing blanks are hashed, not trimmed (QEMU passes them on).
        &["--kernel", kernel, "--initrd", initrd, "--append", " console=ttyS0 root=/dev/vda "],
        &["--kernel", kernel, "--append", "console=ttyS0"],
        &["--kernel", kernel],
        &[],
    ];
    let mut compared = 0;
    for boot in boots {
        for (vcpus, vcpu_type, features) in
            [("1", "EPYC-v4", "0x1"), ("2", "EPYC-v4", "0x21"), ("4", "EPYC-Milan", "0x1"), ("3", "EPYC-Genoa", "0x21")]
        {
            let mut args =
                vec!["--vcpus", vcpus, "--vcpu-type", vcpu_type, "--guest-features", features, "--ovmf", OVMF];
            args.extend_from_slice(boot);
            let mut reference = vec!["--mode", "snp"];
            reference.extend_from_slice(&args);
            let mut ours = vec!["snp"];
            ours.extend_from_slice(&args);
            assert_eq!(icos_measure(&ours), sev_snp_measure(&reference), "with {args:?}");
            compared += 1;
        }
    }
    assert_eq!(compared, 20);
}

/// Digests made once with `sev-snp-measure --mode snp --vcpus V --vcpu-type EPYC-v4 --ovmf
/// /usr/share/ovmf/OVMF.amdsev.fd --kernel k.bin --initrd i.bin --append "console=ttyS0
/// root=/dev/vda " --guest-features F` (sev-snp-measure 0.0.13, on the OVMF whose sha256 is
/// RECORDED_OVMF_SHA256), so that a change of both tools at once cannot go unseen.
#[test]
fn recorded_digests_still_come_out() {
    let ovmf_sha256 = icos::hashing::hex(&Sha256::digest(fs::read(OVMF).unwrap()));
    assert_eq!(
        ovmf_sha256, RECORDED_OVMF_SHA256,
        "the build root's {OVMF} is not the one the digests were recorded with: record them again with the \
         command above (and the sha256 of the new firmware)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = kernel_and_initrd(dir.path());
    let (kernel, initrd) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    for (vcpus, features, expected) in [
        (
            "1",
            "0x1",
            "840d4a49bd2ec8561265b3dc54a5831f2753aa0f08e05f3b07cd65e31af4720ad8450c42f48915549e5bf3d614df14ee",
        ),
        (
            "2",
            "0x1",
            "81137c24a26605a187abd45f736a983d10b90496e34fa73d2d8774f9459f1a6a79994633931b0a765091f487904bd4bf",
        ),
        (
            "4",
            "0x21",
            "5b8e83e5830fe74ff2f93ac9fa5f41f2b4c7333098dcdccde5e78d38ee35f170850d19ee1667b8c604a042479a543f58",
        ),
    ] {
        let digest = icos_measure(&[
            "snp",
            "--vcpus",
            vcpus,
            "--vcpu-type",
            "EPYC-v4",
            "--ovmf",
            OVMF,
            "--kernel",
            kernel,
            "--initrd",
            initrd,
            "--append",
            "console=ttyS0 root=/dev/vda ",
            "--guest-features",
            features,
        ]);
        assert_eq!(digest, expected, "{vcpus} vCPUs, features {features}");
    }
    assert_eq!(
        icos_measure(&["ovmf-hash", "--ovmf", OVMF]),
        "9d0dd8be18c86e3fe3bf0038ed75ebf5340bee69fd2632c8ff9409964575960ae1f7e84be387d2e3467bc3508d1e4806"
    );
}

#[test]
fn a_file_that_is_no_sev_firmware_is_refused_by_name() {
    // OVMF's variable store: whole pages, but no footer table and no SEV metadata.
    let vars = "/usr/share/OVMF/OVMF_VARS_4M.fd";
    let output =
        icos().args(["measure", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf", vars]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains(&format!("{vars} is not an OVMF image for SEV-SNP")), "{message}");
}

/// A boot filesystem as GRUB finds it: /vmlinuz and /initrd.img links to versioned files, and
/// /boot_args with the command lines of `slots`.
fn boot_filesystem(dir: &Path, boot_args: &str) -> PathBuf {
    let tree = dir.join("boot");
    fs::create_dir(&tree).unwrap();
    let (kernel, initrd) = kernel_and_initrd(dir);
    fs::copy(kernel, tree.join("vmlinuz-6.1.0-28-amd64")).unwrap();
    fs::copy(initrd, tree.join("initrd.img-6.1.0-28-amd64")).unwrap();
    std::os::unix::fs::symlink("vmlinuz-6.1.0-28-amd64", tree.join("vmlinuz")).unwrap();
    std::os::unix::fs::symlink("initrd.img-6.1.0-28-amd64", tree.join("initrd.img")).unwrap();
    fs::write(tree.join("boot_args"), boot_args).unwrap();
    let image = dir.join("boot.img");
    fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
    run(tool_command("mke2fs").args(["-q", "-F", "-t", "ext4", "-d"]).arg(&tree).arg(&image));
    image
}

fn launch_files(image: &Path, output: &Path, slots: &[&str]) -> std::process::Output {
    let mut command = icos();
    command.args(["measure", "launch-files", "--boot-partition"]).arg(image);
    for slot in slots {
        command.args(["--slot", slot]);
    }
    command
        .args(["--ovmf", OVMF, "--ovmf-source", "test firmware", "--config", "2:EPYC-v4:0x1", "--config"])
        .arg("1:EPYC-Milan:0x21")
        .arg("--output-dir")
        .arg(output);
    command.output().unwrap()
}

#[test]
fn launch_files_match_sev_snp_measure() {
    let dir = tempfile::tempdir().unwrap();
    // Slot B's command line ends in a blank: it is kept, as QEMU keeps it.
    let image = boot_filesystem(
        dir.path(),
        "# comment\nBOOT_ARGS_A=\"root=/dev/vda5 console=ttyS0\"\nBOOT_ARGS_B=\"root=/dev/vda8 console=ttyS0 \"\n",
    );
    let output = dir.path().join("launch");
    fs::create_dir(&output).unwrap();
    let result = launch_files(&image, &output, &["A", "B"]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(
        directory_entries(&output),
        ["cmdline-A", "cmdline-B", "initrd.img", "launch-measurements.json", "vmlinuz"]
    );
    let (kernel, initrd) = kernel_and_initrd(dir.path());
    assert_eq!(fs::read(output.join("vmlinuz")).unwrap(), fs::read(kernel).unwrap());
    assert_eq!(fs::read(output.join("initrd.img")).unwrap(), fs::read(initrd).unwrap());
    assert_eq!(fs::read(output.join("cmdline-B")).unwrap(), b"root=/dev/vda8 console=ttyS0 ");
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(output.join("launch-measurements.json")).unwrap()).unwrap();
    assert_eq!(record["firmware"]["source"], "test firmware");
    assert_eq!(record["firmware"]["ovmf_hash"], sev_snp_measure(&["--mode", "snp:ovmf-hash", "--ovmf", OVMF]));
    let measurements = record["measurements"].as_array().unwrap();
    assert_eq!(measurements.len(), 4);
    for measurement in measurements {
        let slot = measurement["slot"].as_str().unwrap();
        let cmdline = String::from_utf8(fs::read(output.join(format!("cmdline-{slot}"))).unwrap()).unwrap();
        assert_eq!(measurement["cmdline"], cmdline.as_str());
        let expected = sev_snp_measure(&[
            "--mode",
            "snp",
            "--vcpus",
            &measurement["vcpus"].to_string(),
            "--vcpu-type",
            measurement["vcpu_type"].as_str().unwrap(),
            "--guest-features",
            measurement["guest_features"].as_str().unwrap(),
            "--ovmf",
            OVMF,
            "--kernel",
            output.join("vmlinuz").to_str().unwrap(),
            "--initrd",
            output.join("initrd.img").to_str().unwrap(),
            "--append",
            &cmdline,
        ]);
        assert_eq!(measurement["launch_digest"], expected.as_str(), "{measurement}");
    }
}

#[test]
fn launch_files_name_what_is_missing_and_leave_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let image = boot_filesystem(dir.path(), "BOOT_ARGS_A=\"root=/dev/vda5\"\n");
    let output = dir.path().join("launch");
    fs::create_dir(&output).unwrap();
    let result = launch_files(&image, &output, &["A", "B"]);
    assert_eq!(result.status.code(), Some(2));
    let message = String::from_utf8_lossy(&result.stderr);
    assert!(message.contains(&format!("{}: /boot_args sets no BOOT_ARGS_B", image.display())), "{message}");
    assert!(!output.join("launch-measurements.json").exists());
    // Nothing half-written, and no unpacked image left behind.
    assert!(directory_entries(&output).iter().all(|name| !name.starts_with('.')), "{:?}", directory_entries(&output));

    let not_ext4 = dir.path().join("zeros.img");
    fs::File::create(&not_ext4).unwrap().set_len(1 << 20).unwrap();
    let message = String::from_utf8_lossy(&launch_files(&not_ext4, &output, &["A"]).stderr).into_owned();
    assert!(message.contains(&format!("{}: not an ext4 filesystem", not_ext4.display())), "{message}");
}
