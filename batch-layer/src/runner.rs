//! The runner: one business date through the job chain L1 -> L2 -> L3.
//!
//! 1. Open the L1 and reference tables at their current versions (the run's inputs) and read
//!    only the event-date partitions that can hold the date's events.
//! 2. Run the jobs (Polars), L2 first, then L3 from the L2 frames.
//! 3. The batch boundary: for every Kafka partition the inputs hold (and every one an earlier
//!    run's boundary named), the last offset ingest committed in the input version. Serving
//!    answers the events of dates up to this date and at or below these offsets from the batch
//!    view, and the rest from the speed layer.
//! 4. Replace the date's partition of each output table, one atomic commit per table, then
//!    append the ledger row that publishes the run: date, inputs and versions, boundary,
//!    output versions, rows, duration, status. A run that fails or is killed before that row
//!    published nothing: readers that follow the ledger (serving) never see it, and a reader of
//!    one table sees the old partition or the new one, never a mix. A rerun replaces the date
//!    again with the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::Utc;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType as ArrowType, Date32Type, SchemaRef};
use deltalake::datafusion::prelude::{Expr as DfExpr, col as df_col, lit as df_lit};
use deltalake::datafusion::scalar::ScalarValue;
use lakehouse_lake::catalog::names;
use lakehouse_lake::{
    BusinessCalendar, BusinessDate, ErrorKind, EventTime, Lake, PipelineId, Table, TopicPartition,
    Version, schema,
};
use polars::prelude::{DataFrame, IntoLazy};
use serde_json::{Value, json};

use crate::frame::{self, FrameError};
use crate::jobs::{self, JobParams, Window};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The lake.
    #[error(transparent)]
    Lake(Box<lakehouse_lake::Error>),
    /// Polars or the hand-over.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A job.
    #[error("polars: {0}")]
    Polars(#[from] polars::prelude::PolarsError),
    /// The job thread panicked or was cancelled.
    #[error("batch job thread: {0}")]
    Task(String),
}

impl From<lakehouse_lake::Error> for RunError {
    fn from(e: lakehouse_lake::Error) -> Self {
        RunError::Lake(Box::new(e))
    }
}

impl RunError {
    /// Is retrying the run pointless (bad input or configuration)?
    pub fn is_permanent(&self) -> bool {
        matches!(self, RunError::Lake(e) if e.kind() == ErrorKind::InvalidInput)
    }
}

/// The outputs in the order the run writes them.
pub const OUTPUTS: [&str; 10] = [
    names::L2_MARKET_TRADES,
    names::L2_EXECUTIONS,
    names::L2_ORDERS,
    names::DAILY_BARS,
    names::POSITIONS,
    names::DESK_EXPOSURE,
    names::LARGE_TRADES,
    names::TRANSACTION_REPORT,
    names::ORDER_STATS,
    names::RECONCILIATION,
];

/// The L1 event tables a run reads.
const EVENT_INPUTS: [&str; 3] = [names::MARKET_TRADES, names::EXECUTIONS, names::ORDERS];
const REF_INPUTS: [&str; 3] = [
    names::REF_INSTRUMENTS,
    names::REF_ACCOUNTS,
    names::REF_FX_RATES,
];

/// What a finished run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The run's id (also in every output commit's metadata).
    pub run_id: String,
    /// The business date.
    pub date: BusinessDate,
    /// Input tables and the versions read.
    pub inputs: BTreeMap<String, Version>,
    /// The batch boundary: last offset covered per topic and partition.
    pub boundary: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Output tables and the versions written.
    pub outputs: BTreeMap<String, Version>,
    /// Rows written per output table.
    pub rows: BTreeMap<String, usize>,
    /// Wall time.
    pub seconds: f64,
    /// Earlier dates restated first (late events), each published by its own ledger row.
    pub restated: Vec<BusinessDate>,
}

/// The input tables of a run, opened once: every date a run restates reads the same versions.
#[derive(Debug)]
pub struct Inputs {
    events: BTreeMap<&'static str, Table>,
    refs: BTreeMap<&'static str, Table>,
}

/// The run serving answers from: of the succeeded runs, the latest business date, and of its
/// reruns the last finished.
pub fn served_run(ledger: &[LedgerRow]) -> Option<&LedgerRow> {
    ledger
        .iter()
        .filter(|r| r.status == "succeeded")
        .max_by_key(|r| (r.business_date, r.finished_at))
}

/// Runs dates through the job chain.
#[derive(Clone, Debug)]
pub struct Runner {
    lake: Lake,
    calendar: BusinessCalendar,
    params: JobParams,
    pipeline: PipelineId,
}

fn date_lit(d: BusinessDate) -> DfExpr {
    df_lit(ScalarValue::Date32(Some(d.days_since_epoch())))
}

impl Runner {
    /// A runner over `lake`; `pipeline` is ingest's pipeline id (whose committed offsets make
    /// the boundary).
    pub fn new(
        lake: Lake,
        calendar: BusinessCalendar,
        params: JobParams,
        pipeline: PipelineId,
    ) -> Runner {
        Runner {
            lake,
            calendar,
            params,
            pipeline,
        }
    }

    /// The lake it runs on.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The window of `date` under the runner's calendar.
    pub fn window(&self, date: BusinessDate) -> Window {
        let (start, end) = self.calendar.utc_range(date);
        Window { date, start, end }
    }

