//! The layout of an OS disk as data (its format, which the upgrade agent reads, is
//! [`icos_agent::layout`]): which partitions (of `partitions.csv`) or LVM logical
//! volumes (of a `volumes.csv` inside one partition) form each boot slot, and where the GRUB
//! partition is. From it come, so that nothing repeats the layout by hand:
//!
//! - the resolved layout (`layout.json`): every partition and volume with its size and the UUID
//!   its filesystem identifiers derive from, and the slots. The build rules size and identify the
//!   filesystems from it; the upgrade agent reads the copy installed on the image to find the
//!   running slot and the volumes of the other one;
//! - `boot_args`: each slot's kernel command line (`BOOT_ARGS_A`, `BOOT_ARGS_B`), with its root
//!   and the mounts of its other members, of the GRUB partition and of the OS's other mounts
//!   ([`MountSpec`]);
//! - the GRUB configuration: the shared A/B state machine (a template) with the devices of each
//!   slot's boot filesystem and of grubenv filled in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use uuid::Uuid;

pub use icos_agent::layout::*;

use crate::lvm::{LvmIdentity, PartitionVolumeGroup, VolumesError, PE_START};
use crate::partitions::{PartitionTable, PartitionsError, SECTOR_SIZE};
use crate::seed::Seed;

/// The shared GRUB EFI binary looks for `grub.cfg` in this partition of the disk it came from.
pub const GRUB_PARTITION_NUMBER: u32 = 2;
/// The line of the GRUB template that the generated device assignments replace.
pub const GRUB_TEMPLATE_MARKER: &str = "@ICOS_LAYOUT@";

/// Why a layout cannot be resolved, or its boot arguments or GRUB configuration made.
#[derive(Debug, thiserror::Error)]
pub enum LayoutBuildError {
    #[error(transparent)]
    Partitions(#[from] PartitionsError),
    #[error(transparent)]
    Volumes(#[from] VolumesError),
    #[error("{target} ({size} bytes) is too small for a verity root: its filesystem and hash tree must fit in it")]
    VerityRootTooSmall { target: String, size: u64 },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{0}")]
    Spec(String),
}

/// The description of one slot on the command line: `A:boot=A_boot,root=A_root,var=A_var`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSpec {
    pub name: String,
    pub members: BTreeMap<String, String>,
}

impl SlotSpec {
    pub fn parse(text: &str) -> Result<Self, LayoutBuildError> {
        let bad = |problem: &str| {
            LayoutBuildError::Spec(format!(
                "slot {text:?}: {problem}; expected NAME:ROLE=TARGET,... such as A:boot=A_boot,root=A_root,var=A_var"
            ))
        };
        let (name, members_text) = text.split_once(':').ok_or_else(|| bad("no ':'"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad("the slot name must be letters and digits"));
        }
        let mut members = BTreeMap::new();
        for member in members_text.split(',') {
            let (role, target) = member.split_once('=').ok_or_else(|| bad("a member is not ROLE=TARGET"))?;
            if !ROLES.contains(&role) {
                return Err(bad(&format!("unknown role {role:?} (roles: {})", ROLES.join(", "))));
            }
            if target.is_empty() || members.insert(role.to_owned(), target.to_owned()).is_some() {
                return Err(bad(&format!("role {role:?} is empty or given twice")));
            }
        }
        for required in ["boot", "root"] {
            if !members.contains_key(required) {
                return Err(bad(&format!("it has no {required} member")));
            }
        }
        Ok(SlotSpec { name: name.to_owned(), members })
    }
}

/// A partition or volume that every slot mounts besides its own members, such as an installer's
/// data partition: `TARGET:PATH:FSTYPE[:OPTIONS]` (`data:/mnt/data:ext4:ro`), which becomes
/// `systemd.mount-extra=DEVICE:PATH:FSTYPE[:OPTIONS]` on each slot's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub target: String,
    pub path: String,
    pub fs_type: String,
    pub options: Option<String>,
}

