//! hello-cf: the service that lives outside the mesh. One binary serves either version; Cloud
//! Foundry runs it twice (`hello-istio-v1`, `hello-istio-v2`). It answers `GET /` byte for byte
//! as the static files it replaces did, so logs and tests read the same.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use demo_common::logging::LogFormat;
use demo_common::server::{Drain, Readiness, Server, ServerOptions, health_routes};

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

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The two versions the demo shifts traffic between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HelloVersion {
    V1,
    V2,
}

impl HelloVersion {
    /// The body of `GET /`, trailing newline included (31 bytes).
    pub fn greeting(self) -> &'static str {
        match self {
            HelloVersion::V1 => "Hello K8s, from CF v1 service!\n",
            HelloVersion::V2 => "Hello K8s, from CF v2 service!\n",
        }
    }
}

/// The routes: the greeting at `/`, health at `/healthz` and `/readyz`, 404 elsewhere.
pub fn app(version: HelloVersion, readiness: Readiness) -> Router {
    let greeting = version.greeting();
    Router::new()
        .route(
            "/",
            // The whole request, not the `Method` and `HeaderMap` extractors: those clone the
            // method and every header of every request only for a debug line.
            get(move |request: Request| async move {
                log_request(request.method(), "/", request.headers());
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    )],
                    greeting,
                )
            }),
        )
        .merge(health_routes(readiness))
        .fallback(not_found)
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
    readiness: Readiness,
}

impl HelloServer {
    /// Binds the listener and loads the TLS certificate if one is configured.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let options = ServerOptions {
            drain_timeout: config.drain_timeout,
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
            readiness: Readiness::ready(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Serves until `shutdown` resolves, then fails readiness and drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Drain {
        let readiness = self.readiness.clone();
        let app = app(self.version, self.readiness);
        self.server
            .serve(app, async move {
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
}
