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
use polars::prelude::{DataFrame, IpcStreamReader, PolarsError, PolarsResult, SerReader};

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
/// [`to_polars`]), as [`to_parquet_by_column`] writes it. The columns are encoded on every
/// core, each freed once encoded. A column `schema` names that the frame lacks is an error.
pub fn to_parquet(
    mut df: DataFrame,
    schema: &SchemaRef,
    partition: &str,
) -> Result<Vec<u8>, FrameError> {
    use rayon::prelude::*;
    let file = FileLayout::new(df.height(), schema, partition)?;
    let mut columns = Vec::with_capacity(file.schema.len());
    for name in file.schema.iter_names() {
        columns.push(
            df.drop_in_place(name).map_err(|_| {
                FrameError::Schema(format!("the job's result has no column `{name}`"))
            })?,
        );
    }
    drop(df);
    let encoded = columns
        .into_par_iter()
        .enumerate()
        .map(|(i, c)| file.encode(i, c))
        .collect::<Result<Vec<_>, _>>()?;
    file.write(encoded)
}

/// One Parquet file of `rows` rows in `schema`'s columns except `partition`, each column
/// asked of `column` once, in the schema's order, and encoded (its row groups on every core)
/// before the next is asked for: only one column of the output is in memory at a time,
/// beside the compressed pages.
///
/// The file is what Polars' own writer makes of the whole frame (zstd pages of level
/// [`ZSTD_LEVEL`], column statistics, row groups of [`ROW_GROUP_ROWS`] rows cut as Polars
/// cuts a one-chunk frame), except where that is slow, large or wrong: short repeated text,
/// wide 64-bit integers and repeated decimals are keyed by dictionaries built here
/// ([`text_dictionary`], [`integer_dictionary`], [`decimal_dictionary`]), 64-bit integers
/// in order (times, offsets) are written as their differences ([`Chosen::Deltas`]), a
/// dictionary-encoded chunk's pages each get their own null count ([`with_null_count`]) and
/// decimals below 0 go in one page per chunk. The bytes depend only on the rows and their
/// order, whatever the thread count.
pub fn to_parquet_by_column(
    rows: usize,
    schema: &SchemaRef,
    partition: &str,
    mut column: impl FnMut(&str) -> PolarsResult<polars::prelude::Column>,
) -> Result<Vec<u8>, FrameError> {
    let file = FileLayout::new(rows, schema, partition)?;
    let mut encoded = Vec::with_capacity(file.schema.len());
    for (i, name) in file.schema.iter_names().enumerate() {
        encoded.push(file.encode(i, column(name.as_str())?)?);
    }
    file.write(encoded)
}

/// The compressed pages of one column: per row group, per leaf column (one for a flat type).
type ColumnPages = Vec<Vec<Vec<polars_parquet::write::CompressedPage>>>;

/// What a file [`to_parquet`] writes is made of: its columns and types, their Parquet types
/// and encodings, the write options and the row groups.
struct FileLayout {
    schema: polars::prelude::SchemaRef,
    types: Vec<polars_parquet::write::ParquetType>,
    encodings: Vec<Vec<polars_parquet::write::Encoding>>,
    options: polars_parquet::write::WriteOptions,
    /// (offset, rows) of each row group.
    groups: Vec<(usize, usize)>,
}

impl FileLayout {
    fn new(rows: usize, schema: &SchemaRef, partition: &str) -> Result<Self, FrameError> {
        use polars::io::parquet::write::get_encodings;
        use polars::prelude::{CompatLevel, SchemaExt};
        use polars_parquet::write::{
            CompressionOptions, StatisticsOptions, Version, WriteOptions, to_parquet_schema,
        };
        let target = to_polars(schema, &[])?;
        let mut schema = target.schema().as_ref().clone();
        schema.shift_remove(partition);
        let arrow = schema.to_arrow(CompatLevel::newest());
        Ok(FileLayout {
            types: to_parquet_schema(&arrow)?.fields().to_vec(),
            encodings: get_encodings(&arrow).iter().cloned().collect(),
            // as Polars' `ParquetWriter` with these settings
            options: WriteOptions {
                statistics: StatisticsOptions::default(),
                version: Version::V1,
                compression: CompressionOptions::Zstd(Some(zstd_level()?)),
                data_page_size: None,
            },
            groups: row_groups(rows),
            schema: std::sync::Arc::new(schema),
        })
    }

