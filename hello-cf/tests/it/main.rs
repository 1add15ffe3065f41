//! hello-cf's integration tests, one test binary (each file below is a module).

mod cloud_foundry;
mod faults;
mod hello;
mod support;
