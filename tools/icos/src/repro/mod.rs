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

use crate::build_record::{self, BuildRecord, BuildRecordError};
use crate::io_error::PathIoError;
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
    /// The build records of the published images (what built them), in the order of `images`;
    /// `None` for an image published without one.
    pub records: Vec<Option<BuildRecord>>,
}

/// Where container-run.sh records the pinned image the running build root was unpacked from.
pub const BUILD_ROOT_FILE: &str = "/etc/icos/build-root";

/// The build root this process runs in, as build records name it (`unknown` outside one).
pub fn current_build_root() -> String {
    fs::read_to_string(BUILD_ROOT_FILE).map(|text| text.trim().to_owned()).unwrap_or_else(|_| "unknown".to_owned())
}

/// The build records published with the images: `record` when given (one image only), else
/// build-record.json next to the SHA256SUMS or in each image's published directory, where present.
pub fn find_records(
    expected: &Expected,
    images: &[ImageRef],
    record: Option<&Path>,
) -> Result<Vec<Option<BuildRecord>>, ReproError> {
    if let Some(path) = record {
        if images.len() != 1 {
            return Err(ReproError::RecordForSeveralImages { count: images.len() });
        }
        return Ok(vec![Some(BuildRecord::read(path)?)]);
    }
    images
        .iter()
        .map(|image| {
            let path = match expected {
                Expected::Sha256Sums(sums) => sums.parent().unwrap_or(Path::new(".")).join(build_record::FILE_NAME),
                Expected::Published(dir) => published_dir(dir, image, images.len()).join(build_record::FILE_NAME),
            };
            path.exists().then(|| BuildRecord::read(&path)).transpose().map_err(ReproError::from)
        })
        .collect()
}

/// The published files of `image` in `dir`: the directory itself for one image, else its
/// `<os>/<variant>/` subdirectory.
fn published_dir(dir: &Path, image: &ImageRef, image_count: usize) -> PathBuf {
    if image_count == 1 {
        dir.to_owned()
    } else {
        dir.join(&image.os).join(&image.variant)
    }
}

