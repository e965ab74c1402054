//! LVM identifiers: 32 characters from a 64-character alphabet, shown in groups of 6-4-4-4-4-4-6
//! characters (`2Ryq3E-mXTJ-...`) and stored without the dashes in the PV header.

use std::fmt;
use std::str::FromStr;

/// lvm2's alphabet for identifiers (`lib/uuid/uuid.c`); lvm2 maps each random byte to
/// `ALPHABET[byte % 64]`, and so does [`LvmId::from_bytes`].
const ALPHABET: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#";
/// The length of an identifier without dashes.
pub const ID_LEN: usize = 32;
/// Where lvm2 puts the dashes when it shows an identifier: after 6, 10, 14, 18, 22 and 26 characters.
const GROUPS: [usize; 7] = [6, 4, 4, 4, 4, 4, 6];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LvmId([u8; ID_LEN]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an LVM UUID: expected 32 characters from 0-9, a-z, A-Z, '!' and '#', optionally grouped 6-4-4-4-4-4-6 with dashes")]
pub struct LvmIdParseError {
    text: String,
}

impl LvmId {
    /// The identifier lvm2 would make from these 32 random bytes.
    pub fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        LvmId(bytes.map(|byte| ALPHABET[usize::from(byte % 64)]))
    }

    /// The 32 characters without dashes, as the PV header stores them.
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl FromStr for LvmId {
    type Err = LvmIdParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || LvmIdParseError { text: text.to_owned() };
        let plain: Vec<u8> = if text.len() == ID_LEN {
            text.bytes().collect()
        } else {
            let groups: Vec<&str> = text.split('-').collect();
            if groups.iter().map(|group| group.len()).ne(GROUPS) {
                return Err(error());
            }
            groups.concat().into_bytes()
        };
        if plain.len() != ID_LEN || !plain.iter().all(|byte| ALPHABET.contains(byte)) {
            return Err(error());
        }
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&plain);
        Ok(LvmId(id))
    }
}

impl fmt::Display for LvmId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = &self.0[..];
        for (index, length) in GROUPS.into_iter().enumerate() {
            if index > 0 {
                formatter.write_str("-")?;
            }
            let (group, tail) = rest.split_at(length);
            // Every byte is from the ASCII alphabet.
            formatter.write_str(std::str::from_utf8(group).map_err(|_| fmt::Error)?)?;
            rest = tail;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_and_parses_lvm_groups() {
        let id: LvmId = "2Ryq3E-mXTJ-dgLr-c0s5-Fq!#-9h3Z-bTWuHl".parse().unwrap();
        assert_eq!(id.to_string(), "2Ryq3E-mXTJ-dgLr-c0s5-Fq!#-9h3Z-bTWuHl");
        assert_eq!(id.as_bytes(), b"2Ryq3EmXTJdgLrc0s5Fq!#9h3ZbTWuHl");
        assert_eq!("2Ryq3EmXTJdgLrc0s5Fq!#9h3ZbTWuHl".parse::<LvmId>().unwrap(), id);
        for bad in [
            "",
            "2Ryq3E-mXTJ-dgLr-c0s5-Fq!#-9h3Z-bTWuH",
            "2Ryq3E-mXTJ-dgLr-c0s5-Fq!#-9h3Zb-TWuHl",
            "2Ryq3EmXTJdgLrc0s5Fq!#9h3ZbTWu-l",
        ] {
            assert!(bad.parse::<LvmId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bytes_map_into_the_alphabet_as_lvm2_does() {
        let mut bytes = [0u8; ID_LEN];
        bytes[0] = 63;
        bytes[1] = 64;
        bytes[2] = 255;
        bytes[3] = 10;
        let id = LvmId::from_bytes(bytes);
        assert_eq!(&id.as_bytes()[..4], b"#0#a");
    }
}
