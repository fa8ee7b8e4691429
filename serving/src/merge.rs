//! The merge of the batch view and the speed view: pure code, no I/O.
//!
//! The batch view is what the latest published run for business date `D` covers: the events
//! with business date <= `D` and offset <= the run's boundary for their partition. The speed
//! view ([`Views`]) holds exactly the other events it consumed: later dates, and late events
//! for reported dates. An answer combines them so that every event named by the boundary
//! and the speed offsets counts once:
//!
//! - **Bars**: a bar is an order-independent aggregate (first and last print by rank, exact
//!   sums), so a bucket's batch bar (built from `l2/market_trades`) and its speed bar merge
//!   exactly. 5-minute and daily bars merge the 1-minute bars.
//! - **Positions**: the average-cost method is sequential, so the merge replays. Without late
//!   executions for a key, the speed view's fills (all after `D`) apply on top of the batch
//!   position at `D`. With a late execution for date `d0 <= D`, the key restarts from the batch
//!   position before `d0` and applies the batch's effective fills of `d0..=D` and the speed
//!   view's executions together, in rank order, corrections included.
//! - **Marks**: the latest print by rank of either view.
//!
//! [`BatchSnapshot`] holds what serving loaded of the run; a merge that needs a date the
//! snapshot has not loaded says so with [`Missing`], and the caller loads it and asks again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use lakehouse_lake::events::{Execution, Lifecycle, Side};
use lakehouse_lake::positions::{Position, Positions, Rank};
use lakehouse_lake::{BusinessCalendar, BusinessDate, Decimal, EventTime};
use lakehouse_speed::bars::{Bar, Print};
use lakehouse_speed::views::{Boundary, Interval, LargeTrade, Payload, Views, large_trades_of};
use lakehouse_speed::window::Aggregate;
use rustc_hash::FxHashMap;

/// An (account, symbol) key.
pub type Key = (String, String);

const MINUTE: i64 = 60_000_000;

/// The published run the batch view is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// Run id (`system/batch_ledger`).
    pub run_id: String,
    /// Business date.
    pub date: BusinessDate,
    /// Input tables and versions.
    pub inputs: BTreeMap<String, i64>,
    /// Output tables and versions.
    pub outputs: BTreeMap<String, i64>,
    /// Last offset covered per topic and partition.
    pub boundary: BTreeMap<String, BTreeMap<i32, i64>>,
}

impl RunInfo {
    /// The boundary in the speed layer's terms.
    pub fn boundary(&self) -> Boundary {
        Boundary {
            date: Some(self.date),
            offsets: self.boundary.clone(),
        }
    }
}

/// One effective execution the batch covered (a row of `l2/executions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoveredFill {
    /// Execution id.
    pub exec_id: String,
    /// Account.
    pub account: String,
    /// Symbol.
    pub symbol: String,
    /// Side.
    pub side: Side,
    /// Effective price.
    pub price: Decimal,
    /// Effective quantity.
    pub quantity: Decimal,
    /// Event time of the execution.
    pub ts: EventTime,
    /// Kafka partition of the execution.
    pub partition: i32,
    /// Kafka offset of the execution.
    pub offset: i64,
}

/// One business date of the batch view, as loaded.
#[derive(Clone, Debug, Default)]
pub struct BatchDay {
    /// `l3/positions` of the date (closing positions, carried forward).
    pub positions: BTreeMap<Key, Position>,
    /// The date's closing price per symbol (`l3/positions.close_price`).
    pub closes: FxHashMap<String, Decimal>,
    /// `l2/executions` of the date, per key.
    pub fills: BTreeMap<Key, Vec<CoveredFill>>,
    /// 1-minute bars of `l2/market_trades` of the date: symbol -> minute start (µs) -> bar.
    pub bars: FxHashMap<String, BTreeMap<i64, Bar>>,
}

impl BatchDay {
    /// Adds one print of `l2/market_trades` to the day's bars.
    pub fn add_print(&mut self, symbol: &str, print: &Print) {
        let minute = print.ts - print.ts.rem_euclid(MINUTE);
        if !self.bars.contains_key(symbol) {
            self.bars.insert(symbol.to_string(), BTreeMap::new());
        }
        let m = self.bars.get_mut(symbol).expect("inserted");
        m.entry(minute).or_default().add(print);
    }
}

/// What the merge needs of the batch view and the snapshot has not loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Every table of this business date.
    Day(BusinessDate),
    /// The latest date before this one that has positions (to restart a key from).
    PositionsBefore(BusinessDate),
}

