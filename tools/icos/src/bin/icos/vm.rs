//! `icos vm`: boot a disk image in QEMU with the serial console on this terminal, or print the QEMU
//! command line that would do it.

use std::error::Error;
use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Args, Subcommand};

use icos::vm::image::{DISK_IMAGE_NAME, VARS_NAME};
use icos::vm::{
    check_sev_host, command_line, copy_vars, prepare_disk_image, qemu_argv, resolve_host, HostChoices, SerialMode,
    VmConfig, VmFlags,
};

#[derive(Subcommand)]
pub enum VmCommand {
    /// Boot a disk image in QEMU, serial console and QEMU monitor on this terminal (Ctrl-A X quits,
    /// Ctrl-A C switches to the monitor). The image is copied first: the build output is never
    /// modified. An SEV guest is refused before the copy on a host that cannot run it. Exits with
    /// QEMU's status.
    Run(RunArgs),
    /// Print the QEMU command line of `icos vm run` without preparing or starting the VM (the
    /// accelerator probe of `--accel auto` still runs; whether the host can run an SEV guest is not
    /// checked).
    Command(CommandArgs),
    /// Run a VM the way a service on the host does (HostOS's guestos.service): the disk, such as a
    /// logical volume, is used in place; the UEFI variables persist in --state-dir; the serial
    /// console goes to stdout (the journal) and to --serial-log. Becomes QEMU (exec), so that the
    /// service manager supervises and restarts it. An SEV guest is refused, unless --dry-run, on a
    /// host that cannot run it.
    Host(HostArgs),
}

#[derive(Args)]
pub struct HostArgs {
    /// The VM's disk: a block device or a raw image, written in place.
    #[arg(long)]
    disk: PathBuf,
    /// Where the VM's UEFI variables live (a copy of --ovmf-vars made on first start).
    #[arg(long)]
    state_dir: PathBuf,
    /// The file the serial console is appended to.
    #[arg(long)]
    serial_log: PathBuf,
    /// A raw image attached read-only as the guest's second disk: the configuration the host hands
    /// it (`icos-agent guestos-config`).
    #[arg(long, value_name = "IMAGE")]
    config_disk: Option<PathBuf>,
    /// Print the command line and exit instead of starting QEMU.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    vm: VmFlags,
}

#[derive(Args)]
pub struct RunArgs {
    /// A disk-img.tar.zst package (unpacked sparsely) or a raw disk image (copied with its holes).
    #[arg(long)]
    pub disk_image: PathBuf,
    #[command(flatten)]
    pub work: WorkArgs,
    #[command(flatten)]
    pub vm: VmFlags,
}

/// Where `icos vm run` (and `icos release start`) keeps the VM's private files.
#[derive(Args)]
pub struct WorkArgs {
    /// Where the private disk image and UEFI variables go; kept. Default: a new temporary directory
    /// under $ICOS_VM_DIR or /var/tmp, removed when QEMU exits unless --keep is given.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the temporary work directory.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args)]
pub struct CommandArgs {
    /// The raw disk image QEMU is to open.
    #[arg(long, default_value = "DISK")]
    disk: PathBuf,
    /// The private copy of the UEFI variables QEMU is to use.
    #[arg(long, default_value = "VARS")]
    vars: PathBuf,
    #[command(flatten)]
    vm: VmFlags,
}

pub fn run(command: VmCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        VmCommand::Run(args) => run_vm(args),
        VmCommand::Host(args) => run_host_vm(args),
        VmCommand::Command(args) => {
            let config = args.vm.into_config()?;
            let host = resolve(&config)?;
            println!("{}", command_line(&qemu_argv(&config, &host, &args.disk, &args.vars, SerialMode::Terminal)?));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Decides the host-dependent settings and says which accelerator it is and why.
fn resolve(config: &VmConfig) -> Result<HostChoices, Box<dyn Error>> {
    let host = resolve_host(config)?;
    eprintln!("icos: accelerator: {} ({})", host.accel, host.accel_reason);
    Ok(host)
}

/// Refuses an SEV guest that this host cannot run. Called after the command line is printed (it
/// shows what would have run) and before any disk is copied or written, which would be wasted.
fn check_host_runs(config: &VmConfig) -> Result<(), Box<dyn Error>> {
    match &config.sev {
        Some(sev) => Ok(check_sev_host(sev.kind)?),
        None => Ok(()),
    }
}

pub fn run_vm(args: RunArgs) -> Result<ExitCode, Box<dyn Error>> {
    let config = args.vm.into_config()?;
    let host = resolve(&config)?;
    // A temporary directory goes when this returns early; a given one is made after the checks.
    let mut temporary = None;
    let work_dir = match &args.work.work_dir {
        Some(dir) => dir.clone(),
        None => {
            let base = std::env::var_os("ICOS_VM_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
            let dir = tempfile::Builder::new()
                .prefix("icos-vm-")
                .tempdir_in(&base)
                .map_err(|error| format!("cannot create a work directory in {}: {error}", base.display()))?;
            let path = dir.path().to_owned();
            temporary = Some(dir);
            path
        }
    };
    // The command line first: its checks fail before a long copy.
    let disk = work_dir.join(DISK_IMAGE_NAME);
    let vars = work_dir.join(VARS_NAME);
    let argv = qemu_argv(&config, &host, &disk, &vars, SerialMode::Terminal)?;
    eprintln!("icos: qemu command line: {}", command_line(&argv));
    check_host_runs(&config)?;
    fs::create_dir_all(&work_dir).map_err(|error| format!("cannot create {}: {error}", work_dir.display()))?;
    prepare_disk_image(&args.disk_image, &work_dir)?;
    // The SEV firmware keeps no variables.
    if config.sev.is_none() {
        copy_vars(&config.ovmf_vars, &work_dir)?;
    }
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .map_err(|error| format!("cannot start {}: {error}", argv[0]))?;
    if args.work.keep {
        if let Some(dir) = temporary.take() {
            eprintln!("icos: kept the work directory {}", dir.keep().display());
        }
    }
    Ok(exit_code(status.code(), status.signal()))
}

fn run_host_vm(args: HostArgs) -> Result<ExitCode, Box<dyn Error>> {
    let mut config = args.vm.into_config()?;
    config.config_disk = args.config_disk;
    let host = resolve(&config)?;
    let vars = args.state_dir.join(VARS_NAME);
    let argv = qemu_argv(&config, &host, &args.disk, &vars, SerialMode::Logged(&args.serial_log))?;
    eprintln!("icos: qemu command line: {}", command_line(&argv));
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    check_host_runs(&config)?;
    for dir in [Some(args.state_dir.as_path()), args.serial_log.parent()].into_iter().flatten() {
        fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }
    // The variables outlive the VM (boot entries, secure boot state); the SEV firmware has none.
    if config.sev.is_none() && !vars.exists() {
        copy_vars(&config.ovmf_vars, &args.state_dir)?;
    }
    let error = Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(format!("cannot start {}: {error}", argv[0]).into())
}

/// QEMU's exit status as ours; death by a signal is 128 + the signal, as in a shell.
fn exit_code(code: Option<i32>, signal: Option<i32>) -> ExitCode {
    let code = code.or(signal.map(|signal| 128 + signal)).unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
