//! Runs `icos package` / `icos unpack` and checks the packages with GNU tar and the zstd CLI.

mod common;

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{directory_entries, icos, run, tool_command};

const MIB: u64 = 1 << 20;

/// Data blocks (offset, byte) of a test image: 40 separate 4 KiB runs, more than the four map
/// entries of the main header, so extension headers are used; one run is shorter than a block.
fn data_runs() -> Vec<(u64, u8)> {
    (0..40).map(|index| (index * 3 * 4096 + 4096, index as u8 + 1)).collect()
}

/// Writes the test image with every byte written (dense) or only its data written (sparse).
fn write_image(path: &Path, size: u64, dense: bool) {
    let mut file = File::create(path).unwrap();
    if dense {
        let mut content = vec![0u8; size as usize];
        for (offset, value) in data_runs() {
            content[offset as usize..offset as usize + 4096].fill(value);
        }
        content[(size - 10) as usize] = 0xEE;
        file.write_all(&content).unwrap();
    } else {
        for (offset, value) in data_runs() {
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(&[value; 4096]).unwrap();
        }
        file.seek(SeekFrom::Start(size - 10)).unwrap();
        file.write_all(&[0xEE]).unwrap();
        file.set_len(size).unwrap();
    }
}

fn package(dir: &Path, output: &str, members: &[(&str, &Path)], extra: &[&str]) -> PathBuf {
    let mut command = icos();
    command.current_dir(dir).args(["package", "--output", output]).args(extra);
    for (name, path) in members {
        command.arg("--member").arg(format!("{name}={}", path.display()));
    }
    run(&mut command);
    dir.join(output)
}

/// Decompresses with the zstd CLI (checking the frame checksum) and extracts with GNU tar.
fn gnu_extract(archive: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    let tar = into.join("archive.tar");
    run(tool_command("zstd").args(["-q", "-d", "-o"]).arg(&tar).arg(archive));
    run(tool_command("tar").args(["--sparse", "-xf"]).arg(&tar).arg("-C").arg(into));
    fs::remove_file(tar).unwrap();
}

fn allocated_bytes(path: &Path) -> u64 {
    let output = run(tool_command("du").args(["--block-size=1"]).arg(path));
    let text = String::from_utf8(output.stdout).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

fn assert_same_content(first: &Path, second: &Path) {
    run(tool_command("cmp").arg(first).arg(second));
}

#[test]
fn gnu_tar_restores_update_img_members_exactly_and_sparse() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let boot = dir.path().join("boot.img");
    let root = dir.path().join("root.img");
    let version = dir.path().join("VERSION.TXT");
    write_image(&boot, 8 * MIB, true);
    write_image(&root, 64 * MIB + 1000, false);
    fs::write(&version, b"0.1.0-test\n").unwrap();
    let members = [("boot.img", boot.as_path()), ("root.img", root.as_path()), ("VERSION.TXT", version.as_path())];
    let archive = package(dir.path(), "update-img.tar.zst", &members, &["--threads", "2"]);

    let out = dir.path().join("gnu");
    gnu_extract(&archive, &out);
    assert_eq!(directory_entries(&out), ["VERSION.TXT", "boot.img", "root.img"]);
    for (name, original) in members {
        let extracted = out.join(name);
        assert_same_content(original, &extracted);
        assert_eq!(fs::metadata(&extracted).unwrap().len(), fs::metadata(original).unwrap().len());
    }
    for name in ["boot.img", "root.img"] {
        let extracted = out.join(name);
        let apparent = fs::metadata(&extracted).unwrap().len();
        assert!(allocated_bytes(&extracted) < apparent / 4, "{name} was not extracted sparse");
    }

    // Fixed metadata: numeric owner 0/0, mode 0644, mtime 0, members in the given order.
    let listing = run(tool_command("tar")
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .args(["--numeric-owner", "-tvf"])
        .arg(dir.path().join("update-img.tar.zst"))
        .arg("--use-compress-program=zstd"));
    let listing = String::from_utf8(listing.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    for (line, name) in lines.iter().zip(["boot.img", "root.img", "VERSION.TXT"]) {
        assert!(line.starts_with("-rw-r--r-- 0/0 "), "{line}");
        assert!(line.ends_with(&format!(" 1970-01-01 00:00 {name}")), "{line}");
    }
}

#[test]
fn map_and_bytes_do_not_depend_on_allocation_or_file_system() {
    let disk_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm (tmpfs) to compare file systems");
    let tmpfs_dir = tempfile::tempdir_in(shm).unwrap();
    let size = 32 * MIB;
    let mut archives = Vec::new();
    for dir in [disk_dir.path(), tmpfs_dir.path()] {
        for dense in [true, false] {
            let image = dir.join(if dense { "dense.img" } else { "sparse.img" });
            write_image(&image, size, dense);
            let output = format!("{}.tar.zst", if dense { "dense" } else { "sparse" });
            archives.push(fs::read(package(dir, &output, &[("disk.img", &image)], &[])).unwrap());
        }
        let dense = allocated_bytes(&dir.join("dense.img"));
        let sparse = allocated_bytes(&dir.join("sparse.img"));
        assert!(dense >= size && sparse < size / 4, "allocation did not differ: {dense} vs {sparse}");
    }
    assert!(archives.iter().all(|bytes| bytes == &archives[0]), "the archives differ");
}

/// 40 MiB of data that compresses (pseudo-random bytes from a 16-letter alphabet) with a zero
/// block in every 16: at level 3 zstd cuts it into several 8 MiB jobs, so worker threads matter.
fn write_busy_image(path: &Path) {
    let mut content = vec![0u8; 40 * MIB as usize];
    let mut state = 7u32;
    for (index, block) in content.chunks_mut(4096).enumerate() {
        if index % 16 == 5 {
            continue;
        }
        for byte in block {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *byte = b'a' + (state >> 28) as u8;
        }
    }
    fs::write(path, content).unwrap();
}

#[test]
fn threads_time_zone_umask_locale_and_cwd_do_not_change_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    write_busy_image(&image);
    let member = format!("disk.img={}", image.display());
    let mut outputs = Vec::new();
    for (index, threads) in ["1", "2", "4"].iter().enumerate() {
        let output = dir.path().join(format!("t{index}.tar.zst"));
        run(icos()
            .args(["package", "--level", "3", "--threads", threads, "--member", &member, "--output"])
            .arg(&output));
        outputs.push(output);
    }
    let cwd = dir.path().join("elsewhere");
    fs::create_dir(&cwd).unwrap();
    let output = dir.path().join("env.tar.zst");
    let script =
        format!("umask 077; exec \"$0\" package --level 3 --member '{member}' --output '{}'", output.display());
    run(Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(common::icos().get_program())
        .current_dir(&cwd)
        .env("TZ", "Pacific/Kiritimati")
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "tr_TR.UTF-8"));
    assert_eq!(fs::metadata(&output).unwrap().mode() & 0o777, 0o644);
    outputs.push(output);
    let first = fs::read(&outputs[0]).unwrap();
    for other in &outputs[1..] {
        assert!(fs::read(other).unwrap() == first, "{} differs from {}", other.display(), outputs[0].display());
    }
}

