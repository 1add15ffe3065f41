//! Targets and their verdicts: our program against the best of the peers named in the target,
//! at every connection count, on requests/s, CPU per request and p99.
//!
//! A verdict is only "met" from clean runs. A run in which wrk counted a non-2xx answer or a
//! socket error is a failed run for that contender: it may have answered fast with errors, so
//! its figures prove nothing, and the verdict says "failed run" instead of comparing them. A
//! peer that served no requests leaves nothing to compare against: an error, not an infinite
//! ratio.

use std::time::Duration;

use crate::report::{Series, Summary};

/// What our program (the comparison's first series) must do against the peers.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Indices of the peers in the comparison's series; on each figure the best of them counts.
    pub peers: Vec<usize>,
    /// Our requests/s at least this many times the best peer's.
    pub throughput: f64,
    /// Our CPU per request at most the best peer's divided by this.
    pub cpu: f64,
}

/// One figure's verdict over all connection counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Met,
    Missed,
    /// The runs cannot decide: a contender failed requests or a peer served nothing.
    Failed(String),
}

impl Verdict {
    pub fn mark(&self) -> &'static str {
        match self {
            Verdict::Met => "met:",
            Verdict::Missed => "**MISSED**:",
            Verdict::Failed(_) => "**FAILED RUN**:",
        }
    }
}

/// Our figures next to the best peer's at one connection count.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub connections: u32,
    pub ours: Summary,
    /// The peer with the most requests/s.
    pub best_label: String,
    pub best_requests_per_second: f64,
    /// The lowest CPU per request among the peers.
    pub best_cpu: Duration,
    /// The lowest p99 among the peers.
    pub best_p99: Duration,
}

impl Check {
    /// Our requests/s over the best peer's.
    pub fn throughput_ratio(&self) -> f64 {
        self.ours.requests_per_second / self.best_requests_per_second
    }

    /// The best peer's CPU per request over ours (above 1: we spend less).
    pub fn cpu_ratio(&self) -> Option<f64> {
        let ours = self.ours.cpu_per_request?.as_secs_f64();
        (ours > 0.0).then(|| self.best_cpu.as_secs_f64() / ours)
    }
}

/// Our figures against the best of `target.peers` at `connections`, or why the runs cannot say.
pub fn check(series: &[Series], target: &Target, connections: u32) -> Result<Check, String> {
    let ours_series = series.first().ok_or("no series")?;
    let ours = ours_series.at(connections).ok_or_else(|| {
        format!(
            "{} has no runs at {connections} connections",
            ours_series.label
        )
    })?;
    usable(&ours_series.label, &ours, connections, false)?;
    let mut best: Option<(String, f64)> = None;
    let mut best_cpu: Option<Duration> = None;
    let mut best_p99: Option<Duration> = None;
    for &index in &target.peers {
        let peer = series
            .get(index)
            .ok_or_else(|| format!("no peer number {index}"))?;
        let summary = peer
            .at(connections)
            .ok_or_else(|| format!("{} has no runs at {connections} connections", peer.label))?;
        usable(&peer.label, &summary, connections, true)?;
        let cpu = summary.cpu_per_request.ok_or_else(|| {
            format!(
                "{} has no CPU figure at {connections} connections",
                peer.label
            )
        })?;
        if best
            .as_ref()
            .is_none_or(|(_, rate)| summary.requests_per_second > *rate)
        {
            best = Some((peer.label.clone(), summary.requests_per_second));
        }
        best_cpu = Some(best_cpu.map_or(cpu, |best| best.min(cpu)));
        best_p99 = Some(best_p99.map_or(summary.p99, |best| best.min(summary.p99)));
    }
    let ((best_label, best_requests_per_second), Some(best_cpu), Some(best_p99)) =
        (best.ok_or("the target names no peer")?, best_cpu, best_p99)
    else {
        return Err("the target names no peer".into());
    };
    Ok(Check {
        connections,
        ours,
        best_label,
        best_requests_per_second,
        best_cpu,
        best_p99,
    })
}

/// A contender's runs are usable when wrk counted no failed request, and a peer's only when it
/// served something.
fn usable(label: &str, summary: &Summary, connections: u32, peer: bool) -> Result<(), String> {
    if summary.failures > 0 {
        return Err(format!(
            "{label} failed {} requests at {connections} connections (non-2xx answers or socket errors)",
            summary.failures
        ));
    }
    if peer && !(summary.requests_per_second.is_finite() && summary.requests_per_second > 0.0) {
        return Err(format!(
            "{label} served 0 requests/s at {connections} connections: nothing to compare against"
        ));
    }
    Ok(())
}

