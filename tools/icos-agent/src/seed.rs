//! Identifiers derived from a build seed exactly as systemd-repart derives them from its `--seed`,
//! so that they are stable across builds yet distinct between partitions and between products.
//!
//! All derivations are systemd-repart's `derive_uuid()`: HMAC-SHA256 keyed with the 16 bytes of a
//! UUID in text order (as written, most significant byte first; not the mixed-endian GPT on-disk
//! order), over a message, the first 16 bytes of the digest marked as a version 4 UUID:
//!
//! - disk GUID: keyed with the seed, over the string `disk-uuid`;
//! - UUID of the k-th (from 0) partition of a type, counted in table order over all partitions of
//!   that type, UUID given or not: keyed with the seed, over the 16 bytes of the type UUID in text
//!   order, followed for k > 0 by k as a little-endian 64-bit integer;
//! - filesystem UUID: keyed with the UUID of the partition that holds the filesystem (the one the
//!   partition table fixes, or the derived one), over the string `file-system-uuid`. The ext4
//!   directory hash seed is the filesystem UUID itself (repart gives mkfs.ext4 `-U X -E
//!   hash_seed=X`); the FAT volume id is the first four bytes of the filesystem UUID, read as a
//!   big-endian number (repart's `mkfs.vfat -i`).
//!
//! The known answers in the tests below come from systemd-repart; the build-root test
//! `tests/build_root/repart.rs` compares whole disks made by both tools.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// The 128-bit build seed, written as a UUID: systemd-repart's `--seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(Uuid);

#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not a build seed: expected a UUID such as 6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c")]
pub struct SeedParseError {
    value: String,
}

