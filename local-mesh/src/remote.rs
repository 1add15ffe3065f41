//! The running demo's stand-ins for two commands a cluster user runs beside `kubectl apply`:
//!
//! - `local-mesh set-env hello-v2 FAIL_PERCENT=50` (and `unset-env`): `cf set-env
//!   hello-istio-v2 FAIL_PERCENT 50 && cf restart hello-istio-v2`. The demo restarts that one app
//!   with the changed environment; the router learns its new address through CDS.
//! - `local-mesh call --header 'x-canary: always' --count 20`: `kubectl exec deploy/traffic --
//!   traffic ...`, a second caller in the caller's pod. The traffic binary runs with the caller's
//!   URL and through the caller's sidecar, with the flags given.

use std::process::ExitCode;

use crate::api::{self, CallerEnv, SetEnvRequest};
use crate::apply::{failed, send};
use crate::config::{CallConfig, SetEnvConfig, UnsetEnvConfig};
use crate::mesh::CALLER_TIMEOUT;

/// `local-mesh set-env`.
pub async fn set_env(config: SetEnvConfig) -> ExitCode {
    let changes = config
        .vars
        .into_iter()
        .map(|(name, value)| (name, Some(value)))
        .collect();
    post_env(&config.app, changes, config.run_dir.as_deref()).await
}

/// `local-mesh unset-env`.
pub async fn unset_env(config: UnsetEnvConfig) -> ExitCode {
    let changes = config.names.into_iter().map(|name| (name, None)).collect();
    post_env(&config.app, changes, config.run_dir.as_deref()).await
}

async fn post_env(
    app: &str,
    changes: Vec<(String, Option<String>)>,
    run_dir: Option<&std::path::Path>,
) -> ExitCode {
    let request = SetEnvRequest {
        app: app.to_owned(),
        changes,
    };
    let body = match serde_json::to_vec(&request) {
        Ok(body) => body,
        Err(error) => return failed(&format!("cannot encode the request: {error}")),
    };
    match send(run_dir, api::SET_ENV_PATH, Some(body)).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `local-mesh call`: exits as the traffic binary does.
pub async fn call(config: CallConfig) -> ExitCode {
    let answer = match send(config.run_dir.as_deref(), api::CALLER_PATH, None).await {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    let caller: CallerEnv = match serde_json::from_str(&answer) {
        Ok(caller) => caller,
        Err(error) => return failed(&format!("the demo answered {answer:?}: {error}")),
    };
    let repo = crate::repo_root();
    let bin_dir = match std::env::current_exe() {
        Ok(exe) => exe.parent().map(ToOwned::to_owned).unwrap_or_default(),
        Err(error) => return failed(&format!("cannot find local-mesh's own executable: {error}")),
    };
    let programs = match crate::programs::ensure_built(&bin_dir, &repo).await {
        Ok(programs) => programs,
        Err(error) => return failed(&format!("{error:#}")),
    };
    // As in the caller's pod: its URL and timeout (flags given here override them), its sidecar.
    let status = tokio::process::Command::new(&programs.caller)
        .args(&config.traffic_args)
        .env("URL", &caller.url)
        .env("TIMEOUT", CALLER_TIMEOUT)
        .env("http_proxy", &caller.http_proxy)
        .env_remove("HTTP_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        },
        Err(error) => failed(&format!(
            "cannot run {}: {error}",
            programs.caller.display()
        )),
    }
}
