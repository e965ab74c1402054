//! `icos lvm` checked with lvm2 itself, on a loop device: pvck, vgck, lvs, vgcfgbackup, and the
//! content of every logical volume read back from the device where lvm2 says it lies.
//!
//! Not through device-mapper: the kernels of the machines this project is built on have none
//! (`/dev/mapper/control` cannot be opened: "No such device", and /proc/misc lists no
//! device-mapper), so `vgchange -ay` cannot run here.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::common::{icos, run, tool_command};

const SEED: &str = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c";
const MIB: usize = 1 << 20;

/// lvm2 in a build root: no udev to ask about devices, no devices file, and only the device under
/// test visible.
const LVM_CONFIG: &str =
    "devices { obtain_device_list_from_udev = 0 external_device_info_source = \"none\" use_devicesfile = 0 } \
     global { use_lvmlockd = 0 }";

/// A loop device over a file, detached when dropped.
struct LoopDevice {
    device: String,
}

impl LoopDevice {
    fn attach(file: &Path) -> LoopDevice {
        let output = run(tool_command("losetup").args(["--find", "--show"]).arg(file));
        let device = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        assert!(device.starts_with("/dev/loop"), "losetup printed {device:?}");
        LoopDevice { device }
    }

    /// A loop device over the partition of a disk image from byte `offset`, `size` bytes long.
    fn attach_partition(disk: &Path, offset: u64, size: u64) -> LoopDevice {
        let output = run(tool_command("losetup")
            .args(["--find", "--show", "--offset", &offset.to_string(), "--sizelimit", &size.to_string()])
            .arg(disk));
        let device = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        assert!(device.starts_with("/dev/loop"), "losetup printed {device:?}");
        LoopDevice { device }
    }

    /// An lvm2 command that sees only this device.
    fn lvm(&self, command: &str) -> Command {
        let mut lvm = tool_command("lvm");
        lvm.arg(command).args(["--devices", &self.device, "--config", LVM_CONFIG]);
        lvm.env("LVM_SUPPRESS_FD_WARNINGS", "1");
        lvm
    }

    /// `length` bytes of the device from `offset`.
    fn read(&self, offset: u64, length: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; length];
        fs::File::open(&self.device).unwrap().read_exact_at(&mut bytes, offset).unwrap();
        bytes
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = tool_command("losetup").args(["--detach", &self.device]).output();
    }
}

/// One field of a one-line lvm2 report in bytes (`--units b --nosuffix --noheadings`).
fn report_number(output: &Output) -> u64 {
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().parse().unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// Runs `command`, which must succeed without a warning on stderr.
fn run_clean(command: &mut Command) -> Output {
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("WARNING") && !stderr.to_lowercase().contains("error"), "{command:?} warned: {stderr}");
    output
}

fn sha256(path: &Path) -> String {
    format!("{:x}", Sha256::digest(fs::read(path).unwrap()))
}

/// Content with data, an all-zero 4 KiB block (a hole in the volume) and an odd-sized tail.
fn pattern(length: usize, salt: u8) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..length).map(|index| (index as u8).wrapping_mul(31).wrapping_add(salt) | 1).collect();
    bytes[8192..12288].fill(0);
    bytes
}

struct Fixture {
    dir: tempfile::TempDir,
    volumes: PathBuf,
    images: Vec<(&'static str, PathBuf, Vec<u8>)>,
}

/// A volumes.csv of three volumes in 1 MiB extents (one with a fixed UUID, one left empty), and
/// images for two of them: a raw one and a packaged one.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let volumes = dir.path().join("volumes.csv");
    fs::write(
        &volumes,
        "# name, start, size, uuid, description\n\
         config,  0, 2, , Configuration\n\
         A_boot,  2, 3M, 0123ab-cdef-GHIJ-klmn-OPQR-stuv-wxyz01, Boot of slot A\n\
         guestos, 9, 6, , The GuestOS disk, left empty\n",
    )
    .unwrap();
    let config = pattern(MIB + 1000, 7);
    let boot = pattern(3 * MIB - 512, 11);
    let config_path = dir.path().join("config.img");
    fs::write(&config_path, &config).unwrap();
    let boot_raw = dir.path().join("boot.img");
    fs::write(&boot_raw, &boot).unwrap();
    let boot_package = dir.path().join("partition boot.tzst");
    run(icos()
        .arg("package")
        .arg("--output")
        .arg(&boot_package)
        .arg(format!("--member=partition.img={}", boot_raw.display())));
    Fixture { volumes, images: vec![("config", config_path, config), ("A_boot", boot_package, boot)], dir }
}

fn icos_lvm(fixture: &Fixture, group: &str, output: &Path) -> Command {
    let mut command = icos();
    command
        .arg("lvm")
        .arg("--volumes")
        .arg(&fixture.volumes)
        .args(["--size", "32M", "--extent-size", "1M", "--vg-name", group, "--seed", SEED])
        .args(["--source-date-epoch", "1700000000"])
        .arg("--output")
        .arg(output);
    for (name, path, _) in &fixture.images {
        command.arg(format!("--image={name}={}", path.display()));
    }
    command
}

