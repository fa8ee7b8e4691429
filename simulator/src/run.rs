//! The simulator process: generates, paces, produces to Kafka, writes the ground truth and
//! the reference CSVs, and reports progress.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lakehouse_lake::{BusinessDate, EventTime};

use crate::kafka::{KafkaOutputError, Output, ensure_topics};
use crate::truth::{Truth, TruthError};
use crate::{ConfigError, Delivery, SimConfig, Simulation, Stream};

/// Where a run's output goes.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// Kafka bootstrap servers; `None` generates without producing (a dry run).
    pub brokers: Option<String>,
    /// The ground-truth Parquet file.
    pub truth: Option<PathBuf>,
    /// Directory for `instruments.csv`, `accounts.csv` and `fx_rates.csv`.
    pub refdata: Option<PathBuf>,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Messages sent per topic (duplicates and malformed included).
    pub messages: BTreeMap<String, u64>,
    /// Logical events generated.
    pub events: u64,
    /// Duplicate deliveries, malformed messages, late and out-of-order deliveries.
    pub duplicates: u64,
    /// See `duplicates`.
    pub malformed: u64,
    /// See `duplicates`.
    pub late: u64,
    /// See `duplicates`.
    pub out_of_order: u64,
    /// Earliest and latest event time.
    pub first_ts: Option<EventTime>,
    /// See `first_ts`.
    pub last_ts: Option<EventTime>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Messages the broker acknowledged (0 for a dry run).
    pub acknowledged: u64,
    /// Rows of the truth file, when one was written.
    pub truth_rows: Option<u64>,
}

impl Summary {
    /// Messages over every topic.
    pub fn total(&self) -> u64 {
        self.messages.values().sum()
    }

    /// Messages per wall-clock second.
    pub fn rate(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Where a long run is.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Messages sent so far.
    pub messages: u64,
    /// Logical events generated so far.
    pub events: u64,
    /// The simulated clock.
    pub now: EventTime,
    /// Wall-clock time since the start.
    pub elapsed: Duration,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kafka.
    #[error(transparent)]
    Kafka(#[from] KafkaOutputError),
    /// The truth file.
    #[error(transparent)]
    Truth(#[from] TruthError),
    /// The reference CSVs.
    #[error("cannot write the reference data to {dir}")]
    Refdata {
        /// The directory.
        dir: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn write_refdata(
    sim: &Simulation,
    cfg: &SimConfig,
    dir: &std::path::Path,
    first: EventTime,
    last: EventTime,
) -> Result<(), SimError> {
    // a business date in any time zone is within a day of the UTC date
    let from = BusinessDate(first.utc_date()).pred();
    let to = BusinessDate(last.utc_date()).succ();
    let fx = sim.universe().fx_rates(cfg.seed, from, to);
    sim.universe()
        .write_csvs(dir, &fx)
        .map_err(|source| SimError::Refdata {
            dir: dir.display().to_string(),
            source,
        })
}

/// Runs `cfg` until its `duration` or `events` limit, or until `stop` is set; then delivers
/// what is still delayed, waits for the broker's acknowledgements, and closes the truth file.
/// `progress` is called about every two seconds.
pub fn run(
    cfg: &SimConfig,
    outputs: &Outputs,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, SimError> {
    let mut sim = Simulation::new(cfg)?;
    let start = sim.now();
    if let Some(dir) = &outputs.refdata {
        write_refdata(&sim, cfg, dir, start, start)?;
    }
    let topics: Vec<&str> = Stream::ALL.iter().map(|s| s.topic(&cfg.topics)).collect();
    let output = match &outputs.brokers {
        Some(brokers) => {
            ensure_topics(brokers, &cfg.kafka_properties, &topics, cfg.partitions)?;
            Some(Output::connect(brokers, &cfg.kafka_properties)?)
        }
        None => None,
    };
    let mut truth = outputs.truth.as_deref().map(Truth::create).transpose()?;
    let mut summary = Summary::default();
    let mut counts = [0u64; 3];
    let began = Instant::now();
    let mut last_report = began;
    let mut sent: u64 = 0;
    let mut batch = Vec::new();
    let mut more = true;
    while more {
        if stop.load(Ordering::Relaxed) {
            sim.stop();
        }
        more = sim.next(&mut batch);
        for m in batch.drain(..) {
            let topic = m.stream.topic(&cfg.topics);
            if let Some(t) = &mut truth {
                t.record(sent, topic, &m)?;
            }
            if !cfg.as_fast_as_possible {
                let due = began + Duration::from_secs_f64(sent as f64 / cfg.rate);
                let now = Instant::now();
                if due > now + Duration::from_millis(1) {
                    std::thread::sleep(due - now);
                }
            }
            if let Some(o) = &output {
                o.send(topic, &m.key, &m.payload)?;
            }
            sent += 1;
            counts[m.stream as usize] += 1;
            summary.duplicates += u64::from(m.duplicate);
            summary.malformed += u64::from(m.malformed.is_some());
            summary.late += u64::from(m.delivery == Delivery::Late && !m.duplicate);
            summary.out_of_order += u64::from(m.delivery == Delivery::OutOfOrder && !m.duplicate);
            for g in &m.events {
                let ts = g.event.ts();
                summary.first_ts = Some(summary.first_ts.map_or(ts, |f| f.min(ts)));
                summary.last_ts = Some(summary.last_ts.map_or(ts, |l| l.max(ts)));
            }
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            progress(&Progress {
                messages: sent,
                events: sim.events(),
                now: sim.now(),
                elapsed: began.elapsed(),
            });
        }
    }
    if let Some(o) = &output {
        summary.acknowledged = o.finish(Duration::from_secs(120))?;
    }
    summary.elapsed = began.elapsed();
    summary.events = sim.events();
    summary.truth_rows = truth.map(Truth::finish).transpose()?;
    if let Some(dir) = &outputs.refdata {
        write_refdata(
            &sim,
            cfg,
            dir,
            summary.first_ts.unwrap_or(start).min(start),
            summary.last_ts.unwrap_or(start),
        )?;
    }
    for s in Stream::ALL {
        summary
            .messages
            .insert(s.topic(&cfg.topics).to_string(), counts[s as usize]);
    }
    Ok(summary)
}
