//! The forwarding service: every request goes to the one upstream over a pooled keep-alive
//! client; the upstream's status, headers and body come back unchanged.

use std::convert::Infallible;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::{self, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::body::{BodyError, Direction, ProxyBody, StallGuard};
use crate::config::{Config, UpstreamUrl};
use crate::connect::{ConnectError, Connector, Route, SetupError, read_ca_certificates, route_for};
use crate::headers;

/// Idle upstream connections are closed after this long: shorter than the idle timeouts of
/// common load balancers and routers, so the pool rarely picks a connection the other side
/// is just closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The forwarding half of the proxy. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client<Connector, StallGuard>,
    upstream: UpstreamUrl,
    timeout: Duration,
    route: Route,
}

impl Proxy {
    /// Builds the client for `config`'s upstream: route (direct or via a proxy), TLS roots.
    /// No connection is opened until the first request.
    pub fn new(config: &Config) -> Result<Self, SetupError> {
        let extra_roots = match &config.upstream_ca_cert {
            Some(path) => read_ca_certificates(path)?,
            None => Vec::new(),
        };
        if config.upstream_ca_cert.is_some() && !config.upstream_url.is_https() {
            tracing::warn!("UPSTREAM_CA_CERT has no effect: the upstream is plain http");
        }
        let route = route_for(&config.upstream_url, &config.upstream_proxy)?;
        let connector = Connector::new(&config.upstream_url, route.clone(), extra_roots)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                upstream: config.upstream_url.clone(),
                timeout: config.upstream_timeout,
                route,
            }),
        })
    }

    /// How the upstream is reached, for the start-up log line.
    pub fn route(&self) -> String {
        self.shared.route.to_string()
    }

    /// The service for the forwarding port.
    pub fn service(
        &self,
    ) -> impl tower::Service<
        Request<Incoming>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static {
        let proxy = self.clone();
        tower::service_fn(move |request| {
            let proxy = proxy.clone();
            async move { Ok(proxy.forward(request).await) }
        })
    }

    /// Forwards one request and returns the upstream's answer, or the proxy's own 4xx/5xx.
    pub async fn forward(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        // Only pay for the request line and the clock when the line is logged.
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            (
                Instant::now(),
                request.method().clone(),
                request.uri().path().to_owned(),
            )
        });
        let response = self.dispatch(request).await;
        if let Some((started, method, path)) = logged {
            tracing::debug!(
                %method,
                path,
                status = response.status().as_u16(),
                latency_ms = started.elapsed().as_secs_f64() * 1e3,
                "request"
            );
        }
        response
    }

    async fn dispatch(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let shared = &*self.shared;
        let (mut parts, body) = request.into_parts();
        if parts.method == Method::CONNECT {
            return message(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: this proxy forwards to one upstream URL\n".into(),
            );
        }
        let Some(target) = shared.upstream.target(&parts.uri) else {
            return message(
                StatusCode::BAD_REQUEST,
                "the request target must be a path\n".into(),
            );
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        headers::prepare_request(
            &mut parts.headers,
            shared.upstream.host_header(),
            peer,
            shared.route.request_credentials(),
        );
        parts.uri = target;
        // HTTP/1.1 upstream whatever the client spoke, so the connection stays pooled.
        parts.version = Version::HTTP_11;
        let body = StallGuard::new(body, shared.timeout, Direction::Request);
        let sent = shared.client.request(Request::from_parts(parts, body));
        match tokio::time::timeout(shared.timeout, sent).await {
            Ok(Ok(response)) => self.relay(response),
            Ok(Err(error)) => self.failed(&error),
            Err(_) => {
                let line = format!(
                    "upstream {} did not answer within {:?}",
                    shared.upstream, shared.timeout
                );
                tracing::warn!("{line}");
                message(StatusCode::GATEWAY_TIMEOUT, line + "\n")
            }
        }
    }

    /// The upstream's answer, minus this hop's headers, its body streamed as it arrives.
    fn relay(&self, response: Response<Incoming>) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let body = StallGuard::new(body, self.shared.timeout, Direction::Response);
        Response::from_parts(parts, ProxyBody::upstream(body))
    }

    /// 502 naming the cause, or a 4xx when the client's own request body failed.
    fn failed(&self, error: &legacy::Error) -> Response<ProxyBody> {
        if let Some(body_error) = find_cause::<BodyError>(error) {
            let status = match body_error {
                BodyError::Stalled(..) => StatusCode::REQUEST_TIMEOUT,
                BodyError::Broken(..) => StatusCode::BAD_REQUEST,
            };
            return message(status, format!("{body_error}\n"));
        }
        let upstream = &self.shared.upstream;
        let line = match find_cause::<ConnectError>(error) {
            Some(cause) => format!("upstream {upstream} unreachable: {cause}"),
            None => format!("upstream {upstream} failed: {}", describe_chain(error)),
        };
        tracing::warn!("{line}");
        message(StatusCode::BAD_GATEWAY, line + "\n")
    }
}

/// A short text/plain answer of the proxy's own.
fn message(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::message(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The causes of `error`, outermost first.
fn causes<'a>(
    error: &'a legacy::Error,
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(error.source(), |&cause| cause.source())
}

/// The first error of type `E` in `error`'s chain of causes.
fn find_cause<E: std::error::Error + 'static>(error: &legacy::Error) -> Option<&E> {
    causes(error).find_map(|cause| cause.downcast_ref::<E>())
}

/// The causes below the client's own "client error (...)" wrapper, joined with ": ".
fn describe_chain(error: &legacy::Error) -> String {
    let causes: Vec<String> = causes(error).map(ToString::to_string).collect();
    if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    }
}
