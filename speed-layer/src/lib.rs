//! `lakehouse-speed`: the speed layer.
//!
//! - [`window`]: the pure window core (tumbling, sliding and session windows; watermarks;
//!   allowed lateness; early, on-time and late triggers; discarding, accumulating and
//!   retracting panes), for live panes.
//! - [`bars`]: the exact bar aggregate.
//! - [`views`]: the exact intraday views (bars, positions, order statistics, large trades,
//!   last prices) over every consumed event the published batch boundary does not cover.

pub mod bars;
pub mod views;
pub mod window;
