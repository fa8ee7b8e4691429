//! `lakehouse simulate` against the real broker process: determinism (identical truth files),
//! conservation (what is on the topics is exactly the truth, duplicates and malformed
//! included, in per-key order), matching sanity (an independent replay of the truth's orders
//! reproduces its executions, never crossed, cancelled orders never trade), decoding by the
//! ingest decoders, and rate control.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{
    Decimal128Type, Int64Type, TimestampMicrosecondType, UInt64Type,
};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use lakehouse_ingest::decode::{DecodeConfig, Decoded, EventKind, Format, decode_as};
use lakehouse_simulator::Encoding;
use lakehouse_simulator::truth::fnv1a;
use lakehouse_tests::kafka::consume_all;

/// Runs `lakehouse simulate ARGS` to completion and returns its stdout.
fn simulate(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(lakehouse_tests::lakehouse_bin().unwrap())
        .arg("simulate")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "simulate {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// One row of the ground truth, as the tests use it.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) message_seq: u64,
    pub(crate) topic: String,
    pub(crate) key: String,
    pub(crate) payload_hash: u64,
    pub(crate) kind: String,
    pub(crate) event_seq: Option<u64>,
    pub(crate) match_id: Option<u64>,
    pub(crate) duplicate: bool,
    pub(crate) malformed: bool,
    pub(crate) ts: Option<i64>,
    pub(crate) id: Option<String>, // order_id for orders, exec_id for executions, trade_id for prints
    pub(crate) order_id: Option<String>,
    pub(crate) ref_exec_id: Option<String>,
    pub(crate) symbol: Option<String>,
    pub(crate) account: Option<String>,
    pub(crate) side: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) lifecycle: Option<String>,
    pub(crate) price: Option<i128>,
    pub(crate) quantity: Option<i128>,
}

pub(crate) fn read_truth(path: &Path) -> Vec<Row> {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for b in reader {
        let b: RecordBatch = b.unwrap();
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let u64s = |n: &str| col(n).as_primitive::<UInt64Type>().clone();
        let strs = |n: &str| col(n).as_string::<i32>().clone();
        let bools = |n: &str| col(n).as_boolean().clone();
        let decs = |n: &str| col(n).as_primitive::<Decimal128Type>().clone();
        let opt_s = |a: &deltalake::arrow::array::StringArray, i: usize| {
            a.is_valid(i).then(|| a.value(i).to_string())
        };
        let (seq, topic, key, hash, kind) = (
            u64s("message_seq"),
            strs("topic"),
            strs("key"),
            u64s("payload_hash"),
            strs("kind"),
        );
        let (event_seq, match_id, dup, bad) = (
            u64s("event_seq"),
            u64s("match_id"),
            bools("duplicate"),
            bools("malformed"),
        );
        let ts = col("ts").as_primitive::<TimestampMicrosecondType>().clone();
        let (trade_id, order_id, exec_id, ref_exec_id) = (
            strs("trade_id"),
            strs("order_id"),
            strs("exec_id"),
            strs("ref_exec_id"),
        );
        let account = strs("account");
        let (symbol, side, action, lifecycle) = (
            strs("symbol"),
            strs("side"),
            strs("action"),
            strs("lifecycle"),
        );
        let (price, quantity) = (decs("price"), decs("quantity"));
        assert_eq!(col("delay_us").as_primitive::<Int64Type>().null_count(), 0);
        for i in 0..b.num_rows() {
            let kind = kind.value(i).to_string();
            let id = match kind.as_str() {
                "order" => opt_s(&order_id, i),
                "execution" => opt_s(&exec_id, i),
                _ => opt_s(&trade_id, i),
            };
            rows.push(Row {
                message_seq: seq.value(i),
                topic: topic.value(i).to_string(),
                key: key.value(i).to_string(),
                payload_hash: hash.value(i),
                kind,
                event_seq: event_seq.is_valid(i).then(|| event_seq.value(i)),
                match_id: match_id.is_valid(i).then(|| match_id.value(i)),
                duplicate: dup.value(i),
                malformed: bad.value(i),
                ts: ts.is_valid(i).then(|| ts.value(i)),
                id,
                order_id: opt_s(&order_id, i),
                ref_exec_id: opt_s(&ref_exec_id, i),
                symbol: opt_s(&symbol, i),
                account: opt_s(&account, i),
                side: opt_s(&side, i),
                action: opt_s(&action, i),
                lifecycle: opt_s(&lifecycle, i),
                price: price.is_valid(i).then(|| price.value(i)),
                quantity: quantity.is_valid(i).then(|| quantity.value(i)),
            });
        }
    }
    rows
}

