//! icos-boot-test: boots an icos disk image in QEMU and checks a scenario on its serial console.
//!
//! Run by the `boot_test` rule (rules/private/vm.bzl) under `bazel test`. Every line the VM writes
//! goes to `serial.log` in the test's undeclared outputs (or the work directory), and each phase
//! prints its duration, so a slow or failed boot can be read afterwards.
//! With a kernel booted directly (`--kernel`) there is no GRUB: the boot and no-login scenarios
//! wait for the kernel's banner instead, and the scenarios that check GRUB's choices are refused.
//! An SEV guest is refused at once on a host that cannot run it.
//! The install scenario boots SetupOS with a blank target disk (a sparse file) and the given
//! configuration on its config partition, and then, unless the installer is to refuse, boots the
//! disk it installed.
//! Exit status: 0 when the scenario holds, 1 when it does not, 2 when it cannot run.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use sha2::Digest;

use icos::vm::image::VARS_NAME;
use icos::vm::{check_sev_host, PortForward, Protocol, SerialMode, Share, VmConfig, VmConsole, VmFlags};

/// From power-on to GRUB's "icos: booting slot" line, or with a direct boot to the kernel's banner
/// (OVMF under TCG is the slow part).
const GRUB_TIMEOUT: Duration = Duration::from_secs(180);
/// The start of the first line Linux prints (`Linux version 6.1.0-... (...)`): with a direct boot,
/// the first sign on the console (console=ttyS0 in its command line) that the firmware started it.
const KERNEL_BANNER: &str = "Linux version";
/// From GRUB (or the kernel's banner) to the icos-boot-report line, once systemd has finished the
/// boot.
const SYSTEM_UP_TIMEOUT: Duration = Duration::from_secs(420);
/// Writing an update image into the inactive slot, inside the VM.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
/// Any other shell command in the VM.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// A --check command, which may wait for something slow (a nested VM under TCG).
const CHECK_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long the prod console must stay without a login prompt after the system is up.
const NO_LOGIN_WATCH: Duration = Duration::from_secs(20);
/// What the kernel prints when dm-verity finds a block that does not match its hash.
const VERITY_ERROR: &str = "dm-verity device corrupted";
/// What the kernel prints after a panic with panic=10 on its command line.
const PANIC_REBOOT: &str = "Rebooting in 10 seconds";
/// What the kernel prints when it restarts the machine because it was asked to (`reboot`): a
/// watchdog's reset comes without it.
const CLEAN_RESTART: &str = "reboot: Restarting system";
/// The trial deadline of the failed-upgrade scenario: a trial boot that hangs is reset by the
/// watchdog this long after it started it.
const HUNG_TRIAL_TIMEOUT: u64 = 60;
/// What the agent's status and GRUB say of a damaged grubenv.
const GRUBENV_DAMAGED_STATUS: &str =
    "boot state: /grub/grubenv is damaged (not a GRUB environment block: the signature line is missing)";
const GRUBENV_DAMAGED_GRUB: &str = "icos: grubenv is damaged: the boot state comes from grubenv.copy";
const BOOT_STATE_LOST_GRUB: &str = "icos: both copies of the boot state are damaged: booting slot A";
/// What GRUB prints when it falls back from a slot on trial that never confirmed.
const FALLBACK: &str = "did not confirm its upgrade: falling back.";
/// The partition and byte the verity-corrupted scenario changes: slot A's root, in its ext4
/// superblock (at 1024) the volume name (at 0x78).
const CORRUPTED_PARTITION: &str = "A_root";
const CORRUPTED_OFFSET: u64 = 1024 + 0x78;

/// QEMU 11.1's multi-threaded TCG sometimes aborts on this assertion (an interrupt raised without
/// the big QEMU lock): three of the four HostOS VM tests in one full test run, neither of the two
/// run again right after, none of earlier runs; later, hostos_dev_upgrade_test three times in a row
/// in one run. Since TCG's CPU model leaves out SVM (vm::qemu), so that HostOS no longer loads
/// kvm_amd, no test has aborted; should one still, the emulator crashed, not the image, so the
/// scenario runs again from a fresh copy of the disk, with TCG in one thread (`-accel
/// tcg,thread=single`: slower, without the multi-threaded code that aborts), at most
/// QEMU_ATTEMPTS times in all; any other failure fails at once.
const QEMU_TCG_ABORT: &str = "cpu_interrupt: assertion failed: (bql_locked())";
const QEMU_ATTEMPTS: u32 = 3;

/// How long the login prompt must have been shown before the user name is typed, and how often.
const LOGIN_SETTLE: Duration = Duration::from_secs(2);
const LOGIN_ATTEMPTS: u32 = 3;

/// The 9p mount tag under which the update image is shared with the VM, and its mount command.
const SHARE_TAG: &str = "update";
const MOUNT_SHARE: &str = "mount -t 9p -o trans=virtio,version=9p2000.L,ro update /mnt";
/// What the agent says of an update image that is not a signed release.
const UNSIGNED_REFUSAL: &str = "is an update image, not a signed release bundle";
/// The name of --rollback-image in the share.
const ROLLBACK_IMAGE: &str = "rollback-img.tar.zst";
/// The name of --update-bundle in the share, and in the URL it is served at.
const BUNDLE: &str = "release.tar";
/// The host as QEMU's user network shows it to the guest: its 127.0.0.1.
const HOST_FROM_GUEST: &str = "10.0.2.2";

/// What an upgrade-install may allocate of the VM's sparse disk beyond the data the update image
/// carries: the running system's own writes (journal, logs) while it installs.
const INSTALL_ALLOCATION_SLACK: u64 = 128 << 20;

/// From SetupOS's first installer line to its last (the images are written and read back under
/// TCG: about two minutes measured).
const SETUP_INSTALL_TIMEOUT: Duration = Duration::from_secs(1200);
/// From the installer's last line to QEMU's exit at power-off.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(180);
/// What the installer prints: each step, and a failure.
const INSTALLER_STEP: &str = "icos-install [";
const INSTALLER_DONE: &str = "icos-install [7/7]";
const INSTALLER_FAILED: &str = "icos-install: FAILED: ";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// OVMF, GRUB slot A (or the kernel of --kernel), systemd reports the system running; with a
    /// password, log in and check.
    Boot,
    /// The system comes up and the serial console offers no login (prod); with --kernel too.
    NoLogin,
    /// The unsigned update image is refused; the signed bundle is installed into slot B (from a
    /// file, or as it downloads with --serve-bundle), committed, reboot: B's trial boot starts the
    /// watchdog and,
    /// with no command typed, confirms itself and stops it; damage grubenv, reboot: B again, from
    /// grubenv's copy, which GRUB and status report, and `icos-agent repair` restores.
    Upgrade,
    /// Install and commit; slot B's command line is changed to stop its boot in the rescue shell:
    /// the watchdog its trial boot started resets the machine (no clean restart, no reset from
    /// outside), and GRUB falls back to slot A. Then both copies of grubenv are damaged: GRUB boots
    /// slot A saying so, status reports it, and `icos-agent repair` writes the state anew.
    FailedUpgrade,
    /// Install and commit; slot B's command line is changed to init=/bin/false: the kernel panics,
    /// panic=10 reboots it, and GRUB falls back to slot A. Then the upgrade scenario, from there.
    CrashedUpgrade,
    /// An image without a login (prod), upgraded through its channel: the console offers no login;
    /// the test sends icos-agent serve (port 8180, forwarded from the host) the unsigned update
    /// image and --refused-bundle, which it must refuse, then --update-bundle, which it installs
    /// and commits before it reboots into slot B, whose trial boot confirms itself.
    ChannelUpgrade,
    /// One byte of the verity root of slot A changed (its ext4 volume name, which ext4 itself
    /// ignores): the boot stops with a dm-verity error on the console and never offers a login.
    VerityCorrupted,
    /// SetupOS (the disk image) with --install-config on its config partition installs on a blank
    /// target disk and powers off; the target then boots (--installed-version-file) to a root login
    /// and the --check commands. With --expect-refusal, the installer refuses, powers off, and the
    /// target is still all holes.
    Install,
}

