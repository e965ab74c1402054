//! The A/B upgrade agent that runs inside an icos GuestOS VM: which slot runs, installing an update
//! image into the other slot, committing it for the next boot, and confirming a boot.
//!
//! The boot state is GRUB's (ic-os/bootloader/grub.cfg), kept in grubenv: `boot_alternative` (A or
//! B) is the slot GRUB boots, and `boot_cycle` says how:
//! - `install`: first boot after installation, GRUB makes it `stable`;
//! - `first_boot`: set by [`Agent::upgrade_commit`]; GRUB boots the new slot once and sets
//!   `failsafe_check`: a trial boot, which must confirm itself before a deadline ([`trial`]);
//! - `failsafe_check`: still set at the next boot, GRUB falls back to the other slot (`stable`);
//! - `stable`: set by [`Agent::confirm`]; GRUB keeps booting the slot.
//!
//! The state is kept twice, in `grubenv` and `grubenv.copy` ([`boot_state`]): a damaged copy is
//! read from the other and reported, and [`Agent::repair`] rewrites it.
//!
//! The slots are those of the OS's layout (`layout.json`, [`crate::layout`]), installed on the image
//! at [`INSTALLED_LAYOUT`]: the running slot is the one whose root target holds the root file
//! system, and an update's `<role>.img` goes to the other slot's target of that role, a GPT
//! partition or an LVM logical volume.
//!
//! The agent adds a marker, `icos_installed_slot` and `icos_installed_version`: set only once an
//! install into the inactive slot is complete, and cleared before an install writes anything and by
//! the commit, so that a commit can never make GRUB boot a partly written slot.

pub mod boot_state;
mod image;
pub mod server;
mod system;
pub mod trial;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::grubenv::{GrubEnv, GrubEnvError};
use crate::layout::{self, Layout, LayoutError, INSTALLED_LAYOUT};
use crate::sparse::CopyError;
use boot_state::Loaded;
pub use image::ImageFile;
use image::{member_name, UpdateImage};
use system::System;
use trial::TrialError;
use write::Device;
pub use write::Zeroer;

/// The grubenv variable naming the slot GRUB boots.
const BOOT_ALTERNATIVE: &str = "boot_alternative";
/// The grubenv variable holding the boot cycle.
const BOOT_CYCLE: &str = "boot_cycle";
/// The marker: the slot holding a complete, uncommitted upgrade, and its version.
const INSTALLED_SLOT: &str = "icos_installed_slot";
const INSTALLED_VERSION: &str = "icos_installed_version";
/// The running system's version, relative to the system root.
const VERSION_FILE: &str = "opt/icos/share/version.txt";
/// Where an image keeps the public keys (SPKI PEM, `*.pem`) of the releases it installs, relative
/// to the system root.
pub const RELEASE_KEYS: &str = "etc/icos/release-keys";
/// What the rootfs Dockerfile writes: `BUILD_TYPE=dev` or `prod`.
const BUILD_CONF: &str = "etc/icos/build.conf";
/// Where the image names its OS (`icos_os_targets`): a release of another OS is refused.
const OS_NAME_FILE: &str = "opt/icos/share/os-name";
/// The file of a release bundle that an upgrade installs.
const UPDATE_IMAGE: &str = "update-img.tar.zst";
/// The first bytes of a zstd frame: a bare update image, not a bundle.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    GrubEnv(#[from] GrubEnvError),
    #[error("{path}: {problem}")]
    System { path: PathBuf, problem: String },
    #[error("OS layout: {0}")]
    Layout(#[from] LayoutError),
    #[error(
        "the root file system is on {device} ({found}), which is no slot's root: the layout's slot roots are {roots}"
    )]
    NotASlot { device: String, found: String, roots: String },
    #[error("{disk}: no partition is named {name}")]
    NoPartition { disk: PathBuf, name: String },
    #[error(
        "no partition {name} can be found: the root file system is on device-mapper device {root} ({devname}), \
         which is not on partitions of one disk"
    )]
    NoDisk { name: String, root: String, devname: String },
    #[error(
        "no device-mapper device is named {dm_name} (in {path}): is logical volume {dm_name} of volume group \
         {volume_group} active?"
    )]
    NoVolume { dm_name: String, volume_group: String, path: PathBuf },
    #[error("this OS has one slot: it cannot be upgraded in place")]
    OneSlot,
    #[error("{disk}: two partitions are named {name}")]
    DuplicatePartition { disk: PathBuf, name: String },
    #[error("{path}: {name} {problem}")]
    Variable { path: PathBuf, name: &'static str, problem: String },
    #[error(
        "{path}: boot_alternative={found} with boot_cycle={boot_cycle} does not fit the running system, \
         slot {running} ({root} on {device}), which needs boot_alternative={expected}"
    )]
    SlotMismatch {
        path: PathBuf,
        found: Slot,
        boot_cycle: BootCycle,
        running: Slot,
        root: String,
        device: String,
        expected: Slot,
    },
    #[error("cannot {action} while boot_cycle is {boot_cycle}: {advice}")]
    WrongCycle { action: &'static str, boot_cycle: BootCycle, advice: String },
    #[error("{path}: not a valid update image: {problem}")]
    BadImage { path: PathBuf, problem: String },
    #[error("{path}: the update does not fit slot {slot}: {problem}")]
    DoesNotFit { path: PathBuf, slot: String, problem: String },
    #[error("{path}: {member} is {size} bytes, larger than {target} ({device}, {capacity} bytes)")]
    TooLarge { path: PathBuf, member: String, size: u64, target: String, device: PathBuf, capacity: u64 },
    #[error("{text:?} is not a SHA-256: expected 64 hexadecimal digits")]
    BadSha256 { text: String },
    #[error("{path}: the SHA-256 is {actual}, expected {expected}")]
    Sha256Mismatch { path: PathBuf, expected: String, actual: String },
    #[error("{path} changed while it was installed: slot {slot} stays uncommitted, install again")]
    ImageChanged { path: PathBuf, slot: Slot },
    #[error("{path}: {problem}; --allow-downgrade installs it anyway")]
    Rollback { path: PathBuf, problem: String },
    #[error("{path} is a release of {os}, and this is {running}: refused")]
    OtherOs { path: PathBuf, os: String, running: String },
    #[error("no upgrade is installed in slot {slot}: run upgrade-install first")]
    NothingInstalled { slot: Slot },
    #[error(transparent)]
    Trial(#[from] TrialError),
    #[error("slot {slot} is not confirmed: {source}")]
    Unhealthy { slot: Slot, source: TrialError },
    #[error(transparent)]
    Release(#[from] crate::release::ReleaseError),
    #[error(
        "{path} is an update image, not a signed release bundle: this image installs only releases \
         signed with a key of {keys} (on a dev image, --allow-unsigned installs it)"
    )]
    Unsigned { path: PathBuf, keys: PathBuf },
    #[error(
        "{path}: this is a {build_type} image, which installs only signed releases: --allow-unsigned is for dev images"
    )]
    UnsignedRefused { path: PathBuf, build_type: String },
    #[error("{keys} holds no release key (*.pem): this image cannot verify a release")]
    NoReleaseKeys { keys: PathBuf },
    #[error(
        "the boot state is lost: {grubenv}: {grubenv_problem}; {copy}: {copy_problem} (GRUB boots slot A); \
         icos-agent repair writes it anew for the running slot"
    )]
    BootStateLost { grubenv: PathBuf, grubenv_problem: String, copy: PathBuf, copy_problem: String },
}

