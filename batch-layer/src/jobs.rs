//! The jobs: pure `LazyFrame -> LazyFrame` functions, one per output table (DESIGN sections 5
//! and 9). Inputs carry the lake's column names and types; every output has exactly the
//! columns of its table, sorted by its key, so a rerun writes the same bytes.
//!
//! Money is `Decimal(38, 8)` throughout. Polars multiplies two such decimals into the exact
//! product rounded half-to-even at the 8th decimal, as `lake::Decimal::mul_rounded` does.
//! Ratios that must be rounded once from an exact wide sum (VWAP) and the sequential
//! average-cost positions run as small Rust steps inside the plan ([`LazyFrame::map`]) on
//! the definitions `lake` shares with the speed layer.

use std::collections::BTreeMap;
use std::sync::Arc;

use lakehouse_lake::events::Side;
use lakehouse_lake::positions::Position;
use lakehouse_lake::{BusinessDate, Decimal, EventTime};
use polars::prelude::{
    AllowedOptimizations, ChunkedArray, DataFrame, DataType, Expr, Int128Chunked, IntoColumn,
    IntoLazy, IntoSeries, JoinArgs, JoinType, LazyFrame, NamedFrom, PolarsError, PolarsResult,
    Schema, SchemaRef, Series, SortMultipleOptions, StringChunked, UnionArgs, UniqueKeepStrategy,
    col, concat, len, lit, when,
};

/// Polars' type of the lake's decimals.
pub const DEC: DataType = DataType::Decimal(38, 8);

/// The business date a run computes and its instants `[start, end)` in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The business date.
    pub date: BusinessDate,
    /// First instant of the date.
    pub start: EventTime,
    /// First instant of the next date.
    pub end: EventTime,
}

impl Window {
    fn contains_ts(&self) -> Expr {
        let us = col("ts").cast(DataType::Int64);
        us.clone()
            .gt_eq(lit(self.start.micros()))
            .and(us.lt(lit(self.end.micros())))
    }

    /// The business date, as the `business_date` column of an output.
    pub fn date_lit(&self) -> Expr {
        lit(self.date.days_since_epoch())
            .cast(DataType::Date)
            .alias("business_date")
    }
}

/// What the jobs take from the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobParams {
    /// Tape prints carrying any of these condition codes are left out of L2 and L3.
    pub excluded_conditions: Vec<String>,
    /// Large-trade notional thresholds (instrument currency) by asset class; `*` for others.
    pub large_trade_thresholds: BTreeMap<String, Decimal>,
    /// Gross exposure limits (reporting currency) by desk.
    pub desk_limits: BTreeMap<String, Decimal>,
    /// How many exposure rows count as the top concentration.
    pub top_n: u32,
}

fn sorted() -> SortMultipleOptions {
    SortMultipleOptions::default().with_maintain_order(true)
}

/// Event time, then Kafka partition and offset: the order every "first" and "last" uses.
const RANK: [&str; 3] = ["ts", "_partition", "_offset"];

/// Rows in [`RANK`] order. Partition and offset are unique in an L1 table (one topic each),
/// so the order is total and the sort need not be stable: no two rows compare equal.
fn by_rank(lf: LazyFrame) -> LazyFrame {
    lf.sort(RANK, SortMultipleOptions::default())
}

/// The date's FX rates: `currency`, `fx_rate`.
/// `first` where it is not null, else `second`.
fn or_else(first: &str, second: &str) -> Expr {
    when(col(first).is_not_null())
        .then(col(first))
        .otherwise(col(second))
}

fn fx_of_date(fx: LazyFrame, w: &Window) -> LazyFrame {
    fx.filter(
        col("date")
            .cast(DataType::Int32)
            .eq(lit(w.date.days_since_epoch())),
    )
    .select([col("currency"), col("rate_to_reporting").alias("fx_rate")])
}

fn zero_dec() -> Expr {
    lit(0).cast(DEC)
}

fn dec_lit(d: Decimal) -> Expr {
    lit(d.to_string()).cast(DEC)
}

fn count(cond: Expr) -> Expr {
    cond.cast(DataType::Int64).sum()
}

fn left_join(l: LazyFrame, r: LazyFrame, on: &[&str]) -> LazyFrame {
    let keys: Vec<Expr> = on.iter().map(|c| col(*c)).collect();
    l.join(r, keys.clone(), keys, JoinArgs::new(JoinType::Left))
}

/// The tape's trade id column.
pub const TRADE_ID: &str = "trade_id";
/// The tape's condition codes (in a job's input: one text per print, codes joined by `,`).
pub const CONDITIONS: &str = "conditions";

/// Whether [`l2_market_trades`] reads the condition codes of prints that have a trade id:
/// only to leave out excluded codes (a print without an id is identified by its codes too).
pub fn reads_conditions_of_ids(p: &JobParams) -> bool {
    !p.excluded_conditions.is_empty()
}

/// `l2/market_trades` (the input's `conditions` as one text, codes joined by `,`): the date's
/// prints, each delivery counted once (the first by rank of each trade id, or of each whole
/// print when it has no id, as `MarketTrade::dedup_key`), without prints carrying an excluded
/// condition code. The runner gathers the same rows a column at a time
/// ([`l2_market_trades_firsts`]).
pub fn l2_market_trades(l1: LazyFrame, w: &Window, p: &JobParams) -> LazyFrame {
    first_deliveries(
        trades_read(l1),
        w.start.micros()..w.end.micros(),
        TRADES,
        p.excluded_conditions.clone(),
    )
    .select(L2_TRADES.map(|c| match c {
        "business_date" => w.date_lit(),
        c => col(c),
    }))
}

/// What the date's L1 prints add up to, for [`reconciliation`]: `l1`, the rows with a time in
/// the window (every delivery), and `l1_volume`, their volume. [`l2_market_trades_firsts`]
/// counts them as it reads the tape: reconciliation reading the tape's 10M times and volumes
/// again took 0.5 to 1 s.
#[derive(Clone, Debug, Default)]
pub struct L1Tally(Arc<std::sync::Mutex<Option<(i64, i128)>>>);

impl L1Tally {
    /// The one-row frame (`l1`, `l1_volume`); an error before the plan that counts has run.
    pub fn frame(&self) -> PolarsResult<DataFrame> {
        let Some((rows, volume)) = *self.lock()? else {
            return Err(PolarsError::ComputeError(
                "the L1 prints were not counted: the L2 market trades plan has not run".into(),
            ));
        };
        DataFrame::new(
            1,
            vec![
                Series::new("l1".into(), [rows]).into_column(),
                decimal_series("l1_volume", vec![Some(volume)])?.into_column(),
            ],
        )
    }

    fn record(&self, rows: usize, volume: i128) -> PolarsResult<()> {
        *self.lock()? = Some((rows as i64, volume));
        Ok(())
    }

    fn lock(&self) -> PolarsResult<std::sync::MutexGuard<'_, Option<(i64, i128)>>> {
        self.0
            .lock()
            .map_err(|e| PolarsError::ComputeError(e.to_string().into()))
    }
}

/// The columns of [`l2_market_trades`], in order.
pub const L2_TRADES: [&str; 9] = [
    "business_date",
    TRADE_ID,
    "symbol",
    "venue",
    "price",
    "volume",
    "ts",
    "_partition",
    "_offset",
];

/// What identifies a print: its trade id, or without one the whole print.
const TRADES: Identity = Identity {
    id: Some(TRADE_ID),
    keys: &["symbol", "venue", "ts", "price", "volume", CONDITIONS],
};

/// The tape's columns that [`l2_market_trades`] reads: the output's, the identity's and the
/// exclusion rule's (the condition codes are one text per print, read for every print only
/// when codes are excluded: [`reads_conditions_of_ids`]).
fn trades_read(l1: LazyFrame) -> LazyFrame {
    // the output's columns but the date, and the codes
    l1.select(
        L2_TRADES[1..]
            .iter()
            .chain(&[CONDITIONS])
            .map(|c| col(*c))
            .collect::<Vec<_>>(),
    )
}

/// [`l2_market_trades`] found but not gathered, for a writer that takes the output one
/// column at a time: the tape's first deliveries of the date in rank order, without the
/// excluded prints (each column of [`L2_TRADES`] but `business_date` comes from
/// [`Firsts::column`]), and the [`L1Tally`] of the tape, filled once `volume` is read.
pub fn l2_market_trades_firsts(
    l1: LazyFrame,
    w: &Window,
    p: &JobParams,
) -> PolarsResult<(Firsts, L1Tally)> {
    let tally = L1Tally::default();
    let source = trades_read(l1);
    let ids = source
        .clone()
        .select(
            identity_columns(TRADES)
                .into_iter()
                .map(col)
                .collect::<Vec<_>>(),
        )
        .collect()?;
    let firsts = Firsts::find(
        source,
        ids,
        w.start.micros()..w.end.micros(),
        TRADES,
        Some(("volume", tally.clone())),
        &p.excluded_conditions,
    )?;
    Ok((firsts, tally))
}

/// What identifies one delivery of an event (a redelivery repeats it).
#[derive(Clone, Copy)]
struct Identity {
    /// An id column: a row where it is set is identified by it alone.
    id: Option<&'static str>,
    /// The columns that identify a row without an id (every row when there is no `id`).
    keys: &'static [&'static str],
}

/// The rows of `lf` inside the window, each delivery once (its first by rank), in rank
/// order: [`first_deliveries`] over the date's window.
fn distinct_by_rank(lf: LazyFrame, w: &Window, who: Identity) -> LazyFrame {
    first_deliveries(lf, w.start.micros()..w.end.micros(), who, Vec::new())
}

/// The columns [`first_deliveries`] reads first: the id (or the keys, without one) and the
/// rank columns.
fn identity_columns(who: Identity) -> Vec<&'static str> {
    let mut read: Vec<&'static str> = who.id.into_iter().collect();
    if who.id.is_none() {
        read.extend(who.keys);
    }
    for c in RANK {
        if !read.contains(&c) {
            read.push(c);
        }
    }
    read
}

/// The first delivery of each identity among the rows of `lf` with a time in `window`, in
/// rank order, as a Rust step in the plan ([`Firsts`]): the identity and rank columns are
/// read first and the kept rows found from them, then the other columns are read and
/// gathered one at a time, so the input is never in memory whole beside the output (for a
/// scan, each read is of one column of the files). Rows whose [`CONDITIONS`] hold an
/// `excluded` code are left out.
fn first_deliveries(
    lf: LazyFrame,
    window: std::ops::Range<i64>,
    who: Identity,
    excluded: Vec<String>,
) -> LazyFrame {
    let read = identity_columns(who);
    let source = lf.clone();
    // the step's output has the source's columns: resolved once, for the plan and the step
    let schema = match lf.clone().collect_schema() {
        Ok(schema) => schema,
        Err(e) => return failed(e),
    };
    let columns = schema.clone();
    lf.select(read.iter().map(|c| col(*c)).collect::<Vec<_>>())
        .map(
            move |ids| {
                let mut firsts =
                    Firsts::find(source.clone(), ids, window.clone(), who, None, &excluded)?;
                let mut out = Vec::with_capacity(columns.len());
                for name in columns.iter_names() {
                    out.push(firsts.column(name)?);
                }
                DataFrame::new(firsts.len(), out)
            },
            opts(),
            Some(Arc::new(move |_: &Schema| Ok(schema.clone()))),
            Some("first deliveries in rank order"),
        )
}

