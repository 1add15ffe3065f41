//! A program under test as a child process: its own process group (so cleanup reaches whatever
//! it started), killed with that group when dropped, its stderr (its log) collected line by
//! line, and every wait bounded.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Where the child's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Discarded.
    Null,
    /// Read line by line with [`ChildProcess::next_stdout_line`].
    Piped,
    /// Into the same log as stderr.
    Log,
}

/// A running child process. Dropping it kills its whole process group.
pub struct ChildProcess {
    name: String,
    child: Child,
    pid: u32,
    log: Arc<Log>,
    readers: Vec<JoinHandle<()>>,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
}

#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Notify,
}

impl ChildProcess {
    /// Starts `command` (named `name` in messages) with stdin closed, stderr collected and
    /// stdout as asked, in a new process group. The command's environment is the caller's
    /// choice: use `env_clear()` so nothing of the test's own (proxy variables in particular)
    /// leaks in.
    pub fn spawn(name: &str, mut command: Command, stdout: Stdout) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(match stdout {
                Stdout::Null => Stdio::null(),
                Stdout::Piped | Stdout::Log => Stdio::piped(),
            })
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let pid = child.id().expect("a new child has a pid");
        let log = Arc::new(Log::default());
        let mut readers = vec![collect(child.stderr.take().expect("piped"), &log)];
        let mut piped = None;
        match stdout {
            Stdout::Null => {}
            Stdout::Piped => {
                piped = child
                    .stdout
                    .take()
                    .map(|stdout| BufReader::new(stdout).lines())
            }
            Stdout::Log => readers.push(collect(child.stdout.take().expect("piped"), &log)),
        }
        Self {
            name: name.to_owned(),
            child,
            pid,
            log,
            readers,
            stdout: piped,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its memory now; None once it has exited.
    pub fn memory(&self) -> Option<crate::memory::Memory> {
        crate::memory::Memory::of(self.pid)
    }

    /// Its log (stderr, and stdout with [`Stdout::Log`]) so far.
    pub fn log(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    /// Waits for the first log line for which `pick` gives a value, and returns that value.
    /// Fails the test after `bound`, or when the process exits first, showing its log.
    pub async fn wait_for_line<T>(
        &mut self,
        what: &str,
        bound: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let log = Arc::clone(&self.log);
            let grew = log.grew.notified();
            let found = self.log.lines.lock().unwrap().iter().find_map(|l| pick(l));
            if let Some(found) = found {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers take in the last lines before showing the log.
                self.finish_reading().await;
                if let Some(found) = self.log.lines.lock().unwrap().iter().find_map(|l| pick(l)) {
                    return found;
                }
                panic!(
                    "{} exited ({status}) before logging {what}:\n{}",
                    self.name,
                    self.log()
                );
            }
            // A bounded nap too: an exit does not grow the log.
            let nap = Duration::from_millis(50);
            if tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + nap), grew)
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                panic!(
                    "{} did not log {what} within {bound:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
        }
    }

