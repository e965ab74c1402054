//! Why a comparison could not be made. Every error names the file, and inside it the chain of
//! members and partitions, where it happened.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is {kind}; only files and directories can be compared")]
    NotComparable { path: PathBuf, kind: &'static str },
    #[error("{a} is {kind_a} but {b} is {kind_b}: compare two files or two directories")]
    Mismatch { a: PathBuf, kind_a: &'static str, b: PathBuf, kind_b: &'static str },
    #[error("{artifact}: cannot read: {source}")]
    Read { artifact: String, source: io::Error },
    #[error("{artifact}: not a valid {kind}: {problem}")]
    Corrupt { artifact: String, kind: &'static str, problem: String },
    #[error("{artifact}: {source}")]
    Ext4 { artifact: String, source: crate::ext4::read::Ext4ReadError },
    #[error("{artifact}: {problem}")]
    Unsupported { artifact: String, problem: String },
    #[error("cannot use the temporary directory ({}): {source}", std::env::temp_dir().display())]
    Temporary { source: io::Error },
}

impl DiffError {
    pub fn read(artifact: &str, source: io::Error) -> DiffError {
        DiffError::Read { artifact: artifact.to_owned(), source }
    }

    pub fn corrupt(artifact: &str, kind: &'static str, problem: impl ToString) -> DiffError {
        DiffError::Corrupt { artifact: artifact.to_owned(), kind, problem: problem.to_string() }
    }
}
