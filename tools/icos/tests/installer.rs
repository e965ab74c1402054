//! The SetupOS installer (`icos_agent::install`) on a fake machine: a sysfs tree, a SetupOS stick
//! and a blank target disk that is a sparse file, with a HostOS image whose disk and layout
//! `icos::gpt_disk` and `icos::layout` make.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use icos::gpt_disk::{build_disk, DiskOptions};
use icos::install::system::{Requirements, SystemPaths};
use icos::install::{
    install, plan, InstallError, Plan, Sources, CONFIG_INI, CONFIG_LABEL, CONFIG_VOLUME, DATA_SUMS, GUESTOS_VOLUME,
    GUEST_IMAGE, HOST_IMAGE, HOST_LAYOUT,
};
use icos::layout::{resolve, Layout, SlotSpec};
use icos::lvm::{parse_volumes_csv, PartitionVolumeGroup};
use icos::package::{package, CompressionOptions, Member};
use icos::partitions::parse_partitions_csv;
use icos::sha256sums::write_sha256sums;

/// A machine with a SetupOS stick (vda, holding the data directory) and a blank 128 MiB vdb,
/// whose device node is a sparse file.
struct Machine {
    dir: tempfile::TempDir,
    paths: SystemPaths,
    sources: Sources,
}

const MIB: u64 = 1 << 20;

fn machine(config_ini: &str) -> Machine {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let paths = SystemPaths { proc: root.join("proc"), sys: root.join("sys"), dev: root.join("dev") };
    for directory in [&paths.proc, &paths.dev, &root.join("config/ssh_authorized_keys"), &root.join("data")] {
        fs::create_dir_all(directory).unwrap();
    }
    fs::write(paths.proc.join("cpuinfo"), "processor\t: 0\n").unwrap();
    fs::write(paths.proc.join("meminfo"), "MemTotal: 2097152 kB\n").unwrap();
    for (name, size) in [("vda", 8 * MIB), ("vdb", 128 * MIB)] {
        let block = paths.sys.join("devices/virtio/block").join(name);
        fs::create_dir_all(&block).unwrap();
        fs::write(block.join("size"), format!("{}\n", size / 512)).unwrap();
        fs::create_dir_all(paths.sys.join("block")).unwrap();
        std::os::unix::fs::symlink(&block, paths.sys.join("block").join(name)).unwrap();
    }
    File::create(paths.dev.join("vdb")).unwrap().set_len(128 * MIB).unwrap();
    // The data directory is on vda.
    let device = fs::metadata(root.join("data")).unwrap().dev();
    fs::create_dir_all(paths.sys.join("dev/block")).unwrap();
    let link = paths.sys.join(format!("dev/block/{}:{}", libc::major(device), libc::minor(device)));
    std::os::unix::fs::symlink(paths.sys.join("devices/virtio/block/vda"), link).unwrap();

    fs::write(root.join("config/config.ini"), config_ini).unwrap();
    fs::write(root.join("config/ssh_authorized_keys/admin"), "ssh-ed25519 AAAA test\n").unwrap();
    // HostOS: a 96 MiB disk whose hostlvm partition holds config (36 MiB, the least a FAT32
    // filesystem takes) and guestos (8 MiB).
    let table = parse_partitions_csv(
        Path::new("partitions.csv"),
        "esp,2048,2048,U,\ngrub,4096,2048,L,\nhostlvm,6144,188416,lvm,\n",
    )
    .unwrap();
    let volumes =
        parse_volumes_csv(Path::new("volumes.csv"), "config,0,9,\nA_boot,9,1,\nA_root,10,1,\nguestos,11,2,\n", 4 * MIB)
            .unwrap();
    let slot = SlotSpec::parse("A:boot=A_boot,root=A_root").unwrap();
    let seed = "6a7c5e2f-0d8b-4c1e-9f3a-2b4d6e8f0a1c".parse().unwrap();
    let group = PartitionVolumeGroup {
        partition: "hostlvm".into(),
        volumes,
        vg_name: "hostlvm".into(),
        extent_size: 4 * MIB,
        creation_host: "icos".into(),
        creation_time: 0,
    };
    let layout = resolve(&table, Some(&group), &[slot], "grub", &seed).unwrap();
    let data = root.join("data");
    fs::write(data.join(HOST_LAYOUT), layout.to_json()).unwrap();
    let compression = CompressionOptions { level: 1, threads: 1 };
    let host = root.join("host.img");
    let options = DiskOptions { size: 96 * MIB, alignment: 2048, seed: Some(seed), disk_guid: None, lvm: Some(group) };
    build_disk(&host, &table, &[], &options).unwrap();
    // HostOS's image has something of its own in the config volume (an empty filesystem),
    // which the installer writes over.
    let config_volume = layout.target(CONFIG_VOLUME).unwrap().offset;
    std::os::unix::fs::FileExt::write_all_at(
        &File::options().write(true).open(&host).unwrap(),
        b"EMPTY",
        config_volume,
    )
    .unwrap();
    package(&data.join(HOST_IMAGE), &[Member::file("disk.img", &host)], compression).unwrap();
    let guest = root.join("guest.img");
    let file = File::create(&guest).unwrap();
    file.set_len(8 * MIB).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"GUESTO", 4096).unwrap();
    package(&data.join(GUEST_IMAGE), &[Member::file("disk.img", &guest)], compression).unwrap();
    let listed: Vec<PathBuf> = [HOST_IMAGE, GUEST_IMAGE, HOST_LAYOUT].iter().map(|name| data.join(name)).collect();
    write_sha256sums(&data.join(DATA_SUMS), &listed).unwrap();
    let sources = Sources { config_dir: root.join("config"), data_dir: data };
    Machine { dir, paths, sources }
}

