//! How well a caller keeps its schedule, from the instants its calls reached the upstream.

use std::time::{Duration, Instant};

/// One caller run, seen from the upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub calls: usize,
    /// (last arrival − first arrival) / (calls − 1).
    pub mean_period: Duration,
    /// mean_period / interval − 1.
    pub deviation: f64,
    /// How far the last call is behind (+) or ahead of (−) the first call plus (calls − 1)
    /// intervals, in seconds: what the caller lost over the whole run.
    pub drift_seconds: f64,
    /// From starting the process to the first call's arrival.
    pub first_call: Duration,
}

/// Reads the schedule from `arrivals` (oldest first) of a caller started at `started`;
/// `None` with fewer than two arrivals.
pub fn analyse(started: Instant, arrivals: &[Instant], interval: Duration) -> Option<Schedule> {
    let (&first, &last) = (arrivals.first()?, arrivals.last()?);
    if arrivals.len() < 2 {
        return None;
    }
    let gaps = (arrivals.len() - 1) as f64;
    let span = last.duration_since(first).as_secs_f64();
    let mean_period = span / gaps;
    Some(Schedule {
        calls: arrivals.len(),
        mean_period: Duration::from_secs_f64(mean_period),
        deviation: mean_period / interval.as_secs_f64() - 1.0,
        drift_seconds: span - gaps * interval.as_secs_f64(),
        first_call: first.saturating_duration_since(started),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals(start: Instant, offsets_ms: &[u64]) -> Vec<Instant> {
        offsets_ms
            .iter()
            .map(|ms| start + Duration::from_millis(*ms))
            .collect()
    }

    #[test]
    fn a_fixed_rate_caller_has_no_drift() {
        let start = Instant::now();
        // Jitter on single ticks, none accumulated.
        let schedule = analyse(
            start,
            &arrivals(start, &[5, 26, 45, 65, 86, 105]),
            Duration::from_millis(20),
        )
        .expect("enough arrivals");
        assert_eq!(schedule.calls, 6);
        assert_eq!(schedule.mean_period, Duration::from_millis(20));
        assert!(schedule.deviation.abs() < 1e-9);
        assert!(schedule.drift_seconds.abs() < 1e-9);
        assert_eq!(schedule.first_call, Duration::from_millis(5));
    }

    #[test]
    fn a_sleep_loop_drifts_by_its_latency_every_tick() {
        let start = Instant::now();
        // Period = 20 ms sleep + 10 ms call.
        let schedule = analyse(
            start,
            &arrivals(start, &[0, 30, 60, 90, 120]),
            Duration::from_millis(20),
        )
        .expect("enough arrivals");
        assert_eq!(schedule.mean_period, Duration::from_millis(30));
        assert!((schedule.deviation - 0.5).abs() < 1e-9);
        assert!((schedule.drift_seconds - 0.040).abs() < 1e-9);
    }

    #[test]
    fn one_arrival_says_nothing() {
        let start = Instant::now();
        assert_eq!(analyse(start, &[start], Duration::from_millis(20)), None);
        assert_eq!(analyse(start, &[], Duration::from_millis(20)), None);
    }
}
