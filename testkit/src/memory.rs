//! A process as the kernel accounts it, from `/proc`: resident memory now (`VmRSS`) and its peak
//! (`VmHWM`), CPU time, open file descriptors (which show whether connections are let go), and
//! the same summed over a process and its direct children (a server's workers).

use std::fmt;
use std::io;
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
            rss_kib: status_kib(&status, "VmRSS:")?,
            hwm_kib: status_kib(&status, "VmHWM:")?,
        })
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmRSS {} VmHWM {}", mib(self.rss_kib), mib(self.hwm_kib))
    }
}

/// `12.3 MiB`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A `kB` figure of `/proc/<pid>/status`: `VmRSS:    12345 kB` → 12345.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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

/// Memory and CPU time of a process together with its direct children.
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
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            // A child that ended between listing and reading.
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
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

/// The direct children of `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat_field(&stat, 1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

/// Field `index` of `/proc/<pid>/stat` counted after the command name (0 = state, 1 = ppid);
/// the name is skipped by its closing parenthesis because it may hold spaces.
pub fn stat_field(stat: &str, index: usize) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(index)
}

/// utime + stime (fields 14 and 15 of stat(5)), in clock ticks.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let user: u64 = stat_field(stat, 11)?.parse().ok()?;
    let system: u64 = stat_field(stat, 12)?.parse().ok()?;
    Some(user + system)
}

/// Clock ticks per second, the unit of `/proc`'s CPU times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf(3) reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
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
        let usage = tree_usage(std::process::id()).unwrap();
        assert!(usage.processes >= 1 && usage.rss_kib >= memory.rss_kib / 2);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn counts_descriptors_of_another_process() {
        // This test process opens and closes descriptors in other tests' threads, so two quiet
        // children are compared instead: the same inherited ones, and one more in the second.
        let sleeper = |script: &str| {
            std::process::Command::new("bash")
                .args(["-c", script])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut plain = sleeper("exec sleep 30");
        let mut one_more = sleeper("exec 63</dev/null; exec sleep 30");
        // Counted once both have become `sleep`.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let is_sleep = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm == "sleep\n")
        };
        while !(is_sleep(plain.id()) && is_sleep(one_more.id())) {
            assert!(
                std::time::Instant::now() < deadline,
                "the children never slept"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let counts = (open_fds(plain.id()), open_fds(one_more.id()));
        let usage = tree_usage(plain.id());
        for child in [&mut plain, &mut one_more] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let (Some(plain_fds), Some(more_fds)) = counts else {
            panic!("no descriptors read: {counts:?}");
        };
        assert!(plain_fds >= 3, "{plain_fds}");
        assert_eq!(more_fds, plain_fds + 1);
        assert_eq!(usage.unwrap().processes, 1);
        assert_eq!(open_fds(plain.id()), None, "gone once reaped");
    }

    #[test]
    fn parses_the_status_and_stat_formats() {
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(mib(1536), "1.5 MiB");
        let stat = "42 (a (b) c) S 7 42 42 0 -1 4194304 10 0 0 0 15 6 0 0 20 0 1 0";
        assert_eq!(stat_field(stat, 0), Some("S"));
        assert_eq!(stat_field(stat, 1), Some("7"));
        assert_eq!(stat_cpu_ticks(stat), Some(21));
    }
}
