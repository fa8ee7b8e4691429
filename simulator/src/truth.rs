//! The ground-truth Parquet file: one row per logical event in every message sent (a Finnhub
//! message carries several), one row per malformed message, in the order the messages were
//! sent. Duplicated, delayed, late and malformed deliveries are marked, so tests compute the
//! expected answers without trusting the pipeline.
//!
//! Columns (nullable where an event kind lacks the field):
//! `message_seq` (send order; rows of one message share it), `topic`, `key`, `payload_hash`
//! (FNV-1a 64 of the payload bytes), `payload_len`, `kind` (`market-trade`, `order`,
//! `execution`), `event_seq` (generation order; a duplicate repeats its original's),
//! `match_id` (both executions and the print of one fill share it), `duplicate`, `malformed`,
//! `malformed_class`, `out_of_order`, `late`, `delay_us` (delivery minus event time,
//! simulated), `ts`, `delivered_at`, then the event's own fields: `trade_id`, `order_id`,
//! `exec_id`, `ref_exec_id`, `symbol`, `venue`, `account`, `trader`, `side`, `order_type`,
//! `action`, `lifecycle`, `price`, `quantity` (the volume of a print), `currency`; and
//! `payload` (the bytes, for malformed messages only).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Decimal128Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use lakehouse_lake::decimal;

use crate::market::Event;
use crate::{Delivery, Message};

/// FNV-1a, 64 bits: a stable hash of a payload.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The truth file's schema.
pub fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("message_seq", DataType::UInt64, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("payload_hash", DataType::UInt64, false),
        Field::new("payload_len", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("event_seq", DataType::UInt64, true),
        Field::new("match_id", DataType::UInt64, true),
        Field::new("duplicate", DataType::Boolean, false),
        Field::new("malformed", DataType::Boolean, false),
        s("malformed_class"),
        Field::new("out_of_order", DataType::Boolean, false),
        Field::new("late", DataType::Boolean, false),
        Field::new("delay_us", DataType::Int64, false),
        Field::new("ts", ts(), true),
        Field::new("delivered_at", ts(), false),
        s("trade_id"),
        s("order_id"),
        s("exec_id"),
        s("ref_exec_id"),
        s("symbol"),
        s("venue"),
        s("account"),
        s("trader"),
        s("side"),
        s("order_type"),
        s("action"),
        s("lifecycle"),
        Field::new("price", decimal::arrow_type(), true),
        Field::new("quantity", decimal::arrow_type(), true),
        s("currency"),
        Field::new("payload", DataType::Binary, true),
    ]))
}

struct Columns {
    message_seq: UInt64Builder,
    topic: StringBuilder,
    key: StringBuilder,
    payload_hash: UInt64Builder,
    payload_len: Int64Builder,
    kind: StringBuilder,
    event_seq: UInt64Builder,
    match_id: UInt64Builder,
    duplicate: BooleanBuilder,
    malformed: BooleanBuilder,
    malformed_class: StringBuilder,
    out_of_order: BooleanBuilder,
    late: BooleanBuilder,
    delay_us: Int64Builder,
    ts: TimestampMicrosecondBuilder,
    delivered_at: TimestampMicrosecondBuilder,
    trade_id: StringBuilder,
    order_id: StringBuilder,
    exec_id: StringBuilder,
    ref_exec_id: StringBuilder,
    symbol: StringBuilder,
    venue: StringBuilder,
    account: StringBuilder,
    trader: StringBuilder,
    side: StringBuilder,
    order_type: StringBuilder,
    action: StringBuilder,
    lifecycle: StringBuilder,
    price: Decimal128Builder,
    quantity: Decimal128Builder,
    currency: StringBuilder,
    payload: BinaryBuilder,
    rows: usize,
}

fn decimals() -> Decimal128Builder {
    Decimal128Builder::new()
        .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)
        .expect("the lake's decimal type is valid")
}

fn times() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

