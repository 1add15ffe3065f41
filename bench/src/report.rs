//! The results of a run and their markdown rendering: medians over rounds, ratios, and a
//! verdict per target of issue 6.

use std::fmt::Write as _;
use std::time::Duration;

use crate::schedule::Schedule;
use crate::wrk::WrkRun;

/// hello-cf must serve at least this many times nginx's requests/s.
pub const STATIC_TARGET: f64 = 1.5;
/// The proxy must serve at least this many times nginx `proxy_pass` (pool)'s requests/s.
pub const PROXY_TARGET: f64 = 1.2;
pub const IDLE_RSS_TARGET_KIB: u64 = 8 * 1024;
pub const BINARY_TARGET_BYTES: u64 = 6 * 1024 * 1024;
/// The callers' mean period must be within this fraction of the interval.
pub const PERIOD_TARGET: f64 = 0.01;

/// Where and how the run happened.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub load_before: String,
    pub load_after: String,
    pub tools: Vec<String>,
    pub settings: Vec<String>,
}

/// One wrk run with what the bench read from /proc around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub connections: u32,
    pub wrk: WrkRun,
    /// CPU time the contender (all its processes) spent per request.
    pub cpu_per_request: Option<Duration>,
    /// Highest VmRSS sampled during the run.
    pub peak_rss_kib: u64,
}

/// All measured runs of one contender in one comparison.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub runs: Vec<Measured>,
}

/// Medians over the rounds at one connection count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub cpu_per_request: Option<Duration>,
    pub failures: u64,
}

impl Series {
    pub fn at(&self, connections: u32) -> Option<Summary> {
        let runs: Vec<&Measured> = self
            .runs
            .iter()
            .filter(|run| run.connections == connections)
            .collect();
        if runs.is_empty() {
            return None;
        }
        let cpu: Vec<f64> = runs
            .iter()
            .filter_map(|run| Some(run.cpu_per_request?.as_secs_f64()))
            .collect();
        Some(Summary {
            requests_per_second: median(runs.iter().map(|run| run.wrk.requests_per_second))?,
            p50: Duration::from_secs_f64(median(runs.iter().map(|run| run.wrk.p50.as_secs_f64()))?),
            p99: Duration::from_secs_f64(median(runs.iter().map(|run| run.wrk.p99.as_secs_f64()))?),
            cpu_per_request: median(cpu).map(Duration::from_secs_f64),
            failures: runs
                .iter()
                .map(|run| run.wrk.non_success + run.wrk.socket_errors)
                .sum(),
        })
    }

    /// Highest VmRSS sampled under load at any connection count.
    pub fn load_rss_kib(&self) -> Option<u64> {
        self.runs.iter().map(|run| run.peak_rss_kib).max()
    }
}

/// A side-by-side comparison: the first series is ours, the rest are what it replaces.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub title: String,
    pub connections: Vec<u32>,
    pub series: Vec<Series>,
}

impl Comparison {
    /// Smallest ratio of our requests/s to `other`'s over the connection counts, and whether
    /// our p99 was no worse at every count.
    fn verdict(&self, other: usize) -> Option<(f64, bool)> {
        let ours = self.series.first()?;
        let theirs = self.series.get(other)?;
        let mut lowest = f64::INFINITY;
        let mut p99_no_worse = true;
        for &connections in &self.connections {
            let (a, b) = (ours.at(connections)?, theirs.at(connections)?);
            lowest = lowest.min(a.requests_per_second / b.requests_per_second);
            p99_no_worse &= a.p99 <= b.p99;
        }
        Some((lowest, p99_no_worse))
    }
}

/// Size, start-up and memory of one program.
#[derive(Debug, Clone, Default)]
pub struct Footprint {
    pub label: String,
    pub binary: Option<String>,
    pub binary_bytes: Option<u64>,
    pub startup: Vec<Duration>,
    pub idle_rss_kib: Vec<u64>,
    pub load_rss_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    /// Whether the idle-RSS and binary targets apply (our programs).
    pub ours: bool,
}

