//! The speed-layer process: assigns every partition of its topics, rebuilds the views by
//! replaying from the last checkpoint's replay offsets, then processes new messages; writes
//! late events exactly once and checkpoints operators and offsets together.
//!
//! A checkpoint is (1) late events appended to `l1/late_events` with one Delta `txn` per
//! partition (pipeline `speed`), so a replay after a crash never writes one twice; (2) the
//! [`State`] as JSON at `system/speed_state/<id>.json`; (3) a row in
//! `system/speed_checkpoints` naming it: that commit publishes the checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, TimestampMicrosecondType};
use deltalake::logstore::object_store::ObjectStoreExt;
use lakehouse_lake::catalog::{self, names};
use lakehouse_lake::events::{KafkaMeta, LateEvent, late_events_batch};
use lakehouse_lake::reference::Reference;
use lakehouse_lake::{
    BusinessCalendar, EventTime, Lake, Offset, OffsetRanges, PipelineId, Table, TopicPartition,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset as KOffset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::config::SpeedConfig;
use crate::pipeline::{FiredPane, Message, Output, Pipeline, STATE_VERSION, State};
use crate::views::Views;

/// Why the speed layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpeedError {
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The lake failed.
    #[error(transparent)]
    Lake(Box<lakehouse_lake::Error>),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A checkpoint could not be read or written.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The processing thread panicked.
    #[error("the processing thread panicked")]
    Panicked,
}

impl From<lakehouse_lake::Error> for SpeedError {
    fn from(e: lakehouse_lake::Error) -> Self {
        SpeedError::Lake(Box::new(e))
    }
}

/// What the serving layer holds: the views, the reference data they are valued with, and the
/// stream of fired panes.
#[derive(Clone)]
pub struct SpeedHandle {
    /// The exact views.
    pub views: Arc<RwLock<Views>>,
    /// Reference data (desks, asset classes), reloaded from the lake as it changes.
    pub reference: Arc<RwLock<Arc<Reference>>>,
    /// Fired panes, for subscriptions.
    pub panes: broadcast::Sender<Arc<FiredPane>>,
}

impl SpeedHandle {
    /// Empty views over `calendar`.
    pub fn new(calendar: BusinessCalendar) -> SpeedHandle {
        SpeedHandle {
            views: Arc::new(RwLock::new(Views::new(calendar))),
            reference: Arc::new(RwLock::new(Arc::new(Reference::default()))),
            panes: broadcast::channel(4096).0,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Messages processed (replays excluded).
    pub messages: u64,
    /// Messages replayed to rebuild the views.
    pub replayed: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Late events written.
    pub late: u64,
    /// Wall time from the first to the last message processed (replays excluded).
    pub busy: Duration,
    /// Freshness: per message processed, the time from its Kafka timestamp to the moment the
    /// views held it, as a histogram of whole milliseconds (the last bucket holds 10 s and
    /// more).
    pub freshness_ms: Vec<u64>,
}

const FRESHNESS_BUCKETS: usize = 10_001;

impl Summary {
    /// The `q`-quantile (0..=1) of the freshness histogram, in ms.
    pub fn freshness_quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.freshness_ms.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, n) in self.freshness_ms.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(ms as u64);
            }
        }
        None
    }
}

const PIPELINE: &str = "speed";

fn state_path(id: &str) -> String {
    format!("system/speed_state/{id}.json")
}

/// The latest checkpoint: its id, state path and offsets text.
async fn latest_checkpoint(table: &Table) -> Result<Option<(String, String, String)>, SpeedError> {
    let mut best: Option<(i64, String, String, String)> = None;
    for b in table.read_all().await? {
        // a scan may hand strings back as views or dictionaries: cast to plain UTF-8
        let text = |name: &str| -> Result<StringArray, SpeedError> {
            let col = b
                .column_by_name(name)
                .ok_or_else(|| SpeedError::Checkpoint(format!("no {name} column")))?;
            let col =
                cast(col, &DataType::Utf8).map_err(|e| SpeedError::Checkpoint(e.to_string()))?;
            Ok(col.as_string::<i32>().clone())
        };
        let (ids, paths, offsets) = (
            text("checkpoint_id")?,
            text("state_path")?,
            text("offsets")?,
        );
        let at = b
            .column_by_name("written_at")
            .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone())
            .ok_or_else(|| SpeedError::Checkpoint("no written_at column".into()))?;
        for i in 0..b.num_rows() {
            let key = at.value(i);
            if best
                .as_ref()
                .is_none_or(|(k, id, _, _)| (key, ids.value(i)) > (*k, id.as_str()))
            {
                best = Some((
                    key,
                    ids.value(i).to_string(),
                    paths.value(i).to_string(),
                    offsets.value(i).to_string(),
                ));
            }
        }
    }
    Ok(best.map(|(_, id, path, offsets)| (id, path, offsets)))
}

