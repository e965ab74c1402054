//! `icos rootfs canonicalize` output fed to `mke2fs -d` (e2fsprogs >= 1.47.1, via libarchive),
//! the consumer it is made for: hard links whose target sorts after them in the input, xattrs,
//! odd and long names must all arrive in the filesystem.

use std::fs;
use std::process::Output;

use tar::{EntryType, Header};

use crate::common::{icos, pax_record, tool_command};

fn checked(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, kind: EntryType, data: &[u8], link: &str, pax: &[u8]) {
    if !pax.is_empty() {
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        header.as_mut_bytes()[..9].copy_from_slice(b"PaxHeader");
        header.set_size(pax.len() as u64);
        header.set_cksum();
        builder.append(&header, pax).unwrap();
    }
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    header.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link.as_bytes());
    header.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

#[test]
fn mke2fs_populates_a_filesystem_from_the_canonical_tar() {
    let dir = tempfile::tempdir().unwrap();
    let long_name = format!("usr/{}", "n".repeat(255));
    let capability = pax_record(
        "SCHILY.xattr.security.capability",
        &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let mut builder = tar::Builder::new(Vec::new());
    append(&mut builder, "usr/bin/ping", EntryType::Regular, b"\x7fELF", "", &capability);
    // Sorted, this link comes before its target: the canonical tar must turn them around.
    append(&mut builder, "usr/bin/arping", EntryType::Link, b"", "usr/bin/ping", b"");
    append(&mut builder, "etc/with space", EntryType::Regular, b"spaced", "", b"");
    append(&mut builder, "lib", EntryType::Symlink, b"", "usr/lib", b"");
    let long_pax = pax_record("path", long_name.as_bytes());
    append(&mut builder, "placeholder", EntryType::Regular, b"long", "", &long_pax);
    fs::write(dir.path().join("export.tar"), builder.into_inner().unwrap()).unwrap();

    checked(
        icos()
            .args(["rootfs", "canonicalize", "--input"])
            .arg(dir.path().join("export.tar"))
            .arg("--output")
            .arg(dir.path().join("root.tar"))
            .output()
            .unwrap(),
        "icos rootfs canonicalize",
    );
    let image = dir.path().join("root.img");
    checked(
        tool_command("mke2fs")
            .args(["-q", "-t", "ext4", "-b", "4096", "-d"])
            .arg(dir.path().join("root.tar"))
            .arg(&image)
            .arg("16M")
            .env("SOURCE_DATE_EPOCH", "0")
            .env("E2FSPROGS_FAKE_TIME", "0")
            .output()
            .unwrap(),
        "mke2fs -d",
    );
    checked(tool_command("e2fsck").arg("-fn").arg(&image).output().unwrap(), "e2fsck -fn");
    let debugfs =
        |request: &str| checked(tool_command("debugfs").args(["-R", request]).arg(&image).output().unwrap(), request);
    let inode =
        |path: &str| debugfs(&format!("stat \"{path}\"")).split_whitespace().nth(1).unwrap_or_default().to_owned();
    assert_eq!(inode("/usr/bin/ping"), inode("/usr/bin/arping"), "hard link lost");
    let xattrs = debugfs("ea_list /usr/bin/ping");
    assert!(xattrs.contains("security.capability (20) = 01 00 00 02 00 20"), "{xattrs}");
    assert_eq!(debugfs("cat \"/etc/with space\""), "spaced");
    assert_eq!(debugfs(&format!("cat /{long_name}")), "long");
    assert!(debugfs("stat /lib").contains("Fast link dest: \"usr/lib\""));
}
