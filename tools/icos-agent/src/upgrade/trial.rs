//! The trial boot of an upgrade: the first boot of a committed slot (`boot_cycle` `failsafe_check`),
//! which must confirm itself before a deadline or be reset.
//!
//! GRUB (ic-os/bootloader/grub.cfg.in) marks a trial boot by adding [`TRIAL_ARGUMENT`]`=<seconds>`
//! to the kernel command line, the deadline [`super::Agent::upgrade_commit`] stored in grubenv.
//! Early in that boot `icos-agent trial-arm` starts a watchdog with the deadline as its timeout and
//! lets go of it without the magic close, so nothing pets it: unless the slot confirms (which stops
//! the watchdog) the machine is reset when it runs out, whatever stopped the boot (a unit that never
//! finishes, a rescue shell, a hung kernel), and GRUB then falls back. The watchdog is the
//! machine's own (QEMU's i6300esb in the tests) if the kernel has a driver for one, else the
//! kernel's software watchdog, softdog. `icos-agent confirm --health-checks DIR` confirms a trial
//! boot only after every executable of DIR succeeded.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::io_error::PathIoError;

/// The kernel argument GRUB adds on a trial boot, with the deadline in seconds.
pub const TRIAL_ARGUMENT: &str = "icos.boot_trial";
/// The grubenv variable holding the deadline of the next trial boot, in seconds.
pub const TRIAL_TIMEOUT_VARIABLE: &str = "boot_trial_timeout";
/// The deadline when the commit names none; grub.cfg.in falls back to the same value.
pub const DEFAULT_TRIAL_TIMEOUT: u32 = 600;
/// The deadlines accepted: long enough for a boot, short enough for a watchdog's timer.
pub const TRIAL_TIMEOUTS: std::ops::RangeInclusive<u32> = 30..=3600;
/// Where `trial-arm` records the watchdog it started, relative to the system root, for confirm.
const ARMED_WATCHDOG: &str = "run/icos/trial-watchdog";
/// The driver loaded when the machine has no watchdog of its own, or one that refuses the deadline,
/// and the identity it reports.
const SOFTWARE_WATCHDOG: &str = "softdog";
const SOFTWARE_WATCHDOG_IDENTITY: &str = "Software Watchdog";
/// How long a health check may run.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{TRIAL_ARGUMENT}={value:?} on the kernel command line is not a number of seconds")]
    BadArgument { value: String },
    #[error("the deadline {seconds} s is outside {}..={} s", TRIAL_TIMEOUTS.start(), TRIAL_TIMEOUTS.end())]
    BadTimeout { seconds: u32 },
    #[error("no software watchdog is in {path}: `modprobe {SOFTWARE_WATCHDOG}` {problem}")]
    NoWatchdog { path: PathBuf, problem: String },
    #[error("{device}: cannot set the watchdog's timeout to {seconds} s: {source}")]
    SetTimeout { device: PathBuf, seconds: u32, source: io::Error },
    #[error("health check {check} {problem}")]
    HealthCheck { check: PathBuf, problem: String },
}

/// The trial deadline GRUB put on the kernel command line, if this is a trial boot.
pub fn trial_timeout(command_line: &str) -> Result<Option<u32>, TrialError> {
    let prefix = format!("{TRIAL_ARGUMENT}=");
    let Some(value) = command_line.split_ascii_whitespace().filter_map(|word| word.strip_prefix(&prefix)).next_back()
    else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| TrialError::BadArgument { value: value.to_owned() })
}

/// A deadline given to `upgrade-commit`.
pub fn check_timeout(seconds: u32) -> Result<u32, TrialError> {
    if TRIAL_TIMEOUTS.contains(&seconds) {
        Ok(seconds)
    } else {
        Err(TrialError::BadTimeout { seconds })
    }
}

/// A watchdog device: `/dev/watchdogN` and what its driver calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    pub device: PathBuf,
    pub identity: String,
}

/// The watchdogs under `<root>/sys/class/watchdog`, lowest number first.
fn watchdogs(root: &Path) -> Result<Vec<Watchdog>, PathIoError> {
    let class = root.join("sys/class/watchdog");
    let entries = match fs::read_dir(&class) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(PathIoError::with("list", &class)(error)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(PathIoError::with("list", &class))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(number) = name.strip_prefix("watchdog").and_then(|number| number.parse::<u32>().ok()) else {
            continue;
        };
        let identity_path = entry.path().join("identity");
        let identity = fs::read_to_string(&identity_path).map_err(PathIoError::with("read", &identity_path))?;
        found.push((number, Watchdog { device: root.join("dev").join(&name), identity: identity.trim().to_owned() }));
    }
    found.sort_by_key(|(number, _)| *number);
    Ok(found.into_iter().map(|(_, watchdog)| watchdog).collect())
}

