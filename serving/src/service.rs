//! The `lakehouse.v1.Lakehouse` service: authentication, scope checks, the merge, the
//! freshness of every answer, load shedding and the audit of every request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use lakehouse_lake::events::Side as LakeSide;
use lakehouse_lake::positions::Position as LakePosition;
use lakehouse_lake::reference::Reference;
use lakehouse_lake::{BusinessDate, Decimal, EventTime};
use lakehouse_proto::v1 as pb;
use lakehouse_proto::v1::lakehouse_server::Lakehouse;
use lakehouse_speed::bars::Bar;
use lakehouse_speed::views::{Interval, Views};
use lakehouse_speed::window::Timing;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::audit::{Audit, AuditRow};
use crate::auth::{Entitlements, Principal};
use crate::merge::{self, BatchSnapshot, Missing};
use crate::state::Served;

/// The service.
#[derive(Clone)]
pub struct Service {
    state: Served,
    auth: Arc<Entitlements>,
    audit: Audit,
    slots: Arc<Semaphore>,
    thresholds: Arc<BTreeMap<String, Decimal>>,
    book: Arc<BookCache>,
}

/// The merged positions of every key with their marks, and the freshness they are exact for.
struct Book {
    generation: u64,
    run: Option<String>,
    reference: Arc<Reference>,
    at: Instant,
    /// Every position, with its answer row made once (desk, mark, decimals as text).
    positions: BTreeMap<(String, String), (LakePosition, pb::Position)>,
    marks: HashMap<String, Option<Decimal>>,
    freshness: pb::Freshness,
}

/// The latest [`Book`]; one merge at a time refreshes it.
struct BookCache {
    latest: std::sync::Mutex<Option<Arc<Book>>>,
    merging: tokio::sync::Mutex<()>,
    max_age: Duration,
}

impl BookCache {
    /// The cached book, if it still answers: of the batch run and reference data served now,
    /// and the views have not moved or it is younger than `max_age`.
    fn usable(
        &self,
        generation: u64,
        run: Option<&str>,
        reference: &Arc<Reference>,
    ) -> Option<Arc<Book>> {
        let b = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let fresh = b.generation == generation || b.at.elapsed() < self.max_age;
        let same = b.run.as_deref() == run && Arc::ptr_eq(&b.reference, reference);
        (same && fresh).then_some(b)
    }
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

use crate::timestamp as ts;

fn from_ts(t: &Option<prost_types::Timestamp>, what: &str) -> Result<EventTime, Status> {
    let t = t
        .as_ref()
        .ok_or_else(|| Status::invalid_argument(format!("{what} is required")))?;
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Status::invalid_argument(format!("{what}: bad nanos")));
    }
    Ok(EventTime::from_micros(
        t.seconds.saturating_mul(1_000_000) + i64::from(t.nanos / 1000),
    ))
}

fn date(text: &str, what: &str) -> Result<BusinessDate, Status> {
    text.parse::<chrono::NaiveDate>()
        .map(BusinessDate)
        .map_err(|_| Status::invalid_argument(format!("{what} {text:?} is not YYYY-MM-DD")))
}

