//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) evaluated in a
//! time zone.
//!
//! Each field takes `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, and lists of these
//! separated by `,`. Months take `JAN`..`DEC`, weekdays `SUN`..`SAT` (0 or 7 is Sunday). As in
//! Vixie cron, when both day fields are restricted a day matches either of them. A local time
//! that a daylight-saving jump skips never fires; one that repeats fires twice.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, DurationRound, NaiveDateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Why a cron expression was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "cron expression {text:?}: {reason} (expected `minute hour day-of-month month day-of-week`, e.g. \"15 17 * * MON-FRI\")"
)]
pub struct CronError {
    text: String,
    reason: String,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn field(
    text: &str,
    name: &str,
    min: u32,
    max: u32,
    names: &[&str],
    names_from: u32,
) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            return Ok(names_from + i as u32);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{name} {s:?} is not a number"))?;
        if v < min || v > max {
            return Err(format!("{name} {v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{name} step {s:?} is not a positive number"))?;
                (r, s)
            }
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `a/n` means from a to the end
                None if step > 1 => (value(r)?, max),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            return Err(format!("{name} range {range:?} is backwards"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

impl FromStr for Cron {
    type Err = CronError;
    fn from_str(text: &str) -> Result<Cron, CronError> {
        let err = |reason: String| CronError {
            text: text.to_string(),
            reason,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields[..] else {
            return Err(err(format!("{} fields, not 5", fields.len())));
        };
        let mut weekdays = field(dow, "day-of-week", 0, 7, &WEEKDAYS, 0).map_err(err)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            minutes: field(m, "minute", 0, 59, &[], 0).map_err(err)?,
            hours: field(h, "hour", 0, 23, &[], 0).map_err(err)?,
            days: field(dom, "day-of-month", 1, 31, &[], 0).map_err(err)?,
            months: field(mon, "month", 1, 12, &MONTHS, 1).map_err(err)?,
            weekdays,
            days_restricted: dom != "*",
            weekdays_restricted: dow != "*",
        })
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Cron {
    /// Does the local minute `t` match?
    pub fn matches(&self, t: NaiveDateTime) -> bool {
        let bit = |set: u64, v: u32| set & (1 << v) != 0;
        let day = bit(self.days, t.day());
        let weekday = bit(self.weekdays, t.weekday().num_days_from_sunday());
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            _ => day && weekday,
        };
        bit(self.minutes, t.minute())
            && bit(self.hours, t.hour())
            && bit(self.months, t.month())
            && day_ok
    }

    /// The instants in `(after, until]` at which the expression fires in `tz`.
    pub fn firings(
        &self,
        tz: Tz,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = next_minute(after);
        while t <= until {
            if self.matches(t.with_timezone(&tz).naive_local()) {
                out.push(t);
            }
            t += TimeDelta::minutes(1);
        }
        out
    }

    /// The first instant after `after` at which the expression fires in `tz` (none within
    /// five years: an expression like `0 0 31 2 *`).
    pub fn next(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = next_minute(after);
        let limit = after + TimeDelta::days(5 * 366);
        while t <= limit {
            if self.matches(t.with_timezone(&tz).naive_local()) {
                return Some(t);
            }
            t += TimeDelta::minutes(1);
        }
        None
    }
}

/// The first whole minute strictly after `t`.
fn next_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t) + TimeDelta::minutes(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn parses_fields_names_ranges_steps_and_lists() {
        let c: Cron = "15 17 * * MON-FRI".parse().unwrap();
        let tz = Tz::America__New_York;
        // Friday 2024-01-12 17:15 New York = 22:15 UTC; next is Monday the 15th
        let fri = at("2024-01-12T22:15:00Z");
        assert_eq!(c.next(tz, fri - TimeDelta::seconds(1)), Some(fri));
        assert_eq!(c.next(tz, fri), Some(at("2024-01-15T22:15:00Z")));
        let c: Cron = "*/20 9-10 1,15 jan *".parse().unwrap();
        let f = c.firings(
            Tz::UTC,
            at("2024-01-01T00:00:00Z"),
            at("2024-02-01T00:00:00Z"),
        );
        assert_eq!(f.len(), 12); // 3 minutes x 2 hours x 2 days
        assert_eq!(f[1], at("2024-01-01T09:20:00Z"));
        // both day fields restricted: either matches (the 1st, or any Sunday)
        let c: Cron = "0 0 1 * 0".parse().unwrap();
        let f = c.firings(
            Tz::UTC,
            at("2024-01-01T00:00:00Z"),
            at("2024-01-31T23:59:00Z"),
        );
        assert_eq!(f.len(), 4); // Sundays 7, 14, 21, 28 (the 1st is after the start)
        assert!(
            "0 0 * * 7"
                .parse::<Cron>()
                .unwrap()
                .matches(at("2024-01-07T00:00:00Z").naive_utc())
        );
        assert!(
            "5/20 * * * *"
                .parse::<Cron>()
                .unwrap()
                .matches(at("2024-01-07T00:45:00Z").naive_utc())
        );
    }

    #[test]
    fn refuses_bad_expressions_with_the_reason() {
        for (text, why) in [
            ("* * * *", "4 fields"),
            ("60 * * * *", "minute 60 is outside 0-59"),
            ("* 5-2 * * *", "backwards"),
            ("* * * * FUNDAY", "not a number"),
            ("*/0 * * * *", "step"),
        ] {
            let e = text.parse::<Cron>().unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        assert_eq!(
            "0 0 31 2 *"
                .parse::<Cron>()
                .unwrap()
                .next(Tz::UTC, Utc::now()),
            None
        );
    }

    #[test]
    fn daylight_saving_gaps_never_fire() {
        // 02:30 New York does not exist on 2024-03-10
        let c: Cron = "30 2 * * *".parse().unwrap();
        let f = c.firings(
            Tz::America__New_York,
            at("2024-03-09T00:00:00Z"),
            at("2024-03-12T00:00:00Z"),
        );
        assert_eq!(
            f,
            vec![at("2024-03-09T07:30:00Z"), at("2024-03-11T06:30:00Z")]
        );
    }
}
