//! `byte-relay`: the proxy comparison's floor (see `bench_tools::relay`), as its own process so
//! the bench pins and measures it like every other contender.

use std::process::ExitCode;

use bench_tools::floor::{self, Relay};
use clap::Parser;

/// Relays each connection's bytes to one upstream without looking at them.
#[derive(Debug, Parser)]
#[command(name = "byte-relay", version, about, long_about = None)]
struct Config {
    #[command(flatten)]
    relay: Relay,
}

fn main() -> ExitCode {
    let Relay { listen, upstream } = demo_common::cli::parse_or_exit::<Config>().relay;
    demo_common::logging::init(demo_common::logging::LogFormat::Text, "info");
    floor::run("byte-relay", listen.address(), |listener| {
        bench_tools::relay::serve(listener, upstream)
    })
}