fn text(d: Option<Decimal>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

fn side(s: LakeSide) -> i32 {
    match s {
        LakeSide::Buy => pb::Side::Buy as i32,
        LakeSide::Sell => pb::Side::Sell as i32,
    }
}

fn offsets(m: &BTreeMap<String, BTreeMap<i32, i64>>) -> Vec<pb::PartitionOffset> {
    m.iter()
        .flat_map(|(t, parts)| {
            parts.iter().map(|(p, o)| pb::PartitionOffset {
                topic: t.clone(),
                partition: *p,
                offset: *o,
            })
        })
        .collect()
}

/// The freshness of an answer computed from `batch` and `views`.
pub fn freshness(batch: &BatchSnapshot, views: &Views) -> pb::Freshness {
    let now = EventTime::now().micros();
    let run = batch.run.as_ref();
    pb::Freshness {
        batch_business_date: run.map(|r| r.date.to_string()).unwrap_or_default(),
        batch_run_id: run.map(|r| r.run_id.clone()).unwrap_or_default(),
        input_versions: run
            .map(|r| r.inputs.clone().into_iter().collect())
            .unwrap_or_default(),
        boundary_offsets: run.map(|r| offsets(&r.boundary)).unwrap_or_default(),
        speed_offsets: offsets(views.consumed()),
        speed_watermark: views.watermark().map(ts),
        lag_ms: views.watermark().map_or(-1, |w| (now - w).max(0) / 1000),
        late_events_pending: views.pending_restatement(),
        as_of: Some(ts(now)),
    }
}

fn bar(symbol: &str, start: i64, d: BusinessDate, b: &Bar) -> pb::Bar {
    pb::Bar {
        symbol: symbol.to_string(),
        start: Some(ts(start)),
        business_date: d.to_string(),
        open: text(b.open()),
        high: text(b.high()),
        low: text(b.low()),
        close: text(b.close()),
        vwap: text(b.vwap()),
        volume: b.volume().to_string(),
        trade_count: b.count(),
    }
}

fn interval(i: i32) -> Result<Interval, Status> {
    match pb::Interval::try_from(i) {
        Ok(pb::Interval::Interval1m) => Ok(Interval::Minute),
        Ok(pb::Interval::Interval5m) => Ok(Interval::FiveMinutes),
        Ok(pb::Interval::Interval1d) => Ok(Interval::Day),
        _ => Err(Status::invalid_argument(
            "interval must be INTERVAL_1M, INTERVAL_5M or INTERVAL_1D",
        )),
    }
}

fn code_name(s: &Status) -> String {
    format!("{:?}", s.code())
}

impl Service {
    /// A service over `state`.
    pub fn new(
        state: Served,
        auth: Entitlements,
        audit: Audit,
        max_concurrent: usize,
        thresholds: BTreeMap<String, Decimal>,
        positions_max_age: Duration,
    ) -> Service {
        Service {
            state,
            auth: Arc::new(auth),
            audit,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            thresholds: Arc::new(thresholds),
            book: Arc::new(BookCache {
                latest: std::sync::Mutex::new(None),
                merging: tokio::sync::Mutex::new(()),
                max_age: positions_max_age,
            }),
        }
    }

    /// The merged book of every position: cached while it answers, else merged again (once,
    /// whoever else asks meanwhile waits for that merge).
    async fn book(&self) -> Result<Arc<Book>, Status> {
        let now = || {
            let generation = self.state.views().generation();
            let run = self.state.snapshot().run.as_ref().map(|r| r.run_id.clone());
            (generation, run, self.reference())
        };
        let (generation, run, reference) = now();
        if let Some(b) = self.book.usable(generation, run.as_deref(), &reference) {
            return Ok(b);
        }
        let _merging = self.book.merging.lock().await;
        let (generation, run, reference) = now();
        if let Some(b) = self.book.usable(generation, run.as_deref(), &reference) {
            return Ok(b);
        }
        let book = self
            .merged(|snap, views| {
                let merged = merge::positions(snap, views, |_, _| true)?;
                let marks: HashMap<String, Option<Decimal>> = merged
                    .keys()
                    .map(|(_, s)| s)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(|s| (s.clone(), merge::mark(snap, views, s)))
                    .collect();
                let positions = merged
                    .into_iter()
                    .map(|((a, s), q)| {
                        let desk = reference.accounts.get(&a).map(|x| x.desk.as_str());
                        let row = position_row(&a, desk.unwrap_or_default(), &s, &q, marks[&s]);
                        ((a, s), (q, row))
                    })
                    .collect();
                Ok(Book {
                    generation: views.generation(),
                    run: snap.run.as_ref().map(|r| r.run_id.clone()),
                    reference: reference.clone(),
                    at: Instant::now(),
                    positions,
                    marks,
                    freshness: freshness(snap, views),
                })
            })
            .await?;
        let book = Arc::new(book);
        *self.book.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(book.clone());
        Ok(book)
    }

    fn reference(&self) -> Arc<Reference> {
        self.state
            .speed
            .reference
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `f` for an authenticated caller within a concurrency slot, and audits it.
    async fn audited<Req: Params, T, F, Fut>(
        &self,
        method: &'static str,
        req: Request<Req>,
        f: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(Principal, Req) -> Fut,
        Fut: std::future::Future<Output = Result<(T, usize), Status>>,
    {
        let started = Instant::now();
        let at = EventTime::now();
        let parameters = req.get_ref().params().to_string();
        let who = self.auth.authenticate(&req);
        let principal_name = who
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_else(|_| "unauthenticated".into());
        let result = match who {
            Err(s) => Err(s),
            Ok(p) => match self.slots.clone().try_acquire_owned() {
                Err(_) => Err(Status::resource_exhausted(
                    "too many requests in flight; retry with back-off",
                )),
                Ok(_slot) => f(p, req.into_inner()).await,
            },
        };
        let (status, rows) = match &result {
            Ok((_, n)) => ("Ok".to_string(), *n as i64),
            Err(s) => (code_name(s), 0),
        };
        let took = started.elapsed();
        self.state
            .requests
            .record(method, &status, rows as u64, took.as_secs_f64());
        self.audit.record(AuditRow {
            ts: at,
            principal: principal_name,
            method: method.to_string(),
            parameters,
            rows,
            status,
            latency_us: took.as_micros() as i64,
        });
        result.map(|(t, _)| Response::new(t))
    }

    /// Runs a merge, loading what it finds missing, then again, as long as each load makes
    /// progress (a merge over many dates loads one published date per round).
    async fn merged<T>(
        &self,
        f: impl Fn(&BatchSnapshot, &Views) -> Result<T, Missing>,
    ) -> Result<T, Status> {
        let mut last: Option<(Option<String>, Missing)> = None;
        loop {
            let (r, run) = {
                let views = self.state.views();
                let snap = self.state.snapshot();
                (
                    f(&snap, &views),
                    snap.run.as_ref().map(|r| r.run_id.clone()),
                )
            };
            let missing = match r {
                Ok(t) => return Ok(t),
                Err(m) => m,
            };
            let again = (run, missing);
            if last.as_ref() == Some(&again) {
                return Err(Status::internal(format!(
                    "the batch view does not hold {:?} after loading it",
                    again.1
                )));
            }
            self.state
                .load_missing(&again.1)
                .await
                .map_err(|e| Status::unavailable(format!("cannot load the batch view: {e}")))?;
            last = Some(again);
        }
    }

    async fn positions(
        &self,
        p: &Principal,
        r: &pb::GetPositionsRequest,
    ) -> Result<pb::GetPositionsResponse, Status> {
        let reference = self.reference();
        p.check_named(&r.accounts, &r.desks, &reference)?;
        let desk_of = |a: &str| {
            reference
                .accounts
                .get(a)
                .map(|x| x.desk.clone())
                .unwrap_or_default()
        };
        let wanted = |a: &str, s: &str| {
            p.sees_account(a, &reference)
                && (r.accounts.is_empty() && r.desks.is_empty()
                    || r.accounts.iter().any(|x| x == a)
                    || r.desks.contains(&desk_of(a)))
                && (r.symbols.is_empty() || r.symbols.iter().any(|x| x == s))
        };
        let book = self.book().await?;
        let row = |(_, (q, row)): (_, &(LakePosition, pb::Position))| {
            (r.include_flat || !q.net_quantity.is_zero()).then(|| row.clone())
        };
        // named accounts (and the accounts of named desks): only their ranges of the book
        let positions = if r.accounts.is_empty() && r.desks.is_empty() {
            book.positions
                .iter()
                .filter(|((a, s), _)| wanted(a, s))
                .filter_map(row)
                .collect()
        } else {
            let mut named: BTreeSet<&str> = r.accounts.iter().map(String::as_str).collect();
            for (a, x) in &reference.accounts {
                if r.desks.contains(&x.desk) {
                    named.insert(a);
                }
            }
            named
                .into_iter()
                .flat_map(|a| {
                    book.positions
                        .range((a.to_string(), String::new())..)
                        .take_while(move |((x, _), _)| x == a)
                })
                .filter(|((a, s), _)| wanted(a, s))
                .filter_map(row)
                .collect()
        };
        Ok(pb::GetPositionsResponse {
            positions,
            freshness: Some(book.freshness.clone()),
        })
    }
}

fn position_row(
    account: &str,
    desk: &str,
    symbol: &str,
    p: &LakePosition,
    mark: Option<Decimal>,
) -> pb::Position {
    pb::Position {
        account: account.to_string(),
        desk: desk.to_string(),
        symbol: symbol.to_string(),
        net_quantity: p.net_quantity.to_string(),
        avg_cost: p.avg_cost.to_string(),
        realized_pnl: p.realized_pnl.to_string(),
        mark_price: text(mark),
        market_value: text(mark.and_then(|m| p.market_value(m).ok())),
        unrealized_pnl: text(mark.and_then(|m| p.unrealized_pnl(m).ok())),
    }
}

/// A request's parameters as the audit records them (JSON).
trait Params {
    fn params(&self) -> serde_json::Value;
}

impl Params for pb::GetPositionsRequest {
    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "accounts": self.accounts,
            "desks": self.desks,
            "symbols": self.symbols,
            "include_flat": self.include_flat,
        })
    }
}

