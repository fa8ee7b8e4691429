//! What the server answers from: the speed layer's views (live, in this process) and the
//! batch snapshot of the latest published run, loaded from the lake at the run's output
//! versions (so a run that failed or was killed after writing some tables is never read).
//!
//! Lock order: the views, then the snapshot. A switch to a new run holds the views' write
//! lock while it moves the speed boundary and swaps the snapshot, so a query (which holds the
//! views' read lock while it reads both) sees the old pair or the new pair, never a mix.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Date32Type, Decimal128Type, Int32Type, Int64Type};
use deltalake::datafusion::prelude::{col, lit};
use deltalake::datafusion::scalar::ScalarValue;
use lakehouse_lake::catalog::names;
use lakehouse_lake::events::Side;
use lakehouse_lake::positions::Position;
use lakehouse_lake::{BusinessCalendar, BusinessDate, Decimal, EventTime, Lake, schema};
use lakehouse_speed::SpeedHandle;
use lakehouse_speed::bars::Print;
use tracing::info;

use crate::merge::{BatchDay, BatchSnapshot, CoveredFill, Missing, RunInfo};

/// Why loading failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The lake.
    #[error(transparent)]
    Lake(#[from] Box<lakehouse_lake::Error>),
    /// The ledger.
    #[error("batch ledger: {0}")]
    Ledger(String),
    /// A table does not have the expected columns.
    #[error("{table}: {detail}")]
    Schema {
        /// Table.
        table: String,
        /// What is wrong.
        detail: String,
    },
    /// Boundaries only move forward.
    #[error("{0}")]
    Boundary(String),
}

impl From<lakehouse_lake::Error> for LoadError {
    fn from(e: lakehouse_lake::Error) -> Self {
        LoadError::Lake(Box::new(e))
    }
}

/// The serving state shared by every request.
#[derive(Clone)]
pub struct Served {
    /// The lake.
    pub lake: Lake,
    /// Business dates.
    pub calendar: BusinessCalendar,
    /// The speed layer's views, reference data and panes.
    pub speed: SpeedHandle,
    /// The published run's snapshot (lock after the views).
    pub batch: Arc<RwLock<Arc<BatchSnapshot>>>,
    /// The latest published runs, newest first: (date, run id).
    pub recent: Arc<RwLock<Vec<(BusinessDate, String)>>>,
    /// The requests answered, for Prometheus.
    pub requests: crate::metrics::RequestMetrics,
}

fn schema_err(table: &str, detail: impl Into<String>) -> LoadError {
    LoadError::Schema {
        table: table.to_string(),
        detail: detail.into(),
    }
}

fn column<'a>(b: &'a RecordBatch, table: &str, name: &str) -> Result<&'a ArrayRef, LoadError> {
    b.column_by_name(name)
        .ok_or_else(|| schema_err(table, format!("no column {name}")))
}

