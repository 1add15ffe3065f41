use std::process::ExitCode;

use local_mesh::config::Invocation;

#[tokio::main]
async fn main() -> ExitCode {
    match local_mesh::config::invocation_or_exit() {
        Invocation::Apply(apply) => local_mesh::apply::run(apply).await,
        Invocation::Run(config) => {
            demo_common::logging::init(config.log_format, "local_mesh=info");
            local_mesh::run(config).await
        }
    }
}
