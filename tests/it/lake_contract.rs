//! The lake's contract, written once and run per backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deltalake::arrow::array::{Array, AsArray, Int64Array, StringArray};
use deltalake::arrow::datatypes::Int64Type;
use deltalake::arrow::record_batch::RecordBatch;
use lakehouse_lake::catalog::{self, names};
use lakehouse_lake::events::{self, Execution, KafkaMeta, Lifecycle, Side};
use lakehouse_lake::{
    BusinessDate, Decimal, Error, EventTime, Lake, LakeConfig, Offset, OffsetRanges, PipelineId,
    Table, TopicPartition,
};

pub(crate) fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// `n` executions on `partition`, offsets `first..first+n`, price 0.1 each.
pub(crate) fn executions(partition: i32, first: i64, n: i64) -> (RecordBatch, OffsetRanges) {
    let tp = TopicPartition::new("executions", partition);
    let mut ranges = OffsetRanges::new();
    let rows: Vec<_> = (first..first + n)
        .map(|offset| {
            ranges.record(&tp, Offset(offset));
            let e = Execution {
                exec_id: format!("E-{partition}-{offset}"),
                order_id: format!("O-{offset}"),
                account: "ACC-001".into(),
                trader: "T1".into(),
                symbol: "AAPL".into(),
                venue: Some("XNAS".into()),
                side: if offset % 2 == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                },
                price: dec("0.1"),
                quantity: dec("3"),
                currency: "USD".into(),
                ts: EventTime::parse_rfc3339("2024-01-02T15:04:05.123456Z").unwrap(),
                lifecycle: Lifecycle::New,
                ref_exec_id: None,
            };
            let meta = KafkaMeta {
                topic: "executions".into(),
                partition,
                offset,
                kafka_ts: Some(EventTime::from_micros(1_704_207_845_000_000)),
                ingest_ts: EventTime::from_micros(1_704_207_846_000_000),
            };
            (e, meta)
        })
        .collect();
    (events::executions_batch(&rows).unwrap(), ranges)
}

pub(crate) fn pipeline() -> PipelineId {
    PipelineId::new("ingest")
}

pub(crate) async fn exec_table(lake: &Lake) -> Table {
    lake.create_table(&catalog::table(names::EXECUTIONS).unwrap())
        .await
        .unwrap()
}

/// (partition, offset) of every row, sorted.
pub(crate) async fn keys(table: &Table) -> Vec<(i32, i64)> {
    let mut out = Vec::new();
    for b in table.read_all().await.unwrap() {
        let p = b
            .column_by_name("_partition")
            .unwrap()
            .as_primitive::<deltalake::arrow::datatypes::Int32Type>();
        let o = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push((p.value(i), o.value(i)));
        }
    }
    out.sort_unstable();
    out
}

fn price_sum(batches: &[RecordBatch]) -> Decimal {
    let mut sum = Decimal::ZERO;
    for b in batches {
        for p in events::decimal_column(b, "price").unwrap() {
            sum = sum.checked_add(p.unwrap()).unwrap();
        }
    }
    sum
}

