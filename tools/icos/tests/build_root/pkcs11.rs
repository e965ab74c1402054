//! `icos release package` and `public-key` with the key in a PKCS#11 token: SoftHSM2, its token
//! made by `softhsm2-util` in a temporary directory and the key imported from a file openssl
//! made. Ed25519 being deterministic, the bundle must be the one the key file gives, and openssl
//! must verify its signature with the public key the token gives.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{assert_openssl_verifies_bundle, icos, run, tool_command};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "246810";

/// A SoftHSM2 token `icos-release` holding the Ed25519 key `release` (ID 01) made by openssl, its
/// store in a temporary directory; `softhsm2` runs a command against it.
struct Token {
    dir: tempfile::TempDir,
}

impl Token {
    fn new() -> Token {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("tokens")).unwrap();
        let config = format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.path().display()
        );
        fs::write(dir.path().join("softhsm2.conf"), config).unwrap();
        let token = Token { dir };
        run(token.command("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            "icos-release",
            "--pin",
            PIN,
            "--so-pin",
            "13579",
        ]));
        run(token.command("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(token.key_file()));
        run(token.command("softhsm2-util").arg("--import").arg(token.key_file()).args([
            "--token",
            "icos-release",
            "--label",
            "release",
            "--id",
            "01",
            "--pin",
            PIN,
        ]));
        token
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The private key file the token's key came from.
    fn key_file(&self) -> PathBuf {
        self.path("release.pem")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = if program == "icos" { icos() } else { tool_command(program) };
        command.env("SOFTHSM2_CONF", self.path("softhsm2.conf")).current_dir(self.dir.path());
        command
    }

    fn uri(&self, path: &str, query: &str) -> String {
        format!("pkcs11:token=icos-release;{path}?module-path={MODULE}{query}")
    }

    fn package(&self, key: &str, output: &str) -> Output {
        self.command("icos")
            .args(["release", "package", "--os", "guestos", "--variant", "prod", "--version-file", "version.txt"])
            .args(["--key", key, "--output", output, "disk-img.tar.zst", "SHA256SUMS"])
            .output()
            .unwrap()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_key_in_a_token_signs_as_its_key_file_and_openssl_verifies_it() {
    let token = Token::new();
    fs::write(token.path("disk-img.tar.zst"), vec![3u8; 50_000]).unwrap();
    fs::write(token.path("SHA256SUMS"), "sums\n").unwrap();
    fs::write(token.path("version.txt"), "1.2.0\n").unwrap();
    fs::write(token.path("pin"), format!("{PIN}\n")).unwrap();
    let uri = token.uri("object=release;id=%01", &format!("&pin-source=file:{}", token.path("pin").display()));

    // The public key the token gives is the key file's.
    let from_token = run(token.command("icos").args(["release", "public-key", "--key", &uri]));
    let from_openssl = run(token.command("openssl").args(["pkey", "-pubout", "-in"]).arg(token.key_file()));
    assert_eq!(from_token.stdout, from_openssl.stdout);
    run(token.command("icos").args(["release", "public-key", "--key", &uri, "--output", "release.pub.pem"]));

    let output = token.package(&uri, "token.bundle.tar");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "token.bundle.tar: guestos prod 1.2.0, 2 files, signed\n");
    let key_file = token.key_file().display().to_string();
    assert!(token.package(&key_file, "file.bundle.tar").status.success());
    assert_eq!(fs::read(token.path("token.bundle.tar")).unwrap(), fs::read(token.path("file.bundle.tar")).unwrap());
    run(token.command("icos").args(["release", "verify", "--public-key", "release.pub.pem", "token.bundle.tar"]));
    assert_openssl_verifies_bundle(token.dir.path(), &token.path("token.bundle.tar"), &token.path("release.pub.pem"));
}

#[test]
fn a_wrong_pin_or_key_or_token_writes_no_bundle_and_shows_no_pin() {
    let token = Token::new();
    fs::write(token.path("disk-img.tar.zst"), b"disk").unwrap();
    fs::write(token.path("SHA256SUMS"), "sums\n").unwrap();
    fs::write(token.path("version.txt"), "1.2.0\n").unwrap();
    for (uri, expected) in [
        (token.uri("object=release", "&pin-value=999999"), "cannot log in to \"icos-release\""),
        (token.uri("object=other", &format!("&pin-value={PIN}")), "\"icos-release\" holds no such Ed25519 private key"),
        (token.uri("object=release", ""), "shows no such Ed25519 private key without a login"),
        (
            format!("pkcs11:token=elsewhere;object=release?module-path={MODULE}&pin-value={PIN}"),
            "no token matches; the module has \"icos-release\" (serial ",
        ),
        (token.uri("object=release", "&pin-source=missing-pin"), "cannot read the PIN from missing-pin"),
    ] {
        let output = token.package(&uri, "refused.bundle.tar");
        assert_eq!(output.status.code(), Some(2), "{uri}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{uri}: {}", stderr(&output));
        assert!(!stderr(&output).contains("999999") && !stderr(&output).contains(PIN), "{}", stderr(&output));
        assert!(!Path::new(&token.path("refused.bundle.tar")).exists());
    }
}
