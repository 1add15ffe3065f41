//! hello-cf's fault knobs over real loopback sockets: off by default, FAIL_PERCENT's share and
//! its answer, DELAY's bounds, health endpoints untouched, bad values refused.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use demo_testkit::raw_http::RawConnection;
use demo_testkit::{Acceptance, direct_client_builder};

use crate::support::{config, help, raw_request, run_to_exit, start_binary};

const V2_GREETING: &str = "Hello K8s, from CF v2 service!\n";

/// Starts an in-process v2 server with `args`; returns its address.
async fn start(args: &[&str]) -> SocketAddr {
    let mut argv = vec!["--hello-version", "v2"];
    argv.extend_from_slice(args);
    crate::support::start(config(&argv)).await
}

/// A client that ignores proxy variables and gives up on a request after `timeout`.
fn client(timeout: Duration) -> reqwest::Client {
    direct_client_builder().timeout(timeout).build().unwrap()
}

async fn get(client: &reqwest::Client, address: SocketAddr, path: &str) -> (u16, String) {
    let response = client
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {path}: {error}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn every_request_fails_at_100_percent_with_the_status_and_a_one_line_body() {
    let client = client(Duration::from_secs(10));
    for (args, status) in [
        (&["--fail-percent", "100"][..], 503),
        (&["--fail-percent", "100", "--fail-status", "500"][..], 500),
    ] {
        let address = start(args).await;
        for _ in 0..50 {
            let response = client
                .get(format!("http://{address}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{args:?}");
            assert_eq!(
                response.headers()["content-type"],
                "text/plain; charset=utf-8"
            );
            assert_eq!(
                response.text().await.unwrap(),
                "hello-cf v2: injected failure (FAIL_PERCENT=100)\n"
            );
        }
        // HEAD / is the same route: the status, no body.
        let head = client
            .head(format!("http://{address}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), status);
        assert_eq!(head.text().await.unwrap(), "");
    }
}

#[tokio::test]
async fn zero_percent_never_fails() {
    let address = start(&["--fail-percent", "0"]).await;
    let client = client(Duration::from_secs(10));
    for _ in 0..500 {
        assert_eq!(
            get(&client, address, "/").await,
            (200, V2_GREETING.to_owned())
        );
    }
}

/// With FAIL_PERCENT=50, about half of 2000 requests fail.
///
/// False alarm: the accepted counts (900..=1100) hold a correct 50 % share except with
/// probability at most 8e-6 (7e-6 exactly). Rejected: the nearest wrong shares, 40 % and 60 %,
/// land inside with probability at most 1e-5 each (3e-6 exactly); so do a knob that is ignored
/// (0 %) or applied to every request (100 %).
#[tokio::test]
async fn fifty_percent_fails_about_half_the_requests() {
    const REQUESTS: u64 = 2000;
    let acceptance = Acceptance::new(REQUESTS, 0.5, 8e-6);
    for wrong in [0.0, 0.4, 0.6, 1.0] {
        acceptance.assert_rejects(wrong, 1.0 - 1e-5);
    }
    let address = start(&["--fail-percent", "50"]).await;
    let client = client(Duration::from_secs(10));
    let mut failed = 0;
    for _ in 0..REQUESTS {
        match get(&client, address, "/").await {
            (503, body) => {
                assert_eq!(body, "hello-cf v2: injected failure (FAIL_PERCENT=50)\n");
                failed += 1;
            }
            (200, body) => assert_eq!(body, V2_GREETING),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    acceptance.assert_count("requests failed at FAIL_PERCENT=50", failed);
}

#[tokio::test]
async fn a_fixed_delay_holds_each_answer_but_not_the_others() {
    const DELAY: Duration = Duration::from_millis(500);
    const CONCURRENT: usize = 8;
    let address = start(&["--delay", "500ms"]).await;
    let client = client(Duration::from_secs(30));

    let started = Instant::now();
    assert_eq!(
        get(&client, address, "/").await,
        (200, V2_GREETING.to_owned())
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= DELAY, "answered after {elapsed:?}");
    // Generous: a loaded machine may be slow, but not seconds slow on loopback.
    assert!(elapsed < DELAY + Duration::from_secs(3), "{elapsed:?}");

    // Eight requests on eight connections at once: each waits its own delay, side by side.
    // One after another they would take at least 8 × 500 ms = 4 s.
    let started = Instant::now();
    let calls: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            // A client of its own each, so no two share a connection.
            let client = self::client(Duration::from_secs(30));
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = get(&client, address, "/").await;
                (answer, started.elapsed())
            })
        })
        .collect();
    // Spawned already: they run side by side while awaited in turn.
    for call in calls {
        let (answer, elapsed) = call.await.unwrap();
        assert_eq!(answer, (200, V2_GREETING.to_owned()));
        assert!(elapsed >= DELAY, "answered after {elapsed:?}");
    }
    let all = started.elapsed();
    assert!(
        all < DELAY * CONCURRENT as u32,
        "{CONCURRENT} concurrent delayed requests took {all:?}: they waited for each other"
    );
}

#[tokio::test]
async fn a_range_delay_stays_within_its_bounds() {
    let (min, max) = (Duration::from_millis(200), Duration::from_millis(600));
    let address = start(&["--delay", "200ms-600ms"]).await;
    let client = client(Duration::from_secs(30));
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = get(&client, address, "/").await;
                (answer, started.elapsed())
            })
        })
        .collect();
    for call in calls {
        let (answer, elapsed) = call.await.unwrap();
        assert_eq!(answer, (200, V2_GREETING.to_owned()));
        assert!(elapsed >= min, "answered after {elapsed:?}, before 200ms");
        assert!(
            elapsed < max + Duration::from_secs(3),
            "answered after {elapsed:?}"
        );
    }
}

