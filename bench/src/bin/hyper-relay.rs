//! `hyper-relay`: the proxy comparison's hyper reference (see `bench_tools::hyper_relay`), as its
//! own process so the bench pins and measures it like every other contender.

use std::net::SocketAddr;
use std::process::ExitCode;

use bench_tools::floor::Listen;
use clap::Parser;

/// Proxies each connection's requests to one upstream with hyper alone, nothing else.
#[derive(Debug, Parser)]
#[command(name = "hyper-relay", version, about, long_about = None)]
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
    bench_tools::floor::run("hyper-relay", config.listen.address(), |listener| {
        bench_tools::hyper_relay::serve(listener, config.upstream)
    })
}
