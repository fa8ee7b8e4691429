//! Ingest benchmark: one run, one broker, one data set.
//!
//! ```sh
//! cargo run --release -p lakehouse-tests --bin ingest-bench -- [EVENTS] [FRESHNESS_RATE]
//! ```
//!
//! Prints (1) the raw rdkafka consume rate of the topic (the ceiling), (2) the rate of
//! `lakehouse_ingest::run` landing the same messages in `l1/orders` on `file://`, and their
//! ratio; then (3) freshness: events produced at a fixed rate, each one's time from its
//! Kafka create timestamp to the moment its offset is committed in the table, p50/p99.
//! Needs tansu from `scripts/setup.sh`. A benchmark, not a test: figures vary with the machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deltalake::arrow::array::{Array, AsArray, Int32Array, Int64Array};
use deltalake::arrow::datatypes::TimestampMicrosecondType;
use lakehouse_ingest::{IngestConfig, Metrics};
use lakehouse_lake::catalog::names;
use lakehouse_lake::{Lake, LakeConfig, PipelineId, TopicPartition};
use lakehouse_tests::kafka::{create_topic, producer};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureRecord, Producer};

const PARTITIONS: i32 = 4;

fn order(i: usize) -> String {
    format!(
        r#"{{"order_id":"O{i}","account":"ACC-{}","trader":"T{}","symbol":"SYM{}","venue":"XNAS","side":"BUY","order_type":"LIMIT","price":"{}.{:02}","quantity":{},"action":"NEW","ts":{}}}"#,
        i % 50,
        i % 7,
        i % 20,
        100 + i % 13,
        i % 100,
        1 + i % 500,
        1_704_205_800_000_i64 + i as i64,
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Produces `n` orders starting at `from`, at most `rate` per second (0: as fast as possible).
async fn produce(brokers: &str, topic: &str, from: usize, n: usize, rate: u64) -> Result<()> {
    let p = producer(brokers)?;
    let started = Instant::now();
    let keys: Vec<String> = (0..20).map(|k| format!("SYM{k}")).collect();
    for i in from..from + n {
        let payload = order(i);
        let rec = FutureRecord::to(topic)
            .key(&keys[i % 20])
            .payload(&payload)
            .timestamp(now_ms());
        let mut rec = Some(rec);
        while let Some(r) = rec.take() {
            if let Err((e, r)) = p.send_result(r) {
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                    p.poll(Duration::from_millis(5));
                    rec = Some(r);
                } else {
                    anyhow::bail!("produce: {e}");
                }
            }
        }
        if rate > 0 {
            let due = started + Duration::from_secs_f64((i - from) as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    p.flush(Duration::from_secs(120))?;
    Ok(())
}

/// The raw ceiling: a plain rdkafka consumer reading every message and touching its payload.
fn raw_consume(brokers: &str, topic: &str, n: usize) -> Result<f64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-raw")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    c.subscribe(&[topic])?;
    let mut seen = 0usize;
    let mut bytes = 0usize;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < n && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m?;
            started.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    anyhow::ensure!(seen == n, "raw consumer saw {seen} of {n}");
    let secs = started.map_or(0.0, |s: Instant| s.elapsed().as_secs_f64());
    std::hint::black_box(bytes);
    Ok(n as f64 / secs)
}

async fn committed(lake: &Lake, topic: &str) -> BTreeMap<i32, i64> {
    let Ok(t) = lake.table(names::ORDERS).await else {
        return BTreeMap::new();
    };
    let tps = (0..PARTITIONS).map(|p| TopicPartition::new(topic, p));
    t.committed_offsets(&PipelineId::new("ingest"), tps)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(tp, o)| (tp.partition.0, o.0))
        .collect()
}

async fn total(lake: &Lake, topic: &str) -> i64 {
    committed(lake, topic).await.values().map(|o| o + 1).sum()
}

struct Run {
    lake: Lake,
    _dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    task: std::thread::JoinHandle<Result<lakehouse_ingest::Summary, lakehouse_ingest::IngestError>>,
}

async fn start_ingest(brokers: &str, topic: &str, group: &str) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(&LakeConfig {
        root: dir.path().display().to_string(),
        ..LakeConfig::default()
    })
    .await?;
    let mut cfg = IngestConfig {
        group_id: group.into(),
        ..IngestConfig::default()
    };
    cfg.topics.retain(|t| t.topic == "orders");
    cfg.topics[0].topic = topic.into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (b, l) = (brokers.to_string(), lake.clone());
    // its own runtime on its own thread, as `lakehouse ingest` has
    let task = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(lakehouse_ingest::run(cfg, &b, l, Metrics::new(), async {
            let _ = stopped.await;
        }))
    });
    Ok(Run {
        lake,
        _dir: dir,
        stop,
        task,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .map_or(Ok(1_000_000), |a| a.parse())
        .context("EVENTS")?;
    let rate: u64 = args
        .get(2)
        .map_or(Ok(50_000), |a| a.parse())
        .context("FRESHNESS_RATE")?;
    let broker = lakehouse_tests::kafka()?;
    let brokers = broker.addr();
    println!(
        "broker: tansu (memory engine) on {brokers}; {n} order events over {PARTITIONS} partitions"
    );

    create_topic(&brokers, "bench", PARTITIONS).await?;
    let t = Instant::now();
    produce(&brokers, "bench", 0, n, 0).await?;
    println!(
        "produce (idempotent, acks=all): {:>10.0} msgs/s",
        n as f64 / t.elapsed().as_secs_f64()
    );

    let b = brokers.clone();
    let raw = tokio::task::spawn_blocking(move || raw_consume(&b, "bench", n)).await??;
    println!("raw rdkafka consume:            {raw:>10.0} msgs/s");

    let run = start_ingest(&brokers, "bench", "bench-ingest").await?;
    let t = Instant::now();
    // the steady rate is measured from the first commit (after the group join and start-up)
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let done = total(&run.lake, "bench").await;
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= n as i64 {
            break;
        }
        anyhow::ensure!(!run.task.is_finished(), "ingest stopped early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let (t1, n1) = first.context("no commit seen")?;
    let steady = (n as i64 - n1) as f64 / t1.elapsed().as_secs_f64();
    let _ = run.stop.send(());
    run.task
        .join()
        .map_err(|_| anyhow::anyhow!("ingest panicked"))??;
    let rows = run.lake.table(names::ORDERS).await?.count_rows().await?;
    anyhow::ensure!(rows == n, "l1/orders has {rows} rows, expected {n}");
    println!(
        "ingest into l1/orders (file://): {steady:>9.0} msgs/s from the first commit ({:.0} msgs/s including group join and start-up, {secs:.1} s)",
        n as f64 / secs
    );
    println!("ingest / raw:                   {:>10.2}", steady / raw);

    // freshness at a fixed rate
    let secs = 20;
    let m = rate as usize * secs;
    create_topic(&brokers, "fresh", PARTITIONS).await?;
    let run = start_ingest(&brokers, "fresh", "bench-fresh").await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // group join
    let b = brokers.clone();
    let producing = tokio::spawn(async move { produce(&b, "fresh", 0, m, rate).await });
    // when each offset became visible: poll the table's txn offsets
    let mut visible: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new(); // partition -> (last offset, ms)
    let deadline = Instant::now() + Duration::from_secs(secs as u64 + 60);
    loop {
        let c = committed(&run.lake, "fresh").await;
        let at = now_ms();
        for (p, o) in &c {
            let v = visible.entry(*p).or_default();
            if v.last().is_none_or(|(last, _)| last < o) {
                v.push((*o, at));
            }
        }
        if c.values().map(|o| o + 1).sum::<i64>() >= m as i64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producing.await??;
    let _ = run.stop.send(());
    run.task
        .join()
        .map_err(|_| anyhow::anyhow!("ingest panicked"))??;
    let mut lat = Vec::with_capacity(m);
    for batch in run.lake.table(names::ORDERS).await?.read_all().await? {
        let parts = batch.column_by_name("_partition").context("_partition")?;
        let parts = parts
            .as_any()
            .downcast_ref::<Int32Array>()
            .context("int32")?;
        let offs = batch.column_by_name("_offset").context("_offset")?;
        let offs = offs
            .as_any()
            .downcast_ref::<Int64Array>()
            .context("int64")?;
        let kts = batch.column_by_name("_kafka_ts").context("_kafka_ts")?;
        let kts = kts.as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            if kts.is_null(i) {
                continue;
            }
            let v = &visible[&parts.value(i)];
            let k = v.partition_point(|(last, _)| *last < offs.value(i));
            if let Some((_, at)) = v.get(k) {
                lat.push(at - kts.value(i) / 1000);
            }
        }
    }
    lat.sort_unstable();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "freshness at {rate} events/s for {secs} s ({} events): p50 {} ms, p99 {} ms, max {} ms",
        lat.len(),
        q(0.5),
        q(0.99),
        lat.last().copied().unwrap_or(-1)
    );
    Ok(())
}
