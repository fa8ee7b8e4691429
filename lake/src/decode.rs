//! Decoders for the three topics, JSON (DESIGN section 9) and Protobuf (`proto/lakehouse/v1/
//! events.proto`), with one validation.
//!
//! Prices and quantities are parsed from their literal text (a JSON number or string, a
//! Protobuf string) into exact [`Decimal`]s, never through `f64`. JSON `ts` is RFC 3339 text or
//! integer epoch milliseconds. Every rejection carries an [`ErrorClass`] for the dead-letter
//! table.

use std::borrow::Cow;
use std::fmt;

use crate::events::{Execution, Lifecycle, MarketTrade, Order, OrderAction, OrderType, Side};
use crate::{Decimal, EventTime};
use serde::Deserialize;
use serde_json::value::RawValue;

/// How a topic's messages are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON (DESIGN section 9; for `market-trades` also the Finnhub shape).
    #[default]
    Json,
    /// One `lakehouse.v1` Protobuf message per Kafka message.
    Protobuf,
}

/// Which topic's shape a payload has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// `market-trades`: one print, or the Finnhub shape with many.
    MarketTrades,
    /// `orders`.
    Orders,
    /// `executions`.
    Executions,
}

/// What one message decodes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Tape prints (a Finnhub message carries several; a Finnhub `ping` none).
    Trades(Vec<MarketTrade>),
    /// One order event.
    Order(Order),
    /// One execution event.
    Execution(Execution),
}

/// Why a message was rejected, as stored in `l1/dead_letters.error_class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Larger than the configured maximum.
    Oversize,
    /// Not valid UTF-8 JSON.
    Json,
    /// Not a valid Protobuf message.
    Protobuf,
    /// Valid JSON or Protobuf, but a required field is missing or has the wrong type.
    Schema,
    /// A field has an invalid value (enum, sign, decimal places, timestamp).
    Invalid,
}

impl ErrorClass {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Oversize => "oversize",
            ErrorClass::Json => "json",
            ErrorClass::Protobuf => "protobuf",
            ErrorClass::Schema => "schema",
            ErrorClass::Invalid => "invalid",
        }
    }
}

/// A rejected message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", class.as_str())]
pub struct DecodeError {
    /// The class.
    pub class: ErrorClass,
    /// What is wrong, naming the field.
    pub message: String,
}

fn schema(message: impl fmt::Display) -> DecodeError {
    DecodeError {
        class: ErrorClass::Schema,
        message: message.to_string(),
    }
}

fn invalid(message: impl fmt::Display) -> DecodeError {
    DecodeError {
        class: ErrorClass::Invalid,
        message: message.to_string(),
    }
}

/// Decoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeConfig {
    /// Larger payloads are rejected as [`ErrorClass::Oversize`].
    pub max_message_bytes: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            max_message_bytes: 1 << 20,
        }
    }
}

/// Decodes one JSON message of `kind`.
pub fn decode(kind: EventKind, payload: &[u8], cfg: &DecodeConfig) -> Result<Decoded, DecodeError> {
    decode_as(Format::Json, kind, payload, cfg)
}

/// Decodes one message of `kind` encoded as `format`.
pub fn decode_as(
    format: Format,
    kind: EventKind,
    payload: &[u8],
    cfg: &DecodeConfig,
) -> Result<Decoded, DecodeError> {
    if payload.len() > cfg.max_message_bytes {
        return Err(DecodeError {
            class: ErrorClass::Oversize,
            message: format!(
                "{} bytes is more than the maximum of {}",
                payload.len(),
                cfg.max_message_bytes
            ),
        });
    }
    if format == Format::Protobuf {
        return proto::decode(kind, payload);
    }
    let text = std::str::from_utf8(payload).map_err(|e| DecodeError {
        class: ErrorClass::Json,
        message: format!("not UTF-8: {e}"),
    })?;
    match kind {
        EventKind::MarketTrades => decode_trades(text).map(Decoded::Trades),
        EventKind::Orders => decode_order(text).map(Decoded::Order),
        EventKind::Executions => decode_execution(text).map(Decoded::Execution),
    }
}

fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| {
        let class = if e.is_data() {
            ErrorClass::Schema
        } else {
            ErrorClass::Json
        };
        DecodeError {
            class,
            message: e.to_string(),
        }
    })
}

