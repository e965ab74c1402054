//! icos against systemd-repart: the same seed and the same partitions give the same disk GUID,
//! partition UUIDs and filesystem identifiers (ext4 UUID and directory hash seed, FAT volume id).
//! systemd-repart writes one disk, `icos disk`, `icos ext4` and `icos fat` the other; the
//! identifiers are read back from both with sfdisk, dumpe2fs and blkid. Partition offsets may
//! differ between the tools and are not compared.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{dumpe2fs_field, icos, run, tool, tool_command};
use crate::ext4::{canonical_tar, item, Node};

const SEED: &str = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c";
const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";

/// One partition, described to both tools.
struct Partition {
    name: &'static str,
    type_uuid: &'static str,
    start_mib: u64,
    size_mib: u64,
    /// The filesystem systemd-repart makes in it (`Format=`), which icos then makes too.
    format: Option<&'static str>,
    /// A UUID the table fixes (`UUID=` for systemd-repart).
    uuid: Option<&'static str>,
}

const fn partition(name: &'static str, type_uuid: &'static str, start_mib: u64, size_mib: u64) -> Partition {
    Partition { name, type_uuid, start_mib, size_mib, format: None, uuid: None }
}

impl Partition {
    const fn format(self, format: &'static str) -> Self {
        Partition { format: Some(format), ..self }
    }
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8_lossy(&run(command).stdout).into_owned()
}

/// The partitions.csv and the systemd-repart definitions (named so that they sort in table
/// order: systemd-repart counts partitions of a type in the order of its definitions).
fn write_descriptions(dir: &Path, partitions: &[Partition]) {
    let definitions = dir.join("repart.d");
    fs::create_dir(&definitions).unwrap();
    let mut csv = String::from("# name, start, size, type, uuid, description\n");
    for (index, partition) in partitions.iter().enumerate() {
        let uuid = partition.uuid.unwrap_or("");
        csv += &format!(
            "{},{}M,{}M,{},{uuid},\n",
            partition.name, partition.start_mib, partition.size_mib, partition.type_uuid
        );
        let size = partition.size_mib << 20;
        let mut definition = format!(
            "[Partition]\nType={}\nLabel={}\nSizeMinBytes={size}\nSizeMaxBytes={size}\n",
            partition.type_uuid, partition.name
        );
        if let Some(format) = partition.format {
            definition += &format!("Format={format}\n");
        }
        if let Some(uuid) = partition.uuid {
            definition += &format!("UUID={uuid}\n");
        }
        fs::write(definitions.join(format!("{:02}-{}.conf", (index + 1) * 10, partition.name)), definition).unwrap();
    }
    fs::write(dir.join("partitions.csv"), csv).unwrap();
}

/// The disk GUID and, by partition name, the partition UUID, first sector and size in sectors,
/// as `sfdisk --json` reads them.
fn read_table(disk: &Path) -> (String, BTreeMap<String, (String, u64, u64)>) {
    let json: Value = serde_json::from_str(&stdout(tool_command("sfdisk").arg("--json").arg(disk))).unwrap();
    let table = &json["partitiontable"];
    assert_eq!(table["label"], "gpt", "{json}");
    let partitions = table["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no partitions in {json}"))
        .iter()
        .map(|entry| {
            let field = |name: &str| entry[name].as_str().unwrap_or_else(|| panic!("no {name} in {entry}")).to_owned();
            let number = |name: &str| entry[name].as_u64().unwrap_or_else(|| panic!("no {name} in {entry}"));
            (field("name"), (field("uuid").to_lowercase(), number("start"), number("size")))
        })
        .collect();
    (table["id"].as_str().unwrap().to_lowercase(), partitions)
}

/// The identifiers of the filesystem in `image` at byte `offset`, `size` bytes long: its type and
/// the FAT volume id, or the ext4 UUID and directory hash seed. `scratch` is a file to copy an
/// ext4 filesystem to for dumpe2fs, which reads whole images only.
fn filesystem_ids(image: &Path, offset: u64, size: u64, scratch: &Path) -> String {
    let probe = stdout(
        tool_command("blkid")
            .args(["-p", "-o", "export", "--offset", &offset.to_string(), "--size", &size.to_string()])
            .arg(image),
    );
    let value = |name: &str| {
        probe
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("blkid finds no {name} in {} at {offset}: {probe}", image.display()))
            .to_owned()
    };
    match value("TYPE").as_str() {
        "ext4" => {
            let mut bytes = vec![0u8; size as usize];
            File::open(image).unwrap().read_exact_at(&mut bytes, offset).unwrap();
            fs::write(scratch, bytes).unwrap();
            let header = stdout(tool_command("dumpe2fs").arg("-h").arg(scratch));
            let field = |name: &str| dumpe2fs_field(&header, name);
            format!("ext4 UUID {} hash seed {}", field("Filesystem UUID"), field("Directory Hash Seed"))
        }
        "vfat" => format!("vfat volume id {}", value("UUID")),
        other => panic!("{} at {offset}: unexpected filesystem {other}", image.display()),
    }
}

