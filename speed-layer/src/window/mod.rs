//! The window core: keyed event-time windows (tumbling, sliding, session) with watermarks,
//! allowed lateness, early / on-time / late triggers and three accumulation modes. Pure: no
//! I/O, no clock; processing time is passed in, so every behaviour is reproducible in tests.
//!
//! Rules, in one place:
//! - **Watermark** ([`watermark`]): per partition, the largest event time seen minus the
//!   out-of-orderness; combined as the minimum over partitions that are not idle; never
//!   decreases.
//! - **Late**: an element of a tumbling or sliding window is late (refused, to be stored in
//!   `late_events`) when the *first* window it belongs to ended at least `allowed_lateness`
//!   before the watermark, so an element is counted in all of its windows or in none. A
//!   session element is late when its own time is more than `allowed_lateness` behind the
//!   watermark, so it can never need a session that was already dropped.
//! - **Triggers**: EARLY panes every `early_every` of processing time for windows with new
//!   elements whose end the watermark has not passed; one ON_TIME pane when the watermark
//!   passes the end (a window whose first element arrives after that gets LATE panes only);
//!   one LATE pane for every element that arrives after the ON_TIME pane but within the
//!   lateness. The state is dropped when the watermark passes end + lateness; the last pane a
//!   window emits is marked final (with lateness 0 the ON_TIME pane; otherwise a closing LATE
//!   pane at that moment).
//! - **Accumulation**: discarding panes carry the elements since the previous pane;
//!   accumulating panes everything so far; accumulating-and-retracting panes first retract the
//!   pane they supersede (same index as the new pane, `retraction = true`), then carry
//!   everything so far. A session that grows or merges is a new window; in the retracting mode
//!   the panes of the windows it replaces are retracted.

mod operator;
pub mod watermark;

use serde::{Deserialize, Serialize};

pub use operator::{Admit, Operator};
pub use watermark::{WatermarkSpec, Watermarks};

/// A mergeable aggregate of the elements of one window.
pub trait Aggregate: Clone + Default {
    /// The element type.
    type In: ?Sized;
    /// Adds one element.
    fn add(&mut self, value: &Self::In);
    /// Adds everything of `other` (sessions merge their states).
    fn merge(&mut self, other: &Self);
}

/// A window: `[start, end)` in event time, µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

/// How elements are grouped into windows (sizes in µs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows aligned to the epoch.
    Tumbling {
        /// Width.
        size: i64,
    },
    /// Fixed windows of `size` starting every `slide` (which divides `size`).
    Sliding {
        /// Width.
        size: i64,
        /// Distance between starts.
        slide: i64,
    },
    /// Per key, elements closer than `gap` join one window `[first, last + gap)`.
    Session {
        /// Inactivity gap.
        gap: i64,
    },
}

/// What each pane carries (config text: `discarding`, `accumulating`, `retracting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accumulation {
    /// The elements since the previous pane.
    Discarding,
    /// Everything so far.
    Accumulating,
    /// A retraction of the previous pane, then everything so far.
    Retracting,
}

/// When a pane fired relative to the watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Timing {
    /// Before the watermark passed the window end (processing-time trigger).
    Early,
    /// When the watermark passed the window end.
    OnTime,
    /// After that, for an element within the allowed lateness (or the closing pane).
    Late,
}

impl Timing {
    /// `EARLY`, `ON_TIME` or `LATE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Timing::Early => "EARLY",
            Timing::OnTime => "ON_TIME",
            Timing::Late => "LATE",
        }
    }
}

/// A window operator's configuration (durations in µs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Window shape.
    pub kind: WindowKind,
    /// How long after the watermark passed its end a window still takes elements.
    pub allowed_lateness: i64,
    /// Processing-time period of EARLY panes (none: no early panes).
    pub early_every: Option<i64>,
    /// What panes carry.
    pub accumulation: Accumulation,
}

impl WindowSpec {
    /// Checks the sizes; the error says which.
    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            WindowKind::Tumbling { size } if size <= 0 => {
                return Err(format!("tumbling size must be positive, got {size}µs"));
            }
            WindowKind::Sliding { size, slide } if slide <= 0 || size <= 0 || size % slide != 0 => {
                return Err(format!(
                    "sliding windows need a positive slide that divides the size, got size {size}µs slide {slide}µs"
                ));
            }
            WindowKind::Session { gap } if gap <= 0 => {
                return Err(format!("session gap must be positive, got {gap}µs"));
            }
            _ => {}
        }
        if self.allowed_lateness < 0 {
            return Err("allowed lateness cannot be negative".into());
        }
        if self.early_every.is_some_and(|e| e <= 0) {
            return Err("the early trigger period must be positive".into());
        }
        Ok(())
    }
}

/// One firing of one window of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pane<K, A> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: Window,
    /// When it fired.
    pub timing: Timing,
    /// 0, 1, ... per window; a retraction has the index of the pane that replaces it.
    pub index: u32,
    /// No further pane follows for this window.
    pub is_final: bool,
    /// This pane withdraws an earlier one (accumulating-and-retracting mode).
    pub retraction: bool,
    /// The aggregate.
    pub value: A,
}
