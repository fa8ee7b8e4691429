//! The hand-over between the lake's Arrow record batches (arrow-rs, through delta-rs) and
//! Polars data frames: an Arrow IPC stream in memory, both ways. No `unsafe` (the workspace
//! forbids it); the copy is the price, paid once per job input and output. Local Parquet
//! files of a table snapshot are read by Polars itself ([`read_parquet`]), with no copy.

use std::io::Cursor;

use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::ipc::reader::StreamReader;
use deltalake::arrow::ipc::writer::StreamWriter;
use deltalake::arrow::record_batch::RecordBatch;
use polars::prelude::{
    DataFrame, IpcStreamReader, IpcStreamWriter, PolarsError, SerReader, SerWriter,
};

/// Why a hand-over failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// On the arrow-rs side.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// On the Polars side.
    #[error("polars: {0}")]
    Polars(#[from] PolarsError),
    /// The result does not have the columns the table needs.
    #[error("{0}")]
    Schema(String),
}

/// Record batches (one schema) -> one Polars data frame. No batches: an empty frame with
/// `schema`'s columns.
pub fn to_polars(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<DataFrame, FrameError> {
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, schema)?;
        // one message: Polars reads thousands of small scan batches many times slower
        // than one large one (10M tape rows: 10.6 s against 1 s here)
        let t = std::time::Instant::now();
        if batches.len() > 1 {
            let one = deltalake::arrow::compute::concat_batches(schema, batches)?;
            tracing::debug!(concat_s = t.elapsed().as_secs_f64(), "concat");
            w.write(&one)?;
        } else {
            for b in batches {
                w.write(b)?;
            }
        }
        w.finish()?;
        tracing::debug!(
            write_s = t.elapsed().as_secs_f64(),
            bytes = buf.len(),
            "ipc write"
        );
    }
    let t = std::time::Instant::now();
    let df = IpcStreamReader::new(Cursor::new(buf)).finish()?;
    tracing::debug!(
        read_s = t.elapsed().as_secs_f64(),
        rows = df.height(),
        "ipc read"
    );
    Ok(df)
}

/// The rows of local Parquet `files` (a table snapshot's data files) as one frame with
/// `schema`'s columns (the table's Arrow schema, partition columns left out): a column a file
/// lacks is null there, and list-of-text columns are joined into one text by `,`, as the
/// record-batch path does. Polars reads the files in parallel, straight into its own memory.
pub fn read_parquet(
    files: &[std::path::PathBuf],
    schema: &SchemaRef,
) -> Result<DataFrame, FrameError> {
    Ok(scan_parquet(files, schema)?.collect()?)
}

/// [`read_parquet`] as a plan: the columns and rows a query over it does not use are not read
/// (Polars pushes projections and filters into the scan).
pub fn scan_parquet(
    files: &[std::path::PathBuf],
    schema: &SchemaRef,
) -> Result<polars::prelude::LazyFrame, FrameError> {
    use polars::prelude::{IntoLazy, LazyFrame, PlRefPath, ScanArgsParquet, col, lit};
    // the Polars types of `schema`, exactly as the IPC hand-over maps them
    let empty = to_polars(schema, &[])?;
    let mut lf = if files.is_empty() {
        // no file (a date without events): no rows, in the same columns and types
        empty.lazy()
    } else {
        let paths = files
            .iter()
            .map(|f| PlRefPath::new(f.to_string_lossy().as_ref()))
            .collect();
        let args = ScanArgsParquet {
            schema: Some(empty.schema().clone()),
            allow_missing_columns: true,
            rechunk: false,
            ..Default::default()
        };
        LazyFrame::scan_parquet_files(paths, args)?
    };
    let lists: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.data_type(),
                deltalake::arrow::datatypes::DataType::List(_)
            )
        })
        .map(|f| col(f.name().as_str()).list().join(lit(","), true))
        .collect();
    if !lists.is_empty() {
        lf = lf.with_columns(lists);
    }
    Ok(lf)
}

