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
use crate::ingest::Stop;

/// The speed layer's handle, its views leaving out `[batch] excluded-conditions` as the batch
/// view does.
pub(crate) fn speed_handle(
    cfg: &Config,
    calendar: lakehouse_lake::BusinessCalendar,
) -> SpeedHandle {
    let mut handle = SpeedHandle::new(calendar);
    handle.views = Arc::new(RwLock::new(
        Views::new(calendar).with_excluded_conditions(cfg.batch.excluded_conditions.clone()),
    ));
    handle
}

pub(crate) async fn run(cfg: Config) -> Result<String> {
    cfg.serving
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let calendar = cfg.calendar.calendar()?;
    let lake = Lake::open(&cfg.lake).await?;
    let handle = speed_handle(&cfg, calendar);
    // one stop for both halves
    let stop = Stop::on_signal("stopping the server and its speed view")?;
    let mut speed_cfg = cfg.speed.clone();
    speed_cfg.follower = true;
    let (brokers, speed_lake, speed_handle, speed_stop) = (
        cfg.kafka.brokers.clone(),
        lake.clone(),
        handle.clone(),
        stop.stopped(),
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
    if let Some(addr) = &cfg.serving.metrics_listen {
        let requests = served.requests.clone();
        crate::metrics_endpoint(addr, move || {
            lakehouse_lake::metrics::join(&[&requests.render()])
        })
        .await?;
    }
    info!(lake = %lake.root(), brokers = %cfg.kafka.brokers, "serving starting");
    let serving = lakehouse_serving::serve(
        &cfg.serving,
        served,
        cfg.batch.large_trade_thresholds.clone(),
        |addr| eprintln!("lakehouse serve: listening on {addr}"),
        stop.stopped(),
    );
    tokio::pin!(serving);
    // whichever half ends first stops the other: a speed view that failed (a missing topic,
    // input lost to retention) must not leave the server answering from a view that no
    // longer moves
    let (result, speed) = tokio::select! {
        r = &mut serving => {
            stop.stop();
            (r, (&mut speed).await)
        }
        s = &mut speed => {
            if !stop.is_stopped() {
                tracing::error!("the speed view stopped; stopping the server");
            }
            stop.stop();
            (serving.await, s)
        }
    };
    speed
        .context("the speed view task failed")?
        .context("the speed view failed")?;
    result.context("serving failed")?;
    Ok("serving stopped\n".into())
}
