//! `byte-relay`: the proxy comparison's floor (see `bench_tools::relay`), as its own process so
//! the bench pins and measures it like every other contender.

use std::net::SocketAddr;
use std::process::ExitCode;

use bench_tools::floor::Listen;
use clap::Parser;

/// Relays each connection's bytes to one upstream without looking at them.
#[derive(Debug, Parser)]
#[command(name = "byte-relay", version, about, long_about = None)]
struct Config {
    #[command(flatten)]
    listen: Listen,
    /// Where every connection is relayed to, as host:port.
    #[arg(long, env = "UPSTREAM")]
    upstream: SocketAddr,
}

fn main() -> ExitCode {
    let config: Config = demo_common::cli::parse_or_exit();
    demo_common::logging::init(demo_common::logging::LogFormat::Text, "info");
    bench_tools::floor::run("byte-relay", config.listen.address(), |listener| {
        bench_tools::relay::serve(listener, config.upstream)
    })
}
