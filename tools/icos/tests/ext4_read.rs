//! The read-only ext4 reader (`icos::ext4::read`) checked against e2fsprogs: filesystems made by
//! the real `mke2fs -d` from a directory tree, changed with `debugfs -w` where mke2fs cannot
//! make something (times with epoch bits, uninitialised extents, ACLs, an orphan inode), then
//! read by the reader and compared with what `debugfs stat`, `debugfs ea_list`/`ea_get`,
//! `debugfs dump`, `debugfs imap` and `dumpe2fs` say, and with the source files themselves.
//!
//! Every test name starts with `ext4_` so that `cargo test -p icos ext4` runs them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use icos::ext4::read::{BlockOwner, Ext4Entry, Ext4Filesystem, Ext4ReadError, Ext4Time};
use sha2::{Digest, Sha256};

use common::{run, tool_command};

/// The features icos builds ext4 images with (src/ext4/mod.rs).
const ICOS_FEATURES: &str = "none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,\
                             flex_bg,sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum";
const UUID: &str = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c";
const HASH_SEED: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
/// Files in the `many` directory: enough blocks of entries for an htree index.
const MANY: usize = 300;
/// Data islands of `frag`: each its own extent, so the extent tree needs index levels.
const FRAGMENTS: u64 = 2000;

/// Deterministic bytes (xorshift), so that content differs from block to block.
fn pseudo_random(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The capability set `cap_net_bind_service=ep` as the kernel stores security.capability
/// (vfs_cap_data revision 2).
fn capability() -> Vec<u8> {
    let mut value = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        value.extend_from_slice(&word.to_le_bytes());
    }
    value
}

/// An access ACL `u::rw-,u:1000:r--,g::r--,m::r--,o::r--` in the xattr format setfacl passes to
/// the kernel (debugfs turns it into ext4's compact on-disk format).
fn acl() -> Vec<u8> {
    let mut value = 2u32.to_le_bytes().to_vec();
    for (tag, permissions, id) in
        [(1u16, 6u16, u32::MAX), (2, 4, 1000), (4, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 4, u32::MAX)]
    {
        value.extend_from_slice(&tag.to_le_bytes());
        value.extend_from_slice(&permissions.to_le_bytes());
        value.extend_from_slice(&id.to_le_bytes());
    }
    value
}

/// Whether the tests run as root, who alone may make device nodes and give files away. Without
/// root, debugfs makes and owns them in the filesystem instead.
fn running_as_root() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::MetadataExt::uid(&probe.as_file().metadata().unwrap()) == 0
}

/// The source tree: every kind of inode, names that are not UTF-8, owners above 65535, special
/// permission bits, a directory large enough for an htree, long and short symbolic links, hard
/// links, a sparse file and one fragmented enough for an extent tree with index levels.
fn write_tree(root: &Path) {
    let write = |path: &str, bytes: &[u8]| fs::write(root.join(path), bytes).unwrap();
    for dir in ["dir", "dir/nested", "dir/nested/deep", "many", "empty-dir"] {
        fs::create_dir(root.join(dir)).unwrap();
    }
    write("hello", b"hello\n");
    write("empty", b"");
    write("big", &pseudo_random(1, (1 << 20) + 123));
    write("dir/nested/deep/file", b"deep down\n");
    write("setuid", b"#!/bin/sh\n");
    // chown clears the setuid bit, so it comes first.
    if running_as_root() {
        std::os::unix::fs::chown(root.join("setuid"), Some(100_000), Some(200_000)).unwrap();
    }
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(root.join("dir"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), b"not UTF-8\n").unwrap();
    for index in 0..MANY {
        write(&format!("many/entry-with-a-fairly-long-name-{index:04}"), format!("{index}\n").as_bytes());
    }
    symlink("hello", root.join("short")).unwrap();
    let long_target = format!("/{}/target", "long-directory-name".repeat(5));
    assert!(long_target.len() > 60);
    symlink(&long_target, root.join("long")).unwrap();
    if running_as_root() {
        std::os::unix::fs::lchown(root.join("short"), Some(70_000), Some(80_000)).unwrap();
    }
    write("hard1", b"linked content\n");
    fs::hard_link(root.join("hard1"), root.join("dir/hard2")).unwrap();
    run(tool_command("mkfifo").arg(root.join("fifo")));
    if running_as_root() {
        run(tool_command("mknod").arg(root.join("chr")).args(["c", "4", "5"]));
        run(tool_command("mknod").arg(root.join("blk")).args(["b", "259", "70000"]));
    }
    // Islands of data between holes: mke2fs keeps the holes, so each island is an extent.
    let mut frag = File::create(root.join("frag")).unwrap();
    for island in 0..FRAGMENTS {
        frag.seek(SeekFrom::Start(island * 8192)).unwrap();
        frag.write_all(&pseudo_random(island + 7, 4096)).unwrap();
    }
    drop(frag);
    let mut sparse = File::create(root.join("sparse")).unwrap();
    sparse.write_all(b"start").unwrap();
    sparse.seek(SeekFrom::Start(10 << 20)).unwrap();
    sparse.write_all(b"end").unwrap();
    drop(sparse);
    write("prealloc", b"hello\n");
    write("orphan", &pseudo_random(3, 10_000));
}

/// Runs debugfs on `image` with `commands` (one per line; `-w` when `writable`) and returns
/// each command's output. Times print in UTC (debugfs looks for TZ=GMT).
fn debugfs(image: &Path, commands: &[Vec<u8>], writable: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("commands");
    fs::write(&script, commands.iter().flat_map(|command| command.iter().copied().chain([b'\n'])).collect::<Vec<u8>>())
        .unwrap();
    let mut command = tool_command("debugfs");
    command.env("TZ", "GMT");
    if writable {
        command.arg("-w");
    }
    let output = run(command.arg("-f").arg(&script).arg(image));
    // With -f, debugfs echoes each command as "debugfs: <command>" before its output.
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut sections: Vec<String> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("debugfs: ") {
            sections.push(String::new());
        } else if let Some(section) = sections.last_mut() {
            section.push_str(line);
            section.push('\n');
        }
    }
    assert_eq!(sections.len(), commands.len(), "debugfs output: {stdout}");
    sections
}

fn debugfs_one(image: &Path, command: &str) -> String {
    debugfs(image, &[command.as_bytes().to_vec()], false).remove(0)
}

fn command_with_path(command: &str, path: &[u8], rest: &str) -> Vec<u8> {
    let mut line = format!("{command} ").into_bytes();
    line.extend_from_slice(path);
    line.extend_from_slice(rest.as_bytes());
    line
}

/// The token after `key` in `text` (keys such as "Inode:" or "Size:"), or None.
fn token_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut tokens = text.split_whitespace();
    tokens.by_ref().find(|token| *token == key)?;
    tokens.next()
}

