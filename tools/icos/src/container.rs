//! Container builds with podman. Each build gets a private, throw-away image store, so builds
//! share no state, need no daemon and leave nothing behind; the result is saved as an OCI archive,
//! or exported as a root filesystem tar and canonicalised, and that tar possibly made the one
//! layer of a reproducible OCI archive.
//!
//! The store uses the overlay driver, and a build commits one layer at the end (`--layers=false`)
//! instead of one per instruction: the vfs driver copied the whole tree for every instruction and
//! for the exported container. Measured on the GuestOS dev rootfs (2 cores): podman build, create
//! and export took 56 s with vfs and per-instruction layers, 16 s so. The exported tree is the
//! same (the canonical tar does not depend on the driver), and overlay needs what the builds have
//! anyway: root, and an image store on a file system that can hold overlay's upper directory.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::oci::{check_name, write_archive, ArchiveOptions, ImageDigest, OciError};
use crate::rootfs::{Replacement, Rootfs, RootfsError};

/// The tag of the image a build produces inside its private store.
const IMAGE: &str = "localhost/icos-build:latest";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("cannot prepare the build of {dockerfile}: {source}")]
    Prepare { dockerfile: PathBuf, source: io::Error },
    #[error("cannot start {podman}: {source}")]
    Start { podman: PathBuf, source: io::Error },
    #[error("podman {step} of {dockerfile} failed ({status}); its last output lines:\n{log}")]
    Podman { step: &'static str, dockerfile: PathBuf, status: String, log: String },
    #[error("base image {name}: {path} does not exist")]
    MissingBase { name: String, path: PathBuf },
    #[error("cannot move the result to {path}: {source}")]
    Persist { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Oci(#[from] OciError),
}

/// What to build.
pub struct ContainerBuild {
    pub podman: PathBuf,
    pub dockerfile: PathBuf,
    /// The build contexts, merged into one in this order (symbolic links resolved, as Bazel's
    /// sandbox makes every input one) before podman sees it: an OS's own files and the shared
    /// files of a feature it has. A file in two of them is refused rather than silently replaced.
    pub contexts: Vec<PathBuf>,
    /// The files of the contexts that are executable (0755), as paths under a context (as given
    /// in `contexts`): every other file is copied 0644. Declared, not read from the files, because
    /// the modes of the inputs do not survive remote execution (a REAPI worker gets every input
    /// file executable) and a checkout's depend on the umask of whoever made it.
    pub executables: Vec<PathBuf>,
    pub build_args: Vec<(String, String)>,
    /// Build arguments naming base images: NAME=PATH of an OCI archive becomes
    /// `--build-arg NAME=oci-archive:<absolute PATH>`, for `ARG NAME` + `FROM ${NAME}`.
    pub base_images: Vec<(String, PathBuf)>,
    pub source_date_epoch: u64,
}

/// What to make of the built image.
pub enum ContainerOutput<'a> {
    /// `podman save --format oci-archive`.
    OciArchive(&'a Path),
    /// The root filesystem (`podman export`), canonicalised, with the files that container
    /// engines bind-mount replaced and /etc/machine-id emptied.
    Rootfs { tar: &'a Path, manifest: Option<&'a Path>, replacements: &'a [Replacement] },
    /// The root filesystem, canonicalised as for `Rootfs`, as the one layer of an OCI archive
    /// written by [`write_archive`] with the reference name `name`, created at
    /// `source_date_epoch`. Unlike `podman save`, the same tree gives the same bytes, so the image
    /// can be pinned by digest.
    CanonicalOciArchive { archive: &'a Path, name: &'a str, replacements: &'a [Replacement] },
}

/// The hard limit on processes: podman's default ulimits exceed what some machines allow.
fn process_limit() -> Option<String> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max processes"))?;
    line.split_whitespace().nth(3).map(str::to_owned)
}

/// Copies a build context into `to` with declared modes: 0755 for directories and for the files
/// `executables` names, 0644 for other files, whatever the files' own modes (`COPY` keeps modes:
/// the determinism test found /etc/motd 0640 in an image built from a clone made under umask
/// 0027, and the remote-execution test /etc/motd 0755). Names found are removed from
/// `executables`. A file that `to` already has is an error.
fn copy_context(from: &Path, to: &Path, executables: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    let mut entries = fs::read_dir(from)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let source = entry.path();
        let target = to.join(entry.file_name());
        // Symbolic links are followed: Bazel's sandbox makes every input one.
        let metadata = fs::metadata(&source)?;
        if metadata.is_dir() {
            copy_context(&source, &target, executables)?;
        } else {
            if fs::symlink_metadata(&target).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is also in an earlier build context", source.display()),
                ));
            }
            fs::copy(&source, &target)?;
            let mode = if executables.remove(&source) { 0o755 } else { 0o644 };
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// Merges the build contexts into `to`; an executable that none of them has is an error.
fn copy_contexts(build: &ContainerBuild, to: &Path) -> io::Result<()> {
    let mut executables: BTreeSet<PathBuf> = build.executables.iter().cloned().collect();
    for source in &build.contexts {
        copy_context(source, to, &mut executables)?;
    }
    match executables.first() {
        None => Ok(()),
        Some(missing) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("the executable {} is in no build context", missing.display()),
        )),
    }
}

