//! `lakehouse speed` against the real broker process: SIGKILLed and restarted at least five
//! times during a simulated stream, its final views equal an uninterrupted run's; with events
//! beyond the allowed lateness, `l1/late_events` holds exactly those (computed independently
//! from the simulator's ground truth).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use lakehouse_lake::catalog::names;
use lakehouse_lake::{Lake, LakeConfig};

fn lakehouse() -> Command {
    let mut c = Command::new(lakehouse_tests::lakehouse_bin().unwrap());
    c.stdin(Stdio::null());
    c
}

/// A `lakehouse speed` process on its own lake; SIGKILLed on drop.
pub(crate) struct Speed {
    child: Child,
    lake: PathBuf,
    log: PathBuf,
}

impl Speed {
    pub(crate) fn spawn(dir: &Path, name: &str, brokers: &str, n: usize) -> Speed {
        let lake = dir.join(name);
        let log = dir.join(format!("{name}-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = lakehouse()
            .args(["speed", "--config"])
            .arg(dir.join("lakehouse.toml"))
            .args(["--brokers", brokers, "--lake"])
            .arg(&lake)
            .arg("--dump-views")
            .arg(dir.join(format!("{name}.json")))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Speed { child, lake, log }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let log = self.log.clone();
        let child = &mut self.child;
        let mut status = None;
        until(
            Duration::from_secs(60),
            || {
                format!(
                    "speed did not stop:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
            || {
                status = child.try_wait().unwrap();
                status.is_some()
            },
        );
        let s = status.unwrap();
        assert!(s.success(), "speed exited with {s}:\n{}", self.log_text());
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Speed {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) async fn open(lake: &Path) -> Lake {
    Lake::open(&LakeConfig {
        root: lake.display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Messages per topic in the truth file.
pub(crate) fn messages_per_topic(truth: &Path) -> BTreeMap<String, i64> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(truth).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut out = BTreeMap::new();
    for b in reader {
        let b = b.unwrap();
        let seq = b.column_by_name("message_seq").unwrap().clone();
        let seq = cast(&seq, &DataType::Int64).unwrap();
        let seq = seq.as_primitive::<Int64Type>();
        let topic = b
            .column_by_name("topic")
            .unwrap()
            .as_string::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            if seen.insert(seq.value(i)) {
                *out.entry(topic.value(i).to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}

/// Polls `done` until it holds; fails with `why()` after `timeout`.
pub(crate) fn until(timeout: Duration, why: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the latest checkpoint of `speed` covers `expected` messages per topic.
fn wait_caught_up(rt: &tokio::runtime::Runtime, speed: &Speed, expected: &BTreeMap<String, i64>) {
    let why = || {
        format!(
            "speed did not catch up with {expected:?}:\n{}",
            speed.log_text()
        )
    };
    until(Duration::from_secs(180), why, || {
        rt.block_on(async {
            let lake = open(&speed.lake).await;
            let offsets = lakehouse_speed::runner::checkpointed_offsets(&lake)
                .await
                .unwrap();
            offsets.is_some_and(|o| {
                expected
                    .iter()
                    .all(|(t, n)| o.get(t).map_or(0, |ps| ps.values().sum::<i64>()) >= *n)
            })
        })
    });
}

/// The rows of `l1/late_events`: (view, topic, partition, offset).
fn late_rows(rt: &tokio::runtime::Runtime, lake: &Path) -> Vec<(String, String, i64, i64)> {
    rt.block_on(async {
        let lake = open(lake).await;
        let t = lake.table(names::LATE_EVENTS).await.unwrap();
        let mut rows = Vec::new();
        for b in t.read_all().await.unwrap() {
            let col = |n: &str, ty: &DataType| cast(b.column_by_name(n).unwrap(), ty).unwrap();
            let (view, topic) = (col("view", &DataType::Utf8), col("_topic", &DataType::Utf8));
            let (part, off) = (
                col("_partition", &DataType::Int64),
                col("_offset", &DataType::Int64),
            );
            for i in 0..b.num_rows() {
                rows.push((
                    view.as_string::<i32>().value(i).to_string(),
                    topic.as_string::<i32>().value(i).to_string(),
                    part.as_primitive::<Int64Type>().value(i),
                    off.as_primitive::<Int64Type>().value(i),
                ));
            }
        }
        rows
    })
}

/// (view, key, event time) of every late event.
fn late_keys(rt: &tokio::runtime::Runtime, lake: &Path) -> Vec<(String, String, i64)> {
    rt.block_on(async {
        let lake = open(lake).await;
        let t = lake.table(names::LATE_EVENTS).await.unwrap();
        let mut rows = Vec::new();
        for b in t.read_all().await.unwrap() {
            let col = |n: &str| cast(b.column_by_name(n).unwrap(), &DataType::Utf8).unwrap();
            let (view, key) = (col("view"), col("key"));
            let ts = b
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>()
                .clone();
            for i in 0..b.num_rows() {
                rows.push((
                    view.as_string::<i32>().value(i).to_string(),
                    key.as_string::<i32>().value(i).to_string(),
                    ts.value(i),
                ));
            }
        }
        rows
    })
}

/// (key, window start) -> count of the final (non-retraction) panes of `view`.
fn final_panes(
    rt: &tokio::runtime::Runtime,
    lake: &Path,
    view: &str,
) -> BTreeMap<(String, String), u64> {
    rt.block_on(async {
        let lake = open(lake).await;
        let t = lake.table(names::SPEED_PANES).await.unwrap();
        let mut out = BTreeMap::new();
        for b in t.read_all().await.unwrap() {
            let col = |n: &str| cast(b.column_by_name(n).unwrap(), &DataType::Utf8).unwrap();
            let (v, key, value) = (col("view"), col("key"), col("value"));
            let start = b
                .column_by_name("window_start")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>()
                .clone();
            let fin = b.column_by_name("is_final").unwrap().as_boolean().clone();
            let retraction = b.column_by_name("retraction").unwrap().as_boolean().clone();
            for i in 0..b.num_rows() {
                if v.as_string::<i32>().value(i) != view || !fin.value(i) || retraction.value(i) {
                    continue;
                }
                let json: serde_json::Value =
                    serde_json::from_str(value.as_string::<i32>().value(i)).unwrap();
                out.insert(
                    (
                        key.as_string::<i32>().value(i).to_string(),
                        lakehouse_lake::EventTime::from_micros(start.value(i)).to_string(),
                    ),
                    json["count"].as_u64().unwrap(),
                );
            }
        }
        out
    })
}

fn write_config(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("lakehouse.toml"),
        format!(
            "[speed]\ncheckpoint-interval = \"500ms\"\n{extra}\n[simulate]\npartitions = 3\nduplicate = 0.01\nmalformed = 0.005\nexec-amend = 0.03\nexec-cancel = 0.02\n"
        ),
    )
    .unwrap();
}

#[test]
fn sigkilled_and_restarted_speed_ends_with_the_views_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kafka_dir = d.join("kafka");
    std::fs::create_dir_all(&kafka_dir).unwrap();
    let broker = lakehouse_tests::kafka_durable(&kafka_dir, lakehouse_tests::free_port()).unwrap();
    let brokers = broker.addr();
    write_config(d, "");
    // a live stream: 3000 messages/s for 12 s; topics exist once the simulator started
    let mut sim = lakehouse()
        .args(["simulate", "--config"])
        .arg(d.join("lakehouse.toml"))
        .args([
            "--brokers",
            &brokers,
            "--seed",
            "21",
            "--rate",
            "3000",
            "--duration",
            "12s",
            "--truth",
        ])
        .arg(d.join("truth.parquet"))
        .arg("--refdata")
        .arg(d.join("refdata"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("sim.log")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // the simulator wrote its reference data at start: desks and asset classes for exposure
    for lake in ["whole", "killed"] {
        let r = d.join("refdata");
        let out = lakehouse()
            .args(["refdata", "load", "--lake"])
            .arg(d.join(lake))
            .arg("--instruments")
            .arg(r.join("instruments.csv"))
            .arg("--accounts")
            .arg(r.join("accounts.csv"))
            .arg("--fx")
            .arg(r.join("fx_rates.csv"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut whole = Speed::spawn(d, "whole", &brokers, 0);
    let mut killed = Speed::spawn(d, "killed", &brokers, 0);
    let mut kills = 0;
    let mut rng = 7u64;
    while kills < 6 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(700 + rng % 1500));
        killed.kill();
        kills += 1;
        killed = Speed::spawn(d, "killed", &brokers, kills);
    }
    assert!(
        sim.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(d.join("sim.log")).unwrap()
    );
    let expected = messages_per_topic(&d.join("truth.parquet"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_caught_up(&rt, &whole, &expected);
    wait_caught_up(&rt, &killed, &expected);
    whole.stop();
    killed.stop();
    let a: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("whole.json")).unwrap()).unwrap();
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("killed.json")).unwrap()).unwrap();
    assert!(a["events"].as_u64().unwrap() > 20_000, "{}", a["events"]);
    assert!(a["positions"].as_array().unwrap().len() > 50);
    let exposure = a["desk_exposure"].as_array().unwrap();
    assert!(
        exposure
            .iter()
            .any(|e| e[0].as_str().unwrap().starts_with("DESK-")),
        "{exposure:?}"
    );
    assert_eq!(
        a, b,
        "the views after {kills} SIGKILLs differ from an uninterrupted run"
    );
    // replaced checkpoint states are deleted: at most the published one and one a kill left
    let states = std::fs::read_dir(killed.lake.join("system/speed_state"))
        .unwrap()
        .count();
    assert!(states <= 1 + kills, "{states} state objects left");
    // late events were written at most once per (view, offset) despite the kills
    let mut seen = BTreeSet::new();
    for k in late_rows(&rt, &killed.lake) {
        assert!(seen.insert(k.clone()), "late event {k:?} written twice");
    }
}

/// One tape message of the truth: its offset on the single partition, event time, flags.
struct TapeMessage {
    offset: i64,
    ts: Option<i64>,
    duplicate: bool,
}

fn tape(truth: &Path) -> Vec<TapeMessage> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(truth).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut rows: Vec<(u64, Option<i64>, bool, bool)> = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let seq = cast(b.column_by_name("message_seq").unwrap(), &DataType::Int64).unwrap();
        let seq = seq.as_primitive::<Int64Type>();
        let kind = b.column_by_name("kind").unwrap().as_string::<i32>().clone();
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let dup = b.column_by_name("duplicate").unwrap().as_boolean().clone();
        let bad = b.column_by_name("malformed").unwrap().as_boolean().clone();
        for i in 0..b.num_rows() {
            if kind.value(i) == "market-trade" {
                rows.push((
                    seq.value(i) as u64,
                    ts.is_valid(i).then(|| ts.value(i)),
                    dup.value(i),
                    bad.value(i),
                ));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    rows.into_iter()
        .enumerate()
        .map(|(offset, (_, ts, duplicate, malformed))| TapeMessage {
            offset: offset as i64,
            ts: if malformed { None } else { ts },
            duplicate,
        })
        .collect()
}

#[test]
fn late_events_hold_exactly_the_prints_beyond_the_allowed_lateness() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = lakehouse_tests::kafka().unwrap();
    let brokers = broker.addr();
    // one partition, so the watermark follows the send order the truth records
    std::fs::write(
        d.join("lakehouse.toml"),
        "[speed]\ncheckpoint-interval = \"500ms\"\nallowed-lateness = \"5s\"\nout-of-orderness = \"1s\"\nidle-timeout = \"1h\"\n\
         [simulate]\npartitions = 1\nlate = 0.03\nlateness = \"30s\"\nout-of-order = 0.05\nduplicate = 0.01\nmalformed = 0.005\ntime-scale = 100.0\n",
    )
    .unwrap();
    let out = lakehouse()
        .args(["simulate", "--config"])
        .arg(d.join("lakehouse.toml"))
        .args([
            "--brokers",
            &brokers,
            "--seed",
            "4",
            "--events",
            "20000",
            "--as-fast-as-possible",
            "--truth",
        ])
        .arg(d.join("truth.parquet"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected_msgs = messages_per_topic(&d.join("truth.parquet"));
    let mut speed = Speed::spawn(d, "lake", &brokers, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_caught_up(&rt, &speed, &expected_msgs);
    speed.stop();
    // the consumer group mirrors the checkpoint (for lag monitoring)
    {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "lakehouse-speed")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in expected_msgs.keys() {
            tpl.add_partition(t, 0);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        for e in committed.elements() {
            assert_eq!(
                e.offset(),
                rdkafka::Offset::Offset(expected_msgs[e.topic()]),
                "group offset of {}",
                e.topic()
            );
        }
    }

    // independently: the watermark before each print is the largest earlier print time minus
    // 1 s; a print is late when its minute ended 5 s or more before that
    let mut max_ts: Option<i64> = None;
    let mut want = BTreeSet::new();
    for m in tape(&d.join("truth.parquet")) {
        let Some(ts) = m.ts else { continue };
        if m.duplicate {
            continue;
        }
        let wm = max_ts.map_or(i64::MIN, |t| t - 1_000_000);
        let minute_end = ts - ts.rem_euclid(60_000_000) + 60_000_000;
        if minute_end + 5_000_000 <= wm {
            want.insert(m.offset);
        }
        max_ts = Some(max_ts.map_or(ts, |t| t.max(ts)));
    }
    assert!(
        want.len() > 20,
        "the stream should have late prints, got {}",
        want.len()
    );
    let mut got: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for (view, _, _, offset) in late_rows(&rt, &speed.lake) {
        got.entry(view).or_default().insert(offset);
    }
    assert_eq!(got.get("bars_1m"), Some(&want), "bars_1m late events");
    // the live panes and the exact views agree: a minute's final pane counts every print of
    // it except the late ones
    let views: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("lake.json")).unwrap()).unwrap();
    let mut exact: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (symbol, bars) in views["bars_1m"].as_object().unwrap() {
        for b in bars.as_array().unwrap() {
            exact.insert(
                (symbol.clone(), b[0].as_str().unwrap().to_string()),
                b[7].as_u64().unwrap(),
            );
        }
    }
    let mut late_per_minute: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (view, key, ts) in late_keys(&rt, &speed.lake) {
        if view == "bars_1m" {
            let minute = lakehouse_lake::EventTime::from_micros(ts - ts.rem_euclid(60_000_000));
            *late_per_minute
                .entry((key, minute.to_string()))
                .or_default() += 1;
        }
    }
    let finals = final_panes(&rt, &speed.lake, "bars_1m");
    assert!(finals.len() > 10, "only {} final panes", finals.len());
    for ((symbol, minute), count) in finals {
        let k = (symbol, minute);
        let late = late_per_minute.get(&k).copied().unwrap_or(0);
        assert_eq!(
            Some(count + late),
            exact.get(&k).copied(),
            "{k:?}: final pane + late = exact bar"
        );
    }
    assert_eq!(
        got.get("bars_5m"),
        Some(&want),
        "bars_5m late events (same first window end)"
    );
}
