use std::process::ExitCode;

use app_that_calls_externally::{Config, StartError, bind};
use demo_common::cli::{config_error_exit, parse_or_exit};

fn main() -> ExitCode {
    let config: Config = parse_or_exit();
    if let Err(message) = config.validate() {
        config_error_exit(&message);
    }
    demo_common::logging::init(config.log_format, "info");
    demo_common::runtime::block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    // Handlers are installed here, before the ports are announced, so an early SIGTERM drains.
    let shutdown = demo_common::shutdown::signal();

    let bound = match bind(&config).await {
        Ok(bound) => bound,
        Err(StartError::Setup(error)) => config_error_exit(&error.to_string()),
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        proxy_addr = %bound.proxy_addr(),
        admin_addr = %bound.admin_addr(),
        upstream = %config.upstream_url,
        route = %bound.proxy().route(),
        upstream_timeout = ?config.upstream_timeout,
        "app-that-calls-externally listening"
    );
    bound.serve(shutdown).await;
    ExitCode::SUCCESS
}
