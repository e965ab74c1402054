//! `icos release package` and `verify` against openssl: the keys it makes are the keys icos reads,
//! and the signature in a bundle is the one `openssl pkeyutl -sign -rawin` makes for its manifest.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{icos, run, tool_command};

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
    let output = run(icos()
        .args(["release", "package", "--os", "guestos", "--variant", "dev", "--key"])
        .arg(&private)
        .arg("--version-file")
        .arg(input.join("version.txt"))
        .arg("--output")
        .arg(&bundle)
        .args(["disk-img.tar.zst", "SHA256SUMS", "sev-launch"].map(|name| input.join(name))));
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
    run(tool_command("tar").current_dir(dir).arg("-xf").arg(&bundle).args(["manifest.json", "manifest.json.sig"]));
    let checked = openssl(
        dir,
        &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "release.pub.pem",
            "-rawin",
            "-in",
            "manifest.json",
            "-sigfile",
            "manifest.json.sig",
        ],
    );
    assert!(String::from_utf8_lossy(&checked.stdout).contains("Signature Verified Successfully"));
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
    let dir = tempfile::tempdir().unwrap();
    openssl(dir.path(), &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"]);
    fs::write(dir.path().join("version.txt"), b"1\n").unwrap();
    let output = icos()
        .args(["release", "package", "--os", "guestos", "--variant", "dev", "--key"])
        .arg(dir.path().join("ec.pem"))
        .arg("--version-file")
        .arg(dir.path().join("version.txt"))
        .arg("--output")
        .arg(dir.path().join("out.tar"))
        .arg(dir.path().join("version.txt"))
        .output()
        .unwrap();
    refused(&output, "ec.pem: not an Ed25519 private key in PEM");
    assert!(!dir.path().join("out.tar").exists());
}
