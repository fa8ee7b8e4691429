//! Serving end to end with real processes: `lakehouse simulate` (paced) -> the broker ->
//! `lakehouse ingest` + `lakehouse speed` + `lakehouse serve`, with a batch run published
//! mid-stream.
//!
//! - Every answer sampled while the batch run is published equals the same query computed
//!   here, from the simulator's ground truth, over exactly the events its freshness names
//!   (speed offsets): no event is seen twice or missed across the switch.
//! - Positions (net, average cost, realized, mark), daily and 1-minute bars equal the truth
//!   before the batch publishes, after, after late events for the reported date arrive, and
//!   after the next run restated that date.
//! - Entitlements: 1000 random requests from several principals (foreign ids, wildcards, bad
//!   and missing tokens): no row outside the caller's scope, foreign ids refused, a scoped
//!   answer is the unrestricted one filtered to the scope.
//! - The Python example client (stubs generated from proto/) gets the same positions and bars.
//! - Audit: `system/query_audit` holds one row per request made, refused ones included.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deltalake::arrow::array::AsArray;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use lakehouse_lake::catalog::names;
use lakehouse_lake::{BusinessDate, Decimal, EventTime};
use lakehouse_proto::v1 as pb;
use pb::lakehouse_client::LakehouseClient;
use sha2::Digest;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::batch::{
    Bar, Pos, bars_by, date_of, effective_fills, events, lakehouse, load_refdata, ok, round,
    wait_ingested,
};
use crate::ingest::{Ingest, broker, scrape};
use crate::simulate::{Row, read_truth};
use crate::speed::{Speed, messages_per_topic, open, until};

/// A `lakehouse serve` process; SIGKILLed on drop, [`Serve::stop`] for the graceful stop.
struct Serve {
    child: Child,
    addr: String,
    /// Port of its Prometheus metrics (`[serving] metrics-listen`).
    metrics: u16,
    log: PathBuf,
}

impl Serve {
    fn spawn(d: &Path, brokers: &str) -> Serve {
        let port = lakehouse_tests::free_port();
        let log = d.join("serve.log");
        let out = std::fs::File::create(&log).unwrap();
        let addr = format!("127.0.0.1:{port}");
        let metrics = lakehouse_tests::free_port();
        let child = lakehouse(d)
            .args(["serve", "--brokers", brokers, "--listen", &addr, "--lake"])
            .arg(d.join("lake"))
            .env(
                "LAKEHOUSE__SERVING__METRICS_LISTEN",
                format!("127.0.0.1:{metrics}"),
            )
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut s = Serve {
            child,
            addr,
            metrics,
            log,
        };
        until(
            Duration::from_secs(60),
            || format!("serve did not listen:\n{}", s.log_text()),
            || std::net::TcpStream::connect(&s.addr).is_ok(),
        );
        assert!(s.child.try_wait().unwrap().is_none(), "{}", s.log_text());
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and a clean exit (which flushes the audit).
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "serve exited with {s}:\n{}", self.log_text());
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Auth(Option<String>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(r)
    }
}

/// Requests made, per (principal as audited, method, status).
type Tally = Arc<Mutex<BTreeMap<(String, String, String), i64>>>;

/// A client that counts every request it makes.
#[derive(Clone)]
struct Caller {
    api: LakehouseClient<InterceptedService<Channel, Auth>>,
    who: String,
    tally: Tally,
}

impl Caller {
    fn new(channel: &Channel, token: Option<&str>, who: &str, tally: &Tally) -> Caller {
        Caller {
            api: LakehouseClient::with_interceptor(
                channel.clone(),
                Auth(token.map(str::to_string)),
            ),
            who: who.to_string(),
            tally: tally.clone(),
        }
    }

    fn note<T>(&self, method: &str, r: &Result<T, Status>) {
        let status = match r {
            Ok(_) => "Ok".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        *self
            .tally
            .lock()
            .unwrap()
            .entry((self.who.clone(), method.to_string(), status))
            .or_default() += 1;
    }

    async fn positions(
        &self,
        r: pb::GetPositionsRequest,
    ) -> Result<pb::GetPositionsResponse, Status> {
        let out = self
            .api
            .clone()
            .get_positions(r)
            .await
            .map(|r| r.into_inner());
        self.note("GetPositions", &out);
        out
    }

    async fn bars(&self, r: pb::GetBarsRequest) -> Result<pb::GetBarsResponse, Status> {
        let out = self.api.clone().get_bars(r).await.map(|r| r.into_inner());
        self.note("GetBars", &out);
        out
    }

    async fn exposure(&self, r: pb::GetExposureRequest) -> Result<pb::GetExposureResponse, Status> {
        let out = self
            .api
            .clone()
            .get_exposure(r)
            .await
            .map(|r| r.into_inner());
        self.note("GetExposure", &out);
        out
    }

    async fn large_trades(
        &self,
        r: pb::ListLargeTradesRequest,
    ) -> Result<pb::ListLargeTradesResponse, Status> {
        let out = self
            .api
            .clone()
            .list_large_trades(r)
            .await
            .map(|r| r.into_inner());
        self.note("ListLargeTrades", &out);
        out
    }

    async fn report(&self, date: BusinessDate) -> Result<Vec<pb::TransactionReportRow>, Status> {
        let r = pb::StreamTransactionReportRequest {
            business_date: date.to_string(),
            chunk_rows: 97,
        };
        let started = self.api.clone().stream_transaction_report(r).await;
        self.note("StreamTransactionReport", &started);
        let mut stream = started?.into_inner();
        let mut rows = Vec::new();
        while let Some(chunk) = stream.message().await? {
            rows.extend(chunk.rows);
        }
        Ok(rows)
    }

    /// The first `n` messages of a WatchPositions stream (within 60 s).
    async fn watch(&self, n: usize) -> Result<Vec<pb::PositionsUpdate>, Status> {
        let r = pb::WatchPositionsRequest {
            filter: Some(all_positions()),
            min_interval_ms: 200,
        };
        let started = self.api.clone().watch_positions(r).await;
        self.note("WatchPositions", &started);
        first(started?.into_inner(), n).await
    }

    /// The first `n` live 1-minute bar panes of `symbol` (within 60 s).
    async fn live_bars(&self, symbol: &str, n: usize) -> Result<Vec<pb::BarUpdate>, Status> {
        let r = pb::SubscribeBarsRequest {
            symbols: vec![symbol.to_string()],
            interval: pb::Interval::Interval1m as i32,
        };
        let started = self.api.clone().subscribe_bars(r).await;
        self.note("SubscribeBars", &started);
        first(started?.into_inner(), n).await
    }

    async fn status(&self) -> Result<pb::GetStatusResponse, Status> {
        let out = self
            .api
            .clone()
            .get_status(pb::GetStatusRequest {})
            .await
            .map(|r| r.into_inner());
        self.note("GetStatus", &out);
        out
    }
}

/// The first `n` messages of a server stream, failing after 120 s (a 1-minute bar pane
/// closes with the simulated clock, which slows when the machine is busy: 60 s ran out once
/// with a release build beside the tests).
async fn first<T>(mut s: tonic::Streaming<T>, n: usize) -> Result<Vec<T>, Status> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, s.message()).await {
            Ok(Ok(Some(m))) => out.push(m),
            Ok(Ok(None)) => return Err(Status::aborted("the stream ended")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Status::deadline_exceeded(format!("{} of {n}", out.len()))),
        }
    }
    Ok(out)
}