impl Params for pb::GetBarsRequest {
    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "symbol": self.symbol,
            "interval": self.interval,
            "from": self.from.map(|t| t.seconds),
            "to": self.to.map(|t| t.seconds),
        })
    }
}

impl Params for pb::GetExposureRequest {
    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "desks": self.desks,
            "asset_classes": self.asset_classes,
            "currencies": self.currencies,
        })
    }
}

impl Params for pb::ListLargeTradesRequest {
    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "from_date": self.from_date,
            "to_date": self.to_date,
            "threshold": self.threshold,
            "accounts": self.accounts,
        })
    }
}

impl Params for pb::StreamTransactionReportRequest {
    fn params(&self) -> serde_json::Value {
        serde_json::json!({"business_date": self.business_date, "chunk_rows": self.chunk_rows})
    }
}

impl Params for pb::SubscribeBarsRequest {
    fn params(&self) -> serde_json::Value {
        serde_json::json!({"symbols": self.symbols, "interval": self.interval})
    }
}

impl Params for pb::WatchPositionsRequest {
    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "filter": self.filter.as_ref().map(Params::params),
            "min_interval_ms": self.min_interval_ms,
        })
    }
}

impl Params for pb::GetStatusRequest {
    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

#[tonic::async_trait]
impl Lakehouse for Service {
    async fn get_positions(
        &self,
        req: Request<pb::GetPositionsRequest>,
    ) -> Result<Response<pb::GetPositionsResponse>, Status> {
        self.audited("GetPositions", req, |p, r| async move {
            let out = self.positions(&p, &r).await?;
            let n = out.positions.len();
            Ok((out, n))
        })
        .await
    }