/// What serving holds of the published run: its identity, the dates loaded so far and the
/// latest print per symbol.
#[derive(Clone, Debug, Default)]
pub struct BatchSnapshot {
    /// The run; none before the first.
    pub run: Option<RunInfo>,
    /// Dates loaded (all <= the run's date).
    pub days: BTreeMap<BusinessDate, Arc<BatchDay>>,
    /// Per business date up to the run's, whether the batch has positions for it: lets the
    /// merge find "the latest date before d0" without loading every date.
    pub position_dates: BTreeSet<BusinessDate>,
    /// The dates of published runs up to the run's: any other date has nothing in the batch
    /// view, so it needs no loading.
    pub run_dates: BTreeSet<BusinessDate>,
    /// The latest covered print per symbol: (rank, price), from the loaded days.
    pub last: FxHashMap<String, (Rank, Decimal)>,
}

impl BatchSnapshot {
    /// The run's date.
    pub fn date(&self) -> Option<BusinessDate> {
        self.run.as_ref().map(|r| r.date)
    }

    fn day(&self, d: BusinessDate) -> Result<&BatchDay, Missing> {
        self.days.get(&d).map(Arc::as_ref).ok_or(Missing::Day(d))
    }

    /// The positions at the latest date before `d0` that has them (empty when none).
    fn positions_before(&self, d0: BusinessDate) -> Result<Option<&BatchDay>, Missing> {
        match self.position_dates.range(..d0).next_back() {
            Some(d) => self
                .days
                .get(d)
                .map(|b| Some(b.as_ref()))
                .ok_or(Missing::PositionsBefore(d0)),
            None => Ok(None),
        }
    }
}

/// The complement's executions of one key: every execution event in the speed view.
fn speed_executions(views: &Views) -> BTreeMap<Key, Vec<(&Execution, i32, i64, BusinessDate)>> {
    let mut out: BTreeMap<Key, Vec<_>> = BTreeMap::new();
    for e in views.log() {
        if let Payload::Execution(x) = &e.payload {
            out.entry((x.account.clone(), x.symbol.clone()))
                .or_default()
                .push((x, e.partition, e.offset, e.date));
        }
    }
    out
}

/// Merged positions of the keys `wanted` accepts, sorted by key. Keys with neither a batch
/// position nor a speed execution are absent.
pub fn positions(
    batch: &BatchSnapshot,
    views: &Views,
    wanted: impl Fn(&str, &str) -> bool,
) -> Result<BTreeMap<Key, Position>, Missing> {
    let speed = speed_executions(views);
    let at_d = match batch.date() {
        Some(d) => Some(batch.day(d)?),
        None => None,
    };
    let mut keys: BTreeSet<&Key> = speed.keys().collect();
    if let Some(day) = at_d {
        keys.extend(day.positions.keys());
    }
    let mut out = BTreeMap::new();
    for key in keys {
        if !wanted(&key.0, &key.1) {
            continue;
        }
        let execs = speed.get(key).map(Vec::as_slice).unwrap_or_default();
        // the first reported date a late execution of this key belongs to
        let late = batch
            .date()
            .and_then(|d| execs.iter().map(|e| e.3).filter(|&x| x <= d).min());
        let mut book = Positions::new();
        let base = match (late, batch.date()) {
            (Some(d0), Some(d)) => {
                let mut day = d0;
                while day <= d {
                    if let Some(fills) = batch.day(day)?.fills.get(key) {
                        for f in fills {
                            book.add(&as_execution(f), f.partition, f.offset);
                        }
                    }
                    day = day.succ();
                }
                batch
                    .positions_before(d0)?
                    .and_then(|b| b.positions.get(key).copied())
            }
            _ => at_d.and_then(|b| b.positions.get(key).copied()),
        };
        for (x, partition, offset, _) in execs {
            book.add(x, *partition, *offset);
        }
        let fills = book.effective_fills(&key.0, &key.1);
        // a key whose every execution was cancelled has no position (as in the batch view)
        if fills.is_empty() && base.is_none() {
            continue;
        }
        let mut p = base.unwrap_or_default();
        // an overflow cannot be answered exactly: leave the key out rather than guess
        let exact = fills
            .into_iter()
            .all(|(_, _, side, price, qty)| p.apply(side, price, qty).is_ok());
        if exact {
            out.insert(key.clone(), p);
        }
    }
    Ok(out)
}

fn as_execution(f: &CoveredFill) -> Execution {
    Execution {
        exec_id: f.exec_id.clone(),
        order_id: String::new(),
        account: f.account.clone(),
        trader: String::new(),
        symbol: f.symbol.clone(),
        venue: None,
        side: f.side,
        price: f.price,
        quantity: f.quantity,
        currency: String::new(),
        ts: f.ts,
        lifecycle: Lifecycle::New,
        ref_exec_id: None,
    }
}

