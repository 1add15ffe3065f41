//! What each call prints: `<date -Is timestamp>\t<body or error>`, for every status and every
//! way a call can fail.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::{config, field, fields, respond, run_lines, scripted};
use demo_testkit::{Refused, ScriptedUpstream, Silent};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use traffic::Caller;

const V1: &str = "Hello K8s, from CF v1 service!";

#[tokio::test]
async fn each_call_prints_a_local_timestamp_a_tab_and_the_body() {
    let upstream = scripted(|_| async { respond(200, format!("{V1}\n")) }).await;
    let before = chrono::Local::now();
    let (report, lines) = run_lines(&config(&upstream.url())).await;
    let after = chrono::Local::now();

    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(report.calls, 3);
    for line in &lines {
        assert_eq!(field(line), V1, "{line:?}");
        let (stamp, _) = line.split_once('\t').unwrap();
        let at = chrono::DateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%:z").unwrap();
        // Second resolution: the stamp lies within the run, give or take the truncation.
        assert!(at.timestamp() >= before.timestamp() && at.timestamp() <= after.timestamp());
        assert_eq!(
            at.offset().local_minus_utc(),
            before.offset().local_minus_utc()
        );
    }
}

#[tokio::test]
async fn bodies_of_every_status_are_printed_as_curl_did() {
    let upstream = scripted(|n| async move {
        match n {
            // Envoy's fault filter answers 418 with this body and no newline.
            0 => respond(418, "fault filter abort"),
            1 => respond(503, "no healthy upstream"),
            2 => respond(404, "Not Found\n"),
            _ => respond(500, "unexpected call\n"),
        }
    })
    .await;
    let (_, lines) = run_lines(&config(&upstream.url())).await;
    assert_eq!(
        fields(&lines),
        ["fault filter abort", "no healthy upstream", "Not Found"]
    );
}

#[tokio::test]
async fn an_empty_body_is_said_explicitly() {
    let upstream = scripted(|n| async move {
        match n {
            0 => respond(204, ""),
            1 => respond(200, ""),
            _ => respond(503, "\n"),
        }
    })
    .await;
    let (_, lines) = run_lines(&config(&upstream.url())).await;
    assert_eq!(
        fields(&lines),
        [
            "(empty body, status 204)",
            "(empty body, status 200)",
            "(empty body, status 503)"
        ]
    );
}

#[tokio::test]
async fn a_multi_line_or_binary_body_stays_on_one_line() {
    let upstream =
        scripted(|_| async { respond(200, b"<h1>hi</h1>\n\t<p>\xff\x1b[0m</p>\r\n".as_slice()) })
            .await;
    let mut config = config(&upstream.url());
    config.count = traffic::CallLimit::Calls(1);
    let (_, lines) = run_lines(&config).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        field(&lines[0]),
        "<h1>hi</h1>\\n\\t<p>\u{fffd}\\u{1b}[0m</p>"
    );
}

#[tokio::test]
async fn redirects_are_followed_like_curl_l() {
    let upstream = scripted(|n| async move {
        match n {
            0 => axum::response::Response::builder()
                .status(302)
                .header("location", "/moved")
                .body(axum::body::Body::empty())
                .unwrap(),
            _ => respond(200, format!("{V1}\n")),
        }
    })
    .await;
    let mut config = config(&upstream.url());
    config.count = traffic::CallLimit::Calls(1);
    let (_, lines) = run_lines(&config).await;
    assert_eq!(fields(&lines), [V1]);
    let paths: Vec<_> = upstream.arrivals().into_iter().map(|a| a.path).collect();
    assert_eq!(paths, ["/", "/moved"]);
}

#[tokio::test]
async fn a_refused_connection_prints_an_error_and_the_caller_keeps_going() {
    let refused = Refused::new();
    let config = config(&format!("http://{}/", refused.addr()));
    let (report, lines) = run_lines(&config).await;
    assert_eq!(report.calls, 3);
    assert_eq!(fields(&lines), ["error: connection refused"; 3]);
}

