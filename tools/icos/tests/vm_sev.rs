//! Runs `icos vm` with a kernel booted directly, with SEV-SNP and without, on this machine, which
//! has no SEV-SNP: `icos vm run` must print the SEV-SNP command line and then refuse, saying why,
//! before it copies the disk; `icos vm command` prints the command line without asking the host;
//! `--no-sev` keeps the direct boot under the normal UEFI firmware. QEMU never starts, so small
//! dummy files stand for the kernel, initrd and disk image.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::icos;
use icos::vm::split_args;

/// A kernel command line as the build writes it: no final newline, a quoted dm-mod.create table
/// with commas and spaces, and two spaces that a trim or a re-split would lose.
const CMDLINE: &str =
    "console=ttyS0  root=/dev/dm-0 dm-mod.create=\"vroot,,,ro,0 8 verity 1 /dev/vda5 /dev/vda5 4096 4096 1 1 sha256 ab cd\"";

/// The reasons this host may give for refusing an SEV-SNP guest (see icos::vm::SevHostProblem).
const REASONS: [&str; 5] = [
    "cannot open /dev/kvm read-write: ",
    "kvm_amd is not loaded: not an AMD host with KVM",
    "/sys/module/kvm_amd/parameters/sev_snp says ",
    "/sys/module/kvm_amd/parameters/sev_snp is missing: ",
    "/dev/sev is missing: the AMD PSP driver (ccp) is not loaded",
];
const REFUSAL: &str = "icos: error: this host cannot run an SEV-SNP guest: ";
const NO_SEV_HINT: &str = "--no-sev boots the same kernel, initrd and command line without SEV";

/// Dummy launch files in a temporary directory.
struct Launch {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: PathBuf,
    disk: PathBuf,
}

impl Launch {
    fn new() -> Launch {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let (kernel, initrd, cmdline, disk) = (path("vmlinuz"), path("initrd.img"), path("cmdline"), path("disk.img"));
        fs::write(&kernel, b"not a kernel").unwrap();
        fs::write(&initrd, b"not an initrd").unwrap();
        fs::write(&cmdline, CMDLINE).unwrap();
        fs::write(&disk, vec![0u8; 4096]).unwrap();
        Launch { dir, kernel, initrd, cmdline, disk }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The direct boot of these files: --kernel, --initrd and --append-file.
    fn direct_boot(&self) -> [&str; 6] {
        ["--kernel", text(&self.kernel), "--initrd", text(&self.initrd), "--append-file", text(&self.cmdline)]
    }
}

/// `first`, then `rest`, as one argument list.
fn args<'a>(first: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    first.iter().chain(rest).copied().collect()
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `icos vm ARGS` without the ICOS_QEMU_* variables of the environment the test runs in.
fn vm(args: &[&str], variables: &[(&str, &str)]) -> Output {
    let mut command: Command = icos();
    command.arg("vm").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ICOS_QEMU_") || name == "ICOS_VM_DIR" {
            command.env_remove(name);
        }
    }
    command.envs(variables.iter().copied());
    command.output().unwrap()
}

/// The QEMU argument vector that `line` (a printed command line) stands for.
fn argv_of(line: &str) -> Vec<String> {
    split_args(line).unwrap_or_else(|error| panic!("{line}: {error}"))
}

/// The argument vector of the "icos: qemu command line: " line of `stderr`.
fn printed_argv(stderr: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .find_map(|line| line.strip_prefix("icos: qemu command line: "))
        .unwrap_or_else(|| panic!("no command line in:\n{stderr}"));
    argv_of(line)
}

/// The value after the first `option` in `argv`.
fn value_of<'a>(argv: &'a [String], option: &str) -> &'a str {
    let index = argv.iter().position(|arg| arg == option).unwrap_or_else(|| panic!("no {option} in {argv:?}"));
    &argv[index + 1]
}

/// Asserts that `output` failed with this host's reason for refusing an SEV-SNP guest, after it
/// printed the SEV-SNP command line, and returns that command line.
fn assert_refused_after_printing(output: &Output, launch: &Launch) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "accepted: {stderr}");
    assert!(stderr.contains("icos: accelerator: kvm (SEV needs KVM)"), "{stderr}");
    let error = stderr.lines().find(|line| line.starts_with(REFUSAL)).unwrap_or_else(|| panic!("{stderr}"));
    let reason = &error[REFUSAL.len()..];
    assert!(REASONS.iter().any(|expected| reason.contains(expected)), "an unexpected reason: {reason}");
    assert!(error.ends_with(NO_SEV_HINT), "{error}");
    assert!(stderr.find("icos: qemu command line: ") < stderr.find(REFUSAL), "{stderr}");
    let argv = printed_argv(&stderr);
    assert_eq!(value_of(&argv, "-object"), "memory-backend-memfd,id=ram1,size=2048M,share=true");
    assert!(
        argv.contains(&"sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on".to_owned()),
        "{argv:?}"
    );
    assert_eq!(value_of(&argv, "-kernel"), text(&launch.kernel));
    assert_eq!(value_of(&argv, "-initrd"), text(&launch.initrd));
    assert_eq!(value_of(&argv, "-append"), CMDLINE);
    argv
}

