//! The time a client connection may take to send each request head (the slow-client defence),
//! kept with one timer per connection instead of one per request.
//!
//! hyper's own header-read timeout arms a new tokio timer for every request head: allocated,
//! entered into the timer wheel while the connection waits, taken out once the head is in. At
//! 256 keep-alive connections that was 17 % of hello-cf's instructions per request
//! (bench/README.md). Here the connection's service marks the clock busy when a request comes
//! in, and the answer's body marks it idle when hyper is done with it, after which hyper reads
//! the next head; a watchdog task beside the connection wakes once per limit, reads the clock,
//! and ends a connection that has been idle for longer than the limit. A request costs two
//! stores and one clock read.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::Response;
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// `idle_since` while a request is being answered.
const BUSY: u64 = u64::MAX;

/// Whether a connection is answering a request or waiting for the next head, and since when.
/// Shared by the connection's task and its watchdog, both on one thread: relaxed atomics.
pub(crate) struct HeadClock {
    origin: Instant,
    /// Nanoseconds from `origin` to when the connection began waiting for a head, or [`BUSY`].
    idle_since: AtomicU64,
}

impl HeadClock {
    /// A clock that starts busy: the connection waits for nothing until [`HeadClock::idle`]
    /// (a TLS handshake has a limit of its own).
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            idle_since: AtomicU64::new(BUSY),
        })
    }

    /// The connection now waits for a request head.
    pub(crate) fn idle(&self) {
        let since = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(BUSY - 1);
        self.idle_since.store(since, Ordering::Relaxed);
    }

    fn busy(&self) {
        self.idle_since.store(BUSY, Ordering::Relaxed);
    }

    /// When the next head is due, or `None` while a request is being answered.
    fn head_due(&self, limit: Duration) -> Option<Instant> {
        match self.idle_since.load(Ordering::Relaxed) {
            BUSY => None,
            since => Some(self.origin + Duration::from_nanos(since) + limit),
        }
    }
}

/// How a watched connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    /// The connection's task ended by itself.
    Ended,
    /// It waited longer than the limit for a request head and was aborted.
    HeadTimedOut,
}

/// Waits for `serving`, the task serving a connection, to end; aborts it once the connection
/// has been idle on `clock` for longer than `limit`. Wakes once per `limit` while requests keep
/// coming, and when the task ends.
pub(crate) async fn watch(
    mut serving: JoinHandle<()>,
    clock: &HeadClock,
    limit: Duration,
) -> Watched {
    let mut check_at = Instant::now() + limit;
    loop {
        tokio::select! {
            _ = &mut serving => return Watched::Ended,
            () = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                match clock.head_due(limit) {
                    None => check_at = now + limit,
                    Some(due) if due > now => check_at = due,
                    Some(_) => {
                        serving.abort();
                        return Watched::HeadTimedOut;
                    }
                }
            }
        }
    }
}

/// `inner`, with each request marking `clock` busy and each answer's body marking it idle once
/// hyper has dropped it (written, or given up on).
#[derive(Clone)]
pub(crate) struct Clocked<S> {
    inner: S,
    clock: Arc<HeadClock>,
}

impl<S> Clocked<S> {
    pub(crate) fn new(inner: S, clock: Arc<HeadClock>) -> Self {
        Self { inner, clock }
    }
}

impl<S, R, B> tower::Service<R> for Clocked<S>
where
    S: tower::Service<R, Response = Response<B>>,
{
    type Response = Response<ClockedBody<B>>;
    type Error = S::Error;
    type Future = ClockedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.clock.busy();
        ClockedFuture {
            inner: self.inner.call(request),
            clock: Some(Arc::clone(&self.clock)),
        }
    }
}

pin_project! {
    /// The inner service's answer, its body handed the clock.
    pub(crate) struct ClockedFuture<F> {
        #[pin]
        inner: F,
        clock: Option<Arc<HeadClock>>,
    }
}

impl<F, B, E> Future for ClockedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ClockedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx))?;
        let clock = this
            .clock
            .take()
            .expect("ClockedFuture polled after it completed");
        Poll::Ready(Ok(answer.map(|inner| ClockedBody {
            inner,
            idle_on_drop: IdleOnDrop(clock),
        })))
    }
}

pin_project! {
    /// An answer's body, passed through; the connection is idle once hyper drops it.
    pub(crate) struct ClockedBody<B> {
        #[pin]
        inner: B,
        idle_on_drop: IdleOnDrop,
    }
}

struct IdleOnDrop(Arc<HeadClock>);

impl Drop for IdleOnDrop {
    fn drop(&mut self) {
        self.0.idle();
    }
}

impl<B: Body> Body for ClockedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_aborted_at_its_limit_and_not_before() {
        let limit = Duration::from_secs(10);
        let clock = HeadClock::new();
        let started = Instant::now();
        clock.idle();
        let serving = tokio::spawn(std::future::pending::<()>());
        assert_eq!(watch(serving, &clock, limit).await, Watched::HeadTimedOut);
        assert_eq!(started.elapsed(), limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_aborted_and_its_limit_restarts_when_idle() {
        let limit = Duration::from_secs(10);
        let clock = HeadClock::new();
        clock.idle();
        let busy_clock = Arc::clone(&clock);
        // Busy from 5 s to 35 s (three limits long), then idle: due at 45 s.
        let answering = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            busy_clock.busy();
            tokio::time::sleep(Duration::from_secs(30)).await;
            busy_clock.idle();
            std::future::pending::<()>().await;
        });
        let started = Instant::now();
        assert_eq!(watch(answering, &clock, limit).await, Watched::HeadTimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_ends_by_itself_is_not_waited_for() {
        let clock = HeadClock::new();
        clock.idle();
        let started = Instant::now();
        let serving = tokio::spawn(tokio::time::sleep(Duration::from_secs(3)));
        let watched = watch(serving, &clock, Duration::from_secs(10)).await;
        assert_eq!(watched, Watched::Ended);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
