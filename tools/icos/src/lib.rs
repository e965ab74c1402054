//! Building blocks of icos disk images: every function here is a pure function of its inputs, so
//! that two builds of the same sources give the same bytes.

pub mod base_image;
pub mod calendar;
pub mod container;
pub mod diff;
pub mod exec_log;
pub mod ext4;
pub mod fat;
pub mod fs_input;
pub mod grubenv;
pub mod gpt_disk;
pub mod oci;
pub mod output;
pub mod package;
pub mod partitions;
pub mod repro;
pub mod rootfs;
pub mod seed;
pub mod sha256sums;
pub mod size;
pub mod upgrade;
pub mod vm;
