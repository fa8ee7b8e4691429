//! The events of DESIGN section 2 and the reference data, as Rust types, with builders that
//! turn them into Arrow record batches in the lake's schemas.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryArray, Date32Array, Decimal128Array, Int32Array, Int64Array, ListBuilder,
    StringArray, StringBuilder, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;

use crate::decimal::{self, Decimal};
use crate::error::{Error, Result};
use crate::schema;
use crate::time::{BusinessDate, EventTime};

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl $name {
            /// The wire text.
            pub fn as_str(self) -> &'static str { match self { $(Self::$variant => $text),+ } }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s { $($text => Ok(Self::$variant),)+ other => Err(format!(
                    concat!("invalid ", stringify!($name), " {:?}: expected one of ", $($text, " "),+), other)) }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

text_enum!(
    /// Buy or sell.
    Side { /** Buy */ Buy = "BUY", /** Sell */ Sell = "SELL" }
);
text_enum!(
    /// Order type.
    OrderType { /** Limit order */ Limit = "LIMIT", /** Market order */ Market = "MARKET" }
);
text_enum!(
    /// What an order event does.
    OrderAction { /** New order */ New = "NEW", /** Modify */ Modify = "MODIFY", /** Cancel */ Cancel = "CANCEL" }
);
text_enum!(
    /// What an execution event does.
    Lifecycle { /** A new fill */ New = "NEW", /** Replaces price and quantity of `ref_exec_id` */ Amend = "AMEND", /** Removes `ref_exec_id` */ Cancel = "CANCEL" }
);

/// Where an L1 row came from in Kafka, and when it was ingested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaMeta {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka message timestamp.
    pub kafka_ts: Option<EventTime>,
    /// Ingest time.
    pub ingest_ts: EventTime,
}

/// A tape print (`market-trades`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketTrade {
    /// Optional trade id.
    pub trade_id: Option<String>,
    /// Symbol.
    pub symbol: String,
    /// Venue (MIC).
    pub venue: Option<String>,
    /// Price.
    pub price: Decimal,
    /// Volume.
    pub volume: Decimal,
    /// Event time.
    pub ts: EventTime,
    /// Condition codes.
    pub conditions: Vec<String>,
}

/// An order event (`orders`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// Order id.
    pub order_id: String,
    /// Account.
    pub account: String,
    /// Trader.
    pub trader: String,
    /// Symbol.
    pub symbol: String,
    /// Venue.
    pub venue: Option<String>,
    /// Side.
    pub side: Side,
    /// Type.
    pub order_type: OrderType,
    /// Limit price (none for market orders).
    pub price: Option<Decimal>,
    /// Quantity.
    pub quantity: Decimal,
    /// Action.
    pub action: OrderAction,
    /// Event time.
    pub ts: EventTime,
}

/// An execution event (`executions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// Execution id.
    pub exec_id: String,
    /// Order id.
    pub order_id: String,
    /// Account.
    pub account: String,
    /// Trader.
    pub trader: String,
    /// Symbol.
    pub symbol: String,
    /// Venue.
    pub venue: Option<String>,
    /// Side.
    pub side: Side,
    /// Price.
    pub price: Decimal,
    /// Quantity.
    pub quantity: Decimal,
    /// Currency (ISO 4217).
    pub currency: String,
    /// Event time.
    pub ts: EventTime,
    /// Lifecycle.
    pub lifecycle: Lifecycle,
    /// The execution an AMEND or CANCEL corrects.
    pub ref_exec_id: Option<String>,
}

impl MarketTrade {
    /// The identity used to remove duplicate deliveries (by the batch and speed layers
    /// alike): the trade id, or, for prints without one (the Finnhub shape), the whole print.
    pub fn dedup_key(&self) -> String {
        match &self.trade_id {
            Some(id) => format!("id:{id}"),
            None => format!(
                "print:{}|{}|{}|{}|{}|{}",
                self.symbol,
                self.venue.as_deref().unwrap_or(""),
                self.ts.micros(),
                self.price,
                self.volume,
                self.conditions.join(",")
            ),
        }
    }
}

impl Order {
    /// The identity used to remove duplicate deliveries: an order event has no id of its own,
    /// so it is the whole event.
    pub fn dedup_key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.order_id,
            self.action,
            self.ts.micros(),
            self.account,
            self.trader,
            self.symbol,
            self.side,
            self.order_type,
            self.price.map(|p| p.to_string()).unwrap_or_default(),
            self.quantity
        )
    }
}

