//! Checks the partition tables that `icos disk` writes with util-linux's sfdisk.

use std::fs;
use std::path::Path;
use std::process::Output;

use icos::partitions::parse_type;
use icos::seed::Seed;
use serde_json::Value;

use crate::common::{icos, tool_command};

/// The IC-OS GuestOS table, as in its partitions.csv.
const GUESTOS: &str = "\
# name, start, size, type, uuid, description
esp    ,     2048,   204800, U, B78084E2-3363-1346-8C25-D426F26B8928, EFI system partition
grub   ,   206848,   204800, L, 6788E4CF-F456-104E-9A34-A2C58CFB0EE6, Grub bootloader partition
config ,   411648,   204800, L, A5BA3816-BEAA-D74D-993E-CFA5AA6BA1F6, System config store
A_boot ,   616448,  2097152, L, DDF618FE-7244-B446-A175-3296E6B9D02E, Boot partition for system A
A_root ,  2713600, 20971520, L, 7C0A626E-E5EA-E543-B5C5-300EB8304DB7, Root partition for system A
A_var  , 23685120, 20971520, L, 22D2F5A6-1E39-D247-81CF-90C95C113E21, Mutable data partition for system A
B_boot , 44656640,  2097152, L, D5214E4F-F7B0-B945-9A9B-52B9188DF4C5, Boot partition for system B
B_root , 46753792, 20971520, L, A78BC3A8-376C-054A-96E7-3904B915D0C5, Root partition for system B
B_var  , 67725312, 20971520, L, 2237D1D1-CE96-584E-8EC5-8AE6661FAAE9, Mutable data partition for system B
";
const GUESTOS_DISK_GUID: &str = "2B110BB7-CDEC-7D41-B97E-893EDCBE5428";
const SEED: &str = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c";

fn checked(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn build(dir: &Path, csv: &str, size: &str, extra: &[&str]) {
    fs::write(dir.join("partitions.csv"), csv).unwrap();
    let output = icos()
        .current_dir(dir)
        .args(["disk", "--partitions", "partitions.csv", "--output", "disk.img", "--size", size])
        .args(extra)
        .output()
        .unwrap();
    checked(output, "icos disk");
}

/// `sfdisk --verify` finds no problem, and `sfdisk --json` reads the table back.
fn sfdisk_table(disk: &Path) -> Value {
    let verify = checked(tool_command("sfdisk").arg("--verify").arg(disk).output().unwrap(), "sfdisk --verify");
    assert!(!verify.to_lowercase().contains("problem"), "{verify}");
    checked(tool_command("sfdisk").arg("--dump").arg(disk).output().unwrap(), "sfdisk --dump");
    let json = checked(tool_command("sfdisk").arg("--json").arg(disk).output().unwrap(), "sfdisk --json");
    serde_json::from_str::<Value>(&json).unwrap()["partitiontable"].clone()
}

#[test]
fn guestos_table_reads_back_identically_with_sfdisk() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let esp = dir.path().join("esp.img");
    fs::write(&esp, vec![0x5Au8; 1 << 20]).unwrap();
    build(dir.path(), GUESTOS, "50G", &["--disk-guid", GUESTOS_DISK_GUID, "--image", "esp=esp.img"]);
    let table = sfdisk_table(&dir.path().join("disk.img"));
    let sectors = (50u64 << 30) / 512;
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["id"], GUESTOS_DISK_GUID);
    assert_eq!(table["firstlba"], 34);
    assert_eq!(table["lastlba"], sectors - 34);
    let partitions = table["partitions"].as_array().unwrap();
    let rows: Vec<Vec<&str>> = GUESTOS
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split(',').map(str::trim).collect())
        .collect();
    assert_eq!(partitions.len(), rows.len());
    for (partition, row) in partitions.iter().zip(&rows) {
        assert_eq!(partition["name"], row[0]);
        assert_eq!(partition["start"].as_u64().unwrap().to_string(), row[1]);
        assert_eq!(partition["size"].as_u64().unwrap().to_string(), row[2]);
        let expected_type = parse_type(row[3]).unwrap().to_string().to_uppercase();
        assert_eq!(partition["type"], expected_type.as_str());
        assert_eq!(partition["uuid"], row[4]);
    }
}

#[test]
fn seed_derived_identifiers_and_units_read_back_with_sfdisk() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let csv = "esp,1M,100M,esp,,ESP\nroot_a,206848,1G,L,\nroot_b,2303M,1G,linux,\nlvm,4400M,100M,lvm,\n";
    build(dir.path(), csv, "5G", &["--seed", SEED]);
    let table = sfdisk_table(&dir.path().join("disk.img"));
    let seed: Seed = SEED.parse().unwrap();
    let upper = |uuid: uuid::Uuid| uuid.to_string().to_uppercase();
    assert_eq!(table["id"], upper(seed.disk_guid()).as_str());
    let linux = parse_type("L").unwrap();
    let expected = [
        ("esp", 2048, 204800, upper(seed.partition_uuid(parse_type("U").unwrap(), 0))),
        ("root_a", 206848, 2097152, upper(seed.partition_uuid(linux, 0))),
        ("root_b", 2303 * 2048, 2097152, upper(seed.partition_uuid(linux, 1))),
        ("lvm", 4400 * 2048, 204800, upper(seed.partition_uuid(parse_type("lvm").unwrap(), 0))),
    ];
    let partitions = table["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), expected.len());
    for (partition, (name, start, size, uuid)) in partitions.iter().zip(expected) {
        assert_eq!(partition["name"], name);
        assert_eq!(partition["start"], start);
        assert_eq!(partition["size"], size);
        assert_eq!(partition["uuid"], uuid.as_str());
    }
}
