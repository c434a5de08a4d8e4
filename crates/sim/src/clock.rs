//! A node's clocks: a monotonic clock that runs at its own rate, and a wall clock with skew
//! and jumps. Simulated time is global; each node only ever sees its own clocks.

use exchange_core::Now;

const PPM: i128 = 1_000_000;

/// One node's clocks as functions of global simulated time `t` (ms).
#[derive(Clone, Copy, Debug)]
pub struct NodeClock {
    /// The monotonic clock's reading at t = 0 (nodes booted at different times).
    pub mono_base_ms: u64,
    /// Rate difference of the monotonic clock, in parts per million (negative: slow).
    pub drift_ppm: i64,
    /// Wall clock at t = 0.
    pub wall_start_ms: i64,
    /// Skew plus every jump so far.
    pub wall_offset_ms: i64,
}

impl NodeClock {
    pub fn mono(&self, t: u64) -> u64 {
        let t = i128::from(t);
        let reading = i128::from(self.mono_base_ms) + t + t * i128::from(self.drift_ppm) / PPM;
        u64::try_from(reading.max(0)).unwrap_or(u64::MAX)
    }

    pub fn wall(&self, t: u64) -> i64 {
        let t = i64::try_from(t).unwrap_or(i64::MAX);
        self.wall_start_ms.saturating_add(t).saturating_add(self.wall_offset_ms)
    }

    pub fn now(&self, t: u64) -> Now {
        Now::new(self.mono(t), self.wall(t))
    }

    /// The first global time, not before `from`, at which the monotonic clock reads `at_mono`.
    pub fn time_of_mono(&self, at_mono: u64, from: u64) -> u64 {
        if self.mono(from) >= at_mono {
            return from;
        }
        let elapsed = i128::from(at_mono.saturating_sub(self.mono_base_ms));
        let estimate = elapsed * PPM / (PPM + i128::from(self.drift_ppm));
        let mut t = u64::try_from(estimate.max(0)).unwrap_or(u64::MAX).max(from);
        // The estimate is off by at most a few ms either way from rounding.
        while t > from && self.mono(t.saturating_sub(1)) >= at_mono {
            t = t.saturating_sub(1);
        }
        while self.mono(t) < at_mono && t < u64::MAX {
            t = t.saturating_add(1);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_when_the_node_clock_reaches_them() {
        for drift_ppm in [-50_000, -7, 0, 13, 90_000] {
            let clock = NodeClock {
                mono_base_ms: 5_000,
                drift_ppm,
                wall_start_ms: 0,
                wall_offset_ms: 0,
            };
            for target in [5_000u64, 5_001, 17_333, 1_000_000] {
                let t = clock.time_of_mono(target, 0);
                assert!(clock.mono(t) >= target);
                assert!(t == 0 || clock.mono(t - 1) < target);
            }
        }
    }
}