/// Append, read back, reopen, time travel.
pub(crate) async fn round_trip(lake: Lake, reopen: impl AsyncFn() -> Lake) {
    let mut t = exec_table(&lake).await;
    assert_eq!(t.version(), Some(0));
    assert_eq!(t.properties().unwrap()["delta.appendOnly"], "true");
    assert_eq!(
        t.partition_columns().unwrap(),
        vec!["event_date".to_string()]
    );

    let (b1, r1) = executions(0, 0, 500);
    let (b2, r2) = executions(1, 0, 300);
    let v1 = t
        .append_exactly_once(&pipeline(), vec![b1], &r1)
        .await
        .unwrap();
    let v2 = t
        .append_exactly_once(&pipeline(), vec![b2], &r2)
        .await
        .unwrap();
    assert_eq!((v1, v2), (1, 2));
    // object stores keep modification times at second precision: leave room on both sides
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (b3, r3) = executions(0, 500, 200);
    t.append_exactly_once(&pipeline(), vec![b3], &r3)
        .await
        .unwrap();

    let lake2 = reopen().await;
    let t2 = lake2.table(names::EXECUTIONS).await.unwrap();
    assert_eq!(t2.version(), Some(3));
    let rows = t2.read_all().await.unwrap();
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 1000);
    // 1000 x 0.1 is exactly 100
    assert_eq!(price_sum(&rows), dec("100"));
    let offsets = t2
        .committed_offsets(
            &pipeline(),
            [
                TopicPartition::new("executions", 0),
                TopicPartition::new("executions", 1),
                TopicPartition::new("executions", 2),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        offsets,
        BTreeMap::from([
            (TopicPartition::new("executions", 0), Offset(699)),
            (TopicPartition::new("executions", 1), Offset(299)),
        ])
    );
    // history carries the offset ranges of every append
    let history = t2.history(None).await.unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[0].version, 3);
    assert_eq!(history[0].offsets.as_ref(), Some(&r3));
    assert_eq!(history[0].pipeline.as_deref(), Some("ingest"));

    // time travel by version and by timestamp
    let old = lake2.table_at_version(names::EXECUTIONS, 1).await.unwrap();
    assert_eq!(old.count_rows().await.unwrap(), 500);
    assert_eq!(
        old.committed_offset(&pipeline(), &TopicPartition::new("executions", 1))
            .await
            .unwrap(),
        None
    );
    let by_time = lake2
        .table_at_timestamp(names::EXECUTIONS, between)
        .await
        .unwrap();
    assert_eq!(by_time.version(), Some(2));
    assert_eq!(by_time.count_rows().await.unwrap(), 800);

    // replaying offsets already committed is refused and writes nothing
    let (again, ranges) = executions(1, 250, 100);
    let mut t3 = lake2.table(names::EXECUTIONS).await.unwrap();
    let err = t3
        .append_exactly_once(&pipeline(), vec![again], &ranges)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OffsetsOutOfOrder { .. }), "{err}");
    t3.refresh().await.unwrap();
    assert_eq!(t3.version(), Some(3));

    // a batch that does not match the schema is refused with a clear error
    let (bad, r) = executions(2, 0, 1);
    let bad = bad.project(&[0, 1, 2]).unwrap();
    let err = t3
        .append_exactly_once(&pipeline(), vec![bad], &r)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("column 3 `trader` (Utf8) is missing"),
        "{err}"
    );

    // every missing catalog table is created, an existing one is left as it is, and listing
    // sees them all
    lake2.create_missing().await.unwrap();
    let listed = lake2.list().await.unwrap();
    assert_eq!(listed.len(), catalog::tables().len());
    assert!(listed.iter().all(|t| t.version.is_some()));
    let execs = listed.iter().find(|t| t.name == names::EXECUTIONS);
    assert_eq!(execs.and_then(|t| t.version), Some(3));
    assert_eq!(
        lake2.ensure_catalog().await.unwrap().len(),
        catalog::tables().len()
    );
}

/// Two writers with the same app id race for the same offsets: one commit wins, the other
/// gets the typed conflict, no row is duplicated, and the offsets read back exactly.
pub(crate) async fn racing_writers(a: Lake, b: Lake) {
    exec_table(&a).await;
    for round in 0..5i64 {
        let first = round * 100;
        // both load the table before either writes, so both believe they are next
        let mut ta = a.table(names::EXECUTIONS).await.unwrap();
        let mut tb = b.table(names::EXECUTIONS).await.unwrap();
        let (ba, ra) = executions(0, first, 100);
        let (bb, rb) = executions(0, first, 100);
        let p = pipeline();
        let (x, y) = tokio::join!(
            ta.append_exactly_once(&p, vec![ba], &ra),
            tb.append_exactly_once(&p, vec![bb], &rb)
        );
        let wins = [x.is_ok(), y.is_ok()].iter().filter(|w| **w).count();
        assert_eq!(
            wins, 1,
            "round {round}: exactly one writer must win: {x:?} / {y:?}"
        );
        let loser = x.err().or(y.err()).unwrap();
        assert!(
            matches!(loser, Error::CommitConflict { .. }),
            "round {round}: loser must get the typed conflict, got {loser}"
        );
        assert_eq!(loser.kind(), lakehouse_lake::ErrorKind::Conflict);
    }
    // a third writer that starts after a commit sees the offsets and refuses up front
    let mut tc = b.table(names::EXECUTIONS).await.unwrap();
    let (bc, rc) = executions(0, 450, 100);
    assert!(matches!(
        tc.append_exactly_once(&pipeline(), vec![bc], &rc).await,
        Err(Error::OffsetsOutOfOrder { .. })
    ));

    // writers on different partitions never conflict (delta-rs retries the blind append)
    let mut ta = a.table(names::EXECUTIONS).await.unwrap();
    let mut tb = b.table(names::EXECUTIONS).await.unwrap();
    let (b1, r1) = executions(1, 0, 50);
    let (b2, r2) = executions(2, 0, 50);
    let p = pipeline();
    let (x, y) = tokio::join!(
        ta.append_exactly_once(&p, vec![b1], &r1),
        tb.append_exactly_once(&p, vec![b2], &r2)
    );
    x.unwrap();
    y.unwrap();

    let t = a.table(names::EXECUTIONS).await.unwrap();
    let got = keys(&t).await;
    let mut expected: Vec<(i32, i64)> = (0..500).map(|o| (0, o)).collect();
    expected.extend((0..50).map(|o| (1, o)));
    expected.extend((0..50).map(|o| (2, o)));
    assert_eq!(
        got, expected,
        "no duplicate and no missing (partition, offset)"
    );
    for (p, last) in [(0, 499), (1, 49), (2, 49)] {
        assert_eq!(
            t.committed_offset(&pipeline(), &TopicPartition::new("executions", p))
                .await
                .unwrap(),
            Some(Offset(last))
        );
    }
}

