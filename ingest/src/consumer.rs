//! The Kafka side of ingest: a consumer-group member on its own thread that decodes messages
//! into a [`Batch`] and hands full (or old enough) batches to the writer.
//!
//! Positions come from the lake, never from Kafka's group offsets: on every assignment the
//! partition is assigned at `committed + 1` of its table's `txn` (or the log start when the
//! table never saw it). Revoked partitions are dropped from the buffer; their new owner
//! re-reads them. Before assigning or giving up partitions the member waits for its commits in
//! flight, so the next owner starts where this one stopped.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lakehouse_lake::events::KafkaMeta;
use lakehouse_lake::{EventTime, Offset, PipelineId, Table, TopicPartition};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::IngestError;
use crate::buffer::Batch;
use crate::config::{IngestConfig, TopicMapping};
use crate::decode::{DecodeConfig, decode_as};
use crate::metrics::{self, Metrics};
use crate::writer::Committed;

/// Shared between the consumer thread, its rebalance callbacks and the writer.
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    /// Batches handed to the writer and not yet committed.
    pub(crate) inflight: AtomicUsize,
    pub(crate) committed: Committed,
    pub(crate) metrics: Metrics,
}

impl Shared {
    /// Waits until every batch handed to the writer is committed (or the writer is gone).
    fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

struct Ctx {
    handle: Handle,
    pipeline: PipelineId,
    /// Per topic, a handle on its table for looking up committed offsets.
    tables: Mutex<HashMap<String, Table>>,
    accept_gaps: bool,
    shared: Arc<Shared>,
    revoked: Mutex<BTreeSet<TopicPartition>>,
    fatal: Mutex<Option<IngestError>>,
    /// Reporting catch-up progress (the lag was at least [`CATCHING_UP`]).
    behind: std::sync::atomic::AtomicBool,
}

/// A lag (messages not yet committed, over every partition) from which the progress of the
/// catch-up is logged at each statistics interval, until it is caught up.
const CATCHING_UP: i64 = 100_000;

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility = fac, "{msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility = fac, "{msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(target: "librdkafka", %error, "{reason}");
    }

    fn stats(&self, stats: Statistics) {
        let committed = self
            .shared
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut total = 0;
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                let tp = TopicPartition::new(topic.as_str(), *p);
                if *p < 0 || part.hi_offset < 0 {
                    continue;
                }
                if let Some(c) = committed.get(&tp) {
                    let labels = metrics::partition(topic, *p);
                    let lag = (part.hi_offset - c.0 - 1).max(0);
                    total += lag;
                    self.shared.metrics.lag.get_or_create(&labels).set(lag);
                }
            }
        }
        // progress of a long catch-up (a backlog after a stop, or a new pipeline)
        use std::sync::atomic::Ordering;
        if total >= CATCHING_UP {
            self.behind.store(true, Ordering::Relaxed);
            info!(
                behind = total,
                "catching up: {total} messages not yet committed"
            );
        } else if total < CATCHING_UP / 10 && self.behind.swap(false, Ordering::Relaxed) {
            info!(behind = total, "caught up");
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.shared.metrics.rebalances.inc();
        // let commits in flight land first: the table then shows everything this member consumed
        self.shared.drain();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let tps: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| TopicPartition::new(e.topic(), e.partition()))
                    .collect();
                for tp in tps {
                    match self.resume_at(consumer, &tp) {
                        Ok(offset) => {
                            info!(partition = %tp, ?offset, "assigned");
                            if let Err(e) =
                                tpl.set_partition_offset(tp.topic.as_str(), tp.partition.0, offset)
                            {
                                self.fail(e.into());
                            }
                        }
                        Err(e) => self.fail(e),
                    }
                }
                if let Err(e) = consumer.assign(tpl) {
                    self.fail(e.into());
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                for elem in tpl.elements() {
                    revoked.insert(TopicPartition::new(elem.topic(), elem.partition()));
                }
                info!(partitions = tpl.count(), "revoked");
                if let Err(e) = consumer.unassign() {
                    self.fail(e.into());
                }
            }
            other => {
                warn!(error = ?other, "rebalance error; unassigning");
                let _ = consumer.unassign();
            }
        }
    }
}

impl Ctx {
    fn fail(&self, e: IngestError) {
        error!(error = %e, "ingest stops");
        let mut f = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(e);
    }

