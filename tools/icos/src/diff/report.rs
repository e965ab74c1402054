//! What a comparison found, and how it is shown: a tree of differing artifacts, each with its own
//! differences, rendered for people (indented blocks) or as one JSON document.
//!
//! Order, most specific first: inside an artifact come the artifacts nested in it (tar members,
//! partitions), then its files by path, then its own fields (headers, superblock), then the byte
//! ranges that remain. People see a kind of file difference that repeats on many paths (every
//! atime moved) as one line; JSON lists every difference flat, in the same order.
//!
//! The JSON document:
//! - `a`, `b`: the paths compared; `directories`: whether they were directories;
//!   `identical`; `difference_count`; `omitted` (differences left out by `--max-differences`).
//! - `artifacts`: each differing artifact as `location` (the chain of names from the top,
//!   e.g. `["update-img.tar.zst", "root.img"]`) and `kind_a`, `kind_b`.
//! - `differences`: each with `artifact` (its artifact's chain), `path` (the file inside it,
//!   or null), `location` (the chain plus the path), `kind` (`only_in_a`, `only_in_b`,
//!   `artifact_kind`, `type`, `content`, `size`, `permissions`, `owner`, `time`, `xattr`,
//!   `link_target`, `device`, `field`, `text`, `byte_ranges`), `a` and `b` (the two values, shaped
//!   by the kind: digests and sizes for `content`, `{uid, gid}` for `owner`, `{text, seconds,
//!   nanoseconds}` for `time`, `{text, hex, size}` for byte values, where `text` is present only
//!   when the bytes are UTF-8), kind-specific fields (`name` of a time, xattr or field;
//!   `item` and `description` of `only_in_*`; `ranges`, `range_count`, `differing_bytes`, `note`
//!   of `byte_ranges`) and `summary`, the line people see.
//! - Names: a path or xattr name that is UTF-8 is the exact string; one that is not is given in
//!   the escaped form of [`super::escape`] (`\xff` for the byte 0xff, `\\` for a backslash) plus
//!   `path_bytes` / `name_bytes`, the exact bytes as an array of numbers.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::escape::{format_size, hex, preview, quote, short_hex};
use super::tree::Time;

/// One side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn letter(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }
}

/// A file's content as compared: its digest (when known) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub sha256: Option<[u8; 32]>,
    pub size: u64,
}

/// One run of differing bytes, offsets relative to the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
    /// What the structure says is there ("inode table of group 3 ...", "outside any partition").
    pub region: Option<String>,
    /// Whether a difference reported above accounts for it (a file's data, its inode).
    pub explained: bool,
}

/// The bytes of an artifact that differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteRanges {
    pub size_a: u64,
    pub size_b: u64,
    /// Differing bytes within the common length.
    pub differing_bytes: u64,
    /// How many ranges there are in all; `ranges` holds the first of them.
    pub range_count: u64,
    pub ranges: Vec<ByteRange>,
    /// Why ranges count as explained when that is not obvious (blocks allocated differently).
    pub note: Option<String>,
}

/// What differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Present on one side only; `item` names it when it is not a file path (a tar member, a
    /// partition), `description` says what it is.
    OnlyIn {
        side: Side,
        item: Option<String>,
        description: String,
    },
    /// The artifacts are of different kinds (ext4 and FAT, a tar and a disk image).
    ArtifactKind {
        a: String,
        b: String,
    },
    /// File type: regular file, directory, symbolic link, ...
    Type {
        a: String,
        b: String,
    },
    Content {
        a: Digest,
        b: Digest,
    },
    Size {
        a: u64,
        b: u64,
    },
    Permissions {
        a: u32,
        b: u32,
    },
    Owner {
        a: (u64, u64),
        b: (u64, u64),
    },
    Time {
        name: String,
        a: Option<Time>,
        b: Option<Time>,
    },
    Xattr {
        name: Vec<u8>,
        a: Option<Vec<u8>>,
        b: Option<Vec<u8>>,
    },
    LinkTarget {
        a: Vec<u8>,
        b: Vec<u8>,
    },
    Device {
        a: (u32, u32),
        b: (u32, u32),
    },
    /// A named field of a header or of a file's metadata: GPT header and entries, the ext4
    /// superblock, FAT boot sector fields, tar header fields, inode flags.
    Field {
        name: String,
        a: Option<String>,
        b: Option<String>,
    },
    /// Both sides are short text: the texts themselves.
    Text {
        a: Vec<u8>,
        b: Vec<u8>,
    },
    Bytes(ByteRanges),
}

