//! Wire encodings of the events: the JSON of DESIGN section 9 (decimals as strings, `ts` as
//! RFC 3339 with microseconds), `lakehouse.v1` Protobuf, the Finnhub trade shape, and the
//! malformed variants the fault injection sends.

use lakehouse_lake::events::{Execution, MarketTrade, Order};
use lakehouse_lake::{Decimal, EventTime};
use lakehouse_proto::prost::Message as _;
use lakehouse_proto::prost_types::Timestamp;
use lakehouse_proto::v1;
use serde::Serialize;

use crate::config::Encoding;
use crate::market::Event;

struct Ts(EventTime);

impl Serialize for Ts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[derive(Serialize)]
struct TradeJson<'a> {
    trade_id: Option<&'a str>,
    symbol: &'a str,
    venue: Option<&'a str>,
    price: Decimal,
    volume: Decimal,
    ts: Ts,
    conditions: &'a [String],
}

#[derive(Serialize)]
struct OrderJson<'a> {
    order_id: &'a str,
    account: &'a str,
    trader: &'a str,
    symbol: &'a str,
    venue: Option<&'a str>,
    side: &'a str,
    order_type: &'a str,
    price: Option<Decimal>,
    quantity: Decimal,
    action: &'a str,
    ts: Ts,
}

#[derive(Serialize)]
struct ExecutionJson<'a> {
    exec_id: &'a str,
    order_id: &'a str,
    account: &'a str,
    trader: &'a str,
    symbol: &'a str,
    venue: Option<&'a str>,
    side: &'a str,
    price: Decimal,
    quantity: Decimal,
    currency: &'a str,
    ts: Ts,
    lifecycle: &'a str,
    ref_exec_id: Option<&'a str>,
}

fn trade_json(t: &MarketTrade) -> TradeJson<'_> {
    TradeJson {
        trade_id: t.trade_id.as_deref(),
        symbol: &t.symbol,
        venue: t.venue.as_deref(),
        price: t.price,
        volume: t.volume,
        ts: Ts(t.ts),
        conditions: &t.conditions,
    }
}

fn order_json(o: &Order) -> OrderJson<'_> {
    OrderJson {
        order_id: &o.order_id,
        account: &o.account,
        trader: &o.trader,
        symbol: &o.symbol,
        venue: o.venue.as_deref(),
        side: o.side.as_str(),
        order_type: o.order_type.as_str(),
        price: o.price,
        quantity: o.quantity,
        action: o.action.as_str(),
        ts: Ts(o.ts),
    }
}

fn execution_json(e: &Execution) -> ExecutionJson<'_> {
    ExecutionJson {
        exec_id: &e.exec_id,
        order_id: &e.order_id,
        account: &e.account,
        trader: &e.trader,
        symbol: &e.symbol,
        venue: e.venue.as_deref(),
        side: e.side.as_str(),
        price: e.price,
        quantity: e.quantity,
        currency: &e.currency,
        ts: Ts(e.ts),
        lifecycle: e.lifecycle.as_str(),
        ref_exec_id: e.ref_exec_id.as_deref(),
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    serde_json::to_writer(&mut out, v).expect("serializing to memory cannot fail");
    out
}

/// One event as JSON.
pub fn json(event: &Event) -> Vec<u8> {
    match event {
        Event::Trade(t) => to_json(&trade_json(t)),
        Event::Order(o) => to_json(&order_json(o)),
        Event::Execution(e) => to_json(&execution_json(e)),
    }
}

fn timestamp(t: EventTime) -> Timestamp {
    let us = t.micros();
    Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn side(s: lakehouse_lake::events::Side) -> i32 {
    match s {
        lakehouse_lake::events::Side::Buy => v1::Side::Buy as i32,
        lakehouse_lake::events::Side::Sell => v1::Side::Sell as i32,
    }
}

fn proto_trade(t: &MarketTrade) -> v1::MarketTrade {
    v1::MarketTrade {
        trade_id: t.trade_id.clone().unwrap_or_default(),
        symbol: t.symbol.clone(),
        venue: t.venue.clone().unwrap_or_default(),
        price: t.price.to_string(),
        volume: t.volume.to_string(),
        ts: Some(timestamp(t.ts)),
        conditions: t.conditions.clone(),
    }
}

fn proto_order(o: &Order) -> v1::Order {
    use lakehouse_lake::events::{OrderAction, OrderType};
    v1::Order {
        order_id: o.order_id.clone(),
        account: o.account.clone(),
        trader: o.trader.clone(),
        symbol: o.symbol.clone(),
        venue: o.venue.clone().unwrap_or_default(),
        side: side(o.side),
        order_type: match o.order_type {
            OrderType::Limit => v1::OrderType::Limit,
            OrderType::Market => v1::OrderType::Market,
        } as i32,
        price: o.price.map(|p| p.to_string()).unwrap_or_default(),
        quantity: o.quantity.to_string(),
        action: match o.action {
            OrderAction::New => v1::OrderAction::New,
            OrderAction::Modify => v1::OrderAction::Modify,
            OrderAction::Cancel => v1::OrderAction::Cancel,
        } as i32,
        ts: Some(timestamp(o.ts)),
    }
}

fn proto_execution(e: &Execution) -> v1::Execution {
    use lakehouse_lake::events::Lifecycle;
    v1::Execution {
        exec_id: e.exec_id.clone(),
        order_id: e.order_id.clone(),
        account: e.account.clone(),
        trader: e.trader.clone(),
        symbol: e.symbol.clone(),
        venue: e.venue.clone().unwrap_or_default(),
        side: side(e.side),
        price: e.price.to_string(),
        quantity: e.quantity.to_string(),
        currency: e.currency.clone(),
        ts: Some(timestamp(e.ts)),
        lifecycle: match e.lifecycle {
            Lifecycle::New => v1::Lifecycle::New,
            Lifecycle::Amend => v1::Lifecycle::Amend,
            Lifecycle::Cancel => v1::Lifecycle::Cancel,
        } as i32,
        ref_exec_id: e.ref_exec_id.clone().unwrap_or_default(),
    }
}

/// One event as a `lakehouse.v1` Protobuf message.
pub fn protobuf(event: &Event) -> Vec<u8> {
    match event {
        Event::Trade(t) => proto_trade(t).encode_to_vec(),
        Event::Order(o) => proto_order(o).encode_to_vec(),
        Event::Execution(e) => proto_execution(e).encode_to_vec(),
    }
}

#[derive(Serialize)]
struct FinnhubPrint<'a> {
    s: &'a str,
    #[serde(serialize_with = "number")]
    p: Decimal,
    #[serde(serialize_with = "number")]
    v: Decimal,
    t: i64,
    c: &'a [String],
}

