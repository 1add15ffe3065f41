//! `local-mesh apply -f <file>`: sends files of Istio resources to the running demo, as
//! `kubectl apply -f` sends them to the API server, and prints its one-line answer.
//!
//! Exit codes: 0 applied; 2 refused (unreadable file, invalid or unsupported resources, a change
//! that needs a restart); 1 no running demo, or its Envoys did not take the change.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::api::{self, ApplyRequest, SourceFile};
use crate::config::ApplyConfig;

/// Long enough for every Envoy to acknowledge every step of a change, and to roll back.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// The `apply` subcommand.
pub async fn run(config: ApplyConfig) -> ExitCode {
    let files = match read_files(&config.files) {
        Ok(files) => files,
        Err(message) => return refused(&message),
    };
    let body = match serde_json::to_vec(&ApplyRequest { files }) {
        Ok(body) => body,
        Err(error) => return failed(&format!("cannot encode the request: {error}")),
    };
    match send(config.run_dir.as_deref(), api::APPLY_PATH, Some(body)).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Sends a request to the running demo's endpoint `path` (POST with `body`, else GET) and
/// returns its answer; on anything but success, prints why and returns the exit code: 2 when
/// the demo refused the request, 1 when there is no demo or it failed.
pub async fn send(
    run_dir: Option<&Path>,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<String, ExitCode> {
    let base = crate::repo_root().join(".local-mesh");
    let (api_file, address) = api::locate(run_dir, &base).map_err(|message| failed(&message))?;
    demo_common::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(ANSWER_TIMEOUT)
        .build()
        .map_err(|error| failed(&format!("cannot build an HTTP client: {error}")))?;
    let url = format!("http://{address}{path}");
    let request = match body {
        Some(body) => client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body),
        None => client.get(&url),
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) if error.is_connect() => {
            return Err(failed(&format!(
                "no local-mesh demo is running: {} names {address}, which does not answer (the demo stopped without removing it?)",
                api_file.display()
            )));
        }
        Err(error) => return Err(failed(&format!("{url}: {error}"))),
    };
    let status = response.status();
    let line = response
        .text()
        .await
        .map_err(|error| failed(&format!("{url}: {error}")))?
        .trim_end()
        .to_owned();
    if status.is_success() {
        Ok(line)
    } else if status == api::REFUSED || status.is_client_error() {
        Err(refused(&line))
    } else {
        Err(failed(&line))
    }
}

/// Each file's text, named as given; `-` is stdin (once).
fn read_files(paths: &[PathBuf]) -> Result<Vec<SourceFile>, String> {
    let mut files = Vec::new();
    let mut stdin_read = false;
    for path in paths {
        if path == Path::new("-") {
            if stdin_read {
                return Err("-f - (stdin) can be given only once".to_owned());
            }
            stdin_read = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| format!("cannot read stdin: {error}"))?;
            files.push(SourceFile {
                name: "<stdin>".to_owned(),
                text,
            });
        } else {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            files.push(SourceFile {
                name: path.display().to_string(),
                text,
            });
        }
    }
    Ok(files)
}

pub(crate) fn refused(message: &str) -> ExitCode {
    eprintln!("local-mesh: {message}");
    ExitCode::from(demo_common::cli::EXIT_CONFIG as u8)
}

pub(crate) fn failed(message: &str) -> ExitCode {
    eprintln!("local-mesh: {message}");
    ExitCode::FAILURE
}
