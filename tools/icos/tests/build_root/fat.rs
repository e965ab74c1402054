//! `icos fat`: images checked with dosfstools (fsck.fat, fatlabel) and mtools.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use icos::seed::FilesystemIds;

use crate::common::{directory_entries, icos, tool_command};
use crate::ext4::{canonical_tar, disk_dir, item, Node};

/// The UUID of the partition the test filesystems are for: the volume id derives from it.
const PARTITION_UUID: &str = "b78084e2-3363-1346-8c25-d426f26b8928";

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An mtools command on `image`; MTOOLS_SKIP_CHECK lets it accept any geometry.
fn mtools(tool: &str, image: &Path, args: &[&str]) -> Output {
    let output =
        run(tool_command(tool).env("MTOOLS_SKIP_CHECK", "1").env("LC_ALL", "C.UTF-8").arg("-i").arg(image).args(args));
    assert!(output.status.success(), "{tool} {args:?}: {}", stderr(&output));
    output
}

fn efi_binary() -> Vec<u8> {
    (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

fn esp_tar(efi: &[u8]) -> Vec<u8> {
    canonical_tar(&[
        item(b"./", Node::Dir),
        item(b"./EFI/", Node::Dir),
        item(b"./EFI/BOOT/", Node::Dir),
        item(b"./EFI/BOOT/BOOTX64.EFI", Node::File(efi)),
        item(b"./grub/", Node::Dir),
        item(b"./grub/A long module name, caf\xc3\xa9.mod", Node::File(b"module")),
        item(b"./grub/grub.cfg", Node::File(b"set default=0\n")),
        item(b"./grub/grubenv", Node::File(&[b'#'; 1024])),
    ])
}

fn build(dir: &Path, tar: &[u8], size: &str, extra: &[&str]) -> Output {
    fs::write(dir.join("esp.tar"), tar).unwrap();
    run(icos()
        .args(["fat", "--size", size, "--label", "ESP", "--partition-uuid", PARTITION_UUID])
        .arg("--input")
        .arg(dir.join("esp.tar"))
        .arg("--output")
        .arg(dir.join("esp.img"))
        .args(extra))
}

#[test]
fn image_passes_fsck_and_mtools_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let efi = efi_binary();
    let output = build(dir.path(), &esp_tar(&efi), "100M", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let image = dir.path().join("esp.img");
    assert_eq!(fs::metadata(&image).unwrap().len(), 100 << 20);
    let allocated = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&image).unwrap()) * 512;
    assert!(allocated < 4 << 20, "the 100 MiB image should be sparse, {allocated} bytes are allocated");

    let fsck = run(tool_command("fsck.fat").args(["-n", "-v"]).arg(&image));
    let report = stdout(&fsck);
    assert!(fsck.status.success(), "fsck.fat: {report}{}", stderr(&fsck));
    assert!(report.contains("2 FATs, 32 bit entries"), "{report}");
    assert!(!report.to_lowercase().contains("differ"), "{report}");

    let label = run(tool_command("fatlabel").arg(&image));
    assert_eq!(stdout(&label).trim(), "ESP");
    let volume_id = run(tool_command("fatlabel").arg("-i").arg(&image));
    let expected = FilesystemIds::from_parent(PARTITION_UUID.parse().unwrap()).fat_volume_id;
    assert_eq!(stdout(&volume_id).trim().to_lowercase(), format!("{expected:08x}"), "{}", stderr(&volume_id));

    let copy = dir.path().join("BOOTX64.EFI");
    mtools("mcopy", &image, &["::EFI/BOOT/BOOTX64.EFI", copy.to_str().unwrap()]);
    assert!(fs::read(&copy).unwrap() == efi, "BOOTX64.EFI differs");
    assert_eq!(stdout(&mtools("mtype", &image, &["::grub/grub.cfg"])), "set default=0\n");
    assert_eq!(stdout(&mtools("mtype", &image, &["::grub/A long module name, café.mod"])), "module");

    // Every entry, `.` and `..` included, is dated 1980-01-01 00:00.
    let listing = stdout(&mtools("mdir", &image, &["-a", "::grub"]));
    let entries: Vec<&str> = listing
        .lines()
        .skip_while(|line| !line.starts_with("Directory for"))
        .skip(1)
        .take_while(|line| !line.contains(" files "))
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(entries.len(), 5, "{listing}");
    for line in entries {
        assert!(line.contains("1980-01-01   0:00"), "{line}\n{listing}");
    }
    assert!(listing.contains("GRUBENV           1024"), "{listing}");
    assert!(listing.contains("A long module name, café.mod"), "{listing}");
}

#[test]
fn same_bytes_whatever_the_environment_and_directory() {
    let tar = esp_tar(&efi_binary());
    let first = tempfile::tempdir().unwrap();
    let second = disk_dir();
    let mut images = Vec::new();
    for (dir, tz, umask, lang) in
        [(first.path(), "UTC", "022", "C"), (second.path(), "Asia/Kathmandu", "077", "de_DE.UTF-8")]
    {
        fs::write(dir.join("esp.tar"), &tar).unwrap();
        let output = run(Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(icos().get_program())
            .args(["fat", "--input", "esp.tar", "--output", "esp.img", "--size", "100M", "--label", "ESP"])
            .args(["--partition-uuid", PARTITION_UUID])
            .current_dir(dir)
            .env("TZ", tz)
            .env("LANG", lang)
            .env("LC_ALL", lang));
        assert!(output.status.success(), "{}", stderr(&output));
        images.push(fs::read(dir.join("esp.img")).unwrap());
    }
    assert!(images[0] == images[1], "the images differ");
}

fn assert_fails(output: &Output, dir: &Path, expected: &[&str]) {
    assert_eq!(output.status.code(), Some(2), "{}", stderr(output));
    let message = stderr(output);
    for text in expected {
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
    assert_eq!(directory_entries(dir), ["esp.tar"], "{message}");
}

#[test]
fn bad_input_is_named_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 40 << 20];
    let too_large = canonical_tar(&[item(b"./", Node::Dir), item(b"./big", Node::File(&big))]);
    let output = build(dir.path(), &too_large, "34M", &[]);
    assert_fails(
        &output,
        dir.path(),
        &["does not fit in a FAT32 filesystem of 35651584 bytes", "needs 41943040 bytes", "are free"],
    );

    let symlink = canonical_tar(&[item(b"./", Node::Dir), item(b"./EFI", Node::Symlink(b"efi"))]);
    let output = build(dir.path(), &symlink, "100M", &[]);
    assert_fails(&output, dir.path(), &["/EFI is a symbolic link", "only regular files and directories"]);

    let bad_name = canonical_tar(&[item(b"./", Node::Dir), item(b"./what?", Node::File(b""))]);
    let output = build(dir.path(), &bad_name, "100M", &[]);
    assert_fails(&output, dir.path(), &["/what?: the name cannot be stored in FAT", "'?'"]);

    let output = build(dir.path(), &esp_tar(b"x"), "20M", &[]);
    assert_fails(&output, dir.path(), &["a FAT32 filesystem needs at least", "33 MiB"]);
}