/// What `debugfs stat` says about an inode.
#[derive(Debug, Default)]
struct Stat {
    inode: u32,
    kind: String,
    mode: u16,
    flags: u32,
    uid: u32,
    gid: u32,
    size: u64,
    links: u16,
    xattr_block: u64,
    /// (name, raw seconds, raw extra, date as debugfs prints it) for atime, ctime, mtime, crtime.
    times: Vec<(String, u32, Option<u32>, String)>,
    device: Option<(u32, u32)>,
    fast_link: Option<String>,
    /// (label, first physical block, last physical block) from the EXTENTS or BLOCKS list.
    blocks: Vec<(String, u64, u64)>,
}

fn parse_stat(text: &str) -> Stat {
    let first = text.lines().next().unwrap_or_else(|| panic!("no stat output"));
    let mut stat = Stat {
        inode: token_after(first, "Inode:").unwrap().parse().unwrap(),
        mode: u16::from_str_radix(token_after(first, "Mode:").unwrap(), 8).unwrap(),
        flags: u32::from_str_radix(token_after(first, "Flags:").unwrap().trim_start_matches("0x"), 16).unwrap(),
        ..Stat::default()
    };
    // "Type: character special    Mode:": the type may be two words.
    let kind = first.split("Type:").nth(1).unwrap().split("Mode:").next().unwrap();
    stat.kind = kind.trim().to_owned();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("User:") {
            let number = |key: &str| -> i64 {
                let token = token_after(line, key).unwrap_or_else(|| panic!("no {key} in {line:?}"));
                token.parse().unwrap_or_else(|_| panic!("{key} in {line:?}"))
            };
            // debugfs prints owners as signed 32-bit numbers.
            stat.uid = number("User:") as u32;
            stat.gid = number("Group:") as u32;
            stat.size = number("Size:") as u64;
        } else if line.starts_with("Links:") {
            stat.links = token_after(line, "Links:").unwrap().parse().unwrap();
        } else if line.starts_with("File ACL:") {
            stat.xattr_block = token_after(line, "ACL:").unwrap().parse().unwrap();
        } else if let Some((name, rest)) = ["atime", "ctime", "mtime", "crtime"]
            .iter()
            .find_map(|name| line.trim_start().strip_prefix(&format!("{name}: 0x")).map(|rest| (*name, rest)))
        {
            // "0x6b0e7150:00000000 -- Tue Dec  1 07:03:44 2026", or without ":extra".
            let (raw, date) = rest.split_once(" -- ").unwrap();
            let (seconds, extra) = match raw.trim().split_once(":0x").or_else(|| raw.trim().split_once(':')) {
                Some((seconds, extra)) => (seconds, Some(u32::from_str_radix(extra, 16).unwrap())),
                None => (raw.trim(), None),
            };
            stat.times.push((
                name.to_owned(),
                u32::from_str_radix(seconds, 16).unwrap(),
                extra,
                date.trim().to_owned(),
            ));
        } else if line.contains("Device major/minor number:") {
            let numbers = line.split("number:").nth(1).unwrap().split_whitespace().next().unwrap();
            let (major, minor) = numbers.split_once(':').unwrap();
            stat.device = Some((major.parse().unwrap(), minor.parse().unwrap()));
        } else if let Some(target) = line.strip_prefix("Fast link dest: \"") {
            stat.fast_link = Some(target.strip_suffix('"').unwrap().to_owned());
        } else if line == "EXTENTS:" || line == "BLOCKS:" {
            let Some(list) = lines.peek() else { continue };
            if list.starts_with("TOTAL") || list.is_empty() {
                continue;
            }
            for item in list.split(", ") {
                // "(ETB0):3427", "(0-11):1234-1245", "(3-10[u]):9259-9266", "(DIND):1065"
                let (label, range) = item.trim().split_once("):").unwrap();
                let label = label.trim_start_matches('(').to_owned();
                let (first, last) = match range.split_once('-') {
                    Some((first, last)) => (first.parse().unwrap(), last.parse().unwrap()),
                    None => (range.parse().unwrap(), range.parse().unwrap()),
                };
                stat.blocks.push((label, first, last));
            }
        }
    }
    stat
}

/// "Sat Apr 22 20:42:28 2378" (asctime, UTC) as "2378-04-22 20:42:28 UTC", the format of
/// `Ext4Time`'s Display, to compare dates that debugfs computed itself.
fn asctime_to_iso(date: &str) -> String {
    let parts: Vec<&str> = date.split_whitespace().collect();
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = months.iter().position(|month| *month == parts[1]).unwrap() + 1;
    let day: u32 = parts[2].parse().unwrap();
    format!("{}-{month:02}-{day:02} {} UTC", parts[4], parts[3])
}

/// (name, size) pairs of `debugfs ea_list`.
fn parse_ea_list(text: &str) -> Vec<(String, usize)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("  "))
        .map(|line| {
            let (name, rest) = line.split_once(" (").unwrap();
            let size = rest.split(')').next().unwrap().parse().unwrap();
            (name.to_owned(), size)
        })
        .collect()
}

/// Expected paths in depth-first order, names sorted as bytes within a directory, from the
/// source tree; `extra_root` adds root entries mke2fs creates (lost+found), `skip` leaves out
/// root entries unlinked later.
fn source_paths(root: &Path, extra_root: &[&[u8]], skip: &[&[u8]]) -> Vec<Vec<u8>> {
    fn walk(dir: &Path, path: &[u8], out: &mut Vec<Vec<u8>>, extra: &[&[u8]], skip: &[&[u8]]) {
        let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().as_bytes().to_vec())
            .filter(|name| !skip.contains(&name.as_slice()))
            .chain(extra.iter().map(|name| name.to_vec()))
            .collect();
        names.sort();
        for name in names {
            let child = [path, b"/", &name].concat();
            out.push(child.clone());
            let source = dir.join(std::ffi::OsStr::from_bytes(&name));
            if source.symlink_metadata().is_ok_and(|metadata| metadata.is_dir()) {
                walk(&source, &child, out, &[], &[]);
            }
        }
    }
    let mut out = vec![b"/".to_vec()];
    walk(root, b"", &mut out, extra_root, skip);
    out
}

fn source_of(root: &Path, path: &[u8]) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(&path[1..]))
}

/// One test filesystem: its image, the tree it was made from, and what was changed after.
struct TestImage {
    _dir: tempfile::TempDir,
    image: PathBuf,
    source: PathBuf,
    /// Blocks of the unlinked inode: allocated, reachable by no path.
    orphan_blocks: Vec<u64>,
    extents: bool,
}

