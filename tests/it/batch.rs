//! The batch layer end to end: `lakehouse simulate` -> the broker -> `lakehouse ingest` ->
//! `lakehouse batch run --from --to` over several business days.
//!
//! - Exactness: positions, daily bars and large trades equal values computed here,
//!   independently, from the simulator's ground truth.
//! - Determinism: the bytes of every output file are the same over three runs, with
//!   `POLARS_MAX_THREADS` 2 and 1, and after L1 was compacted.
//! - A run SIGKILLed while it replaces its outputs publishes nothing; the tables hold complete
//!   date partitions only, and the rerun publishes the date once.
//! - Python `polars` and `deltalake` read L2 and L3 and get the same totals.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Date32Type, Decimal128Type};
use lakehouse_batch::runner::{OUTPUTS, read_ledger};
use lakehouse_lake::catalog::names;
use lakehouse_lake::{BusinessDate, Decimal, EventTime, PipelineId, TopicPartition};

use crate::ingest::{Ingest, broker};
use crate::simulate::{Row, read_truth};
use crate::speed::open;

const THRESHOLD: i128 = 50_000 * SCALE;
const SCALE: i128 = 100_000_000;

pub(crate) fn lakehouse(d: &Path) -> Command {
    let mut c = Command::new(lakehouse_tests::lakehouse_bin().unwrap());
    c.arg("--config").arg(d.join("lakehouse.toml"));
    c.stdin(Stdio::null());
    c
}

pub(crate) fn ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads the reference data the simulator wrote into `d/ref` into `lake`.
pub(crate) fn load_refdata(d: &Path, lake: &Path) {
    let mut load = lakehouse(d);
    load.args(["refdata", "load", "--lake"]).arg(lake);
    for (flag, file) in [
        ("--instruments", "instruments.csv"),
        ("--accounts", "accounts.csv"),
        ("--fx", "fx_rates.csv"),
    ] {
        load.arg(flag).arg(d.join("ref").join(file));
    }
    ok(load);
}