    /// Runs `date` and publishes it in the ledger. On failure a `failed` ledger row records
    /// the error (when the lake still takes writes) and the error is returned.
    ///
    /// Dates before `date` that got late events since the served run's boundary are restated
    /// first, against the same pinned inputs: the new boundary covers those events, so the
    /// batch view must hold them (see [`Runner::late_dates`]).
    pub async fn run(&self, date: BusinessDate) -> Result<RunReport, RunError> {
        // the jobs' freed buffers are reused by the next jobs, not handed back between them
        let _memory = crate::memory::hold();
        let t = Instant::now();
        self.lake.create_missing().await?;
        let catalog_s = t.elapsed().as_secs_f64();
        let inputs = self.open_inputs().await?;
        let open_s = t.elapsed().as_secs_f64() - catalog_s;
        let late = self.late_dates(date, &inputs).await?;
        tracing::debug!(
            catalog_s,
            open_s,
            late_s = t.elapsed().as_secs_f64() - catalog_s - open_s,
            "before the run: the catalog, the inputs' snapshots, the late events"
        );
        let mut restated = Vec::new();
        for d in late {
            tracing::info!(%d, for_date = %date, "restating a date with late events");
            self.run_pinned(d, &inputs).await?;
            restated.push(d);
        }
        let mut report = self.run_pinned(date, &inputs).await?;
        report.restated = restated;
        Ok(report)
    }

    /// The inputs at their current versions; every date of one run reads these.
    async fn open_inputs(&self) -> Result<Inputs, RunError> {
        let mut events = BTreeMap::new();
        for name in EVENT_INPUTS {
            events.insert(name, self.lake.table(name).await?);
        }
        let mut refs = BTreeMap::new();
        for name in REF_INPUTS {
            refs.insert(name, self.lake.table(name).await?);
        }
        Ok(Inputs { events, refs })
    }

    /// The dates before `date` to run again before it: those with events the served run's
    /// boundary did not cover (late arrivals, or dates never run), and every date after the
    /// first of them that has a published run (its positions carry on from the restated
    /// ones). None when `date` comes before the served run's date (that run stays served).
    pub async fn late_dates(
        &self,
        date: BusinessDate,
        inputs: &Inputs,
    ) -> Result<Vec<BusinessDate>, RunError> {
        let ledger = read_ledger(&self.lake).await?;
        let Some(served) = served_run(&ledger) else {
            return Ok(Vec::new());
        };
        if served.business_date > date {
            return Ok(Vec::new());
        }
        // events before the window of `date` are in event-date partitions up to its first
        let until = BusinessDate(self.window(date).start.utc_date());
        // the filter in a form DataFusion answers from the files' statistics in the Delta log:
        // a file whose rows the boundary covers is not read (0.05 s for the benchmark's 66
        // files; 0.3 s when the same filter was written with a negation, which no statistics
        // answer)
        let uncovered = uncovered(&served.boundary);
        let mut late = BTreeSet::new();
        for name in EVENT_INPUTS {
            let filter = df_col(schema::COL_EVENT_DATE)
                .lt_eq(date_lit(until))
                .and(uncovered.clone());
            for b in inputs.events[name]
                .scan(Some(filter), Some(&[schema::COL_TS]))
                .await?
            {
                let ts = cast(b.column(0), &ArrowType::Int64).map_err(FrameError::from)?;
                for t in ts
                    .as_primitive::<deltalake::arrow::datatypes::Int64Type>()
                    .iter()
                    .flatten()
                {
                    let d = self.calendar.business_date(EventTime::from_micros(t));
                    if d < date {
                        late.insert(d);
                    }
                }
            }
        }
        let Some(&first) = late.first() else {
            return Ok(Vec::new());
        };
        late.extend(
            ledger
                .iter()
                .filter(|r| r.status == "succeeded")
                .map(|r| r.business_date)
                .filter(|d| (first..date).contains(d)),
        );
        Ok(late.into_iter().collect())
    }

