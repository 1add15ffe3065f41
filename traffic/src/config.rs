//! The caller's configuration: one flag per setting, each with an env-var twin.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use demo_common::logging::LogFormat;
use demo_common::{parse_duration, parse_positive_duration};
use reqwest::Url;

use crate::header::HeaderLine;

/// The shortest interval accepted: tokio's timers tick in milliseconds, so a shorter period
/// could not be kept.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The largest `MAX_BODY`: every line is held in memory while it waits for its turn to print,
/// and a log line longer than this helps nobody.
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Calls a URL on a fixed-rate schedule and prints `<timestamp>\t<body or error>` per call.
#[derive(Debug, Clone, Parser)]
#[command(name = "traffic", version, about, long_about = None)]
pub struct Config {
    /// URL to GET on every tick (http:// or https://).
    #[arg(
        long,
        env = "URL",
        default_value = "http://service-that-calls-externally/",
        value_parser = parse_url
    )]
    pub url: Url,

    /// Time between the starts of two calls: `1`, `0.5` (seconds), `250ms`, `1s`.
    #[arg(long, env = "INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Limit for one call, from its start to the last body byte read: `5`, `500ms`, `5s`.
    /// Longer than the proxy's UPSTREAM_TIMEOUT (5s), so the proxy's 504 reaches the log.
    #[arg(long, env = "TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// Number of calls after which the caller prints its final summary and exits 0.
    #[arg(
        long,
        env = "COUNT",
        default_value = "unbounded",
        allow_hyphen_values = true
    )]
    pub count: CallLimit,

    /// Print a summary on `#` lines every so often: a duration (`30s`), a whole number of
    /// calls (`100`), or `off`.
    #[arg(
        long,
        env = "SUMMARY_EVERY",
        default_value = "off",
        allow_hyphen_values = true
    )]
    pub summary_every: SummaryEvery,

    /// Most bytes of a response body kept and printed; the rest is not read.
    #[arg(
        long,
        env = "MAX_BODY",
        default_value_t = 4096,
        allow_hyphen_values = true,
        value_parser = parse_max_body
    )]
    pub max_body: usize,

    /// Log format on stderr (stdout carries the data).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Header sent on every call, as `curl -H`: `Name: value`. Repeat the flag for more; the
    /// env var holds one header per line (blank lines are skipped).
    #[arg(
        short = 'H',
        long = "header",
        env = "HEADER",
        value_name = "NAME: VALUE",
        value_delimiter = '\n'
    )]
    pub headers: Vec<HeaderLine>,
}

/// How many calls a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallLimit {
    Unbounded,
    Calls(u64),
}

impl CallLimit {
    /// The number of calls, `None` when unbounded.
    pub fn calls(self) -> Option<u64> {
        match self {
            CallLimit::Unbounded => None,
            CallLimit::Calls(calls) => Some(calls),
        }
    }

    /// Whether `made` calls exhaust this limit.
    pub fn reached(self, made: u64) -> bool {
        matches!(self, CallLimit::Calls(limit) if made >= limit)
    }
}

/// When the caller prints its periodic summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryEvery {
    Off,
    /// After every this many printed calls.
    Calls(u64),
    /// Every this long, on the wall.
    Period(Duration),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("not an absolute http:// or https:// URL ({0})")]
    Url(String),
    #[error("'{0}' is not a whole number")]
    NotANumber(String),
    #[error("must be at least {0}")]
    TooSmall(String),
    #[error("must be at most {0}")]
    TooLarge(String),
    #[error(
        "'{0}' is neither `off`, a whole number of calls (100) nor a duration with a unit (30s)"
    )]
    SummaryEvery(String),
    #[error(transparent)]
    Duration(#[from] demo_common::duration::DurationError),
}