/// The latest print of `symbol` in either view.
pub fn mark(batch: &BatchSnapshot, views: &Views, symbol: &str) -> Option<Decimal> {
    let b = batch.last.get(symbol).copied();
    let s = views.last_print(symbol);
    match (b, s) {
        (Some(b), Some(s)) => Some(if s.0 > b.0 { s.1 } else { b.1 }),
        (b, s) => b.or(s).map(|x| x.1).or_else(|| {
            let day = batch.days.get(&batch.date()?)?;
            day.closes.get(symbol).copied()
        }),
    }
}

/// One merged bar: bucket start (µs), business date, bar.
pub type MergedBar = (i64, BusinessDate, Bar);

/// Merged bars of `symbol` whose bucket starts in `[from, to)` (1m, 5m), or of the business
/// dates the range touches (1d), oldest first.
pub fn bars(
    batch: &BatchSnapshot,
    views: &Views,
    calendar: &BusinessCalendar,
    symbol: &str,
    interval: Interval,
    from: EventTime,
    to: EventTime,
) -> Result<Vec<MergedBar>, Missing> {
    if to <= from {
        return Ok(Vec::new());
    }
    // the 1-minute span to gather
    let (lo, hi) = match interval {
        Interval::Minute => (from.micros(), to.micros()),
        Interval::FiveMinutes => (
            from.micros() - from.micros().rem_euclid(5 * MINUTE),
            to.micros(),
        ),
        Interval::Day => {
            let first = calendar.business_date(from);
            let last = calendar.business_date(EventTime::from_micros(to.micros() - 1));
            (
                calendar.utc_range(first).0.micros(),
                calendar.utc_range(last).1.micros(),
            )
        }
    };
    let mut minutes: BTreeMap<i64, Bar> = BTreeMap::new();
    if let Some(d) = batch.date() {
        let first = calendar.business_date(EventTime::from_micros(lo));
        let last = calendar
            .business_date(EventTime::from_micros(hi - 1))
            .min(d);
        let mut day = first;
        while day <= last {
            if let Some(m) = batch.day(day)?.bars.get(symbol) {
                for (start, b) in m.range(lo..hi) {
                    minutes.entry(*start).or_default().merge(b);
                }
            }
            day = day.succ();
        }
    }
    for (start, b) in views.bars(
        symbol,
        Interval::Minute,
        EventTime::from_micros(lo),
        EventTime::from_micros(hi),
    ) {
        minutes.entry(start).or_default().merge(&b);
    }
    let date_of = |m: i64| calendar.business_date(EventTime::from_micros(m));
    Ok(match interval {
        Interval::Minute => minutes
            .into_iter()
            .map(|(m, b)| (m, date_of(m), b))
            .collect(),
        Interval::FiveMinutes => {
            let mut out: BTreeMap<i64, Bar> = BTreeMap::new();
            for (m, b) in minutes {
                let bucket = m - m.rem_euclid(5 * MINUTE);
                if bucket >= from.micros() {
                    out.entry(bucket).or_default().merge(&b);
                }
            }
            out.into_iter().map(|(m, b)| (m, date_of(m), b)).collect()
        }
        Interval::Day => {
            let mut out: BTreeMap<BusinessDate, (i64, Bar)> = BTreeMap::new();
            for (m, b) in minutes {
                let e = out.entry(date_of(m)).or_insert((m, Bar::default()));
                e.1.merge(&b);
            }
            out.into_iter().map(|(d, (m, b))| (m, d, b)).collect()
        }
    })
}

/// Effective executions of business dates `from..=to` whose notional is at or above
/// `limit(symbol)`, of accounts `wanted` accepts; sorted by date then exec id. Per date, the
/// batch's effective executions and the speed view's executions of that date make one book,
/// so a late amend or cancel of a reported execution applies.
pub fn large_trades(
    batch: &BatchSnapshot,
    views: &Views,
    from: BusinessDate,
    to: BusinessDate,
    limit: &dyn Fn(&str) -> Option<Decimal>,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<(BusinessDate, LargeTrade)>, Missing> {
    let mut books: BTreeMap<BusinessDate, Positions> = BTreeMap::new();
    if let Some(d) = batch.date() {
        let mut day = from;
        while day <= to.min(d) {
            let book = books.entry(day).or_default();
            for fills in batch.day(day)?.fills.values() {
                for f in fills {
                    book.add(&as_execution(f), f.partition, f.offset);
                }
            }
            day = day.succ();
        }
    }
    for e in views.log() {
        if let Payload::Execution(x) = &e.payload
            && (from..=to).contains(&e.date)
        {
            books
                .entry(e.date)
                .or_default()
                .add(x, e.partition, e.offset);
        }
    }
    // dates in order, exec ids in order within each
    Ok(books
        .into_iter()
        .flat_map(|(date, book)| {
            large_trades_of(&book, wanted, limit)
                .into_iter()
                .map(move |t| (date, t))
        })
        .collect())
}
