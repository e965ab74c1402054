//! The SetupOS installer: puts HostOS, with GuestOS in its `guestos` volume and the node's
//! configuration in its `config` volume, on a disk of the machine SetupOS boots on.
//!
//! [`plan`] makes every check and decision first: the machine against the variant's minimums,
//! `config.ini` ([`config`]), the target disk, the images against `SHA256SUMS`, and that each
//! image fits where it goes. Nothing is written before all of them pass. [`install`] then writes
//! the data blocks of the HostOS disk image to the disk, those of the GuestOS disk image at the
//! `guestos` volume's place in it, and a FAT filesystem with the configuration at the `config`
//! volume's place (the places come from HostOS's `layout.json`, so the volume group need not be
//! activated), and reads all of it back.

pub mod apply;
pub mod config;
pub mod system;
pub mod write;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::fat::{build_fat, FatError, FatOptions};
use crate::fs_input::{canonical_tar, TarEntry};
use crate::image_source::ImageSource;
use crate::io_error::PathIoError;
use crate::layout::{Layout, LayoutError};
use crate::package::PackageError;
use crate::seed::FilesystemIds;
use crate::sha256sums::{check_sha256sums, CheckStatus, Sha256SumsError};

use self::config::{ConfigError, InstallConfig};
use self::system::{ChoiceError, Disk, Requirements, SystemError, SystemPaths};
use self::write::{WriteError, Written};

