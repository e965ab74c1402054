//! Runs `icos-agent` against a fake GuestOS system root: a mount table, a sysfs tree of the GPT
//! disk, partition device nodes as regular files full of junk, a grubenv made by `icos grubenv`,
//! and update images made by `icos package`.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use common::{icos, run};

const MIB: u64 = 1 << 20;
/// The disk's partitions: number, GPT name, size in 512-byte sectors (small versions of
/// ic-os/guestos/partitions.csv).
const PARTITIONS: [(u32, &str, u64); 9] = [
    (1, "esp", 2048),
    (2, "grub", 2048),
    (3, "config", 2048),
    (4, "A_boot", 4096),
    (5, "A_root", 8192),
    (6, "A_var", 6144),
    (7, "B_boot", 4096),
    (8, "B_root", 8192),
    (9, "B_var", 6144),
];
const DISK: &str = "sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda";

/// A command running the icos-agent binary under test.
fn icos_agent() -> Command {
    // Cargo sets this for integration tests; the Bazel rust_test sets it from the icos-agent binary.
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_icos-agent"));
    Command::new(fs::canonicalize(&binary).unwrap_or(binary))
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Bytes that are never zero, different for each partition, so that zeroed ranges show.
fn junk(size: u64, seed: u32) -> Vec<u8> {
    (0..size).map(|index| ((index as u32).wrapping_mul(131).wrapping_add(seed * 17) % 251 + 1) as u8).collect()
}

/// A GuestOS disk seen from inside the VM, with `/` mounted from A_root or B_root.
struct FakeSystem {
    dir: tempfile::TempDir,
}

impl FakeSystem {
    fn new(running: &str, grub_variables: &[&str]) -> FakeSystem {
        let fake = FakeSystem { dir: tempfile::tempdir().unwrap() };
        let root = fake.root();
        let disk = root.join(DISK);
        fs::create_dir_all(disk.join("queue")).unwrap();
        fs::write(disk.join("uevent"), "MAJOR=252\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        fs::write(disk.join("size"), "100000\n").unwrap();
        symlink("../../../virtio1", disk.join("device")).unwrap();
        fs::create_dir_all(root.join("sys/dev/block")).unwrap();
        fs::create_dir_all(root.join("dev")).unwrap();
        symlink(format!("../../../{DISK}"), root.join("sys/dev/block/252:0")).unwrap();
        for (number, name, sectors) in PARTITIONS {
            let partition = disk.join(format!("vda{number}"));
            fs::create_dir(&partition).unwrap();
            let uevent = format!(
                "MAJOR=252\nMINOR={number}\nDEVNAME=vda{number}\nDEVTYPE=partition\nPARTN={number}\nPARTNAME={name}\n"
            );
            fs::write(partition.join("uevent"), uevent).unwrap();
            fs::write(partition.join("size"), format!("{sectors}\n")).unwrap();
            symlink(format!("../../../{DISK}/vda{number}"), root.join(format!("sys/dev/block/252:{number}"))).unwrap();
            if number >= 4 {
                fs::write(root.join(format!("dev/vda{number}")), junk(sectors * 512, number)).unwrap();
            }
        }
        fs::create_dir_all(root.join("proc/self")).unwrap();
        fs::create_dir_all(root.join("opt/icos/share")).unwrap();
        fake.boot(running, "0.1.0-dev");
        fs::create_dir(fake.dir.path().join("grub")).unwrap();
        run(icos().args(["grubenv", "create", "--output"]).arg(fake.grubenv()).args(grub_variables));
        fake
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Where the test makes update images.
    fn update_dir(&self) -> PathBuf {
        self.dir.path().join("update")
    }

    fn grubenv(&self) -> PathBuf {
        self.dir.path().join("grub/grubenv")
    }

    /// What a boot into `slot` changes: the mount table and the running version.
    fn boot(&self, slot: &str, version: &str) {
        let number = if slot == "A" { 5 } else { 8 };
        let mountinfo = format!(
            "1 0 0:2 / / rw - rootfs rootfs rw\n\
             22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n\
             28 1 252:{number} / / ro,relatime shared:1 - ext4 /dev/vda{number} ro\n\
             30 28 252:{} / /var rw,relatime shared:2 - ext4 /dev/vda{} rw\n\
             31 28 252:2 / /grub rw,relatime shared:3 - vfat /dev/vda2 rw\n",
            number + 1,
            number + 1
        );
        fs::write(self.root().join("proc/self/mountinfo"), mountinfo).unwrap();
        fs::write(self.root().join("opt/icos/share/version.txt"), format!("{version}\n")).unwrap();
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

    fn device(&self, number: u32) -> Vec<u8> {
        fs::read(self.root().join(format!("dev/vda{number}"))).unwrap()
    }

    fn grub_variables(&self) -> Vec<String> {
        let output = run(icos().args(["grubenv", "list"]).arg(self.grubenv()));
        stdout(&output).lines().map(str::to_owned).collect()
    }

    fn set_grub_variables(&self, variables: &[&str]) {
        run(icos().args(["grubenv", "set"]).arg(self.grubenv()).args(variables));
    }

    /// The bytes of every device node and of grubenv.
    fn snapshot(&self) -> Vec<Vec<u8>> {
        let mut contents: Vec<Vec<u8>> = (4..=9).map(|number| self.device(number)).collect();
        contents.push(fs::read(self.grubenv()).unwrap());
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

/// Checks that partition `number` starts with `image` and keeps its old junk after it.
fn assert_written(fake: &FakeSystem, number: u32, image: &[u8]) {
    let device = fake.device(number);
    let sectors = PARTITIONS[number as usize - 1].2;
    assert_eq!(device.len() as u64, sectors * 512, "vda{number} changed its size");
    assert!(device[..image.len()] == image[..], "vda{number} does not hold the image");
    assert!(device[image.len()..] == junk(sectors * 512, number)[image.len()..], "vda{number} changed past the image");
}

fn assert_untouched(fake: &FakeSystem, number: u32) {
    assert!(fake.device(number) == junk(PARTITIONS[number as usize - 1].2 * 512, number), "vda{number} was written");
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
            "inactive_slot": "B",
            "next_boot": "A",
            "installed_upgrade": null,
        })
    );
}

#[test]
fn install_commit_and_confirm_walk_through_the_boot_cycle() {
    let fake = FakeSystem::new("A", &["boot_alternative=A", "boot_cycle=stable"]);
    let update = make_update(&fake.update_dir(), true);
    let output =
        fake.agent(&["upgrade-install", update.package.to_str().unwrap(), "--sha256", &sha256(&update.package)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout(&output).starts_with("upgrade 0.1.0-next installed in slot B"), "{}", stdout(&output));
    for member in ["boot.img", "root.img", "var.img"] {
        assert!(
            stderr.lines().any(|line| line.contains(&format!("wrote {member}:")) && line.ends_with("MB/s)")),
            "{stderr}"
        );
    }
    assert_written(&fake, 7, &update.boot);
    assert_written(&fake, 8, &update.root);
    assert_written(&fake, 9, &update.var);
    for number in 4..=6 {
        assert_untouched(&fake, number);
    }
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
    assert!(stdout(&output).starts_with("slot B (upgrade 0.1.0-next) boots next"), "{}", stdout(&output));
    assert_eq!(fake.grub_variables(), ["boot_alternative=B", "boot_cycle=first_boot"]);
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
    let output = fake.agent(&["confirm"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout(&output), "slot B confirmed: boot_cycle failsafe_check -> stable\n");
    assert_eq!(fake.grub_variables(), ["boot_alternative=B", "boot_cycle=stable"]);
    let grubenv = fs::read(fake.grubenv()).unwrap();
    let output = fake.agent(&["confirm"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "slot B is stable already: nothing to do\n");
    assert_eq!(fs::read(fake.grubenv()).unwrap(), grubenv);
}

#[test]
fn slot_b_installs_into_slot_a_and_an_update_without_var_img_keeps_var() {
    let fake = FakeSystem::new("B", &["boot_alternative=B", "boot_cycle=stable"]);
    let update = make_update(&fake.update_dir(), false);
    let output = fake.agent(&["upgrade-install", update.package.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_written(&fake, 4, &update.boot);
    assert_written(&fake, 5, &update.root);
    for number in [6, 7, 8, 9] {
        assert_untouched(&fake, number);
    }
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
    let output = fake.agent(&["upgrade-install", update.package.to_str().unwrap()]);
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

fn missing_root(dir: &Path) -> String {
    make_update(dir, true);
    package(dir, "broken.tar.zst", &[("boot.img", "boot"), ("VERSION.TXT", "version")]).display().to_string()
}

fn boot_too_large(dir: &Path) -> String {
    make_update(dir, true);
    write_image(&dir.join("boot"), 2 * MIB + 4096, 1, true);
    package(dir, "broken.tar.zst", &[("boot.img", "boot"), ("root.img", "root"), ("VERSION.TXT", "version")])
        .display()
        .to_string()
}

fn root_not_ext4(dir: &Path) -> String {
    make_update(dir, true);
    write_image(&dir.join("root"), MIB, 1, false);
    package(dir, "broken.tar.zst", &[("boot.img", "boot"), ("root.img", "root"), ("VERSION.TXT", "version")])
        .display()
        .to_string()
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
    const STABLE: &[&str] = &["boot_alternative=A", "boot_cycle=stable"];
    // A stale marker, which a refused install must keep.
    const MARKED: &[&str] =
        &["boot_alternative=A", "boot_cycle=stable", "icos_installed_slot=B", "icos_installed_version=old"];
    const FIRST_BOOT: &[&str] = &["boot_alternative=B", "boot_cycle=first_boot"];
    const INSTALL: &[&str] = &["upgrade-install", "IMAGE"];
    const WRONG_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    // (grubenv, the image, the arguments with IMAGE for its path, the error)
    let cases: [(&[&str], MakeImage, &[&str], &str); 17] = [
        (
            &["boot_alternative=A", "boot_cycle=failsafe_check"],
            good_update,
            INSTALL,
            "cannot install an upgrade while boot_cycle is failsafe_check: this first boot of an upgrade is not confirmed",
        ),
        (FIRST_BOOT, good_update, INSTALL, "the upgrade committed to slot B has not booted yet: reboot first"),
        (&["boot_alternative=A", "boot_cycle=install"], good_update, INSTALL, "while boot_cycle is install"),
        (MARKED, missing_root, INSTALL, "member root.img is missing"),
        (MARKED, boot_too_large, INSTALL, "boot.img is 2101248 bytes, larger than partition B_boot"),
        (MARKED, root_not_ext4, INSTALL, "root.img is not an ext4 image"),
        (MARKED, unexpected_member, INSTALL, "unexpected member \"disk.img\""),
        (MARKED, corrupt, INSTALL, "not a valid update image"),
        (MARKED, truncated, INSTALL, "not a valid update image"),
        (MARKED, absent, INSTALL, "absent.tar.zst"),
        (MARKED, good_update, &["upgrade-install", "IMAGE", "--sha256", WRONG_SHA256], "the SHA-256 is"),
        (MARKED, good_update, &["upgrade-install", "IMAGE", "--sha256", "xyz"], "\"xyz\" is not a SHA-256"),
        (
            &["boot_alternative=B", "boot_cycle=stable"],
            absent,
            &["status"],
            "boot_alternative=B with boot_cycle=stable does not fit the running system, slot A (A_root on vda5)",
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
        let fake = FakeSystem::new("A", variables);
        let image = make_image(&fake.update_dir());
        let args: Vec<&str> = args.iter().map(|arg| if *arg == "IMAGE" { image.as_str() } else { arg }).collect();
        let before = fake.snapshot();
        let output = fake.agent(&args);
        assert_error(&output, expected);
        assert!(fake.snapshot() == before, "{args:?}: the partitions or grubenv changed");
    }
}

#[test]
fn a_target_partition_that_cannot_be_opened_stops_the_install_before_any_write() {
    let marked = ["boot_alternative=A", "boot_cycle=stable", "icos_installed_slot=B", "icos_installed_version=old"];
    let fake = FakeSystem::new("A", &marked);
    let update = make_update(&fake.update_dir(), true);
    fs::remove_file(fake.root().join("dev/vda8")).unwrap();
    let grubenv = fs::read(fake.grubenv()).unwrap();
    let output = fake.agent(&["upgrade-install", update.package.to_str().unwrap()]);
    assert_error(&output, "dev/vda8: No such file or directory");
    for number in [4, 5, 6, 7, 9] {
        assert_untouched(&fake, number);
    }
    assert_eq!(fs::read(fake.grubenv()).unwrap(), grubenv);
}