/// Makes the disk with systemd-repart and with icos, and compares every identifier.
fn compare_with_systemd_repart(partitions: &[Partition], disk_mib: u64) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_descriptions(dir, partitions);
    fs::write(dir.join("empty.tar"), canonical_tar(&[item(b"./", Node::Dir)])).unwrap();
    let size = format!("{disk_mib}M");

    let repart_disk = dir.join("repart.img");
    run(Command::new(tool("systemd-repart"))
        .args(["--offline=yes", "--empty=create", "--dry-run=no", "--discard=no", "--no-pager", "--pretty=no"])
        .arg(format!("--size={size}"))
        .arg(format!("--seed={SEED}"))
        .arg(format!("--definitions={}", dir.join("repart.d").display()))
        .arg(&repart_disk)
        // Bazel's test PATH lacks the sbin directories where mkfs.* live; the filesystems are
        // made in temporary files in $TMPDIR (default /var/tmp) before they are copied.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TMPDIR", dir));

    let icos_disk = dir.join("icos.img");
    run(icos()
        .args(["disk", "--size", &size, "--seed", SEED, "--partitions"])
        .arg(dir.join("partitions.csv"))
        .arg("--output")
        .arg(&icos_disk));

    let (repart_guid, repart_partitions) = read_table(&repart_disk);
    let (icos_guid, icos_partitions) = read_table(&icos_disk);
    assert_eq!(icos_guid, repart_guid, "disk GUID");
    assert_eq!(icos_partitions.len(), partitions.len(), "{icos_partitions:?}");
    assert_eq!(repart_partitions.len(), partitions.len(), "{repart_partitions:?}");
    for partition in partitions {
        let (icos_uuid, _, _) = &icos_partitions[partition.name];
        let (repart_uuid, start, sectors) = &repart_partitions[partition.name];
        assert_eq!(icos_uuid, repart_uuid, "UUID of partition {}", partition.name);
        if let Some(uuid) = partition.uuid {
            assert_eq!(repart_uuid, uuid, "{}: systemd-repart keeps the given UUID", partition.name);
        }

        let Some(format) = partition.format else { continue };
        let scratch = dir.join("ext4.img");
        let expected = filesystem_ids(&repart_disk, start * 512, sectors * 512, &scratch);
        assert!(expected.starts_with(format), "systemd-repart made no {format} in {}: {expected}", partition.name);
        let icos_fs = dir.join(format!("{}.img", partition.name));
        let fs_size = format!("{}M", partition.size_mib);
        let mut command = icos();
        match format {
            "ext4" => command.args(["ext4", "--size", &fs_size]),
            "vfat" => command.args(["fat", "--size", &fs_size, "--label", "ESP"]),
            other => panic!("no icos command for {other}"),
        };
        run(command
            .args(["--input", "empty.tar", "--output"])
            .arg(&icos_fs)
            .args(["--seed", SEED, "--partitions", "partitions.csv", "--partition-name", partition.name])
            .current_dir(dir));
        let size = fs::metadata(&icos_fs).unwrap().len();
        assert_eq!(filesystem_ids(&icos_fs, 0, size, &scratch), expected, "filesystem of partition {}", partition.name);
    }
}

#[test]
fn seed_derived_identifiers_match_systemd_repart() {
    // Three Linux partitions, so that the counter of a type counts to 2; no UUID is fixed.
    compare_with_systemd_repart(
        &[
            // systemd-repart makes FAT32 with 4096-byte sectors: at least 260 MiB.
            partition("esp", ESP, 1, 260).format("vfat"),
            partition("boot_a", LINUX, 261, 32).format("ext4"),
            partition("root_a", LINUX, 293, 8),
            partition("swap", SWAP, 301, 8),
            partition("root_b", LINUX, 309, 8),
        ],
        320,
    );
}

#[test]
fn a_fixed_uuid_is_kept_counted_and_the_filesystem_derives_from_it() {
    // The fixed partition still counts as the first Linux partition: `other` is the second.
    let fixed = Partition { uuid: Some("7c0a626e-e5ea-e543-b5c5-300eb8304db7"), ..partition("data", LINUX, 1, 32) };
    compare_with_systemd_repart(&[fixed.format("ext4"), partition("other", LINUX, 33, 8)], 64);
}
