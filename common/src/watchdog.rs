//! One watchdog task beside each connection keeps the connection's three clocks, so that none
//! costs its requests a timer or a wake-up of their own: the time the client may take to send
//! each request head (the slow-client defence), the drain, and the limit on the time to answer
//! each request.
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
//!
//! The drain and the answer limit ride on the same watchdog: on the server's signal it asks the
//! connection's task, through the clock, to finish its request and close; where the server has
//! an answer limit, it marks a request overdue in the clock and wakes the connection's task,
//! whose service answers it itself. A request costs the clock one more store, where the proxy's
//! re-armed timer and hyper-util's drain watch (a channel polled on every poll of the
//! connection) each cost instructions and cache misses on every request (bench/README.md, "One
//! watchdog per connection").
//!
//! The clock is read only where a time is recorded: when a request comes in, where there is an
//! answer limit (its due time), and when the connection turns idle; at most two reads per
//! request, as many as hyper's date header costs it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::Response;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// `idle_since` while a request is being answered.
const BUSY: u64 = u64::MAX;
/// `idle_since` once the answer is in hyper's write buffer, until the buffer is flushed.
const ANSWERED: u64 = u64::MAX - 1;
/// `idle_since` once the answer is out while a request body is still being read.
const FLUSHED: u64 = u64::MAX - 2;

/// `answer_due` while no request waits for its answer.
const NO_ANSWER_DUE: u64 = u64::MAX;
/// `answer_due` once the watchdog has found the request late.
const OVERDUE: u64 = u64::MAX - 1;

/// Whether a connection is answering a request or waiting for the next head, and since when.
/// Shared by the connection's task, its watchdog and the tasks reading its request bodies.
pub(crate) struct HeadClock {
    origin: Instant,
    /// Nanoseconds from `origin` to when the connection began waiting for a head, or
    /// [`BUSY`], [`ANSWERED`] or [`FLUSHED`].
    idle_since: AtomicU64,
    /// When the request being answered is due (nanoseconds from `origin`), [`OVERDUE`], or
    /// [`NO_ANSWER_DUE`]; kept only where the server limits the time to answer.
    answer_due: AtomicU64,
    /// Request bodies being read ([`BodyReading`] guards alive).
    bodies: AtomicU32,
    /// Set by the watchdog when the server drains.
    draining: AtomicBool,
    /// The connection's task, woken to drain or to answer an overdue request. Set when it
    /// changes, which for a task is once (see [`HeadClock::polled`]).
    task: Mutex<Option<Waker>>,
}

