//! Simulator benchmark: events generated per second without Kafka, and messages produced per
//! second to a real broker, printed side by side by one command.
//!
//! ```sh
//! cargo run --release -p lakehouse-tests --bin simulate-bench -- [EVENTS]
//! ```
//!
//! (1) generation: the market, delivery faults and JSON encoding on one thread, no I/O;
//! (2) the same plus the ground-truth Parquet file; (3) `lakehouse_simulator::run` producing
//! to a tansu broker (idempotent, acks=all) as fast as possible. Needs tansu from
//! `scripts/setup.sh`. A benchmark, not a test: figures vary with the machine.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Result;
use lakehouse_simulator::{Outputs, SimConfig, Simulation};

fn main() -> Result<()> {
    let events: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2_000_000);
    let cfg = SimConfig {
        seed: 1,
        events: Some(events),
        as_fast_as_possible: true,
        ..SimConfig::default()
    };
    println!("simulate-bench: {events} events, seed 1, default market and fault fractions");

    // (1) generation only, one core
    let started = Instant::now();
    let mut sim = Simulation::new(&cfg)?;
    let mut batch = Vec::new();
    let (mut messages, mut bytes) = (0u64, 0u64);
    loop {
        let more = sim.next(&mut batch);
        messages += batch.len() as u64;
        bytes += batch.iter().map(|m| m.payload.len() as u64).sum::<u64>();
        batch.clear();
        if !more {
            break;
        }
    }
    let gen_secs = started.elapsed().as_secs_f64();
    let generated = sim.events() as f64 / gen_secs;
    println!(
        "generate + encode (no I/O):     {generated:>10.0} events/s  ({messages} messages, {:.1} MB, {gen_secs:.2}s)",
        bytes as f64 / 1e6
    );

    // (2) with the truth file
    let dir = tempfile::tempdir()?;
    let never = AtomicBool::new(false);
    let outputs = Outputs {
        brokers: None,
        truth: Some(dir.path().join("truth.parquet")),
        refdata: Some(dir.path().join("refdata")),
    };
    let s = lakehouse_simulator::run(&cfg, &outputs, &never, &mut |_| {})?;
    let with_truth = s.events as f64 / s.elapsed.as_secs_f64();
    println!(
        "generate + truth file:          {with_truth:>10.0} events/s  ({:.2}s)",
        s.elapsed.as_secs_f64()
    );

    // (3) produced to the broker
    let broker = lakehouse_tests::kafka()?;
    let outputs = Outputs {
        brokers: Some(broker.addr()),
        truth: None,
        refdata: None,
    };
    let s = lakehouse_simulator::run(&cfg, &outputs, &never, &mut |_| {})?;
    let produced = s.total() as f64 / s.elapsed.as_secs_f64();
    println!(
        "produced to tansu (acked):      {produced:>10.0} messages/s ({} acknowledged, {:.2}s)",
        s.acknowledged,
        s.elapsed.as_secs_f64()
    );
    println!(
        "ratio produced/generated:       {:>10.2}",
        produced / (messages as f64 / gen_secs)
    );
    Ok(())
}
