//! Changes made to an image after reading it: replacing the files that container engines
//! bind-mount over (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`), emptying
//! `/etc/machine-id`, and injecting files built outside the container.
//!
//! Command-line forms (the path in the image comes first and ends at the first `=`, so only the
//! host path, which Bazel chooses, may hold `=`; both may hold `:`):
//! - `--replace DEST=FILE`: DEST gets FILE's content; an existing regular file keeps its mode,
//!   owner and xattrs, anything else becomes a 0644 root-owned file.
//! - `--inject MODE:UID:GID:DEST=FILE`: MODE in octal (at most 7777), UID and GID decimal; the
//!   three numbers come first because they never hold `:`.
//!
//! Missing parents of DEST are created as 0755 root-owned directories; a parent that is not a
//! directory (a symlink included) is an error, as is a DEST that is a directory. Whatever icos
//! creates has time 0 (clamped like everything else) and no xattrs.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::path::{display, normalize};
use super::store::Store;
use super::tree::{Inode, Kind, Metadata, Tree};
use super::RootfsError;

/// A file to put into the image with the given mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The path in the image, relative to its root (normalized).
    pub dest: Vec<u8>,
    pub source: PathBuf,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// A file whose content is replaced (or created) with the content of `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub dest: Vec<u8>,
    pub source: PathBuf,
}

fn spec_error(spec: &OsStr, problem: &str) -> RootfsError {
    RootfsError::Spec { spec: spec.to_string_lossy().into_owned(), problem: problem.into() }
}

/// Splits `DEST=FILE`, checking that DEST is an absolute path below the image root.
fn dest_and_source(spec: &OsStr, text: &[u8]) -> Result<(Vec<u8>, PathBuf), RootfsError> {
    let equals = text.iter().position(|&byte| byte == b'=').ok_or_else(|| spec_error(spec, "expected DEST=FILE"))?;
    let (dest, source) = (&text[..equals], &text[equals + 1..]);
    if !dest.starts_with(b"/") {
        return Err(spec_error(spec, "the path in the image must be absolute"));
    }
    let dest = normalize(dest).map_err(|_| spec_error(spec, "the path in the image has a '..' component"))?;
    if dest.is_empty() {
        return Err(spec_error(spec, "the path in the image cannot be the root"));
    }
    if source.is_empty() {
        return Err(spec_error(spec, "the file to read is missing"));
    }
    Ok((dest, PathBuf::from(OsStr::from_bytes(source))))
}

impl Replacement {
    /// Parses `DEST=FILE`.
    pub fn parse(spec: &OsStr) -> Result<Replacement, RootfsError> {
        let (dest, source) = dest_and_source(spec, spec.as_bytes())?;
        Ok(Replacement { dest, source })
    }
}

impl Injection {
    /// Parses `MODE:UID:GID:DEST=FILE`.
    pub fn parse(spec: &OsStr) -> Result<Injection, RootfsError> {
        let mut fields = spec.as_bytes().splitn(4, |&byte| byte == b':');
        let mut number = |what: &str, radix: u32| -> Result<u64, RootfsError> {
            let field = fields.next().ok_or_else(|| spec_error(spec, "expected MODE:UID:GID:DEST=FILE"))?;
            std::str::from_utf8(field)
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
                .and_then(|text| u64::from_str_radix(text, radix).ok())
                .ok_or_else(|| {
                    spec_error(spec, &format!("{what} {:?} is not a number", String::from_utf8_lossy(field)))
                })
        };
        let mode = number("the mode", 8)?;
        let uid = number("the uid", 10)?;
        let gid = number("the gid", 10)?;
        let mode = u32::try_from(mode)
            .ok()
            .filter(|&mode| mode <= 0o7777)
            .ok_or_else(|| spec_error(spec, "the mode must be at most 7777 (octal)"))?;
        let rest = fields.next().ok_or_else(|| spec_error(spec, "expected MODE:UID:GID:DEST=FILE"))?;
        let (dest, source) = dest_and_source(spec, rest)?;
        Ok(Injection { dest, source, mode, uid, gid })
    }
}

