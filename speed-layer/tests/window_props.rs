//! The window core against a brute-force recomputation from the event list, over generated
//! streams (out of order, several partitions, idle periods) and every combination of window
//! type, trigger and accumulation mode.

use std::collections::{BTreeMap, HashMap};

use lakehouse_speed::window::{
    Accumulation, Admit, Aggregate, Operator, Pane, Timing, WatermarkSpec, Window, WindowKind,
    WindowSpec,
};
use proptest::prelude::*;

/// The ids of the elements in a window (a multiset, kept sorted when compared).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Ids(Vec<u64>);

impl Aggregate for Ids {
    type In = u64;
    fn add(&mut self, v: &u64) {
        self.0.push(*v);
    }
    fn merge(&mut self, other: &Self) {
        self.0.extend_from_slice(&other.0);
    }
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[derive(Clone, Debug)]
struct Ev {
    partition: u32,
    key: u8,
    ts: i64,
    /// Processing time passing before this element arrives.
    wait: i64,
}

fn kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        prop_oneof![Just(50i64), Just(100), Just(200)]
            .prop_map(|size| WindowKind::Tumbling { size }),
        (prop_oneof![Just(25i64), Just(50)], 1i64..5).prop_map(|(slide, k)| WindowKind::Sliding {
            size: slide * k,
            slide
        }),
        (10i64..150).prop_map(|gap| WindowKind::Session { gap }),
    ]
}

fn spec() -> impl Strategy<Value = (WindowSpec, WatermarkSpec)> {
    (
        kind(),
        prop_oneof![Just(0i64), Just(40), Just(300)],
        prop_oneof![Just(None), (20i64..200).prop_map(Some)],
        prop_oneof![
            Just(Accumulation::Discarding),
            Just(Accumulation::Accumulating),
            Just(Accumulation::Retracting)
        ],
        prop_oneof![Just(0i64), Just(60), Just(250)],
        prop_oneof![Just(150i64), Just(100_000)],
    )
        .prop_map(|(kind, lateness, early, acc, ooo, idle)| {
            (
                WindowSpec {
                    kind,
                    allowed_lateness: lateness,
                    early_every: early,
                    accumulation: acc,
                },
                WatermarkSpec {
                    out_of_orderness: ooo,
                    idle_timeout: idle,
                },
            )
        })
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    // event times drift forward with jitter either way; now and then a partition pauses
    proptest::collection::vec(
        (
            0u32..3,
            0u8..3,
            0i64..40,
            -300i64..120,
            0i64..60,
            proptest::bool::weighted(0.05),
        ),
        1..120,
    )
    .prop_map(|raw| {
        let mut base = 1_000;
        raw.into_iter()
            .map(|(partition, key, step, jitter, wait, pause)| {
                base += step;
                Ev {
                    partition,
                    key,
                    ts: base + jitter,
                    wait: if pause { wait * 20 } else { wait },
                }
            })
            .collect()
    })
}

/// The windows an element belongs to, from the definitions (not from the operator).
fn fixed_windows(kind: WindowKind, ts: i64) -> Vec<Window> {
    let (size, slide) = match kind {
        WindowKind::Tumbling { size } => (size, size),
        WindowKind::Sliding { size, slide } => (size, slide),
        WindowKind::Session { .. } => unreachable!(),
    };
    let mut out = Vec::new();
    let mut start = ts.div_euclid(slide) * slide;
    while start + size > ts {
        out.push(Window {
            start,
            end: start + size,
        });
        start -= slide;
    }
    out
}

/// Brute force: key -> window -> ids, from the counted elements alone.
fn expected(kind: WindowKind, counted: &[(u8, i64, u64)]) -> BTreeMap<(u8, Window), Vec<u64>> {
    let mut out: BTreeMap<(u8, Window), Vec<u64>> = BTreeMap::new();
    match kind {
        WindowKind::Session { gap } => {
            let mut by_key: BTreeMap<u8, Vec<(i64, u64)>> = BTreeMap::new();
            for &(k, ts, id) in counted {
                by_key.entry(k).or_default().push((ts, id));
            }
            for (k, mut evs) in by_key {
                evs.sort_unstable();
                let mut cur: Option<(Window, Vec<u64>)> = None;
                for (ts, id) in evs {
                    match &mut cur {
                        Some((w, ids)) if ts < w.end => {
                            w.end = w.end.max(ts + gap);
                            ids.push(id);
                        }
                        _ => {
                            if let Some((w, ids)) = cur.take() {
                                out.insert((k, w), sorted(ids));
                            }
                            cur = Some((
                                Window {
                                    start: ts,
                                    end: ts + gap,
                                },
                                vec![id],
                            ));
                        }
                    }
                }
                if let Some((w, ids)) = cur {
                    out.insert((k, w), sorted(ids));
                }
            }
        }
        _ => {
            for &(k, ts, id) in counted {
                for w in fixed_windows(kind, ts) {
                    out.entry((k, w)).or_default().push(id);
                }
            }
            for v in out.values_mut() {
                v.sort_unstable();
            }
        }
    }
    out
}