/// A difference inside one artifact; `path` is the file it is about, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: Option<Vec<u8>>,
    pub what: What,
}

impl Difference {
    pub fn at(path: &[u8], what: What) -> Difference {
        Difference { path: Some(path.to_vec()), what }
    }

    pub fn here(what: What) -> Difference {
        Difference { path: None, what }
    }

    pub fn field(name: impl Into<String>, a: Option<String>, b: Option<String>) -> Difference {
        Difference::here(What::Field { name: name.into(), a, b })
    }

    /// The name of a field difference; `None` for other kinds.
    pub fn field_name(&self) -> Option<&str> {
        match &self.what {
            What::Field { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// An artifact whose two sides differ: its name, its kind on each side, the differing artifacts
/// nested in it and its own differences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactDiff {
    /// For people, already escaped and quoted where needed.
    pub name: String,
    pub kind_a: String,
    pub kind_b: String,
    pub children: Vec<ArtifactDiff>,
    pub differences: Vec<Difference>,
}

impl ArtifactDiff {
    pub fn new(name: &str, kind_a: &str, kind_b: &str) -> ArtifactDiff {
        ArtifactDiff {
            name: name.to_owned(),
            kind_a: kind_a.to_owned(),
            kind_b: kind_b.to_owned(),
            children: Vec::new(),
            differences: Vec::new(),
        }
    }

    /// Whether anything was found in it or below it.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty() && self.differences.is_empty()
    }

    /// All differences in it and below it.
    pub fn count(&self) -> usize {
        self.differences.len() + self.children.iter().map(ArtifactDiff::count).sum::<usize>()
    }

    fn kind_label(&self) -> String {
        if self.kind_a == self.kind_b {
            self.kind_a.clone()
        } else {
            format!("{} vs {}", self.kind_a, self.kind_b)
        }
    }
}

/// The result of `icos diff A B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Whether A and B were directories, compared file by file.
    pub directories: bool,
    /// Differences at the top: for directories, files that exist on one side only.
    pub differences: Vec<Difference>,
    /// The differing artifacts: one for two files, one per differing file pair for directories.
    pub artifacts: Vec<ArtifactDiff>,
    /// Files compared (1 for two files).
    pub compared: usize,
}

impl Report {
    pub fn is_identical(&self) -> bool {
        self.differences.is_empty() && self.artifacts.is_empty()
    }

    pub fn count(&self) -> usize {
        self.differences.len() + self.artifacts.iter().map(ArtifactDiff::count).sum::<usize>()
    }

    /// The report for people. At most `max` differences are shown; a line counts the rest.
    pub fn human(&self, max: Option<usize>) -> String {
        let mut out = String::new();
        let mut budget = Budget { left: max.unwrap_or(usize::MAX), omitted: 0 };
        let top = if self.directories {
            format!("{} and {}", self.a.display(), self.b.display())
        } else {
            top_name(&self.a, &self.b)
        };
        if self.is_identical() {
            let files = if self.directories { format!(" ({} files)", self.compared) } else { String::new() };
            let _ = writeln!(out, "{top}: identical{files}");
            return out;
        }
        if self.directories {
            let _ = writeln!(out, "{top}: differ");
            for difference in &self.differences {
                if budget.take() {
                    human_difference(&mut out, difference, 1);
                }
            }
            for artifact in &self.artifacts {
                human_artifact(&mut out, artifact, 1, &mut budget);
            }
        } else {
            for artifact in &self.artifacts {
                human_artifact(&mut out, artifact, 0, &mut budget);
            }
        }
        if budget.omitted > 0 {
            let _ = writeln!(out, "… and {} more differences (see --max-differences)", budget.omitted);
        }
        let count = self.count();
        let files = if self.directories {
            let differing = self.artifacts.len();
            let verb = if differing == 1 { "differs" } else { "differ" };
            format!(" ({differing} of {} files on both sides {verb})", self.compared)
        } else {
            String::new()
        };
        let _ = writeln!(out, "{count} difference{}{files}", if count == 1 { "" } else { "s" });
        out
    }

