//! The QEMU argument vector: a pure function of the configuration, the host choices and the paths
//! of the private files, so that what `icos vm command` prints is exactly what runs.

use std::collections::BTreeSet;
use std::path::Path;

use super::config::{SevKind, VmConfig};
use super::host::{Accel, HostChoices};
use super::VmError;

/// The CPU model under TCG: every feature QEMU emulates but SVM. With SVM, a guest that has KVM
/// (HostOS, SetupOS) loads kvm_amd, and QEMU 11.1's multi-threaded TCG aborted on
/// `cpu_interrupt: assertion failed: (bql_locked())` in most HostOS boot tests (both of them in
/// CI at 562c4da); without SVM, neither aborted when run again. A nested VM under TCG then runs
/// under TCG too, as it does on hosts without KVM.
const TCG_CPU_MODEL: &str = "max,-svm";

/// Where the serial console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialMode<'a> {
    /// For a developer at a terminal: serial console and QEMU monitor multiplexed on stdio, as with
    /// `-nographic` (Ctrl-A C switches between them, Ctrl-A X quits).
    Terminal,
    /// For a program: the serial console alone on stdin/stdout, no monitor to trip over.
    Pipe,
    /// For a service: the serial console on stdout (the journal) and appended to a log file, no
    /// monitor.
    Logged(&'a Path),
}