/// The first deliveries of a source found but not yet gathered: the kept rows in rank order
/// (most events come once, so only the rows whose identity hash repeats, the redeliveries
/// and any hash collision, are compared by their keys), and where to read each column of
/// them.
pub struct Firsts {
    source: LazyFrame,
    /// The source's rows.
    height: usize,
    /// The source's columns read already (identity and rank), until gathered.
    read: DataFrame,
    /// The kept rows, in rank order.
    order: polars::prelude::IdxCa,
    /// A decimal column to sum over the rows inside the window (`Rows`) as it is read, and
    /// where to record the sum and count.
    tally: Option<(&'static str, L1Tally, Rows)>,
}

impl Firsts {
    /// The kept rows of `source` from `ids`, its identity and rank columns: the first
    /// delivery of each identity among the rows with a time in `window`, without those whose
    /// [`CONDITIONS`] hold an `excluded` code.
    fn find(
        source: LazyFrame,
        ids: DataFrame,
        window: std::ops::Range<i64>,
        who: Identity,
        tally: Option<(&'static str, L1Tally)>,
        excluded: &[String],
    ) -> PolarsResult<Self> {
        let mut firsts = Firsts {
            source,
            height: ids.height(),
            read: ids,
            order: Default::default(),
            tally: None,
        };
        // rows without an id are identified by their keys
        if let Some(id) = who.id
            && firsts.read.column(id)?.has_nulls()
        {
            for k in who.keys {
                firsts.keep_read(k)?;
            }
        }
        let (order, inside) = kept_in_rank_order(&firsts.read, window, who, tally.is_some())?;
        firsts.order = polars::prelude::IdxCa::from_vec("rows".into(), order);
        firsts.tally = tally.zip(inside).map(|((c, t), rows)| (c, t, rows));
        if !excluded.is_empty() {
            firsts.exclude(excluded)?;
        }
        Ok(firsts)
    }

    /// The number of kept rows.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no row is kept.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// One column of the source at the kept rows, in rank order. Each column is read once:
    /// asked again, it is read again.
    pub fn column(&mut self, name: &str) -> PolarsResult<polars::prelude::Column> {
        let mut column = match self.read.drop_in_place(name) {
            Ok(c) => c,
            Err(_) => self.read_column(name)?,
        };
        // gathering text from many chunks copies every string: one chunk of its views first
        // (and the tally's lookups by row number go to one chunk)
        if column.n_chunks() > 1 {
            column = column.rechunk();
        }
        if self
            .tally
            .as_ref()
            .is_some_and(|(summed, ..)| *summed == name)
            && let Some((_, counted, inside)) = self.tally.take()
        {
            let values = column.as_materialized_series().decimal()?.physical();
            let mut sum = 0i128;
            for &i in &inside {
                if let Some(v) = values.get(i as usize) {
                    sum = sum.checked_add(v).ok_or_else(|| {
                        PolarsError::ComputeError(format!("the sum of `{name}` overflows").into())
                    })?;
                }
            }
            counted.record(inside.len(), sum)?;
        }
        column.take(&self.order)
    }

    /// One column of the source, checked to be the rows the identity columns were read from.
    fn read_column(&self, name: &str) -> PolarsResult<polars::prelude::Column> {
        let mut one = self.source.clone().select([col(name)]).collect()?;
        polars::prelude::polars_ensure!(
            one.height() == self.height,
            ComputeError: "column `{name}` has {} rows, the identity columns {}",
            one.height(), self.height
        );
        one.drop_in_place(name)
    }

    /// Reads column `name` into the columns read already, unless it is there.
    fn keep_read(&mut self, name: &str) -> PolarsResult<()> {
        if self.read.column(name).is_err() {
            let c = self.read_column(name)?;
            self.read.with_column(c)?;
        }
        Ok(())
    }

    /// Leaves out of the kept rows those whose condition codes (one text, joined by `,`)
    /// hold one of `excluded`.
    fn exclude(&mut self, excluded: &[String]) -> PolarsResult<()> {
        self.keep_read(CONDITIONS)?;
        let codes = self.read.column(CONDITIONS)?.as_materialized_series();
        let codes = codes.rechunk();
        let codes = codes.str()?;
        let kept: Vec<polars::prelude::IdxSize> = self
            .order
            .into_no_null_iter()
            .filter(|&i| {
                codes
                    .get(i as usize)
                    .is_none_or(|text| !text.split(',').any(|c| excluded.iter().any(|e| e == c)))
            })
            .collect();
        self.order = polars::prelude::IdxCa::from_vec("rows".into(), kept);
        Ok(())
    }
}

/// Row numbers of a frame.
type Rows = Vec<polars::prelude::IdxSize>;

/// The rows of `df` (identity and rank columns) to keep, in rank order, and when asked
/// (`with_inside`) the rows with a time in `window`.
fn kept_in_rank_order(
    df: &DataFrame,
    window: std::ops::Range<i64>,
    who: Identity,
    with_inside: bool,
) -> PolarsResult<(Rows, Option<Rows>)> {
    use polars::prelude::{IdxCa, IdxSize};
    let ts = numbers(df, RANK[0])?;
    let hashes = identity_hashes(df, who)?;
    let mut inside: Vec<IdxSize> = Vec::with_capacity(df.height());
    inside.extend(
        (0..df.height())
            .filter(|&i| window.contains(&ts[i]))
            .map(|i| i as IdxSize),
    );
    let repeated = repeated_hashes(inside.iter().map(|&i| hashes[i as usize]), inside.len());
    let mut keep = vec![false; df.height()];
    let mut candidates = Vec::new();
    for &i in &inside {
        if repeated.contains(&hashes[i as usize]) {
            candidates.push(i);
        } else {
            keep[i as usize] = true;
        }
    }
    let inside = with_inside.then_some(inside);
    if !candidates.is_empty() {
        let rows = IdxCa::from_vec("_row".into(), candidates);
        for i in firsts_among(df, rows, who)? {
            keep[i as usize] = true;
        }
    }
    // rank order: by time, then (the few rows that share a time) by partition and offset,
    // then input order
    let mut ranked: Vec<(i64, IdxSize)> = Vec::with_capacity(df.height());
    ranked.extend(
        (0..df.height())
            .filter(|&i| keep[i])
            .map(|i| (ts[i], i as IdxSize)),
    );
    drop((keep, ts));
    rayon::slice::ParallelSliceMut::par_sort_unstable(ranked.as_mut_slice());
    {
        let mut ties = ranked
            .chunk_by_mut(|a, b| a.0 == b.0)
            .filter(|t| t.len() > 1)
            .peekable();
        if ties.peek().is_some() {
            let (partition, offset) = (numbers(df, RANK[1])?, numbers(df, RANK[2])?);
            for tie in ties {
                tie.sort_unstable_by_key(|&(_, i)| (partition[i as usize], offset[i as usize], i));
            }
        }
    }
    Ok((ranked.into_iter().map(|(_, i)| i).collect(), inside))
}

/// The hashes that occur more than once among `n`: a repeated hash sits beside itself once
/// sorted. They are scattered by their top byte into 256 buckets, each small enough to sort
/// in cache, and the buckets are sorted on every core (one Polars sort of 10M hashes took
/// 0.68 s, these buckets 0.43 s, in one noisy run each).
fn repeated_hashes(hashes: impl Iterator<Item = u64>, n: usize) -> polars::prelude::PlHashSet<u64> {
    use rayon::prelude::*;
    let mut buckets: Vec<Vec<u64>> = (0..256)
        .map(|_| Vec::with_capacity(n / 256 + n / 2048 + 16))
        .collect();
    for h in hashes {
        buckets[(h >> 56) as usize].push(h);
    }
    buckets
        .par_iter_mut()
        .flat_map_iter(|b| {
            b.sort_unstable();
            let b: &Vec<u64> = b;
            // a hash seen 3 times gives 2 pairs: the set holds it once
            b.windows(2).filter(|p| p[0] == p[1]).map(|p| p[0])
        })
        .collect()
}

/// A numeric column as `i64` values (null as the smallest: first, as Polars sorts nulls).
fn numbers(df: &DataFrame, name: &str) -> PolarsResult<Vec<i64>> {
    let s = df
        .column(name)?
        .as_materialized_series()
        .to_physical_repr()
        .cast(&DataType::Int64)?;
    Ok(s.i64()?.iter().map(|v| v.unwrap_or(i64::MIN)).collect())
}

/// Each row's hash of its identity (Polars' `vec_hash`, a fixed seed).
fn identity_hashes(df: &DataFrame, who: Identity) -> PolarsResult<Vec<u64>> {
    use polars::prelude::PlSeedableRandomStateQuality;
    let hash = |columns: &[&str]| -> PolarsResult<Vec<u64>> {
        let state = PlSeedableRandomStateQuality::fixed();
        let mut hashes = Vec::with_capacity(df.height());
        for (i, k) in columns.iter().enumerate() {
            let s = df.column(k)?.as_materialized_series();
            if i == 0 {
                s.vec_hash(state.clone(), &mut hashes)?;
            } else {
                s.vec_hash_combine(state.clone(), &mut hashes)?;
            }
        }
        Ok(hashes)
    };
    let Some(id) = who.id else {
        return hash(who.keys);
    };
    let mut hashes = hash(&[id])?;
    let ids = df.column(id)?;
    if ids.has_nulls() {
        let by_keys = hash(who.keys)?;
        let missing = ids.is_null();
        for (i, m) in missing.iter().enumerate() {
            if m == Some(true) {
                hashes[i] = by_keys[i];
            }
        }
    }
    Ok(hashes)
}

/// Of the candidate `rows`, the first by rank of each identity (exact comparison by Polars).
fn firsts_among(
    df: &DataFrame,
    rows: polars::prelude::IdxCa,
    who: Identity,
) -> PolarsResult<Vec<polars::prelude::IdxSize>> {
    // every row has an id: the keys were not read, and are not needed
    let by_id_alone = match who.id {
        Some(id) => !df.column(id)?.has_nulls(),
        None => false,
    };
    let mut read: Vec<&str> = who.id.into_iter().collect();
    if !by_id_alone {
        read.extend(who.keys);
    }
    for c in RANK {
        if !read.contains(&c) {
            read.push(c);
        }
    }
    let mut columns = df.select(read)?.take(&rows)?;
    columns.with_column(rows.into_column())?;
    let first_of = |lf: LazyFrame, keys: &[&str]| {
        by_rank(lf).unique_stable_generic(
            Some(keys.iter().map(|k| col(*k)).collect()),
            UniqueKeepStrategy::First,
        )
    };
    let firsts = match who.id {
        None => first_of(columns.lazy(), who.keys),
        Some(id) if by_id_alone => first_of(columns.lazy(), &[id]),
        Some(id) => concat(
            [
                first_of(columns.clone().lazy().filter(col(id).is_not_null()), &[id]),
                first_of(columns.lazy().filter(col(id).is_null()), who.keys),
            ],
            UnionArgs::default(),
        )?,
    }
    .select([col("_row")])
    .collect()?;
    Ok(firsts
        .column("_row")?
        .as_materialized_series()
        .idx()?
        .into_no_null_iter()
        .collect())
}

/// The date's execution events, each `exec_id` once (the first delivery by rank), in rank
/// order: what [`l2_executions`], [`order_stats`] and [`reconciliation`] read (computed once
/// per run and shared).
pub fn distinct_executions(l1: LazyFrame, w: &Window) -> LazyFrame {
    distinct_by_rank(
        l1,
        w,
        Identity {
            id: None,
            keys: &["exec_id"],
        },
    )
}

fn is_fill() -> Expr {
    col("lifecycle")
        .eq(lit("NEW"))
        .or(col("ref_exec_id").is_null())
}

/// `l2/executions` from the date's [`distinct_executions`]: the effective executions. A
/// repeated `exec_id` is a duplicate delivery (already left out); a CANCEL (by
/// `ref_exec_id`) removes its execution; otherwise the last AMEND by rank sets price and
/// quantity (as `lake::positions`). Enriched with desk and legal entity (accounts), ISIN and
/// asset class (instruments), notional = price x quantity, and the reporting-currency
/// notional at the date's FX rate of the execution's currency.
pub fn l2_executions(
    rows: LazyFrame,
    instruments: LazyFrame,
    accounts: LazyFrame,
    fx: LazyFrame,
    w: &Window,
) -> LazyFrame {
    let corrections = rows.clone().filter(is_fill().not());
    let cancelled = corrections
        .clone()
        .filter(col("lifecycle").eq(lit("CANCEL")))
        .select([
            col("ref_exec_id").alias("exec_id"),
            lit(true).alias("_cancelled"),
        ])
        .unique_stable(None, UniqueKeepStrategy::First);
    let rank = RANK.map(col);
    let amended = corrections
        .filter(col("lifecycle").eq(lit("AMEND")))
        .group_by([col("ref_exec_id").alias("exec_id")])
        .agg([
            col("price")
                .sort_by(rank.clone(), sorted())
                .last()
                .alias("_amend_price"),
            col("quantity")
                .sort_by(rank, sorted())
                .last()
                .alias("_amend_quantity"),
        ]);
    let fills = left_join(rows.filter(is_fill()), cancelled, &["exec_id"])
        .filter(col("_cancelled").is_null());
    let fills = left_join(fills, amended, &["exec_id"]).with_columns([
        or_else("_amend_price", "price").alias("price"),
        or_else("_amend_quantity", "quantity").alias("quantity"),
    ]);
    let accounts = accounts.select([col("account"), col("desk"), col("legal_entity")]);
    let instruments = instruments.select([col("symbol"), col("isin"), col("asset_class")]);
    let fx = fx_of_date(fx, w);
    let enriched = left_join(
        left_join(
            left_join(fills, accounts, &["account"]),
            instruments,
            &["symbol"],
        ),
        fx,
        &["currency"],
    )
    .with_columns([(col("price") * col("quantity")).alias("notional")])
    .with_columns([(col("notional") * col("fx_rate")).alias("reporting_notional")]);
    by_rank(enriched).select([
        w.date_lit(),
        col("exec_id"),
        col("order_id"),
        col("account"),
        col("desk"),
        col("legal_entity"),
        col("trader"),
        col("symbol"),
        col("isin"),
        col("asset_class"),
        col("venue"),
        col("side"),
        col("price"),
        col("quantity"),
        col("currency"),
        col("ts"),
        col("notional"),
        col("fx_rate"),
        col("reporting_notional"),
        col("_partition"),
        col("_offset"),
    ])
}

const ORDER_EVENT: [&str; 10] = [
    "order_id",
    "action",
    "ts",
    "account",
    "trader",
    "symbol",
    "side",
    "order_type",
    "price",
    "quantity",
];

/// The date's order events, each once (an order event has no id: the whole event is its
/// identity, as `Order::dedup_key`), in rank order: what [`l2_orders`] and [`order_stats`]
/// read (computed once per run and shared).
pub fn distinct_orders(l1: LazyFrame, w: &Window) -> LazyFrame {
    distinct_by_rank(
        l1,
        w,
        Identity {
            id: None,
            keys: &ORDER_EVENT,
        },
    )
}

/// `l2/orders` from the date's [`distinct_orders`]: one row per order with events on the
/// date: its attributes from its first event, price and quantity from its last NEW or MODIFY,
/// `CANCELLED` once cancelled (else `MODIFIED` or `NEW`), first and last event time, and the
/// counts of modifies and cancels.
pub fn l2_orders(events: LazyFrame, w: &Window) -> LazyFrame {
    let date = w.date_lit();
    events.map(
        move |events| final_states(events, date.clone()),
        opts(),
        Some(Arc::new(|_: &Schema| Ok(l2_orders_schema()))),
        Some("final state per order"),
    )
}

/// The columns of [`l2_orders`], by the order's first event and its pricing event.
const FROM_FIRST: [&str; 6] = ["account", "trader", "symbol", "venue", "side", "order_type"];
const FROM_PRICING: [&str; 2] = ["price", "quantity"];

fn l2_orders_schema() -> SchemaRef {
    let text = |c: &str| (c.into(), DataType::String);
    let time = DataType::Datetime(
        polars::prelude::TimeUnit::Microseconds,
        Some(polars::prelude::TimeZone::UTC),
    );
    Arc::new(Schema::from_iter(
        [("business_date".into(), DataType::Date), text("order_id")]
            .into_iter()
            .chain(FROM_FIRST.map(text))
            .chain(FROM_PRICING.map(|c| (c.into(), DEC)))
            .chain([
                text("status"),
                ("first_ts".into(), time.clone()),
                ("last_ts".into(), time),
                ("modify_count".into(), DataType::Int64),
                ("cancel_count".into(), DataType::Int64),
            ]),
    ))
}

/// [`l2_orders`]' step over the date's distinct events in rank order: the orders' groups
/// hold only row numbers, times and counts ([`order_groups`]; no text is aggregated), then
/// each text and decimal column is gathered once at its order's first event or pricing event.
fn final_states(events: DataFrame, date: Expr) -> PolarsResult<DataFrame> {
    let groups = match short_id_groups(&events)? {
        Some(groups) => groups,
        None => order_groups(&events)?,
    };
    let orders = groups
        .lazy()
        .with_columns([
            when(col("cancel_count").gt(lit(0)))
                .then(lit("CANCELLED"))
                .when(col("modify_count").gt(lit(0)))
                .then(lit("MODIFIED"))
                .otherwise(lit("NEW"))
                .alias("status"),
            date,
        ])
        .collect()?;
    let at = |rows: &str| -> PolarsResult<polars::prelude::IdxCa> {
        let rows = orders.column(rows)?.as_materialized_series();
        Ok(rows.cast(&polars::prelude::IDX_DTYPE)?.idx()?.clone())
    };
    let first = events.select(FROM_FIRST)?.take(&at("_first")?)?;
    let pricing = events.select(FROM_PRICING)?.take(&at("_pricing")?)?;
    let mut out = Vec::new();
    for c in l2_orders_schema().iter_names() {
        let c = c.as_str();
        out.push(if FROM_FIRST.contains(&c) {
            first.column(c)?.clone()
        } else if FROM_PRICING.contains(&c) {
            pricing.column(c)?.clone()
        } else {
            orders.column(c)?.clone()
        });
    }
    DataFrame::new(orders.height(), out)
}

/// One row per order of the events (in rank order), sorted by `order_id`: `_first`, the row
/// of its first event; `_pricing`, the row of its last NEW or MODIFY (of its last event when
/// every event is a CANCEL); `first_ts` and `last_ts`; `modify_count` and `cancel_count`.
fn order_groups(events: &DataFrame) -> PolarsResult<DataFrame> {
    let live = col("action").neq(lit("CANCEL"));
    let row = || col("_row");
    events
        .clone()
        .lazy()
        .select([col("order_id"), col("action"), col("ts")])
        .with_row_index("_row", None)
        .group_by_stable([col("order_id")])
        .agg([
            row().first().alias("_first"),
            when(live)
                .then(row())
                .otherwise(lit(polars::prelude::NULL))
                .max()
                .alias("_live"),
            row().max().alias("_last"),
            col("ts").min().alias("first_ts"),
            col("ts").max().alias("last_ts"),
            count(col("action").eq(lit("MODIFY"))).alias("modify_count"),
            count(col("action").eq(lit("CANCEL"))).alias("cancel_count"),
        ])
        .sort(["order_id"], sorted())
        .select([
            col("order_id"),
            col("_first"),
            col("_live").fill_null(col("_last")).alias("_pricing"),
            col("first_ts"),
            col("last_ts"),
            col("modify_count"),
            col("cancel_count"),
        ])
        .collect()
}

/// The longest order id [`short_id_groups`] takes: what a text view holds whole.
const SHORT_ID: usize = 12;

/// [`order_groups`] by a sort instead of a hash table, when every order id is at most
/// [`SHORT_ID`] bytes and no order id, action or time is null (else none). Such an id is a
/// 128-bit number that sorts as the text does (its bytes, zero-padded, then its length:
/// a text sorts after its prefixes), so one sort of (number, row) pairs on every core puts
/// each order's events together, in rank order, in the order of the output. Polars' group-by
/// of 4M events by their text ids, then the sort of the 3M orders, were most of the job's
/// 0.74 to 0.78 s; with this sort it takes 0.34 to 0.53 s (the benchmark's date, one chain
/// at a time).
fn short_id_groups(events: &DataFrame) -> PolarsResult<Option<DataFrame>> {
    use polars::prelude::{IdxCa, IdxSize, Int64Chunked};
    use rayon::prelude::*;
    let ids = text_column(events, "order_id")?;
    let actions = text_column(events, "action")?;
    let ts_column = events.column("ts")?;
    let ts = ts_column
        .as_materialized_series()
        .to_physical_repr()
        .cast(&DataType::Int64)?
        .i64()?
        .rechunk()
        .into_owned();
    if ids.has_nulls() || actions.has_nulls() || ts.has_nulls() {
        return Ok(None);
    }
    let (Some(id), Some(action), Some(times)) =
        (one_chunk(&ids), one_chunk(&actions), ts.cont_slice().ok())
    else {
        return Ok(None);
    };
    let mut keyed: Vec<(u128, IdxSize)> = Vec::with_capacity(id.len());
    for (row, text) in id.values_iter().enumerate() {
        let Some(key) = short_id_key(text.as_bytes()) else {
            return Ok(None);
        };
        keyed.push((key, row as IdxSize));
    }
    // (number, row) pairs are distinct: the order is total
    keyed.par_sort_unstable();
    let mut first = Vec::new();
    let mut pricing = Vec::new();
    let (mut first_ts, mut last_ts) = (Vec::new(), Vec::new());
    let (mut modifies, mut cancels) = (Vec::new(), Vec::new());
    for group in keyed.chunk_by(|a, b| a.0 == b.0) {
        let (mut live, mut low, mut high) = (None, i64::MAX, i64::MIN);
        let (mut modify, mut cancel) = (0i64, 0i64);
        for &(_, row) in group {
            let r = row as usize;
            match action.value(r) {
                "CANCEL" => cancel += 1,
                "MODIFY" => {
                    modify += 1;
                    live = Some(row);
                }
                _ => live = Some(row),
            }
            low = low.min(times[r]);
            high = high.max(times[r]);
        }
        // a group is never empty; its rows ascend
        first.push(group[0].1);
        pricing.push(live.unwrap_or(group[group.len() - 1].1));
        first_ts.push(low);
        last_ts.push(high);
        modifies.push(modify);
        cancels.push(cancel);
    }
    let first = IdxCa::from_vec("_first".into(), first);
    let time = |name: &str, values: Vec<i64>| {
        Int64Chunked::from_vec(name.into(), values)
            .into_series()
            .cast(ts_column.dtype())
    };
    Ok(Some(DataFrame::new(
        first.len(),
        vec![
            ids.into_series().take(&first)?.into_column(),
            first.clone().into_series().into_column(),
            IdxCa::from_vec("_pricing".into(), pricing)
                .into_series()
                .into_column(),
            time("first_ts", first_ts)?.into_column(),
            time("last_ts", last_ts)?.into_column(),
            Int64Chunked::from_vec("modify_count".into(), modifies)
                .into_series()
                .into_column(),
            Int64Chunked::from_vec("cancel_count".into(), cancels)
                .into_series()
                .into_column(),
        ],
    )?))
}

/// A text of at most [`SHORT_ID`] bytes as a number in the order of the texts: its bytes
/// zero-padded to 12, then its length (so a text sorts after its prefixes, even one it
/// extends with zero bytes); none for a longer text.
fn short_id_key(text: &[u8]) -> Option<u128> {
    if text.len() > SHORT_ID {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[..text.len()].copy_from_slice(text);
    bytes[SHORT_ID..].copy_from_slice(&(text.len() as u32).to_be_bytes());
    Some(u128::from_be_bytes(bytes))
}

/// A plan that fails with `e` when run (a job's plan could not be built).
fn failed(e: PolarsError) -> LazyFrame {
    LazyFrame::default().map(move |_| Err(e.clone()), opts(), None, None)
}

/// What the optimizer may push through a Rust step: nothing (it reads columns by name that
/// a pushed-down projection would remove, and its rows depend on all of its input).
fn opts() -> AllowedOptimizations {
    let mut o = AllowedOptimizations::default();
    o.remove(
        AllowedOptimizations::PROJECTION_PUSHDOWN
            | AllowedOptimizations::PREDICATE_PUSHDOWN
            | AllowedOptimizations::SLICE_PUSHDOWN,
    );
    o
}

fn texts<'a>(df: &'a DataFrame, name: &str) -> PolarsResult<Vec<Option<&'a str>>> {
    let s = df.column(name)?.as_materialized_series();
    Ok(s.str()?.iter().collect())
}

fn decimal_series(name: &str, values: Vec<Option<i128>>) -> PolarsResult<Series> {
    let ca: Int128Chunked = values.into_iter().collect();
    Ok(ca.with_name(name.into()).into_decimal(38, 8)?.into_series())
}

fn lake_err(e: lakehouse_lake::Error) -> PolarsError {
    PolarsError::ComputeError(e.to_string().into())
}

/// `l3/daily_bars` from the date's `l2/market_trades` in rank order, as [`l2_market_trades`]
/// returns them: per symbol, open and close (first and last print by rank), high, low,
/// volume, trade count and VWAP = exact sum(price x volume) / sum(volume), rounded once.
/// The prints are of one date: they are grouped by symbol alone.
///
/// One pass over the prints ([`bars_of`]) instead of a Polars group-by and its
/// aggregations (0.8 s for 10M prints): the rows are cut into ranges summed on every core,
/// whose sums are exact (128-bit integers, checked) and joined in row order.
pub fn daily_bars(l2_trades: LazyFrame) -> LazyFrame {
    let schema: SchemaRef = Arc::new(Schema::from_iter([
        ("business_date".into(), DataType::Date),
        ("symbol".into(), DataType::String),
        ("open".into(), DEC),
        ("high".into(), DEC),
        ("low".into(), DEC),
        ("close".into(), DEC),
        ("vwap".into(), DEC),
        ("volume".into(), DEC),
        ("trade_count".into(), DataType::Int64),
    ]));
    l2_trades
        .select([
            col("business_date"),
            col("symbol"),
            col("price").cast(DEC),
            col("volume").cast(DEC),
        ])
        .map(
            |df| bars_of(&df),
            opts(),
            Some(Arc::new(move |_: &Schema| Ok(schema.clone()))),
            Some("daily bars"),
        )
        .sort(["symbol"], sorted())
}

/// One symbol's sums over a range of prints ([`bars_of`]).
#[derive(Clone, Copy)]
struct BarSums {
    first: usize,
    last: usize,
    high: Option<i128>,
    low: Option<i128>,
    /// sum(price x volume) in 10^-16 units: exact.
    notional: i128,
    volume: i128,
    count: i64,
}

impl BarSums {
    fn new(row: usize) -> Self {
        BarSums {
            first: row,
            last: row,
            high: None,
            low: None,
            notional: 0,
            volume: 0,
            count: 0,
        }
    }

