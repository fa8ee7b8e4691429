//! Event time (UTC, microseconds) and business dates.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};

/// An instant in UTC, in microseconds since the Unix epoch: the unit of Arrow
/// `Timestamp(Microsecond, "UTC")` and of Delta's `timestamp` type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(pub i64);

impl EventTime {
    /// From epoch milliseconds (the Kafka and Finnhub unit).
    pub fn from_millis(ms: i64) -> Result<Self> {
        ms.checked_mul(1000)
            .map(EventTime)
            .ok_or_else(|| Error::InvalidTimestamp {
                literal: ms.to_string(),
                reason: "out of range".into(),
            })
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        EventTime(Utc::now().timestamp_micros())
    }

    /// From epoch microseconds.
    pub const fn from_micros(us: i64) -> Self {
        EventTime(us)
    }

    /// Epoch microseconds.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 text (any offset; converted to UTC). Sub-microsecond digits are
    /// truncated toward the past.
    pub fn parse_rfc3339(text: &str) -> Result<Self> {
        let dt =
            DateTime::parse_from_rfc3339(text.trim()).map_err(|e| Error::InvalidTimestamp {
                literal: text.to_string(),
                reason: e.to_string(),
            })?;
        let secs = dt.timestamp();
        let micros = i64::from(dt.timestamp_subsec_micros());
        secs.checked_mul(1_000_000)
            .and_then(|s| s.checked_add(micros))
            .map(EventTime)
            .ok_or_else(|| Error::InvalidTimestamp {
                literal: text.to_string(),
                reason: "out of range".into(),
            })
    }

    /// As a chrono UTC date-time.
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// The UTC calendar date of this instant.
    pub fn utc_date(self) -> NaiveDate {
        self.to_datetime().date_naive()
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            self.to_datetime()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    }
}

/// A trading (business) date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusinessDate(pub NaiveDate);

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();

impl BusinessDate {
    /// Days since 1970-01-01: the Arrow `Date32` value.
    pub fn days_since_epoch(self) -> i32 {
        (self.0 - EPOCH).num_days() as i32
    }

    /// From an Arrow `Date32` value.
    pub fn from_days_since_epoch(days: i32) -> Self {
        BusinessDate(EPOCH + chrono::Duration::days(i64::from(days)))
    }

    /// The next calendar date.
    pub fn succ(self) -> Self {
        BusinessDate(self.0 + Days::new(1))
    }

    /// The previous calendar date.
    pub fn pred(self) -> Self {
        BusinessDate(self.0 - Days::new(1))
    }
}

impl FromStr for BusinessDate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(BusinessDate)
            .map_err(|e| Error::InvalidTimestamp {
                literal: s.to_string(),
                reason: format!("expected a date YYYY-MM-DD: {e}"),
            })
    }
}

impl fmt::Display for BusinessDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// Derives business dates from event time: the local date in `time_zone`, moved to the next
/// day for events at or after `cut_off` local time (a cut-off of 00:00 means the plain local date).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusinessCalendar {
    time_zone: Tz,
    cut_off: NaiveTime,
}

impl Default for BusinessCalendar {
    fn default() -> Self {
        BusinessCalendar {
            time_zone: Tz::UTC,
            cut_off: NaiveTime::MIN,
        }
    }
}

impl BusinessCalendar {
    /// A calendar for an IANA time zone name (e.g. `America/New_York`) and a cut-off `HH:MM`.
    pub fn new(time_zone: &str, cut_off: &str) -> Result<Self> {
        let time_zone: Tz = time_zone
            .parse()
            .map_err(|_| Error::Config(format!("unknown time zone {time_zone:?}")))?;
        let cut_off = NaiveTime::parse_from_str(cut_off, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(cut_off, "%H:%M:%S"))
            .map_err(|_| Error::Config(format!("cut-off {cut_off:?} is not HH:MM")))?;
        Ok(BusinessCalendar { time_zone, cut_off })
    }

    /// The configured time zone.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The configured cut-off (local time; 00:00 means none).
    pub fn cut_off(&self) -> NaiveTime {
        self.cut_off
    }

    /// The business date an event at `t` belongs to.
    pub fn business_date(&self, t: EventTime) -> BusinessDate {
        let local = self
            .time_zone
            .from_utc_datetime(&t.to_datetime().naive_utc());
        let date = local.date_naive();
        if self.cut_off != NaiveTime::MIN && local.time() >= self.cut_off {
            BusinessDate(date + Days::new(1))
        } else {
            BusinessDate(date)
        }
    }
}

