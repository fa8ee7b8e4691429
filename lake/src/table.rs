//! One Delta table of the lake: exactly-once appends with Kafka offsets, atomic partition
//! replace, reads, history.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::{Expr, col, lit};
use deltalake::datafusion::scalar::ScalarValue;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;
use serde_json::Value;

use crate::catalog::{TableDef, WriteMode};
use crate::error::{Error, Result};
use crate::kafka::{Offset, OffsetRanges, PipelineId, TopicPartition};
use crate::time::BusinessDate;

/// A Delta table version.
pub type Version = u64;

/// Commit metadata key naming the writing pipeline.
pub const META_PIPELINE: &str = "lakehouse.pipeline";
/// Commit metadata key holding the per-partition offset ranges of an exactly-once append.
pub const META_OFFSETS: &str = "lakehouse.offsets";
/// Commit metadata key holding the replaced partition of a replace.
pub const META_REPLACED: &str = "lakehouse.replaced";

/// Records in a replace's commit metadata which partitions it replaced ([`META_REPLACED`]).
fn record_replaced(metadata: &mut HashMap<String, Value>, column: &str, dates: &[BusinessDate]) {
    metadata.insert(
        META_REPLACED.to_string(),
        serde_json::json!({
            "column": column,
            "values": dates.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
    );
}

/// One commit of a table's history.
#[derive(Clone, Debug)]
pub struct Commit {
    /// The version this commit created.
    pub version: Version,
    /// Commit time.
    pub timestamp: Option<DateTime<Utc>>,
    /// Delta operation (`WRITE`, `CREATE TABLE`, ...).
    pub operation: String,
    /// Offsets of an exactly-once append.
    pub offsets: Option<OffsetRanges>,
    /// Writing pipeline, if recorded.
    pub pipeline: Option<String>,
    /// Operation parameters and application metadata.
    pub details: BTreeMap<String, Value>,
}

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Small files replaced.
    pub files_removed: u64,
    /// Compacted files written.
    pub files_added: u64,
    /// Partitions that had files compacted.
    pub partitions: u64,
}

/// What a vacuum deleted (or would delete, on a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vacuum {
    /// The files, as paths under the table.
    pub files: Vec<String>,
    /// Nothing was deleted.
    pub dry_run: bool,
}

/// A Parquet data file stored under a table by a writer other than delta-rs (the batch layer
/// writes its outputs with Polars), not visible to readers until a commit adds it
/// ([`Table::replace_partition_files`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// Path under the table root (`<column>=<value>/part-....parquet`).
    pub path: String,
    /// Size in bytes.
    pub size: i64,
    /// Rows in the file.
    pub rows: u64,
}

/// A lake table opened at some version.
#[derive(Clone, Debug)]
pub struct Table {
    name: String,
    def: Option<TableDef>,
    inner: DeltaTable,
}

impl Table {
    pub(crate) fn new(name: &str, def: Option<TableDef>, inner: DeltaTable) -> Self {
        Table {
            name: name.to_string(),
            def,
            inner,
        }
    }

    /// The table's path under the lake root.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The catalog definition, if the table is one of the catalog's.
    pub fn def(&self) -> Option<&TableDef> {
        self.def.as_ref()
    }

    /// The loaded version.
    pub fn version(&self) -> Option<Version> {
        self.inner.version()
    }

    /// The underlying delta-rs table (for readers that need file lists or custom scans).
    pub fn delta(&self) -> &DeltaTable {
        &self.inner
    }

    fn err(&self, e: deltalake::DeltaTableError) -> Error {
        Error::delta(&self.name, self.version().map(|v| v as i64), e)
    }

    /// Moves to the newest committed version.
    pub async fn refresh(&mut self) -> Result<()> {
        let r = self.inner.update_state().await;
        r.map_err(|e| self.err(e))
    }

    /// The Arrow schema of the loaded version.
    pub fn schema(&self) -> Result<SchemaRef> {
        let snapshot = self.inner.snapshot().map_err(|e| self.err(e))?;
        Ok(snapshot.snapshot().arrow_schema())
    }

    /// Partition columns of the loaded version.
    pub fn partition_columns(&self) -> Result<Vec<String>> {
        let snapshot = self.inner.snapshot().map_err(|e| self.err(e))?;
        Ok(snapshot.metadata().partition_columns().to_vec())
    }

