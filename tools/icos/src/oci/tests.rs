//! Round trips through the pieces of the module: write, verify, read back as a root filesystem,
//! and the store.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::rootfs::{InputFormat, Rootfs};

/// A canonical rootfs tar in `dir`, made the way `icos rootfs canonicalize` makes one.
pub(super) fn canonical_tar(dir: &Path, content: &[u8]) -> PathBuf {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [("etc/motd", content), ("usr/bin/tool", &b"#!/bin/sh\n"[..])] {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    let export = dir.join("export.tar");
    fs::write(&export, builder.into_inner().unwrap()).unwrap();
    let rootfs = Rootfs::read(&export, InputFormat::Tar).unwrap();
    let canonical = dir.join("rootfs.tar");
    rootfs.write_tar_file(&rootfs.whole(), Some(86_400), &canonical, None).unwrap();
    canonical
}

pub(super) fn options() -> ArchiveOptions {
    ArchiveOptions { created: 86_400, ..ArchiveOptions::new("guestos-base") }
}

pub(super) fn written(dir: &Path) -> (PathBuf, ImageDigest) {
    let rootfs = canonical_tar(dir, b"hello\n");
    let archive = dir.join("image.oci.tar");
    let image = write_archive(&rootfs, &archive, &options()).unwrap();
    (archive, image)
}

/// The archive's members as (name, mode, uid, gid, mtime, user name).
fn members(archive: &Path) -> Vec<(String, u32, u64, u64, u64, Vec<u8>)> {
    let mut reader = tar::Archive::new(fs::File::open(archive).unwrap());
    let entries = reader.entries().unwrap();
    entries
        .map(|entry| {
            let header = entry.unwrap().header().clone();
            (
                String::from_utf8(header.path_bytes().into_owned()).unwrap(),
                header.mode().unwrap(),
                header.uid().unwrap(),
                header.gid().unwrap(),
                header.mtime().unwrap(),
                header.username_bytes().unwrap_or_default().to_vec(),
            )
        })
        .collect()
}

fn flip(archive: &Path, needle: &[u8]) {
    let mut bytes = fs::read(archive).unwrap();
    let at = bytes.windows(needle.len()).position(|window| window == needle).unwrap();
    bytes[at] ^= 0x20;
    fs::write(archive, bytes).unwrap();
}

#[test]
fn an_archive_verifies_to_the_digest_write_returned_and_reads_back_as_its_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, image) = written(dir.path());
    assert_eq!(verify_archive(&archive, None).unwrap(), image);
    assert_eq!(verify_archive(&archive, Some(&image.digest)).unwrap(), image);

    let names: Vec<_> = members(&archive).into_iter().map(|member| (member.0, member.1)).collect();
    assert_eq!(names.len(), 7);
    assert_eq!(names[..2], [("blobs/".to_owned(), 0o755), ("blobs/sha256/".to_owned(), 0o755)]);
    assert_eq!(names[4], (format!("blobs/sha256/{}", image.digest.hex()), 0o644));
    assert_eq!(names[5..], [("index.json".to_owned(), 0o644), ("oci-layout".to_owned(), 0o644)]);
    assert!(members(&archive).iter().all(|member| (member.2, member.3, member.4, &member.5[..]) == (0, 0, 0, b"")));

    let rootfs = Rootfs::read(&archive, InputFormat::Auto).unwrap();
    let mut tar = Vec::new();
    rootfs.write_tar(&rootfs.whole(), Some(86_400), &mut tar).unwrap();
    assert_eq!(tar, fs::read(dir.path().join("rootfs.tar")).unwrap());
}

#[test]
fn the_digest_depends_on_the_tree_and_config_but_not_the_name_or_output_path() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, image) = written(dir.path());
    let rootfs = dir.path().join("rootfs.tar");
    let other_dir = tempfile::tempdir().unwrap();
    let again = other_dir.path().join("elsewhere.tar");
    assert_eq!(write_archive(&rootfs, &again, &options()).unwrap(), image);
    assert_eq!(fs::read(&archive).unwrap(), fs::read(&again).unwrap());

    let renamed = dir.path().join("renamed.tar");
    let other_name = ArchiveOptions { name: "ic/other".into(), ..options() };
    assert_eq!(write_archive(&rootfs, &renamed, &other_name).unwrap(), image);
    assert_ne!(fs::read(&archive).unwrap(), fs::read(&renamed).unwrap());

    let later = ArchiveOptions { created: 86_401, ..options() };
    assert_ne!(write_archive(&rootfs, &renamed, &later).unwrap(), image);
    let changed_tree = canonical_tar(other_dir.path(), b"hello!\n");
    assert_ne!(write_archive(&changed_tree, &renamed, &options()).unwrap(), image);
}

