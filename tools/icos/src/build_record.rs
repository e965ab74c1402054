//! Build records: the small JSON file published next to an image's `SHA256SUMS` that says what
//! built it (the commit and whether its tree was clean, the build root's digest, the base images'
//! digests, the host programs' versions, the kernel, the icos version). `repro-check` reads it to
//! rebuild with exactly those inputs and, when a hash still differs, to say which recorded input
//! differs on the machine that checks.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io_error::PathIoError;
use crate::oci::Pin;
use crate::output::{write_atomically, OutputError};

/// The `format` of the records this version writes and reads.
pub const FORMAT: &str = "icos-build-record/1";

/// The version of icos (tools/icos/Cargo.toml) that records name.
pub const ICOS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The file name of a record, next to `SHA256SUMS`.
pub const FILE_NAME: &str = "build-record.json";

/// What built one published image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRecord {
    pub format: String,
    /// The image, `<os>/<variant>`.
    pub image: String,
    /// The commit of the workspace that was built (`unknown` outside a git checkout).
    pub commit: String,
    /// `clean` when the tracked files matched the commit, `modified` when they did not.
    pub tree: String,
    /// The build root the build ran in, `icos-build-root@sha256:<digest>` (`unknown` outside one).
    pub build_root: String,
    /// The pinned base images under the image, `<name>@sha256:<digest>`, sorted.
    pub base_images: Vec<String>,
    /// Host program -> the first line of its version output.
    pub host_tools: BTreeMap<String, String>,
    /// The kernel release of the machine (container RUN steps run on it).
    pub kernel: String,
    /// The version of icos that wrote the images.
    pub icos: String,
}

/// The commit and tree state of a build, from Bazel's workspace status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    pub commit: String,
    pub tree: String,
}

/// The workspace status keys `ci/tools/workspace-status` prints.
const COMMIT_KEY: &str = "STABLE_ICOS_COMMIT";
const TREE_KEY: &str = "STABLE_ICOS_TREE";

#[derive(Debug, thiserror::Error)]
pub enum BuildRecordError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{path} is not a build record: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{path} is a build record of format {found:?}; this icos reads {FORMAT:?}")]
    Format { path: PathBuf, found: String },
    #[error(
        "{path}: {key} is missing; Bazel's --workspace_status_command must be ci/tools/workspace-status (.bazelrc)"
    )]
    MissingStatus { path: PathBuf, key: &'static str },
    #[error("{path}: {field} is {value:?}, not {expected}")]
    BadField { path: PathBuf, field: &'static str, value: String, expected: &'static str },
}

impl SourceState {
    /// Reads the commit and tree state from a workspace status file (`KEY VALUE` lines, such as
    /// Bazel's stable-status.txt).
    pub fn from_workspace_status(path: &Path) -> Result<Self, BuildRecordError> {
        let text = fs::read_to_string(path).map_err(PathIoError::with("read", path))?;
        let value = |key: &'static str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix(' ')))
                .map(|value| value.trim().to_owned())
                .ok_or(BuildRecordError::MissingStatus { path: path.to_owned(), key })
        };
        Ok(Self { commit: value(COMMIT_KEY)?, tree: value(TREE_KEY)? })
    }

    /// Writes the two keys alone, in the workspace status format [`Self::from_workspace_status`] reads.
    pub fn write(&self, path: &Path) -> Result<(), BuildRecordError> {
        let text = format!("{COMMIT_KEY} {}\n{TREE_KEY} {}\n", self.commit, self.tree);
        write_atomically(path, |file| Ok(file.write_all(text.as_bytes()).map_err(PathIoError::with("write", path))?))
    }
}

impl BuildRecord {
    /// Reads and checks a record.
    pub fn read(path: &Path) -> Result<Self, BuildRecordError> {
        let bytes = fs::read(path).map_err(PathIoError::with("read", path))?;
        let record: Self = serde_json::from_slice(&bytes)
            .map_err(|source| BuildRecordError::Parse { path: path.to_owned(), source })?;
        if record.format != FORMAT {
            return Err(BuildRecordError::Format { path: path.to_owned(), found: record.format });
        }
        let bad = |field, value: &str, expected| BuildRecordError::BadField {
            path: path.to_owned(),
            field,
            value: value.to_owned(),
            expected,
        };
        let hex_commit = record.commit.len() == 40 && record.commit.bytes().all(|byte| byte.is_ascii_hexdigit());
        if !hex_commit && record.commit != "unknown" {
            return Err(bad("commit", &record.commit, "a 40-digit commit hash or \"unknown\""));
        }
        if record.build_root != "unknown" && record.build_root.parse::<Pin>().is_err() {
            return Err(bad("build_root", &record.build_root, "<name>@sha256:<digest> or \"unknown\""));
        }
        for image in &record.base_images {
            if image.parse::<Pin>().is_err() {
                return Err(bad("base_images", image, "<name>@sha256:<digest>"));
            }
        }
        Ok(record)
    }

