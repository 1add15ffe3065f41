//! hello-cf over real loopback sockets: the greeting byte for byte, health, 404, HTTPS, the
//! binary's configuration errors and its shutdown.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use demo_testkit::process::Stdout;
use demo_testkit::raw_http::{self, RawConnection};
use demo_testkit::tls::Issued;
use demo_testkit::{ChildProcess, direct_client, direct_client_builder};
use hello_cf::{Config, HelloServer, HelloVersion};

const BIN: &str = env!("CARGO_BIN_EXE_hello-cf");

fn config(args: &[&str]) -> Config {
    let mut argv = vec!["hello-cf", "--bind-address", "127.0.0.1", "--port", "0"];
    argv.extend_from_slice(args);
    Config::try_parse_from(argv).expect("valid test config")
}

/// Starts an in-process server; returns its address. The server lives as long as the runtime.
async fn start(config: Config) -> SocketAddr {
    let server = HelloServer::bind(&config).await.expect("bind");
    let address = server.local_addr().expect("local addr");
    tokio::spawn(server.serve(std::future::pending()));
    address
}

/// Sends one raw HTTP/1.1 request and returns the whole raw response (the server closes).
async fn raw_request(address: SocketAddr, request: &str) -> String {
    let response = raw_http::exchange_bytes(address, request.as_bytes(), Duration::from_secs(10))
        .await
        .expect("a response");
    String::from_utf8(response).expect("utf-8 response")
}

fn body_of(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("")
}

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

/// Runs the binary with only the given environment (plus PATH) and returns (code, stderr).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run hello-cf");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_naming_the_flag_and_env_var() {
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
        let (code, stderr) = run_to_exit(&[], env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn help_lists_every_option_with_its_env_var() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
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
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_clear()
        .env("PORT", "0")
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("HELLO_VERSION", "v2")
        .env("DRAIN_TIMEOUT", "5s");
    let mut child = ChildProcess::spawn("hello-cf", command, Stdout::Null);
    let address: SocketAddr = child
        .wait_for_line("its listening line", Duration::from_secs(20), |line| {
            if !line.contains("hello-cf listening") {
                return None;
            }
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("address="))?
                .parse()
                .ok()
        })
        .await;
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