/// Makes a filesystem of `size` bytes with `mke2fs -d` and `options`, indexes its directories
/// with `e2fsck -fD`, then changes it with debugfs: attributes, times, an orphan and (with
/// extents) an uninitialised extent over blocks that hold garbage.
fn make_image(size: u64, options: &[&str], extents: bool) -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    write_tree(&source);
    let image = dir.path().join("fs.img");
    File::create(&image).unwrap().set_len(size).unwrap();
    run(tool_command("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-U", UUID, "-L", "test-label", "-E"])
        .arg(format!("hash_seed={HASH_SEED}"))
        .args(options)
        .arg("-d")
        .arg(&source)
        .arg(&image));
    // e2fsck exits 1 when it changed something (here: indexed directories).
    let status = tool_command("e2fsck").args(["-f", "-y", "-D"]).arg(&image).output().unwrap().status;
    assert!(matches!(status.code(), Some(0 | 1)), "e2fsck -fyD: {status}");

    let values = dir.path().join("values");
    fs::create_dir(&values).unwrap();
    let value_file = |name: &str, bytes: &[u8]| {
        let path = values.join(name);
        fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let big = value_file("big", &pseudo_random(9, 300));
    let capability = value_file("capability", &capability());
    let acl = value_file("acl", &acl());
    let binary = value_file("binary", &[0, 1, 2, 0xff]);
    let orphan = parse_stat(&debugfs_one(&image, "stat /orphan"));
    let mut commands: Vec<String> = vec![
        // Two attributes in the inode and one (too big for it) in the attribute block, on a
        // hard-linked file, so that two paths use the block.
        "ea_set /hard1 user.small small-value".into(),
        format!("ea_set -f {big} /hard1 user.big"),
        format!("ea_set -f {capability} /setuid security.capability"),
        format!("ea_set -f {acl} /dir system.posix_acl_access"),
        format!("ea_set -f {acl} /dir system.posix_acl_default"),
        format!("ea_set -f {binary} /empty trusted.binary"),
        "ea_set /empty user.empty-value \"\"".into(),
        // Year 2378 (epoch bits 3) and 1 ns; -1 (1969); a creation time with nanoseconds.
        "sif /hello mtime 0x1234".into(),
        "sif /hello mtime_extra 0x7".into(),
        "sif /hello atime 0xffffffff".into(),
        "sif /hello atime_extra 0x0".into(),
        "sif /hello crtime 0x65000000".into(),
        "sif /hello crtime_extra 0xee6b2800".into(),
        "sif /dir ctime_extra 0x6".into(),
        "sif /many uid 4000000000".into(),
        "unlink /orphan".into(),
    ];
    if !running_as_root() {
        // What only root can do in the source tree. debugfs mknod takes minors up to 65535,
        // so 259:70000 gets its new-style number in i_block[1] directly.
        commands.extend(
            [
                "mknod chr c 4 5",
                "mknod blk b 259 0",
                "sif /blk block[1] 286327664",
                "sif /setuid uid 100000",
                "sif /setuid gid 200000",
                "sif /short uid 70000",
                "sif /short gid 80000",
            ]
            .map(String::from),
        );
    }
    if extents {
        // Blocks 3 to 10 allocated but uninitialised, inside the file: they must read as zeros.
        commands.push("fallocate /prealloc 3 10".into());
        commands.push("sif /prealloc size 50000".into());
    }
    let commands: Vec<Vec<u8>> = commands.into_iter().map(String::into_bytes).collect();
    for output in debugfs(&image, &commands, true) {
        assert!(!output.contains("rror") && !output.contains("sage"), "debugfs: {output}");
    }
    if extents {
        // Garbage where the uninitialised extent lies, which a reader must not return.
        let stat = parse_stat(&debugfs_one(&image, "stat /prealloc"));
        let uninitialised: Vec<&(String, u64, u64)> =
            stat.blocks.iter().filter(|(label, _, _)| label.ends_with("[u]")).collect();
        assert_eq!(uninitialised.len(), 1, "{stat:?}");
        let block_size = dumpe2fs_header(&image)["Block size"].parse::<u64>().unwrap();
        let mut file = fs::OpenOptions::new().write(true).open(&image).unwrap();
        let (_, first, last) = uninitialised[0];
        file.seek(SeekFrom::Start(first * block_size)).unwrap();
        file.write_all(&vec![0xEE; ((last - first + 1) * block_size) as usize]).unwrap();
    }
    let orphan_blocks = orphan.blocks.iter().flat_map(|&(_, first, last)| first..=last).collect();
    TestImage { _dir: dir, image, source, orphan_blocks, extents }
}

fn dumpe2fs_header(image: &Path) -> HashMap<String, String> {
    let output = run(tool_command("dumpe2fs").arg("-h").arg(image));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

fn open(image: &Path) -> Ext4Filesystem<File> {
    let length = fs::metadata(image).unwrap().len();
    Ext4Filesystem::open(File::open(image).unwrap(), 0, length).unwrap()
}

fn entry<'a>(entries: &'a [Ext4Entry], path: &[u8]) -> &'a Ext4Entry {
    entries
        .iter()
        .find(|entry| entry.path == path)
        .unwrap_or_else(|| panic!("no entry {}", String::from_utf8_lossy(path)))
}

