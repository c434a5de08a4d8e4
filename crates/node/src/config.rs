//! A node's configuration file (`nodes/<code>-<name>.toml`): where it listens, its peers,
//! its certificates, its province's policy and the protocol's timing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use exchange_core::{Policy, ProtocolConfig, Province};
use serde::Deserialize;

/// Most peers a node may list (the 30 other mainland provinces).
pub const PEERS_MAX: usize = 30;
/// Largest configuration file read, in bytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;
/// Most threads of a node's async runtime (`[tuning] worker_threads`).
pub const WORKER_THREADS_MAX: usize = 256;
/// Largest value of a per-identity budget in `[tuning]` (requests in flight, per second, burst).
pub const IDENTITY_BUDGET_MAX: u64 = 10_000_000;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is larger than {CONFIG_FILE_BYTES_MAX} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One remote province and where its node listens.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub province: Province,
    /// `host:port` of the peer's gRPC listener.
    pub address: String,
}

/// Certificate paths. Unset paths follow the `exchange certs init` layout under `certs_dir`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub bureau_cert: Option<PathBuf>,
    pub bureau_key: Option<PathBuf>,
    /// Serial numbers (hex) of revoked certificates; their holders are refused.
    pub revoked_serials: Vec<String>,
}

/// Sizes of the node's moving parts.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Tuning {
    /// Actors owning accounts (participant work), by hash of the person.
    pub account_shards: usize,
    /// Actors deciding settlements, by hash of the settlement id.
    pub coordinator_shards: usize,
    /// Messages queued for one peer before new ones are dropped (the protocol retries).
    pub peer_queue_max: usize,
    /// Messages carried by one node-to-node RPC.
    pub peer_batch_max: usize,
    /// sled page cache, MiB. 64 by default: measured at 10,000 settlements/s for 60 s, the
    /// p99 was 53–71 ms with 64, 70 ms with 48, 103 ms with 32 (more evictions) and 214–286 ms
    /// with 128 (fast until the cache filled after ~40 s, then slower: a profile after the
    /// fill shows sled's node copies, their allocation and their drops costing more; our
    /// reading is that a bigger heap misses the CPU caches more). See BENCHMARKS.md.
    /// The hot set (in-flight legs, the accounts in use, the ends of the growing trees) is
    /// far smaller than this; cold pages are read back from the OS page cache.
    pub cache_mib: u64,
    /// Client requests being handled at once; more are refused with RESOURCE_EXHAUSTED.
    pub client_requests_in_flight_max: usize,
    /// Deadline on every RPC this node makes or serves, milliseconds.
    pub rpc_timeout_ms: u64,
    /// Requests one client certificate (a bureau tool, the monitor) may have in flight; more
    /// are refused with RESOURCE_EXHAUSTED (`too_many_in_flight`). See `limits.rs`.
    pub client_in_flight_per_identity_max: usize,
    /// Requests per second one client certificate may sustain (token bucket refill rate);
    /// more are refused with RESOURCE_EXHAUSTED (`rate_limited`).
    pub client_requests_per_s_per_identity: u64,
    /// Requests one client certificate may send at once after a quiet spell (bucket size).
    pub client_burst_per_identity: u64,
    /// Requests one peer province's node may have in flight (`Deliver`, `Journal`).
    pub peer_in_flight_max: usize,
    /// Requests per second one peer province's node may sustain.
    pub peer_requests_per_s: u64,
    /// Requests one peer province's node may send at once after a quiet spell.
    pub peer_burst: u64,
    /// Threads of the node's async runtime; 0 (the default): one per CPU core; 1: a
    /// current-thread runtime on the node's main thread. Fewer than the cores when several
    /// nodes share a machine (the demo, the benchmark) saves the threads waking each other to
    /// steal work.
    pub worker_threads: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            account_shards: 4,
            coordinator_shards: 2,
            peer_queue_max: 100_000,
            peer_batch_max: 512,
            cache_mib: 64,
            client_requests_in_flight_max: 50_000,
            rpc_timeout_ms: 5_000,
            // Far above what the benchmarks and the demo send from one certificate; a
            // deployment with one certificate per hospital sizes these per hospital.
            client_in_flight_per_identity_max: 20_000,
            client_requests_per_s_per_identity: 100_000,
            client_burst_per_identity: 100_000,
            // A peer link sends one batch at a time (up to `peer_batch_max` messages), so a
            // correct peer stays far below these.
            peer_in_flight_max: 1_024,
            peer_requests_per_s: 50_000,
            peer_burst: 50_000,
            worker_threads: 0,
        }
    }
}

