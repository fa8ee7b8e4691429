//! Positions per account and symbol by the average-cost method, over the *effective*
//! executions: the one definition the batch layer, the speed layer and the tests share.
//!
//! - **Effective executions.** A repeated `exec_id` is a duplicate delivery and is ignored.
//!   The corrections of an execution (AMEND, CANCEL, referring to it by `ref_exec_id`) apply
//!   in their own order: an AMEND replaces price and quantity, a CANCEL removes the execution
//!   for good. A correction that arrives before the execution it corrects waits for it. The
//!   result does not depend on arrival order.
//! - **Order.** Effective executions apply in event-time order, ties broken by Kafka
//!   (partition, offset) ([`Rank`]).
//! - **Average cost.** A fill that opens or adds to a position moves the average cost to the
//!   size-weighted mean (one half-to-even rounding at 8 decimals). A fill that reduces it
//!   realizes `(price - avg_cost) x quantity` for a long, `(avg_cost - price) x quantity` for
//!   a short (rounded at 8 decimals); a fill that crosses zero closes the position and opens
//!   the rest at its price.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::decimal::Decimal;
use crate::error::Result;
use crate::events::{Execution, Lifecycle, Side};
use crate::time::EventTime;

/// The order executions apply in: event time, then Kafka partition and offset.
pub type Rank = (EventTime, i32, i64);

/// A position in one symbol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Bought minus sold.
    pub net_quantity: Decimal,
    /// Average cost of the open quantity (zero when flat).
    pub avg_cost: Decimal,
    /// Realized profit and loss.
    pub realized_pnl: Decimal,
}

impl Position {
    /// Applies one fill.
    pub fn apply(&mut self, side: Side, price: Decimal, quantity: Decimal) -> Result<()> {
        let q = match side {
            Side::Buy => quantity.raw(),
            Side::Sell => -quantity.raw(),
        };
        let net = self.net_quantity.raw();
        if net == 0 || (net > 0) == (q > 0) {
            // open or add: size-weighted mean, one rounding
            let new_net = net + q;
            let wide = self.avg_cost.raw() * net.abs() + price.raw() * q.abs();
            self.avg_cost = Decimal::wide_div_rounded(wide, Decimal::from_raw(new_net.abs()))?;
            self.net_quantity = Decimal::from_raw(new_net);
            return Ok(());
        }
        // reduce, perhaps through zero
        let closed = q.abs().min(net.abs());
        let per_unit = if net > 0 {
            price.raw() - self.avg_cost.raw()
        } else {
            self.avg_cost.raw() - price.raw()
        };
        let pnl = Decimal::wide_rounded(per_unit * closed)?;
        self.realized_pnl = self.realized_pnl.checked_add(pnl)?;
        let new_net = net + q;
        self.net_quantity = Decimal::from_raw(new_net);
        if new_net == 0 {
            self.avg_cost = Decimal::ZERO;
        } else if (new_net > 0) != (net > 0) {
            self.avg_cost = price;
        }
        Ok(())
    }

    /// Net quantity x price (rounded at 8 decimals).
    pub fn market_value(&self, price: Decimal) -> Result<Decimal> {
        self.net_quantity.mul_rounded(price)
    }

    /// `(price - avg_cost) x net_quantity` (rounded at 8 decimals).
    pub fn unrealized_pnl(&self, price: Decimal) -> Result<Decimal> {
        Decimal::wide_rounded((price.raw() - self.avg_cost.raw()) * self.net_quantity.raw())
    }
}

#[derive(Clone, Debug)]
struct Correction {
    rank: Rank,
    lifecycle: Lifecycle,
    price: Decimal,
    quantity: Decimal,
}

#[derive(Clone, Debug)]
struct Fill {
    key: (String, String),
    side: Side,
    original: (Decimal, Decimal),
    /// Effective price and quantity, or none once cancelled.
    effective: Option<(Decimal, Decimal)>,
}

#[derive(Clone, Debug, Default)]
struct KeyState {
    order: BTreeSet<(Rank, String)>,
    position: Position,
    /// The rank of the last fill applied incrementally.
    last: Option<Rank>,
    dirty: bool,
}

