//! The fixed-rate schedule: tick k is due at `start + k * interval`, whatever earlier calls
//! took, so the period never drifts.

use std::time::Duration;

use tokio::time::Instant;

/// Tick times of one run.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    interval: Duration,
    next: u64,
}

/// The tick to fire now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Its number, counted from 0 at the start.
    pub index: u64,
    /// Ticks passed over because their time went by while the caller could not run.
    pub skipped: u64,
    /// How far behind the first of those the caller woke up (zero-ish when nothing was skipped).
    pub behind: Duration,
}

impl Schedule {
    pub fn new(start: Instant, interval: Duration) -> Self {
        Self {
            start,
            interval,
            next: 0,
        }
    }

    /// When tick `index` is due.
    pub fn due(&self, index: u64) -> Instant {
        let offset = self.interval.as_nanos().saturating_mul(u128::from(index));
        self.start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// When the next tick is due.
    pub fn next_due(&self) -> Instant {
        self.due(self.next)
    }

    /// Takes the tick to fire at `now`, which is at or after [`Self::next_due`]. When the
    /// caller woke up a whole interval or more late, the ticks whose time has fully passed are
    /// skipped rather than fired in a burst, and the latest due tick fires: the rate stays
    /// what the user asked for, and the schedule stays on `start + k * interval`.
    pub fn take(&mut self, now: Instant) -> Tick {
        let first_due = self.next;
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let latest_due = u64::try_from(elapsed / self.interval.as_nanos()).unwrap_or(u64::MAX);
        let index = latest_due.max(first_due);
        self.next = index.saturating_add(1);
        Tick {
            index,
            skipped: index - first_due,
            behind: now.saturating_duration_since(self.due(first_due)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ticks_stay_on_the_grid_whatever_the_wake_up_jitter() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 100 * MS);
        for k in 0..50u32 {
            assert_eq!(schedule.next_due(), start + 100 * MS * k);
            // Waking up late (but within the interval) does not shift later ticks.
            let tick = schedule.take(schedule.next_due() + 30 * MS);
            assert_eq!((tick.index, tick.skipped), (u64::from(k), 0));
        }
        assert_eq!(schedule.next_due(), start + 100 * MS * 50);
    }

    #[test]
    fn whole_intervals_missed_are_skipped_not_burst() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 100 * MS);
        schedule.take(start);
        // Suspended from tick 1 (due at 100ms) until 480ms: ticks 1, 2 and 3 have passed.
        let tick = schedule.take(start + 480 * MS);
        assert_eq!(tick.index, 4);
        assert_eq!(tick.skipped, 3);
        assert_eq!(tick.behind, 380 * MS);
        assert_eq!(schedule.next_due(), start + 500 * MS);
    }

    #[test]
    fn an_early_wake_up_fires_the_due_tick() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 100 * MS);
        let tick = schedule.take(start);
        assert_eq!((tick.index, tick.skipped), (0, 0));
        // Even if called before the next tick is due, it takes that tick (never an older one).
        let tick = schedule.take(start + 10 * MS);
        assert_eq!((tick.index, tick.skipped), (1, 0));
    }
}
