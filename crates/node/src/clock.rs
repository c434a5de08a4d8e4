//! The node's two clocks, read once per event and handed to the core as `Now`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use exchange_core::Now;

/// Monotonic milliseconds since the process started, plus Unix wall time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { start: Instant::now() }
    }

    pub fn now(&self) -> Now {
        let mono_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Now::new(mono_ms, wall_ms)
    }

    /// How long from now until `at_mono_ms` (zero if past).
    pub fn until(&self, at_mono_ms: u64) -> std::time::Duration {
        let now = self.now().mono_ms;
        std::time::Duration::from_millis(at_mono_ms.saturating_sub(now))
    }
}
