//! Accepted connections dealt in turn to one single-threaded runtime per CPU, each on a thread
//! of its own, so that a connection and the tasks it starts (the proxy's upstream connection
//! among them) live their whole life on one thread, as nginx's worker processes and HAProxy's
//! threads keep theirs.
//!
//! Why not tokio's multi-threaded runtime: its work stealing moves a connection's tasks between
//! threads, and on two CPUs shared with the load generator and the upstream that cost the proxy
//! a sixth of its throughput in the unpinned bench, with runs that swung between two speeds
//! (bench/README.md, "Connections kept on one thread"). What it gives up: no thread takes over
//! another's ready connections, so while the kernel leaves a thread waiting for a CPU its
//! connections wait too (hello-cf's p99 rose there, with the CPUs shared with the load).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The runtimes connections are dealt to: the caller's own first, then one per extra thread.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    threads: Vec<WorkerThread>,
}

/// An extra thread, and what tells it to stop.
struct WorkerThread {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Workers {
    /// `count` runtimes in all (at least one): the runtime this is called on, plus `count - 1`
    /// threads named `name-1`, `name-2`, … each running a single-threaded runtime of its own.
    /// A thread that cannot start (no memory, a thread limit) is logged, and the connections
    /// are dealt to the runtimes that did.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(count: usize, name: &str) -> Self {
        let mut workers = Self {
            handles: vec![Handle::current()],
            next: AtomicUsize::new(0),
            threads: Vec::new(),
        };
        for index in 1..count {
            match worker_thread(&format!("{name}-{index}")) {
                Ok((handle, thread)) => {
                    workers.handles.push(handle);
                    workers.threads.push(thread);
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        serving_threads = workers.count(),
                        "cannot start a serving thread; serving on those started"
                    );
                    break;
                }
            }
        }
        workers
    }

    /// How many runtimes connections are dealt to.
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Hands `stream` to the next runtime in turn, where `serve` runs with it as a task.
    pub fn spawn<S, F>(&self, stream: TcpStream, serve: S)
    where
        S: FnOnce(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        if index == 0 {
            tokio::spawn(serve(stream));
            return;
        }
        // A socket is registered with one runtime's I/O driver: taken out of this one's here,
        // into the worker's there.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot hand a connection to its worker; dropped");
                return;
            }
        };
        self.handles[index].spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(error) => {
                    tracing::warn!(%error, "worker cannot take a connection; dropped");
                }
            }
        });
    }
}

/// A thread running a single-threaded runtime until told to stop; dropping the runtime then
/// drops whatever tasks are left on it.
fn worker_thread(name: &str) -> io::Result<(Handle, WorkerThread)> {
    let runtime = crate::runtime::single_threaded()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            runtime.block_on(async {
                // Told to stop, or the `Workers` is gone.
                let _ = stopped.await;
            });
        })?;
    Ok((handle, WorkerThread { stop, thread }))
}

impl Drop for Workers {
    /// Stops the worker threads; each drops the tasks still on its runtime. Not joined when
    /// dropped inside a runtime, where waiting would block the caller's other tasks.
    fn drop(&mut self) {
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut self.threads)
            .into_iter()
            .map(|worker| {
                let _ = worker.stop.send(());
                worker.thread
            })
            .collect();
        if Handle::try_current().is_err() {
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::thread::ThreadId;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;

    /// Each accepted connection reports the thread serving it, then echoes one byte; the
    /// threads in the order the connections were handed over.
    async fn threads_serving(workers: &Workers, connections: usize) -> Vec<ThreadId> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (report, mut reports) = mpsc::unbounded_channel();
        let mut clients = Vec::new();
        for index in 0..connections {
            let client = TcpStream::connect(address).await.expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            let report = report.clone();
            workers.spawn(stream, move |mut stream| async move {
                let _ = report.send((index, std::thread::current().id()));
                let mut byte = [0u8; 1];
                if stream.read_exact(&mut byte).await.is_ok() {
                    let _ = stream.write_all(&byte).await;
                }
            });
            clients.push(client);
        }
        for client in &mut clients {
            client.write_all(b"x").await.expect("write");
            let mut byte = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut byte))
                .await
                .expect("echo within 5 s")
                .expect("echo");
            assert_eq!(&byte, b"x");
        }
        let mut threads = Vec::new();
        for _ in 0..connections {
            let report = tokio::time::timeout(Duration::from_secs(5), reports.recv())
                .await
                .expect("report within 5 s")
                .expect("report");
            threads.push(report);
        }
        // Reports from different threads arrive in any order.
        threads.sort_unstable_by_key(|(index, _)| *index);
        threads.into_iter().map(|(_, thread)| thread).collect()
    }

    #[tokio::test]
    async fn connections_are_dealt_to_every_worker_in_turn() {
        let workers = Workers::start(3, "test-worker");
        assert_eq!(workers.count(), 3);
        let threads = threads_serving(&workers, 6).await;
        let distinct: HashSet<_> = threads.iter().collect();
        assert_eq!(distinct.len(), 3, "three threads serve: {threads:?}");
        assert!(threads.contains(&std::thread::current().id()));
        // In turn: the fourth connection goes where the first went, and so on.
        assert_eq!(threads[..3], threads[3..]);
    }

    #[tokio::test]
    async fn one_worker_serves_on_the_callers_runtime() {
        let workers = Workers::start(1, "test-worker");
        let threads = threads_serving(&workers, 2).await;
        assert_eq!(threads, vec![std::thread::current().id(); 2]);
    }

    #[test]
    fn dropped_outside_a_runtime_the_worker_threads_end() {
        let runtime = crate::runtime::single_threaded().unwrap();
        let workers = runtime.block_on(async { Workers::start(2, "test-worker") });
        drop(runtime);
        // The drop joins the worker thread; done on a thread of its own so that a worker that
        // never stops fails the test instead of hanging it.
        let (dropped, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(workers);
            let _ = dropped.send(());
        });
        done.recv_timeout(Duration::from_secs(5))
            .expect("the worker thread ends within 5 s");
    }
}
