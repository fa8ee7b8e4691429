//! Reference data as the layers use it (instruments, accounts, FX rates), read from the
//! `l1/ref_*` tables, and desk exposure, the one definition batch, speed and serving share.

use std::collections::{BTreeMap, HashMap};

use deltalake::arrow::array::AsArray;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Date32Type, Decimal128Type};
use deltalake::arrow::record_batch::RecordBatch;

use crate::Lake;
use crate::catalog::names;
use crate::decimal::Decimal;
use crate::error::{Error, Result};
use crate::events::{Account, Instrument};
use crate::positions::Position;
use crate::time::BusinessDate;

/// Instruments, accounts and FX rates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reference {
    /// By symbol.
    pub instruments: HashMap<String, Instrument>,
    /// By account.
    pub accounts: HashMap<String, Account>,
    /// Units of reporting currency per unit of currency, by (date, currency).
    pub fx: BTreeMap<(BusinessDate, String), Decimal>,
}

fn col_of<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a deltalake::arrow::array::ArrayRef> {
    b.column_by_name(name).ok_or_else(|| Error::SchemaMismatch {
        table: "reference".into(),
        detail: format!("no column {name}"),
    })
}

fn text(b: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let col = cast(col_of(b, name)?, &DataType::Utf8)?;
    Ok(col
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect())
}

fn decimals(b: &RecordBatch, name: &str) -> Result<Vec<Decimal>> {
    Ok(col_of(b, name)?
        .as_primitive::<Decimal128Type>()
        .iter()
        .map(|v| Decimal::from_raw(v.unwrap_or(0)))
        .collect())
}

impl Reference {
    /// Reads the reference tables of `lake` (a table not created yet reads as empty).
    pub async fn load(lake: &Lake) -> Result<Reference> {
        let mut r = Reference::default();
        let read = |name: &'static str| async move {
            match lake.table(name).await {
                Ok(t) => t.read_all().await,
                Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        };
        for b in read(names::REF_INSTRUMENTS).await? {
            let (sym, isin, class, ccy) = (
                text(&b, "symbol")?,
                text(&b, "isin")?,
                text(&b, "asset_class")?,
                text(&b, "currency")?,
            );
            let (tick, lot) = (decimals(&b, "tick_size")?, decimals(&b, "lot_size")?);
            for i in 0..b.num_rows() {
                r.instruments.insert(
                    sym[i].clone(),
                    Instrument {
                        symbol: sym[i].clone(),
                        isin: isin[i].clone(),
                        asset_class: class[i].clone(),
                        currency: ccy[i].clone(),
                        tick_size: tick[i],
                        lot_size: lot[i],
                    },
                );
            }
        }
        for b in read(names::REF_ACCOUNTS).await? {
            let (acc, desk, le) = (
                text(&b, "account")?,
                text(&b, "desk")?,
                text(&b, "legal_entity")?,
            );
            for i in 0..b.num_rows() {
                r.accounts.insert(
                    acc[i].clone(),
                    Account {
                        account: acc[i].clone(),
                        desk: desk[i].clone(),
                        legal_entity: le[i].clone(),
                    },
                );
            }
        }
        for b in read(names::REF_FX_RATES).await? {
            let dates = col_of(&b, "date")?.as_primitive::<Date32Type>().clone();
            let (ccy, rate) = (text(&b, "currency")?, decimals(&b, "rate_to_reporting")?);
            for i in 0..b.num_rows() {
                r.fx.insert(
                    (
                        BusinessDate::from_days_since_epoch(dates.value(i)),
                        ccy[i].clone(),
                    ),
                    rate[i],
                );
            }
        }
        Ok(r)
    }
}

/// Gross and net notional of one desk in one asset class and currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposure {
    /// Desk (`UNKNOWN` for an account missing from the reference data).
    pub desk: String,
    /// Asset class (`UNKNOWN` for a symbol missing from it).
    pub asset_class: String,
    /// Instrument currency (`UNKNOWN` likewise).
    pub currency: String,
    /// Sum of |net quantity x price|.
    pub gross_notional: Decimal,
    /// Sum of net quantity x price.
    pub net_notional: Decimal,
}

/// Exposure rows, and the (account, symbol) positions that had no price to be valued at.
pub type ExposureReport = (Vec<Exposure>, Vec<(String, String)>);

