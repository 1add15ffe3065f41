//! An HTTP/1.1 server (plain or TLS) that drains on shutdown: on the signal it stops accepting,
//! lets in-flight requests finish within a bound, and closes idle keep-alive connections.
//!
//! It sits on hyper directly rather than `axum::serve` because the demo needs what that does not
//! expose: a header-read timeout (slow clients must not hold connections), TLS, the peer
//! address for each connection's service, and a bounded drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::watchdog::{self, Clocked, ClockedIo, HeadClock, Limits, Watched};
pub use crate::watchdog::{BodyReading, ConnectionClock};
use crate::workers::Workers;

/// Timeouts that keep one slow peer from holding the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// A client must send its complete request head within this time.
    pub header_read_timeout: Duration,
    /// A TLS client must complete its handshake within this time.
    pub tls_handshake_timeout: Duration,
    /// How long in-flight requests may run after the shutdown signal.
    pub drain_timeout: Duration,
    /// How long the service may take to answer a request, from its head; `None`: no limit.
    /// Past it the request's [`ConnectionClock::answer_overdue`] turns true and its
    /// connection's task is woken, for the service to answer it itself (the proxy's 504).
    /// Kept by each connection's watchdog, with no timer per request.
    pub answer_timeout: Option<Duration>,
    /// Threads connections are served on, each with a single-threaded runtime, accepted
    /// connections dealt to them in turn ([`crate::workers`]); 1 serves on the caller's
    /// runtime alone. The programs take theirs from `--workers`, one per CPU by default
    /// ([`crate::runtime::serving_threads`]).
    pub workers: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            answer_timeout: None,
            workers: 1,
        }
    }
}

/// Whether the process wants new traffic. Cleared at shutdown so `/readyz` fails first.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn ready() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `GET /healthz` (liveness: the process serves) and `GET /readyz` (readiness: 503 once
/// draining). Neither touches anything outside the process.
pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                    }
                }
            }),
        )
}

/// How a server run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished within the drain time.
    Complete,
    /// The drain time ran out with connections still open; they were dropped.
    TimedOut,
}

/// What a server answers one connection's requests with: a hyper service, called by hyper for
/// each request, with no readiness to ask first.
pub trait ConnectionService<B>:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<S, B> ConnectionService<B> for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// What [`Server::serve`] answers every connection's requests with: a tower service such as an
/// axum `Router`, cloned for each request and asked for readiness first (hyper-util's
/// adapter, `TowerToHyperService`).
pub trait SharedService<B>:
    tower::Service<
        Request<Incoming>,
        Response = Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> SharedService<B> for S where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The body of a server's answers.
