//! Event-time watermarks: one per input partition (the largest event time seen minus the
//! bounded out-of-orderness), combined as the minimum over the partitions that are not idle.
//! The combined watermark never decreases.

use serde::{Deserialize, Serialize};

/// How watermarks are derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkSpec {
    /// Bounded out-of-orderness, µs: a partition's watermark trails its largest event time by
    /// this much.
    pub out_of_orderness: i64,
    /// A partition without events for this long (processing time, µs) stops holding the
    /// watermark back until its next event.
    pub idle_timeout: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Part {
    partition: u32,
    /// Largest event time seen (i64::MIN before the first event).
    max_ts: i64,
    /// Processing time of the last event (or of registration).
    last_seen: i64,
    idle: bool,
}

/// The watermark state of one operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    spec: WatermarkSpec,
    parts: Vec<Part>,
    current: i64,
}

impl Watermarks {
    /// No partition known yet; the watermark is at the beginning of time.
    pub fn new(spec: WatermarkSpec) -> Watermarks {
        Watermarks {
            spec,
            parts: Vec::new(),
            current: i64::MIN,
        }
    }

    /// The combined watermark, µs (i64::MIN until one is known).
    pub fn current(&self) -> i64 {
        self.current
    }

    fn part(&mut self, partition: u32, now: i64) -> &mut Part {
        let i = match self.parts.iter().position(|p| p.partition == partition) {
            Some(i) => i,
            None => {
                self.parts.push(Part {
                    partition,
                    max_ts: i64::MIN,
                    last_seen: now,
                    idle: false,
                });
                self.parts.len() - 1
            }
        };
        &mut self.parts[i]
    }

    /// Makes `partition` known before its first event, so it holds the watermark back until it
    /// delivers or goes idle (a partition assigned to an empty topic must not be skipped).
    pub fn register(&mut self, partition: u32, now: i64) {
        self.part(partition, now);
    }

    /// Forgets a partition (revoked): it no longer holds the watermark back.
    pub fn remove(&mut self, partition: u32) -> bool {
        self.parts.retain(|p| p.partition != partition);
        self.recompute()
    }

    /// An event of `partition` at event time `ts`, seen at processing time `now`. Returns true
    /// if the combined watermark advanced.
    pub fn observe(&mut self, partition: u32, ts: i64, now: i64) -> bool {
        let p = self.part(partition, now);
        p.last_seen = now;
        let was_idle = std::mem::replace(&mut p.idle, false);
        if ts > p.max_ts {
            p.max_ts = ts;
        } else if !was_idle {
            return false;
        }
        self.recompute()
    }

    /// Processing time moved on: partitions silent for `idle_timeout` go idle. Returns true if
    /// the combined watermark advanced.
    pub fn tick(&mut self, now: i64) -> bool {
        let mut changed = false;
        for p in &mut self.parts {
            if !p.idle && now.saturating_sub(p.last_seen) >= self.spec.idle_timeout {
                p.idle = true;
                changed = true;
            }
        }
        changed && self.recompute()
    }

    fn recompute(&mut self) -> bool {
        let wm = |p: &Part| p.max_ts.saturating_sub(self.spec.out_of_orderness);
        let active = self.parts.iter().filter(|p| !p.idle).map(wm).min();
        // with every partition idle, none holds the others back
        let candidate = active.or_else(|| self.parts.iter().map(wm).max());
        match candidate {
            Some(c) if c > self.current => {
                self.current = c;
                true
            }
            _ => false,
        }
    }

    /// Moves the watermark to `to` (end of input: `i64::MAX` closes every window).
    pub fn advance_to(&mut self, to: i64) -> bool {
        if to > self.current {
            self.current = to;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: WatermarkSpec = WatermarkSpec {
        out_of_orderness: 10,
        idle_timeout: 1_000,
    };

    #[test]
    fn minimum_over_active_partitions_and_never_back() {
        let mut w = Watermarks::new(SPEC);
        w.register(0, 0);
        w.register(1, 0);
        assert!(!w.observe(0, 100, 1));
        assert_eq!(w.current(), i64::MIN, "partition 1 has not spoken");
        assert!(w.observe(1, 50, 2));
        assert_eq!(w.current(), 40);
        assert!(!w.observe(1, 45, 3), "older events do not move it");
        assert!(w.observe(1, 200, 500));
        assert_eq!(w.current(), 90);
        // partition 0 goes idle: 1 alone decides
        assert!(w.tick(1_004));
        assert_eq!(w.current(), 190);
        // 0 comes back with an old event: the watermark never decreases
        assert!(!w.observe(0, 101, 1_005));
        assert_eq!(w.current(), 190);
        // both idle: nothing holds back, but the largest partition watermark is already it
        assert!(!w.tick(3_000));
        // 1 speaks again while 0 stays idle: 1 alone decides
        assert!(w.observe(1, 500, 3_001));
        assert_eq!(w.current(), 490);
        // 0 wakes with an old event: no step back
        assert!(!w.observe(0, 102, 3_002));
        assert_eq!(w.current(), 490);
        assert!(!w.remove(0));
        assert!(w.advance_to(i64::MAX));
    }
}
