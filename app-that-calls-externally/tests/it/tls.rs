//! An https upstream: verified against the system roots plus UPSTREAM_CA_CERT, and a
//! certificate that does not verify gives a 502 naming the problem.

use crate::support::*;
use http::StatusCode;

fn tls_config(upstream: &str, ca: &TestCa, file_name: &str) -> app_that_calls_externally::Config {
    let mut config = config(upstream);
    config.upstream_ca_cert = Some(ca_file(ca, file_name));
    config
}

#[tokio::test]
async fn https_upstream_signed_by_the_extra_ca_is_trusted() {
    let ca = TestCa::new("demo test CA");
    let upstream = Upstream::recording_with_tls(Some(ca.server_config(&["127.0.0.1"])), |_| {
        answer(
            200,
            "text/html; charset=utf-8",
            "Hello K8s, from CF v2 service!\n",
        )
    })
    .await;
    let url = format!("https://{}/", upstream.addr);
    let proxy = start(&tls_config(&url, &ca, "trusted-ca.pem")).await;

    for _ in 0..3 {
        let (status, _, body) = get(proxy.proxy, "/?over=tls").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text(&body), "Hello K8s, from CF v2 service!\n");
    }
    let seen = upstream.seen();
    assert_eq!(seen[0].target, "/?over=tls");
    assert_eq!(seen[0].headers["host"], upstream.addr.to_string().as_str());
    assert_eq!(upstream.connections(), 1, "TLS connections are pooled too");
}

#[tokio::test]
async fn certificate_from_an_unknown_ca_gives_502_naming_the_certificate() {
    let signer = TestCa::new("the upstream's CA");
    let other = TestCa::new("a CA the proxy trusts");
    let upstream = Upstream::recording_with_tls(Some(signer.server_config(&["127.0.0.1"])), |_| {
        answer(200, "text/plain", "must not be reached")
    })
    .await;
    let url = format!("https://{}/", upstream.addr);
    let proxy = start(&tls_config(&url, &other, "other-ca.pem")).await;

    let (status, _, body) = get(proxy.proxy, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let body = text(&body);
    assert!(
        body.starts_with(&format!(
            "upstream {url} unreachable: TLS handshake failed: "
        )),
        "{body}"
    );
    assert!(
        body.contains("invalid peer certificate: UnknownIssuer"),
        "{body}"
    );
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn certificate_for_another_name_gives_502() {
    let ca = TestCa::new("demo test CA");
    let upstream = Upstream::recording_with_tls(Some(ca.server_config(&["other.example"])), |_| {
        answer(200, "text/plain", "must not be reached")
    })
    .await;
    let url = format!("https://{}/", upstream.addr);
    let proxy = start(&tls_config(&url, &ca, "name-ca.pem")).await;

    let (status, _, body) = get(proxy.proxy, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let body = text(&body);
    assert!(
        body.contains(r#"certificate not valid for name "127.0.0.1""#),
        "{body}"
    );
}

#[tokio::test]
async fn plain_http_to_a_tls_upstream_is_a_502_not_a_hang() {
    let ca = TestCa::new("demo test CA");
    let upstream = Upstream::recording_with_tls(Some(ca.server_config(&["127.0.0.1"])), |_| {
        answer(200, "text/plain", "must not be reached")
    })
    .await;
    let url = format!("http://{}/", upstream.addr);
    let proxy = start(&config(&url)).await;

    let (status, _, body) = get(proxy.proxy, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", text(&body));
    assert!(
        text(&body).starts_with(&format!("upstream {url} failed: ")),
        "{}",
        text(&body)
    );
}