/// The input offsets of the latest checkpoint in `lake` (per topic and partition, the next
/// offset to process), or none before the first checkpoint.
pub async fn checkpointed_offsets(
    lake: &Lake,
) -> Result<Option<BTreeMap<String, BTreeMap<i32, i64>>>, SpeedError> {
    let table = table(lake, names::SPEED_CHECKPOINTS).await?;
    match latest_checkpoint(&table).await? {
        Some((_, _, offsets)) => parse_offsets(&offsets)
            .map(Some)
            .map_err(SpeedError::Checkpoint),
        None => Ok(None),
    }
}

/// The state of the latest checkpoint and its object path (a fresh state and none before the
/// first checkpoint).
async fn load_state(
    lake: &Lake,
    table: &Table,
    cfg: &SpeedConfig,
) -> Result<(State, Option<String>), SpeedError> {
    let Some((id, path, _)) = latest_checkpoint(table).await? else {
        info!("no checkpoint: starting from the beginning of every partition");
        return Ok((State::new(cfg), None));
    };
    let bytes = lake
        .store()
        .get(&lake.object_path(&path))
        .await
        .map_err(|e| SpeedError::Checkpoint(format!("cannot read {path}: {e}")))?
        .bytes()
        .await
        .map_err(|e| SpeedError::Checkpoint(format!("cannot read {path}: {e}")))?;
    let state: State = serde_json::from_slice(&bytes)
        .map_err(|e| SpeedError::Checkpoint(format!("{path} is not a valid state: {e}")))?;
    if state.version != STATE_VERSION {
        return Err(SpeedError::Checkpoint(format!(
            "{path} has state version {}, this build reads {STATE_VERSION}",
            state.version
        )));
    }
    info!(checkpoint = %id, "restored");
    Ok((state, Some(path)))
}

/// The tables a checkpoint writes to, and the state object of the latest published one.
struct Tables {
    late: Table,
    panes: Table,
    checkpoints: Table,
    published: Option<String>,
}

