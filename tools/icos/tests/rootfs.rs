//! Runs `icos rootfs` on tars built here with the `tar` crate and checks the results with GNU tar.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{directory_entries, icos, pax_record, tool_command};
use tar::{EntryType, Header};

/// Builds input tars member by member, the way container engines write them (ustar headers,
/// PAX records for long names and xattrs, user names set).
struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    fn new() -> Self {
        TarBuilder(tar::Builder::new(Vec::new()))
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        name: &[u8],
        kind: EntryType,
        mode: u32,
        uid: u64,
        data: &[u8],
        link: &[u8],
        pax: &[(&str, &[u8])],
    ) -> &mut Self {
        let mut records: Vec<u8> = pax.iter().flat_map(|(key, value)| pax_record(key, value)).collect();
        if name.len() > 100 {
            records.extend(pax_record("path", name));
        }
        if !records.is_empty() {
            let mut header = Header::new_ustar();
            header.set_entry_type(EntryType::XHeader);
            header.as_mut_bytes()[..9].copy_from_slice(b"PaxHeader");
            header.set_size(records.len() as u64);
            header.set_cksum();
            self.0.append(&header, records.as_slice()).unwrap();
        }
        let mut header = Header::new_ustar();
        header.set_entry_type(kind);
        let short = &name[..name.len().min(100)];
        header.as_mut_bytes()[..short.len()].copy_from_slice(short);
        header.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(uid);
        header.set_mtime(1_700_000_000);
        header.set_username("builder").unwrap();
        header.set_groupname("builder").unwrap();
        header.set_size(data.len() as u64);
        header.set_device_major(0).unwrap();
        header.set_device_minor(0).unwrap();
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.add(name.as_bytes(), EntryType::Regular, 0o644, 0, data, b"", &[])
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.add(name.as_bytes(), EntryType::Directory, mode, 0, b"", b"", &[])
    }

    fn finish(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.0, tar::Builder::new(Vec::new())).into_inner().unwrap()
    }
}