#[derive(Parser)]
#[command(name = "icos-boot-test", about = "Boot an icos disk image in QEMU and check a scenario")]
struct Args {
    /// What to check.
    #[arg(value_enum)]
    scenario: Scenario,
    /// The disk-img.tar.zst to boot.
    #[arg(long)]
    disk_image: PathBuf,
    /// The version.txt of the disk image.
    #[arg(long)]
    version_file: PathBuf,
    /// The root password of the console login (dev images).
    #[arg(long)]
    root_password: Option<String>,
    /// The update-img.tar.zst the upgrade scenarios install.
    #[arg(long)]
    update_image: Option<PathBuf>,
    /// The version.txt of the update image.
    #[arg(long)]
    update_version_file: Option<PathBuf>,
    /// The update's release bundle, signed with a key the disk image trusts: what the upgrade
    /// scenarios install.
    #[arg(long, value_name = "PATH", requires = "update_image")]
    update_bundle: Option<PathBuf>,
    /// Serve --update-bundle over HTTP on the host, for the VM to install as it downloads (its
    /// network comes from --guest-config), instead of sharing it as a file.
    #[arg(long, requires = "update_bundle")]
    serve_bundle: bool,
    /// channel-upgrade: a release bundle signed with a key the image does not trust.
    #[arg(long, value_name = "PATH", requires = "update_bundle")]
    refused_bundle: Option<PathBuf>,
    /// upgrade: an update image of a version older than the update's (the disk image's own), which
    /// upgrade-install must refuse once the update runs (anti-rollback), writing nothing.
    #[arg(long, value_name = "PATH", requires = "update_image")]
    rollback_image: Option<PathBuf>,
    /// Where the unpacked disk and the serial log go (default: $TEST_TMPDIR or a new directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// After the login of the boot scenario, run COMMAND at the root prompt: it must exit 0 and
    /// print EXPECTED, given as EXPECTED::COMMAND. In the order given.
    #[arg(long = "check", value_name = "EXPECTED::COMMAND", value_parser = parse_check)]
    checks: Vec<CommandCheck>,
    /// After the boot scenario's checks, fetch http://127.0.0.1:PORT/PATH from the host, PORT
    /// forwarded to the guest's port 80: the response must be 200 with FILE's bytes, given as
    /// /PATH=FILE. In the order given.
    #[arg(long = "http-check", value_name = "/PATH=FILE", value_parser = parse_http_check)]
    http_checks: Vec<HttpCheck>,
    /// install: the directory written to SetupOS's config partition (config.ini,
    /// ssh_authorized_keys/) before it boots, as a user edits the stick.
    #[arg(long, value_name = "DIR")]
    install_config: Option<PathBuf>,
    /// install: the size of the blank target disk.
    #[arg(long, default_value = "72G", value_parser = icos::size::parse_size)]
    install_target_size: u64,
    /// install: the installer must refuse with TEXT in its failure line.
    #[arg(long, value_name = "TEXT")]
    expect_refusal: Option<String>,
    /// install: change a byte of the copy of FILE on SetupOS's data partition (found by its first
    /// 4 KiB) before it boots.
    #[arg(long, value_name = "FILE")]
    corrupt_data_file: Option<PathBuf>,
    /// install: the version.txt of the OS the installer puts on the target.
    #[arg(long)]
    installed_version_file: Option<PathBuf>,
    /// Attach the configuration disk HostOS would make for its GuestOS VM from this node
    /// config.ini (`icos-agent guestos-config`), as the VM's second disk.
    #[arg(long, value_name = "FILE")]
    guest_config: Option<PathBuf>,
    /// The VM's settings, as for `icos vm run` (flags or ICOS_QEMU_* variables); with --kernel, the
    /// boot and no-login scenarios boot that kernel instead of GRUB.
    #[command(flatten)]
    vm: VmFlags,
}

/// A command to run in the booted system and what its output must contain.
#[derive(Clone)]
struct CommandCheck {
    expected: String,
    command: String,
}

/// A URL path of the guest's HTTP server and the file its response must equal.
#[derive(Debug, Clone)]
struct HttpCheck {
    path: String,
    expected: PathBuf,
}

fn parse_http_check(text: &str) -> Result<HttpCheck, String> {
    match text.split_once('=') {
        Some((path, file)) if path.starts_with('/') && !file.is_empty() => {
            Ok(HttpCheck { path: path.to_owned(), expected: PathBuf::from(file) })
        }
        _ => Err(format!("{text:?} is not /PATH=FILE")),
    }
}

/// The guest port the HTTP checks reach.
const GUEST_HTTP_PORT: u16 = 80;
/// How long the guest's HTTP server may take to answer after the system reports it is running.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// A host port free now, for QEMU to forward: the kernel picks it, the listener is closed again.
/// Serves `file` on 127.0.0.1 over HTTP/1.1 to every GET, whatever its path, as a release server
/// would, for the rest of the test; prints each request and what was sent. Returns the port.
fn serve_file(file: PathBuf) -> Result<u16, Failure> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let outcome = serve_one(stream, &file);
            match outcome {
                Ok((request, sent, size)) => {
                    println!("icos-boot-test: HTTP server: {request}: 200, sent {sent} of {size} bytes")
                }
                Err(error) => println!("icos-boot-test: HTTP server: {error}"),
            }
        }
    });
    Ok(port)
}

/// Answers one request with `file`; returns the request line, the bytes sent and the file's size.
/// A client that closes the connection once it has what it needs ends the copy early.
fn serve_one(stream: std::net::TcpStream, file: &Path) -> std::io::Result<(String, u64, u64)> {
    use std::io::{BufRead, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut content = fs::File::open(file)?;
    let size = content.metadata()?.len();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: application/x-tar\r\nConnection: close\r\n\r\n"
    )?;
    let mut sent = 0;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let count = content.read(&mut buffer)?;
        if count == 0 || stream.write_all(&buffer[..count]).is_err() {
            break;
        }
        sent += count as u64;
    }
    Ok((request.trim_end().to_owned(), sent, size))
}

fn free_host_port() -> Result<u16, Failure> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Fetches each check's path through the forwarded `port` and compares the body with its file.
fn http_checks(session: &mut Session, port: u16, checks: &[HttpCheck]) -> Result<(), Failure> {
    session.phase("HTTP checks");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    for HttpCheck { path, expected } in checks {
        let expected = fs::read(expected)
            .map_err(|error| Failure::Setup(format!("cannot read {}: {error}", expected.display())))?;
        let url = format!("http://127.0.0.1:{port}{path}");
        let started = Instant::now();
        let body = loop {
            match agent.get(&url).call() {
                Ok(response) => {
                    let mut body = Vec::new();
                    response.into_reader().take(64 << 20).read_to_end(&mut body)?;
                    break body;
                }
                // The server answered: its status is the result.
                Err(ureq::Error::Status(status, _)) => {
                    return Err(Failure::Check(format!("GET {path} through the port forward: HTTP {status}")))
                }
                Err(error) if started.elapsed() >= HTTP_TIMEOUT => {
                    return Err(Failure::Check(format!("GET {path} through the port forward: {error}")))
                }
                Err(_) => std::thread::sleep(Duration::from_secs(2)),
            }
        };
        check(body == expected, || {
            format!("GET {path} returned {} bytes that differ from the expected {} bytes", body.len(), expected.len())
        })?;
        println!(
            "icos-boot-test: HTTP check passed: GET {path} returned the expected {} bytes (sha256 {})",
            body.len(),
            icos::hashing::hex(&sha2::Sha256::digest(&body))
        );
    }
    Ok(())
}

fn parse_check(text: &str) -> Result<CommandCheck, String> {
    match text.split_once("::") {
        Some((expected, command)) if !expected.is_empty() && !command.trim().is_empty() => {
            Ok(CommandCheck { expected: expected.to_owned(), command: command.to_owned() })
        }
        _ => Err(format!("{text:?} is not EXPECTED::COMMAND")),
    }
}

/// A failed check (exit 1) or a test that could not run (exit 2).
#[derive(Debug)]
enum Failure {
    Check(String),
    Setup(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure::Setup(error.to_string())
    }
}

fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), Failure> {
    if condition {
        Ok(())
    } else {
        Err(Failure::Check(message()))
    }
}

fn read_version(path: &Path) -> Result<String, Failure> {
    let text = fs::read_to_string(path).map_err(|error| Failure::Setup(format!("{}: {error}", path.display())))?;
    Ok(text.trim().to_owned())
}

/// The running VM and the clock of the current phase.
struct Session {
    console: VmConsole,
    /// The VM's disk: a sparse file, whose allocation shows what the guest wrote.
    disk: PathBuf,
    /// The firmware starts a kernel itself: there is no GRUB line to wait for.
    direct_boot: bool,
    /// Where the console is copied.
    transcript: PathBuf,
    phase: &'static str,
    phase_start: Instant,
    test_start: Instant,
}

impl Session {
    fn phase(&mut self, name: &'static str) {
        self.finish_phase();
        self.phase = name;
        self.phase_start = Instant::now();
    }