/// A decimal as a JSON number with its exact digits (as the Finnhub feed sends them).
fn number<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let text = d.to_string();
    let raw = serde_json::value::RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

#[derive(Serialize)]
struct FinnhubMessage<'a> {
    r#type: &'static str,
    data: Vec<FinnhubPrint<'a>>,
}

/// Prints in the Finnhub trade shape, many per message; `t` is epoch milliseconds.
pub fn finnhub(prints: &[&MarketTrade]) -> Vec<u8> {
    to_json(&FinnhubMessage {
        r#type: "trade",
        data: prints
            .iter()
            .map(|t| FinnhubPrint {
                s: &t.symbol,
                p: t.price,
                v: t.volume,
                t: t.ts.micros().div_euclid(1000),
                c: &t.conditions,
            })
            .collect(),
    })
}

/// The ways a malformed message is broken (the truth's `malformed_class`).
pub const MALFORMED_CLASSES: [&str; 4] =
    ["garbled", "negative-price", "missing-field", "bad-value"];

/// A malformed message modelled on `event`: variant `v` of [`MALFORMED_CLASSES`]. Every one
/// of them is refused by a validating reader.
pub fn malformed(encoding: Encoding, event: &Event, v: usize) -> Vec<u8> {
    let class = MALFORMED_CLASSES[v % MALFORMED_CLASSES.len()];
    match encoding {
        Encoding::Protobuf => malformed_protobuf(event, class),
        Encoding::Json | Encoding::Finnhub => {
            let good = match (encoding, event) {
                (Encoding::Finnhub, Event::Trade(t)) => finnhub(&[t]),
                _ => json(event),
            };
            if class == "garbled" {
                return good[..good.len() / 2].to_vec();
            }
            let mut value: serde_json::Value =
                serde_json::from_slice(&good).expect("our own JSON parses");
            let obj = match value.get_mut("data") {
                Some(data) => &mut data[0],
                None => &mut value,
            };
            let obj = obj.as_object_mut().expect("events are objects");
            let (price, symbol, other) = if obj.contains_key("s") {
                ("p", "s", ("t", serde_json::json!("soon")))
            } else if obj.contains_key("side") {
                ("price", "symbol", ("side", serde_json::json!("HOLD")))
            } else {
                ("price", "symbol", ("ts", serde_json::json!("yesterday")))
            };
            match class {
                "negative-price" => {
                    obj.insert(price.into(), serde_json::json!("-1.5"));
                }
                "missing-field" => {
                    obj.remove(symbol);
                }
                _ => {
                    obj.insert(other.0.into(), other.1);
                }
            }
            serde_json::to_vec(&value).expect("serializing to memory cannot fail")
        }
    }
}

fn malformed_protobuf(event: &Event, class: &str) -> Vec<u8> {
    if class == "garbled" {
        // field 1 with wire type 7, which does not exist: no reader accepts it
        let mut bytes = vec![0x0F];
        bytes.extend_from_slice(&protobuf(event));
        return bytes;
    }
    let bad_ts = Some(Timestamp {
        seconds: 0,
        nanos: 2_000_000_000,
    });
    // orders and executions break the same way: a negative price, no symbol, an unknown side
    macro_rules! spoil {
        ($m:expr, $other:expr) => {{
            let mut m = $m;
            match class {
                "negative-price" => m.price = "-1.5".into(),
                "missing-field" => m.symbol.clear(),
                _ => $other(&mut m),
            }
            m.encode_to_vec()
        }};
    }
    match event {
        Event::Trade(t) => spoil!(proto_trade(t), |m: &mut v1::MarketTrade| m.ts = bad_ts),
        Event::Order(o) => spoil!(proto_order(o), |m: &mut v1::Order| m.side = 9),
        Event::Execution(e) => spoil!(proto_execution(e), |m: &mut v1::Execution| m.side = 9),
    }
}
