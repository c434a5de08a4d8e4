//! Time as the core sees it: passed in with every event, never read from a clock here.
//!
//! Two clocks, on purpose: `mono_ms` is the node's own monotonic clock (deadlines and timers are
//! durations on it, so skew between provinces cannot matter), and `wall_ms` is Unix time used
//! only for records, calendar months (monthly limits) and reporting.

use serde::{Deserialize, Serialize};

/// China Standard Time is UTC+8 all year; calendar limits follow the local calendar.
const CHINA_OFFSET_MS: i64 = 8 * 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// The moment of an event, as read by the driver (real clocks, or the simulator's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Now {
    /// Milliseconds on this node's monotonic clock (starts anywhere; only differences matter).
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch, UTC.
    pub wall_ms: i64,
}

impl Now {
    pub fn new(mono_ms: u64, wall_ms: i64) -> Now {
        Now { mono_ms, wall_ms }
    }

    /// The monotonic time `duration_ms` from now, saturating (never wraps).
    pub fn mono_after(self, duration_ms: u64) -> u64 {
        self.mono_ms.saturating_add(duration_ms)
    }

    pub fn month(self) -> YearMonth {
        YearMonth::of_wall_ms(self.wall_ms)
    }

    pub fn date(self) -> CivilDate {
        CivilDate::of_wall_ms(self.wall_ms)
    }
}

/// A calendar date in China Standard Time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CivilDate {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl CivilDate {
    pub fn of_wall_ms(wall_ms: i64) -> CivilDate {
        let local = wall_ms.saturating_add(CHINA_OFFSET_MS);
        civil_from_days(local.div_euclid(DAY_MS))
    }

    /// Days since 1970-01-01 of this date (inverse of [`CivilDate::of_wall_ms`] at local midnight).
    pub fn days_from_epoch(self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// Unix milliseconds of local midnight starting this date.
    pub fn start_wall_ms(self) -> i64 {
        self.days_from_epoch()
            .saturating_mul(DAY_MS)
            .saturating_sub(CHINA_OFFSET_MS)
    }

    /// Whole days from `earlier` to `self` (negative if `earlier` is later).
    pub fn days_since(self, earlier: CivilDate) -> i64 {
        self.days_from_epoch().saturating_sub(earlier.days_from_epoch())
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<CivilDate> {
        let mut parts = text.split('-');
        let year: i32 = parts.next()?.parse().ok()?;
        let month: u8 = parts.next()?.parse().ok()?;
        let day: u8 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !(1..=12).contains(&month) || !(1900..=9999).contains(&year) {
            return None;
        }
        let date = CivilDate { year, month, day };
        // Round-trip through day numbers rejects 2023-02-30 and the like.
        (day >= 1 && civil_from_days(date.days_from_epoch()) == date).then_some(date)
    }
}

impl std::fmt::Display for CivilDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The minute of the local day, 0..1440, for rules such as "no transfers 22:00-06:00".
pub fn local_minute_of_day(wall_ms: i64) -> u32 {
    let local = wall_ms.saturating_add(CHINA_OFFSET_MS);
    (local.rem_euclid(DAY_MS) / 60_000) as u32
}

/// A calendar month in China Standard Time, e.g. 2026-11. Monthly binding limits count per month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct YearMonth {
    pub year: i32,
    pub month: u8,
}

impl YearMonth {
    pub fn of_wall_ms(wall_ms: i64) -> YearMonth {
        let date = CivilDate::of_wall_ms(wall_ms);
        YearMonth {
            year: date.year,
            month: date.month,
        }
    }
}

impl std::fmt::Display for YearMonth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

// Howard Hinnant's days-from-civil algorithms (public domain), in checked-free integer form:
// every intermediate value is bounded for the years this system sees.
#[allow(clippy::arithmetic_side_effects)]
fn civil_from_days(days: i64) -> CivilDate {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    CivilDate { year, month, day }
}

#[allow(clippy::arithmetic_side_effects)]
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_follow_china_standard_time() {
        // 2024-01-31T16:00:00Z is 2024-02-01 00:00 in Beijing.
        let utc_jan31_16h = 1_706_716_800_000;
        assert_eq!(YearMonth::of_wall_ms(utc_jan31_16h), YearMonth { year: 2024, month: 2 });
        assert_eq!(
            YearMonth::of_wall_ms(utc_jan31_16h - 1),
            YearMonth { year: 2024, month: 1 }
        );
        assert_eq!(
            CivilDate::of_wall_ms(0),
            CivilDate {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        assert_eq!(local_minute_of_day(0), 8 * 60);
    }

    #[test]
    fn dates_parse_and_round_trip() {
        let date = CivilDate::parse("2024-02-29").unwrap();
        assert_eq!(CivilDate::of_wall_ms(date.start_wall_ms()), date);
        assert!(CivilDate::parse("2023-02-29").is_none());
        assert!(CivilDate::parse("2023-13-01").is_none());
        assert!(CivilDate::parse("garbage").is_none());
        assert_eq!(CivilDate::parse("2024-03-01").unwrap().days_since(date), 1);
    }
}
