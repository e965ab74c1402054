//! Which slot runs and where the targets of the other slot are, from the kernel's view under a
//! system root (`/` in production, a fake tree in tests) and the installed layout: the mount table
//! gives the device number of the root file system, and sysfs what that device is. A device-mapper
//! device (an LVM logical volume) is known by its `dm/name`, a partition by its GPT name; the slot
//! whose root target is that volume or partition is the one running. The other slot's partitions
//! are found by name on the same disk, its volumes by their device-mapper names. No device name
//! such as vda5 or dm-3 is assumed, so the agent writes to the disk it booted from.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Slot, UpgradeError};
use crate::layout::{Layout, Location, Target};

/// The unit of sysfs `size` files.
const SECTOR_SIZE: u64 = 512;

/// A block device that holds, or is to hold, a target of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// How the kernel knows it: the GPT partition name (`B_root`) or the device-mapper name
    /// (`hostlvm-B_root`).
    pub name: String,
    pub kind: DeviceKind,
    /// The kernel's device name, such as `vda8` or `dm-3`.
    pub devname: String,
    /// The device node, under the system root.
    pub device: PathBuf,
    /// The size in bytes.
    pub size: u64,
}

/// What a [`BlockDevice`] is, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Partition,
    Volume,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            DeviceKind::Partition => "partition",
            DeviceKind::Volume => "volume",
        })
    }
}

/// The running slot, its root device, and where the targets of the layout are.
#[derive(Debug)]
pub struct System {
    pub slot: Slot,
    /// The device of the root file system.
    pub root: BlockDevice,
    /// The system root, under which sysfs and the device nodes are.
    system_root: PathBuf,
    /// The sysfs directory of the disk whose partitions are targets: the root partition's disk,
    /// or for a root on device-mapper the disk of the partitions under it (its `slaves`), if they
    /// are partitions of one disk.
    disk: Option<PathBuf>,
    /// The named partitions of `disk`.
    partitions: Vec<BlockDevice>,
}

impl System {
    /// Finds the root file system's device through `<root>/proc/self/mountinfo` and
    /// `<root>/sys/dev/block`, the slot of `layout` whose root target it is, and the partitions of
    /// its disk.
    pub fn discover(root: &Path, layout: &Layout) -> Result<System, UpgradeError> {
        let mountinfo_path = root.join("proc/self/mountinfo");
        let mountinfo = read_text(&mountinfo_path)?;
        let number = root_device_number(&mountinfo)
            .map_err(|problem| UpgradeError::System { path: mountinfo_path.clone(), problem })?;
        let mut device_dir = resolve_block_device(root, number)?;
        // A verity root (`crate::layout::VERITY_ROOT_DEVICE_NAME`, opened by the initramfs): the slot's
        // root is the partition it verifies.
        if read_dm_name(&device_dir)?.as_deref() == Some(crate::layout::VERITY_ROOT_DEVICE_NAME) {
            device_dir = only_slave(root, &device_dir)?;
        }
        let uevent_path = device_dir.join("uevent");
        let uevent = Uevent::parse(&read_text(&uevent_path)?);
        let devname = uevent
            .devname
            .ok_or_else(|| UpgradeError::System { path: uevent_path, problem: "DEVNAME is missing".into() })?;
        let not_a_slot =
            |found: String| UpgradeError::NotASlot { device: devname.clone(), found, roots: describe_roots(layout) };

        if let Some(dm_name) = read_dm_name(&device_dir)? {
            // A logical volume (or another device-mapper device): its device-mapper name is the
            // identity, the slot is the one whose root is the volume of that name.
            let slot = find_slot(
                layout,
                |target| matches!(&target.location, Location::Volume { dm_name: name, .. } if *name == dm_name),
            )
            .ok_or_else(|| not_a_slot(format!("device-mapper device {dm_name:?}")))?;
            let size = read_size(&device_dir)?;
            let device = root.join("dev").join(&devname);
            let root_device = BlockDevice { name: dm_name, kind: DeviceKind::Volume, devname, device, size };
            let disk = disk_under(root, &device_dir)?;
            let partitions = match &disk {
                Some(disk) => read_partitions(root, disk)?,
                None => Vec::new(),
            };
            return Ok(System { slot, root: root_device, system_root: root.to_owned(), disk, partitions });
        }

        let partname = uevent
            .partname
            .ok_or_else(|| not_a_slot("no GPT partition name, and not a device-mapper device".into()))?;
        let slot = find_slot(layout, |target| {
            matches!(target.location, Location::Partition { .. }) && target.name == partname
        })
        .ok_or_else(|| not_a_slot(format!("partition {partname:?}")))?;
        let disk = match device_dir.parent() {
            Some(disk) => disk.to_owned(),
            None => return Err(UpgradeError::System { path: device_dir, problem: "it has no parent disk".into() }),
        };
        let partitions = read_partitions(root, &disk)?;
        let root_partition =
            partitions.iter().find(|partition| partition.devname == devname).cloned().ok_or_else(|| {
                UpgradeError::System { path: disk.clone(), problem: format!("{devname} is not among its partitions") }
            })?;
        Ok(System { slot, root: root_partition, system_root: root.to_owned(), disk: Some(disk), partitions })
    }

