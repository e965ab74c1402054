//! Writing a single-layer OCI archive from a canonical root filesystem tar, so that the image's
//! digest is a function of the tar's bytes and the options alone.
//!
//! The layer is the tar itself, uncompressed: compression would add a compressor version to what
//! the digest depends on. The JSON documents are serde_json of structs whose fields are declared
//! in byte order of their JSON names (and maps are `BTreeMap`s), so keys come out sorted, with no
//! whitespace: the same bytes on every machine, without a canonical-JSON library.
//!
//! The outer tar holds, in this order: `blobs/`, `blobs/sha256/`, the layer, the config, the
//! manifest, `index.json` and `oci-layout`; blobs before the documents that name them. Every
//! header is POSIX ustar with mode 0644 (directories 0755), owner 0:0 without names, and mtime 0;
//! nothing in it comes from the host, the clock or the output path.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::layout::{
    Descriptor, Index, Manifest, CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
    REF_NAME_ANNOTATION,
};
use super::reference::{check_name, Digest};
use super::{ImageDigest, OciError};
use crate::calendar::format_date_time;
use crate::output::write_atomically;

/// What `history[0].created_by` says when the options do not say otherwise. It is part of the
/// config, hence of the digest: every way of writing an archive from the same tree uses it, so
/// that they agree on the digest.
pub const DEFAULT_CREATED_BY: &str = "icos: one layer, a canonical root filesystem tar";
/// The default `PATH` of Debian (and of Docker).
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub(crate) const BLOCK: usize = 512;
/// The last second that RFC 3339 can write with a four-digit year: 9999-12-31T23:59:59Z.
const MAX_CREATED: u64 = 253_402_300_799;

/// The metadata of the image. Everything but `name` goes into the config, hence the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// The reference name in index.json (`guestos-base`): what the archive calls the image. Not
    /// part of the manifest, so the digest does not depend on it.
    pub name: String,
    /// `created` of the config and its history, in seconds since the epoch: SOURCE_DATE_EPOCH.
    pub created: u64,
    /// `created_by` of the one history entry.
    pub created_by: String,
    /// The default command, if any.
    pub cmd: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
}

impl ArchiveOptions {
    /// Options for the image `name`, created at the epoch, by [`DEFAULT_CREATED_BY`], with no
    /// command and no labels.
    pub fn new(name: impl Into<String>) -> ArchiveOptions {
        ArchiveOptions {
            name: name.into(),
            created: 0,
            created_by: DEFAULT_CREATED_BY.to_owned(),
            cmd: None,
            labels: BTreeMap::new(),
        }
    }
}

// The image config (fields in byte order of their JSON names: see the module documentation).

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'static str,
    config: RuntimeConfig<'a>,
    created: &'a str,
    history: [History<'a>; 1],
    os: &'static str,
    rootfs: RootFs<'a>,
}

#[derive(Serialize)]
struct RuntimeConfig<'a> {
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(rename = "Env")]
    env: [&'static str; 1],
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'a str,
}

#[derive(Serialize)]
struct RootFs<'a> {
    diff_ids: [&'a Digest; 1],
    #[serde(rename = "type")]
    kind: &'static str,
}

/// `seconds` since the epoch as RFC 3339 in UTC (`1970-01-01T00:00:00Z`), computed rather than
/// asked of the C library, so that no time zone or locale can change it. None after year 9999.
fn rfc3339(seconds: u64) -> Option<String> {
    if seconds > MAX_CREATED {
        return None;
    }
    // MAX_CREATED fits an i64.
    Some(format!("{}Z", format_date_time(seconds as i64, 'T')))
}

fn json(value: &impl Serialize) -> Vec<u8> {
    // Serializing these structs cannot fail: every key is a string and there are no floats.
    serde_json::to_vec(value).expect("OCI documents serialize to JSON")
}

fn config_json(options: &ArchiveOptions, created: &str, diff_id: &Digest) -> Vec<u8> {
    json(&ImageConfig {
        architecture: "amd64",
        config: RuntimeConfig { cmd: options.cmd.as_deref(), env: [PATH_ENV], labels: &options.labels },
        created,
        history: [History { created, created_by: &options.created_by }],
        os: "linux",
        rootfs: RootFs { diff_ids: [diff_id], kind: "layers" },
    })
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor { annotations: BTreeMap::new(), digest, media_type: media_type.to_owned(), size }
}

