//! Release bundles: a published variant in one signed file.
//!
//! A bundle is an uncompressed tar (its images are compressed already) whose first member is
//! `manifest.json`, the second `manifest.json.sig`, and the others the files the manifest lists,
//! in its order: their path, size and SHA-256, with the OS, the variant and the version. The
//! signature is Ed25519 over the manifest's exact bytes (64 bytes, as `openssl pkeyutl -sign
//! -rawin` writes it). Ed25519 rather than X.509/CMS: a key is 32 bytes that openssl, OpenSSH and
//! HSMs all make, the signature is deterministic and needs no certificate chain, and verifying it
//! on a node needs no ASN.1 beyond the key file. The private key is read at signing time from a
//! file given on the command line (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`), never from
//! the build: packaging is a step after `bazel build`.
//!
//! `fetch` downloads a bundle over HTTP(S), resuming, before it verifies and unpacks it;
//! [`stream_signed_file`] reads one file of a bundle as it downloads (the upgrade agent's installs
//! from a URL).
//!
//! Verifying reads the bundle once: the manifest's signature is checked against the trusted public
//! keys (SPKI PEM, `openssl pkey -pubout`) before any file is looked at, then every member must be
//! the next file of the manifest with its size and SHA-256, and nothing may follow.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

pub mod fetch;

use crate::hashing::HashingReader;
use crate::io_error::PathIoError;
use crate::output::OutputError;

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.json.sig";
/// The manifest's `format`.
pub const FORMAT: &str = "icos-release-bundle/1";
/// The largest manifest read: a list of files, not a file to hold in memory at any size.
const MAX_MANIFEST: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{path}: not an Ed25519 {what} key in PEM ({problem})")]
    BadKey { path: PathBuf, what: &'static str, problem: String },
    #[error("{path}: {problem}")]
    BadInput { path: PathBuf, problem: String },
    #[error("{bundle}: {problem}")]
    BadBundle { bundle: PathBuf, problem: String },
    #[error("{bundle}: the manifest's signature does not verify with {keys}: refused")]
    BadSignature { bundle: PathBuf, keys: String },
    #[error("{bundle}: {file}: {problem}")]
    BadFile { bundle: PathBuf, file: String, problem: String },
    #[error("{url}: {problem}")]
    Fetch { url: String, problem: String },
    #[error("the signing key {key}: {problem}")]
    Signing { key: String, problem: String },
}

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub os: String,
    pub variant: String,
    pub version: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative, `/`-separated, without `.` or `..`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A key read from a PEM file, with the file's name for messages.
pub struct TrustedKey {
    pub path: PathBuf,
    pub key: VerifyingKey,
}

pub fn read_public_key(path: &Path) -> Result<TrustedKey, ReleaseError> {
    let text = fs::read_to_string(path).map_err(PathIoError::with("read", path))?;
    let key = VerifyingKey::from_public_key_pem(&text).map_err(|error| ReleaseError::BadKey {
        path: path.to_owned(),
        what: "public",
        problem: error.to_string(),
    })?;
    Ok(TrustedKey { path: path.to_owned(), key })
}

/// Checks a bundle against `keys` in one pass; with `unpack`, writes its files under that
/// directory (made anew: it must not exist; removed again when the bundle does not verify).
pub fn verify(bundle: &Path, keys: &[TrustedKey], unpack: Option<&Path>) -> Result<Manifest, ReleaseError> {
    let file = File::open(bundle).map_err(PathIoError::with("read", bundle))?;
    if let Some(dir) = unpack {
        fs::create_dir(dir).map_err(PathIoError::with("create", dir))?;
        let result = verify_stream(bundle, file, keys, Some(dir));
        if result.is_err() {
            let _ = fs::remove_dir_all(dir);
        }
        return result;
    }
    verify_stream(bundle, file, keys, None)
}

