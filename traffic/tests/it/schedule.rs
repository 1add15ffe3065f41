//! The fixed-rate schedule, measured where it matters: when requests reach the upstream.

use std::time::Duration;

use crate::support::{config, fields, respond, run_lines, scripted};
use tokio::time::Instant;
use traffic::CallLimit;

const INTERVAL: Duration = Duration::from_millis(200);

/// Generous for a loaded 2-core machine, yet under half an interval, so each arrival is
/// attributed to exactly one tick. The older `sleep` loop was off by 250-500ms per call.
const TOLERANCE: Duration = Duration::from_millis(90);

#[tokio::test]
async fn a_slow_upstream_does_not_push_later_calls_back() {
    // Even calls take 500ms, odd ones 250ms: every call outlasts the interval, and call k+1
    // finishes before call k.
    let upstream = scripted(|n| async move {
        let delay = if n % 2 == 0 { 500 } else { 250 };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        respond(200, format!("call {n}\n"))
    })
    .await;
    let calls = 12;
    let mut config = config(&upstream.url());
    config.interval = INTERVAL;
    config.count = CallLimit::Calls(calls);
    let (report, lines) = run_lines(&config).await;

    // Printed in tick order although they finished out of order.
    let expected: Vec<String> = (0..calls).map(|n| format!("call {n}")).collect();
    assert_eq!(fields(&lines), expected);
    assert_eq!(report.skipped_ticks, 0);

    let arrivals = upstream.arrivals();
    assert_eq!(arrivals.len(), calls as usize);
    let first = arrivals[0].at;
    for (k, arrival) in arrivals.iter().enumerate() {
        let expected = INTERVAL * u32::try_from(k).unwrap();
        let actual = arrival.at - first;
        let off = actual.abs_diff(expected);
        assert!(
            off <= TOLERANCE,
            "call {k} arrived at +{actual:?}, expected +{expected:?}"
        );
    }
}

#[tokio::test]
async fn no_drift_accumulates_over_many_ticks() {
    let upstream = scripted(|_| async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        respond(200, "ok\n")
    })
    .await;
    let interval = Duration::from_millis(50);
    let calls = 60u32;
    let mut config = config(&upstream.url());
    config.interval = interval;
    config.count = CallLimit::Calls(calls.into());
    let (report, _) = run_lines(&config).await;
    assert_eq!(report.calls, u64::from(calls));

    let arrivals = upstream.arrivals();
    let span = arrivals[arrivals.len() - 1].at - arrivals[0].at;
    let expected = interval * (calls - 1);
    // A sleep-after-call loop would take 80ms per call (4.7s here instead of 2.95s).
    assert!(
        span.abs_diff(expected) <= TOLERANCE,
        "{calls} calls spanned {span:?}, expected {expected:?}"
    );
}

/// Runs on one thread, so that blocking it starves the caller the way a suspended or
/// CPU-starved process is.
#[tokio::test(flavor = "current_thread")]
async fn ticks_missed_while_starved_are_skipped_and_reported_not_burst() {
    let upstream = scripted(|_| async { respond(200, "ok\n") }).await;
    let interval = Duration::from_millis(100);
    let mut config = config(&upstream.url());
    config.interval = interval;
    config.count = CallLimit::Calls(6);

    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        std::thread::sleep(Duration::from_millis(450)); // starves the whole runtime
    });
    let started = Instant::now();
    let (report, lines) = run_lines(&config).await;

    assert_eq!(report.calls, 6);
    assert!(report.skipped_ticks >= 3, "{report:?}\n{lines:?}");
    let notes: Vec<_> = lines.iter().filter(|line| line.starts_with('#')).collect();
    assert_eq!(notes.len(), 1, "{lines:?}");
    let prefix = format!("# skipped {} ticks: the caller was ", report.skipped_ticks);
    assert!(
        notes[0].starts_with(&prefix) && notes[0].ends_with(" behind schedule"),
        "{notes:?}"
    );
    // The note sits where the gap is: after the calls made before the stall.
    let note_at = lines.iter().position(|line| line.starts_with('#')).unwrap();
    assert!((1..=3).contains(&note_at), "{lines:?}");

    // After the stall the calls stay one interval apart instead of catching up in a burst.
    let arrivals = upstream.arrivals();
    let after_stall: Vec<_> = arrivals
        .iter()
        .filter(|arrival| arrival.at >= started + Duration::from_millis(550))
        .collect();
    for pair in after_stall.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= interval / 2, "burst: gap of {gap:?} in {arrivals:?}");
    }
}
