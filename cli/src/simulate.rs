//! `lakehouse simulate`: the seeded market, producing to Kafka, with ground truth and
//! reference data.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use lakehouse_simulator::{Encoding, Outputs, SimConfig};
use tracing::info;

use crate::config::Config;

/// Flags of `lakehouse simulate` that override `[simulate]`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct SimulateArgs {
    /// Random seed: one seed and one configuration give the same events.
    #[arg(long)]
    seed: Option<u64>,
    /// Messages per second (paced).
    #[arg(long, value_name = "EV_PER_S", conflicts_with = "as_fast_as_possible")]
    rate: Option<f64>,
    /// Produce as fast as possible (event times are the same as when paced).
    #[arg(long)]
    as_fast_as_possible: bool,
    /// Stop after this much simulated trading time, e.g. 10s, 5m, 6h30m.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, conflicts_with = "events")]
    duration: Option<Duration>,
    /// Stop once this many logical events were generated (at the end of that market step, so
    /// a match's executions and print stay together).
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Write the ground-truth Parquet file here.
    #[arg(long, value_name = "PATH")]
    truth: Option<PathBuf>,
    /// Write instruments.csv, accounts.csv and fx_rates.csv into this directory.
    #[arg(long, value_name = "DIR")]
    refdata: Option<PathBuf>,
    /// Encoding of orders and executions: json or protobuf.
    #[arg(long, value_name = "FORMAT")]
    format: Option<Encoding>,
    /// Encoding of market trades: json, protobuf or finnhub.
    #[arg(long, value_name = "FORMAT")]
    tape_format: Option<Encoding>,
    /// Generate and write the truth and reference data without producing to Kafka.
    #[arg(long)]
    dry_run: bool,
}

impl SimulateArgs {
    fn apply(&self, mut cfg: SimConfig) -> SimConfig {
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(r) = self.rate {
            cfg.rate = r;
            cfg.as_fast_as_possible = false;
        }
        cfg.as_fast_as_possible |= self.as_fast_as_possible;
        if let Some(d) = self.duration {
            cfg.duration = Some(d);
            cfg.events = None;
        }
        if let Some(n) = self.events {
            cfg.events = Some(n);
            cfg.duration = None;
        }
        if let Some(f) = self.format {
            cfg.format = f;
        }
        if let Some(f) = self.tape_format {
            cfg.tape_format = Some(f);
        }
        cfg
    }
}

pub(crate) async fn run(cfg: Config, args: SimulateArgs) -> Result<String> {
    let stop_signal = crate::ingest::stop_signal()?;
    let sim = args.apply(cfg.simulate.clone());
    sim.validate()
        .context("invalid simulation settings (flags and [simulate])")?;
    let outputs = Outputs {
        brokers: (!args.dry_run).then(|| cfg.kafka.brokers.clone()),
        truth: args.truth.clone(),
        refdata: args.refdata.clone(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        stop_signal.await;
        info!("stopping: delivering what is still delayed");
        flag.store(true, Ordering::Relaxed);
    });
    info!(
        seed = sim.seed,
        brokers = outputs.brokers.as_deref().unwrap_or("none (dry run)"),
        rate = if sim.as_fast_as_possible {
            "as fast as possible".to_string()
        } else {
            format!("{}/s", sim.rate)
        },
        "simulation starting"
    );
    let sim2 = sim.clone();
    let summary = tokio::task::spawn_blocking(move || {
        lakehouse_simulator::run(&sim2, &outputs, &stop, &mut |p| {
            info!(
                messages = p.messages,
                events = p.events,
                clock = %p.now,
                rate = format!("{:.0}/s", p.messages as f64 / p.elapsed.as_secs_f64().max(1e-9)),
                "simulating"
            );
        })
    })
    .await
    .context("the simulation panicked")?
    .context("simulation failed")?;

    let mut out = String::new();
    writeln!(
        out,
        "simulated {} events in {} messages in {:.1}s ({:.0} messages/s), seed {}",
        summary.events,
        summary.total(),
        summary.elapsed.as_secs_f64(),
        summary.rate(),
        sim.seed
    )?;
    for (topic, n) in &summary.messages {
        writeln!(out, "  {topic}: {n} messages")?;
    }
    writeln!(
        out,
        "  faults: {} duplicates, {} malformed, {} late, {} out of order",
        summary.duplicates, summary.malformed, summary.late, summary.out_of_order
    )?;
    if let (Some(a), Some(b)) = (summary.first_ts, summary.last_ts) {
        writeln!(out, "  event time: {a} .. {b}")?;
    }
    if args.dry_run {
        writeln!(out, "  dry run: nothing produced")?;
    } else {
        writeln!(
            out,
            "  acknowledged by {}: {}",
            cfg.kafka.brokers, summary.acknowledged
        )?;
    }
    if let (Some(p), Some(rows)) = (&args.truth, summary.truth_rows) {
        writeln!(out, "  ground truth: {} ({rows} rows)", p.display())?;
    }
    if let Some(d) = &args.refdata {
        writeln!(
            out,
            "  reference data: {}/{{instruments,accounts,fx_rates}}.csv",
            d.display()
        )?;
    }
    Ok(out)
}