    /// Delta table properties of the loaded version.
    pub fn properties(&self) -> Result<BTreeMap<String, String>> {
        let snapshot = self.inner.snapshot().map_err(|e| self.err(e))?;
        Ok(snapshot
            .metadata()
            .configuration()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// URIs of the Parquet files of the loaded version.
    pub fn file_uris(&self) -> Result<Vec<String>> {
        let uris = self.inner.get_file_uris().map_err(|e| self.err(e))?;
        Ok(uris.collect())
    }

    /// Paths of the Parquet files of the loaded version when they are all on the local file
    /// system (a `file://` lake), for readers that open them directly; `None` otherwise.
    pub fn local_files(&self) -> Result<Option<Vec<std::path::PathBuf>>> {
        let mut out = Vec::new();
        for uri in self.file_uris()? {
            let path = if uri.starts_with('/') {
                std::path::PathBuf::from(uri)
            } else {
                // (`to_file_path` does not check the scheme itself)
                match url::Url::parse(&uri) {
                    Ok(u) if u.scheme() == "file" => match u.to_file_path() {
                        Ok(p) => p,
                        Err(()) => return Ok(None),
                    },
                    _ => return Ok(None),
                }
            };
            out.push(path);
        }
        Ok(Some(out))
    }

    /// The last offset `pipeline` committed for `tp` in the loaded version (the Delta `txn`
    /// action with app id `<pipeline>-<topic>-<partition>`).
    pub async fn committed_offset(
        &self,
        pipeline: &PipelineId,
        tp: &TopicPartition,
    ) -> Result<Option<Offset>> {
        let snapshot = self.inner.snapshot().map_err(|e| self.err(e))?;
        let v = snapshot
            .transaction_version(self.inner.log_store().as_ref(), pipeline.app_id(tp))
            .await
            .map_err(|e| self.err(e))?;
        Ok(v.map(Offset))
    }

    /// [`Table::committed_offset`] for several partitions; partitions never written are absent.
    pub async fn committed_offsets(
        &self,
        pipeline: &PipelineId,
        tps: impl IntoIterator<Item = TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, Offset>> {
        let mut out = BTreeMap::new();
        for tp in tps {
            if let Some(o) = self.committed_offset(pipeline, &tp).await? {
                out.insert(tp, o);
            }
        }
        Ok(out)
    }

    fn schema_for_write(&self) -> Result<SchemaRef> {
        match &self.def {
            Some(def) => Ok(def.schema.clone()),
            None => self.schema(),
        }
    }

    fn check_schema(&self, batches: &[RecordBatch]) -> Result<()> {
        let expected = self.schema_for_write()?;
        for batch in batches {
            let got = batch.schema();
            let mismatch = |detail: String| Error::SchemaMismatch {
                table: self.name.clone(),
                detail,
            };
            for (i, e) in expected.fields().iter().enumerate() {
                match got.fields().get(i) {
                    None => {
                        return Err(mismatch(format!(
                            "column {i} `{}` ({}) is missing",
                            e.name(),
                            e.data_type()
                        )));
                    }
                    Some(g) if g.name() != e.name() || g.data_type() != e.data_type() => {
                        return Err(mismatch(format!(
                            "column {i} should be `{}` ({}), got `{}` ({})",
                            e.name(),
                            e.data_type(),
                            g.name(),
                            g.data_type()
                        )));
                    }
                    Some(_) => {}
                }
            }
            if got.fields().len() > expected.fields().len() {
                let extra = &got.fields()[expected.fields().len()];
                return Err(mismatch(format!("unexpected column `{}`", extra.name())));
            }
        }
        Ok(())
    }

    /// Appends `batches` and records `ranges` in the same commit: one Delta `txn` action per
    /// partition (app id `<pipeline>-<topic>-<partition>`, version = last offset) and the ranges
    /// in `commitInfo`. Ranges that start at or below an offset already committed are refused
    /// with [`Error::OffsetsOutOfOrder`]; a concurrent writer with the same app id that commits
    /// first makes this one fail with [`Error::CommitConflict`]. Either way nothing is written.
    pub async fn append_exactly_once(
        &mut self,
        pipeline: &PipelineId,
        batches: Vec<RecordBatch>,
        ranges: &OffsetRanges,
    ) -> Result<Version> {
        self.check_schema(&batches)?;
        let mut txns = Vec::with_capacity(ranges.len());
        for (tp, range) in ranges.iter() {
            let committed = self.committed_offset(pipeline, tp).await?;
            if committed.is_some_and(|c| range.first <= c) || range.last < range.first {
                return Err(Error::OffsetsOutOfOrder {
                    table: self.name.clone(),
                    partition: tp.clone(),
                    first: range.first,
                    committed,
                });
            }
            txns.push(Transaction::new(pipeline.app_id(tp), range.last.0));
        }
        let props = CommitProperties::default()
            .with_application_transactions(txns)
            .with_metadata([
                (META_PIPELINE.to_string(), Value::String(pipeline.0.clone())),
                (META_OFFSETS.to_string(), ranges.to_json()),
            ]);
        self.write(batches, SaveMode::Append, None, props).await
    }

    /// Appends rows with optional commit metadata (system tables; no offsets).
    pub async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        metadata: HashMap<String, Value>,
    ) -> Result<Version> {
        self.check_schema(&batches)?;
        let props = CommitProperties::default().with_metadata(metadata);
        self.write(batches, SaveMode::Append, None, props).await
    }

    /// Replaces every row whose `column` equals `date` with `batches`, in one commit: a reader
    /// sees the old rows or the new, never a mix. Every new row must carry that date.
    pub async fn replace_partition(
        &mut self,
        column: &str,
        date: BusinessDate,
        batches: Vec<RecordBatch>,
        metadata: HashMap<String, Value>,
    ) -> Result<Version> {
        self.replace_dates(column, &[date], batches, metadata).await
    }

    /// Replaces every row whose `column` is one of `dates` with `batches`, in one commit.
    /// Every new row must carry one of those dates.
    pub async fn replace_dates(
        &mut self,
        column: &str,
        dates: &[BusinessDate],
        batches: Vec<RecordBatch>,
        mut metadata: HashMap<String, Value>,
    ) -> Result<Version> {
        self.check_schema(&batches)?;
        let values: Vec<_> = dates
            .iter()
            .map(|d| lit(ScalarValue::Date32(Some(d.days_since_epoch()))))
            .collect();
        let predicate = col(column).in_list(values, false);
        record_replaced(&mut metadata, column, dates);
        let props = CommitProperties::default().with_metadata(metadata);
        self.write(batches, SaveMode::Overwrite, Some(predicate), props)
            .await
    }

    /// Stores `parquet` (one Parquet file holding rows of the partition `column` = `value`,
    /// without that column) under the table. Nothing is visible until
    /// [`Table::replace_partition_files`] commits it; a file never committed is an orphan
    /// that vacuum removes.
    pub async fn put_data_file(
        &self,
        column: &str,
        value: &str,
        parquet: bytes::Bytes,
        rows: u64,
    ) -> Result<StoredFile> {
        use object_store::ObjectStoreExt;
        self.check_partition_column(column)?;
        let path = format!(
            "{column}={value}/part-00000-{}-c000.parquet",
            uuid::Uuid::new_v4()
        );
        let size = parquet.len() as i64;
        let url = self.inner.table_url();
        // a local lake's file, named as object_store's local store names it
        let local = || {
            let root = url.to_file_path().ok()?;
            object_store::local::LocalFileSystem::new_with_prefix(root)
                .ok()?
                .path_to_filesystem(&object_store::path::Path::from(path.as_str()))
                .ok()
        };
        if url.scheme() == "file"
            && let Some(file) = local()
        {
            // written around the page cache (`direct`)
            let written =
                tokio::task::spawn_blocking(move || crate::direct::write_new_file(&file, &parquet))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            written.map_err(|e| {
                Error::Store(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("writing {path} under {url}: {e}").into(),
                })
            })?;
        } else {
            self.inner
                .log_store()
                .object_store(None)
                .put(
                    &object_store::path::Path::from(path.as_str()),
                    parquet.into(),
                )
                .await
                .map_err(|e| self.err(e.into()))?;
        }
        Ok(StoredFile { path, size, rows })
    }

    /// Replaces every row whose partition `column` equals `date` with the rows of `files`
    /// (stored by [`Table::put_data_file`]) in one commit: a reader sees the old files or the
    /// new, never a mix. The commit is a Delta overwrite of that partition, as
    /// [`Table::replace_partition`]'s.
    pub async fn replace_partition_files(
        &mut self,
        column: &str,
        date: BusinessDate,
        files: Vec<StoredFile>,
        mut metadata: HashMap<String, Value>,
    ) -> Result<Version> {
        use deltalake::kernel::transaction::CommitBuilder;
        use deltalake::kernel::{Action, Add};
        self.check_partition_column(column)?;
        let value = date.to_string();
        let filters = [(
            column,
            deltalake::FilterOp::Eq,
            deltalake::FilterValue::Scalar(value.as_str()),
        )];
        let mut actions: Vec<Action> = self
            .inner
            .get_active_add_actions_by_partitions(&filters)
            .map_ok(|f| Action::Remove(f.remove_action(true)))
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        let now = Utc::now().timestamp_millis();
        actions.extend(files.into_iter().map(|f| {
            Action::Add(Add {
                path: f.path,
                partition_values: HashMap::from([(column.to_string(), Some(value.clone()))]),
                size: f.size,
                modification_time: now,
                data_change: true,
                stats: Some(serde_json::json!({ "numRecords": f.rows }).to_string()),
                ..Default::default()
            })
        }));
        record_replaced(&mut metadata, column, &[date]);
        let operation = deltalake::protocol::DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: Some(self.partition_columns()?),
            predicate: Some(format!("{column} = '{value}'")),
        };
        let snapshot = self.inner.snapshot().map_err(|e| self.err(e))?;
        let done = CommitBuilder::from(CommitProperties::default().with_metadata(metadata))
            .with_actions(actions)
            .build(Some(snapshot), self.inner.log_store(), operation)
            .await
            .map_err(|e| self.err(e))?;
        let version = done.version();
        self.refresh().await?;
        Ok(version as Version)
    }

