//! `canned-responder`: the hello-cf comparison's floor (see `bench_tools::canned`), as its own
//! process so the bench pins and measures it like every other contender.

use std::process::ExitCode;

use bench_tools::floor::Listen;
use clap::Parser;

/// Answers every request with hello-cf's fixed bytes without parsing it.
#[derive(Debug, Parser)]
#[command(name = "canned-responder", version, about, long_about = None)]
struct Config {
    #[command(flatten)]
    listen: Listen,
}

fn main() -> ExitCode {
    let config: Config = demo_common::cli::parse_or_exit();
    demo_common::logging::init(demo_common::logging::LogFormat::Text, "info");
    bench_tools::floor::run(
        "canned-responder",
        config.listen.address(),
        bench_tools::canned::serve,
    )
}
