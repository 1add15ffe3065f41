//! Running wrk and reading its report.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::config::Cpus;
use crate::procs;

/// What one wrk run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkRun {
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub requests: u64,
    /// Responses with a status other than 2xx/3xx.
    pub non_success: u64,
    /// Connect, read, write errors and timeouts together.
    pub socket_errors: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WrkParseError {
    #[error("wrk printed no `{0}` line (was --latency given?)")]
    Missing(&'static str),
    #[error("cannot read `{0}` in wrk's output")]
    Malformed(String),
}

/// The wrk command for one run: `threads` threads, `connections` connections, `--latency` for
/// the percentiles.
pub fn command(
    wrk: &Path,
    cpus: &Cpus,
    threads: u32,
    connections: u32,
    duration: Duration,
    url: &str,
) -> Command {
    let mut command = procs::command(wrk, cpus);
    command
        .arg(format!("-t{}", threads.min(connections)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs()))
        .arg("--latency")
        .arg(url);
    command
}

/// Reads wrk's report (the `--latency` form).
pub fn parse(output: &str) -> Result<WrkRun, WrkParseError> {
    let mut requests_per_second = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    let mut non_success = 0;
    let mut socket_errors = 0;
    for line in output.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            requests_per_second = Some(parse_number::<f64>(value)?);
        } else if let Some(value) = line.strip_prefix("50%") {
            p50 = Some(parse_latency(value)?);
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = Some(parse_latency(value)?);
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_success = parse_number(value)?;
        } else if let Some(counts) = line.strip_prefix("Socket errors:") {
            // `connect 0, read 0, write 0, timeout 0`
            for part in counts.split(',') {
                let count = part.split_whitespace().nth(1).unwrap_or_default();
                socket_errors += parse_number::<u64>(count)?;
            }
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = Some(parse_number(count)?);
        }
    }
    Ok(WrkRun {
        requests_per_second: requests_per_second.ok_or(WrkParseError::Missing("Requests/sec"))?,
        p50: p50.ok_or(WrkParseError::Missing("50%"))?,
        p99: p99.ok_or(WrkParseError::Missing("99%"))?,
        requests: requests.ok_or(WrkParseError::Missing("requests in"))?,
        non_success,
        socket_errors,
    })
}

fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, WrkParseError> {
    text.trim()
        .parse()
        .map_err(|_| WrkParseError::Malformed(text.trim().to_owned()))
}

/// wrk prints latencies as `454.00us`, `1.19ms`, `1.02s` or `2.00m`.
fn parse_latency(text: &str) -> Result<Duration, WrkParseError> {
    let text = text.trim();
    let malformed = || WrkParseError::Malformed(text.to_owned());
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(malformed)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| malformed())?;
    let seconds_per_unit = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(malformed()),
    };
    Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
Running 4s test @ http://127.0.0.1:18082/
  2 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.03ms    2.10ms  40.11ms   82.00%
    Req/Sec    24.24k     3.17k   30.00k    70.00%
  Latency Distribution
     50%  454.00us
     75%    4.80ms
     90%    7.00ms
     99%   12.89ms
  193000 requests in 4.00s, 25.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 12
Requests/sec:  48166.97
Transfer/sec:      6.00MB
";

    #[test]
    fn reads_rate_percentiles_and_failures() {
        let run = parse(REPORT).expect("parses");
        assert_eq!(run.requests_per_second, 48166.97);
        assert_eq!(run.p50, Duration::from_micros(454));
        assert_eq!(run.p99, Duration::from_micros(12_890));
        assert_eq!(run.requests, 193_000);
        assert_eq!(run.non_success, 12);
        assert_eq!(run.socket_errors, 5);
    }

    #[test]
    fn a_clean_run_has_no_failures() {
        let clean: String = REPORT
            .lines()
            .filter(|line| !line.contains("errors") && !line.contains("Non-2xx"))
            .map(|line| format!("{line}\n"))
            .collect();
        let run = parse(&clean).expect("parses");
        assert_eq!((run.non_success, run.socket_errors), (0, 0));
    }

    #[test]
    fn a_report_without_percentiles_is_an_error() {
        let without: String = REPORT
            .lines()
            .filter(|line| !line.contains("99%"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(parse(&without), Err(WrkParseError::Missing("99%")));
    }

    #[test]
    fn latency_units() {
        assert_eq!(parse_latency("1.02s"), Ok(Duration::from_millis(1020)));
        assert_eq!(parse_latency("2.00m"), Ok(Duration::from_secs(120)));
        assert!(parse_latency("3.0xs").is_err());
        assert!(parse_latency("ms").is_err());
    }
}