    fn finish_phase(&mut self) {
        println!(
            "icos-boot-test: {:<40} {:>6.1} s (total {:.1} s)",
            self.phase,
            self.phase_start.elapsed().as_secs_f64(),
            self.test_start.elapsed().as_secs_f64()
        );
    }

    fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String, Failure> {
        self.console.expect(pattern, timeout).map_err(|error| Failure::Check(format!("{}: {error}", self.phase)))
    }

    /// The rest of the current console line, after the last match.
    fn rest_of_line(&mut self) -> Result<String, Failure> {
        let text = self.expect("\n", COMMAND_TIMEOUT)?;
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Waits for GRUB to choose `slot` in boot cycle `cycle` (with a direct boot, for the kernel's
    /// banner: the command line the build writes for slot A boots slot A's root), then for systemd
    /// to report the system running with that slot and `version`.
    fn expect_boot(&mut self, slot: char, cycle: &str, version: &str) -> Result<(), Failure> {
        if self.direct_boot {
            self.phase("firmware and the kernel");
            self.expect(KERNEL_BANNER, GRUB_TIMEOUT)?;
        } else {
            self.expect_grub(slot, cycle)?;
        }
        self.expect_system(slot, version)
    }

    fn expect_grub(&mut self, slot: char, cycle: &str) -> Result<(), Failure> {
        self.phase("firmware and GRUB");
        self.expect(&format!("icos: booting slot {slot} ({cycle})"), GRUB_TIMEOUT)?;
        Ok(())
    }

    /// The console line of a trial boot's watchdog, once started; returns the rest of the line.
    fn expect_trial_watchdog(&mut self, seconds: u64) -> Result<String, Failure> {
        self.phase("Linux until the trial's watchdog");
        self.expect("icos: trial boot: the watchdog ", SYSTEM_UP_TIMEOUT)?;
        let line = self.rest_of_line()?;
        println!("icos-boot-test: console: icos: trial boot: the watchdog {line}");
        check(line.ends_with(&format!("resets the machine in {seconds} s unless this slot confirms")), || {
            format!("the trial boot started its watchdog with another deadline than {seconds} s: {line:?}")
        })?;
        Ok(line)
    }

    /// Waits for systemd to report the system running with `slot` and `version`.
    fn expect_system(&mut self, slot: char, version: &str) -> Result<(), Failure> {
        self.phase("Linux and systemd");
        self.expect("icos: system ", SYSTEM_UP_TIMEOUT)?;
        let report = self.rest_of_line()?;
        check(report.starts_with("running;"), || format!("systemd does not report the system running: {report:?}"))?;
        let status = format!("slot {slot}, boot_cycle {}, version {version}", self.booted_cycle("stable"));
        let status_at_failsafe_check = format!("slot {slot}, boot_cycle failsafe_check, version {version}");
        check(report.contains(&status) || report.contains(&status_at_failsafe_check), || {
            format!("the booted system reports {report:?}, expected slot {slot} with version {version}")
        })
    }

    /// The boot cycle the system reports after a boot GRUB made in `cycle`. A direct boot passes no
    /// GRUB, so nothing moves grubenv from the `install` the image was built with.
    fn booted_cycle<'a>(&self, cycle: &'a str) -> &'a str {
        if self.direct_boot {
            "install"
        } else {
            cycle
        }
    }

    fn login(&mut self, password: &str) -> Result<(), Failure> {
        self.phase("console login");
        let mut attempt = 1;
        loop {
            // getty may have shown its prompt before the boot report: an empty line brings a new
            // one. getty discards pending input when it (re)opens the line, so the user name goes
            // only after the prompt has settled, and a discarded name is retried.
            self.console.send("\n")?;
            self.expect("login: ", COMMAND_TIMEOUT)?;
            std::thread::sleep(LOGIN_SETTLE);
            self.console.send("root\n")?;
            let (found, _) = self
                .console
                .expect_any(&["Password: ", "login: "], COMMAND_TIMEOUT)
                .map_err(|error| Failure::Check(format!("{}: {error}", self.phase)))?;
            if found == 0 {
                break;
            }
            check(attempt < LOGIN_ATTEMPTS, || {
                format!("getty did not take the user name in {LOGIN_ATTEMPTS} attempts")
            })?;
            attempt += 1;
        }
        self.console.send(&format!("{password}\n"))?;
        self.expect("# ", COMMAND_TIMEOUT)?;
        // Kernel messages on the console would mix into command output.
        self.run("dmesg --console-level emerg", COMMAND_TIMEOUT)?;
        Ok(())
    }

    /// What the console printed after the last `marker` so far (the whole transcript without one).
    fn transcript_since_last(&self, marker: &str) -> Result<String, Failure> {
        let transcript = self.transcript()?;
        Ok(transcript.rsplit_once(marker).map_or(transcript.clone(), |(_, after)| after.to_owned()))
    }

    /// What the console printed so far.
    fn transcript(&self) -> Result<String, Failure> {
        Ok(String::from_utf8_lossy(&fs::read(&self.transcript)?).into_owned())
    }

    /// Runs a shell command at the root prompt and returns its output; fails unless it exits 0.
    fn run(&mut self, command: &str, timeout: Duration) -> Result<String, Failure> {
        let (status, output) = self.run_with_status(command, timeout)?;
        check(status == "0", || format!("`{command}` exited with {status}: {output}"))?;
        Ok(output)
    }

    /// Runs a shell command that must fail, and returns its output.
    fn run_failing(&mut self, command: &str, timeout: Duration) -> Result<String, Failure> {
        let (status, output) = self.run_with_status(command, timeout)?;
        check(status != "0", || format!("`{command}` succeeded; it must fail: {output}"))?;
        Ok(output)
    }

    fn run_with_status(&mut self, command: &str, timeout: Duration) -> Result<(String, String), Failure> {
        // The quotes keep the typed command, which the console echoes, from matching the marker.
        self.console.send(&format!("{command}; echo \"icos-test-\"\"exit=$?\"\n"))?;
        let output = self.expect("icos-test-exit=", timeout)?;
        let status = self.rest_of_line()?;
        Ok((status, output.trim_end_matches("icos-test-exit=").to_owned()))
    }
}

struct Images {
    disk: PathBuf,
    /// SetupOS: what to do to the disk before it boots, and the target disk to attach.
    setup: Option<InstallSetup>,
    /// Change one byte of slot A's root before booting (the verity-corrupted scenario).
    corrupt_root: bool,
    version: String,
    share: Option<PathBuf>,
    update: Option<Update>,
    /// The share holds --rollback-image.
    rollback: bool,
}

/// The install scenario's preparations of the SetupOS disk.
struct InstallSetup {
    config_dir: PathBuf,
    target: PathBuf,
    target_size: u64,
    corrupt_data_file: Option<PathBuf>,
}

impl InstallSetup {
    /// Writes the configuration filesystem into the config partition of `disk`, changes the data
    /// file when asked, and makes a new blank target disk.
    fn prepare(&self, disk: &Path) -> Result<(), Failure> {
        let (offset, size, uuid) = gpt_partition(disk, icos::install::CONFIG_VOLUME)?;
        let files = icos::install::config_files(&self.config_dir)?;
        let filesystem = icos::install::config_filesystem(&files, size, uuid)?;
        let file = fs::File::options().write(true).open(disk)?;
        file.write_all_at(&filesystem, offset)?;
        println!("icos-boot-test: wrote {} into SetupOS's config partition", self.config_dir.display());
        if let Some(reference) = &self.corrupt_data_file {
            corrupt_copy_of(disk, "data", reference)?;
        }
        let _ = fs::remove_file(&self.target);
        fs::File::create(&self.target)?.set_len(self.target_size)?;
        Ok(())
    }

    /// QEMU's arguments that attach the target as the second virtio disk.
    fn drive_args(&self) -> Result<Vec<String>, Failure> {
        let path =
            self.target.to_str().ok_or_else(|| Failure::Setup(format!("{} is not UTF-8", self.target.display())))?;
        Ok(vec![
            "-drive".into(),
            format!("if=none,id=target,format=raw,file={path},discard=unmap,detect-zeroes=unmap"),
            "-device".into(),
            "virtio-blk-pci,drive=target".into(),
        ])
    }
}

