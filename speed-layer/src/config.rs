//! `[speed]` settings: the topics, the windows' watermark and lateness, triggers, and how often
//! state is checkpointed.

use std::collections::BTreeMap;
use std::time::Duration;

use lakehouse_lake::decode::{EventKind, Format};
use serde::{Deserialize, Serialize};

use crate::window::Accumulation;

/// One input topic.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SpeedTopic {
    /// Kafka topic.
    pub topic: String,
    /// Event shape: `market-trades`, `orders` or `executions`.
    pub kind: EventKind,
    /// Message encoding.
    #[serde(default)]
    pub format: Format,
}

/// The `[speed]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SpeedConfig {
    /// Consumer group (for lag monitoring: the speed layer assigns every partition itself and
    /// resumes from its checkpoint, never from the group's offsets).
    pub group_id: String,
    /// Topics to consume (the same as ingest's).
    pub topics: Vec<SpeedTopic>,
    /// How often state and offsets are checkpointed.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Bounded out-of-orderness of the watermarks.
    #[serde(with = "humantime_serde")]
    pub out_of_orderness: Duration,
    /// A partition silent this long stops holding the watermark back.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Windows take elements this long after the watermark passed their end; later ones go
    /// to `l1/late_events`.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// EARLY panes every this much processing time (unset: none).
    #[serde(with = "humantime_serde")]
    pub early_every: Option<Duration>,
    /// What panes carry: `discarding`, `accumulating` or `retracting`.
    pub accumulation: Accumulation,
    /// Gap that ends a trader's activity session.
    #[serde(with = "humantime_serde")]
    pub session_gap: Duration,
    /// Append every fired pane to `system/speed_panes`.
    pub pane_audit: bool,
    /// Larger messages are skipped (and counted) as undecodable.
    pub max_message_bytes: usize,
    /// Extra librdkafka consumer properties.
    pub kafka_properties: BTreeMap<String, String>,
    /// A follower (the speed view inside `lakehouse serve`): restores from the latest
    /// checkpoint and keeps the views, but writes nothing (no checkpoints, late events, pane
    /// audit or group offsets); the primary `lakehouse speed` process does that. Not a file
    /// setting.
    #[serde(skip)]
    pub follower: bool,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        let topic = |topic: &str, kind| SpeedTopic {
            topic: topic.into(),
            kind,
            format: Format::Json,
        };
        SpeedConfig {
            group_id: "lakehouse-speed".into(),
            topics: vec![
                topic("market-trades", EventKind::MarketTrades),
                topic("orders", EventKind::Orders),
                topic("executions", EventKind::Executions),
            ],
            checkpoint_interval: Duration::from_secs(10),
            out_of_orderness: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            allowed_lateness: Duration::from_secs(30),
            early_every: Some(Duration::from_secs(1)),
            accumulation: Accumulation::Accumulating,
            session_gap: Duration::from_secs(300),
            pane_audit: true,
            max_message_bytes: 1 << 20,
            kafka_properties: BTreeMap::new(),
            follower: false,
        }
    }
}

impl SpeedConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("[speed] topics is empty".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.topics {
            if !names.insert(&t.topic) {
                return Err(format!("[speed] topic {} is listed twice", t.topic));
            }
        }
        if self.checkpoint_interval < Duration::from_millis(100) {
            return Err("[speed] checkpoint-interval must be at least 100ms".into());
        }
        if self.session_gap.is_zero() {
            return Err("[speed] session-gap must be positive".into());
        }
        if self.early_every.is_some_and(|e| e.is_zero()) {
            return Err("[speed] early-every must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_valid_and_errors_named() {
        SpeedConfig::default().validate().unwrap();
        let mut c = SpeedConfig::default();
        c.topics.push(c.topics[0].clone());
        assert!(c.validate().unwrap_err().contains("twice"));
        let c = SpeedConfig {
            session_gap: Duration::ZERO,
            ..SpeedConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("session-gap"));
    }
}
