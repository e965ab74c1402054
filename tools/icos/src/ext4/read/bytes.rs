//! Little-endian fields of on-disk structures.
//!
//! Callers check that a structure lies inside the bytes they hold before they read its fields,
//! so every read here is in range. Should a check be missed all the same, the field reads as 0
//! rather than crashing the program on a hostile image; debug builds (the tests, including the
//! corruption tests) assert instead, so that a missed check shows up there.

/// The `N` bytes at `offset`, or zeros when they are not all inside `bytes`.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    match offset.checked_add(N).and_then(|end| bytes.get(offset..end)) {
        Some(slice) => out.copy_from_slice(slice),
        None => debug_assert!(false, "a {N}-byte field at {offset} is outside {} bytes", bytes.len()),
    }
    out
}

pub(super) fn u8_at(bytes: &[u8], offset: usize) -> u8 {
    field::<1>(bytes, offset)[0]
}

pub(super) fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(field(bytes, offset))
}

pub(super) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(field(bytes, offset))
}

pub(super) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(field(bytes, offset))
}

/// `length` bytes at `offset`, or None when they are not all inside `bytes`: for ranges whose
/// offset and length come from the image.
pub(super) fn slice_at(bytes: &[u8], offset: usize, length: usize) -> Option<&[u8]> {
    bytes.get(offset..offset.checked_add(length)?)
}

/// Raw bytes for people: printable ASCII as is, the rest escaped (`\xff`), as `escape_ascii`
/// does; used for names and paths in messages, which are bytes, not necessarily UTF-8.
pub(super) fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => bytes.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_fields() {
        let bytes = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09];
        assert_eq!(u8_at(&bytes, 8), 0x09);
        assert_eq!(u16_at(&bytes, 1), 0x0302);
        assert_eq!(u32_at(&bytes, 0), 0x0403_0201);
        assert_eq!(u64_at(&bytes, 1), 0x0908_0706_0504_0302);
        assert_eq!(slice_at(&bytes, 7, 2), Some(&bytes[7..9]));
        assert_eq!(slice_at(&bytes, 8, 2), None);
        assert_eq!(slice_at(&bytes, usize::MAX, 2), None);
    }

    #[test]
    fn names_for_people() {
        assert_eq!(printable(b"/etc/hostname"), "/etc/hostname");
        assert_eq!(printable("/caf\u{e9}".as_bytes()), "/caf\u{e9}");
        assert_eq!(printable(b"/caf\xe9"), "/caf\\xe9");
        assert_eq!(printable(b"a\nb"), "a\\nb");
    }
}
