//! Crash points for fault tests: `LAKEHOUSE_FAILPOINTS=name=N[,name=N]` aborts the process
//! (as SIGKILL would: no destructor, no flush) the N-th time `name` is reached.
//!
//! Points: `ingest.before-commit` (batch built, nothing written), `ingest.after-dead-letters`
//! (dead letters committed, data not yet), `ingest.after-commit` (all of a batch committed).
//! A process without the variable pays one relaxed atomic load per point.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

static ARMED: LazyLock<Option<Mutex<HashMap<String, AtomicU64>>>> = LazyLock::new(|| {
    let spec = std::env::var("LAKEHOUSE_FAILPOINTS").ok()?;
    let points = spec
        .split(',')
        .filter_map(|p| {
            let (name, n) = p.split_once('=')?;
            Some((
                name.trim().to_string(),
                AtomicU64::new(n.trim().parse().ok()?),
            ))
        })
        .collect();
    Some(Mutex::new(points))
});

/// Aborts the process if `name` is armed and this is its N-th hit.
pub fn hit(name: &str) {
    let Some(points) = ARMED.as_ref() else {
        return;
    };
    let points = points.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(left) = points.get(name)
        && left.fetch_sub(1, Ordering::SeqCst) == 1
    {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
