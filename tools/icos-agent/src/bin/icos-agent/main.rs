//! icos-agent: A/B upgrades from inside a running icos OS (see `icos_agent::upgrade`): install an
//! update image into the inactive slot, commit it for the next boot, confirm a boot; and at boot,
//! apply the node's configuration (`icos_agent::install::apply`).
//! Exit status: 0 on success, 2 on an error.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use icos_agent::install::apply::{guest_config_disk, read_config_from_fat, set_hostname, summary, write_network_unit};
use icos_agent::install::config::read_config;
use icos_agent::output::write_file_atomically;
use icos_agent::size::mebibytes;
use icos_agent::upgrade::{server, trial, Agent, InstallEvent};

#[derive(Parser)]
#[command(name = "icos-agent", version, about = "A/B upgrades of a running icos GuestOS")]
struct Cli {
    /// The GRUB environment block holding the boot state; its copy is PATH.copy.
    #[arg(long, global = true, value_name = "PATH", default_value = "/grub/grubenv")]
    grubenv: PathBuf,
    /// The root of the system whose mount table, sysfs, device nodes and version file are used.
    #[arg(long, global = true, value_name = "DIR", default_value = "/", hide = true)]
    system_root: PathBuf,
    /// The OS's layout (layout.json), which names the partition or volume of each role of each
    /// slot [default: /opt/icos/share/layout.json]
    // The default is under --system-root, so that tests need not pass it: no clap default_value.
    #[arg(long, global = true, value_name = "PATH")]
    layout: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the running slot, its boot cycle and version, and what waits in the other slot.
    Status {
        /// Print a JSON object instead of one line of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify a release, then write its update image to the inactive slot (needs boot_cycle
    /// stable). The release is a bundle (icos release package), or one unpacked, whose manifest
    /// must verify against a key of /etc/icos/release-keys. A bundle at an http:// or https:// URL
    /// is installed as it downloads, with no local copy: its manifest is checked before anything
    /// is written, the update image as it is written, and the slot counts as installed only once
    /// all of it verified.
    UpgradeInstall {
        /// The release bundle (a file or a URL) or unpacked bundle; with --allow-unsigned, a bare
        /// update-img.tar.zst.
        source: PathBuf,
        /// More CA certificates (PEM) to trust for an https:// source, besides the system's.
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
        /// Install a bare update image, which nobody signed: dev images only.
        #[arg(long)]
        allow_unsigned: bool,
        /// With --allow-unsigned: refuse the image unless its SHA-256 is HEX.
        #[arg(long, value_name = "HEX", requires = "allow_unsigned")]
        sha256: Option<String>,
        /// Install it even if its version is older than the running one (anti-rollback refuses
        /// that, and a version that is not a semantic version, otherwise).
        #[arg(long)]
        allow_downgrade: bool,
        /// Once installed, commit it as upgrade-commit does.
        #[arg(long)]
        commit: bool,
        /// With --commit: the deadline of the trial boot.
        #[arg(long, value_name = "SECONDS", requires = "commit", default_value_t = trial::DEFAULT_TRIAL_TIMEOUT)]
        trial_timeout: u32,
        /// Once committed, reboot into it (systemctl reboot): the whole upgrade in one command.
        #[arg(long, requires = "commit")]
        reboot: bool,
    },
    /// Make GRUB boot the installed upgrade once, at the next boot, on trial: it must confirm
    /// itself within the deadline, or the watchdog resets the machine and GRUB falls back.
    UpgradeCommit {
        /// The deadline of the trial boot.
        #[arg(long, value_name = "SECONDS", default_value_t = trial::DEFAULT_TRIAL_TIMEOUT)]
        trial_timeout: u32,
    },
    /// Confirm that the running slot works, so that GRUB keeps booting it, and stop the watchdog
    /// of its trial boot.
    Confirm {
        /// Confirm a trial boot only once every executable of DIR succeeds, run in name order
        /// (icos-boot-confirm.service: /etc/icos/health.d).
        #[arg(long, value_name = "DIR")]
        health_checks: Option<PathBuf>,
    },
    /// Restore the boot state: rewrite a damaged copy (grubenv or grubenv.copy) from the other;
    /// with both lost, write the running slot anew, boot_cycle stable.
    Repair,
    /// Serve the upgrade channel of images without a login (prod): HTTP/1.1 on ADDRESS, where
    /// `PUT /upgrade` with a release bundle as its body installs and commits it as upgrade-install
    /// URL and upgrade-commit do (only signed, not older), and `GET /status` answers the status as
    /// JSON. One request at a time.
    Serve {
        /// The address and port to listen on.
        #[arg(long, value_name = "ADDRESS", default_value_t = format!("0.0.0.0:{}", server::DEFAULT_PORT))]
        listen: String,
        /// Once an upgrade is committed, reboot into it (systemctl reboot) instead of serving on.
        #[arg(long)]
        reboot: bool,
    },
    /// Start the watchdog of a trial boot (GRUB puts icos.boot_trial=SECONDS on its kernel
    /// command line): the machine's own, else softdog. On other boots, nothing.
    TrialArm {
        /// How long to wait for the machine's watchdog driver to be loaded.
        #[arg(long, value_name = "SECONDS", default_value_t = 15)]
        wait: u64,
    },
    /// Apply the node's configuration (config.ini, as SetupOS's installer or HostOS wrote it): set
    /// the host name and write the network as a systemd-networkd unit. Without a config.ini,
    /// nothing.
    ApplyConfig {
        /// The configuration.
        #[arg(long, value_name = "PATH", default_value = "/mnt/config/config.ini")]
        config: PathBuf,
        /// Read config.ini from the FAT filesystem on DEVICE instead (a configuration disk).
        #[arg(long, value_name = "DEVICE", conflicts_with = "config")]
        device: Option<PathBuf>,
        /// Where systemd-networkd reads runtime units.
        #[arg(long, value_name = "DIR", default_value = "/run/systemd/network")]
        network_dir: PathBuf,
    },
    /// Write the configuration disk of the GuestOS VM (a FAT filesystem labelled CONFIG) from the
    /// node's config.ini: the host's name with -guestos, and DHCP; empty without a config.ini.
    GuestosConfig {
        /// The node's configuration.
        #[arg(long, value_name = "PATH", default_value = "/mnt/config/config.ini")]
        config: PathBuf,
        /// The disk image to write.
        #[arg(long, value_name = "PATH")]
        output: PathBuf,
    },
}

/// Megabytes per second; a millisecond at least, for members written in no measurable time.
fn rate(bytes: u64, elapsed: Duration) -> String {
    format!("{:.1} MB/s", bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-3))
}

