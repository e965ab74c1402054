//! Inode timestamps and dates for people.

use std::fmt;

use super::Ext4Time;
use crate::calendar::format_date_time;

impl Ext4Time {
    /// A timestamp from its 32-bit field and, when the inode has room for it, its `_extra`
    /// field: the low 2 bits of `extra` extend the signed 32-bit seconds to 34 bits (years
    /// 1901 to 2446), the upper 30 bits are nanoseconds; as the kernel's ext4_decode_extra_time.
    pub fn decode(seconds: u32, extra: Option<u32>) -> Ext4Time {
        let base = i64::from(seconds as i32);
        match extra {
            Some(extra) => Ext4Time { seconds: base + (i64::from(extra & 3) << 32), nanoseconds: extra >> 2 },
            None => Ext4Time { seconds: base, nanoseconds: 0 },
        }
    }
}

/// `2023-11-14 22:13:20.000000001 UTC`; the nanoseconds only when there are some.
impl fmt::Display for Ext4Time {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let date = format_seconds(self.seconds);
        match (self.nanoseconds, date.strip_suffix(" UTC")) {
            (0, _) | (_, None) => formatter.write_str(&date),
            (nanoseconds, Some(date)) => write!(formatter, "{date}.{nanoseconds:09} UTC"),
        }
    }
}

/// Seconds since 1970 as a UTC date, `1970-01-01 00:00:00 UTC`, computed rather than asked of
/// the C library so that no time zone or locale changes it.
pub(super) fn format_seconds(seconds: i64) -> String {
    format!("{} UTC", format_date_time(seconds, ' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_epoch_bits_and_nanoseconds() {
        let time = |seconds, extra| Ext4Time::decode(seconds, extra);
        assert_eq!(time(0, None), Ext4Time { seconds: 0, nanoseconds: 0 });
        assert_eq!(time(0xFFFF_FFFF, None).seconds, -1);
        assert_eq!(time(0xFFFF_FFFF, Some(0)).seconds, -1);
        assert_eq!(time(0x8000_0000, Some(1)).seconds, 1 << 31);
        // What `debugfs sif mtime 0x1234; sif mtime_extra 7` gives: year 2378, 1 ns.
        assert_eq!(time(0x1234, Some(7)), Ext4Time { seconds: 0x1234 + (3 << 32), nanoseconds: 1 });
        assert_eq!(time(5, Some(999_999_999 << 2)).nanoseconds, 999_999_999);
    }

    #[test]
    fn dates() {
        assert_eq!(format_seconds(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_seconds(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_seconds(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(format_seconds(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_seconds(0x1234 + (3 << 32)), "2378-04-22 20:42:28 UTC");
        assert_eq!(format_seconds(i64::from(i32::MIN)), "1901-12-13 20:45:52 UTC");
        let time = Ext4Time { seconds: 1, nanoseconds: 5 };
        assert_eq!(time.to_string(), "1970-01-01 00:00:01.000000005 UTC");
        assert_eq!(Ext4Time::decode(1, None).to_string(), "1970-01-01 00:00:01 UTC");
    }
}