    /// The pages of the file's column `i`, its row groups encoded on every core.
    fn encode(&self, i: usize, mut c: polars::prelude::Column) -> Result<ColumnPages, FrameError> {
        use polars::prelude::CompatLevel;
        use polars_parquet::write::{Encoding, Page, WriteOptions, array_to_columns};
        use rayon::prelude::*;
        let (name, dtype) = self
            .schema
            .get_at_index(i)
            .ok_or_else(|| FrameError::Schema(format!("the file has no column {i}")))?;
        let rows = self.groups.last().map_or(0, |(offset, len)| offset + len);
        if c.len() != rows {
            return Err(FrameError::Schema(format!(
                "column `{name}` has {} rows, the file {rows}",
                c.len()
            )));
        }
        if c.dtype() != dtype {
            c = c.strict_cast(dtype)?;
        }
        let array = c
            .as_materialized_series()
            .rechunk()
            .to_arrow(0, CompatLevel::newest());
        drop(c);
        let options = self.options;
        // a column of one value a row (not a list): a page of it holds as many values as rows
        let flat = matches!(
            self.types[i],
            polars_parquet::write::ParquetType::PrimitiveType(_)
        );
        Ok(self
            .groups
            .par_iter()
            .map(|&(offset, len)| {
                let slice = array.sliced(offset, len);
                let validity = slice.validity().cloned();
                let asked = &self.encodings[i];
                let chosen = choose(slice.as_ref(), asked, &self.types[i]);
                let (slice, encodings, options) = match chosen {
                    Some(Chosen::Dictionary(keyed)) => {
                        (keyed, &[Encoding::RleDictionary][..], options)
                    }
                    Some(Chosen::Plain) => (slice, &[Encoding::Plain][..], options),
                    Some(Chosen::Deltas) => (slice, &[Encoding::DeltaBinaryPacked][..], options),
                    Some(Chosen::PlainOnePage) => {
                        let whole = WriteOptions {
                            data_page_size: Some(usize::MAX),
                            ..options
                        };
                        (slice, &[Encoding::Plain][..], whole)
                    }
                    None => (slice, &asked[..], options),
                };
                array_to_columns(slice, self.types[i].clone(), options, encodings)?
                    .into_iter()
                    .map(|leaf| {
                        let mut rows_before = 0;
                        leaf.map(|page| {
                            let page = match page? {
                                Page::Data(mut data)
                                    if flat && data.encoding() == Encoding::RleDictionary =>
                                {
                                    let rows = data.num_values();
                                    let nulls = validity.as_ref().map_or(0, |v| {
                                        v.clone().sliced(rows_before, rows).unset_bits()
                                    });
                                    rows_before += rows;
                                    Page::Data(with_null_count(&mut data, nulls))
                                }
                                page => page,
                            };
                            compress_page(page, options.compression)
                        })
                        .collect::<PolarsResult<Vec<_>>>()
                    })
                    .collect::<PolarsResult<Vec<_>>>()
            })
            .collect::<PolarsResult<Vec<_>>>()?)
    }

    /// The file of the columns' pages (in the file's column order), written by Polars.
    fn write(&self, columns: Vec<ColumnPages>) -> Result<Vec<u8>, FrameError> {
        use polars::io::parquet::write::ParquetWriter;
        use polars::prelude::ParquetCompression;
        let mut groups: Vec<Vec<Vec<polars_parquet::write::CompressedPage>>> =
            self.groups.iter().map(|_| Vec::new()).collect();
        let mut bytes = 0;
        for column in columns {
            for (group, leaves) in groups.iter_mut().zip(column) {
                bytes += leaves.iter().flatten().map(page_bytes).sum::<usize>();
                group.extend(leaves);
            }
        }
        // room for the whole file up front (growing the buffer by doubling copies it and
        // touches fresh memory each time); the footer is a small part of it
        let mut buf = Vec::with_capacity(bytes + bytes / 64 + (1 << 16));
        let mut writer = ParquetWriter::new(&mut buf)
            .with_compression(ParquetCompression::Zstd(Some(zstd_level()?)))
            .with_row_group_size(Some(ROW_GROUP_ROWS))
            .batched(&self.schema)?;
        for ((_, len), group) in self.groups.iter().zip(groups) {
            writer.write_row_group(*len as u64, &group)?;
        }
        writer.finish()?;
        drop(writer);
        Ok(buf)
    }
}

/// How [`choose`] has a column's row group written.
enum Chosen {
    /// Keys into its distinct values, in the order they first occur (Polars' dictionary).
    Dictionary(Box<dyn polars_arrow::array::Array>),
    /// Its values one after the other: most of them are distinct.
    Plain,
    /// The differences of its values, bit-packed (Parquet's `DELTA_BINARY_PACKED`): times and
    /// offsets in rank order.
    Deltas,
    /// Its values one after the other in a single data page: decimals with some below 0,
    /// whose statistics Polars' file writer would get wrong over several pages (it merges
    /// the pages' minimums and maximums by their bytes, and -1 is 0xff..ff).
    PlainOnePage,
}

/// The rows [`text_dictionary`] and [`decimal_dictionary`] look at first: when more than 3/4
/// of them are distinct, the column is taken for ids (or prices of every size) and written
/// plain without building a dictionary of it.
const DICTIONARY_SAMPLE: usize = 1 << 16;

/// Whether `distinct` values among `rows` are too many for a dictionary (Polars' rule: more
/// than 3/4 of them).
fn mostly_distinct(distinct: usize, rows: usize) -> bool {
    distinct > rows * 3 / 4
}

/// The keys of `len` values (valid where `validity` says, all without it) into their
/// distinct values, numbered in the order they first occur as `key` tells them apart;
/// `first` is called with the row of each distinct value's first occurrence, in that order.
/// A null's key is 0 (the validity masks it). `None` when most values are distinct
/// ([`mostly_distinct`]): among the first [`DICTIONARY_SAMPLE`] rows, before any keys are
/// made, or among all of them.
fn first_occurrence_keys<K: std::hash::Hash + Eq>(
    len: usize,
    validity: Option<&polars_arrow::bitmap::Bitmap>,
    key: impl Fn(usize) -> K,
    mut first: impl FnMut(usize),
) -> Option<Vec<u32>> {
    let valid = |i: usize| validity.is_none_or(|v| v.get_bit(i));
    let sample = len.min(DICTIONARY_SAMPLE);
    let mut seen: polars::prelude::PlHashSet<K> = Default::default();
    for i in (0..sample).filter(|&i| valid(i)) {
        seen.insert(key(i));
    }
    if mostly_distinct(seen.len(), sample) {
        return None;
    }
    drop(seen);
    let mut keys_of: polars::prelude::PlHashMap<K, u32> = Default::default();
    let mut keys = Vec::with_capacity(len);
    for i in 0..len {
        if !valid(i) {
            keys.push(0);
            continue;
        }
        let next = keys_of.len() as u32;
        keys.push(*keys_of.entry(key(i)).or_insert_with(|| {
            first(i);
            next
        }));
    }
    (!mostly_distinct(keys_of.len(), len)).then_some(keys)
}

