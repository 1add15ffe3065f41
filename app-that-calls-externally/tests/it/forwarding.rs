//! What a caller relies on when the upstream answers: status, headers and body pass through
//! unchanged; method, path, query, headers and body reach the upstream; upstream connections
//! are reused, within a client connection and across them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Channel};
use hyper::body::Incoming;
use tokio::sync::mpsc;

#[tokio::test]
async fn passes_status_headers_and_body_through_unchanged() {
    let upstream = Upstream::recording(|seen| match seen.target.as_str() {
        "/" => answer(
            200,
            "text/html; charset=utf-8",
            "Hello K8s, from CF v1 service!\n",
        ),
        "/missing" => answer(
            404,
            "text/plain; charset=utf-8",
            "404 Not Found: Requested route ('x') does not exist.\n",
        ),
        "/fault" => answer(418, "text/plain", "fault filter abort"),
        _ => answer(503, "text/plain", "no healthy upstream"),
    })
    .await;
    let proxy = start(&config(&upstream.url("/"))).await;

    let cases = [
        (
            "/",
            200,
            "text/html; charset=utf-8",
            "Hello K8s, from CF v1 service!\n",
        ),
        (
            "/missing",
            404,
            "text/plain; charset=utf-8",
            "404 Not Found: Requested route ('x') does not exist.\n",
        ),
        ("/fault", 418, "text/plain", "fault filter abort"),
        ("/busy", 503, "text/plain", "no healthy upstream"),
    ];
    for (path, status, content_type, body) in cases {
        let (got_status, headers, got_body) = get(proxy.proxy, path).await;
        assert_eq!(got_status.as_u16(), status, "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["content-length"], body.len().to_string(), "{path}");
        assert_eq!(text(&got_body), body, "{path}");
    }
}

#[tokio::test]
async fn forwards_method_path_query_and_body_under_the_upstream_path() {
    let upstream = Upstream::recording(|seen| {
        Response::builder()
            .status(200)
            .header("content-length", "2")
            .body(full(if seen.method == "HEAD" { "" } else { "ok" }))
            .unwrap()
    })
    .await;
    let proxy = start(&config(&upstream.url("/base/"))).await;
    let mut client = Client::connect(proxy.proxy).await;

    let query = "/a/b?x=1&y=%2F&z='q'&w=a+b&&empty=";
    let cases = [
        ("POST", query, "payload"),
        ("PUT", "/put", "replacement"),
        ("PATCH", "/", "change"),
        ("DELETE", "/item/7", ""),
        ("OPTIONS", "/opts", ""),
        ("GET", "/with-body", "unusual but allowed"),
    ];
    for (method, target, body) in cases {
        let (status, _, answer) = client
            .fetch(request(method, target).body(full(body)).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "{method} {target}");
        assert_eq!(text(&answer), "ok", "{method} {target}");
    }
    let (status, headers, answer) = client
        .fetch(request("HEAD", "/head?h=1").body(full("")).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-length"], "2",
        "HEAD keeps the upstream's length"
    );
    assert!(answer.is_empty());

    let seen = upstream.seen();
    let forwarded: Vec<(String, String, Bytes)> = seen
        .iter()
        .map(|seen| {
            (
                seen.method.to_string(),
                seen.target.clone(),
                seen.body.clone(),
            )
        })
        .collect();
    let expected: Vec<(String, String, Bytes)> = cases
        .iter()
        .map(|(method, target, body)| {
            let target = format!("/base{target}");
            (
                (*method).to_owned(),
                target,
                Bytes::from_static(body.as_bytes()),
            )
        })
        .chain([("HEAD".to_owned(), "/base/head?h=1".to_owned(), Bytes::new())])
        .collect();
    assert_eq!(forwarded, expected);
    assert_eq!(seen[0].headers["content-length"], "7");
}

#[tokio::test]
async fn streams_request_and_response_bodies_without_buffering_them() {
    // The upstream reports each request chunk as it arrives, then answers with a body the
    // test feeds chunk by chunk.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<Bytes>();
    let (response_tx, response_body) = Channel::<Bytes>::new(1);
    let response_body = Arc::new(Mutex::new(Some(response_body)));
    let upstream = Upstream::start(move |request: http::Request<Incoming>| {
        let arrived_tx = arrived_tx.clone();
        let response_body = Arc::clone(&response_body);
        async move {
            let mut body = request.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let _ = arrived_tx.send(data);
                }
            }
            let body = response_body.lock().unwrap().take().expect("one request");
            Response::new(body.map_err(|never| match never {}).boxed())
        }
    })
    .await;
    let proxy = start(&config(&upstream.url("/"))).await;

    let (mut request_tx, request_body) = Channel::<Bytes>::new(1);
    let mut client = Client::connect(proxy.proxy).await;
    let request = request("POST", "/upload")
        .body(request_body.map_err(|never| match never {}).boxed())
        .unwrap();
    let response = tokio::spawn(async move { client.send(request).await });

    request_tx.send_data(Bytes::from("first")).await.unwrap();
    let first = within("first request chunk upstream", arrived.recv()).await;
    assert_eq!(
        first.as_deref(),
        Some(&b"first"[..]),
        "the request body is streamed"
    );
    request_tx.send_data(Bytes::from("second")).await.unwrap();
    drop(request_tx);
    let second = within("second request chunk upstream", arrived.recv()).await;
    assert_eq!(second.as_deref(), Some(&b"second"[..]));

    let mut response_tx = response_tx;
    response_tx
        .send_data(Bytes::from("part one"))
        .await
        .unwrap();
    let response = within("response head", response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let frame = within("first response chunk", body.frame()).await;
    let data = frame.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&data[..], b"part one", "the response body is streamed");
    response_tx
        .send_data(Bytes::from("part two"))
        .await
        .unwrap();
    drop(response_tx);
    let rest = within("rest of the response", body.collect())
        .await
        .unwrap();
    assert_eq!(&rest.to_bytes()[..], b"part two");
}

