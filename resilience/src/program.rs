//! The demo's real binaries as child processes.
//!
//! Cargo gives a test the path of its own package's binaries only, so the suite takes the
//! three programs from the cargo output directory it runs from (`target/<profile>`), and runs
//! `cargo build` for those that are missing or older than their sources. Under
//! `cargo test --workspace` (CI) they are already built by then, and nothing is rebuilt.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::memory::Memory;

/// The workspace root (this crate's parent directory).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_owned()
}

/// The path of the workspace binary `package` (each program's package and binary share one
/// name), built first if it is missing or older than its sources or the shared crate's.
pub fn binary(package: &str) -> PathBuf {
    static CHECKED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let exe = std::env::current_exe().expect("the test's own path");
    // Test executables live in target/<profile>/deps.
    let bin_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_owned();
    let mut checked = CHECKED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !checked.contains(package) {
        if let Err(error) =
            local_mesh::programs::build_stale(&bin_dir, &workspace_dir(), &[package])
        {
            panic!("cannot build {package}: {error:#}");
        }
        checked.insert(package.to_owned());
    }
    bin_dir.join(package)
}

/// A running program: stderr (its log) collected line by line; stdout piped when asked for.
pub struct Program {
    name: String,
    child: Child,
    pid: u32,
    log: Arc<Mutex<Vec<String>>>,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
}

impl Program {
    /// Starts `package`'s binary with `args` and exactly `env` (nothing of the test's own
    /// environment, proxy variables in particular, leaks in). Stdout is piped when
    /// `capture_stdout`, else discarded.
    pub fn start(package: &str, args: &[&str], env: &[(&str, &str)], capture_stdout: bool) -> Self {
        let mut command = Command::new(binary(package));
        command
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {package}: {error}"));
        let pid = child.id().expect("a new child has a pid");
        let stdout = child
            .stdout
            .take()
            .map(|stdout| BufReader::new(stdout).lines());
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            name: package.to_owned(),
            child,
            pid,
            log,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its memory now; None once it has exited.
    pub fn memory(&self) -> Option<Memory> {
        Memory::of(self.pid)
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for a JSON log line (LOG_FORMAT=json) whose message is `message`, and returns it.
    pub async fn wait_for_message(&mut self, message: &str, bound: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let found = self.log.lock().unwrap().iter().find_map(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .filter(|event| event["message"] == message)
            });
            if let Some(event) = found {
                return event;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before logging {message:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not log {message:?} within {bound:?}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The next line of its stdout (None at its end), failing the test after `bound`.
    pub async fn next_stdout_line(&mut self, bound: Duration) -> Option<String> {
        let lines = self.stdout.as_mut().expect("stdout was not captured");
        tokio::time::timeout(bound, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no stdout line from {} within {bound:?}", self.name))
            .expect("read stdout")
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with the pid of a child this value owns and has not reaped.
        let result = unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill({}, {signal}) failed", self.pid);
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit, failing the test after `bound`.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!(
                "{} did not exit within {bound:?}; log:\n{}",
                self.name,
                self.log()
            ),
        }
    }
}

/// The proxy binary, listening on loopback ports the OS picked.
pub struct ProxyProcess {
    pub program: Program,
    /// The forwarding port.
    pub address: SocketAddr,
    /// The admin (health) port.
    pub admin: SocketAddr,
}

/// Starts the proxy in front of `upstream` with `settings` added to its environment, logging
/// JSON so that the ports it bound can be read from its start-up line.
pub async fn start_proxy(upstream: SocketAddr, settings: &[(&str, &str)]) -> ProxyProcess {
    let upstream_url = format!("http://{upstream}/");
    let mut env = vec![
        ("BIND_ADDRESS", "127.0.0.1"),
        ("PORT", "0"),
        ("ADMIN_PORT", "0"),
        ("UPSTREAM_URL", upstream_url.as_str()),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    env.extend_from_slice(settings);
    let mut program = Program::start("app-that-calls-externally", &[], &env, false);
    let listening = program
        .wait_for_message(
            "app-that-calls-externally listening",
            Duration::from_secs(60),
        )
        .await;
    let address = |field: &str| -> SocketAddr {
        listening[field]
            .as_str()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in the start-up line: {listening}"))
    };
    ProxyProcess {
        address: address("proxy_addr"),
        admin: address("admin_addr"),
        program,
    }
}