    async fn get_bars(
        &self,
        req: Request<pb::GetBarsRequest>,
    ) -> Result<Response<pb::GetBarsResponse>, Status> {
        self.audited("GetBars", req, |_p, r| async move {
            let iv = interval(r.interval)?;
            let (from, to) = (from_ts(&r.from, "from")?, from_ts(&r.to, "to")?);
            if to <= from {
                return Err(Status::invalid_argument("to must be after from"));
            }
            let span = to.micros() - from.micros();
            if iv != Interval::Day && span > 31 * 86_400_000_000 {
                return Err(Status::invalid_argument(
                    "1m and 5m bars: the range is at most 31 days",
                ));
            }
            if span > 3660 * 86_400_000_000 {
                return Err(Status::invalid_argument("the range is at most 10 years"));
            }
            if r.symbol.is_empty() {
                return Err(Status::invalid_argument("symbol is required"));
            }
            let known = self.reference().instruments.contains_key(&r.symbol)
                || self.state.views().last_print(&r.symbol).is_some();
            if !known {
                return Err(Status::not_found(format!("unknown symbol {:?}", r.symbol)));
            }
            let calendar = self.state.calendar;
            let out = self
                .merged(|snap, views| {
                    let bars = merge::bars(snap, views, &calendar, &r.symbol, iv, from, to)?;
                    Ok(pb::GetBarsResponse {
                        bars: bars
                            .iter()
                            .map(|(m, d, b)| bar(&r.symbol, *m, *d, b))
                            .collect(),
                        freshness: Some(freshness(snap, views)),
                    })
                })
                .await?;
            let n = out.bars.len();
            Ok((out, n))
        })
        .await
    }