/// Compares every entry with debugfs and the source tree; returns the entries and the stat of
/// each path.
fn check_entries(test: &TestImage) -> (Vec<Ext4Entry>, Vec<Stat>) {
    let entries = open(&test.image).entries().unwrap();
    let paths: Vec<Vec<u8>> = entries.iter().map(|entry| entry.path.clone()).collect();
    assert_eq!(
        paths,
        source_paths(
            &test.source,
            if running_as_root() { &[b"lost+found"] } else { &[b"lost+found", b"chr", b"blk"] },
            &[b"orphan"]
        ),
        "paths and their order"
    );

    let dump_dir = tempfile::tempdir().unwrap();
    let mut commands = Vec::new();
    let mut dumps = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        commands.push(command_with_path("stat", &entry.path, ""));
        commands.push(command_with_path("ea_list", &entry.path, ""));
        commands.push(command_with_path("imap", &entry.path, ""));
        if entry.mode & 0o170000 == 0o100000 {
            let dump = dump_dir.path().join(index.to_string());
            dumps.push(command_with_path("dump", &entry.path, &format!(" {}", dump.display())));
        }
    }
    let outputs = debugfs(&test.image, &commands, false);
    debugfs(&test.image, &dumps, false);
    let mut stats = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let name = String::from_utf8_lossy(&entry.path).into_owned();
        let stat = parse_stat(&outputs[index * 3]);
        assert_eq!(entry.inode, stat.inode, "{name}: inode");
        assert_eq!(entry.mode & 0o7777, stat.mode, "{name}: permissions");
        let kind = match entry.mode & 0o170000 {
            0o100000 => "regular",
            0o040000 => "directory",
            0o120000 => "symlink",
            0o010000 => "FIFO",
            0o020000 => "character special",
            0o060000 => "block special",
            other => panic!("{name}: unexpected type {other:o}"),
        };
        assert_eq!(kind, stat.kind, "{name}: type");
        assert_eq!(entry.flags, stat.flags, "{name}: flags");
        assert_eq!((entry.uid, entry.gid), (stat.uid, stat.gid), "{name}: owner");
        assert_eq!(entry.size, stat.size, "{name}: size");
        assert_eq!(entry.links, stat.links, "{name}: links");
        for (time_name, seconds, extra, date) in &stat.times {
            let time = match time_name.as_str() {
                "atime" => entry.atime,
                "ctime" => entry.ctime,
                "mtime" => entry.mtime,
                _ => entry.crtime.unwrap_or_else(|| panic!("{name}: no crtime")),
            };
            assert_eq!(time, Ext4Time::decode(*seconds, *extra), "{name}: {time_name}");
            // A time before 1970 (sign bit set, epoch bits 0) is where e2fsprogs versions
            // disagree: up to 1.47.0 debugfs prints it as the kernel reads it (1969), later ones
            // as 2106. The raw decoding above is checked against the kernel's rule either way.
            let epoch_bits = extra.map_or(0, |extra| extra & 3);
            if *seconds >= 0x8000_0000 && epoch_bits == 0 {
                continue;
            }
            // debugfs's own decoding of the epoch bits, as a date.
            let ours = Ext4Time { nanoseconds: 0, ..time }.to_string();
            assert_eq!(ours, asctime_to_iso(date), "{name}: {time_name} as a date");
        }
        let has_crtime = stat.times.iter().any(|(time_name, ..)| time_name == "crtime");
        assert_eq!(entry.crtime.is_some(), has_crtime, "{name}: crtime");
        assert_eq!(entry.device, stat.device, "{name}: device");
        // Attributes: names and sizes from ea_list, values from ea_get (raw, as stored).
        let listed = parse_ea_list(&outputs[index * 3 + 1]);
        let mut ours: Vec<(String, usize)> =
            entry.xattrs.iter().map(|(key, value)| (String::from_utf8_lossy(key).into_owned(), value.len())).collect();
        let mut sorted_listed = listed.clone();
        sorted_listed.sort();
        ours.sort();
        assert_eq!(ours, sorted_listed, "{name}: extended attributes");
        // The inode's location in its table.
        let imap = &outputs[index * 3 + 2];
        assert!(imap.contains(&format!("Inode {} is part of", entry.inode)), "{name}: {imap}");
        match entry.mode & 0o170000 {
            0o100000 => {
                let dumped = fs::read(dump_dir.path().join(index.to_string())).unwrap();
                assert_eq!(entry.sha256, Some(sha256(&dumped)), "{name}: content as debugfs dumps it");
                assert_eq!(dumped.len() as u64, entry.size, "{name}: dumped size");
                if entry.path != b"/prealloc" || !test.extents {
                    let source = fs::read(source_of(&test.source, &entry.path)).unwrap();
                    assert_eq!(entry.sha256, Some(sha256(&source)), "{name}: content of the source file");
                }
                assert!(entry.symlink_target.is_none() && entry.device.is_none());
            }
            0o120000 => {
                let target = fs::read_link(source_of(&test.source, &entry.path)).unwrap();
                assert_eq!(entry.symlink_target.as_deref(), Some(target.as_os_str().as_bytes()), "{name}: target");
                if let Some(fast) = &stat.fast_link {
                    assert_eq!(entry.symlink_target.as_deref(), Some(fast.as_bytes()), "{name}: fast link");
                }
                assert_eq!(stat.fast_link.is_some(), target.as_os_str().len() < 60, "{name}: fast or slow");
                assert!(entry.sha256.is_none());
            }
            _ => assert!(entry.sha256.is_none() && entry.symlink_target.is_none(), "{name}"),
        }
        stats.push(stat);
    }

    // Values of every attribute, raw (-r: ACLs as stored), by `ea_get -f`.
    let mut commands = Vec::new();
    let mut expected = Vec::new();
    for entry in &entries {
        for (index, (key, value)) in entry.xattrs.iter().enumerate() {
            let out = dump_dir.path().join(format!("{}-xattr-{index}", entry.inode));
            let mut command = format!("ea_get -r -f {} ", out.display()).into_bytes();
            command.extend_from_slice(&entry.path);
            command.push(b' ');
            command.extend_from_slice(key);
            commands.push(command);
            expected.push((out, value.clone(), String::from_utf8_lossy(key).into_owned()));
        }
    }
    debugfs(&test.image, &commands, false);
    for (out, value, key) in expected {
        // ea_get writes nothing for an empty value.
        let stored = fs::read(&out).unwrap_or_default();
        assert_eq!(stored, value, "the value of {key}");
    }
    (entries, stats)
}

/// Specific expectations beyond agreeing with debugfs: what was set on the source tree and by
/// debugfs, read back.
fn check_known_values(test: &TestImage, entries: &[Ext4Entry], stats: &[Stat]) {
    let get = |path: &[u8]| entry(entries, path);
    let root = get(b"/");
    assert_eq!((root.inode, root.mode & 0o170000), (2, 0o040000));
    let hello = get(b"/hello");
    assert_eq!(hello.sha256, Some(sha256(b"hello\n")));
    assert_eq!(hello.atime.seconds, -1);
    // Inodes of 128 bytes have no room for epoch bits, nanoseconds or a creation time.
    let large_inodes = hello.crtime.is_some();
    if !large_inodes {
        assert_eq!(hello.mtime, Ext4Time::decode(0x1234, None));
    } else {
        assert_eq!(hello.mtime, Ext4Time { seconds: 0x1234 + (3 << 32), nanoseconds: 1 });
        assert_eq!(hello.mtime.to_string(), "2378-04-22 20:42:28.000000001 UTC");
        assert_eq!(hello.crtime, Some(Ext4Time { seconds: 0x6500_0000, nanoseconds: 0xee6b_2800 >> 2 }));
        assert_eq!(get(b"/dir").ctime.seconds >> 32, 2, "ctime epoch bits of /dir");
    }
    assert_eq!(get(b"/empty").sha256, Some(sha256(b"")));
    let setuid = get(b"/setuid");
    assert_eq!(setuid.mode, 0o104755);
    assert_eq!((setuid.uid, setuid.gid), (100_000, 200_000));
    assert_eq!(setuid.xattrs, [(b"security.capability".to_vec(), capability())]);
    assert_eq!(get(b"/dir").mode, 0o041777);
    assert_eq!(get(b"/many").uid, 4_000_000_000);
    let short = get(b"/short");
    assert_eq!(short.symlink_target.as_deref(), Some(&b"hello"[..]));
    assert_eq!((short.uid, short.gid), (70_000, 80_000));
    assert!(get(b"/long").symlink_target.as_ref().unwrap().len() > 60);
    let (hard1, hard2) = (get(b"/hard1"), get(b"/dir/hard2"));
    assert_eq!(hard1.inode, hard2.inode);
    assert_eq!(hard1.links, 2);
    assert_eq!(hard1.sha256, Some(sha256(b"linked content\n")));
    assert_eq!(
        hard1.xattrs,
        [(b"user.big".to_vec(), pseudo_random(9, 300)), (b"user.small".to_vec(), b"small-value".to_vec())]
    );
    assert_eq!(hard2.xattrs, hard1.xattrs);
    let empty = get(b"/empty");
    assert_eq!(
        empty.xattrs,
        [(b"trusted.binary".to_vec(), vec![0, 1, 2, 0xff]), (b"user.empty-value".to_vec(), vec![])]
    );
    // ext4's compact ACL format: version 1, short entries without an id.
    let dir = get(b"/dir");
    let names: Vec<&[u8]> = dir.xattrs.iter().map(|(name, _)| name.as_slice()).collect();
    assert_eq!(names, [&b"system.posix_acl_access"[..], b"system.posix_acl_default"]);
    assert_eq!(&dir.xattrs[0].1[..4], &1u32.to_le_bytes());
    assert_eq!(dir.xattrs[0].1.len(), 4 + 4 + 8 + 4 + 4 + 4);
    assert_eq!(get(b"/chr").device, Some((4, 5)));
    assert_eq!(get(b"/blk").device, Some((259, 70_000)));
    assert_eq!(get(b"/fifo").mode & 0o170000, 0o010000);
    assert_eq!(get(b"/sparse").size, (10 << 20) + 3);
    assert_eq!(get(b"/frag").size, (FRAGMENTS - 1) * 8192 + 4096);
    if test.extents {
        let mut content = b"hello\n".to_vec();
        content.resize(50_000, 0);
        let prealloc = get(b"/prealloc");
        assert_eq!(prealloc.size, 50_000);
        assert_eq!(prealloc.sha256, Some(sha256(&content)), "uninitialised blocks read as zeros");
    }
    // The many-entry directory is hash-indexed, which is what the test is after.
    let many = stats.iter().find(|stat| stat.inode == get(b"/many").inode).unwrap();
    assert_ne!(many.flags & 0x1000, 0, "/many has no htree index: {:x}", many.flags);
    assert_eq!(entries.iter().filter(|entry| entry.path.starts_with(b"/many/")).count(), MANY);
}

