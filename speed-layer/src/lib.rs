//! `lakehouse-speed`: the speed layer.
//!
//! - [`window`]: the pure window core (tumbling, sliding and session windows; watermarks;
//!   allowed lateness; early, on-time and late triggers; discarding, accumulating and
//!   retracting panes).

pub mod bars;
pub mod window;
