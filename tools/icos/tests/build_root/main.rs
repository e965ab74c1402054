//! Integration tests that need the build root's tools; each module covers one image primitive.

#[path = "../common/mod.rs"]
mod common;
mod disk;
mod ext4;
mod fat;
mod grubenv;
mod lvm;
mod pipeline;
mod pkcs11;
mod registry;
mod repart;
mod rootfs;
mod snp;
mod verity;
