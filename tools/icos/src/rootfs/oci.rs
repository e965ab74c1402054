//! OCI image archives (`podman save --format oci-archive`, `icos oci write`) as root filesystems:
//! each layer blob (plain, gzip or zstd tar) of the one image is applied in order with its
//! whiteouts. The layout itself is read by [`crate::oci::layout`]; every layer is checked against
//! its digest as it is read, so a damaged archive is an error rather than a different image.

use std::fs::File;
use std::path::Path;

use super::store::Store;
use super::stream::{read_section, StreamKind};
use super::tree::Tree;
use super::RootfsError;
use crate::oci::layout::Layout;
use crate::oci::OciError;

/// Applies the layers of the OCI archive `file` to `tree`, bottom layer first.
pub(crate) fn read_oci_archive(
    file: &File,
    input: &Path,
    tree: &mut Tree,
    store: &mut Store,
) -> Result<(), RootfsError> {
    let layout = Layout::read(file, input)?;
    for layer in layout.layers()? {
        let label = format!("{} ({})", layer.role, layer.digest);
        let kind = StreamKind { input, whiteouts: true, label: label.clone(), hash: true };
        let digest = read_section(file, layer.offset, layer.size, tree, store, kind)?.ok_or_else(|| {
            OciError::Corrupt { archive: input.to_owned(), problem: format!("{label} was not hashed") }
        })?;
        layer.check(input, digest)?;
    }
    Ok(())
}
