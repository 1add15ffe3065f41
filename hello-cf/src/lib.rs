//! hello-cf: the service that lives outside the mesh. One binary serves either version; Cloud
//! Foundry runs it twice (`hello-istio-v1`, `hello-istio-v2`). It answers `GET /` byte for byte
//! as the static files it replaces did, so logs and tests read the same. On request it
//! misbehaves (see [`faults`]): a share of failures and a delay, for the mesh to act on.

pub mod faults;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use demo_common::logging::LogFormat;
use demo_common::server::{Drain, Readiness, Server, ServerOptions, health_routes};
use tower::ServiceExt as _;

use crate::faults::{Delay, Faults, Percent};

/// Configuration; every flag has an env-var twin because Cloud Foundry passes config as env.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    version,
    about = "The demo's external service: answers `Hello K8s, from CF <version> service!`"
)]
pub struct Config {
    /// Port to listen on (Cloud Foundry sets PORT).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to bind; Cloud Foundry requires all interfaces.
    #[arg(long, env = "BIND_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind_address: IpAddr,

    /// Which version this instance is.
    #[arg(long, env = "HELLO_VERSION", value_enum, default_value_t = HelloVersion::V1)]
    pub hello_version: HelloVersion,

    /// PEM certificate chain; with --tls-key, serve HTTPS instead of HTTP.
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = demo_common::parse_duration)]
    pub drain_timeout: Duration,

    /// Threads serving connections, each a single-threaded runtime, connections dealt to them
    /// in turn. Default: one per CPU the process may use (its CPU limit or affinity).
    #[arg(long, env = "WORKERS", value_parser = clap::value_parser!(u16).range(1..=i64::from(demo_common::runtime::MAX_WORKERS)))]
    pub workers: Option<u16>,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Share of `/` requests answered with FAIL_STATUS instead of the greeting, 0-100
    /// (decimals allowed: 12.5). Health endpoints never fail.
    #[arg(long, env = "FAIL_PERCENT", default_value = "0")]
    pub fail_percent: Percent,

    /// Status of the injected failures (400-599); 503 is what Istio retries by default.
    #[arg(long, env = "FAIL_STATUS", default_value_t = 503, value_parser = faults::parse_fail_status)]
    pub fail_status: u16,

    /// Wait before answering `/`: a duration (`500ms`), or a range drawn uniformly per request
    /// (`100ms-2s`); at most 1h. Health endpoints are never delayed.
    #[arg(long, env = "DELAY", default_value = "0")]
    pub delay: Delay,
}

/// The two versions the demo shifts traffic between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum HelloVersion {
    V1,
    V2,
}

impl HelloVersion {
    /// `v1` or `v2`, as `HELLO_VERSION` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            HelloVersion::V1 => "v1",
            HelloVersion::V2 => "v2",
        }
    }

    /// The body of `GET /`, trailing newline included (31 bytes).
    pub fn greeting(self) -> &'static str {
        match self {
            HelloVersion::V1 => "Hello K8s, from CF v1 service!\n",
            HelloVersion::V2 => "Hello K8s, from CF v2 service!\n",
        }
    }
}

impl HelloVersion {
    /// The body of an injected failure: one line naming the app, its version and the knob.
    pub fn failure_body(self, fail_percent: Percent) -> String {
        let version = self.as_str();
        format!("hello-cf {version}: injected failure (FAIL_PERCENT={fail_percent})\n")
    }
}

