//! The reference data of one simulation: instruments, accounts grouped into desks with
//! traders, and FX rates, all derived from the seed and written as the CSVs of DESIGN
//! section 9.

use std::io::Write;
use std::path::Path;

use lakehouse_lake::events::{Account, FxRate, Instrument};
use lakehouse_lake::{BusinessDate, Decimal};

use crate::rng::Rng;

/// An instrument and what the market needs to trade it.
#[derive(Clone, Debug)]
pub struct Listing {
    /// The reference row.
    pub instrument: Instrument,
    /// Market identifier code of its venue.
    pub venue: &'static str,
    /// Opening reference price, in ticks.
    pub start_ticks: i64,
    /// Relative activity (how often it is picked).
    pub weight: f64,
}

/// An account with its desk and the trader who runs it.
#[derive(Clone, Debug)]
pub struct Agent {
    /// The reference row.
    pub account: Account,
    /// Trader id.
    pub trader: String,
}

/// Everything static about one simulated market.
#[derive(Clone, Debug)]
pub struct Universe {
    /// Instruments, in symbol order of creation.
    pub listings: Vec<Listing>,
    /// Accounts.
    pub agents: Vec<Agent>,
    /// Indices of the maker and of the taker accounts.
    pub makers: Vec<usize>,
    /// See `makers`.
    pub takers: Vec<usize>,
    /// Cumulative listing weights, for picking a symbol.
    pub cumulative_weight: Vec<f64>,
}

/// symbol, country, asset class, currency, tick, lot, venue, opening price
#[rustfmt::skip]
const KNOWN: &[[&str; 8]] = &[
    ["AAPL", "US", "EQUITY", "USD", "0.01", "1", "XNAS", "189.50"],
    ["MSFT", "US", "EQUITY", "USD", "0.01", "1", "XNAS", "402.10"],
    ["NVDA", "US", "EQUITY", "USD", "0.01", "1", "XNAS", "131.25"],
    ["AMZN", "US", "EQUITY", "USD", "0.01", "1", "XNAS", "178.40"],
    ["JPM", "US", "EQUITY", "USD", "0.01", "1", "XNYS", "198.70"],
    ["XOM", "US", "EQUITY", "USD", "0.01", "1", "XNYS", "112.30"],
    ["SPY", "US", "ETF", "USD", "0.01", "1", "ARCX", "512.80"],
    ["SAP", "DE", "EQUITY", "EUR", "0.02", "1", "XETR", "181.36"],
    ["ASML", "NL", "EQUITY", "EUR", "0.1", "1", "XAMS", "874.3"],
    ["MC", "FR", "EQUITY", "EUR", "0.1", "1", "XPAR", "712.4"],
    ["HSBA", "GB", "EQUITY", "GBP", "0.001", "1", "XLON", "6.420"],
    ["VOD", "GB", "EQUITY", "GBP", "0.0002", "10", "XLON", "0.7124"],
    ["NESN", "CH", "EQUITY", "CHF", "0.02", "1", "XSWX", "94.56"],
    ["7203", "JP", "EQUITY", "JPY", "1", "100", "XTKS", "2874"],
    ["6758", "JP", "EQUITY", "JPY", "1", "100", "XTKS", "13210"],
    ["BND", "US", "ETF", "USD", "0.01", "1", "XNAS", "72.15"],
    ["GOOGL", "US", "EQUITY", "USD", "0.01", "1", "XNAS", "163.90"],
    ["BAC", "US", "EQUITY", "USD", "0.01", "1", "XNYS", "37.85"],
    ["QQQ", "US", "ETF", "USD", "0.01", "1", "XNAS", "441.20"],
    ["SIE", "DE", "EQUITY", "EUR", "0.02", "1", "XETR", "176.84"],
];

/// Reporting currency of the FX table, and the first day's rates to it.
pub const REPORTING_CURRENCY: &str = "USD";
const FX_START: &[(&str, &str)] = &[
    ("USD", "1"),
    ("EUR", "1.0850"),
    ("GBP", "1.2710"),
    ("CHF", "1.1240"),
    ("JPY", "0.006720"),
];

fn dec(s: &str) -> Decimal {
    s.parse().expect("built-in decimals are valid")
}

