//! The monitor's TOML configuration: where to listen, where to keep state, which nodes to read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use exchange_core::Province;
use serde::{Deserialize, Serialize};

use crate::error::MonitorError;

/// Most nodes one monitor reads (one feed task each).
pub const NODES_MAX: usize = 64;
/// Default: a hold in flight longer than this is reported as stuck.
pub const HOLD_DEADLINE_MS_DEFAULT: u64 = 60_000;
/// Default: abort rate (released holds / resolved holds over the alert window) above which
/// the monitor raises an alert.
pub const ABORT_RATE_MAX_DEFAULT: f64 = 0.2;
/// Default: how long both sides of a pair may disagree (commits reach participants a little
/// after the coordinator decides) before a reconciliation mismatch is an alert.
pub const RECONCILE_GRACE_MS_DEFAULT: u64 = 15_000;

/// One province node the monitor reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The province code (e.g. 110000); the node's certificate must prove it.
    pub province: Province,
    /// The node's gRPC address (`host:port`).
    pub address: String,
    /// The node's Prometheus `/metrics` address, read for latency and abort counts (optional).
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// HTTP address of the dashboard, the JSON API, `/events` and `/metrics`.
    pub listen: SocketAddr,
    /// Where the durable aggregate state (with the per-node cursors) lives.
    pub data_dir: PathBuf,
    /// The `exchange certs init` layout: `ca.crt` and the monitor's certificate and key.
    pub certs_dir: PathBuf,
    #[serde(default = "hold_deadline_ms_default")]
    pub hold_deadline_ms: u64,
    #[serde(default = "abort_rate_max_default")]
    pub abort_rate_max: f64,
    #[serde(default = "reconcile_grace_ms_default")]
    pub reconcile_grace_ms: u64,
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
}

fn hold_deadline_ms_default() -> u64 {
    HOLD_DEADLINE_MS_DEFAULT
}

fn abort_rate_max_default() -> f64 {
    ABORT_RATE_MAX_DEFAULT
}

fn reconcile_grace_ms_default() -> u64 {
    RECONCILE_GRACE_MS_DEFAULT
}

impl MonitorConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<MonitorConfig, MonitorError> {
        let text = std::fs::read_to_string(path).map_err(|source| MonitorError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        MonitorConfig::parse(&text).map_err(|detail| MonitorError::Config {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<MonitorConfig, String> {
        let config: MonitorConfig = toml::from_str(text).map_err(|error| error.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("no [[nodes]]: the monitor needs at least one node to read".into());
        }
        if self.nodes.len() > NODES_MAX {
            return Err(format!("{} nodes; at most {NODES_MAX}", self.nodes.len()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for node in &self.nodes {
            if !seen.insert(node.province) {
                return Err(format!("province {} is listed twice", node.province.code()));
            }
            if node.address.trim().is_empty() {
                return Err(format!("province {}: empty address", node.province.code()));
            }
        }
        if !(self.abort_rate_max.is_finite() && (0.0..=1.0).contains(&self.abort_rate_max)) {
            return Err("abort_rate_max must be between 0 and 1".into());
        }
        Ok(())
    }

    /// The configuration as TOML text (for the demo and tests, which write it to a file).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_parses() {
        let text = include_str!("../../../nodes/monitor.toml");
        let config = MonitorConfig::parse(text).unwrap();
        assert_eq!(config.nodes.len(), 3);
    }

    #[test]
    fn duplicates_and_empty_lists_are_refused() {
        let base = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\ncerts_dir = \"c\"\n";
        assert!(MonitorConfig::parse(base).is_err());
        let node = "[[nodes]]\nprovince = 110000\naddress = \"127.0.0.1:1\"\n";
        assert!(MonitorConfig::parse(&format!("{base}{node}")).is_ok());
        assert!(MonitorConfig::parse(&format!("{base}{node}{node}")).is_err());
        assert!(MonitorConfig::parse(&format!("{base}[[nodes]]\nprovince = 123\naddress = \"x\"\n")).is_err());
    }
}