/// A ustar header with the fixed metadata of the module documentation.
pub(crate) fn header(name: &str, size: u64, directory: bool) -> [u8; BLOCK] {
    let mut header = tar::Header::new_ustar();
    // Names are at most `blobs/sha256/` and 64 hex digits: they fit the 100-byte name field.
    header.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(if directory { tar::EntryType::Directory } else { tar::EntryType::Regular });
    header.set_mode(if directory { 0o755 } else { 0o644 });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    // Sizes of 8 GiB and more take the base-256 form that GNU tar and Go's archive/tar read.
    header.set_size(size);
    header.set_cksum();
    *header.as_bytes()
}

/// The zeros that fill a member of `size` bytes up to a whole block.
/// Writes the small members of an archive after its blobs (`members`: name and content), then
/// the end-of-archive blocks, and flushes: the end of every archive icos writes.
pub(crate) fn finish_archive(out: &mut impl Write, members: &[(String, &[u8])]) -> std::io::Result<()> {
    for (name, content) in members {
        out.write_all(&header(name, content.len() as u64, false))?;
        out.write_all(content)?;
        out.write_all(padding(content.len() as u64))?;
    }
    out.write_all(&[0u8; 2 * BLOCK])?;
    out.flush()
}

pub(crate) fn padding(size: u64) -> &'static [u8] {
    &[0u8; BLOCK][..(BLOCK - (size % BLOCK as u64) as usize) % BLOCK]
}

/// Refuses anything but an uncompressed tar: a `.tar.zst` given by mistake would otherwise become
/// a layer that no container engine can apply.
fn check_tar(file: &File, path: &Path, size: u64) -> Result<(), OciError> {
    let mut block = [0u8; BLOCK];
    let is_tar = size % BLOCK as u64 == 0 && file.read_exact_at(&mut block, 0).is_ok() && &block[257..262] == b"ustar";
    if !is_tar {
        return Err(OciError::Input {
            path: path.to_owned(),
            problem: "not an uncompressed tar (give the canonical tar of `icos rootfs canonicalize`)".into(),
        });
    }
    Ok(())
}

