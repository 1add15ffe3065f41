//! Counts per distinct printed field (a body, or an error kind), rendered as `#` lines.

use std::collections::HashMap;

/// Distinct fields counted separately; further ones count together as [`OTHER_LABEL`], so an
/// upstream answering a different body every time cannot grow the caller's memory.
pub const MAX_DISTINCT: usize = 32;

/// The label of the fields beyond [`MAX_DISTINCT`].
pub const OTHER_LABEL: &str = "(other)";

/// Characters of a field shown in a summary; longer ones end in `…`.
const LABEL_CHARS: usize = 80;

/// Counts of printed fields.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    total: u64,
    counts: HashMap<String, u64>,
    other: u64,
}

impl Tally {
    pub fn add(&mut self, field: &str) {
        self.total += 1;
        if let Some(count) = self.counts.get_mut(field) {
            *count += 1;
        } else if self.counts.len() < MAX_DISTINCT {
            self.counts.insert(field.to_owned(), 1);
        } else {
            self.other += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Labels and counts, most frequent first (ties by label), [`OTHER_LABEL`] last.
    pub fn entries(&self) -> Vec<(&str, u64)> {
        let mut entries: Vec<(&str, u64)> = self
            .counts
            .iter()
            .map(|(label, count)| (label.as_str(), *count))
            .collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        if self.other > 0 {
            entries.push((OTHER_LABEL, self.other));
        }
        entries
    }

    /// `# <scope> 50 calls: 56% (28) <label> | 24% (12) <label> | ...`
    pub fn line(&self, scope: &str) -> String {
        let calls = if self.total == 1 { "call" } else { "calls" };
        let mut line = format!("# {scope} {} {calls}", self.total);
        for (index, (label, count)) in self.entries().into_iter().enumerate() {
            line.push_str(if index == 0 { ": " } else { " | " });
            line.push_str(&format!(
                "{}% ({count}) {}",
                percent(count, self.total),
                shortened(label)
            ));
        }
        line
    }
}

/// Rounded half up, so that 12.5% reads 13%.
fn percent(count: u64, total: u64) -> u64 {
    let (count, total) = (u128::from(count), u128::from(total));
    u64::try_from((count * 200 + total) / (total * 2)).unwrap_or(100)
}

fn shortened(label: &str) -> String {
    match label.char_indices().nth(LABEL_CHARS) {
        Some((cut, _)) => format!("{}…", &label[..cut]),
        None => label.to_owned(),
    }
}

/// The periodic summary: a line for the calls since the previous summary (`# last ...`), then
/// one for the whole run (`# total ...`). The first summary prints only the total, which is
/// then the same set of calls.
#[derive(Debug, Default)]
pub struct Summaries {
    window: Tally,
    total: Tally,
    printed: bool,
}

impl Summaries {
    pub fn record(&mut self, field: &str) {
        self.window.add(field);
        self.total.add(field);
    }

    /// Calls recorded since the previous summary.
    pub fn window_calls(&self) -> u64 {
        self.window.total()
    }

    /// The summary lines, and a new window.
    pub fn take_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::with_capacity(2);
        if self.printed {
            lines.push(self.window.line("last"));
        }
        lines.push(self.total.line("total"));
        self.window = Tally::default();
        self.printed = true;
        lines
    }

    /// The summary at the end of a run, unless the last periodic one already covered every
    /// call.
    pub fn take_final_lines(&mut self) -> Vec<String> {
        if self.printed && self.window.total() == 0 {
            return Vec::new();
        }
        self.take_lines()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_sorts_by_count_with_shares() {
        let mut tally = Tally::default();
        for (field, times) in [("v1", 12), ("abort", 10), ("v2", 28)] {
            for _ in 0..times {
                tally.add(field);
            }
        }
        assert_eq!(
            tally.line("total"),
            "# total 50 calls: 56% (28) v2 | 24% (12) v1 | 20% (10) abort"
        );
    }

    #[test]
    fn ties_sort_by_label_and_shares_round_half_up() {
        let mut tally = Tally::default();
        for field in ["b", "a", "c", "c", "c", "c", "c", "c"] {
            tally.add(field);
        }
        assert_eq!(
            tally.line("last"),
            "# last 8 calls: 75% (6) c | 13% (1) a | 13% (1) b"
        );
        assert_eq!(Tally::default().line("total"), "# total 0 calls");
    }

    #[test]
    fn distinct_fields_are_bounded() {
        let mut tally = Tally::default();
        for n in 0..(MAX_DISTINCT + 5) {
            tally.add(&format!("body {n}"));
        }
        let entries = tally.entries();
        assert_eq!(entries.len(), MAX_DISTINCT + 1);
        assert_eq!(entries.last(), Some(&(OTHER_LABEL, 5)));
    }

    #[test]
    fn long_labels_are_shortened() {
        let mut tally = Tally::default();
        tally.add(&"x".repeat(500));
        let line = tally.line("total");
        assert!(
            line.ends_with(&format!("{}…", "x".repeat(LABEL_CHARS))),
            "{line}"
        );
    }

    #[test]
    fn windows_and_totals() {
        let mut summaries = Summaries::default();
        summaries.record("v1");
        summaries.record("v2");
        assert_eq!(
            summaries.take_lines(),
            ["# total 2 calls: 50% (1) v1 | 50% (1) v2"]
        );
        summaries.record("v2");
        assert_eq!(
            summaries.take_lines(),
            [
                "# last 1 call: 100% (1) v2",
                "# total 3 calls: 67% (2) v2 | 33% (1) v1"
            ]
        );
        assert!(summaries.take_final_lines().is_empty());
        summaries.record("v1");
        assert_eq!(summaries.take_final_lines().len(), 2);
    }
}
