//! Runs `icos diff` on rootfs tars, ext4 images made by the host's mke2fs, FAT images, disk
//! images and update packages made by icos itself, and directories of them, and checks what it
//! reports, in both output formats, and its exit status.

mod common;

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, UNIX_EPOCH};

use common::{icos, pax_record, run, tool_command};
use serde_json::Value;
use tar::{EntryType, Header};

const SEED: &str = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c";
const FS_UUID: &str = "0b7e6b35-6a4c-4f0e-9d3c-1a2b3c4d5e6f";
const HASH_SEED: &str = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a";
/// Every file and directory time of the ext4 inputs, and mke2fs's clock.
const TIME: u64 = 1_700_000_000;

/// One member of a test tar.
struct Member<'a> {
    name: &'a [u8],
    kind: EntryType,
    mode: u32,
    uid: u64,
    data: &'a [u8],
    pax: Vec<(&'a str, &'a [u8])>,
}

fn member<'a>(name: &'a [u8], kind: EntryType, mode: u32, data: &'a [u8]) -> Member<'a> {
    Member { name, kind, mode, uid: 0, data, pax: Vec::new() }
}

/// A tar like the canonical ones: ustar headers, numeric owners, PAX records for xattrs.
fn tar_bytes(members: &[Member]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        if !member.pax.is_empty() {
            let records: Vec<u8> = member.pax.iter().flat_map(|(key, value)| pax_record(key, value)).collect();
            let mut header = Header::new_ustar();
            header.set_entry_type(EntryType::XHeader);
            header.as_mut_bytes()[..14].copy_from_slice(b"././@PaxHeader");
            header.set_mode(0o644);
            header.set_size(records.len() as u64);
            header.set_cksum();
            builder.append(&header, records.as_slice()).unwrap();
        }
        let mut header = Header::new_ustar();
        header.as_mut_bytes()[..member.name.len()].copy_from_slice(member.name);
        header.set_entry_type(member.kind);
        header.set_mode(member.mode);
        header.set_uid(member.uid);
        header.set_gid(member.uid);
        header.set_mtime(TIME);
        header.set_size(member.data.len() as u64);
        header.set_cksum();
        builder.append(&header, member.data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The two rootfs tars of the tests: B differs from A in one file's content, one mode, one
/// owner, one xattr, the content of a name with a space and the mode of a non-UTF-8 name.
fn rootfs_tars() -> (Vec<u8>, Vec<u8>) {
    let side = |b: bool| {
        let mut owned = member(b"./etc/owned", EntryType::Regular, 0o644, b"x");
        owned.uid = if b { 1000 } else { 0 };
        let mut capable = member(b"./bin/ping", EntryType::Regular, 0o755, b"ELF");
        let capability: &[u8] = if b { b"\x01\x00\x00\x02\x00\x20" } else { b"\x01\x00\x00\x02\x00\x10" };
        capable.pax = vec![("SCHILY.xattr.security.capability", capability)];
        tar_bytes(&[
            member(b"./", EntryType::Directory, 0o755, b""),
            member(b"./bin/", EntryType::Directory, 0o755, b""),
            capable,
            member(b"./bin/tool", EntryType::Regular, if b { 0o700 } else { 0o755 }, b"#!/bin/sh\n"),
            member(b"./etc/", EntryType::Directory, 0o755, b""),
            member(b"./etc/bad\xffname", EntryType::Regular, if b { 0o600 } else { 0o644 }, b"raw"),
            member(b"./etc/hostname", EntryType::Regular, 0o644, if b { b"guest\n" } else { b"host\n" }),
            member(b"./etc/my file", EntryType::Regular, 0o644, if b { b"two words\n" } else { b"2 words\n" }),
            owned,
            member(b"./etc/same", EntryType::Regular, 0o644, b"unchanged\n"),
        ])
    };
    (side(false), side(true))
}

fn diff_command(dir: &Path, args: &[&str]) -> Output {
    icos().current_dir(dir).arg("diff").args(args).output().expect("cannot run icos diff")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `icos diff --json` and parses what it prints.
fn diff_json(dir: &Path, a: &str, b: &str) -> (Option<i32>, Value) {
    let output = diff_command(dir, &["--json", a, b]);
    let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}: {}", describe(&output)));
    (output.status.code(), value)
}

fn assert_lines(output: &Output, expected: &[&str]) {
    let text = stdout(output);
    for line in expected {
        assert!(
            text.lines().any(|candidate| candidate.trim_start() == *line),
            "no line {line:?} in\n{}",
            describe(output)
        );
    }
}

#[test]
fn diff_rootfs_tars_report_every_difference_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = rootfs_tars();
    fs::write(dir.path().join("a.tar"), &a).unwrap();
    fs::write(dir.path().join("b.tar"), &b).unwrap();
    let output = diff_command(dir.path(), &["a.tar", "b.tar"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    assert!(text.starts_with("a.tar vs b.tar (rootfs tar): differs\n"), "{text}");
    assert_lines(
        &output,
        &[
            concat!(
                "/bin/ping: xattr security.capability ",
                "\"\\x01\\x00\\x00\\x02\\x00\\x10\" → \"\\x01\\x00\\x00\\x02\\x00 \""
            ),
            "/bin/tool: permissions 0755 → 0700",
            "\"/etc/bad\\xffname\": permissions 0644 → 0600",
            "/etc/owned: owner 0:0 → 1000:1000",
            "6 differences",
        ],
    );
    let content = |path: &str| {
        text.lines()
            .find(|line| line.trim_start().starts_with(&format!("{path}: content differs (sha256 ")))
            .unwrap_or_else(|| panic!("no content line for {path} in\n{text}"))
            .to_owned()
    };
    assert!(content("/etc/hostname").ends_with(", 5 → 6 bytes)"), "{text}");
    assert!(content("\"/etc/my file\"").ends_with(", 8 → 10 bytes)"), "{text}");
    assert!(!text.contains("/etc/same"), "{text}");

    // The same tars compressed give the same report, under the compressed name.
    fs::write(dir.path().join("a.tar.zst"), zstd::encode_all(&a[..], 3).unwrap()).unwrap();
    fs::write(dir.path().join("b.tar.zst"), zstd::encode_all(&b[..], 19).unwrap()).unwrap();
    let compressed = diff_command(dir.path(), &["a.tar.zst", "b.tar.zst"]);
    assert_eq!(compressed.status.code(), Some(1), "{}", describe(&compressed));
    let compressed_text = stdout(&compressed);
    assert!(compressed_text.starts_with("a.tar.zst vs b.tar.zst (zstd-compressed rootfs tar): differs\n"));
    assert_eq!(compressed_text.lines().skip(1).collect::<Vec<_>>(), text.lines().skip(1).collect::<Vec<_>>());
}

#[test]
fn diff_json_keeps_names_exact_and_has_values_for_each_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = rootfs_tars();
    fs::write(dir.path().join("a.tar"), &a).unwrap();
    fs::write(dir.path().join("b.tar"), &b).unwrap();
    let (code, report) = diff_json(dir.path(), "a.tar", "b.tar");
    assert_eq!(code, Some(1));
    assert_eq!(report["identical"], false);
    assert_eq!(report["a"], "a.tar");
    assert_eq!(report["b"], "b.tar");
    assert_eq!(report["difference_count"], 6);
    assert_eq!(report["artifacts"][0]["kind_a"], "rootfs tar");
    let differences = report["differences"].as_array().unwrap();
    let find = |path: &str, kind: &str| {
        differences
            .iter()
            .find(|difference| difference["path"] == path && difference["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} difference for {path} in {report:#}"))
    };
    let hostname = find("/etc/hostname", "content");
    assert_eq!(hostname["location"], serde_json::json!(["a.tar vs b.tar", "/etc/hostname"]));
    assert_eq!(hostname["a"]["size"], 5);
    assert_eq!(hostname["b"]["sha256"].as_str().map(str::len), Some(64));
    assert!(hostname.get("path_bytes").is_none());
    // The space is kept as it is; the byte that is not UTF-8 is escaped, and given exactly.
    find("/etc/my file", "content");
    let odd = find("/etc/bad\\xffname", "permissions");
    assert_eq!(odd["path_bytes"], serde_json::json!(b"/etc/bad\xffname".to_vec()));
    assert_eq!((odd["a"].as_str(), odd["b"].as_str()), (Some("0644"), Some("0600")));
    let owner = find("/etc/owned", "owner");
    assert_eq!(owner["b"], serde_json::json!({"uid": 1000, "gid": 1000}));
    let xattr = find("/bin/ping", "xattr");
    assert_eq!(xattr["name"], "security.capability");
    assert_eq!(xattr["a"]["hex"], "010000020010");
    assert_eq!(xattr["b"]["hex"], "010000020020");
    assert!(differences.iter().all(|difference| difference["summary"].is_string()));

    let (code, same) = diff_json(dir.path(), "a.tar", "a.tar");
    assert_eq!(code, Some(0));
    assert_eq!(same["identical"], true);
    assert_eq!(same["differences"], serde_json::json!([]));
}

/// Sets the times of everything below `root` (and `root`) to [`TIME`], children first.
fn pin_times(root: &Path) {
    if root.is_dir() {
        for entry in fs::read_dir(root).unwrap() {
            pin_times(&entry.unwrap().path());
        }
    }
    let time = UNIX_EPOCH + Duration::from_secs(TIME);
    File::open(root).unwrap().set_times(FileTimes::new().set_accessed(time).set_modified(time)).unwrap();
}

/// Writes a small tree: /etc/hostname (`hostname`), /usr/bin/tool, a name with a space.
fn write_tree(root: &Path, hostname: &[u8]) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("etc/hostname"), hostname).unwrap();
    fs::write(root.join("etc/two words"), b"spaces\n").unwrap();
    fs::write(root.join("usr/bin/tool"), vec![7u8; 20_000]).unwrap();
    pin_times(root);
}