    async fn get_exposure(
        &self,
        req: Request<pb::GetExposureRequest>,
    ) -> Result<Response<pb::GetExposureResponse>, Status> {
        self.audited("GetExposure", req, |p, r| async move {
            let reference = self.reference();
            p.check_named(&[], &r.desks, &reference)?;
            let book = self.book().await?;
            let (rows, unpriced) = lakehouse_lake::reference::desk_exposure(
                book.positions
                    .iter()
                    .filter(|((a, _), _)| p.sees_account(a, &reference))
                    .map(|((a, s), (q, _))| (a.as_str(), s.as_str(), *q)),
                |s| book.marks.get(s).copied().flatten(),
                &reference,
            )
            .map_err(|e| Status::internal(format!("exposure cannot be computed exactly: {e}")))?;
            let keep = |x: &[String], v: &str| x.is_empty() || x.iter().any(|y| y == v);
            let out = pb::GetExposureResponse {
                exposures: rows
                    .into_iter()
                    .filter(|e| {
                        keep(&r.desks, &e.desk)
                            && keep(&r.asset_classes, &e.asset_class)
                            && keep(&r.currencies, &e.currency)
                    })
                    .map(|e| pb::Exposure {
                        desk: e.desk,
                        asset_class: e.asset_class,
                        currency: e.currency,
                        gross_notional: e.gross_notional.to_string(),
                        net_notional: e.net_notional.to_string(),
                    })
                    .collect(),
                unpriced_positions: unpriced.len() as u64,
                freshness: Some(book.freshness.clone()),
            };
            let n = out.exposures.len();
            Ok((out, n))
        })
        .await
    }

    async fn list_large_trades(
        &self,
        req: Request<pb::ListLargeTradesRequest>,
    ) -> Result<Response<pb::ListLargeTradesResponse>, Status> {
        self.audited("ListLargeTrades", req, |p, r| async move {
            let (from, to) = (
                date(&r.from_date, "from_date")?,
                date(&r.to_date, "to_date")?,
            );
            if to < from {
                return Err(Status::invalid_argument("to_date is before from_date"));
            }
            if (to.0 - from.0).num_days() > 366 {
                return Err(Status::invalid_argument("the range is at most 366 days"));
            }
            let threshold: Option<Decimal> = if r.threshold.is_empty() {
                None
            } else {
                Some(r.threshold.parse().map_err(|e| {
                    Status::invalid_argument(format!("threshold {:?}: {e}", r.threshold))
                })?)
            };
            let reference = self.reference();
            p.check_named(&r.accounts, &[], &reference)?;
            let thresholds = self.thresholds.clone();
            let limit = |symbol: &str| -> Option<Decimal> {
                if let Some(t) = threshold {
                    return Some(t);
                }
                let class = reference
                    .instruments
                    .get(symbol)
                    .map(|i| i.asset_class.as_str());
                class
                    .and_then(|c| thresholds.get(c))
                    .or_else(|| thresholds.get("*"))
                    .copied()
            };
            let wanted = |a: &str| {
                p.sees_account(a, &reference)
                    && (r.accounts.is_empty() || r.accounts.iter().any(|x| x == a))
            };
            let out = self
                .merged(|snap, views| {
                    let trades = merge::large_trades(snap, views, from, to, &limit, &wanted)?;
                    Ok(pb::ListLargeTradesResponse {
                        trades: trades
                            .into_iter()
                            .map(|(date, t)| pb::LargeTrade {
                                business_date: date.to_string(),
                                desk: reference
                                    .accounts
                                    .get(&t.account)
                                    .map(|a| a.desk.clone())
                                    .unwrap_or_default(),
                                exec_id: t.exec_id,
                                account: t.account,
                                symbol: t.symbol,
                                side: side(t.side),
                                quantity: t.quantity.to_string(),
                                price: t.price.to_string(),
                                notional: t.notional.to_string(),
                            })
                            .collect(),
                        freshness: Some(freshness(snap, views)),
                    })
                })
                .await?;
            let n = out.trades.len();
            Ok((out, n))
        })
        .await
    }