fn verify_stream(
    bundle: &Path,
    stream: impl Read,
    keys: &[TrustedKey],
    unpack: Option<&Path>,
) -> Result<Manifest, ReleaseError> {
    let bad = |problem: String| ReleaseError::BadBundle { bundle: bundle.to_owned(), problem };
    let read_error = PathIoError::with("read", bundle);
    let mut archive = tar::Archive::new(stream);
    let mut entries = archive.entries().map_err(read_error)?;
    let manifest = read_signed_head(bundle, &mut entries, keys, unpack)?;
    let mut next_member = |expected: &str| -> Result<tar::Entry<'_, _>, ReleaseError> {
        let entry = entries
            .next()
            .ok_or_else(|| bad(format!("it ends before {expected}")))?
            .map_err(|error| bad(format!("not a tar ({error})")))?;
        Ok(entry)
    };
    for listed in &manifest.files {
        let entry = next_member(&listed.path)?;
        check_member(&entry, &listed.path).map_err(bad)?;
        let file_error =
            |problem: String| ReleaseError::BadFile { bundle: bundle.to_owned(), file: listed.path.clone(), problem };
        let mut reader = HashingReader::new(entry);
        match unpack {
            Some(dir) => {
                let path = dir.join(&listed.path);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(PathIoError::with("create", parent))?;
                }
                let mut out = File::create(&path).map_err(PathIoError::with("create", &path))?;
                io::copy(&mut reader, &mut out).map_err(PathIoError::with("write", &path))?;
            }
            None => {
                io::copy(&mut reader, &mut io::sink()).map_err(PathIoError::with("read", bundle))?;
            }
        }
        let digest = reader.finish().map_err(PathIoError::with("read", bundle))?;
        if digest.length != listed.size {
            return Err(file_error(format!("{} bytes, the manifest says {}", digest.length, listed.size)));
        }
        if digest.sha256_hex() != listed.sha256 {
            return Err(file_error(format!(
                "its SHA-256 is {}, the manifest says {}: refused",
                digest.sha256_hex(),
                listed.sha256
            )));
        }
    }
    if let Some(extra) = entries.next() {
        let name = extra
            .map_err(|error| bad(format!("not a tar after its last file ({error})")))?
            .path()
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        return Err(bad(format!("{name:?} follows the files of the manifest: refused")));
    }
    Ok(manifest)
}

/// A file of a bundle whose manifest's signature verified: where its bytes are, and what the
/// manifest says they are. Nothing of the file itself has been read: its reader must check them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFile {
    /// The file holding it: the bundle, or the file of an unpacked bundle.
    pub file: PathBuf,
    /// Where it is in a bundle: its offset and size.
    pub section: Option<(u64, u64)>,
    pub size: u64,
    pub sha256: String,
}

/// Finds `name` in a bundle (or an unpacked bundle) after checking the manifest's signature
/// against `keys`, reading the bundle's headers only: the upgrade agent takes the update image out
/// of a bundle that also holds a disk image, and checks its SHA-256 as it reads it.
pub fn signed_file(bundle: &Path, keys: &[TrustedKey], name: &str) -> Result<(Manifest, SignedFile), ReleaseError> {
    let bad = |problem: String| ReleaseError::BadBundle { bundle: bundle.to_owned(), problem };
    let listed = |manifest: &Manifest| {
        manifest.files.iter().find(|file| file.path == name).cloned().ok_or_else(|| bad(format!("it holds no {name}")))
    };
    if bundle.is_dir() {
        let read = |file: &str| {
            let path = bundle.join(file);
            fs::read(&path).map_err(PathIoError::with("read", &path))
        };
        let manifest_bytes = read(MANIFEST)?;
        check_signature(bundle, &manifest_bytes, &read(SIGNATURE)?, keys)?;
        let manifest = parse_manifest(&manifest_bytes).map_err(bad)?;
        let entry = listed(&manifest)?;
        let file = SignedFile { file: bundle.join(name), section: None, size: entry.size, sha256: entry.sha256 };
        return Ok((manifest, file));
    }
    let file = File::open(bundle).map_err(PathIoError::with("read", bundle))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive.entries_with_seek().map_err(PathIoError::with("read", bundle))?;
    let manifest = read_signed_head(bundle, &mut entries, keys, None)?;
    let entry = listed(&manifest)?;
    for member in entries {
        let member = member.map_err(|error| bad(format!("not a tar ({error})")))?;
        if member.path_bytes().as_ref() == name.as_bytes() {
            check_member(&member, name).map_err(bad)?;
            if member.size() != entry.size {
                return Err(ReleaseError::BadFile {
                    bundle: bundle.to_owned(),
                    file: name.to_owned(),
                    problem: format!("{} bytes, the manifest says {}: refused", member.size(), entry.size),
                });
            }
            let section = Some((member.raw_file_position(), entry.size));
            return Ok((
                manifest,
                SignedFile { file: bundle.to_owned(), section, size: entry.size, sha256: entry.sha256 },
            ));
        }
    }
    Err(bad(format!("{name} is listed but missing")))
}

