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
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

pub mod fetch;

use crate::hashing::HashingReader;
use crate::io_error::PathIoError;
use crate::output::{write_atomically, OutputError};

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

pub fn read_signing_key(path: &Path) -> Result<SigningKey, ReleaseError> {
    let text = fs::read_to_string(path).map_err(PathIoError::with("read", path))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|error| ReleaseError::BadKey {
        path: path.to_owned(),
        what: "private",
        problem: error.to_string(),
    })
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

/// A file to bundle: where it is, and its path in the bundle.
#[derive(Debug, Clone)]
pub struct BundleInput {
    pub source: PathBuf,
    pub path: String,
}

/// The files to bundle for `sources`: a file under its name, a directory's files under its name
/// and their relative paths, in name order.
pub fn bundle_inputs(sources: &[PathBuf]) -> Result<Vec<BundleInput>, ReleaseError> {
    let mut inputs = Vec::new();
    for source in sources {
        let name = source
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| ReleaseError::BadInput { path: source.clone(), problem: "its name is not UTF-8".into() })?;
        collect(source, name, &mut inputs)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for input in &inputs {
        if [MANIFEST, SIGNATURE].contains(&input.path.as_str()) || !seen.insert(input.path.clone()) {
            return Err(ReleaseError::BadInput {
                path: input.source.clone(),
                problem: format!("a second file would be {} in the bundle", input.path),
            });
        }
    }
    Ok(inputs)
}

fn collect(source: &Path, path: &str, inputs: &mut Vec<BundleInput>) -> Result<(), ReleaseError> {
    // Bazel's outputs are often symlinks into its output base: followed.
    let metadata = fs::metadata(source).map_err(PathIoError::with("read", source))?;
    if metadata.is_file() {
        inputs.push(BundleInput { source: source.to_owned(), path: path.to_owned() });
        return Ok(());
    }
    if !metadata.is_dir() {
        return Err(ReleaseError::BadInput {
            path: source.to_owned(),
            problem: "neither a file nor a directory".into(),
        });
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(source)
        .map_err(PathIoError::with("list", source))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .map_err(PathIoError::with("list", source))?;
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| ReleaseError::BadInput { path: entry.clone(), problem: "its name is not UTF-8".into() })?;
        collect(&entry, &format!("{path}/{name}"), inputs)?;
    }
    Ok(())
}

/// Writes the bundle of `inputs` to `output` (atomically), its manifest signed with `key`.
pub fn package(
    os: &str,
    variant: &str,
    version: &str,
    inputs: &[BundleInput],
    key: &SigningKey,
    output: &Path,
) -> Result<Manifest, ReleaseError> {
    let mut files = Vec::new();
    for input in inputs {
        let file = File::open(&input.source).map_err(PathIoError::with("read", &input.source))?;
        let digest = HashingReader::new(file).finish().map_err(PathIoError::with("read", &input.source))?;
        files.push(ManifestFile { path: input.path.clone(), size: digest.length, sha256: digest.sha256_hex() });
    }
    let manifest =
        Manifest { format: FORMAT.into(), os: os.into(), variant: variant.into(), version: version.into(), files };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    manifest_bytes.push(b'\n');
    let signature = key.sign(&manifest_bytes).to_bytes();
    write_atomically(output, |file| {
        let write_error = PathIoError::with("write", output);
        let mut builder = tar::Builder::new(file);
        append(&mut builder, MANIFEST, manifest_bytes.len() as u64, &manifest_bytes[..]).map_err(write_error)?;
        append(&mut builder, SIGNATURE, signature.len() as u64, &signature[..])
            .map_err(PathIoError::with("write", output))?;
        for (input, listed) in inputs.iter().zip(&manifest.files) {
            let source = File::open(&input.source).map_err(PathIoError::with("read", &input.source))?;
            // A file that changed since it was hashed would make a bundle that fails to verify.
            let mut reader = HashingReader::new(source.take(listed.size));
            append(&mut builder, &listed.path, listed.size, &mut reader).map_err(PathIoError::with("write", output))?;
            let digest = reader.finish().map_err(PathIoError::with("read", &input.source))?;
            if digest.sha256_hex() != listed.sha256 {
                return Err(ReleaseError::BadInput {
                    path: input.source.clone(),
                    problem: "it changed while it was bundled".into(),
                });
            }
        }
        builder.into_inner().and_then(|file| file.flush()).map_err(PathIoError::with("write", output))?;
        Ok(manifest.clone())
    })
}

/// One member, owned by root, mode 0644, dated 0: the bundle is a function of its files.
fn append<W: Write>(builder: &mut tar::Builder<W>, path: &str, size: u64, data: impl Read) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, data)
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