fn texts(b: &RecordBatch, table: &str, name: &str) -> Result<Vec<Option<String>>, LoadError> {
    let c = cast(column(b, table, name)?, &DataType::Utf8)
        .map_err(|e| schema_err(table, e.to_string()))?;
    Ok(c.as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

fn decimals(b: &RecordBatch, table: &str, name: &str) -> Result<Vec<Option<Decimal>>, LoadError> {
    let c = column(b, table, name)?;
    if c.data_type() != &lakehouse_lake::decimal::arrow_type() {
        return Err(schema_err(
            table,
            format!("{name} is {}, not Decimal128(38, 8)", c.data_type()),
        ));
    }
    Ok(c.as_primitive::<Decimal128Type>()
        .iter()
        .map(|v| v.map(Decimal::from_raw))
        .collect())
}

fn int64s(b: &RecordBatch, table: &str, name: &str) -> Result<Vec<i64>, LoadError> {
    let c = cast(column(b, table, name)?, &DataType::Int64)
        .map_err(|e| schema_err(table, e.to_string()))?;
    Ok(c.as_primitive::<Int64Type>().values().to_vec())
}

fn int32s(b: &RecordBatch, table: &str, name: &str) -> Result<Vec<i32>, LoadError> {
    let c = cast(column(b, table, name)?, &DataType::Int32)
        .map_err(|e| schema_err(table, e.to_string()))?;
    Ok(c.as_primitive::<Int32Type>().values().to_vec())
}

fn date_lit(d: BusinessDate) -> deltalake::datafusion::prelude::Expr {
    lit(ScalarValue::Date32(Some(d.days_since_epoch())))
}

impl Served {
    /// Empty state over `speed`'s views; call [`Served::refresh`] to load the batch view.
    pub fn new(lake: Lake, calendar: BusinessCalendar, speed: SpeedHandle) -> Served {
        Served {
            lake,
            calendar,
            speed,
            batch: Arc::new(RwLock::new(Arc::new(BatchSnapshot::default()))),
            recent: Arc::new(RwLock::new(Vec::new())),
            requests: crate::metrics::RequestMetrics::new(),
        }
    }

    /// The speed view, read-locked (hold it briefly: the speed layer waits to write).
    pub fn views(&self) -> std::sync::RwLockReadGuard<'_, lakehouse_speed::views::Views> {
        self.speed.views.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<BatchSnapshot> {
        self.batch.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the ledger; when a newer run was published, loads its snapshot and switches the
    /// views' boundary and the snapshot together. Returns whether it switched.
    pub async fn refresh(&self) -> Result<bool, LoadError> {
        let rows = lakehouse_batch::runner::read_ledger(&self.lake)
            .await
            .map_err(|e| LoadError::Ledger(e.to_string()))?;
        let mut recent: Vec<_> = rows.iter().filter(|r| r.status == "succeeded").collect();
        recent.sort_by_key(|r| std::cmp::Reverse((r.business_date, r.finished_at)));
        *self.recent.write().unwrap_or_else(|e| e.into_inner()) = recent
            .iter()
            .take(10)
            .map(|r| (r.business_date, r.run_id.clone()))
            .collect();
        let Some(latest) = lakehouse_batch::runner::served_run(&rows).cloned() else {
            return Ok(false);
        };
        let current = self.snapshot();
        if current
            .run
            .as_ref()
            .is_some_and(|r| r.run_id == latest.run_id)
        {
            return Ok(false);
        }
        let run = RunInfo {
            run_id: latest.run_id.clone(),
            date: latest.business_date,
            inputs: latest
                .inputs
                .into_iter()
                .map(|(k, v)| (k, v as i64))
                .collect(),
            outputs: latest
                .outputs
                .into_iter()
                .map(|(k, v)| (k, v as i64))
                .collect(),
            boundary: latest.boundary,
        };
        let mut snap = BatchSnapshot {
            run: Some(run.clone()),
            ..BatchSnapshot::default()
        };
        snap.position_dates = self.position_dates(&run).await?;
        snap.run_dates = rows
            .iter()
            .filter(|r| r.status == "succeeded" && r.business_date <= run.date)
            .map(|r| r.business_date)
            .collect();
        let day = self.load_day(&run, run.date).await?;
        for (symbol, minutes) in &day.bars {
            if let Some(b) = minutes.values().next_back()
                && let Some(c) = b.close_print()
            {
                snap.last.insert(symbol.clone(), c);
            }
        }
        snap.days.insert(run.date, Arc::new(day));
        // the switch: boundary and snapshot move together under the views' write lock
        {
            let mut views = self.speed.views.write().unwrap_or_else(|e| e.into_inner());
            views
                .set_boundary(run.boundary())
                .map_err(LoadError::Boundary)?;
            *self.batch.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
        }
        info!(date = %run.date, run = %run.run_id, "serving the batch run");
        Ok(true)
    }

    /// Loads what a merge reported [`Missing`] into the snapshot (if the run is still the
    /// same).
    pub async fn load_missing(&self, missing: &Missing) -> Result<(), LoadError> {
        let snap = self.snapshot();
        let Some(run) = snap.run.clone() else {
            return Ok(());
        };
        let date = match missing {
            Missing::Day(d) => *d,
            Missing::PositionsBefore(d0) => match snap.position_dates.range(..*d0).next_back() {
                Some(d) => *d,
                None => return Ok(()),
            },
        };
        // the date itself when a run published it, and at once every date from it to the
        // run's that no run published (empty: nothing to read)
        let day = if snap.run_dates.contains(&date) {
            Some(Arc::new(self.load_day(&run, date).await?))
        } else {
            None
        };
        let empty = Arc::new(BatchDay::default());
        let mut guard = self.batch.write().unwrap_or_else(|e| e.into_inner());
        if guard.run.as_ref().map(|r| &r.run_id) == Some(&run.run_id) {
            let mut next = BatchSnapshot::clone(&guard);
            if let Some(day) = day {
                next.days.insert(date, day);
            }
            let mut d = date;
            while d <= run.date {
                if !next.run_dates.contains(&d) {
                    next.days.entry(d).or_insert_with(|| empty.clone());
                }
                d = d.succ();
            }
            *guard = Arc::new(next);
        }
        Ok(())
    }

    async fn table_at(
        &self,
        run: &RunInfo,
        name: &str,
    ) -> Result<lakehouse_lake::Table, LoadError> {
        let v = run
            .outputs
            .get(name)
            .ok_or_else(|| schema_err(name, format!("run {} has no output version", run.run_id)))?;
        Ok(self.lake.table_at_version(name, *v as u64).await?)
    }

    async fn position_dates(&self, run: &RunInfo) -> Result<BTreeSet<BusinessDate>, LoadError> {
        let table = self.table_at(run, names::POSITIONS).await?;
        let filter = col(schema::COL_BUSINESS_DATE).lt_eq(date_lit(run.date));
        let mut out = BTreeSet::new();
        for b in table
            .scan(Some(filter), Some(&[schema::COL_BUSINESS_DATE]))
            .await?
        {
            let c = cast(b.column(0), &DataType::Date32)
                .map_err(|e| schema_err(names::POSITIONS, e.to_string()))?;
            out.extend(
                c.as_primitive::<Date32Type>()
                    .iter()
                    .flatten()
                    .map(BusinessDate::from_days_since_epoch),
            );
        }
        Ok(out)
    }

    /// One business date of the run: positions, effective executions, 1-minute bars.
    pub async fn load_day(&self, run: &RunInfo, date: BusinessDate) -> Result<BatchDay, LoadError> {
        let mut day = BatchDay::default();
        let at = || col(schema::COL_BUSINESS_DATE).eq(date_lit(date));
        let t = names::POSITIONS;
        for b in self.table_at(run, t).await?.scan(Some(at()), None).await? {
            let (a, s) = (texts(&b, t, "account")?, texts(&b, t, "symbol")?);
            let (n, c, r, close) = (
                decimals(&b, t, "net_quantity")?,
                decimals(&b, t, "avg_cost")?,
                decimals(&b, t, "realized_pnl")?,
                decimals(&b, t, "close_price")?,
            );
            for i in 0..b.num_rows() {
                if let (Some(symbol), Some(px)) = (&s[i], close[i]) {
                    day.closes.insert(symbol.clone(), px);
                }
                day.positions.insert(
                    (
                        a[i].clone().unwrap_or_default(),
                        s[i].clone().unwrap_or_default(),
                    ),
                    Position {
                        net_quantity: n[i].unwrap_or_default(),
                        avg_cost: c[i].unwrap_or_default(),
                        realized_pnl: r[i].unwrap_or_default(),
                    },
                );
            }
        }
        let t = names::L2_EXECUTIONS;
        for b in self.table_at(run, t).await?.scan(Some(at()), None).await? {
            let (id, a, s, side) = (
                texts(&b, t, "exec_id")?,
                texts(&b, t, "account")?,
                texts(&b, t, "symbol")?,
                texts(&b, t, "side")?,
            );
            let (p, q) = (decimals(&b, t, "price")?, decimals(&b, t, "quantity")?);
            let ts = int64s(&b, t, "ts")?;
            let (part, off) = (
                int32s(&b, t, schema::COL_PARTITION)?,
                int64s(&b, t, schema::COL_OFFSET)?,
            );
            for i in 0..b.num_rows() {
                let side = match side[i].as_deref() {
                    Some("BUY") => Side::Buy,
                    Some("SELL") => Side::Sell,
                    other => return Err(schema_err(t, format!("side {other:?}"))),
                };
                let f = CoveredFill {
                    exec_id: id[i].clone().unwrap_or_default(),
                    account: a[i].clone().unwrap_or_default(),
                    symbol: s[i].clone().unwrap_or_default(),
                    side,
                    price: p[i].unwrap_or_default(),
                    quantity: q[i].unwrap_or_default(),
                    ts: EventTime::from_micros(ts[i]),
                    partition: part[i],
                    offset: off[i],
                };
                day.fills
                    .entry((f.account.clone(), f.symbol.clone()))
                    .or_default()
                    .push(f);
            }
        }
        let t = names::L2_MARKET_TRADES;
        let cols = [
            "symbol",
            "price",
            "volume",
            "ts",
            schema::COL_PARTITION,
            schema::COL_OFFSET,
        ];
        for b in self
            .table_at(run, t)
            .await?
            .scan(Some(at()), Some(&cols))
            .await?
        {
            let s = texts(&b, t, "symbol")?;
            let (p, v) = (decimals(&b, t, "price")?, decimals(&b, t, "volume")?);
            let ts = int64s(&b, t, "ts")?;
            let (part, off) = (
                int32s(&b, t, schema::COL_PARTITION)?,
                int64s(&b, t, schema::COL_OFFSET)?,
            );
            for i in 0..b.num_rows() {
                day.add_print(
                    s[i].as_deref().unwrap_or_default(),
                    &Print {
                        ts: ts[i],
                        partition: part[i],
                        offset: off[i],
                        price: p[i].unwrap_or_default(),
                        volume: v[i].unwrap_or_default(),
                    },
                );
            }
        }
        Ok(day)
    }
}

impl Served {
    /// The transaction report of `date` as the run published it, sorted by trading time then
    /// exec id.
    pub async fn transaction_report(
        &self,
        run: &RunInfo,
        date: BusinessDate,
    ) -> Result<Vec<lakehouse_proto::v1::TransactionReportRow>, LoadError> {
        use lakehouse_proto::v1 as pb;
        let t = names::TRANSACTION_REPORT;
        let filter = col(schema::COL_BUSINESS_DATE).eq(date_lit(date));
        let mut out = Vec::new();
        for b in self
            .table_at(run, t)
            .await?
            .scan(Some(filter), None)
            .await?
        {
            let s = |n: &str| texts(&b, t, n);
            let (id, isin, cur, venue, buyer, seller, trader, side, account) = (
                s("exec_id")?,
                s("isin")?,
                s("currency")?,
                s("venue")?,
                s("buyer")?,
                s("seller")?,
                s("trader")?,
                s("side")?,
                s("account")?,
            );
            let (p, q) = (decimals(&b, t, "price")?, decimals(&b, t, "quantity")?);
            let at = int64s(&b, t, "trading_datetime")?;
            for i in 0..b.num_rows() {
                let v = |x: &Vec<Option<String>>| x[i].clone().unwrap_or_default();
                out.push(pb::TransactionReportRow {
                    exec_id: v(&id),
                    trading_time: Some(crate::timestamp(at[i])),
                    isin: v(&isin),
                    price: p[i].map(|d| d.to_string()).unwrap_or_default(),
                    quantity: q[i].map(|d| d.to_string()).unwrap_or_default(),
                    currency: v(&cur),
                    venue: v(&venue),
                    buyer: v(&buyer),
                    seller: v(&seller),
                    trader: v(&trader),
                    side: match side[i].as_deref() {
                        Some("BUY") => pb::Side::Buy as i32,
                        Some("SELL") => pb::Side::Sell as i32,
                        _ => 0,
                    },
                    account: v(&account),
                });
            }
        }
        out.sort_by(|a, b| {
            let k = |r: &pb::TransactionReportRow| {
                (
                    r.trading_time.map(|t| (t.seconds, t.nanos)),
                    r.exec_id.clone(),
                )
            };
            k(a).cmp(&k(b))
        });
        Ok(out)
    }
}
