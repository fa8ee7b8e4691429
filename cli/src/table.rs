//! `lakehouse table list|history|describe`.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use chrono::DateTime;
use lakehouse_lake::Lake;

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
