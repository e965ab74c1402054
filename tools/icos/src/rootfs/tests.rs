//! Rule-by-rule tests: inputs are built with the `tar` crate, outputs read back with it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::*;

/// A member of an input tar.
struct Member<'a> {
    name: &'a [u8],
    kind: EntryType,
    mode: u32,
    mtime: u64,
    data: &'a [u8],
    link: &'a [u8],
    pax: Vec<(&'a str, &'a [u8])>,
    device: (u32, u32),
    uid: u64,
}

fn member<'a>(name: &'a [u8], kind: EntryType) -> Member<'a> {
    let mode = if kind == EntryType::Directory { 0o755 } else { 0o644 };
    Member { name, kind, mode, mtime: 100, data: b"", link: b"", pax: Vec::new(), device: (0, 0), uid: 0 }
}

fn file<'a>(name: &'a [u8], data: &'a [u8]) -> Member<'a> {
    Member { data, ..member(name, EntryType::Regular) }
}

fn dir(name: &[u8]) -> Member<'_> {
    member(name, EntryType::Directory)
}

fn link<'a>(name: &'a [u8], kind: EntryType, target: &'a [u8]) -> Member<'a> {
    Member { link: target, ..member(name, kind) }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut length = body + 1;
    while length != body + length.to_string().len() {
        length = body + length.to_string().len();
    }
    let mut record = format!("{length} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// A tar of `members`, names longer than ustar allows given as PAX `path` records.
fn tar_of(members: &[Member<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        let mut pax: Vec<u8> = member.pax.iter().flat_map(|(key, value)| pax_record(key, value)).collect();
        if member.name.len() > 100 {
            pax.extend(pax_record("path", member.name));
        }
        if member.link.len() > 100 {
            pax.extend(pax_record("linkpath", member.link));
        }
        if !pax.is_empty() {
            let mut header = Header::new_ustar();
            header.set_entry_type(EntryType::XHeader);
            header.as_mut_bytes()[..9].copy_from_slice(b"PaxHeader");
            header.set_size(pax.len() as u64);
            header.set_cksum();
            builder.append(&header, pax.as_slice()).unwrap();
        }
        let mut header = Header::new_ustar();
        header.set_entry_type(member.kind);
        let bytes = header.as_mut_bytes();
        let name = &member.name[..member.name.len().min(100)];
        bytes[..name.len()].copy_from_slice(name);
        let link = &member.link[..member.link.len().min(100)];
        bytes[157..157 + link.len()].copy_from_slice(link);
        header.set_mode(member.mode);
        header.set_uid(member.uid);
        header.set_gid(member.uid);
        header.set_mtime(member.mtime);
        header.set_username("someone").unwrap();
        header.set_size(member.data.len() as u64);
        header.set_device_major(member.device.0).unwrap();
        header.set_device_minor(member.device.1).unwrap();
        header.set_cksum();
        builder.append(&header, member.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn write_input(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn read(bytes: &[u8]) -> Result<Rootfs, RootfsError> {
    let dir = tempfile::tempdir().unwrap();
    Rootfs::read(&write_input(dir.path(), "input.tar", bytes), InputFormat::Auto)
}

fn canonical(rootfs: &Rootfs, epoch: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    rootfs.write_tar(&rootfs.whole(), epoch, &mut out).unwrap();
    out
}

/// One member of an output tar, as the `tar` crate reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    name: Vec<u8>,
    kind: u8,
    mode: u32,
    uid: u64,
    mtime: u64,
    link: Vec<u8>,
    data: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
    device: (u32, u32),
}

fn list(bytes: &[u8]) -> Vec<Listed> {
    let mut archive = tar::Archive::new(bytes);
    let mut listed = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        assert_eq!(header.username_bytes(), Some(&b""[..]), "no user names");
        assert!(header.as_ustar().is_some(), "ustar headers only");
        let mut xattrs = BTreeMap::new();
        if let Some(extensions) = entry.pax_extensions().unwrap() {
            for extension in extensions {
                let extension = extension.unwrap();
                let key = extension.key().unwrap();
                assert!(["path", "linkpath", "hdrcharset"].contains(&key) || key.starts_with("SCHILY.xattr."), "{key}");
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_owned(), extension.value_bytes().to_vec());
                }
            }
        }
        let name = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|link| link.into_owned()).unwrap_or_default();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        listed.push(Listed {
            name,
            kind: header.entry_type().as_byte(),
            mode: header.mode().unwrap(),
            uid: header.uid().unwrap(),
            mtime: header.mtime().unwrap(),
            link,
            data,
            xattrs,
            device: (header.device_major().unwrap().unwrap_or(0), header.device_minor().unwrap().unwrap_or(0)),
        });
    }
    listed
}

fn names(listed: &[Listed]) -> Vec<String> {
    listed.iter().map(|entry| String::from_utf8_lossy(&entry.name).into_owned()).collect()
}

fn find<'a>(listed: &'a [Listed], name: &[u8]) -> &'a Listed {
    listed
        .iter()
        .find(|entry| entry.name == name)
        .unwrap_or_else(|| panic!("{:?} missing", String::from_utf8_lossy(name)))
}

