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
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return Err(DurationError::Malformed(text.to_owned()));
    }
    // Only digits and one optional dot reach here, so `f64` parsing cannot see signs, exponents
    // or `inf`/`nan`.
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::Malformed(text.to_owned()))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(DurationError::UnknownUnit(text.to_owned())),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| DurationError::TooLarge(text.to_owned()))
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
    fn rejects_overflow() {
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::TooLarge(_))
        ));
    }
}
