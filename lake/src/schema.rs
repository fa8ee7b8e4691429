//! Arrow schemas of every lake table (DESIGN section 9) and the Kafka metadata columns of L1.

use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::decimal;

/// Kafka topic the row was read from.
pub const COL_TOPIC: &str = "_topic";
/// Kafka partition of the row.
pub const COL_PARTITION: &str = "_partition";
/// Kafka offset of the row.
pub const COL_OFFSET: &str = "_offset";
/// Kafka message timestamp.
pub const COL_KAFKA_TS: &str = "_kafka_ts";
/// When ingest wrote the row.
pub const COL_INGEST_TS: &str = "_ingest_ts";
/// The event time of every event (UTC).
pub const COL_TS: &str = "ts";
/// Partition column of L1 event tables: the UTC date of the event's `ts`.
pub const COL_EVENT_DATE: &str = "event_date";
/// Partition column of L2 and L3 tables.
pub const COL_BUSINESS_DATE: &str = "business_date";

/// The Arrow type of event and processing times: `Timestamp(Microsecond, "UTC")`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
fn dec(name: &str, nullable: bool) -> Field {
    Field::new(name, decimal::arrow_type(), nullable)
}
fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}
fn date(name: &str) -> Field {
    Field::new(name, DataType::Date32, false)
}
fn i64f(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int64, nullable)
}

/// The Kafka metadata columns every L1 row keeps.
pub fn kafka_fields() -> Vec<Field> {
    vec![
        utf8(COL_TOPIC, false),
        Field::new(COL_PARTITION, DataType::Int32, false),
        i64f(COL_OFFSET, false),
        ts(COL_KAFKA_TS, true),
        ts(COL_INGEST_TS, false),
    ]
}

fn with_kafka(mut fields: Vec<Field>, partition_col: &str) -> SchemaRef {
    fields.push(date(partition_col));
    fields.extend(kafka_fields());
    Arc::new(Schema::new(fields))
}

/// `l1/market_trades`: tape prints.
pub fn market_trades() -> SchemaRef {
    with_kafka(
        vec![
            utf8("trade_id", true),
            utf8("symbol", false),
            utf8("venue", true),
            dec("price", false),
            dec("volume", false),
            ts(COL_TS, false),
            Field::new_list("conditions", Field::new("item", DataType::Utf8, true), true),
        ],
        COL_EVENT_DATE,
    )
}

/// `l1/orders`: the firm's order lifecycle events.
pub fn orders() -> SchemaRef {
    with_kafka(
        vec![
            utf8("order_id", false),
            utf8("account", false),
            utf8("trader", false),
            utf8("symbol", false),
            utf8("venue", true),
            utf8("side", false),
            utf8("order_type", false),
            dec("price", true),
            dec("quantity", false),
            utf8("action", false),
            ts(COL_TS, false),
        ],
        COL_EVENT_DATE,
    )
}

/// `l1/executions`: the firm's fills, with amends and cancels as lifecycle events.
pub fn executions() -> SchemaRef {
    with_kafka(
        vec![
            utf8("exec_id", false),
            utf8("order_id", false),
            utf8("account", false),
            utf8("trader", false),
            utf8("symbol", false),
            utf8("venue", true),
            utf8("side", false),
            dec("price", false),
            dec("quantity", false),
            utf8("currency", false),
            ts(COL_TS, false),
            utf8("lifecycle", false),
            utf8("ref_exec_id", true),
        ],
        COL_EVENT_DATE,
    )
}

/// Partition column of `l1/dead_letters`: the UTC date ingest saw the message.
pub const COL_INGEST_DATE: &str = "ingest_date";

/// `l1/dead_letters`: messages that could not be decoded or validated, with their raw bytes.
pub fn dead_letters() -> SchemaRef {
    with_kafka(
        vec![
            Field::new("key", DataType::Binary, true),
            Field::new("raw", DataType::Binary, true),
            utf8("error_class", false),
            utf8("error_message", false),
        ],
        COL_INGEST_DATE,
    )
}

/// `l1/late_events`: events that arrived after the speed layer's allowed lateness.
pub fn late_events() -> SchemaRef {
    with_kafka(
        vec![
            utf8("view", false),
            utf8("key", false),
            ts(COL_TS, false),
            ts("watermark", false),
            Field::new("raw", DataType::Binary, true),
        ],
        COL_EVENT_DATE,
    )
}

