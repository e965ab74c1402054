//! Building a base image from its inputs, and checking it against its lock.
//!
//! 1. mmdebstrap bootstraps the suite from the mirror (`--variant=apt`, timestamps at
//!    SOURCE_DATE_EPOCH, without the host's `/etc/resolv.conf` and `/etc/hostname`), as a plain
//!    tar;
//! 2. that tar, canonicalised, becomes the one layer of the bootstrap image `<os>-bootstrap`
//!    ([`write_archive`]);
//! 3. podman builds Dockerfile.base FROM it with `PACKAGES` = the listed packages as
//!    `name=version` (versions from the lock), and the result is written as the canonical OCI
//!    archive `<os>-base-<variant>`, whose digest is the pin;
//! 4. the packages dpkg says are installed in that image must be exactly the lock.
//!
//! The lists name only what Dockerfile.base asks for; apt chooses the rest, and the bootstrap
//! brings its own. Step 4 is what makes the lock cover all of it: when the archive has moved on,
//! the build fails and says which packages differ, instead of silently making another image.
//! Relocking builds once with unversioned names, takes the lock from that image, and then builds
//! again exactly as a locked build does, so that the pin is always the digest of a locked build.
//!
//! The mirror decides where packages come from, not what the image holds: the image's
//! `/etc/apt/sources.list` names [`DEFAULT_MIRROR`] whatever mirror built it, so a build from a
//! snapshot of the archive gives the same digest as one from the live archive in that state.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::dpkg::installed_in_archive;
use super::lock::{
    diff, merge_package_lists, pinned_packages, read_lock, read_package_list, write_lock, Lock, Requested,
};
use super::{BaseImageError, Mismatch, Variant};
use crate::container::{self, ContainerBuild, ContainerOutput};
use crate::oci::{check_name, format_pin, parse_pin, write_archive, ArchiveOptions, ImageDigest, OciError, Pin};
use crate::output::write_atomically;
use crate::rootfs::{InputFormat, Replacement, Rootfs};

/// The Debian archive, as apt sources in the image name it.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
pub const DEFAULT_SUITE: &str = "trixie";
/// The timestamps of base images: any fixed time works, as long as every build uses the same.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_700_000_000;

/// Whether the lock is an input or an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Install the locked versions and fail unless the image holds exactly the lock.
    Locked,
    /// Install the newest versions, make the lock from them, then build as `Locked` does.
    Relock,
}

/// The inputs of a base image build.
#[derive(Debug, Clone)]
pub struct BaseImageSpec {
    /// The OS's name (`guestos`): images are `<os>-bootstrap` and `<os>-base-<variant>`.
    pub os: String,
    /// The OS's context directory: `packages.common`, `packages.<variant>`,
    /// `packages.<variant>.lock` and the pin `docker-base.<variant>`.
    pub context: PathBuf,
    pub variant: Variant,
    pub dockerfile: PathBuf,
    /// The Debian suite to bootstrap (`trixie`).
    pub suite: String,
    /// The Debian archive to bootstrap and install from: [`DEFAULT_MIRROR`], or a snapshot of it
    /// (`http://snapshot.debian.org/archive/debian/<time>`) to rebuild an older lock.
    pub mirror: String,
    pub source_date_epoch: u64,
    pub podman: PathBuf,
    pub mmdebstrap: PathBuf,
    /// Where the bootstrap, the image archive and podman's state go (created if missing). The
    /// image archive stays there; everything else is removed once it is used.
    pub work_dir: PathBuf,
    pub mode: Mode,
}

/// A base image that matches its lock.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `<os>-base-<variant>`.
    pub name: String,
    /// Its OCI archive, in the work directory.
    pub archive: PathBuf,
    pub image: ImageDigest,
    /// The packages installed in it: the lock it was built from (or, relocking, made).
    pub lock: Lock,
}

impl BuiltImage {
    /// The pin that names this image.
    pub fn pin(&self) -> Pin {
        Pin { name: self.name.clone(), digest: self.image.digest.clone() }
    }
}

impl BaseImageSpec {
    /// `<os>-base-<variant>`.
    pub fn image_name(&self) -> String {
        format!("{}-base-{}", self.os, self.variant)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.context.join(format!("packages.{}.lock", self.variant))
    }

    pub fn pin_path(&self) -> PathBuf {
        self.context.join(format!("docker-base.{}", self.variant))
    }

