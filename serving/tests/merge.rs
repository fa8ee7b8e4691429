//! The merge, against a recomputation from scratch: simulated markets (duplicates, out-of-order
//! and late deliveries, amends and cancels), a random published batch run (date and boundary
//! offsets), a random point the speed layer has read to. The merged positions and bars equal
//! those computed from scratch over exactly the events the boundary and the speed offsets
//! name; a switch to a later run changes nothing that was counted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use lakehouse_lake::events::Lifecycle;
use lakehouse_lake::positions::{Position, Positions};
use lakehouse_lake::{BusinessCalendar, BusinessDate, EventTime};
use lakehouse_serving::merge::{self, BatchDay, BatchSnapshot, CoveredFill, RunInfo};
use lakehouse_simulator::market::Event;
use lakehouse_simulator::{SimConfig, Simulation, Stream};
use lakehouse_speed::bars::{Bar, Print};
use lakehouse_speed::views::{Input, Interval, Payload, Views};
use lakehouse_speed::window::Aggregate;
use proptest::prelude::*;

const PARTITIONS: u64 = 2;

/// Deliveries in offset order per (topic, partition); corrections of an execution of another
/// business date are dropped (the batch layer applies corrections within their date).
fn deliveries(seed: u64, events: u64) -> Vec<Input> {
    let cfg = SimConfig {
        seed,
        events: Some(events),
        duplicate: 0.03,
        out_of_order: 0.05,
        late: 0.03,
        exec_amend: 0.05,
        exec_cancel: 0.05,
        session: std::time::Duration::from_secs(90),
        ..SimConfig::default()
    };
    let mut sim = Simulation::new(&cfg).unwrap();
    let mut msgs = Vec::new();
    while sim.next(&mut msgs) {}
    let cal = BusinessCalendar::default();
    let mut next: HashMap<(Stream, i32), i64> = HashMap::new();
    let mut exec_dates: HashMap<String, BusinessDate> = HashMap::new();
    let mut out = Vec::new();
    for m in msgs {
        let partition = (m.key.bytes().map(u64::from).sum::<u64>() % PARTITIONS) as i32;
        let offset = next.entry((m.stream, partition)).or_default();
        let at = *offset;
        *offset += 1;
        for g in &m.events {
            let payload = match &g.event {
                Event::Trade(t) => Payload::Trade(t.clone()),
                Event::Order(o) => Payload::Order(o.clone()),
                Event::Execution(e) => Payload::Execution(e.clone()),
            };
            let date = cal.business_date(payload.ts());
            if let Payload::Execution(x) = &payload {
                match (&x.lifecycle, &x.ref_exec_id) {
                    (Lifecycle::New, _) => {
                        exec_dates.entry(x.exec_id.clone()).or_insert(date);
                    }
                    (_, Some(target)) if exec_dates.get(target) != Some(&date) => continue,
                    _ => {}
                }
            }
            out.push(Input {
                topic: Arc::from(m.stream.kind()),
                partition,
                offset: at,
                date,
                payload,
            });
        }
    }
    out
}

fn identity(e: &Input) -> String {
    match &e.payload {
        Payload::Trade(t) => t.dedup_key(),
        Payload::Order(o) => format!("o:{}", o.dedup_key()),
        Payload::Execution(x) => format!("x:{}", x.exec_id),
    }
}