/// Effective executions and the positions they make, per (account, symbol).
#[derive(Clone, Debug, Default)]
pub struct Positions {
    fills: HashMap<String, Fill>,
    corrections: HashMap<String, Vec<Correction>>,
    seen: HashSet<String>,
    keys: HashMap<(String, String), KeyState>,
}

impl Positions {
    /// An empty book.
    pub fn new() -> Positions {
        Positions::default()
    }

    /// Adds one execution event delivered at (`partition`, `offset`). Returns false for a
    /// duplicate delivery (an `exec_id` already seen).
    pub fn add(&mut self, e: &Execution, partition: i32, offset: i64) -> bool {
        if !self.seen.insert(e.exec_id.clone()) {
            return false;
        }
        let rank = (e.ts, partition, offset);
        match (e.lifecycle, &e.ref_exec_id) {
            (Lifecycle::New, _) | (_, None) => {
                let key = (e.account.clone(), e.symbol.clone());
                let mut fill = Fill {
                    key: key.clone(),
                    side: e.side,
                    original: (e.price, e.quantity),
                    effective: Some((e.price, e.quantity)),
                };
                if let Some(cs) = self.corrections.get(&e.exec_id) {
                    fill.effective = effective(fill.original, cs);
                }
                let state = self.keys.entry(key).or_default();
                state.order.insert((rank, e.exec_id.clone()));
                match (fill.effective, state.dirty, state.last) {
                    (Some((p, q)), false, last) if last.is_none_or(|l| rank > l) => {
                        // in order: one more fill on top
                        if state.position.apply(fill.side, p, q).is_err() {
                            state.dirty = true;
                        }
                        state.last = Some(rank);
                    }
                    (None, _, last) if last.is_none_or(|l| rank > l) => {}
                    _ => state.dirty = true,
                }
                self.fills.insert(e.exec_id.clone(), fill);
            }
            (lifecycle, Some(target)) => {
                let cs = self.corrections.entry(target.clone()).or_default();
                cs.push(Correction {
                    rank,
                    lifecycle,
                    price: e.price,
                    quantity: e.quantity,
                });
                cs.sort_by_key(|c| c.rank);
                if let Some(fill) = self.fills.get_mut(target) {
                    let now = effective(fill.original, cs);
                    if now != fill.effective {
                        fill.effective = now;
                        if let Some(state) = self.keys.get_mut(&fill.key) {
                            state.dirty = true;
                        }
                    }
                }
            }
        }
        true
    }

    /// The position of `account` in `symbol` (flat when unknown).
    pub fn position(&mut self, account: &str, symbol: &str) -> Result<Position> {
        let key = (account.to_string(), symbol.to_string());
        let Some(state) = self.keys.get_mut(&key) else {
            return Ok(Position::default());
        };
        if state.dirty {
            let mut p = Position::default();
            for (_, id) in &state.order {
                if let Some((price, qty)) = self.fills[id].effective {
                    p.apply(self.fills[id].side, price, qty)?;
                }
            }
            state.position = p;
            state.last = state.order.last().map(|(r, _)| *r);
            state.dirty = false;
        }
        Ok(state.position)
    }

    /// Every (account, symbol) with at least one execution, sorted.
    pub fn keys(&self) -> Vec<(String, String)> {
        let mut k: Vec<_> = self.keys.keys().cloned().collect();
        k.sort();
        k
    }

    /// The effective fills of a key in application order: (rank, exec_id, side, price, qty).
    pub fn effective_fills(
        &self,
        account: &str,
        symbol: &str,
    ) -> Vec<(Rank, String, Side, Decimal, Decimal)> {
        let key = (account.to_string(), symbol.to_string());
        self.keys
            .get(&key)
            .into_iter()
            .flat_map(|s| s.order.iter())
            .filter_map(|(rank, id)| {
                let f = &self.fills[id];
                f.effective.map(|(p, q)| (*rank, id.clone(), f.side, p, q))
            })
            .collect()
    }
}

