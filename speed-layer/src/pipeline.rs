//! The speed layer's processing, without I/O: raw Kafka messages in; the exact views, the live
//! window operators, late events and fired panes out. Its [`State`] (operators and offsets) is
//! what a checkpoint saves; the views are rebuilt on restore by replaying the input from
//! [`State::replay_from`], since they are a deterministic function of it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use lakehouse_lake::decode::{DecodeConfig, Decoded, EventKind, decode_as};
use lakehouse_lake::events::{KafkaMeta, LateEvent};
use lakehouse_lake::{BusinessCalendar, BusinessDate, EventTime};
use serde::{Deserialize, Serialize};

use crate::bars::{Bar, Print};
use crate::config::SpeedConfig;
use crate::views::{Applied, Input, Payload, Views};
use crate::window::{Admit, Aggregate, Operator, Pane, WatermarkSpec, WindowKind, WindowSpec};

/// Activity of one trader in a session window: order events and their time span.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Order events.
    pub events: u64,
    /// First event time, µs.
    pub first: Option<i64>,
    /// Last event time, µs.
    pub last: Option<i64>,
}

impl Aggregate for Activity {
    type In = i64;
    fn add(&mut self, ts: &i64) {
        self.events += 1;
        self.first = Some(self.first.map_or(*ts, |f| f.min(*ts)));
        self.last = Some(self.last.map_or(*ts, |l| l.max(*ts)));
    }
    fn merge(&mut self, o: &Self) {
        self.events += o.events;
        self.first = match (self.first, o.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(o.last);
    }
}

/// A pane of one of the live views.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PaneValue {
    /// `bars_1m`, `bars_5m`.
    Bar(Bar),
    /// `trader_sessions`.
    Activity(Activity),
}

impl PaneValue {
    /// Readable JSON: a bar's open, high, low, close, VWAP (decimal text), volume and count;
    /// a session's event count and first and last event times.
    pub fn to_json(&self) -> serde_json::Value {
        let text = |d: Option<lakehouse_lake::Decimal>| d.map(|d| d.to_string());
        match self {
            PaneValue::Bar(b) => serde_json::json!({
                "open": text(b.open()), "high": text(b.high()), "low": text(b.low()),
                "close": text(b.close()), "vwap": text(b.vwap()),
                "volume": b.volume().to_string(), "count": b.count(),
            }),
            PaneValue::Activity(a) => serde_json::json!({
                "events": a.events,
                "first": a.first.map(|t| EventTime::from_micros(t).to_string()),
                "last": a.last.map(|t| EventTime::from_micros(t).to_string()),
            }),
        }
    }
}

/// A fired pane with the view it belongs to and the watermark when it fired.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FiredPane {
    /// `bars_1m`, `bars_5m` or `trader_sessions`.
    pub view: &'static str,
    /// The pane.
    pub pane: Pane<String, PaneValue>,
    /// The view's watermark, µs.
    pub watermark: i64,
}

/// What a checkpoint saves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Per topic and partition, the next offset to process.
    pub next: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Per topic and partition, where the replay that rebuilds the views starts.
    pub replay_from: BTreeMap<String, BTreeMap<i32, i64>>,
    /// 1-minute tumbling bars per symbol.
    pub bars_1m: Operator<String, Bar>,
    /// 5-minute bars sliding by 1 minute.
    pub bars_5m: Operator<String, Bar>,
    /// Trader activity sessions.
    pub sessions: Operator<String, Activity>,
    /// Messages that did not decode (ingest keeps them as dead letters).
    pub undecodable: u64,
    /// Late events written.
    pub late: u64,
}

/// The state format this build writes and reads.
pub const STATE_VERSION: u32 = 1;

const MINUTE: i64 = 60_000_000;

fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl State {
    /// Where the replay of a partition starts, if it was ever seen.
    pub fn replay_start(&self, topic: &str, partition: i32) -> Option<i64> {
        self.replay_from.get(topic)?.get(&partition).copied()
    }

    /// A fresh state for `cfg`.
    pub fn new(cfg: &SpeedConfig) -> State {
        let wm = WatermarkSpec {
            out_of_orderness: micros(cfg.out_of_orderness),
            idle_timeout: micros(cfg.idle_timeout),
        };
        let spec = |kind| WindowSpec {
            kind,
            allowed_lateness: micros(cfg.allowed_lateness),
            early_every: cfg.early_every.map(micros),
            accumulation: cfg.accumulation,
        };
        State {
            version: STATE_VERSION,
            next: BTreeMap::new(),
            replay_from: BTreeMap::new(),
            bars_1m: Operator::new(spec(WindowKind::Tumbling { size: MINUTE }), wm),
            bars_5m: Operator::new(
                spec(WindowKind::Sliding {
                    size: 5 * MINUTE,
                    slide: MINUTE,
                }),
                wm,
            ),
            sessions: Operator::new(
                spec(WindowKind::Session {
                    gap: micros(cfg.session_gap),
                }),
                wm,
            ),
            undecodable: 0,
            late: 0,
        }
    }
}

