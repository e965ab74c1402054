//! Runs `icos oci` on a canonical rootfs tar made by `icos rootfs canonicalize`, and checks the
//! archives with `icos rootfs canonicalize` (which reads OCI archives) and GNU tar.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use common::{directory_entries, icos, tool_command};

const EPOCH: &str = "1700000000";
/// A string found once in the archive: inside the layer, in the content of /etc/motd.
const MARKER: &[u8] = b"layer content marker";

fn run(command: &mut Command) -> Output {
    command.output().expect("cannot start a command")
}

fn ok(output: Output) -> Output {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap().trim_end().to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Name, type, mode, owner, content and link target of a member.
type Member<'a> = (&'a str, EntryType, u32, u64, &'a [u8], &'a str);

/// A tar as `podman export` writes one: user names, implicit parents, members out of order.
fn export_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let members: [Member<'_>; 5] = [
        ("usr/bin/tool", EntryType::Regular, 0o755, 0, b"#!/bin/sh\n", ""),
        ("etc/motd", EntryType::Regular, 0o644, 0, MARKER, ""),
        ("home/user/.profile", EntryType::Regular, 0o600, 1000, b"PS1='$ '\n", ""),
        ("usr/bin/tool-link", EntryType::Link, 0o755, 0, b"", "usr/bin/tool"),
        ("bin", EntryType::Symlink, 0o777, 0, b"", "usr/bin"),
    ];
    for (name, kind, mode, owner, data, link) in members {
        let mut header = Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_entry_type(kind);
        if !link.is_empty() {
            header.set_link_name(link).unwrap();
        }
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_mtime(1_800_000_000);
        header.set_username("builder").unwrap();
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The canonical rootfs tar `rootfs.tar` in `dir`, made by `icos rootfs canonicalize`.
fn canonical_rootfs(dir: &Path) -> PathBuf {
    let export = dir.join("export.tar");
    fs::write(&export, export_tar()).unwrap();
    let rootfs = dir.join("rootfs.tar");
    ok(run(icos()
        .args(["rootfs", "canonicalize", "--source-date-epoch", EPOCH, "--input"])
        .arg(&export)
        .arg("--output")
        .arg(&rootfs)));
    rootfs
}

/// `icos oci write` with SOURCE_DATE_EPOCH from the environment; returns what it printed.
fn write_archive(rootfs: &Path, archive: &Path) -> String {
    let output = ok(run(icos()
        .args(["oci", "write", "--name", "guestos-base", "--rootfs"])
        .arg(rootfs)
        .arg("--output")
        .arg(archive)
        .env("SOURCE_DATE_EPOCH", EPOCH)));
    stdout(&output)
}

/// A member of the archive, read by GNU tar.
fn member(archive: &Path, name: &str) -> serde_json::Value {
    let output = ok(run(tool_command("tar").arg("-xOf").arg(archive).arg(name)));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn blob_name(digest: &serde_json::Value) -> String {
    format!("blobs/sha256/{}", digest.as_str().unwrap().strip_prefix("sha256:").unwrap())
}

#[test]
fn a_written_archive_has_the_printed_digest_and_reads_back_as_the_same_canonical_tar() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = canonical_rootfs(dir.path());
    let archive = dir.path().join("base.oci.tar");
    let digest = write_archive(&rootfs, &archive);
    assert!(digest.len() == 71 && digest.starts_with("sha256:"), "{digest}");
    assert_eq!(stdout(&ok(run(icos().args(["oci", "digest"]).arg(&archive)))), digest);
    ok(run(icos().args(["oci", "verify", "--digest", &digest]).arg(&archive)));

    let back = dir.path().join("back.tar");
    ok(run(icos()
        .args(["rootfs", "canonicalize", "--source-date-epoch", EPOCH, "--input"])
        .arg(&archive)
        .arg("--output")
        .arg(&back)));
    assert_eq!(fs::read(&back).unwrap(), fs::read(&rootfs).unwrap());

    let layer = format!("sha256:{}", sha256_hex(&fs::read(&rootfs).unwrap()));
    let index = member(&archive, "index.json");
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "guestos-base");
    let manifest = member(&archive, &blob_name(&index["manifests"][0]["digest"]));
    assert_eq!(manifest["layers"][0]["digest"], layer.as_str());
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    let config = member(&archive, &blob_name(&manifest["config"]["digest"]));
    assert_eq!(config["rootfs"]["diff_ids"][0], layer.as_str());
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["history"][0]["created"], "2023-11-14T22:13:20Z");
    assert_eq!((&config["architecture"], &config["os"]), (&"amd64".into(), &"linux".into()));
    assert_eq!(member(&archive, "oci-layout"), serde_json::json!({"imageLayoutVersion": "1.0.0"}));

    let listing = ok(run(tool_command("tar").args(["--numeric-owner", "-tvf"]).arg(&archive).env("TZ", "UTC")));
    let listing: Vec<String> = String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            line.split_whitespace()
                .filter(|field| !field.chars().all(|c| c.is_ascii_digit()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let file = |name: &str| format!("-rw-r--r-- 0/0 1970-01-01 00:00 {name}");
    assert_eq!(
        listing,
        [
            "drwxr-xr-x 0/0 1970-01-01 00:00 blobs/".to_owned(),
            "drwxr-xr-x 0/0 1970-01-01 00:00 blobs/sha256/".to_owned(),
            file(&blob_name(&layer.as_str().into())),
            file(&blob_name(&manifest["config"]["digest"])),
            file(&blob_name(&index["manifests"][0]["digest"])),
            file("index.json"),
            file("oci-layout"),
        ]
    );
}

#[test]
fn output_does_not_depend_on_umask_time_zone_locale_working_directory_or_output_path() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = canonical_rootfs(dir.path());
    let first = dir.path().join("first.oci.tar");
    let digest = ok(run(icos()
        .args(["oci", "write", "--name", "guestos-base", "--rootfs"])
        .arg(&rootfs)
        .arg("--output")
        .arg(&first)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("TZ", "UTC")
        .env("LANG", "C")
        .current_dir("/")));
    let other_cwd = tempfile::tempdir().unwrap();
    let second = ok(run(Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$@\"")
        .arg("sh")
        .arg(icos().get_program())
        .args(["oci", "write", "--name=guestos-base", "--output=second.tar", "--source-date-epoch", EPOCH])
        .arg(format!("--rootfs={}", rootfs.display()))
        .env_remove("SOURCE_DATE_EPOCH")
        .env("TZ", "Pacific/Chatham")
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "tr_TR.UTF-8")
        .current_dir(other_cwd.path())));
    assert_eq!(stdout(&digest), stdout(&second));
    assert_eq!(fs::read(&first).unwrap(), fs::read(other_cwd.path().join("second.tar")).unwrap());
}

