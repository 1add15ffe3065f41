//! Misbehaving on purpose: a share of answers replaced by an error status, and a wait before
//! answering, so that the mesh's retries, timeouts and outlier detection have something to act
//! on. Both are off unless configured; they apply to the greeting (`GET /`, `HEAD /`) only,
//! never to the health endpoints, so the platform does not restart a deliberately flaky app.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use demo_common::duration::DurationError;
use demo_common::parse_duration;

/// The longest delay accepted: anything longer is a hang, which a client's timeout shows as
/// well, and a typo (`10h` for `10s`) should not make the app look dead for hours.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// A share of requests, 0 to 100 percent.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(f64);

impl Percent {
    pub const NEVER: Percent = Percent(0.0);

    pub fn value(self) -> f64 {
        self.0
    }

    /// Draws whether this request is in the share.
    fn draw(self) -> bool {
        // fastrand::f64 is uniform on [0, 1): 100 % always hits, 0 % never does.
        fastrand::f64() * 100.0 < self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultValueError {
    #[error("'{0}' is not a percentage from 0 to 100 (examples: 50, 12.5)")]
    Percent(String),
    #[error("'{0}' is not an HTTP error status from 400 to 599")]
    Status(String),
    #[error("'{0}' is neither a duration (500ms) nor a range of two (100ms-2s): {1}")]
    Delay(String, DurationError),
    #[error("'{0}': the range's start is above its end")]
    EmptyRange(String),
    #[error("'{0}' is longer than the 1h limit")]
    DelayTooLong(String),
}

impl FromStr for Percent {
    type Err = FaultValueError;

    /// Digits with at most one decimal point; no sign, exponent, `%`, `inf` or `NaN`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || FaultValueError::Percent(text.to_owned());
        let trimmed = text.trim();
        let well_formed = !trimmed.is_empty()
            && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && trimmed.bytes().filter(|&b| b == b'.').count() <= 1
            && trimmed != ".";
        if !well_formed {
            return Err(invalid());
        }
        let value: f64 = trimmed.parse().map_err(|_| invalid())?;
        if !(0.0..=100.0).contains(&value) {
            return Err(invalid());
        }
        Ok(Percent(value))
    }
}

impl fmt::Display for Percent {
    /// `50`, `12.5`: f64's shortest form, so the value reads as it was written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The status of an injected failure: an error status, so no client mistakes it for an answer.
pub fn parse_fail_status(text: &str) -> Result<u16, FaultValueError> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|status| (400..=599).contains(status))
        .ok_or_else(|| FaultValueError::Status(text.to_owned()))
}

/// How long to wait before answering: fixed, or drawn uniformly from a range per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delay {
    min: Duration,
    max: Duration,
}

impl Delay {
    pub const NONE: Delay = Delay {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    pub fn fixed(duration: Duration) -> Self {
        Self {
            min: duration,
            max: duration,
        }
    }

    pub fn range(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    pub fn is_none(self) -> bool {
        self.max.is_zero()
    }

    /// This request's delay.
    fn draw(self) -> Duration {
        if self.min == self.max {
            return self.min;
        }
        // Both ends at most MAX_DELAY, so the nanoseconds fit u64 with room to spare.
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(nanos(self.min)..=nanos(self.max)))
    }
}

impl FromStr for Delay {
    type Err = FaultValueError;

    /// `500ms`, `2` (seconds), or `100ms-2s`: the project's durations, joined by `-` for a
    /// range (durations have no sign, so the `-` cannot be anything else).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let duration = |part: &str| {
            let duration = parse_duration(part)
                .map_err(|error| FaultValueError::Delay(text.to_owned(), error))?;
            if duration > MAX_DELAY {
                return Err(FaultValueError::DelayTooLong(text.to_owned()));
            }
            Ok(duration)
        };
        match text.split_once('-') {
            None => Ok(Delay::fixed(duration(text)?)),
            Some((min, max)) => {
                let (min, max) = (duration(min)?, duration(max)?);
                if min > max {
                    return Err(FaultValueError::EmptyRange(text.to_owned()));
                }
                Ok(Delay::range(min, max))
            }
        }
    }
}

impl fmt::Display for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{:?}", self.min)
        } else {
            write!(f, "{:?}-{:?}", self.min, self.max)
        }
    }
}