/// What processing a message produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Late events for `l1/late_events`.
    pub late: Vec<(LateEvent, KafkaMeta)>,
    /// Fired panes.
    pub panes: Vec<FiredPane>,
}

/// One Kafka message.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// Index of its topic in the configuration.
    pub topic: usize,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka timestamp, ms.
    pub kafka_ts: Option<i64>,
    /// Payload.
    pub payload: &'a [u8],
}

/// Business dates by minute: the calendar's cut-off is whole minutes, so one lookup serves a
/// minute of events.
#[derive(Default)]
struct DateCache {
    minute: Option<i64>,
    date: Option<BusinessDate>,
}

impl DateCache {
    fn date(&mut self, calendar: &BusinessCalendar, ts: EventTime) -> BusinessDate {
        let minute = ts.micros().div_euclid(MINUTE);
        match (self.minute, self.date) {
            (Some(m), Some(d)) if m == minute => d,
            _ => {
                let d = calendar.business_date(ts);
                self.minute = Some(minute);
                self.date = Some(d);
                d
            }
        }
    }
}

/// The processing of the speed layer.
pub struct Pipeline {
    cfg: SpeedConfig,
    topics: Vec<Arc<str>>,
    calendar: BusinessCalendar,
    views: Arc<RwLock<Views>>,
    state: State,
    decode: DecodeConfig,
    bar_panes: Vec<Pane<String, Bar>>,
    session_panes: Vec<Pane<String, Activity>>,
    dates: DateCache,
}

impl Pipeline {
    /// A pipeline over `views` (shared with queries), continuing from `state`.
    pub fn new(
        cfg: SpeedConfig,
        calendar: BusinessCalendar,
        views: Arc<RwLock<Views>>,
        state: State,
    ) -> Pipeline {
        let topics = cfg
            .topics
            .iter()
            .map(|t| Arc::from(t.topic.as_str()))
            .collect();
        let decode = DecodeConfig {
            max_message_bytes: cfg.max_message_bytes,
        };
        Pipeline {
            cfg,
            topics,
            calendar,
            views,
            state,
            decode,
            bar_panes: Vec::new(),
            session_panes: Vec::new(),
            dates: DateCache::default(),
        }
    }

    /// The configured topics, in configuration order.
    pub fn topics(&self) -> &[Arc<str>] {
        &self.topics
    }

