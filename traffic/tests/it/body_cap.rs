//! Whatever the upstream sends, the caller keeps at most MAX_BODY bytes and moves on.

use std::time::Duration;

use crate::support::{config, field, fields, respond, run_lines, scripted};
use axum::body::{Body, Bytes};
use futures_util::stream;
use traffic::CallLimit;
use traffic::body::TRUNCATED_MARKER;

/// Longest line a call can print with a 4096-byte cap: timestamp, tab, body, marker.
const MAX_LINE: usize = 25 + 1 + 4096 + TRUNCATED_MARKER.len();

#[tokio::test]
async fn a_ten_mib_body_is_cut_at_the_cap_with_a_marker() {
    let upstream = scripted(|_| async { respond(200, vec![b'a'; 10 * 1024 * 1024]) }).await;
    let mut config = config(&upstream.url());
    config.count = CallLimit::Calls(2);
    let (report, lines) = run_lines(&config).await;
    assert_eq!(report.calls, 2);
    for line in &lines {
        assert!(line.len() <= MAX_LINE, "line of {} bytes", line.len());
        assert_eq!(
            field(line),
            format!("{}{TRUNCATED_MARKER}", "a".repeat(4096))
        );
    }
}

#[tokio::test]
async fn an_endless_body_does_not_hold_the_call_until_its_timeout() {
    let upstream = scripted(|_| async {
        let endless =
            stream::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 1024])));
        respond(200, Body::from_stream(endless))
    })
    .await;
    let mut config = config(&upstream.url());
    config.count = CallLimit::Calls(2);
    config.max_body = 100;
    config.timeout = Duration::from_secs(20);
    let started = tokio::time::Instant::now();
    let (_, lines) = run_lines(&config).await;
    // The run ends long before the 20s timeout: reading stops at the cap.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        fields(&lines),
        vec![format!("{}{TRUNCATED_MARKER}", "x".repeat(100)); 2]
    );
}

#[tokio::test]
async fn a_body_exactly_at_the_cap_is_not_marked() {
    let upstream = scripted(|n| async move {
        // 10 bytes with the newline, then 11.
        let body = if n == 0 {
            "123456789\n"
        } else {
            "1234567890\n"
        };
        respond(200, body)
    })
    .await;
    let mut config = config(&upstream.url());
    config.count = CallLimit::Calls(2);
    config.max_body = 10;
    let (_, lines) = run_lines(&config).await;
    assert_eq!(
        fields(&lines),
        [
            "123456789".to_owned(),
            format!("1234567890{TRUNCATED_MARKER}")
        ]
    );
}