/// Waits until ingest committed `per_topic` messages to L1.
pub(crate) fn wait_ingested(
    rt: &tokio::runtime::Runtime,
    lake: &Path,
    ingest: &mut Ingest,
    per_topic: &BTreeMap<String, i64>,
) {
    let tables = [
        ("market-trades", names::MARKET_TRADES),
        ("orders", names::ORDERS),
        ("executions", names::EXECUTIONS),
    ];
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = rt.block_on(async {
            let l = open(lake).await;
            for (topic, table) in tables {
                let Ok(t) = l.table(table).await else {
                    return false;
                };
                let o = t
                    .committed_offset(&PipelineId::new("ingest"), &TopicPartition::new(topic, 0))
                    .await
                    .unwrap();
                if o.map(|o| o.0 + 1) < per_topic.get(topic).copied() {
                    return false;
                }
            }
            true
        });
        if done {
            return;
        }
        assert!(!ingest.exited(), "ingest exited: {}", ingest.log_text());
        assert!(
            Instant::now() < deadline,
            "ingest too slow: {}",
            ingest.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn date_of(ts: i64) -> BusinessDate {
    BusinessDate(EventTime::from_micros(ts).utc_date())
}

pub(crate) fn round(wide: i128) -> i128 {
    Decimal::wide_rounded(wide).unwrap().raw()
}

/// The truth's first deliveries (no duplicates, no malformed messages) of `kind`, in send
/// order (one partition per topic: the Kafka offset order).
pub(crate) fn events<'a>(rows: &'a [Row], kind: &str) -> Vec<&'a Row> {
    let mut seen = BTreeSet::new();
    rows.iter()
        .filter(|r| r.kind == kind && !r.malformed && !r.duplicate)
        .filter(|r| seen.insert(r.id.clone()))
        .collect()
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bar {
    pub(crate) open: i128,
    pub(crate) high: i128,
    pub(crate) low: i128,
    pub(crate) close: i128,
    pub(crate) vwap: i128,
    pub(crate) volume: i128,
    pub(crate) count: i64,
}

/// Daily bars per (date, symbol): open/close the first/last print by (time, offset).
fn truth_bars(rows: &[Row]) -> BTreeMap<(BusinessDate, String), Bar> {
    bars_by(rows, date_of)
}

/// Bars per (`bucket(ts)`, symbol): open/close the first/last print by (time, offset).
pub(crate) fn bars_by<K: Ord + Clone>(
    rows: &[Row],
    bucket: impl Fn(i64) -> K,
) -> BTreeMap<(K, String), Bar> {
    let mut prints: Vec<(i64, u64, &Row)> = events(rows, "market-trade")
        .into_iter()
        .map(|r| (r.ts.unwrap(), r.message_seq, r))
        .collect();
    prints.sort_by_key(|p| (p.0, p.1));
    let mut acc: BTreeMap<(K, String), (Bar, i128)> = BTreeMap::new();
    for (ts, _, r) in prints {
        let (p, v) = (r.price.unwrap(), r.quantity.unwrap());
        let key = (bucket(ts), r.symbol.clone().unwrap());
        let (bar, pv) = acc.entry(key).or_insert_with(|| {
            (
                Bar {
                    open: p,
                    high: p,
                    low: p,
                    ..Bar::default()
                },
                0,
            )
        });
        bar.high = bar.high.max(p);
        bar.low = bar.low.min(p);
        bar.close = p;
        bar.volume += v;
        bar.count += 1;
        *pv += p * v;
    }
    acc.into_iter()
        .map(|(k, (mut bar, pv))| {
            bar.vwap = Decimal::wide_div_rounded(pv, Decimal::from_raw(bar.volume))
                .unwrap()
                .raw();
            (k, bar)
        })
        .collect()
}

/// An execution after its corrections: side, price, quantity, and where it ranks.
pub(crate) struct Fill {
    pub(crate) ts: i64,
    pub(crate) seq: u64,
    pub(crate) account: String,
    pub(crate) symbol: String,
    pub(crate) buy: bool,
    pub(crate) price: i128,
    pub(crate) quantity: i128,
    pub(crate) exec_id: String,
}

pub(crate) fn effective_fills(rows: &[Row]) -> Vec<Fill> {
    let execs = events(rows, "execution");
    let mut fills: BTreeMap<String, Fill> = BTreeMap::new();
    for r in execs
        .iter()
        .filter(|r| r.lifecycle.as_deref() == Some("NEW"))
    {
        fills.insert(
            r.id.clone().unwrap(),
            Fill {
                ts: r.ts.unwrap(),
                seq: r.message_seq,
                account: r.account.clone().unwrap(),
                symbol: r.symbol.clone().unwrap(),
                buy: r.side.as_deref() == Some("BUY"),
                price: r.price.unwrap(),
                quantity: r.quantity.unwrap(),
                exec_id: r.id.clone().unwrap(),
            },
        );
    }
    // corrections in (time, offset) order: the last amend sets price and quantity, a cancel
    // removes the execution
    let mut corrections: Vec<&&Row> = execs
        .iter()
        .filter(|r| r.lifecycle.as_deref() != Some("NEW"))
        .collect();
    corrections.sort_by_key(|r| (r.ts, r.message_seq));
    let mut cancelled = BTreeSet::new();
    for c in corrections {
        let target = c.ref_exec_id.clone().unwrap();
        if c.lifecycle.as_deref() == Some("CANCEL") {
            cancelled.insert(target);
        } else if let Some(f) = fills.get_mut(&target) {
            f.price = c.price.unwrap();
            f.quantity = c.quantity.unwrap();
        }
    }
    let mut out: Vec<Fill> = fills
        .into_values()
        .filter(|f| !cancelled.contains(&f.exec_id))
        .collect();
    out.sort_by_key(|f| (f.ts, f.seq));
    out
}

/// (net, avg cost, realized) by the average-cost method, written out plainly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) net: i128,
    pub(crate) avg: i128,
    pub(crate) realized: i128,
}

