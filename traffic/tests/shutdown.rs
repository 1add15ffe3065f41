//! SIGTERM/SIGINT end a run promptly: finished calls are printed, calls still waiting get a
//! short grace and are then printed as cancelled, and the final summary follows.

mod support;

use std::time::Duration;

use support::{Upstream, config, fields, respond, run_lines_with, scripted};
use tokio::sync::oneshot;
use tokio::time::Instant;
use traffic::{CallLimit, Caller, SHUTDOWN_GRACE, SummaryEvery};

/// Resolves once the upstream has seen `requests` requests (the test fails after a bound).
fn after_requests(upstream: &Upstream, requests: usize) -> impl Future<Output = ()> + use<> {
    let upstream = upstream.clone();
    let (signal, signalled) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while upstream.arrivals().len() < requests {
            assert!(Instant::now() < deadline, "upstream saw too few requests");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = signal.send(());
    });
    async move {
        let _ = signalled.await;
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
    let caller = Caller::new(&config).unwrap();
    let started = Instant::now();
    let (report, lines) = run_lines_with(&config, caller, shutdown).await;

    assert!(report.interrupted);
    // Five requests take ~400ms; then at most the grace, never the 60s timeout.
    let bound = Duration::from_millis(400) + SHUTDOWN_GRACE + Duration::from_secs(3);
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());

    let fields = fields(&lines);
    assert_eq!(fields[..3], ["ok"; 3], "{lines:?}");
    assert!(fields.len() >= 5, "{lines:?}");
    assert!(
        fields[3..]
            .iter()
            .all(|field| *field == traffic::CANCELLED_FIELD),
        "{lines:?}"
    );
    assert_eq!(report.cancelled as usize, fields.len() - 3);
    let total = fields.len();
    let cancelled = total - 3;
    let share = |count: usize| (count * 200 + total) / (total * 2);
    let mut entries = [(cancelled, traffic::CANCELLED_FIELD), (3, "ok")];
    // Most frequent first; ties by label ("error: ..." sorts before "ok").
    entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let entries: Vec<_> = entries
        .iter()
        .map(|(count, label)| format!("{}% ({count}) {label}", share(*count)))
        .collect();
    assert_eq!(
        lines.last().unwrap(),
        &format!("# total {total} calls: {}", entries.join(" | "))
    );
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
    let caller = Caller::new(&config).unwrap();
    let (report, lines) = run_lines_with(&config, caller, shutdown).await;
    assert!(report.interrupted);
    assert_eq!(report.cancelled, 0);
    assert_eq!(fields(&lines), ["slow but fine"]);
}
