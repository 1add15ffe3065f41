//! Targets and their verdicts: our program against the best of the peers named in the target,
//! at every connection count, on requests/s, CPU per request and p99.
//!
//! A verdict is only "met" from clean runs. A run in which wrk counted a non-2xx answer or a
//! socket error is a failed run for that contender: it may have answered fast with errors, so
//! its figures prove nothing, and the verdict says "failed run" instead of comparing them. A
//! peer that served no requests leaves nothing to compare against: an error, not an infinite
//! ratio.
//!
//! A comparison may have a floor: a contender that does no HTTP at all (the byte relay, the
//! canned answer), measured in the same run against the same peers. A missed figure is
//! "beyond the floor" when, at every connection count where ours falls short, the floor's clean
//! run falls short of the same target too: no HTTP server or proxy reaches it on this machine.
//! A floor run with failed requests, or without the figure, decides nothing: the miss stays a
//! plain miss.

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
    /// Missed, and the floor misses it too wherever ours does: beyond this machine.
    BeyondFloor,
    /// The runs cannot decide: a contender failed requests or a peer served nothing.
    Failed(String),
}

impl Verdict {
    pub fn mark(&self) -> &'static str {
        match self {
            Verdict::Met => "met:",
            Verdict::Missed => "**MISSED**:",
            Verdict::BeyondFloor => "**MISSED (beyond this machine's floor)**:",
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

/// The floor's figures against the best peer's at one connection count.
#[derive(Debug, Clone, PartialEq)]
pub struct FloorCheck {
    pub connections: u32,
    /// The floor's requests/s over the best peer's.
    pub throughput_ratio: f64,
    /// The floor's CPU per request, if measured.
    pub cpu_per_request: Option<Duration>,
    /// The lowest CPU per request among the peers.
    pub best_cpu: Duration,
}

impl FloorCheck {
    /// The best peer's CPU per request over the floor's (above 1: the floor spends less).
    pub fn cpu_ratio(&self) -> Option<f64> {
        let floor = self.cpu_per_request?.as_secs_f64();
        (floor > 0.0).then(|| self.best_cpu.as_secs_f64() / floor)
    }
}

/// The floor's figures against the same best peer as `check`, or why its runs cannot say.
pub fn floor_check(floor: &Series, check: &Check) -> Result<FloorCheck, String> {
    let connections = check.connections;
    let summary = floor
        .at(connections)
        .ok_or_else(|| format!("{} has no runs at {connections} connections", floor.label))?;
    usable(&floor.label, &summary, connections, false)?;
    Ok(FloorCheck {
        connections,
        throughput_ratio: summary.requests_per_second / check.best_requests_per_second,
        cpu_per_request: summary.cpu_per_request,
        best_cpu: check.best_cpu,
    })
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
/// count; any failed count fails all three. A missed requests/s or CPU figure is
/// [`Verdict::BeyondFloor`] when `floor` misses the same target at every count where ours does.
pub fn verdicts(
    target: &Target,
    checks: &[Result<Check, String>],
    floor: Option<&Series>,
) -> [Verdict; 3] {
    if let Some(Err(reason)) = checks.iter().find(|check| check.is_err()) {
        let failed = Verdict::Failed(reason.clone());
        return [failed.clone(), failed.clone(), failed];
    }
    if checks.is_empty() {
        let failed = Verdict::Failed("no runs".into());
        return [failed.clone(), failed.clone(), failed];
    }
    let checks: Vec<&Check> = checks.iter().flatten().collect();
    let throughput = decide(
        &checks,
        floor,
        |check| check.throughput_ratio() >= target.throughput,
        |floor| Some(floor.throughput_ratio >= target.throughput),
    );
    let cpu = decide(
        &checks,
        floor,
        |check| check.cpu_ratio().is_some_and(|ratio| ratio >= target.cpu),
        |floor| Some(floor.cpu_ratio()? >= target.cpu),
    );
    let p99 = decide(
        &checks,
        None,
        |check| check.ours.p99 <= check.best_p99,
        |_| None,
    );
    [throughput, cpu, p99]
}

/// Met when ours `reaches` the target at every count; otherwise beyond the floor when the floor
/// is known not to reach it (`floor_reaches` gives `Some(false)`) at each count ours misses.
fn decide(
    checks: &[&Check],
    floor: Option<&Series>,
    reaches: impl Fn(&Check) -> bool,
    floor_reaches: impl Fn(&FloorCheck) -> Option<bool>,
) -> Verdict {
    let mut missed = checks.iter().filter(|check| !reaches(check)).peekable();
    if missed.peek().is_none() {
        return Verdict::Met;
    }
    let Some(floor) = floor else {
        return Verdict::Missed;
    };
    let floor_misses_too = missed.all(|check| {
        floor_check(floor, check).is_ok_and(|floor| floor_reaches(&floor) == Some(false))
    });
    if floor_misses_too {
        Verdict::BeyondFloor
    } else {
        Verdict::Missed
    }
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
        verdicts(target, &[check(all, target, 64)], None)
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

    fn static_target() -> Target {
        Target {
            peers: vec![1],
            throughput: 1.2,
            cpu: 1.2,
        }
    }

    /// hello-cf at 1.01× nginx's requests/s, 6 against 6 µs per request (misses both), with
    /// `floor` as the floor's run.
    fn decide_with_floor(floor: Measured) -> [Verdict; 3] {
        let all = [
            series("hello-cf", run(101.0, 6, 4, 0)),
            series("nginx", run(100.0, 6, 4, 0)),
        ];
        let target = static_target();
        verdicts(
            &target,
            &[check(&all, &target, 64)],
            Some(&series("canned answer", floor)),
        )
    }

    #[test]
    fn a_miss_the_floor_shares_is_beyond_the_floor_and_one_it_does_not_is_missed() {
        // The floor itself serves 1.04× and spends 6 µs: the 1.2× targets are beyond it.
        assert_eq!(
            decide_with_floor(run(104.0, 6, 4, 0)),
            [Verdict::BeyondFloor, Verdict::BeyondFloor, Verdict::Met]
        );
        // The floor serves 1.3× at 4 µs: the targets are within reach, the misses are ours.
        assert_eq!(
            decide_with_floor(run(130.0, 4, 4, 0)),
            [Verdict::Missed, Verdict::Missed, Verdict::Met]
        );
        // Each figure on its own: the floor reaches the throughput, not the CPU target.
        assert_eq!(
            decide_with_floor(run(130.0, 6, 4, 0)),
            [Verdict::Missed, Verdict::BeyondFloor, Verdict::Met]
        );
    }

    #[test]
    fn a_floor_that_failed_requests_or_has_no_figure_decides_nothing() {
        // Slow enough to put the target beyond it, but it failed requests: a plain miss.
        assert_eq!(
            decide_with_floor(run(104.0, 6, 4, 7)),
            [Verdict::Missed, Verdict::Missed, Verdict::Met]
        );
        // No CPU figure: the throughput is beyond it, the CPU verdict stays a plain miss.
        let mut no_cpu = run(104.0, 6, 4, 0);
        no_cpu.cpu_per_request = None;
        assert_eq!(
            decide_with_floor(no_cpu),
            [Verdict::BeyondFloor, Verdict::Missed, Verdict::Met]
        );
    }

    #[test]
    fn the_floor_is_asked_only_where_ours_falls_short() {
        let target = static_target();
        let at = |connections, rps| Measured {
            connections,
            ..run(rps, 6, 4, 0)
        };
        let two_counts = |floor_at_16: f64| {
            let of = |label: &str, runs: Vec<Measured>| Series {
                label: label.into(),
                note: String::new(),
                runs,
            };
            let all = [
                of("hello-cf", vec![at(16, 130.0), at(64, 101.0)]),
                of("nginx", vec![at(16, 100.0), at(64, 100.0)]),
            ];
            let floor = of("canned answer", vec![at(16, floor_at_16), at(64, 104.0)]);
            let checks = [check(&all, &target, 16), check(&all, &target, 64)];
            verdicts(&target, &checks, Some(&floor))[0].clone()
        };
        // Ours misses at 64 only, where the floor serves 1.04×: beyond the floor, whatever the
        // floor did at 16.
        assert_eq!(two_counts(150.0), Verdict::BeyondFloor);
        assert_eq!(two_counts(90.0), Verdict::BeyondFloor);
        // A failed run of ours anywhere fails the verdict, floor or not.
        let all = [
            series("hello-cf", run(101.0, 6, 4, 3)),
            series("nginx", run(100.0, 6, 4, 0)),
        ];
        let floor = series("canned answer", run(104.0, 6, 4, 0));
        assert!(matches!(
            &verdicts(&target, &[check(&all, &target, 64)], Some(&floor))[0],
            Verdict::Failed(_)
        ));
    }
}