/// The files on SetupOS's data partition.
pub const HOST_IMAGE: &str = "host-os.img.tar.zst";
pub const GUEST_IMAGE: &str = "guest-os.img.tar.zst";
pub const HOST_LAYOUT: &str = "host-os.layout.json";
pub const DATA_SUMS: &str = "SHA256SUMS";
/// The files on SetupOS's config partition that go to HostOS's config volume.
pub const CONFIG_INI: &str = "config.ini";
pub const SSH_KEYS_DIR: &str = "ssh_authorized_keys";
/// HostOS's volumes that the installer fills.
pub const GUESTOS_VOLUME: &str = "guestos";
pub const CONFIG_VOLUME: &str = "config";
/// The label of the configuration filesystem, on SetupOS's partition and HostOS's volume alike.
pub const CONFIG_LABEL: &str = "CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the machine: {0}")]
    System(#[from] SystemError),
    #[error("the machine falls short of this variant's minimums: {}", .0.join("; "))]
    Minimums(Vec<String>),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the target disk: {0}")]
    Choice(#[from] ChoiceError),
    #[error("{disk} already holds a HostOS (a partition named {partition:?}); set reinstall = true in config.ini to install over it")]
    HostOsPresent { disk: PathBuf, partition: String },
    #[error(transparent)]
    Sums(#[from] Sha256SumsError),
    #[error("{sums}: {problem}")]
    Unverified { sums: PathBuf, problem: String },
    #[error("HostOS layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("{layout}: HostOS has no {volume} volume")]
    NoVolume { layout: PathBuf, volume: &'static str },
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("{image}: its disk image has {size} bytes, more than the {disk_size} bytes of {disk}")]
    DiskTooSmall { image: PathBuf, size: u64, disk: PathBuf, disk_size: u64 },
    #[error("the configuration filesystem: {0}")]
    ConfigFilesystem(#[from] FatError),
    #[error("{0}")]
    Io(#[from] PathIoError),
    #[error("{path}: {problem}")]
    ConfigFiles { path: PathBuf, problem: String },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Where SetupOS's partitions are mounted.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The config partition: config.ini and ssh_authorized_keys/.
    pub config_dir: PathBuf,
    /// The data partition: the images, HostOS's layout and SHA256SUMS.
    pub data_dir: PathBuf,
}

/// Everything decided before anything is written.
#[derive(Debug)]
pub struct Plan {
    pub config: InstallConfig,
    pub target: Disk,
    /// The images, opened: their sizes and data frames come from the packages' indexes.
    pub host_image: ImageSource,
    pub guest_image: ImageSource,
    /// Offset and size of the guestos volume on the target.
    pub guestos_volume: (u64, u64),
    /// Offset of the config volume, and the filesystem written there.
    pub config_volume: (u64, ConfigFilesystem),
}

/// A configuration filesystem image, whole in memory (tens of MiB, mostly zeros).
pub struct ConfigFilesystem(pub Vec<u8>);

impl std::fmt::Debug for ConfigFilesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfigFilesystem({} bytes)", self.0.len())
    }
}

/// A step's progress line.
pub type Progress<'a> = &'a mut dyn FnMut(String);

/// The checks, in order; the first that fails ends the installation with nothing written.
pub fn plan(
    sources: &Sources,
    paths: &SystemPaths,
    requirements: &Requirements,
    progress: Progress,
) -> Result<Plan, InstallError> {
    let machine = system::read_machine(paths)?;
    progress(format!(
        "[1/7] machine: {} CPUs, {} of memory (this variant needs {} and {})",
        machine.cpus,
        system::gib(machine.memory),
        requirements.cpus,
        system::gib(requirements.memory)
    ));
    let problems = system::shortfalls(requirements, &machine, None);
    if !problems.is_empty() {
        return Err(InstallError::Minimums(problems));
    }

    let config_path = sources.config_dir.join(CONFIG_INI);
    let config = config::read_config(&config_path)?;
    progress(format!(
        "[2/7] {}: {}, after the installation: {}",
        config_path.display(),
        apply::summary(&config),
        config.after_install
    ));
    let config_filesystem_files = config_files(&sources.config_dir)?;

    let disks = system::list_disks(paths)?;
    let boot_disk = system::disk_holding(paths, &sources.data_dir)?;
    let configured = config.target_disk.as_ref().map(|path| fs::canonicalize(path).unwrap_or_else(|_| path.clone()));
    let target = system::choose_target(&disks, &boot_disk, configured.as_deref())?.clone();
    let problems = system::shortfalls(requirements, &machine, Some(&target));
    if !problems.is_empty() {
        return Err(InstallError::Minimums(problems));
    }
    let host_layout_path = sources.data_dir.join(HOST_LAYOUT);
    let host_layout = Layout::read(&host_layout_path)?;
    let hostos_partition = host_layout.volume_group.as_ref().map(|group| group.partition.clone());
    let present = system::gpt_partition_names(&target.path);
    match hostos_partition.filter(|name| present.contains(name)) {
        Some(partition) if !config.reinstall => {
            return Err(InstallError::HostOsPresent { disk: target.path.clone(), partition });
        }
        _ => {}
    }
    progress(format!(
        "[3/7] target disk: {} ({}){}; SetupOS runs from {boot_disk}",
        target.path.display(),
        system::gib(target.size),
        if present.is_empty() { ", blank" } else { ", to be overwritten" }
    ));

    let sums = sources.data_dir.join(DATA_SUMS);
    let checked = check_sha256sums(&sums)?;
    for name in [HOST_IMAGE, GUEST_IMAGE, HOST_LAYOUT] {
        let unverified = |problem: String| InstallError::Unverified { sums: sums.clone(), problem };
        let file =
            checked.iter().find(|file| file.name == name).ok_or_else(|| unverified(format!("{name} is not listed")))?;
        match &file.status {
            CheckStatus::Ok => {}
            CheckStatus::Missing => return Err(unverified(format!("{name} is missing"))),
            CheckStatus::Mismatch { actual } => {
                return Err(unverified(format!("{name} has SHA-256 {actual}, not the listed {}", file.expected)))
            }
        }
    }
    progress(format!("[4/7] {} and {} match {}", HOST_IMAGE, GUEST_IMAGE, sums.display()));

    let host_image = ImageSource::open_package(&sources.data_dir.join(HOST_IMAGE))?;
    let guest_image = ImageSource::open_package(&sources.data_dir.join(GUEST_IMAGE))?;
    let host_size = host_image.size();
    if host_size > target.size {
        return Err(InstallError::DiskTooSmall {
            image: host_image.path().to_owned(),
            size: host_size,
            disk: target.path.clone(),
            disk_size: target.size,
        });
    }
    let volume = |name: &'static str| {
        host_layout
            .target(name)
            .map(|volume| (volume.offset, volume.size, volume.filesystem_parent))
            .ok_or(InstallError::NoVolume { layout: host_layout_path.clone(), volume: name })
    };
    let (guest_offset, guest_limit, _) = volume(GUESTOS_VOLUME)?;
    let guest_size = guest_image.size();
    if guest_size > guest_limit {
        return Err(WriteError::TooLarge {
            image: guest_image.path().to_owned(),
            size: guest_size,
            limit: guest_limit,
            region: format!("HostOS's {GUESTOS_VOLUME} volume"),
        }
        .into());
    }
    let (config_offset, config_size, config_parent) = volume(CONFIG_VOLUME)?;
    let filesystem = config_filesystem(&config_filesystem_files, config_size, config_parent)?;
    Ok(Plan {
        config,
        target,
        host_image,
        guest_image,
        guestos_volume: (guest_offset, guest_limit),
        config_volume: (config_offset, ConfigFilesystem(filesystem)),
    })
}

/// config.ini and the files of ssh_authorized_keys/ (regular files only), as (name in the
/// filesystem, path), sorted.
pub fn config_files(config_dir: &Path) -> Result<Vec<(String, PathBuf)>, InstallError> {
    let mut files = vec![(CONFIG_INI.to_owned(), config_dir.join(CONFIG_INI))];
    let keys = config_dir.join(SSH_KEYS_DIR);
    if keys.is_dir() {
        let entries = fs::read_dir(&keys).map_err(PathIoError::with("read", &keys))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(PathIoError::with("read", &keys))?;
            let path = entry.path();
            let name = entry.file_name().into_string().map_err(|name| InstallError::ConfigFiles {
                path: keys.clone(),
                problem: format!("{name:?} is not a UTF-8 file name"),
            })?;
            // Followed, as a user's (or a test's runfiles') links are: what counts is the content.
            if !fs::metadata(&path).map_err(PathIoError::with("read", &path))?.is_file() {
                return Err(InstallError::ConfigFiles { path, problem: "not a regular file".into() });
            }
            names.push((format!("{SSH_KEYS_DIR}/{name}"), path));
        }
        names.sort();
        files.extend(names);
    }
    Ok(files)
}

