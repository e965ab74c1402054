//! Booting icos disk images in QEMU: for developers on a terminal (`icos vm run`) and for boot
//! tests that drive the serial console from a program.
//!
//! The parts are kept apart so that each can be tested without a VM:
//! - [`config`]: what a VM is made of ([`VmConfig`]), parsed and validated;
//! - [`flags`]: the same on a command line and in `ICOS_QEMU_*` variables ([`VmFlags`]);
//! - [`host`]: the choices that depend on the machine: KVM or TCG (KVM is probed, since a
//!   `/dev/kvm` that opens does not mean that KVM runs a guest), and vsock;
//! - [`sev_host`]: whether the host can run an SEV or SEV-SNP guest, and what it lacks if not;
//! - [`qemu`]: the QEMU argument vector, a pure function of the two;
//! - [`shell`]: extra arguments split like a shell would, and the command line quoted for one;
//! - [`image`]: the private copies QEMU writes to (disk image, UEFI variables), so that a build
//!   output is never modified;
//! - [`console`]: a running QEMU whose serial console a test reads and writes ([`VmConsole`]).

pub mod config;
pub mod console;
pub mod flags;
pub mod host;
pub mod image;
pub mod qemu;
pub mod sev_host;
pub mod shell;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use config::{
    parse_memory, AccelSetting, DirectBoot, PortForward, Protocol, Sev, SevKind, Share, VmConfig, VsockSetting,
};
pub use console::VmConsole;
pub use flags::VmFlags;
pub use host::{resolve_host, Accel, HostChoices};
pub use image::{copy_sparse, copy_vars, prepare_disk_image};
pub use qemu::{qemu_argv, SerialMode};
pub use sev_host::{check_sev_host, SevHostProblem};
pub use shell::{command_line, split_args};

use crate::image_source::ImageSourceError;
use crate::io_error::PathIoError;
use crate::output::OutputError;
use crate::package::PackageError;

/// Why a VM could not be configured, prepared, started or driven.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("memory size {value:?}: {problem}")]
    BadMemory { value: String, problem: &'static str },
    #[error("accelerator {value:?}: expected auto, kvm or tcg")]
    BadAccel { value: String },
    #[error("port forward {value:?}: {problem}")]
    BadPortForward { value: String, problem: String },
    #[error("vsock CID {value:?}: {problem}")]
    BadVsock { value: String, problem: &'static str },
    #[error("share {value:?}: {problem}")]
    BadShare { value: String, problem: &'static str },
    #[error("SEV kind {value:?}: expected sev or sev-snp")]
    BadSevKind { value: String },
    #[error("extra QEMU arguments {value:?}: {problem}")]
    BadExtraArgs { value: String, problem: &'static str },
    #[error("invalid VM configuration: {problem}")]
    BadConfig { problem: String },
    #[error("{path}: QEMU arguments must be UTF-8 paths")]
    NonUtf8Path { path: PathBuf },
    #[error("SEV needs KVM, but the accelerator is TCG")]
    SevNeedsKvm,
    #[error("this host cannot run an {kind} guest: {reason}; --no-sev boots the same kernel, initrd and command line without SEV")]
    NoSevHost { kind: SevKind, reason: SevHostProblem },
    #[error("{path}: the kernel command line {problem}")]
    BadAppendFile { path: PathBuf, problem: &'static str },
    #[error("vsock CID {cid} was asked for, but this host has no /dev/vhost-vsock")]
    NoVsock { cid: u32 },
    #[error("share {tag:?}: {path} is not a directory")]
    ShareNotADirectory { tag: String, path: PathBuf },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Image(ImageSourceError),
    #[error("{path}: the package has no disk.img (members: {members})")]
    NoDiskInPackage { path: PathBuf, members: String },
    #[error("an empty argument vector: there is no program to start")]
    EmptyArgv,
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("cannot write to the serial console: {source}")]
    Send { source: io::Error },
    #[error("cannot check on {program}: {source}")]
    Wait { program: String, source: io::Error },
    #[error("timed out after {timeout:?} waiting for {pattern:?}; the last output:\n{tail}")]
    Timeout { pattern: String, timeout: Duration, tail: String },
    #[error(
        "{program} exited ({status}) while waiting for {pattern:?}; its stderr ends:\n{stderr_tail}\nthe last output:\n{tail}"
    )]
    Exited { program: String, pattern: String, status: String, stderr_tail: String, tail: String },
    #[error("{pattern:?} appeared {after:?} into a wait of {duration:?}; the output up to it:\n{tail}")]
    Appeared { pattern: String, after: Duration, duration: Duration, tail: String },
    #[error("{program} did not exit within {timeout:?}")]
    ExitTimeout { program: String, timeout: Duration },
}