    type StreamTransactionReportStream = Stream_<pb::TransactionReportChunk>;

    async fn stream_transaction_report(
        &self,
        req: Request<pb::StreamTransactionReportRequest>,
    ) -> Result<Response<Self::StreamTransactionReportStream>, Status> {
        self.audited("StreamTransactionReport", req, |p, r| async move {
            let d = date(&r.business_date, "business_date")?;
            let chunk = match r.chunk_rows {
                0 => 1000,
                n if n > 10_000 => {
                    return Err(Status::invalid_argument("chunk_rows is at most 10000"));
                }
                n => n as usize,
            };
            let (snap, fresh) = {
                let views = self.state.views();
                let snap = self.state.snapshot();
                let f = freshness(&snap, &views);
                (snap, f)
            };
            let run = match &snap.run {
                Some(run) if d <= run.date => run.clone(),
                _ => return Err(Status::not_found(format!("{d} is not reported yet"))),
            };
            let reference = self.reference();
            let rows = self
                .state
                .transaction_report(&run, d)
                .await
                .map_err(|e| Status::unavailable(format!("cannot read the report: {e}")))?;
            let rows: Vec<pb::TransactionReportRow> = rows
                .into_iter()
                .filter(|row| p.sees_account(&row.account, &reference))
                .collect();
            let n = rows.len();
            let mut chunks: Vec<Result<pb::TransactionReportChunk, Status>> = rows
                .chunks(chunk)
                .map(|c| {
                    Ok(pb::TransactionReportChunk {
                        rows: c.to_vec(),
                        freshness: None,
                    })
                })
                .collect();
            if chunks.is_empty() {
                chunks.push(Ok(pb::TransactionReportChunk::default()));
            }
            if let Some(Ok(first)) = chunks.first_mut() {
                first.freshness = Some(fresh);
            }
            let s: Self::StreamTransactionReportStream = Box::pin(futures::stream::iter(chunks));
            Ok((s, n))
        })
        .await
    }

    type SubscribeBarsStream = Stream_<pb::BarUpdate>;

    async fn subscribe_bars(
        &self,
        req: Request<pb::SubscribeBarsRequest>,
    ) -> Result<Response<Self::SubscribeBarsStream>, Status> {
        let rx = self.state.speed.panes.subscribe();
        let calendar = self.state.calendar;
        self.audited("SubscribeBars", req, |_p, r| async move {
            let view = match interval(r.interval)? {
                Interval::Minute => "bars_1m",
                Interval::FiveMinutes => "bars_5m",
                Interval::Day => {
                    return Err(Status::invalid_argument("live bars are 1m or 5m"));
                }
            };
            if r.symbols.is_empty() {
                return Err(Status::invalid_argument("symbols is required"));
            }
            let symbols: std::collections::HashSet<String> = r.symbols.into_iter().collect();
            let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |p| {
                let out = match p {
                    Ok(p) if p.view == view && symbols.contains(&p.pane.key) => {
                        match &p.pane.value {
                            lakehouse_speed::pipeline::PaneValue::Bar(b) => {
                                Some(Ok(pb::BarUpdate {
                                    bar: Some(bar(
                                        &p.pane.key,
                                        p.pane.window.start,
                                        calendar.business_date(EventTime::from_micros(
                                            p.pane.window.start,
                                        )),
                                        b,
                                    )),
                                    timing: match p.pane.timing {
                                        Timing::Early => pb::PaneTiming::Early as i32,
                                        Timing::OnTime => pb::PaneTiming::OnTime as i32,
                                        Timing::Late => pb::PaneTiming::Late as i32,
                                    },
                                    pane_index: p.pane.index,
                                    is_final: p.pane.is_final,
                                    retraction: p.pane.retraction,
                                    window_end: Some(ts(p.pane.window.end)),
                                    watermark: (p.watermark > i64::MIN).then(|| ts(p.watermark)),
                                }))
                            }
                            _ => None,
                        }
                    }
                    Ok(_) => None,
                    Err(_) => Some(Err(Status::data_loss(
                        "the subscriber fell behind; panes were skipped",
                    ))),
                };
                futures::future::ready(out)
            });
            let s: Self::SubscribeBarsStream = Box::pin(stream);
            Ok((s, 0))
        })
        .await
    }

