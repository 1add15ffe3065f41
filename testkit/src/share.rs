//! Binomial tolerances for share tests ("about 20% of calls abort", "about 30% reach v1").
//!
//! Each of `n` calls independently lands in the share with probability `p`, so the count is
//! Binomial(n, p). [`Acceptance::new`] gives the narrowest interval of counts, tails cut evenly,
//! that holds the count of a correct policy except with at most the stated false-alarm rate;
//! [`Acceptance::rejection`] says how often a given wrong policy falls outside it, so a test can
//! state (and check) the nearest wrong policy it catches, and [`calls_needed`] picks `n`.

use std::fmt;

/// The counts a share test accepts for `n` calls at share `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acceptance {
    pub n: u64,
    pub p: f64,
    /// Lowest accepted count.
    pub low: u64,
    /// Highest accepted count.
    pub high: u64,
    /// The chance a correct policy's count falls outside `low..=high` (at most the rate asked).
    pub false_alarm: f64,
}

impl Acceptance {
    /// The interval for `n` calls at share `p` that a correct policy leaves with probability at
    /// most `false_alarm` (at most half of it in each tail).
    pub fn new(n: u64, p: f64, false_alarm: f64) -> Self {
        assert!((0.0..=1.0).contains(&p), "share {p} is not a probability");
        assert!(
            false_alarm > 0.0 && false_alarm < 1.0,
            "false-alarm rate {false_alarm} is not in (0, 1)"
        );
        let pmf = pmf(n, p);
        let tail = false_alarm / 2.0;
        // low: the largest k with P(X < k) <= tail.
        let mut below = 0.0;
        let mut low = 0;
        for (k, mass) in pmf.iter().enumerate() {
            if below + mass > tail {
                low = k as u64;
                break;
            }
            below += mass;
        }
        // high: the smallest k with P(X > k) <= tail.
        let mut above = 0.0;
        let mut high = n;
        for (k, mass) in pmf.iter().enumerate().rev() {
            if above + mass > tail {
                high = k as u64;
                break;
            }
            above += mass;
        }
        Self {
            n,
            p,
            low,
            high,
            false_alarm: below + above,
        }
    }

    pub fn contains(&self, count: u64) -> bool {
        (self.low..=self.high).contains(&count)
    }

    /// The chance that `n` calls of a policy with share `wrong_p` give a count outside the
    /// interval: how often this test catches that policy.
    pub fn rejection(&self, wrong_p: f64) -> f64 {
        let pmf = pmf(self.n, wrong_p);
        pmf.iter()
            .enumerate()
            .filter(|(k, _)| !self.contains(*k as u64))
            .map(|(_, mass)| mass)
            .sum::<f64>()
            .min(1.0)
    }

    /// Fails (with the numbers) unless this interval catches a policy with share `wrong_p` at
    /// least with probability `power`; returns a sentence saying what it rejects.
    pub fn assert_rejects(&self, wrong_p: f64, power: f64) -> String {
        let rejection = self.rejection(wrong_p);
        assert!(
            rejection >= power,
            "{self} catches share {wrong_p} only with probability {rejection:.6} (< {power}); \
             make more calls (calls_needed)"
        );
        format!("{self}; rejects share {wrong_p} with probability {rejection:.6}")
    }

    /// Fails the test unless `count` is in the interval, naming `what` and the numbers.
    pub fn assert_count(&self, what: &str, count: u64) {
        assert!(
            self.contains(count),
            "{what}: {count} of {} calls is outside {self}",
            self.n
        );
    }
}

impl fmt::Display for Acceptance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}..={} of {} at share {} (false alarm {:.2e})",
            self.low, self.high, self.n, self.p, self.false_alarm
        )
    }
}

/// The fewest calls whose [`Acceptance`] for share `p` at `false_alarm` catches a policy with
/// share `wrong_p` with probability at least `power`; None beyond `max_n` calls.
pub fn calls_needed(p: f64, wrong_p: f64, false_alarm: f64, power: f64, max_n: u64) -> Option<u64> {
    // Power grows with n up to the lattice's small wobbles: find the first n that reaches it,
    // coarsely, then refine below it.
    let reaches = |n: u64| Acceptance::new(n, p, false_alarm).rejection(wrong_p) >= power;
    let mut n = 1;
    while !reaches(n) {
        if n >= max_n {
            return None;
        }
        n = (n * 2).min(max_n);
    }
    let mut first = n;
    for candidate in (n / 2..n).rev() {
        if reaches(candidate) {
            first = candidate;
        }
    }
    Some(first)
}