#[test]
fn lvm2_accepts_the_physical_volume_and_reads_every_volume_back() {
    let fixture = fixture();
    // A name no other volume group on this machine has.
    let group = format!("icostest{}", std::process::id());
    let pv = fixture.dir.path().join("pv.img");
    run(&mut icos_lvm(&fixture, &group, &pv));
    let written = sha256(&pv);

    // Deterministic: a second run elsewhere, in another time zone and umask, gives the same bytes.
    let again = tempfile::tempdir().unwrap();
    let pv_again = again.path().join("pv.img");
    run(icos_lvm(&fixture, &group, &pv_again)
        .current_dir(again.path())
        .env("TZ", "Pacific/Chatham")
        .env("SOURCE_DATE_EPOCH", "1"));
    assert_eq!(sha256(&pv_again), written, "two runs gave different physical volumes");

    let device = LoopDevice::attach(&pv);
    run_clean(device.lvm("pvck").arg(&device.device));
    run_clean(device.lvm("vgck").arg(&group));

    let report = run_clean(device.lvm("lvs").args([
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "vg_name,vg_uuid,lv_name,lv_uuid,lv_size,seg_start_pe,seg_pe_ranges",
        &group,
    ]));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let rows = report["report"][0]["lv"].as_array().unwrap();
    let row = |name: &str| {
        rows.iter().find(|row| row["lv_name"] == name).unwrap_or_else(|| panic!("lvs lists no {name}: {report}"))
    };
    assert_eq!(rows.len(), 3, "{report}");
    for (name, size, first_extent) in [("config", 2, 0), ("A_boot", 3, 2), ("guestos", 6, 9)] {
        let row = row(name);
        assert_eq!(row["lv_size"], (size * MIB).to_string(), "{name}: {row}");
        assert_eq!(row["seg_start_pe"], "0", "{name}: {row}");
        let range = format!("{}:{}-{}", device.device, first_extent, first_extent + size - 1);
        assert_eq!(row["seg_pe_ranges"], range, "{name}: {row}");
    }
    assert_eq!(row("A_boot")["lv_uuid"], "0123ab-cdef-GHIJ-klmn-OPQR-stuv-wxyz01");

    // lvm2's own export of the metadata it read: the identifiers and fixed fields survive.
    let backup = fixture.dir.path().join("backup.vg");
    run_clean(device.lvm("vgcfgbackup").arg("--file").arg(&backup).arg(&group));
    // Without lvm2's comments ("extent_size = 2048\t\t# 1024 Kilobytes").
    let backup: String = fs::read_to_string(&backup)
        .unwrap()
        .lines()
        .map(|line| format!("{}\n", line.split("\t#").next().unwrap_or_default().trim_end()))
        .collect();
    let vg_uuid = rows[0]["vg_uuid"].as_str().unwrap();
    for expected in [
        format!("{group} {{\n\tid = \"{vg_uuid}\"\n\tseqno = 1\n"),
        "\textent_size = 2048\n".to_owned(),
        "\t\t\tpe_start = 2048\n\t\t\tpe_count = 31\n".to_owned(),
        "\t\t\tcreation_time = 1700000000\n".to_owned(),
        "\t\t\tcreation_host = \"icos\"\n".to_owned(),
        format!("\t\t\tid = \"{}\"\n", row("guestos")["lv_uuid"].as_str().unwrap()),
    ] {
        assert!(backup.contains(&expected), "{expected:?} not in vgcfgbackup:\n{backup}");
    }

    // Every volume where lvm2 places it: its image, then zeros to the end of the volume.
    let number = |command: &str, field: &str, object: &str| {
        report_number(&run_clean(device.lvm(command).args([
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            field,
            object,
        ])))
    };
    let pe_start = number("pvs", "pe_start", &device.device);
    let extent_size = number("vgs", "vg_extent_size", &group);
    assert_eq!((pe_start, extent_size), (MIB as u64, MIB as u64));
    for (name, image) in
        [("config", Some(&fixture.images[0].2)), ("A_boot", Some(&fixture.images[1].2)), ("guestos", None)]
    {
        let range = row(name)["seg_pe_ranges"].as_str().unwrap().to_owned();
        let (first, last) = range.rsplit_once(':').unwrap().1.split_once('-').unwrap();
        let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
        let content = device.read(pe_start + first * extent_size, ((last - first + 1) * extent_size) as usize);
        let image_length = image.map_or(0, |image| image.len());
        if let Some(image) = image {
            assert!(content[..image_length] == image[..], "{name}: the volume does not start with its image");
        }
        assert!(content[image_length..].iter().all(|&byte| byte == 0), "{name}: not zero after its image");
    }
    drop(device);
    assert_eq!(sha256(&pv), written, "lvm2 changed the physical volume: it found something to repair");
}

