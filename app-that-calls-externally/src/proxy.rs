//! The forwarding service: every request goes to the one upstream over a keep-alive
//! connection (see `upstream`); the upstream's status, headers and body come back unchanged.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use demo_common::error;
use demo_common::server::{ConnectionClock, ConnectionService};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::BoxFuture;
use crate::body::{BodyError, Direction, ProxyBody, StallGuard};
use crate::config::{Config, UpstreamUrl};
use crate::connect::{Connector, Route, SetupError, read_ca_certificates, route_for};
use crate::headers;
use crate::upstream::{ConnectionUpstream, UpstreamError, Upstreams};

/// The forwarding half of the proxy. Cheap to clone; clones share the parked upstream
/// connections.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    upstreams: Arc<Upstreams>,
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
        let connector = Connector::new(&config.upstream_url, &route, extra_roots)?;
        Ok(Self {
            shared: Arc::new(Shared {
                upstreams: Upstreams::new(connector),
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

    /// The service for one client connection of the forwarding port, from `peer`: its
    /// requests share one upstream connection, and the peer is known once per connection
    /// rather than looked up in each request's extensions. `clock` is held busy while a
    /// request body is forwarded, which may go on after the upstream's answer.
    pub fn connection_service(
        &self,
        peer: SocketAddr,
        clock: ConnectionClock,
    ) -> impl ConnectionService<ProxyBody> + use<> {
        let connection = Arc::new(Connection {
            proxy: self.clone(),
            upstream: self.shared.upstreams.for_connection(),
            peer: peer.ip(),
            clock,
            response_timer: ResponseTimer::default(),
        });
        tower::service_fn(move |request| {
            let connection = Arc::clone(&connection);
            // Boxed: a request's future holds the whole upstream exchange (kilobytes), and
            // hyper moves it several times before polling it; a box is one pointer to move.
            // Without LTO (the release build the local demo runs) those moves were a third of
            // the proxy's instructions per request (bench/README.md).
            let forwarded: ForwardFuture =
                Box::pin(async move { Ok(connection.proxy.forward(&connection, request).await) });
            forwarded
        })
    }

    /// Forwards one request and returns the upstream's answer, or the proxy's own 4xx/5xx.
    async fn forward(
        &self,
        connection: &Connection,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        // Only pay for the request line and the clock when the line is logged.
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            (
                Instant::now(),
                request.method().clone(),
                request.uri().path().to_owned(),
            )
        });
        let response = self.dispatch(connection, request).await;
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

    async fn dispatch(
        &self,
        connection: &Connection,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
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
        headers::prepare_request(
            &mut parts.headers,
            shared.upstream.host_header(),
            Some(connection.peer),
            shared.route.request_credentials(),
        );
        parts.uri = if shared.route.absolute_form() {
            target
        } else {
            origin_form(target)
        };
        // HTTP/1.1 upstream whatever the client spoke, so the connection stays open.
        parts.version = Version::HTTP_11;
        let body = StallGuard::new(body, shared.timeout, Direction::Request)
            .holding(connection.clock.body_reading());
        let sent = pin!(connection.upstream.send(Request::from_parts(parts, body)));
        match connection.response_timer.limit(shared.timeout, sent).await {
            Some(Ok(response)) => self.relay(response),
            Some(Err(error)) => self.failed(&error),
            None => {
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
    fn failed(&self, error: &UpstreamError) -> Response<ProxyBody> {
        if let Some(body_error) = error::find::<BodyError>(error) {
            let status = match body_error {
                BodyError::Stalled(..) => StatusCode::REQUEST_TIMEOUT,
                BodyError::Broken(..) => StatusCode::BAD_REQUEST,
            };
            return message(status, format!("{body_error}\n"));
        }
        let upstream = &self.shared.upstream;
        let line = match error {
            UpstreamError::Connect(cause) => format!("upstream {upstream} unreachable: {cause}"),
            UpstreamError::Http(_) => {
                format!("upstream {upstream} failed: {}", error::describe(error))
            }
        };
        tracing::warn!("{line}");
        message(StatusCode::BAD_GATEWAY, line + "\n")
    }
}

type ForwardFuture = BoxFuture<'static, Result<Response<ProxyBody>, Infallible>>;

/// What the requests of one client connection share.
struct Connection {
    proxy: Proxy,
    upstream: ConnectionUpstream,
    peer: IpAddr,
    clock: ConnectionClock,
    response_timer: ResponseTimer,
}

/// One client connection's response timer, re-armed for each of its requests.
///
/// A `tokio::time::timeout` per request registers a new timer entry every time, and one due
/// before every timer already registered (the 10 s header timers of idle connections) makes
/// tokio wake its driver with an eventfd write: a system call for most requests. Moving one
/// timer's deadline later, as each request does here, only updates the entry; tokio re-files
/// it when the old deadline comes. (HTTP/1: one request at a time per connection.)
#[derive(Default)]
struct ResponseTimer(Mutex<Option<Pin<Box<Sleep>>>>);

impl ResponseTimer {
    /// `work`'s output, or `None` when it takes longer than `limit`. (`work` is pinned by the
    /// caller, so it is not copied into this future as well.)
    async fn limit<F: Future>(&self, limit: Duration, mut work: Pin<&mut F>) -> Option<F::Output> {
        let deadline = Instant::now() + limit;
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        let mut timer = match kept {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let output = tokio::select! {
            biased;
            output = work.as_mut() => Some(output),
            () = timer.as_mut() => None,
        };
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(timer);
        output
    }
}

/// `/path?query` of an absolute URI, for a request that goes straight to the upstream.
fn origin_form(target: Uri) -> Uri {
    target.path_and_query().cloned().map_or(target, Uri::from)
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
