//! The catalog: every table of the lake, where it lives under the root, its schema,
//! partitioning, write mode and Delta properties.

use std::collections::HashMap;
use std::fmt;

use deltalake::arrow::datatypes::SchemaRef;

use crate::schema;

/// The lake's layers (DESIGN section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Raw events, append-only.
    L1,
    /// Clean, deduplicated, enriched.
    L2,
    /// Reports.
    L3,
    /// Ledger, checkpoints, audit.
    System,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::L1 => "l1",
            Layer::L2 => "l2",
            Layer::L3 => "l3",
            Layer::System => "system",
        })
    }
}

/// How a table is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Rows are only ever appended (`delta.appendOnly=true`); never vacuumed inside retention.
    AppendOnly,
    /// One partition (business date) is replaced atomically per run.
    ReplacePartition,
    /// The whole table is replaced atomically per load (reference data).
    Replace,
}

/// Seven years, the default retention of L1 and system tables.
pub const SEVEN_YEARS: &str = "interval 2557 days";
/// [`SEVEN_YEARS`] as a duration: append-only tables are never vacuumed inside it.
pub const APPEND_ONLY_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(2557 * 86_400);

/// A table of the lake.
#[derive(Clone, Debug)]
pub struct TableDef {
    /// Path under the lake root, e.g. `l1/market_trades`.
    pub name: &'static str,
    /// The layer.
    pub layer: Layer,
    /// Arrow schema of the rows.
    pub schema: SchemaRef,
    /// Partition columns.
    pub partition_by: &'static [&'static str],
    /// How it is written.
    pub mode: WriteMode,
    /// One line for `table list`.
    pub description: &'static str,
}

impl TableDef {
    /// Delta table properties. Append-only tables keep their log and removed files for seven
    /// years, and no table sets `delta.setTransactionRetentionDuration`, so the `txn` records
    /// that carry ingest offsets never expire.
    pub fn properties(&self) -> HashMap<String, String> {
        let mut p = HashMap::new();
        match self.mode {
            WriteMode::AppendOnly => {
                p.insert("delta.appendOnly".into(), "true".into());
                p.insert("delta.logRetentionDuration".into(), SEVEN_YEARS.into());
                p.insert(
                    "delta.deletedFileRetentionDuration".into(),
                    SEVEN_YEARS.into(),
                );
            }
            WriteMode::ReplacePartition | WriteMode::Replace => {
                p.insert(
                    "delta.logRetentionDuration".into(),
                    "interval 30 days".into(),
                );
                p.insert(
                    "delta.deletedFileRetentionDuration".into(),
                    "interval 7 days".into(),
                );
            }
        }
        p
    }
}

/// Table names, as paths under the lake root (the public contract of DESIGN section 9).
pub mod names {
    /// Tape prints.
    pub const MARKET_TRADES: &str = "l1/market_trades";
    /// Order events.
    pub const ORDERS: &str = "l1/orders";
    /// Execution events.
    pub const EXECUTIONS: &str = "l1/executions";
    /// Undecodable or invalid messages.
    pub const DEAD_LETTERS: &str = "l1/dead_letters";
    /// Events beyond the speed layer's lateness.
    pub const LATE_EVENTS: &str = "l1/late_events";
    /// Instruments.
    pub const REF_INSTRUMENTS: &str = "l1/ref_instruments";
    /// Accounts.
    pub const REF_ACCOUNTS: &str = "l1/ref_accounts";
    /// FX rates.
    pub const REF_FX_RATES: &str = "l1/ref_fx_rates";
    /// Clean executions.
    pub const L2_EXECUTIONS: &str = "l2/executions";
    /// Final order states.
    pub const L2_ORDERS: &str = "l2/orders";
    /// Clean tape.
    pub const L2_MARKET_TRADES: &str = "l2/market_trades";
    /// Daily bars.
    pub const DAILY_BARS: &str = "l3/daily_bars";
    /// Positions and P&L.
    pub const POSITIONS: &str = "l3/positions";
    /// Desk exposure.
    pub const DESK_EXPOSURE: &str = "l3/desk_exposure";
    /// Large trades.
    pub const LARGE_TRADES: &str = "l3/large_trades";
    /// MiFIR-style transaction report.
    pub const TRANSACTION_REPORT: &str = "l3/transaction_report";
    /// Order statistics per trader.
    pub const ORDER_STATS: &str = "l3/order_stats";
    /// Reconciliation through the layers.
    pub const RECONCILIATION: &str = "l3/reconciliation";
    /// Batch run ledger.
    pub const BATCH_LEDGER: &str = "system/batch_ledger";
    /// Speed-layer checkpoints.
    pub const SPEED_CHECKPOINTS: &str = "system/speed_checkpoints";
    /// Panes the speed layer fired.
    pub const SPEED_PANES: &str = "system/speed_panes";
    /// Query audit.
    pub const QUERY_AUDIT: &str = "system/query_audit";
}

const EVENT_DATE: &[&str] = &[schema::COL_EVENT_DATE];
const BUSINESS_DATE: &[&str] = &[schema::COL_BUSINESS_DATE];

