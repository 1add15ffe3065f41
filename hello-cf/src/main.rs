use std::process::ExitCode;

use hello_cf::{Config, HelloServer};

fn main() -> ExitCode {
    let config: Config = demo_common::cli::parse_or_exit();
    demo_common::logging::init(config.log_format, "info");
    demo_common::runtime::block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    // Handlers are installed before the port opens, so an early SIGTERM still drains.
    let shutdown = demo_common::shutdown::signal();
    let server = match HelloServer::bind(&config).await {
        Ok(server) => server,
        Err(error) if error.is::<demo_common::tls::TlsError>() => {
            demo_common::cli::config_error_exit(&format!(
                "invalid --tls-cert/--tls-key (env TLS_CERT/TLS_KEY): {error:#}"
            ))
        }
        Err(error) => {
            tracing::error!("{error:#}");
            return ExitCode::FAILURE;
        }
    };
    match server.local_addr() {
        Ok(address) => tracing::info!(
            %address,
            version = ?config.hello_version,
            tls = config.tls(),
            faults = %config.faults(),
            "hello-cf listening"
        ),
        Err(error) => tracing::warn!(%error, "listening on an unknown address"),
    }
    server.serve(shutdown).await;
    ExitCode::SUCCESS
}