/// Checks the records against the check about to run: one commit, the image each names, and the
/// build root this runs in (ci/tools/repro-check enters the recorded one).
pub fn check_records(
    records: &[Option<BuildRecord>],
    images: &[ImageRef],
    commit: &str,
    build_root: &str,
) -> Result<(), ReproError> {
    for (image, record) in images.iter().zip(records) {
        let Some(record) = record else { continue };
        if record.image != image.to_string() {
            return Err(ReproError::RecordOfAnotherImage { image: image.to_string(), recorded: record.image.clone() });
        }
        if record.commit != "unknown" && record.commit != commit {
            return Err(ReproError::RecordOfAnotherCommit {
                image: image.to_string(),
                recorded: record.commit.clone(),
                commit: commit.to_owned(),
            });
        }
        if record.build_root != build_root {
            return Err(ReproError::OtherBuildRoot {
                recorded: record.build_root.clone(),
                here: build_root.to_owned(),
            });
        }
        if record.tree != "clean" {
            eprintln!(
                "repro-check: warning: {image} was built from a tree that was {} (not commit {} as it is); a difference may come from that",
                record.tree, record.commit
            );
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ReproError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Sha256Sums(#[from] Sha256SumsError),
    #[error(transparent)]
    Io(#[from] PathIoError),
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
    #[error(transparent)]
    Record(#[from] BuildRecordError),
    #[error("--record names the record of one image, but {count} images were asked for; give a directory of published files with a build-record.json per image instead")]
    RecordForSeveralImages { count: usize },
    #[error("the build record given for {image} is the record of {recorded}")]
    RecordOfAnotherImage { image: String, recorded: String },
    #[error("the build record of {image} is of commit {recorded}, but commit {commit} was asked for")]
    RecordOfAnotherCommit { image: String, recorded: String, commit: String },
    #[error("the build record names the build root {recorded}, but this runs in {here}; run ci/tools/repro-check, which enters the recorded one")]
    OtherBuildRoot { recorded: String, here: String },
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
    fs::create_dir_all(&options.work_dir).map_err(PathIoError::with("create", &options.work_dir))?;
    let marker = options.work_dir.join(WORK_DIR_MARKER);
    fs::write(&marker, b"a repro-check work dir: removed by the next check that uses it\n")
        .map_err(PathIoError::with("write", &marker))?;

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
    compare_records(options, &source, verdict)?;

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
                let published = published_dir(dir, image, options.images.len());
                let files = published_files(&published)?;
                // The record is compared input by input (compare_records), not byte for byte.
                for relative in files.into_iter().filter(|file| file != Path::new(build_record::FILE_NAME)) {
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

/// Compares each published record with the rebuild's and prints which recorded inputs differ on
/// this machine: the first place to look when a file differs.
fn compare_records(options: &ReproCheckOptions, source: &Path, verdict: Verdict) -> Result<(), ReproError> {
    for (image, record) in options.images.iter().zip(&options.records) {
        let Some(record) = record else {
            println!("no build record was published for {image}: the inputs that built it are unknown");
            continue;
        };
        let rebuilt = BuildRecord::read(&rebuilt_dir(source, image).join(build_record::FILE_NAME))?;
        let differences = record.differences(&rebuilt);
        if differences.is_empty() {
            println!("recorded inputs ({image}): every one is the same here");
            if verdict == Verdict::Differs {
                println!("  so what differs comes from something the record does not hold");
            }
            continue;
        }
        println!("recorded inputs ({image}) that differ here:");
        for difference in differences {
            println!("  {difference}");
        }
    }
    Ok(())
}

/// Every regular file under `dir`, relative to it, sorted.
fn published_files(dir: &Path) -> Result<Vec<PathBuf>, ReproError> {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ReproError> {
        let mut entries = fs::read_dir(dir)
            .map_err(PathIoError::with("read", dir))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(PathIoError::with("read", dir))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let file_type = fs::metadata(&path).map_err(PathIoError::with("read", &path))?.file_type();
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
        Err(source) => return Err(PathIoError { action: "read", path: work_dir.to_owned(), source }.into()),
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
        Err(source) => Err(PathIoError { action: "remove", path: work_dir.to_owned(), source }.into()),
    }
}

/// Makes every directory under `dir` writable by its owner, so that it can be removed.
fn make_writable(dir: &Path) -> Result<(), ReproError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = match fs::symlink_metadata(dir) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(PathIoError { action: "read", path: dir.to_owned(), source }.into()),
    };
    if !metadata.is_dir() {
        return Ok(());
    }
    let mut permissions = metadata.permissions();
    permissions.set_mode(permissions.mode() | 0o700);
    fs::set_permissions(dir, permissions).map_err(PathIoError::with("make writable", dir))?;
    let entries = fs::read_dir(dir).map_err(PathIoError::with("read", dir))?;
    for entry in entries {
        let entry = entry.map_err(PathIoError::with("read", dir))?;
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

    fn record(image: &str) -> BuildRecord {
        BuildRecord {
            format: build_record::FORMAT.into(),
            image: image.into(),
            commit: "a".repeat(40),
            tree: "clean".into(),
            build_root: format!("icos-build-root@sha256:{}", "b".repeat(64)),
            base_images: vec![],
            host_tools: Default::default(),
            kernel: "6.1".into(),
            icos: "0.1.0".into(),
        }
    }

    #[test]
    fn finds_the_records_published_with_the_images() {
        let dir = tempfile::tempdir().unwrap();
        let images = [ImageRef::parse("guestos/dev").unwrap(), ImageRef::parse("hostos/dev").unwrap()];
        fs::create_dir_all(dir.path().join("guestos/dev")).unwrap();
        fs::create_dir_all(dir.path().join("hostos/dev")).unwrap();
        record("guestos/dev").write(&dir.path().join("guestos/dev").join(build_record::FILE_NAME)).unwrap();
        let found = find_records(&Expected::Published(dir.path().into()), &images, None).unwrap();
        assert_eq!(found, [Some(record("guestos/dev")), None]);

        let sums = dir.path().join("guestos/dev/SHA256SUMS");
        let found = find_records(&Expected::Sha256Sums(sums.clone()), &images[..1], None).unwrap();
        assert_eq!(found, [Some(record("guestos/dev"))]);
        let given = dir.path().join("guestos/dev").join(build_record::FILE_NAME);
        assert!(matches!(
            find_records(&Expected::Sha256Sums(sums), &images, Some(&given)),
            Err(ReproError::RecordForSeveralImages { count: 2 })
        ));
        fs::write(dir.path().join("hostos/dev").join(build_record::FILE_NAME), b"{}").unwrap();
        let error = find_records(&Expected::Published(dir.path().into()), &images, None).unwrap_err().to_string();
        assert!(error.contains("hostos/dev/build-record.json"), "{error}");
    }

    #[test]
    fn refuses_records_of_another_image_commit_or_build_root() {
        let images = [ImageRef::parse("guestos/dev").unwrap()];
        let good = record("guestos/dev");
        let (commit, root) = (good.commit.clone(), good.build_root.clone());
        check_records(&[Some(good.clone()), None], &images, &commit, &root).unwrap();
        check_records(&[None], &images, &commit, "unknown").unwrap();
        let mut unknown = good.clone();
        unknown.commit = "unknown".into();
        check_records(&[Some(unknown)], &images, &"c".repeat(40), &root).unwrap();
        assert!(matches!(
            check_records(&[Some(record("hostos/dev"))], &images, &commit, &root),
            Err(ReproError::RecordOfAnotherImage { .. })
        ));
        assert!(matches!(
            check_records(&[Some(good.clone())], &images, &"c".repeat(40), &root),
            Err(ReproError::RecordOfAnotherCommit { .. })
        ));
        let error = check_records(&[Some(good)], &images, &commit, "unknown").unwrap_err().to_string();
        assert!(error.contains("ci/tools/repro-check") && error.contains(&root), "{error}");
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
