//! Connections to the upstream, kept with the client connection that used them.
//!
//! Each client connection holds on to the upstream connection of its last request and sends its
//! next request on it, with no pool round trip per request: no checkout, no hand-back after the
//! response body, no task spawned to do that. When the client connection ends, its upstream
//! connection is parked in a shared idle list, where the next new client connection picks it up
//! (one driven on its own serving thread first); parked connections are closed after
//! [`IDLE_TIMEOUT`].

use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::thread::ThreadId;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::BoxFuture;
use crate::body::StallGuard;
use crate::connect::{ConnectError, Connector};
use hyper_rustls::MaybeHttpsStream;

/// Parked upstream connections are closed after this long unused: shorter than the idle
/// timeouts of common load balancers and routers, so a parked connection is rarely one the
/// other side is just closing.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

type Sender = SendRequest<StallGuard>;

/// An open upstream connection: where requests are sent, and the thread whose runtime drives it
/// (reads and writes its socket), the one it was opened on. A client connection served on
/// another thread would send every request and get every answer across threads.
struct Held {
    sender: Sender,
    driver: ThreadId,
}

/// Why a request got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The connector and the idle list, shared by all client connections.
pub(crate) struct Upstreams {
    connector: Connector,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    parked: Vec<(Held, Instant)>,
    /// Whether a task is on its way to close expired connections.
    sweeping: bool,
}

impl Idle {
    /// Drops the parked connections idle for [`IDLE_TIMEOUT`] and those `usable` refuses. One
    /// clock read for the whole list: many client connections may arrive at once (a load
    /// balancer reconnecting), each looking through every parked connection.
    fn keep_unexpired(&mut self, usable: impl Fn(&Held) -> bool) {
        let now = Instant::now();
        self.parked
            .retain(|(held, since)| usable(held) && now.duration_since(*since) < IDLE_TIMEOUT);
    }
}

impl Upstreams {
    pub(crate) fn new(connector: Connector) -> Arc<Self> {
        Arc::new(Self {
            connector,
            idle: Mutex::new(Idle::default()),
        })
    }

    /// The upstream side of one new client connection.
    pub(crate) fn for_connection(self: &Arc<Self>) -> ConnectionUpstream {
        ConnectionUpstream {
            upstreams: Arc::clone(self),
            held: Mutex::new(None),
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A parked connection that is open and idle: the most recently parked one driven on this
    /// thread, else the most recently parked one.
    fn unpark(&self) -> Option<Held> {
        let here = std::thread::current().id();
        let mut idle = self.lock_idle();
        idle.keep_unexpired(|held| held.sender.is_ready());
        let index = idle
            .parked
            .iter()
            .rposition(|(held, _)| held.driver == here)
            .or_else(|| idle.parked.len().checked_sub(1))?;
        Some(idle.parked.remove(index).0)
    }

    fn park(self: &Arc<Self>, mut held: Held) {
        if held.sender.is_closed() {
            return;
        }
        // Without a runtime (the process is ending) nobody could close it later: drop it now.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if held.sender.is_ready() {
            self.park_idle(held);
            return;
        }
        // Still reading the end of a response (its client may have left mid-body): parked once
        // that is through, never handed to another client before; dropped if it takes longer
        // than a parked connection may live.
        let upstreams = Arc::downgrade(self);
        runtime.spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(IDLE_TIMEOUT, held.sender.ready()).await
                && let Some(upstreams) = upstreams.upgrade()
            {
                upstreams.park_idle(held);
            }
        });
    }

    /// Parks an idle connection; runs inside the runtime.
    fn park_idle(self: &Arc<Self>, held: Held) {
        let mut idle = self.lock_idle();
        idle.parked.push((held, Instant::now()));
        if !idle.sweeping {
            idle.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// [`Upstreams::connect`] behind a pointer. The connect future (TCP, proxy tunnel, TLS
    /// handshake) is several kilobytes; awaited inline it would make every request's future
    /// that large, and hyper moves a request's future more than once before polling it.
    /// Connections are rare, requests are not.
    fn connect_boxed(&self) -> BoxFuture<'_, Result<Held, UpstreamError>> {
        Box::pin(self.connect())
    }

    async fn connect(&self) -> Result<Held, UpstreamError> {
        let sender = match self.connector.connect().await? {
            MaybeHttpsStream::Http(tcp) => drive(tcp).await?,
            MaybeHttpsStream::Https(tls) => drive(tls).await?,
        };
        Ok(Held {
            sender,
            driver: std::thread::current().id(),
        })
    }
}

/// Speaks HTTP/1.1 on `io`, in a task of its own; where requests go.
///
/// Generic rather than on the connector's TLS-or-plain stream: as one type, every plain
/// connection carried room for a TLS session it never has, and the parts of it each request
/// touches lay further apart.
async fn drive<I>(io: I) -> Result<Sender, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // One buffer and one `send` per request, as the server side does (see
    // `demo_common::server`).
    let (sender, connection) = http1::Builder::new().writev(false).handshake(io).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Closes parked connections once they have been idle for [`IDLE_TIMEOUT`]; ends when none