impl Pos {
    pub(crate) fn apply(&mut self, buy: bool, price: i128, qty: i128) {
        let q = if buy { qty } else { -qty };
        if self.net == 0 || (self.net > 0) == (q > 0) {
            let n = self.net + q;
            let total = self.avg * self.net.abs() + price * q.abs();
            self.avg = Decimal::wide_div_rounded(total, Decimal::from_raw(n.abs()))
                .unwrap()
                .raw();
            self.net = n;
            return;
        }
        let closed = q.abs().min(self.net.abs());
        let per_unit = if self.net > 0 {
            price - self.avg
        } else {
            self.avg - price
        };
        self.realized += round(per_unit * closed);
        let n = self.net + q;
        if n == 0 {
            self.avg = 0;
        } else if (n > 0) != (self.net > 0) {
            self.avg = price;
        }
        self.net = n;
    }
}

type PosRow = (i128, i128, i128, Option<i128>, Option<i128>, Option<i128>);

/// Closing positions per date and (account, symbol): net, avg cost, realized, close price,
/// market value, unrealized.
fn truth_positions(
    rows: &[Row],
    dates: &[BusinessDate],
    bars: &BTreeMap<(BusinessDate, String), Bar>,
) -> BTreeMap<(BusinessDate, String, String), PosRow> {
    let fills = effective_fills(rows);
    let mut book: BTreeMap<(String, String), Pos> = BTreeMap::new();
    let mut closes: BTreeMap<String, i128> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for &d in dates {
        for f in fills.iter().filter(|f| date_of(f.ts) == d) {
            book.entry((f.account.clone(), f.symbol.clone()))
                .or_default()
                .apply(f.buy, f.price, f.quantity);
        }
        for ((bd, sym), bar) in bars {
            if *bd == d {
                closes.insert(sym.clone(), bar.close);
            }
        }
        for ((account, symbol), p) in &book {
            let close = closes.get(symbol).copied();
            out.insert(
                (d, account.clone(), symbol.clone()),
                (
                    p.net,
                    p.avg,
                    p.realized,
                    close,
                    close.map(|c| round(p.net * c)),
                    close.map(|c| round((c - p.avg) * p.net)),
                ),
            );
        }
    }
    out
}

/// Reads every row of `table`.
fn read(rt: &tokio::runtime::Runtime, lake: &Path, table: &str) -> Vec<RecordBatch> {
    rt.block_on(async {
        let lake = open(lake).await;
        let t = lake.table(table).await.unwrap();
        let schema = t.schema().unwrap();
        let batches = t.read_all().await.unwrap();
        // the partition column comes back as a dictionary or view: cast to the table schema
        batches
            .iter()
            .map(|b| {
                let cols = schema
                    .fields()
                    .iter()
                    .map(|f| cast(b.column_by_name(f.name()).unwrap(), f.data_type()).unwrap())
                    .collect();
                RecordBatch::try_new(schema.clone(), cols).unwrap()
            })
            .collect()
    })
}

fn text(b: &RecordBatch, col: &str, i: usize) -> String {
    let c = cast(b.column_by_name(col).unwrap(), &DataType::Utf8).unwrap();
    c.as_string::<i32>().value(i).to_string()
}

fn dec(b: &RecordBatch, col: &str, i: usize) -> Option<i128> {
    let c = b
        .column_by_name(col)
        .unwrap()
        .as_primitive::<Decimal128Type>();
    c.is_valid(i).then(|| c.value(i))
}

fn day(b: &RecordBatch, i: usize) -> BusinessDate {
    let c = b
        .column_by_name("business_date")
        .unwrap()
        .as_primitive::<Date32Type>();
    BusinessDate::from_days_since_epoch(c.value(i))
}

/// FNV-1a of the bytes of every file of every output, per (table, date), sorted.
fn output_hashes(rt: &tokio::runtime::Runtime, lake: &Path) -> BTreeMap<String, Vec<u64>> {
    rt.block_on(async {
        let lake = open(lake).await;
        let mut out = BTreeMap::new();
        for name in OUTPUTS {
            let t = lake.table(name).await.unwrap();
            for uri in t.file_uris().unwrap() {
                let path = uri.strip_prefix("file://").unwrap_or(&uri).to_string();
                let date = path
                    .split('/')
                    .find_map(|p| p.strip_prefix("business_date="))
                    .unwrap()
                    .to_string();
                let bytes = std::fs::read(&path).unwrap();
                out.entry(format!("{name} {date}"))
                    .or_insert_with(Vec::new)
                    .push(lakehouse_simulator::truth::fnv1a(&bytes));
            }
        }
        for v in out.values_mut() {
            v.sort_unstable();
        }
        out
    })
}

