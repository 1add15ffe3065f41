//! The running demo's stand-in for the Kubernetes API server: `local-mesh apply` posts files to
//! it, and it merges their resources into the running set ([`ResourceStore`]), reads the whole
//! set again with the policy reader, and switches the running Envoys to the result
//! ([`MeshControl::set_policy`]). A set the reader refuses changes nothing.
//!
//! It listens on 127.0.0.1, port chosen by the OS. Its address is in the run directory's
//! [`API_FILE`]; a demo started with the default run directory also names that directory in
//! `<repo>/.local-mesh/current` ([`CURRENT_POINTER`]), which is how `apply` finds it, and
//! removes both when it stops.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::mesh::{MeshControl, PROXY_SERVICE, ReconfigureError};
use crate::policy::Policy;
use crate::policy::manifest::Manifest;
use crate::store::{Change, ResourceStore};

/// In the run directory: the address of the running demo's API endpoint.
pub const API_FILE: &str = "api";
/// In `<repo>/.local-mesh`: the run directory of the demo started last with the default one.
pub const CURRENT_POINTER: &str = "current";
/// The path `apply` posts to.
pub const APPLY_PATH: &str = "/apply";
/// The path `set-env` and `unset-env` post to.
pub const SET_ENV_PATH: &str = "/set-env";
/// Where `call` learns how the caller reaches the proxy.
pub const CALLER_PATH: &str = "/caller";

/// What `set-env`/`unset-env` send: the app (`hello-v1`, `hello-v2`) and each variable to set
/// (`Some`) or unset (`None`).
#[derive(Debug, Serialize, Deserialize)]
pub struct SetEnvRequest {
    pub app: String,
    pub changes: Vec<(String, Option<String>)>,
}

/// How the caller reaches the proxy: its Service's URL through the caller's sidecar.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallerEnv {
    pub url: String,
    pub http_proxy: String,
}

/// A [`SetEnvRequest`] for whoever owns the app processes ([`crate::mesh::Mesh::set_hello_env`]);
/// the answer is one line.
#[derive(Debug)]
pub struct EnvRequest {
    pub request: SetEnvRequest,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// What `apply` sends: the files as read, each with the name it was given.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub files: Vec<SourceFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// How the endpoint answers, always with one line of text: 200 applied, 422 refused (the input
/// is invalid or needs a restart), 500 the Envoys did not take it (they are back on the old
/// policy).
pub const REFUSED: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

struct ApiState {
    control: MeshControl,
    /// Held for the whole of an apply, so applies happen one after the other.
    store: Mutex<ResourceStore>,
    env_requests: mpsc::Sender<EnvRequest>,
    /// Whether anyone takes [`EnvRequest`]s ([`ApiServer::env_requests`]).
    env_served: std::sync::atomic::AtomicBool,
}

/// The running endpoint.
pub struct ApiServer {
    address: SocketAddr,
    address_file: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    state: Arc<ApiState>,
    env_requests: Option<mpsc::Receiver<EnvRequest>>,
}

impl ApiServer {
    /// Serves `POST /apply` for the mesh `control` changes, starting from `store`, and writes
    /// its address into `<run_dir>/api`.
    pub async fn start(
        control: MeshControl,
        store: ResourceStore,
        run_dir: &Path,
    ) -> anyhow::Result<ApiServer> {
        let server = demo_common::server::Server::bind(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            demo_common::server::ServerOptions::default(),
        )
        .await
        .context("cannot open the apply endpoint on 127.0.0.1")?;
        let address = server.local_addr().context("cannot read its address")?;
        let (env_sender, env_requests) = mpsc::channel(4);
        let state = Arc::new(ApiState {
            control,
            store: Mutex::new(store),
            env_requests: env_sender,
            env_served: false.into(),
        });
        let router = axum::Router::new()
            .route(APPLY_PATH, post(apply))
            .route(SET_ENV_PATH, post(set_env))
            .route(CALLER_PATH, get(caller))
            .with_state(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(router, async {
                    let _ = stopped.await;
                })
                .await;
        });
        let address_file = run_dir.join(API_FILE);
        write_atomically(&address_file, &format!("{address}\n"))?;
        Ok(ApiServer {
            address,
            address_file,
            stop: Some(stop),
            task,
            state,
            env_requests: Some(env_requests),
        })
    }