/// The full argument vector, QEMU binary first, for booting `disk` (a raw image that QEMU writes
/// to, with discards punching holes), or the direct-boot kernel with `disk` attached, with UEFI
/// variables in `vars` (a private copy; not used with SEV, whose firmware is stateless). The guest
/// sees the disk as /dev/vda and one virtio network card on QEMU's user-mode network.
pub fn qemu_argv(
    config: &VmConfig,
    host: &HostChoices,
    disk: &Path,
    vars: &Path,
    serial: SerialMode<'_>,
) -> Result<Vec<String>, VmError> {
    check(config)?;
    let mut argv = vec![utf8(&config.qemu)?.to_owned()];
    let mut push = |option: &str, value: String| {
        argv.push(option.to_owned());
        argv.push(value);
    };
    let kvm = host.accel == Accel::Kvm;
    let cpu_model = match (&config.cpu_model, kvm) {
        (Some(model), _) => model.clone(),
        (None, true) => "host".to_owned(),
        (None, false) => TCG_CPU_MODEL.to_owned(),
    };
    let mut machine = "q35".to_owned();
    if let Some(sev) = &config.sev {
        if !kvm {
            return Err(VmError::SevNeedsKvm);
        }
        machine.push_str(",confidential-guest-support=sev0");
        if sev.kind == SevKind::SevSnp {
            machine.push_str(",memory-backend=ram1");
        }
    }
    push("-machine", machine);
    let accel = match host.accel {
        Accel::Tcg if config.tcg_single_thread => "tcg,thread=single".to_owned(),
        accel => accel.to_string(),
    };
    push("-accel", accel);
    push("-cpu", cpu_model);
    push("-m", config.memory_mib.to_string());
    push("-smp", config.cpus.to_string());
    // Virtio devices of an encrypted guest must use the DMA API (bounce buffers in shared memory),
    // which Linux requires them to announce with VIRTIO_F_ACCESS_PLATFORM.
    let virtio = if config.sev.is_some() { ",disable-legacy=on,iommu_platform=on" } else { "" };
    match &config.sev {
        Some(sev) => {
            let object = match sev.kind {
                SevKind::Sev => "sev-guest",
                SevKind::SevSnp => {
                    // SNP guests need their RAM in a memfd shared with the kernel.
                    push("-object", format!("memory-backend-memfd,id=ram1,size={}M,share=true", config.memory_mib));
                    "sev-snp-guest"
                }
            };
            let hashes = if sev.kernel_hashes { ",kernel-hashes=on" } else { "" };
            push(
                "-object",
                format!("{object},id=sev0,cbitpos={},reduced-phys-bits={}{hashes}", sev.cbitpos, sev.reduced_phys_bits),
            );
            push("-bios", utf8(&sev.firmware)?.to_owned());
        }
        None => {
            push("-drive", format!("if=pflash,format=raw,readonly=on,file={}", path_value(&config.ovmf_code)?));
            push("-drive", format!("if=pflash,format=raw,file={}", path_value(vars)?));
        }
    }
    // QEMU hands these to either firmware over fw_cfg; the disk stays attached for the root.
    if let Some(boot) = &config.direct_boot {
        push("-kernel", utf8(&boot.kernel)?.to_owned());
        if let Some(initrd) = &boot.initrd {
            push("-initrd", utf8(initrd)?.to_owned());
        }
        if let Some(append) = &boot.append {
            push("-append", append.clone());
        }
    }
    push("-drive", format!("if=none,id=disk0,format=raw,file={},discard=unmap,detect-zeroes=unmap", path_value(disk)?));
    push("-device", format!("virtio-blk-pci,drive=disk0{virtio}"));
    if let Some(config_disk) = &config.config_disk {
        push("-drive", format!("if=none,id=config0,format=raw,readonly=on,file={}", path_value(config_disk)?));
        push("-device", format!("virtio-blk-pci,drive=config0{virtio}"));
    }
    let mut netdev = "user,id=net0".to_owned();
    for forward in &config.port_forwards {
        netdev.push_str(&format!(",hostfwd={}::{}-:{}", forward.protocol, forward.host_port, forward.guest_port));
    }
    push("-netdev", netdev);
    push("-device", format!("virtio-net-pci,netdev=net0{virtio}"));
    if let Some(cid) = host.vsock_cid {
        push("-device", format!("vhost-vsock-pci,guest-cid={cid}{virtio}"));
    }
    for (index, share) in config.shares.iter().enumerate() {
        let path = path_value(&share.path)?;
        let tag = &share.tag;
        if config.sev.is_some() {
            // -virtfs cannot set device properties, so the two halves are spelled out.
            push("-fsdev", format!("local,id=fs{index},path={path},security_model=none,readonly=on"));
            push("-device", format!("virtio-9p-pci,fsdev=fs{index},mount_tag={tag}{virtio}"));
        } else {
            push("-virtfs", format!("local,path={path},mount_tag={tag},security_model=none,readonly=on"));
        }
    }
    // A watchdog for the guest (an upgrade's trial boot arms it); when it runs out, QEMU resets the
    // machine, as a server's board would (QEMU's documentation of -action: watchdog=reset).
    push("-device", "i6300esb".to_owned());
    push("-action", "watchdog=reset".to_owned());
    push("-display", "none".to_owned());
    match serial {
        SerialMode::Terminal => push("-serial", "mon:stdio".to_owned()),
        SerialMode::Pipe => {
            push("-serial", "stdio".to_owned());
            push("-monitor", "none".to_owned());
        }
        SerialMode::Logged(log) => {
            // signal=off: a service gets no terminal, and ^C on stdin must not stop the VM.
            push("-chardev", format!("stdio,id=serial0,signal=off,logfile={},logappend=on", path_value(log)?));
            push("-serial", "chardev:serial0".to_owned());
            push("-monitor", "none".to_owned());
        }
    }
    argv.extend(config.extra_args.iter().cloned());
    Ok(argv)
}

/// The KVM probe: OVMF alone under KVM, with nothing attached that could fail for another reason.
pub(super) fn kvm_probe_argv(config: &VmConfig, vars: &Path) -> Result<Vec<String>, VmError> {
    let mut argv: Vec<String> = vec![utf8(&config.qemu)?.to_owned()];
    argv.extend(
        ["-nodefaults", "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256"]
            .into_iter()
            .chain(["-display", "none", "-serial", "none", "-monitor", "none"])
            .map(str::to_owned),
    );
    argv.push("-drive".to_owned());
    argv.push(format!("if=pflash,format=raw,readonly=on,file={}", path_value(&config.ovmf_code)?));
    argv.push("-drive".to_owned());
    argv.push(format!("if=pflash,format=raw,file={}", path_value(vars)?));
    Ok(argv)
}

