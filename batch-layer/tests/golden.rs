//! Golden tests of the job chain on small hand-made L1 inputs in an in-memory lake: duplicate
//! deliveries, amends, cancels, a position carried over two days, and reruns that give the
//! same bytes.

use std::collections::BTreeMap;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Decimal128Type, Int64Type};
use lakehouse_batch::{JobParams, Runner};
use lakehouse_lake::catalog::names;
use lakehouse_lake::events::{self, Execution, KafkaMeta, Lifecycle, MarketTrade, Side};
use lakehouse_lake::events::{Account, FxRate, Instrument, Order, OrderAction, OrderType};
use lakehouse_lake::{
    BusinessCalendar, BusinessDate, Decimal, EventTime, Lake, LakeConfig, Offset, OffsetRanges,
    PipelineId, TopicPartition,
};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn t(s: &str) -> EventTime {
    EventTime::parse_rfc3339(s).unwrap()
}

fn meta(topic: &str, offset: i64) -> KafkaMeta {
    KafkaMeta {
        topic: topic.into(),
        partition: 0,
        offset,
        kafka_ts: None,
        ingest_ts: EventTime::from_micros(0),
    }
}

fn exec(id: &str, account: &str, side: Side, price: &str, qty: &str, ts: &str) -> Execution {
    Execution {
        exec_id: id.into(),
        order_id: format!("O-{id}"),
        account: account.into(),
        trader: "T1".into(),
        symbol: "AAPL".into(),
        venue: Some("XNAS".into()),
        side,
        price: d(price),
        quantity: d(qty),
        currency: "USD".into(),
        ts: t(ts),
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
    ts: &str,
) -> Execution {
    Execution {
        lifecycle,
        ref_exec_id: Some(of.into()),
        ..exec(id, "A1", Side::Buy, price, qty, ts)
    }
}

fn print(id: &str, price: &str, volume: &str, ts: &str) -> MarketTrade {
    MarketTrade {
        trade_id: Some(id.into()),
        symbol: "AAPL".into(),
        venue: Some("XNAS".into()),
        price: d(price),
        volume: d(volume),
        ts: t(ts),
        conditions: vec![],
    }
}

/// `events` as delivered on partition 0 of `topic`, at offsets 0, 1, ...
fn delivered<T: Clone>(events: &[T], topic: &str) -> Vec<(T, KafkaMeta)> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.clone(), meta(topic, i as i64)))
        .collect()
}

/// Appends `batch` exactly once, recording offsets from the next one of `topic` to the
/// batch's last.
async fn append(lake: &Lake, table: &str, topic: &str, batch: RecordBatch) {
    let offsets = batch.column_by_name("_offset").unwrap();
    let last = deltalake::arrow::compute::max(offsets.as_primitive::<Int64Type>()).unwrap();
    let mut tbl = lake.table(table).await.unwrap();
    let mut ranges = OffsetRanges::new();
    let tp = TopicPartition::new(topic, 0);
    let first = tbl
        .committed_offset(&PipelineId::new("ingest"), &tp)
        .await
        .unwrap()
        .map_or(0, |o| o.0 + 1);
    ranges.record(&tp, Offset(first));
    ranges.record(&tp, Offset(last));
    tbl.append_exactly_once(&PipelineId::new("ingest"), vec![batch], &ranges)
        .await
        .unwrap();
}

async fn lake() -> Lake {
    lake_at("memory:///").await
}

