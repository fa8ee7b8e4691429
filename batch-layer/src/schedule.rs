//! `lakehouse batch schedule`: the job chain on cron expressions.
//!
//! Every firing of a cron expression (in the calendar's time zone) makes the business date that
//! had most recently closed at that instant due: with the calendar's cut-off at 17:00 New York,
//! a firing at 17:15 on a Monday makes that Monday due. At start the scheduler looks back
//! `catch-up` for firings it missed; a due date without a succeeded ledger row runs, oldest
//! first (positions carry forward), each with retries by policy. A date that still fails stops
//! the chain (later dates would carry its positions) and stays due for the next firing. After
//! publishing dates the scheduler runs table maintenance.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeDelta, Timelike, Utc};
use lakehouse_lake::{BusinessCalendar, BusinessDate, EventTime};

use crate::cron::{Cron, CronError};
use crate::maintenance::{self, MaintenanceConfig};
use crate::metrics::BatchMetrics;
use crate::runner::{RunError, RunReport, Runner, read_ledger};

/// When the job chain runs.
#[derive(Clone, Debug)]
pub struct Schedule {
    crons: Vec<Cron>,
    calendar: BusinessCalendar,
}

impl Schedule {
    /// The expressions (none: [`Schedule::default_expression`]) in `calendar`'s time zone.
    pub fn new(expressions: &[String], calendar: BusinessCalendar) -> Result<Schedule, CronError> {
        let crons = if expressions.is_empty() {
            vec![Self::default_expression(&calendar).parse()?]
        } else {
            expressions
                .iter()
                .map(|e| e.parse())
                .collect::<Result<_, _>>()?
        };
        Ok(Schedule { crons, calendar })
    }

    /// The default: 15 minutes after the close of each weekday's business date (the calendar's
    /// cut-off, or local midnight without one).
    pub fn default_expression(calendar: &BusinessCalendar) -> String {
        let cut = calendar.cut_off();
        let fire = cut + TimeDelta::minutes(15);
        // the close of date D is on D at the cut-off, or at midnight starting D + 1 without one;
        // 15 minutes later may be the next day again
        let shift = u32::from(cut == NaiveTime::MIN) + u32::from(fire < cut);
        let days: Vec<String> = (1..=5).map(|d| ((d + shift) % 7).to_string()).collect();
        format!("{} {} * * {}", fire.minute(), fire.hour(), days.join(","))
    }

    /// The expressions.
    pub fn crons(&self) -> &[Cron] {
        &self.crons
    }

    /// The date that had most recently closed at `t`.
    pub fn closed_at(&self, t: DateTime<Utc>) -> BusinessDate {
        self.calendar
            .business_date(EventTime::from_micros(t.timestamp_micros()))
            .pred()
    }

    /// The dates that firings in `(after, until]` make due.
    pub fn due(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> BTreeSet<BusinessDate> {
        let tz = self.calendar.time_zone();
        self.crons
            .iter()
            .flat_map(|c| c.firings(tz, after, until))
            .map(|t| self.closed_at(t))
            .collect()
    }

    /// The next firing after `after`.
    pub fn next(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = self.calendar.time_zone();
        self.crons.iter().filter_map(|c| c.next(tz, after)).min()
    }
}

/// How failed runs are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// Wait before the first retry; doubles with each further one, up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The wait before retry `n` (0-based).
    pub fn backoff(&self, n: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .min(self.max_backoff)
    }

