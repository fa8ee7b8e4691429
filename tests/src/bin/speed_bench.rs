//! Speed-layer benchmark.
//!
//! ```sh
//! cargo run --release -p lakehouse-tests --bin speed-bench -- [EVENTS]
//! ```
//!
//! 1. Window-core throughput on one thread, 10k keys, events in time order with bounded
//!    disorder, through `lakehouse_speed::window::Operator` with the exact bar aggregate:
//!    tumbling 1 m, sliding 5 m by 1 m, and session windows (gap 30 s).
//! 2. End to end: a simulated stream already in a tansu broker (4 partitions per topic),
//!    consumed by `lakehouse_speed::run` into its views, live windows and checkpoints on a
//!    `file://` lake: messages per second until the views hold everything.
//! 3. Freshness: the simulator producing at 50k messages/s for 20 s while the speed layer
//!    runs; per message, Kafka create time to the moment the views held it, p50/p99.
//!
//! Needs tansu from `scripts/setup.sh`. A benchmark, not a test: figures vary with the
//! machine.

use std::time::Instant;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;
use lakehouse_lake::{BusinessCalendar, Decimal, Lake, LakeConfig};
use lakehouse_simulator::rng::Rng;
use lakehouse_simulator::{Outputs, SimConfig};
use lakehouse_speed::bars::{Bar, Print};
use lakehouse_speed::window::{Accumulation, Operator, WatermarkSpec, WindowKind, WindowSpec};
use lakehouse_speed::{SpeedConfig, SpeedHandle};

const KEYS: usize = 10_000;
const MINUTE: i64 = 60_000_000;

fn core(kind: WindowKind, name: &str, events: &[(usize, i64, Print)], keys: &[String]) {
    let spec = WindowSpec {
        kind,
        allowed_lateness: 5_000_000,
        early_every: Some(1_000_000),
        accumulation: Accumulation::Accumulating,
    };
    let mut op: Operator<String, Bar> = Operator::new(
        spec,
        WatermarkSpec {
            out_of_orderness: 2_000_000,
            idle_timeout: 10_000_000,
        },
    );
    let mut panes = Vec::new();
    let mut fired = 0usize;
    let started = Instant::now();
    for (i, (k, now, p)) in events.iter().enumerate() {
        op.process((i % 4) as u32, &keys[*k], p.ts, p, *now, &mut panes);
        if i % 1024 == 0 {
            op.on_processing_time(*now, &mut panes);
        }
        fired += panes.len();
        panes.clear();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "core {name:<22} {:>12.0} events/s  ({} events, {fired} panes, {} windows open, {secs:.2}s)",
        events.len() as f64 / secs,
        events.len(),
        op.open_windows()
    );
}

/// The speed layer over `topics` (a prefix) until its views hold `events` logical events or
/// `until` returns; returns the run's summary and its wall time.
async fn speed_until(
    brokers: &str,
    prefix: &str,
    lake_dir: &std::path::Path,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    handle: SpeedHandle,
) -> Result<(lakehouse_speed::Summary, f64)> {
    let mut cfg = SpeedConfig::default();
    for t in &mut cfg.topics {
        t.topic = format!("{prefix}{}", t.topic);
    }
    cfg.checkpoint_interval = Duration::from_secs(5);
    let lake = Lake::open(&LakeConfig {
        root: lake_dir.display().to_string(),
        ..Default::default()
    })
    .await?;
    let started = Instant::now();
    let summary = lakehouse_speed::run(
        cfg,
        brokers,
        lake,
        BusinessCalendar::default(),
        handle,
        stop,
    )
    .await?;
    Ok((summary, started.elapsed().as_secs_f64()))
}

fn sim(prefix: &str, events: u64) -> SimConfig {
    let mut s = SimConfig {
        seed: 3,
        events: Some(events),
        as_fast_as_possible: true,
        partitions: 4,
        ..SimConfig::default()
    };
    s.topics.market_trades = format!("{prefix}market-trades");
    s.topics.orders = format!("{prefix}orders");
    s.topics.executions = format!("{prefix}executions");
    s
}

/// The speed pipeline alone (decode, views, live windows) over simulated messages in memory.
fn pipeline_only(n: u64) -> Result<()> {
    use lakehouse_speed::pipeline::{Message, Output, Pipeline, State};
    let mut sim = lakehouse_simulator::Simulation::new(&sim("", n))?;
    let mut msgs = Vec::new();
    while sim.next(&mut msgs) {}
    let cfg = SpeedConfig::default();
    let handle = SpeedHandle::new(BusinessCalendar::default());
    let state = State::new(&cfg);
    let mut p = Pipeline::new(
        cfg,
        BusinessCalendar::default(),
        handle.views.clone(),
        state,
    );
    let mut out = Output::default();
    let mut offsets = [0i64; 3];
    let started = Instant::now();
    for m in &msgs {
        let topic = m.stream as usize;
        p.process(
            Message {
                topic,
                partition: 0,
                offset: offsets[topic],
                kafka_ts: None,
                payload: &m.payload,
            },
            1,
            &mut out,
        );
        offsets[topic] += 1;
        out.late.clear();
        out.panes.clear();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "pipeline (no Kafka):          {:>12.0} messages/s  ({} messages, {secs:.2}s)",
        msgs.len() as f64 / secs,
        msgs.len()
    );
    Ok(())
}

