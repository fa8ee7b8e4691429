//! `lakehouse-ingest`: Kafka to L1 Delta, exactly once.
//!
//! Present so far: [`decode`], the JSON decoders and validation of the three topics. The
//! consumer, the run loop with exactly-once commits and dead letters come with the ingest issue.
//!
//! ```
//! use lakehouse_ingest::decode::{decode, Decoded, DecodeConfig, EventKind};
//!
//! let msg = br#"{"type":"trade","data":[{"s":"AAPL","p":0.1,"v":"3","t":1704207845123,"c":["1"]}]}"#;
//! let Ok(Decoded::Trades(prints)) = decode(EventKind::MarketTrades, msg, &DecodeConfig::default()) else { panic!() };
//! assert_eq!(prints[0].price.to_string(), "0.1");
//! ```

pub mod decode;
