//! The real binary: configuration errors, the proxy variables read from the environment, and
//! draining on SIGTERM.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use crate::support::*;
use demo_testkit::ChildProcess;
use demo_testkit::process::Stdout;
use http::StatusCode;
use tokio::process::Command;
use tokio::sync::{Notify, mpsc};

const BINARY: &str = env!("CARGO_BIN_EXE_app-that-calls-externally");

/// The binary with a clean environment: nothing from the test machine (proxy variables in
/// particular) leaks in.
fn command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A running proxy process (the test kit's child process, its log collected).
struct Process {
    child: ChildProcess,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Process {
    /// Starts the binary on loopback port 0 and waits for its "listening" line.
    async fn start(env: &[(&str, &str)]) -> Self {
        let mut command = command(&[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("BIND_ADDRESS", "127.0.0.1"),
            ("PORT", "0"),
            ("ADMIN_PORT", "0"),
        ]);
        command.envs(env.iter().copied());
        let mut child = ChildProcess::spawn("app-that-calls-externally", command, Stdout::Null);
        let event = child
            .wait_for_message("app-that-calls-externally listening", DEADLINE)
            .await;
        let address =
            |field: &str| -> SocketAddr { event[field].as_str().unwrap().parse().unwrap() };
        Self {
            proxy: address("proxy_addr"),
            admin: address("admin_addr"),
            child,
        }
    }

    fn terminate(&self) {
        self.child.terminate();
    }

    /// Waits for the process to exit and for the rest of its log.
    async fn exit_status(&mut self) -> ExitStatus {
        self.child.wait_exit(DEADLINE).await
    }

    fn log(&self) -> String {
        self.child.log()
    }
}

/// Polls `check` every few milliseconds until it holds, failing after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    demo_testkit::eventually(what, DEADLINE, check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_refuses_new_connections_and_finishes_in_flight_requests() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let release_upstream = Arc::clone(&release);
    let upstream = Upstream::start(move |_request| {
        let arrived_tx = arrived_tx.clone();
        let release = Arc::clone(&release_upstream);
        async move {
            let _ = arrived_tx.send(());
            release.notified().await;
            answer(200, "text/plain", "finished during the drain\n")
        }
    })
    .await;
    let upstream_url = upstream.url("/");
    let mut process =
        Process::start(&[("UPSTREAM_URL", &upstream_url), ("DRAIN_TIMEOUT", "15s")]).await;
    let proxy = process.proxy;
    let admin = process.admin;
    assert_eq!(get(admin, "/readyz").await.0, StatusCode::OK);

    let in_flight = tokio::spawn(async move { get(proxy, "/slow").await });
    within("the request to reach the upstream", arrived.recv()).await;
    process.terminate();

    eventually("readiness to fail", || async {
        get(admin, "/readyz").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    eventually("new connections to be refused", || async {
        tokio::net::TcpStream::connect(proxy).await.is_err()
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the in-flight request must still be running"
    );

    release.notify_one();
    let (status, _, body) = within("the in-flight request", in_flight).await.unwrap();
    assert_eq!(
        (status, text(&body)),
        (StatusCode::OK, "finished during the drain\n")
    );
    let exit = process.exit_status().await;
    assert_eq!(
        exit.code(),
        Some(0),
        "exit {exit:?}; log:\n{}",
        process.log()
    );
    assert!(process.log().contains("drained"), "log:\n{}", process.log());
}

#[tokio::test]
async fn sigterm_right_after_start_still_exits_zero() {
    let upstream = Refused::new();
    let url = format!("http://{upstream}/");
    let mut process = Process::start(&[("UPSTREAM_URL", &url)]).await;
    process.terminate();
    let exit = process.exit_status().await;
    assert_eq!(exit.code(), Some(0), "{exit:?}; log:\n{}", process.log());
}

#[tokio::test]
async fn http_proxy_variables_carry_the_upstream_calls() {
    for variable in ["http_proxy", "HTTP_PROXY"] {
        let sidecar = Upstream::recording(|_| answer(200, "text/plain", "via the env proxy")).await;
        let proxy_url = format!("http://{}", sidecar.addr);
        // `hello.invalid` never resolves; reaching the sidecar proves it was never looked up.
        let mut process = Process::start(&[
            ("UPSTREAM_URL", "http://hello.invalid/"),
            (variable, &proxy_url),
        ])
        .await;

        let (status, _, body) = get(process.proxy, "/x?y=1").await;
        assert_eq!(
            (status, text(&body)),
            (StatusCode::OK, "via the env proxy"),
            "{variable}"
        );
        let seen = sidecar.only_request();
        assert_eq!(seen.target, "http://hello.invalid/x?y=1", "{variable}");
        assert_eq!(seen.headers["host"], "hello.invalid", "{variable}");

        process.terminate();
        let exit = process.exit_status().await;
        assert_eq!(
            exit.code(),
            Some(0),
            "{variable}: {exit:?}; log:\n{}",
            process.log()
        );
    }
}

#[tokio::test]
async fn no_proxy_sends_the_upstream_call_direct() {
    let upstream = Upstream::recording(|_| answer(200, "text/plain", "direct")).await;
    let dead = Refused::new();
    let mut process = Process::start(&[
        ("UPSTREAM_URL", &upstream.url("/")),
        ("http_proxy", &format!("http://{dead}")),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ])
    .await;

    let (status, _, body) = get(process.proxy, "/").await;
    assert_eq!((status, text(&body)), (StatusCode::OK, "direct"));
    assert_eq!(upstream.only_request().target, "/");

    process.terminate();
    let exit = process.exit_status().await;
    assert_eq!(exit.code(), Some(0), "{exit:?}; log:\n{}", process.log());
}

/// Runs the binary to completion; (exit code, stdout, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = within(
        "the binary to exit",
        command(env)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Arguments, environment, and the text the error line must contain.
type BadConfig = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn bad_configuration_exits_2_with_one_line_naming_the_flag_and_env_var() {
    let cases: &[BadConfig] = &[
        (
            &[],
            &[("UPSTREAM_URL", "ftp://x")],
            "--upstream-url (env UPSTREAM_URL)",
        ),
        (
            &[],
            &[("UPSTREAM_URL", "not a url")],
            "--upstream-url (env UPSTREAM_URL)",
        ),
        (
            &["--upstream-url", "http://h/?q=1"],
            &[],
            "--upstream-url (env UPSTREAM_URL)",
        ),
        (&[], &[("PORT", "70000")], "--port (env PORT)"),
        (
            &[],
            &[("ADMIN_PORT", "-1")],
            "--admin-port (env ADMIN_PORT)",
        ),
        (
            &[],
            &[("UPSTREAM_TIMEOUT", "abc")],
            "--upstream-timeout (env UPSTREAM_TIMEOUT)",
        ),
        (
            &[],
            &[("DRAIN_TIMEOUT", "10 parsecs")],
            "--drain-timeout (env DRAIN_TIMEOUT)",
        ),
        (
            &[],
            &[("BIND_ADDRESS", "everywhere")],
            "--bind-address (env BIND_ADDRESS)",
        ),
        (
            &[],
            &[("LOG_FORMAT", "xml")],
            "--log-format (env LOG_FORMAT)",
        ),
        (
            &[],
            &[("PORT", "8080"), ("ADMIN_PORT", "8080")],
            "--admin-port (env ADMIN_PORT)",
        ),
        (
            &[],
            &[("UPSTREAM_CA_CERT", "/nonexistent/ca.pem")],
            "--upstream-ca-cert (env UPSTREAM_CA_CERT)",
        ),
        (
            &[],
            &[("http_proxy", "socks5://127.0.0.1:1080")],
            "env http_proxy",
        ),
        (&[], &[("HTTP_PROXY", "http://")], "env HTTP_PROXY"),
    ];
    for (args, env, expected) in cases {
        let (code, stdout, stderr) = run(args, env).await;
        let case = format!("{args:?} {env:?}");
        assert_eq!(code, Some(2), "{case}: stderr {stderr:?}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{case}: one line expected, got {stderr:?}"
        );
        assert!(
            stderr.starts_with("app-that-calls-externally: "),
            "{case}: {stderr:?}"
        );
        assert!(
            stderr.contains(expected),
            "{case}: {stderr:?} should name {expected}"
        );
        assert!(stdout.is_empty(), "{case}: stdout {stdout:?}");
    }
}

#[tokio::test]
async fn occupied_port_exits_1_naming_the_address() {
    let occupied = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = occupied.local_addr().unwrap().port().to_string();
    let (code, _, stderr) = run(
        &[],
        &[
            ("BIND_ADDRESS", "127.0.0.1"),
            ("PORT", &port),
            ("ADMIN_PORT", "0"),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn help_lists_every_option_with_its_env_var_and_default() {
    let (code, stdout, _) = run(&["--help"], &[]).await;
    assert_eq!(code, Some(0));
    for expected in [
        "env: PORT",
        "default: 8080",
        "env: ADMIN_PORT",
        "default: 9090",
        "env: BIND_ADDRESS",
        "default: 0.0.0.0",
        "env: UPSTREAM_URL",
        "default: http://hello.external/",
        "env: UPSTREAM_TIMEOUT",
        "default: 5s",
        "env: UPSTREAM_CA_CERT",
        "env: DRAIN_TIMEOUT",
        "default: 10s",
        "env: LOG_FORMAT",
        "default: text",
        "http_proxy/HTTP_PROXY",
        "no_proxy/NO_PROXY",
    ] {
        assert!(
            stdout.contains(expected),
            "--help lacks {expected:?}:\n{stdout}"
        );
    }
}