impl HeadClock {
    /// A clock that starts busy: the connection waits for nothing until [`HeadClock::idle`]
    /// (a TLS handshake has a limit of its own).
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            idle_since: AtomicU64::new(BUSY),
            answer_due: AtomicU64::new(NO_ANSWER_DUE),
            bodies: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            task: Mutex::new(None),
        })
    }

    /// The connection now waits for a request head.
    pub(crate) fn idle(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
    }

    /// Nanoseconds from `origin` to now.
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(FLUSHED - 1)
    }

    /// The instant `nanos` after `origin`.
    fn instant(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// A request came in; with a limit on the time to answer it, due then.
    fn busy(&self, answer_limit: Option<Duration>) {
        self.idle_since.store(BUSY, Ordering::Relaxed);
        if let Some(limit) = answer_limit {
            let due = self
                .now()
                .saturating_add(u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX));
            self.answer_due
                .store(due.min(OVERDUE - 1), Ordering::Relaxed);
        }
    }

    /// The service has answered the request: nothing is due.
    fn answer_made(&self) {
        self.answer_due.store(NO_ANSWER_DUE, Ordering::Relaxed);
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
        // Most calls find the connection still busy (a request body done before its answer
        // is out): the clock is read only when there is an idle time to record.
        if self.idle_since.load(Ordering::SeqCst) != FLUSHED {
            return;
        }
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
            since => Some(later(self.instant(since), limit)),
        }
    }

    /// When the request being answered is due, or `None` (none is, or it is overdue already).
    fn answer_due(&self) -> Option<(u64, Instant)> {
        match self.answer_due.load(Ordering::Relaxed) {
            NO_ANSWER_DUE | OVERDUE => None,
            due => Some((due, self.instant(due))),
        }
    }

    /// Marks the request that was due at `due` overdue, unless it has been answered (or
    /// another has come) since, and wakes the connection's task.
    fn mark_overdue(&self, due: u64) {
        let marked =
            self.answer_due
                .compare_exchange(due, OVERDUE, Ordering::Relaxed, Ordering::Relaxed);
        if marked.is_ok() {
            self.wake_task();
        }
    }

    /// The connection's task is polling its connection with `waker`: the one to wake from now
    /// on. `known` is the waker the task last gave (`None` at first): the clock is written only
    /// when it changes, so a poll costs the clock one read. Whether the connection is to drain.
    pub(crate) fn polled(&self, known: &mut Option<Waker>, waker: &Waker) -> bool {
        if known.as_ref().is_none_or(|known| !known.will_wake(waker)) {
            *known = Some(waker.clone());
            *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        }
        self.draining.load(Ordering::SeqCst)
    }

    /// Asks the connection to finish its request and close.
    fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.wake_task();
    }

    fn wake_task(&self) {
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = &*task {
            task.wake_by_ref();
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

    /// Whether the request being answered has taken longer than the server's limit on the
    /// time to answer ([`crate::server::ServerOptions::answer_timeout`]); the connection's
    /// task is woken when it turns true. Never true without that limit.
    pub fn answer_overdue(&self) -> bool {
        self.0.answer_due.load(Ordering::Relaxed) == OVERDUE
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

/// The limits a connection's watchdog keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// For each request head, from when the connection began waiting for it.
    pub(crate) head: Duration,
    /// For the service's answer to each request, from when its head came in.
    pub(crate) answer: Option<Duration>,
}

/// Waits for `serving`, the task serving a connection, to end; aborts it once the connection
/// has been idle on `clock` for longer than the head limit; marks a request overdue in `clock`
/// once it has waited longer than the answer limit; asks the connection to drain once
/// `shutdown` says so (or its sender is gone). Wakes once per limit while requests keep coming
/// (the shorter limit), when a request is due, at the shutdown and when the task ends.
pub(crate) async fn watch(
    mut serving: JoinHandle<()>,
    clock: &HeadClock,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> Watched {
    // A zero limit would re-arm at once, over and over, while a request is answered.
    let head_limit = limits.head.max(Duration::from_millis(1));
    let answer_limit = limits
        .answer
        .map(|limit| limit.max(Duration::from_millis(1)));
    let mut check_at = later(Instant::now(), head_limit);
    let mut draining = false;
    loop {
        // A request that comes in from now on is due one answer limit from now at the
        // earliest: looking at least that often, the watchdog finds each in time without being
        // told of it.
        let mut wake_at = check_at;
        let mut answer_due = None;
        if let Some(limit) = answer_limit {
            wake_at = wake_at.min(later(Instant::now(), limit));
            answer_due = clock.answer_due();
            if let Some((_, due)) = answer_due {
                wake_at = wake_at.min(due);
            }
        }
        tokio::select! {
            // A task that ended by itself is not reported as timed out.
            biased;
            _ = &mut serving => return Watched::Ended,
            _ = shutdown.changed(), if !draining => {
                draining = true;
                clock.drain();
            }
            () = tokio::time::sleep_until(wake_at) => {
                let now = Instant::now();
                if let Some((due, at)) = answer_due
                    && at <= now
                {
                    clock.mark_overdue(due);
                }
                if now < check_at {
                    continue;
                }
                match clock.head_due(head_limit) {
                    None => check_at = later(now, head_limit),
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
/// hyper calls the service only once a request head is in, and only after the previous answer's
/// body is gone, so the marks of one connection come in order.
pub(crate) struct Clocked<S> {
    inner: S,
    clock: Arc<HeadClock>,
    answer_limit: Option<Duration>,
}

impl<S> Clocked<S> {
    pub(crate) fn new(inner: S, clock: Arc<HeadClock>, answer_limit: Option<Duration>) -> Self {
        Self {
            inner,
            clock,
            answer_limit,
        }
    }
}

impl<S, R, B> hyper::service::Service<R> for Clocked<S>
where
    S: hyper::service::Service<R, Response = Response<B>>,
{
    type Response = Response<ClockedBody<B>>;
    type Error = S::Error;
    type Future = ClockedFuture<S::Future>;

    fn call(&self, request: R) -> Self::Future {
        self.clock.busy(self.answer_limit);
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
        let answer = ready!(this.inner.poll(cx));
        let clock = this
            .clock
            .take()
            .expect("ClockedFuture polled after it completed");
        clock.answer_made();
        let answer = answer?;
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
    const HEAD_ONLY: Limits = Limits {
        head: LIMIT,
        answer: None,
    };

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
        let (_shutdown, shutdown_seen) = watch::channel(false);
        let watched = watch(serving, clock, HEAD_ONLY, shutdown_seen).await;
        assert_eq!(watched, Watched::HeadTimedOut);
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
            busy_clock.busy(None);
            tokio::time::sleep(Duration::from_secs(30)).await;
            busy_clock.idle();
        };
        assert_eq!(cut_after(&clock, marks).await, Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_counts_as_busy_until_the_socket_has_taken_it() {
        let clock = HeadClock::new();
        clock.busy(None);
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
        clock.busy(None);
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
        let (_shutdown, shutdown_seen) = watch::channel(false);
        let watched = watch(serving, &clock, HEAD_ONLY, shutdown_seen).await;
        assert_eq!(watched, Watched::Ended);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
