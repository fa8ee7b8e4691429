//! The `[batch]` section of the configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use lakehouse_lake::{BusinessCalendar, Decimal};
use serde::{Deserialize, Serialize};

use crate::jobs::JobParams;
use crate::maintenance::MaintenanceConfig;
use crate::schedule::{RetryPolicy, Schedule};

/// Batch layer settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BatchConfig {
    /// Tape prints carrying any of these condition codes stay out of L2 and L3.
    #[serde(default)]
    pub excluded_conditions: Vec<String>,
    /// Large-trade notional thresholds (instrument currency) by asset class, `*` for the rest.
    #[serde(default)]
    pub large_trade_thresholds: BTreeMap<String, Decimal>,
    /// Gross exposure limits (reporting currency) by desk.
    #[serde(default)]
    pub desk_limits: BTreeMap<String, Decimal>,
    /// How many desk x asset class x currency rows count as the top concentration.
    #[serde(default = "default_top_n")]
    pub top_n: u32,
    /// Cron expressions (`minute hour day-of-month month day-of-week`, in the calendar's time
    /// zone) of `lakehouse batch schedule`; each firing makes the most recently closed business
    /// date due. Empty: 15 minutes after each weekday's close.
    #[serde(default)]
    pub schedule: Vec<String>,
    /// At start, the scheduler runs the dates of firings this far back that have no
    /// succeeded run.
    #[serde(default = "default_catch_up", with = "humantime_serde")]
    pub catch_up: Duration,
    /// Retries of a failed run (bad input or configuration is not retried).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubles each time, up to `max-backoff`.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest wait between retries.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Table maintenance after scheduled runs and for `lakehouse table optimize|vacuum`.
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// `lakehouse batch schedule`: Prometheus metrics (runs, retries, durations, pending
    /// dates) on http://ADDR/metrics; unset: off.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

fn default_catch_up() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_top_n() -> u32 {
    5
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            excluded_conditions: Vec::new(),
            large_trade_thresholds: BTreeMap::new(),
            desk_limits: BTreeMap::new(),
            top_n: default_top_n(),
            schedule: Vec::new(),
            catch_up: default_catch_up(),
            retries: default_retries(),
            retry_backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            maintenance: MaintenanceConfig::default(),
            metrics_listen: None,
        }
    }
}

impl BatchConfig {
    /// What the jobs take.
    pub fn params(&self) -> JobParams {
        JobParams {
            excluded_conditions: self.excluded_conditions.clone(),
            large_trade_thresholds: self.large_trade_thresholds.clone(),
            desk_limits: self.desk_limits.clone(),
            top_n: self.top_n,
        }
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            backoff: self.retry_backoff,
            max_backoff: self.max_backoff.max(self.retry_backoff),
        }
    }

    /// The schedule under `calendar`, or why the settings are refused.
    pub fn schedule(&self, calendar: BusinessCalendar) -> Result<Schedule, String> {
        self.maintenance.validate()?;
        Schedule::new(&self.schedule, calendar).map_err(|e| format!("batch.schedule: {e}"))
    }
}
