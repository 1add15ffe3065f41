//! Reaching the upstream through an HTTP proxy (a local Envoy plays the sidecar this way):
//! plain HTTP goes in absolute form with Host = the upstream's name, which the proxy never
//! resolves; an https upstream goes through a CONNECT tunnel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::support::*;
use app_that_calls_externally::UpstreamProxy;
use http::StatusCode;
use tokio::net::TcpStream;

fn via(upstream: &str, proxy: String) -> app_that_calls_externally::Config {
    let mut config = config(upstream);
    config.upstream_proxy = UpstreamProxy::Url(proxy);
    config
}

#[tokio::test]
async fn plain_http_goes_through_the_proxy_in_absolute_form() {
    // `hello.invalid` never resolves: only the proxy ever sees the name.
    let sidecar = Upstream::recording(|_| answer(200, "text/plain", "via the sidecar")).await;
    let proxy = start(&via(
        "http://hello.invalid/",
        format!("http://{}", sidecar.addr),
    ))
    .await;

    for _ in 0..3 {
        let (status, _, body) = get(proxy.proxy, "/hello?who=k8s").await;
        assert_eq!((status, text(&body)), (StatusCode::OK, "via the sidecar"));
    }
    let seen = sidecar.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].target, "http://hello.invalid/hello?who=k8s");
    assert_eq!(seen[0].headers["host"], "hello.invalid");
    assert!(!seen[0].headers.contains_key("proxy-authorization"));
    assert_eq!(
        sidecar.connections(),
        1,
        "the connection to the proxy is pooled"
    );
}

#[tokio::test]
async fn proxy_credentials_from_the_url_replace_the_callers() {
    let sidecar = Upstream::recording(|_| answer(200, "text/plain", "ok")).await;
    let proxy_url = format!("http://demo:s3cret@{}", sidecar.addr);
    let proxy = start(&via("http://hello.invalid/", proxy_url)).await;

    let request = request("GET", "/")
        .header("proxy-authorization", "Basic Y2FsbGVyOm93bg==")
        .body(full(""))
        .unwrap();
    Client::connect(proxy.proxy).await.fetch(request).await;

    let seen = sidecar.only_request();
    assert_eq!(
        seen.headers["proxy-authorization"],
        "Basic ZGVtbzpzM2NyZXQ="
    );
}

#[tokio::test]
async fn dead_proxy_gives_502_naming_the_proxy() {
    let dead = Refused::new();
    let proxy = start(&via("http://hello.invalid/", format!("http://{dead}"))).await;

    let (status, _, body) = get(proxy.proxy, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        text(&body),
        format!(
            "upstream http://hello.invalid/ unreachable: proxy {dead}: connection refused ({dead})\n"
        )
    );
}

/// A CONNECT proxy that records each CONNECT head and tunnels every request to `target`,
/// whatever name it asks for; or answers `refusal` instead when given one.
async fn connect_proxy(
    target: SocketAddr,
    refusal: Option<&'static str>,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (listener, addr) = demo_testkit::listener().await;
    let heads = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let Some(head) = read_head(&mut client).await else {
                    return;
                };
                log.lock().unwrap().push(head);
                if let Some(refusal) = refusal {
                    write(&mut client, refusal.as_bytes()).await;
                    return;
                }
                let Ok(mut server) = TcpStream::connect(target).await else {
                    return;
                };
                write(&mut client, b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn https_upstream_goes_through_a_connect_tunnel_and_verifies_the_name() {
    let ca = TestCa::new("demo test CA");
    let upstream = Upstream::recording_with_tls(Some(ca.server_config(&["hello.invalid"])), |_| {
        answer(200, "text/plain", "through the tunnel")
    })
    .await;
    let (tunnel, heads) = connect_proxy(upstream.addr, None).await;
    let mut config = via("https://hello.invalid/", format!("http://{tunnel}"));
    config.upstream_ca_cert = Some(ca_file(&ca, "tunnel-ca.pem"));
    let proxy = start(&config).await;

    for _ in 0..2 {
        let (status, _, body) = get(proxy.proxy, "/secure?x=1").await;
        assert_eq!(
            (status, text(&body)),
            (StatusCode::OK, "through the tunnel")
        );
    }
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "one tunnel, reused: {heads:?}");
    assert!(
        heads[0].starts_with("CONNECT hello.invalid:443 HTTP/1.1\r\n"),
        "{heads:?}"
    );
    let seen = upstream.seen();
    assert_eq!(
        seen[0].target, "/secure?x=1",
        "origin form inside the tunnel"
    );
    assert_eq!(seen[0].headers["host"], "hello.invalid");
}

#[tokio::test]
async fn refused_tunnel_gives_502_with_the_proxys_answer() {
    let unused = Refused::new();
    let (tunnel, _) = connect_proxy(
        unused.addr(),
        Some("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"),
    )
    .await;
    let ca = TestCa::new("demo test CA");
    let mut config = via("https://hello.invalid/", format!("http://{tunnel}"));
    config.upstream_ca_cert = Some(ca_file(&ca, "refused-ca.pem"));
    let proxy = start(&config).await;

    let (status, _, body) = get(proxy.proxy, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let body = text(&body);
    assert!(body.contains("refused the tunnel"), "{body}");
    assert!(body.contains("403 Forbidden"), "{body}");
}
