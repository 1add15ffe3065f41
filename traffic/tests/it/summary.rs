//! `#` summary lines: exact counts and shares per body and per error kind.

use std::time::Duration;

use crate::support::{config, fields, respond, run_lines, scripted};
use traffic::{CallLimit, SummaryEvery};

const V1: &str = "Hello K8s, from CF v1 service!";
const V2: &str = "Hello K8s, from CF v2 service!";
const ABORT: &str = "fault filter abort";

/// The upstream's answers, in order, repeating every ten calls: 2 v1, 6 v2, 2 aborts.
fn answer(n: usize) -> axum::response::Response {
    match [1, 2, 2, 0, 2, 1, 2, 0, 2, 2][n % 10] {
        1 => respond(200, format!("{V1}\n")),
        2 => respond(200, format!("{V2}\n")),
        _ => respond(418, ABORT),
    }
}

#[tokio::test]
async fn summaries_every_n_calls_count_exactly() {
    let upstream = scripted(|n| async move { answer(n) }).await;
    let mut config = config(&upstream.url());
    config.count = CallLimit::Calls(10);
    config.summary_every = SummaryEvery::Calls(5);
    let (_, lines) = run_lines(&config).await;

    let summaries: Vec<_> = lines.iter().filter(|line| line.starts_with('#')).collect();
    assert_eq!(
        summaries,
        [
            // After calls 0-4: v1, v2, v2, abort, v2.
            &format!("# total 5 calls: 60% (3) {V2} | 20% (1) {V1} | 20% (1) {ABORT}"),
            // Calls 5-9: v1, v2, abort, v2, v2.
            &format!("# last 5 calls: 60% (3) {V2} | 20% (1) {V1} | 20% (1) {ABORT}"),
            &format!("# total 10 calls: 60% (6) {V2} | 20% (2) {V1} | 20% (2) {ABORT}"),
        ],
        "{lines:?}"
    );
    // Summaries come right after the 5th and the 10th call line.
    assert!(lines[5].starts_with("# total 5 calls"), "{lines:?}");
    assert_eq!(lines.len(), 13);
    assert_eq!(fields(&lines).len(), 10);
}

#[tokio::test]
async fn the_final_summary_counts_error_kinds_too() {
    // v1, v2, v2; then against a closed port.
    let upstream = scripted(|n| async move { answer(n) }).await;
    let mut config = config(&upstream.url());
    config.count = CallLimit::Calls(3);
    config.summary_every = SummaryEvery::Calls(100);
    let (_, lines) = run_lines(&config).await;
    assert_eq!(
        lines.last().unwrap(),
        &format!("# total 3 calls: 67% (2) {V2} | 33% (1) {V1}")
    );

    let refused = demo_testkit::Refused::new();
    config.url = format!("http://{}/", refused.addr()).parse().unwrap();
    config.count = CallLimit::Calls(4);
    let (_, lines) = run_lines(&config).await;
    assert_eq!(
        lines.last().unwrap(),
        "# total 4 calls: 100% (4) error: connection refused"
    );
}

#[tokio::test]
async fn summaries_every_period_cover_all_calls_at_the_end() {
    let upstream = scripted(|n| async move { answer(n) }).await;
    let mut config = config(&upstream.url());
    config.interval = Duration::from_millis(100);
    config.count = CallLimit::Calls(10);
    config.summary_every = SummaryEvery::Period(Duration::from_millis(350));
    let (_, lines) = run_lines(&config).await;

    let first_summary = lines.iter().position(|line| line.starts_with('#'));
    let last_call = lines.iter().rposition(|line| !line.starts_with('#'));
    assert!(
        first_summary < last_call,
        "no periodic summary during the run: {lines:?}"
    );
    assert_eq!(
        lines.last().unwrap(),
        &format!("# total 10 calls: 60% (6) {V2} | 20% (2) {V1} | 20% (2) {ABORT}")
    );
    // The windows partition the run: their call counts add up to the total.
    let window_calls: u64 = lines
        .iter()
        .filter_map(|line| line.strip_prefix("# last "))
        .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let first_total: u64 = lines
        .iter()
        .find_map(|line| line.strip_prefix("# total "))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .unwrap();
    assert_eq!(first_total + window_calls, 10, "{lines:?}");
}

#[tokio::test]
async fn without_summary_every_no_hash_lines_are_printed() {
    let upstream = scripted(|n| async move { answer(n) }).await;
    let mut config = config(&upstream.url());
    config.count = CallLimit::Calls(4);
    let (_, lines) = run_lines(&config).await;
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|line| !line.starts_with('#')), "{lines:?}");
}
