//! hello-cf over real loopback sockets: the greeting byte for byte, health, 404, HTTPS, the
//! binary's configuration errors and its shutdown.

use std::time::{Duration, Instant};

use demo_testkit::raw_http::RawConnection;
use demo_testkit::tls::Issued;
use demo_testkit::{direct_client, direct_client_builder};
use hello_cf::HelloVersion;

use crate::support::{body_of, config, help, raw_request, run_to_exit, start, start_binary};

#[tokio::test]
async fn greets_byte_for_byte_for_each_version() {
    for (version, flag, expected) in [
        (HelloVersion::V1, "v1", "Hello K8s, from CF v1 service!\n"),
        (HelloVersion::V2, "v2", "Hello K8s, from CF v2 service!\n"),
    ] {
        assert_eq!(version.greeting(), expected);
        assert_eq!(expected.len(), 31);
        let address = start(config(&["--hello-version", flag])).await;
        let response = raw_request(
            address,
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        let lower = response.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: text/html; charset=utf-8\r\n"),
            "{response}"
        );
        assert!(lower.contains("content-length: 31\r\n"), "{response}");
        assert_eq!(body_of(&response), expected);
    }
}

#[tokio::test]
async fn head_answers_headers_without_body() {
    let address = start(config(&[])).await;
    let response = raw_request(
        address,
        "HEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-length: 31\r\n")
    );
    assert_eq!(body_of(&response), "");
}

#[tokio::test]
async fn other_paths_are_404_and_health_is_served() {
    let address = start(config(&[])).await;
    let client = direct_client();
    let get = |path: &str| client.get(format!("http://{address}{path}")).send();
    for path in ["/nope", "/index.html", "/v1"] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), body);
    }
}

#[tokio::test]
async fn serves_https_with_a_given_certificate() {
    let certified = Issued::self_signed(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &certified.cert_pem).unwrap();
    std::fs::write(&key_path, &certified.key_pem).unwrap();
    let address = start(config(&[
        "--hello-version",
        "v2",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]))
    .await;

    let trusted = reqwest::Certificate::from_pem(certified.cert_pem.as_bytes()).unwrap();
    let client = direct_client_builder()
        .tls_certs_only([trusted])
        .resolve("localhost", address)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/", address.port());
    let response = client.get(&url).send().await.expect("https request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "Hello K8s, from CF v2 service!\n"
    );

    // Plain HTTP to the TLS port is not answered as if it were HTTPS.
    let plain = direct_client()
        .get(format!("http://{address}/"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_flag_and_env_var() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PORT", "70000")], "--port (env PORT)"),
        (&[("PORT", "http")], "--port (env PORT)"),
        (
            &[("HELLO_VERSION", "v3")],
            "--hello-version (env HELLO_VERSION)",
        ),
        (
            &[("BIND_ADDRESS", "everywhere")],
            "--bind-address (env BIND_ADDRESS)",
        ),
        (
            &[("DRAIN_TIMEOUT", "soon")],
            "--drain-timeout (env DRAIN_TIMEOUT)",
        ),
        (
            &[("TLS_CERT", "/nonexistent/cert.pem")],
            "--tls-key (env TLS_KEY)",
        ),
        (
            &[
                ("TLS_CERT", "/nonexistent/cert.pem"),
                ("TLS_KEY", "/nonexistent/key.pem"),
            ],
            "/nonexistent/cert.pem",
        ),
    ];
    for (env, expected) in cases {
        let (code, stderr) = run_to_exit(&[], env).await;
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn help_lists_every_option_with_its_env_var() {
    let (code, help) = help().await;
    assert_eq!(code, Some(0));
    for env in [
        "PORT",
        "BIND_ADDRESS",
        "HELLO_VERSION",
        "TLS_CERT",
        "TLS_KEY",
        "DRAIN_TIMEOUT",
        "LOG_FORMAT",
    ] {
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing:\n{help}"
        );
    }
}

#[tokio::test]
async fn binary_serves_where_the_environment_says_and_drains_on_sigterm() {
    // Port 0 from the environment: the OS picks a free one and the log line names it, so no
    // other test can take the port between choosing and binding it.
    let (mut child, address, _) = start_binary(&[("DRAIN_TIMEOUT", "5s")]).await;
    assert!(
        address.ip().is_loopback(),
        "BIND_ADDRESS honoured: {address}"
    );

    let response = raw_request(
        address,
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(body_of(&response), "Hello K8s, from CF v2 service!\n");

    // An idle keep-alive connection must not hold the process past SIGTERM.
    let mut idle = RawConnection::connect(address, Duration::from_secs(10))
        .await
        .unwrap();
    idle.write(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let health = idle.read_response(false).await.unwrap();
    assert_eq!(health.status_line, "HTTP/1.1 200 OK");

    let signalled = Instant::now();
    child.terminate();
    let exit = child.wait_exit(Duration::from_secs(10)).await;
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "hello-cf did not exit after SIGTERM"
    );
    assert_eq!(exit.code(), Some(0), "{}", child.log());
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still accepting"
    );
}

/// A client may shut its sending side once its request is out (HTTP/1.1 allows it); the answer
/// must still come, even when it takes a while.
#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    use tokio::io::AsyncWriteExt as _;
    let address = start(config(&["--delay", "200ms"])).await;
    let mut client = RawConnection::connect(address, Duration::from_secs(10))
        .await
        .unwrap();
    client
        .write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    client.stream().shutdown().await.unwrap();
    let answer = String::from_utf8(client.read_to_end().await.unwrap()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert_eq!(body_of(&answer), "Hello K8s, from CF v1 service!\n");
}