/// (label, group, first block, last block) of a group's metadata.
type GroupMetadata = (String, u32, u64, u64);

/// Groups as dumpe2fs lists them: block ranges of metadata, and free block ranges.
fn dumpe2fs_groups(image: &Path) -> (Vec<GroupMetadata>, Vec<(u64, u64)>) {
    let output = run(tool_command("dumpe2fs").arg(image));
    let text = String::from_utf8_lossy(&output.stdout);
    let range = |text: &str| -> (u64, u64) {
        let text = text.trim().trim_end_matches(',');
        match text.split_once('-') {
            Some((first, last)) => (first.parse().unwrap(), last.parse().unwrap()),
            None => (text.parse().unwrap(), text.parse().unwrap()),
        }
    };
    let mut metadata = Vec::new();
    let mut free = Vec::new();
    let mut group: Option<u32> = None;
    for line in text.lines() {
        // "Group 3: (Blocks 98304-131071) ..." starts a group; the header before the first
        // group has lines such as "Free blocks: 12007" that are not lists.
        if let Some((number, _)) = line.strip_prefix("Group ").and_then(|rest| rest.split_once(": (Blocks")) {
            group = Some(number.parse().unwrap());
            continue;
        }
        let Some(group) = group else { continue };
        let line = line.trim();
        if let Some(list) = line.strip_prefix("Free blocks: ") {
            for item in list.split(", ").filter(|item| !item.is_empty()) {
                free.push(range(item));
            }
            continue;
        }
        for part in line.split(", ") {
            for (label, key) in [
                ("superblock", "superblock at "),
                ("descriptors", "Group descriptors at "),
                ("descriptors", "Group descriptor at "),
                ("reserved", "Reserved GDT blocks at "),
                ("block bitmap", "Block bitmap at "),
                ("inode bitmap", "Inode bitmap at "),
                ("inode table", "Inode table at "),
            ] {
                if let Some(position) = part.find(key) {
                    let value = part[position + key.len()..].split_whitespace().next().unwrap();
                    let (first, last) = range(value);
                    metadata.push((label.to_owned(), group, first, last));
                }
            }
        }
    }
    (metadata, free)
}

