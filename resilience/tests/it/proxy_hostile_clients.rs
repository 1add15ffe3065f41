//! The proxy, the real binary, against clients that misbehave: slowloris connections that
//! never finish their headers, heads too large to hold, and requests whose framing is
//! ambiguous (`Content-Length` against `Transfer-Encoding`, the request-smuggling shapes).
//! Each gets a 4xx or a closed connection, nothing ambiguous reaches the upstream, and a
//! normal caller keeps getting prompt answers throughout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Exchange, Program, figure, get_once, loading, percentile, within};
use bytes::Bytes;
use demo_testkit::memory::{open_fds, settled_fds};
use demo_testkit::raw_http::RawConnection;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

const STEP: Duration = Duration::from_secs(60);
const SLOWLORIS: usize = 500;
/// Connections opened at once (a divisor of SLOWLORIS).
const SLOWLORIS_WAVE: usize = 50;
/// The proxy's limit for a request head (demo_common's ServerOptions default).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack on top of the limit for a loaded machine.
const CUT_SLACK: Duration = Duration::from_secs(10);

/// A request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// An upstream that records every request and answers `upstream saw <path>`.
struct RecordingUpstream {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RecordingUpstream {
    async fn start() -> Self {
        let (listener, address) = demo_testkit::listener().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let log = Arc::clone(&log);
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let path = parts.uri.path().to_owned();
                            log.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                path: path.clone(),
                                headers: parts.headers,
                                body,
                            });
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                                "upstream saw {path}\n"
                            )))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { address, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn start_proxy(upstream: &RecordingUpstream) -> (Program, SocketAddr) {
    let proxy = crate::support::start_proxy(upstream.address, &[("UPSTREAM_TIMEOUT", "2s")]).await;
    (proxy.program, proxy.address)
}

/// What a raw exchange produced: the first status code (if any) and whether the server
/// closed the connection within the wait.
struct RawOutcome {
    status: Option<u16>,
    closed: bool,
    response: String,
}

/// Writes `request` (ignoring a server that hangs up midway) and reads until the server
/// closes or `wait` passes.
async fn raw_exchange(address: SocketAddr, request: &[u8], wait: Duration) -> RawOutcome {
    let mut connection = RawConnection::connect(address, wait)
        .await
        .expect("connect");
    let _ = connection.write(request).await;
    let (response, closed) = connection.read_until_closed(wait).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok());
    RawOutcome {
        status,
        closed,
        response,
    }
}

/// A normal caller's request: fresh connection, full answer from the upstream.
/// The proxy never panicked, and still stops cleanly: SIGTERM, exit code 0.
async fn stop_unharmed(proxy: &mut Program) {
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait_exit(STEP).await.code(), Some(0));
}

async fn normal_call(proxy: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    match get_once(proxy, "/normal", Duration::from_secs(10)).await {
        Exchange::Answered { status, body }
            if status == StatusCode::OK && body == "upstream saw /normal\n" =>
        {
            Ok(started.elapsed())
        }
        other => Err(format!("{other:?}")),
    }
}

