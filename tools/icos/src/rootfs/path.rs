//! Image paths as raw bytes: tar names may hold any byte but NUL, so they are never forced into
//! UTF-8. Inside the model a path is relative, without `.` or empty components and without a
//! trailing slash; the root is the empty path.

pub(crate) use crate::hashing::hex;

/// Why a name from an archive or the command line is not a path inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Escapes;

/// Normalizes a tar member name the way tar extraction does (leading `/` and `./`, repeated
/// slashes and `.` components dropped), refusing any `..` component: GNU tar refuses such members
/// too, and a canonical tree must not depend on whether a `..` happens to stay inside the root.
pub(crate) fn normalize(name: &[u8]) -> Result<Vec<u8>, Escapes> {
    let mut path = Vec::with_capacity(name.len());
    for component in name.split(|&byte| byte == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => return Err(Escapes),
            _ => {
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(component);
            }
        }
    }
    Ok(path)
}

/// The directory holding `path` ("" for a top-level entry) and its last component.
pub(crate) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&byte| byte == b'/') {
        Some(slash) => (&path[..slash], &path[slash + 1..]),
        None => (&[], path),
    }
}

/// `path` as an absolute image path for messages: valid UTF-8 is shown as a quoted Rust string
/// (newlines escaped), anything else with its odd bytes as `\xNN`.
pub(crate) fn display(path: &[u8]) -> String {
    let mut absolute = Vec::with_capacity(path.len() + 1);
    absolute.push(b'/');
    absolute.extend_from_slice(path);
    quote(&absolute)
}

/// Raw name bytes (say, a tar member name as archived) quoted for messages, like [`display`].
pub(crate) fn quote(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("\"{}\"", name.escape_ascii()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_tar_extraction() {
        assert_eq!(normalize(b"./etc//hosts").unwrap(), b"etc/hosts");
        assert_eq!(normalize(b"/usr/./bin/").unwrap(), b"usr/bin");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert_eq!(normalize(b"a b/\n\xff").unwrap(), b"a b/\n\xff");
        assert_eq!(normalize(b"../etc"), Err(Escapes));
        assert_eq!(normalize(b"usr/../../etc"), Err(Escapes));
        assert_eq!(normalize(b"/a/.."), Err(Escapes));
    }

    #[test]
    fn splits_and_displays() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(display(b"etc/a\nb"), "\"/etc/a\\nb\"");
        assert_eq!(display(b"x\xff"), "\"/x\\xff\"");
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}
