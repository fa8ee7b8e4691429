//! `lakehouse-simulator`: a seeded market of agents trading on per-symbol limit order books,
//! producing orders, executions and tape prints, with the ground truth of everything it sent.
//!
//! - [`book`]: the price-time priority order book and its matching.
//! - [`universe`]: instruments, accounts (desks, traders) and FX rates, and their CSVs.
//! - [`market`]: the agents, the business-day clock and the logical events (pure).
//! - [`Simulation`]: the market plus delivery faults (out-of-order, late, duplicate,
//!   malformed) and encodings: the messages in the order they are sent (pure).
//! - [`truth`]: the ground-truth Parquet file; [`run`]: the simulator process (pacing, Kafka
//!   output through an idempotent producer, reference CSVs, progress).
//!
//! ```
//! use lakehouse_simulator::{SimConfig, Simulation};
//!
//! let cfg = SimConfig { seed: 7, events: Some(1_000), ..SimConfig::default() };
//! let mut sim = Simulation::new(&cfg).unwrap();
//! let mut messages = Vec::new();
//! while sim.next(&mut messages) {}
//! assert!(sim.events() >= 1_000);
//! // the same seed gives the same messages
//! let mut again = Vec::new();
//! let mut sim = Simulation::new(&cfg).unwrap();
//! while sim.next(&mut again) {}
//! assert_eq!(messages, again);
//! ```

pub mod book;
pub mod config;
pub mod encode;
pub mod kafka;
pub mod market;
pub mod rng;
pub mod run;
pub mod truth;
pub mod universe;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use lakehouse_lake::EventTime;

pub use config::{ConfigError, Encoding, SimConfig, Topics};
pub use run::{Outputs, Summary, run};

use crate::market::{Event, Generated, Market, MarketParams};
use crate::rng::Rng;
use crate::universe::Universe;

/// The three streams (topics) a simulation writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Tape prints (`market-trades`), keyed by symbol.
    Tape,
    /// Orders, keyed by symbol.
    Orders,
    /// Executions, keyed by account.
    Executions,
}

impl Stream {
    /// All three.
    pub const ALL: [Stream; 3] = [Stream::Tape, Stream::Orders, Stream::Executions];

    /// The truth's `kind` of the events on this stream.
    pub fn kind(self) -> &'static str {
        match self {
            Stream::Tape => "market-trade",
            Stream::Orders => "order",
            Stream::Executions => "execution",
        }
    }

    /// The configured topic.
    pub fn topic(self, topics: &Topics) -> &str {
        match self {
            Stream::Tape => &topics.market_trades,
            Stream::Orders => &topics.orders,
            Stream::Executions => &topics.executions,
        }
    }

    fn of(event: &Event) -> Stream {
        match event {
            Event::Trade(_) => Stream::Tape,
            Event::Order(_) => Stream::Orders,
            Event::Execution(_) => Stream::Executions,
        }
    }
}

/// How a message was delivered relative to its event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// At once.
    OnTime,
    /// Delayed by up to `max-delay`: after messages with later event times.
    OutOfOrder,
    /// Delayed beyond `lateness`.
    Late,
}

/// One Kafka message, with the logical events it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its stream.
    pub stream: Stream,
    /// Kafka key.
    pub key: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// The events it carries (several for a Finnhub message, none when malformed).
    pub events: Vec<Generated>,
    /// The class of damage when it is malformed.
    pub malformed: Option<&'static str>,
    /// A second delivery of an earlier message.
    pub duplicate: bool,
    /// Delivery delay class.
    pub delivery: Delivery,
    /// Simulated delivery time, microseconds.
    pub deliver_at: i64,
}

struct Queued {
    deliver_at: i64,
    seq: u64,
    message: Message,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deliver_at, self.seq).cmp(&(other.deliver_at, other.seq))
    }
}

/// The market plus delivery: yields messages in the order they are sent.
pub struct Simulation {
    market: Market,
    rng: Rng,
    cfg: SimConfig,
    queue: BinaryHeap<Reverse<Queued>>,
    queued: u64,
    scratch: Vec<Generated>,
    events: u64,
    stopping: bool,
    max_delay_us: i64,
    lateness_us: i64,
}

impl Simulation {
    /// A simulation of `cfg` (validated here).
    pub fn new(cfg: &SimConfig) -> Result<Simulation, ConfigError> {
        cfg.validate()?;
        let universe = Universe::new(
            cfg.seed,
            cfg.symbols,
            cfg.accounts,
            cfg.desks,
            cfg.traders_per_desk,
        );
        let params = MarketParams {
            seed: cfg.seed,
            start: cfg.start_time()?,
            session_us: cfg.session.as_micros() as i64,
            gap_us: cfg.time_scale * 1e6 / cfg.rate,
            exec_amend: cfg.exec_amend,
            exec_cancel: cfg.exec_cancel,
            large_orders: cfg.large_orders,
            prints_in_millis: cfg.tape_encoding() == Encoding::Finnhub,
        };
        Ok(Simulation {
            market: Market::new(universe, params),
            rng: Rng::new(cfg.seed, 4),
            cfg: cfg.clone(),
            queue: BinaryHeap::new(),
            queued: 0,
            scratch: Vec::new(),
            events: 0,
            stopping: false,
            max_delay_us: cfg.max_delay.as_micros() as i64,
            lateness_us: cfg.lateness.as_micros() as i64,
        })
    }