fn sha256(s: &str) -> String {
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn dec(s: &str) -> Option<i128> {
    (!s.is_empty()).then(|| s.parse::<Decimal>().unwrap().raw())
}

fn text(v: i128) -> String {
    Decimal::from_raw(v).to_string()
}

fn ts(us: i64) -> lakehouse_proto::prost_types::Timestamp {
    lakehouse_proto::prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn micros(t: &lakehouse_proto::prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

/// The next offset per topic (one partition each) of a freshness message.
fn speed_next(f: &pb::Freshness) -> BTreeMap<String, i64> {
    f.speed_offsets
        .iter()
        .map(|o| (o.topic.clone(), o.offset))
        .collect()
}

/// The simulator's ground truth with every message's Kafka offset (one partition per topic:
/// the send order), plus the events this test produced itself.
struct Truth {
    rows: Vec<Row>,
    offset: HashMap<u64, i64>,
}

impl Truth {
    fn read(path: &Path) -> Truth {
        let rows = read_truth(path);
        let mut by_topic: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for r in &rows {
            by_topic.entry(&r.topic).or_default().push(r.message_seq);
        }
        let mut offset = HashMap::new();
        for seqs in by_topic.values_mut() {
            seqs.sort_unstable();
            for (i, s) in seqs.iter().enumerate() {
                offset.insert(*s, i as i64);
            }
        }
        Truth { rows, offset }
    }

    /// The ground truths of several runs in the order they ran, as one: each run's messages
    /// follow the earlier runs' on every topic.
    fn read_runs(paths: &[PathBuf]) -> Truth {
        let mut all = Truth {
            rows: Vec::new(),
            offset: HashMap::new(),
        };
        let mut base: BTreeMap<String, i64> = BTreeMap::new();
        for (run, path) in paths.iter().enumerate() {
            let one = Truth::read(path);
            for mut r in one.rows {
                let o = one.offset[&r.message_seq] + base.get(&r.topic).copied().unwrap_or(0);
                r.message_seq += (run as u64) << 40;
                all.offset.insert(r.message_seq, o);
                all.rows.push(r);
            }
            base = all.per_topic();
        }
        all
    }

    /// The messages before `next` (per topic).
    fn prefix(&self, next: &BTreeMap<String, i64>) -> Vec<Row> {
        self.rows
            .iter()
            .filter(|r| self.offset[&r.message_seq] < next.get(&r.topic).copied().unwrap_or(0))
            .cloned()
            .collect()
    }

    /// The messages an answer with freshness `f` covers: those the batch boundary covers
    /// (dates up to the run's, offsets up to the boundary) and every one below the speed
    /// offsets. The speed layer may lag behind a new run's boundary for a while.
    fn served(&self, f: &pb::Freshness) -> Vec<Row> {
        let next = speed_next(f);
        let date: Option<BusinessDate> =
            (!f.batch_business_date.is_empty()).then(|| f.batch_business_date.parse().unwrap());
        let boundary: BTreeMap<&str, i64> = f
            .boundary_offsets
            .iter()
            .map(|o| (o.topic.as_str(), o.offset))
            .collect();
        self.rows
            .iter()
            .filter(|r| {
                let offset = self.offset[&r.message_seq];
                let batch = date.is_some_and(|d| r.ts.is_some_and(|t| date_of(t) <= d))
                    && boundary.get(r.topic.as_str()).is_some_and(|&b| offset <= b);
                batch || offset < next.get(&r.topic).copied().unwrap_or(0)
            })
            .cloned()
            .collect()
    }

    /// Messages per topic.
    fn per_topic(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for r in &self.rows {
            *out.entry(r.topic.clone()).or_default() += 1;
        }
        out
    }
}

/// (account, symbol) -> (net, avg cost, realized, mark) over every effective fill, the mark
/// being the symbol's latest print by (time, offset).
type Book = BTreeMap<(String, String), (i128, i128, i128, Option<i128>)>;

fn truth_book(rows: &[Row]) -> Book {
    let mut book: BTreeMap<(String, String), Pos> = BTreeMap::new();
    for f in effective_fills(rows) {
        book.entry((f.account.clone(), f.symbol.clone()))
            .or_default()
            .apply(f.buy, f.price, f.quantity);
    }
    let mut last: BTreeMap<String, (i64, u64, i128)> = BTreeMap::new();
    for r in events(rows, "market-trade") {
        let k = (r.ts.unwrap(), r.message_seq, r.price.unwrap());
        let e = last.entry(r.symbol.clone().unwrap()).or_insert(k);
        if (k.0, k.1) > (e.0, e.1) {
            *e = k;
        }
    }
    book.into_iter()
        .map(|((a, s), p)| {
            let mark = last.get(&s).map(|l| l.2);
            ((a, s), (p.net, p.avg, p.realized, mark))
        })
        .collect()
}

fn served_book(r: &pb::GetPositionsResponse) -> Book {
    let mut out = Book::new();
    for p in &r.positions {
        let (net, avg, realized) = (
            dec(&p.net_quantity).unwrap(),
            dec(&p.avg_cost).unwrap(),
            dec(&p.realized_pnl).unwrap(),
        );
        let mark = dec(&p.mark_price);
        // the derived values follow from the others
        assert_eq!(dec(&p.market_value), mark.map(|m| round(net * m)), "{p:?}");
        assert_eq!(
            dec(&p.unrealized_pnl),
            mark.map(|m| round((m - avg) * net)),
            "{p:?}"
        );
        let dup = out.insert(
            (p.account.clone(), p.symbol.clone()),
            (net, avg, realized, mark),
        );
        assert!(dup.is_none(), "{p:?} twice");
    }
    out
}

fn served_bars(r: &pb::GetBarsResponse, key: impl Fn(&pb::Bar) -> String) -> BTreeMap<String, Bar> {
    r.bars
        .iter()
        .map(|b| {
            (
                key(b),
                Bar {
                    open: dec(&b.open).unwrap(),
                    high: dec(&b.high).unwrap(),
                    low: dec(&b.low).unwrap(),
                    close: dec(&b.close).unwrap(),
                    vwap: dec(&b.vwap).unwrap(),
                    volume: dec(&b.volume).unwrap(),
                    count: b.trade_count as i64,
                },
            )
        })
        .collect()
}

/// The symbols of the prints in `rows`, busiest first.
fn busiest(rows: &[Row]) -> Vec<String> {
    let mut n: BTreeMap<String, usize> = BTreeMap::new();
    for r in events(rows, "market-trade") {
        *n.entry(r.symbol.clone().unwrap()).or_default() += 1;
    }
    let mut v: Vec<_> = n.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().map(|(s, _)| s).collect()
}

fn day_start(d: BusinessDate) -> i64 {
    d.0.and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

/// One query family compared with the truth over exactly the events an answer covers.
struct Check<'a> {
    truth: &'a Truth,
    from: i64,
    to: i64,
}

impl Check<'_> {
    fn positions(&self, r: &pb::GetPositionsResponse, what: &str) {
        let rows = self.truth.served(r.freshness.as_ref().unwrap());
        let want = truth_book(&rows);
        let got = served_book(r);
        if got != want {
            let diff: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, v)| format!("{k:?}: want {v:?} got {:?}", got.get(k)))
                .chain(
                    got.keys()
                        .filter(|k| !want.contains_key(*k))
                        .map(|k| format!("{k:?}: not in the truth")),
                )
                .take(10)
                .collect();
            // the executions of the first differing key, for the diagnosis
            let key = want
                .iter()
                .find(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .or_else(|| got.keys().find(|k| !want.contains_key(*k)).cloned())
                .unwrap();
            let execs: Vec<String> = self
                .truth
                .rows
                .iter()
                .filter(|x| x.kind == "execution")
                .filter(|x| {
                    x.account.as_deref() == Some(&key.0) && x.symbol.as_deref() == Some(&key.1)
                })
                .map(|x| {
                    format!(
                        "offset {} ts {:?} {:?} {:?} {:?} ref {:?} {:?}x{:?} dup {} bad {}",
                        self.truth.offset[&x.message_seq],
                        x.ts.map(|t| EventTime::from_micros(t).to_string()),
                        x.id,
                        x.lifecycle,
                        x.side,
                        x.ref_exec_id,
                        x.price,
                        x.quantity,
                        x.duplicate,
                        x.malformed
                    )
                })
                .collect();
            panic!(
                "{what}: positions differ from the truth at {:?} ({} of {} keys differ):\n{}\n\
                 executions of {key:?}:\n{}",
                r.freshness,
                diff.len(),
                want.len(),
                diff.join("\n"),
                execs.join("\n")
            );
        }
    }

    fn daily(&self, symbol: &str, r: &pb::GetBarsResponse, what: &str) {
        let rows = self.truth.served(r.freshness.as_ref().unwrap());
        let want: BTreeMap<String, Bar> = bars_by(&rows, date_of)
            .into_iter()
            .filter(|((_, s), _)| s == symbol)
            .map(|((d, _), b)| (d.to_string(), b))
            .collect();
        let got = served_bars(r, |b| b.business_date.clone());
        assert_eq!(
            got, want,
            "{what}: daily bars of {symbol} at {:?}",
            r.freshness
        );
    }

    /// Checks the 1-minute bars of `symbol` in [from, to); how many minutes had prints.
    fn minutes(&self, symbol: &str, r: &pb::GetBarsResponse, what: &str) -> usize {
        let rows = self.truth.served(r.freshness.as_ref().unwrap());
        let want: BTreeMap<String, Bar> = bars_by(&rows, |t| t - t.rem_euclid(60_000_000))
            .into_iter()
            .filter(|((m, s), _)| s == symbol && (self.from..self.to).contains(m))
            .map(|((m, _), b)| (EventTime::from_micros(m).to_string(), b))
            .collect();
        let got = served_bars(r, |b| {
            EventTime::from_micros(micros(b.start.as_ref().unwrap())).to_string()
        });
        assert_eq!(got, want, "{what}: 1m bars of {symbol}");
        want.len()
    }
}

/// Runs the Python example client (`examples/python/lakehouse_client.py`) against `server`
/// and returns the JSON it prints.
fn python_client(server: &str, token: Option<&str>, args: &[&str]) -> serde_json::Value {
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/python/lakehouse_client.py"
    );
    let mut cmd = Command::new(lakehouse_tests::python_bin().unwrap());
    cmd.arg(client).args(["--server", server]).args(args);
    if let Some(t) = token {
        cmd.env("LAKEHOUSE_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn bars_req(symbol: &str, interval: pb::Interval, from: i64, to: i64) -> pb::GetBarsRequest {
    pb::GetBarsRequest {
        symbol: symbol.to_string(),
        interval: interval as i32,
        from: Some(ts(from)),
        to: Some(ts(to)),
    }
}

fn all_positions() -> pb::GetPositionsRequest {
    pb::GetPositionsRequest {
        include_flat: true,
        ..Default::default()
    }
}

/// Events of dates up to `date` the speed view holds beyond the boundary of `f`: the late
/// events waiting for a restatement.
fn pending(truth: &Truth, f: &pb::Freshness, date: BusinessDate) -> u64 {
    let boundary: BTreeMap<&str, i64> = f
        .boundary_offsets
        .iter()
        .map(|o| (o.topic.as_str(), o.offset))
        .collect();
    truth
        .prefix(&speed_next(f))
        .iter()
        .filter(|r| !r.duplicate && !r.malformed)
        .filter(|r| date_of(r.ts.unwrap()) <= date)
        .filter(|r| {
            truth.offset[&r.message_seq] > boundary.get(r.topic.as_str()).copied().unwrap_or(-1)
        })
        .count() as u64
}

/// Waits until the server's answers cover `per_topic` messages.
fn wait_served(rt: &tokio::runtime::Runtime, c: &Caller, per_topic: &BTreeMap<String, i64>) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = rt.block_on(c.status()).unwrap();
        let next = speed_next(s.freshness.as_ref().unwrap());
        if per_topic
            .iter()
            .all(|(t, n)| next.get(t).copied().unwrap_or(0) >= *n)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "serving did not catch up with {per_topic:?}: {next:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the served batch run is for `date`.
fn wait_batch(rt: &tokio::runtime::Runtime, c: &Caller, date: BusinessDate) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = rt.block_on(c.status()).unwrap();
        if s.freshness.unwrap().batch_business_date == date.to_string() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "serving did not switch to {date}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `system/query_audit` counted per (principal, method, status).
fn audit_rows(
    rt: &tokio::runtime::Runtime,
    lake: &Path,
) -> BTreeMap<(String, String, String), i64> {
    let mut audited = BTreeMap::new();
    rt.block_on(async {
        let l = open(lake).await;
        let t = l.table(names::QUERY_AUDIT).await.unwrap();
        for b in t.read_all().await.unwrap() {
            let col = |n: &str| cast(b.column_by_name(n).unwrap(), &DataType::Utf8).unwrap();
            let (who, method, status) = (col("principal"), col("method"), col("status"));
            let latency = cast(b.column_by_name("latency_us").unwrap(), &DataType::Int64).unwrap();
            for i in 0..b.num_rows() {
                assert!(latency.as_primitive::<Int64Type>().value(i) >= 0);
                *audited
                    .entry((
                        who.as_string::<i32>().value(i).to_string(),
                        method.as_string::<i32>().value(i).to_string(),
                        status.as_string::<i32>().value(i).to_string(),
                    ))
                    .or_default() += 1;
            }
        }
    });
    audited
}

/// A principal of the test: token, audit name, scope.
struct Principal {
    name: &'static str,
    token: &'static str,
    desks: Vec<String>,
    accounts: Vec<String>,
}

impl Principal {
    fn all(&self) -> bool {
        self.desks.iter().any(|d| d == "*") || self.accounts.iter().any(|a| a == "*")
    }

    fn sees_account(&self, account: &str, desk_of: &BTreeMap<String, String>) -> bool {
        self.all()
            || self.accounts.iter().any(|a| a == account)
            || desk_of.get(account).is_some_and(|d| self.desks.contains(d))
    }

    fn sees_desk(&self, desk: &str) -> bool {
        self.all() || self.desks.iter().any(|d| d == desk)
    }

    fn toml(&self) -> String {
        format!(
            "[[serving.principals]]\nname = \"{}\"\ntoken-sha256 = \"{}\"\ndesks = {:?}\naccounts = {:?}\n",
            self.name,
            sha256(self.token),
            self.desks,
            self.accounts
        )
    }
}

/// (account, desk) of the reference data the simulator wrote.
fn accounts(refdata: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(refdata.join("accounts.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect()
}

/// symbol -> currency.
fn currencies(refdata: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(refdata.join("instruments.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let (s, c) = (col("symbol"), col("currency"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[s].to_string(), f[c].to_string())
        })
        .collect()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    fn some<T: Clone>(&mut self, v: &[T], max: usize) -> Vec<T> {
        (0..self.below(max + 1))
            .map(|_| self.pick(v).clone())
            .collect()
    }
}

/// Late events for `date`, produced after it was reported: three new executions, an amend and
/// a cancel of executions the batch run holds, and two prints. Returns their truth rows.
fn late_events(
    rt: &tokio::runtime::Runtime,
    brokers: &str,
    truth: &Truth,
    date: BusinessDate,
    currency: &BTreeMap<String, String>,
) -> Vec<(Row, i64)> {
    let fills: Vec<_> = effective_fills(&truth.rows)
        .into_iter()
        .filter(|f| date_of(f.ts) == date)
        .collect();
    let corrected: BTreeSet<String> = truth
        .rows
        .iter()
        .filter_map(|r| r.ref_exec_id.clone())
        .collect();
    let plain: Vec<_> = fills
        .iter()
        .filter(|f| !corrected.contains(&f.exec_id))
        .collect();
    assert!(plain.len() > 10, "{} plain fills on {date}", plain.len());
    let mut seq = truth.rows.iter().map(|r| r.message_seq).max().unwrap() + 1;
    let mut row = |topic: &str, kind: &str, ts_ms: i64| {
        seq += 1;
        Row {
            message_seq: seq,
            topic: topic.to_string(),
            key: String::new(),
            payload_hash: 0,
            kind: kind.to_string(),
            event_seq: None,
            match_id: None,
            duplicate: false,
            malformed: false,
            ts: Some(ts_ms * 1000),
            id: None,
            order_id: None,
            ref_exec_id: None,
            symbol: None,
            account: None,
            side: None,
            action: None,
            lifecycle: None,
            price: None,
            quantity: None,
        }
    };
    let mut execs = Vec::new();
    let exec = |r: &Row| {
        serde_json::json!({
            "exec_id": r.id, "order_id": r.order_id, "account": r.account, "trader": "T-LATE",
            "symbol": r.symbol, "venue": "XLATE", "side": r.side,
            "price": text(r.price.unwrap()), "quantity": text(r.quantity.unwrap()),
            "currency": currency[r.symbol.as_ref().unwrap()], "ts": r.ts.unwrap() / 1000,
            "lifecycle": r.lifecycle, "ref_exec_id": r.ref_exec_id,
        })
    };
    for (i, f) in plain.iter().take(3).enumerate() {
        let mut r = row("executions", "execution", f.ts / 1000 + 1);
        r.id = Some(format!("LATE-E{i}"));
        r.order_id = Some(format!("LATE-O{i}"));
        r.account = Some(f.account.clone());
        r.symbol = Some(f.symbol.clone());
        // the opposite side of an existing fill: realized P&L moves too
        r.side = Some(if f.buy { "SELL" } else { "BUY" }.to_string());
        r.lifecycle = Some("NEW".into());
        r.price = Some(f.price + 1_000_000);
        r.quantity = Some(f.quantity);
        execs.push(r);
    }
    for (i, (f, lifecycle)) in plain[5..7].iter().zip(["AMEND", "CANCEL"]).enumerate() {
        let mut r = row("executions", "execution", f.ts / 1000 + 1);
        r.id = Some(format!("LATE-C{i}"));
        r.order_id = Some(format!("LATE-CO{i}"));
        r.ref_exec_id = Some(f.exec_id.clone());
        r.account = Some(f.account.clone());
        r.symbol = Some(f.symbol.clone());
        r.side = Some(if f.buy { "BUY" } else { "SELL" }.to_string());
        r.lifecycle = Some(lifecycle.into());
        r.price = Some(f.price);
        r.quantity = Some(f.quantity * 2);
        execs.push(r);
    }
    let prints: Vec<_> = events(&truth.rows, "market-trade")
        .into_iter()
        .filter(|r| date_of(r.ts.unwrap()) == date)
        .collect();
    let mut trades = Vec::new();
    for (i, p) in prints[prints.len() / 2..].iter().take(2).enumerate() {
        let mut r = row("market-trades", "market-trade", p.ts.unwrap() / 1000 + 1);
        r.id = Some(format!("LATE-T{i}"));
        r.symbol = p.symbol.clone();
        // a new high of the day for the first
        r.price = Some(p.price.unwrap() * 2 - i as i128);
        r.quantity = p.quantity;
        trades.push(r);
    }
    let mut out = Vec::new();
    for (topic, rows, json) in [
        (
            "executions",
            execs,
            &exec as &dyn Fn(&Row) -> serde_json::Value,
        ),
        ("market-trades", trades, &|r: &Row| {
            serde_json::json!({
                "trade_id": r.id, "symbol": r.symbol, "venue": "XLATE",
                "price": text(r.price.unwrap()), "volume": text(r.quantity.unwrap()),
                "ts": r.ts.unwrap() / 1000,
            })
        }),
    ] {
        let messages: Vec<(Vec<u8>, Vec<u8>)> = rows
            .iter()
            .map(|r| (b"late".to_vec(), json(r).to_string().into_bytes()))
            .collect();
        let offsets = rt
            .block_on(lakehouse_tests::kafka::produce(brokers, topic, &messages))
            .unwrap();
        assert_eq!(offsets.len(), 1, "{offsets:?}");
        let mut offsets = offsets[&0].clone();
        offsets.sort_unstable();
        for (r, o) in rows.into_iter().zip(offsets) {
            out.push((r, o));
        }
    }
    out
}

#[test]
fn merged_answers_equal_the_truth_across_batch_switches_and_late_events_with_entitlements_and_audit()
 {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_broker, brokers) = broker(d);
    let lake = d.join("lake");
    let base = "[log]\nlevel = \"info\"\n\n[ingest]\ngroup-id = \"it-serve\"\nsession-timeout = \"6s\"\n\
         max-latency = \"300ms\"\nflush-messages = 3000\n\n\
         [speed]\ncheckpoint-interval = \"500ms\"\n\n\
         [simulate]\npartitions = 1\nsession = \"1h\"\ntime-scale = 500.0\nexec-amend = 0.03\n\
         exec-cancel = 0.02\nlarge-orders = 0.03\nduplicate = 0.01\n\n\
         [batch.large-trade-thresholds]\n\"*\" = \"50000\"\n\n\
         [serving]\nledger-poll = \"200ms\"\naudit-flush = \"300ms\"\n\n";
    std::fs::write(d.join("lakehouse.toml"), base).unwrap();
    // a live, paced stream of two to three business days; the topics and the reference data
    // exist once it started
    let sim_log = d.join("sim.log");
    let mut sim = lakehouse(d)
        .args(["simulate", "--brokers", &brokers, "--seed", "33"])
        .args(["--events", "24000", "--rate", "2500", "--truth"])
        .arg(d.join("truth.parquet"))
        .arg("--refdata")
        .arg(d.join("ref"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&sim_log).unwrap())
        .spawn()
        .unwrap();
    until(
        Duration::from_secs(60),
        || std::fs::read_to_string(&sim_log).unwrap_or_default(),
        || d.join("ref/fx_rates.csv").is_file(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let desk_of = accounts(&d.join("ref"));
    let currency = currencies(&d.join("ref"));
    let all_accounts: Vec<String> = desk_of.keys().cloned().collect();
    let all_desks: Vec<String> = desk_of
        .values()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(all_desks.len() >= 3, "{all_desks:?}");
    let in_desk = |desk: &str| -> Vec<String> {
        desk_of
            .iter()
            .filter(|(_, d)| *d == desk)
            .map(|(a, _)| a.clone())
            .collect()
    };
    let principals = [
        Principal {
            name: "admin",
            token: "tok-admin",
            desks: vec!["*".into()],
            accounts: vec![],
        },
        Principal {
            name: "desk-0",
            token: "tok-desk-0",
            desks: vec![all_desks[0].clone()],
            accounts: vec![],
        },
        Principal {
            name: "two-accounts",
            token: "tok-accounts",
            desks: vec![],
            accounts: vec![
                in_desk(&all_desks[1])[0].clone(),
                in_desk(&all_desks[2])[0].clone(),
            ],
        },
        Principal {
            name: "desk-1-plus",
            token: "tok-mixed",
            desks: vec![all_desks[1].clone()],
            accounts: vec![in_desk(&all_desks[0])[0].clone()],
        },
    ];
    let mut config = base.to_string();
    for p in &principals {
        config.push_str(&p.toml());
    }
    std::fs::write(d.join("lakehouse.toml"), config).unwrap();
    load_refdata(d, &lake);

    let mut ingest = Ingest::spawn(d, "ingest", &brokers, None);
    let speed = Speed::spawn(d, "lake", &brokers, 0);
    let mut serve = Serve::spawn(d, &brokers);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let channel = rt.block_on(async {
        Channel::from_shared(format!("http://{}", serve.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    let tally: Tally = Arc::default();
    let admin = Caller::new(&channel, Some("tok-admin"), "admin", &tally);

    // the first business date: once the served watermark is a day past it, run it (the stream
    // goes on) while answers are sampled
    let mut first: Option<BusinessDate> = None;
    until(
        Duration::from_secs(120),
        || {
            format!(
                "the stream did not pass its first day:\n{}",
                serve.log_text()
            )
        },
        || {
            let s = rt.block_on(admin.status()).unwrap();
            let Some(w) = s.freshness.unwrap().speed_watermark else {
                return false;
            };
            let day = date_of(micros(&w));
            let f = *first.get_or_insert(day);
            day > f
        },
    );
    let d1 = first.unwrap();
    // the live streams while data flows: position updates and 1-minute bar panes
    let watch = {
        let admin = admin.clone();
        rt.spawn(async move { admin.watch(3).await.unwrap() })
    };
    let live = {
        let (admin, symbol) = (admin.clone(), currency.keys().next().unwrap().clone());
        rt.spawn(async move { admin.live_bars(&symbol, 2).await.unwrap() })
    };
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampled_symbol = currency.keys().next().unwrap().clone();
    let sampler = {
        let (admin, stop, symbol) = (admin.clone(), stop_sampling.clone(), sampled_symbol.clone());
        let (from, to) = (day_start(d1), day_start(d1) + 10 * 86_400_000_000);
        rt.spawn(async move {
            let mut out = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let p = admin.positions(all_positions()).await.unwrap();
                let b = admin
                    .bars(bars_req(&symbol, pb::Interval::Interval1d, from, to))
                    .await
                    .unwrap();
                out.push((p, b));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            out
        })
    };
    let out = ok({
        let mut c = lakehouse(d);
        c.args(["batch", "run", "--lake"])
            .arg(&lake)
            .args(["--date", &d1.to_string()]);
        c
    });
    assert!(out.contains(&format!("{d1}: published run")), "{out}");
    wait_batch(&rt, &admin, d1);
    std::thread::sleep(Duration::from_millis(500));
    stop_sampling.store(true, Ordering::SeqCst);
    let samples = rt.block_on(sampler).unwrap();

    assert!(
        sim.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&sim_log).unwrap()
    );
    let mut truth = Truth::read(&d.join("truth.parquet"));
    assert_eq!(
        truth.per_topic(),
        messages_per_topic(&d.join("truth.parquet"))
    );
    let dates: BTreeSet<BusinessDate> = truth
        .rows
        .iter()
        .filter_map(|r| r.ts)
        .map(date_of)
        .collect();
    assert!(dates.len() >= 2, "{dates:?}");
    assert_eq!(dates.first(), Some(&d1));
    let d2 = *dates.iter().nth(1).unwrap();
    let last_ts = truth.rows.iter().filter_map(|r| r.ts).max().unwrap();
    let (from, to) = (
        day_start(d1),
        day_start(*dates.last().unwrap()) + 86_400_000_000,
    );
    let symbols = busiest(&truth.rows);
    let check = Check {
        truth: &truth,
        from,
        to: last_ts + 60_000_000,
    };

    // every answer sampled across the switch equals the truth over exactly its offsets
    let switched = samples
        .iter()
        .filter(|(p, _)| p.freshness.as_ref().unwrap().batch_business_date == d1.to_string())
        .count();
    assert!(
        samples.len() >= 3 && switched >= 1 && switched < samples.len(),
        "{} samples, {switched} after the switch",
        samples.len()
    );
    // every position update is exact for the offsets it names; live panes are of the symbol
    let updates = rt.block_on(watch).unwrap();
    for (i, u) in updates.into_iter().enumerate() {
        let as_answer = pb::GetPositionsResponse {
            positions: u.positions,
            freshness: u.freshness,
        };
        check.positions(&as_answer, &format!("WatchPositions update {i}"));
    }
    for u in rt.block_on(live).unwrap() {
        let bar = u.bar.clone().unwrap();
        assert_eq!(bar.symbol, sampled_symbol, "{bar:?}");
        assert!(bar.trade_count > 0 && u.window_end.is_some(), "{u:?}");
    }
    for (i, (p, b)) in samples.iter().enumerate() {
        check.positions(p, &format!("sample {i}"));
        check.daily(&sampled_symbol, b, &format!("sample {i}"));
    }

    // quiet: everything consumed; answers equal the whole truth
    let per_topic = truth.per_topic();
    wait_served(&rt, &admin, &per_topic);
    let compare = |check: &Check, what: &str| {
        let p = rt.block_on(admin.positions(all_positions())).unwrap();
        check.positions(&p, what);
        assert!(p.positions.len() > 50, "{} positions", p.positions.len());
        for s in &symbols {
            let b = rt
                .block_on(admin.bars(bars_req(s, pb::Interval::Interval1d, from, to)))
                .unwrap();
            check.daily(s, &b, what);
        }
        for s in symbols.iter().take(2) {
            let b = rt
                .block_on(admin.bars(bars_req(s, pb::Interval::Interval1m, check.from, check.to)))
                .unwrap();
            let n = check.minutes(s, &b, what);
            assert!(n > 10, "{s}: {n} minutes");
        }
        // what the server holds now (positions may come from a book up to
        // positions-max-age old, exact for the offsets it names)
        rt.block_on(admin.status()).unwrap().freshness.unwrap()
    };
    let f = compare(&check, "after the first run");
    assert_eq!(f.batch_business_date, d1.to_string());
    assert!(!f.boundary_offsets.is_empty());
    wait_ingested(&rt, &lake, &mut ingest, &per_topic);

    // late events for the reported date: counted at once, pending restatement
    let late = late_events(&rt, &brokers, &truth, d1, &currency);
    for (r, o) in late {
        truth.offset.insert(r.message_seq, o);
        truth.rows.push(r);
    }
    let per_topic = truth.per_topic();
    wait_served(&rt, &admin, &per_topic);
    let check = Check {
        truth: &truth,
        from,
        to: last_ts + 60_000_000,
    };
    let f = compare(&check, "after late events");
    assert_eq!(f.batch_business_date, d1.to_string());
    assert_eq!(f.late_events_pending, pending(&truth, &f, d1), "{f:?}");
    assert!(f.late_events_pending >= 7, "{f:?}");

    // the next run covers them by its boundary, so it restates the first date with them
    wait_ingested(&rt, &lake, &mut ingest, &per_topic);
    let out = ok({
        let mut c = lakehouse(d);
        c.args(["batch", "run", "--lake"])
            .arg(&lake)
            .args(["--date", &d2.to_string()]);
        c
    });
    assert!(
        out.contains(&format!("{d1}: restated first")),
        "the run of {d2} should restate {d1}:\n{out}"
    );
    wait_batch(&rt, &admin, d2);
    let f = compare(&check, "after the second run restated the first date");
    assert_eq!(f.late_events_pending, 0, "{f:?}");
    let b = &f.boundary_offsets;
    for (t, n) in &per_topic {
        assert!(
            b.iter().any(|o| &o.topic == t && o.offset == n - 1),
            "the boundary covers every message of {t}: {b:?}"
        );
    }

    // entitlements: 1000 random requests
    let bad = Caller::new(&channel, Some("not-a-token"), "unauthenticated", &tally);
    let none = Caller::new(&channel, None, "unauthenticated", &tally);
    let callers: Vec<Caller> = principals
        .iter()
        .map(|p| Caller::new(&channel, Some(p.token), p.name, &tally))
        .collect();
    let everything = served_book(&rt.block_on(admin.positions(all_positions())).unwrap());
    let mut rng = Rng(0x5eed_1234_abcd);
    let (mut refused, mut rows_seen) = (0, 0);
    for i in 0..1000 {
        let k = rng.below(callers.len() + 1);
        let unauth = k == callers.len();
        let (caller, p) = if unauth {
            (if rng.below(2) == 0 { &bad } else { &none }, &principals[0])
        } else {
            (&callers[k], &principals[k])
        };
        let mut accounts = rng.some(&all_accounts, 2);
        let mut desks = rng.some(&all_desks, 2);
        if rng.below(10) == 0 {
            accounts.push("ACC-NOPE".to_string());
        }
        if rng.below(10) == 0 {
            desks.push("DESK-NOPE".to_string());
        }
        let foreign_accounts = accounts.iter().any(|a| !p.sees_account(a, &desk_of));
        let foreign_desks = desks.iter().any(|d| !p.sees_desk(d));
        let expect_refused = |r: &Status, foreign: bool| {
            if unauth {
                assert_eq!(r.code(), tonic::Code::Unauthenticated, "request {i}: {r:?}");
            } else {
                assert!(foreign, "request {i} by {} refused: {r:?}", p.name);
                assert_eq!(
                    r.code(),
                    tonic::Code::PermissionDenied,
                    "request {i}: {r:?}"
                );
            }
        };
        match rng.below(5) {
            0 => {
                let symbols = rng.some(&symbols, 2);
                let req = pb::GetPositionsRequest {
                    accounts: accounts.clone(),
                    desks: desks.clone(),
                    symbols: symbols.clone(),
                    include_flat: true,
                };
                match rt.block_on(caller.positions(req)) {
                    Err(r) => {
                        refused += 1;
                        expect_refused(&r, foreign_accounts || foreign_desks);
                    }
                    Ok(r) => {
                        assert!(
                            !unauth && !foreign_accounts && !foreign_desks,
                            "request {i}"
                        );
                        let got = served_book(&r);
                        rows_seen += got.len();
                        // exactly the unrestricted answer filtered to the scope and request
                        let want: Book = everything
                            .iter()
                            .filter(|((a, s), _)| {
                                p.sees_account(a, &desk_of)
                                    && (accounts.is_empty() && desks.is_empty()
                                        || accounts.contains(a)
                                        || desk_of.get(a).is_some_and(|d| desks.contains(d)))
                                    && (symbols.is_empty() || symbols.contains(s))
                            })
                            .map(|(k, v)| (k.clone(), *v))
                            .collect();
                        assert_eq!(got, want, "request {i} by {}", p.name);
                    }
                }
            }
            1 => match rt.block_on(caller.exposure(pb::GetExposureRequest {
                desks: desks.clone(),
                ..Default::default()
            })) {
                Err(r) => {
                    refused += 1;
                    expect_refused(&r, foreign_desks);
                }
                Ok(r) => {
                    assert!(!unauth && !foreign_desks, "request {i}");
                    rows_seen += r.exposures.len();
                    for e in &r.exposures {
                        // a desk shows only when the caller sees one of its accounts
                        assert!(
                            desk_of
                                .iter()
                                .any(|(a, d)| d == &e.desk && p.sees_account(a, &desk_of)),
                            "request {i} by {}: {e:?}",
                            p.name
                        );
                        assert!(desks.is_empty() || desks.contains(&e.desk));
                    }
                }
            },
            2 => match rt.block_on(caller.large_trades(pb::ListLargeTradesRequest {
                from_date: d1.to_string(),
                to_date: dates.last().unwrap().to_string(),
                threshold: String::new(),
                accounts: accounts.clone(),
            })) {
                Err(r) => {
                    refused += 1;
                    expect_refused(&r, foreign_accounts);
                }
                Ok(r) => {
                    assert!(!unauth && !foreign_accounts, "request {i}");
                    rows_seen += r.trades.len();
                    for t in &r.trades {
                        assert!(p.sees_account(&t.account, &desk_of), "request {i}: {t:?}");
                        assert!(accounts.is_empty() || accounts.contains(&t.account));
                    }
                }
            },
            3 => match rt.block_on(caller.report(d1)) {
                Err(r) => {
                    refused += 1;
                    expect_refused(&r, false);
                }
                Ok(rows) => {
                    assert!(!unauth, "request {i}");
                    rows_seen += rows.len();
                    for t in &rows {
                        assert!(p.sees_account(&t.account, &desk_of), "request {i}: {t:?}");
                    }
                }
            },
            _ => {
                let s = rng.pick(&symbols).clone();
                match rt.block_on(caller.bars(bars_req(&s, pb::Interval::Interval1d, from, to))) {
                    Err(r) => {
                        refused += 1;
                        expect_refused(&r, false);
                    }
                    Ok(r) => {
                        assert!(!unauth, "request {i}");
                        check.daily(&s, &r, &format!("request {i}"));
                    }
                }
            }
        }
    }
    assert!(
        refused > 100 && rows_seen > 1000,
        "{refused} refused, {rows_seen} rows"
    );
    // the report of a scoped caller is the unrestricted one filtered
    let full = rt.block_on(admin.report(d1)).unwrap();
    let scoped = rt.block_on(callers[2].report(d1)).unwrap();
    let want: Vec<_> = full
        .iter()
        .filter(|r| principals[2].sees_account(&r.account, &desk_of))
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(scoped, want);
    // errors carry their codes
    let e = rt
        .block_on(admin.bars(bars_req(&symbols[0], pb::Interval::Unspecified, from, to)))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = rt
        .block_on(admin.bars(bars_req("NOPE", pb::Interval::Interval1d, from, to)))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let after = BusinessDate(dates.last().unwrap().0.succ_opt().unwrap());
    let e = rt.block_on(admin.report(after)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // the Python example client: same positions and bars
    let python = |args: &[&str]| -> serde_json::Value {
        let v = python_client(&serve.addr, Some("tok-admin"), args);
        *tally
            .lock()
            .unwrap()
            .entry((
                "admin".into(),
                if args[0] == "positions" {
                    "GetPositions"
                } else {
                    "GetBars"
                }
                .into(),
                "Ok".into(),
            ))
            .or_default() += 1;
        v
    };
    let v = python(&["positions", "--include-flat"]);
    let mut py = Book::new();
    for p in v["positions"].as_array().unwrap() {
        let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        py.insert(
            (s("account"), s("symbol")),
            (
                dec(&s("net_quantity")).unwrap(),
                dec(&s("avg_cost")).unwrap(),
                dec(&s("realized_pnl")).unwrap(),
                dec(&s("mark_price")),
            ),
        );
    }
    assert_eq!(py, everything, "the Python client's positions");
    let iso = |us: i64| EventTime::from_micros(us).to_string();
    let v = python(&[
        "bars",
        &symbols[0],
        "--interval",
        "1d",
        "--from",
        &iso(from),
        "--to",
        &iso(to),
    ]);
    let closes: BTreeMap<String, String> = v["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["business_date"].as_str().unwrap().to_string(),
                b["close"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = bars_by(&truth.rows, date_of)
        .into_iter()
        .filter(|((_, s), _)| s == &symbols[0])
        .map(|((d, _), b)| (d.to_string(), text(b.close)))
        .collect();
    assert_eq!(closes, want, "the Python client's daily closes");

    // the server's metrics count the same requests, by method and status
    let counted: BTreeMap<(String, String), i64> = scrape(serve.metrics)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("lakehouse_serving_requests_total{method=\"")?;
            let (method, rest) = rest.split_once("\",status=\"")?;
            let (status, n) = rest.split_once("\"} ")?;
            Some(((method.to_string(), status.to_string()), n.parse().unwrap()))
        })
        .collect();
    let mut made: BTreeMap<(String, String), i64> = BTreeMap::new();
    for ((_, method, status), n) in tally.lock().unwrap().iter() {
        *made.entry((method.clone(), status.clone())).or_default() += n;
    }
    assert_eq!(counted, made, "lakehouse_serving_requests_total");

    // audit: one row per request, refused ones included, once the server stopped
    serve.stop();
    drop(speed);
    ingest.stop();
    let audited = audit_rows(&rt, &lake);
    let made = tally.lock().unwrap().clone();
    assert_eq!(audited, made, "audit rows per (principal, method, status)");
    assert!(made.values().sum::<i64>() > 1000);
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME-ca.pem`) and a certificate it signed (`NAME.pem`, `NAME.key`) for `subject`.
fn signed_pair(dir: &Path, ca: &str, name: &str, subject: &str) {
    if !dir.join(format!("{ca}-ca.pem")).is_file() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca} test CA"),
                "-keyout",
                &format!("{ca}-ca.key"),
                "-out",
                &format!("{ca}-ca.pem"),
            ],
        );
    }
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={subject}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// SHA-256 (hex) of the DER of a PEM certificate, as `cert-sha256` takes it.
fn cert_sha256(dir: &Path, name: &str) -> String {
    openssl(
        dir,
        &[
            "x509",
            "-in",
            &format!("{name}.pem"),
            "-outform",
            "der",
            "-out",
            &format!("{name}.der"),
        ],
    );
    let der = std::fs::read(dir.join(format!("{name}.der"))).unwrap();
    sha2::Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn tls_with_client_certificates_maps_certificates_to_principals() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_pair(d, "trusted", "server", "localhost");
    signed_pair(d, "trusted", "robot", "desk robot");
    signed_pair(d, "rogue", "intruder", "desk robot");
    let robot = Principal {
        name: "desk-robot",
        token: "unused",
        desks: vec!["DESK-A".into()],
        accounts: vec![],
    };
    let admin = Principal {
        name: "admin",
        token: "tok-admin",
        desks: vec!["*".into()],
        accounts: vec![],
    };
    std::fs::write(
        d.join("lakehouse.toml"),
        format!(
            "[serving]\naudit-flush = \"200ms\"\n\n[serving.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient-ca = \"{}\"\n\n{}\
             [[serving.principals]]\nname = \"desk-robot\"\ncert-sha256 = \"{}\"\ndesks = {:?}\n",
            d.join("server.pem").display(),
            d.join("server.key").display(),
            d.join("trusted-ca.pem").display(),
            admin.toml(),
            cert_sha256(d, "robot"),
            robot.desks,
        ),
    )
    .unwrap();
    // empty topics: the speed view stays empty, the API answers
    let broker = lakehouse_tests::kafka().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for t in ["market-trades", "orders", "executions"] {
        rt.block_on(lakehouse_tests::kafka::create_topic(&broker.addr(), t, 1))
            .unwrap();
    }
    let mut serve = Serve::spawn(d, &broker.addr());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = |f: &str| std::fs::read(d.join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem("trusted-ca.pem")))
        .domain_name("localhost");
    let channel = |tls: Option<ClientTlsConfig>| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        rt.block_on(async {
            let mut e = Channel::from_shared(format!("{scheme}://{}", serve.addr)).unwrap();
            if let Some(t) = tls {
                e = e.tls_config(t).unwrap();
            }
            e.connect().await
        })
    };
    let tally: Tally = Arc::default();
    // the client certificate is the credential: its principal's scope applies
    let with_cert = channel(Some(
        tls.clone()
            .identity(Identity::from_pem(pem("robot.pem"), pem("robot.key"))),
    ))
    .unwrap();
    let c = Caller::new(&with_cert, None, "desk-robot", &tally);
    rt.block_on(c.status()).unwrap();
    let own = pb::GetPositionsRequest {
        desks: vec!["DESK-A".into()],
        ..Default::default()
    };
    rt.block_on(c.positions(own)).unwrap();
    let e = rt
        .block_on(c.positions(pb::GetPositionsRequest {
            desks: vec!["DESK-B".into()],
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("desk-robot"), "{e:?}");
    // the CLI client over mTLS (one GetStatus)
    let out = ok({
        let mut c = lakehouse(d);
        c.args([
            "query",
            "status",
            "--server",
            &format!("https://{}", serve.addr),
        ])
        .arg("--ca-cert")
        .arg(d.join("trusted-ca.pem"))
        .arg("--client-cert")
        .arg(d.join("robot.pem"))
        .arg(d.join("robot.key"));
        c
    });
    assert!(out.contains("speed"), "{out}");
    *tally
        .lock()
        .unwrap()
        .entry(("desk-robot".into(), "GetStatus".into(), "Ok".into()))
        .or_default() += 1;
    // TLS without a certificate: a token, or nothing
    let plain_tls = channel(Some(tls.clone())).unwrap();
    let c = Caller::new(&plain_tls, Some("tok-admin"), "admin", &tally);
    rt.block_on(c.status()).unwrap();
    let c = Caller::new(&plain_tls, None, "unauthenticated", &tally);
    let e = rt.block_on(c.status()).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // a certificate another CA signed does not get through the handshake
    let rogue = channel(Some(
        tls.identity(Identity::from_pem(pem("intruder.pem"), pem("intruder.key"))),
    ));
    let refused = match rogue {
        Err(_) => true,
        Ok(ch) => rt
            .block_on(LakehouseClient::new(ch).get_status(pb::GetStatusRequest {}))
            .is_err(),
    };
    assert!(refused, "a certificate of an unknown CA was accepted");
    // plaintext to a TLS server fails
    let plain = match channel(None) {
        Err(_) => true,
        Ok(ch) => rt
            .block_on(LakehouseClient::new(ch).get_status(pb::GetStatusRequest {}))
            .is_err(),
    };
    assert!(plain, "plaintext was served");
    serve.stop();
    // every request that reached the service is audited under its principal
    let audited = audit_rows(&rt, &d.join("lake"));
    assert_eq!(audited, *tally.lock().unwrap());
}

#[test]
fn serve_stops_with_an_error_when_its_speed_view_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("lakehouse.toml"),
        "[serving]\naudit-flush = \"200ms\"\n",
    )
    .unwrap();
    // a broker without the topics: the speed view cannot start
    let broker = lakehouse_tests::kafka().unwrap();
    let addr = format!("127.0.0.1:{}", lakehouse_tests::free_port());
    let mut child = lakehouse(d)
        .args([
            "serve",
            "--brokers",
            &broker.addr(),
            "--listen",
            &addr,
            "--lake",
        ])
        .arg(d.join("lake"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running without its speed view");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("the speed view failed") && err.contains("does not exist"),
        "{err}"
    );
}

/// A `lakehouse up` process (its own local broker) on `d/up.toml`; on drop (a failed test)
/// SIGTERM, so that it stops its broker too, then SIGKILL.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_up(d: &Path, n: usize) -> Up {
    spawn_up_with(d, n, &[])
}

/// What the `n`th `lakehouse up` of the test wrote so far.
fn up_log(d: &Path, n: usize) -> String {
    std::fs::read_to_string(d.join(format!("up-{n}.log"))).unwrap_or_default()
}

/// `lakehouse up ARGS`, waiting until it says it runs.
fn spawn_up_with(d: &Path, n: usize, args: &[&str]) -> Up {
    let log = std::fs::File::create(d.join(format!("up-{n}.log"))).unwrap();
    let up = Up(Command::new(lakehouse_tests::lakehouse_bin().unwrap())
        .args(["--config"])
        .arg(d.join("up.toml"))
        .arg("up")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap());
    until(
        Duration::from_secs(120),
        || format!("up {n} did not start:\n{}", up_log(d, n)),
        || up_log(d, n).contains("lakehouse up: running"),
    );
    up
}

/// SIGTERM and a clean exit.
fn stop_up(d: &Path, up: &mut Up, n: usize) {
    let log = || up_log(d, n);
    let child = &mut up.0;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "up exited with {s}:\n{}", log());
            assert!(
                log().contains("every role committed what it held"),
                "{}",
                log()
            );
            return;
        }
        assert!(Instant::now() < deadline, "up did not stop:\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `d/up.toml` for `lakehouse up` on free ports with `[simulate]` settings `simulate`;
/// returns (broker port, gRPC address, metrics port).
fn up_config(d: &Path, simulate: &str) -> (u16, String, u16) {
    let (broker_port, grpc_port, metrics_port) = (
        lakehouse_tests::free_port(),
        lakehouse_tests::free_port(),
        lakehouse_tests::free_port(),
    );
    let grpc = format!("127.0.0.1:{grpc_port}");
    std::fs::write(
        d.join("up.toml"),
        format!(
            "[lake]\nroot = \"{}\"\n\n[up]\nbroker-listen = \"127.0.0.1:{broker_port}\"\nmetrics-listen = \"127.0.0.1:{metrics_port}\"\n\n\
             [serving]\nlisten = \"{grpc}\"\nledger-poll = \"200ms\"\n\n[ingest]\nsession-timeout = \"6s\"\nmax-latency = \"300ms\"\n\n\
             [speed]\ncheckpoint-interval = \"500ms\"\n\n[simulate]\npartitions = 1\n{simulate}\n",
            d.join("lake").display()
        ),
    )
    .unwrap();
    (broker_port, grpc, metrics_port)
}

#[test]
fn up_runs_every_role_with_a_local_broker_and_resumes_after_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (broker_port, grpc, metrics_port) = up_config(d, "session = \"1h\"\ntime-scale = 500.0");
    // `up` starts its own broker (no [kafka] brokers configured) and creates the topics
    let mut up = spawn_up(d, 0);
    let log0 = || up_log(d, 0);
    for part in [
        "gRPC     127.0.0.1",
        "metrics  http://127.0.0.1",
        "lakehouse query --server",
    ] {
        assert!(log0().contains(part), "{part}:\n{}", log0());
    }
    let brokers = format!("127.0.0.1:{broker_port}");
    let mut sim = Command::new(lakehouse_tests::lakehouse_bin().unwrap());
    sim.args(["--config"])
        .arg(d.join("up.toml"))
        .args([
            "simulate",
            "--brokers",
            &brokers,
            "--seed",
            "9",
            "--events",
            "6000",
        ])
        .args(["--as-fast-as-possible", "--truth"])
        .arg(d.join("truth.parquet"))
        .arg("--refdata")
        .arg(d.join("ref"));
    let out = sim.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth = Truth::read(&d.join("truth.parquet"));
    let per_topic = truth.per_topic();
    let check = Check {
        truth: &truth,
        from: 0,
        to: 0,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tally: Tally = Arc::default();
    let answer = |n: usize| {
        let channel = rt.block_on(async {
            Channel::from_shared(format!("http://{grpc}"))
                .unwrap()
                .connect()
                .await
                .unwrap()
        });
        let c = Caller::new(&channel, None, "anonymous", &tally);
        wait_served(&rt, &c, &per_topic);
        let p = rt.block_on(c.positions(all_positions())).unwrap();
        check.positions(&p, &format!("up, start {n}"));
        assert!(p.positions.len() > 20, "{}", p.positions.len());
        served_book(&p)
    };
    let before = answer(0);
    // one metrics endpoint
    let metrics = scrape(metrics_port);
    assert!(
        metrics.starts_with("HTTP/1.1 200")
            && metrics.contains("lakehouse_ingest_")
            && metrics
                .contains("lakehouse_speed_next_offset{topic=\"executions\",partition=\"0\"}")
            && metrics.contains("lakehouse_serving_batch_date_days")
            && metrics.contains("lakehouse_batch_pending_dates ")
            && metrics.contains("# TYPE lakehouse_batch_run_seconds histogram")
            && metrics.contains(
                "lakehouse_serving_requests_total{method=\"GetPositions\",status=\"Ok\"}"
            )
            && metrics.contains("lakehouse_serving_request_seconds_bucket{")
            && metrics.matches("# EOF").count() == 1
            && metrics.trim_end().ends_with("# EOF"),
        "{metrics}"
    );
    stop_up(d, &mut up, 0);

    // started again: every role resumes from what it committed; nothing lost or counted twice
    let mut up = spawn_up(d, 1);
    let after = answer(1);
    assert_eq!(after, before);
    // ingest lands every message once (malformed ones go to dead letters), across the stop
    let want: BTreeMap<String, i64> = per_topic
        .iter()
        .map(|(topic, n)| {
            let bad = truth
                .rows
                .iter()
                .filter(|r| &r.topic == topic && r.malformed)
                .count() as i64;
            (topic.clone(), n - bad)
        })
        .collect();
    let l1 = std::cell::RefCell::new(BTreeMap::new());
    until(
        Duration::from_secs(120),
        || format!("L1 holds {:?}, not {want:?}", l1.borrow()),
        || {
            *l1.borrow_mut() = rt.block_on(async {
                let l = open(&d.join("lake")).await;
                let mut n = BTreeMap::new();
                for (topic, table) in [
                    ("market-trades", names::MARKET_TRADES),
                    ("orders", names::ORDERS),
                    ("executions", names::EXECUTIONS),
                ] {
                    let rows = match l.table(table).await {
                        Ok(t) => t.count_rows().await.unwrap() as i64,
                        Err(_) => 0,
                    };
                    n.insert(topic.to_string(), rows);
                }
                n
            });
            *l1.borrow() == want
        },
    );
    stop_up(d, &mut up, 1);
}

/// The event time of a simulator started now with `start = "now"`: the wall clock, moved to
/// Monday on a Saturday or Sunday. Microseconds.
fn simulated_now() -> i64 {
    use chrono::{Datelike, Weekday};
    const DAY_US: i64 = 86_400 * 1_000_000;
    let mut now = EventTime::now().micros();
    while matches!(
        EventTime::from_micros(now).utc_date().weekday(),
        Weekday::Sat | Weekday::Sun
    ) {
        now += DAY_US;
    }
    now
}

#[test]
fn up_simulate_flows_at_once_and_restarts_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, grpc, _) = up_config(d, "rate = 3000.0");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tally: Tally = Arc::default();
    let caller = || {
        let channel = rt.block_on(async {
            Channel::from_shared(format!("http://{grpc}"))
                .unwrap()
                .connect()
                .await
                .unwrap()
        });
        Caller::new(&channel, None, "anonymous", &tally)
    };
    // data flows at once; people and the Python client see it
    let mut seen = 0;
    for n in 0..2 {
        let mut up = spawn_up_with(d, n, &["--simulate"]);
        let c = caller();
        until(
            Duration::from_secs(120),
            || format!("no data flowed in run {n}"),
            || rt.block_on(c.status()).unwrap().speed_events > seen + 3000,
        );
        seen = rt.block_on(c.status()).unwrap().speed_events;
        // executions may reach the speed view a second or two after the tape and the orders
        until(
            Duration::from_secs(60),
            || format!("no positions in run {n}"),
            || {
                !rt.block_on(c.positions(all_positions()))
                    .unwrap()
                    .positions
                    .is_empty()
            },
        );
        let mut q = Command::new(lakehouse_tests::lakehouse_bin().unwrap());
        q.args(["query", "--server", &format!("http://{grpc}"), "positions"]);
        assert!(ok(q).contains("ACCOUNT"));
        let v = python_client(&grpc, None, &["positions"]);
        assert!(
            v["positions"].as_array().is_some_and(|p| !p.is_empty()),
            "{v}"
        );
        // and bars: the last hour's 1-minute bars of a traded symbol (event time starts now,
        // or on a weekend at the same time on Monday: events fall on business days)
        let symbol = v["positions"][0]["symbol"].as_str().unwrap().to_string();
        let now = simulated_now();
        let (from, to) = (
            EventTime::from_micros(now - 3_600_000_000).to_string(),
            EventTime::from_micros(now + 3_600_000_000).to_string(),
        );
        let bars_of = |v: &serde_json::Value| -> usize {
            let bars = v["bars"].as_array().unwrap();
            assert!(
                bars.iter().all(|b| {
                    // int64 is a string in proto3 JSON
                    let count = &b["trade_count"];
                    let count = count.as_i64().or_else(|| count.as_str()?.parse().ok());
                    b["symbol"] == symbol.as_str() && count.unwrap_or(0) > 0
                }),
                "{v}"
            );
            bars.len()
        };
        until(
            Duration::from_secs(60),
            || format!("no 1-minute bars of {symbol} in run {n}"),
            || {
                let mut q = Command::new(lakehouse_tests::lakehouse_bin().unwrap());
                q.args(["query", "--server", &format!("http://{grpc}"), "--json"])
                    .args(["bars", &symbol, "--interval", "1m", "--from", &from])
                    .args(["--to", &to]);
                let v: serde_json::Value = serde_json::from_str(&ok(q)).unwrap();
                bars_of(&v) > 0
            },
        );
        let v = python_client(
            &grpc,
            None,
            &[
                "bars",
                &symbol,
                "--interval",
                "1m",
                "--from",
                &from,
                "--to",
                &to,
            ],
        );
        assert!(bars_of(&v) > 0, "{v}");
        stop_up(d, &mut up, n);
    }
    // once more without the simulator: everything both runs produced, counted once
    let mut truths: Vec<PathBuf> = std::fs::read_dir(d.join("lake.kafka/simulate"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    truths.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    assert_eq!(truths.len(), 2, "{truths:?}");
    let truth = Truth::read_runs(&truths);
    let mut up = spawn_up(d, 2);
    let c = caller();
    wait_served(&rt, &c, &truth.per_topic());
    let check = Check {
        truth: &truth,
        from: 0,
        to: 0,
    };
    let p = rt.block_on(c.positions(all_positions())).unwrap();
    check.positions(&p, "after two simulated runs and restarts");
    assert!(p.positions.len() > 20, "{}", p.positions.len());
    // bars too: daily and 1-minute bars of the busiest symbols equal the two runs' truths
    let times: Vec<i64> = truth.rows.iter().filter_map(|r| r.ts).collect();
    let (first, last) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    let check = Check {
        truth: &truth,
        from: first - first.rem_euclid(60_000_000),
        to: last + 60_000_000,
    };
    let days = (check.from - 86_400_000_000, check.to + 86_400_000_000);
    let mut minutes = 0;
    for s in busiest(&truth.rows).iter().take(3) {
        let b = rt
            .block_on(c.bars(bars_req(s, pb::Interval::Interval1d, days.0, days.1)))
            .unwrap();
        assert!(!b.bars.is_empty(), "no daily bar of {s}");
        check.daily(s, &b, "after two simulated runs and restarts");
        let b = rt
            .block_on(c.bars(bars_req(s, pb::Interval::Interval1m, check.from, check.to)))
            .unwrap();
        minutes += check.minutes(s, &b, "after two simulated runs and restarts");
    }
    assert!(minutes > 0);
    stop_up(d, &mut up, 2);
}

#[test]
fn the_readmes_run_command_runs_up_with_the_simulator_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/run.sh");
    let port = || format!("127.0.0.1:{}", lakehouse_tests::free_port());
    let out = Command::new("bash")
        .arg(script)
        .env("LAKE", d.join("data/lake"))
        .env("RUN_SECONDS", "20")
        .env("LAKEHOUSE_BIN", lakehouse_tests::lakehouse_bin().unwrap())
        .env("LAKEHOUSE__UP__BROKER_LISTEN", port())
        .env("LAKEHOUSE__UP__METRICS_LISTEN", port())
        .env("LAKEHOUSE__SERVING__LISTEN", port())
        .env("LAKEHOUSE__INGEST__SESSION_TIMEOUT", "6s")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("lakehouse up: running"), "{stderr}");
    assert!(
        stdout.contains("every role committed what it held"),
        "{stdout}\n{stderr}"
    );
    // data flowed into the lake while it ran
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt.block_on(async {
        let l = open(&d.join("data/lake")).await;
        l.table(names::EXECUTIONS)
            .await
            .unwrap()
            .count_rows()
            .await
            .unwrap()
    });
    assert!(rows > 1000, "{rows} executions landed");
}