    /// `column` is the table's one partition column (what a stored file's path and commit
    /// name).
    fn check_partition_column(&self, column: &str) -> Result<()> {
        let partitions = self.partition_columns()?;
        if partitions != [column] {
            return Err(Error::SchemaMismatch {
                table: self.name.clone(),
                detail: format!("partitioned by {partitions:?}, not by `{column}` alone"),
            });
        }
        Ok(())
    }

    /// Replaces the whole table's rows with `batches` in one commit.
    pub async fn replace_all(
        &mut self,
        batches: Vec<RecordBatch>,
        metadata: HashMap<String, Value>,
    ) -> Result<Version> {
        self.check_schema(&batches)?;
        let props = CommitProperties::default().with_metadata(metadata);
        self.write(batches, SaveMode::Overwrite, None, props).await
    }

    async fn write(
        &mut self,
        batches: Vec<RecordBatch>,
        mode: SaveMode,
        replace_where: Option<Expr>,
        props: CommitProperties,
    ) -> Result<Version> {
        let partitions = self.partition_columns()?;
        // a commit with offsets but no rows (e.g. every message of the range was filtered)
        // still has to record the offsets: write one empty batch
        let batches = if batches.iter().all(|b| b.num_rows() == 0) {
            vec![RecordBatch::new_empty(self.schema_for_write()?)]
        } else {
            batches
        };
        let mut builder = self
            .inner
            .clone()
            .write(batches)
            .with_save_mode(mode)
            .with_commit_properties(props);
        if !partitions.is_empty() {
            builder = builder.with_partition_columns(partitions);
        }
        if let Some(p) = replace_where {
            builder = builder.with_replace_where(p);
        }
        let table = builder.await.map_err(|e| self.err(e))?;
        self.inner = table;
        self.version().ok_or_else(|| Error::Delta {
            table: self.name.clone(),
            source: deltalake::DeltaTableError::NotInitialized,
        })
    }

