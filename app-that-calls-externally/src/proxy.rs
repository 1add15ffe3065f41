//! The forwarding service: every request goes to the one upstream over a keep-alive
//! connection (see `upstream`); the upstream's status, headers and body come back unchanged.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use demo_common::error;
use demo_common::server::{ConnectionClock, ConnectionService};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Instant;

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

    /// The limit on the wait for the upstream's answer, for the server's
    /// `ServerOptions::answer_timeout`: its connections' watchdogs keep it.
    pub fn answer_timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// How the upstream is reached, for the start-up log line.
    pub fn route(&self) -> String {
        self.shared.route.to_string()
    }

    /// The service for one client connection of the forwarding port, from `peer`: its
    /// requests share one upstream connection, and the peer is known once per connection
    /// rather than looked up in each request's extensions. `clock` is held busy while a
    /// request body is forwarded, which may go on after the upstream's answer, and says when a
    /// request has waited longer than the upstream timeout: the server that serves this
    /// service keeps that limit ([`Proxy::answer_timeout`]).
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
        });
        hyper::service::service_fn(move |request: Request<Incoming>| {
            // The request is checked, rewritten and queued on the upstream connection here,
            // before its future exists, so that the future holds only what waits for the
            // answer: whatever a future holds is copied each time it moves, and written anew
            // for each request (bench/README.md, "Fewer copies per request"). Boxed, as hyper
            // moves a request's future several times before polling it.
            let logged = RequestLine::when_logged(&request);
            let forwarded: ForwardFuture = match connection.prepare(request) {
                Ok(request) => {
                    let upstream = UpstreamHandle(Arc::clone(&connection));
                    Box::pin(Exchange {
                        sending: ConnectionUpstream::send(upstream, request),
                        connection: Arc::clone(&connection),
                        logged,
                    })
                }
                Err(refusal) => {
                    let response = message(refusal.status, refusal.reason.to_owned());
                    if let Some(line) = logged {
                        line.log(&response);
                    }
                    Box::pin(std::future::ready(Ok(response)))
                }
            };
            forwarded
        })
    }

    /// The upstream's answer, minus this hop's headers, its body streamed as it arrives.
    fn relay(&self, mut response: Response<Incoming>) -> Response<ProxyBody> {
        headers::strip_hop_by_hop(response.headers_mut());
        let timeout = self.shared.timeout;
        response
            .map(|body| ProxyBody::upstream(StallGuard::new(body, timeout, Direction::Response)))
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

/// Why a request is answered by the proxy itself, without going upstream.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
}

/// What the debug log line of a request shows.
struct RequestLine {
    started: Instant,
    method: Method,
    path: String,
}

impl RequestLine {
    /// The line of `request`, when request lines are logged: only then are the clock read and
    /// the path copied. Boxed: one pointer in a request's future, null when not logged.
    fn when_logged<B>(request: &Request<B>) -> Option<Box<Self>> {
        tracing::enabled!(tracing::Level::DEBUG).then(|| {
            Box::new(Self {
                started: Instant::now(),
                method: request.method().clone(),
                path: request.uri().path().to_owned(),
            })
        })
    }

    fn log<B>(&self, response: &Response<B>) {
        tracing::debug!(
            method = %self.method,
            path = self.path,
            status = response.status().as_u16(),
            latency_ms = self.started.elapsed().as_secs_f64() * 1e3,
            "request"
        );
    }
}

/// What the requests of one client connection share.
struct Connection {
    proxy: Proxy,
    upstream: ConnectionUpstream,
    peer: IpAddr,
    clock: ConnectionClock,
}

