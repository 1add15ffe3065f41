//! local-mesh: the whole demo on one machine, with real Envoy playing the mesh.
//!
//! [`run`] is the program: it reads the policy from k8s/istio.yml, finds (or installs) Envoy,
//! builds the demo's programs if needed, starts every component on loopback ([`mesh::Mesh`]),
//! prints the caller's lines as they come and stops everything at the end. While it runs,
//! [`api::ApiServer`] takes `local-mesh apply` ([`apply`]) and switches the running Envoys to the
//! new policy through their xDS files ([`xds`]).

pub mod api;
pub mod apply;
pub mod bootstrap;
pub mod certs;
pub mod config;
pub mod envoy;
pub mod mesh;
pub mod policy;
pub mod programs;
pub mod remote;
pub mod store;
pub mod supervisor;
pub mod xds;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

pub use crate::config::Config;

use crate::api::ApiServer;
use crate::mesh::{CallerOptions, Mesh, MeshEvent, MeshOptions};
use crate::policy::Policy;
use crate::policy::manifest::Manifest;
use crate::store::ResourceStore;

/// The workspace this binary was built from: where k8s/, .venv and .local-mesh live.
pub fn repo_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).to_owned()
}

/// The program: exit 0 after a bounded run or Ctrl-C, 1 when a component fails, 2 for bad
/// configuration (the policy included).
pub async fn run(config: Config) -> ExitCode {
    let (policy, store) = match load_policy(&config.policy) {
        Ok(loaded) => loaded,
        Err(message) => demo_common::cli::config_error_exit(&message),
    };
    if let Some(envoy) = config
        .envoy
        .as_deref()
        .filter(|path| !envoy::is_executable(path))
    {
        demo_common::cli::config_error_exit(&format!(
            "invalid value '{}' for --envoy (env ENVOY): not an executable file",
            envoy.display()
        ));
    }
    match run_with_policy(&config, policy, store).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("local-mesh: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The policy, and the resources it is read from as the running demo keeps them for `apply`.
/// Errors are one line.
pub fn load_policy(path: &Path) -> Result<(Policy, ResourceStore), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read policy {}: {error}", path.display()))?;
    let manifest = Manifest::parse(path, &text).map_err(|error| error.to_string())?;
    let policy = Policy::from_manifest(path, &manifest).map_err(|error| error.to_string())?;
    Ok((policy, ResourceStore::new(manifest)))
}

async fn run_with_policy(
    config: &Config,
    policy: Policy,
    store: ResourceStore,
) -> anyhow::Result<ExitCode> {
    let repo = repo_root();
    eprintln!(
        "local-mesh: policy from {}: {}",
        config.policy.display(),
        describe(&policy)
    );
    let envoy = envoy::locate_or_install(config.envoy.as_deref(), &repo).await?;
    let version = envoy::version(&envoy).await?;
    let bin_dir = std::env::current_exe()
        .context("cannot find local-mesh's own executable")?
        .parent()
        .context("local-mesh's executable has no directory")?
        .to_owned();
    let programs = programs::ensure_built(&bin_dir, &repo).await?;
    let runs = repo.join(".local-mesh");
    let run_dir = match &config.run_dir {
        Some(dir) => dir.clone(),
        None => new_run_dir(&runs)?,
    };
    eprintln!(
        "local-mesh: Envoy {version} ({}); run directory {}",
        envoy.display(),
        run_dir.display()
    );
    let options = MeshOptions {
        policy,
        envoy,
        programs,
        run_dir,
        caller: Some(CallerOptions {
            count: config.count.calls(),
            interval: config.interval,
            summary_every: config.summary_every,
        }),
        envoy_log_level: config.envoy_log_level.clone(),
    };
    // One signal future for the whole run: a Ctrl-C during start-up or later is never missed.
    let shutdown = demo_common::shutdown::signal();
    tokio::pin!(shutdown);
    let mut mesh = match Mesh::start_until(options, &mut shutdown).await? {
        Some(mesh) => mesh,
        None => {
            eprintln!("local-mesh: interrupted during start-up; every component stopped");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut api = match ApiServer::start(mesh.control(), store, mesh.run_dir()).await {
        Ok(api) => api,
        Err(error) => {
            mesh.shutdown().await?;
            return Err(error);
        }
    };
    // Only the default run directory is named in .local-mesh/current: a demo (or a test) with a
    // run directory of its own never takes `apply` away from the one a user started plainly.
    let pointer = config.run_dir.is_none().then_some(&runs);
    if let Some(runs) = pointer
        && let Err(error) = api::write_pointer(runs, mesh.run_dir())
    {
        eprintln!("local-mesh: warning: `local-mesh apply` will need --run-dir: {error:#}");
    }
    print_components(&mesh);
    let run_dir_flag = if pointer.is_some() {
        String::new()
    } else {
        format!(" --run-dir {}", mesh.run_dir().display())
    };
    eprintln!(
        "local-mesh: change the policy while it runs: cargo run --release -p local-mesh -- apply{run_dir_flag} -f <file>"
    );
    eprintln!(
        "local-mesh: and for k8s/patterns/: ... -- set-env{run_dir_flag} hello-v2 FAIL_PERCENT=50 (cf set-env + cf restart), ... -- call{run_dir_flag} --header 'x-canary: always' --count 20 (a second caller)"
    );
    let mut env_requests = api.env_requests();
    let code = follow(&mut mesh, &mut env_requests, &mut shutdown).await;
    eprintln!("local-mesh: stopping every component");
    if let Some(runs) = pointer {
        api::clear_pointer(runs, mesh.run_dir());
    }
    api.stop().await;
    mesh.shutdown().await?;
    eprintln!("local-mesh: all components stopped");
    Ok(code)
}

/// Prints the caller's lines until it finishes, a component dies, or a signal arrives; serves
/// `set-env` requests in between (the mesh owns the app processes).
async fn follow(
    mesh: &mut Mesh,
    env_requests: &mut Option<tokio::sync::mpsc::Receiver<api::EnvRequest>>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> ExitCode {
    use std::io::Write as _;
    loop {
        let next_request = async {
            match env_requests.as_mut() {
                Some(requests) => requests.recv().await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            event = mesh.next_event() => event,
            Some(request) = next_request => {
                let answer = set_env(mesh, &request.request).await;
                let _ = request.reply.send(answer);
                continue;
            }
            () = &mut *shutdown => return ExitCode::SUCCESS,
        };
        match event {
            Some(MeshEvent::CallerLine(line)) => {
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{line}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    // Whoever read the output is gone (`| head`): nothing left to show.
                    return ExitCode::SUCCESS;
                }
            }
            Some(MeshEvent::CallerFinished) => {
                eprintln!("local-mesh: the caller made its calls");
                return ExitCode::SUCCESS;
            }
            Some(MeshEvent::ComponentDied {
                name,
                status,
                log,
                log_tail,
            }) => {
                eprintln!(
                    "local-mesh: {name} exited unexpectedly ({status}); last lines of {}:\n{log_tail}",
                    log.display()
                );
                return ExitCode::FAILURE;
            }
            None => return ExitCode::FAILURE,
        }
    }
}

/// Serves one `set-env`/`unset-env` request: the app restarted with its changed environment.
pub async fn set_env(mesh: &mut Mesh, request: &api::SetEnvRequest) -> Result<String, String> {
    let version = mesh
        .addresses()
        .hello
        .keys()
        .copied()
        .find(|version| mesh::hello_component(*version) == request.app)
        .ok_or_else(|| {
            let apps: Vec<String> = mesh
                .addresses()
                .hello
                .keys()
                .map(|version| mesh::hello_component(*version))
                .collect();
            format!(
                "no app named {:?} (this demo runs {})",
                request.app,
                apps.join(", ")
            )
        })?;
    let env = mesh
        .set_hello_env(version, &request.changes)
        .await
        .map_err(|error| format!("{error:#}").replace('\n', " "))?;
    let knobs: Vec<String> = env
        .iter()
        .filter(|(name, _)| ["FAIL_PERCENT", "FAIL_STATUS", "DELAY"].contains(&name.as_str()))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    Ok(format!(
        "{} restarted with {}",
        request.app,
        if knobs.is_empty() {
            "no fault knobs set".to_owned()
        } else {
            knobs.join(" ")
        }
    ))
}

fn print_components(mesh: &Mesh) {
    eprintln!(
        "local-mesh: components, logs in {}/",
        mesh.run_dir().display()
    );
    for component in mesh.components() {
        let address = component.address.map(|a| a.to_string()).unwrap_or_default();
        let log = component
            .log
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        eprintln!(
            "  {:<26} {:<16} {:<30} stands for {}",
            component.name, address, log, component.stands_for
        );
    }
    eprintln!(
        "local-mesh: Envoy access logs: *.access.log there; caller output follows (Ctrl-C stops everything)"
    );
}

/// One line saying what the mesh will do.
pub fn describe(policy: &Policy) -> String {
    policy.summary()
}

/// `<base>/<local time>`, with a suffix if two runs start within the same second.
fn new_run_dir(base: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(base).with_context(|| format!("cannot create {}", base.display()))?;
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    for attempt in 0..100 {
        let name = if attempt == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{attempt}")
        };
        let dir = base.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("cannot create {}", dir.display()));
            }
        }
    }
    anyhow::bail!("cannot create a new run directory in {}", base.display())
}
