//! The whole image pipeline, run twice under different conditions, must give identical bytes at
//! every step; and what lands in the ext4 root filesystem must match the rootfs manifest.
//!
//! The two runs differ in TZ, LANG/LC_ALL, umask, working directory, zstd thread count, and in the
//! filesystem the work happens on (tmpfs versus a disk filesystem).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::common::{icos, tool_command};
use crate::ext4::{canonical_tar, item, Node};

const SEED: &str = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c";

const PARTITIONS: &str = "\
# name, start, size, type, uuid, description
esp    , 2048, 40M, U, , EFI system partition
A_boot , 83968, 32M, L, , Boot partition for system A
A_root , 149504, 64M, L, , Root partition for system A
";

/// How one run of the pipeline differs from the other.
struct Conditions {
    work: PathBuf,
    cwd: PathBuf,
    tz: &'static str,
    lang: &'static str,
    umask: &'static str,
    zstd_threads: &'static str,
}

fn long_name() -> Vec<u8> {
    vec![b'n'; 255]
}

/// A rootfs tar as a container engine exports it: unsorted, with odd names and every kind of entry.
fn container_export() -> Vec<u8> {
    let long = [b"srv/".as_slice(), &long_name()].concat();
    let mut suid = item(b"usr/bin/ping", Node::File(b"\x7fELF ping"));
    suid.mode = 0o4755;
    suid.xattrs.push((
        "security.capability",
        b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    ));
    let mut owned = item(b"home/user/notes with spaces.txt", Node::File(b"owned by 1000"));
    owned.owner = 1000;
    canonical_tar(&[
        item(b"usr/", Node::Dir),
        item(b"usr/bin/", Node::Dir),
        suid,
        item(b"usr/bin/ping6", Node::HardLink(b"usr/bin/ping")),
        item(b"boot/", Node::Dir),
        item(b"boot/vmlinuz", Node::File(&[0x55; 9000])),
        item(b"var/", Node::Dir),
        item(b"var/lib/", Node::Dir),
        item(b"var/lib/state", Node::File(b"state")),
        item(b"etc/", Node::Dir),
        item(b"etc/hostname", Node::File(b"container-id\n")),
        item(b"etc/machine-id", Node::File(b"0123456789abcdef0123456789abcdef\n")),
        item(b"etc/os-release", Node::Symlink(b"../usr/lib/os-release")),
        item(b"home/", Node::Dir),
        item(b"home/user/", Node::Dir),
        owned,
        item(b"srv/", Node::Dir),
        item(b"srv/new\nline", Node::File(b"newline")),
        item(b"srv/caf\xe9", Node::File(b"latin-1 name")),
        item(&long, Node::File(b"255 bytes")),
        item(b"dev/", Node::Dir),
        item(b"dev/null", Node::Char(1, 3)),
        item(b"run/", Node::Dir),
        item(b"run/lock", Node::Fifo),
        item(b"tmp/", Node::Dir),
    ])
}

fn esp_tree() -> Vec<u8> {
    canonical_tar(&[
        item(b"EFI/", Node::Dir),
        item(b"EFI/BOOT/", Node::Dir),
        item(b"EFI/BOOT/BOOTX64.EFI", Node::File(&[0x4d; 5000])),
    ])
}

fn checked(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs icos with ARGS under the run's conditions: its own TZ, locale, umask and directory.
fn icos_under(conditions: &Conditions, args: &[&OsStr]) {
    let binary = icos().get_program().to_owned();
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("umask {}; exec \"$0\" \"$@\"", conditions.umask))
        .arg(binary)
        .args(args)
        .current_dir(&conditions.cwd)
        .env("TZ", conditions.tz)
        .env("LANG", conditions.lang)
        .env("LC_ALL", conditions.lang)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    checked(output, &format!("icos {args:?}"));
}

