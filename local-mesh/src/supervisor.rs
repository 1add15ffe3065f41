//! Child processes of the local mesh: started in their own process group with output in a log
//! file, watched for unexpected exits, and stopped with SIGTERM, then SIGKILL after a grace
//! period. Three layers make sure nothing outlives local-mesh: an orderly [`Supervisor::stop_all`],
//! `kill_on_drop` if the supervisor is dropped (a panic, a test's runtime ending), and
//! `PR_SET_PDEATHSIG` if local-mesh itself is killed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long a component may take to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Environment variables children inherit; everything else is set explicitly, so a stray
/// `PORT`, `URL` or `http_proxy` in the user's shell cannot rewire the demo.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "RUST_BACKTRACE",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The component's name in messages and events.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// Receives stderr, and stdout unless `stdout_lines`.
    pub log: PathBuf,
    /// Deliver stdout line by line as [`Event::Line`] instead of logging it.
    pub stdout_lines: bool,
}

/// Something a child did that its supervisor did not ask for.
#[derive(Debug)]
pub enum Event {
    /// A line of a `stdout_lines` child.
    Line { name: String, line: String },
    /// A child exited without being asked to (its stdout, if captured, is fully delivered).
    Exited {
        name: String,
        status: ExitStatus,
        log: PathBuf,
    },
}

struct Process {
    spec: ProcessSpec,
    pid: u32,
    stopping: Arc<AtomicBool>,
    exited: watch::Receiver<Option<ExitStatus>>,
    /// Taken when the process is stopped.
    watcher: Option<JoinHandle<()>>,
}

/// The running children, in start order.
pub struct Supervisor {
    events: mpsc::UnboundedSender<Event>,
    processes: Vec<Process>,
}

impl Supervisor {
    pub fn new() -> (Supervisor, mpsc::UnboundedReceiver<Event>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            events,
            processes: Vec::new(),
        };
        (supervisor, receiver)
    }

    /// Starts `spec`; its name must be new or belong to a stopped process, which it replaces
    /// in the stop order.
    pub fn spawn(&mut self, spec: ProcessSpec) -> anyhow::Result<u32> {
        let existing = self.index(&spec.name);
        if let Some(index) = existing
            && self.processes[index].exited.borrow().is_none()
        {
            bail!("{} is already running", spec.name);
        }
        let mut child = command(&spec)?
            .spawn()
            .with_context(|| format!("cannot start {} ({})", spec.name, spec.program.display()))?;
        let pid = child.id().context("a just-started child has no pid")?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (exited_tx, exited) = watch::channel(None);
        let watcher = tokio::spawn(watch_child(
            child.stdout.take(),
            child,
            spec.name.clone(),
            spec.log.clone(),
            stopping.clone(),
            exited_tx,
            self.events.clone(),
        ));
        let process = Process {
            spec,
            pid,
            stopping,
            exited,
            watcher: Some(watcher),
        };
        match existing {
            Some(index) => self.processes[index] = process,
            None => self.processes.push(process),
        }
        Ok(pid)
    }

    /// Starts a stopped component again with the same command and environment.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<u32> {
        let index = self
            .index(name)
            .with_context(|| format!("no component named {name}"))?;
        let spec = self.processes[index].spec.clone();
        self.spawn(spec)
    }

    /// How a component was (last) started.
    pub fn spec(&self, name: &str) -> Option<&ProcessSpec> {
        self.index(name).map(|index| &self.processes[index].spec)
    }

    /// Stops one component and waits for it to be gone.
    pub async fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self
            .index(name)
            .with_context(|| format!("no component named {name}"))?;
        stop_process(&mut self.processes[index]).await
    }

    /// Stops every component, the last started first. Returns the components that would not die.
    pub async fn stop_all(&mut self) -> Vec<String> {
        let mut stubborn = Vec::new();
        for process in self.processes.iter_mut().rev() {
            if let Err(error) = stop_process(process).await {
                stubborn.push(format!("{}: {error:#}", process.spec.name));
            }
        }
        stubborn
    }

    /// The exit status of a component that has exited.
    pub fn exit_status(&self, name: &str) -> Option<ExitStatus> {
        self.index(name)
            .and_then(|index| *self.processes[index].exited.borrow())
    }

    /// The log file of a component.
    pub fn log(&self, name: &str) -> Option<&Path> {
        self.index(name)
            .map(|index| self.processes[index].spec.log.as_path())
    }

    /// The pid of every component started, running or not.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|process| (process.spec.name.clone(), process.pid))
            .collect()
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.processes
            .iter()
            .position(|process| process.spec.name == name)
    }
}

fn command(spec: &ProcessSpec) -> anyhow::Result<Command> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("cannot open {}", spec.log.display()))?;
    let stderr = log
        .try_clone()
        .with_context(|| format!("cannot share {}", spec.log.display()))?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(
            INHERITED_ENV
                .iter()
                .filter_map(|name| std::env::var_os(name).map(|value| (name, value))),
        )
        .envs(spec.env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(if spec.stdout_lines {
            Stdio::piped()
        } else {
            Stdio::from(log)
        })
        .stderr(Stdio::from(stderr))
        // Its own process group: the terminal's Ctrl-C reaches local-mesh only, which then stops
        // the components in order; and a signal to the group reaches anything the child started.
        .process_group(0)
        .kill_on_drop(true);
    // The kernel sends the signal when the *thread* that spawned the child ends, so spawn from
    // the main thread or a runtime worker (which live as long as local-mesh), never from
    // spawn_blocking.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
}

async fn watch_child(
    stdout: Option<tokio::process::ChildStdout>,
    mut child: Child,
    name: String,
    log: PathBuf,
    stopping: Arc<AtomicBool>,
    exited: watch::Sender<Option<ExitStatus>>,
    events: mpsc::UnboundedSender<Event>,
) {
    if let Some(stdout) = stdout {
        let mut lines = BufReader::new(stdout).lines();
        // Ends at EOF, i.e. when the child exits (or closes stdout).
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = events.send(Event::Line {
                name: name.clone(),
                line,
            });
        }
    }
    let status = match child.wait().await {
        Ok(status) => status,
        Err(error) => {
            tracing::error!(%error, component = %name, "cannot wait for the process");
            return;
        }
    };
    exited.send_replace(Some(status));
    if !stopping.load(Ordering::SeqCst) {
        let _ = events.send(Event::Exited { name, status, log });
    }
}

async fn stop_process(process: &mut Process) -> anyhow::Result<()> {
    process.stopping.store(true, Ordering::SeqCst);
    let group = process.pid as libc::pid_t;
    for (signal, grace) in [(libc::SIGTERM, STOP_GRACE), (libc::SIGKILL, STOP_GRACE)] {
        if process.exited.borrow().is_some() {
            break;
        }
        // SAFETY: kill has no memory effects; the group is ours (process_group(0) at spawn) and
        // not yet reaped, so its id cannot have been reused.
        unsafe {
            libc::kill(-group, signal);
        }
        let exited = tokio::time::timeout(grace, process.exited.wait_for(Option::is_some)).await;
        if matches!(exited, Ok(Ok(_))) {
            break;
        }
    }
    if process.exited.borrow().is_none() {
        bail!("pid {} still running after SIGKILL", process.pid);
    }
    // Then the watcher has delivered every line of stdout.
    if let Some(watcher) = process.watcher.take() {
        let _ = watcher.await;
    }
    Ok(())
}

/// The last `lines` lines of a log file, for reporting a component that died.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}