    /// Waits for a JSON log line (`LOG_FORMAT=json`) whose message is `message`; returns it.
    pub async fn wait_for_message(&mut self, message: &str, bound: Duration) -> serde_json::Value {
        self.wait_for_line(&format!("{message:?}"), bound, |line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .filter(|event| event["message"] == message)
        })
        .await
    }

    /// The next line of its stdout (None at its end), failing the test after `bound`.
    pub async fn next_stdout_line(&mut self, bound: Duration) -> Option<String> {
        let lines = self.stdout.as_mut().expect("stdout was not piped");
        tokio::time::timeout(bound, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no stdout line from {} within {bound:?}", self.name))
            .expect("read stdout")
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this value owns and has not reaped.
        let result = unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill({}, {signal}) failed", self.pid);
    }

    /// Sends SIGTERM to the process (as Kubernetes and Diego stop a program).
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal` to its whole process group.
    pub fn signal_group(&self, signal: i32) {
        // SAFETY: killpg(2) on the group this child leads (spawned with process_group(0)).
        let result = unsafe { libc::killpg(self.pid as libc::pid_t, signal) };
        assert_eq!(result, 0, "killpg({}, {signal}) failed", self.pid);
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for it to exit and for the rest of its log, failing the test after `bound`.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let status = self.wait_exit_within(bound).await.unwrap_or_else(|| {
            panic!(
                "{} did not exit within {bound:?}:\n{}",
                self.name,
                self.log()
            )
        });
        self.finish_reading().await;
        status
    }

    /// Waits (briefly: the group may keep the pipes open) for the log readers to reach the end
    /// of the output. A reader is awaited until it has finished, never again after.
    async fn finish_reading(&mut self) {
        for reader in &mut self.readers {
            if !reader.is_finished() {
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut *reader).await;
            }
        }
    }

    /// Waits up to `bound` for it to exit; None if it still runs.
    pub async fn wait_exit_within(&mut self, bound: Duration) -> Option<ExitStatus> {
        match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(status) => Some(status.expect("wait for the child")),
            Err(_) => None,
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: killpg(2) on the group this child leads; an already empty group only
            // makes the call fail.
            unsafe { libc::killpg(self.pid as libc::pid_t, libc::SIGKILL) };
        }
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Runs `command` (named `name` in messages) to its exit with stdin closed and returns what it
/// printed; fails the test after `bound`, and the child is killed then. As with
/// [`ChildProcess::spawn`], the environment is the caller's choice (`env_clear()`).
pub async fn output(name: &str, command: &mut Command, bound: Duration) -> std::process::Output {
    command.stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(bound, command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not exit within {bound:?}"))
        .unwrap_or_else(|error| panic!("cannot run {name}: {error}"))
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, log: &Arc<Log>) -> JoinHandle<()> {
    let log = Arc::clone(log);
    let mut lines = BufReader::new(stream).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.lines.lock().unwrap().push(line);
            log.grew.notify_waiters();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bash(script: &str) -> Command {
        let mut command = Command::new("bash");
        command.args(["-c", script]).env_clear();
        command
    }

    #[tokio::test]
    async fn collects_the_log_and_waits_for_a_line_and_the_exit() {
        let mut child = ChildProcess::spawn(
            "bash",
            bash("echo one >&2; echo out; sleep 0.2; echo 'port=4242' >&2"),
            Stdout::Log,
        );
        let port = child
            .wait_for_line("the port", Duration::from_secs(10), |line| {
                line.strip_prefix("port=").map(str::to_owned)
            })
            .await;
        assert_eq!(port, "4242");
        let status = child.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success());
        let log = child.log();
        assert!(log.contains("one") && log.contains("out"), "{log}");
    }

    #[tokio::test]
    async fn output_gives_the_exit_and_both_streams() {
        let out = output(
            "bash",
            &mut bash("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }

    #[tokio::test]
    #[should_panic(expected = "did not exit within")]
    async fn output_fails_a_child_that_outlives_its_bound() {
        output("bash", &mut bash("sleep 60"), Duration::from_millis(200)).await;
    }

    #[tokio::test]
    #[should_panic(expected = "exited")]
    async fn an_exit_before_the_line_fails_at_once() {
        let mut child = ChildProcess::spawn("bash", bash("echo bye >&2"), Stdout::Null);
        child
            .wait_for_line("a port", Duration::from_secs(30), |_| None::<()>)
            .await;
    }

    #[tokio::test]
    async fn dropping_it_kills_the_whole_group() {
        let mut child = ChildProcess::spawn(
            "bash",
            bash("sleep 60 & echo \"grandchild=$!\" >&2; wait"),
            Stdout::Null,
        );
        let grandchild: i32 = child
            .wait_for_line("the grandchild", Duration::from_secs(10), |line| {
                line.strip_prefix("grandchild=")?.parse().ok()
            })
            .await;
        drop(child);
        crate::eventually(
            "the grandchild to be gone",
            Duration::from_secs(10),
            || async {
                // Gone, or a zombie waiting for init to reap it.
                std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                    .map_or(true, |stat| stat.contains(") Z "))
            },
        )
        .await;
    }
}