#[tokio::test]
async fn strips_hop_by_hop_headers_in_both_directions() {
    let upstream = Upstream::recording(|_| {
        Response::builder()
            .header("connection", "x-response-hop")
            .header("x-response-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=upstream")
            .header("upgrade", "h2c")
            .header("trailer", "x-checksum")
            .header("x-end-to-end", "kept")
            .body(full("body"))
            .unwrap()
    })
    .await;
    let proxy = start(&config(&upstream.url("/"))).await;

    let request = request("GET", "/")
        .header("connection", "keep-alive, X-Request-Hop")
        .header("x-request-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("upgrade", "websocket")
        .header("x-end-to-end", "kept")
        .body(full(""))
        .unwrap();
    let (status, headers, body) = Client::connect(proxy.proxy).await.fetch(request).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&body), "body");
    for name in [
        "connection",
        "x-response-hop",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "trailer",
        "transfer-encoding",
    ] {
        assert!(
            !headers.contains_key(name),
            "response kept {name}: {headers:?}"
        );
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["content-length"], "4");

    let seen = upstream.only_request();
    for name in [
        "connection",
        "x-request-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "request kept {name}: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-end-to-end"], "kept");
}

#[tokio::test]
async fn forwards_the_istio_trace_headers() {
    let trace_headers = [
        ("x-request-id", "5f0a4c1e-8a7b-4a3c-9d2e-1b2c3d4e5f60"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "1"),
        (
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        ),
    ];
    let upstream = Upstream::recording(|_| answer(200, "text/plain", "traced")).await;
    let proxy = start(&config(&upstream.url("/"))).await;

    let mut builder = request("GET", "/");
    for (name, value) in trace_headers {
        builder = builder.header(name, value);
    }
    let (status, _, _) = Client::connect(proxy.proxy)
        .await
        .fetch(builder.body(full("")).unwrap())
        .await;

    assert_eq!(status, StatusCode::OK);
    let seen = upstream.only_request();
    for (name, value) in trace_headers {
        assert_eq!(
            seen.headers.get(name).map(|v| v.as_bytes()),
            Some(value.as_bytes()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn sends_the_upstream_host_and_appends_the_peer_to_x_forwarded_for() {
    let upstream = Upstream::recording(|_| answer(200, "text/plain", "ok")).await;
    let proxy = start(&config(&upstream.url("/"))).await;
    let mut client = Client::connect(proxy.proxy).await;

    client
        .fetch(request("GET", "/").body(full("")).unwrap())
        .await;
    client
        .fetch(
            request("GET", "/")
                .header("x-forwarded-for", "203.0.113.7")
                .body(full(""))
                .unwrap(),
        )
        .await;

    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    let authority = upstream.addr.to_string();
    for request in &seen {
        assert_eq!(request.headers["host"], authority.as_str());
        assert_eq!(request.headers.get_all("host").iter().count(), 1);
    }
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen[1].headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
}

#[tokio::test]
async fn two_serving_threads_answer_every_client_each_on_its_own_upstream_connection() {
    let upstream = Upstream::recording(|_| answer(200, "text/plain", "pooled")).await;
    let mut config = config(&upstream.url("/"));
    config.workers = Some(2);
    let proxy = start(&config).await;

    // Six client connections at once, dealt to the two threads in turn, each asking three
    // times: every answer arrives, and each client connection keeps the upstream connection
    // its first request opened, whichever thread serves it.
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(Client::connect(proxy.proxy).await);
    }
    for round in 0..3 {
        for (index, client) in clients.iter_mut().enumerate() {
            let (status, _, body) = client
                .fetch(
                    request("GET", &format!("/?client={index}&round={round}"))
                        .body(full(""))
                        .unwrap(),
                )
                .await;
            assert_eq!((status, text(&body)), (StatusCode::OK, "pooled"));
        }
    }
    assert_eq!(upstream.seen().len(), 18);
    assert_eq!(
        upstream.connections(),
        6,
        "one upstream connection per client connection"
    );
}

#[tokio::test]
async fn reuses_one_upstream_connection_for_sequential_requests() {
    let upstream = Upstream::recording(|_| answer(200, "text/plain", "pooled")).await;
    let proxy = start(&config(&upstream.url("/"))).await;

    for round in 0..10 {
        // Fresh client connections: the pool is the proxy's, not the caller's.
        let mut client = Client::connect(proxy.proxy).await;
        let method = if round % 3 == 0 { "POST" } else { "GET" };
        let (status, _, body) = client
            .fetch(request(method, "/").body(full("some body")).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text(&body), "pooled");
    }

    assert_eq!(upstream.seen().len(), 10);
    assert_eq!(
        upstream.connections(),
        1,
        "every request should reuse the first connection"
    );
}

#[tokio::test]
async fn health_lives_on_the_admin_port_and_is_never_forwarded() {
    let upstream = Upstream::recording(|seen| {
        answer(
            200,
            "text/plain",
            if seen.target == "/healthz" {
                "upstream's own"
            } else {
                "?"
            },
        )
    })
    .await;
    let proxy = start(&config(&upstream.url("/"))).await;

    let (status, _, body) = get(proxy.admin, "/healthz").await;
    assert_eq!((status, text(&body)), (StatusCode::OK, "ok\n"));
    let (status, _, _) = get(proxy.admin, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(proxy.admin, "/anything-else").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        upstream.connections(),
        0,
        "health checks must not reach the upstream"
    );

    // The forwarding port does not shadow the upstream's own /healthz.
    let (status, _, body) = get(proxy.proxy, "/healthz").await;
    assert_eq!((status, text(&body)), (StatusCode::OK, "upstream's own"));
    assert_eq!(upstream.only_request().target, "/healthz");
}

#[tokio::test]
async fn stops_cleanly_when_idle() {
    let upstream = Upstream::recording(|_| answer(200, "text/plain", "ok")).await;
    let proxy = start(&config(&upstream.url("/"))).await;
    get(proxy.proxy, "/").await;
    assert_eq!(proxy.stop().await, demo_common::server::Drain::Complete);
}

#[tokio::test]
async fn an_upstream_that_closes_after_every_answer_still_serves_every_request() {
    // Keep-alive by the protocol, closed by the upstream after each answer all the same: the
    // client's connection must not inherit the dead upstream connection.
    let opened = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&opened);
    let upstream = raw_upstream(move |mut stream| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            write(
                &mut stream,
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
            )
            .await;
        }
    })
    .await;
    let proxy = start(&config(&format!("http://{upstream}/"))).await;

    let mut client = Client::connect(proxy.proxy).await;
    for _ in 0..5 {
        let (status, _, body) = client
            .fetch(request("GET", "/").body(full("")).unwrap())
            .await;
        assert_eq!((status, text(&body)), (StatusCode::OK, "ok\n"));
    }
    assert_eq!(
        opened.load(Ordering::SeqCst),
        5,
        "one upstream connection per answer"
    );
}
