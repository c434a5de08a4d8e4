//! Money as integer fen (分), with checked arithmetic and yuan parsing/display.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The largest amount any single `Money` value may hold: 10 trillion yuan.
///
/// The whole country's personal-account balance is about 1.45 trillion yuan, so every
/// legitimate balance, amount and aggregate fits, and sums of a few such values cannot
/// overflow `u64` even before the checks run.
pub const MONEY_MAX_FEN: u64 = 1_000_000_000_000_000;

/// An amount of money in fen (1 yuan = 100 fen). Never negative; never above [`MONEY_MAX_FEN`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Money(u64);

/// Why a yuan string or a fen amount was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is negative; amounts are never negative")]
    Negative(String),
    #[error("amount {0:?} has more than 2 decimals; money is counted in fen (0.01 yuan)")]
    TooManyDecimals(String),
    #[error("amount {0:?} is not a yuan amount like 120.50")]
    Malformed(String),
    #[error("amount {0:?} is above the maximum of 10,000,000,000,000.00 yuan")]
    TooLarge(String),
    #[error("arithmetic on money overflowed or went below zero")]
    Overflow,
}

impl Money {
    pub const ZERO: Money = Money(0);

    /// Builds an amount from fen, refusing values above [`MONEY_MAX_FEN`].
    pub fn from_fen(fen: u64) -> Result<Money, MoneyError> {
        if fen > MONEY_MAX_FEN {
            return Err(MoneyError::TooLarge(fen.to_string()));
        }
        Ok(Money(fen))
    }

    /// Builds an amount from whole yuan (convenience for tests, configs and demos).
    pub fn from_yuan(yuan: u64) -> Result<Money, MoneyError> {
        let fen = yuan.checked_mul(100).ok_or(MoneyError::Overflow)?;
        Money::from_fen(fen)
    }

    pub fn fen(self) -> u64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        let sum = self.0.checked_add(other.0).ok_or(MoneyError::Overflow)?;
        if sum > MONEY_MAX_FEN {
            return Err(MoneyError::Overflow);
        }
        Ok(Money(sum))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.0.checked_sub(other.0).map(Money).ok_or(MoneyError::Overflow)
    }

    /// `self - other`, or zero when `other` is larger. For "what is still to pay" arithmetic.
    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    pub fn min(self, other: Money) -> Money {
        if self.0 <= other.0 { self } else { other }
    }

    /// Adds a sequence of amounts with the overflow check.
    pub fn sum<I: IntoIterator<Item = Money>>(items: I) -> Result<Money, MoneyError> {
        items.into_iter().try_fold(Money::ZERO, Money::checked_add)
    }

    /// Parses a yuan string such as `"120.50"`, `"120.5"` or `"120"`.
    ///
    /// Refused: empty, negative, a sign, more than 2 decimals, exponents, separators,
    /// whitespace, and anything above [`MONEY_MAX_FEN`].
    pub fn parse_yuan(text: &str) -> Result<Money, MoneyError> {
        if text.is_empty() {
            return Err(MoneyError::Empty);
        }
        if text.starts_with('-') {
            return Err(MoneyError::Negative(text.to_string()));
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) {
            return Err(MoneyError::Malformed(text.to_string()));
        }
        let fraction_fen: u64 = match fraction {
            None => 0,
            Some(fraction) => {
                if !all_digits(fraction) {
                    return Err(MoneyError::Malformed(text.to_string()));
                }
                if fraction.len() > 2 {
                    return Err(MoneyError::TooManyDecimals(text.to_string()));
                }
                let value: u64 = fraction.parse().map_err(|_| MoneyError::Malformed(text.to_string()))?;
                // "5" after the point means 50 fen, "05" means 5 fen.
                if fraction.len() == 1 {
                    value.checked_mul(10).ok_or(MoneyError::Overflow)?
                } else {
                    value
                }
            }
        };
        let too_large = || MoneyError::TooLarge(text.to_string());
        // Leading zeros are harmless, but a long run of digits must not overflow the parse.
        let whole_trimmed = whole.trim_start_matches('0');
        if whole_trimmed.len() > 16 {
            return Err(too_large());
        }
        let whole_yuan: u64 = if whole_trimmed.is_empty() {
            0
        } else {
            whole_trimmed.parse().map_err(|_| too_large())?
        };
        let fen = whole_yuan
            .checked_mul(100)
            .and_then(|fen| fen.checked_add(fraction_fen))
            .ok_or_else(too_large)?;
        if fen > MONEY_MAX_FEN {
            return Err(too_large());
        }
        Ok(Money(fen))
    }
}

