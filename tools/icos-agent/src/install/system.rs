//! What the installer learns about the machine it runs on: CPUs and memory (`/proc`), the disks
//! (`/sys/block`), the disk it booted from, and whether a disk already holds a HostOS. Every path
//! is under [`SystemPaths`], so that tests describe a machine with a directory.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the kernel's views of the machine are.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Default for SystemPaths {
    fn default() -> Self {
        SystemPaths { proc: "/proc".into(), sys: "/sys".into(), dev: "/dev".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

fn read_text(path: &Path) -> Result<String, SystemError> {
    fs::read_to_string(path).map_err(|source| SystemError::Read { path: path.to_owned(), source })
}

/// The minimums of a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirements {
    pub cpus: u32,
    pub memory: u64,
    pub disk: u64,
}

/// CPUs and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u32,
    pub memory: u64,
}

/// Reads the online CPUs (`processor` lines of cpuinfo) and `MemTotal` of meminfo.
pub fn read_machine(paths: &SystemPaths) -> Result<Machine, SystemError> {
    let cpuinfo = paths.proc.join("cpuinfo");
    let cpus =
        read_text(&cpuinfo)?.lines().filter(|line| line.split(':').next().map(str::trim) == Some("processor")).count();
    let meminfo = paths.proc.join("meminfo");
    let text = read_text(&meminfo)?;
    let memory = text
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .ok_or_else(|| SystemError::Invalid { path: meminfo.clone(), problem: "no MemTotal line in kB".into() })?;
    Ok(Machine { cpus: cpus as u32, memory: memory * 1024 })
}

/// What falls short of `requirements`, one sentence each; empty when the machine suffices. The
/// disk is judged once one is chosen.
pub fn shortfalls(requirements: &Requirements, machine: &Machine, disk: Option<&Disk>) -> Vec<String> {
    let mut problems = Vec::new();
    if machine.cpus < requirements.cpus {
        problems.push(format!("{} CPUs, at least {} needed", machine.cpus, requirements.cpus));
    }
    if machine.memory < requirements.memory {
        problems.push(format!("{} of memory, at least {} needed", gib(machine.memory), gib(requirements.memory)));
    }
    if let Some(disk) = disk.filter(|disk| disk.size < requirements.disk) {
        problems.push(format!(
            "{} has {}, at least {} needed",
            disk.path.display(),
            gib(disk.size),
            gib(requirements.disk)
        ));
    }
    problems
}

/// Bytes as GiB with two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// A whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The kernel's name, such as vda or nvme0n1.
    pub name: String,
    /// Its device node.
    pub path: PathBuf,
    pub size: u64,
}

/// Kernel block devices that are not disks an OS is installed on.
const NOT_DISKS: [&str; 7] = ["loop", "ram", "zram", "sr", "dm-", "md", "nbd"];

/// The disks of the machine with a size, sorted by name.
pub fn list_disks(paths: &SystemPaths) -> Result<Vec<Disk>, SystemError> {
    let block = paths.sys.join("block");
    let entries = fs::read_dir(&block).map_err(|source| SystemError::Read { path: block.clone(), source })?;
    let mut disks = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SystemError::Read { path: block.clone(), source })?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if NOT_DISKS.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        let size_path = entry.path().join("size");
        let sectors = read_text(&size_path)?.trim().parse::<u64>().map_err(|_| SystemError::Invalid {
            path: size_path.clone(),
            problem: "not a number of 512-byte sectors".into(),
        })?;
        if sectors > 0 {
            disks.push(Disk { path: paths.dev.join(&name), name, size: sectors * 512 });
        }
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

/// The name of the disk that holds the filesystem of `path` (such as the SetupOS data partition):
/// the disk the installer must not install on.
pub fn disk_holding(paths: &SystemPaths, path: &Path) -> Result<String, SystemError> {
    let metadata = fs::metadata(path).map_err(|source| SystemError::Read { path: path.to_owned(), source })?;
    let device = metadata.dev();
    let link = paths.sys.join(format!("dev/block/{}:{}", libc::major(device), libc::minor(device)));
    let resolved = fs::canonicalize(&link).map_err(|source| SystemError::Read { path: link.clone(), source })?;
    let disk = if resolved.join("partition").exists() { resolved.parent().unwrap_or(&resolved) } else { &resolved };
    disk.file_name().and_then(|name| name.to_str()).map(str::to_owned).ok_or_else(|| SystemError::Invalid {
        path: link,
        problem: format!("{} names no block device", resolved.display()),
    })
}

/// Why no disk could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    #[error("target_disk {0} is not a disk of this machine (the disks are: {1})")]
    Unknown(PathBuf, String),
    #[error("target_disk {0} is the disk SetupOS runs from")]
    BootDisk(PathBuf),
    #[error("there is no disk to install on besides the one SetupOS runs from ({0})")]
    NoDisk(String),
}

