//! Protocol timing and bounds, with defaults sized for a settlement counter (answer in < 1 s).

use serde::{Deserialize, Serialize};

/// Timing and bounds of the two-phase protocol. All durations are on each node's own clock.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// How long the coordinator waits for a round's votes before treating the missing ones as no.
    pub vote_timeout_ms: u64,
    /// How long a participant keeps a hold before asking the coordinator for the outcome.
    pub hold_timeout_ms: u64,
    /// The coordinator never decides COMMIT later than `hold_timeout_ms - commit_margin_ms`
    /// after it sent a leg's prepare: room for the commit to travel and for clock-rate drift.
    pub commit_margin_ms: u64,
    /// A participant past its deadline asks again after this long without an answer.
    pub query_retry_ms: u64,
    /// The coordinator re-sends unacknowledged decisions after this long, doubling up to
    /// `resend_max_ms`.
    pub resend_initial_ms: u64,
    pub resend_max_ms: u64,
    /// Prepare rounds per settlement (a round asks grantors again for a shortfall).
    pub rounds_max: u8,
    /// Settlements being decided at once on one coordinator; more are refused as busy.
    pub settlements_in_flight_max: usize,
    /// How long a bind request waits for the grantee's node before answering "pending".
    pub bind_wait_ms: u64,
    /// After a restart, holds ask their coordinator after this delay.
    pub recovery_query_delay_ms: u64,
    /// Safeguards that exist only to be switched off by mutation tests; never read from files.
    #[serde(skip)]
    pub safeguards: Safeguards,
}

/// Protocol safeguards. All on in every real configuration; the simulator's and the model
/// checker's mutation tests switch one off to prove that the checks catch its absence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Safeguards {
    /// Participants consult and write the per-leg fence.
    pub fence: bool,
    /// A participant past its deadline asks the coordinator instead of releasing on its own.
    pub ask_before_release: bool,
    /// The coordinator refuses to commit a leg past its deadline minus the margin.
    pub commit_deadline: bool,
    /// A timer is hinted pointless (`Effects::cancels`) only once it is. Off: the coordinator
    /// calls a round's vote deadline pointless at the round's first vote.
    pub exact_cancels: bool,
}

impl Default for Safeguards {
    fn default() -> Safeguards {
        Safeguards {
            fence: true,
            ask_before_release: true,
            commit_deadline: true,
            exact_cancels: true,
        }
    }
}

impl Default for ProtocolConfig {
    fn default() -> ProtocolConfig {
        ProtocolConfig {
            vote_timeout_ms: 2_000,
            hold_timeout_ms: 10_000,
            commit_margin_ms: 3_000,
            query_retry_ms: 1_000,
            resend_initial_ms: 500,
            resend_max_ms: 8_000,
            rounds_max: 2,
            settlements_in_flight_max: 20_000,
            bind_wait_ms: 2_000,
            recovery_query_delay_ms: 200,
            safeguards: Safeguards::default(),
        }
    }
}

/// Why protocol settings were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("protocol settings: {0}")]
pub struct ConfigError(pub String);

impl ProtocolConfig {
    /// The time after sending a prepare by which the coordinator must have decided COMMIT.
    pub fn commit_window_ms(&self) -> u64 {
        self.hold_timeout_ms.saturating_sub(self.commit_margin_ms)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |text: &str| Err(ConfigError(text.to_string()));
        if self.vote_timeout_ms == 0 || self.query_retry_ms == 0 || self.resend_initial_ms == 0 {
            return bad("timeouts must be above zero");
        }
        if self.vote_timeout_ms.saturating_mul(u64::from(self.rounds_max)) >= self.commit_window_ms() {
            return bad("vote_timeout_ms * rounds_max must be below hold_timeout_ms - commit_margin_ms");
        }
        if self.hold_timeout_ms > 3_600_000 {
            return bad("hold_timeout_ms above one hour would lock money for too long");
        }
        if self.resend_max_ms < self.resend_initial_ms {
            return bad("resend_max_ms must be at least resend_initial_ms");
        }
        if !(1..=4).contains(&self.rounds_max) {
            return bad("rounds_max must be between 1 and 4");
        }
        if self.settlements_in_flight_max == 0 || self.settlements_in_flight_max > 1_000_000 {
            return bad("settlements_in_flight_max must be between 1 and 1,000,000");
        }
        Ok(())
    }
}
