//! Bazel execution logs (`--execution_log_json_file`): which spawns of a build ran, and where,
//! which came from a cache, and which were forbidden to be cached or to run remotely. The
//! cacheability check reads the log of a build in a fresh output base that shares a cache with an
//! earlier build: every image action must then be a cache hit, so that a shared remote cache
//! serves every step. The remote-execution check reads the log of a `--config=rbe` build from a
//! fresh output base: every image action must have run on a remote worker.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;

/// The fields of Bazel's `SpawnExec` message that the check needs. Proto3 JSON leaves out
/// fields at their default, so absent booleans are false.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Spawn {
    pub mnemonic: String,
    pub target_label: String,
    /// Where it ran or came from: "remote", "remote cache hit", "disk cache hit",
    /// "processwrapper-sandbox", ...
    pub runner: String,
    /// False when the action may not run remotely (tagged `no-remote-exec`, `no-remote` or
    /// `local`).
    pub remotable: bool,
    /// The result came from a (disk or remote) cache; Bazel 7.0 to 7.3 call it remoteCacheHit.
    #[serde(alias = "remoteCacheHit")]
    pub cache_hit: bool,
    /// False when the action is tagged `no-cache` (or otherwise may not be cached at all).
    pub cacheable: bool,
    /// False when the action is tagged `no-remote-cache` or `no-remote`.
    pub remote_cacheable: bool,
    pub progress_message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecLogError {
    #[error("{path}: not a Bazel JSON execution log: {source}")]
    Parse { path: String, source: serde_json::Error },
}

/// Reads a JSON execution log: a stream of `SpawnExec` objects, one after the other.
pub fn read_exec_log(reader: impl Read, path: &str) -> Result<Vec<Spawn>, ExecLogError> {
    serde_json::Deserializer::from_reader(reader)
        .into_iter::<Spawn>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ExecLogError::Parse { path: path.to_owned(), source })
}

/// What every image action of a build must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// It came from a cache (a build sharing the cache of an earlier one).
    CacheHit,
    /// It ran on a remote executor's worker (the runner Bazel calls "remote").
    RemoteExecution,
}

/// The runner Bazel names for a spawn that a remote executor ran.
const REMOTE_RUNNER: &str = "remote";

/// Why an image action fails the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Tagged so that no cache may hold its result.
    NotCacheable,
    /// Tagged so that only the local cache may hold its result.
    NotRemoteCacheable,
    /// Ran instead of coming from the shared cache: its key differs between the builds.
    Executed,
    /// Tagged so that it may not run remotely.
    NotRemotable,
    /// Did not run on the remote executor, but here: its runner.
    NotRemote(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::NotCacheable => formatter.write_str("may not be cached (tagged no-cache?)"),
            Problem::NotRemoteCacheable => {
                formatter.write_str("may not be cached remotely (tagged no-remote-cache or no-remote?)")
            }
            Problem::Executed => formatter
                .write_str("executed instead of coming from the cache: its action key differs between the builds"),
            Problem::NotRemotable => {
                formatter.write_str("may not run remotely (tagged no-remote-exec, no-remote or local?)")
            }
            Problem::NotRemote(runner) => write!(formatter, "ran on {runner:?}, not on the remote executor"),
        }
    }
}

/// Whether `spawn` shows what `expectation` asks for, and if not, why.
fn verdict(spawn: &Spawn, expectation: Expectation) -> Result<(), Problem> {
    match expectation {
        Expectation::CacheHit if !spawn.cacheable => Err(Problem::NotCacheable),
        Expectation::CacheHit if !spawn.remote_cacheable => Err(Problem::NotRemoteCacheable),
        Expectation::CacheHit if !spawn.cache_hit => Err(Problem::Executed),
        Expectation::RemoteExecution if !spawn.remotable => Err(Problem::NotRemotable),
        Expectation::RemoteExecution if spawn.runner != REMOTE_RUNNER => Err(Problem::NotRemote(spawn.runner.clone())),
        _ => Ok(()),
    }
}

/// The verdict on one build's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Spawns per runner ("disk cache hit", "linux-sandbox", ...), all actions.
    pub by_runner: BTreeMap<String, usize>,
    /// Image actions (those of targets under the image packages) and how many showed what was
    /// expected.
    pub image_actions: usize,
    pub image_passed: usize,
    /// Image actions that fail the check.
    pub problems: Vec<(Spawn, Problem)>,
    /// Other actions that do not show what was expected: reported, not failed (e.g. tests, which
    /// are not asked for).
    pub others: Vec<(Spawn, Problem)>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.image_actions > 0
    }
}

