//! What dpkg says is installed in an image, read from `var/lib/dpkg/status` inside its canonical
//! root filesystem tar as the tar streams by (nothing is unpacked), and Debian version strings:
//! their syntax, and their order as dpkg defines it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::lock::{check_name, Lock};
use super::BaseImageError;
use crate::oci::layout::Layout;
use crate::rootfs::path::normalize;
use crate::rootfs::stream::Section;

const STATUS: &[u8] = b"var/lib/dpkg/status";

/// Checks the syntax of a Debian version (policy 5.6.12): `[epoch:]upstream[-revision]` with a
/// numeric epoch, in letters, digits and `.+~:-`.
pub(crate) fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty() {
        return Err("the version is empty".into());
    }
    let characters = version.bytes().all(|byte| byte.is_ascii_alphanumeric() || b".+~:-".contains(&byte));
    let epoch = version.split_once(':').is_none_or(|(epoch, rest)| {
        !epoch.is_empty() && epoch.bytes().all(|byte| byte.is_ascii_digit()) && !rest.is_empty()
    });
    if characters && epoch {
        Ok(())
    } else {
        Err(format!("{version:?} is not a Debian version"))
    }
}

/// The weight of one character in dpkg's comparison of non-digit parts: `~` sorts before
/// everything, even the end of the part, and letters sort before other characters.
fn weight(byte: Option<u8>) -> i32 {
    match byte {
        None => 0,
        Some(byte) if byte.is_ascii_digit() => 0,
        Some(byte) if byte.is_ascii_alphabetic() => i32::from(byte),
        Some(b'~') => -1,
        Some(byte) => i32::from(byte) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit parts, compared by [`weight`], and digit parts,
/// compared as numbers.
fn compare_part(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let digit = |text: &[u8], at: usize| text.get(at).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let order = weight(a.get(i).copied()).cmp(&weight(b.get(j).copied()));
            if order != Ordering::Equal {
                return order;
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_difference = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_difference == Ordering::Equal {
                first_difference = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_difference != Ordering::Equal {
            return first_difference;
        }
    }
    Ordering::Equal
}

/// Epoch (0 when absent), upstream version and revision ("" when absent).
fn split_version(version: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match version.split_once(':') {
        // A valid epoch (see `check_version`) is all digits; a longer one than u64 holds sorts last.
        Some((epoch, rest)) => (epoch.parse().unwrap_or(u64::MAX), rest),
        None => (0, version),
    };
    let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
    (epoch, upstream, revision)
}

/// Orders two Debian versions as `dpkg --compare-versions` does.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (epoch_a, upstream_a, revision_a) = split_version(a);
    let (epoch_b, upstream_b, revision_b) = split_version(b);
    epoch_a
        .cmp(&epoch_b)
        .then_with(|| compare_part(upstream_a.as_bytes(), upstream_b.as_bytes()))
        .then_with(|| compare_part(revision_a.as_bytes(), revision_b.as_bytes()))
}

/// The fields of one status stanza that say what is installed, with the line it starts on.
#[derive(Default)]
struct Stanza<'a> {
    line: usize,
    package: Option<(&'a str, usize)>,
    version: Option<(&'a str, usize)>,
    status: Option<&'a str>,
}

/// The installed packages of the dpkg status file `text` (a Debian control file: stanzas of
/// `Field: value` lines, continuation lines indented, separated by blank lines): those whose
/// `Status` is `install ok installed`. Packages that are absent (`not-installed`) or leave only
/// configuration files behind do not count; a package in any other state (half-installed,
/// unpacked, ...) means the image is broken, and is an error. `path` names the image in errors.
pub fn parse_status(text: &str, path: &Path) -> Result<Lock, BaseImageError> {
    let error = |line: usize, problem: String| BaseImageError::Status { path: path.to_owned(), line, problem };
    let mut lock = Lock::default();
    let mut first_lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut stanza = Stanza::default();
    let mut finish = |stanza: Stanza<'_>| -> Result<(), BaseImageError> {
        let Some(status) = stanza.status else {
            return Err(error(stanza.line, "the stanza has no Status field".into()));
        };
        let Some((package, package_line)) = stanza.package else {
            return Err(error(stanza.line, "the stanza has no Package field".into()));
        };
        match status.split_whitespace().collect::<Vec<_>>().as_slice() {
            [_, "ok", "installed"] => {}
            [_, "ok", "not-installed" | "config-files"] => return Ok(()),
            _ => return Err(error(stanza.line, format!("{package} is not properly installed: Status: {status}"))),
        }
        check_name(package).map_err(|problem| error(package_line, problem))?;
        let (version, version_line) =
            stanza.version.ok_or_else(|| error(stanza.line, format!("{package} is installed without a Version")))?;
        check_version(version).map_err(|problem| error(version_line, format!("{package}: {problem}")))?;
        if let Some(first) = first_lines.insert(package.to_owned(), stanza.line) {
            return Err(error(
                stanza.line,
                format!("{package} is installed twice (first at line {first}): multi-arch packages are not supported"),
            ));
        }
        lock.packages.insert(package.to_owned(), version.to_owned());
        Ok(())
    };
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            if stanza.line != 0 {
                finish(std::mem::take(&mut stanza))?;
            }
            continue;
        }
        if stanza.line == 0 {
            stanza.line = number;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let (field, value) =
            line.split_once(':').ok_or_else(|| error(number, format!("{line:?} is not a Field: value line")))?;
        let value = value.trim();
        match field {
            "Package" => stanza.package = Some((value, number)),
            "Version" => stanza.version = Some((value, number)),
            "Status" => stanza.status = Some(value),
            _ => {}
        }
    }
    if stanza.line != 0 {
        finish(stanza)?;
    }
    Ok(lock)
}

/// The installed packages of the root filesystem tar `tar` (a canonical tar, or any tar with the
/// status file as a regular member). `path` names it in errors.
pub fn installed_in_tar(tar: impl Read, path: &Path) -> Result<Lock, BaseImageError> {
    let image_error = |problem: String| BaseImageError::Image { path: path.to_owned(), problem };
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().map_err(|error| image_error(format!("not a valid tar: {error}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|error| image_error(format!("not a valid tar: {error}")))?;
        if normalize(&entry.path_bytes()).ok().as_deref() != Some(STATUS) {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(image_error("/var/lib/dpkg/status is not a regular file".into()));
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|error| image_error(format!("cannot read /var/lib/dpkg/status: {error}")))?;
        // Debian control files are UTF-8; a stray byte could only be in a description, which is
        // not read.
        return parse_status(&String::from_utf8_lossy(&bytes), path);
    }
    Err(image_error("no /var/lib/dpkg/status: not a Debian root filesystem".into()))
}

/// The installed packages of the single-layer OCI archive `archive` (as `oci::write_archive`
/// writes it, the layer is the canonical root filesystem tar as it is).
pub fn installed_in_archive(archive: &Path) -> Result<Lock, BaseImageError> {
    let file = File::open(archive).map_err(|source| BaseImageError::Read { path: archive.to_owned(), source })?;
    let layout = Layout::read(&file, archive)?;
    match layout.layers()?.as_slice() {
        [layer] => installed_in_tar(Section::new(&file, layer.offset, layer.size), archive),
        layers => Err(BaseImageError::Image {
            path: archive.to_owned(),
            problem: format!("{} layers: a base image has one (the canonical root filesystem)", layers.len()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_TEXT: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.41-12
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: old-config
Status: deinstall ok config-files
Version: 1.0-1

Package: sysvinit-utils
Status: install ok installed
Version: 3.14-4
Conffiles:
 /etc/init.d/rc 0123456789abcdef

Package: gone
Status: purge ok not-installed
";

    fn parse(text: &str) -> Result<Lock, BaseImageError> {
        parse_status(text, Path::new("image.oci.tar"))
    }

    fn names_and_versions(lock: &Lock) -> Vec<(&str, &str)> {
        lock.packages.iter().map(|(name, version)| (name.as_str(), version.as_str())).collect()
    }

    #[test]
    fn only_installed_packages_count() {
        let lock = parse(STATUS_TEXT).unwrap();
        assert_eq!(names_and_versions(&lock), [("libc6", "2.41-12"), ("sysvinit-utils", "3.14-4")]);
        // Without the final newline, with several blank lines, with CRLF-free whitespace lines.
        let lock = parse("\n\nPackage: a1\nVersion: 1\nStatus: install ok installed\n \n\n").unwrap();
        assert_eq!(names_and_versions(&lock), [("a1", "1")]);
        assert_eq!(parse("").unwrap(), Lock::default());
    }

    #[test]
    fn bad_status_files_name_the_line() {
        for (text, expected) in [
            ("Package: a1\nVersion: 1\n", "image.oci.tar: var/lib/dpkg/status:1: the stanza has no Status field"),
            ("\nVersion: 1\nStatus: install ok installed\n", "status:2: the stanza has no Package field"),
            ("Package: a1\nStatus: install ok installed\n", "status:1: a1 is installed without a Version"),
            ("Package: a1\nStatus: install ok installed\nVersion: 1 2\n", "status:3: a1: \"1 2\" is not a Debian"),
            ("Package: a1\nStatus: install ok half-configured\nVersion: 1\n", "status:1: a1 is not properly installed"),
            ("Package: a1\nbroken line\n", "status:2: \"broken line\" is not a Field: value line"),
            (
                "Package: a1\nStatus: install ok installed\nVersion: 1\n\n\
                 Package: a1\nStatus: install ok installed\nVersion: 1\n",
                "status:5: a1 is installed twice (first at line 1)",
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    fn tar_with(members: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data) in members {
            let mut header = tar::Header::new_ustar();
            header.set_path(name).unwrap();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn reads_the_status_file_from_a_tar_stream() {
        let tar = tar_with(&[
            ("./", tar::EntryType::Directory, b""),
            ("./etc/motd", tar::EntryType::Regular, b"hello"),
            ("./var/lib/dpkg/status", tar::EntryType::Regular, STATUS_TEXT.as_bytes()),
            ("./var/log/", tar::EntryType::Directory, b""),
        ]);
        let lock = installed_in_tar(tar.as_slice(), Path::new("rootfs.tar")).unwrap();
        assert_eq!(names_and_versions(&lock), [("libc6", "2.41-12"), ("sysvinit-utils", "3.14-4")]);
        // A plain tar (mmdebstrap's) has no ./ prefix.
        let plain = tar_with(&[("var/lib/dpkg/status", tar::EntryType::Regular, STATUS_TEXT.as_bytes())]);
        assert_eq!(installed_in_tar(plain.as_slice(), Path::new("rootfs.tar")).unwrap(), lock);
    }

    #[test]
    fn a_tar_without_a_status_file_is_an_error() {
        let error = installed_in_tar(
            tar_with(&[("./etc/motd", tar::EntryType::Regular, b"hi")]).as_slice(),
            Path::new("r.tar"),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "r.tar: no /var/lib/dpkg/status: not a Debian root filesystem");
        let link = tar_with(&[("./var/lib/dpkg/status", tar::EntryType::Symlink, b"")]);
        let error = installed_in_tar(link.as_slice(), Path::new("r.tar")).unwrap_err();
        assert_eq!(error.to_string(), "r.tar: /var/lib/dpkg/status is not a regular file");
        let error = installed_in_tar(&b"not a tar at all"[..], Path::new("r.tar")).unwrap_err();
        assert!(error.to_string().starts_with("r.tar: not a valid tar"), "{error}");
    }

    #[test]
    fn versions_compare_as_dpkg_compares_them() {
        use Ordering::{Equal, Greater, Less};
        for (a, b, expected) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal),
            ("1:1.0", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1.0-1", "1.0-1+deb13u1", Less),
            ("2.41-12", "2.41-9", Greater),
            ("1.2.10", "1.2.9", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0+", Less),
            ("1.01", "1.1", Equal),
            ("6.12.38-1", "6.12.41-1", Less),
            ("1:3.14-4", "3.15", Greater),
        ] {
            assert_eq!(compare_versions(a, b), expected, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), expected.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn version_syntax() {
        for good in ["1", "2.41-12", "1:3.14-4", "1.0~rc1+dfsg-2+deb13u1", "0.9.8-1.1"] {
            assert_eq!(check_version(good), Ok(()), "{good}");
        }
        for bad in ["", "1 0", "x:1", ":1", "1:", "1.0/2", "1.0_2"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
