//! What a caller sees when the upstream fails: 502 naming the cause, 504 on silence, a cut
//! (not hanging) body when the upstream breaks off, and a proxy that keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use http::StatusCode;
use http_body_util::BodyExt;

fn config_with_timeout(upstream: &str, timeout: &str) -> app_that_calls_externally::Config {
    let mut config = config(upstream);
    config.upstream_timeout = demo_common::parse_positive_duration(timeout).unwrap();
    config
}

#[tokio::test]
async fn refused_upstream_gives_502_naming_the_cause() {
    let dead = Refused::new();
    let url = format!("http://{dead}/");
    let proxy = start(&config(&url)).await;

    for _ in 0..2 {
        let (status, headers, body) = get(proxy.proxy, "/").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(
            text(&body),
            format!("upstream {url} unreachable: connection refused ({dead})\n")
        );
    }
}

#[tokio::test]
async fn silent_upstream_gives_504_after_the_timeout() {
    let silent = Silent::new();
    let url = format!("http://{silent}/");
    let proxy = start(&config_with_timeout(&url, "300ms")).await;

    let started = Instant::now();
    let (status, headers, body) = get(proxy.proxy, "/slow").await;
    let elapsed = started.elapsed();

    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        text(&body),
        format!("upstream {url} did not answer within 300ms\n")
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "answered after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "answered after {elapsed:?}"
    );

    // Still serving: the admin port and a second forwarded request both answer.
    let (status, _, _) = get(proxy.admin, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(proxy.proxy, "/again").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

/// The upstream timeout is kept by the client connection's watchdog, which counts each request
/// from its own head: it must give every slow request on one connection its full time, then a
/// 504, and let fast requests between them through.
#[tokio::test]
async fn each_request_on_one_connection_gets_the_whole_timeout() {
    let upstream = Upstream::start(|request: http::Request<hyper::body::Incoming>| async move {
        if request.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        answer(200, "text/plain", "fast\n")
    })
    .await;
    let proxy = start(&config_with_timeout(&upstream.url("/"), "300ms")).await;
    let mut client = Client::connect(proxy.proxy).await;
    for path in ["/fast", "/slow", "/fast", "/slow", "/fast"] {
        let started = Instant::now();
        let (status, _, body) = client
            .fetch(request("GET", path).body(full("")).unwrap())
            .await;
        let elapsed = started.elapsed();
        if path == "/slow" {
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{path}: {body:?}");
            assert!(
                elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(10),
                "{path} answered after {elapsed:?}"
            );
        } else {
            assert_eq!((status, text(&body)), (StatusCode::OK, "fast\n"), "{path}");
        }
    }
}

#[tokio::test]
async fn response_body_broken_mid_stream_is_cut_for_the_client() {
    let upstream = raw_upstream(|mut stream| async move {
        write(
            &mut stream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part of it",
        )
        .await;
        // Dropping the socket ends the body 85 bytes early.
    })
    .await;
    let proxy = start(&config(&format!("http://{upstream}/"))).await;

    let mut client = Client::connect(proxy.proxy).await;
    let response = client
        .send(request("GET", "/").body(full("")).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "100");
    let body = within("cut body", response.into_body().collect()).await;
    assert!(
        body.is_err(),
        "the client must see an incomplete body, got {body:?}"
    );

    // The proxy keeps serving after the broken body.
    let (status, _, _) = get(proxy.admin, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn stalled_response_body_is_cut_after_the_timeout() {
    let upstream = raw_upstream(|mut stream| async move {
        write(
            &mut stream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst bytes",
        )
        .await;
        // Hold the connection open without sending the rest.
        let _ = read_head(&mut stream).await;
    })
    .await;
    let proxy = start(&config_with_timeout(
        &format!("http://{upstream}/"),
        "300ms",
    ))
    .await;

    let started = Instant::now();
    let mut client = Client::connect(proxy.proxy).await;
    let response = client
        .send(request("GET", "/").body(full("")).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = within("stalled body", response.into_body().collect()).await;
    let elapsed = started.elapsed();
    assert!(
        body.is_err(),
        "the client must see an incomplete body, got {body:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "cut after {elapsed:?}"
    );
}

#[tokio::test]
async fn invalid_upstream_response_gives_502() {
    let upstream = raw_upstream(|mut stream| async move {
        write(&mut stream, b"this is not HTTP\r\n\r\n").await;
    })
    .await;
    let url = format!("http://{upstream}/");
    let proxy = start(&config(&url)).await;

    let (status, _, body) = get(proxy.proxy, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let body = text(&body);
    assert!(
        body.starts_with(&format!("upstream {url} failed: ")),
        "{body}"
    );
    assert!(
        body.ends_with('\n') && body.lines().count() == 1,
        "{body:?}"
    );
}

#[tokio::test]
async fn connect_requests_are_refused() {
    let upstream = Upstream::recording(|_| answer(200, "text/plain", "no")).await;
    let proxy = start(&config(&upstream.url("/"))).await;

    let request = http::Request::builder()
        .method("CONNECT")
        .uri("example.com:443")
        .header("host", "example.com:443")
        .body(full(""))
        .unwrap();
    let (status, _, _) = Client::connect(proxy.proxy).await.fetch(request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn after_a_stalled_body_is_cut_the_next_clients_are_served_at_once() {
    // The first upstream connection stalls mid-body; every later one answers at once.
    let opened = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&opened);
    let upstream = raw_upstream(move |mut stream| {
        let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                write(
                    &mut stream,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst bytes",
                )
                .await;
                let _ = read_head(&mut stream).await;
            } else {
                // Keep-alive: answer every request on the connection.
                loop {
                    write(
                        &mut stream,
                        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
                    )
                    .await;
                    if read_head(&mut stream).await.is_none() {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let proxy = start(&config_with_timeout(
        &format!("http://{upstream}/"),
        "300ms",
    ))
    .await;

    // The first client gets the head, then the proxy cuts the stalled body and closes.
    let mut first = Client::connect(proxy.proxy).await;
    let response = first
        .send(request("GET", "/").body(full("")).unwrap())
        .await;
    let cut = within("stalled body", response.into_body().collect()).await;
    assert!(cut.is_err(), "the first body must be cut, got {cut:?}");
    drop(first);

    // Later clients must not wait on the stalled connection (they would get a 504).
    for _ in 0..3 {
        let (status, _, body) = get(proxy.proxy, "/").await;
        assert_eq!((status, text(&body)), (StatusCode::OK, "ok\n"));
    }
    assert_eq!(
        opened.load(Ordering::SeqCst),
        2,
        "one stalled connection, then one reused by the later clients"
    );
}