#[test]
fn run_prints_the_sev_snp_command_line_and_refuses_before_copying_the_disk() {
    let launch = Launch::new();
    let work = launch.path("work");
    let run = ["run", "--sev", "sev-snp", "--sev-kernel-hashes", "--disk-image", text(&launch.disk)];
    let output = vm(&args(&run, &args(&launch.direct_boot(), &["--work-dir", text(&work)])), &[]);
    let argv = assert_refused_after_printing(&output, &launch);
    assert!(value_of(&argv, "-drive").contains(&format!("file={}/disk.img,", text(&work))), "{argv:?}");
    assert!(!work.exists(), "the work directory was made: {:?}", fs::read_dir(&work).map(|dir| dir.count()));

    // Without --work-dir, the temporary work directory goes too.
    let base = launch.path("vm-dir");
    fs::create_dir(&base).unwrap();
    let output = vm(
        &args(&["run", "--disk-image", text(&launch.disk)], &launch.direct_boot()),
        &[("ICOS_QEMU_SEV", "sev-snp"), ("ICOS_QEMU_SEV_KERNEL_HASHES", "true"), ("ICOS_VM_DIR", text(&base))],
    );
    assert_refused_after_printing(&output, &launch);
    assert_eq!(common::directory_entries(&base), Vec::<String>::new());
}

#[test]
fn host_refuses_unless_it_is_a_dry_run() {
    let launch = Launch::new();
    let state = launch.path("state");
    let log = launch.path("log/serial.log");
    let host = ["host", "--sev", "sev-snp", "--sev-kernel-hashes", "--disk", text(&launch.disk)];
    let host = args(&host, &args(&launch.direct_boot(), &["--state-dir", text(&state), "--serial-log", text(&log)]));
    assert_refused_after_printing(&vm(&host, &[]), &launch);
    assert!(!state.exists() && !launch.path("log").exists());
    let output = vm(&args(&host, &["--dry-run"]), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(value_of(&printed_argv(&stderr), "-append"), CMDLINE);
    assert!(!stderr.contains(REFUSAL), "{stderr}");
}

#[test]
fn command_prints_the_sev_snp_command_line_without_asking_the_host() {
    let launch = Launch::new();
    let output = vm(&args(&["command", "--sev", "sev-snp", "--sev-kernel-hashes"], &launch.direct_boot()), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let argv = argv_of(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(value_of(&argv, "-bios"), "/usr/share/ovmf/OVMF.amdsev.fd");
    assert!(argv.contains(&"sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on".to_owned()));
    assert_eq!(value_of(&argv, "-append"), CMDLINE);
}

/// The same direct boot without SEV: the kernel under the pflash pair of OVMF, whether SEV is
/// never asked for or dropped by --no-sev (ICOS_QEMU_NO_SEV=1 as an env file would set it).
#[test]
fn command_without_sev_boots_the_kernel_under_the_pflash_firmware() {
    let launch = Launch::new();
    let kernel = text(&launch.kernel);
    let expected = [
        "qemu-system-x86_64",
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        "max,-svm",
        "-m",
        "2048",
        "-smp",
        "2",
        "-drive",
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-drive",
        "if=pflash,format=raw,file=VARS",
        "-kernel",
        kernel,
        "-append",
        CMDLINE,
        "-drive",
        "if=none,id=disk0,format=raw,file=DISK,discard=unmap,detect-zeroes=unmap",
        "-device",
        "virtio-blk-pci,drive=disk0",
        "-netdev",
        "user,id=net0",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-device",
        "i6300esb",
        "-action",
        "watchdog=reset",
        "-display",
        "none",
        "-serial",
        "mon:stdio",
    ];
    let plain = ["command", "--accel", "tcg", "--vsock-cid", "off", "--kernel", kernel, "--append-file"];
    let plain = vm(&[&plain[..], &[text(&launch.cmdline)]].concat(), &[]);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    assert_eq!(argv_of(&String::from_utf8(plain.stdout).unwrap()), expected);

    let variables = [
        ("ICOS_QEMU_ACCEL", "tcg"),
        ("ICOS_QEMU_VSOCK_CID", "off"),
        ("ICOS_QEMU_SEV", "sev-snp"),
        ("ICOS_QEMU_SEV_KERNEL_HASHES", "true"),
        ("ICOS_QEMU_KERNEL", kernel),
        ("ICOS_QEMU_APPEND_FILE", text(&launch.cmdline)),
        ("ICOS_QEMU_NO_SEV", "1"),
    ];
    let no_sev = vm(&["command"], &variables);
    assert!(no_sev.status.success(), "{}", String::from_utf8_lossy(&no_sev.stderr));
    assert_eq!(argv_of(&String::from_utf8(no_sev.stdout).unwrap()), expected);
    // And as a flag: a --sev run that --no-sev turns into the plain one.
    let flags = ["command", "--accel", "tcg", "--vsock-cid", "off", "--sev", "sev-snp", "--kernel", kernel];
    let tail = ["--append-file", text(&launch.cmdline), "--no-sev"];
    let no_sev = vm(&[&flags[..], &tail].concat(), &[]);
    assert!(no_sev.status.success(), "{}", String::from_utf8_lossy(&no_sev.stderr));
    assert_eq!(argv_of(&String::from_utf8(no_sev.stdout).unwrap()), expected);
}

#[test]
fn an_append_file_that_cannot_be_a_command_line_is_named() {
    let launch = Launch::new();
    fs::write(&launch.cmdline, b"console=ttyS0 \xff").unwrap();
    let args = ["command", "--accel", "tcg", "--kernel", text(&launch.kernel), "--append-file", text(&launch.cmdline)];
    let output = vm(&args, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("{}: the kernel command line is not UTF-8", text(&launch.cmdline))), "{stderr}");
}