    /// The `set-env` requests, for the owner of the app processes to serve; until they are
    /// taken, `set-env` is answered that this demo does not restart apps.
    pub fn env_requests(&mut self) -> Option<mpsc::Receiver<EnvRequest>> {
        let requests = self.env_requests.take();
        if requests.is_some() {
            self.state
                .env_served
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        requests
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving and removes the address file.
    pub async fn stop(mut self) {
        let _ = std::fs::remove_file(&self.address_file);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if self.stop.is_some() {
            let _ = std::fs::remove_file(&self.address_file);
            self.task.abort();
        }
    }
}

async fn apply(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    let request: ApplyRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an apply request: {error}\n"),
            );
        }
    };
    let (status, line) = apply_files(&state, request).await;
    if status.is_success() {
        eprintln!("local-mesh: applied {line}");
    } else {
        eprintln!("local-mesh: apply refused, the policy stays as it was: {line}");
    }
    (status, format!("{line}\n"))
}

async fn apply_files(state: &ApiState, request: ApplyRequest) -> (StatusCode, String) {
    let source = request
        .files
        .iter()
        .map(|file| file.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut incoming = Manifest::default();
    for file in &request.files {
        match Manifest::parse(Path::new(&file.name), &file.text) {
            Ok(manifest) if manifest.resources.is_empty() => {
                return (REFUSED, format!("{}: no resources in the file", file.name));
            }
            Ok(manifest) => incoming.resources.extend(manifest.resources),
            Err(error) => return (REFUSED, first_line(&error.to_string())),
        }
    }
    let mut store = state.store.lock().await;
    let mut next = store.clone();
    let changes = next.apply(incoming);
    // The whole set is read again, as istiod reads every resource it sees, so a change that is
    // valid alone but not with the rest is refused too.
    let policy = match Policy::from_manifest(Path::new(&source), next.manifest()) {
        Ok(policy) => policy,
        Err(error) => return (REFUSED, first_line(&error.to_string())),
    };
    let summary = crate::describe(&policy);
    match state.control.set_policy(policy).await {
        Ok(_) => {
            *store = next;
            let unchanged = changes
                .iter()
                .filter(|(_, change)| *change == Change::Unchanged)
                .count();
            let mut parts: Vec<String> = changes
                .iter()
                .filter(|(_, change)| *change != Change::Unchanged)
                .map(|(key, change)| format!("{key} {}", change.as_str()))
                .collect();
            if unchanged > 0 {
                parts.push(format!("{unchanged} unchanged"));
            }
            let verb = if unchanged == changes.len() {
                "stays"
            } else {
                "is now"
            };
            let changes = parts.join(", ");
            (
                StatusCode::OK,
                format!("{source}: {changes}; the policy {verb}: {summary}"),
            )
        }
        Err(ReconfigureError::NeedsRestart(reason)) => (REFUSED, format!("{source}: {reason}")),
        Err(ReconfigureError::Failed(error)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            first_line(&format!("{source}: not applied: {error:#}")),
        ),
    }
}

async fn set_env(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    let request: SetEnvRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a set-env request: {error}\n"),
            );
        }
    };
    if !state.env_served.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this demo does not restart its apps (it runs inside a test)\n".to_owned(),
        );
    }
    let (reply, answer) = oneshot::channel();
    if state
        .env_requests
        .send(EnvRequest { request, reply })
        .await
        .is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the demo is stopping\n".to_owned(),
        );
    }
    match answer.await {
        Ok(Ok(line)) => {
            eprintln!("local-mesh: {line}");
            (StatusCode::OK, format!("{line}\n"))
        }
        Ok(Err(line)) => {
            eprintln!("local-mesh: set-env refused: {line}");
            (REFUSED, format!("{line}\n"))
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the demo is stopping\n".to_owned(),
        ),
    }
}