    /// Runs `op` until it succeeds, fails permanently (`transient` says no), or has used up
    /// the retries.
    pub async fn run<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
        &self,
        transient: impl Fn(&E) -> bool,
        mut op: impl FnMut() -> Fut,
    ) -> Result<T, E> {
        let mut n = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if n < self.retries && transient(&e) => {
                    let wait = self.backoff(n);
                    tracing::warn!(error = %e, attempt = n + 1, ?wait, "run failed; retrying");
                    tokio::time::sleep(wait).await;
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What one pass of the scheduler did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Dates published.
    pub published: Vec<RunReport>,
    /// The date that failed after its retries (the dates after it did not run).
    pub failed: Option<(BusinessDate, String)>,
    /// Dates still due.
    pub pending: BTreeSet<BusinessDate>,
}

/// Runs due dates, then maintenance.
#[derive(Clone, Debug)]
pub struct Scheduler {
    runner: Runner,
    schedule: Schedule,
    retry: RetryPolicy,
    catch_up: Duration,
    maintenance: MaintenanceConfig,
    metrics: BatchMetrics,
}

impl Scheduler {
    /// A scheduler of `runner`'s dates (on its lake).
    pub fn new(
        runner: Runner,
        schedule: Schedule,
        retry: RetryPolicy,
        catch_up: Duration,
        maintenance: MaintenanceConfig,
    ) -> Scheduler {
        Scheduler {
            runner,
            schedule,
            retry,
            catch_up,
            maintenance,
            metrics: BatchMetrics::new(),
        }
    }

    /// The scheduler's metrics (runs, retries, durations, pending dates).
    pub fn metrics(&self) -> &BatchMetrics {
        &self.metrics
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Runs every date of `due` that has no succeeded ledger row, oldest first, then (when one
    /// was published) the maintenance. Returns what is still due.
    pub async fn pass(&self, mut due: BTreeSet<BusinessDate>) -> Result<Pass, RunError> {
        let done: BTreeSet<BusinessDate> = read_ledger(self.runner.lake())
            .await?
            .into_iter()
            .filter(|r| r.status == "succeeded")
            .map(|r| r.business_date)
            .collect();
        due.retain(|d| !done.contains(d));
        let mut pass = Pass::default();
        let m = &self.metrics;
        m.pending_dates.set(due.len() as i64);
        let total = due.len();
        for (i, date) in due.clone().into_iter().enumerate() {
            if total > 1 {
                // catch-up or a backfill of several dates: say where it is
                tracing::info!(%date, "running {} of {total}", i + 1);
            } else {
                tracing::info!(%date, "running");
            }
            let run = self
                .retry
                .run(
                    |e: &RunError| {
                        let again = !e.is_permanent();
                        if again {
                            m.retries.inc();
                        }
                        again
                    },
                    || self.runner.run(date),
                )
                .await;
            match run {
                Ok(report) => {
                    tracing::info!(%date, run_id = %report.run_id, seconds = report.seconds, "published");
                    m.status(&m.runs, "succeeded");
                    m.run_seconds.observe(report.seconds);
                    m.restated.inc_by(report.restated.len() as u64);
                    m.published_date.set(i64::from(date.days_since_epoch()));
                    due.remove(&date);
                    m.pending_dates.set(due.len() as i64);
                    pass.published.push(report);
                }
                Err(e) => {
                    tracing::error!(%date, error = %e, "run failed after its retries; later dates wait");
                    m.status(&m.runs, "failed");
                    pass.failed = Some((date, e.to_string()));
                    break;
                }
            }
        }
        if let (true, Some(last)) = (self.maintenance.enabled, pass.published.last()) {
            let maintained = self.maintain(last.date).await;
            m.status(
                &m.maintenance,
                if maintained.is_ok() {
                    "succeeded"
                } else {
                    "failed"
                },
            );
            maintained?;
        }
        pass.pending = due;
        Ok(pass)
    }

    /// Compaction of the L1 event dates before `date`'s first instant, checkpoints, vacuum.
    pub async fn maintain(&self, date: BusinessDate) -> Result<(), RunError> {
        let start = self.runner.window(date).start;
        let closed = BusinessDate(start.utc_date());
        let optimized =
            maintenance::optimize(self.runner.lake(), None, closed, &self.maintenance).await?;
        let vacuumed =
            maintenance::vacuum(self.runner.lake(), None, None, false, &self.maintenance).await?;
        let compacted: u64 = optimized
            .iter()
            .filter_map(|t| t.compacted)
            .map(|c| c.0)
            .sum();
        let deleted: usize = vacuumed.iter().filter_map(|t| t.vacuumed).sum();
        tracing::info!(
            tables = optimized.len(),
            compacted_files = compacted,
            vacuumed_files = deleted,
            %closed,
            "maintenance done: L1 dates before `closed` compacted, checkpoints written, vacuumed"
        );
        Ok(())
    }

    /// Runs until `shutdown` completes: first the dates missed in the catch-up period, then
    /// at every firing. A run cut short by `shutdown` publishes nothing.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        tokio::pin!(shutdown);
        let mut seen = Utc::now();
        let catch_up = TimeDelta::from_std(self.catch_up).unwrap_or(TimeDelta::days(7));
        let mut due = self.schedule.due(seen - catch_up, seen);
        loop {
            let pass = tokio::select! {
                p = self.pass(due.clone()) => p,
                () = &mut shutdown => return Ok(()),
            };
            due = match pass {
                Ok(p) => p.pending,
                // the ledger or maintenance failed: keep everything due, try at the next firing
                Err(e) => {
                    tracing::error!(error = %e, "scheduler pass failed");
                    due
                }
            };
            let Some(next) = self.schedule.next(seen.max(Utc::now())) else {
                tracing::warn!("the schedule never fires again");
                shutdown.await;
                return Ok(());
            };
            tracing::info!(%next, pending = due.len(), "waiting for the next firing");
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return Ok(()),
            }
            let now = Utc::now();
            due.extend(self.schedule.due(seen, now));
            seen = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn default_fires_after_each_weekday_close() {
        let utc = BusinessCalendar::default();
        assert_eq!(Schedule::default_expression(&utc), "15 0 * * 2,3,4,5,6");
        let ny = BusinessCalendar::new("America/New_York", "17:00").unwrap();
        assert_eq!(Schedule::default_expression(&ny), "15 17 * * 1,2,3,4,5");
        let late = BusinessCalendar::new("UTC", "23:50").unwrap();
        assert_eq!(Schedule::default_expression(&late), "5 0 * * 2,3,4,5,6");
        // a week of firings makes exactly Monday to Friday due, in both calendars
        for cal in [utc, ny, late] {
            let s = Schedule::new(&[], cal).unwrap();
            let due = s.due(at("2024-01-13T12:00:00Z"), at("2024-01-20T12:00:00Z"));
            let days: Vec<String> = due.iter().map(ToString::to_string).collect();
            assert_eq!(
                days,
                [
                    "2024-01-15",
                    "2024-01-16",
                    "2024-01-17",
                    "2024-01-18",
                    "2024-01-19"
                ],
                "{cal:?}"
            );
        }
        let s = Schedule::new(&[], ny).unwrap();
        // Friday 17:15 New York, then Monday
        assert_eq!(
            s.next(at("2024-01-19T12:00:00Z")),
            Some(at("2024-01-19T22:15:00Z"))
        );
        assert_eq!(
            s.next(at("2024-01-19T22:15:00Z")),
            Some(at("2024-01-22T22:15:00Z"))
        );
        assert!(Schedule::new(&["0 25 * * *".into()], ny).is_err());
    }

    #[tokio::test]
    async fn retries_transient_failures_with_doubling_backoff_only() {
        let policy = RetryPolicy {
            retries: 3,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(25),
        };
        assert_eq!(
            (0..4)
                .map(|n| policy.backoff(n).as_millis())
                .collect::<Vec<_>>(),
            [10, 20, 25, 25]
        );
        // an operation failing until attempt `ok_at` (never: 0); the result and the attempts
        let attempts = async |transient: bool, ok_at: u32| {
            let calls = std::cell::Cell::new(0);
            let r: Result<u32, String> = policy
                .run(
                    |_| transient,
                    || {
                        calls.set(calls.get() + 1);
                        let n = calls.get();
                        async move {
                            if n == ok_at {
                                Ok(n)
                            } else {
                                Err(format!("try {n}"))
                            }
                        }
                    },
                )
                .await;
            (r, calls.get())
        };
        let started = std::time::Instant::now();
        assert_eq!(attempts(true, 3).await, (Ok(3), 3));
        assert!(started.elapsed() >= Duration::from_millis(30));
        // exhausted: four attempts in all
        assert_eq!(attempts(true, 0).await, (Err("try 4".into()), 4));
        // permanent: no retry
        assert_eq!(attempts(false, 0).await, (Err("try 1".into()), 1));
    }
}