#[test]
fn four_mib_extents_by_default_and_a_package_of_the_volume() {
    let fixture = fixture();
    let group = format!("icostest{}b", std::process::id());
    let volumes = fixture.dir.path().join("volumes-4m.csv");
    fs::write(&volumes, "config,0,1,\nA_boot,1,1,\n").unwrap();
    let package = fixture.dir.path().join("partition-hostlvm.tzst");
    let mut command = icos();
    command.arg("lvm").arg("--volumes").arg(&volumes).args(["--size", "64M", "--vg-name", &group, "--seed", SEED]);
    command.arg("--package").arg(&package);
    for (name, path, _) in &fixture.images {
        command.arg(format!("--image={name}={}", path.display()));
    }
    run(&mut command);
    let unpacked = fixture.dir.path().join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    run(icos().arg("unpack").arg("--input").arg(&package).arg("--output-dir").arg(&unpacked));
    let pv = unpacked.join("partition.img");
    let device = LoopDevice::attach(&pv);
    run_clean(device.lvm("pvck").arg(&device.device));
    run_clean(device.lvm("vgck").arg(&group));
    let report = run_clean(device.lvm("vgs").args([
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "vg_extent_size,vg_extent_count,lv_count",
        &group,
    ]));
    let fields: Vec<String> = String::from_utf8_lossy(&report.stdout).split_whitespace().map(str::to_owned).collect();
    // (64 MiB - 1 MiB) / 4 MiB = 15 extents.
    assert_eq!(fields, [(4 * MIB).to_string(), "15".to_owned(), "2".to_owned()]);
}

#[test]
fn a_disk_with_a_volume_group_in_one_partition() {
    let fixture = fixture();
    let group = format!("icostest{}d", std::process::id());
    let partitions = fixture.dir.path().join("partitions.csv");
    fs::write(&partitions, "esp,2048,2048,U,\nhostlvm,4096,65536,lvm,\nafter,69632,2048,L,\n").unwrap();
    let after = fixture.dir.path().join("after.img");
    fs::write(&after, pattern(4096 * 3, 3)).unwrap();
    let disk = fixture.dir.path().join("disk.img");
    let mut command = icos();
    command.arg("disk").arg("--partitions").arg(&partitions).args(["--size", "40M", "--seed", SEED]);
    command.arg("--volumes").arg(&fixture.volumes).args([
        "--lvm-partition",
        "hostlvm",
        "--vg-name",
        &group,
        "--extent-size",
        "1M",
    ]);
    command.arg("--output").arg(&disk).arg(format!("--image=after={}", after.display()));
    for (name, path, _) in &fixture.images {
        command.arg(format!("--image={name}={}", path.display()));
    }
    run(&mut command);
    // The partitions as sfdisk sees them; the volume group inside the second one, as lvm2 sees it.
    let dump = String::from_utf8(run(tool_command("sfdisk").arg("--dump").arg(&disk)).stdout).unwrap();
    assert!(
        dump.contains("start=        4096, size=       65536, type=E6D6D379-F507-44C2-A23C-238F2A3DF928"),
        "{dump}"
    );
    let device = LoopDevice::attach_partition(&disk, 4096 * 512, 65536 * 512);
    run_clean(device.lvm("pvck").arg(&device.device));
    run_clean(device.lvm("vgck").arg(&group));
    let report = run_clean(device.lvm("lvs").args(["--noheadings", "-o", "lv_name,seg_pe_ranges", &group]));
    let report = String::from_utf8_lossy(&report.stdout);
    let names: Vec<&str> = report.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert_eq!(names, ["A_boot", "config", "guestos"], "{report}");
    let boot = &fixture.images[1].2;
    // A_boot starts at extent 2: 1 MiB of metadata, then 2 MiB.
    assert!(device.read(3 * MIB as u64, boot.len()) == boot[..], "A_boot does not hold its image");
    drop(device);
    let mut after_content = vec![0u8; 4096 * 3];
    fs::File::open(&disk).unwrap().read_exact_at(&mut after_content, 69632 * 512).unwrap();
    assert!(after_content == pattern(4096 * 3, 3), "the partition after the volume group lost its image");

    // An image for the partition that holds the group is refused, naming it.
    let mut command = icos();
    command.arg("disk").arg("--partitions").arg(&partitions).args(["--size", "40M", "--seed", SEED]);
    command.arg("--volumes").arg(&fixture.volumes).args([
        "--lvm-partition",
        "hostlvm",
        "--vg-name",
        &group,
        "--extent-size",
        "1M",
    ]);
    command
        .arg("--output")
        .arg(fixture.dir.path().join("refused.img"))
        .arg(format!("--image=hostlvm={}", after.display()));
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("partition \"hostlvm\" of"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!fixture.dir.path().join("refused.img").exists());
}
