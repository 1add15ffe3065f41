//! Bodies streamed through the proxy, frame by frame, with a bound on how long a body may
//! make no progress: a stalled peer ends the stream instead of holding it forever.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use demo_common::server::BodyReading;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Which way a body flows, for log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream.
    Request,
    /// From the upstream to the client.
    Response,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Request => "request",
            Direction::Response => "response",
        })
    }
}

/// Why a streamed body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0} body broke off: {1}")]
    Broken(Direction, #[source] hyper::Error),
    #[error("{0} body stalled: no data for {1:?}")]
    Stalled(Direction, Duration),
}

impl BodyError {
    pub(crate) fn direction(&self) -> Direction {
        match self {
            BodyError::Broken(direction, _) | BodyError::Stalled(direction, _) => *direction,
        }
    }
}

/// An incoming body passed on unchanged, which fails once it makes no progress for `idle`.
///
/// The timer is created only when the body first has to wait, and re-armed only after
/// progress, so bodies that arrive at once cost no timer at all.
pub struct StallGuard {
    inner: Incoming,
    idle: Duration,
    direction: Direction,
    timer: Option<Pin<Box<Sleep>>>,
    progressed: bool,
    /// A request body keeps its client connection busy until it is done (dropped once sent).
    _reading: Option<BodyReading>,
}

impl StallGuard {
    pub(crate) fn new(inner: Incoming, idle: Duration, direction: Direction) -> Self {
        Self {
            inner,
            idle,
            direction,
            timer: None,
            progressed: false,
            _reading: None,
        }
    }

    /// Holds `reading` until the body is dropped: a client connection's head timeout does not
    /// run while its request body is still being forwarded.
    pub(crate) fn holding(mut self, reading: BodyReading) -> Self {
        self._reading = Some(reading);
        self
    }

    /// Called when the inner body is not ready: Ready when the body has stalled.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let idle = self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if std::mem::take(&mut self.progressed) {
            timer.as_mut().reset(Instant::now() + idle);
        }
        timer.as_mut().poll(cx)
    }
}

impl Body for StallGuard {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.progressed = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                let error = BodyError::Broken(this.direction, error);
                log_cut(&error);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.poll_stalled(cx));
                let error = BodyError::Stalled(this.direction, this.idle);
                log_cut(&error);
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One line per cut body: a warning when the upstream failed, debug when the client did.
fn log_cut(error: &BodyError) {
    match error.direction() {
        Direction::Response => tracing::warn!("cutting the response short: upstream {error}"),
        Direction::Request => tracing::debug!("client {error}"),
    }
}

/// What the forwarding port answers with: the upstream's body, or a short message of the
/// proxy's own (502, 504, ...).
pub struct ProxyBody(Kind);

enum Kind {
    Upstream(StallGuard),
    Message(Option<Bytes>),
}

impl ProxyBody {
    pub(crate) fn upstream(body: StallGuard) -> Self {
        Self(Kind::Upstream(body))
    }

    pub(crate) fn message(text: impl Into<Bytes>) -> Self {
        Self(Kind::Message(Some(text.into())))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.0 {
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Message(text) => Poll::Ready(text.take().map(|text| Ok(Frame::data(text)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Message(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Upstream(body) => body.size_hint(),
            Kind::Message(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |text| text.len() as u64))
            }
        }
    }
}

impl fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Upstream(_) => f.write_str("ProxyBody::Upstream"),
            Kind::Message(text) => write!(f, "ProxyBody::Message({text:?})"),
        }
    }
}
