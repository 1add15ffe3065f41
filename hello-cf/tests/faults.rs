//! hello-cf's fault knobs over real loopback sockets: off by default, FAIL_PERCENT's share and
//! its answer, DELAY's bounds, health endpoints untouched, bad values refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use hello_cf::{Config, HelloServer};

const BIN: &str = env!("CARGO_BIN_EXE_hello-cf");
const V2_GREETING: &str = "Hello K8s, from CF v2 service!\n";

fn config(args: &[&str]) -> Config {
    let mut argv = vec![
        "hello-cf",
        "--bind-address",
        "127.0.0.1",
        "--port",
        "0",
        "--hello-version",
        "v2",
    ];
    argv.extend_from_slice(args);
    Config::try_parse_from(argv).expect("valid test config")
}

/// Starts an in-process server; returns its address. The server lives as long as the runtime.
async fn start(args: &[&str]) -> SocketAddr {
    let server = HelloServer::bind(&config(args)).await.expect("bind");
    let address = server.local_addr().expect("local addr");
    tokio::spawn(server.serve(std::future::pending()));
    address
}

/// A client that ignores proxy variables and gives up on a request after `timeout`.
fn client(timeout: Duration) -> reqwest::Client {
    demo_common::tls::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .unwrap()
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

/// With FAIL_PERCENT=50, 2000 requests must fail between 45 % and 55 % of the time.
///
/// False alarm: 900..=1100 failures is ±4.47 standard deviations (sd = sqrt(2000 × 0.25) ≈ 22.4)
/// around 1000, so a correct 50 % share falls outside with probability about 8e-6. Rejected: the
/// nearest wrong shares, 40 % and 60 % (expected 800 or 1200, sd ≈ 21.9), land inside the window
/// with probability about 3e-6 each; so do a knob that is ignored (0 %) or applied to every
/// request (100 %).
#[tokio::test]
async fn fifty_percent_fails_about_half_the_requests() {
    const REQUESTS: usize = 2000;
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
    assert!(
        (900..=1100).contains(&failed),
        "{failed} of {REQUESTS} failed; 50 % expects 900 to 1100"
    );
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
    let mut delayed = TcpStream::connect(address).expect("connect");
    delayed
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
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
    delayed.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match delayed.read(&mut byte) {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the delayed request was answered first: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The binary

/// Runs the binary with only the given environment and returns (code, stderr).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run hello-cf");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_knob_values_exit_2_naming_the_flag_and_env_var() {
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
        let (code, stderr) = run_to_exit(&[], &[(env, value)]);
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
        let (code, stderr) = run_to_exit(&args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
}

#[test]
fn help_lists_the_knobs_with_their_env_vars() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for env in ["FAIL_PERCENT", "FAIL_STATUS", "DELAY"] {
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

/// Starts the binary on port 0 with `env` and returns it with its "hello-cf listening" line.
fn start_binary(env: &[(&str, &str)]) -> (Running, String) {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PORT", "0")
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("HELLO_VERSION", "v2")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().expect("stderr is piped");
    let (found, line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for text in BufReader::new(stderr).lines().map_while(Result::ok) {
            if text.contains("hello-cf listening") {
                let _ = found.send(text);
            }
        }
    });
    let line = line
        .recv_timeout(Duration::from_secs(20))
        .expect("hello-cf did not log its listening line");
    (Running(child), line)
}

fn address_in(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .expect("the listening line names the address")
        .parse()
        .expect("a socket address")
}

#[test]
fn without_knobs_the_binary_answers_byte_exact_and_says_no_faults() {
    let (_running, line) = start_binary(&[]);
    assert!(line.contains("faults=none"), "{line}");
    let response = raw_request(
        address_in(&line),
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
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

#[test]
fn the_binary_logs_the_knobs_that_are_on_and_applies_them_from_the_environment() {
    let (_running, line) = start_binary(&[("FAIL_PERCENT", "100"), ("DELAY", "100ms-200ms")]);
    assert!(
        line.contains("faults=FAIL_PERCENT=100 FAIL_STATUS=503 DELAY=100ms-200ms"),
        "{line}"
    );
    let started = Instant::now();
    let response = raw_request(
        address_in(&line),
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
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