/// What mke2fs reads instead of the host's /etc/mke2fs.conf: the features of the images icos
/// builds (e2fsprogs 1.46's ext4 defaults), whatever the e2fsprogs version.
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// An ext4 image of the directory `source`, made by the host's mke2fs with pinned configuration,
/// identifiers and clock, 4 KiB blocks, `size` bytes.
fn mke2fs(source: &Path, output: &Path, size: &str) {
    let config = output.with_extension("conf");
    fs::write(&config, MKE2FS_CONF).unwrap();
    run(tool_command("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-U", FS_UUID, "-E"])
        .arg(format!("hash_seed={HASH_SEED},root_owner=0:0,lazy_itable_init=0,nodiscard"))
        .arg("-d")
        .arg(source)
        .arg(output)
        .arg(size)
        .env("MKE2FS_CONFIG", &config)
        .env("E2FSPROGS_FAKE_TIME", TIME.to_string()));
}

/// Two ext4 images in `dir`, a.img and b.img, whose /etc/hostname differ.
fn ext4_pair(dir: &Path) -> (PathBuf, PathBuf) {
    write_tree(&dir.join("tree-a"), b"host\n");
    write_tree(&dir.join("tree-b"), b"guest\n");
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    mke2fs(&dir.join("tree-a"), &a, "32M");
    mke2fs(&dir.join("tree-b"), &b, "32M");
    (a, b)
}

