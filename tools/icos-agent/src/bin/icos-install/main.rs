//! icos-install: the SetupOS installer (`icos_agent::install`). Checks the machine, config.ini, the
//! target disk and the images, and only then writes HostOS with GuestOS and the configuration to
//! the disk, reads it back, and powers off or reboots as config.ini says. Every step prints one
//! line on standard output (the console, under icos-install.service).
//! Exit status: 0 on success, 1 when a check or a write failed.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;

use icos_agent::install::config::AfterInstall;
use icos_agent::install::system::{Requirements, SystemPaths};
use icos_agent::install::{install, plan, Sources};
use icos_agent::size::parse_size;

#[derive(Parser)]
#[command(name = "icos-install", version, about = "Install HostOS and GuestOS from SetupOS")]
struct Cli {
    /// Where SetupOS's config partition is mounted: config.ini and ssh_authorized_keys/.
    #[arg(long, value_name = "DIR", default_value = "/mnt/config")]
    config_dir: PathBuf,
    /// Where SetupOS's data partition is mounted: the images, HostOS's layout and SHA256SUMS.
    #[arg(long, value_name = "DIR", default_value = "/mnt/data")]
    data_dir: PathBuf,
    /// The fewest CPUs this variant installs on.
    #[arg(long, env = "ICOS_INSTALL_MIN_CPUS")]
    min_cpus: u32,
    /// The least memory this variant installs on, such as 16G.
    #[arg(long, env = "ICOS_INSTALL_MIN_MEMORY", value_parser = parse_size)]
    min_memory: u64,
    /// The smallest target disk this variant installs on, such as 100G.
    #[arg(long, env = "ICOS_INSTALL_MIN_DISK", value_parser = parse_size)]
    min_disk: u64,
    /// Leave the machine running at the end instead of powering off or rebooting.
    #[arg(long)]
    no_power_action: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = Sources { config_dir: cli.config_dir, data_dir: cli.data_dir };
    let requirements = Requirements { cpus: cli.min_cpus, memory: cli.min_memory, disk: cli.min_disk };
    let mut progress = |line: String| println!("icos-install {line}");
    let plan = match plan(&sources, &SystemPaths::default(), &requirements, &mut progress) {
        Ok(plan) => plan,
        Err(error) => {
            println!("icos-install: FAILED: {error}");
            println!("icos-install: nothing was written to any disk");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = install(&plan, &mut progress) {
        println!("icos-install: FAILED: {error}");
        println!("icos-install: {} is partly written; run the installation again", plan.target.path.display());
        return ExitCode::FAILURE;
    }
    let action = plan.config.after_install;
    println!("icos-install [7/7] installed HostOS on {}; {action}", plan.target.path.display());
    if cli.no_power_action {
        return ExitCode::SUCCESS;
    }
    let verb = match action {
        AfterInstall::PowerOff => "poweroff",
        AfterInstall::Reboot => "reboot",
    };
    match Command::new("systemctl").args(["--no-block", verb]).status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        outcome => {
            println!("icos-install: FAILED: systemctl {verb}: {outcome:?}");
            ExitCode::FAILURE
        }
    }
}
