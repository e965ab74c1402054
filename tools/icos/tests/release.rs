//! `icos release package` and `verify` against openssl: the keys it makes are the keys icos reads,
//! and the signature in a bundle is the one `openssl pkeyutl -sign -rawin` makes for its manifest.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_openssl_verifies_bundle, icos, run, serve, tool_command};

fn openssl(dir: &Path, args: &[&str]) -> Output {
    let output = tool_command("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// An Ed25519 key pair made by openssl: (private PKCS#8 PEM, public SPKI PEM).
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = format!("{name}.pem");
    let public = format!("{name}.pub.pem");
    openssl(dir, &["genpkey", "-algorithm", "ed25519", "-out", &private]);
    openssl(dir, &["pkey", "-in", &private, "-pubout", "-out", &public]);
    (dir.join(private), dir.join(public))
}

/// `icos release package` of `files` for GuestOS dev, with the version in `dir`/version.txt.
fn package_command(dir: &Path, key: &Path, output: &Path, files: &[PathBuf]) -> Command {
    let mut command = icos();
    command
        .args(["release", "package", "--os", "guestos", "--variant", "dev", "--key"])
        .arg(key)
        .arg("--version-file")
        .arg(dir.join("version.txt"))
        .arg("--output")
        .arg(output)
        .args(files);
    command
}

fn verify(bundle: &Path, public: &Path) -> Output {
    icos().args(["release", "verify", "--public-key"]).arg(public).arg(bundle).output().unwrap()
}

fn refused(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
}

#[test]
fn bundles_are_signed_as_openssl_signs_and_refused_when_a_byte_or_the_key_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (private, public) = key_pair(dir, "release");
    let (_, other_public) = key_pair(dir, "other");
    let input = dir.join("envs-dev");
    fs::create_dir_all(input.join("sev-launch")).unwrap();
    fs::write(input.join("disk-img.tar.zst"), vec![7u8; 100_000]).unwrap();
    fs::write(input.join("SHA256SUMS"), b"sums\n").unwrap();
    fs::write(input.join("sev-launch/cmdline"), b"console=ttyS0").unwrap();
    fs::write(input.join("version.txt"), b"0.1.0-dev\n").unwrap();
    let bundle = dir.join("guestos-dev.bundle.tar");
    let files = ["disk-img.tar.zst", "SHA256SUMS", "sev-launch"].map(|name| input.join(name));
    let output = run(&mut package_command(&input, &private, &bundle, &files));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}: guestos dev 0.1.0-dev, 3 files, signed\n", bundle.display())
    );
    let output = verify(&bundle, &public);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}: guestos dev 0.1.0-dev, signature and 3 files verified\n", bundle.display())
    );

    // GNU tar reads the bundle; openssl verifies its manifest's signature and, Ed25519 being
    // deterministic, makes the same one.
    let listed = run(tool_command("tar").arg("-tf").arg(&bundle));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "manifest.json\nmanifest.json.sig\ndisk-img.tar.zst\nSHA256SUMS\nsev-launch/cmdline\n"
    );
    assert_openssl_verifies_bundle(dir, &bundle, &public);
    openssl(
        dir,
        &["pkeyutl", "-sign", "-inkey", "release.pem", "-rawin", "-in", "manifest.json", "-out", "openssl.sig"],
    );
    assert_eq!(fs::read(dir.join("openssl.sig")).unwrap(), fs::read(dir.join("manifest.json.sig")).unwrap());

    refused(&verify(&bundle, &other_public), "the manifest's signature does not verify with");

    // One byte of one file changed: refused, naming the file, and nothing unpacked.
    let mut bytes = fs::read(&bundle).unwrap();
    let at = bytes.windows(13).position(|window| window == b"console=ttyS0").unwrap();
    bytes[at] = b'C';
    let tampered = dir.join("tampered.bundle.tar");
    fs::write(&tampered, &bytes).unwrap();
    let unpacked = dir.join("unpacked");
    let output = icos()
        .args(["release", "verify", "--public-key"])
        .arg(&public)
        .arg("--unpack")
        .arg(&unpacked)
        .arg(&tampered)
        .output()
        .unwrap();
    refused(&output, "tampered.bundle.tar: sev-launch/cmdline: its SHA-256 is ");
    assert!(!unpacked.exists());
}