/// Writes `output`, an OCI archive of one image whose only layer is `rootfs_tar` as it is (a
/// canonical root filesystem tar: see `crate::rootfs`), and returns the image's digest.
///
/// The tar is read once: a zero block holds the place of its member header, the content is hashed
/// as it is copied, and the header, named after the digest, is then written in that place. So a
/// multi-gigabyte layer costs one read and no memory. All or nothing: a failure leaves no output.
pub fn write_archive(rootfs_tar: &Path, output: &Path, options: &ArchiveOptions) -> Result<ImageDigest, OciError> {
    check_name(&options.name).map_err(|problem| OciError::InvalidName { name: options.name.clone(), problem })?;
    let created = rfc3339(options.created).ok_or(OciError::Created { seconds: options.created })?;
    let read_error = |source| OciError::Read { path: rootfs_tar.to_owned(), source };
    let mut rootfs = File::open(rootfs_tar).map_err(read_error)?;
    let size = rootfs.metadata().map_err(read_error)?.len();
    check_tar(&rootfs, rootfs_tar, size)?;

    write_atomically(output, |file| {
        let write_error = |source| OciError::Write { path: output.to_owned(), source };
        let mut out = BufWriter::with_capacity(1 << 20, &*file);
        out.write_all(&header("blobs/", 0, true)).map_err(write_error)?;
        out.write_all(&header("blobs/sha256/", 0, true)).map_err(write_error)?;
        let layer_header_at = 2 * BLOCK as u64;
        out.write_all(&[0u8; BLOCK]).map_err(write_error)?;

        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let want = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let count = rootfs.read(&mut buffer[..want]).map_err(read_error)?;
            if count == 0 {
                return Err(OciError::Input {
                    path: rootfs_tar.to_owned(),
                    problem: format!("it shrank while being read (from {size} bytes)"),
                });
            }
            hasher.update(&buffer[..count]);
            out.write_all(&buffer[..count]).map_err(write_error)?;
            left -= count as u64;
        }
        out.write_all(padding(size)).map_err(write_error)?;
        let diff_id = Digest::from_sha256(hasher.finalize().into());
        out.flush().map_err(write_error)?;
        let name = format!("blobs/sha256/{}", diff_id.hex());
        file.write_all_at(&header(&name, size, false), layer_header_at).map_err(write_error)?;

        let config = config_json(options, &created, &diff_id);
        let config_digest = Digest::of(&config);
        let manifest = json(&Manifest {
            config: Some(descriptor(CONFIG_MEDIA_TYPE, config_digest.clone(), config.len() as u64)),
            // The layer's digest is its diff_id: it is not compressed.
            layers: vec![descriptor(LAYER_MEDIA_TYPE, diff_id, size)],
            media_type: MANIFEST_MEDIA_TYPE.to_owned(),
            schema_version: 2,
        });
        let image = ImageDigest { digest: Digest::of(&manifest), size: manifest.len() as u64 };
        let mut manifest_descriptor = descriptor(MANIFEST_MEDIA_TYPE, image.digest.clone(), image.size);
        manifest_descriptor.annotations.insert(REF_NAME_ANNOTATION.to_owned(), options.name.clone());
        let index = json(&Index {
            manifests: vec![manifest_descriptor],
            media_type: INDEX_MEDIA_TYPE.to_owned(),
            schema_version: 2,
        });
        let members = [
            (format!("blobs/sha256/{}", config_digest.hex()), &config[..]),
            (format!("blobs/sha256/{}", image.digest.hex()), &manifest[..]),
            ("index.json".to_owned(), &index[..]),
            ("oci-layout".to_owned(), OCI_LAYOUT),
        ];
        finish_archive(&mut out, &members).map_err(write_error)?;
        Ok(image)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_computed_in_utc() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399).unwrap(), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(MAX_CREATED).unwrap(), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(MAX_CREATED + 1), None);
    }

    #[test]
    fn the_config_has_a_fixed_shape_with_sorted_keys() {
        let diff_id = Digest::of(b"layer");
        let mut options = ArchiveOptions::new("guestos-base");
        let plain = String::from_utf8(config_json(&options, "1970-01-01T00:00:00Z", &diff_id)).unwrap();
        assert_eq!(
            plain,
            format!(
                concat!(
                    r#"{{"architecture":"amd64","config":{{"Env":["{}"]}},"created":"1970-01-01T00:00:00Z","#,
                    r#""history":[{{"created":"1970-01-01T00:00:00Z","created_by":"{}"}}],"os":"linux","#,
                    r#""rootfs":{{"diff_ids":["{}"],"type":"layers"}}}}"#
                ),
                PATH_ENV, DEFAULT_CREATED_BY, diff_id
            )
        );
        options.cmd = Some(vec!["/bin/sh".into(), "-c".into(), "true".into()]);
        options.labels.insert("z".into(), "last".into());
        options.labels.insert("a".into(), "first".into());
        let full = config_json(&options, "2023-11-14T22:13:20Z", &diff_id);
        assert!(String::from_utf8_lossy(&full).contains(
            r#""config":{"Cmd":["/bin/sh","-c","true"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Labels":{"a":"first","z":"last"}}"#
        ));
        // serde_json's own maps are sorted (no preserve_order): re-serialising must not reorder.
        for document in [plain.into_bytes(), full] {
            let value: serde_json::Value = serde_json::from_slice(&document).unwrap();
            assert_eq!(serde_json::to_vec(&value).unwrap(), document);
        }
    }

    #[test]
    fn manifest_and_index_keys_are_sorted() {
        let mut manifest_descriptor = descriptor(MANIFEST_MEDIA_TYPE, Digest::of(b"m"), 1);
        manifest_descriptor.annotations.insert(REF_NAME_ANNOTATION.into(), "guestos-base".into());
        let documents = [
            json(&Manifest {
                config: Some(descriptor(CONFIG_MEDIA_TYPE, Digest::of(b"c"), 2)),
                layers: vec![descriptor(LAYER_MEDIA_TYPE, Digest::of(b"l"), 3)],
                media_type: MANIFEST_MEDIA_TYPE.into(),
                schema_version: 2,
            }),
            json(&Index {
                manifests: vec![manifest_descriptor],
                media_type: INDEX_MEDIA_TYPE.into(),
                schema_version: 2,
            }),
        ];
        for document in documents {
            let value: serde_json::Value = serde_json::from_slice(&document).unwrap();
            assert_eq!(serde_json::to_vec(&value).unwrap(), document);
        }
    }

    #[test]
    fn headers_are_fixed_ustar_headers() {
        let bytes = header("blobs/sha256/", 0, true);
        let parsed = tar::Header::from_byte_slice(&bytes);
        assert_eq!(parsed.path_bytes().as_ref(), b"blobs/sha256/");
        assert_eq!(parsed.entry_type(), tar::EntryType::Directory);
        assert_eq!((parsed.mode().unwrap(), parsed.uid().unwrap(), parsed.gid().unwrap()), (0o755, 0, 0));
        assert_eq!(parsed.mtime().unwrap(), 0);
        assert_eq!(parsed.username_bytes(), Some(&b""[..]));
        assert_eq!(&bytes[257..265], b"ustar\x0000");
        let big = header("index.json", 9 << 30, false);
        assert_eq!(tar::Header::from_byte_slice(&big).size().unwrap(), 9 << 30);
        assert_eq!(padding(0).len(), 0);
        assert_eq!(padding(1).len(), 511);
        assert_eq!(padding(512).len(), 0);
    }
}
