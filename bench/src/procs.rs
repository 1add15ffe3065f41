//! Child processes: starting them pinned to CPUs with a clean environment with their output in
//! log files, and stopping them. Their memory and CPU time come from the kit's /proc reader.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::config::Cpus;

/// The /proc readings, from the kit the tests read them with.
pub use demo_testkit::memory::{Usage, clock_ticks_per_second, tree_usage};

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A command for `program`, pinned to `cpus` with taskset (which execs the program, so the
/// child's pid is the program's), with an environment of PATH alone: no RUST_LOG, no proxy
/// variables from the caller's shell change what is measured.
pub fn command(program: &Path, cpus: &Cpus) -> Command {
    let mut command = match cpus {
        Cpus::All => Command::new(program),
        Cpus::List(list) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(list).arg(program);
            command
        }
    };
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// A running child; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Running {
    pub name: String,
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Running {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, command: Command, log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with_stdout(name, command, log, log)
    }

    /// Starts `command` with stdout appended to `stdout` and stderr to `log`.
    pub fn spawn_with_stdout(
        name: &str,
        mut command: Command,
        stdout: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let open = |path: &Path| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(open(stdout)?)
            .stderr(open(log)?)
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", command.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `deadline` for the child to end on its own.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The last lines of the child's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// SIGTERM (nginx's master then takes its workers down), SIGKILL if that does not end it.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: kill(2) on the pid of a child this value owns and has not reaped.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        if self.wait_until(Instant::now() + STOP_GRACE).is_none() {
            tracing::warn!(name = %self.name, "did not stop on SIGTERM; killing it");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_live_process_tree_and_stops_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = command(Path::new("sh"), &Cpus::All);
        // The trap takes the background sleep down with the shell.
        command
            .arg("-c")
            .arg("trap 'kill $!; exit 0' TERM; sleep 30 & wait");
        let mut running =
            Running::spawn("sh", command, &dir.path().join("sh.log")).expect("sh starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        let usage = loop {
            let usage = tree_usage(running.pid()).expect("sh is alive");
            if usage.processes == 2 || Instant::now() > deadline {
                break usage;
            }
            thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(usage.processes, 2, "sh and its sleep");
        assert!(usage.rss_kib > 0 && usage.hwm_kib >= usage.rss_kib);
        running.stop();
        assert!(running.exited().is_some());
    }
}