    /// The report as one JSON document: `a`, `b`, `identical`, `difference_count`, `omitted`,
    /// `artifacts` (each differing artifact's location and kinds) and `differences`.
    pub fn json(&self, max: Option<usize>) -> Value {
        let mut differences = Vec::new();
        let mut artifacts = Vec::new();
        let mut budget = Budget { left: max.unwrap_or(usize::MAX), omitted: 0 };
        for difference in &self.differences {
            if budget.take() {
                differences.push(json_difference(&[], difference));
            }
        }
        for artifact in &self.artifacts {
            json_artifact(artifact, &mut Vec::new(), &mut artifacts, &mut differences, &mut budget);
        }
        json!({
            "a": self.a.to_string_lossy(),
            "b": self.b.to_string_lossy(),
            "directories": self.directories,
            "identical": self.is_identical(),
            "difference_count": self.count(),
            "omitted": budget.omitted,
            "artifacts": artifacts,
            "differences": differences,
        })
    }
}

/// The name shown for a comparison of two files: their common file name, or both.
pub fn top_name(a: &std::path::Path, b: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let name = |path: &std::path::Path| {
        path.file_name().map_or_else(|| quote(path.as_os_str().as_bytes()), |name| quote(name.as_bytes()))
    };
    let (name_a, name_b) = (name(a), name(b));
    if name_a == name_b {
        name_a
    } else {
        format!("{name_a} vs {name_b}")
    }
}

struct Budget {
    left: usize,
    omitted: usize,
}

impl Budget {
    /// Whether one more difference may be shown; counts it as omitted if not.
    fn take(&mut self) -> bool {
        self.take_many(1)
    }