async fn end_to_end(brokers: &str, n: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = sim("e2e-", n);
    let outputs = Outputs {
        brokers: Some(brokers.to_string()),
        truth: None,
        refdata: None,
    };
    let never = AtomicBool::new(false);
    let produced = lakehouse_simulator::run(&cfg, &outputs, &never, &mut |_| {})?;
    // the ceiling: a bare consumer with the speed layer's fetch settings reading the same topics
    let raw = {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "raw-bench")
            .set("enable.auto.commit", "false")
            .set("fetch.min.bytes", "65536")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in ["e2e-market-trades", "e2e-orders", "e2e-executions"] {
            for p in 0..4 {
                tpl.add_partition_offset(t, p, rdkafka::Offset::Beginning)?;
            }
        }
        c.assign(&tpl)?;
        let total = produced.total();
        let started = Instant::now();
        let mut n = 0u64;
        while n < total {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                m?;
                n += 1;
            }
        }
        n as f64 / started.elapsed().as_secs_f64()
    };
    println!("raw consume (the ceiling):    {raw:>12.0} messages/s");
    let handle = SpeedHandle::new(BusinessCalendar::default());
    let views = handle.views.clone();
    let target = produced.events;
    let stop = async move {
        loop {
            let held = views.read().map(|v| v.events()).unwrap_or(0);
            if held >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (summary, secs) = speed_until(brokers, "e2e-", dir.path(), stop, handle).await?;
    let rate = summary.messages as f64 / secs;
    println!(
        "end to end from Kafka:        {rate:>12.0} messages/s  ({} messages, {} events, {secs:.2}s incl. start-up and the final checkpoint)",
        summary.messages, target
    );
    let steady = summary.messages as f64 / summary.busy.as_secs_f64().max(1e-9);
    println!(
        "  first to last message:      {steady:>12.0} messages/s  ({:.2}s)",
        summary.busy.as_secs_f64()
    );
    println!("end to end / raw consume:     {:>12.2}", rate / raw);
    Ok(())
}

async fn freshness(brokers: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = sim("fresh-", u64::MAX);
    cfg.events = None;
    cfg.duration = Some(Duration::from_secs(20));
    cfg.as_fast_as_possible = false;
    cfg.rate = 50_000.0;
    cfg.start = "now".into();
    let topics: Vec<String> = vec![
        cfg.topics.market_trades.clone(),
        cfg.topics.orders.clone(),
        cfg.topics.executions.clone(),
    ];
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    lakehouse_simulator::kafka::ensure_topics(brokers, &cfg.kafka_properties, &names, 4)?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = SpeedHandle::new(BusinessCalendar::default());
    let brokers_owned = brokers.to_string();
    let producer = std::thread::spawn(move || {
        // let the speed layer assign its partitions first
        std::thread::sleep(Duration::from_secs(3));
        let outputs = Outputs {
            brokers: Some(brokers_owned),
            truth: None,
            refdata: None,
        };
        let never = AtomicBool::new(false);
        let r = lakehouse_simulator::run(&cfg, &outputs, &never, &mut |_| {});
        std::thread::sleep(Duration::from_secs(2));
        let _ = done_tx.send(());
        r
    });
    let stop = async move {
        let _ = done_rx.await;
    };
    let (summary, _) = speed_until(brokers, "fresh-", dir.path(), stop, handle).await?;
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    println!(
        "freshness at {:.0} msgs/s:    p50 {} ms, p99 {} ms, max {} ms ({} messages)",
        produced.rate(),
        summary.freshness_quantile(0.5).unwrap_or(0),
        summary.freshness_quantile(0.99).unwrap_or(0),
        summary.freshness_quantile(1.0).unwrap_or(0),
        summary.messages
    );
    Ok(())
}

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5_000_000);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("SYM{i:05}")).collect();
    let mut rng = Rng::new(1, 0);
    // 100k events per second of event time, up to 1 s out of order; processing time follows
    let events: Vec<(usize, i64, Print)> = (0..n)
        .map(|i| {
            let t = 1_767_600_000_000_000 + i as i64 * 10;
            let ts = t - rng.below(1_000_000) as i64;
            (
                rng.below(KEYS as u64) as usize,
                t,
                Print {
                    ts,
                    partition: (i % 4) as i32,
                    offset: i as i64,
                    price: Decimal::from_raw(10_000_000_000 + rng.below(100_000_000) as i128),
                    volume: Decimal::from_raw(100_000_000 * (1 + rng.below(100) as i128)),
                },
            )
        })
        .collect();
    println!("speed-bench: {n} events, {KEYS} keys, one thread");
    core(
        WindowKind::Tumbling { size: MINUTE },
        "tumbling 1m",
        &events,
        &keys,
    );
    core(
        WindowKind::Sliding {
            size: 5 * MINUTE,
            slide: MINUTE,
        },
        "sliding 5m/1m",
        &events,
        &keys,
    );
    core(
        WindowKind::Session { gap: 30_000_000 },
        "session gap 30s",
        &events,
        &keys,
    );
    drop(events);

    pipeline_only(1_000_000)?;
    if std::env::var_os("SPEED_BENCH_NO_KAFKA").is_some() {
        return Ok(());
    }
    let broker = lakehouse_tests::kafka()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(end_to_end(&broker.addr(), 1_000_000))?;
    rt.block_on(freshness(&broker.addr()))?;
    Ok(())
}