fn parse_url(text: &str) -> Result<Url, ValueError> {
    let url = Url::parse(text.trim()).map_err(|error| ValueError::Url(error.to_string()))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some_and(|host| !host.is_empty()) => Ok(url),
        "http" | "https" => Err(ValueError::Url("no host".into())),
        other => Err(ValueError::Url(format!("scheme '{other}'"))),
    }
}

/// An interval the caller can keep: a positive duration of at least [`MIN_INTERVAL`].
pub fn parse_interval(text: &str) -> Result<Duration, ValueError> {
    let interval = parse_positive_duration(text)?;
    if interval < MIN_INTERVAL {
        return Err(ValueError::TooSmall("1ms".into()));
    }
    Ok(interval)
}

fn parse_max_body(text: &str) -> Result<usize, ValueError> {
    let bytes = parse_whole_number(text)?;
    if bytes == 0 {
        return Err(ValueError::TooSmall("1 byte".into()));
    }
    usize::try_from(bytes)
        .ok()
        .filter(|bytes| *bytes <= MAX_BODY_LIMIT)
        .ok_or_else(|| ValueError::TooLarge(format!("{MAX_BODY_LIMIT} bytes")))
}

/// Digits only: no sign, no unit, no exponent.
fn parse_whole_number(text: &str) -> Result<u64, ValueError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ValueError::NotANumber(text.to_owned()));
    }
    trimmed
        .parse()
        .map_err(|_| ValueError::TooLarge(u64::MAX.to_string()))
}

impl FromStr for CallLimit {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "unbounded" {
            return Ok(CallLimit::Unbounded);
        }
        match parse_whole_number(text)? {
            0 => Err(ValueError::TooSmall(
                "1 (leave it unset for an unbounded run)".into(),
            )),
            calls => Ok(CallLimit::Calls(calls)),
        }
    }
}

impl fmt::Display for CallLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallLimit::Unbounded => f.write_str("unbounded"),
            CallLimit::Calls(calls) => write!(f, "{calls}"),
        }
    }
}

impl FromStr for SummaryEvery {
    type Err = ValueError;

    /// A bare whole number counts calls; anything else must be a duration with a unit, so
    /// that `1.5` is rejected rather than silently read as seconds or as calls.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if trimmed == "off" {
            return Ok(SummaryEvery::Off);
        }
        if trimmed.bytes().all(|byte| byte.is_ascii_digit()) && !trimmed.is_empty() {
            return match parse_whole_number(trimmed)? {
                0 => Err(ValueError::TooSmall("1 call".into())),
                calls => Ok(SummaryEvery::Calls(calls)),
            };
        }
        let has_unit = trimmed.ends_with(|c: char| c.is_ascii_alphabetic());
        match parse_duration(trimmed) {
            Ok(period) if has_unit && period >= MIN_INTERVAL => Ok(SummaryEvery::Period(period)),
            Ok(_) if has_unit => Err(ValueError::TooSmall("1ms".into())),
            _ => Err(ValueError::SummaryEvery(text.to_owned())),
        }
    }
}

