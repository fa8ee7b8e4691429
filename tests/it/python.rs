//! The Python `deltalake` package (PyPI) opens tables the lake wrote and reads the same rows
//! and exact decimal values.

use std::collections::HashMap;
use std::process::Command;

use lakehouse_lake::catalog::{self, names};
use lakehouse_lake::{BusinessDate, Decimal, Lake, LakeConfig};

use crate::lake_contract::{dec, exec_table, executions, pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_deltalake_reads_what_the_lake_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let lake = Lake::open(&LakeConfig {
        root: root.display().to_string(),
        ..LakeConfig::default()
    })
    .await
    .unwrap();
    let mut t = exec_table(&lake).await;
    for (p, n) in [(0, 700), (1, 300)] {
        let (b, r) = executions(p, 0, n);
        t.append_exactly_once(&pipeline(), vec![b], &r)
            .await
            .unwrap();
    }
    // a replace-partition table with awkward decimals
    let mut bars = lake
        .create_table(&catalog::table(names::DAILY_BARS).unwrap())
        .await
        .unwrap();
    let date: BusinessDate = "2024-01-02".parse().unwrap();
    let closes = ["101.25", "0.00000001", "99999999.99999999"];
    let rows: Vec<_> = closes
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("S{i}"), dec(c)))
        .collect();
    bars.replace_partition(
        "business_date",
        date,
        vec![bars_batch(date, &rows)],
        HashMap::new(),
    )
    .await
    .unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/read_table.py");
    let out = Command::new(lakehouse_tests::python_bin().unwrap())
        .arg(script)
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v["executions"];
    assert_eq!(e["version"], 2);
    assert_eq!(e["rows"], 1000);
    assert_eq!(e["distinct_offsets"], 1000);
    assert_eq!(e["price_type"], "decimal128(38, 8)");
    assert_eq!(
        e["price_sum"].as_str().unwrap().parse::<Decimal>().unwrap(),
        dec("100")
    );
    assert_eq!(
        e["first_price"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        dec("0.1")
    );
    assert_eq!(e["partition_columns"], serde_json::json!(["event_date"]));
    assert_eq!(e["append_only"], "true");
    let expected = closes
        .iter()
        .fold(Decimal::ZERO, |s, c| s.checked_add(dec(c)).unwrap());
    assert_eq!(v["daily_bars"]["rows"], 3);
    assert_eq!(
        v["daily_bars"]["close_sum"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        expected
    );
}

fn bars_batch(
    date: BusinessDate,
    rows: &[(String, Decimal)],
) -> deltalake::arrow::record_batch::RecordBatch {
    use deltalake::arrow::array::{
        ArrayRef, Date32Array, Decimal128Array, Int64Array, StringArray,
    };
    use std::sync::Arc;
    let n = rows.len();
    let d = |f: &dyn Fn(&Decimal) -> Decimal| -> ArrayRef {
        Arc::new(
            Decimal128Array::from_iter_values(rows.iter().map(|(_, x)| f(x).raw()))
                .with_precision_and_scale(38, 8)
                .unwrap(),
        )
    };
    deltalake::arrow::record_batch::RecordBatch::try_new(
        lakehouse_lake::schema::daily_bars(),
        vec![
            Arc::new(Date32Array::from(vec![date.days_since_epoch(); n])),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(s, _)| s.clone()),
            )),
            d(&|x| *x),
            d(&|x| *x),
            d(&|x| *x),
            d(&|x| *x),
            d(&|x| *x),
            d(&|x| *x),
            Arc::new(Int64Array::from(vec![1; n])),
        ],
    )
    .unwrap()
}
