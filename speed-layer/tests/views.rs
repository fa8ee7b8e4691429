//! The exact views over simulated markets (duplicates, out-of-order and late deliveries,
//! amends and cancels): equal to a recomputation from scratch over exactly the events a
//! boundary does not cover, whatever the moment the boundary arrives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use lakehouse_lake::events::OrderAction;
use lakehouse_lake::positions::Positions;
use lakehouse_lake::{BusinessCalendar, BusinessDate, EventTime};
use lakehouse_simulator::market::Event;
use lakehouse_simulator::{SimConfig, Simulation, Stream};
use lakehouse_speed::bars::{Bar, Print};
use lakehouse_speed::views::{Applied, Boundary, Input, Interval, Payload, Views};
use lakehouse_speed::window::Aggregate;
use proptest::prelude::*;

const PARTITIONS: u64 = 3;

/// The simulator's deliveries as the speed layer would consume them: offsets per (topic,
/// partition) in delivery order, partition by key; malformed messages are dead letters and
/// never reach the views.
fn deliveries(seed: u64, events: u64) -> Vec<Input> {
    let cfg = SimConfig {
        seed,
        events: Some(events),
        duplicate: 0.03,
        out_of_order: 0.05,
        late: 0.02,
        exec_amend: 0.05,
        exec_cancel: 0.05,
        // three short sessions: several business dates
        session: std::time::Duration::from_secs(120),
        ..SimConfig::default()
    };
    let mut sim = Simulation::new(&cfg).unwrap();
    let mut msgs = Vec::new();
    while sim.next(&mut msgs) {}
    let cal = BusinessCalendar::default();
    let mut next: HashMap<(Stream, i32), i64> = HashMap::new();
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
            out.push(Input {
                topic: Arc::from(m.stream.kind()),
                partition,
                offset: at,
                date: cal.business_date(payload.ts()),
                payload,
            });
        }
    }
    out
}

/// From scratch: first delivery of each identity, minus what the boundary covers.
fn scratch(all: &[Input], b: &Boundary) -> Vec<Input> {
    let mut seen = HashSet::new();
    all.iter()
        .filter(|e| {
            let key = match &e.payload {
                Payload::Trade(t) => t.dedup_key(),
                Payload::Order(o) => format!("o:{}", o.dedup_key()),
                Payload::Execution(x) => format!("x:{}", x.exec_id),
            };
            seen.insert(key)
        })
        .filter(|e| !b.covers(e))
        .cloned()
        .collect()
}

fn check(views: &mut Views, expected: &[Input]) -> Result<(), TestCaseError> {
    // bars: every (symbol, minute) from the prints, folded in a different order
    let mut bars: BTreeMap<(String, i64), Bar> = BTreeMap::new();
    for e in expected.iter().rev() {
        if let Payload::Trade(t) = &e.payload {
            let ts = t.ts.micros();
            bars.entry((t.symbol.clone(), ts - ts.rem_euclid(60_000_000)))
                .or_default()
                .add(&Print {
                    ts,
                    partition: e.partition,
                    offset: e.offset,
                    price: t.price,
                    volume: t.volume,
                });
        }
    }
    let symbols: HashSet<&String> = bars.keys().map(|(s, _)| s).collect();
    for s in symbols {
        let got = views.bars(
            s,
            Interval::Minute,
            EventTime::from_micros(i64::MIN),
            EventTime::from_micros(i64::MAX),
        );
        let want: Vec<(i64, Bar)> = bars
            .iter()
            .filter(|((x, _), _)| x == s)
            .map(|((_, m), b)| (*m, b.clone()))
            .collect();
        prop_assert_eq!(got, want, "bars of {}", s);
    }
    // positions: a fresh book over the expected executions, in reverse order
    let mut positions = Positions::new();
    for e in expected.iter().rev() {
        if let Payload::Execution(x) = &e.payload {
            positions.add(x, e.partition, e.offset);
        }
    }
    let want: Vec<_> = positions
        .keys()
        .into_iter()
        .map(|k| {
            let p = positions.position(&k.0, &k.1).unwrap();
            (k, p)
        })
        .collect();
    prop_assert_eq!(views.positions(), want);
    // order statistics
    let mut stats: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for e in expected {
        if let Payload::Order(o) = &e.payload {
            let s = stats.entry(o.trader.clone()).or_default();
            match o.action {
                OrderAction::New => s.0 += 1,
                OrderAction::Modify => s.1 += 1,
                OrderAction::Cancel => s.2 += 1,
            }
        }
    }
    let got: BTreeMap<String, (u64, u64, u64)> = views
        .order_stats()
        .into_iter()
        .map(|(t, s)| (t, (s.orders, s.modifies, s.cancels)))
        .collect();
    prop_assert_eq!(got, stats);
    prop_assert_eq!(views.events(), expected.len() as u64);
    Ok(())
}

