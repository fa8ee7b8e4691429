//! `[simulate]` settings: the market's size, its clock, the output encodings and the fractions
//! of faulty deliveries.

use std::collections::BTreeMap;
use std::time::Duration;

use lakehouse_lake::EventTime;
use serde::{Deserialize, Serialize};

/// How a stream is encoded on its topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The JSON of DESIGN section 9 (decimals as strings).
    #[default]
    Json,
    /// `lakehouse.v1` Protobuf messages (proto/lakehouse/v1/events.proto).
    Protobuf,
    /// Market trades only: the Finnhub trade shape, the prints of one match per message.
    Finnhub,
}

impl Encoding {
    /// The config text.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Protobuf => "protobuf",
            Encoding::Finnhub => "finnhub",
        }
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Encoding::Json),
            "protobuf" => Ok(Encoding::Protobuf),
            "finnhub" => Ok(Encoding::Finnhub),
            other => Err(format!(
                "unknown format {other:?}: expected json, protobuf or finnhub"
            )),
        }
    }
}

/// Topic names of the three streams.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Topics {
    /// Tape prints.
    pub market_trades: String,
    /// Order lifecycle.
    pub orders: String,
    /// Fills and their corrections.
    pub executions: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            market_trades: "market-trades".into(),
            orders: "orders".into(),
            executions: "executions".into(),
        }
    }
}

/// The `[simulate]` section.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed: one seed and one configuration give the same events, byte for byte.
    pub seed: u64,
    /// Messages per second of wall-clock time (duplicates and malformed ones included). It also
    /// sets the density of the simulated clock: `rate` messages per `time-scale` simulated
    /// seconds, paced or not.
    pub rate: f64,
    /// Produce as fast as possible instead of pacing at `rate` (event times are unchanged).
    pub as_fast_as_possible: bool,
    /// Stop after this much simulated trading time (unset: run until stopped or `events`).
    #[serde(with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Stop once this many logical events were generated, at the end of that market step (a
    /// match's executions and print stay together). Unset: `duration`, or until stopped.
    pub events: Option<u64>,
    /// Simulated seconds per wall-clock second when paced (1: event times advance with the
    /// wall clock; 3600: an hour of market per second).
    pub time_scale: f64,
    /// The first business day's open, RFC 3339 (UTC), or "now" (not reproducible).
    pub start: String,
    /// Trading hours per business day; at the close the clock jumps to the next weekday's open.
    #[serde(with = "humantime_serde")]
    pub session: Duration,
    /// Number of instruments (the first ones are well-known tickers, then SIM0001, ...).
    pub symbols: usize,
    /// Number of accounts (agents).
    pub accounts: usize,
    /// Number of desks the accounts are spread over.
    pub desks: usize,
    /// Traders per desk.
    pub traders_per_desk: usize,
    /// Encoding of orders and executions.
    pub format: Encoding,
    /// Encoding of market trades (defaults to `format`; `finnhub` is the Finnhub trade shape).
    pub tape_format: Option<Encoding>,
    /// Topic names.
    pub topics: Topics,
    /// Partitions of the topics the simulator creates when they do not exist.
    pub partitions: i32,
    /// Fraction of messages delivered out of order: delayed by up to `max-delay`.
    pub out_of_order: f64,
    /// Largest out-of-order delay (simulated time).
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Fraction of messages delivered late: delayed by more than `lateness` (up to twice it).
    pub late: f64,
    /// The lateness a late message exceeds (simulated time).
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// Fraction of messages delivered twice (the copy up to `max-delay` after the original).
    pub duplicate: f64,
    /// Malformed messages added, as a fraction of messages (bad JSON or Protobuf, bad enum,
    /// negative price, missing field).
    pub malformed: f64,
    /// Fraction of executions later amended (price and quantity replaced).
    pub exec_amend: f64,
    /// Fraction of executions later cancelled.
    pub exec_cancel: f64,
    /// Fraction of orders 20 to 50 times the usual size (large trades).
    pub large_orders: f64,
    /// Extra librdkafka producer properties (security.protocol, sasl.*, ...).
    pub kafka_properties: BTreeMap<String, String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            rate: 1000.0,
            as_fast_as_possible: false,
            duration: None,
            events: None,
            time_scale: 1.0,
            start: "2026-01-05T14:30:00Z".into(),
            session: Duration::from_secs(6 * 3600 + 1800),
            symbols: 20,
            accounts: 60,
            desks: 6,
            traders_per_desk: 3,
            format: Encoding::Json,
            tape_format: None,
            topics: Topics::default(),
            partitions: 4,
            out_of_order: 0.02,
            max_delay: Duration::from_secs(2),
            late: 0.002,
            lateness: Duration::from_secs(30),
            duplicate: 0.002,
            malformed: 0.001,
            exec_amend: 0.01,
            exec_cancel: 0.005,
            large_orders: 0.01,
            kafka_properties: BTreeMap::new(),
        }
    }
}

