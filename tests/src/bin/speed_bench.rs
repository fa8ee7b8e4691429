//! Speed-layer benchmark.
//!
//! ```sh
//! cargo run --release -p lakehouse-tests --bin speed-bench -- [EVENTS]
//! ```
//!
//! Window-core throughput on one thread, 10k keys, events in time order with bounded
//! disorder, through `lakehouse_speed::window::Operator` with the exact bar aggregate:
//! tumbling 1 m, sliding 5 m by 1 m, and session windows (gap 30 s). A benchmark, not a test:
//! figures vary with the machine.

use std::time::Instant;

use anyhow::Result;
use lakehouse_lake::Decimal;
use lakehouse_simulator::rng::Rng;
use lakehouse_speed::bars::{Bar, Print};
use lakehouse_speed::window::{Accumulation, Operator, WatermarkSpec, WindowKind, WindowSpec};

const KEYS: usize = 10_000;
const MINUTE: i64 = 60_000_000;

fn core(kind: WindowKind, name: &str, events: &[(usize, i64, Print)], keys: &[String]) {
    let spec = WindowSpec {
        kind,
        allowed_lateness: 5_000_000,
        early_every: Some(1_000_000),
        accumulation: Accumulation::Accumulating,
    };
    let mut op: Operator<String, Bar> = Operator::new(
        spec,
        WatermarkSpec {
            out_of_orderness: 2_000_000,
            idle_timeout: 10_000_000,
        },
    );
    let mut panes = Vec::new();
    let mut fired = 0usize;
    let started = Instant::now();
    for (i, (k, now, p)) in events.iter().enumerate() {
        op.process((i % 4) as u32, &keys[*k], p.ts, p, *now, &mut panes);
        if i % 1024 == 0 {
            op.on_processing_time(*now, &mut panes);
        }
        fired += panes.len();
        panes.clear();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "core {name:<22} {:>12.0} events/s  ({} events, {fired} panes, {} windows open, {secs:.2}s)",
        events.len() as f64 / secs,
        events.len(),
        op.open_windows()
    );
}

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5_000_000);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("SYM{i:05}")).collect();
    let mut rng = Rng::new(1, 0);
    // 100k events per second of event time, up to 1 s out of order; processing time follows
    let events: Vec<(usize, i64, Print)> = (0..n)
        .map(|i| {
            let t = 1_767_600_000_000_000 + i as i64 * 10;
            let ts = t - rng.below(1_000_000) as i64;
            (
                rng.below(KEYS as u64) as usize,
                t,
                Print {
                    ts,
                    partition: (i % 4) as i32,
                    offset: i as i64,
                    price: Decimal::from_raw(10_000_000_000 + rng.below(100_000_000) as i128),
                    volume: Decimal::from_raw(100_000_000 * (1 + rng.below(100) as i128)),
                },
            )
        })
        .collect();
    println!("speed-bench: {n} events, {KEYS} keys, one thread");
    core(
        WindowKind::Tumbling { size: MINUTE },
        "tumbling 1m",
        &events,
        &keys,
    );
    core(
        WindowKind::Sliding {
            size: 5 * MINUTE,
            slide: MINUTE,
        },
        "sliding 5m/1m",
        &events,
        &keys,
    );
    core(
        WindowKind::Session { gap: 30_000_000 },
        "session gap 30s",
        &events,
        &keys,
    );
    Ok(())
}
