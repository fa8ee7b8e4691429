//! The agent-based market: per-symbol books, maker and taker agents, a simulated clock over
//! business days, and the logical events it produces (orders, executions for both sides of
//! every match, tape prints, and later execution amends and cancels).
//!
//! Pure and deterministic: no I/O, no wall clock; one seed gives one sequence of events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{Datelike, Weekday};
use lakehouse_lake::events::{
    Execution, Lifecycle, MarketTrade, Order, OrderAction, OrderType, Side,
};
use lakehouse_lake::{Decimal, EventTime};

use crate::book::{Book, Fill, OrderId, OrderKind};
use crate::rng::Rng;
use crate::universe::Universe;

/// One logical event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A tape print.
    Trade(MarketTrade),
    /// An order lifecycle event.
    Order(Order),
    /// A fill or its correction.
    Execution(Execution),
}

impl Event {
    /// Its event time.
    pub fn ts(&self) -> EventTime {
        match self {
            Event::Trade(t) => t.ts,
            Event::Order(o) => o.ts,
            Event::Execution(e) => e.ts,
        }
    }
}

/// A logical event with what links it to others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Position in generation order (0, 1, ...).
    pub seq: u64,
    /// The match (fill) it belongs to: both executions and the print share it.
    pub match_id: Option<u64>,
    /// The market step that produced it (the prints of one step share a Finnhub message).
    pub step: u64,
    /// The event.
    pub event: Event,
}

/// Business-day clock: advances through `session` of trading time a day, then jumps to the
/// next weekday's open. Microseconds.
#[derive(Clone, Debug)]
struct Clock {
    now: i64,
    close: i64,
    session: i64,
    /// Trading time elapsed since the start (the jumps excluded).
    traded: i64,
}

const DAY_US: i64 = 86_400 * 1_000_000;

impl Clock {
    fn new(open: EventTime, session_us: i64) -> Clock {
        let mut c = Clock {
            now: open.micros(),
            close: open.micros() + session_us,
            session: session_us,
            traded: 0,
        };
        // a start on a weekend moves to Monday's open
        while is_weekend(c.now) {
            c.now += DAY_US;
            c.close += DAY_US;
        }
        c
    }

    fn advance(&mut self, dt: i64) {
        self.now += dt;
        self.traded += dt;
        if self.now >= self.close {
            let mut open = self.close - self.session + DAY_US;
            while is_weekend(open) {
                open += DAY_US;
            }
            self.now = open;
            self.close = open + self.session;
        }
    }
}

fn is_weekend(us: i64) -> bool {
    matches!(
        EventTime::from_micros(us).utc_date().weekday(),
        Weekday::Sat | Weekday::Sun
    )
}

#[derive(Clone, Debug)]
struct LiveOrder {
    agent: usize,
    symbol: usize,
    side: Side,
    /// Position in `live[symbol]`.
    pos: usize,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    at: i64,
    seq: u64,
    exec: PendingExec,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PendingExec {
    lifecycle: Lifecycle,
    exec_id: String,
    agent: usize,
    symbol: usize,
    order_id: String,
    buy: bool,
    price: Decimal,
    quantity: Decimal,
    ref_exec_id: Option<String>,
}

/// What a market needs beyond its universe.
#[derive(Clone, Debug)]
pub struct MarketParams {
    /// Seed.
    pub seed: u64,
    /// First open.
    pub start: EventTime,
    /// Trading time per day, microseconds.
    pub session_us: i64,
    /// Mean simulated time between two messages, microseconds.
    pub gap_us: f64,
    /// Fraction of executions amended later.
    pub exec_amend: f64,
    /// Fraction of executions cancelled later.
    pub exec_cancel: f64,
    /// Fraction of outsized orders.
    pub large_orders: f64,
    /// Truncate print times to milliseconds (the Finnhub shape carries epoch milliseconds).
    pub prints_in_millis: bool,
}

/// Resting orders per symbol above which agents cancel instead of adding.
const MAX_DEPTH: usize = 60;

/// The market.
pub struct Market {
    rng: Rng,
    universe: Universe,
    params: MarketParams,
    books: Vec<Book>,
    ref_ticks: Vec<i64>,
    live: Vec<Vec<u64>>,
    orders: HashMap<u64, LiveOrder>,
    corrections: BinaryHeap<Reverse<Pending>>,
    clock: Clock,
    id_prefix: String,
    next_order: u64,
    next_exec: u64,
    next_match: u64,
    next_seq: u64,
    step: u64,
}

impl Market {
    /// A market at its first open.
    pub fn new(universe: Universe, params: MarketParams) -> Market {
        let n = universe.listings.len();
        let ref_ticks = universe.listings.iter().map(|l| l.start_ticks).collect();
        Market {
            rng: Rng::new(params.seed, 3),
            clock: Clock::new(params.start, params.session_us),
            id_prefix: format!("{:x}-", params.seed),
            universe,
            params,
            books: vec![Book::default(); n],
            ref_ticks,
            live: vec![Vec::new(); n],
            orders: HashMap::new(),
            corrections: BinaryHeap::new(),
            next_order: 0,
            next_exec: 0,
            next_match: 0,
            next_seq: 0,
            step: 0,
        }
    }

