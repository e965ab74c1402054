//! The git steps of repro-check: which commit, whether the working tree has changes the commit
//! lacks, and a clean clone at that commit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("`git {args}` failed in {dir}: {stderr}")]
    Failed { args: String, dir: PathBuf, stderr: String },
    #[error("{dir} has changes that commit {commit} does not contain, so rebuilding the commit would not check them:\n{changes}\ncommit them, or pass --allow-dirty to check the commit anyway")]
    Dirty { dir: PathBuf, commit: String, changes: String },
}

/// A git working tree on this machine.
#[derive(Debug, Clone)]
pub struct Repository {
    pub root: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> Result<Output, GitError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // Messages are parsed nowhere, but must be readable in reports whatever the locale.
        .env("LC_ALL", "C")
        .output()
        .map_err(GitError::Spawn)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(GitError::Failed {
            args: args.join(" "),
            dir: dir.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn stdout_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl Repository {
    /// The working tree that contains `dir`.
    pub fn containing(dir: &Path) -> Result<Self, GitError> {
        let root = stdout_line(&git(dir, &["rev-parse", "--show-toplevel"])?);
        Ok(Self { root: PathBuf::from(root) })
    }

    /// The full hash of a revision (`HEAD`, a tag, a short hash).
    pub fn resolve(&self, revision: &str) -> Result<String, GitError> {
        let spec = format!("{revision}^{{commit}}");
        Ok(stdout_line(&git(&self.root, &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec])?))
    }

    /// Refuses a working tree with changes to tracked files or untracked files that are not
    /// ignored: they are not in the commit, so a clean rebuild of it would not include them.
    pub fn check_clean(&self, commit: &str) -> Result<(), GitError> {
        let output = git(&self.root, &["status", "--porcelain=v1", "--untracked-files=normal"])?;
        let changes = String::from_utf8_lossy(&output.stdout);
        if changes.trim().is_empty() {
            return Ok(());
        }
        let lines: Vec<&str> = changes.lines().collect();
        let mut shown = lines.iter().take(10).map(|line| format!("  {line}")).collect::<Vec<_>>().join("\n");
        if lines.len() > 10 {
            shown.push_str(&format!("\n  … and {} more", lines.len() - 10));
        }
        Err(GitError::Dirty { dir: self.root.clone(), commit: commit.to_owned(), changes: shown })
    }
}

/// Clones `repository` (a path or URL) into `destination` and checks out `commit`, detached.
/// A local path is cloned through file:// so that git copies objects instead of hard-linking
/// them: the clone shares nothing with the tree it checks.
pub fn clone_at(repository: &str, commit: &str, destination: &Path) -> Result<(), GitError> {
    let source = if Path::new(repository).is_dir() {
        let absolute = std::fs::canonicalize(repository).map_err(GitError::Spawn)?;
        format!("file://{}", absolute.display())
    } else {
        repository.to_owned()
    };
    let parent = destination.parent().unwrap_or(Path::new("."));
    let destination_text = destination.to_string_lossy();
    git(parent, &["clone", "--quiet", "--no-checkout", "--", &source, &destination_text])?;
    git(destination, &["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn init_repository(dir: &Path) -> Repository {
        for args in [
            &["init", "--quiet", "--initial-branch=main"][..],
            &["config", "user.email", "test@example.com"],
            &["config", "user.name", "test"],
        ] {
            git(dir, args).unwrap();
        }
        fs::write(dir.join("a"), b"1").unwrap();
        git(dir, &["add", "a"]).unwrap();
        git(dir, &["commit", "--quiet", "-m", "first"]).unwrap();
        Repository::containing(dir).unwrap()
    }

    #[test]
    fn resolves_refuses_dirty_trees_and_clones_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let repository = init_repository(dir.path());
        let first = repository.resolve("HEAD").unwrap();
        assert_eq!(first.len(), 40);
        repository.check_clean(&first).unwrap();

        fs::write(dir.path().join("a"), b"2").unwrap();
        let error = repository.check_clean(&first).unwrap_err().to_string();
        assert!(error.contains(" M a") && error.contains("--allow-dirty"), "{error}");
        git(dir.path(), &["commit", "--quiet", "-am", "second"]).unwrap();
        fs::write(dir.path().join("untracked"), b"").unwrap();
        assert!(repository.check_clean("HEAD").unwrap_err().to_string().contains("?? untracked"));

        assert!(repository.resolve("no-such-revision").is_err());

        let clones = tempfile::tempdir().unwrap();
        let clone = clones.path().join("src");
        clone_at(&dir.path().to_string_lossy(), &first, &clone).unwrap();
        assert_eq!(fs::read(clone.join("a")).unwrap(), b"1");
        assert_eq!(Repository { root: clone.clone() }.resolve("HEAD").unwrap(), first);
        assert!(!clone.join("untracked").exists());
    }
}