    /// Compacts the small files of every partition where `column` is before `before` (closed
    /// dates) into files of about `target_size` bytes. The rows, their order within a file and
    /// the Kafka `txn` records are untouched and the commit changes no data (`dataChange`
    /// false, allowed on append-only tables): earlier versions stay readable (time travel)
    /// until a vacuum beyond the retention removes their files.
    pub async fn compact(
        &mut self,
        column: &str,
        before: BusinessDate,
        target_size: u64,
    ) -> Result<Compaction> {
        let day = before.to_string();
        let filters = [(
            column,
            deltalake::FilterOp::Lt,
            deltalake::FilterValue::Scalar(day.as_str()),
        )];
        let target =
            std::num::NonZeroU64::new(target_size.max(1)).unwrap_or(std::num::NonZeroU64::MIN);
        let (table, metrics) = self
            .inner
            .clone()
            .optimize()
            .with_filters(&filters)
            .with_target_size(target)
            .with_max_concurrent_tasks(1)
            .await
            .map_err(|e| self.err(e))?;
        self.inner = table;
        Ok(Compaction {
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            partitions: metrics.partitions_optimized,
        })
    }

    /// Writes a Delta checkpoint of the loaded version (readers then replay the log from it,
    /// not from version 0) and removes log files older than the table's
    /// `delta.logRetentionDuration` that the checkpoint makes unnecessary.
    pub async fn checkpoint(&mut self) -> Result<usize> {
        if self.version().is_none() {
            return Ok(0);
        }
        deltalake::checkpoints::create_checkpoint(&self.inner, None)
            .await
            .map_err(|e| self.err(e))?;
        let removed = deltalake::checkpoints::cleanup_metadata(&self.inner, None)
            .await
            .map_err(|e| self.err(e))?;
        self.refresh().await?;
        Ok(removed)
    }