    fn add(&mut self, row: usize, price: Option<i128>, volume: Option<i128>) -> PolarsResult<()> {
        self.last = row;
        self.count += 1;
        if let Some(p) = price {
            self.high = Some(self.high.map_or(p, |h| h.max(p)));
            self.low = Some(self.low.map_or(p, |l| l.min(p)));
        }
        if let Some(v) = volume {
            self.volume = self.volume.checked_add(v).ok_or_else(overflow)?;
        }
        if let (Some(p), Some(v)) = (price, volume) {
            let product = p.checked_mul(v).ok_or_else(overflow)?;
            self.notional = self.notional.checked_add(product).ok_or_else(overflow)?;
        }
        Ok(())
    }

    /// These sums followed by `later`'s (of the rows after these).
    fn then(mut self, later: &BarSums) -> PolarsResult<Self> {
        self.last = later.last;
        self.count += later.count;
        self.high = self.high.max(later.high);
        self.low = match (self.low, later.low) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.volume = self.volume.checked_add(later.volume).ok_or_else(overflow)?;
        self.notional = self
            .notional
            .checked_add(later.notional)
            .ok_or_else(overflow)?;
        Ok(self)
    }
}

fn overflow() -> PolarsError {
    PolarsError::ComputeError("daily bars: a sum does not fit in 128 bits".into())
}

/// The rows a range of [`bars_of`] sums at most.
const BAR_RANGE: usize = 1 << 20;

/// The bars of `df` (business date, symbol, price, volume), one row per symbol in the order
/// each first occurs; open, close and the business date are the first and last rows' own.
fn bars_of(df: &DataFrame) -> PolarsResult<DataFrame> {
    use polars::prelude::{PlHashMap, StaticArray};
    use rayon::prelude::*;
    // read in place (a vector of 10M optional 128-bit values is 320 MB to fault in)
    let symbol = text_column(df, "symbol")?;
    let (price, volume) = (decimal_column(df, "price")?, decimal_column(df, "volume")?);
    let n = df.height();
    if n == 0 {
        return bars_frame(df, &[], Vec::new());
    }
    let (symbol, price, volume) = match (one_chunk(&symbol), one_chunk(&price), one_chunk(&volume))
    {
        (Some(s), Some(p), Some(v)) => (s, p, v),
        _ => return Err(PolarsError::ComputeError("daily bars: no prints".into())),
    };
    let ranges: Vec<(usize, usize)> = (0..n)
        .step_by(BAR_RANGE)
        .map(|start| (start, n.min(start + BAR_RANGE)))
        .collect();
    let partial = ranges
        .par_iter()
        .map(|&(start, end)| {
            let mut sums: Vec<(Option<&str>, BarSums)> = Vec::new();
            let mut slot: PlHashMap<Option<&str>, usize> = PlHashMap::default();
            for row in start..end {
                let key = symbol.get(row);
                let next = sums.len();
                let i = *slot.entry(key).or_insert(next);
                if i == next {
                    sums.push((key, BarSums::new(row)));
                }
                sums[i].1.add(row, price.get(row), volume.get(row))?;
            }
            Ok(sums)
        })
        .collect::<PolarsResult<Vec<_>>>()?;
    // the ranges' sums joined in row order: a symbol's first range comes first
    let mut bars: Vec<BarSums> = Vec::new();
    let mut slot: PlHashMap<Option<&str>, usize> = PlHashMap::default();
    for (key, sums) in partial.into_iter().flatten() {
        match slot.get(&key) {
            Some(&i) => bars[i] = bars[i].then(&sums)?,
            None => {
                slot.insert(key, bars.len());
                bars.push(sums);
            }
        }
    }
    bars_frame(df, &bars, vwap(&bars)?)
}

/// Each symbol's VWAP: its exact notional over its volume, rounded once; none without volume.
fn vwap(bars: &[BarSums]) -> PolarsResult<Vec<Option<i128>>> {
    bars.iter()
        .map(|b| {
            if b.volume == 0 {
                return Ok(None);
            }
            Decimal::wide_div_rounded(b.notional, Decimal::from_raw(b.volume))
                .map(|d| Some(d.raw()))
                .map_err(lake_err)
        })
        .collect()
}

/// The bars' frame: the business date, symbol and open of each symbol's first print, the
/// close of its last, the sums and `vwap`.
fn bars_frame(
    df: &DataFrame,
    bars: &[BarSums],
    vwap: Vec<Option<i128>>,
) -> PolarsResult<DataFrame> {
    use polars::prelude::{IdxCa, IdxSize};
    let rows = |pick: fn(&BarSums) -> usize| -> IdxCa {
        IdxCa::from_vec("".into(), bars.iter().map(|b| pick(b) as IdxSize).collect())
    };
    let (firsts, lasts) = (rows(|b| b.first), rows(|b| b.last));
    let taken = |name: &str, at: &IdxCa, alias: &str| -> PolarsResult<polars::prelude::Column> {
        Ok(df.column(name)?.take(at)?.with_name(alias.into()))
    };
    DataFrame::new(
        bars.len(),
        vec![
            taken("business_date", &firsts, "business_date")?,
            taken("symbol", &firsts, "symbol")?,
            taken("price", &firsts, "open")?,
            decimal_series("high", bars.iter().map(|b| b.high).collect())?.into_column(),
            decimal_series("low", bars.iter().map(|b| b.low).collect())?.into_column(),
            taken("price", &lasts, "close")?,
            decimal_series("vwap", vwap)?.into_column(),
            decimal_series("volume", bars.iter().map(|b| Some(b.volume)).collect())?.into_column(),
            Series::new(
                "trade_count".into(),
                bars.iter().map(|b| b.count).collect::<Vec<_>>(),
            )
            .into_column(),
        ],
    )
}

/// `l3/positions`: the previous date's closing positions carried forward with the date's
/// effective executions applied in rank order (`l2_executions` in rank order, as
/// [`l2_executions`] returns them) by the average-cost method (`lake::positions::Position`),
/// marked to the date's closing price (the previous close for a symbol without prints that
/// date): market value and unrealized P&L.
pub fn positions(
    previous: LazyFrame,
    l2_executions: LazyFrame,
    bars: LazyFrame,
    w: &Window,
) -> LazyFrame {
    let carried = previous.clone().select(
        [
            "account",
            "symbol",
            "net_quantity",
            "avg_cost",
            "realized_pnl",
        ]
        .map(col),
    );
    let fills = l2_executions.select(["account", "symbol", "side", "price", "quantity"].map(col));
    let schema: SchemaRef = Arc::new(Schema::from_iter([
        ("account".into(), DataType::String),
        ("symbol".into(), DataType::String),
        ("net_quantity".into(), DEC),
        ("avg_cost".into(), DEC),
        ("realized_pnl".into(), DEC),
    ]));
    // the carried rows seed the book, the fills (in rank order) move it
    let book = fills.map(
        move |fills| apply_fills(&carried.clone().collect()?, &fills),
        opts(),
        Some(Arc::new(move |_: &Schema| Ok(schema.clone()))),
        Some("average cost"),
    );
    let closes = bars.select([col("symbol"), col("close").alias("_close")]);
    let previous_closes = previous
        .select([col("symbol"), col("close_price").alias("_prev_close")])
        .filter(col("_prev_close").is_not_null())
        .unique_stable(
            Some(polars::prelude::cols(["symbol"])),
            UniqueKeepStrategy::First,
        );
    let marked = left_join(
        left_join(book, closes, &["symbol"]),
        previous_closes,
        &["symbol"],
    )
    .with_columns([or_else("_close", "_prev_close").alias("close_price")])
    .with_columns([
        (col("net_quantity") * col("close_price")).alias("market_value"),
        ((col("close_price") - col("avg_cost")) * col("net_quantity")).alias("unrealized_pnl"),
    ]);
    marked.sort(["account", "symbol"], sorted()).select([
        w.date_lit(),
        col("account"),
        col("symbol"),
        col("net_quantity"),
        col("avg_cost"),
        col("realized_pnl"),
        col("close_price"),
        col("market_value"),
        col("unrealized_pnl"),
    ])
}

/// Texts numbered in the order they first occur.
#[derive(Default)]
struct Interned<'a> {
    number: polars::prelude::PlHashMap<&'a str, u32>,
    texts: Vec<&'a str>,
}

