//! Runs `icos disk` and checks the image's bytes, holes and error handling with coreutils.
//! The partition table itself is checked with sfdisk in `tests/build_root/disk.rs`.

mod common;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Output};

use common::{directory_entries, icos, tool_command};

const SEED: &str = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c";

/// A small layout in the style of the IC-OS GuestOS table, with units and an empty UUID.
const PARTITIONS: &str = "\
# name, start, size, type, uuid, description
esp    ,   2048, 204800, U, B78084E2-3363-1346-8C25-D426F26B8928, EFI system partition
grub   , 206848,   100M, L, 6788E4CF-F456-104E-9A34-A2C58CFB0EE6, Grub bootloader partition
A_root , 411648,     1G, L,                                     , Root partition, for system A
";

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("cannot start a command");
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length).map(|index| (index % 251) as u8 ^ seed).collect()
}

/// Writes the inputs into `dir`: partitions.csv, esp.img (dense, with a zero block) and root.img
/// (sparse: 3 MiB of data in a 200 MiB file).
fn inputs(dir: &Path) {
    fs::write(dir.join("partitions.csv"), PARTITIONS).unwrap();
    let mut esp = pattern(3 * 4096 + 17, 1);
    esp[4096..8192].fill(0);
    fs::write(dir.join("esp.img"), esp).unwrap();
    let root = File::create(dir.join("root.img")).unwrap();
    root.set_len(200 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    root.write_all_at(&pattern(3 << 20, 7), 50 << 20).unwrap();
}

fn disk_command(dir: &Path, output: &str) -> Command {
    let mut command = icos();
    command.current_dir(dir).args([
        "disk",
        "--partitions",
        "partitions.csv",
        "--output",
        output,
        "--size",
        "2G",
        "--seed",
        SEED,
        "--image",
        "esp=esp.img",
        "--image",
        "A_root=root.img",
    ]);
    command
}

fn read_region(path: &Path, offset: u64, length: usize) -> Vec<u8> {
    let mut file = File::open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut bytes = vec![0u8; length];
    file.read_exact(&mut bytes).unwrap();
    bytes
}

#[test]
fn images_land_at_their_offsets_in_a_sparse_deterministic_disk() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    inputs(dir.path());
    run(&mut disk_command(dir.path(), "disk.img"));
    let disk = dir.path().join("disk.img");
    assert_eq!(fs::metadata(&disk).unwrap().len(), 2 << 30);

    // Each partition region starts with its image, and the bytes after it are zeros.
    for (name, start_sector) in [("esp.img", 2048u64), ("root.img", 411648)] {
        let image = fs::read(dir.path().join(name)).unwrap();
        let region = read_region(&disk, start_sector * 512, image.len() + 8192);
        assert!(region[..image.len()] == image[..], "{name} differs in the disk");
        assert!(region[image.len()..].iter().all(|&byte| byte == 0), "{name}: junk after the image");
    }
    // The grub partition has no image and stays zero.
    assert!(read_region(&disk, 206848 * 512, 1 << 20).iter().all(|&byte| byte == 0));
    // Protective MBR: type 0xEE in the first record and the boot signature.
    let mbr = read_region(&disk, 0, 512);
    assert_eq!((mbr[450], &mbr[510..]), (0xEE, &[0x55, 0xAA][..]));
    assert_eq!(&read_region(&disk, 512, 8), b"EFI PART");
    assert_eq!(&read_region(&disk, (2 << 30) - 512, 8), b"EFI PART");

    let usage = run(tool_command("du").args(["--block-size=1"]).arg(&disk));
    let allocated: u64 = String::from_utf8_lossy(&usage.stdout).split_whitespace().next().unwrap().parse().unwrap();
    assert!(allocated < 16 << 20, "the disk is not sparse: {allocated} bytes allocated");

    // A second run, with copies of the inputs in another directory, under another time zone and
    // umask, gives the same bytes.
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path != disk {
            fs::copy(&path, elsewhere.join(path.file_name().unwrap())).unwrap();
        }
    }
    let command = disk_command(&elsewhere, "again.img");
    let arguments: Vec<String> = command.get_args().map(|arg| arg.to_string_lossy().into_owned()).collect();
    run(Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(command.get_program())
        .args(arguments)
        .current_dir(&elsewhere)
        .env("TZ", "Asia/Kolkata")
        .env("LC_ALL", "C.UTF-8"));
    run(tool_command("cmp").arg(&disk).arg(elsewhere.join("again.img")));
}

