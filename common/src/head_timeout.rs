//! The time a client connection may take to send each request head (the slow-client defence),
//! kept with one timer per connection instead of one per request.
//!
//! hyper's own header-read timeout arms a new tokio timer for every request head: allocated,
//! entered into the timer wheel while the connection waits, taken out once the head is in. At
//! 256 keep-alive connections that was 14 % of hello-cf's instructions per request
//! (bench/README.md). Here the connection's service marks the clock busy when a request comes
//! in; the answer's body marks it answered when hyper drops it (its last bytes buffered); the
//! connection's socket marks it idle at the next completed flush, which is when hyper turns to
//! reading the next head and would have armed its timer. A watchdog task beside the connection
//! wakes once per limit, reads the clock, and ends a connection idle for longer than the limit.
//!
//! A request body still being read after its answer has gone out (an upstream that answered the
//! proxy early and keeps reading the upload) holds the connection busy too, where the service
//! says so with [`ConnectionClock::body_reading`]: hyper reads the next head only after that
//! body, and started its timer only then.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::Response;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// `idle_since` while a request is being answered.
const BUSY: u64 = u64::MAX;
/// `idle_since` once the answer is in hyper's write buffer, until the buffer is flushed.
const ANSWERED: u64 = u64::MAX - 1;
/// `idle_since` once the answer is out while a request body is still being read.
const FLUSHED: u64 = u64::MAX - 2;

/// Whether a connection is answering a request or waiting for the next head, and since when.
/// Shared by the connection's task, its watchdog and the tasks reading its request bodies.
pub(crate) struct HeadClock {
    origin: Instant,
    /// Nanoseconds from `origin` to when the connection began waiting for a head, or [`BUSY`],
    /// [`ANSWERED`] or [`FLUSHED`].
    idle_since: AtomicU64,
    /// Request bodies being read ([`BodyReading`] guards alive).
    bodies: AtomicU32,
}

impl HeadClock {
    /// A clock that starts busy: the connection waits for nothing until [`HeadClock::idle`]
    /// (a TLS handshake has a limit of its own).
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            idle_since: AtomicU64::new(BUSY),
            bodies: AtomicU32::new(0),
        })
    }

    /// The connection now waits for a request head.
    pub(crate) fn idle(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(FLUSHED - 1)
    }

    fn busy(&self) {
        self.idle_since.store(BUSY, Ordering::Relaxed);
    }

    fn answered(&self) {
        self.idle_since.store(ANSWERED, Ordering::Relaxed);
    }

    /// The socket has taken everything written to it: an answered connection is now idle,
    /// unless a request body is still being read.
    fn flushed(&self) {
        if self.idle_since.load(Ordering::Relaxed) != ANSWERED {
            return;
        }
        // Flushed and the last body done may be marked on two threads (a multi-threaded
        // runtime): each sets its half, then looks at the other's, sequentially consistent, so
        // whichever comes second turns the connection idle.
        let _ =
            self.idle_since
                .compare_exchange(ANSWERED, FLUSHED, Ordering::SeqCst, Ordering::SeqCst);
        if self.bodies.load(Ordering::SeqCst) == 0 {
            self.idle_once_flushed();
        }
    }

    fn body_started(&self) {
        self.bodies.fetch_add(1, Ordering::SeqCst);
    }

    fn body_done(&self) {
        if self.bodies.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle_once_flushed();
        }
    }

    fn idle_once_flushed(&self) {
        let _ = self.idle_since.compare_exchange(
            FLUSHED,
            self.now(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// When the next head is due, or `None` while a request is being answered.
    fn head_due(&self, limit: Duration) -> Option<Instant> {
        match self.idle_since.load(Ordering::Relaxed) {
            BUSY | ANSWERED | FLUSHED => None,
            since => Some(later(self.origin + Duration::from_nanos(since), limit)),
        }
    }
}

/// `at + by`, or a year after `at` where that would overflow the clock.
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .unwrap_or_else(|| at + Duration::from_secs(365 * 24 * 3600))
}

/// A connection's head clock as its service sees it (`Server::serve_connections` hands one to
/// each connection's service).
#[derive(Clone)]
pub struct ConnectionClock(Arc<HeadClock>);

impl ConnectionClock {
    pub(crate) fn new(clock: Arc<HeadClock>) -> Self {
        Self(clock)
    }

    /// Holds the connection busy while the returned guard lives: for a request body the service
    /// reads, which may outlast its answer. Drop the guard once the body's last byte is read
    /// (`is_end_stream`): hyper reports the end of a body of known length only when it next
    /// reads the connection.
    pub fn body_reading(&self) -> BodyReading {
        self.0.body_started();
        BodyReading(Arc::clone(&self.0))
    }
}

/// A request body being read; see [`ConnectionClock::body_reading`].
pub struct BodyReading(Arc<HeadClock>);

impl Drop for BodyReading {
    fn drop(&mut self) {
        self.0.body_done();
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
    // A zero limit would re-arm at once, over and over, while a request is answered.
    let limit = limit.max(Duration::from_millis(1));
    let mut check_at = later(Instant::now(), limit);
    loop {
        tokio::select! {
            // A task that ended by itself is not reported as timed out.
            biased;
            _ = &mut serving => return Watched::Ended,
            () = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                match clock.head_due(limit) {
                    None => check_at = later(now, limit),
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

/// `inner`, with each request marking `clock` busy and each answer's body marking it answered
/// once hyper has dropped it (its bytes buffered, or given up on).
///
/// hyper calls the service (through tower's `Oneshot`: `poll_ready`, then `call`) only once a
/// request head is in, and only after the previous answer's body is gone, so the marks of one
/// connection come in order.
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
        // A head is in: busy even while the inner service is not ready to take it.
        self.clock.busy();
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // Busy since `poll_ready`, which tower's contract puts before every call.
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
            answered_on_drop: AnsweredOnDrop(clock),
        })))
    }
}