impl<'a> Interned<'a> {
    fn number(&mut self, text: &'a str) -> u32 {
        let next = self.texts.len() as u32;
        let texts = &mut self.texts;
        *self.number.entry(text).or_insert_with(|| {
            texts.push(text);
            next
        })
    }
}

/// The keys of [`apply_fills`]' book: the numbers of an account and a symbol, in one word (a
/// missing one is the empty text, as the book always keyed it).
#[derive(Default)]
struct BookKeys<'a> {
    accounts: Interned<'a>,
    symbols: Interned<'a>,
}

impl<'a> BookKeys<'a> {
    fn key(&mut self, account: Option<&'a str>, symbol: Option<&'a str>) -> u64 {
        (u64::from(self.accounts.number(account.unwrap_or_default())) << 32)
            | u64::from(self.symbols.number(symbol.unwrap_or_default()))
    }

    fn texts(&self, key: u64) -> (&'a str, &'a str) {
        (
            self.accounts.texts[(key >> 32) as usize],
            self.symbols.texts[(key & 0xffff_ffff) as usize],
        )
    }
}

/// Row `i` of a column read in place ([`one_chunk`]).
fn text_at(a: Option<&polars_arrow::array::Utf8ViewArray>, i: usize) -> Option<&str> {
    a.and_then(|a| a.get(i))
}

