//! Serving benchmark: `lakehouse serve` under concurrent gRPC load, and its freshness.
//!
//! ```sh
//! cargo build --release -p lakehouse -p lakehouse-tests --bin lakehouse --bin serve-bench
//! $CARGO_TARGET_DIR/release/serve-bench [DIR] [EVENTS]
//! ```
//!
//! 1. Set-up (not measured): a tansu broker; `lakehouse simulate` puts EVENTS (default 400k)
//!    logical events on 4 partitions per topic (500 accounts, 50 symbols, about one and a half
//!    business days); `lakehouse ingest` lands them; `lakehouse batch run` publishes the first
//!    date, so the batch view holds that day and the speed view the rest; `lakehouse serve`.
//! 2. Load: 64 concurrent callers on 4 HTTP/2 connections for 10 s each: `GetPositions` of
//!    one random account, then `GetBars` (1-minute bars of a random symbol over a random hour
//!    of the data). Requests per second and p50/p99 latency as the caller sees it.
//! 3. Freshness: on a fresh broker and lake, the simulator produces 50k messages/s for 20 s
//!    while `lakehouse serve` follows; a probe print (its own symbol) is produced every 50 ms
//!    and `GetBars` polled until it shows: produced -> visible, p50/p99.
//!
//! The load generator runs on the same 2-core machine as the server. A benchmark, not a test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deltalake::arrow::array::AsArray;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use lakehouse_lake::catalog::names;
use lakehouse_lake::{Lake, LakeConfig, PipelineId, TopicPartition};
use lakehouse_proto::prost_types::Timestamp;
use lakehouse_proto::v1 as pb;
use lakehouse_proto::v1::lakehouse_client::LakehouseClient;
use tonic::transport::Channel;

const PARTITIONS: i32 = 4;
const CALLERS: usize = 64;
const CONNECTIONS: usize = 4;
const LOAD_SECONDS: u64 = 10;

/// A child process, killed on drop (its log is `DIR/NAME.log`).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lakehouse_bin() -> Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("lakehouse");
    if !bin.is_file() {
        bail!("{} not found: build it with the benchmark", bin.display());
    }
    Ok(bin)
}

fn run(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(lakehouse_bin()?)
        .arg("--config")
        .arg(dir.join("lakehouse.toml"))
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "lakehouse {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn(dir: &Path, name: &str, args: &[&str]) -> Result<Proc> {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log)?;
    let child = Command::new(lakehouse_bin()?)
        .arg("--config")
        .arg(dir.join("lakehouse.toml"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    Ok(Proc(child))
}

fn write_config(dir: &Path, brokers: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("lakehouse.toml"),
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\n\n[lake]\nroot = \"{}\"\n\n[log]\nlevel = \"warn\"\n\n\
             [ingest]\nsession-timeout = \"6s\"\nmax-latency = \"500ms\"\n\n\
             [speed]\ncheckpoint-interval = \"2s\"\n\n\
             [simulate]\npartitions = {PARTITIONS}\ntime-scale = 90.0\nsymbols = 50\naccounts = 500\n\n\
             [serving]\nmax-concurrent-requests = 512\n",
            dir.join("lake").display()
        ),
    )?;
    Ok(())
}

/// Messages per topic in a truth file.
fn per_topic(truth: &Path) -> Result<BTreeMap<String, i64>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(truth)?)?.build()?;
    let mut out = BTreeMap::new();
    for b in reader {
        let b = b?;
        let topic = b.column_by_name("topic").context("truth without topic")?;
        let topic = topic.as_string::<i32>();
        for t in topic.iter().flatten() {
            *out.entry(t.to_string()).or_insert(0) += 1;
        }
    }
    Ok(out)
}

fn load_refdata(dir: &Path) -> Result<()> {
    let r = dir.join("ref");
    let path = |f: &str| r.join(f).display().to_string();
    run(
        dir,
        &[
            "refdata",
            "load",
            "--instruments",
            &path("instruments.csv"),
            "--accounts",
            &path("accounts.csv"),
            "--fx",
            &path("fx_rates.csv"),
        ],
    )?;
    Ok(())
}

