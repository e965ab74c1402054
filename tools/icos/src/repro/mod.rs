//! `repro-check`: rebuild a commit's images from a clean clone and compare them with the published
//! ones, so that a release engineer need not trust the build machine that published them.
//!
//! The steps are plain programs (git, bazel, unshare) run in order; what this module adds is the
//! order, the checks between them and a verdict that says which file differs and how (through
//! [`crate::diff`]) instead of only that a hash differs.

mod git;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::sha256sums::{check_sha256sums_in, sha256_file, CheckStatus, Sha256SumsError};

pub use git::{GitError, Repository};

/// One OS image of the repository: built from `//ic-os/<os>/envs/<variant>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub os: String,
    pub variant: String,
}

impl ImageRef {
    /// Parses `<os>/<variant>`, e.g. `guestos/dev`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = |part: &str| {
            !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        };
        match text.split_once('/') {
            Some((os, variant)) if valid(os) && valid(variant) => {
                Ok(Self { os: os.to_owned(), variant: variant.to_owned() })
            }
            _ => Err(format!("{text:?} is not <os>/<variant>, e.g. guestos/dev")),
        }
    }

    /// The Bazel package whose outputs are the image's published and intermediate files.
    pub fn package(&self) -> String {
        format!("ic-os/{}/envs/{}", self.os, self.variant)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.os, self.variant)
    }
}

