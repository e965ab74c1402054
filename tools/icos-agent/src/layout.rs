//! The layout of an OS disk as data (`layout.json`): every partition and LVM logical volume with
//! its place, size and the UUID its filesystem identifiers derive from, the boot slots made of
//! them, and the GRUB partition. `icos layout` resolves it from the OS's tables at build time
//! (`icos::layout`); the image carries it at [`INSTALLED_LAYOUT`], where the upgrade agent finds
//! the running slot and the targets of the other one, and the installer reads it to write HostOS's
//! volumes without activating its volume group.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version of the `layout.json` format. Version 2 added each target's `offset`.
pub const LAYOUT_VERSION: u32 = 2;
/// Where the image carries its layout, for the upgrade agent.
pub const INSTALLED_LAYOUT: &str = "/opt/icos/share/layout.json";
/// The roles a slot member can have: the filesystems `icos rootfs split` makes, mounted at `/`,
/// `/boot` and `/var`.
pub const ROLES: [&str; 3] = ["boot", "root", "var"];
/// Where the booted system mounts the GRUB partition, and so where the agent finds grubenv.
pub const GRUB_MOUNT: &str = "/grub";
/// The device-mapper name under which the initramfs opens a verity root: the agent recognises the
/// running slot's root by it.
pub const VERITY_ROOT_DEVICE_NAME: &str = "vroot";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// Where a partition or volume is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// A GPT partition: its number (from 1) and partition UUID.
    Partition { number: u32, uuid: Uuid },
    /// A linear logical volume: its volume group, device-mapper name (`vg-lv`, dashes doubled)
    /// and LVM UUID.
    Volume { volume_group: String, dm_name: String, uuid: String },
}

/// A partition or logical volume of the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    #[serde(flatten)]
    pub location: Location,
    /// Where it starts, in bytes from the start of the disk: an installer writes a volume's
    /// content there without activating the volume group.
    pub offset: u64,
    /// The size in bytes.
    pub size: u64,
    /// The UUID the identifiers of a filesystem here derive from ([`crate::seed::FilesystemIds::from_parent`]):
    /// the partition UUID, or for a volume one derived from the seed and its LVM UUID.
    pub filesystem_parent: Uuid,
}

impl Target {
    /// How the kernel command line names it (`root=`, `systemd.mount-extra=`).
    pub fn kernel_device(&self) -> String {
        match &self.location {
            Location::Partition { uuid, .. } => format!("PARTUUID={uuid}"),
            Location::Volume { dm_name, .. } => format!("/dev/mapper/{dm_name}"),
        }
    }

    /// How GRUB names it, with `$boot_disk` the disk GRUB was loaded from.
    pub fn grub_device(&self) -> String {
        match &self.location {
            Location::Partition { number, .. } => format!("($boot_disk,gpt{number})"),
            Location::Volume { dm_name, .. } => format!("(lvm/{dm_name})"),
        }
    }
}

/// A boot slot: its name (`A`, `B`) and the target of each role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub name: String,
    pub members: BTreeMap<String, Target>,
}

/// The volume group inside one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeGroupInfo {
    pub name: String,
    pub partition: String,
    pub extent_size: u64,
}

/// The resolved layout: `layout.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub version: u32,
    /// The GRUB partition, which holds grubenv.
    pub grub: Target,
    pub volume_group: Option<VolumeGroupInfo>,
    pub slots: Vec<Slot>,
    /// Every partition and volume, in table order (partitions first).
    pub targets: Vec<Target>,
}

impl Layout {
    /// Reads a `layout.json`.
    pub fn read(path: &Path) -> Result<Layout, LayoutError> {
        let text = fs::read_to_string(path).map_err(|source| LayoutError::Read { path: path.to_owned(), source })?;
        let layout: Layout = serde_json::from_str(&text)
            .map_err(|error| LayoutError::Invalid { path: path.to_owned(), problem: error.to_string() })?;
        if layout.version != LAYOUT_VERSION {
            return Err(LayoutError::Invalid {
                path: path.to_owned(),
                problem: format!("layout version {}, but this icos reads version {LAYOUT_VERSION}", layout.version),
            });
        }
        Ok(layout)
    }

    /// The JSON text, one key per line, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a layout always serialises");
        text.push('\n');
        text
    }

    /// The partition or volume called `name`.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|target| target.name == name)
    }

    /// The slot called `name`.
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|slot| slot.name == name)
    }
}