/// Waits until ingest committed every message of `expected` to L1.
async fn wait_ingested(root: &Path, expected: &BTreeMap<String, i64>) -> Result<()> {
    let tables = [
        ("market-trades", names::MARKET_TRADES),
        ("orders", names::ORDERS),
        ("executions", names::EXECUTIONS),
    ];
    let started = Instant::now();
    loop {
        let lake = Lake::open(&LakeConfig {
            root: root.display().to_string(),
            ..LakeConfig::default()
        })
        .await?;
        let mut done = true;
        for (topic, table) in tables {
            let mut n = 0;
            if let Ok(t) = lake.table(table).await {
                for p in 0..PARTITIONS {
                    let tp = TopicPartition::new(topic, p);
                    if let Some(o) = t.committed_offset(&PipelineId::new("ingest"), &tp).await? {
                        n += o.0 + 1;
                    }
                }
            }
            done &= n >= expected.get(topic).copied().unwrap_or(0);
        }
        if done {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("ingest did not land {expected:?} in 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn connect(addr: &str) -> Result<Channel> {
    let started = Instant::now();
    loop {
        match Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            Ok(c) => return Ok(c),
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e).context("serve does not listen"),
        }
    }
}

/// Waits until the server's answers cover `expected` messages per topic.
async fn wait_served(c: &Channel, expected: &BTreeMap<String, i64>) -> Result<pb::Freshness> {
    let started = Instant::now();
    loop {
        let s = LakehouseClient::new(c.clone())
            .get_status(pb::GetStatusRequest {})
            .await?
            .into_inner();
        let f = s.freshness.unwrap_or_default();
        let mut next: BTreeMap<&str, i64> = BTreeMap::new();
        for o in &f.speed_offsets {
            *next.entry(o.topic.as_str()).or_default() += o.offset;
        }
        if expected
            .iter()
            .all(|(t, n)| next.get(t.as_str()).copied().unwrap_or(0) >= *n)
        {
            return Ok(f);
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("serve did not catch up with {expected:?}: {next:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ts(us: i64) -> Timestamp {
    Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn micros(t: &Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// CPU seconds (user + system) a process used so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name (which is in parentheses)
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// `callers` tasks calling `call` for `LOAD_SECONDS`; prints requests/s, p50/p99 (ms) and the
/// cores the server (`pid`) used meanwhile.
async fn load<F, Fut>(
    name: &str,
    channels: &[Channel],
    callers: usize,
    pid: u32,
    call: F,
) -> Result<()>
where
    F: Fn(LakehouseClient<Channel>, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<usize, tonic::Status>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let mut tasks = Vec::new();
    let cpu = cpu_seconds(pid);
    let started = Instant::now();
    for i in 0..callers {
        let client = LakehouseClient::new(channels[i % channels.len()].clone());
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut errors, mut rows) = (0u64, 0usize);
            let mut n = i as u64 * 7919;
            while Instant::now() < deadline {
                n += 1;
                let t = Instant::now();
                match call(client.clone(), n).await {
                    Ok(r) => {
                        lat.push(t.elapsed().as_micros() as u64);
                        rows += r;
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, errors, rows)
        }));
    }
    let (mut all, mut errors, mut rows) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, e, r) = t.await?;
        all.extend(l);
        errors += e;
        rows += r;
    }
    all.sort_unstable();
    println!(
        "{name:<13} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   server {:.2} cores   ({} ok, {errors} failed, {:.1} rows/answer, {callers} callers on {} connections, {LOAD_SECONDS} s)",
        all.len() as f64 / LOAD_SECONDS as f64,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        (cpu_seconds(pid) - cpu) / started.elapsed().as_secs_f64(),
        all.len(),
        rows as f64 / all.len().max(1) as f64,
        channels.len().min(callers),
    );
    Ok(())
}

async fn queries(dir: &Path, events: u64) -> Result<()> {
    let broker = lakehouse_tests::kafka()?;
    write_config(dir, &broker.addr())?;
    let t = Instant::now();
    let truth = dir.join("truth.parquet");
    let n = events.to_string();
    let refdata = dir.join("ref").display().to_string();
    let truth_s = truth.display().to_string();
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        run(
            &d,
            &[
                "simulate",
                "--seed",
                "7",
                "--events",
                &n,
                "--as-fast-as-possible",
                "--truth",
                &truth_s,
                "--refdata",
                &refdata,
            ],
        )
    })
    .await??;
    load_refdata(dir)?;
    let expected = per_topic(&truth)?;
    let _ingest = spawn(dir, "ingest", &["ingest"])?;
    wait_ingested(&dir.join("lake"), &expected).await?;
    drop(_ingest);
    let d = dir.to_path_buf();
    let out =
        tokio::task::spawn_blocking(move || run(&d, &["batch", "run", "--date", "2026-01-05"]))
            .await??;
    eprintln!(
        "set-up: {events} events ({expected:?} messages) simulated, ingested, {} in {:.0} s",
        out.trim(),
        t.elapsed().as_secs_f64()
    );
    let addr = format!("127.0.0.1:{}", lakehouse_tests::free_port());
    let serve = spawn(dir, "serve", &["serve", "--listen", &addr])?;
    let first = connect(&addr).await?;
    let f = wait_served(&first, &expected).await?;
    // the batch view must be in place: its date, and the speed view holds the rest
    let started = Instant::now();
    let status = loop {
        let s = LakehouseClient::new(first.clone())
            .get_status(pb::GetStatusRequest {})
            .await?
            .into_inner();
        if s.freshness
            .as_ref()
            .is_some_and(|f| !f.batch_business_date.is_empty())
        {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("serve did not load the batch run");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "serving: batch {} + {} events in the speed view, watermark {:?}",
        status.freshness.unwrap_or_default().batch_business_date,
        status.speed_events,
        f.speed_watermark
            .map(|w| lakehouse_lake::EventTime::from_micros(micros(&w)).to_string()),
    );
    let mut channels = vec![first];
    for _ in 1..CONNECTIONS {
        channels.push(connect(&addr).await?);
    }
    let accounts: Vec<String> = std::fs::read_to_string(dir.join("ref/accounts.csv"))?
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or_default().to_string())
        .collect();
    let symbols: Vec<String> = std::fs::read_to_string(dir.join("ref/instruments.csv"))?
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or_default().to_string())
        .collect();
    let accounts = std::sync::Arc::new(accounts);
    let positions = move |mut c: LakehouseClient<Channel>, n: u64| {
        let accounts = accounts.clone();
        async move {
            let a = accounts[Rng(n.wrapping_mul(0x9e37_79b9) | 1).below(accounts.len())].clone();
            let r = c
                .get_positions(pb::GetPositionsRequest {
                    accounts: vec![a],
                    ..Default::default()
                })
                .await?;
            Ok(r.into_inner().positions.len())
        }
    };
    let pid = serve.0.id();
    // one caller alone first: the latency without load
    load("GetPositions", &channels, 1, pid, positions.clone()).await?;
    load("GetPositions", &channels, CALLERS, pid, positions).await?;
    // an hour of 1-minute bars in the trading session (from 14:30 UTC, the simulator's
    // default start), of the batch day or of the speed day
    let session = 1_767_623_400_000_000_i64; // 2026-01-05T14:30:00Z
    let symbols = std::sync::Arc::new(symbols);
    load("GetBars 1m", &channels, CALLERS, pid, move |mut c, n| {
        let symbols = symbols.clone();
        async move {
            let mut rng = Rng(n.wrapping_mul(0x2545_f491) | 1);
            let s = symbols[rng.below(symbols.len())].clone();
            let day = rng.below(2) as i64 * 86_400_000_000;
            let from = session + day + rng.below(6) as i64 * 3_600_000_000;
            let r = c
                .get_bars(pb::GetBarsRequest {
                    symbol: s,
                    interval: pb::Interval::Interval1m as i32,
                    from: Some(ts(from)),
                    to: Some(ts(from + 3_600_000_000)),
                })
                .await?;
            Ok(r.into_inner().bars.len())
        }
    })
    .await?;
    Ok(())
}