/// Runs the pipeline in `conditions.work` and returns the SHA-256 of every output by file name.
fn run_pipeline(conditions: &Conditions) -> BTreeMap<String, String> {
    let work = &conditions.work;
    fs::write(work.join("export.tar"), container_export()).unwrap();
    fs::write(work.join("esp.tar"), esp_tree()).unwrap();
    fs::write(work.join("hostname"), b"guestos\n").unwrap();
    fs::write(work.join("partitions.csv"), PARTITIONS).unwrap();
    let path = |name: &str| work.join(name).into_os_string();
    let run = |args: Vec<std::ffi::OsString>| {
        let args: Vec<&OsStr> = args.iter().map(|arg| arg.as_os_str()).collect();
        icos_under(conditions, &args);
    };
    let args = |parts: &[&str]| parts.iter().map(|part| part.into()).collect::<Vec<std::ffi::OsString>>();

    let mut canonicalize = args(&["rootfs", "canonicalize", "--empty-machine-id", "-i"]);
    canonicalize.extend([
        path("export.tar"),
        "-o".into(),
        path("rootfs-tree.tar"),
        "--manifest".into(),
        path("rootfs.jsonl"),
    ]);
    canonicalize.extend([
        "--replace".into(),
        [OsStr::new("/etc/hostname="), path("hostname").as_os_str()].join(OsStr::new("")),
    ]);
    run(canonicalize);
    let mut split = args(&["rootfs", "split", "-i"]);
    split.extend([path("rootfs-tree.tar"), "--boot".into(), path("boot.tar"), "--root".into(), path("root.tar")]);
    split.extend(["--var".into(), path("var.tar"), "--root-manifest".into(), path("root.jsonl")]);
    run(split);
    for (tree, size, partition) in [("boot", "32M", "A_boot"), ("root", "64M", "A_root")] {
        let mut ext4 =
            args(&["ext4", "--size", size, "--label", tree, "--seed", SEED, "--partition-name", partition, "-i"]);
        ext4.extend([path(&format!("{tree}.tar")), "-o".into(), path(&format!("{tree}.img"))]);
        ext4.extend(["--partitions".into(), path("partitions.csv")]);
        // What the Bazel rules keep: the filesystem packaged, as partition-<tree>.tzst.
        ext4.extend(["--package".into(), path(&format!("partition-{tree}.tzst"))]);
        run(ext4);
    }
    let mut fat = args(&["fat", "--size", "40M", "--label", "ESP", "--seed", SEED, "--partition-name", "esp", "-i"]);
    fat.extend([path("esp.tar"), "-o".into(), path("esp.img"), "--partitions".into(), path("partitions.csv")]);
    run(fat);
    let mut disk = args(&["disk", "--size", "256M", "--seed", SEED, "--partitions"]);
    disk.extend([path("partitions.csv"), "--output".into(), path("disk.img")]);
    for (partition, image) in [("esp", "esp.img"), ("A_boot", "boot.img"), ("A_root", "root.img")] {
        disk.extend([
            "--image".into(),
            [OsStr::new(partition), OsStr::new("="), path(image).as_os_str()].join(OsStr::new("")),
        ]);
    }
    run(disk);
    let mut package = args(&["package", "--threads", conditions.zstd_threads, "--output"]);
    package.extend([
        path("disk-img.tar.zst"),
        "--member".into(),
        [OsStr::new("disk.img="), path("disk.img").as_os_str()].join(OsStr::new("")),
    ]);
    run(package);
    // The same disk and an upgrade image from the packaged partitions, as the Bazel rules make them.
    let mut disk = args(&["disk", "--size", "256M", "--seed", SEED, "--partitions"]);
    disk.extend([path("partitions.csv"), "--package".into(), path("disk-from-tzst.tar.zst")]);
    for (partition, image) in [("esp", "esp.img"), ("A_boot", "partition-boot.tzst"), ("A_root", "partition-root.tzst")]
    {
        disk.extend([
            "--image".into(),
            [OsStr::new(partition), OsStr::new("="), path(image).as_os_str()].join(OsStr::new("")),
        ]);
    }
    run(disk);
    fs::write(work.join("VERSION.TXT"), b"1.2.3\n").unwrap();
    let member = |flag: &str, name: &str, file: &str| {
        [flag.into(), [OsStr::new(name), OsStr::new("="), path(file).as_os_str()].join(OsStr::new(""))]
    };
    let mut upgrade = args(&["package", "--threads", conditions.zstd_threads, "--output"]);
    upgrade.push(path("update-img.tar.zst"));
    upgrade.extend(
        member("--member", "boot.img", "boot.img").into_iter().chain(member("--member", "root.img", "root.img")),
    );
    upgrade.extend(member("--member", "VERSION.TXT", "VERSION.TXT"));
    run(upgrade);
    let mut upgrade = args(&["package", "--output"]);
    upgrade.push(path("update-from-tzst.tar.zst"));
    upgrade.extend(member("--member", "VERSION.TXT", "VERSION.TXT"));
    upgrade.extend(member("--image-member", "boot.img", "partition-boot.tzst"));
    upgrade.extend(member("--image-member", "root.img", "partition-root.tzst"));
    run(upgrade);

    let mut digests = BTreeMap::new();
    for entry in fs::read_dir(work).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let content = fs::read(entry.path()).unwrap();
        digests.insert(name, format!("{:x}", Sha256::digest(&content)));
    }
    digests
}

