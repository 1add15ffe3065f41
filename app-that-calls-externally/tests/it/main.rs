//! The proxy's integration tests, one test binary (each file below is a module).

mod failures;
mod forwarding;
mod process;
mod support;
mod tls;
mod upstream_proxy;