fn batch_run(d: &Path, lake: &Path, threads: &str, from: BusinessDate, to: BusinessDate) {
    let mut c = lakehouse(d);
    c.args(["batch", "run", "--lake"])
        .arg(lake)
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .env("POLARS_MAX_THREADS", threads);
    ok(c);
}

#[test]
fn simulated_days_equal_the_truth_reruns_are_byte_identical_and_a_killed_run_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_broker, brokers) = broker(d);
    let lake = d.join("lake");
    // one partition per topic: Kafka offsets follow the truth's send order; a short session
    // and a fast clock make ~3 business days of 25k events
    std::fs::write(
        d.join("lakehouse.toml"),
        format!(
            "[log]\nlevel = \"info\"\n\n[ingest]\ngroup-id = \"it-batch\"\nsession-timeout = \"6s\"\n\
             max-latency = \"300ms\"\nflush-messages = 3000\n\n\
             [simulate]\npartitions = 1\nsession = \"1h\"\ntime-scale = 500.0\nexec-amend = 0.03\n\
             exec-cancel = 0.02\nlarge-orders = 0.03\nduplicate = 0.01\n\n\
             [batch.large-trade-thresholds]\n\"*\" = \"{}\"\n",
            THRESHOLD / SCALE
        ),
    )
    .unwrap();
    let mut sim = lakehouse(d);
    sim.args([
        "simulate",
        "--brokers",
        &brokers,
        "--seed",
        "21",
        "--events",
        "25000",
    ])
    .args(["--as-fast-as-possible", "--truth"])
    .arg(d.join("truth.parquet"))
    .arg("--refdata")
    .arg(d.join("ref"));
    ok(sim);
    load_refdata(d, &lake);

    // ingest everything
    let per_topic = crate::speed::messages_per_topic(&d.join("truth.parquet"));
    let mut ingest = Ingest::spawn(d, "ingest", &brokers, None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_ingested(&rt, &lake, &mut ingest, &per_topic);
    ingest.stop();

    let rows = read_truth(&d.join("truth.parquet"));
    let dates: Vec<BusinessDate> = {
        let set: BTreeSet<BusinessDate> = rows.iter().filter_map(|r| r.ts).map(date_of).collect();
        let (first, last) = (*set.first().unwrap(), *set.last().unwrap());
        first
            .0
            .iter_days()
            .take_while(|x| *x <= last.0)
            .map(BusinessDate)
            .collect()
    };
    assert!(dates.len() >= 3, "{dates:?}");
    let (first, last) = (dates[0], *dates.last().unwrap());
    batch_run(d, &lake, "2", first, last);

    // exactness: daily bars
    let bars = truth_bars(&rows);
    let mut got_bars = BTreeMap::new();
    for b in read(&rt, &lake, names::DAILY_BARS) {
        for i in 0..b.num_rows() {
            let count = b
                .column_by_name("trade_count")
                .unwrap()
                .as_primitive::<deltalake::arrow::datatypes::Int64Type>()
                .value(i);
            got_bars.insert(
                (day(&b, i), text(&b, "symbol", i)),
                Bar {
                    open: dec(&b, "open", i).unwrap(),
                    high: dec(&b, "high", i).unwrap(),
                    low: dec(&b, "low", i).unwrap(),
                    close: dec(&b, "close", i).unwrap(),
                    vwap: dec(&b, "vwap", i).unwrap(),
                    volume: dec(&b, "volume", i).unwrap(),
                    count,
                },
            );
        }
    }
    assert!(bars.len() > 20, "{} bars", bars.len());
    assert_eq!(got_bars, bars, "daily bars differ from the truth");

    // exactness: positions, carried over the days
    let want_pos = truth_positions(&rows, &dates, &bars);
    let mut got_pos = BTreeMap::new();
    for b in read(&rt, &lake, names::POSITIONS) {
        for i in 0..b.num_rows() {
            got_pos.insert(
                (day(&b, i), text(&b, "account", i), text(&b, "symbol", i)),
                (
                    dec(&b, "net_quantity", i).unwrap(),
                    dec(&b, "avg_cost", i).unwrap(),
                    dec(&b, "realized_pnl", i).unwrap(),
                    dec(&b, "close_price", i),
                    dec(&b, "market_value", i),
                    dec(&b, "unrealized_pnl", i),
                ),
            );
        }
    }
    assert!(want_pos.len() > 100, "{} positions", want_pos.len());
    assert!(want_pos.values().any(|p| p.2 != 0), "some P&L is realized");
    for (k, v) in &want_pos {
        assert_eq!(got_pos.get(k), Some(v), "position {k:?}");
    }
    assert_eq!(got_pos.len(), want_pos.len());

    // exactness: large trades (notional at or above the threshold)
    let want_large: BTreeSet<(BusinessDate, String, i128)> = effective_fills(&rows)
        .into_iter()
        .map(|f| (date_of(f.ts), f.exec_id, round(f.price * f.quantity)))
        .filter(|(_, _, n)| *n >= THRESHOLD)
        .collect();
    let got_large: BTreeSet<(BusinessDate, String, i128)> = read(&rt, &lake, names::LARGE_TRADES)
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |i| {
                (
                    day(b, i),
                    text(b, "exec_id", i),
                    dec(b, "notional", i).unwrap(),
                )
            })
        })
        .collect();
    assert!(
        !want_large.is_empty(),
        "the threshold should catch some trades"
    );
    assert_eq!(got_large, want_large, "large trades differ from the truth");

    // determinism: 3 runs with 2 threads, one with 1, one after compacting L1
    let reference = output_hashes(&rt, &lake);
    assert_eq!(reference.len(), OUTPUTS.len() * dates.len());
    for (threads, what) in [("2", "second run"), ("2", "third run"), ("1", "one thread")] {
        batch_run(d, &lake, threads, first, last);
        assert_eq!(
            output_hashes(&rt, &lake),
            reference,
            "{what}: output bytes differ"
        );
    }
    let mut optimize = lakehouse(d);
    optimize
        .args(["table", "optimize", "--lake"])
        .arg(&lake)
        .args(["--before", &last.succ().succ().to_string()]);
    let report = ok(optimize);
    assert!(report.contains("l1/market_trades"), "{report}");
    batch_run(d, &lake, "2", first, last);
    assert_eq!(
        output_hashes(&rt, &lake),
        reference,
        "after compaction: output bytes differ"
    );

    // kill a run of the middle date while it replaces its outputs
    let mid = dates[1];
    let published = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            read_ledger(&open(&lake).await)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.business_date == mid && r.status == "succeeded")
                .count()
        })
    };
    let before = published(&rt);
    let log_dir = lake.join(names::L2_MARKET_TRADES).join("_delta_log");
    let commits = || std::fs::read_dir(&log_dir).unwrap().count();
    let n0 = commits();
    let run_mid = || {
        let mut c = lakehouse(d);
        c.args(["batch", "run", "--lake"])
            .arg(&lake)
            .args(["--date", &mid.to_string()]);
        c
    };
    let mut child = run_mid()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while commits() == n0 {
        assert!(
            Instant::now() < deadline,
            "the run never wrote its first output"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first output"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL, first output replaced, the rest not yet
    child.wait().unwrap();
    assert_eq!(published(&rt), before, "a killed run must not publish");
    // every table holds the date complete: the old or the new partition, the same rows
    assert_eq!(
        output_hashes(&rt, &lake),
        reference,
        "partial output after the kill"
    );
    ok(run_mid());
    assert_eq!(published(&rt), before + 1);
    assert_eq!(output_hashes(&rt, &lake), reference, "after the rerun");
    // the files the killed run left uncommitted go with a vacuum (L3 retention 0 for the test)
    let mut vacuum = lakehouse(d);
    vacuum.args(["table", "vacuum", "--lake"]).arg(&lake).args([
        names::L2_MARKET_TRADES,
        "--retention",
        "0s",
    ]);
    ok(vacuum);
    let part = lake
        .join(names::L2_MARKET_TRADES)
        .join(format!("business_date={mid}"));
    assert_eq!(
        std::fs::read_dir(&part).unwrap().count(),
        1,
        "one file per date left"
    );

    // Python polars and deltalake read the same totals
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/batch_totals.py");
    let out = Command::new(lakehouse_tests::python_bin().unwrap())
        .arg(script)
        .arg(&lake)
        .args(TOTALS.map(|(t, c)| format!("{t}:{c}")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (table, column) in TOTALS {
        let batches = read(&rt, &lake, table);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let sum: i128 = batches
            .iter()
            .flat_map(|b| (0..b.num_rows()).filter_map(|i| dec(b, column, i)))
            .sum();
        let want = Decimal::from_raw(sum);
        for reader in ["polars", "deltalake"] {
            let got = &py[reader][table];
            assert_eq!(got["rows"], rows, "{reader} {table} rows");
            let total: Decimal = got[column].as_str().unwrap().parse().unwrap();
            assert_eq!(total, want, "{reader} {table}.{column}");
        }
    }

    // the analyst's example, as a script and as the notebook: its checks hold on this lake
    let count = |t: &str| -> usize { read(&rt, &lake, t).iter().map(RecordBatch::num_rows).sum() };
    for got in analysis(&lake, &d.join("analysis")) {
        assert_eq!(got["vwap_mismatches"], 0, "{got}");
        assert_eq!(got["daily_bars"], count(names::DAILY_BARS), "{got}");
        assert_eq!(got["positions_rows"], count(names::POSITIONS), "{got}");
        assert_eq!(got["exposure_rows"], count(names::DESK_EXPOSURE), "{got}");
        assert!(got["dates"].as_u64().unwrap() >= 3, "{got}");
        let png = std::fs::read(got["plot"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    }
}

/// Runs the analyst's example on `lake` as a script and as the notebook (executed headless);
/// each prints its checks as JSON on its last line.
fn analysis(lake: &Path, out: &Path) -> [serde_json::Value; 2] {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let run = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "{c:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let python = lakehouse_tests::python_bin().unwrap();
    let script = run(Command::new(&python)
        .arg(format!("{examples}/analysis.py"))
        .arg(lake)
        .arg(out.join("script")));
    // the notebook: every cell run by a kernel; its last cell's output is the checks
    let notebook = run(Command::new(&python)
        .args([
            "-c",
            "import json, nbformat, nbclient, sys\n\
             nb = nbformat.read(sys.argv[1], as_version=4)\n\
             nbclient.NotebookClient(nb, kernel_name='python3', timeout=600).execute()\n\
             print(nb.cells[-1].outputs[-1]['text'].strip().splitlines()[-1])",
        ])
        .arg(format!("{examples}/notebook.ipynb"))
        .env("LAKE", lake)
        .env("OUT", out.join("notebook")));
    [script, notebook]
}

/// `examples/notebook.ipynb` holds the code cells of `examples/analysis.py` (`# %%` marks a
/// cell), so the two never drift apart.
#[test]
fn the_notebook_holds_the_scripts_cells() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let script = std::fs::read_to_string(format!("{examples}/analysis.py")).unwrap();
    let want: Vec<String> = script
        .split("# %%")
        .skip(1)
        .filter(|c| !c.starts_with(" [markdown]"))
        .map(|c| c.trim_matches('\n').to_string())
        .collect();
    let nb: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{examples}/notebook.ipynb")).unwrap())
            .unwrap();
    let got: Vec<String> = nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cell_type"] == "code")
        .map(|c| {
            c["source"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect::<String>()
        })
        .collect();
    assert_eq!(got, want);
}

/// The totals compared with the Python readers: (table, decimal column summed).
const TOTALS: [(&str, &str); 6] = [
    (names::L2_EXECUTIONS, "notional"),
    (names::L2_MARKET_TRADES, "volume"),
    (names::DAILY_BARS, "volume"),
    (names::POSITIONS, "realized_pnl"),
    (names::LARGE_TRADES, "notional"),
    (names::DESK_EXPOSURE, "gross_notional"),
];