/// Asks `block_owners` about every block debugfs and dumpe2fs can attribute, in one call, and
/// compares.
fn check_block_owners(test: &TestImage, entries: &[Ext4Entry], stats: &[Stat]) {
    let header = dumpe2fs_header(&test.image);
    let block_size: u64 = header["Block size"].parse().unwrap();
    let inode_size: u64 = header["Inode size"].parse().unwrap();
    let inodes_per_group: u64 = header["Inodes per group"].parse().unwrap();
    let blocks_count: u64 = header["Block count"].parse().unwrap();
    let mut expected: BTreeMap<u64, BlockOwner> = BTreeMap::new();
    let mut expect = |block: u64, owner: BlockOwner| {
        if let Some(previous) = expected.insert(block, owner.clone()) {
            assert_eq!(previous, owner, "block {block} has two owners");
        }
    };
    let (metadata, free) = dumpe2fs_groups(&test.image);
    for (label, group, first, last) in &metadata {
        for block in *first..=*last {
            let owner = match label.as_str() {
                "superblock" => BlockOwner::Superblock,
                "descriptors" | "reserved" => BlockOwner::GroupDescriptors,
                "block bitmap" => BlockOwner::BlockBitmap { group: *group },
                "inode bitmap" => BlockOwner::InodeBitmap { group: *group },
                _ => {
                    let per_block = block_size / inode_size;
                    let first_inode = u64::from(*group) * inodes_per_group + (block - first) * per_block + 1;
                    BlockOwner::InodeTable {
                        group: *group,
                        first_inode: first_inode as u32,
                        last_inode: (first_inode + per_block - 1) as u32,
                    }
                }
            };
            expect(block, owner);
        }
    }
    if block_size == 1024 {
        expect(0, BlockOwner::Superblock);
    }
    // Files, directories and attribute blocks, by the first path of each inode.
    let mut first_path: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut xattr_users: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (entry, stat) in entries.iter().zip(stats) {
        if stat.xattr_block != 0 {
            xattr_users.entry(stat.xattr_block).or_default().push(entry.path.clone());
        }
        if first_path.contains_key(&entry.inode) {
            continue;
        }
        first_path.insert(entry.inode, entry.path.clone());
        for (_, first, last) in &stat.blocks {
            for block in *first..=*last {
                let path = entry.path.clone();
                expect(
                    block,
                    if stat.kind == "directory" {
                        BlockOwner::Directory { path }
                    } else {
                        BlockOwner::FileData { path }
                    },
                );
            }
        }
    }
    for (block, paths) in xattr_users {
        expect(block, BlockOwner::ExtendedAttributes { paths });
    }
    if header.contains_key("Journal inode") {
        let journal = parse_stat(&debugfs_one(&test.image, "stat <8>"));
        for (_, first, last) in &journal.blocks {
            for block in *first..=*last {
                expect(block, BlockOwner::Journal);
            }
        }
    }
    if header["Filesystem features"].contains("resize_inode") {
        let resize = parse_stat(&debugfs_one(&test.image, "stat <7>"));
        let (_, block, _) = resize.blocks.iter().find(|(label, _, _)| label == "DIND").unwrap();
        expect(*block, BlockOwner::ResizeInode);
    }
    for &block in &test.orphan_blocks {
        expect(block, BlockOwner::Unknown);
    }
    for (first, last) in &free {
        expect(*first, BlockOwner::Unused);
        expect(*last, BlockOwner::Unused);
    }
    expect(blocks_count, BlockOwner::Unknown);
    expect(blocks_count + 1000, BlockOwner::Unknown);

    // In a scrambled order with repeats: the answer keeps the order asked.
    let mut asked: Vec<u64> = expected.keys().rev().copied().collect();
    asked.push(asked[0]);
    let owners = open(&test.image).block_owners(&asked).unwrap();
    assert_eq!(owners.len(), asked.len());
    let mut wrong = Vec::new();
    for ((block, owner), asked_block) in owners.iter().zip(&asked) {
        assert_eq!(block, asked_block);
        if expected[block] != *owner {
            wrong.push(format!("block {block}: expected {:?}, got {owner:?}", expected[block]));
        }
    }
    assert!(wrong.is_empty(), "{} wrong owners, e.g.:\n{}", wrong.len(), wrong[..wrong.len().min(20)].join("\n"));

    // Every inode's table block, as `debugfs imap` locates it.
    let commands: Vec<Vec<u8>> = entries.iter().map(|entry| format!("imap <{}>", entry.inode).into_bytes()).collect();
    let located: Vec<u64> = debugfs(&test.image, &commands, false)
        .iter()
        .map(|output| {
            // "Inode 12 is part of block group 0\n\tlocated at block 1065, offset 0x0b00"
            let rest = output.split("located at block ").nth(1).unwrap_or_else(|| panic!("{output}"));
            rest.split(',').next().unwrap().parse().unwrap()
        })
        .collect();
    let owners = open(&test.image).block_owners(&located).unwrap();
    for (entry, (block, owner)) in entries.iter().zip(owners) {
        match owner {
            BlockOwner::InodeTable { first_inode, last_inode, .. } => {
                assert!((first_inode..=last_inode).contains(&entry.inode), "block {block}: {owner:?}")
            }
            other => panic!("inode {} is in block {block}, which is {other:?}", entry.inode),
        }
    }
}

fn check_image(test: &TestImage) -> Vec<Ext4Entry> {
    let (entries, stats) = check_entries(test);
    check_known_values(test, &entries, &stats);
    check_block_owners(test, &entries, &stats);
    entries
}

#[test]
fn ext4_read_icos_features_match_debugfs() {
    let features = format!("-O{ICOS_FEATURES}");
    let test = make_image(64 << 20, &["-t", "ext4", "-b", "4096", "-I", "256", &features], true);
    let header = dumpe2fs_header(&test.image);
    assert!(header["Filesystem features"].contains("metadata_csum"));
    let entries = check_image(&test);

    // The extent tree of /frag has index levels (depth >= 1): the leaves are in blocks.
    let extents = debugfs_one(&test.image, "ex /frag");
    let depth: u32 =
        extents.lines().nth(1).unwrap().split('/').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(depth >= 1, "{extents}");

    // The same filesystem inside a disk image, after 1 MiB and 5 bytes of other data.
    let image = fs::read(&test.image).unwrap();
    let offset = (1 << 20) + 5;
    let mut disk = vec![0xA5u8; offset];
    disk.extend_from_slice(&image);
    disk.extend_from_slice(&[0x5A; 65536]);
    let mut inside = Ext4Filesystem::open(Cursor::new(disk), offset as u64, image.len() as u64).unwrap();
    assert_eq!(inside.block_size(), 4096);
    assert_eq!(inside.entries().unwrap(), entries);
    let mut alone = open(&test.image);
    let blocks: Vec<u64> = (0..(image.len() as u64 / 4096)).step_by(7).collect();
    assert_eq!(inside.block_owners(&blocks).unwrap(), alone.block_owners(&blocks).unwrap());

    // Superblock fields agree with dumpe2fs.
    let fields: HashMap<String, String> = alone.superblock_fields().into_iter().collect();
    assert_eq!(fields["uuid"], UUID);
    assert_eq!(fields["hash_seed"], HASH_SEED);
    assert_eq!(fields["volume_name"], "\"test-label\"");
    for (ours, theirs) in [
        ("inodes_count", "Inode count"),
        ("blocks_count", "Block count"),
        ("free_blocks_count", "Free blocks"),
        ("free_inodes_count", "Free inodes"),
        ("reserved_gdt_blocks", "Reserved GDT blocks"),
        ("desc_size", "Group descriptor size"),
    ] {
        assert_eq!(fields[ours], header[theirs], "{ours}");
    }
    assert_eq!(fields["checksum"].to_lowercase(), header["Checksum"].to_lowercase());
    assert!(fields["def_hash_version"].ends_with("(half_md4)"));
    assert!(fields["feature_ro_compat"].contains("metadata_csum"));
    assert_eq!(fields["mkfs_time"], format!("1700000000 ({})", asctime_to_iso(&header["Filesystem created"])));
}

#[test]
fn ext4_read_small_blocks_and_32_bit_descriptors_match_debugfs() {
    // 1 KiB blocks (the superblock in block 1, block 0 the boot block), 32-byte group
    // descriptors, no metadata checksums.
    let test = make_image(64 << 20, &["-t", "ext4", "-b", "1024", "-I", "256", "-O", "^64bit,^metadata_csum"], true);
    check_image(&test);
}

#[test]
fn ext4_read_ext2_block_maps_and_small_inodes_match_debugfs() {
    // No extents: block maps with single, double indirect blocks; 128-byte inodes have no
    // extra fields (no crtime, no nanoseconds, no in-inode attributes); no journal.
    let test = make_image(64 << 20, &["-t", "ext2", "-b", "1024", "-I", "128"], false);
    let entries = check_image(&test);
    assert!(entries.iter().all(|entry| entry.crtime.is_none()));
    let big = parse_stat(&debugfs_one(&test.image, "stat /big"));
    assert!(big.blocks.iter().any(|(label, _, _)| label == "DIND"), "{big:?}");
}

#[test]
fn ext4_read_meta_bg_matches_debugfs() {
    // meta_bg: descriptor blocks spread over the groups (16 descriptors per 1 KiB block, so
    // 300 MiB in 8 MiB groups makes three meta groups).
    let test = make_image(300 << 20, &["-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"], true);
    let header = dumpe2fs_header(&test.image);
    assert!(header["Filesystem features"].contains("meta_bg"));
    check_image(&test);
}

