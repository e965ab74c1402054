//! Helpers shared by the integration tests: the icos binary and the standard tools that check it.
#![allow(dead_code)]

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A command running the icos binary under test.
pub fn icos() -> Command {
    // Cargo sets this for integration tests; the Bazel rust_test sets it from the icos binary.
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_icos"));
    Command::new(fs::canonicalize(&binary).unwrap_or(binary))
}

/// The path of a standard tool such as `e2fsck` or `sfdisk`. Bazel tests run with a strict PATH
/// that lacks the sbin directories where these live, so those are searched too.
pub fn tool(name: &str) -> PathBuf {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("the tool {name} is not installed (searched PATH, /usr/sbin, /sbin)"))
}

/// A command running the standard tool `name`.
pub fn tool_command(name: &str) -> Command {
    Command::new(tool(name))
}

/// The names in `dir`, sorted: lets a test prove that a failure left no file behind.
pub fn directory_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// One PAX extended header record: "<length> <key>=<value>\n", the length counting itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
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

/// Runs `command` and returns its output; panics with both streams unless it succeeds.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().expect("cannot start a command");
    assert!(
        output.status.success(),
        "{:?} failed: {}{}",
        command,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The value of field `name` in the output of `dumpe2fs -h` (such as "Filesystem UUID").
pub fn dumpe2fs_field(header: &str, name: &str) -> String {
    header
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {header}"))
        .trim()
        .to_owned()
}