struct Podman<'a> {
    build: &'a ContainerBuild,
    state: &'a Path,
}

impl Podman<'_> {
    fn run(&self, step: &'static str, args: &[&str]) -> Result<(), ContainerError> {
        let state = self.state;
        let log_path = state.join(format!("{}.log", step.replace(' ', "-")));
        let log = fs::File::create(&log_path)
            .map_err(|source| ContainerError::Prepare { dockerfile: self.build.dockerfile.clone(), source })?;
        let status = Command::new(&self.build.podman)
            .arg("--root")
            .arg(state.join("storage"))
            .arg("--runroot")
            .arg(state.join("run"))
            .arg("--tmpdir")
            .arg(state.join("tmp"))
            .args(["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args)
            .env("HOME", state.join("home"))
            .env("TMPDIR", state.join("tmp"))
            .env("PODMAN_IGNORE_CGROUPSV1_WARNING", "1")
            .stdin(std::process::Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|source| ContainerError::Prepare { dockerfile: self.build.dockerfile.clone(), source })?,
            )
            .stderr(log)
            .status()
            .map_err(|source| ContainerError::Start { podman: self.build.podman.clone(), source })?;
        if status.success() {
            return Ok(());
        }
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        Err(ContainerError::Podman {
            step,
            dockerfile: self.build.dockerfile.clone(),
            status: status.to_string(),
            log: lines[lines.len().saturating_sub(30)..].join("\n"),
        })
    }
}

/// Exports the built image's root filesystem and writes it canonically to `tar`, with the files
/// that container engines bind-mount replaced and /etc/machine-id emptied.
fn export_canonical(
    podman: &Podman<'_>,
    tar: &Path,
    manifest: Option<&Path>,
    replacements: &[Replacement],
) -> Result<(), ContainerError> {
    let export = podman.state.join("export.tar");
    let export_arg = export.display().to_string();
    podman.run("create", &["create", "--name", "icos-export", IMAGE, "/bin/true"])?;
    podman.run("export", &["export", "-o", &export_arg, "icos-export"])?;
    let mut rootfs = Rootfs::read(&export, crate::rootfs::InputFormat::Tar)?;
    for replacement in replacements {
        rootfs.replace(replacement)?;
    }
    rootfs.empty_machine_id()?;
    rootfs.write_tar_file(&rootfs.whole(), Some(podman.build.source_date_epoch), tar, manifest)?;
    Ok(())
}

