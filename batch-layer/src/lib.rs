//! `lakehouse-batch`: the batch layer.
//!
//! - [`frame`]: record batches <-> Polars data frames (Arrow IPC in memory, no `unsafe`).
//!
//! The jobs (pure `LazyFrame -> LazyFrame` functions), the runner, the ledger and the schedule
//! come with the rest of the batch-layer issue.

pub mod frame;
