//! The schedule measurement's upstream: a loopback HTTP server that notes when each request
//! arrives and answers after a fixed delay, like a remote service that takes a while.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use demo_common::server::{Server, ServerOptions};
use tokio::sync::oneshot;

/// The body it answers with: hello-cf's v1 greeting (31 bytes), so that the callers print
/// their usual line.
pub const BODY: &str = "Hello K8s, from CF v1 service!\n";

/// A running recorder; stops when dropped.
pub struct Recorder {
    /// Held for the server task; dropping it cancels the server.
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Recorder {
    /// Starts on a loopback port picked by the OS, on a runtime of its own with one worker
    /// thread, so the synchronous bench around it needs no runtime.
    pub fn start(delay: Duration) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot build the recorder's runtime")?;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let server = runtime
            .block_on(Server::bind(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                ServerOptions::default(),
            ))
            .context("cannot bind the recorder")?;
        let addr = server.local_addr()?;
        let noted = Arc::clone(&arrivals);
        let app = Router::new().route(
            "/",
            get(move || {
                // Noted before anything else, so the figure is the arrival and not the answer.
                noted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Instant::now());
                async move {
                    tokio::time::sleep(delay).await;
                    BODY
                }
            }),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        runtime.spawn(server.serve(app, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            _runtime: runtime,
            addr,
            arrivals,
            stop: Some(stop),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Arrivals so far.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Arrival instants noted since the last call, oldest first.
    pub fn take(&self) -> Vec<Instant> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Instant>> {
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Nothing is in flight when a run ends; the runtime's drop then cancels the server.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_each_arrival_and_answers_after_the_delay() {
        let recorder = Recorder::start(Duration::from_millis(50)).expect("starts");
        let before = Instant::now();
        let answer = crate::probe::get(recorder.addr(), Duration::from_secs(10)).expect("answers");
        let took = before.elapsed();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, BODY.as_bytes());
        assert!(took >= Duration::from_millis(50), "answered after {took:?}");
        let arrivals = recorder.take();
        assert_eq!(arrivals.len(), 1);
        assert!(arrivals[0] >= before && arrivals[0] <= before + took);
        assert_eq!(recorder.count(), 0, "take empties the record");
    }
}