/// A small system: parents left implicit, members out of order, a duplicate, a hard link before
/// sorting puts it first, a FIFO, a socket, xattrs and odd names.
fn system_tar() -> Vec<u8> {
    let capability: &[u8] = &[1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let long_name = "n".repeat(255);
    let long_path = format!("srv/{}/{}", vec!["d".repeat(250); 16].join("/"), "f".repeat(76));
    assert_eq!(long_path.len(), 4096);
    let mut tar = TarBuilder::new();
    tar.dir("./", 0o755)
        .file("etc/hostname", b"podman-host\n")
        .add(
            b"usr/bin/ping",
            EntryType::Regular,
            0o755,
            0,
            b"\x7fELF",
            b"",
            &[("SCHILY.xattr.security.capability", capability), ("SCHILY.xattr.user.note", b"kept"), ("atime", b"1.5")],
        )
        .add(b"usr/bin/arping", EntryType::Link, 0o755, 0, b"", b"usr/bin/ping", &[])
        .dir("boot", 0o755)
        .file("boot/vmlinuz", b"kernel")
        .dir("var", 0o755)
        .add(b"var/lib/app/state", EntryType::Regular, 0o600, 1000, b"state", b"", &[])
        .dir("tmp", 0o1777)
        .file("tmp/leftover", b"")
        .add(b"run/fifo", EntryType::Fifo, 0o600, 0, b"", b"", &[])
        .add(b"run/socket", EntryType::Regular, 0o140755, 0, b"", b"", &[])
        .add(b"lib", EntryType::Symlink, 0o777, 0, b"", b"usr/lib", &[])
        .file("etc/hostname", b"second wins\n")
        .file("srv/with space", b"1")
        .file("srv/new\nline", b"2")
        .add(b"srv/latin1-\xe9", EntryType::Regular, 0o644, 0, b"3", b"", &[])
        .file(&format!("srv/{long_name}"), b"4")
        .file(&long_path, b"5");
    tar.finish()
}

fn run(command: &mut Command) -> Output {
    command.output().expect("cannot start a command")
}

fn ok(output: Output) -> Output {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn canonicalize(dir: &Path, input: &Path, output: &str, extra: &[&str]) -> Output {
    run(icos()
        .args(["rootfs", "canonicalize", "--input"])
        .arg(input)
        .arg("--output")
        .arg(dir.join(output))
        .args(extra)
        .env_remove("SOURCE_DATE_EPOCH"))
}

fn gnu_listing(tar: &Path) -> String {
    let output = ok(run(tool_command("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-tvv", "-f"])
        .arg(tar)
        .env("TZ", "UTC")));
    String::from_utf8(output.stdout).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn gnu_tar_reads_the_canonical_tar_as_intended() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "export.tar", &system_tar());
    ok(canonicalize(
        dir.path(),
        &input,
        "out.tar",
        &["--source-date-epoch", "86400", "--manifest", &dir.path().join("out.jsonl").to_string_lossy()],
    ));
    let listing = gnu_listing(&dir.path().join("out.tar"));
    let lines: Vec<&str> = listing.lines().filter(|line| !line.starts_with("  x:")).collect();
    let expected_start = [
        "drwxr-xr-x  0/0               0 1970-01-02 00:00 ./",
        "drwxr-xr-x  0/0               0 1970-01-02 00:00 ./boot",
        "-rw-r--r--  0/0               6 1970-01-02 00:00 ./boot/vmlinuz",
        "drwxr-xr-x  0/0               0 1970-01-01 00:00 ./etc",
        "-rw-r--r--  0/0              12 1970-01-02 00:00 ./etc/hostname",
        "lrwxrwxrwx  0/0               0 1970-01-02 00:00 ./lib -> usr/lib",
        "drwxr-xr-x  0/0               0 1970-01-01 00:00 ./run",
        "prw-------  0/0               0 1970-01-02 00:00 ./run/fifo",
        "drwxr-xr-x  0/0               0 1970-01-01 00:00 ./srv",
    ];
    assert_eq!(&lines[..expected_start.len()], expected_start, "{listing}");
    assert!(listing.contains("-rwxr-xr-x* 0/0               4 1970-01-02 00:00 ./usr/bin/arping\n"), "{listing}");
    assert!(
        listing.contains("hrwxr-xr-x* 0/0               0 1970-01-02 00:00 ./usr/bin/ping link to ./usr/bin/arping\n"),
        "{listing}"
    );
    assert!(listing.contains("  x: 20 security.capability\n  x: 4 user.note\n"), "{listing}");
    assert!(listing.contains("-rw-------  1000/1000         5 1970-01-02 00:00 ./var/lib/app/state\n"), "{listing}");
    assert!(listing.contains("drwxrwxrwt  0/0               0 1970-01-02 00:00 ./tmp\n"), "{listing}");
    assert!(listing.contains("./srv/new\\nline"), "{listing}");
    assert!(!listing.contains("socket"), "{listing}");
    assert!(!listing.contains("builder"), "{listing}");
    let names: Vec<&str> = lines.iter().map(|line| line.split_once(" ./").map_or("", |(_, name)| name)).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    let hostname = ok(run(tool_command("tar").args(["-xOf"]).arg(dir.path().join("out.tar")).arg("./etc/hostname")));
    assert_eq!(hostname.stdout, b"second wins\n");
    let manifest = fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(manifest.contains(r#"{"path":"/usr/bin/ping","type":"hardlink","mode":"0755","uid":0,"gid":0,"mtime":86400,"target":"/usr/bin/arping""#), "{manifest}");
    assert!(manifest.contains(r#""path_hex":"2f7372762f6c6174696e312de9""#), "{manifest}");
}

#[test]
fn gnu_tar_extraction_round_trips_to_the_same_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let mut tar = TarBuilder::new();
    tar.dir("./", 0o755)
        .add(
            b"etc/motd",
            EntryType::Regular,
            0o644,
            0,
            b"hello\n",
            b"",
            &[("SCHILY.xattr.user.label", b"\x00\x01binary")],
        )
        .add(b"etc/motd-link", EntryType::Link, 0o644, 0, b"", b"etc/motd", &[])
        .add(b"bin", EntryType::Symlink, 0o777, 0, b"", b"usr/bin", &[])
        .file("a b/c\nd", b"odd")
        .add(b"run/fifo", EntryType::Fifo, 0o644, 0, b"", b"", &[]);
    let input = write(dir.path(), "input.tar", &tar.finish());
    let epoch = ["--source-date-epoch", "1000"];
    ok(canonicalize(dir.path(), &input, "first.tar", &epoch));
    let extracted = dir.path().join("extracted");
    fs::create_dir(&extracted).unwrap();
    ok(run(tool_command("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "--numeric-owner", "-xf"])
        .arg(dir.path().join("first.tar"))
        .arg("-C")
        .arg(&extracted)));
    // Re-archived by GNU tar in its own (readdir) order, with its own PAX records and names.
    ok(run(tool_command("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "--format=posix", "--owner=0", "--group=0", "-cf"])
        .arg(dir.path().join("gnu.tar"))
        .arg("-C")
        .arg(&extracted)
        .arg(".")));
    ok(canonicalize(dir.path(), &dir.path().join("gnu.tar"), "second.tar", &epoch));
    let manifest = |name: &str| {
        let path = dir.path().join(format!("{name}.jsonl"));
        ok(run(icos().args(["rootfs", "manifest", "--input"]).arg(dir.path().join(name)).arg("--output").arg(&path)));
        fs::read_to_string(path).unwrap()
    };
    let first = manifest("first.tar");
    assert!(first.contains(r#""xattrs":{"user.label":"000162696e617279"}"#), "{first}");
    assert_eq!(first, manifest("second.tar"));
    assert_eq!(fs::read(dir.path().join("first.tar")).unwrap(), fs::read(dir.path().join("second.tar")).unwrap());
}

#[test]
fn output_does_not_depend_on_time_zone_umask_locale_or_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "export.tar", &system_tar());
    let hosts = write(dir.path(), "hosts", b"127.0.0.1 localhost\n");
    let tool = write(dir.path(), "tool", b"#!/bin/sh\n");
    let edits = |output: &str| {
        vec![
            "rootfs".to_owned(),
            "canonicalize".to_owned(),
            format!("--input={}", input.display()),
            format!("--output={}", dir.path().join(output).display()),
            format!("--manifest={}", dir.path().join(format!("{output}.jsonl")).display()),
            format!("--replace=/etc/hosts={}", hosts.display()),
            "--empty-machine-id".to_owned(),
            format!("--inject=0755:0:0:/opt/bin/tool={}", tool.display()),
        ]
    };
    ok(run(icos()
        .args(edits("a.tar"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("TZ", "UTC")
        .env("LANG", "C")
        .current_dir("/")));
    let other_cwd = tempfile::tempdir().unwrap();
    ok(run(Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$@\"")
        .arg("sh")
        .arg(icos().get_program())
        .args(edits("b.tar"))
        .arg("--source-date-epoch=1700000000")
        .env_remove("SOURCE_DATE_EPOCH")
        .env("TZ", "Pacific/Chatham")
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "tr_TR.UTF-8")
        .current_dir(other_cwd.path())));
    let read = |name: &str| fs::read(dir.path().join(name)).unwrap();
    assert_eq!(read("a.tar"), read("b.tar"));
    assert_eq!(read("a.tar.jsonl"), read("b.tar.jsonl"));
    let listing = gnu_listing(&dir.path().join("a.tar"));
    assert!(listing.contains("-rwxr-xr-x  0/0              10 1970-01-01 00:00 ./opt/bin/tool\n"), "{listing}");
    assert!(listing.contains("-r--r--r--  0/0               0 1970-01-01 00:00 ./etc/machine-id\n"), "{listing}");
    assert!(listing.contains("-rw-r--r--  0/0              20 1970-01-01 00:00 ./etc/hosts\n"), "{listing}");
}

#[test]
fn split_writes_boot_root_and_var_trees() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "export.tar", &system_tar());
    ok(canonicalize(dir.path(), &input, "canonical.tar", &[]));
    let path = |name: &str| dir.path().join(name);
    ok(run(icos()
        .args(["rootfs", "split", "--input"])
        .arg(path("canonical.tar"))
        .arg("--boot")
        .arg(path("boot.tar"))
        .arg("--root")
        .arg(path("root.tar"))
        .arg("--var")
        .arg(path("var.tar"))
        .arg("--var-manifest")
        .arg(path("var.jsonl"))));
    let names = |tar: &str| -> Vec<String> {
        let output = ok(run(tool_command("tar").arg("-tf").arg(path(tar))));
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
    };
    assert_eq!(names("boot.tar"), ["./", "./vmlinuz"]);
    assert_eq!(names("var.tar"), ["./", "./lib", "./lib/app", "./lib/app/state"]);
    let root = names("root.tar");
    for kept in ["./boot", "./var", "./tmp", "./run", "./etc/hostname", "./usr/bin/ping"] {
        assert!(root.iter().any(|name| name == kept), "{kept} missing from {root:?}");
    }
    for dropped in ["./boot/vmlinuz", "./var/lib", "./tmp/leftover", "./run/fifo"] {
        assert!(!root.iter().any(|name| name == dropped), "{dropped} kept in {root:?}");
    }
    let var_manifest = fs::read_to_string(path("var.jsonl")).unwrap();
    assert_eq!(var_manifest.lines().count(), 4);
    assert!(
        var_manifest.contains(r#"{"path":"/lib/app/state","type":"file","mode":"0600","uid":1000,"gid":1000"#),
        "{var_manifest}"
    );
}

#[test]
fn oci_archive_layers_give_the_same_tree_as_the_flattened_export() {
    use sha2::{Digest, Sha256};
    let hex = |data: &[u8]| Sha256::digest(data).iter().map(|byte| format!("{byte:02x}")).collect::<String>();
    let lower = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/a", b"a")
        .file("etc/gone", b"")
        .dir("opt", 0o755)
        .file("opt/old", b"")
        .finish();
    let upper =
        TarBuilder::new().file("etc/.wh.gone", b"").file("opt/.wh..wh..opq", b"").file("opt/new", b"new").finish();
    let upper = zstd::encode_all(upper.as_slice(), 3).unwrap();
    let flattened =
        TarBuilder::new().dir("etc", 0o755).file("etc/a", b"a").dir("opt", 0o755).file("opt/new", b"new").finish();

    let mut archive = TarBuilder::new();
    let mut layers = Vec::new();
    for layer in [&lower, &upper] {
        archive.file(&format!("blobs/sha256/{}", hex(layer)), layer);
        layers.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:{}","size":{}}}"#,
            hex(layer),
            layer.len()
        ));
    }
    let manifest = format!(r#"{{"schemaVersion":2,"layers":[{}]}}"#, layers.join(","));
    archive.file(&format!("blobs/sha256/{}", hex(manifest.as_bytes())), manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"digest":"sha256:{}","size":{}}}]}}"#,
        hex(manifest.as_bytes()),
        manifest.len()
    );
    archive.file("index.json", index.as_bytes()).file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);

    let dir = tempfile::tempdir().unwrap();
    let oci = write(dir.path(), "image.oci.tar", &archive.finish());
    let flat = write(dir.path(), "flat.tar", &flattened);
    ok(canonicalize(dir.path(), &oci, "from-oci.tar", &["--format", "oci-archive"]));
    ok(canonicalize(dir.path(), &flat, "from-flat.tar", &[]));
    assert_eq!(fs::read(dir.path().join("from-oci.tar")).unwrap(), fs::read(dir.path().join("from-flat.tar")).unwrap());
}

