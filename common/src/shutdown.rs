//! The termination signal: SIGTERM (Kubernetes, Cloud Foundry) or SIGINT (Ctrl-C).

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal as listen};

/// Returns a future that resolves when the process receives SIGTERM or SIGINT.
///
/// The handlers are installed by this call, not when the future is first polled: a signal that
/// arrives between the call and the first poll is kept, instead of killing the process with
/// the default action before it could drain. Call it early, inside the runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    let terminate = listen(SignalKind::terminate());
    let interrupt = listen(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
            },
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot listen for SIGTERM/SIGINT; running until killed");
                std::future::pending::<()>().await;
            }
        }
    }
}
