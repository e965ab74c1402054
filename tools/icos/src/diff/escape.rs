//! Showing names and values that are raw bytes (Linux file names, xattr values, tar member names)
//! without losing what they are.
//!
//! The escaped form is unambiguous: printable UTF-8 stays as it is, a backslash becomes `\\`, the
//! usual controls become `\n`, `\t`, `\r`, other control characters `\u{..}` and bytes that are
//! not UTF-8 `\xNN`. People see it quoted (`"a b"`) whenever it holds a space, a quote, a
//! backslash or an escape, or is empty, so that the name's edges are clear. JSON carries the exact
//! string when the bytes are UTF-8, and the escaped form plus the bytes as a number array when not
//! (see [`super::report`]).

pub use crate::hashing::hex;
use std::fmt::Write as _;

use crate::calendar::format_date_time;

/// The escaped form of `bytes`, without quotes.
pub fn escape(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for character in chunk.valid().chars() {
            match character {
                '\\' => text.push_str("\\\\"),
                '\n' => text.push_str("\\n"),
                '\t' => text.push_str("\\t"),
                '\r' => text.push_str("\\r"),
                // Writing to a String cannot fail.
                _ if character.is_ascii_control() => {
                    let _ = write!(text, "\\x{:02x}", u32::from(character));
                }
                _ if character.is_control() => {
                    let _ = write!(text, "\\u{{{:x}}}", u32::from(character));
                }
                _ => text.push(character),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    text
}

/// `bytes` for people: the escaped form, in double quotes when it would otherwise be unclear where
/// the name starts and ends or that it was escaped.
pub fn quote(bytes: &[u8]) -> String {
    let escaped = escape(bytes);
    let plain = !escaped.is_empty()
        && escaped.len() == bytes.len()
        && !escaped.chars().any(|character| character.is_whitespace() || character == '"' || character == '\\');
    if plain {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('"', "\\\""))
    }
}

/// Like [`quote`], cut to about `max` characters of escaped text, saying how long the value was.
pub fn preview(bytes: &[u8], max: usize) -> String {
    let escaped = escape(bytes);
    if escaped.chars().count() <= max {
        return quote(bytes);
    }
    let cut: String = escaped.chars().take(max).collect();
    format!("\"{}\"… ({} bytes)", cut.replace('"', "\\\""), bytes.len())
}

/// The first bytes of a digest in hex, enough to tell two apart in a message.
pub fn short_hex(bytes: &[u8]) -> String {
    let mut text = hex(&bytes[..bytes.len().min(6)]);
    if bytes.len() > 6 {
        text.push('…');
    }
    text
}

/// Seconds and nanoseconds since 1970 as RFC 3339 (`2024-01-02T03:04:05Z`, fractions only when
/// there are any); `utc` false for FAT's local times, which carry no zone and get no `Z`.
pub fn format_time(seconds: i64, nanoseconds: u32, utc: bool) -> String {
    let mut text = format_date_time(seconds, 'T');
    if nanoseconds != 0 {
        let fraction = format!("{nanoseconds:09}");
        let _ = write!(text, ".{}", fraction.trim_end_matches('0'));
    }
    if utc {
        text.push('Z');
    }
    text
}

/// A byte count for people: exact, with a binary-unit approximation when large.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 10 * 1024 {
        return if bytes == 1 { "1 byte".to_owned() } else { format!("{bytes} bytes") };
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{bytes} bytes ({value:.1} {})", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_unambiguous_and_quoted_when_needed() {
        assert_eq!(quote(b"/etc/hostname"), "/etc/hostname");
        assert_eq!(quote(b"/etc/my file"), "\"/etc/my file\"");
        assert_eq!(quote(b"/bad\xffname"), "\"/bad\\xffname\"");
        // A name that literally holds a backslash and "xff" differs from the byte 0xff.
        assert_eq!(quote(b"/bad\\xffname"), "\"/bad\\\\xffname\"");
        assert_eq!(quote(b"a\nb\x1b"), "\"a\\nb\\x1b\"");
        assert_eq!(quote(b"say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote(b""), "\"\"");
        assert_eq!(quote("/grüße".as_bytes()), "/grüße");
        assert_eq!(escape("\u{85}".as_bytes()), "\\u{85}");
        assert_eq!(escape(b"\xc3"), "\\xc3");
    }

    #[test]
    fn previews_are_cut_with_the_length() {
        assert_eq!(preview(b"short", 10), "short");
        assert_eq!(preview(&[b'x'; 20], 5), "\"xxxxx\"… (20 bytes)");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(format_time(0, 0, true), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_704_067_200, 0, true), "2024-01-01T00:00:00Z");
        assert_eq!(format_time(1_709_210_096, 500_000_000, true), "2024-02-29T12:34:56.5Z");
        assert_eq!(format_time(-1, 0, true), "1969-12-31T23:59:59Z");
        assert_eq!(format_time(315_532_800, 0, false), "1980-01-01T00:00:00");
    }

    #[test]
    fn sizes_and_digests() {
        assert_eq!(format_size(1), "1 byte");
        assert_eq!(format_size(4096), "4096 bytes");
        assert_eq!(format_size(3 << 20), "3145728 bytes (3.0 MiB)");
        assert_eq!(short_hex(&[0xab; 32]), "abababababab…");
    }
}
