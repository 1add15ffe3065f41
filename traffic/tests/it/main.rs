//! The caller's integration tests, one test binary (each file below is a module).

mod body_cap;
mod cli;
mod headers;
mod lines;
mod schedule;
mod shutdown;
mod summary;
mod support;