/// The batch layer's view of the covered events, computed here independently: per date, the
/// effective executions and the 1-minute bars of that date's events; positions carried forward
/// date by date.
fn batch_of(covered: &[&Input], first: BusinessDate, run: RunInfo) -> BatchSnapshot {
    let mut snap = BatchSnapshot::default();
    let mut carried: BTreeMap<(String, String), Position> = BTreeMap::new();
    let mut d = first;
    while d <= run.date {
        let mut day = BatchDay::default();
        let mut book = Positions::new();
        let mut seen = HashSet::new();
        for e in covered.iter().filter(|e| e.date == d) {
            if !seen.insert(identity(e)) {
                continue;
            }
            match &e.payload {
                Payload::Trade(t) => day.add_print(
                    &t.symbol,
                    &Print {
                        ts: t.ts.micros(),
                        partition: e.partition,
                        offset: e.offset,
                        price: t.price,
                        volume: t.volume,
                    },
                ),
                Payload::Execution(x) => {
                    book.add(x, e.partition, e.offset);
                }
                Payload::Order(_) => {}
            }
        }
        for (account, symbol) in book.keys() {
            let fills: Vec<CoveredFill> = book
                .effective_fills(&account, &symbol)
                .into_iter()
                .map(
                    |((ts, partition, offset), exec_id, side, price, quantity)| CoveredFill {
                        exec_id,
                        account: account.clone(),
                        symbol: symbol.clone(),
                        side,
                        price,
                        quantity,
                        ts,
                        partition,
                        offset,
                    },
                )
                .collect();
            let p = carried
                .entry((account.clone(), symbol.clone()))
                .or_default();
            for f in &fills {
                p.apply(f.side, f.price, f.quantity).unwrap();
            }
            day.fills.insert((account, symbol), fills);
        }
        day.positions = carried.clone();
        if !day.positions.is_empty() {
            snap.position_dates.insert(d);
        }
        for (symbol, minutes) in &day.bars {
            if let Some(c) = minutes.values().next_back().and_then(Bar::close_print) {
                let e = snap.last.entry(symbol.clone()).or_insert(c);
                if c.0 > e.0 {
                    *e = c;
                }
            }
        }
        snap.days.insert(d, Arc::new(day));
        d = d.succ();
    }
    snap.run = Some(run);
    snap
}

type Minutes = BTreeMap<String, BTreeMap<i64, Bar>>;

/// Positions and 1-minute bars from scratch over `events` (first delivery of each identity).
fn scratch(events: &[&Input]) -> (BTreeMap<(String, String), Position>, Minutes) {
    let mut seen = HashSet::new();
    let mut book = Positions::new();
    let mut bars: Minutes = BTreeMap::new();
    let mut sorted: Vec<&&Input> = events.iter().collect();
    sorted.sort_by_key(|e| (e.topic.clone(), e.partition, e.offset));
    for e in sorted {
        if !seen.insert(identity(e)) {
            continue;
        }
        match &e.payload {
            Payload::Trade(t) => {
                let ts = t.ts.micros();
                bars.entry(t.symbol.clone())
                    .or_default()
                    .entry(ts - ts.rem_euclid(60_000_000))
                    .or_default()
                    .add(&Print {
                        ts,
                        partition: e.partition,
                        offset: e.offset,
                        price: t.price,
                        volume: t.volume,
                    });
            }
            Payload::Execution(x) => {
                book.add(x, e.partition, e.offset);
            }
            Payload::Order(_) => {}
        }
    }
    let positions = book
        .keys()
        .into_iter()
        .map(|(a, s)| {
            let p = book.position(&a, &s).unwrap();
            ((a, s), p)
        })
        .collect();
    (positions, bars)
}

/// Last offset per (topic, partition).
fn last_offsets(all: &[Input]) -> BTreeMap<(String, i32), i64> {
    let mut max: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for e in all {
        let m = max.entry((e.topic.to_string(), e.partition)).or_insert(-1);
        *m = (*m).max(e.offset);
    }
    max
}

/// A run for `date` covering `cut` per mille of each partition.
fn run_at(all: &[Input], date: BusinessDate, cut: &[u64], id: &str) -> RunInfo {
    let mut boundary: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for (i, ((t, p), m)) in last_offsets(all).into_iter().enumerate() {
        let o = ((m + 1) as u64 * cut[i % cut.len()] / 1000) as i64 - 1;
        if o >= 0 {
            boundary.entry(t).or_default().insert(p, o);
        }
    }
    RunInfo {
        run_id: id.into(),
        date,
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
        boundary,
    }
}

