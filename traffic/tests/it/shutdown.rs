//! SIGTERM/SIGINT end a run promptly: finished calls are printed, calls still waiting get a
//! short grace and are then printed as cancelled, and the final summary follows.

use std::time::Duration;

use crate::support::{Upstream, config, direct_caller, fields, respond, run_lines_with, scripted};
use tokio::time::Instant;
use traffic::{CallLimit, SHUTDOWN_GRACE, SummaryEvery};

/// Resolves once the upstream has seen `requests` requests. Polled in the test's own task (no
/// spawned task whose panic would be lost), it fails the test after a bound.
async fn after_requests(upstream: &Upstream, requests: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstream.arrivals().len() < requests {
        assert!(
            Instant::now() < deadline,
            "the upstream saw {} of {requests} requests within 20s",
            upstream.arrivals().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn calls_without_an_answer_are_cancelled_after_a_short_grace() {
    // Three answers, then an upstream that never answers.
    let upstream = scripted(|n| async move {
        if n >= 3 {
            std::future::pending::<()>().await;
        }
        respond(200, "ok\n")
    })
    .await;
    let mut config = config(&upstream.url());
    config.interval = Duration::from_millis(100);
    config.timeout = Duration::from_secs(60);
    config.count = CallLimit::Unbounded;
    config.summary_every = SummaryEvery::Calls(1000);
    let shutdown = after_requests(&upstream, 5);
    let caller = direct_caller(&config);
    let started = Instant::now();
    let (report, lines) = run_lines_with(&config, caller, shutdown).await;

    assert!(report.interrupted);
    // Five requests take ~400ms; then at most the grace, never the 60s timeout.
    let bound = Duration::from_millis(400) + SHUTDOWN_GRACE + Duration::from_secs(3);
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());

    // Shutdown comes within 10ms of the fifth request and the sixth is due 100ms after it, so
    // five calls, the last two waiting for an answer; a starved machine may fire the sixth.
    let cancelled = "error: cancelled at shutdown";
    assert_eq!(traffic::CANCELLED_FIELD, cancelled);
    let (expected_fields, expected_summary): (&[&str], &str) = match fields(&lines).len() {
        5 => (
            &["ok", "ok", "ok", cancelled, cancelled],
            "# total 5 calls: 60% (3) ok | 40% (2) error: cancelled at shutdown",
        ),
        6 => (
            &["ok", "ok", "ok", cancelled, cancelled, cancelled],
            // A tie: the labels in order ("error: ..." before "ok").
            "# total 6 calls: 50% (3) error: cancelled at shutdown | 50% (3) ok",
        ),
        _ => panic!("expected 5 calls (6 at most): {lines:?}"),
    };
    assert_eq!(fields(&lines), expected_fields, "{lines:?}");
    assert_eq!(report.cancelled as usize, expected_fields.len() - 3);
    assert_eq!(lines.last().unwrap(), expected_summary, "{lines:?}");
}

#[tokio::test]
async fn a_call_answering_within_the_grace_is_printed() {
    let upstream = scripted(|_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        respond(200, "slow but fine\n")
    })
    .await;
    let mut config = config(&upstream.url());
    config.interval = Duration::from_secs(10);
    config.count = CallLimit::Unbounded;
    let shutdown = after_requests(&upstream, 1);
    let caller = direct_caller(&config);
    let (report, lines) = run_lines_with(&config, caller, shutdown).await;
    assert!(report.interrupted);
    assert_eq!(report.cancelled, 0);
    assert_eq!(fields(&lines), ["slow but fine"]);
}