    /// Where a newly assigned partition resumes: just after its table's committed offset.
    fn resume_at(
        &self,
        consumer: &BaseConsumer<Self>,
        tp: &TopicPartition,
    ) -> Result<rdkafka::Offset, IngestError> {
        let committed = {
            let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
            let table = tables.get_mut(tp.topic.as_str()).ok_or_else(|| {
                IngestError::Config(format!("assigned unknown topic {}", tp.topic))
            })?;
            self.handle.block_on(async {
                table.refresh().await?;
                table.committed_offset(&self.pipeline, tp).await
            })?
        };
        let Some(c) = committed else {
            // the table never saw the partition: no log bounds to check
            return Ok(rdkafka::Offset::Beginning);
        };
        self.shared
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tp.clone(), c);
        let (low, high) = consumer.fetch_watermarks(
            tp.topic.as_str(),
            tp.partition.0,
            Duration::from_secs(30),
        )?;
        match resume_position(c, low, self.accept_gaps) {
            Resume::At(next) => {
                if c.0 + 1 > high {
                    // not fatal: some brokers (tansu) report a stale end offset. A topic that
                    // really is behind (re-created) fails the fetch with "offset out of range"
                    // instead, which auto.offset.reset=error turns into a stop, not a reset.
                    warn!(partition = %tp, log_end = high, "the topic's end offset is below the lake's; resuming after the lake's offset");
                }
                Ok(rdkafka::Offset::Offset(next))
            }
            Resume::Gap { accepted } => {
                let labels = metrics::partition(tp.topic.as_str(), tp.partition.0);
                self.shared.metrics.offset_gaps.get_or_create(&labels).inc();
                let gap = IngestError::OffsetGap {
                    partition: tp.clone(),
                    committed: c,
                    log_start: Offset(low),
                    log_end: Offset(high),
                };
                if accepted {
                    warn!(error = %gap, "accepting the gap (accept-offset-gaps): resuming at the log start");
                    Ok(rdkafka::Offset::Offset(low))
                } else {
                    Err(gap)
                }
            }
        }
    }
}

/// Where an assigned partition the table holds resumes, from its committed offset and the log's
/// first offset `low`. The log's end does not matter: some brokers report a stale one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Just after the committed offset.
    At(i64),
    /// Messages after the committed offset were deleted before they were ingested; resume at
    /// the log start only if `accepted`.
    Gap { accepted: bool },
}

pub(crate) fn resume_position(committed: Offset, low: i64, accept_gaps: bool) -> Resume {
    if committed.0 + 1 >= low {
        Resume::At(committed.0 + 1)
    } else {
        Resume::Gap {
            accepted: accept_gaps,
        }
    }
}

/// What the consumer thread needs.
pub(crate) struct ConsumerSetup {
    pub(crate) cfg: IngestConfig,
    pub(crate) brokers: String,
    pub(crate) pipeline: PipelineId,
    pub(crate) tables: HashMap<String, Table>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) tx: mpsc::Sender<Batch>,
    pub(crate) handle: Handle,
}

/// What the consumer thread did.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConsumerStats {
    pub(crate) messages: u64,
    pub(crate) batches: u64,
}

pub(crate) fn client_config(cfg: &IngestConfig, brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // positions are always assigned from the lake; a position outside the log is an error,
        // never a silent jump
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set(
            "session.timeout.ms",
            cfg.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (cfg.session_timeout.as_millis() / 3).max(100).to_string(),
        )
        .set("statistics.interval.ms", "5000")
        .set("fetch.wait.max.ms", "50");
    for (k, v) in &cfg.kafka_properties {
        c.set(k, v);
    }
    c
}

