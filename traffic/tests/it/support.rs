//! The caller's own test pieces: an HTTP upstream recording what it was asked, and run
//! helpers. The generic ones (dead ports, raw TCP upstreams) come from `demo_testkit`.
//!
//! The caller honours the proxy variables, as curl did; a test that runs it in-process builds
//! it with `no_proxy()` ([`direct_caller`]), so that its calls to loopback go direct whatever
//! the test machine's environment says.

use std::future::Future;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::Instant;
use traffic::{CallLimit, Caller, Config, Report, SummaryEvery};

/// Longest any single test run may take before the test fails instead of hanging.
pub const RUN_BOUND: Duration = Duration::from_secs(30);

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    /// The request target as sent: absolute-form (`http://host/`) when it came through a proxy.
    pub target: String,
    pub path: String,
    pub host: Option<String>,
    pub headers: HeaderMap,
}

/// An in-process HTTP upstream on an ephemeral loopback port (clones share its record).
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }
}

/// Answers the n-th request (counting from 0, in arrival order) with `script(n)`.
pub async fn scripted<F, Fut>(script: F) -> Upstream
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let (listener, _) = demo_testkit::listener().await;
    scripted_on(listener, script)
}

/// [`scripted`] on a given listener.
pub fn scripted_on<F, Fut>(listener: TcpListener, script: F) -> Upstream
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let counter = Arc::new(AtomicUsize::new(0));
    let recorded = Arc::clone(&arrivals);
    let router = Router::new().fallback(move |request: Request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        recorded.lock().unwrap().push(Arrival {
            at: Instant::now(),
            target: request.uri().to_string(),
            path: request.uri().path().to_owned(),
            host: request
                .headers()
                .get("host")
                .and_then(|host| host.to_str().ok())
                .map(str::to_owned),
            headers: request.headers().clone(),
        });
        script(n)
    });
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Upstream { addr, arrivals }
}

/// The binary with a clean environment: only what the test sets reaches it (no proxy
/// variables either).
pub fn traffic() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_traffic"));
    command.env_clear().env("RUST_LOG", "warn");
    command
}

/// Runs the binary to its exit within [`RUN_BOUND`].
pub async fn output(command: &mut Command) -> Output {
    demo_testkit::process::output("traffic", command, RUN_BOUND).await
}

/// `status` with `body`.
pub fn respond(status: u16, body: impl Into<axum::body::Body>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .unwrap()
}

/// A configuration for tests: every field set here, none from the environment.
pub fn config(url: &str) -> Config {
    Config {
        url: url.parse().unwrap(),
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        count: CallLimit::Calls(3),
        summary_every: SummaryEvery::Off,
        max_body: 4096,
        log_format: demo_common::logging::LogFormat::Text,
        headers: Vec::new(),
    }
}

/// A caller for `config` that ignores the proxy variables.
pub fn direct_caller(config: &Config) -> Caller {
    Caller::builder(config).no_proxy().build().unwrap()
}

/// Runs to COUNT and returns the report and the printed lines.
pub async fn run_lines(config: &Config) -> (Report, Vec<String>) {
    let caller = direct_caller(config);
    run_lines_with(config, caller, std::future::pending()).await
}

/// Runs with `caller` until COUNT or `shutdown`, returning the report and the printed lines.
pub async fn run_lines_with(
    config: &Config,
    caller: Caller,
    shutdown: impl Future<Output = ()>,
) -> (Report, Vec<String>) {
    let mut out = Vec::new();
    let report = tokio::time::timeout(
        RUN_BOUND,
        traffic::run_with(config, caller, &mut out, shutdown),
    )
    .await
    .expect("the run did not end")
    .expect("the run failed");
    let text = String::from_utf8(out).expect("output is UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "unterminated: {text:?}"
    );
    (report, text.lines().map(str::to_owned).collect())
}

/// The field after the tab of a call line, checking the `date -Is` timestamp before it.
pub fn field(line: &str) -> &str {
    let (timestamp, field) = line
        .split_once('\t')
        .unwrap_or_else(|| panic!("no tab in {line:?}"));
    assert_eq!(
        timestamp.len(),
        "2022-02-04T10:34:33+00:00".len(),
        "{line:?}"
    );
    chrono::DateTime::parse_from_str(timestamp, "%Y-%m-%dT%H:%M:%S%:z")
        .unwrap_or_else(|error| panic!("bad timestamp in {line:?}: {error}"));
    assert!(!field.is_empty() && !field.contains('\t'), "{line:?}");
    field
}

/// The fields of the call lines (those not starting with `#`).
pub fn fields(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter(|line| !line.starts_with('#'))
        .map(|line| field(line))
        .collect()
}
