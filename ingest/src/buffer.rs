//! What ingest holds between two commits: decoded rows per table, dead letters, and the
//! offset ranges they cover. Pure data; no I/O.

use std::collections::{BTreeMap, BTreeSet};

use deltalake::arrow::record_batch::RecordBatch;
use lakehouse_lake::events::{self, DeadLetter, Execution, KafkaMeta, MarketTrade, Order};
use lakehouse_lake::{Offset, OffsetRanges, Result, TopicPartition};

use crate::decode::{DecodeError, Decoded, EventKind};

/// Rows of one table, typed by event kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rows {
    /// `market-trades` prints.
    Trades(Vec<(MarketTrade, KafkaMeta)>),
    /// `orders` events.
    Orders(Vec<(Order, KafkaMeta)>),
    /// `executions` events.
    Executions(Vec<(Execution, KafkaMeta)>),
    /// Dead letters.
    Dead(Vec<(DeadLetter, KafkaMeta)>),
}

macro_rules! each {
    ($rows:expr, $v:ident => $e:expr) => {
        match $rows {
            Rows::Trades($v) => $e,
            Rows::Orders($v) => $e,
            Rows::Executions($v) => $e,
            Rows::Dead($v) => $e,
        }
    };
}

impl Rows {
    fn empty(kind: EventKind) -> Self {
        match kind {
            EventKind::MarketTrades => Rows::Trades(Vec::new()),
            EventKind::Orders => Rows::Orders(Vec::new()),
            EventKind::Executions => Rows::Executions(Vec::new()),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the rows whose offset is above their partition's entry in `committed`.
    pub fn retain_after(&mut self, committed: &BTreeMap<TopicPartition, Offset>) {
        if committed.is_empty() {
            return;
        }
        // one lookup per (topic, partition), not per row
        let mut cut: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for (tp, o) in committed {
            cut.insert((tp.topic.as_str(), tp.partition.0), o.0);
        }
        let keep = |m: &KafkaMeta| {
            cut.get(&(m.topic.as_str(), m.partition))
                .is_none_or(|c| m.offset > *c)
        };
        each!(self, v => v.retain(|(_, m)| keep(m)))
    }

    /// Drops the rows of the given partitions.
    fn drop_partitions(&mut self, tps: &BTreeSet<TopicPartition>) {
        each!(self, v => v.retain(|(_, m)| !in_partitions(m, tps)))
    }

    /// The rows as one Arrow batch of their table's schema.
    #[allow(clippy::result_large_err)] // the lake's error type, returned as is
    pub fn to_batch(&self) -> Result<RecordBatch> {
        match self {
            Rows::Trades(v) => events::market_trades_batch(v),
            Rows::Orders(v) => events::orders_batch(v),
            Rows::Executions(v) => events::executions_batch(v),
            Rows::Dead(v) => events::dead_letters_batch(v),
        }
    }
}

fn in_partitions(m: &KafkaMeta, tps: &BTreeSet<TopicPartition>) -> bool {
    tps.iter()
        .any(|tp| tp.partition.0 == m.partition && tp.topic.0 == m.topic)
}

/// One table's share of a batch.
#[derive(Clone, Debug)]
pub struct TableRows {
    /// Lake table name.
    pub table: String,
    /// Its rows.
    pub rows: Rows,
    /// Every message of this table's topic that the batch covers, good or bad: the `txn`
    /// versions this table's commit records.
    pub ranges: OffsetRanges,
}

/// Counts of one batch, per topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicCounts {
    /// Messages consumed.
    pub messages: u64,
    /// Payload bytes consumed.
    pub bytes: u64,
    /// Dead letters, by error class.
    pub dead: BTreeMap<&'static str, u64>,
}

/// Everything consumed since the last commit.
#[derive(Debug, Default)]
pub struct Batch {
    /// Per table, keyed by table name.
    pub tables: BTreeMap<String, TableRows>,
    /// Dead letters of every topic.
    pub dead: Vec<(DeadLetter, KafkaMeta)>,
    /// Per-topic counts.
    pub counts: BTreeMap<String, TopicCounts>,
    messages: usize,
    bytes: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages in the batch.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Payload bytes in the batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when nothing was consumed.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Adds one consumed message: its decoded rows go to `table`, or it becomes a dead letter.
    /// Either way its offset is covered by `table`'s ranges.
    pub fn add(
        &mut self,
        table: &str,
        kind: EventKind,
        meta: KafkaMeta,
        key: Option<&[u8]>,
        payload: &[u8],
        decoded: std::result::Result<Decoded, DecodeError>,
    ) {
        self.messages += 1;
        self.bytes += payload.len();
        let counts = match self.counts.get_mut(&meta.topic) {
            Some(c) => c,
            None => self.counts.entry(meta.topic.clone()).or_default(),
        };
        counts.messages += 1;
        counts.bytes += payload.len() as u64;
        let entry = match self.tables.get_mut(table) {
            Some(e) => e,
            None => self
                .tables
                .entry(table.to_string())
                .or_insert_with(|| TableRows {
                    table: table.to_string(),
                    rows: Rows::empty(kind),
                    ranges: OffsetRanges::new(),
                }),
        };
        entry.ranges.record(
            &TopicPartition::new(meta.topic.as_str(), meta.partition),
            Offset(meta.offset),
        );
        match (decoded, &mut entry.rows) {
            (Ok(Decoded::Trades(prints)), Rows::Trades(rows)) => {
                rows.extend(prints.into_iter().map(|p| (p, meta.clone())));
            }
            (Ok(Decoded::Order(o)), Rows::Orders(rows)) => rows.push((o, meta)),
            (Ok(Decoded::Execution(e)), Rows::Executions(rows)) => rows.push((e, meta)),
            (Ok(_), _) => unreachable!("a decoder returned another kind than it was asked for"),
            (Err(e), _) => {
                *counts.dead.entry(e.class.as_str()).or_default() += 1;
                self.dead.push((
                    DeadLetter {
                        key: key.map(<[u8]>::to_vec),
                        raw: Some(payload.to_vec()),
                        error_class: e.class.as_str().to_string(),
                        error_message: e.message,
                    },
                    meta,
                ));
            }
        }
    }

