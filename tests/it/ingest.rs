//! `lakehouse ingest` against the real broker process: exactly once across SIGKILLs (random
//! and at failpoints inside the commit sequence), poison messages, a consumer group of three
//! with one killed, and exact decimals from the Finnhub and Protobuf encodings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray, Int32Array, Int64Array};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Decimal128Type};
use deltalake::arrow::record_batch::RecordBatch;
use lakehouse_lake::catalog::names;
use lakehouse_lake::{Lake, LakeConfig, PipelineId, TopicPartition};
use lakehouse_tests::kafka::{create_topic, produce};

/// A `lakehouse ingest` process; killed (SIGKILL) on drop.
pub(crate) struct Ingest {
    child: Child,
    log: PathBuf,
}

impl Ingest {
    pub(crate) fn spawn(dir: &Path, name: &str, brokers: &str, failpoints: Option<&str>) -> Ingest {
        Self::spawn_with(dir, name, brokers, failpoints, &[])
    }

    fn spawn_with(
        dir: &Path,
        name: &str,
        brokers: &str,
        failpoints: Option<&str>,
        extra: &[&str],
    ) -> Ingest {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(lakehouse_tests::lakehouse_bin().unwrap());
        cmd.args(["ingest", "--config"])
            .arg(dir.join("lakehouse.toml"))
            .args(["--brokers", brokers, "--lake"])
            .arg(dir.join("lake"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some(f) = failpoints {
            cmd.env("LAKEHOUSE_FAILPOINTS", f);
        }
        Ingest {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM once it consumes, then waits for the clean stop.
    pub(crate) fn stop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log_text().contains("consuming") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "ingest failed: {}", self.log_text());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ingest did not stop on SIGTERM: {}", self.log_text());
    }

    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// tansu on its SQLite engine (its memory engine loses the rest of a batch when a consumer
/// resumes inside it: see `broker::fetch_from_the_middle_of_a_producer_batch_starts_at_that_offset`).
pub(crate) fn broker(dir: &Path) -> (lakehouse_tests::Proc, String) {
    let kafka_dir = dir.join("kafka");
    std::fs::create_dir_all(&kafka_dir).unwrap();
    let proc = lakehouse_tests::kafka_durable(&kafka_dir, lakehouse_tests::free_port()).unwrap();
    let addr = proc.addr();
    (proc, addr)
}

fn write_config(dir: &Path, topics: &str) {
    std::fs::create_dir_all(dir.join("lake")).unwrap();
    std::fs::write(
        dir.join("lakehouse.toml"),
        format!(
            "[log]\nlevel = \"info\"\n\n[ingest]\ngroup-id = \"it-ingest\"\nsession-timeout = \"6s\"\n\
             max-latency = \"300ms\"\nflush-messages = 20000\n\n{topics}"
        ),
    )
    .unwrap();
}

/// xorshift: enough randomness for kill points, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn from_time() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("kill-point seed {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn order(i: usize) -> (Vec<u8>, Vec<u8>) {
    let payload = format!(
        r#"{{"order_id":"O{i}","account":"ACC-{}","trader":"T{}","symbol":"SYM{}","venue":"XNAS","side":"{}","order_type":"LIMIT","price":"{}.{:02}","quantity":{},"action":"NEW","ts":{}}}"#,
        i % 50,
        i % 7,
        i % 20,
        if i.is_multiple_of(2) { "BUY" } else { "SELL" },
        100 + i % 13,
        i % 100,
        1 + i % 500,
        1_704_205_800_000_i64 + i as i64,
    );
    (format!("SYM{}", i % 20).into_bytes(), payload.into_bytes())
}

async fn open_lake(dir: &Path) -> Lake {
    Lake::open(&LakeConfig {
        root: dir.join("lake").display().to_string(),
        ..LakeConfig::default()
    })
    .await
    .unwrap()
}

/// The table's `txn` offsets per partition of `topic`.
async fn committed(lake: &Lake, table: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let Ok(t) = lake.table(table).await else {
        return BTreeMap::new();
    };
    let tps = (0..partitions).map(|p| TopicPartition::new(topic, p));
    t.committed_offsets(&PipelineId::new("ingest"), tps)
        .await
        .unwrap()
        .into_iter()
        .map(|(tp, o)| (tp.partition.0, o.0))
        .collect()
}

fn last_offsets(produced: &BTreeMap<i32, Vec<i64>>) -> BTreeMap<i32, i64> {
    produced
        .iter()
        .map(|(p, o)| (*p, *o.last().unwrap()))
        .collect()
}

/// Waits until `table` holds every produced offset of `topic`.
async fn wait_done(
    lake: &Lake,
    table: &str,
    topic: &str,
    produced: &BTreeMap<i32, Vec<i64>>,
    procs: &mut [&mut Ingest],
) {
    let want = last_offsets(produced);
    let partitions = want.keys().max().map_or(0, |p| p + 1);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if committed(lake, table, topic, partitions).await == want {
            return;
        }
        for p in procs.iter_mut() {
            assert!(!p.exited(), "ingest exited early: {}", p.log_text());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = procs.iter().map(|p| p.log_text()).collect();
            panic!(
                "ingest did not finish: committed {:?}, want {want:?}\n{}",
                committed(lake, table, topic, partitions).await,
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn rows(lake: &Lake, table: &str) -> Vec<RecordBatch> {
    lake.table(table).await.unwrap().read_all().await.unwrap()
}

/// (partition, offset) of every row, for rows of `topic`.
fn positions(batches: &[RecordBatch], topic: &str) -> Vec<(i32, i64)> {
    let mut out = Vec::new();
    for b in batches {
        let topics = cast(b.column_by_name("_topic").unwrap(), &DataType::Utf8).unwrap();
        let topics = topics.as_string::<i32>();
        let parts = b
            .column_by_name("_partition")
            .unwrap()
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        let offs = b
            .column_by_name("_offset")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            if topics.value(i) == topic {
                out.push((parts.value(i), offs.value(i)));
            }
        }
    }
    out
}

/// Every produced (partition, offset) is in exactly one of `good` and `dead`, and nothing else is.
fn assert_exactly_once(
    produced: &BTreeMap<i32, Vec<i64>>,
    good: &[(i32, i64)],
    dead: &[(i32, i64)],
) {
    let mut all: Vec<(i32, i64)> = good.iter().chain(dead).copied().collect();
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!(n, all.len(), "{} duplicate rows", n - all.len());
    let expected: Vec<(i32, i64)> = produced
        .iter()
        .flat_map(|(p, offs)| offs.iter().map(move |o| (*p, *o)))
        .collect();
    let missing_rows: Vec<&(i32, i64)> = expected
        .iter()
        .filter(|x| all.binary_search(x).is_err())
        .collect();
    let missing = missing_rows.len();
    if missing > 0 {
        // runs of consecutive missing offsets, for the failure message
        let mut runs: Vec<(i32, i64, i64)> = Vec::new();
        for (p, o) in &missing_rows {
            match runs.last_mut() {
                Some((rp, _, last)) if rp == p && *last + 1 == *o => *last = *o,
                _ => runs.push((*p, *o, *o)),
            }
        }
        eprintln!("missing (partition, first, last): {runs:?}");
    }
    let extra = all.len() + missing - expected.len();
    assert_eq!((missing, extra), (0, 0), "missing / unexpected rows");
    // offsets are consecutive per partition (no gaps)
    for offs in produced.values() {
        assert!(offs.windows(2).all(|w| w[1] == w[0] + 1));
    }
}

const ORDERS_TOPIC: &str = "[[ingest.topics]]\ntopic = \"orders\"\nkind = \"orders\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_and_failpoints_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, brokers) = broker(dir.path());
    write_config(dir.path(), ORDERS_TOPIC);
    create_topic(&brokers, "orders", 4).await.unwrap();
    // IT_INGEST_EVENTS shrinks the run when debugging
    let n = std::env::var("IT_INGEST_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // produced live, in slices over about 50 s, while ingest is killed again and again
    let b = brokers.clone();
    let producing = tokio::spawn(async move {
        let mut produced: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for slice in (0..n).collect::<Vec<_>>().chunks(n / 60) {
            let msgs: Vec<_> = slice.iter().map(|i| order(*i)).collect();
            for (p, offs) in produce(&b, "orders", &msgs).await.unwrap() {
                produced.entry(p).or_default().extend(offs);
            }
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        produced
    });
    let lake = open_lake(dir.path()).await;
    let mut rng = Rng::from_time();
    let failpoints = [
        "ingest.before-commit=2",
        "ingest.after-dead-letters=3",
        "ingest.after-commit=2",
    ];
    let mut kills = 0;
    for round in 0..40 {
        let fp = (round % 3 == 1).then(|| failpoints[(round / 3) % 3]);
        let mut p = Ingest::spawn(dir.path(), &format!("ingest-{round}"), &brokers, fp);
        // wait for this incarnation to commit something, then kill it 0..1.5 s later
        let before = committed(&lake, names::ORDERS, "orders", 4).await;
        eprintln!("round {round}: started at {:?}", before);
        let deadline = Instant::now() + Duration::from_secs(8);
        while committed(&lake, names::ORDERS, "orders", 4).await == before
            && !p.exited()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !p.exited() {
            tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        }
        let aborted = p.exited();
        p.kill();
        kills += 1;
        eprintln!(
            "round {round}: failpoint {fp:?}, aborted by it: {aborted}, committed {:?}",
            committed(&lake, names::ORDERS, "orders", 4).await
        );
        if kills >= 10 && producing.is_finished() {
            break;
        }
    }
    assert!(kills >= 10);
    let produced = producing.await.unwrap();
    assert_eq!(produced.len(), 4);
    let mut p = Ingest::spawn(dir.path(), "ingest-final", &brokers, None);
    wait_done(&lake, names::ORDERS, "orders", &produced, &mut [&mut p]).await;
    p.stop();
    let good = positions(&rows(&lake, names::ORDERS).await, "orders");
    assert_exactly_once(&produced, &good, &[]);
    assert_eq!(good.len(), n);
    assert_eq!(
        committed(&lake, names::ORDERS, "orders", 4).await,
        last_offsets(&produced)
    );
    drop(broker);
}

/// About 1% of the messages are bad in different ways; one run is killed between the
/// dead-letter commit and the data commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_become_dead_letters_and_conservation_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, brokers) = broker(dir.path());
    write_config(dir.path(), ORDERS_TOPIC);
    create_topic(&brokers, "orders", 4).await.unwrap();
    let n = 20_000;
    let poison: [(&str, &[u8]); 5] = [
        ("json", b"{not json"),
        ("schema", br#"{"order_id":"X","account":"A"}"#),
        ("invalid", br#"{"order_id":"X","account":"A","trader":"T","symbol":"S","side":"HOLD","order_type":"LIMIT","price":"1","quantity":1,"action":"NEW","ts":0}"#),
        ("invalid", br#"{"order_id":"X","account":"A","trader":"T","symbol":"S","side":"BUY","order_type":"LIMIT","price":"-1","quantity":1,"action":"NEW","ts":0}"#),
        ("oversize", &[b' '; 2 << 20]),
    ];
    let msgs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| {
            if i % 100 == 37 {
                let (_, bad) = poison[(i / 100) % poison.len()];
                (b"bad".to_vec(), bad.to_vec())
            } else {
                order(i)
            }
        })
        .collect();
    let produced = produce(&brokers, "orders", &msgs).await.unwrap();
    let lake = open_lake(dir.path()).await;
    {
        // dies after its first dead-letter commit, before the matching data commit
        let mut p = Ingest::spawn(
            dir.path(),
            "poisoned",
            &brokers,
            Some("ingest.after-dead-letters=1"),
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while !p.exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            p.log_text().contains("failpoint ingest.after-dead-letters"),
            "{}",
            p.log_text()
        );
    }
    let mut p = Ingest::spawn(dir.path(), "ingest", &brokers, None);
    wait_done(&lake, names::ORDERS, "orders", &produced, &mut [&mut p]).await;
    p.stop();
    let good = positions(&rows(&lake, names::ORDERS).await, "orders");
    let dead_batches = rows(&lake, names::DEAD_LETTERS).await;
    let dead = positions(&dead_batches, "orders");
    assert_exactly_once(&produced, &good, &dead);
    assert_eq!(dead.len(), n / 100);
    let mut classes = BTreeMap::new();
    for b in &dead_batches {
        let c = cast(b.column_by_name("error_class").unwrap(), &DataType::Utf8).unwrap();
        for v in c.as_string::<i32>().iter() {
            *classes.entry(v.unwrap().to_string()).or_insert(0) += 1;
        }
        assert_eq!(b.column_by_name("raw").unwrap().null_count(), 0);
    }
    assert_eq!(
        classes.keys().map(String::as_str).collect::<Vec<_>>(),
        ["invalid", "json", "oversize", "schema"]
    );
    assert_eq!(classes.values().sum::<usize>(), n / 100);
}

/// Three processes in one consumer group split four partitions; one is SIGKILLed mid-run and
/// its partitions resume from the table's offsets. tansu 0.6 does not hand a crashed member's
/// partitions to the survivors when its session expires (it keeps them assigned to the dead
/// member until the next join), so a replacement process joins a few seconds after the kill,
/// as an orchestrator would restart it; the survivors keep running throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_one_killed_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, brokers) = broker(dir.path());
    write_config(dir.path(), ORDERS_TOPIC);
    create_topic(&brokers, "orders", 4).await.unwrap();
    let lake = open_lake(dir.path()).await;
    let mut a = Ingest::spawn(dir.path(), "a", &brokers, None);
    let mut b = Ingest::spawn(dir.path(), "b", &brokers, None);
    let mut c = Ingest::spawn(dir.path(), "c", &brokers, None);
    let n = 60_000;
    let mut produced: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (k, slice) in (0..n).collect::<Vec<_>>().chunks(n / 20).enumerate() {
        let msgs: Vec<_> = slice.iter().map(|i| order(*i)).collect();
        for (p, offs) in produce(&brokers, "orders", &msgs).await.unwrap() {
            produced.entry(p).or_default().extend(offs);
        }
        if k == 8 {
            b.kill();
        }
        if k == 12 {
            b = Ingest::spawn(dir.path(), "b2", &brokers, None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_done(
        &lake,
        names::ORDERS,
        "orders",
        &produced,
        &mut [&mut a, &mut c],
    )
    .await;
    a.stop();
    c.stop();
    let good = positions(&rows(&lake, names::ORDERS).await, "orders");
    assert_exactly_once(&produced, &good, &[]);
    assert_eq!(
        committed(&lake, names::ORDERS, "orders", 4).await,
        last_offsets(&produced)
    );
    // the group really was split: more than one member committed
    let history = lake
        .table(names::ORDERS)
        .await
        .unwrap()
        .history(None)
        .await
        .unwrap();
    let partitions_per_commit: BTreeSet<usize> = history
        .iter()
        .filter_map(|c| c.offsets.as_ref().map(|o| o.len()))
        .collect();
    assert!(
        partitions_per_commit.iter().any(|n| *n < 4),
        "{partitions_per_commit:?}"
    );
}

/// Finnhub-shaped JSON (many prints per message) and Protobuf land in one table with exact
/// decimals: ten prints at 0.1 sum to exactly 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finnhub_and_protobuf_messages_land_with_exact_decimals() {
    use lakehouse_proto::prost::Message as _;
    use lakehouse_proto::v1;
    let dir = tempfile::tempdir().unwrap();
    let (_broker, brokers) = broker(dir.path());
    write_config(
        dir.path(),
        "[[ingest.topics]]\ntopic = \"finnhub\"\nkind = \"market-trades\"\n\n\
         [[ingest.topics]]\ntopic = \"tape-pb\"\nkind = \"market-trades\"\nformat = \"protobuf\"\n",
    );
    create_topic(&brokers, "finnhub", 2).await.unwrap();
    create_topic(&brokers, "tape-pb", 2).await.unwrap();
    let finnhub: Vec<(Vec<u8>, Vec<u8>)> = (0..5)
        .map(|i| {
            let prints: Vec<String> = (0..2)
                .map(|j| {
                    format!(
                        r#"{{"s":"AAPL","p":0.1,"v":"{}","t":{},"c":["1"]}}"#,
                        i + j + 1,
                        1_704_205_800_000_i64 + i
                    )
                })
                .collect();
            (
                b"AAPL".to_vec(),
                format!(r#"{{"type":"trade","data":[{}]}}"#, prints.join(",")).into_bytes(),
            )
        })
        .collect();
    let pb: Vec<(Vec<u8>, Vec<u8>)> = (0..10)
        .map(|i| {
            let m = v1::MarketTrade {
                trade_id: format!("T{i}"),
                symbol: "MSFT".into(),
                venue: "XNAS".into(),
                price: "0.1".into(),
                volume: "100".into(),
                ts: Some(lakehouse_proto::prost_types::Timestamp {
                    seconds: 1_704_205_800 + i,
                    nanos: 123_456_000,
                }),
                conditions: vec!["@".into()],
            };
            (b"MSFT".to_vec(), m.encode_to_vec())
        })
        .collect();
    let p1 = produce(&brokers, "finnhub", &finnhub).await.unwrap();
    let p2 = produce(&brokers, "tape-pb", &pb).await.unwrap();
    let lake = open_lake(dir.path()).await;
    let port = lakehouse_tests::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut p = Ingest::spawn_with(
        dir.path(),
        "ingest",
        &brokers,
        None,
        &["--metrics-listen", &listen],
    );
    wait_done(&lake, names::MARKET_TRADES, "finnhub", &p1, &mut [&mut p]).await;
    wait_done(&lake, names::MARKET_TRADES, "tape-pb", &p2, &mut [&mut p]).await;
    // Prometheus metrics: consumed per topic, rows written per table
    // (counters move just after the commit a reader sees: allow a moment)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics = scrape(port);
    while !metrics.contains("consumed_total{topic=\"tape-pb\"} 10") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        metrics = scrape(port);
    }
    for line in [
        "lakehouse_ingest_messages_consumed_total{topic=\"finnhub\"} 5",
        "lakehouse_ingest_messages_consumed_total{topic=\"tape-pb\"} 10",
        "lakehouse_ingest_rows_written_total{table=\"l1/market_trades\"} 20",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    p.stop();
    let batches = rows(&lake, names::MARKET_TRADES).await;
    let mut sums: BTreeMap<String, (i128, usize)> = BTreeMap::new();
    for b in &batches {
        let sym = cast(b.column_by_name("symbol").unwrap(), &DataType::Utf8).unwrap();
        let price = b
            .column_by_name("price")
            .unwrap()
            .as_primitive::<Decimal128Type>();
        assert_eq!(price.data_type(), &DataType::Decimal128(38, 8));
        for (s, p) in sym.as_string::<i32>().iter().zip(price.iter()) {
            let e = sums.entry(s.unwrap().to_string()).or_default();
            e.0 += p.unwrap();
            e.1 += 1;
        }
    }
    // 0.1 ten times is exactly 1.00000000 at scale 8, per symbol
    assert_eq!(sums["AAPL"], (100_000_000, 10));
    assert_eq!(sums["MSFT"], (100_000_000, 10));
    let finnhub_rows = positions(&batches, "finnhub");
    assert_eq!(finnhub_rows.len(), 10); // five messages, two prints each
}

/// GET /metrics.
pub(crate) fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
