//! Commits batches to the lake, exactly once.
//!
//! A batch becomes at most one commit per table. Each commit carries a Delta `txn` per Kafka
//! partition (version = last offset it covers), so a table knows exactly which offsets it
//! holds. Dead letters live in their own table and are committed first, with the same ranges;
//! a crash between the two commits leaves the dead letters ahead, and the re-read after the
//! restart drops what each table already holds (see [`commit_rows`]). That is what "in the
//! same commit" means across two Delta tables: each message ends up exactly once in exactly
//! one of them, whatever the interleaving of crashes, restarts and rebalances.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use lakehouse_lake::catalog::{self, names};
use lakehouse_lake::{
    ErrorKind, Lake, Offset, OffsetRanges, PipelineId, Result, Table, TopicPartition,
};
use tracing::{debug, info, warn};

use crate::buffer::{Batch, Rows};
use crate::config::TopicMapping;
use crate::decode::EventKind;
use crate::failpoint;
use crate::metrics::{self, Metrics};

/// Last committed offset per partition, shared with the consumer for lag.
pub type Committed = Arc<Mutex<BTreeMap<TopicPartition, Offset>>>;

/// What one batch commit did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Rows committed per table (dead letters under `l1/dead_letters`).
    pub rows: BTreeMap<String, usize>,
    /// Retries after conflicts.
    pub conflicts: u32,
}

/// The lake side of ingest: one open [`Table`] per target, plus the dead letters.
pub struct Writer {
    pipeline: PipelineId,
    tables: HashMap<String, Table>,
    dead: Table,
    metrics: Metrics,
    committed: Committed,
}

/// Opens (creating if needed) the L1 table a mapping writes to.
pub async fn open_table(lake: &Lake, mapping: &TopicMapping) -> Result<Table> {
    let base = match mapping.kind {
        EventKind::MarketTrades => names::MARKET_TRADES,
        EventKind::Orders => names::ORDERS,
        EventKind::Executions => names::EXECUTIONS,
    };
    let mut def = catalog::table(base).expect("L1 tables are in the catalog");
    if mapping.table() != base {
        // a custom table gets the schema, partitioning and properties of its kind's table
        def.name = Box::leak(mapping.table().to_string().into_boxed_str());
    }
    lake.create_table(&def).await
}

impl Writer {
    /// Opens every target table and `l1/dead_letters`, creating what is missing.
    pub async fn open(
        lake: &Lake,
        pipeline: PipelineId,
        mappings: &[TopicMapping],
        metrics: Metrics,
        committed: Committed,
    ) -> Result<Self> {
        let mut tables = HashMap::new();
        for m in mappings {
            if !tables.contains_key(m.table()) {
                tables.insert(m.table().to_string(), open_table(lake, m).await?);
            }
        }
        let dead_def = catalog::table(names::DEAD_LETTERS).expect("in the catalog");
        let dead = lake.create_table(&dead_def).await?;
        Ok(Writer {
            pipeline,
            tables,
            dead,
            metrics,
            committed,
        })
    }

    /// The open table named `name` (one of the mappings' tables).
    pub fn table(&self, name: &str) -> &Table {
        &self.tables[name]
    }

    /// Commits `batch`: dead letters first, then every data table (concurrently).
    pub async fn commit(&mut self, mut batch: Batch) -> Result<CommitReport> {
        failpoint::hit("ingest.before-commit");
        let mut report = CommitReport::default();
        let all = batch.all_ranges();
        if !batch.dead.is_empty() {
            let dead = Rows::Dead(std::mem::take(&mut batch.dead));
            let (n, c) = commit_rows(
                &self.pipeline,
                &mut self.dead,
                dead,
                all.clone(),
                &self.metrics,
            )
            .await?;
            report.rows.insert(names::DEAD_LETTERS.to_string(), n);
            report.conflicts += c;
        }
        failpoint::hit("ingest.after-dead-letters");
        let pipeline = &self.pipeline;
        let metrics = &self.metrics;
        // collected first: a lazy iterator of futures makes the whole future `!Send` (the
        // closure's borrows become higher-ranked), and `run` must be spawnable
        let mut work = Vec::new();
        for (name, table) in self.tables.iter_mut() {
            if let Some(rows) = batch.tables.remove(name) {
                work.push(async move {
                    let (n, c) =
                        commit_rows(pipeline, table, rows.rows, rows.ranges, metrics).await?;
                    Ok::<_, lakehouse_lake::Error>((name.clone(), n, c))
                });
            }
        }
        for (name, n, c) in try_join_all(work).await? {
            report.rows.insert(name, n);
            report.conflicts += c;
        }
        failpoint::hit("ingest.after-commit");
        for (topic, counts) in &batch.counts {
            let labels = metrics::topic(topic);
            self.metrics
                .consumed
                .get_or_create(&labels)
                .inc_by(counts.messages);
            self.metrics
                .bytes
                .get_or_create(&labels)
                .inc_by(counts.bytes);
            for (class, n) in &counts.dead {
                let mut l = labels.clone();
                l.push(("class", class.to_string()));
                self.metrics.dead_lettered.get_or_create(&l).inc_by(*n);
            }
        }
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        for (tp, r) in all.iter() {
            committed.insert(tp.clone(), r.last);
        }
        Ok(report)
    }
}

/// Appends `rows` covering `ranges` to `table`, exactly once. When another writer got there
/// first (a rebalance moved the partition, or a crashed run's commit landed), the table is
/// reloaded and every row at or below its committed offsets is dropped before trying again.
/// Transient storage errors are retried with backoff. Returns (rows written, conflicts).
pub async fn commit_rows(
    pipeline: &PipelineId,
    table: &mut Table,
    mut rows: Rows,
    mut ranges: OffsetRanges,
    metrics: &Metrics,
) -> Result<(usize, u32)> {
    let mut conflicts = 0;
    let mut transient = 0;
    loop {
        if ranges.is_empty() {
            return Ok((0, conflicts));
        }
        let batch = rows.to_batch()?;
        let started = Instant::now();
        match table
            .append_exactly_once(pipeline, vec![batch], &ranges)
            .await
        {
            Ok(version) => {
                let secs = started.elapsed().as_secs_f64();
                let labels = vec![("table", table.name().to_string())];
                metrics.commit_seconds.get_or_create(&labels).observe(secs);
                metrics
                    .written
                    .get_or_create(&labels)
                    .inc_by(rows.len() as u64);
                debug!(
                    table = table.name(),
                    version,
                    rows = rows.len(),
                    secs,
                    "committed"
                );
                return Ok((rows.len(), conflicts));
            }
            Err(e) if e.kind() == ErrorKind::Conflict && conflicts < 20 => {
                conflicts += 1;
                metrics.conflicts.inc();
                table.refresh().await?;
                // a Vec, not a lazy map: a closure held across the awaits inside makes the
                // future `!Send`
                let tps: Vec<TopicPartition> = ranges.iter().map(|(tp, _)| tp.clone()).collect();
                let held = table.committed_offsets(pipeline, tps).await?;
                info!(table = table.name(), error = %e, "another writer committed some of these offsets; dropping them and retrying");
                rows.retain_after(&held);
                ranges = ranges.after(&held);
            }
            Err(e) if e.kind() == ErrorKind::Retryable && transient < 8 => {
                transient += 1;
                let wait = Duration::from_millis(100 << transient);
                warn!(table = table.name(), error = %e, ?wait, "commit failed; retrying");
                tokio::time::sleep(wait).await;
                table.refresh().await?;
            }
            Err(e) => return Err(e),
        }
    }
}
