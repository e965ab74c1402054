//! One error for a failed file-system call: what was being done, to which path, and why. Error
//! enums wrap it (`#[error(transparent)] Io(#[from] PathIoError)`) instead of each declaring its
//! own read and write variants.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct PathIoError {
    /// What was being done, as a verb: "read", "write", "create", "remove" ...
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl PathIoError {
    /// A closure for `map_err` that names the action and the path.
    pub fn with<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PathIoError + 'a {
        move |source| PathIoError { action, path: path.to_owned(), source }
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_action_the_path_and_the_cause() {
        let error =
            std::fs::read("/nonexistent/icos").map_err(PathIoError::with("read", Path::new("/nonexistent/icos")));
        let error = error.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        let text = error.to_string();
        assert!(text.starts_with("cannot read /nonexistent/icos: "), "{text}");
    }
}
