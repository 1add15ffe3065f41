//! What the resilience suite's test files share: the demo's real binaries started as child
//! processes (built first when missing or older than their sources), their memory read from
//! `/proc`, bounded waits, a seeded random source, and the one-line figures each test prints.
//!
//! The tests themselves live in `tests/`; `README.md` lists the figures they prove.

pub mod client;
pub mod memory;
pub mod program;

use std::future::Future;
use std::time::Duration;

pub use client::{Connection, Exchange, get_once};
pub use memory::Memory;
pub use program::{Program, ProxyProcess, binary, start_proxy};

/// Awaits `future`, failing the test if it takes longer than `bound`.
pub async fn within<F: Future>(what: &str, bound: Duration, future: F) -> F::Output {
    tokio::time::timeout(bound, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {bound:?}"))
}

/// Polls `check` every 20ms until it holds, failing the test after `bound`.
pub async fn eventually<F, Fut>(what: &str, bound: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, bound, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
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
