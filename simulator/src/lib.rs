//! `lakehouse-simulator`: a seeded market of agents trading on per-symbol limit order books.
//!
//! Present so far: [`book`], the price-time priority order book and its matching. The agents,
//! the simulated clock, Kafka output and the ground-truth file come with the simulator issue.
//!
//! ```
//! use lakehouse_lake::{events::Side, Decimal};
//! use lakehouse_simulator::book::{Book, OrderId, OrderKind};
//!
//! let d = |s: &str| s.parse::<Decimal>().unwrap();
//! let mut book = Book::default();
//! book.submit(OrderId(1), Side::Sell, OrderKind::Limit(d("10.01")), d("100")).unwrap();
//! let fills = book.submit(OrderId(2), Side::Buy, OrderKind::Market, d("40")).unwrap();
//! assert_eq!((fills[0].price, fills[0].quantity), (d("10.01"), d("40")));
//! assert_eq!(book.remaining(OrderId(1)), Some(d("60")));
//! ```

pub mod book;