fn bars(date: BusinessDate, generation: i64, n: usize) -> RecordBatch {
    let d = deltalake::arrow::array::Date32Array::from(vec![date.days_since_epoch(); n]);
    let sym = StringArray::from_iter_values((0..n).map(|i| format!("S{i}")));
    let px = || {
        Arc::new(
            deltalake::arrow::array::Decimal128Array::from(vec![
                Decimal::from_i64(generation).raw();
                n
            ])
            .with_precision_and_scale(38, 8)
            .unwrap(),
        ) as Arc<dyn Array>
    };
    RecordBatch::try_new(
        lakehouse_lake::schema::daily_bars(),
        vec![
            Arc::new(d),
            Arc::new(sym),
            px(),
            px(),
            px(),
            px(),
            px(),
            px(),
            Arc::new(Int64Array::from(vec![generation; n])),
        ],
    )
    .unwrap()
}

/// `batch` without its partition column `business_date`, as the bytes of one Parquet file.
fn parquet(batch: &RecordBatch) -> bytes::Bytes {
    let mut b = batch.clone();
    b.remove_column(0);
    let mut buf = Vec::new();
    let mut w =
        deltalake::parquet::arrow::ArrowWriter::try_new(&mut buf, b.schema(), None).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
    buf.into()
}

/// (generation, rows) seen for one date.
fn generations(batches: &[RecordBatch], date: BusinessDate) -> BTreeMap<i64, usize> {
    let mut out = BTreeMap::new();
    for b in batches {
        let d = b
            .column_by_name("business_date")
            .unwrap()
            .as_primitive::<deltalake::arrow::datatypes::Date32Type>();
        let g = b
            .column_by_name("trade_count")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if d.value(i) == date.days_since_epoch() {
                *out.entry(g.value(i)).or_default() += 1;
            }
        }
    }
    out
}

