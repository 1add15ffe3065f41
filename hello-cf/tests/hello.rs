//! hello-cf over real loopback sockets: the greeting byte for byte, health, 404, HTTPS, the
//! binary's configuration errors and its shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
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
fn raw_request(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
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
        let response = tokio::task::spawn_blocking(move || {
            raw_request(
                address,
                "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            )
        })
        .await
        .unwrap();
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
    let response = tokio::task::spawn_blocking(move || {
        raw_request(
            address,
            "HEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
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
    demo_common::tls::install_crypto_provider();
    let address = start(config(&[])).await;
    let client = reqwest::Client::new();
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
    demo_common::tls::install_crypto_provider();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let address = start(config(&[
        "--hello-version",
        "v2",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]))
    .await;

    let trusted = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
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
    let plain = reqwest::Client::new()
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

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address from the binary's "hello-cf listening" log line (text format), read from its
/// stderr within `deadline`; stderr is drained in the background afterwards.
fn listening_address(child: &mut Child, deadline: Duration) -> SocketAddr {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("hello-cf listening") {
                let field = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("address="))
                    .map(str::to_owned);
                let _ = found.send(field);
            }
        }
    });
    address
        .recv_timeout(deadline)
        .expect("hello-cf did not log its listening line")
        .expect("the listening line names the address")
        .parse()
        .expect("a socket address")
}

#[test]
fn binary_serves_where_the_environment_says_and_drains_on_sigterm() {
    // Port 0 from the environment: the OS picks a free one and the log line names it, so no
    // other test can take the port between choosing and binding it.
    let child = Command::new(BIN)
        .env_clear()
        .env("PORT", "0")
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("HELLO_VERSION", "v2")
        .env("DRAIN_TIMEOUT", "5s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let address = listening_address(&mut child.0, Duration::from_secs(20));
    assert!(
        address.ip().is_loopback(),
        "BIND_ADDRESS honoured: {address}"
    );

    let response = raw_request(
        address,
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(body_of(&response), "Hello K8s, from CF v2 service!\n");

    // An idle keep-alive connection must not hold the process past SIGTERM.
    let mut idle = TcpStream::connect(address).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "hello-cf did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    assert!(TcpStream::connect(address).is_err(), "still accepting");
}