    /// Forgets everything of the given partitions (revoked in a rebalance: their new owner
    /// re-reads them from the table's committed offsets).
    pub fn drop_partitions(&mut self, tps: &BTreeSet<TopicPartition>) {
        if tps.is_empty() {
            return;
        }
        for t in self.tables.values_mut() {
            t.rows.drop_partitions(tps);
            t.ranges = t
                .ranges
                .iter()
                .filter(|(tp, _)| !tps.contains(tp))
                .map(|(tp, r)| (tp.clone(), *r))
                .collect();
        }
        self.tables.retain(|_, t| !t.ranges.is_empty());
        self.dead.retain(|(_, m)| !in_partitions(m, tps));
    }

    /// The ranges of every table together: what the dead-letter commit covers.
    pub fn all_ranges(&self) -> OffsetRanges {
        let mut all = OffsetRanges::new();
        for t in self.tables.values() {
            all.extend(&t.ranges);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{DecodeConfig, decode};
    use lakehouse_lake::EventTime;

    fn meta(partition: i32, offset: i64) -> KafkaMeta {
        KafkaMeta {
            topic: "orders".into(),
            partition,
            offset,
            kafka_ts: None,
            ingest_ts: EventTime::from_micros(0),
        }
    }

    const GOOD: &str = r#"{"order_id":"O1","account":"A","trader":"T","symbol":"S","side":"BUY","order_type":"MARKET","price":null,"quantity":1,"action":"NEW","ts":0}"#;

    fn add(b: &mut Batch, partition: i32, offset: i64, payload: &str) {
        let d = decode(
            EventKind::Orders,
            payload.as_bytes(),
            &DecodeConfig::default(),
        );
        b.add(
            "l1/orders",
            EventKind::Orders,
            meta(partition, offset),
            None,
            payload.as_bytes(),
            d,
        );
    }

    #[test]
    fn good_and_bad_messages_share_the_ranges_and_conserve() {
        let mut b = Batch::new();
        for o in 0..10 {
            add(&mut b, o % 2, o as i64, if o == 3 { "{" } else { GOOD });
        }
        let t = &b.tables["l1/orders"];
        assert_eq!(t.rows.len() + b.dead.len(), 10);
        assert_eq!(b.dead[0].1.offset, 3);
        assert_eq!(b.dead[0].0.error_class, "json");
        let r = t.ranges.get(&TopicPartition::new("orders", 1)).unwrap();
        assert_eq!((r.first.0, r.last.0), (1, 9));
        assert_eq!(b.counts["orders"].dead["json"], 1);
        assert_eq!(b.all_ranges(), t.ranges);
    }

    #[test]
    fn retain_after_and_drop_partitions() {
        let mut b = Batch::new();
        for o in 0..10 {
            add(&mut b, o % 2, o as i64, GOOD);
        }
        let t = b.tables.get_mut("l1/orders").unwrap();
        t.rows.retain_after(&BTreeMap::from([(
            TopicPartition::new("orders", 0),
            Offset(4),
        )]));
        assert_eq!(t.rows.len(), 7); // partition 0 keeps 6 and 8
        b.drop_partitions(&BTreeSet::from([TopicPartition::new("orders", 1)]));
        let t = &b.tables["l1/orders"];
        assert_eq!(t.rows.len(), 2);
        assert!(t.ranges.get(&TopicPartition::new("orders", 1)).is_none());
    }
}
