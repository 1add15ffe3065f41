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

/// Tasks the runtime polls between two checks for I/O while tasks are ready; tokio's default
/// is 61.
///
/// A forwarded request takes four task polls (the client connection's task twice, its upstream
/// connection's task twice), so at the default a busy proxy asked the kernel for events every
/// 15 requests or so, where nginx asks once per 60 or more: at 256 connections, 0.08
/// `epoll_wait` calls per request against 0.02 with this setting (`bench/profile.sh`), and 2-3 %
/// more requests per second (bench/README.md, "Fewer checks for I/O"). When no task is ready
/// the runtime waits for I/O at once, whatever this says, so a lightly loaded server answers as
/// soon as before; a task never waits for I/O behind more than this many polls.
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
}