pin_project! {
    /// An answer's body, passed through; the connection is answered once hyper drops it.
    pub(crate) struct ClockedBody<B> {
        #[pin]
        inner: B,
        answered_on_drop: AnsweredOnDrop,
    }
}

struct AnsweredOnDrop(Arc<HeadClock>);

impl Drop for AnsweredOnDrop {
    fn drop(&mut self) {
        self.0.answered();
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

pin_project! {
    /// A connection's socket, passed through; each completed flush turns an answered
    /// connection idle. (hyper flushes the socket once its write buffer is empty, and reads the
    /// next head only after that.)
    pub(crate) struct ClockedIo<T> {
        #[pin]
        inner: T,
        clock: Arc<HeadClock>,
    }
}

impl<T> ClockedIo<T> {
    pub(crate) fn new(inner: T, clock: Arc<HeadClock>) -> Self {
        Self { inner, clock }
    }
}

impl<T: AsyncRead> AsyncRead for ClockedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for ClockedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let flushed = ready!(this.inner.poll_flush(cx));
        if flushed.is_ok() {
            this.clock.flushed();
        }
        Poll::Ready(flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    /// Serves with `marks` (then forever) under the watchdog; how long until it cut the
    /// connection for a late head.
    async fn cut_after(
        clock: &HeadClock,
        marks: impl Future<Output = ()> + Send + 'static,
    ) -> Duration {
        let started = Instant::now();
        let serving = tokio::spawn(async move {
            marks.await;
            std::future::pending::<()>().await;
        });
        assert_eq!(watch(serving, clock, LIMIT).await, Watched::HeadTimedOut);
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_aborted_at_its_limit_and_not_before() {
        let clock = HeadClock::new();
        clock.idle();
        assert_eq!(cut_after(&clock, async {}).await, LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_aborted_and_its_limit_restarts_when_idle() {
        let clock = HeadClock::new();
        clock.idle();
        let busy_clock = Arc::clone(&clock);
        // Busy from 5 s to 35 s (three limits long), then idle: due at 45 s.
        let marks = async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            busy_clock.busy();
            tokio::time::sleep(Duration::from_secs(30)).await;
            busy_clock.idle();
        };
        assert_eq!(cut_after(&clock, marks).await, Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_counts_as_busy_until_the_socket_has_taken_it() {
        let clock = HeadClock::new();
        clock.busy();
        clock.answered();
        let flushing_clock = Arc::clone(&clock);
        // A slow reader takes 25 s to take the answer off hyper's buffer: due at 35 s.
        let marks = async move {
            tokio::time::sleep(Duration::from_secs(25)).await;
            flushing_clock.flushed();
        };
        assert_eq!(cut_after(&clock, marks).await, Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_read_after_its_answer_holds_the_connection_busy_until_done() {
        let clock = HeadClock::new();
        clock.busy();
        let reading = ConnectionClock::new(Arc::clone(&clock)).body_reading();
        clock.answered();
        clock.flushed();
        // The body is done 25 s after its answer went out: due at 35 s.
        let marks = async move {
            tokio::time::sleep(Duration::from_secs(25)).await;
            drop(reading);
        };
        assert_eq!(cut_after(&clock, marks).await, Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_ends_by_itself_is_not_waited_for() {
        let clock = HeadClock::new();
        clock.idle();
        let started = Instant::now();
        let serving = tokio::spawn(tokio::time::sleep(Duration::from_secs(3)));
        let watched = watch(serving, &clock, LIMIT).await;
        assert_eq!(watched, Watched::Ended);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