impl fmt::Display for SummaryEvery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SummaryEvery::Off => f.write_str("off"),
            SummaryEvery::Calls(calls) => write!(f, "{calls}"),
            SummaryEvery::Period(period) => f.write_str(&crate::format_duration(*period)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use demo_common::cli::{ParseOutcome, try_parse_from};

    /// Every flag given explicitly, so the test's environment cannot leak in; `overrides` is
    /// one `(flag, value)` pair replacing the default.
    fn parse(overrides: &[&str]) -> Result<Config, ParseOutcome> {
        let defaults = [
            ("--url", "http://127.0.0.1:9/"),
            ("--interval", "1s"),
            ("--timeout", "5s"),
            ("--count", "unbounded"),
            ("--summary-every", "off"),
            ("--max-body", "4096"),
            ("--log-format", "text"),
        ];
        let mut args = vec!["traffic".to_owned()];
        for (flag, default) in defaults {
            let value = match overrides {
                [name, value] if *name == flag => value,
                _ => default,
            };
            // `--flag=value`, so that values starting with `-` stay values.
            args.push(format!("{flag}={value}"));
        }
        if let [name, ..] = overrides {
            assert!(defaults.iter().any(|(flag, _)| flag == name), "{name}");
        }
        try_parse_from::<Config, _, _>(args)
    }

    fn invalid_line(extra: &[&str]) -> String {
        match parse(extra) {
            Err(ParseOutcome::Invalid(line)) => line,
            other => panic!("expected a config error for {extra:?}, got {other:?}"),
        }
    }

    #[test]
    fn interval_accepts_the_usual_forms() {
        for (text, millis) in [("1", 1000), ("0.5", 500), ("1s", 1000), ("250ms", 250)] {
            let config = parse(&["--interval", text]).expect(text);
            assert_eq!(config.interval, Duration::from_millis(millis), "{text}");
        }
    }

    #[test]
    fn summary_every_is_calls_or_a_duration() {
        let every = |text| parse(&["--summary-every", text]).unwrap().summary_every;
        assert_eq!(every("100"), SummaryEvery::Calls(100));
        assert_eq!(every("30s"), SummaryEvery::Period(Duration::from_secs(30)));
        assert_eq!(
            every("500ms"),
            SummaryEvery::Period(Duration::from_millis(500))
        );
        assert_eq!(every("off"), SummaryEvery::Off);
        for bad in ["xyz", "1.5", "0", "0s", "-3", ""] {
            let line = invalid_line(&["--summary-every", bad]);
            assert!(
                line.contains("--summary-every (env SUMMARY_EVERY)"),
                "{bad}: {line}"
            );
        }
    }

    #[test]
    fn count_must_be_a_positive_whole_number() {
        assert_eq!(parse(&["--count", "3"]).unwrap().count, CallLimit::Calls(3));
        for bad in ["-1", "0", "1.5", "ten"] {
            let line = invalid_line(&["--count", bad]);
            assert!(line.contains("--count (env COUNT)"), "{bad}: {line}");
            assert!(line.contains(&format!("'{bad}'")), "{bad}: {line}");
        }
    }

    #[test]
    fn url_must_be_absolute_http() {
        for bad in ["not-a-url", "ftp://host/", "http://", "/relative"] {
            let line = invalid_line(&["--url", bad]);
            assert!(line.contains("--url (env URL)"), "{bad}: {line}");
        }
        let config = parse(&["--url", "https://hello.external:8443/x?y=1"]).unwrap();
        assert_eq!(config.url.as_str(), "https://hello.external:8443/x?y=1");
    }

    #[test]
    fn durations_and_sizes_are_checked() {
        for (flag, env, bad) in [
            ("--interval", "INTERVAL", "abc"),
            ("--interval", "INTERVAL", "0"),
            ("--interval", "INTERVAL", "0.1ms"),
            ("--timeout", "TIMEOUT", "0"),
            ("--timeout", "TIMEOUT", "5 parsecs"),
            ("--max-body", "MAX_BODY", "0"),
            ("--max-body", "MAX_BODY", "4k"),
            ("--max-body", "MAX_BODY", "99999999999"),
        ] {
            let line = invalid_line(&[flag, bad]);
            assert!(line.contains(&format!("{flag} (env {env})")), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn help_shows_every_env_var_and_default() {
        let Err(ParseOutcome::Display(help)) =
            try_parse_from::<Config, _, _>(["traffic", "--help"])
        else {
            panic!("--help did not display help");
        };
        for needle in [
            "env: URL=",
            "env: INTERVAL=",
            "env: TIMEOUT=",
            "env: COUNT=",
            "env: SUMMARY_EVERY=",
            "env: MAX_BODY=",
            "env: LOG_FORMAT=",
            "default: http://service-that-calls-externally/",
            "default: 1s",
            "default: 10s",
            "default: unbounded",
            "default: off",
            "default: 4096",
            "default: text",
        ] {
            assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
        }
    }
}