    type WatchPositionsStream = Stream_<pb::PositionsUpdate>;

    async fn watch_positions(
        &self,
        req: Request<pb::WatchPositionsRequest>,
    ) -> Result<Response<Self::WatchPositionsStream>, Status> {
        let me = self.clone();
        self.audited("WatchPositions", req, |p, r| async move {
            let filter = r.filter.unwrap_or_default();
            let every = Duration::from_millis(u64::from(match r.min_interval_ms {
                0 => 500,
                n => n.max(100),
            }));
            // the first answer (and the scope check) before the stream starts
            let first = me.positions(&p, &filter).await?;
            let stream = futures::stream::unfold(
                (me, p, filter, Some(first), Vec::<pb::Position>::new()),
                move |(me, p, filter, pending, last)| async move {
                    if let Some(first) = pending {
                        let rows = first.positions.clone();
                        return Some((
                            Ok(pb::PositionsUpdate {
                                positions: first.positions,
                                freshness: first.freshness,
                            }),
                            (me, p, filter, None, rows),
                        ));
                    }
                    loop {
                        tokio::time::sleep(every).await;
                        match me.positions(&p, &filter).await {
                            Ok(now) if now.positions != last => {
                                let rows = now.positions.clone();
                                return Some((
                                    Ok(pb::PositionsUpdate {
                                        positions: now.positions,
                                        freshness: now.freshness,
                                    }),
                                    (me, p, filter, None, rows),
                                ));
                            }
                            Ok(_) => continue,
                            Err(e) => return Some((Err(e), (me, p, filter, None, last))),
                        }
                    }
                },
            );
            let s: Self::WatchPositionsStream = Box::pin(stream);
            Ok((s, 0))
        })
        .await
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        self.audited("GetStatus", req, |_p, _r| async move {
            let views = self.state.views();
            let snap = self.state.snapshot();
            let fresh = freshness(&snap, &views);
            let recent = self
                .state
                .recent
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let consumed: usize = views.consumed().values().map(|p| p.len()).sum();
            let layers = vec![
                pb::LayerStatus {
                    layer: "speed".into(),
                    ready: consumed > 0,
                    detail: format!(
                        "{} events in the view, {} partitions read, lag {} ms",
                        views.events(),
                        consumed,
                        fresh.lag_ms
                    ),
                },
                pb::LayerStatus {
                    layer: "batch".into(),
                    ready: snap.run.is_some(),
                    detail: match &snap.run {
                        Some(r) => format!("serving run {} for {}", r.run_id, r.date),
                        None => "no published run yet: the speed view answers alone".into(),
                    },
                },
                pb::LayerStatus {
                    layer: "ingest".into(),
                    ready: true,
                    detail: format!(
                        "L1 input versions of the batch view: {:?}",
                        fresh.input_versions
                    ),
                },
                pb::LayerStatus {
                    layer: "serving".into(),
                    ready: true,
                    detail: "serving".into(),
                },
            ];
            let out = pb::GetStatusResponse {
                layers,
                speed_events: views.events(),
                speed_duplicates: views.duplicates(),
                recent_runs: recent.iter().map(|(d, id)| format!("{d} {id}")).collect(),
                freshness: Some(fresh),
            };
            Ok((out, 1))
        })
        .await
    }
}

use futures::StreamExt as _;
