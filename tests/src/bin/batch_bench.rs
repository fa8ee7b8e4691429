//! Batch-layer benchmark: end of day for one business date, against DuckDB.
//!
//! ```sh
//! cargo build --release -p lakehouse -p lakehouse-tests --bin batch-bench
//! target/release/batch-bench [DIR] [SCALE]
//! ```
//!
//! 1. Writes (once per DIR and SCALE) an L1 lake for 2026-01-05 with `SCALE` x (10M tape
//!    prints, 2M executions, 4M order events) in ingest's shape: 4 Kafka partitions, commits
//!    of 250k rows, 0.2% duplicate deliveries, 1% amended and 0.5% cancelled executions.
//! 2. Runs `lakehouse batch run --date 2026-01-05` (release build next to this binary) with
//!    the whole job chain (10 outputs), and in the same session DuckDB (the PyPI package,
//!    installed into the venv on first use) computing daily bars and positions (dedupe,
//!    corrections, average cost by a recursive query) from the same L1 Parquet files; each as
//!    a child process whose wall time and peak RSS are measured the same way.
//!    Between the two it runs lakehouse's own jobs on DuckDB's work alone (`--same-work`, a
//!    child process like the others): the bars and positions jobs (`jobs::l2_market_trades` ->
//!    `daily_bars`, `distinct_executions` -> `l2_executions` -> `positions`) over the same L1
//!    files, written to two Parquet files as DuckDB writes its two.
//! 3. Prints the three and the ratios, and checks that DuckDB and both lakehouse runs agree
//!    on the bars, and DuckDB and lakehouse on every position's net quantity.
//!
//! A benchmark, not a test: figures vary with the machine. Needs `scripts/setup.sh` (venv).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use lakehouse_lake::catalog::names;
use lakehouse_lake::events::{
    self, Account, Execution, FxRate, Instrument, KafkaMeta, Lifecycle, MarketTrade, Order,
    OrderAction, OrderType, Side,
};
use lakehouse_lake::{
    Decimal, EventTime, Lake, LakeConfig, Offset, OffsetRanges, PipelineId, TopicPartition,
};
use lakehouse_simulator::rng::Rng;

/// The allocator `lakehouse` uses, so that the same-work run measures the same code.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DATE: &str = "2026-01-05";
const SYMBOLS: usize = 200;
const ACCOUNTS: usize = 500;
const PARTITIONS: i32 = 4;
const CHUNK: usize = 250_000;
/// 14:30 UTC on the date, and the 6.5 h session.
const OPEN_US: i64 = 1_767_623_400_000_000;
const SESSION_US: i64 = 23_400_000_000;

fn dec(units: i64, scale: u32) -> Decimal {
    Decimal::from_raw(i128::from(units) * 10i128.pow(8 - scale))
}

/// Kafka bookkeeping of one topic: round-robin partitions, offsets per partition.
struct Topic {
    name: &'static str,
    next: [i64; PARTITIONS as usize],
}

impl Topic {
    fn meta(&mut self, key: usize) -> KafkaMeta {
        let partition = (key % PARTITIONS as usize) as i32;
        let offset = self.next[partition as usize];
        self.next[partition as usize] += 1;
        KafkaMeta {
            topic: self.name.into(),
            partition,
            offset,
            kafka_ts: None,
            ingest_ts: EventTime::from_micros(OPEN_US + SESSION_US),
        }
    }
}

async fn append<T>(
    lake: &Lake,
    table: &str,
    rows: &[(T, KafkaMeta)],
    batch: fn(
        &[(T, KafkaMeta)],
    ) -> lakehouse_lake::Result<deltalake::arrow::record_batch::RecordBatch>,
) -> Result<()> {
    let mut ranges = OffsetRanges::new();
    for (_, m) in rows {
        ranges.record(
            &TopicPartition::new(m.topic.clone(), m.partition),
            Offset(m.offset),
        );
    }
    let mut t = lake.table(table).await?;
    t.append_exactly_once(&PipelineId::new("ingest"), vec![batch(rows)?], &ranges)
        .await?;
    Ok(())
}

