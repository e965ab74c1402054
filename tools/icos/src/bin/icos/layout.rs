//! `icos layout`: an OS's disk layout as data, resolved into layout.json, boot_args and grub.cfg.

use std::error::Error;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use icos::layout::{boot_args, grub_cfg, resolve, LayoutBuildError, MountSpec, SlotSpec};
use icos::output::write_file_atomically;

use crate::lvm::VolumeGroupArgs;
use icos::partitions::read_partitions_csv;
use icos::seed::Seed;

#[derive(Args)]
pub struct LayoutArgs {
    /// The partition table (partitions.csv).
    #[arg(long)]
    partitions: PathBuf,
    /// The partition that holds the OS's LVM volume group (with --volumes and --vg-name).
    #[arg(long, requires = "volumes")]
    lvm_partition: Option<String>,
    #[command(flatten)]
    lvm: VolumeGroupArgs,
    /// A boot slot as NAME:ROLE=TARGET,...: the partition or volume of each of its roles (boot,
    /// root, var), such as A:boot=A_boot,root=A_root,var=A_var. One slot (A), or A and B.
    #[arg(long = "slot", required = true, value_parser = parse_slot)]
    slots: Vec<SlotSpec>,
    /// The GRUB partition, which holds grub.cfg and grubenv (partition 2).
    #[arg(long, default_value = "grub")]
    grub_partition: String,
    /// The build seed: partition UUIDs the table leaves empty and LVM UUIDs derive from it.
    #[arg(long)]
    seed: Seed,
    /// Kernel arguments of every slot besides root and the mounts, such as "rw console=ttyS0".
    #[arg(long, default_value = "")]
    kernel_args: String,
    /// A partition or volume every slot mounts besides its members, as
    /// TARGET:PATH:FSTYPE[:OPTIONS], such as data:/mnt/data:ext4:ro. Repeatable.
    #[arg(long = "mount", value_parser = parse_mount)]
    mounts: Vec<MountSpec>,
    /// Each slot's root is a verity root (`icos ext4 --verity-root-hash`): the initramfs opens it
    /// with dm-verity and the kernel mounts the verified device. Its root hash is left as a
    /// placeholder in boot_args, for `icos verity boot-args` to fill in per variant.
    #[arg(long)]
    verity_root: bool,
    /// Write the resolved layout (JSON) here.
    #[arg(long)]
    layout_json: Option<PathBuf>,
    /// Write the slots' kernel command lines (BOOT_ARGS_A, BOOT_ARGS_B) here.
    #[arg(long)]
    boot_args: Option<PathBuf>,
    /// The GRUB configuration template, whose @ICOS_LAYOUT@ line becomes the devices of grubenv
    /// and of each slot's boot filesystem.
    #[arg(long, requires = "grub_cfg")]
    grub_cfg_template: Option<PathBuf>,
    /// Write the GRUB configuration here.
    #[arg(long, requires = "grub_cfg_template")]
    grub_cfg: Option<PathBuf>,
}

fn parse_slot(text: &str) -> Result<SlotSpec, LayoutBuildError> {
    SlotSpec::parse(text)
}

fn parse_mount(text: &str) -> Result<MountSpec, LayoutBuildError> {
    MountSpec::parse(text)
}

pub fn run(args: LayoutArgs) -> Result<ExitCode, Box<dyn Error>> {
    let partitions = read_partitions_csv(&args.partitions)?;
    let lvm = match (args.lvm.given(), &args.lvm_partition) {
        (true, Some(partition)) => Some(args.lvm.in_partition(partition)?),
        (false, None) => None,
        _ => return Err("a volume group needs --volumes, --vg-name and --lvm-partition".into()),
    };
    let layout = resolve(&partitions, lvm.as_ref(), &args.slots, &args.grub_partition, &args.seed)?;
    // Everything is computed before anything is written.
    let grub_cfg = match &args.grub_cfg_template {
        Some(template) => {
            let text =
                fs::read_to_string(template).map_err(|error| format!("cannot read {}: {error}", template.display()))?;
            Some(grub_cfg(&layout, &text, template)?)
        }
        None => None,
    };
    let boot_args = boot_args(&layout, &args.kernel_args, args.verity_root, &args.mounts)?;
    if let Some(path) = &args.layout_json {
        write_file_atomically(path, layout.to_json().as_bytes())?;
    }
    if let Some(path) = &args.boot_args {
        write_file_atomically(path, boot_args.as_bytes())?;
    }
    if let (Some(path), Some(text)) = (&args.grub_cfg, &grub_cfg) {
        write_file_atomically(path, text.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