/// How a row group of a column asked for as a dictionary (`asked`: Polars' choice for its
/// type) is written, where [`text_dictionary`], [`integer_dictionary`] or
/// [`decimal_dictionary`] knows; `None` for another encoding or a column none of them
/// takes: then Polars decides.
fn choose(
    array: &dyn polars_arrow::array::Array,
    asked: &[polars_parquet::write::Encoding],
    parquet: &polars_parquet::write::ParquetType,
) -> Option<Chosen> {
    if asked != [polars_parquet::write::Encoding::RleDictionary] {
        return None;
    }
    text_dictionary(array)
        .or_else(|| integer_dictionary(array))
        .or_else(|| decimal_dictionary(array, parquet))
}

/// The dictionary of `keys` ([`first_occurrence_keys`]) into `values`, null where
/// `validity` says.
fn keyed(
    keys: Vec<u32>,
    validity: Option<&polars_arrow::bitmap::Bitmap>,
    values: Box<dyn polars_arrow::array::Array>,
) -> Option<Chosen> {
    use polars_arrow::array::{DictionaryArray, PrimitiveArray};
    use polars_arrow::datatypes::{ArrowDataType, IntegerType};
    let keys = PrimitiveArray::new(ArrowDataType::UInt32, keys.into(), validity.cloned());
    let dtype =
        ArrowDataType::Dictionary(IntegerType::UInt32, Box::new(values.dtype().clone()), false);
    DictionaryArray::try_new(dtype, keys, values)
        .ok()
        .map(|d| Chosen::Dictionary(d.boxed()))
}

/// What Polars' writer would do with a row group of a text column asked for as a dictionary
/// (`encodings`), done faster when every value is at most 12 bytes long (each held whole in
/// its 16-byte view, so two views are equal exactly when their texts are): the distinct
/// values are found by their views. Polars hashes and compares the texts themselves, after a
/// cardinality estimate over every value; the two were about a tenth of an end of day's CPU
/// time, for its symbols, venues, accounts and the like.
///
/// The dictionary is the one Polars builds (values in the order they first occur, nulls kept
/// as null keys), so its pages are Polars' bytes. The choice between a dictionary and plain
/// values is made like Polars' (plain when more than 3/4 of the values are distinct), but
/// counted exactly, and first on the first [`DICTIONARY_SAMPLE`] rows: a column of ids is
/// known by them without a table of all its values. `None` when the fast way does not
/// apply (another type, or a longer value): then Polars decides.
fn text_dictionary(array: &dyn polars_arrow::array::Array) -> Option<Chosen> {
    use polars_arrow::array::{Array, MutableBinaryViewArray, Utf8ViewArray};
    let text = array.as_any().downcast_ref::<Utf8ViewArray>()?;
    let views = text.views();
    if text.len() <= 128 || views.iter().any(|v| !v.is_inline()) {
        return None;
    }
    let validity = text.validity();
    let mut values = MutableBinaryViewArray::<str>::new();
    let Some(keys) = first_occurrence_keys(
        text.len(),
        validity,
        |i| views[i].as_u128(),
        |i| values.push_value(text.value(i)),
    ) else {
        return Some(Chosen::Plain);
    };
    let values: Utf8ViewArray = values.into();
    keyed(keys, validity, values.boxed())
}

/// What Polars' writer would do with a row group of a 64-bit integer column (integers,
/// times) asked for as a dictionary, done with less work when its values span more than
/// 65,536 (below that, Polars' own quick way applies: a bitmap of the values seen). Polars
/// then estimates the cardinality over every value and, unless most are distinct, builds
/// its dictionary through a generic hash table of values: Kafka offsets and the like. Here
/// the values are keyed by a plain table of `i64`, in the order they first occur, as Polars
/// keys them (the same bytes), and columns of distinct values (event times) are known as
/// such from the first [`DICTIONARY_SAMPLE`] rows. Values whose differences are small (times
/// and offsets in rank order: [`DELTA_MAX_BITS`]) are written as differences instead
/// ([`Chosen::Deltas`]): smaller than either, without a table, and little left for zstd.
/// `None` for any other column: then Polars decides.
fn integer_dictionary(array: &dyn polars_arrow::array::Array) -> Option<Chosen> {
    use polars_arrow::array::PrimitiveArray;
    let integers = array.as_any().downcast_ref::<PrimitiveArray<i64>>()?;
    let validity = integers.validity();
    let valid = |i: usize| validity.is_none_or(|v| v.get_bit(i));
    let values = integers.values();
    let mut range: Option<(i64, i64)> = None;
    for (i, &v) in values.iter().enumerate() {
        if valid(i) {
            range = Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
        }
    }
    let (lo, hi) = range?;
    // Polars' bitmap of the values seen covers a span of up to u16::MAX
    if integers.len() <= 128 || hi.checked_sub(lo).is_none_or(|span| span <= 65_535) {
        return None;
    }
    if delta_bits(integers.iter().flatten().copied()) <= DELTA_MAX_BITS * integers.len() {
        return Some(Chosen::Deltas);
    }
    let mut distinct = Vec::new();
    let Some(keys) = first_occurrence_keys(
        values.len(),
        validity,
        |i| values[i],
        |i| distinct.push(values[i]),
    ) else {
        return Some(Chosen::Plain);
    };
    let distinct = PrimitiveArray::new(integers.dtype().clone(), distinct.into(), None);
    keyed(keys, validity, distinct.boxed())
}