/// A message that failed decoding or validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Raw payload.
    pub raw: Option<Vec<u8>>,
    /// Error class (e.g. `json`, `schema`, `oversize`).
    pub error_class: String,
    /// Human-readable error.
    pub error_message: String,
}

/// An instrument (`instruments.csv`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Instrument {
    /// Symbol.
    pub symbol: String,
    /// ISIN.
    pub isin: String,
    /// Asset class.
    pub asset_class: String,
    /// Currency.
    pub currency: String,
    /// Price increment.
    pub tick_size: Decimal,
    /// Quantity increment.
    pub lot_size: Decimal,
}

/// An account (`accounts.csv`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Account {
    /// Account id.
    pub account: String,
    /// Desk.
    pub desk: String,
    /// Legal entity.
    pub legal_entity: String,
}

/// An FX rate (`fx_rates.csv`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct FxRate {
    /// Date the rate applies to.
    #[serde(with = "date_serde")]
    pub date: BusinessDate,
    /// Currency.
    pub currency: String,
    /// Units of reporting currency per unit of `currency`.
    pub rate_to_reporting: Decimal,
}

mod date_serde {
    use super::BusinessDate;
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(d: &BusinessDate, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BusinessDate, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn strings<'a>(it: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(it))
}
fn decimals(it: impl Iterator<Item = Option<Decimal>>) -> Result<ArrayRef> {
    let a = Decimal128Array::from_iter(it.map(|d| d.map(Decimal::raw)))
        .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)?;
    Ok(Arc::new(a))
}
fn times(it: impl Iterator<Item = Option<EventTime>>) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter(it.map(|t| t.map(EventTime::micros)))
            .with_timezone("UTC"),
    )
}
fn dates(it: impl Iterator<Item = BusinessDate>) -> ArrayRef {
    Arc::new(Date32Array::from_iter_values(
        it.map(BusinessDate::days_since_epoch),
    ))
}
fn binaries<'a>(it: impl Iterator<Item = Option<&'a [u8]>>) -> ArrayRef {
    Arc::new(BinaryArray::from_iter(it))
}

fn kafka_columns(metas: &[&KafkaMeta]) -> Vec<ArrayRef> {
    vec![
        strings(metas.iter().map(|m| Some(m.topic.as_str()))),
        Arc::new(Int32Array::from_iter_values(
            metas.iter().map(|m| m.partition),
        )),
        Arc::new(Int64Array::from_iter_values(metas.iter().map(|m| m.offset))),
        times(metas.iter().map(|m| m.kafka_ts)),
        times(metas.iter().map(|m| Some(m.ingest_ts))),
    ]
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn event_date(t: EventTime) -> BusinessDate {
    BusinessDate(t.utc_date())
}

/// `l1/market_trades` rows.
pub fn market_trades_batch(rows: &[(MarketTrade, KafkaMeta)]) -> Result<RecordBatch> {
    let mut conditions = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        true,
    )));
    for (t, _) in rows {
        for c in &t.conditions {
            conditions.values().append_value(c);
        }
        conditions.append(true);
    }
    let metas: Vec<&KafkaMeta> = rows.iter().map(|(_, m)| m).collect();
    let mut cols = vec![
        strings(rows.iter().map(|(t, _)| t.trade_id.as_deref())),
        strings(rows.iter().map(|(t, _)| Some(t.symbol.as_str()))),
        strings(rows.iter().map(|(t, _)| t.venue.as_deref())),
        decimals(rows.iter().map(|(t, _)| Some(t.price)))?,
        decimals(rows.iter().map(|(t, _)| Some(t.volume)))?,
        times(rows.iter().map(|(t, _)| Some(t.ts))),
        Arc::new(conditions.finish()),
        dates(rows.iter().map(|(t, _)| event_date(t.ts))),
    ];
    cols.extend(kafka_columns(&metas));
    batch(schema::market_trades(), cols)
}