/// Logging.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// A `tracing` filter such as `info` or `exchange_node=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            json: false,
            level: "info".into(),
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub province: Province,
    /// gRPC listener (node-to-node, bureau, monitor, health, reflection).
    pub listen: SocketAddr,
    /// Prometheus `/metrics` over plain HTTP (loopback or a private network only).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    #[serde(default = "default_certs_dir")]
    pub certs_dir: PathBuf,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub protocol: ProtocolConfig,
    #[serde(default)]
    pub tuning: Tuning,
    #[serde(default)]
    pub log: LogConfig,
}

fn default_certs_dir() -> PathBuf {
    PathBuf::from("certs")
}

/// Resolved certificate paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bureau_cert: PathBuf,
    pub bureau_key: PathBuf,
}

impl NodeConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        NodeConfig::parse(&text, path)
    }

    /// Parses and checks configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let me = self.province;
        if self.peers.len() > PEERS_MAX {
            return Err(format!("at most {PEERS_MAX} peers"));
        }
        let mut seen = Vec::new();
        for peer in &self.peers {
            let province = peer.province;
            if province == me {
                return Err(format!("peer {province} is this node's own province"));
            }
            if seen.contains(&province) {
                return Err(format!("peer {province} is listed twice"));
            }
            if peer.address.is_empty() || peer.address.contains('/') {
                return Err(format!("peer {province} address {:?} must be host:port", peer.address));
            }
            seen.push(province);
        }
        self.policy.validate().map_err(|e| format!("policy: {e}"))?;
        self.protocol.validate().map_err(|e| e.to_string())?;
        let t = &self.tuning;
        let in_range = |value: usize, min: usize, max: usize| (min..=max).contains(&value);
        if t.worker_threads > WORKER_THREADS_MAX {
            return Err(format!(
                "tuning: worker_threads must be 0 (one per core) to {WORKER_THREADS_MAX}"
            ));
        }
        if !in_range(t.account_shards, 1, 64) || !in_range(t.coordinator_shards, 1, 64) {
            return Err("tuning: account_shards and coordinator_shards must be 1 to 64".into());
        }
        if !in_range(t.peer_batch_max, 1, 10_000) || !in_range(t.peer_queue_max, t.peer_batch_max, 10_000_000) {
            return Err("tuning: peer_batch_max must be 1 to 10,000 and peer_queue_max at least peer_batch_max".into());
        }
        if !(8..=65_536).contains(&t.cache_mib) {
            return Err("tuning: cache_mib must be 8 to 65,536".into());
        }
        if !in_range(t.client_requests_in_flight_max, 1, 10_000_000) || !(100..=600_000).contains(&t.rpc_timeout_ms) {
            return Err("tuning: client_requests_in_flight_max must be >= 1 and rpc_timeout_ms 100 to 600,000".into());
        }
        let budgets: [(&str, u64); 6] = [
            (
                "client_in_flight_per_identity_max",
                u64::try_from(t.client_in_flight_per_identity_max).unwrap_or(u64::MAX),
            ),
            (
                "client_requests_per_s_per_identity",
                t.client_requests_per_s_per_identity,
            ),
            ("client_burst_per_identity", t.client_burst_per_identity),
            (
                "peer_in_flight_max",
                u64::try_from(t.peer_in_flight_max).unwrap_or(u64::MAX),
            ),
            ("peer_requests_per_s", t.peer_requests_per_s),
            ("peer_burst", t.peer_burst),
        ];
        for (key, value) in budgets {
            if !(1..=IDENTITY_BUDGET_MAX).contains(&value) {
                return Err(format!("tuning: {key} must be 1 to 10,000,000 (it is {value})"));
            }
        }
        Ok(())
    }

    /// Certificate paths, defaulting to the `exchange certs init` layout under `certs_dir`.
    pub fn tls_paths(&self) -> TlsPaths {
        let dir = &self.certs_dir;
        let code = self.province.to_string();
        let or = |explicit: &Option<PathBuf>, default: PathBuf| explicit.clone().unwrap_or(default);
        TlsPaths {
            ca: or(&self.tls.ca, dir.join("ca.pem")),
            cert: or(&self.tls.cert, dir.join(&code).join("node.pem")),
            key: or(&self.tls.key, dir.join(&code).join("node.key")),
            bureau_cert: or(&self.tls.bureau_cert, dir.join(&code).join("bureau.pem")),
            bureau_key: or(&self.tls.bureau_key, dir.join(&code).join("bureau.key")),
        }
    }
}
