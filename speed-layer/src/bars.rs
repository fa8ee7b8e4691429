//! The bar aggregate: open, high, low, close, VWAP, volume and count of the prints in a
//! window, exact (decimal raw units, no floating point).
//!
//! Open and close are the first and last print by event time, ties broken by (partition,
//! offset), as DESIGN section 9 defines them; so a bar does not depend on arrival order.

use lakehouse_lake::Decimal;
use serde::{Deserialize, Serialize};

use crate::window::Aggregate;

/// One print, as a bar sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Print {
    /// Event time, µs.
    pub ts: i64,
    /// Kafka partition and offset (the tie-break).
    pub partition: i32,
    /// See `partition`.
    pub offset: i64,
    /// Price.
    pub price: Decimal,
    /// Volume.
    pub volume: Decimal,
}

/// The order of prints within a bar.
type Rank = (i64, i32, i64);

/// An OHLC-VWAP bar.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bar {
    /// First print (rank, price).
    open: Option<(Rank, Decimal)>,
    /// Last print.
    close: Option<(Rank, Decimal)>,
    high: Option<Decimal>,
    low: Option<Decimal>,
    /// Sum of volumes, raw units (10^-8).
    volume: i128,
    /// Sum of price x volume, raw units squared (10^-16): exact.
    notional: i128,
    count: u64,
}

impl Bar {
    /// First price.
    pub fn open(&self) -> Option<Decimal> {
        self.open.map(|(_, p)| p)
    }
    /// Last price.
    pub fn close(&self) -> Option<Decimal> {
        self.close.map(|(_, p)| p)
    }
    /// Highest price.
    pub fn high(&self) -> Option<Decimal> {
        self.high
    }
    /// Lowest price.
    pub fn low(&self) -> Option<Decimal> {
        self.low
    }
    /// Total volume.
    pub fn volume(&self) -> Decimal {
        Decimal::from_raw(self.volume)
    }
    /// The last print: its rank (event time, partition, offset) and price.
    pub fn close_print(&self) -> Option<((lakehouse_lake::EventTime, i32, i64), Decimal)> {
        self.close
            .map(|((ts, p, o), px)| ((lakehouse_lake::EventTime::from_micros(ts), p, o), px))
    }
    /// Number of prints.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// sum(price x volume) / sum(volume), rounded half to even at 8 decimals; none without
    /// volume.
    pub fn vwap(&self) -> Option<Decimal> {
        if self.volume == 0 {
            return None;
        }
        Decimal::wide_div_rounded(self.notional, Decimal::from_raw(self.volume)).ok()
    }
}

impl Aggregate for Bar {
    type In = Print;

    fn add(&mut self, p: &Print) {
        let rank = (p.ts, p.partition, p.offset);
        if self.open.is_none_or(|(r, _)| rank < r) {
            self.open = Some((rank, p.price));
        }
        if self.close.is_none_or(|(r, _)| rank > r) {
            self.close = Some((rank, p.price));
        }
        self.high = Some(self.high.map_or(p.price, |h| h.max(p.price)));
        self.low = Some(self.low.map_or(p.price, |l| l.min(p.price)));
        self.volume += p.volume.raw();
        self.notional += p.price.raw() * p.volume.raw();
        self.count += 1;
    }

    fn merge(&mut self, o: &Self) {
        if let Some((r, p)) = o.open
            && self.open.is_none_or(|(s, _)| r < s)
        {
            self.open = Some((r, p));
        }
        if let Some((r, p)) = o.close
            && self.close.is_none_or(|(s, _)| r > s)
        {
            self.close = Some((r, p));
        }
        self.high = self.high.max(o.high);
        self.low = match (self.low, o.low) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.volume += o.volume;
        self.notional += o.notional;
        self.count += o.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts: i64, offset: i64, price: &str, volume: &str) -> Print {
        Print {
            ts,
            partition: 0,
            offset,
            price: price.parse().unwrap(),
            volume: volume.parse().unwrap(),
        }
    }

    #[test]
    fn ohlc_by_event_time_and_offset_and_exact_vwap() {
        let prints = [
            p(20, 5, "10.10", "100"),
            p(10, 7, "10.00", "50"),
            p(10, 3, "9.90", "50"),
            p(30, 1, "10.05", "0.1"),
        ];
        let mut one = Bar::default();
        prints.iter().for_each(|x| one.add(x));
        assert_eq!(one.open(), Some("9.90".parse().unwrap()), "ts 10, offset 3");
        assert_eq!(one.close(), Some("10.05".parse().unwrap()));
        assert_eq!(one.high(), Some("10.10".parse().unwrap()));
        assert_eq!(one.low(), Some("9.90".parse().unwrap()));
        assert_eq!(one.volume(), "200.1".parse().unwrap());
        // (1010 + 500 + 495 + 1.005) / 200.1 = 2006.005 / 200.1 = 10.02501249...
        assert_eq!(one.vwap(), Some("10.02501249".parse().unwrap()));
        // any split merged back gives the same bar
        let (mut a, mut b) = (Bar::default(), Bar::default());
        a.add(&prints[3]);
        a.add(&prints[0]);
        b.add(&prints[2]);
        b.add(&prints[1]);
        b.merge(&a);
        assert_eq!(b, one);
        let mut empty = Bar::default();
        empty.merge(&one);
        assert_eq!(empty, one);
        assert_eq!(Bar::default().vwap(), None);
        // checkpoints carry bars as JSON: exact, i128 sums included
        let text = serde_json::to_string(&one).unwrap();
        assert_eq!(serde_json::from_str::<Bar>(&text).unwrap(), one);
    }
}
