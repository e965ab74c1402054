//! Building blocks of icos disk images. The image writers (`rootfs`, `ext4`, `fat`, `gpt_disk`,
//! `lvm`, `assembly`, `package`, `grubenv`, `oci::write`, `verity`), the measurements (`snp`, and
//! `sev_launch`, which writes a `-sev` variant's launch files) and `release::package` are functions
//! of their inputs only, so that two builds of the same sources give the same bytes; `container`,
//! `base_image`, `build_root`, `vm`, `repro`, `oci::registry` and `release::fetch` drive programs,
//! machines, VMs and downloads and are not.
//!
//! What the programs on the images use (the upgrade agent and the installer, `upgrade` and
//! `install`, and the formats they share with the build) is the `icos_agent` crate, re-exported
//! here under the same names; `layout` and `release` extend its modules of those names with the
//! build's side (resolving a layout, signing a bundle).

pub mod assembly;
pub mod base_image;
pub mod build_record;
pub mod build_root;
pub mod calendar;
pub mod container;
pub mod diff;
pub mod exec_log;
pub mod ext4;
pub mod gpt_disk;
pub mod layout;
pub mod lvm;
pub mod oci;
pub mod partitions;
pub mod release;
pub mod repro;
pub mod rootfs;
pub mod sev_launch;
pub mod snp;
pub mod verity;
pub mod vm;

// The modules the programs on the images share with the build, under the names the build uses.
pub use icos_agent::{
    fat, fs_input, grubenv, hashing, image_source, install, io_error, output, package, seed, sha256sums, size, sparse,
    tls, upgrade,
};