/// Replacing a partition is atomic under a concurrent reader; other partitions are untouched.
pub(crate) async fn atomic_replace(lake: Lake, reader_lake: Lake) {
    let def = catalog::table(names::DAILY_BARS).unwrap();
    let mut t = lake.create_table(&def).await.unwrap();
    let d1: BusinessDate = "2024-01-02".parse().unwrap();
    let d2: BusinessDate = "2024-01-03".parse().unwrap();
    t.replace_partition("business_date", d2, vec![bars(d2, 99, 7)], HashMap::new())
        .await
        .unwrap();
    t.replace_partition("business_date", d1, vec![bars(d1, 0, 10)], HashMap::new())
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut reads = 0;
            while !done.load(Ordering::Acquire) || reads < 3 {
                let t = reader_lake.table(names::DAILY_BARS).await.unwrap();
                let rows = t.read_all().await.unwrap();
                let seen = generations(&rows, d1);
                // exactly one generation, with exactly its own row count (10 + generation)
                assert_eq!(seen.len(), 1, "mixed generations visible: {seen:?}");
                let (g, n) = seen.into_iter().next().unwrap();
                assert_eq!(
                    n as i64,
                    10 + g,
                    "partial replace visible: generation {g} with {n} rows"
                );
                assert_eq!(generations(&rows, d2), BTreeMap::from([(99, 7)]));
                reads += 1;
            }
            reads
        })
    };
    // odd generations through delta-rs's writer, even ones as a Parquet file stored by the
    // caller (as the batch layer's Polars writer does) and committed in its place
    for g in 1..=8i64 {
        let batch = bars(d1, g, (10 + g) as usize);
        if g % 2 == 1 {
            t.replace_partition("business_date", d1, vec![batch], HashMap::new())
                .await
                .unwrap();
        } else {
            let file = t
                .put_data_file(
                    "business_date",
                    &d1.to_string(),
                    parquet(&batch),
                    10 + g as u64,
                )
                .await
                .unwrap();
            assert!(
                file.path.starts_with("business_date=2024-01-02/"),
                "{file:?}"
            );
            t.replace_partition_files("business_date", d1, vec![file], HashMap::new())
                .await
                .unwrap();
        }
    }
    done.store(true, Ordering::Release);
    // a stored file names the table's partition column, and no other
    let err = t
        .put_data_file("symbol", "S0", parquet(&bars(d1, 9, 1)), 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("business_date"), "{err}");
    let reads = reader.await.unwrap();
    assert!(reads >= 3);

    let t = lake.table(names::DAILY_BARS).await.unwrap();
    let rows = t.read_all().await.unwrap();
    assert_eq!(generations(&rows, d1), BTreeMap::from([(8, 18)]));
    // rows of another date are refused by the predicate
    let err = lake
        .table(names::DAILY_BARS)
        .await
        .unwrap()
        .replace_partition("business_date", d1, vec![bars(d2, 5, 1)], HashMap::new())
        .await;
    assert!(
        err.is_err(),
        "rows outside the replaced date must be refused"
    );
    // the old generation is still there by time travel
    let v = t.version().unwrap();
    let old = lake
        .table_at_version(names::DAILY_BARS, v - 1)
        .await
        .unwrap();
    assert_eq!(
        generations(&old.read_all().await.unwrap(), d1),
        BTreeMap::from([(7, 17)])
    );
}

/// L1 tables refuse anything that removes rows.
pub(crate) async fn l1_is_append_only(lake: Lake) {
    let mut t = exec_table(&lake).await;
    let (b, r) = executions(0, 0, 10);
    t.append_exactly_once(&pipeline(), vec![b], &r)
        .await
        .unwrap();
    let date: BusinessDate = "2024-01-02".parse().unwrap();
    let (b, _) = executions(0, 10, 1);
    let err = t
        .replace_partition("event_date", date, vec![b], HashMap::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AppendOnly { .. }), "{err}");

    let delta = lake.table(names::EXECUTIONS).await.unwrap().delta().clone();
    let err = delta.clone().delete().await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("append"),
        "delete: {err}"
    );
    let err = delta
        .update()
        .with_update("symbol", "'MSFT'")
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("append"),
        "update: {err}"
    );
    let t = lake.table(names::EXECUTIONS).await.unwrap();
    assert_eq!(t.count_rows().await.unwrap(), 10);
    assert_eq!(t.version(), Some(1));
}

async fn memory() -> Lake {
    Lake::open(&LakeConfig {
        root: "memory:///".into(),
        ..LakeConfig::default()
    })
    .await
    .unwrap()
}