/// A Polars data frame -> record batches in exactly `schema` (column order and types: Polars
/// hands strings back as `LargeUtf8`, and integers may widen; both are cast back). A column
/// `schema` names that the frame lacks is an error.
pub fn from_polars(df: &mut DataFrame, schema: &SchemaRef) -> Result<Vec<RecordBatch>, FrameError> {
    let mut buf = Vec::new();
    IpcStreamWriter::new(&mut buf).finish(df)?;
    let reader = StreamReader::try_new(Cursor::new(buf), None)?;
    let mut out = Vec::new();
    for b in reader {
        let b = b?;
        let mut cols = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let col = b.column_by_name(f.name()).ok_or_else(|| {
                FrameError::Schema(format!("the job's result has no column `{}`", f.name()))
            })?;
            let col = if col.data_type() == f.data_type() {
                col.clone()
            } else {
                cast(col, f.data_type())?
            };
            cols.push(col);
        }
        out.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use deltalake::arrow::array::{
        Array, AsArray, Decimal128Array, StringArray, TimestampMicrosecondArray,
    };
    use deltalake::arrow::datatypes::{DataType, Decimal128Type, Field, Schema, TimeUnit};
    use polars::prelude::{IntoLazy, col};

    #[test]
    fn decimals_timestamps_and_strings_survive_both_ways_exactly() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(38, 8), false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["A", "A", "B"])),
                Arc::new(
                    Decimal128Array::from(vec![10_000_000i128, 20_000_000, 1])
                        .with_precision_and_scale(38, 8)
                        .unwrap(),
                ),
                Arc::new(TimestampMicrosecondArray::from(vec![1, 2, 3]).with_timezone("UTC")),
            ],
        )
        .unwrap();
        let df = to_polars(&schema, &[b]).unwrap();
        // 0.1 + 0.2 is exactly 0.3 in decimals
        let mut sums = df
            .lazy()
            .group_by([col("symbol")])
            .agg([col("price").sum(), col("ts").max()])
            .sort(["symbol"], Default::default())
            .collect()
            .unwrap();
        let back = from_polars(&mut sums, &schema).unwrap();
        assert_eq!(back[0].schema(), schema);
        let prices = back[0].column(1).as_primitive::<Decimal128Type>();
        assert_eq!(prices.values().to_vec(), vec![30_000_000, 1]);
        assert_eq!(back[0].column(0).as_string::<i32>().value(1), "B");
        assert!(back[0].column(2).is_valid(0));
        let empty = to_polars(&schema, &[]).unwrap();
        assert_eq!(empty.height(), 0);
        let missing: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("nope", DataType::Utf8, true)]));
        assert!(from_polars(&mut sums, &missing).is_err());
    }

    #[test]
    fn parquet_files_read_with_lists_joined_and_missing_columns_null() {
        use deltalake::arrow::array::{ListBuilder, StringBuilder};
        use deltalake::parquet::arrow::ArrowWriter;
        let dir = tempfile::tempdir().unwrap();
        let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(38, 8), false),
            Field::new("conditions", list.clone(), true),
            Field::new("venue", DataType::Utf8, true),
        ]));
        let mut conditions = ListBuilder::new(StringBuilder::new());
        conditions.values().append_value("A");
        conditions.values().append_value("B");
        conditions.append(true);
        conditions.append(true); // empty
        conditions.append(false); // null
        let full = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["X", "Y", "Z"])),
                Arc::new(
                    Decimal128Array::from(vec![1i128, 2, 3])
                        .with_precision_and_scale(38, 8)
                        .unwrap(),
                ),
                Arc::new(conditions.finish()),
                Arc::new(StringArray::from(vec![Some("XNAS"), None, Some("XLON")])),
            ],
        )
        .unwrap();
        // an older file, written before `venue` existed
        let old_schema: SchemaRef = Arc::new(schema.project(&[0, 1, 2]).unwrap());
        let old = full.project(&[0, 1, 2]).unwrap().slice(0, 1);
        let write = |name: &str, b: &RecordBatch, s: &SchemaRef| {
            let path = dir.path().join(name);
            let mut w =
                ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), s.clone(), None)
                    .unwrap();
            w.write(b).unwrap();
            w.close().unwrap();
            path
        };
        let files = [
            write("a.parquet", &full, &schema),
            write("b.parquet", &old, &old_schema),
        ];
        let df = read_parquet(&files, &schema).unwrap();
        assert_eq!(df.height(), 4);
        let text = |c: &str| -> Vec<Option<String>> {
            df.column(c)
                .unwrap()
                .str()
                .unwrap()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect()
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(text("conditions"), [s("A,B"), s(""), None, s("A,B")]);
        assert_eq!(text("venue"), [s("XNAS"), None, s("XLON"), None]);
        assert_eq!(text("symbol"), [s("X"), s("Y"), s("Z"), s("X")]);
        // decimals come through exactly, with the table's scale
        let back = from_polars(
            &mut df.select(["price"]).unwrap(),
            &Arc::new(schema.project(&[1]).unwrap()),
        )
        .unwrap();
        let prices = back[0].column(0).as_primitive::<Decimal128Type>();
        assert_eq!(prices.values().to_vec(), vec![1, 2, 3, 1]);
        let none = read_parquet(&[], &schema).unwrap();
        assert_eq!(none.height(), 0);
        assert_eq!(
            none.schema(),
            df.schema(),
            "no file: the same columns and types"
        );
    }
}