/// Lands `total` events of one topic in `table` in ingest's shape (commits of about `CHUNK`
/// rows); `event(i, topic, rows)` pushes the deliveries of event `i` and returns how many
/// events it used.
async fn land<T>(
    lake: &Lake,
    table: &str,
    topic: &'static str,
    total: usize,
    batch: fn(
        &[(T, KafkaMeta)],
    ) -> lakehouse_lake::Result<deltalake::arrow::record_batch::RecordBatch>,
    mut event: impl FnMut(usize, &mut Topic, &mut Vec<(T, KafkaMeta)>) -> usize,
) -> Result<()> {
    let mut topic = Topic {
        name: topic,
        next: [0; PARTITIONS as usize],
    };
    let mut i = 0;
    while i < total {
        let mut rows = Vec::with_capacity(CHUNK);
        while rows.len() < CHUNK && i < total {
            i += event(i, &mut topic, &mut rows);
        }
        append(lake, table, &rows, batch).await?;
        eprint!("\r{table} {i}/{total}");
    }
    eprintln!();
    Ok(())
}

fn symbol(i: usize) -> String {
    format!("SYM{i:04}")
}

fn account(i: usize) -> String {
    format!("ACC-{i:04}")
}

/// A price around 100 for `symbol`, in cents, drifting with time.
fn price(rng: &mut Rng, sym: usize, t: i64) -> i64 {
    let base = 5_000 + (sym as i64 * 397) % 20_000;
    base + (t / 60_000_000) % 50 + rng.between(0, 20)
}

async fn generate(root: &Path, scale: f64) -> Result<()> {
    let lake = Lake::open(&LakeConfig {
        root: root.display().to_string(),
        ..LakeConfig::default()
    })
    .await?;
    lake.ensure_catalog().await?;
    let instruments: Vec<Instrument> = (0..SYMBOLS)
        .map(|s| Instrument {
            symbol: symbol(s),
            isin: format!("US{s:010}"),
            asset_class: if s.is_multiple_of(5) { "ETF" } else { "EQUITY" }.into(),
            currency: if s.is_multiple_of(4) { "EUR" } else { "USD" }.into(),
            tick_size: dec(1, 2),
            lot_size: dec(1, 0),
        })
        .collect();
    let accounts: Vec<Account> = (0..ACCOUNTS)
        .map(|a| Account {
            account: account(a),
            desk: format!("DESK-{}", a % 10),
            legal_entity: format!("LE-{}", a % 3),
        })
        .collect();
    let fx: Vec<FxRate> = ["USD", "EUR"]
        .iter()
        .zip([dec(90, 2), dec(100, 2)])
        .map(|(c, r)| FxRate {
            date: DATE.parse().unwrap(),
            currency: (*c).into(),
            rate_to_reporting: r,
        })
        .collect();
    lake.table(names::REF_INSTRUMENTS)
        .await?
        .replace_all(
            vec![events::instruments_batch(&instruments)?],
            Default::default(),
        )
        .await?;
    lake.table(names::REF_ACCOUNTS)
        .await?
        .replace_all(vec![events::accounts_batch(&accounts)?], Default::default())
        .await?;
    lake.table(names::REF_FX_RATES)
        .await?
        .replace_all(vec![events::fx_rates_batch(&fx)?], Default::default())
        .await?;

    let n = |x: f64| (x * scale) as usize;
    let mut rng = Rng::new(7, 0);
    // the tape
    let total = n(10_000_000.0);
    land(
        &lake,
        names::MARKET_TRADES,
        "market-trades",
        total,
        events::market_trades_batch,
        |i, topic, rows| {
            let s = rng.below(SYMBOLS as u64) as usize;
            let ts = OPEN_US + (i as i64 * (SESSION_US / total as i64));
            let t = MarketTrade {
                trade_id: Some(format!("T{i}")),
                symbol: symbol(s),
                venue: Some("XNAS".into()),
                price: dec(price(&mut rng, s, ts - OPEN_US), 2),
                volume: dec(1 + rng.below(1000) as i64, 0),
                ts: EventTime::from_micros(ts),
                conditions: vec!["@".into()],
            };
            if rng.below(500) == 0 {
                rows.push((t.clone(), topic.meta(s)));
            }
            rows.push((t, topic.meta(s)));
            1
        },
    )
    .await?;
    // executions, with corrections a few seconds later
    let total = n(2_000_000.0);
    land(
        &lake,
        names::EXECUTIONS,
        "executions",
        total,
        events::executions_batch,
        |i, topic, rows| {
            let s = rng.below(SYMBOLS as u64) as usize;
            let a = rng.below(ACCOUNTS as u64) as usize;
            let ts = OPEN_US + (i as i64 * ((SESSION_US - 10_000_000) / total as i64));
            let e = Execution {
                exec_id: format!("E{i}"),
                order_id: format!("O{}", i / 2),
                account: account(a),
                trader: format!("TR-{}", a % 30),
                symbol: symbol(s),
                venue: Some("XNAS".into()),
                side: if rng.below(2) == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                },
                price: dec(price(&mut rng, s, ts - OPEN_US), 2),
                quantity: dec(1 + rng.below(500) as i64, 0),
                currency: if s.is_multiple_of(4) { "EUR" } else { "USD" }.into(),
                ts: EventTime::from_micros(ts),
                lifecycle: Lifecycle::New,
                ref_exec_id: None,
            };
            let roll = rng.below(1000);
            if roll < 2 {
                rows.push((e.clone(), topic.meta(a)));
            }
            let correction = (2..17).contains(&roll).then(|| {
                let mut c = e.clone();
                c.exec_id = format!("E{i}-C");
                c.ref_exec_id = Some(e.exec_id.clone());
                c.ts = EventTime::from_micros(ts + 5_000_000);
                if roll < 12 {
                    c.lifecycle = Lifecycle::Amend;
                    c.quantity = dec(1 + rng.below(500) as i64, 0);
                } else {
                    c.lifecycle = Lifecycle::Cancel;
                }
                c
            });
            rows.push((e, topic.meta(a)));
            if let Some(c) = correction {
                rows.push((c, topic.meta(a)));
            }
            1
        },
    )
    .await?;
    // order events: NEW, then some MODIFY and CANCEL
    let total = n(4_000_000.0);
    let mut order = 0usize;
    land(
        &lake,
        names::ORDERS,
        "orders",
        total,
        events::orders_batch,
        |i, topic, rows| {
            let s = rng.below(SYMBOLS as u64) as usize;
            let a = rng.below(ACCOUNTS as u64) as usize;
            let ts = OPEN_US + (i as i64 * ((SESSION_US - 10_000_000) / total as i64));
            let mut o = Order {
                order_id: format!("O{order}"),
                account: account(a),
                trader: format!("TR-{}", a % 30),
                symbol: symbol(s),
                venue: Some("XNAS".into()),
                side: if rng.below(2) == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                },
                order_type: OrderType::Limit,
                price: Some(dec(price(&mut rng, s, ts - OPEN_US), 2)),
                quantity: dec(1 + rng.below(500) as i64, 0),
                action: OrderAction::New,
                ts: EventTime::from_micros(ts),
            };
            order += 1;
            rows.push((o.clone(), topic.meta(a)));
            let roll = rng.below(10);
            if roll < 3 && i + 1 < total {
                o.action = if roll == 0 {
                    OrderAction::Cancel
                } else {
                    OrderAction::Modify
                };
                o.ts = EventTime::from_micros(ts + 2_000_000);
                rows.push((o, topic.meta(a)));
                return 2;
            }
            1
        },
    )
    .await?;
    Ok(())
}

