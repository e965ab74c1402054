//! What changed between two locks of a base image, as Markdown for the body of a re-pin pull
//! request: the reviewer sees which packages came, went, or moved to which version.

use std::cmp::Ordering;

use super::dpkg::compare_versions;
use super::lock::{diff, Lock};

/// A Markdown section titled `title` (e.g. "GuestOS dev") that lists the packages added,
/// removed, upgraded and downgraded from `old` to `new`, or says that nothing changed. Versions
/// are ordered as dpkg orders them, so that a snapshot older than the lock shows as a downgrade.
pub fn summary(title: &str, old: &Lock, new: &Lock) -> String {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut upgraded = Vec::new();
    let mut downgraded = Vec::new();
    for difference in diff(old, new) {
        let name = &difference.name;
        match (difference.old, difference.new) {
            (None, Some(new)) => added.push(format!("`{name}` {new}")),
            (Some(old), None) => removed.push(format!("`{name}` {old}")),
            (Some(old), Some(new)) => {
                let line = format!("`{name}` {old} → {new}");
                match compare_versions(&old, &new) {
                    Ordering::Greater => downgraded.push(line),
                    _ => upgraded.push(line),
                }
            }
            // `diff` yields only packages that one of the locks has.
            (None, None) => {}
        }
    }
    let mut text = format!("## {title}\n\n");
    let sections = [("Added", added), ("Removed", removed), ("Upgraded", upgraded), ("Downgraded", downgraded)];
    if sections.iter().all(|(_, lines)| lines.is_empty()) {
        text.push_str(&format!("No changes ({} packages).\n", new.packages.len()));
        return text;
    }
    for (heading, lines) in sections.iter().filter(|(_, lines)| !lines.is_empty()) {
        text.push_str(&format!("{heading} ({}):\n\n", lines.len()));
        for line in lines {
            text.push_str(&format!("- {line}\n"));
        }
        text.push('\n');
    }
    text.pop();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(pairs: &[(&str, &str)]) -> Lock {
        Lock { packages: pairs.iter().map(|(name, version)| (name.to_string(), version.to_string())).collect() }
    }

    #[test]
    fn lists_added_removed_upgraded_and_downgraded_packages() {
        let old = lock(&[("gone", "1.0"), ("libc6", "2.41-12"), ("same", "1"), ("zstd", "1.5.7+dfsg-1")]);
        let new =
            lock(&[("libc6", "2.41-12+deb13u1"), ("new-a", "2"), ("new-b", "1:3"), ("same", "1"), ("zstd", "1.5.6")]);
        assert_eq!(
            summary("GuestOS dev", &old, &new),
            "## GuestOS dev\n\n\
             Added (2):\n\n- `new-a` 2\n- `new-b` 1:3\n\n\
             Removed (1):\n\n- `gone` 1.0\n\n\
             Upgraded (1):\n\n- `libc6` 2.41-12 → 2.41-12+deb13u1\n\n\
             Downgraded (1):\n\n- `zstd` 1.5.7+dfsg-1 → 1.5.6\n"
        );
    }

    #[test]
    fn says_when_nothing_changed() {
        let same = lock(&[("libc6", "2.41-12"), ("udev", "257.8-1")]);
        assert_eq!(summary("GuestOS prod", &same, &same), "## GuestOS prod\n\nNo changes (2 packages).\n");
    }

    #[test]
    fn a_first_lock_adds_everything() {
        let new = lock(&[("libc6", "2.41-12")]);
        assert_eq!(
            summary("GuestOS dev", &Lock::default(), &new),
            "## GuestOS dev\n\nAdded (1):\n\n- `libc6` 2.41-12\n"
        );
    }
}
