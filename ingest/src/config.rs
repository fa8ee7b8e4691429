//! `[ingest]` settings: which topics go to which tables in which format, when to commit,
//! and how the consumer group behaves.

use std::collections::BTreeMap;
use std::time::Duration;

use lakehouse_lake::catalog::names;
use serde::{Deserialize, Serialize};

use crate::decode::{EventKind, Format};

/// One topic ingested into one L1 table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TopicMapping {
    /// Kafka topic.
    pub topic: String,
    /// Event shape: `market-trades`, `orders` or `executions`.
    pub kind: EventKind,
    /// Lake table (e.g. `l1/orders`); defaults to the kind's L1 table.
    #[serde(default)]
    pub table: Option<String>,
    /// Message encoding.
    #[serde(default)]
    pub format: Format,
}

impl TopicMapping {
    /// The table this topic lands in.
    pub fn table(&self) -> &str {
        match (&self.table, self.kind) {
            (Some(t), _) => t,
            (None, EventKind::MarketTrades) => names::MARKET_TRADES,
            (None, EventKind::Orders) => names::ORDERS,
            (None, EventKind::Executions) => names::EXECUTIONS,
        }
    }
}

/// The `[ingest]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Kafka consumer group shared by every `lakehouse ingest` process of this pipeline.
    pub group_id: String,
    /// Pipeline name: the prefix of the Delta `txn` app ids (`<pipeline>-<topic>-<partition>`).
    pub pipeline: String,
    /// Topics and where they land.
    pub topics: Vec<TopicMapping>,
    /// Commit when this many messages are buffered.
    pub flush_messages: usize,
    /// Commit when this many payload bytes are buffered.
    pub flush_bytes: usize,
    /// Commit at the latest this long after the first buffered message arrived.
    #[serde(with = "humantime_serde")]
    pub max_latency: Duration,
    /// Larger messages are dead letters (`oversize`).
    pub max_message_bytes: usize,
    /// Accept that a partition's committed offset is below the topic's log start (data
    /// deleted by retention before it was ingested): log, count, and continue from the log
    /// start. Off by default: ingest stops with an error instead.
    pub accept_offset_gaps: bool,
    /// Kafka group session timeout; a crashed process's partitions move after this long.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Serve Prometheus metrics on `http://<addr>/metrics` (e.g. `127.0.0.1:9464`).
    pub metrics_listen: Option<String>,
    /// Extra librdkafka consumer properties (security.protocol, sasl.*, ...).
    pub kafka_properties: BTreeMap<String, String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let topic = |topic: &str, kind| TopicMapping {
            topic: topic.into(),
            kind,
            table: None,
            format: Format::Json,
        };
        IngestConfig {
            group_id: "lakehouse-ingest".into(),
            pipeline: "ingest".into(),
            topics: vec![
                topic("market-trades", EventKind::MarketTrades),
                topic("orders", EventKind::Orders),
                topic("executions", EventKind::Executions),
            ],
            flush_messages: 250_000,
            flush_bytes: 64 << 20,
            max_latency: Duration::from_secs(1),
            max_message_bytes: 1 << 20,
            accept_offset_gaps: false,
            session_timeout: Duration::from_secs(10),
            metrics_listen: None,
            kafka_properties: BTreeMap::new(),
        }
    }
}

impl IngestConfig {
    /// Checks what serde cannot: non-empty, distinct topics, sane limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("[ingest] topics is empty: nothing to ingest".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.topics {
            if t.topic.trim().is_empty() {
                return Err("[ingest] a topic name is empty".into());
            }
            if !seen.insert(&t.topic) {
                return Err(format!("[ingest] topic {:?} is listed twice", t.topic));
            }
            if t.table() == names::DEAD_LETTERS {
                return Err(format!(
                    "[ingest] topic {:?} cannot land in {}",
                    t.topic,
                    names::DEAD_LETTERS
                ));
            }
        }
        if self.pipeline.is_empty() || self.group_id.is_empty() {
            return Err("[ingest] pipeline and group-id must not be empty".into());
        }
        if self.flush_messages == 0 || self.flush_bytes == 0 || self.max_latency.is_zero() {
            return Err(
                "[ingest] flush-messages, flush-bytes and max-latency must be positive".into(),
            );
        }
        if self.max_message_bytes == 0 {
            return Err("[ingest] max-message-bytes must be positive".into());
        }
        Ok(())
    }
}
