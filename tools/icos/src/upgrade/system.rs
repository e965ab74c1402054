//! Which slot runs and where the partitions of the other slot are, from the kernel's view under a
//! system root (`/` in production, a fake tree in tests): the mount table gives the device number of
//! the root file system, sysfs its partition and the disk's other partitions by their GPT names.
//! No device name such as vda5 is assumed, so the agent writes to the disk it booted from.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Slot, UpgradeError};

/// The unit of sysfs `size` files.
const SECTOR_SIZE: u64 = 512;

/// A named partition of the boot disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The GPT partition name, such as `B_root`.
    pub name: String,
    /// The kernel's device name, such as `vda8`.
    pub devname: String,
    /// The device node, under the system root.
    pub device: PathBuf,
    /// The size in bytes.
    pub size: u64,
}

/// The running slot and the named partitions of its disk.
#[derive(Debug)]
pub struct System {
    pub slot: Slot,
    /// The partition of the root file system.
    pub root: Partition,
    /// The disk's sysfs directory, which names it in errors.
    disk: PathBuf,
    partitions: Vec<Partition>,
}

impl System {
    /// Finds the root file system's partition through `<root>/proc/self/mountinfo` and
    /// `<root>/sys/dev/block`, and the other partitions of its disk.
    pub fn discover(root: &Path) -> Result<System, UpgradeError> {
        let mountinfo_path = root.join("proc/self/mountinfo");
        let mountinfo = read_text(&mountinfo_path)?;
        let number = root_device_number(&mountinfo)
            .map_err(|problem| UpgradeError::System { path: mountinfo_path.clone(), problem })?;
        let partition_dir = resolve_block_device(root, number)?;
        let uevent_path = partition_dir.join("uevent");
        let uevent = Uevent::parse(&read_text(&uevent_path)?);
        let devname = uevent
            .devname
            .ok_or_else(|| UpgradeError::System { path: uevent_path, problem: "DEVNAME is missing".into() })?;
        let slot =
            uevent.partname.as_deref().and_then(|name| name.strip_suffix("_root")).and_then(Slot::parse).ok_or_else(
                || UpgradeError::NotASlot {
                    device: devname.clone(),
                    partition: match &uevent.partname {
                        Some(name) => format!("partition {name:?}"),
                        None => "no GPT partition name".into(),
                    },
                },
            )?;
        let disk = match partition_dir.parent() {
            Some(disk) => disk.to_owned(),
            None => return Err(UpgradeError::System { path: partition_dir, problem: "it has no parent disk".into() }),
        };
        let partitions = read_partitions(root, &disk)?;
        let root_partition =
            partitions.iter().find(|partition| partition.devname == devname).cloned().ok_or_else(|| {
                UpgradeError::System { path: disk.clone(), problem: format!("{devname} is not among its partitions") }
            })?;
        Ok(System { slot, root: root_partition, disk, partitions })
    }

    /// The partition named `name` on the boot disk.
    pub fn partition(&self, name: &str) -> Result<&Partition, UpgradeError> {
        self.partitions
            .iter()
            .find(|partition| partition.name == name)
            .ok_or_else(|| UpgradeError::NoPartition { disk: self.disk.clone(), name: name.to_owned() })
    }
}

fn read_text(path: &Path) -> Result<String, UpgradeError> {
    fs::read_to_string(path).map_err(|source| UpgradeError::Read { path: path.to_owned(), source })
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

/// The sysfs directory of block device `number`: `<root>/sys/dev/block/<number>` with its symlink
/// followed inside `root` (an absolute target is taken relative to `root`, a relative one, which is
/// what sysfs has, relative to the link), made canonical so that its parent is the disk.
fn resolve_block_device(root: &Path, number: &str) -> Result<PathBuf, UpgradeError> {
    let link = root.join("sys/dev/block").join(number);
    let read_error = |source| UpgradeError::Read { path: link.clone(), source };
    let metadata = match fs::symlink_metadata(&link) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(UpgradeError::System {
                path: link,
                problem: format!("no block device {number}: the root file system is not on a disk partition"),
            })
        }
        Err(error) => return Err(read_error(error)),
    };
    let target = if metadata.file_type().is_symlink() {
        let target = fs::read_link(&link).map_err(read_error)?;
        match target.strip_prefix("/") {
            Ok(inside_root) => root.join(inside_root),
            Err(_) => link.parent().unwrap_or(root).join(target),
        }
    } else {
        link.clone()
    };
    fs::canonicalize(&target).map_err(|source| UpgradeError::Read { path: target, source })
}

/// The fields of a sysfs `uevent` file that name a partition.
#[derive(Debug, Default, PartialEq, Eq)]
struct Uevent {
    devname: Option<String>,
    partname: Option<String>,
}

impl Uevent {
    /// Parses `KEY=VALUE` lines; other keys are ignored.
    fn parse(text: &str) -> Uevent {
        let mut uevent = Uevent::default();
        for (key, value) in text.lines().filter_map(|line| line.split_once('=')) {
            match key {
                "DEVNAME" => uevent.devname = Some(value.to_owned()),
                "PARTNAME" => uevent.partname = Some(value.to_owned()),
                _ => {}
            }
        }
        uevent
    }
}

