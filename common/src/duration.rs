//! Durations as people write them in env vars: `1`, `0.5` (seconds), `250ms`, `1s`, `1.5s`,
//! `2m`, `1h`.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("'{0}' is not a duration (examples: 1, 0.5, 250ms, 1s, 2m)")]
    Malformed(String),
    #[error("'{0}' has an unknown unit (use ms, s, m or h)")]
    UnknownUnit(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
    #[error("'{0}' must be greater than zero")]
    NotPositive(String),
}

/// Parses a non-negative duration. A bare number is seconds.
///
/// The arithmetic is exact, in integer nanoseconds: `0.1s` is 100ms, not a float's neighbour.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let malformed = || DurationError::Malformed(text.to_owned());
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(malformed());
    }
    let nanos_per_unit: u128 = match unit.trim() {
        "" | "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(DurationError::UnknownUnit(text.to_owned())),
    };
    let too_large = || DurationError::TooLarge(text.to_owned());
    let whole_nanos = digits_value(whole)
        .ok_or_else(too_large)?
        .checked_mul(nanos_per_unit)
        .ok_or_else(too_large)?;
    // Digits past the twentieth are far below a nanosecond for every unit; dropping them keeps
    // the product within u128.
    let fraction = &fraction[..fraction.len().min(20)];
    let fraction_nanos = digits_value(fraction).ok_or_else(malformed)? * nanos_per_unit
        / 10u128.pow(fraction.len() as u32);
    let total = whole_nanos
        .checked_add(fraction_nanos)
        .ok_or_else(too_large)?;
    let seconds = u64::try_from(total / 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(seconds, (total % 1_000_000_000) as u32))
}

/// The value of a run of ASCII digits (empty is 0); None on overflow.
fn digits_value(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |value, digit| {
        value.checked_mul(10)?.checked_add(u128::from(digit - b'0'))
    })
}

/// Parses a duration that must be greater than zero (intervals, timeouts).
pub fn parse_positive_duration(text: &str) -> Result<Duration, DurationError> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(DurationError::NotPositive(text.to_owned()));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_forms_users_write() {
        let cases = [
            ("1", 1000),
            ("0.5", 500),
            ("1s", 1000),
            ("250ms", 250),
            ("1.5s", 1500),
            ("2m", 120_000),
            ("1h", 3_600_000),
            (" 3s ", 3000),
            ("0", 0),
            (".5", 500),
            ("1.", 1000),
            ("0.1s", 100),
            ("0.001", 1),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_malformed_input() {
        for text in [
            "", " ", "s", "ms", "-1", "1x", "1.2.3", ".", "abc", "1 s s", "inf", "NaN", "1e3", "+1",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn rejects_zero_where_positive_is_required() {
        assert_eq!(
            parse_positive_duration("0ms"),
            Err(DurationError::NotPositive("0ms".into()))
        );
        assert!(parse_positive_duration("1ms").is_ok());
    }

    #[test]
    fn is_exact_where_floating_point_is_not() {
        assert_eq!(
            parse_duration("8388608.117s"),
            Ok(Duration::new(8_388_608, 117_000_000))
        );
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0.000000001"), Ok(Duration::from_nanos(1)));
    }

    #[test]
    fn rejects_overflow() {
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::TooLarge(_))
        ));
    }
}