/// The three verdicts (requests/s, CPU per request, p99) over `checks`, one per connection
/// count; any failed count fails all three.
pub fn verdicts(target: &Target, checks: &[Result<Check, String>]) -> [Verdict; 3] {
    if let Some(Err(reason)) = checks.iter().find(|check| check.is_err()) {
        let failed = Verdict::Failed(reason.clone());
        return [failed.clone(), failed.clone(), failed];
    }
    if checks.is_empty() {
        let failed = Verdict::Failed("no runs".into());
        return [failed.clone(), failed.clone(), failed];
    }
    let checks: Vec<&Check> = checks.iter().flatten().collect();
    let met = |ok: bool| if ok { Verdict::Met } else { Verdict::Missed };
    let throughput = checks
        .iter()
        .all(|check| check.throughput_ratio() >= target.throughput);
    let cpu = checks
        .iter()
        .all(|check| check.cpu_ratio().is_some_and(|ratio| ratio >= target.cpu));
    let p99 = checks.iter().all(|check| check.ours.p99 <= check.best_p99);
    [met(throughput), met(cpu), met(p99)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Measured;
    use crate::wrk::WrkRun;

    fn run(rps: f64, cpu_us: u64, p99_ms: u64, failures: u64) -> Measured {
        Measured {
            connections: 64,
            wrk: WrkRun {
                requests_per_second: rps,
                p50: Duration::from_micros(500),
                p99: Duration::from_millis(p99_ms),
                requests: (rps * 5.0) as u64,
                non_success: failures,
                socket_errors: 0,
            },
            cpu_per_request: (rps > 0.0).then(|| Duration::from_micros(cpu_us)),
            peak_rss_kib: 4096,
        }
    }

    fn series(label: &str, run: Measured) -> Series {
        Series {
            label: label.into(),
            note: String::new(),
            runs: vec![run],
        }
    }

    const PROXY: Target = Target {
        peers: Vec::new(),
        throughput: 1.0,
        cpu: 1.0,
    };

    fn proxy_target() -> Target {
        Target {
            peers: vec![1, 2],
            ..PROXY
        }
    }

    fn decide(all: &[Series], target: &Target) -> [Verdict; 3] {
        verdicts(target, &[check(all, target, 64)])
    }

    #[test]
    fn ours_is_measured_against_the_best_peer_on_each_figure() {
        let all = [
            series("ours", run(110.0, 10, 4, 0)),
            series("nginx", run(100.0, 9, 5, 0)),
            series("haproxy", run(105.0, 12, 3, 0)),
        ];
        let check = check(&all, &proxy_target(), 64).expect("clean runs");
        assert_eq!(check.best_label, "haproxy");
        assert_eq!(check.best_cpu, Duration::from_micros(9));
        assert_eq!(check.best_p99, Duration::from_millis(3));
        assert_eq!(
            decide(&all, &proxy_target()),
            [Verdict::Met, Verdict::Missed, Verdict::Missed]
        );
    }

    #[test]
    fn a_contender_that_answers_fast_with_errors_is_a_failed_run_never_met() {
        // Twice the peer's rate, but 12 non-2xx answers: the rate proves nothing.
        let all = [
            series("ours", run(200.0, 5, 1, 12)),
            series("nginx", run(100.0, 9, 5, 0)),
            series("haproxy", run(100.0, 9, 5, 0)),
        ];
        let verdicts = decide(&all, &proxy_target());
        for verdict in &verdicts {
            let Verdict::Failed(reason) = verdict else {
                panic!("{verdict:?} must be a failed run");
            };
            assert!(reason.contains("ours failed 12 requests"), "{reason}");
        }
        // A failing peer makes the comparison a failed run too, not a win.
        let all = [
            series("ours", run(100.0, 9, 5, 0)),
            series("nginx", run(50.0, 9, 5, 3)),
            series("haproxy", run(100.0, 9, 5, 0)),
        ];
        assert!(
            matches!(&decide(&all, &proxy_target())[0], Verdict::Failed(r) if r.contains("nginx failed 3"))
        );
    }

    #[test]
    fn a_peer_that_served_nothing_is_an_error_not_an_infinite_ratio() {
        let all = [
            series("ours", run(100.0, 9, 5, 0)),
            series("nginx", run(0.0, 0, 0, 0)),
            series("haproxy", run(100.0, 9, 5, 0)),
        ];
        let Err(reason) = check(&all, &proxy_target(), 64) else {
            panic!("a zero peer must not give a ratio");
        };
        assert!(reason.contains("nginx served 0 requests/s"), "{reason}");
        assert!(matches!(
            &decide(&all, &proxy_target())[0],
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn the_static_target_asks_for_a_fifth_more_and_a_fifth_less_cpu() {
        let target = Target {
            peers: vec![1],
            throughput: 1.2,
            cpu: 1.2,
        };
        let all = [
            series("hello-cf", run(120.0, 10, 4, 0)),
            series("nginx", run(100.0, 12, 4, 0)),
        ];
        assert_eq!(
            decide(&all, &target),
            [Verdict::Met, Verdict::Met, Verdict::Met]
        );
        let all = [
            series("hello-cf", run(119.0, 11, 4, 0)),
            series("nginx", run(100.0, 12, 4, 0)),
        ];
        assert_eq!(
            decide(&all, &target),
            [Verdict::Missed, Verdict::Missed, Verdict::Met]
        );
    }
}