/// P(X = k) for k in 0..=n, X ~ Binomial(n, p), computed in log space (no underflow for the
/// thousands of calls a share test makes).
fn pmf(n: u64, p: f64) -> Vec<f64> {
    let n_usize = n as usize;
    if p <= 0.0 {
        let mut pmf = vec![0.0; n_usize + 1];
        pmf[0] = 1.0;
        return pmf;
    }
    if p >= 1.0 {
        let mut pmf = vec![0.0; n_usize + 1];
        pmf[n_usize] = 1.0;
        return pmf;
    }
    let (ln_p, ln_q) = (p.ln(), (1.0 - p).ln());
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut pmf = Vec::with_capacity(n_usize + 1);
    for k in 0..=n {
        if k > 0 {
            ln_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        pmf.push((ln_choose + k as f64 * ln_p + (n - k) as f64 * ln_q).exp());
    }
    pmf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_distribution_matches_known_values() {
        let pmf = pmf(10, 0.5);
        assert!((pmf[5] - 252.0 / 1024.0).abs() < 1e-12);
        assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let big = pmf_sum(5000, 0.2);
        assert!((big - 1.0).abs() < 1e-9, "{big}");
        assert_eq!(super::pmf(3, 0.0), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(super::pmf(3, 1.0), [0.0, 0.0, 0.0, 1.0]);
    }

    fn pmf_sum(n: u64, p: f64) -> f64 {
        pmf(n, p).iter().sum()
    }

    #[test]
    fn the_interval_holds_a_fair_coin_as_tables_give_it() {
        // Binomial(10, 0.5): P(X <= 1) = 11/1024 ≈ 0.0107, P(X <= 2) = 56/1024 ≈ 0.0547; so at a
        // 5% false-alarm rate (2.5% per tail) the interval is 2..=8.
        let acceptance = Acceptance::new(10, 0.5, 0.05);
        assert_eq!((acceptance.low, acceptance.high), (2, 8));
        assert!((acceptance.false_alarm - 22.0 / 1024.0).abs() < 1e-12);
        assert!(acceptance.contains(2) && acceptance.contains(8));
        assert!(!acceptance.contains(1) && !acceptance.contains(9));
    }

    #[test]
    fn the_false_alarm_rate_is_never_exceeded_and_the_interval_is_tight() {
        for (n, p, alpha) in [
            (200, 0.2, 1e-3),
            (1000, 0.3, 1e-6),
            (60, 0.1, 0.01),
            (50, 0.0, 0.01),
        ] {
            let acceptance = Acceptance::new(n, p, alpha);
            assert!(acceptance.false_alarm <= alpha, "{acceptance}");
            // One count narrower on either side would exceed half the rate in that tail.
            let pmf = pmf(n, p);
            let below: f64 = pmf[..acceptance.low as usize].iter().sum();
            let above: f64 = pmf[acceptance.high as usize + 1..].iter().sum();
            assert!(below <= alpha / 2.0 && above <= alpha / 2.0, "{acceptance}");
            if acceptance.low > 0 {
                assert!(
                    below + pmf[acceptance.low as usize] > alpha / 2.0,
                    "{acceptance}"
                );
            }
            if acceptance.high < n {
                assert!(
                    above + pmf[acceptance.high as usize] > alpha / 2.0,
                    "{acceptance}"
                );
            }
        }
    }

    #[test]
    fn it_says_which_wrong_shares_it_catches() {
        // 20% aborts against a wrongly configured 10%, at one false alarm in a million runs.
        let n = calls_needed(0.2, 0.1, 1e-6, 0.999, 100_000).unwrap();
        let acceptance = Acceptance::new(n, 0.2, 1e-6);
        assert!(acceptance.rejection(0.1) >= 0.999, "{acceptance}");
        assert!(Acceptance::new(n - 1, 0.2, 1e-6).rejection(0.1) < 0.999 || n < 10);
        let said = acceptance.assert_rejects(0.1, 0.999);
        assert!(said.contains("rejects share 0.1"), "{said}");
        // The right share is rejected only at the false-alarm rate.
        assert!((acceptance.rejection(0.2) - acceptance.false_alarm).abs() < 1e-12);
        // A wide interval at few calls catches almost nothing.
        assert!(Acceptance::new(20, 0.2, 1e-6).rejection(0.1) < 0.01);
        // 30% against 40% is found too; a share 1 point off is beyond 500 calls.
        assert!(calls_needed(0.3, 0.4, 1e-6, 0.999, 100_000).is_some());
        assert_eq!(calls_needed(0.3, 0.31, 1e-6, 0.999, 500), None);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_count_outside_fails_naming_the_numbers() {
        Acceptance::new(100, 0.5, 1e-3).assert_count("v1 answers", 20);
    }
}