/// The bits a row of [`Chosen::Deltas`] may take on average at most: a quarter of its plain
/// 64. In the benchmark's L2 market trades the event times take 0 (evenly spaced) and the
/// offsets of four interleaved partitions 12; plain, zstd made 30 of the times and a
/// dictionary 19 of the offsets, with most of zstd's work and a hash of every value.
const DELTA_MAX_BITS: usize = 16;

/// The bits `values` take in `DELTA_BINARY_PACKED` as Polars writes it: blocks of 256
/// differences, each block at the width of its largest difference less its smallest.
fn delta_bits(mut values: impl Iterator<Item = i64>) -> usize {
    const BLOCK: usize = 256;
    let Some(mut previous) = values.next() else {
        return 0;
    };
    // the first value is written whole
    let mut bits = 64;
    let (mut lo, mut hi, mut n) = (i64::MAX, i64::MIN, 0);
    for v in values {
        let delta = v.wrapping_sub(previous);
        previous = v;
        (lo, hi, n) = (lo.min(delta), hi.max(delta), n + 1);
        if n == BLOCK {
            bits += BLOCK * (64 - hi.abs_diff(lo).leading_zeros() as usize);
            (lo, hi, n) = (i64::MAX, i64::MIN, 0);
        }
    }
    if n > 0 {
        bits += BLOCK * (64 - hi.abs_diff(lo).leading_zeros() as usize);
    }
    bits
}

/// A row group of a decimal column of more than 18 digits (`Decimal(38, 8)`: money, prices,
/// quantities; 16-byte values), keyed by its distinct values when fewer than 3/4 of them are
/// distinct, as Polars does for integers and text. Polars writes such decimals plain whatever
/// they hold: it estimates their cardinality for a dictionary, then finds it cannot build
/// one of decimals. Plain, a tape's 10M prices and volumes are 320 MB for zstd to compress;
/// keyed, a few bits per row and each distinct value once.
///
/// The dictionary's values are the column's 16-byte big-endian two's complement, as plain
/// pages hold them. Parquet readers compare a decimal column's statistics as signed numbers,
/// while Polars takes a dictionary's minimum and maximum by their bytes, and merges pages'
/// by their bytes too: the two orders agree on values of 0 and more only, so a row group
/// with a negative value is written plain in one data page, whose statistics Polars takes
/// signed (row groups of 128 rows or fewer are written plain). `None` for any other type or
/// encoding: then Polars decides.
fn decimal_dictionary(
    array: &dyn polars_arrow::array::Array,
    parquet: &polars_parquet::write::ParquetType,
) -> Option<Chosen> {
    use polars_arrow::array::{FixedSizeBinaryArray, PrimitiveArray};
    use polars_arrow::datatypes::ArrowDataType;
    use polars_parquet::parquet::schema::types::PhysicalType;
    let ArrowDataType::Decimal(precision, _) = array.dtype() else {
        return None;
    };
    let polars_parquet::write::ParquetType::PrimitiveType(primitive) = parquet else {
        return None;
    };
    let PhysicalType::FixedLenByteArray(size) = primitive.physical_type else {
        return None;
    };
    if *precision <= 18 || size > 16 {
        return None;
    }
    let decimals = array.as_any().downcast_ref::<PrimitiveArray<i128>>()?;
    let values = decimals.values();
    let validity = decimals.validity();
    let valid = |i: usize| validity.is_none_or(|v| v.get_bit(i));
    if (0..values.len()).any(|i| valid(i) && values[i] < 0) {
        return Some(Chosen::PlainOnePage);
    }
    if decimals.len() <= 128 {
        return Some(Chosen::Plain);
    }
    let mut bytes = Vec::new();
    let Some(keys) = first_occurrence_keys(
        values.len(),
        validity,
        |i| values[i],
        |i| bytes.extend_from_slice(&values[i].to_be_bytes()[16 - size..]),
    ) else {
        return Some(Chosen::Plain);
    };
    let distinct =
        FixedSizeBinaryArray::new(ArrowDataType::FixedSizeBinary(size), bytes.into(), None);
    keyed(keys, validity, distinct.boxed())
}

/// A data page of a dictionary-encoded column chunk of one value a row, with its own
/// null count (`nulls`). Polars' writer gives every such page the statistics of the whole
/// chunk (its keys' null count, its dictionary's minimum and maximum), and its file writer
/// then adds the pages' null counts up into the chunk's: a chunk of 1M keyed rows is several
/// pages, and its null count came out several times too large (more than its rows when a
/// sixth of them are null, which readers take for a chunk of nulls only, skipped by any
/// filter on the column). The minimum and maximum stay the chunk's: they hold for each page.
fn with_null_count(
    page: &mut polars_parquet::parquet::page::DataPage,
    nulls: usize,
) -> polars_parquet::parquet::page::DataPage {
    use polars_parquet::parquet::CowBuffer;
    use polars_parquet::parquet::page::{DataPage, DataPageHeader};
    let mut header = page.header().clone();
    let statistics = match &mut header {
        DataPageHeader::V1(h) => h.statistics.as_mut(),
        DataPageHeader::V2(h) => h.statistics.as_mut(),
    };
    if let Some(statistics) = statistics {
        statistics.null_count = Some(nulls as i64);
    }
    let buffer = CowBuffer::Owned(std::mem::take(page.buffer_mut()));
    let mut counted = DataPage::new(header, buffer, page.descriptor.clone(), 0);
    counted.num_rows = page.num_rows();
    counted
}

