//! `lakehouse refdata load`: reference CSVs -> `l1/ref_*` tables.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use std::fmt::Write as _;

use anyhow::{Context, Result, bail, ensure};
use lakehouse_lake::catalog::{self, names};
use lakehouse_lake::events::{self, Account, FxRate, Instrument};
use lakehouse_lake::{BusinessDate, Lake};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Config;

fn read_csv<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize().enumerate() {
        // line numbers count the header as line 1
        rows.push(row.with_context(|| format!("{}: line {}", path.display(), i + 2))?);
    }
    ensure!(!rows.is_empty(), "{} has no rows", path.display());
    Ok(rows)
}

fn unique<'a>(path: &Path, what: &str, keys: impl Iterator<Item = String> + 'a) -> Result<()> {
    let mut seen = HashSet::new();
    for k in keys {
        if !seen.insert(k.clone()) {
            bail!("{}: duplicate {what} {k}", path.display());
        }
    }
    Ok(())
}

fn source(path: &Path) -> HashMap<String, Value> {
    HashMap::from([(
        "lakehouse.source".to_string(),
        Value::String(path.display().to_string()),
    )])
}

/// Parses the file when one was given, keeping its path for the commit metadata.
fn parse_opt<T>(
    path: Option<PathBuf>,
    parse: fn(&Path) -> Result<Vec<T>>,
) -> Result<Option<(PathBuf, Vec<T>)>> {
    path.map(|p| parse(&p).map(|rows| (p, rows))).transpose()
}

fn parse_instruments(p: &Path) -> Result<Vec<Instrument>> {
    let rows: Vec<Instrument> = read_csv(p)?;
    unique(p, "symbol", rows.iter().map(|r| r.symbol.clone()))?;
    for r in &rows {
        ensure!(
            r.tick_size.is_positive() && r.lot_size.is_positive(),
            "{}: {} needs a positive tick_size and lot_size",
            p.display(),
            r.symbol
        );
    }
    Ok(rows)
}

fn parse_accounts(p: &Path) -> Result<Vec<Account>> {
    let rows: Vec<Account> = read_csv(p)?;
    unique(p, "account", rows.iter().map(|r| r.account.clone()))?;
    Ok(rows)
}

fn parse_fx(p: &Path) -> Result<Vec<FxRate>> {
    let rows: Vec<FxRate> = read_csv(p)?;
    unique(
        p,
        "(date, currency)",
        rows.iter().map(|r| format!("({}, {})", r.date, r.currency)),
    )?;
    for r in &rows {
        ensure!(
            r.rate_to_reporting.is_positive(),
            "{}: rate for {} on {} must be positive",
            p.display(),
            r.currency,
            r.date
        );
    }
    Ok(rows)
}

async fn table(lake: &Lake, name: &str) -> Result<lakehouse_lake::Table> {
    let def = catalog::table(name).context("table missing from the catalog")?;
    Ok(lake.create_table(&def).await?)
}

pub(crate) async fn load(
    cfg: &Config,
    instruments: Option<PathBuf>,
    accounts: Option<PathBuf>,
    fx: Option<PathBuf>,
) -> Result<String> {
    let mut out = String::new();
    ensure!(
        instruments.is_some() || accounts.is_some() || fx.is_some(),
        "nothing to load: give --instruments, --accounts and/or --fx"
    );
    // parse and validate everything before writing anything
    let instruments = parse_opt(instruments, parse_instruments)?;
    let accounts = parse_opt(accounts, parse_accounts)?;
    let fx = parse_opt(fx, parse_fx)?;

    let lake = crate::table::open(cfg).await?;
    if let Some((p, rows)) = instruments {
        let mut t = table(&lake, names::REF_INSTRUMENTS).await?;
        let v = t
            .replace_all(vec![events::instruments_batch(&rows)?], source(&p))
            .await?;
        writeln!(
            out,
            "{}: {} instruments (version {v})",
            names::REF_INSTRUMENTS,
            rows.len()
        )?;
    }
    if let Some((p, rows)) = accounts {
        let mut t = table(&lake, names::REF_ACCOUNTS).await?;
        let v = t
            .replace_all(vec![events::accounts_batch(&rows)?], source(&p))
            .await?;
        writeln!(
            out,
            "{}: {} accounts (version {v})",
            names::REF_ACCOUNTS,
            rows.len()
        )?;
    }
    if let Some((p, rows)) = fx {
        let mut t = table(&lake, names::REF_FX_RATES).await?;
        let dates: BTreeSet<BusinessDate> = rows.iter().map(|r| r.date).collect();
        let dates: Vec<BusinessDate> = dates.into_iter().collect();
        let v = t
            .replace_dates(
                "date",
                &dates,
                vec![events::fx_rates_batch(&rows)?],
                source(&p),
            )
            .await?;
        writeln!(
            out,
            "{}: {} rates for {} dates (version {v})",
            names::REF_FX_RATES,
            rows.len(),
            dates.len()
        )?;
    }
    Ok(out)
}