/// Row `i` of a decimal column's 128-bit integers read in place ([`one_chunk`]).
fn decimal_at(a: Option<&polars_arrow::array::PrimitiveArray<i128>>, i: usize) -> Option<i128> {
    use polars::prelude::StaticArray;
    a.and_then(|a| a.get(i))
}

/// A text column as one chunk ([`one_chunk`]).
fn text_column(df: &DataFrame, name: &str) -> PolarsResult<StringChunked> {
    Ok(df.column(name)?.str()?.rechunk().into_owned())
}

/// A decimal column's 128-bit integers as one chunk ([`one_chunk`]).
fn decimal_column(df: &DataFrame, name: &str) -> PolarsResult<Int128Chunked> {
    Ok(df
        .column(name)?
        .decimal()?
        .physical()
        .rechunk()
        .into_owned())
}

/// The one array of a rechunked column, read in place (a vector of 2M optional 128-bit
/// values is 64 MB to fault in); none for a column without chunks.
fn one_chunk<T: polars::prelude::PolarsDataType>(ca: &ChunkedArray<T>) -> Option<&T::Array> {
    ca.downcast_iter().next()
}

/// The sequential step of [`positions`]: the `carried` rows (account, symbol and the three
/// amounts) seed the book, the `fills` (account, symbol, side, price and quantity, in rank
/// order) move it. One row per (account, symbol) comes out, in no particular order (the
/// plan sorts them).
///
/// Each account and symbol is numbered once and the book is keyed by the two numbers:
/// hashing and comparing the texts at every fill was most of the step. Each key only ever
/// reads its own rows, so the book is split by a hash of the key into [`FILL_SHARDS`]
/// shards, each applied in row order on its own (on every core).
fn apply_fills(carried: &DataFrame, fills: &DataFrame) -> PolarsResult<DataFrame> {
    use polars::prelude::PlHashMap;
    use rayon::prelude::*;
    let c = (
        text_column(carried, "account")?,
        text_column(carried, "symbol")?,
        decimal_column(carried, "net_quantity")?,
        decimal_column(carried, "avg_cost")?,
        decimal_column(carried, "realized_pnl")?,
    );
    let f = (
        text_column(fills, "account")?,
        text_column(fills, "symbol")?,
        text_column(fills, "side")?,
        decimal_column(fills, "price")?,
        decimal_column(fills, "quantity")?,
    );
    let d = |v: Option<i128>| Decimal::from_raw(v.unwrap_or(0));
    let mut keys = BookKeys::default();
    let (account, symbol) = (one_chunk(&c.0), one_chunk(&c.1));
    let (net, avg, realized) = (one_chunk(&c.2), one_chunk(&c.3), one_chunk(&c.4));
    let seeds: Vec<(u64, Position)> = (0..carried.height())
        .map(|i| {
            let position = Position {
                net_quantity: d(decimal_at(net, i)),
                avg_cost: d(decimal_at(avg, i)),
                realized_pnl: d(decimal_at(realized, i)),
            };
            (keys.key(text_at(account, i), text_at(symbol, i)), position)
        })
        .collect();
    let (account, symbol, side) = (one_chunk(&f.0), one_chunk(&f.1), one_chunk(&f.2));
    let (price, quantity) = (one_chunk(&f.3), one_chunk(&f.4));
    let fill_keys: Vec<u64> = (0..fills.height())
        .map(|i| keys.key(text_at(account, i), text_at(symbol, i)))
        .collect();
    let apply_shard = |shard: u8| -> PolarsResult<PlHashMap<u64, Position>> {
        let mut book: PlHashMap<u64, Position> = PlHashMap::default();
        for &(key, position) in seeds.iter().filter(|(k, _)| fill_shard(*k) == shard) {
            book.insert(key, position);
        }
        for (i, &key) in fill_keys.iter().enumerate() {
            if fill_shard(key) != shard {
                continue;
            }
            let side = match text_at(side, i) {
                Some("BUY") => Side::Buy,
                Some("SELL") => Side::Sell,
                other => {
                    return Err(PolarsError::ComputeError(
                        format!("execution with side {other:?}").into(),
                    ));
                }
            };
            book.entry(key)
                .or_default()
                .apply(side, d(decimal_at(price, i)), d(decimal_at(quantity, i)))
                .map_err(lake_err)?;
        }
        Ok(book)
    };
    let books = (0..FILL_SHARDS)
        .into_par_iter()
        .map(apply_shard)
        .collect::<PolarsResult<Vec<_>>>()?;
    let n = books.iter().map(|b| b.len()).sum();
    let mut cols = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut vals = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (key, p) in books.into_iter().flatten() {
        let (a, s) = keys.texts(key);
        cols.0.push(a);
        cols.1.push(s);
        vals.0.push(Some(p.net_quantity.raw()));
        vals.1.push(Some(p.avg_cost.raw()));
        vals.2.push(Some(p.realized_pnl.raw()));
    }
    DataFrame::new(
        n,
        vec![
            Series::new("account".into(), cols.0).into_column(),
            Series::new("symbol".into(), cols.1).into_column(),
            decimal_series("net_quantity", vals.0)?.into_column(),
            decimal_series("avg_cost", vals.1)?.into_column(),
            decimal_series("realized_pnl", vals.2)?.into_column(),
        ],
    )
}

/// How many parts [`apply_fills`] splits the book into: a few per core, so that an uneven
/// split still keeps the cores busy; a constant, so the split is the same on any machine.
const FILL_SHARDS: u8 = 1 << FILL_SHARD_BITS;
const FILL_SHARD_BITS: u32 = 3;

/// The shard of [`apply_fills`] a book key belongs to: the top bits of a multiplicative hash
/// of the key, the same in every run.
fn fill_shard(key: u64) -> u8 {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - FILL_SHARD_BITS)) as u8
}

fn decimal_map_frame(key: &str, map: &BTreeMap<String, Decimal>, value: &str) -> LazyFrame {
    let keys: Vec<String> = map.keys().cloned().collect();
    let values: Vec<Option<i128>> = map.values().map(|d| Some(d.raw())).collect();
    let n = keys.len();
    let frame = decimal_series(value, values).and_then(|v| {
        DataFrame::new(
            n,
            vec![Series::new(key.into(), keys).into_column(), v.into_column()],
        )
    });
    match frame {
        Ok(df) => df.lazy(),
        Err(e) => failed(e),
    }
}