    /// The packages of `packages.common` and then `packages.<variant>`. A variant without extra
    /// packages needs no list of its own.
    fn requested(&self) -> Result<Vec<Requested>, BaseImageError> {
        let common = read_package_list(&self.context.join("packages.common"))?;
        let variant_path = self.context.join(format!("packages.{}", self.variant));
        let extra = match read_package_list(&variant_path) {
            Err(BaseImageError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => Vec::new(),
            other => other?,
        };
        merge_package_lists(vec![common, extra])
    }

    fn work_file(&self, suffix: &str) -> PathBuf {
        self.work_dir.join(format!("{}{suffix}", self.image_name()))
    }
}

/// What the header of a base image's lock names as its generator.
pub const GENERATOR: &str = "ci/base-images/rebuild (icos base-image build --relock)";

/// The ways out when the archive no longer serves the locked versions.
const REPIN: &str = "re-pin with `ci/container/container-run.sh ci/base-images/rebuild`, or build from a snapshot \
    of the archive state the lock was made from: \
    ICOS_DEBIAN_MIRROR=http://snapshot.debian.org/archive/debian/<YYYYMMDDTHHMMSSZ>";

/// What to do when the built packages are not the lock.
fn mismatch_hint(spec: &BaseImageSpec) -> String {
    match spec.mode {
        Mode::Locked => format!("The Debian archive at {} no longer serves the locked versions: {REPIN}.", spec.mirror),
        Mode::Relock => format!(
            "The Debian archive at {} changed between the two builds of the relock: run ci/base-images/rebuild again.",
            spec.mirror
        ),
    }
}

/// Builds the base image `spec` describes; see the module documentation.
pub fn build(spec: &BaseImageSpec) -> Result<BuiltImage, BaseImageError> {
    let name = spec.image_name();
    let bootstrap_name = format!("{}-bootstrap", spec.os);
    for image in [&name, &bootstrap_name] {
        check_name(image).map_err(|problem| OciError::InvalidName { name: image.clone(), problem })?;
    }
    // Every input is read before the (long) build, so that a typo fails at once.
    let requested = spec.requested()?;
    let locked = match spec.mode {
        Mode::Locked => {
            let lock = read_lock(&spec.lock_path())?;
            pinned_packages(&requested, &lock, &spec.lock_path())?;
            Some(lock)
        }
        Mode::Relock => None,
    };
    fs::create_dir_all(&spec.work_dir).map_err(write_error(&spec.work_dir))?;

    let bootstrap = spec.work_file(".bootstrap.oci.tar");
    bootstrap_image(spec, &bootstrap_name, &bootstrap)?;
    let lock = match locked {
        Some(lock) => lock,
        None => {
            let archive = spec.work_file(".unlocked.oci.tar");
            let names: Vec<String> = requested.iter().map(|package| package.name.clone()).collect();
            build_image(spec, &bootstrap, &names, &archive)?;
            let lock = installed_in_archive(&archive)?;
            remove(&archive)?;
            lock
        }
    };
    let archive = spec.work_file(".oci.tar");
    let packages = pinned_packages(&requested, &lock, &spec.lock_path())?;
    // apt fails when the archive no longer has a locked version of a listed package.
    let image = build_image(spec, &bootstrap, &packages, &archive).map_err(|error| match (spec.mode, error) {
        (Mode::Locked, BaseImageError::Container { source, .. }) => {
            let hint = format!(
                "\nIf apt did not find a locked version, the Debian archive at {} no longer serves it: {REPIN}.",
                spec.mirror
            );
            BaseImageError::Container { source, hint }
        }
        (_, error) => error,
    })?;
    remove(&bootstrap)?;
    let installed = installed_in_archive(&archive)?;
    let differences = diff(&lock, &installed);
    if !differences.is_empty() {
        return Err(BaseImageError::Mismatch(Box::new(Mismatch {
            image: name,
            lock: spec.lock_path(),
            differences,
            hint: mismatch_hint(spec),
        })));
    }
    Ok(BuiltImage { name, archive, image, lock })
}

/// What failing to create, write or remove `path` is.
fn write_error(path: &Path) -> impl FnOnce(io::Error) -> BaseImageError {
    let path = path.to_owned();
    move |source| BaseImageError::Write { path, source }
}

fn remove(path: &Path) -> Result<(), BaseImageError> {
    fs::remove_file(path).map_err(write_error(path))
}

/// mmdebstrap's tar `tar`, canonicalised through the file `canonical`, as the single-layer OCI
/// archive `archive` of image `name`; both tars are removed.
pub(crate) fn archive_bootstrap(
    tar: &Path,
    canonical: &Path,
    archive: &Path,
    name: &str,
    source_date_epoch: u64,
) -> Result<ImageDigest, BaseImageError> {
    let rootfs = Rootfs::read(tar, InputFormat::Tar)?;
    rootfs.write_tar_file(&rootfs.whole(), Some(source_date_epoch), canonical, None)?;
    drop(rootfs);
    remove(tar)?;
    let options = ArchiveOptions { created: source_date_epoch, ..ArchiveOptions::new(name) };
    let image = write_archive(canonical, archive, &options)?;
    remove(canonical)?;
    Ok(image)
}

/// The last lines of the log file `path`, for an error message.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Steps 1 and 2: mmdebstrap's tar, canonicalised, as the OCI archive `archive` of image `name`.
fn bootstrap_image(spec: &BaseImageSpec, name: &str, archive: &Path) -> Result<(), BaseImageError> {
    let tar = spec.work_file(".bootstrap.tar");
    let log_path = spec.work_file(".mmdebstrap.log");
    let log = File::create(&log_path).map_err(write_error(&log_path))?;
    let status = Command::new(&spec.mmdebstrap)
        .args(["--mode=root", "--variant=apt", "--format=tar", "--quiet"])
        .arg("--aptopt=Acquire::Check-Valid-Until \"false\"")
        // mmdebstrap copies these two from the host (for apt's network access) and leaves them;
        // podman provides its own while it builds.
        .arg("--customize-hook=rm -f \"$1/etc/resolv.conf\" \"$1/etc/hostname\"")
        .arg(&spec.suite)
        .arg(&tar)
        .arg(&spec.mirror)
        .env("SOURCE_DATE_EPOCH", spec.source_date_epoch.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(write_error(&log_path))?)
        .stderr(log)
        .status()
        .map_err(|source| BaseImageError::Start { program: spec.mmdebstrap.clone(), source })?;
    if !status.success() {
        // mmdebstrap may leave a partial tar behind; it is of no use.
        let _ = fs::remove_file(&tar);
        return Err(BaseImageError::Bootstrap {
            suite: spec.suite.clone(),
            mirror: spec.mirror.clone(),
            status: status.to_string(),
            log: log_tail(&log_path),
        });
    }
    archive_bootstrap(&tar, &spec.work_file(".bootstrap.rootfs.tar"), archive, name, spec.source_date_epoch)?;
    remove(&log_path)
}

/// Step 3: Dockerfile.base FROM `bootstrap`, installing `packages`, as the canonical OCI archive
/// `archive`.
fn build_image(
    spec: &BaseImageSpec,
    bootstrap: &Path,
    packages: &[String],
    archive: &Path,
) -> Result<ImageDigest, BaseImageError> {
    let name = spec.image_name();
    // Dockerfile.base copies nothing: an empty context keeps the image a function of its inputs.
    let context = spec.work_file(".context");
    let sources = spec.work_file(".sources.list");
    fs::create_dir_all(&context).map_err(write_error(&context))?;
    fs::write(&sources, format!("deb {DEFAULT_MIRROR} {} main\n", spec.suite)).map_err(write_error(&sources))?;
    let build = ContainerBuild {
        podman: spec.podman.clone(),
        dockerfile: spec.dockerfile.clone(),
        contexts: vec![context.clone()],
        executables: Vec::new(),
        build_args: vec![("PACKAGES".to_owned(), packages.join(" "))],
        base_images: vec![("BOOTSTRAP".to_owned(), bootstrap.to_owned())],
        source_date_epoch: spec.source_date_epoch,
    };
    let replacements = [Replacement { dest: b"etc/apt/sources.list".to_vec(), source: sources.clone() }];
    let output = ContainerOutput::CanonicalOciArchive { archive, name: &name, replacements: &replacements };
    let image = container::build(&build, output)?.expect("a canonical OCI archive build returns its digest");
    fs::remove_dir(&context).map_err(write_error(&context))?;
    remove(&sources)?;
    Ok(image)
}

/// Writes the lock and the pin of `built`, each all or nothing, the pin last.
pub fn write_lock_and_pin(spec: &BaseImageSpec, built: &BuiltImage) -> Result<(), BaseImageError> {
    write_lock(&spec.lock_path(), &built.lock, &format!("the base image {}", built.name), GENERATOR)?;
    let pin_path = spec.pin_path();
    write_atomically(&pin_path, |file| {
        io::Write::write_all(file, format_pin(&built.pin()).as_bytes()).map_err(write_error(&pin_path))
    })
}

/// The pin of the image `spec` describes, as its pin file says.
pub fn read_pin(spec: &BaseImageSpec) -> Result<Pin, BaseImageError> {
    let path = spec.pin_path();
    let text = fs::read_to_string(&path).map_err(|source| OciError::Read { path: path.clone(), source })?;
    Ok(parse_pin(&text, &path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base_image::lock::Difference;

    fn spec(context: &Path, mode: Mode) -> BaseImageSpec {
        BaseImageSpec {
            os: "guestos".into(),
            context: context.to_owned(),
            variant: Variant::Dev,
            dockerfile: context.join("Dockerfile.base"),
            suite: DEFAULT_SUITE.into(),
            mirror: DEFAULT_MIRROR.into(),
            source_date_epoch: DEFAULT_SOURCE_DATE_EPOCH,
            podman: "/nonexistent/podman".into(),
            mmdebstrap: "/nonexistent/mmdebstrap".into(),
            work_dir: context.join("work"),
            mode,
        }
    }

    #[test]
    fn paths_and_names_follow_the_os_and_variant() {
        let spec = spec(Path::new("ic-os/guestos/context"), Mode::Locked);
        assert_eq!(spec.image_name(), "guestos-base-dev");
        assert_eq!(spec.lock_path(), Path::new("ic-os/guestos/context/packages.dev.lock"));
        assert_eq!(spec.pin_path(), Path::new("ic-os/guestos/context/docker-base.dev"));
    }

    #[test]
    fn a_variant_list_is_optional_and_must_not_repeat_the_common_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("packages.common"), "udev\nkmod\n").unwrap();
        let spec = spec(dir.path(), Mode::Relock);
        let names =
            |requested: Vec<Requested>| -> Vec<String> { requested.into_iter().map(|package| package.name).collect() };
        assert_eq!(names(spec.requested().unwrap()), ["udev", "kmod"]);
        fs::write(dir.path().join("packages.dev"), "strace\nless\n").unwrap();
        assert_eq!(names(spec.requested().unwrap()), ["udev", "kmod", "strace", "less"]);
        fs::write(dir.path().join("packages.dev"), "kmod\n").unwrap();
        let error = spec.requested().unwrap_err().to_string();
        let common = dir.path().join("packages.common");
        assert!(
            error.ends_with(&format!("packages.dev:1: kmod is listed in {}:2 already", common.display())),
            "{error}"
        );
    }

    #[test]
    fn locked_builds_check_their_inputs_before_bootstrapping() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("packages.common"), "udev\nkmod\n").unwrap();
        let locked = spec(dir.path(), Mode::Locked);
        let error = build(&locked).unwrap_err().to_string();
        assert!(error.contains("packages.dev.lock: no lock") && error.contains("ci/base-images/rebuild"), "{error}");
        fs::write(locked.lock_path(), "kmod=34.2-2\nlibc6=2.41-12\n").unwrap();
        let error = build(&locked).unwrap_err().to_string();
        assert!(error.starts_with("udev ("), "{error}");
        assert!(error.ends_with("packages.dev.lock: re-pin with ci/base-images/rebuild"), "{error}");
        fs::write(locked.lock_path(), "kmod=34.2-2\nudev=257.8-1\n").unwrap();
        let error = build(&locked).unwrap_err().to_string();
        assert!(error.starts_with("cannot start /nonexistent/mmdebstrap"), "{error}");
        // Nothing but the (empty) log of the attempt.
        let left: Vec<_> = fs::read_dir(&locked.work_dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(left, ["guestos-base-dev.mmdebstrap.log"]);
    }

