//! The build root: the Debian tree every image is built in (`ci/container/container-run.sh`),
//! made a pure function of a lock of its package versions, the way base images are
//! ([`crate::base_image`]), and kept as a single-layer OCI image pinned by digest.
//!
//! Its inputs live in `ci/container/`:
//! - `packages.txt`: what the root needs, by name;
//! - `packages.lock`: every package installed in it, `name=version` (generated);
//! - `build-root.pin`: the pin, `icos-build-root@sha256:<digest>` (generated).
//!
//! [`build()`] bootstraps the suite with mmdebstrap, installing the listed packages at their
//! locked versions, adds cargo-bazel (built from the crate registry with the root's own cargo, as
//! rules_rust's crate_universe runs it), removes what differs from one build to the next, and
//! writes the canonical tar of the tree as the one layer of the image. The image must then hold
//! exactly the lock, and a locked build must give the pinned digest: the same lock on another
//! machine, weeks later, makes the same root while the archive still serves those versions.
//!
//! What is particular to a machine stays out of the image: `container-run.sh` adds the host's CA
//! certificates and Bazel's output root when it unpacks the image into a directory.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::base_image::{
    archive_bootstrap, diff, installed_in_archive, log_tail, read_lock, read_package_list, write_lock, BaseImageError,
    Difference, Lock, Mode, DEFAULT_MIRROR,
};
use crate::oci::{format_pin, parse_pin, Digest, ImageDigest, OciError, Pin};
use crate::output::write_atomically;

/// The image's name in its pin and in registries.
pub const IMAGE_NAME: &str = "icos-build-root";
/// Debian sid: the only suite with Bazel 7 (see ci/container/container-run.sh).
pub const DEFAULT_SUITE: &str = "sid";
/// The build root's timestamps: fixed, since the pin depends on them.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_700_000_000;
/// The cargo-bazel that matches rules_rust 0.54.1 (MODULE.bazel).
pub const CARGO_BAZEL_VERSION: &str = "0.15.0";
/// What the header of the lock names as its generator.
const GENERATOR: &str = "ci/container/relock (icos build-root build --relock)";
/// The ways out when the archive no longer serves the locked versions.
const RELOCK: &str = "relock the build root with `ci/container/relock`, or pull the pinned one from a registry \
    (ICOS_REGISTRY) where it was pushed";

/// Files that the package installation writes differently on every run and that nothing in the
/// build root needs: the host's name service files (mmdebstrap copies them in for apt; resolv.conf
/// becomes a link to the copy container-run.sh puts into the root's /run at every run), ldconfig's
/// cache of file times, logs, the Java keystore (entries are dated; container-run.sh makes it
/// again with the host's CA certificates), the JVM's class-data-sharing archives (a cache the JVM
/// runs without), ssl-cert's snakeoil key and certificate (random, named after the host; the
/// PostgreSQL of ci/rbe runs without TLS on the loopback) and what building cargo-bazel left in
/// /tmp (mmdebstrap keeps its own files there until it ends).
const CLEANUP_HOOK: &str = r#"ln -sfn ../run/resolv.conf "$1/etc/resolv.conf" && rm -f "$1/etc/hostname" "$1/var/cache/ldconfig/aux-cache" "$1/etc/ssl/certs/java/cacerts" "$1/etc/ssl/private/ssl-cert-snakeoil.key" "$1/etc/ssl/certs/ssl-cert-snakeoil.pem" && find "$1/etc/ssl/certs" -lname ssl-cert-snakeoil.pem -delete && rm -rf "$1"/var/log/* "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/* "$1"/tmp/icos-ca.crt "$1"/tmp/cargo-home "$1"/tmp/cargo-target "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old && find "$1/usr/lib/jvm" -name '*.jsa' -delete && : > "$1/etc/machine-id""#;

/// Before the packages are installed: PostgreSQL makes no cluster of its own (a database with a
/// random system identifier, which nothing uses: ci/rbe makes its own where it runs).
const ESSENTIAL_HOOK: &str = r#"mkdir -p "$1/etc/postgresql-common/createcluster.d" && printf 'create_main_cluster = false\n' > "$1/etc/postgresql-common/createcluster.d/icos.conf""#;