/// A lake at `root` with the reference data of these tests.
async fn lake_at(root: &str) -> Lake {
    let lake = Lake::open(&LakeConfig {
        root: root.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    lake.ensure_catalog().await.unwrap();
    let mut i = lake.table(names::REF_INSTRUMENTS).await.unwrap();
    i.replace_all(
        vec![
            events::instruments_batch(&[Instrument {
                symbol: "AAPL".into(),
                isin: "US0378331005".into(),
                asset_class: "EQUITY".into(),
                currency: "USD".into(),
                tick_size: d("0.01"),
                lot_size: d("1"),
            }])
            .unwrap(),
        ],
        Default::default(),
    )
    .await
    .unwrap();
    let mut a = lake.table(names::REF_ACCOUNTS).await.unwrap();
    a.replace_all(
        vec![
            events::accounts_batch(&[Account {
                account: "A1".into(),
                desk: "EQ".into(),
                legal_entity: "LE1".into(),
            }])
            .unwrap(),
        ],
        Default::default(),
    )
    .await
    .unwrap();
    let mut fx = lake.table(names::REF_FX_RATES).await.unwrap();
    let rates: Vec<FxRate> = ["2026-01-05", "2026-01-06"]
        .iter()
        .map(|day| FxRate {
            date: day.parse().unwrap(),
            currency: "USD".into(),
            rate_to_reporting: d("0.9"),
        })
        .collect();
    fx.replace_all(
        vec![events::fx_rates_batch(&rates).unwrap()],
        Default::default(),
    )
    .await
    .unwrap();
    lake
}

fn params() -> JobParams {
    JobParams {
        large_trade_thresholds: BTreeMap::from([("*".into(), d("1000"))]),
        desk_limits: BTreeMap::from([("EQ".into(), d("100"))]),
        top_n: 1,
        ..Default::default()
    }
}

/// A runner over `lake` with the default calendar and ingest's pipeline id.
fn runner(lake: &Lake, p: JobParams) -> Runner {
    Runner::new(
        lake.clone(),
        BusinessCalendar::default(),
        p,
        PipelineId::new("ingest"),
    )
}

async fn rows(lake: &Lake, table: &str, date: &str) -> Vec<RecordBatch> {
    let t = lake.table(table).await.unwrap();
    let filter = deltalake::datafusion::prelude::col("business_date").eq(
        deltalake::datafusion::prelude::lit(deltalake::datafusion::scalar::ScalarValue::Date32(
            Some(date.parse::<BusinessDate>().unwrap().days_since_epoch()),
        )),
    );
    t.scan(Some(filter), None).await.unwrap()
}

fn texts(batches: &[RecordBatch], col: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = cast(b.column_by_name(col).unwrap(), &DataType::Utf8).unwrap();
            c.as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or("null").to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn decs(batches: &[RecordBatch], col: &str) -> Vec<Option<Decimal>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(col)
                .unwrap()
                .as_primitive::<Decimal128Type>()
                .clone();
            (0..c.len())
                .map(|i| c.is_valid(i).then(|| Decimal::from_raw(c.value(i))))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Two days of executions (duplicates, an amend, a cancel, an orphan amend) and prints; the
/// executions with their Kafka positions.
async fn two_days(lake: &Lake) -> Vec<(Execution, KafkaMeta)> {
    // day 1: E1 buy 100 @ 10, delivered twice; E2 buy 50 @ 11 amended to 40 @ 12; E3 cancelled
    let day1 = [
        exec("E1", "A1", Side::Buy, "10", "100", "2026-01-05T14:30:00Z"),
        exec("E1", "A1", Side::Buy, "10", "100", "2026-01-05T14:30:00Z"),
        exec("E2", "A1", Side::Buy, "11", "50", "2026-01-05T15:00:00Z"),
        correction(
            "E2A",
            "E2",
            Lifecycle::Amend,
            "12",
            "40",
            "2026-01-05T15:01:00Z",
        ),
        exec("E3", "A1", Side::Sell, "13", "10", "2026-01-05T16:00:00Z"),
        correction(
            "E3C",
            "E3",
            Lifecycle::Cancel,
            "13",
            "10",
            "2026-01-05T16:00:05Z",
        ),
        correction(
            "E9A",
            "E9",
            Lifecycle::Amend,
            "1",
            "1",
            "2026-01-05T16:00:06Z",
        ),
        // day 2: sell 70 @ 15 against avg cost (1000 + 480) / 140
        exec("E4", "A1", Side::Sell, "15", "70", "2026-01-06T14:30:00Z"),
    ];
    let rows_e = delivered(&day1, "executions");
    append(
        lake,
        names::EXECUTIONS,
        "executions",
        events::executions_batch(&rows_e).unwrap(),
    )
    .await;
    let prints = [
        print("P1", "10", "5", "2026-01-05T14:30:00Z"),
        print("P2", "12", "15", "2026-01-05T15:00:00Z"),
        print("P2", "12", "15", "2026-01-05T15:00:00Z"),
        print("P3", "11.5", "1", "2026-01-05T20:59:59Z"),
        print("P4", "16", "3", "2026-01-06T15:00:00Z"),
    ];
    append(
        lake,
        names::MARKET_TRADES,
        "market-trades",
        events::market_trades_batch(&delivered(&prints, "market-trades")).unwrap(),
    )
    .await;

    rows_e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_days_with_duplicates_amends_cancels_and_a_carried_position() {
    two_days_golden(lake().await).await;
}

/// The same on a local lake, where the runner reads the L1 Parquet files with Polars itself
/// (a `memory://` lake goes through delta-rs's scan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_days_golden_on_a_local_lake_read_from_its_parquet_files() {
    let dir = tempfile::tempdir().unwrap();
    two_days_golden(lake_at(dir.path().to_str().unwrap()).await).await;
}

async fn two_days_golden(lake: Lake) {
    let rows_e = two_days(&lake).await;
    let runner = runner(&lake, params());
    let r1 = runner.run("2026-01-05".parse().unwrap()).await.unwrap();
    assert_eq!(r1.boundary["executions"][&0], 7);
    assert_eq!(r1.boundary["market-trades"][&0], 4);

    // L2: E1 once, E2 amended, E3 cancelled
    let l2 = rows(&lake, names::L2_EXECUTIONS, "2026-01-05").await;
    assert_eq!(texts(&l2, "exec_id"), ["E1", "E2"]);
    assert_eq!(decs(&l2, "price"), [Some(d("10")), Some(d("12"))]);
    assert_eq!(decs(&l2, "quantity"), [Some(d("100")), Some(d("40"))]);
    assert_eq!(decs(&l2, "notional"), [Some(d("1000")), Some(d("480"))]);
    assert_eq!(
        decs(&l2, "reporting_notional"),
        [Some(d("900")), Some(d("432"))]
    );
    assert_eq!(texts(&l2, "desk"), ["EQ", "EQ"]);
    assert_eq!(texts(&l2, "isin"), ["US0378331005", "US0378331005"]);

    // bars: P2 once; VWAP = (50 + 180 + 11.5) / 21
    let bars = rows(&lake, names::DAILY_BARS, "2026-01-05").await;
    assert_eq!(decs(&bars, "open"), [Some(d("10"))]);
    assert_eq!(decs(&bars, "close"), [Some(d("11.5"))]);
    assert_eq!(decs(&bars, "high"), [Some(d("12"))]);
    assert_eq!(decs(&bars, "volume"), [Some(d("21"))]);
    assert_eq!(
        decs(&bars, "vwap"),
        [Some(d("241.5").div_rounded(d("21")).unwrap())]
    );

    // day-1 position: 140 @ (1000 + 480) / 140, marked at 11.5
    let pos = rows(&lake, names::POSITIONS, "2026-01-05").await;
    let avg = d("1480").div_rounded(d("140")).unwrap();
    assert_eq!(decs(&pos, "net_quantity"), [Some(d("140"))]);
    assert_eq!(decs(&pos, "avg_cost"), [Some(avg)]);
    assert_eq!(decs(&pos, "market_value"), [Some(d("1610"))]);

    // large trades at or above 1000: E1 (1000) is, E2 (480) is not
    let large = rows(&lake, names::LARGE_TRADES, "2026-01-05").await;
    assert_eq!(texts(&large, "exec_id"), ["E1"]);
    assert_eq!(decs(&large, "notional"), [Some(d("1000"))]);

    // exposure: 1610 gross, 1449 in reporting currency, above the desk limit of 100
    let exp = rows(&lake, names::DESK_EXPOSURE, "2026-01-05").await;
    assert_eq!(decs(&exp, "gross_notional"), [Some(d("1610"))]);
    assert_eq!(decs(&exp, "reporting_gross_notional"), [Some(d("1449"))]);
    assert_eq!(texts(&exp, "limit_breach"), ["true"]);
    assert_eq!(texts(&exp, "top_n"), ["true"]);

    // reconciliation: the orphan amend E9A is a break, the rest ties out
    let recon = rows(&lake, names::RECONCILIATION, "2026-01-05").await;
    let measures = texts(&recon, "measure");
    let status = texts(&recon, "status");
    let detail = texts(&recon, "detail");
    for (i, m) in measures.iter().enumerate() {
        if m == "orphan_corrections" {
            assert_eq!((status[i].as_str(), detail[i].as_str()), ("BREAK", "E9A"));
        } else {
            assert_eq!(status[i], "OK", "{m}");
        }
    }
    // the tape through the layers: L1 holds P2's second delivery, L2 and L3 do not
    let datasets = texts(&recon, "dataset");
    let through = |measure: &str| {
        let i = (0..measures.len())
            .find(|&i| datasets[i] == "market_trades" && measures[i] == measure)
            .unwrap();
        ["l1", "l2", "l3"].map(|c| decs(&recon, c)[i])
    };
    assert_eq!(through("count"), ["4", "3", "3"].map(|v| Some(d(v))));
    assert_eq!(through("volume"), ["36", "21", "21"].map(|v| Some(d(v))));

    // day 2: the position carries over; selling 70 realizes (15 - avg) x 70
    runner.run("2026-01-06".parse().unwrap()).await.unwrap();
    let pos2 = rows(&lake, names::POSITIONS, "2026-01-06").await;
    assert_eq!(decs(&pos2, "net_quantity"), [Some(d("70"))]);
    assert_eq!(decs(&pos2, "avg_cost"), [Some(avg)]);
    let realized = Decimal::wide_rounded((d("15").raw() - avg.raw()) * d("70").raw()).unwrap();
    assert_eq!(decs(&pos2, "realized_pnl"), [Some(realized)]);
    assert_eq!(decs(&pos2, "close_price"), [Some(d("16"))]);
    // the same from scratch with lake::positions
    let mut book = lakehouse_lake::positions::Positions::new();
    for (e, m) in &rows_e {
        book.add(e, m.partition, m.offset);
    }
    let p = book.position("A1", "AAPL").unwrap();
    assert_eq!(
        (p.net_quantity, p.avg_cost, p.realized_pnl),
        (d("70"), avg, realized)
    );

    // a rerun replaces the date with the same rows and publishes again
    let before = rows(&lake, names::POSITIONS, "2026-01-05").await;
    let r1b = runner.run("2026-01-05".parse().unwrap()).await.unwrap();
    assert_eq!(rows(&lake, names::POSITIONS, "2026-01-05").await, before);
    assert!(r1b.outputs[names::POSITIONS] > r1.outputs[names::POSITIONS]);
    let ledger = lakehouse_batch::runner::read_ledger(&lake).await.unwrap();
    assert_eq!(ledger.len(), 3);
    assert!(ledger.iter().all(|r| r.status == "succeeded"));
}

/// The scheduler at start: the default schedule's firings in the catch-up period make Monday
/// and Tuesday due; both run in order and publish, maintenance compacts the closed L1 date, and
/// a second pass finds nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_catches_up_missed_dates_then_maintains() {
    use lakehouse_batch::maintenance::MaintenanceConfig;
    use lakehouse_batch::schedule::{RetryPolicy, Schedule, Scheduler};
    let lake = lake().await;
    two_days(&lake).await;
    // a second file in the tape's 2026-01-05 partition, for compaction to merge
    let late = [(
        print("P5", "11", "2", "2026-01-05T20:00:00Z"),
        meta("market-trades", 5),
    )];
    append(
        &lake,
        names::MARKET_TRADES,
        "market-trades",
        events::market_trades_batch(&late).unwrap(),
    )
    .await;
    let calendar = BusinessCalendar::default();
    let runner = Runner::new(lake.clone(), calendar, params(), PipelineId::new("ingest"));
    let schedule = Schedule::new(&[], calendar).unwrap();
    let scheduler = Scheduler::new(
        runner,
        schedule.clone(),
        RetryPolicy {
            retries: 1,
            backoff: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_millis(10),
        },
        std::time::Duration::from_secs(7 * 86_400),
        MaintenanceConfig::default(),
    );
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    // started Thursday 2026-01-08 at 00:10, looking back to Sunday: the firings of Tuesday
    // and Wednesday 00:15 closed Monday and Tuesday; Thursday's has not come yet. (A week back,
    // Thursday to Saturday's firings would add Wednesday to Friday of the week before.)
    let due = schedule.due(at("2026-01-04T00:00:00Z"), at("2026-01-08T00:10:00Z"));
    let day = |s: &str| s.parse::<BusinessDate>().unwrap();
    assert_eq!(
        due.iter().copied().collect::<Vec<_>>(),
        [day("2026-01-05"), day("2026-01-06")]
    );
    let week = schedule.due(at("2026-01-01T00:10:00Z"), at("2026-01-08T00:10:00Z"));
    assert_eq!(week.len(), 5);
    let pass = scheduler.pass(due.clone()).await.unwrap();
    assert!(pass.failed.is_none(), "{:?}", pass.failed);
    assert!(pass.pending.is_empty());
    let published: Vec<_> = pass.published.iter().map(|r| r.date).collect();
    assert_eq!(published, due.iter().copied().collect::<Vec<_>>());
    // the carried position comes from Monday, run before Tuesday
    let pos2 = rows(&lake, names::POSITIONS, "2026-01-06").await;
    assert_eq!(decs(&pos2, "net_quantity"), [Some(d("70"))]);
    let tape = lake.table(names::MARKET_TRADES).await.unwrap();
    let ops: Vec<String> = tape
        .history(Some(3))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.operation)
        .collect();
    assert!(ops.iter().any(|o| o == "OPTIMIZE"), "{ops:?}");
    assert_eq!(tape.file_uris().unwrap().len(), 2, "05 compacted, 06 alone");
    let text = scheduler.metrics().render();
    for line in [
        "lakehouse_batch_runs_total{status=\"succeeded\"} 2",
        "lakehouse_batch_run_seconds_count 2",
        "lakehouse_batch_pending_dates 0",
        "lakehouse_batch_maintenance_total{status=\"succeeded\"} 1",
        "lakehouse_batch_retries_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    let days = day("2026-01-06").days_since_epoch();
    assert!(
        text.lines()
            .any(|l| l == format!("lakehouse_batch_published_date_days {days}")),
        "{text}"
    );
    assert!(
        !text.contains("# EOF"),
        "joined with other roles' metrics: {text}"
    );
    // nothing left: a second pass runs nothing
    let again = scheduler.pass(due).await.unwrap();
    assert!(again.published.is_empty());
    assert_eq!(
        lakehouse_batch::runner::read_ledger(&lake)
            .await
            .unwrap()
            .len(),
        2
    );
}

fn order(id: &str, action: OrderAction, qty: &str, ts: &str) -> Order {
    Order {
        order_id: id.into(),
        account: "A1".into(),
        trader: "T1".into(),
        symbol: "AAPL".into(),
        venue: Some("XNAS".into()),
        side: Side::Buy,
        order_type: OrderType::Limit,
        price: Some(d("10")),
        quantity: d(qty),
        action,
        ts: t(ts),
    }
}

/// l2/orders: the final state per order and date, counting modifies and cancels, a duplicate
/// delivery once, an order cancelled the day it was placed (its price and quantity are its
/// last NEW or MODIFY's, not the cancel's), and an order resting from the day before whose
/// only event is its cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_final_state_with_a_cancel_of_an_order_from_the_day_before() {
    let lake = lake().await;
    let evs = [
        order("O1", OrderAction::New, "100", "2026-01-05T14:30:00Z"),
        order("O1", OrderAction::Modify, "80", "2026-01-05T14:31:00Z"),
        order("O2", OrderAction::New, "50", "2026-01-05T15:00:00Z"),
        order("O4", OrderAction::New, "30", "2026-01-05T15:10:00Z"),
        order("O4", OrderAction::Cancel, "5", "2026-01-05T15:20:00Z"),
        order("O3", OrderAction::New, "7", "2026-01-06T14:30:00Z"),
        order("O3", OrderAction::New, "7", "2026-01-06T14:30:00Z"),
        order("O2", OrderAction::Cancel, "50", "2026-01-06T14:35:00Z"),
    ];
    append(
        &lake,
        names::ORDERS,
        "orders",
        events::orders_batch(&delivered(&evs, "orders")).unwrap(),
    )
    .await;
    let runner = runner(&lake, params());
    for day in ["2026-01-05", "2026-01-06"] {
        runner.run(day.parse().unwrap()).await.unwrap();
    }
    let day1 = rows(&lake, names::L2_ORDERS, "2026-01-05").await;
    assert_eq!(texts(&day1, "order_id"), ["O1", "O2", "O4"]);
    assert_eq!(texts(&day1, "status"), ["MODIFIED", "NEW", "CANCELLED"]);
    assert_eq!(
        decs(&day1, "quantity"),
        [Some(d("80")), Some(d("50")), Some(d("30"))]
    );
    assert_eq!(texts(&day1, "modify_count"), ["1", "0", "0"]);
    assert_eq!(texts(&day1, "cancel_count"), ["0", "0", "1"]);
    let day2 = rows(&lake, names::L2_ORDERS, "2026-01-06").await;
    assert_eq!(texts(&day2, "order_id"), ["O2", "O3"]);
    assert_eq!(texts(&day2, "status"), ["CANCELLED", "NEW"]);
    assert_eq!(decs(&day2, "quantity"), [Some(d("50")), Some(d("7"))]);
    assert_eq!(texts(&day2, "cancel_count"), ["1", "0"]);
    // a trader with orders and no executions: no order-to-trade ratio (and no division by 0)
    let stats = rows(&lake, names::ORDER_STATS, "2026-01-06").await;
    assert_eq!(texts(&stats, "trader"), ["T1"]);
    assert_eq!(texts(&stats, "order_to_trade"), ["null"]);
}

/// l2/market_trades: a print without a trade id is identified by its whole content (its
/// redelivery counted once), and prints carrying an excluded condition code are left out,
/// with or without an id; the bars are made of what remains, in rank order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_without_ids_and_excluded_condition_codes() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_at(dir.path().to_str().unwrap()).await;
    let anonymous = |price: &str, ts: &str, conditions: &[&str]| MarketTrade {
        trade_id: None,
        conditions: conditions.iter().map(|c| c.to_string()).collect(),
        ..print("", price, "1", ts)
    };
    let coded = |id: &str, price: &str, ts: &str, conditions: &[&str]| MarketTrade {
        conditions: conditions.iter().map(|c| c.to_string()).collect(),
        ..print(id, price, "2", ts)
    };
    let prints = [
        anonymous("10", "2026-01-05T14:30:00Z", &["@"]),
        coded("P1", "11", "2026-01-05T14:31:00Z", &["@", "T"]),
        anonymous("10", "2026-01-05T14:30:00Z", &["@"]), // a redelivery
        anonymous("10", "2026-01-05T14:30:00Z", &["@", "I"]), // another print
        coded("P2", "13", "2026-01-05T14:32:00Z", &["Z"]), // excluded
        anonymous("14", "2026-01-05T14:33:00Z", &["Z", "@"]), // excluded
        coded("P3", "12", "2026-01-05T14:34:00Z", &[]),
    ];
    append(
        &lake,
        names::MARKET_TRADES,
        "market-trades",
        events::market_trades_batch(&delivered(&prints, "market-trades")).unwrap(),
    )
    .await;
    let excluding = runner(
        &lake,
        JobParams {
            excluded_conditions: vec!["Z".into()],
            ..params()
        },
    );
    excluding.run("2026-01-05".parse().unwrap()).await.unwrap();
    let l2 = rows(&lake, names::L2_MARKET_TRADES, "2026-01-05").await;
    assert_eq!(texts(&l2, "trade_id"), ["null", "null", "P1", "P3"]);
    assert_eq!(texts(&l2, "_offset"), ["0", "3", "1", "6"]);
    let bars = rows(&lake, names::DAILY_BARS, "2026-01-05").await;
    assert_eq!(decs(&bars, "open"), [Some(d("10"))]);
    assert_eq!(decs(&bars, "close"), [Some(d("12"))]);
    assert_eq!(decs(&bars, "high"), [Some(d("12"))]);
    assert_eq!(decs(&bars, "volume"), [Some(d("6"))]);
    assert_eq!(texts(&bars, "trade_count"), ["4"]);
    // no code excluded: the codes are read for the prints without an id only (where they are
    // part of the identity), and every print is kept
    runner(&lake, params())
        .run("2026-01-05".parse().unwrap())
        .await
        .unwrap();
    let l2 = rows(&lake, names::L2_MARKET_TRADES, "2026-01-05").await;
    assert_eq!(
        texts(&l2, "trade_id"),
        ["null", "null", "P1", "P2", "null", "P3"]
    );
    assert_eq!(texts(&l2, "_offset"), ["0", "3", "1", "4", "5", "6"]);
}
