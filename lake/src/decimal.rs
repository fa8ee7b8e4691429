//! Exact decimal numbers for prices, quantities and money.
//!
//! A [`Decimal`] is an `i128` count of 10^-[`SCALE`] units, the same representation as an
//! Arrow `Decimal128(38, 8)` column, so values move between Rust, Arrow, Parquet and Polars
//! without any conversion. Text is parsed digit by digit, never through `f64`.

use std::fmt;
use std::str::FromStr;

use deltalake::arrow::datatypes::DataType;

use crate::error::{Error, Result};

/// Digits after the decimal point of every [`Decimal`].
pub const SCALE: i8 = 8;
/// Arrow precision of decimal columns.
pub const PRECISION: u8 = 38;
const ONE: i128 = 100_000_000;
const MAX_ABS: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999; // 38 nines

/// The Arrow type of every decimal column in the lake: `Decimal128(38, 8)`.
pub fn arrow_type() -> DataType {
    DataType::Decimal128(PRECISION, SCALE)
}

/// An exact fixed-point decimal with [`SCALE`] fractional digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal(i128);

impl Decimal {
    /// Zero.
    pub const ZERO: Decimal = Decimal(0);
    /// One.
    pub const ONE: Decimal = Decimal(ONE);

    /// From the raw scaled integer (`value * 10^8`), as stored in Arrow.
    pub const fn from_raw(raw: i128) -> Self {
        Decimal(raw)
    }

    /// The raw scaled integer (`value * 10^8`).
    pub const fn raw(self) -> i128 {
        self.0
    }

    /// A whole number.
    pub fn from_i64(v: i64) -> Self {
        Decimal(i128::from(v) * ONE)
    }

    /// Is it strictly positive?
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Is it zero?
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + other`, or an overflow error.
    pub fn checked_add(self, other: Decimal) -> Result<Decimal> {
        self.0
            .checked_add(other.0)
            .filter(|v| v.abs() <= MAX_ABS)
            .map(Decimal)
            .ok_or(Error::DecimalOverflow { operation: "add" })
    }

    /// `self - other`, or an overflow error.
    pub fn checked_sub(self, other: Decimal) -> Result<Decimal> {
        self.0
            .checked_sub(other.0)
            .filter(|v| v.abs() <= MAX_ABS)
            .map(Decimal)
            .ok_or(Error::DecimalOverflow {
                operation: "subtract",
            })
    }

    /// `self * other` rounded half-to-even at the 8th decimal (the exact product has 16).
    pub fn mul_rounded(self, other: Decimal) -> Result<Decimal> {
        let product = self.0.checked_mul(other.0).ok_or(Error::DecimalOverflow {
            operation: "multiply",
        })?;
        Ok(Decimal(div_half_even(product, ONE))).and_then(|d| check_range(d, "multiply"))
    }

    /// `self / other` rounded half-to-even at the 8th decimal.
    pub fn div_rounded(self, other: Decimal) -> Result<Decimal> {
        if other.0 == 0 {
            return Err(Error::DecimalOverflow {
                operation: "divide by zero",
            });
        }
        let num = self.0.checked_mul(ONE).ok_or(Error::DecimalOverflow {
            operation: "divide",
        })?;
        check_range(Decimal(div_half_even(num, other.0)), "divide")
    }

    /// `wide / other`, where `wide` is in 10^-16 units (an exact sum of products of two
    /// decimals), rounded half-to-even at the 8th decimal: one rounding for a ratio such as a
    /// VWAP or an average cost.
    pub fn wide_div_rounded(wide: i128, other: Decimal) -> Result<Decimal> {
        if other.0 == 0 {
            return Err(Error::DecimalOverflow {
                operation: "divide by zero",
            });
        }
        check_range(Decimal(div_half_even(wide, other.0)), "divide")
    }

    /// A value in 10^-16 units (an exact product) rounded half-to-even at the 8th decimal.
    pub fn wide_rounded(wide: i128) -> Result<Decimal> {
        check_range(Decimal(div_half_even(wide, ONE)), "round")
    }

    /// Is the value an exact multiple of `step` (a tick or lot size)? A zero step accepts all.
    pub fn is_multiple_of(self, step: Decimal) -> bool {
        step.0 == 0 || self.0 % step.0 == 0
    }
}

fn check_range(d: Decimal, operation: &'static str) -> Result<Decimal> {
    if d.0.abs() <= MAX_ABS {
        Ok(d)
    } else {
        Err(Error::DecimalOverflow { operation })
    }
}

/// Integer division rounding half to even.
fn div_half_even(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    let twice = (r.abs()) * 2;
    let away = match twice.cmp(&d.abs()) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => q % 2 != 0,
    };
    if !away {
        q
    } else if (n < 0) != (d < 0) {
        q - 1
    } else {
        q + 1
    }
}

impl FromStr for Decimal {
    type Err = Error;

    /// Parses `[+-]digits[.digits][e[+-]digits]` exactly. More than 8 significant fractional
    /// digits is an error, never a silent rounding.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &'static str| Error::InvalidDecimal {
            literal: s.to_string(),
            reason,
        };
        let text = s.trim();
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = rest[i + 1..]
                    .parse()
                    .map_err(|_| bad("exponent is not an integer"))?;
                (&rest[..i], exp)
            }
            None => (rest, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad("no digits"));
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad("not a decimal number"));
        }
        // digits as one integer, with the decimal point `frac_len - exponent` places from the right
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let point = frac_part.len() as i64 - i64::from(exponent);
        // value = digits * 10^-point; we need digits * 10^(SCALE - point)
        let shift = i64::from(SCALE) - point;
        let mut digits = digits.to_string();
        if shift < 0 {
            let cut = (-shift) as usize;
            let keep = digits.len().saturating_sub(cut);
            if digits[keep..].bytes().any(|b| b != b'0') {
                return Err(bad("more than 8 decimal places"));
            }
            digits.truncate(keep);
        } else {
            if digits.len() as i64 + shift > 38 {
                return Err(bad("out of range for Decimal128(38, 8)"));
            }
            if !digits.is_empty() {
                digits.extend(std::iter::repeat_n('0', shift as usize));
            }
        }
        if digits.len() > 38 {
            return Err(bad("out of range for Decimal128(38, 8)"));
        }
        let magnitude: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| bad("out of range"))?
        };
        Ok(Decimal(if negative { -magnitude } else { magnitude }))
    }
}

impl fmt::Display for Decimal {
    /// Shortest exact text: `0.1`, `100`, `-2.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let int = abs / ONE as u128;
        let frac = abs % ONE as u128;
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let frac = format!("{frac:08}");
            write!(f, "{sign}{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl serde::Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn parses_literal_text_exactly() {
        assert_eq!(d("0.1").raw(), 10_000_000);
        assert_eq!(d("-2.5").raw(), -250_000_000);
        assert_eq!(d("100").raw(), 100 * ONE);
        assert_eq!(d("1e-8").raw(), 1);
        assert_eq!(d("1.5E3").raw(), 1500 * ONE);
        assert_eq!(d(".5").raw(), ONE / 2);
        assert_eq!(d("5.").raw(), 5 * ONE);
        assert_eq!(d("0.100000000000").raw(), 10_000_000);
        assert_eq!(d("000"), Decimal::ZERO);
    }

