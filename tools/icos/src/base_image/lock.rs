//! Package lists and locks, the two kinds of text file in an OS's context directory.
//!
//! A package list (`packages.common`, `packages.<variant>`) names what Dockerfile.base installs:
//! one Debian package name a line, `#` starts a comment. A lock (`packages.<variant>.lock`) is
//! generated: every package installed in the base image as `name=version`, sorted by name, after a
//! comment header. Both are parsed strictly, so that a version pasted into a list, a merge that
//! duplicated a line or a hand edit that broke the order fails with the file and line instead of
//! building something else.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::dpkg::check_version;
use super::BaseImageError;
use crate::output::write_atomically;

/// A package that a list asks for, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub name: String,
    pub list: PathBuf,
    pub line: usize,
}

/// Every package of an image: name to version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    pub packages: BTreeMap<String, String>,
}

/// One package whose version differs between two locks; `None` where a lock lacks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// Checks a package name against Debian policy (5.6.1): lowercase letters, digits, `+`, `-` and
/// `.`, at least two characters, starting with a letter or digit.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let valid = name.len() >= 2
        && name.bytes().next().is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"+-.".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a Debian package name (lowercase letters, digits, '+', '-' and '.', at least two)"
        ))
    }
}

fn syntax(path: &Path, line: usize, problem: String) -> BaseImageError {
    BaseImageError::Syntax { path: path.to_owned(), line, problem }
}

/// Parses the package list `text`; `path` names it in errors and in the result.
pub fn parse_package_list(text: &str, path: &Path) -> Result<Vec<Requested>, BaseImageError> {
    let mut requested: Vec<Requested> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let name = line.split('#').next().unwrap_or_default().trim();
        if name.is_empty() {
            continue;
        }
        if name.contains(char::is_whitespace) {
            return Err(syntax(path, number, format!("{name:?}: one package name a line")));
        }
        if name.contains('=') {
            return Err(syntax(
                path,
                number,
                format!("{name:?}: a list names packages only; versions are in the lock (ci/base-images/rebuild)"),
            ));
        }
        check_name(name).map_err(|problem| syntax(path, number, problem))?;
        if let Some(first) = requested.iter().find(|other| other.name == name) {
            return Err(syntax(path, number, format!("{name} is listed twice (first on line {})", first.line)));
        }
        requested.push(Requested { name: name.to_owned(), list: path.to_owned(), line: number });
    }
    Ok(requested)
}

/// Reads the package list `path`.
pub fn read_package_list(path: &Path) -> Result<Vec<Requested>, BaseImageError> {
    let text = fs::read_to_string(path).map_err(|source| BaseImageError::Read { path: path.to_owned(), source })?;
    parse_package_list(&text, path)
}

/// The packages of `lists` in order, each once: the lists of one image must not overlap, so that
/// deleting a name from one of them removes the package.
pub fn merge_package_lists(lists: Vec<Vec<Requested>>) -> Result<Vec<Requested>, BaseImageError> {
    let mut merged: Vec<Requested> = Vec::new();
    for requested in lists.into_iter().flatten() {
        if let Some(first) = merged.iter().find(|other| other.name == requested.name) {
            return Err(syntax(
                &requested.list,
                requested.line,
                format!("{} is listed in {}:{} already", requested.name, first.list.display(), first.line),
            ));
        }
        merged.push(requested);
    }
    Ok(merged)
}

/// Parses the lock `text`; `path` names it in errors.
pub fn parse_lock(text: &str, path: &Path) -> Result<Lock, BaseImageError> {
    let mut lock = Lock::default();
    let mut previous: Option<(String, usize)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, version) =
            line.split_once('=').ok_or_else(|| syntax(path, number, format!("{line:?} is not name=version")))?;
        check_name(name).map_err(|problem| syntax(path, number, problem))?;
        check_version(version).map_err(|problem| syntax(path, number, format!("{name}: {problem}")))?;
        if let Some((previous_name, previous_line)) = &previous {
            if name == previous_name {
                return Err(syntax(path, number, format!("{name} is locked twice (first on line {previous_line})")));
            }
            if name < previous_name.as_str() {
                return Err(syntax(
                    path,
                    number,
                    format!("{name} comes after {previous_name} (line {previous_line}): a lock is sorted by name"),
                ));
            }
        }
        lock.packages.insert(name.to_owned(), version.to_owned());
        previous = Some((name.to_owned(), number));
    }
    Ok(lock)
}