/// One of the two slots, as grubenv's `boot_alternative` names them: the layout's slots are named
/// so too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Slot> {
        match text {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.letter())
    }
}

/// grubenv's `boot_cycle`, as grub.cfg reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootCycle {
    Install,
    FirstBoot,
    FailsafeCheck,
    Stable,
}

impl BootCycle {
    const ALL: [BootCycle; 4] = [BootCycle::Install, BootCycle::FirstBoot, BootCycle::FailsafeCheck, BootCycle::Stable];

    fn parse(text: &str) -> Option<BootCycle> {
        BootCycle::ALL.into_iter().find(|cycle| cycle.as_str() == text)
    }

    fn as_str(self) -> &'static str {
        match self {
            BootCycle::Install => "install",
            BootCycle::FirstBoot => "first_boot",
            BootCycle::FailsafeCheck => "failsafe_check",
            BootCycle::Stable => "stable",
        }
    }
}

impl fmt::Display for BootCycle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The running slot.
    pub slot: Slot,
    pub boot_cycle: BootCycle,
    /// The running system's version.
    pub version: String,
    /// The other slot, where upgrades are installed; none on an OS with one slot.
    pub inactive_slot: Option<Slot>,
    /// The slot GRUB boots next: the inactive one once an upgrade is committed.
    pub next_boot: Slot,
    /// The version installed in the inactive slot and not committed yet.
    pub installed_upgrade: Option<String>,
    /// The layout's targets of each slot: slot, role, partition or volume name.
    pub targets: BTreeMap<String, BTreeMap<String, String>>,
    /// What is wrong with a copy of the boot state, which `repair` restores.
    pub boot_state_damage: Option<String>,
}

impl fmt::Display for Status {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "slot {}, boot_cycle {}, version {}; ", self.slot, self.boot_cycle, self.version)?;
        match self.inactive_slot {
            None => formatter.write_str("the only slot: no upgrades in place")?,
            Some(inactive_slot) => {
                write!(formatter, "slot {inactive_slot}: ")?;
                match &self.installed_upgrade {
                    Some(version) => write!(formatter, "upgrade {version} installed, not committed")?,
                    None if self.next_boot == inactive_slot => formatter.write_str("committed, boots next")?,
                    None => formatter.write_str("no upgrade installed")?,
                }
            }
        }
        if let Some(damage) = &self.boot_state_damage {
            write!(formatter, "; boot state: {damage}")?;
        }
        Ok(())
    }
}

/// Progress of an install, which takes tens of seconds in an emulated VM.
#[derive(Debug)]
pub enum InstallEvent<'a> {
    /// The whole image was read once and is valid (a download's: once it is written).
    Verified { image: &'a Path, bytes: u64, sha256: &'a str, elapsed: Duration },
    /// A member starts being written to its target (a partition or volume of the layout).
    Writing { member: &'a str, target: &'a str, device: &'a Path, size: u64 },
    /// A member was written and synced.
    Written { member: &'a str, size: u64, elapsed: Duration },
}

/// The result of an install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub slot: Slot,
    pub version: String,
    pub sha256: String,
}

impl fmt::Display for Installed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "upgrade {} installed in slot {} (sha256 {}); upgrade-commit makes it boot next",
            self.version, self.slot, self.sha256
        )
    }
}

/// The result of a commit: what boots next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub slot: Slot,
    pub version: String,
    /// The deadline of its trial boot, in seconds.
    pub trial_timeout: u32,
}

impl fmt::Display for Committed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "slot {} (upgrade {}) boots next, once, on trial: it must confirm itself within {} s (icos-boot-confirm.service), \
             or the watchdog resets the machine and GRUB falls back to slot {}",
            self.slot,
            self.version,
            self.trial_timeout,
            self.slot.other()
        )
    }
}

