//! `hyper-relay`: the proxy comparison's hyper reference (see `bench_tools::hyper_relay`), as its
//! own process so the bench pins and measures it like every other contender.

use std::process::ExitCode;

use bench_tools::floor::{self, Relay};
use clap::Parser;

/// Proxies each connection's requests to one upstream with hyper alone, nothing else.
#[derive(Debug, Parser)]
#[command(name = "hyper-relay", version, about, long_about = None)]
struct Config {
    #[command(flatten)]
    relay: Relay,
}

fn main() -> ExitCode {
    let Relay { listen, upstream } = demo_common::cli::parse_or_exit::<Config>().relay;
    demo_common::logging::init(demo_common::logging::LogFormat::Text, "info");
    floor::run("hyper-relay", listen.address(), |listener| {
        bench_tools::hyper_relay::serve(listener, upstream)
    })
}
