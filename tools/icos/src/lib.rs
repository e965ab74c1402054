//! Building blocks of icos disk images. The image writers (`rootfs`, `ext4`, `fat`, `gpt_disk`,
//! `lvm`, `package`, `grubenv`, `oci::write`, `verity`), the measurements (`snp`, and
//! `sev_launch`, which writes a `-sev` variant's launch files) and `release::package` are functions
//! of their inputs only, so that two builds of the same sources give the same bytes; `container`,
//! `base_image`, `build_root`, `upgrade`, `install`, `vm`, `repro` and `release::fetch` drive
//! programs, machines, disks, VMs and downloads and are not.

pub mod base_image;
pub mod build_record;
pub mod build_root;
pub mod calendar;
pub mod container;
pub mod diff;
pub mod exec_log;
pub mod ext4;
pub mod fat;
pub mod fs_input;
pub mod gpt_disk;
pub mod grubenv;
pub mod hashing;
pub mod image_source;
pub mod install;
pub mod io_error;
pub mod layout;
pub mod lvm;
pub mod oci;
pub mod output;
pub mod package;
pub mod partitions;
pub mod release;
pub mod repro;
pub mod rootfs;
pub mod seed;
pub mod sev_launch;
pub mod sha256sums;
pub mod size;
pub mod snp;
pub mod sparse;
pub mod upgrade;
pub mod verity;
pub mod vm;