/// The result of a confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub slot: Slot,
    /// The boot cycle before: `stable` if there was nothing to confirm.
    pub previous: BootCycle,
    /// The health checks that passed.
    pub health_checks: usize,
    /// The trial's watchdog, stopped.
    pub watchdog: Option<PathBuf>,
}

impl fmt::Display for Confirmation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Confirmation { slot, previous, health_checks, watchdog } = self;
        match previous {
            BootCycle::Stable => write!(formatter, "slot {slot} is stable already: nothing to confirm")?,
            _ => write!(
                formatter,
                "slot {slot} confirmed: boot_cycle {previous} -> stable, {health_checks} health check{} passed",
                if *health_checks == 1 { "" } else { "s" }
            )?,
        }
        if let Some(watchdog) = watchdog {
            write!(formatter, "; the trial's watchdog {} is stopped", watchdog.display())?;
        }
        Ok(())
    }
}

/// What `repair` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repaired {
    /// Both copies are valid and the same: nothing was written.
    Intact,
    /// The damaged copy was rewritten from the other.
    Restored { grubenv: PathBuf, copy: PathBuf, slot: Slot, boot_cycle: BootCycle },
    /// Both were lost: the running slot was written anew, stable.
    Recreated { grubenv: PathBuf, copy: PathBuf, slot: Slot },
}

impl fmt::Display for Repaired {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repaired::Intact => formatter.write_str("both copies of the boot state are intact: nothing to repair"),
            Repaired::Restored { grubenv, copy, slot, boot_cycle } => write!(
                formatter,
                "boot state restored: {} and {} say slot {slot}, boot_cycle {boot_cycle}",
                grubenv.display(),
                copy.display()
            ),
            Repaired::Recreated { grubenv, copy, slot } => write!(
                formatter,
                "boot state written anew: {} and {} say slot {slot} (the running slot), boot_cycle stable",
                grubenv.display(),
                copy.display()
            ),
        }
    }
}

/// A trial boot's watchdog, started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialArmed {
    pub watchdog: trial::Watchdog,
    /// The timeout the driver set.
    pub seconds: u32,
    /// The deadline on the command line, when it was outside [`trial::TRIAL_TIMEOUTS`] and another
    /// was used.
    pub requested: Option<u32>,
    /// The machine's watchdog, when it refused the deadline and softdog was taken instead.
    pub refused_by: Option<trial::Watchdog>,
}

impl fmt::Display for TrialArmed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(requested) = self.requested {
            write!(formatter, "the deadline {requested} s is out of range, using {} s; ", self.seconds)?;
        }
        if let Some(refused_by) = &self.refused_by {
            write!(
                formatter,
                "{} ({}) cannot time {} s; ",
                refused_by.identity,
                refused_by.device.display(),
                self.seconds
            )?;
        }
        write!(
            formatter,
            "trial boot: the watchdog {} ({}) resets the machine in {} s unless this slot confirms",
            self.watchdog.identity,
            self.watchdog.device.display(),
            self.seconds
        )
    }
}

/// Where the agent finds the system it manages: `/`, `/grub/grubenv` and
/// `/opt/icos/share/layout.json` in production.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The root of the system: the mount table, sysfs, device nodes and version file are under it.
    pub system_root: PathBuf,
    /// The GRUB environment block.
    pub grubenv: PathBuf,
    /// The OS's layout, `layout.json`.
    pub layout: PathBuf,
}

/// The running system and its boot state, checked against each other.
struct State {
    layout: Layout,
    system: System,
    env: GrubEnv,
    boot_cycle: BootCycle,
    boot_alternative: Slot,
    /// What `status` reports of the copies of the boot state.
    damage: Option<String>,
}

impl Agent {
    /// Where the layout is installed on the system under `system_root`.
    pub fn installed_layout(system_root: &Path) -> PathBuf {
        system_root.join(INSTALLED_LAYOUT.trim_start_matches('/'))
    }

    /// Reads the layout and checks what the agent relies on: slot A, maybe B, each with a root.
    /// `icos layout` writes no other; a file edited by hand might.
    fn read_layout(&self) -> Result<Layout, UpgradeError> {
        let layout = Layout::read(&self.layout)?;
        let invalid = |problem: String| LayoutError::Invalid { path: self.layout.clone(), problem };
        let names: Vec<&str> = layout.slots.iter().map(|slot| slot.name.as_str()).collect();
        if names != ["A"] && names != ["A", "B"] {
            return Err(invalid(format!("the slots are {names:?}: the agent knows slot A, or slots A and B")).into());
        }
        if let Some(slot) = layout.slots.iter().find(|slot| !slot.members.contains_key("root")) {
            return Err(invalid(format!("slot {} has no root", slot.name)).into());
        }
        Ok(layout)
    }

    /// Reads the boot state and checks that it describes the running system: `boot_alternative` is
    /// the running slot, except after a commit (`first_boot`), when it is the other one.
    fn state(&self) -> Result<State, UpgradeError> {
        let layout = self.read_layout()?;
        let system = System::discover(&self.system_root, &layout)?;
        let loaded = boot_state::load(&self.grubenv)?;
        let damage = loaded.damage(&self.grubenv);
        let Loaded { state: boot_state::BootState { env, boot_alternative, boot_cycle }, .. } = loaded;
        let expected = if boot_cycle == BootCycle::FirstBoot { system.slot.other() } else { system.slot };
        if boot_alternative != expected {
            return Err(UpgradeError::SlotMismatch {
                path: self.grubenv.clone(),
                found: boot_alternative,
                boot_cycle,
                running: system.slot,
                root: system.root.name.clone(),
                device: system.root.devname.clone(),
                expected,
            });
        }
        Ok(State { layout, system, env, boot_cycle, boot_alternative, damage })
    }

