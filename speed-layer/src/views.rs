//! The exact intraday views: everything the speed layer consumed that the latest published
//! batch run does not cover (see ARCHITECTURE.md, "The speed layer").
//!
//! Pure: events go in with their Kafka position and business date; queries read the
//! aggregates. Every aggregate is order-independent, so the views of a set of events do not
//! depend on the order they arrived in, and a rebuild after a boundary move is exact.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use lakehouse_lake::events::{Execution, Lifecycle, MarketTrade, Order, OrderAction, Side};
use lakehouse_lake::positions::{Position, Positions};
use lakehouse_lake::reference::{ExposureReport, Reference, desk_exposure};
use lakehouse_lake::{BusinessCalendar, BusinessDate, Decimal, EventTime};
use rustc_hash::FxHashMap;

use crate::bars::{Bar, Print};
use crate::window::Aggregate;

/// One decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A tape print.
    Trade(MarketTrade),
    /// An order event.
    Order(Order),
    /// An execution event.
    Execution(Execution),
}

impl Payload {
    /// Event time.
    pub fn ts(&self) -> EventTime {
        match self {
            Payload::Trade(t) => t.ts,
            Payload::Order(o) => o.ts,
            Payload::Execution(e) => e.ts,
        }
    }
}

/// An event with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Business date of its event time.
    pub date: BusinessDate,
    /// The event.
    pub payload: Payload,
}

/// What a published batch run covers: events with business date <= `date` and offset <=
/// `offsets[(topic, partition)]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boundary {
    /// The run's business date.
    pub date: Option<BusinessDate>,
    /// Last offset covered, per topic and partition.
    pub offsets: BTreeMap<String, BTreeMap<i32, i64>>,
}

impl Boundary {
    /// Does the batch run cover this event?
    pub fn covers(&self, e: &Input) -> bool {
        self.covers_at(&e.topic, e.partition, e.offset, e.date)
    }

    /// Does the batch run cover an event at this position and date?
    pub fn covers_at(&self, topic: &str, partition: i32, offset: i64, date: BusinessDate) -> bool {
        self.date.is_some_and(|d| date <= d)
            && self
                .offsets
                .get(topic)
                .and_then(|p| p.get(&partition))
                .is_some_and(|&b| offset <= b)
    }

    /// Is `self` at or beyond `other` everywhere (boundaries only move forward)?
    pub fn includes(&self, other: &Boundary) -> bool {
        (other.date.is_none() || self.date >= other.date)
            && other.offsets.iter().all(|(t, parts)| {
                parts.iter().all(|(p, o)| {
                    self.offsets
                        .get(t)
                        .and_then(|mine| mine.get(p))
                        .is_some_and(|s| s >= o)
                })
            })
    }
}

/// What [`Views::apply`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It is in the views now.
    Added,
    /// A repeated delivery: dropped.
    Duplicate,
    /// The published batch run covers it: not the speed layer's to answer for.
    Covered,
    /// A print with an excluded condition code: not in the views (the batch layer's
    /// `l2/market_trades` leaves it out too).
    Excluded,
}

/// Order flow of one trader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderStats {
    /// NEW orders.
    pub orders: u64,
    /// MODIFY events.
    pub modifies: u64,
    /// CANCEL events.
    pub cancels: u64,
    /// Executions (NEW) of the trader's orders.
    pub executions: u64,
}

impl OrderStats {
    /// Order messages (new, modify, cancel) per execution; none without executions.
    pub fn order_to_trade(&self) -> Option<Decimal> {
        if self.executions == 0 {
            return None;
        }
        let messages = (self.orders + self.modifies + self.cancels) as i64;
        Decimal::from_i64(messages)
            .div_rounded(Decimal::from_i64(self.executions as i64))
            .ok()
    }
}

/// A bar interval for queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    /// UTC epoch minutes.
    Minute,
    /// UTC epoch 5-minute buckets.
    FiveMinutes,
    /// Business dates.
    Day,
}

const MINUTE: i64 = 60_000_000;

#[derive(Clone, Debug, Default)]
struct Aggregates {
    /// symbol -> minute start -> bar
    bars: FxHashMap<String, BTreeMap<i64, Bar>>,
    positions: Positions,
    orders: FxHashMap<String, OrderStats>,
    /// symbol -> (rank, price) of its latest print
    last: FxHashMap<String, ((EventTime, i32, i64), Decimal)>,
    /// order id -> trader, for crediting executions
    traders: FxHashMap<String, String>,
    /// executions (NEW) whose order was not seen yet, per order id
    orphan_fills: FxHashMap<String, u64>,
    events: u64,
}