/// `--same-work LAKE TAPE_FILES EXEC_FILES OUT_DIR`: lakehouse's bars and positions jobs (and
/// the L2 jobs they read) over the L1 files listed, with the lake's reference data, written
/// to `OUT_DIR/{bars,positions}.parquet`: the work the DuckDB script does, with lakehouse's
/// code (exact decimals), so the two are compared on the same work.
fn same_work(args: &[String]) -> Result<()> {
    use lakehouse_batch::{frame, jobs, runner};
    use polars::prelude::{IntoLazy, ParquetWriter};
    let [lake, tape, execs, out] = args else {
        bail!("usage: batch-bench --same-work LAKE TAPE_FILES EXEC_FILES OUT_DIR");
    };
    // the allocator as in a batch run
    let _memory = lakehouse_batch::memory::hold();
    let list = |f: &String| -> Result<Vec<PathBuf>> {
        Ok(std::fs::read_to_string(f)?
            .split_whitespace()
            .map(PathBuf::from)
            .collect())
    };
    let rt = tokio::runtime::Runtime::new()?;
    let (schemas, refs) = rt.block_on(async {
        let lake = Lake::open(&LakeConfig {
            root: lake.clone(),
            ..LakeConfig::default()
        })
        .await?;
        let mut schemas = Vec::new();
        for t in [names::MARKET_TRADES, names::EXECUTIONS] {
            schemas.push(runner::data_schema(&lake.table(t).await?.schema()?));
        }
        let mut refs = Vec::new();
        for t in [
            names::REF_INSTRUMENTS,
            names::REF_ACCOUNTS,
            names::REF_FX_RATES,
            names::POSITIONS,
        ] {
            let table = lake.table(t).await?;
            let files = if t == names::POSITIONS {
                Vec::new() // no earlier date: nothing carried
            } else {
                table.local_files()?.context("a local lake")?
            };
            refs.push(frame::read_parquet(&files, &table.schema()?)?);
        }
        anyhow::Ok((schemas, refs))
    })?;
    let date: lakehouse_lake::BusinessDate = DATE.parse()?;
    let (start, end) = lakehouse_lake::BusinessCalendar::default().utc_range(date);
    let w = jobs::Window { date, start, end };
    // the inputs as the runner scans them
    let p = jobs::JobParams::default();
    let tape = runner::scan_input(names::MARKET_TRADES, &list(tape)?, &schemas[0], &p)?;
    let execs = runner::scan_input(names::EXECUTIONS, &list(execs)?, &schemas[1], &p)?;
    let mut bars = jobs::daily_bars(jobs::l2_market_trades(tape, &w, &p)).collect()?;
    let l2 = jobs::l2_executions(
        jobs::distinct_executions(execs, &w),
        refs[0].clone().lazy(),
        refs[1].clone().lazy(),
        refs[2].clone().lazy(),
        &w,
    );
    let mut positions =
        jobs::positions(refs[3].clone().lazy(), l2, bars.clone().lazy(), &w).collect()?;
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    ParquetWriter::new(std::fs::File::create(out.join("bars.parquet"))?).finish(&mut bars)?;
    ParquetWriter::new(std::fs::File::create(out.join("positions.parquet"))?)
        .finish(&mut positions)?;
    Ok(())
}