impl BusinessCalendar {
    /// The instants of business date `date`: `[start, end)` in UTC, where `start` is the first
    /// instant whose business date is `date` and `end` the first of the next date. A local
    /// time that a daylight-saving jump skips moves to the first local time that exists.
    pub fn utc_range(&self, date: BusinessDate) -> (EventTime, EventTime) {
        (self.first_instant(date), self.first_instant(date.succ()))
    }

    fn first_instant(&self, date: BusinessDate) -> EventTime {
        let local = if self.cut_off == NaiveTime::MIN {
            date.0.and_time(NaiveTime::MIN)
        } else {
            date.pred().0.and_time(self.cut_off)
        };
        // a gap is at most a few hours; step a minute at a time to the first existing time
        let mut t = local;
        loop {
            if let Some(dt) = self.time_zone.from_local_datetime(&t).earliest() {
                let utc = dt.with_timezone(&Utc);
                return EventTime(utc.timestamp_micros());
            }
            t += chrono::Duration::minutes(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_millis_to_the_same_instant() {
        let a = EventTime::parse_rfc3339("2024-03-01T14:30:00.123456Z").unwrap();
        let b = EventTime::parse_rfc3339("2024-03-01T09:30:00.123456-05:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.micros() % 1_000_000, 123_456);
        let ms = EventTime::from_millis(1_709_303_400_123).unwrap();
        assert_eq!(ms.to_string(), "2024-03-01T14:30:00.123000Z");
        assert!(EventTime::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn business_date_honours_zone_and_cut_off() {
        let ny = BusinessCalendar::new("America/New_York", "17:00").unwrap();
        // 21:59 UTC = 16:59 New York (EST): still that day
        let t = EventTime::parse_rfc3339("2024-01-15T21:59:59Z").unwrap();
        assert_eq!(ny.business_date(t).to_string(), "2024-01-15");
        // 22:00 UTC = 17:00 New York: next business date
        let t = EventTime::parse_rfc3339("2024-01-15T22:00:00Z").unwrap();
        assert_eq!(ny.business_date(t).to_string(), "2024-01-16");
        // UTC with no cut-off is the UTC date
        let utc = BusinessCalendar::default();
        let t = EventTime::parse_rfc3339("2024-01-15T23:59:59.999999Z").unwrap();
        assert_eq!(utc.business_date(t).to_string(), "2024-01-15");
        assert!(BusinessCalendar::new("Mars/Olympus", "00:00").is_err());
        assert!(BusinessCalendar::new("UTC", "25:00").is_err());
    }

    #[test]
    fn utc_range_holds_exactly_the_instants_of_the_date() {
        let cals = [
            BusinessCalendar::default(),
            BusinessCalendar::new("America/New_York", "17:00").unwrap(),
            BusinessCalendar::new("Europe/London", "00:00").unwrap(),
            BusinessCalendar::new("Asia/Tokyo", "15:30").unwrap(),
        ];
        // across both 2024 DST changes in New York and London
        for cal in cals {
            for day in [
                "2024-01-15",
                "2024-03-10",
                "2024-03-11",
                "2024-03-31",
                "2024-11-03",
            ] {
                let d: BusinessDate = day.parse().unwrap();
                let (start, end) = cal.utc_range(d);
                assert!(start < end);
                assert_eq!(cal.business_date(start), d, "{cal:?} {day}");
                assert_eq!(cal.business_date(EventTime(end.0 - 1)), d, "{cal:?} {day}");
                assert_ne!(cal.business_date(EventTime(start.0 - 1)), d);
                assert_ne!(cal.business_date(end), d);
            }
        }
        let ny = BusinessCalendar::new("America/New_York", "17:00").unwrap();
        let (s, e) = ny.utc_range("2024-01-16".parse().unwrap());
        assert_eq!(s.to_string(), "2024-01-15T22:00:00.000000Z");
        assert_eq!(e.to_string(), "2024-01-16T22:00:00.000000Z");
    }

    #[test]
    fn date32_round_trip() {
        let d: BusinessDate = "2024-02-29".parse().unwrap();
        assert_eq!(BusinessDate::from_days_since_epoch(d.days_since_epoch()), d);
        assert_eq!(
            BusinessDate::from_days_since_epoch(0).to_string(),
            "1970-01-01"
        );
    }
}