thread_local! {
    /// The buffer each thread compresses its pages into ([`compress_page`]).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `page` compressed as Polars compresses it, kept in a buffer of its compressed size.
/// Polars compresses each page into a new buffer zeroed to zstd's bound (a little more than
/// the page's uncompressed size) and keeps it whole, so until a file was written every page
/// held about its uncompressed size of freshly touched memory (some 600 MB for the L2 market
/// trades' 123 MB of pages). Here a data page is compressed into the thread's scratch buffer,
/// reused page after page, and copied out at its size; the bytes are the same.
fn compress_page(
    page: polars_parquet::write::Page,
    compression: polars_parquet::write::CompressionOptions,
) -> PolarsResult<polars_parquet::write::CompressedPage> {
    use polars_parquet::parquet::CowBuffer;
    use polars_parquet::write::{CompressedPage, compress};
    if matches!(page, polars_parquet::write::Page::Dict(_)) {
        // one per column chunk, of the distinct values: small
        return Ok(compress(page, Vec::new(), compression)?);
    }
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        let mut page = compress(page, std::mem::take(scratch), compression)?;
        if let CompressedPage::Data(data) = &mut page {
            let exact = CowBuffer::Owned(data.slice_mut().to_vec());
            if let CowBuffer::Owned(used) = std::mem::replace(data.slice_mut(), exact) {
                *scratch = used;
            }
        }
        Ok(page)
    })
}

fn zstd_level() -> Result<polars_parquet::write::ZstdLevel, FrameError> {
    Ok(polars_parquet::write::ZstdLevel::try_new(ZSTD_LEVEL)?)
}

/// The bytes of a compressed data page (its header aside). A dictionary page does not tell
/// its size: it counts as nothing (the room left for the footer covers the small ones).
fn page_bytes(page: &polars_parquet::write::CompressedPage) -> usize {
    match page {
        polars_parquet::write::CompressedPage::Data(p) => p.compressed_size(),
        polars_parquet::write::CompressedPage::Dict(_) => 0,
    }
}