    /// The block device of `target`: the partition of that GPT name on the disk of the root file
    /// system, or the device-mapper device of the volume.
    pub fn device(&self, target: &Target) -> Result<BlockDevice, UpgradeError> {
        match &target.location {
            Location::Partition { .. } => {
                let disk = self.disk.as_ref().ok_or_else(|| UpgradeError::NoDisk {
                    name: target.name.clone(),
                    root: self.root.name.clone(),
                    devname: self.root.devname.clone(),
                })?;
                self.partitions
                    .iter()
                    .find(|partition| partition.name == target.name)
                    .cloned()
                    .ok_or_else(|| UpgradeError::NoPartition { disk: disk.clone(), name: target.name.clone() })
            }
            Location::Volume { volume_group, dm_name, .. } => {
                find_dm_device(&self.system_root, dm_name)?.ok_or_else(|| UpgradeError::NoVolume {
                    dm_name: dm_name.clone(),
                    volume_group: volume_group.clone(),
                    path: self.system_root.join("sys/block"),
                })
            }
        }
    }
}

/// The slot of `layout` whose root target passes `matches`. Slots with other names than A and B
/// or without a root are refused when the layout is loaded.
fn find_slot(layout: &Layout, matches: impl Fn(&Target) -> bool) -> Option<Slot> {
    layout
        .slots
        .iter()
        .filter(|slot| slot.members.get("root").is_some_and(&matches))
        .find_map(|slot| Slot::parse(&slot.name))
}

/// The root targets of the layout's slots, for errors: `A: partition "A_root", B: ...`.
fn describe_roots(layout: &Layout) -> String {
    let roots: Vec<String> = layout
        .slots
        .iter()
        .map(|slot| match slot.members.get("root").map(|target| (&target.name, &target.location)) {
            Some((name, Location::Partition { .. })) => format!("{}: partition {name:?}", slot.name),
            Some((_, Location::Volume { dm_name, .. })) => format!("{}: device-mapper device {dm_name:?}", slot.name),
            None => format!("{}: none", slot.name),
        })
        .collect();
    roots.join(", ")
}

fn read_text(path: &Path) -> Result<String, UpgradeError> {
    fs::read_to_string(path).map_err(|source| UpgradeError::Read { path: path.to_owned(), source })
}

/// The text of `path`, or None when it does not exist.
fn read_optional_text(path: &Path) -> Result<Option<String>, UpgradeError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UpgradeError::Read { path: path.to_owned(), source }),
    }
}