/// Health endpoints answer while a greeting is still being delayed, and never fail: the
/// platform must not restart an app that misbehaves on purpose. Other paths stay plain 404s.
#[tokio::test]
async fn health_and_other_paths_are_never_delayed_or_failed() {
    let address = start(&["--fail-percent", "100", "--delay", "20s"]).await;
    let client = client(Duration::from_secs(60));

    // The greeting's request is on the wire before any health check is sent.
    let mut delayed = RawConnection::connect(address, Duration::from_secs(10))
        .await
        .expect("connect");
    delayed
        .write(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..50 {
        assert_eq!(
            get(&client, address, "/healthz").await,
            (200, "ok\n".into())
        );
        assert_eq!(
            get(&client, address, "/readyz").await,
            (200, "ready\n".into())
        );
        assert_eq!(
            get(&client, address, "/nope").await,
            (404, "404 page not found\n".into())
        );
    }
    // Ordering, not a clock: all 150 answers came while the 20 s delay still held `/`.
    let mut byte = [0u8; 1];
    match delayed.stream().try_read(&mut byte) {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the delayed request was answered first: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The binary

#[tokio::test]
async fn bad_knob_values_exit_2_naming_the_flag_and_env_var() {
    let cases = [
        ("FAIL_PERCENT", "101", "--fail-percent (env FAIL_PERCENT)"),
        ("FAIL_PERCENT", "-5", "--fail-percent (env FAIL_PERCENT)"),
        ("FAIL_PERCENT", "half", "--fail-percent (env FAIL_PERCENT)"),
        ("FAIL_PERCENT", "50%", "--fail-percent (env FAIL_PERCENT)"),
        ("FAIL_PERCENT", "NaN", "--fail-percent (env FAIL_PERCENT)"),
        ("FAIL_STATUS", "200", "--fail-status (env FAIL_STATUS)"),
        ("FAIL_STATUS", "600", "--fail-status (env FAIL_STATUS)"),
        ("FAIL_STATUS", "teapot", "--fail-status (env FAIL_STATUS)"),
        ("DELAY", "soon", "--delay (env DELAY)"),
        ("DELAY", "2s-1s", "--delay (env DELAY)"),
        ("DELAY", "1s-", "--delay (env DELAY)"),
        ("DELAY", "2h", "--delay (env DELAY)"),
    ];
    for (env, value, expected) in cases {
        let (code, stderr) = run_to_exit(&[], &[(env, value)]).await;
        assert_eq!(code, Some(2), "{env}={value}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{env}={value}: {stderr}"
        );
        assert!(
            stderr.starts_with("hello-cf: ") && stderr.contains(expected),
            "{env}={value}: {stderr}"
        );
        assert!(stderr.contains(&format!("'{value}'")), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The same through the flags.
    for args in [
        ["--delay", "soon"],
        ["--fail-percent", "200"],
        ["--fail-status", "1"],
    ] {
        let (code, stderr) = run_to_exit(&args, &[]).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn help_lists_the_knobs_with_their_env_vars() {
    let (code, help) = help().await;
    assert_eq!(code, Some(0));
    for env in ["FAIL_PERCENT", "FAIL_STATUS", "DELAY"] {
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing:\n{help}"
        );
    }
}

#[tokio::test]
async fn without_knobs_the_binary_answers_byte_exact_and_says_no_faults() {
    let (_running, address, line) = start_binary(&[]).await;
    assert!(line.contains("faults=none"), "{line}");
    let response = raw_request(
        address,
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(lower.contains("content-length: 31"), "{head}");
    assert_eq!(body, V2_GREETING);
}

#[tokio::test]
async fn the_binary_logs_the_knobs_that_are_on_and_applies_them_from_the_environment() {
    let (_running, address, line) =
        start_binary(&[("FAIL_PERCENT", "100"), ("DELAY", "100ms-200ms")]).await;
    assert!(
        line.contains("faults=FAIL_PERCENT=100 FAIL_STATUS=503 DELAY=100ms-200ms"),
        "{line}"
    );
    let started = Instant::now();
    let response = raw_request(
        address,
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(
        response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with("\r\n\r\nhello-cf v2: injected failure (FAIL_PERCENT=100)\n"),
        "{response}"
    );
}