impl MountSpec {
    pub fn parse(text: &str) -> Result<Self, LayoutBuildError> {
        let bad = |problem: &str| {
            LayoutBuildError::Spec(format!(
                "mount {text:?}: {problem}; expected TARGET:PATH:FSTYPE[:OPTIONS] such as data:/mnt/data:ext4:ro"
            ))
        };
        // The kernel splits its command line at white space and quotes; systemd at the colons.
        if text.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\') {
            return Err(bad("it contains white space, a quote or a backslash"));
        }
        let mut parts = text.splitn(4, ':');
        let (target, path, fs_type) = match (parts.next(), parts.next(), parts.next()) {
            (Some(target), Some(path), Some(fs_type)) => (target, path, fs_type),
            _ => return Err(bad("it has fewer than three fields")),
        };
        let options = parts.next().map(str::to_owned);
        if target.is_empty() || fs_type.is_empty() || options.as_deref() == Some("") {
            return Err(bad("a field is empty"));
        }
        if !path.starts_with('/') || path == "/" || path.split('/').any(|part| part == ".." || part == ".") {
            return Err(bad("the mount point must be an absolute path below / without . or .."));
        }
        Ok(MountSpec { target: target.to_owned(), path: path.to_owned(), fs_type: fs_type.to_owned(), options })
    }
}

