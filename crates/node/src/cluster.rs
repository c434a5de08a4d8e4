//! A local cluster of real node processes on loopback, for the demo, tests, benchmarks and
//! chaos runs: certificates, configuration files, data directories, processes, and clients.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use exchange_core::Province;
use exchange_pki::{ExistingCa, Validity, init_dev_pki};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::client::BureauConn;
use crate::config::NodeConfig;
use crate::error::NodeError;

/// How long a started node may take to answer.
pub const READY_TIMEOUT_MS: u64 = 20_000;

/// Options of a launched cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Extra TOML appended to every node's configuration (e.g. `[protocol]` overrides).
    pub extra_config: String,
    /// Per-province address overrides for peers (e.g. a fault proxy in front of a node).
    pub peer_address_override: BTreeMap<(Province, Province), SocketAddr>,
    /// Log level of the node processes.
    pub log_level: String,
    /// Serve `/metrics` on a free port.
    pub metrics: bool,
    /// `--worker-threads` of every node (`None`: the configuration's, one per core).
    pub worker_threads: Option<usize>,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            extra_config: String::new(),
            peer_address_override: BTreeMap::new(),
            log_level: "warn".into(),
            metrics: false,
            worker_threads: None,
        }
    }
}

/// One node of the cluster.
#[derive(Debug)]
pub struct ClusterNode {
    pub province: Province,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

/// Real node processes started from the `exchange` binary.
#[derive(Debug)]
pub struct LocalCluster {
    pub dir: PathBuf,
    pub certs_dir: PathBuf,
    exe: PathBuf,
    worker_threads: Option<usize>,
    pub nodes: BTreeMap<Province, ClusterNode>,
}

/// Listening ports are picked in this range, below Linux's ephemeral range (32768–60999 by
/// default) from which the kernel takes the source port of every outgoing connection: a port
/// from there, released until the node binds it, can meanwhile be taken by any connection
/// (seen in CI as a node failing with "Address already in use").
pub const LISTEN_PORT_MIN: u16 = 20_000;
pub const LISTEN_PORT_MAX: u16 = 32_000;

/// Ports this process handed out, so clusters launched at once never share one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free TCP port on 127.0.0.1 for a node to listen on: in `LISTEN_PORT_MIN..LISTEN_PORT_MAX`,
/// not handed out before by this process, and bindable now (then released for the node).
pub fn free_port() -> Result<SocketAddr, NodeError> {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let span = u64::from(LISTEN_PORT_MAX - LISTEN_PORT_MIN);
    // Start somewhere different in every process, so concurrent ones rarely probe the same.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::from(elapsed.subsec_nanos()));
    let start = (u64::from(std::process::id()).wrapping_mul(7_919) ^ nanos) % span;
    for step in 0..span {
        let offset = u16::try_from((start + step) % span).unwrap_or(0);
        let port = LISTEN_PORT_MIN + offset;
        if handed.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            handed.insert(port);
            return Ok(listener.local_addr()?);
        }
    }
    Err(NodeError::Unavailable("no free port to listen on in 20000..32000"))
}

/// What the configuration file of one cluster node says.
#[derive(Clone, Debug)]
pub struct NodeConfigText<'a> {
    pub province: Province,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub data_dir: &'a Path,
    pub certs_dir: &'a Path,
    pub peers: &'a [(Province, SocketAddr)],
    pub log_level: &'a str,
    /// Extra TOML appended as is.
    pub extra: &'a str,
}

impl NodeConfigText<'_> {
    /// The configuration file's text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let province = self.province;
        let _ = writeln!(
            text,
            "# {} ({}) — written by the local cluster launcher",
            province.name(),
            province.name_zh()
        );
        let _ = writeln!(text, "province = {}", province.code());
        let _ = writeln!(text, "listen = \"{}\"", self.addr);
        if let Some(metrics) = self.metrics {
            let _ = writeln!(text, "metrics_listen = \"{metrics}\"");
        }
        let _ = writeln!(text, "data_dir = {:?}", self.data_dir.display().to_string());
        let _ = writeln!(text, "certs_dir = {:?}", self.certs_dir.display().to_string());
        for (peer, peer_addr) in self.peers {
            let _ = writeln!(
                text,
                "\n[[peers]]\nprovince = {}\naddress = \"{peer_addr}\"",
                peer.code()
            );
        }
        let _ = writeln!(text, "\n[log]\nlevel = \"{}\"", self.log_level);
        text.push_str(self.extra);
        text
    }
}