/// Builds `build.dockerfile` and writes `output`; returns the image's digest when icos wrote the
/// archive itself ([`ContainerOutput::CanonicalOciArchive`]). Temporary state lives next to the
/// output (image stores are large; the output's file system has room for the output already).
pub fn build(build: &ContainerBuild, output: ContainerOutput<'_>) -> Result<Option<ImageDigest>, ContainerError> {
    let prepare_error = |source| ContainerError::Prepare { dockerfile: build.dockerfile.clone(), source };
    let final_path = match &output {
        ContainerOutput::OciArchive(path) => *path,
        ContainerOutput::Rootfs { tar, .. } => *tar,
        ContainerOutput::CanonicalOciArchive { archive, name, .. } => {
            // Before the (long) build, not after it.
            check_name(name).map_err(|problem| OciError::InvalidName { name: (*name).to_owned(), problem })?;
            *archive
        }
    };
    let parent = match final_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let state = tempfile::Builder::new().prefix(".icos-podman-").tempdir_in(parent).map_err(prepare_error)?;
    let state_path = state.path().canonicalize().map_err(prepare_error)?;
    for dir in ["storage", "run", "tmp", "home"] {
        fs::create_dir_all(state_path.join(dir)).map_err(prepare_error)?;
    }
    let context = state_path.join("context");
    copy_contexts(build, &context).map_err(prepare_error)?;
    let dockerfile = state_path.join("Dockerfile");
    fs::copy(&build.dockerfile, &dockerfile).map_err(prepare_error)?;

    let mut args: Vec<String> =
        ["build", "--isolation", "chroot", "--pull=never", "--layers=false", "--ulimit", "nofile=20000:20000"]
            .map(str::to_owned)
            .to_vec();
    if let Some(limit) = process_limit() {
        args.extend(["--ulimit".to_owned(), format!("nproc={limit}:{limit}")]);
    }
    args.extend([
        "--source-date-epoch".to_owned(),
        build.source_date_epoch.to_string(),
        "--rewrite-timestamp".to_owned(),
        // For Dockerfiles that declare `ARG SOURCE_DATE_EPOCH`, so that tools run by RUN clamp
        // their timestamps to it too.
        "--build-arg".to_owned(),
        format!("SOURCE_DATE_EPOCH={}", build.source_date_epoch),
        "-f".to_owned(),
        dockerfile.display().to_string(),
        "-t".to_owned(),
        IMAGE.to_owned(),
    ]);
    for (name, value) in &build.build_args {
        args.extend(["--build-arg".to_owned(), format!("{name}={value}")]);
    }
    for (name, path) in &build.base_images {
        let absolute =
            path.canonicalize().map_err(|_| ContainerError::MissingBase { name: name.clone(), path: path.clone() })?;
        args.extend(["--build-arg".to_owned(), format!("{name}=oci-archive:{}", absolute.display())]);
    }
    args.push(context.display().to_string());
    let podman = Podman { build, state: &state_path };
    podman.run("build", &args.iter().map(String::as_str).collect::<Vec<_>>())?;

    match output {
        ContainerOutput::OciArchive(path) => {
            let archive = state_path.join("image.tar");
            let archive_arg = archive.display().to_string();
            podman.run("save", &["save", "--format", "oci-archive", "-o", &archive_arg, IMAGE])?;
            fs::rename(&archive, path).map_err(|source| ContainerError::Persist { path: path.to_owned(), source })?;
            Ok(None)
        }
        ContainerOutput::Rootfs { tar, manifest, replacements } => {
            export_canonical(&podman, tar, manifest, replacements)?;
            Ok(None)
        }
        ContainerOutput::CanonicalOciArchive { archive, name, replacements } => {
            let tar = state_path.join("rootfs.tar");
            export_canonical(&podman, &tar, None, replacements)?;
            let options = ArchiveOptions { created: build.source_date_epoch, ..ArchiveOptions::new(name) };
            Ok(Some(write_archive(&tar, archive, &options)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn copies_contexts_with_declared_modes_whatever_the_files_have() {
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("context");
        fs::create_dir_all(context.join("etc")).unwrap();
        fs::write(context.join("etc/motd"), b"hello\n").unwrap();
        fs::write(context.join("run.sh"), b"#!/bin/sh\n").unwrap();
        fs::write(dir.path().join("outside"), b"linked\n").unwrap();
        symlink(dir.path().join("outside"), context.join("link")).unwrap();
        // As a checkout made under umask 0027 has them, and a remote worker: every file executable.
        fs::set_permissions(context.join("etc/motd"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::set_permissions(context.join("run.sh"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(context.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir_all(shared.join("etc/initramfs-tools")).unwrap();
        fs::write(shared.join("etc/initramfs-tools/hook"), b"#!/bin/sh\n").unwrap();
        fs::write(shared.join("etc/initramfs-tools/conf"), b"MODULES=dep\n").unwrap();
        fs::set_permissions(shared.join("etc/initramfs-tools/conf"), fs::Permissions::from_mode(0o755)).unwrap();

        let build = |contexts: &[&Path], executables: &[PathBuf]| ContainerBuild {
            podman: PathBuf::from("podman"),
            dockerfile: PathBuf::from("Dockerfile"),
            contexts: contexts.iter().map(|path| path.to_path_buf()).collect(),
            executables: executables.to_vec(),
            build_args: Vec::new(),
            base_images: Vec::new(),
            source_date_epoch: 0,
        };
        let copy = dir.path().join("copy");
        let executables = [context.join("run.sh"), shared.join("etc/initramfs-tools/hook")];
        copy_contexts(&build(&[&context, &shared], &executables), &copy).unwrap();
        assert_eq!(mode(&copy), 0o755);
        assert_eq!(mode(&copy.join("etc")), 0o755);
        assert_eq!(mode(&copy.join("etc/motd")), 0o644);
        assert_eq!(mode(&copy.join("run.sh")), 0o755);
        assert_eq!(mode(&copy.join("etc/initramfs-tools/hook")), 0o755);
        assert_eq!(mode(&copy.join("etc/initramfs-tools/conf")), 0o644);
        assert!(!fs::symlink_metadata(copy.join("link")).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(copy.join("link")).unwrap(), b"linked\n");
        assert_eq!(mode(&copy.join("link")), 0o644);

        // An executable that no context has is named.
        let error =
            copy_contexts(&build(&[&context], &[context.join("etc/motdd")]), &dir.path().join("typo")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(
            error.to_string().contains("the executable")
                && error.to_string().contains("context/etc/motdd is in no build context"),
            "{error}"
        );

        // A context that would replace a file of an earlier one is refused.
        fs::write(shared.join("etc/motd"), b"other\n").unwrap();
        let again = dir.path().join("again");
        let error = copy_contexts(&build(&[&context, &shared], &[]), &again).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert!(error.to_string().contains("shared/etc/motd is also in an earlier build context"), "{error}");
        assert_eq!(fs::read(again.join("etc/motd")).unwrap(), b"hello\n");
    }
}