    /// Deletes the data files that no version younger than `retention` needs: files removed
    /// from the table (by a replace or a compaction) longer than `retention` ago, and files
    /// that no commit ever added (left by a writer killed before its commit) older than it.
    /// Time travel to versions older than `retention` stops working for the rows it deletes.
    /// Append-only (L1 and system) tables refuse a retention below their
    /// `delta.deletedFileRetentionDuration` (seven years): they are never vacuumed inside it.
    pub async fn vacuum(
        &mut self,
        retention: std::time::Duration,
        dry_run: bool,
    ) -> Result<Vacuum> {
        let protected = self.def().is_some_and(|d| d.mode == WriteMode::AppendOnly);
        if protected && retention < crate::catalog::APPEND_ONLY_RETENTION {
            return Err(Error::AppendOnly {
                table: self.name.clone(),
                operation: format!(
                    "vacuum inside its {}-day retention ({} days asked)",
                    crate::catalog::APPEND_ONLY_RETENTION.as_secs() / 86_400,
                    retention.as_secs() / 86_400,
                ),
            });
        }
        let retention = chrono::Duration::from_std(retention)
            .map_err(|_| Error::Config(format!("retention {retention:?} is too long")))?;
        let (table, metrics) = self
            .inner
            .clone()
            .vacuum()
            .with_retention_period(retention)
            // the lake's own policy (above) decides; the table property only guards L1
            .with_enforce_retention_duration(protected)
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .with_dry_run(dry_run)
            .await
            .map_err(|e| self.err(e))?;
        self.inner = table;
        Ok(Vacuum {
            files: metrics.files_deleted,
            dry_run,
        })
    }

    /// Reads every row of the loaded version.
    pub async fn read_all(&self) -> Result<Vec<RecordBatch>> {
        let (_, stream) = self
            .inner
            .clone()
            .scan_table()
            .await
            .map_err(|e| self.err(e))?;
        stream
            .try_collect()
            .await
            .map_err(|e| self.err(deltalake::DeltaTableError::from(e)))
    }

    /// Reads the rows of the loaded version that `filter` keeps (all without one), only the
    /// `columns` named (all without them). A filter on partition columns prunes whole files,
    /// and one on other columns skips row groups by their statistics: the batch layer reads
    /// a business date's few event-date partitions, not the table.
    pub async fn scan(
        &self,
        filter: Option<Expr>,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        let ctx = deltalake::delta_datafusion::create_session().into_inner();
        self.inner
            .update_datafusion_session(&ctx.state())
            .map_err(|e| self.err(e))?;
        let provider = self
            .inner
            .table_provider()
            .await
            .map_err(|e| self.err(e.into()))?;
        let df_err = |e: deltalake::datafusion::error::DataFusionError| {
            self.err(deltalake::DeltaTableError::from(e))
        };
        let mut df = ctx.read_table(provider).map_err(df_err)?;
        if let Some(f) = filter {
            df = df.filter(f).map_err(df_err)?;
        }
        if let Some(cols) = columns {
            df = df.select_columns(cols).map_err(df_err)?;
        }
        df.collect().await.map_err(df_err)
    }

    /// Number of rows in the loaded version (reads every row; meant for checks and tools).
    pub async fn count_rows(&self) -> Result<usize> {
        Ok(self
            .read_all()
            .await?
            .iter()
            .map(RecordBatch::num_rows)
            .sum())
    }

    /// The newest `limit` commits (all when `None`), newest first.
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<Commit>> {
        let latest = self.version().unwrap_or_default();
        let infos: Vec<_> = self
            .inner
            .history(limit)
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        Ok(infos
            .into_iter()
            .enumerate()
            .map(|(i, info)| {
                let mut details: BTreeMap<String, Value> = info
                    .operation_parameters
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let offsets = info
                    .info
                    .get(META_OFFSETS)
                    .and_then(OffsetRanges::from_json);
                let pipeline = info
                    .info
                    .get(META_PIPELINE)
                    .and_then(Value::as_str)
                    .map(str::to_string);
                for (k, v) in info.info {
                    if k != META_OFFSETS && k != META_PIPELINE && k.starts_with("lakehouse.") {
                        details.insert(k, v);
                    }
                }
                Commit {
                    version: latest.saturating_sub(i as u64),
                    timestamp: info.timestamp.and_then(DateTime::from_timestamp_millis),
                    operation: info.operation.unwrap_or_default(),
                    offsets,
                    pipeline,
                    details,
                }
            })
            .collect())
    }
}
