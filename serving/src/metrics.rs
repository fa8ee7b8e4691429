//! Prometheus metrics of the gRPC server (prefix `lakehouse_serving_`): requests by method and
//! status, latency and rows returned by method. They count what the audit records.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The server's request metrics. Cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    registry: Arc<Registry>,
    /// Requests answered, by method and gRPC status (refused ones included).
    pub requests: Family<Labels, Counter>,
    /// Seconds to answer (to open the stream, for streams), by method.
    pub seconds: Family<Labels, Histogram>,
    /// Rows returned, by method.
    pub rows: Family<Labels, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestMetrics {
    /// A fresh registry with every request metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("lakehouse_serving");
        let requests = Family::<Labels, Counter>::default();
        // 50 µs to about 3.3 s
        let seconds = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_05, 2.0, 17))) as fn() -> Histogram,
        );
        let rows = Family::<Labels, Counter>::default();
        r.register(
            "requests",
            "gRPC requests answered, by method and status",
            requests.clone(),
        );
        r.register(
            "request_seconds",
            "Time to answer one request, by method",
            seconds.clone(),
        );
        r.register("rows", "Rows returned, by method", rows.clone());
        RequestMetrics {
            registry: Arc::new(r),
            requests,
            seconds,
            rows,
        }
    }

    /// Counts one answered request.
    pub fn record(&self, method: &str, status: &str, rows: u64, seconds: f64) {
        let m = vec![("method", method.to_string())];
        let mut ms = m.clone();
        ms.push(("status", status.to_string()));
        self.requests.get_or_create(&ms).inc();
        self.seconds.get_or_create(&m).observe(seconds);
        self.rows.get_or_create(&m).inc_by(rows);
    }

    /// The text exposition format, without `# EOF` (see [`lakehouse_lake::metrics::text`]).
    pub fn render(&self) -> String {
        lakehouse_lake::metrics::text(&self.registry)
    }
}