    #[test]
    fn rejects_what_it_cannot_hold_exactly() {
        for bad in [
            "",
            "-",
            ".",
            "abc",
            "1.2.3",
            "0.000000001",
            "1e-9",
            "NaN",
            "inf",
            "1e40",
        ] {
            assert!(
                bad.parse::<Decimal>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn tenths_sum_exactly() {
        let tenth = d("0.1");
        let mut sum = Decimal::ZERO;
        for _ in 0..50_000 {
            sum = sum.checked_add(tenth).unwrap();
        }
        assert_eq!(sum, d("5000"));
        assert_eq!(sum.to_string(), "5000");
    }

    #[test]
    fn multiplication_rounds_half_even() {
        assert_eq!(
            d("0.00000001").mul_rounded(d("0.5")).unwrap(),
            Decimal::ZERO
        );
        assert_eq!(
            d("0.00000003").mul_rounded(d("0.5")).unwrap(),
            d("0.00000002")
        );
        assert_eq!(
            d("-0.00000003").mul_rounded(d("0.5")).unwrap(),
            d("-0.00000002")
        );
        assert_eq!(d("101.25").mul_rounded(d("300")).unwrap(), d("30375"));
        assert_eq!(d("10").div_rounded(d("4")).unwrap(), d("2.5"));
        assert!(d("1").div_rounded(Decimal::ZERO).is_err());
    }

    #[test]
    fn tick_multiples() {
        assert!(d("101.25").is_multiple_of(d("0.05")));
        assert!(!d("101.26").is_multiple_of(d("0.05")));
    }

    proptest! {
        #[test]
        fn display_round_trips(raw in -MAX_ABS..=MAX_ABS) {
            let x = Decimal::from_raw(raw);
            prop_assert_eq!(x.to_string().parse::<Decimal>().unwrap(), x);
        }

        #[test]
        fn exponent_form_round_trips(raw in -1_000_000_000_000i128..1_000_000_000_000i128) {
            let x = Decimal::from_raw(raw);
            let text = format!("{}e-8", raw);
            prop_assert_eq!(text.parse::<Decimal>().unwrap(), x);
        }
    }
}
