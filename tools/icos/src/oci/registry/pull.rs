//! `pull`: an image by digest into the store. The manifest and every blob are hashed as they
//! arrive and checked against their digests; they are written straight into an OCI archive in a
//! temporary file of the store (a layer of gigabytes passes through a 1 MiB buffer), which
//! [`Store::put`] then verifies again and adds. A failure leaves the store as it was.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::client::{read_small, Body};
use super::{scope, Registry, RegistryError, DOCKER_LIST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE};
use crate::oci::layout::{Descriptor, Index, Manifest, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, REF_NAME_ANNOTATION};
use crate::oci::write::{finish_archive, header, padding, OCI_LAYOUT};
use crate::oci::{Digest, ImageDigest, OciError, Pin, Store};

/// What a pull may get: single images, and the indexes that it then refuses by name.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";
/// Manifests are small; a registry sending more is refused before it fills the memory.
const MAX_MANIFEST: u64 = 16 << 20;

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    /// The image's archive in the store.
    pub path: PathBuf,
    /// The image fetched, or None when the store had it (verified) and nothing was sent.
    pub fetched: Option<ImageDigest>,
    /// The bytes of the blobs fetched.
    pub bytes: u64,
}

/// The store's archive of image `digest`, if it is there and verifies in full. A damaged or
/// wrong entry counts as absent, so that a pull replaces it; an error that a pull would not
/// cure (an unreadable store) is returned.
pub fn present(store: &Store, digest: &Digest) -> Result<Option<PathBuf>, OciError> {
    match store.get_verified(digest) {
        Ok(path) => Ok(Some(path)),
        Err(
            OciError::NotInStore { .. }
            | OciError::Damaged { .. }
            | OciError::Mismatch { .. }
            | OciError::Corrupt { .. },
        ) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The media type of a manifest: its own `mediaType`, else the response's Content-Type.
#[derive(serde::Deserialize)]
struct MediaType {
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

impl Registry {
    /// Pulls image `pin` into `store`: nothing is sent when the store has it already (see
    /// [`present`]); otherwise see [`Registry::fetch`].
    pub fn pull(&mut self, store: &Store, pin: &Pin) -> Result<PullReport, RegistryError> {
        match present(store, &pin.digest)? {
            Some(path) => Ok(PullReport { path, fetched: None, bytes: 0 }),
            None => self.fetch(store, pin),
        }
    }

    /// Fetches image `pin` from the repository of its name and adds it to `store` as an OCI
    /// archive whose index.json names it `pin.name`, whether or not the store has it.
    pub fn fetch(&mut self, store: &Store, pin: &Pin) -> Result<PullReport, RegistryError> {
        let repository = self.url.repository(&pin.name)?;
        let scope = scope(&repository, false);
        let url = self.url.api(&format!("{repository}/manifests/{}", pin.digest));
        let response = self.client.send("GET", &url, &scope, &[("Accept", ACCEPT)], Body::Empty)?;
        let content_type = response.header("Content-Type").unwrap_or_default();
        let content_type = content_type.split(';').next().unwrap_or_default().trim().to_owned();
        let manifest_bytes = read_small(response, MAX_MANIFEST + 1)
            .map_err(|source| RegistryError::Receive { url: url.clone(), source })?;
        let protocol = |problem: String| RegistryError::Protocol { url: url.clone(), problem };
        if manifest_bytes.len() as u64 > MAX_MANIFEST {
            return Err(protocol(format!("the manifest is larger than {MAX_MANIFEST} bytes")));
        }
        let actual = Digest::of(&manifest_bytes);
        if actual != pin.digest {
            return Err(RegistryError::DigestMismatch { url, expected: pin.digest.clone(), actual });
        }
        let declared = serde_json::from_slice::<MediaType>(&manifest_bytes)
            .map_err(|error| protocol(format!("the manifest is not valid JSON: {error}")))?
            .media_type;
        let media_type = if declared.is_empty() { content_type } else { declared };
        match media_type.as_str() {
            MANIFEST_MEDIA_TYPE | DOCKER_MANIFEST_MEDIA_TYPE => {}
            INDEX_MEDIA_TYPE | DOCKER_LIST_MEDIA_TYPE => {
                return Err(protocol(format!(
                    "{} is an image index ({media_type}), which names an image per platform; pin the digest of one \
                     platform's manifest",
                    pin.digest
                )))
            }
            other => {
                return Err(protocol(format!("{} is not an image manifest: its media type is {other:?}", pin.digest)))
            }
        }
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|error| protocol(format!("not a valid image manifest: {error}")))?;
        let config = manifest.config.as_ref().ok_or_else(|| protocol("the manifest names no config".into()))?;

        let dir = store.dir();
        let temporary_error = |source| OciError::Write { path: dir.to_owned(), source };
        fs::create_dir_all(dir).map_err(temporary_error)?;
        let temporary = tempfile::Builder::new()
            .prefix(".icos-pull-")
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(temporary_error)?;
        let archive = temporary.path().to_owned();
        let write_error = |source| OciError::Write { path: archive.clone(), source };
        let mut out = BufWriter::with_capacity(1 << 20, temporary.as_file());
        // The members in the order of `write_archive`: blobs before the documents naming them.
        out.write_all(&header("blobs/", 0, true)).map_err(write_error)?;
        out.write_all(&header("blobs/sha256/", 0, true)).map_err(write_error)?;
        let mut seen = HashSet::new();
        let mut bytes = 0;
        for descriptor in manifest.layers.iter().chain([config]) {
            if seen.insert(&descriptor.digest) {
                self.fetch_blob(&repository, &scope, descriptor, &mut out, &archive)?;
                bytes += descriptor.size;
            }
        }
        let image = ImageDigest { digest: pin.digest.clone(), size: manifest_bytes.len() as u64 };
        let manifest_descriptor = Descriptor {
            annotations: BTreeMap::from([(REF_NAME_ANNOTATION.to_owned(), pin.name.clone())]),
            digest: image.digest.clone(),
            media_type,
            size: image.size,
        };
        let index = serde_json::to_vec(&Index {
            manifests: vec![manifest_descriptor],
            media_type: INDEX_MEDIA_TYPE.to_owned(),
            schema_version: 2,
        })
        .map_err(|error| protocol(format!("cannot write index.json: {error}")))?;
        let members = [
            (format!("blobs/sha256/{}", image.digest.hex()), &manifest_bytes[..]),
            ("index.json".to_owned(), &index[..]),
            ("oci-layout".to_owned(), OCI_LAYOUT),
        ];
        finish_archive(&mut out, &members).map_err(write_error)?;
        drop(out);
        let stored = store.put(&archive)?;
        debug_assert_eq!(stored, image);
        Ok(PullReport { path: store.path(&stored.digest), fetched: Some(stored), bytes })
    }

    /// Streams the blob `descriptor` names into `out` as the archive member `blobs/sha256/<hex>`,
    /// hashing it on the way; its size and SHA-256 must be those of the descriptor.
    fn fetch_blob(
        &mut self,
        repository: &str,
        scope: &str,
        descriptor: &Descriptor,
        out: &mut impl Write,
        archive: &Path,
    ) -> Result<(), RegistryError> {
        let write_error = |source| OciError::Write { path: archive.to_owned(), source };
        let (digest, size) = (&descriptor.digest, descriptor.size);
        let url = self.url.api(&format!("{repository}/blobs/{digest}"));
        let size_mismatch = |actual: String| RegistryError::SizeMismatch {
            url: url.clone(),
            digest: digest.clone(),
            expected: size,
            actual,
        };
        let response = self.client.send("GET", &url, scope, &[], Body::Empty)?;
        if let Some(length) = response.header("Content-Length").and_then(|length| length.trim().parse::<u64>().ok()) {
            if length != size {
                return Err(size_mismatch(format!("{length} bytes")));
            }
        }
        out.write_all(&header(&format!("blobs/sha256/{}", digest.hex()), size, false)).map_err(write_error)?;
        // One byte more than expected is read to tell a longer blob from a complete one.
        let mut body = response.into_reader().take(size.saturating_add(1));
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut count = 0u64;
        loop {
            let read = body.read(&mut buffer).map_err(|source| RegistryError::Receive { url: url.clone(), source })?;
            if read == 0 {
                break;
            }
            count += read as u64;
            if count > size {
                return Err(size_mismatch(format!("more than {size} bytes")));
            }
            hasher.update(&buffer[..read]);
            out.write_all(&buffer[..read]).map_err(write_error)?;
        }
        if count != size {
            return Err(size_mismatch(format!("{count} bytes")));
        }
        let actual = Digest::from_sha256(hasher.finalize().into());
        if actual != *digest {
            return Err(RegistryError::DigestMismatch { url, expected: digest.clone(), actual });
        }
        out.write_all(padding(size)).map_err(write_error)?;
        Ok(())
    }
}
