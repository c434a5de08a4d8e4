//! A province's policy: the rules that differ by province, with the national defaults.

use serde::{Deserialize, Serialize};

use crate::binding::Relation;
use crate::money::Money;

/// Hard cap on grantors asked in one settlement, whatever the policy says: it bounds the
/// fan-out of one settlement and the size of its records.
pub const GRANTORS_PER_SETTLEMENT_MAX: usize = 8;

/// How the grantors of one grantee are ordered when several could pay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantorOrder {
    /// The order in which the bindings were made (the default).
    #[default]
    BindingOrder,
    /// The grantor with the largest available balance first.
    LargestBalanceFirst,
    /// The order the family set (each binding's `position`).
    FamilyOrder,
}

/// National limits of the 2025 wallet transfer model, kept for parity. The sending side (the
/// grantor's node) applies the first four; the receiving side, `accept_wallet_transfers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalletPolicy {
    /// Transfers one grantor may make per day (China Standard Time); 3 nationally.
    pub transfers_per_day_max: u32,
    /// The largest single transfer; 2,000 yuan nationally.
    pub transfer_amount_max: Money,
    /// Local minute of the day from which transfers stop (22:00 = 1320).
    pub quiet_from_minute: u32,
    /// Local minute of the day at which transfers resume (06:00 = 360). Equal to
    /// `quiet_from_minute`: no quiet hours.
    pub quiet_until_minute: u32,
    /// Whether this province's accounts accept transfers from other provinces' grantors (and
    /// from its own); `false` refuses them and the money returns.
    pub accept_wallet_transfers: bool,
}

impl WalletPolicy {
    /// Whether `wall_ms` falls in the quiet hours, in China Standard Time. The window may wrap
    /// midnight (22:00-06:00) or not (01:00-05:00); it includes its start, not its end.
    pub fn in_quiet_hours(&self, wall_ms: i64) -> bool {
        let minute = crate::time::local_minute_of_day(wall_ms);
        let (from, until) = (self.quiet_from_minute, self.quiet_until_minute);
        if from <= until {
            (from..until).contains(&minute)
        } else {
            minute >= from || minute < until
        }
    }
}

impl Default for WalletPolicy {
    fn default() -> WalletPolicy {
        WalletPolicy {
            transfers_per_day_max: 3,
            transfer_amount_max: Money::from_fen(200_000).unwrap_or(Money::ZERO),
            quiet_from_minute: 22 * 60,
            quiet_until_minute: 6 * 60,
            accept_wallet_transfers: true,
        }
    }
}

/// One province's policy. Defaults follow `shared/domain.md`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// A grantor binds at most this many relatives for mutual aid (7; some provinces say 6).
    pub grantor_relatives_max: u32,
    /// A grantee may be bound by at most this many grantors (some provinces cap at 2).
    pub grantee_grantors_max: u32,
    /// Relationships that may bind (since 2024 all six).
    pub allowed_relations: Vec<Relation>,
    /// Days after binding before the grantor may unbind (0 by default; 90 in some provinces).
    pub unbind_min_days: u32,
    /// Whether shared money may pay a relative's resident-insurance contribution (since 2024).
    pub resident_contribution_allowed: bool,
    pub grantor_order: GrantorOrder,
    pub wallet: WalletPolicy,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            grantor_relatives_max: 7,
            grantee_grantors_max: GRANTORS_PER_SETTLEMENT_MAX as u32,
            allowed_relations: Relation::ALL.to_vec(),
            unbind_min_days: 0,
            resident_contribution_allowed: true,
            grantor_order: GrantorOrder::BindingOrder,
            wallet: WalletPolicy::default(),
        }
    }
}

/// Why a policy was refused (from a config file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("grantor_relatives_max must be between 1 and 20, got {0}")]
    GrantorRelatives(u32),
    #[error("grantee_grantors_max must be between 1 and {GRANTORS_PER_SETTLEMENT_MAX}, got {0}")]
    GranteeGrantors(u32),
    #[error("allowed_relations is empty: no one could ever bind")]
    NoRelations,
    #[error("unbind_min_days must be at most 3650, got {0}")]
    UnbindDays(u32),
    #[error("wallet quiet hours must be minutes of the day (0..1440)")]
    QuietHours,
}

impl Policy {
    /// Checks a policy read from configuration.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(1..=20).contains(&self.grantor_relatives_max) {
            return Err(PolicyError::GrantorRelatives(self.grantor_relatives_max));
        }
        if !(1..=GRANTORS_PER_SETTLEMENT_MAX as u32).contains(&self.grantee_grantors_max) {
            return Err(PolicyError::GranteeGrantors(self.grantee_grantors_max));
        }
        if self.allowed_relations.is_empty() {
            return Err(PolicyError::NoRelations);
        }
        if self.unbind_min_days > 3650 {
            return Err(PolicyError::UnbindDays(self.unbind_min_days));
        }
        if self.wallet.quiet_from_minute >= 1440 || self.wallet.quiet_until_minute >= 1440 {
            return Err(PolicyError::QuietHours);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hours_wrap_midnight_in_china_standard_time() {
        let wallet = WalletPolicy::default();
        // 2026-11-22 00:00 in Beijing is 2026-11-21 16:00 UTC.
        let midnight = 1_795_276_800_000_i64;
        let at = |hour: i64, minute: i64| midnight + (hour * 60 + minute) * 60_000;
        assert!(!wallet.in_quiet_hours(at(21, 59)));
        assert!(wallet.in_quiet_hours(at(22, 0)));
        assert!(wallet.in_quiet_hours(at(22, 30)));
        assert!(wallet.in_quiet_hours(at(0, 0)));
        assert!(wallet.in_quiet_hours(at(5, 59)));
        assert!(!wallet.in_quiet_hours(at(6, 0)));
        assert!(!wallet.in_quiet_hours(at(12, 0)));
        let none = WalletPolicy {
            quiet_from_minute: 0,
            quiet_until_minute: 0,
            ..wallet
        };
        assert!(!none.in_quiet_hours(at(23, 0)));
        let inside = WalletPolicy {
            quiet_from_minute: 60,
            quiet_until_minute: 300,
            ..wallet
        };
        assert!(
            inside.in_quiet_hours(at(1, 0)) && !inside.in_quiet_hours(at(5, 0)) && !inside.in_quiet_hours(at(0, 30))
        );
    }
}
