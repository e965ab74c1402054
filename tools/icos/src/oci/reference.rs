//! The two names of an image: its content digest, which pins it, and its reference name, which
//! says what it is. Both are parsed strictly: a pin that a lax parser accepts in one tool and a
//! strict one refuses in another is a build that works on one machine only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::rootfs::path::hex;

const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;
/// Longer names are refused by container registries and engines alike.
const MAX_NAME_LEN: usize = 255;

/// A SHA-256 content digest as OCI writes it: `sha256:` and 64 lowercase hex digits. Only that
/// one spelling is accepted, so equal digests are equal strings (and equal file names in a store).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a digest: expected sha256: and 64 lowercase hex digits")]
pub struct InvalidDigest {
    pub text: String,
}

impl Digest {
    pub fn parse(text: &str) -> Result<Digest, InvalidDigest> {
        let valid = text.strip_prefix(PREFIX).is_some_and(|digits| {
            digits.len() == HEX_LEN && digits.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        });
        if valid {
            Ok(Digest(text.to_owned()))
        } else {
            Err(InvalidDigest { text: text.to_owned() })
        }
    }

    /// The digest of a finished SHA-256 hash.
    pub fn from_sha256(hash: [u8; 32]) -> Digest {
        Digest(format!("{PREFIX}{}", hex(&hash)))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    /// The 64 hex digits: the blob's file name in an image layout or a store.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(text: &str) -> Result<Digest, InvalidDigest> {
        Digest::parse(text)
    }
}

impl TryFrom<String> for Digest {
    type Error = InvalidDigest;

    fn try_from(text: String) -> Result<Digest, InvalidDigest> {
        Digest::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

/// Checks an image reference name (`guestos-base`, `ic/guestos-base`): `/`-separated components
/// of lowercase letters and digits, joined inside a component by single `.`, `_` or `-`. That is
/// a repository name every container tool accepts, and it can hold neither `@` nor `:`, so
/// `<name>@sha256:...` in a pin file splits one way only. Returns what is wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("the name is longer than {MAX_NAME_LEN} bytes"));
    }
    for component in name.split('/') {
        let bytes = component.as_bytes();
        let alphanumeric = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
        if !bytes.first().is_some_and(alphanumeric) || !bytes.last().is_some_and(alphanumeric) {
            return Err(format!("the component {component:?} does not start and end with a lowercase letter or digit"));
        }
        if let Some(bad) = bytes.iter().find(|&byte| !alphanumeric(byte) && !b"._-".contains(byte)) {
            return Err(format!(
                "{:?} is not allowed (only lowercase letters, digits, '.', '_', '-' and '/')",
                char::from(*bad)
            ));
        }
        if bytes.windows(2).any(|pair| !alphanumeric(&pair[0]) && !alphanumeric(&pair[1])) {
            return Err(format!("the component {component:?} has two separators in a row"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digests_are_parsed_strictly() {
        let text = format!("sha256:{HEX}");
        let digest = Digest::parse(&text).unwrap();
        assert_eq!(digest.to_string(), text);
        assert_eq!(digest.hex(), HEX);
        let bad = [
            String::new(),
            HEX.to_owned(),
            format!("sha256:{}", HEX.to_uppercase()),
            format!("SHA256:{HEX}"),
            format!("sha512:{HEX}"),
            format!("sha256:{}", &HEX[1..]),
            format!("sha256:{HEX}0"),
            format!("sha256:{}g", &HEX[1..]),
            format!(" sha256:{HEX}"),
            format!("sha256:{HEX}\n"),
        ];
        for text in bad {
            let error = Digest::parse(&text).unwrap_err();
            assert!(error.to_string().contains("64 lowercase hex digits"), "{error}");
        }
    }

    #[test]
    fn digests_of_bytes_and_json_round_trip() {
        let empty = Digest::of(b"");
        assert_eq!(empty.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let json = serde_json::to_string(&empty).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), empty);
        let error = serde_json::from_str::<Digest>("\"sha256:ABC\"").unwrap_err();
        assert!(error.to_string().contains("is not a digest"), "{error}");
    }

    #[test]
    fn names_are_repository_names() {
        for good in ["guestos-base", "ic/guestos_base.v2", "a", "0-9"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for (bad, problem) in [
            ("", "empty"),
            ("Guestos", "start and end"),
            ("base:latest", "':'"),
            ("base@sha256", "'@'"),
            ("-base", "start and end"),
            ("base-", "start and end"),
            ("a//b", "start and end"),
            ("a--b", "two separators"),
            ("a b", "' '"),
        ] {
            let error = check_name(bad).unwrap_err();
            assert!(error.contains(problem), "{bad}: {error}");
        }
        assert!(check_name(&"a".repeat(256)).unwrap_err().contains("longer"));
    }
}
