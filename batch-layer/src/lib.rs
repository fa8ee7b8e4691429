//! `lakehouse-batch`: the batch layer.
//!
//! - [`frame`]: record batches <-> Polars data frames (Arrow IPC in memory, no `unsafe`).
//! - [`jobs`]: the pure `LazyFrame -> LazyFrame` jobs, one per L2 and L3 table.

pub mod config;
pub mod frame;
pub mod jobs;
pub mod runner;

pub use config::BatchConfig;
pub use jobs::JobParams;
pub use runner::{RunError, RunReport, Runner};