    /// The universe it trades.
    pub fn universe(&self) -> &Universe {
        &self.universe
    }

    /// The simulated clock.
    pub fn now(&self) -> EventTime {
        EventTime::from_micros(self.clock.now)
    }

    /// Trading time simulated so far, microseconds.
    pub fn traded_us(&self) -> i64 {
        self.clock.traded
    }

    /// The book of the `i`-th symbol.
    pub fn book(&self, i: usize) -> &Book {
        &self.books[i]
    }

    /// Number of resting orders over every book.
    pub fn resting(&self) -> usize {
        self.orders.len()
    }

    /// One step at the current time: the corrections now due, then one agent's action with
    /// the matches it causes; then the clock moves on by one random gap per event produced.
    pub fn step(&mut self, out: &mut Vec<Generated>) {
        let before = out.len();
        self.step += 1;
        while self
            .corrections
            .peek()
            .is_some_and(|Reverse(p)| p.at <= self.clock.now)
        {
            let Reverse(p) = self.corrections.pop().expect("peeked");
            let e = self.execution(&p.exec, EventTime::from_micros(p.at));
            self.emit(out, None, Event::Execution(e));
        }
        self.act(out);
        let mut dt = 0.0;
        for _ in before..out.len().max(before + 1) {
            dt += self.rng.exp(self.params.gap_us);
        }
        let dt = (dt as i64).max(1);
        if self.clock.now + dt >= self.clock.close {
            // the session ends: corrections still pending (all due before the close) go now,
            // at their own times, rather than overnight
            while let Some(Reverse(p)) = self.corrections.pop() {
                let e = self.execution(&p.exec, EventTime::from_micros(p.at));
                self.emit(out, None, Event::Execution(e));
            }
        }
        self.clock.advance(dt);
    }

    fn emit(&mut self, out: &mut Vec<Generated>, match_id: Option<u64>, event: Event) {
        out.push(Generated {
            seq: self.next_seq,
            match_id,
            step: self.step,
            event,
        });
        self.next_seq += 1;
    }

    fn price(&self, s: usize, ticks: i64) -> Decimal {
        Decimal::from_i64(ticks)
            .mul_rounded(self.universe.listings[s].instrument.tick_size)
            .expect("prices stay far inside Decimal's range")
    }

    fn lots(&mut self, s: usize) -> Decimal {
        let mut lots = 1 + (self.rng.exp(4.0) as i64).min(200);
        if self.rng.chance(self.params.large_orders) {
            lots *= self.rng.between(20, 50);
        }
        Decimal::from_i64(lots)
            .mul_rounded(self.universe.listings[s].instrument.lot_size)
            .expect("quantities stay far inside Decimal's range")
    }