/// The truth's messages per topic: (key, payload hash) in send order.
fn truth_messages(rows: &[Row]) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut last = None;
    for r in rows {
        if last != Some(r.message_seq) {
            out.entry(r.topic.clone())
                .or_default()
                .push((r.key.clone(), r.payload_hash));
            last = Some(r.message_seq);
        }
    }
    out
}

/// Consumes every topic of the truth and checks: the same messages, each as often (duplicates
/// and malformed included), and for every key the same order as sent; each decodes with the
/// ingest decoder to exactly the truth's events, and each malformed one is refused.
fn assert_conserved(brokers: &str, rows: &[Row], format: Encoding, tape: Encoding) {
    let ingest_format = |e: Encoding| match e {
        Encoding::Protobuf => Format::Protobuf,
        Encoding::Json | Encoding::Finnhub => Format::Json,
    };
    let expected = truth_messages(rows);
    let mut by_hash: HashMap<u64, Vec<&Row>> = HashMap::new();
    for r in rows {
        let v = by_hash.entry(r.payload_hash).or_default();
        if !r.duplicate && v.iter().all(|x| x.message_seq == r.message_seq) {
            v.push(r);
        }
    }
    for (topic, sent) in &expected {
        let got = consume_all(
            brokers,
            topic,
            sent.len(),
            Duration::from_secs(2),
            Duration::from_secs(120),
        )
        .unwrap();
        assert_eq!(got.len(), sent.len(), "{topic}: message count");
        // per key, offset order == send order (one key, one partition, idempotent producer)
        let mut got_per_key: BTreeMap<String, Vec<(i32, i64, u64)>> = BTreeMap::new();
        for m in &got {
            let key = String::from_utf8(m.key.clone().unwrap()).unwrap();
            got_per_key
                .entry(key)
                .or_default()
                .push((m.partition, m.offset, fnv1a(&m.payload)));
        }
        let mut sent_per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (k, h) in sent {
            sent_per_key.entry(k.clone()).or_default().push(*h);
        }
        assert_eq!(got_per_key.len(), sent_per_key.len(), "{topic}: keys");
        for (key, mut msgs) in got_per_key {
            assert!(
                msgs.iter().all(|m| m.0 == msgs[0].0),
                "{topic}/{key} spans partitions"
            );
            msgs.sort_unstable();
            let hashes: Vec<u64> = msgs.iter().map(|m| m.2).collect();
            assert_eq!(
                hashes, sent_per_key[&key],
                "{topic}/{key}: order or content"
            );
        }
        // decoding: malformed refused, the rest equal to the truth's events
        let kind = match rows
            .iter()
            .find(|r| &r.topic == topic)
            .unwrap()
            .kind
            .as_str()
        {
            "order" => EventKind::Orders,
            "execution" => EventKind::Executions,
            _ => EventKind::MarketTrades,
        };
        let fmt = ingest_format(if kind == EventKind::MarketTrades {
            tape
        } else {
            format
        });
        for m in &got {
            let truth = &by_hash[&fnv1a(&m.payload)];
            let decoded = decode_as(fmt, kind, &m.payload, &DecodeConfig::default());
            if truth[0].malformed {
                assert!(decoded.is_err(), "malformed message accepted: {decoded:?}");
                continue;
            }
            let decoded = decoded.unwrap_or_else(|e| panic!("{topic}: {e:?}"));
            let got: Vec<(Option<String>, i128, i128, i64)> = match decoded {
                Decoded::Order(o) => vec![(
                    Some(o.order_id),
                    o.price.map_or(0, |p| p.raw()),
                    o.quantity.raw(),
                    o.ts.micros(),
                )],
                Decoded::Execution(e) => vec![(
                    Some(e.exec_id),
                    e.price.raw(),
                    e.quantity.raw(),
                    e.ts.micros(),
                )],
                Decoded::Trades(ts) => ts
                    .into_iter()
                    .map(|t| (t.trade_id, t.price.raw(), t.volume.raw(), t.ts.micros()))
                    .collect(),
            };
            let want: Vec<(Option<String>, i128, i128, i64)> = truth
                .iter()
                .map(|r| {
                    (
                        // the Finnhub shape carries no trade id
                        if tape != Encoding::Finnhub || kind != EventKind::MarketTrades {
                            r.id.clone()
                        } else {
                            None
                        },
                        r.price.unwrap_or(0),
                        r.quantity.unwrap(),
                        r.ts.unwrap(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{topic}: decoded event differs from the truth");
        }
    }
}

/// A fill: (buy order, sell order, price, quantity).
type Fill = (String, String, i128, i128);

/// An order book written plainly (a vector per symbol, linear search), to replay the truth's
/// orders independently of the simulator's book.
#[derive(Default)]
struct NaiveBook {
    resting: Vec<(String, bool, i128, i128, u64)>, // id, buy, price, open quantity, arrival
    arrivals: u64,
}

impl NaiveBook {
    fn submit(&mut self, id: &str, buy: bool, limit: Option<i128>, mut qty: i128) -> Vec<Fill> {
        let mut fills = Vec::new();
        while qty > 0 {
            let best = self
                .resting
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.1 != buy && limit.is_none_or(|l| if buy { r.2 <= l } else { r.2 >= l })
                })
                .min_by_key(|(_, r)| (if buy { r.2 } else { -r.2 }, r.4))
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let r = &mut self.resting[i];
            let q = qty.min(r.3);
            let (b, s) = if buy {
                (id.to_string(), r.0.clone())
            } else {
                (r.0.clone(), id.to_string())
            };
            fills.push((b, s, r.2, q));
            r.3 -= q;
            qty -= q;
            if r.3 == 0 {
                self.resting.remove(i);
            }
        }
        if let (Some(l), true) = (limit, qty > 0) {
            self.arrivals += 1;
            self.resting
                .push((id.to_string(), buy, l, qty, self.arrivals));
        }
        let bid = self.resting.iter().filter(|r| r.1).map(|r| r.2).max();
        let ask = self.resting.iter().filter(|r| !r.1).map(|r| r.2).min();
        if let (Some(b), Some(a)) = (bid, ask) {
            assert!(b < a, "book crossed after {id}: bid {b} ask {a}");
        }
        fills
    }

    fn take(&mut self, id: &str) -> Option<(bool, i128)> {
        let i = self.resting.iter().position(|r| r.0 == id)?;
        let r = self.resting.remove(i);
        Some((r.1, r.3))
    }
}

/// Replays the truth's order events through [`NaiveBook`]s and checks that its executions are
/// exactly the replay's fills, in order; every match has one buyer and one seller for one
/// quantity and one print; a cancelled order never trades afterwards; every correction refers
/// to an execution sent before it.
fn assert_matching_sane(rows: &[Row]) {
    let mut events: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.duplicate && !r.malformed)
        .collect();
    events.sort_by_key(|r| r.event_seq.unwrap());
    assert!(
        events
            .windows(2)
            .all(|w| w[0].event_seq.unwrap() + 1 == w[1].event_seq.unwrap()),
        "every logical event is in the truth once"
    );
    let mut books: HashMap<String, NaiveBook> = HashMap::new();
    let mut expected: Vec<Fill> = Vec::new();
    let mut actual: BTreeMap<u64, (Vec<Fill>, usize)> = BTreeMap::new();
    let mut cancelled: HashMap<String, u64> = HashMap::new();
    let mut execs: HashMap<String, u64> = HashMap::new();
    for r in &events {
        let seq = r.event_seq.unwrap();
        match (r.kind.as_str(), r.action.as_deref(), r.lifecycle.as_deref()) {
            ("order", Some(action), _) => {
                let id = r.id.clone().unwrap();
                let book = books.entry(r.symbol.clone().unwrap()).or_default();
                let buy = r.side.as_deref() == Some("BUY");
                match action {
                    "NEW" => expected.extend(book.submit(&id, buy, r.price, r.quantity.unwrap())),
                    "MODIFY" => {
                        let (was_buy, _) = book.take(&id).expect("modify of a resting order");
                        assert_eq!(was_buy, buy);
                        expected.extend(book.submit(&id, buy, r.price, r.quantity.unwrap()));
                    }
                    "CANCEL" => {
                        let (_, open) = book.take(&id).expect("cancel of a resting order");
                        assert_eq!(Some(open), r.quantity, "cancelled quantity is the open one");
                        cancelled.insert(id, seq);
                    }
                    other => panic!("action {other}"),
                }
            }
            ("execution", _, Some("NEW")) => {
                let order = r.order_id.clone().unwrap();
                assert!(
                    !cancelled.contains_key(&order),
                    "order {order} traded after its cancel"
                );
                execs.insert(r.id.clone().unwrap(), seq);
                let m = actual.entry(r.match_id.unwrap()).or_default();
                let (b, s) = if r.side.as_deref() == Some("BUY") {
                    (order, String::new())
                } else {
                    (String::new(), order)
                };
                if m.0.is_empty() {
                    m.0.push((b, s, r.price.unwrap(), r.quantity.unwrap()));
                } else {
                    let f = &mut m.0[0];
                    assert_eq!(
                        (f.2, f.3),
                        (r.price.unwrap(), r.quantity.unwrap()),
                        "both sides"
                    );
                    assert!(f.0.is_empty() != b.is_empty(), "one buyer and one seller");
                    if f.0.is_empty() {
                        f.0 = b;
                    } else {
                        f.1 = s;
                    }
                }
            }
            ("execution", _, Some(_)) => {
                let r_id = r.ref_exec_id.as_ref().unwrap();
                assert!(execs[r_id] < seq, "a correction follows what it corrects");
            }
            ("market-trade", _, _) => {
                let m = actual.entry(r.match_id.unwrap()).or_default();
                m.1 += 1;
                assert_eq!(
                    (m.0[0].2, m.0[0].3),
                    (r.price.unwrap(), r.quantity.unwrap())
                );
            }
            other => panic!("unexpected row {other:?}"),
        }
    }
    let actual: Vec<_> = actual
        .into_values()
        .map(|(f, prints)| {
            assert_eq!(prints, 1, "one print per match");
            f.into_iter().next().unwrap()
        })
        .collect();
    assert!(actual.len() > 1000, "only {} matches", actual.len());
    assert_eq!(
        actual, expected,
        "the replay's fills are the truth's executions"
    );
}

fn write_config(dir: &Path, extra: &str) -> String {
    let path = dir.join("lakehouse.toml");
    std::fs::write(
        &path,
        format!(
            "[simulate]\npartitions = 3\nduplicate = 0.01\nmalformed = 0.01\nout-of-order = 0.05\nlate = 0.01\nexec-amend = 0.03\nexec-cancel = 0.02\n{extra}"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn same_seed_same_truth_and_the_topics_hold_exactly_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = lakehouse_tests::kafka().unwrap();
    let brokers = broker.addr();
    let cfg = write_config(d, "");
    let common = [
        "--config",
        &cfg,
        "--seed",
        "42",
        "--events",
        "40000",
        "--as-fast-as-possible",
    ];
    let out = simulate(
        d,
        &[
            &common[..],
            &[
                "--brokers",
                &brokers,
                "--truth",
                "a.parquet",
                "--refdata",
                "ra",
            ],
        ]
        .concat(),
    );
    assert!(out.contains("acknowledged by"), "{out}");
    simulate(
        d,
        &[
            &common[..],
            &["--dry-run", "--truth", "b.parquet", "--refdata", "rb"],
        ]
        .concat(),
    );
    let (a, b) = (
        std::fs::read(d.join("a.parquet")).unwrap(),
        std::fs::read(d.join("b.parquet")).unwrap(),
    );
    assert_eq!(fnv1a(&a), fnv1a(&b), "one seed, one truth");
    for f in ["instruments.csv", "accounts.csv", "fx_rates.csv"] {
        assert_eq!(
            std::fs::read(d.join("ra").join(f)).unwrap(),
            std::fs::read(d.join("rb").join(f)).unwrap(),
            "{f}"
        );
    }
    let other: Vec<&str> = common
        .iter()
        .map(|a| if *a == "42" { "43" } else { a })
        .collect();
    simulate(
        d,
        &[&other[..], &["--dry-run", "--truth", "c.parquet"]].concat(),
    );
    assert_ne!(
        fnv1a(&a),
        fnv1a(&std::fs::read(d.join("c.parquet")).unwrap())
    );

    let rows = read_truth(&d.join("a.parquet"));
    assert!(rows.iter().any(|r| r.malformed) && rows.iter().any(|r| r.duplicate));
    assert_conserved(&brokers, &rows, Encoding::Json, Encoding::Json);
    assert_matching_sane(&rows);

    // reference data agrees with the events: every symbol and account is listed, prices on
    // the tick grid, quantities on the lot grid, FX for every event date
    let inst = std::fs::read_to_string(d.join("ra/instruments.csv")).unwrap();
    let grid: HashMap<String, (i128, i128)> = inst
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let dec = |s: &str| s.parse::<lakehouse_lake::Decimal>().unwrap().raw();
            (f[0].to_string(), (dec(f[4]), dec(f[5])))
        })
        .collect();
    let accounts = std::fs::read_to_string(d.join("ra/accounts.csv")).unwrap();
    let fx = std::fs::read_to_string(d.join("ra/fx_rates.csv")).unwrap();
    for r in rows.iter().filter(|r| !r.malformed) {
        let (tick, lot) = grid[r.symbol.as_ref().unwrap()];
        assert_eq!(r.price.map_or(0, |p| p % tick), 0, "{r:?}");
        assert_eq!(r.quantity.unwrap() % lot, 0, "{r:?}");
        if r.kind != "market-trade" {
            let account = r.account.as_ref().unwrap();
            assert!(
                accounts.contains(&format!("\n{account},")),
                "{account} not listed"
            );
        }
        let date = lakehouse_lake::EventTime::from_micros(r.ts.unwrap()).utc_date();
        assert!(fx.contains(&format!("\n{date},")), "no FX for {date}");
    }
}

#[test]
fn protobuf_and_finnhub_are_conserved_and_decode_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = lakehouse_tests::kafka().unwrap();
    let brokers = broker.addr();
    let cfg = write_config(d, "large-orders = 0.2\n");
    simulate(
        d,
        &[
            "--config",
            &cfg,
            "--brokers",
            &brokers,
            "--seed",
            "7",
            "--events",
            "15000",
            "--as-fast-as-possible",
            "--format",
            "protobuf",
            "--tape-format",
            "finnhub",
            "--truth",
            "t.parquet",
        ],
    );
    let rows = read_truth(&d.join("t.parquet"));
    let prints_per_message = rows
        .iter()
        .filter(|r| r.kind == "market-trade" && !r.malformed)
        .fold(BTreeMap::<u64, usize>::new(), |mut m, r| {
            *m.entry(r.message_seq).or_default() += 1;
            m
        });
    assert!(
        prints_per_message.values().any(|&n| n > 1),
        "Finnhub messages carry sweeps"
    );
    assert_conserved(&brokers, &rows, Encoding::Protobuf, Encoding::Finnhub);
    assert_matching_sane(&rows);
}