/// are left.
async fn sweep(upstreams: Weak<Upstreams>) {
    loop {
        let next_expiry = {
            let Some(upstreams) = upstreams.upgrade() else {
                return;
            };
            let mut idle = upstreams.lock_idle();
            idle.keep_unexpired(|held| !held.sender.is_closed());
            match idle.parked.iter().map(|(_, since)| *since).min() {
                Some(oldest) => oldest + IDLE_TIMEOUT,
                None => {
                    idle.sweeping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next_expiry).await;
    }
}

/// The upstream side of one client connection. Parks its upstream connection when the client
/// connection ends.
pub(crate) struct ConnectionUpstream {
    upstreams: Arc<Upstreams>,
    /// Out of the slot while a request is on its way; back once the response head is in.
    held: Mutex<Option<Held>>,
}

impl Drop for ConnectionUpstream {
    fn drop(&mut self) {
        let held = self
            .held
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(held) = held {
            self.upstreams.park(held);
        }
    }
}

impl ConnectionUpstream {
    /// Sends `request` on the upstream connection of `upstream` (this client connection's, as
    /// a handle the returned future keeps), opening or unparking one when it has none. A
    /// request that could not even be written to a reused connection (the upstream closed it
    /// while idle) is sent once more on a new connection.
    ///
    /// The common case, a reused connection (this client connection's last one, or an idle one
    /// unparked) that is open and idle, is done here and now: the request is queued on it
    /// before this returns, and what is left to wait for is the answer. The returned future
    /// stays small that way, and holds no copy of the request (a request's future is copied as
    /// it moves, and written anew for every request; bench/README.md, "Fewer copies per
    /// request").
    pub(crate) fn send<U: UpstreamOf>(
        upstream: U,
        request: Request<StallGuard>,
    ) -> Sending<U, impl Future<Output = Answer> + Send + use<U>> {
        match upstream.take().or_else(|| upstream.upstreams.unpark()) {
            Some(mut held) if held.sender.is_ready() => Sending::Queued {
                answer: held.sender.try_send_request(request),
                held: Some(held),
                upstream,
            },
            held => Sending::Slow {
                future: Box::pin(Self::send_slowly(upstream, held, request)),
            },
        }
    }

    /// [`ConnectionUpstream::send`] for every other case: on `held`, a reused connection, once
    /// it is ready, else on a new connection.
    async fn send_slowly<U: UpstreamOf>(
        upstream: U,
        held: Option<Held>,
        mut request: Request<StallGuard>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let upstreams = &upstream.upstreams;
        let (mut held, mut reused) = match held {
            Some(held) => (held, true),
            None => (upstreams.connect_boxed().await?, false),
        };
        loop {
            // Waits for the previous response body to be read off the connection.
            if held.sender.ready().await.is_err() && reused {
                held = upstreams.connect_boxed().await?;
                reused = false;
                continue;
            }
            match held.sender.try_send_request(request).await {
                Ok(response) => {
                    upstream.put(held);
                    return Ok(response);
                }
                Err(error) if reused => {
                    request = unsent(error)?;
                    held = upstreams.connect_boxed().await?;
                    reused = false;
                }
                Err(error) => return Err(error.into_error().into()),
            }
        }
    }

    fn take(&self) -> Option<Held> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        held.filter(|held| !held.sender.is_closed())
    }

    fn put(&self, held: Held) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(held);
    }
}

/// The request a reused connection failed to take, handed back unsent (the upstream closed
/// the connection while it was idle), to go once more on a new connection; else the failure.
fn unsent(
    mut error: TrySendError<Request<StallGuard>>,
) -> Result<Request<StallGuard>, UpstreamError> {
    match error.take_message() {
        Some(request) => {
            tracing::debug!(
                error = %error.error(),
                "reused upstream connection failed; retrying on a new one"
            );
            Ok(request)
        }
        None => Err(error.into_error().into()),
    }
}

/// What hyper gives back for a request queued on a connection.
type Answer = Result<Response<Incoming>, TrySendError<Request<StallGuard>>>;

/// A client connection's [`ConnectionUpstream`], owned: what a request on its way holds to put
/// the upstream connection back once the answer is in.
pub(crate) trait UpstreamOf:
    Deref<Target = ConnectionUpstream> + Clone + Send + 'static
{
}

impl<U: Deref<Target = ConnectionUpstream> + Clone + Send + 'static> UpstreamOf for U {}

pin_project! {
    /// A request on its way to the upstream ([`ConnectionUpstream::send`]), until its answer's
    /// head is in.
    #[project = SendingProjection]
    pub(crate) enum Sending<U, A> {
        /// Queued on a reused connection, which is held here until the answer comes.
        Queued {
            #[pin]
            answer: A,
            // Taken once, when the answer is in (an `Option` to move it out of the pinned
            // variant).
            held: Option<Held>,
            upstream: U,
        },
        /// Every other case, and the retry of a request the reused connection handed back.
        Slow {
            future: BoxFuture<'static, Result<Response<Incoming>, UpstreamError>>,
        },
    }
}

impl<U: UpstreamOf, A: Future<Output = Answer>> Future for Sending<U, A> {
    type Output = Result<Response<Incoming>, UpstreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let retry = match self.as_mut().project() {
            SendingProjection::Queued {
                answer,
                held,
                upstream,
            } => match ready!(answer.poll(cx)) {
                Ok(response) => {
                    // Always there: `answer` completes once (hyper's future panics if polled
                    // again).
                    if let Some(held) = held.take() {
                        upstream.put(held);
                    }
                    return Poll::Ready(Ok(response));
                }
                Err(error) => match unsent(error) {
                    Ok(request) => ConnectionUpstream::send_slowly(upstream.clone(), None, request),
                    Err(error) => return Poll::Ready(Err(error)),
                },
            },
            SendingProjection::Slow { future } => return future.as_mut().poll(cx),
        };
        self.set(Sending::Slow {
            future: Box::pin(retry),
        });
        self.poll(cx)
    }
}
