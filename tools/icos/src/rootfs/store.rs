//! Where file contents live while the index is sorted: either in the input file itself (an
//! uncompressed tar, read back by offset) or in an anonymous spool file (compressed layers,
//! sparse members, injected files). Memory holds only offsets, sizes and digests.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

const CHUNK: usize = 1 << 20;

/// Which file holds a content and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Input(u64),
    Spool(u64),
}

/// A regular file's content: where it is, how long, and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub location: Location,
    pub size: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, Default)]
pub struct Store {
    input: Option<File>,
    spool: Option<File>,
    spool_len: u64,
}

impl Store {
    /// A store whose [`Location::Input`] offsets point into `input`.
    pub fn with_input(input: File) -> Store {
        Store { input: Some(input), spool: None, spool_len: 0 }
    }

    /// Reads `reader` to its end, hashing it, and records that it is `input` bytes from `offset`.
    /// Returns an error if `expected` bytes were not there.
    pub fn hash_in_place(reader: &mut dyn Read, offset: u64, expected: u64) -> io::Result<Content> {
        let (size, sha256) = copy_hashing(reader, &mut io::sink())?;
        if size != expected {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside a file"));
        }
        Ok(Content { location: Location::Input(offset), size, sha256 })
    }

    /// Copies `reader` to its end into the spool file, hashing it.
    pub fn spool(&mut self, reader: &mut dyn Read) -> io::Result<Content> {
        if self.spool.is_none() {
            self.spool = Some(tempfile::tempfile()?);
        }
        let offset = self.spool_len;
        let spool = self.spool.as_mut().ok_or_else(|| io::Error::other("no spool file"))?;
        let (size, sha256) = copy_hashing(reader, spool)?;
        self.spool_len += size;
        Ok(Content { location: Location::Spool(offset), size, sha256 })
    }

    /// Writes `content` to `out`, failing if its bytes are no longer all there.
    pub fn copy_to(&self, content: &Content, out: &mut dyn Write) -> io::Result<()> {
        let (file, start) = match content.location {
            Location::Input(offset) => (self.input.as_ref(), offset),
            Location::Spool(offset) => (self.spool.as_ref(), offset),
        };
        let file = file.ok_or_else(|| io::Error::other("content refers to a file that is not open"))?;
        let mut buffer = vec![0u8; CHUNK.min(usize::try_from(content.size).unwrap_or(CHUNK))];
        let mut done = 0u64;
        while done < content.size {
            let want = buffer.len().min(usize::try_from(content.size - done).unwrap_or(CHUNK));
            file.read_exact_at(&mut buffer[..want], start + done)?;
            out.write_all(&buffer[..want])?;
            done += want as u64;
        }
        Ok(())
    }
}

/// Copies `reader` into `out` to the end, returning the byte count and SHA-256.
fn copy_hashing(reader: &mut dyn Read, out: &mut dyn Write) -> io::Result<(u64, [u8; 32])> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let count = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..count]);
        out.write_all(&buffer[..count])?;
        size += count as u64;
    }
    Ok((size, hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;

    #[test]
    fn spooled_and_in_place_contents_read_back_exactly() {
        let mut input = tempfile::tempfile().unwrap();
        input.write_all(b"headerHELLOtrailer").unwrap();
        input.rewind().unwrap();
        let mut store = Store::with_input(input);
        let in_place = Store::hash_in_place(&mut &b"HELLO"[..], 6, 5).unwrap();
        let spooled = store.spool(&mut &b"spooled bytes"[..]).unwrap();
        let second = store.spool(&mut &b"more"[..]).unwrap();
        assert_eq!(second.location, Location::Spool(13));
        for (content, expected) in [(&in_place, &b"HELLO"[..]), (&spooled, b"spooled bytes"), (&second, b"more")] {
            let mut out = Vec::new();
            store.copy_to(content, &mut out).unwrap();
            assert_eq!(out, expected);
            assert_eq!(content.sha256, <[u8; 32]>::from(Sha256::digest(expected)));
        }
    }

    #[test]
    fn short_content_is_an_error() {
        let error = Store::hash_in_place(&mut &b"HEL"[..], 0, 5).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        let store = Store::with_input(tempfile::tempfile().unwrap());
        let content = Content { location: Location::Input(0), size: 3, sha256: [0; 32] };
        assert!(store.copy_to(&content, &mut Vec::new()).is_err());
    }
}
