use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config: local_mesh::Config = demo_common::cli::parse_or_exit();
    demo_common::logging::init(config.log_format, "local_mesh=info");
    local_mesh::run(config).await
}