impl Aggregates {
    fn apply(&mut self, e: &Input) {
        self.events += 1;
        match &e.payload {
            Payload::Trade(t) => {
                let print = Print {
                    ts: t.ts.micros(),
                    partition: e.partition,
                    offset: e.offset,
                    price: t.price,
                    volume: t.volume,
                };
                let minute = print.ts - print.ts.rem_euclid(MINUTE);
                match self.bars.get_mut(&t.symbol) {
                    Some(m) => m.entry(minute).or_default().add(&print),
                    None => {
                        let mut bar = Bar::default();
                        bar.add(&print);
                        self.bars
                            .insert(t.symbol.clone(), BTreeMap::from([(minute, bar)]));
                    }
                }
                let rank = (t.ts, e.partition, e.offset);
                match self.last.get_mut(&t.symbol) {
                    Some(last) if rank > last.0 => *last = (rank, t.price),
                    Some(_) => {}
                    None => {
                        self.last.insert(t.symbol.clone(), (rank, t.price));
                    }
                }
            }
            Payload::Order(o) => {
                if !self.orders.contains_key(&o.trader) {
                    self.orders.insert(o.trader.clone(), OrderStats::default());
                }
                let s = self.orders.get_mut(&o.trader).expect("inserted");
                match o.action {
                    OrderAction::New => s.orders += 1,
                    OrderAction::Modify => s.modifies += 1,
                    OrderAction::Cancel => s.cancels += 1,
                }
                if o.action == OrderAction::New && !self.traders.contains_key(&o.order_id) {
                    self.traders.insert(o.order_id.clone(), o.trader.clone());
                }
                if let Some(n) = self.orphan_fills.remove(&o.order_id) {
                    s.executions += n;
                }
            }
            Payload::Execution(x) => {
                self.positions.add(x, e.partition, e.offset);
                if x.lifecycle == Lifecycle::New {
                    // an execution counts for the trader who sent the order
                    match self.traders.get(&x.order_id) {
                        Some(t) => self.orders.entry(t.clone()).or_default().executions += 1,
                        None => *self.orphan_fills.entry(x.order_id.clone()).or_default() += 1,
                    }
                }
            }
        }
    }
}

/// Events in arrival order, in fixed-size chunks: appending never moves what is stored.
#[derive(Clone, Debug, Default)]
struct Log {
    chunks: Vec<Vec<Input>>,
}

const CHUNK: usize = 16_384;

impl Log {
    fn push(&mut self, e: Input) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(e),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(e);
                self.chunks.push(c);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Input> {
        self.chunks.iter().flatten()
    }

    fn retain(&mut self, keep: impl Fn(&Input) -> bool) {
        let kept: Vec<Input> = self
            .chunks
            .drain(..)
            .flatten()
            .filter(|e| keep(e))
            .collect();
        for e in kept {
            self.push(e);
        }
    }
}

/// The views, over the events the current boundary does not cover.
#[derive(Clone, Debug)]
pub struct Views {
    calendar: BusinessCalendar,
    boundary: Boundary,
    log: Log,
    agg: Aggregates,
    /// Identities of every delivery seen, per business date (128-bit hashes of the dedup
    /// keys), from the boundary's date on.
    seen: BTreeMap<BusinessDate, rustc_hash::FxHashSet<u128>>,
    duplicates: u64,
    /// Prints carrying one of these condition codes are left out.
    excluded: Vec<String>,
    /// Per topic and partition, the next offset after the last message read.
    consumed: BTreeMap<String, BTreeMap<i32, i64>>,
    /// The live windows' event-time watermark, µs (`i64::MIN` until known).
    watermark: i64,
    /// Counts the changes of what the views hold (an event added, a new boundary).
    generation: u64,
}

