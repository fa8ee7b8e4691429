//! The hand-over between the lake and Polars. In: local Parquet files of a table snapshot are
//! read by Polars itself ([`read_parquet`], [`scan_parquet`]); record batches scanned through
//! delta-rs (an object store, reference data) come over as an Arrow IPC stream in memory
//! ([`to_polars`]; no `unsafe`, which the workspace forbids, so the copy is the price). Out:
//! Polars writes a job's result as the Parquet file the lake commits ([`to_parquet`]).

use std::io::Cursor;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::ipc::writer::StreamWriter;
use deltalake::arrow::record_batch::RecordBatch;
use polars::prelude::{DataFrame, IpcStreamReader, PolarsError, SerReader};

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

/// A job's frame as one Parquet file of `schema`'s columns except `partition` (a Delta
/// partition column lives in the file's path), each in the Polars type `schema` maps to (as
/// [`to_polars`]), written by Polars on every core with zstd pages (level [`ZSTD_LEVEL`]) and
/// column statistics.
/// The bytes depend only on the rows and their order: the frame is put in one chunk and cut
/// into row groups of a fixed row count. A column `schema` names that the frame lacks is an
/// error.
pub fn to_parquet(
    df: DataFrame,
    schema: &SchemaRef,
    partition: &str,
) -> Result<Vec<u8>, FrameError> {
    use polars::prelude::{IntoLazy, ParquetCompression, ParquetWriter, col};
    use polars_parquet::write::ZstdLevel;
    let target = to_polars(schema, &[])?;
    let mut select = Vec::with_capacity(target.width());
    for c in target.columns() {
        if c.name().as_str() == partition {
            continue;
        }
        let Some(have) = df.schema().get(c.name()) else {
            return Err(FrameError::Schema(format!(
                "the job's result has no column `{}`",
                c.name()
            )));
        };
        let e = col(c.name().clone());
        select.push(if have == c.dtype() {
            e
        } else {
            e.strict_cast(c.dtype().clone())
        });
    }
    let mut out = df.lazy().select(select).collect()?;
    out.rechunk_mut_par();
    // room for the whole file up front: growing the buffer by doubling copied it and touched
    // fresh memory each time (a file is a fraction of the frame; room never written to is
    // never backed by memory)
    let mut buf = Vec::with_capacity(out.estimated_size());
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Zstd(Some(ZstdLevel::try_new(
            ZSTD_LEVEL,
        )?)))
        .with_row_group_size(Some(ROW_GROUP_ROWS))
        .finish(&mut out)?;
    Ok(buf)
}

/// The zstd level of the files [`to_parquet`] writes. Level 1 against Snappy on the 10M-row L2
/// market trades: half the bytes (123 MB against 240 MB), the same run time, and Polars and
/// pyarrow read the file back as fast or faster.
pub const ZSTD_LEVEL: i32 = 1;

/// Rows per row group of the files [`to_parquet`] writes (about 10-40 MB of a job's output).
const ROW_GROUP_ROWS: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use deltalake::arrow::array::{
        Array, AsArray, Decimal128Array, StringArray, TimestampMicrosecondArray,
    };
    use deltalake::arrow::compute::cast;
    use deltalake::arrow::datatypes::{DataType, Decimal128Type, Field, Schema, TimeUnit};
    use polars::prelude::{IntoLazy, col};

    #[test]
    fn decimals_timestamps_and_strings_survive_both_ways_exactly() {
        use deltalake::arrow::array::Int64Array;
        use deltalake::arrow::datatypes::Int64Type;
        use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use polars::prelude::len;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("business_date", DataType::Date32, false),
            Field::new("symbol", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(38, 8), false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("n", DataType::Int64, false),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(deltalake::arrow::array::Date32Array::from(vec![7, 7, 7])),
                Arc::new(StringArray::from(vec!["A", "A", "B"])),
                Arc::new(
                    Decimal128Array::from(vec![10_000_000i128, 20_000_000, 1])
                        .with_precision_and_scale(38, 8)
                        .unwrap(),
                ),
                Arc::new(TimestampMicrosecondArray::from(vec![1, 2, 3]).with_timezone("UTC")),
                Arc::new(Int64Array::from(vec![0, 0, 0])),
            ],
        )
        .unwrap();
        let df = to_polars(&schema, &[b]).unwrap();
        // 0.1 + 0.2 is exactly 0.3 in decimals; Polars counts in its own integer type
        let sums = df
            .lazy()
            .group_by([col("business_date"), col("symbol")])
            .agg([col("price").sum(), col("ts").max(), len().alias("n")])
            .sort(["symbol"], Default::default())
            .collect()
            .unwrap();
        let bytes = to_parquet(sums.clone(), &schema, "business_date").unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        // every column chunk is zstd at the documented level (arrow-rs reads the level back
        // as its default, so only the codec is compared)
        for rg in reader.metadata().row_groups() {
            for c in rg.columns() {
                assert!(
                    matches!(
                        c.compression(),
                        deltalake::parquet::basic::Compression::ZSTD(_)
                    ),
                    "{}: {:?}",
                    c.column_path(),
                    c.compression()
                );
            }
        }
        let back: Vec<RecordBatch> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
        // the partition column is left out, every other column keeps the table's type
        let names: Vec<String> = back[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["symbol", "price", "ts", "n"]);
        let prices = back[0].column(1).as_primitive::<Decimal128Type>();
        assert_eq!(prices.data_type(), &DataType::Decimal128(38, 8));
        assert_eq!(prices.values().to_vec(), vec![30_000_000, 1]);
        let text = cast(back[0].column(0), &DataType::Utf8).unwrap();
        assert_eq!(text.as_string::<i32>().value(1), "B");
        let ts = cast(back[0].column(2), schema.field(3).data_type()).unwrap();
        assert_eq!(
            ts.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>()
                .values()
                .to_vec(),
            vec![2, 3]
        );
        assert_eq!(
            back[0]
                .column(3)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec(),
            vec![2, 1]
        );
        // the same rows give the same bytes
        assert_eq!(
            to_parquet(sums.clone(), &schema, "business_date").unwrap(),
            to_parquet(sums.clone(), &schema, "business_date").unwrap()
        );
        let empty = to_polars(&schema, &[]).unwrap();
        assert_eq!(empty.height(), 0);
        let missing: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("nope", DataType::Utf8, true)]));
        assert!(to_parquet(sums, &missing, "business_date").is_err());
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
        let price = df.column("price").unwrap();
        assert_eq!(price.dtype(), &polars::prelude::DataType::Decimal(38, 8));
        let prices = price.decimal().unwrap();
        let raw: Vec<Option<i128>> = prices.physical().iter().collect();
        assert_eq!(raw, [Some(1), Some(2), Some(3), Some(1)]);
        let none = read_parquet(&[], &schema).unwrap();
        assert_eq!(none.height(), 0);
        assert_eq!(
            none.schema(),
            df.schema(),
            "no file: the same columns and types"
        );
    }
}
