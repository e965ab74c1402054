//! `SHA256SUMS` files in the format of GNU `sha256sum`: one `<hex digest>  <file name>` line per
//! published file, sorted by name, so that `sha256sum -c SHA256SUMS` checks them too.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::io_error::PathIoError;
use crate::output::{write_atomically, OutputError};

#[derive(Debug, thiserror::Error)]
pub enum Sha256SumsError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{path} is not a file path: it has no file name to list")]
    NoFileName { path: PathBuf },
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{path}: the file name is not valid UTF-8")]
    NonUtf8Name { path: PathBuf },
    #[error("{path}: a file name with a newline or backslash cannot be listed in SHA256SUMS")]
    UnlistableName { path: PathBuf },
    #[error("{first} and {second} have the same file name; SHA256SUMS lists names only")]
    DuplicateName { first: PathBuf, second: PathBuf },
    #[error("{path}:{line}: {problem}")]
    Malformed { path: PathBuf, line: usize, problem: String },
}

/// SHA-256 of a file's content as lowercase hex, read as a stream.
pub fn sha256_file(path: &Path) -> Result<String, Sha256SumsError> {
    Ok(crate::hashing::hex(&sha256_file_digest(path)?))
}

/// SHA-256 of a file's content, read as a stream.
pub fn sha256_file_digest(path: &Path) -> Result<[u8; 32], Sha256SumsError> {
    let mut file = File::open(path).map_err(PathIoError::with("read", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let count = file.read(&mut buffer).map_err(PathIoError::with("read", path))?;
        if count == 0 {
            break;
        }
        hasher.update(&buffer[..count]);
    }
    Ok(hasher.finalize().into())
}

/// Writes `output` listing `files` by file name, sorted. Returns the (name, digest) pairs written.
pub fn write_sha256sums(output: &Path, files: &[PathBuf]) -> Result<Vec<(String, String)>, Sha256SumsError> {
    let mut by_name: BTreeMap<String, &PathBuf> = BTreeMap::new();
    for path in files {
        let name = path
            .file_name()
            .ok_or_else(|| Sha256SumsError::NoFileName { path: path.clone() })?
            .to_str()
            .ok_or_else(|| Sha256SumsError::NonUtf8Name { path: path.clone() })?;
        if name.contains(['\n', '\r', '\\']) {
            return Err(Sha256SumsError::UnlistableName { path: path.clone() });
        }
        if let Some(first) = by_name.insert(name.to_owned(), path) {
            return Err(Sha256SumsError::DuplicateName { first: first.clone(), second: path.clone() });
        }
    }
    let entries = by_name
        .into_iter()
        .map(|(name, path)| Ok((name, sha256_file(path)?)))
        .collect::<Result<Vec<_>, Sha256SumsError>>()?;
    write_atomically(output, |file| {
        let mut text = String::new();
        for (name, digest) in &entries {
            text.push_str(&format!("{digest}  {name}\n"));
        }
        file.write_all(text.as_bytes())
            .map_err(|source| Sha256SumsError::from(PathIoError::with("write", output)(source)))
    })?;
    Ok(entries)
}

/// The verdict on one file listed in a `SHA256SUMS` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    Mismatch { actual: String },
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFile {
    pub name: String,
    pub expected: String,
    pub status: CheckStatus,
}

/// Parses one line: 64 hex digits, a space, a space or `*` (binary mode), the file name.
fn parse_line(line: &str) -> Result<(String, String), String> {
    let digest = line.get(..64).ok_or("expected a 64-digit SHA-256 followed by a file name")?;
    if !digest.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(format!("{digest:?} is not a hexadecimal SHA-256"));
    }
    let name = match line.get(64..66) {
        Some("  ") | Some(" *") => &line[66..],
        _ => return Err("expected two spaces (or \" *\") between digest and file name".into()),
    };
    if name.is_empty() {
        return Err("the file name is missing".into());
    }
    Ok((digest.to_ascii_lowercase(), name.to_owned()))
}

/// Checks every file listed in `sums` against the files next to it.
pub fn check_sha256sums(sums: &Path) -> Result<Vec<CheckedFile>, Sha256SumsError> {
    check_sha256sums_in(sums, sums.parent().unwrap_or(Path::new(".")))
}