/// The machine's watchdog, waiting up to `wait` for udev to load its driver; softdog if none comes.
pub fn find_watchdog(
    root: &Path,
    wait: Duration,
    load_module: &mut dyn FnMut(&str) -> Result<(), String>,
) -> Result<Watchdog, TrialError> {
    let started = Instant::now();
    loop {
        if let Some(watchdog) = watchdogs(root)?.into_iter().next() {
            return Ok(watchdog);
        }
        if started.elapsed() >= wait {
            return software_watchdog(root, load_module);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The kernel's software watchdog, softdog, loaded with `load_module` unless it is already.
pub fn software_watchdog(
    root: &Path,
    load_module: &mut dyn FnMut(&str) -> Result<(), String>,
) -> Result<Watchdog, TrialError> {
    let find = || -> Result<Option<Watchdog>, TrialError> {
        Ok(watchdogs(root)?.into_iter().find(|watchdog| watchdog.identity == SOFTWARE_WATCHDOG_IDENTITY))
    };
    if let Some(watchdog) = find()? {
        return Ok(watchdog);
    }
    let no_watchdog = |problem: String| TrialError::NoWatchdog { path: root.join("sys/class/watchdog"), problem };
    load_module(SOFTWARE_WATCHDOG).map_err(no_watchdog)?;
    find()?.ok_or_else(|| no_watchdog("loaded none".into()))
}

impl Watchdog {
    pub fn is_software(&self) -> bool {
        self.identity == SOFTWARE_WATCHDOG_IDENTITY
    }
}

/// Loads a kernel module with modprobe.
pub fn modprobe(module: &str) -> Result<(), String> {
    let status = Command::new("modprobe").arg(module).status().map_err(|error| format!("cannot run: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("failed ({status})"))
    }
}

// The watchdog ioctls of <linux/watchdog.h>: _IOR('W', 5, int) and _IOWR('W', 6, int).
const fn ioc(direction: u32, number: u32) -> u32 {
    (direction << 30) | ((std::mem::size_of::<libc::c_int>() as u32) << 16) | ((b'W' as u32) << 8) | number
}
const WDIOC_KEEPALIVE: u32 = ioc(2, 5);
const WDIOC_SETTIMEOUT: u32 = ioc(3, 6);

/// Starts `watchdog` with a timeout of `seconds` and closes it without the magic character: the
/// driver keeps it running, and with nobody petting it, it resets the machine when the timeout runs
/// out. Returns the timeout the driver set (some round it). The device is recorded under `root`
/// for [`stop_armed_watchdog`].
pub fn arm(root: &Path, watchdog: &Watchdog, seconds: u32) -> Result<u32, TrialError> {
    let device = &watchdog.device;
    let file = fs::File::options().write(true).open(device).map_err(PathIoError::with("open", device))?;
    let mut timeout = libc::c_int::try_from(seconds).map_err(|_| TrialError::BadTimeout { seconds })?;
    // SAFETY: both ioctls take a pointer to one int, which lives across the call.
    let set = unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_SETTIMEOUT as _, &mut timeout) };
    if set != 0 {
        let source = io::Error::last_os_error();
        return Err(TrialError::SetTimeout { device: device.clone(), seconds, source });
    }
    let mut unused: libc::c_int = 0;
    // SAFETY: as above.
    if unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_KEEPALIVE as _, &mut unused) } != 0 {
        return Err(PathIoError::with("pet", device)(io::Error::last_os_error()).into());
    }
    let record = root.join(ARMED_WATCHDOG);
    if let Some(parent) = record.parent() {
        fs::create_dir_all(parent).map_err(PathIoError::with("create", parent))?;
    }
    fs::write(&record, device.as_os_str().as_bytes()).map_err(PathIoError::with("write", &record))?;
    drop(file);
    Ok(u32::try_from(timeout).unwrap_or(seconds))
}