/// Writes a checkpoint: late events (exactly once), fired panes, the state object, the row
/// that publishes it; then deletes the state object it replaces.
async fn checkpoint(
    lake: &Lake,
    tables: &mut Tables,
    late: &mut Vec<(LateEvent, KafkaMeta)>,
    panes: &mut Vec<(i64, Arc<FiredPane>)>,
    state: &State,
) -> Result<(), SpeedError> {
    let late_table = &mut tables.late;
    if !late.is_empty() {
        let pipeline = PipelineId::new(PIPELINE);
        late_table.refresh().await?;
        let tps: Vec<TopicPartition> = {
            let mut v: Vec<_> = late
                .iter()
                .map(|(_, m)| TopicPartition::new(m.topic.as_str(), m.partition))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let committed = late_table.committed_offsets(&pipeline, tps).await?;
        late.retain(|(_, m)| {
            committed
                .get(&TopicPartition::new(m.topic.as_str(), m.partition))
                .is_none_or(|c| m.offset > c.0)
        });
        if !late.is_empty() {
            let mut ranges = OffsetRanges::new();
            for (_, m) in late.iter() {
                ranges.record(
                    &TopicPartition::new(m.topic.as_str(), m.partition),
                    Offset(m.offset),
                );
            }
            late_table
                .append_exactly_once(&pipeline, vec![late_events_batch(late)?], &ranges)
                .await?;
        }
        late.clear();
    }
    if !panes.is_empty() {
        // the audit of what was emitted: a pane emitted again after a crash is recorded again
        tables
            .panes
            .append(vec![pane_rows(panes)?], HashMap::new())
            .await?;
        panes.clear();
    }
    let id = format!(
        "{:020}-{}",
        EventTime::now().micros(),
        uuid::Uuid::new_v4().simple()
    );
    let path = state_path(&id);
    let body = serde_json::to_vec(state).map_err(|e| SpeedError::Checkpoint(e.to_string()))?;
    lake.store()
        .put(&lake.object_path(&path), body.into())
        .await
        .map_err(|e| SpeedError::Checkpoint(format!("cannot write {path}: {e}")))?;
    let offsets =
        serde_json::to_string(&state.next).map_err(|e| SpeedError::Checkpoint(e.to_string()))?;
    let row = checkpoint_row(&id, &path, &offsets, state.bars_1m.watermark())?;
    tables.checkpoints.append(vec![row], HashMap::new()).await?;
    // the row names the new state: the one it replaces is no longer read by anyone
    if let Some(old) = tables.published.replace(path)
        && let Err(e) = lake.store().delete(&lake.object_path(&old)).await
    {
        warn!(path = %old, %e, "cannot delete a replaced checkpoint state");
    }
    Ok(())
}

fn checkpoint_row(
    id: &str,
    path: &str,
    offsets: &str,
    watermark: i64,
) -> Result<deltalake::arrow::record_batch::RecordBatch, SpeedError> {
    use deltalake::arrow::array::{Int64Array, TimestampMicrosecondArray};
    let cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(StringArray::from(vec![id])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![EventTime::now().micros()]).with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(vec![path])),
        Arc::new(Int64Array::from(vec![i64::from(STATE_VERSION)])),
        Arc::new(StringArray::from(vec![offsets])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![(watermark > i64::MIN).then_some(watermark)])
                .with_timezone("UTC"),
        ),
    ];
    deltalake::arrow::record_batch::RecordBatch::try_new(
        lakehouse_lake::schema::speed_checkpoints(),
        cols,
    )
    .map_err(|e| SpeedError::Checkpoint(e.to_string()))
}

/// `system/speed_panes` rows for panes fired at `emitted_at` (µs).
fn pane_rows(
    panes: &[(i64, Arc<FiredPane>)],
) -> Result<deltalake::arrow::record_batch::RecordBatch, SpeedError> {
    use deltalake::arrow::array::{
        BooleanArray, Date32Array, Int64Array, TimestampMicrosecondArray,
    };
    let ts =
        |v: Vec<Option<i64>>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"));
    let strings = |v: Vec<String>| Arc::new(StringArray::from(v));
    let day = |us: i64| {
        lakehouse_lake::BusinessDate(EventTime::from_micros(us).utc_date()).days_since_epoch()
    };
    let cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(Date32Array::from(
            panes.iter().map(|(at, _)| day(*at)).collect::<Vec<_>>(),
        )),
        ts(panes.iter().map(|(at, _)| Some(*at)).collect()),
        strings(panes.iter().map(|(_, p)| p.view.to_string()).collect()),
        strings(panes.iter().map(|(_, p)| p.pane.key.clone()).collect()),
        ts(panes
            .iter()
            .map(|(_, p)| Some(p.pane.window.start))
            .collect()),
        ts(panes.iter().map(|(_, p)| Some(p.pane.window.end)).collect()),
        strings(
            panes
                .iter()
                .map(|(_, p)| p.pane.timing.as_str().to_string())
                .collect(),
        ),
        Arc::new(Int64Array::from(
            panes
                .iter()
                .map(|(_, p)| i64::from(p.pane.index))
                .collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            panes
                .iter()
                .map(|(_, p)| p.pane.is_final)
                .collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            panes
                .iter()
                .map(|(_, p)| p.pane.retraction)
                .collect::<Vec<_>>(),
        )),
        strings(
            panes
                .iter()
                .map(|(_, p)| p.pane.value.to_json().to_string())
                .collect(),
        ),
        ts(panes
            .iter()
            .map(|(_, p)| (p.watermark > i64::MIN).then_some(p.watermark))
            .collect()),
    ];
    deltalake::arrow::record_batch::RecordBatch::try_new(
        lakehouse_lake::schema::speed_panes(),
        cols,
    )
    .map_err(|e| SpeedError::Checkpoint(e.to_string()))
}