/// The byte offset, size and partition UUID of the GPT partition named `name` of `disk`.
fn gpt_partition(disk: &Path, name: &str) -> Result<(u64, u64, uuid::Uuid), Failure> {
    let table = gpt::GptConfig::new()
        .writable(false)
        .open(disk)
        .map_err(|error| Failure::Setup(format!("{}: {error}", disk.display())))?;
    table
        .partitions()
        .values()
        .find(|entry| entry.name == name)
        .map(|entry| (entry.first_lba * 512, (entry.last_lba + 1 - entry.first_lba) * 512, entry.part_guid))
        .ok_or_else(|| Failure::Setup(format!("{} has no partition {name}", disk.display())))
}

/// Flips a byte in the middle of the first block of the copy of `reference` on partition
/// `partition` of `disk`: the block-aligned block that equals `reference`'s first 4 KiB.
fn corrupt_copy_of(disk: &Path, partition: &str, reference: &Path) -> Result<(), Failure> {
    let mut first = vec![0u8; 4096];
    fs::File::open(reference)?.read_exact(&mut first)?;
    let (start, size, _) = gpt_partition(disk, partition)?;
    let file = fs::File::options().read(true).write(true).open(disk)?;
    let mut block = vec![0u8; 4096];
    let mut offset = start;
    while offset < start + size {
        file.read_exact_at(&mut block, offset)?;
        if block == first {
            let position = offset + 2048;
            file.write_all_at(&[!block[2048]], position)?;
            println!(
                "icos-boot-test: changed a byte of {} on {partition} (at {} of the partition)",
                reference.display(),
                position - start
            );
            return Ok(());
        }
        offset += 4096;
    }
    Err(Failure::Setup(format!("no block of {partition} starts like {}", reference.display())))
}

/// The update image shared with the VM.
#[derive(Clone)]
struct Update {
    version: String,
    /// What `upgrade-install` is given: the bundle in the share, or its URL.
    bundle: String,
    /// The bundle, and the unsigned update image, on the host.
    bundle_file: PathBuf,
    image_file: PathBuf,
    /// The bytes of image data it carries (its members without their holes).
    data_bytes: u64,
}

/// The VM's settings (`icos vm`'s flags and ICOS_QEMU_* variables; the boot_test rule sets
/// ICOS_QEMU_BIN), refused when the scenario cannot run with them on this host: with a direct boot,
/// the scenarios that check GRUB's choices; an SEV guest on a host without (working) SEV.
fn vm_config(flags: VmFlags, scenario: Scenario) -> Result<VmConfig, Failure> {
    let config = flags.into_config()?;
    let checks_grub = matches!(
        scenario,
        Scenario::Upgrade
            | Scenario::FailedUpgrade
            | Scenario::CrashedUpgrade
            | Scenario::ChannelUpgrade
            | Scenario::VerityCorrupted
    );
    if config.direct_boot.is_some() && checks_grub {
        let name = scenario.to_possible_value().map(|value| value.get_name().to_owned()).unwrap_or_default();
        return Err(Failure::Setup(format!(
            "the {name} scenario checks what GRUB does, and a kernel booted directly (--kernel) bypasses GRUB: \
             only the boot and no-login scenarios run with it"
        )));
    }
    if let Some(sev) = &config.sev {
        check_sev_host(sev.kind)?;
    }
    Ok(config)
}

fn start(images: &Images, config: &VmConfig, work: &Path) -> Result<Session, Failure> {
    let test_start = Instant::now();
    let mut config = config.clone();
    if let Some(share) = &images.share {
        config.shares.push(Share::new(SHARE_TAG, share)?);
    }
    let host = icos::vm::resolve_host(&config)?;
    println!("icos-boot-test: accelerator {}: {}", host.accel, host.accel_reason);
    let disk = icos::vm::prepare_disk_image(&images.disk, work)?;
    if images.corrupt_root {
        corrupt_partition(&disk, CORRUPTED_PARTITION, CORRUPTED_OFFSET)?;
    }
    if let Some(setup) = &images.setup {
        setup.prepare(&disk)?;
        config.extra_args.extend(setup.drive_args()?);
    }
    // The SEV firmware keeps no variables.
    let vars = match config.sev {
        None => icos::vm::copy_vars(&config.ovmf_vars, work)?,
        Some(_) => work.join(VARS_NAME),
    };
    let argv = icos::vm::qemu_argv(&config, &host, &disk, &vars, SerialMode::Pipe)?;
    let logs = std::env::var_os("TEST_UNDECLARED_OUTPUTS_DIR").map(PathBuf::from).unwrap_or_else(|| work.to_owned());
    // SetupOS's console, and then that of the system it installed, each in a log of its own.
    let transcript = logs.join(if images.setup.is_some() { "setupos-serial.log" } else { "serial.log" });
    println!("icos-boot-test: qemu command line: {}", icos::vm::command_line(&argv));
    println!("icos-boot-test: serial console log: {}", transcript.display());
    let console = VmConsole::spawn(&argv, &transcript, &logs.join("qemu-stderr.log"))?;
    Ok(Session {
        console,
        disk,
        direct_boot: config.direct_boot.is_some(),
        transcript,
        phase: "unpacking the disk image",
        phase_start: test_start,
        test_start,
    })
}

fn boot(
    session: &mut Session,
    images: &Images,
    password: Option<&str>,
    checks: &[CommandCheck],
    http: Option<(u16, &[HttpCheck])>,
) -> Result<(), Failure> {
    session.expect_boot('A', "stable", &images.version)?;
    if !checks.is_empty() && password.is_none() {
        return Err(Failure::Setup("--check needs --root-password: the checks run at the root prompt".into()));
    }
    if let Some(password) = password {
        session.login(password)?;
        let status = session.run("/opt/icos/bin/icos-agent status", COMMAND_TIMEOUT)?;
        let expected = format!("slot A, boot_cycle {}, version {}", session.booted_cycle("stable"), images.version);
        check(status.contains(&expected), || format!("icos-agent status: {status}"))?;
        let state = session.run("systemctl is-system-running", COMMAND_TIMEOUT)?;
        check(state.contains("running"), || format!("systemctl is-system-running: {state}"))?;
        session.phase("checks");
        for CommandCheck { expected, command } in checks {
            let output = session.run(command, CHECK_TIMEOUT)?;
            // The console echoes the typed line, which ends in the exit marker's quoted echo: only
            // what follows it counts.
            let printed = output.rsplit_once("exit=$?\"").map_or(output.as_str(), |(_, rest)| rest);
            check(printed.contains(expected.as_str()), || {
                format!("`{command}` printed {printed:?}, which lacks {expected:?}")
            })?;
            println!("icos-boot-test: check passed: `{command}` printed {expected:?}");
        }
    }
    if let Some((port, checks)) = http {
        http_checks(session, port, checks)?;
    }
    Ok(())
}

fn no_login(session: &mut Session, images: &Images) -> Result<(), Failure> {
    session.expect_boot('A', "stable", &images.version)?;
    session.phase("watching the console for a login");
    session.console.send("\n\n")?;
    session
        .console
        .absent_for("login:", NO_LOGIN_WATCH)
        .map_err(|error| Failure::Check(format!("the console offers a login: {error}")))
}

/// SetupOS boots, its installer runs to its end and the VM powers off. It must install, or with
/// `expect_refusal` refuse with that text and leave `target` all holes.
fn install(session: &mut Session, target: &Path, expect_refusal: Option<&str>) -> Result<(), Failure> {
    session.phase("firmware and GRUB");
    session.expect("icos: booting slot A", GRUB_TIMEOUT)?;
    session.phase("Linux, systemd and the installer's start");
    session.expect(INSTALLER_STEP, SYSTEM_UP_TIMEOUT)?;
    session.phase("the installer");
    let (outcome, _) = session
        .console
        .expect_any(&[INSTALLER_DONE, INSTALLER_FAILED], SETUP_INSTALL_TIMEOUT)
        .map_err(|error| Failure::Check(format!("{}: {error}", session.phase)))?;
    let line = session.rest_of_line()?;
    let refused = outcome == 1;
    if refused {
        session.expect("nothing was written to any disk", COMMAND_TIMEOUT)?;
    }
    session.phase("power off");
    session.console.wait_exit(POWER_OFF_TIMEOUT).map_err(|error| Failure::Check(format!("power off: {error}")))?;
    let transcript = session.transcript()?;
    for installer_line in transcript.lines().filter(|line| line.contains("icos-install")) {
        println!("icos-boot-test: console: {}", installer_line.trim_end());
    }
    match (refused, expect_refusal) {
        (false, None) => Ok(()),
        (true, Some(text)) => {
            check(line.contains(text), || format!("the installer refused with {line:?}, which lacks {text:?}"))?;
            let allocated = allocated_bytes(target)?;
            check(allocated == 0, || format!("the target disk has {allocated} bytes allocated after a refusal"))?;
            println!("icos-boot-test: the installer refused ({text:?}); the target disk is all holes");
            Ok(())
        }
        (false, Some(text)) => {
            Err(Failure::Check(format!("the installer installed; expected it to refuse with {text:?}")))
        }
        (true, None) => Err(Failure::Check(format!("the installer failed: {line}"))),
    }
}