/// `l1/ref_instruments`: instrument reference data.
pub fn ref_instruments() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("symbol", false),
        utf8("isin", false),
        utf8("asset_class", false),
        utf8("currency", false),
        dec("tick_size", false),
        dec("lot_size", false),
    ]))
}

/// `l1/ref_accounts`: accounts with their desk and legal entity.
pub fn ref_accounts() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("account", false),
        utf8("desk", false),
        utf8("legal_entity", false),
    ]))
}

/// `l1/ref_fx_rates`: the rate converting one unit of `currency` to the reporting currency.
pub fn ref_fx_rates() -> SchemaRef {
    Arc::new(Schema::new(vec![
        date("date"),
        utf8("currency", false),
        dec("rate_to_reporting", false),
    ]))
}

fn by_business_date(fields: Vec<Field>) -> SchemaRef {
    let mut all = vec![date(COL_BUSINESS_DATE)];
    all.extend(fields);
    Arc::new(Schema::new(all))
}

/// `l2/executions`: effective executions (deduplicated, amends and cancels applied), enriched.
pub fn l2_executions() -> SchemaRef {
    by_business_date(vec![
        utf8("exec_id", false),
        utf8("order_id", false),
        utf8("account", false),
        utf8("desk", true),
        utf8("legal_entity", true),
        utf8("trader", false),
        utf8("symbol", false),
        utf8("isin", true),
        utf8("asset_class", true),
        utf8("venue", true),
        utf8("side", false),
        dec("price", false),
        dec("quantity", false),
        utf8("currency", false),
        ts(COL_TS, false),
        dec("notional", false),
        dec("fx_rate", true),
        dec("reporting_notional", true),
        Field::new(COL_PARTITION, DataType::Int32, false),
        i64f(COL_OFFSET, false),
    ])
}

/// `l2/orders`: the final state of each order of the date.
pub fn l2_orders() -> SchemaRef {
    by_business_date(vec![
        utf8("order_id", false),
        utf8("account", false),
        utf8("trader", false),
        utf8("symbol", false),
        utf8("venue", true),
        utf8("side", false),
        utf8("order_type", false),
        dec("price", true),
        dec("quantity", false),
        utf8("status", false),
        ts("first_ts", false),
        ts("last_ts", false),
        i64f("modify_count", false),
        i64f("cancel_count", false),
    ])
}

/// `l2/market_trades`: deduplicated tape prints of the date.
pub fn l2_market_trades() -> SchemaRef {
    by_business_date(vec![
        utf8("trade_id", true),
        utf8("symbol", false),
        utf8("venue", true),
        dec("price", false),
        dec("volume", false),
        ts(COL_TS, false),
        Field::new(COL_PARTITION, DataType::Int32, false),
        i64f(COL_OFFSET, false),
    ])
}

/// `l3/daily_bars`: one OHLC/VWAP bar per symbol and business date.
pub fn daily_bars() -> SchemaRef {
    by_business_date(vec![
        utf8("symbol", false),
        dec("open", false),
        dec("high", false),
        dec("low", false),
        dec("close", false),
        dec("vwap", false),
        dec("volume", false),
        i64f("trade_count", false),
    ])
}

/// `l3/positions`: end-of-day positions and P&L per account and symbol.
pub fn positions() -> SchemaRef {
    by_business_date(vec![
        utf8("account", false),
        utf8("symbol", false),
        dec("net_quantity", false),
        dec("avg_cost", false),
        dec("realized_pnl", false),
        dec("close_price", true),
        dec("market_value", true),
        dec("unrealized_pnl", true),
    ])
}

/// `l3/desk_exposure`: gross and net notional (market value at the close) by desk, asset
/// class and currency; in the reporting currency too, with each row's rank and share of the
/// date's reporting gross (concentration) and the desk's configured limit.
pub fn desk_exposure() -> SchemaRef {
    by_business_date(vec![
        utf8("desk", false),
        utf8("asset_class", false),
        utf8("currency", false),
        dec("gross_notional", false),
        dec("net_notional", false),
        dec("fx_rate", true),
        dec("reporting_gross_notional", true),
        dec("reporting_net_notional", true),
        i64f("concentration_rank", true),
        dec("concentration_share", true),
        Field::new("top_n", DataType::Boolean, false),
        dec("desk_gross_limit", true),
        Field::new("limit_breach", DataType::Boolean, false),
    ])
}

