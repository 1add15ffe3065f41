use std::process::ExitCode;

use local_mesh::config::Invocation;

#[tokio::main]
async fn main() -> ExitCode {
    match local_mesh::config::invocation_or_exit() {
        Invocation::Apply(apply) => local_mesh::apply::run(apply).await,
        Invocation::SetEnv(config) => local_mesh::remote::set_env(config).await,
        Invocation::UnsetEnv(config) => local_mesh::remote::unset_env(config).await,
        Invocation::Call(config) => local_mesh::remote::call(config).await,
        Invocation::Run(config) => {
            demo_common::logging::init(config.log_format, "local_mesh=info");
            local_mesh::run(config).await
        }
    }
}