/// The ISIN check digit (ISO 6166: letters to numbers, then Luhn over the digits).
pub fn isin_check_digit(body: &str) -> char {
    let digits: Vec<u32> = body
        .chars()
        .flat_map(|c| {
            let v = c.to_digit(36).expect("ISIN bodies are alphanumeric");
            if v >= 10 {
                vec![v / 10, v % 10]
            } else {
                vec![v]
            }
        })
        .collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let x = d * 2;
                x / 10 + x % 10
            } else {
                d
            }
        })
        .sum();
    char::from_digit((10 - sum % 10) % 10, 10).expect("a digit")
}

/// A synthetic but well-formed ISIN for `symbol` (country code, 9 characters, check digit).
fn isin(country: &str, symbol: &str, i: usize) -> String {
    let mut nsin: String = symbol
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    nsin = format!("{nsin:0>5}{:04}", i % 10_000);
    let body = format!("{country}{}", &nsin[..9]);
    format!("{body}{}", isin_check_digit(&body))
}

impl Universe {
    /// The instruments and accounts of a configuration.
    pub fn new(seed: u64, symbols: usize, accounts: usize, desks: usize, traders: usize) -> Self {
        let mut rng = Rng::new(seed, 1);
        let mut listings = Vec::with_capacity(symbols);
        for i in 0..symbols {
            let (symbol, country, class, ccy, tick, lot, venue, price) = match KNOWN.get(i) {
                Some(&[s, c, a, ccy, t, l, v, p]) => {
                    (s.to_string(), c, a, ccy, dec(t), dec(l), v, dec(p))
                }
                None => {
                    // synthetic US equities, priced 10 to 500
                    let cents = rng.between(1_000, 50_000);
                    (
                        format!("SIM{:04}", i + 1 - KNOWN.len()),
                        "US",
                        "EQUITY",
                        "USD",
                        dec("0.01"),
                        Decimal::ONE,
                        "XNAS",
                        Decimal::from_i64(cents)
                            .mul_rounded(dec("0.01"))
                            .expect("small"),
                    )
                }
            };
            let start_ticks = price
                .div_rounded(tick)
                .expect("prices are multiples of ticks")
                .raw()
                / Decimal::ONE.raw();
            // a few names trade much more than the rest
            let weight = 1.0 / (1.0 + i as f64).sqrt();
            listings.push(Listing {
                instrument: Instrument {
                    isin: isin(country, &symbol, i),
                    symbol,
                    asset_class: class.into(),
                    currency: ccy.into(),
                    tick_size: tick,
                    lot_size: lot,
                },
                venue,
                start_ticks: start_ticks as i64,
                weight,
            });
        }
        let cumulative_weight = listings
            .iter()
            .scan(0.0, |acc, l| {
                *acc += l.weight;
                Some(*acc)
            })
            .collect();
        let entities = ["LH-BANK-NY", "LH-BANK-LDN", "LH-SEC-NY"];
        let mut agents = Vec::with_capacity(accounts);
        let (mut makers, mut takers) = (Vec::new(), Vec::new());
        for a in 0..accounts {
            let desk = a % desks;
            let maker = rng.chance(0.4);
            if maker {
                makers.push(a);
            } else {
                takers.push(a);
            }
            agents.push(Agent {
                account: Account {
                    account: format!("ACC-{:05}", a + 1),
                    desk: format!("DESK-{:02}", desk + 1),
                    legal_entity: entities[desk % entities.len()].into(),
                },
                trader: format!("TR-{:02}-{}", desk + 1, (a / desks) % traders + 1),
            });
        }
        // both kinds must exist for a market to form (one account plays both if need be)
        if makers.is_empty() {
            makers.push(takers.pop().expect("at least one account"));
        }
        if takers.is_empty() {
            takers.push(makers.pop().expect("at least one account"));
            if makers.is_empty() {
                makers.push(takers[0]);
            }
        }
        Universe {
            listings,
            agents,
            makers,
            takers,
            cumulative_weight,
        }
    }

    /// The currencies the instruments trade in, plus the reporting currency, sorted.
    pub fn currencies(&self) -> Vec<String> {
        let mut c: Vec<String> = self
            .listings
            .iter()
            .map(|l| l.instrument.currency.clone())
            .chain([REPORTING_CURRENCY.to_string()])
            .collect();
        c.sort();
        c.dedup();
        c
    }