    /// Writes the record as indented JSON with a final newline; fields in a fixed order, maps
    /// and lists sorted, so the same inputs give the same bytes.
    pub fn write(&self, path: &Path) -> Result<(), BuildRecordError> {
        let mut sorted = self.clone();
        sorted.base_images.sort();
        sorted.base_images.dedup();
        let mut text = serde_json::to_vec_pretty(&sorted).expect("a record always serializes");
        text.push(b'\n');
        write_atomically(path, |file| Ok(file.write_all(&text).map_err(PathIoError::with("write", path))?))
    }

    /// The recorded inputs that differ between `self` (what a published image was built with)
    /// and `here` (what this machine's rebuild used), in the record's field order.
    pub fn differences(&self, here: &BuildRecord) -> Vec<InputDifference> {
        let mut differences = Vec::new();
        let mut compare = |input: String, recorded: Option<&str>, rebuilt: Option<&str>| {
            if recorded != rebuilt {
                differences.push(InputDifference {
                    input,
                    recorded: recorded.unwrap_or("(none)").to_owned(),
                    here: rebuilt.unwrap_or("(none)").to_owned(),
                });
            }
        };
        compare("image".into(), Some(&self.image), Some(&here.image));
        compare("commit".into(), Some(&self.commit), Some(&here.commit));
        compare("tree".into(), Some(&self.tree), Some(&here.tree));
        compare("build root".into(), Some(&self.build_root), Some(&here.build_root));
        let by_name = |images: &[String]| -> BTreeMap<String, String> {
            images
                .iter()
                .map(|image| match image.parse::<Pin>() {
                    Ok(pin) => (pin.name, pin.digest.to_string()),
                    Err(_) => (image.clone(), String::new()),
                })
                .collect()
        };
        let (recorded_images, rebuilt_images) = (by_name(&self.base_images), by_name(&here.base_images));
        for name in recorded_images.keys().chain(rebuilt_images.keys()).collect::<std::collections::BTreeSet<_>>() {
            compare(
                format!("base image {name}"),
                recorded_images.get(name).map(String::as_str),
                rebuilt_images.get(name).map(String::as_str),
            );
        }
        for tool in self.host_tools.keys().chain(here.host_tools.keys()).collect::<std::collections::BTreeSet<_>>() {
            compare(
                format!("host tool {tool}"),
                self.host_tools.get(tool).map(String::as_str),
                here.host_tools.get(tool).map(String::as_str),
            );
        }
        compare("kernel".into(), Some(&self.kernel), Some(&here.kernel));
        compare("icos".into(), Some(&self.icos), Some(&here.icos));
        differences
    }
}

/// One recorded input whose value differs on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDifference {
    pub input: String,
    pub recorded: String,
    pub here: String,
}