/// The FAT filesystem (label CONFIG) of `size` bytes holding `files`, its identifiers derived from
/// the volume's like every filesystem of an image.
pub fn config_filesystem(files: &[(String, PathBuf)], size: u64, parent: uuid::Uuid) -> Result<Vec<u8>, InstallError> {
    let work = tempfile::tempdir().map_err(PathIoError::with("create a directory in", &std::env::temp_dir()))?;
    let mut contents = Vec::with_capacity(files.len());
    for (name, path) in files {
        contents.push((name, fs::read(path).map_err(PathIoError::with("read", path))?));
    }
    // Each directory before the first of its files, as filesystem input must list it.
    let directories: std::collections::BTreeSet<String> = files
        .iter()
        .filter_map(|(name, _)| name.rsplit_once('/'))
        .map(|(directory, _)| format!("{directory}/"))
        .collect();
    let mut entries: Vec<TarEntry> =
        directories.iter().map(|directory| (directory.as_bytes(), EntryType::Directory, &b""[..])).collect();
    entries.extend(contents.iter().map(|(name, content)| (name.as_bytes(), EntryType::Regular, &content[..])));
    let tar_path = work.path().join("config.tar");
    let tar = canonical_tar(&entries).map_err(PathIoError::with("write", &tar_path))?;
    fs::write(&tar_path, tar).map_err(PathIoError::with("write", &tar_path))?;
    let image = work.path().join("config.img");
    let options =
        FatOptions { size, label: CONFIG_LABEL.into(), volume_id: FilesystemIds::from_parent(parent).fat_volume_id };
    build_fat(&tar_path, &image, &options)?;
    Ok(fs::read(&image).map_err(PathIoError::with("read", &image))?)
}

/// What was written.
#[derive(Debug)]
pub struct Report {
    pub written: Vec<Written>,
}

/// Writes HostOS, GuestOS and the configuration to the plan's disk, each read back once written:
/// the later two go inside HostOS's volume group, over what HostOS's image holds there (its empty
/// configuration filesystem), so each is compared before the next is written.
pub fn install(plan: &Plan, progress: Progress) -> Result<Report, InstallError> {
    let path = &plan.target.path;
    let target = File::options().read(true).write(true).open(path).map_err(PathIoError::with("open", path))?;
    let started = std::time::Instant::now();
    let verified = |written: Written| -> Result<Written, InstallError> {
        write::flush(path, &target)?;
        write::read_back(path, &target, &written)?;
        Ok(written)
    };
    let host = verified(write::write_image(&plan.host_image, path, &target, 0, plan.target.size, "the disk")?)?;
    progress(format!(
        "[5/7] wrote HostOS and read it back: {} MiB of data in {} extents ({:.0} s)",
        host.bytes() >> 20,
        host.extents.len(),
        started.elapsed().as_secs_f64()
    ));
    let (guest_offset, guest_limit) = plan.guestos_volume;
    let region = format!("HostOS's {GUESTOS_VOLUME} volume");
    let guest = verified(write::write_image(&plan.guest_image, path, &target, guest_offset, guest_limit, &region)?)?;
    let (config_offset, filesystem) = &plan.config_volume;
    let region = format!("HostOS's {CONFIG_VOLUME} volume");
    let config = verified(write::write_bytes(&filesystem.0, path, &target, *config_offset, &region)?)?;
    progress(format!(
        "[6/7] wrote GuestOS ({} MiB) into the {GUESTOS_VOLUME} volume and the configuration into the {CONFIG_VOLUME} volume, and read them back ({:.0} s)",
        guest.bytes() >> 20,
        started.elapsed().as_secs_f64()
    ));
    Ok(Report { written: vec![host, guest, config] })
}