async fn caller(State(state): State<Arc<ApiState>>) -> (StatusCode, String) {
    match state.control.caller_sidecar().await {
        Some(sidecar) => {
            let env = CallerEnv {
                url: format!("http://{PROXY_SERVICE}/"),
                http_proxy: format!("http://{sidecar}"),
            };
            (
                StatusCode::OK,
                serde_json::to_string(&env).unwrap_or_default(),
            )
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the caller's sidecar is not running\n".to_owned(),
        ),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Names `run_dir` in `<base>/current`, for `apply` to find the demo.
pub fn write_pointer(base: &Path, run_dir: &Path) -> anyhow::Result<()> {
    let text = format!("{}\n", run_dir.display());
    write_atomically(&base.join(CURRENT_POINTER), &text)
}

/// Removes `<base>/current` if it still names `run_dir` (a later demo may have taken it).
pub fn clear_pointer(base: &Path, run_dir: &Path) {
    let pointer = base.join(CURRENT_POINTER);
    if std::fs::read_to_string(&pointer).is_ok_and(|text| Path::new(text.trim()) == run_dir) {
        let _ = std::fs::remove_file(pointer);
    }
}

/// The address of the running demo's endpoint: from `<run_dir>/api`, or, without a run
/// directory, from the one `<base>/current` names. The error says why there is none.
pub fn locate(run_dir: Option<&Path>, base: &Path) -> Result<(PathBuf, SocketAddr), String> {
    const START: &str = "start one with `cargo run --release -p local-mesh`";
    let run_dir = match run_dir {
        Some(dir) => dir.to_owned(),
        None => {
            let pointer = base.join(CURRENT_POINTER);
            match std::fs::read_to_string(&pointer) {
                Ok(text) => PathBuf::from(text.trim()),
                Err(_) => {
                    return Err(format!(
                        "no local-mesh demo is running ({} does not exist; a demo started with \
                         --run-dir needs the same --run-dir here); {START}",
                        pointer.display()
                    ));
                }
            }
        }
    };
    let file = run_dir.join(API_FILE);
    let text = std::fs::read_to_string(&file).map_err(|_| {
        format!(
            "no local-mesh demo is running in {} ({} does not exist); {START}",
            run_dir.display(),
            file.display()
        )
    })?;
    let address = text.trim().parse().map_err(|_| {
        format!(
            "{} does not hold an address: {:?}",
            file.display(),
            text.trim()
        )
    })?;
    Ok((file, address))
}

/// Writes beside the target and renames, so a reader sees the old content or the new.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let staging = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&staging, text)
        .with_context(|| format!("cannot write {}", staging.display()))?;
    std::fs::rename(&staging, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pointer_names_the_demo_started_last_and_is_cleared_by_it_only() {
        let base = tempfile::tempdir().unwrap();
        let error = locate(None, base.path()).unwrap_err();
        assert!(
            error.starts_with("no local-mesh demo is running ("),
            "{error}"
        );

        let first = base.path().join("run-1");
        let second = base.path().join("run-2");
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        write_atomically(&first.join(API_FILE), "127.0.0.1:4001\n").unwrap();
        write_atomically(&second.join(API_FILE), "127.0.0.1:4002\n").unwrap();
        write_pointer(base.path(), &first).unwrap();
        write_pointer(base.path(), &second).unwrap();
        assert_eq!(
            locate(None, base.path()).unwrap().1,
            "127.0.0.1:4002".parse().unwrap()
        );
        assert_eq!(
            locate(Some(&first), base.path()).unwrap().1,
            "127.0.0.1:4001".parse().unwrap()
        );
        // The first demo stopping leaves the second's pointer alone.
        clear_pointer(base.path(), &first);
        assert!(locate(None, base.path()).is_ok());
        clear_pointer(base.path(), &second);
        assert!(locate(None, base.path()).is_err());

        let empty = base.path().join("empty");
        let error = locate(Some(&empty), base.path()).unwrap_err();
        assert!(
            error.contains("no local-mesh demo is running in"),
            "{error}"
        );
    }
}