    /// The instruments and accounts.
    pub fn universe(&self) -> &Universe {
        self.market.universe()
    }

    /// The market (books, clock).
    pub fn market(&self) -> &Market {
        &self.market
    }

    /// Logical events generated so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The simulated clock.
    pub fn now(&self) -> EventTime {
        self.market.now()
    }

    /// Stops generating: the following calls to [`Simulation::next`] only deliver what is
    /// still delayed.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    fn done(&self) -> bool {
        self.stopping
            || self.cfg.events.is_some_and(|n| self.events >= n)
            || self
                .cfg
                .duration
                .is_some_and(|d| self.market.traded_us() >= d.as_micros() as i64)
    }

    /// Appends the next messages to send (one market step's worth, after the delayed messages
    /// that fell due). Returns false once the simulation is over and everything was delivered.
    pub fn next(&mut self, out: &mut Vec<Message>) -> bool {
        if self.done() {
            while let Some(Reverse(q)) = self.queue.pop() {
                out.push(q.message);
            }
            return false;
        }
        let now = self.market.now().micros();
        let mut scratch = std::mem::take(&mut self.scratch);
        self.market.step(&mut scratch);
        self.events += scratch.len() as u64;
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(q)| q.deliver_at <= now)
        {
            let Reverse(q) = self.queue.pop().expect("peeked");
            out.push(q.message);
        }
        let finnhub = self.cfg.tape_encoding() == Encoding::Finnhub;
        // in the Finnhub shape the prints of one step travel together, at the first one's place
        let mut prints: Vec<Generated> = if finnhub {
            scratch
                .iter()
                .filter(|g| matches!(g.event, Event::Trade(_)))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        for g in scratch.drain(..) {
            let stream = Stream::of(&g.event);
            if finnhub && stream == Stream::Tape {
                if !prints.is_empty() {
                    let group = std::mem::take(&mut prints);
                    self.deliver(now, stream, group, out);
                }
                continue;
            }
            self.deliver(now, stream, vec![g], out);
        }
        self.scratch = scratch;
        true
    }

    fn encoding(&self, stream: Stream) -> Encoding {
        match stream {
            Stream::Tape => self.cfg.tape_encoding(),
            _ => self.cfg.format,
        }
    }

    fn deliver(
        &mut self,
        now: i64,
        stream: Stream,
        events: Vec<Generated>,
        out: &mut Vec<Message>,
    ) {
        let encoding = self.encoding(stream);
        let first = &events[0].event;
        let first_ts = first.ts().micros();
        let key = match first {
            Event::Trade(t) => t.symbol.clone(),
            Event::Order(o) => o.symbol.clone(),
            Event::Execution(e) => e.account.clone(),
        };
        let payload = match encoding {
            Encoding::Json => encode::json(first),
            Encoding::Protobuf => encode::protobuf(first),
            Encoding::Finnhub => {
                let prints: Vec<_> = events
                    .iter()
                    .filter_map(|g| match &g.event {
                        Event::Trade(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                encode::finnhub(&prints)
            }
        };
        let r = self.rng.unit();
        let (delivery, delay) = if r < self.cfg.late {
            let l = self.lateness_us;
            (Delivery::Late, l + 1 + self.rng.below(l as u64) as i64)
        } else if r < self.cfg.late + self.cfg.out_of_order && self.max_delay_us > 0 {
            (
                Delivery::OutOfOrder,
                1 + self.rng.below(self.max_delay_us as u64) as i64,
            )
        } else {
            (Delivery::OnTime, 0)
        };
        let malformed = self.rng.chance(self.cfg.malformed).then(|| {
            let v = self.rng.below(encode::MALFORMED_CLASSES.len() as u64) as usize;
            Message {
                stream,
                key: key.clone(),
                payload: encode::malformed(encoding, first, v),
                events: Vec::new(),
                malformed: Some(encode::MALFORMED_CLASSES[v]),
                duplicate: false,
                delivery: Delivery::OnTime,
                deliver_at: now.max(first_ts),
            }
        });
        let message = Message {
            stream,
            key,
            payload,
            events,
            malformed: None,
            duplicate: false,
            delivery,
            // a correction flushed at the close is sent at its own (later) time
            deliver_at: now.max(first_ts) + delay,
        };
        if self.rng.chance(self.cfg.duplicate) {
            let extra = self.rng.below(self.max_delay_us.max(1) as u64) as i64;
            let mut copy = message.clone();
            copy.duplicate = true;
            copy.deliver_at += extra;
            self.enqueue(copy);
        }
        self.send_or_queue(now, message, out);
        if let Some(m) = malformed {
            self.send_or_queue(now, m, out);
        }
    }

    /// Messages due now go out at once (everything queued that is due went first); the rest
    /// wait in the queue.
    fn send_or_queue(&mut self, now: i64, message: Message, out: &mut Vec<Message>) {
        if message.deliver_at <= now {
            out.push(message);
        } else {
            self.enqueue(message);
        }
    }

    fn enqueue(&mut self, message: Message) {
        self.queued += 1;
        self.queue.push(Reverse(Queued {
            deliver_at: message.deliver_at,
            seq: self.queued,
            message,
        }));
    }
}