/// A configuration the simulator cannot run.
#[derive(Debug, thiserror::Error)]
#[error("[simulate] {0}")]
pub struct ConfigError(pub String);

impl SimConfig {
    /// The tape's encoding.
    pub fn tape_encoding(&self) -> Encoding {
        self.tape_format.unwrap_or(self.format)
    }

    /// The open of the first business day (`start`, or the wall clock for "now").
    pub fn start_time(&self) -> Result<EventTime, ConfigError> {
        if self.start == "now" {
            return Ok(EventTime::now());
        }
        EventTime::parse_rfc3339(&self.start).map_err(|e| {
            ConfigError(format!(
                "start: {e} (expected RFC 3339 such as 2026-01-05T14:30:00Z, or \"now\")"
            ))
        })
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return err(format!("rate must be positive, got {}", self.rate));
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return err(format!(
                "time-scale must be positive, got {}",
                self.time_scale
            ));
        }
        if self.session < Duration::from_secs(60) || self.session > Duration::from_secs(86_400) {
            return err(format!(
                "session must be between 1m and 24h, got {}",
                humantime::format_duration(self.session)
            ));
        }
        for (key, n) in [
            ("symbols", self.symbols),
            ("accounts", self.accounts),
            ("desks", self.desks),
            ("traders-per-desk", self.traders_per_desk),
        ] {
            if n == 0 {
                return err(format!("{key} must be at least 1"));
            }
        }
        if self.symbols > 9999 || self.accounts > 99_999 {
            return err("at most 9999 symbols and 99999 accounts".into());
        }
        if self.desks > self.accounts {
            return err(format!(
                "desks ({}) cannot exceed accounts ({})",
                self.desks, self.accounts
            ));
        }
        if self.format == Encoding::Finnhub {
            return err("format = \"finnhub\" applies to the tape only: set tape-format".into());
        }
        if self.partitions < 1 {
            return err(format!(
                "partitions must be at least 1, got {}",
                self.partitions
            ));
        }
        for (key, p) in [
            ("out-of-order", self.out_of_order),
            ("late", self.late),
            ("duplicate", self.duplicate),
            ("malformed", self.malformed),
            ("exec-amend", self.exec_amend),
            ("exec-cancel", self.exec_cancel),
            ("large-orders", self.large_orders),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return err(format!("{key} is a fraction between 0 and 1, got {p}"));
            }
        }
        if self.out_of_order + self.late > 1.0 {
            return err("out-of-order + late cannot exceed 1".into());
        }
        if self.exec_amend + self.exec_cancel > 1.0 {
            return err("exec-amend + exec-cancel cannot exceed 1".into());
        }
        if self.late > 0.0 && self.lateness.is_zero() {
            return err("late needs a positive lateness".into());
        }
        if self.max_delay >= self.lateness && self.late > 0.0 {
            return err(format!(
                "max-delay ({}) must be below lateness ({}) so that out-of-order and late differ",
                humantime::format_duration(self.max_delay),
                humantime::format_duration(self.lateness)
            ));
        }
        let topics = [
            &self.topics.market_trades,
            &self.topics.orders,
            &self.topics.executions,
        ];
        if topics.iter().any(|t| t.is_empty()) {
            return err("topic names cannot be empty".into());
        }
        if topics[0] == topics[1] || topics[1] == topics[2] || topics[0] == topics[2] {
            return err("the three topics must differ".into());
        }
        self.start_time()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        SimConfig::default().validate().unwrap();
        let bad = |f: fn(&mut SimConfig), key: &str| {
            let mut c = SimConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e} should name {key}");
        };
        bad(|c| c.rate = 0.0, "rate");
        bad(|c| c.duplicate = 1.5, "duplicate");
        bad(|c| c.symbols = 0, "symbols");
        bad(|c| c.start = "yesterday".into(), "start");
        bad(|c| c.max_delay = Duration::from_secs(60), "max-delay");
        bad(|c| c.topics.orders = "executions".into(), "topics");
        bad(|c| c.format = Encoding::Finnhub, "tape-format");
    }
}
