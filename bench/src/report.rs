//! The results of a run and their markdown rendering: medians over rounds, ratios against the
//! best-tuned peer, and a verdict per target (issue 14; the rules in `verdict.rs`).

use std::fmt::Write as _;
use std::time::Duration;

use crate::schedule::Schedule;
use crate::verdict::{self, Target, Verdict};
use crate::wrk::WrkRun;

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
    /// What this contender is, printed under the table.
    pub note: String,
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

/// A side-by-side comparison: the first series is ours, the rest are peers, the older demo's
/// set-ups and reference points.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub title: String,
    /// `pinned` or `unpinned` (the title says how).
    pub pinning: String,
    pub connections: Vec<u32>,
    pub series: Vec<Series>,
    pub target: Option<Target>,
    /// The series that is the floor of this comparison (the byte relay, the canned answer),
    /// if any: not a contender, never one of the target's peers.
    pub floor: Option<usize>,
}

impl Comparison {
    fn floor_series(&self) -> Option<&Series> {
        self.series.get(self.floor?)
    }

    /// What the floor (a contender doing no HTTP) serves against `peers` at each connection
    /// count, and its CPU per request against theirs, in the same run: a target above the
    /// floor's own margin is beyond what any HTTP server or proxy reaches here.
    fn floor_line(&self, peers: &str, checks: &[&verdict::Check]) -> Option<String> {
        let floor = self.floor_series()?;
        if checks.is_empty() {
            return None;
        }
        let floors: Vec<Result<verdict::FloorCheck, String>> = checks
            .iter()
            .map(|check| verdict::floor_check(floor, check))
            .collect();
        let counts = checks
            .iter()
            .map(|check| check.connections.to_string())
            .collect::<Vec<_>>()
            .join(" / ");
        let each = |figure: &dyn Fn(&verdict::FloorCheck) -> String| {
            floors
                .iter()
                .map(|floor| {
                    floor
                        .as_ref()
                        .map_or_else(|_| "failed run".to_owned(), figure)
                })
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let requests = each(&|floor| format!("{:.2}×", floor.throughput_ratio));
        let cpu = each(&|floor| opt(floor.cpu_per_request.map(micros)));
        let peer_cpu = checks
            .iter()
            .map(|check| micros(check.best_cpu))
            .collect::<Vec<_>>()
            .join(" / ");
        let cpu_ratio = each(&|floor| opt(floor.cpu_ratio().map(|r| format!("{r:.2}×"))));
        let mut line = format!(
            "floor ({}): {} against {peers} in the same run, at {counts} connections: \
             requests/s {requests} theirs; CPU per request {cpu} against {peer_cpu} \
             (theirs ÷ the floor's: {cpu_ratio})",
            self.pinning, floor.label
        );
        let failed: Vec<&String> = floors
            .iter()
            .filter_map(|floor| floor.as_ref().err())
            .collect();
        if !failed.is_empty() {
            let reasons: Vec<&str> = failed.iter().map(|reason| reason.as_str()).collect();
            let _ = write!(
                line,
                "; a failed run decides nothing: {}",
                reasons.join("; ")
            );
        }
        Some(line)
    }

    fn checks(&self, target: &Target) -> Vec<Result<verdict::Check, String>> {
        self.connections
            .iter()
            .map(|&connections| verdict::check(&self.series, target, connections))
            .collect()
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
    /// VmRSS 2 s after the last load run: what it keeps after a spike.
    pub after_load_rss_kib: Option<u64>,
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
    pub comparisons: Vec<Comparison>,
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
        self.render_headline(&mut out);
        for comparison in &self.comparisons {
            render_comparison(&mut out, comparison);
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
        for comparison in &self.comparisons {
            let Some(target) = &comparison.target else {
                continue;
            };
            let ours = comparison.series.first().map_or("", |s| s.label.as_str());
            let peers: Vec<&str> = target
                .peers
                .iter()
                .filter_map(|&index| Some(comparison.series.get(index)?.label.as_str()))
                .collect();
            let peers = if peers.len() > 1 {
                format!("the best of {}", peers.join(" and "))
            } else {
                peers.concat()
            };
            let checks = comparison.checks(target);
            let floor = comparison.floor_series();
            let [throughput, cpu, p99] = verdict::verdicts(target, &checks, floor);
            let clean: Vec<&verdict::Check> = checks.iter().flatten().collect();
            let lowest = |f: fn(&verdict::Check) -> Option<f64>| {
                clean
                    .iter()
                    .filter_map(|check| f(check))
                    .min_by(f64::total_cmp)
            };
            let why = |verdict: &Verdict, figures: String| match (verdict, floor) {
                (Verdict::Failed(reason), _) => reason.clone(),
                (Verdict::BeyondFloor, Some(floor)) => format!(
                    "{figures}; at each connection count where it falls short, {} \
                     falls short too: the target is beyond this machine's floor in this run",
                    floor.label
                ),
                _ => figures,
            };
            let pinning = &comparison.pinning;
            lines.push(format!(
                "{} {ours} ({pinning}) ≥ {}× {peers} requests/s at every connection count: {}",
                throughput.mark(),
                target.throughput,
                why(
                    &throughput,
                    format!(
                        "lowest ratio {}",
                        opt(lowest(|c| Some(c.throughput_ratio())).map(|r| format!("{r:.2}×")))
                    )
                )
            ));
            let cpu_goal = if target.cpu == 1.0 {
                "CPU per request no higher than".to_owned()
            } else {
                format!("{}× less CPU per request than", target.cpu)
            };
            lines.push(format!(
                "{} {ours} ({pinning}) {cpu_goal} {peers} at every connection count: {}",
                cpu.mark(),
                why(
                    &cpu,
                    format!(
                        "lowest ratio {}",
                        opt(lowest(verdict::Check::cpu_ratio).map(|r| format!("{r:.2}×")))
                    )
                )
            ));
            lines.push(format!(
                "{} {ours} ({pinning}) p99 no worse than {peers} at every connection count{}",
                p99.mark(),
                match &p99 {
                    Verdict::Failed(reason) => format!(": {reason}"),
                    _ => String::new(),
                }
            ));
            if let Some(floor) = comparison.floor_line(&peers, &clean) {
                lines.push(floor);
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

impl Report {
    /// One table of our programs against the best-tuned peer at each connection count, for
    /// every comparison that has a target.
    fn render_headline(&self, out: &mut String) {
        let rows: Vec<String> = self
            .comparisons
            .iter()
            .filter_map(|comparison| Some((comparison, comparison.target.as_ref()?)))
            .flat_map(|(comparison, target)| {
                let ours = comparison.series.first().map_or("", |s| s.label.as_str());
                comparison
                    .checks(target)
                    .into_iter()
                    .zip(&comparison.connections)
                    .map(move |(check, connections)| match check {
                        Ok(check) => format!(
                            "| {ours} | {} | {connections} | {} | {:.2}× | {} / {} ({}) | {} / {} |",
                            comparison.pinning,
                            check.best_label,
                            check.throughput_ratio(),
                            opt(check.ours.cpu_per_request.map(micros)),
                            micros(check.best_cpu),
                            opt(check.cpu_ratio().map(|r| format!("{r:.2}×"))),
                            duration(check.ours.p99),
                            duration(check.best_p99),
                        ),
                        Err(reason) => format!(
                            "| {ours} | {} | {connections} | **failed run**: {reason} | – | – | – |",
                            comparison.pinning
                        ),
                    })
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n### Headline: ours against the best-tuned peer\n");
        let _ = writeln!(
            out,
            "| program | pinning | connections | best-tuned peer (most req/s) | req/s, ours ÷ peer's | CPU per request, ours / lowest peer's (peer's ÷ ours) | p99, ours / lowest peer's |"
        );
        let _ = writeln!(out, "|---|---|---:|---|---:|---:|---:|");
        for row in rows {
            let _ = writeln!(out, "{row}");
        }
        let _ = writeln!(
            out,
            "\nThe peers of each target are tuned for the job (see the notes under each table); \
             each figure is compared with the best peer's figure: most requests/s, least CPU per \
             request, lowest p99."
        );
    }
}

/// One row per contender and connection count.
fn render_comparison(out: &mut String, comparison: &Comparison) {
    let series = &comparison.series;
    let _ = writeln!(out, "\n### {} ({})\n", comparison.title, comparison.pinning);
    let ours_label = series.first().map_or("", |s| s.label.as_str());
    let _ = writeln!(
        out,
        "| connections | contender | req/s | {ours_label} ÷ this | p50 | p99 | CPU per request | failed requests |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for &connections in &comparison.connections {
        let ours = series.first().and_then(|s| s.at(connections));
        for (index, contender) in series.iter().enumerate() {
            let Some(summary) = contender.at(connections) else {
                continue;
            };
            let ratio = match (index, ours) {
                (0, _) | (_, None) => "–".to_owned(),
                (_, Some(ours)) => ratio(ours.requests_per_second, summary.requests_per_second),
            };
            let failed = if summary.failures > 0 {
                format!("**{} (failed run)**", summary.failures)
            } else {
                "0".to_owned()
            };
            let _ = writeln!(
                out,
                "| {connections} | {} | {} | {ratio} | {} | {} | {} | {failed} |",
                contender.label,
                rate(summary.requests_per_second),
                duration(summary.p50),
                duration(summary.p99),
                opt(summary.cpu_per_request.map(micros)),
            );
        }
    }
    let rounds = series
        .first()
        .and_then(|s| {
            let first = *comparison.connections.first()?;
            Some(s.runs.iter().filter(|r| r.connections == first).count())
        })
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "\nMedians of {rounds} rounds. CPU per request: the contender's user + system time \
         (/proc, all its processes and threads; not the upstream's) over the measured run, \
         divided by the requests wrk completed. A run with failed requests (non-2xx answers or \
         socket errors) is a failed run: its figures decide no target."
    );
    for contender in series.iter().filter(|s| !s.note.is_empty()) {
        let _ = writeln!(out, "- **{}**: {}", contender.label, contender.note);
    }
}

/// `ours / theirs` as `1.23×`; a peer that served nothing gives no ratio.
fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 && theirs.is_finite() {
        format!("{:.2}×", ours / theirs)
    } else {
        "– (peer served 0)".to_owned()
    }
}

/// `12.3 µs`: CPU per request needs a decimal.
fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn render_footprints(out: &mut String, footprints: &[Footprint], interval: Duration) {
    let _ = writeln!(out, "\n### Size, start-up and memory\n");
    let _ = writeln!(
        out,
        "| program | binary | start-up to first answer | idle RSS | RSS under load | peak RSS (VmHWM) | RSS 2 s after the load |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for f in footprints {
        let startup =
            median(f.startup.iter().map(Duration::as_secs_f64)).map(Duration::from_secs_f64);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.label,
            f.binary.as_deref().unwrap_or("–"),
            opt(startup.map(duration)),
            opt(median_u64(&f.idle_rss_kib).map(mib)),
            opt(f.load_rss_kib.map(mib)),
            opt(f.hwm_kib.map(mib)),
            opt(f.after_load_rss_kib.map(mib)),
        );
    }
    let _ = writeln!(
        out,
        "\nBinaries as built by the dist profile (stripped), what ships. Start-up: from starting the \
         process to its first correct `GET /` answer (traffic: to its first call reaching the \
         upstream); medians over the rounds. Idle RSS: VmRSS 1 s after that answer (traffic: \
         while waiting for its next call). RSS under load: highest VmRSS sampled every 100 ms \
         under the pinned wrk runs (traffic: while calling every {}). Peers of several \
         processes (nginx) add up the master and its workers, shared pages counted in each.",
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

    fn series(label: &str, runs: Vec<Measured>) -> Series {
        Series {
            label: label.into(),
            note: format!("what {label} is"),
            runs,
        }
    }

    fn static_comparison(nginx_runs: Vec<Measured>) -> Comparison {
        Comparison {
            title: "hello-cf vs nginx".into(),
            pinning: "pinned".into(),
            connections: vec![16],
            series: vec![
                series(
                    "hello-cf",
                    vec![run(16, 100.0, 2), run(16, 300.0, 2), run(16, 200.0, 9)],
                ),
                series("nginx", nginx_runs),
            ],
            target: Some(Target {
                peers: vec![1],
                throughput: 1.2,
                cpu: 1.0,
            }),
            floor: None,
        }
    }

    #[test]
    fn a_comparison_reports_medians_ratios_notes_and_the_verdict() {
        let comparison =
            static_comparison(vec![run(16, 100.0, 3), run(16, 90.0, 3), run(16, 110.0, 3)]);
        assert_eq!(
            comparison.series[0].at(16).map(|s| s.requests_per_second),
            Some(200.0)
        );
        let report = Report {
            comparisons: vec![comparison],
            ..Report::default()
        };
        let text = report.render();
        assert!(
            text.contains("| 16 | nginx | 100 | 2.00× | 500 µs | 3.00 ms | 10.0 µs | 0 |"),
            "{text}"
        );
        assert!(text.contains("- **nginx**: what nginx is"), "{text}");
        assert!(
            text.contains("| hello-cf | pinned | 16 | nginx | 2.00× |"),
            "{text}"
        );
        assert!(
            text.contains("met: hello-cf (pinned) ≥ 1.2× nginx requests/s"),
            "{text}"
        );
        assert!(
            text.contains("met: hello-cf (pinned) p99 no worse"),
            "{text}"
        );
    }

    #[test]
    fn a_missed_target_is_marked() {
        let mut comparison = static_comparison(vec![run(16, 190.0, 1)]);
        comparison.target = Some(Target {
            peers: vec![1],
            throughput: 1.2,
            cpu: 1.2,
        });
        let report = Report {
            comparisons: vec![comparison],
            ..Report::default()
        };
        let text = report.render();
        assert!(
            text.contains("**MISSED**: hello-cf (pinned) ≥ 1.2× nginx"),
            "{text}"
        );
        assert!(
            text.contains("**MISSED**: hello-cf (pinned) 1.2× less CPU per request than nginx"),
            "{text}"
        );
        assert!(
            text.contains("**MISSED**: hello-cf (pinned) p99 no worse"),
            "{text}"
        );
    }

    /// The static comparison with `floor` as its floor series, hello-cf at 200 req/s against
    /// nginx's 100 at 10 µs per request each.
    fn with_floor(floor: Vec<Measured>) -> Comparison {
        let mut comparison = static_comparison(vec![run(16, 100.0, 3)]);
        comparison.target = Some(Target {
            peers: vec![1],
            throughput: 1.2,
            cpu: 1.2,
        });
        comparison.series.push(series("canned answer", floor));
        comparison.floor = Some(2);
        comparison
    }

    fn render(comparison: Comparison) -> String {
        Report {
            comparisons: vec![comparison],
            ..Report::default()
        }
        .render()
    }

    #[test]
    fn the_floor_is_quoted_against_the_peer_and_never_counts_as_one() {
        let mut floor = run(16, 125.0, 1);
        floor.cpu_per_request = Some(Duration::from_micros(8));
        let text = render(with_floor(vec![floor]));
        assert!(
            text.contains(
                "- floor (pinned): canned answer against nginx in the same run, at 16 connections: \
                 requests/s 1.25× theirs; CPU per request 8.0 µs against 10.0 µs (theirs ÷ the \
                 floor's: 1.25×)"
            ),
            "{text}"
        );
        // The headline's best peer is nginx, not the faster floor.
        assert!(
            text.contains("| hello-cf | pinned | 16 | nginx | 2.00× |"),
            "{text}"
        );
        assert!(
            text.contains("| 16 | canned answer | 125 | 1.60× |"),
            "{text}"
        );
    }

    #[test]
    fn a_miss_the_floor_shares_is_said_to_be_beyond_this_machine() {
        // hello-cf serves 2× nginx at the same CPU per request; the floor spends as much.
        let text = render(with_floor(vec![run(16, 104.0, 1)]));
        assert!(
            text.contains("met: hello-cf (pinned) ≥ 1.2× nginx requests/s"),
            "{text}"
        );
        assert!(
            text.contains(
                "**MISSED (beyond this machine's floor)**: hello-cf (pinned) 1.2× less CPU per \
                 request than nginx at every connection count: lowest ratio 1.00×; at each \
                 connection count where it falls short, canned answer falls short too: the \
                 target is beyond this machine's floor in this run"
            ),
            "{text}"
        );
        // A floor that spends a third less CPU: the target is within reach, the miss is ours.
        let mut frugal = run(16, 104.0, 1);
        frugal.cpu_per_request = Some(Duration::from_micros(7));
        let text = render(with_floor(vec![frugal]));
        assert!(
            text.contains("- **MISSED**: hello-cf (pinned) 1.2× less CPU per request"),
            "{text}"
        );
        assert!(!text.contains("beyond this machine"), "{text}");
    }

    #[test]
    fn a_floor_run_with_failed_requests_decides_nothing() {
        let mut failing = run(16, 104.0, 1);
        failing.wrk.socket_errors = 5;
        let text = render(with_floor(vec![failing]));
        assert!(
            text.contains("- **MISSED**: hello-cf (pinned) 1.2× less CPU per request"),
            "{text}"
        );
        assert!(!text.contains("beyond this machine"), "{text}");
        assert!(
            text.contains("requests/s failed run theirs;")
                && text.contains("a failed run decides nothing: canned answer failed 5 requests"),
            "{text}"
        );
    }

    #[test]
    fn failed_runs_and_silent_peers_are_shown_as_such_never_met() {
        let mut failing = run(16, 500.0, 1);
        failing.wrk.non_success = 40;
        let report = Report {
            comparisons: vec![static_comparison(vec![failing])],
            ..Report::default()
        };
        let text = report.render();
        assert!(text.contains("**40 (failed run)**"), "{text}");
        assert!(
            text.contains("**FAILED RUN**: hello-cf (pinned) ≥ 1.2×"),
            "{text}"
        );
        assert!(!text.contains("met: hello-cf"), "{text}");

        let report = Report {
            comparisons: vec![static_comparison(vec![run(16, 0.0, 1)])],
            ..Report::default()
        };
        let text = report.render();
        assert!(text.contains("– (peer served 0)"), "{text}");
        assert!(!text.contains("inf"), "{text}");
        assert!(text.contains("**FAILED RUN**"), "{text}");
    }
}