#[test]
fn a_damaged_blob_is_an_error_naming_the_blob_and_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = canonical_rootfs(dir.path());
    let archive = dir.path().join("base.oci.tar");
    let digest = write_archive(&rootfs, &archive);
    let layer = sha256_hex(&fs::read(&rootfs).unwrap());
    let mut bytes = fs::read(&archive).unwrap();
    let at = bytes.windows(MARKER.len()).position(|window| window == MARKER).unwrap();
    bytes[at] ^= 1;
    fs::write(&archive, &bytes).unwrap();

    for args in [vec!["oci", "digest"], vec!["oci", "verify", "--digest", &digest]] {
        let output = run(icos().args(&args).arg(&archive));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&archive.display().to_string()), "{stderr}");
        assert!(stderr.contains(&format!("blob blobs/sha256/{layer} (layer 1) is damaged")), "{stderr}");
        assert!(stderr.contains(&format!("expected sha256:{layer}")), "{stderr}");
        assert!(stderr.contains("its SHA-256 is sha256:"), "{stderr}");
    }
}

#[test]
fn verify_exits_1_for_another_image_and_2_for_a_malformed_digest() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = canonical_rootfs(dir.path());
    let archive = dir.path().join("base.oci.tar");
    let digest = write_archive(&rootfs, &archive);
    let other = format!("sha256:{}", "0".repeat(64));
    let output = run(icos().args(["oci", "verify", "--digest", &other]).arg(&archive));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("holds image {digest}, expected {other}")), "{stderr}");

    let upper = digest.to_uppercase().replace("SHA256", "sha256");
    let output = run(icos().args(["oci", "verify", "--digest", &upper]).arg(&archive));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("64 lowercase hex digits"));
}

#[test]
fn the_store_round_trips_and_refuses_damaged_archives() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = canonical_rootfs(dir.path());
    let archive = dir.path().join("base.oci.tar");
    let digest = write_archive(&rootfs, &archive);
    let store = dir.path().join("store");
    let path = |args: &[&str]| run(icos().args(["oci", "store", "path", "--store"]).arg(&store).args(args));

    let absent = path(&[&digest]);
    assert_eq!(absent.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&absent.stderr).contains(&format!("image {digest} is not in the store")));

    let put = stdout(&ok(run(icos().args(["oci", "store", "put", "--store"]).arg(&store).arg(&archive))));
    let expected_path = store.join("sha256").join(format!("{}.oci.tar", &digest[7..]));
    assert_eq!(put, format!("{digest} {}", expected_path.display()));
    assert_eq!(fs::read(&expected_path).unwrap(), fs::read(&archive).unwrap());
    assert_eq!(stdout(&ok(path(&[&digest]))), expected_path.display().to_string());
    assert_eq!(stdout(&ok(path(&[&digest, "--verify"]))), expected_path.display().to_string());

    let mut bytes = fs::read(&archive).unwrap();
    let at = bytes.windows(MARKER.len()).position(|window| window == MARKER).unwrap();
    bytes[at] ^= 1;
    let damaged = dir.path().join("damaged.oci.tar");
    fs::write(&damaged, &bytes).unwrap();
    let other_store = dir.path().join("other-store");
    let output = run(icos().args(["oci", "store", "put", "--store"]).arg(&other_store).arg(&damaged));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("damaged.oci.tar"));
    assert!(directory_entries(&other_store.join("sha256")).is_empty());
}

#[test]
fn write_refuses_bad_inputs_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = canonical_rootfs(dir.path());
    let compressed = dir.path().join("rootfs.tar.zst");
    fs::write(&compressed, zstd::encode_all(&fs::read(&rootfs).unwrap()[..], 3).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    for (input, name, expected) in
        [(&compressed, "guestos-base", "not an uncompressed tar"), (&rootfs, "GuestOS", "image name \"GuestOS\"")]
    {
        let output = run(icos()
            .args(["oci", "write", "--name", name, "--rootfs"])
            .arg(input)
            .arg("--output")
            .arg(out.path().join("image.oci.tar")));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(directory_entries(out.path()).is_empty());
    }
}
