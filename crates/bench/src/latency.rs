//! Latency samples and their percentiles (exact: every sample is kept, the count is bounded
//! by the number of requests a run may schedule).

use serde::{Deserialize, Serialize};

/// Percentiles of one run, milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Latency of the settlements scheduled in one second of a run: where in the run the tail is
/// (a warm-up, a stall now and then, a backlog that keeps growing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondSummary {
    /// Seconds from the start of the run to the scheduled send time.
    pub second: u32,
    pub count: u64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Groups `(second, microseconds)` samples by second (every second up to the last, empty ones
/// with a count of 0).
pub fn by_second(samples: &[(u32, u64)]) -> Vec<SecondSummary> {
    let seconds = samples
        .iter()
        .map(|(second, _)| *second)
        .max()
        .map_or(0, |last| last as usize + 1);
    let mut grouped: Vec<Vec<u64>> = vec![Vec::new(); seconds];
    for (second, micros) in samples {
        if let Some(group) = grouped.get_mut(*second as usize) {
            group.push(*micros);
        }
    }
    grouped
        .into_iter()
        .enumerate()
        .map(|(second, mut micros)| {
            micros.sort_unstable();
            SecondSummary {
                second: u32::try_from(second).unwrap_or(u32::MAX),
                count: u64::try_from(micros.len()).unwrap_or(u64::MAX),
                p99_ms: quantile_ms(&micros, 0.99),
                max_ms: micros.last().map(|m| *m as f64 / 1_000.0).unwrap_or(0.0),
            }
        })
        .collect()
}

/// The sample at quantile `q` of sorted microseconds, in milliseconds.
fn quantile_ms(sorted_micros: &[u64], q: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let last = sorted_micros.len().saturating_sub(1);
    // Nearest-rank on a bounded index; float rounding cannot leave the slice.
    let rank = ((last as f64) * q).round() as usize;
    let micros = sorted_micros.get(rank.min(last)).copied().unwrap_or(0);
    micros as f64 / 1_000.0
}

/// Sorts the samples and summarizes them.
pub fn summarize(mut micros: Vec<u64>) -> LatencySummary {
    micros.sort_unstable();
    let count = u64::try_from(micros.len()).unwrap_or(u64::MAX);
    let total: u128 = micros.iter().map(|m| u128::from(*m)).sum();
    let mean_ms = if micros.is_empty() {
        0.0
    } else {
        total as f64 / micros.len() as f64 / 1_000.0
    };
    LatencySummary {
        count,
        mean_ms,
        p50_ms: quantile_ms(&micros, 0.50),
        p99_ms: quantile_ms(&micros, 0.99),
        p999_ms: quantile_ms(&micros, 0.999),
        max_ms: micros.last().map(|m| *m as f64 / 1_000.0).unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_grouped_by_second_with_empty_seconds_kept() {
        let seconds = by_second(&[(0, 1_000), (0, 3_000), (2, 50_000)]);
        assert_eq!(seconds.len(), 3);
        assert_eq!((seconds[0].count, seconds[0].max_ms), (2, 3.0));
        assert_eq!((seconds[1].count, seconds[1].p99_ms), (0, 0.0));
        assert_eq!((seconds[2].second, seconds[2].p99_ms), (2, 50.0));
        assert!(by_second(&[]).is_empty());
    }

    #[test]
    fn percentiles_of_a_known_series() {
        let summary = summarize((1..=1000).map(|ms| ms * 1000).collect());
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 500.0).abs() <= 1.0);
        assert!((summary.p99_ms - 990.0).abs() <= 1.0);
        assert!((summary.max_ms - 1000.0).abs() < f64::EPSILON);
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(summarize(Vec::new()).p99_ms, 0.0);
    }
}