#[test]
fn sorts_by_bytes_with_the_root_and_every_parent_explicit() {
    let input =
        tar_of(&[file(b"usr/bin/b", b"b"), file(b"a/b", b"ab"), file(b"a-c", b""), dir(b"./usr/"), file(b"A", b"")]);
    let listed = list(&canonical(&read(&input).unwrap(), None));
    assert_eq!(names(&listed), ["./", "./A", "./a", "./a-c", "./a/b", "./usr", "./usr/bin", "./usr/bin/b"]);
    let implicit = find(&listed, b"./a");
    assert_eq!((implicit.kind, implicit.mode, implicit.uid, implicit.mtime), (b'5', 0o755, 0, 0));
    assert_eq!(find(&listed, b"./usr").mtime, 100);
}

#[test]
fn clamps_mtimes_to_the_epoch_and_keeps_older_ones() {
    let input = tar_of(&[Member { mtime: 500, ..file(b"old", b"") }, Member { mtime: 2000, ..file(b"new", b"") }]);
    let rootfs = read(&input).unwrap();
    let listed = list(&canonical(&rootfs, Some(1000)));
    assert_eq!(find(&listed, b"./old").mtime, 500);
    assert_eq!(find(&listed, b"./new").mtime, 1000);
    assert_eq!(find(&list(&canonical(&rootfs, None)), b"./new").mtime, 2000);
}

#[test]
fn the_last_duplicate_wins_and_a_file_over_a_directory_drops_its_subtree() {
    let input =
        tar_of(&[file(b"x", b"first"), file(b"d/inner", b""), file(b"x", b"second"), file(b"d", b"now a file")]);
    let listed = list(&canonical(&read(&input).unwrap(), None));
    assert_eq!(names(&listed), ["./", "./d", "./x"]);
    assert_eq!(find(&listed, b"./x").data, b"second");
}

#[test]
fn canonical_output_is_a_fixed_point_and_keeps_no_names_or_times_beyond_mtime() {
    let input = tar_of(&[
        file(b"etc/hosts", b"127.0.0.1 localhost\n"),
        Member { uid: 1000, mode: 0o4755, ..file(b"usr/bin/su", b"#!") },
        link(b"bin", EntryType::Symlink, b"usr/bin"),
        Member { device: (1, 3), ..member(b"dev/null", EntryType::Char) },
    ]);
    let first = canonical(&read(&input).unwrap(), Some(50));
    let second = canonical(&read(&first).unwrap(), Some(50));
    assert_eq!(first, second);
    let su = find(&list(&first), b"./usr/bin/su").clone();
    assert_eq!((su.mode, su.uid, su.mtime), (0o4755, 1000, 50));
    assert_eq!(first.len() % 512, 0);
    assert!(first.ends_with(&[0u8; 1024]));
}

