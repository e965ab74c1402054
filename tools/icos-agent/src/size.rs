//! Sizes given on the command line: a number of bytes, optionally with a binary unit suffix
//! (`K`, `M`, `G`, `T`, each 1024 times the previous; `KiB`/`MiB`/... are accepted as synonyms);
//! and sizes in progress lines, in MiB.

/// Why a size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{value:?} is not a size: expected a number of bytes with an optional K, M, G or T suffix (powers of 1024), such as 100M")]
    Malformed { value: String },
    #[error("{value:?} is too large: a size must be below 16 EiB")]
    TooLarge { value: String },
}

/// Parses `100M`, `3G`, `512`, `4KiB`, ... into bytes. Units are binary (K = 1024) because disk
/// images are laid out in sectors and blocks; decimal units would silently give odd sizes.
pub fn parse_size(value: &str) -> Result<u64, SizeError> {
    let malformed = || SizeError::Malformed { value: value.to_owned() };
    let digits_end = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (digits, suffix) = value.split_at(digits_end);
    if digits.is_empty() {
        return Err(malformed());
    }
    let shift = match suffix {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err(malformed()),
    };
    let too_large = || SizeError::TooLarge { value: value.to_owned() };
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number.checked_mul(1u64 << shift).ok_or_else(too_large)
}

/// A size for a progress line: MiB with one decimal, such as `1.2 MiB`.
pub fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_sizes_are_mebibytes_with_one_decimal() {
        assert_eq!(mebibytes(0), "0.0 MiB");
        assert_eq!(mebibytes(1_234_567), "1.2 MiB");
        assert_eq!(mebibytes(3 << 30), "3072.0 MiB");
    }

    #[test]
    fn plain_bytes_and_binary_suffixes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
    }

    #[test]
    fn malformed_sizes_are_rejected_with_the_expected_form() {
        for value in ["", "M", "1.5G", "-1", "10 M", "10MB", "10m", "4k", "0x10", "1G1"] {
            let error = parse_size(value).unwrap_err();
            assert_eq!(error, SizeError::Malformed { value: value.to_owned() }, "{value}");
            assert!(error.to_string().contains("such as 100M"), "{error}");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(matches!(parse_size("16777216T"), Err(SizeError::TooLarge { .. })));
        assert!(matches!(parse_size("99999999999999999999999"), Err(SizeError::TooLarge { .. })));
        assert_eq!(parse_size("16777215T"), Ok(16777215 << 40));
    }
}