impl Columns {
    fn new() -> Columns {
        Columns {
            message_seq: UInt64Builder::new(),
            topic: StringBuilder::new(),
            key: StringBuilder::new(),
            payload_hash: UInt64Builder::new(),
            payload_len: Int64Builder::new(),
            kind: StringBuilder::new(),
            event_seq: UInt64Builder::new(),
            match_id: UInt64Builder::new(),
            duplicate: BooleanBuilder::new(),
            malformed: BooleanBuilder::new(),
            malformed_class: StringBuilder::new(),
            out_of_order: BooleanBuilder::new(),
            late: BooleanBuilder::new(),
            delay_us: Int64Builder::new(),
            ts: times(),
            delivered_at: times(),
            trade_id: StringBuilder::new(),
            order_id: StringBuilder::new(),
            exec_id: StringBuilder::new(),
            ref_exec_id: StringBuilder::new(),
            symbol: StringBuilder::new(),
            venue: StringBuilder::new(),
            account: StringBuilder::new(),
            trader: StringBuilder::new(),
            side: StringBuilder::new(),
            order_type: StringBuilder::new(),
            action: StringBuilder::new(),
            lifecycle: StringBuilder::new(),
            price: decimals(),
            quantity: decimals(),
            currency: StringBuilder::new(),
            payload: BinaryBuilder::new(),
            rows: 0,
        }
    }

    fn push(
        &mut self,
        seq: u64,
        topic: &str,
        m: &Message,
        hash: u64,
        event: Option<&crate::market::Generated>,
    ) {
        self.message_seq.append_value(seq);
        self.topic.append_value(topic);
        self.key.append_value(&m.key);
        self.payload_hash.append_value(hash);
        self.payload_len.append_value(m.payload.len() as i64);
        self.kind.append_value(m.stream.kind());
        self.event_seq.append_option(event.map(|g| g.seq));
        self.match_id.append_option(event.and_then(|g| g.match_id));
        self.duplicate.append_value(m.duplicate);
        self.malformed.append_value(m.malformed.is_some());
        self.malformed_class.append_option(m.malformed);
        self.out_of_order
            .append_value(m.delivery == Delivery::OutOfOrder);
        self.late.append_value(m.delivery == Delivery::Late);
        let ts = event.map(|g| g.event.ts().micros());
        self.delay_us
            .append_value(m.deliver_at - ts.unwrap_or(m.deliver_at));
        self.ts.append_option(ts);
        self.delivered_at.append_value(m.deliver_at);
        self.payload
            .append_option(m.malformed.map(|_| m.payload.as_slice()));
        let none = None::<&str>;
        let (mut trade_id, mut order_id, mut exec_id, mut ref_exec_id) = (none, none, none, none);
        let (mut symbol, mut venue, mut account, mut trader) = (none, none, none, none);
        let (mut side, mut order_type, mut action, mut lifecycle, mut currency) =
            (none, none, none, none, none);
        let (mut price, mut quantity) = (None, None);
        match event.map(|g| &g.event) {
            Some(Event::Trade(t)) => {
                trade_id = t.trade_id.as_deref();
                symbol = Some(&t.symbol);
                venue = t.venue.as_deref();
                price = Some(t.price);
                quantity = Some(t.volume);
            }
            Some(Event::Order(o)) => {
                order_id = Some(&o.order_id);
                symbol = Some(&o.symbol);
                venue = o.venue.as_deref();
                account = Some(&o.account);
                trader = Some(&o.trader);
                side = Some(o.side.as_str());
                order_type = Some(o.order_type.as_str());
                action = Some(o.action.as_str());
                price = o.price;
                quantity = Some(o.quantity);
            }
            Some(Event::Execution(e)) => {
                order_id = Some(&e.order_id);
                exec_id = Some(&e.exec_id);
                ref_exec_id = e.ref_exec_id.as_deref();
                symbol = Some(&e.symbol);
                venue = e.venue.as_deref();
                account = Some(&e.account);
                trader = Some(&e.trader);
                side = Some(e.side.as_str());
                lifecycle = Some(e.lifecycle.as_str());
                price = Some(e.price);
                quantity = Some(e.quantity);
                currency = Some(&e.currency);
            }
            None => {}
        }
        self.trade_id.append_option(trade_id);
        self.order_id.append_option(order_id);
        self.exec_id.append_option(exec_id);
        self.ref_exec_id.append_option(ref_exec_id);
        self.symbol.append_option(symbol);
        self.venue.append_option(venue);
        self.account.append_option(account);
        self.trader.append_option(trader);
        self.side.append_option(side);
        self.order_type.append_option(order_type);
        self.action.append_option(action);
        self.lifecycle.append_option(lifecycle);
        self.price.append_option(price.map(|d| d.raw()));
        self.quantity.append_option(quantity.map(|d| d.raw()));
        self.currency.append_option(currency);
        self.rows += 1;
    }

    fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.message_seq.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.payload_hash.finish()),
            Arc::new(self.payload_len.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.event_seq.finish()),
            Arc::new(self.match_id.finish()),
            Arc::new(self.duplicate.finish()),
            Arc::new(self.malformed.finish()),
            Arc::new(self.malformed_class.finish()),
            Arc::new(self.out_of_order.finish()),
            Arc::new(self.late.finish()),
            Arc::new(self.delay_us.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.delivered_at.finish()),
            Arc::new(self.trade_id.finish()),
            Arc::new(self.order_id.finish()),
            Arc::new(self.exec_id.finish()),
            Arc::new(self.ref_exec_id.finish()),
            Arc::new(self.symbol.finish()),
            Arc::new(self.venue.finish()),
            Arc::new(self.account.finish()),
            Arc::new(self.trader.finish()),
            Arc::new(self.side.finish()),
            Arc::new(self.order_type.finish()),
            Arc::new(self.action.finish()),
            Arc::new(self.lifecycle.finish()),
            Arc::new(self.price.finish()),
            Arc::new(self.quantity.finish()),
            Arc::new(self.currency.finish()),
            Arc::new(self.payload.finish()),
        ];
        RecordBatch::try_new(schema(), cols).expect("the builders follow the schema")
    }
}

/// Rows per row group (and per in-memory batch).
const BATCH_ROWS: usize = 65_536;

/// Writes the truth file. It is written to `<path>.partial` and renamed by [`Truth::finish`],
/// so an interrupted run never leaves a file that looks complete.
pub struct Truth {
    path: PathBuf,
    partial: PathBuf,
    writer: ArrowWriter<File>,
    columns: Columns,
    rows: u64,
}

/// Why the truth file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the ground truth {path}")]
pub struct TruthError {
    path: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl Truth {
    /// Starts `path` (its directory is created).
    pub fn create(path: &Path) -> Result<Truth, TruthError> {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| TruthError {
            path: path.display().to_string(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.into()))?;
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|e| err(e.into()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(BATCH_ROWS))
            .build();
        let writer =
            ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| err(e.into()))?;
        Ok(Truth {
            path: path.to_path_buf(),
            partial,
            writer,
            columns: Columns::new(),
            rows: 0,
        })
    }

    fn err(&self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> TruthError {
        TruthError {
            path: self.path.display().to_string(),
            source: e.into(),
        }
    }

    /// Records message number `seq`, sent to `topic`.
    pub fn record(&mut self, seq: u64, topic: &str, m: &Message) -> Result<(), TruthError> {
        let hash = fnv1a(&m.payload);
        if m.events.is_empty() {
            self.columns.push(seq, topic, m, hash, None);
        }
        for g in &m.events {
            self.columns.push(seq, topic, m, hash, Some(g));
        }
        if self.columns.rows >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TruthError> {
        let n = self.columns.rows;
        if n > 0 {
            let batch = self.columns.finish();
            self.writer.write(&batch).map_err(|e| self.err(e))?;
            self.rows += n as u64;
        }
        Ok(())
    }

    /// Writes the footer, syncs, and renames the file into place. Returns the row count.
    pub fn finish(mut self) -> Result<u64, TruthError> {
        self.flush()?;
        let file = self.writer.into_inner().map_err(|e| TruthError {
            path: self.path.display().to_string(),
            source: e.into(),
        })?;
        file.sync_all().map_err(|e| TruthError {
            path: self.path.display().to_string(),
            source: e.into(),
        })?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| TruthError {
            path: self.path.display().to_string(),
            source: e.into(),
        })?;
        Ok(self.rows)
    }
}
