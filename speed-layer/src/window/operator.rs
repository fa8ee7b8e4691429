//! The keyed window operator.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{
    Accumulation, Aggregate, Pane, Timing, WatermarkSpec, Watermarks, Window, WindowKind,
    WindowSpec,
};

/// What happened to an element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Added to every window it belongs to.
    Counted,
    /// Beyond the allowed lateness: in no window (the caller stores it as a late event).
    Late,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State<A> {
    /// Discarding: the elements since the last pane; otherwise all of them.
    acc: A,
    /// The last value emitted (retracting mode).
    last: Option<A>,
    panes: u32,
    /// Elements since the last pane.
    dirty: bool,
    /// The ON_TIME moment has passed (the watermark reached the end).
    on_time: bool,
    /// The last pane emitted was final.
    closed: bool,
}

/// The keyed window operator: add elements, advance processing time, collect panes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize + Eq + Hash + Ord, A: Serialize",
    deserialize = "K: Deserialize<'de> + Eq + Hash + Ord, A: Deserialize<'de>"
))]
pub struct Operator<K, A> {
    spec: WindowSpec,
    watermarks: Watermarks,
    /// Tumbling and sliding windows: per key, its open windows.
    fixed: FxHashMap<K, Vec<(Window, State<A>)>>,
    /// Session windows: per key, start -> (end, state); disjoint.
    sessions: FxHashMap<K, BTreeMap<i64, (i64, State<A>)>>,
    /// (deadline, key, window start): the end for the ON_TIME pane, then end + lateness for
    /// dropping. Entries whose window changed since are skipped when they come due.
    timers: BTreeSet<(i64, K, i64)>,
    /// Windows with elements since their last pane (for the early trigger).
    dirty: Vec<(K, Window)>,
    next_early: Option<i64>,
    counted: u64,
    late: u64,
}

fn emit<K: Clone, A: Aggregate>(
    mode: Accumulation,
    key: &K,
    window: Window,
    s: &mut State<A>,
    timing: Timing,
    is_final: bool,
    out: &mut Vec<Pane<K, A>>,
) {
    let index = s.panes;
    s.panes += 1;
    s.dirty = false;
    s.closed = is_final;
    let pane = |value, retraction, is_final| Pane {
        key: key.clone(),
        window,
        timing,
        index,
        is_final,
        retraction,
        value,
    };
    match mode {
        Accumulation::Discarding => out.push(pane(std::mem::take(&mut s.acc), false, is_final)),
        Accumulation::Accumulating => out.push(pane(s.acc.clone(), false, is_final)),
        Accumulation::Retracting => {
            if let Some(prev) = s.last.take() {
                out.push(pane(prev, true, false));
            }
            let v = s.acc.clone();
            s.last = Some(v.clone());
            out.push(pane(v, false, is_final));
        }
    }
}