/// Checks every file listed in `sums` against the files of the same name in `dir` (a rebuild
/// checked against published hashes).
pub fn check_sha256sums_in(sums: &Path, dir: &Path) -> Result<Vec<CheckedFile>, Sha256SumsError> {
    let file = File::open(sums).map_err(PathIoError::with("read", sums))?;
    let mut checked = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let malformed =
            |problem: String| Sha256SumsError::Malformed { path: sums.to_owned(), line: index + 1, problem };
        let line = line.map_err(|error| malformed(error.to_string()))?;
        if line.is_empty() {
            continue;
        }
        let (expected, name) = parse_line(&line).map_err(malformed)?;
        if name.contains('/') || name == "." || name == ".." {
            return Err(malformed(format!("{name:?} is not a plain file name")));
        }
        let path = dir.join(&name);
        let status = if !path.exists() {
            CheckStatus::Missing
        } else {
            let actual = sha256_file(&path)?;
            if actual == expected {
                CheckStatus::Ok
            } else {
                CheckStatus::Mismatch { actual }
            }
        };
        checked.push(CheckedFile { name, expected, status });
    }
    if checked.is_empty() {
        return Err(Sha256SumsError::Malformed { path: sums.to_owned(), line: 0, problem: "lists no files".into() });
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    // SHA-256 of "abc", from FIPS 180-2, appendix B.1.
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn hashes_a_file_by_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), ABC);
    }

    #[test]
    fn writes_sorted_sha256sum_format_and_checks_it() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b.img");
        let a = dir.path().join("a file.img");
        fs::write(&b, b"abc").unwrap();
        fs::write(&a, b"").unwrap();
        let sums = dir.path().join("SHA256SUMS");
        write_sha256sums(&sums, &[b.clone(), a]).unwrap();
        let text = fs::read_to_string(&sums).unwrap();
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(text, format!("{empty}  a file.img\n{ABC}  b.img\n"));
        let report = check_sha256sums(&sums).unwrap();
        assert!(report.iter().all(|file| file.status == CheckStatus::Ok), "{report:?}");

        fs::write(&b, b"abd").unwrap();
        let report = check_sha256sums(&sums).unwrap();
        assert!(matches!(report[1].status, CheckStatus::Mismatch { .. }), "{report:?}");
        fs::remove_file(&b).unwrap();
        assert_eq!(check_sha256sums(&sums).unwrap()[1].status, CheckStatus::Missing);
    }

    #[test]
    fn refuses_duplicate_and_unlistable_names_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let first = dir.path().join("x");
        let second = dir.path().join("sub/x");
        fs::write(&first, b"1").unwrap();
        fs::write(&second, b"2").unwrap();
        let sums = dir.path().join("SHA256SUMS");
        let error = write_sha256sums(&sums, &[first, second]).unwrap_err();
        assert!(matches!(error, Sha256SumsError::DuplicateName { .. }), "{error}");
        let newline = dir.path().join("a\nb");
        fs::write(&newline, b"").unwrap();
        let error = write_sha256sums(&sums, &[newline]).unwrap_err();
        assert!(matches!(error, Sha256SumsError::UnlistableName { .. }), "{error}");
        assert!(!sums.exists());
    }

    #[test]
    fn missing_input_names_the_file_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sums = dir.path().join("SHA256SUMS");
        let error = write_sha256sums(&sums, &[dir.path().join("absent.img")]).unwrap_err();
        assert!(error.to_string().contains("absent.img"), "{error}");
        assert!(!sums.exists());
    }

    #[test]
    fn malformed_lines_are_reported_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let sums = dir.path().join("SHA256SUMS");
        fs::write(&sums, format!("{ABC}  ok\nnot a digest\n")).unwrap();
        fs::write(dir.path().join("ok"), b"abc").unwrap();
        let error = check_sha256sums(&sums).unwrap_err().to_string();
        assert!(error.contains("SHA256SUMS:2:"), "{error}");
        fs::write(&sums, format!("{ABC}  ../escape\n")).unwrap();
        let error = check_sha256sums(&sums).unwrap_err().to_string();
        assert!(error.contains("not a plain file name"), "{error}");
    }
}