async fn file(dir: &std::path::Path) -> Lake {
    Lake::open(&LakeConfig {
        root: dir.display().to_string(),
        ..LakeConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn round_trip_memory() {
    let lake = memory().await;
    let same = lake.clone();
    round_trip(lake, async || same.clone()).await;
}

#[tokio::test]
async fn round_trip_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lake");
    round_trip(file(&path).await, async || file(&path).await).await;
    // the layout is the public contract
    assert!(
        path.join("l1/executions/_delta_log/00000000000000000000.json")
            .is_file()
    );
    assert!(path.join("l1/executions/event_date=2024-01-02").is_dir());
}

#[tokio::test]
async fn racing_writers_memory() {
    let lake = memory().await;
    racing_writers(lake.clone(), lake).await;
}

#[tokio::test]
async fn racing_writers_file() {
    let dir = tempfile::tempdir().unwrap();
    racing_writers(file(dir.path()).await, file(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_replace_file() {
    let dir = tempfile::tempdir().unwrap();
    atomic_replace(file(dir.path()).await, file(dir.path()).await).await;
}

#[tokio::test]
async fn append_only_memory() {
    l1_is_append_only(memory().await).await;
}

#[tokio::test]
async fn append_only_file() {
    let dir = tempfile::tempdir().unwrap();
    l1_is_append_only(file(dir.path()).await).await;
}

/// Compaction keeps the rows, the committed offsets and time travel; a checkpoint is written;
/// L1 refuses a vacuum inside its retention; an L3 vacuum deletes replaced and orphan files.
#[tokio::test]
async fn maintenance_file() {
    let dir = tempfile::tempdir().unwrap();
    let lake = file(dir.path()).await;
    let mut t = exec_table(&lake).await;
    for i in 0..5 {
        let (batch, ranges) = executions(0, i * 10, 10);
        t.append_exactly_once(&pipeline(), vec![batch], &ranges)
            .await
            .unwrap();
    }
    let before_keys = keys(&t).await;
    let before_version = t.version().unwrap();
    assert_eq!(t.file_uris().unwrap().len(), 5);
    // 2024-01-02 is before 2024-01-03: closed, compacted; before itself: left alone
    let day = |s: &str| s.parse::<BusinessDate>().unwrap();
    let none = t
        .compact("event_date", day("2024-01-02"), 128 << 20)
        .await
        .unwrap();
    assert_eq!(none.files_removed, 0);
    let done = t
        .compact("event_date", day("2024-01-03"), 128 << 20)
        .await
        .unwrap();
    assert_eq!((done.files_removed, done.files_added), (5, 1));
    assert_eq!(t.file_uris().unwrap().len(), 1);
    assert_eq!(keys(&t).await, before_keys);
    let tp = TopicPartition::new("executions", 0);
    assert_eq!(
        t.committed_offset(&pipeline(), &tp).await.unwrap(),
        Some(Offset(49))
    );
    // time travel to before the compaction still reads its five files
    let old = lake
        .table_at_version(names::EXECUTIONS, before_version)
        .await
        .unwrap();
    assert_eq!(old.file_uris().unwrap().len(), 5);
    assert_eq!(keys(&old).await, before_keys);

    t.checkpoint().await.unwrap();
    let log = dir.path().join("l1/executions/_delta_log");
    assert!(std::fs::read_dir(&log).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".checkpoint.parquet")
    }));
    let day_secs = std::time::Duration::from_secs(86_400);
    let err = t.vacuum(day_secs, false).await.unwrap_err();
    assert_eq!(err.kind(), lakehouse_lake::ErrorKind::InvalidInput, "{err}");
    let kept = t
        .vacuum(catalog::APPEND_ONLY_RETENTION, false)
        .await
        .unwrap();
    assert!(kept.files.is_empty(), "{kept:?}");
    assert_eq!(keys(&old).await, before_keys);

    // L3: two replaces of a date leave the first generation's file removed; with an orphan
    // (a killed writer's file) both go in a vacuum with no retention
    let mut bars_t = lake
        .create_table(&catalog::table(names::DAILY_BARS).unwrap())
        .await
        .unwrap();
    let d = day("2024-01-02");
    for g in 1..=2 {
        bars_t
            .replace_partition("business_date", d, vec![bars(d, g, 3)], HashMap::new())
            .await
            .unwrap();
    }
    let part = dir.path().join("l3/daily_bars/business_date=2024-01-02");
    std::fs::write(
        part.join("orphan-of-a-killed-run.parquet"),
        b"not committed",
    )
    .unwrap();
    let dry = bars_t
        .vacuum(std::time::Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!(dry.files.len(), 2, "{dry:?}");
    assert_eq!(std::fs::read_dir(&part).unwrap().count(), 3);
    let gone = bars_t
        .vacuum(std::time::Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(gone.files.len(), 2, "{gone:?}");
    assert_eq!(std::fs::read_dir(&part).unwrap().count(), 1);
    assert_eq!(
        generations(&bars_t.read_all().await.unwrap(), d),
        BTreeMap::from([(2, 3)])
    );
}