/// A field that may be absent or `null`.
type Raw<'a> = Option<&'a RawValue>;

fn is_null(raw: Raw<'_>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
}

fn required_text(field: &str, v: Option<String>) -> Result<String, DecodeError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(invalid(format!("`{field}` is empty"))),
        None => Err(schema(format!("missing field `{field}`"))),
    }
}

/// A decimal from a JSON number literal or a JSON string, exactly.
fn decimal(field: &str, raw: Raw<'_>) -> Result<Option<Decimal>, DecodeError> {
    if is_null(raw) {
        return Ok(None);
    }
    let text = raw.map(RawValue::get).unwrap_or_default();
    let literal = if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|e| schema(format!("`{field}`: {e}")))?
    } else if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        text.to_string()
    } else {
        return Err(schema(format!(
            "`{field}` must be a number or a numeric string, got {text}"
        )));
    };
    literal
        .parse::<Decimal>()
        .map(Some)
        .map_err(|e| invalid(format!("`{field}`: {e}")))
}

fn positive(field: &str, raw: Raw<'_>) -> Result<Decimal, DecodeError> {
    match decimal(field, raw)? {
        Some(d) if d.is_positive() => Ok(d),
        Some(d) => Err(invalid(format!("`{field}` must be positive, got {d}"))),
        None => Err(schema(format!("missing field `{field}`"))),
    }
}

/// RFC 3339 text or integer epoch milliseconds.
fn timestamp(field: &str, raw: Raw<'_>) -> Result<EventTime, DecodeError> {
    if is_null(raw) {
        return Err(schema(format!("missing field `{field}`")));
    }
    let text = raw.map(RawValue::get).unwrap_or_default();
    if text.starts_with('"') {
        let s: String =
            serde_json::from_str(text).map_err(|e| schema(format!("`{field}`: {e}")))?;
        EventTime::parse_rfc3339(&s).map_err(|e| invalid(format!("`{field}`: {e}")))
    } else {
        let ms: i64 = text.parse().map_err(|_| {
            invalid(format!(
                "`{field}` must be RFC 3339 text or integer epoch milliseconds, got {text}"
            ))
        })?;
        EventTime::from_millis(ms).map_err(|e| invalid(format!("`{field}`: {e}")))
    }
}

fn enumerated<T: std::str::FromStr<Err = String>>(
    field: &str,
    v: Option<Cow<'_, str>>,
) -> Result<T, DecodeError> {
    let v = v.ok_or_else(|| schema(format!("missing field `{field}`")))?;
    v.parse().map_err(|e| invalid(format!("`{field}`: {e}")))
}

#[derive(Deserialize)]
struct TradeJson<'a> {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(borrow)]
    data: Option<Vec<FinnhubPrint<'a>>>,
    trade_id: Option<String>,
    symbol: Option<String>,
    venue: Option<String>,
    #[serde(borrow)]
    price: Raw<'a>,
    #[serde(borrow)]
    volume: Raw<'a>,
    #[serde(borrow)]
    ts: Raw<'a>,
    conditions: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct FinnhubPrint<'a> {
    s: Option<String>,
    #[serde(borrow)]
    p: Raw<'a>,
    #[serde(borrow)]
    v: Raw<'a>,
    #[serde(borrow)]
    t: Raw<'a>,
    c: Option<Vec<String>>,
}

fn decode_trades(text: &str) -> Result<Vec<MarketTrade>, DecodeError> {
    let j: TradeJson<'_> = parse(text)?;
    match j.kind.as_deref() {
        Some("trade") => {
            let data = j.data.ok_or_else(|| schema("missing field `data`"))?;
            data.into_iter()
                .enumerate()
                .map(|(i, p)| {
                    let at = |f: &str| format!("data[{i}].{f}");
                    Ok(MarketTrade {
                        trade_id: None,
                        symbol: required_text(&at("s"), p.s)?,
                        venue: None,
                        price: positive(&at("p"), p.p)?,
                        volume: positive(&at("v"), p.v)?,
                        ts: timestamp(&at("t"), p.t)?,
                        conditions: p.c.unwrap_or_default(),
                    })
                })
                .collect()
        }
        // Finnhub keep-alives carry no prints
        Some("ping") => Ok(Vec::new()),
        Some(other) => Err(invalid(format!("unsupported message type {other:?}"))),
        None => Ok(vec![MarketTrade {
            trade_id: j.trade_id,
            symbol: required_text("symbol", j.symbol)?,
            venue: j.venue,
            price: positive("price", j.price)?,
            volume: positive("volume", j.volume)?,
            ts: timestamp("ts", j.ts)?,
            conditions: j.conditions.unwrap_or_default(),
        }]),
    }
}