/// The (offset, rows) of the row groups of a file of `rows` rows, as Polars' writer cuts a
/// one-chunk frame: `rows / ROW_GROUP_ROWS` equal groups (at least one), the last taking the
/// remainder; none when there are no rows.
fn row_groups(rows: usize) -> Vec<(usize, usize)> {
    if rows == 0 {
        return Vec::new();
    }
    let n = (rows / ROW_GROUP_ROWS).max(1);
    let size = rows / n;
    (0..n)
        .map(|i| {
            let offset = i * size;
            (offset, if i == n - 1 { rows - offset } else { size })
        })
        .collect()
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
    fn by_column_writes_the_bytes_polars_writes_of_the_whole_frame() {
        use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use polars::prelude::{
            Int128Chunked, IntoColumn, IntoSeries, NamedFrom, ParquetCompression, ParquetWriter,
            Series,
        };
        use polars_parquet::write::ZstdLevel;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("business_date", DataType::Date32, false),
            Field::new("id", DataType::Utf8, true),
            Field::new("symbol", DataType::Utf8, false),
            Field::new("desk", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(38, 8), false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("n", DataType::Int64, true),
            Field::new("offset", DataType::Int64, false),
        ]));
        // no row group, one, and two (the last with the remainder); text unique (with
        // nulls), repeated, and repeated but longer than a view holds (Polars' own
        // dictionary then); nulls in numbers. Repeated values with nulls and decimals below
        // 0 are written otherwise than Polars writes them (its statistics of them are
        // wrong): `repeated_values_are_keyed_and_each_chunk_has_its_own_statistics`
        for rows in [0, 5, 2 * ROW_GROUP_ROWS + 12_345] {
            let ids: Vec<Option<String>> = (0..rows)
                .map(|i| (i % 7 != 3).then(|| format!("T-{i:09}")))
                .collect();
            let symbols: Vec<String> = (0..rows).map(|i| format!("S{}", i % 200)).collect();
            let desks: Vec<String> = (0..rows)
                .map(|i| format!("DESK-RATES-LONDON-{}", i % 5))
                .collect();
            // mostly distinct prices: written plain, as Polars writes every decimal
            // (`decimal_dictionary` keys repeated ones)
            let prices: Int128Chunked = (0..rows).map(|i| Some(i as i128 * 37 + 5)).collect();
            let df = DataFrame::new(
                rows,
                vec![
                    Series::new("id".into(), ids).into_column(),
                    Series::new("symbol".into(), symbols).into_column(),
                    Series::new("desk".into(), desks).into_column(),
                    prices
                        .with_name("price".into())
                        .into_decimal(38, 8)
                        .unwrap()
                        .into_series()
                        .into_column(),
                    // distinct and out of order (times in order are written as their
                    // differences: `integers_in_order_are_written_as_their_differences`)
                    Series::new("ts".into(), scrambled(rows, 1_000_003)).into_column(),
                    Series::new(
                        "n".into(),
                        scrambled(rows, 13)
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (i % 5 != 0).then_some(v))
                            .collect::<Vec<_>>(),
                    )
                    .into_column(),
                    // repeated over a span wider than Polars' bitmap: keyed by
                    // `integer_dictionary`, in Polars' bytes
                    Series::new(
                        "offset".into(),
                        (0..rows as i64)
                            .map(|i| (i * 7919 % 1000) * 1_000_000 - 3)
                            .collect::<Vec<_>>(),
                    )
                    .into_column(),
                ],
            )
            .unwrap();
            // the frame in the table's types (the timestamp cast as `to_parquet` casts it)
            let target = to_polars(&schema, &[]).unwrap();
            let mut whole = df
                .clone()
                .lazy()
                .select(
                    target
                        .columns()
                        .iter()
                        .skip(1)
                        .map(|c| col(c.name().clone()).strict_cast(c.dtype().clone()))
                        .collect::<Vec<_>>(),
                )
                .collect()
                .unwrap();
            let mut polars_bytes = Vec::new();
            ParquetWriter::new(&mut polars_bytes)
                .with_compression(ParquetCompression::Zstd(Some(
                    ZstdLevel::try_new(ZSTD_LEVEL).unwrap(),
                )))
                .with_row_group_size(Some(ROW_GROUP_ROWS))
                .finish(&mut whole)
                .unwrap();
            let ours = to_parquet(df, &schema, "business_date").unwrap();
            assert!(ours == polars_bytes, "{rows} rows: the files differ");
            let groups = row_groups(rows);
            let back = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(ours)).unwrap();
            assert_eq!(back.metadata().num_row_groups(), groups.len());
            assert_eq!(
                back.metadata()
                    .row_groups()
                    .iter()
                    .map(|g| g.num_rows() as usize)
                    .collect::<Vec<_>>(),
                groups.iter().map(|g| g.1).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            row_groups(2 * ROW_GROUP_ROWS + 12_345),
            [
                (0, ROW_GROUP_ROWS + 6_172),
                (ROW_GROUP_ROWS + 6_172, ROW_GROUP_ROWS + 6_173)
            ]
        );
    }

    /// `rows` distinct multiples of `step`, out of order.
    fn scrambled(rows: usize, step: i64) -> Vec<i64> {
        (0..rows as i64)
            .map(|i| i * 7919 % rows.max(1) as i64 * step)
            .collect()
    }

    /// Times and offsets in rank order (with nulls) are written as their differences, read
    /// back as they were by Polars and arrow-rs, with each row group's minimum, maximum and
    /// null count; times out of order and a narrow span are not.
    #[test]
    fn integers_in_order_are_written_as_their_differences() {
        use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use deltalake::parquet::basic::Encoding as ParquetEncoding;
        use deltalake::parquet::file::statistics::Statistics;
        use polars::prelude::{IntoColumn, NamedFrom, ParquetReader, SerReader, Series};
        let rows = 2 * ROW_GROUP_ROWS + 12_345;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("business_date", DataType::Date32, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("offset", DataType::Int64, false),
            Field::new("shuffled", DataType::Int64, false),
            Field::new("narrow", DataType::Int64, false),
        ]));
        // about 2.3 ms apart with jitter, some missing; four partitions' offsets interleaved
        let ts: Vec<Option<i64>> = (0..rows as i64)
            .map(|i| (i % 11 != 4).then_some(1_767_623_400_000_000 + i * 2_340 + i * 31 % 97))
            .collect();
        let offsets: Vec<i64> = (0..rows as i64)
            .map(|i| 5_000_000 + i / 4 + i % 4 * 3)
            .collect();
        let df = DataFrame::new(
            rows,
            vec![
                Series::new("ts".into(), ts.clone()).into_column(),
                Series::new("offset".into(), offsets.clone()).into_column(),
                Series::new("shuffled".into(), scrambled(rows, 1_000_003)).into_column(),
                Series::new(
                    "narrow".into(),
                    (0..rows as i64).map(|i| i % 9).collect::<Vec<_>>(),
                )
                .into_column(),
            ],
        )
        .unwrap();
        let file = to_parquet(df, &schema, "business_date").unwrap();
        let back =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file.clone())).unwrap();
        let groups = back.metadata().row_groups().to_vec();
        assert_eq!(groups.len(), 2);
        let mut start = 0;
        for g in &groups {
            let encodings = |c: usize| g.column(c).encodings().collect::<Vec<_>>();
            assert!(encodings(0).contains(&ParquetEncoding::DELTA_BINARY_PACKED));
            assert!(encodings(1).contains(&ParquetEncoding::DELTA_BINARY_PACKED));
            assert!(!encodings(2).contains(&ParquetEncoding::DELTA_BINARY_PACKED));
            assert!(!encodings(3).contains(&ParquetEncoding::DELTA_BINARY_PACKED));
            let n = g.num_rows() as usize;
            let mine = ts[start..start + n].iter().flatten();
            let Some(Statistics::Int64(times)) = g.column(0).statistics() else {
                panic!("no statistics of the times");
            };
            assert_eq!(times.min_opt(), mine.clone().min());
            assert_eq!(times.max_opt(), mine.clone().max());
            assert_eq!(
                times.null_count_opt(),
                Some(ts[start..start + n].iter().filter(|t| t.is_none()).count() as u64)
            );
            let Some(Statistics::Int64(offs)) = g.column(1).statistics() else {
                panic!("no statistics of the offsets");
            };
            assert_eq!(offs.min_opt(), offsets[start..start + n].iter().min());
            assert_eq!(offs.max_opt(), offsets[start..start + n].iter().max());
            start += n;
        }
        let mut read_ts = Vec::new();
        let mut read_offsets = Vec::new();
        for batch in back.build().unwrap() {
            let batch = batch.unwrap();
            let t = cast(batch.column(0), &DataType::Int64).unwrap();
            read_ts.extend(
                t.as_primitive::<deltalake::arrow::datatypes::Int64Type>()
                    .iter(),
            );
            read_offsets.extend(
                batch
                    .column(1)
                    .as_primitive::<deltalake::arrow::datatypes::Int64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        assert_eq!(read_ts, ts);
        assert_eq!(read_offsets, offsets);
        let polars = ParquetReader::new(std::io::Cursor::new(file))
            .finish()
            .unwrap();
        let polars_ts = polars
            .column("ts")
            .unwrap()
            .cast(&polars::prelude::DataType::Int64);
        let polars_ts: Vec<Option<i64>> = polars_ts.unwrap().i64().unwrap().iter().collect();
        assert_eq!(polars_ts, ts);
        let polars_offsets: Vec<Option<i64>> = polars
            .column("offset")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(
            polars_offsets,
            offsets.into_iter().map(Some).collect::<Vec<_>>()
        );
    }

    /// The Parquet type of a nullable column of `array`'s type.
    fn parquet_type(array: &dyn polars_arrow::array::Array) -> polars_parquet::write::ParquetType {
        let field =
            polars_arrow::datatypes::Field::new("column".into(), array.dtype().clone(), true);
        polars_parquet::write::to_parquet_type(&field).unwrap()
    }

    /// The dictionary `chosen` holds (it must hold one) and its values, as `V`.
    fn dictionary_of<V: polars_arrow::array::Array + Clone>(
        chosen: Option<Chosen>,
    ) -> (polars_arrow::array::DictionaryArray<u32>, V) {
        use polars_arrow::array::DictionaryArray;
        let Some(Chosen::Dictionary(keyed)) = chosen else {
            panic!("the values are not keyed");
        };
        let keyed = keyed
            .as_any()
            .downcast_ref::<DictionaryArray<u32>>()
            .unwrap()
            .clone();
        let values = keyed.values().as_any().downcast_ref::<V>().unwrap().clone();
        (keyed, values)
    }

    #[test]
    fn short_repeated_text_is_keyed_in_first_occurrence_order_and_ids_stay_plain() {
        use polars_arrow::array::{Array as _, Utf8ViewArray};
        use polars_parquet::write::Encoding;
        let dictionary = [Encoding::RleDictionary];
        let text = |values: Vec<Option<String>>| -> Utf8ViewArray {
            polars_arrow::array::MutableBinaryViewArray::<str>::from_iter(values).into()
        };
        // repeated, with nulls: keys in the order the values first occur, nulls kept
        let venues = text(
            (0..1000)
                .map(|i| (i % 9 != 0).then(|| ["XLON", "XPAR", "XETR"][i % 3].to_string()))
                .collect(),
        );
        let (keyed, values) = dictionary_of::<Utf8ViewArray>(text_dictionary(&venues));
        assert_eq!(
            values.values_iter().collect::<Vec<_>>(),
            ["XPAR", "XETR", "XLON"]
        );
        assert_eq!(keyed.null_count(), venues.null_count());
        assert!(keyed.keys().is_null(0));
        assert_eq!(keyed.keys().value(1), 0);
        assert_eq!(keyed.keys().value(3), 2);
        // ids, distinct in the first rows: plain, no dictionary built
        let ids = text((0..1000).map(|i| Some(format!("E{i:07}"))).collect());
        assert!(matches!(text_dictionary(&ids), Some(Chosen::Plain)));
        // a value longer than a view holds, a short column, another encoding: Polars decides
        let long = text(
            (0..1000)
                .map(|i| Some(format!("a-desk-name-of-{}", i % 3)))
                .collect(),
        );
        assert!(text_dictionary(&long).is_none());
        assert!(text_dictionary(&venues.clone().sliced(0, 100)).is_none());
        assert!(matches!(
            choose(&venues, &dictionary, &parquet_type(&venues)),
            Some(Chosen::Dictionary(_))
        ));
        assert!(choose(&venues, &[Encoding::Plain], &parquet_type(&venues)).is_none());
    }

    #[test]
    fn wide_repeated_integers_are_keyed_and_distinct_ones_are_not() {
        use polars_arrow::array::{Array as _, PrimitiveArray};
        use polars_parquet::write::Encoding;
        let dictionary = [Encoding::RleDictionary];
        // offsets over a wide span, repeated, with nulls: keyed in first-occurrence order
        let offsets = PrimitiveArray::<i64>::from_iter(
            (0..1000).map(|i| (i % 4 != 1).then_some([9_000_000, -5, 70_000][i % 3])),
        );
        let (keyed, values) = dictionary_of::<PrimitiveArray<i64>>(integer_dictionary(&offsets));
        assert_eq!(values.values().as_slice(), [9_000_000, 70_000, -5]);
        assert_eq!(keyed.null_count(), offsets.null_count());
        assert!(keyed.keys().is_null(1));
        assert_eq!(keyed.keys().value(2), 1);
        assert_eq!(keyed.keys().value(3), 0);
        assert_eq!(keyed.keys().value(4), 2);
        // distinct times: plain, or their differences when in order; a narrow span, a short
        // column, another encoding: Polars
        let times = PrimitiveArray::<i64>::from_vec(scrambled(1000, 1_000_003));
        assert!(matches!(integer_dictionary(&times), Some(Chosen::Plain)));
        let in_order = PrimitiveArray::<i64>::from_vec((0..1000).map(|i| i * 1_000_003).collect());
        assert!(matches!(
            integer_dictionary(&in_order),
            Some(Chosen::Deltas)
        ));
        let narrow = PrimitiveArray::<i64>::from_vec((0..1000).map(|i| i % 7).collect());
        assert!(integer_dictionary(&narrow).is_none());
        assert!(integer_dictionary(&offsets.clone().sliced(0, 100)).is_none());
        assert!(matches!(
            choose(&offsets, &dictionary, &parquet_type(&offsets)),
            Some(Chosen::Dictionary(_))
        ));
        assert!(choose(&offsets, &[Encoding::Plain], &parquet_type(&offsets)).is_none());
    }

    #[test]
    fn repeated_values_are_keyed_and_each_chunk_has_its_own_statistics() {
        use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use deltalake::parquet::basic::Encoding as ParquetEncoding;
        use deltalake::parquet::file::statistics::Statistics;
        use polars::prelude::{Int128Chunked, IntoColumn, IntoSeries, NamedFrom, Series};
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("business_date", DataType::Date32, false),
            Field::new("price", DataType::Decimal128(38, 8), true),
            Field::new("pnl", DataType::Decimal128(38, 8), false),
            Field::new("notional", DataType::Decimal128(38, 8), false),
            Field::new("venue", DataType::Utf8, true),
        ]));
        // two row groups of several pages each
        let rows = 2 * ROW_GROUP_ROWS + 1000;
        let decimal = |name: &str, values: &[Option<i128>]| {
            values
                .iter()
                .copied()
                .collect::<Int128Chunked>()
                .with_name(name.into())
                .into_decimal(38, 8)
                .unwrap()
                .into_series()
                .into_column()
        };
        // repeated prices with nulls: keyed; repeated, but losses in the first pages and
        // gains after (a dictionary's statistics, and Polars' merge of pages', are ordered
        // by bytes, in which -20 is above 980): plain; distinct: plain; repeated short text
        // with nulls: keyed
        let price: Vec<Option<i128>> = (0..rows)
            .map(|i| (i % 13 != 0).then_some((i % 500) as i128 * 1_000_000 + 7))
            .collect();
        let pnl: Vec<Option<i128>> = (0..rows)
            .map(|i| Some((i % 40) as i128 - 20 + (i % ROW_GROUP_ROWS / 200_000) as i128 * 1000))
            .collect();
        let notional: Vec<Option<i128>> = (0..rows).map(|i| Some(i as i128 * 99)).collect();
        let venue: Vec<Option<String>> = (0..rows)
            .map(|i| (i % 5 != 2).then(|| format!("XV{}", i % 13)))
            .collect();
        let df = DataFrame::new(
            rows,
            vec![
                decimal("price", &price),
                decimal("pnl", &pnl),
                decimal("notional", &notional),
                Series::new("venue".into(), venue.clone()).into_column(),
            ],
        )
        .unwrap();
        let bytes = to_parquet(df.clone(), &schema, "business_date").unwrap();
        let file =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone())).unwrap();
        let groups = file.metadata().row_groups();
        assert_eq!(groups.len(), 2);
        let mut offset = 0;
        for group in groups {
            let len = group.num_rows() as usize;
            let keyed: Vec<bool> = group
                .columns()
                .iter()
                .map(|c| c.encodings().any(|e| e == ParquetEncoding::RLE_DICTIONARY))
                .collect();
            assert_eq!(keyed, [true, false, false, true]);
            // each chunk's statistics are its values' (signed) minimum and maximum and its
            // null count
            let nulls = |c: &deltalake::parquet::file::metadata::ColumnChunkMetaData| {
                c.statistics().and_then(|s| s.null_count_opt())
            };
            let columns = group.columns();
            for (c, values) in columns.iter().zip([&price, &pnl, &notional]) {
                let slice = &values[offset..offset + len];
                let valid = || slice.iter().flatten();
                let Some(Statistics::FixedLenByteArray(stats)) = c.statistics() else {
                    panic!("{}: no decimal statistics", c.column_path());
                };
                let number = |b: &[u8]| i128::from_be_bytes(b.try_into().unwrap());
                let found = (
                    stats.min_opt().map(|m| number(m.data())),
                    stats.max_opt().map(|m| number(m.data())),
                    nulls(c),
                );
                let expected = (
                    valid().min().copied(),
                    valid().max().copied(),
                    Some(slice.iter().filter(|v| v.is_none()).count() as u64),
                );
                assert_eq!(found, expected, "{}", c.column_path());
            }
            let slice = &venue[offset..offset + len];
            let Some(Statistics::ByteArray(stats)) = columns[3].statistics() else {
                panic!("venue: no text statistics");
            };
            let found = (
                stats.min_opt().map(|m| m.as_utf8().unwrap().to_string()),
                stats.max_opt().map(|m| m.as_utf8().unwrap().to_string()),
                nulls(&columns[3]),
            );
            let valid = || slice.iter().flatten().cloned();
            let expected = (
                valid().min(),
                valid().max(),
                Some(slice.iter().filter(|v| v.is_none()).count() as u64),
            );
            assert_eq!(found, expected, "venue");
            offset += len;
        }
        // arrow-rs and Polars read the values back
        let back: Vec<RecordBatch> = file.build().unwrap().collect::<Result<_, _>>().unwrap();
        let column = |i: usize| -> Vec<Option<i128>> {
            back.iter()
                .flat_map(|b| b.column(i).as_primitive::<Decimal128Type>().iter())
                .collect()
        };
        assert_eq!(column(0), price);
        assert_eq!(column(1), pnl);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyed.parquet");
        std::fs::write(&path, &bytes).unwrap();
        let polars_read = read_parquet(
            &[path],
            &Arc::new(Schema::new(schema.fields()[1..].to_vec())),
        )
        .unwrap();
        assert!(polars_read.equals_missing(&df), "{polars_read} != {df}");
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