/// Every table of the lake, in listing order.
pub fn tables() -> Vec<TableDef> {
    use Layer::*;
    use WriteMode::*;
    let def = |name, layer, schema, partition_by, mode, description| TableDef {
        name,
        layer,
        schema,
        partition_by,
        mode,
        description,
    };
    vec![
        def(
            names::MARKET_TRADES,
            L1,
            schema::market_trades(),
            EVENT_DATE,
            AppendOnly,
            "tape prints as ingested from Kafka",
        ),
        def(
            names::ORDERS,
            L1,
            schema::orders(),
            EVENT_DATE,
            AppendOnly,
            "order lifecycle events as ingested",
        ),
        def(
            names::EXECUTIONS,
            L1,
            schema::executions(),
            EVENT_DATE,
            AppendOnly,
            "executions, amends and cancels as ingested",
        ),
        def(
            names::DEAD_LETTERS,
            L1,
            schema::dead_letters(),
            &[schema::COL_INGEST_DATE],
            AppendOnly,
            "messages that failed decoding or validation, with raw bytes",
        ),
        def(
            names::LATE_EVENTS,
            L1,
            schema::late_events(),
            EVENT_DATE,
            AppendOnly,
            "events later than the speed layer's allowed lateness",
        ),
        def(
            names::REF_INSTRUMENTS,
            L1,
            schema::ref_instruments(),
            &[],
            Replace,
            "instrument reference data",
        ),
        def(
            names::REF_ACCOUNTS,
            L1,
            schema::ref_accounts(),
            &[],
            Replace,
            "accounts, desks and legal entities",
        ),
        def(
            names::REF_FX_RATES,
            L1,
            schema::ref_fx_rates(),
            &["date"],
            ReplacePartition,
            "FX rates to the reporting currency per date",
        ),
        def(
            names::L2_EXECUTIONS,
            L2,
            schema::l2_executions(),
            BUSINESS_DATE,
            ReplacePartition,
            "effective executions, enriched",
        ),
        def(
            names::L2_ORDERS,
            L2,
            schema::l2_orders(),
            BUSINESS_DATE,
            ReplacePartition,
            "final state of each order",
        ),
        def(
            names::L2_MARKET_TRADES,
            L2,
            schema::l2_market_trades(),
            BUSINESS_DATE,
            ReplacePartition,
            "deduplicated tape prints",
        ),
        def(
            names::DAILY_BARS,
            L3,
            schema::daily_bars(),
            BUSINESS_DATE,
            ReplacePartition,
            "daily OHLC, VWAP, volume and count per symbol",
        ),
        def(
            names::POSITIONS,
            L3,
            schema::positions(),
            BUSINESS_DATE,
            ReplacePartition,
            "positions and P&L per account and symbol",
        ),
        def(
            names::DESK_EXPOSURE,
            L3,
            schema::desk_exposure(),
            BUSINESS_DATE,
            ReplacePartition,
            "gross and net notional per desk, asset class, currency",
        ),
        def(
            names::LARGE_TRADES,
            L3,
            schema::large_trades(),
            BUSINESS_DATE,
            ReplacePartition,
            "executions at or above the large-trade threshold",
        ),
        def(
            names::TRANSACTION_REPORT,
            L3,
            schema::transaction_report(),
            BUSINESS_DATE,
            ReplacePartition,
            "MiFIR RTS 22-style report of every effective execution",
        ),
        def(
            names::ORDER_STATS,
            L3,
            schema::order_stats(),
            BUSINESS_DATE,
            ReplacePartition,
            "orders, modifies, cancels, executions per trader",
        ),
        def(
            names::RECONCILIATION,
            L3,
            schema::reconciliation(),
            BUSINESS_DATE,
            ReplacePartition,
            "counts and notional L1 vs L2 vs L3, with breaks",
        ),
        def(
            names::BATCH_LEDGER,
            System,
            schema::batch_ledger(),
            &[],
            AppendOnly,
            "one row per batch job run",
        ),
        def(
            names::SPEED_CHECKPOINTS,
            System,
            schema::speed_checkpoints(),
            &[],
            AppendOnly,
            "speed-layer checkpoints",
        ),
        def(
            names::SPEED_PANES,
            System,
            schema::speed_panes(),
            &[schema::COL_EMITTED_DATE],
            AppendOnly,
            "every pane the speed layer fired (view, key, window, timing, value)",
        ),
        def(
            names::QUERY_AUDIT,
            System,
            schema::query_audit(),
            &[schema::COL_AUDIT_DATE],
            AppendOnly,
            "every serving request, allowed or denied",
        ),
    ]
}

/// The definition of one table by name.
pub fn table(name: &str) -> Option<TableDef> {
    tables().into_iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_event_tables_keep_kafka_columns_and_partition_columns_exist() {
        for def in tables() {
            for p in def.partition_by {
                assert!(def.schema.field_with_name(p).is_ok(), "{}: {p}", def.name);
            }
            if def.layer == Layer::L1 && def.mode == WriteMode::AppendOnly {
                for k in [
                    schema::COL_TOPIC,
                    schema::COL_PARTITION,
                    schema::COL_OFFSET,
                    schema::COL_KAFKA_TS,
                    schema::COL_INGEST_TS,
                ] {
                    assert!(
                        def.schema.field_with_name(k).is_ok(),
                        "{} lacks {k}",
                        def.name
                    );
                }
                assert_eq!(def.properties()["delta.appendOnly"], "true");
            }
            assert!(
                !def.properties()
                    .contains_key("delta.setTransactionRetentionDuration")
            );
        }
        assert!(table("l1/market_trades").is_some());
        assert!(table("l9/nothing").is_none());
    }
}