#[derive(Deserialize)]
struct OrderJson<'a> {
    order_id: Option<String>,
    account: Option<String>,
    trader: Option<String>,
    symbol: Option<String>,
    venue: Option<String>,
    #[serde(borrow)]
    side: Option<Cow<'a, str>>,
    #[serde(borrow)]
    order_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    price: Raw<'a>,
    #[serde(borrow)]
    quantity: Raw<'a>,
    #[serde(borrow)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ts: Raw<'a>,
}

fn decode_order(text: &str) -> Result<Order, DecodeError> {
    let j: OrderJson<'_> = parse(text)?;
    let order_type: OrderType = enumerated("order_type", j.order_type)?;
    let price = match order_type {
        OrderType::Limit => Some(positive("price", j.price)?),
        OrderType::Market if is_null(j.price) => None,
        OrderType::Market => return Err(invalid("a MARKET order must have a null `price`")),
    };
    Ok(Order {
        order_id: required_text("order_id", j.order_id)?,
        account: required_text("account", j.account)?,
        trader: required_text("trader", j.trader)?,
        symbol: required_text("symbol", j.symbol)?,
        venue: j.venue,
        side: enumerated("side", j.side)?,
        order_type,
        price,
        quantity: positive("quantity", j.quantity)?,
        action: enumerated::<OrderAction>("action", j.action)?,
        ts: timestamp("ts", j.ts)?,
    })
}

fn currency(code: String) -> Result<String, DecodeError> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(format!(
            "`currency` must be an ISO 4217 code, got {code:?}"
        )));
    }
    Ok(code)
}

#[derive(Deserialize)]
struct ExecutionJson<'a> {
    exec_id: Option<String>,
    order_id: Option<String>,
    account: Option<String>,
    trader: Option<String>,
    symbol: Option<String>,
    venue: Option<String>,
    #[serde(borrow)]
    side: Option<Cow<'a, str>>,
    #[serde(borrow)]
    price: Raw<'a>,
    #[serde(borrow)]
    quantity: Raw<'a>,
    currency: Option<String>,
    #[serde(borrow)]
    ts: Raw<'a>,
    #[serde(borrow)]
    lifecycle: Option<Cow<'a, str>>,
    ref_exec_id: Option<String>,
}

fn decode_execution(text: &str) -> Result<Execution, DecodeError> {
    let j: ExecutionJson<'_> = parse(text)?;
    let lifecycle: Lifecycle = enumerated("lifecycle", j.lifecycle)?;
    let ref_exec_id = match lifecycle {
        Lifecycle::New => j.ref_exec_id.filter(|r| !r.is_empty()),
        Lifecycle::Amend | Lifecycle::Cancel => Some(required_text("ref_exec_id", j.ref_exec_id)?),
    };
    let currency = currency(required_text("currency", j.currency)?)?;
    Ok(Execution {
        exec_id: required_text("exec_id", j.exec_id)?,
        order_id: required_text("order_id", j.order_id)?,
        account: required_text("account", j.account)?,
        trader: required_text("trader", j.trader)?,
        symbol: required_text("symbol", j.symbol)?,
        venue: j.venue,
        side: enumerated::<Side>("side", j.side)?,
        price: positive("price", j.price)?,
        quantity: positive("quantity", j.quantity)?,
        currency,
        ts: timestamp("ts", j.ts)?,
        lifecycle,
        ref_exec_id,
    })
}

/// The Protobuf decoders: the same validation as JSON, over `lakehouse.v1` messages.
mod proto {
    use lakehouse_proto::prost::Message;
    use lakehouse_proto::prost_types::Timestamp;
    use lakehouse_proto::v1;

    use super::*;