impl FromStr for Seed {
    type Err = SeedParseError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(value).map(Seed).map_err(|_| SeedParseError { value: value.to_owned() })
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// systemd-repart's `derive_uuid()`: HMAC-SHA256 keyed with `key` in text byte order over
/// `message`, the first half of the digest marked as a version 4 (random, RFC 4122 variant) UUID.
fn derive_uuid(key: Uuid, message: &[u8]) -> Uuid {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(message);
    let digest = mac.finalize().into_bytes();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

impl Seed {
    pub fn new(uuid: Uuid) -> Self {
        Seed(uuid)
    }

    /// The disk GUID of a GPT disk built with this seed.
    pub fn disk_guid(&self) -> Uuid {
        derive_uuid(self.0, b"disk-uuid")
    }

    /// The UUID of the `index`-th (from 0) partition of type `type_guid` on the disk, counting
    /// every earlier partition of that type in table order.
    pub fn partition_uuid(&self, type_guid: Uuid, index: u64) -> Uuid {
        let mut message = type_guid.as_bytes().to_vec();
        if index > 0 {
            message.extend_from_slice(&index.to_le_bytes());
        }
        derive_uuid(self.0, &message)
    }

    /// A UUID keyed with the seed over `message`, derived as systemd-repart derives its UUIDs, for
    /// identifiers of other kinds (a dm-verity superblock's, say).
    pub fn derived_uuid(&self, message: &[u8]) -> Uuid {
        derive_uuid(self.0, message)
    }

    /// The whole HMAC-SHA256 digest keyed with the seed over `message`, for identifiers that are
    /// not UUIDs, such as LVM's (systemd-repart has no counterpart: `crate::lvm` names them).
    pub fn digest(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes()).expect("HMAC takes any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

/// The identifiers of a filesystem, all following from its UUID as systemd-repart sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesystemIds {
    /// The filesystem UUID (ext4 `-U`).
    pub uuid: Uuid,
    /// The ext4 directory hash seed: the filesystem UUID (repart's `-E hash_seed=`).
    pub ext4_hash_seed: Uuid,
    /// The FAT volume id (serial number): the first 4 bytes of the filesystem UUID, big-endian
    /// (repart's `mkfs.vfat -i`).
    pub fat_volume_id: u32,
}

impl FilesystemIds {
    /// The identifiers of the filesystem in the partition, or other volume such as an LVM logical
    /// volume, whose UUID is `parent`: the filesystem UUID is derived from `parent` with the token
    /// `file-system-uuid`, as systemd-repart does for the partitions it formats.
    pub fn from_parent(parent: Uuid) -> Self {
        Self::from_uuid(derive_uuid(parent, b"file-system-uuid"))
    }

    /// The identifiers of a filesystem whose UUID is `uuid`.
    pub fn from_uuid(uuid: Uuid) -> Self {
        let bytes = uuid.as_bytes();
        FilesystemIds {
            uuid,
            ext4_hash_seed: uuid,
            fat_volume_id: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(text: &str) -> Uuid {
        Uuid::parse_str(text).unwrap()
    }

    const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
    const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

    /// Known answers of systemd-repart 262 (262.1-1, the Debian sid build root): `systemd-repart
    /// --offline=yes --empty=create --size=512M --dry-run=no --seed=SEED --definitions=D disk.img`
    /// with, in definition order, partitions of `Type=` ESP (`Format=vfat`), Linux filesystem
    /// (`Format=ext4`), Linux, Linux, and Linux with `UUID=FIXED_UUID` (`Format=ext4`), read back
    /// with `sfdisk --json disk.img` and, per partition, `blkid -p` and `dumpe2fs -h`.
    const SEED: &str = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c";
    const DISK_GUID: &str = "13a43f1d-c292-4ec9-b5fc-0f80b7d60498";
    const ESP_UUID: &str = "fa6961c3-d397-4c3a-bca6-b8308464ea30";
    const LINUX_UUIDS: [&str; 3] = [
        "6e1b6220-3bff-48ec-96a4-05f7566e4064",
        "96fd7af1-8f03-46f5-bf6c-cf3363640149",
        "82d40e83-044e-44e3-aa7b-339097e4af80",
    ];
    /// blkid: `UUID=3EEE-39D1`.
    const ESP_VOLUME_ID: u32 = 0x3eee_39d1;
    /// dumpe2fs: the same value as `Filesystem UUID` and as `Directory Hash Seed`.
    const LINUX_0_FS_UUID: &str = "7a1ca0f6-adbc-49f5-b437-0528119cead5";
    const FIXED_UUID: &str = "7c0a626e-e5ea-e543-b5c5-300eb8304db7";
    const FIXED_FS_UUID: &str = "10487666-9188-467e-9b79-b5e10e974928";

    #[test]
    fn partition_and_disk_uuids_are_systemd_repart_s() {
        let seed: Seed = SEED.parse().unwrap();
        assert_eq!(seed.disk_guid(), uuid(DISK_GUID));
        assert_eq!(seed.partition_uuid(uuid(ESP), 0), uuid(ESP_UUID));
        for (index, expected) in LINUX_UUIDS.iter().enumerate() {
            assert_eq!(seed.partition_uuid(uuid(LINUX), index as u64), uuid(expected), "Linux partition {index}");
        }
    }

    #[test]
    fn filesystem_ids_are_systemd_repart_s() {
        let linux = FilesystemIds::from_parent(uuid(LINUX_UUIDS[0]));
        assert_eq!(linux.uuid, uuid(LINUX_0_FS_UUID));
        assert_eq!(linux.ext4_hash_seed, linux.uuid);
        assert_eq!(FilesystemIds::from_parent(uuid(ESP_UUID)).fat_volume_id, ESP_VOLUME_ID);
        // A UUID the table fixes is the parent as well.
        assert_eq!(FilesystemIds::from_parent(uuid(FIXED_UUID)).uuid, uuid(FIXED_FS_UUID));
    }

    #[test]
    fn fat_volume_id_is_the_first_four_bytes_big_endian() {
        let ids = FilesystemIds::from_uuid(uuid("12345678-9abc-4def-8123-456789abcdef"));
        assert_eq!(ids.fat_volume_id, 0x1234_5678);
    }

    #[test]
    fn a_bad_seed_says_what_is_expected() {
        let error = "not-a-uuid".parse::<Seed>().unwrap_err();
        assert!(error.to_string().contains("expected a UUID"), "{error}");
    }
}