/// `l1/orders` rows.
pub fn orders_batch(rows: &[(Order, KafkaMeta)]) -> Result<RecordBatch> {
    let metas: Vec<&KafkaMeta> = rows.iter().map(|(_, m)| m).collect();
    let mut cols = vec![
        strings(rows.iter().map(|(o, _)| Some(o.order_id.as_str()))),
        strings(rows.iter().map(|(o, _)| Some(o.account.as_str()))),
        strings(rows.iter().map(|(o, _)| Some(o.trader.as_str()))),
        strings(rows.iter().map(|(o, _)| Some(o.symbol.as_str()))),
        strings(rows.iter().map(|(o, _)| o.venue.as_deref())),
        strings(rows.iter().map(|(o, _)| Some(o.side.as_str()))),
        strings(rows.iter().map(|(o, _)| Some(o.order_type.as_str()))),
        decimals(rows.iter().map(|(o, _)| o.price))?,
        decimals(rows.iter().map(|(o, _)| Some(o.quantity)))?,
        strings(rows.iter().map(|(o, _)| Some(o.action.as_str()))),
        times(rows.iter().map(|(o, _)| Some(o.ts))),
        dates(rows.iter().map(|(o, _)| event_date(o.ts))),
    ];
    cols.extend(kafka_columns(&metas));
    batch(schema::orders(), cols)
}

/// `l1/executions` rows.
pub fn executions_batch(rows: &[(Execution, KafkaMeta)]) -> Result<RecordBatch> {
    let metas: Vec<&KafkaMeta> = rows.iter().map(|(_, m)| m).collect();
    let mut cols = vec![
        strings(rows.iter().map(|(e, _)| Some(e.exec_id.as_str()))),
        strings(rows.iter().map(|(e, _)| Some(e.order_id.as_str()))),
        strings(rows.iter().map(|(e, _)| Some(e.account.as_str()))),
        strings(rows.iter().map(|(e, _)| Some(e.trader.as_str()))),
        strings(rows.iter().map(|(e, _)| Some(e.symbol.as_str()))),
        strings(rows.iter().map(|(e, _)| e.venue.as_deref())),
        strings(rows.iter().map(|(e, _)| Some(e.side.as_str()))),
        decimals(rows.iter().map(|(e, _)| Some(e.price)))?,
        decimals(rows.iter().map(|(e, _)| Some(e.quantity)))?,
        strings(rows.iter().map(|(e, _)| Some(e.currency.as_str()))),
        times(rows.iter().map(|(e, _)| Some(e.ts))),
        strings(rows.iter().map(|(e, _)| Some(e.lifecycle.as_str()))),
        strings(rows.iter().map(|(e, _)| e.ref_exec_id.as_deref())),
        dates(rows.iter().map(|(e, _)| event_date(e.ts))),
    ];
    cols.extend(kafka_columns(&metas));
    batch(schema::executions(), cols)
}

/// `l1/dead_letters` rows, partitioned by the UTC date of `ingest_ts`.
pub fn dead_letters_batch(rows: &[(DeadLetter, KafkaMeta)]) -> Result<RecordBatch> {
    let metas: Vec<&KafkaMeta> = rows.iter().map(|(_, m)| m).collect();
    let mut cols = vec![
        binaries(rows.iter().map(|(d, _)| d.key.as_deref())),
        binaries(rows.iter().map(|(d, _)| d.raw.as_deref())),
        strings(rows.iter().map(|(d, _)| Some(d.error_class.as_str()))),
        strings(rows.iter().map(|(d, _)| Some(d.error_message.as_str()))),
        dates(rows.iter().map(|(_, m)| event_date(m.ingest_ts))),
    ];
    cols.extend(kafka_columns(&metas));
    batch(schema::dead_letters(), cols)
}

/// An event the speed layer received after its allowed lateness (`l1/late_events`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateEvent {
    /// The view it was too late for (e.g. `bars_1m`).
    pub view: String,
    /// The view's key (symbol, trader).
    pub key: String,
    /// Its event time.
    pub ts: EventTime,
    /// The view's watermark when it arrived.
    pub watermark: EventTime,
    /// The Kafka payload.
    pub raw: Option<Vec<u8>>,
}