#[test]
fn hard_links_point_at_the_first_path_in_byte_order() {
    let input = tar_of(&[
        file(b"z/file", b"shared"),
        link(b"a/link", EntryType::Link, b"./z/file"),
        link(b"m", EntryType::Link, b"/z/file"),
    ]);
    let rootfs = read(&input).unwrap();
    let listed = list(&canonical(&rootfs, None));
    let primary = find(&listed, b"./a/link");
    assert_eq!((primary.kind, primary.data.as_slice()), (b'0', &b"shared"[..]));
    for name in [&b"./m"[..], b"./z/file"] {
        let entry = find(&listed, name);
        assert_eq!((entry.kind, entry.link.as_slice(), entry.data.len()), (b'1', &b"./a/link"[..], 0));
    }
    let records = rootfs.manifest(&rootfs.whole(), None);
    let record = records.iter().find(|record| record.path == "/z/file").unwrap();
    assert_eq!((record.kind.as_str(), record.target.as_deref()), ("hardlink", Some("/a/link")));
}

#[test]
fn bad_hard_links_are_errors_naming_the_entry() {
    let missing = read(&tar_of(&[link(b"a", EntryType::Link, b"nowhere")])).unwrap_err();
    assert!(matches!(&missing, RootfsError::Entry { problem: EntryProblem::LinkTargetMissing(_), .. }), "{missing}");
    assert!(missing.to_string().contains("\"a\""), "{missing}");
    let escape = read(&tar_of(&[file(b"x", b""), link(b"a", EntryType::Link, b"../x")])).unwrap_err();
    assert!(matches!(escape, RootfsError::Entry { problem: EntryProblem::LinkEscapes(_), .. }), "{escape}");
    let to_dir = read(&tar_of(&[dir(b"d"), link(b"a", EntryType::Link, b"d")])).unwrap_err();
    assert!(matches!(to_dir, RootfsError::Entry { problem: EntryProblem::LinkToDirectory(_), .. }), "{to_dir}");
}

#[test]
fn paths_escaping_the_root_are_errors_naming_the_entry() {
    let error = read(&tar_of(&[file(b"etc/../../evil", b"")])).unwrap_err();
    assert!(matches!(error, RootfsError::Entry { problem: EntryProblem::Escapes, .. }));
    assert!(error.to_string().contains("etc/../../evil"), "{error}");
    let under_symlink =
        read(&tar_of(&[link(b"lib", EntryType::Symlink, b"/usr/lib"), file(b"lib/x", b"")])).unwrap_err();
    assert!(under_symlink.to_string().contains("parent \"/lib\" is not a directory"), "{under_symlink}");
}

#[test]
fn symlinks_are_verbatim_devices_and_fifos_kept_sockets_dropped() {
    let input = tar_of(&[
        link(b"up", EntryType::Symlink, b"../../../etc//passwd"),
        Member { device: (8, 1), mode: 0o660, ..member(b"sda1", EntryType::Block) },
        Member { device: (4, 64), ..member(b"ttyS0", EntryType::Char) },
        member(b"fifo", EntryType::Fifo),
        Member { mode: 0o140755, ..file(b"socket", b"") },
    ]);
    let listed = list(&canonical(&read(&input).unwrap(), None));
    assert_eq!(names(&listed), ["./", "./fifo", "./sda1", "./ttyS0", "./up"]);
    assert_eq!(find(&listed, b"./up").link, b"../../../etc//passwd");
    let block = find(&listed, b"./sda1");
    assert_eq!((block.kind, block.device, block.mode), (b'4', (8, 1), 0o660));
    assert_eq!(find(&listed, b"./ttyS0").device, (4, 64));
    assert_eq!(find(&listed, b"./fifo").kind, b'6');
}