    /// Writes the boot state, both copies.
    fn write_state(&self, env: &GrubEnv) -> Result<(), UpgradeError> {
        boot_state::write(&self.grubenv, env)
    }

    /// The version waiting uncommitted in `slot`, from the marker.
    fn installed_upgrade(&self, env: &GrubEnv, slot: Slot) -> Result<Option<String>, UpgradeError> {
        if env.get(INSTALLED_SLOT) != Some(slot.letter()) {
            return Ok(None);
        }
        match env.get(INSTALLED_VERSION) {
            Some(version) => Ok(Some(version.to_owned())),
            None => Err(UpgradeError::Variable {
                path: self.grubenv.clone(),
                name: INSTALLED_VERSION,
                problem: format!("is not set although {INSTALLED_SLOT} is"),
            }),
        }
    }

    /// The running system's version.
    fn running_version(&self) -> Result<String, UpgradeError> {
        let path = self.system_root.join(VERSION_FILE);
        let bytes = fs::read(&path).map_err(|source| UpgradeError::Read { path: path.clone(), source })?;
        version_line(&bytes).map_err(|problem| UpgradeError::System { path, problem: problem.into() })
    }

    pub fn status(&self) -> Result<Status, UpgradeError> {
        let state = self.state()?;
        let version = self.running_version()?;
        let other = state.system.slot.other();
        let inactive_slot = state.layout.slot(other.letter()).map(|_| other);
        let installed_upgrade = match inactive_slot {
            Some(slot) => self.installed_upgrade(&state.env, slot)?,
            None => None,
        };
        let targets = state
            .layout
            .slots
            .iter()
            .map(|slot| {
                let members = slot.members.iter().map(|(role, target)| (role.clone(), target.name.clone())).collect();
                (slot.name.clone(), members)
            })
            .collect();
        Ok(Status {
            slot: state.system.slot,
            boot_cycle: state.boot_cycle,
            version,
            inactive_slot,
            next_boot: state.boot_alternative,
            installed_upgrade,
            targets,
            boot_state_damage: state.damage,
        })
    }

    /// What every install starts with: the state, which must be stable, the inactive slot and the
    /// block device of each of its targets (a layout that does not fit the system fails here,
    /// before the long read).
    fn begin_install(&self) -> Result<Install, UpgradeError> {
        let state = self.state()?;
        // The one-slot refusal first: no boot cycle would make an install possible.
        let (slot, slot_layout) = inactive_slot(&state)?;
        require_stable(&state, "install an upgrade")?;
        let mut targets = Vec::new();
        for (role, target) in &slot_layout.members {
            targets.push(SlotTarget {
                role: role.clone(),
                name: target.name.clone(),
                block: state.system.device(target)?,
                device: None,
            });
        }
        Ok(Install { state, slot, slot_layout, targets })
    }

    /// Clears the marker of an earlier install, before the slot is written, and returns the boot
    /// state that records this one, to be written once all of it is written and verified.
    fn start_writing(&self, install: &Install, version: &str) -> Result<GrubEnv, UpgradeError> {
        let mut env = install.state.env.clone();
        let marker_was_set = env.unset(INSTALLED_SLOT) | env.unset(INSTALLED_VERSION);
        let mut installed_env = env.clone();
        installed_env.set(INSTALLED_SLOT, install.slot.letter())?;
        installed_env.set(INSTALLED_VERSION, version)?;
        // The final block must fit before anything is written.
        installed_env.to_block()?;
        if marker_was_set {
            self.write_state(&env)?;
        }
        Ok(installed_env)
    }