/// The consumer thread: poll, decode, buffer, hand over; stops on `shared.stop`, on a fatal
/// error, or when the writer is gone.
pub(crate) fn consume(setup: ConsumerSetup) -> Result<ConsumerStats, IngestError> {
    let ConsumerSetup {
        cfg,
        brokers,
        pipeline,
        tables,
        shared,
        tx,
        handle,
    } = setup;
    let mappings: HashMap<String, TopicMapping> = cfg
        .topics
        .iter()
        .map(|m| (m.topic.clone(), m.clone()))
        .collect();
    let ctx = Ctx {
        handle,
        pipeline,
        tables: Mutex::new(tables),
        accept_gaps: cfg.accept_offset_gaps,
        shared: shared.clone(),
        revoked: Mutex::new(BTreeSet::new()),
        fatal: Mutex::new(None),
        behind: std::sync::atomic::AtomicBool::new(false),
    };
    let consumer: BaseConsumer<Ctx> = client_config(&cfg, &brokers).create_with_context(ctx)?;
    let topics: Vec<&str> = cfg.topics.iter().map(|m| m.topic.as_str()).collect();
    consumer.subscribe(&topics)?;
    info!(topics = ?topics, group = %cfg.group_id, "consuming");
    let dcfg = DecodeConfig {
        max_message_bytes: cfg.max_message_bytes,
    };
    let mut stats = ConsumerStats::default();
    let mut batch = Batch::new();
    let mut first_at: Option<Instant> = None;
    let mut last_kafka_error: Option<Instant> = None;
    let result = loop {
        if shared.stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let wait = first_at.map_or(Duration::from_millis(100), |t| {
            cfg.max_latency
                .saturating_sub(t.elapsed())
                .min(Duration::from_millis(100))
        });
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                if let Some(map) = mappings.get(m.topic()) {
                    let payload = m.payload().unwrap_or_default();
                    let meta = KafkaMeta {
                        topic: map.topic.clone(),
                        partition: m.partition(),
                        offset: m.offset(),
                        kafka_ts: m
                            .timestamp()
                            .to_millis()
                            .and_then(|ms| EventTime::from_millis(ms).ok()),
                        ingest_ts: EventTime::now(),
                    };
                    let decoded = decode_as(map.format, map.kind, payload, &dcfg);
                    batch.add(map.table(), map.kind, meta, m.key(), payload, decoded);
                    stats.messages += 1;
                    first_at.get_or_insert_with(Instant::now);
                }
            }
            Some(Err(e))
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
                ) =>
            {
                break Err(IngestError::OutOfRange(e.to_string()));
            }
            // transient broker trouble is retried by librdkafka; say so at most every 10 s
            Some(Err(e))
                if last_kafka_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) =>
            {
                warn!(error = %e, "kafka consumer error");
                last_kafka_error = Some(Instant::now());
            }
            Some(Err(_)) => {}
            None => {}
        }
        let revoked = std::mem::take(
            &mut *consumer
                .context()
                .revoked
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        batch.drop_partitions(&revoked);
        if batch.is_empty() {
            first_at = None;
        }
        if let Some(e) = consumer
            .context()
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            break Err(e);
        }
        let due = batch.messages() >= cfg.flush_messages
            || batch.bytes() >= cfg.flush_bytes
            || first_at.is_some_and(|t| t.elapsed() >= cfg.max_latency);
        if due {
            first_at = None;
            if !hand_over(&shared, &tx, std::mem::take(&mut batch)) {
                break Ok(());
            }
            stats.batches += 1;
        }
    };
    if result.is_ok() && !batch.is_empty() {
        // a clean stop commits what it holds
        if hand_over(&shared, &tx, batch) {
            stats.batches += 1;
        }
    }
    drop(tx);
    shared.drain();
    // leaves the group now, so the partitions move without waiting for the session timeout
    consumer.unsubscribe();
    drop(consumer);
    result.map(|()| stats)
}

/// False when the writer has gone (it failed; its error is reported by `run`).
fn hand_over(shared: &Shared, tx: &mpsc::Sender<Batch>, batch: Batch) -> bool {
    shared.inflight.fetch_add(1, Ordering::SeqCst);
    if tx.blocking_send(batch).is_err() {
        shared.inflight.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_after_the_committed_offset_or_refuse_a_gap() {
        // the normal case, including a log that starts exactly after the committed offset
        assert_eq!(resume_position(Offset(41), 0, false), Resume::At(42));
        assert_eq!(resume_position(Offset(499), 500, false), Resume::At(500));
        // beyond the (possibly stale) end of the log: still just after the committed offset
        assert_eq!(resume_position(Offset(950), 0, false), Resume::At(951));
        // retention deleted 500..=599 before ingest saw them
        assert_eq!(
            resume_position(Offset(499), 600, false),
            Resume::Gap { accepted: false }
        );
        assert_eq!(
            resume_position(Offset(499), 600, true),
            Resume::Gap { accepted: true }
        );
    }

    #[test]
    fn the_gap_error_says_what_was_lost_and_how_to_go_on() {
        let e = IngestError::OffsetGap {
            partition: TopicPartition::new("orders", 3),
            committed: Offset(499),
            log_start: Offset(600),
            log_end: Offset(900),
        };
        let text = e.to_string();
        for part in ["orders[3]", "499", "600", "retention", "accept-offset-gaps"] {
            assert!(text.contains(part), "{text}");
        }
    }
}