#[test]
fn xattrs_round_trip_as_schily_records() {
    let capability: &[u8] = &[1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let input = tar_of(&[Member {
        pax: vec![
            ("SCHILY.xattr.security.capability", capability),
            ("SCHILY.xattr.security.selinux", b"system_u:object_r:bin_t:s0\0"),
            ("atime", b"123.5"),
            ("uname", b"root"),
        ],
        ..file(b"usr/bin/ping", b"elf")
    }]);
    let rootfs = read(&input).unwrap();
    let output = canonical(&rootfs, None);
    let ping = find(&list(&output), b"./usr/bin/ping").clone();
    assert_eq!(ping.xattrs.len(), 2);
    assert_eq!(ping.xattrs["security.capability"], capability);
    assert_eq!(ping.xattrs["security.selinux"], b"system_u:object_r:bin_t:s0\0");
    assert!(!output.windows(5).any(|window| window == b"atime"));
    let records = rootfs.manifest(&rootfs.whole(), None);
    let record = records.iter().find(|record| record.path == "/usr/bin/ping").unwrap();
    assert_eq!(record.xattrs["security.capability"], path::hex(capability));
}

#[test]
fn odd_names_keep_their_bytes() {
    let long_name = [b'n'; 255];
    let mut long_path = Vec::new();
    for _ in 0..16 {
        long_path.extend_from_slice(&[b'd'; 250]);
        long_path.push(b'/');
    }
    long_path.extend_from_slice(&[b'f'; 80]);
    assert_eq!(long_path.len(), 4096);
    let long_target = [b't'; 300];
    let input = tar_of(&[
        file(b"with space", b"1"),
        file(b"new\nline", b"2"),
        file(b"latin1-\xe9", b"3"),
        file(&long_name, b"4"),
        file(&long_path, b"5"),
        link(b"long-link", EntryType::Symlink, &long_target),
    ]);
    let rootfs = read(&input).unwrap();
    let output = canonical(&rootfs, None);
    let listed = list(&output);
    for (name, data) in [
        (&b"with space"[..], &b"1"[..]),
        (b"new\nline", b"2"),
        (b"latin1-\xe9", b"3"),
        (&long_name, b"4"),
        (&long_path, b"5"),
    ] {
        let mut full = b"./".to_vec();
        full.extend_from_slice(name);
        assert_eq!(find(&listed, &full).data, data);
    }
    assert_eq!(find(&listed, b"./long-link").link, long_target);
    assert_eq!(read(&output).map(|again| canonical(&again, None)).unwrap(), output);
    let records = rootfs.manifest(&rootfs.whole(), None);
    let latin = records.iter().find(|record| record.path_hex.is_some()).unwrap();
    assert_eq!(latin.path, "/latin1-\u{fffd}");
    assert_eq!(latin.path_hex.as_deref(), Some(path::hex(b"/latin1-\xe9").as_str()));
    let mut lines = Vec::new();
    write_manifest(&records, &mut lines).unwrap();
    assert!(String::from_utf8(lines.clone()).unwrap().contains(r#""path":"/new\nline""#));
    assert_eq!(parse_manifest(std::str::from_utf8(&lines).unwrap()).unwrap(), records);
}

#[test]
fn truncated_and_corrupt_tars_are_errors() {
    let whole = tar_of(&[file(b"a", &[7u8; 2000]), file(b"b", b"x")]);
    let no_end = &whole[..whole.len() - 1024];
    let error = read(no_end).unwrap_err();
    assert!(error.to_string().contains("truncated"), "{error}");
    let error = read(&whole[..1000]).unwrap_err();
    assert!(error.to_string().contains("\"a\""), "{error}");
    let mut bad_checksum = whole.clone();
    bad_checksum[10] ^= 1;
    let error = read(&bad_checksum).unwrap_err();
    assert!(error.to_string().contains("checksum"), "{error}");
    let empty = read(b"").unwrap_err().to_string();
    assert!(empty.contains("truncated"), "{empty}");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&whole).unwrap();
    let gzip = gzip.finish().unwrap();
    assert!(read(&gzip[..gzip.len() / 2]).is_err());
    assert_eq!(list(&canonical(&read(&gzip).unwrap(), None)).len(), 3);
}

/// An OCI archive holding `layers` (already compressed as they should be stored).
fn oci_archive(layers: &[Vec<u8>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    };
    let digest = |data: &[u8]| format!("sha256:{}", path::hex(&Sha256::digest(data)));
    let mut descriptors = Vec::new();
    for layer in layers {
        add(&format!("blobs/sha256/{}", &digest(layer)[7..]), layer);
        descriptors.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}"#,
            digest(layer),
            layer.len()
        ));
    }
    let manifest = format!(r#"{{"schemaVersion":2,"layers":[{}]}}"#, descriptors.join(","));
    add(&format!("blobs/sha256/{}", &digest(manifest.as_bytes())[7..]), manifest.as_bytes());
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{}}}]}}"#,
        digest(manifest.as_bytes()),
        manifest.len()
    );
    add("index.json", index.as_bytes());
    builder.into_inner().unwrap()
}

