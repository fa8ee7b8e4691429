//! `lakehouse-batch`: the batch layer.
//!
//! - [`frame`]: record batches <-> Polars data frames (Arrow IPC in memory, no `unsafe`).
//! - [`jobs`]: the pure `LazyFrame -> LazyFrame` jobs, one per L2 and L3 table.
//! - [`runner`]: one business date through the chain, published in the run ledger.
//! - [`schedule`] and [`cron`]: `lakehouse batch schedule` (catch-up, retries).
//! - [`maintenance`]: compaction, checkpoints and vacuum.
//! - [`memory`]: the allocator's freed memory held for reuse while runs are in progress.
//! - [`metrics`]: the scheduler's Prometheus metrics.

pub mod config;
pub mod cron;
pub mod frame;
pub mod jobs;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod runner;
pub mod schedule;

pub use config::BatchConfig;
pub use jobs::JobParams;
pub use runner::{RunError, RunReport, Runner};
