//! `lakehouse table list|history|describe|optimize|vacuum`.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use chrono::DateTime;
use lakehouse_batch::maintenance;
use lakehouse_lake::{BusinessDate, Lake};

use crate::config::Config;

pub(crate) async fn open(cfg: &Config) -> Result<Lake> {
    Lake::open(&cfg.lake)
        .await
        .with_context(|| format!("cannot open the lake at {}", cfg.lake.root))
}

pub(crate) async fn list(cfg: &Config) -> Result<String> {
    let mut out = String::new();
    let lake = open(cfg).await?;
    writeln!(out, "lake: {}", lake.root())?;
    writeln!(
        out,
        "{:<24} {:<7} {:>8} {:>6}  DESCRIPTION",
        "TABLE", "LAYER", "VERSION", "FILES"
    )?;
    for t in lake.list().await? {
        let version = t.version.map_or_else(|| "-".to_string(), |v| v.to_string());
        writeln!(
            out,
            "{:<24} {:<7} {:>8} {:>6}  {}",
            t.name,
            t.layer.to_string(),
            version,
            t.files,
            t.description
        )?;
    }
    Ok(out)
}

pub(crate) async fn history(cfg: &Config, name: &str, limit: usize) -> Result<String> {
    let mut out = String::new();
    let lake = open(cfg).await?;
    let table = lake.table(name).await?;
    writeln!(
        out,
        "{:>7}  {:<24}  {:<14}  {:<10}  OFFSETS / DETAILS",
        "VERSION", "TIMESTAMP", "OPERATION", "PIPELINE"
    )?;
    for c in table.history(Some(limit)).await? {
        let ts = c
            .timestamp
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        let detail = match &c.offsets {
            Some(ranges) => ranges
                .iter()
                .map(|(tp, r)| format!("{tp}:{}..={}", r.first, r.last))
                .collect::<Vec<_>>()
                .join(" "),
            // the schema and protocol of a CREATE are what `table describe` shows
            None => c
                .details
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "protocol"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        };
        writeln!(
            out,
            "{:>7}  {:<24}  {:<14}  {:<10}  {}",
            c.version,
            ts,
            c.operation,
            c.pipeline.as_deref().unwrap_or("-"),
            detail
        )?;
    }
    Ok(out)
}

pub(crate) async fn describe(
    cfg: &Config,
    name: &str,
    version: Option<u64>,
    as_of: Option<&str>,
) -> Result<String> {
    let mut out = String::new();
    let lake = open(cfg).await?;
    let table = match (version, as_of) {
        (Some(v), _) => lake.table_at_version(name, v).await?,
        (None, Some(ts)) => {
            let at = DateTime::parse_from_rfc3339(ts)
                .with_context(|| format!("--as-of {ts:?} is not an RFC 3339 timestamp"))?;
            lake.table_at_timestamp(name, at.to_utc()).await?
        }
        (None, None) => lake.table(name).await?,
    };
    writeln!(out, "table:      {name}")?;
    writeln!(out, "url:        {}", lake.table_url(name)?)?;
    writeln!(
        out,
        "version:    {}",
        table
            .version()
            .map_or_else(|| "-".into(), |v| v.to_string())
    )?;
    writeln!(out, "files:      {}", table.file_uris()?.len())?;
    writeln!(out, "partitions: {}", table.partition_columns()?.join(", "))?;
    writeln!(out, "properties:")?;
    for (k, v) in table.properties()? {
        writeln!(out, "  {k} = {v}")?;
    }
    writeln!(out, "columns:")?;
    for f in table.schema()?.fields() {
        writeln!(
            out,
            "  {:<22} {:<32} {}",
            f.name(),
            f.data_type().to_string(),
            if f.is_nullable() { "null" } else { "not null" }
        )?;
    }
    Ok(out)
}

/// `table optimize`: compaction of the partitions before `before` (default: today, UTC) and a
/// checkpoint, of one table or (none named) of every L1 table.
pub(crate) async fn optimize(
    cfg: &Config,
    name: Option<&str>,
    before: Option<&str>,
    target_size: Option<u64>,
) -> Result<String> {
    let lake = open(cfg).await?;
    let before: BusinessDate = match before {
        Some(d) => d
            .parse()
            .with_context(|| format!("--before {d:?} is not a date YYYY-MM-DD"))?,
        None => BusinessDate(chrono::Utc::now().date_naive()),
    };
    let mut policy = cfg.batch.maintenance.clone();
    if let Some(t) = target_size {
        policy.target_file_size = t;
    }
    policy
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let done = maintenance::optimize(&lake, name, before, &policy).await?;
    Ok(summary(&done, &format!("partitions before {before}")))
}

/// `table vacuum`: deletes files older than the retention that no kept version needs.
pub(crate) async fn vacuum(
    cfg: &Config,
    name: Option<&str>,
    retention: Option<&str>,
    dry_run: bool,
) -> Result<String> {
    let lake = open(cfg).await?;
    let retention = retention
        .map(|r| {
            humantime::parse_duration(r)
                .with_context(|| format!("--retention {r:?} is not a duration like 30days"))
        })
        .transpose()?;
    let done = maintenance::vacuum(&lake, name, retention, dry_run, &cfg.batch.maintenance).await?;
    Ok(summary(
        &done,
        if dry_run {
            "dry run: nothing deleted"
        } else {
            ""
        },
    ))
}

fn summary(done: &[lakehouse_batch::maintenance::TableMaintenance], note: &str) -> String {
    let mut out = String::new();
    for t in done {
        let _ = writeln!(out, "{t}");
    }
    if done.is_empty() {
        out.push_str("no table to maintain\n");
    }
    if !note.is_empty() {
        let _ = writeln!(out, "({note})");
    }
    out
}