/// Rejects what QEMU would reject less clearly, or not at all.
fn check(config: &VmConfig) -> Result<(), VmError> {
    let bad = |problem: String| Err(VmError::BadConfig { problem });
    if config.memory_mib == 0 {
        return bad("a VM needs some memory".into());
    }
    if config.cpus == 0 {
        return bad("a VM needs at least one CPU".into());
    }
    let mut host_ports = BTreeSet::new();
    for forward in &config.port_forwards {
        if !host_ports.insert((forward.protocol.to_string(), forward.host_port)) {
            return bad(format!("host port {}:{} is forwarded twice", forward.protocol, forward.host_port));
        }
    }
    let mut tags = BTreeSet::new();
    for share in &config.shares {
        if !tags.insert(share.tag.as_str()) {
            return bad(format!("the share tag {:?} is used twice", share.tag));
        }
    }
    // QEMU would start and measure only the firmware: a guest whose attestation lacks the kernel
    // that was asked for.
    if config.sev.as_ref().is_some_and(|sev| sev.kernel_hashes) && config.direct_boot.is_none() {
        return bad("SEV kernel hashes need a kernel booted directly (--kernel)".into());
    }
    Ok(())
}

fn utf8(path: &Path) -> Result<&str, VmError> {
    path.to_str().ok_or_else(|| VmError::NonUtf8Path { path: path.to_owned() })
}