/// `l3/large_trades`: executions at or above the large-trade threshold.
pub fn large_trades() -> SchemaRef {
    by_business_date(vec![
        utf8("exec_id", false),
        utf8("account", false),
        utf8("desk", true),
        utf8("symbol", false),
        utf8("side", false),
        dec("quantity", false),
        dec("price", false),
        dec("notional", false),
    ])
}

/// `l3/transaction_report`: one row per effective execution, in the spirit of MiFIR RTS 22.
/// On a venue the counterparty is not known to the firm: the venue's MIC stands in for it.
pub fn transaction_report() -> SchemaRef {
    by_business_date(vec![
        utf8("exec_id", false),
        ts("trading_datetime", false),
        utf8("isin", true),
        utf8("symbol", false),
        dec("price", false),
        dec("quantity", false),
        utf8("currency", false),
        utf8("venue", false),
        utf8("buyer", false),
        utf8("seller", false),
        utf8("legal_entity", true),
        utf8("account", false),
        utf8("trader", false),
        utf8("side", false),
        dec("notional", false),
    ])
}

/// `l3/order_stats`: order flow per trader (as the speed layer's order statistics).
pub fn order_stats() -> SchemaRef {
    by_business_date(vec![
        utf8("trader", false),
        i64f("orders", false),
        i64f("modifies", false),
        i64f("cancels", false),
        i64f("executions", false),
        dec("order_to_trade", true),
    ])
}

/// `l3/reconciliation`: counts and sums of one measure through the layers, per dataset, with
/// `BREAK` and the offending ids where they do not tie out.
pub fn reconciliation() -> SchemaRef {
    by_business_date(vec![
        utf8("dataset", false),
        utf8("measure", false),
        dec("l1", true),
        dec("l2", true),
        dec("l3", true),
        utf8("status", false),
        utf8("detail", true),
    ])
}

/// `system/batch_ledger`: one row per batch job run.
pub fn batch_ledger() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("run_id", false),
        date(COL_BUSINESS_DATE),
        utf8("job", false),
        utf8("status", false),
        ts("started_at", false),
        ts("finished_at", true),
        utf8("input_versions", false),
        utf8("boundary_offsets", false),
        utf8("output_versions", false),
        i64f("rows", true),
        utf8("error", true),
    ]))
}

/// `system/speed_checkpoints`: one row per speed-layer checkpoint written.
pub fn speed_checkpoints() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("checkpoint_id", false),
        ts("written_at", false),
        utf8("state_path", false),
        i64f("state_version", false),
        utf8("offsets", false),
        ts("watermark", true),
    ]))
}

/// Partition column of `system/speed_panes`: the UTC date the pane was emitted.
pub const COL_EMITTED_DATE: &str = "emitted_date";

/// `system/speed_panes`: every pane the speed layer's live windows fired, for audit.
pub fn speed_panes() -> SchemaRef {
    Arc::new(Schema::new(vec![
        date(COL_EMITTED_DATE),
        ts("emitted_at", false),
        utf8("view", false),
        utf8("key", false),
        ts("window_start", false),
        ts("window_end", false),
        utf8("timing", false),
        i64f("pane_index", false),
        Field::new("is_final", DataType::Boolean, false),
        Field::new("retraction", DataType::Boolean, false),
        utf8("value", false),
        ts("watermark", true),
    ]))
}

/// Partition column of `system/query_audit`.
pub const COL_AUDIT_DATE: &str = "audit_date";

/// `system/query_audit`: one row per serving request, allowed or denied.
pub fn query_audit() -> SchemaRef {
    Arc::new(Schema::new(vec![
        date(COL_AUDIT_DATE),
        ts(COL_TS, false),
        utf8("principal", false),
        utf8("method", false),
        utf8("parameters", false),
        i64f("rows_returned", false),
        utf8("status", false),
        i64f("latency_us", false),
    ]))
}