/// What the rebuild is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A published `SHA256SUMS`: hashes only, so a mismatch can name the file but not the cause.
    Sha256Sums(PathBuf),
    /// A directory of published files (for several images: one `<os>/<variant>/` subdirectory
    /// each). Every file in it is compared with the rebuilt file of the same name, and a file that
    /// differs is explained with `icos diff`.
    Published(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ReproCheckOptions {
    /// The repository (path or URL) to clone from.
    pub repository: String,
    /// The full commit hash to rebuild.
    pub commit: String,
    pub images: Vec<ImageRef>,
    pub expected: Expected,
    /// Where the clone and its Bazel output base go; emptied first.
    pub work_dir: PathBuf,
    /// Keep the clone and output base afterwards (to look at the rebuilt files).
    pub keep: bool,
    /// Build with no network: fetch what the build needs first, then build in a network namespace
    /// of its own.
    pub offline: bool,
    /// The Bazel program.
    pub bazel: PathBuf,
    /// More `bazel build` arguments, e.g. `--jobs=1` or `--disk_cache=DIR`.
    pub build_args: Vec<String>,
    /// `--max-differences` of the diff reports.
    pub max_differences: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReproError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Sha256Sums(#[from] Sha256SumsError),
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("`{command}` failed ({status}); its output is above")]
    Failed { command: String, status: std::process::ExitStatus },
    #[error("{path} holds no files to compare")]
    NothingPublished { path: PathBuf },
    #[error("a SHA256SUMS file checks one image, but {count} images were asked for; give a directory of published files instead")]
    SumsForSeveralImages { count: usize },
    #[error(transparent)]
    Diff(#[from] crate::diff::DiffError),
    #[error("{path} is not empty and not a work dir of repro-check; give an empty or new directory as --work-dir")]
    ForeignWorkDir { path: PathBuf },
}

/// The outcome of a check: every published file reproduced, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Reproduced,
    Differs,
}

/// Progress of the long steps, for people: printed on stderr with the elapsed time.
struct Progress {
    start: Instant,
    step: usize,
    steps: usize,
}

impl Progress {
    fn step(&mut self, text: &str) {
        self.step += 1;
        eprintln!("repro-check [{}/{}] {text} (at {:.0} s)", self.step, self.steps, self.start.elapsed().as_secs_f64());
    }
}

/// Clones `options.commit`, builds the images, compares them and prints the verdict on stdout.
pub fn repro_check(options: &ReproCheckOptions) -> Result<Verdict, ReproError> {
    if let (Expected::Sha256Sums(_), count @ 2..) = (&options.expected, options.images.len()) {
        return Err(ReproError::SumsForSeveralImages { count });
    }
    let mut progress = Progress { start: Instant::now(), step: 0, steps: if options.offline { 5 } else { 4 } };
    let source = options.work_dir.join("src");
    let output_base = options.work_dir.join("output-base");
    remove_work_dir(&options.work_dir, &options.bazel)?;
    fs::create_dir_all(&options.work_dir).map_err(|source| ReproError::Io {
        action: "create",
        path: options.work_dir.clone(),
        source,
    })?;
    let marker = options.work_dir.join(WORK_DIR_MARKER);
    fs::write(&marker, b"a repro-check work dir: removed by the next check that uses it\n")
        .map_err(|source| ReproError::Io { action: "write", path: marker, source })?;

    progress.step(&format!("cloning {} at {} into {}", options.repository, options.commit, source.display()));
    git::clone_at(&options.repository, &options.commit, &source)?;

    let targets: Vec<String> = options.images.iter().map(|image| format!("//{}/...", image.package())).collect();
    let bazel = |extra: &[&str]| {
        let mut command = Command::new(&options.bazel);
        // --batch: no server outlives the check, and its output base can be removed at once.
        command
            .arg("--batch")
            .arg(format!("--output_base={}", output_base.display()))
            .arg("build")
            .args(extra)
            .args(&options.build_args)
            .args(&targets)
            .current_dir(&source);
        command
    };
    if options.offline {
        progress.step("fetching what the build needs (loading and analysis only)");
        run(bazel(&["--nobuild"]))?;
        progress.step(&format!("building {} with no network (bazel's progress follows)", targets.join(" ")));
        let mut offline = Command::new("unshare");
        let build = bazel(&[]);
        offline.arg("--net").arg(build.get_program()).args(build.get_args()).current_dir(&source);
        run(offline)?;
    } else {
        progress.step(&format!("building {} (bazel's progress follows)", targets.join(" ")));
        run(bazel(&[]))?;
    }

    progress.step("comparing with the published files");
    let verdict = compare(options, &source)?;

    progress.step(if options.keep {
        "keeping the clone and output base"
    } else {
        "removing the clone and output base"
    });
    if options.keep {
        eprintln!("repro-check: the rebuilt files are under {}/bazel-bin/", source.display());
    } else {
        remove_work_dir(&options.work_dir, &options.bazel)?;
    }
    Ok(verdict)
}

/// Where the rebuild put an image's files.
fn rebuilt_dir(source: &Path, image: &ImageRef) -> PathBuf {
    source.join("bazel-bin").join(image.package())
}

fn compare(options: &ReproCheckOptions, source: &Path) -> Result<Verdict, ReproError> {
    let mut verdict = Verdict::Reproduced;
    match &options.expected {
        Expected::Sha256Sums(sums) => {
            let image = &options.images[0];
            for file in check_sha256sums_in(sums, &rebuilt_dir(source, image))? {
                match file.status {
                    CheckStatus::Ok => println!("reproduced {}  {} ({image})", file.expected, file.name),
                    CheckStatus::Missing => {
                        verdict = Verdict::Differs;
                        println!("NOT BUILT  {} ({image}): the rebuild has no such file", file.name);
                    }
                    CheckStatus::Mismatch { actual } => {
                        verdict = Verdict::Differs;
                        println!(
                            "DIFFERS    {} ({image}): published {}, rebuilt {actual}; give the published files with --published DIR to see why",
                            file.name, file.expected
                        );
                    }
                }
            }
        }
        Expected::Published(dir) => {
            for image in &options.images {
                let published =
                    if options.images.len() == 1 { dir.clone() } else { dir.join(&image.os).join(&image.variant) };
                let files = published_files(&published)?;
                for relative in files {
                    let expected = published.join(&relative);
                    let rebuilt = rebuilt_dir(source, image).join(&relative);
                    let name = relative.display();
                    if !rebuilt.exists() {
                        verdict = Verdict::Differs;
                        println!("NOT BUILT  {name} ({image}): the rebuild has no such file");
                        continue;
                    }
                    let expected_hash = sha256_file(&expected)?;
                    let rebuilt_hash = sha256_file(&rebuilt)?;
                    if expected_hash == rebuilt_hash {
                        println!("reproduced {expected_hash}  {name} ({image})");
                        continue;
                    }
                    verdict = Verdict::Differs;
                    println!("DIFFERS    {name} ({image}): published {expected_hash}, rebuilt {rebuilt_hash}; why:");
                    let report = crate::diff::diff(&expected, &rebuilt)?;
                    print!("{}", report.human(Some(options.max_differences)));
                }
            }
        }
    }
    Ok(verdict)
}

/// Every regular file under `dir`, relative to it, sorted.
fn published_files(dir: &Path) -> Result<Vec<PathBuf>, ReproError> {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ReproError> {
        let read_error = |source| ReproError::Io { action: "read", path: dir.to_owned(), source };
        let mut entries = fs::read_dir(dir).map_err(read_error)?.collect::<Result<Vec<_>, _>>().map_err(read_error)?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let file_type = fs::metadata(&path)
                .map_err(|source| ReproError::Io { action: "read", path: path.clone(), source })?
                .file_type();
            if file_type.is_dir() {
                walk(root, &path, files)?;
            } else if file_type.is_file() {
                // strip_prefix cannot fail: `path` was found under `root`.
                files.push(path.strip_prefix(root).map(Path::to_path_buf).unwrap_or(path.clone()));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    if files.is_empty() {
        return Err(ReproError::NothingPublished { path: dir.to_owned() });
    }
    Ok(files)
}

/// Runs a command with inherited stdio (Bazel's progress goes straight to the user).
fn run(mut command: Command) -> Result<(), ReproError> {
    let rendered = render_command(&command);
    let status = command.status().map_err(|source| ReproError::Spawn {
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ReproError::Failed { command: rendered, status })
    }
}

fn render_command(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Marks a directory as a work dir of repro-check, which the next check may empty.
const WORK_DIR_MARKER: &str = ".icos-repro-check";

/// Removes a previous work dir. A Bazel output base holds read-only directories, so Bazel
/// removes its own first. A directory that is neither empty nor marked as a work dir is refused:
/// a mistyped --work-dir must not cost anyone their files.
fn remove_work_dir(work_dir: &Path, bazel: &Path) -> Result<(), ReproError> {
    match fs::read_dir(work_dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ReproError::Io { action: "read", path: work_dir.to_owned(), source }),
        Ok(mut entries) => {
            if entries.next().is_some() && !work_dir.join(WORK_DIR_MARKER).exists() {
                return Err(ReproError::ForeignWorkDir { path: work_dir.to_owned() });
            }
        }
    }
    let output_base = work_dir.join("output-base");
    if output_base.exists() {
        let mut expunge = Command::new(bazel);
        expunge
            .arg("--batch")
            .arg(format!("--output_base={}", output_base.display()))
            .args(["clean", "--expunge"])
            .current_dir(work_dir.join("src"));
        if work_dir.join("src").is_dir() {
            run(expunge)?;
        }
        make_writable(&output_base)?;
    }
    match fs::remove_dir_all(work_dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ReproError::Io { action: "remove", path: work_dir.to_owned(), source }),
    }
}

/// Makes every directory under `dir` writable by its owner, so that it can be removed.
fn make_writable(dir: &Path) -> Result<(), ReproError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = match fs::symlink_metadata(dir) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ReproError::Io { action: "read", path: dir.to_owned(), source }),
    };
    if !metadata.is_dir() {
        return Ok(());
    }
    let mut permissions = metadata.permissions();
    permissions.set_mode(permissions.mode() | 0o700);
    fs::set_permissions(dir, permissions).map_err(|source| ReproError::Io {
        action: "make writable",
        path: dir.to_owned(),
        source,
    })?;
    let entries =
        fs::read_dir(dir).map_err(|source| ReproError::Io { action: "read", path: dir.to_owned(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| ReproError::Io { action: "read", path: dir.to_owned(), source })?;
        make_writable(&entry.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_references() {
        assert_eq!(ImageRef::parse("guestos/dev").unwrap().package(), "ic-os/guestos/envs/dev");
        assert_eq!(ImageRef::parse("guestos/dev-sev").unwrap().to_string(), "guestos/dev-sev");
        for bad in ["guestos", "guestos/", "/dev", "guestos/dev/x", "../x/dev", "guest os/dev"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_published_files_recursively_and_refuses_an_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("_trees")).unwrap();
        fs::write(dir.path().join("b"), b"").unwrap();
        fs::write(dir.path().join("_trees/root.tar"), b"").unwrap();
        fs::write(dir.path().join("a file"), b"").unwrap();
        let files = published_files(dir.path()).unwrap();
        assert_eq!(files, [PathBuf::from("_trees/root.tar"), "a file".into(), "b".into()]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(published_files(empty.path()), Err(ReproError::NothingPublished { .. })));
    }

    #[test]
    fn empties_only_its_own_work_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let bazel = Path::new("/nonexistent/bazel");
        let foreign = dir.path().join("home");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("thesis.tex"), b"years of work").unwrap();
        assert!(matches!(remove_work_dir(&foreign, bazel), Err(ReproError::ForeignWorkDir { .. })));
        assert!(foreign.join("thesis.tex").exists());

        let own = dir.path().join("work");
        fs::create_dir_all(own.join("src")).unwrap();
        fs::write(own.join(WORK_DIR_MARKER), b"").unwrap();
        remove_work_dir(&own, bazel).unwrap();
        assert!(!own.exists());
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        remove_work_dir(&empty, bazel).unwrap();
        remove_work_dir(&dir.path().join("missing"), bazel).unwrap();
    }
}