/// Checks a build's spawns: every action of a target in one of `image_packages` (label
/// prefixes such as `//ic-os/`) must show `expectation`; with [`Expectation::CacheHit`], be
/// cacheable, remotely too, and a cache hit; with [`Expectation::RemoteExecution`], be allowed
/// to run remotely and have run on the remote executor.
pub fn check(spawns: &[Spawn], image_packages: &[String], expectation: Expectation) -> Report {
    let mut report = Report::default();
    for spawn in spawns {
        *report.by_runner.entry(spawn.runner.clone()).or_default() += 1;
        // Labels of the main repository print as //pkg:name or @@//pkg:name depending on the
        // Bazel version.
        let label = spawn.target_label.trim_start_matches("@@").trim_start_matches('@');
        let is_image_action = image_packages.iter().any(|prefix| label.starts_with(prefix.as_str()));
        let verdict = verdict(spawn, expectation);
        if !is_image_action {
            if let Err(problem) = verdict {
                report.others.push((spawn.clone(), problem));
            }
            continue;
        }
        report.image_actions += 1;
        match verdict {
            Ok(()) => report.image_passed += 1,
            Err(problem) => report.problems.push((spawn.clone(), problem)),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    // Spawns as Bazel 7 writes them (pretty-printed objects one after the other); false
    // booleans are left out.
    const LOG: &str = r#"{
  "commandArgs": ["bazel-out/k8-opt-exec/bin/tools/icos/icos", "ext4"],
  "remotable": true,
  "cacheable": true,
  "mnemonic": "Ext4Image",
  "runner": "disk cache hit",
  "cacheHit": true,
  "remoteCacheable": true,
  "targetLabel": "//ic-os/guestos/envs/dev:_root_img"
}{
  "mnemonic": "Rustc",
  "runner": "linux-sandbox",
  "remoteCacheHit": false,
  "cacheable": true,
  "remoteCacheable": true,
  "targetLabel": "@@rules_rust~~crate~crates__sha2-0.10.8//:sha2"
}
{"mnemonic": "ContainerRootfs", "runner": "linux-sandbox", "targetLabel": "//ic-os/guestos/envs/prod:rootfs-tree", "cacheable": true}
{"mnemonic": "PinnedImage", "runner": "disk cache hit", "cacheHit": true, "targetLabel": "@@_main~base_images~guestos_base_dev//:image", "cacheable": true, "remoteCacheable": true}
"#;

    #[test]
    fn reads_a_stream_of_spawns_with_absent_booleans_false() {
        let spawns = read_exec_log(LOG.as_bytes(), "log.json").unwrap();
        assert_eq!(spawns.len(), 4);
        assert!(spawns[0].cache_hit && spawns[0].cacheable);
        assert!(!spawns[1].cache_hit);
        assert!(!spawns[2].remote_cacheable);
        let error = read_exec_log(&b"{\"mnemonic\": 3}"[..], "bad.json").unwrap_err();
        assert!(error.to_string().starts_with("bad.json: not a Bazel JSON execution log"), "{error}");
    }

    #[test]
    fn fails_image_actions_that_ran_or_may_not_be_cached() {
        let spawns = read_exec_log(LOG.as_bytes(), "log.json").unwrap();
        let packages = ["//ic-os/".to_owned(), "_main~base_images~".to_owned()];
        let report = check(&spawns, &packages, Expectation::CacheHit);
        assert_eq!((report.image_actions, report.image_passed), (3, 2));
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].0.mnemonic, "ContainerRootfs");
        assert_eq!(report.problems[0].1, Problem::NotRemoteCacheable);
        assert_eq!(report.others.len(), 1);
        assert_eq!(report.by_runner["linux-sandbox"], 2);
        assert_eq!(report.by_runner["disk cache hit"], 2);
        assert!(!report.passed());

        let mut all_hits = spawns.clone();
        all_hits[2].remote_cacheable = true;
        assert_eq!(check(&all_hits, &["//ic-os/".to_owned()], Expectation::CacheHit).problems[0].1, Problem::Executed);
        all_hits[2].cache_hit = true;
        assert!(check(&all_hits, &["//ic-os/".to_owned()], Expectation::CacheHit).passed());
        all_hits[0].cacheable = false;
        assert_eq!(
            check(&all_hits, &["//ic-os/".to_owned()], Expectation::CacheHit).problems[0].1,
            Problem::NotCacheable
        );
        // A log with no image action at all proves nothing.
        assert!(!check(&all_hits, &["//nothing/".to_owned()], Expectation::CacheHit).passed());
    }

    #[test]
    fn fails_image_actions_that_did_not_run_on_the_remote_executor() {
        let log = r#"{"mnemonic": "Ext4Image", "runner": "remote", "remotable": true, "cacheable": true, "targetLabel": "//ic-os/guestos/envs/dev:_root_img"}
{"mnemonic": "ContainerRootfs", "runner": "processwrapper-sandbox", "cacheable": true, "targetLabel": "//ic-os/guestos/envs/dev:rootfs-tree"}
{"mnemonic": "DiskImage", "runner": "remote cache hit", "remotable": true, "cacheHit": true, "targetLabel": "//ic-os/guestos/envs/dev:disk-img"}
{"mnemonic": "Rustc", "runner": "processwrapper-sandbox", "remotable": true, "targetLabel": "//tools/icos:icos_lib"}
"#;
        let spawns = read_exec_log(log.as_bytes(), "log.json").unwrap();
        let report = check(&spawns, &["//ic-os/".to_owned()], Expectation::RemoteExecution);
        assert_eq!((report.image_actions, report.image_passed), (3, 1));
        assert_eq!(report.problems[0].1, Problem::NotRemotable);
        assert_eq!(report.problems[1].1, Problem::NotRemote("remote cache hit".to_owned()));
        assert_eq!(report.problems[1].1.to_string(), "ran on \"remote cache hit\", not on the remote executor");
        assert_eq!(report.others[0].1, Problem::NotRemote("processwrapper-sandbox".to_owned()));
        assert!(!report.passed());
        let mut remote = spawns.clone();
        for spawn in &mut remote {
            (spawn.runner, spawn.remotable) = ("remote".to_owned(), true);
        }
        assert!(check(&remote, &["//ic-os/".to_owned()], Expectation::RemoteExecution).passed());
    }
}