/// The identity of a delivery for duplicate removal, as 128 bits: the fields of
/// [`MarketTrade::dedup_key`] / [`Order::dedup_key`] / the exec id, hashed twice with
/// different fixed seeds (no string built per event). A collision is out of reach (about
/// 1e-24 for a day of 16M events); the set is rebuilt by replay, never persisted.
fn identity(p: &Payload) -> u128 {
    let half = |seed: u64| {
        let mut h = foldhash::quality::FixedState::with_seed(seed).build_hasher();
        match p {
            Payload::Trade(t) => match &t.trade_id {
                Some(id) => (0u8, id).hash(&mut h),
                None => (
                    1u8,
                    &t.symbol,
                    &t.venue,
                    t.ts.micros(),
                    t.price.raw(),
                    t.volume.raw(),
                    &t.conditions,
                )
                    .hash(&mut h),
            },
            Payload::Order(o) => (
                2u8,
                &o.order_id,
                o.action,
                o.ts.micros(),
                &o.account,
                &o.trader,
                &o.symbol,
                o.side,
                o.order_type,
                o.price.map(Decimal::raw),
                o.quantity.raw(),
            )
                .hash(&mut h),
            Payload::Execution(x) => (3u8, &x.exec_id).hash(&mut h),
        }
        h.finish()
    };
    (u128::from(half(0x9E37_79B9)) << 64) | u128::from(half(0x85EB_CA6B))
}

impl Views {
    /// Empty views; business dates of bars come from `calendar`.
    pub fn new(calendar: BusinessCalendar) -> Views {
        Views {
            calendar,
            boundary: Boundary::default(),
            log: Log::default(),
            agg: Aggregates::default(),
            seen: BTreeMap::new(),
            duplicates: 0,
            excluded: Vec::new(),
            consumed: BTreeMap::new(),
            watermark: i64::MIN,
            generation: 0,
        }
    }

    /// Changes with every event added and every new boundary: answers computed at one
    /// generation stay exact until it moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records that every message of a partition up to `offset` was read (the views then hold
    /// each of its events the boundary does not cover).
    pub fn note_consumed(&mut self, topic: &str, partition: i32, offset: i64) {
        match self.consumed.get_mut(topic) {
            Some(parts) => {
                let next = parts.entry(partition).or_insert(offset + 1);
                *next = (*next).max(offset + 1);
            }
            None => {
                self.consumed
                    .insert(topic.to_string(), BTreeMap::from([(partition, offset + 1)]));
            }
        }
    }

    /// Per topic and partition, the next offset after the last message read.
    pub fn consumed(&self) -> &BTreeMap<String, BTreeMap<i32, i64>> {
        &self.consumed
    }

    /// Sets the live windows' watermark (µs), reported with every answer.
    pub fn set_watermark(&mut self, watermark: i64) {
        self.watermark = watermark;
    }

    /// The live windows' watermark, µs; none until known.
    pub fn watermark(&self) -> Option<i64> {
        (self.watermark > i64::MIN).then_some(self.watermark)
    }

    /// Leaves out prints carrying any of `codes` (the batch layer's `excluded-conditions`), so
    /// that both views count the same prints.
    pub fn with_excluded_conditions(mut self, codes: Vec<String>) -> Views {
        self.excluded = codes;
        self
    }

    /// The boundary the views are the complement of.
    pub fn boundary(&self) -> &Boundary {
        &self.boundary
    }

    /// Adds one event. A repeated delivery (same trade id or print, same order event, same
    /// exec id) is dropped and counted; an event the boundary covers is dropped. Returns
    /// what happened to it. Duplicates are recognised for the business dates from the
    /// boundary's on: a repeat of an event two published runs old is not.
    pub fn apply(&mut self, e: Input) -> Applied {
        let applied = self.admit(&e.topic, e.partition, e.offset, e.date, &e.payload);
        if applied == Applied::Added {
            self.insert(e);
        }
        applied
    }

    /// The first half of [`Views::apply`]: decides (and records the identity) without taking
    /// the event; an event found [`Applied::Added`] must then be given to [`Views::insert`].
    pub fn admit(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        date: BusinessDate,
        payload: &Payload,
    ) -> Applied {
        if !self.seen.entry(date).or_default().insert(identity(payload)) {
            self.duplicates += 1;
            return Applied::Duplicate;
        }
        if let Payload::Trade(t) = payload
            && !self.excluded.is_empty()
            && t.conditions.iter().any(|c| self.excluded.contains(c))
        {
            return Applied::Excluded;
        }
        if self.boundary.covers_at(topic, partition, offset, date) {
            return Applied::Covered;
        }
        Applied::Added
    }

