//! `hyper-relay`: the proxy comparison's hyper reference (see `bench_tools::hyper_relay`), as its own process so
//! the bench pins and measures it like every other contender.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;

/// Proxies each connection's requests to one upstream with hyper alone, nothing else.
#[derive(Debug, Parser)]
#[command(name = "hyper-relay", version, about, long_about = None)]
struct Config {
    /// Port to listen on (0: one the OS picks, logged as `address=`).
    #[arg(long, env = "PORT")]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind_address: IpAddr,
    /// Where every connection is relayed to, as host:port.
    #[arg(long, env = "UPSTREAM")]
    upstream: SocketAddr,
}

fn main() -> ExitCode {
    let config: Config = demo_common::cli::parse_or_exit();
    demo_common::logging::init(demo_common::logging::LogFormat::Text, "info");
    let address = SocketAddr::new(config.bind_address, config.port);
    bench_tools::floor::run("hyper-relay", address, |listener| {
        bench_tools::hyper_relay::serve(listener, config.upstream)
    })
}