#[tokio::test]
async fn the_caller_recovers_when_the_upstream_comes_up() {
    let refused = Refused::new();
    let mut config = config(&format!("http://{}/", refused.addr()));
    config.interval = Duration::from_millis(100);
    config.count = traffic::CallLimit::Calls(10);
    // The upstream is down for the first 350ms of the run, then comes up on the same port
    // (held all along, so nothing else can take it in between).
    let come_up = async {
        tokio::time::sleep(Duration::from_millis(350)).await;
        crate::support::scripted_on(refused.listen(), |_| async {
            respond(200, format!("{V1}\n"))
        })
    };
    let ((report, lines), _upstream) = tokio::join!(run_lines(&config), come_up);
    assert_eq!(report.calls, 10);
    let fields = fields(&lines);
    let down = fields
        .iter()
        .take_while(|field| **field == "error: connection refused")
        .count();
    assert!(down >= 1, "{lines:?}");
    assert!(
        fields[down..].iter().all(|field| *field == V1) && down < fields.len(),
        "{lines:?}"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out_on_every_call() {
    // Accepted by the kernel, never read or answered.
    let silent = Silent::new();
    let mut config = config(&format!("http://{}/", silent.addr()));
    config.interval = Duration::from_millis(100);
    config.timeout = Duration::from_millis(300);
    config.count = traffic::CallLimit::Calls(4);
    let started = tokio::time::Instant::now();
    let (report, lines) = run_lines(&config).await;
    assert_eq!(fields(&lines), ["error: timed out after 300ms"; 4]);
    assert_eq!(report.skipped_ticks, 0, "{lines:?}");
    // Calls overlap: four calls of 300ms, 100ms apart, take about 600ms, not 1.2s.
    assert!(
        started.elapsed() < Duration::from_millis(1150),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[tokio::test]
async fn a_reset_connection_is_named() {
    let upstream = ScriptedUpstream::start(|mut connection| async move {
        connection.read_head().await;
        connection.reset(); // RST instead of FIN
    })
    .await;
    let mut config = config(&upstream.url("/"));
    config.count = traffic::CallLimit::Calls(2);
    let (_, lines) = run_lines(&config).await;
    assert_eq!(fields(&lines), ["error: connection reset"; 2]);
}

#[tokio::test]
async fn a_connection_closed_mid_response_is_named() {
    let upstream = ScriptedUpstream::start(|mut connection| async move {
        connection.read_head().await;
        // Promises 100 bytes, sends 5, closes.
        connection.answer_partly(200, 100, b"Hello").await;
        connection.close().await;
    })
    .await;
    let mut config = config(&upstream.url("/"));
    config.count = traffic::CallLimit::Calls(1);
    let (_, lines) = run_lines(&config).await;
    assert_eq!(
        fields(&lines),
        ["error: connection closed before the response was complete"]
    );
}

#[tokio::test]
async fn a_garbage_answer_is_named() {
    let upstream = ScriptedUpstream::start(|mut connection| async move {
        connection.read_head().await;
        connection.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    })
    .await;
    let mut config = config(&upstream.url("/"));
    config.count = traffic::CallLimit::Calls(1);
    let (_, lines) = run_lines(&config).await;
    assert_eq!(fields(&lines), ["error: invalid HTTP response"]);
}

/// Names the tests know, resolved without any DNS query.
struct StaticNames(HashMap<&'static str, IpAddr>);

impl Resolve for StaticNames {
    fn resolve(&self, name: Name) -> Resolving {
        let found = self.0.get(name.as_str()).copied();
        Box::pin(async move {
            let ip = found.ok_or("no such name")?;
            Ok(Box::new(std::iter::once(SocketAddr::new(ip, 0))) as Addrs)
        })
    }
}

#[tokio::test]
async fn names_are_resolved_and_unresolvable_ones_are_named() {
    let upstream = scripted(|_| async { respond(200, format!("{V1}\n")) }).await;
    let names = || {
        StaticNames(HashMap::from([(
            "hello.test",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        )]))
    };

    let mut config = config(&format!("http://hello.test:{}/", upstream.addr.port()));
    config.count = traffic::CallLimit::Calls(1);
    let caller = Caller::builder(&config)
        .resolver(names())
        .no_proxy()
        .build()
        .unwrap();
    let (_, lines) = crate::support::run_lines_with(&config, caller, std::future::pending()).await;
    assert_eq!(fields(&lines), [V1]);
    // The upstream sees the name called, as the mesh routes by it.
    let host = upstream.arrivals()[0].host.clone();
    assert_eq!(host, Some(format!("hello.test:{}", upstream.addr.port())));

    let mut config = config.clone();
    config.url = "http://hello.invalid/".parse().unwrap();
    config.count = traffic::CallLimit::Calls(2);
    let caller = Caller::builder(&config)
        .resolver(names())
        .no_proxy()
        .build()
        .unwrap();
    let (report, lines) =
        crate::support::run_lines_with(&config, caller, std::future::pending()).await;
    assert_eq!(report.calls, 2);
    assert_eq!(
        fields(&lines),
        ["error: dns: hello.invalid not resolved"; 2]
    );
}

#[tokio::test]
async fn an_untrusted_https_certificate_is_a_tls_error() {
    let certified = rcgen::generate_simple_self_signed(vec!["hello.test".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    demo_common::tls::install_crypto_provider();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let server = demo_common::server::Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        demo_common::server::ServerOptions::default(),
    )
    .await
    .unwrap()
    .with_tls(std::sync::Arc::new(tls));
    let port = server.local_addr().unwrap().port();
    let router = axum::Router::new().fallback(|| async { "secret\n" });
    tokio::spawn(server.serve(router, std::future::pending()));

    let mut config = config(&format!("https://hello.test:{port}/"));
    config.count = traffic::CallLimit::Calls(1);
    let names = StaticNames(HashMap::from([(
        "hello.test",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )]));
    let caller = Caller::builder(&config)
        .resolver(names)
        .no_proxy()
        .build()
        .unwrap();
    let (_, lines) = crate::support::run_lines_with(&config, caller, std::future::pending()).await;
    let fields = fields(&lines);
    assert_eq!(fields.len(), 1);
    // Verification is on: a certificate no trusted CA signed is refused, and said so.
    assert!(
        fields[0].starts_with("error: tls: invalid peer certificate"),
        "{lines:?}"
    );
}
