//! Writing outputs so that a failure never leaves a partial file behind.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why an output file could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot create a temporary file next to {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot move the finished output to {path}: {source}")]
    Persist { path: PathBuf, source: io::Error },
}

/// Creates `path` by letting `write` fill a temporary file in the same directory, then renaming
/// it into place. When `write` fails the temporary file is removed and `path` is left untouched.
/// The result is readable by everyone (0644) whatever the umask, like any build output.
pub fn write_atomically<T, E>(path: &Path, write: impl FnOnce(&mut File) -> Result<T, E>) -> Result<T, E>
where
    E: From<OutputError>,
{
    write_atomically_via_path(path, |file, _| write(file))
}

/// [`write_atomically`] for writers that also need the temporary file's path, such as an external
/// program that writes the output itself.
pub fn write_atomically_via_path<T, E>(
    path: &Path,
    write: impl FnOnce(&mut File, &Path) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<OutputError>,
{
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let create_error = |source| OutputError::Create { path: path.to_owned(), source };
    let mut temporary =
        tempfile::Builder::new().prefix(".icos-").suffix(".partial").tempfile_in(dir).map_err(create_error)?;
    let temporary_path = temporary.path().to_owned();
    let value = write(temporary.as_file_mut(), &temporary_path)?;
    fs::set_permissions(&temporary_path, Permissions::from_mode(0o644)).map_err(create_error)?;
    temporary.persist(path).map_err(|error| OutputError::Persist { path: path.to_owned(), source: error.error })?;
    Ok(value)
}

/// Why [`write_file_atomically`] failed: writing the content, or putting the file in place.
#[derive(Debug, thiserror::Error)]
pub enum WriteFileError {
    #[error(transparent)]
    Io(#[from] crate::io_error::PathIoError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Creates `path` holding `bytes`, as [`write_atomically`] does: whole, or not at all.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteFileError> {
    write_atomically(path, |file| -> Result<(), WriteFileError> {
        std::io::Write::write_all(file, bytes).map_err(crate::io_error::PathIoError::with("write", path))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error(transparent)]
        Output(#[from] OutputError),
        #[error("writer failed")]
        Writer,
    }

    fn directory_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn success_renames_into_place_with_mode_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomically::<_, TestError>(&path, |file| {
            file.write_all(b"data").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"data");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(directory_entries(dir.path()), ["out.bin"]);
    }

    #[test]
    fn failure_leaves_nothing_behind_and_keeps_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        fs::write(&path, b"old").unwrap();
        let result = write_atomically::<(), TestError>(&path, |file| {
            file.write_all(b"partial").unwrap();
            Err(TestError::Writer)
        });
        assert!(matches!(result, Err(TestError::Writer)));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(directory_entries(dir.path()), ["out.bin"]);
    }

    #[test]
    fn missing_directory_is_reported_with_the_output_path() {
        let path = Path::new("/nonexistent-icos-dir/out.bin");
        let error = write_atomically::<(), TestError>(path, |_| Ok(())).unwrap_err();
        assert!(error.to_string().contains("/nonexistent-icos-dir/out.bin"), "{error}");
    }
}