/// The schedule runs of one caller.
#[derive(Debug, Clone)]
pub struct CallerRuns {
    pub label: String,
    pub runs: Vec<Schedule>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub command: String,
    pub machine: Machine,
    pub comparisons: Vec<(Comparison, f64)>,
    pub footprints: Vec<Footprint>,
    pub interval: Duration,
    pub upstream_delay: Duration,
    pub callers: Vec<CallerRuns>,
}

impl Report {
    pub fn footprint(&mut self, label: &str) -> &mut Footprint {
        if let Some(index) = self.footprints.iter().position(|f| f.label == label) {
            return &mut self.footprints[index];
        }
        self.footprints.push(Footprint {
            label: label.to_owned(),
            ..Footprint::default()
        });
        self.footprints.last_mut().expect("just pushed")
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "## Benchmark results\n");
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "Machine: {} CPUs ({}), Linux {}; load average before {}, after {}.",
            m.cpus, m.cpu_model, m.kernel, m.load_before, m.load_after
        );
        if !m.tools.is_empty() {
            let _ = writeln!(out, "Tools: {}.", m.tools.join(", "));
        }
        for setting in &m.settings {
            let _ = writeln!(out, "{setting}");
        }
        for (comparison, target) in &self.comparisons {
            render_comparison(&mut out, comparison, *target);
        }
        if !self.footprints.is_empty() {
            render_footprints(&mut out, &self.footprints, self.interval);
        }
        if !self.callers.is_empty() {
            self.render_callers(&mut out);
        }
        self.render_targets(&mut out);
        out
    }

    fn render_callers(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n### Caller schedule ({} interval, upstream answering after {})\n",
            duration(self.interval),
            duration(self.upstream_delay)
        );
        let _ = writeln!(
            out,
            "| caller | calls | mean period | vs interval | cumulative drift | first call after start |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for caller in &self.callers {
            let Some(summary) = caller_summary(caller) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:+.2} % | {} | {} |",
                caller.label,
                summary.calls,
                duration(summary.mean_period),
                summary.deviation * 100.0,
                signed_ms(summary.drift_seconds),
                duration(summary.first_call),
            );
        }
        let _ = writeln!(
            out,
            "\nMedians of {} runs each; times are the upstream's arrival times of the calls.",
            self.callers.first().map_or(0, |caller| caller.runs.len())
        );
    }

    fn render_targets(&self, out: &mut String) {
        let mut lines = Vec::new();
        for (comparison, target) in &self.comparisons {
            let ours = comparison.series.first().map_or("", |s| s.label.as_str());
            if let (Some((ratio, p99_ok)), Some(theirs)) =
                (comparison.verdict(1), comparison.series.get(1))
            {
                lines.push(format!(
                    "{} {ours} ≥ {target}× {} requests/s at every connection count: lowest ratio {ratio:.2}×",
                    mark(ratio >= *target),
                    theirs.label
                ));
                lines.push(format!(
                    "{} {ours} p99 no worse than {} at every connection count",
                    mark(p99_ok),
                    theirs.label
                ));
            }
        }
        for footprint in self.footprints.iter().filter(|f| f.ours) {
            if let Some(idle) = median_u64(&footprint.idle_rss_kib) {
                lines.push(format!(
                    "{} {} idle RSS ≤ 8 MiB: {}",
                    mark(idle <= IDLE_RSS_TARGET_KIB),
                    footprint.label,
                    mib(idle)
                ));
            }
            if let Some(bytes) = footprint.binary_bytes {
                lines.push(format!(
                    "{} {} stripped binary ≤ 6 MiB: {}",
                    mark(bytes <= BINARY_TARGET_BYTES),
                    footprint.label,
                    mib(bytes / 1024)
                ));
            }
        }
        if let Some(caller) = self.callers.first()
            && let Some(summary) = caller_summary(caller)
        {
            lines.push(format!(
                "{} {} mean period within 1 % of the interval: {:+.2} %",
                mark(summary.deviation.abs() <= PERIOD_TARGET),
                caller.label,
                summary.deviation * 100.0
            ));
            let half = self.interval.as_secs_f64() / 2.0;
            lines.push(format!(
                "{} {} no cumulative drift (less than half an interval after {} calls): {}",
                mark(summary.drift_seconds.abs() < half),
                caller.label,
                summary.calls,
                signed_ms(summary.drift_seconds)
            ));
        }
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n### Targets\n");
        for line in lines {
            let _ = writeln!(out, "- {line}");
        }
    }
}