impl LocalCluster {
    /// Generates certificates and configurations under `dir` and starts one node per province.
    pub async fn launch(
        exe: &Path,
        dir: &Path,
        provinces: &[Province],
        options: &ClusterOptions,
    ) -> Result<LocalCluster, NodeError> {
        let certs_dir = dir.join("certs");
        let validity = Validity::days_from(exchange_pki::time::OffsetDateTime::now_utc(), 30)?;
        init_dev_pki(&certs_dir, provinces, validity, ExistingCa::Overwrite)?;
        let mut addrs = BTreeMap::new();
        for province in provinces {
            addrs.insert(*province, free_port()?);
        }
        let mut cluster = LocalCluster {
            dir: dir.to_path_buf(),
            certs_dir: certs_dir.clone(),
            exe: exe.to_path_buf(),
            worker_threads: options.worker_threads,
            nodes: BTreeMap::new(),
        };
        for province in provinces {
            let addr = addrs.get(province).copied().ok_or(NodeError::Unavailable("address"))?;
            let metrics_addr = if options.metrics { Some(free_port()?) } else { None };
            let peers: Vec<(Province, SocketAddr)> = addrs
                .iter()
                .filter(|(p, _)| *p != province)
                .map(|(p, a)| {
                    (
                        *p,
                        options
                            .peer_address_override
                            .get(&(*province, *p))
                            .copied()
                            .unwrap_or(*a),
                    )
                })
                .collect();
            let data_dir = dir.join("data").join(province.to_string());
            let text = NodeConfigText {
                province: *province,
                addr,
                metrics: metrics_addr,
                data_dir: &data_dir,
                certs_dir: &certs_dir,
                peers: &peers,
                log_level: &options.log_level,
                extra: &options.extra_config,
            }
            .render();
            let config_path = dir.join(format!(
                "{}-{}.toml",
                province.code(),
                province.name().to_lowercase().replace(' ', "-")
            ));
            std::fs::write(&config_path, text)?;
            // Refuse a broken configuration here, with the file's own error.
            NodeConfig::load(&config_path)?;
            let log_path = dir.join(format!("{}.log", province.code()));
            cluster.nodes.insert(
                *province,
                ClusterNode {
                    province: *province,
                    addr,
                    metrics_addr,
                    config_path,
                    log_path,
                    child: None,
                },
            );
        }
        for province in provinces {
            cluster.start(*province)?;
        }
        for province in provinces {
            cluster.wait_ready(*province).await?;
        }
        Ok(cluster)
    }

    /// Starts (or restarts) the process of one node.
    pub fn start(&mut self, province: Province) -> Result<(), NodeError> {
        let node = self
            .nodes
            .get_mut(&province)
            .ok_or(NodeError::Unavailable("no such node"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let mut command = Command::new(&self.exe);
        command.arg("start").arg("--config").arg(&node.config_path);
        if let Some(threads) = self.worker_threads {
            command.arg("--worker-threads").arg(threads.to_string());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until a node answers its bureau API.
    pub async fn wait_ready(&self, province: Province) -> Result<(), NodeError> {
        let mut conn = self.conn(province).await?;
        conn.wait_ready(Duration::from_millis(READY_TIMEOUT_MS))
            .await
            .map_err(|status| {
                let log = self
                    .nodes
                    .get(&province)
                    .map(|n| std::fs::read_to_string(&n.log_path).unwrap_or_default())
                    .unwrap_or_default();
                NodeError::Actor(format!("node {province} did not become ready: {status}\n{log}"))
            })
    }

    /// A bureau connection to a node.
    pub async fn conn(&self, province: Province) -> Result<BureauConn, NodeError> {
        let node = self
            .nodes
            .get(&province)
            .ok_or(NodeError::Unavailable("no such node"))?;
        let files = exchange_pki::PkiLayout::paths_of(&self.certs_dir, exchange_pki::PeerIdentity::Bureau(province));
        let ca = exchange_pki::PkiLayout::ca_paths(&self.certs_dir);
        BureauConn::connect_to(&node.addr.to_string(), province, &files.cert, &files.key, &ca.cert).await
    }

    fn signal(&self, province: Province, signal: Signal) -> Result<(), NodeError> {
        let node = self
            .nodes
            .get(&province)
            .ok_or(NodeError::Unavailable("no such node"))?;
        let child = node.child.as_ref().ok_or(NodeError::Unavailable("node not running"))?;
        let pid = i32::try_from(child.id()).map_err(|_| NodeError::Unavailable("pid"))?;
        kill(Pid::from_raw(pid), signal).map_err(|error| NodeError::Actor(format!("kill {signal}: {error}")))
    }

    /// `kill -9`: the process dies at once, with whatever it had not flushed.
    pub fn kill9(&mut self, province: Province) -> Result<(), NodeError> {
        self.signal(province, Signal::SIGKILL)?;
        if let Some(node) = self.nodes.get_mut(&province) {
            if let Some(mut child) = node.child.take() {
                let _ = child.wait();
            }
        }
        Ok(())
    }

    /// Graceful stop of one node (SIGTERM); waits up to `grace` for it to exit and returns its
    /// exit status (`None`: it did not exit in time and was killed).
    pub fn terminate(
        &mut self,
        province: Province,
        grace: Duration,
    ) -> Result<Option<std::process::ExitStatus>, NodeError> {
        self.signal(province, Signal::SIGTERM)?;
        let Some(mut child) = self.nodes.get_mut(&province).and_then(|node| node.child.take()) else {
            return Ok(None);
        };
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(None)
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) a node.
    pub fn pause(&self, province: Province, paused: bool) -> Result<(), NodeError> {
        self.signal(province, if paused { Signal::SIGSTOP } else { Signal::SIGCONT })
    }

    /// Graceful stop of every node (SIGTERM, then SIGKILL after a grace period).
    pub fn stop_all(&mut self) {
        let provinces: Vec<Province> = self.nodes.keys().copied().collect();
        for province in &provinces {
            let _ = self.signal(*province, Signal::SIGCONT);
            let _ = self.signal(*province, Signal::SIGTERM);
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                for _ in 0..100 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    pub fn is_running(&self, province: Province) -> bool {
        self.nodes.get(&province).is_some_and(|n| n.child.is_some())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: BTreeSet<u16> = (0..50).map(|_| free_port().unwrap().port()).collect();
        assert_eq!(ports.len(), 50);
        assert!(ports.iter().all(|p| (LISTEN_PORT_MIN..LISTEN_PORT_MAX).contains(p)));
    }
}