/// `l3/desk_exposure`: the positions' market values (flat and unpriced positions left out, as
/// `lake::reference::desk_exposure`) summed by desk, asset class and currency: gross = sum of
/// absolute values, net = sum. In the reporting currency at the date's FX rate, ranked by
/// reporting gross (rank 1 the largest; ties by desk, class, currency) with each row's share of
/// the date's total, the top `top_n` flagged, and the desk's gross against its limit.
pub fn desk_exposure(
    positions: LazyFrame,
    instruments: LazyFrame,
    accounts: LazyFrame,
    fx: LazyFrame,
    w: &Window,
    p: &JobParams,
) -> LazyFrame {
    let mv = col("market_value");
    let held = positions.filter(
        col("net_quantity")
            .neq(zero_dec())
            .and(mv.clone().is_not_null()),
    );
    let accounts = accounts.select([col("account"), col("desk")]);
    let instruments = instruments.select([col("symbol"), col("asset_class"), col("currency")]);
    let unknown = |c: &str| {
        when(col(c).is_null())
            .then(lit("UNKNOWN"))
            .otherwise(col(c))
            .alias(c)
    };
    let fx = fx_of_date(fx, w);
    let grouped = left_join(
        left_join(held, accounts, &["account"]),
        instruments,
        &["symbol"],
    )
    .with_columns([unknown("desk"), unknown("asset_class"), unknown("currency")])
    .group_by([col("desk"), col("asset_class"), col("currency")])
    .agg([
        when(mv.clone().lt(zero_dec()))
            .then(zero_dec() - mv.clone())
            .otherwise(mv.clone())
            .sum()
            .alias("gross_notional"),
        mv.sum().alias("net_notional"),
    ]);
    let converted = left_join(grouped, fx, &["currency"]).with_columns([
        (col("gross_notional") * col("fx_rate")).alias("reporting_gross_notional"),
        (col("net_notional") * col("fx_rate")).alias("reporting_net_notional"),
    ]);
    let ranked = converted
        .sort_by_exprs(
            [
                col("reporting_gross_notional"),
                col("desk"),
                col("asset_class"),
                col("currency"),
            ],
            SortMultipleOptions::default()
                .with_order_descending_multi([true, false, false, false])
                .with_nulls_last(true)
                .with_maintain_order(true),
        )
        .with_row_index("_row", Some(1))
        .with_columns([
            when(col("reporting_gross_notional").is_not_null())
                .then(col("_row").cast(DataType::Int64))
                .otherwise(lit(polars::prelude::NULL).cast(DataType::Int64))
                .alias("concentration_rank"),
            (col("reporting_gross_notional") / col("reporting_gross_notional").sum())
                .alias("concentration_share"),
        ])
        .with_columns([col("concentration_rank")
            .lt_eq(lit(p.top_n as i64))
            .fill_null(lit(false))
            .alias("top_n")]);
    let desk_totals = ranked
        .clone()
        .group_by([col("desk")])
        .agg([col("reporting_gross_notional").sum().alias("_desk_gross")]);
    let limits = decimal_map_frame("desk", &p.desk_limits, "desk_gross_limit");
    left_join(left_join(ranked, desk_totals, &["desk"]), limits, &["desk"])
        .with_columns([col("_desk_gross")
            .gt(col("desk_gross_limit"))
            .fill_null(lit(false))
            .alias("limit_breach")])
        .sort(["desk", "asset_class", "currency"], sorted())
        .select([
            w.date_lit(),
            col("desk"),
            col("asset_class"),
            col("currency"),
            col("gross_notional"),
            col("net_notional"),
            col("fx_rate"),
            col("reporting_gross_notional"),
            col("reporting_net_notional"),
            col("concentration_rank"),
            col("concentration_share"),
            col("top_n"),
            col("desk_gross_limit"),
            col("limit_breach"),
        ])
}

/// `l3/large_trades`: effective executions whose notional (instrument currency) is at or
/// above their asset class's threshold (`*` for classes without one; none: no large trades).
pub fn large_trades(l2_executions: LazyFrame, p: &JobParams) -> LazyFrame {
    let mut classes = p.large_trade_thresholds.clone();
    let default = classes.remove("*");
    let thresholds = decimal_map_frame("asset_class", &classes, "_threshold");
    let threshold = match default {
        Some(d) => when(col("_threshold").is_null())
            .then(dec_lit(d))
            .otherwise(col("_threshold")),
        None => col("_threshold"),
    };
    // no execution below the lowest threshold is large: those are left out before the join
    // (all 2M but a few, in the benchmark)
    let candidates = match p.large_trade_thresholds.values().min() {
        Some(lowest) => l2_executions.filter(col("notional").gt_eq(dec_lit(*lowest))),
        None => l2_executions,
    };
    left_join(candidates, thresholds, &["asset_class"])
        .filter(col("notional").gt_eq(threshold).fill_null(lit(false)))
        .sort(["exec_id"], sorted())
        .select(
            [
                "business_date",
                "exec_id",
                "account",
                "desk",
                "symbol",
                "side",
                "quantity",
                "price",
                "notional",
            ]
            .map(col),
        )
}

/// `l3/transaction_report`: every effective execution in the shape of a MiFIR RTS 22 report.
/// The firm's account is the buyer of a BUY and the seller of a SELL; on a venue the other
/// side is the venue's MIC (`XOFF` when none was given).
pub fn transaction_report(l2_executions: LazyFrame) -> LazyFrame {
    let venue = when(col("venue").is_null())
        .then(lit("XOFF"))
        .otherwise(col("venue"));
    let buy = col("side").eq(lit("BUY"));
    l2_executions
        .with_columns([
            venue.clone().alias("venue"),
            when(buy.clone())
                .then(col("account"))
                .otherwise(venue.clone())
                .alias("buyer"),
            when(buy)
                .then(venue)
                .otherwise(col("account"))
                .alias("seller"),
        ])
        .sort(["exec_id"], sorted())
        .select([
            col("business_date"),
            col("exec_id"),
            col("ts").alias("trading_datetime"),
            col("isin"),
            col("symbol"),
            col("price"),
            col("quantity"),
            col("currency"),
            col("venue"),
            col("buyer"),
            col("seller"),
            col("legal_entity"),
            col("account"),
            col("trader"),
            col("side"),
            col("notional"),
        ])
}

/// `l3/order_stats`: per trader, the date's NEW orders, modifies and cancels (the date's
/// [`distinct_orders`]) and NEW executions (the date's [`distinct_executions`], the trader's
/// by the execution's `trader`), with the order-to-trade ratio (order messages per
/// execution, none without executions).
pub fn order_stats(orders: LazyFrame, executions: LazyFrame, w: &Window) -> LazyFrame {
    let orders = orders.group_by([col("trader")]).agg([
        count(col("action").eq(lit("NEW"))).alias("orders"),
        count(col("action").eq(lit("MODIFY"))).alias("modifies"),
        count(col("action").eq(lit("CANCEL"))).alias("cancels"),
    ]);
    let execs = executions
        .filter(col("lifecycle").eq(lit("NEW")))
        .group_by([col("trader")])
        .agg([len().cast(DataType::Int64).alias("executions")]);
    let zero = |c: &str| col(c).fill_null(lit(0i64)).alias(c);
    orders
        .join(
            execs,
            [col("trader")],
            [col("trader")],
            JoinArgs::new(JoinType::Full)
                .with_coalesce(polars::prelude::JoinCoalesce::CoalesceColumns),
        )
        .with_columns([
            zero("orders"),
            zero("modifies"),
            zero("cancels"),
            zero("executions"),
        ])
        .with_columns([when(col("executions").gt(lit(0i64)))
            // Polars evaluates both branches: the divisor must never be zero
            .then(
                (col("orders") + col("modifies") + col("cancels")).cast(DEC)
                    / when(col("executions").gt(lit(0i64)))
                        .then(col("executions"))
                        .otherwise(lit(1i64))
                        .cast(DEC),
            )
            .otherwise(lit(polars::prelude::NULL).cast(DEC))
            .alias("order_to_trade")])
        .sort(["trader"], sorted())
        .select([
            w.date_lit(),
            col("trader"),
            col("orders"),
            col("modifies"),
            col("cancels"),
            col("executions"),
            col("order_to_trade"),
        ])
}

/// What [`reconciliation`] compares.
#[derive(Clone)]
pub struct ReconInputs {
    /// The date's `l1/market_trades` counted: [`L1Tally::frame`] of [`l2_market_trades_firsts`].
    pub l1_trades: LazyFrame,
    /// `l1/executions`.
    pub l1_executions: LazyFrame,
    /// The date's [`distinct_executions`].
    pub executions: LazyFrame,
    /// `l1/orders`.
    pub l1_orders: LazyFrame,
    /// The date's `l2/market_trades`.
    pub l2_trades: LazyFrame,
    /// The date's `l2/executions`.
    pub l2_executions: LazyFrame,
    /// The date's `l2/orders`.
    pub l2_orders: LazyFrame,
    /// The date's `l3/daily_bars`.
    pub bars: LazyFrame,
    /// The date's `l3/positions`.
    pub positions: LazyFrame,
    /// The previous date's `l3/positions` (empty for the first date).
    pub previous_positions: LazyFrame,
}

fn recon_row(
    dataset: &str,
    measure: &str,
    l1: Expr,
    l2: Expr,
    l3: Expr,
    ok: Expr,
    detail: Expr,
) -> Vec<Expr> {
    vec![
        lit(dataset.to_string()).alias("dataset"),
        lit(measure.to_string()).alias("measure"),
        l1.cast(DEC).alias("l1"),
        l2.cast(DEC).alias("l2"),
        l3.cast(DEC).alias("l3"),
        when(ok)
            .then(lit("OK"))
            .otherwise(lit("BREAK"))
            .alias("status"),
        detail.cast(DataType::String).alias("detail"),
    ]
}

/// Joins two one-row frames side by side.
trait Cross1 {
    fn cross1(self, other: LazyFrame) -> LazyFrame;
}

impl Cross1 for LazyFrame {
    fn cross1(self, other: LazyFrame) -> LazyFrame {
        let k = || lit(1i32).alias("_k");
        self.with_columns([k()])
            .join(
                other.with_columns([k()]),
                [col("_k")],
                [col("_k")],
                JoinArgs::new(JoinType::Inner),
            )
            .drop(polars::prelude::cols(["_k"]))
    }
}

/// The number of rows and the first 20 values of `id`, comma separated, as one row.
fn count_and_list(lf: LazyFrame, id: &'static str) -> LazyFrame {
    let schema: SchemaRef = Arc::new(Schema::from_iter([
        ("_n".into(), DataType::Int64),
        ("_ids".into(), DataType::String),
    ]));
    lf.select([col(id)]).map(
        move |df| {
            let ids = texts(&df, id)?;
            let listed: Vec<&str> = ids.iter().take(20).flatten().copied().collect();
            DataFrame::new(
                1,
                vec![
                    Series::new("_n".into(), vec![df.height() as i64]).into_column(),
                    Series::new("_ids".into(), vec![listed.join(",")]).into_column(),
                ],
            )
        },
        opts(),
        Some(Arc::new(move |_: &Schema| Ok(schema.clone()))),
        Some("list ids"),
    )
}