fn render_comparison(out: &mut String, comparison: &Comparison, target: f64) {
    let series = &comparison.series;
    let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
    let _ = writeln!(out, "\n### {}\n", comparison.title);
    let mut header = String::from("| connections |");
    let mut rule = String::from("|---:|");
    for label in &labels {
        let _ = write!(header, " {label} req/s |");
        rule.push_str("---:|");
    }
    for label in labels.iter().skip(1) {
        let _ = write!(header, " ratio vs {label} |");
        rule.push_str("---:|");
    }
    for figure in ["p50", "p99", "CPU per request"] {
        let _ = write!(header, " {figure} ({}) |", labels.join(" / "));
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    let mut failures = 0;
    for &connections in &comparison.connections {
        let summaries: Vec<Option<Summary>> = series.iter().map(|s| s.at(connections)).collect();
        let mut row = format!("| {connections} |");
        for summary in &summaries {
            let _ = write!(
                row,
                " {} |",
                opt(summary.map(|s| rate(s.requests_per_second)))
            );
        }
        let ours = summaries.first().copied().flatten();
        for theirs in summaries.iter().skip(1) {
            let ratio = match (ours, theirs) {
                (Some(a), Some(b)) => {
                    format!("{:.2}×", a.requests_per_second / b.requests_per_second)
                }
                _ => "–".into(),
            };
            let _ = write!(row, " {ratio} |");
        }
        let figures: [fn(&Summary) -> String; 3] = [
            |s| duration(s.p50),
            |s| duration(s.p99),
            |s| opt(s.cpu_per_request.map(duration)),
        ];
        for figure in figures {
            let cells: Vec<String> = summaries
                .iter()
                .map(|summary| opt(summary.as_ref().map(figure)))
                .collect();
            let _ = write!(row, " {} |", cells.join(" / "));
        }
        failures += summaries.iter().flatten().map(|s| s.failures).sum::<u64>();
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(
        out,
        "\nMedians of {} rounds (target: {}× the first nginx column).",
        series
            .first()
            .and_then(|s| comparison.connections.first().map(|&c| s
                .runs
                .iter()
                .filter(|r| r.connections == c)
                .count()))
            .unwrap_or(0),
        target
    );
    if failures > 0 {
        let _ = writeln!(
            out,
            "**{failures} failed requests** (non-2xx answers or socket errors) in these runs."
        );
    }
}

fn render_footprints(out: &mut String, footprints: &[Footprint], interval: Duration) {
    let _ = writeln!(out, "\n### Size, start-up and memory\n");
    let _ = writeln!(
        out,
        "| program | binary | start-up to first answer | idle RSS | RSS under load | peak RSS (VmHWM) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for f in footprints {
        let startup =
            median(f.startup.iter().map(Duration::as_secs_f64)).map(Duration::from_secs_f64);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            f.label,
            f.binary.as_deref().unwrap_or("–"),
            opt(startup.map(duration)),
            opt(median_u64(&f.idle_rss_kib).map(mib)),
            opt(f.load_rss_kib.map(mib)),
            opt(f.hwm_kib.map(mib)),
        );
    }
    let _ = writeln!(
        out,
        "\nBinaries as built by the release profile (stripped). Start-up: from starting the \
         process to its first correct `GET /` answer (traffic: to its first call reaching the \
         upstream); medians over the rounds. Idle RSS: VmRSS 1 s after that answer (traffic: \
         while waiting for its next call). RSS under load: highest VmRSS sampled every 100 ms \
         under wrk (traffic: while calling every {}). nginx rows add up the master and its \
         workers, shared pages counted in each.",
        duration(interval)
    );
}

/// Median of each figure over a caller's runs.
fn caller_summary(caller: &CallerRuns) -> Option<Schedule> {
    let runs = &caller.runs;
    Some(Schedule {
        calls: runs.first()?.calls,
        mean_period: Duration::from_secs_f64(median(
            runs.iter().map(|r| r.mean_period.as_secs_f64()),
        )?),
        deviation: median(runs.iter().map(|r| r.deviation))?,
        drift_seconds: median(runs.iter().map(|r| r.drift_seconds))?,
        first_call: Duration::from_secs_f64(median(
            runs.iter().map(|r| r.first_call.as_secs_f64()),
        )?),
    })
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

fn median_u64(values: &[u64]) -> Option<u64> {
    median(values.iter().map(|&v| v as f64)).map(|m| m.round() as u64)
}

fn mark(met: bool) -> &'static str {
    if met { "met:" } else { "**MISSED**:" }
}

fn opt(text: Option<String>) -> String {
    text.unwrap_or_else(|| "–".into())
}

/// `102,043`
fn rate(per_second: f64) -> String {
    let whole = per_second.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `454 µs`, `1.19 ms`, `2.50 s`
pub fn duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1e6 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

fn signed_ms(seconds: f64) -> String {
    format!("{:+.1} ms", seconds * 1e3)
}

/// `4.0 MiB`
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(connections: u32, rps: f64, p99_ms: u64) -> Measured {
        Measured {
            connections,
            wrk: WrkRun {
                requests_per_second: rps,
                p50: Duration::from_micros(500),
                p99: Duration::from_millis(p99_ms),
                requests: 1000,
                non_success: 0,
                socket_errors: 0,
            },
            cpu_per_request: Some(Duration::from_micros(10)),
            peak_rss_kib: 4096,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
        assert_eq!(median_u64(&[7, 1, 1000]), Some(7));
    }

    #[test]
    fn formats() {
        assert_eq!(rate(102043.6), "102,044");
        assert_eq!(rate(999.0), "999");
        assert_eq!(duration(Duration::from_micros(454)), "454 µs");
        assert_eq!(duration(Duration::from_micros(1190)), "1.19 ms");
        assert_eq!(mib(4096), "4.0 MiB");
        assert_eq!(signed_ms(-0.0012), "-1.2 ms");
    }

    #[test]
    fn a_comparison_reports_medians_ratios_and_the_verdict() {
        let comparison = Comparison {
            title: "hello-cf vs nginx".into(),
            connections: vec![16],
            series: vec![
                Series {
                    label: "hello-cf".into(),
                    runs: vec![run(16, 100.0, 2), run(16, 300.0, 2), run(16, 200.0, 9)],
                },
                Series {
                    label: "nginx".into(),
                    runs: vec![run(16, 100.0, 3), run(16, 90.0, 3), run(16, 110.0, 3)],
                },
            ],
        };
        assert_eq!(
            comparison.series[0].at(16).map(|s| s.requests_per_second),
            Some(200.0)
        );
        assert_eq!(comparison.verdict(1), Some((2.0, true)));
        let report = Report {
            comparisons: vec![(comparison, STATIC_TARGET)],
            ..Report::default()
        };
        let text = report.render();
        assert!(text.contains("| 16 | 200 | 100 | 2.00× |"), "{text}");
        assert!(
            text.contains("met: hello-cf ≥ 1.5× nginx requests/s"),
            "{text}"
        );
        assert!(text.contains("met: hello-cf p99 no worse"), "{text}");
    }

    #[test]
    fn a_missed_target_is_marked() {
        let comparison = Comparison {
            title: "proxy".into(),
            connections: vec![64],
            series: vec![
                Series {
                    label: "proxy".into(),
                    runs: vec![run(64, 100.0, 5)],
                },
                Series {
                    label: "nginx".into(),
                    runs: vec![run(64, 100.0, 4)],
                },
            ],
        };
        let report = Report {
            comparisons: vec![(comparison, PROXY_TARGET)],
            ..Report::default()
        };
        let text = report.render();
        assert!(text.contains("**MISSED**: proxy ≥ 1.2× nginx"), "{text}");
        assert!(text.contains("**MISSED**: proxy p99 no worse"), "{text}");
    }
}