#[test]
fn damage_to_any_blob_names_the_blob_and_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, image) = written(dir.path());
    let pristine = fs::read(&archive).unwrap();
    for (needle, role) in
        [(&b"hello\n"[..], "layer 1"), (b"\"architecture\"", "the config"), (b"\"schemaVersion\":2}", "the manifest")]
    {
        fs::write(&archive, &pristine).unwrap();
        flip(&archive, needle);
        let error = verify_archive(&archive, None).unwrap_err();
        let OciError::Damaged { archive: named, blob, role: found, expected, actual } = &error else {
            panic!("{role}: {error}");
        };
        assert_eq!((named, found.as_str()), (&archive, role));
        assert_eq!(blob, &format!("blobs/sha256/{}", expected.hex()));
        assert_ne!(expected, actual);
        let message = error.to_string();
        assert!(message.contains(&archive.display().to_string()) && message.contains(&actual.to_string()), "{message}");
    }
    // The manifest's digest is the image's: a damaged manifest is also an image of another digest,
    // but damage is what is reported.
    assert!(!matches!(verify_archive(&archive, Some(&image.digest)), Err(OciError::Mismatch { .. })));

    fs::write(&archive, &pristine[..pristine.len() - 1024]).unwrap();
    assert!(verify_archive(&archive, None).unwrap_err().to_string().contains("truncated"));
    fs::write(&archive, &pristine).unwrap();
    let other = Digest::of(b"another image");
    let error = verify_archive(&archive, Some(&other)).unwrap_err();
    assert!(
        matches!(&error, OciError::Mismatch { expected, actual, .. } if *expected == other && *actual == image.digest)
    );
}

#[test]
fn bad_inputs_and_options_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = canonical_tar(dir.path(), b"x");
    let compressed = dir.path().join("rootfs.tar.zst");
    fs::write(&compressed, zstd::encode_all(&fs::read(&rootfs).unwrap()[..], 3).unwrap()).unwrap();
    let output = dir.path().join("out.oci.tar");
    let cases = [
        (&compressed, options(), "not an uncompressed tar"),
        (&rootfs, ArchiveOptions { name: "Guestos".into(), ..options() }, "image name \"Guestos\""),
        (&rootfs, ArchiveOptions { created: u64::MAX, ..options() }, "RFC 3339"),
    ];
    for (input, options, expected) in cases {
        let error = write_archive(input, &output, &options).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
        assert!(!output.exists());
    }
    let missing = write_archive(&dir.path().join("missing.tar"), &output, &options()).unwrap_err();
    assert!(missing.to_string().contains("missing.tar"), "{missing}");
}

#[test]
fn the_store_keeps_verified_archives_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, image) = written(dir.path());
    let store = Store::new(dir.path().join("store"));
    let absent = store.get(&image.digest).unwrap_err();
    assert!(matches!(&absent, OciError::NotInStore { digest, .. } if *digest == image.digest), "{absent}");

    assert_eq!(store.put(&archive).unwrap(), image);
    let path = store.path(&image.digest);
    assert_eq!(path, dir.path().join("store/sha256").join(format!("{}.oci.tar", image.digest.hex())));
    assert_eq!(store.get(&image.digest).unwrap(), path);
    assert_eq!(store.get_verified(&image.digest).unwrap(), path);
    assert_eq!(fs::read(&path).unwrap(), fs::read(&archive).unwrap());
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o444);
    // Putting it again replaces the entry with a fresh copy.
    assert_eq!(store.put(&path).unwrap(), image);
    assert_eq!(fs::read_dir(dir.path().join("store/sha256")).unwrap().count(), 1);

    // A byte flipped in a layer passes the quick check but not the full one.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    flip(&path, b"hello\n");
    assert_eq!(store.get(&image.digest).unwrap(), path);
    assert!(matches!(store.get_verified(&image.digest), Err(OciError::Damaged { .. })));
    // An archive of another image under this digest's name fails even the quick check.
    let other_dir = tempfile::tempdir().unwrap();
    let other_archive = other_dir.path().join("other.oci.tar");
    let other = write_archive(&canonical_tar(other_dir.path(), b"other\n"), &other_archive, &options()).unwrap();
    fs::copy(&other_archive, &path).unwrap();
    let error = store.get(&image.digest).unwrap_err();
    assert!(matches!(&error, OciError::Mismatch { actual, .. } if *actual == other.digest), "{error}");

    // A damaged archive is refused, naming it, and leaves nothing in the store.
    let damaged = dir.path().join("damaged.oci.tar");
    fs::copy(&archive, &damaged).unwrap();
    flip(&damaged, b"hello\n");
    let fresh = Store::new(dir.path().join("fresh"));
    let error = fresh.put(&damaged).unwrap_err();
    assert!(matches!(&error, OciError::Damaged { archive, .. } if *archive == damaged), "{error}");
    assert_eq!(fs::read_dir(dir.path().join("fresh/sha256")).unwrap().count(), 0);
}

#[test]
fn the_layer_of_a_stored_image_is_its_canonical_tar_and_damage_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, image) = written(dir.path());
    let store = Store::new(dir.path().join("store"));
    store.put(&archive).unwrap();
    let mut layer = Vec::new();
    store.write_layer(&image.digest, &mut layer, Path::new("layer.tar")).unwrap();
    assert_eq!(layer, fs::read(dir.path().join("rootfs.tar")).unwrap());

    let path = store.path(&image.digest);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    flip(&path, b"hello\n");
    let mut output = Vec::new();
    let error = store.write_layer(&image.digest, &mut output, Path::new("layer.tar")).unwrap_err();
    assert!(matches!(error, OciError::Damaged { .. }), "{error}");
    assert!(output.is_empty());
}