/// The effective price and quantity after `corrections` (sorted by rank); none if cancelled.
fn effective(
    original: (Decimal, Decimal),
    corrections: &[Correction],
) -> Option<(Decimal, Decimal)> {
    let mut v = original;
    for c in corrections {
        match c.lifecycle {
            Lifecycle::Cancel => return None,
            Lifecycle::Amend => v = (c.price, c.quantity),
            Lifecycle::New => {}
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn average_cost_long_short_and_through_zero() {
        let mut p = Position::default();
        p.apply(Side::Buy, d("10"), d("100")).unwrap();
        p.apply(Side::Buy, d("12"), d("100")).unwrap();
        assert_eq!((p.net_quantity, p.avg_cost), (d("200"), d("11")));
        p.apply(Side::Sell, d("13"), d("150")).unwrap();
        assert_eq!(
            (p.net_quantity, p.avg_cost, p.realized_pnl),
            (d("50"), d("11"), d("300"))
        );
        // through zero: closes 50 at a loss of 2 each, opens 50 short at 9
        p.apply(Side::Sell, d("9"), d("100")).unwrap();
        assert_eq!(
            (p.net_quantity, p.avg_cost, p.realized_pnl),
            (d("-50"), d("9"), d("200"))
        );
        p.apply(Side::Buy, d("8"), d("20")).unwrap();
        assert_eq!(
            (p.net_quantity, p.avg_cost, p.realized_pnl),
            (d("-30"), d("9"), d("220"))
        );
        assert_eq!(p.unrealized_pnl(d("10")).unwrap(), d("-30"));
        assert_eq!(p.market_value(d("10")).unwrap(), d("-300"));
        p.apply(Side::Buy, d("7"), d("30")).unwrap();
        assert_eq!(
            (p.net_quantity, p.avg_cost, p.realized_pnl),
            (d("0"), d("0"), d("280"))
        );
        // a third of a cent: the mean rounds half to even once
        let mut q = Position::default();
        q.apply(Side::Buy, d("1"), d("1")).unwrap();
        q.apply(Side::Buy, d("1"), d("1")).unwrap();
        q.apply(Side::Buy, d("1.00000001"), d("1")).unwrap();
        assert_eq!(q.avg_cost, d("1"));
    }

    fn exec(id: &str, side: Side, price: &str, qty: &str, ts: i64) -> Execution {
        Execution {
            exec_id: id.into(),
            order_id: "O1".into(),
            account: "A".into(),
            trader: "T".into(),
            symbol: "S".into(),
            venue: None,
            side,
            price: d(price),
            quantity: d(qty),
            currency: "USD".into(),
            ts: EventTime::from_micros(ts),
            lifecycle: Lifecycle::New,
            ref_exec_id: None,
        }
    }

    fn correction(
        id: &str,
        of: &str,
        lifecycle: Lifecycle,
        price: &str,
        qty: &str,
        ts: i64,
    ) -> Execution {
        Execution {
            lifecycle,
            ref_exec_id: Some(of.into()),
            ..exec(id, Side::Buy, price, qty, ts)
        }
    }

    #[test]
    fn amends_cancels_duplicates_and_early_corrections() {
        let mut b = Positions::new();
        assert!(b.add(&exec("E1", Side::Buy, "10", "100", 1), 0, 1));
        assert!(
            !b.add(&exec("E1", Side::Buy, "10", "100", 1), 0, 9),
            "duplicate"
        );
        // the amend of E2 arrives before E2
        b.add(
            &correction("E3", "E2", Lifecycle::Amend, "12", "50", 5),
            0,
            2,
        );
        b.add(&exec("E2", Side::Buy, "11", "100", 2), 0, 3);
        let p = b.position("A", "S").unwrap();
        assert_eq!((p.net_quantity, p.avg_cost), (d("150"), d("10.66666667")));
        b.add(
            &correction("E4", "E1", Lifecycle::Cancel, "10", "100", 6),
            0,
            4,
        );
        let p = b.position("A", "S").unwrap();
        assert_eq!((p.net_quantity, p.avg_cost), (d("50"), d("12")));
        // an amend after the cancel changes nothing
        b.add(&correction("E5", "E1", Lifecycle::Amend, "1", "1", 7), 0, 5);
        assert_eq!(b.position("A", "S").unwrap().net_quantity, d("50"));
        assert_eq!(b.effective_fills("A", "S").len(), 1);
        assert_eq!(b.position("X", "S").unwrap(), Position::default());
    }

    #[derive(Clone, Debug)]
    enum Ev {
        New { buy: bool, ticks: i64, lots: i64 },
        Amend { of: usize, ticks: i64, lots: i64 },
        Cancel { of: usize },
        Duplicate { of: usize },
    }

    fn events() -> impl Strategy<Value = Vec<(Ev, i64)>> {
        let ev = prop_oneof![
            6 => (any::<bool>(), 1i64..2000, 1i64..50).prop_map(|(buy, ticks, lots)| Ev::New { buy, ticks, lots }),
            1 => (any::<usize>(), 1i64..2000, 1i64..50).prop_map(|(of, ticks, lots)| Ev::Amend { of, ticks, lots }),
            1 => any::<usize>().prop_map(|of| Ev::Cancel { of }),
            1 => any::<usize>().prop_map(|of| Ev::Duplicate { of }),
        ];
        proptest::collection::vec((ev, 0i64..1000), 1..60)
    }

    /// The events as executions with their offsets (offset = position in the log).
    fn materialize(evs: &[(Ev, i64)]) -> Vec<(Execution, i64)> {
        let mut out: Vec<(Execution, i64)> = Vec::new();
        let mut news: Vec<usize> = Vec::new();
        for (i, (ev, ts)) in evs.iter().enumerate() {
            let id = format!("E{i}");
            let price = |t: i64| Decimal::from_i64(t).mul_rounded(d("0.01")).unwrap();
            let e = match ev {
                Ev::New { buy, ticks, lots } => {
                    news.push(out.len());
                    let side = if *buy { Side::Buy } else { Side::Sell };
                    Execution {
                        price: price(*ticks),
                        quantity: Decimal::from_i64(*lots),
                        ..exec(&id, side, "1", "1", *ts)
                    }
                }
                Ev::Amend { of, ticks, lots } if !news.is_empty() => {
                    let target = out[news[of % news.len()]].0.exec_id.clone();
                    Execution {
                        price: price(*ticks),
                        quantity: Decimal::from_i64(*lots),
                        ..correction(&id, &target, Lifecycle::Amend, "1", "1", *ts)
                    }
                }
                Ev::Cancel { of } if !news.is_empty() => {
                    let target = out[news[of % news.len()]].0.exec_id.clone();
                    correction(&id, &target, Lifecycle::Cancel, "1", "1", *ts)
                }
                Ev::Duplicate { of } if !out.is_empty() => out[of % out.len()].0.clone(),
                _ => continue,
            };
            let offset = out.len() as i64;
            out.push((e, offset));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any arrival order gives the same positions, and they obey the cash identity:
        /// realized + unrealized = sells - buys + net x price, to within the roundings.
        #[test]
        fn order_independent_and_cash_consistent(evs in events(), seed in any::<u64>()) {
            let log = materialize(&evs);
            let mut a = Positions::new();
            for (e, off) in &log {
                a.add(e, 0, *off);
            }
            let mut shuffled = log.clone();
            // a deterministic shuffle from the seed
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            // a duplicate keeps the first delivery: give both copies the first one's offset
            let mut b = Positions::new();
            for (e, off) in &shuffled {
                let first = log.iter().find(|(x, _)| x.exec_id == e.exec_id).unwrap().1;
                let _ = off;
                b.add(e, 0, first);
            }
            let pa = a.position("A", "S").unwrap();
            prop_assert_eq!(pa, b.position("A", "S").unwrap());
            // cash identity
            let fills = a.effective_fills("A", "S");
            let mut cash: i128 = 0;
            let mut net: i128 = 0;
            for (_, _, side, p, q) in &fills {
                let sign = if *side == Side::Buy { 1 } else { -1 };
                cash -= sign * p.raw() * q.raw();
                net += sign * q.raw();
            }
            prop_assert_eq!(pa.net_quantity.raw(), net);
            let mark = d("10");
            let lhs = pa.realized_pnl.raw() * Decimal::ONE.raw()
                + pa.unrealized_pnl(mark).unwrap().raw() * Decimal::ONE.raw();
            let rhs = cash + net * mark.raw();
            // each fill rounds the mean (by half a unit, on up to the whole traded quantity
            // afterwards) or the realized amount (by half a unit)
            let traded: i128 = fills.iter().map(|f| f.4.raw()).sum::<i128>() / Decimal::ONE.raw();
            let slack = (fills.len() as i128 + 1) * Decimal::ONE.raw() * (traded + 1);
            prop_assert!((lhs - rhs).abs() <= slack, "{} vs {} (slack {})", lhs, rhs, slack);
        }
    }
}