#[test]
fn a_partition_tzst_unpacks_with_icos_to_the_same_sparse_image() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let image = dir.path().join("esp.img");
    write_image(&image, 20 * MIB, true);
    let archive = package(dir.path(), "esp.tzst", &[("partition.img", &image)], &["--level", "3"]);
    run(tool_command("zstd").args(["-q", "-t"]).arg(&archive));
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let listed = run(icos().args(["unpack", "--input"]).arg(&archive).arg("--output-dir").arg(&out));
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "partition.img\n");
    let unpacked = out.join("partition.img");
    assert_same_content(&image, &unpacked);
    assert!(allocated_bytes(&unpacked) < 2 * MIB, "icos unpack did not leave holes");
}

#[test]
fn errors_exit_2_name_the_problem_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    fs::write(&image, b"data").unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["--member", "disk.img=missing.img"], "missing.img"),
        (&["--image-member", "disk.img=disk.img"], "disk.img: not a valid package"),
        (&["--image-member", "disk.img=missing.tzst"], "missing.tzst"),
        (&["--member", "disk.img=disk.img", "--member", "disk.img=disk.img"], "given twice"),
        (&["--member", "sub/disk.img=disk.img"], "plain file name"),
        (&["--member", "disk.img=disk.img", "--level", "23"], "zstd level 23"),
        (&["--member", "disk.img=disk.img", "--threads", "0"], "at least one worker"),
    ];
    for (args, expected) in cases {
        let output =
            icos().current_dir(dir.path()).args(["package", "--output", "out.tar.zst"]).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(directory_entries(dir.path()), ["disk.img"], "{args:?} left a file behind");
    }
}

#[test]
fn a_disk_from_a_package_holding_two_images_is_refused_naming_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("esp.img");
    write_image(&image, 2 * MIB, false);
    let two = package(dir.path(), "two.tzst", &[("partition.img", &image), ("other.img", &image)], &["--level", "1"]);
    fs::write(dir.path().join("p.csv"), "esp, 2048, 8192, U, , ESP\n").unwrap();
    let output = icos()
        .current_dir(dir.path())
        .args(["disk", "--partitions", "p.csv", "--size", "8M", "--seed", "8d1c0a6e-5f7b-4c2d-9e3a-1b2c3d4e5f60"])
        .args(["--package", "disk-img.tar.zst", "--image"])
        .arg(format!("esp={}", two.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("two.tzst") && stderr.contains("more than one member"), "{stderr}");
    assert_eq!(directory_entries(dir.path()), ["esp.img", "p.csv", "two.tzst"]);
}

#[test]
fn offsets_beyond_8_gib_survive_gnu_tar() {
    // Octal header fields stop at 8 GiB; larger sparse offsets and sizes use base-256.
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let image = dir.path().join("disk.img");
    let size = 20u64 << 30;
    let far = 17u64 << 30;
    let file = File::create(&image).unwrap();
    file.write_all_at(b"near", 4096).unwrap();
    file.write_all_at(b"far away", far).unwrap();
    file.set_len(size).unwrap();
    let archive = package(dir.path(), "disk-img.tar.zst", &[("disk.img", &image)], &[]);
    let out = dir.path().join("gnu");
    gnu_extract(&archive, &out);
    let extracted = File::open(out.join("disk.img")).unwrap();
    assert_eq!(extracted.metadata().unwrap().len(), size);
    let mut bytes = [0u8; 4096];
    extracted.read_exact_at(&mut bytes, far).unwrap();
    assert_eq!(&bytes[..8], b"far away");
    assert!(bytes[8..].iter().all(|&byte| byte == 0));
    extracted.read_exact_at(&mut bytes, 4096).unwrap();
    assert_eq!(&bytes[..4], b"near");
    assert!(allocated_bytes(&out.join("disk.img")) < 1 << 20);
}