/// Desk exposure of `positions` marked at `price(symbol)`, by desk x asset class x currency,
/// sorted; positions without a price are returned apart (they cannot be valued).
pub fn desk_exposure<'a>(
    positions: impl IntoIterator<Item = (&'a str, &'a str, Position)>,
    price: impl Fn(&str) -> Option<Decimal>,
    reference: &Reference,
) -> Result<ExposureReport> {
    let mut acc: BTreeMap<(String, String, String), (Decimal, Decimal)> = BTreeMap::new();
    let mut unpriced = Vec::new();
    for (account, symbol, p) in positions {
        if p.net_quantity.is_zero() {
            continue;
        }
        let Some(px) = price(symbol) else {
            unpriced.push((account.to_string(), symbol.to_string()));
            continue;
        };
        let mv = p.market_value(px)?;
        let desk = reference
            .accounts
            .get(account)
            .map_or("UNKNOWN", |a| a.desk.as_str());
        let (class, ccy) = reference
            .instruments
            .get(symbol)
            .map_or(("UNKNOWN", "UNKNOWN"), |i| {
                (i.asset_class.as_str(), i.currency.as_str())
            });
        let e = acc
            .entry((desk.to_string(), class.to_string(), ccy.to_string()))
            .or_insert((Decimal::ZERO, Decimal::ZERO));
        let abs = if mv.raw() < 0 {
            Decimal::from_raw(-mv.raw())
        } else {
            mv
        };
        e.0 = e.0.checked_add(abs)?;
        e.1 = e.1.checked_add(mv)?;
    }
    let rows = acc
        .into_iter()
        .map(|((desk, asset_class, currency), (gross, net))| Exposure {
            desk,
            asset_class,
            currency,
            gross_notional: gross,
            net_notional: net,
        })
        .collect();
    Ok((rows, unpriced))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Side;

    #[test]
    fn gross_and_net_by_desk_class_currency() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let mut r = Reference::default();
        for (a, desk) in [("A1", "EQ"), ("A2", "EQ"), ("A3", "RATES")] {
            r.accounts.insert(
                a.into(),
                Account {
                    account: a.into(),
                    desk: desk.into(),
                    legal_entity: "LE".into(),
                },
            );
        }
        r.instruments.insert(
            "X".into(),
            Instrument {
                symbol: "X".into(),
                isin: "I".into(),
                asset_class: "EQUITY".into(),
                currency: "USD".into(),
                tick_size: d("0.01"),
                lot_size: d("1"),
            },
        );
        let pos = |side, q: &str| {
            let mut p = Position::default();
            p.apply(side, d("1"), d(q)).unwrap();
            p
        };
        let positions = vec![
            ("A1", "X", pos(Side::Buy, "100")),
            ("A2", "X", pos(Side::Sell, "30")),
            ("A3", "X", pos(Side::Buy, "5")),
            ("A1", "Y", pos(Side::Buy, "1")),
            ("A9", "Z", pos(Side::Buy, "1")),
        ];
        let price = |s: &str| match s {
            "X" => Some(d("2.5")),
            "Z" => Some(d("1")),
            _ => None,
        };
        let (rows, unpriced) = desk_exposure(positions, price, &r).unwrap();
        assert_eq!(unpriced, vec![("A1".to_string(), "Y".to_string())]);
        let got: Vec<_> = rows
            .iter()
            .map(|e| {
                (
                    e.desk.as_str(),
                    e.asset_class.as_str(),
                    e.gross_notional,
                    e.net_notional,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("EQ", "EQUITY", d("325"), d("175")),
                ("RATES", "EQUITY", d("12.5"), d("12.5")),
                ("UNKNOWN", "UNKNOWN", d("1"), d("1")),
            ]
        );
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;
    use crate::events::{FxRate, accounts_batch, fx_rates_batch, instruments_batch};
    use crate::{LakeConfig, catalog};

    #[tokio::test]
    async fn loads_what_refdata_load_writes_and_empty_before() {
        let lake = Lake::open(&LakeConfig {
            root: "memory:///".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(Reference::load(&lake).await.unwrap(), Reference::default());
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let inst = Instrument {
            symbol: "AAPL".into(),
            isin: "US0378331005".into(),
            asset_class: "EQUITY".into(),
            currency: "USD".into(),
            tick_size: d("0.01"),
            lot_size: d("1"),
        };
        let acc = Account {
            account: "A1".into(),
            desk: "EQ".into(),
            legal_entity: "LE".into(),
        };
        let fx = FxRate {
            date: "2026-01-05".parse().unwrap(),
            currency: "EUR".into(),
            rate_to_reporting: d("1.085"),
        };
        let write = |name, batch| {
            let lake = &lake;
            async move {
                let mut t = lake
                    .create_table(&catalog::table(name).unwrap())
                    .await
                    .unwrap();
                t.replace_all(vec![batch], HashMap::new()).await.unwrap();
            }
        };
        write(
            names::REF_INSTRUMENTS,
            instruments_batch(std::slice::from_ref(&inst)).unwrap(),
        )
        .await;
        write(
            names::REF_ACCOUNTS,
            accounts_batch(std::slice::from_ref(&acc)).unwrap(),
        )
        .await;
        write(
            names::REF_FX_RATES,
            fx_rates_batch(std::slice::from_ref(&fx)).unwrap(),
        )
        .await;
        let r = Reference::load(&lake).await.unwrap();
        assert_eq!(r.instruments["AAPL"], inst);
        assert_eq!(r.accounts["A1"], acc);
        assert_eq!(r.fx[&(fx.date, "EUR".to_string())], d("1.085"));
    }
}
