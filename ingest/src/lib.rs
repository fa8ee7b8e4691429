//! `lakehouse-ingest`: Kafka to L1 Delta, exactly once.
//!
//! - [`decode`] (re-exported from `lakehouse_lake::decode`): JSON and Protobuf decoders with
//!   validation; every rejection is classified.
//! - [`buffer`]: what is held between commits (rows per table, dead letters, offset ranges).
//! - [`writer`]: commits a batch with one Delta `txn` per partition; dead letters first.
//! - [`run`]: a consumer-group member that resumes every partition from its table, not from
//!   Kafka's group offsets.
//!
//! ```
//! use lakehouse_ingest::decode::{decode, Decoded, DecodeConfig, EventKind};
//!
//! let msg = br#"{"type":"trade","data":[{"s":"AAPL","p":0.1,"v":"3","t":1704207845123,"c":["1"]}]}"#;
//! let Ok(Decoded::Trades(prints)) = decode(EventKind::MarketTrades, msg, &DecodeConfig::default()) else { panic!() };
//! assert_eq!(prints[0].price.to_string(), "0.1");
//! ```

pub mod buffer;
pub mod config;
mod consumer;
/// The decoders live in `lakehouse_lake::decode`, shared with the speed layer.
pub use lakehouse_lake::decode;
pub mod failpoint;
pub mod metrics;
pub mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use lakehouse_lake::{Lake, Offset, PipelineId, Table, TopicPartition};
use tokio::sync::mpsc;
use tracing::info;

pub use config::{IngestConfig, TopicMapping};
pub use metrics::Metrics;

use consumer::{ConsumerSetup, Shared};
use writer::Writer;

/// Why ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The lake failed.
    #[error(transparent)]
    Lake(Box<lakehouse_lake::Error>),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A partition's committed offset is outside the topic's log.
    #[error(
        "{partition}: the lake has offsets up to {committed}, but the topic now holds {log_start}..{log_end}; \
         {} (set [ingest] accept-offset-gaps = true or pass --accept-offset-gaps to resume at the log start)",
        "messages after it were deleted by retention before they were ingested"
    )]
    OffsetGap {
        /// The partition.
        partition: TopicPartition,
        /// Last offset the table holds.
        committed: Offset,
        /// First offset the topic still has.
        log_start: Offset,
        /// The topic's end offset.
        log_end: Offset,
    },
    /// A fetch position fell outside the partition's log while running.
    #[error(
        "{0}: the position is outside the partition's log (retention deleted unread data, or the topic was re-created); \
         restart with accept-offset-gaps to resume at the log start"
    )]
    OutOfRange(String),
    /// A worker thread panicked.
    #[error("the consumer thread panicked")]
    Panicked,
}

impl From<lakehouse_lake::Error> for IngestError {
    fn from(e: lakehouse_lake::Error) -> Self {
        IngestError::Lake(Box::new(e))
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Messages consumed.
    pub messages: u64,
    /// Batches committed.
    pub batches: u64,
}

/// Runs ingest until `shutdown` resolves (then commits what it holds and leaves the group)
/// or a fatal error.
pub async fn run(
    cfg: IngestConfig,
    brokers: &str,
    lake: Lake,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, IngestError> {
    cfg.validate().map_err(IngestError::Config)?;
    let pipeline = PipelineId::new(cfg.pipeline.as_str());
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        inflight: AtomicUsize::new(0),
        committed: Default::default(),
        metrics: metrics.clone(),
    });
    let mut writer = Writer::open(
        &lake,
        pipeline.clone(),
        &cfg.topics,
        metrics,
        shared.committed.clone(),
    )
    .await?;
    // the consumer's handles (for committed offsets on assignment) are copies of the writer's
    let lookup: HashMap<String, Table> = cfg
        .topics
        .iter()
        .map(|m| (m.topic.clone(), writer.table(m.table()).clone()))
        .collect();
    let (tx, mut rx) = mpsc::channel(1);
    let setup = ConsumerSetup {
        cfg,
        brokers: brokers.to_string(),
        pipeline,
        tables: lookup,
        shared: shared.clone(),
        tx,
        handle: tokio::runtime::Handle::current(),
    };
    let thread = std::thread::Builder::new()
        .name("ingest-consumer".into())
        .spawn(move || consumer::consume(setup))
        .map_err(|e| IngestError::Config(format!("cannot start the consumer thread: {e}")))?;

    let inflight = shared.clone();
    // owns the receiver: when it stops (done or failed) the consumer's next hand-over fails
    let writing = async move {
        while let Some(batch) = rx.recv().await {
            let messages = batch.messages();
            let result = writer.commit(batch).await;
            inflight.inflight.fetch_sub(1, Ordering::SeqCst);
            let report = result?;
            tracing::debug!(messages, ?report.rows, "batch committed");
        }
        Ok::<(), IngestError>(())
    };
    tokio::pin!(shutdown);
    tokio::pin!(writing);
    let written = tokio::select! {
        r = &mut writing => r,
        () = &mut shutdown => {
            info!("stopping: committing what is buffered");
            shared.stop.store(true, Ordering::SeqCst);
            writing.await
        }
    };
    if written.is_err() {
        // the consumer must not wait for commits that will never come
        shared.stop.store(true, Ordering::SeqCst);
        shared.inflight.store(0, Ordering::SeqCst);
    }
    let consumed = tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|_| IngestError::Panicked)?
        .map_err(|_| IngestError::Panicked)?;
    written?;
    let stats = consumed?;
    Ok(Summary {
        messages: stats.messages,
        batches: stats.batches,
    })
}

/// `run` can be spawned on a multi-threaded runtime (`lakehouse up` runs every role together).
#[allow(dead_code)]
fn run_is_send(lake: Lake) {
    fn send<T: Send>(_: T) {}
    send(run(
        IngestConfig::default(),
        "",
        lake,
        Metrics::new(),
        async {},
    ));
}
