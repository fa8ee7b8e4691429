//! The simulator's own invariants, over whole generated markets (no I/O).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{Datelike, Weekday};
use lakehouse_lake::events::{Lifecycle, OrderAction, Side};
use lakehouse_lake::{Decimal, EventTime};
use lakehouse_simulator::market::Event;
use lakehouse_simulator::{Delivery, Encoding, Message, SimConfig, Simulation};

fn all(cfg: &SimConfig) -> Vec<Message> {
    let mut sim = Simulation::new(cfg).unwrap();
    let mut out = Vec::new();
    while sim.next(&mut out) {}
    out
}

fn cfg(seed: u64, events: u64) -> SimConfig {
    SimConfig {
        seed,
        events: Some(events),
        ..SimConfig::default()
    }
}

#[test]
fn one_seed_one_market_and_other_seeds_differ() {
    let a = all(&cfg(11, 20_000));
    assert_eq!(a, all(&cfg(11, 20_000)));
    assert_ne!(a, all(&cfg(12, 20_000)));
}

/// Every fill pairs one buyer and one seller for one quantity at one price, with one print;
/// prices are on the tick grid and quantities on the lot grid; a cancelled or fully filled
/// order never trades again; a book is never left crossed.
#[test]
fn matching_sanity_over_a_generated_market() {
    let cfg = SimConfig {
        exec_amend: 0.05,
        exec_cancel: 0.05,
        ..cfg(5, 200_000)
    };
    let mut sim = Simulation::new(&cfg).unwrap();
    let grid: HashMap<String, (Decimal, Decimal)> = sim
        .universe()
        .listings
        .iter()
        .map(|l| {
            (
                l.instrument.symbol.clone(),
                (l.instrument.tick_size, l.instrument.lot_size),
            )
        })
        .collect();
    let mut matches: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut new_execs: HashMap<String, (Decimal, Decimal)> = HashMap::new();
    let (mut amends, mut cancels) = (0, 0);
    let mut out = Vec::new();
    while sim.next(&mut out) {
        for i in 0..sim.universe().listings.len() {
            assert!(!sim.market().book(i).is_crossed(), "book {i} crossed");
        }
    }
    let mut events: Vec<_> = out
        .into_iter()
        .filter(|m| !m.duplicate)
        .flat_map(|m| m.events)
        .collect();
    // delayed deliveries arrive out of generation order; check in generation order
    events.sort_by_key(|g| g.seq);
    assert!(
        events.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
        "every event sent once"
    );
    {
        for g in events {
            match &g.event {
                Event::Order(o) => {
                    let (tick, lot) = grid[&o.symbol];
                    assert!(o.quantity.is_multiple_of(lot), "{o:?}");
                    if let Some(p) = o.price {
                        assert!(p.is_multiple_of(tick) && p.is_positive(), "{o:?}");
                    }
                    assert!(
                        !closed.contains(&o.order_id),
                        "event for a closed order {o:?}"
                    );
                    if o.action == OrderAction::Cancel {
                        closed.insert(o.order_id.clone());
                    }
                }
                Event::Execution(e) => {
                    let (tick, lot) = grid[&e.symbol];
                    assert!(e.price.is_multiple_of(tick) && e.quantity.is_multiple_of(lot));
                    match e.lifecycle {
                        Lifecycle::New => {
                            assert!(
                                !closed.contains(&e.order_id),
                                "cancelled order {} traded",
                                e.order_id
                            );
                            new_execs.insert(e.exec_id.clone(), (e.price, e.quantity));
                            matches
                                .entry(g.match_id.unwrap())
                                .or_default()
                                .push(g.event.clone());
                        }
                        Lifecycle::Amend | Lifecycle::Cancel => {
                            let r = e.ref_exec_id.as_ref().unwrap();
                            assert!(new_execs.contains_key(r), "correction of unknown {r}");
                            assert!(g.match_id.is_none());
                            if e.lifecycle == Lifecycle::Amend {
                                amends += 1;
                            } else {
                                cancels += 1;
                                assert_eq!(new_execs[r], (e.price, e.quantity));
                            }
                        }
                    }
                }
                Event::Trade(t) => {
                    matches
                        .entry(g.match_id.unwrap())
                        .or_default()
                        .push(g.event.clone());
                    let (tick, lot) = grid[&t.symbol];
                    assert!(t.price.is_multiple_of(tick) && t.volume.is_multiple_of(lot));
                }
            }
        }
    }
    assert!(matches.len() > 10_000, "only {} matches", matches.len());
    assert!(
        amends > 100 && cancels > 100,
        "{amends} amends, {cancels} cancels"
    );
    for (m, events) in &matches {
        let mut sides = Vec::new();
        let mut prints = Vec::new();
        for e in events {
            match e {
                Event::Execution(x) => sides.push((x.side, x.price, x.quantity, x.symbol.clone())),
                Event::Trade(t) => prints.push((t.price, t.volume, t.symbol.clone())),
                Event::Order(_) => unreachable!(),
            }
        }
        sides.sort_by_key(|s| s.0);
        assert_eq!(sides.len(), 2, "match {m}: {events:?}");
        assert_eq!(
            (sides[0].0, sides[1].0),
            (Side::Buy, Side::Sell),
            "match {m}"
        );
        assert_eq!(
            sides[0].1..=sides[0].2,
            sides[1].1..=sides[1].2,
            "match {m}: price and quantity"
        );
        assert_eq!(
            prints,
            vec![(sides[0].1, sides[0].2, sides[0].3.clone())],
            "match {m}"
        );
    }
}