/// Whether an element is late by the documented rule, given the watermark before it.
fn is_late(spec: &WindowSpec, ts: i64, wm: i64) -> bool {
    match spec.kind {
        WindowKind::Session { .. } => ts.saturating_add(spec.allowed_lateness) < wm,
        kind => {
            let first = fixed_windows(kind, ts)
                .into_iter()
                .map(|w| w.end)
                .min()
                .unwrap();
            first.saturating_add(spec.allowed_lateness) <= wm
        }
    }
}

type Emitted = Vec<(Pane<u8, Ids>, i64)>;
/// A pane with the watermark when it was emitted.
type Fired<'a> = (&'a Pane<u8, Ids>, i64);

fn collect(buf: &mut Vec<Pane<u8, Ids>>, wm: i64, panes: &mut Emitted) {
    panes.extend(buf.drain(..).map(|p| (p, wm)));
}

fn run_case(spec: WindowSpec, wspec: WatermarkSpec, evs: &[Ev]) -> Result<(), TestCaseError> {
    let mut op: Operator<u8, Ids> = Operator::new(spec, wspec);
    let mut now = 0;
    let mut panes: Emitted = Vec::new();
    let mut buf = Vec::new();
    let mut last_wm = i64::MIN;
    let mut counted = Vec::new();
    let mut late = 0u64;
    for (id, ev) in evs.iter().enumerate() {
        now += ev.wait;
        op.on_processing_time(now, &mut buf);
        collect(&mut buf, op.watermark(), &mut panes);
        prop_assert!(op.watermark() >= last_wm, "watermark went back");
        last_wm = op.watermark();
        let wm = op.watermark();
        let admit = op.process(ev.partition, &ev.key, ev.ts, &(id as u64), now, &mut buf);
        collect(&mut buf, op.watermark(), &mut panes);
        prop_assert!(op.watermark() >= last_wm, "watermark went back");
        last_wm = op.watermark();
        let want = if is_late(&spec, ev.ts, wm) {
            Admit::Late
        } else {
            Admit::Counted
        };
        prop_assert_eq!(
            admit,
            want,
            "element {} at {} with watermark {}",
            id,
            ev.ts,
            wm
        );
        match admit {
            Admit::Counted => counted.push((ev.key, ev.ts, id as u64)),
            Admit::Late => late += 1,
        }
    }
    op.finish(&mut buf);
    collect(&mut buf, op.watermark(), &mut panes);
    prop_assert_eq!(op.open_windows(), 0, "finish closes everything");
    prop_assert_eq!(op.counted() + op.late(), evs.len() as u64, "nothing lost");
    prop_assert_eq!(op.late(), late);

    let want = expected(spec.kind, &counted);
    let session = matches!(spec.kind, WindowKind::Session { .. });
    // per window: its panes in order
    let mut by_window: BTreeMap<(u8, Window), Vec<Fired<'_>>> = BTreeMap::new();
    for (p, wm) in &panes {
        by_window
            .entry((p.key, p.window))
            .or_default()
            .push((p, *wm));
    }
    for ((key, w), ps) in &by_window {
        let values: Vec<&(&Pane<u8, Ids>, i64)> =
            ps.iter().filter(|(p, _)| !p.retraction).collect();
        // indices 0, 1, ... and timings in order EARLY* ON_TIME? LATE*
        for (i, (p, wm)) in values.iter().enumerate() {
            prop_assert_eq!(p.index as usize, i, "pane indices of {:?}", (key, w));
            match p.timing {
                Timing::Early => prop_assert!(*wm < w.end && spec.early_every.is_some()),
                Timing::OnTime | Timing::Late => {
                    prop_assert!(*wm >= w.end, "{:?} fired at {}", p, wm)
                }
            }
        }
        let on_time = values
            .iter()
            .filter(|(p, _)| p.timing == Timing::OnTime)
            .count();
        prop_assert!(on_time <= 1);
        let rank = |t: Timing| match t {
            Timing::Early => 0,
            Timing::OnTime => 1,
            Timing::Late => 2,
        };
        prop_assert!(
            values
                .windows(2)
                .all(|v| rank(v[0].0.timing) <= rank(v[1].0.timing))
        );
        let finals = values.iter().filter(|(p, _)| p.is_final).count();
        if want.contains_key(&(*key, *w)) {
            // a window of the brute force: its last pane is the one final pane
            prop_assert_eq!(finals, 1, "{:?}", (key, w));
            prop_assert!(values.last().unwrap().0.is_final);
            if spec.allowed_lateness == 0 && on_time == 1 {
                prop_assert_eq!(values.last().unwrap().0.timing, Timing::OnTime);
            }
        } else {
            // only a session replaced by a larger one has no place in the brute force
            prop_assert!(session, "window {:?} is not in the brute force", (key, w));
            prop_assert_eq!(finals, 0);
        }
        // a retraction withdraws exactly the previous value pane of its window
        let mut last_value: Option<&Ids> = None;
        for (p, _) in ps {
            if p.retraction {
                prop_assert_eq!(Some(&p.value), last_value, "retraction of {:?}", (key, w));
                last_value = None;
            } else {
                last_value = Some(&p.value);
            }
        }
        if spec.accumulation != Accumulation::Retracting {
            prop_assert!(ps.iter().all(|(p, _)| !p.retraction));
        }
    }
    // every brute-force window was emitted, with exactly its elements
    for ((key, w), ids) in &want {
        let ps = by_window.get(&(*key, *w));
        prop_assert!(ps.is_some(), "no pane for {:?}", (key, w));
        let ps = ps.unwrap();
        let values = || ps.iter().filter(|(p, _)| !p.retraction).map(|(p, _)| p);
        match spec.accumulation {
            Accumulation::Discarding if !session => {
                let all: Vec<u64> = values().flat_map(|p| p.value.0.clone()).collect();
                prop_assert_eq!(&sorted(all), ids, "discarding panes of {:?}", (key, w));
            }
            Accumulation::Discarding => {}
            Accumulation::Accumulating | Accumulation::Retracting => {
                let last = values().next_back().unwrap();
                prop_assert_eq!(
                    &sorted(last.value.0.clone()),
                    ids,
                    "final pane of {:?}",
                    (key, w)
                );
                // accumulating panes only grow
                let vs: Vec<Vec<u64>> = values().map(|p| sorted(p.value.0.clone())).collect();
                for pair in vs.windows(2) {
                    prop_assert!(pair[0].iter().all(|x| pair[1].contains(x)));
                }
            }
        }
    }
    // per key, over all windows: discarding panes carry each counted element once per window
    // it belongs to; retracting panes minus retractions equal the final values
    let mut per_key_want: HashMap<u8, Vec<u64>> = HashMap::new();
    for ((k, _), ids) in &want {
        per_key_want.entry(*k).or_default().extend(ids);
    }
    let mut plus: HashMap<u8, Vec<u64>> = HashMap::new();
    let mut minus: HashMap<u8, Vec<u64>> = HashMap::new();
    for (p, _) in &panes {
        let target = if p.retraction { &mut minus } else { &mut plus };
        target.entry(p.key).or_default().extend(&p.value.0);
    }
    for (k, want_ids) in per_key_want {
        let want_ids = sorted(want_ids);
        match spec.accumulation {
            Accumulation::Discarding => {
                prop_assert_eq!(sorted(plus.remove(&k).unwrap_or_default()), want_ids);
            }
            Accumulation::Retracting => {
                let mut net = sorted(plus.remove(&k).unwrap_or_default());
                for id in minus.remove(&k).unwrap_or_default() {
                    let i = net.binary_search(&id);
                    prop_assert!(i.is_ok(), "retracted {} never emitted", id);
                    net.remove(i.unwrap());
                }
                prop_assert_eq!(net, want_ids, "panes minus retractions for key {}", k);
            }
            Accumulation::Accumulating => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12_000))]

    /// 12k cases over window type x trigger x accumulation x lateness x watermark settings.
    #[test]
    fn core_agrees_with_brute_force((spec, wspec) in spec(), evs in events()) {
        run_case(spec, wspec, &evs)?;
    }
}