/// Flips the bits of the byte at `offset` of the GPT partition named `partition` of `disk`.
fn corrupt_partition(disk: &Path, partition: &str, offset: u64) -> Result<(), Failure> {
    let setup = |error: std::io::Error| Failure::Setup(format!("{}: {error}", disk.display()));
    let (start, _, _) = gpt_partition(disk, partition)?;
    let file = fs::File::options().read(true).write(true).open(disk).map_err(setup)?;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, start + offset).map_err(setup)?;
    let changed = [!byte[0]];
    file.write_all_at(&changed, start + offset).map_err(setup)?;
    println!(
        "icos-boot-test: changed the byte at {offset} of {partition} from {:#04x} to {:#04x}",
        byte[0], changed[0]
    );
    Ok(())
}

/// GRUB boots slot A, whose root no longer matches its root hash: the kernel must stop on the
/// dm-verity error and reboot (panic=10), the next boot stop on it again, and the console never
/// offer a login.
fn verity_corrupted(session: &mut Session) -> Result<(), Failure> {
    session.phase("firmware and GRUB");
    session.expect("icos: booting slot A (stable)", GRUB_TIMEOUT)?;
    session.phase("Linux until the dm-verity error");
    session.expect(VERITY_ERROR, SYSTEM_UP_TIMEOUT)?;
    session.phase("the panic's reboot into GRUB");
    session.expect(PANIC_REBOOT, COMMAND_TIMEOUT)?;
    session.expect("icos: booting slot A (stable)", GRUB_TIMEOUT)?;
    // The boot after stops at the same place: it never goes on past the error.
    session.phase("Linux until the dm-verity error again");
    session.expect(VERITY_ERROR, SYSTEM_UP_TIMEOUT)?;
    check(!session.transcript()?.contains("login:"), || {
        "the console offered a login despite the dm-verity error".to_owned()
    })
}

/// How the update was committed.
#[derive(PartialEq, Eq)]
enum Commit {
    /// By upgrade-commit: the scenario reboots when it wants.
    Typed,
    /// By `upgrade-install --commit --reboot`, which is rebooting the machine: the whole upgrade
    /// in the one command typed.
    Rebooting,
}

/// In slot A, logged in: installs the update into slot B and commits it with a trial deadline of
/// `trial_timeout` seconds; a bundle served over HTTP is installed, committed and rebooted into
/// by one command. Returns the update's version.
fn install_and_commit(session: &mut Session, images: &Images, trial_timeout: u64) -> Result<(String, Commit), Failure> {
    let update = images.update.clone().ok_or_else(|| Failure::Setup("this scenario needs --update-image".into()))?;
    session.phase("upgrade-install of the update image");
    session.run(MOUNT_SHARE, COMMAND_TIMEOUT)?;
    let allocated_before = allocated_bytes(&session.disk)?;
    // Nobody signed it: the agent refuses it unless told that this dev image may take it.
    let refusal =
        session.run_failing("/opt/icos/bin/icos-agent upgrade-install /mnt/update-img.tar.zst", COMMAND_TIMEOUT)?;
    check(refusal.contains(UNSIGNED_REFUSAL), || format!("upgrade-install of an unsigned image printed {refusal:?}"))?;
    // Signed with the dev release key, which dev images trust.
    let commit = if update.bundle.starts_with("http") {
        // The network (DHCP, from the configuration disk) may still be coming up.
        session.run(
            "timeout 90 sh -c 'until ip -4 route show default | grep -q default; do sleep 1; done'",
            COMMAND_TIMEOUT,
        )?;
        session.console.send(&format!(
            "/opt/icos/bin/icos-agent upgrade-install --commit --trial-timeout {trial_timeout} --reboot {}\n",
            update.bundle
        ))?;
        session.expect(&format!("upgrade {} installed in slot B and committed: ", update.version), INSTALL_TIMEOUT)?;
        println!(
            "icos-boot-test: console: upgrade {} installed in slot B and committed: {}",
            update.version,
            session.rest_of_line()?
        );
        Commit::Rebooting
    } else {
        let installed =
            session.run(&format!("/opt/icos/bin/icos-agent upgrade-install {}", update.bundle), INSTALL_TIMEOUT)?;
        check(installed.contains(&format!("upgrade {} installed in slot B", update.version)), || {
            format!("upgrade-install of {} printed {installed:?}", update.bundle)
        })?;
        Commit::Typed
    };
    // The agent zeroes the rest of each partition without writing zeros: on a thin disk the
    // install allocates about the data it writes, not the whole inactive slot.
    let allocated = allocated_bytes(&session.disk)?.saturating_sub(allocated_before);
    println!(
        "icos-boot-test: upgrade-install allocated {} MiB of the VM disk for {} MiB of image data",
        allocated >> 20,
        update.data_bytes >> 20
    );
    check(allocated <= update.data_bytes + INSTALL_ALLOCATION_SLACK, || {
        format!(
            "upgrade-install allocated {allocated} bytes of the VM disk for {} bytes of image data: zero runs were written",
            update.data_bytes
        )
    })?;
    if commit == Commit::Typed {
        session.phase("upgrade-commit");
        session.run(
            &format!("/opt/icos/bin/icos-agent upgrade-commit --trial-timeout {trial_timeout}"),
            COMMAND_TIMEOUT,
        )?;
        let status = session.run("/opt/icos/bin/icos-agent status", COMMAND_TIMEOUT)?;
        check(status.contains("first_boot"), || format!("after upgrade-commit, icos-agent status says: {status}"))?;
    }
    Ok((update.version, commit))
}

/// The scenarios that change slot B before it boots need the machine still up after the commit.
fn expect_typed_commit((_, commit): (String, Commit)) -> Result<(), Failure> {
    match commit {
        Commit::Typed => Ok(()),
        Commit::Rebooting => Err(Failure::Setup(
            "this scenario changes slot B after the commit: --serve-bundle is for the upgrade scenario".into(),
        )),
    }
}

/// Adds `arguments` to slot B's kernel command line (BOOT_ARGS_B of /boot_args on its boot
/// partition or volume), to make its trial boot fail.
fn break_slot_b(session: &mut Session, arguments: &str) -> Result<(), Failure> {
    session.phase("changing slot B's command line");
    session.run(
        &format!(
            "for device in /dev/disk/by-partlabel/B_boot /dev/mapper/hostlvm-B_boot; do [ -e $device ] && break; done; \
             mkdir -p /run/b_boot && mount $device /run/b_boot && \
             sed -i 's|^BOOT_ARGS_B=\"|&{arguments} |' /run/b_boot/boot_args && \
             grep '^BOOT_ARGS_B=' /run/b_boot/boot_args && umount /run/b_boot"
        ),
        COMMAND_TIMEOUT,
    )?;
    Ok(())
}

fn upgrade(session: &mut Session, images: &Images, password: &str) -> Result<(), Failure> {
    session.expect_boot('A', "stable", &images.version)?;
    session.login(password)?;
    upgrade_from_a(session, images, password)
}

