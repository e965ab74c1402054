//! The icos-install command line on this machine: a check that fails stops it before anything is
//! written, with exit status 1 and the reason on standard output (the console, on SetupOS).
//! `icos/tests/installer.rs` runs whole installations on fake machines.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn a_machine_below_the_minimums_is_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_icos-install")))
        .arg("--config-dir")
        .arg(dir.path().join("config"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--min-cpus", "100000", "--min-memory", "1M", "--min-disk", "1M", "--no-power-action"])
        .output()
        .expect("cannot start icos-install");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("icos-install: FAILED: the machine falls short of this variant's minimums:"), "{stdout}");
    assert!(stdout.contains("at least 100000 needed"), "{stdout}");
    assert!(stdout.ends_with("icos-install: nothing was written to any disk\n"), "{stdout}");
    assert!(!dir.path().join("config").exists() && !dir.path().join("data").exists());
}
