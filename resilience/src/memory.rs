//! A process's memory as the kernel accounts it: resident set now (`VmRSS`) and its peak
//! since start (`VmHWM`), from `/proc/<pid>/status`; and its open file descriptors, which
//! show whether connections are let go.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Resident memory of one process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident now.
    pub rss_kib: u64,
    /// The highest resident size since the process started.
    pub hwm_kib: u64,
}

impl Memory {
    /// Reads `/proc/<pid>/status`; None once the process is gone.
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(Self {
            rss_kib: field_kib(&status, "VmRSS:")?,
            hwm_kib: field_kib(&status, "VmHWM:")?,
        })
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmRSS {} VmHWM {}", mib(self.rss_kib), mib(self.hwm_kib))
    }
}

/// How many file descriptors `pid` has open (sockets included); None once it is gone.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Waits until `pid`'s open descriptors are at most `target`, or, without a target, until
/// they stop changing (two reads 100ms apart agree); returns their number. Fails the test
/// after `bound`.
pub async fn settled_fds(pid: u32, target: Option<usize>, bound: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + bound;
    let mut last = usize::MAX;
    loop {
        let now = open_fds(pid).expect("the process is running");
        match target {
            Some(target) if now <= target => return now,
            None if now == last => return now,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} still holds {now} descriptors after {bound:?} (expected {target:?})"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `12.3 MiB`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `VmRSS:    12345 kB` → 12345.
fn field_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Samples a process's resident size in the background and keeps the largest value seen.
pub struct Sampler {
    peak_rss_kib: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> Self {
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (peak, count) = (Arc::clone(&peak_rss_kib), Arc::clone(&samples));
        let task = tokio::spawn(async move {
            let mut timer = tokio::time::interval(every);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                timer.tick().await;
                let Some(memory) = Memory::of(pid) else {
                    return;
                };
                peak.fetch_max(memory.rss_kib, Ordering::Relaxed);
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self {
            peak_rss_kib,
            samples,
            task,
        }
    }

    /// Stops sampling; returns (largest resident size seen in KiB, samples taken).
    pub fn stop(self) -> (u64, u64) {
        self.task.abort();
        (
            self.peak_rss_kib.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let memory = Memory::of(std::process::id()).expect("own /proc status");
        assert!(
            memory.rss_kib > 0 && memory.hwm_kib >= memory.rss_kib,
            "{memory}"
        );
        let before = open_fds(std::process::id()).unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(open_fds(std::process::id()), Some(before + 1));
        drop(file);
    }

    #[test]
    fn parses_the_status_format() {
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(field_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(field_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(field_kib(status, "VmSwap:"), None);
        assert_eq!(mib(1536), "1.5 MiB");
    }
}