/// The `exec_id`s of the corrections (AMEND, CANCEL) among the execution events `rows` whose
/// `ref_exec_id` is no fill's `exec_id`. The few corrections' references are looked up among
/// the fills: a join of the corrections with every fill hashed all 2M fills into a table
/// (Python Polars on the benchmark's executions: 0.15 to 0.27 s, this lookup 0.02 s).
fn orphan_corrections(rows: LazyFrame) -> LazyFrame {
    use polars::prelude::PlHashSet;
    let schema: SchemaRef = Arc::new(Schema::from_iter([("exec_id".into(), DataType::String)]));
    rows.select([col("exec_id"), col("ref_exec_id"), is_fill().alias("_fill")])
        .map(
            move |df| {
                let (ids, refs) = (texts(&df, "exec_id")?, texts(&df, "ref_exec_id")?);
                // three-valued, as the filters `is_fill()` and `is_fill().not()` select
                let fill: Vec<Option<bool>> = df
                    .column("_fill")?
                    .as_materialized_series()
                    .bool()?
                    .iter()
                    .collect();
                let corrections: Vec<usize> = (0..df.height())
                    .filter(|&i| fill[i] == Some(false))
                    .collect();
                let wanted: PlHashSet<&str> = corrections.iter().filter_map(|&i| refs[i]).collect();
                let known: PlHashSet<&str> = (0..df.height())
                    .filter(|&i| fill[i] == Some(true))
                    .filter_map(|i| ids[i].filter(|id| wanted.contains(id)))
                    .collect();
                let orphans: Vec<Option<&str>> = corrections
                    .iter()
                    .filter(|&&i| !refs[i].is_some_and(|r| known.contains(r)))
                    .map(|&i| ids[i])
                    .collect();
                DataFrame::new(
                    orphans.len(),
                    vec![Series::new("exec_id".into(), orphans).into_column()],
                )
            },
            opts(),
            Some(Arc::new(move |_: &Schema| Ok(schema.clone()))),
            Some("orphan corrections"),
        )
}

fn null_dec() -> Expr {
    lit(polars::prelude::NULL).cast(DEC)
}

fn null_text() -> Expr {
    lit(polars::prelude::NULL).cast(DataType::String)
}

/// `l3/reconciliation`: counts and sums through the layers, one row per dataset and measure.
/// `BREAK` rows are what needs a person: L2 and L3 disagreeing, positions that do not move by
/// the date's executions, corrections of executions the date does not hold, executions that
/// reference data could not enrich (ids listed, at most 20).
pub fn reconciliation(i: &ReconInputs, w: &Window) -> LazyFrame {
    let one = |lf: LazyFrame, exprs: Vec<Expr>| lf.select(exprs);
    let trades = i
        .l1_trades
        .clone()
        .select([col("l1"), col("l1_volume")])
        .cross1(
            i.l2_trades
                .clone()
                .select([len().alias("l2"), col("volume").sum().alias("l2_volume")]),
        )
        .cross1(i.bars.clone().select([
            col("trade_count").sum().alias("l3"),
            col("volume").sum().alias("l3_volume"),
        ]));
    let trade_count = one(
        trades.clone(),
        recon_row(
            "market_trades",
            "count",
            col("l1"),
            col("l2"),
            col("l3"),
            col("l2")
                .cast(DataType::Int64)
                .eq(col("l3").fill_null(lit(0i64)).cast(DataType::Int64)),
            null_text(),
        ),
    );
    let trade_volume = one(
        trades,
        recon_row(
            "market_trades",
            "volume",
            col("l1_volume"),
            col("l2_volume"),
            col("l3_volume"),
            col("l2_volume")
                .fill_null(zero_dec())
                .eq(col("l3_volume").fill_null(zero_dec())),
            null_text(),
        ),
    );
    let signed = when(col("side").eq(lit("BUY")))
        .then(col("quantity"))
        .otherwise(zero_dec() - col("quantity"));
    let moved = i
        .positions
        .clone()
        .select([col("net_quantity").sum().alias("_now")])
        .cross1(
            i.previous_positions
                .clone()
                .select([col("net_quantity").sum().alias("_before")]),
        )
        .select([
            (col("_now").fill_null(zero_dec()) - col("_before").fill_null(zero_dec())).alias("l3"),
        ]);
    let execs = i
        .l1_executions
        .clone()
        .filter(w.contains_ts())
        .select([len().alias("l1")])
        .cross1(i.l2_executions.clone().select([
            len().alias("l2"),
            signed.sum().alias("l2_net"),
            col("notional").sum().alias("l2_notional"),
        ]))
        .cross1(moved);
    let exec_count = one(
        execs.clone(),
        recon_row(
            "executions",
            "count",
            col("l1"),
            col("l2"),
            null_dec(),
            lit(true),
            null_text(),
        ),
    );
    let exec_net = one(
        execs.clone(),
        recon_row(
            "executions",
            "net_quantity",
            null_dec(),
            col("l2_net"),
            col("l3"),
            col("l2_net").fill_null(zero_dec()).eq(col("l3")),
            null_text(),
        ),
    );
    let exec_notional = one(
        execs,
        recon_row(
            "executions",
            "notional",
            null_dec(),
            col("l2_notional"),
            null_dec(),
            lit(true),
            null_text(),
        ),
    );
    // corrections whose execution is not among the date's
    let orphans = orphan_corrections(i.executions.clone()).sort(["exec_id"], sorted());
    let listed = |lf: LazyFrame, id: &'static str, dataset: &str, measure: &str, l1: bool| {
        count_and_list(lf, id).select(recon_row(
            dataset,
            measure,
            if l1 { col("_n") } else { null_dec() },
            if l1 { null_dec() } else { col("_n") },
            null_dec(),
            col("_n").eq(lit(0i64)),
            when(col("_n").gt(lit(0i64)))
                .then(col("_ids"))
                .otherwise(null_text()),
        ))
    };
    let orphan_row = listed(orphans, "exec_id", "executions", "orphan_corrections", true);
    let unenriched = i
        .l2_executions
        .clone()
        .filter(
            col("desk")
                .is_null()
                .or(col("isin").is_null())
                .or(col("fx_rate").is_null()),
        )
        .sort(["exec_id"], sorted());
    let unenriched_row = listed(unenriched, "exec_id", "executions", "unenriched", false);
    let order_count = one(
        i.l1_orders
            .clone()
            .filter(w.contains_ts())
            .select([len().alias("l1")])
            .cross1(i.l2_orders.clone().select([len().alias("l2")])),
        recon_row(
            "orders",
            "count",
            col("l1"),
            col("l2"),
            null_dec(),
            lit(true),
            null_text(),
        ),
    );
    concat(
        [
            trade_count,
            trade_volume,
            exec_count,
            exec_net,
            exec_notional,
            orphan_row,
            unenriched_row,
            order_count,
        ],
        UnionArgs::default(),
    )
    .unwrap_or_else(failed)
    .select([
        w.date_lit(),
        col("dataset"),
        col("measure"),
        col("l1"),
        col("l2"),
        col("l3"),
        col("status"),
        col("detail"),
    ])
}

#[cfg(test)]
mod tests {
    use polars::prelude::{DataFrame, IntoColumn, IntoLazy, NamedFrom, Series};

    use super::{CONDITIONS, Firsts, Identity, L1Tally, first_deliveries, repeated_hashes};

    #[test]
    fn daily_bars_over_several_ranges_equal_a_group_by_of_the_prints() {
        use super::{BAR_RANGE, daily_bars, decimal_series, sorted};
        use polars::prelude::{col, len};
        // three ranges and a part: symbols first seen in a later range, nulls in each
        // column (null symbols a bar of their own, as in a group-by)
        let n = 3 * BAR_RANGE + 777;
        let symbol: Vec<Option<String>> = (0..n)
            .map(|i| match i % 101 {
                0 => None,
                k if i < BAR_RANGE => Some(format!("S{}", k % 7)),
                k => Some(format!("S{}", k % 13)),
            })
            .collect();
        let decimal = |name: &str, values| decimal_series(name, values).unwrap();
        let price = (0..n)
            .map(|i| (i % 97 != 5).then_some((i as i128 * 7_919 % 100_000) * 1_000_000 - 3))
            .collect();
        let volume = (0..n)
            .map(|i| (i % 89 != 2).then_some((i as i128 % 1_000 + 1) * 100_000_000))
            .collect();
        let prints = frame(vec![
            Series::new("business_date".into(), vec![20_000i32; n])
                .cast(&polars::prelude::DataType::Date)
                .unwrap(),
            Series::new("symbol".into(), symbol),
            decimal("price", price),
            decimal("volume", volume),
        ]);
        let ours = daily_bars(prints.clone().lazy()).collect().unwrap();
        let expected = prints
            .lazy()
            .group_by_stable([col("symbol")])
            .agg([
                col("business_date").first(),
                col("price").first().alias("open"),
                col("price").max().alias("high"),
                col("price").min().alias("low"),
                col("price").last().alias("close"),
                col("volume").sum().alias("volume"),
                len()
                    .cast(polars::prelude::DataType::Int64)
                    .alias("trade_count"),
            ])
            .sort(["symbol"], sorted())
            .collect()
            .unwrap();
        for name in [
            "business_date",
            "symbol",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "trade_count",
        ] {
            let (a, b) = (ours.column(name).unwrap(), expected.column(name).unwrap());
            assert!(
                a.as_materialized_series()
                    .equals_missing(b.as_materialized_series()),
                "{name}: {a:?} != {b:?}"
            );
        }
        // VWAP: the exact sum of products over the volume, rounded once
        let s0 = ours
            .clone()
            .lazy()
            .filter(col("symbol").eq(polars::prelude::lit("S0")))
            .collect()
            .unwrap();
        let (mut notional, mut total) = (0i128, 0i128);
        for i in 0..n {
            let sym = match i % 101 {
                0 => None,
                k if i < BAR_RANGE => Some(k % 7),
                k => Some(k % 13),
            };
            let p = (i % 97 != 5).then_some((i as i128 * 7_919 % 100_000) * 1_000_000 - 3);
            let v = (i % 89 != 2).then_some((i as i128 % 1_000 + 1) * 100_000_000);
            if let (Some(0), Some(v)) = (sym, v) {
                total += v;
                notional += p.map_or(0, |p| p * v);
            }
        }
        let want = lakehouse_lake::Decimal::wide_div_rounded(
            notional,
            lakehouse_lake::Decimal::from_raw(total),
        )
        .unwrap()
        .raw();
        let got = s0
            .column("vwap")
            .unwrap()
            .decimal()
            .unwrap()
            .physical()
            .get(0);
        assert_eq!(got, Some(want));
    }

