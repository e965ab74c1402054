//! Helpers shared by the integration tests: the icos binary and the standard tools that check it.
#![allow(dead_code)]

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

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

/// Serves `bytes` on 127.0.0.1 over HTTP/1.1, with Range requests; the first transfer breaks off
/// after `cut` bytes (all of it when `cut` is the length). Returns the URL and the Range header of each request ("-" without one).
pub fn serve(bytes: Vec<u8>, cut: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/guestos-dev.bundle.tar", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = ranges.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut range = None;
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = Some(value.trim().trim_end_matches('-').parse::<usize>().unwrap());
                }
            }
            let first = seen.lock().unwrap().is_empty();
            seen.lock().unwrap().push(range.map_or("-".to_owned(), |from| format!("bytes={from}-")));
            let total = bytes.len();
            let (head, body) = match range {
                Some(from) => (
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{total}\r\nConnection: close\r\n\r\n",
                        total - from,
                        total - 1
                    ),
                    &bytes[from..],
                ),
                None => (format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"), &bytes[..]),
            };
            let body = if first { &body[..cut] } else { body };
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
        }
    });
    (url, ranges)
}

/// openssl, not icos, checks a release bundle's signature: GNU tar extracts `manifest.json` and
/// `manifest.json.sig` into `dir`, and `openssl pkeyutl -verify -rawin` checks the one over the
/// other's bytes with `public_key` (SPKI PEM).
pub fn assert_openssl_verifies_bundle(dir: &Path, bundle: &Path, public_key: &Path) {
    run(tool_command("tar").current_dir(dir).arg("-xf").arg(bundle).args(["manifest.json", "manifest.json.sig"]));
    let checked = run(tool_command("openssl")
        .current_dir(dir)
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(public_key)
        .args(["-rawin", "-in", "manifest.json", "-sigfile", "manifest.json.sig"]));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("Signature Verified Successfully"));
}
