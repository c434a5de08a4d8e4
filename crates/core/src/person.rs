//! `PersonId`: the 18-character resident identity number of GB 11643 with its check character.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of a resident identity number.
pub const PERSON_ID_LEN: usize = 18;

/// ISO 7064 MOD 11-2 weights of the first 17 digits.
const CHECK_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// The check character for each value of `sum mod 11`.
const CHECK_CHARS: [u8; 11] = *b"10X98765432";

/// A validated resident identity number (公民身份号码). The check character is stored upper-case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PersonId([u8; PERSON_ID_LEN]);

/// Why a resident identity number was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersonIdError {
    #[error("resident ID must be 18 characters, got {0}")]
    WrongLength(usize),
    #[error("resident ID character {position} is {found:?}; the first 17 must be digits")]
    NotADigit { position: usize, found: char },
    #[error("resident ID last character is {0:?}; it must be a digit or X")]
    BadCheckCharacter(char),
    #[error("resident ID birth date {0} is not a real date (YYYYMMDD in characters 7-14)")]
    BadBirthDate(String),
    #[error("resident ID check character is {found:?} but the first 17 digits give {expected:?}")]
    CheckMismatch { expected: char, found: char },
}

impl PersonId {
    /// Parses and validates an ID; a lower-case `x` check character is accepted and normalised.
    pub fn parse(text: &str) -> Result<PersonId, PersonIdError> {
        let chars: Vec<char> = text.chars().collect();
        if chars.len() != PERSON_ID_LEN {
            return Err(PersonIdError::WrongLength(chars.len()));
        }
        let mut bytes = [0u8; PERSON_ID_LEN];
        for (position, (slot, &found)) in bytes.iter_mut().zip(chars.iter()).enumerate() {
            if position < PERSON_ID_LEN - 1 {
                if !found.is_ascii_digit() {
                    return Err(PersonIdError::NotADigit {
                        position: position.saturating_add(1),
                        found,
                    });
                }
                *slot = found as u8;
            } else {
                *slot = match found {
                    '0'..='9' | 'X' => found as u8,
                    'x' => b'X',
                    other => return Err(PersonIdError::BadCheckCharacter(other)),
                };
            }
        }
        let birth = &bytes[6..14];
        if !is_plausible_date(birth) {
            return Err(PersonIdError::BadBirthDate(String::from_utf8_lossy(birth).into_owned()));
        }
        let first17: [u8; 17] = bytes[..17].try_into().map_err(|_| PersonIdError::WrongLength(0))?;
        let expected = check_character(&first17);
        let found = bytes[17];
        if expected != found {
            return Err(PersonIdError::CheckMismatch {
                expected: expected as char,
                found: found as char,
            });
        }
        Ok(PersonId(bytes))
    }

    /// Completes 17 digits with their check character. For generated populations (demo,
    /// simulation, benchmarks); the 17 digits must already be a plausible ID body.
    pub fn from_body(first17: &str) -> Result<PersonId, PersonIdError> {
        let body: [u8; 17] = first17
            .as_bytes()
            .try_into()
            .map_err(|_| PersonIdError::WrongLength(first17.chars().count().saturating_add(1)))?;
        let mut text = String::with_capacity(PERSON_ID_LEN);
        text.push_str(first17);
        if body.iter().all(u8::is_ascii_digit) {
            text.push(check_character(&body) as char);
        } else {
            text.push('0');
        }
        PersonId::parse(&text)
    }