/// Reads the lock `path`.
pub fn read_lock(path: &Path) -> Result<Lock, BaseImageError> {
    match fs::read_to_string(path) {
        Ok(text) => parse_lock(&text, path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(BaseImageError::NoLock { path: path.to_owned() }),
        Err(source) => Err(BaseImageError::Read { path: path.to_owned(), source }),
    }
}

/// The text of the lock of `image` ("the base image guestos-base-dev"): a header that says where
/// it comes from (`generator`, the command that rewrites it), then one `name=version` line per
/// package, sorted by name.
pub fn format_lock(lock: &Lock, image: &str, generator: &str) -> String {
    let mut text = format!(
        "# Every package installed in {image}, as name=version.\n\
         # Generated by {generator}: do not edit.\n"
    );
    for (name, version) in &lock.packages {
        text.push_str(&format!("{name}={version}\n"));
    }
    text
}

/// Writes the lock file `path`, all or nothing.
pub fn write_lock(path: &Path, lock: &Lock, image: &str, generator: &str) -> Result<(), BaseImageError> {
    let text = format_lock(lock, image, generator);
    write_atomically(path, |file| {
        io::Write::write_all(file, text.as_bytes())
            .map_err(|source| BaseImageError::Write { path: path.to_owned(), source })
    })
}

/// `name=version` for every requested package, the version taken from `lock` (read from
/// `lock_path`): what apt installs when it builds a locked image.
pub fn pinned_packages(requested: &[Requested], lock: &Lock, lock_path: &Path) -> Result<Vec<String>, BaseImageError> {
    requested
        .iter()
        .map(|package| match lock.packages.get(&package.name) {
            Some(version) => Ok(format!("{}={version}", package.name)),
            None => Err(BaseImageError::NotLocked { package: package.clone(), lock: lock_path.to_owned() }),
        })
        .collect()
}

/// The packages whose versions differ between `old` and `new`, by name.
pub fn diff(old: &Lock, new: &Lock) -> Vec<Difference> {
    let mut names: Vec<&String> = old.packages.keys().chain(new.packages.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (old, new) = (old.packages.get(name), new.packages.get(name));
            (old != new).then(|| Difference { name: name.clone(), old: old.cloned(), new: new.cloned() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(pairs: &[(&str, &str)]) -> Lock {
        Lock { packages: pairs.iter().map(|(name, version)| (name.to_string(), version.to_string())).collect() }
    }

    fn list(text: &str) -> Result<Vec<Requested>, BaseImageError> {
        parse_package_list(text, Path::new("packages.common"))
    }

    #[test]
    fn lists_hold_names_comments_and_blank_lines() {
        let requested = list("# The kernel.\nlinux-image-amd64\n\n  systemd-sysv  # init\nlibstdc++6\n").unwrap();
        let names: Vec<(&str, usize)> = requested.iter().map(|package| (package.name.as_str(), package.line)).collect();
        assert_eq!(names, [("linux-image-amd64", 2), ("systemd-sysv", 4), ("libstdc++6", 5)]);
        assert_eq!(requested[0].list, Path::new("packages.common"));
        assert!(list("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn bad_lists_name_the_file_and_line() {
        for (text, expected) in [
            ("udev\nsystemd sysv\n", "packages.common:2: \"systemd sysv\": one package name a line"),
            ("udev=257-1\n", "packages.common:1: \"udev=257-1\": a list names packages only"),
            ("\n\nUdev\n", "packages.common:3: \"Udev\" is not a Debian package name"),
            ("x\n", "packages.common:1: \"x\" is not a Debian package name"),
            ("-x\n", "packages.common:1: \"-x\""),
            ("kmod\ndbus\nkmod # again\n", "packages.common:3: kmod is listed twice (first on line 1)"),
        ] {
            let error = list(text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn merged_lists_must_not_overlap() {
        let common = list("udev\nless\n").unwrap();
        let dev = parse_package_list("strace\nless\n", Path::new("packages.dev")).unwrap();
        let error = merge_package_lists(vec![common.clone(), dev]).unwrap_err().to_string();
        assert_eq!(error, "packages.dev:2: less is listed in packages.common:2 already");
        let extra = parse_package_list("strace\n", Path::new("packages.dev")).unwrap();
        let merged = merge_package_lists(vec![common, extra]).unwrap();
        assert_eq!(merged.iter().map(|package| package.name.as_str()).collect::<Vec<_>>(), ["udev", "less", "strace"]);
    }

    #[test]
    fn locks_round_trip_through_their_text() {
        let original = lock(&[("libc6", "2.41-12"), ("base-files", "13.8"), ("sysvinit-utils", "1:3.14-4")]);
        let text = format_lock(
            &original,
            "the base image guestos-base-dev",
            "ci/base-images/rebuild (icos base-image build --relock)",
        );
        assert_eq!(
            text,
            "# Every package installed in the base image guestos-base-dev, as name=version.\n\
             # Generated by ci/base-images/rebuild (icos base-image build --relock): do not edit.\n\
             base-files=13.8\nlibc6=2.41-12\nsysvinit-utils=1:3.14-4\n"
        );
        assert_eq!(parse_lock(&text, Path::new("packages.dev.lock")).unwrap(), original);
        assert_eq!(parse_lock("", Path::new("empty.lock")).unwrap(), Lock::default());
    }

    #[test]
    fn bad_locks_name_the_file_and_line() {
        for (text, expected) in [
            ("# header\nlibc6 2.41-12\n", "packages.dev.lock:2: \"libc6 2.41-12\" is not name=version"),
            ("libc6=\n", "packages.dev.lock:1: libc6: the version is empty"),
            ("libc6=2.41 12\n", "packages.dev.lock:1: libc6: \"2.41 12\" is not a Debian version"),
            ("libc6=x:2.41\n", "packages.dev.lock:1: libc6: \"x:2.41\" is not a Debian version"),
            ("LIBC6=2.41\n", "packages.dev.lock:1: \"LIBC6\" is not a Debian package name"),
            ("a1=1\nlibc6=1\n\nlibc6=2\n", "packages.dev.lock:4: libc6 is locked twice (first on line 2)"),
            ("libc6=1\nbase-files=2\n", "packages.dev.lock:2: base-files comes after libc6 (line 1)"),
            ("<<<<<<< HEAD\n", "packages.dev.lock:1:"),
        ] {
            let error = parse_lock(text, Path::new("packages.dev.lock")).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn requested_packages_take_their_versions_from_the_lock() {
        let requested = list("udev\nkmod\n").unwrap();
        let locked = lock(&[("kmod", "34.2-2"), ("libc6", "2.41-12"), ("udev", "257.8-1")]);
        assert_eq!(pinned_packages(&requested, &locked, Path::new("p.lock")).unwrap(), ["udev=257.8-1", "kmod=34.2-2"]);
        let error = pinned_packages(&requested, &lock(&[("udev", "1")]), Path::new("p.lock")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "kmod (packages.common:2) is not in the lock p.lock: re-pin with ci/base-images/rebuild"
        );
    }

    #[test]
    fn diff_lists_every_package_whose_version_differs() {
        let old = lock(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let new = lock(&[("b", "2"), ("c", "1"), ("d", "1")]);
        let some = |text: &str| Some(text.to_owned());
        assert_eq!(
            diff(&old, &new),
            [
                Difference { name: "a".into(), old: some("1"), new: None },
                Difference { name: "b".into(), old: some("1"), new: some("2") },
                Difference { name: "d".into(), old: None, new: some("1") },
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }
}
