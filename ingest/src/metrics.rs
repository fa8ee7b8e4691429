//! Prometheus metrics of ingest, and a minimal `/metrics` HTTP endpoint.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

type Labels = Vec<(&'static str, String)>;

/// The ingest metrics. Cheap to clone (shared counters).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Messages consumed, per topic.
    pub consumed: Family<Labels, Counter>,
    /// Payload bytes consumed, per topic.
    pub bytes: Family<Labels, Counter>,
    /// Rows committed, per table.
    pub written: Family<Labels, Counter>,
    /// Dead letters committed, per topic and error class.
    pub dead_lettered: Family<Labels, Counter>,
    /// Seconds per table commit.
    pub commit_seconds: Family<Labels, Histogram>,
    /// Commits retried after a conflict with another writer (rows already committed are dropped).
    pub conflicts: Counter,
    /// Messages between the last committed offset and the partition's end, per partition.
    pub lag: Family<Labels, Gauge>,
    /// Partitions whose committed offset was below the log start (data lost to retention).
    pub offset_gaps: Family<Labels, Counter>,
    /// Rebalances seen (assignments and revocations).
    pub rebalances: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every ingest metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("lakehouse_ingest");
        let consumed = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let written = Family::<Labels, Counter>::default();
        let dead_lettered = Family::<Labels, Counter>::default();
        let commit_seconds = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 12))) as fn() -> Histogram,
        );
        let conflicts = Counter::default();
        let lag = Family::<Labels, Gauge>::default();
        let offset_gaps = Family::<Labels, Counter>::default();
        let rebalances = Counter::default();
        r.register(
            "messages_consumed",
            "Kafka messages consumed",
            consumed.clone(),
        );
        r.register(
            "bytes_consumed",
            "Kafka payload bytes consumed",
            bytes.clone(),
        );
        r.register(
            "rows_written",
            "Rows committed to lake tables",
            written.clone(),
        );
        r.register(
            "dead_letters",
            "Messages committed to l1/dead_letters",
            dead_lettered.clone(),
        );
        r.register(
            "commit_seconds",
            "Duration of one table commit",
            commit_seconds.clone(),
        );
        r.register(
            "commit_conflicts",
            "Commits retried after a conflict",
            conflicts.clone(),
        );
        r.register(
            "lag_messages",
            "Messages not yet committed, per partition",
            lag.clone(),
        );
        r.register(
            "offset_gaps",
            "Committed offsets found below the log start",
            offset_gaps.clone(),
        );
        r.register(
            "rebalances",
            "Consumer group rebalances",
            rebalances.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            consumed,
            bytes,
            written,
            dead_lettered,
            commit_seconds,
            conflicts,
            lag,
            offset_gaps,
            rebalances,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        lakehouse_lake::metrics::join(&[&self.text()])
    }

    /// The text exposition format without the closing `# EOF`, to join with other roles'.
    pub fn text(&self) -> String {
        lakehouse_lake::metrics::text(&self.registry)
    }

    /// Serves [`Metrics::render`] over HTTP on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        lakehouse_lake::metrics::serve(listener, move || self.render()).await;
    }
}

/// Label set of one partition.
pub fn partition(topic: &str, partition: i32) -> Labels {
    vec![
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ]
}

/// Label set of one topic.
pub fn topic(t: &str) -> Labels {
    vec![("topic", t.to_string())]
}
