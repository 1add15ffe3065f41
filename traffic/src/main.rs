//! `traffic`: parse the configuration, start logging, run until COUNT or a signal.

use std::process::ExitCode;

use demo_common::{cli, logging, shutdown};
use traffic::{Config, Report, RunError};

fn main() -> ExitCode {
    let config: Config = cli::parse_or_exit();
    logging::init(config.log_format, "info");
    // The signal handlers need the runtime, so they are installed inside it.
    demo_common::runtime::block_on(async {
        let result = traffic::run(&config, tokio::io::stdout(), shutdown::signal()).await;
        exit_code(result)
    })
}

/// A finished run exits 0, as does a reader closing stdout; a failed one says why and exits 1.
fn exit_code(result: Result<Report, RunError>) -> ExitCode {
    match result {
        Ok(_) => ExitCode::SUCCESS,
        // `traffic | head` closing the pipe is a normal way to stop reading.
        Err(RunError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::info!("stdout closed; stopping");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "traffic stopped");
            eprintln!("traffic: {error}");
            ExitCode::FAILURE
        }
    }
}
