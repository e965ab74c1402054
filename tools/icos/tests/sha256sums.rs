//! Runs the icos binary and checks what it writes with GNU coreutils' `sha256sum -c`.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{icos, tool_command};

fn run(command: &mut Command) -> Output {
    command.output().expect("cannot start the icos binary")
}

fn sha256sum_check(dir: &Path) -> Output {
    tool_command("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .expect("cannot run sha256sum")
}

#[test]
fn written_sums_pass_gnu_sha256sum_and_icos_check() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("disk-img.tar.zst"), vec![7u8; 3 << 20]).unwrap();
    fs::write(dir.path().join("update img.tar.zst"), b"update").unwrap();
    let output = run(icos()
        .args(["sha256sums", "write", "--output", "SHA256SUMS", "update img.tar.zst", "disk-img.tar.zst"])
        .current_dir(dir.path()));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let gnu = sha256sum_check(dir.path());
    assert!(gnu.status.success(), "{}", String::from_utf8_lossy(&gnu.stdout));
    assert_eq!(String::from_utf8_lossy(&gnu.stdout), "disk-img.tar.zst: OK\nupdate img.tar.zst: OK\n");

    let check = run(icos().args(["sha256sums", "check"]).arg(dir.path().join("SHA256SUMS")));
    assert_eq!(check.status.code(), Some(0));

    fs::write(dir.path().join("update img.tar.zst"), b"tampered").unwrap();
    assert!(!sha256sum_check(dir.path()).status.success());
    let check = run(icos().args(["sha256sums", "check"]).arg(dir.path().join("SHA256SUMS")));
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("update img.tar.zst: FAILED"));
}

#[test]
fn errors_exit_2_with_the_file_named_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        run(icos().args(["sha256sums", "write", "--output", "SHA256SUMS", "missing.img"]).current_dir(dir.path()));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.img"));
    assert!(!dir.path().join("SHA256SUMS").exists());
}
