//! `canned-responder`: the hello-cf comparison's floor (see `bench_tools::canned`), as its own
//! process so the bench pins and measures it like every other contender.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;

/// Answers every request with hello-cf's fixed bytes without parsing it.
#[derive(Debug, Parser)]
#[command(name = "canned-responder", version, about, long_about = None)]
struct Config {
    /// Port to listen on (0: one the OS picks, logged as `address=`).
    #[arg(long, env = "PORT")]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind_address: IpAddr,
}

fn main() -> ExitCode {
    let config: Config = demo_common::cli::parse_or_exit();
    demo_common::logging::init(demo_common::logging::LogFormat::Text, "info");
    let address = SocketAddr::new(config.bind_address, config.port);
    bench_tools::floor::run("canned-responder", address, bench_tools::canned::serve)
}