/// Reports install progress on stderr, keeping stdout for the result.
fn report(event: InstallEvent<'_>) {
    match event {
        InstallEvent::Verified { image, bytes, sha256, elapsed } => eprintln!(
            "icos-agent: verified {} ({}, sha256 {sha256}) in {:.1} s",
            image.display(),
            mebibytes(bytes),
            elapsed.as_secs_f64()
        ),
        InstallEvent::Writing { member, target, device, size } => {
            eprintln!("icos-agent: writing {member} ({}) to {target} ({})", mebibytes(size), device.display())
        }
        InstallEvent::Written { member, size, elapsed } => eprintln!(
            "icos-agent: wrote {member}: {} in {:.1} s ({})",
            mebibytes(size),
            elapsed.as_secs_f64(),
            rate(size, elapsed)
        ),
    }
}

/// Reboots the machine into the committed `slot`, through systemd.
fn reboot_into(slot: icos_agent::upgrade::Slot) -> Result<(), Box<dyn Error>> {
    println!("icos-agent: rebooting into slot {slot}");
    let status = std::process::Command::new("systemctl").arg("reboot").status()?;
    if !status.success() {
        return Err(format!("systemctl reboot failed: {status}").into());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    let layout = cli.layout.unwrap_or_else(|| Agent::installed_layout(&cli.system_root));
    let agent = Agent { system_root: cli.system_root, grubenv: cli.grubenv, layout };
    match cli.command {
        Command::Status { json: true } => println!("{}", serde_json::to_string_pretty(&agent.status()?)?),
        Command::Status { json: false } => println!("{}", agent.status()?),
        Command::UpgradeInstall {
            source,
            ca_cert,
            allow_unsigned,
            sha256,
            allow_downgrade,
            commit,
            trial_timeout,
            reboot,
        } => {
            let url = source.to_str().filter(|text| text.starts_with("http://") || text.starts_with("https://"));
            let installed = match (url, allow_unsigned) {
                (Some(url), false) => {
                    agent.install_release_url(url, ca_cert.as_deref(), allow_downgrade, &mut report)?
                }
                (Some(url), true) => return Err(format!("{url}: --allow-unsigned installs a local file only").into()),
                (None, _) if ca_cert.is_some() => return Err("--ca-cert is for an https:// source".into()),
                (None, true) => agent.install_unsigned(&source, sha256.as_deref(), allow_downgrade, &mut report)?,
                (None, false) => agent.install_release(&source, allow_downgrade, &mut report)?,
            };
            if !commit {
                println!("{installed}");
                return Ok(());
            }
            let committed = agent.upgrade_commit(trial_timeout)?;
            println!("upgrade {} installed in slot {} and committed: {committed}", installed.version, installed.slot);
            if reboot {
                reboot_into(committed.slot)?;
            }
        }
        Command::UpgradeCommit { trial_timeout } => println!("{}", agent.upgrade_commit(trial_timeout)?),
        Command::Confirm { health_checks } => println!("{}", agent.confirm(health_checks.as_deref())?),
        Command::Repair => println!("{}", agent.repair()?),
        Command::Serve { listen, reboot } => {
            let listener =
                std::net::TcpListener::bind(&listen).map_err(|error| format!("cannot listen on {listen}: {error}"))?;
            println!("icos-agent: serving upgrades on {}", listener.local_addr()?);
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(error) => {
                        eprintln!("icos-agent: cannot accept a connection: {error}");
                        continue;
                    }
                };
                match server::handle(&agent, stream, &mut report) {
                    Ok((request, status, outcome)) => {
                        println!("icos-agent: {request}: {status}");
                        if let server::Outcome::Committed(installed, committed) = outcome {
                            println!("icos-agent: upgrade {} installed and committed: {committed}", installed.version);
                            if reboot {
                                return reboot_into(committed.slot);
                            }
                        }
                    }
                    Err(error) => eprintln!("icos-agent: a connection failed: {error}"),
                }
            }
        }
        Command::TrialArm { wait } => match agent.arm_trial(Duration::from_secs(wait))? {
            Some(armed) => println!("icos: {armed}"),
            None => println!("icos: not a trial boot: no watchdog started"),
        },
        Command::ApplyConfig { config, device, network_dir } => {
            let (source, parsed) = match device {
                Some(device) => (device.clone(), read_config_from_fat(&device)?),
                None if config.exists() => (config.clone(), Some(read_config(&config)?)),
                None => (config, None),
            };
            let Some(parsed) = parsed else {
                println!("icos: no node configuration in {}", source.display());
                return Ok(());
            };
            set_hostname(&parsed.hostname).map_err(|error| format!("cannot set the host name: {error}"))?;
            write_network_unit(&parsed, &network_dir)?;
            println!("icos: node configuration applied from {}: {}", source.display(), summary(&parsed));
        }
        Command::GuestosConfig { config, output } => {
            let (filesystem, what) = guest_config_disk(&config)?;
            if let Some(parent) = output.parent() {
                std::fs::create_dir_all(parent)?;
            }
            write_file_atomically(&output, &filesystem)?;
            println!("icos: GuestOS configuration disk {}: {what}", output.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("icos-agent: error: {error}");
            ExitCode::from(2)
        }
    }
}