    #[test]
    fn a_mismatch_lists_every_difference_and_the_way_out() {
        let spec = spec(Path::new("ic-os/guestos/context"), Mode::Locked);
        let some = |text: &str| Some(text.to_owned());
        let error = BaseImageError::Mismatch(Box::new(Mismatch {
            image: spec.image_name(),
            lock: spec.lock_path(),
            differences: vec![
                Difference { name: "gone".into(), old: some("1.0"), new: None },
                Difference { name: "libc6".into(), old: some("2.41-12"), new: some("2.41-13") },
                Difference { name: "new".into(), old: None, new: some("2") },
            ],
            hint: mismatch_hint(&spec),
        }));
        assert_eq!(
            error.to_string(),
            "guestos-base-dev does not match its lock ic-os/guestos/context/packages.dev.lock: \
             3 packages differ (locked → built):\n\
             \x20 gone: 1.0 → (not installed)\n\
             \x20 libc6: 2.41-12 → 2.41-13\n\
             \x20 new: (not locked) → 2\n\
             The Debian archive at http://deb.debian.org/debian no longer serves the locked versions: \
             re-pin with `ci/container/container-run.sh ci/base-images/rebuild`, or build from a snapshot of \
             the archive state the lock was made from: \
             ICOS_DEBIAN_MIRROR=http://snapshot.debian.org/archive/debian/<YYYYMMDDTHHMMSSZ>."
        );
    }
}
