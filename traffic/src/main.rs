//! `traffic`: parse the configuration, start logging, run until COUNT or a signal.

use std::process::ExitCode;

use demo_common::{cli, logging, shutdown};
use traffic::{Config, RunError};

fn main() -> ExitCode {
    let config: Config = cli::parse_or_exit();
    logging::init(config.log_format, "info");
    let runtime = match demo_common::runtime::for_available_cpus() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    // The signal handlers need the runtime, so they are installed inside it.
    let result = runtime
        .block_on(async { traffic::run(&config, tokio::io::stdout(), shutdown::signal()).await });
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
