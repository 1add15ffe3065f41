//! The demo's caller. Every `INTERVAL` it GETs one URL and prints
//! `<timestamp>\t<body or error>` on stdout, the way the older
//! `echo -e $(date -Is)"\t"$(curl -sSL $URL)` loop did, but on a fixed-rate schedule, with
//! every call bounded in time and in memory, and with optional `#` summary lines.
//!
//! [`run`] drives a run; tests call it in-process with a buffer for stdout.

pub mod body;
pub mod call;
pub mod config;
pub mod header;
pub mod schedule;
pub mod summary;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

pub use call::{BuildError, CallError, Caller, CallerBuilder, Outcome};
pub use config::{CallLimit, Config, SummaryEvery};
use schedule::Schedule;
use summary::Summaries;

/// How long calls still in flight may finish after SIGTERM/SIGINT before they are cancelled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Ceiling on calls in flight at once, whatever TIMEOUT/INTERVAL asks for.
pub const MAX_IN_FLIGHT: usize = 1000;

/// The field printed for a call cancelled by SIGTERM/SIGINT before it had an answer.
pub const CANCELLED_FIELD: &str = "error: cancelled at shutdown";

/// How a run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Calls printed (including those cancelled at shutdown).
    pub calls: u64,
    /// Ticks on which no call was made.
    pub skipped_ticks: u64,
    /// Calls cancelled at shutdown.
    pub cancelled: u64,
    /// Whether the shutdown signal ended the run (rather than COUNT).
    pub interrupted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot write to the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Calls `config.url` on schedule, writing lines to `out`, until COUNT calls are printed or
/// `shutdown` resolves.
pub async fn run<W, S>(config: &Config, out: W, shutdown: S) -> Result<Report, RunError>
where
    W: AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let caller = Caller::new(config)?;
    run_with(config, caller, out, shutdown).await
}

/// [`run`] with a given [`Caller`] (e.g. one with an injected resolver).
pub async fn run_with<W, S>(
    config: &Config,
    caller: Caller,
    out: W,
    shutdown: S,
) -> Result<Report, RunError>
where
    W: AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let limit = in_flight_limit(config.timeout, config.interval);
    let mut shown_url = config.url.clone();
    let _ = shown_url.set_password(None); // logs must not carry credentials
    // Names only: values may be credentials.
    let header_names = header::header_map(&config.headers)
        .keys()
        .map(|name| name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        url = %shown_url,
        headers = %header_names,
        interval = %format_duration(config.interval),
        timeout = %format_duration(config.timeout),
        count = %config.count,
        summary_every = %config.summary_every,
        max_in_flight = limit,
        "calling"
    );
    let start = Instant::now();
    let mut run = Run {
        caller: Arc::new(caller),
        count: config.count,
        summary_every: config.summary_every,
        schedule: Schedule::new(start, config.interval),
        in_flight_limit: limit,
        pending: VecDeque::new(),
        in_flight: 0,
        fired: 0,
        unreported_skip: None,
        summaries: Summaries::default(),
        out,
        report: Report::default(),
    };
    let mut summary_timer = match config.summary_every {
        SummaryEvery::Period(period) => {
            let mut timer = tokio::time::interval_at(start + period, period);
            timer.set_missed_tick_behavior(MissedTickBehavior::Skip);
            Some(timer)
        }
        SummaryEvery::Off | SummaryEvery::Calls(_) => None,
    };
    run.report.interrupted = run.main_loop(shutdown, &mut summary_timer).await?;
    if run.report.interrupted {
        // (Ending by COUNT, every skip came before a later call and is already printed.)
        run.report_skip();
        run.finish_after_signal().await?;
    }
    if run.summary_every != SummaryEvery::Off {
        let lines = run.summaries.take_final_lines();
        run.write_lines(&lines).await?;
    }
    let Report {
        calls,
        skipped_ticks,
        cancelled,
        interrupted,
    } = run.report;
    tracing::info!(calls, skipped_ticks, cancelled, interrupted, "done");
    Ok(run.report)
}

/// Calls in flight at once: enough for every call of the last TIMEOUT plus slack, so that the
/// bound only bites when calls outlive their timeout (the process is starved).
pub fn in_flight_limit(timeout: Duration, interval: Duration) -> usize {
    let per_timeout = timeout.as_nanos().div_ceil(interval.as_nanos().max(1));
    usize::try_from(per_timeout.saturating_add(2))
        .unwrap_or(usize::MAX)
        .min(MAX_IN_FLIGHT)
}