    pub(super) fn decode(kind: EventKind, payload: &[u8]) -> Result<Decoded, DecodeError> {
        let bad = |e: lakehouse_proto::prost::DecodeError| DecodeError {
            class: ErrorClass::Protobuf,
            message: format!("not a valid Protobuf message: {e}"),
        };
        match kind {
            EventKind::MarketTrades => trade(v1::MarketTrade::decode(payload).map_err(bad)?)
                .map(|t| Decoded::Trades(vec![t])),
            EventKind::Orders => {
                order(v1::Order::decode(payload).map_err(bad)?).map(Decoded::Order)
            }
            EventKind::Executions => {
                execution(v1::Execution::decode(payload).map_err(bad)?).map(Decoded::Execution)
            }
        }
    }

    fn text(field: &str, v: String) -> Result<String, DecodeError> {
        required_text(field, (!v.is_empty()).then_some(v))
    }

    fn optional(v: String) -> Option<String> {
        (!v.is_empty()).then_some(v)
    }

    fn positive_text(field: &str, v: &str) -> Result<Decimal, DecodeError> {
        if v.is_empty() {
            return Err(schema(format!("missing field `{field}`")));
        }
        let d: Decimal = v.parse().map_err(|e| invalid(format!("`{field}`: {e}")))?;
        if !d.is_positive() {
            return Err(invalid(format!("`{field}` must be positive, got {d}")));
        }
        Ok(d)
    }

    fn time(field: &str, ts: Option<Timestamp>) -> Result<EventTime, DecodeError> {
        let ts = ts.ok_or_else(|| schema(format!("missing field `{field}`")))?;
        if !(0..1_000_000_000).contains(&ts.nanos) {
            return Err(invalid(format!(
                "`{field}`: nanos {} out of range",
                ts.nanos
            )));
        }
        ts.seconds
            .checked_mul(1_000_000)
            .and_then(|us| us.checked_add(i64::from(ts.nanos / 1000)))
            .map(EventTime::from_micros)
            .ok_or_else(|| invalid(format!("`{field}`: seconds {} out of range", ts.seconds)))
    }

    fn enumerated<T>(
        field: &str,
        raw: i32,
        map: impl Fn(i32) -> Option<T>,
    ) -> Result<T, DecodeError> {
        match raw {
            0 => Err(schema(format!("missing field `{field}`"))),
            n => map(n).ok_or_else(|| invalid(format!("`{field}`: unknown value {n}"))),
        }
    }

    fn side(raw: i32) -> Result<Side, DecodeError> {
        enumerated("side", raw, |n| match v1::Side::try_from(n).ok()? {
            v1::Side::Buy => Some(Side::Buy),
            v1::Side::Sell => Some(Side::Sell),
            v1::Side::Unspecified => None,
        })
    }

    fn trade(m: v1::MarketTrade) -> Result<MarketTrade, DecodeError> {
        Ok(MarketTrade {
            trade_id: optional(m.trade_id),
            symbol: text("symbol", m.symbol)?,
            venue: optional(m.venue),
            price: positive_text("price", &m.price)?,
            volume: positive_text("volume", &m.volume)?,
            ts: time("ts", m.ts)?,
            conditions: m.conditions,
        })
    }

    fn order(m: v1::Order) -> Result<Order, DecodeError> {
        let order_type = enumerated(
            "order_type",
            m.order_type,
            |n| match v1::OrderType::try_from(n).ok()? {
                v1::OrderType::Limit => Some(OrderType::Limit),
                v1::OrderType::Market => Some(OrderType::Market),
                v1::OrderType::Unspecified => None,
            },
        )?;
        let price = match order_type {
            OrderType::Limit => Some(positive_text("price", &m.price)?),
            OrderType::Market if m.price.is_empty() => None,
            OrderType::Market => return Err(invalid("a MARKET order must have an empty `price`")),
        };
        Ok(Order {
            order_id: text("order_id", m.order_id)?,
            account: text("account", m.account)?,
            trader: text("trader", m.trader)?,
            symbol: text("symbol", m.symbol)?,
            venue: optional(m.venue),
            side: side(m.side)?,
            order_type,
            price,
            quantity: positive_text("quantity", &m.quantity)?,
            action: enumerated("action", m.action, |n| {
                match v1::OrderAction::try_from(n).ok()? {
                    v1::OrderAction::New => Some(OrderAction::New),
                    v1::OrderAction::Modify => Some(OrderAction::Modify),
                    v1::OrderAction::Cancel => Some(OrderAction::Cancel),
                    v1::OrderAction::Unspecified => None,
                }
            })?,
            ts: time("ts", m.ts)?,
        })
    }

