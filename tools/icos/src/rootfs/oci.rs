//! OCI image archives (`podman save --format oci-archive`): a tar of an OCI image layout.
//! `index.json` names one manifest, the manifest lists the layers, and each layer blob (plain,
//! gzip or zstd tar) is applied in order with its whiteouts. Every blob read is checked against
//! its digest, so a damaged archive is an error rather than a different image.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::path::{hex, normalize};
use super::store::Store;
use super::stream::{read_section, Section, StreamKind};
use super::tree::Tree;
use super::RootfsError;

const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const BLOCK: u64 = 512;
/// index.json and manifests are small; a larger one means a damaged or hostile archive.
const MAX_JSON: u64 = 16 << 20;

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    layers: Vec<Descriptor>,
}

/// Where each regular file of the outer archive lies: normalized name to (offset, size).
type Members = HashMap<Vec<u8>, (u64, u64)>;

fn problem(input: &Path, problem: String) -> RootfsError {
    RootfsError::Oci { path: input.to_owned(), problem }
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
fn scan(file: &File, input: &Path) -> Result<Members, RootfsError> {
    let corrupt =
        |detail: String| RootfsError::Corrupt { path: input.to_owned(), location: "OCI archive".into(), detail };
    let length = file.metadata().map_err(|source| RootfsError::Read { path: input.to_owned(), source })?.len();
    let mut members = Members::new();
    let mut end = 0u64;
    // The tar reader seeks relative to where the file is.
    (&*file).rewind().map_err(|source| RootfsError::Read { path: input.to_owned(), source })?;
    let mut archive = tar::Archive::new(file);
    let entries = archive.entries_with_seek().map_err(|error| corrupt(error.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|error| corrupt(error.to_string()))?;
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
        return Err(corrupt("the archive is truncated: it ends without the end-of-archive blocks".into()));
    }
    Ok(members)
}

/// The offset and size of the blob `descriptor` names, checked against its declared size.
fn locate(members: &Members, descriptor: &Descriptor, input: &Path) -> Result<(u64, u64), RootfsError> {
    let digest = descriptor
        .digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .ok_or_else(|| {
            problem(input, format!("unsupported blob digest {:?} (expected sha256:<64 hex digits>)", descriptor.digest))
        })?;
    let name = format!("blobs/sha256/{digest}");
    let &(offset, size) =
        members.get(name.as_bytes()).ok_or_else(|| problem(input, format!("blob {name} is missing")))?;
    if size != descriptor.size {
        return Err(problem(input, format!("blob {name} has {size} bytes, its descriptor says {}", descriptor.size)));
    }
    Ok((offset, size))
}

fn check_digest(actual: &[u8; 32], descriptor: &Descriptor, what: &str, input: &Path) -> Result<(), RootfsError> {
    let actual = format!("sha256:{}", hex(actual));
    if !actual.eq_ignore_ascii_case(&descriptor.digest) {
        return Err(problem(
            input,
            format!("{what} is damaged: its SHA-256 is {actual}, expected {}", descriptor.digest),
        ));
    }
    Ok(())
}

fn read_small(file: &File, (offset, size): (u64, u64), what: &str, input: &Path) -> Result<Vec<u8>, RootfsError> {
    if size > MAX_JSON {
        return Err(problem(input, format!("{what} is {size} bytes, too large for a JSON document")));
    }
    let mut bytes = Vec::new();
    Section::new(file, offset, size)
        .read_to_end(&mut bytes)
        .map_err(|source| RootfsError::Read { path: input.to_owned(), source })?;
    Ok(bytes)
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str, input: &Path) -> Result<T, RootfsError> {
    serde_json::from_slice(bytes).map_err(|error| problem(input, format!("{what} is not valid: {error}")))
}

/// Applies the layers of the OCI archive `file` to `tree`, bottom layer first.
pub(crate) fn read_oci_archive(
    file: &File,
    input: &Path,
    tree: &mut Tree,
    store: &mut Store,
) -> Result<(), RootfsError> {
    let members = scan(file, input)?;
    let index_location =
        *members.get(&b"index.json"[..]).ok_or_else(|| problem(input, "index.json is missing".into()))?;
    let index_bytes = read_small(file, index_location, "index.json", input)?;
    let index: Index = parse(&index_bytes, "index.json", input)?;
    let descriptor = match index.manifests.as_slice() {
        [descriptor] => descriptor,
        other => {
            return Err(problem(
                input,
                format!("index.json lists {} manifests; exactly one image is expected", other.len()),
            ))
        }
    };
    if descriptor.media_type == INDEX_MEDIA_TYPE {
        return Err(problem(input, "index.json points to another index; a single-image archive is expected".into()));
    }
    let manifest_bytes = read_small(file, locate(&members, descriptor, input)?, "the manifest", input)?;
    check_digest(&Sha256::digest(&manifest_bytes).into(), descriptor, "the manifest", input)?;
    let manifest: Manifest = parse(&manifest_bytes, "the manifest", input)?;
    for (number, layer) in manifest.layers.iter().enumerate() {
        let (offset, size) = locate(&members, layer, input)?;
        let label = format!("layer {} ({})", number + 1, layer.digest);
        let kind = StreamKind { input, whiteouts: true, label: label.clone(), hash: true };
        let digest = read_section(file, offset, size, tree, store, kind)?
            .ok_or_else(|| problem(input, format!("{label} was not hashed")))?;
        check_digest(&digest, layer, &label, input)?;
    }
    Ok(())
}