#[test]
fn a_key_that_is_not_ed25519_is_named() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = temporary.path();
    openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"]);
    fs::write(dir.join("version.txt"), b"1\n").unwrap();
    let output =
        package_command(dir, &dir.join("ec.pem"), &dir.join("out.tar"), &[dir.join("version.txt")]).output().unwrap();
    refused(&output, "ec.pem: not an Ed25519 private key in PEM");
    assert!(!dir.join("out.tar").exists());
}

#[test]
fn fetch_resumes_a_transfer_that_broke_off_then_verifies_and_unpacks() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (private, public) = key_pair(dir, "release");
    let image = dir.join("disk-img.tar.zst");
    fs::write(&image, (0..3_000_000u32).map(|index| (index % 251) as u8).collect::<Vec<u8>>()).unwrap();
    fs::write(dir.join("version.txt"), b"0.1.0-dev\n").unwrap();
    let bundle = dir.join("bundle.tar");
    run(&mut package_command(dir, &private, &bundle, std::slice::from_ref(&image)));
    let bytes = fs::read(&bundle).unwrap();
    let cut = 1_234_567;
    let (url, ranges) = serve(bytes, cut);
    let output_dir = dir.join("fetched");
    let fetch = || {
        icos()
            .args(["release", "fetch", "--public-key"])
            .arg(&public)
            .arg("--output")
            .arg(&output_dir)
            .arg(&url)
            .output()
            .unwrap()
    };
    let output = fetch();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("icos: the transfer broke off at 1.2 MiB"), "{stderr}");
    assert!(stderr.contains("icos: resuming at 1.2 MiB of 2.9 MiB"), "{stderr}");
    assert_eq!(*ranges.lock().unwrap(), ["-".to_owned(), format!("bytes={cut}-")]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}: guestos dev 0.1.0-dev, signature and 1 file verified, unpacked\n", output_dir.display())
    );
    assert_eq!(fs::read(output_dir.join("disk-img.tar.zst")).unwrap(), fs::read(&image).unwrap());
    assert!(!dir.join("fetched.download").exists());

    // Into a directory that exists: refused before anything is downloaded.
    let again = fetch();
    refused(&again, "it exists already");
    assert_eq!(ranges.lock().unwrap().len(), 2);
}

/// A bundle of a 1 MiB disk image (disk.img in `dir`) and `more` files, signed, unpacked into
/// `dir/unpacked`; and `release start` of it with /bin/true for QEMU (what is checked is that start
/// verifies, prepares the disk and runs the command line of `icos vm run`), into `dir/WORK`.
struct StartBundle {
    dir: PathBuf,
    public: PathBuf,
    unpacked: PathBuf,
}

impl StartBundle {
    fn new(dir: &Path, more: &[PathBuf]) -> StartBundle {
        let (private, public) = key_pair(dir, "release");
        fs::write(dir.join("disk.img"), vec![1u8; 1 << 20]).unwrap();
        run(icos()
            .args(["package", "--output"])
            .arg(dir.join("disk-img.tar.zst"))
            .arg(format!("--member=disk.img={}", dir.join("disk.img").display())));
        fs::write(dir.join("version.txt"), b"0.1.0-dev\n").unwrap();
        fs::write(dir.join("vars.fd"), b"uefi variables").unwrap();
        let bundle = dir.join("bundle.tar");
        let mut files = vec![dir.join("disk-img.tar.zst")];
        files.extend_from_slice(more);
        run(&mut package_command(dir, &private, &bundle, &files));
        let unpacked = dir.join("unpacked");
        run(icos()
            .args(["release", "verify", "--public-key"])
            .arg(&public)
            .arg("--unpack")
            .arg(&unpacked)
            .arg(&bundle));
        StartBundle { dir: dir.to_owned(), public, unpacked }
    }

