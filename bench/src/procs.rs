//! Child processes: starting them pinned to CPUs with a clean environment, stopping them, and
//! reading their memory and CPU time from /proc.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::config::Cpus;

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
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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

/// Memory and CPU time of a process together with its direct children (nginx's workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of VmRSS.
    pub rss_kib: u64,
    /// Sum of VmHWM (each process's own peak).
    pub hwm_kib: u64,
    /// user + system time, in clock ticks.
    pub cpu_ticks: u64,
    pub processes: usize,
}

/// Reads [`Usage`] of `root` and its direct children.
pub fn tree_usage(root: u32) -> io::Result<Usage> {
    let mut usage = Usage::default();
    for pid in std::iter::once(root).chain(children(root)) {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            // A child that ended between listing and reading.
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        usage.rss_kib += status_kib(&status, "VmRSS:").unwrap_or(0);
        usage.hwm_kib += status_kib(&status, "VmHWM:").unwrap_or(0);
        usage.cpu_ticks += stat_cpu_ticks(&stat).unwrap_or(0);
        usage.processes += 1;
    }
    if usage.processes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {root} is gone"),
        ));
    }
    Ok(usage)
}

fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat_field(&stat, 1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

/// A `kB` figure from /proc/<pid>/status.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Field `index` of /proc/<pid>/stat counted after the command name (0 = state, 1 = ppid);
/// the name is skipped by its closing parenthesis because it may hold spaces.
fn stat_field(stat: &str, index: usize) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(index)
}

/// utime + stime (fields 14 and 15 of stat(5)).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let user: u64 = stat_field(stat, 11)?.parse().ok()?;
    let system: u64 = stat_field(stat, 12)?.parse().ok()?;
    Some(user + system)
}

/// Clock ticks per second, the unit of /proc's CPU times.
pub fn clock_ticks_per_second() -> anyhow::Result<u64> {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("cannot run getconf CLK_TCK")?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_spaces_in_the_name() {
        let stat = "42 (nginx: worker) S 7 42 42 0 -1 4194624 10 0 0 0 25 13 0 0 20 0 1 0";
        assert_eq!(stat_field(stat, 0), Some("S"));
        assert_eq!(stat_field(stat, 1), Some("7"));
        assert_eq!(stat_cpu_ticks(stat), Some(38));
    }

    #[test]
    fn status_figures_in_kib() {
        let status = "Name:\tx\nVmHWM:\t    6888 kB\nVmRSS:\t    4124 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(4124));
        assert_eq!(status_kib(status, "VmHWM:"), Some(6888));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

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