#[test]
fn a_paced_run_keeps_its_rate_within_ten_percent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = lakehouse_tests::kafka().unwrap();
    let brokers = broker.addr();
    let started = std::time::Instant::now();
    let out = simulate(
        d,
        &[
            "--brokers",
            &brokers,
            "--seed",
            "5",
            "--rate",
            "2000",
            "--duration",
            "10s",
            "--truth",
            "t.parquet",
        ],
    );
    let wall = started.elapsed();
    let rows = read_truth(&d.join("t.parquet"));
    let mut stamps = Vec::new();
    for (topic, sent) in truth_messages(&rows) {
        let got = consume_all(
            &brokers,
            &topic,
            sent.len(),
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(got.len(), sent.len());
        stamps.extend(got.iter().map(|m| m.timestamp_ms.unwrap()));
    }
    stamps.sort_unstable();
    let span = (stamps[stamps.len() - 1] - stamps[0]) as f64 / 1000.0;
    let rate = (stamps.len() - 1) as f64 / span;
    eprintln!(
        "{} messages over {span:.2}s of producer timestamps: {rate:.0}/s (process {wall:?})\n{out}",
        stamps.len()
    );
    assert!(
        (rate - 2000.0).abs() <= 200.0,
        "achieved {rate:.0} messages/s, configured 2000"
    );
    assert!(
        (9.0..=11.0).contains(&span),
        "10 s of simulated time took {span:.2}s"
    );
}