/// The device-mapper name of the block device whose sysfs directory is `dir`, if it is one.
fn read_dm_name(dir: &Path) -> Result<Option<String>, UpgradeError> {
    let path = dir.join("dm/name");
    match read_optional_text(&path)? {
        None => Ok(None),
        Some(text) => {
            let name = text.trim_end_matches('\n');
            if name.is_empty() {
                return Err(UpgradeError::System { path, problem: "the device-mapper name is empty".into() });
            }
            Ok(Some(name.to_owned()))
        }
    }
}

/// The size in bytes of the block device whose sysfs directory is `dir`.
fn read_size(dir: &Path) -> Result<u64, UpgradeError> {
    let size_path = dir.join("size");
    let sectors: u64 = read_text(&size_path)?
        .trim()
        .parse()
        .map_err(|_| UpgradeError::System { path: size_path.clone(), problem: "not a number of sectors".into() })?;
    sectors.checked_mul(SECTOR_SIZE).ok_or_else(|| UpgradeError::System {
        path: size_path,
        problem: format!("{sectors} sectors do not fit in 64 bits of bytes"),
    })
}

/// The `MAJOR:MINOR` of the file system mounted on `/`: of the last such entry, which hides the
/// ones before it (an initramfs root under the real one).
fn root_device_number(mountinfo: &str) -> Result<&str, String> {
    let mut found = None;
    for (index, line) in mountinfo.lines().enumerate() {
        // ID PARENT MAJOR:MINOR ROOT MOUNT-POINT OPTIONS ...; spaces in paths are escaped as \040.
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 5 {
            return Err(format!("line {} is not a mount entry: {line:?}", index + 1));
        }
        if fields[4] == "/" {
            found = Some(fields[2]);
        }
    }
    let number = found.ok_or("nothing is mounted on /")?;
    match number.split_once(':') {
        Some((major, minor)) if major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok() => Ok(number),
        _ => Err(format!("the device of / is {number:?}, not MAJOR:MINOR")),
    }
}

/// The sysfs directory of block device `number`: `<root>/sys/dev/block/<number>`, resolved with
/// [`resolve_inside`].
fn resolve_block_device(root: &Path, number: &str) -> Result<PathBuf, UpgradeError> {
    let link = root.join("sys/dev/block").join(number);
    match fs::symlink_metadata(&link) {
        Ok(_) => resolve_inside(root, &link),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(UpgradeError::System {
            path: link,
            problem: format!("no block device {number}: the root file system is not on a disk partition or volume"),
        }),
        Err(source) => Err(UpgradeError::Read { path: link, source }),
    }
}

/// `link` with its symlink followed inside `root` (an absolute target is taken relative to
/// `root`, a relative one, which is what sysfs has, relative to the link), made canonical so that
/// the parent of a partition's directory is its disk.
fn resolve_inside(root: &Path, link: &Path) -> Result<PathBuf, UpgradeError> {
    let read_error = |source| UpgradeError::Read { path: link.to_owned(), source };
    let metadata = fs::symlink_metadata(link).map_err(read_error)?;
    let target = if metadata.file_type().is_symlink() {
        let target = fs::read_link(link).map_err(read_error)?;
        match target.strip_prefix("/") {
            Ok(inside_root) => root.join(inside_root),
            Err(_) => link.parent().unwrap_or(root).join(target),
        }
    } else {
        link.to_owned()
    };
    fs::canonicalize(&target).map_err(|source| UpgradeError::Read { path: target, source })
}

