//! Bazel execution logs (`--execution_log_json_file`): which spawns of a build ran, which came
//! from a cache, and which were forbidden to be cached. The cacheability check reads the log of a
//! build in a fresh output base that shares a disk cache with an earlier build: every image action
//! must then be a cache hit, so that a shared remote cache serves every step.

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
    pub runner: String,
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

/// Why an image action fails the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Tagged so that no cache may hold its result.
    NotCacheable,
    /// Tagged so that only the local cache may hold its result.
    NotRemoteCacheable,
    /// Ran instead of coming from the shared cache: its key differs between the builds.
    Executed,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Problem::NotCacheable => "may not be cached (tagged no-cache?)",
            Problem::NotRemoteCacheable => "may not be cached remotely (tagged no-remote-cache or no-remote?)",
            Problem::Executed => "executed instead of coming from the cache: its action key differs between the builds",
        })
    }
}

/// The verdict on one build's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheReport {
    /// Spawns per runner ("disk cache hit", "linux-sandbox", ...), all actions.
    pub by_runner: BTreeMap<String, usize>,
    /// Image actions (those of targets under the image packages) and how many were cache hits.
    pub image_actions: usize,
    pub image_cache_hits: usize,
    /// Image actions that fail the check.
    pub problems: Vec<(Spawn, Problem)>,
    /// Other actions that executed: reported, not failed (e.g. tests, which are not asked for).
    pub other_executed: Vec<Spawn>,
}

impl CacheReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.image_actions > 0
    }
}

/// Checks a build's spawns: every action of a target in one of `image_packages` (label
/// prefixes such as `//ic-os/`) must be cacheable, remotely too, and a cache hit.
pub fn check_cache_hits(spawns: &[Spawn], image_packages: &[String]) -> CacheReport {
    let mut report = CacheReport::default();
    for spawn in spawns {
        *report.by_runner.entry(spawn.runner.clone()).or_default() += 1;
        // Labels of the main repository print as //pkg:name or @@//pkg:name depending on the
        // Bazel version.
        let label = spawn.target_label.trim_start_matches("@@").trim_start_matches('@');
        let is_image_action = image_packages.iter().any(|prefix| label.starts_with(prefix.as_str()));
        if !is_image_action {
            if !spawn.cache_hit {
                report.other_executed.push(spawn.clone());
            }
            continue;
        }
        report.image_actions += 1;
        if !spawn.cacheable {
            report.problems.push((spawn.clone(), Problem::NotCacheable));
        } else if !spawn.remote_cacheable {
            report.problems.push((spawn.clone(), Problem::NotRemoteCacheable));
        } else if !spawn.cache_hit {
            report.problems.push((spawn.clone(), Problem::Executed));
        } else {
            report.image_cache_hits += 1;
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
        let report = check_cache_hits(&spawns, &packages);
        assert_eq!((report.image_actions, report.image_cache_hits), (3, 2));
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].0.mnemonic, "ContainerRootfs");
        assert_eq!(report.problems[0].1, Problem::NotRemoteCacheable);
        assert_eq!(report.other_executed.len(), 1);
        assert_eq!(report.by_runner["linux-sandbox"], 2);
        assert_eq!(report.by_runner["disk cache hit"], 2);
        assert!(!report.passed());

        let mut all_hits = spawns.clone();
        all_hits[2].remote_cacheable = true;
        assert_eq!(check_cache_hits(&all_hits, &["//ic-os/".to_owned()]).problems[0].1, Problem::Executed);
        all_hits[2].cache_hit = true;
        assert!(check_cache_hits(&all_hits, &["//ic-os/".to_owned()]).passed());
        all_hits[0].cacheable = false;
        assert_eq!(check_cache_hits(&all_hits, &["//ic-os/".to_owned()]).problems[0].1, Problem::NotCacheable);
        // A log with no image action at all proves nothing.
        assert!(!check_cache_hits(&all_hits, &["//nothing/".to_owned()]).passed());
    }
}