    /// Installs the update image `source` into the inactive slot ([`Agent::install_release`] and
    /// [`Agent::install_unsigned`] decide what may be installed). The slot's targets are found, the
    /// image is verified completely (one pass, with the SHA-256 when `expected_sha256` is given;
    /// one `<role>.img` for each role of the slot), its version is compared with the running one
    /// (older is refused unless `allow_downgrade`: anti-rollback) and the targets are opened
    /// (exclusively: a mounted one is refused); then the marker is cleared, the images are written
    /// in a second pass that must read the same bytes, and the marker is set. A refusal writes
    /// nothing; a failure while writing leaves the slot uncommitted.
    fn install_image(
        &self,
        source: &ImageFile,
        expected_sha256: Option<&str>,
        allow_downgrade: bool,
        progress: &mut dyn FnMut(InstallEvent<'_>),
    ) -> Result<Installed, UpgradeError> {
        let image = source.name.as_path();
        let expected_sha256 = expected_sha256.map(parse_sha256).transpose()?;
        let mut install = self.begin_install()?;
        let started = Instant::now();
        let update = UpdateImage::verify(source, &install.slot_layout)?;
        progress(InstallEvent::Verified {
            image,
            bytes: update.compressed_size,
            sha256: &update.sha256,
            elapsed: started.elapsed(),
        });
        if let Some(expected) = expected_sha256 {
            if expected != update.sha256 {
                return Err(UpgradeError::Sha256Mismatch {
                    path: image.to_owned(),
                    expected,
                    actual: update.sha256.clone(),
                });
            }
        }
        if !allow_downgrade {
            self.check_not_older(image, &update.version)?;
        }
        for (role, size) in &update.images {
            install.target_for(image, role, *size)?;
        }
        install.open_targets()?;
        let installed_env = self.start_writing(&install, &update.version)?;
        let slot = install.slot;
        update.copy_images(source, slot, |role, size, reader| install.write(image, role, size, reader, progress))?;
        self.write_state(&installed_env)?;
        Ok(Installed { slot, version: update.version, sha256: update.sha256 })
    }

    /// Installs the update image of the release bundle at `url` (HTTP or HTTPS) into the inactive
    /// slot as it downloads, with no local copy ([`Agent::install_release_stream`]).
    pub fn install_release_url(
        &self,
        url: &str,
        ca_cert: Option<&Path>,
        allow_downgrade: bool,
        progress: &mut dyn FnMut(InstallEvent<'_>),
    ) -> Result<Installed, UpgradeError> {
        let open = || Ok(crate::release::fetch::open(url, ca_cert)?.0);
        self.install_release_stream(url, open, allow_downgrade, progress)
    }

    /// Installs the update image of the release bundle read from `stream` (a download, or the
    /// body of a request to [`server`]) into the inactive slot, in one pass: the manifest's
    /// signature is checked against the image's release keys and its version against the running
    /// one (anti-rollback, unless `allow_downgrade`) before anything is written; the update image
    /// is checked as it is written ([`UpdateImage::stream`]), and its SHA-256 against the
    /// manifest's at its end. Only then is the slot marked installed: an install that fails at any
    /// point leaves it uncommitted. `source` names the bundle in messages; `open` starts the stream
    /// once the refusals that need none (the boot state, the keys, the targets) have been made.
    pub fn install_release_stream<R: Read>(
        &self,
        source: &str,
        open: impl FnOnce() -> Result<R, UpgradeError>,
        allow_downgrade: bool,
        progress: &mut dyn FnMut(InstallEvent<'_>),
    ) -> Result<Installed, UpgradeError> {
        let name = PathBuf::from(source);
        let image = PathBuf::from(format!("{source}:{UPDATE_IMAGE}"));
        let mut install = self.begin_install()?;
        let keys = self.release_keys()?;
        install.open_targets()?;
        let started = Instant::now();
        let mut stream = open()?;
        let mut magic = [0u8; ZSTD_MAGIC.len()];
        let count = crate::sparse::read_full(&mut stream, &mut magic)
            .map_err(|source| UpgradeError::Read { path: name.clone(), source })?;
        if magic[..count] == ZSTD_MAGIC {
            return Err(UpgradeError::Unsigned { path: name, keys: self.system_root.join(RELEASE_KEYS) });
        }
        let stream = (&magic[..count]).chain(stream);
        let (update, installed_env) =
            crate::release::stream_signed_file(&name, stream, &keys, UPDATE_IMAGE, |manifest, reader| {
                self.check_os(&name, &manifest.os)?;
                if !allow_downgrade {
                    self.check_not_older(&name, &manifest.version)?;
                }
                let installed_env = self.start_writing(&install, &manifest.version)?;
                let slot_layout = install.slot_layout.clone();
                let update = UpdateImage::stream(reader, &image, &slot_layout, |role, size, reader| {
                    install.write(&image, role, size, reader, progress)
                })?;
                if update.version != manifest.version {
                    return Err(UpgradeError::BadImage {
                        path: image.clone(),
                        problem: format!(
                            "its version is {}, the signed manifest says {}",
                            update.version, manifest.version
                        ),
                    });
                }
                Ok::<_, UpgradeError>((update, installed_env))
            })?;
        progress(InstallEvent::Verified {
            image: &image,
            bytes: update.compressed_size,
            sha256: &update.sha256,
            elapsed: started.elapsed(),
        });
        self.write_state(&installed_env)?;
        Ok(Installed { slot: install.slot, version: update.version, sha256: update.sha256 })
    }

    /// Refuses a release `source` of another OS than the running one: a HostOS update could fit a
    /// GuestOS slot, and be signed with the same key.
    fn check_os(&self, source: &Path, os: &str) -> Result<(), UpgradeError> {
        let path = self.system_root.join(OS_NAME_FILE);
        let text = fs::read_to_string(&path).map_err(|source| UpgradeError::Read { path: path.clone(), source })?;
        let running = text.trim_end();
        if os != running {
            return Err(UpgradeError::OtherOs {
                path: source.to_owned(),
                os: os.to_owned(),
                running: running.to_owned(),
            });
        }
        Ok(())
    }

    /// Anti-rollback: refuses `version` of the update `source` when it is older than the running one.
    fn check_not_older(&self, source: &Path, version: &str) -> Result<(), UpgradeError> {
        let running = self.running_version()?;
        check_not_older(version, &running)
            .map_err(|problem| UpgradeError::Rollback { path: source.to_owned(), problem })
    }

    /// The release keys the image trusts: the `*.pem` files of [`RELEASE_KEYS`].
    fn release_keys(&self) -> Result<Vec<crate::release::TrustedKey>, UpgradeError> {
        let dir = self.system_root.join(RELEASE_KEYS);
        let mut paths = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry.map_err(|source| UpgradeError::Read { path: dir.clone(), source })?.path();
                    if path.extension().is_some_and(|extension| extension == "pem") {
                        paths.push(path);
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(UpgradeError::Read { path: dir, source }),
        }
        if paths.is_empty() {
            return Err(UpgradeError::NoReleaseKeys { keys: dir });
        }
        paths.sort();
        paths.iter().map(|path| crate::release::read_public_key(path).map_err(UpgradeError::from)).collect()
    }

    /// Installs the update image of a release bundle (a bundle or an unpacked one) into the
    /// inactive slot, once the bundle's manifest verifies against the image's release keys: the
    /// update image must have the SHA-256 the signed manifest gives it. Only its headers are read
    /// from the bundle before the install's own passes over the update image.
    pub fn install_release(
        &self,
        bundle: &Path,
        allow_downgrade: bool,
        progress: &mut dyn FnMut(InstallEvent<'_>),
    ) -> Result<Installed, UpgradeError> {
        if is_bare_image(bundle)? {
            return Err(UpgradeError::Unsigned { path: bundle.to_owned(), keys: self.system_root.join(RELEASE_KEYS) });
        }
        let keys = self.release_keys()?;
        let (manifest, file) = crate::release::signed_file(bundle, &keys, UPDATE_IMAGE)?;
        self.check_os(bundle, &manifest.os)?;
        let name = match file.section {
            Some(_) => PathBuf::from(format!("{}:{UPDATE_IMAGE}", bundle.display())),
            None => file.file.clone(),
        };
        let image = ImageFile { file: file.file, section: file.section, name };
        self.install_image(&image, Some(&file.sha256), allow_downgrade, progress)
    }

    /// Installs a bare update image, which nobody signed: on dev images only.
    pub fn install_unsigned(
        &self,
        image: &Path,
        expected_sha256: Option<&str>,
        allow_downgrade: bool,
        progress: &mut dyn FnMut(InstallEvent<'_>),
    ) -> Result<Installed, UpgradeError> {
        let build_type = self.build_type()?;
        if build_type != "dev" {
            return Err(UpgradeError::UnsignedRefused { path: image.to_owned(), build_type });
        }
        self.install_image(&ImageFile::whole(image), expected_sha256, allow_downgrade, progress)
    }

    /// The image's build type, from [`BUILD_CONF`].
    fn build_type(&self) -> Result<String, UpgradeError> {
        let path = self.system_root.join(BUILD_CONF);
        let text = fs::read_to_string(&path).map_err(|source| UpgradeError::Read { path: path.clone(), source })?;
        text.lines()
            .find_map(|line| line.strip_prefix("BUILD_TYPE="))
            .map(|value| value.trim().to_owned())
            .ok_or_else(|| UpgradeError::System { path, problem: "it sets no BUILD_TYPE".into() })
    }

    /// Makes GRUB boot the upgrade installed in the inactive slot once, at the next boot, on trial:
    /// it must confirm itself within `trial_timeout` seconds ([`trial`]).
    pub fn upgrade_commit(&self, trial_timeout: u32) -> Result<Committed, UpgradeError> {
        let trial_timeout = trial::check_timeout(trial_timeout)?;
        let mut state = self.state()?;
        let (slot, _) = inactive_slot(&state)?;
        require_stable(&state, "commit an upgrade")?;
        let version = self.installed_upgrade(&state.env, slot)?.ok_or(UpgradeError::NothingInstalled { slot })?;
        state.env.set(BOOT_ALTERNATIVE, slot.letter())?;
        state.env.set(BOOT_CYCLE, BootCycle::FirstBoot.as_str())?;
        state.env.set(trial::TRIAL_TIMEOUT_VARIABLE, &trial_timeout.to_string())?;
        state.env.unset(INSTALLED_SLOT);
        state.env.unset(INSTALLED_VERSION);
        self.write_state(&state.env)?;
        Ok(Committed { slot, version, trial_timeout })
    }

    /// Confirms that the running slot works, so that GRUB keeps booting it: `failsafe_check` (the
    /// trial boot of an upgrade) becomes `stable`, once every executable of `health_checks` has
    /// succeeded, and the trial's watchdog is stopped. `install` becomes `stable` too, which GRUB
    /// would do at the next boot anyway: both boot `boot_alternative` without a fallback. At
    /// `first_boot` the committed slot has not booted yet, so there is nothing running to confirm.
    pub fn confirm(&self, health_checks: Option<&Path>) -> Result<Confirmation, UpgradeError> {
        let mut state = self.state()?;
        let slot = state.system.slot;
        let previous = state.boot_cycle;
        let mut passed = 0;
        match previous {
            BootCycle::Stable => {}
            BootCycle::FirstBoot => return Err(wrong_cycle(&state, "confirm")),
            BootCycle::FailsafeCheck | BootCycle::Install => {
                if let Some(dir) = health_checks {
                    passed =
                        trial::run_health_checks(dir).map_err(|source| UpgradeError::Unhealthy { slot, source })?.len();
                }
                state.env.set(BOOT_CYCLE, BootCycle::Stable.as_str())?;
                self.write_state(&state.env)?;
            }
        }
        let watchdog = trial::stop_armed_watchdog(&self.system_root)?;
        Ok(Confirmation { slot, previous, health_checks: passed, watchdog })
    }

    /// Restores the copies of the boot state: a damaged one is rewritten from the other (which must
    /// fit the running system); with both lost, the running slot is written anew, `stable`.
    pub fn repair(&self) -> Result<Repaired, UpgradeError> {
        let copy = boot_state::copy_path(&self.grubenv);
        match boot_state::load(&self.grubenv) {
            Ok(loaded) if loaded.grubenv_damage.is_none() && loaded.copy_damage.is_none() => Ok(Repaired::Intact),
            Ok(_) => {
                let state = self.state()?;
                self.write_state(&state.env)?;
                Ok(Repaired::Restored {
                    grubenv: self.grubenv.clone(),
                    copy,
                    slot: state.boot_alternative,
                    boot_cycle: state.boot_cycle,
                })
            }
            Err(UpgradeError::BootStateLost { .. }) => {
                let layout = self.read_layout()?;
                let slot = System::discover(&self.system_root, &layout)?.slot;
                let mut env = GrubEnv::new();
                env.set(BOOT_ALTERNATIVE, slot.letter())?;
                env.set(BOOT_CYCLE, BootCycle::Stable.as_str())?;
                self.write_state(&env)?;
                Ok(Repaired::Recreated { grubenv: self.grubenv.clone(), copy, slot })
            }
            Err(error) => Err(error),
        }
    }

    /// Starts the watchdog of a trial boot, when GRUB marked this boot one: `None` otherwise. Waits
    /// up to `wait` for the machine's watchdog to appear.
    pub fn arm_trial(&self, wait: Duration) -> Result<Option<TrialArmed>, UpgradeError> {
        let path = self.system_root.join("proc/cmdline");
        let command_line = fs::read_to_string(&path).map_err(|source| UpgradeError::Read { path, source })?;
        let Some(requested) = trial::trial_timeout(&command_line)? else {
            return Ok(None);
        };
        // GRUB checks only that it is a number: one edited into grubenv by hand may be off.
        let seconds = requested.clamp(*trial::TRIAL_TIMEOUTS.start(), *trial::TRIAL_TIMEOUTS.end());
        let watchdog = trial::find_watchdog(&self.system_root, wait, &mut trial::modprobe)?;
        let requested = (seconds != requested).then_some(requested);
        match trial::arm(&self.system_root, &watchdog, seconds) {
            Ok(set) => Ok(Some(TrialArmed { watchdog, seconds: set, requested, refused_by: None })),
            // Hardware timers have a maximum (i6300esb 2046 s, some TCO timers 613 s); softdog's
            // is far above the deadlines accepted.
            Err(TrialError::SetTimeout { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && !watchdog.is_software() =>
            {
                let software = trial::software_watchdog(&self.system_root, &mut trial::modprobe)?;
                let set = trial::arm(&self.system_root, &software, seconds)?;
                Ok(Some(TrialArmed { watchdog: software, seconds: set, requested, refused_by: Some(watchdog) }))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// An install under way: the state it started from, the inactive slot and its targets.
struct Install {
    state: State,
    slot: Slot,
    slot_layout: layout::Slot,
    targets: Vec<SlotTarget>,
}

/// A target of the inactive slot: a partition or volume of the layout, and its block device.
struct SlotTarget {
    role: String,
    /// The layout's name of the partition or volume.
    name: String,
    block: system::BlockDevice,
    /// Opened for writing ([`Install::open_targets`]).
    device: Option<Device>,
}

impl Install {
    /// The target of `role`, which must hold `size` bytes: an image that does not fit is refused.
    fn target_for(&mut self, image: &Path, role: &str, size: u64) -> Result<&mut SlotTarget, UpgradeError> {
        let slot_name = &self.slot_layout.name;
        // The image readers accept only images of the slot's roles.
        let target =
            self.targets.iter_mut().find(|target| target.role == role).ok_or_else(|| UpgradeError::DoesNotFit {
                path: image.to_owned(),
                slot: slot_name.clone(),
                problem: format!("slot {slot_name} has no role {role:?}"),
            })?;
        if size > target.block.size {
            return Err(UpgradeError::TooLarge {
                path: image.to_owned(),
                member: member_name(role),
                size,
                target: format!("{} {}", target.block.kind, target.name),
                device: target.block.device.clone(),
                capacity: target.block.size,
            });
        }
        Ok(target)
    }

    /// Opens every target for writing, exclusively: a mounted one is refused before anything is
    /// written.
    fn open_targets(&mut self) -> Result<(), UpgradeError> {
        for target in &mut self.targets {
            let device = Device::open(&target.block.device)
                .map_err(|source| UpgradeError::Write { path: target.block.device.clone(), source })?;
            target.device = Some(device);
        }
        Ok(())
    }

    /// Writes the image of `role`, `size` bytes read from `reader`, to its target.
    fn write(
        &mut self,
        image: &Path,
        role: &str,
        size: u64,
        reader: &mut dyn Read,
        progress: &mut dyn FnMut(InstallEvent<'_>),
    ) -> Result<(), UpgradeError> {
        let slot = self.slot;
        let target = self.target_for(image, role, size)?;
        let path = target.block.device.clone();
        let device = target.device.as_mut().ok_or_else(|| UpgradeError::Write {
            path: path.clone(),
            source: io::Error::other("the target was not opened"),
        })?;
        let member = member_name(role);
        progress(InstallEvent::Writing { member: &member, target: &target.name, device: &path, size });
        let started = Instant::now();
        let written = device.write_image(reader).map_err(|error| match error {
            CopyError::Read(source) => UpgradeError::Read { path: image.to_owned(), source },
            CopyError::Write(source) => UpgradeError::Write { path: path.clone(), source },
        })?;
        if written != size {
            return Err(UpgradeError::ImageChanged { path: image.to_owned(), slot });
        }
        progress(InstallEvent::Written { member: &member, size, elapsed: started.elapsed() });
        Ok(())
    }
}

/// The slot upgrades go to, and its targets; an OS with one slot has none.
fn inactive_slot(state: &State) -> Result<(Slot, layout::Slot), UpgradeError> {
    let slot = state.system.slot.other();
    let targets = state.layout.slot(slot.letter()).ok_or(UpgradeError::OneSlot)?;
    Ok((slot, targets.clone()))
}

fn require_stable(state: &State, action: &'static str) -> Result<(), UpgradeError> {
    match state.boot_cycle {
        BootCycle::Stable => Ok(()),
        _ => Err(wrong_cycle(state, action)),
    }
}

fn wrong_cycle(state: &State, action: &'static str) -> UpgradeError {
    let advice = match state.boot_cycle {
        BootCycle::FirstBoot => {
            format!("the upgrade committed to slot {} has not booted yet: reboot first", state.boot_alternative)
        }
        BootCycle::FailsafeCheck => "this first boot of an upgrade is not confirmed: confirm it first".into(),
        BootCycle::Install | BootCycle::Stable => {
            "the first boot after installation is not confirmed: confirm it first".into()
        }
    };
    UpgradeError::WrongCycle { action, boot_cycle: state.boot_cycle, advice }
}

/// Whether `path` is a bare update image (a zstd stream) rather than a bundle (a tar, or an
/// unpacked bundle's directory).
fn is_bare_image(path: &Path) -> Result<bool, UpgradeError> {
    if path.is_dir() {
        return Ok(false);
    }
    let mut magic = [0u8; 4];
    let read = fs::File::open(path).and_then(|mut file| crate::sparse::read_full(&mut file, &mut magic));
    let count = read.map_err(|source| UpgradeError::Read { path: path.to_owned(), source })?;
    Ok(count == magic.len() && magic == ZSTD_MAGIC)
}

/// Anti-rollback: `version` may be installed over `running` unless it is older, both read as
/// semantic versions (so 0.10.0 is newer than 0.9.0, and 1.0.0-rc.1 older than 1.0.0).
fn check_not_older(version: &str, running: &str) -> Result<(), String> {
    let parse = |text: &str, what: &str| {
        semver::Version::parse(text).map_err(|error| {
            format!(
                "{what} {text:?} is not a semantic version ({error}), so it cannot be told whether the update is older"
            )
        })
    };
    let new = parse(version, "the update's version")?;
    let old = parse(running, "the running version")?;
    if new < old {
        return Err(format!("version {version} is older than the running {running}: refused (anti-rollback)"));
    }
    Ok(())
}

/// A SHA-256 given on the command line, as lowercase hex.
fn parse_sha256(text: &str) -> Result<String, UpgradeError> {
    if text.len() != 64 || !text.chars().all(|character| character.is_ascii_hexdigit()) {
        return Err(UpgradeError::BadSha256 { text: text.to_owned() });
    }
    Ok(text.to_ascii_lowercase())
}

/// The version in a version file: one non-empty line of UTF-8, its newline optional. It ends up in
/// grubenv and in status lines, so it holds no control characters.
fn version_line(bytes: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the version is not UTF-8")?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.contains('\n') {
        return Err("the version is more than one line");
    }
    if line.chars().any(char::is_control) {
        return Err("the version holds a control character");
    }
    if line.trim().is_empty() {
        return Err("the version is empty");
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines_are_one_non_empty_line() {
        assert_eq!(version_line(b"0.1.0-dev\n").unwrap(), "0.1.0-dev");
        assert_eq!(version_line(b"0.1.0").unwrap(), "0.1.0");
        for (bytes, problem) in [
            (&b""[..], "empty"),
            (b"\n", "empty"),
            (b" \n", "empty"),
            (b"1\n2\n", "more than one line"),
            (b"1\n\n", "more than one line"),
            (b"1\r\n", "control character"),
            (b"\xff\n", "UTF-8"),
        ] {
            assert!(version_line(bytes).unwrap_err().contains(problem), "{bytes:?}");
        }
    }

    #[test]
    fn only_older_versions_are_refused_compared_as_semantic_versions() {
        for (version, running) in [
            ("0.1.0-dev-next", "0.1.0-dev"),
            ("0.1.0-dev", "0.1.0-dev"),
            ("0.10.0", "0.9.0"),
            ("1.0.0", "1.0.0-rc.1"),
            ("1.0.0-rc.10", "1.0.0-rc.9"),
        ] {
            assert_eq!(check_not_older(version, running), Ok(()), "{version} over {running}");
        }
        for (version, running) in [("0.9.0", "0.10.0"), ("1.0.0-rc.1", "1.0.0"), ("0.1.0-dev", "0.1.0-dev-next")] {
            assert_eq!(
                check_not_older(version, running).unwrap_err(),
                format!("version {version} is older than the running {running}: refused (anti-rollback)")
            );
        }
        let error = check_not_older("build-42", "0.1.0").unwrap_err();
        assert!(error.starts_with("the update's version \"build-42\" is not a semantic version ("), "{error}");
        let error = check_not_older("0.1.0", "1.2").unwrap_err();
        assert!(error.starts_with("the running version \"1.2\" is not a semantic version ("), "{error}");
    }

    #[test]
    fn sha256_arguments_are_64_hex_digits_compared_in_lowercase() {
        let upper = "AB".repeat(32);
        assert_eq!(parse_sha256(&upper).unwrap(), "ab".repeat(32));
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65)] {
            assert!(matches!(parse_sha256(bad), Err(UpgradeError::BadSha256 { .. })), "{bad:?}");
        }
    }

    #[test]
    fn status_lines_say_what_waits_in_the_inactive_slot() {
        let mut status = Status {
            slot: Slot::A,
            boot_cycle: BootCycle::Stable,
            version: "0.1.0-dev".into(),
            inactive_slot: Some(Slot::B),
            next_boot: Slot::A,
            installed_upgrade: Some("0.1.0-next".into()),
            targets: BTreeMap::new(),
            boot_state_damage: None,
        };
        assert_eq!(
            status.to_string(),
            "slot A, boot_cycle stable, version 0.1.0-dev; slot B: upgrade 0.1.0-next installed, not committed"
        );
        status.installed_upgrade = None;
        assert!(status.to_string().ends_with("slot B: no upgrade installed"));
        status.boot_cycle = BootCycle::FirstBoot;
        status.next_boot = Slot::B;
        assert!(status.to_string().ends_with("slot B: committed, boots next"));
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["boot_cycle"], "first_boot");
        assert_eq!(json["next_boot"], "B");
        assert_eq!(json["inactive_slot"], "B");
        assert!(json["installed_upgrade"].is_null());
        status.inactive_slot = None;
        status.boot_cycle = BootCycle::Stable;
        status.next_boot = Slot::A;
        assert_eq!(
            status.to_string(),
            "slot A, boot_cycle stable, version 0.1.0-dev; the only slot: no upgrades in place"
        );
    }
}
