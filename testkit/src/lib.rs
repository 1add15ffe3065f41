//! What the demo's tests share, in one place: loopback sockets the OS numbers (never a port
//! picked, released and bound again), the programs as child processes, scripted upstreams, a
//! raw HTTP client, `/proc` readings, a throwaway certificate authority, HTTP clients that
//! ignore the proxy variables, and binomial tolerances for share tests.
//!
//! A dev-only crate: every crate takes it as a dev-dependency, but for the benchmark tool
//! (`bench-tools`, unpublished), whose runtime reads `/proc` and probes HTTP with it; nothing
//! that ships depends on it.

pub mod client;
pub mod exchange;
pub mod memory;
pub mod net;
pub mod process;
pub mod raw_http;
pub mod share;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

pub use client::{direct_client, direct_client_builder};
pub use net::{Refused, Silent, listener, std_listener};
pub use process::ChildProcess;
pub use share::Acceptance;
pub use tls::TestCa;
pub use upstream::ScriptedUpstream;

/// Awaits `future`, failing the test if it takes longer than `bound`.
pub async fn within<F: Future>(what: &str, bound: Duration, future: F) -> F::Output {
    tokio::time::timeout(bound, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {bound:?}"))
}

/// Polls `check` every 20ms until it holds, failing the test after `bound`.
pub async fn eventually<F, Fut>(what: &str, bound: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, bound, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