/// The routes: the greeting at `/` (with `faults`, if any), health at `/healthz` and
/// `/readyz` (never faulted), 404 elsewhere.
pub fn app(version: HelloVersion, faults: Faults, readiness: Readiness) -> Router {
    let greeting = version.greeting();
    let length = HeaderValue::from(greeting.len());
    let greet = move |method: &Method, headers: &HeaderMap| {
        log_request(method, "/", headers);
        greeting_response(greeting, length.clone())
    };
    // Without faults the route is the plain greeting: the hot path pays nothing for them.
    let root = if faults.is_off() {
        // The whole request, not the `Method` and `HeaderMap` extractors: those clone the
        // method and every header of every request only for a debug line.
        get(move |request: Request| async move { greet(request.method(), request.headers()) })
    } else {
        let failure = Bytes::from(version.failure_body(faults.fail_percent));
        let status =
            StatusCode::from_u16(faults.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        get(move |request: Request| async move {
            let verdict = faults.draw();
            if !verdict.delay.is_zero() {
                // Only this request waits; the connection's task sleeps, nothing else does.
                tokio::time::sleep(verdict.delay).await;
            }
            if verdict.fail {
                log_request(request.method(), "/", request.headers());
                failure_response(status, failure.clone())
            } else {
                greet(request.method(), request.headers())
            }
        })
    };
    Router::new()
        .route("/", root)
        .merge(health_routes(readiness))
        .fallback(not_found)
}

fn failure_response(status: StatusCode, body: Bytes) -> Response<Body> {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `200 text/html` with the greeting, headed as axum heads it.
fn greeting_response(greeting: &'static str, length: HeaderValue) -> Response<Body> {
    let mut response = Response::new(Body::from(greeting));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, length);
    response
}

/// What the server runs: `GET /`, the hot path, answered here; every other request by [`app`]'s
/// router. Through the router each greeting paid for a route lookup, the URL parameters axum
/// keeps in an extensions map it allocates for every request, and the boxed route service
/// (bench/README.md, "bench/profile.sh"). The answer is the same either way.
pub fn service<B>(
    version: HelloVersion,
    faults: Faults,
    readiness: Readiness,
) -> impl tower::Service<
    hyper::Request<B>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let direct_greeting = faults.is_off();
    let router = app(version, faults, readiness);
    let greeting = version.greeting();
    let length = HeaderValue::from(greeting.len());
    tower::service_fn(move |request: hyper::Request<B>| {
        let router = router.clone();
        let length = length.clone();
        async move {
            if direct_greeting && request.method() == Method::GET && request.uri().path() == "/" {
                log_request(request.method(), "/", request.headers());
                return Ok(greeting_response(greeting, length));
            }
            router.oneshot(request).await
        }
    })
}

async fn not_found(method: Method, uri: Uri, headers: HeaderMap) -> impl IntoResponse {
    log_request(&method, uri.path(), &headers);
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

/// Debug-level, so the hot path pays only a level check; the local mesh turns it on to see
/// which Host and scheme reached the service.
fn log_request(method: &Method, path: &str, headers: &HeaderMap) {
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    tracing::debug!(
        %method,
        path,
        host = header_text(header::HOST),
        forwarded_proto = header_text(header::HeaderName::from_static("x-forwarded-proto")),
        "request"
    );
}

/// A bound, configured server; split from [`HelloServer::serve`] so callers learn the port first.
pub struct HelloServer {
    server: Server,
    version: HelloVersion,
    faults: Faults,
    readiness: Readiness,
}

impl HelloServer {
    /// Binds the listener and loads the TLS certificate if one is configured.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let options = ServerOptions {
            drain_timeout: config.drain_timeout,
            workers: demo_common::runtime::serving_threads(config.workers),
            ..ServerOptions::default()
        };
        let address = SocketAddr::new(config.bind_address, config.port);
        let mut server = Server::bind(address, options)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            server = server.with_tls(demo_common::tls::server_config(cert, key)?);
        }
        Ok(Self {
            server,
            version: config.hello_version,
            faults: config.faults(),
            readiness: Readiness::ready(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Serves until `shutdown` resolves, then fails readiness and drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Drain {
        let readiness = self.readiness.clone();
        let service = service(self.version, self.faults, self.readiness);
        self.server
            .serve(service, async move {
                shutdown.await;
                readiness.set_not_ready();
            })
            .await
    }
}

impl Config {
    /// Whether the server speaks HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The fault knobs, together.
    pub fn faults(&self) -> Faults {
        Faults {
            fail_percent: self.fail_percent,
            fail_status: self.fail_status,
            delay: self.delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(
        service: impl tower::Service<
            hyper::Request<Body>,
            Response = Response<Body>,
            Error = Infallible,
        >,
        method: Method,
        path: &str,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = service.oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1024).await.expect("body");
        (parts.status, parts.headers, body)
    }

    /// The direct answer to `GET /` must be what the router answers, header for header.
    #[tokio::test]
    async fn the_greeting_is_the_same_with_or_without_the_router() {
        for version in [HelloVersion::V1, HelloVersion::V2] {
            for (method, path) in [
                (Method::GET, "/"),
                (Method::GET, "/?x=1"),
                (Method::HEAD, "/"),
                (Method::POST, "/"),
                (Method::GET, "/nope"),
            ] {
                let direct = answer(
                    service(version, Faults::default(), Readiness::ready()),
                    method.clone(),
                    path,
                )
                .await;
                let routed = answer(
                    app(version, Faults::default(), Readiness::ready()),
                    method.clone(),
                    path,
                )
                .await;
                assert_eq!(direct, routed, "{method} {path}");
            }
        }
    }
}