/// The named partitions in the disk's sysfs directory `disk`: its subdirectories whose uevent has
/// a PARTNAME. The symlinks there (`device`, `bdi`, `subsystem`) lead elsewhere and are skipped.
fn read_partitions(root: &Path, disk: &Path) -> Result<Vec<Partition>, UpgradeError> {
    let read_error = |source| UpgradeError::Read { path: disk.to_owned(), source };
    let mut partitions: Vec<Partition> = Vec::new();
    for entry in fs::read_dir(disk).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        if !entry.file_type().map_err(read_error)?.is_dir() {
            continue;
        }
        let dir = entry.path();
        let uevent_path = dir.join("uevent");
        let text = match fs::read_to_string(&uevent_path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(UpgradeError::Read { path: uevent_path, source }),
        };
        let Uevent { devname, partname: Some(name) } = Uevent::parse(&text) else {
            continue;
        };
        let devname = devname.ok_or_else(|| UpgradeError::System {
            path: uevent_path.clone(),
            problem: format!("partition {name:?} has no DEVNAME"),
        })?;
        if partitions.iter().any(|partition| partition.name == name) {
            return Err(UpgradeError::DuplicatePartition { disk: disk.to_owned(), name });
        }
        let size_path = dir.join("size");
        let sectors: u64 = read_text(&size_path)?
            .trim()
            .parse()
            .map_err(|_| UpgradeError::System { path: size_path.clone(), problem: "not a number of sectors".into() })?;
        let size = sectors.checked_mul(SECTOR_SIZE).ok_or_else(|| UpgradeError::System {
            path: size_path,
            problem: format!("{sectors} sectors do not fit in 64 bits of bytes"),
        })?;
        let device = root.join("dev").join(&devname);
        partitions.push(Partition { name, devname, device, size });
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
        assert_eq!(Uevent::parse(text), Uevent { devname: Some("vda8".into()), partname: Some("B_root".into()) });
        assert_eq!(Uevent::parse("MAJOR=252\nDEVNAME=vda\nDEVTYPE=disk\n").partname, None);
    }

    /// A sysfs disk `vda` with the named partitions `(number, name, sectors)` under `root`, and
    /// `/` mounted from partition `root_number`; `absolute` makes the sys/dev/block links absolute.
    fn fake_system(root: &Path, partitions: &[(u32, &str, u64)], root_number: u32, absolute: bool) {
        let disk = root.join("sys/devices/pci0000:00/virtio1/block/vda");
        fs::create_dir_all(disk.join("queue")).unwrap();
        fs::write(disk.join("uevent"), "MAJOR=252\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        symlink("../../../virtio1", disk.join("device")).unwrap();
        fs::create_dir_all(root.join("sys/dev/block")).unwrap();
        for &(number, name, sectors) in partitions {
            let dir = disk.join(format!("vda{number}"));
            fs::create_dir(&dir).unwrap();
            let uevent =
                format!("MAJOR=252\nMINOR={number}\nDEVNAME=vda{number}\nDEVTYPE=partition\nPARTNAME={name}\n");
            fs::write(dir.join("uevent"), uevent).unwrap();
            fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
            let target = if absolute {
                PathBuf::from(format!("/sys/devices/pci0000:00/virtio1/block/vda/vda{number}"))
            } else {
                PathBuf::from(format!("../../devices/pci0000:00/virtio1/block/vda/vda{number}"))
            };
            symlink(target, root.join(format!("sys/dev/block/252:{number}"))).unwrap();
        }
        fs::create_dir_all(root.join("proc/self")).unwrap();
        let mountinfo = format!("28 1 252:{root_number} / / ro - ext4 /dev/vda{root_number} ro\n");
        fs::write(root.join("proc/self/mountinfo"), mountinfo).unwrap();
    }

    const LAYOUT: [(u32, &str, u64); 4] = [(4, "A_boot", 8), (5, "A_root", 16), (7, "B_boot", 8), (8, "B_root", 32)];

    #[test]
    fn discovery_follows_relative_and_absolute_links_inside_the_root() {
        for absolute in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            fake_system(dir.path(), &LAYOUT, 8, absolute);
            let system = System::discover(dir.path()).unwrap();
            assert_eq!(system.slot, Slot::B);
            assert_eq!(system.root.name, "B_root");
            let boot = system.partition("A_boot").unwrap();
            assert_eq!((boot.devname.as_str(), boot.size), ("vda4", 8 * 512));
            assert_eq!(boot.device, dir.path().join("dev/vda4"));
            assert!(matches!(system.partition("A_var"), Err(UpgradeError::NoPartition { .. })));
        }
    }

    #[test]
    fn a_root_outside_the_slots_or_an_ambiguous_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fake_system(dir.path(), &[(3, "config", 8), (5, "A_root", 8)], 3, false);
        let error = System::discover(dir.path()).unwrap_err().to_string();
        assert!(error.contains("vda3 (partition \"config\")"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        fake_system(dir.path(), &[(5, "A_root", 8), (8, "A_root", 8)], 5, false);
        assert!(matches!(System::discover(dir.path()), Err(UpgradeError::DuplicatePartition { .. })));

        let dir = tempfile::tempdir().unwrap();
        fake_system(dir.path(), &LAYOUT, 5, false);
        fs::write(dir.path().join("proc/self/mountinfo"), "28 1 0:31 / / rw - overlay overlay rw\n").unwrap();
        let error = System::discover(dir.path()).unwrap_err().to_string();
        assert!(error.contains("no block device 0:31"), "{error}");
    }
}