/// Runs `evs` from `from`, feeding processing time and elements as `run_case` does.
fn feed(
    op: &mut Operator<u8, Ids>,
    evs: &[Ev],
    from: usize,
    now: &mut i64,
    out: &mut Vec<Pane<u8, Ids>>,
) {
    for (id, ev) in evs.iter().enumerate().skip(from) {
        *now += ev.wait;
        op.on_processing_time(*now, out);
        op.process(ev.partition, &ev.key, ev.ts, &(id as u64), *now, out);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// A checkpoint (the operator serialized) taken anywhere and restored gives exactly the
    /// panes of an uninterrupted run: nothing lost, nothing emitted twice.
    #[test]
    fn checkpoint_restore_continues_exactly((spec, wspec) in spec(), evs in events(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(evs.len() + 1);
        let (mut whole, mut now) = (Vec::new(), 0);
        let mut a: Operator<u8, Ids> = Operator::new(spec, wspec);
        feed(&mut a, &evs, 0, &mut now, &mut whole);
        a.finish(&mut whole);

        let (mut split, mut now) = (Vec::new(), 0);
        let mut b: Operator<u8, Ids> = Operator::new(spec, wspec);
        feed(&mut b, &evs[..cut], 0, &mut now, &mut split);
        let saved = serde_json::to_string(&b).unwrap();
        drop(b);
        let mut c: Operator<u8, Ids> = serde_json::from_str(&saved).unwrap();
        feed(&mut c, &evs, cut, &mut now, &mut split);
        c.finish(&mut split);
        prop_assert_eq!(split, whole);
        prop_assert_eq!((c.counted(), c.late()), (a.counted(), a.late()));
    }
}