    /// Whether one line standing for `count` differences may be shown.
    fn take_many(&mut self, count: usize) -> bool {
        if self.left == 0 {
            self.omitted += count;
            false
        } else {
            self.left -= 1;
            true
        }
    }
}

/// How many byte ranges people see per artifact.
const SHOWN_RANGES: usize = 20;

/// A kind of file difference found on more paths than this is shown as one line (JSON keeps
/// every one): when every atime moved, one line says so instead of twenty thousand.
const GROUPED: usize = 20;

fn human_artifact(out: &mut String, artifact: &ArtifactDiff, depth: usize, budget: &mut Budget) {
    let indent = "  ".repeat(depth);
    let verdict = if artifact.kind_a == artifact.kind_b { "differs" } else { "kinds differ" };
    let _ = writeln!(out, "{indent}{} ({}): {verdict}", artifact.name, artifact.kind_label());
    for child in &artifact.children {
        human_artifact(out, child, depth + 1, budget);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for difference in &artifact.differences {
        if difference.path.is_some() {
            *counts.entry(category(&difference.what)).or_default() += 1;
        }
    }
    let mut grouped: HashSet<String> = HashSet::new();
    for difference in &artifact.differences {
        if difference.path.is_some() {
            let category = category(&difference.what);
            let count = counts.get(&category).copied().unwrap_or(1);
            if count > GROUPED {
                if grouped.insert(category.clone()) && budget.take_many(count) {
                    let mut first = String::new();
                    human_difference(&mut first, difference, 0);
                    let what = match category.strip_prefix("only in") {
                        Some(_) => format!("{count} paths are {category}"),
                        None => format!("{category} differs on {count} paths"),
                    };
                    let _ = writeln!(out, "{indent}  {what} (--json lists each), the first: {}", first.trim_end());
                }
                continue;
            }
        }
        if budget.take() {
            human_difference(out, difference, depth + 1);
        }
    }
}

/// What kind of difference this is, for grouping: "atime", "content", "xattr user.x", ...
fn category(what: &What) -> String {
    match what {
        What::OnlyIn { side, .. } => format!("only in {}", side.letter()),
        What::ArtifactKind { .. } => "kind".into(),
        What::Type { .. } => "type".into(),
        What::Content { .. } => "content".into(),
        What::Size { .. } => "size".into(),
        What::Permissions { .. } => "permissions".into(),
        What::Owner { .. } => "owner".into(),
        What::Time { name, .. } => name.clone(),
        What::Xattr { name, .. } => format!("xattr {}", quote(name)),
        What::LinkTarget { .. } => "link target".into(),
        What::Device { .. } => "device".into(),
        What::Field { name, .. } => name.clone(),
        What::Text { .. } => "text".into(),
        What::Bytes(_) => "bytes".into(),
    }
}

fn human_difference(out: &mut String, difference: &Difference, depth: usize) {
    let indent = "  ".repeat(depth);
    let subject = difference.path.as_deref().map(quote);
    let with_subject = |text: String| match &subject {
        Some(path) => format!("{path}: {text}"),
        None => text,
    };
    let line = match &difference.what {
        What::OnlyIn { side, item, description } => {
            let name = item.clone().or(subject.clone()).unwrap_or_default();
            format!("{name}: only in {} ({description})", side.letter())
        }
        What::ArtifactKind { a, b } => with_subject(format!("kind {a} → {b}")),
        What::Type { a, b } => with_subject(format!("type {a} → {b}")),
        What::Content { a, b } => with_subject(format!("content differs ({})", content_detail(a, b))),
        What::Size { a, b } => with_subject(format!("size {a} → {b} bytes")),
        What::Permissions { a, b } => with_subject(format!("permissions {a:04o} → {b:04o}")),
        What::Owner { a, b } => with_subject(format!("owner {}:{} → {}:{}", a.0, a.1, b.0, b.1)),
        What::Time { name, a, b } => with_subject(format!("{name} {} → {}", time_text(a), time_text(b))),
        What::Xattr { name, a, b } => {
            let name = quote(name);
            with_subject(match (a, b) {
                (None, Some(b)) => format!("xattr {name} only in B: {}", preview(b, 60)),
                (Some(a), None) => format!("xattr {name} only in A: {}", preview(a, 60)),
                (Some(a), Some(b)) => format!("xattr {name} {} → {}", preview(a, 60), preview(b, 60)),
                (None, None) => format!("xattr {name}"),
            })
        }
        What::LinkTarget { a, b } => with_subject(format!("link target {} → {}", quote(a), quote(b))),
        What::Device { a, b } => with_subject(format!("device {}:{} → {}:{}", a.0, a.1, b.0, b.1)),
        What::Field { name, a, b } => with_subject(format!("{name}: {} → {}", field_text(a), field_text(b))),
        What::Text { a, b } => with_subject(format!("content {} → {}", preview(a, 200), preview(b, 200))),
        What::Bytes(ranges) => {
            let _ = writeln!(out, "{indent}{}", with_subject(bytes_summary(ranges)));
            let unexplained: Vec<&ByteRange> = ranges.ranges.iter().filter(|range| !range.explained).collect();
            for range in unexplained.iter().take(SHOWN_RANGES) {
                let _ = writeln!(out, "{indent}  {}", range_text(range));
            }
            if unexplained.len() > SHOWN_RANGES {
                let _ = writeln!(out, "{indent}  … and {} more listed ranges", unexplained.len() - SHOWN_RANGES);
            }
            return;
        }
    };
    let _ = writeln!(out, "{indent}{line}");
}

fn content_detail(a: &Digest, b: &Digest) -> String {
    let digest = |digest: &Digest| digest.sha256.map_or_else(|| "?".to_owned(), |sha| short_hex(&sha));
    let sizes = if a.size == b.size { format!("{} bytes", a.size) } else { format!("{} → {} bytes", a.size, b.size) };
    format!("sha256 {} → {}, {sizes}", digest(a), digest(b))
}

fn time_text(time: &Option<Time>) -> String {
    time.as_ref().map_or_else(|| "(none)".to_owned(), Time::to_string)
}

fn field_text(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "(none)".to_owned())
}

fn bytes_summary(ranges: &ByteRanges) -> String {
    let mut text = if ranges.range_count == 0 {
        "bytes differ".to_owned()
    } else {
        format!(
            "bytes differ: {} in {} range{}",
            format_size(ranges.differing_bytes),
            ranges.range_count,
            if ranges.range_count == 1 { "" } else { "s" }
        )
    };
    if ranges.size_a != ranges.size_b {
        let _ = write!(text, ", size {} → {}", format_size(ranges.size_a), format_size(ranges.size_b));
    }
    let explained = ranges.ranges.iter().filter(|range| range.explained).count();
    let unexplained = ranges.ranges.len() - explained;
    let unlisted = ranges.range_count.saturating_sub(ranges.ranges.len() as u64);
    if explained > 0 && unexplained == 0 && unlisted == 0 {
        text.push_str("; all within the differences above");
    } else if explained > 0 {
        let _ = write!(text, "; {explained} within the differences above, these not");
    }
    if let (Some(note), true) = (&ranges.note, explained > 0) {
        let _ = write!(text, " ({note})");
    }
    if unlisted > 0 {
        let _ = write!(text, " ({unlisted} ranges after the first {} not examined)", ranges.ranges.len());
    }
    if unexplained > 0 {
        text.push(':');
    }
    text
}

fn range_text(range: &ByteRange) -> String {
    let mut text = format!("{:#x}..{:#x} ({})", range.offset, range.offset + range.length, format_size(range.length));
    if let Some(region) = &range.region {
        let _ = write!(text, ": {region}");
    }
    text
}

fn json_artifact(
    artifact: &ArtifactDiff,
    chain: &mut Vec<String>,
    artifacts: &mut Vec<Value>,
    differences: &mut Vec<Value>,
    budget: &mut Budget,
) {
    chain.push(artifact.name.clone());
    artifacts.push(json!({ "location": chain.clone(), "kind_a": artifact.kind_a, "kind_b": artifact.kind_b }));
    for child in &artifact.children {
        json_artifact(child, chain, artifacts, differences, budget);
    }
    for difference in &artifact.differences {
        if budget.take() {
            differences.push(json_difference(chain, difference));
        }
    }
    chain.pop();
}

/// A name for JSON: the exact string when it is UTF-8; otherwise the escaped form, with the bytes
/// in a separate field that the caller adds.
fn json_name(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => super::escape::escape(bytes),
    }
}