async fn table(lake: &Lake, name: &str) -> Result<Table, SpeedError> {
    let def = catalog::table(name)
        .ok_or_else(|| SpeedError::Config(format!("{name} is not in the catalog")))?;
    Ok(lake.create_table(&def).await?)
}

/// Runs the speed layer until `stop` resolves; then checkpoints and returns.
pub async fn run(
    cfg: SpeedConfig,
    brokers: &str,
    lake: Lake,
    calendar: BusinessCalendar,
    handle: SpeedHandle,
    stop: impl Future<Output = ()> + Send,
) -> Result<Summary, SpeedError> {
    cfg.validate().map_err(SpeedError::Config)?;
    // the tables, the reference data: opened side by side (start-up is mostly lake round trips)
    let (late, panes, checkpoints, reference) = tokio::try_join!(
        table(&lake, names::LATE_EVENTS),
        table(&lake, names::SPEED_PANES),
        table(&lake, names::SPEED_CHECKPOINTS),
        async { Reference::load(&lake).await.map_err(SpeedError::from) },
    )?;
    *handle.reference.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(reference);
    let mut tables = Tables {
        late,
        panes,
        checkpoints,
        published: None,
    };
    let (state, published) = load_state(&lake, &tables.checkpoints, &cfg).await?;
    tables.published = published;

    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "error")
        // a fetch answers with 64 KiB or after 50 ms, whichever first: large batches when
        // busy (the broker's cost is per fetch), short waits when quiet (freshness)
        .set("fetch.min.bytes", "65536")
        .set("fetch.wait.max.ms", "50");
    for (k, v) in &cfg.kafka_properties {
        client.set(k, v);
    }
    let consumer: BaseConsumer = client.create()?;
    // every partition of every topic, at its replay start (or the beginning)
    let mut tpl = TopicPartitionList::new();
    for t in &cfg.topics {
        let md = consumer.fetch_metadata(Some(&t.topic), Duration::from_secs(30))?;
        let parts = md
            .topics()
            .iter()
            .find(|m| m.name() == t.topic)
            .map(|m| m.partitions().len())
            .unwrap_or(0);
        if parts == 0 {
            return Err(SpeedError::Config(format!(
                "topic {} does not exist",
                t.topic
            )));
        }
        for p in 0..parts as i32 {
            let at = match state.replay_start(&t.topic, p) {
                Some(o) => KOffset::Offset(o),
                None => KOffset::Beginning,
            };
            tpl.add_partition_offset(&t.topic, p, at)?;
        }
    }
    consumer.assign(&tpl)?;
    info!(partitions = tpl.count(), "speed layer assigned");

    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let rt = Handle::current();
    let interval = cfg.checkpoint_interval;
    let pipeline_audit = cfg.pane_audit && !cfg.follower;
    let follower = cfg.follower;
    let views = handle.views.clone();
    let panes_tx = handle.panes.clone();
    let reference = handle.reference.clone();
    let worker = tokio::task::spawn_blocking(move || -> Result<Summary, SpeedError> {
        let mut pipeline = Pipeline::new(cfg, calendar, views, state);
        let mut summary = Summary {
            freshness_ms: vec![0; FRESHNESS_BUCKETS],
            ..Summary::default()
        };
        let mut out = Output::default();
        let mut late: Vec<(LateEvent, KafkaMeta)> = Vec::new();
        let mut audit: Vec<(i64, Arc<FiredPane>)> = Vec::new();
        let pane_audit = pipeline_audit;
        let topic_index: HashMap<String, usize> = pipeline_topics(&pipeline);
        let mut last_ckpt = Instant::now();
        // checkpoint intervals passed; every 10th reloads the reference data
        let mut periods: u64 = 0;
        let mut first_processed: Option<Instant> = None;
        let mut last_kafka_error: Option<Instant> = None;
        let mut last_tick = Instant::now();
        // progress of a long replay (the views are rebuilt from the replay start at each start)
        let mut last_progress = Instant::now();
        let now_us = || EventTime::now().micros();
        loop {
            let stop = flag.load(Ordering::SeqCst);
            let polled = match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => Some(m),
                // a position outside the log: retention deleted input the views need
                Some(Err(e))
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset
                        )
                    ) =>
                {
                    return Err(SpeedError::Checkpoint(format!(
                        "{e}: the input to replay from the checkpoint is no longer in Kafka (retention)"
                    )));
                }
                // transient broker trouble is retried by librdkafka; say so at most every 10 s
                Some(Err(e)) => {
                    if last_kafka_error
                        .is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(10))
                    {
                        warn!(error = %e, "kafka consumer error");
                        last_kafka_error = Some(Instant::now());
                    }
                    None
                }
                None => None,
            };
            if let Some(m) = polled {
                let Some(&topic) = topic_index.get(m.topic()) else {
                    continue;
                };
                let replay = pipeline
                    .next_offset(m.topic(), m.partition())
                    .is_some_and(|n| m.offset() < n);
                let kafka_ms = m.timestamp().to_millis();
                let now = now_us();
                pipeline.process(
                    Message {
                        topic,
                        partition: m.partition(),
                        offset: m.offset(),
                        kafka_ts: m.timestamp().to_millis(),
                        payload: m.payload().unwrap_or_default(),
                    },
                    now,
                    &mut out,
                );
                if replay {
                    summary.replayed += 1;
                    if last_progress.elapsed() >= Duration::from_secs(5) {
                        last_progress = Instant::now();
                        info!(
                            replayed = summary.replayed,
                            "rebuilding the views: {} messages replayed", summary.replayed
                        );
                    }
                } else {
                    summary.messages += 1;
                    let at = Instant::now();
                    let first = *first_processed.get_or_insert(at);
                    summary.busy = at - first;
                    if let Some(ms) = kafka_ms {
                        let age = (now / 1000 - ms).clamp(0, FRESHNESS_BUCKETS as i64 - 1);
                        summary.freshness_ms[age as usize] += 1;
                    }
                }
            }
            if last_tick.elapsed() >= Duration::from_millis(100) {
                last_tick = Instant::now();
                pipeline.tick(now_us(), &mut out);
            }
            summary.late += out.late.len() as u64;
            if follower {
                out.late.clear();
            } else {
                late.append(&mut out.late);
            }
            if !out.panes.is_empty() {
                let at = now_us();
                for p in out.panes.drain(..) {
                    let p = Arc::new(p);
                    if pane_audit {
                        audit.push((at, p.clone()));
                    }
                    let _ = panes_tx.send(p);
                }
            }
            if stop || last_ckpt.elapsed() >= interval {
                // a follower writes nothing: the primary speed process checkpoints
                if !follower {
                    rt.block_on(checkpoint(
                        &lake,
                        &mut tables,
                        &mut late,
                        &mut audit,
                        pipeline.state(),
                    ))?;
                    summary.checkpoints += 1;
                    // the group's offsets mirror the checkpoint, for lag monitoring only:
                    // positions always come from the checkpoint
                    let mut done = TopicPartitionList::new();
                    for (topic, parts) in &pipeline.state().next {
                        for (p, next) in parts {
                            let _ = done.add_partition_offset(topic, *p, KOffset::Offset(*next));
                        }
                    }
                    if done.count() > 0
                        && let Err(e) = consumer.commit(&done, CommitMode::Async)
                    {
                        warn!(error = %e, "cannot record offsets in the consumer group (monitoring only)");
                    }
                }
                last_ckpt = Instant::now();
                periods += 1;
                if !stop && periods.is_multiple_of(10) {
                    let fresh = rt.block_on(Reference::load(&lake))?;
                    *reference.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
                }
            }
            if stop {
                return Ok(summary);
            }
        }
    });
    tokio::pin!(stop);
    let mut worker = worker;
    tokio::select! {
        r = &mut worker => return r.map_err(|_| SpeedError::Panicked)?,
        () = &mut stop => {}
    }
    stopping.store(true, Ordering::SeqCst);
    let summary = worker.await.map_err(|_| SpeedError::Panicked)??;
    if summary.late > 0 {
        warn!(
            late = summary.late,
            "events arrived after the allowed lateness (in l1/late_events)"
        );
    }
    Ok(summary)
}

fn pipeline_topics(p: &Pipeline) -> HashMap<String, usize> {
    p.topics()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i))
        .collect()
}

/// The offsets of a checkpoint row's `offsets` column.
pub fn parse_offsets(text: &str) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}
