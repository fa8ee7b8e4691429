//! Kafka coordinates: topics, partitions, offsets and the offset ranges a commit covers.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A Kafka topic name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Topic(pub String);

impl Topic {
    /// A topic by name.
    pub fn new(name: impl Into<String>) -> Self {
        Topic(name.into())
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A partition number within a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Partition(pub i32);

/// An offset within a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Offset(pub i64);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One partition of one topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic.
    pub topic: Topic,
    /// The partition.
    pub partition: Partition,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: Topic::new(topic),
            partition: Partition(partition),
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition.0)
    }
}

/// The name of a writing pipeline (e.g. `ingest`): the first part of every Delta `txn` app id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PipelineId(pub String);

impl PipelineId {
    /// A pipeline by name.
    pub fn new(name: impl Into<String>) -> Self {
        PipelineId(name.into())
    }

    /// The Delta `txn` application id of this pipeline for one partition:
    /// `<pipeline>-<topic>-<partition>`.
    pub fn app_id(&self, tp: &TopicPartition) -> String {
        format!("{}-{}-{}", self.0, tp.topic, tp.partition.0)
    }
}

/// An inclusive range of offsets `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    /// First offset in the range.
    pub first: Offset,
    /// Last offset in the range (inclusive).
    pub last: Offset,
}

/// Per-partition offset ranges: what one commit (or one batch run) covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRanges(BTreeMap<TopicPartition, OffsetRange>);

impl OffsetRanges {
    /// No ranges.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that `offset` of `tp` is covered, widening that partition's range.
    pub fn record(&mut self, tp: &TopicPartition, offset: Offset) {
        match self.0.get_mut(tp) {
            Some(r) => {
                r.first = r.first.min(offset);
                r.last = r.last.max(offset);
            }
            None => {
                self.0.insert(
                    tp.clone(),
                    OffsetRange {
                        first: offset,
                        last: offset,
                    },
                );
            }
        }
    }

    /// Set the range of one partition.
    pub fn insert(&mut self, tp: TopicPartition, range: OffsetRange) {
        self.0.insert(tp, range);
    }

    /// The ranges, ordered by topic and partition.
    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, &OffsetRange)> {
        self.0.iter()
    }

    /// The range of one partition.
    pub fn get(&self, tp: &TopicPartition) -> Option<&OffsetRange> {
        self.0.get(tp)
    }

    /// True when no partition is covered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of partitions covered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The ranges left once everything at or below `committed` is taken away: a range that
    /// ends at or below its partition's committed offset goes, one that straddles it starts
    /// just above it.
    pub fn after(&self, committed: &BTreeMap<TopicPartition, Offset>) -> OffsetRanges {
        self.0
            .iter()
            .filter_map(|(tp, r)| match committed.get(tp) {
                Some(c) if r.last <= *c => None,
                Some(c) if r.first <= *c => Some((
                    tp.clone(),
                    OffsetRange {
                        first: Offset(c.0 + 1),
                        last: r.last,
                    },
                )),
                _ => Some((tp.clone(), *r)),
            })
            .collect()
    }

    /// Widens these ranges to cover `other`'s too.
    pub fn extend(&mut self, other: &OffsetRanges) {
        for (tp, r) in other.iter() {
            self.record(tp, r.first);
            self.record(tp, r.last);
        }
    }

    /// As JSON for Delta `commitInfo`: `[{"topic":..,"partition":..,"first":..,"last":..}]`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.0
                .iter()
                .map(|(tp, r)| {
                    serde_json::json!({
                        "topic": tp.topic.0,
                        "partition": tp.partition.0,
                        "first": r.first.0,
                        "last": r.last.0,
                    })
                })
                .collect(),
        )
    }

    /// Parses what [`OffsetRanges::to_json`] wrote.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let mut out = OffsetRanges::new();
        for item in value.as_array()? {
            let tp = TopicPartition::new(
                item.get("topic")?.as_str()?,
                i32::try_from(item.get("partition")?.as_i64()?).ok()?,
            );
            let range = OffsetRange {
                first: Offset(item.get("first")?.as_i64()?),
                last: Offset(item.get("last")?.as_i64()?),
            };
            out.insert(tp, range);
        }
        Some(out)
    }
}

impl FromIterator<(TopicPartition, OffsetRange)> for OffsetRanges {
    fn from_iter<I: IntoIterator<Item = (TopicPartition, OffsetRange)>>(iter: I) -> Self {
        OffsetRanges(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_drops_and_trims_what_is_committed() {
        let (a, b, c) = (
            TopicPartition::new("t", 0),
            TopicPartition::new("t", 1),
            TopicPartition::new("t", 2),
        );
        let mut r = OffsetRanges::new();
        for (tp, first, last) in [(&a, 10, 20), (&b, 10, 20), (&c, 10, 20)] {
            r.record(tp, Offset(first));
            r.record(tp, Offset(last));
        }
        let committed = BTreeMap::from([(a.clone(), Offset(20)), (b.clone(), Offset(14))]);
        let left = r.after(&committed);
        assert_eq!(left.get(&a), None);
        assert_eq!(left.get(&b).map(|r| (r.first.0, r.last.0)), Some((15, 20)));
        assert_eq!(left.get(&c).map(|r| (r.first.0, r.last.0)), Some((10, 20)));
        let mut merged = OffsetRanges::new();
        merged.extend(&left);
        merged.extend(&r);
        assert_eq!(merged, r);
    }

    #[test]
    fn ranges_widen_and_round_trip_through_json() {
        let tp0 = TopicPartition::new("orders", 0);
        let tp3 = TopicPartition::new("orders", 3);
        let mut r = OffsetRanges::new();
        for o in [5, 3, 9, 4] {
            r.record(&tp0, Offset(o));
        }
        r.record(&tp3, Offset(0));
        assert_eq!(
            r.get(&tp0),
            Some(&OffsetRange {
                first: Offset(3),
                last: Offset(9)
            })
        );
        assert_eq!(OffsetRanges::from_json(&r.to_json()), Some(r));
        assert_eq!(PipelineId::new("ingest").app_id(&tp3), "ingest-orders-3");
    }
}