#[test]
fn bad_inputs_exit_2_with_the_csv_line_or_partition_named_and_no_output() {
    let cases: [(&str, &[&str], &str); 9] = [
        (PARTITIONS, &["--image", "esp=absent.img"], "absent.img"),
        (
            PARTITIONS,
            &["--image", "grub=big.img"],
            "is larger than partition \"grub\" (104857600 bytes, partitions.csv:3)",
        ),
        (
            "a,2048,4096,L,\nb,4096,2048,L,\n",
            &[],
            "partitions.csv:2: partition \"b\": sectors 4096..=6143 overlap partition \"a\"",
        ),
        ("a,2049,2048,L,\n", &[], "partitions.csv:1: partition \"a\": start sector 2049 is not aligned to 2048"),
        ("a,2048,2048,L,\na,4096,2048,L,\n", &[], "partitions.csv:2: partition \"a\": the name is also used on line 1"),
        ("a,2048,2048,Q,\n", &[], "partitions.csv:1: partition \"a\": unknown partition type \"Q\""),
        ("a,2048,60G,L,\n", &[], "partitions.csv:1: partition \"a\": sectors 2048..=125831167 are outside"),
        ("a,2048,2048,L,\nb,4096,20\n", &[], "partitions.csv:2: expected name,start,size,type,uuid"),
        ("a,2048,2048,L,\n", &["--image", "nope=big.img"], "partition \"nope\", which partitions.csv does not list"),
    ];
    for (csv, extra, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("partitions.csv"), csv).unwrap();
        File::create(dir.path().join("big.img")).unwrap().set_len((100 << 20) + 1).unwrap();
        let before = directory_entries(dir.path());
        let output = icos()
            .current_dir(dir.path())
            .args(["disk", "--partitions", "partitions.csv", "--output", "disk.img", "--size", "50G"])
            .args(["--seed", SEED])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{csv:?} {extra:?}: {stderr}");
        assert!(stderr.contains(expected), "{csv:?} {extra:?}: {stderr}");
        assert_eq!(directory_entries(dir.path()), before, "{csv:?} {extra:?} left a file behind");
    }
}

#[test]
fn package_option_gives_the_same_bytes_as_disk_then_package_and_leaves_no_image() {
    let dir = tempfile::tempdir().unwrap();
    inputs(dir.path());
    run(&mut disk_command(dir.path(), "disk.img"));
    run(icos().current_dir(dir.path()).args([
        "package",
        "--output",
        "two-steps.tar.zst",
        "--member",
        "disk.img=disk.img",
    ]));

    let direct = tempfile::tempdir().unwrap();
    inputs(direct.path());
    let command = disk_command(direct.path(), "unused");
    let args: Vec<_> = command.get_args().map(|arg| arg.to_owned()).collect();
    let position = args.iter().position(|arg| arg == "--output").unwrap();
    let mut args = args;
    args.splice(position..position + 2, [std::ffi::OsString::from("--package"), "disk-img.tar.zst".into()]);
    run(icos().current_dir(direct.path()).args(&args));

    assert_eq!(
        fs::read(direct.path().join("disk-img.tar.zst")).unwrap(),
        fs::read(dir.path().join("two-steps.tar.zst")).unwrap()
    );
    assert_eq!(directory_entries(direct.path()), ["disk-img.tar.zst", "esp.img", "partitions.csv", "root.img"]);
}