/// A duration as people write it: `5s`, `250ms`, `1.5s`, rounded to the millisecond.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 && !duration.is_zero() {
        format!("{}µs", duration.as_micros())
    } else if millis < 1000 {
        format!("{millis}ms")
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        let text = format!("{}.{:03}", millis / 1000, millis % 1000);
        format!("{}s", text.trim_end_matches('0'))
    }
}

/// `date -Is`: `2022-02-04T10:34:33+00:00`, in the local offset.
pub fn timestamp(at: &DateTime<Local>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// A line waiting for its turn: lines are printed in tick order, whatever order calls finish.
enum Pending {
    Call { at: DateTime<Local>, task: CallTask },
    Note(String),
}

/// A spawned call; dropping it cancels the call.
struct CallTask {
    handle: JoinHandle<Outcome>,
    outcome: Option<Outcome>,
}

impl CallTask {
    fn spawn(caller: Arc<Caller>, started: Instant) -> Self {
        Self {
            handle: tokio::spawn(async move { caller.call(started).await }),
            outcome: None,
        }
    }

    /// Waits for the call to finish. Cancel-safe: the outcome is kept once it arrives.
    async fn finished(&mut self) {
        if self.outcome.is_none() {
            let outcome = (&mut self.handle).await.unwrap_or_else(|error| {
                Outcome::Failed(CallError::Other(format!("call task failed: {error}")))
            });
            self.outcome = Some(outcome);
        }
    }

    fn is_finished(&self) -> bool {
        self.outcome.is_some() || self.handle.is_finished()
    }
}

impl Drop for CallTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Ticks skipped since the last note about it.
struct Skip {
    ticks: u64,
    reason: String,
}

struct Run<W> {
    caller: Arc<Caller>,
    count: CallLimit,
    summary_every: SummaryEvery,
    schedule: Schedule,
    in_flight_limit: usize,
    pending: VecDeque<Pending>,
    /// Calls in `pending`, finished or not.
    in_flight: usize,
    fired: u64,
    unreported_skip: Option<Skip>,
    summaries: Summaries,
    out: W,
    report: Report,
}

impl<W: AsyncWrite + Unpin> Run<W> {
    /// Fires ticks and prints lines until COUNT calls are printed (false) or `shutdown`
    /// resolves (true).
    async fn main_loop<S: Future<Output = ()>>(
        &mut self,
        shutdown: S,
        summary_timer: &mut Option<Interval>,
    ) -> Result<bool, RunError> {
        tokio::pin!(shutdown);
        let next_tick = tokio::time::sleep_until(self.schedule.next_due());
        tokio::pin!(next_tick);
        loop {
            let firing = !self.count.reached(self.fired);
            if !firing && self.pending.is_empty() {
                return Ok(false);
            }
            // Biased: the signal first, then the tick (its timing matters most), then output.
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(true),
                () = &mut next_tick, if firing => {
                    self.on_tick(Instant::now());
                    next_tick.as_mut().reset(self.schedule.next_due());
                }
                () = front_finished(&mut self.pending), if !self.pending.is_empty() => {
                    self.print_front().await?;
                }
                () = next_summary(summary_timer) => {
                    let lines = self.summaries.take_lines();
                    self.write_lines(&lines).await?;
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let tick = self.schedule.take(now);
        if tick.skipped > 0 {
            self.skip(
                tick.skipped,
                format!(
                    "the caller was {} behind schedule",
                    format_duration(tick.behind)
                ),
            );
        }
        if self.in_flight >= self.in_flight_limit {
            let reason = format!("{} calls still in flight", self.in_flight);
            self.skip(1, reason);
            return;
        }
        self.report_skip();
        let at = Local::now();
        let task = CallTask::spawn(Arc::clone(&self.caller), now);
        self.pending.push_back(Pending::Call { at, task });
        self.in_flight += 1;
        self.fired += 1;
        tracing::trace!(tick = tick.index, "call started");
    }

    fn skip(&mut self, ticks: u64, reason: String) {
        tracing::warn!(ticks, %reason, "skipping ticks");
        self.report.skipped_ticks += ticks;
        let skip = self.unreported_skip.get_or_insert(Skip {
            ticks: 0,
            reason: String::new(),
        });
        skip.ticks += ticks;
        skip.reason = reason;
    }

    /// Queues the `# skipped` note, in tick order with the calls.
    fn report_skip(&mut self) {
        if let Some(Skip { ticks, reason }) = self.unreported_skip.take() {
            let ticks_word = if ticks == 1 { "tick" } else { "ticks" };
            self.pending.push_back(Pending::Note(format!(
                "# skipped {ticks} {ticks_word}: {reason}"
            )));
        }
    }

    /// Prints the front entry, which has finished.
    async fn print_front(&mut self) -> Result<(), RunError> {
        match self.pending.pop_front() {
            Some(Pending::Call { at, mut task }) => {
                task.finished().await;
                let field = task.outcome.take().map(|outcome| outcome.field());
                self.print_call(&at, field.as_deref().unwrap_or(CANCELLED_FIELD))
                    .await
            }
            Some(Pending::Note(note)) => self.write_lines(&[note]).await,
            None => Ok(()),
        }
    }

    async fn print_call(&mut self, at: &DateTime<Local>, field: &str) -> Result<(), RunError> {
        self.in_flight -= 1;
        self.report.calls += 1;
        self.write_lines(&[format!("{}\t{field}", timestamp(at))])
            .await?;
        if self.summary_every == SummaryEvery::Off {
            return Ok(());
        }
        self.summaries.record(field);
        let due = match self.summary_every {
            SummaryEvery::Calls(every) => self.summaries.window_calls() >= every,
            SummaryEvery::Off | SummaryEvery::Period(_) => false,
        };
        if due {
            let lines = self.summaries.take_lines();
            self.write_lines(&lines).await?;
        }
        Ok(())
    }

    /// After the signal: calls in flight get [`SHUTDOWN_GRACE`] to finish; the rest are
    /// cancelled and printed as such, so every call made has its line.
    async fn finish_after_signal(&mut self) -> Result<(), RunError> {
        let grace_end = Instant::now() + SHUTDOWN_GRACE;
        while !self.pending.is_empty() {
            tokio::select! {
                () = front_finished(&mut self.pending) => self.print_front().await?,
                () = tokio::time::sleep_until(grace_end) => break,
            }
        }
        while let Some(entry) = self.pending.pop_front() {
            match entry {
                Pending::Call { at, mut task } if task.is_finished() => {
                    task.finished().await;
                    let field = task.outcome.take().map(|outcome| outcome.field());
                    self.print_call(&at, field.as_deref().unwrap_or(CANCELLED_FIELD))
                        .await?;
                }
                Pending::Call { at, task } => {
                    drop(task);
                    self.report.cancelled += 1;
                    self.print_call(&at, CANCELLED_FIELD).await?;
                }
                Pending::Note(note) => self.write_lines(&[note]).await?,
            }
        }
        Ok(())
    }

    /// Writes and flushes at once, so `kubectl logs -f` shows each line as it happens.
    async fn write_lines(&mut self, lines: &[String]) -> Result<(), RunError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(lines.iter().map(|line| line.len() + 1).sum());
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        self.out.write_all(text.as_bytes()).await?;
        self.out.flush().await?;
        Ok(())
    }
}

/// Resolves when the oldest pending entry can be printed.
async fn front_finished(pending: &mut VecDeque<Pending>) {
    if let Some(Pending::Call { task, .. }) = pending.front_mut() {
        task.finished().await;
    }
}

async fn next_summary(timer: &mut Option<Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Offset, Timelike};

    #[test]
    fn durations_read_naturally() {
        let ms = Duration::from_millis;
        assert_eq!(format_duration(ms(5000)), "5s");
        assert_eq!(format_duration(ms(250)), "250ms");
        assert_eq!(format_duration(ms(1500)), "1.5s");
        assert_eq!(format_duration(ms(3250)), "3.25s");
        assert_eq!(format_duration(Duration::from_micros(20)), "20µs");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }

    #[test]
    fn in_flight_limit_covers_a_timeout_of_calls() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(in_flight_limit(s(5), s(1)), 7);
        assert_eq!(in_flight_limit(ms(500), s(1)), 3);
        assert_eq!(in_flight_limit(ms(5500), s(1)), 8);
        assert_eq!(in_flight_limit(s(5), ms(1)), MAX_IN_FLIGHT);
    }

    #[test]
    fn timestamps_look_like_date_is() {
        let at = DateTime::parse_from_rfc3339("2022-02-04T10:34:33.512+00:00")
            .unwrap()
            .with_timezone(&Local);
        let text = timestamp(&at);
        assert_eq!(text.len(), "2022-02-04T10:34:33+00:00".len(), "{text}");
        assert_eq!(
            DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%:z").unwrap(),
            at.with_timezone(&at.offset().fix())
                .with_nanosecond(0)
                .unwrap()
        );
    }
}