/// Stops the watchdog [`arm`] started in this boot, with the magic close; returns it, or `None`
/// when no watchdog was armed.
pub fn stop_armed_watchdog(root: &Path) -> Result<Option<PathBuf>, TrialError> {
    let record = root.join(ARMED_WATCHDOG);
    let device = match fs::read(&record) {
        Ok(bytes) => PathBuf::from(OsString::from_vec(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(PathIoError::with("read", &record)(error).into()),
    };
    let mut file = fs::File::options().write(true).open(&device).map_err(PathIoError::with("open", &device))?;
    // The magic close: the driver stops the watchdog when the file is closed after a 'V'.
    file.write_all(b"V").map_err(PathIoError::with("write", &device))?;
    drop(file);
    fs::remove_file(&record).map_err(PathIoError::with("remove", &record))?;
    Ok(Some(device))
}

/// Runs the executables of `dir` in name order, each with its output captured; stops at the first
/// that fails or runs longer than two minutes. Returns the checks that passed. A missing `dir` holds
/// no checks.
pub fn run_health_checks(dir: &Path) -> Result<Vec<PathBuf>, TrialError> {
    let mut checks = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry.map_err(PathIoError::with("list", dir))?.path();
                let metadata = fs::metadata(&path).map_err(PathIoError::with("read", &path))?;
                if metadata.is_file() && metadata.permissions().mode() & 0o111 != 0 {
                    checks.push(path);
                }
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(PathIoError::with("list", dir)(error).into()),
    }
    checks.sort();
    for check in &checks {
        run_check(check)?;
    }
    Ok(checks)
}

fn run_check(check: &Path) -> Result<(), TrialError> {
    let failed = |problem: String| TrialError::HealthCheck { check: check.to_owned(), problem };
    let cannot_run = |error: io::Error| failed(format!("cannot be run: {error}"));
    // Its output, both streams, in a file: a pipe nobody reads while waiting could fill and stall it.
    let mut output = tempfile::tempfile().map_err(cannot_run)?;
    let mut child = Command::new(check)
        .stdin(Stdio::null())
        .stdout(output.try_clone().map_err(cannot_run)?)
        .stderr(output.try_clone().map_err(cannot_run)?)
        .spawn()
        .map_err(cannot_run)?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(cannot_run)? {
            break status;
        }
        if started.elapsed() >= HEALTH_CHECK_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("did not finish in {} s", HEALTH_CHECK_TIMEOUT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    output.seek(SeekFrom::Start(0)).and_then(|_| output.read_to_string(&mut text)).map_err(cannot_run)?;
    let text = text.trim();
    Err(failed(if text.is_empty() { format!("failed ({status})") } else { format!("failed ({status}): {text}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_comes_from_the_last_trial_argument() {
        assert_eq!(trial_timeout("ro panic=10 console=ttyS0").unwrap(), None);
        assert_eq!(trial_timeout("ro icos.boot_trial=120 quiet").unwrap(), Some(120));
        assert_eq!(trial_timeout("icos.boot_trial=5 icos.boot_trial=600").unwrap(), Some(600));
        // Another argument that starts alike is not the trial's.
        assert_eq!(trial_timeout("icos.boot_trials=1").unwrap(), None);
        let error = trial_timeout("icos.boot_trial=ten").unwrap_err().to_string();
        assert_eq!(error, "icos.boot_trial=\"ten\" on the kernel command line is not a number of seconds");
    }

    #[test]
    fn deadlines_are_checked_against_their_range() {
        assert_eq!(check_timeout(30).unwrap(), 30);
        assert_eq!(check_timeout(3600).unwrap(), 3600);
        assert_eq!(check_timeout(29).unwrap_err().to_string(), "the deadline 29 s is outside 30..=3600 s");
        assert!(check_timeout(3601).is_err());
    }

    #[test]
    fn the_ioctl_numbers_are_linux_watchdog_h() {
        // <linux/watchdog.h> on x86-64: WDIOC_KEEPALIVE 0x80045705, WDIOC_SETTIMEOUT 0xc0045706.
        assert_eq!(WDIOC_KEEPALIVE, 0x8004_5705);
        assert_eq!(WDIOC_SETTIMEOUT, 0xc004_5706);
    }

    fn fake_watchdog(root: &Path, name: &str, identity: &str) {
        let dir = root.join("sys/class/watchdog").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("identity"), format!("{identity}\n")).unwrap();
    }

    #[test]
    fn the_lowest_numbered_watchdog_is_taken_and_softdog_only_without_one() {
        let root = tempfile::tempdir().unwrap();
        let mut loaded = Vec::new();
        let mut load = |module: &str| {
            loaded.push(module.to_owned());
            Ok(())
        };
        let error = find_watchdog(root.path(), Duration::ZERO, &mut load).unwrap_err().to_string();
        assert!(error.ends_with("/sys/class/watchdog: `modprobe softdog` loaded none"), "{error}");
        assert_eq!(loaded, ["softdog"]);

        fake_watchdog(root.path(), "watchdog10", "Software Watchdog");
        fake_watchdog(root.path(), "watchdog2", "i6300ESB timer");
        let mut load = |_: &str| -> Result<(), String> { panic!("a watchdog exists: nothing to load") };
        let watchdog = find_watchdog(root.path(), Duration::ZERO, &mut load).unwrap();
        assert_eq!(watchdog, Watchdog { device: root.path().join("dev/watchdog2"), identity: "i6300ESB timer".into() });
        // softdog, when asked for, is found by its identity; loaded already, it is not loaded again.
        let softdog = software_watchdog(root.path(), &mut load).unwrap();
        assert_eq!(softdog.device, root.path().join("dev/watchdog10"));
        assert!(softdog.is_software() && !watchdog.is_software());
    }

    #[test]
    fn a_watchdog_that_is_loaded_late_is_waited_for() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().to_owned();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            fake_watchdog(&path, "watchdog0", "i6300ESB timer");
        });
        let mut load = |_: &str| -> Result<(), String> { Err("must not be needed".into()) };
        let watchdog = find_watchdog(root.path(), Duration::from_secs(10), &mut load).unwrap();
        late.join().unwrap();
        assert_eq!(watchdog.identity, "i6300ESB timer");
    }

    #[test]
    fn a_failing_modprobe_is_named() {
        let root = tempfile::tempdir().unwrap();
        let mut load = |_: &str| -> Result<(), String> { Err("failed (exit status: 1)".into()) };
        let error = find_watchdog(root.path(), Duration::ZERO, &mut load).unwrap_err().to_string();
        assert!(error.ends_with("`modprobe softdog` failed (exit status: 1)"), "{error}");
    }

    #[test]
    fn stopping_writes_the_magic_character_to_the_recorded_device() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(stop_armed_watchdog(root.path()).unwrap(), None);
        // A plain file stands in for the device: the magic close is a write of 'V'.
        let device = root.path().join("dev-watchdog0");
        fs::write(&device, b"").unwrap();
        fs::create_dir_all(root.path().join("run/icos")).unwrap();
        fs::write(root.path().join(ARMED_WATCHDOG), device.as_os_str().as_bytes()).unwrap();
        assert_eq!(stop_armed_watchdog(root.path()).unwrap(), Some(device.clone()));
        assert_eq!(fs::read(&device).unwrap(), b"V");
        assert!(!root.path().join(ARMED_WATCHDOG).exists());
    }

    #[test]
    fn arming_a_file_that_is_no_watchdog_fails_on_the_ioctl_and_records_nothing() {
        let root = tempfile::tempdir().unwrap();
        let device = root.path().join("not-a-watchdog");
        fs::write(&device, b"").unwrap();
        let watchdog = Watchdog { device: device.clone(), identity: "file".into() };
        let error = arm(root.path(), &watchdog, 120).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}: cannot set the watchdog's timeout to 120 s", device.display())),
            "{error}"
        );
        assert!(!root.path().join(ARMED_WATCHDOG).exists());
    }

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn health_checks_run_in_name_order_and_the_first_failure_is_named_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        assert!(run_health_checks(&dir.path().join("absent")).unwrap().is_empty());
        let log = dir.path().join("log");
        let checks = dir.path().join("health.d");
        fs::create_dir(&checks).unwrap();
        script(&checks, "20-second", &format!("echo second >> {}", log.display()));
        script(&checks, "10-first", &format!("echo first >> {}", log.display()));
        // Not executable: a note, not a check.
        fs::write(checks.join("README"), "exit 1").unwrap();
        let passed = run_health_checks(&checks).unwrap();
        assert_eq!(passed, [checks.join("10-first"), checks.join("20-second")]);
        assert_eq!(fs::read_to_string(&log).unwrap(), "first\nsecond\n");

        script(&checks, "15-failing", "echo 'replica not answering' >&2; exit 3");
        fs::remove_file(&log).unwrap();
        let error = run_health_checks(&checks).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "health check {} failed (exit status: 3): replica not answering",
                checks.join("15-failing").display()
            )
        );
        // The checks after the failing one did not run.
        assert_eq!(fs::read_to_string(&log).unwrap(), "first\n");
    }
}