/// `l1/late_events` rows, partitioned by the UTC date of the event.
pub fn late_events_batch(rows: &[(LateEvent, KafkaMeta)]) -> Result<RecordBatch> {
    let metas: Vec<&KafkaMeta> = rows.iter().map(|(_, m)| m).collect();
    let mut cols = vec![
        strings(rows.iter().map(|(l, _)| Some(l.view.as_str()))),
        strings(rows.iter().map(|(l, _)| Some(l.key.as_str()))),
        times(rows.iter().map(|(l, _)| Some(l.ts))),
        times(rows.iter().map(|(l, _)| Some(l.watermark))),
        binaries(rows.iter().map(|(l, _)| l.raw.as_deref())),
        dates(rows.iter().map(|(l, _)| event_date(l.ts))),
    ];
    cols.extend(kafka_columns(&metas));
    batch(schema::late_events(), cols)
}

/// `l1/ref_instruments` rows.
pub fn instruments_batch(rows: &[Instrument]) -> Result<RecordBatch> {
    batch(
        schema::ref_instruments(),
        vec![
            strings(rows.iter().map(|r| Some(r.symbol.as_str()))),
            strings(rows.iter().map(|r| Some(r.isin.as_str()))),
            strings(rows.iter().map(|r| Some(r.asset_class.as_str()))),
            strings(rows.iter().map(|r| Some(r.currency.as_str()))),
            decimals(rows.iter().map(|r| Some(r.tick_size)))?,
            decimals(rows.iter().map(|r| Some(r.lot_size)))?,
        ],
    )
}

/// `l1/ref_accounts` rows.
pub fn accounts_batch(rows: &[Account]) -> Result<RecordBatch> {
    batch(
        schema::ref_accounts(),
        vec![
            strings(rows.iter().map(|r| Some(r.account.as_str()))),
            strings(rows.iter().map(|r| Some(r.desk.as_str()))),
            strings(rows.iter().map(|r| Some(r.legal_entity.as_str()))),
        ],
    )
}

/// `l1/ref_fx_rates` rows.
pub fn fx_rates_batch(rows: &[FxRate]) -> Result<RecordBatch> {
    batch(
        schema::ref_fx_rates(),
        vec![
            dates(rows.iter().map(|r| r.date)),
            strings(rows.iter().map(|r| Some(r.currency.as_str()))),
            decimals(rows.iter().map(|r| Some(r.rate_to_reporting)))?,
        ],
    )
}

/// Reads a decimal column of a batch back into [`Decimal`]s (nulls as `None`).
pub fn decimal_column(batch: &RecordBatch, name: &str) -> Result<Vec<Option<Decimal>>> {
    let col = batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Decimal128Array>())
        .ok_or_else(|| Error::SchemaMismatch {
            table: "<record batch>".to_string(),
            detail: format!("no Decimal128 column {name:?}"),
        })?;
    Ok(col.iter().map(|v| v.map(Decimal::from_raw)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(offset: i64) -> KafkaMeta {
        KafkaMeta {
            topic: "market-trades".into(),
            partition: 2,
            offset,
            kafka_ts: None,
            ingest_ts: EventTime::from_micros(1),
        }
    }

    #[test]
    fn builders_match_the_table_schemas() {
        let t = MarketTrade {
            trade_id: None,
            symbol: "AAPL".into(),
            venue: Some("XNAS".into()),
            price: "0.1".parse().unwrap(),
            volume: "100".parse().unwrap(),
            ts: EventTime::parse_rfc3339("2024-01-02T10:00:00Z").unwrap(),
            conditions: vec!["@".into(), "T".into()],
        };
        let b = market_trades_batch(&[(t.clone(), meta(7)), (t, meta(8))]).unwrap();
        assert_eq!(b.schema(), schema::market_trades());
        assert_eq!(
            decimal_column(&b, "price").unwrap(),
            vec![Some("0.1".parse().unwrap()); 2]
        );
        let d = DeadLetter {
            key: None,
            raw: Some(b"{".to_vec()),
            error_class: "json".into(),
            error_message: "EOF".into(),
        };
        assert_eq!(
            dead_letters_batch(&[(d, meta(9))]).unwrap().schema(),
            schema::dead_letters()
        );
        let late = LateEvent {
            view: "bars_1m".into(),
            key: "AAPL".into(),
            ts: EventTime::from_micros(5),
            watermark: EventTime::from_micros(90),
            raw: None,
        };
        assert_eq!(
            late_events_batch(&[(late, meta(10))]).unwrap().schema(),
            schema::late_events()
        );
        assert!("HOLD".parse::<Side>().is_err());
        assert_eq!("SELL".parse::<Side>().unwrap(), Side::Sell);
    }
}
