//! Pieces every program of the demo needs in the same shape: one-line configuration errors,
//! durations written the way people type them, error chains told in a few words, logging to
//! stderr, the runtime and one serving thread per CPU the process may use, the termination
//! signal, and an HTTP server that drains on shutdown.

pub mod cli;
pub mod duration;
pub mod error;
pub mod logging;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod tls;
mod watchdog;
pub mod workers;

pub use duration::{parse_duration, parse_positive_duration};
