//! `lakehouse speed`: the speed layer until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use lakehouse_lake::Lake;
use lakehouse_speed::SpeedHandle;
use tracing::info;

use crate::config::Config;

/// Flags of `lakehouse speed`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct SpeedArgs {
    /// On exit, write the views (bars, positions, order statistics) as JSON to this file.
    #[arg(long, value_name = "PATH")]
    dump_views: Option<PathBuf>,
}

pub(crate) async fn run(cfg: Config, args: SpeedArgs) -> Result<String> {
    let stop = crate::ingest::stop_signal()?;
    let calendar = cfg.calendar.calendar()?;
    let lake = Lake::open(&cfg.lake).await?;
    let handle = SpeedHandle::new(calendar);
    info!(lake = %lake.root(), brokers = %cfg.kafka.brokers, "speed layer starting");
    let summary = lakehouse_speed::run(
        cfg.speed.clone(),
        &cfg.kafka.brokers,
        lake,
        calendar,
        handle.clone(),
        stop,
    )
    .await
    .context("speed layer failed")?;
    if let Some(path) = &args.dump_views {
        let reference = handle
            .reference
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut views = handle.views.write().unwrap_or_else(|e| e.into_inner());
        let mut json = views.to_json();
        let (exposure, unpriced) = views.exposure(&reference);
        json["desk_exposure"] = exposure
            .iter()
            .map(|e| {
                serde_json::json!([
                    e.desk,
                    e.asset_class,
                    e.currency,
                    e.gross_notional.to_string(),
                    e.net_notional.to_string()
                ])
            })
            .collect();
        json["unpriced_positions"] = unpriced.len().into();
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(format!(
        "speed layer stopped: {} messages processed, {} replayed, {} late events, {} checkpoints\n",
        summary.messages, summary.replayed, summary.late, summary.checkpoints
    ))
}