    /// The state to checkpoint.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The next offset to process of a partition, if it was ever seen.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.state.next.get(topic)?.get(&partition).copied()
    }

    /// Where the replay of a partition starts, if it was ever seen.
    pub fn replay_from(&self, topic: &str, partition: i32) -> Option<i64> {
        self.state.replay_start(topic, partition)
    }

    /// Is this message already reflected in the operators (a replay that rebuilds the views)?
    fn replaying(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.next_offset(topic, partition)
            .is_some_and(|next| offset < next)
    }

    /// Processes one message at processing time `now` (µs).
    pub fn process(&mut self, m: Message<'_>, now: i64, out: &mut Output) {
        let topic = self.topics[m.topic].clone();
        let replay = self.replaying(&topic, m.partition, m.offset);
        if self.replay_from(&topic, m.partition).is_none() {
            self.state
                .replay_from
                .entry(topic.to_string())
                .or_default()
                .insert(m.partition, m.offset);
        }
        let t = &self.cfg.topics[m.topic];
        let decoded = decode_as(t.format, t.kind, m.payload, &self.decode);
        let meta = || KafkaMeta {
            topic: topic.to_string(),
            partition: m.partition,
            offset: m.offset,
            kafka_ts: m.kafka_ts.and_then(|ms| EventTime::from_millis(ms).ok()),
            ingest_ts: EventTime::from_micros(now),
        };
        // one watermark partition id per (topic, partition)
        let pid = ((m.topic as u32) << 20) | (m.partition as u32 & 0xF_FFFF);
        let payloads: Vec<Payload> = match decoded {
            Ok(Decoded::Trades(v)) => v.into_iter().map(Payload::Trade).collect(),
            Ok(Decoded::Order(o)) => vec![Payload::Order(o)],
            Ok(Decoded::Execution(e)) => vec![Payload::Execution(e)],
            Err(_) => {
                if !replay {
                    self.state.undecodable += 1;
                }
                Vec::new()
            }
        };
        // a repeated delivery reaches neither the views nor the live windows
        let mut admitted: Vec<(Payload, BusinessDate, bool)> = Vec::with_capacity(payloads.len());
        {
            let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
            for p in payloads {
                let date = self.dates.date(&self.calendar, p.ts());
                match views.admit(&topic, m.partition, m.offset, date, &p) {
                    Applied::Duplicate | Applied::Excluded => {}
                    Applied::Covered => admitted.push((p, date, false)),
                    Applied::Added => admitted.push((p, date, true)),
                }
            }
        }
        let mut inserts = Vec::new();
        for (p, date, added) in admitted {
            if !replay {
                match (&p, t.kind) {
                    (Payload::Trade(tr), _) => {
                        let print = Print {
                            ts: tr.ts.micros(),
                            partition: m.partition,
                            offset: m.offset,
                            price: tr.price,
                            volume: tr.volume,
                        };
                        for (view, op) in [
                            ("bars_1m", &mut self.state.bars_1m),
                            ("bars_5m", &mut self.state.bars_5m),
                        ] {
                            let wm = op.watermark();
                            if op.process(
                                pid,
                                &tr.symbol,
                                print.ts,
                                &print,
                                now,
                                &mut self.bar_panes,
                            ) == Admit::Late
                            {
                                self.state.late += 1;
                                out.late.push((
                                    late_event(view, tr.symbol.clone(), tr.ts, wm, m.payload),
                                    meta(),
                                ));
                            }
                            forward(
                                view,
                                &mut self.bar_panes,
                                op.watermark(),
                                PaneValue::Bar,
                                out,
                            );
                        }
                    }
                    (Payload::Order(o), EventKind::Orders) => {
                        let op = &mut self.state.sessions;
                        let wm = op.watermark();
                        let ts = o.ts.micros();
                        if op.process(pid, &o.trader, ts, &ts, now, &mut self.session_panes)
                            == Admit::Late
                        {
                            self.state.late += 1;
                            out.late.push((
                                late_event(
                                    "trader_sessions",
                                    o.trader.clone(),
                                    o.ts,
                                    wm,
                                    m.payload,
                                ),
                                meta(),
                            ));
                        }
                        forward(
                            "trader_sessions",
                            &mut self.session_panes,
                            op.watermark(),
                            PaneValue::Activity,
                            out,
                        );
                    }
                    _ => {}
                }
            }
            if added {
                inserts.push(Input {
                    topic: topic.clone(),
                    partition: m.partition,
                    offset: m.offset,
                    date,
                    payload: p,
                });
            }
        }
        // the events and their offset under one lock: an answer never holds an event that its
        // freshness says was not read yet
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        for input in inserts {
            views.insert(input);
        }
        views.note_consumed(&topic, m.partition, m.offset);
        drop(views);
        if replay {
            return;
        }
        match self.state.next.get_mut(&*topic) {
            Some(parts) => {
                parts.insert(m.partition, m.offset + 1);
            }
            None => {
                self.state.next.insert(
                    topic.to_string(),
                    BTreeMap::from([(m.partition, m.offset + 1)]),
                );
            }
        }
    }

    /// Processing time moved on: idleness and early triggers.
    pub fn tick(&mut self, now: i64, out: &mut Output) {
        let watermark = self.state.bars_1m.watermark();
        self.views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_watermark(watermark);
        for (view, op) in [
            ("bars_1m", &mut self.state.bars_1m),
            ("bars_5m", &mut self.state.bars_5m),
        ] {
            op.on_processing_time(now, &mut self.bar_panes);
            forward(
                view,
                &mut self.bar_panes,
                op.watermark(),
                PaneValue::Bar,
                out,
            );
        }
        let op = &mut self.state.sessions;
        op.on_processing_time(now, &mut self.session_panes);
        forward(
            "trader_sessions",
            &mut self.session_panes,
            op.watermark(),
            PaneValue::Activity,
            out,
        );
    }
}

/// The `l1/late_events` row of an element `view` refused at watermark `wm`.
fn late_event(view: &str, key: String, ts: EventTime, wm: i64, payload: &[u8]) -> LateEvent {
    LateEvent {
        view: view.to_string(),
        key,
        ts,
        watermark: EventTime::from_micros(wm),
        raw: Some(payload.to_vec()),
    }
}

/// Moves the panes an operator fired into `out`, tagged with their view.
fn forward<A>(
    view: &'static str,
    fired: &mut Vec<Pane<String, A>>,
    watermark: i64,
    wrap: fn(A) -> PaneValue,
    out: &mut Output,
) {
    out.panes.extend(fired.drain(..).map(|p| FiredPane {
        view,
        pane: Pane {
            key: p.key,
            window: p.window,
            timing: p.timing,
            index: p.index,
            is_final: p.is_final,
            retraction: p.retraction,
            value: wrap(p.value),
        },
        watermark,
    }));
}