    /// FX rates to the reporting currency for every date in `from..=to`: a seeded daily random
    /// walk (at most 0.5% a day), 6 decimals; the reporting currency is 1.
    pub fn fx_rates(&self, seed: u64, from: BusinessDate, to: BusinessDate) -> Vec<FxRate> {
        let mut rng = Rng::new(seed, 2);
        let currencies = self.currencies();
        let mut level: Vec<f64> = currencies
            .iter()
            .map(|c| {
                FX_START
                    .iter()
                    .find(|(k, _)| k == c)
                    .map_or(1.0, |(_, r)| r.parse().expect("built-in rate"))
            })
            .collect();
        let mut out = Vec::new();
        let mut d = from;
        while d <= to {
            for (c, l) in currencies.iter().zip(level.iter_mut()) {
                let rate = if c == REPORTING_CURRENCY {
                    Decimal::ONE
                } else {
                    *l *= 1.0 + (rng.unit() - 0.5) * 0.01;
                    // six decimals, from an integer: exact, never through f64 text
                    let micros = (*l * 1e6).round().max(1.0) as i64;
                    Decimal::from_i64(micros)
                        .mul_rounded(dec("0.000001"))
                        .expect("small")
                };
                out.push(FxRate {
                    date: d,
                    currency: c.clone(),
                    rate_to_reporting: rate,
                });
            }
            d = d.succ();
        }
        out
    }

    /// Writes `instruments.csv`, `accounts.csv` and `fx_rates.csv` into `dir` (created).
    pub fn write_csvs(&self, dir: &Path, fx: &[FxRate]) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        write_csv(
            &dir.join("instruments.csv"),
            self.listings.iter().map(|l| &l.instrument),
        )?;
        write_csv(
            &dir.join("accounts.csv"),
            self.agents.iter().map(|a| &a.account),
        )?;
        write_csv(&dir.join("fx_rates.csv"), fx.iter())
    }
}

fn write_csv<'a, T: serde::Serialize + 'a>(
    path: &Path,
    rows: impl Iterator<Item = &'a T>,
) -> std::io::Result<()> {
    // written beside and renamed, so a reader never sees half a file
    let tmp = path.with_extension("csv.partial");
    let mut w = csv::Writer::from_path(&tmp)?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    let mut f = w.into_inner().map_err(|e| e.into_error())?;
    f.flush()?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isins_are_well_formed() {
        // a published ISIN, to pin the algorithm
        assert_eq!(isin_check_digit("US037833100"), '5');
        let u = Universe::new(3, 40, 10, 3, 2);
        let mut seen = std::collections::HashSet::new();
        for l in &u.listings {
            let i = &l.instrument.isin;
            assert_eq!(i.len(), 12, "{i}");
            assert_eq!(i.chars().last(), Some(isin_check_digit(&i[..11])));
            assert!(seen.insert(i.clone()), "duplicate ISIN {i}");
            assert!(
                Decimal::from_i64(l.start_ticks)
                    .mul_rounded(l.instrument.tick_size)
                    .unwrap()
                    .is_positive()
            );
        }
        assert_eq!(u.listings[20].instrument.symbol, "SIM0001");
    }

    #[test]
    fn accounts_desks_and_kinds() {
        let u = Universe::new(3, 5, 12, 4, 2);
        assert_eq!(u.agents.len(), 12);
        let desks: std::collections::BTreeSet<_> =
            u.agents.iter().map(|a| a.account.desk.clone()).collect();
        assert_eq!(desks.len(), 4);
        assert!(!u.makers.is_empty() && !u.takers.is_empty());
        let one = Universe::new(3, 1, 1, 1, 1);
        assert_eq!((one.makers.len(), one.takers.len()), (1, 1));
    }

    #[test]
    fn fx_covers_every_date_and_currency() {
        let u = Universe::new(3, 15, 4, 2, 1);
        let from: BusinessDate = "2026-01-05".parse().unwrap();
        let to: BusinessDate = "2026-01-09".parse().unwrap();
        let fx = u.fx_rates(3, from, to);
        assert_eq!(fx.len(), 5 * u.currencies().len());
        assert!(fx.iter().all(|r| r.rate_to_reporting.is_positive()));
        assert!(
            fx.iter()
                .filter(|r| r.currency == "USD")
                .all(|r| r.rate_to_reporting == Decimal::ONE)
        );
        let dir = tempfile::tempdir().unwrap();
        u.write_csvs(dir.path(), &fx).unwrap();
        let text = std::fs::read_to_string(dir.path().join("instruments.csv")).unwrap();
        assert!(text.starts_with("symbol,isin,asset_class,currency,tick_size,lot_size\n"));
        assert!(text.contains("\nAAPL,US"), "{text}");
    }
}