/// The upgrade scenario from slot A, logged in.
fn upgrade_from_a(session: &mut Session, images: &Images, password: &str) -> Result<(), Failure> {
    let timeout = u64::from(icos::upgrade::trial::DEFAULT_TRIAL_TIMEOUT);
    let (next, commit) = install_and_commit(session, images, timeout)?;
    if commit == Commit::Typed {
        session.console.send("reboot\n")?;
    }
    // From here on nothing is typed until slot B has confirmed itself.
    session.expect_grub('B', "failsafe_check")?;
    session.expect_trial_watchdog(timeout)?;
    session.phase("the trial boot until it confirms itself");
    session.expect("slot B confirmed: boot_cycle failsafe_check -> stable, ", SYSTEM_UP_TIMEOUT)?;
    let confirmed = session.rest_of_line()?;
    println!("icos-boot-test: console: slot B confirmed: boot_cycle failsafe_check -> stable, {confirmed}");
    check(confirmed.contains("health check") && confirmed.contains("the trial's watchdog /dev/watchdog"), || {
        format!("the confirmation ran no health check or stopped no watchdog: {confirmed:?}")
    })?;
    session.expect_system('B', &next)?;
    session.login(password)?;
    let status = session.run("/opt/icos/bin/icos-agent status", COMMAND_TIMEOUT)?;
    check(status.contains(&format!("slot B, boot_cycle stable, version {next}")), || {
        format!("after the trial boot, icos-agent status says: {status}")
    })?;
    if images.rollback {
        // The disk image's own version, older than the running update: refused, nothing written.
        session.phase("upgrade-install of an older version");
        session.run(MOUNT_SHARE, COMMAND_TIMEOUT)?;
        let refusal = session.run_failing(
            &format!("/opt/icos/bin/icos-agent upgrade-install --allow-unsigned /mnt/{ROLLBACK_IMAGE}"),
            INSTALL_TIMEOUT,
        )?;
        let expected = format!("version {} is older than the running {next}: refused (anti-rollback)", images.version);
        check(refusal.contains(&expected), || format!("upgrade-install of an older version printed {refusal:?}"))?;
        println!("icos-boot-test: upgrade-install refused the older version: {expected}");
        let status = session.run("/opt/icos/bin/icos-agent status", COMMAND_TIMEOUT)?;
        check(status.contains("slot A: no upgrade installed"), || {
            format!("after the refused downgrade, icos-agent status says: {status}")
        })?;
    }
    // grubenv damaged (its signature overwritten, as a torn write could leave it): the agent reports
    // it, and GRUB says so and boots from the copy.
    session.phase("damaging grubenv");
    session.run("printf garbage | dd of=/grub/grubenv conv=notrunc status=none && sync", COMMAND_TIMEOUT)?;
    let status = session.run("/opt/icos/bin/icos-agent status", COMMAND_TIMEOUT)?;
    check(status.contains(GRUBENV_DAMAGED_STATUS), || {
        format!("with grubenv damaged, icos-agent status says: {status}")
    })?;
    // The confirmed slot stays: the next boot is B again, stable, and starts no watchdog.
    session.console.send("reboot\n")?;
    session.phase("firmware and GRUB");
    session.expect(GRUBENV_DAMAGED_GRUB, GRUB_TIMEOUT)?;
    session.expect_boot('B', "stable", &next)?;
    let transcript = session.transcript_since_last("icos: booting slot B (stable)")?;
    check(!transcript.contains("icos: trial boot"), || "a stable boot started the trial's watchdog".to_owned())?;
    session.login(password)?;
    session.phase("repair");
    let repaired = session.run("/opt/icos/bin/icos-agent repair", COMMAND_TIMEOUT)?;
    check(
        repaired.contains("boot state restored: /grub/grubenv and /grub/grubenv.copy say slot B, boot_cycle stable"),
        || format!("icos-agent repair says: {repaired}"),
    )?;
    let status = session.run("/opt/icos/bin/icos-agent status", COMMAND_TIMEOUT)?;
    check(!status.contains("boot state:"), || format!("after repair, icos-agent status says: {status}"))?;
    session.run("cmp /grub/grubenv /grub/grubenv.copy", COMMAND_TIMEOUT)?;
    Ok(())
}

/// Slot B stops in the rescue shell; nothing is typed after the reboot into it.
fn failed_upgrade(session: &mut Session, images: &Images, password: &str) -> Result<(), Failure> {
    session.expect_boot('A', "stable", &images.version)?;
    session.login(password)?;
    expect_typed_commit(install_and_commit(session, images, HUNG_TRIAL_TIMEOUT)?)?;
    break_slot_b(session, "systemd.unit=rescue.target")?;
    session.console.send("reboot\n")?;
    session.expect_grub('B', "failsafe_check")?;
    session.expect_trial_watchdog(HUNG_TRIAL_TIMEOUT)?;
    let armed = Instant::now();
    session.phase("the hung trial boot until the watchdog resets it");
    session.expect(&format!("Slot B {FALLBACK}"), Duration::from_secs(HUNG_TRIAL_TIMEOUT) + GRUB_TIMEOUT)?;
    let waited = armed.elapsed();
    println!("icos-boot-test: the machine was reset {:.1} s after the trial's watchdog started", waited.as_secs_f64());
    let hung = session.transcript_since_last("icos: booting slot B (failsafe_check)")?;
    check(hung.contains("rescue"), || "slot B's boot did not stop in the rescue shell".to_owned())?;
    check(!hung.contains(CLEAN_RESTART), || "slot B restarted cleanly: the watchdog did not reset it".to_owned())?;
    check(waited >= Duration::from_secs(HUNG_TRIAL_TIMEOUT - 10), || {
        format!("the reset came {:.1} s after the watchdog started, before its deadline", waited.as_secs_f64())
    })?;
    session.expect_boot('A', "stable", &images.version)?;

    // Both copies of the boot state damaged: GRUB says so and boots slot A; status reports the
    // state lost (on the console too), and repair writes it anew for the running slot.
    session.login(password)?;
    session.phase("damaging both copies of grubenv");
    session.run(
        "for copy in /grub/grubenv /grub/grubenv.copy; do printf garbage | dd of=$copy conv=notrunc status=none; done; sync",
        COMMAND_TIMEOUT,
    )?;
    session.console.send("reboot\n")?;
    session.phase("firmware and GRUB");
    session.expect(BOOT_STATE_LOST_GRUB, GRUB_TIMEOUT)?;
    session.expect("icos: booting slot A (stable)", GRUB_TIMEOUT)?;
    session.phase("Linux and systemd");
    session.expect("icos: system running; icos-agent: error: the boot state is lost: ", SYSTEM_UP_TIMEOUT)?;
    session.login(password)?;
    session.phase("repair");
    let repaired = session.run("/opt/icos/bin/icos-agent repair", COMMAND_TIMEOUT)?;
    check(repaired.contains("say slot A (the running slot), boot_cycle stable"), || {
        format!("icos-agent repair says: {repaired}")
    })?;
    let status = session.run("/opt/icos/bin/icos-agent status", COMMAND_TIMEOUT)?;
    check(
        status.contains(&format!("slot A, boot_cycle stable, version {}", images.version))
            && !status.contains("boot state:"),
        || format!("after repair, icos-agent status says: {status}"),
    )
}

