//! The async runtime every program runs on, sized to the CPUs the process may use.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::process::ExitCode;

use tokio::runtime::{Builder, Runtime};

/// A single-threaded runtime when the process may use one CPU, the multi-threaded one
/// otherwise.
///
/// One CPU is the common case in the demo: a Kubernetes CPU limit of one core or less (the
/// proxy's is 500m; the standard library reads the cgroup quota), or `taskset` to one core.
/// There a work-stealing scheduler has nobody to share work with and only adds bookkeeping: run
/// queues kept for stealing, idle workers to wake, a driver handed between threads.
/// `TOKIO_WORKER_THREADS`, when set, keeps the multi-threaded runtime with that many workers.
pub fn for_available_cpus() -> io::Result<Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    if single_threaded(cpus, std::env::var_os("TOKIO_WORKER_THREADS").is_some()) {
        Builder::new_current_thread().enable_all().build()
    } else {
        Builder::new_multi_thread().enable_all().build()
    }
}

/// Runs a program's `main` future to its exit code on [`for_available_cpus`]; a runtime that
/// cannot start is logged and exits 1.
pub fn block_on(main: impl Future<Output = ExitCode>) -> ExitCode {
    match for_available_cpus() {
        Ok(runtime) => runtime.block_on(main),
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            ExitCode::FAILURE
        }
    }
}

fn single_threaded(cpus: usize, workers_set: bool) -> bool {
    cpus == 1 && !workers_set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_runs_single_threaded_unless_workers_are_asked_for() {
        assert!(single_threaded(1, false));
        assert!(!single_threaded(1, true));
        assert!(!single_threaded(2, false));
        assert!(!single_threaded(8, true));
    }

    #[test]
    fn the_runtime_runs_tasks_and_timers() {
        let runtime = for_available_cpus().expect("runtime starts");
        let answer = runtime.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tokio::spawn(async { 42 }).await.expect("task completes")
        });
        assert_eq!(answer, 42);
    }
}
