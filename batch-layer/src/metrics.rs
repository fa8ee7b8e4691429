//! Prometheus metrics of the batch scheduler (prefix `lakehouse_batch_`).

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The scheduler's metrics. Cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct BatchMetrics {
    registry: Arc<Registry>,
    /// Runs ended, by status (`succeeded`, `failed`: after its retries).
    pub runs: Family<Labels, Counter>,
    /// Attempts retried after a transient failure.
    pub retries: Counter,
    /// Earlier dates run again first because of late events.
    pub restated: Counter,
    /// Seconds per published run.
    pub run_seconds: Histogram,
    /// Business date of the latest published run, days since 1970-01-01 (0: none yet).
    pub published_date: Gauge,
    /// Dates due and not yet published (catch-up, or held back by a failed date).
    pub pending_dates: Gauge,
    /// Maintenance passes ended, by status.
    pub maintenance: Family<Labels, Counter>,
}

impl Default for BatchMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchMetrics {
    /// A fresh registry with every scheduler metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("lakehouse_batch");
        let m = BatchMetrics {
            registry: Arc::default(),
            runs: Family::default(),
            retries: Counter::default(),
            restated: Counter::default(),
            run_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 12)),
            published_date: Gauge::default(),
            pending_dates: Gauge::default(),
            maintenance: Family::default(),
        };
        r.register("runs", "Batch runs ended, by status", m.runs.clone());
        r.register(
            "retries",
            "Run attempts retried after a transient failure",
            m.retries.clone(),
        );
        r.register(
            "restated_dates",
            "Earlier dates run again first because of late events",
            m.restated.clone(),
        );
        r.register(
            "run_seconds",
            "Wall time of one published run",
            m.run_seconds.clone(),
        );
        r.register(
            "published_date_days",
            "Business date of the latest published run, days since 1970-01-01",
            m.published_date.clone(),
        );
        r.register(
            "pending_dates",
            "Dates due and not yet published",
            m.pending_dates.clone(),
        );
        r.register(
            "maintenance",
            "Maintenance passes ended, by status",
            m.maintenance.clone(),
        );
        BatchMetrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The text exposition format, without `# EOF` (see [`lakehouse_lake::metrics::text`]).
    pub fn render(&self) -> String {
        lakehouse_lake::metrics::text(&self.registry)
    }

    pub(crate) fn status(&self, family: &Family<Labels, Counter>, status: &str) {
        family
            .get_or_create(&vec![("status", status.to_string())])
            .inc();
    }
}
