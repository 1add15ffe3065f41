//! hello-cf's own test pieces: the server in-process and the binary as a child. The generic
//! ones (raw HTTP, child processes, direct clients) come from `demo_testkit`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use demo_testkit::ChildProcess;
use demo_testkit::process::{self, Stdout};
use demo_testkit::raw_http;
use hello_cf::{Config, HelloServer};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hello-cf");

/// Longest a run of the binary to its exit, or its start, may take.
const BINARY_BOUND: Duration = Duration::from_secs(20);

/// A configuration on `127.0.0.1:0` with `args` added.
pub fn config(args: &[&str]) -> Config {
    let mut argv = vec!["hello-cf", "--bind-address", "127.0.0.1", "--port", "0"];
    argv.extend_from_slice(args);
    Config::try_parse_from(argv).expect("valid test config")
}

/// Starts an in-process server; returns its address. The server lives as long as the runtime.
pub async fn start(config: Config) -> SocketAddr {
    let server = HelloServer::bind(&config).await.expect("bind");
    let address = server.local_addr().expect("local addr");
    tokio::spawn(server.serve(std::future::pending()));
    address
}

/// Sends one raw HTTP/1.1 request and returns the whole raw response (the server closes).
pub async fn raw_request(address: SocketAddr, request: &str) -> String {
    let response = raw_http::exchange_bytes(address, request.as_bytes(), Duration::from_secs(10))
        .await
        .expect("a response");
    String::from_utf8(response).expect("utf-8 response")
}

pub fn body_of(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("")
}

/// Runs the binary with only the given environment to its exit; returns (code, stderr).
pub async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().envs(env.iter().copied());
    let output = process::output("hello-cf", &mut command, BINARY_BOUND).await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `hello-cf --help`: (code, stdout).
pub async fn help() -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command.arg("--help").env_clear();
    let output = process::output("hello-cf", &mut command, BINARY_BOUND).await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Starts the binary as v2 on `127.0.0.1`, port 0, with `env` besides; returns it, its address
/// and its "hello-cf listening" line.
pub async fn start_binary(env: &[(&str, &str)]) -> (ChildProcess, SocketAddr, String) {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PORT", "0")
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("HELLO_VERSION", "v2")
        .envs(env.iter().copied());
    let mut child = ChildProcess::spawn("hello-cf", command, Stdout::Null);
    let line = child
        .wait_for_line("its listening line", BINARY_BOUND, |line| {
            line.contains("hello-cf listening").then(|| line.to_owned())
        })
        .await;
    let address = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .expect("the listening line names the address")
        .parse()
        .expect("a socket address");
    (child, address, line)
}