#[test]
fn bad_inputs_exit_2_naming_the_problem_and_leave_no_output() {
    let whole = TarBuilder::new().file("a", &[1u8; 3000]).file("b", b"b").finish();
    let mut bad_checksum = whole.clone();
    bad_checksum[20] ^= 0x40;
    let cases: Vec<(&str, Vec<u8>, Vec<&str>, &str)> = vec![
        ("cut mid-file", whole[..2048].to_vec(), vec![], "\"a\""),
        ("no end blocks", whole[..whole.len() - 1024].to_vec(), vec![], "truncated"),
        ("bad checksum", bad_checksum, vec![], "checksum"),
        ("escape", TarBuilder::new().file("../../etc/passwd", b"").finish(), vec![], "'..'"),
        (
            "hard link escape",
            TarBuilder::new().add(b"x", EntryType::Link, 0o644, 0, b"", b"../y", &[]).finish(),
            vec![],
            "\"x\"",
        ),
        (
            "missing link target",
            TarBuilder::new().add(b"x", EntryType::Link, 0o644, 0, b"", b"y", &[]).finish(),
            vec![],
            "does not exist",
        ),
        ("bad inject", whole.clone(), vec!["--inject", "0755:0:0:relative=src"], "absolute"),
        (
            "missing inject source",
            whole.clone(),
            vec!["--inject", "0755:0:0:/x=/nonexistent/tool"],
            "/nonexistent/tool",
        ),
        ("oci archive that is not", whole.clone(), vec!["--format", "oci-archive"], "index.json"),
    ];
    for (what, bytes, extra, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let input = write(dir.path(), "in.tar", &bytes);
        let output = canonicalize(
            dir.path(),
            &input,
            "out.tar",
            &[&extra[..], &["--manifest", &dir.path().join("out.jsonl").to_string_lossy()]].concat(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert_eq!(directory_entries(dir.path()), ["in.tar"], "{what}");
    }
    let dir = tempfile::tempdir().unwrap();
    let output =
        run(icos().args(["rootfs", "split", "--input", "missing.tar", "--boot", "boot.tar"]).current_dir(dir.path()));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.tar"));
    assert!(directory_entries(dir.path()).is_empty());
}

#[test]
fn a_tree_of_injected_files_alone_starts_from_an_empty_root() {
    let dir = tempfile::tempdir().unwrap();
    let efi = write(dir.path(), "grub.efi", b"MZ efi binary");
    let spec = format!("0755:0:0:/EFI/BOOT/BOOTX64.EFI={}", efi.display());
    ok(run(icos().args(["rootfs", "canonicalize", "-o", "esp.tar", "--inject", &spec]).current_dir(dir.path())));
    let listing = gnu_listing(&dir.path().join("esp.tar"));
    let listing: Vec<String> =
        listing.lines().map(|line| line.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(
        listing,
        [
            "drwxr-xr-x 0/0 0 1970-01-01 00:00 ./",
            "drwxr-xr-x 0/0 0 1970-01-01 00:00 ./EFI",
            "drwxr-xr-x 0/0 0 1970-01-01 00:00 ./EFI/BOOT",
            "-rwxr-xr-x 0/0 13 1970-01-01 00:00 ./EFI/BOOT/BOOTX64.EFI",
        ]
    );
}