    /// A synthetic but valid ID for generated populations: region, birth date and a serial.
    /// `serial` selects among 10^3 * 36500 distinct values per region (sequence and birth day).
    pub fn synthetic(region_code: u32, serial: u64) -> PersonId {
        let sequence = serial % 1000;
        let day_index = (serial / 1000) % 36_500;
        // Born between 1940 and 2039: 100 years of 365 days, with months of 28 days so that
        // every generated date is real.
        let year = (day_index / 365).saturating_add(1940);
        let day_of_year = day_index % 365;
        let month = (day_of_year / 28).min(11).saturating_add(1);
        let day = (day_of_year % 28).saturating_add(1);
        let body = format!(
            "{:06}{:04}{:02}{:02}{:03}",
            region_code % 1_000_000,
            year,
            month,
            day,
            sequence
        );
        // Every field is in range by construction, so the check character always completes it.
        match PersonId::from_body(&body) {
            Ok(id) => id,
            Err(_) => PersonId(*b"11010119900101000X"),
        }
    }

    pub fn as_str(&self) -> &str {
        // The bytes are ASCII digits or 'X' by construction.
        std::str::from_utf8(&self.0).unwrap_or("??????????????????")
    }

    pub fn as_bytes(&self) -> &[u8; PERSON_ID_LEN] {
        &self.0
    }
}

fn check_character(first17: &[u8; 17]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(CHECK_WEIGHTS.iter())
        .map(|(digit, weight)| u32::from(digit.wrapping_sub(b'0')).wrapping_mul(*weight))
        .fold(0u32, u32::wrapping_add);
    CHECK_CHARS.get((sum % 11) as usize).copied().unwrap_or(b'?')
}

fn is_plausible_date(yyyymmdd: &[u8]) -> bool {
    let number =
        |range: std::ops::Range<usize>| -> Option<u32> { std::str::from_utf8(yyyymmdd.get(range)?).ok()?.parse().ok() };
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(4..6), number(6..8)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1800..=2199).contains(&year) && (1..=days_in_month).contains(&day)
}

impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersonId({})", self.as_str())
    }
}

impl FromStr for PersonId {
    type Err = PersonIdError;
    fn from_str(text: &str) -> Result<PersonId, PersonIdError> {
        PersonId::parse(text)
    }
}

impl TryFrom<String> for PersonId {
    type Error = PersonIdError;
    fn try_from(text: String) -> Result<PersonId, PersonIdError> {
        PersonId::parse(&text)
    }
}

impl From<PersonId> for String {
    fn from(id: PersonId) -> String {
        id.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_a_known_valid_id() {
        // The standard's worked example.
        let id = PersonId::parse("11010519491231002X").unwrap();
        assert_eq!(id.to_string(), "11010519491231002X");
        assert_eq!(PersonId::parse("11010519491231002x").unwrap(), id);
    }

    #[test]
    fn refuses_each_kind_of_error_with_its_reason() {
        assert_eq!(PersonId::parse("123"), Err(PersonIdError::WrongLength(3)));
        assert_eq!(
            PersonId::parse("1101051949123100AX"),
            Err(PersonIdError::NotADigit {
                position: 17,
                found: 'A'
            })
        );
        assert_eq!(
            PersonId::parse("11010519491231002Y"),
            Err(PersonIdError::BadCheckCharacter('Y'))
        );
        assert_eq!(
            PersonId::parse("110105194913310021"),
            Err(PersonIdError::BadBirthDate("19491331".into()))
        );
        assert_eq!(
            PersonId::parse("110105194912310021"),
            Err(PersonIdError::CheckMismatch {
                expected: 'X',
                found: '1'
            })
        );
        assert!(
            PersonId::parse("110105190002290021").is_err(),
            "1900 is not a leap year"
        );
        assert_eq!(
            PersonId::parse("１１０105194912310021"),
            Err(PersonIdError::NotADigit {
                position: 1,
                found: '１'
            })
        );
    }

    proptest! {
        #[test]
        fn synthetic_ids_are_valid_and_distinct(region in 110000u32..660000, a in 0u64..36_500_000, b in 0u64..36_500_000) {
            let x = PersonId::synthetic(region, a);
            prop_assert_eq!(PersonId::parse(x.as_str()).unwrap(), x);
            if a != b {
                prop_assert_ne!(x, PersonId::synthetic(region, b));
            }
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,20}") {
            let _ = PersonId::parse(&text);
        }
    }
}