#[test]
fn oci_layers_apply_in_order_with_whiteouts_and_opaque_directories() {
    let lower = tar_of(&[
        file(b"a/x", b"lower"),
        file(b"a/y", b"y"),
        file(b"b/old", b""),
        file(b"c/keep", b""),
        file(b"d/f", b""),
    ]);
    let upper = tar_of(&[
        file(b"a/.wh.x", b""),
        file(b"b/new", b"new"),
        file(b"b/.wh..wh..opq", b""),
        file(b".wh.c", b""),
        file(b"d/f", b"upper wins"),
    ]);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&upper).unwrap();
    let upper_gzip = gzip.finish().unwrap();
    let top_zstd = zstd::encode_all(&tar_of(&[file(b"a/x", b"back again")])[..], 3).unwrap();
    let archive = oci_archive(&[lower, upper_gzip, top_zstd]);
    let listed = list(&canonical(&read(&archive).unwrap(), None));
    assert_eq!(names(&listed), ["./", "./a", "./a/x", "./a/y", "./b", "./b/new", "./d", "./d/f"]);
    assert_eq!(find(&listed, b"./d/f").data, b"upper wins");
    assert_eq!(find(&listed, b"./a/x").data, b"back again");
    assert_eq!(find(&listed, b"./b/new").data, b"new");
}

#[test]
fn damaged_oci_archives_are_errors() {
    let layer = tar_of(&[file(b"a", b"content")]);
    let mut archive = oci_archive(&[layer]);
    let at = archive.windows(7).position(|window| window == b"content").unwrap();
    archive[at] = b'C';
    let error = read(&archive).unwrap_err();
    assert!(error.to_string().contains("layer 1") && error.to_string().contains("damaged"), "{error}");
    let whiteout_escape = oci_archive(&[tar_of(&[file(b"a/.wh...", b"")])]);
    assert!(matches!(read(&whiteout_escape).unwrap_err(), RootfsError::Entry { problem: EntryProblem::Escapes, .. }));
}