/// A listed path stays inside the directory a bundle is unpacked into.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.contains('\0') || path.contains('\\') {
        return Err("not a relative path");
    }
    if !Path::new(path).components().all(|component| matches!(component, Component::Normal(_))) {
        return Err("it leaves the bundle (absolute, or with . or ..)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trusted(seed: u8) -> TrustedKey {
        TrustedKey { path: PathBuf::from(format!("key{seed}.pub")), key: key(seed).verifying_key() }
    }

    /// A bundle of a file and a directory with one file; returns the bundle's path.
    fn bundle(dir: &Path) -> PathBuf {
        let input = dir.join("input");
        fs::create_dir_all(input.join("sev-launch")).unwrap();
        fs::write(input.join("disk-img.tar.zst"), b"disk image bytes").unwrap();
        fs::write(input.join("sev-launch/cmdline"), b"console=ttyS0").unwrap();
        let inputs = bundle_inputs(&[input.join("disk-img.tar.zst"), input.join("sev-launch")]).unwrap();
        let output = dir.join("guestos-dev.bundle.tar");
        package("guestos", "dev", "0.1.0-dev", &inputs, &key(1), &output).unwrap();
        output
    }

    #[test]
    fn a_bundle_verifies_and_unpacks_with_its_key_and_is_the_same_bytes_twice() {
        let dir = tempfile::tempdir().unwrap();
        let output = bundle(dir.path());
        let manifest = verify(&output, &[trusted(2), trusted(1)], None).unwrap();
        let paths: Vec<&str> = manifest.files.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(paths, ["disk-img.tar.zst", "sev-launch/cmdline"]);
        assert_eq!(
            (manifest.os.as_str(), manifest.variant.as_str(), manifest.version.as_str()),
            ("guestos", "dev", "0.1.0-dev")
        );
        let unpacked = dir.path().join("unpacked");
        verify(&output, &[trusted(1)], Some(&unpacked)).unwrap();
        assert_eq!(fs::read(unpacked.join("sev-launch/cmdline")).unwrap(), b"console=ttyS0");
        // The unpacked directory verifies again, and not once changed.
        assert_eq!(verify_directory(&unpacked, &[trusted(1)]).unwrap(), manifest);
        assert!(verify_directory(&unpacked, &[trusted(2)]).unwrap_err().to_string().contains("does not verify"));
        fs::write(unpacked.join("notes.txt"), b"").unwrap();
        let error = verify_directory(&unpacked, &[trusted(1)]).unwrap_err().to_string();
        assert!(error.ends_with("notes.txt is not in the manifest: refused"), "{error}");
        fs::remove_file(unpacked.join("notes.txt")).unwrap();
        fs::write(unpacked.join("sev-launch/cmdline"), b"console=ttyS1").unwrap();
        let error = verify_directory(&unpacked, &[trusted(1)]).unwrap_err().to_string();
        assert!(error.contains(": sev-launch/cmdline: 13 bytes with SHA-256 "), "{error}");
        let first = fs::read(&output).unwrap();
        let again = bundle(dir.path());
        assert_eq!(fs::read(again).unwrap(), first);
    }

    #[test]
    fn a_signed_file_is_found_from_the_headers_with_the_manifests_digest() {
        let dir = tempfile::tempdir().unwrap();
        let output = bundle(dir.path());
        let (manifest, file) = signed_file(&output, &[trusted(1)], "sev-launch/cmdline").unwrap();
        let (offset, size) = file.section.unwrap();
        let bytes = fs::read(&output).unwrap();
        assert_eq!(&bytes[offset as usize..(offset + size) as usize], b"console=ttyS0");
        assert_eq!((file.size, &file.sha256), (13, &manifest.files[1].sha256));
        assert!(signed_file(&output, &[trusted(2)], "sev-launch/cmdline")
            .unwrap_err()
            .to_string()
            .contains("does not verify"));
        let error = signed_file(&output, &[trusted(1)], "update-img.tar.zst").unwrap_err().to_string();
        assert!(error.ends_with("it holds no update-img.tar.zst"), "{error}");
        let unpacked = dir.path().join("unpacked");
        verify(&output, &[trusted(1)], Some(&unpacked)).unwrap();
        let (_, file) = signed_file(&unpacked, &[trusted(1)], "disk-img.tar.zst").unwrap();
        assert_eq!((file.file, file.section), (unpacked.join("disk-img.tar.zst"), None));
    }

    #[test]
    fn a_wrong_key_is_refused_before_any_file_is_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let output = bundle(dir.path());
        let unpacked = dir.path().join("unpacked");
        let error = verify(&output, &[trusted(2)], Some(&unpacked)).unwrap_err().to_string();
        assert!(error.ends_with("the manifest's signature does not verify with key2.pub: refused"), "{error}");
        assert!(!unpacked.exists());
    }

    #[test]
    fn one_changed_byte_of_a_file_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let output = bundle(dir.path());
        let mut bytes = fs::read(&output).unwrap();
        let at = bytes.windows(13).position(|window| window == b"console=ttyS0").unwrap();
        bytes[at] ^= 1;
        fs::write(&output, &bytes).unwrap();
        let unpacked = dir.path().join("unpacked");
        let error = verify(&output, &[trusted(1)], Some(&unpacked)).unwrap_err().to_string();
        assert!(error.contains(": sev-launch/cmdline: its SHA-256 is "), "{error}");
        assert!(error.ends_with(": refused"), "{error}");
        assert!(!unpacked.exists(), "a bundle that does not verify left files behind");
    }

    #[test]
    fn a_changed_manifest_is_refused_by_its_signature() {
        let dir = tempfile::tempdir().unwrap();
        let output = bundle(dir.path());
        let mut bytes = fs::read(&output).unwrap();
        let at = bytes.windows(9).position(|window| window == b"0.1.0-dev").unwrap();
        bytes[at + 2] = b'9';
        fs::write(&output, &bytes).unwrap();
        let error = verify(&output, &[trusted(1)], None).unwrap_err().to_string();
        assert!(error.contains("signature does not verify"), "{error}");
    }

    #[test]
    fn members_out_of_order_missing_or_extra_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = |files: &[(&str, &[u8])]| {
            let manifest = Manifest {
                format: FORMAT.into(),
                os: "guestos".into(),
                variant: "dev".into(),
                version: "1".into(),
                files: files
                    .iter()
                    .map(|(path, data)| ManifestFile {
                        path: (*path).into(),
                        size: data.len() as u64,
                        sha256: crate::hashing::hex(&<sha2::Sha256 as sha2::Digest>::digest(data)),
                    })
                    .collect(),
            };
            let mut bytes = serde_json::to_vec(&manifest).unwrap();
            bytes.push(b'\n');
            bytes
        };
        let write = |name: &str, members: &[(&str, &[u8])]| {
            let path = dir.path().join(name);
            let mut builder = tar::Builder::new(File::create(&path).unwrap());
            for (member, data) in members {
                append(&mut builder, member, data.len() as u64, *data).unwrap();
            }
            builder.into_inner().unwrap();
            path
        };
        let listed = manifest(&[("a", b"A"), ("b", b"B")]);
        let signature = key(1).sign(&listed).to_bytes();
        for (members, problem) in [
            (
                vec![(MANIFEST, &listed[..]), (SIGNATURE, &signature[..]), ("b", b"B"), ("a", b"A")],
                "found \"b\" where a must be",
            ),
            (vec![(MANIFEST, &listed[..]), (SIGNATURE, &signature[..]), ("a", b"A")], "it ends before b"),
            (
                vec![(MANIFEST, &listed[..]), (SIGNATURE, &signature[..]), ("a", b"A"), ("b", b"B"), ("c", b"C")],
                "\"c\" follows the files of the manifest: refused",
            ),
            (
                vec![(SIGNATURE, &signature[..]), (MANIFEST, &listed[..])],
                "found \"manifest.json.sig\" where manifest.json must be",
            ),
        ] {
            let path = write("bundle.tar", &members);
            let error = verify(&path, &[trusted(1)], None).unwrap_err().to_string();
            assert!(error.ends_with(problem), "{error}");
        }
        let escaping = manifest(&[("../etc/passwd", b"x")]);
        let signature = key(1).sign(&escaping).to_bytes();
        // Refused from the manifest, before any member is read (the tar crate would not write one).
        let path = write("escaping.tar", &[(MANIFEST, &escaping), (SIGNATURE, &signature)]);
        let error = verify(&path, &[trusted(1)], None).unwrap_err().to_string();
        assert!(
            error.ends_with("lists \"../etc/passwd\": it leaves the bundle (absolute, or with . or ..)"),
            "{error}"
        );
    }

    #[test]
    fn inputs_that_would_collide_in_the_bundle_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            fs::create_dir(dir.path().join(name)).unwrap();
            fs::write(dir.path().join(name).join("SHA256SUMS"), b"").unwrap();
        }
        let inputs = [dir.path().join("a/SHA256SUMS"), dir.path().join("b/SHA256SUMS")];
        let error = bundle_inputs(&inputs).unwrap_err().to_string();
        assert!(error.ends_with("a second file would be SHA256SUMS in the bundle"), "{error}");
        fs::write(dir.path().join("manifest.json"), b"").unwrap();
        assert!(bundle_inputs(&[dir.path().join("manifest.json")]).is_err());
    }
}