/// The disk to install on: `configured` (a path under /dev, symbolic links resolved by the
/// caller), else the largest disk other than `boot_disk` (the first by name among equals).
pub fn choose_target<'a>(
    disks: &'a [Disk],
    boot_disk: &str,
    configured: Option<&Path>,
) -> Result<&'a Disk, ChoiceError> {
    match configured {
        Some(path) => {
            let disk = disks.iter().find(|disk| disk.path == path).ok_or_else(|| {
                let names: Vec<String> = disks.iter().map(|disk| disk.path.display().to_string()).collect();
                ChoiceError::Unknown(path.to_owned(), names.join(", "))
            })?;
            if disk.name == boot_disk {
                return Err(ChoiceError::BootDisk(path.to_owned()));
            }
            Ok(disk)
        }
        None => disks
            .iter()
            .filter(|disk| disk.name != boot_disk)
            .fold(None, |best: Option<&Disk>, disk| match best {
                Some(best) if best.size >= disk.size => Some(best),
                _ => Some(disk),
            })
            .ok_or_else(|| ChoiceError::NoDisk(boot_disk.to_owned())),
    }
}

/// The GPT partition names of the disk or image at `path`; empty when it has no valid GPT (a
/// blank disk).
pub fn gpt_partition_names(path: &Path) -> Vec<String> {
    let Ok(disk) = gpt::GptConfig::new().writable(false).open(path) else { return Vec::new() };
    disk.partitions().values().map(|partition| partition.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine_dir() -> (tempfile::TempDir, SystemPaths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = SystemPaths { proc: dir.path().join("proc"), sys: dir.path().join("sys"), dev: "/dev".into() };
        fs::create_dir_all(&paths.proc).unwrap();
        for (name, sectors) in
            [("vda", 16_777_216u64), ("vdb", 146_800_640), ("vdc", 146_800_640), ("loop0", 100), ("sr0", 0), ("vdd", 0)]
        {
            fs::create_dir_all(paths.sys.join("block").join(name)).unwrap();
            fs::write(paths.sys.join("block").join(name).join("size"), format!("{sectors}\n")).unwrap();
        }
        (dir, paths)
    }

    #[test]
    fn cpus_and_memory_come_from_proc() {
        let (_dir, paths) = machine_dir();
        fs::write(paths.proc.join("cpuinfo"), "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\n").unwrap();
        fs::write(paths.proc.join("meminfo"), "MemTotal:        2030116 kB\nMemFree: 1 kB\n").unwrap();
        let machine = read_machine(&paths).unwrap();
        assert_eq!(machine, Machine { cpus: 2, memory: 2030116 * 1024 });
        let disk = Disk { name: "vdb".into(), path: "/dev/vdb".into(), size: 10 << 30 };
        let requirements = Requirements { cpus: 4, memory: 4 << 30, disk: 70 << 30 };
        assert_eq!(
            shortfalls(&requirements, &machine, Some(&disk)),
            [
                "2 CPUs, at least 4 needed",
                "1.94 GiB of memory, at least 4.00 GiB needed",
                "/dev/vdb has 10.00 GiB, at least 70.00 GiB needed"
            ]
        );
        assert!(shortfalls(&Requirements { cpus: 1, memory: 1 << 30, disk: 1 << 30 }, &machine, Some(&disk)).is_empty());
        assert_eq!(shortfalls(&requirements, &machine, None).len(), 2, "no disk chosen yet: CPUs and memory only");
        fs::write(paths.proc.join("meminfo"), "MemFree: 1 kB\n").unwrap();
        assert!(read_machine(&paths).unwrap_err().to_string().ends_with("meminfo: no MemTotal line in kB"));
    }

    #[test]
    fn the_largest_other_disk_is_chosen_unless_one_is_configured() {
        let (_dir, paths) = machine_dir();
        let disks = list_disks(&paths).unwrap();
        let names: Vec<&str> = disks.iter().map(|disk| disk.name.as_str()).collect();
        assert_eq!(names, ["vda", "vdb", "vdc"]);
        assert_eq!(choose_target(&disks, "vda", None).unwrap().name, "vdb");
        assert_eq!(choose_target(&disks, "vdb", None).unwrap().name, "vdc");
        assert_eq!(choose_target(&disks, "vda", Some(Path::new("/dev/vdc"))).unwrap().name, "vdc");
        assert_eq!(
            choose_target(&disks, "vda", Some(Path::new("/dev/vda"))).unwrap_err().to_string(),
            "target_disk /dev/vda is the disk SetupOS runs from"
        );
        assert_eq!(
            choose_target(&disks, "vda", Some(Path::new("/dev/sdz"))).unwrap_err().to_string(),
            "target_disk /dev/sdz is not a disk of this machine (the disks are: /dev/vda, /dev/vdb, /dev/vdc)"
        );
        assert!(matches!(choose_target(&disks[..1], "vda", None), Err(ChoiceError::NoDisk(_))));
    }

    #[test]
    fn the_boot_disk_is_the_parent_of_the_partition_holding_a_path() {
        let (dir, paths) = machine_dir();
        let device = fs::metadata(dir.path()).unwrap().dev();
        let partition = paths.sys.join("devices/virtio1/block/vda/vda4");
        fs::create_dir_all(&partition).unwrap();
        fs::write(partition.join("partition"), "4\n").unwrap();
        fs::create_dir_all(paths.sys.join("dev/block")).unwrap();
        let link = paths.sys.join(format!("dev/block/{}:{}", libc::major(device), libc::minor(device)));
        std::os::unix::fs::symlink(&partition, &link).unwrap();
        assert_eq!(disk_holding(&paths, dir.path()).unwrap(), "vda");
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(partition.parent().unwrap(), &link).unwrap();
        assert_eq!(disk_holding(&paths, dir.path()).unwrap(), "vda");
    }
}
