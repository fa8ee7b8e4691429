//! `lakehouse serve`: the gRPC API, with the speed view followed in this process (read-only:
//! the `lakehouse speed` process writes the checkpoints) and the batch view from the lake.

use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use lakehouse_lake::Lake;
use lakehouse_serving::state::Served;
use lakehouse_speed::SpeedHandle;
use lakehouse_speed::views::Views;
use tracing::info;

use crate::config::Config;

pub(crate) async fn run(cfg: Config) -> Result<String> {
    cfg.serving
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let calendar = cfg.calendar.calendar()?;
    let lake = Lake::open(&cfg.lake).await?;
    let mut handle = SpeedHandle::new(calendar);
    handle.views = Arc::new(RwLock::new(
        Views::new(calendar).with_excluded_conditions(cfg.batch.excluded_conditions.clone()),
    ));
    // one stop signal for both halves
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let signal = crate::ingest::stop_signal()?;
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        signal.await;
        let _ = on_signal.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut speed_cfg = cfg.speed.clone();
    speed_cfg.follower = true;
    let (brokers, speed_lake, speed_handle, speed_stop) = (
        cfg.kafka.brokers.clone(),
        lake.clone(),
        handle.clone(),
        stopped(stop_rx.clone()),
    );
    let mut speed = tokio::spawn(async move {
        lakehouse_speed::run(
            speed_cfg,
            &brokers,
            speed_lake,
            calendar,
            speed_handle,
            speed_stop,
        )
        .await
    });
    let served = Served::new(lake.clone(), calendar, handle);
    info!(lake = %lake.root(), brokers = %cfg.kafka.brokers, "serving starting");
    let serving = lakehouse_serving::serve(
        &cfg.serving,
        served,
        cfg.batch.large_trade_thresholds.clone(),
        |addr| eprintln!("lakehouse serve: listening on {addr}"),
        stopped(stop_rx),
    );
    tokio::pin!(serving);
    // whichever half ends first stops the other: a speed view that failed (a missing topic,
    // input lost to retention) must not leave the server answering from a view that no
    // longer moves
    let (result, speed) = tokio::select! {
        r = &mut serving => {
            let _ = stop_tx.send(true);
            (r, (&mut speed).await)
        }
        s = &mut speed => {
            if !*stop_tx.borrow() {
                tracing::error!("the speed view stopped; stopping the server");
            }
            let _ = stop_tx.send(true);
            (serving.await, s)
        }
    };
    speed
        .context("the speed view task failed")?
        .context("the speed view failed")?;
    result.context("serving failed")?;
    Ok("serving stopped\n".into())
}