impl TryFrom<u64> for Money {
    type Error = MoneyError;
    fn try_from(fen: u64) -> Result<Money, MoneyError> {
        Money::from_fen(fen)
    }
}

impl From<Money> for u64 {
    fn from(money: Money) -> u64 {
        money.0
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(text: &str) -> Result<Money, MoneyError> {
        Money::parse_yuan(text)
    }
}

/// Displays as yuan with exactly two decimals: `120.50`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(Money::parse_yuan("120.50").unwrap().fen(), 12050);
        assert_eq!(Money::parse_yuan("120.5").unwrap().fen(), 12050);
        assert_eq!(Money::parse_yuan("120.05").unwrap().fen(), 12005);
        assert_eq!(Money::parse_yuan("120").unwrap().fen(), 12000);
        assert_eq!(Money::parse_yuan("0.01").unwrap().fen(), 1);
        assert_eq!(Money::parse_yuan("007").unwrap().fen(), 700);
        assert_eq!(Money::parse_yuan("0").unwrap(), Money::ZERO);
    }

    #[test]
    fn refuses_bad_forms_with_a_reason() {
        assert_eq!(Money::parse_yuan(""), Err(MoneyError::Empty));
        assert!(matches!(Money::parse_yuan("-1.00"), Err(MoneyError::Negative(_))));
        assert!(matches!(
            Money::parse_yuan("1.234"),
            Err(MoneyError::TooManyDecimals(_))
        ));
        for bad in ["abc", "1e3", "+1", " 1", "1 ", "1,000", ".5", "5.", "1.2.3", "１"] {
            assert!(matches!(Money::parse_yuan(bad), Err(MoneyError::Malformed(_))), "{bad}");
        }
        assert!(matches!(
            Money::parse_yuan("99999999999999999999999"),
            Err(MoneyError::TooLarge(_))
        ));
        assert!(matches!(
            Money::parse_yuan("10000000000000.01"),
            Err(MoneyError::TooLarge(_))
        ));
        assert!(Money::parse_yuan("10000000000000.00").is_ok());
    }

    #[test]
    fn checked_arithmetic_refuses_overflow_and_negative() {
        let max = Money::from_fen(MONEY_MAX_FEN).unwrap();
        assert_eq!(max.checked_add(Money::from_fen(1).unwrap()), Err(MoneyError::Overflow));
        assert_eq!(
            Money::ZERO.checked_sub(Money::from_fen(1).unwrap()),
            Err(MoneyError::Overflow)
        );
        assert!(Money::from_fen(MONEY_MAX_FEN + 1).is_err());
        let json = serde_json::to_string(&Money::from_fen(5).unwrap()).unwrap();
        assert_eq!(json, "5");
        assert!(serde_json::from_str::<Money>(&format!("{}", MONEY_MAX_FEN + 1)).is_err());
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(fen in 0..=MONEY_MAX_FEN) {
            let money = Money::from_fen(fen).unwrap();
            prop_assert_eq!(Money::parse_yuan(&money.to_string()).unwrap(), money);
        }

        #[test]
        fn parse_then_display_is_canonical(whole in 0u64..10_000_000, fraction in 0u64..100) {
            let text = format!("{whole}.{fraction:02}");
            let money = Money::parse_yuan(&text).unwrap();
            prop_assert_eq!(money.to_string(), text);
            prop_assert_eq!(money.fen(), whole * 100 + fraction);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,24}") {
            let _ = Money::parse_yuan(&text);
        }

        #[test]
        fn add_then_sub_is_identity(a in 0..=MONEY_MAX_FEN / 2, b in 0..=MONEY_MAX_FEN / 2) {
            let (a, b) = (Money::from_fen(a).unwrap(), Money::from_fen(b).unwrap());
            prop_assert_eq!(a.checked_add(b).unwrap().checked_sub(b).unwrap(), a);
        }
    }
}