async fn freshness(dir: &Path) -> Result<()> {
    let broker = lakehouse_tests::kafka()?;
    let brokers = broker.addr();
    write_config(dir, &brokers)?;
    let refdata = dir.join("ref");
    let sim = spawn(
        dir,
        "simulate",
        &[
            "simulate",
            "--seed",
            "8",
            "--rate",
            "50000",
            "--events",
            "1000000",
            "--refdata",
            &refdata.display().to_string(),
        ],
    )?;
    let started = Instant::now();
    while !refdata.join("fx_rates.csv").is_file() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the simulator did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    load_refdata(dir)?;
    let addr = format!("127.0.0.1:{}", lakehouse_tests::free_port());
    let _serve = spawn(dir, "serve", &["serve", "--listen", &addr])?;
    let channel = connect(&addr).await?;
    let mut api = LakehouseClient::new(channel);
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()?;
    let mut samples = Vec::new();
    let mut per_minute: BTreeMap<i64, u64> = BTreeMap::new();
    let probe_started = Instant::now();
    let mut k = 0u64;
    while probe_started.elapsed() < Duration::from_secs(20) {
        // an event time just past the served watermark: the probe is on time, like the stream
        let status = api.get_status(pb::GetStatusRequest {}).await?.into_inner();
        let Some(w) = status.freshness.and_then(|f| f.speed_watermark) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let t = micros(&w) + 1_000_000;
        let minute = t - t.rem_euclid(60_000_000);
        k += 1;
        let payload = serde_json::json!({
            "trade_id": format!("PROBE-{k}"), "symbol": "ZZPROBE", "price": "1.5",
            "volume": "1", "ts": t / 1000,
        })
        .to_string();
        let produced = Instant::now();
        producer
            .send(
                rdkafka::producer::FutureRecord::to("market-trades")
                    .key("ZZPROBE")
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        let want = {
            let n = per_minute.entry(minute).or_default();
            *n += 1;
            *n
        };
        loop {
            let r = api
                .get_bars(pb::GetBarsRequest {
                    symbol: "ZZPROBE".into(),
                    interval: pb::Interval::Interval1m as i32,
                    from: Some(ts(minute)),
                    to: Some(ts(minute + 60_000_000)),
                })
                .await;
            if let Ok(r) = r
                && r.get_ref().bars.iter().any(|b| b.trade_count >= want)
            {
                samples.push(produced.elapsed().as_micros() as u64);
                break;
            }
            if produced.elapsed() > Duration::from_secs(30) {
                bail!("probe {k} not visible after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = api.get_status(pb::GetStatusRequest {}).await?.into_inner();
    drop(sim);
    samples.sort_unstable();
    println!(
        "freshness     produced -> visible in GetBars: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} probes; the simulator at 50k msgs/s, {} events in the speed view at the end)",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
        samples.len(),
        status.speed_events,
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).map_or("/tmp/serve-bench", String::as_str));
    let events: u64 = args.get(2).map_or(Ok(400_000), |s| s.parse())?;
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(queries(&dir.join("queries"), events))?;
    rt.block_on(freshness(&dir.join("freshness")))?;
    Ok(())
}