const MINIMUMS: Requirements = Requirements { cpus: 1, memory: 1 << 30, disk: 96 * MIB };

fn plan_of(machine: &Machine) -> Result<Plan, InstallError> {
    plan(&machine.sources, &machine.paths, &MINIMUMS, &mut |_| {})
}

fn target_allocation(machine: &Machine) -> u64 {
    fs::metadata(machine.paths.dev.join("vdb")).unwrap().blocks() * 512
}

#[test]
fn an_installation_writes_hostos_guestos_and_the_configuration_where_the_layout_says() {
    let machine =
        machine("hostname = node-1\nnetwork = static\nipv4_address = 10.0.2.15/24\nipv4_gateway = 10.0.2.2\n");
    let plan = plan_of(&machine).unwrap();
    assert_eq!(plan.target.name, "vdb");
    assert_eq!(plan.config.hostname, "node-1");
    let mut lines = Vec::new();
    install(&plan, &mut |line| lines.push(line)).unwrap();
    assert!(lines.last().unwrap().starts_with("[6/7] wrote GuestOS"), "{lines:?}");
    let disk = fs::read(machine.paths.dev.join("vdb")).unwrap();
    assert_eq!(&disk[512..520], b"EFI PART");
    let layout = Layout::read(&machine.sources.data_dir.join(HOST_LAYOUT)).unwrap();
    let guestos = layout.target(GUESTOS_VOLUME).unwrap().offset as usize;
    assert_eq!(&disk[guestos + 4096..guestos + 4102], b"GUESTO");
    // The config volume holds a FAT filesystem labelled CONFIG with config.ini.
    let config = layout.target(CONFIG_VOLUME).unwrap();
    let volume = &disk[config.offset as usize..(config.offset + config.size) as usize];
    let filesystem = fatfs::FileSystem::new(std::io::Cursor::new(volume.to_vec()), fatfs::FsOptions::new()).unwrap();
    assert_eq!(filesystem.volume_label().trim_end(), CONFIG_LABEL);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut filesystem.root_dir().open_file(CONFIG_INI).unwrap(), &mut text).unwrap();
    assert!(text.starts_with("hostname = node-1\n"), "{text}");
    assert!(filesystem.root_dir().open_file("ssh_authorized_keys/admin").is_ok());
    // Only data was allocated: the rest of the 128 MiB target is still holes.
    assert!(target_allocation(&machine) < 4 * MIB, "{}", target_allocation(&machine));

    // Installed once, the disk holds a HostOS: a second run needs reinstall = true.
    let error = plan_of(&machine).unwrap_err().to_string();
    assert!(error.ends_with("vdb already holds a HostOS (a partition named \"hostlvm\"); set reinstall = true in config.ini to install over it"), "{error}");
    fs::write(machine.sources.config_dir.join(CONFIG_INI), "hostname = node-1\nreinstall = true\n").unwrap();
    assert!(plan_of(&machine).is_ok_and(|plan| plan.config.reinstall));
}

#[test]
fn refusals_leave_the_target_untouched() {
    let machine = machine("hostname = node-1\ncolour = blue\n");
    let error = plan_of(&machine).unwrap_err().to_string();
    assert!(error.ends_with("config/config.ini, line 2: colour: unknown key (the keys are hostname, network, ipv4_address, ipv4_gateway, ipv6_address, ipv6_gateway, dns_servers, target_disk, reinstall, after_install)"), "{error}");

    fs::write(machine.sources.config_dir.join(CONFIG_INI), "hostname = node-1\n").unwrap();
    let image = machine.sources.data_dir.join(GUEST_IMAGE);
    let mut bytes = fs::read(&image).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&image, bytes).unwrap();
    let error = plan_of(&machine).unwrap_err().to_string();
    assert!(error.contains("SHA256SUMS: guest-os.img.tar.zst has SHA-256 "), "{error}");

    let small = plan(&machine.sources, &machine.paths, &Requirements { cpus: 4, ..MINIMUMS }, &mut |_| {});
    assert_eq!(
        small.unwrap_err().to_string(),
        "the machine falls short of this variant's minimums: 1 CPUs, at least 4 needed"
    );
    assert_eq!(target_allocation(&machine), 0);
    drop(machine.dir);
}
