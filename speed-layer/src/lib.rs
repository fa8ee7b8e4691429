//! `lakehouse-speed`: the speed layer.
//!
//! - [`window`]: the pure window core (tumbling, sliding and session windows; watermarks;
//!   allowed lateness; early, on-time and late triggers; discarding, accumulating and
//!   retracting panes), for live panes.
//! - [`bars`]: the exact bar aggregate.
//! - [`views`]: the exact intraday views (bars, positions, order statistics, large trades,
//!   last prices) over every consumed event the published batch boundary does not cover.
//! - [`pipeline`]: raw messages -> views, live windows, late events, fired panes (no I/O);
//!   [`runner`]: the process around it (Kafka, checkpoints, `l1/late_events`).

pub use config::{SpeedConfig, SpeedTopic};
pub use runner::{SpeedError, SpeedHandle, Summary, run};

pub mod bars;
pub mod config;
pub mod pipeline;
pub mod runner;
pub mod views;
pub mod window;