/// Merged == scratch over the events `run` covers plus those below the speed offsets.
fn check(
    all: &[Input],
    run: Option<&RunInfo>,
    consumed: &BTreeMap<(String, i32), i64>,
    views: &Views,
    snap: &BatchSnapshot,
) -> Result<(), TestCaseError> {
    let named: Vec<&Input> = all
        .iter()
        .filter(|e| {
            run.is_some_and(|r| r.boundary().covers(e))
                || consumed
                    .get(&(e.topic.to_string(), e.partition))
                    .is_some_and(|c| e.offset < *c)
        })
        .collect();
    let (want_pos, want_bars) = scratch(&named);
    let got = merge::positions(snap, views, |_, _| true).unwrap();
    for (k, p) in &want_pos {
        let g = got.get(k).copied().unwrap_or_default();
        prop_assert_eq!(g, *p, "position of {:?}", k);
    }
    for (k, p) in &got {
        prop_assert!(
            want_pos.contains_key(k) || *p == Position::default(),
            "extra position {:?}",
            k
        );
    }
    let cal = BusinessCalendar::default();
    let first = all.iter().map(|e| e.date).min().expect("events");
    let last = all.iter().map(|e| e.date).max().expect("events");
    let (lo, hi) = (cal.utc_range(first).0, cal.utc_range(last).1);
    for (s, want) in &want_bars {
        let got = merge::bars(snap, views, &cal, s, Interval::Minute, lo, hi).unwrap();
        let got: BTreeMap<i64, Bar> = got.into_iter().map(|(m, _, b)| (m, b)).collect();
        prop_assert_eq!(&got, want, "1-minute bars of {}", s);
        let days = merge::bars(snap, views, &cal, s, Interval::Day, lo, hi).unwrap();
        let mut want_days: BTreeMap<BusinessDate, Bar> = BTreeMap::new();
        for (m, b) in want {
            want_days
                .entry(cal.business_date(EventTime::from_micros(*m)))
                .or_default()
                .merge(b);
        }
        let days: BTreeMap<BusinessDate, Bar> = days.into_iter().map(|(_, d, b)| (d, b)).collect();
        prop_assert_eq!(days, want_days, "daily bars of {}", s);
    }
    Ok(())
}

fn snapshot_of(all: &[Input], run: Option<&RunInfo>) -> BatchSnapshot {
    match run {
        Some(r) => {
            let covered: Vec<&Input> = all.iter().filter(|e| r.boundary().covers(e)).collect();
            let first = all.iter().map(|e| e.date).min().unwrap_or(r.date);
            batch_of(&covered, first, r.clone())
        }
        None => BatchSnapshot::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn merged_equals_scratch_and_switching_runs_is_exact(
        seed in 0u64..1_000_000,
        events in 50u64..400,
        date_pick in 0usize..4,
        cut in prop::collection::vec(0u64..=1000, 6),
        read in prop::collection::vec(0u64..=1000, 6),
        later in prop::collection::vec(0u64..=1000, 6),
        boundary_first in any::<bool>(),
    ) {
        let all = deliveries(seed, events);
        let dates: Vec<BusinessDate> =
            all.iter().map(|e| e.date).collect::<BTreeSet<_>>().into_iter().collect();
        prop_assume!(!dates.is_empty());
        let run = (date_pick < dates.len()).then(|| run_at(&all, dates[date_pick], &cut, "r1"));
        // where the speed layer has read to, per partition
        let consumed: BTreeMap<(String, i32), i64> = last_offsets(&all)
            .into_iter()
            .enumerate()
            .map(|(i, (k, m))| (k, ((m + 1) as u64 * read[i % read.len()] / 1000) as i64))
            .collect();
        let mut views = Views::new(BusinessCalendar::default());
        let snap = snapshot_of(&all, run.as_ref());
        if boundary_first && let Some(r) = &run {
            views.set_boundary(r.boundary()).unwrap();
        }
        for e in &all {
            if consumed.get(&(e.topic.to_string(), e.partition)).is_some_and(|c| e.offset < *c) {
                views.apply(e.clone());
            }
        }
        if !boundary_first && let Some(r) = &run {
            views.set_boundary(r.boundary()).unwrap();
        }
        check(&all, run.as_ref(), &consumed, &views, &snap)?;

        // a later run (date and offsets at or beyond): the switch is exact too
        let next_date = match &run {
            Some(r) => r.date.max(dates[(date_pick + 1).min(dates.len() - 1)]),
            None => dates[0],
        };
        let mut next = run_at(&all, next_date, &later, "r2");
        if let Some(r) = &run {
            for (t, parts) in &r.boundary {
                for (p, o) in parts {
                    let e = next.boundary.entry(t.clone()).or_default().entry(*p).or_insert(*o);
                    *e = (*e).max(*o);
                }
            }
        }
        let snap2 = snapshot_of(&all, Some(&next));
        views.set_boundary(next.boundary()).unwrap();
        check(&all, Some(&next), &consumed, &views, &snap2)?;
    }
}
