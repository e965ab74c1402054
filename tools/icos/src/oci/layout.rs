//! Reading OCI image layouts stored as a tar ("OCI archives", as `podman save --format
//! oci-archive` and [`super::write_archive`] write them): `index.json` names one manifest, the
//! manifest names a config and the layers, and each of these is a file `blobs/sha256/<hex>` whose
//! SHA-256 is that hex. [`Layout::read`] locates everything and checks the (small) manifest at
//! once; blobs are located with their sizes checked and hashed by whoever reads them, so that a
//! damaged archive is an error rather than a different image. The root filesystem reader
//! (`crate::rootfs`) reads layers through this too.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::reference::Digest;
use super::{ImageDigest, OciError};
use crate::rootfs::path::normalize;
use crate::rootfs::stream::Section;

pub(crate) const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The index annotation that names an image in a layout (what `oci-archive:PATH:NAME` selects).
pub(crate) const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const BLOCK: u64 = 512;
/// index.json and manifests are small; a larger one means a damaged or hostile archive.
const MAX_JSON: u64 = 16 << 20;

// The JSON documents of a layout, read and written alike. Fields are declared in byte order of
// their JSON names, so that serde_json writes the keys sorted; optional fields are left out when
// empty. Unknown fields are ignored on reading.

/// A reference to a blob.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub digest: Digest,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Index {
    pub manifests: Vec<Descriptor>,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// Always present in an image; optional here because the root filesystem reader needs only
    /// the layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
}

/// Where each regular file of the outer archive lies: normalized name to (offset, size).
type Members = HashMap<Vec<u8>, (u64, u64)>;

fn corrupt(archive: &Path, problem: String) -> OciError {
    OciError::Corrupt { archive: archive.to_owned(), problem }
}

fn read_error(archive: &Path) -> impl Fn(io::Error) -> OciError + '_ {
    move |source| OciError::Read { path: archive.to_owned(), source }
}

/// Whether `file` is a tar holding an OCI image layout (it has `oci-layout` and `index.json` at
/// its top). Anything unreadable is "no": the tar reader then reports what is wrong.
pub(crate) fn is_oci_archive(mut file: &File) -> bool {
    // The tar reader seeks relative to where the file is.
    if file.rewind().is_err() {
        return false;
    }
    let mut archive = tar::Archive::new(file);
    let Ok(entries) = archive.entries_with_seek() else { return false };
    let (mut layout, mut index) = (false, false);
    for entry in entries {
        let Ok(entry) = entry else { return false };
        match normalize(&entry.path_bytes()).as_deref() {
            Ok(b"oci-layout") => layout = true,
            Ok(b"index.json") => index = true,
            _ => {}
        }
    }
    layout && index
}

/// Lists the outer archive's files, checking that every one lies inside the file and that the
/// archive ends with its end-of-archive block.
fn scan(file: &File, archive: &Path) -> Result<Members, OciError> {
    let length = file.metadata().map_err(read_error(archive))?.len();
    let mut members = Members::new();
    let mut end = 0u64;
    // The tar reader seeks relative to where the file is.
    (&*file).rewind().map_err(read_error(archive))?;
    let mut outer = tar::Archive::new(file);
    let entries = outer.entries_with_seek().map_err(|error| corrupt(archive, format!("not a tar archive: {error}")))?;
    for entry in entries {
        let entry = entry.map_err(|error| corrupt(archive, format!("not a valid tar archive: {error}")))?;
        let (offset, size) = (entry.raw_file_position(), entry.size());
        end = offset.saturating_add(size.div_ceil(BLOCK) * BLOCK);
        if entry.header().entry_type().is_file() {
            if let Ok(name) = normalize(&entry.path_bytes()) {
                members.insert(name, (offset, size));
            }
        }
    }
    let mut block = [0u8; BLOCK as usize];
    let marker = end.checked_add(BLOCK).is_some_and(|after| after <= length)
        && file.read_exact_at(&mut block, end).is_ok()
        && block.iter().all(|&byte| byte == 0);
    if !marker {
        return Err(corrupt(archive, "the archive is truncated: it ends without the end-of-archive blocks".into()));
    }
    Ok(members)
}

/// A blob of the archive: what it is for, where it lies and what it must hash to.
pub(crate) struct Blob {
    /// Its member name, `blobs/sha256/<hex>`.
    pub name: String,
    /// What it is for: "the config", "layer 1", ...
    pub role: String,
    pub offset: u64,
    pub size: u64,
    pub digest: Digest,
}