/// The inputs of a build root.
#[derive(Debug, Clone)]
pub struct BuildRootSpec {
    /// `packages.txt`: the packages by name.
    pub packages: PathBuf,
    /// `packages.lock`: every installed package, `name=version`.
    pub lock: PathBuf,
    pub suite: String,
    /// Where packages come from; the image names [`DEFAULT_MIRROR`] in its apt sources whatever
    /// mirror built it.
    pub mirror: String,
    pub source_date_epoch: u64,
    pub mmdebstrap: PathBuf,
    /// CA certificates (PEM) for cargo's downloads while cargo-bazel is built, such as the host's
    /// bundle behind a TLS proxy; not kept in the image.
    pub ca_certificates: Option<PathBuf>,
    /// Where the image archive and the logs go (created if missing).
    pub work_dir: PathBuf,
    pub mode: Mode,
}

/// A build root that matches its lock.
#[derive(Debug, Clone)]
pub struct BuiltRoot {
    /// Its OCI archive, in the work directory.
    pub archive: PathBuf,
    pub image: ImageDigest,
    /// The packages installed in it.
    pub lock: Lock,
}

impl BuiltRoot {
    pub fn pin(&self) -> Pin {
        Pin { name: IMAGE_NAME.to_owned(), digest: self.image.digest.clone() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildRootError {
    #[error("{path}: no lock: make it with ci/container/relock")]
    NoLock { path: PathBuf },
    #[error("{name} ({list}:{line}) is not in the lock {lock}: relock with ci/container/relock")]
    NotLocked { name: String, list: PathBuf, line: usize, lock: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot start {program}: {source}")]
    Start { program: PathBuf, source: io::Error },
    #[error(
        "mmdebstrap of {suite} from {mirror} failed ({status}); if apt did not find a locked version, the \
         archive no longer serves it: {RELOCK}. The last lines of {log_path}:\n{log}"
    )]
    Bootstrap { suite: String, mirror: String, status: String, log_path: PathBuf, log: String },
    #[error("{0}")]
    Mismatch(PackageMismatch),
    #[error(
        "the two builds of the relock differ ({first} and {second}): the build root is not reproducible; \
         compare them with `icos diff {first_archive} {second_archive}`"
    )]
    Unreproducible { first: Digest, second: Digest, first_archive: PathBuf, second_archive: PathBuf },
    #[error(transparent)]
    BaseImage(Box<BaseImageError>),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
}

impl From<BaseImageError> for BuildRootError {
    fn from(error: BaseImageError) -> Self {
        BuildRootError::BaseImage(Box::new(error))
    }
}

/// A built root whose packages are not its lock.
#[derive(Debug)]
pub struct PackageMismatch {
    pub lock: PathBuf,
    pub differences: Vec<Difference>,
    pub mirror: String,
}

impl fmt::Display for PackageMismatch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "the build root does not match its lock {}: {} package(s) differ (locked → built):",
            self.lock.display(),
            self.differences.len()
        )?;
        for difference in &self.differences {
            let locked = difference.old.as_deref().unwrap_or("(not locked)");
            let built = difference.new.as_deref().unwrap_or("(not installed)");
            writeln!(formatter, "  {}: {locked} → {built}", difference.name)?;
        }
        write!(formatter, "The Debian archive at {} no longer serves the locked versions: {RELOCK}.", self.mirror)
    }
}

/// Builds the build root `spec` describes; see the module documentation. In `Relock` mode it
/// builds twice, without and then with versions, and the two images must be the same.
pub fn build(spec: &BuildRootSpec) -> Result<BuiltRoot, BuildRootError> {
    let requested = read_package_list(&spec.packages)?;
    let names: Vec<String> = requested.iter().map(|package| package.name.clone()).collect();
    fs::create_dir_all(&spec.work_dir).map_err(write_error(&spec.work_dir))?;
    let (lock, first) = match spec.mode {
        Mode::Locked => (read_root_lock(&spec.lock)?, None),
        Mode::Relock => {
            let archive = spec.work_dir.join(format!("{IMAGE_NAME}.unlocked.oci.tar"));
            let image = build_image(spec, &names, &archive)?;
            (installed_in_archive(&archive)?, Some((image, archive)))
        }
    };
    let mut pinned = Vec::with_capacity(requested.len());
    for package in &requested {
        let version = lock.packages.get(&package.name).ok_or_else(|| BuildRootError::NotLocked {
            name: package.name.clone(),
            list: package.list.clone(),
            line: package.line,
            lock: spec.lock.clone(),
        })?;
        pinned.push(format!("{}={version}", package.name));
    }
    let archive = spec.work_dir.join(format!("{IMAGE_NAME}.oci.tar"));
    let image = build_image(spec, &pinned, &archive)?;
    let differences = diff(&lock, &installed_in_archive(&archive)?);
    if !differences.is_empty() {
        return Err(BuildRootError::Mismatch(PackageMismatch {
            lock: spec.lock.clone(),
            differences,
            mirror: spec.mirror.clone(),
        }));
    }
    if let Some((first, first_archive)) = first {
        if first.digest != image.digest {
            return Err(BuildRootError::Unreproducible {
                first: first.digest,
                second: image.digest,
                first_archive,
                second_archive: archive,
            });
        }
        fs::remove_file(&first_archive).map_err(write_error(&first_archive))?;
    }
    Ok(BuiltRoot { archive, image, lock })
}