pub trait AnswerBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<B> AnswerBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    options: ServerOptions,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, options: ServerOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            tls: None,
            options,
        })
    }

    /// Serves HTTPS with `config` instead of plain HTTP.
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(config));
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `service` until `shutdown` resolves, then drains.
    pub async fn serve<S, B>(self, service: S, shutdown: impl Future<Output = ()>) -> Drain
    where
        S: SharedService<B>,
        B: AnswerBody,
    {
        self.serve_connections(
            move |_peer, _clock| TowerToHyperService::new(service.clone()),
            shutdown,
        )
        .await
    }

    /// Like [`Server::serve`], with a service of its own for each connection, made by
    /// `make_service` from the peer address and the connection's head clock: for state that
    /// lives as long as the connection, the peer included. (Requests carry no `ConnectInfo`
    /// extension: inserting one allocates an extensions map for every request, and a service
    /// that needs the peer gets it here once per connection.) A service that reads a request
    /// body after its answer has gone out holds [`ConnectionClock::body_reading`] while it
    /// does, or the wait for the next request head counts from the answer.
    pub async fn serve_connections<M, S, B>(
        self,
        mut make_service: M,
        shutdown: impl Future<Output = ()>,
    ) -> Drain
    where
        M: FnMut(SocketAddr, ConnectionClock) -> S,
        S: ConnectionService<B>,
        B: AnswerBody,
    {
        let Server {
            listener,
            tls,
            options,
        } = self;
        // Named in the drain logs, so a process with two servers says which one is draining.
        let address = listener
            .local_addr()
            .map_or_else(|_| "unknown".to_owned(), |address| address.to_string());
        // Each connection's watchdog holds a receiver: the drain is over once all are gone.
        let (drain, drain_seen) = tokio::sync::watch::channel(false);
        let mut http = http1::Builder::new();
        // `writev(false)`: hyper copies a response's head and body into one buffer and sends
        // it with one `send`, rather than pointing `writev` at the pieces. For the short
        // answers served here the copy is cheaper than the kernel's vectored path: 3.5-4.4 %
        // fewer instructions per request (bench/README.md, "What the changes bought").
        //
        // `half_close(true)`: a client that shuts its sending side once its request is out
        // (HTTP/1.1 allows it) still gets its answer, where hyper's default closes the
        // connection unanswered. hyper then also stops reading ahead while a request is being
        // answered (only to look for that close), which spared a fresh read buffer per request:
        // 5 % of hello-cf's instructions, 2.5 % of the proxy's. A client that goes away
        // mid-request is noticed when its answer is written, not before.
        //
        // No hyper timer: the header-read timeout is kept by `watchdog`, with one timer per
        // connection where hyper's arms one per request.
        http.writev(false).half_close(true);
        let protocol = Arc::new(Protocol {
            http,
            tls,
            tls_handshake_timeout: options.tls_handshake_timeout,
            limits: Limits {
                head: options.header_read_timeout,
                answer: options.answer_timeout,
            },
        });
        let workers = Workers::start(options.workers, "server");
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let clock = HeadClock::new();
            let service = make_service(peer, ConnectionClock::new(Arc::clone(&clock)));
            let drain_seen = drain_seen.clone();
            let protocol = Arc::clone(&protocol);
            workers.spawn(stream, move |stream| async move {
                let limits = protocol.limits;
                let serving = protocol.spawn(stream, peer, service, Arc::clone(&clock));
                let watched = watchdog::watch(serving, &clock, limits, drain_seen).await;
                if watched == Watched::HeadTimedOut {
                    let limit = limits.head;
                    tracing::debug!(%peer, ?limit, "no request head in time; connection closed");
                }
            });
        }
        drop(listener);
        tracing::info!(
            %address,
            drain_timeout = ?options.drain_timeout,
            "stopped accepting; draining connections"
        );
        // The serving threads stop (and drop what they still hold) once this returns.
        let _workers = workers;
        drop(drain_seen);
        let _ = drain.send(true);
        match tokio::time::timeout(options.drain_timeout, drain.closed()).await {
            Ok(()) => {
                tracing::info!(%address, "drained");
                Drain::Complete
            }
            Err(_) => {
                tracing::warn!(%address, "drain time ran out; dropping the remaining connections");
                Drain::TimedOut
            }
        }
    }
}

/// How each accepted connection is spoken to: TLS first when the server has it, then hyper's
/// HTTP/1.1.
struct Protocol {
    http: http1::Builder,
    tls: Option<TlsAcceptor>,
    tls_handshake_timeout: Duration,
    /// What each connection's watchdog keeps.
    limits: Limits,
}

impl Protocol {
    /// Starts the task that serves one connection until the client or the drain ends it (or
    /// the watchdog beside it, [`watchdog::watch`], aborts it). `clock` starts counting
    /// toward the head timeout once HTTP begins, marked by the service's requests and answers
    /// and the socket's flushes; the watchdog asks for the drain through it.
    ///
    /// A task of one type for plain connections and one for TLS: as one type, every plain
    /// connection's task carried room for a TLS session it never has, and the parts of it each
    /// request touches lay further apart.
    fn spawn<S: ConnectionService<B>, B: AnswerBody>(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        service: S,
        clock: Arc<HeadClock>,
    ) -> JoinHandle<()> {
        match self.tls.clone() {
            None => tokio::spawn(async move { self.serve(stream, peer, service, clock).await }),
            Some(acceptor) => tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(self.tls_handshake_timeout, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(stream)) => self.serve(stream, peer, service, clock).await,
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }),
        }
    }

    /// Speaks HTTP/1.1 on `stream`, plain or TLS.
    async fn serve<I, S, B>(&self, stream: I, peer: SocketAddr, service: S, clock: Arc<HeadClock>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: ConnectionService<B>,
        B: AnswerBody,
    {
        clock.idle();
        // hyper calls the connection's service directly: no tower readiness round and no
        // copy of the service per request (bench/README.md, "Requests handed to the service
        // directly").
        let service = Clocked::new(service, Arc::clone(&clock), self.limits.answer);
        let io = TokioIo::new(ClockedIo::new(stream, Arc::clone(&clock)));
        let mut connection = pin!(self.http.serve_connection(io, service));
        let mut draining = false;
        let mut task = None;
        let served = std::future::poll_fn(|cx| {
            // Once asked, hyper finishes the request in progress, if any, and closes.
            if clock.polled(&mut task, cx.waker()) && !draining {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            connection.as_mut().poll(cx)
        });
        if let Err(error) = served.await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}