/// Sends a request head that never ends, one more header line a second, until the server
/// closes the connection; returns how long it was held and what the server sent.
async fn slowloris(proxy: SocketAddr) -> (Duration, String) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let _ = stream
        .write_all(b"GET /slowloris HTTP/1.1\r\nHost: x\r\n")
        .await;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            },
            _ = tick.tick() => {
                if stream.write_all(b"X-Still-Coming: 1\r\n").await.is_err() {
                    break;
                }
            }
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_and_never_starve_a_normal_caller() {
    let _loading = loading().await;
    let upstream = RecordingUpstream::start().await;
    let (mut proxy, address) = start_proxy(&upstream).await;
    // Idle: its one pooled upstream connection open, no client connection.
    normal_call(address)
        .await
        .expect("a normal call before the attack");
    let idle_fds = settled_fds(proxy.pid(), None, STEP).await;

    // In waves: a burst of 500 handshakes while the proxy is slow to accept (a busy machine)
    // overflows the kernel's listen queues, and the dropped ones retry after 1, 3, 7 s, past
    // the head timeout of the first (seen as ListenOverflows in `nstat`). Each wave waits until the proxy holds it; then the test calls normally
    // while they all hang on.
    let mut attackers = JoinSet::new();
    for wave in 1..=SLOWLORIS / SLOWLORIS_WAVE {
        for _ in 0..SLOWLORIS_WAVE {
            attackers.spawn(slowloris(address));
        }
        demo_testkit::eventually("the slowloris connections to be accepted", STEP, || {
            let held = open_fds(proxy.pid()).unwrap_or(0);
            async move { held >= idle_fds + wave * SLOWLORIS_WAVE }
        })
        .await;
    }
    let memory_held = proxy.memory().unwrap();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut held_for = Vec::new();
    let mut answers = Vec::new();
    within(
        "the slowloris connections to be cut",
        HEADER_READ_TIMEOUT + CUT_SLACK,
        async {
            while !attackers.is_empty() {
                match normal_call(address).await {
                    Ok(latency) => latencies.push(latency),
                    Err(error) => failures.push(error),
                }
                let pause = tokio::time::sleep(Duration::from_millis(100));
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        () = &mut pause => break,
                        Some(done) = attackers.join_next() => {
                            let (held, answer) = done.unwrap();
                            held_for.push(held);
                            answers.push(answer);
                        }
                    }
                }
            }
        },
    )
    .await;

    assert!(failures.is_empty(), "normal calls failed: {failures:?}");
    let calls = latencies.len();
    assert!(calls >= 20, "only {calls} normal calls were made");
    let p50 = percentile(&mut latencies, 50);
    let p99 = percentile(&mut latencies, 99);
    let max = percentile(&mut latencies, 100);
    assert!(p99 < Duration::from_secs(2), "normal calls p99 {p99:?}");
    // Cut by the head timeout: nothing was forwarded and nothing but an error answered.
    for answer in &answers {
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "a slowloris connection got {answer:?}"
        );
    }
    let shortest = percentile(&mut held_for, 0);
    let longest = percentile(&mut held_for, 100);
    // Held for the whole head timeout, not cut early (each was timed from before its
    // connect, so never less than the proxy's own clock), and cut within the slack after it.
    assert_eq!(held_for.len(), SLOWLORIS);
    assert!(
        shortest >= HEADER_READ_TIMEOUT,
        "a slowloris connection was cut after {shortest:?}, before the head timeout \
         {HEADER_READ_TIMEOUT:?}"
    );
    assert!(
        longest <= HEADER_READ_TIMEOUT + CUT_SLACK,
        "a slowloris connection was held for {longest:?}"
    );
    assert!(
        upstream.seen().iter().all(|seen| seen.path == "/normal"),
        "a half-sent request reached the upstream"
    );
    settled_fds(proxy.pid(), Some(idle_fds), STEP).await;
    stop_unharmed(&mut proxy).await;

    figure(
        "proxy_hostile_clients",
        format!(
            "{SLOWLORIS} slowloris connections held then cut after {shortest:.1?}-{longest:.1?} \
             (head timeout {HEADER_READ_TIMEOUT:?}), none forwarded; meanwhile {calls} normal \
             calls, 0 failed, p50 {p50:?}, max {max:?}; proxy memory with them open: {memory_held}"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_a_4xx_or_a_close_and_reach_nobody() {
    let upstream = RecordingUpstream::start().await;
    let (mut proxy, address) = start_proxy(&upstream).await;
    let huge = "a".repeat(1024 * 1024);
    let many: String = (0..2000)
        .map(|i| format!("X-Header-{i}: {i}\r\n"))
        .collect();
    let cases: Vec<(&str, String)> = vec![
        (
            "a 1 MiB header",
            format!("GET /huge-header HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n"),
        ),
        (
            "2000 headers",
            format!("GET /many-headers HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
        ),
        (
            "a 1 MiB target",
            format!("GET /huge-target/{huge} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ),
        (
            "a 1 MiB head that never ends",
            format!("GET /endless-head HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}"),
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, request) in &cases {
        let outcome = raw_exchange(address, request.as_bytes(), Duration::from_secs(15)).await;
        assert!(
            outcome.closed,
            "{name}: the connection stayed open: {:?}",
            outcome.response
        );
        assert!(
            outcome
                .status
                .is_none_or(|status| [400, 413, 414, 431].contains(&status)),
            "{name}: got {:?}",
            outcome.response
        );
        outcomes.push(format!(
            "{name} -> {}",
            outcome
                .status
                .map_or("closed".to_owned(), |status| format!("{status}, closed"))
        ));
    }
    assert!(
        upstream.seen().is_empty(),
        "forwarded: {:?}",
        upstream.seen()
    );
    // The proxy is unharmed.
    normal_call(address)
        .await
        .expect("a normal call after the oversized heads");
    stop_unharmed(&mut proxy).await;
    figure(
        "proxy_hostile_clients",
        format!("oversized heads: {}", outcomes.join("; ")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_gets_a_400_or_a_close_and_smuggles_nothing() {
    let upstream = RecordingUpstream::start().await;
    let (mut proxy, address) = start_proxy(&upstream).await;
    // Each request is followed by a second one hidden where the framing is ambiguous; if the
    // proxy and the upstream could read the bytes differently, it would reach the upstream.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: &[(&str, &str)] = &[
        (
            "Content-Length then Transfer-Encoding",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding then Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        ),
        ("a Content-Length list", "Content-Length: 5, 6\r\n\r\nhello"),
        ("a negative Content-Length", "Content-Length: -1\r\n\r\n"),
        ("a signed Content-Length", "Content-Length: +5\r\n\r\nhello"),
        ("a hex Content-Length", "Content-Length: 0x5\r\n\r\nhello"),
        (
            "Transfer-Encoding not ending in chunked",
            "Transfer-Encoding: gzip\r\n\r\nhello",
        ),
        (
            "chunked then identity",
            "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "a space before the colon",
            "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "a folded Transfer-Encoding",
            "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "an invalid chunk size",
            "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "an overflowing chunk size",
            "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "a CR-less chunk",
            "Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
        ),
    ];
    let mut rejected = 0;
    let mut answered_then_closed = 0;
    for (name, rest) in cases {
        let request = format!("POST /framing HTTP/1.1\r\nHost: x\r\n{rest}{smuggled}");
        let before = upstream.seen().len();
        let outcome = raw_exchange(address, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            outcome.closed,
            "{name}: the connection stayed open after {:?}",
            outcome.response
        );
        match outcome.status {
            Some(400) | None => rejected += 1,
            Some(_) => {
                // Read one way only (chunked wins, Content-Length dropped) and the connection
                // closed after the answer: the upstream got one unambiguous request.
                let seen = upstream.seen();
                let forwarded = &seen[before..];
                assert_eq!(forwarded.len(), 1, "{name}: {forwarded:?}");
                let request = &forwarded[0];
                assert_eq!(
                    (request.method.as_str(), request.path.as_str()),
                    ("POST", "/framing")
                );
                assert!(request.body.is_empty(), "{name}: body {:?}", request.body);
                assert!(
                    !(request.headers.contains_key("content-length")
                        && request.headers.contains_key("transfer-encoding")),
                    "{name}: forwarded with both: {:?}",
                    request.headers
                );
                answered_then_closed += 1;
            }
        }
    }
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|request| request.path != "/smuggled"),
        "a smuggled request reached the upstream: {seen:?}"
    );
    normal_call(address)
        .await
        .expect("a normal call after the ambiguous requests");
    stop_unharmed(&mut proxy).await;
    figure(
        "proxy_hostile_clients",
        format!(
            "{} ambiguous framings: {rejected} rejected with 400 or closed, \
             {answered_then_closed} read as chunked then closed; 0 smuggled requests reached \
             the upstream",
            cases.len()
        ),
    );
}