    fn start(&self, work: &str, extra: &[&str]) -> Output {
        icos()
            .args(["release", "start", "--public-key"])
            .arg(&self.public)
            .arg(&self.unpacked)
            .args(["--accel", "tcg", "--vsock-cid", "off", "--qemu", "/bin/true", "--ovmf-vars"])
            .arg(self.dir.join("vars.fd"))
            .arg("--work-dir")
            .arg(self.dir.join(work))
            .args(extra)
            .output()
            .unwrap()
    }
}

#[test]
fn start_boots_an_unpacked_bundle_only_once_it_verifies_again() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let bundle = StartBundle::new(dir, &[]);
    run(icos().args(["release", "verify", "--public-key"]).arg(&bundle.public).arg(&bundle.unpacked));
    let output = bundle.start("work", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("guestos dev 0.1.0-dev, signature and 1 file verified; booting disk-img.tar.zst"),
        "{stderr}"
    );
    assert!(stderr.contains("icos: qemu command line: /bin/true -machine q35 -accel tcg"), "{stderr}");
    assert_eq!(fs::read(dir.join("work/disk.img")).unwrap(), fs::read(dir.join("disk.img")).unwrap());

    let mut image = fs::read(bundle.unpacked.join("disk-img.tar.zst")).unwrap();
    let last = image.len() - 1;
    image[last] ^= 1;
    fs::write(bundle.unpacked.join("disk-img.tar.zst"), &image).unwrap();
    let output = bundle.start("work-2", &[]);
    refused(&output, "unpacked: disk-img.tar.zst: ");
    assert!(!dir.join("work-2").exists(), "a bundle that does not verify was prepared to boot");
}

#[test]
fn start_boots_a_sev_bundle_as_the_guest_its_launch_files_were_measured_for() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let launch = dir.join("sev-launch");
    fs::create_dir(&launch).unwrap();
    fs::write(launch.join("vmlinuz"), b"kernel").unwrap();
    fs::write(launch.join("initrd.img"), b"initrd").unwrap();
    fs::write(launch.join("cmdline-A"), b"root=/dev/mapper/vroot console=ttyS0").unwrap();
    fs::write(launch.join("cmdline-B"), b"root=/dev/mapper/vroot slot-b").unwrap();
    // The fields start reads, as icos measure launch-files writes them: slot A's first
    // configuration is the one launchers start.
    let measurement = |slot: &str, vcpus: u32| {
        format!(r#"{{"slot": "{slot}", "vcpus": {vcpus}, "vcpu_type": "EPYC-v4", "guest_features": "0x1"}}"#)
    };
    fs::write(
        launch.join("launch-measurements.json"),
        format!(r#"{{"measurements": [{}, {}, {}]}}"#, measurement("B", 4), measurement("A", 3), measurement("A", 1)),
    )
    .unwrap();
    let bundle = StartBundle::new(dir, &[launch]);
    // An SEV-SNP guest needs KVM (and a host with SEV-SNP, which CI lacks): refused under TCG; with
    // --no-sev the same kernel, initrd and command line boot directly.
    refused(&bundle.start("work", &[]), "SEV needs KVM, but the accelerator is TCG");
    let output = bundle.start("work-2", &["--no-sev"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("booting disk-img.tar.zst, slot A as the SEV-SNP guest of sev-launch/"), "{stderr}");
    let sev_launch = bundle.unpacked.join("sev-launch");
    for expected in [
        "-smp 3 ".to_owned(),
        "-cpu EPYC-v4 ".to_owned(),
        format!("-kernel {} ", sev_launch.join("vmlinuz").display()),
        format!("-initrd {} ", sev_launch.join("initrd.img").display()),
        "-append 'root=/dev/mapper/vroot console=ttyS0'".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} is not in: {stderr}");
    }
}
