//! The async runtime every program runs on, and how many serving threads it may add.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::process::ExitCode;

use tokio::runtime::{Builder, Runtime};

/// The CPUs this process may use: a `taskset` affinity or a Kubernetes CPU limit (the standard
/// library reads the cgroup quota in whole cores, rounded down, at least one; the proxy's
/// 500m is one), not the machine's CPUs. A server serves with one thread per CPU
/// ([`crate::workers`]).
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// The most serving threads `--workers` accepts.
pub const MAX_WORKERS: u16 = 1024;

/// The serving threads for a `--workers` setting: the setting, else one per CPU this process
/// may use ([`available_cpus`]).
pub fn serving_threads(setting: Option<u16>) -> usize {
    setting.map_or_else(available_cpus, usize::from)
}

/// Runs a program's `main` future to its exit code on tokio's single-threaded runtime; a
/// runtime that cannot start is logged and exits 1.
///
/// Single-threaded because the work that wants more CPUs, serving connections, is spread by
/// the server itself, one single-threaded runtime per CPU ([`crate::workers`]); the rest
/// (signals, the admin port, the caller's loop) is light.
pub fn block_on(main: impl Future<Output = ExitCode>) -> ExitCode {
    match single_threaded() {
        Ok(runtime) => runtime.block_on(main),
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            ExitCode::FAILURE
        }
    }
}

/// Task polls between two checks for I/O while tasks are ready (tokio's default: 61).
///
/// A request through the proxy takes four task polls (its client connection's task twice, the
/// upstream connection's task twice), so at the default a busy proxy asked the kernel for
/// events every 12 requests or so where HAProxy asks once per 50: at 256 connections 0.08
/// `epoll_wait` calls per request, 0.02 with this setting, as HAProxy (bench/README.md, "Fewer
/// checks for I/O"). A runtime with no task ready waits for I/O at once whatever this
/// says, so a lightly loaded server answers as soon as before; under load, ready I/O waits
/// behind at most this many polls.
const EVENT_INTERVAL: u32 = 256;

/// A single-threaded runtime with timers and I/O, as every program and serving thread runs.
pub fn single_threaded() -> io::Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .event_interval(EVENT_INTERVAL)
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn a_workers_setting_wins_over_the_cpu_count() {
        assert_eq!(serving_threads(Some(3)), 3);
        assert_eq!(serving_threads(None), available_cpus());
    }

    #[test]
    fn the_runtime_runs_the_main_future_with_its_timers_and_tasks() {
        let answer = AtomicU32::new(0);
        block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let value = tokio::spawn(async { 42 }).await.expect("task completes");
            answer.store(value, Ordering::SeqCst);
            ExitCode::SUCCESS
        });
        assert_eq!(answer.load(Ordering::SeqCst), 42);
    }

    /// With fewer checks for I/O, a task that is always ready must still not starve the
    /// sockets: a connection is answered while another task wakes itself at every poll.
    #[test]
    fn sockets_are_served_while_another_task_is_always_ready() {
        use std::future::poll_fn;
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        use std::task::Poll;

        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{TcpListener, TcpStream};

        const MOST_POLLS: u64 = 100_000_000;
        let runtime = single_threaded().expect("runtime starts");
        let (answered, busy_polls) = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            let done = Arc::new(AtomicBool::new(false));
            // Always in the run queue (it wakes itself), so the runtime is never idle and
            // checks for I/O only every `EVENT_INTERVAL` polls; bounded in case it never ends.
            let busy = tokio::spawn({
                let done = done.clone();
                async move {
                    let mut polls = 0_u64;
                    poll_fn(|cx| {
                        polls += 1;
                        if done.load(Ordering::Relaxed) || polls >= MOST_POLLS {
                            Poll::Ready(polls)
                        } else {
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                    })
                    .await
                }
            });
            let echo = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut byte = [0_u8; 1];
                socket.read_exact(&mut byte).await.expect("read");
                socket.write_all(&byte).await.expect("write");
            });
            let mut client = TcpStream::connect(address).await.expect("connect");
            client.write_all(b"x").await.expect("send");
            let mut answer = [0_u8; 1];
            let answered = client.read_exact(&mut answer).await.is_ok() && answer == *b"x";
            done.store(true, Ordering::Relaxed);
            echo.await.expect("echo task");
            (answered, busy.await.expect("busy task"))
        });
        assert!(answered, "the connection is echoed");
        assert!(
            busy_polls < MOST_POLLS,
            "the socket waited until the busy task gave up after {busy_polls} polls"
        );
    }
}