fn boundary(all: &[Input], date_pick: usize, cuts: &[u64; 3]) -> Boundary {
    let dates: Vec<BusinessDate> = {
        let mut d: Vec<_> = all.iter().map(|e| e.date).collect();
        d.sort();
        d.dedup();
        d
    };
    let mut max: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for e in all {
        let m = max.entry((e.topic.to_string(), e.partition)).or_default();
        *m = (*m).max(e.offset);
    }
    let mut offsets: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for ((t, p), m) in max {
        let cut = (m as u64 * cuts[p as usize % 3] / 100) as i64;
        offsets.entry(t).or_default().insert(p, cut);
    }
    Boundary {
        date: Some(dates[date_pick % dates.len()]),
        offsets,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The views after a boundary equal the recomputation from scratch, whether the boundary
    /// came before the events, after them, or in the middle of them.
    #[test]
    fn complement_equals_scratch(seed in 0u64..1000, date_pick in 0usize..4, cuts in prop::array::uniform3(0u64..=100), when in 0usize..=100) {
        let all = deliveries(seed, 6_000);
        let b = boundary(&all, date_pick, &cuts);
        let expected = scratch(&all, &b);
        let cal = BusinessCalendar::default();

        let mut after = Views::new(cal);
        all.iter().cloned().for_each(|e| { after.apply(e); });
        after.set_boundary(b.clone()).unwrap();
        check(&mut after, &expected)?;

        let mut before = Views::new(cal);
        before.set_boundary(b.clone()).unwrap();
        all.iter().cloned().for_each(|e| { before.apply(e); });
        check(&mut before, &expected)?;

        let split = all.len() * when / 100;
        let mut middle = Views::new(cal);
        all[..split].iter().cloned().for_each(|e| { middle.apply(e); });
        middle.set_boundary(b.clone()).unwrap();
        all[split..].iter().cloned().for_each(|e| { middle.apply(e); });
        check(&mut middle, &expected)?;

        // the pipeline admits an event, then inserts it after its live windows: a boundary
        // published between the two halves must still keep it out when it covers it
        if split < all.len() {
            let mut racing = Views::new(cal);
            all[..split].iter().cloned().for_each(|e| { racing.apply(e); });
            let e = all[split].clone();
            let admitted = racing.admit(&e.topic, e.partition, e.offset, e.date, &e.payload);
            racing.set_boundary(b.clone()).unwrap();
            if admitted == Applied::Added {
                racing.insert(e);
            }
            all[split + 1..].iter().cloned().for_each(|e| { racing.apply(e); });
            check(&mut racing, &expected)?;
        }

        // the complement and the covered part make up the whole, for every symbol's volume
        let mut covered: HashMap<String, i128> = HashMap::new();
        let mut total: HashMap<String, i128> = HashMap::new();
        for e in scratch(&all, &Boundary::default()) {
            if let Payload::Trade(t) = &e.payload {
                *total.entry(t.symbol.clone()).or_default() += t.volume.raw();
                if b.covers(&e) {
                    *covered.entry(t.symbol.clone()).or_default() += t.volume.raw();
                }
            }
        }
        for (s, v) in total {
            let speed: i128 = middle
                .bars(&s, Interval::Day, EventTime::from_micros(i64::MIN), EventTime::from_micros(i64::MAX))
                .iter()
                .map(|(_, bar)| bar.volume().raw())
                .sum();
            prop_assert_eq!(speed + covered.get(&s).copied().unwrap_or(0), v, "{}", s);
        }
        prop_assert!(middle.set_boundary(Boundary::default()).is_err(), "a boundary never moves back");
    }
}

#[test]
fn large_trades_follow_amends_and_cancels() {
    let all = deliveries(3, 20_000);
    let mut v = Views::new(BusinessCalendar::default());
    all.iter().cloned().for_each(|e| {
        v.apply(e);
    });
    let limit = "20000".parse().unwrap();
    let large = v.large_trades(|_| Some(limit));
    assert!(!large.is_empty(), "the simulator sends outsized orders");
    let mut positions = Positions::new();
    for e in &all {
        if let Payload::Execution(x) = &e.payload {
            positions.add(x, e.partition, e.offset);
        }
    }
    let mut want = Vec::new();
    for (a, s) in positions.keys() {
        for (_, id, _, p, q) in positions.effective_fills(&a, &s) {
            if p.mul_rounded(q).unwrap() >= limit {
                want.push(id);
            }
        }
    }
    want.sort();
    let got: Vec<String> = large.into_iter().map(|l| l.exec_id).collect();
    assert_eq!(got, want);
    assert!(v.large_trades(|_| None).is_empty());
}

#[test]
fn desk_exposure_marks_positions_at_the_latest_print() {
    use lakehouse_lake::reference::{Reference, desk_exposure};
    let all = deliveries(5, 20_000);
    let mut v = Views::new(BusinessCalendar::default());
    all.iter().cloned().for_each(|e| {
        v.apply(e);
    });
    // reference data as the simulator writes it
    let u = lakehouse_simulator::universe::Universe::new(5, 20, 60, 6, 3);
    let mut reference = Reference::default();
    for l in &u.listings {
        reference
            .instruments
            .insert(l.instrument.symbol.clone(), l.instrument.clone());
    }
    for a in &u.agents {
        reference
            .accounts
            .insert(a.account.account.clone(), a.account.clone());
    }
    // from scratch: positions over every execution, the last print by (ts, partition, offset)
    let mut positions = Positions::new();
    let mut last: HashMap<String, ((i64, i32, i64), lakehouse_lake::Decimal)> = HashMap::new();
    for e in &all {
        match &e.payload {
            Payload::Execution(x) => {
                positions.add(x, e.partition, e.offset);
            }
            Payload::Trade(t) => {
                let rank = (t.ts.micros(), e.partition, e.offset);
                let entry = last.entry(t.symbol.clone()).or_insert((rank, t.price));
                if rank > entry.0 {
                    *entry = (rank, t.price);
                }
            }
            Payload::Order(_) => {}
        }
    }
    let keys = positions.keys();
    let ps: Vec<_> = keys
        .iter()
        .map(|k| {
            (
                k.0.as_str(),
                k.1.as_str(),
                positions.position(&k.0, &k.1).unwrap(),
            )
        })
        .collect();
    let want = desk_exposure(ps, |s| last.get(s).map(|(_, p)| *p), &reference).unwrap();
    let got = v.exposure(&reference);
    assert!(!want.0.is_empty());
    assert!(want.0.iter().all(|e| e.desk.starts_with("DESK-")));
    assert_eq!(got, want);
}