fn read_root_lock(path: &Path) -> Result<Lock, BuildRootError> {
    match read_lock(path) {
        Err(BaseImageError::NoLock { path }) => Err(BuildRootError::NoLock { path }),
        other => Ok(other?),
    }
}

/// Writes the lock and then the pin of `built`, each all or nothing.
pub fn write_lock_and_pin(lock_path: &Path, pin_path: &Path, built: &BuiltRoot) -> Result<(), BuildRootError> {
    write_lock(lock_path, &built.lock, &format!("the build root {IMAGE_NAME}"), GENERATOR)?;
    write_atomically(pin_path, |file| {
        io::Write::write_all(file, format_pin(&built.pin()).as_bytes()).map_err(write_error(pin_path))
    })?;
    Ok(())
}

/// The pin file `path`, which must name the build root.
pub fn read_pin(path: &Path) -> Result<Pin, BuildRootError> {
    let text = fs::read_to_string(path).map_err(|source| OciError::Read { path: path.to_owned(), source })?;
    let pin = parse_pin(&text, path)?;
    if pin.name != IMAGE_NAME {
        return Err(OciError::Input {
            path: path.to_owned(),
            problem: format!("pins {}, expected {IMAGE_NAME}", pin.name),
        }
        .into());
    }
    Ok(pin)
}