impl Connection {
    /// The request as it goes upstream, or why the proxy answers it itself.
    fn prepare(&self, mut request: Request<Incoming>) -> Result<Request<StallGuard>, Refusal> {
        let shared = &*self.proxy.shared;
        if request.method() == Method::CONNECT {
            return Err(Refusal {
                status: StatusCode::METHOD_NOT_ALLOWED,
                reason: "CONNECT is not supported: this proxy forwards to one upstream URL\n",
            });
        }
        let Some(path) = shared.upstream.target_path(request.uri()) else {
            return Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                reason: "the request target must be a path\n",
            });
        };
        headers::prepare_request(
            request.headers_mut(),
            shared.upstream.host_header(),
            Some(self.peer),
            shared.route.request_credentials(),
        );
        *request.uri_mut() = if shared.route.absolute_form() {
            shared.upstream.absolute(path)
        } else {
            Uri::from(path)
        };
        // HTTP/1.1 upstream whatever the client spoke, so the connection stays open.
        *request.version_mut() = Version::HTTP_11;
        Ok(request.map(|body| {
            StallGuard::new(body, shared.timeout, Direction::Request)
                .holding(self.clock.body_reading())
        }))
    }

    /// The upstream's answer (`None`: none in time) as the client gets it, or the proxy's own
    /// 5xx (4xx when the client's own request body failed).
    fn answer(
        &self,
        answer: Option<Result<Response<Incoming>, UpstreamError>>,
    ) -> Response<ProxyBody> {
        let proxy = &self.proxy;
        match answer {
            Some(Ok(response)) => proxy.relay(response),
            Some(Err(error)) => proxy.failed(&error),
            None => {
                let line = format!(
                    "upstream {} did not answer within {:?}",
                    proxy.shared.upstream, proxy.shared.timeout
                );
                tracing::warn!("{line}");
                message(StatusCode::GATEWAY_TIMEOUT, line + "\n")
            }
        }
    }
}

pin_project! {
    /// A request sent upstream (`sending`), until its answer is in or the server has marked it
    /// overdue (its answer timeout, the upstream timeout, kept by the connection's watchdog,
    /// which wakes the connection's task then); logs the request line when `logged`.
    ///
    /// No timer per request: a re-armed timer per connection cost instructions and cache misses
    /// on every request (bench/README.md, "One watchdog per connection"). Written out rather
    /// than an `async fn`, which would keep `sending` twice, as its argument and as the local it
    /// awaits (a request's future is written anew for every request).
    struct Exchange<S> {
        #[pin]
        sending: S,
        connection: Arc<Connection>,
        logged: Option<Box<RequestLine>>,
    }
}

impl<S> Future for Exchange<S>
where
    S: Future<Output = Result<Response<Incoming>, UpstreamError>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = match this.sending.poll(cx) {
            Poll::Ready(answer) => Some(answer),
            Poll::Pending if this.connection.clock.answer_overdue() => None,
            Poll::Pending => return Poll::Pending,
        };
        let response = this.connection.answer(answer);
        if let Some(line) = this.logged.take() {
            line.log(&response);
        }
        Poll::Ready(Ok(response))
    }
}

/// A client connection's upstream side, as a request on its way holds it.
#[derive(Clone)]
struct UpstreamHandle(Arc<Connection>);

impl Deref for UpstreamHandle {
    type Target = ConnectionUpstream;

    fn deref(&self) -> &ConnectionUpstream {
        &self.0.upstream
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of a request's future, for what `send` returns, without calling it.
    fn exchange_size<S>(_send: impl FnOnce(UpstreamHandle, Request<StallGuard>) -> S) -> usize {
        std::mem::size_of::<Exchange<S>>()
    }

    #[test]
    fn a_requests_future_fits_the_allocators_per_thread_cache() {
        let size = exchange_size(ConnectionUpstream::send);
        // glibc's per-thread cache keeps blocks up to 1,032 bytes: a larger box per request
        // takes malloc's slower path, and every byte of it is copied as the future moves
        // (bench/README.md, "Fewer copies per request"; the future was 3,024 bytes).
        assert!(size <= 1032, "a request's future is {size} bytes");
    }
}
