//! A limit order book with price-time priority.
//!
//! A taker matches against the best opposite price first and, at one price, against the
//! oldest resting order first; each fill is at the resting (maker) order's price. A limit
//! remainder rests at its price behind the orders already there; a market remainder is
//! cancelled (immediate-or-cancel). Modifying an order re-queues it (it loses its priority).

use std::collections::{BTreeMap, HashMap, VecDeque};

use lakehouse_lake::Decimal;
use lakehouse_lake::events::Side;

/// An order's id within the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(pub u64);

/// Limit (with its price) or market.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderKind {
    /// Trade at this price or better; the rest rests in the book.
    Limit(Decimal),
    /// Trade at any price; the rest is cancelled.
    Market,
}

/// One match between a taker and a resting maker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// The resting order.
    pub maker: OrderId,
    /// The incoming order.
    pub taker: OrderId,
    /// The taker's side (the maker is on the other).
    pub taker_side: Side,
    /// The maker's price.
    pub price: Decimal,
    /// Quantity traded, the same for buyer and seller.
    pub quantity: Decimal,
}

/// Why an operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookError {
    /// The id is already in use by a resting order.
    DuplicateId(OrderId),
    /// No resting order has this id.
    UnknownOrder(OrderId),
    /// Quantities and limit prices must be positive.
    NotPositive,
}

#[derive(Clone, Debug)]
struct Resting {
    id: OrderId,
    remaining: Decimal,
}

/// One side: price -> queue in arrival order.
type Levels = BTreeMap<Decimal, VecDeque<Resting>>;

/// The book of one instrument.
#[derive(Clone, Debug, Default)]
pub struct Book {
    bids: Levels,
    asks: Levels,
    /// Where each resting order is.
    index: HashMap<OrderId, (Side, Decimal)>,
}

impl Book {
    /// Highest bid.
    pub fn best_bid(&self) -> Option<Decimal> {
        self.bids.keys().next_back().copied()
    }

    /// Lowest ask.
    pub fn best_ask(&self) -> Option<Decimal> {
        self.asks.keys().next().copied()
    }

    /// True if the best bid is at or above the best ask (never after an operation).
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b >= a)
    }

    /// The quantity still resting for `id`.
    pub fn remaining(&self, id: OrderId) -> Option<Decimal> {
        let (side, price) = self.index.get(&id)?;
        self.levels(*side)
            .get(price)?
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.remaining)
    }

    /// The side and limit price of a resting order.
    pub fn resting(&self, id: OrderId) -> Option<(Side, Decimal)> {
        self.index.get(&id).copied()
    }

    /// Number of resting orders.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing rests.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn levels(&self, side: Side) -> &Levels {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn levels_mut(&mut self, side: Side) -> &mut Levels {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Matches a new order and rests a limit remainder. Returns the fills in execution order.
    pub fn submit(
        &mut self,
        id: OrderId,
        side: Side,
        kind: OrderKind,
        quantity: Decimal,
    ) -> Result<Vec<Fill>, BookError> {
        if self.index.contains_key(&id) {
            return Err(BookError::DuplicateId(id));
        }
        if !quantity.is_positive() || matches!(kind, OrderKind::Limit(p) if !p.is_positive()) {
            return Err(BookError::NotPositive);
        }
        let mut remaining = quantity;
        let mut fills = Vec::new();
        let opposite = match side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        while remaining.is_positive() {
            let best = match side {
                Side::Buy => self.best_ask(),
                Side::Sell => self.best_bid(),
            };
            let Some(price) = best else { break };
            let acceptable = match (kind, side) {
                (OrderKind::Market, _) => true,
                (OrderKind::Limit(limit), Side::Buy) => price <= limit,
                (OrderKind::Limit(limit), Side::Sell) => price >= limit,
            };
            if !acceptable {
                break;
            }
            let level = self
                .levels_mut(opposite)
                .get_mut(&price)
                .expect("best price has a level");
            let maker = level.front_mut().expect("levels are never empty");
            let quantity = remaining.min(maker.remaining);
            fills.push(Fill {
                maker: maker.id,
                taker: id,
                taker_side: side,
                price,
                quantity,
            });
            remaining = sub(remaining, quantity);
            maker.remaining = sub(maker.remaining, quantity);
            if maker.remaining.is_zero() {
                let done = maker.id;
                level.pop_front();
                if level.is_empty() {
                    self.levels_mut(opposite).remove(&price);
                }
                self.index.remove(&done);
            }
        }
        if let (OrderKind::Limit(price), true) = (kind, remaining.is_positive()) {
            self.levels_mut(side)
                .entry(price)
                .or_default()
                .push_back(Resting { id, remaining });
            self.index.insert(id, (side, price));
        }
        Ok(fills)
    }

    /// Removes a resting order; returns the quantity that was still open.
    pub fn cancel(&mut self, id: OrderId) -> Result<Decimal, BookError> {
        let (side, price) = self.index.remove(&id).ok_or(BookError::UnknownOrder(id))?;
        let levels = self.levels_mut(side);
        let level = levels.get_mut(&price).expect("indexed order has a level");
        let at = level
            .iter()
            .position(|r| r.id == id)
            .expect("indexed order is in its level");
        let removed = level.remove(at).expect("position is valid");
        if level.is_empty() {
            levels.remove(&price);
        }
        Ok(removed.remaining)
    }

    /// Changes a resting limit order's price and open quantity: it is taken out, re-matched at
    /// the new price, and any remainder rests behind the orders already at that price.
    pub fn modify(
        &mut self,
        id: OrderId,
        price: Decimal,
        quantity: Decimal,
    ) -> Result<Vec<Fill>, BookError> {
        if !quantity.is_positive() || !price.is_positive() {
            return Err(BookError::NotPositive);
        }
        let (side, _) = self.resting(id).ok_or(BookError::UnknownOrder(id))?;
        self.cancel(id)?;
        self.submit(id, side, OrderKind::Limit(price), quantity)
    }
}