/// The customize hook that builds cargo-bazel into `/usr/local/bin` with the root's cargo, in
/// fixed directories, so that its bytes do not depend on the machine.
fn cargo_bazel_hook(ca_certificates: Option<&Path>) -> String {
    let (copy, cainfo) = match ca_certificates {
        Some(path) => (
            format!("cp {} \"$1/tmp/icos-ca.crt\" && ", shell_quote(&path.to_string_lossy())),
            " CARGO_HTTP_CAINFO=/tmp/icos-ca.crt",
        ),
        None => (String::new(), ""),
    };
    format!(
        "{copy}chroot \"$1\" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
         CARGO_HOME=/tmp/cargo-home{cainfo} SOURCE_DATE_EPOCH=\"$SOURCE_DATE_EPOCH\" \
         cargo install --quiet --locked --root /usr/local --target-dir /tmp/cargo-target \
         cargo-bazel --version {CARGO_BAZEL_VERSION}"
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// mmdebstrap's tar of the suite with `packages`, canonicalised, as the OCI archive `archive`.
fn build_image(spec: &BuildRootSpec, packages: &[String], archive: &Path) -> Result<ImageDigest, BuildRootError> {
    let tar = spec.work_dir.join(format!("{IMAGE_NAME}.bootstrap.tar"));
    let log_path = spec.work_dir.join(format!("{IMAGE_NAME}.mmdebstrap.log"));
    let log = File::create(&log_path).map_err(write_error(&log_path))?;
    let sources = format!("deb {DEFAULT_MIRROR} {} main", spec.suite);
    let status = Command::new(&spec.mmdebstrap)
        .args(["--mode=root", "--variant=minbase", "--format=tar", "--verbose"])
        .arg("--aptopt=Acquire::Check-Valid-Until \"false\"")
        .arg("--aptopt=APT::Install-Recommends \"false\"")
        .arg(format!("--include={}", packages.join(",")))
        .arg(format!("--essential-hook={ESSENTIAL_HOOK}"))
        .arg(format!("--customize-hook={}", cargo_bazel_hook(spec.ca_certificates.as_deref())))
        // The archive's sid Release file may be past its Valid-Until date; the sources name the
        // archive, not the mirror that built the root.
        .arg(format!(
            "--customize-hook=printf '%s\\n' {} > \"$1/etc/apt/sources.list\" && printf '%s\\n' {} {} > \"$1/etc/apt/apt.conf.d/90icos\"",
            shell_quote(&sources),
            shell_quote("Acquire::Check-Valid-Until \"false\";"),
            shell_quote("APT::Install-Recommends \"false\";"),
        ))
        .arg(format!("--customize-hook={CLEANUP_HOOK}"))
        .arg(&spec.suite)
        .arg(&tar)
        .arg(&spec.mirror)
        .env("SOURCE_DATE_EPOCH", spec.source_date_epoch.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(write_error(&log_path))?)
        .stderr(log)
        .status()
        .map_err(|source| BuildRootError::Start { program: spec.mmdebstrap.clone(), source })?;
    if !status.success() {
        let _ = fs::remove_file(&tar);
        return Err(BuildRootError::Bootstrap {
            suite: spec.suite.clone(),
            mirror: spec.mirror.clone(),
            status: status.to_string(),
            log: log_tail(&log_path),
            log_path,
        });
    }
    let canonical = spec.work_dir.join(format!("{IMAGE_NAME}.rootfs.tar"));
    let image = archive_bootstrap(&tar, &canonical, archive, IMAGE_NAME, spec.source_date_epoch)?;
    fs::remove_file(&log_path).map_err(write_error(&log_path))?;
    Ok(image)
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> BuildRootError {
    let path = path.to_owned();
    move |source| BuildRootError::Write { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, mode: Mode) -> BuildRootSpec {
        BuildRootSpec {
            packages: dir.join("packages.txt"),
            lock: dir.join("packages.lock"),
            suite: DEFAULT_SUITE.into(),
            mirror: DEFAULT_MIRROR.into(),
            source_date_epoch: DEFAULT_SOURCE_DATE_EPOCH,
            mmdebstrap: "/nonexistent/mmdebstrap".into(),
            ca_certificates: None,
            work_dir: dir.join("work"),
            mode,
        }
    }

    #[test]
    fn locked_builds_check_the_lock_before_bootstrapping() {
        let dir = tempfile::tempdir().unwrap();
        let locked = spec(dir.path(), Mode::Locked);
        fs::write(&locked.packages, "# tools\nbazel-bootstrap\ne2fsprogs\n").unwrap();
        let error = build(&locked).unwrap_err().to_string();
        assert!(error.ends_with("packages.lock: no lock: make it with ci/container/relock"), "{error}");
        fs::write(&locked.lock, "bazel-bootstrap=7.7.1+ds-1\n").unwrap();
        let error = build(&locked).unwrap_err().to_string();
        assert!(error.starts_with("e2fsprogs (") && error.contains("packages.txt:3) is not in the lock"), "{error}");
        fs::write(&locked.lock, "bazel-bootstrap=7.7.1+ds-1\ne2fsprogs=1.47.4-1\n").unwrap();
        let error = build(&locked).unwrap_err().to_string();
        assert!(error.starts_with("cannot start /nonexistent/mmdebstrap"), "{error}");
    }

    #[test]
    fn the_cargo_bazel_hook_quotes_the_certificates_and_pins_the_version() {
        let hook = cargo_bazel_hook(Some(Path::new("/etc/ssl/it's.pem")));
        assert!(hook.starts_with(r#"cp '/etc/ssl/it'\''s.pem' "$1/tmp/icos-ca.crt" && chroot "$1""#), "{hook}");
        assert!(hook.contains(" CARGO_HTTP_CAINFO=/tmp/icos-ca.crt "), "{hook}");
        assert!(hook.ends_with(&format!("cargo-bazel --version {CARGO_BAZEL_VERSION}")), "{hook}");
        assert!(!cargo_bazel_hook(None).contains("CAINFO"));
    }

    #[test]
    fn the_pin_must_name_the_build_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build-root.pin");
        let hex = "ab".repeat(32);
        fs::write(&path, format!("guestos-base-dev@sha256:{hex}\n")).unwrap();
        let error = read_pin(&path).unwrap_err().to_string();
        assert!(error.ends_with("pins guestos-base-dev, expected icos-build-root"), "{error}");
        fs::write(&path, format!("# the build root\n{IMAGE_NAME}@sha256:{hex}\n")).unwrap();
        assert_eq!(read_pin(&path).unwrap().digest.hex(), hex);
    }

    #[test]
    fn a_mismatch_lists_the_differences_and_the_ways_out() {
        let some = |text: &str| Some(text.to_owned());
        let error = BuildRootError::Mismatch(PackageMismatch {
            lock: "ci/container/packages.lock".into(),
            differences: vec![Difference { name: "libc6".into(), old: some("2.41-12"), new: some("2.41-13") }],
            mirror: DEFAULT_MIRROR.into(),
        });
        let text = error.to_string();
        assert!(
            text.starts_with("the build root does not match its lock ci/container/packages.lock: 1 package(s) differ")
        );
        assert!(text.contains("\n  libc6: 2.41-12 → 2.41-13\n"), "{text}");
        assert!(text.ends_with("(ICOS_REGISTRY) where it was pushed."), "{text}");
    }
}
