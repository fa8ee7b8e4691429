//! `lakehouse ingest`: runs the ingest pipeline until SIGINT/SIGTERM.

use anyhow::{Context, Result};
use clap::Args;
use lakehouse_ingest::Metrics;
use lakehouse_lake::Lake;
use tracing::info;

use crate::config::Config;

/// Flags of `lakehouse ingest` that override `[ingest]`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct IngestArgs {
    /// Resume at the log start when a partition's committed offset is below it (data deleted
    /// by retention before it was ingested) instead of stopping with an error.
    #[arg(long)]
    accept_offset_gaps: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

/// A future that resolves when the process is asked to stop (SIGINT or SIGTERM). The handlers
/// are installed here, at once, so a signal that arrives during start-up is not lost.
pub(crate) fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// One stop shared by the tasks of a process: set by SIGINT/SIGTERM (handlers installed at
/// once, see [`stop_signal`]) or by [`Stop::stop`].
#[derive(Clone)]
pub(crate) struct Stop(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl Stop {
    /// A stop that SIGINT or SIGTERM sets; `why` is logged when the signal arrives.
    pub(crate) fn on_signal(why: &'static str) -> Result<Stop> {
        let signal = stop_signal()?;
        let stop = Stop(std::sync::Arc::new(tokio::sync::watch::channel(false).0));
        let on_signal = stop.clone();
        tokio::spawn(async move {
            signal.await;
            info!("{why}");
            on_signal.stop();
        });
        Ok(stop)
    }

    /// Stops every task waiting on [`Stop::stopped`].
    pub(crate) fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Has the stop been given?
    pub(crate) fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the stop is given.
    pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

pub(crate) async fn run(cfg: Config, args: IngestArgs) -> Result<String> {
    let stop = stop_signal()?;
    let mut icfg = cfg.ingest.clone();
    icfg.accept_offset_gaps |= args.accept_offset_gaps;
    if args.metrics_listen.is_some() {
        icfg.metrics_listen = args.metrics_listen;
    }
    let lake = Lake::open(&cfg.lake).await?;
    let metrics = Metrics::new();
    if let Some(addr) = &icfg.metrics_listen {
        let m = metrics.clone();
        crate::metrics_endpoint(addr, move || m.render()).await?;
    }
    info!(lake = %lake.root(), brokers = %cfg.kafka.brokers, "ingest starting");
    let summary = lakehouse_ingest::run(icfg, &cfg.kafka.brokers, lake, metrics, stop)
        .await
        .context("ingest failed")?;
    Ok(format!(
        "ingest stopped: {} messages consumed in {} batches\n",
        summary.messages, summary.batches
    ))
}