impl Blob {
    /// Fails unless `actual`, the SHA-256 of the blob's bytes, is its digest.
    pub fn check(&self, archive: &Path, actual: [u8; 32]) -> Result<(), OciError> {
        let actual = Digest::from_sha256(actual);
        if actual != self.digest {
            return Err(OciError::Damaged {
                archive: archive.to_owned(),
                blob: self.name.clone(),
                role: self.role.clone(),
                expected: self.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Hashes the blob's bytes in `file`, the archive, a buffer at a time.
    pub fn hash(&self, file: &File, archive: &Path) -> Result<[u8; 32], OciError> {
        let mut section = Section::new(file, self.offset, self.size);
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let count = section.read(&mut buffer).map_err(read_error(archive))?;
            if count == 0 {
                return Ok(hasher.finalize().into());
            }
            hasher.update(&buffer[..count]);
        }
    }
}

/// An OCI archive with its one image located and its manifest read and checked.
pub(crate) struct Layout {
    archive: PathBuf,
    members: Members,
    /// The manifest's descriptor in index.json: its digest is the image's.
    descriptor: Descriptor,
    manifest: Manifest,
}

impl Layout {
    /// Reads the layout in `file`, the archive `archive`.
    pub fn read(file: &File, archive: &Path) -> Result<Layout, OciError> {
        let members = scan(file, archive)?;
        let index_location =
            *members.get(&b"index.json"[..]).ok_or_else(|| corrupt(archive, "index.json is missing".into()))?;
        let index: Index = parse(&read_small(file, index_location, "index.json", archive)?, "index.json", archive)?;
        let descriptor = match <[Descriptor; 1]>::try_from(index.manifests) {
            Ok([descriptor]) => descriptor,
            Err(other) => {
                return Err(corrupt(
                    archive,
                    format!("index.json lists {} manifests; exactly one image is expected", other.len()),
                ))
            }
        };
        if descriptor.media_type == INDEX_MEDIA_TYPE {
            return Err(corrupt(
                archive,
                "index.json points to another index; a single-image archive is expected".into(),
            ));
        }
        let blob = locate(archive, &members, &descriptor, "the manifest")?;
        let bytes = read_small(file, (blob.offset, blob.size), "the manifest", archive)?;
        blob.check(archive, Sha256::digest(&bytes).into())?;
        let manifest = parse(&bytes, "the manifest", archive)?;
        Ok(Layout { archive: archive.to_owned(), members, descriptor, manifest })
    }

    /// The image's digest and size: those of its manifest.
    pub fn image(&self) -> ImageDigest {
        ImageDigest { digest: self.descriptor.digest.clone(), size: self.descriptor.size }
    }

    /// The name index.json gives the image (its `org.opencontainers.image.ref.name`), if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.descriptor.annotations.get(REF_NAME_ANNOTATION).map(String::as_str)
    }

    /// The manifest blob, whose bytes are the image: a registry gets them as they are.
    pub fn manifest_blob(&self) -> Result<Blob, OciError> {
        self.blob(&self.descriptor, "the manifest")
    }

    /// The manifest's media type: its own `mediaType`, else what index.json says, else OCI's.
    pub fn manifest_media_type(&self) -> &str {
        [&self.manifest.media_type, &self.descriptor.media_type]
            .into_iter()
            .find(|media_type| !media_type.is_empty())
            .map_or(MANIFEST_MEDIA_TYPE, String::as_str)
    }

    /// The config blob.
    pub fn config(&self) -> Result<Blob, OciError> {
        let descriptor = self
            .manifest
            .config
            .as_ref()
            .ok_or_else(|| corrupt(&self.archive, "the manifest names no config".into()))?;
        self.blob(descriptor, "the config")
    }

    /// The layer blobs, bottom layer first.
    pub fn layers(&self) -> Result<Vec<Blob>, OciError> {
        let layers = self.manifest.layers.iter().enumerate();
        layers.map(|(number, layer)| self.blob(layer, &format!("layer {}", number + 1))).collect()
    }

    fn blob(&self, descriptor: &Descriptor, role: &str) -> Result<Blob, OciError> {
        locate(&self.archive, &self.members, descriptor, role)
    }
}

/// The blob `descriptor` names, checked to exist with its declared size; `role` says what it is
/// for in messages.
fn locate(archive: &Path, members: &Members, descriptor: &Descriptor, role: &str) -> Result<Blob, OciError> {
    let name = format!("blobs/sha256/{}", descriptor.digest.hex());
    let &(offset, size) =
        members.get(name.as_bytes()).ok_or_else(|| corrupt(archive, format!("blob {name} ({role}) is missing")))?;
    if size != descriptor.size {
        return Err(corrupt(
            archive,
            format!("blob {name} ({role}) has {size} bytes, its descriptor says {}", descriptor.size),
        ));
    }
    Ok(Blob { name, role: role.to_owned(), offset, size, digest: descriptor.digest.clone() })
}

fn read_small(file: &File, (offset, size): (u64, u64), what: &str, archive: &Path) -> Result<Vec<u8>, OciError> {
    if size > MAX_JSON {
        return Err(corrupt(archive, format!("{what} is {size} bytes, too large for a JSON document")));
    }
    let mut bytes = Vec::new();
    Section::new(file, offset, size).read_to_end(&mut bytes).map_err(read_error(archive))?;
    Ok(bytes)
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str, archive: &Path) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|error| corrupt(archive, format!("{what} is not valid: {error}")))
}

/// Checks `file`, the OCI archive `archive`: the layout, the manifest, and with `full` the SHA-256
/// of every blob (reading it all); without, only that every blob is there with its size. With
/// `expected`, the image must be that one.
pub(crate) fn check_archive(
    file: &File,
    archive: &Path,
    expected: Option<&Digest>,
    full: bool,
) -> Result<ImageDigest, OciError> {
    let layout = Layout::read(file, archive)?;
    let image = layout.image();
    if let Some(expected) = expected {
        if image.digest != *expected {
            return Err(OciError::Mismatch {
                archive: archive.to_owned(),
                expected: expected.clone(),
                actual: image.digest,
            });
        }
    }
    let mut blobs = vec![layout.config()?];
    blobs.extend(layout.layers()?);
    if full {
        for blob in &blobs {
            blob.check(archive, blob.hash(file, archive)?)?;
        }
    }
    Ok(image)
}

/// Verifies the OCI archive `archive`: it holds one image whose manifest, config and layers all
/// have the size and SHA-256 their descriptors give, and, with `expected`, that image is the one
/// `expected` names (what a pin names is the manifest digest). Returns the image's digest.
pub fn verify_archive(archive: &Path, expected: Option<&Digest>) -> Result<ImageDigest, OciError> {
    let file = File::open(archive).map_err(read_error(archive))?;
    check_archive(&file, archive, expected, true)
}
