//! The binary as a user runs it: configuration errors are one line and exit 2; SIGTERM stops
//! every component and leaves no process behind.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_local-mesh");

fn run_with(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BINARY);
    command.args(args).stdin(Stdio::null());
    for name in [
        "COUNT",
        "INTERVAL",
        "SUMMARY_EVERY",
        "POLICY",
        "ENVOY",
        "LOCAL_MESH_RUN_DIR",
    ] {
        command.env_remove(name);
    }
    command.envs(envs.iter().copied());
    command.output().expect("cannot run local-mesh")
}

fn assert_config_error(output: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn unsupported_policy_is_a_one_line_config_error() {
    let repo_policy = local_mesh::repo_root().join("k8s").join("istio.yml");
    let text = std::fs::read_to_string(repo_policy).unwrap();
    let edited = text.replacen(
        "      fault:\n",
        "      rewrite: {uri: /elsewhere}\n      fault:\n",
        1,
    );
    assert_ne!(
        edited, text,
        "k8s/istio.yml has no `fault:` at the usual place"
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("istio.yml");
    std::fs::write(&policy, edited).unwrap();
    let output = run_with(&["--policy", policy.to_str().unwrap()], &[]);
    assert_config_error(&output, "http[0].rewrite is not supported");
}

#[test]
fn missing_policy_file_is_a_config_error() {
    let output = run_with(&[], &[("POLICY", "/nonexistent/istio.yml")]);
    assert_config_error(&output, "cannot read policy /nonexistent/istio.yml");
}

#[test]
fn an_envoy_that_is_not_executable_is_a_config_error() {
    let output = run_with(&[], &[("ENVOY", "/nonexistent/envoy")]);
    assert_config_error(&output, "--envoy (env ENVOY): not an executable file");
}

#[test]
fn bad_caller_settings_are_config_errors() {
    assert_config_error(&run_with(&["--count", "0"], &[]), "--count (env COUNT)");
    assert_config_error(
        &run_with(&[], &[("INTERVAL", "soon")]),
        "--interval (env INTERVAL)",
    );
    assert_config_error(
        &run_with(&[], &[("SUMMARY_EVERY", "0")]),
        "--summary-every (env SUMMARY_EVERY)",
    );
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// A started local-mesh that is killed if the test fails, and after 3 minutes if it hangs.
struct Running {
    child: Child,
    stand_down: Option<mpsc::Sender<()>>,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(command: &mut Command) -> Running {
        let child = command.spawn().expect("cannot start local-mesh");
        let pid = child.id();
        let (stand_down, told) = mpsc::channel::<()>();
        // Unblocks a test stuck reading output. The child is reaped only after the watchdog
        // stood down, so the pid it signals is still ours.
        let watchdog = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) =
                told.recv_timeout(Duration::from_secs(180))
            {
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        });
        Running {
            child,
            stand_down: Some(stand_down),
            watchdog: Some(watchdog),
        }
    }

    fn wait(&mut self) -> ExitStatus {
        self.stop_watchdog();
        self.child.wait().unwrap()
    }

    fn stop_watchdog(&mut self) {
        if let Some(stand_down) = self.stand_down.take() {
            let _ = stand_down.send(());
        }
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_watchdog();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_stops_every_component() {
    let _one = crate::support::ONE_MESH_AT_A_TIME.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(
        Command::new(BINARY)
            .env_remove("COUNT")
            .env("INTERVAL", "0.05")
            .env("LOCAL_MESH_RUN_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let pid = running.child.id();
    let mut lines = BufReader::new(running.child.stdout.take().unwrap()).lines();
    for _ in 0..5 {
        let line = lines
            .next()
            .expect("local-mesh ended before 5 caller lines")
            .unwrap();
        assert!(line.contains('\t'), "{line:?}");
    }
    let components = demo_testkit::memory::children(pid);
    assert!(
        components.len() >= 7,
        "expected every component as a child, found {components:?}"
    );

    // SAFETY: our own child, not yet reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let stopping = Instant::now();
    drop(lines);
    let status = running.wait();
    let took = stopping.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut running.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(took < Duration::from_secs(60), "took {took:?} to stop");
    assert!(stderr.contains("all components stopped"), "{stderr}");
    for pid in components {
        assert!(!alive(pid), "pid {pid} outlived local-mesh");
    }
}
