//! The proxy's own test pieces: the proxy started in-process on port 0, an HTTP upstream that
//! records what reached it, and an HTTP/1.1 client. The generic ones (dead and silent peers,
//! raw upstreams, the test CA) come from `demo_testkit`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app_that_calls_externally::{Config, UpstreamProxy};
use bytes::Bytes;
use demo_common::server::Drain;
pub use demo_testkit::upstream::{read_head, write};
pub use demo_testkit::{Refused, ScriptedUpstream, Silent, TestCa};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any single step of a test may take before the test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    demo_testkit::within(what, DEADLINE, future).await
}

/// A config for `upstream` on loopback port 0, connecting directly (the environment's proxy
/// variables are process-wide, so in-process tests never read them).
///
/// One serving thread: tests that count upstream connections rely on a client connection's
/// upstream connection being parked before the next client connection asks for one, which
/// only one thread orders. (`forwarding::two_serving_threads_…` runs with two.)
pub fn config(upstream: &str) -> Config {
    let mut config: Config = demo_common::cli::try_parse_from([
        "app-that-calls-externally",
        "--bind-address=127.0.0.1",
        "--port=0",
        "--admin-port=0",
        "--upstream-timeout=5s",
        "--drain-timeout=5s",
        "--log-format=text",
        "--workers=1",
        &format!("--upstream-url={upstream}"),
    ])
    .unwrap_or_else(|outcome| panic!("test config rejected: {outcome:?}"));
    config.upstream_proxy = UpstreamProxy::Direct;
    config
}

/// The proxy, serving in-process.
pub struct Running {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Drain>,
}

pub async fn start(config: &Config) -> Running {
    let bound = app_that_calls_externally::bind(config)
        .await
        .unwrap_or_else(|error| panic!("proxy did not start: {error}"));
    let (stop, stopped) = oneshot::channel::<()>();
    let proxy = bound.proxy_addr();
    let admin = bound.admin_addr();
    let task = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    Running {
        proxy,
        admin,
        stop: Some(stop),
        task,
    }
}

impl Running {
    pub async fn stop(mut self) -> Drain {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within("proxy shutdown", &mut self.task).await.unwrap()
    }
}

/// A request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// The request target as sent: origin form (`/a?b`) or absolute form via a proxy.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A scripted HTTP/1.1 server on loopback that counts the connections it accepts.
pub struct Upstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Serves every request with `handler`.
    pub async fn start<H, F>(handler: H) -> Self
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Self::start_with_tls(None, handler).await
    }

    /// Like [`Upstream::start`], speaking TLS with `tls`.
    pub async fn start_with_tls<H, F>(tls: Option<Arc<rustls::ServerConfig>>, handler: H) -> Self
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let (listener, addr) = demo_testkit::listener().await;
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(request).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Records every request (body read in full), then answers with `respond`.
    pub async fn recording<R>(respond: R) -> Self
    where
        R: Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
    {
        Self::recording_with_tls(None, respond).await
    }

    pub async fn recording_with_tls<R>(tls: Option<Arc<rustls::ServerConfig>>, respond: R) -> Self
    where
        R: Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let respond = Arc::new(respond);
        let mut upstream = Self::start_with_tls(tls, move |request: Request<Incoming>| {
            let log = Arc::clone(&log);
            let respond = Arc::clone(&respond);
            async move {
                let (parts, body) = request.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let seen = Seen {
                    method: parts.method,
                    target: parts.uri.to_string(),
                    headers: parts.headers,
                    body,
                };
                let response = respond(&seen);
                log.lock().unwrap().push(seen);
                response
            }
        })
        .await;
        upstream.seen = seen;
        upstream
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn only_request(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            1,
            "expected exactly one request upstream: {seen:#?}"
        );
        seen.into_iter().next().unwrap()
    }
}

/// A response with a status, a content type and a body.
pub fn answer(status: u16, content_type: &str, body: &'static str) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(full(body))
        .unwrap()
}

/// A raw upstream (the test kit's): reads each request head, then hands the socket to
/// `script`. It accepts as long as the returned value lives.
pub async fn raw_upstream<S, F>(script: S) -> ScriptedUpstream
where
    S: Fn(TcpStream) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let script = Arc::new(script);
    ScriptedUpstream::start(move |mut connection| {
        let script = Arc::clone(&script);
        async move {
            if read_head(&mut connection.stream).await.is_some() {
                script(connection.stream).await;
            }
        }
    })
    .await
}

/// One client connection to `addr`.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self { sender }
    }

    /// Sends `request` and waits for the response head.
    pub async fn send(&mut self, request: Request<TestBody>) -> Response<Incoming> {
        within("client ready", self.sender.ready()).await.unwrap();
        within("response head", self.sender.send_request(request))
            .await
            .unwrap()
    }

    /// Sends `request` and reads the whole response.
    pub async fn fetch(&mut self, request: Request<TestBody>) -> (StatusCode, HeaderMap, Bytes) {
        let response = self.send(request).await;
        let (parts, body) = response.into_parts();
        let body = within("response body", body.collect())
            .await
            .unwrap()
            .to_bytes();
        (parts.status, parts.headers, body)
    }
}

/// A request as the caller in the mesh sends it (its Host is the proxy's Service name).
pub fn request(method: &str, target: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(target)
        .header("host", "service-that-calls-externally")
}

/// GET `target` from `addr` on a fresh connection.
pub async fn get(addr: SocketAddr, target: &str) -> (StatusCode, HeaderMap, Bytes) {
    Client::connect(addr)
        .await
        .fetch(request("GET", target).body(full("")).unwrap())
        .await
}

pub fn text(body: &Bytes) -> &str {
    std::str::from_utf8(body).expect("UTF-8 body")
}

/// Writes `ca`'s certificate as PEM under the tests' scratch directory; returns the path.
pub fn ca_file(ca: &TestCa, file_name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("app-that-calls-externally");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{file_name}", std::process::id()));
    ca.write_pem(&path);
    path
}