/// The device-mapper name of logical volume `lv` of `vg`: lvm2 and GRUB double the dashes in
/// each name and join them with one.
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// The UUID a filesystem on a logical volume derives its identifiers from. systemd-repart has no
/// volumes; this is keyed with the seed over the volume's LVM UUID, so that a UUID fixed in
/// `volumes.csv` fixes the filesystem's identifiers too.
pub fn volume_filesystem_parent(seed: &Seed, lv_uuid: &str) -> Uuid {
    let digest = seed.digest(format!("icos-lvm-file-system/{lv_uuid}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Resolves the slots against the partition table and the volume group.
pub fn resolve(
    partitions: &PartitionTable,
    lvm: Option<&PartitionVolumeGroup>,
    slots: &[SlotSpec],
    grub_partition: &str,
    seed: &Seed,
) -> Result<Layout, LayoutBuildError> {
    let invalid = |path: &Path, problem: String| LayoutBuildError::Invalid { path: path.to_owned(), problem };
    let uuids = partitions.partition_uuids(Some(seed))?;
    let mut targets: Vec<Target> = partitions
        .partitions
        .iter()
        .zip(&uuids)
        .zip(1u32..)
        .map(|((partition, uuid), number)| Target {
            name: partition.name.clone(),
            location: Location::Partition { number, uuid: *uuid },
            offset: partition.start * SECTOR_SIZE,
            size: partition.size * SECTOR_SIZE,
            filesystem_parent: *uuid,
        })
        .collect();
    let mut volume_group = None;
    if let Some(lvm) = lvm {
        let holder = targets.iter().find(|target| target.name == lvm.partition).ok_or_else(|| {
            invalid(
                &partitions.path,
                format!("no partition is named {:?}, which is to hold the LVM volume group", lvm.partition),
            )
        })?;
        let options = lvm.options(holder.size, *seed);
        let extents_offset = holder.offset + PE_START;
        if !lvm.extent_size.is_power_of_two() || lvm.extent_size < 4096 {
            return Err(LayoutBuildError::Spec(format!(
                "extent size {}: must be a power of two of at least 4096 bytes",
                lvm.extent_size
            )));
        }
        let identity = LvmIdentity::derive(&lvm.volumes, &options);
        lvm.volumes.check_layout(identity.pe_count)?;
        for (volume, id) in lvm.volumes.volumes.iter().zip(&identity.lv_uuids) {
            if let Some(clash) = targets.iter().find(|target| target.name == volume.name) {
                return Err(invalid(
                    &lvm.volumes.path,
                    format!(
                        "line {}: volume {:?} has the name of a partition ({})",
                        volume.line, volume.name, clash.name
                    ),
                ));
            }
            let uuid = id.to_string();
            targets.push(Target {
                name: volume.name.clone(),
                filesystem_parent: volume_filesystem_parent(seed, &uuid),
                location: Location::Volume {
                    volume_group: lvm.vg_name.clone(),
                    dm_name: dm_name(&lvm.vg_name, &volume.name),
                    uuid,
                },
                offset: extents_offset + volume.start * lvm.extent_size,
                size: volume.size * lvm.extent_size,
            });
        }
        volume_group = Some(VolumeGroupInfo {
            name: lvm.vg_name.clone(),
            partition: lvm.partition.clone(),
            extent_size: lvm.extent_size,
        });
    }
    let find = |name: &str| targets.iter().find(|target| target.name == name).cloned();
    let grub = find(grub_partition).filter(|target| matches!(target.location, Location::Partition { .. })).ok_or_else(
        || invalid(&partitions.path, format!("no partition is named {grub_partition:?} (the GRUB partition)")),
    )?;
    if !matches!(grub.location, Location::Partition { number: GRUB_PARTITION_NUMBER, .. }) {
        return Err(invalid(
            &partitions.path,
            format!("the GRUB partition {grub_partition:?} must be partition {GRUB_PARTITION_NUMBER}: the shared GRUB EFI binary reads grub.cfg there"),
        ));
    }
    if slots.is_empty() || slots.len() > 2 {
        return Err(LayoutBuildError::Spec(format!("an OS has one slot or two (A and B), not {}", slots.len())));
    }
    let expected_names: &[&str] = if slots.len() == 1 { &["A"] } else { &["A", "B"] };
    let mut resolved = Vec::new();
    let mut used: BTreeMap<&str, String> = BTreeMap::new();
    for (spec, expected) in slots.iter().zip(expected_names) {
        if spec.name != *expected {
            return Err(LayoutBuildError::Spec(format!(
                "slot {:?}: the slots are named {}",
                spec.name,
                expected_names.join(" and ")
            )));
        }
        let mut members = BTreeMap::new();
        for (role, name) in &spec.members {
            let target = find(name).ok_or_else(|| {
                LayoutBuildError::Spec(format!(
                    "slot {}: {role} is {name:?}, which is neither a partition nor a volume",
                    spec.name
                ))
            })?;
            if let Some(previous) = used.insert(name, format!("{} {role}", spec.name)) {
                return Err(LayoutBuildError::Spec(format!(
                    "slot {} {role} and {previous} are both {name:?}",
                    spec.name
                )));
            }
            members.insert(role.clone(), target);
        }
        if slots.len() == 2 && spec.name == "B" && spec.members.keys().ne(slots[0].members.keys()) {
            return Err(LayoutBuildError::Spec("slots A and B must have the same roles".into()));
        }
        resolved.push(Slot { name: spec.name.clone(), members });
    }
    Ok(Layout { version: LAYOUT_VERSION, grub, volume_group, slots: resolved, targets })
}

/// The slot that boots when GRUB picks `name`: a one-slot OS boots slot A for both.
fn boot_slot<'a>(layout: &'a Layout, name: &str) -> &'a Slot {
    layout.slot(name).unwrap_or(&layout.slots[0])
}

/// `boot_args`: `BOOT_ARGS_A` and `BOOT_ARGS_B`, each the slot's root, `kernel_args`, and the
/// mounts of its other members, of the GRUB partition and of `mounts`.
///
/// With `verity_root`, the initramfs opens each slot's root with dm-verity
/// (`icos.verity_data=DEVICE:HASH_OFFSET`, `icos.verity_root_hash=`, the placeholder
/// [`crate::verity::ROOT_HASH_PLACEHOLDER`] until `icos verity boot-args` fills it in) and the
/// kernel mounts the verified device.
pub fn boot_args(
    layout: &Layout,
    kernel_args: &str,
    verity_root: bool,
    mounts: &[MountSpec],
) -> Result<String, LayoutBuildError> {
    let mut extra_mounts = Vec::new();
    for mount in mounts {
        let target = layout.target(&mount.target).ok_or_else(|| {
            LayoutBuildError::Spec(format!("mount {}: no partition or volume is named {:?}", mount.path, mount.target))
        })?;
        if layout.slots.iter().any(|slot| slot.members.values().any(|member| member.name == target.name)) {
            return Err(LayoutBuildError::Spec(format!(
                "mount {}: {} is a slot member, which its slot mounts already",
                mount.path, target.name
            )));
        }
        let options = mount.options.as_ref().map(|options| format!(":{options}")).unwrap_or_default();
        extra_mounts.push(format!(
            "systemd.mount-extra={}:{}:{}{options}",
            target.kernel_device(),
            mount.path,
            mount.fs_type
        ));
    }
    let mut text = String::from(
        "# Kernel arguments of each slot, generated by `icos layout` from the partition table: grub.cfg\n\
         # sources this file from the boot filesystem of the slot it boots.\n",
    );
    for name in ["A", "B"] {
        let slot = boot_slot(layout, name);
        let root = &slot.members["root"];
        let mut args = if verity_root {
            let offset = crate::verity::root_hash_offset(root.size)
                .ok()
                .filter(|&offset| offset > 0)
                .ok_or_else(|| LayoutBuildError::VerityRootTooSmall { target: root.name.clone(), size: root.size })?;
            vec![
                format!("root=/dev/mapper/{}", VERITY_ROOT_DEVICE_NAME),
                format!("icos.verity_data={}:{offset}", root.kernel_device()),
                format!("icos.verity_root_hash={}", crate::verity::ROOT_HASH_PLACEHOLDER),
            ]
        } else {
            vec![format!("root={}", root.kernel_device())]
        };
        args.extend(kernel_args.split_whitespace().map(str::to_owned));
        for (role, target) in &slot.members {
            if role != "root" {
                args.push(format!("systemd.mount-extra={}:/{role}:ext4", target.kernel_device()));
            }
        }
        args.push(format!("systemd.mount-extra={}:{GRUB_MOUNT}:vfat", layout.grub.kernel_device()));
        args.extend(extra_mounts.iter().cloned());
        let _ = writeln!(text, "BOOT_ARGS_{name}=\"{}\"", args.join(" "));
    }
    Ok(text)
}

/// The GRUB configuration: `template` with its marker line replaced by the devices of grubenv
/// and of each slot's boot filesystem.
pub fn grub_cfg(layout: &Layout, template: &str, template_path: &Path) -> Result<String, LayoutBuildError> {
    let mut assignments = String::from("# Generated by `icos layout` from the partition table.\n");
    let _ = writeln!(assignments, "set grubenv={}/grubenv", layout.grub.grub_device());
    if layout.volume_group.is_some() {
        assignments.push_str("insmod lvm\n");
    }
    for name in ["A", "B"] {
        let _ = writeln!(assignments, "set boot_{name}={}", boot_slot(layout, name).members["boot"].grub_device());
    }
    let marker_lines = template.lines().filter(|line| line.trim() == GRUB_TEMPLATE_MARKER).count();
    if marker_lines != 1 {
        return Err(LayoutBuildError::Invalid {
            path: template_path.to_owned(),
            problem: format!("expected one line {GRUB_TEMPLATE_MARKER}, found {marker_lines}"),
        });
    }
    let mut text = String::new();
    for line in template.lines() {
        if line.trim() == GRUB_TEMPLATE_MARKER {
            text.push_str(&assignments);
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvm::{parse_volumes_csv, VolumeTable};
    use crate::partitions::parse_partitions_csv;

    /// The volume group hostlvm in partition hostlvm.
    fn test_group(volumes: VolumeTable, extent_size: u64) -> PartitionVolumeGroup {
        PartitionVolumeGroup {
            partition: "hostlvm".into(),
            volumes,
            vg_name: "hostlvm".into(),
            extent_size,
            creation_host: "icos".into(),
            creation_time: 0,
        }
    }

    fn seed() -> Seed {
        "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c".parse().unwrap()
    }

    fn ab(prefix: &str) -> Vec<SlotSpec> {
        ["A", "B"]
            .iter()
            .map(|slot| {
                SlotSpec::parse(&format!(
                    "{slot}:boot={prefix}{slot}_boot,root={prefix}{slot}_root,var={prefix}{slot}_var"
                ))
                .unwrap()
            })
            .collect()
    }

    /// The layout of a GuestOS-like disk: partitions 1 to 9, slots on 4 to 9.
    fn upgrade_test_gpt_layout() -> Layout {
        let table = parse_partitions_csv(
            Path::new("partitions.csv"),
            "esp,2048,2048,U,\ngrub,4096,2048,L,\nconfig,6144,2048,L,\n\
             A_boot,8192,2048,L,\nA_root,10240,2048,L,\nA_var,12288,2048,L,\n\
             B_boot,14336,2048,L,\nB_root,16384,2048,L,\nB_var,18432,2048,L,\n",
        )
        .unwrap();
        let slots = ["A:boot=A_boot,root=A_root,var=A_var", "B:boot=B_boot,root=B_root,var=B_var"];
        let slots: Vec<SlotSpec> = slots.iter().map(|slot| SlotSpec::parse(slot).unwrap()).collect();
        resolve(&table, None, &slots, "grub", &seed()).unwrap()
    }

    /// A HostOS-like layout: volume group `hostlvm` in partition 3, each slot's root and var on
    /// volumes and, with `boot_partitions`, its boot on partitions 4 (A) and 5 (B) of the disk.
    fn upgrade_test_lvm_layout(boot_partitions: bool) -> Layout {
        let table = parse_partitions_csv(
            Path::new("partitions.csv"),
            "esp,2048,2048,U,\ngrub,4096,2048,L,\nhostlvm,6144,65536,lvm,\n\
             A_boot,71680,2048,L,\nB_boot,73728,2048,L,\n",
        )
        .unwrap();
        let volumes = parse_volumes_csv(
            Path::new("volumes.csv"),
            "config,0,1,\nA_root,1,2,\nA_var,3,1,\nB_root,4,2,\nB_var,6,1,\nvol_A_boot,7,1,\nvol_B_boot,8,1,\n",
            1 << 20,
        )
        .unwrap();
        let lvm = test_group(volumes, 1 << 20);
        let boot = if boot_partitions { "" } else { "vol_" };
        let slots: Vec<SlotSpec> = ["A", "B"]
            .iter()
            .map(|slot| {
                SlotSpec::parse(&format!("{slot}:boot={boot}{slot}_boot,root={slot}_root,var={slot}_var")).unwrap()
            })
            .collect();
        resolve(&table, Some(&lvm), &slots, "grub", &seed()).unwrap()
    }

    /// The upgrade agent's tests read these layouts from files (it cannot resolve one itself):
    /// they must be what `resolve` makes of their tables.
    #[test]
    fn the_upgrade_agents_test_layouts_are_resolved_layouts() {
        let cases = [
            (
                "gpt-layout.json",
                upgrade_test_gpt_layout(),
                include_str!("../../icos-agent/src/upgrade/testdata/gpt-layout.json"),
            ),
            (
                "lvm-boot-partitions-layout.json",
                upgrade_test_lvm_layout(true),
                include_str!("../../icos-agent/src/upgrade/testdata/lvm-boot-partitions-layout.json"),
            ),
            (
                "lvm-layout.json",
                upgrade_test_lvm_layout(false),
                include_str!("../../icos-agent/src/upgrade/testdata/lvm-layout.json"),
            ),
        ];
        for (name, layout, file) in cases {
            assert!(
                layout.to_json() == file,
                "tools/icos-agent/src/upgrade/testdata/{name} must be:\n{}",
                layout.to_json()
            );
        }
    }

    const GUESTOS: &str = "esp,2048,204800,U,B78084E2-3363-1346-8C25-D426F26B8928\n\
        grub,206848,204800,L,6788E4CF-F456-104E-9A34-A2C58CFB0EE6\n\
        A_boot,616448,2097152,L,DDF618FE-7244-B446-A175-3296E6B9D02E\n\
        A_root,2713600,20971520,L,7C0A626E-E5EA-E543-B5C5-300EB8304DB7\n\
        A_var,23685120,20971520,L,22D2F5A6-1E39-D247-81CF-90C95C113E21\n\
        B_boot,44656640,2097152,L,D5214E4F-F7B0-B945-9A9B-52B9188DF4C5\n\
        B_root,46753792,20971520,L,A78BC3A8-376C-054A-96E7-3904B915D0C5\n\
        B_var,67725312,20971520,L,\n";

    #[test]
    fn verity_roots_are_opened_by_the_initramfs_and_mounted_verified() {
        let table = parse_partitions_csv(Path::new("partitions.csv"), GUESTOS).unwrap();
        let layout = resolve(&table, None, &ab(""), "grub", &seed()).unwrap();
        let boot_args = boot_args(&layout, "ro", true, &[]).unwrap();
        let offset = crate::verity::root_hash_offset(10 << 30).unwrap();
        assert!(
            boot_args.contains(&format!(
                "BOOT_ARGS_A=\"root=/dev/mapper/vroot icos.verity_data=PARTUUID=7c0a626e-e5ea-e543-b5c5-300eb8304db7:{offset} \
                 icos.verity_root_hash=@ICOS_VERITY_ROOT_HASH@ ro systemd.mount-extra="
            )),
            "{boot_args}"
        );
        assert_eq!(boot_args.matches("icos.verity_root_hash=@ICOS_VERITY_ROOT_HASH@").count(), 2);
    }

    #[test]
    fn gpt_slots_give_partuuid_boot_args_and_grub_partitions() {
        let table = parse_partitions_csv(Path::new("partitions.csv"), GUESTOS).unwrap();
        let layout = resolve(&table, None, &ab(""), "grub", &seed()).unwrap();
        assert_eq!(layout.slot("A").unwrap().members["root"].size, 20971520 * 512);
        let boot_args = boot_args(&layout, "rw console=ttyS0,115200", false, &[]).unwrap();
        assert!(
            boot_args.contains(
                "BOOT_ARGS_A=\"root=PARTUUID=7c0a626e-e5ea-e543-b5c5-300eb8304db7 rw console=ttyS0,115200 \
             systemd.mount-extra=PARTUUID=ddf618fe-7244-b446-a175-3296e6b9d02e:/boot:ext4 \
             systemd.mount-extra=PARTUUID=22d2f5a6-1e39-d247-81cf-90c95c113e21:/var:ext4 \
             systemd.mount-extra=PARTUUID=6788e4cf-f456-104e-9a34-a2c58cfb0ee6:/grub:vfat\"\n"
            ),
            "{boot_args}"
        );
        // B_var has no UUID in the table: it is derived from the seed.
        let derived = table.partition_uuids(Some(&seed())).unwrap()[7];
        assert!(boot_args.contains(&format!("PARTUUID={derived}:/var:ext4")), "{boot_args}");
        let cfg = grub_cfg(&layout, "before\n@ICOS_LAYOUT@\nafter\n", Path::new("grub.cfg.in")).unwrap();
        assert!(cfg.starts_with("before\n# Generated"), "{cfg}");
        assert!(cfg.contains("set grubenv=($boot_disk,gpt2)/grubenv\nset boot_A=($boot_disk,gpt3)\nset boot_B=($boot_disk,gpt6)\nafter\n"), "{cfg}");
        let read_back: Layout = serde_json::from_str(&layout.to_json()).unwrap();
        assert_eq!(read_back, layout);
    }

    #[test]
    fn volume_slots_give_mapper_devices_and_lvm_grub_devices() {
        let table = parse_partitions_csv(
            Path::new("partitions.csv"),
            "esp,2048,204800,U,\ngrub,206848,204800,L,\nhostlvm,411648,4194304,lvm,\n",
        )
        .unwrap();
        let volumes = parse_volumes_csv(
            Path::new("volumes.csv"),
            "config,0,1,\nA_boot,1,1,\nA_root,2,2,\nB_boot,4,1,\nB_root,5,2,\nguest-os,7,10,\n",
            4 << 20,
        )
        .unwrap();
        let lvm = test_group(volumes, 4 << 20);
        let slots: Vec<SlotSpec> = ["A:boot=A_boot,root=A_root", "B:boot=B_boot,root=B_root"]
            .iter()
            .map(|s| SlotSpec::parse(s).unwrap())
            .collect();
        let layout = resolve(&table, Some(&lvm), &slots, "grub", &seed()).unwrap();
        let boot_args = boot_args(&layout, "rw", false, &[]).unwrap();
        assert!(boot_args.contains("BOOT_ARGS_B=\"root=/dev/mapper/hostlvm-B_root rw systemd.mount-extra=/dev/mapper/hostlvm-B_boot:/boot:ext4 systemd.mount-extra=PARTUUID="), "{boot_args}");
        let cfg = grub_cfg(&layout, "@ICOS_LAYOUT@\n", Path::new("t")).unwrap();
        assert!(
            cfg.contains("insmod lvm\nset boot_A=(lvm/hostlvm-A_boot)\nset boot_B=(lvm/hostlvm-B_boot)\n"),
            "{cfg}"
        );
        let guest = layout.target("guest-os").unwrap();
        assert!(matches!(&guest.location, Location::Volume { dm_name, .. } if dm_name == "hostlvm-guest--os"));
        assert_eq!(guest.size, 40 << 20);
        // The volume's extents start 1 MiB (PE_START) into the partition, at extent 7.
        assert_eq!(guest.offset, 411648 * 512 + (1 << 20) + 7 * (4 << 20));
        assert_eq!(layout.target("hostlvm").unwrap().offset, 411648 * 512);
        assert_ne!(guest.filesystem_parent, layout.target("config").unwrap().filesystem_parent);
    }

    #[test]
    fn one_slot_boots_for_both_names() {
        let table = parse_partitions_csv(
            Path::new("p.csv"),
            "esp,2048,2048,U,\ngrub,4096,2048,L,\nboot,6144,2048,L,\nroot,8192,2048,L,\n",
        )
        .unwrap();
        let layout =
            resolve(&table, None, &[SlotSpec::parse("A:boot=boot,root=root").unwrap()], "grub", &seed()).unwrap();
        let boot_args = boot_args(&layout, "", false, &[]).unwrap();
        let lines: Vec<&str> = boot_args.lines().filter(|line| line.starts_with("BOOT_ARGS_")).collect();
        assert_eq!(lines[0].trim_start_matches("BOOT_ARGS_A="), lines[1].trim_start_matches("BOOT_ARGS_B="));
    }

    #[test]
    fn other_mounts_follow_the_slot_mounts_on_both_command_lines() {
        let table = parse_partitions_csv(
            Path::new("p.csv"),
            "esp,2048,2048,U,\ngrub,4096,2048,L,\nconfig,6144,2048,L,\ndata,8192,2048,L,\nboot,10240,2048,L,\nroot,12288,2048,L,\n",
        )
        .unwrap();
        let layout =
            resolve(&table, None, &[SlotSpec::parse("A:boot=boot,root=root").unwrap()], "grub", &seed()).unwrap();
        let mounts =
            [MountSpec::parse("data:/mnt/data:ext4:ro").unwrap(), MountSpec::parse("config:/mnt/config:vfat").unwrap()];
        let args = boot_args(&layout, "rw", false, &mounts).unwrap();
        let data = layout.target("data").unwrap().kernel_device();
        let config = layout.target("config").unwrap().kernel_device();
        let grub = layout.grub.kernel_device();
        let expected = format!(
            "systemd.mount-extra={grub}:/grub:vfat systemd.mount-extra={data}:/mnt/data:ext4:ro \
             systemd.mount-extra={config}:/mnt/config:vfat\"\n"
        );
        assert_eq!(args.matches(&expected).count(), 2, "{args}");
        assert_eq!(layout.target("data").unwrap().offset, 8192 * 512);

        let unknown = boot_args(&layout, "rw", false, &[MountSpec::parse("nope:/mnt:ext4").unwrap()]).unwrap_err();
        assert!(unknown.to_string().contains("no partition or volume is named \"nope\""), "{unknown}");
        let member = boot_args(&layout, "rw", false, &[MountSpec::parse("boot:/mnt:ext4").unwrap()]).unwrap_err();
        assert!(member.to_string().contains("is a slot member"), "{member}");
    }

    #[test]
    fn mount_specs_refuse_what_a_command_line_cannot_carry() {
        for (text, problem) in [
            ("data:/mnt/data", "fewer than three fields"),
            ("data:mnt:ext4", "absolute path"),
            ("data:/:ext4", "absolute path"),
            ("data:/mnt/../etc:ext4", "without . or .."),
            ("data:/mnt data:ext4", "white space"),
            ("data:/mnt:ext4:", "a field is empty"),
            (":/mnt:ext4", "a field is empty"),
        ] {
            let error = MountSpec::parse(text).unwrap_err().to_string();
            assert!(error.contains(problem) && error.contains(text), "{text}: {error}");
        }
        let spec = MountSpec::parse("config:/mnt/config:vfat:ro,umask=077").unwrap();
        assert_eq!(spec.options.as_deref(), Some("ro,umask=077"));
    }

    #[test]
    fn bad_layouts_say_what_is_wrong() {
        let table = parse_partitions_csv(Path::new("partitions.csv"), GUESTOS).unwrap();
        let cases: Vec<(Vec<SlotSpec>, &str, &str)> = vec![
            (ab("x"), "grub", "slot A: boot is \"xA_boot\", which is neither a partition nor a volume"),
            (ab(""), "esp", "must be partition 2"),
            (ab(""), "nope", "no partition is named \"nope\""),
            (
                vec![
                    SlotSpec::parse("A:boot=A_boot,root=A_root").unwrap(),
                    SlotSpec::parse("B:boot=A_boot,root=B_root").unwrap(),
                ],
                "grub",
                "slot B boot and A boot are both \"A_boot\"",
            ),
            (vec![SlotSpec::parse("B:boot=A_boot,root=A_root").unwrap()], "grub", "the slots are named A"),
        ];
        for (slots, grub, expected) in cases {
            let error = resolve(&table, None, &slots, grub, &seed()).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        for (spec, expected) in [
            ("A", "no ':'"),
            ("A:boot=x", "no root member"),
            ("A:home=x,boot=y,root=z", "unknown role \"home\""),
            ("A:boot=x,boot=y,root=z", "given twice"),
        ] {
            let error = SlotSpec::parse(spec).unwrap_err().to_string();
            assert!(error.contains(expected), "{spec}: {error}");
        }
        let error = grub_cfg(
            &resolve(&table, None, &ab(""), "grub", &seed()).unwrap(),
            "no marker\n",
            Path::new("grub.cfg.in"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("grub.cfg.in: expected one line @ICOS_LAYOUT@, found 0"), "{error}");
    }
}