#[test]
fn diff_ext4_images_name_the_file_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = ext4_pair(dir.path());
    let output = diff_command(dir.path(), &["a.img", "b.img"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    assert!(text.starts_with("a.img vs b.img (ext4): differs\n"), "{text}");
    let hostname = text
        .lines()
        .find(|line| line.trim_start().starts_with("/etc/hostname: content differs (sha256 "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(hostname.ends_with(", 5 → 6 bytes)"), "{text}");
    assert!(!text.contains("/usr/bin/tool"), "{text}");
    assert!(!text.contains("two words"), "{text}");

    // A second image of the same tree is byte for byte the same: identical, exit 0. (The first
    // mke2fs read the files, which moved their access times: pin them again.)
    pin_times(&dir.path().join("tree-a"));
    mke2fs(&dir.path().join("tree-a"), &dir.path().join("again.img"), "32M");
    let (code, report) = diff_json(dir.path(), "a.img", "again.img");
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["identical"], true);
    assert_eq!(report["differences"], serde_json::json!([]));
    let same = diff_command(dir.path(), &["a.img", "again.img"]);
    assert_eq!((same.status.code(), stdout(&same).as_str()), (Some(0), "a.img vs again.img: identical\n"));

    // One byte in a block no file uses: a byte range, with what the filesystem says is there.
    let changed = dir.path().join("changed.img");
    fs::copy(dir.path().join("a.img"), &changed).unwrap();
    let offset = (32 << 20) - 4096 + 100;
    File::options().write(true).open(&changed).unwrap().write_all_at(&[0x5a], offset).unwrap();
    let output = diff_command(dir.path(), &["a.img", "changed.img"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_lines(
        &output,
        &["bytes differ: 1 byte in 1 range:", &format!("{offset:#x}..{:#x} (1 byte): unused blocks", offset + 1)],
    );
    let (_, report) = diff_json(dir.path(), "a.img", "changed.img");
    let ranges = &report["differences"][0];
    assert_eq!(ranges["kind"], "byte_ranges");
    assert_eq!(ranges["ranges"][0]["offset"], offset);
    assert_eq!(ranges["ranges"][0]["length"], 1);
    assert_eq!(ranges["ranges"][0]["region"], "unused blocks");
    assert_eq!(ranges["ranges"][0]["explained"], false);
}

#[test]
fn diff_missing_and_mismatched_inputs_exit_2_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.tar"), rootfs_tars().0).unwrap();
    let output = diff_command(dir.path(), &["a.tar", "missing.tar"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.tar") && stderr.contains("No such file"), "{stderr}");
    assert!(output.stdout.is_empty());

    fs::create_dir(dir.path().join("sub")).unwrap();
    let output = diff_command(dir.path(), &["a.tar", "sub"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("a.tar is a file but sub is a directory"));

    // A tar cut short is reported as such, naming the file.
    let tar = rootfs_tars().1;
    fs::write(dir.path().join("cut.tar"), &tar[..1536]).unwrap();
    let output = diff_command(dir.path(), &["a.tar", "cut.tar"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cut.tar: not a valid tar"), "{}", describe(&output));
}

const PARTITIONS: &str = "\
esp    ,   2048, 81920, U, B78084E2-3363-1346-8C25-D426F26B8928, EFI system partition
A_root ,  83968,   64M, L,                                     , Root partition
B_root , 215040,   64M, L,                                     , Root partition B (empty)
";

/// A FAT image made by `icos fat` holding /EFI/BOOT/grub.cfg.
fn fat_image(dir: &Path, name: &str, grub_cfg: &[u8]) -> PathBuf {
    let tar = dir.join(format!("{name}.tar"));
    fs::write(
        &tar,
        tar_bytes(&[
            member(b"./", EntryType::Directory, 0o755, b""),
            member(b"./EFI/", EntryType::Directory, 0o755, b""),
            member(b"./EFI/BOOT/", EntryType::Directory, 0o755, b""),
            member(b"./EFI/BOOT/grub.cfg", EntryType::Regular, 0o644, grub_cfg),
        ]),
    )
    .unwrap();
    let image = dir.join(format!("{name}.img"));
    run(icos().args(["fat", "--input"]).arg(&tar).arg("--output").arg(&image).args([
        "--size",
        "40M",
        "--label",
        "EFI",
        "--volume-id",
        "1234ABCD",
    ]));
    image
}

fn disk(dir: &Path, output: &str, esp: &Path, root: &Path) {
    run(icos()
        .current_dir(dir)
        .args(["disk", "--partitions", "partitions.csv", "--output", output, "--size", "200M", "--seed", SEED])
        .arg(format!("--image=esp={}", esp.display()))
        .arg(format!("--image=A_root={}", root.display())));
}

#[test]
fn diff_disk_images_report_partitions_files_and_stray_bytes() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path();
    fs::write(path.join("partitions.csv"), PARTITIONS).unwrap();
    let (root_a, root_b) = ext4_pair(path);
    let esp_a = fat_image(path, "esp-a", b"set timeout=5\n");
    let esp_b = fat_image(path, "esp-b", b"set timeout=10\n");
    disk(path, "disk-a.img", &esp_a, &root_a);
    disk(path, "disk-b.img", &esp_b, &root_b);
    let output = diff_command(path, &["disk-a.img", "disk-b.img"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "disk-a.img vs disk-b.img (GPT disk): differs", "{text}");
    assert_eq!(lines[1], "  partition 1 \"esp\" (FAT): differs", "{text}");
    assert!(lines[2].starts_with("    /EFI/BOOT/grub.cfg: content differs (sha256 "), "{text}");
    assert!(lines[2].ends_with(", 14 → 15 bytes)"), "{text}");
    let root = lines.iter().position(|line| *line == "  partition 2 \"A_root\" (ext4): differs").expect(&text);
    assert!(lines[root + 1].starts_with("    /etc/hostname: content differs"), "{text}");
    assert!(!text.contains("B_root"), "{text}");

    // One byte in the empty partition B_root, and one in the protective MBR's boot code: no
    // structure explains them, so they are listed by offset (the first relative to the
    // partition; at the disk level it is accounted for by the partition's report).
    let changed = path.join("disk-c.img");
    fs::copy(path.join("disk-a.img"), &changed).unwrap();
    let file = File::options().write(true).open(&changed).unwrap();
    let stray = 215_040 * 512 + 12_345;
    file.write_all_at(&[1], stray).unwrap();
    file.write_all_at(&[2], 100).unwrap();
    let output = diff_command(path, &["disk-a.img", "disk-c.img"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(!stdout(&output).contains(&format!("{stray:#x}")), "{}", describe(&output));
    assert_lines(
        &output,
        &["partition 3 \"B_root\" (bytes): differs", "0x3039..0x303a (1 byte)", "0x64..0x65 (1 byte): protective MBR"],
    );
    let (_, report) = diff_json(path, "disk-a.img", "disk-c.img");
    let locations: Vec<&Value> = report["differences"].as_array().unwrap().iter().map(|d| &d["location"]).collect();
    assert_eq!(
        locations,
        [
            &serde_json::json!(["disk-a.img vs disk-c.img", "partition 3 \"B_root\""]),
            &serde_json::json!(["disk-a.img vs disk-c.img"])
        ],
        "{report:#}"
    );
}

#[test]
fn diff_update_packages_compare_members_as_nested_artifacts() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path();
    let (root_a, root_b) = ext4_pair(path);
    fs::write(path.join("version-a"), b"1.0\n").unwrap();
    fs::write(path.join("version-b"), b"1.1\n").unwrap();
    let package = |output: &str, root: &Path, version: &str, level: &str| {
        run(icos()
            .current_dir(path)
            .args(["package", "--output", output, "--level", level])
            .arg(format!("--member=boot.img={}", root_a.display()))
            .arg(format!("--member=root.img={}", root.display()))
            .arg(format!("--member=VERSION.TXT={version}")));
    };
    package("a.tar.zst", &root_a, "version-a", "3");
    package("b.tar.zst", &root_b, "version-b", "3");
    package("c.tar.zst", &root_a, "version-a", "5");
    let output = diff_command(path, &["a.tar.zst", "b.tar.zst"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "a.tar.zst vs b.tar.zst (zstd-compressed tar of images): differs", "{text}");
    assert_eq!(lines[1], "  root.img (ext4): differs", "{text}");
    assert!(lines[2].starts_with("    /etc/hostname: content differs"), "{text}");
    assert!(!text.contains("boot.img"), "{text}");
    assert_lines(&output, &["VERSION.TXT (bytes): differs", "content \"1.0\\n\" → \"1.1\\n\""]);

    // Same content, another compression level: only the compressed bytes differ.
    let output = diff_command(path, &["a.tar.zst", "c.tar.zst"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    assert!(text.contains("compressed bytes (the decompressed content is identical"), "{text}");
    assert!(text.ends_with("1 difference\n"), "{text}");
}

#[test]
fn diff_directories_compare_files_with_the_same_relative_name() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("published"), dir.path().join("rebuilt"));
    let (tar_a, tar_b) = rootfs_tars();
    for (root, tar) in [(&a, &tar_a), (&b, &tar_b)] {
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::write(root.join("sub/root.tar"), tar).unwrap();
        fs::write(root.join("SHA256SUMS"), b"same\n").unwrap();
    }
    fs::write(a.join("only-published"), b"x").unwrap();
    fs::create_dir_all(b.join("extra/dir")).unwrap();
    fs::write(b.join("extra/dir/file"), b"y").unwrap();
    let output = icos().arg("diff").arg(&a).arg(&b).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_lines(
        &output,
        &[
            "extra: only in B (directory with 2 entries below it)",
            "only-published: only in A (regular file)",
            "sub/root.tar (rootfs tar): differs",
            "/etc/owned: owner 0:0 → 1000:1000",
            "8 differences (1 of 2 files on both sides differs)",
        ],
    );
    assert!(!stdout(&output).contains("SHA256SUMS"), "{}", describe(&output));
    let output = icos().args(["diff", "--json"]).arg(&a).arg(&b).output().unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["directories"], true);
    let owner = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|difference| difference["kind"] == "owner")
        .expect("an owner difference");
    assert_eq!(owner["location"], serde_json::json!(["sub/root.tar", "/etc/owned"]));

    let same = icos().arg("diff").arg(&a).arg(&a).output().unwrap();
    assert_eq!(same.status.code(), Some(0), "{}", describe(&same));
    assert!(stdout(&same).ends_with(": identical (3 files)\n"), "{}", describe(&same));
}

#[test]
fn diff_max_differences_caps_what_is_shown_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = rootfs_tars();
    fs::write(dir.path().join("a.tar"), a).unwrap();
    fs::write(dir.path().join("b.tar"), b).unwrap();
    let output = diff_command(dir.path(), &["--max-differences", "2", "a.tar", "b.tar"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("… and 4 more differences"), "{text}");
    assert!(text.ends_with("6 differences\n"), "{text}");
    let output = diff_command(dir.path(), &["--json", "--max-differences", "2", "a.tar", "b.tar"]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["differences"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["omitted"], 4);
    assert_eq!(report["difference_count"], 6);
}