/// Reads `source` into the spool; it must be a regular file (symlinks to one are followed: Bazel
/// hands over its outputs as symlinks).
fn spool_file(store: &mut Store, source: &std::path::Path) -> Result<super::store::Content, RootfsError> {
    let read_error = |source_error| RootfsError::Read { path: source.to_owned(), source: source_error };
    let mut file = File::open(source).map_err(read_error)?;
    if !file.metadata().map_err(read_error)?.is_file() {
        return Err(read_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
    }
    store.spool(&mut file).map_err(read_error)
}

/// Puts a new inode at `dest`, creating missing parents; refuses to replace a directory.
fn put(tree: &mut Tree, dest: &[u8], inode: Inode) -> Result<(), RootfsError> {
    let edit_error = |problem: String| RootfsError::Edit { path: display(dest), problem };
    if tree.lookup(dest).is_some_and(|id| tree.inode(id).is_dir()) {
        return Err(edit_error("is a directory; only files can be replaced or injected".into()));
    }
    let id = tree.add_inode(inode);
    tree.insert(dest.to_vec(), id).map_err(|problem| edit_error(problem.to_string()))
}

/// The regular file at `dest`, if there is one.
fn existing_file<'a>(tree: &'a Tree, dest: &[u8]) -> Option<&'a Inode> {
    tree.lookup(dest).map(|id| tree.inode(id)).filter(|inode| matches!(inode.kind, Kind::File(_)))
}

pub(crate) fn replace(tree: &mut Tree, store: &mut Store, replacement: &Replacement) -> Result<(), RootfsError> {
    let content = spool_file(store, &replacement.source)?;
    let meta = existing_file(tree, &replacement.dest)
        .map(|inode| inode.meta.clone())
        .unwrap_or_else(|| Metadata::root_owned(0o644));
    put(tree, &replacement.dest, Inode { kind: Kind::File(content), meta })
}

pub(crate) fn inject(tree: &mut Tree, store: &mut Store, injection: &Injection) -> Result<(), RootfsError> {
    let content = spool_file(store, &injection.source)?;
    let meta = Metadata { mode: injection.mode, uid: injection.uid, gid: injection.gid, ..Metadata::root_owned(0) };
    put(tree, &injection.dest, Inode { kind: Kind::File(content), meta })
}

/// Makes `/etc/machine-id` an empty 0444 root-owned file: systemd then generates the id on first
/// boot, so no two machines share one. An existing file's xattrs (its SELinux label) stay.
pub(crate) fn empty_machine_id(tree: &mut Tree, store: &mut Store) -> Result<(), RootfsError> {
    const MACHINE_ID: &[u8] = b"etc/machine-id";
    let content = store.spool(&mut std::io::empty()).map_err(RootfsError::Spool)?;
    let xattrs = existing_file(tree, MACHINE_ID).map(|inode| inode.meta.xattrs.clone()).unwrap_or_default();
    let meta = Metadata { xattrs, ..Metadata::root_owned(0o444) };
    put(tree, MACHINE_ID, Inode { kind: Kind::File(content), meta })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn parses_injections_with_colons_and_equals_in_the_right_places() {
        let spec = OsStr::new("0755:0:1000:/opt/a:b/tool=bazel-out/k8=opt/bin/tool");
        let injection = Injection::parse(spec).unwrap();
        assert_eq!(
            injection,
            Injection {
                dest: b"opt/a:b/tool".to_vec(),
                source: PathBuf::from("bazel-out/k8=opt/bin/tool"),
                mode: 0o755,
                uid: 0,
                gid: 1000,
            }
        );
        let raw = OsString::from_vec(b"644:0:0:/etc/\xff=src".to_vec());
        assert_eq!(Injection::parse(&raw).unwrap().dest, b"etc/\xff");
    }

    #[test]
    fn refuses_bad_injection_specs_with_a_reason() {
        for (spec, reason) in [
            ("0755:0:0:opt/x=src", "must be absolute"),
            ("0799:0:0:/x=src", "the mode"),
            ("17777:0:0:/x=src", "at most 7777"),
            ("0755:root:0:/x=src", "the uid"),
            ("0755:0:0:/x", "DEST=FILE"),
            ("0755:0:0:/../x=src", "'..'"),
            ("0755:0:0:/=src", "the root"),
            ("0755:0:0:/x=", "missing"),
            ("0755:0", "MODE:UID:GID"),
        ] {
            let error = Injection::parse(OsStr::new(spec)).unwrap_err().to_string();
            assert!(error.contains(reason), "{spec}: {error}");
        }
    }

    #[test]
    fn parses_replacements() {
        let replacement = Replacement::parse(OsStr::new("/etc/hosts=files/hosts")).unwrap();
        assert_eq!(replacement, Replacement { dest: b"etc/hosts".to_vec(), source: PathBuf::from("files/hosts") });
        assert!(Replacement::parse(OsStr::new("etc/hosts=x")).is_err());
    }
}
