//! `icos verity format` against cryptsetup's `veritysetup format`: the same hash file, byte for
//! byte, and the same root hash, for trees of every shape; `veritysetup verify` accepts ours and
//! rejects it once a data byte changes.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::common::{icos, run, tool_command};

const SALT: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const UUID: &str = "12345678-1234-5678-9abc-def012345678";

/// `blocks` 4096-byte blocks of the pattern of the shared note's matrix.
fn patterned(blocks: usize) -> Vec<u8> {
    (0..blocks * 4096).map(|index| (((index * 131 + 17) ^ (index >> 9)) & 0xff) as u8).collect()
}

/// The root hash veritysetup printed ("Root hash:\t<hex>").
fn root_hash_of(veritysetup_output: &str) -> String {
    veritysetup_output
        .lines()
        .find_map(|line| line.strip_prefix("Root hash:"))
        .unwrap_or_else(|| panic!("no root hash in {veritysetup_output}"))
        .trim()
        .to_owned()
}

/// Formats `data` with both tools and the same options; asserts equal hash files and root hashes;
/// returns the root hash.
fn assert_same_as_veritysetup(dir: &Path, data: &Path, options: &[&str]) -> String {
    let theirs = dir.join("theirs.hash");
    let ours = dir.join("ours.hash");
    let _ = fs::remove_file(&theirs);
    let output = run(tool_command("veritysetup").arg("format").arg(data).arg(&theirs).args(options));
    let their_root = root_hash_of(&String::from_utf8_lossy(&output.stdout));
    let output = run(icos().args(["verity", "format"]).arg(data).arg(&ours).args(options));
    let our_root = String::from_utf8(output.stdout).unwrap();
    assert_eq!(our_root.trim_end(), their_root, "root hash with {options:?}");
    let (their_bytes, our_bytes) = (fs::read(&theirs).unwrap(), fs::read(&ours).unwrap());
    assert_eq!(our_bytes.len(), their_bytes.len(), "hash file size with {options:?}");
    if let Some(offset) = our_bytes.iter().zip(&their_bytes).position(|(a, b)| a != b) {
        panic!("the hash files differ first at byte {offset} with {options:?}");
    }
    their_root
}

#[test]
fn trees_of_every_shape_match_veritysetup() {
    let dir = tempfile::tempdir().unwrap();
    let salted = ["--salt", SALT, "--uuid", UUID];
    // 1 block: no levels; 128: one full level-0 block; 129: a second level; 16385: three levels
    // of 129, 2 and 1 blocks.
    for blocks in [1, 2, 128, 129, 16385] {
        let data = dir.path().join(format!("data-{blocks}"));
        fs::write(&data, patterned(blocks)).unwrap();
        assert_same_as_veritysetup(dir.path(), &data, &salted);
    }
    let data = dir.path().join("data-129");
    let variants: [&[&str]; 9] = [
        &["--hash", "sha512"],
        &["--format", "0"],
        &["--no-superblock"],
        &["--data-block-size", "512", "--hash-block-size", "512"],
        &["--data-block-size", "4096", "--hash-block-size", "1024"],
        &["--salt", "-", "--uuid", UUID],
        &["--salt", "0123456789abcdef", "--uuid", UUID],
        &["--hash-offset", "1048576", "--data-blocks", "100"],
        &["--no-superblock", "--hash-offset", "8192", "--data-blocks", "129", "--hash", "sha512"],
    ];
    for extra in variants {
        let mut options = Vec::from(extra);
        if !options.contains(&"--salt") {
            options.extend(["--salt", SALT]);
        }
        if !options.contains(&"--uuid") && !options.contains(&"--no-superblock") {
            options.extend(["--uuid", UUID]);
        }
        assert_same_as_veritysetup(dir.path(), &data, &options);
    }
}

#[test]
fn holes_in_the_data_match_veritysetup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sparse");
    let file = File::create(&data).unwrap();
    file.set_len(300 << 20).unwrap();
    file.write_all_at(&patterned(3), 7 << 20).unwrap();
    file.write_all_at(b"the last block", (300 << 20) - 4096).unwrap();
    drop(file);
    assert_same_as_veritysetup(dir.path(), &data, &["--salt", SALT, "--uuid", UUID]);
}

#[test]
fn veritysetup_verifies_our_tree_and_catches_a_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::write(&data, patterned(600)).unwrap();
    let hash = dir.path().join("hash");
    let seed = "3f0b8c2e-6d41-4a97-b5e8-1c9d2a7f4e60";
    let output = run(icos().args(["verity", "format", "--seed", seed, "--name", "root"]).arg(&data).arg(&hash));
    let root = String::from_utf8(output.stdout).unwrap().trim_end().to_owned();
    // The seed's salt and UUID are in the superblock, for veritysetup to read.
    let params = icos::verity::Params::from_seed(&seed.parse().unwrap(), "root");
    let dump = String::from_utf8(run(tool_command("veritysetup").arg("dump").arg(&hash)).stdout).unwrap();
    assert!(dump.contains(&format!("Salt:            \t{}\n", icos::hashing::hex(&params.salt))), "{dump}");
    assert!(dump.contains(&format!("UUID:            \t{}\n", params.uuid)), "{dump}");
    run(tool_command("veritysetup").arg("verify").arg(&data).arg(&hash).arg(&root));

    File::options().write(true).open(&data).unwrap().write_all_at(b"X", 4096 * 333 + 17).unwrap();
    let output = tool_command("veritysetup").arg("verify").arg(&data).arg(&hash).arg(&root).output().unwrap();
    assert!(!output.status.success(), "veritysetup verify accepted a changed data block");
}

#[test]
fn the_seed_gives_the_same_tree_every_time_and_the_root_hash_file_matches() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::write(&data, patterned(40)).unwrap();
    let format = |name: &str| {
        let hash = dir.path().join(format!("{name}.hash"));
        let root_file = dir.path().join(format!("{name}.root"));
        let output = run(icos()
            .args(["verity", "format", "--seed", "3f0b8c2e-6d41-4a97-b5e8-1c9d2a7f4e60", "--name", "root"])
            .arg(&data)
            .arg(&hash)
            .arg("--root-hash-file")
            .arg(&root_file));
        assert_eq!(String::from_utf8(output.stdout).unwrap().trim_end(), fs::read_to_string(&root_file).unwrap());
        fs::read(hash).unwrap()
    };
    assert_eq!(format("first"), format("second"));
}

#[test]
fn bad_input_is_named_and_leaves_no_hash_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("odd size");
    fs::write(&data, vec![7u8; 4096 + 1]).unwrap();
    let hash = dir.path().join("hash");
    let output =
        icos().args(["verity", "format", "--salt", "-", "--uuid", UUID]).arg(&data).arg(&hash).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("odd size") && message.contains("last 1 bytes would not be verified"), "{message}");
    assert!(!hash.exists());
    let output = icos().args(["verity", "format", "--salt", "-"]).arg(&data).arg(&hash).output().unwrap();
    assert!(!output.status.success(), "a superblock without a UUID was accepted");
}