impl std::fmt::Display for InputDifference {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: recorded {}, here {}", self.input, self.recorded, self.here)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "icos-build-root@sha256:f8a6d7b42453b5204800076275f0bf34155b10649b1ba3a2bf73305acf6fe144";
    const BASE: &str = "guestos-base-dev@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn record() -> BuildRecord {
        BuildRecord {
            format: FORMAT.into(),
            image: "guestos/dev".into(),
            commit: "bc50823d1f0e9a4b6c7d8e9f0a1b2c3d4e5f6a7b".into(),
            tree: "clean".into(),
            build_root: ROOT.into(),
            base_images: vec![BASE.into()],
            host_tools: [("mke2fs".to_owned(), "mke2fs 1.47.4 (6-Mar-2025)".to_owned())].into(),
            kernel: "6.18.44".into(),
            icos: "0.1.0".into(),
        }
    }

    #[test]
    fn writes_stable_bytes_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut unsorted = record();
        unsorted.base_images =
            vec![BASE.replace("guestos", "zeta"), BASE.into(), BASE.into(), BASE.replace("guestos", "alpha")];
        unsorted.write(&path).unwrap();
        let first = fs::read(&path).unwrap();
        assert!(first.ends_with(b"}\n"));
        let read = BuildRecord::read(&path).unwrap();
        assert_eq!(read.base_images.len(), 3);
        assert!(read.base_images.windows(2).all(|pair| pair[0] < pair[1]));
        read.write(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), first);
    }

    #[test]
    fn refuses_other_formats_unknown_fields_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut json = serde_json::to_value(record()).unwrap();
        json["format"] = "icos-build-record/9".into();
        fs::write(&path, json.to_string()).unwrap();
        assert!(matches!(BuildRecord::read(&path), Err(BuildRecordError::Format { .. })));

        let mut json = serde_json::to_value(record()).unwrap();
        json["surprise"] = 1.into();
        fs::write(&path, json.to_string()).unwrap();
        let error = BuildRecord::read(&path).unwrap_err().to_string();
        assert!(error.contains("surprise") && error.contains(FILE_NAME), "{error}");

        for (field, value) in
            [("commit", "HEAD"), ("build_root", "icos-build-root:latest"), ("base_images", "guestos-base-dev")]
        {
            let mut json = serde_json::to_value(record()).unwrap();
            json[field] = if field == "base_images" { serde_json::json!([value]) } else { value.into() };
            fs::write(&path, json.to_string()).unwrap();
            let error = BuildRecord::read(&path).unwrap_err().to_string();
            assert!(error.contains(field) && error.contains(value), "{error}");
        }
        assert!(matches!(BuildRecord::read(&dir.path().join("missing")), Err(BuildRecordError::Io(_))));
    }

    #[test]
    fn names_each_input_that_differs() {
        assert!(record().differences(&record()).is_empty());
        let mut here = record();
        here.build_root = ROOT.replace("f8a6", "0000");
        here.base_images = vec![BASE.replace("0123", "4567"), BASE.replace("guestos", "hostos")];
        here.host_tools.insert("mke2fs".into(), "mke2fs 1.47.5".into());
        here.host_tools.insert("podman".into(), "podman version 5.7.0".into());
        here.kernel = "6.1.0".into();
        let rendered: Vec<String> = record().differences(&here).iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                format!("build root: recorded {ROOT}, here {}", here.build_root),
                format!(
                    "base image guestos-base-dev: recorded {}, here {}",
                    BASE.split_once('@').unwrap().1,
                    here.base_images[0].split_once('@').unwrap().1
                ),
                format!("base image hostos-base-dev: recorded (none), here {}", BASE.split_once('@').unwrap().1),
                "host tool mke2fs: recorded mke2fs 1.47.4 (6-Mar-2025), here mke2fs 1.47.5".to_owned(),
                "host tool podman: recorded (none), here podman version 5.7.0".to_owned(),
                "kernel: recorded 6.18.44, here 6.1.0".to_owned(),
            ]
        );
    }

    #[test]
    fn reads_the_source_state_from_workspace_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stable-status.txt");
        fs::write(
            &path,
            "BUILD_EMBED_LABEL \nBUILD_HOST somewhere\nSTABLE_ICOS_COMMIT abc\nSTABLE_ICOS_TREE modified\n",
        )
        .unwrap();
        assert_eq!(
            SourceState::from_workspace_status(&path).unwrap(),
            SourceState { commit: "abc".into(), tree: "modified".into() }
        );
        let copy = dir.path().join("source");
        SourceState::from_workspace_status(&path).unwrap().write(&copy).unwrap();
        assert_eq!(fs::read_to_string(&copy).unwrap(), "STABLE_ICOS_COMMIT abc\nSTABLE_ICOS_TREE modified\n");
        fs::write(&path, "BUILD_HOST somewhere\n").unwrap();
        let error = SourceState::from_workspace_status(&path).unwrap_err().to_string();
        assert!(error.contains("STABLE_ICOS_COMMIT") && error.contains("workspace-status"), "{error}");
    }

    #[test]
    fn knows_the_version_cargo_toml_declares() {
        // Under Bazel the version comes from tools/icos/BUILD.bazel: it must be Cargo.toml's.
        let manifest = include_str!("../Cargo.toml");
        assert!(manifest.lines().any(|line| line == format!("version = \"{ICOS_VERSION}\"")), "{ICOS_VERSION}");
    }
}