    /// Order events in rank order: ids of 1 to 12 bytes that are each other's prefixes
    /// (with zero bytes too), every action, times that repeat and go back.
    fn order_events(n: usize, long_id_at: Option<usize>) -> DataFrame {
        let pool = [
            "O1",
            "O10",
            "O1\0",
            "O1\0\0",
            "O",
            "",
            "O2",
            "O100000000",
            "ZZZZZZZZZZZZ",
        ];
        let actions = ["NEW", "MODIFY", "CANCEL", "FILL"];
        let ids: Vec<String> = (0..n)
            .map(|i| match (i * 7_919) % 401 {
                k if k < pool.len() => pool[k].to_string(),
                k => format!("O{k}"),
            })
            .enumerate()
            .map(|(i, id)| match long_id_at {
                Some(at) if at == i => "O1234567890123".to_string(),
                _ => id,
            })
            .collect();
        frame(vec![
            Series::new("order_id".into(), ids),
            Series::new(
                "action".into(),
                (0..n).map(|i| actions[i * 13 % 7 % 4]).collect::<Vec<_>>(),
            ),
            Series::new(
                "ts".into(),
                (0..n).map(|i| (i as i64 * 37) % 101).collect::<Vec<_>>(),
            )
            .cast(&polars::prelude::DataType::Datetime(
                polars::prelude::TimeUnit::Microseconds,
                Some(polars::prelude::TimeZone::UTC),
            ))
            .unwrap(),
        ])
    }

    #[test]
    fn orders_grouped_by_a_sort_of_short_ids_are_those_of_the_group_by() {
        use super::{order_groups, short_id_groups};
        let events = order_events(5_000, None);
        let by_sort = short_id_groups(&events)
            .unwrap()
            .expect("every id is short");
        let by_group_by = order_groups(&events).unwrap();
        // 401 ids, "O10" twice
        assert_eq!(by_sort.height(), 400);
        assert_eq!(by_sort.schema(), by_group_by.schema());
        assert!(
            by_sort.equals_missing(&by_group_by),
            "{by_sort}\n{by_group_by}"
        );
        // every count and both kinds of pricing row occur
        let sum = |c: &str| {
            by_sort
                .column(c)
                .unwrap()
                .as_materialized_series()
                .sum::<i64>()
                .unwrap()
        };
        assert!(sum("modify_count") > 0 && sum("cancel_count") > 0);
    }

    #[test]
    fn a_long_or_missing_order_id_is_left_to_the_group_by() {
        use super::short_id_groups;
        let long = order_events(100, Some(50));
        assert!(short_id_groups(&long).unwrap().is_none());
        let mut missing = order_events(100, None);
        missing
            .with_column(
                Series::new(
                    "order_id".into(),
                    (0..100)
                        .map(|i| (i != 7).then_some("O1"))
                        .collect::<Vec<_>>(),
                )
                .into_column(),
            )
            .unwrap();
        assert!(short_id_groups(&missing).unwrap().is_none());
    }

    #[test]
    fn short_ids_sort_as_their_texts() {
        use super::short_id_key;
        let mut texts: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"\0\0",
            b"A",
            b"A\0",
            b"A\0B",
            b"AB",
            b"B",
            b"\xff",
            b"O10",
            b"O1",
            b"O9",
            b"ZZZZZZZZZZZZ",
            b"ZZZZZZZZZZZY",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        // reversed: texts with equal keys would stay out of order
        let mut by_key: Vec<&[u8]> = texts.iter().rev().copied().collect();
        texts.sort();
        by_key.sort_by_key(|t| short_id_key(t).unwrap());
        assert_eq!(by_key, texts);
        assert_eq!(short_id_key(b"1234567890123"), None);
    }

    fn firsts(df: DataFrame, who: Identity) -> DataFrame {
        first_deliveries(df.lazy(), 0..10, who, Vec::new())
            .collect()
            .unwrap()
    }

    fn frame(cols: Vec<Series>) -> DataFrame {
        let n = cols[0].len();
        DataFrame::new(n, cols.into_iter().map(IntoColumn::into_column).collect()).unwrap()
    }

    fn rows(df: &DataFrame) -> Vec<String> {
        let c = df.column("row").unwrap().as_materialized_series().clone();
        c.str()
            .unwrap()
            .iter()
            .flatten()
            .map(String::from)
            .collect()
    }

    const BY_ID: Identity = Identity {
        id: Some("trade_id"),
        keys: &["k"],
    };

    #[test]
    fn repeated_hashes_are_those_seen_twice_or_more_in_any_bucket() {
        let top = |b: u64, low: u64| (b << 56) | low;
        let hashes = [
            5,
            top(255, 3),
            5,
            top(7, 9),
            5,
            top(255, 3),
            top(255, 4),
            top(7, 10),
        ];
        let mut got: Vec<u64> = repeated_hashes(hashes.into_iter(), hashes.len())
            .into_iter()
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![5, top(255, 3)]);
        assert!(repeated_hashes(std::iter::empty(), 0).is_empty());
    }

    #[test]
    fn first_deliveries_keeps_each_ids_first_by_rank_in_rank_order() {
        // A comes at ts 5 then (earlier in time, later in the input) at ts 3; B's two
        // deliveries tie on time and are ordered by partition; D ties with B on time and
        // comes first by offset; E is outside the window
        let df = frame(vec![
            Series::new("trade_id".into(), ["A", "B", "A", "C", "B", "D", "E"]),
            Series::new("k".into(), ["x"; 7]),
            Series::new("ts".into(), [5i64, 1, 3, 2, 1, 1, 10]),
            Series::new("_partition".into(), [0i32, 0, 1, 0, 1, 0, 0]),
            Series::new("_offset".into(), [0i64, 1, 0, 2, 0, 0, 3]),
            Series::new("row".into(), ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]),
        ]);
        // in two chunks, as a scan of two files reads it
        let df = df.slice(0, 3).vstack(&df.slice(3, 4)).unwrap();
        assert_eq!(df.column("row").unwrap().n_chunks(), 2);
        let out = firsts(df, BY_ID);
        assert_eq!(rows(&out), ["r5", "r1", "r3", "r2"]);
    }

    #[test]
    fn first_deliveries_identifies_rows_without_an_id_by_their_keys() {
        // r0 and r1 have no id and the same keys (r1 first by time); r2 and r3 share an id
        // whatever their keys; r4 has no id and keys of its own
        let df = frame(vec![
            Series::new("trade_id".into(), [None, None, Some("T"), Some("T"), None]),
            Series::new("k".into(), ["x", "x", "x", "y", "y"]),
            Series::new("ts".into(), [2i64, 1, 0, 3, 4]),
            Series::new("_partition".into(), [0i32; 5]),
            Series::new("_offset".into(), [0i64, 1, 2, 3, 4]),
            Series::new("row".into(), ["r0", "r1", "r2", "r3", "r4"]),
        ]);
        let out = firsts(df, BY_ID);
        assert_eq!(rows(&out), ["r2", "r1", "r4"]);
    }

    #[test]
    fn excluded_codes_are_left_out_and_the_tally_counts_every_delivery_in_the_window() {
        use polars::prelude::{Int128Chunked, IntoSeries};
        // A twice (r2 first by time); B carries the excluded code among others; C's codes
        // are null; D's are empty; E is outside the window
        let volume: Int128Chunked = [1i128, 2, 4, 8, 16, 32].into_iter().map(Some).collect();
        let df = frame(vec![
            Series::new("trade_id".into(), ["A", "B", "A", "C", "D", "E"]),
            Series::new(
                CONDITIONS.into(),
                [Some("@"), Some("@,Z"), Some("@"), None, Some(""), Some("@")],
            ),
            volume
                .with_name("volume".into())
                .into_decimal(38, 0)
                .unwrap()
                .into_series(),
            Series::new("ts".into(), [5i64, 1, 3, 2, 4, 10]),
            Series::new("_partition".into(), [0i32; 6]),
            Series::new("_offset".into(), [0i64, 1, 2, 3, 4, 5]),
            Series::new("row".into(), ["r0", "r1", "r2", "r3", "r4", "r5"]),
        ]);
        let excluded = vec!["Z".to_string()];
        let lazy = first_deliveries(df.clone().lazy(), 0..10, BY_ID, excluded.clone())
            .collect()
            .unwrap();
        assert_eq!(rows(&lazy), ["r3", "r2", "r4"]);
        // found, then gathered a column at a time: the same frame, and the tally of every
        // delivery in the window
        let ids = df
            .select(["trade_id", "ts", "_partition", "_offset"])
            .unwrap();
        let tally = L1Tally::default();
        let mut firsts = Firsts::find(
            df.clone().lazy(),
            ids,
            0..10,
            BY_ID,
            Some(("volume", tally.clone())),
            &excluded,
        )
        .unwrap();
        assert_eq!(firsts.len(), 3);
        let columns = df
            .get_column_names()
            .into_iter()
            .map(|c| firsts.column(c.as_str()).unwrap())
            .collect();
        let gathered = DataFrame::new(3, columns).unwrap();
        assert!(gathered.equals_missing(&lazy));
        let counted = tally.frame().unwrap();
        assert_eq!(counted.column("l1").unwrap().i64().unwrap().get(0), Some(5));
        let sum = counted
            .column("l1_volume")
            .unwrap()
            .decimal()
            .unwrap()
            .physical()
            .get(0);
        assert_eq!(sum, Some(1 + 2 + 4 + 8 + 16));
    }

    #[test]
    fn first_deliveries_compares_every_key_and_nulls_as_equal() {
        let by_keys = Identity {
            id: None,
            keys: &["k1", "k2"],
        };
        let df = frame(vec![
            Series::new("k1".into(), [Some("a"), Some("a"), Some("a"), None, None]),
            Series::new("k2".into(), [None, None, Some("b"), Some("c"), Some("c")]),
            Series::new("ts".into(), [2i64, 1, 0, 7, 6]),
            Series::new("_partition".into(), [0i32; 5]),
            Series::new("_offset".into(), [0i64, 1, 2, 3, 4]),
            Series::new("row".into(), ["r0", "r1", "r2", "r3", "r4"]),
        ]);
        let out = firsts(df, by_keys);
        assert_eq!(rows(&out), ["r2", "r1", "r4"]);
        // nothing repeated: every row, in rank order
        let once = frame(vec![
            Series::new("k1".into(), ["x", "y"]),
            Series::new("k2".into(), ["z", "z"]),
            Series::new("ts".into(), [1i64, 0]),
            Series::new("_partition".into(), [0i32, 0]),
            Series::new("_offset".into(), [0i64, 1]),
            Series::new("row".into(), ["r0", "r1"]),
        ]);
        let out = firsts(once, by_keys);
        assert_eq!(rows(&out), ["r1", "r0"]);
    }
}