fn sub(a: Decimal, b: Decimal) -> Decimal {
    a.checked_sub(b)
        .expect("quantities stay far inside Decimal's range")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn price_then_time_priority_at_maker_prices() {
        let mut b = Book::default();
        b.submit(OrderId(1), Side::Sell, OrderKind::Limit(d("10.02")), d("5"))
            .unwrap();
        b.submit(OrderId(2), Side::Sell, OrderKind::Limit(d("10.01")), d("5"))
            .unwrap();
        b.submit(OrderId(3), Side::Sell, OrderKind::Limit(d("10.01")), d("5"))
            .unwrap();
        let fills = b
            .submit(OrderId(4), Side::Buy, OrderKind::Limit(d("10.02")), d("12"))
            .unwrap();
        let got: Vec<_> = fills
            .iter()
            .map(|f| (f.maker.0, f.price, f.quantity))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, d("10.01"), d("5")),
                (3, d("10.01"), d("5")),
                (1, d("10.02"), d("2"))
            ]
        );
        assert_eq!(b.remaining(OrderId(1)), Some(d("3")));
        assert_eq!(b.remaining(OrderId(4)), None);
        assert!(!b.is_crossed());
    }

    #[test]
    fn limit_remainder_rests_market_remainder_is_cancelled() {
        let mut b = Book::default();
        b.submit(OrderId(1), Side::Buy, OrderKind::Limit(d("9.99")), d("10"))
            .unwrap();
        let f = b
            .submit(OrderId(2), Side::Sell, OrderKind::Market, d("15"))
            .unwrap();
        assert_eq!(f.len(), 1);
        assert!(b.is_empty());
        let f = b
            .submit(OrderId(3), Side::Sell, OrderKind::Limit(d("10.05")), d("7"))
            .unwrap();
        assert!(f.is_empty());
        assert_eq!(b.best_ask(), Some(d("10.05")));
    }

    #[test]
    fn modify_loses_priority_and_cancel_removes() {
        let mut b = Book::default();
        b.submit(OrderId(1), Side::Buy, OrderKind::Limit(d("10")), d("5"))
            .unwrap();
        b.submit(OrderId(2), Side::Buy, OrderKind::Limit(d("10")), d("5"))
            .unwrap();
        b.modify(OrderId(1), d("10"), d("6")).unwrap();
        let f = b
            .submit(OrderId(3), Side::Sell, OrderKind::Market, d("5"))
            .unwrap();
        assert_eq!(
            f[0].maker,
            OrderId(2),
            "the modified order went to the back"
        );
        assert_eq!(b.cancel(OrderId(1)), Ok(d("6")));
        assert_eq!(
            b.cancel(OrderId(1)),
            Err(BookError::UnknownOrder(OrderId(1)))
        );
        assert!(b.is_empty());
        assert_eq!(
            b.submit(OrderId(9), Side::Buy, OrderKind::Limit(d("0")), d("1")),
            Err(BookError::NotPositive)
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Limit { buy: bool, ticks: u32, lots: u32 },
        Market { buy: bool, lots: u32 },
        Cancel(usize),
        Modify(usize, u32, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (any::<bool>(), 90u32..110, 1u32..20).prop_map(|(buy, ticks, lots)| Op::Limit { buy, ticks, lots }),
            1 => (any::<bool>(), 1u32..30).prop_map(|(buy, lots)| Op::Market { buy, lots }),
            2 => any::<usize>().prop_map(Op::Cancel),
            1 => (any::<usize>(), 90u32..110, 1u32..20).prop_map(|(i, t, l)| Op::Modify(i, t, l)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Matching sanity over random order flow: the book is never crossed after an
        /// operation; every fill is between opposite sides at a price acceptable to both;
        /// quantity is conserved per order; a cancelled order never trades again.
        #[test]
        fn matching_sanity(ops in proptest::collection::vec(op(), 1..200)) {
            let tick = d("0.01");
            let mut b = Book::default();
            let mut next = 0u64;
            // per order: original quantity, filled, cancelled, side, limit
            let mut orders: HashMap<OrderId, (Decimal, Decimal, Decimal, Side, Option<Decimal>)> = HashMap::new();
            let mut cancelled: HashSet<OrderId> = HashSet::new();
            let mut live: Vec<OrderId> = Vec::new();
            for op in ops {
                let fills = match op {
                    Op::Limit { buy, ticks, lots } => {
                        next += 1;
                        let side = if buy { Side::Buy } else { Side::Sell };
                        let price = Decimal::from_i64(i64::from(ticks)).mul_rounded(tick).unwrap();
                        let qty = Decimal::from_i64(i64::from(lots));
                        orders.insert(OrderId(next), (qty, Decimal::ZERO, Decimal::ZERO, side, Some(price)));
                        live.push(OrderId(next));
                        b.submit(OrderId(next), side, OrderKind::Limit(price), qty).unwrap()
                    }
                    Op::Market { buy, lots } => {
                        next += 1;
                        let side = if buy { Side::Buy } else { Side::Sell };
                        let qty = Decimal::from_i64(i64::from(lots));
                        orders.insert(OrderId(next), (qty, Decimal::ZERO, Decimal::ZERO, side, None));
                        let fills = b.submit(OrderId(next), side, OrderKind::Market, qty).unwrap();
                        // the unfilled rest of a market order is cancelled
                        let filled = fills.iter().fold(Decimal::ZERO, |s, f| s.checked_add(f.quantity).unwrap());
                        orders.get_mut(&OrderId(next)).unwrap().2 = qty.checked_sub(filled).unwrap();
                        fills
                    }
                    Op::Cancel(i) if !live.is_empty() => {
                        let id = live.swap_remove(i % live.len());
                        if let Ok(rest) = b.cancel(id) {
                            let o = orders.get_mut(&id).unwrap();
                            o.2 = o.2.checked_add(rest).unwrap();
                            cancelled.insert(id);
                        }
                        Vec::new()
                    }
                    Op::Modify(i, ticks, lots) if !live.is_empty() => {
                        let id = live[i % live.len()];
                        let price = Decimal::from_i64(i64::from(ticks)).mul_rounded(tick).unwrap();
                        let qty = Decimal::from_i64(i64::from(lots));
                        match b.remaining(id) {
                            Some(open) => {
                                // the order's open quantity becomes `qty`
                                let o = orders.get_mut(&id).unwrap();
                                o.0 = o.0.checked_sub(open).unwrap().checked_add(qty).unwrap();
                                o.4 = Some(price);
                                b.modify(id, price, qty).unwrap()
                            }
                            None => {
                                prop_assert!(b.modify(id, price, qty).is_err());
                                Vec::new()
                            }
                        }
                    }
                    _ => Vec::new(),
                };
                prop_assert!(!b.is_crossed(), "crossed: bid {:?} ask {:?}", b.best_bid(), b.best_ask());
                for f in &fills {
                    prop_assert!(f.quantity.is_positive());
                    prop_assert!(!cancelled.contains(&f.maker) && !cancelled.contains(&f.taker));
                    let (maker_side, maker_limit) = {
                        let m = &orders[&f.maker];
                        (m.3, m.4)
                    };
                    prop_assert_ne!(maker_side, f.taker_side, "a fill needs a buyer and a seller");
                    prop_assert_eq!(maker_limit, Some(f.price), "fills are at the maker's price");
                    if let Some(limit) = orders[&f.taker].4 {
                        match f.taker_side {
                            Side::Buy => prop_assert!(f.price <= limit),
                            Side::Sell => prop_assert!(f.price >= limit),
                        }
                    }
                    // the buyer's and the seller's filled quantities grow by the same amount
                    for id in [f.maker, f.taker] {
                        let o = orders.get_mut(&id).unwrap();
                        o.1 = o.1.checked_add(f.quantity).unwrap();
                    }
                }
            }
            // conservation: filled + cancelled + still resting == ordered, for every order
            for (id, (qty, filled, cancelled_qty, _, _)) in &orders {
                let resting = b.remaining(*id).unwrap_or(Decimal::ZERO);
                let total = filled.checked_add(*cancelled_qty).unwrap().checked_add(resting).unwrap();
                prop_assert_eq!(total, *qty, "order {:?}", id);
            }
        }
    }
}
