//! Table maintenance: compaction of closed L1 dates, Delta checkpoints, vacuum.
//!
//! Run by the scheduler after each published date and by `lakehouse table optimize|vacuum`.

use std::time::Duration;

use lakehouse_lake::catalog::{self, Layer, WriteMode};
use lakehouse_lake::{BusinessDate, ErrorKind, Lake, Table};
use serde::{Deserialize, Serialize};

/// The `[batch.maintenance]` settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Run maintenance after the scheduler publishes dates.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Compacted files aim at this many bytes.
    #[serde(default = "default_target")]
    pub target_file_size: u64,
    /// L2, L3 and reference tables: files replaced longer ago than this are deleted (time
    /// travel reaches back this far).
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// L1 and system (append-only) tables: the same, never below seven years (2557 days).
    #[serde(default = "default_l1_retention", with = "humantime_serde")]
    pub l1_retention: Duration,
}

fn yes() -> bool {
    true
}
fn default_target() -> u64 {
    128 << 20
}
fn default_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_l1_retention() -> Duration {
    catalog::APPEND_ONLY_RETENTION
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            enabled: true,
            target_file_size: default_target(),
            retention: default_retention(),
            l1_retention: default_l1_retention(),
        }
    }
}

impl MaintenanceConfig {
    /// Refuses settings the lake would refuse later.
    pub fn validate(&self) -> Result<(), String> {
        if self.l1_retention < catalog::APPEND_ONLY_RETENTION {
            return Err(format!(
                "batch.maintenance.l1-retention {} is below the seven years (2557 days) L1 is \
                 kept for",
                humantime::format_duration(self.l1_retention)
            ));
        }
        if self.target_file_size < 1 << 20 {
            return Err("batch.maintenance.target-file-size is below 1 MiB".into());
        }
        Ok(())
    }

    /// The retention of `table` under this policy.
    pub fn retention_of(&self, def: &catalog::TableDef) -> Duration {
        match def.mode {
            WriteMode::AppendOnly => self.l1_retention,
            WriteMode::ReplacePartition | WriteMode::Replace => self.retention,
        }
    }
}

/// What one table's maintenance did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableMaintenance {
    /// The table.
    pub table: String,
    /// Small files compacted into fewer (removed, added).
    pub compacted: Option<(u64, u64)>,
    /// A checkpoint was written.
    pub checkpoint: bool,
    /// Files vacuum deleted (or would delete, on a dry run).
    pub vacuumed: Option<usize>,
}

impl std::fmt::Display for TableMaintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<24}", self.table)?;
        match self.compacted {
            Some((0, _)) => write!(f, " nothing to compact")?,
            Some((removed, added)) => write!(f, " compacted {removed} files into {added}")?,
            None => {}
        }
        if self.checkpoint {
            write!(f, " checkpoint")?;
        }
        if let Some(n) = self.vacuumed {
            write!(f, " vacuumed {n} files")?;
        }
        Ok(())
    }
}

/// The date partition column of a table that compaction closes by date, if any.
fn date_partition(def: &catalog::TableDef) -> Option<&'static str> {
    match def.partition_by {
        [c] if c.ends_with("date") => Some(c),
        _ => None,
    }
}

/// The catalog tables that exist in the lake, with their definitions (maintenance creates
/// none).
async fn existing(
    lake: &Lake,
    only: Option<&str>,
) -> lakehouse_lake::Result<Vec<(catalog::TableDef, Table)>> {
    let defs: Vec<_> = match only {
        Some(name) => vec![catalog::table(name).ok_or_else(|| {
            lakehouse_lake::Error::Config(format!(
                "{name:?} is not a lake table (see `lakehouse table list`)"
            ))
        })?],
        None => catalog::tables(),
    };
    let mut out = Vec::new();
    for def in defs {
        match lake.table(def.name).await {
            Ok(t) if t.version().is_some() => out.push((def, t)),
            // a table named on the command line must exist; of all, the missing are skipped
            Ok(_) if only.is_some() => {
                return Err(lakehouse_lake::Error::Config(format!(
                    "table {} does not exist in the lake yet",
                    def.name
                )));
            }
            Err(e) if e.kind() == ErrorKind::NotFound && only.is_none() => {}
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Compacts the partitions before `closed_before` of `only` (every date-partitioned table of
/// L1 when `None`) and writes a checkpoint of each table touched.
pub async fn optimize(
    lake: &Lake,
    only: Option<&str>,
    closed_before: BusinessDate,
    cfg: &MaintenanceConfig,
) -> lakehouse_lake::Result<Vec<TableMaintenance>> {
    let mut out = Vec::new();
    for (def, mut table) in existing(lake, only).await? {
        let mut done = TableMaintenance {
            table: def.name.to_string(),
            ..Default::default()
        };
        // the schedule compacts L1 only (L2/L3 are written once per date, in one file);
        // `table optimize <l2/l3 table>` compacts it too
        let wanted = only.is_some() || def.layer == Layer::L1;
        if let (true, Some(column)) = (wanted, date_partition(&def)) {
            let c = table
                .compact(column, closed_before, cfg.target_file_size)
                .await?;
            done.compacted = Some((c.files_removed, c.files_added));
        }
        table.checkpoint().await?;
        done.checkpoint = true;
        tracing::debug!(%done, "optimized");
        out.push(done);
    }
    Ok(out)
}

/// Vacuums `only` (every table when `None`) at its retention (`retention` overrides it for
/// one table; an append-only table refuses one below seven years).
pub async fn vacuum(
    lake: &Lake,
    only: Option<&str>,
    retention: Option<Duration>,
    dry_run: bool,
    cfg: &MaintenanceConfig,
) -> lakehouse_lake::Result<Vec<TableMaintenance>> {
    let mut out = Vec::new();
    for (def, mut table) in existing(lake, only).await? {
        let keep = retention.unwrap_or_else(|| cfg.retention_of(&def));
        let v = table.vacuum(keep, dry_run).await?;
        let done = TableMaintenance {
            table: def.name.to_string(),
            vacuumed: Some(v.files.len()),
            ..Default::default()
        };
        tracing::debug!(%done, dry_run, "vacuumed");
        out.push(done);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_retention_is_never_below_seven_years() {
        let cfg = MaintenanceConfig::default();
        assert!(cfg.validate().is_ok());
        let short = MaintenanceConfig {
            l1_retention: Duration::from_secs(365 * 86_400),
            ..cfg.clone()
        };
        assert!(short.validate().unwrap_err().contains("seven years"));
        let l1 = catalog::table(catalog::names::EXECUTIONS).unwrap();
        let l3 = catalog::table(catalog::names::POSITIONS).unwrap();
        assert_eq!(cfg.retention_of(&l1), catalog::APPEND_ONLY_RETENTION);
        assert_eq!(cfg.retention_of(&l3), Duration::from_secs(30 * 86_400));
        assert_eq!(date_partition(&l1), Some("event_date"));
    }
}
