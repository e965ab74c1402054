//! Release bundles, the packaging side: `icos release package` bundles a published variant's
//! files and signs the manifest, with a key file or a key in a PKCS#11 token ([`pkcs11`]). The
//! format and its verification, which the upgrade agent shares, are [`icos_agent::release`].

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

pub use icos_agent::release::*;

pub mod pkcs11;

use crate::hashing::HashingReader;
use crate::io_error::PathIoError;
use crate::output::write_atomically;

fn read_signing_key(path: &Path) -> Result<SigningKey, ReleaseError> {
    let text = fs::read_to_string(path).map_err(PathIoError::with("read", path))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|error| ReleaseError::BadKey {
        path: path.to_owned(),
        what: "private",
        problem: error.to_string(),
    })
}

/// What signs a manifest: a key file ([`SigningKey`]) or a key in a token ([`pkcs11::TokenKey`]).
pub trait ManifestSigner {
    /// How messages name the key: its file, or its URI without a PIN.
    fn name(&self) -> String;
    /// The public half, which every signature is checked against before a bundle is written.
    fn public_key(&self) -> VerifyingKey;
    fn sign_manifest(&self, manifest: &[u8]) -> Result<Signature, ReleaseError>;
}

/// A private key read from a PKCS#8 PEM file.
pub struct KeyFile {
    path: PathBuf,
    key: SigningKey,
}

impl KeyFile {
    pub fn read(path: &Path) -> Result<KeyFile, ReleaseError> {
        Ok(KeyFile::new(path.to_owned(), read_signing_key(path)?))
    }

    /// `key`, which came from `path`.
    pub fn new(path: PathBuf, key: SigningKey) -> KeyFile {
        KeyFile { path, key }
    }
}

impl ManifestSigner for KeyFile {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    fn sign_manifest(&self, manifest: &[u8]) -> Result<Signature, ReleaseError> {
        Ok(self.key.sign(manifest))
    }
}

/// The signer `key` names: a key in a token for a `pkcs11:` URI (RFC 7512), else a PKCS#8 PEM
/// file.
pub fn open_signer(key: &str) -> Result<Box<dyn ManifestSigner>, ReleaseError> {
    if key.starts_with("pkcs11:") {
        Ok(Box::new(pkcs11::TokenKey::open(key)?))
    } else {
        Ok(Box::new(KeyFile::read(Path::new(key))?))
    }
}

/// `key` as images trust it: SPKI PEM, as `openssl pkey -pubout` writes it.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF).expect("an Ed25519 public key always encodes")
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
    key: &dyn ManifestSigner,
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
    let signature = key.sign_manifest(&manifest_bytes)?;
    // A token could sign with another key than the public one it shows, or sign wrongly: the
    // bundle would be refused everywhere.
    key.public_key().verify(&manifest_bytes, &signature).map_err(|_| ReleaseError::Signing {
        key: key.name(),
        problem: "its signature does not verify with its public key".into(),
    })?;
    let signature = signature.to_bytes();
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
        package("guestos", "dev", "0.1.0-dev", &inputs, &KeyFile::new("key1.pem".into(), key(1)), &output).unwrap();
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