/// `path` as the value in a QEMU `key=value,...` option, where a comma is written twice.
fn path_value(path: &Path) -> Result<String, VmError> {
    Ok(utf8(path)?.replace(',', ",,"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::config::{DirectBoot, PortForward, Sev, Share};
    use crate::vm::shell::split_args;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    const CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";

    fn host(accel: Accel) -> HostChoices {
        HostChoices { accel, accel_reason: String::new(), vsock_cid: None }
    }

    fn build(config: &VmConfig, host: &HostChoices, serial: SerialMode<'_>) -> Result<Vec<String>, VmError> {
        qemu_argv(config, host, Path::new("/w/disk.img"), Path::new("/w/vars.fd"), serial)
    }

    /// `argv` from the first `option` on.
    fn tail_from<'a>(argv: &'a [String], option: &str) -> &'a [String] {
        let start = argv.iter().position(|arg| arg == option).unwrap();
        &argv[start..]
    }

    #[test]
    fn tcg_default() {
        let argv = build(&VmConfig::default(), &host(Accel::Tcg), SerialMode::Pipe).unwrap();
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
            "if=pflash,format=raw,file=/w/vars.fd",
            "-drive",
            "if=none,id=disk0,format=raw,file=/w/disk.img,discard=unmap,detect-zeroes=unmap",
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
            "stdio",
            "-monitor",
            "none",
        ];
        assert_eq!(argv, expected);
    }

    #[test]
    fn tcg_can_run_in_one_thread() {
        let config = VmConfig { tcg_single_thread: true, ..VmConfig::default() };
        let argv = build(&config, &host(Accel::Tcg), SerialMode::Pipe).unwrap();
        assert_eq!(tail_from(&argv, "-accel")[..2], ["-accel", "tcg,thread=single"]);
        // KVM has no such threads: the setting does not apply.
        let argv = build(&config, &host(Accel::Kvm), SerialMode::Pipe).unwrap();
        assert_eq!(tail_from(&argv, "-accel")[..2], ["-accel", "kvm"]);
    }

    #[test]
    fn a_config_disk_follows_the_disk_read_only() {
        let config = VmConfig { config_disk: Some("/var/lib/icos/guestos/config.img".into()), ..VmConfig::default() };
        let argv = build(&config, &host(Accel::Tcg), SerialMode::Pipe).unwrap();
        assert_eq!(
            &tail_from(&argv, "-drive")[6..12],
            [
                "-device",
                "virtio-blk-pci,drive=disk0",
                "-drive",
                "if=none,id=config0,format=raw,readonly=on,file=/var/lib/icos/guestos/config.img",
                "-device",
                "virtio-blk-pci,drive=config0",
            ]
        );
    }

    #[test]
    fn a_service_logs_the_serial_console_to_stdout_and_a_file() {
        // QEMU's documentation of -chardev stdio: logfile= and logappend= copy the output to a file,
        // signal=off keeps ^C from ending QEMU.
        let argv = build(
            &VmConfig::default(),
            &host(Accel::Tcg),
            SerialMode::Logged(Path::new("/var/log/guest,os/serial.log")),
        )
        .unwrap();
        assert_eq!(
            tail_from(&argv, "-chardev"),
            [
                "-chardev",
                "stdio,id=serial0,signal=off,logfile=/var/log/guest,,os/serial.log,logappend=on",
                "-serial",
                "chardev:serial0",
                "-monitor",
                "none"
            ]
        );
    }

    #[test]
    fn kvm_terminal_memory_cpus_and_model() {
        let config = VmConfig { memory_mib: 4096, cpus: 4, ..VmConfig::default() };
        let argv = build(&config, &host(Accel::Kvm), SerialMode::Terminal).unwrap();
        assert_eq!(argv[1..11], ["-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "4096", "-smp", "4"]);
        assert_eq!(argv[argv.len() - 4..], ["-display", "none", "-serial", "mon:stdio"]);
        let config = VmConfig { cpu_model: Some("EPYC-v4".into()), ..VmConfig::default() };
        let argv = build(&config, &host(Accel::Kvm), SerialMode::Terminal).unwrap();
        assert_eq!(argv[5..7], ["-cpu", "EPYC-v4"]);
    }

    #[test]
    fn port_forwards_vsock_and_shares() {
        let config = VmConfig {
            port_forwards: vec!["tcp:2222:22".parse().unwrap(), "udp:5353:53".parse().unwrap()],
            shares: vec![Share::new("src", "/work/main").unwrap(), Share::new("out", "/var/a,b").unwrap()],
            ..VmConfig::default()
        };
        let host = HostChoices { vsock_cid: Some(3), ..host(Accel::Tcg) };
        let argv = build(&config, &host, SerialMode::Pipe).unwrap();
        assert_eq!(
            tail_from(&argv, "-netdev")[..16],
            [
                "-netdev",
                "user,id=net0,hostfwd=tcp::2222-:22,hostfwd=udp::5353-:53",
                "-device",
                "virtio-net-pci,netdev=net0",
                "-device",
                "vhost-vsock-pci,guest-cid=3",
                "-virtfs",
                "local,path=/work/main,mount_tag=src,security_model=none,readonly=on",
                "-virtfs",
                "local,path=/var/a,,b,mount_tag=out,security_model=none,readonly=on",
                "-device",
                "i6300esb",
                "-action",
                "watchdog=reset",
                "-display",
                "none",
            ]
        );
        let forward: PortForward = "tcp:2222:22".parse().unwrap();
        let twice = VmConfig { port_forwards: vec![forward; 2], ..config.clone() };
        let error = build(&twice, &host, SerialMode::Pipe).unwrap_err().to_string();
        assert!(error.contains("host port tcp:2222 is forwarded twice"), "{error}");
        let twice = VmConfig { shares: vec![config.shares[0].clone(); 2], ..config };
        let error = build(&twice, &host, SerialMode::Pipe).unwrap_err().to_string();
        assert!(error.contains("share tag \"src\" is used twice"), "{error}");
    }

    #[test]
    fn extra_args_come_last_with_their_quoting() {
        let config = VmConfig {
            extra_args: split_args(r#"-d int -D '/tmp/qemu log.txt' -append "console=ttyS0 quiet""#).unwrap(),
            ..VmConfig::default()
        };
        let argv = build(&config, &host(Accel::Tcg), SerialMode::Terminal).unwrap();
        assert_eq!(
            tail_from(&argv, "-serial"),
            ["-serial", "mon:stdio", "-d", "int", "-D", "/tmp/qemu log.txt", "-append", "console=ttyS0 quiet"]
        );
    }

    fn direct_boot() -> DirectBoot {
        DirectBoot {
            kernel: "/boot/vmlinuz".into(),
            initrd: Some("/boot/initrd.img".into()),
            append: Some("console=ttyS0 root=/dev/vda5".into()),
        }
    }

    fn sev(kind: SevKind) -> VmConfig {
        let sev = Sev { kernel_hashes: true, ..Sev::new(kind) };
        VmConfig { sev: Some(sev), direct_boot: Some(direct_boot()), ..VmConfig::default() }
    }

    // The SEV vectors follow QEMU's documentation of AMD memory encryption
    // (docs/system/i386/amd-memory-encryption.rst) option by option, not this code:
    // - SEV-SNP: `-machine q35,confidential-guest-support=sev0,memory-backend=ram1`,
    //   `-object memory-backend-memfd,id=ram1,size=...,share=true` (SNP guest memory must be a
    //   shareable memfd), `-object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1`
    //   (cbitpos 51 and one reduced physical address bit on EPYC), and `kernel-hashes=on` with
    //   `-kernel`/`-initrd`/`-append` so that the launch digest covers them;
    // - SEV: the same with `-object sev-guest,...` and no memory backend;
    // - the stateless AmdSev firmware is given with `-bios` instead of the pflash pair;
    // - virtio devices need `iommu_platform=on` (and `disable-legacy=on`) so that the guest's
    //   drivers use the DMA API and bounce through shared memory (QEMU's virtio documentation of
    //   VIRTIO_F_ACCESS_PLATFORM for confidential guests);
    // - like every VM, the guest has QEMU's emulated i6300esb watchdog, and `-action
    //   watchdog=reset` (qemu-options.hx, `-action`) resets it when the watchdog runs out.
    #[test]
    fn sev_snp_exact() {
        let argv = build(&sev(SevKind::SevSnp), &host(Accel::Kvm), SerialMode::Pipe).unwrap();
        let expected = [
            "qemu-system-x86_64",
            "-machine",
            "q35,confidential-guest-support=sev0,memory-backend=ram1",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "2048",
            "-smp",
            "2",
            "-object",
            "memory-backend-memfd,id=ram1,size=2048M,share=true",
            "-object",
            "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on",
            "-bios",
            "/usr/share/ovmf/OVMF.amdsev.fd",
            "-kernel",
            "/boot/vmlinuz",
            "-initrd",
            "/boot/initrd.img",
            "-append",
            "console=ttyS0 root=/dev/vda5",
            "-drive",
            "if=none,id=disk0,format=raw,file=/w/disk.img,discard=unmap,detect-zeroes=unmap",
            "-device",
            "virtio-blk-pci,drive=disk0,disable-legacy=on,iommu_platform=on",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=on",
            "-device",
            "i6300esb",
            "-action",
            "watchdog=reset",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
        ];
        assert_eq!(argv, expected);
    }

    #[test]
    fn sev_exact() {
        let mut config = sev(SevKind::Sev);
        if let Some(sev) = &mut config.sev {
            sev.cbitpos = 47;
            sev.firmware = "/fw/OVMF.amdsev.fd".into();
        }
        config.shares = vec![Share::new("src", "/work").unwrap()];
        let host = HostChoices { vsock_cid: Some(9), ..host(Accel::Kvm) };
        let argv = build(&config, &host, SerialMode::Pipe).unwrap();
        let expected = [
            "qemu-system-x86_64",
            "-machine",
            "q35,confidential-guest-support=sev0",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "2048",
            "-smp",
            "2",
            "-object",
            "sev-guest,id=sev0,cbitpos=47,reduced-phys-bits=1,kernel-hashes=on",
            "-bios",
            "/fw/OVMF.amdsev.fd",
            "-kernel",
            "/boot/vmlinuz",
            "-initrd",
            "/boot/initrd.img",
            "-append",
            "console=ttyS0 root=/dev/vda5",
            "-drive",
            "if=none,id=disk0,format=raw,file=/w/disk.img,discard=unmap,detect-zeroes=unmap",
            "-device",
            "virtio-blk-pci,drive=disk0,disable-legacy=on,iommu_platform=on",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=on",
            "-device",
            "vhost-vsock-pci,guest-cid=9,disable-legacy=on,iommu_platform=on",
            "-fsdev",
            "local,id=fs0,path=/work,security_model=none,readonly=on",
            "-device",
            "virtio-9p-pci,fsdev=fs0,mount_tag=src,disable-legacy=on,iommu_platform=on",
            "-device",
            "i6300esb",
            "-action",
            "watchdog=reset",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
        ];
        assert_eq!(argv, expected);
    }

    #[test]
    fn sev_is_refused_without_kvm_or_without_a_kernel_to_measure() {
        let error = build(&sev(SevKind::SevSnp), &host(Accel::Tcg), SerialMode::Pipe).unwrap_err();
        assert!(matches!(error, VmError::SevNeedsKvm), "{error}");
        let config = VmConfig { direct_boot: None, ..sev(SevKind::Sev) };
        let error = build(&config, &host(Accel::Kvm), SerialMode::Pipe).unwrap_err().to_string();
        assert_eq!(error, "invalid VM configuration: SEV kernel hashes need a kernel booted directly (--kernel)");
        let plain = VmConfig { sev: Some(Sev::new(SevKind::Sev)), ..VmConfig::default() };
        let argv = build(&plain, &host(Accel::Kvm), SerialMode::Pipe).unwrap();
        assert_eq!(
            tail_from(&argv, "-object")[..4],
            ["-object", "sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1", "-bios", "/usr/share/ovmf/OVMF.amdsev.fd"]
        );
        assert!(!argv.iter().any(|arg| arg.contains("pflash") || arg == "-kernel"));
    }

    /// Without SEV, OVMF from the pflash pair boots the kernel QEMU gives it (QEMU's fw_cfg and
    /// OVMF's QemuKernelLoaderFsDxe), under whatever accelerator; the disk stays attached.
    #[test]
    fn direct_boot_without_sev() {
        let config = VmConfig { direct_boot: Some(direct_boot()), ..VmConfig::default() };
        let argv = build(&config, &host(Accel::Tcg), SerialMode::Pipe).unwrap();
        assert_eq!(tail_from(&argv, "-accel")[..2], ["-accel", "tcg"]);
        assert_eq!(
            tail_from(&argv, "-drive")[..12],
            [
                "-drive",
                "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                "-drive",
                "if=pflash,format=raw,file=/w/vars.fd",
                "-kernel",
                "/boot/vmlinuz",
                "-initrd",
                "/boot/initrd.img",
                "-append",
                "console=ttyS0 root=/dev/vda5",
                "-drive",
                "if=none,id=disk0,format=raw,file=/w/disk.img,discard=unmap,detect-zeroes=unmap",
            ]
        );
        assert!(!argv.iter().any(|arg| arg.contains("sev") || arg == "-bios" || arg.contains("iommu_platform")));
        // A kernel alone, and a command line with a final newline, which stays.
        let bare = DirectBoot { initrd: None, append: Some("console=ttyS0\n".into()), ..direct_boot() };
        let config = VmConfig { direct_boot: Some(bare), ..VmConfig::default() };
        let argv = build(&config, &host(Accel::Kvm), SerialMode::Pipe).unwrap();
        assert_eq!(
            tail_from(&argv, "-kernel")[..5],
            ["-kernel", "/boot/vmlinuz", "-append", "console=ttyS0\n", "-drive"]
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        let error = build(&VmConfig { cpus: 0, ..VmConfig::default() }, &host(Accel::Tcg), SerialMode::Pipe);
        assert!(error.unwrap_err().to_string().contains("at least one CPU"));
        let error = build(&VmConfig { memory_mib: 0, ..VmConfig::default() }, &host(Accel::Tcg), SerialMode::Pipe);
        assert!(error.unwrap_err().to_string().contains("needs some memory"));
        let bad_path = Path::new(OsStr::from_bytes(b"/w/\xffdisk.img"));
        let error = qemu_argv(&VmConfig::default(), &host(Accel::Tcg), bad_path, Path::new("/v"), SerialMode::Pipe);
        assert!(error.unwrap_err().to_string().contains("must be UTF-8 paths"));
    }

    #[test]
    fn probe_runs_ovmf_alone_under_kvm() {
        let argv = kvm_probe_argv(&VmConfig::default(), Path::new("/t/vars.fd")).unwrap();
        assert_eq!(
            argv.join(" "),
            format!(
                "qemu-system-x86_64 -nodefaults -machine q35 -accel kvm -cpu host -m 256 -display none -serial none \
                 -monitor none -drive if=pflash,format=raw,readonly=on,file={CODE} -drive if=pflash,format=raw,file=/t/vars.fd"
            )
        );
    }
}