/// Reads a bundle from `stream` (a download) in one pass, as far as the file `name`: the manifest's
/// signature is checked against `keys` before anything else is read, the files before `name` are
/// read past (each must be the next one of the manifest), and `use_file` gets the manifest and a
/// reader of `name`'s bytes as they come. Once `use_file` returns, what it left unread is read, and
/// the file must have the size and SHA-256 of the manifest: what `use_file` made of the bytes may
/// be trusted only when this returns `Ok`. Nothing after `name` is read.
pub fn stream_signed_file<T, E: From<ReleaseError>>(
    bundle: &Path,
    stream: impl Read,
    keys: &[TrustedKey],
    name: &str,
    use_file: impl FnOnce(&Manifest, &mut dyn Read) -> Result<T, E>,
) -> Result<T, E> {
    let bad = |problem: String| ReleaseError::BadBundle { bundle: bundle.to_owned(), problem };
    let mut archive = tar::Archive::new(stream);
    let mut entries = archive.entries().map_err(PathIoError::with("read", bundle)).map_err(ReleaseError::from)?;
    let manifest = read_signed_head(bundle, &mut entries, keys, None)?;
    let Some(position) = manifest.files.iter().position(|file| file.path == name) else {
        return Err(bad(format!("it holds no {name}")).into());
    };
    for listed in &manifest.files[..position] {
        let entry = entries
            .next()
            .ok_or_else(|| bad(format!("it ends before {}", listed.path)))?
            .map_err(|error| bad(format!("not a tar ({error})")))?;
        // Read past by the next call: its bytes are not used, so not hashed.
        check_member(&entry, &listed.path).map_err(bad)?;
    }
    let listed = &manifest.files[position];
    let entry = entries
        .next()
        .ok_or_else(|| bad(format!("it ends before {name}")))?
        .map_err(|error| bad(format!("not a tar ({error})")))?;
    check_member(&entry, name).map_err(bad)?;
    let mut reader = HashingReader::new(entry);
    let result = use_file(&manifest, &mut reader)?;
    let digest = reader.finish().map_err(PathIoError::with("read", bundle)).map_err(ReleaseError::from)?;
    let file_error =
        |problem: String| ReleaseError::BadFile { bundle: bundle.to_owned(), file: name.to_owned(), problem };
    if digest.length != listed.size {
        return Err(file_error(format!("{} bytes, the manifest says {}: refused", digest.length, listed.size)).into());
    }
    if digest.sha256_hex() != listed.sha256 {
        return Err(file_error(format!(
            "its SHA-256 is {}, the manifest says {}: refused",
            digest.sha256_hex(),
            listed.sha256
        ))
        .into());
    }
    Ok(result)
}

/// Reads `manifest.json` and its signature, the first two members, and checks the signature; with
/// `unpack`, writes both there.
fn read_signed_head<'a, R: Read + 'a>(
    bundle: &Path,
    entries: &mut impl Iterator<Item = io::Result<tar::Entry<'a, R>>>,
    keys: &[TrustedKey],
    unpack: Option<&Path>,
) -> Result<Manifest, ReleaseError> {
    let bad = |problem: String| ReleaseError::BadBundle { bundle: bundle.to_owned(), problem };
    let mut read_member = |name: &str, limit: u64| -> Result<Vec<u8>, ReleaseError> {
        let mut entry = entries
            .next()
            .ok_or_else(|| bad(format!("it ends before {name}")))?
            .map_err(|error| bad(format!("not a tar ({error})")))?;
        check_member(&entry, name).map_err(bad)?;
        if entry.size() > limit {
            return Err(bad(format!("{name} is {} bytes, more than it can be", entry.size())));
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(PathIoError::with("read", bundle))?;
        Ok(bytes)
    };
    let manifest_bytes = read_member(MANIFEST, MAX_MANIFEST)?;
    let signature_bytes = read_member(SIGNATURE, 64)?;
    check_signature(bundle, &manifest_bytes, &signature_bytes, keys)?;
    let manifest = parse_manifest(&manifest_bytes).map_err(bad)?;
    if let Some(dir) = unpack {
        // With them, the unpacked directory verifies again (`verify_directory`).
        for (name, bytes) in [(MANIFEST, &manifest_bytes), (SIGNATURE, &signature_bytes)] {
            let path = dir.join(name);
            fs::write(&path, bytes).map_err(PathIoError::with("write", &path))?;
        }
    }
    Ok(manifest)
}

/// Checks the manifest's signature against `keys`.
fn check_signature(bundle: &Path, manifest: &[u8], signature: &[u8], keys: &[TrustedKey]) -> Result<(), ReleaseError> {
    let signature = Signature::from_slice(signature).map_err(|_| ReleaseError::BadBundle {
        bundle: bundle.to_owned(),
        problem: format!("{SIGNATURE} is {} bytes, not an Ed25519 signature", signature.len()),
    })?;
    if !keys.iter().any(|trusted| trusted.key.verify(manifest, &signature).is_ok()) {
        let keys = keys.iter().map(|trusted| trusted.path.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(ReleaseError::BadSignature { bundle: bundle.to_owned(), keys });
    }
    Ok(())
}

/// A signed manifest: what it says can be trusted, and is checked for sense all the same.
fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|error| format!("{MANIFEST}: {error}"))?;
    if manifest.format != FORMAT {
        return Err(format!("{MANIFEST}: format {:?}, this icos reads {FORMAT:?}", manifest.format));
    }
    for listed in &manifest.files {
        check_path(&listed.path).map_err(|problem| format!("{MANIFEST} lists {:?}: {problem}", listed.path))?;
    }
    Ok(manifest)
}