    fn execution(m: v1::Execution) -> Result<Execution, DecodeError> {
        let lifecycle = enumerated(
            "lifecycle",
            m.lifecycle,
            |n| match v1::Lifecycle::try_from(n).ok()? {
                v1::Lifecycle::New => Some(Lifecycle::New),
                v1::Lifecycle::Amend => Some(Lifecycle::Amend),
                v1::Lifecycle::Cancel => Some(Lifecycle::Cancel),
                v1::Lifecycle::Unspecified => None,
            },
        )?;
        let ref_exec_id = match lifecycle {
            Lifecycle::New => optional(m.ref_exec_id),
            Lifecycle::Amend | Lifecycle::Cancel => Some(text("ref_exec_id", m.ref_exec_id)?),
        };
        Ok(Execution {
            exec_id: text("exec_id", m.exec_id)?,
            order_id: text("order_id", m.order_id)?,
            account: text("account", m.account)?,
            trader: text("trader", m.trader)?,
            symbol: text("symbol", m.symbol)?,
            venue: optional(m.venue),
            side: side(m.side)?,
            price: positive_text("price", &m.price)?,
            quantity: positive_text("quantity", &m.quantity)?,
            currency: currency(text("currency", m.currency)?)?,
            ts: time("ts", m.ts)?,
            lifecycle,
            ref_exec_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(kind: EventKind, text: &str) -> Decoded {
        decode(kind, text.as_bytes(), &DecodeConfig::default()).unwrap()
    }

    fn err(kind: EventKind, text: &str) -> DecodeError {
        decode(kind, text.as_bytes(), &DecodeConfig::default()).unwrap_err()
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    const ORDER: &str = r#"{"order_id":"O1","account":"ACC-1","trader":"T1","symbol":"AAPL","venue":"XNAS",
        "side":"BUY","order_type":"LIMIT","price":"101.25","quantity":100,"action":"NEW","ts":"2024-01-02T14:30:00.000001Z"}"#;
    const EXEC: &str = r#"{"exec_id":"E2","order_id":"O1","account":"ACC-1","trader":"T1","symbol":"AAPL","venue":"XNAS",
        "side":"SELL","price":101.3,"quantity":"40","currency":"USD","ts":1704205800000,"lifecycle":"AMEND","ref_exec_id":"E1"}"#;

    #[test]
    fn plain_trade_with_numbers_and_strings() {
        let Decoded::Trades(t) = ok(
            EventKind::MarketTrades,
            r#"{"trade_id":"X1","symbol":"MSFT","venue":"XNAS","price":0.1,"volume":"2.5","ts":"2024-01-02T14:30:00Z","conditions":["@","T"],"extra":1}"#,
        ) else {
            panic!()
        };
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].price, t[0].volume), (d("0.1"), d("2.5")));
        assert_eq!(t[0].conditions, vec!["@", "T"]);
        assert_eq!(t[0].trade_id.as_deref(), Some("X1"));
    }

    #[test]
    fn finnhub_shape_carries_many_prints_and_pings_none() {
        let msg = r#"{"type":"trade","data":[
            {"s":"BINANCE:BTCUSDT","p":7296.89,"v":0.011467,"t":1575526691134,"c":["1"]},
            {"s":"AAPL","p":"0.1","v":100,"t":1575526691135}]}"#;
        let Decoded::Trades(t) = ok(EventKind::MarketTrades, msg) else {
            panic!()
        };
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].price, d("7296.89"));
        assert_eq!(t[0].volume, d("0.011467"));
        assert_eq!(t[0].ts, EventTime::from_millis(1_575_526_691_134).unwrap());
        assert_eq!(t[1].conditions, Vec::<String>::new());
        assert_eq!(
            ok(EventKind::MarketTrades, r#"{"type":"ping"}"#),
            Decoded::Trades(vec![])
        );
        let e = err(
            EventKind::MarketTrades,
            r#"{"type":"trade","data":[{"s":"A","p":-1,"v":1,"t":1}]}"#,
        );
        assert_eq!(e.class, ErrorClass::Invalid);
        assert!(e.message.contains("data[0].p"), "{e}");
    }

    #[test]
    fn order_and_execution_decode_exactly() {
        let Decoded::Order(o) = ok(EventKind::Orders, ORDER) else {
            panic!()
        };
        assert_eq!(
            (o.side, o.order_type, o.action),
            (Side::Buy, OrderType::Limit, OrderAction::New)
        );
        assert_eq!((o.price, o.quantity), (Some(d("101.25")), d("100")));
        assert_eq!(o.ts.micros() % 1_000_000, 1);
        let market = ORDER.replace(r#""LIMIT","price":"101.25""#, r#""MARKET","price":null"#);
        let Decoded::Order(m) = ok(EventKind::Orders, &market) else {
            panic!()
        };
        assert_eq!(m.price, None);

        let Decoded::Execution(e) = ok(EventKind::Executions, EXEC) else {
            panic!()
        };
        assert_eq!(
            (e.lifecycle, e.ref_exec_id.as_deref()),
            (Lifecycle::Amend, Some("E1"))
        );
        assert_eq!((e.price, e.quantity), (d("101.3"), d("40")));
    }

    #[test]
    fn every_rejection_is_classified_and_names_the_field() {
        use ErrorClass::*;
        let cases: Vec<(EventKind, String, ErrorClass, &str)> = vec![
            (EventKind::Orders, "{not json".into(), Json, ""),
            (EventKind::Orders, "[1,2]".into(), Schema, ""),
            (
                EventKind::Orders,
                ORDER.replace(r#""side":"BUY","#, ""),
                Schema,
                "side",
            ),
            (
                EventKind::Orders,
                ORDER.replace("BUY", "HOLD"),
                Invalid,
                "side",
            ),
            (
                EventKind::Orders,
                ORDER.replace(r#""NEW""#, r#""AMEND""#),
                Invalid,
                "action",
            ),
            (
                EventKind::Orders,
                ORDER.replace(r#""101.25""#, "0"),
                Invalid,
                "price",
            ),
            (
                EventKind::Orders,
                ORDER.replace(r#""101.25""#, r#""1.123456789""#),
                Invalid,
                "price",
            ),
            (
                EventKind::Orders,
                ORDER.replace(r#""101.25""#, "true"),
                Schema,
                "price",
            ),
            (
                EventKind::Orders,
                ORDER.replace(r#""LIMIT""#, r#""MARKET""#),
                Invalid,
                "price",
            ),
            (
                EventKind::Orders,
                ORDER.replace(r#""quantity":100"#, r#""quantity":-5"#),
                Invalid,
                "quantity",
            ),
            (
                EventKind::Orders,
                ORDER.replace("2024-01-02T14:30:00.000001Z", "yesterday"),
                Invalid,
                "ts",
            ),
            (
                EventKind::Orders,
                ORDER.replace(r#""ACC-1""#, r#""  ""#),
                Invalid,
                "account",
            ),
            (
                EventKind::Executions,
                EXEC.replace(r#","ref_exec_id":"E1""#, ""),
                Schema,
                "ref_exec_id",
            ),
            (
                EventKind::Executions,
                EXEC.replace("USD", "usd"),
                Invalid,
                "currency",
            ),
            (
                EventKind::Executions,
                EXEC.replace("1704205800000", "1704205800000.5"),
                Invalid,
                "ts",
            ),
            (
                EventKind::MarketTrades,
                r#"{"type":"news"}"#.into(),
                Invalid,
                "news",
            ),
        ];
        for (kind, text, class, field) in cases {
            let e = err(kind, &text);
            assert_eq!(e.class, class, "{text} -> {e}");
            assert!(e.message.contains(field), "{text} -> {e}");
        }
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100));
        let e = decode(
            EventKind::Orders,
            big.as_bytes(),
            &DecodeConfig {
                max_message_bytes: 64,
            },
        )
        .unwrap_err();
        assert_eq!(e.class, Oversize);
        assert_eq!(err(EventKind::Orders, "\u{0}\u{ff}").class, Json);
        assert_eq!(
            decode(EventKind::Orders, &[0xff, 0xfe], &DecodeConfig::default())
                .unwrap_err()
                .class,
            Json
        );
    }

    #[test]
    fn tenths_from_json_sum_exactly() {
        let mut sum = Decimal::ZERO;
        for i in 0..10_000 {
            let msg = format!(r#"{{"symbol":"S","price":0.1,"volume":1,"ts":{i}}}"#);
            let Decoded::Trades(t) = ok(EventKind::MarketTrades, &msg) else {
                panic!()
            };
            sum = sum.checked_add(t[0].price).unwrap();
        }
        assert_eq!(sum, d("1000"));
    }

    #[test]
    fn protobuf_decodes_exactly_and_validates_like_json() {
        use lakehouse_proto::prost::Message;
        use lakehouse_proto::prost_types::Timestamp;
        use lakehouse_proto::v1;
        let pb = |kind, bytes: Vec<u8>| {
            decode_as(Format::Protobuf, kind, &bytes, &DecodeConfig::default())
        };
        let exec = v1::Execution {
            exec_id: "E1".into(),
            order_id: "O1".into(),
            account: "ACC-1".into(),
            trader: "T1".into(),
            symbol: "AAPL".into(),
            side: v1::Side::Sell as i32,
            price: "0.1".into(),
            quantity: "40".into(),
            currency: "USD".into(),
            ts: Some(Timestamp {
                seconds: 1_704_205_800,
                nanos: 1_999,
            }),
            lifecycle: v1::Lifecycle::New as i32,
            ..Default::default()
        };
        let Decoded::Execution(e) = pb(EventKind::Executions, exec.encode_to_vec()).unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.price, e.quantity, e.side),
            (d("0.1"), d("40"), Side::Sell)
        );
        assert_eq!(e.ts, EventTime::from_micros(1_704_205_800_000_001));
        assert_eq!(e.venue, None);
        let amend_without_ref = v1::Execution {
            lifecycle: v1::Lifecycle::Amend as i32,
            ..exec.clone()
        };
        let err = pb(EventKind::Executions, amend_without_ref.encode_to_vec()).unwrap_err();
        assert_eq!(err.class, ErrorClass::Schema, "{err}");
        let no_side = v1::Execution {
            side: 0,
            ..exec.clone()
        };
        assert_eq!(
            pb(EventKind::Executions, no_side.encode_to_vec())
                .unwrap_err()
                .class,
            ErrorClass::Schema
        );
        let bad_side = v1::Execution {
            side: 9,
            ..exec.clone()
        };
        assert_eq!(
            pb(EventKind::Executions, bad_side.encode_to_vec())
                .unwrap_err()
                .class,
            ErrorClass::Invalid
        );
        let negative = v1::Execution {
            price: "-0.1".into(),
            ..exec
        };
        assert_eq!(
            pb(EventKind::Executions, negative.encode_to_vec())
                .unwrap_err()
                .class,
            ErrorClass::Invalid
        );
        let market = v1::Order {
            order_id: "O1".into(),
            account: "A".into(),
            trader: "T".into(),
            symbol: "S".into(),
            side: v1::Side::Buy as i32,
            order_type: v1::OrderType::Market as i32,
            quantity: "5".into(),
            action: v1::OrderAction::Cancel as i32,
            ts: Some(Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        };
        let Decoded::Order(o) = pb(EventKind::Orders, market.encode_to_vec()).unwrap() else {
            panic!()
        };
        assert_eq!((o.price, o.action), (None, OrderAction::Cancel));
        assert_eq!(
            pb(EventKind::MarketTrades, vec![0xff, 0xff, 0xff])
                .unwrap_err()
                .class,
            ErrorClass::Protobuf
        );
    }

    proptest! {
        /// Whatever the bytes, decoding returns a value or a classified error; it never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for kind in [EventKind::MarketTrades, EventKind::Orders, EventKind::Executions] {
                let _ = decode(kind, &bytes, &DecodeConfig::default());
            }
        }

        /// A price written as a number or as a string decodes to the same exact decimal.
        #[test]
        fn number_and_string_literals_agree(raw in 1i64..10_000_000_000, scale in 0u32..=8) {
            let text = Decimal::from_raw(i128::from(raw) * 10i128.pow(8 - scale)).to_string();
            let as_num = format!(r#"{{"symbol":"S","price":{text},"volume":1,"ts":0}}"#);
            let as_str = format!(r#"{{"symbol":"S","price":"{text}","volume":1,"ts":0}}"#);
            prop_assert_eq!(ok(EventKind::MarketTrades, &as_num), ok(EventKind::MarketTrades, &as_str));
        }
    }
}