/// The disk under the device-mapper device whose sysfs directory is `dm_dir`: the disk of the
/// partitions in its `slaves`, if they are partitions of one disk (a linear volume group on one
/// partition, as icos builds it). Partition targets of a root on LVM are looked for there.
fn disk_under(root: &Path, dm_dir: &Path) -> Result<Option<PathBuf>, UpgradeError> {
    let slaves = dm_dir.join("slaves");
    let read_error = |source| UpgradeError::Read { path: slaves.clone(), source };
    let entries = match fs::read_dir(&slaves) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(source)),
    };
    let mut disk: Option<PathBuf> = None;
    for entry in entries {
        let slave = resolve_inside(root, &entry.map_err(read_error)?.path())?;
        let uevent = Uevent::parse(&read_text(&slave.join("uevent"))?);
        // A whole disk or a stacked device-mapper device: no disk whose partitions to search.
        if uevent.devtype.as_deref() != Some("partition") {
            return Ok(None);
        }
        let parent = slave.parent().map(Path::to_owned);
        match (&disk, parent) {
            (_, None) => return Ok(None),
            (None, Some(parent)) => disk = Some(parent),
            (Some(known), Some(parent)) if *known == parent => {}
            (Some(_), Some(_)) => return Ok(None),
        }
    }
    Ok(disk)
}

/// The sysfs directory of the one device under the device-mapper device whose sysfs directory is
/// `dm_dir` (a verity root has its data and hash tree on one partition).
fn only_slave(root: &Path, dm_dir: &Path) -> Result<PathBuf, UpgradeError> {
    let slaves = dm_dir.join("slaves");
    let read_error = |source| UpgradeError::Read { path: slaves.clone(), source };
    let mut entries = Vec::new();
    for entry in fs::read_dir(&slaves).map_err(read_error)? {
        entries.push(entry.map_err(read_error)?.path());
    }
    match entries.as_slice() {
        [only] => resolve_inside(root, only),
        _ => Err(UpgradeError::System {
            path: slaves.clone(),
            problem: format!("a verity root is on one partition, not on {} devices", entries.len()),
        }),
    }
}

/// The device-mapper device named `dm_name`: the entry of `<root>/sys/block` whose `dm/name` it
/// is, with its device node from the uevent's DEVNAME under `<root>/dev`.
fn find_dm_device(root: &Path, dm_name: &str) -> Result<Option<BlockDevice>, UpgradeError> {
    let block = root.join("sys/block");
    let read_error = |source| UpgradeError::Read { path: block.clone(), source };
    for entry in fs::read_dir(&block).map_err(read_error)? {
        let dir = resolve_inside(root, &entry.map_err(read_error)?.path())?;
        if read_dm_name(&dir)?.as_deref() != Some(dm_name) {
            continue;
        }
        let uevent_path = dir.join("uevent");
        let devname = Uevent::parse(&read_text(&uevent_path)?).devname.ok_or_else(|| UpgradeError::System {
            path: uevent_path.clone(),
            problem: format!("device-mapper device {dm_name:?} has no DEVNAME"),
        })?;
        let size = read_size(&dir)?;
        let device = root.join("dev").join(&devname);
        return Ok(Some(BlockDevice { name: dm_name.to_owned(), kind: DeviceKind::Volume, devname, device, size }));
    }
    Ok(None)
}

/// The fields of a sysfs `uevent` file that name a block device.
#[derive(Debug, Default, PartialEq, Eq)]
struct Uevent {
    devname: Option<String>,
    devtype: Option<String>,
    partname: Option<String>,
}

impl Uevent {
    /// Parses `KEY=VALUE` lines; other keys are ignored.
    fn parse(text: &str) -> Uevent {
        let mut uevent = Uevent::default();
        for (key, value) in text.lines().filter_map(|line| line.split_once('=')) {
            match key {
                "DEVNAME" => uevent.devname = Some(value.to_owned()),
                "DEVTYPE" => uevent.devtype = Some(value.to_owned()),
                "PARTNAME" => uevent.partname = Some(value.to_owned()),
                _ => {}
            }
        }
        uevent
    }
}

