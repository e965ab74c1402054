//! Identifiers derived from a build seed, so that UUIDs, hash seeds and volume ids are stable
//! across builds yet distinct between partitions and between products.
//!
//! Partition and disk UUIDs follow systemd-repart: HMAC-SHA256 keyed with the 128-bit seed over
//! the partition type UUID (plus a little-endian counter for the second and later partitions of one
//! type), or over the string `disk-uuid`, with the first 16 bytes marked as a version 4 UUID.
//! Filesystem identifiers are keyed the same way over `icos-<purpose>/<partition name>`.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// The 128-bit build seed, written as a UUID.
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

impl Seed {
    pub fn new(uuid: Uuid) -> Self {
        Seed(uuid)
    }

    fn hmac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes()).expect("HMAC takes any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    fn derive_uuid(&self, message: &[u8]) -> Uuid {
        let digest = self.hmac(message);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// The disk GUID of a GPT disk built with this seed.
    pub fn disk_guid(&self) -> Uuid {
        self.derive_uuid(b"disk-uuid")
    }

    /// The UUID of the `index`-th (from 0) partition of type `type_guid` on the disk.
    pub fn partition_uuid(&self, type_guid: Uuid, index: u64) -> Uuid {
        // systemd-repart hashes the type UUID in its on-disk (GPT, mixed-endian) byte order.
        let mut message = type_guid.to_bytes_le().to_vec();
        if index > 0 {
            message.extend_from_slice(&index.to_le_bytes());
        }
        self.derive_uuid(&message)
    }

    /// The filesystem UUID of the filesystem in partition `partition_name`.
    pub fn filesystem_uuid(&self, partition_name: &str) -> Uuid {
        self.derive_uuid(format!("icos-filesystem-uuid/{partition_name}").as_bytes())
    }

    /// The ext4 directory hash seed of the filesystem in partition `partition_name`.
    pub fn ext4_hash_seed(&self, partition_name: &str) -> Uuid {
        self.derive_uuid(format!("icos-ext4-hash-seed/{partition_name}").as_bytes())
    }

    /// The FAT volume id (serial number) of the filesystem in partition `partition_name`.
    pub fn fat_volume_id(&self, partition_name: &str) -> u32 {
        let digest = self.hmac(format!("icos-fat-volume-id/{partition_name}").as_bytes());
        u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Seed {
        "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c".parse().unwrap()
    }

    #[test]
    fn derivations_are_stable_version_4_uuids() {
        let linux = Uuid::parse_str("0fc63daf-8483-4772-8e79-3d69d8477de4").unwrap();
        let first = seed().partition_uuid(linux, 0);
        assert_eq!(first, seed().partition_uuid(linux, 0));
        assert_eq!(first.get_version_num(), 4);
        assert_ne!(first, seed().partition_uuid(linux, 1));
        assert_ne!(seed().filesystem_uuid("boot_a"), seed().filesystem_uuid("boot_b"));
        assert_ne!(seed().filesystem_uuid("root_a"), seed().ext4_hash_seed("root_a"));
        assert_ne!(seed().disk_guid(), Seed::new(Uuid::nil()).disk_guid());
    }

    #[test]
    fn matches_hmac_sha256_by_hand() {
        // HMAC-SHA256 with key = 16 zero bytes over "disk-uuid", first 16 bytes, version 4 bits set.
        let mut mac = Hmac::<Sha256>::new_from_slice(&[0u8; 16]).unwrap();
        mac.update(b"disk-uuid");
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        assert_eq!(Seed::new(Uuid::nil()).disk_guid(), Uuid::from_bytes(bytes));
    }

    #[test]
    fn a_bad_seed_says_what_is_expected() {
        let error = "not-a-uuid".parse::<Seed>().unwrap_err();
        assert!(error.to_string().contains("expected a UUID"), "{error}");
    }
}