    /// The second half of [`Views::apply`], for an event [`Views::admit`] found added.
    pub fn insert(&mut self, e: Input) {
        // a boundary published since `admit` may cover it now: the batch view has it
        if self.boundary.covers(&e) {
            return;
        }
        self.agg.apply(&e);
        self.log.push(e);
        self.generation += 1;
    }

    /// A new batch run was published: drop what `boundary` covers and rebuild. A boundary
    /// behind the current one is refused (the complement never grows back).
    pub fn set_boundary(&mut self, boundary: Boundary) -> Result<(), String> {
        if !boundary.includes(&self.boundary) {
            return Err(format!(
                "boundary {boundary:?} is behind the current one {:?}",
                self.boundary
            ));
        }
        self.log.retain(|e| !boundary.covers(e));
        let mut agg = Aggregates::default();
        for e in self.log.iter() {
            agg.apply(e);
        }
        self.agg = agg;
        // duplicates are recognised from the last reported date on; older dates are settled
        if let Some(d) = boundary.date {
            self.seen = self.seen.split_off(&d);
        }
        self.boundary = boundary;
        self.generation += 1;
        Ok(())
    }

    /// Events in the views.
    pub fn events(&self) -> u64 {
        self.agg.events
    }

    /// Duplicate deliveries dropped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Events in the views for dates the batch already reported (late events waiting for a
    /// restatement).
    pub fn pending_restatement(&self) -> u64 {
        match self.boundary.date {
            Some(d) => self.log.iter().filter(|e| e.date <= d).count() as u64,
            None => 0,
        }
    }

    /// The events in the views, in arrival order.
    pub fn log(&self) -> impl Iterator<Item = &Input> {
        self.log.iter()
    }

    /// Bars of `symbol` whose bucket starts in `[from, to)`, oldest first. Day bars are keyed
    /// by their business date's first minute in the data.
    pub fn bars(
        &self,
        symbol: &str,
        interval: Interval,
        from: EventTime,
        to: EventTime,
    ) -> Vec<(i64, Bar)> {
        let Some(minutes) = self.agg.bars.get(symbol) else {
            return Vec::new();
        };
        match interval {
            Interval::Minute => minutes
                .range(from.micros()..to.micros())
                .map(|(m, b)| (*m, b.clone()))
                .collect(),
            Interval::FiveMinutes => {
                let mut out: BTreeMap<i64, Bar> = BTreeMap::new();
                let start = from.micros() - from.micros().rem_euclid(5 * MINUTE);
                for (m, b) in minutes.range(start..to.micros()) {
                    let bucket = m - m.rem_euclid(5 * MINUTE);
                    if bucket >= from.micros() {
                        out.entry(bucket).or_default().merge(b);
                    }
                }
                out.into_iter().collect()
            }
            Interval::Day => {
                let mut out: BTreeMap<BusinessDate, (i64, Bar)> = BTreeMap::new();
                for (m, b) in minutes {
                    let date = self.calendar.business_date(EventTime::from_micros(*m));
                    let e = out.entry(date).or_insert((*m, Bar::default()));
                    e.0 = e.0.min(*m);
                    e.1.merge(b);
                }
                out.into_values()
                    .filter(|(m, _)| (from.micros()..to.micros()).contains(m))
                    .collect()
            }
        }
    }

    /// The daily bar of `symbol` for business date `date`.
    pub fn day_bar(&self, symbol: &str, date: BusinessDate) -> Option<Bar> {
        let minutes = self.agg.bars.get(symbol)?;
        let mut bar = Bar::default();
        let mut any = false;
        for (m, b) in minutes {
            if self.calendar.business_date(EventTime::from_micros(*m)) == date {
                bar.merge(b);
                any = true;
            }
        }
        any.then_some(bar)
    }

    /// Position of `account` in `symbol` from the executions in the views.
    pub fn position(&mut self, account: &str, symbol: &str) -> Position {
        self.agg
            .positions
            .position(account, symbol)
            .unwrap_or_default()
    }

    /// Every (account, symbol) with executions in the views, with its position.
    pub fn positions(&mut self) -> Vec<((String, String), Position)> {
        let keys = self.agg.positions.keys();
        keys.into_iter()
            .map(|k| {
                let p = self.agg.positions.position(&k.0, &k.1).unwrap_or_default();
                (k, p)
            })
            .collect()
    }

