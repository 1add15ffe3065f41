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
    let base = crate::repo_root().join(".local-mesh");
    let (api_file, address) = match api::locate(config.run_dir.as_deref(), &base) {
        Ok(found) => found,
        Err(message) => return failed(&message),
    };
    demo_common::tls::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(ANSWER_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(error) => return failed(&format!("cannot build an HTTP client: {error}")),
    };
    let url = format!("http://{address}{}", api::APPLY_PATH);
    let body = match serde_json::to_vec(&ApplyRequest { files }) {
        Ok(body) => body,
        Err(error) => return failed(&format!("cannot encode the request: {error}")),
    };
    let response = match client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) if error.is_connect() => {
            return failed(&format!(
                "no local-mesh demo is running: {} names {address}, which does not answer (the demo stopped without removing it?)",
                api_file.display()
            ));
        }
        Err(error) => return failed(&format!("POST {url}: {error}")),
    };
    let status = response.status();
    let line = match response.text().await {
        Ok(text) => text.trim_end().to_owned(),
        Err(error) => return failed(&format!("POST {url}: {error}")),
    };
    if status.is_success() {
        println!("{line}");
        ExitCode::SUCCESS
    } else if status == api::REFUSED || status.is_client_error() {
        refused(&line)
    } else {
        failed(&line)
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

fn refused(message: &str) -> ExitCode {
    eprintln!("local-mesh: {message}");
    ExitCode::from(demo_common::cli::EXIT_CONFIG as u8)
}

fn failed(message: &str) -> ExitCode {
    eprintln!("local-mesh: {message}");
    ExitCode::FAILURE
}