#[test]
fn ext4_read_superblock_fields_show_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("file"), b"content").unwrap();
    let make = |name: &str, uuid: &str| {
        let image = dir.path().join(name);
        File::create(&image).unwrap().set_len(16 << 20).unwrap();
        let features = format!("-O{ICOS_FEATURES}");
        run(tool_command("mke2fs")
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", &features, "-U", uuid, "-E"])
            .arg(format!("hash_seed={HASH_SEED}"))
            .arg("-d")
            .arg(&source)
            .arg(&image));
        open(&image).superblock_fields()
    };
    let first = make("a.img", UUID);
    let second = make("b.img", "11111111-2222-3333-4444-555555555555");
    assert_eq!(first.len(), second.len());
    let differing: Vec<&str> =
        first.iter().zip(&second).filter(|(a, b)| a != b).map(|((name, _), _)| name.as_str()).collect();
    assert_eq!(differing, ["uuid", "checksum"]);
    let uuid = |fields: &[(String, String)]| fields.iter().find(|(name, _)| name == "uuid").unwrap().1.clone();
    assert_eq!((uuid(&first), uuid(&second)), (UUID.to_owned(), "11111111-2222-3333-4444-555555555555".to_owned()));
}

/// A small filesystem for the corruption tests, with what they need to aim at.
fn small_image() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir_all(source.join("dir/nested")).unwrap();
    fs::create_dir(source.join("many")).unwrap();
    fs::write(source.join("hello"), b"hello\n").unwrap();
    fs::write(source.join("dir/nested/file"), pseudo_random(5, 3000)).unwrap();
    for index in 0..150 {
        fs::write(source.join(format!("many/entry-with-a-fairly-long-name-{index:04}")), b"x").unwrap();
    }
    symlink("/".repeat(80), source.join("long")).unwrap();
    // Twelve 1 KiB extents: more than the inode's four, so a leaf block.
    let mut frag = File::create(source.join("frag")).unwrap();
    for island in 0..12u64 {
        frag.seek(SeekFrom::Start(island * 2048)).unwrap();
        frag.write_all(&pseudo_random(island, 1024)).unwrap();
    }
    drop(frag);
    let image = dir.path().join("small.img");
    File::create(&image).unwrap().set_len(8 << 20).unwrap();
    let features = format!("-O{ICOS_FEATURES}");
    run(tool_command("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "1024", "-I", "256", &features, "-d"])
        .arg(&source)
        .arg(&image));
    let status = tool_command("e2fsck").args(["-f", "-y", "-D"]).arg(&image).output().unwrap().status;
    assert!(matches!(status.code(), Some(0 | 1)), "e2fsck -fyD: {status}");
    run(tool_command("debugfs").args(["-w", "-R", "ea_set /hello user.x value"]).arg(&image));
    (dir, image)
}