    /// Order statistics per trader, sorted by trader.
    pub fn order_stats(&self) -> Vec<(String, OrderStats)> {
        let mut v: Vec<_> = self
            .agg
            .orders
            .iter()
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every view as JSON, in a stable order (decimals as text): for dumps and comparisons.
    pub fn to_json(&mut self) -> serde_json::Value {
        let text = |d: Option<Decimal>| d.map(|d| d.to_string());
        let mut symbols: Vec<&String> = self.agg.bars.keys().collect();
        symbols.sort();
        let bars: serde_json::Map<String, serde_json::Value> = symbols
            .into_iter()
            .map(|s| {
                let rows: Vec<serde_json::Value> = self.agg.bars[s]
                    .iter()
                    .map(|(m, b)| {
                        serde_json::json!([
                            EventTime::from_micros(*m).to_string(),
                            text(b.open()),
                            text(b.high()),
                            text(b.low()),
                            text(b.close()),
                            text(b.vwap()),
                            b.volume().to_string(),
                            b.count()
                        ])
                    })
                    .collect();
                (s.clone(), serde_json::Value::Array(rows))
            })
            .collect();
        let positions: Vec<serde_json::Value> = self
            .positions()
            .into_iter()
            .map(|((a, s), p)| {
                serde_json::json!([
                    a,
                    s,
                    p.net_quantity.to_string(),
                    p.avg_cost.to_string(),
                    p.realized_pnl.to_string()
                ])
            })
            .collect();
        let orders: Vec<serde_json::Value> = self
            .order_stats()
            .into_iter()
            .map(|(t, s)| serde_json::json!([t, s.orders, s.modifies, s.cancels, s.executions]))
            .collect();
        serde_json::json!({
            "events": self.events(),
            "duplicates": self.duplicates(),
            "pending_restatement": self.pending_restatement(),
            "bars_1m": bars,
            "positions": positions,
            "order_stats": orders,
        })
    }

    /// Desk exposure of the positions in the views, marked at each symbol's latest print;
    /// positions of symbols without a print are returned apart.
    pub fn exposure(&mut self, reference: &Reference) -> ExposureReport {
        let positions = self.positions();
        let last = &self.agg.last;
        desk_exposure(
            positions
                .iter()
                .map(|((a, s), p)| (a.as_str(), s.as_str(), *p)),
            |s| last.get(s).map(|(_, p)| *p),
            reference,
        )
        .unwrap_or_default()
    }

    /// The latest print's price of `symbol` (by event time, then partition and offset).
    pub fn last_price(&self, symbol: &str) -> Option<Decimal> {
        self.agg.last.get(symbol).map(|(_, p)| *p)
    }

    /// The latest print of `symbol` with its rank (event time, partition, offset).
    pub fn last_print(&self, symbol: &str) -> Option<((EventTime, i32, i64), Decimal)> {
        self.agg.last.get(symbol).copied()
    }

    /// Effective executions (after amends and cancels) with a notional (price x quantity) at
    /// or above `threshold(symbol)`, sorted by exec id.
    pub fn large_trades(&self, threshold: impl Fn(&str) -> Option<Decimal>) -> Vec<LargeTrade> {
        large_trades_of(&self.agg.positions, |_| true, threshold)
    }
}

/// The effective executions of `book`, of accounts `wanted` accepts, whose notional (price x
/// quantity) is at or above `threshold(symbol)`; sorted by exec id.
pub fn large_trades_of(
    book: &Positions,
    wanted: impl Fn(&str) -> bool,
    threshold: impl Fn(&str) -> Option<Decimal>,
) -> Vec<LargeTrade> {
    let mut out = Vec::new();
    for (account, symbol) in book.keys() {
        if !wanted(&account) {
            continue;
        }
        let Some(limit) = threshold(&symbol) else {
            continue;
        };
        for (_, exec_id, side, price, quantity) in book.effective_fills(&account, &symbol) {
            let Ok(notional) = price.mul_rounded(quantity) else {
                continue;
            };
            if notional >= limit {
                out.push(LargeTrade {
                    exec_id,
                    account: account.clone(),
                    symbol: symbol.clone(),
                    side,
                    price,
                    quantity,
                    notional,
                });
            }
        }
    }
    out.sort_by(|a, b| a.exec_id.cmp(&b.exec_id));
    out
}

/// An execution at or above its large-trade threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LargeTrade {
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
    /// Price x quantity, instrument currency.
    pub notional: Decimal,
}
