//! `push`: an image of the store to its repository, blobs first (each only if the registry lacks
//! it), then the manifest, by digest and optionally by tag.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};

use super::address::{check_tag, upload_url};
use super::client::Body;
use super::{scope, Registry, RegistryError};
use crate::oci::layout::{Blob, Layout};
use crate::oci::{Digest, ImageDigest, OciError, Store};
use crate::rootfs::stream::Section;

/// A blob of a pushed image, and whether it was uploaded (or the registry had it already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedBlob {
    pub digest: Digest,
    pub size: u64,
    pub uploaded: bool,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The repository the image went to (`<prefix>/<name>`).
    pub repository: String,
    pub image: ImageDigest,
    /// The config and layers, each once, in the order of the manifest.
    pub blobs: Vec<PushedBlob>,
}

impl PushReport {
    /// The blobs that were uploaded, and their bytes in all.
    pub fn uploaded(&self) -> (usize, u64) {
        let uploaded = self.blobs.iter().filter(|blob| blob.uploaded);
        uploaded.fold((0, 0), |(count, bytes), blob| (count + 1, bytes + blob.size))
    }
}

impl Registry {
    /// Pushes image `digest` of `store` (verified in full first: a damaged archive is not
    /// spread) to the repository of its name, and tags it `tag` there if given. Blobs the
    /// registry has are not sent again; a blob is streamed from the archive, never held in memory.
    pub fn push(&mut self, store: &Store, digest: &Digest, tag: Option<&str>) -> Result<PushReport, RegistryError> {
        if let Some(tag) = tag {
            check_tag(tag).map_err(|problem| RegistryError::InvalidTag { tag: tag.to_owned(), problem })?;
        }
        let archive = store.get_verified(digest)?;
        let file = File::open(&archive).map_err(|source| OciError::Read { path: archive.clone(), source })?;
        let layout = Layout::read(&file, &archive)?;
        let name = layout.ref_name().ok_or_else(|| RegistryError::NoName { archive: archive.clone() })?;
        let repository = self.url.repository(name)?;
        let scope = scope(&repository, true);

        let mut blobs = vec![layout.config()?];
        blobs.extend(layout.layers()?);
        let mut seen = HashSet::new();
        blobs.retain(|blob| seen.insert(blob.digest.clone()));
        let mut pushed = Vec::new();
        for blob in &blobs {
            let uploaded = self.push_blob(&repository, &scope, &file, blob)?;
            pushed.push(PushedBlob { digest: blob.digest.clone(), size: blob.size, uploaded });
        }

        let manifest_blob = layout.manifest_blob()?;
        let mut manifest = Vec::new();
        Section::new(&file, manifest_blob.offset, manifest_blob.size)
            .read_to_end(&mut manifest)
            .map_err(|source| OciError::Read { path: archive.clone(), source })?;
        // Verified a moment ago; hashed again because these bytes, not those, are what is sent.
        let actual = Digest::of(&manifest);
        if actual != *digest {
            return Err(OciError::Mismatch { archive, expected: digest.clone(), actual }.into());
        }
        let media_type = layout.manifest_media_type();
        for reference in std::iter::once(digest.to_string()).chain(tag.map(str::to_owned)) {
            self.put_manifest(&repository, &scope, &reference, &manifest, media_type, digest)?;
        }
        Ok(PushReport { repository, image: layout.image(), blobs: pushed })
    }

    /// Uploads `blob` unless the registry has it: `HEAD`, then `POST` an upload and `PUT` the
    /// bytes to the `Location` it answers with. Returns whether it was uploaded.
    fn push_blob(&mut self, repository: &str, scope: &str, file: &File, blob: &Blob) -> Result<bool, RegistryError> {
        let url = self.url.api(&format!("{repository}/blobs/{}", blob.digest));
        match self.client.send("HEAD", &url, scope, &[], Body::Empty) {
            Ok(_) => return Ok(false),
            Err(RegistryError::Status { status: 404, .. }) => {}
            Err(error) => return Err(error),
        }
        let start = self.url.api(&format!("{repository}/blobs/uploads/"));
        let response = self.client.send("POST", &start, scope, &[], Body::Empty)?;
        let location = response.header("Location").map(str::to_owned);
        // Read the (empty) body so that the connection can be used again.
        let _ = io::copy(&mut response.into_reader().take(1 << 16), &mut io::sink());
        let location = location.ok_or_else(|| RegistryError::Protocol {
            url: start.clone(),
            problem: "the registry started an upload without saying where to (no Location header)".into(),
        })?;
        let put = upload_url(&start, &location, &blob.digest)
            .map_err(|problem| RegistryError::Protocol { url: start.clone(), problem })?;
        let body = Body::File { file, offset: blob.offset, size: blob.size };
        self.client.send("PUT", &put, scope, &[("Content-Type", "application/octet-stream")], body)?;
        Ok(true)
    }

    /// `PUT`s the manifest bytes under `reference` (the digest, or a tag), and checks the digest
    /// the registry says it stored, when it says one.
    fn put_manifest(
        &mut self,
        repository: &str,
        scope: &str,
        reference: &str,
        manifest: &[u8],
        media_type: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let url = self.url.api(&format!("{repository}/manifests/{reference}"));
        let response = self.client.send("PUT", &url, scope, &[("Content-Type", media_type)], Body::Bytes(manifest))?;
        if let Some(stored) = response.header("Docker-Content-Digest") {
            if stored != digest.to_string() {
                return Err(RegistryError::Protocol {
                    url,
                    problem: format!("the registry says it stored the manifest as {stored}, expected {digest}"),
                });
            }
        }
        Ok(())
    }
}