#[test]
fn fault_fractions_are_as_configured() {
    let cfg = SimConfig {
        out_of_order: 0.05,
        late: 0.01,
        duplicate: 0.02,
        malformed: 0.01,
        ..cfg(9, 200_000)
    };
    let msgs = all(&cfg);
    let originals: Vec<&Message> = msgs
        .iter()
        .filter(|m| !m.duplicate && m.malformed.is_none())
        .collect();
    let n = originals.len() as f64;
    let frac = |k: usize| k as f64 / n;
    let dup = msgs.iter().filter(|m| m.duplicate).count();
    let bad = msgs.iter().filter(|m| m.malformed.is_some()).count();
    let late = originals
        .iter()
        .filter(|m| m.delivery == Delivery::Late)
        .count();
    let ooo = originals
        .iter()
        .filter(|m| m.delivery == Delivery::OutOfOrder)
        .count();
    for (name, got, want) in [
        ("duplicate", frac(dup), 0.02),
        ("malformed", frac(bad), 0.01),
        ("late", frac(late), 0.01),
        ("out-of-order", frac(ooo), 0.05),
    ] {
        assert!((got - want).abs() < want * 0.15, "{name}: {got} vs {want}");
    }
    // a late message arrives more than `lateness` after its event time, an out-of-order one
    // within max-delay; delivery times never go backwards
    for m in &originals {
        let ts = m.events[0].event.ts().micros();
        let delay = m.deliver_at - ts;
        match m.delivery {
            Delivery::Late => assert!(delay > 30_000_000, "{delay}"),
            Delivery::OutOfOrder => assert!(delay > 0 && delay <= 3_000_000, "{delay}"),
            Delivery::OnTime => assert!((0..1_000_000).contains(&delay), "{delay}"),
        }
    }
    assert!(msgs.windows(2).all(|w| w[0].deliver_at <= w[1].deliver_at));
    // every duplicate repeats an original byte for byte
    let payloads: HashSet<&[u8]> = originals.iter().map(|m| m.payload.as_slice()).collect();
    assert!(
        msgs.iter()
            .filter(|m| m.duplicate)
            .all(|m| payloads.contains(m.payload.as_slice()))
    );
}

#[test]
fn clock_follows_weekdays_and_sessions() {
    // a 10-minute session, a message every 60 ms: a little over three sessions
    let cfg = SimConfig {
        rate: 1000.0,
        time_scale: 60.0,
        session: Duration::from_secs(600),
        start: "2026-01-09T14:30:00Z".into(), // a Friday
        duration: Some(Duration::from_secs(3 * 600 + 60)),
        ..SimConfig::default()
    };
    let msgs = all(&cfg);
    let mut days = BTreeMap::new();
    for m in msgs.iter().filter(|m| m.malformed.is_none()) {
        for g in &m.events {
            let t = g.event.ts();
            *days.entry(t.utc_date()).or_insert(0) += 1;
            let open = t
                .to_datetime()
                .date_naive()
                .and_hms_opt(14, 30, 0)
                .unwrap()
                .and_utc();
            if !matches!(g.event, Event::Execution(ref e) if e.lifecycle != Lifecycle::New) {
                let secs = (t.to_datetime() - open).num_seconds();
                assert!((0..600).contains(&secs), "{t} outside the session");
            }
        }
    }
    let dates: Vec<_> = days.keys().copied().collect();
    assert!(
        dates
            .iter()
            .all(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)),
        "{dates:?}"
    );
    assert_eq!(dates.first().unwrap().to_string(), "2026-01-09");
    assert!(
        dates.iter().any(|d| d.to_string() == "2026-01-12"),
        "Monday follows Friday: {dates:?}"
    );
    assert_eq!(dates.len(), 4, "{dates:?}");
}

#[test]
fn finnhub_messages_group_the_prints_of_one_step() {
    let cfg = SimConfig {
        tape_format: Some(Encoding::Finnhub),
        large_orders: 0.2,
        ..cfg(3, 50_000)
    };
    let msgs = all(&cfg);
    let tape: Vec<&Message> = msgs
        .iter()
        .filter(|m| m.malformed.is_none() && m.stream == lakehouse_simulator::Stream::Tape)
        .collect();
    assert!(
        tape.iter().any(|m| m.events.len() > 1),
        "a sweep prints several times"
    );
    for m in tape {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["type"], "trade");
        assert_eq!(v["data"].as_array().unwrap().len(), m.events.len());
        for (d, g) in v["data"].as_array().unwrap().iter().zip(&m.events) {
            let Event::Trade(t) = &g.event else { panic!() };
            assert_eq!(d["p"].to_string(), t.price.to_string());
            assert_eq!(
                EventTime::from_millis(d["t"].as_i64().unwrap()).unwrap(),
                t.ts
            );
        }
    }
}