/// What the greeting route does besides greeting.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    pub fail_percent: Percent,
    pub fail_status: u16,
    pub delay: Delay,
}

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Wait this long first.
    pub delay: Duration,
    /// Then answer with the failure rather than the greeting.
    pub fail: bool,
}

impl Faults {
    pub fn is_off(&self) -> bool {
        self.fail_percent == Percent::NEVER && self.delay.is_none()
    }

    /// Draws this request's delay and whether it fails, independently.
    pub fn draw(&self) -> Verdict {
        Verdict {
            delay: self.delay.draw(),
            fail: self.fail_percent.draw(),
        }
    }
}

impl fmt::Display for Faults {
    /// `none`, or the knobs that are on, as set: `FAIL_PERCENT=50 FAIL_STATUS=503 DELAY=100ms-2s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_off() {
            return f.write_str("none");
        }
        let mut knobs = Vec::new();
        if self.fail_percent != Percent::NEVER {
            knobs.push(format!(
                "FAIL_PERCENT={} FAIL_STATUS={}",
                self.fail_percent, self.fail_status
            ));
        }
        if !self.delay.is_none() {
            knobs.push(format!("DELAY={}", self.delay));
        }
        f.write_str(&knobs.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_0_to_100_with_decimals() {
        for (text, value) in [
            ("0", 0.0),
            ("50", 50.0),
            ("12.5", 12.5),
            ("100", 100.0),
            (".5", 0.5),
        ] {
            assert_eq!(text.parse::<Percent>(), Ok(Percent(value)), "{text}");
        }
        for bad in [
            "", " ", "-1", "100.01", "101", "abc", "50%", "1e2", "inf", "NaN", "+5", ".", "1.2.3",
        ] {
            assert!(bad.parse::<Percent>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn shares_at_the_ends_are_exact() {
        let always: Percent = "100".parse().unwrap();
        let never: Percent = "0".parse().unwrap();
        for _ in 0..10_000 {
            assert!(always.draw());
            assert!(!never.draw());
        }
    }

    #[test]
    fn fail_status_is_an_error_status() {
        assert_eq!(parse_fail_status("503"), Ok(503));
        assert_eq!(parse_fail_status("400"), Ok(400));
        assert_eq!(parse_fail_status("599"), Ok(599));
        for bad in ["200", "399", "600", "abc", "", "-503", "5030"] {
            assert!(parse_fail_status(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn delays_are_durations_or_ranges() {
        let ms = Duration::from_millis;
        assert_eq!("250ms".parse(), Ok(Delay::fixed(ms(250))));
        assert_eq!("2".parse(), Ok(Delay::fixed(ms(2000))));
        assert_eq!("0".parse(), Ok(Delay::NONE));
        assert_eq!("100ms-2s".parse(), Ok(Delay::range(ms(100), ms(2000))));
        assert_eq!("1s-1s".parse(), Ok(Delay::fixed(ms(1000))));
        assert_eq!("0-0.5".parse(), Ok(Delay::range(ms(0), ms(500))));
        for bad in [
            "", "soon", "2s-1s", "1s-", "-1s", "1s-2s-3s", "1s..2s", "2h", "1s-61m",
        ] {
            assert!(bad.parse::<Delay>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn range_draws_stay_within_bounds_and_spread() {
        let delay: Delay = "10ms-20ms".parse().unwrap();
        let draws: Vec<Duration> = (0..1000).map(|_| delay.draw()).collect();
        assert!(
            draws
                .iter()
                .all(|d| (Duration::from_millis(10)..=Duration::from_millis(20)).contains(d))
        );
        // A constant would pass the bounds check; a uniform draw of 1000 lands in both halves.
        assert!(draws.iter().any(|d| *d < Duration::from_millis(15)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(15)));
    }

    #[test]
    fn display_names_the_knobs_that_are_on() {
        let off = Faults {
            fail_status: 503,
            ..Faults::default()
        };
        assert_eq!(off.to_string(), "none");
        let on = Faults {
            fail_percent: "12.5".parse().unwrap(),
            fail_status: 503,
            delay: "100ms-2s".parse().unwrap(),
        };
        assert_eq!(
            on.to_string(),
            "FAIL_PERCENT=12.5 FAIL_STATUS=503 DELAY=100ms-2s"
        );
    }
}