/// Checks an unpacked bundle (`verify --unpack`, `fetch`): its manifest's signature, every file's
/// size and SHA-256, and that it holds nothing else.
pub fn verify_directory(dir: &Path, keys: &[TrustedKey]) -> Result<Manifest, ReleaseError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(PathIoError::with("read", &path))
    };
    let manifest_bytes = read(MANIFEST)?;
    check_signature(dir, &manifest_bytes, &read(SIGNATURE)?, keys)?;
    let manifest = parse_manifest(&manifest_bytes)
        .map_err(|problem| ReleaseError::BadBundle { bundle: dir.to_owned(), problem })?;
    let mut expected: std::collections::BTreeSet<String> = [MANIFEST, SIGNATURE].map(str::to_owned).into();
    for listed in &manifest.files {
        let path = dir.join(&listed.path);
        let file_error =
            |problem: String| ReleaseError::BadFile { bundle: dir.to_owned(), file: listed.path.clone(), problem };
        let file = File::open(&path).map_err(|error| file_error(format!("cannot be read: {error}")))?;
        let digest = HashingReader::new(file).finish().map_err(PathIoError::with("read", &path))?;
        if digest.length != listed.size || digest.sha256_hex() != listed.sha256 {
            return Err(file_error(format!(
                "{} bytes with SHA-256 {}, the manifest says {} bytes with {}: refused",
                digest.length,
                digest.sha256_hex(),
                listed.size,
                listed.sha256
            )));
        }
        expected.insert(listed.path.clone());
    }
    let mut found = Vec::new();
    list_files(dir, "", &mut found)?;
    if let Some(extra) = found.into_iter().find(|path| !expected.contains(path)) {
        return Err(ReleaseError::BadBundle {
            bundle: dir.to_owned(),
            problem: format!("{extra} is not in the manifest: refused"),
        });
    }
    Ok(manifest)
}

/// The relative paths of the files under `dir`.
fn list_files(dir: &Path, prefix: &str, found: &mut Vec<String>) -> Result<(), ReleaseError> {
    for entry in fs::read_dir(dir).map_err(PathIoError::with("list", dir))? {
        let entry = entry.map_err(PathIoError::with("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        if entry.file_type().map_err(PathIoError::with("read", &entry.path()))?.is_dir() {
            list_files(&entry.path(), &path, found)?;
        } else {
            found.push(path);
        }
    }
    Ok(())
}

/// A member must be a regular file named as expected.
fn check_member<R: Read>(entry: &tar::Entry<'_, R>, expected: &str) -> Result<(), String> {
    let path = entry.path_bytes();
    if path.as_ref() != expected.as_bytes() {
        return Err(format!("found {:?} where {expected} must be", String::from_utf8_lossy(&path)));
    }
    if entry.header().entry_type() != tar::EntryType::Regular {
        return Err(format!("{expected} is not a regular file"));
    }
    Ok(())
}

/// A listed path must stay inside the directory a bundle is unpacked into.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.contains('\0') || path.contains('\\') {
        return Err("not a relative path");
    }
    if !Path::new(path).components().all(|component| matches!(component, Component::Normal(_))) {
        return Err("it leaves the bundle (absolute, or with . or ..)");
    }
    Ok(())
}
