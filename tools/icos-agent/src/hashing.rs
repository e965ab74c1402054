//! Hashing a stream while it is read for something else: `icos diff` compares whole tar streams
//! by their digest, and the upgrade agent checks the SHA-256 of an update image in the same pass
//! that verifies (and later writes) its members.

use std::fmt::Write as _;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

/// Lowercase hexadecimal, for digests, raw path bytes, xattr values and UUIDs.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Reads through to `inner`, hashing and counting what passes.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    length: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), length: 0 }
    }

    /// Reads the rest of the stream and returns the length and SHA-256 of all of it.
    pub fn finish(mut self) -> io::Result<StreamDigest> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(StreamDigest { length: self.length, sha256: self.hasher.finalize().into() })
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..count]);
        self.length += count as u64;
        Ok(count)
    }
}

/// The length and digest of a whole stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDigest {
    pub length: u64,
    pub sha256: [u8; 32],
}

impl StreamDigest {
    /// The SHA-256 as lowercase hex, as `sha256sum` prints it.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_hashes_what_was_read_and_the_rest() {
        let mut reader = HashingReader::new(&b"hello world"[..]);
        let mut head = [0u8; 5];
        reader.read_exact(&mut head).unwrap();
        let digest = reader.finish().unwrap();
        assert_eq!(digest.length, 11);
        assert_eq!(digest.sha256_hex(), "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    }
}