/// A byte value (xattr, text): `text` when it is UTF-8, always `hex`.
fn json_bytes(bytes: &Option<Vec<u8>>) -> Value {
    match bytes {
        None => Value::Null,
        Some(bytes) => {
            let mut value = Map::new();
            if let Ok(text) = std::str::from_utf8(bytes) {
                value.insert("text".into(), text.into());
            }
            value.insert("hex".into(), hex(bytes).into());
            value.insert("size".into(), bytes.len().into());
            Value::Object(value)
        }
    }
}

fn json_digest(digest: &Digest) -> Value {
    json!({ "sha256": digest.sha256.map(|sha| hex(&sha)), "size": digest.size })
}

fn json_time(time: &Option<Time>) -> Value {
    match time {
        None => Value::Null,
        Some(time) => json!({ "text": time.to_string(), "seconds": time.seconds, "nanoseconds": time.nanoseconds }),
    }
}

fn json_difference(chain: &[String], difference: &Difference) -> Value {
    let mut object = Map::new();
    let mut location: Vec<Value> = chain.iter().map(|name| Value::from(name.as_str())).collect();
    object.insert("artifact".into(), chain.to_vec().into());
    match &difference.path {
        Some(path) => {
            let name = json_name(path);
            location.push(name.clone().into());
            object.insert("path".into(), name.into());
            if std::str::from_utf8(path).is_err() {
                object.insert("path_bytes".into(), path.clone().into());
            }
        }
        None => {
            object.insert("path".into(), Value::Null);
        }
    }
    object.insert("location".into(), location.into());
    let (kind, a, b, extra): (&str, Value, Value, Vec<(&str, Value)>) = match &difference.what {
        What::OnlyIn { side, item, description } => (
            match side {
                Side::A => "only_in_a",
                Side::B => "only_in_b",
            },
            Value::Null,
            Value::Null,
            vec![("item", item.clone().into()), ("description", description.clone().into())],
        ),
        What::ArtifactKind { a, b } => ("artifact_kind", a.clone().into(), b.clone().into(), vec![]),
        What::Type { a, b } => ("type", a.clone().into(), b.clone().into(), vec![]),
        What::Content { a, b } => ("content", json_digest(a), json_digest(b), vec![]),
        What::Size { a, b } => ("size", (*a).into(), (*b).into(), vec![]),
        What::Permissions { a, b } => ("permissions", format!("{a:04o}").into(), format!("{b:04o}").into(), vec![]),
        What::Owner { a, b } => ("owner", json!({"uid": a.0, "gid": a.1}), json!({"uid": b.0, "gid": b.1}), vec![]),
        What::Time { name, a, b } => ("time", json_time(a), json_time(b), vec![("name", name.clone().into())]),
        What::Xattr { name, a, b } => {
            let mut extra = vec![("name", json_name(name).into())];
            if std::str::from_utf8(name).is_err() {
                extra.push(("name_bytes", name.clone().into()));
            }
            ("xattr", json_bytes(a), json_bytes(b), extra)
        }
        What::LinkTarget { a, b } => {
            ("link_target", json_bytes(&Some(a.clone())), json_bytes(&Some(b.clone())), vec![])
        }
        What::Device { a, b } => {
            ("device", json!({"major": a.0, "minor": a.1}), json!({"major": b.0, "minor": b.1}), vec![])
        }
        What::Field { name, a, b } => {
            ("field", a.clone().into(), b.clone().into(), vec![("name", name.clone().into())])
        }
        What::Text { a, b } => ("text", json_bytes(&Some(a.clone())), json_bytes(&Some(b.clone())), vec![]),
        What::Bytes(ranges) => {
            let listed: Vec<Value> = ranges
                .ranges
                .iter()
                .map(|range| {
                    json!({
                        "offset": range.offset,
                        "length": range.length,
                        "region": range.region,
                        "explained": range.explained,
                    })
                })
                .collect();
            (
                "byte_ranges",
                json!({"size": ranges.size_a}),
                json!({"size": ranges.size_b}),
                vec![
                    ("differing_bytes", ranges.differing_bytes.into()),
                    ("range_count", ranges.range_count.into()),
                    ("ranges", listed.into()),
                    ("note", ranges.note.clone().into()),
                ],
            )
        }
    };
    object.insert("kind".into(), kind.into());
    for (key, value) in extra {
        object.insert(key.into(), value);
    }
    object.insert("a".into(), a);
    object.insert("b".into(), b);
    let mut summary = String::new();
    human_difference(&mut summary, difference, 0);
    object.insert("summary".into(), summary.lines().next().unwrap_or_default().into());
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut root =
            ArtifactDiff::new("update-img.tar.zst", "zstd-compressed tar of images", "zstd-compressed tar of images");
        let mut child = ArtifactDiff::new("root.img", "ext4", "ext4");
        child.differences.push(Difference::at(
            b"/etc/hostname",
            What::Content {
                a: Digest { sha256: Some([0x1a; 32]), size: 12 },
                b: Digest { sha256: Some([0x3c; 32]), size: 13 },
            },
        ));
        child.differences.push(Difference::at(
            b"/odd\xffname",
            What::Time {
                name: "mtime".into(),
                a: Some(Time { seconds: 1_704_067_200, nanoseconds: 0, utc: true }),
                b: Some(Time { seconds: 1_704_153_600, nanoseconds: 0, utc: true }),
            },
        ));
        root.children.push(child);
        Report {
            a: "a/update-img.tar.zst".into(),
            b: "b/update-img.tar.zst".into(),
            directories: false,
            differences: Vec::new(),
            artifacts: vec![root],
            compared: 1,
        }
    }

    #[test]
    fn human_output_is_indented_by_artifact() {
        let text = sample().human(None);
        assert_eq!(
            text,
            "update-img.tar.zst (zstd-compressed tar of images): differs\n\
             \x20 root.img (ext4): differs\n\
             \x20   /etc/hostname: content differs (sha256 1a1a1a1a1a1a… → 3c3c3c3c3c3c…, 12 → 13 bytes)\n\
             \x20   \"/odd\\xffname\": mtime 2024-01-01T00:00:00Z → 2024-01-02T00:00:00Z\n\
             2 differences\n"
        );
        let capped = sample().human(Some(1));
        assert!(capped.contains("… and 1 more differences"), "{capped}");
        assert!(!capped.contains("odd"), "{capped}");
    }

    #[test]
    fn json_keeps_exact_names_and_bytes_of_non_utf8_ones() {
        let value = sample().json(None);
        assert_eq!(value["identical"], false);
        assert_eq!(value["difference_count"], 2);
        let differences = value["differences"].as_array().unwrap();
        assert_eq!(differences[0]["location"], json!(["update-img.tar.zst", "root.img", "/etc/hostname"]));
        assert_eq!(differences[0]["kind"], "content");
        assert_eq!(differences[0]["b"]["size"], 13);
        assert_eq!(differences[1]["path"], "/odd\\xffname");
        assert_eq!(differences[1]["path_bytes"], json!(b"/odd\xffname".to_vec()));
        assert_eq!(differences[1]["a"]["text"], "2024-01-01T00:00:00Z");
        assert!(differences[0].get("path_bytes").is_none());
        assert_eq!(value["artifacts"][1]["location"], json!(["update-img.tar.zst", "root.img"]));
    }

    #[test]
    fn a_difference_on_many_paths_is_one_line_for_people() {
        let mut report = sample();
        let time = |seconds| Some(Time { seconds, nanoseconds: 0, utc: true });
        for index in 0..30 {
            report.artifacts[0].children[0].differences.push(Difference::at(
                format!("/usr/lib/f{index:02}").as_bytes(),
                What::Time { name: "atime".into(), a: time(0), b: time(86_400) },
            ));
        }
        let text = report.human(None);
        assert!(
            text.contains(
                "    atime differs on 30 paths (--json lists each), the first: \
                 /usr/lib/f00: atime 1970-01-01T00:00:00Z → 1970-01-02T00:00:00Z\n"
            ),
            "{text}"
        );
        assert!(!text.contains("/usr/lib/f01"), "{text}");
        assert!(text.ends_with("32 differences\n"), "{text}");
        assert_eq!(report.json(None)["differences"].as_array().map(Vec::len), Some(32));
        let capped = report.human(Some(2));
        assert!(capped.contains("… and 30 more differences"), "{capped}");
    }

    #[test]
    fn identical_reports_say_so() {
        let report = Report { artifacts: Vec::new(), ..sample() };
        assert!(report.is_identical());
        assert_eq!(report.human(None), "update-img.tar.zst: identical\n");
        assert_eq!(report.json(None)["differences"], json!([]));
    }
}
