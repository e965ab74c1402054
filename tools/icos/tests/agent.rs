//! Runs `icos-agent` against fake system roots: a mount table, a sysfs tree of the GPT disk (and of
//! the device-mapper devices of an LVM volume group), device nodes as regular files full of junk,
//! the OS's layout.json made by `icos::layout::resolve`, a grubenv made by `icos grubenv`, and
//! update images made by `icos package`.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{symlink, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use common::{icos, run, serve};
use icos::layout::{resolve, Layout, SlotSpec};
use icos::lvm::parse_volumes_csv;
use icos::lvm::PartitionVolumeGroup;
use icos::partitions::parse_partitions_csv;

const MIB: u64 = 1 << 20;
/// The slots' targets: slot, role, size in 512-byte sectors (small versions of
/// ic-os/guestos/partitions.csv). On the GPT disk they are partitions 4 to 9 in this order, in the
/// volume group dm-0 to dm-5.
const TARGETS: [(&str, &str, u64); 6] = [
    ("A", "boot", 4096),
    ("A", "root", 8192),
    ("A", "var", 6144),
    ("B", "boot", 4096),
    ("B", "root", 8192),
    ("B", "var", 6144),
];
const DISK: &str = "sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda";
const VIRTUAL_BLOCK: &str = "sys/devices/virtual/block";
/// The partition of the volume group, and its size in sectors.
const LVM_PARTITION: (u32, &str, u64) = (3, "hostlvm", 40960);
/// A volume of the volume group in no slot, dm-6.
const CONFIG_VOLUME: u32 = 6;
const ALL_SLOTS: [&str; 2] = ["A:boot=A_boot,root=A_root,var=A_var", "B:boot=B_boot,root=B_root,var=B_var"];

/// A command running the icos-agent binary under test.
fn icos_agent() -> Command {
    // The Bazel rust_test names it. Cargo names only the binaries of the test's own package; `cargo
    // test` in tools/ tests every member, and so builds the agent's binaries beside icos for the
    // agent's own integration tests. A run of icos's tests alone uses whatever agent binary was
    // built last: `cargo build -p icos-agent` first.
    let binary = match option_env!("CARGO_BIN_EXE_icos-agent") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_BIN_EXE_icos")).with_file_name("icos-agent"),
    };
    assert!(
        binary.is_file(),
        "{}: no icos-agent binary; run `cargo test` in tools/ for every package, or `cargo build -p icos-agent`",
        binary.display()
    );
    Command::new(fs::canonicalize(&binary).unwrap_or(binary))
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Bytes that are never zero, different for each target, so that zeroed ranges show.
fn junk(size: u64, seed: u32) -> Vec<u8> {
    (0..size).map(|index| ((index as u32).wrapping_mul(131).wrapping_add(seed * 17) % 251 + 1) as u8).collect()
}

/// Where the slots are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// GPT partitions of vda, as GuestOS has them.
    Gpt,
    /// Logical volumes of volume group hostlvm in partition 3 of vda, as HostOS has them.
    Lvm,
}

/// The index in [`TARGETS`] of the target of `role` in `slot`.
fn target_index(slot: &str, role: &str) -> usize {
    TARGETS.iter().position(|&(s, r, _)| s == slot && r == role).unwrap()
}

/// The layout of `storage` with the slots `slots` (`icos layout --slot` syntax).
fn layout(storage: Storage, slots: &[&str]) -> Layout {
    let seed = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c".parse().unwrap();
    let slots: Vec<SlotSpec> = slots.iter().map(|slot| SlotSpec::parse(slot).unwrap()).collect();
    let mut csv = String::from("esp,2048,2048,U,\ngrub,4096,2048,L,\n");
    let mut start = 6144;
    match storage {
        Storage::Gpt => {
            csv.push_str(&format!("config,{start},2048,L,\n"));
            start += 2048;
            for (slot, role, sectors) in TARGETS {
                csv.push_str(&format!("{slot}_{role},{start},{sectors},L,\n"));
                start += sectors;
            }
            let table = parse_partitions_csv(Path::new("partitions.csv"), &csv).unwrap();
            resolve(&table, None, &slots, "grub", &seed).unwrap()
        }
        Storage::Lvm => {
            let (_, name, sectors) = LVM_PARTITION;
            csv.push_str(&format!("{name},{start},{sectors},lvm,\n"));
            let table = parse_partitions_csv(Path::new("partitions.csv"), &csv).unwrap();
            // 1 MiB extents: 2048 sectors.
            let mut volumes = String::new();
            let mut extent = 0;
            for (slot, role, sectors) in TARGETS {
                volumes.push_str(&format!("{slot}_{role},{extent},{},\n", sectors / 2048));
                extent += sectors / 2048;
            }
            volumes.push_str(&format!("config,{extent},1,\n"));
            let volumes = parse_volumes_csv(Path::new("volumes.csv"), &volumes, MIB).unwrap();
            let lvm = PartitionVolumeGroup {
                partition: name.into(),
                volumes,
                vg_name: "hostlvm".into(),
                extent_size: MIB,
                creation_host: "icos".into(),
                creation_time: 0,
            };
            resolve(&table, Some(&lvm), &slots, "grub", &seed).unwrap()
        }
    }
}

/// An OS disk seen from inside the VM, with `/` mounted from slot A's or B's root.
struct FakeSystem {
    dir: tempfile::TempDir,
    storage: Storage,
}

impl FakeSystem {
    /// A GuestOS with both slots on partitions.
    fn new(running: &str, grub_variables: &[&str]) -> FakeSystem {
        FakeSystem::with(Storage::Gpt, &ALL_SLOTS, running, grub_variables)
    }