    /// A random maker (or taker) account and a random side.
    fn agent_and_side(&mut self, maker: bool) -> (usize, Side) {
        let n = if maker {
            self.universe.makers.len()
        } else {
            self.universe.takers.len()
        };
        let i = self.rng.below(n as u64) as usize;
        let agent = if maker {
            self.universe.makers[i]
        } else {
            self.universe.takers[i]
        };
        let side = if self.rng.chance(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        (agent, side)
    }

    fn act(&mut self, out: &mut Vec<Generated>) {
        let s = self.rng.weighted(&self.universe.cumulative_weight);
        // the reference price wanders a tick at a time
        if self.rng.chance(0.3) {
            let r = &mut self.ref_ticks[s];
            *r = (*r + if self.rng.chance(0.5) { 1 } else { -1 }).max(10);
        }
        let depth = self.live[s].len();
        let r = self.rng.unit();
        if depth > 0 && (depth > MAX_DEPTH || r < 0.22) {
            let id = self.live[s][self.rng.below(depth as u64) as usize];
            self.cancel(out, id);
        } else if depth > 0 && r < 0.32 {
            let id = self.live[s][self.rng.below(depth as u64) as usize];
            self.modify(out, id);
        } else if r < 0.80 {
            let (agent, side) = self.agent_and_side(true);
            let away = 1 + self.rng.exp(3.0) as i64;
            let ticks = match side {
                Side::Buy => self.ref_ticks[s] - away,
                Side::Sell => self.ref_ticks[s] + away,
            }
            .max(1);
            let quantity = self.lots(s);
            self.submit(out, agent, s, side, Some(ticks), quantity);
        } else {
            let (agent, side) = self.agent_and_side(false);
            let limit = if self.rng.chance(0.4) {
                None
            } else {
                let through = self.rng.between(0, 3);
                Some(
                    match side {
                        Side::Buy => self.ref_ticks[s] + through,
                        Side::Sell => self.ref_ticks[s] - through,
                    }
                    .max(1),
                )
            };
            let quantity = self.lots(s);
            self.submit(out, agent, s, side, limit, quantity);
        }
    }

    fn order_event(
        &self,
        (agent, s, side): (usize, usize, Side),
        id: u64,
        price: Option<Decimal>,
        quantity: Decimal,
        action: OrderAction,
    ) -> Event {
        let a = &self.universe.agents[agent];
        let l = &self.universe.listings[s];
        Event::Order(Order {
            order_id: self.order_id(id),
            account: a.account.account.clone(),
            trader: a.trader.clone(),
            symbol: l.instrument.symbol.clone(),
            venue: Some(l.venue.to_string()),
            side,
            order_type: if price.is_some() {
                OrderType::Limit
            } else {
                OrderType::Market
            },
            price,
            quantity,
            action,
            ts: self.now(),
        })
    }

    fn order_id(&self, id: u64) -> String {
        format!("O{}{id}", self.id_prefix)
    }

    fn submit(
        &mut self,
        out: &mut Vec<Generated>,
        agent: usize,
        s: usize,
        side: Side,
        limit_ticks: Option<i64>,
        quantity: Decimal,
    ) {
        self.next_order += 1;
        let id = self.next_order;
        let price = limit_ticks.map(|t| self.price(s, t));
        let ev = self.order_event((agent, s, side), id, price, quantity, OrderAction::New);
        self.emit(out, None, ev);
        let kind = price.map_or(OrderKind::Market, OrderKind::Limit);
        let fills = self.books[s]
            .submit(OrderId(id), side, kind, quantity)
            .expect("fresh ids and positive quantities");
        self.settle(out, s, id, agent, side, &fills);
    }

    fn cancel(&mut self, out: &mut Vec<Generated>, id: u64) {
        let o = self.orders[&id].clone();
        let (_, price) = self.books[o.symbol].resting(OrderId(id)).expect("live");
        let open = self.books[o.symbol]
            .cancel(OrderId(id))
            .expect("live orders rest");
        self.forget(id);
        let ev = self.order_event(
            (o.agent, o.symbol, o.side),
            id,
            Some(price),
            open,
            OrderAction::Cancel,
        );
        self.emit(out, None, ev);
    }

    fn modify(&mut self, out: &mut Vec<Generated>, id: u64) {
        let o = self.orders[&id].clone();
        let s = o.symbol;
        let (_, price) = self.books[s].resting(OrderId(id)).expect("live");
        let tick = self.universe.listings[s].instrument.tick_size;
        let ticks = price.div_rounded(tick).expect("on the tick grid").raw() / Decimal::ONE.raw();
        let new_ticks = (ticks as i64 + self.rng.between(-2, 2)).max(1);
        let new_price = self.price(s, new_ticks);
        let quantity = self.lots(s);
        let ev = self.order_event(
            (o.agent, s, o.side),
            id,
            Some(new_price),
            quantity,
            OrderAction::Modify,
        );
        self.emit(out, None, ev);
        let fills = self.books[s]
            .modify(OrderId(id), new_price, quantity)
            .expect("live order, positive values");
        self.settle(out, s, id, o.agent, o.side, &fills);
    }

    /// Emits executions and prints for `fills`, then brings the live-order index up to date.
    fn settle(
        &mut self,
        out: &mut Vec<Generated>,
        s: usize,
        taker: u64,
        taker_agent: usize,
        taker_side: Side,
        fills: &[Fill],
    ) {
        for f in fills {
            self.next_match += 1;
            let m = self.next_match;
            let maker = self.orders[&f.maker.0].clone();
            let (buyer, seller) = match taker_side {
                Side::Buy => ((taker, taker_agent), (f.maker.0, maker.agent)),
                Side::Sell => ((f.maker.0, maker.agent), (taker, taker_agent)),
            };
            for ((order, agent), buy) in [(buyer, true), (seller, false)] {
                self.next_exec += 1;
                let exec = PendingExec {
                    lifecycle: Lifecycle::New,
                    exec_id: format!("E{}{}", self.id_prefix, self.next_exec),
                    agent,
                    symbol: s,
                    order_id: self.order_id(order),
                    buy,
                    price: f.price,
                    quantity: f.quantity,
                    ref_exec_id: None,
                };
                let e = self.execution(&exec, self.now());
                self.emit(out, Some(m), Event::Execution(e));
                self.maybe_correct(exec);
            }
            let l = &self.universe.listings[s];
            let mut ts = self.clock.now;
            if self.params.prints_in_millis {
                ts -= ts.rem_euclid(1000);
            }
            let print = MarketTrade {
                trade_id: Some(format!("T{}{m}", self.id_prefix)),
                symbol: l.instrument.symbol.clone(),
                venue: Some(l.venue.to_string()),
                price: f.price,
                volume: f.quantity,
                ts: EventTime::from_micros(ts),
                conditions: vec!["@".to_string()],
            };
            self.emit(out, Some(m), Event::Trade(print));
            if self.books[s].resting(f.maker).is_none() {
                self.forget(f.maker.0);
            }
        }
        match (
            self.books[s].resting(OrderId(taker)),
            self.orders.contains_key(&taker),
        ) {
            (Some(_), false) => {
                let pos = self.live[s].len();
                self.live[s].push(taker);
                self.orders.insert(
                    taker,
                    LiveOrder {
                        agent: taker_agent,
                        symbol: s,
                        side: taker_side,
                        pos,
                    },
                );
            }
            (None, true) => self.forget(taker),
            _ => {}
        }
    }

    fn forget(&mut self, id: u64) {
        if let Some(o) = self.orders.remove(&id) {
            let list = &mut self.live[o.symbol];
            list.swap_remove(o.pos);
            if let Some(&moved) = list.get(o.pos) {
                self.orders.get_mut(&moved).expect("indexed").pos = o.pos;
            }
        }
    }

    /// Schedules an amend or a cancel of a new execution, 1 s to 2 min later.
    fn maybe_correct(&mut self, mut exec: PendingExec) {
        let r = self.rng.unit();
        exec.lifecycle = if r < self.params.exec_amend {
            Lifecycle::Amend
        } else if r < self.params.exec_amend + self.params.exec_cancel {
            Lifecycle::Cancel
        } else {
            return;
        };
        let l = &self.universe.listings[exec.symbol].instrument;
        let (tick, lot) = (l.tick_size, l.lot_size);
        exec.ref_exec_id = Some(std::mem::take(&mut exec.exec_id));
        if exec.lifecycle == Lifecycle::Amend {
            // a booking error: a tick off and a lot off, never below one of each
            let dp = self.rng.between(-1, 1);
            let dq = self.rng.between(-1, 1);
            exec.price = shift(exec.price, tick, dp);
            exec.quantity = shift(exec.quantity, lot, dq);
        }
        self.next_exec += 1;
        // within the session: a desk corrects its bookings before the close
        let at =
            (self.clock.now + self.rng.between(1_000_000, 120_000_000)).min(self.clock.close - 1);
        let seq = self.next_exec;
        exec.exec_id = format!("E{}{}", self.id_prefix, self.next_exec);
        self.corrections.push(Reverse(Pending { at, seq, exec }));
    }

    fn execution(&self, p: &PendingExec, ts: EventTime) -> Execution {
        let a = &self.universe.agents[p.agent];
        let l = &self.universe.listings[p.symbol];
        Execution {
            exec_id: p.exec_id.clone(),
            order_id: p.order_id.clone(),
            account: a.account.account.clone(),
            trader: a.trader.clone(),
            symbol: l.instrument.symbol.clone(),
            venue: Some(l.venue.to_string()),
            side: if p.buy { Side::Buy } else { Side::Sell },
            price: p.price,
            quantity: p.quantity,
            currency: l.instrument.currency.clone(),
            ts,
            lifecycle: p.lifecycle,
            ref_exec_id: p.ref_exec_id.clone(),
        }
    }
}

/// `v + steps * step`, at least one `step`.
fn shift(v: Decimal, step: Decimal, steps: i64) -> Decimal {
    let d = Decimal::from_i64(steps.abs())
        .mul_rounded(step)
        .expect("small");
    let moved = if steps < 0 {
        v.checked_sub(d)
    } else {
        v.checked_add(d)
    }
    .expect("small");
    if moved.is_positive() { moved } else { step }
}