/// The named partitions in the disk's sysfs directory `disk`: its subdirectories whose uevent has
/// a PARTNAME. The symlinks there (`device`, `bdi`, `subsystem`) lead elsewhere and are skipped.
fn read_partitions(root: &Path, disk: &Path) -> Result<Vec<BlockDevice>, UpgradeError> {
    let read_error = |source| UpgradeError::Read { path: disk.to_owned(), source };
    let mut partitions: Vec<BlockDevice> = Vec::new();
    for entry in fs::read_dir(disk).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        if !entry.file_type().map_err(read_error)?.is_dir() {
            continue;
        }
        let dir = entry.path();
        let uevent_path = dir.join("uevent");
        let Some(text) = read_optional_text(&uevent_path)? else {
            continue;
        };
        let Uevent { devname, partname: Some(name), .. } = Uevent::parse(&text) else {
            continue;
        };
        let devname = devname.ok_or_else(|| UpgradeError::System {
            path: uevent_path.clone(),
            problem: format!("partition {name:?} has no DEVNAME"),
        })?;
        if partitions.iter().any(|partition| partition.name == name) {
            return Err(UpgradeError::DuplicatePartition { disk: disk.to_owned(), name });
        }
        let size = read_size(&dir)?;
        let device = root.join("dev").join(&devname);
        partitions.push(BlockDevice { name, kind: DeviceKind::Partition, devname, device, size });
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const MOUNTINFO: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
1 0 0:2 / / rw - rootfs rootfs rw
28 1 252:5 / / ro,relatime shared:1 - ext4 /dev/vda5 ro
30 28 252:6 / /var rw,relatime shared:2 - ext4 /dev/vda6 rw
31 28 252:2 / /mnt/with\\040space rw - vfat /dev/vda2 rw
";

    #[test]
    fn the_last_mount_on_root_gives_the_device_number() {
        assert_eq!(root_device_number(MOUNTINFO).unwrap(), "252:5");
        let error = root_device_number("30 28 252:6 / /var rw - ext4 /dev/vda6 rw\n").unwrap_err();
        assert!(error.contains("nothing is mounted on /"), "{error}");
        assert!(root_device_number("1 0 vda / / rw - ext4 /dev/vda rw\n").unwrap_err().contains("MAJOR:MINOR"));
        assert!(root_device_number("garbage\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn uevents_give_the_device_and_partition_names() {
        let text = "MAJOR=252\nMINOR=8\nDEVNAME=vda8\nDEVTYPE=partition\nPARTN=8\nPARTNAME=B_root\n";
        assert_eq!(
            Uevent::parse(text),
            Uevent { devname: Some("vda8".into()), devtype: Some("partition".into()), partname: Some("B_root".into()) }
        );
        assert_eq!(Uevent::parse("MAJOR=252\nDEVNAME=vda\nDEVTYPE=disk\n").partname, None);
    }

    /// The layouts of a GuestOS-like disk (partitions 1 to 9, slots on 4 to 9) and of HostOS-like
    /// disks (volume group `hostlvm` in partition 3, each slot's root and var on volumes and its
    /// boot on partitions 4 (A) and 5 (B) of the disk or on volumes): what `icos layout` resolves,
    /// which a test of `icos::layout` checks.
    fn gpt_layout() -> Layout {
        serde_json::from_str(include_str!("testdata/gpt-layout.json")).unwrap()
    }

    fn lvm_layout(boot_partitions: bool) -> Layout {
        let text = if boot_partitions {
            include_str!("testdata/lvm-boot-partitions-layout.json")
        } else {
            include_str!("testdata/lvm-layout.json")
        };
        serde_json::from_str(text).unwrap()
    }

    const DISK: &str = "sys/devices/pci0000:00/virtio1/block/vda";

    /// A sysfs disk `vda` with the named partitions `(number, name, sectors)` under `root`, and
    /// `/` mounted from partition `root_number`; `absolute` makes the sys/dev/block links absolute.
    fn fake_system(root: &Path, partitions: &[(u32, &str, u64)], root_number: u32, absolute: bool) {
        let disk = root.join(DISK);
        fs::create_dir_all(disk.join("queue")).unwrap();
        fs::write(disk.join("uevent"), "MAJOR=252\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        symlink("../../../virtio1", disk.join("device")).unwrap();
        fs::create_dir_all(root.join("sys/dev/block")).unwrap();
        fs::create_dir_all(root.join("sys/block")).unwrap();
        for &(number, name, sectors) in partitions {
            let dir = disk.join(format!("vda{number}"));
            fs::create_dir(&dir).unwrap();
            let uevent =
                format!("MAJOR=252\nMINOR={number}\nDEVNAME=vda{number}\nDEVTYPE=partition\nPARTNAME={name}\n");
            fs::write(dir.join("uevent"), uevent).unwrap();
            fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
            let target = if absolute {
                PathBuf::from(format!("/{DISK}/vda{number}"))
            } else {
                PathBuf::from(format!("../../devices/pci0000:00/virtio1/block/vda/vda{number}"))
            };
            symlink(target, root.join(format!("sys/dev/block/252:{number}"))).unwrap();
        }
        fs::create_dir_all(root.join("proc/self")).unwrap();
        mount_root(root, &format!("252:{root_number}"));
    }

    fn mount_root(root: &Path, number: &str) {
        let mountinfo = format!("28 1 {number} / / ro - ext4 /dev/root ro\n");
        fs::write(root.join("proc/self/mountinfo"), mountinfo).unwrap();
    }

    /// Device-mapper device dm-`number` (254:`number`) named `name`, of `sectors`, on the
    /// partitions `slaves` of vda; `absolute` makes its sys/block and sys/dev/block links absolute.
    fn fake_dm(root: &Path, number: u32, name: &str, sectors: u64, slaves: &[u32], absolute: bool) {
        let dir = root.join(format!("sys/devices/virtual/block/dm-{number}"));
        fs::create_dir_all(dir.join("dm")).unwrap();
        fs::create_dir_all(dir.join("slaves")).unwrap();
        fs::write(dir.join("dm/name"), format!("{name}\n")).unwrap();
        fs::write(dir.join("uevent"), format!("MAJOR=254\nMINOR={number}\nDEVNAME=dm-{number}\nDEVTYPE=disk\n"))
            .unwrap();
        fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
        for slave in slaves {
            symlink(
                format!("../../../../pci0000:00/virtio1/block/vda/vda{slave}"),
                dir.join(format!("slaves/vda{slave}")),
            )
            .unwrap();
        }
        let (block, dev_block) = if absolute {
            let target = format!("/sys/devices/virtual/block/dm-{number}");
            (target.clone(), target)
        } else {
            (format!("../devices/virtual/block/dm-{number}"), format!("../../devices/virtual/block/dm-{number}"))
        };
        symlink(block, root.join(format!("sys/block/dm-{number}"))).unwrap();
        symlink(dev_block, root.join(format!("sys/dev/block/254:{number}"))).unwrap();
    }

    /// vda's partitions in [`gpt_layout`], without the var ones.
    const PARTITIONS: [(u32, &str, u64); 4] =
        [(4, "A_boot", 8), (5, "A_root", 16), (7, "B_boot", 8), (8, "B_root", 32)];

    #[test]
    fn a_verity_root_is_the_slot_of_the_partition_it_verifies() {
        let layout = gpt_layout();
        let dir = tempfile::tempdir().unwrap();
        fake_system(dir.path(), &PARTITIONS, 5, false);
        fake_dm(dir.path(), 0, "vroot", 14, &[5], false);
        mount_root(dir.path(), "254:0");
        let system = System::discover(dir.path(), &layout).unwrap();
        assert_eq!(system.slot, Slot::A);
        assert_eq!((system.root.name.as_str(), system.root.kind), ("A_root", DeviceKind::Partition));
        let other = system.device(&layout.slot("B").unwrap().members["root"]).unwrap();
        assert_eq!(other.devname, "vda8");

        fs::remove_file(dir.path().join("sys/devices/virtual/block/dm-0/slaves/vda5")).unwrap();
        let error = System::discover(dir.path(), &layout).unwrap_err().to_string();
        assert!(error.contains("a verity root is on one partition, not on 0 devices"), "{error}");
    }

    #[test]
    fn discovery_follows_relative_and_absolute_links_inside_the_root() {
        let layout = gpt_layout();
        for absolute in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            fake_system(dir.path(), &PARTITIONS, 8, absolute);
            let system = System::discover(dir.path(), &layout).unwrap();
            assert_eq!(system.slot, Slot::B);
            assert_eq!((system.root.name.as_str(), system.root.kind), ("B_root", DeviceKind::Partition));
            let boot = system.device(&layout.slot("A").unwrap().members["boot"]).unwrap();
            assert_eq!((boot.devname.as_str(), boot.size), ("vda4", 8 * 512));
            assert_eq!(boot.device, dir.path().join("dev/vda4"));
            let error = system.device(&layout.slot("A").unwrap().members["var"]).unwrap_err();
            assert!(matches!(&error, UpgradeError::NoPartition { name, .. } if name == "A_var"), "{error}");
        }
    }

    #[test]
    fn a_root_outside_the_slots_or_an_ambiguous_disk_is_refused() {
        let layout = gpt_layout();
        let dir = tempfile::tempdir().unwrap();
        fake_system(dir.path(), &[(3, "config", 8), (5, "A_root", 8)], 3, false);
        let error = System::discover(dir.path(), &layout).unwrap_err().to_string();
        assert!(
            error.contains(
                "the root file system is on vda3 (partition \"config\"), which is no slot's root: \
                 the layout's slot roots are A: partition \"A_root\", B: partition \"B_root\""
            ),
            "{error}"
        );

        let dir = tempfile::tempdir().unwrap();
        fake_system(dir.path(), &[(5, "A_root", 8), (8, "A_root", 8)], 5, false);
        assert!(matches!(System::discover(dir.path(), &layout), Err(UpgradeError::DuplicatePartition { .. })));

        let dir = tempfile::tempdir().unwrap();
        fake_system(dir.path(), &PARTITIONS, 5, false);
        fs::write(dir.path().join("proc/self/mountinfo"), "28 1 0:31 / / rw - overlay overlay rw\n").unwrap();
        let error = System::discover(dir.path(), &layout).unwrap_err().to_string();
        assert!(error.contains("no block device 0:31"), "{error}");

        // The slot roots are volumes, the root file system is on a partition of the same name.
        let dir = tempfile::tempdir().unwrap();
        fake_system(dir.path(), &PARTITIONS, 5, false);
        let error = System::discover(dir.path(), &lvm_layout(false)).unwrap_err().to_string();
        assert!(
            error.contains(
                "on vda5 (partition \"A_root\"), which is no slot's root: the layout's slot roots are \
                 A: device-mapper device \"hostlvm-A_root\", B: device-mapper device \"hostlvm-B_root\""
            ),
            "{error}"
        );
    }

    /// vda with the volume group's partition 3 and the boot partitions of [`lvm_layout`], and the
    /// volumes as dm-0 to dm-6 (dm-5 and dm-6 the boot volumes); `/` on `root_dm`.
    fn fake_lvm_system(root: &Path, root_dm: u32, absolute: bool) {
        fake_system(root, &[(3, "hostlvm", 65536), (4, "A_boot", 2048), (5, "B_boot", 2048)], 3, absolute);
        let volumes = [
            (0, "hostlvm-config", 2048),
            (1, "hostlvm-A_root", 4096),
            (2, "hostlvm-A_var", 2048),
            (3, "hostlvm-B_root", 4096),
            (4, "hostlvm-B_var", 2048),
            (5, "hostlvm-vol_A_boot", 2048),
            (6, "hostlvm-vol_B_boot", 2048),
        ];
        for (number, name, sectors) in volumes {
            fake_dm(root, number, name, sectors, &[3], absolute);
        }
        mount_root(root, &format!("254:{root_dm}"));
    }

    #[test]
    fn a_root_on_a_logical_volume_gives_the_slot_and_the_other_slots_volumes() {
        for absolute in [false, true] {
            let layout = lvm_layout(false);
            let dir = tempfile::tempdir().unwrap();
            fake_lvm_system(dir.path(), 3, absolute);
            let system = System::discover(dir.path(), &layout).unwrap();
            assert_eq!(system.slot, Slot::B);
            assert_eq!(
                system.root,
                BlockDevice {
                    name: "hostlvm-B_root".into(),
                    kind: DeviceKind::Volume,
                    devname: "dm-3".into(),
                    device: dir.path().join("dev/dm-3"),
                    size: 4096 * 512,
                }
            );
            let slot_a = layout.slot("A").unwrap();
            let found: Vec<(String, String, u64)> = slot_a
                .members
                .values()
                .map(|target| system.device(target).unwrap())
                .map(|device| (device.name, device.devname, device.size))
                .collect();
            assert_eq!(
                found,
                [
                    ("hostlvm-vol_A_boot".to_owned(), "dm-5".to_owned(), 2048 * 512),
                    ("hostlvm-A_root".to_owned(), "dm-1".to_owned(), 4096 * 512),
                    ("hostlvm-A_var".to_owned(), "dm-2".to_owned(), 2048 * 512),
                ]
            );
        }
    }

    #[test]
    fn partition_targets_of_a_root_on_lvm_are_on_the_disk_under_the_volume_group() {
        let layout = lvm_layout(true);
        let dir = tempfile::tempdir().unwrap();
        fake_lvm_system(dir.path(), 1, false);
        let system = System::discover(dir.path(), &layout).unwrap();
        assert_eq!(system.slot, Slot::A);
        let boot = system.device(&layout.slot("B").unwrap().members["boot"]).unwrap();
        assert_eq!((boot.name.as_str(), boot.kind, boot.devname.as_str()), ("B_boot", DeviceKind::Partition, "vda5"));

        // Without slaves (or on a stacked device) there is no disk to look on.
        fs::remove_file(dir.path().join("sys/devices/virtual/block/dm-1/slaves/vda3")).unwrap();
        let system = System::discover(dir.path(), &layout).unwrap();
        let error = system.device(&layout.slot("B").unwrap().members["boot"]).unwrap_err().to_string();
        let expected =
            "no partition B_boot can be found: the root file system is on device-mapper device hostlvm-A_root (dm-1)";
        assert!(error.contains(expected), "{error}");
    }

    #[test]
    fn an_unknown_or_missing_volume_is_named() {
        let layout = lvm_layout(false);
        let dir = tempfile::tempdir().unwrap();
        fake_lvm_system(dir.path(), 0, false);
        let error = System::discover(dir.path(), &layout).unwrap_err().to_string();
        assert!(
            error.contains(
                "the root file system is on dm-0 (device-mapper device \"hostlvm-config\"), which is no slot's \
                 root: the layout's slot roots are A: device-mapper device \"hostlvm-A_root\", \
                 B: device-mapper device \"hostlvm-B_root\""
            ),
            "{error}"
        );

        mount_root(dir.path(), "254:1");
        fs::remove_file(dir.path().join("sys/block/dm-3")).unwrap();
        let system = System::discover(dir.path(), &layout).unwrap();
        let error = system.device(&layout.slot("B").unwrap().members["root"]).unwrap_err().to_string();
        assert!(error.contains("no device-mapper device is named hostlvm-B_root"), "{error}");
        assert!(error.contains("volume group hostlvm active?"), "{error}");
    }
}