    fn with(storage: Storage, slots: &[&str], running: &str, grub_variables: &[&str]) -> FakeSystem {
        let fake = FakeSystem { dir: tempfile::tempdir().unwrap(), storage };
        let root = fake.root();
        let disk = root.join(DISK);
        fs::create_dir_all(disk.join("queue")).unwrap();
        fs::write(disk.join("uevent"), "MAJOR=252\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        fs::write(disk.join("size"), "100000\n").unwrap();
        symlink("../../../virtio1", disk.join("device")).unwrap();
        fs::create_dir_all(root.join("sys/dev/block")).unwrap();
        fs::create_dir_all(root.join("sys/block")).unwrap();
        fs::create_dir_all(root.join("dev")).unwrap();
        symlink(format!("../../../{DISK}"), root.join("sys/dev/block/252:0")).unwrap();
        symlink(format!("../{}", DISK.trim_start_matches("sys/")), root.join("sys/block/vda")).unwrap();
        let mut partitions = vec![(1, "esp".to_owned(), 2048), (2, "grub".to_owned(), 2048)];
        match storage {
            Storage::Gpt => {
                partitions.push((3, "config".to_owned(), 2048));
                for (index, (slot, role, sectors)) in TARGETS.into_iter().enumerate() {
                    partitions.push((index as u32 + 4, format!("{slot}_{role}"), sectors));
                }
            }
            Storage::Lvm => {
                let (number, name, sectors) = LVM_PARTITION;
                partitions.push((number, name.to_owned(), sectors));
                let mut volumes: Vec<(u32, String, u64)> = TARGETS
                    .into_iter()
                    .enumerate()
                    .map(|(index, (slot, role, sectors))| (index as u32, format!("hostlvm-{slot}_{role}"), sectors))
                    .collect();
                volumes.push((CONFIG_VOLUME, "hostlvm-config".into(), 2048));
                for (number, name, sectors) in volumes {
                    fake.add_dm_device(number, &name, sectors);
                }
            }
        }
        for (number, name, sectors) in &partitions {
            let partition = disk.join(format!("vda{number}"));
            fs::create_dir(&partition).unwrap();
            let uevent = format!(
                "MAJOR=252\nMINOR={number}\nDEVNAME=vda{number}\nDEVTYPE=partition\nPARTN={number}\nPARTNAME={name}\n"
            );
            fs::write(partition.join("uevent"), uevent).unwrap();
            fs::write(partition.join("size"), format!("{sectors}\n")).unwrap();
            symlink(format!("../../../{DISK}/vda{number}"), root.join(format!("sys/dev/block/252:{number}"))).unwrap();
        }
        for (index, (slot, role, sectors)) in TARGETS.into_iter().enumerate() {
            fs::write(fake.device_path(slot, role), junk(sectors * 512, index as u32 + 4)).unwrap();
        }
        fs::create_dir_all(root.join("proc/self")).unwrap();
        fs::create_dir_all(root.join("opt/icos/share")).unwrap();
        fs::write(root.join("opt/icos/share/os-name"), "guestos\n").unwrap();
        fs::create_dir_all(root.join("etc/icos")).unwrap();
        fs::write(root.join("etc/icos/build.conf"), "BUILD_TYPE=dev\nMALICIOUS_BEHAVIOR=0\n").unwrap();
        fs::write(fake.layout_path(), layout(storage, slots).to_json()).unwrap();
        fake.boot(running, "0.1.0-dev");
        fs::create_dir(fake.dir.path().join("grub")).unwrap();
        for path in [fake.grubenv(), fake.grubenv_copy()] {
            run(icos().args(["grubenv", "create", "--output"]).arg(path).args(grub_variables));
        }
        fake
    }

    /// Device-mapper device dm-`number` (254:`number`) named `name`, a linear volume on vda3, as
    /// sysfs shows it.
    fn add_dm_device(&self, number: u32, name: &str, sectors: u64) {
        let root = self.root();
        let dir = root.join(VIRTUAL_BLOCK).join(format!("dm-{number}"));
        fs::create_dir_all(dir.join("dm")).unwrap();
        fs::create_dir_all(dir.join("slaves")).unwrap();
        fs::write(dir.join("dm/name"), format!("{name}\n")).unwrap();
        fs::write(dir.join("dm/uuid"), format!("LVM-fake{number}\n")).unwrap();
        fs::write(dir.join("uevent"), format!("MAJOR=254\nMINOR={number}\nDEVNAME=dm-{number}\nDEVTYPE=disk\n"))
            .unwrap();
        fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
        let vda3 = format!("../../../../{}/vda3", DISK.trim_start_matches("sys/devices/"));
        symlink(vda3, dir.join("slaves/vda3")).unwrap();
        symlink(format!("../devices/virtual/block/dm-{number}"), root.join(format!("sys/block/dm-{number}"))).unwrap();
        symlink(format!("../../devices/virtual/block/dm-{number}"), root.join(format!("sys/dev/block/254:{number}")))
            .unwrap();
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn layout_path(&self) -> PathBuf {
        self.root().join("opt/icos/share/layout.json")
    }

    /// Where the test makes update images.
    fn update_dir(&self) -> PathBuf {
        self.dir.path().join("update")
    }

    fn grubenv(&self) -> PathBuf {
        self.dir.path().join("grub/grubenv")
    }

    /// The second copy of the boot state, which GRUB and the agent write after grubenv.
    fn grubenv_copy(&self) -> PathBuf {
        self.dir.path().join("grub/grubenv.copy")
    }

    /// The kernel's name of the device of `role` in `slot`, and its device number.
    fn devname(&self, slot: &str, role: &str) -> (String, String) {
        let index = target_index(slot, role) as u32;
        match self.storage {
            Storage::Gpt => (format!("vda{}", index + 4), format!("252:{}", index + 4)),
            Storage::Lvm => (format!("dm-{index}"), format!("254:{index}")),
        }
    }

    fn device_path(&self, slot: &str, role: &str) -> PathBuf {
        self.root().join("dev").join(self.devname(slot, role).0)
    }

    /// What a boot into `slot` changes: the mount table and the running version.
    fn boot(&self, slot: &str, version: &str) {
        let (root, root_number) = self.devname(slot, "root");
        let (var, var_number) = self.devname(slot, "var");
        let mountinfo = format!(
            "1 0 0:2 / / rw - rootfs rootfs rw\n\
             22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n\
             28 1 {root_number} / / ro,relatime shared:1 - ext4 /dev/{root} ro\n\
             30 28 {var_number} / /var rw,relatime shared:2 - ext4 /dev/{var} rw\n\
             31 28 252:2 / /grub rw,relatime shared:3 - vfat /dev/vda2 rw\n"
        );
        self.mount_root(&mountinfo);
        fs::write(self.root().join("opt/icos/share/version.txt"), format!("{version}\n")).unwrap();
    }

    fn mount_root(&self, mountinfo: &str) {
        fs::write(self.root().join("proc/self/mountinfo"), mountinfo).unwrap();
    }

    fn agent(&self, args: &[&str]) -> Output {
        icos_agent()
            .arg("--system-root")
            .arg(self.root())
            .arg("--grubenv")
            .arg(self.grubenv())
            .args(args)
            .output()
            .expect("cannot start icos-agent")
    }

    fn device(&self, slot: &str, role: &str) -> Vec<u8> {
        fs::read(self.device_path(slot, role)).unwrap()
    }

    fn grub_variables(&self) -> Vec<String> {
        let output = run(icos().args(["grubenv", "list"]).arg(self.grubenv()));
        stdout(&output).lines().map(str::to_owned).collect()
    }

    /// What GRUB writes: both copies.
    fn set_grub_variables(&self, variables: &[&str]) {
        for path in [self.grubenv(), self.grubenv_copy()] {
            run(icos().args(["grubenv", "set"]).arg(path).args(variables));
        }
    }

    /// The bytes of every slot's device node and of both copies of grubenv.
    fn snapshot(&self) -> Vec<Vec<u8>> {
        let mut contents: Vec<Vec<u8>> = TARGETS.iter().map(|&(slot, role, _)| self.device(slot, role)).collect();
        contents.push(fs::read(self.grubenv()).unwrap());
        contents.push(fs::read(self.grubenv_copy()).unwrap());
        contents
    }
}

/// A sparse file of `size` bytes that looks like ext4 (unless `ext4` is false): the superblock magic
/// at byte 1080, data across a block boundary, holes, and data at the end. Returns its bytes.
fn write_image(path: &Path, size: u64, seed: u8, ext4: bool) -> Vec<u8> {
    let file = File::create(path).unwrap();
    file.set_len(size).unwrap();
    if ext4 {
        file.write_all_at(&[0x53, 0xEF], 1080).unwrap();
    }
    file.write_all_at(&[seed; 5000], 3 * 4096 + 100).unwrap();
    file.write_all_at(&[seed; 3], size - 3).unwrap();
    fs::read(path).unwrap()
}

/// The images of an update and the package holding them.
struct Update {
    package: PathBuf,
    boot: Vec<u8>,
    root: Vec<u8>,
    var: Vec<u8>,
}

/// Packages `members` (name, file in `dir`) with `icos package` into `dir/<output>`.
fn package(dir: &Path, output: &str, members: &[(&str, &str)]) -> PathBuf {
    let mut command = icos();
    command.current_dir(dir).args(["package", "--level", "3", "--threads", "1", "--output", output]);
    for (name, file) in members {
        command.arg("--member").arg(format!("{name}={file}"));
    }
    run(&mut command);
    dir.join(output)
}

/// An update with version `0.1.0-next`; `var` adds var.img.
fn make_update(dir: &Path, var: bool) -> Update {
    fs::create_dir_all(dir).unwrap();
    let boot = write_image(&dir.join("boot"), 2 * MIB, 0xB0, true);
    let root = write_image(&dir.join("root"), 3 * MIB + 3 * 4096, 0x70, true);
    let var_bytes = write_image(&dir.join("var"), MIB, 0x7A, true);
    fs::write(dir.join("version"), "0.1.0-next\n").unwrap();
    let mut members = vec![("boot.img", "boot"), ("root.img", "root")];
    if var {
        members.push(("var.img", "var"));
    }
    members.push(("VERSION.TXT", "version"));
    let package = package(dir, "update-img.tar.zst", &members);
    Update { package, boot, root, var: var_bytes }
}

fn sha256(path: &Path) -> String {
    format!("{:x}", Sha256::digest(fs::read(path).unwrap()))
}

/// Checks that the device of `role` in `slot` starts with `image` and keeps its old junk after it.
fn assert_written(fake: &FakeSystem, slot: &str, role: &str, image: &[u8]) {
    let index = target_index(slot, role);
    let device = fake.device(slot, role);
    let size = TARGETS[index].2 * 512;
    assert_eq!(device.len() as u64, size, "{slot}_{role} changed its size");
    assert!(device[..image.len()] == image[..], "{slot}_{role} does not hold the image");
    let junk = junk(size, index as u32 + 4);
    assert!(device[image.len()..] == junk[image.len()..], "{slot}_{role} changed past the image");
}

fn assert_untouched(fake: &FakeSystem, slot: &str, role: &str) {
    let index = target_index(slot, role);
    assert!(fake.device(slot, role) == junk(TARGETS[index].2 * 512, index as u32 + 4), "{slot}_{role} was written");
}

fn assert_slot_untouched(fake: &FakeSystem, slot: &str) {
    for role in ["boot", "root", "var"] {
        assert_untouched(fake, slot, role);
    }
}

/// Checks exit status 2 and a one-line error naming `expected`.
fn assert_error(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("icos-agent: error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    assert!(errors[0].contains(expected), "expected {expected:?} in: {stderr}");
}

#[test]
fn status_reports_the_running_slot_in_text_and_json() {
    let fake = FakeSystem::new("A", &["boot_alternative=A", "boot_cycle=stable"]);
    let output =
        run(icos_agent().arg("status").arg("--system-root").arg(fake.root()).arg("--grubenv").arg(fake.grubenv()));
    assert_eq!(stdout(&output), "slot A, boot_cycle stable, version 0.1.0-dev; slot B: no upgrade installed\n");
    let output = fake.agent(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "slot": "A",
            "boot_cycle": "stable",
            "version": "0.1.0-dev",
            "boot_state_damage": null,
            "inactive_slot": "B",
            "next_boot": "A",
            "installed_upgrade": null,
            "targets": {
                "A": {"boot": "A_boot", "root": "A_root", "var": "A_var"},
                "B": {"boot": "B_boot", "root": "B_root", "var": "B_var"},
            },
        })
    );
}

#[test]
fn install_commit_and_confirm_walk_through_the_boot_cycle_on_partitions_and_on_volumes() {
    for storage in [Storage::Gpt, Storage::Lvm] {
        walk_through_the_boot_cycle(storage);
    }
}

fn walk_through_the_boot_cycle(storage: Storage) {
    let fake = FakeSystem::with(storage, &ALL_SLOTS, "A", &["boot_alternative=A", "boot_cycle=stable"]);
    let update = make_update(&fake.update_dir(), true);
    let output = fake.agent(&[
        "upgrade-install",
        "--allow-unsigned",
        update.package.to_str().unwrap(),
        "--sha256",
        &sha256(&update.package),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout(&output).starts_with("upgrade 0.1.0-next installed in slot B"), "{}", stdout(&output));
    for member in ["boot.img", "root.img", "var.img"] {
        assert!(
            stderr.lines().any(|line| line.contains(&format!("wrote {member}:")) && line.ends_with("MB/s)")),
            "{stderr}"
        );
    }
    // Each member went to the target of its role, named in the progress report.
    for role in ["boot", "root", "var"] {
        let device = fake.device_path("B", role);
        let line = format!("to B_{role} ({})", device.display());
        assert!(
            stderr
                .lines()
                .any(|text| text.starts_with(&format!("icos-agent: writing {role}.img")) && text.ends_with(&line)),
            "{line}: {stderr}"
        );
    }
    assert_written(&fake, "B", "boot", &update.boot);
    assert_written(&fake, "B", "root", &update.root);
    assert_written(&fake, "B", "var", &update.var);
    assert_slot_untouched(&fake, "A");
    assert_eq!(
        fake.grub_variables(),
        ["boot_alternative=A", "boot_cycle=stable", "icos_installed_slot=B", "icos_installed_version=0.1.0-next"]
    );
    let status =
        run(icos_agent().args(["--system-root"]).arg(fake.root()).arg("--grubenv").arg(fake.grubenv()).arg("status"));
    assert_eq!(
        stdout(&status),
        "slot A, boot_cycle stable, version 0.1.0-dev; slot B: upgrade 0.1.0-next installed, not committed\n"
    );

    let output = fake.agent(&["upgrade-commit"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout(&output)
            .starts_with("slot B (upgrade 0.1.0-next) boots next, once, on trial: it must confirm itself within 600 s"),
        "{}",
        stdout(&output)
    );
    assert_eq!(fake.grub_variables(), ["boot_alternative=B", "boot_cycle=first_boot", "boot_trial_timeout=600"]);
    assert_eq!(
        stdout(&fake.agent(&["status"])),
        "slot A, boot_cycle first_boot, version 0.1.0-dev; slot B: committed, boots next\n"
    );

    // GRUB boots slot B once and marks the boot failsafe_check.
    fake.set_grub_variables(&["boot_cycle=failsafe_check"]);
    fake.boot("B", "0.1.0-next");
    assert_eq!(
        stdout(&fake.agent(&["status"])),
        "slot B, boot_cycle failsafe_check, version 0.1.0-next; slot A: no upgrade installed\n"
    );
    // A failing health check keeps the trial boot unconfirmed.
    let checks = fake.dir.path().join("health.d");
    fs::create_dir(&checks).unwrap();
    health_check(&checks, "10-ok", "exit 0");
    health_check(&checks, "20-replica", "echo 'replica: no answer on :8080'; exit 1");
    let before = fake.snapshot();
    assert_error(
        &fake.agent(&["confirm", "--health-checks", checks.to_str().unwrap()]),
        &format!(
            "slot B is not confirmed: health check {} failed (exit status: 1): replica: no answer on :8080",
            checks.join("20-replica").display()
        ),
    );
    assert!(fake.snapshot() == before, "an unhealthy slot changed grubenv");
    fs::remove_file(checks.join("20-replica")).unwrap();
    let output = fake.agent(&["confirm", "--health-checks", checks.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout(&output), "slot B confirmed: boot_cycle failsafe_check -> stable, 1 health check passed\n");
    assert_eq!(fake.grub_variables(), ["boot_alternative=B", "boot_cycle=stable", "boot_trial_timeout=600"]);
    let grubenv = fs::read(fake.grubenv()).unwrap();
    let output = fake.agent(&["confirm"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "slot B is stable already: nothing to confirm\n");
    assert_eq!(fs::read(fake.grubenv()).unwrap(), grubenv);

    // From slot B the next upgrade goes to slot A.
    let update = make_update(&fake.dir.path().join("update-2"), true);
    let output = fake.agent(&["upgrade-install", "--allow-unsigned", update.package.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).starts_with("upgrade 0.1.0-next installed in slot A"), "{}", stdout(&output));
    for (role, image) in [("boot", &update.boot), ("root", &update.root), ("var", &update.var)] {
        assert_written(&fake, "A", role, image);
        assert_written(&fake, "B", role, image);
    }
}

#[test]
fn slot_b_installs_into_slot_a_and_a_slot_without_var_keeps_its_var() {
    // The var partitions are in no slot: the update has no var.img and they stay.
    let slots = ["A:boot=A_boot,root=A_root", "B:boot=B_boot,root=B_root"];
    let fake = FakeSystem::with(Storage::Gpt, &slots, "B", &["boot_alternative=B", "boot_cycle=stable"]);
    let update = make_update(&fake.update_dir(), false);
    let output = fake.agent(&["upgrade-install", "--allow-unsigned", update.package.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_written(&fake, "A", "boot", &update.boot);
    assert_written(&fake, "A", "root", &update.root);
    assert_untouched(&fake, "A", "var");
    assert_slot_untouched(&fake, "B");
    assert_eq!(
        fake.grub_variables(),
        ["boot_alternative=B", "boot_cycle=stable", "icos_installed_slot=A", "icos_installed_version=0.1.0-next"]
    );
}

#[test]
fn an_install_replaces_an_uncommitted_one() {
    let stale = ["boot_alternative=A", "boot_cycle=stable", "icos_installed_slot=B", "icos_installed_version=old"];
    let fake = FakeSystem::new("A", &stale);
    let update = make_update(&fake.update_dir(), true);
    let output = fake.agent(&["upgrade-install", "--allow-unsigned", update.package.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        fake.grub_variables(),
        ["boot_alternative=A", "boot_cycle=stable", "icos_installed_slot=B", "icos_installed_version=0.1.0-next"]
    );
}

/// Makes an update image in the given directory, maybe a broken one; returns its path.
type MakeImage = fn(&Path) -> String;

fn good_update(dir: &Path) -> String {
    make_update(dir, true).package.display().to_string()
}

/// The members of a complete update made by [`make_update`].
const MEMBERS: [(&str, &str); 4] =
    [("boot.img", "boot"), ("root.img", "root"), ("var.img", "var"), ("VERSION.TXT", "version")];

fn missing_root(dir: &Path) -> String {
    make_update(dir, true);
    package(dir, "broken.tar.zst", &[("boot.img", "boot"), ("var.img", "var"), ("VERSION.TXT", "version")])
        .display()
        .to_string()
}

fn missing_var(dir: &Path) -> String {
    make_update(dir, false).package.display().to_string()
}

fn boot_too_large(dir: &Path) -> String {
    make_update(dir, true);
    write_image(&dir.join("boot"), 2 * MIB + 4096, 1, true);
    package(dir, "broken.tar.zst", &MEMBERS).display().to_string()
}

fn root_not_ext4(dir: &Path) -> String {
    make_update(dir, true);
    write_image(&dir.join("root"), MIB, 1, false);
    package(dir, "broken.tar.zst", &MEMBERS).display().to_string()
}

fn unexpected_member(dir: &Path) -> String {
    make_update(dir, true);
    let members = [("boot.img", "boot"), ("root.img", "root"), ("disk.img", "var"), ("VERSION.TXT", "version")];
    package(dir, "broken.tar.zst", &members).display().to_string()
}

fn corrupt(dir: &Path) -> String {
    let package = make_update(dir, true).package;
    let mut bytes = fs::read(&package).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    fs::write(&package, bytes).unwrap();
    package.display().to_string()
}

fn truncated(dir: &Path) -> String {
    let package = make_update(dir, true).package;
    let bytes = fs::read(&package).unwrap();
    fs::write(&package, &bytes[..bytes.len() - 20]).unwrap();
    package.display().to_string()
}

fn absent(dir: &Path) -> String {
    dir.join("absent.tar.zst").display().to_string()
}

#[test]
fn refusals_leave_the_partitions_and_grubenv_untouched() {
    refusals_leave_the_targets_and_grubenv_untouched(Storage::Gpt, "partition", "A_root on vda5");
}

#[test]
fn refusals_leave_the_volumes_and_grubenv_untouched() {
    refusals_leave_the_targets_and_grubenv_untouched(Storage::Lvm, "volume", "hostlvm-A_root on dm-1");
}

/// Runs the refusal cases on `storage`: in the expected errors, KIND is `kind` (of target) and
/// ROOT is `root` (the root's name and device).
fn refusals_leave_the_targets_and_grubenv_untouched(storage: Storage, kind: &str, root: &str) {
    const STABLE: &[&str] = &["boot_alternative=A", "boot_cycle=stable"];
    // A stale marker, which a refused install must keep.
    const MARKED: &[&str] =
        &["boot_alternative=A", "boot_cycle=stable", "icos_installed_slot=B", "icos_installed_version=old"];
    const FIRST_BOOT: &[&str] = &["boot_alternative=B", "boot_cycle=first_boot"];
    const INSTALL: &[&str] = &["upgrade-install", "--allow-unsigned", "IMAGE"];
    const WRONG_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    // (grubenv, the image, the arguments with IMAGE for its path, the error)
    let cases: [(&[&str], MakeImage, &[&str], &str); 18] = [
        (
            &["boot_alternative=A", "boot_cycle=failsafe_check"],
            good_update,
            INSTALL,
            "cannot install an upgrade while boot_cycle is failsafe_check: this first boot of an upgrade is not confirmed",
        ),
        (FIRST_BOOT, good_update, INSTALL, "the upgrade committed to slot B has not booted yet: reboot first"),
        (&["boot_alternative=A", "boot_cycle=install"], good_update, INSTALL, "while boot_cycle is install"),
        (MARKED, missing_root, INSTALL, "member root.img is missing"),
        (
            MARKED,
            missing_var,
            INSTALL,
            "the update does not fit slot B: member var.img is missing: slot B has a var target (B_var)",
        ),
        (MARKED, boot_too_large, INSTALL, "boot.img is 2101248 bytes, larger than KIND B_boot"),
        (MARKED, root_not_ext4, INSTALL, "root.img is not an ext4 image"),
        (MARKED, unexpected_member, INSTALL, "unexpected member \"disk.img\""),
        (MARKED, corrupt, INSTALL, "not a valid update image"),
        (MARKED, truncated, INSTALL, "not a valid update image"),
        (MARKED, absent, INSTALL, "absent.tar.zst"),
        (MARKED, good_update, &["upgrade-install", "--allow-unsigned", "IMAGE", "--sha256", WRONG_SHA256], "the SHA-256 is"),
        (MARKED, good_update, &["upgrade-install", "--allow-unsigned", "IMAGE", "--sha256", "xyz"], "\"xyz\" is not a SHA-256"),
        (
            &["boot_alternative=B", "boot_cycle=stable"],
            absent,
            &["status"],
            "boot_alternative=B with boot_cycle=stable does not fit the running system, slot A (ROOT)",
        ),
        (STABLE, absent, &["upgrade-commit"], "no upgrade is installed in slot B: run upgrade-install first"),
        (
            &["boot_alternative=B", "boot_cycle=first_boot", "icos_installed_slot=B", "icos_installed_version=x"],
            absent,
            &["upgrade-commit"],
            "cannot commit an upgrade while boot_cycle is first_boot",
        ),
        (FIRST_BOOT, absent, &["confirm"], "cannot confirm while boot_cycle is first_boot"),
        (&["boot_alternative=A"], absent, &["status"], "boot_cycle is not set"),
    ];
    for (variables, make_image, args, expected) in cases {
        let fake = FakeSystem::with(storage, &ALL_SLOTS, "A", variables);
        let image = make_image(&fake.update_dir());
        let args: Vec<&str> = args.iter().map(|arg| if *arg == "IMAGE" { image.as_str() } else { arg }).collect();
        let before = fake.snapshot();
        let output = fake.agent(&args);
        assert_error(&output, &expected.replace("KIND", kind).replace("ROOT", root));
        assert!(fake.snapshot() == before, "{args:?}: the targets or grubenv changed");
    }
}

#[test]
fn a_target_that_cannot_be_opened_stops_the_install_before_any_write() {
    let marked = ["boot_alternative=A", "boot_cycle=stable", "icos_installed_slot=B", "icos_installed_version=old"];
    for storage in [Storage::Gpt, Storage::Lvm] {
        let fake = FakeSystem::with(storage, &ALL_SLOTS, "A", &marked);
        let update = make_update(&fake.update_dir(), true);
        let device = fake.device_path("B", "root");
        fs::remove_file(&device).unwrap();
        let grubenv = fs::read(fake.grubenv()).unwrap();
        let output = fake.agent(&["upgrade-install", "--allow-unsigned", update.package.to_str().unwrap()]);
        assert_error(&output, &format!("{}: No such file or directory", device.display()));
        assert_slot_untouched(&fake, "A");
        assert_untouched(&fake, "B", "boot");
        assert_untouched(&fake, "B", "var");
        assert_eq!(fs::read(fake.grubenv()).unwrap(), grubenv);
    }
}

#[test]
fn a_root_on_a_volume_of_no_slot_is_named_with_the_slots_roots() {
    let fake = FakeSystem::with(Storage::Lvm, &ALL_SLOTS, "A", &["boot_alternative=A", "boot_cycle=stable"]);
    fake.mount_root(&format!("28 1 254:{CONFIG_VOLUME} / / rw - ext4 /dev/mapper/hostlvm-config rw\n"));
    assert_error(
        &fake.agent(&["status"]),
        "the root file system is on dm-6 (device-mapper device \"hostlvm-config\"), which is no slot's root: \
         the layout's slot roots are A: device-mapper device \"hostlvm-A_root\", \
         B: device-mapper device \"hostlvm-B_root\"",
    );
}

#[test]
fn a_missing_volume_of_the_inactive_slot_stops_the_install_before_the_image_is_read() {
    let fake = FakeSystem::with(Storage::Lvm, &ALL_SLOTS, "A", &["boot_alternative=A", "boot_cycle=stable"]);
    // The volume is not active: no device-mapper device of that name.
    let (devname, _) = fake.devname("B", "root");
    fs::remove_file(fake.root().join("sys/block").join(devname)).unwrap();
    let before = fake.snapshot();
    // The image is not even there: the targets are found first.
    let output = fake.agent(&["upgrade-install", "--allow-unsigned", "/nonexistent/update-img.tar.zst"]);
    assert_error(&output, "no device-mapper device is named hostlvm-B_root");
    assert_error(&output, "is logical volume hostlvm-B_root of volume group hostlvm active?");
    assert!(fake.snapshot() == before);
}

#[test]
fn the_layout_file_is_read_from_the_system_root_or_from_layout() {
    let fake = FakeSystem::new("A", &["boot_alternative=A", "boot_cycle=stable"]);
    let moved = fake.dir.path().join("elsewhere.json");
    fs::rename(fake.layout_path(), &moved).unwrap();
    assert_error(
        &fake.agent(&["status"]),
        &format!("OS layout: cannot read {}: No such file or directory", fake.layout_path().display()),
    );
    let output = fake.agent(&["status", "--layout", moved.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).starts_with("slot A, boot_cycle stable"), "{}", stdout(&output));

    fs::write(&moved, "{\"version\": 1}").unwrap();
    let error = format!("OS layout: {}: missing field", moved.display());
    assert_error(&fake.agent(&["--layout", moved.to_str().unwrap(), "status"]), &error);

    // Slot names are those grubenv knows.
    let mut json: serde_json::Value = serde_json::from_str(&layout(Storage::Gpt, &ALL_SLOTS).to_json()).unwrap();
    json["slots"][1]["name"] = "C".into();
    fs::write(&moved, json.to_string()).unwrap();
    let error = format!("{}: the slots are [\"A\", \"C\"]: the agent knows slot A, or slots A and B", moved.display());
    assert_error(&fake.agent(&["--layout", moved.to_str().unwrap(), "status"]), &error);
}

#[test]
fn an_os_with_one_slot_reports_its_state_but_installs_nothing() {
    let fake = FakeSystem::with(Storage::Gpt, &[ALL_SLOTS[0]], "A", &["boot_alternative=A", "boot_cycle=stable"]);
    let output = fake.agent(&["status"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout(&output), "slot A, boot_cycle stable, version 0.1.0-dev; the only slot: no upgrades in place\n");
    let json: serde_json::Value = serde_json::from_slice(&fake.agent(&["status", "--json"]).stdout).unwrap();
    assert!(json["inactive_slot"].is_null(), "{json}");
    assert_eq!(json["targets"], serde_json::json!({"A": {"boot": "A_boot", "root": "A_root", "var": "A_var"}}));

    let update = make_update(&fake.update_dir(), true);
    let before = fake.snapshot();
    for args in [&["upgrade-install", "--allow-unsigned", update.package.to_str().unwrap()][..], &["upgrade-commit"]] {
        assert_error(&fake.agent(args), "this OS has one slot: it cannot be upgraded in place");
    }
    assert!(fake.snapshot() == before);
    let output = fake.agent(&["confirm"]);
    assert_eq!(stdout(&output), "slot A is stable already: nothing to confirm\n");
}

#[test]
fn a_damaged_copy_of_the_boot_state_is_reported_read_from_the_other_and_repaired() {
    let fake = FakeSystem::new("B", &["boot_alternative=B", "boot_cycle=stable"]);
    let intact = fs::read(fake.grubenv()).unwrap();
    assert_eq!(stdout(&fake.agent(&["repair"])), "both copies of the boot state are intact: nothing to repair\n");

    // grubenv torn: the state comes from the copy, and status says so.
    let mut torn = intact.clone();
    torn[..16].copy_from_slice(b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    fs::write(fake.grubenv(), &torn).unwrap();
    let status = stdout(&fake.agent(&["status"]));
    assert!(
        status.starts_with("slot B, boot_cycle stable, version 0.1.0-dev; slot A: no upgrade installed; boot state: "),
        "{status}"
    );
    assert!(status.contains("grubenv is damaged (not a GRUB environment block: the signature line is missing): the boot state was read from"), "{status}");
    let json: serde_json::Value = serde_json::from_slice(&fake.agent(&["status", "--json"]).stdout).unwrap();
    assert!(json["boot_state_damage"].as_str().unwrap().contains("icos-agent repair restores it"), "{json}");
    let output = fake.agent(&["repair"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).starts_with("boot state restored: "), "{}", stdout(&output));
    assert!(stdout(&output).ends_with(" say slot B, boot_cycle stable\n"), "{}", stdout(&output));
    assert_eq!(fs::read(fake.grubenv()).unwrap(), intact);
    assert_eq!(fs::read(fake.grubenv_copy()).unwrap(), intact);

    // The copy missing: GRUB would have nothing to fall back on.
    fs::remove_file(fake.grubenv_copy()).unwrap();
    let status = stdout(&fake.agent(&["status"]));
    assert!(status.contains("grubenv.copy is damaged (it is missing): GRUB has no copy to fall back on"), "{status}");
    assert!(fake.agent(&["repair"]).status.success());
    assert_eq!(fs::read(fake.grubenv_copy()).unwrap(), intact);

    // Both lost: every command but repair says so; repair writes the running slot anew.
    fs::write(fake.grubenv(), b"").unwrap();
    fs::write(fake.grubenv_copy(), &torn).unwrap();
    assert_error(&fake.agent(&["status"]), "the boot state is lost: ");
    let output = fake.agent(&["repair"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).ends_with(" say slot B (the running slot), boot_cycle stable\n"), "{}", stdout(&output));
    assert_eq!(fake.grub_variables(), ["boot_alternative=B", "boot_cycle=stable"]);
    assert_eq!(fs::read(fake.grubenv()).unwrap(), fs::read(fake.grubenv_copy()).unwrap());
}

#[test]
fn the_agent_writes_both_copies() {
    let fake = FakeSystem::new("A", &["boot_alternative=A", "boot_cycle=install"]);
    let output = fake.agent(&["confirm"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(fake.grub_variables(), ["boot_alternative=A", "boot_cycle=stable"]);
    assert_eq!(fs::read(fake.grubenv()).unwrap(), fs::read(fake.grubenv_copy()).unwrap());
}

fn health_check(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn an_older_version_is_refused_before_anything_is_written_unless_a_downgrade_is_asked_for() {
    let fake = FakeSystem::new("A", &["boot_alternative=A", "boot_cycle=stable"]);
    let update = make_update(&fake.update_dir(), true);
    let image = update.package.to_str().unwrap();
    fake.boot("A", "0.2.0");
    let before = fake.snapshot();
    assert_error(
        &fake.agent(&["upgrade-install", "--allow-unsigned", image]),
        &format!(
            "{image}: version 0.1.0-next is older than the running 0.2.0: refused (anti-rollback); --allow-downgrade installs it anyway"
        ),
    );
    assert!(fake.snapshot() == before, "a refused downgrade wrote something");
    fake.boot("A", "nightly");
    assert_error(
        &fake.agent(&["upgrade-install", "--allow-unsigned", image]),
        "the running version \"nightly\" is not a semantic version",
    );
    assert!(fake.snapshot() == before);
    let output = fake.agent(&["upgrade-install", "--allow-unsigned", "--allow-downgrade", image]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_written(&fake, "B", "root", &update.root);
}

#[test]
fn commits_take_a_trial_deadline_within_its_range() {
    let variables = ["boot_alternative=A", "boot_cycle=stable", "icos_installed_slot=B", "icos_installed_version=x"];
    let fake = FakeSystem::new("A", &variables);
    let before = fake.snapshot();
    assert_error(&fake.agent(&["upgrade-commit", "--trial-timeout", "10"]), "the deadline 10 s is outside 30..=3600 s");
    assert!(fake.snapshot() == before);
    let output = fake.agent(&["upgrade-commit", "--trial-timeout", "120"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(fake.grub_variables(), ["boot_alternative=B", "boot_cycle=first_boot", "boot_trial_timeout=120"]);
}

#[test]
fn a_trial_boot_arms_the_lowest_watchdog_and_other_boots_none() {
    let fake = FakeSystem::new("B", &["boot_alternative=B", "boot_cycle=failsafe_check"]);
    let cmdline = fake.root().join("proc/cmdline");
    fs::write(&cmdline, "root=/dev/mapper/vroot ro panic=10 console=ttyS0,115200\n").unwrap();
    let output = fake.agent(&["trial-arm", "--wait", "0"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout(&output), "icos: not a trial boot: no watchdog started\n");

    // A file stands in for the watchdog: the agent finds it through sysfs and fails on the ioctl
    // that sets the timeout, which a real watchdog takes (the boot tests').
    fs::write(&cmdline, "root=/dev/mapper/vroot ro panic=10 console=ttyS0,115200 icos.boot_trial=120\n").unwrap();
    for (name, identity) in [("watchdog1", "Software Watchdog"), ("watchdog0", "i6300ESB timer")] {
        let class = fake.root().join("sys/class/watchdog").join(name);
        fs::create_dir_all(&class).unwrap();
        fs::write(class.join("identity"), format!("{identity}\n")).unwrap();
        fs::write(fake.root().join("dev").join(name), b"").unwrap();
    }
    let device = fake.root().join("dev/watchdog0");
    assert_error(
        &fake.agent(&["trial-arm", "--wait", "0"]),
        &format!("{}: cannot set the watchdog's timeout to 120 s: Inappropriate ioctl for device", device.display()),
    );
    assert!(!fake.root().join("run/icos/trial-watchdog").exists());

    // What a successful arm records, confirm stops with the magic close.
    fs::create_dir_all(fake.root().join("run/icos")).unwrap();
    fs::write(fake.root().join("run/icos/trial-watchdog"), device.to_str().unwrap()).unwrap();
    let output = fake.agent(&["confirm"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        stdout(&output),
        format!(
            "slot B confirmed: boot_cycle failsafe_check -> stable, 0 health checks passed; the trial's watchdog {} is stopped\n",
            device.display()
        )
    );
    assert_eq!(fs::read(&device).unwrap(), b"V");
}

/// A GuestOS release bundle of `update` (and another file, which the agent does not read) signed
/// with the key made from `seed`.
fn release_bundle(fake: &FakeSystem, update: &Update, seed: u8) -> PathBuf {
    os_release_bundle(fake, update, seed, "guestos")
}

/// A release bundle of `update` for `os`.
fn os_release_bundle(fake: &FakeSystem, update: &Update, seed: u8, os: &str) -> PathBuf {
    let other = fake.dir.path().join("disk-img.tar.zst");
    fs::write(&other, b"a disk image").unwrap();
    let inputs = icos::release::bundle_inputs(&[other, update.package.clone()]).unwrap();
    let bundle = fake.dir.path().join(format!("{os}-release-{seed}.bundle.tar"));
    let key = icos::release::KeyFile::new("key.pem".into(), ed25519_dalek::SigningKey::from_bytes(&[seed; 32]));
    icos::release::package(os, "dev", "0.1.0-next", &inputs, &key, &bundle).unwrap();
    bundle
}

/// Makes the image trust the release key made from `seed`.
fn trust(fake: &FakeSystem, seed: u8) {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
    let dir = fake.root().join("etc/icos/release-keys");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("key-{seed}.pem")), key.to_public_key_pem(LineEnding::LF).unwrap()).unwrap();
}

#[test]
fn only_releases_signed_with_a_trusted_key_install_and_bare_images_only_on_dev_images() {
    let fake = FakeSystem::new("A", &["boot_alternative=A", "boot_cycle=stable"]);
    let update = make_update(&fake.update_dir(), true);
    let bundle = release_bundle(&fake, &update, 1);
    let bundle_arg = bundle.to_str().unwrap();
    let before = fake.snapshot();
    assert_error(&fake.agent(&["upgrade-install", bundle_arg]), "etc/icos/release-keys holds no release key (*.pem)");
    trust(&fake, 2);
    assert_error(&fake.agent(&["upgrade-install", bundle_arg]), "the manifest's signature does not verify with");
    // A bare image without --allow-unsigned: refused with the reason.
    assert_error(
        &fake.agent(&["upgrade-install", update.package.to_str().unwrap()]),
        "is an update image, not a signed release bundle: this image installs only releases signed with a key of",
    );
    assert!(fake.snapshot() == before, "a refused install wrote something");

    // A bundle whose update image has one byte changed: its SHA-256 is not the signed one.
    trust(&fake, 1);
    let mut bytes = fs::read(&bundle).unwrap();
    let last = bytes.len() - 1024 - 1;
    let position = bytes[..last].iter().rposition(|&byte| byte != 0).unwrap();
    bytes[position] ^= 1;
    let tampered = fake.dir.path().join("tampered.bundle.tar");
    fs::write(&tampered, &bytes).unwrap();
    let output = fake.agent(&["upgrade-install", tampered.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(fake.snapshot() == before, "a tampered release wrote something");
    // A release of another OS, signed with the same key: refused, by file and by URL.
    let hostos = os_release_bundle(&fake, &update, 1, "hostos");
    let hostos_arg = hostos.to_str().unwrap();
    assert_error(
        &fake.agent(&["upgrade-install", "--allow-downgrade", hostos_arg]),
        &format!("{hostos_arg} is a release of hostos, and this is guestos: refused"),
    );
    let hostos_bytes = fs::read(&hostos).unwrap();
    let (url, _) = serve(hostos_bytes.clone(), hostos_bytes.len());
    assert_error(
        &fake.agent(&["upgrade-install", &url]),
        &format!("{url} is a release of hostos, and this is guestos: refused"),
    );
    assert!(fake.snapshot() == before, "a release of another OS wrote something");

    let output = fake.agent(&["upgrade-install", bundle_arg]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).starts_with("upgrade 0.1.0-next installed in slot B"), "{}", stdout(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("verified {bundle_arg}:update-img.tar.zst")), "{stderr}");
    assert_written(&fake, "B", "root", &update.root);

    // The same release unpacked (icos release fetch, verify --unpack) installs too.
    let unpacked = fake.dir.path().join("unpacked");
    let keys = [icos::release::read_public_key(&fake.root().join("etc/icos/release-keys/key-1.pem")).unwrap()];
    icos::release::verify(&bundle, &keys, Some(&unpacked)).unwrap();
    let output = fake.agent(&["upgrade-install", unpacked.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // A prod image takes no bare image, even when asked.
    fs::write(fake.root().join("etc/icos/build.conf"), "BUILD_TYPE=prod\n").unwrap();
    assert_error(
        &fake.agent(&["upgrade-install", "--allow-unsigned", update.package.to_str().unwrap()]),
        "this is a prod image, which installs only signed releases: --allow-unsigned is for dev images",
    );
}

/// The grubenv variables of the install marker.
fn marker(fake: &FakeSystem) -> Vec<String> {
    fake.grub_variables().into_iter().filter(|variable| variable.starts_with("icos_installed_")).collect()
}

#[test]
fn a_release_at_a_url_installs_as_it_downloads_and_only_a_whole_signed_newer_one_is_marked_installed() {
    let fake = FakeSystem::new("A", &["boot_alternative=A", "boot_cycle=stable"]);
    let update = make_update(&fake.update_dir(), true);
    let bundle = fs::read(release_bundle(&fake, &update, 1)).unwrap();
    trust(&fake, 2);
    let before = fake.snapshot();

    // Signed with a key the image does not trust: refused before anything is written.
    let (url, _) = serve(bundle.clone(), bundle.len());
    assert_error(&fake.agent(&["upgrade-install", &url]), "the manifest's signature does not verify with");
    assert!(fake.snapshot() == before, "a release signed with an unknown key wrote something");

    // Older than the running version: refused from the signed manifest, before anything is written.
    trust(&fake, 1);
    fake.boot("A", "0.2.0");
    let before = fake.snapshot();
    let (url, _) = serve(bundle.clone(), bundle.len());
    assert_error(
        &fake.agent(&["upgrade-install", &url]),
        &format!("{url}: version 0.1.0-next is older than the running 0.2.0: refused (anti-rollback)"),
    );
    assert!(fake.snapshot() == before, "a refused downgrade wrote something");
    fake.boot("A", "0.1.0-dev");

    // The transfer breaks off within the update image, or one byte of the update image differs from
    // what was signed: the slot is written in part, but not marked installed, so nothing commits it.
    let mut tampered = bundle.clone();
    let last = tampered.len() - 1024 - 1;
    // The last byte of the update image, the bundle's last file (its zstd frame's checksum).
    let position = tampered[..last].iter().rposition(|&byte| byte != 0).unwrap();
    tampered[position] ^= 1;
    for (bytes, cut, expected) in [
        (bundle.clone(), position, "response body closed before all bytes were read"),
        (tampered, bundle.len(), "update-img.tar.zst"),
    ] {
        let (url, _) = serve(bytes, cut);
        let output = fake.agent(&["upgrade-install", &url]);
        assert_error(&output, expected);
        assert!(marker(&fake).is_empty(), "a failed install left the marker: {:?}", marker(&fake));
        assert_error(&fake.agent(&["upgrade-commit"]), "no upgrade is installed in slot B: run upgrade-install first");
    }

    let (url, requests) = serve(bundle.clone(), bundle.len());
    let output = fake.agent(&["upgrade-install", &url]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).starts_with("upgrade 0.1.0-next installed in slot B"), "{}", stdout(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("verified {url}:update-img.tar.zst")), "{stderr}");
    // One request, read once: no local copy, no second pass.
    assert_eq!(*requests.lock().unwrap(), ["-"]);
    assert_written(&fake, "B", "boot", &update.boot);
    assert_written(&fake, "B", "root", &update.root);
    assert_written(&fake, "B", "var", &update.var);
    assert_eq!(marker(&fake), ["icos_installed_slot=B", "icos_installed_version=0.1.0-next"]);
    assert_slot_untouched(&fake, "A");

    // --allow-unsigned is for local files.
    assert_error(
        &fake.agent(&["upgrade-install", "--allow-unsigned", &url]),
        "--allow-unsigned installs a local file only",
    );

    // The whole upgrade in one command: installed again (it replaces the uncommitted one) and
    // committed; --reboot goes only with --commit.
    let output = fake.agent(&["upgrade-install", "--reboot", &url]);
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    let (url, _) = serve(bundle.clone(), bundle.len());
    let output = fake.agent(&["upgrade-install", "--commit", "--trial-timeout", "120", &url]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout(&output).starts_with(
            "upgrade 0.1.0-next installed in slot B and committed: slot B (upgrade 0.1.0-next) boots next, once, \
             on trial: it must confirm itself within 120 s"
        ),
        "{}",
        stdout(&output)
    );
    let variables = fake.grub_variables();
    for expected in ["boot_alternative=B", "boot_cycle=first_boot", "boot_trial_timeout=120"] {
        assert!(variables.contains(&expected.to_owned()), "{variables:?}");
    }
    assert!(marker(&fake).is_empty(), "{:?}", marker(&fake));
}

/// `icos-agent serve` on a free port of 127.0.0.1, killed when dropped.
struct Server {
    child: std::process::Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakeSystem {
    fn serve(&self) -> Server {
        use std::io::{BufRead, BufReader};
        let mut child = icos_agent()
            .arg("--system-root")
            .arg(self.root())
            .arg("--grubenv")
            .arg(self.grubenv())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cannot start icos-agent serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let address = line.trim().strip_prefix("icos-agent: serving upgrades on ").unwrap_or_else(|| panic!("{line}"));
        // The server logs each request on stdout: read it to the end.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Server { child, url: format!("http://{address}") }
    }
}

/// A request to the server: its status and body.
fn request(method: &str, url: &str, body: Option<&[u8]>) -> (u16, String) {
    let request = ureq::request(method, url);
    let response = match body {
        Some(bytes) => request.send_bytes(bytes),
        None => request.call(),
    };
    match response {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap()),
        Err(error) => panic!("{method} {url}: {error}"),
    }
}

#[test]
fn the_upgrade_channel_installs_and_commits_only_signed_bundles_and_answers_the_status() {
    let fake = FakeSystem::new("A", &["boot_alternative=A", "boot_cycle=stable"]);
    let update = make_update(&fake.update_dir(), true);
    let bundle = fs::read(release_bundle(&fake, &update, 1)).unwrap();
    let unknown_key = fs::read(release_bundle(&fake, &update, 3)).unwrap();
    trust(&fake, 1);
    fake.boot("A", "0.1.0-dev");
    let server = fake.serve();
    let upgrade = format!("{}/upgrade", server.url);

    let (status, body) = request("GET", &format!("{}/status", server.url), None);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((json["slot"].as_str(), json["boot_cycle"].as_str()), (Some("A"), Some("stable")), "{body}");

    let before = fake.snapshot();
    for (body, expected_status, expected) in [
        (fs::read(&update.package).unwrap(), 422, "is an update image, not a signed release bundle"),
        (unknown_key, 422, "the manifest's signature does not verify with"),
    ] {
        let (status, text) = request("PUT", &upgrade, Some(&body));
        assert_eq!(status, expected_status, "{text}");
        assert!(text.contains(expected), "{text}");
    }
    assert!(fake.snapshot() == before, "a refused bundle wrote something");
    assert_eq!(request("GET", &format!("{}/other", server.url), None).0, 404);
    assert_eq!(request("DELETE", &upgrade, None).0, 405);

    let (status, text) = request("PUT", &upgrade, Some(&bundle));
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("upgrade 0.1.0-next installed in slot B"), "{text}");
    assert!(text.contains("slot B (upgrade 0.1.0-next) boots next, once, on trial"), "{text}");
    assert_written(&fake, "B", "root", &update.root);
    let variables = fake.grub_variables();
    assert!(variables.contains(&"boot_alternative=B".to_owned()), "{variables:?}");
    assert!(variables.contains(&"boot_cycle=first_boot".to_owned()), "{variables:?}");

    // Committed, the machine must boot the upgrade before it takes another.
    let (status, text) = request("POST", &upgrade, Some(&bundle));
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("cannot install an upgrade while boot_cycle is first_boot"), "{text}");
}