/// Runs `cmd` under the venv's Python as a child and returns (wall seconds, peak RSS MiB).
fn measured(python: &Path, cmd: &[String]) -> Result<(f64, f64)> {
    let wrapper = "import json, resource, subprocess, sys, time\n\
                   t = time.monotonic()\n\
                   r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n\
                   wall = time.monotonic() - t\n\
                   peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n\
                   print(json.dumps({'rc': r.returncode, 'wall': wall, 'peak_mib': peak}))\n";
    let out = Command::new(python)
        .arg("-c")
        .arg(wrapper)
        .args(cmd)
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).to_string())?;
    if v["rc"] != 0 {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((
        v["wall"].as_f64().unwrap_or(0.0),
        v["peak_mib"].as_f64().unwrap_or(0.0),
    ))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--same-work") {
        return same_work(&args[2..]);
    }
    let dir = PathBuf::from(args.get(1).map_or("/tmp/batch-bench", String::as_str));
    let scale: f64 = args.get(2).map_or(Ok(1.0), |s| s.parse())?;
    let root = dir.join(format!("lake-{scale}"));
    let rt = tokio::runtime::Runtime::new()?;
    if !root.join("l1/orders").exists() {
        let _ = std::fs::remove_dir_all(&root);
        eprintln!(
            "writing the L1 lake at {} (scale {scale}) ...",
            root.display()
        );
        rt.block_on(generate(&root, scale))?;
    }
    let python = lakehouse_tests::python_bin()?;
    let pip = python.with_file_name("pip");
    if !Command::new(&python)
        .args(["-c", "import duckdb"])
        .stderr(Stdio::null())
        .status()?
        .success()
    {
        eprintln!("installing duckdb (PyPI) into the venv, once ...");
        let ok = Command::new(&pip)
            .args(["install", "-q", "duckdb"])
            .status()?
            .success();
        if !ok {
            bail!("cannot install duckdb into the venv");
        }
    }
    let duckdb_version = Command::new(&python)
        .args(["-c", "import duckdb; print(duckdb.__version__)"])
        .output()?;
    let lakehouse = std::env::current_exe()?.with_file_name("lakehouse");
    // the active L1 files, for DuckDB
    let files = rt.block_on(async {
        let lake = Lake::open(&LakeConfig {
            root: root.display().to_string(),
            ..LakeConfig::default()
        })
        .await?;
        let mut out = Vec::new();
        for t in [names::MARKET_TRADES, names::EXECUTIONS] {
            let uris = lake.table(t).await?.file_uris()?;
            let list: Vec<String> = uris
                .iter()
                .map(|u| u.strip_prefix("file://").unwrap_or(u).to_string())
                .collect();
            let path = dir.join(format!("{}.files", t.replace('/', "_")));
            std::fs::write(&path, list.join("\n"))?;
            out.push(path);
        }
        anyhow::Ok(out)
    })?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/duckdb_eod.py");
    let duck_out = dir.join("duckdb");
    let mut ours = vec![lakehouse.display().to_string()];
    ours.extend(
        ["batch", "run", "--date", DATE, "--lake"]
            .map(String::from)
            .into_iter()
            .chain([root.display().to_string()]),
    );
    let same_out = dir.join("same-work");
    let same = vec![
        std::env::current_exe()?.display().to_string(),
        "--same-work".to_string(),
        root.display().to_string(),
        files[0].display().to_string(),
        files[1].display().to_string(),
        same_out.display().to_string(),
    ];
    let duck = vec![
        python.display().to_string(),
        script.to_string(),
        files[0].display().to_string(),
        files[1].display().to_string(),
        duck_out.display().to_string(),
    ];
    println!(
        "end of day {DATE}, scale {scale}: {} prints, {} executions, {} order events (+ duplicates and corrections); duckdb {}",
        (10_000_000.0 * scale) as u64,
        (2_000_000.0 * scale) as u64,
        (4_000_000.0 * scale) as u64,
        String::from_utf8_lossy(&duckdb_version.stdout).trim()
    );
    // alternate, twice each: the machine is shared
    let mut rows = Vec::new();
    for round in 1..=2 {
        let (w1, m1) = measured(&python, &ours)?;
        let (w2, m2) = measured(&python, &same)?;
        let (w3, m3) = measured(&python, &duck)?;
        println!(
            "round {round}: lakehouse end of day (10 outputs) {w1:6.1} s {m1:7.0} MiB | lakehouse bars + positions {w2:6.1} s {m2:7.0} MiB | duckdb bars + positions {w3:6.1} s {m3:7.0} MiB"
        );
        rows.push([w1, m1, w2, m2, w3, m3]);
    }
    let best = |i: usize| rows.iter().map(|r| r[i]).fold(f64::MAX, f64::min);
    println!(
        "best: lakehouse end of day {:.1} s ({:.0} MiB peak), lakehouse bars + positions {:.1} s ({:.0} MiB), duckdb bars + positions {:.1} s ({:.0} MiB)",
        best(0),
        best(1),
        best(2),
        best(3),
        best(4),
        best(5),
    );
    println!(
        "wall ratios duckdb/lakehouse: same work (bars + positions) {:.2}, lakehouse's whole end of day {:.2}; target: end of day <= 60 s and faster than duckdb",
        best(4) / best(2),
        best(4) / best(0),
    );
    // the three agree on the bars, and DuckDB and lakehouse on the positions
    let check = Command::new(&python)
        .arg("-c")
        .arg(
            "import sys, polars as pl\n\
             cols = ['symbol','volume','trade_count','open','close','high','low']\n\
             duck = pl.read_parquet(sys.argv[2] + '/bars.parquet').sort('symbol').select(cols)\n\
             for name, a in [('end of day', pl.read_delta(sys.argv[1] + '/l3/daily_bars')), ('same work', pl.read_parquet(sys.argv[3] + '/bars.parquet'))]:\n\
             \x20   a = a.sort('symbol').select(cols)\n\
             \x20   assert a.height == duck.height, (name, a.height, duck.height)\n\
             \x20   for c in cols[1:]:\n\
             \x20       assert (a[c].cast(pl.Float64) == duck[c].cast(pl.Float64)).all(), (name, c)\n\
             key = ['account','symbol']\n\
             dp = pl.read_parquet(sys.argv[2] + '/positions.parquet').select(key + ['net_quantity']).sort(key)\n\
             lp = pl.read_parquet(sys.argv[3] + '/positions.parquet').select(key + ['net_quantity']).sort(key)\n\
             assert dp.height == lp.height, (dp.height, lp.height)\n\
             assert (dp['net_quantity'].cast(pl.Float64) == lp['net_quantity'].cast(pl.Float64)).all()\n\
             print('bars agree:', duck.height, 'symbols, volume', duck['volume'].sum(), '; positions agree:', dp.height)\n",
        )
        .arg(&root)
        .arg(&duck_out)
        .arg(&same_out)
        .output()?;
    print!("{}", String::from_utf8_lossy(&check.stdout));
    if !check.status.success() {
        bail!(
            "the results differ: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    Ok(())
}
