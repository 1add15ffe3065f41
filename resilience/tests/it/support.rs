//! What the suite's files share beyond the test kit: the demo's real binaries (built first
//! when missing or older than their sources) started as child processes, the proxy on ports the
//! OS picked, a seeded random source, percentiles, the one-line figures each test prints, and a
//! lock that keeps load tests apart from each other and from the tests that measure time.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use demo_testkit::exchange::{Connection, Exchange, get_once};
pub use demo_testkit::process::Stdout;
pub use demo_testkit::{ChildProcess as Program, within};
use tokio::process::Command;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Held by a test that loads the machine (hundreds of connections, floods): no other such test
/// and no timing test runs meanwhile, as when each file was its own test binary.
pub async fn loading() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// [`loading`] for code outside a runtime (each case of a property test, which keeps a core
/// busy).
pub fn loading_blocking() -> RwLockWriteGuard<'static, ()> {
    MACHINE.blocking_write()
}

/// Held by a test that measures time on a schedule: it may run next to other such tests, never
/// next to a load test.
pub async fn measuring() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

static MACHINE: RwLock<()> = RwLock::const_new(());

/// Cargo gives a test the path of its own package's binaries only, so the suite takes the
/// three programs from the cargo output directory it runs from (`target/<profile>`), and runs
/// `cargo build` for those that are missing or older than their sources. Under
/// `cargo test --workspace` (CI) they are already built by then, and nothing is rebuilt.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_owned()
}
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

/// Starts `package`'s binary with `args` and exactly `env` (nothing of the test's own
/// environment, proxy variables in particular, leaks in); stderr is its log.
pub fn start_program(
    package: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdout: Stdout,
) -> Program {
    let mut command = Command::new(binary(package));
    command.args(args).env_clear().envs(env.iter().copied());
    Program::spawn(package, command, stdout)
}

/// The proxy binary, listening on loopback ports the OS picked.
pub struct ProxyProcess {
    pub program: Program,
    /// The forwarding port.
    pub address: SocketAddr,
    /// The admin (health) port.
    pub admin: SocketAddr,
}

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
    let mut program = start_program("app-that-calls-externally", &[], &env, Stdout::Null);
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

/// Prints one figure of the suite as `resilience: <test>: <text>`, the lines README.md quotes
/// (shown by `cargo test -p resilience-tests -- --nocapture`).
pub fn figure(test: &str, text: impl std::fmt::Display) {
    eprintln!("resilience: {test}: {text}");
}

/// The seed of this run's random choices: `RESILIENCE_SEED` to replay a run, else the clock.
/// Printed by each test that uses it, so a failure can be replayed.
pub fn seed() -> u64 {
    match std::env::var("RESILIENCE_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RESILIENCE_SEED={text:?} is not a whole number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64),
    }
}

/// A small deterministic random source (SplitMix64): enough to pick faults, not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// Percentile `p` (0-100) of `samples`, which it sorts; zero for no samples.
pub fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let index = (samples.len() * p).div_ceil(100).saturating_sub(1);
    samples[index.min(samples.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_spreads() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            let value = a.below(6);
            assert_eq!(value, b.below(6));
            seen[value as usize] += 1;
        }
        assert!(seen.iter().all(|count| *count > 800), "{seen:?}");
    }

    #[test]
    fn percentiles_pick_the_right_sample() {
        let ms = Duration::from_millis;
        let mut samples: Vec<_> = (1..=100).rev().map(ms).collect();
        assert_eq!(percentile(&mut samples, 50), ms(50));
        assert_eq!(percentile(&mut samples, 99), ms(99));
        assert_eq!(percentile(&mut samples, 100), ms(100));
        assert_eq!(percentile(&mut [], 99), Duration::ZERO);
    }
}
