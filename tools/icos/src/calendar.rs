//! Dates from day counts and back, in the proleptic Gregorian calendar (Howard Hinnant's
//! algorithms), and times as text: computed rather than asked of the C library, so that no time
//! zone or locale changes a date written into an image or shown in a report, and no date crate is
//! needed.

/// Days since 1970-01-01 to (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01: the inverse of `civil_from_days`.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Seconds since 1970-01-01T00:00:00Z as `YYYY-MM-DD<separator>HH:MM:SS` in UTC: the one place
/// that turns a time into text, for RFC 3339 (`'T'`) and for people (`' '`).
pub fn format_date_time(seconds: i64, separator: char) -> String {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let time = seconds.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}", time / 3600, time / 60 % 60, time % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_across_eras_and_leap_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(47_482), (2100, 1, 1));
        for days in [-800_000, -1, 0, 59, 11_016, 19_782, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }

    #[test]
    fn times_are_formatted_in_utc_before_and_after_the_epoch() {
        assert_eq!(format_date_time(0, 'T'), "1970-01-01T00:00:00");
        assert_eq!(format_date_time(1_700_000_000, ' '), "2023-11-14 22:13:20");
        assert_eq!(format_date_time(-1, 'T'), "1969-12-31T23:59:59");
        assert_eq!(format_date_time(253_402_300_799, 'T'), "9999-12-31T23:59:59");
    }
}