impl<K, A> Operator<K, A>
where
    K: Clone + Eq + Hash + Ord,
    A: Aggregate,
{
    /// A new operator (`spec` must be valid: see [`WindowSpec::validate`]).
    pub fn new(spec: WindowSpec, watermark: WatermarkSpec) -> Operator<K, A> {
        debug_assert!(spec.validate().is_ok(), "{:?}", spec.validate());
        Operator {
            spec,
            watermarks: Watermarks::new(watermark),
            fixed: FxHashMap::default(),
            sessions: FxHashMap::default(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            next_early: None,
            counted: 0,
            late: 0,
        }
    }

    /// The configuration.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// The combined watermark, µs (`i64::MIN` until known).
    pub fn watermark(&self) -> i64 {
        self.watermarks.current()
    }

    /// The watermark state (to register or remove partitions).
    pub fn watermarks_mut(&mut self) -> &mut Watermarks {
        &mut self.watermarks
    }

    /// Elements counted in windows so far.
    pub fn counted(&self) -> u64 {
        self.counted
    }

    /// Elements refused as late so far.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Windows held in state.
    pub fn open_windows(&self) -> usize {
        self.fixed.values().map(Vec::len).sum::<usize>()
            + self.sessions.values().map(BTreeMap::len).sum::<usize>()
    }

    /// The current state of every window of `key` (for queries): in discarding mode only what
    /// has not been emitted yet.
    pub fn windows_of(&self, key: &K) -> Vec<(Window, &A)> {
        let mut out: Vec<(Window, &A)> = match self.spec.kind {
            WindowKind::Session { .. } => self
                .sessions
                .get(key)
                .into_iter()
                .flatten()
                .map(|(&start, (end, s))| (Window { start, end: *end }, &s.acc))
                .collect(),
            _ => self
                .fixed
                .get(key)
                .into_iter()
                .flatten()
                .map(|(w, s)| (*w, &s.acc))
                .collect(),
        };
        out.sort_by_key(|(w, _)| *w);
        out
    }

    /// Adds an element of `partition` with event time `ts`, seen at processing time `now`;
    /// panes it causes (LATE panes, and the ON_TIME ones of a watermark it advances) are
    /// appended to `out`.
    pub fn process(
        &mut self,
        partition: u32,
        key: &K,
        ts: i64,
        value: &A::In,
        now: i64,
        out: &mut Vec<Pane<K, A>>,
    ) -> Admit {
        let wm = self.watermarks.current();
        let admit = match self.spec.kind {
            WindowKind::Tumbling { size } => self.add_fixed(key, ts, value, wm, size, size, out),
            WindowKind::Sliding { size, slide } => {
                self.add_fixed(key, ts, value, wm, size, slide, out)
            }
            WindowKind::Session { gap } => self.add_session(key, ts, value, wm, gap, out),
        };
        match admit {
            Admit::Counted => self.counted += 1,
            Admit::Late => self.late += 1,
        }
        if self.watermarks.observe(partition, ts, now) {
            self.fire_due(out);
        }
        admit
    }

    /// Processing time moved to `now`: idle partitions stop holding the watermark back, and
    /// the early trigger fires when its period has passed.
    pub fn on_processing_time(&mut self, now: i64, out: &mut Vec<Pane<K, A>>) {
        if self.watermarks.tick(now) {
            self.fire_due(out);
        }
        let Some(every) = self.spec.early_every else {
            return;
        };
        let due = *self.next_early.get_or_insert(now.saturating_add(every));
        if now < due {
            return;
        }
        self.next_early = Some(now.saturating_add(every));
        let mode = self.spec.accumulation;
        for (key, window) in std::mem::take(&mut self.dirty) {
            if let Some(s) = self.state_mut(&key, window)
                && s.dirty
                && !s.on_time
            {
                emit(mode, &key, window, s, Timing::Early, false, out);
            }
        }
    }

    /// End of input: the watermark jumps to the end of time, so every window fires and closes.
    pub fn finish(&mut self, out: &mut Vec<Pane<K, A>>) {
        if self.watermarks.advance_to(i64::MAX) {
            self.fire_due(out);
        }
    }

    fn state_mut(&mut self, key: &K, window: Window) -> Option<&mut State<A>> {
        match self.spec.kind {
            WindowKind::Session { .. } => self
                .sessions
                .get_mut(key)?
                .get_mut(&window.start)
                .filter(|(end, _)| *end == window.end)
                .map(|(_, s)| s),
            _ => self
                .fixed
                .get_mut(key)?
                .iter_mut()
                .find(|(w, _)| *w == window)
                .map(|(_, s)| s),
        }
    }

    /// After an element landed in `window`: a window the watermark already passed fires a
    /// LATE pane at once; otherwise it waits for its triggers.
    fn after_add(&mut self, key: &K, window: Window, wm: i64, out: &mut Vec<Pane<K, A>>) {
        let mode = self.spec.accumulation;
        let early = self.spec.early_every.is_some();
        let lateness = self.spec.allowed_lateness;
        let Some(s) = self.state_mut(key, window) else {
            return;
        };
        if window.end <= wm {
            let first = !s.on_time;
            s.on_time = true;
            // a window is dropped once the watermark passes end + lateness, and elements
            // reach only windows before that: this pane is never the last but by that rule
            emit(mode, key, window, s, Timing::Late, false, out);
            if first {
                self.timers.insert((
                    window.end.saturating_add(lateness),
                    key.clone(),
                    window.start,
                ));
            }
        } else if early && !s.dirty {
            s.dirty = true;
            self.dirty.push((key.clone(), window));
        } else {
            s.dirty = true;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_fixed(
        &mut self,
        key: &K,
        ts: i64,
        value: &A::In,
        wm: i64,
        size: i64,
        slide: i64,
        out: &mut Vec<Pane<K, A>>,
    ) -> Admit {
        let last_start = ts - ts.rem_euclid(slide);
        let first_start = last_start - (size - slide);
        if (first_start + size).saturating_add(self.spec.allowed_lateness) <= wm {
            return Admit::Late;
        }
        let windows = match self.fixed.get_mut(key) {
            Some(w) => w,
            None => self.fixed.entry(key.clone()).or_default(),
        };
        let mut start = first_start;
        let mut created: Vec<Window> = Vec::new();
        while start <= last_start {
            let w = Window {
                start,
                end: start + size,
            };
            match windows.iter_mut().find(|(x, _)| *x == w) {
                Some((_, s)) => s.acc.add(value),
                None => {
                    let mut s = State::<A>::default();
                    s.acc.add(value);
                    windows.push((w, s));
                    created.push(w);
                }
            }
            start += slide;
        }
        for w in &created {
            if w.end > wm {
                self.timers.insert((w.end, key.clone(), w.start));
            }
        }
        let mut start = first_start;
        while start <= last_start {
            self.after_add(
                key,
                Window {
                    start,
                    end: start + size,
                },
                wm,
                out,
            );
            start += slide;
        }
        Admit::Counted
    }

    fn add_session(
        &mut self,
        key: &K,
        ts: i64,
        value: &A::In,
        wm: i64,
        gap: i64,
        out: &mut Vec<Pane<K, A>>,
    ) -> Admit {
        if ts.saturating_add(self.spec.allowed_lateness) < wm {
            return Admit::Late;
        }
        let mode = self.spec.accumulation;
        let proto_end = ts.saturating_add(gap);
        let sessions = match self.sessions.get_mut(key) {
            Some(s) => s,
            None => self.sessions.entry(key.clone()).or_default(),
        };
        // the sessions the element touches are contiguous: walk back from the last one that
        // starts before its end
        let mut touched: Vec<i64> = Vec::new();
        for (&start, &(end, _)) in sessions.range(..proto_end).rev() {
            if end > ts {
                touched.push(start);
            } else {
                break;
            }
        }
        let (mut start, mut end) = (ts, proto_end);
        for s in &touched {
            start = start.min(*s);
            end = end.max(sessions[s].0);
        }
        if touched.len() == 1 && touched[0] == start && sessions[&start].0 == end {
            // inside one session that does not change
            let (_, s) = sessions.get_mut(&start).expect("touched");
            s.acc.add(value);
            self.after_add(key, Window { start, end }, wm, out);
            return Admit::Counted;
        }
        // a new window replaces the ones touched
        let mut merged = State::<A>::default();
        for s in touched {
            let (old_end, mut old) = sessions.remove(&s).expect("touched");
            let old_window = Window {
                start: s,
                end: old_end,
            };
            if mode == Accumulation::Retracting
                && let Some(prev) = old.last.take()
            {
                let timing = if old.on_time {
                    Timing::Late
                } else {
                    Timing::Early
                };
                out.push(Pane {
                    key: key.clone(),
                    window: old_window,
                    timing,
                    index: old.panes,
                    is_final: true,
                    retraction: true,
                    value: prev,
                });
            }
            merged.acc.merge(&old.acc);
        }
        merged.acc.add(value);
        sessions.insert(start, (end, merged));
        let window = Window { start, end };
        if end > wm {
            self.timers.insert((end, key.clone(), start));
        }
        self.after_add(key, window, wm, out);
        Admit::Counted
    }

    /// Fires every timer at or before the watermark: ON_TIME panes, then closing panes and
    /// dropped state.
    fn fire_due(&mut self, out: &mut Vec<Pane<K, A>>) {
        let wm = self.watermarks.current();
        let mode = self.spec.accumulation;
        let lateness = self.spec.allowed_lateness;
        while let Some((deadline, key, start)) = self.timers.first().cloned() {
            if deadline > wm {
                break;
            }
            self.timers.pop_first();
            let window = match self.spec.kind {
                WindowKind::Session { .. } => {
                    match self.sessions.get(&key).and_then(|m| m.get(&start)) {
                        Some((end, _)) => Window { start, end: *end },
                        None => continue,
                    }
                }
                WindowKind::Tumbling { size } | WindowKind::Sliding { size, .. } => Window {
                    start,
                    end: start + size,
                },
            };
            let Some(s) = self.state_mut(&key, window) else {
                continue;
            };
            let current = if s.on_time {
                window.end.saturating_add(lateness)
            } else {
                window.end
            };
            if current != deadline {
                continue; // the window changed since this timer was set
            }
            if !s.on_time {
                s.on_time = true;
                emit(mode, &key, window, s, Timing::OnTime, lateness == 0, out);
                if lateness == 0 {
                    self.drop_window(&key, window);
                } else {
                    self.timers
                        .insert((window.end.saturating_add(lateness), key, start));
                }
            } else {
                if !s.closed {
                    emit(mode, &key, window, s, Timing::Late, true, out);
                }
                self.drop_window(&key, window);
            }
        }
    }

    fn drop_window(&mut self, key: &K, window: Window) {
        match self.spec.kind {
            WindowKind::Session { .. } => {
                if let Some(m) = self.sessions.get_mut(key) {
                    m.remove(&window.start);
                    if m.is_empty() {
                        self.sessions.remove(key);
                    }
                }
            }
            _ => {
                if let Some(v) = self.fixed.get_mut(key) {
                    v.retain(|(w, _)| *w != window);
                    if v.is_empty() {
                        self.fixed.remove(key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Sum(i64);
    impl Aggregate for Sum {
        type In = i64;
        fn add(&mut self, v: &i64) {
            self.0 += v;
        }
        fn merge(&mut self, o: &Self) {
            self.0 += o.0;
        }
    }

    fn op(kind: WindowKind, lateness: i64, acc: Accumulation) -> Operator<&'static str, Sum> {
        Operator::new(
            WindowSpec {
                kind,
                allowed_lateness: lateness,
                early_every: Some(10),
                accumulation: acc,
            },
            WatermarkSpec {
                out_of_orderness: 0,
                idle_timeout: 1_000_000,
            },
        )
    }

    fn show(panes: &[Pane<&str, Sum>]) -> Vec<(i64, &'static str, u32, bool, bool, i64)> {
        panes
            .iter()
            .map(|p| {
                (
                    p.window.start,
                    p.timing.as_str(),
                    p.index,
                    p.is_final,
                    p.retraction,
                    p.value.0,
                )
            })
            .collect()
    }

    #[test]
    fn tumbling_early_on_time_late_and_closing_in_retracting_mode() {
        let mut o = op(
            WindowKind::Tumbling { size: 100 },
            50,
            Accumulation::Retracting,
        );
        let mut out = Vec::new();
        assert_eq!(o.process(0, &"k", 10, &1, 0, &mut out), Admit::Counted);
        o.on_processing_time(5, &mut out); // arms the early trigger
        o.on_processing_time(15, &mut out);
        assert_eq!(show(&out), vec![(0, "EARLY", 0, false, false, 1)]);
        out.clear();
        o.process(0, &"k", 20, &2, 16, &mut out);
        o.process(0, &"k", 120, &4, 17, &mut out); // watermark 120 > 100: on time
        assert_eq!(
            show(&out),
            vec![
                (0, "ON_TIME", 1, false, true, 1),
                (0, "ON_TIME", 1, false, false, 3)
            ]
        );
        out.clear();
        assert_eq!(o.process(0, &"k", 30, &8, 18, &mut out), Admit::Counted);
        assert_eq!(
            show(&out),
            vec![
                (0, "LATE", 2, false, true, 3),
                (0, "LATE", 2, false, false, 11)
            ]
        );
        out.clear();
        o.process(0, &"k", 150, &0, 19, &mut out); // 150 >= 100 + 50: closes window 0
        assert_eq!(
            show(&out),
            vec![
                (0, "LATE", 3, false, true, 11),
                (0, "LATE", 3, true, false, 11)
            ]
        );
        out.clear();
        assert_eq!(o.process(0, &"k", 40, &16, 20, &mut out), Admit::Late);
        assert!(out.is_empty());
        assert_eq!((o.counted(), o.late()), (5, 1));
    }

    #[test]
    fn sliding_counts_an_element_in_every_window_or_none() {
        let mut o = op(
            WindowKind::Sliding {
                size: 300,
                slide: 100,
            },
            0,
            Accumulation::Discarding,
        );
        let mut out = Vec::new();
        o.process(0, &"k", 250, &1, 0, &mut out);
        assert_eq!(o.windows_of(&"k").len(), 3, "[0,300) [100,400) [200,500)");
        o.process(0, &"k", 310, &1, 0, &mut out); // watermark 310: [0,300) fires
        assert_eq!(show(&out), vec![(0, "ON_TIME", 0, true, false, 1)]);
        // 299 belongs to [0,300), already closed: late everywhere, though [100,400) is open
        assert_eq!(o.process(0, &"k", 299, &1, 0, &mut out), Admit::Late);
        assert_eq!(o.process(0, &"k", 300, &1, 0, &mut out), Admit::Counted);
    }

    #[test]
    fn sessions_grow_merge_and_retract_what_they_replace() {
        let mut o = op(
            WindowKind::Session { gap: 10 },
            100,
            Accumulation::Retracting,
        );
        let mut out = Vec::new();
        o.process(0, &"k", 0, &1, 0, &mut out);
        o.process(0, &"k", 30, &2, 0, &mut out); // watermark 30 passes [0,10)
        o.on_processing_time(1, &mut out);
        o.on_processing_time(11, &mut out);
        assert_eq!(
            show(&out),
            vec![
                (0, "ON_TIME", 0, false, false, 1),
                (30, "EARLY", 0, false, false, 2)
            ]
        );
        out.clear();
        // 15 touches neither [0,10) nor [30,40); its window [15,25) is behind the watermark
        // but within the lateness: a LATE pane at once
        o.process(0, &"k", 15, &4, 12, &mut out);
        assert_eq!(show(&out), vec![(15, "LATE", 0, false, false, 4)]);
        assert_eq!(o.windows_of(&"k").len(), 3);
        out.clear();
        // 24 is closer than the gap to both: [15,25) and [30,40) are retracted and replaced by
        // [15,40), which the watermark has not passed (25 alone would only touch [30,40))
        o.process(0, &"k", 24, &8, 13, &mut out);
        assert_eq!(
            show(&out),
            vec![
                (30, "EARLY", 1, true, true, 2),
                (15, "LATE", 1, true, true, 4)
            ]
        );
        let w = o.windows_of(&"k");
        assert_eq!(w.len(), 2);
        assert_eq!((w[1].0, w[1].1.0), (Window { start: 15, end: 40 }, 14));
    }
}