fn corrupt_error(image: &Path) -> (u32, String, String) {
    match open(image).entries() {
        Err(Ext4ReadError::Corrupt { inode, path, problem }) => (inode, path, problem),
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

#[test]
fn ext4_read_corruption_is_an_error_naming_the_inode() {
    let (dir, image) = small_image();
    let copy = |name: &str| {
        let path = dir.path().join(name);
        fs::copy(&image, &path).unwrap();
        path
    };
    let inode_of = |path: &str| parse_stat(&debugfs_one(&image, &format!("stat {path}"))).inode;
    let first_block = |path: &str| parse_stat(&debugfs_one(&image, &format!("stat {path}"))).blocks.last().unwrap().1;
    let patch = |image: &Path, offset: u64, bytes: &[u8]| {
        let mut file = fs::OpenOptions::new().write(true).open(image).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(bytes).unwrap();
    };

    // A directory that contains its own ancestor: a loop.
    let looped = copy("loop.img");
    run(tool_command("debugfs").args(["-w", "-R", "link /dir /dir/nested/back"]).arg(&looped));
    let (inode, path, problem) = corrupt_error(&looped);
    assert_eq!((inode, path.as_str()), (inode_of("/dir"), "/dir/nested/back"));
    assert!(problem.contains("also reached as /dir"), "{problem}");

    // A directory entry with a record length of 0 (the `..` entry's, at byte 12 + 4).
    let zero_length = copy("rec_len.img");
    let dir_block = first_block("/dir/nested");
    patch(&zero_length, dir_block * 1024 + 16, &[0, 0]);
    let (inode, path, problem) = corrupt_error(&zero_length);
    assert_eq!((inode, path.as_str()), (inode_of("/dir/nested"), "/dir/nested"));
    assert!(problem.contains("record length 0"), "{problem}");

    // An extent that points past the end of the filesystem: i_block[5] is the first leaf's
    // ee_start_lo.
    let outside = copy("outside.img");
    run(tool_command("debugfs").args(["-w", "-R", "sif /hello block[5] 3000000000"]).arg(&outside));
    let (inode, path, problem) = corrupt_error(&outside);
    assert_eq!((inode, path.as_str()), (inode_of("/hello"), "/hello"));
    assert!(problem.contains("outside the filesystem"), "{problem}");
    let error = open(&outside).block_owners(&[0, 1, 2]).unwrap_err();
    assert!(matches!(error, Ext4ReadError::Corrupt { .. }), "{error}");

    // A bad extent header magic in the extent tree block of /frag.
    let bad_tree = copy("tree.img");
    let tree_block = parse_stat(&debugfs_one(&image, "stat /frag"))
        .blocks
        .iter()
        .find(|(label, _, _)| label.starts_with("ETB"))
        .unwrap()
        .1;
    patch(&bad_tree, tree_block * 1024, &[0x12, 0x34]);
    let (inode, _, problem) = corrupt_error(&bad_tree);
    assert_eq!(inode, inode_of("/frag"));
    assert!(problem.contains("magic is 0x3412"), "{problem}");

    // A terabyte-sized file in an 8 MiB filesystem: hashing its holes would take hours.
    let huge = copy("huge.img");
    run(tool_command("debugfs").args(["-w", "-R", "sif /hello size 0x10000000000"]).arg(&huge));
    match open(&huge).entries() {
        Err(Ext4ReadError::TooLarge { inode, path, limit }) => {
            assert_eq!((inode, path.as_str()), (inode_of("/hello"), "/hello"));
            assert_eq!(limit, 16 * (8 << 20));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }

    // A feature the reader cannot read, and something that is not ext4 at all.
    let inline = copy("inline.img");
    run(tool_command("debugfs").args(["-w", "-R", "feature inline_data"]).arg(&inline));
    match Ext4Filesystem::open(File::open(&inline).unwrap(), 0, 8 << 20) {
        Err(Ext4ReadError::Unsupported { feature }) => assert_eq!(feature, "inline_data"),
        other => panic!("expected Unsupported, got {:?}", other.err()),
    }
    let zeros = Cursor::new(vec![0u8; 1 << 20]);
    let error = Ext4Filesystem::open(zeros, 0, 1 << 20).err().unwrap();
    assert!(matches!(error, Ext4ReadError::NotExt4 { .. }), "{error}");
    assert!(error.to_string().contains("magic"), "{error}");
    // A length shorter than the filesystem.
    let error = Ext4Filesystem::open(File::open(&image).unwrap(), 0, 4 << 20).err().unwrap();
    assert!(error.to_string().contains("do not fit"), "{error}");
}

#[test]
fn ext4_read_random_damage_never_panics_or_hangs() {
    let (_dir, image) = small_image();
    let clean = fs::read(&image).unwrap();
    // Aim at the metadata: every block the clean filesystem uses for something else than data.
    let blocks: Vec<u64> = (0..clean.len() as u64 / 1024).collect();
    let owners =
        Ext4Filesystem::open(Cursor::new(clean.clone()), 0, clean.len() as u64).unwrap().block_owners(&blocks).unwrap();
    let last_used_inode = Ext4Filesystem::open(Cursor::new(clean.clone()), 0, clean.len() as u64)
        .unwrap()
        .entries()
        .unwrap()
        .iter()
        .map(|entry| entry.inode)
        .max()
        .unwrap();
    let targets: Vec<u64> = owners
        .iter()
        .filter(|(_, owner)| match owner {
            BlockOwner::Unused | BlockOwner::Journal | BlockOwner::Unknown => false,
            // File data is not metadata; the slow symbolic link's block is read as such.
            BlockOwner::FileData { path } => path == b"/long",
            BlockOwner::InodeTable { first_inode, .. } => *first_inode <= last_used_inode,
            _ => true,
        })
        .map(|(block, _)| *block)
        .collect();
    assert!(targets.len() > 20, "{targets:?}");
    // More rounds or another seed, for a longer search: ICOS_EXT4_FUZZ_ROUNDS, ICOS_EXT4_FUZZ_SEED.
    let setting =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default);
    let rounds = setting("ICOS_EXT4_FUZZ_ROUNDS", 1000);
    let mut state = setting("ICOS_EXT4_FUZZ_SEED", 0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut image = clean.clone();
    for round in 0..rounds {
        image.copy_from_slice(&clean);
        let damaged = 1 + next() % 8;
        for _ in 0..damaged {
            // Mostly inside blocks that matter; sometimes the superblock's first bytes.
            let position = if next() % 5 == 0 {
                1024 + next() % 256
            } else {
                targets[(next() % targets.len() as u64) as usize] * 1024 + next() % 1024
            };
            let value = match next() % 4 {
                0 => 0,
                1 => 0xff,
                2 => (next() % 16) as u8,
                _ => next() as u8,
            };
            image[position as usize] = value;
        }
        let result =
            Ext4Filesystem::open(Cursor::new(image.clone()), 0, image.len() as u64).and_then(|mut filesystem| {
                filesystem.entries()?;
                filesystem.superblock_fields();
                filesystem.block_owners(&blocks)?;
                Ok(())
            });
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(error) => {
                let text = error.to_string();
                assert!(!text.is_empty(), "round {round}");
                // The variant's name.
                format!("{error:?}").split([' ', '{', '(']).next().unwrap().to_owned()
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    println!("outcomes of random damage: {outcomes:?}");
    // Some damage is harmless (a timestamp), some is caught as corruption.
    assert!(outcomes.contains_key("ok") && outcomes.contains_key("Corrupt"), "{outcomes:?}");
}

#[test]
fn ext4_read_file_follows_links_and_matches_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir_all(source.join("boot/nested")).unwrap();
    let kernel = pseudo_random(11, (3 << 20) + 17);
    fs::write(source.join("boot/vmlinuz-6.1.0"), &kernel).unwrap();
    fs::write(source.join("boot/nested/initrd.img-6.1.0"), pseudo_random(12, 70_000)).unwrap();
    let mut sparse = File::create(source.join("sparse")).unwrap();
    sparse.seek(SeekFrom::Start(5 << 20)).unwrap();
    sparse.write_all(b"end").unwrap();
    drop(sparse);
    // Links as Debian's kernel packages make them, and harder ones.
    symlink("boot/vmlinuz-6.1.0", source.join("vmlinuz")).unwrap();
    symlink("/boot/nested/../nested/initrd.img-6.1.0", source.join("initrd.img")).unwrap();
    symlink("boot/nested", source.join("dirlink")).unwrap();
    symlink("../../vmlinuz", source.join("boot/nested/up")).unwrap();
    symlink("loop", source.join("loop")).unwrap();
    symlink("/nowhere", source.join("dangling")).unwrap();
    let image = dir.path().join("fs.img");
    File::create(&image).unwrap().set_len(32 << 20).unwrap();
    run(tool_command("mke2fs").args(["-q", "-F", "-t", "ext4", "-d"]).arg(&source).arg(&image));

    let mut filesystem = open(&image);
    let mut read = |path: &[u8]| {
        let mut content = Vec::new();
        filesystem.read_file(path, &mut |bytes| content.extend_from_slice(bytes)).map(|()| content)
    };
    assert_eq!(read(b"/vmlinuz").unwrap(), kernel);
    assert_eq!(read(b"/boot/nested/up").unwrap(), kernel);
    let initrd = fs::read(source.join("boot/nested/initrd.img-6.1.0")).unwrap();
    assert_eq!(read(b"/initrd.img").unwrap(), initrd);
    assert_eq!(read(b"/dirlink/initrd.img-6.1.0").unwrap(), initrd);
    assert_eq!(read(b"//boot/./nested/../vmlinuz-6.1.0").unwrap(), kernel);
    assert_eq!(read(b"/sparse").unwrap(), fs::read(source.join("sparse")).unwrap());
    // The same bytes as debugfs dumps.
    let dumped = dir.path().join("dumped");
    debugfs(&image, &[format!("dump /boot/vmlinuz-6.1.0 {}", dumped.display()).into_bytes()], false);
    assert_eq!(fs::read(&dumped).unwrap(), kernel);

    for (path, message) in [
        (&b"/loop"[..], "more than 40 symbolic links"),
        (b"/dangling", "/ has no entry nowhere"),
        (b"/boot/missing", "/boot has no entry missing"),
        (b"/boot", "/boot is not a regular file"),
        (b"/vmlinuz/x", "/boot/vmlinuz-6.1.0 is not a directory"),
        (b"vmlinuz", "not absolute"),
    ] {
        let error = read(path).unwrap_err();
        assert!(matches!(error, Ext4ReadError::NotAFile { .. }), "{error}");
        assert!(error.to_string().contains(message), "{}: {error}", String::from_utf8_lossy(path));
    }
}