#[test]
fn split_reroots_boot_and_var_and_keeps_empty_mount_points_in_root() {
    let input = tar_of(&[
        Member { mode: 0o700, ..dir(b"boot") },
        file(b"boot/vmlinuz", b"kernel"),
        file(b"etc/shared", b"shared"),
        link(b"boot/config-link", EntryType::Link, b"etc/shared"),
        dir(b"var"),
        file(b"var/log/x", b""),
        Member { mode: 0o1777, ..dir(b"tmp") },
        file(b"tmp/junk", b""),
        dir(b"proc"),
        file(b"run/lock", b""),
        file(b"varnish", b""),
        dir(b"dev"),
        Member { device: (1, 3), ..member(b"dev/null", EntryType::Char) },
    ]);
    let rootfs = read(&input).unwrap();
    let split = rootfs.split().unwrap();
    let tree = |view: &View<'_>| {
        let mut out = Vec::new();
        rootfs.write_tar(view, None, &mut out).unwrap();
        list(&out)
    };
    let boot = tree(&split.boot);
    assert_eq!(names(&boot), ["./", "./config-link", "./vmlinuz"]);
    assert_eq!(boot[0].mode, 0o700);
    // The link's target lives in the root tree: the boot tree gets its own copy.
    assert_eq!((boot[1].kind, boot[1].data.as_slice()), (b'0', &b"shared"[..]));
    let root = tree(&split.root);
    assert_eq!(
        names(&root),
        ["./", "./boot", "./dev", "./etc", "./etc/shared", "./proc", "./run", "./tmp", "./var", "./varnish"]
    );
    assert_eq!(find(&root, b"./tmp").mode, 0o1777);
    assert_eq!(find(&root, b"./etc/shared").kind, b'0');
    assert_eq!(names(&tree(&split.var)), ["./", "./log", "./log/x"]);
}

#[test]
fn edits_replace_inject_and_empty_the_machine_id() {
    let input = tar_of(&[
        Member { mode: 0o600, uid: 7, ..file(b"etc/hosts", b"podman's hosts") },
        link(b"etc/resolv.conf", EntryType::Symlink, b"../run/resolv.conf"),
        file(b"etc/machine-id", b"0123456789abcdef"),
        link(b"lib", EntryType::Symlink, b"usr/lib"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let hosts = write_input(dir.path(), "hosts", b"127.0.0.1 localhost\n");
    let tool = write_input(dir.path(), "tool", b"\x7fELF");
    let mut rootfs = read(&input).unwrap();
    rootfs.replace(&Replacement { dest: b"etc/hosts".to_vec(), source: hosts.clone() }).unwrap();
    rootfs.replace(&Replacement { dest: b"etc/resolv.conf".to_vec(), source: hosts.clone() }).unwrap();
    rootfs.empty_machine_id().unwrap();
    let spec = format!("0750:0:10:/opt/ic/bin/tool={}", tool.display());
    rootfs.inject(&Injection::parse(OsStr::new(&spec)).unwrap()).unwrap();
    let listed = list(&canonical(&rootfs, None));
    let replaced = find(&listed, b"./etc/hosts");
    assert_eq!((replaced.data.as_slice(), replaced.mode, replaced.uid), (&b"127.0.0.1 localhost\n"[..], 0o600, 7));
    let resolv = find(&listed, b"./etc/resolv.conf");
    assert_eq!((resolv.kind, resolv.mode), (b'0', 0o644));
    let machine_id = find(&listed, b"./etc/machine-id");
    assert_eq!((machine_id.data.len(), machine_id.mode), (0, 0o444));
    let injected = find(&listed, b"./opt/ic/bin/tool");
    assert_eq!((injected.data.as_slice(), injected.mode), (&b"\x7fELF"[..], 0o750));
    assert_eq!(find(&listed, b"./opt/ic").mode, 0o755);

    let through_symlink = Injection { dest: b"lib/x".to_vec(), source: tool.clone(), mode: 0o644, uid: 0, gid: 0 };
    let error = rootfs.inject(&through_symlink).unwrap_err();
    assert!(error.to_string().contains("not a directory"), "{error}");
    let over_dir = Injection { dest: b"opt".to_vec(), source: tool, mode: 0o644, uid: 0, gid: 0 };
    assert!(rootfs.inject(&over_dir).unwrap_err().to_string().contains("is a directory"));
    let missing = Replacement { dest: b"etc/hostname".to_vec(), source: dir.path().join("absent") };
    assert!(rootfs.replace(&missing).unwrap_err().to_string().contains("absent"));
    let raw = OsStr::from_bytes(b"/etc/hostname");
    assert!(Replacement::parse(raw).is_err());
}