/// `GET /status` of the upgrade channel at `base`, once it answers (the VM's network and the
/// service may still be coming up).
fn channel_status(agent: &ureq::Agent, base: &str) -> Result<String, Failure> {
    let started = Instant::now();
    loop {
        match agent.get(&format!("{base}/status")).call() {
            Ok(response) => return Ok(response.into_string()?),
            Err(error) if started.elapsed() > COMMAND_TIMEOUT => {
                return Err(Failure::Check(format!("the upgrade channel does not answer GET /status: {error}")))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// `PUT /upgrade` of `file` to the upgrade channel at `base`: the status code and the answer.
fn channel_put(agent: &ureq::Agent, base: &str, file: &Path) -> Result<(u16, String), Failure> {
    let body = fs::File::open(file)?;
    let length = body.metadata()?.len();
    let response = agent.put(&format!("{base}/upgrade")).set("Content-Length", &length.to_string()).send(body);
    let (status, response) = match response {
        Ok(response) => (response.status(), response),
        Err(ureq::Error::Status(status, response)) => (status, response),
        Err(error) => return Err(Failure::Check(format!("PUT /upgrade of {}: {error}", file.display()))),
    };
    let text = response.into_string()?;
    println!(
        "icos-boot-test: PUT /upgrade of {} ({} MiB): {status}: {}",
        file.display(),
        length >> 20,
        text.trim_end()
    );
    Ok((status, text))
}

fn channel_upgrade(session: &mut Session, images: &Images, port: u16, refused_bundle: &Path) -> Result<(), Failure> {
    let update = images.update.clone().ok_or_else(|| Failure::Setup("this scenario needs --update-image".into()))?;
    no_login(session, images)?;
    session.phase("the upgrade channel");
    let base = format!("http://127.0.0.1:{port}");
    let agent =
        ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10)).timeout_read(INSTALL_TIMEOUT).build();
    let status = channel_status(&agent, &base)?;
    check(status.contains("\"slot\": \"A\""), || format!("GET /status answered {status}"))?;
    for (file, expected) in [
        (update.image_file.as_path(), UNSIGNED_REFUSAL),
        (refused_bundle, "the manifest's signature does not verify with"),
    ] {
        let (code, text) = channel_put(&agent, &base, file)?;
        check(code == 422 && text.contains(expected), || {
            format!("PUT /upgrade of {} answered {code}: {text:?}; expected 422 with {expected:?}", file.display())
        })?;
    }
    let (code, text) = channel_put(&agent, &base, &update.bundle_file)?;
    check(code == 200 && text.contains(&format!("upgrade {} installed in slot B", update.version)), || {
        format!("PUT /upgrade of the signed bundle answered {code}: {text:?}")
    })?;
    // The agent reboots into slot B by itself: nothing is sent or typed until B has confirmed itself.
    session.expect_grub('B', "failsafe_check")?;
    session.expect_trial_watchdog(u64::from(icos::upgrade::trial::DEFAULT_TRIAL_TIMEOUT))?;
    session.phase("the trial boot until it confirms itself");
    session.expect("slot B confirmed: boot_cycle failsafe_check -> stable, ", SYSTEM_UP_TIMEOUT)?;
    session.expect_system('B', &update.version)?;
    let status = channel_status(&agent, &base)?;
    check(status.contains("\"slot\": \"B\"") && status.contains("\"boot_cycle\": \"stable\""), || {
        format!("after the trial boot, GET /status answered {status}")
    })
}

/// Slot B's kernel panics (its init exits); nothing is typed after the reboot into it. Back in slot
/// A, the upgrade is installed again and goes through.
fn crashed_upgrade(session: &mut Session, images: &Images, password: &str) -> Result<(), Failure> {
    session.expect_boot('A', "stable", &images.version)?;
    session.login(password)?;
    expect_typed_commit(install_and_commit(session, images, u64::from(icos::upgrade::trial::DEFAULT_TRIAL_TIMEOUT))?)?;
    break_slot_b(session, "init=/bin/false")?;
    session.console.send("reboot\n")?;
    session.expect_grub('B', "failsafe_check")?;
    session.phase("Linux until the panic");
    session.expect("Kernel panic - not syncing: Attempted to kill init!", SYSTEM_UP_TIMEOUT)?;
    session.expect(PANIC_REBOOT, COMMAND_TIMEOUT)?;
    session.expect(&format!("Slot B {FALLBACK}"), GRUB_TIMEOUT)?;
    session.expect_boot('A', "stable", &images.version)?;
    session.login(password)?;
    upgrade_from_a(session, images, password)
}

fn allocated_bytes(path: &Path) -> Result<u64, Failure> {
    let metadata = fs::metadata(path).map_err(|error| Failure::Setup(format!("{}: {error}", path.display())))?;
    Ok(metadata.blocks() * 512)
}

/// The bytes of data in the members of a .tar.zst package: what a sparse member stores, not its
/// apparent size.
fn stored_data_bytes(path: &Path) -> Result<u64, Failure> {
    let setup = |error: std::io::Error| Failure::Setup(format!("{}: {error}", path.display()));
    let file = fs::File::open(path).map_err(setup)?;
    let mut archive = tar::Archive::new(zstd::stream::read::Decoder::new(file).map_err(setup)?);
    let mut total = 0;
    for entry in archive.entries().map_err(setup)? {
        total += entry.map_err(setup)?.header().entry_size().map_err(setup)?;
    }
    Ok(total)
}

fn run(args: Args) -> Result<(), Failure> {
    // Before anything is unpacked: a scenario that cannot run here must say so at once.
    let config = vm_config(args.vm.clone(), args.scenario)?;
    if !args.http_checks.is_empty() && args.scenario != Scenario::Boot {
        return Err(Failure::Setup("--http-check runs in the boot scenario".into()));
    }
    let test_tmpdir = std::env::var_os("TEST_TMPDIR").filter(|_| args.work_dir.is_none()).map(PathBuf::from);
    let work = match (&args.work_dir, &test_tmpdir) {
        (Some(dir), _) | (None, Some(dir)) => dir.clone(),
        (None, None) => tempfile::Builder::new().prefix("icos-boot-test.").tempdir_in("/var/tmp")?.keep(),
    };
    fs::create_dir_all(&work)?;
    let result = run_in(&args, &config, &work);
    // Under Bazel the VM's disk (a gigabyte or more of a sparse copy) goes when the test ends: Bazel
    // deletes test sandboxes only while its server idles, and container-run.sh ends the server
    // with the command. The serial log is in TEST_UNDECLARED_OUTPUTS_DIR, which stays.
    if test_tmpdir.is_some() {
        for entry in fs::read_dir(&work)?.flatten() {
            let path = entry.path();
            let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            if let Err(error) = removed {
                eprintln!("icos-boot-test: cannot remove {}: {error}", path.display());
            }
        }
    }
    result
}

fn run_in(args: &Args, config: &VmConfig, work: &Path) -> Result<(), Failure> {
    let work = work.to_owned();
    let setup = match (args.scenario, &args.install_config) {
        (Scenario::Install, Some(config_dir)) => Some(InstallSetup {
            config_dir: config_dir.clone(),
            target: work.join("target.img"),
            target_size: args.install_target_size,
            corrupt_data_file: args.corrupt_data_file.clone(),
        }),
        (Scenario::Install, None) => return Err(Failure::Setup("the install scenario needs --install-config".into())),
        (_, Some(_)) => return Err(Failure::Setup("--install-config is for the install scenario".into())),
        (_, None) => None,
    };
    let mut images = Images {
        disk: args.disk_image.clone(),
        setup,
        corrupt_root: args.scenario == Scenario::VerityCorrupted,
        version: read_version(&args.version_file)?,
        share: None,
        update: None,
        rollback: args.rollback_image.is_some(),
    };
    if let (Some(update), Some(version_file)) = (&args.update_image, &args.update_version_file) {
        // The VM sees a directory holding only the update image, as a file (9p does not follow
        // the runfiles symlink out of the shared directory).
        let share = work.join("share");
        fs::create_dir_all(&share)?;
        fs::copy(update, share.join("update-img.tar.zst"))?;
        if let Some(rollback) = &args.rollback_image {
            fs::copy(rollback, share.join(ROLLBACK_IMAGE))?;
        }
        let bundle = args
            .update_bundle
            .as_ref()
            .ok_or_else(|| Failure::Setup("the upgrade scenarios need --update-bundle".into()))?;
        let bundle = if args.serve_bundle {
            let port = serve_file(bundle.clone())?;
            format!("http://{HOST_FROM_GUEST}:{port}/{BUNDLE}")
        } else {
            fs::copy(bundle, share.join(BUNDLE))?;
            format!("/mnt/{BUNDLE}")
        };
        images.update = Some(Update {
            version: read_version(version_file)?,
            bundle_file: args.update_bundle.clone().unwrap_or_default(),
            image_file: update.clone(),
            bundle,
            data_bytes: stored_data_bytes(update)?,
        });
        images.share = Some(share);
    }
    let password = args.root_password.as_deref();
    let mut config = config.clone();
    if let Some(host_config) = &args.guest_config {
        let (disk, what) = icos::install::apply::guest_config_disk(host_config)?;
        let path = work.join("guest-config.img");
        fs::write(&path, disk)?;
        println!("icos-boot-test: GuestOS configuration disk from {}: {what}", host_config.display());
        config.config_disk = Some(path);
    }
    let http_port = if args.http_checks.is_empty() {
        None
    } else {
        let port = free_host_port()?;
        config.port_forwards.push(PortForward {
            protocol: Protocol::Tcp,
            host_port: port,
            guest_port: GUEST_HTTP_PORT,
        });
        Some(port)
    };
    let channel_port = if args.scenario == Scenario::ChannelUpgrade {
        let port = free_host_port()?;
        config.port_forwards.push(PortForward {
            protocol: Protocol::Tcp,
            host_port: port,
            guest_port: icos::upgrade::server::DEFAULT_PORT,
        });
        Some(port)
    } else {
        None
    };
    let needs_password = || password.ok_or_else(|| Failure::Setup("this scenario needs --root-password".into()));
    let mut attempt = 1;
    loop {
        let mut session = start(&images, &config, &work)?;
        let result = match args.scenario {
            Scenario::Boot => {
                let http = http_port.map(|port| (port, args.http_checks.as_slice()));
                boot(&mut session, &images, password, &args.checks, http)
            }
            Scenario::NoLogin => no_login(&mut session, &images),
            Scenario::Upgrade => upgrade(&mut session, &images, needs_password()?),
            Scenario::FailedUpgrade => failed_upgrade(&mut session, &images, needs_password()?),
            Scenario::CrashedUpgrade => crashed_upgrade(&mut session, &images, needs_password()?),
            Scenario::VerityCorrupted => verity_corrupted(&mut session),
            Scenario::ChannelUpgrade => {
                let refused = args
                    .refused_bundle
                    .as_deref()
                    .ok_or_else(|| Failure::Setup("channel-upgrade needs --refused-bundle".into()))?;
                channel_upgrade(&mut session, &images, channel_port.expect("a port for the channel"), refused)
            }
            Scenario::Install => {
                let setup = images.setup.as_ref().expect("the install scenario has its setup");
                let target = setup.target.clone();
                match install(&mut session, &target, args.expect_refusal.as_deref()) {
                    Ok(()) if args.expect_refusal.is_none() => {
                        session.finish_phase();
                        // The installed system boots from the target alone.
                        let version_file = args.installed_version_file.as_ref().ok_or_else(|| {
                            Failure::Setup("the install scenario needs --installed-version-file".into())
                        })?;
                        let installed = Images {
                            disk: target,
                            setup: None,
                            corrupt_root: false,
                            version: read_version(version_file)?,
                            share: None,
                            update: None,
                            rollback: false,
                        };
                        let installed_work = work.join("installed");
                        fs::create_dir_all(&installed_work)?;
                        session = start(&installed, &config, &installed_work)?;
                        boot(&mut session, &installed, password, &args.checks, None)
                    }
                    result => result,
                }
            }
        };
        session.finish_phase();
        match result {
            Err(Failure::Check(message) | Failure::Setup(message))
                if message.contains(QEMU_TCG_ABORT) && attempt < QEMU_ATTEMPTS =>
            {
                attempt += 1;
                println!(
                    "icos-boot-test: QEMU aborted on \"{QEMU_TCG_ABORT}\", a bug of its multi-threaded TCG, not \
                     of the image: attempt {attempt} of {QEMU_ATTEMPTS}, from a fresh copy of the disk, with TCG in one thread"
                );
                config.tcg_single_thread = true;
            }
            result => return result,
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => {
            println!("icos-boot-test: PASS");
            ExitCode::SUCCESS
        }
        Err(Failure::Check(message)) => {
            eprintln!("icos-boot-test: FAIL: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Setup(message)) => {
            eprintln!("icos-boot-test: error: {message}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments `args`, with no ICOS_QEMU_* variable from the test's environment.
    fn parse(args: &[&str]) -> Args {
        let required = ["icos-boot-test", "--disk-image", "/d.tar.zst", "--version-file", "/v"];
        let command = <Args as clap::CommandFactory>::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(required.iter().chain(args)).unwrap();
        <Args as clap::FromArgMatches>::from_arg_matches(&matches).unwrap()
    }

    fn setup_error(result: Result<VmConfig, Failure>) -> String {
        match result {
            Err(Failure::Setup(message)) => message,
            Err(Failure::Check(message)) => panic!("a check failed instead of the setup: {message}"),
            Ok(config) => panic!("accepted: {config:?}"),
        }
    }

    #[test]
    fn http_checks_are_a_path_and_a_file() {
        let check = parse_http_check("/sw.js=ic-os/boundary-guestos/service-worker/sw.js").unwrap();
        assert_eq!(
            (check.path.as_str(), check.expected.as_path()),
            ("/sw.js", Path::new("ic-os/boundary-guestos/service-worker/sw.js"))
        );
        for bad in ["sw.js=f", "/sw.js=", "/sw.js"] {
            assert!(parse_http_check(bad).unwrap_err().contains("is not /PATH=FILE"), "{bad}");
        }
        let error = run(parse(&["no-login", "--http-check", "/a=b"]));
        assert!(
            matches!(&error, Err(Failure::Setup(message)) if message.contains("--http-check runs in the boot scenario"))
        );
    }

    #[test]
    fn a_direct_boot_runs_only_the_scenarios_without_grub() {
        for scenario in ["upgrade", "failed-upgrade", "crashed-upgrade", "verity-corrupted"] {
            let args = parse(&[scenario, "--kernel", "/k"]);
            let error = setup_error(vm_config(args.vm, args.scenario));
            assert!(error.starts_with(&format!("the {scenario} scenario checks what GRUB does")), "{error}");
        }
        for scenario in ["boot", "no-login"] {
            let args = parse(&[scenario, "--kernel", "/k", "--append", "console=ttyS0"]);
            let config = vm_config(args.vm, args.scenario).unwrap_or_else(|_| panic!("{scenario} refused"));
            assert_eq!(config.direct_boot.map(|boot| boot.kernel), Some(PathBuf::from("/k")));
        }
    }

    /// This machine has no SEV-SNP (see icos::vm::sev_host): the boot test refuses before it starts,
    /// and --no-sev runs the same direct boot without SEV.
    #[test]
    fn sev_is_refused_on_this_host_and_no_sev_runs() {
        let sev = ["boot", "--sev", "sev-snp", "--kernel", "/k", "--sev-kernel-hashes"];
        let args = parse(&sev);
        let error = setup_error(vm_config(args.vm, args.scenario));
        assert!(error.starts_with("this host cannot run an SEV-SNP guest: "), "{error}");
        assert!(error.ends_with("--no-sev boots the same kernel, initrd and command line without SEV"), "{error}");
        let args = parse(&[&sev[..], &["--no-sev"]].concat());
        let config = vm_config(args.vm, args.scenario).unwrap_or_else(|_| panic!("--no-sev refused"));
        assert!(config.sev.is_none() && config.direct_boot.is_some(), "{config:?}");
    }

    /// A session on `sh -c script`, which stands for QEMU's serial console.
    fn session(script: &str, direct_boot: bool) -> (tempfile::TempDir, Session) {
        let dir = tempfile::tempdir().unwrap();
        let argv = ["sh", "-c", script].map(str::to_owned);
        let console = VmConsole::spawn(&argv, &dir.path().join("serial.log"), &dir.path().join("stderr.log")).unwrap();
        let now = Instant::now();
        let disk = dir.path().join("disk.img");
        let transcript = dir.path().join("serial.log");
        (dir, Session { console, disk, direct_boot, transcript, phase: "test", phase_start: now, test_start: now })
    }

    const SETUPOS_REFUSES: &str = "printf 'icos: booting slot A (stable)\\n[ 9.1] icos-install[4]: icos-install [1/7] machine\\n\
        icos-install: FAILED: /mnt/config/config.ini, line 3: colour: unknown key\\nicos-install: nothing was written to any disk\\n'";

    #[test]
    fn a_refusal_must_name_the_problem_and_leave_the_target_empty() {
        let (dir, mut refused) = session(SETUPOS_REFUSES, false);
        let target = dir.path().join("target.img");
        fs::File::create(&target).unwrap().set_len(1 << 30).unwrap();
        install(&mut refused, &target, Some("line 3: colour: unknown key")).unwrap();

        let (_dir, mut refused) = session(SETUPOS_REFUSES, false);
        let error = install(&mut refused, &target, None).unwrap_err();
        assert!(
            matches!(&error, Failure::Check(message) if message.contains("the installer failed: /mnt/config")),
            "{error:?}"
        );

        let (_dir, mut refused) = session(SETUPOS_REFUSES, false);
        fs::write(&target, b"written").unwrap();
        let error = install(&mut refused, &target, Some("colour")).unwrap_err();
        assert!(
            matches!(&error, Failure::Check(message) if message.contains("bytes allocated after a refusal")),
            "{error:?}"
        );

        let installs = "printf 'icos: booting slot A\\nicos-install [1/7] m\\nicos-install [7/7] installed HostOS on /dev/vdb; poweroff\\n'";
        let (_dir, mut installed) = session(installs, false);
        let error = install(&mut installed, &target, Some("colour")).unwrap_err();
        assert!(matches!(&error, Failure::Check(message) if message.contains("expected it to refuse")), "{error:?}");
    }

    #[test]
    fn a_direct_boot_waits_for_the_kernel_banner_instead_of_grub() {
        // No GRUB ran, so grubenv still says what the image was built with.
        let console = "printf 'BdsDxe: starting\\nLinux version 6.1.0-icos (gcc)\\n\
                       icos: system running; slot A, boot_cycle install, version 1.2.3\\n'";
        let (_dir, mut direct) = session(&format!("{console}; exec sleep 30"), true);
        if let Err(failure) = direct.expect_boot('A', "stable", "1.2.3") {
            panic!("{failure:?}");
        }
        // The same console fails the wait for GRUB's line (the program's exit ends the wait).
        let (_dir, mut grub) = session(console, false);
        match grub.expect_boot('A', "stable", "1.2.3") {
            Err(Failure::Check(message)) => assert!(message.contains("icos: booting slot A (stable)"), "{message}"),
            Err(Failure::Setup(message)) => panic!("{message}"),
            Ok(()) => panic!("the boot passed without GRUB's line"),
        }
    }
}