fn filesystem_type(path: &Path) -> String {
    let output = checked(tool_command("stat").args(["-f", "-c", "%T"]).arg(path).output().unwrap(), "stat -f");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn pipeline_gives_identical_bytes_under_different_conditions() {
    let shm = Path::new("/dev/shm");
    assert_eq!(filesystem_type(shm), "tmpfs", "the test needs /dev/shm on tmpfs");
    let on_tmpfs = tempfile::tempdir_in(shm).unwrap();
    let on_disk = tempfile::tempdir_in("/var/tmp").unwrap();
    assert_ne!(filesystem_type(on_disk.path()), "tmpfs", "/var/tmp must be on a disk filesystem");
    let elsewhere = tempfile::tempdir().unwrap();

    let first = run_pipeline(&Conditions {
        work: on_tmpfs.path().to_owned(),
        cwd: on_tmpfs.path().to_owned(),
        tz: "UTC",
        lang: "C",
        umask: "022",
        zstd_threads: "1",
    });
    let second = run_pipeline(&Conditions {
        work: on_disk.path().to_owned(),
        cwd: elsewhere.path().to_owned(),
        tz: "Asia/Tokyo",
        lang: "de_DE.UTF-8",
        umask: "077",
        zstd_threads: "3",
    });
    assert_eq!(first.len(), 21, "{first:?}");
    assert_eq!(first, second, "outputs differ between the two runs");
    // Packaged partitions change nothing in what is published: the images made from them copy
    // their compressed frames, and stock zstd decompresses them to the same tar streams as the
    // images made from the raw filesystems.
    for (from_packages, from_raw) in
        [("disk-from-tzst.tar.zst", "disk-img.tar.zst"), ("update-from-tzst.tar.zst", "update-img.tar.zst")]
    {
        let work = on_tmpfs.path();
        assert_eq!(
            tar_stream_digest(&work.join(from_packages)),
            tar_stream_digest(&work.join(from_raw)),
            "{from_packages}"
        );
    }
}

/// The SHA-256 of what `zstd -dc` makes of the package at `path`.
fn tar_stream_digest(path: &Path) -> String {
    let output = checked(tool_command("zstd").arg("-dc").arg(path).output().unwrap(), "zstd -dc");
    format!("{:x}", Sha256::digest(&output.stdout))
}

/// The root filesystem as debugfs sees it matches the manifest of the root tree, odd names included.
#[test]
fn root_filesystem_matches_its_manifest() {
    let work = tempfile::tempdir().unwrap();
    let conditions = Conditions {
        work: work.path().to_owned(),
        cwd: work.path().to_owned(),
        tz: "UTC",
        lang: "C.UTF-8",
        umask: "022",
        zstd_threads: "2",
    };
    run_pipeline(&conditions);
    let image = work.path().join("root.img");
    checked(tool_command("e2fsck").arg("-fn").arg(&image).output().unwrap(), "e2fsck -fn");
    let dump = work.path().join("dump");
    fs::create_dir(&dump).unwrap();
    let request = format!("rdump / {}", dump.display());
    checked(tool_command("debugfs").arg("-R").arg(&request).arg(&image).output().unwrap(), "debugfs rdump");
    let extracted = dump.join(""); // debugfs rdump of "/" puts the tree directly into DUMP

    let manifest = fs::read_to_string(work.path().join("root.jsonl")).unwrap();
    let mut checked_entries = 0;
    for line in manifest.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let path_bytes = match record["path_hex"].as_str() {
            Some(hex) => (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect(),
            None => record["path"].as_str().unwrap().as_bytes().to_vec(),
        };
        let relative = Path::new(OsStr::from_bytes(&path_bytes[1..]));
        let on_disk = extracted.join(relative);
        let kind = record["type"].as_str().unwrap();
        let metadata = fs::symlink_metadata(&on_disk).unwrap_or_else(|error| {
            panic!("{} from the manifest is not in the filesystem: {error}", on_disk.display())
        });
        let mode = u32::from_str_radix(record["mode"].as_str().unwrap(), 8).unwrap();
        match kind {
            "dir" => assert!(metadata.is_dir(), "{relative:?}"),
            "file" | "hardlink" => {
                assert!(metadata.is_file(), "{relative:?}");
                if let Some(digest) = record["sha256"].as_str() {
                    assert_eq!(format!("{:x}", Sha256::digest(fs::read(&on_disk).unwrap())), digest, "{relative:?}");
                }
            }
            "symlink" => assert_eq!(
                fs::read_link(&on_disk).unwrap().as_os_str().as_bytes(),
                record["target"].as_str().unwrap().as_bytes(),
                "{relative:?}"
            ),
            // rdump does not recreate device nodes and FIFOs; the ext4 tests check those.
            _ => continue,
        }
        if kind != "symlink" && !relative.as_os_str().is_empty() {
            // rdump chowns after chmod, which clears set-id bits: those are checked with stat below.
            assert_eq!(metadata.permissions().mode() & 0o777, mode & 0o777, "mode of {relative:?}");
            assert_eq!(u64::from(metadata.uid()), record["uid"].as_u64().unwrap(), "owner of {relative:?}");
        }
        checked_entries += 1;
    }
    assert!(checked_entries >= 14, "only {checked_entries} entries checked");
    assert!(extracted.join(OsStr::from_bytes(b"srv/caf\xe9")).is_file());
    assert!(extracted.join("srv/new\nline").is_file());
    assert!(extracted.join("home/user/notes with spaces.txt").is_file());
    assert_eq!(fs::read(extracted.join("etc/hostname")).unwrap(), b"guestos\n");
    assert_eq!(fs::read(extracted.join("etc/machine-id")).unwrap(), b"");

    let stat = checked(
        tool_command("debugfs").args(["-R", "stat /usr/bin/ping"]).arg(&image).output().unwrap(),
        "debugfs stat",
    );
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.contains("Mode:  04755"), "{stat}");
    assert!(stat.contains("Links: 2"), "the hard link shares the inode: {stat}");

    let dump = checked(
        tool_command("sfdisk").arg("--dump").arg(work.path().join("disk.img")).output().unwrap(),
        "sfdisk --dump",
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    for name in ["esp", "A_boot", "A_root"] {
        assert!(dump.contains(&format!("name=\"{name}\"")), "{dump}");
    }
}