    /// Runs `date` on `inputs` and publishes it (or records the failure) in the ledger.
    async fn run_pinned(&self, date: BusinessDate, inputs: &Inputs) -> Result<RunReport, RunError> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let started = Utc::now();
        let clock = Instant::now();
        match self.execute(date, inputs, &run_id, clock).await {
            Ok(report) => {
                self.ledger(&run_id, date, "succeeded", started, Some(&report), None)
                    .await?;
                Ok(report)
            }
            Err(e) => {
                if let Err(ledger) = self
                    .ledger(&run_id, date, "failed", started, None, Some(&e.to_string()))
                    .await
                {
                    tracing::error!(%ledger, "cannot record the failed run in the ledger");
                }
                Err(e)
            }
        }
    }

    async fn execute(
        &self,
        date: BusinessDate,
        pinned: &Inputs,
        run_id: &str,
        clock: Instant,
    ) -> Result<RunReport, RunError> {
        let w = self.window(date);
        let mut inputs = BTreeMap::new();
        let mut l1 = BTreeMap::new();
        let mut l1_tables = BTreeMap::new();
        // the UTC dates the window touches: its events' `event_date` partitions
        let first = w.start.utc_date();
        let last = EventTime::from_micros(w.end.micros() - 1).utc_date();
        let event_dates: Vec<DfExpr> = first
            .iter_days()
            .take_while(|d| *d <= last)
            .map(|d| date_lit(BusinessDate(d)))
            .collect();
        let date_dirs: Vec<String> = first
            .iter_days()
            .take_while(|d| *d <= last)
            .map(|d| format!("{}={}", schema::COL_EVENT_DATE, BusinessDate(d)))
            .collect();
        for name in EVENT_INPUTS {
            let table = &pinned.events[name];
            inputs.insert(name.to_string(), table.version().unwrap_or_default());
            // a local lake: the jobs' plans scan the date's files (Polars reads each job's
            // columns when the job runs, and the input is not held in memory in between)
            if let Some(files) = partition_files(table, &date_dirs)? {
                let data = data_schema(&table.schema()?);
                let params = self.params.clone();
                let input = tokio::task::spawn_blocking(move || {
                    Input::new(scan_input(name, &files, &data, &params)?, false)
                })
                .await
                .map_err(|e| RunError::Task(e.to_string()))??;
                l1.insert(name, input);
                l1_tables.insert(name, table);
                continue;
            }
            let filter = df_col(schema::COL_EVENT_DATE).in_list(event_dates.clone(), false);
            let schema = table.schema()?;
            let t0 = Instant::now();
            let scanned = table.scan(Some(filter), None).await?;
            let t1 = Instant::now();
            let batches = conform(&schema, &scanned)?;
            drop(scanned);
            let t2 = Instant::now();
            let rows = frame::to_polars(&frame_schema(&schema), &batches)?.lazy();
            tracing::debug!(
                table = name,
                scan_s = (t1 - t0).as_secs_f64(),
                conform_s = (t2 - t1).as_secs_f64(),
                to_polars_s = t2.elapsed().as_secs_f64(),
                "read"
            );
            l1.insert(name, Input::new(rows, true)?);
            l1_tables.insert(name, table);
        }
        let mut refs = BTreeMap::new();
        for name in REF_INPUTS {
            let table = &pinned.refs[name];
            inputs.insert(name.to_string(), table.version().unwrap_or_default());
            let schema = table.schema()?;
            let batches = conform(&schema, &table.read_all().await?)?;
            refs.insert(
                name,
                frame::to_polars(&frame_schema(&schema), &batches)?.lazy(),
            );
        }
        let previous = self.previous_positions(date).await?;
        let read_s = clock.elapsed().as_secs_f64();
        // Polars runs on its own threads, off the async runtime (which keeps serving I/O).
        // Each output is written as soon as it is computed, while the later jobs run, and its
        // memory is freed once no later job reads it: Polars encodes the Parquet file, the
        // lake stores it and commits it in place of the date's files. None is visible to
        // serving before the ledger row below publishes them all.
        let params = self.params.clone();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let partitions: BTreeSet<(String, i32)> = l1
            .values()
            .flat_map(|i: &Input| i.partitions.iter().cloned())
            .collect();
        let computed = tokio::task::spawn_blocking(move || -> Result<_, RunError> {
            compute(l1, &refs, previous.lazy(), &w, &params, &|name, output| {
                // the receiver only goes when the run has failed already
                let _ = done_tx.send((name, output));
            })
        });
        let meta: std::collections::HashMap<String, Value> = [
            ("lakehouse.batch.run_id".to_string(), json!(run_id)),
            ("lakehouse.batch.inputs".to_string(), json!(inputs)),
        ]
        .into_iter()
        .collect();
        let mut writes = tokio::task::JoinSet::new();
        // as many at once as there are cores: more would only hold more encoded files
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(cores));
        while let Some((name, output)) = done_rx.recv().await {
            let (lake, meta, slots) = (self.lake.clone(), meta.clone(), slots.clone());
            writes.spawn(async move {
                let _slot = slots
                    .acquire_owned()
                    .await
                    .map_err(|e| RunError::Task(e.to_string()))?;
                let mut table = lake.table(name).await?;
                let (parquet, rows) = match output {
                    Output::File { parquet, rows } => (parquet, rows),
                    Output::Frame(df) => {
                        let schema = table.schema()?;
                        let rows = df.height();
                        let parquet = tokio::task::spawn_blocking(move || {
                            frame::to_parquet(df, &schema, schema::COL_BUSINESS_DATE)
                                .map_err(|e| FrameError::Schema(format!("{name}: {e}")))
                        })
                        .await
                        .map_err(|e| RunError::Task(e.to_string()))??;
                        (parquet, rows)
                    }
                };
                let file = table
                    .put_data_file(
                        schema::COL_BUSINESS_DATE,
                        &date.to_string(),
                        parquet.into(),
                        rows as u64,
                    )
                    .await?;
                let v = table
                    .replace_partition_files(schema::COL_BUSINESS_DATE, date, vec![file], meta)
                    .await?;
                tracing::debug!(table = name, version = v, "replaced {date}");
                Ok::<_, RunError>((name, rows, v))
            });
        }
        // the jobs are done (the channel closed); a failed job fails the run once the writes
        // already started have finished
        let computed = computed.await.map_err(|e| RunError::Task(e.to_string()));
        let jobs_s = clock.elapsed().as_secs_f64() - read_s;
        let mut outputs = BTreeMap::new();
        let mut rows = BTreeMap::new();
        let mut failed = None;
        while let Some(done) = writes.join_next().await {
            match done.map_err(|e| RunError::Task(e.to_string())) {
                Ok(Ok((name, n, v))) => {
                    rows.insert(name.to_string(), n);
                    outputs.insert(name.to_string(), v);
                }
                // the first failure is the run's; the other writes finish (a date partition
                // is replaced whole or not at all) and the run is not published
                Ok(Err(e)) | Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match (computed, failed) {
            (Ok(Ok(())), None) => {}
            (Err(e) | Ok(Err(e)), _) | (_, Some(e)) => return Err(e),
        }
        let boundary = self.boundary(partitions, &l1_tables).await?;
        let total_s = clock.elapsed().as_secs_f64();
        tracing::info!(
            %date,
            read_s,
            jobs_s,
            write_s = total_s - read_s - jobs_s,
            "run phases: read inputs, Polars jobs, replace outputs"
        );
        Ok(RunReport {
            run_id: run_id.to_string(),
            date,
            inputs,
            boundary,
            outputs,
            rows,
            seconds: clock.elapsed().as_secs_f64(),
            restated: Vec::new(),
        })
    }

    /// The closing positions of the latest date before `date` that has them (none: empty).
    async fn previous_positions(&self, date: BusinessDate) -> Result<DataFrame, RunError> {
        let table = self.lake.table(names::POSITIONS).await?;
        let schema = table.schema()?;
        let before = df_col(schema::COL_BUSINESS_DATE).lt(date_lit(date));
        let dates = table
            .scan(Some(before), Some(&[schema::COL_BUSINESS_DATE]))
            .await?;
        let latest = dates
            .iter()
            .flat_map(|b| {
                cast(b.column(0), &ArrowType::Date32)
                    .map(|c| {
                        c.as_primitive::<Date32Type>()
                            .iter()
                            .flatten()
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .max();
        let batches = match latest {
            Some(d) => {
                let at = df_col(schema::COL_BUSINESS_DATE)
                    .eq(date_lit(BusinessDate::from_days_since_epoch(d)));
                table.scan(Some(at), None).await?
            }
            None => Vec::new(),
        };
        let batches = conform(&schema, &batches)?;
        Ok(frame::to_polars(&frame_schema(&schema), &batches)?)
    }

    /// The last committed offset of every partition the inputs hold and of every partition of
    /// the last published run's boundary.
    async fn boundary(
        &self,
        mut wanted: BTreeSet<(String, i32)>,
        tables: &BTreeMap<&str, &Table>,
    ) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, RunError> {
        if let Some(last) = self.last_published().await? {
            for (t, parts) in last.boundary {
                for p in parts.keys() {
                    wanted.insert((t.clone(), *p));
                }
            }
        }
        let mut out: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        for (topic, p) in wanted {
            let tp = TopicPartition::new(topic.clone(), p);
            for table in tables.values() {
                if let Some(o) = table.committed_offset(&self.pipeline, &tp).await? {
                    out.entry(topic.clone()).or_default().insert(p, o.0);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The newest succeeded run in the ledger.
    pub async fn last_published(&self) -> Result<Option<LedgerRow>, RunError> {
        Ok(read_ledger(&self.lake)
            .await?
            .into_iter()
            .filter(|r| r.status == "succeeded")
            .max_by_key(|r| (r.finished_at, r.business_date)))
    }

    async fn ledger(
        &self,
        run_id: &str,
        date: BusinessDate,
        status: &str,
        started: chrono::DateTime<Utc>,
        report: Option<&RunReport>,
        error: Option<&str>,
    ) -> Result<(), RunError> {
        let mut table = self.lake.table(names::BATCH_LEDGER).await?;
        let ts = |t: chrono::DateTime<Utc>| {
            std::sync::Arc::new(
                TimestampMicrosecondArray::from(vec![t.timestamp_micros()]).with_timezone("UTC"),
            ) as ArrayRef
        };
        let text = |s: String| std::sync::Arc::new(StringArray::from(vec![s])) as ArrayRef;
        let json_text = |v: Value| text(v.to_string());
        let batch = RecordBatch::try_new(
            schema::batch_ledger(),
            vec![
                text(run_id.to_string()),
                std::sync::Arc::new(Date32Array::from(vec![date.days_since_epoch()])),
                text("eod".into()),
                text(status.into()),
                ts(started),
                ts(Utc::now()),
                json_text(json!(report.map(|r| &r.inputs))),
                json_text(json!(report.map(|r| &r.boundary))),
                json_text(json!(report.map(|r| &r.outputs))),
                std::sync::Arc::new(Int64Array::from(vec![
                    report.map(|r| r.rows.values().sum::<usize>() as i64),
                ])),
                std::sync::Arc::new(StringArray::from(vec![error.map(str::to_string)])),
            ],
        )
        .map_err(FrameError::from)?;
        table.append(vec![batch], Default::default()).await?;
        Ok(())
    }
}

/// A job's output as handed to the writer: the frame, or the Parquet file already encoded
/// (L2 market trades, written as it is gathered).
enum Output {
    Frame(DataFrame),
    File { parquet: Vec<u8>, rows: usize },
}

/// Collects a job's frame and logs how long it took (debug).
fn timed(
    job: &str,
    plan: impl FnOnce() -> polars::prelude::LazyFrame,
) -> Result<DataFrame, RunError> {
    let t = Instant::now();
    let df = plan().collect()?;
    tracing::debug!(
        job,
        seconds = t.elapsed().as_secs_f64(),
        rows = df.height(),
        "job done"
    );
    Ok(df)
}

/// Where a job's output goes: handed to the writer as soon as it is computed.
type Emit<'a> = &'a (dyn Fn(&'static str, Output) + Sync);

/// The job chain over one date's inputs: each of the [`OUTPUTS`] is handed to `emit` once,
/// as soon as it is computed (an output later jobs read is shared with them, not copied).
///
/// The tape's jobs ([`tape_jobs`]) and the order and execution events' ([`event_jobs`]) share
/// no input, so they run at once, each on a thread of its own: either chain alone keeps only
/// about 1.5 of 2 cores busy (single-threaded steps between Polars' parallel ones, the outputs
/// encoded beside them). The jobs that read both (positions, reconciliation) and the rest run
/// once both are done. Running them at once costs memory: both chains' inputs are held
/// together (README, Performance).
fn compute(
    mut l1: BTreeMap<&str, Input>,
    refs: &BTreeMap<&str, polars::prelude::LazyFrame>,
    previous: polars::prelude::LazyFrame,
    w: &Window,
    p: &JobParams,
    emit: Emit<'_>,
) -> Result<(), RunError> {
    // reconciliation counts the L1 rows of the date: an input in memory keeps only the
    // columns it reads (sharing their buffers), the rest is freed once its job has run; a
    // scanned input is read again for them. The tape's rows and volume are counted by the L2
    // market trades job as it reads them.
    let recon = |name: &str, cols: &[&str]| -> Result<polars::prelude::LazyFrame, RunError> {
        let Some(input) = l1.get(name) else {
            return Ok(polars::prelude::LazyFrame::default());
        };
        let read = input.rows.clone().select(
            cols.iter()
                .map(|c| polars::prelude::col(*c))
                .collect::<Vec<_>>(),
        );
        Ok(if input.in_memory {
            read.collect()?.lazy()
        } else {
            read
        })
    };
    let l1_executions = recon(names::EXECUTIONS, &["ts"])?;
    let l1_orders = recon(names::ORDERS, &["ts"])?;
    let mut take = |name: &str| l1.remove(name).map(|i| i.rows).unwrap_or_default();
    let tape = take(names::MARKET_TRADES);
    let (orders, executions) = (take(names::ORDERS), take(names::EXECUTIONS));
    let (tape, events) = std::thread::scope(|scope| {
        let tape = std::thread::Builder::new()
            .name("lakehouse-tape-jobs".into())
            .spawn_scoped(scope, || tape_jobs(tape, w, p, emit));
        let events = event_jobs(orders, executions, refs, w, emit);
        (tape.map(|t| t.join()), events)
    });
    let tape = match tape {
        Ok(Ok(done)) => done?,
        Ok(Err(_)) => return Err(RunError::Task("the tape's jobs panicked".into())),
        Err(e) => {
            return Err(RunError::Task(format!(
                "no thread for the tape's jobs: {e}"
            )));
        }
    };
    let events = events?;
    let done = |name, df| emit(name, Output::Frame(df));
    let r = |name: &str| refs[name].clone();
    let l2_execs = events.l2_executions;
    let positions = timed("positions", || {
        jobs::positions(
            previous.clone(),
            l2_execs.clone().lazy(),
            tape.bars.clone().lazy(),
            w,
        )
    })?;
    done(names::POSITIONS, positions.clone());
    let exposure = timed("exposure", || {
        jobs::desk_exposure(
            positions.clone().lazy(),
            r(names::REF_INSTRUMENTS),
            r(names::REF_ACCOUNTS),
            r(names::REF_FX_RATES),
            w,
            p,
        )
    })?;
    done(names::DESK_EXPOSURE, exposure);
    let large = timed("large", || jobs::large_trades(l2_execs.clone().lazy(), p))?;
    done(names::LARGE_TRADES, large);
    let report = timed("report", || {
        jobs::transaction_report(l2_execs.clone().lazy())
    })?;
    done(names::TRANSACTION_REPORT, report);
    let recon = timed("recon", || {
        jobs::reconciliation(
            &jobs::ReconInputs {
                l1_trades: tape.l1_tally,
                l1_executions,
                executions: events.executions.lazy(),
                l1_orders,
                l2_trades: tape.l2_volume.lazy(),
                l2_executions: l2_execs.clone().lazy(),
                l2_orders: events.l2_order_ids.lazy(),
                bars: tape.bars.clone().lazy(),
                positions: positions.clone().lazy(),
                previous_positions: previous.clone(),
            },
            w,
        )
    })?;
    done(names::RECONCILIATION, recon);
    Ok(())
}

/// What the tape's jobs leave for the jobs after them.
struct TapeDone {
    /// The date's L1 prints counted ([`jobs::L1Tally::frame`]).
    l1_tally: polars::prelude::LazyFrame,
    /// `l3/daily_bars`.
    bars: DataFrame,
    /// The volume of each L2 print.
    l2_volume: DataFrame,
}

/// L2 market trades and the daily bars. L2 market trades, the largest output (a print per
/// row), is written as it is gathered, a column at a time: only the columns the daily bars
/// and reconciliation read are kept.
fn tape_jobs(
    tape: polars::prelude::LazyFrame,
    w: &Window,
    p: &JobParams,
    emit: Emit<'_>,
) -> Result<TapeDone, RunError> {
    let t = Instant::now();
    let (mut firsts, tally) = jobs::l2_market_trades_firsts(tape, w, p)?;
    let trades = firsts.len();
    let mut kept = Vec::new();
    let parquet = frame::to_parquet_by_column(
        trades,
        &schema::l2_market_trades(),
        schema::COL_BUSINESS_DATE,
        |name| {
            let c = firsts.column(name)?;
            if ["symbol", "price", "volume"].contains(&name) {
                kept.push(c.clone());
            }
            Ok(c)
        },
    )?;
    drop(firsts);
    tracing::debug!(
        job = "l2_trades",
        seconds = t.elapsed().as_secs_f64(),
        rows = trades,
        bytes = parquet.len(),
        "job done, its file encoded"
    );
    emit(
        names::L2_MARKET_TRADES,
        Output::File {
            parquet,
            rows: trades,
        },
    );
    let l2_trades = DataFrame::new(trades, kept)?;
    let bars = timed("bars", || {
        jobs::daily_bars(l2_trades.clone().lazy().with_column(w.date_lit()))
    })?;
    emit(names::DAILY_BARS, Output::Frame(bars.clone()));
    Ok(TapeDone {
        l1_tally: tally.frame()?.lazy(),
        bars,
        // reconciliation sums the L2 prints' volume
        l2_volume: l2_trades.select(["volume"])?,
    })
}

/// What the order and execution events' jobs leave for the jobs after them.
struct EventsDone {
    /// The date's distinct execution events ([`jobs::distinct_executions`]).
    executions: DataFrame,
    /// The order id of each L2 order.
    l2_order_ids: DataFrame,
    /// `l2/executions`.
    l2_executions: DataFrame,
}

/// The distinct order events, L2 orders, the distinct execution events, the order statistics
/// and L2 executions.
fn event_jobs(
    orders: polars::prelude::LazyFrame,
    executions: polars::prelude::LazyFrame,
    refs: &BTreeMap<&str, polars::prelude::LazyFrame>,
    w: &Window,
    emit: Emit<'_>,
) -> Result<EventsDone, RunError> {
    let done = |name, df| emit(name, Output::Frame(df));
    let r = |name: &str| refs[name].clone();
    // the date's distinct events, shared by the jobs that read them: the orders' first, so
    // that all but the two columns order statistics read are freed before the executions
    // are read (the run's peak memory was the order jobs' beside the distinct executions)
    let orders = timed("distinct orders", || jobs::distinct_orders(orders, w))?;
    let l2_orders = timed("l2_orders", || jobs::l2_orders(orders.clone().lazy(), w))?;
    let order_actions = orders.select(["trader", "action"])?;
    drop(orders);
    let l2_order_ids = l2_orders.select(["order_id"])?;
    done(names::L2_ORDERS, l2_orders);
    let executions = timed("distinct executions", || {
        jobs::distinct_executions(executions, w)
    })?;
    let stats = timed("stats", || {
        jobs::order_stats(order_actions.lazy(), executions.clone().lazy(), w)
    })?;
    done(names::ORDER_STATS, stats);
    let l2_executions = timed("l2_execs", || {
        jobs::l2_executions(
            executions.clone().lazy(),
            r(names::REF_INSTRUMENTS),
            r(names::REF_ACCOUNTS),
            r(names::REF_FX_RATES),
            w,
        )
    })?;
    // written while the jobs that read it run (the writer shares its buffers, no copy)
    done(names::L2_EXECUTIONS, l2_executions.clone());
    Ok(EventsDone {
        executions,
        l2_order_ids,
        l2_executions,
    })
}

/// An L1 input of a run: the date's rows, as a scan of a local lake's files (each job reads
/// the columns it needs when it runs) or read into memory (from an object store).
struct Input {
    rows: polars::prelude::LazyFrame,
    in_memory: bool,
    /// The Kafka (topic, partition) pairs the rows hold.
    partitions: BTreeSet<(String, i32)>,
}

impl Input {
    fn new(rows: polars::prelude::LazyFrame, in_memory: bool) -> Result<Self, RunError> {
        Ok(Input {
            partitions: partitions_in(rows.clone())?,
            // no job reads the topic
            rows: rows.drop(polars::prelude::cols([schema::COL_TOPIC])),
            in_memory,
        })
    }
}

/// The date's rows of an L1 input of a local lake (`files`, in `data`'s columns) as the jobs
/// read them: a scan of the files without the Kafka and ingest timestamps (no job reads
/// them), the tape's condition codes only where a job reads them
/// ([`conditions_without_ids`]).
pub fn scan_input(
    name: &str,
    files: &[std::path::PathBuf],
    data: &SchemaRef,
    p: &JobParams,
) -> Result<polars::prelude::LazyFrame, RunError> {
    let rows = frame::scan_parquet(files, data)?.drop(polars::prelude::cols([
        schema::COL_KAFKA_TS,
        schema::COL_INGEST_TS,
    ]));
    if name == names::MARKET_TRADES && !jobs::reads_conditions_of_ids(p) {
        return conditions_without_ids(rows);
    }
    Ok(rows)
}

/// The tape when no job reads the condition codes of prints with a trade id (no code is
/// excluded): joining 10M code lists into texts took 0.4-0.6 s. They are read when some print
/// has no trade id (they are part of its identity); otherwise the column is null.
fn conditions_without_ids(
    tape: polars::prelude::LazyFrame,
) -> Result<polars::prelude::LazyFrame, RunError> {
    use polars::prelude::{DataType, NULL, col, lit};
    // in a scan, the filter skips each row group whose statistics count no null id: without
    // such prints no id is read (counting the nulls read all 10M: 0.15 s)
    let without_id = tape
        .clone()
        .filter(col(jobs::TRADE_ID).is_null())
        .select([col(jobs::TRADE_ID)])
        .limit(1)
        .collect()?;
    if without_id.height() > 0 {
        return Ok(tape);
    }
    Ok(tape.with_column(lit(NULL).cast(DataType::String).alias(jobs::CONDITIONS)))
}

/// The Kafka (topic, partition) pairs of an input's rows.
fn partitions_in(rows: polars::prelude::LazyFrame) -> Result<BTreeSet<(String, i32)>, RunError> {
    use polars::prelude::{UniqueKeepStrategy, col, lit};
    // an input fed by one topic (the usual case): its partitions, without reading the topic
    // of every row (0.1-0.2 s for the tape's 10M rows). The first row's topic comes from the
    // first row group; in a scan, the filter for any other topic skips each row group whose
    // statistics hold that topic alone.
    let first = rows
        .clone()
        .select([col(schema::COL_TOPIC)])
        .limit(1)
        .collect()?;
    // (`get` panics on an empty column)
    let topics = first.column(schema::COL_TOPIC)?.str()?;
    let Some(topic) = topics.iter().next().flatten() else {
        return Ok(BTreeSet::new());
    };
    let others = rows
        .clone()
        .filter(col(schema::COL_TOPIC).neq(lit(topic)))
        .select([col(schema::COL_TOPIC)])
        .limit(1)
        .collect()?;
    let pairs = if others.height() == 0 {
        rows.select([
            lit(topic).alias(schema::COL_TOPIC),
            col(schema::COL_PARTITION).unique(),
        ])
    } else {
        rows.select([col(schema::COL_TOPIC), col(schema::COL_PARTITION)])
            .unique(None, UniqueKeepStrategy::Any)
    }
    .collect()?;
    let topics = pairs.column(schema::COL_TOPIC)?.str()?;
    let partitions = pairs.column(schema::COL_PARTITION)?.i32()?;
    Ok(topics
        .iter()
        .zip(partitions.iter())
        .filter_map(|(t, p)| Some((t?.to_string(), p?)))
        .collect())
}

/// Scanned batches in exactly the table's schema: the scan hands partition columns back in
/// its own order and strings as views.
fn conform(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, RunError> {
    let target = frame_schema(schema);
    let out = batches
        .iter()
        .map(|b| {
            let cols: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .zip(target.fields())
                .map(|(f, t)| match b.column_by_name(f.name()) {
                    Some(c) if matches!(f.data_type(), ArrowType::List(_)) => {
                        cast(&joined(c), t.data_type())
                    }
                    Some(c) if c.data_type() == t.data_type() => Ok(c.clone()),
                    Some(c) => cast(c, t.data_type()),
                    None => Ok(deltalake::arrow::array::new_null_array(
                        t.data_type(),
                        b.num_rows(),
                    )),
                })
                .collect::<Result<_, _>>()?;
            RecordBatch::try_new(target.clone(), cols)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(FrameError::from)?;
    Ok(out)
}

/// The local data files of `table`'s partitions `dirs` (`event_date=YYYY-MM-DD`), when the
/// lake is local and every file sits in such a partition directory; `None` otherwise (the
/// rows are then scanned through delta-rs).
fn partition_files(
    table: &lakehouse_lake::Table,
    dirs: &[String],
) -> Result<Option<Vec<std::path::PathBuf>>, RunError> {
    let Some(files) = table.local_files()? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for f in files {
        let dir = f
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with(&format!("{}=", schema::COL_EVENT_DATE)));
        match dir {
            None => return Ok(None),
            Some(d) if dirs.iter().any(|w| w == d) => out.push(f),
            Some(_) => {}
        }
    }
    Ok(Some(out))
}

/// The rows `boundary` does not cover: those beyond the last offset of a partition it names,
/// and every row of a partition or topic it does not name. Written without a negation, so
/// that the files' minimum and maximum can answer it: the partitions of a topic the boundary
/// does not name are the ranges around and between those it names (its partitions come in
/// order).
fn uncovered(boundary: &BTreeMap<String, BTreeMap<i32, i64>>) -> DfExpr {
    let (topic, partition) = (
        || df_col(schema::COL_TOPIC),
        || df_col(schema::COL_PARTITION),
    );
    let mut any = Vec::new();
    let mut other_topic: Option<DfExpr> = None;
    for (t, parts) in boundary {
        let t = t.as_str();
        for (p, last) in parts {
            any.push(
                topic()
                    .eq(df_lit(t))
                    .and(partition().eq(df_lit(*p)))
                    .and(df_col(schema::COL_OFFSET).gt(df_lit(*last))),
            );
        }
        let named: Vec<i32> = parts.keys().copied().collect();
        let (Some(&low), Some(&high)) = (named.first(), named.last()) else {
            continue;
        };
        let mut outside = partition().lt(df_lit(low)).or(partition().gt(df_lit(high)));
        for w in named.windows(2).filter(|w| w[1] > w[0] + 1) {
            let between = partition()
                .gt(df_lit(w[0]))
                .and(partition().lt(df_lit(w[1])));
            outside = outside.or(between);
        }
        any.push(topic().eq(df_lit(t)).and(outside));
        let other = topic().not_eq(df_lit(t));
        other_topic = Some(match other_topic {
            Some(o) => o.and(other),
            None => other,
        });
    }
    any.extend(other_topic);
    any.into_iter().reduce(DfExpr::or).unwrap_or(df_lit(true))
}

/// The columns of the data files: `schema` without the partition column (Delta keeps its
/// value in the file's directory and the log, not in the file): what [`frame::read_parquet`]
/// takes for an L1 table's files.
pub fn data_schema(table_schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<_> = table_schema
        .fields()
        .iter()
        .filter(|f| f.name() != schema::COL_EVENT_DATE)
        .cloned()
        .collect();
    std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(fields))
}

/// The schema the jobs see: text as string views (what the scan returns and Polars keeps, so
/// the hand-over converts nothing: 10M tape rows took 9 s through `Utf8`), and list columns
/// (the tape's `conditions`) as one text, the items joined by `,` (condition codes are short
/// alphanumeric codes).
fn frame_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            ArrowType::List(_) | ArrowType::Utf8 => std::sync::Arc::new(
                deltalake::arrow::datatypes::Field::new(f.name(), ArrowType::Utf8View, true),
            ),
            _ => f.clone(),
        })
        .collect();
    std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(fields))
}

fn joined(list: &ArrayRef) -> ArrayRef {
    let list = list.as_list::<i32>();
    // the items as text once, then each row's slice of them joined: no array per row
    let items = cast(list.values(), &ArrowType::Utf8).unwrap_or_else(|_| list.values().clone());
    let Some(items) = items.as_string_opt::<i32>() else {
        return std::sync::Arc::new(StringArray::new_null(list.len()));
    };
    let offsets = list.value_offsets();
    let mut out = deltalake::arrow::array::StringBuilder::with_capacity(
        list.len(),
        items.value_data().len() + list.len(),
    );
    let mut row = String::new();
    for i in 0..list.len() {
        if list.is_null(i) {
            out.append_null();
            continue;
        }
        row.clear();
        for j in offsets[i] as usize..offsets[i + 1] as usize {
            if items.is_valid(j) {
                if !row.is_empty() {
                    row.push(',');
                }
                row.push_str(items.value(j));
            }
        }
        out.append_value(&row);
    }
    std::sync::Arc::new(out.finish())
}

/// One row of `system/batch_ledger`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    /// Run id.
    pub run_id: String,
    /// Business date.
    pub business_date: BusinessDate,
    /// `succeeded` or `failed`.
    pub status: String,
    /// When it finished (µs).
    pub finished_at: i64,
    /// Input tables and versions.
    pub inputs: BTreeMap<String, Version>,
    /// The batch boundary.
    pub boundary: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Output tables and versions.
    pub outputs: BTreeMap<String, Version>,
    /// Rows written.
    pub rows: Option<i64>,
    /// The error of a failed run.
    pub error: Option<String>,
}

/// Every row of the ledger (none before the first run).
pub async fn read_ledger(lake: &Lake) -> Result<Vec<LedgerRow>, RunError> {
    let table = match lake.table(names::BATCH_LEDGER).await {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for b in table.read_all().await? {
        let text = |name: &str| -> Result<Vec<Option<String>>, RunError> {
            let c = cast(
                b.column_by_name(name).expect("ledger column"),
                &ArrowType::Utf8,
            )
            .map_err(FrameError::from)?;
            Ok(c.as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect())
        };
        let (ids, status, inputs, boundary, outputs, errors) = (
            text("run_id")?,
            text("status")?,
            text("input_versions")?,
            text("boundary_offsets")?,
            text("output_versions")?,
            text("error")?,
        );
        let dates = b
            .column_by_name(schema::COL_BUSINESS_DATE)
            .expect("ledger column")
            .as_primitive::<Date32Type>()
            .clone();
        let finished = cast(
            b.column_by_name("finished_at").expect("ledger column"),
            &ArrowType::Int64,
        )
        .map_err(FrameError::from)?;
        let finished = finished.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let rows = b
            .column_by_name("rows")
            .expect("ledger column")
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>()
            .clone();
        fn parse<T: serde::de::DeserializeOwned + Default>(s: &Option<String>) -> T {
            s.as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default()
        }
        for i in 0..b.num_rows() {
            out.push(LedgerRow {
                run_id: ids[i].clone().unwrap_or_default(),
                business_date: BusinessDate::from_days_since_epoch(dates.value(i)),
                status: status[i].clone().unwrap_or_default(),
                finished_at: finished.value(i),
                inputs: parse(&inputs[i]),
                boundary: parse(&boundary[i]),
                outputs: parse(&outputs[i]),
                rows: rows.is_valid(i).then(|| rows.value(i)),
                error: errors[i].clone(),
            });
        }
    }
    out.sort_by_key(|r| (r.finished_at, r.business_date));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::Int32Array;
    use deltalake::datafusion::prelude::{ParquetReadOptions, SessionContext};

    /// The rows of topics `a`, `b` and `c`, partitions 0 to 5, offsets 0 to 9, in that order:
    /// in a file of 10-row groups, each group's statistics name one partition.
    fn kafka_rows() -> RecordBatch {
        let mut rows = (Vec::new(), Vec::new(), Vec::new());
        for t in ["a", "b", "c"] {
            for p in 0..6i32 {
                for o in 0..10i64 {
                    rows.0.push(t);
                    rows.1.push(p);
                    rows.2.push(o);
                }
            }
        }
        RecordBatch::try_from_iter([
            (
                schema::COL_TOPIC,
                std::sync::Arc::new(StringArray::from(rows.0)) as ArrayRef,
            ),
            (
                schema::COL_PARTITION,
                std::sync::Arc::new(Int32Array::from(rows.1)) as ArrayRef,
            ),
            (
                schema::COL_OFFSET,
                std::sync::Arc::new(Int64Array::from(rows.2)) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn triples(batches: &[RecordBatch]) -> BTreeSet<(String, i32, i64)> {
        let mut out = BTreeSet::new();
        for b in batches {
            let t = cast(b.column(0), &ArrowType::Utf8).unwrap();
            let (t, p, o) = (
                t.as_string::<i32>(),
                b.column(1)
                    .as_primitive::<deltalake::arrow::datatypes::Int32Type>(),
                b.column(2)
                    .as_primitive::<deltalake::arrow::datatypes::Int64Type>(),
            );
            for i in 0..b.num_rows() {
                out.insert((t.value(i).to_string(), p.value(i), o.value(i)));
            }
        }
        out
    }

    /// The filter (written without a negation, for the files' statistics) selects exactly the
    /// rows a boundary does not cover: beyond the last offset of a named partition, and all
    /// of a partition or topic it does not name, the gaps between named partitions included;
    /// in memory as from a file whose row groups its statistics skip.
    #[tokio::test]
    async fn the_uncovered_rows_are_those_beyond_the_boundary_or_outside_it() {
        let boundary: BTreeMap<String, BTreeMap<i32, i64>> = [
            ("a".to_string(), [(0, 5), (2, 7), (3, 1)].into()),
            ("b".to_string(), [(1, 3)].into()),
        ]
        .into();
        let rows = kafka_rows();
        let expected: BTreeSet<(String, i32, i64)> = triples(std::slice::from_ref(&rows))
            .into_iter()
            .filter(
                |(t, p, o)| match boundary.get(t).and_then(|parts| parts.get(p)) {
                    Some(last) => o > last,
                    None => true,
                },
            )
            .collect();
        // a: 4 of partition 0, 2 of 2, 8 of 3, all of 1, 4 and 5; b: 6 of 1, all of the 5
        // others; c: all
        assert_eq!(expected.len(), 4 + 2 + 8 + 30 + 6 + 50 + 60);
        let ctx = SessionContext::new();
        ctx.register_batch("rows", rows.clone()).unwrap();
        let filter = uncovered(&boundary);
        let selected = |table: &'static str, filter: DfExpr| {
            let ctx = ctx.clone();
            async move {
                let df = ctx.table(table).await.unwrap().filter(filter).unwrap();
                triples(&df.collect().await.unwrap())
            }
        };
        assert_eq!(selected("rows", filter.clone()).await, expected);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        let props = deltalake::parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(10))
            .build();
        let file = std::fs::File::create(&path).unwrap();
        let mut writer =
            deltalake::parquet::arrow::ArrowWriter::try_new(file, rows.schema(), Some(props))
                .unwrap();
        writer.write(&rows).unwrap();
        writer.close().unwrap();
        ctx.register_parquet(
            "file",
            path.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(selected("file", filter).await, expected);

        // no boundary: every row
        let none = BTreeMap::new();
        assert_eq!(selected("rows", uncovered(&none)).await.len(), 180);
    }
}
