//! `icos ext4`: images checked with e2fsprogs' own e2fsck, debugfs and dumpe2fs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use icos::seed::FilesystemIds;

use crate::common::{directory_entries, dumpe2fs_field, icos, tool, tool_command};

/// The UUID of the partition the test filesystems are for: their identifiers derive from it.
const PARTITION_UUID: &str = "7c0a626e-e5ea-e543-b5c5-300eb8304db7";

/// What a tar entry is, for [`canonical_tar`].
pub enum Node<'a> {
    Dir,
    File(&'a [u8]),
    Symlink(&'a [u8]),
    HardLink(&'a [u8]),
    Char(u32, u32),
    Fifo,
}

/// One tar entry with its metadata.
pub struct Item<'a> {
    pub path: &'a [u8],
    pub node: Node<'a>,
    pub mode: u32,
    pub owner: u64,
    pub xattrs: Vec<(&'a str, &'a [u8])>,
}

pub fn item<'a>(path: &'a [u8], node: Node<'a>) -> Item<'a> {
    let mode = match node {
        Node::Dir => 0o755,
        Node::Symlink(_) => 0o777,
        _ => 0o644,
    };
    Item { path, node, mode, owner: 0, xattrs: Vec::new() }
}

/// A tar like the canonicaliser writes: ustar headers with mtime 0 and numeric owners, PAX
/// records for long paths and link targets and for extended attributes (SCHILY.xattr.*).
pub fn canonical_tar(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let (kind, data, link): (tar::EntryType, &[u8], &[u8]) = match item.node {
            Node::Dir => (tar::EntryType::Directory, b"", b""),
            Node::File(data) => (tar::EntryType::Regular, data, b""),
            Node::Symlink(target) => (tar::EntryType::Symlink, b"", target),
            Node::HardLink(target) => (tar::EntryType::Link, b"", target),
            Node::Char(..) => (tar::EntryType::Char, b"", b""),
            Node::Fifo => (tar::EntryType::Fifo, b"", b""),
        };
        let mut pax: Vec<(String, &[u8])> = Vec::new();
        let binary = |name: &[u8]| name.len() > 100 && std::str::from_utf8(name).is_err();
        if binary(item.path) || binary(link) {
            pax.push(("hdrcharset".to_owned(), b"BINARY"));
        }
        if item.path.len() > 100 {
            pax.push(("path".to_owned(), item.path));
        }
        if link.len() > 100 {
            pax.push(("linkpath".to_owned(), link));
        }
        for (name, value) in &item.xattrs {
            pax.push((format!("SCHILY.xattr.{name}"), value));
        }
        if !pax.is_empty() {
            builder.append_pax_extensions(pax.iter().map(|(key, value)| (key.as_str(), *value))).unwrap();
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(item.mode);
        header.set_uid(item.owner);
        header.set_gid(item.owner);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        let ustar = header.as_ustar_mut().unwrap();
        let short = item.path.len().min(100);
        ustar.name[..short].copy_from_slice(&item.path[..short]);
        let short = link.len().min(100);
        ustar.linkname[..short].copy_from_slice(&link[..short]);
        if let Node::Char(major, minor) = item.node {
            header.set_device_major(major).unwrap();
            header.set_device_minor(minor).unwrap();
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn debugfs(image: &Path, request: &str) -> String {
    let output = run(tool_command("debugfs").arg("-R").arg(request).arg(image));
    assert!(output.status.success(), "debugfs -R {request:?}: {}", stderr(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn build(input: &Path, output: &Path, size: &str, extra: &[&str]) -> Output {
    run(icos()
        .args(["ext4", "--size", size, "--label", "root_a", "--partition-uuid", PARTITION_UUID])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra))
}

/// Names of every kind a root filesystem may hold, and a 4000-byte deep path.
fn sample_tar() -> (Vec<u8>, Vec<u8>) {
    let long_name = vec![b'n'; 255];
    let component = [b'd'; 199];
    let mut deep = Vec::new();
    let mut deep_dirs = Vec::new();
    for _ in 0..20 {
        deep.extend_from_slice(&component);
        deep.push(b'/');
        deep_dirs.push(deep.clone());
    }
    deep.extend_from_slice(b"end");
    assert!(deep.len() >= 4000, "{}", deep.len());
    let mut long_path = b"dir/".to_vec();
    long_path.extend_from_slice(&long_name);
    // Longer than a ustar name, so they travel in PAX `path` records (with hdrcharset=BINARY
    // when they are not UTF-8).
    let long_utf8 = format!("dir/{}", "é".repeat(60)).into_bytes();
    let mut long_binary = b"dir/".to_vec();
    long_binary.extend_from_slice(&[0xff; 120]);
    // v2 file capabilities: cap_net_bind_service permitted and effective.
    let capability: &[u8] = &[0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut items = vec![
        item(b"./", Node::Dir),
        item(b"./dev/", Node::Dir),
        item(b"./dev/null", Node::Char(1, 3)),
        item(b"./dir/", Node::Dir),
        item(b"./dir/cap", Node::File(b"#!/bin/sh\n")),
        item(b"./dir/fifo", Node::Fifo),
        item(b"./dir/file", Node::File(b"hello\n")),
        item(b"./dir/hardlink", Node::HardLink(b"./dir/file")),
        item(b"./dir/line\nbreak", Node::File(b"newline")),
        item(b"./dir/not utf8 \xff\xfe", Node::File(b"bytes")),
        item(b"./dir/symlink", Node::Symlink(b"file")),
        item(b"./dir/with spaces", Node::File(b"spaces")),
        item(b"./setuid", Node::File(&[0x7f, b'E', b'L', b'F'])),
    ];
    items[4].xattrs.push(("security.capability", capability));
    items[4].mode = 0o755;
    items[12].mode = 0o4750;
    items[12].owner = 1000;
    let long_item = item(&long_path, Node::File(b"long"));
    items.insert(9, long_item);
    items.insert(13, item(&long_utf8, Node::File(b"utf8")));
    items.insert(14, item(&long_binary, Node::File(b"binary")));
    let mut all: Vec<Item> = items;
    let deep_items: Vec<Item> =
        deep_dirs.iter().map(|dir| item(dir, Node::Dir)).chain([item(&deep, Node::File(b"deep"))]).collect();
    // Sorted like a canonical tar: "dddd..." sorts before "dev".
    let mut sorted: Vec<Item> = Vec::new();
    sorted.push(all.remove(0));
    sorted.extend(deep_items);
    sorted.extend(all);
    (canonical_tar(&sorted), deep)
}

#[test]
fn image_is_clean_and_holds_every_kind_of_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (tar, deep) = sample_tar();
    let input = dir.path().join("root.tar");
    fs::write(&input, tar).unwrap();
    let image = dir.path().join("root.img");
    let output = build(&input, &image, "64M", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(fs::metadata(&image).unwrap().len(), 64 << 20);
    assert_eq!(fs::metadata(&image).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(directory_entries(dir.path()), ["root.img", "root.tar"]);
    let allocated = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&image).unwrap()) * 512;
    assert!(allocated < 8 << 20, "the 64 MiB image should be sparse, {allocated} bytes are allocated");

    let fsck = run(tool_command("e2fsck").arg("-fn").arg(&image));
    assert!(fsck.status.success(), "e2fsck: {}{}", String::from_utf8_lossy(&fsck.stdout), stderr(&fsck));

    let ids = FilesystemIds::from_parent(PARTITION_UUID.parse().unwrap());
    let header = run(tool_command("dumpe2fs").arg("-h").arg(&image));
    let header = String::from_utf8_lossy(&header.stdout);
    let field = |name: &str| dumpe2fs_field(&header, name);
    assert_eq!(field("Filesystem UUID"), ids.uuid.to_string());
    assert_eq!(field("Directory Hash Seed"), ids.ext4_hash_seed.to_string());
    assert_eq!(field("Filesystem volume name"), "root_a");
    assert_eq!(field("Block size"), "4096");
    assert_eq!(field("Inode size"), "256");
    assert_eq!(
        field("Filesystem features"),
        "has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file \
         huge_file dir_nlink extra_isize metadata_csum"
    );
    assert_eq!(field("Last write time"), "Thu Jan  1 00:00:00 1970");

    let listing = debugfs(&image, "ls -l /dir");
    let inode_of = |name: &str| {
        listing
            .lines()
            .find(|line| line.trim_end().ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no {name} in {listing}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(inode_of("file"), inode_of("hardlink"));

    let stat = |path: &str| debugfs(&image, &format!("stat {path}"));
    for path in ["/", "/dir", "/dir/file", "/dir/symlink", "/dev/null", "/dir/fifo", "/setuid"] {
        let text = stat(path);
        for time in ["ctime", " atime", " mtime", "crtime"] {
            assert!(text.contains(&format!("{time}: 0x00000000:00000000")), "{path} {time}: {text}");
        }
    }
    let root = stat("/");
    assert!(root.contains("User:     0   Group:     0"), "{root}");
    let file = stat("/dir/file");
    assert!(file.contains("Type: regular    Mode:  0644"), "{file}");
    assert!(file.contains("Links: 2"), "{file}");
    let setuid = stat("/setuid");
    assert!(setuid.contains("Mode:  04750"), "{setuid}");
    assert!(setuid.contains("User:  1000   Group:  1000"), "{setuid}");
    assert!(stat("/dev/null").contains("Device major/minor number: 01:03"), "{}", stat("/dev/null"));
    assert!(stat("/dir/fifo").contains("Type: FIFO"), "{}", stat("/dir/fifo"));
    assert!(stat("/dir/symlink").contains("Fast link dest: \"file\""), "{}", stat("/dir/symlink"));
    assert_eq!(debugfs(&image, "cat /dir/file"), "hello\n");
    let capability = debugfs(&image, "ea_get -x /dir/cap security.capability");
    assert!(capability.contains("00 00 00 02 00 04 00 00"), "{capability}");
    let deep = String::from_utf8(deep).unwrap();
    assert_eq!(debugfs(&image, &format!("cat /{deep}")), "deep");

    // Names debugfs cannot take on its command line are checked after rdump.
    let dump = dir.path().join("dump");
    fs::create_dir(&dump).unwrap();
    debugfs(&image, &format!("rdump /dir {}", dump.display()));
    let dumped = dump.join("dir");
    assert_eq!(fs::read(dumped.join("with spaces")).unwrap(), b"spaces");
    assert_eq!(fs::read(dumped.join("line\nbreak")).unwrap(), b"newline");
    let not_utf8: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(b"not utf8 \xff\xfe");
    assert_eq!(fs::read(dumped.join(not_utf8)).unwrap(), b"bytes");
    assert_eq!(fs::read(dumped.join("n".repeat(255))).unwrap(), b"long");
    assert_eq!(fs::read(dumped.join("é".repeat(60))).unwrap(), b"utf8");
    let binary: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(&[0xff; 120]);
    assert_eq!(fs::read(dumped.join(binary)).unwrap(), b"binary");
}

/// The library's estimate, used to refuse content that does not fit, stays close to what mke2fs
/// really uses.
#[test]
fn space_estimate_is_close_to_mke2fs() {
    let dir = tempfile::tempdir().unwrap();
    // Runs of zeros, which mke2fs leaves as holes, between data.
    let data: Vec<u8> = (0..300_000usize).map(|i| if (i / 10_000) % 3 == 1 { 0 } else { 0x5a }).collect();
    let names: Vec<Vec<u8>> =
        (0..300).map(|i| format!("./files/a file with a longish name {i:04}").into_bytes()).collect();
    let mut items = vec![item(b"./", Node::Dir), item(b"./files/", Node::Dir)];
    items.extend(names.iter().map(|name| item(name, Node::File(&data[..(name.len() * 997) % data.len()]))));
    let input = dir.path().join("root.tar");
    fs::write(&input, canonical_tar(&items)).unwrap();
    let image = dir.path().join("root.img");
    let options = icos::ext4::Ext4Options {
        size: 256 << 20,
        label: String::new(),
        uuid: uuid::Uuid::nil(),
        hash_seed: uuid::Uuid::nil(),
        source_date_epoch: 0,
        mke2fs: tool("mke2fs"),
    };
    let estimate = icos::ext4::build_ext4(&input, &image, &options).unwrap();
    let header = String::from_utf8(run(tool_command("dumpe2fs").arg("-h").arg(&image)).stdout).unwrap();
    let number = |name: &str| -> u64 {
        header.lines().find_map(|line| line.strip_prefix(&format!("{name}:"))).unwrap().trim().parse().unwrap()
    };
    let used = (number("Block count") - number("Free blocks")) * 4096;
    assert!(estimate <= used && estimate * 1000 >= used * 995, "estimate {estimate}, used {used}");
}

/// A directory on tmpfs: the temporary directory if it is tmpfs, else a tmpfs mounted for the test.
struct Tmpfs {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Tmpfs {
    fn new() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mounted = filesystem_type(dir.path()) != "tmpfs";
        if mounted {
            let mount = run(tool_command("mount").args(["-t", "tmpfs", "tmpfs"]).arg(dir.path()));
            assert!(mount.status.success(), "cannot mount a tmpfs (run as root): {}", stderr(&mount));
        }
        Tmpfs { dir, mounted }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = tool_command("umount").arg(self.dir.path()).status();
        }
    }
}

fn filesystem_type(path: &Path) -> String {
    let output = run(tool_command("findmnt").args(["-n", "-o", "FSTYPE", "--target"]).arg(path));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A directory on a disk filesystem: cargo's target tmp directory or Bazel's TEST_TMPDIR.
pub fn disk_dir() -> tempfile::TempDir {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("TEST_TMPDIR").map(PathBuf::from))
        .expect("neither CARGO_TARGET_TMPDIR nor TEST_TMPDIR names a directory on disk");
    fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let kind = filesystem_type(dir.path());
    assert_ne!(kind, "tmpfs", "{} should be on a disk filesystem", dir.path().display());
    dir
}

#[test]
fn same_bytes_whatever_the_environment_and_directory() {
    let (tar, _) = sample_tar();
    let tmpfs = Tmpfs::new();
    let disk = disk_dir();
    let mut images = Vec::new();
    for (dir, tz, umask, lang) in
        [(tmpfs.dir.path(), "UTC", "022", "C"), (disk.path(), "Pacific/Chatham", "077", "de_DE.UTF-8")]
    {
        fs::write(dir.join("root.tar"), &tar).unwrap();
        // Relative paths from the output's directory: the working directory differs too.
        let output = run(Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(crate::common::icos().get_program())
            .args(["ext4", "--input", "root.tar", "--output", "root.img", "--size", "64M", "--label", "root_a"])
            .args(["--partition-uuid", PARTITION_UUID])
            .current_dir(dir)
            .env("TZ", tz)
            .env("LANG", lang)
            .env("LC_ALL", lang)
            .env("SOURCE_DATE_EPOCH", "0"));
        assert!(output.status.success(), "{}", stderr(&output));
        images.push(fs::read(dir.join("root.img")).unwrap());
    }
    assert!(images[0] == images[1], "the images differ");
}

fn assert_fails(output: &Output, dir: &Path, expected: &[&str], left: &[&str]) {
    assert_eq!(output.status.code(), Some(2), "{}", stderr(output));
    let message = stderr(output);
    for text in expected {
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
    assert_eq!(directory_entries(dir), left, "{message}");
}

#[test]
fn content_too_large_names_both_sizes_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![1u8; 20 << 20];
    let input = dir.path().join("root.tar");
    fs::write(&input, canonical_tar(&[item(b"./", Node::Dir), item(b"./big", Node::File(&data))])).unwrap();
    let output = build(&input, &dir.path().join("root.img"), "16M", &[]);
    assert_fails(
        &output,
        dir.path(),
        &["does not fit in an ext4 filesystem of 16777216 bytes", "needs about", "MiB)"],
        &["root.tar"],
    );
}

#[test]
fn truncated_and_missing_input_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![1u8; 100_000];
    let tar = canonical_tar(&[item(b"./", Node::Dir), item(b"./big", Node::File(&data))]);
    let input = dir.path().join("root.tar");
    fs::write(&input, &tar[..50_000]).unwrap();
    let output = build(&input, &dir.path().join("root.img"), "16M", &[]);
    assert_fails(&output, dir.path(), &["root.tar", "truncated"], &["root.tar"]);
    let output = build(&dir.path().join("missing.tar"), &dir.path().join("root.img"), "16M", &[]);
    assert_fails(&output, dir.path(), &["missing.tar", "No such file"], &["root.tar"]);
}

/// A stand-in mke2fs: a shell script. Retries while another test's fork holds it open for writing.
fn fake_mke2fs(dir: &Path, script: &str) -> PathBuf {
    let path = dir.join("mke2fs");
    fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn build_retrying(input: &Path, output: &Path, extra: &[&str]) -> Output {
    for _ in 0..50 {
        let result = build(input, output, "16M", extra);
        if !stderr(&result).contains("Text file busy") {
            return result;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the fake mke2fs stayed busy");
}

#[test]
fn old_mke2fs_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let mke2fs = fake_mke2fs(
        tools.path(),
        "echo 'mke2fs 1.47.0 (5-Feb-2023)' >&2\necho '\tUsing EXT2FS Library version 1.47.0' >&2\n",
    );
    let input = dir.path().join("root.tar");
    fs::write(&input, canonical_tar(&[item(b"./", Node::Dir)])).unwrap();
    let output = build_retrying(&input, &dir.path().join("root.img"), &["--mke2fs", mke2fs.to_str().unwrap()]);
    assert_fails(&output, dir.path(), &["is mke2fs 1.47.0, but 1.47.1 or newer is needed"], &["root.tar"]);
}

#[test]
fn mke2fs_running_out_of_space_is_reported_with_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let mke2fs = fake_mke2fs(
        tools.path(),
        "if [ \"$1\" = -V ]; then echo 'mke2fs 1.47.4 (6-Mar-2025)' >&2; exit 0; fi\n\
         echo '__populate_fs: Could not allocate block in ext2 filesystem while writing file \"big\"' >&2\n\
         echo 'mke2fs: Could not allocate block in ext2 filesystem while populating file system' >&2\nexit 1\n",
    );
    let input = dir.path().join("root.tar");
    fs::write(&input, canonical_tar(&[item(b"./", Node::Dir), item(b"./f", Node::File(b"x"))])).unwrap();
    let output = build_retrying(&input, &dir.path().join("root.img"), &["--mke2fs", mke2fs.to_str().unwrap()]);
    assert_fails(
        &output,
        dir.path(),
        &["does not fit in an ext4 filesystem of 16777216 bytes", "Could not allocate block", "the estimate was"],
        &["root.tar"],
    );
}

#[test]
fn what_the_identifiers_derive_from_is_named_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("root.tar"), canonical_tar(&[item(b"./", Node::Dir)])).unwrap();
    fs::write(dir.path().join("partitions.csv"), "root_a,2048,16M,L,\n").unwrap();
    let cases: [(&[&str], &[&str]); 5] = [
        (&[], &["give --layout and --target, --partition-uuid, or --partitions and --partition-name", "or --uuid"]),
        (&["--partition-name", "root_a"], &["--partitions <PARTITIONS>"]),
        (
            &["--partitions", "partitions.csv", "--partition-name", "root_b"],
            &["partitions.csv: no partition is named \"root_b\"; the partitions are \"root_a\""],
        ),
        (
            &["--partitions", "partitions.csv", "--partition-name", "root_a"],
            &["partitions.csv:1: partition \"root_a\": the UUID is empty and no seed was given"],
        ),
        (&["--partition-uuid", PARTITION_UUID, "--uuid", PARTITION_UUID], &["--uuid", "cannot be used with"]),
    ];
    for (args, expected) in cases {
        let output = run(icos()
            .args(["ext4", "--input", "root.tar", "--output", "root.img", "--size", "16M"])
            .args(args)
            .current_dir(dir.path()));
        assert_fails(&output, dir.path(), expected, &["partitions.csv", "root.tar"]);
    }
}

#[test]
fn a_layout_gives_the_size_and_the_identifiers_of_its_target() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("root.tar"), canonical_tar(&[item(b"./", Node::Dir)])).unwrap();
    fs::write(
        dir.path().join("partitions.csv"),
        format!("esp,2048,2048,U,\ngrub,4096,2048,L,\nA_boot,6144,16M,L,\nA_root,38912,24M,L,{PARTITION_UUID}\n"),
    )
    .unwrap();
    run(icos()
        .args(["layout", "--partitions", "partitions.csv", "--slot", "A:boot=A_boot,root=A_root"])
        .args(["--seed", "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c", "--layout-json", "layout.json"])
        .current_dir(dir.path()));
    let output = run(icos()
        .args(["ext4", "--input", "root.tar", "--output", "root.img", "--layout", "layout.json", "--target", "A_root"])
        .current_dir(dir.path()));
    assert!(output.status.success(), "{}", stderr(&output));
    // As large as its partition, and identified from the partition's UUID as systemd-repart does.
    assert_eq!(fs::metadata(dir.path().join("root.img")).unwrap().len(), 24 << 20);
    let header =
        String::from_utf8_lossy(&run(tool_command("dumpe2fs").arg("-h").arg(dir.path().join("root.img"))).stdout)
            .into_owned();
    let ids = FilesystemIds::from_parent(PARTITION_UUID.parse().unwrap());
    assert_eq!(dumpe2fs_field(&header, "Filesystem UUID"), ids.uuid.to_string());
    let output = run(icos()
        .args(["ext4", "--input", "root.tar", "--output", "other.img", "--layout", "layout.json", "--target", "B_root"])
        .current_dir(dir.path()));
    assert_fails(
        &output,
        dir.path(),
        &["layout.json: no partition or volume is named \"B_root\"; there are esp, grub, A_boot, A_root"],
        &["layout.json", "partitions.csv", "root.img", "root.tar"],
    );
}
